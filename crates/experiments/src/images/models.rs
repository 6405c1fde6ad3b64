//! The models of the methods that need more than [`ConvEnergy`]'s one output: [`ConvLogits`], JEM's
//! classifier-as-EBM, and the Gaussian baseline of the AIS tables ([`GaussianBaseline`]).

use anyhow::{bail, Result};
use ebm_core::energy::{ConvConfig, ConvEnergy, EnergyModel};
use tch::{nn, Kind, Tensor};

/// A conv classifier read as an EBM (JEM): [`ConvEnergy`] with `L` outputs, the logits `g(x)_y`
/// (its trunk, head and spectral normalisation as `model.spectral_norm` says). `f(x | y) = g(x)_y` and the
/// label-free `f(x) = logsumexp_y g(x)_y − log L` (the label marginal under a uniform prior, as
/// [`ebm_core::energy::ConditionalNet`] reads it). Unlike a `ConditionalNet`, whose marginal runs the network
/// once per label, the trunk runs once for all labels, for the marginal and for the logits alike.
#[derive(Debug)]
pub struct ConvLogits {
    net: ConvEnergy,
    labels: Vec<String>,
}

impl ConvLogits {
    /// Builds the network for `cfg` (its `in_channels` and `image_size` set from the data) and the label
    /// names, with its parameters under `path`.
    pub fn new(path: &nn::Path, cfg: &ConvConfig, labels: &[String]) -> Result<Self> {
        if labels.len() < 2 {
            bail!("jem needs a labelled data set with ≥ 2 classes, got {}", labels.len());
        }
        Ok(ConvLogits { net: ConvEnergy::with_outputs(path, cfg, labels.len() as i64)?, labels: labels.to_vec() })
    }

    /// The logits of every label.
    ///
    /// # Shapes
    /// `x: [B, C, H, W]` → `[B, L]`.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        self.net.outputs(x)
    }
}

impl EnergyModel for ConvLogits {
    /// The label marginal `logsumexp_y g(x)_y − log L`.
    ///
    /// # Shapes
    /// `x: [B, C, H, W]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        self.net.f(x)
    }

    /// `g(x)_y` for each row's label; without labels, the marginal (σ is ignored: not noise-conditional).
    ///
    /// # Shapes
    /// `x: [B, C, H, W]`, `labels: [B]` → `[B]`.
    fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, _sigma: Option<&Tensor>) -> Tensor {
        match labels {
            Some(l) => self.logits(x).gather(1, &l.unsqueeze(1), false).squeeze_dim(1),
            None => self.net.f(x),
        }
    }

    /// The logits, from one pass of the trunk.
    ///
    /// # Shapes
    /// `x: [B, C, H, W]` → `[B, L]`.
    fn f_all_labels(&self, x: &Tensor, _sigma: Option<&Tensor>) -> Tensor {
        self.logits(x)
    }

    fn label_names(&self) -> Vec<String> {
        self.labels.clone()
    }

    fn event_shape(&self) -> Vec<i64> {
        self.net.event_shape()
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.net.parameters()
    }
}

/// A full-covariance Gaussian `N(μ, Σ + r I)` fitted by maximum likelihood to flattened images: the baseline
/// every density model of the AIS table should beat. `r` (the ridge) keeps `Σ` invertible where pixels never
/// vary (the digits' corners); [`GaussianBaseline::dequantisation_ridge`] gives the natural choice for
/// quantised pixels.
#[derive(Debug)]
pub struct GaussianBaseline {
    /// `μ`, `[D]`, double.
    pub mean: Tensor,
    /// The lower Cholesky factor of `Σ + r I`, `[D, D]`, double.
    chol: Tensor,
    /// `log det (Σ + r I)`.
    pub log_det: f64,
    /// The ridge `r`.
    pub ridge: f64,
}

/// The log-likelihood of a test set under [`GaussianBaseline`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianLl {
    /// Mean log-density, nats per image.
    pub mean: f64,
    /// Standard deviation of the per-image log-density.
    pub sd: f64,
    /// Standard error of the mean, `sd / √N`.
    pub std_err: f64,
}

