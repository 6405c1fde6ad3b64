//! The main experiment: CD-k, persistent CD, the replay buffer and score matching (exact, Hutchinson,
//! sliced, denoising) trained on the same MLP, optimiser and number of updates on 2-D densities, then
//! sampled the same way (long Langevin from noise, then MALA) and evaluated against exact answers.

use crate::common::device::DeviceArg;
use crate::common::{config, CdSettings};
use crate::common::{Outcome, RunContext, RunOptions, StartOptions};
use anyhow::{bail, Context, Result};
use ebm_core::autograd::Probe;
use ebm_core::data::Source2d;
use ebm_core::energy::{EnergyModel, Gaussian, Mlp, MlpConfig};
use ebm_core::eval::{
    evaluate_2d, grid_log_z, grid_mode_weights, kl_to_source, mmd2_rbf, nll, EvalOptions, EvalReport, GridLogZ,
    GridSpec,
};
use ebm_core::objective::Objective;
use ebm_core::objective::{Negatives, ObjectiveConfig, SmMethod};
use ebm_core::sampler::{BufferConfig, Init, Langevin, LangevinConfig, Mala, MalaConfig, Sampler};
use ebm_core::train::{TensorData, TrainConfig, Trainer};
use ebm_log::plot::{self, AxesBox, HeatmapOptions};
use ebm_log::{HParamValue, MetricsSink, ProgressSink, RunDir, TensorBoardWriter};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// A training method of the comparison; its name in configs and on the command line is the snake-case
/// form (`cd1`, `sm_hutchinson`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// CD-1 from the data.
    Cd1,
    /// CD-k from the data.
    Cdk,
    /// Persistent CD.
    Pcd,
    /// The IGEBM replay buffer.
    Replay,
    /// Score matching with the exact Hessian trace.
    SmExact,
    /// Score matching with Hutchinson's trace estimator.
    SmHutchinson,
    /// Sliced score matching.
    SmSliced,
    /// Denoising score matching.
    Dsm,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 8] = [
        Method::Cd1,
        Method::Cdk,
        Method::Pcd,
        Method::Replay,
        Method::SmExact,
        Method::SmHutchinson,
        Method::SmSliced,
        Method::Dsm,
    ];

    /// The name used in configs, folders and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Cd1 => "cd1",
            Method::Cdk => "cdk",
            Method::Pcd => "pcd",
            Method::Replay => "replay",
            Method::SmExact => "sm_exact",
            Method::SmHutchinson => "sm_hutchinson",
            Method::SmSliced => "sm_sliced",
            Method::Dsm => "dsm",
        }
    }

    /// The label in tables and figures.
    pub fn label(self, cfg: &CdVsSmConfig) -> String {
        match self {
            Method::Cd1 => "CD-1".into(),
            Method::Cdk => format!("CD-{}", cfg.cd.k),
            Method::Pcd => format!("PCD-{}", cfg.cd.k),
            Method::Replay => format!("Replay-{}", cfg.cd.k),
            Method::SmExact => "SM exact".into(),
            Method::SmHutchinson => format!("SM Hutchinson ({})", cfg.sm.probes),
            Method::SmSliced => format!("Sliced SM ({})", cfg.sm.probes),
            Method::Dsm => format!("DSM σ={}", cfg.sm.dsm_sigma),
        }
    }

    /// The objective; `bbox` sets the restart distribution of PCD and the buffer.
    pub fn objective(self, cfg: &CdVsSmConfig, bbox: [f64; 4]) -> ObjectiveConfig {
        let init = Init::Uniform { low: bbox[0].min(bbox[2]), high: bbox[1].max(bbox[3]) };
        let cd = |negatives, k| ObjectiveConfig::Contrastive(cfg.cd.objective(negatives, k));
        let sm = |method| ObjectiveConfig::ScoreMatching { method };
        let probes = cfg.sm.probes;
        match self {
            Method::Cd1 => cd(Negatives::Data, 1),
            Method::Cdk => cd(Negatives::Data, cfg.cd.k),
            Method::Pcd => cd(Negatives::Persistent { init }, cfg.cd.k),
            Method::Replay => cd(
                Negatives::Replay(BufferConfig {
                    capacity: cfg.cd.buffer_capacity,
                    restart_prob: cfg.cd.restart_prob,
                    init,
                }),
                cfg.cd.k,
            ),
            Method::SmExact => sm(SmMethod::Exact),
            Method::SmHutchinson => sm(SmMethod::Hutchinson { probes, probe: cfg.sm.probe }),
            Method::SmSliced => sm(SmMethod::Sliced { probes, probe: cfg.sm.probe }),
            Method::Dsm => sm(SmMethod::Denoising { sigma: cfg.sm.dsm_sigma }),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let valid: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method '{s}'; valid methods: {}", valid.join(", "))
        })
    }
}

