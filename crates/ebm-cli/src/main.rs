//! `ebm`: train, sample, evaluate and sweep energy-based models from the command line.

use clap::{Parser, Subcommand};

/// Energy-based models from the command line.
#[derive(Parser)]
#[command(name = "ebm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train one run per grid point and seed, on this machine or as a Slurm array job.
    #[command(after_help = "Examples:\n  \
        ebm sweep cfg.toml --grid train.optim.lr=1e-3,1e-4 --grid model.hidden=[64],[128,128] --seeds 0..5 --local -j 4\n  \
        ebm sweep cfg.toml --grid 'objective={kind=\"contrastive\",k=5},{kind=\"score_matching\"}' --seeds 0..3 \\\n      \
        --slurm --partition gpu --time 02:00:00 --cpus 4 --submit --out sweeps/obj\n  \
        ebm sweep --resume sweeps/obj --local -j 2     # continue an interrupted sweep")]
    Sweep(ebm_cli::sweep::SweepArgs),
    /// Tabulate a sweep: mean ± sd over seeds of every metric, per grid point.
    #[command(
        after_help = "Example:\n  ebm report sweeps/obj     # writes report.md, report.csv and report.png there"
    )]
    Report(ebm_cli::report::ReportArgs),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Cmd::Sweep(a) => ebm_cli::sweep::run(a),
        Cmd::Report(a) => ebm_cli::report::run(a),
    };
    if let Err(e) = r {
        eprintln!("ebm: {e:#}");
        std::process::exit(1);
    }
}
