//! Annealed importance sampling (Neal 2001) for `log Z = log ∫ exp(f(x)) dx`, and with it test
//! log-likelihoods `log p(x) = f(x) - log Z`, for models whose `Z` has no closed form.
//!
//! Chains start from a normalised base `p₀` (a Gaussian; uniform on a box; or a mixture of diagonal Gaussians
//! truncated to a box, fitted to the data so that it starts close to the model, [`BoxGaussians`]) and move through the
//! geometric path `log πₜ(x) = (1-βₜ) log p₀(x) + βₜ f(x)`, `0 = β₀ < β₁ < … < β_K = 1`, with MALA (or
//! unadjusted Langevin) transitions that target each `πₜ`. Each chain carries the log-weight
//! `Σₜ (βₜ - βₜ₋₁) (f(xₜ₋₁) - log p₀(xₜ₋₁))`, and `Z ≈ mean exp(log w)` is unbiased (so `log Z` is a
//! stochastic lower bound, by Jensen). More intermediate distributions lower the variance of the log-weights.
//!
//! With a base on a box `[low, high]^D` (uniform or truncated Gaussians), every `πₜ` lives on the box (MALA
//! rejects proposals outside it, unadjusted Langevin clamps them; or, with [`BoxMoves::Tanh`], the chains move
//! in `atanh` coordinates where the box has no faces), and the estimate is of
//! `∫_box exp f`: the model restricted to the box, which is the natural density for images whose samples
//! are clamped to the data range.
//!
//! [`ais_path`] runs the chains through a path of models instead, `p₀ → m_1 → … → m_S` (geometric bridges
//! between neighbours), for a model too sharp to reach from any base in one bridge; [`ais`]
//! is the path of one model.

use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

mod base;
mod chart;
mod path;
mod resample;

pub use base::BoxGaussians;
pub use chart::BoxMoves;
pub use path::{ais_path, stage_steps, AisStage};

/// The normalised start distribution `p₀`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AisBase {
    /// `N(mean, std² I)`.
    Gaussian {
        /// Mean of every coordinate.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform on `[low, high]^D`; transitions never leave the box.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// A mixture of diagonal Gaussians truncated to the box `[low, high]^D` (typically fitted to the data with
    /// [`BoxGaussians::fit`]); exact normaliser and samples; transitions never leave the box.
    TruncatedGaussians(BoxGaussians),
}

impl AisBase {
    fn validate(&self) -> Result<()> {
        match *self {
            AisBase::Gaussian { mean, std } if !mean.is_finite() || !(std > 0.0) || !std.is_finite() => {
                Err(invalid("ais.base", format!("gaussian needs a finite mean and std > 0, got N({mean}, {std}²)")))
            }
            AisBase::Uniform { low, high } if !low.is_finite() || !high.is_finite() || !(low < high) => {
                Err(invalid("ais.base", format!("uniform needs finite low < high, got [{low}, {high}]")))
            }
            AisBase::TruncatedGaussians(ref b) => b.validate(),
            _ => Ok(()),
        }
    }

    /// The box the chains stay in, if any.
    fn bounds(&self) -> Option<(f64, f64)> {
        match *self {
            AisBase::Gaussian { .. } => None,
            AisBase::Uniform { low, high } => Some((low, high)),
            AisBase::TruncatedGaussians(ref b) => Some((b.low, b.high)),
        }
    }

    /// The base with its tensors on `device`; checks that a truncated mixture has `D` = the event's size.
    fn prepare(&self, event: &[i64], device: Device) -> Result<Base<'_>> {
        let tg = match self {
            AisBase::TruncatedGaussians(b) => {
                let d: i64 = event.iter().product();
                if b.dim() as i64 != d {
                    return Err(invalid(
                        "ais.base",
                        format!("truncated gaussians of dimension {} for a model of {d} ({event:?})", b.dim()),
                    ));
                }
                Some(b.prepare(device))
            }
            _ => None,
        };
        Ok(Base { cfg: self, tg })
    }
}

/// An [`AisBase`] ready to use: a truncated mixture's tensors live on the device.
struct Base<'a> {
    cfg: &'a AisBase,
    tg: Option<base::Prepared>,
}

