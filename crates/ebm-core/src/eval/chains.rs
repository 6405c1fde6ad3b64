//! Convergence diagnostics of MCMC chains: effective sample size and split-R̂ (rank-normalised and
//! folded, Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021), per coordinate.
//!
//! Chains are `[T, C, D]`: `T` steps, `C` chains, `D` coordinates (a sampler's `[T, C, *event]` record
//! flattened), held in a [`Chains`] built from a row-major `f64` slice or a tensor.
//!
//! - ESS ([`Chains::ess`], [`Chains::ess_bulk`]): each chain is split in half (so a drift shows up as
//!   disagreement between halves), the multi-chain autocorrelation
//!   `ρ̂_k = 1 − (W − mean_c γ̂_{c,k}) / var⁺` is formed from the per-chain autocovariances
//!   `γ̂_{c,k} = (1/n) Σ_t (x_t − x̄_c)(x_{t+k} − x̄_c)`, truncated by Geyer's initial positive sequence
//!   (pairs `ρ̂_{2m} + ρ̂_{2m+1}` while positive) and made monotone (Geyer's initial monotone
//!   sequence), and `ESS = N / τ̂` with `τ̂ = −1 + 2 Σ_{k<K} ρ̂_k + ρ̂_K` (`N` = all draws, `K` the
//!   truncation lag; `τ̂ ≥ 1/log₁₀ N`). This is Stan's and the `posterior` package's estimator.
//!   [`Chains::ess`] uses the raw draws, [`Chains::ess_bulk`] the rank-normalised ones.
//! - R̂ ([`Chains::split_rhat`]): split each chain in half, rank-normalise all halves together (the
//!   average rank `r` of each draw among all `S` draws, `z = Φ⁻¹((r − 3/8)/(S + 1/4))`), then the classic
//!   `R̂ = √(var⁺ / W)` with `W` the mean within-chain variance and
//!   `var⁺ = (n−1)/n W + B/n`, `B/n` the variance of the chain means. The folded R̂ does the same to
//!   `|x − median(x)|` and detects chains that differ in scale; the reported R̂ is the larger of the two.
//!
//! Autocovariances are direct sums, computed lazily lag by lag until the Geyer sequence stops: the ESS of
//! one coordinate costs `O(C · T · K)` for truncation lag `K` (`K ≈` a few autocorrelation times; at
//! worst `T`, for chains that never mix). Rank normalisation sorts: `O(C T log(C T))` per coordinate.
//!
//! A coordinate whose draws are all equal has ESS and R̂ `NaN`; the maxima and minima over coordinates
//! are then `NaN` too (such chains cannot be called converged).

use crate::data::csv_points::median;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{invalid, EbmError, Result};

/// Draws of `C` chains over `T` steps in `D` coordinates, row-major `[T, C, D]`.
#[derive(Debug, Clone)]
pub struct Chains<'a> {
    data: Cow<'a, [f64]>,
    steps: usize,
    chains: usize,
    dims: usize,
}

/// Split-R̂ per coordinate and its maximum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rhat {
    /// Rank-normalised split-R̂ per coordinate, `[D]`.
    pub bulk: Vec<f64>,
    /// Rank-normalised split-R̂ of the folded draws `|x − median|` per coordinate, `[D]`.
    pub folded: Vec<f64>,
    /// `max(bulk, folded)` per coordinate, `[D]` (Vehtari et al.'s R̂).
    pub rhat: Vec<f64>,
    /// The largest `rhat` over coordinates (`NaN` if any is `NaN`).
    pub max: f64,
}

/// ESS and R̂ of a set of chains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainDiagnostics {
    /// Steps per chain `T`.
    pub steps: usize,
    /// Number of chains `C`.
    pub chains: usize,
    /// ESS of the raw draws per coordinate, `[D]` (see [`Chains::ess`]).
    pub ess: Vec<f64>,
    /// Bulk ESS (rank-normalised draws) per coordinate, `[D]`.
    pub ess_bulk: Vec<f64>,
    /// The smallest `ess` over coordinates.
    pub min_ess: f64,
    /// The smallest `ess_bulk` over coordinates.
    pub min_ess_bulk: f64,
    /// Split-R̂ (bulk, folded, their maximum) per coordinate, and the maximum over coordinates.
    pub rhat: Rhat,
}

