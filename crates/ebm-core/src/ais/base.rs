//! A data-fitted AIS base on a box: a mixture of diagonal Gaussians, each truncated to `[low, high]^D`.
//!
//! Every component factorises over the `D` coordinates, so its normaliser on the box is exact, a product of
//! one-dimensional terms `Φ(β) - Φ(α)` with `α = (low - μ)/s`, `β = (high - μ)/s`, and so is sampling (pick a
//! component, then invert each coordinate's CDF). With one component this is the per-pixel truncated Gaussian
//! of the training images; with one component per class it also follows the data's modes.

use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// A mixture of `K` diagonal Gaussians truncated to the box `[low, high]^D`, on the flattened event (`D` =
/// the number of elements of one sample). Build it with [`BoxGaussians::new`] or [`BoxGaussians::fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxGaussians {
    /// Lower bound of every coordinate.
    pub low: f64,
    /// Upper bound of every coordinate.
    pub high: f64,
    /// Mixture weights `[K]` (positive; normalised on use).
    pub weights: Vec<f64>,
    /// Component means `[K][D]`, inside the box.
    pub means: Vec<Vec<f64>>,
    /// Component standard deviations `[K][D]` (of the Gaussian before truncation), all > 0.
    pub stds: Vec<Vec<f64>>,
}

impl BoxGaussians {
    /// Checks the shapes and values (see [`BoxGaussians::validate`]).
    pub fn new(low: f64, high: f64, weights: Vec<f64>, means: Vec<Vec<f64>>, stds: Vec<Vec<f64>>) -> Result<Self> {
        let b = BoxGaussians { low, high, weights, means, stds };
        b.validate()?;
        Ok(b)
    }

    /// Fits the mixture to `x: [N, *event]` (values in the box): with `labels` (`N` values in `0..K`), one
    /// component per label with weight its share of `x`; without, one component. Each component's mean and
    /// standard deviation per coordinate are those of its rows, the standard deviation then multiplied by
    /// `std_scale` and raised to at least `min_std` (constant coordinates, such as the digits' corners, would
    /// otherwise have none).
    pub fn fit(x: &Tensor, labels: Option<&[i64]>, low: f64, high: f64, min_std: f64, std_scale: f64) -> Result<Self> {
        if !(min_std > 0.0) || !min_std.is_finite() || !(std_scale > 0.0) || !std_scale.is_finite() {
            return Err(invalid(
                "ais.base",
                format!("needs min_std > 0 and std_scale > 0, got {min_std}, {std_scale}"),
            ));
        }
        let n = x.size()[0];
        if n < 1 {
            return Err(invalid("ais.base", "fitting needs at least one row"));
        }
        let flat = x.reshape([n, -1]).to_kind(Kind::Double).to_device(Device::Cpu);
        let groups: Vec<Tensor> = match labels {
            None => vec![flat],
            Some(l) => {
                if l.len() as i64 != n {
                    return Err(invalid("ais.base", format!("{} labels for {n} rows", l.len())));
                }
                if let Some(bad) = l.iter().find(|&&v| v < 0) {
                    return Err(invalid("ais.base", format!("labels must be ≥ 0, got {bad}")));
                }
                let k = l.iter().copied().max().unwrap_or(0) + 1;
                let lt = Tensor::from_slice(l);
                let mut g = Vec::new();
                for c in 0..k {
                    let idx = lt.eq(c).nonzero().squeeze_dim(1);
                    if idx.size()[0] > 0 {
                        g.push(flat.index_select(0, &idx));
                    }
                }
                g
            }
        };
        let (mut weights, mut means, mut stds) = (Vec::new(), Vec::new(), Vec::new());
        for g in &groups {
            let m = g.mean_dim(0, false, Kind::Double);
            let s = (g - &m).square().mean_dim(0, false, Kind::Double).sqrt() * std_scale;
            weights.push(g.size()[0] as f64 / n as f64);
            means.push(Vec::<f64>::try_from(m)?.into_iter().map(|v| v.clamp(low, high)).collect());
            stds.push(Vec::<f64>::try_from(s.clamp_min(min_std))?);
        }
        Self::new(low, high, weights, means, stds)
    }

    /// Components `K`.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// Coordinates `D`.
    pub fn dim(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// Checks: finite `low < high`; `K ≥ 1` positive finite weights; `K` means and `K` stds of one length
    /// `D ≥ 1`; means in the box; stds > 0 and finite.
    pub fn validate(&self) -> Result<()> {
        let (low, high) = (self.low, self.high);
        if !low.is_finite() || !high.is_finite() || !(low < high) {
            return Err(invalid(
                "ais.base",
                format!("truncated gaussians need finite low < high, got [{low}, {high}]"),
            ));
        }
        let k = self.weights.len();
        if k == 0 || self.means.len() != k || self.stds.len() != k {
            return Err(invalid(
                "ais.base",
                format!(
                    "needs K ≥ 1 weights, means and stds alike, got {k}, {}, {}",
                    self.means.len(),
                    self.stds.len()
                ),
            ));
        }
        if let Some(w) = self.weights.iter().find(|w| !(**w > 0.0) || !w.is_finite()) {
            return Err(invalid("ais.base", format!("mixture weights must be > 0 and finite, got {w}")));
        }
        let d = self.dim();
        if d == 0 || self.means.iter().chain(&self.stds).any(|v| v.len() != d) {
            return Err(invalid("ais.base", "every mean and std needs the same length D ≥ 1"));
        }
        if let Some(m) = self.means.iter().flatten().find(|m| !(**m >= low && **m <= high)) {
            return Err(invalid("ais.base", format!("means must lie in the box [{low}, {high}], got {m}")));
        }
        if let Some(s) = self.stds.iter().flatten().find(|s| !(**s > 0.0) || !s.is_finite()) {
            return Err(invalid("ais.base", format!("stds must be > 0 and finite, got {s}")));
        }
        Ok(())
    }

    /// `log p₀(x)` per row of `x: [B, *event]` inside the box (`f64`, `[B]`).
    pub fn log_prob(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.prepare(x.device()).log_prob_and_grad(x).0)
    }

