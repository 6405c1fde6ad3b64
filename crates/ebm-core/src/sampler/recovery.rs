//! Recovery sampling for diffusion recovery likelihood (Gao, Song, Poole, Wu & Kingma 2021), in the
//! variance-exploding form and this crate's noise-conditional convention: at level `a` a model is read as
//! `f_a = f(·; a)/a` ([`EnergyModel::at_noise`]), the log-density of the data blurred by `N(0, a²)`.
//!
//! With levels `a_0 < a_1 < … < a_{L-1}` (the [`NoiseScales`] ladder, visited largest first) and increments
//! `δ_t² = a_{t+1}² − a_t²` (above the top, the ladder continued geometrically: `a_L = a_{L-1}²/a_{L-2}`), a
//! sample `x_{t+1}` at level `t+1` is recovered to level `t` by sampling the conditional
//!
//! `p(x_t | x_{t+1}) ∝ exp(f_{a_t}(x_t) − ‖x_{t+1} − x_t‖² / 2δ_t²)`,
//!
//! with Langevin started at `x_{t+1}`: `y ← y + ε(∇f_{a_t}(y) − (y − x_{t+1})/δ_t²) + √(2ε) z`, step
//! `ε = step_ratio · δ_t²` (Gao et al.'s `b²σ²/2` with `step_ratio = b²/2`: the Gaussian factor of width `δ_t`
//! sets the scale of the conditional, so the step scales with it). The conditional is nearly Gaussian of
//! width `δ_t`, hence easy to sample from a start that is already close, unlike the marginal.
//!
//! [`RecoverySampler`] is the ancestral sampler of a trained model: optional Langevin steps on the top
//! level's marginal `f_{a_{L-1}}` (smooth, so a plain chain mixes), then `steps_per_level` steps of each
//! conditional from the largest level down, ending at `a_0`. [`recovery_step`] is the one conditional step,
//! shared with the training objective ([`crate::objective::Drl`]).

use super::{Chain, NoiseScales, Sampler, StepDiag};
use crate::autograd::score_unchecked;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Checks a ladder for recovery: the [`NoiseScales`] checks and at least two levels (`key` names the
/// config key in errors).
pub fn validate_ladder(scales: &NoiseScales, key: &str) -> Result<()> {
    scales.validate().map_err(|e| invalid(key, e.to_string()))?;
    if scales.levels < 2 || !(scales.sigma_min < scales.sigma_max) {
        return Err(invalid(
            &format!("{key}.levels"),
            format!(
                "recovery needs ≥ 2 levels with sigma_min < sigma_max, got {} levels from {} to {}",
                scales.levels, scales.sigma_min, scales.sigma_max
            ),
        ));
    }
    Ok(())
}

/// The levels in increasing order `a_0 < … < a_{L-1}` and the increments `δ_t = √(a_{t+1}² − a_t²)` that
/// recover level `t` (the last one from the ladder continued geometrically); `L ≥ 2`.
pub fn ladder_with_increments(scales: &NoiseScales) -> (Vec<f64>, Vec<f64>) {
    let mut a = scales.sigmas();
    a.reverse();
    let l = a.len();
    let above = a[l - 1] * a[l - 1] / a[l - 2];
    let deltas = (0..l)
        .map(|t| {
            let next = if t + 1 < l { a[t + 1] } else { above };
            (next * next - a[t] * a[t]).sqrt()
        })
        .collect();
    (a, deltas)
}

/// One Langevin step on the recovery conditional `exp(log_p(y) − ‖y − x̃‖²/2δ²)` of every row, with step
/// `ε = step_ratio · δ²` per row; returns the next states and their noise-free means, and pushes the
/// diagnostics of `log_p` at `y` when `diag` is given. `log_p` is the model at each row's level
/// (`f(y; a)/a`); no parameter gradients are built when the caller froze them.
///
/// # Shapes
/// `y, x_tilde: [B, *event]`, `delta2: [B]` (the kind of `y`), `log_p: [B, *event] → [B]` → two `[B, *event]`.
pub fn recovery_step(
    log_p: &dyn Fn(&Tensor) -> Tensor,
    y: &Tensor,
    x_tilde: &Tensor,
    delta2: &Tensor,
    step_ratio: f64,
    diag: Option<&mut Vec<StepDiag>>,
) -> (Tensor, Tensor) {
    let y = y.detach().set_requires_grad(true);
    let f = log_p(&y);
    let grad = Tensor::run_backward(&[f.sum(f.kind())], &[&y], false, false).remove(0);
    if let Some(d) = diag {
        d.push(StepDiag::of(&f.detach(), &grad));
    }
    tch::no_grad(|| {
        let mut bshape = vec![y.size()[0]];
        bshape.extend(std::iter::repeat_n(1, y.dim() - 1));
        let d2 = delta2.view(bshape.as_slice());
        let eps = &d2 * step_ratio;
        let y = y.detach();
        let drift = grad - (&y - x_tilde) / &d2;
        let mean = &y + &eps * drift;
        let next = &mean + y.randn_like() * (eps * 2.0).sqrt();
        (next, mean)
    })
}

/// Configuration of [`RecoverySampler`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// The noise levels (at least two), visited largest first.
    pub scales: NoiseScales,
    /// Langevin steps on each recovery conditional.
    pub steps_per_level: usize,
    /// Step size of the conditional recovering level `t` is `step_ratio · δ_t²`; of the top level's marginal,
    /// `step_ratio · a_{L-1}²`.
    pub step_ratio: f64,
    /// Langevin steps on the top level's marginal before the descent (0: the start is taken as a draw at the
    /// top level).
    pub top_steps: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig { scales: NoiseScales::default(), steps_per_level: 30, step_ratio: 0.05, top_steps: 100 }
    }
}

