//! The main experiment: CD-k, persistent CD, the replay buffer, score matching (exact, Hutchinson, sliced,
//! denoising), energy discrepancy, NCE and diffusion recovery likelihood trained on the same MLP, optimiser
//! and number of updates on 2-D densities, then sampled the same way (long Langevin from noise, then MALA,
//! HMC or parallel tempering: `sampling.sampler`) and evaluated against exact answers. DRL trains the MLP
//! with the noise level as one more input ([`SigmaInput::Raw`]) and is evaluated at its lowest level; NCE's
//! learned log Z is reported next to the grid's.

use crate::common::{Outcome, RunContext, RunOptions};
use anyhow::{Context, Result};
use ebm_core::data::Source2d;
use ebm_core::energy::conditional::{ConditionalConfig, ConditionalNet, SigmaInput};
use ebm_core::energy::{EnergyModel, GaussianMixture, LadderMlp, Mlp};
use ebm_core::eval::{
    evaluate_2d, grid_log_z, grid_mode_weights, kl_data_model, kl_to_source, mmd2_rbf, nll, EvalOptions, EvalReport,
    GridLogZ, GridSpec, DEFAULT_MARGIN,
};
use ebm_core::objective::{log_z_in, Nce, Objective};
use ebm_core::sampler::recovery::ladder_with_increments;
use ebm_core::sampler::{Langevin, LangevinConfig, Sampler};
use ebm_core::train::{TensorData, TrainConfig, Trainer};
use ebm_log::plot::{self, AxesBox, HeatmapOptions};
use ebm_log::{HParamValue, MetricsSink, ProgressSink, TensorBoardWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

mod config;
mod method;
mod report;

pub use config::{
    default_config_path, folder_name, CdVsSmConfig, Datasets, DrlNet, EvalSettings, FinalSampler, Method, OnOutliers,
    SamplingSettings, SmSettings,
};
use report::{fmt_weights, write_results};
pub use report::{markdown_table, ResultRow};

fn axes(bbox: [f64; 4], margin: f64) -> Result<AxesBox> {
    let (mx, my) = ((bbox[1] - bbox[0]) * margin, (bbox[3] - bbox[2]) * margin);
    Ok(AxesBox::new((bbox[0] - mx, bbox[1] + mx), (bbox[2] - my, bbox[3] + my))?)
}

/// Samples a model the same way for every method: uniform noise on the box, unadjusted Langevin, then the
/// final sampler (`sampling.sampler`: MALA, HMC or parallel tempering). Returns (Langevin samples, final
/// samples, the final sampler's acceptance).
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
    let fin = s.final_sampler().build()?.run(m, &ula.x, s.final_steps())?;
    Ok((ula.x, fin.x, fin.acceptance.unwrap_or(f64::NAN)))
}

struct RunOutput {
    row: ResultRow,
    heatmap: PathBuf,
}

/// Runs the whole experiment.
pub fn run(cfg: &CdVsSmConfig, opts: &RunOptions) -> Result<Outcome<(PathBuf, Vec<ResultRow>)>> {
    // every check (settings, data, memory) before the run folder exists
    let cfg = &cfg.with_absolute_paths()?;
    cfg.validate_settings()?;
    let data = cfg.load_datasets()?;
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }
    // the CSV files go into the run's fingerprint: a resume refuses them changed
    let files: Vec<PathBuf> = cfg.datasets.iter().filter(|d| Source2d::is_file_spec(d)).map(PathBuf::from).collect();
    let ctx = RunContext::for_config_with_data_files(cfg, "exp_cd_vs_sm", opts, &files)?;
    let was = ebm_core::autograd::set_score_path(cfg.sampling.score);
    eprintln!("exp_cd_vs_sm: sampler scores by {} (sampling.score)", cfg.sampling.score.name());
    let r = run_in(cfg, &ctx, &data);
    ebm_core::autograd::set_score_path(was);
    Outcome::from_result(r, ctx.run_dir.path())
}

