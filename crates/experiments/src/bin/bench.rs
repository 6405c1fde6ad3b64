//! Benchmarks of the ebm-core hot loops (W1, W2, W3 of BENCHMARKS.md), timed the way `bench/run.py`
//! compares them with the PyTorch eager reference in `bench/reference.py`.
//!
//! Prints one JSON object per line on stdout, e.g.
//! `{"impl":"rust","workload":"w1","case":"pcd","repeat":0,"iters":200,"seconds":1.2,"ms_per_iter":6.0,"per_s":166.7,"unit":"it/s"}`.
//! W1 adds a `pcd_quality` line (KL after training) and, per size, an `sgemm` line (the measured GFLOP/s of
//! the hidden layer's matrix product, for the matmul bound); W2 a `hutchinson_variance` line per dimension.
//! Timing lines carry `peak_rss_mib`, the process's peak resident memory so far (`VmHWM`).
//!
//! Every workload uses the library as a user would: W1 is `Contrastive` (replay buffer) plus `Adam`,
//! W2 is `ScoreMatching` plus `Adam`, W3 is `Langevin::run` on `ConvEnergy`.

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use ebm_core::autograd::{hessian_trace_exact, hessian_trace_hutchinson, Probe, ScorePath};
use ebm_core::energy::{Activation, ConvConfig, ConvEnergy, EnergyModel, Mlp, MlpConfig};
use ebm_core::objective::{Contrastive, ContrastiveConfig, Negatives, Objective, ScoreMatching, SmMethod};
use ebm_core::optim::{Adam, AdamConfig};
use ebm_core::sampler::{BufferConfig, Init, Langevin, LangevinConfig, Sampler, SamplerConfig};
use ebm_core::Batch;
use serde_json::{json, Value};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Which workload to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// PCD with a replay buffer on 8 Gaussians (MLP 2-H-H-1, batch B; `--sizes`).
    W1,
    /// Score matching training steps versus the input dimension (MLP D-256-256-1).
    W2,
    /// 60 Langevin steps on the default conv energy (28×28×1, batch 64).
    W3,
}

/// The score-matching variants timed by W2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum W2Method {
    /// Exact Hessian trace (D backward passes).
    Exact,
    /// Hutchinson trace with 1 Rademacher probe.
    Hutchinson,
    /// Denoising score matching, σ = 0.1.
    Dsm,
}

impl W2Method {
    fn name(self) -> &'static str {
        match self {
            W2Method::Exact => "exact",
            W2Method::Hutchinson => "hutchinson",
            W2Method::Dsm => "dsm",
        }
    }

    fn sm(self) -> SmMethod {
        match self {
            W2Method::Exact => SmMethod::Exact,
            W2Method::Hutchinson => SmMethod::Hutchinson { probes: 1, probe: Probe::Rademacher },
            W2Method::Dsm => SmMethod::Denoising { sigma: DSM_SIGMA },
        }
    }
}

