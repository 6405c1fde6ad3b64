//! Quality metrics for energy-based models, mostly for 2-D densities.
//!
//! Sign convention: the model is `f(x)`, the unnormalised log-density, `p_θ(x) = exp(f(x)) / Z`.
//!
//! - [`grid_log_z`]: `log Z` by normalising `exp(f)` on a midpoint grid (logsumexp in `f64`),
//!   with the grid values for heat maps.
//! - [`nll`]: test NLL, the mean over held-out data of `log Z - f(x)`.
//! - [`kl_data_model`]: `KL(p_data ‖ p_θ)`, the mean over data of `log p_data(x) - (f(x) - log Z)`,
//!   where `log p_data` has a closed form.
//! - [`mmd2_rbf`]: unbiased MMD² with an RBF kernel and median-heuristic bandwidth (any dimension).
//! - [`mode_weights`]: the share of samples nearest each mixture component, their total-variation
//!   distance to the true weights, and the share of samples far from every component.
//! - [`evaluate_2d`]: all of the above for a model against a [`Source2d`], as an [`EvalReport`].
//! - [`ksd()`], [`ksd_from_scores`]: kernel Stein discrepancy (IMQ kernel) of samples against a model's
//!   score, with its standard error (any dimension).
//! - [`Chains`]: effective sample size and rank-normalised split-R̂ of MCMC chains `[T, C, D]`.

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::check::check_input;
use crate::data::Source2d;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};

pub mod chains;
mod grid;
pub mod ksd;
mod mmd;
mod modes;
mod ood;

pub use chains::{normal_quantile, ChainDiagnostics, Chains, Rhat};
pub use grid::{
    f_of, grid_log_z, grid_mode_weights, kl_data_model, kl_to_source, nll, GridLogZ, GridSpec, DEFAULT_GRID_N,
    DEFAULT_MARGIN,
};
pub use ksd::{ksd, ksd_from_scores, Ksd, KsdConfig};
pub use mmd::{mmd2_rbf, Mmd};
pub use modes::{mode_weights, ModeWeights, DEFAULT_FAR_STDS};
pub use ood::auroc;

/// Settings of [`evaluate_2d`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// Grid cells per axis for log Z (default 400).
    pub grid_n: usize,
    /// Margin around the source's box, as a fraction of its width/height (default 0.1).
    pub margin: f64,
    /// At most this many model samples and test points enter the MMD (default 2000).
    pub mmd_points: usize,
    /// Radius for the far share, in units of the components' std (default 3).
    pub far_radius_stds: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            grid_n: DEFAULT_GRID_N,
            margin: DEFAULT_MARGIN,
            mmd_points: 2000,
            far_radius_stds: DEFAULT_FAR_STDS,
        }
    }
}

impl EvalOptions {
    /// Checks every field's range.
    ///
    /// # Errors
    /// Names the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.grid_n < 2 {
            return Err(invalid("grid_n", format!("must be ≥ 2, got {}", self.grid_n)));
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(invalid("margin", format!("must be finite and ≥ 0, got {}", self.margin)));
        }
        if self.mmd_points < 2 {
            return Err(invalid("mmd_points", format!("must be ≥ 2, got {}", self.mmd_points)));
        }
        if !(self.far_radius_stds.is_finite() && self.far_radius_stds > 0.0) {
            return Err(invalid("far_radius_stds", format!("must be finite and > 0, got {}", self.far_radius_stds)));
        }
        Ok(())
    }
}

/// Metrics of a 2-D model against its data source (serialisable to JSON/TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Grid estimate of `log Z`.
    pub log_z: f64,
    /// Test NLL: mean of `log Z - f(x)` over the test data (nats).
    pub nll: f64,
    /// `KL(p_data ‖ p_θ)` where the source's density has a closed form.
    pub kl: Option<f64>,
    /// Unbiased MMD² between model samples and test data.
    pub mmd2: f64,
    /// The RBF bandwidth used for `mmd2`.
    pub mmd_bandwidth: f64,
    /// Share of model samples nearest each mixture component, for mixture sources.
    pub mode_weights: Option<Vec<f64>>,
    /// The source's true mixture weights.
    pub true_mode_weights: Option<Vec<f64>>,
    /// Total variation `½ Σ |ŵ_k - w_k|` between `mode_weights` and the true weights.
    pub mode_weight_tv: Option<f64>,
    /// Share of model samples far from every component (see [`ModeWeights::far_share`]).
    pub far_share: Option<f64>,
    /// Share of the grid mass in its outer ring of cells (large: the box cuts off mass).
    pub grid_edge_mass: f64,
}

