//! Annealed Langevin dynamics (NCSN, Song & Ermon 2019) for noise-conditional models: at each noise level σ
//! of a geometric ladder (largest first), Langevin steps on the model's view at that level,
//! `f_σ = f(·; σ)/σ` ([`EnergyModel::at_noise`]), then an optional denoising step (Tweedie's formula).
//! Compositions of noise-conditional experts compose at every level, so they are sampled the same way.

use super::mala::mala_step;
use super::{langevin_proposal, Chain, Sampler, StepDiag};
use crate::autograd::{sampler_grad, sampler_score};
use crate::check::check_input;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};

/// A geometric ladder of noise levels `σ_max = σ_1 > … > σ_L = σ_min`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseScales {
    /// The largest level σ₁.
    pub sigma_max: f64,
    /// The smallest level σ_L.
    pub sigma_min: f64,
    /// The number of levels L.
    pub levels: usize,
}

impl Default for NoiseScales {
    fn default() -> Self {
        NoiseScales { sigma_max: 1.0, sigma_min: 0.02, levels: 8 }
    }
}

impl NoiseScales {
    /// Checks `0 < σ_min ≤ σ_max` and `L ≥ 1` (`L = 1` needs `σ_min = σ_max`).
    pub fn validate(&self) -> Result<()> {
        let ok = self.sigma_min > 0.0 && self.sigma_min <= self.sigma_max && self.sigma_max.is_finite();
        if !ok || self.levels == 0 || (self.levels == 1 && self.sigma_min != self.sigma_max) {
            return Err(invalid(
                "noise_scales",
                format!(
                    "need 0 < sigma_min ≤ sigma_max and ≥ 1 levels (1 only when they are equal), got {} … {} in {}",
                    self.sigma_min, self.sigma_max, self.levels
                ),
            ));
        }
        Ok(())
    }

    /// The levels, largest first.
    pub fn sigmas(&self) -> Vec<f64> {
        if self.levels == 1 {
            return vec![self.sigma_max];
        }
        let r = (self.sigma_min / self.sigma_max).ln() / (self.levels - 1) as f64;
        (0..self.levels).map(|i| self.sigma_max * (r * i as f64).exp()).collect()
    }
}

/// Annealed Langevin dynamics (NCSN) for a model read as `f_σ = f / σ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnealedConfig {
    /// The noise levels, visited largest first.
    pub scales: NoiseScales,
    /// Langevin steps per level.
    pub steps_per_level: usize,
    /// Step size at level σ is `step_ratio · σ²` (so the noise per step, `√(2 step)`, scales with σ).
    pub step_ratio: f64,
    /// Finish with one denoising step `x + σ_L² ∇f_{σ_L}(x)` (Tweedie's formula at the smallest level).
    pub denoise: bool,
    /// Clamp the final states to `[low, high]`. At level σ the chain itself is only kept within
    /// `[low - 3σ, high + 3σ]` (the blurred data reaches beyond the data range), so that a learned energy that
    /// is too steep somewhere cannot throw a chain to infinity.
    pub clamp: Option<[f64; 2]>,
    /// Metropolis-adjust every step (MALA at each level, as Du et al. 2023 do for compositions of
    /// energy-parameterised diffusion models): the Langevin move is a proposal accepted with the MALA
    /// probability under `f_σ`, so each level's chain targets `exp(f_σ)` exactly instead of with the
    /// unadjusted step's bias. With a box (`clamp`), a proposal outside `[low - 3σ, high + 3σ]` is rejected.
    pub metropolis: bool,
}

impl Default for AnnealedConfig {
    fn default() -> Self {
        AnnealedConfig {
            scales: NoiseScales::default(),
            steps_per_level: 10,
            step_ratio: 0.2,
            denoise: true,
            clamp: Some([0.0, 1.0]),
            metropolis: false,
        }
    }
}

