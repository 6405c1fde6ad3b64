//! Every metric that applies to a model and a data set: for 2-D data the grid `log Z`, test NLL and (with a
//! known density) `KL(p_data ‖ p_θ)`; for other vectors and images AIS `log Z` with its spread and the test
//! log-likelihood; KSD of the data under the model; MMD² between model samples and the data; OOD AUROC of
//! `f` at the data against `f` at other points.

use crate::data::DataInfo;
use anyhow::{bail, Context, Result};
use ebm_core::ais::{ais, AisBase, AisConfig, BoxMoves};
use ebm_core::energy::GaussianMixture;
use ebm_core::eval::{auroc, f_of, grid_log_z, ksd, mmd2_rbf, nll, GridSpec, KsdConfig, DEFAULT_MARGIN};
use ebm_core::EnergyModel;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A known data density for KL: a Gaussian mixture written as TOML (`weights`, `means`, and one `std` for
/// every component or `stds`, one per component; isotropic components).
///
/// ```toml
/// weights = [0.7, 0.3]
/// means = [[-2.0, 0.0], [2.0, 0.0]]
/// std = 0.5
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSpec {
    /// Component weights (normalised to sum to 1).
    pub weights: Vec<f64>,
    /// Component means, one row each.
    pub means: Vec<Vec<f64>>,
    /// One standard deviation for every component.
    #[serde(default)]
    pub std: Option<f64>,
    /// One standard deviation per component.
    #[serde(default)]
    pub stds: Option<Vec<f64>>,
}

impl MixtureSpec {
    /// Reads the TOML file at `path`.
    ///
    /// # Errors
    /// Unreadable or malformed files, named with the path.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a mixture (weights, means, std)", path.display()))
    }

    /// The mixture as a normalised model (`f = log p`).
    ///
    /// # Errors
    /// Inconsistent sizes or non-positive values.
    pub fn build(&self) -> Result<GaussianMixture> {
        let k = self.means.len();
        let stds = match (&self.stds, self.std) {
            (Some(s), None) if s.len() == k => s.clone(),
            (None, Some(s)) => vec![s; k],
            _ => bail!("the mixture needs `std` (one for all) or `stds` (one per component, {k} values)"),
        };
        let comps = self
            .means
            .iter()
            .zip(&stds)
            .map(|(m, s)| ebm_core::energy::Gaussian::isotropic(m, *s, Device::Cpu))
            .collect::<ebm_core::Result<Vec<_>>>()
            .map_err(|e| anyhow::anyhow!("mixture: {e}"))?;
        GaussianMixture::new(&self.weights, comps).map_err(|e| anyhow::anyhow!("mixture: {e}"))
    }
}

/// Settings of [`evaluate`].
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Grid cells per axis for 2-D `log Z`.
    pub grid_n: usize,
    /// AIS chains and intermediate distributions for `log Z` beyond 2-D (0 chains: skip AIS).
    pub ais_chains: usize,
    /// AIS steps.
    pub ais_steps: usize,
    /// At most this many points enter MMD and KSD.
    pub max_points: i64,
    /// The model is noise-conditional: its `f` without σ is the σ → 0 limit of a denoiser, which has no
    /// useful density, so `log Z`, likelihoods and KSD are skipped (MMD of its annealed samples stays).
    pub noise_conditional: bool,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings { grid_n: 200, ais_chains: 64, ais_steps: 500, max_points: 1000, noise_conditional: false }
    }
}

/// One metric: its name, value and what it means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Short name, e.g. `test_nll`.
    pub name: String,
    /// Value.
    pub value: f64,
    /// What it is, with units.
    pub about: String,
}