/// Evaluates a 2-D `model` against `source`: grid `log Z` over the source's box plus a margin,
/// test NLL and (where the source's density is known) KL on `test_data`, MMD² between
/// `model_samples` and `test_data` (the first `opts.mmd_points` rows of each), and mode weights of
/// `model_samples` for mixture sources. Returns the grid as well, for heat maps.
///
/// # Shapes
/// `test_data: [n, 2]` drawn from `source`; `model_samples: [m, 2]` drawn from the model;
/// `n, m ≥ 2`.
///
/// # Errors
/// As [`grid_log_z`], [`nll`], [`kl_data_model`], [`mmd2_rbf`], [`mode_weights`], or invalid
/// `opts`.
pub fn evaluate_2d<M: EnergyModel + ?Sized>(
    model: &M,
    source: &Source2d,
    test_data: &Tensor,
    model_samples: &Tensor,
    opts: &EvalOptions,
    device: Device,
) -> Result<(EvalReport, GridLogZ)> {
    opts.validate()?;
    check_input(&[2], test_data, "evaluation test data")?;
    check_input(&[2], model_samples, "evaluation model samples")?;
    let grid = GridSpec::with_margin(source.bbox(), opts.margin, opts.grid_n)?;
    let gz = grid_log_z(model, &grid, device)?;
    let nll = nll(model, test_data, gz.log_z, device)?;
    let kl = kl_to_source(model, source, test_data, gz.log_z, device)?;
    let k = opts.mmd_points as i64;
    let xs = model_samples.f_narrow(0, 0, k.min(model_samples.size()[0]))?;
    let ys = test_data.f_narrow(0, 0, k.min(test_data.size()[0]))?;
    let mmd = mmd2_rbf(&xs, &ys, None)?;
    let modes = source.modes();
    let mw = match &modes {
        Some(m) => Some(mode_weights(model_samples, m, Some(opts.far_radius_stds * m.std))?),
        None => None,
    };
    let report = EvalReport {
        log_z: gz.log_z,
        nll,
        kl,
        mmd2: mmd.mmd2,
        mmd_bandwidth: mmd.bandwidth,
        mode_weights: mw.as_ref().map(|w| w.shares.clone()),
        true_mode_weights: modes.map(|m| m.weights),
        mode_weight_tv: mw.as_ref().map(|w| w.tv),
        far_share: mw.as_ref().map(|w| w.far_share),
        grid_edge_mass: gz.edge_mass,
    };
    Ok((report, gz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Toy2d;
    use tch::Kind;

    /// A toy density's exact log-density as a model.
    pub(super) struct ToyModel(pub(super) Toy2d);

    impl EnergyModel for ToyModel {
        fn f(&self, x: &Tensor) -> Tensor {
            self.0.log_density(x).unwrap().unwrap()
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![2]
        }
    }

    const CPU: Device = Device::Cpu;

    #[test]
    fn evaluate_true_density() {
        let t = Toy2d::TwoGaussians;
        let src = Source2d::Toy(t);
        let model = ToyModel(t);
        let test = t.sample(4000, 1);
        let samples = t.sample(4000, 2);
        let (r, gz) = evaluate_2d(&model, &src, &test, &samples, &EvalOptions::default(), CPU).unwrap();
        assert_eq!((gz.grid.nx(), gz.grid.ny()), (400, 400));
        assert!(r.log_z.abs() < 1e-3, "{}", r.log_z);
        let kl = r.kl.unwrap();
        assert!(kl.abs() < 1e-3, "{kl}");
        let lp = t.log_density(&test).unwrap().unwrap();
        let ent = -lp.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((r.nll - ent).abs() < 1e-3, "{} vs {ent}", r.nll);
        assert!(r.mmd2.abs() < 2e-3, "{}", r.mmd2);
        assert!(r.mode_weight_tv.unwrap() < 0.02);
        assert_eq!(r.true_mode_weights, Some(vec![0.8, 0.2]));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"nll\"") && json.contains("\"mode_weight_tv\""), "{json}");

        // A model that puts the weights the wrong way round: the KL is positive and matches
        // Σ_k w_k log(w_k / v_k) for well-separated components.
        struct Swapped;
        impl EnergyModel for Swapped {
            fn f(&self, x: &Tensor) -> Tensor {
                let flipped = x * Tensor::from_slice(&[-1.0f32, 1.0]).unsqueeze(0);
                Toy2d::TwoGaussians.log_density(&flipped).unwrap().unwrap()
            }
            fn event_shape(&self) -> Vec<i64> {
                vec![2]
            }
        }
        let (r, _) = evaluate_2d(&Swapped, &src, &test, &samples, &EvalOptions::default(), CPU).unwrap();
        let left = Vec::<f32>::try_from(&test.select(1, 0)).unwrap();
        let share = left.iter().filter(|v| **v < 0.0).count() as f64 / left.len() as f64;
        let want = share * (0.8f64 / 0.2).ln() + (1.0 - share) * (0.2f64 / 0.8).ln();
        assert!((r.kl.unwrap() - want).abs() < 1e-3, "{:?} vs {want}", r.kl);

        let bad = EvalOptions { grid_n: 1, ..EvalOptions::default() };
        assert!(evaluate_2d(&model, &src, &test, &samples, &bad, CPU).is_err());
    }
}