impl AnnealedConfig {
    /// Checks the levels, steps, ratio and box.
    pub fn validate(&self) -> Result<()> {
        self.scales.validate()?;
        if self.steps_per_level == 0 {
            return Err(invalid("annealed.steps_per_level", "must be ≥ 1"));
        }
        if !(self.step_ratio > 0.0) || !self.step_ratio.is_finite() {
            return Err(invalid("annealed.step_ratio", format!("must be > 0, got {}", self.step_ratio)));
        }
        if let Some([lo, hi]) = self.clamp {
            if !(lo < hi) {
                return Err(invalid("annealed.clamp", format!("needs low < high, got [{lo}, {hi}]")));
            }
        }
        Ok(())
    }
}

/// The annealed Langevin sampler: step `t` runs at level `min(t / steps_per_level, L - 1)`, so a run of
/// [`AnnealedLangevin::total_steps`] steps visits every level `steps_per_level` times; [`Sampler::finish`]
/// takes the denoising step and the final clamp.
#[derive(Debug, Clone)]
pub struct AnnealedLangevin {
    cfg: AnnealedConfig,
    sigmas: Vec<f64>,
}

impl AnnealedLangevin {
    /// Builds the sampler after validating its configuration.
    pub fn new(cfg: AnnealedConfig) -> Result<Self> {
        cfg.validate()?;
        let sigmas = cfg.scales.sigmas();
        Ok(AnnealedLangevin { cfg, sigmas })
    }

    /// Steps of one full pass over the levels: `levels · steps_per_level`.
    pub fn total_steps(&self) -> usize {
        self.sigmas.len() * self.cfg.steps_per_level
    }

    /// The configuration.
    pub fn config(&self) -> &AnnealedConfig {
        &self.cfg
    }

    /// `x ← x + α∇f_σ(x) + √(2α) z`, `α = step_ratio · σ²`, kept within 3σ of the clamp box.
    fn step_at(&self, m: &dyn EnergyModel, chain: &mut Chain, sigma: f64) -> Result<()> {
        let alpha = self.cfg.step_ratio * sigma * sigma;
        let grad = if chain.record {
            let (f, grad) = sampler_score(m, &chain.x);
            chain.trace.push(StepDiag::of(&f, &grad));
            grad
        } else {
            sampler_grad(m, &chain.x)
        };
        let (mut next, mut mean) = langevin_proposal(&chain.x, &grad, alpha);
        if let Some([lo, hi]) = self.cfg.clamp {
            next = next.clamp(lo - 3.0 * sigma, hi + 3.0 * sigma);
            mean = mean.clamp(lo - 3.0 * sigma, hi + 3.0 * sigma);
        }
        chain.x = next;
        chain.x_mean = mean;
        Ok(())
    }

    /// The same move as a MALA proposal under `f_σ`, accepted with probability
    /// `min(1, exp(f_σ(y) − f_σ(x) + log q(x|y) − log q(y|x)))`; `f_σ` and `∇f_σ` at the kept state are cached
    /// for the next step of the level (`first` clears the cache: a new level is a new target).
    fn metropolis_step_at(&self, m: &dyn EnergyModel, chain: &mut Chain, sigma: f64, first: bool) -> Result<()> {
        let alpha = self.cfg.step_ratio * sigma * sigma;
        if first {
            chain.cache = None;
        }
        // a proposal beyond 3σ of the box is rejected
        let bounds = self.cfg.clamp.map(|[lo, hi]| [lo - 3.0 * sigma, hi + 3.0 * sigma]);
        mala_step(m, chain, alpha, bounds);
        Ok(())
    }
}

impl Sampler for AnnealedLangevin {
    fn step(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        let level = (chain.t / self.cfg.steps_per_level).min(self.sigmas.len() - 1);
        let sigma = self.sigmas[level];
        let at = m.at_noise(sigma)?;
        let first = chain.t.is_multiple_of(self.cfg.steps_per_level);
        if first {
            check_input(&at.event_shape(), &chain.x, "annealed Langevin state x")?;
        }
        if self.cfg.metropolis {
            self.metropolis_step_at(at.as_ref(), chain, sigma, first)
        } else {
            self.step_at(at.as_ref(), chain, sigma)
        }
    }

