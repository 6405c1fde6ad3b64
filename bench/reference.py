#!/usr/bin/env python3
"""PyTorch eager reference for the ebm-rs benchmarks (W1, W2, W3 of BENCHMARKS.md).

Same algorithms, shapes and thread count as `target/release/bench` (crates/experiments/src/bin/bench.rs),
written the way a PyTorch user would write them, and the same command line. Prints one JSON object per
line on stdout:

    {"impl": "pytorch", "workload": "w1", "case": "pcd", "repeat": 0, "iters": 200, "seconds": 2.1,
     "ms_per_iter": 10.5, "per_s": 95.2, "unit": "it/s"}

plus, for W1, a quality line (`"case": "pcd_quality"`, KL after training).

Usage: .venv/bin/python bench/reference.py --workload w1|w2|w3 --threads 2 --iters N --warmup N --repeats R
"""

import argparse
import json
import math
import resource
import sys
import time

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------------
# shared helpers


def emit(obj):
    print(json.dumps(obj), flush=True)


class Timer:
    """Wall-clock and process CPU time of a block; `cpu_util` = CPU / (wall x threads) is near 1 when no
    other process took the cores (idle OpenMP workers spin), well below 1 when the block was contended."""

    def __enter__(self):
        self.c0, self.t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu_util = (time.process_time() - self.c0) / (self.seconds * torch.get_num_threads())
        return False


def timing_line(workload, case, repeat, iters, timer, units_per_iter, unit, extra=None):
    seconds = timer.seconds
    obj = {
        "impl": "pytorch",
        "workload": workload,
        "case": case,
        "repeat": repeat,
        "iters": iters,
        "seconds": seconds,
        "ms_per_iter": 1e3 * seconds / iters,
        "per_s": units_per_iter * iters / seconds,
        "unit": unit,
        "cpu_util": timer.cpu_util,
        "peak_rss_mib": peak_rss_mib(),
    }
    if extra:
        obj.update(extra)
    emit(obj)


