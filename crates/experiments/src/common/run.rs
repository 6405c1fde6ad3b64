//! The run context shared by the experiment binaries: one run folder (created with its `config.toml`
//! before anything else, or reopened by `--resume`), the device, seed streams derived by name, a stop flag
//! raised by Ctrl-C / SIGTERM, and per-model sub-runs that checkpoint, resume and log through the one
//! [`Trainer`].

use super::cli::ExperimentConfig;
use super::config;
use super::device::{init, DeviceArg};
use anyhow::{Context, Result};
use ebm_core::train::{list_checkpoints, TrainOutcome, Trainer};
use ebm_log::{CsvSink, MultiSink, ProgressSink, RunDir, TensorBoardWriter};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tch::Device;

/// How an experiment ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Everything finished.
    Done(T),
    /// The stop flag was raised: the model in training wrote a checkpoint; `--resume <dir>` continues.
    Interrupted {
        /// The run folder to resume.
        dir: PathBuf,
        /// Which part was interrupted, e.g. `rings/pcd` or `images/shape`.
        at: String,
        /// The update it stopped after.
        step: usize,
    },
}

impl<T> Outcome<T> {
    /// The result, or exits the process with code 130 after printing how to resume (for `main`s).
    pub fn or_exit(self, binary: &str) -> T {
        match self {
            Outcome::Done(t) => t,
            Outcome::Interrupted { dir, at, step } => {
                eprintln!(
                    "ebm-rs: interrupted during {at} after update {step}; a checkpoint was written.\n        \
                     resume with: just run {binary} --resume {}",
                    dir.display()
                );
                std::process::exit(130);
            }
        }
    }
}

/// A model's training was stopped by the stop flag after writing a checkpoint. Raised as an error inside an
/// experiment (so `?` carries it out of any depth) and turned into [`Outcome::Interrupted`] by
/// [`Outcome::from_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// Which part was interrupted, e.g. `images/shape`.
    pub at: String,
    /// The update it stopped after.
    pub step: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted during {} after update {}", self.at, self.step)
    }
}

impl std::error::Error for Interrupted {}

impl<T> Outcome<T> {
    /// `Ok(t)` → [`Outcome::Done`]; an [`Interrupted`] error → [`Outcome::Interrupted`] in `dir`; other errors
    /// pass through.
    pub fn from_result(r: Result<T>, dir: &Path) -> Result<Self> {
        match r {
            Ok(t) => Ok(Outcome::Done(t)),
            Err(e) => match e.downcast::<Interrupted>() {
                Ok(i) => Ok(Outcome::Interrupted { dir: dir.to_path_buf(), at: i.at, step: i.step }),
                Err(e) => Err(e),
            },
        }
    }
}

/// Options of an experiment's `run` beyond its config.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Continue the run in this folder: finished parts are kept, a model with a checkpoint continues from
    /// it, the others start afresh.
    pub resume: Option<PathBuf>,
    /// Raised by a SIGINT/SIGTERM handler ([`stop_on_signals`]): the current update finishes, a checkpoint
    /// is written and the run returns [`Outcome::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
}

/// The process-wide stop flag, raised by the first SIGINT/SIGTERM (a second one exits at once). Binaries
/// call it once, before any work.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<std::result::Result<Arc<AtomicBool>, String>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("\nebm-rs: second interrupt, exiting now");
                std::process::exit(130);
            }
            eprintln!("\nebm-rs: interrupt received; finishing the current update and writing a checkpoint");
        })
        .map(|()| flag)
        .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}

/// One experiment run: its folder, device, seed and stop flag.
#[derive(Debug)]
pub struct RunContext {
    /// The run folder.
    pub run_dir: RunDir,
    /// The device.
    pub device: Device,
    /// The run's seed.
    pub seed: u64,
    /// True when continuing an earlier run in the same folder.
    pub resuming: bool,
    stop: Option<Arc<AtomicBool>>,
}

/// What [`RunContext::start`] needs besides the config.
#[derive(Debug, Clone)]
pub struct StartOptions<'a> {
    /// The experiment's name (the folder under `out`), e.g. `exp_poe`.
    pub experiment: &'a str,
    /// Device.
    pub device: DeviceArg,
    /// Seed.
    pub seed: u64,
    /// libtorch CPU threads (0: libtorch's default).
    pub threads: usize,
    /// Root folder of runs.
    pub out: &'a Path,
    /// Run name (default: a UTC timestamp).
    pub run_name: Option<&'a str>,
    /// Continue the run in this folder.
    pub resume: Option<&'a Path>,
    /// The stop flag (see [`RunOptions::stop`]).
    pub stop: Option<Arc<AtomicBool>>,
}