/// Rust side of the ebm-rs benchmarks (see BENCHMARKS.md); prints JSON lines of timings.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    /// Workload to run.
    #[arg(long, value_enum)]
    workload: Workload,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed iterations per repeat (W1: training iterations; W2: training steps; W3: chains of 60 steps).
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Untimed iterations before each timed block.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Timed blocks, each with a freshly initialised model.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Seed; repeat r uses seed + r.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// W2: input dimensions.
    #[arg(long, value_delimiter = ',', default_value = "2,8,32,128,512,784")]
    dims: Vec<i64>,
    /// W2: methods.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "exact,hutchinson,dsm")]
    methods: Vec<W2Method>,
    /// W2: exact score matching runs q = ceil(budget / D) steps (at least 1, at most --iters) after
    /// min(--warmup, q - 1) warm-up steps.
    #[arg(long, default_value_t = 256)]
    exact_budget: usize,
    /// W2: probes used to measure the Hutchinson estimator's variance (0 skips the measurement).
    #[arg(long, default_value_t = 64)]
    variance_probes: usize,
    /// Also time parts apart: W1 negatives, loss forward and backward, Adam step; W2 the Adam step.
    #[arg(long)]
    breakdown: bool,
    /// W1: skip the KL evaluation after training (for profiling).
    #[arg(long)]
    no_kl: bool,
    /// W1: sizes `BATCHxWIDTH` (MLP 2-W-W-1, batch B). Sizes other than 256x128 run
    /// `w1_iters(--iters, B, W)` iterations (the same matmul work as --iters at 256x128, at least 3).
    #[arg(long, value_delimiter = ',', default_value = "256x128")]
    sizes: Vec<String>,
    /// How the samplers take the score: the model's closed form (`fast`) or `autograd`.
    #[arg(long, value_enum, default_value = "fast")]
    score: ScoreArg,
    /// W1: spend --threads as libtorch intra-op threads, without splitting the Langevin chains over threads
    /// (the layout before chain splitting; see `ebm_core::threads`).
    #[arg(long)]
    no_split: bool,
}

/// `--score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScoreArg {
    /// `EnergyModel::f_and_score` (the MLP's closed form).
    Fast,
    /// Autograd for every score.
    Autograd,
}

const DSM_SIGMA: f64 = 0.1;

fn emit(v: Value) {
    println!("{v}");
}

fn timing(workload: &str, case: &str, repeat: usize, iters: usize, t: Timed, units: f64, unit: &str) -> Value {
    json!({
        "impl": "rust",
        "workload": workload,
        "case": case,
        "repeat": repeat,
        "iters": iters,
        "seconds": t.wall,
        "ms_per_iter": 1e3 * t.wall / iters as f64,
        "per_s": units * iters as f64 / t.wall,
        "unit": unit,
        // the threads this process may keep busy: libtorch's, or the Langevin chain threads when it splits chains
        "cpu_util": t.cpu / (t.wall * tch::get_num_threads().max(ebm_core::threads::chain_threads() as i32) as f64),
    })
}

/// Wall-clock and CPU seconds of a timed block.
#[derive(Debug, Clone, Copy)]
struct Timed {
    wall: f64,
    /// CPU time of all the process's threads; `cpu / (wall · threads)` near 1 means no other process
    /// took the cores (libtorch's idle worker threads spin), well below 1 means the block was contended.
    cpu: f64,
}

/// CPU seconds used so far by this process, every thread it ran included (also those already ended, such as
/// Langevin's chain threads): user + system time of `/proc/self/stat`, in clock ticks of 10 ms (NaN where that
/// is not readable).
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // the fields after the command name (which may hold spaces) start with the state, field 3; utime and stime
    // are fields 14 and 15
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return f64::NAN };
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (f.get(11).and_then(|v| v.parse::<f64>().ok()), f.get(12).and_then(|v| v.parse::<f64>().ok())) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// Times `iters` calls of `step` after `warmup` untimed ones.
fn time_it(warmup: usize, iters: usize, mut step: impl FnMut() -> Result<()>) -> Result<Timed> {
    for _ in 0..warmup {
        step()?;
    }
    let c0 = process_cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..iters {
        step()?;
    }
    let wall = t0.elapsed().as_secs_f64();
    Ok(Timed { wall, cpu: process_cpu_seconds() - c0 })
}

/// The peak resident memory of this process so far, MiB (`VmHWM` of /proc/self/status; NaN where that is not
/// readable).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The trainable parameters of a var store, sorted by name (as `Trainer` does).
fn named_params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut p: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    p.sort_by(|a, b| a.0.cmp(&b.0));
    p
}

// ------------------------------------------------------------------------------------------------
// W1

const W1_STD: f64 = 0.1;

fn centers() -> Tensor {
    let c: Vec<f32> = (0..8)
        .flat_map(|k| {
            let a = k as f64 * std::f64::consts::FRAC_PI_4;
            [(2.0 * a.cos()) as f32, (2.0 * a.sin()) as f32]
        })
        .collect();
    Tensor::from_slice(&c).view([8, 2])
}