def peak_rss_mib():
    """Peak resident memory of this process so far, MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def uniform_(t, bound):
    with torch.no_grad():
        t.uniform_(-bound, bound)


class Mlp(nn.Module):
    """in_dim -> hidden... -> 1 with SiLU; PyTorch's default Linear init (as tch's nn::linear)."""

    def __init__(self, in_dim, hidden):
        super().__init__()
        dims = [in_dim] + list(hidden) + [1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i + 1 < len(self.layers):
                h = torch.nn.functional.silu(h)
        return h.squeeze(-1)


class ConvEnergy(nn.Module):
    """`ConvEnergy` with `ConvConfig::default()`: 1x28x28 -> conv3x3(32, s1) -> conv3x3(64, s2)
    -> conv3x3(64, s2), padding 1, SiLU after each, flatten (64*7*7) -> linear to 1, no spectral norm.
    Weights and biases uniform in +-1/sqrt(fan_in), as in the Rust model."""

    def __init__(self, in_channels=1, image_size=(28, 28), channels=(32, 64, 64)):
        super().__init__()
        convs = []
        c_in = in_channels
        h, w = image_size
        for i, c in enumerate(channels):
            stride = 1 if i == 0 else 2
            conv = nn.Conv2d(c_in, c, 3, stride=stride, padding=1)
            bound = 1.0 / math.sqrt(c_in * 9)
            uniform_(conv.weight, bound)
            uniform_(conv.bias, bound)
            convs.append(conv)
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
            c_in = c
        self.convs = nn.ModuleList(convs)
        feat = c_in * h * w
        self.head = nn.Linear(feat, 1)
        bound = 1.0 / math.sqrt(feat)
        uniform_(self.head.weight, bound)
        uniform_(self.head.bias, bound)

    def forward(self, x):
        h = x
        for conv in self.convs:
            h = torch.nn.functional.silu(conv(h))
        return self.head(h.flatten(1)).squeeze(-1)


def set_requires_grad(params, flag):
    for p in params:
        p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------------
# W1: PCD with a replay buffer on 8 Gaussians

CENTERS = torch.tensor([[2.0 * math.cos(k * math.pi / 4), 2.0 * math.sin(k * math.pi / 4)] for k in range(8)])
STD = 0.1


def eight_gaussians(n):
    comp = torch.randint(8, (n,))
    return CENTERS[comp] + STD * torch.randn(n, 2)


def log_p_data(x):
    d2 = (x[:, None, :] - CENTERS[None, :, :]).square().sum(-1)
    log_n = -d2 / (2 * STD * STD) - math.log(2 * math.pi * STD * STD)
    return torch.logsumexp(log_n, 1) - math.log(8)


@torch.no_grad()
def kl_8gaussians(model, n_test=5000, grid=400, lo=-3.0, hi=3.0):
    """KL(p_data || p_theta) with log Z from a grid x grid midpoint rule on [lo, hi]^2."""
    step = (hi - lo) / grid
    ax = lo + step * (torch.arange(grid, dtype=torch.float32) + 0.5)
    gx, gy = torch.meshgrid(ax, ax, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    log_z = torch.logsumexp(model(pts).double(), 0) + 2 * math.log(step)
    x = eight_gaussians(n_test)
    return float((log_p_data(x).double() - model(x).double() + log_z).mean())


def parse_size(text):
    b, h = text.split("x")
    return int(b), int(h)


def w1_flops(b, h):
    """FLOPs of the matrix products of one W1 iteration at batch b, width h. Must match `w1_flops` in bench.rs."""
    d, k = 2.0, 20.0
    layers = d * h + h * h + h

    def fwd(n):
        return 2.0 * n * layers

    step = fwd(b) + fwd(b)
    loss_bwd = fwd(2.0 * b) + 2.0 * (2.0 * b) * (h * h + h)
    return k * step + 2.0 * fwd(b) + loss_bwd


def w1_iters(iters, warmup, b, h):
    """(timed, warm-up) iterations of a W1 size. Must match `w1_iters` in bench.rs."""
    r = w1_flops(256, 128) / w1_flops(b, h)

    def scale(n, lo):
        # Rust's f64::round rounds halves away from zero
        v = int(math.floor(n * r + 0.5))
        return min(max(v, lo), max(n, lo))

    return scale(iters, 3), scale(warmup, 1)


def w1_case(b, h):
    return "pcd" if (b, h) == (256, 128) else f"pcd_b{b}_h{h}"


class W1:
    capacity = 10_000
    restart = 0.05
    k = 20
    eps = 0.01
    alpha = 0.1
    lr = 1e-3

    def __init__(self, batch=256, width=128):
        self.batch = batch
        self.model = Mlp(2, [width, width])
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adam(self.params, lr=self.lr)
        self.buffer = torch.rand(self.capacity, 2) * 8.0 - 4.0
        self.sigma = math.sqrt(2 * self.eps)

    def negatives(self):
        b = self.batch
        idx = torch.randint(self.capacity, (b,))
        x = self.buffer.index_select(0, idx)
        fresh = torch.rand(b, 2) * 8.0 - 4.0
        restart = torch.rand(b, 1) < self.restart
        x = torch.where(restart, fresh, x)
        set_requires_grad(self.params, False)
        diag = None
        for i in range(self.k):
            x = x.detach().requires_grad_(True)
            f = self.model(x)
            (g,) = torch.autograd.grad(f.sum(), x)
            if i + 1 == self.k:
                diag = (f.double().mean().item(), g.norm(dim=1).double().mean().item())
            with torch.no_grad():
                x_mean = x.detach() + g * self.eps
                x = x_mean + torch.randn_like(x_mean) * self.sigma
        set_requires_grad(self.params, True)
        self.buffer.index_copy_(0, idx, x)
        return x, diag

    def step(self):
        pos = eight_gaussians(self.batch)
        neg, diag = self.negatives()
        f_pos = self.model(pos)
        f_neg = self.model(neg)
        loss = f_neg.mean() - f_pos.mean() + self.alpha * (f_pos.square().mean() + f_neg.square().mean())
        with torch.no_grad():
            mp, mn = f_pos.double().mean().item(), f_neg.double().mean().item()
        loss_v = loss.item()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss_v, mp, mn, diag


def sgemm_gflops(b, h):
    """GFLOP/s of [b, h] x [h, h] float products, timed for about 0.3 s (as bench.rs)."""
    a = torch.randn(b, h)
    w = torch.randn(h, h)
    for _ in range(3):
        a.mm(w)
    t0 = time.perf_counter()
    n = 0
    while n < 5 or time.perf_counter() - t0 < 0.3:
        a.mm(w)
        n += 1
    return 2.0 * b * h * h * n / (time.perf_counter() - t0) / 1e9


def run_w1(args):
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    for r in range(args.repeats):
        for b, h in sizes:
            case = w1_case(b, h)
            iters, warmup = w1_iters(args.iters, args.warmup, b, h)
            torch.manual_seed(args.seed + r)
            w = W1(b, h)
            for _ in range(warmup):
                w.step()
            with Timer() as t:
                for _ in range(iters):
                    w.step()
            timing_line("w1", case, r, iters, t, 1, "it/s",
                        {"batch": b, "width": h, "flops_per_iter": w1_flops(b, h), "score": "autograd"})
            emit({"impl": "pytorch", "workload": "w1", "case": "sgemm", "repeat": r, "batch": b, "width": h,
                  "gflops": sgemm_gflops(b, h)})
            if case == "pcd":
                emit(
                    {
                        "impl": "pytorch",
                        "workload": "w1",
                        "case": "pcd_quality",
                        "repeat": r,
                        "train_iters": warmup + iters,
                        "kl": kl_8gaussians(w.model),
                    }
                )


# ---------------------------------------------------------------------------------------------------
# W2: score matching cost versus dimension


def exact_iters(method, d, iters, warmup, budget):
    """(steps, warm-up steps) for one W2 case. Exact SM costs ~D backward passes, so it runs
    q = ceil(budget / D) steps (at least 1, at most `iters`) after min(warmup, q - 1) warm-up steps.
    Must match `w2_iters` in bench.rs."""
    if method != "exact":
        return iters, warmup
    q = max(1, -(-budget // d))
    return min(q, iters), min(warmup, q - 1)


def sm_loss(model, x, method, sigma=0.1):
    b = x.shape[0]
    if method == "dsm":
        noise = torch.randn_like(x) * sigma
        xt = (x.detach() + noise).requires_grad_(True)
        f = model(xt)
        (g,) = torch.autograd.grad(f.sum(), xt, create_graph=True)
        target = noise / (-sigma * sigma)
        terms = 0.5 * (g - target).view(b, -1).square().sum(1)
        return terms.mean(), g
    xl = x.detach().requires_grad_(True)
    f = model(xl)
    (g,) = torch.autograd.grad(f.sum(), xl, create_graph=True)
    gf = g.view(b, -1)
    if method == "exact":
        trace = torch.zeros(b)
        for i in range(gf.shape[1]):
            (h,) = torch.autograd.grad(gf[:, i].sum(), xl, retain_graph=True, create_graph=True)
            trace = trace + h.view(b, -1)[:, i]
    elif method == "hutchinson":
        v = torch.bernoulli(torch.full_like(g, 0.5)) * 2.0 - 1.0
        (hv,) = torch.autograd.grad((g * v).sum(), xl, retain_graph=True, create_graph=True)
        trace = (hv * v).view(b, -1).sum(1)
    else:
        raise ValueError(method)
    terms = 0.5 * gf.square().sum(1) + trace
    return terms.mean(), g


def run_w2(args):
    dims = [int(d) for d in args.dims.split(",")]
    methods = args.methods.split(",")
    for r in range(args.repeats):
        for d in dims:
            for method in methods:
                torch.manual_seed(args.seed + r)
                model = Mlp(d, [256, 256])
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                x = torch.randn(128, d)
                n, warm = exact_iters(method, d, args.iters, args.warmup, args.exact_budget)

                def step():
                    loss, g = sm_loss(model, x, method)
                    with torch.no_grad():
                        _gn = g.view(g.shape[0], -1).norm(dim=1).double().mean().item()
                    lv = loss.item()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    return lv

                for _ in range(warm):
                    step()
                with Timer() as t:
                    for _ in range(n):
                        step()
                timing_line("w2", method, r, n, t, 1, "step/s", {"dim": d})


# ---------------------------------------------------------------------------------------------------
# W3: Langevin on the conv energy


W3_STEPS = 60
W3_BATCH = 64
W3_STEP_SIZE = 10.0
W3_NOISE = 0.005
W3_GRAD_CLIP = 0.03
W3_BOX = (-1.0, 1.0)


def w3_chain(model, params, x0):
    set_requires_grad(params, False)
    x = x0
    x_mean = x0
    for _ in range(W3_STEPS):
        x = x.detach().requires_grad_(True)
        f = model(x)
        (g,) = torch.autograd.grad(f.sum(), x)
        with torch.no_grad():
            g = g.clamp(-W3_GRAD_CLIP, W3_GRAD_CLIP)
            x_mean = x.detach() + g * W3_STEP_SIZE
            x = x_mean + torch.randn_like(x_mean) * W3_NOISE
            x = x.clamp(*W3_BOX)
            x_mean = x_mean.clamp(*W3_BOX)
    set_requires_grad(params, True)
    return x.detach(), x_mean


def run_w3(args):
    for r in range(args.repeats):
        torch.manual_seed(args.seed + r)
        model = ConvEnergy()
        params = list(model.parameters())
        x0 = torch.rand(W3_BATCH, 1, 28, 28) * 2.0 - 1.0
        for _ in range(args.warmup):
            w3_chain(model, params, x0)
        with Timer() as t:
            for _ in range(args.iters):
                w3_chain(model, params, x0)
        timing_line("w3", "langevin", r, args.iters, t, W3_STEPS, "step/s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", required=True, choices=["w1", "w2", "w3"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=100, help="timed iterations (W3: chains of 60 steps)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1, help="timed blocks, each with a fresh model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dims", default="2,8,32,128,512,784", help="W2 dimensions")
    p.add_argument("--methods", default="exact,hutchinson,dsm", help="W2 methods")
    p.add_argument("--exact-budget", type=int, default=256, help="W2: exact SM runs ceil(budget/D) steps")
    p.add_argument("--sizes", default="256x128", help="W1 sizes BATCHxWIDTH (MLP 2-W-W-1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"reference: torch {torch.__version__}, {torch.get_num_threads()} threads",
        file=sys.stderr,
    )
    {"w1": run_w1, "w2": run_w2, "w3": run_w3}[args.workload](args)


if __name__ == "__main__":
    main()
