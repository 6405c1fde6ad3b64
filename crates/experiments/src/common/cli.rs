//! Command-line flags that every experiment binary shares, and how they override its config.

use crate::DeviceArg;
use anyhow::{bail, Result};
use clap::Args;
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

/// Flags shared by every experiment binary (flattened into each binary's own parser with
/// `#[command(flatten)]`).
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// Device: auto (CUDA if available), cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<DeviceArg>,
    /// Random seed (libtorch and Rust RNGs).
    #[arg(long)]
    pub seed: Option<u64>,
    /// CPU threads for libtorch.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Root folder for runs (default experiments/runs).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of the run folder (default: a UTC timestamp).
    #[arg(long)]
    pub run_name: Option<String>,
    /// A smoke run: the same data, methods and code paths with a tiny budget.
    #[arg(long)]
    pub quick: bool,
    /// Override any field of the config file, e.g. --set seed=3 (repeatable; see the experiment's .toml).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// The run settings every experiment config has, borrowed for [`CommonArgs::apply`].
#[derive(Debug)]
pub struct RunSettings<'a> {
    /// Device.
    pub device: &'a mut DeviceArg,
    /// Seed.
    pub seed: &'a mut u64,
    /// libtorch CPU threads.
    pub threads: &'a mut usize,
    /// Root folder for runs.
    pub out: &'a mut PathBuf,
    /// Run folder name.
    pub run_name: &'a mut Option<String>,
}

/// An experiment's config, as far as the shared flags are concerned.
pub trait ExperimentConfig {
    /// Its device, seed, threads, output root and run name.
    fn run_settings(&mut self) -> RunSettings<'_>;
    /// Shrinks the budget to a smoke run.
    fn make_quick(&mut self);

    /// How to start this config's run folder (see [`crate::common::RunContext::for_config`]).
    fn start_options<'a>(
        &'a self,
        experiment: &'a str,
        opts: &'a crate::common::RunOptions,
    ) -> crate::common::StartOptions<'a>;
}

/// Implements [`ExperimentConfig`] for a config struct with the fields `device`, `seed`, `threads`, `out`
/// and `run_name` and an inherent `make_quick`. `split_chains` (default `false`): its models are MLPs sampled by
/// Langevin, so `threads` ≥ 2 split their chains over the threads ([`ebm_core::threads::use_threads`]).
macro_rules! experiment_config {
    ($ty:ident) => {
        $crate::common::cli::experiment_config!($ty, split_chains = false);
    };
    ($ty:ident, split_chains = $split:expr) => {
        impl $crate::ExperimentConfig for $ty {
            fn run_settings(&mut self) -> $crate::RunSettings<'_> {
                $crate::RunSettings {
                    device: &mut self.device,
                    seed: &mut self.seed,
                    threads: &mut self.threads,
                    out: &mut self.out,
                    run_name: &mut self.run_name,
                }
            }
            fn make_quick(&mut self) {
                $ty::make_quick(self)
            }
            fn start_options<'a>(
                &'a self,
                experiment: &'a str,
                opts: &'a $crate::common::RunOptions,
            ) -> $crate::common::StartOptions<'a> {
                $crate::common::StartOptions {
                    experiment,
                    device: self.device,
                    seed: self.seed,
                    threads: self.threads,
                    split_chains: $split,
                    out: &self.out,
                    run_name: self.run_name.as_deref(),
                    resume: opts.resume.as_deref(),
                    stop: opts.stop.clone(),
                }
            }
        }
    };
}
pub(crate) use experiment_config;

/// The most libtorch CPU threads a run may ask for: 4 × the machine's cores, and never more than 1024
/// (libtorch starts one OS thread each; 100 000 overflowed the stack).
pub fn max_threads() -> usize {
    (4 * cores()).min(1024)
}

/// The machine's cores as the OS reports them for this process (`std::thread::available_parallelism`).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Checks the run settings every experiment shares before anything is built or written: `threads` (at most
/// [`max_threads`]) and the run name (one folder name, no control characters).
pub fn check_run_settings(threads: usize, run_name: Option<&str>) -> Result<()> {
    if threads > max_threads() {
        bail!(
            "threads = {threads} (--threads, or `threads` in the config) is more than this machine can use: it has \
             {} core(s); use at most {} (4 × the cores, never more than 1024), or 0 for libtorch's default",
            cores(),
            max_threads()
        );
    }
    if let Some(name) = run_name {
        ebm_log::check_run_name(name).map_err(|e| anyhow::anyhow!("--run-name (run_name): {e}"))?;
    }
    Ok(())
}

