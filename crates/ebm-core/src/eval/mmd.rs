//! Unbiased MMD² with an RBF kernel: [`mmd2_rbf`].

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::check::check_finite;
use crate::error::{invalid, Result};

/// Kernel-matrix entries computed per block in [`mmd2_rbf`].
const MMD_BLOCK: i64 = 1 << 22;
/// At most this many points of each sample enter the median heuristic.
const MEDIAN_POINTS: i64 = 1000;

/// An MMD² estimate and the kernel bandwidth it used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mmd {
    /// The unbiased MMD² estimate (can be slightly negative when the samples agree).
    pub mmd2: f64,
    /// The RBF bandwidth `ℓ` in `k(a, b) = exp(-‖a - b‖² / (2ℓ²))`.
    pub bandwidth: f64,
}

/// Unbiased MMD² between samples `x` and `y` with the RBF kernel
/// `k(a, b) = exp(-‖a - b‖² / (2ℓ²))`:
/// `Σ_{i≠j} k(x_i, x_j) / (n(n-1)) + Σ_{i≠j} k(y_i, y_j) / (m(m-1)) - 2 Σ_{i,j} k(x_i, y_j) / (nm)`.
///
/// `bandwidth = None` picks `ℓ` by the median heuristic: the (lower) median distance between
/// distinct pairs of the pooled samples (at most 1000 evenly spaced points of each enter it). If
/// that median is 0 (most points coincide) the root-mean-square distance is used, and 1 if that
/// is 0 too. Computed in `f64` on `x`'s device, in blocks.
///
/// # Shapes
/// `x: [n, *event]`, `y: [m, *event]` with the same trailing size, `n, m ≥ 2`; flattened to
/// `[n, D]`, `[m, D]`.
///
/// # Errors
/// If a sample has fewer than 2 points, the trailing sizes differ, a value is NaN/Inf, or the
/// bandwidth is not finite and > 0.
pub fn mmd2_rbf(x: &Tensor, y: &Tensor, bandwidth: Option<f64>) -> Result<Mmd> {
    let (xs, ys) = (x.size(), y.size());
    if xs.len() < 2 || ys.len() < 2 || xs[0] < 2 || ys[0] < 2 || xs[1..] != ys[1..] {
        return Err(invalid(
            "MMD samples",
            format!("need [n, ...] and [m, ...] with n, m ≥ 2 and equal trailing sizes, got {xs:?} and {ys:?}"),
        ));
    }
    check_finite(x, "MMD sample x")?;
    check_finite(y, "MMD sample y")?;
    if let Some(b) = bandwidth {
        if !(b.is_finite() && b > 0.0) {
            return Err(invalid("MMD bandwidth", format!("must be finite and > 0, got {b}")));
        }
    }
    let (n, m) = (xs[0], ys[0]);
    let dev = x.device();
    let x = x.f_to_kind(Kind::Double)?.f_reshape([n, -1])?;
    let y = y.f_to_device(dev)?.f_to_kind(Kind::Double)?.f_reshape([m, -1])?;
    tch::no_grad(|| {
        let ell = match bandwidth {
            Some(b) => b,
            None => median_distance(&x, &y)?,
        };
        let gamma = 0.5 / (ell * ell);
        let kxx = kernel_sum(&x, &x, gamma, true)?;
        let kyy = kernel_sum(&y, &y, gamma, true)?;
        let kxy = kernel_sum(&x, &y, gamma, false)?;
        let (nf, mf) = (n as f64, m as f64);
        let mmd2 = kxx / (nf * (nf - 1.0)) + kyy / (mf * (mf - 1.0)) - 2.0 * kxy / (nf * mf);
        Ok(Mmd { mmd2, bandwidth: ell })
    })
}

/// Squared distances `[a_rows, b_rows]` from precomputed squared norms.
fn sq_dists(a: &Tensor, a2: &Tensor, b: &Tensor, b2: &Tensor) -> Result<Tensor> {
    let cross = a.f_mm(&b.f_tr()?)?;
    Ok(a2.f_unsqueeze(1)?.f_add(&b2.f_unsqueeze(0)?)?.f_sub(&cross.f_mul_scalar(2.0)?)?.f_clamp_min(0.0)?)
}

/// `Σ_{i,j} exp(-γ‖a_i - b_j‖²)`, leaving out `i = j` when `skip_diag` (then `a` is `b`).
fn kernel_sum(a: &Tensor, b: &Tensor, gamma: f64, skip_diag: bool) -> Result<f64> {
    let (na, nb) = (a.size()[0], b.size()[0]);
    let a2 = a.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let b2 = b.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let rows = (MMD_BLOCK / nb).max(1);
    let mut total = 0.0;
    let mut s = 0;
    while s < na {
        let len = rows.min(na - s);
        let d2 = sq_dists(&a.f_narrow(0, s, len)?, &a2.f_narrow(0, s, len)?, b, &b2)?;
        let k = d2.f_mul_scalar(-gamma)?.f_exp()?;
        total += k.f_sum(Kind::Double)?.f_double_value(&[])?;
        if skip_diag {
            total -= k.f_diagonal(s, 0, 1)?.f_sum(Kind::Double)?.f_double_value(&[])?;
        }
        s += len;
    }
    Ok(total)
}