impl<'a> Chains<'a> {
    /// Wraps row-major draws `data[(t · C + c) · D + d]`.
    ///
    /// # Shapes
    /// `data: [T, C, D]` flattened, `T ≥ 4` (each half-chain needs two draws), `C, D ≥ 1`.
    ///
    /// # Errors
    /// If the length is not `T · C · D`, a size is out of range, or a draw is NaN/Inf.
    pub fn new(data: &'a [f64], steps: usize, chains: usize, dims: usize) -> Result<Self> {
        Self::build(Cow::Borrowed(data), steps, chains, dims)
    }

    /// Copies a `[T, C, *event]` tensor (any float dtype and device) into `f64` chains, flattening the
    /// event dimensions to `D`.
    ///
    /// # Shapes
    /// `x: [T, C, *event]` with at least one event dimension, `T ≥ 4`, `C ≥ 1`.
    ///
    /// # Errors
    /// As [`Chains::new`], or if `x` has fewer than 3 dimensions.
    pub fn from_tensor(x: &Tensor) -> Result<Chains<'static>> {
        let size = x.size();
        if size.len() < 3 {
            return Err(EbmError::Shape {
                what: "chains".into(),
                expected: "[T, C, *event] (at least 3 dimensions)".into(),
                got: size,
            });
        }
        let dims: i64 = size[2..].iter().product();
        let flat = x.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?.f_reshape([-1])?;
        let data = Vec::<f64>::try_from(flat)?;
        Chains::build(Cow::Owned(data), size[0] as usize, size[1] as usize, dims as usize)
    }

    fn build(data: Cow<'a, [f64]>, steps: usize, chains: usize, dims: usize) -> Result<Self> {
        if steps < 4 {
            return Err(invalid("chains", format!("need T ≥ 4 steps (two per half-chain), got {steps}")));
        }
        if chains == 0 || dims == 0 {
            return Err(invalid("chains", format!("need C, D ≥ 1, got C = {chains}, D = {dims}")));
        }
        if data.len() != steps * chains * dims {
            return Err(invalid(
                "chains",
                format!("{} values do not fill [T, C, D] = [{steps}, {chains}, {dims}]", data.len()),
            ));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(EbmError::NonFinite("chains".into()));
        }
        Ok(Chains { data, steps, chains, dims })
    }

    /// Steps per chain `T`.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Number of chains `C`.
    pub fn chains(&self) -> usize {
        self.chains
    }

    /// Number of coordinates `D`.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The halves of every chain in coordinate `d`: `2C` series of `⌊T/2⌋` draws (an odd `T` drops the
    /// middle draw).
    fn split(&self, d: usize) -> Vec<Vec<f64>> {
        let half = self.steps / 2;
        let at = |t: usize, c: usize| self.data[(t * self.chains + c) * self.dims + d];
        let mut out = Vec::with_capacity(2 * self.chains);
        for c in 0..self.chains {
            out.push((0..half).map(|t| at(t, c)).collect());
            out.push((self.steps - half..self.steps).map(|t| at(t, c)).collect());
        }
        out
    }

    /// ESS of the raw draws per coordinate, on split chains (see the module docs).
    ///
    /// # Shapes
    /// → `[D]`.
    pub fn ess(&self) -> Vec<f64> {
        (0..self.dims).map(|d| ess_of(&self.split(d))).collect()
    }

    /// Bulk ESS per coordinate: the ESS of the rank-normalised split chains.
    ///
    /// # Shapes
    /// → `[D]`.
    pub fn ess_bulk(&self) -> Vec<f64> {
        (0..self.dims).map(|d| ess_of(&rank_normalise(&self.split(d)))).collect()
    }

    /// Rank-normalised split-R̂, bulk and folded, per coordinate (see the module docs).
    pub fn split_rhat(&self) -> Rhat {
        let mut bulk = Vec::with_capacity(self.dims);
        let mut folded = Vec::with_capacity(self.dims);
        for d in 0..self.dims {
            let split = self.split(d);
            bulk.push(rhat_of(&rank_normalise(&split)));
            let med = median(&mut split.iter().flatten().copied().collect::<Vec<f64>>());
            let fold: Vec<Vec<f64>> = split.iter().map(|s| s.iter().map(|v| (v - med).abs()).collect()).collect();
            folded.push(rhat_of(&rank_normalise(&fold)));
        }
        let rhat: Vec<f64> = bulk
            .iter()
            .zip(&folded)
            .map(|(b, f)| if b.is_nan() || f.is_nan() { f64::NAN } else { b.max(*f) })
            .collect();
        let max = extreme(&rhat, f64::max);
        Rhat { bulk, folded, rhat, max }
    }

    /// ESS (raw and bulk) and R̂ together.
    pub fn diagnose(&self) -> ChainDiagnostics {
        let ess = self.ess();
        let ess_bulk = self.ess_bulk();
        ChainDiagnostics {
            steps: self.steps,
            chains: self.chains,
            min_ess: extreme(&ess, f64::min),
            min_ess_bulk: extreme(&ess_bulk, f64::min),
            ess,
            ess_bulk,
            rhat: self.split_rhat(),
        }
    }
}