/// Score-matching settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmSettings {
    /// Probes for Hutchinson and sliced SM.
    pub probes: usize,
    /// Probe distribution.
    pub probe: Probe,
    /// Noise level of denoising SM.
    pub dsm_sigma: f64,
}

impl Default for SmSettings {
    fn default() -> Self {
        SmSettings { probes: 1, probe: Probe::Rademacher, dsm_sigma: 0.05 }
    }
}

/// How every trained model is sampled for the sample metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingSettings {
    /// Chains (samples), started uniform on the data box plus margin.
    pub n: usize,
    /// Unadjusted Langevin steps from noise.
    pub langevin_steps: usize,
    /// Their step size ε (`x + ε∇f + √(2ε) z`).
    pub langevin_step: f64,
    /// MALA steps continuing the same chains.
    pub mala_steps: usize,
    /// MALA step size.
    pub mala_step: f64,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings { n: 2000, langevin_steps: 500, langevin_step: 1e-3, mala_steps: 300, mala_step: 2e-3 }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSettings {
    /// Test NLL and KL are logged every this many updates (0: only at the end).
    pub every: usize,
    /// Grid cells per axis for log Z during training.
    pub grid_n_train: usize,
    /// Grid cells per axis for the final log Z (≥ 400 per the workload definition).
    pub grid_n: usize,
    /// Heat map and sample images go to TensorBoard every this many updates (0: only at the end).
    pub image_every: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings { every: 250, grid_n_train: 200, grid_n: 400, image_every: 500 }
    }
}

/// The experiment's configuration (`experiments/exp_cd_vs_sm.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdVsSmConfig {
    /// Datasets (toy names or CSV files of x,y points).
    pub datasets: Vec<String>,
    /// Methods.
    pub methods: Vec<Method>,
    /// Seed: every run starts from the same initial weights for a given seed.
    pub seed: u64,
    /// Device.
    pub device: DeviceArg,
    /// CPU threads for libtorch (0: libtorch's default).
    pub threads: usize,
    /// Root folder of the runs.
    pub out: PathBuf,
    /// Run folder name (default: a timestamp).
    pub run_name: Option<String>,
    /// Training points drawn from each dataset.
    pub n_train: usize,
    /// Held-out test points.
    pub n_test: usize,
    /// The network, the same for every method.
    pub model: MlpConfig,
    /// Training loop (iterations, batch, Adam), the same for every method.
    pub train: TrainConfig,
    /// Contrastive settings.
    pub cd: CdSettings,
    /// Score-matching settings.
    pub sm: SmSettings,
    /// Final sampling.
    pub sampling: SamplingSettings,
    /// Evaluation.
    pub eval: EvalSettings,
}

impl Default for CdVsSmConfig {
    fn default() -> Self {
        CdVsSmConfig {
            datasets: ["8gaussians", "rings", "checkerboard", "two_gaussians"].map(String::from).to_vec(),
            methods: vec![
                Method::Cd1,
                Method::Cdk,
                Method::Pcd,
                Method::Replay,
                Method::SmExact,
                Method::SmHutchinson,
                Method::Dsm,
            ],
            seed: 0,
            device: DeviceArg::Auto,
            threads: 0,
            out: PathBuf::from("experiments/runs"),
            run_name: None,
            n_train: 20_000,
            n_test: 5_000,
            model: MlpConfig { in_dim: 2, hidden: vec![128, 128], activation: Default::default() },
            train: TrainConfig {
                iters: 2000,
                batch_size: 256,
                log_every: 10,
                keep_checkpoints: 1,
                ..Default::default()
            },
            cd: CdSettings::default(),
            sm: SmSettings::default(),
            sampling: SamplingSettings::default(),
            eval: EvalSettings::default(),
        }
    }
}