impl Base<'_> {
    fn sample(&self, n: i64, event: &[i64], device: Device) -> Tensor {
        let mut shape = vec![n];
        shape.extend_from_slice(event);
        let opts = (Kind::Float, device);
        match (self.cfg, &self.tg) {
            (_, Some(tg)) => tg.sample(n, event),
            (&AisBase::Gaussian { mean, std }, _) => Tensor::randn(shape.as_slice(), opts) * std + mean,
            (&AisBase::Uniform { low, high }, _) => Tensor::rand(shape.as_slice(), opts) * (high - low) + low,
            (AisBase::TruncatedGaussians(_), None) => unreachable!("prepare() fills tg"),
        }
    }

    /// `log p₀(x)` per sample and its gradient (the gradient shaped and typed like `x`; the value `f32`, or
    /// `f64` for truncated Gaussians); on a box, for `x` inside it (callers keep chains inside). The uniform
    /// base's value is the constant inside the box and its gradient zero.
    fn log_prob_and_grad(&self, x: &Tensor) -> (Tensor, Tensor) {
        let b = x.size()[0];
        let d = x.numel() as i64 / b.max(1);
        match (self.cfg, &self.tg) {
            (_, Some(tg)) => tg.log_prob_and_grad(x),
            (&AisBase::Gaussian { mean, std }, _) => {
                let z = (x - mean) / std;
                let lp = z.reshape([b, -1]).square().sum_dim_intlist(1, false, Kind::Float) * -0.5
                    - d as f64 * (0.5 * LN_2PI + std.ln());
                (lp, z / -std)
            }
            (&AisBase::Uniform { low, high }, _) => {
                (Tensor::full([b], -(d as f64) * (high - low).ln(), (Kind::Float, x.device())), x.zeros_like())
            }
            (AisBase::TruncatedGaussians(_), None) => unreachable!("prepare() fills tg"),
        }
    }

    /// `[B]` bool: which rows lie in the support (`None`: all of `R^D`).
    fn inside(&self, x: &Tensor) -> Option<Tensor> {
        let (low, high) = self.cfg.bounds()?;
        let b = x.size()[0];
        let v = x.reshape([b, -1]);
        Some(v.ge(low).logical_and(&v.le(high)).all_dim(1, false))
    }
}

/// The inverse temperatures `β₀ = 0 < … < β_K = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Evenly spaced.
    Linear,
    /// Sigmoid spacing (Grosse et al. 2015): `σ(δ(2t/K - 1))`, rescaled to run from 0 to 1; dense at both ends.
    Sigmoid {
        /// Steepness δ (4 is typical).
        delta: f64,
    },
    /// `(t/K)^p`: dense near β = 0 for `p > 1`, where the distributions change fastest.
    Power {
        /// The exponent p.
        p: f64,
    },
}

impl Schedule {
    /// The `K + 1` values `β₀ = 0, …, β_K = 1`.
    pub fn betas(&self, k: usize) -> Vec<f64> {
        let t = |i: usize| i as f64 / k as f64;
        match *self {
            Schedule::Linear => (0..=k).map(t).collect(),
            Schedule::Power { p } => (0..=k).map(|i| t(i).powf(p)).collect(),
            Schedule::Sigmoid { delta } => {
                let s = |u: f64| 1.0 / (1.0 + (-delta * (2.0 * u - 1.0)).exp());
                let (lo, hi) = (s(0.0), s(1.0));
                (0..=k).map(|i| ((s(t(i)) - lo) / (hi - lo)).clamp(0.0, 1.0)).collect()
            }
        }
    }
}

/// The transition kernel run at each intermediate distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AisTransition {
    /// MALA (exactly invariant for each `πₜ`, so the estimate is unbiased).
    Mala {
        /// Initial step size ε (`y = x + ε∇log π + √(2ε) z`).
        step_size: f64,
        /// When set, ε is multiplied by 1.03 or 1/1.03 after each sweep so that the acceptance rate moves
        /// to this target (each kernel still leaves its `πₜ` invariant).
        target_accept: Option<f64>,
    },
    /// Unadjusted Langevin at a fixed ε (cheaper; biased by ε).
    Langevin {
        /// Step size ε.
        step_size: f64,
    },
}

