//! What a finished `ebm train` leaves for people and for `ebm report`: `summary.json` (machine-readable),
//! `summary.md` (what was trained, on what, for how long, the final metrics) and the figures — for 2-D data
//! the model's log-density as a heat map with its samples, beside the true log-density on the same colour
//! scale when it is known; samples against data for other vectors (first two coordinates).

use crate::data::DataInfo;
use crate::evaluate::Metric;
use crate::sampling::SampleReport;
use crate::spec::TrainSpec;
use anyhow::{Context, Result};
use ebm_core::eval::{grid_log_z, GridSpec, DEFAULT_MARGIN};
use ebm_core::EnergyModel;
use ebm_log::plot::{self, AxesBox, HeatmapOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The file `ebm report` reads.
pub const SUMMARY_FILE: &str = "summary.json";

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `finished` once training, sampling and evaluation are done.
    pub status: String,
    /// Updates made.
    pub steps: usize,
    /// Wall seconds of training (this process; a resumed run counts its last part).
    pub seconds: f64,
    /// The data source.
    pub data: String,
    /// The model kind.
    pub model: String,
    /// The objective, as TOML.
    pub objective: String,
    /// Final metrics by name.
    pub metrics: BTreeMap<String, f64>,
    /// What the sampler reported.
    pub sampling: serde_json::Value,
}

impl Summary {
    /// The summary of a finished run.
    pub fn new(
        spec: &TrainSpec,
        info: &DataInfo,
        steps: usize,
        seconds: f64,
        metrics: &[Metric],
        sampling: &SampleReport,
    ) -> Self {
        Summary {
            status: "finished".into(),
            steps,
            seconds,
            data: info.source.clone(),
            model: spec.model.kind().into(),
            objective: serde_json::to_string(&spec.objective).unwrap_or_default(),
            metrics: metrics.iter().map(|m| (m.name.clone(), m.value)).collect(),
            sampling: serde_json::to_value(sampling).unwrap_or_default(),
        }
    }

    /// Reads `dir/summary.json`; `None` when there is none.
    ///
    /// # Errors
    /// A summary that cannot be parsed.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let p = dir.join(SUMMARY_FILE);
        if !p.is_file() {
            return Ok(None);
        }
        let s = serde_json::from_slice(&std::fs::read(&p)?).with_context(|| format!("{} is damaged", p.display()))?;
        Ok(Some(s))
    }
}

/// Writes `summary.json` and `summary.md` into `dir` (atomically).
///
/// # Errors
/// Write errors.
pub fn write_summary(dir: &Path, s: &Summary) -> Result<()> {
    let mut md = format!(
        "# Run summary\n\n- data: `{}`\n- model: {}\n- objective: `{}`\n- updates: {} ({:.1} s of training in the last \
         session)\n\n| metric | value |\n|---|---|\n",
        s.data, s.model, s.objective, s.steps, s.seconds
    );
    for (k, v) in &s.metrics {
        md.push_str(&format!("| {k} | {v:.5} |\n"));
    }
    if let Some(a) = s.sampling.get("acceptance").and_then(|a| a.as_f64()) {
        md.push_str(&format!("\nSampler acceptance: {a:.3}\n"));
    }
    atomic(dir, "summary.md", md.as_bytes())?;
    atomic(dir, SUMMARY_FILE, &serde_json::to_vec_pretty(s)?)
}

fn atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("cannot write {}", dir.join(name).display()))
}

