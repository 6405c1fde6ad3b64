//! `ebm sweep`: one `ebm train` run per grid point and seed, on this machine (a bounded pool of child
//! processes, [`local`]) or on a Slurm cluster (an `sbatch --array` script and a collector job that runs
//! `ebm report`, [`slurm`]).
//!
//! The sweep folder holds everything:
//! ```text
//! sweep.json        the manifest: the config, the grid, the seeds and every run (index, point, overrides, seed, folder)
//! config.toml       a copy of the config file the runs train from
//! runs/p000-s0/     one `ebm train` run folder per (grid point, seed)
//! logs/             the output of every run (local: <run>.log; Slurm: <array job>_<task>.out)
//! sweep.sbatch      (Slurm) the array job, one task per run; report.sbatch, the collector
//! report.md/.csv/.png  written by `ebm report`
//! ```
//! Every grid point (with every seed) is validated with [`crate::spec::load_spec`] before anything is
//! written. A run is finished when its `summary.json` says so; continuing a sweep (`--resume`) starts the
//! runs that have no folder and resumes the others from their newest checkpoint (`ebm train --resume`).

pub mod grid;
pub mod local;
pub mod slurm;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use grid::Axis;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the manifest inside a sweep folder.
pub const MANIFEST: &str = "sweep.json";

/// `ebm sweep`: train one run per grid point and seed, locally or on Slurm.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["local", "slurm"])))]
pub struct SweepArgs {
    /// The train config (as for `ebm train`); not needed with `--resume SWEEP_DIR`.
    pub config: Option<PathBuf>,
    /// A grid axis `key=v1,v2,…` (repeatable; the runs are the product of all axes). Values are TOML, like
    /// `--set`, split on commas outside brackets, braces and quotes.
    #[arg(long = "grid", value_name = "KEY=V1,V2")]
    pub grid: Vec<String>,
    /// Seeds of every grid point: `0..5` (0 to 4), `0..=4` or `0,3,7` (each becomes `--set seed=S`); default:
    /// the config's seed only.
    #[arg(long, value_name = "SEEDS")]
    pub seeds: Option<String>,
    /// Override a config key in every run (repeatable; applied before the grid's values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run on this machine, `-j` runs at a time.
    #[arg(long)]
    pub local: bool,
    /// Runs at a time with `--local` (default: the number of CPU cores).
    #[arg(short = 'j', long = "jobs", conflicts_with = "slurm")]
    pub jobs: Option<usize>,
    /// Write a Slurm array job (one task per run) and a collector job that runs `ebm report`.
    #[arg(long)]
    pub slurm: bool,
    /// Slurm partition.
    #[arg(long, conflicts_with = "local")]
    pub partition: Option<String>,
    /// Slurm time limit of each task, e.g. `02:00:00`.
    #[arg(long, conflicts_with = "local")]
    pub time: Option<String>,
    /// CPUs per Slurm task (also the libtorch threads of each run).
    #[arg(long, default_value_t = 1, conflicts_with = "local")]
    pub cpus: usize,
    /// GPUs per Slurm task.
    #[arg(long, conflicts_with = "local")]
    pub gpus: Option<usize>,
    /// Submit the jobs with `sbatch` (without it the scripts are written and the commands printed).
    #[arg(long, conflicts_with = "local")]
    pub submit: bool,
    /// The sweep folder (default: `sweeps/<config name>-<UTC time>`).
    #[arg(long, value_name = "SWEEP_DIR")]
    pub out: Option<PathBuf>,
    /// Continue an existing sweep folder (given here or with `--out`): finished runs are kept, the others
    /// resume from their newest checkpoint.
    #[arg(long, value_name = "SWEEP_DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
}

/// The manifest `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The config the runs train from, relative to the sweep folder (a copy of `source_config`).
    pub config: String,
    /// The config file as given.
    pub source_config: PathBuf,
    /// The working folder of every run (relative data paths in the config resolve against it).
    pub cwd: PathBuf,
    /// Overrides of every run (`--set`).
    pub set: Vec<String>,
    /// The grid axes.
    pub grid: Vec<Axis>,
    /// The seeds given with `--seeds` (`None`: the config's own seed).
    pub seeds: Option<Vec<u64>>,
    /// The grid points.
    pub points: Vec<Point>,
    /// The runs, in array-index order.
    pub runs: Vec<RunEntry>,
}

/// One grid point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Index in [`Manifest::points`].
    pub index: usize,
    /// Its `key=value` assignments, one per axis.
    pub overrides: Vec<String>,
}