/// AIS settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AisConfig {
    /// Independent chains (importance samples).
    pub chains: usize,
    /// Intermediate distributions K.
    pub steps: usize,
    /// Transition sweeps per intermediate distribution.
    pub sweeps: usize,
    /// The spacing of the βs.
    pub schedule: Schedule,
    /// The start distribution.
    pub base: AisBase,
    /// The transition kernel.
    pub transition: AisTransition,
    /// Resample the chains when their weights degenerate (an SMC sampler, Del Moral et al. 2006); `None`:
    /// plain AIS.
    pub resample: Option<Resample>,
    /// With a base on a box: the chains move in `x` and MALA rejects proposals that leave the box (`reject`),
    /// or they move in `u = atanh(…)` where the box has no faces (`tanh`; same `log Z`, see [`BoxMoves`]).
    pub box_moves: BoxMoves,
}

/// Resampling (sequential Monte Carlo): the chains are split into `groups` independent populations; when
/// the effective sample size of a group's weights falls below `ess_fraction` of its chains, its running
/// `log Ẑ` takes the log-mean of its weights, its chains are redrawn in proportion to their weights
/// (multinomial) and their weights reset. Each group's `Ẑ` stays unbiased, and the spread of the groups'
/// estimates gives an honest standard error (the weights of one population after resampling do not).
/// It helps when chains settle into modes of different mass that the kernel cannot leave: the heavier
/// modes are copied while the weights are still comparable, instead of one chain carrying all the weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resample {
    /// Threshold on `ESS / chains per group`, in `(0, 1]`.
    pub ess_fraction: f64,
    /// Independent populations (≥ 2 for a standard error; `chains` must be a multiple).
    pub groups: usize,
}

impl Default for AisConfig {
    fn default() -> Self {
        AisConfig {
            chains: 100,
            steps: 1000,
            sweeps: 1,
            schedule: Schedule::Sigmoid { delta: 4.0 },
            base: AisBase::Gaussian { mean: 0.0, std: 1.0 },
            transition: AisTransition::Mala { step_size: 0.01, target_accept: Some(0.6) },
            resample: None,
            box_moves: BoxMoves::Reject,
        }
    }
}

impl AisConfig {
    /// Checks counts, base and kernel.
    pub fn validate(&self) -> Result<()> {
        if self.chains == 0 || self.steps == 0 || self.sweeps == 0 {
            return Err(invalid("ais", "chains, steps and sweeps must be ≥ 1"));
        }
        self.base.validate()?;
        if self.box_moves == BoxMoves::Tanh && self.base.bounds().is_none() {
            return Err(invalid(
                "ais.box_moves",
                "\"tanh\" maps a box to the whole space, but the base has no box (use a uniform or truncated base)",
            ));
        }
        if let Some(r) = self.resample {
            if !(r.ess_fraction > 0.0 && r.ess_fraction <= 1.0) {
                return Err(invalid("ais.resample.ess_fraction", format!("must be in (0, 1], got {}", r.ess_fraction)));
            }
            if r.groups == 0 || !self.chains.is_multiple_of(r.groups) || self.chains / r.groups < 2 {
                return Err(invalid(
                    "ais.resample.groups",
                    format!("must divide the {} chains into groups of ≥ 2, got {}", self.chains, r.groups),
                ));
            }
        }
        let eps = match self.transition {
            AisTransition::Mala { step_size, target_accept } => {
                if let Some(a) = target_accept {
                    if !(a > 0.0 && a < 1.0) {
                        return Err(invalid("ais.transition.target_accept", format!("must be in (0, 1), got {a}")));
                    }
                }
                step_size
            }
            AisTransition::Langevin { step_size } => step_size,
        };
        if !(eps > 0.0) || !eps.is_finite() {
            return Err(invalid("ais.transition.step_size", format!("must be > 0 and finite, got {eps}")));
        }
        match self.schedule {
            Schedule::Sigmoid { delta } if !(delta > 0.0) => {
                Err(invalid("ais.schedule.delta", format!("must be > 0, got {delta}")))
            }
            Schedule::Power { p } if !(p > 0.0) => Err(invalid("ais.schedule.p", format!("must be > 0, got {p}"))),
            _ => Ok(()),
        }
    }
}

