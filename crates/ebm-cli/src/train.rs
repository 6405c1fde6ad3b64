//! `ebm train`: trains the model a config describes through the library's one `Trainer`, in a run folder
//! that holds everything needed to continue, sample, evaluate and compose it.
//!
//! The folder: `config.toml` (resolved), `fingerprint.json`, `data.json`, `metrics.csv`, TensorBoard events,
//! `checkpoints/`, and once training ends `model.safetensors`, `samples.csv` (or `.png` + `.npy`),
//! `figures/`, `summary.json` and `summary.md`.

use crate::data::{self, Dataset};
use crate::evaluate::{evaluate, EvalSettings, Metric};
use crate::model::{build, DATA_FILE, MODEL_FILE};
use crate::report_files::{write_figures, write_summary, Summary, SUMMARY_FILE};
use crate::sampling::{self, describe};
use crate::spec::{load_spec, TrainSpec};
use anyhow::{bail, Context, Result};
use ebm_core::eval::{f_of, grid_log_z, kl_to_source, nll, GridSpec, DEFAULT_MARGIN};
use ebm_core::train::{LabelledData, TensorData, Trainer};
use ebm_core::{DataSource, EnergyModel, MetricsSink, Objective};
use ebm_log::{MultiSink, ProgressSink};
use experiments::common::{stop_on_signals, Outcome, RunContext, StartOptions};
use experiments::DeviceArg;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind};

/// Flags of `ebm train`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  ebm train my.toml --run-name first\n  ebm train my.toml --set train.iters=500 \
                        --set objective.kind=score_matching --set objective.method.variant=exact\n  ebm train \
                        --resume runs/first")]
pub struct TrainArgs {
    /// The config file (TOML): data, model, objective, train, sampling, eval.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set train.iters=500 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(long, value_name = "RUN", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// Folder that holds run folders.
    #[arg(long, default_value = "runs")]
    pub out: PathBuf,
    /// Name of the run folder (default: the UTC time).
    #[arg(long)]
    pub run_name: Option<String>,
    /// Seed (the config's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// libtorch CPU threads (the config's `threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Device: auto, cpu, cuda, cuda:N (the config's `device`).
    #[arg(long)]
    pub device: Option<DeviceArg>,
    /// When the output is not a terminal, print a line every this many updates.
    #[arg(long, default_value_t = 100)]
    pub log_every: u64,
}

impl TrainArgs {
    fn overrides(&self) -> Vec<String> {
        let mut o = self.set.clone();
        if let Some(s) = self.seed {
            o.push(format!("seed={s}"));
        }
        if let Some(t) = self.threads {
            o.push(format!("threads={t}"));
        }
        if let Some(d) = self.device {
            o.push(format!("device=\"{d}\""));
        }
        o
    }
}

/// Runs `ebm train`; returns the run folder.
///
/// # Errors
/// Bad config or data (before anything is written), an existing run folder, training errors.
pub fn run(args: &TrainArgs) -> Result<Outcome<PathBuf>> {
    let (spec, resume) = match &args.resume {
        Some(dir) => {
            if !args.overrides().is_empty() {
                bail!(
                    "--resume continues {} with its own config; --set/--seed/--threads/--device cannot change it \
                     (start a new run instead)",
                    dir.display()
                );
            }
            let cfg = dir.join("config.toml");
            if !cfg.is_file() {
                bail!("--resume {}: not a run folder (it has no config.toml)", dir.display());
            }
            if let Some(s) = Summary::read(dir)? {
                if s.status == "finished" {
                    eprintln!("ebm: {} finished before ({} updates); nothing to do", dir.display(), s.steps);
                    return Ok(Outcome::Done(dir.clone()));
                }
            }
            (load_spec(&cfg, &[])?, Some(dir.as_path()))
        }
        None => {
            let cfg = args.config.as_deref().context("give a config file (or --resume RUN)")?;
            let mut spec = load_spec(cfg, &args.overrides())?;
            spec.data.source = absolute_source(&spec.data.source);
            (spec, None)
        }
    };
    experiments::common::cli::check_run_settings(spec.threads, args.run_name.as_deref())?;
    let data = data::load(&spec.data, spec.seed)?;
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }
    check_buildable(&spec, &data)?;
    let (root, experiment) = split_out(&args.out)?;
    let stop = stop_on_signals()?;
    let start = StartOptions {
        experiment: &experiment,
        device: spec.device,
        seed: spec.seed,
        threads: spec.threads,
        // an MLP's Langevin chains split over 2 or more threads (ebm_core::threads)
        split_chains: matches!(spec.model, crate::spec::ModelSpec::Mlp { .. }),
        out: &root,
        run_name: args.run_name.as_deref(),
        resume,
        stop: Some(stop),
    };
    let files: Vec<PathBuf> = data.files.iter().map(|f| f.canonicalize().unwrap_or_else(|_| f.clone())).collect();
    let ctx = RunContext::start_with_data_files(&spec, &start, &files)?;
    let dir = ctx.run_dir.path().to_path_buf();
    if resume.is_none() {
        ctx.run_dir.write_atomic(DATA_FILE, &serde_json::to_vec_pretty(&data.info)?)?;
    }
    let r = train_in(&spec, &ctx, &data, args.log_every);
    Outcome::from_result(r.map(|()| dir.clone()), &dir)
}