    fn finish(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        if self.cfg.denoise {
            let sigma = *self.sigmas.last().expect("validated: ≥ 1 level");
            let at = m.at_noise(sigma)?;
            check_input(&at.event_shape(), &chain.x, "annealed Langevin state x")?;
            let g = sampler_grad(at.as_ref(), &chain.x);
            chain.x = tch::no_grad(|| &chain.x + g * (sigma * sigma));
            chain.x_mean = chain.x.shallow_clone();
        } else {
            // the steps check the chains only when a level starts: check the end too
            check_input(&m.event_shape(), &chain.x, "annealed Langevin state x")?;
        }
        if let Some([lo, hi]) = self.cfg.clamp {
            chain.x = chain.x.clamp(lo, hi);
            chain.x_mean = chain.x_mean.clamp(lo, hi);
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "annealed"
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::Blurred;
    use super::*;
    use crate::energy::conditional::Conditioned;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn noise_levels_are_geometric() {
        let s = NoiseScales { sigma_max: 1.0, sigma_min: 0.01, levels: 3 }.sigmas();
        assert!((s[0] - 1.0).abs() < 1e-12 && (s[1] - 0.1).abs() < 1e-12 && (s[2] - 0.01).abs() < 1e-12);
        assert_eq!(NoiseScales { sigma_max: 0.3, sigma_min: 0.3, levels: 1 }.sigmas(), vec![0.3]);
        assert!(NoiseScales { sigma_max: 0.1, sigma_min: 0.2, levels: 3 }.validate().is_err());
        assert!(NoiseScales { sigma_max: 0.2, sigma_min: 0.1, levels: 1 }.validate().is_err());
    }

    #[test]
    fn annealed_langevin_on_the_blurred_density_ends_at_the_data_distribution() {
        // f_σ for label b is log N(x; 2, s² + σ²) + const; after the last level and Tweedie's step the chains
        // have mean 2 and variance ≈ s² (= 1 here, the smallest σ is 0.05).
        tch::manual_seed(4);
        let m = Blurred { theta: vec![-1.0, 2.0], s2: 1.0 };
        let cfg = AnnealedConfig {
            scales: NoiseScales { sigma_max: 3.0, sigma_min: 0.05, levels: 8 },
            steps_per_level: 30,
            step_ratio: 1.0,
            denoise: true,
            clamp: None,
            metropolis: false,
        };
        let x0 = Tensor::rand([8000, 1], (Kind::Float, Device::Cpu)) * 10.0 - 5.0;
        // label b; its view at every level is f(·, b; σ)/σ
        let b = Conditioned::by_name(&m, "b").unwrap();
        let sampler = AnnealedLangevin::new(cfg).unwrap();
        assert_eq!(sampler.total_steps(), 240);
        let x = sampler.run(&b, &x0, sampler.total_steps()).unwrap().x.to_kind(Kind::Double);
        let mean = f64::try_from(x.mean(Kind::Double)).unwrap();
        let var = f64::try_from(x.var(true)).unwrap();
        // sd of the mean ≈ 1/√8000 ≈ 0.011; of the variance ≈ √(2/8000) ≈ 0.016. The exact variance of these
        // unadjusted chains (the recursion v ← (1 - α/v_σ)² v + 2α over all steps, then Tweedie) is 1.031: the
        // small levels do not quite finish pulling in the spread of the large ones.
        assert!((mean - 2.0).abs() < 0.05, "mean {mean}");
        assert!((var - 1.031).abs() < 0.07, "variance {var}");
        let e = sampler.run(&b, &Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)), 1).unwrap_err();
        assert!(e.to_string().contains("[B, 1]"), "{e}");
    }