/// What [`ais`] and [`ais_path`] return.
#[derive(Debug)]
pub struct AisResult {
    /// The estimate of `log Z`: `logsumexp(log w) - log n`.
    pub log_z: f64,
    /// Each chain's log-weight.
    pub log_weights: Vec<f64>,
    /// Sample variance of the log-weights (falls towards 0 as K grows).
    pub log_weight_var: f64,
    /// Effective sample size `(Σw)² / Σw²` of the normalised weights, in `[1, n]`.
    pub ess: f64,
    /// Delta-method standard error of `log Z`: `sd(w) / (mean(w) √n)`.
    pub log_z_std_err: f64,
    /// Resampling events (summed over the groups; 0 without resampling).
    pub resamples: usize,
    /// With resampling: each group's `log Ẑ` (their spread gives `log_z_std_err`).
    pub group_log_z: Vec<f64>,
    /// MALA's acceptance rate over all transitions (`None` for Langevin).
    pub acceptance: Option<f64>,
    /// Each stage's diagnostics (one stage for [`ais`], one per model for [`ais_path`]).
    pub stages: Vec<AisStage>,
    /// The chains' final states, approximate samples of `exp(f)/Z`, `[n, *event]`.
    pub samples: Tensor,
}

/// Runs AIS from `cfg.base` to `exp(f)` and returns the `log Z` estimate with its diagnostics: [`ais_path`]
/// with the path `[m]` (one stage of `cfg.steps` intermediate distributions).
/// Uses libtorch's RNG (seed it with `tch::manual_seed` for a reproducible estimate).
///
/// # Shapes
/// `m`: `[B, *event]` → `[B]`; [`AisResult::samples`] is `[cfg.chains, *event]`.
///
/// # Errors
/// An invalid config; non-finite `f` along the way.
pub fn ais(m: &dyn EnergyModel, cfg: &AisConfig, device: Device) -> Result<AisResult> {
    ais_path(&[m], cfg, device)
}

