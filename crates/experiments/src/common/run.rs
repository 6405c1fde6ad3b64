//! The run context shared by the experiment binaries: one run folder (created with its `config.toml`
//! before anything else, or reopened by `--resume`), the device, seed streams derived by name, a stop flag
//! raised by Ctrl-C / SIGTERM, and per-model sub-runs that checkpoint, resume and log through the one
//! [`Trainer`].
//!
//! A run folder cannot lie about its run:
//! - `fingerprint.json` ([`Fingerprint`]) records, when the folder is created, a random run id, the ebm-rs
//!   version, the resolved config and the SHA-256 of every data file; `--resume` refuses a folder whose
//!   `config.toml` was edited or whose data files changed, and every checkpoint is tagged with the run, so
//!   one copied in from another run is refused;
//! - `run.lock` holds the PID of the one process working in the folder (a second one is refused; the lock
//!   of a dead process is taken over);
//! - a resumed sub-run cuts `metrics.csv` back to its checkpoint and marks the restart in TensorBoard;
//! - temporary files left by interrupted atomic writes are removed on resume.

use super::cli::ExperimentConfig;
use super::config;
use super::device::{init, DeviceArg};
use super::fingerprint::{hash_data_files, Fingerprint, FINGERPRINT_FILE};
use super::lock::{remove_stale_temporaries, RunLock};
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
    /// The run's fingerprint (`None` for a folder made by an older ebm-rs, which has none).
    fingerprint: Option<Fingerprint>,
    /// Held while this context lives; removing `run.lock` when dropped.
    _lock: RunLock,
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
    /// CPU threads (0: automatic, see [`crate::device::auto_threads`]).
    pub threads: usize,
    /// Spend `threads` ≥ 2 on Langevin chains split over them (MLP models; see
    /// [`ebm_core::threads::use_threads`]) instead of libtorch threads.
    pub split_chains: bool,
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
    /// The same as [`RunContext::start_with_data_files`] without data files.
    pub fn start<C: Serialize>(cfg: &C, o: &StartOptions<'_>) -> Result<Self> {
        Self::start_with_data_files(cfg, o, &[])
    }

    /// Sets threads, device and seed, hashes `data_files` (files, or folders whose files all count), then:
    ///
    /// - for a new run, creates the run folder, takes its `run.lock`, and writes `config.toml` and
    ///   `fingerprint.json` (run id, ebm-rs version, the config, the data files' SHA-256 and sizes);
    /// - with `o.resume`, reopens the folder, takes its `run.lock` (refused while another live process holds
    ///   it), refuses to continue when `config.toml` was edited or a data file changed since the run started
    ///   (a folder without `fingerprint.json`, made by an older ebm-rs, continues with a warning), and
    ///   removes temporary files left by interrupted writes.
    ///
    /// Call it after the config was validated: nothing is written before, and nothing is trained before the
    /// checks. The lock is released when the context is dropped.
    pub fn start_with_data_files<C: Serialize>(cfg: &C, o: &StartOptions<'_>, data_files: &[PathBuf]) -> Result<Self> {
        let ctx = init(o.device, o.seed, (o.threads > 0).then_some(o.threads), o.split_chains)?;
        let config_text = config::to_toml(cfg)?;
        let data = hash_data_files(data_files)?;
        let (run_dir, lock, fingerprint) = match o.resume {
            Some(dir) => {
                let run_dir = RunDir::open(dir)?;
                let lock = RunLock::acquire(run_dir.path())?;
                let fingerprint = Fingerprint::read(run_dir.path())?;
                match &fingerprint {
                    Some(fp) => {
                        fp.check_config(run_dir.path())?;
                        fp.check_data(run_dir.path(), &data)?;
                        if fp.ebm_rs_version != env!("CARGO_PKG_VERSION") {
                            eprintln!(
                                "ebm-rs: note: {} was started by ebm-rs {} and is resumed by ebm-rs {}",
                                run_dir.path().display(),
                                fp.ebm_rs_version,
                                env!("CARGO_PKG_VERSION")
                            );
                        }
                    }
                    None => eprintln!(
                        "ebm-rs: warning: {} has no {FINGERPRINT_FILE} (made by an older ebm-rs): its config.toml, \
                         data files and checkpoints cannot be checked against the start of the run",
                        run_dir.path().display()
                    ),
                }
                let removed = remove_stale_temporaries(run_dir.path())?;
                if !removed.is_empty() {
                    let names: Vec<String> = removed
                        .iter()
                        .map(|p| p.strip_prefix(run_dir.path()).unwrap_or(p).display().to_string())
                        .collect();
                    eprintln!(
                        "ebm-rs: removed {} temporary file(s) left by an interrupted write: {}",
                        names.len(),
                        names.join(", ")
                    );
                }
                (run_dir, lock, fingerprint)
            }
            None => {
                let d = RunDir::create(o.out, o.experiment, o.run_name)?;
                let lock = RunLock::acquire(d.path())?;
                d.write_atomic("config.toml", config_text.as_bytes())?;
                let fp = Fingerprint::new(&config_text, data);
                d.write_atomic(FINGERPRINT_FILE, &serde_json::to_vec_pretty(&fp)?)?;
                (d, lock, Some(fp))
            }
        };
        eprintln!("ebm-rs: run folder {}", run_dir.path().display());
        Ok(RunContext {
            run_dir,
            device: ctx.device,
            seed: ctx.seed,
            resuming: o.resume.is_some(),
            stop: o.stop.clone(),
            fingerprint,
            _lock: lock,
        })
    }

    /// [`RunContext::start`] with the run settings of an experiment's config.
    pub fn for_config<C: ExperimentConfig + Serialize>(cfg: &C, experiment: &str, opts: &RunOptions) -> Result<Self> {
        Self::start(cfg, &cfg.start_options(experiment, opts))
    }

    /// [`RunContext::start_with_data_files`] with the run settings of an experiment's config: `data_files`
    /// are the files (or folders) the run reads, recorded in `fingerprint.json` and checked on `--resume`.
    pub fn for_config_with_data_files<C: ExperimentConfig + Serialize>(
        cfg: &C,
        experiment: &str,
        opts: &RunOptions,
        data_files: &[PathBuf],
    ) -> Result<Self> {
        Self::start_with_data_files(cfg, &cfg.start_options(experiment, opts), data_files)
    }

    /// The run's fingerprint, `None` for a resumed folder made by an older ebm-rs.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.fingerprint.as_ref()
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
        Ok(SubRun {
            name,
            dir,
            resuming: self.resuming,
            stop: self.stop.clone(),
            fingerprint: self.fingerprint.as_ref().map(Fingerprint::checkpoint_tag),
        })
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
    fingerprint: Option<String>,
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

    /// Gives `trainer` this sub-run's checkpoints, the stop flag and the run's fingerprint (its checkpoints
    /// are tagged with it, and a checkpoint of another run is refused), and restores the newest checkpoint
    /// when the run is resumed and has one; returns the step it resumed at.
    pub fn attach<'a>(&self, trainer: Trainer<'a>) -> Result<(Trainer<'a>, Option<usize>)> {
        let ckpt = self.checkpoints();
        let mut trainer = trainer.with_checkpoints(&ckpt)?;
        if let Some(fp) = &self.fingerprint {
            trainer = trainer.with_fingerprint(fp.clone());
        }
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

    /// TensorBoard + `metrics.csv` + a progress sink. When resuming at `resumed_at`, `metrics.csv` is cut
    /// back to that step and TensorBoard gets a restart marker there (what was logged after it is dropped).
    pub fn sinks(&self, progress: ProgressSink, resumed_at: Option<usize>) -> Result<MultiSink> {
        let mut tb = TensorBoardWriter::create(&self.dir)?;
        if let Some(step) = resumed_at {
            tb.restart(step as u64)?;
        }
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
