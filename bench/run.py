#!/usr/bin/env python3
"""Benchmark driver: runs the Rust benchmark binary (target/release/bench) and the PyTorch eager reference
(bench/reference.py) interleaved, R repeats each, alternating which goes first, on the same shapes with the
same thread count, and prints markdown tables of medians, spreads (min-max) and Rust/PyTorch ratios.

    .venv/bin/python bench/run.py                   # W1 (six sizes), W2, W3 with the defaults (about 10 minutes)
    .venv/bin/python bench/run.py --quick           # smoke run (about 1-2 minutes)
    .venv/bin/python bench/run.py --workloads w1 --repeats 7 --out bench/last.md --raw bench/last.jsonl

`just bench ARGS` builds the binary and calls this script with ARGS.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Per-workload defaults: (iters, warmup, repeats). W3 iterations are chains of 60 Langevin steps.
DEFAULTS = {
    "w1": dict(iters=200, warmup=50, repeats=7),
    "w2": dict(iters=20, warmup=3, repeats=3),
    "w3": dict(iters=3, warmup=1, repeats=5),
}
QUICK = {
    "w1": dict(iters=50, warmup=10, repeats=2),
    "w2": dict(iters=5, warmup=1, repeats=1),
    "w3": dict(iters=1, warmup=1, repeats=2),
}
# W1 sizes BATCHxWIDTH; each runs in its own pair of processes (so that the peak memory is that size's), the
# base size 256x128 for --iters iterations, the others for as many as give the same matmul work.
W1_SIZES = "256x128,1024x128,4096x128,256x512,1024x512,4096x512"
W1_SIZES_QUICK = "256x128,1024x512"
W2_DIMS = "2,8,32,128,512,784"
W2_DIMS_QUICK = "2,8,32,128"
W2_METHODS = ["exact", "hutchinson", "dsm"]
# The glibc malloc thresholds that ebm-core sets for itself (autograd.rs, keep_freed_memory_in_heap): with
# --malloc-reference the PyTorch reference runs a second time with them, to show what part of a ratio
# is the allocator.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(31 << 20), "MALLOC_TRIM_THRESHOLD_": str(62 << 20)}
IMPLS = [
    ("rust", "Rust (ebm-core)"),
    ("pytorch", "PyTorch eager"),
    ("pytorch_malloc", "PyTorch eager, glibc malloc thresholds as ebm-core's"),
]


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over `interval` seconds, from /proc/stat (nan where unavailable)."""

    def snap():
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in f]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle

    try:
        t0, i0 = snap()
        time.sleep(interval)
        t1, i1 = snap()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except (OSError, ValueError, IndexError):
        return float("nan")


def wait_quiet(max_wait, threshold):
    """Waits (at most `max_wait` seconds) until less than `threshold` of the CPUs are busy; returns the
    last busy fraction seen."""
    deadline = time.time() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.time() < deadline:
        busy = cpu_busy(2.0)
    return busy


def run_cmd(cmd, env=None):
    """Runs one benchmark process (with extra environment variables `env`); returns its JSON lines."""
    t0 = time.perf_counter()
    full_env = dict(os.environ, **env) if env else None
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=full_env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"benchmark command failed ({p.returncode}): {shlex.join(cmd)}")
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    print(f"  {time.perf_counter() - t0:6.1f}s  {prefix} {shlex.join(cmd[-14:])}", file=sys.stderr)
    return lines


def workload_args(w, cfg, args):
    a = [
        "--workload", w,
        "--threads", str(args.threads),
        "--iters", str(cfg["iters"]),
        "--warmup", str(cfg["warmup"]),
        "--repeats", "1",
    ]
    if w == "w2":
        a += ["--dims", args.dims, "--methods", ",".join(args.methods), "--exact-budget", str(args.exact_budget)]
    return a