impl RunContext {
    /// Sets threads, device and seed, then creates the run folder and writes `config.toml` into it (or
    /// reopens the folder to resume). Call it after the config was validated: nothing is written before.
    pub fn start<C: Serialize>(cfg: &C, o: &StartOptions<'_>) -> Result<Self> {
        let ctx = init(o.device, o.seed, (o.threads > 0).then_some(o.threads))?;
        let run_dir = match o.resume {
            Some(dir) => RunDir::open(dir)?,
            None => {
                let d = RunDir::create(o.out, o.experiment, o.run_name)?;
                d.write_atomic("config.toml", config::to_toml(cfg)?.as_bytes())?;
                d
            }
        };
        eprintln!("ebm-rs: run folder {}", run_dir.path().display());
        Ok(RunContext {
            run_dir,
            device: ctx.device,
            seed: ctx.seed,
            resuming: o.resume.is_some(),
            stop: o.stop.clone(),
        })
    }

    /// [`RunContext::start`] with the run settings of an experiment's config.
    pub fn for_config<C: ExperimentConfig + Serialize>(cfg: &C, experiment: &str, opts: &RunOptions) -> Result<Self> {
        Self::start(cfg, &cfg.start_options(experiment, opts))
    }

    /// A seed of its own for the stream called `name` (a model, a sampling pass), derived from the run's
    /// seed: streams do not overlap and do not depend on the order in which they are used.
    pub fn seed_for(&self, name: &str) -> u64 {
        derive_seed(self.seed, name)
    }

    /// True once the stop flag was raised.
    pub fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// The sub-run of one model in `<run>/<rel>`: checkpoints in `<rel>/checkpoints`, metrics in
    /// `<rel>/metrics.csv` and TensorBoard events in `<rel>`.
    pub fn sub_run(&self, rel: impl AsRef<Path>) -> Result<SubRun> {
        let name = rel.as_ref().display().to_string();
        let dir = self.run_dir.path().join(rel);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(SubRun { name, dir, resuming: self.resuming, stop: self.stop.clone() })
    }
}

/// `seed` mixed with a hash of `name` (FNV-1a, then SplitMix64).
pub fn derive_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 1
}

/// The folder of one trained model inside a run.
#[derive(Debug)]
pub struct SubRun {
    /// Its path inside the run folder, e.g. `images/shape`.
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
    resuming: bool,
    stop: Option<Arc<AtomicBool>>,
}

impl SubRun {
    /// The checkpoints folder.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// True when this sub-run is being resumed (its folder may hold a checkpoint or final results).
    pub fn resuming(&self) -> bool {
        self.resuming
    }

    /// Gives `trainer` this sub-run's checkpoints and the stop flag, and restores the newest checkpoint when
    /// the run is resumed and has one; returns the step it resumed at.
    pub fn attach<'a>(&self, trainer: Trainer<'a>) -> Result<(Trainer<'a>, Option<usize>)> {
        let ckpt = self.checkpoints();
        let mut trainer = trainer.with_checkpoints(&ckpt)?;
        if let Some(stop) = &self.stop {
            trainer = trainer.with_stop_flag(stop.clone());
        }
        let resumed_at = if self.resuming && !list_checkpoints(&ckpt)?.is_empty() {
            let step = trainer.load_checkpoint(&ckpt).with_context(|| format!("resuming from {}", ckpt.display()))?;
            eprintln!("ebm-rs: {} resumes at update {step}", self.dir.display());
            Some(step)
        } else {
            None
        };
        Ok((trainer, resumed_at))
    }

    /// `Ok` when training ran to its end; the [`Interrupted`] error (to be carried out with `?`) when the stop
    /// flag ended it early, after its checkpoint was written.
    pub fn finished(&self, outcome: &TrainOutcome) -> Result<()> {
        if outcome.interrupted {
            return Err(Interrupted { at: self.name.clone(), step: outcome.steps }.into());
        }
        Ok(())
    }

    /// TensorBoard + `metrics.csv` (cut back to `resumed_at` when resuming) + a progress sink.
    pub fn sinks(&self, progress: ProgressSink, resumed_at: Option<usize>) -> Result<MultiSink> {
        let tb = TensorBoardWriter::create(&self.dir)?;
        let csv_path = self.dir.join("metrics.csv");
        let csv = match resumed_at {
            Some(step) => CsvSink::resume(&csv_path, step as u64)?,
            None => CsvSink::create(&csv_path)?,
        };
        Ok(MultiSink::new(vec![Box::new(tb), Box::new(csv), Box::new(progress)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_seed_streams_differ_by_name_and_seed_and_are_stable() {
        assert_eq!(derive_seed(0, "images/shape"), derive_seed(0, "images/shape"));
        assert_ne!(derive_seed(0, "images/shape"), derive_seed(0, "images/colour"));
        assert_ne!(derive_seed(0, "images/shape"), derive_seed(1, "images/shape"));
        assert!(derive_seed(u64::MAX, "x") < 1 << 63, "fits an i64 seed");
    }
}