/// Evaluates `m` on `data` (`[n, *event]`); `samples` from the model give MMD², `ood` points give AUROC,
/// `truth` gives KL for 2-D data.
///
/// # Errors
/// Data of the wrong shape (named), non-finite model values.
pub fn evaluate(
    m: &dyn EnergyModel,
    info: &DataInfo,
    data: &Tensor,
    samples: Option<&Tensor>,
    ood: Option<&Tensor>,
    truth: Option<&dyn EnergyModel>,
    s: &EvalSettings,
    device: Device,
) -> Result<Vec<Metric>> {
    let mut out = Vec::new();
    let mut push = |name: &str, value: f64, about: &str| {
        out.push(Metric { name: name.into(), value, about: about.into() });
    };
    let data = data.to_device(device);
    let event = &info.event_shape;
    if data.size()[1..] != event[..] {
        bail!("the data has points of shape {:?}, but the model takes {event:?}", &data.size()[1..]);
    }
    let n = data.size()[0];
    push("n", n as f64, "points evaluated");
    let f = f_of(m, &data, device, "the data").map_err(|e| anyhow::anyhow!("{e}"))?;
    push("mean_f", f.iter().sum::<f64>() / f.len() as f64, "mean f(x) over the data (unnormalised)");
    if s.noise_conditional {
        // no density metrics: see EvalSettings::noise_conditional
    } else if let Some(bbox) = info.bbox_2d() {
        let mut bb = bbox;
        if let Ok(mm) = minmax(&data) {
            bb = [bb[0].min(mm[0]), bb[1].max(mm[1]), bb[2].min(mm[2]), bb[3].max(mm[3])];
        }
        let grid = GridSpec::with_margin(bb, DEFAULT_MARGIN, s.grid_n).map_err(|e| anyhow::anyhow!("{e}"))?;
        let gz = grid_log_z(m, &grid, device).map_err(|e| anyhow::anyhow!("{e}"))?;
        let test_nll = nll(m, &data, gz.log_z, device).map_err(|e| anyhow::anyhow!("{e}"))?;
        push("log_z", gz.log_z, "log Z by a grid over the data's box plus 10% (exact up to the grid)");
        push("test_nll", test_nll, "mean −log p_θ(x) over the data, nats");
        let truth_owned = info.toy().filter(|t| t.has_log_density());
        let true_lp = match (truth, truth_owned) {
            (Some(t), _) => Some(f_of(t, &data, device, "the data").map_err(|e| anyhow::anyhow!("{e}"))?),
            (None, Some(toy)) => toy
                .log_density(&data.to_device(Device::Cpu))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .map(|t| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap_or_default()),
            _ => None,
        };
        if let Some(lp) = true_lp {
            let h = -lp.iter().sum::<f64>() / lp.len() as f64;
            push("data_entropy", h, "mean −log p_data(x) over the data (the best NLL possible), nats");
            push("kl", test_nll - h, "KL(p_data ‖ p_θ) estimated on the data, nats");
        }
    } else if s.ais_chains > 0 {
        // images: the pixel box, the chains in atanh coordinates (pixels, and so the mass, sit on the box's faces:
        // in pixel space MALA rejects most proposals there; README, "DRL's log Z, converged")
        let (base, box_moves) = match info.pixel_range {
            Some((lo, hi)) => (AisBase::Uniform { low: lo, high: hi }, BoxMoves::Tanh),
            None => {
                let sd = f64::try_from(data.std(true)).unwrap_or(1.0).max(1e-3);
                let mean = f64::try_from(data.mean(Kind::Double)).unwrap_or(0.0);
                (AisBase::Gaussian { mean, std: 2.0 * sd }, BoxMoves::Reject)
            }
        };
        let cfg = AisConfig { chains: s.ais_chains, steps: s.ais_steps, base, box_moves, ..AisConfig::default() };
        let r = ais(m, &cfg, device).map_err(|e| anyhow::anyhow!("AIS: {e}"))?;
        let mean_f = f.iter().sum::<f64>() / f.len() as f64;
        push("log_z", r.log_z, "log Z by AIS (annealed importance sampling)");
        push("log_z_se", r.log_z_std_err, "standard error of the AIS log Z");
        push("test_ll", mean_f - r.log_z, "mean log p_θ(x) over the data with AIS log Z, nats");
        push("ais_ess", r.ess, "effective sample size of the AIS weights");
    }
    let sub = |t: &Tensor| t.narrow(0, 0, t.size()[0].min(s.max_points)).to_device(device);
    if !info.is_image() && !s.noise_conditional {
        let k = ksd(m, &sub(&data), &KsdConfig::default()).map_err(|e| anyhow::anyhow!("KSD: {e}"))?;
        push("ksd", k.ksd(), "kernel Stein discrepancy of the data under the model (IMQ; 0 = fits)");
    }
    if let Some(x) = samples {
        let flat = |t: &Tensor| sub(t).reshape([t.size()[0].min(s.max_points), -1]).to_kind(Kind::Float);
        let mmd = mmd2_rbf(&flat(x), &flat(&data), None).map_err(|e| anyhow::anyhow!("MMD: {e}"))?;
        push("mmd2", mmd.mmd2, "unbiased MMD² (RBF) between model samples and the data");
    }
    if let Some(o) = ood {
        if o.size()[1..] != event[..] {
            bail!("--ood points have shape {:?}, but the model takes {event:?}", &o.size()[1..]);
        }
        let fo = f_of(m, &o.to_device(device), device, "the OOD points").map_err(|e| anyhow::anyhow!("{e}"))?;
        push("ood_auroc", auroc(&f, &fo), "AUROC of f: data (positive) against --ood points (1 = separated)");
    }
    Ok(out)
}

