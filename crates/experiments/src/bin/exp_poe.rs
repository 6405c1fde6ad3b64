//! `exp_poe`: compose separately trained EBMs (AND, OR, NOT) in 2-D and on shapes images, and measure what
//! the samples satisfy against exact answers. Run `just run exp_poe --help` for the flags.

use anyhow::Result;
use clap::Parser;
use experiments::common::{stop_on_signals, RunOptions};
use experiments::config;
use experiments::poe::{default_config_path, run, PoeConfig};
use experiments::CommonArgs;
use std::path::PathBuf;

/// Product of experts and friends: one EBM per attribute, combined by expressions such as
/// "right & !upper" or "triangle & blue", sampled with MALA / Langevin; no joint model trained.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Config file (default: experiments/exp_poe.toml when it exists, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// 2-D expressions over right, left, upper, lower; separate several with ';' (e.g. "right & upper;right | upper").
    #[arg(long, value_delimiter = ';')]
    expressions: Option<Vec<String>>,
    /// Image targets over shape and colour values; separate several with ';' (e.g. "triangle & blue").
    #[arg(long, value_delimiter = ';')]
    targets: Option<Vec<String>>,
    /// Skip the 2-D part.
    #[arg(long)]
    no_2d: bool,
    /// Skip the image part.
    #[arg(long)]
    no_images: bool,
    /// Continue an interrupted run from its folder (its config.toml is used; only --device and --threads
    /// may change): finished models are kept, a model with a checkpoint continues from it.
    #[arg(long, value_name = "RUN_FOLDER", conflicts_with_all = ["config", "expressions", "targets", "no_2d", "no_images", "seed", "out", "run_name", "quick", "set"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let path = config::config_path(cli.resume.as_deref(), cli.config.as_deref(), default_config_path)?;
    // the file, then --quick's caps, then --set: what the user set explicitly wins
    let mut cfg: PoeConfig = cli.common.load(path.as_deref())?;
    if let Some(v) = cli.expressions {
        cfg.toy.expressions = v.into_iter().map(|s| s.trim().to_string()).collect();
    }
    if let Some(v) = cli.targets {
        cfg.images.targets = v.into_iter().map(|s| s.trim().to_string()).collect();
    }
    if cli.no_2d {
        cfg.toy.enabled = false;
    }
    if cli.no_images {
        cfg.images.enabled = false;
    }
    cli.common.apply(&mut cfg);
    let opts = RunOptions { resume: cli.resume, stop: Some(stop_on_signals()?) };
    let (dir, res) = run(&cfg, &opts)?.or_exit("exp_poe");
    eprintln!("ebm-rs: exp_poe done in {:.1} s; results in {}", res.total_seconds, dir.display());
    eprintln!("        view the curves and samples with: just tensorboard   (then open http://127.0.0.1:6006)");
    Ok(())
}
