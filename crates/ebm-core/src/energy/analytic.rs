//! Analytic energies with closed forms (for tests, demos and checking estimators):
//! a Gaussian with full covariance and a Gaussian mixture.

use super::EnergyModel;
use crate::error::{invalid, Result};
use tch::{Device, Kind, Tensor};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// `N(μ, Σ)` with `f(x) = -½ (x-μ)ᵀ Σ⁻¹ (x-μ)` (unnormalised) and `log Z = ½ D log 2π + ½ log det Σ`.
///
/// Computations run in the input's dtype; parameters are kept in f64.
#[derive(Debug)]
pub struct Gaussian {
    mean: Tensor,
    precision: Tensor,
    log_det_cov: f64,
    dim: i64,
}

impl Gaussian {
    /// Builds `N(mean, cov)`; `cov` is row-major `D × D`, symmetric positive definite.
    pub fn new(mean: &[f64], cov: &[f64], device: Device) -> Result<Self> {
        let d = mean.len();
        if d == 0 {
            return Err(invalid("gaussian.mean", "must have at least one dimension"));
        }
        if cov.len() != d * d {
            return Err(invalid("gaussian.cov", format!("expected {d}×{d} = {} entries, got {}", d * d, cov.len())));
        }
        if mean.iter().chain(cov).any(|v| !v.is_finite()) {
            return Err(invalid("gaussian", "mean and covariance must be finite"));
        }
        let dim = d as i64;
        let cov_t = Tensor::from_slice(cov).view([dim, dim]).to_device(device);
        if f64::try_from((&cov_t - cov_t.transpose(0, 1)).abs().max())? > 1e-9 {
            return Err(invalid("gaussian.cov", "must be symmetric"));
        }
        let (chol, info) = cov_t.linalg_cholesky_ex(false, false);
        if i64::try_from(info)? != 0 {
            return Err(invalid("gaussian.cov", "must be positive definite"));
        }
        let log_det_cov = 2.0 * f64::try_from(chol.diagonal(0, 0, 1).log().sum(Kind::Double))?;
        let precision = cov_t.inverse();
        let mean = Tensor::from_slice(mean).to_device(device);
        Ok(Gaussian { mean, precision, log_det_cov, dim })
    }

    /// An isotropic Gaussian `N(mean, std² I)`.
    pub fn isotropic(mean: &[f64], std: f64, device: Device) -> Result<Self> {
        if !(std > 0.0) {
            return Err(invalid("gaussian.std", format!("must be > 0, got {std}")));
        }
        let d = mean.len();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            cov[i * d + i] = std * std;
        }
        Self::new(mean, &cov, device)
    }

    /// `log Z = ½ D log 2π + ½ log det Σ`, so that `log p(x) = f(x) - log Z`.
    pub fn log_z(&self) -> f64 {
        0.5 * self.dim as f64 * LN_2PI + 0.5 * self.log_det_cov
    }

    /// The mean μ, shape `[D]` (f64).
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The precision Σ⁻¹, shape `[D, D]` (f64).
    pub fn precision(&self) -> &Tensor {
        &self.precision
    }

    /// The exact score `-Σ⁻¹ (x - μ)`.
    ///
    /// # Shapes
    /// `x: [B, D]` → `[B, D]`.
    pub fn exact_score(&self, x: &Tensor) -> Tensor {
        let k = x.kind();
        let d = x - self.mean.to_kind(k);
        -d.matmul(&self.precision.to_kind(k))
    }

    /// The exact Hessian trace `-tr Σ⁻¹` (the same at every x).
    pub fn exact_laplacian(&self) -> f64 {
        -f64::try_from(self.precision.trace()).unwrap_or(f64::NAN)
    }

    /// The normalised log-density `log N(x; μ, Σ)`.
    ///
    /// # Shapes
    /// `x: [B, D]` → `[B]`.
    pub fn log_prob(&self, x: &Tensor) -> Tensor {
        self.f(x) - self.log_z()
    }
}

impl EnergyModel for Gaussian {
    /// # Shapes
    /// `x: [B, D]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let k = x.kind();
        let d = x - self.mean.to_kind(k);
        (d.matmul(&self.precision.to_kind(k)) * &d).sum_dim_intlist(-1, false, k) * -0.5
    }

    fn event_shape(&self) -> Vec<i64> {
        vec![self.dim]
    }
}