/// One run of the sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntry {
    /// Index in [`Manifest::runs`] (the Slurm array index).
    pub index: usize,
    /// Its grid point.
    pub point: usize,
    /// Its seed.
    pub seed: u64,
    /// Every `--set` of its `ebm train`: the sweep's `--set`, the point's values, then `seed=S`.
    pub overrides: Vec<String>,
    /// Its run folder, relative to the sweep folder (`runs/<name>`).
    pub dir: String,
}

impl RunEntry {
    /// The run folder's name.
    pub fn name(&self) -> &str {
        self.dir.rsplit('/').next().unwrap_or(&self.dir)
    }
}

impl Manifest {
    /// Reads `dir/sweep.json`.
    ///
    /// # Errors
    /// A missing or malformed manifest.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let p = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("{} is not a sweep folder (cannot read {MANIFEST})", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid sweep manifest", p.display()))
    }

    /// Writes `dir/sweep.json` atomically.
    ///
    /// # Errors
    /// An unwritable folder.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        ebm_log::write_atomic(&dir.join(MANIFEST), text.as_bytes())?;
        Ok(())
    }
}

/// Where a run stands, from its folder.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// No run folder yet.
    NotStarted,
    /// A run folder without a finished summary: running, interrupted or failed; the newest checkpoint's
    /// update, if any.
    Unfinished {
        /// Update of the newest checkpoint.
        checkpoint: Option<usize>,
    },
    /// `summary.json` says finished.
    Finished(serde_json::Value),
}

impl RunState {
    /// Reads the state of the run folder `dir`.
    pub fn of(dir: &Path) -> RunState {
        if !dir.is_dir() {
            return RunState::NotStarted;
        }
        let summary = std::fs::read_to_string(dir.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        match summary {
            Some(s) if s.get("status").and_then(|v| v.as_str()) == Some("finished") => RunState::Finished(s),
            _ => {
                let checkpoint = ebm_core::train::list_checkpoints(&dir.join("checkpoints"))
                    .ok()
                    .and_then(|c| c.last().map(|(step, _)| *step));
                RunState::Unfinished { checkpoint }
            }
        }
    }

    /// True when finished.
    pub fn finished(&self) -> bool {
        matches!(self, RunState::Finished(_))
    }

    /// A few words for progress lines and reports.
    pub fn describe(&self) -> String {
        match self {
            RunState::NotStarted => "not started".into(),
            RunState::Unfinished { checkpoint: Some(k) } => format!("unfinished (newest checkpoint at update {k})"),
            RunState::Unfinished { checkpoint: None } => "unfinished (no checkpoint)".into(),
            RunState::Finished(_) => "finished".into(),
        }
    }
}

/// Plans a sweep: validates every run's config (the file, `set`, the point's values and the seed) and lists
/// the runs. Writes nothing.
///
/// # Errors
/// A malformed `--grid` or `--seeds`, a grid key the config does not have (one line naming the key and the
/// file), or a point whose config is invalid.
pub fn plan(config: &Path, grid_args: &[String], seeds: Option<&str>, set: &[String]) -> Result<Manifest> {
    let axes = grid::parse_axes(grid_args)?;
    let seeds = seeds.map(grid::parse_seeds).transpose()?;
    crate::spec::load_spec(config, set).map_err(|e| one_line(&e))?;
    let points: Vec<Point> =
        grid::points(&axes).into_iter().enumerate().map(|(index, overrides)| Point { index, overrides }).collect();
    let mut runs = Vec::new();
    for p in &points {
        let seed_list: Vec<Option<u64>> = match &seeds {
            Some(s) => s.iter().map(|&s| Some(s)).collect(),
            None => vec![None],
        };
        for s in seed_list {
            let mut overrides = set.to_vec();
            overrides.extend(p.overrides.iter().cloned());
            if let Some(s) = s {
                overrides.push(format!("seed={s}"));
            }
            let spec = match crate::spec::load_spec(config, &overrides) {
                Ok(s) => s,
                Err(e) => {
                    missing_key(config, set, &p.overrides)?;
                    bail!(
                        "grid point {} ({}) is not a valid config for {}: {}",
                        p.index,
                        grid::point_label(&p.overrides),
                        config.display(),
                        one_line(&e)
                    );
                }
            };
            let seed = s.unwrap_or(spec.seed);
            let index = runs.len();
            runs.push(RunEntry {
                index,
                point: p.index,
                seed,
                overrides,
                dir: format!("runs/p{:03}-s{seed}", p.index),
            });
        }
    }
    Ok(Manifest {
        config: "config.toml".into(),
        source_config: std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf()),
        cwd: std::env::current_dir().context("cannot read the working folder")?,
        set: set.to_vec(),
        grid: axes,
        seeds,
        points,
        runs,
    })
}

