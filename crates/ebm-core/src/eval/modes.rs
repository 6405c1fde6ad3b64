//! How samples spread over the components of a known mixture: [`mode_weights`].

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::check::check_input;
use crate::data::Modes;
use crate::error::{invalid, Result};

/// How samples spread over the components of a known mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeWeights {
    /// Share of all samples whose nearest centre is each component (sums to 1).
    pub shares: Vec<f64>,
    /// Total variation `½ Σ_k |shares_k - w_k|` against the true weights.
    pub tv: f64,
    /// Share of samples farther than `radius` from every centre (spurious modes, stray mass).
    pub far_share: f64,
    /// The radius used for `far_share`.
    pub radius: f64,
    /// `far_share` of exact samples from well-separated components: `exp(-radius² / (2σ²))`,
    /// the tail of a 2-D isotropic Gaussian.
    pub expected_far_share: f64,
}

/// Default radius for [`ModeWeights::far_share`], in units of the components' std.
pub const DEFAULT_FAR_STDS: f64 = 3.0;

/// Shares of `samples` nearest each centre of `modes`, their total-variation distance to the
/// true weights, and the share farther than `radius` (default `3 · modes.std`) from every centre.
///
/// # Shapes
/// `samples: [n, 2]`, `n ≥ 1`.
///
/// # Errors
/// If `samples` is not `[n, 2]` or is not finite; `modes` has no centres, a weight per centre
/// summing to 1, or a positive std; or `radius` is not finite and > 0.
pub fn mode_weights(samples: &Tensor, modes: &Modes, radius: Option<f64>) -> Result<ModeWeights> {
    check_input(&[2], samples, "mode-weight samples")?;
    let k = modes.centers.len();
    let wsum: f64 = modes.weights.iter().sum();
    if k == 0
        || modes.weights.len() != k
        || modes.weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
        || (wsum - 1.0).abs() > 1e-6
    {
        return Err(invalid(
            "modes",
            format!(
                "need ≥ 1 centre and one weight ≥ 0 per centre summing to 1, got {k} centres and \
                 weights {:?}",
                modes.weights
            ),
        ));
    }
    if !(modes.std.is_finite() && modes.std > 0.0) {
        return Err(invalid("modes.std", format!("must be finite and > 0, got {}", modes.std)));
    }
    let radius = radius.unwrap_or(DEFAULT_FAR_STDS * modes.std);
    if !(radius.is_finite() && radius > 0.0) {
        return Err(invalid("far radius", format!("must be finite and > 0, got {radius}")));
    }
    let flat: Vec<f64> = modes.centers.iter().flat_map(|c| [c[0], c[1]]).collect();
    let centers = Tensor::from_slice(&flat).f_reshape([k as i64, 2])?;
    let x = samples.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    let d2 =
        x.f_unsqueeze(1)?.f_sub(&centers.f_unsqueeze(0)?)?.f_square()?.f_sum_dim_intlist(2, false, Kind::Double)?;
    let (dmin, idx) = d2.f_min_dim(1, false)?;
    let dmin = Vec::<f64>::try_from(&dmin.f_contiguous()?)?;
    let idx = Vec::<i64>::try_from(&idx.f_contiguous()?)?;
    let n = idx.len() as f64;
    let mut counts = vec![0usize; k];
    for &i in &idx {
        counts[i as usize] += 1;
    }
    let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / n).collect();
    let tv = 0.5 * shares.iter().zip(&modes.weights).map(|(s, w)| (s - w).abs()).sum::<f64>();
    let r2 = radius * radius;
    let far_share = dmin.iter().filter(|&&d| d > r2).count() as f64 / n;
    let expected_far_share = (-r2 / (2.0 * modes.std * modes.std)).exp();
    Ok(ModeWeights { shares, tv, far_share, radius, expected_far_share })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Toy2d;

    #[test]
    fn mode_weights_exact_and_sampled() {
        let modes = Toy2d::TwoGaussians.modes().unwrap();
        let pts = Tensor::from_slice(&[-2.0f32, 0.0, -2.0, 0.1, 2.0, 0.0, 0.5, 5.0]).reshape([4, 2]);
        let mw = mode_weights(&pts, &modes, None).unwrap();
        assert_eq!(mw.shares, vec![0.5, 0.5]);
        assert_eq!(mw.far_share, 0.25);
        assert!((mw.radius - 0.9).abs() < 1e-12);
        assert!((mw.tv - 0.3).abs() < 1e-12);

        let x = Toy2d::TwoGaussians.sample(20_000, 5);
        let mw = mode_weights(&x, &modes, None).unwrap();
        assert!((mw.shares[0] - 0.8).abs() < 0.02 && (mw.shares[1] - 0.2).abs() < 0.02);
        assert!(mw.tv < 0.02, "{}", mw.tv);
        assert!((mw.expected_far_share - (-4.5f64).exp()).abs() < 1e-12);
        assert!((mw.far_share - mw.expected_far_share).abs() < 0.003, "{}", mw.far_share);

        let bad = Modes { centers: vec![[0.0, 0.0]], weights: vec![0.5], std: 0.1 };
        assert!(mode_weights(&x, &bad, None).is_err());
        assert!(mode_weights(&x, &modes, Some(-1.0)).is_err());
    }
}
