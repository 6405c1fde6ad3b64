//! Placeholder for the main experiment (CD-k vs PCD vs score matching); prints the device.
use clap::Parser;
use experiments::device::{init, CommonArgs};

/// CD-k vs persistent CD vs score matching on 2-D densities.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let c = &cli.common;
    init(c.device.unwrap_or_default(), c.seed.unwrap_or(0), c.threads)?;
    Ok(())
}
