//! Drawing samples from a trained model with the sampler of a [`SamplingSpec`], with the diagnostics the
//! sampler has (acceptance, swap acceptance per pair, ESS and split-R̂ over chains), and writing them out:
//! CSV or NPY for vectors, a PNG grid plus NPY for images.

use crate::data::DataInfo;
use crate::spec::SamplingSpec;
use anyhow::{bail, Context, Result};
use ebm_core::energy::FrozenParams;
use ebm_core::eval::{ChainDiagnostics, Chains};
use ebm_core::sampler::{Chain, Init, ParallelTempering};
use ebm_core::{EnergyModel, SamplerConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// At most this many chains and coordinates enter ESS / R̂ (the rest cost memory and say little more).
const DIAG_CHAINS: i64 = 64;
/// See [`DIAG_CHAINS`].
const DIAG_DIMS: i64 = 64;

/// Samples and what the sampler reports about them.
#[derive(Debug)]
pub struct Drawn {
    /// The samples `[n, *event]` on the CPU.
    pub x: Tensor,
    /// Sampler name, e.g. `mala`.
    pub sampler: String,
    /// Diagnostics (JSON-able).
    pub report: SampleReport,
}

/// What `ebm sample` prints and saves as `sample.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    /// Sampler name.
    pub sampler: String,
    /// Number of samples.
    pub n: usize,
    /// Sampler steps.
    pub steps: usize,
    /// Metropolis acceptance rate (MALA, HMC, tempering with MALA moves).
    pub acceptance: Option<f64>,
    /// Parallel tempering: swap acceptance per neighbouring pair of the ladder.
    pub swap_acceptance: Option<Vec<f64>>,
    /// ESS and split-R̂ over the second half of the chains (vectors only; up to 64 chains and coordinates).
    pub chains: Option<ChainDiagnostics>,
}

/// Chain starts for `n` samples: `init` when given, else uniform over the data's box plus 10% per side
/// (vectors) or over the pixel range (images).
///
/// # Shapes
/// → `[n, *event]` on `device`.
pub fn start(init: Option<&Init>, info: &DataInfo, n: usize, device: Device) -> Tensor {
    let n = n as i64;
    if let Some(i) = init {
        return i.sample(n, &info.event_shape, device);
    }
    if let Some((lo, hi)) = info.pixel_range {
        return Init::Uniform { low: lo, high: hi }.sample(n, &info.event_shape, device);
    }
    let bounds = info.bounds.clone().unwrap_or_else(|| vec![[-3.0, 3.0]; info.event_shape[0] as usize]);
    let (lo, width): (Vec<f32>, Vec<f32>) = bounds
        .iter()
        .map(|[a, b]| {
            let m = 0.1 * (b - a).max(1e-3);
            ((a - m) as f32, (b - a + 2.0 * m) as f32)
        })
        .unzip();
    let u = Tensor::rand([n, bounds.len() as i64], (Kind::Float, device));
    u * Tensor::from_slice(&width).to_device(device) + Tensor::from_slice(&lo).to_device(device)
}

/// Runs `cfg.sampler` for `cfg.steps` steps from [`start`]; with `diagnose`, records the second half of the
/// chains for ESS / R̂ (vectors only).
///
/// # Errors
/// A sampler that does not suit the model (annealing a model that takes no σ), or non-finite chains.
pub fn draw(m: &dyn EnergyModel, cfg: &SamplingSpec, info: &DataInfo, device: Device, diagnose: bool) -> Result<Drawn> {
    if cfg.n == 0 || cfg.steps == 0 {
        bail!("sampling.n and sampling.steps must be at least 1 (got {} and {})", cfg.n, cfg.steps);
    }
    let sampler = cfg.sampler.build().map_err(|e| anyhow::anyhow!("sampling.sampler: {e}"))?;
    let x0 = start(cfg.init.as_ref(), info, cfg.n, device);
    let _frozen = FrozenParams::new(m);
    let mut chain = Chain::new(&x0);
    let record = diagnose && !info.is_image() && cfg.steps >= 8;
    let burn = if record { cfg.steps / 2 } else { cfg.steps };
    sampler.advance(m, &mut chain, burn).map_err(|e| anyhow::anyhow!("sampling: {e}"))?;
    let mut trace: Vec<Tensor> = Vec::new();
    let (nc, nd) = (DIAG_CHAINS.min(cfg.n as i64), DIAG_DIMS.min(info.event_shape.iter().product()));
    for _ in burn..cfg.steps {
        sampler.advance(m, &mut chain, 1).map_err(|e| anyhow::anyhow!("sampling: {e}"))?;
        trace.push(chain.x.narrow(0, 0, nc).reshape([nc, -1]).narrow(1, 0, nd).to_device(Device::Cpu));
    }
    sampler.finish(m, &mut chain).map_err(|e| anyhow::anyhow!("sampling: {e}"))?;
    let swap_acceptance = ParallelTempering::swap_acceptance(&chain);
    let x = chain.x.detach().to_device(Device::Cpu);
    let finite = bool::try_from(x.isfinite().all()).unwrap_or(false);
    if !finite {
        bail!("sampling with {} produced NaN or infinite samples; lower sampling.sampler's step size", sampler.name());
    }
    let out = chain.into_output();
    let chains =
        if trace.len() >= 4 { Chains::from_tensor(&Tensor::stack(&trace, 0)).ok().map(|c| c.diagnose()) } else { None };
    let report = SampleReport {
        sampler: sampler.name().to_string(),
        n: cfg.n,
        steps: cfg.steps,
        acceptance: out.acceptance,
        swap_acceptance,
        chains,
    };
    Ok(Drawn { x, sampler: sampler.name().to_string(), report })
}