crate::common::cli::experiment_config!(CdVsSmConfig);

impl CdVsSmConfig {
    /// Shrinks the budget for a smoke run of about a minute (same datasets and methods).
    pub fn make_quick(&mut self) {
        self.train.iters = self.train.iters.min(60);
        self.n_train = self.n_train.min(4000);
        self.n_test = self.n_test.min(1000);
        self.cd.k = self.cd.k.min(10);
        self.cd.buffer_capacity = self.cd.buffer_capacity.min(2000);
        self.sampling.n = self.sampling.n.min(300);
        self.sampling.langevin_steps = self.sampling.langevin_steps.min(60);
        self.sampling.mala_steps = self.sampling.mala_steps.min(30);
        self.eval.every = 30;
        self.eval.grid_n_train = 60;
        self.eval.grid_n = self.eval.grid_n.min(120);
        self.eval.image_every = 60;
    }

    /// Checks names and ranges; unknown method or dataset names list the valid ones.
    pub fn validate(&self) -> Result<()> {
        if self.methods.is_empty() || self.datasets.is_empty() {
            bail!("need at least one method and one dataset");
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(m) = self.methods.iter().find(|m| !seen.insert(**m)) {
            bail!("method '{m}' is listed twice in methods: each method is one run folder");
        }
        for d in &self.datasets {
            Source2d::from_spec(d).with_context(|| format!("dataset '{d}'"))?;
        }
        if self.n_train == 0 || self.n_test < 2 || self.sampling.n < 2 {
            bail!("n_train must be ≥ 1, n_test and sampling.n ≥ 2");
        }
        if !(self.sampling.langevin_step > 0.0) || !(self.sampling.mala_step > 0.0) {
            bail!("sampling step sizes must be > 0");
        }
        if self.eval.grid_n < 2 || self.eval.grid_n_train < 2 {
            bail!("eval grid sizes must be ≥ 2");
        }
        if self.eval.every > 0 && !self.eval.image_every.is_multiple_of(self.eval.every) {
            bail!(
                "eval.image_every ({}) must be a multiple of eval.every ({}): images are drawn at evaluations",
                self.eval.image_every,
                self.eval.every
            );
        }
        self.model.validate()?;
        self.train.validate()?;
        let probe_model = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu)?;
        for m in &self.methods {
            m.objective(self, [-1.0, 1.0, -1.0, 1.0]).build(&probe_model, Device::Cpu)?;
        }
        Ok(())
    }
}

/// One row of the results table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRow {
    /// Dataset name.
    pub dataset: String,
    /// Method.
    pub method: Method,
    /// Test NLL (nats), grid log Z.
    pub nll: f64,
    /// KL(p_data ‖ p_θ) where the data density is known.
    pub kl: Option<f64>,
    /// MMD² between MALA samples and test data.
    pub mmd2: f64,
    /// MMD² of the unadjusted Langevin samples (before MALA).
    pub mmd2_langevin: f64,
    /// Total variation between sample mode shares and the true weights (mixtures).
    pub mode_tv_samples: Option<f64>,
    /// Total variation between the model density's mass per mode (grid) and the true weights.
    pub mode_tv_density: Option<f64>,
    /// The model density's mass per mode, e.g. "0.79/0.21".
    pub model_weights: Option<String>,
    /// The true weights, e.g. "0.80/0.20".
    pub true_weights: Option<String>,
    /// Share of samples far from every mode (spurious mass), mixtures only.
    pub far_share: Option<f64>,
    /// MALA acceptance rate.
    pub mala_acceptance: f64,
    /// Milliseconds per parameter update.
    pub ms_per_iter: f64,
    /// Training wall-clock seconds.
    pub train_seconds: f64,
    /// Training plus evaluation seconds.
    pub total_seconds: f64,
}

fn fmt_weights(w: &[f64]) -> String {
    w.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join("/")
}

fn axes(bbox: [f64; 4], margin: f64) -> Result<AxesBox> {
    let (mx, my) = ((bbox[1] - bbox[0]) * margin, (bbox[3] - bbox[2]) * margin);
    Ok(AxesBox::new((bbox[0] - mx, bbox[1] + mx), (bbox[2] - my, bbox[3] + my))?)
}