/// Fails with one line naming the grid key and the config file when one of a point's assignments, applied
/// alone, sets a key the config does not have.
fn missing_key(config: &Path, set: &[String], assignments: &[String]) -> Result<()> {
    for a in assignments {
        let mut o = set.to_vec();
        o.push(a.clone());
        if let Err(e) = crate::spec::load_spec(config, &o) {
            let key = a.split_once('=').map_or(a.as_str(), |(k, _)| k);
            if let Some(field) = unknown_field(&e).filter(|f| key.split('.').any(|p| p == f)) {
                bail!("--grid key '{key}' does not exist in {} (unknown field `{field}`)", config.display());
            }
        }
    }
    Ok(())
}

/// The field named by a serde "unknown field `x`" error anywhere in `e`'s chain.
fn unknown_field(e: &anyhow::Error) -> Option<String> {
    let text = format!("{e:#}");
    let rest = &text[text.find("unknown field `")? + "unknown field `".len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// `e` with its causes on one line.
fn one_line(e: &anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The folder of run `r` of the sweep in `dir`.
pub fn run_dir(dir: &Path, r: &RunEntry) -> PathBuf {
    dir.join(&r.dir)
}

/// Creates the sweep folder for `m`: `runs/`, `logs/`, the config copy and the manifest.
fn create(dir: &Path, m: &Manifest) -> Result<()> {
    std::fs::create_dir_all(dir.join("runs")).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    std::fs::copy(&m.source_config, dir.join(&m.config))
        .with_context(|| format!("cannot copy {} into {}", m.source_config.display(), dir.display()))?;
    m.save(dir)
}

/// Finds `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// The `ebm` binary this process runs (absolute), for child processes and job scripts.
///
/// # Errors
/// When the OS cannot say.
pub fn ebm_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the path of the ebm binary")?;
    Ok(exe.canonicalize().unwrap_or(exe))
}

/// Runs `ebm sweep`.
///
/// # Errors
/// Bad arguments (see [`plan`]), an existing sweep folder without `--resume`, no `sbatch` with `--slurm`,
/// failed runs, or an interrupt (exit code 130 is the caller's: see [`local::Interrupted`]).
pub fn run(args: SweepArgs) -> Result<()> {
    if args.slurm && find_on_path("sbatch").is_none() {
        bail!("sbatch not found on PATH: install Slurm's client or use --local");
    }
    if args.jobs == Some(0) {
        bail!("-j 0: at least one run must run at a time");
    }
    let resume_dir = args.resume.clone().flatten();
    let dir = match (&resume_dir, &args.out) {
        (Some(r), Some(o)) if r != o => {
            bail!("--resume {} and --out {} name different folders", r.display(), o.display())
        }
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) if args.resume.is_some() => bail!("--resume needs the sweep folder: --resume SWEEP_DIR"),
        (None, None) => {
            let Some(config) = &args.config else { bail!("give the config file (or --resume SWEEP_DIR)") };
            let stem = config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from("sweeps").join(format!("{stem}-{}", ebm_log::timestamp_name(secs)))
        }
    };
    let resuming = args.resume.is_some();
    let manifest = if dir.join(MANIFEST).is_file() {
        if !resuming {
            bail!("sweep folder {} exists: continue it with --resume, or choose another --out", dir.display());
        }
        let m = Manifest::load(&dir)?;
        if let Some(config) = &args.config {
            let again = plan(config, &args.grid, args.seeds.as_deref(), &args.set)?;
            if again.runs != m.runs {
                bail!(
                    "the config, --grid, --seeds or --set differ from the sweep in {}; resume it with \
                     `ebm sweep --resume {}` alone, or start a new one with another --out",
                    dir.display(),
                    dir.display()
                );
            }
        }
        m
    } else {
        let Some(config) = &args.config else {
            bail!("{} is not a sweep folder (no {MANIFEST}); give the config file to start a sweep", dir.display());
        };
        if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
            bail!("{} exists and is not a sweep folder; choose another --out", dir.display());
        }
        let m = plan(config, &args.grid, args.seeds.as_deref(), &args.set)?;
        create(&dir, &m)?;
        m
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    if args.local {
        let jobs = args.jobs.unwrap_or_else(local::cores);
        local::run(&dir, &manifest, jobs)
    } else {
        let opts = slurm::SlurmOptions {
            partition: args.partition.clone(),
            time: args.time.clone(),
            cpus: args.cpus.max(1),
            gpus: args.gpus,
        };
        slurm::run(&dir, &manifest, &opts, args.submit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SweepArgs,
    }

    fn parse(a: &[&str]) -> Result<SweepArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ebm-sweep").chain(a.iter().copied())).map(|c| c.args)
    }

    fn config(dir: &Path) -> PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, "seed = 7\n[model]\nkind = \"mlp\"\nhidden = [16]\n[train]\niters = 10\n").unwrap();
        p
    }

    #[test]
    fn local_and_slurm_are_exclusive_and_one_is_required() {
        assert!(parse(&["c.toml", "--local"]).is_ok());
        assert!(parse(&["c.toml", "--slurm", "--submit"]).is_ok());
        assert!(parse(&["c.toml"]).is_err());
        assert!(parse(&["c.toml", "--local", "--slurm"]).is_err());
        assert!(parse(&["c.toml", "--local", "--submit"]).is_err());
        assert!(parse(&["c.toml", "--slurm", "-j", "2"]).is_err());
        let a = parse(&["--resume", "d", "--local", "-j", "2"]).unwrap();
        assert_eq!(a.resume, Some(Some(PathBuf::from("d"))));
        assert_eq!(parse(&["c.toml", "--local", "--resume"]).unwrap().resume, Some(None));
    }

    #[test]
    fn a_plan_has_one_run_per_point_and_seed() {
        let t = tempfile::tempdir().unwrap();
        let c = config(t.path());
        let m = plan(
            &c,
            &["train.optim.lr=1e-3,1e-2".into(), "model.hidden=[8],[16,16]".into()],
            Some("0..3"),
            &["train.iters=5".into()],
        )
        .unwrap();
        assert_eq!(m.points.len(), 4);
        assert_eq!(m.runs.len(), 12);
        let r = &m.runs[4];
        assert_eq!((r.index, r.point, r.seed), (4, 1, 1));
        assert_eq!(r.overrides, ["train.iters=5", "train.optim.lr=1e-3", "model.hidden=[16,16]", "seed=1"]);
        assert_eq!(r.dir, "runs/p001-s1");
        let names: std::collections::HashSet<_> = m.runs.iter().map(|r| r.dir.clone()).collect();
        assert_eq!(names.len(), 12);
        // Without --seeds: the config's seed, not overridden.
        let m = plan(&c, &["train.optim.lr=1e-3,1e-2".into()], None, &[]).unwrap();
        assert_eq!(m.runs.len(), 2);
        assert_eq!(m.runs[1].seed, 7);
        assert_eq!(m.runs[1].overrides, ["train.optim.lr=1e-2"]);
    }

    #[test]
    fn an_unknown_grid_key_is_one_line_naming_key_and_file() {
        let t = tempfile::tempdir().unwrap();
        let c = config(t.path());
        let e = plan(&c, &["train.optim.lrr=1,2".into()], None, &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("'train.optim.lrr'") && msg.contains("c.toml") && msg.contains("does not exist"), "{msg}");
        // Keys that exist only together with another axis's value are fine.
        let m = plan(
            &c,
            &[
                "objective.kind=score_matching".into(),
                "objective.method.variant=exact".into(),
                "train.iters=3,4".into(),
            ],
            None,
            &[],
        )
        .unwrap();
        assert_eq!(m.runs.len(), 2);
        // A known key with a value of the wrong type names the point instead.
        let e = format!("{:#}", plan(&c, &["train.iters=\"many\"".into()], None, &[]).unwrap_err());
        assert!(e.contains("grid point 0") && e.contains("train.iters"), "{e}");
    }

    #[test]
    fn run_states_follow_the_folder() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("r");
        assert_eq!(RunState::of(&d), RunState::NotStarted);
        std::fs::create_dir_all(d.join("checkpoints/step-00000040")).unwrap();
        std::fs::create_dir_all(d.join("checkpoints/step-00000080")).unwrap();
        assert_eq!(RunState::of(&d), RunState::Unfinished { checkpoint: Some(80) });
        std::fs::write(d.join("summary.json"), r#"{"status": "interrupted"}"#).unwrap();
        assert!(!RunState::of(&d).finished());
        std::fs::write(d.join("summary.json"), r#"{"status": "finished", "metrics": {"kl": 0.5}}"#).unwrap();
        assert!(RunState::of(&d).finished());
    }

    #[test]
    fn the_manifest_round_trips() {
        let t = tempfile::tempdir().unwrap();
        let c = config(t.path());
        let m = plan(&c, &["train.iters=3,4".into()], Some("0,1"), &[]).unwrap();
        m.save(t.path()).unwrap();
        assert_eq!(Manifest::load(t.path()).unwrap(), m);
        assert!(Manifest::load(&t.path().join("nothing")).is_err());
    }
}