/// A data file or `folder:` path made absolute, so that `--resume` and the commands that reopen the run work
/// from any folder; names of built-in data and paths that do not exist (an error later) are kept.
fn absolute_source(src: &str) -> String {
    let (prefix, path) = match src.strip_prefix("folder:") {
        Some(p) => ("folder:", p),
        None => ("", src),
    };
    match Path::new(path).canonicalize() {
        Ok(abs) if !path.is_empty() && (prefix == "folder:" || abs.is_file()) => format!("{prefix}{}", abs.display()),
        _ => src.to_string(),
    }
}

/// `--out DIR` as (root, last folder name), the two parts a run folder `DIR/NAME` is made from.
fn split_out(out: &Path) -> Result<(PathBuf, String)> {
    let name = out.file_name().and_then(|n| n.to_str()).map(str::to_string);
    match name {
        Some(n) => Ok((out.parent().map(Path::to_path_buf).unwrap_or_default(), n)),
        None => bail!("--out {}: give a folder name such as runs or /data/ebm-runs", out.display()),
    }
}

/// Builds model and objective once on the CPU, so that a config that cannot work fails before the run folder
/// is made.
fn check_buildable(spec: &TrainSpec, data: &Dataset) -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(&spec.model, &data.info, &vs.root())?;
    spec.objective.build_with_vars(&*model, &vs.root(), Device::Cpu).map_err(|e| anyhow::anyhow!("objective: {e}"))?;
    spec.train.validate().map_err(|e| anyhow::anyhow!("train: {e}"))?;
    spec.sampling.sampler.validate().map_err(|e| anyhow::anyhow!("sampling.sampler: {e}"))?;
    if spec.sampling.n == 0 || spec.sampling.steps == 0 {
        bail!("sampling.n and sampling.steps must be at least 1");
    }
    Ok(())
}

/// A sink that passes everything on and keeps the latest value of each scalar.
struct Latest<'s> {
    inner: &'s mut MultiSink,
    values: Vec<(String, f64)>,
}