impl GaussianBaseline {
    /// `Δ²/12`, with `Δ` the smallest gap between two distinct pixel values of `x`: the variance that uniform
    /// dequantisation noise of one grey level adds to every pixel, so that `N(μ, Σ + Δ²/12 I)` is the
    /// maximum-likelihood Gaussian of the dequantised data (in expectation). `None` when all pixels are equal.
    ///
    /// # Shapes
    /// `x: [N, *event]`.
    pub fn dequantisation_ridge(x: &Tensor) -> Option<f64> {
        let v = x.flatten(0, -1).to_kind(Kind::Double).unique_dim(0, true, false, false).0;
        if v.size()[0] < 2 {
            return None;
        }
        let gap = f64::try_from((v.narrow(0, 1, v.size()[0] - 1) - v.narrow(0, 0, v.size()[0] - 1)).min()).ok()?;
        Some(gap * gap / 12.0)
    }

    /// Fits `μ` and the maximum-likelihood `Σ` (divided by N) to `x` and adds `ridge · I`.
    ///
    /// # Shapes
    /// `x: [N, *event]`, N ≥ 2.
    pub fn fit(x: &Tensor, ridge: f64) -> Result<Self> {
        let n = x.size()[0];
        if n < 2 {
            bail!("the Gaussian baseline needs ≥ 2 training images, got {n}");
        }
        if !(ridge > 0.0) || !ridge.is_finite() {
            bail!("eval.gaussian_ridge must be > 0, got {ridge}");
        }
        let x = x.reshape([n, -1]).to_kind(Kind::Double);
        let d = x.size()[1];
        let mean = x.mean_dim(&[0i64][..], false, Kind::Double);
        let c = &x - &mean;
        let cov = c.tr().matmul(&c) / n as f64 + Tensor::eye(d, (Kind::Double, x.device())) * ridge;
        let chol = cov.linalg_cholesky(false);
        let log_det = 2.0 * f64::try_from(chol.diagonal(0, 0, 1).log().sum(Kind::Double))?;
        Ok(GaussianBaseline { mean, chol, log_det, ridge })
    }

    /// `log N(x; μ, Σ + r I)` of every row.
    ///
    /// # Shapes
    /// `x: [N, *event]` → `[N]`, double.
    pub fn log_density(&self, x: &Tensor) -> Tensor {
        let n = x.size()[0];
        let c = x.reshape([n, -1]).to_kind(Kind::Double) - &self.mean;
        let d = c.size()[1] as f64;
        // z = L⁻¹ (x − μ), one column per row
        let z = self.chol.linalg_solve_triangular(&c.tr(), false, true, false);
        (z.square().sum_dim_intlist(0, false, Kind::Double) + d * (2.0 * std::f64::consts::PI).ln() + self.log_det)
            * -0.5
    }