def collect(args):
    """Interleaved runs: for each workload and repeat r, one Rust process and one PyTorch process (seed r),
    the order alternating with r. Each process warms up, then times one block."""
    rows = []
    for w in args.workloads:
        cfg = dict((QUICK if args.quick else DEFAULTS)[w])
        for k in ("iters", "warmup", "repeats"):
            v = getattr(args, k)
            if v is not None:
                cfg[k] = v
        sizes = args.sizes.split(",") if w == "w1" else [None]
        for r, size in ((r, size) for r in range(cfg["repeats"]) for size in sizes):
            common = workload_args(w, cfg, args) + ["--seed", str(r)]
            if size:
                common += ["--sizes", size]
            rust = [str(args.bin)] + common + ["--score", args.rust_score] + (["--no-split"] if args.rust_no_split else [])
            py = [args.python, str(ROOT / "bench" / "reference.py")] + common
            if w == "w2" and r > 0:
                rust += ["--variance-probes", "0"]
            if args.breakdown and w == "w1" and size == "256x128":
                rust += ["--breakdown"]
            runs = [(rust, None, None), (py, None, None)]
            if args.malloc_reference:
                runs.append((py, MALLOC_ENV, "pytorch_malloc"))
            # rotate the order with the repeat, so that no implementation always runs first
            k = r % len(runs)
            for cmd, env, label in runs[k:] + runs[:k]:
                best = None
                for attempt in range(1 + args.retries):
                    busy = wait_quiet(args.wait_quiet, args.quiet_threshold) if args.wait_quiet > 0 else cpu_busy(0.5)
                    lines = run_cmd(cmd, env)
                    util = min((l["cpu_util"] for l in lines if "cpu_util" in l), default=1.0)
                    if best is None or util > best[0]:
                        best = (util, busy, attempt, lines)
                    # a process that splits its Langevin chains over the threads keeps them all busy only while it
                    # samples (its loss and Adam step run on one libtorch thread): its share on an idle machine is
                    # lower (W1 at 2 threads: 0.77 measured), so it has a threshold of its own
                    split = any(l.get("chain_threads", 1) > 1 for l in lines)
                    floor = args.min_cpu_util_split if split else args.min_cpu_util
                    if util >= floor:
                        break
                    print(f"  contended (CPU share {util:.2f} < {floor}), running it again", file=sys.stderr)
                util, busy, attempt, lines = best
                for line in lines:
                    line.update(repeat=r, busy_before=busy, attempts=attempt + 1, process_cpu_util=util, cpu_floor=floor)
                    if label:
                        line["impl"] = label
                    rows.append(line)
    return rows


# ------------------------------------------------------------------------------------------------
# tables


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt):
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"


def select(rows, impl, workload, case, dim=None):
    return [
        r for r in rows
        if r.get("impl") == impl and r["workload"] == workload and r["case"] == case
        and (dim is None or r.get("dim") == dim)
    ]


def paired_ratios(rows, workload, case, key, dim=None, ref="pytorch"):
    """Rust/reference ratio of `key` for each repeat (the processes of one repeat ran back to back)."""
    rust = {r["repeat"]: r[key] for r in select(rows, "rust", workload, case, dim)}
    py = {r["repeat"]: r[key] for r in select(rows, ref, workload, case, dim)}
    return [rust[k] / py[k] for k in sorted(rust) if k in py and py[k] > 0]