fn minmax(x: &Tensor) -> Result<[f64; 4]> {
    let lo = Vec::<f64>::try_from(x.min_dim(0, false).0.to_kind(Kind::Double))?;
    let hi = Vec::<f64>::try_from(x.max_dim(0, false).0.to_kind(Kind::Double))?;
    Ok([lo[0], hi[0], lo[1], hi[1]])
}

/// The metrics as an aligned table for the terminal.
pub fn table(metrics: &[Metric]) -> String {
    let w = metrics.iter().map(|m| m.name.len()).max().unwrap_or(4);
    metrics.iter().map(|m| format!("{:<w$}  {:>12.5}  {}\n", m.name, m.value, m.about)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DataInfo {
        DataInfo {
            source: "pts.csv".into(),
            event_shape: vec![2],
            label_names: vec![],
            bounds: Some(vec![[-4.0, 4.0], [-3.0, 3.0]]),
            pixel_range: None,
            columns: None,
            n_train: 1,
            n_test: 1,
        }
    }

    #[test]
    fn the_true_density_has_zero_kl_and_its_own_entropy() {
        let spec = MixtureSpec {
            weights: vec![0.7, 0.3],
            means: vec![vec![-2.0, 0.0], vec![2.0, 0.0]],
            std: Some(0.5),
            stds: None,
        };
        let mix = spec.build().unwrap();
        tch::manual_seed(0);
        let comp = Tensor::rand([4000], (Kind::Float, Device::Cpu)).lt(0.7);
        let x = Tensor::randn([4000, 2], (Kind::Float, Device::Cpu)) * 0.5
            + Tensor::stack(
                &[(comp.to_kind(Kind::Float) * -4.0 + 2.0), Tensor::zeros([4000], (Kind::Float, Device::Cpu))],
                1,
            );
        let m = evaluate(
            &mix,
            &info(),
            &x,
            None,
            None,
            Some(&mix),
            &EvalSettings { grid_n: 300, ..Default::default() },
            Device::Cpu,
        )
        .unwrap();
        let get = |n: &str| m.iter().find(|x| x.name == n).unwrap().value;
        assert!(get("kl").abs() < 0.01, "{}", get("kl"));
        assert!(get("log_z").abs() < 0.01, "a normalised density has log Z = 0: {}", get("log_z"));
        // entropy of well-separated components: H(w) + ln(2π e σ²)
        let h = -(0.7f64 * 0.7f64.ln() + 0.3 * 0.3f64.ln())
            + (2.0 * std::f64::consts::PI * std::f64::consts::E * 0.25).ln();
        assert!((get("data_entropy") - h).abs() < 0.05, "{} vs {h}", get("data_entropy"));
        assert!(get("ksd") < 0.05, "{}", get("ksd"));
    }

    #[test]
    fn mixture_files_need_a_std() {
        let spec = MixtureSpec { weights: vec![1.0], means: vec![vec![0.0]], std: None, stds: None };
        assert!(spec.build().unwrap_err().to_string().contains("needs `std`"));
    }
}
