//! `ebm compose "EXPR" --expert NAME=RUN[:label]…`: the expression language over saved models (`&` product,
//! `|` mixture, `!` negation, `w*` weights), sampled without training a joint model. Noise-conditional experts
//! are composed at every noise level and sampled by annealing (`--sampler annealed`).

use super::{fresh, next_free};
use crate::data::DataInfo;
use crate::model::SavedRun;
use crate::sampling::{describe, draw, sampler_by_name, write_samples};
use anyhow::{bail, Result};
use ebm_core::energy::conditional::Conditioned;
use ebm_core::energy::Composition;
use ebm_core::expr::Expression;
use ebm_core::EnergyModel;
use experiments::DeviceArg;
use std::path::{Path, PathBuf};

/// Flags of `ebm compose`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  ebm compose \"a & b\" --expert a=runs/left --expert b=runs/top --out both.csv\n  \
                        ebm compose \"three & !thin\" --expert three=runs/digits:3 --expert thin=runs/thin \
                        --sampler annealed"
)]
pub struct ComposeArgs {
    /// The expression, e.g. "a & b", "a | 2*b", "a & !b".
    pub expr: String,
    /// An expert: NAME=RUN, or NAME=RUN:LABEL for one label of a conditional model (repeatable).
    #[arg(long = "expert", value_name = "NAME=RUN[:LABEL]", required = true)]
    pub experts: Vec<String>,
    /// Number of samples (default: the first expert's `sampling.n`).
    #[arg(long)]
    pub n: Option<usize>,
    /// Sampler steps (default: the first expert's `sampling.steps`).
    #[arg(long)]
    pub steps: Option<usize>,
    /// mala, langevin, hmc, pt or annealed (default: the first expert's sampler).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Output file (.csv/.npy for vectors, .png/.npy for images; default: compose.csv / compose.png here).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
}

/// `NAME=RUN[:LABEL]` → (name, run folder, label).
///
/// # Errors
/// A spec without `=` or with an empty name.
pub fn parse_expert(s: &str) -> Result<(String, PathBuf, Option<String>)> {
    let Some((name, rest)) = s.split_once('=') else {
        bail!("--expert {s}: write NAME=RUN or NAME=RUN:LABEL, e.g. --expert a=runs/first");
    };
    let name = name.trim();
    if name.is_empty() {
        bail!("--expert {s}: the name before '=' is empty");
    }
    // RUN:LABEL, unless the whole of `rest` is a folder (a path may hold ':').
    if !Path::new(rest).is_dir() {
        if let Some((run, label)) = rest.rsplit_once(':') {
            return Ok((name.to_string(), PathBuf::from(run), Some(label.to_string())));
        }
    }
    Ok((name.to_string(), PathBuf::from(rest), None))
}

/// Runs `ebm compose`.
///
/// # Errors
/// A malformed expression, a name it uses that is no expert, experts of different shapes, not a run folder.
pub fn run(a: &ComposeArgs) -> Result<()> {
    let specs = a.experts.iter().map(|s| parse_expert(s)).collect::<Result<Vec<_>>>()?;
    let names: Vec<&str> = specs.iter().map(|(n, _, _)| n.as_str()).collect();
    Expression::parse_known(&a.expr, &names)
        .map_err(|e| anyhow::anyhow!("{e}\n(give each name with --expert NAME=RUN)"))?;
    let device = a.device.resolve()?;
    let runs = specs.iter().map(|(_, r, _)| SavedRun::open(r, device)).collect::<Result<Vec<_>>>()?;
    let first = &runs[0];
    for (r, (n, _, _)) in runs.iter().zip(&specs) {
        if r.data.event_shape != first.data.event_shape {
            bail!(
                "expert {n} ({}) takes points of shape {:?}, but {} takes {:?}; experts must share one space",
                r.dir.display(),
                r.data.event_shape,
                specs[0].0,
                first.data.event_shape
            );
        }
    }
    let mut experts: Vec<(String, Box<dyn EnergyModel + '_>)> = Vec::new();
    for (r, (n, _, label)) in runs.iter().zip(&specs) {
        let m: Box<dyn EnergyModel + '_> = match label {
            Some(l) => Box::new(Conditioned::by_name(&*r.model, l).map_err(|e| anyhow::anyhow!("--expert {n}: {e}"))?),
            None => Box::new(&*r.model),
        };
        experts.push((n.clone(), m));
    }
    let composed = Composition::parse(&a.expr, experts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = union_info(&runs);
    let mut cfg = first.spec.sampling.clone();
    if let Some(s) = &a.sampler {
        cfg.sampler = sampler_by_name(s, &cfg.sampler)?;
    }
    cfg.n = a.n.unwrap_or(cfg.n);
    cfg.steps = a.steps.unwrap_or(cfg.steps);
    let out = match &a.out {
        Some(p) => fresh(p)?,
        None => next_free(Path::new("."), "compose", if info.is_image() { "png" } else { "csv" }),
    };
    tch::manual_seed(a.seed as i64);
    let drawn = draw(&composed, &cfg, &info, device, true)?;
    let files = write_samples(&drawn.x, &info, &out)?;
    println!("composition: {}", composed.label());
    for line in describe(&drawn.report) {
        println!("{line}");
    }
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// The first expert's data description with the box spanning every expert's data.
fn union_info(runs: &[SavedRun]) -> DataInfo {
    let mut info = runs[0].data.clone();
    if let Some(b) = info.bounds.as_mut() {
        for r in &runs[1..] {
            if let Some(o) = &r.data.bounds {
                for (x, y) in b.iter_mut().zip(o) {
                    *x = [x[0].min(y[0]), x[1].max(y[1])];
                }
            }
        }
    }
    info.source = "composition".into();
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expert_specs() {
        assert_eq!(parse_expert("a=runs/x").unwrap(), ("a".into(), PathBuf::from("runs/x"), None));
        assert_eq!(parse_expert("b=runs/x:3").unwrap(), ("b".into(), PathBuf::from("runs/x"), Some("3".into())));
        assert!(parse_expert("runs/x").unwrap_err().to_string().contains("NAME=RUN"));
        assert!(parse_expert("=runs/x").is_err());
    }
}