def fmt_num(x):
    if x != x:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def rate_table(rows, workload, case, unit, title, quality=None):
    out = [f"### {title}", "", f"| | {unit} (median) | min–max | repeats | peak RSS MiB (median) |"
           + (" KL after training (median) |" if quality else ""),
           "|---|---:|---:|---:|---:|" + ("---:|" if quality else "")]
    for impl, label in IMPLS:
        sel = select(rows, impl, workload, case)
        xs = [r["per_s"] for r in sel]
        if not xs:
            continue
        rss = [r["peak_rss_mib"] for r in sel if "peak_rss_mib" in r]
        line = f"| {label} | {fmt_num(med(xs))} | {spread(xs, '{:.1f}')} | {len(xs)} | {fmt_num(med(rss))} |"
        if quality:
            kl = [r["kl"] for r in select(rows, impl, workload, quality)]
            line += f" {med(kl):.3f} |" if kl else " - |"
        out.append(line)
    out.append("")
    for ref, label in IMPLS[1:]:
        ratios = paired_ratios(rows, workload, case, "per_s", ref=ref)
        if ratios:
            out.append(f"- **Rust / {label}: {med(ratios):.2f}×** (per-repeat paired ratios {spread(ratios, '{:.2f}')})")
    parts = sorted({r["case"] for r in rows if r["workload"] == workload and r["case"].startswith(case + "_part:")})
    for p in parts:
        xs = [r["ms_per_iter"] for r in select(rows, "rust", workload, p)]
        out.append(f"- Rust part `{p.split(':', 1)[1]}`: {fmt_num(med(xs))} ms per iteration (median)")
    return out