impl MetricsSink for Latest<'_> {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> ebm_core::train::SinkResult {
        match self.values.iter_mut().find(|(t, _)| t == tag) {
            Some(slot) => slot.1 = value,
            None => self.values.push((tag.to_string(), value)),
        }
        self.inner.scalar(tag, step, value)
    }
    fn flush(&mut self) -> ebm_core::train::SinkResult {
        self.inner.flush()
    }
    fn restart(&mut self, step: u64) -> ebm_core::train::SinkResult {
        self.inner.restart(step)
    }
    fn image(&mut self, tag: &str, step: u64, image: &image::RgbImage) -> ebm_core::train::SinkResult {
        self.inner.image(tag, step, image)
    }
    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> ebm_core::train::SinkResult {
        self.inner.text(tag, step, markdown)
    }
    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> ebm_core::train::SinkResult {
        self.inner.histogram(tag, step, values)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn train_in(spec: &TrainSpec, ctx: &RunContext, data: &Dataset, log_every: u64) -> Result<()> {
    let device = ctx.device;
    let dir = ctx.run_dir.path();
    let info = &data.info;
    tch::manual_seed(ctx.seed_for("model") as i64);
    let vs = nn::VarStore::new(device);
    let model = build(&spec.model, info, &vs.root())?;
    let objective = spec.objective.build_with_vars(&*model, &vs.root(), device)?;
    let cadence = [spec.train.eval_every, spec.eval.every, spec.eval.histogram_every].into_iter().fold(0, gcd);
    let train_cfg = ebm_core::TrainConfig { eval_every: cadence, ..spec.train.clone() };
    let part = ctx.sub_run("")?;
    let trainer = Trainer::new(train_cfg, &vs, &*model, objective, ctx.seed_for("train"))?;
    let (mut trainer, resumed_at) = part.attach(trainer)?;
    let iters = spec.train.iters as u64;
    let progress = if std::io::stderr().is_terminal() {
        ProgressSink::new(Some(iters))
    } else {
        ProgressSink::hidden(Some(iters)).with_print_every(log_every)
    };
    progress.bar().set_position(resumed_at.unwrap_or(0) as u64);
    let mut multi = part.sinks(progress, resumed_at)?;
    if resumed_at.is_none() {
        multi.text("config", 0, &format!("```toml\n{}\n```", experiments::config::to_toml(spec)?))?;
    }
    let mut sink = Latest { inner: &mut multi, values: Vec::new() };
    let train_x = data.train.to_device(device);
    let mut source: Box<dyn DataSource> = match &data.train_labels {
        Some(l) => Box::new(LabelledData::new(train_x.shallow_clone(), l.to_device(device))?),
        None => Box::new(TensorData::new(train_x.shallow_clone())?),
    };
    let test = data.test.to_device(device);
    let probe = train_x.narrow(0, 0, train_x.size()[0].min(512));
    let grid = info.bbox_2d().map(|b| GridSpec::with_margin(b, DEFAULT_MARGIN, spec.eval.grid_n)).transpose()?;
    let toy = info.toy().map(ebm_core::data::Source2d::Toy);
    let (every, hist_every) = (spec.eval.every, spec.eval.histogram_every);
    let mut eval = |step: usize, m: &dyn EnergyModel, obj: &dyn Objective, sink: &mut dyn MetricsSink| {
        let due = |n: usize| n > 0 && step.is_multiple_of(n);
        let s = step as u64;
        if due(every) {
            if let Some(g) = &grid {
                let gz = grid_log_z(m, g, device)?;
                sink.scalar("eval/test_nll", s, nll(m, &test, gz.log_z, device)?)?;
                sink.scalar("eval/log_z", s, gz.log_z)?;
                if let Some(src) = &toy {
                    if let Some(kl) = kl_to_source(m, src, &test, gz.log_z, device)? {
                        sink.scalar("eval/kl", s, kl)?;
                    }
                }
            }
        }
        if due(hist_every) {
            sink.histogram("energy/f_data", s, &f_of(m, &probe, device, "training data")?)?;
            if let Some(neg) = obj.chains(0) {
                let neg = neg.narrow(0, 0, neg.size()[0].min(512)).to_device(device);
                sink.histogram("energy/f_negatives", s, &f_of(m, &neg, device, "negatives")?)?;
            }
            let g = ebm_core::autograd::score(m, &probe, false)?.grad;
            let norms = g.reshape([g.size()[0], -1]).norm_scalaropt_dim(2.0, [1], false).to_kind(Kind::Double);
            sink.histogram("energy/grad_norm_data", s, &Vec::<f64>::try_from(norms)?)?;
        }
        Ok(())
    };
    let t0 = Instant::now();
    let outcome = trainer.run(&mut *source, &mut sink, Some(&mut eval))?;
    let seconds = t0.elapsed().as_secs_f64();
    if outcome.interrupted {
        sink.flush()?;
        return Err(experiments::common::Interrupted { at: "training".into(), step: outcome.steps }.into());
    }
    if spec.train.ema.is_some() {
        trainer.use_ema_weights();
    }
    let final_loss = sink.values.iter().find(|(t, _)| t == "train/loss").map(|(_, v)| *v);
    let tmp = dir.join(".model.tmp.safetensors");
    vs.save(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(MODEL_FILE))?;

    tch::manual_seed(ctx.seed_for("samples") as i64);
    let drawn = sampling::draw(&*model, &spec.sampling, info, device, true)?;
    for line in describe(&drawn.report) {
        eprintln!("ebm: {line}");
    }
    let sample_file = dir.join(if info.is_image() { "samples.png" } else { "samples.csv" });
    sampling::write_samples(&drawn.x, info, &sample_file)?;
    // AIS for images costs minutes: `ebm eval` runs it on demand
    let settings = EvalSettings {
        grid_n: spec.eval.grid_n,
        ais_chains: if info.is_image() { 0 } else { 64 },
        noise_conditional: spec.model.noise_conditional(),
        ..EvalSettings::default()
    };
    tch::manual_seed(ctx.seed_for("eval") as i64);
    let mut metrics = evaluate(&*model, info, &test, Some(&drawn.x), None, None, &settings, device)?;
    if let Some(l) = final_loss {
        metrics.insert(
            0,
            Metric { name: "final_loss".into(), value: l, about: "training loss at the last update".into() },
        );
    }
    for m in &metrics {
        sink.scalar(&format!("final/{}", m.name), outcome.steps as u64, m.value)?;
    }
    sink.flush()?;
    write_figures(&*model, info, &drawn.x, &test, dir, spec.eval.grid_n, device)?;
    let summary = Summary::new(spec, info, outcome.steps, seconds, &metrics, &drawn.report);
    write_summary(dir, &summary)?;
    eprintln!("ebm: run folder {} ({SUMMARY_FILE}, samples, figures/)", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_folders_split_into_root_and_name() {
        assert_eq!(split_out(Path::new("runs")).unwrap(), (PathBuf::from(""), "runs".to_string()));
        assert_eq!(split_out(Path::new("/a/b/c")).unwrap(), (PathBuf::from("/a/b"), "c".to_string()));
        assert!(split_out(Path::new("/")).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.csv"), "1,2\n").unwrap();
        let here = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        let (file, folder) = (absolute_source("p.csv"), absolute_source("folder:."));
        std::env::set_current_dir(here).unwrap();
        let abs = dir.path().canonicalize().unwrap();
        assert_eq!(file, abs.join("p.csv").display().to_string());
        assert_eq!(folder, format!("folder:{}", abs.display()));
        assert_eq!(absolute_source("8gaussians"), "8gaussians");
        assert_eq!(absolute_source("missing.csv"), "missing.csv");
        assert_eq!([0, 10, 4].into_iter().fold(0, gcd), 2);
        assert_eq!([0, 0, 0].into_iter().fold(0, gcd), 0);
    }
}
