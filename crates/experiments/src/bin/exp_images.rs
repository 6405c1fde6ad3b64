//! `exp_images`: an image EBM on 8×8 digits, MNIST-5k or a folder of images.
//! Run `just run exp_images --help` for the flags.

use anyhow::Result;
use clap::Parser;
use ebm_core::data::images::OnBadImage;
use experiments::common::{stop_on_signals, RunOptions};
use experiments::config;
use experiments::images::{default_config_path, run, ImageMethod, ImagesConfig};
use experiments::CommonArgs;
use std::path::PathBuf;

/// Trains a conv EBM on images (replay buffer + Langevin, IGEBM/UvA recipe), logs sample and buffer grids to
/// TensorBoard, writes `samples.png` (fresh long-run samples from noise) and `metrics.json` (classifier score
/// of the samples, AIS log Z and test log-likelihood, out-of-distribution AUROC).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Config file (default: experiments/exp_images.toml when it exists, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data set: digits, mnist5k or folder:<path>.
    #[arg(long)]
    dataset: Option<String>,
    /// Method: replay (replay buffer), cdk (CD-k from data) or dsm (denoising score matching).
    #[arg(long)]
    method: Option<ImageMethod>,
    /// Parameter updates.
    #[arg(long)]
    iters: Option<usize>,
    /// Continue an interrupted run from its folder (its config.toml is used; only --device and --threads
    /// may change); a finished run is only sampled and evaluated again.
    #[arg(long, value_name = "RUN_FOLDER", conflicts_with_all = ["config", "dataset", "method", "iters", "seed", "out", "run_name", "quick", "set"])]
    resume: Option<PathBuf>,
    /// Files in an image folder that are not readable images: skip them (with a warning) or stop with an error.
    #[arg(long, value_name = "skip|error")]
    on_bad_image: Option<OnBadImage>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let path = config::config_path(cli.resume.as_deref(), cli.config.as_deref(), default_config_path)?;
    // the file, then --quick's caps, then --set: what the user set explicitly wins
    let mut cfg: ImagesConfig = cli.common.load(path.as_deref())?;
    if let Some(v) = cli.dataset {
        cfg.data.dataset = v;
    }
    if let Some(v) = cli.method {
        cfg.method = v;
    }
    if let Some(v) = cli.iters {
        cfg.train.iters = v;
    }
    if let Some(v) = cli.on_bad_image {
        cfg.data.folder.on_bad_image = v;
    }
    cli.common.apply(&mut cfg);
    let opts = RunOptions { resume: cli.resume, stop: Some(stop_on_signals()?) };
    let (dir, report) = run(&cfg, &opts)?.or_exit("exp_images");
    eprintln!("ebm-rs: done in {:.1}s; samples in {}", report.total_seconds, report.samples_png.display());
    eprintln!("        results: {}/metrics.json and results.md", dir.display());
    eprintln!("        view the curves and grids with: just tensorboard   (then open http://127.0.0.1:6006)");
    Ok(())
}