/// Samples a model the same way for every method: uniform noise on the box, unadjusted Langevin, then MALA.
/// Returns (Langevin samples, MALA samples, MALA acceptance).
pub fn sample_model(
    m: &dyn EnergyModel,
    s: &SamplingSettings,
    bbox: [f64; 4],
    margin: f64,
    device: Device,
) -> Result<(Tensor, Tensor, f64)> {
    let b = axes(bbox, margin)?;
    let x0 = Tensor::rand([s.n as i64, 2], (Kind::Float, device))
        * Tensor::from_slice(&[(b.x_max - b.x_min) as f32, (b.y_max - b.y_min) as f32]).to_device(device)
        + Tensor::from_slice(&[b.x_min as f32, b.y_min as f32]).to_device(device);
    let ula = Langevin::new(LangevinConfig::seed_form(s.langevin_step))?.run(m, &x0, s.langevin_steps)?;
    let mala = Mala::new(MalaConfig { step_size: s.mala_step, record: false })?.run(m, &ula.x, s.mala_steps)?;
    Ok((ula.x, mala.x, mala.acceptance.unwrap_or(f64::NAN)))
}

struct RunOutput {
    row: ResultRow,
    heatmap: PathBuf,
}

/// Runs the whole experiment.
pub fn run(cfg: &CdVsSmConfig, opts: &RunOptions) -> Result<Outcome<(PathBuf, Vec<ResultRow>)>> {
    cfg.validate()?;
    let start = StartOptions {
        experiment: "exp_cd_vs_sm",
        device: cfg.device,
        seed: cfg.seed,
        threads: cfg.threads,
        out: &cfg.out,
        run_name: cfg.run_name.as_deref(),
        resume: opts.resume.as_deref(),
        stop: opts.stop.clone(),
    };
    let ctx = RunContext::start(cfg, &start)?;
    let r = run_in(cfg, &ctx);
    Outcome::from_result(r, ctx.run_dir.path())
}

fn run_in(cfg: &CdVsSmConfig, ctx: &RunContext) -> Result<(PathBuf, Vec<ResultRow>)> {
    let run_dir = &ctx.run_dir;
    let multi = indicatif::MultiProgress::new();
    let mut rows = Vec::new();
    let mut panels: Vec<Vec<Option<PathBuf>>> = vec![vec![None; cfg.datasets.len()]; cfg.methods.len()];
    for (di, ds) in cfg.datasets.iter().enumerate() {
        let source = Source2d::from_spec(ds)?;
        let train = source.sample(cfg.n_train, cfg.seed).to_device(ctx.device);
        let test = source.sample(cfg.n_test, cfg.seed.wrapping_add(1_000_003)).to_device(ctx.device);
        for (mi, method) in cfg.methods.iter().enumerate() {
            let job = Job { cfg, ctx, source: &source, method: *method, train: &train, test: &test };
            let out = run_one(&job, &multi)?;
            panels[mi][di] = Some(out.heatmap);
            rows.push(out.row);
        }
    }
    write_results(cfg, run_dir, &rows)?;
    let row_titles: Vec<String> = cfg.methods.iter().map(|m| m.label(cfg)).collect();
    let row_refs: Vec<&str> = row_titles.iter().map(String::as_str).collect();
    let col_refs: Vec<&str> = cfg.datasets.iter().map(String::as_str).collect();
    plot::compose_grid(
        &run_dir.path().join("overview.png"),
        &panels,
        &row_refs,
        &col_refs,
        Some("model density (heat map) with MALA samples (dots), same MLP and budget"),
    )?;
    Ok((run_dir.path().to_path_buf(), rows))
}

/// One (dataset, method) training run.
struct Job<'a> {
    cfg: &'a CdVsSmConfig,
    ctx: &'a RunContext,
    source: &'a Source2d,
    method: Method,
    train: &'a Tensor,
    test: &'a Tensor,
}