/// Mean test log-likelihood `mean f(x) - log Z` (nats per example) for data `x: [N, *event]`.
pub fn mean_log_likelihood(m: &dyn EnergyModel, x: &Tensor, log_z: f64) -> Result<f64> {
    let f = tch::no_grad(|| m.try_f(x))?;
    Ok(f64::try_from(f.mean(Kind::Double))? - log_z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gaussian;

    /// An 8-D Gaussian with AR(1) correlations (ρ = 0.5), scales 0.6..2.0 and an offset mean: far enough from
    /// the N(0, I) base to need the path; log Z ≈ 7.88, so 1% is ≈ 4 standard errors of a 1000-chain estimate.
    fn target() -> Gaussian {
        let d = 8;
        let scale = |i: usize| 0.6 + 0.2 * i as f64;
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] = 0.5f64.powi((i as i32 - j as i32).abs()) * scale(i) * scale(j);
            }
        }
        let mean: Vec<f64> = (0..d).map(|i| 1.0 - 0.3 * i as f64).collect();
        Gaussian::new(&mean, &cov, Device::Cpu).unwrap()
    }

    #[test]
    fn recovers_the_log_z_of_a_gaussian_within_one_percent() {
        tch::manual_seed(0);
        let g = target();
        let cfg = AisConfig { chains: 1000, steps: 500, ..Default::default() };
        let r = ais(&g, &cfg, Device::Cpu).unwrap();
        let want = g.log_z();
        assert!(want.abs() > 1.0, "test needs a log Z away from 0, got {want}");
        let rel = (r.log_z - want).abs() / want.abs();
        eprintln!("AIS log Z {:.4} (se {:.4}), exact {want:.4}, rel. error {rel:.4}", r.log_z, r.log_z_std_err);
        assert!(rel < 0.01, "AIS log Z {} vs exact {want} (rel. error {rel:.4}, se {})", r.log_z, r.log_z_std_err);
        let acc = r.acceptance.unwrap();
        assert!(acc > 0.3 && acc < 0.95, "acceptance {acc}");
        assert!(r.ess > 500.0, "ess {}", r.ess);
        // the final chains are samples of the target: their mean is the Gaussian's
        let mean = Vec::<f64>::try_from(r.samples.mean_dim(0, false, Kind::Double)).unwrap();
        for (i, (got, want)) in mean.iter().zip(Vec::<f64>::try_from(g.mean()).unwrap()).enumerate() {
            let sd = (0.6 + 0.2 * i as f64) / 1000f64.sqrt();
            assert!((got - want).abs() < 4.0 * sd, "sample mean {mean:?}");
        }
    }

    #[test]
    fn log_weight_variance_falls_with_more_intermediate_distributions() {
        let g = target();
        let mut vars = Vec::new();
        for steps in [10, 100, 1000] {
            tch::manual_seed(1);
            let cfg = AisConfig { chains: 200, steps, ..Default::default() };
            vars.push(ais(&g, &cfg, Device::Cpu).unwrap().log_weight_var);
        }
        // Theory: the variance falls like 1/K once K is large; ask for a factor 3 per decade.
        assert!(vars[0] > 3.0 * vars[1] && vars[1] > 3.0 * vars[2], "log-weight variances {vars:?}");
    }

    #[test]
    fn uniform_base_integrates_over_the_box() {
        // N(0.1, 0.15² I) in 4-D sits well inside [-1, 1]⁴ (6σ away), so ∫_box exp f = the Gaussian's Z.
        // log Z ≈ -3.91; with 2000 chains the standard error is ≈ 0.008, so 1% is ≈ 5 standard errors
        // (200 chains gave se ≈ 0.025 = 1.6 standard errors per 1%, and failed about one run in ten).
        tch::manual_seed(2);
        let g = Gaussian::isotropic(&[0.1, -0.1, 0.0, 0.2], 0.15, Device::Cpu).unwrap();
        let cfg = AisConfig {
            chains: 2000,
            steps: 1000,
            base: AisBase::Uniform { low: -1.0, high: 1.0 },
            transition: AisTransition::Mala { step_size: 1e-3, target_accept: Some(0.6) },
            ..Default::default()
        };
        let r = ais(&g, &cfg, Device::Cpu).unwrap();
        let want = g.log_z();
        assert!(r.log_z_std_err < 0.012, "standard error {}", r.log_z_std_err);
        assert!((r.log_z - want).abs() / want.abs() < 0.01, "AIS {} vs exact {want} (se {})", r.log_z, r.log_z_std_err);
        assert!(f64::try_from(r.samples.abs().max()).unwrap() <= 1.0);
        // test log-likelihood of points at the mean: f = 0 there, so it is -log Z
        let x = Tensor::from_slice(&[0.1f32, -0.1, 0.0, 0.2]).view([1, 4]);
        let ll = mean_log_likelihood(&g, &x, r.log_z).unwrap();
        assert!((ll + want).abs() < 0.05, "{ll}");
    }

    #[test]
    fn schedules_and_validation() {
        for s in [Schedule::Linear, Schedule::Sigmoid { delta: 4.0 }, Schedule::Power { p: 3.0 }] {
            let b = s.betas(50);
            assert_eq!(b.len(), 51);
            assert_eq!((b[0], b[50]), (0.0, 1.0));
            assert!(b.windows(2).all(|w| w[1] >= w[0]), "{s:?} not monotone");
        }
        assert!(AisConfig { chains: 0, ..Default::default() }.validate().is_err());
        let bad = AisConfig { base: AisBase::Uniform { low: 1.0, high: 0.0 }, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("low < high"));
        let bad = AisConfig { transition: AisTransition::Langevin { step_size: -1.0 }, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("step_size"));
        // tanh moves need a box: the default base is a Gaussian on the whole space
        let bad = AisConfig { box_moves: BoxMoves::Tanh, ..Default::default() };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("ais.box_moves") && e.contains("no box"), "{e}");
        let ok = AisConfig {
            box_moves: BoxMoves::Tanh,
            base: AisBase::Uniform { low: 0.0, high: 1.0 },
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }

    /// A 4-D Gaussian with per-coordinate scales whose mass is cut by the box `[-1, 1]⁴` (means near the edges),
    /// with the exact `log ∫_box exp f`: the Gaussian's `log Z` plus `Σᵢ log(Φ(βᵢ) - Φ(αᵢ))`.
    fn cut_gaussian() -> (Gaussian, Vec<f64>, Vec<f64>, f64) {
        let mean = vec![-0.9, 0.0, 0.5, 0.95];
        let std = vec![0.2, 0.5, 0.3, 0.1];
        let cov: Vec<f64> = (0..16).map(|i| if i % 5 == 0 { std[i / 4] * std[i / 4] } else { 0.0 }).collect();
        let g = Gaussian::new(&mean, &cov, Device::Cpu).unwrap();
        let phi = |z: f64| f64::try_from(Tensor::from(z).special_ndtr()).unwrap();
        let mass: f64 = mean.iter().zip(&std).map(|(m, s)| (phi((1.0 - m) / s) - phi((-1.0 - m) / s)).ln()).sum();
        assert!(mass < -0.5, "the box should cut the Gaussian, log mass {mass}");
        let want = g.log_z() + mass;
        (g, mean, std, want)
    }

    fn box_cfg(base: BoxGaussians, chains: usize, steps: usize) -> AisConfig {
        AisConfig {
            chains,
            steps,
            base: AisBase::TruncatedGaussians(base),
            transition: AisTransition::Mala { step_size: 1e-3, target_accept: Some(0.6) },
            ..Default::default()
        }
    }

    #[test]
    fn truncated_gaussian_base_that_is_the_target_gives_the_exact_log_z_with_full_ess() {
        // the base equals exp(f)/Z on the box: every log-weight is log Z, whatever the path
        tch::manual_seed(3);
        let (g, mean, std, want) = cut_gaussian();
        let base = BoxGaussians::new(-1.0, 1.0, vec![1.0], vec![mean], vec![std]).unwrap();
        let r = ais(&g, &box_cfg(base, 200, 20), Device::Cpu).unwrap();
        assert!((r.log_z - want).abs() < 1e-3, "AIS {} vs exact {want}", r.log_z);
        assert!(r.ess > 199.9 && r.log_weight_var < 1e-6, "ess {} var {}", r.ess, r.log_weight_var);
        assert!(f64::try_from(r.samples.abs().max()).unwrap() <= 1.0);
    }

    #[test]
    fn truncated_gaussian_mixture_base_recovers_the_log_z_on_the_box() {
        // a two-component base, too wide and off-centre: AIS still recovers ∫_box exp f
        tch::manual_seed(4);
        let (g, mean, std, want) = cut_gaussian();
        let wide: Vec<f64> = std.iter().map(|s| 1.5 * s + 0.05).collect();
        let shifted: Vec<f64> = mean.iter().map(|m| 0.5 * m).collect();
        let base = BoxGaussians::new(-1.0, 1.0, vec![2.0, 1.0], vec![mean, shifted], vec![wide.clone(), wide]).unwrap();
        let r = ais(&g, &box_cfg(base, 1000, 300), Device::Cpu).unwrap();
        eprintln!("AIS log Z {:.4} (se {:.4}, ESS {:.0}), exact {want:.4}", r.log_z, r.log_z_std_err, r.ess);
        assert!(r.log_z_std_err < 0.02, "standard error {}", r.log_z_std_err);
        assert!((r.log_z - want).abs() < 0.06, "AIS {} vs exact {want} (se {})", r.log_z, r.log_z_std_err);
        assert!(r.ess > 500.0, "ess {}", r.ess);
        assert!(f64::try_from(r.samples.abs().max()).unwrap() <= 1.0);
    }

    #[test]
    fn truncated_gaussians_are_normalised_sampled_and_differentiated_exactly() {
        tch::manual_seed(5);
        // 1-D, two components, one cut hard by the box: ∫ p₀ = 1 on a fine grid
        let b = BoxGaussians::new(-1.0, 1.0, vec![0.3, 0.7], vec![vec![-0.95], vec![0.2]], vec![vec![0.3], vec![0.4]])
            .unwrap();
        let p = b.prepare(Device::Cpu);
        let n = 20_000;
        let grid = Tensor::linspace(-1.0, 1.0, n + 1, (Kind::Float, Device::Cpu)).view([n + 1, 1]);
        let (lp, _) = p.log_prob_and_grad(&grid);
        let dens = Vec::<f64>::try_from(lp.exp()).unwrap();
        let h = 2.0 / n as f64;
        let integral = h * (dens.iter().sum::<f64>() - 0.5 * (dens[0] + dens[n as usize])); // trapezoid
        assert!((integral - 1.0).abs() < 1e-5, "∫ p₀ = {integral}");
        // samples: in the box, mean = the mixture of truncated-normal means μ + s (φ(α) - φ(β)) / (Φ(β) - Φ(α))
        let x = p.sample(200_000, &[1]);
        assert!(f64::try_from(x.abs().max()).unwrap() <= 1.0);
        let pdf = |z: f64| (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = |z: f64| f64::try_from(Tensor::from(z).special_ndtr()).unwrap();
        let tmean = |m: f64, s: f64| {
            let (a, bb) = ((-1.0 - m) / s, (1.0 - m) / s);
            m + s * (pdf(a) - pdf(bb)) / (cdf(bb) - cdf(a))
        };
        let want = 0.3 * tmean(-0.95, 0.3) + 0.7 * tmean(0.2, 0.4);
        let got = f64::try_from(x.mean(Kind::Double)).unwrap();
        assert!((got - want).abs() < 0.005, "sample mean {got} vs {want}"); // sd/√n ≈ 0.0013
                                                                            // gradient: autograd of the log-density in 3-D
        let b3 = BoxGaussians::new(
            -1.0,
            1.0,
            vec![1.0, 1.0],
            vec![vec![0.1, -0.5, 0.9], vec![-0.3, 0.2, 0.0]],
            vec![vec![0.2, 0.3, 0.5], vec![0.4, 0.1, 0.3]],
        )
        .unwrap();
        let p3 = b3.prepare(Device::Cpu);
        let x = (Tensor::rand([5, 3], (Kind::Double, Device::Cpu)) * 2.0 - 1.0).set_requires_grad(true);
        let (lp, grad) = p3.log_prob_and_grad(&x);
        let auto = Tensor::run_backward(&[lp.sum(Kind::Double)], &[&x], false, false).pop().unwrap();
        let err = f64::try_from((grad - auto).abs().max()).unwrap();
        assert!(err < 1e-9, "gradient error {err}");
    }

    #[test]
    fn truncated_gaussians_fit_and_validation() {
        let x = Tensor::from_slice(&[-1.0f32, 0.0, -1.0, 0.5, -1.0, 1.0, -1.0, -0.5]).view([4, 2]);
        let one = BoxGaussians::fit(&x, None, -1.0, 1.0, 0.05, 1.0).unwrap();
        assert_eq!((one.components(), one.dim()), (1, 2));
        assert_eq!(one.means[0], vec![-1.0, 0.25]);
        assert_eq!(one.stds[0][0], 0.05, "a constant pixel gets min_std");
        assert!((one.stds[0][1] - 0.5590169943749475).abs() < 1e-7, "{:?}", one.stds);
        let two = BoxGaussians::fit(&x, Some(&[0, 1, 1, 0]), -1.0, 1.0, 0.05, 2.0).unwrap();
        assert_eq!(two.weights, vec![0.5, 0.5]);
        assert_eq!(two.means[1], vec![-1.0, 0.75]);
        assert!((two.stds[1][1] - 0.5).abs() < 1e-7, "std_scale 2 doubles 0.25: {:?}", two.stds);
        let bad = |b: Result<BoxGaussians>| b.unwrap_err().to_string();
        assert!(bad(BoxGaussians::fit(&x, None, -1.0, 1.0, 0.0, 1.0)).contains("min_std"));
        assert!(bad(BoxGaussians::fit(&x, Some(&[0, 1]), -1.0, 1.0, 0.1, 1.0)).contains("labels"));
        assert!(bad(BoxGaussians::new(1.0, -1.0, vec![1.0], vec![vec![0.0]], vec![vec![1.0]])).contains("low < high"));
        assert!(bad(BoxGaussians::new(-1.0, 1.0, vec![1.0], vec![vec![2.0]], vec![vec![1.0]])).contains("in the box"));
        assert!(bad(BoxGaussians::new(-1.0, 1.0, vec![1.0], vec![vec![0.0]], vec![vec![0.0]])).contains("stds"));
        assert!(bad(BoxGaussians::new(-1.0, 1.0, vec![-1.0], vec![vec![0.0]], vec![vec![1.0]])).contains("weights"));
        let ragged = BoxGaussians::new(-1.0, 1.0, vec![1.0, 1.0], vec![vec![0.0], vec![0.0, 0.1]], vec![vec![1.0]; 2]);
        assert!(bad(ragged).contains("same length"));
        // a base of the wrong dimension for the model is refused by ais()
        let g = Gaussian::isotropic(&[0.0, 0.0, 0.0], 0.3, Device::Cpu).unwrap();
        let e = ais(&g, &box_cfg(one.clone(), 4, 2), Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("dimension 2"), "{e}");
        // the config round-trips through TOML
        let cfg = box_cfg(one, 4, 2);
        let back: AisConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn resampling_moves_chains_to_the_heavier_mode_and_keeps_log_z() {
        // two modes the kernel cannot cross, weights 1:19; the base puts half the chains in each (the weights
        // ESS is then ≈ 55% of the chains: resample below 80%)
        let mix = crate::energy::GaussianMixture::isotropic(
            &[0.05, 0.95],
            &[vec![-0.5, -0.5], vec![0.5, 0.5]],
            0.08,
            Device::Cpu,
        )
        .unwrap();
        let base = BoxGaussians::new(
            -1.0,
            1.0,
            vec![1.0, 1.0],
            vec![vec![-0.5, -0.5], vec![0.5, 0.5]],
            vec![vec![0.15, 0.15], vec![0.15, 0.15]],
        )
        .unwrap();
        let heavy_share = |r: &AisResult| {
            f64::try_from(
                r.samples.sum_dim_intlist(1, false, Kind::Float).gt(0.0).to_kind(Kind::Double).mean(Kind::Double),
            )
            .unwrap()
        };
        tch::manual_seed(6);
        let plain = ais(&mix, &box_cfg(base.clone(), 400, 200), Device::Cpu).unwrap();
        tch::manual_seed(6);
        let smc_cfg =
            AisConfig { resample: Some(Resample { ess_fraction: 0.8, groups: 4 }), ..box_cfg(base, 400, 200) };
        let smc = ais(&mix, &smc_cfg, Device::Cpu).unwrap();
        eprintln!(
            "plain: log Z {:.4} ± {:.4}, heavy share {:.2}; smc: {:.4} ± {:.4} ({} resamplings, groups {:?}), heavy share {:.2}",
            plain.log_z, plain.log_z_std_err, heavy_share(&plain), smc.log_z, smc.log_z_std_err, smc.resamples, smc.group_log_z, heavy_share(&smc)
        );
        // the mixture is normalised and well inside the box: log Z = 0
        for r in [&plain, &smc] {
            assert!(
                r.log_z_std_err < 0.1 && r.log_z.abs() < 4.0 * r.log_z_std_err + 0.02,
                "log Z {} ± {}",
                r.log_z,
                r.log_z_std_err
            );
        }
        assert!((heavy_share(&plain) - 0.5).abs() < 0.1, "plain AIS cannot move chains between the modes");
        // (the last resampling comes before β = 1, so the share is short of 0.95; measured 0.86)
        assert!(heavy_share(&smc) > 0.7, "resampling puts the chains where the mass is");
        // weighted by their final weights, both populations give the heavy mode its 95%
        for r in [&plain, &smc] {
            let heavy = r.samples.sum_dim_intlist(1, false, Kind::Float).gt(0.0).to_kind(Kind::Double);
            let w = Tensor::from_slice(&r.log_weights).softmax(0, Kind::Double);
            let share = f64::try_from((heavy * w).sum(Kind::Double)).unwrap();
            assert!((share - 0.95).abs() < 0.05, "weighted heavy share {share}");
        }
        assert!(smc.resamples > 0 && smc.group_log_z.len() == 4);
        let bad = AisConfig { resample: Some(Resample { ess_fraction: 0.5, groups: 3 }), ..AisConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("groups"));
        let bad = AisConfig { resample: Some(Resample { ess_fraction: 0.0, groups: 4 }), ..AisConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("ess_fraction"));
    }
}