impl CommonArgs {
    /// Loads the experiment's config in the order that lets explicit settings win: the file at `path` (or the
    /// built-in defaults), then `--quick`'s caps, then the `--set` overrides. Flags of the binary's own
    /// (`--iters`, `--datasets`, …) and [`CommonArgs::apply`] come after, so they win too.
    pub fn load<C>(&self, path: Option<&Path>) -> Result<C>
    where
        C: ExperimentConfig + Serialize + DeserializeOwned + Default,
    {
        crate::common::config::load_with(
            path,
            |c: &mut C| {
                if self.quick {
                    c.make_quick();
                }
            },
            &self.set,
        )
    }

    /// Overrides the config's run settings with the flags that were given (`--quick` and `--set` are applied
    /// earlier, by [`CommonArgs::load`]).
    pub fn apply<C: ExperimentConfig>(&self, cfg: &mut C) {
        let s = cfg.run_settings();
        if let Some(v) = self.device {
            *s.device = v;
        }
        if let Some(v) = self.seed {
            *s.seed = v;
        }
        if let Some(v) = self.threads {
            *s.threads = v;
        }
        if let Some(v) = &self.out {
            *s.out = v.clone();
        }
        if self.run_name.is_some() {
            *s.run_name = self.run_name.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Default, PartialEq, Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Cfg {
        device: DeviceArg,
        seed: u64,
        threads: usize,
        out: PathBuf,
        run_name: Option<String>,
        quick: bool,
        iters: usize,
    }
    impl Cfg {
        fn make_quick(&mut self) {
            self.quick = true;
            self.iters = self.iters.min(60);
        }
    }
    experiment_config!(Cfg);

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn given_flags_override_and_absent_ones_keep_the_config() {
        let start = Cfg { threads: 4, out: "runs".into(), ..Default::default() };
        let mut cfg = Cfg { threads: 4, out: "runs".into(), ..Default::default() };
        Cli::parse_from(["x"]).common.apply(&mut cfg);
        assert_eq!(cfg, start);
        let cli =
            Cli::parse_from(["x", "--device", "cpu", "--seed", "7", "--run-name", "a", "--quick", "--set", "k=1"]);
        cli.common.apply(&mut cfg);
        assert_eq!(
            cfg,
            Cfg { device: DeviceArg::Cpu, seed: 7, run_name: Some("a".into()), ..start },
            "threads and out were not given and stay; --quick is applied by load"
        );
        assert_eq!(cli.common.set, vec!["k=1".to_string()]);
    }

    #[test]
    fn quick_never_overrides_what_the_user_set() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "iters = 2000\n").unwrap();
        let load = |args: &[&str]| -> Cfg {
            let mut argv = vec!["x"];
            argv.extend(args);
            Cli::parse_from(argv).common.load(Some(file.path())).unwrap()
        };
        assert_eq!(load(&[]), Cfg { iters: 2000, ..Default::default() });
        assert_eq!(load(&["--quick"]), Cfg { iters: 60, quick: true, ..Default::default() });
        let c = load(&["--quick", "--set", "iters=500"]);
        assert_eq!((c.iters, c.quick), (500, true), "--set wins over --quick");
        let c = load(&["--set", "iters=500", "--quick"]);
        assert_eq!(c.iters, 500, "whatever the order on the command line");
    }

    #[test]
    fn absurd_thread_counts_and_control_characters_in_run_names_are_refused() {
        check_run_settings(0, None).unwrap();
        check_run_settings(1, Some("run-1")).unwrap();
        check_run_settings(max_threads(), None).unwrap();
        let e = check_run_settings(100_000, None).unwrap_err().to_string();
        assert!(e.contains("threads = 100000") && e.contains("--threads"), "{e}");
        assert!(e.contains(&format!("it has {} core(s)", cores())), "{e}");
        assert!(max_threads() <= 1024 && max_threads() >= 4);
        let e = check_run_settings(1, Some("a\nb")).unwrap_err().to_string();
        assert!(e.contains("--run-name") && e.contains("control character"), "{e}");
        assert!(check_run_settings(1, Some("../x")).is_err());
    }
}