fn run_in(cfg: &CdVsSmConfig, ctx: &RunContext, data: &Datasets) -> Result<(PathBuf, Vec<ResultRow>)> {
    let run_dir = &ctx.run_dir;
    let multi = indicatif::MultiProgress::new();
    let mut rows = Vec::new();
    let mut panels: Vec<Vec<Option<PathBuf>>> = vec![vec![None; cfg.datasets.len()]; cfg.methods.len() + 1];
    for (di, source) in data.sources.iter().enumerate() {
        panels[0][di] = truth_panel(source, &run_dir.path().join(&data.folders[di]), cfg.eval.grid_n, DEFAULT_MARGIN)?;
    }
    for (di, source) in data.sources.iter().enumerate() {
        let train = source.sample(cfg.n_train, cfg.seed).to_device(ctx.device);
        let test = source.sample(cfg.n_test, cfg.seed.wrapping_add(1_000_003)).to_device(ctx.device);
        for (mi, method) in cfg.methods.iter().enumerate() {
            let (label, folder) = (&data.labels[di], &data.folders[di]);
            let job = Job { cfg, ctx, source, label, folder, method: *method, train: &train, test: &test };
            let out = run_one(&job, &multi)?;
            panels[mi + 1][di] = Some(out.heatmap);
            rows.push(out.row);
        }
    }
    write_results(cfg, run_dir, &rows)?;
    let row_titles: Vec<String> =
        std::iter::once("true density".to_string()).chain(cfg.methods.iter().map(|m| m.label(cfg))).collect();
    let row_refs: Vec<&str> = row_titles.iter().map(String::as_str).collect();
    let col_refs: Vec<&str> = data.labels.iter().map(String::as_str).collect();
    plot::compose_grid(
        &run_dir.path().join("overview.png"),
        &panels,
        &row_refs,
        &col_refs,
        Some(&format!(
            "log-density (heat map, one scale per data set, 12 nats deep) with {} samples (dots); same MLP and budget",
            cfg.sampling.sampler.label()
        )),
    )?;
    Ok((run_dir.path().to_path_buf(), rows))
}

/// One (dataset, method) training run.
struct Job<'a> {
    cfg: &'a CdVsSmConfig,
    ctx: &'a RunContext,
    source: &'a Source2d,
    /// The data set's name in tables and figures.
    label: &'a str,
    /// Its folder in the run folder.
    folder: &'a str,
    method: Method,
    train: &'a Tensor,
    test: &'a Tensor,
}