    /// The tensors of the mixture on `device` (all `f64`), for [`BoxGaussians::sample`] and
    /// [`BoxGaussians::log_prob_and_grad`].
    pub(super) fn prepare(&self, device: Device) -> Prepared {
        let (k, d) = (self.components() as i64, self.dim() as i64);
        let mean = Tensor::from_slice(&self.means.concat()).view([k, d]).to_device(device);
        let std = Tensor::from_slice(&self.stds.concat()).view([k, d]).to_device(device);
        let cdf_lo = ((-&mean + self.low) / &std).special_ndtr();
        let cdf_hi = ((-&mean + self.high) / &std).special_ndtr();
        // log of each coordinate's mass on [low, high]; means lie inside, so Φ(β) ≥ ½ ≥ Φ(α) and no cancellation
        let log_mass = (&cdf_hi - &cdf_lo).log();
        let w = Tensor::from_slice(&self.weights).to_device(device);
        let w = &w / w.sum(Kind::Double);
        // log w_k - Σ_i (log s_ki + ½ log 2π + log mass_ki): everything of log p_k but the quadratic term
        let log_c = w.log() - (std.log() + 0.5 * LN_2PI + log_mass).sum_dim_intlist(1, false, Kind::Double);
        let prec = std.square().reciprocal();
        let mean_prec = &mean * &prec;
        let mean_sq_prec = (&mean * &mean_prec).sum_dim_intlist(1, false, Kind::Double);
        Prepared { low: self.low, high: self.high, mean, std, cdf_lo, cdf_hi, w, log_c, prec, mean_prec, mean_sq_prec }
    }
}

/// [`BoxGaussians`] as tensors on a device: `mean`, `std`, `cdf_lo = Φ(α)`, `cdf_hi = Φ(β)` `[K, D]` and
/// the normalised weights `w` and `log_c` `[K]`, all `f64`.
pub(super) struct Prepared {
    low: f64,
    high: f64,
    mean: Tensor,
    std: Tensor,
    cdf_lo: Tensor,
    cdf_hi: Tensor,
    w: Tensor,
    log_c: Tensor,
    /// `1/s²`, `μ/s²` `[K, D]` and `Σ_d μ²/s²` `[K]`.
    prec: Tensor,
    mean_prec: Tensor,
    mean_sq_prec: Tensor,
}

impl Prepared {
    /// `n` exact samples, `[n, *event]` (`f32`, inside the box).
    pub(super) fn sample(&self, n: i64, event: &[i64]) -> Tensor {
        let comp = if self.w.size()[0] == 1 {
            Tensor::zeros([n], (Kind::Int64, self.mean.device()))
        } else {
            self.w.multinomial(n, true)
        };
        let (lo, hi) = (self.cdf_lo.index_select(0, &comp), self.cdf_hi.index_select(0, &comp));
        let u = lo.rand_like();
        let p = &lo + u * (&hi - &lo);
        let x = self.mean.index_select(0, &comp) + self.std.index_select(0, &comp) * p.special_ndtri();
        let mut shape = vec![n];
        shape.extend_from_slice(event);
        x.clamp(self.low, self.high).to_kind(Kind::Float).view(shape.as_slice())
    }

    /// `log p₀(x)` `[B]` (`f64`) and its gradient (shaped and typed like `x`), for `x` inside the box.
    ///
    /// With `P = 1/s²` `[K, D]`, the quadratic terms are matrix products, `Σ_d P_kd (x_d - μ_kd)² = x² Pᵀ -
    /// 2 x (μP)ᵀ + Σ_d μ²P`, and so is the gradient `Σ_k r_k P_k (μ_k - x) = R (μP) - x ⊙ (R P)` with `R [B, K]`
    /// the responsibilities: `O(B K D)` multiply-adds with no `[B, K, D]` tensor (a kernel density base has
    /// thousands of components).
    pub(super) fn log_prob_and_grad(&self, x: &Tensor) -> (Tensor, Tensor) {
        let b = x.size()[0];
        let v = x.reshape([b, -1]).to_kind(Kind::Double); // [B, D]
        let quad = (v.square().matmul(&self.prec.tr()) - v.matmul(&self.mean_prec.tr()) * 2.0
            + self.mean_sq_prec.unsqueeze(0))
        .clamp_min(0.0); // [B, K], ≥ 0 up to rounding
        let lpk = quad * -0.5 + self.log_c.unsqueeze(0);
        let lp = lpk.logsumexp([1], false);
        let resp = lpk.softmax(1, Kind::Double); // [B, K]
        let grad = resp.matmul(&self.mean_prec) - &v * resp.matmul(&self.prec);
        (lp, grad.to_kind(x.kind()).view(x.size().as_slice()))
    }
}
