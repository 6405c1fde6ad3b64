//! `ebm eval RUN --data FILE [--ood FILE]`: every metric that applies to the model and the data, as a table on
//! stdout and `eval.json` in the run folder.

use super::{fresh, next_free, read_points};
use crate::evaluate::{evaluate, table, EvalSettings, MixtureSpec};
use crate::model::SavedRun;
use crate::sampling::draw;
use anyhow::Result;
use ebm_core::EnergyModel;
use experiments::DeviceArg;
use serde_json::json;
use std::path::PathBuf;

/// Flags of `ebm eval`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  ebm eval runs/first --data test.csv\n  ebm eval runs/first --data test \
                        --true-density mixture.toml\n  ebm eval runs/first --data test.csv --ood other.csv")]
pub struct EvalArgs {
    /// The run folder.
    pub run: PathBuf,
    /// Points to evaluate on (.csv or .npy), or `test` for the run's own held-out split.
    #[arg(long, default_value = "test")]
    pub data: String,
    /// Points that are not from the data: reports the AUROC of `f` separating them.
    #[arg(long)]
    pub ood: Option<PathBuf>,
    /// The true density, when known, as a Gaussian mixture TOML (weights, means, std): reports KL (2-D).
    #[arg(long)]
    pub true_density: Option<PathBuf>,
    /// Model samples drawn for MMD² (0: none).
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// AIS chains for log Z beyond 2-D (0: skip AIS).
    #[arg(long, default_value_t = 64)]
    pub ais_chains: usize,
    /// AIS intermediate distributions.
    #[arg(long, default_value_t = 500)]
    pub ais_steps: usize,
    /// Where to write the JSON (default: eval.json in the run folder, or eval-2.json, … if taken).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
}

/// Runs `ebm eval`.
///
/// # Errors
/// Not a run folder, unreadable data (file and line), points of the wrong dimension.
pub fn run(a: &EvalArgs) -> Result<()> {
    let device = a.device.resolve()?;
    let saved = SavedRun::open(&a.run, device)?;
    let info = &saved.data;
    let out = match &a.out {
        Some(p) => fresh(p)?,
        None => next_free(&a.run, "eval", "json"),
    };
    let data = if a.data == "test" {
        crate::data::load(&saved.spec.data, saved.spec.seed)?.test
    } else {
        read_points(&PathBuf::from(&a.data), &info.event_shape, "--data")?
    };
    let ood = a.ood.as_ref().map(|p| read_points(p, &info.event_shape, "--ood")).transpose()?;
    let truth = a.true_density.as_ref().map(|p| MixtureSpec::read(p)?.build()).transpose()?;
    tch::manual_seed(a.seed as i64);
    let samples = if a.samples > 0 {
        let cfg = crate::spec::SamplingSpec { n: a.samples, ..saved.spec.sampling.clone() };
        Some(draw(&*saved.model, &cfg, info, device, false)?.x)
    } else {
        None
    };
    let settings = EvalSettings {
        grid_n: saved.spec.eval.grid_n.max(200),
        ais_chains: a.ais_chains,
        ais_steps: a.ais_steps,
        ..EvalSettings::default()
    };
    let metrics = evaluate(
        &*saved.model,
        info,
        &data,
        samples.as_ref(),
        ood.as_ref(),
        truth.as_ref().map(|t| t as &dyn EnergyModel),
        &settings,
        device,
    )?;
    print!("{}", table(&metrics));
    let doc = json!({
        "run": a.run.display().to_string(),
        "data": a.data,
        "ood": a.ood.as_ref().map(|p| p.display().to_string()),
        "true_density": a.true_density.as_ref().map(|p| p.display().to_string()),
        "metrics": metrics.iter().map(|m| (m.name.clone(), json!(m.value))).collect::<serde_json::Map<_, _>>(),
        "about": metrics.iter().map(|m| (m.name.clone(), json!(m.about))).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