fn run_one(job: &Job, multi: &indicatif::MultiProgress) -> Result<RunOutput> {
    let Job { cfg, ctx, source, label, folder, method, train, test } = *job;
    let device = ctx.device;
    let ds = label.to_string();
    let part = ctx.sub_run(Path::new(folder).join(method.name()))?;
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
    // Same initial weights for every method (DRL's ladder: its top level's MLP; with drl_net = "sigma_input" the
    // MLP has σ as one more input; `ln σ` with FiLM by the level, `SigmaInput::LogFilm`, did worse on 8
    // Gaussians: KL 1.52 against 1.43, and 7.3 against 1.18 with drl.scales.sigma_max = 1 and 6 000 updates,
    // its lowest level's mode weights drifting apart).
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let model: Box<dyn EnergyModel> = match method {
        Method::Drl if cfg.drl_net == DrlNet::Ladder => {
            let (levels, _) = ladder_with_increments(&cfg.drl.scales);
            Box::new(LadderMlp::new(&vs.root(), &cfg.model, &levels)?)
        }
        Method::Drl => {
            let c = ConditionalConfig {
                widths: cfg.model.hidden.clone(),
                activation: cfg.model.activation,
                film: false,
                noise_conditional: true,
                sigma_input: SigmaInput::Raw,
                ..Default::default()
            };
            Box::new(ConditionalNet::new(&vs.root(), &c, &[cfg.model.in_dim], &["data"])?)
        }
        _ => Box::new(Mlp::new(&vs.root(), &cfg.model)?),
    };
    let model = model.as_ref();
    let objective: Box<dyn Objective> = match method {
        Method::Nce => Box::new(Nce::in_var_store(cfg.nce.clone(), &vs.root(), model)?.with_noise_fitted_to(train)?),
        _ => method.objective(cfg, axes_bbox(bbox, margin)).build(model, device)?,
    };
    // [eval].every drives the trainer's evaluation callback
    let train_cfg = TrainConfig { eval_every: cfg.eval.every, ..cfg.train_for(method) };
    let (lr, ema) = (train_cfg.optim.lr, train_cfg.ema);
    let (mut trainer, resumed_at) = part.attach(Trainer::new(train_cfg, &vs, model, objective, cfg.seed)?)?;
    let bar = multi.add(indicatif::ProgressBar::new(cfg.train.iters as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {elapsed} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{ds} / {}", method.label(cfg)));
    bar.set_position(resumed_at.unwrap_or(0) as u64);
    // when the output is not a terminal the bar is hidden: a plain line about five times per model instead
    let log_every = cfg.train.log_every.max(1);
    let print_every = log_every * (cfg.train.iters / (5 * log_every)).max(1);
    let mut sink = part.sinks(ProgressSink::with_bar(bar.clone()).with_print_every(print_every as u64), resumed_at)?;
    if resumed_at.is_none() {
        sink.text("config", 0, &format!("```toml\n{}\n```", crate::common::config::to_toml(cfg)?))?;
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
                let view = density_view(m, method, cfg)?;
                let m = view.as_ref();
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
                        pt_steps: s.pt_steps.min(100),
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
    // with weight averaging (`train.ema`, `method_training.<method>.ema`) the averaged weights are the model
    // evaluated from here on (the evaluations during training saw the raw weights); without it nothing changes
    trainer.use_ema_weights();

    // Final evaluation, the same for every method.
    tch::manual_seed(cfg.seed.wrapping_add(7) as i64);
    let view = density_view(model, method, cfg)?;
    let (ula, samples, acc) = sample_model(view.as_ref(), &cfg.sampling, bbox, margin, device)?;
    let opts = EvalOptions { grid_n: cfg.eval.grid_n, ..EvalOptions::default() };
    let (report, gz): (EvalReport, GridLogZ) = evaluate_2d(view.as_ref(), source, test, &samples, &opts, device)?;
    let k = (opts.mmd_points as i64).min(ula.size()[0]).min(test.size()[0]);
    let mmd2_langevin = mmd2_rbf(&ula.narrow(0, 0, k), &test.narrow(0, 0, k), None)?.mmd2;
    let modes = source.modes();
    let density_weights = modes.as_ref().map(|m| grid_mode_weights(&gz, &m.centers));
    let mode_tv_density = modes
        .as_ref()
        .zip(density_weights.as_ref())
        .map(|(m, w)| 0.5 * m.weights.iter().zip(w).map(|(a, b)| (a - b).abs()).sum::<f64>());
    let total_seconds = t0.elapsed().as_secs_f64();
    if method == Method::Drl {
        // DRL is a model of the data at every level: how far each level is from the exactly blurred data
        for (a, kl, w) in drl_level_kls(model, cfg, source, test, opts.margin, device)? {
            eprintln!(
                "ebm-rs: {ds}/drl level σ = {a:.4}: KL(data blurred by σ ‖ f(·; σ)/σ) = {kl:.3}, grid mode weights {}",
                fmt_weights(&w)
            );
            sink.scalar(&format!("final/drl_kl_level_{a:.4}"), outcome.steps as u64, kl)?;
        }
    }

    let sample_pts = plot::points_from_tensor(&samples.narrow(0, 0, samples.size()[0].min(1000)))?;
    let title = format!("{} on {ds}", method.label(cfg));
    let range = Some(log_density_range(&gz, source)?);
    let heat_opts = HeatmapOptions { title: &title, points: Some(&sample_pts), range, colorbar_label: "log p_θ(x)" };
    let heatmap = sub.join("density.png");
    let img = plot::heatmap(&heatmap, &gz.log_density(), gz.grid.nx(), gz.grid.ny(), &ax, &heat_opts)?;
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
        log_z_grid: Some(gz.log_z),
        log_z_nce: if method == Method::Nce { log_z_in(&vs) } else { None },
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
        ("lr", HParamValue::from(lr)),
        ("ema", HParamValue::from(ema.unwrap_or(0.0))),
        ("k", HParamValue::from(cfg.cd.k as f64)),
    ];
    hp.add_hparams(&hparams, &final_metrics, outcome.steps as u64)?;
    hp.flush()?;
    ebm_log::write_atomic(&result_path, &serde_json::to_vec_pretty(&row)?)?;
    Ok(RunOutput { row, heatmap })
}

/// How deep below the top of the colour scale the log-density heat maps go (nats): every region with at least
/// `e^-12` of the peak density shows, so a mode a model kept at a thousandth of the weight is still visible.
const LOG_DENSITY_DEPTH: f64 = 12.0;

/// One colour scale for every method's log-density on a data set: from the true density's peak (when known,
/// else the model's own) down [`LOG_DENSITY_DEPTH`] nats.
fn log_density_range(gz: &GridLogZ, source: &Source2d) -> Result<(f64, f64)> {
    let top = match true_log_density(gz, source)? {
        Some(t) => t.iter().copied().filter(|v| v.is_finite()).fold(f32::MIN, f32::max),
        None => gz.log_density().iter().copied().filter(|v| v.is_finite()).fold(f32::MIN, f32::max),
    };
    Ok((f64::from(top) - LOG_DENSITY_DEPTH, f64::from(top)))
}

/// The source's exact log-density at the grid's cell centres, where it has one.
fn true_log_density(gz: &GridLogZ, source: &Source2d) -> Result<Option<Vec<f32>>> {
    let pts = gz.grid.points(Kind::Float, Device::Cpu)?;
    Ok(source.log_density(&pts)?.map(|t| Vec::<f32>::try_from(t.to_kind(Kind::Float))).transpose()?)
}

/// `<folder>/truth.png`: the true log-density of a data set on the scale of its models' panels (`None` where
/// the density has no closed form).
fn truth_panel(source: &Source2d, dir: &Path, grid_n: usize, margin: f64) -> Result<Option<PathBuf>> {
    let grid = GridSpec::with_margin(source.bbox(), margin, grid_n.min(400))?;
    let pts = grid.points(Kind::Float, Device::Cpu)?;
    let Some(lp) = source.log_density(&pts)? else { return Ok(None) };
    let lp = Vec::<f32>::try_from(lp.to_kind(Kind::Float))?;
    let top = f64::from(lp.iter().copied().filter(|v| v.is_finite()).fold(f32::MIN, f32::max));
    let title = format!("true log p(x): {}", source.name());
    let opts = HeatmapOptions {
        title: &title,
        points: None,
        range: Some((top - LOG_DENSITY_DEPTH, top)),
        colorbar_label: "log p(x)",
    };
    std::fs::create_dir_all(dir)?;
    let path = dir.join("truth.png");
    plot::heatmap(&path, &lp, grid.nx(), grid.ny(), &axes(source.bbox(), margin)?, &opts)?;
    Ok(Some(path))
}

/// The density a method's model is evaluated and sampled as: the model itself, or for DRL its view at the
/// lowest noise level (`f(x; a_0)/a_0`).
fn density_view<'a>(
    m: &'a dyn EnergyModel,
    method: Method,
    cfg: &CdVsSmConfig,
) -> ebm_core::Result<Box<dyn EnergyModel + 'a>> {
    match method {
        Method::Drl => m.at_noise(cfg.drl.scales.sigma_min),
        _ => Ok(Box::new(m)),
    }
}