/// A Gaussian mixture `Σ_k w_k N(μ_k, Σ_k)` with `f(x) = log p(x)` (normalised: `log Z = 0`).
#[derive(Debug)]
pub struct GaussianMixture {
    components: Vec<Gaussian>,
    log_weights: Vec<f64>,
    weights: Vec<f64>,
    dim: i64,
}

impl GaussianMixture {
    /// Builds the mixture; `weights` must be positive (they are normalised to sum to 1).
    pub fn new(weights: &[f64], components: Vec<Gaussian>) -> Result<Self> {
        if components.is_empty() || weights.len() != components.len() {
            return Err(invalid(
                "mixture.weights",
                format!("need one weight per component: {} weights, {} components", weights.len(), components.len()),
            ));
        }
        if weights.iter().any(|w| !(*w > 0.0) || !w.is_finite()) {
            return Err(invalid("mixture.weights", format!("must be positive and finite, got {weights:?}")));
        }
        let dim = components[0].dim;
        if components.iter().any(|c| c.dim != dim) {
            return Err(invalid("mixture.components", "all components must have the same dimension"));
        }
        let total: f64 = weights.iter().sum();
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        Ok(GaussianMixture { components, log_weights, weights, dim })
    }

    /// Isotropic components `N(μ_k, std² I)` with the given weights.
    pub fn isotropic(weights: &[f64], means: &[Vec<f64>], std: f64, device: Device) -> Result<Self> {
        let comps = means.iter().map(|m| Gaussian::isotropic(m, std, device)).collect::<Result<Vec<_>>>()?;
        Self::new(weights, comps)
    }

    /// The normalised mixture weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The components.
    pub fn components(&self) -> &[Gaussian] {
        &self.components
    }

    /// Always 0: `f` is the normalised log-density.
    pub fn log_z(&self) -> f64 {
        0.0
    }
}

impl EnergyModel for GaussianMixture {
    /// # Shapes
    /// `x: [B, D]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let per: Vec<Tensor> =
            self.components.iter().zip(&self.log_weights).map(|(c, lw)| c.log_prob(x) + *lw).collect();
        Tensor::stack(&per, 1).logsumexp([1], false)
    }

    fn event_shape(&self) -> Vec<i64> {
        vec![self.dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_log_prob_matches_closed_form() {
        // Σ = [[2, 0.5], [0.5, 1]], det = 1.75, Σ⁻¹ = [[1, -0.5], [-0.5, 2]] / 1.75
        let g = Gaussian::new(&[1.0, -1.0], &[2.0, 0.5, 0.5, 1.0], Device::Cpu).unwrap();
        let x = Tensor::from_slice(&[2.0f64, 0.0]).view([1, 2]);
        // d = (1, 1): dᵀ Σ⁻¹ d = (1 - 0.5 - 0.5 + 2) / 1.75 = 2 / 1.75
        let want = -0.5 * 2.0 / 1.75 - (LN_2PI + 0.5 * 1.75f64.ln());
        let got = f64::try_from(g.log_prob(&x).squeeze()).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((g.exact_laplacian() + 3.0 / 1.75).abs() < 1e-12);
    }

    #[test]
    fn mixture_is_normalised_logsumexp() {
        let m = GaussianMixture::isotropic(&[0.8, 0.2], &[vec![-2.0], vec![2.0]], 0.5, Device::Cpu).unwrap();
        let x = Tensor::from_slice(&[0.3f64]).view([1, 1]);
        let n = |mu: f64| (-(0.3f64 - mu).powi(2) / (2.0 * 0.25)).exp() / (2.0 * std::f64::consts::PI * 0.25).sqrt();
        let want = (0.8 * n(-2.0) + 0.2 * n(2.0)).ln();
        let got = f64::try_from(m.f(&x).squeeze()).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(Gaussian::new(&[0.0, 0.0], &[1.0, 2.0, 2.0, 1.0], Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("positive definite"));
        assert!(Gaussian::new(&[0.0, 0.0], &[1.0, 0.0, 0.5, 1.0], Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("symmetric"));
        assert!(Gaussian::new(&[0.0], &[1.0, 0.0], Device::Cpu).is_err());
        assert!(GaussianMixture::isotropic(&[1.0, -1.0], &[vec![0.0], vec![1.0]], 1.0, Device::Cpu).is_err());
    }
}