impl RecoveryConfig {
    /// Checks the ladder, the steps and the ratio.
    pub fn validate(&self) -> Result<()> {
        validate_ladder(&self.scales, "recovery.scales")?;
        if self.steps_per_level == 0 {
            return Err(invalid("recovery.steps_per_level", "must be ≥ 1"));
        }
        if !(self.step_ratio > 0.0) || !self.step_ratio.is_finite() {
            return Err(invalid("recovery.step_ratio", format!("must be > 0, got {}", self.step_ratio)));
        }
        Ok(())
    }
}

/// The ancestral recovery sampler: step `t < top_steps` is a Langevin step on `f_{a_{L-1}}`; then block `j`
/// of `steps_per_level` steps samples the conditional recovering level `L-2-j` from the state at the start
/// of the block. A run of [`RecoverySampler::total_steps`] steps ends at the lowest level `a_0`; further
/// steps stay on its last conditional.
#[derive(Debug, Clone)]
pub struct RecoverySampler {
    cfg: RecoveryConfig,
    levels: Vec<f64>,
    deltas: Vec<f64>,
}

/// Where the current conditional's anchor `x̃` is kept in [`Chain::aux`].
const ANCHOR: &str = "recovery_anchor";

impl RecoverySampler {
    /// Builds the sampler after validating its configuration.
    pub fn new(cfg: RecoveryConfig) -> Result<Self> {
        cfg.validate()?;
        let (levels, deltas) = ladder_with_increments(&cfg.scales);
        Ok(RecoverySampler { cfg, levels, deltas })
    }

    /// Steps of a full descent: `top_steps + (L − 1) · steps_per_level`.
    pub fn total_steps(&self) -> usize {
        self.cfg.top_steps + (self.levels.len() - 1) * self.cfg.steps_per_level
    }

    /// The levels `a_0 < … < a_{L-1}`.
    pub fn levels(&self) -> &[f64] {
        &self.levels
    }
}