/// The sampler named on the command line (`--sampler mala|langevin|hmc|pt|annealed`) with its default
/// settings, or the run's own when the name matches its `kind`.
///
/// # Errors
/// An unknown name, listing the known ones.
pub fn sampler_by_name(name: &str, run: &SamplerConfig) -> Result<SamplerConfig> {
    let kind = match name.trim().to_ascii_lowercase().as_str() {
        "langevin" | "ula" => "langevin",
        "mala" => "mala",
        "hmc" => "hmc",
        "pt" | "tempering" | "parallel_tempering" => "tempering",
        "annealed" => "annealed",
        "recovery" | "drl" => "recovery",
        other => bail!("--sampler {other}: unknown sampler; use mala, langevin, hmc, pt, annealed or recovery"),
    };
    let run_kind = toml::Value::try_from(run)?.get("kind").and_then(|k| k.as_str().map(String::from));
    if run_kind.as_deref() == Some(kind) {
        return Ok(run.clone());
    }
    let mut t = toml::Table::new();
    t.insert("kind".into(), toml::Value::String(kind.into()));
    SamplerConfig::deserialize(toml::Value::Table(t)).map_err(|e| anyhow::anyhow!("--sampler {name}: {e}"))
}

/// Writes samples to `out`: `.csv` (with the data's column names when it had a header) or `.npy` for
/// vectors; for images `.png` (a grid, plus the `.npy` beside it) or `.npy`. Returns the files written.
///
/// # Errors
/// An extension that does not fit the data, or a write error.
pub fn write_samples(x: &Tensor, info: &DataInfo, out: &Path) -> Result<Vec<PathBuf>> {
    let ext = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match (ext.as_str(), info.is_image()) {
        ("npy", _) => {
            x.write_npy(out).with_context(|| format!("cannot write {}", out.display()))?;
            Ok(vec![out.to_path_buf()])
        }
        ("csv", false) => {
            write_csv(x, info.columns.as_deref(), out)?;
            Ok(vec![out.to_path_buf()])
        }
        ("png", true) => {
            let range = info.pixel_range.unwrap_or((-1.0, 1.0));
            let nrow = (x.size()[0] as f64).sqrt().ceil().max(1.0) as usize;
            let shown = x.narrow(0, 0, x.size()[0].min(256));
            ebm_log::plot::image_grid(out, &shown, range, nrow.min(16))?;
            let npy = out.with_extension("npy");
            x.write_npy(&npy).with_context(|| format!("cannot write {}", npy.display()))?;
            Ok(vec![out.to_path_buf(), npy])
        }
        (e, img) => bail!(
            "--out {}: cannot write {} samples as '.{e}'; use {}",
            out.display(),
            if img { "image" } else { "vector" },
            if img { ".png (grid + .npy) or .npy" } else { ".csv or .npy" }
        ),
    }
}