fn run_one(job: &Job, multi: &indicatif::MultiProgress) -> Result<RunOutput> {
    let Job { cfg, ctx, source, method, train, test } = *job;
    let device = ctx.device;
    let ds = source.name();
    let part = ctx.sub_run(Path::new(&sanitize(&ds)).join(method.name()))?;
    let sub = part.dir.clone();
    let result_path = sub.join("result.json");
    if part.resuming() && result_path.exists() {
        let row: ResultRow = serde_json::from_slice(&std::fs::read(&result_path)?)
            .with_context(|| format!("corrupt {}", result_path.display()))?;
        eprintln!("ebm-rs: {ds}/{method} finished before; kept");
        return Ok(RunOutput { row, heatmap: sub.join("density.png") });
    }
    let bbox = source.bbox();
    let margin = EvalOptions::default().margin;
    // Same initial weights for every method.
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let model = Mlp::new(&vs.root(), &cfg.model)?;
    let objective = method.objective(cfg, axes_bbox(bbox, margin)).build(&model, device)?;
    // [eval].every drives the trainer's evaluation callback
    let train_cfg = TrainConfig { eval_every: cfg.eval.every, ..cfg.train.clone() };
    let (mut trainer, resumed_at) = part.attach(Trainer::new(train_cfg, &vs, &model, objective, cfg.seed)?)?;
    let bar = multi.add(indicatif::ProgressBar::new(cfg.train.iters as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {elapsed} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{ds} / {}", method.label(cfg)));
    bar.set_position(resumed_at.unwrap_or(0) as u64);
    let mut sink = part.sinks(ProgressSink::with_bar(bar.clone()), resumed_at)?;
    if resumed_at.is_none() {
        sink.text("config", 0, &format!("```toml\n{}\n```", config::to_toml(cfg)?))?;
    }

    let data_pts = plot::points_from_tensor(&test.narrow(0, 0, test.size()[0].min(1000)))?;
    let ax = axes(bbox, margin)?;
    let grid_train = GridSpec::with_margin(bbox, margin, cfg.eval.grid_n_train)?;
    let (every, image_every, iters) = (cfg.eval.every, cfg.eval.image_every, cfg.train.iters);
    let tmp_png = sub.join(".tmp-eval.png");
    // time spent evaluating inside the training loop, subtracted from the per-update time
    let eval_seconds = std::cell::Cell::new(0.0f64);
    let mut eval =
        |step: usize, m: &dyn EnergyModel, _obj: &dyn Objective, sink: &mut dyn MetricsSink| -> ebm_core::Result<()> {
            let started = Instant::now();
            let due = |n: usize| (n > 0 && step.is_multiple_of(n)) || step == iters;
            let io = |e: ebm_log::LogError| ebm_core::EbmError::Io {
                path: sub.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            };
            if due(every) {
                let gz = grid_log_z(m, &grid_train, device)?;
                sink.scalar("eval/nll", step as u64, nll(m, test, gz.log_z, device)?)?;
                if let Some(kl) = kl_to_source(m, source, test, gz.log_z, device)? {
                    sink.scalar("eval/kl", step as u64, kl)?;
                }
                sink.scalar("eval/log_z", step as u64, gz.log_z)?;
                if due(image_every) {
                    let opts =
                        HeatmapOptions { title: "p(x)", points: Some(&data_pts), range: None, colorbar_label: "p(x)" };
                    let img =
                        plot::heatmap(&tmp_png, &gz.density(), gz.grid.nx(), gz.grid.ny(), &ax, &opts).map_err(io)?;
                    sink.image("density", step as u64, &img)?;
                    // a cheaper version of the final sampling, for the pictures along the way
                    let s = &cfg.sampling;
                    let quick = SamplingSettings {
                        n: s.n.min(500),
                        langevin_steps: s.langevin_steps.min(200),
                        mala_steps: s.mala_steps.min(100),
                        ..s.clone()
                    };
                    let (_, xs, _) = sample_model(m, &quick, bbox, margin, device)
                        .map_err(|e| ebm_core::error::invalid("sampling", e.to_string()))?;
                    let pts = plot::points_from_tensor(&xs).map_err(io)?;
                    let img = plot::scatter_samples(&tmp_png, &data_pts, &pts, &ax, "samples").map_err(io)?;
                    sink.image("samples", step as u64, &img)?;
                }
            }
            eval_seconds.set(eval_seconds.get() + started.elapsed().as_secs_f64());
            Ok(())
        };
    let t0 = Instant::now();
    let outcome = trainer.run(&mut TensorData::new(train.shallow_clone())?, &mut sink, Some(&mut eval))?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&tmp_png);
    if outcome.interrupted {
        bar.abandon();
        sink.flush()?;
    }
    part.finished(&outcome)?;
    bar.finish();

    // Final evaluation, the same for every method.
    tch::manual_seed(cfg.seed.wrapping_add(7) as i64);
    let (ula, samples, acc) = sample_model(&model, &cfg.sampling, bbox, margin, device)?;
    let opts = EvalOptions { grid_n: cfg.eval.grid_n, ..EvalOptions::default() };
    let (report, gz): (EvalReport, GridLogZ) = evaluate_2d(&model, source, test, &samples, &opts, device)?;
    let k = (opts.mmd_points as i64).min(ula.size()[0]).min(test.size()[0]);
    let mmd2_langevin = mmd2_rbf(&ula.narrow(0, 0, k), &test.narrow(0, 0, k), None)?.mmd2;
    let modes = source.modes();
    let density_weights = modes.as_ref().map(|m| grid_mode_weights(&gz, &m.centers));
    let mode_tv_density = modes
        .as_ref()
        .zip(density_weights.as_ref())
        .map(|(m, w)| 0.5 * m.weights.iter().zip(w).map(|(a, b)| (a - b).abs()).sum::<f64>());
    let total_seconds = t0.elapsed().as_secs_f64();

    let sample_pts = plot::points_from_tensor(&samples.narrow(0, 0, samples.size()[0].min(1000)))?;
    let title = format!("{} on {ds}", method.label(cfg));
    let heat_opts = HeatmapOptions { title: &title, points: Some(&sample_pts), range: None, colorbar_label: "p_θ(x)" };
    let heatmap = sub.join("density.png");
    let img = plot::heatmap(&heatmap, &gz.density(), gz.grid.nx(), gz.grid.ny(), &ax, &heat_opts)?;
    sink.image("final/density_with_samples", outcome.steps as u64, &img)?;
    plot::scatter_samples(&sub.join("samples.png"), &data_pts, &sample_pts, &ax, &title)?;

    let row = ResultRow {
        dataset: ds.clone(),
        method,
        nll: report.nll,
        kl: report.kl,
        mmd2: report.mmd2,
        mmd2_langevin,
        mode_tv_samples: report.mode_weight_tv,
        mode_tv_density,
        model_weights: density_weights.as_deref().map(fmt_weights),
        true_weights: report.true_mode_weights.as_deref().map(fmt_weights),
        far_share: report.far_share,
        mala_acceptance: acc,
        ms_per_iter: 1e3 * (train_seconds - eval_seconds.get())
            / (outcome.steps - resumed_at.unwrap_or(0)).max(1) as f64,
        train_seconds,
        total_seconds,
    };
    let mut final_metrics =
        vec![("final/nll", row.nll), ("final/mmd2", row.mmd2), ("final/ms_per_iter", row.ms_per_iter)];
    if let Some(kl) = row.kl {
        final_metrics.push(("final/kl", kl));
    }
    if let Some(tv) = row.mode_tv_density {
        final_metrics.push(("final/mode_tv_density", tv));
    }
    sink.scalars(outcome.steps as u64, &final_metrics)?;
    sink.flush()?;
    drop(sink);
    // hparams go in their own writer in the same run folder (TensorBoard merges the files)
    let mut hp = TensorBoardWriter::create(&sub)?;
    let hparams: Vec<(&str, HParamValue)> = vec![
        ("method", method.name().into()),
        ("dataset", ds.as_str().into()),
        ("iters", HParamValue::from(cfg.train.iters as f64)),
        ("batch_size", HParamValue::from(cfg.train.batch_size as f64)),
        ("lr", HParamValue::from(cfg.train.optim.lr)),
        ("k", HParamValue::from(cfg.cd.k as f64)),
    ];
    hp.add_hparams(&hparams, &final_metrics, outcome.steps as u64)?;
    hp.flush()?;
    ebm_log::write_atomic(&result_path, &serde_json::to_vec_pretty(&row)?)?;
    Ok(RunOutput { row, heatmap })
}

fn axes_bbox(bbox: [f64; 4], margin: f64) -> [f64; 4] {
    let (mx, my) = ((bbox[1] - bbox[0]) * margin, (bbox[3] - bbox[2]) * margin);
    [bbox[0] - mx, bbox[1] + mx, bbox[2] - my, bbox[3] + my]
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into())
}