fn eight_gaussians(c: &Tensor, n: i64) -> Tensor {
    let comp = Tensor::randint(8, [n], (Kind::Int64, Device::Cpu));
    c.index_select(0, &comp) + Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * W1_STD
}

/// KL(p_data ‖ p_θ) for 8 Gaussians: log Z by a 400×400 midpoint rule on [-3, 3]², 5000 test points.
fn kl_8gaussians(m: &dyn EnergyModel, c: &Tensor) -> Result<f64> {
    let (grid, lo, hi) = (400i64, -3.0f64, 3.0f64);
    let step = (hi - lo) / grid as f64;
    tch::no_grad(|| {
        let ax = (Tensor::arange(grid, (Kind::Float, Device::Cpu)) + 0.5) * step + lo;
        let gx = ax.view([grid, 1]).expand([grid, grid], false).reshape([-1]);
        let gy = ax.view([1, grid]).expand([grid, grid], false).reshape([-1]);
        let pts = Tensor::stack(&[gx, gy], 1);
        let log_z = m.f(&pts).to_kind(Kind::Double).logsumexp([0], false) + 2.0 * step.ln();
        let x = eight_gaussians(c, 5000);
        let d2 = (x.unsqueeze(1) - c.unsqueeze(0)).square().sum_dim_intlist(-1, false, Kind::Float);
        let s2 = W1_STD * W1_STD;
        let log_n = d2 / (-2.0 * s2) - (2.0 * std::f64::consts::PI * s2).ln();
        let log_p = log_n.logsumexp([1], false) - 8f64.ln();
        let kl = (log_p.to_kind(Kind::Double) - m.f(&x).to_kind(Kind::Double) + log_z).mean(Kind::Double);
        Ok(f64::try_from(kl)?)
    })
}

/// A W1 size: batch B and hidden width H of the MLP 2-H-H-1.
fn parse_size(s: &str) -> Result<(i64, i64)> {
    let parse = |v: &str| v.trim().parse::<i64>().ok().filter(|v| *v >= 1);
    match s.split_once('x').map(|(b, h)| (parse(b), parse(h))) {
        Some((Some(b), Some(h))) => Ok((b, h)),
        _ => bail!("--sizes: '{s}' is not BATCHxWIDTH with both ≥ 1 (e.g. 256x128)"),
    }
}

/// FLOPs of the matrix products of one W1 iteration at batch `b`, width `h` (2·m·n·k each): 20 Langevin steps
/// of a forward and an input-gradient pass, then the loss's two forwards (x⁺, x⁻) and its backward (weight
/// gradients of all three layers and input gradients of the upper two, on both batches). Must match
/// `w1_flops` in bench/reference.py.
fn w1_flops(b: i64, h: i64) -> f64 {
    let (b, h, d, k) = (b as f64, h as f64, 2.0, 20.0);
    let layers = d * h + h * h + h; // Σ in·out over the three layers
    let fwd = |n: f64| 2.0 * n * layers;
    let step = fwd(b) + fwd(b); // forward + input gradient (same products, transposed)
    let loss_bwd = fwd(2.0 * b) + 2.0 * (2.0 * b) * (h * h + h);
    k * step + 2.0 * fwd(b) + loss_bwd
}

/// Timed and warm-up iterations of a W1 size: the base size 256x128 runs `iters` / `warmup`; others as many as
/// give the same matmul work (at least 3 timed, 1 warm-up). Must match `w1_iters` in bench/reference.py.
fn w1_iters(iters: usize, warmup: usize, b: i64, h: i64) -> (usize, usize) {
    let r = w1_flops(256, 128) / w1_flops(b, h);
    let scale = |n: usize, min: usize| ((n as f64 * r).round() as usize).max(min).min(n.max(min));
    (scale(iters, 3), scale(warmup, 1))
}