/// At most `MEDIAN_POINTS` evenly spaced rows of `t`.
fn thin(t: &Tensor) -> Result<Tensor> {
    let n = t.size()[0];
    if n <= MEDIAN_POINTS {
        return Ok(t.shallow_clone());
    }
    let idx: Vec<i64> = (0..MEDIAN_POINTS).map(|i| i * n / MEDIAN_POINTS).collect();
    Ok(t.f_index_select(0, &Tensor::from_slice(&idx).f_to_device(t.device())?)?)
}

/// Median distance between distinct pairs of the pooled (thinned) samples; see [`mmd2_rbf`].
fn median_distance(x: &Tensor, y: &Tensor) -> Result<f64> {
    let p = Tensor::f_cat(&[thin(x)?, thin(y)?], 0)?;
    let np = p.size()[0];
    let p2 = p.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let d2 = sq_dists(&p, &p2, &p, &p2)?;
    let mask = Tensor::f_ones([np, np], (Kind::Bool, p.device()))?.f_triu(1)?;
    let pairs = d2.f_masked_select(&mask)?;
    let med = pairs.f_median()?.f_double_value(&[])?;
    if med > 0.0 {
        return Ok(med.sqrt());
    }
    let mean = pairs.f_mean(Kind::Double)?.f_double_value(&[])?;
    Ok(if mean > 0.0 { mean.sqrt() } else { 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Toy2d;
    use tch::Device;

    const CPU: Device = Device::Cpu;

    #[test]
    fn mmd_exact_small_case() {
        // 1-D: x = {0, 1}, y = {0, 3}, ℓ = 1.
        let x = Tensor::from_slice(&[0.0f64, 1.0]).reshape([2, 1]);
        let y = Tensor::from_slice(&[0.0f64, 3.0]).reshape([2, 1]);
        let k = |d: f64| (-d * d / 2.0).exp();
        let want = k(1.0) + k(3.0) - 2.0 * (k(0.0) + k(3.0) + k(1.0) + k(2.0)) / 4.0;
        let got = mmd2_rbf(&x, &y, Some(1.0)).unwrap();
        assert!((got.mmd2 - want).abs() < 1e-12, "{} vs {want}", got.mmd2);
        // Median heuristic: pooled pair distances {1, 0, 3, 1, 2, 3}: lower median 1.
        let got = mmd2_rbf(&x, &y, None).unwrap();
        assert_eq!(got.bandwidth, 1.0);
        assert!((got.mmd2 - want).abs() < 1e-12);
        // Identical points everywhere: bandwidth falls back to 1 and MMD² is 0.
        let z = Tensor::zeros([3, 2], (Kind::Float, CPU));
        let got = mmd2_rbf(&z, &z, None).unwrap();
        assert_eq!((got.mmd2, got.bandwidth), (0.0, 1.0));
        // Errors.
        assert!(mmd2_rbf(&x.narrow(0, 0, 1), &y, None).is_err());
        assert!(mmd2_rbf(&x, &Tensor::zeros([4, 2], (Kind::Double, CPU)), None).is_err());
        assert!(mmd2_rbf(&x, &y, Some(0.0)).is_err());
        let nan = Tensor::from_slice(&[f64::NAN, 1.0]).reshape([2, 1]);
        assert!(mmd2_rbf(&x, &nan, None).is_err());
    }

    #[test]
    fn mmd_same_versus_different_distributions() {
        let a = Toy2d::EightGaussians.sample(1000, 1);
        let b = Toy2d::EightGaussians.sample(1000, 2);
        let same = mmd2_rbf(&a, &b, None).unwrap().mmd2;
        assert!(same.abs() < 1e-3, "same {same}");
        for (t, min) in [(Toy2d::Rings, 4e-3), (Toy2d::TwoGaussians, 0.1)] {
            let diff = mmd2_rbf(&a, &t.sample(1000, 3), None).unwrap().mmd2;
            assert!(diff > min && diff > 10.0 * same.abs(), "{t}: {diff} vs same {same}");
        }
        // 8 Gaussians and the 5×5 grid share mean and covariance: the median bandwidth (≈ 2.7)
        // barely tells them apart, a bandwidth at the modes' scale does.
        let c = Toy2d::Grid25.sample(1000, 3);
        let wide = mmd2_rbf(&a, &c, None).unwrap();
        assert!(wide.bandwidth > 2.0 && wide.mmd2 < 1e-3, "{wide:?}");
        let narrow_same = mmd2_rbf(&a, &b, Some(0.2)).unwrap().mmd2;
        let narrow_diff = mmd2_rbf(&a, &c, Some(0.2)).unwrap().mmd2;
        assert!(narrow_diff > 0.05 && narrow_diff > 20.0 * narrow_same.abs(), "{narrow_diff} vs {narrow_same}");
        // Higher-dimensional input is flattened: [n, 1, 2] works like [n, 2].
        let a3 = a.reshape([1000, 1, 2]);
        let b3 = b.reshape([1000, 1, 2]);
        assert!((mmd2_rbf(&a3, &b3, None).unwrap().mmd2 - same).abs() < 1e-12);
    }
}