impl Sampler for RecoverySampler {
    fn step(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        let l = self.levels.len();
        let b = chain.x.size()[0];
        let opts = (chain.x.kind(), chain.x.device());
        if chain.t < self.cfg.top_steps {
            // plain Langevin on the top level's marginal
            let top = self.levels[l - 1];
            let view = m.at_noise(top)?;
            let eps = self.cfg.step_ratio * top * top;
            let s = score_unchecked(view.as_ref(), &chain.x, false);
            if chain.record {
                chain.trace.push(StepDiag::of(&s.f, &s.grad));
            }
            let (x, mean) = tch::no_grad(|| {
                let mean = s.x.detach() + s.grad * eps;
                (&mean + mean.randn_like() * (2.0 * eps).sqrt(), mean)
            });
            (chain.x, chain.x_mean) = (x, mean);
            return Ok(());
        }
        let since = chain.t - self.cfg.top_steps;
        let j = (since / self.cfg.steps_per_level).min(l - 2);
        if since == j * self.cfg.steps_per_level || !chain.aux.contains_key(ANCHOR) {
            chain.aux.insert(ANCHOR, chain.x.shallow_clone());
        }
        let level = l - 2 - j;
        let view = m.at_noise(self.levels[level])?;
        let delta2 = Tensor::full([b], self.deltas[level].powi(2), opts);
        let log_p = |y: &Tensor| view.f(y);
        let diag = chain.record.then_some(&mut chain.trace);
        (chain.x, chain.x_mean) =
            recovery_step(&log_p, &chain.x, &chain.aux[ANCHOR], &delta2, self.cfg.step_ratio, diag);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "recovery"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::conditional::AtNoise;
    use crate::sampler::test_util::moments;
    use tch::{Device, Kind};

    /// `f(x; a) = −½ a (x − θ)² / (s² + a²)` in 1-D: `f/a` is exactly `N(θ, s²)` blurred by `N(0, a²)`.
    struct Blurred1 {
        theta: f64,
        s2: f64,
    }
    impl EnergyModel for Blurred1 {
        fn f(&self, x: &Tensor) -> Tensor {
            self.f_given(x, None, None)
        }
        fn f_given(&self, x: &Tensor, _labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
            let s = sigma.map(|s| s.to_kind(x.kind())).unwrap_or_else(|| x.zeros_like().squeeze_dim(1));
            (x.squeeze_dim(1) - self.theta).square() * &s * -0.5 / (s.square() + self.s2)
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
            Ok(Box::new(AtNoise::new(self, sigma)?))
        }
    }

    #[test]
    fn a_conditional_chain_targets_the_exact_gaussian_conditional() {
        // p(y | x̃) ∝ N(y; θ, v) N(x̃; y, δ²) with v = s² + a²: Gaussian with precision 1/v + 1/δ² and mean
        // (θ/v + x̃/δ²) / precision.
        tch::manual_seed(0);
        let m = Blurred1 { theta: 1.0, s2: 0.25 };
        let (a, delta2, x_tilde, r) = (0.5f64, 0.16f64, 2.0f64, 0.02);
        let v = m.s2 + a * a;
        let prec = 1.0 / v + 1.0 / delta2;
        let (want_mean, want_var) = ((m.theta / v + x_tilde / delta2) / prec, 1.0 / prec);
        let n = 20_000;
        let xt = Tensor::full([n, 1], x_tilde, (Kind::Float, Device::Cpu));
        let d2 = Tensor::full([n], delta2, (Kind::Float, Device::Cpu));
        let view = m.at_noise(a).unwrap();
        let log_p = |y: &Tensor| view.f(y);
        let mut y = xt.shallow_clone();
        for _ in 0..400 {
            y = recovery_step(&log_p, &y, &xt, &d2, r, None).0;
        }
        let (mean, var) = moments(&y);
        // sd of the mean ≈ √(0.12/20000) ≈ 0.0025; ULA inflates the variance by ≈ 1/(1 − εP/2) ≈ 1.3%
        assert!((mean[0] - want_mean).abs() < 0.012, "mean {} want {want_mean}", mean[0]);
        assert!((var[0] / want_var - 1.0).abs() < 0.04, "var {} want {want_var}", var[0]);
    }

    #[test]
    fn the_descent_ends_at_the_lowest_level_from_a_draw_at_the_top() {
        // Started exactly at the top level's marginal N(θ, s² + a_top²), every recovery step keeps the chains
        // in the next marginal, so they end at N(θ, s² + a_0²).
        tch::manual_seed(1);
        let m = Blurred1 { theta: -0.5, s2: 0.04 };
        let cfg = RecoveryConfig {
            scales: NoiseScales { sigma_max: 1.0, sigma_min: 0.1, levels: 4 },
            steps_per_level: 150,
            step_ratio: 0.02,
            top_steps: 0,
        };
        let s = RecoverySampler::new(cfg).unwrap();
        let levels = s.levels().to_vec();
        assert!(levels[0] < levels[3] && (levels[3] - 1.0).abs() < 1e-12);
        let top_var = m.s2 + 1.0;
        let x0 = Tensor::randn([20_000, 1], (Kind::Float, Device::Cpu)) * top_var.sqrt() + m.theta;
        let out = s.run(&m, &x0, s.total_steps()).unwrap();
        let (mean, var) = moments(&out.x);
        let want_var = m.s2 + levels[0] * levels[0];
        assert!((mean[0] - m.theta).abs() < 0.02, "mean {}", mean[0]);
        assert!((var[0] / want_var - 1.0).abs() < 0.08, "var {} want {want_var}", var[0]);
        // with the top level's own Langevin first, a start far off reaches the same place
        let cfg = RecoveryConfig { top_steps: 300, step_ratio: 0.05, ..s.cfg.clone() };
        let s = RecoverySampler::new(cfg).unwrap();
        let x0 = Tensor::full([20_000, 1], 3.0, (Kind::Float, Device::Cpu));
        let (mean, var) = moments(&s.run(&m, &x0, s.total_steps()).unwrap().x);
        assert!((mean[0] - m.theta).abs() < 0.03 && (var[0] / want_var - 1.0).abs() < 0.12, "{mean:?} {var:?}");
    }

    #[test]
    fn increments_rebuild_the_ladder_and_bad_configs_are_errors() {
        let scales = NoiseScales { sigma_max: 2.0, sigma_min: 0.1, levels: 5 };
        let (a, d) = ladder_with_increments(&scales);
        for t in 0..4 {
            assert!((a[t] * a[t] + d[t] * d[t] - a[t + 1] * a[t + 1]).abs() < 1e-9);
        }
        let r = a[4] / a[3];
        assert!((a[4] * a[4] + d[4] * d[4] - (a[4] * r).powi(2)).abs() < 1e-9);
        let one =
            RecoveryConfig { scales: NoiseScales { sigma_max: 1.0, sigma_min: 1.0, levels: 1 }, ..Default::default() };
        assert!(one.validate().unwrap_err().to_string().contains("recovery.scales.levels"));
        let c = RecoveryConfig { steps_per_level: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("recovery.steps_per_level"));
        let c = RecoveryConfig { step_ratio: 0.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("recovery.step_ratio"));
    }
}