    /// The mean log-density of `x` (nats per image) with its spread.
    ///
    /// # Shapes
    /// `x: [N, *event]`, N ≥ 1.
    pub fn test_ll(&self, x: &Tensor) -> Result<GaussianLl> {
        let lp = self.log_density(x);
        let n = lp.size()[0] as f64;
        let mean = f64::try_from(lp.mean(Kind::Double))?;
        let sd = if n > 1.0 { f64::try_from(lp.std(true))? } else { 0.0 };
        Ok(GaussianLl { mean, sd, std_err: sd / n.sqrt() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn gaussian_baseline_matches_the_closed_form_computed_by_hand() {
        // four 2-D points: μ = (1, 0.5), ML covariance [[1.625, 0.375], [0.375, 0.125]]
        let pts = [[-0.5f64, 0.0], [2.5, 1.0], [2.0, 0.5], [0.0, 0.5]];
        let x = Tensor::from_slice(&pts.concat()).view([4, 2]);
        let r = 0.1;
        let g = GaussianBaseline::fit(&x, r).unwrap();
        let mu = [1.0, 0.5];
        let mut s = [[0.0; 2]; 2];
        for p in &pts {
            for i in 0..2 {
                for j in 0..2 {
                    s[i][j] += (p[i] - mu[i]) * (p[j] - mu[j]) / 4.0;
                }
            }
        }
        assert!((s[0][0] - 1.625).abs() < 1e-12 && (s[0][1] - 0.375).abs() < 1e-12 && (s[1][1] - 0.125).abs() < 1e-12);
        let (a, b, d) = (s[0][0] + r, s[0][1], s[1][1] + r);
        let det = a * d - b * b;
        let test = [[1.0f64, 1.0], [3.0, -1.0]];
        let by_hand: Vec<f64> = test
            .iter()
            .map(|t| {
                let (u, v) = (t[0] - mu[0], t[1] - mu[1]);
                let q = (d * u * u - 2.0 * b * u * v + a * v * v) / det;
                -0.5 * (q + det.ln() + 2.0 * (2.0 * std::f64::consts::PI).ln())
            })
            .collect();
        let got = Vec::<f64>::try_from(g.log_density(&Tensor::from_slice(&test.concat()).view([2, 2]))).unwrap();
        for (h, g) in by_hand.iter().zip(&got) {
            assert!((h - g).abs() < 1e-10, "{h} vs {g}");
        }
        assert!((g.log_det - det.ln()).abs() < 1e-12);
        let ll = g.test_ll(&Tensor::from_slice(&test.concat()).view([2, 1, 1, 2])).unwrap();
        let m = (by_hand[0] + by_hand[1]) / 2.0;
        assert!((ll.mean - m).abs() < 1e-10);
        let sd = ((by_hand[0] - m).powi(2) + (by_hand[1] - m).powi(2)).sqrt();
        assert!((ll.sd - sd).abs() < 1e-10 && (ll.std_err - sd / 2f64.sqrt()).abs() < 1e-10);
        assert!(GaussianBaseline::fit(&x, 0.0).unwrap_err().to_string().contains("eval.gaussian_ridge"));
    }

    #[test]
    fn dequantisation_ridge_is_one_grey_level_squared_over_twelve() {
        // 17 grey levels on [-1, 1]: Δ = 1/8
        let x = Tensor::from_slice(&[-1.0f32, -0.875, 0.25, 1.0, 0.25]).view([5, 1]);
        let r = GaussianBaseline::dequantisation_ridge(&x).unwrap();
        assert!((r - 0.125f64.powi(2) / 12.0).abs() < 1e-12, "{r}");
        assert_eq!(GaussianBaseline::dequantisation_ridge(&Tensor::ones([3, 2], (Kind::Float, Device::Cpu))), None);
    }

    #[test]
    fn conv_logits_marginal_is_the_logsumexp_of_the_per_label_outputs() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConvConfig { in_channels: 1, image_size: [8, 8], channels: vec![4, 6], ..Default::default() };
        let names: Vec<String> = (0..3).map(|i| i.to_string()).collect();
        let m = ConvLogits::new(&vs.root(), &cfg, &names).unwrap();
        assert_eq!(vs.trainable_variables().len(), m.parameters().len());
        let x = Tensor::randn([5, 1, 8, 8], (Kind::Float, Device::Cpu));
        let g = m.logits(&x);
        assert_eq!(g.size(), vec![5, 3]);
        let per: Vec<Vec<f64>> = (0..3)
            .map(|l| {
                Vec::<f64>::try_from(m.f_given(&x, Some(&Tensor::full([5], l, (Kind::Int64, Device::Cpu))), None))
                    .unwrap()
            })
            .collect();
        let f = Vec::<f64>::try_from(m.f(&x)).unwrap();
        for i in 0..5 {
            let lse = (0..3).map(|l| per[l][i].exp()).sum::<f64>().ln() - 3f64.ln();
            assert!((f[i] - lse).abs() < 1e-5, "{} vs {lse}", f[i]);
        }
        // JEM's logits come from the one pass and equal the per-label reading
        let all = Vec::<Vec<f64>>::try_from(ebm_core::objective::jem::logits(&m, &x).to_kind(Kind::Double)).unwrap();
        for (l, col) in per.iter().enumerate() {
            for i in 0..5 {
                assert!((all[i][l] - col[i]).abs() < 1e-6);
            }
        }
        assert!(ConvLogits::new(&vs.root(), &cfg, &names[..1]).is_err());
        // spectral normalisation reaches the classifier: one power-iteration vector per weight
        let sn = nn::VarStore::new(Device::Cpu);
        let _ = ConvLogits::new(&sn.root(), &ConvConfig { spectral_norm: true, ..cfg }, &names).unwrap();
        assert_eq!(sn.variables().keys().filter(|k| k.ends_with("sn_u")).count(), 3);
    }
}