fn write_csv(x: &Tensor, columns: Option<&[String]>, out: &Path) -> Result<()> {
    let d = x.size()[1] as usize;
    let vals = Vec::<f32>::try_from(x.to_kind(Kind::Float).contiguous().reshape([-1]))?;
    let mut s = String::new();
    match columns {
        Some(c) if c.len() == d => s.push_str(&c.join(",")),
        _ => s.push_str(&(0..d).map(|i| format!("x{i}")).collect::<Vec<_>>().join(",")),
    }
    s.push('\n');
    for row in vals.chunks(d) {
        s.push_str(&row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        s.push('\n');
    }
    let tmp = out.with_extension("csv.tmp");
    std::fs::write(&tmp, s).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// One line per diagnostic, for the terminal.
pub fn describe(r: &SampleReport) -> Vec<String> {
    let mut lines = vec![format!("sampler {}: {} samples after {} steps", r.sampler, r.n, r.steps)];
    if let Some(a) = r.acceptance {
        lines.push(format!("acceptance {a:.3}"));
    }
    if let Some(s) = &r.swap_acceptance {
        let v: Vec<String> = s.iter().map(|a| format!("{a:.3}")).collect();
        lines.push(format!("swap acceptance per neighbouring pair [{}]", v.join(", ")));
    }
    if let Some(c) = &r.chains {
        lines.push(format!(
            "over {} chains × {} steps (second half): min ESS {:.1}, min bulk ESS {:.1}, max split-R̂ {:.3}",
            c.chains, c.steps, c.min_ess, c.min_ess_bulk, c.rhat.max
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebm_core::energy::Gaussian;

    fn info2() -> DataInfo {
        DataInfo {
            source: "x".into(),
            event_shape: vec![2],
            label_names: vec![],
            bounds: Some(vec![[-1.0, 1.0], [0.0, 2.0]]),
            pixel_range: None,
            columns: Some(vec!["a".into(), "b".into()]),
            n_train: 1,
            n_test: 1,
        }
    }

    #[test]
    fn starts_cover_the_data_box_plus_a_margin() {
        tch::manual_seed(0);
        let x = start(None, &info2(), 4000, Device::Cpu);
        let lo = Vec::<f32>::try_from(x.min_dim(0, false).0).unwrap();
        let hi = Vec::<f32>::try_from(x.max_dim(0, false).0).unwrap();
        assert!(lo[0] >= -1.2 && lo[0] < -1.15 && hi[0] <= 1.2 && hi[0] > 1.15, "{lo:?} {hi:?}");
        assert!(lo[1] >= -0.2 && hi[1] <= 2.2);
    }

    #[test]
    fn mala_samples_a_gaussian_with_diagnostics() {
        tch::manual_seed(1);
        let g = Gaussian::isotropic(&[0.5, 1.0], 0.5, Device::Cpu).unwrap();
        let sampler = SamplerConfig::Mala(ebm_core::sampler::MalaConfig { step_size: 0.1, record: false });
        let cfg = SamplingSpec { steps: 400, n: 500, sampler, init: None };
        let d = draw(&g, &cfg, &info2(), Device::Cpu, true).unwrap();
        let mean = Vec::<f32>::try_from(d.x.mean_dim(0, false, Kind::Float)).unwrap();
        assert!((mean[0] - 0.5).abs() < 0.08 && (mean[1] - 1.0).abs() < 0.08, "{mean:?}");
        let acc = d.report.acceptance.unwrap();
        assert!(acc > 0.5 && acc <= 1.0, "{acc}");
        let c = d.report.chains.unwrap();
        assert!(c.rhat.max < 1.1, "mixed chains: {}", c.rhat.max);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        write_samples(&d.x, &info2(), &p).unwrap();
        let t = ebm_core::data::read_table(&p).unwrap();
        assert_eq!(t.points.size(), [500, 2]);
        assert_eq!(t.columns.unwrap(), ["a", "b"]);
        let e = write_samples(&d.x, &info2(), &dir.path().join("s.png")).unwrap_err().to_string();
        assert!(e.contains(".csv or .npy"), "{e}");
    }

    #[test]
    fn samplers_by_name() {
        let run = SamplerConfig::default();
        assert!(matches!(sampler_by_name("pt", &run).unwrap(), SamplerConfig::Tempering(_)));
        assert!(matches!(sampler_by_name("HMC", &run).unwrap(), SamplerConfig::Hmc(_)));
        assert_eq!(sampler_by_name("langevin", &run).unwrap(), run);
        assert!(sampler_by_name("gibbs", &run).unwrap_err().to_string().contains("use mala, langevin"));
    }
}
