//! `ebm`: train, sample, evaluate, score, compose and sweep energy-based models from the command line.

use clap::{Parser, Subcommand};
use ebm_cli::commands::{compose, eval, sample, score};
use ebm_cli::{report, sweep, train};
use experiments::common::Outcome;

/// Energy-based models on libtorch: train on your own data, sample, evaluate, score, compose, sweep.
#[derive(Debug, Parser)]
#[command(name = "ebm", disable_version_flag = true, after_help = "Run `ebm <command> --help` for examples.")]
struct Cli {
    /// Print the version, the libtorch version and the device, then exit.
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model from a config file into a new run folder (or continue one with --resume).
    Train(train::TrainArgs),
    /// Draw samples from a trained model.
    Sample(sample::SampleArgs),
    /// Evaluate a trained model on data (NLL/KL, AIS log Z, KSD, MMD, OOD AUROC).
    Eval(eval::EvalArgs),
    /// f(x) per row, and log-likelihood ratios f(x1) - f(x2).
    Score(score::ScoreArgs),
    /// Compose trained models with an expression and sample the composition.
    Compose(compose::ComposeArgs),
    /// Train one run per grid point and seed, on this machine or as a Slurm array job.
    #[command(after_help = "Examples:\n  \
        ebm sweep my.toml --grid train.optim.lr=1e-3,1e-4 --grid model.hidden=[64],[128,128] --seeds 0..5 \\\n      \
        --local -j 4\n  \
        ebm sweep my.toml --grid 'objective={kind=\"contrastive\",k=5},{kind=\"score_matching\"}' --seeds 0..3 \\\n      \
        --slurm --partition gpu --time 02:00:00 --cpus 4 --submit --out sweeps/obj\n  \
        ebm sweep --resume sweeps/obj --local -j 2     # continue an interrupted sweep")]
    Sweep(sweep::SweepArgs),
    /// Tabulate a sweep: mean ± sd over seeds of every metric, per grid point.
    #[command(
        after_help = "Example:\n  ebm report sweeps/obj     # writes report.md, report.csv and report.png there"
    )]
    Report(report::ReportArgs),
}

fn version() -> String {
    let device = if tch::Cuda::is_available() {
        format!("cuda ({} device(s))", tch::Cuda::device_count())
    } else {
        "cpu (no CUDA device visible)".to_string()
    };
    format!("ebm {} (libtorch {}, device {device})", env!("CARGO_PKG_VERSION"), experiments::device::LIBTORCH_VERSION)
}

fn main() {
    let cli = Cli::parse();
    if cli.version {
        println!("{}", version());
        return;
    }
    let Some(command) = cli.command else {
        eprintln!("ebm: give a command (train, sample, eval, score, compose, sweep, report); see `ebm --help`");
        std::process::exit(2);
    };
    let result = match command {
        Command::Train(a) => train::run(&a).map(|o| match o {
            Outcome::Done(dir) => println!("{}", dir.display()),
            Outcome::Interrupted { dir, step, .. } => {
                eprintln!(
                    "ebm: interrupted after update {step}; a checkpoint was written.\n     continue with: ebm train \
                     --resume {}",
                    dir.display()
                );
                std::process::exit(130);
            }
        }),
        Command::Sample(a) => sample::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Score(a) => score::run(&a),
        Command::Compose(a) => compose::run(&a),
        Command::Sweep(a) => sweep::run(a),
        Command::Report(a) => report::run(a),
    };
    if let Err(e) = result {
        eprintln!("ebm: error: {e:#}");
        std::process::exit(1);
    }
}