/// The results table as markdown.
pub fn markdown_table(cfg: &CdVsSmConfig, rows: &[ResultRow]) -> String {
    let mut s = String::from(
        "| dataset | method | test NLL | KL(data‖model) | MMD² (MALA) | MMD² (Langevin) | mode TV samples | mode TV density | model weights (true) | far share | MALA acc. | ms/iter | total s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let weights = match (&r.model_weights, &r.true_weights) {
            (Some(m), Some(t)) if r.true_weights.as_deref().is_some_and(|t| t.matches('/').count() < 3) => {
                format!("{m} ({t})")
            }
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {:.3} | {} | {:.4} | {:.4} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |\n",
            r.dataset,
            r.method.label(cfg),
            r.nll,
            opt(r.kl, 3),
            r.mmd2,
            r.mmd2_langevin,
            opt(r.mode_tv_samples, 3),
            opt(r.mode_tv_density, 3),
            weights,
            opt(r.far_share, 3),
            r.mala_acceptance,
            r.ms_per_iter,
            r.total_seconds,
        ));
    }
    s
}

fn write_results(cfg: &CdVsSmConfig, run_dir: &RunDir, rows: &[ResultRow]) -> Result<()> {
    let mut csv = String::from(
        "dataset,method,nll,kl,mmd2,mmd2_langevin,mode_tv_samples,mode_tv_density,model_weights,true_weights,far_share,mala_acceptance,ms_per_iter,train_seconds,total_seconds\n",
    );
    let o = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.dataset,
            r.method,
            r.nll,
            o(r.kl),
            r.mmd2,
            r.mmd2_langevin,
            o(r.mode_tv_samples),
            o(r.mode_tv_density),
            r.model_weights.clone().unwrap_or_default(),
            r.true_weights.clone().unwrap_or_default(),
            o(r.far_share),
            r.mala_acceptance,
            r.ms_per_iter,
            r.train_seconds,
            r.total_seconds
        ));
    }
    run_dir.write_atomic("results.csv", csv.as_bytes())?;
    let table = markdown_table(cfg, rows);
    let md = format!(
        "# exp_cd_vs_sm results\n\nSame MLP ({:?}), Adam lr {}, {} updates of batch {} per method; seed {}.\n\
         Samples: {} chains, {} Langevin steps (ε = {}) from uniform noise, then {} MALA steps (ε = {}).\n\
         NLL and KL use log Z on a {}² grid. Mode weights of the model are its density's mass nearest each mode.\n\n{table}",
        cfg.model.hidden,
        cfg.train.optim.lr,
        cfg.train.iters,
        cfg.train.batch_size,
        cfg.seed,
        cfg.sampling.n,
        cfg.sampling.langevin_steps,
        cfg.sampling.langevin_step,
        cfg.sampling.mala_steps,
        cfg.sampling.mala_step,
        cfg.eval.grid_n,
    );
    run_dir.write_atomic("results.md", md.as_bytes())?;
    println!("\n{table}");
    Ok(())
}