/// DRL's view at every level `a` of its ladder (smallest first) against the data blurred by `N(0, a²)`, which
/// for a mixture of isotropic Gaussians of std `s` is the mixture of the same centres with std `√(s² + a²)`:
/// `(a, KL(p_a ‖ f(·; a)/a), the level's mode weights on the grid)`, with log Z on the grid of the final evaluation (the top levels' blurred data
/// reach past the grid: their KL is then biased low). Empty when the data set is not such a mixture.
///
/// # Shapes
/// `test: [N, 2]`.
fn drl_level_kls(
    model: &dyn EnergyModel,
    cfg: &CdVsSmConfig,
    source: &Source2d,
    test: &Tensor,
    margin: f64,
    device: Device,
) -> Result<Vec<(f64, f64, Vec<f64>)>> {
    let Some(modes) = source.modes() else { return Ok(Vec::new()) };
    let grid = GridSpec::with_margin(source.bbox(), margin, cfg.eval.grid_n)?;
    let means: Vec<Vec<f64>> = modes.centers.iter().map(|c| c.to_vec()).collect();
    let (levels, _) = ladder_with_increments(&cfg.drl.scales);
    let mut out = Vec::with_capacity(levels.len());
    for a in levels {
        let blurred = GaussianMixture::isotropic(&modes.weights, &means, (modes.std.powi(2) + a * a).sqrt(), device)?;
        let x = test + test.randn_like() * a;
        let log_p = tch::no_grad(|| blurred.f(&x));
        let view = model.at_noise(a)?;
        let gz = grid_log_z(view.as_ref(), &grid, device)?;
        let kl = kl_data_model(view.as_ref(), &x, &log_p, gz.log_z, device)?;
        out.push((a, kl, grid_mode_weights(&gz, &modes.centers)));
    }
    Ok(out)
}

fn axes_bbox(bbox: [f64; 4], margin: f64) -> [f64; 4] {
    let (mx, my) = ((bbox[1] - bbox[0]) * margin, (bbox[3] - bbox[2]) * margin);
    [bbox[0] - mx, bbox[1] + mx, bbox[2] - my, bbox[3] + my]
}
