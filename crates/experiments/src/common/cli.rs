//! Command-line flags that every experiment binary shares, and how they override its config.

use crate::DeviceArg;
use clap::Args;
use std::path::PathBuf;

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
/// and `run_name` and an inherent `make_quick`.
macro_rules! experiment_config {
    ($ty:ident) => {
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

impl CommonArgs {
    /// Overrides the config's run settings with the flags that were given, then applies `--quick`
    /// (`--set` is applied earlier, when the config is loaded).
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
        if self.quick {
            cfg.make_quick();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Default, PartialEq)]
    struct Cfg {
        device: DeviceArg,
        seed: u64,
        threads: usize,
        out: PathBuf,
        run_name: Option<String>,
        quick: bool,
    }
    impl Cfg {
        fn make_quick(&mut self) {
            self.quick = true;
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
            Cfg { device: DeviceArg::Cpu, seed: 7, run_name: Some("a".into()), quick: true, ..start },
            "threads and out were not given and stay"
        );
        assert_eq!(cli.common.set, vec!["k=1".to_string()]);
    }
}