/// The case name of a W1 size: `pcd` for 256x128 (as before sizes existed), `pcd_b{B}_h{H}` otherwise.
fn w1_case(b: i64, h: i64) -> String {
    if (b, h) == (256, 128) {
        "pcd".into()
    } else {
        format!("pcd_b{b}_h{h}")
    }
}

/// GFLOP/s of `[b, h] × [h, h]` single-precision products (`mm`, the shape of W1's hidden layer), timed for
/// about 0.3 s after a warm-up: the matmul bound of W1 at this size on this machine, measured in the same run.
fn sgemm_gflops(b: i64, h: i64) -> f64 {
    let a = Tensor::randn([b, h], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([h, h], (Kind::Float, Device::Cpu));
    for _ in 0..3 {
        let _ = a.mm(&w);
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while n < 5 || t0.elapsed().as_secs_f64() < 0.3 {
        let _ = a.mm(&w);
        n += 1;
    }
    2.0 * (b * h * h) as f64 * n as f64 / t0.elapsed().as_secs_f64() / 1e9
}

fn run_w1(cli: &Cli) -> Result<()> {
    let c = centers();
    let sizes = cli.sizes.iter().map(|s| parse_size(s)).collect::<Result<Vec<_>>>()?;
    for r in 0..cli.repeats {
        for &(b, h) in &sizes {
            run_w1_size(cli, r, b, h, &c)?;
        }
    }
    Ok(())
}

fn run_w1_size(cli: &Cli, r: usize, b: i64, h: i64, c: &Tensor) -> Result<()> {
    let case = w1_case(b, h);
    let (iters, warmup) = w1_iters(cli.iters, cli.warmup, b, h);
    tch::manual_seed((cli.seed + r as u64) as i64);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![h, h], activation: Activation::Silu })?;
    let cfg = ContrastiveConfig {
        negatives: Negatives::Replay(BufferConfig {
            capacity: 10_000,
            restart_prob: 0.05,
            init: Init::Uniform { low: -4.0, high: 4.0 },
        }),
        k: 20,
        sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(0.01)),
        alpha: 0.1,
    };
    let mut obj = Contrastive::new(cfg, &model, Device::Cpu)?;
    let mut adam = Adam::new(AdamConfig { lr: 1e-3, ..Default::default() }, named_params(&vs))?;
    let secs = time_it(warmup, iters, || {
        let pos = Batch::new(eight_gaussians(c, b));
        let out = obj.loss(&model, &pos)?;
        let loss = f64::try_from(&out.loss)?;
        if !loss.is_finite() {
            bail!("W1 loss is {loss}");
        }
        adam.zero_grad();
        out.loss.backward();
        adam.step();
        Ok(())
    })?;
    let mut line = timing("w1", &case, r, iters, secs, 1.0, "it/s");
    line["batch"] = json!(b);
    line["width"] = json!(h);
    line["flops_per_iter"] = json!(w1_flops(b, h));
    line["peak_rss_mib"] = json!(peak_rss_mib());
    line["score"] = json!(ebm_core::autograd::score_path().name());
    line["chain_threads"] = json!(ebm_core::threads::chain_threads());
    emit(line);
    // the matmul bound of the whole thread budget: with chains split, libtorch runs on one thread meanwhile
    let libtorch_threads = tch::get_num_threads();
    tch::set_num_threads(cli.threads as i32);
    let gflops = sgemm_gflops(b, h);
    tch::set_num_threads(libtorch_threads);
    emit(json!({"impl": "rust", "workload": "w1", "case": "sgemm", "repeat": r, "batch": b, "width": h,
                "gflops": gflops}));
    if case == "pcd" {
        if !cli.no_kl {
            let kl = kl_8gaussians(&model, c)?;
            emit(json!({"impl": "rust", "workload": "w1", "case": "pcd_quality", "repeat": r,
                        "train_iters": warmup + iters, "kl": kl}));
        }
        // after the KL: the breakdown steps Adam on stale gradients
        if cli.breakdown {
            w1_breakdown(cli, r, &model, &mut obj, &mut adam, c)?;
        }
    }
    Ok(())
}

