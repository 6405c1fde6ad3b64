//! `exp_cd_vs_sm`: CD-k vs persistent CD vs replay buffer vs score matching on 2-D densities.
//! Run `just run exp_cd_vs_sm --help` for the flags.

use anyhow::Result;
use clap::Parser;
use experiments::cd_vs_sm::{default_config_path, run, CdVsSmConfig, Method};
use experiments::common::{stop_on_signals, RunOptions};
use experiments::config;
use experiments::CommonArgs;
use std::path::PathBuf;

/// CD-k vs persistent CD vs score matching, side by side, on 2-D densities with exact answers.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Config file (default: experiments/exp_cd_vs_sm.toml when it exists, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Datasets, comma separated (toy names or CSV files of x,y points).
    #[arg(long, value_delimiter = ',')]
    datasets: Option<Vec<String>>,
    /// Methods, comma separated: cd1, cdk, pcd, replay, sm_exact, sm_hutchinson, sm_sliced, dsm.
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<Method>>,
    /// Parameter updates per method.
    #[arg(long)]
    iters: Option<usize>,
    /// Continue an interrupted run from its folder (its config.toml is used; only --device and --threads
    /// may change).
    #[arg(long, value_name = "RUN_FOLDER", conflicts_with_all = ["config", "datasets", "methods", "iters", "seed", "out", "run_name", "quick", "set"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let path = config::config_path(cli.resume.as_deref(), cli.config.as_deref(), default_config_path)?;
    // the file, then --quick's caps, then --set: what the user set explicitly wins
    let mut cfg: CdVsSmConfig = cli.common.load(path.as_deref())?;
    if let Some(v) = cli.datasets {
        cfg.datasets = v;
    }
    if let Some(v) = cli.methods {
        cfg.methods = v;
    }
    if let Some(v) = cli.iters {
        cfg.train.iters = v;
    }
    cli.common.apply(&mut cfg);
    let opts = RunOptions { resume: cli.resume, stop: Some(stop_on_signals()?) };
    let (dir, rows) = run(&cfg, &opts)?.or_exit("exp_cd_vs_sm");
    eprintln!("ebm-rs: {} runs done; results in {}", rows.len(), dir.display());
    eprintln!("        view the curves with: just tensorboard   (then open http://127.0.0.1:6006)");
    Ok(())
}