/// Resolves the path of the default config relative to the working directory or the repository.
pub fn default_config_path() -> Option<PathBuf> {
    crate::config::find_config("exp_cd_vs_sm.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = "cd2".parse::<Method>().unwrap_err();
        assert!(e.contains("'cd2'") && e.contains("sm_hutchinson"), "{e}");
        assert_eq!("sm_sliced".parse::<Method>(), Ok(Method::SmSliced));
        let e = config::load::<CdVsSmConfig>(None, &["methods=[\"cd1\", \"cd2\"]".into()]).unwrap_err().to_string();
        assert!(e.contains("cd2") && e.contains("sm_hutchinson"), "{e}");
        let cfg = CdVsSmConfig { methods: vec![Method::Pcd, Method::Pcd], ..Default::default() };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("'pcd' is listed twice"), "{e}");
        let cfg = CdVsSmConfig { datasets: vec!["spirals".into()], ..Default::default() };
        let e = format!("{:#}", cfg.validate().unwrap_err());
        assert!(e.contains("spirals") && e.contains("checkerboard"), "{e}");
    }

    #[test]
    fn shipped_config_file_equals_the_built_in_defaults() {
        let path = default_config_path().expect("experiments/exp_cd_vs_sm.toml ships with the repo");
        let from_file: CdVsSmConfig = config::load(Some(&path), &[]).unwrap();
        assert_eq!(from_file, CdVsSmConfig::default());
        from_file.validate().unwrap();
    }
}