/// The max/min of `v` by `pick`, `NaN` if any entry is `NaN`.
fn extreme(v: &[f64], pick: fn(f64, f64) -> f64) -> f64 {
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.iter().copied().reduce(pick).unwrap_or(f64::NAN)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample variance (denominator `n − 1`).
fn sample_var(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
}

/// `(W, var⁺)` of equal-length chains: mean within-chain variance and the pooled variance estimate
/// `(n−1)/n W + B/n`.
fn within_and_pooled(chains: &[Vec<f64>]) -> (f64, f64) {
    let n = chains[0].len() as f64;
    let w = chains.iter().map(|c| sample_var(c)).sum::<f64>() / chains.len() as f64;
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    let b_over_n = if chains.len() > 1 { sample_var(&means) } else { 0.0 };
    (w, (n - 1.0) / n * w + b_over_n)
}

/// Classic R̂ `√(var⁺ / W)` of equal-length chains (`NaN` if `W = 0`).
fn rhat_of(chains: &[Vec<f64>]) -> f64 {
    let (w, var_plus) = within_and_pooled(chains);
    if !(w > 0.0) {
        return f64::NAN;
    }
    (var_plus / w).sqrt()
}

/// Replaces every draw by `Φ⁻¹((r − 3/8)/(S + 1/4))`, `r` its average rank (ties share it) among all
/// `S` draws of all chains.
fn rank_normalise(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = chains[0].len();
    let pooled: Vec<f64> = chains.iter().flatten().copied().collect();
    let s = pooled.len();
    let mut order: Vec<usize> = (0..s).collect();
    order.sort_by(|&a, &b| pooled[a].total_cmp(&pooled[b]));
    let mut z = vec![0.0; s];
    let mut i = 0;
    while i < s {
        let mut j = i + 1;
        while j < s && pooled[order[j]] == pooled[order[i]] {
            j += 1;
        }
        // 1-based ranks i+1 ..= j share their average.
        let rank = 0.5 * ((i + 1) + j) as f64;
        let q = normal_quantile((rank - 0.375) / (s as f64 + 0.25));
        for &k in &order[i..j] {
            z[k] = q;
        }
        i = j;
    }
    z.chunks(n).map(<[f64]>::to_vec).collect()
}

/// Multi-chain ESS with Geyer's initial monotone sequence (see the module docs), for equal-length
/// chains of at least 2 draws. `NaN` when every draw is equal.
fn ess_of(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains[0].len();
    let total = (m * n) as f64;
    let centred: Vec<Vec<f64>> = chains
        .iter()
        .map(|c| {
            let mu = mean(c);
            c.iter().map(|x| x - mu).collect()
        })
        .collect();
    // Mean over chains of the biased autocovariance at lag k: O(m n).
    let acov = |k: usize| -> f64 {
        centred.iter().map(|c| c[..n - k].iter().zip(&c[k..]).map(|(a, b)| a * b).sum::<f64>() / n as f64).sum::<f64>()
            / m as f64
    };
    let (w, var_plus) = within_and_pooled(chains);
    if !(var_plus > 0.0) {
        return f64::NAN;
    }
    let rho = |k: usize| 1.0 - (w - acov(k)) / var_plus;
    let mut rho_t = vec![0.0; n + 1];
    rho_t[0] = 1.0;
    let mut rho_even = 1.0;
    let mut rho_odd = if n > 1 { rho(1) } else { 0.0 };
    rho_t[1] = rho_odd;
    // Geyer's initial positive sequence: add pairs while their sum stays positive.
    let mut t = 0;
    while t + 5 < n && rho_even + rho_odd > 0.0 {
        t += 2;
        rho_even = rho(t);
        rho_odd = rho(t + 1);
        if rho_even + rho_odd >= 0.0 {
            rho_t[t] = rho_even;
            rho_t[t + 1] = rho_odd;
        }
    }
    let max_t = t;
    // The last even term, used in the improved (antithetic-safe) estimate.
    if rho_even > 0.0 {
        rho_t[max_t] = rho_even;
    }
    // Geyer's initial monotone sequence: no pair may exceed the pair before it.
    let mut t = 0;
    while t + 4 <= max_t {
        t += 2;
        let prev = rho_t[t - 2] + rho_t[t - 1];
        if rho_t[t] + rho_t[t + 1] > prev {
            rho_t[t] = prev / 2.0;
            rho_t[t + 1] = prev / 2.0;
        }
    }
    let tau = (-1.0 + 2.0 * rho_t[..max_t].iter().sum::<f64>() + rho_t[max_t]).max(1.0 / total.log10());
    total / tau
}

/// The standard normal quantile `Φ⁻¹(p)` for `p ∈ (0, 1)` (Wichura's AS 241, relative error ~1e-16).
pub fn normal_quantile(p: f64) -> f64 {
    fn poly(c: &[f64], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
    }
    const A: [f64; 8] = [
        3.387_132_872_796_366_6,
        1.331_416_678_917_843_8e2,
        1.971_590_950_306_551_3e3,
        1.373_169_376_550_946e4,
        4.592_195_393_154_987e4,
        6.726_577_092_700_87e4,
        3.343_057_558_358_813e4,
        2.509_080_928_730_122_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091e1,
        6.871_870_074_920_579e2,
        5.394_196_021_424_751e3,
        2.121_379_430_158_659_7e4,
        3.930_789_580_009_271e4,
        2.872_908_573_572_194_3e4,
        5.226_495_278_852_855e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_5,
        4.630_337_846_156_545,
        5.769_497_221_460_691,
        3.647_848_324_763_204_5,
        1.270_458_252_452_368_4,
        2.417_807_251_774_506e-1,
        2.272_384_498_926_918_4e-2,
        7.745_450_142_783_414e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_759,
        1.676_384_830_183_803_8,
        6.897_673_349_851e-1,
        1.481_039_764_274_800_8e-1,
        1.519_866_656_361_645_7e-2,
        5.475_938_084_995_345e-4,
        1.050_750_071_644_416_8e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_104,
        5.463_784_911_164_114,
        1.784_826_539_917_291_3,
        2.965_605_718_285_049e-1,
        2.653_218_952_657_612_4e-2,
        1.242_660_947_388_078_4e-3,
        2.711_555_568_743_487_6e-5,
        2.010_334_399_292_288_1e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879e-1,
        1.369_298_809_227_358e-1,
        1.487_536_129_085_061_5e-2,
        7.868_691_311_456_133e-4,
        1.846_318_317_510_054_8e-5,
        1.421_511_758_316_446e-7,
        2.044_263_103_389_939_7e-15,
    ];
    if !(p > 0.0 && p < 1.0) {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else if p == 1.0 {
            f64::INFINITY
        } else {
            f64::NAN
        };
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = if q < 0.0 { p } else { 1.0 - p };
    let r = (-r.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    /// `[T, C, D]` draws, each from `draw(rng, c, d)` in step order.
    fn draws(
        t: usize,
        c: usize,
        d: usize,
        seed: u64,
        mut next: impl FnMut(&mut StdRng, usize, usize) -> f64,
    ) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut v = Vec::with_capacity(t * c * d);
        for _ in 0..t {
            for ci in 0..c {
                for di in 0..d {
                    v.push(next(&mut rng, ci, di));
                }
            }
        }
        v
    }

    #[test]
    fn normal_quantile_matches_known_values_and_erfinv() {
        for (p, want) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.841_344_746_068_542_9, 1.0),
            (0.001, -3.090_232_306_167_813_5),
            (1e-10, -6.361_340_902_404_056),
        ] {
            let got = normal_quantile(p);
            // AS 241 is accurate to ~1e-16 relative; the reference values are quoted to ~16 digits.
            assert!((got - want).abs() < 1e-12 * want.abs().max(1.0), "Φ⁻¹({p}) = {got}, want {want}");
            // Symmetry where 1 − p is exact enough (its rounding, 1e-16/p relative, moves Φ⁻¹ by
            // ~1e-16/φ(Φ⁻¹(p)) < 1e-12 for p ≥ 1e-3).
            if p >= 1e-3 {
                assert!((normal_quantile(1.0 - p) + got).abs() < 1e-12, "symmetry at {p}");
            }
        }
        // Against libtorch's √2 erfinv(2p − 1) on a grid (away from the tails, where 2p − 1 is exact
        // enough): both are accurate to ~1e-15, 1e-12 allows for the erfinv argument's rounding.
        let ps: Vec<f64> = (1..200).map(|i| i as f64 / 200.0).collect();
        let t = (Tensor::from_slice(&ps) * 2.0 - 1.0).erfinv() * std::f64::consts::SQRT_2;
        let want = Vec::<f64>::try_from(t).unwrap();
        for (p, w) in ps.iter().zip(want) {
            assert!((normal_quantile(*p) - w).abs() < 1e-12, "Φ⁻¹({p}): {} vs {w}", normal_quantile(*p));
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert!(normal_quantile(1.5).is_nan());
    }

    #[test]
    fn ess_of_independent_draws_is_about_n() {
        let (t, c, d) = (4000, 4, 3);
        let v = draws(t, c, d, 1, |r, _, _| r.sample(StandardNormal));
        let ch = Chains::new(&v, t, c, d).unwrap();
        let n = (t * c) as f64;
        let diag = ch.diagnose();
        eprintln!(
            "iid: ess/n = {:?}, bulk/n = {:?}",
            diag.ess.iter().map(|e| e / n).collect::<Vec<_>>(),
            diag.ess_bulk.iter().map(|e| e / n).collect::<Vec<_>>()
        );
        // For independent draws τ̂ − 1 = 2 Σ_{k<K} ρ̂_k + … with each ρ̂_k ≈ N(0, 1/n) and K a few
        // lags, so sd(τ̂) ≈ 2√(K/n) ≈ 0.03 for n = 16 000: 10% is ≥ 3 sd.
        for e in diag.ess.iter().chain(&diag.ess_bulk) {
            assert!((e / n - 1.0).abs() < 0.1, "ESS {e} vs n = {n}");
        }
        // Well-mixed chains: R̂ ≈ 1 (its excess over 1 is O(1/n) here).
        eprintln!("iid: R̂ = {:?}", diag.rhat);
        assert!(diag.rhat.max < 1.01, "{:?}", diag.rhat);
    }

    #[test]
    fn ess_of_ar1_matches_closed_form() {
        let rho: f64 = 0.9;
        let (t, c) = (100_000, 4);
        let innov = (1.0 - rho * rho).sqrt();
        let mut state = vec![f64::NAN; c];
        let v = draws(t, c, 1, 2, |r, ci, _| {
            let e: f64 = r.sample(StandardNormal);
            // Start in the stationary law N(0, 1), then x ← ρx + √(1−ρ²) ε.
            state[ci] = if state[ci].is_nan() { e } else { rho * state[ci] + innov * e };
            state[ci]
        });
        let ch = Chains::new(&v, t, c, 1).unwrap();
        let n = (t * c) as f64;
        let want = n * (1.0 - rho) / (1.0 + rho);
        let ess = ch.ess()[0];
        let bulk = ch.ess_bulk()[0];
        eprintln!("AR(1) ρ = {rho}: ESS {ess:.0}, bulk {bulk:.0}, closed form {want:.0}, ratio {:.4}", ess / want);
        // Sokal's variance of a windowed τ̂: Var τ̂ / τ² ≈ 2(2K + 1)/N; with the window K ≈ 60 lags and
        // N = 400 000 that is a relative sd ≈ 2.5%, so 10% is 4 sd. (The bulk ESS is for the rank
        // transform, whose autocorrelation is slightly lower for a Gaussian AR(1), hence looser.)
        assert!((ess / want - 1.0).abs() < 0.1, "ESS {ess} vs {want}");
        assert!((bulk / want - 1.0).abs() < 0.15, "bulk ESS {bulk} vs {want}");
        assert!(ch.split_rhat().max < 1.01);
    }

    #[test]
    fn rhat_flags_chains_in_different_modes() {
        let (t, c) = (1000, 4);
        // Half the chains near −3, half near +3 (sd 0.1), in coordinate 0; coordinate 1 mixed.
        let v = draws(t, c, 2, 3, |r, ci, di| {
            let e: f64 = r.sample(StandardNormal);
            if di == 0 {
                if ci < c / 2 {
                    -3.0 + 0.1 * e
                } else {
                    3.0 + 0.1 * e
                }
            } else {
                e
            }
        });
        let ch = Chains::new(&v, t, c, 2).unwrap();
        let r = ch.split_rhat();
        eprintln!("stuck: {r:?}");
        assert!(r.rhat[0] > 1.1 && r.bulk[0] > 1.1, "{r:?}");
        assert!(r.rhat[1] < 1.01, "{r:?}");
        assert_eq!(r.max, r.rhat[0]);
        // Chains at the same place but of different scale (sd 1 and 3): the bulk R̂ barely sees it,
        // the folded one does.
        let v = draws(t, c, 1, 4, |r, ci, _| {
            let e: f64 = r.sample(StandardNormal);
            if ci % 2 == 0 {
                e
            } else {
                3.0 * e
            }
        });
        let r = Chains::new(&v, t, c, 1).unwrap().split_rhat();
        eprintln!("scales: {r:?}");
        assert!(r.bulk[0] < 1.01 && r.folded[0] > 1.1 && r.max == r.folded[0], "{r:?}");
        // A chain drifting within itself is caught by splitting it in half.
        let v: Vec<f64> = (0..t).map(|i| i as f64 / t as f64).collect();
        let r = Chains::new(&v, t, 1, 1).unwrap().split_rhat();
        assert!(r.max > 1.1, "{r:?}");
    }

    #[test]
    fn tensor_input_and_bad_inputs() {
        tch::manual_seed(5);
        let x = Tensor::randn([200, 3, 2, 2], (Kind::Float, Device::Cpu));
        let ch = Chains::from_tensor(&x).unwrap();
        assert_eq!((ch.steps(), ch.chains(), ch.dims()), (200, 3, 4));
        let flat = Vec::<f64>::try_from(x.to_kind(Kind::Double).reshape([-1])).unwrap();
        let same = Chains::new(&flat, 200, 3, 4).unwrap();
        assert_eq!(ch.diagnose(), same.diagnose());
        // Shapes and sizes.
        assert!(Chains::from_tensor(&Tensor::zeros([10, 3], (Kind::Float, Device::Cpu))).is_err());
        assert!(Chains::new(&flat, 200, 3, 3).is_err());
        assert!(Chains::new(&flat[..3 * 4 * 3], 3, 4, 3).is_err());
        assert!(Chains::new(&[], 4, 0, 1).is_err());
        // Non-finite draws.
        let mut bad = flat.clone();
        bad[17] = f64::NAN;
        assert!(matches!(Chains::new(&bad, 200, 3, 4), Err(EbmError::NonFinite(_))));
        bad[17] = f64::INFINITY;
        assert!(Chains::new(&bad, 200, 3, 4).is_err());
        // Constant draws: NaN, not a number that looks converged.
        let flat1 = vec![1.5; 40];
        let d = Chains::new(&flat1, 20, 2, 1).unwrap().diagnose();
        assert!(d.ess[0].is_nan() && d.rhat.max.is_nan() && d.min_ess.is_nan(), "{d:?}");
        // An odd T drops the middle draw: the halves are equal length.
        let odd = Chains::new(&flat[..199 * 12], 199, 3, 4).unwrap();
        assert!(odd.diagnose().rhat.max.is_finite());
    }
}