    #[test]
    fn metropolis_adjusted_levels_have_no_step_size_bias() {
        // one level σ = 1 of the blurred Gaussian: the target is N(2, s² + σ²) = N(2, 2). At step α = 0.5
        // unadjusted Langevin's stationary variance is v / (1 - α/2v) = 2/(1 - 0.125) = 2.286; MALA's is 2.
        tch::manual_seed(5);
        let m = Blurred { theta: vec![-1.0, 2.0], s2: 1.0 };
        let b = Conditioned::by_name(&m, "b").unwrap();
        let cfg = |metropolis| AnnealedConfig {
            scales: NoiseScales { sigma_max: 1.0, sigma_min: 1.0, levels: 1 },
            steps_per_level: 300,
            step_ratio: 0.5,
            denoise: false,
            clamp: None,
            metropolis,
        };
        let x0 = Tensor::randn([20000, 1], (Kind::Float, Device::Cpu)) * 2f64.sqrt() + 2.0;
        let var = |metropolis| {
            let s = AnnealedLangevin::new(cfg(metropolis)).unwrap();
            let out = s.run(&b, &x0, s.total_steps()).unwrap();
            (f64::try_from(out.x.to_kind(Kind::Double).var(true)).unwrap(), out.acceptance)
        };
        // sd of a variance estimate of 20 000 draws ≈ 2·√(2/20000) = 0.02
        let (ula, acc_ula) = var(false);
        let (mala, acc) = var(true);
        assert!((ula - 2.286).abs() < 0.07, "ULA variance {ula}");
        assert!((mala - 2.0).abs() < 0.07, "MALA variance {mala}");
        assert!(acc_ula.is_none());
        let acc = acc.expect("Metropolis steps count acceptances");
        assert!(acc > 0.5 && acc < 1.0, "acceptance {acc}");
    }

    /// `f = 10³ Σ x⁴`: its score `4·10³ x³` throws any chain outwards, faster and faster. The same at every
    /// noise level.
    struct Steep;
    impl EnergyModel for Steep {
        fn f(&self, x: &Tensor) -> Tensor {
            x.pow_tensor_scalar(4).sum_dim_intlist(1, false, x.kind()) * 1e3
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![2]
        }
        fn at_noise(&self, _sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
            Ok(Box::new(Steep))
        }
    }

    #[test]
    fn annealed_langevin_keeps_chains_near_the_clamp_range() {
        tch::manual_seed(10);
        let mut cfg = AnnealedConfig {
            scales: NoiseScales { sigma_max: 1.0, sigma_min: 0.1, levels: 3 },
            steps_per_level: 20,
            step_ratio: 0.5,
            denoise: false,
            clamp: Some([0.0, 1.0]),
            metropolis: false,
        };
        let x0 = Tensor::rand([64, 2], (Kind::Float, Device::Cpu));
        let sampler = AnnealedLangevin::new(cfg.clone()).unwrap();
        let x = sampler.run(&Steep, &x0, sampler.total_steps()).unwrap().x;
        assert!(bool::try_from(x.isfinite().all()).unwrap());
        assert!(bool::try_from(x.ge(0.0).logical_and(&x.le(1.0)).all()).unwrap());
        // Metropolis-adjusted: a proposal outside [-3σ, 1 + 3σ] is rejected, so the chains never leave that box,
        // even before the final clamp
        let mala = AnnealedLangevin::new(AnnealedConfig { metropolis: true, ..cfg.clone() }).unwrap();
        let mut chain = Chain::new(&x0);
        mala.advance(&Steep, &mut chain, mala.total_steps()).unwrap();
        let (lo, hi) = (f64::try_from(chain.x.min()).unwrap(), f64::try_from(chain.x.max()).unwrap());
        assert!(lo >= -0.3 && hi <= 1.3, "range [{lo}, {hi}]");
        // without a range the same chains leave every finite number behind, which is an error
        cfg.clamp = None;
        let sampler = AnnealedLangevin::new(cfg).unwrap();
        let e = sampler.run(&Steep, &x0, sampler.total_steps()).unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
    }

    #[test]
    fn models_without_a_noise_level_are_an_error() {
        let g = crate::energy::Gaussian::isotropic(&[0.0], 1.0, Device::Cpu).unwrap();
        let sampler = AnnealedLangevin::new(AnnealedConfig::default()).unwrap();
        let e = sampler.run(&g, &Tensor::zeros([2, 1], (Kind::Float, Device::Cpu)), 1).unwrap_err().to_string();
        assert!(e.contains("not noise-conditional"), "{e}");
    }
}
