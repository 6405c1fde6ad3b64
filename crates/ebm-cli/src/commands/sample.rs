//! `ebm sample RUN`: samples from a trained model, with the sampler's diagnostics.

use super::{fresh, next_free};
use crate::model::SavedRun;
use crate::sampling::{describe, draw, sampler_by_name, write_samples};
use anyhow::Result;
use ebm_core::energy::conditional::Conditioned;
use ebm_core::EnergyModel;
use experiments::DeviceArg;
use std::path::PathBuf;

/// Flags of `ebm sample`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  ebm sample runs/first --sampler mala --n 2000 --out samples.csv\n  ebm sample \
                        runs/first --sampler pt\n  ebm sample runs/digits --label 3 --out threes.png")]
pub struct SampleArgs {
    /// The run folder that `ebm train` wrote.
    pub run: PathBuf,
    /// mala, langevin, hmc, pt (parallel tempering) or annealed (noise-conditional models); default: the
    /// run's `sampling.sampler`.
    #[arg(long)]
    pub sampler: Option<String>,
    /// Number of samples (default: the run's `sampling.n`).
    #[arg(long)]
    pub n: Option<usize>,
    /// Sampler steps (default: the run's `sampling.steps`).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Output file: .csv or .npy for vectors, .png (grid, plus .npy) or .npy for images (default: a new file
    /// in the run folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample the model given this label (conditional models).
    #[arg(long)]
    pub label: Option<String>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
}

/// Runs `ebm sample`.
///
/// # Errors
/// Not a run folder, an unknown sampler or label, an output that exists or does not fit the data.
pub fn run(a: &SampleArgs) -> Result<()> {
    let device = a.device.resolve()?;
    let saved = SavedRun::open(&a.run, device)?;
    let mut cfg = saved.spec.sampling.clone();
    if let Some(s) = &a.sampler {
        cfg.sampler = sampler_by_name(s, &cfg.sampler)?;
    }
    cfg.n = a.n.unwrap_or(cfg.n);
    cfg.steps = a.steps.unwrap_or(cfg.steps);
    let ext = if saved.data.is_image() { "png" } else { "csv" };
    let out = match &a.out {
        Some(p) => fresh(p)?,
        None => next_free(&a.run, &format!("sample-{}", cfg.sampler.build()?.name()), ext),
    };
    tch::manual_seed(a.seed as i64);
    let conditioned;
    let model: &dyn EnergyModel = match &a.label {
        Some(l) => {
            conditioned = Conditioned::by_name(&*saved.model, l).map_err(|e| anyhow::anyhow!("--label: {e}"))?;
            &conditioned
        }
        None => &*saved.model,
    };
    let drawn = draw(model, &cfg, &saved.data, device, true)?;
    let files = write_samples(&drawn.x, &saved.data, &out)?;
    let json = out.with_extension("json");
    if !json.exists() {
        std::fs::write(&json, serde_json::to_vec_pretty(&drawn.report)?)?;
    }
    for line in describe(&drawn.report) {
        println!("{line}");
    }
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