/// Times the parts of a W1 iteration apart, `cli.iters` times each: the negatives (k Langevin steps
/// with the replay buffer), the loss without its negatives (two forwards and one backward), the Adam
/// step alone. Each emits a `pcd_part:<name>` line.
fn w1_breakdown(cli: &Cli, r: usize, model: &Mlp, obj: &mut Contrastive, adam: &mut Adam, c: &Tensor) -> Result<()> {
    let batch = Batch::new(eight_gaussians(c, 256));
    let pos = batch.x.shallow_clone();
    let secs = time_it(2, cli.iters, || {
        let _ = obj.negatives(model, &batch)?;
        Ok(())
    })?;
    emit(timing("w1", "pcd_part:negatives", r, cli.iters, secs, 1.0, "it/s"));
    let (neg, _) = obj.negatives(model, &batch)?;
    let secs = time_it(2, cli.iters, || {
        let f_pos = model.f(&pos);
        let f_neg = model.f(&neg);
        let cd = f_neg.mean(Kind::Float) - f_pos.mean(Kind::Float);
        let reg = f_pos.square().mean(Kind::Float) + f_neg.square().mean(Kind::Float);
        let loss = &cd + &reg * 0.1;
        let _ = f64::try_from(&loss)?;
        adam.zero_grad();
        loss.backward();
        Ok(())
    })?;
    emit(timing("w1", "pcd_part:loss_fwd_bwd", r, cli.iters, secs, 1.0, "it/s"));
    let secs = time_it(2, cli.iters, || {
        adam.step();
        Ok(())
    })?;
    emit(timing("w1", "pcd_part:adam_step", r, cli.iters, secs, 1.0, "it/s"));
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// W2

/// Steps and warm-up steps for one W2 case (must match `exact_iters` in bench/reference.py).
fn w2_iters(method: W2Method, d: i64, iters: usize, warmup: usize, budget: usize) -> (usize, usize) {
    if method != W2Method::Exact {
        return (iters, warmup);
    }
    let q = budget.div_ceil(d as usize).max(1);
    (q.min(iters), warmup.min(q - 1))
}

fn mlp_d(vs: &nn::VarStore, d: i64) -> Result<Mlp> {
    Ok(Mlp::new(&vs.root(), &MlpConfig { in_dim: d, hidden: vec![256, 256], activation: Activation::Silu })?)
}

/// Hutchinson's single-probe variance on a fixed batch, next to the exact trace's scale.
fn w2_variance(cli: &Cli, d: i64) -> Result<Value> {
    tch::manual_seed(cli.seed as i64 + 1000);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = mlp_d(&vs, d)?;
    let x = Tensor::randn([128, d], (Kind::Float, Device::Cpu));
    let hu = hessian_trace_hutchinson(&model, &x, cli.variance_probes, Probe::Rademacher, false)?;
    let var = hu.probe_variance.expect("≥ 2 probes give a variance");
    let exact = hessian_trace_exact(&model, &x, false)?.trace;
    let var_mean = f64::try_from(var.mean(Kind::Double))?;
    let trace_rms = f64::try_from(exact.square().mean(Kind::Double).sqrt())?;
    let b = x.size()[0] as f64;
    Ok(json!({
        "impl": "rust", "workload": "w2", "case": "hutchinson_variance", "dim": d,
        "probes": cli.variance_probes,
        // mean over the batch of Var_v[vᵀ∇²f v] (one Rademacher probe)
        "probe_variance": var_mean,
        // √mean(tr²) of the exact trace, for scale
        "trace_rms": trace_rms,
        "rel_sd": var_mean.sqrt() / trace_rms,
        // sd of the batch-mean trace term of the loss, one probe per sample
        "loss_term_sd": (var_mean / b).sqrt(),
    }))
}

fn run_w2(cli: &Cli) -> Result<()> {
    for r in 0..cli.repeats {
        for &d in &cli.dims {
            for &method in &cli.methods {
                tch::manual_seed((cli.seed + r as u64) as i64);
                let vs = nn::VarStore::new(Device::Cpu);
                let model = mlp_d(&vs, d)?;
                let mut adam = Adam::new(AdamConfig { lr: 1e-3, ..Default::default() }, named_params(&vs))?;
                let x = Tensor::randn([128, d], (Kind::Float, Device::Cpu));
                let mut sm = ScoreMatching::new(method.sm())?;
                let (n, warm) = w2_iters(method, d, cli.iters, cli.warmup, cli.exact_budget);
                let secs = time_it(warm, n, || {
                    let out = sm.loss(&model, &Batch::new(x.shallow_clone()))?;
                    let loss = f64::try_from(&out.loss)?;
                    if !loss.is_finite() {
                        bail!("W2 loss is {loss}");
                    }
                    adam.zero_grad();
                    out.loss.backward();
                    adam.step();
                    Ok(())
                })?;
                let mut line = timing("w2", method.name(), r, n, secs, 1.0, "step/s");
                line["dim"] = json!(d);
                line["peak_rss_mib"] = json!(peak_rss_mib());
                emit(line);
                if cli.breakdown && method == W2Method::Hutchinson {
                    let secs = time_it(2, cli.iters, || {
                        adam.step();
                        Ok(())
                    })?;
                    let mut line = timing("w2", "part:adam_step", r, cli.iters, secs, 1.0, "step/s");
                    line["dim"] = json!(d);
                    emit(line);
                }
            }
            if r == 0 && cli.variance_probes >= 2 && cli.methods.contains(&W2Method::Hutchinson) {
                emit(w2_variance(cli, d)?);
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// W3

const W3_STEPS: usize = 60;

fn run_w3(cli: &Cli) -> Result<()> {
    let cfg = LangevinConfig {
        step_size: 10.0,
        noise: Some(0.005),
        grad_clip: Some(0.03),
        clamp: Some([-1.0, 1.0]),
        record: false,
    };
    let sampler = Langevin::new(cfg)?;
    for r in 0..cli.repeats {
        tch::manual_seed((cli.seed + r as u64) as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = ConvEnergy::new(&vs.root(), &ConvConfig::default())?;
        let x0 = Tensor::rand([64, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let secs = time_it(cli.warmup, cli.iters, || {
            let out = sampler.run(&model, &x0, W3_STEPS)?;
            if out.x.size() != x0.size() {
                bail!("W3 chain returned shape {:?}", out.x.size());
            }
            Ok(())
        })?;
        let mut line = timing("w3", "langevin", r, cli.iters, secs, W3_STEPS as f64, "step/s");
        line["peak_rss_mib"] = json!(peak_rss_mib());
        emit(line);
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.threads == 0 || cli.iters == 0 || cli.repeats == 0 {
        bail!("--threads, --iters and --repeats must be ≥ 1");
    }
    if cli.dims.iter().any(|d| *d < 1) {
        bail!("--dims must be positive");
    }
    // W1 is an MLP sampled by Langevin: its chains split over the threads (ebm_core::threads)
    let layout = ebm_core::threads::use_threads(cli.threads, cli.workload == Workload::W1 && !cli.no_split);
    ebm_core::autograd::set_score_path(match cli.score {
        ScoreArg::Fast => ScorePath::Fast,
        ScoreArg::Autograd => ScorePath::Autograd,
    });
    eprintln!(
        "bench: libtorch {}, {layout}, workload {:?}, scores {}",
        experiments::device::LIBTORCH_VERSION,
        cli.workload,
        ebm_core::autograd::score_path().name()
    );
    match cli.workload {
        Workload::W1 => run_w1(&cli),
        Workload::W2 => run_w2(&cli),
        Workload::W3 => run_w3(&cli),
    }
}