def w1_size_table(rows, sizes):
    """Per W1 size: both sides' it/s, their paired ratio, the matmul bound from the measured sgemm rate, the
    fraction of it each side reaches, and both sides' peak resident memory."""
    out = ["### W1 at several sizes (MLP 2-H-H-1, batch B)", "",
           "| B | H | GFLOP per iteration (matmuls) | sgemm GFLOP/s (measured) | matmul bound it/s | Rust it/s | "
           "PyTorch it/s | Rust / PyTorch (median of paired ratios) | Rust share of bound | PyTorch share of bound | "
           "peak RSS MiB Rust | peak RSS MiB PyTorch |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        b, h = (int(v) for v in size.split("x"))
        case = "pcd" if (b, h) == (256, 128) else f"pcd_b{b}_h{h}"
        rust = select(rows, "rust", "w1", case)
        py = select(rows, "pytorch", "w1", case)
        if not rust or not py:
            continue
        flops = rust[0]["flops_per_iter"]
        gemm = med([r["gflops"] for r in rows if r.get("case") == "sgemm" and r.get("batch") == b
                    and r.get("width") == h and r.get("impl") == "rust"])
        bound = gemm * 1e9 / flops
        rr, pr = med([r["per_s"] for r in rust]), med([r["per_s"] for r in py])
        ratios = paired_ratios(rows, "w1", case, "per_s")
        rss = lambda sel: fmt_num(med([r["peak_rss_mib"] for r in sel if "peak_rss_mib" in r]))
        out.append(f"| {b} | {h} | {flops / 1e9:.3g} | {fmt_num(gemm)} | {fmt_num(bound)} | {fmt_num(rr)} | "
                   f"{fmt_num(pr)} | {med(ratios):.2f}× ({spread(ratios, '{:.2f}')}) | {rr / bound:.0%} | "
                   f"{pr / bound:.0%} | {rss(rust)} | {rss(py)} |")
    return out


def w2_tables(rows, dims, methods):
    out = ["### W2 — score matching training step, ms per step (median, min–max)", ""]
    head = "| D |"
    rule = "|---:|"
    for m in methods:
        head += f" {m} Rust | {m} PyTorch | {m} Rust speed-up |"
        rule += "---:|---:|---:|"
    out += [head, rule]
    for d in dims:
        line = f"| {d} |"
        for m in methods:
            for impl in ("rust", "pytorch"):
                xs = [r["ms_per_iter"] for r in select(rows, impl, "w2", m, d)]
                line += f" {fmt_num(med(xs))} ({spread(xs, '{:.3g}')}) |" if xs else " - |"
            ratios = paired_ratios(rows, "w2", m, "per_s", d)
            line += f" {med(ratios):.2f}× |" if ratios else " - |"
        out.append(line)
    peaks = []
    for impl, label in IMPLS[:2]:
        xs = [r["peak_rss_mib"] for r in rows if r.get("impl") == impl and r["workload"] == "w2" and "peak_rss_mib" in r]
        if xs:
            peaks.append(f"{label} {fmt_num(max(xs))} MiB")
    if peaks:
        out += ["", "- peak RSS of a W2 process (largest over the processes): " + ", ".join(peaks)]
    if "exact" in methods and "hutchinson" in methods:
        out += ["", "### W2 — exact / Hutchinson step-time ratio, and Hutchinson's estimator variance", "",
                "| D | exact/Hutchinson Rust | exact/Hutchinson PyTorch | Var[vᵀ∇²f v] (1 probe, batch mean) | "
                "rms exact tr ∇²f | rel. sd of 1 probe | sd of the loss's trace term (B=128, 1 probe) |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for d in dims:
            line = f"| {d} |"
            for impl in ("rust", "pytorch"):
                e = med([r["ms_per_iter"] for r in select(rows, impl, "w2", "exact", d)])
                h = med([r["ms_per_iter"] for r in select(rows, impl, "w2", "hutchinson", d)])
                line += f" {fmt_num(e / h)}× |" if e == e and h == h else " - |"
            v = select(rows, "rust", "w2", "hutchinson_variance", d)
            if v:
                v = v[0]
                line += (f" {v['probe_variance']:.4g} | {v['trace_rms']:.4g} | {v['rel_sd']:.3g} |"
                         f" {v['loss_term_sd']:.4g} |")
            else:
                line += " - | - | - | - |"
            out.append(line)
    return out


def report(rows, args, argv, t_start, t_end, loads):
    out = ["## Results", ""]
    busy = [r["busy_before"] for r in rows if r.get("busy_before") == r.get("busy_before") and "busy_before" in r]
    procs = {(r["impl"], r["workload"], r["repeat"], r.get("batch"), r.get("width")): r
             for r in rows if "process_cpu_util" in r and "cpu_util" in r}
    utils = [p["process_cpu_util"] for p in procs.values()]
    reruns = sum(p["attempts"] - 1 for p in procs.values())
    contended = sum(1 for p in procs.values() if p["process_cpu_util"] < p.get("cpu_floor", args.min_cpu_util))
    out += [
        f"- command: `{argv}`",
        f"- machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}; {platform.system()} {platform.release()}",
        f"- threads: {args.threads} (PyTorch `torch.set_num_threads`; Rust: W1 "
        + ("`tch::set_num_threads`" if args.rust_no_split else "splits its Langevin chains over them, 1 libtorch thread each "
           "(`ebm_core::threads::use_threads`)")
        + ", W2/W3 `tch::set_num_threads`); Rust scores: "
        f"{args.rust_score} (PyTorch: eager autograd)",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, wall time {t_end - t_start:.0f} s, "
        f"1-min load average at start/end {loads[0]:.2f}/{loads[1]:.2f}; busy CPU share just before each "
        f"benchmark process: median {med(busy):.0%}, max {max(busy) if busy else float('nan'):.0%}",
        f"- contention check: CPU time / (wall time × threads) of each timed block, lowest per process: median "
        f"{med(utils):.2f}, min {min(utils) if utils else float('nan'):.2f}; {reruns} process(es) re-run for "
        f"falling under {args.min_cpu_util} ({args.min_cpu_util_split} for a process that splits its chains); "
        f"{contended} of {len(utils)} kept process(es) still under it",
        "",
    ]
    if "w1" in args.workloads:
        it = [r["train_iters"] for r in rows if r.get("case") == "pcd_quality"]
        out += rate_table(rows, "w1", "pcd", "it/s", f"W1 — PCD on 8 Gaussians (KL after {it[0] if it else '?'} iterations)",
                          quality="pcd_quality") + [""]
    if "w1" in args.workloads and args.sizes != "256x128":
        out += w1_size_table(rows, args.sizes.split(",")) + [""]
    if "w2" in args.workloads:
        dims = [int(d) for d in args.dims.split(",")]
        out += w2_tables(rows, dims, args.methods) + [""]
    if "w3" in args.workloads:
        out += rate_table(rows, "w3", "langevin", "Langevin steps/s", "W3 — Langevin on the conv energy (28×28×1, batch 64)") + [""]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="w1,w2,w3", help="comma-separated subset of w1,w2,w3")
    p.add_argument("--quick", action="store_true", help="short smoke run (fewer iterations, repeats and W2 dims)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, help="override the timed iterations of every selected workload")
    p.add_argument("--warmup", type=int, help="override the warm-up iterations")
    p.add_argument("--repeats", type=int, help="override the repeats (processes per implementation)")
    p.add_argument("--dims", help=f"W2 dimensions (default {W2_DIMS}; --quick {W2_DIMS_QUICK})")
    p.add_argument("--methods", default=",".join(W2_METHODS), help="W2 methods")
    p.add_argument("--sizes", help=f"W1 sizes BATCHxWIDTH (default {W1_SIZES}; --quick {W1_SIZES_QUICK})")
    p.add_argument("--rust-score", choices=["fast", "autograd"], default="fast",
                   help="how the Rust samplers take the score (the PyTorch reference always uses autograd)")
    p.add_argument("--rust-no-split", action="store_true",
                   help="W1: the Rust side spends --threads as libtorch threads instead of splitting its Langevin "
                        "chains over them (the layout before chain splitting)")
    p.add_argument("--exact-budget", type=int, default=256, help="W2: exact SM runs ceil(budget/D) steps")
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "bench"), help="the Rust benchmark binary")
    p.add_argument("--python", default=sys.executable, help="python that runs reference.py")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each process, wait up to SECONDS for the other CPU load to fall under --quiet-threshold "
                        "(useful on a shared machine)")
    p.add_argument("--quiet-threshold", type=float, default=0.15, help="busy CPU fraction counted as quiet")
    p.add_argument("--min-cpu-util", type=float, default=0.9,
                   help="a process whose timed blocks got less than this share of its threads' CPU time "
                        "(another process took the cores) is run again, up to --retries times")
    p.add_argument("--min-cpu-util-split", type=float, default=0.65,
                   help="--min-cpu-util for a Rust process that splits its Langevin chains over the threads (it keeps "
                        "them all busy only while sampling: about 0.77 on an idle 2-core machine)")
    p.add_argument("--retries", type=int, default=3, help="re-runs of a contended process (the least "
                   "contended attempt is kept)")
    p.add_argument("--breakdown", action="store_true", help="W1: also time the parts of a Rust iteration apart")
    p.add_argument("--malloc-reference", action="store_true",
                   help="also run the PyTorch reference with glibc's malloc thresholds set as ebm-core sets its own")
    p.add_argument("--out", help="also write the markdown report to this file")
    p.add_argument("--raw", help="also write every JSON line to this file")
    args = p.parse_args()
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in args.workloads if w not in DEFAULTS]
    if bad:
        p.error(f"unknown workload(s) {bad}; use w1, w2, w3")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.sizes is None:
        args.sizes = W1_SIZES_QUICK if args.quick else W1_SIZES
    if args.dims is None:
        args.dims = W2_DIMS_QUICK if args.quick else W2_DIMS
    if args.quick and args.exact_budget == 256:
        args.exact_budget = 64
    if not Path(args.bin).exists():
        raise SystemExit(f"{args.bin} not found: build it with scripts/with-libtorch cargo build --release -p experiments --bin bench")

    argv = shlex.join(["just", "bench"] + sys.argv[1:])
    t0 = time.time()
    l0 = loadavg()
    rows = collect(args)
    l1 = loadavg()
    t1 = time.time()
    if args.raw:
        Path(args.raw).write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report(rows, args, argv, t0, t1, (l0, l1))
    if any(r["process_cpu_util"] < r.get("cpu_floor", args.min_cpu_util) for r in rows if "process_cpu_util" in r):
        text += ("\n> Warning: some timed blocks ran while other processes took the cores (CPU share under "
                 f"{args.min_cpu_util} after {args.retries} re-runs). With 2 libtorch threads per process, contention "
                 "slows OpenMP barriers many-fold: those repeats are unreliable (see the min–max columns).\n")
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