/// Writes `figures/density.png` (2-D: log-density heat maps, model beside truth when known, samples on top) or
/// `figures/samples.png` (other vectors: first two coordinates of samples against data). Images need none:
/// `samples.png` is the figure.
///
/// # Errors
/// Model or plotting errors.
pub fn write_figures(
    m: &dyn EnergyModel,
    info: &DataInfo,
    samples: &Tensor,
    data: &Tensor,
    dir: &Path,
    grid_n: usize,
    device: Device,
) -> Result<()> {
    let figs = dir.join("figures");
    std::fs::create_dir_all(&figs)?;
    let Some(bbox) = info.bbox_2d() else {
        if !info.is_image() && info.event_shape[0] >= 2 {
            let two = |t: &Tensor| t.narrow(1, 0, 2).narrow(0, 0, t.size()[0].min(2000));
            let (d, s) = (plot::points_from_tensor(&two(data))?, plot::points_from_tensor(&two(samples))?);
            let all: Vec<[f32; 2]> = d.iter().chain(&s).copied().collect();
            let ax = box_of(&all)?;
            plot::scatter_samples(&figs.join("samples.png"), &d, &s, &ax, "samples vs data (x0, x1)")?;
        }
        return Ok(());
    };
    let grid = GridSpec::with_margin(bbox, DEFAULT_MARGIN, grid_n.min(300))?;
    let gz = grid_log_z(m, &grid, device)?;
    let model_lp = gz.log_density();
    let truth: Option<Vec<f32>> = match info.toy().filter(|t| t.has_log_density()) {
        Some(t) => {
            let pts = grid.points(Kind::Float, Device::Cpu)?;
            t.log_density(&pts)?.map(|lp| Vec::<f32>::try_from(lp.to_kind(Kind::Float))).transpose()?
        }
        None => None,
    };
    let top = model_lp.iter().chain(truth.iter().flatten()).copied().filter(|v| v.is_finite()).fold(f32::MIN, f32::max);
    // A shared log scale 12 nats deep: every mode with at least e^-12 of the peak density shows.
    let range = Some((f64::from(top) - 12.0, f64::from(top)));
    let ax = AxesBox::new((grid.bbox()[0], grid.bbox()[1]), (grid.bbox()[2], grid.bbox()[3]))?;
    let pts = plot::points_from_tensor(&samples.narrow(0, 0, samples.size()[0].min(1000)))?;
    let tmp = figs.join(".panel.png");
    let opts = HeatmapOptions { title: "model log p(x)", points: Some(&pts), range, colorbar_label: "log p(x)" };
    let model_img = plot::heatmap(&tmp, &model_lp, grid.nx(), grid.ny(), &ax, &opts)?;
    let mut panels = vec![Some(model_img)];
    let mut titles = vec!["model"];
    if let Some(t) = &truth {
        let opts = HeatmapOptions { title: "true log p(x)", points: None, range, colorbar_label: "log p(x)" };
        panels.push(Some(plot::heatmap(&tmp, t, grid.nx(), grid.ny(), &ax, &opts)?));
        titles.push("truth");
    }
    let _ = std::fs::remove_file(&tmp);
    plot::compose_images(
        &figs.join("density.png"),
        &[panels],
        &[""],
        &titles,
        Some("log-density, shared colour scale"),
    )?;
    Ok(())
}

fn box_of(p: &[[f32; 2]]) -> Result<AxesBox> {
    let f = |i: usize| {
        let lo = p.iter().map(|q| q[i]).filter(|v| v.is_finite()).fold(f32::MAX, f32::min) as f64;
        let hi = p.iter().map(|q| q[i]).filter(|v| v.is_finite()).fold(f32::MIN, f32::max) as f64;
        let m = 0.05 * (hi - lo).max(1e-3);
        (lo - m, hi + m)
    };
    Ok(AxesBox::new(f(0), f(1))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Summary::read(dir.path()).unwrap().is_none());
        let s = Summary {
            status: "finished".into(),
            steps: 10,
            seconds: 1.5,
            data: "x.csv".into(),
            model: "mlp".into(),
            objective: "kind = \"nce\"".into(),
            metrics: [("kl".to_string(), 0.25)].into_iter().collect(),
            sampling: serde_json::json!({"acceptance": 0.5}),
        };
        write_summary(dir.path(), &s).unwrap();
        assert_eq!(Summary::read(dir.path()).unwrap().unwrap(), s);
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("| kl | 0.25000 |") && md.contains("acceptance: 0.500"), "{md}");
    }
}
