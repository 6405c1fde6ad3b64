//! Hamiltonian Monte Carlo for `p(x) ∝ exp(f(x))`: with the Hamiltonian `H(x, p) = -f(x) + ½‖p‖²`, one step
//! draws a fresh momentum `p ~ N(0, I)`, follows `leapfrog_steps` leapfrog steps of size ε
//! (`p ← p + ε/2 ∇f(x)`, `x ← x + ε p`, `p ← p + ε/2 ∇f(x)`), and accepts the end point of every chain with
//! probability `min(1, exp(-ΔH))`. It leaves `exp(f)` exactly invariant at any ε; a proposal whose state,
//! `f` or `∇f` is not finite is rejected (the chain stays where it was).
//!
//! The step size can be adapted by dual averaging (Hoffman & Gelman 2014, Alg. 5: γ = 0.05, t₀ = 10,
//! κ = 0.75, μ = log 10ε₀) towards a target acceptance during the first `warmup_steps` steps of a run; at the
//! end of warm-up ε is set to the averaged iterate ε̄ and stays fixed. The adapted ε lives in the [`Chain`]
//! (a chain started afresh, e.g. at every contrastive iteration, adapts afresh).

use super::{sq_norm, Chain, Sampler};
use crate::autograd::sampler_score;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Step-size adaptation of [`Hmc`] (dual averaging on `log ε`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HmcAdapt {
    /// The acceptance probability to aim for, in (0, 1) (0.65–0.8 is usual).
    pub target_accept: f64,
    /// Steps at the start of a run during which ε adapts; fixed afterwards.
    pub warmup_steps: usize,
}

impl Default for HmcAdapt {
    fn default() -> Self {
        HmcAdapt { target_accept: 0.75, warmup_steps: 100 }
    }
}

/// Parameters of [`Hmc`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HmcConfig {
    /// Leapfrog step size ε (the starting value when adapting).
    pub step_size: f64,
    /// Leapfrog steps per HMC step (L ≥ 1; the trajectory has length `L·ε`).
    pub leapfrog_steps: usize,
    /// Adapt ε during warm-up; `None` keeps it fixed.
    pub adapt: Option<HmcAdapt>,
    /// Record per-step diagnostics.
    pub record: bool,
}

impl Default for HmcConfig {
    fn default() -> Self {
        HmcConfig { step_size: 0.1, leapfrog_steps: 10, adapt: None, record: false }
    }
}

impl HmcConfig {
    /// Checks the step size, the number of leapfrog steps and the adaptation settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.step_size > 0.0) || !self.step_size.is_finite() {
            return Err(invalid("hmc.step_size", format!("must be > 0 and finite, got {}", self.step_size)));
        }
        if self.leapfrog_steps == 0 {
            return Err(invalid("hmc.leapfrog_steps", "must be ≥ 1"));
        }
        if let Some(a) = &self.adapt {
            if !(a.target_accept > 0.0 && a.target_accept < 1.0) {
                return Err(invalid("hmc.adapt.target_accept", format!("must be in (0, 1), got {}", a.target_accept)));
            }
            if a.warmup_steps == 0 {
                return Err(invalid("hmc.adapt.warmup_steps", "must be ≥ 1 (or leave out `adapt`)"));
            }
        }
        Ok(())
    }
}

/// The key of the dual-averaging state in [`Chain::aux`]: `[log ε, H̄, log ε̄, μ]` (f64).
const ADAPT_KEY: &str = "hmc.adapt";
/// Dual-averaging constants (Hoffman & Gelman 2014).
const GAMMA: f64 = 0.05;
const T0: f64 = 10.0;
const KAPPA: f64 = 0.75;

/// The HMC sampler.
#[derive(Debug, Clone)]
pub struct Hmc {
    cfg: HmcConfig,
}

impl Hmc {
    /// Builds the sampler after validating its configuration.
    pub fn new(cfg: HmcConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Hmc { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &HmcConfig {
        &self.cfg
    }

    /// The step size the next step of `chain` will use: the configured one, or the adapted one once the
    /// chain has started adapting.
    pub fn step_size(&self, chain: &Chain) -> f64 {
        chain.aux.get(ADAPT_KEY).and_then(|s| f64::try_from(s.get(0)).ok()).map_or(self.cfg.step_size, f64::exp)
    }

    /// Dual-averaging update after step `t` (0-based) with mean acceptance probability `alpha`.
    fn adapt(&self, chain: &mut Chain, alpha: f64) {
        let Some(a) = &self.cfg.adapt else { return };
        if chain.t >= a.warmup_steps {
            return;
        }
        let mut st = match chain.aux.get(ADAPT_KEY).map(Vec::<f64>::try_from) {
            Some(Ok(v)) if v.len() == 4 => v,
            _ => {
                let l = self.cfg.step_size.ln();
                vec![l, 0.0, 0.0, (10.0 * self.cfg.step_size).ln()]
            }
        };
        let m = (chain.t + 1) as f64;
        let w = 1.0 / (m + T0);
        st[1] = (1.0 - w) * st[1] + w * (a.target_accept - alpha);
        st[0] = st[3] - m.sqrt() / GAMMA * st[1];
        let eta = m.powf(-KAPPA);
        st[2] = eta * st[0] + (1.0 - eta) * st[2];
        if chain.t + 1 == a.warmup_steps {
            st[0] = st[2];
        }
        chain.aux.insert(ADAPT_KEY, Tensor::from_slice(&st).to_device(Device::Cpu));
    }
}

/// `‖t‖²` per sample, `[B]`.
/// Whether every value of each sample is finite, `[B]` (bool).
fn finite_rows(t: &Tensor) -> Tensor {
    let b = t.size()[0];
    t.reshape([b, -1]).isfinite().all_dim(1, false)
}

impl Sampler for Hmc {
    /// One HMC transition of every chain.
    ///
    /// # Shapes
    /// `chain.x: [B, *event]` stays `[B, *event]`; `chain.cache` holds `f: [B]` and `∇ₓf: [B, *event]` at it.
    fn step(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        let eps = self.step_size(chain);
        let (cur_f, cur_grad) = chain.current_score(m);
        let x0 = chain.x.shallow_clone();
        let p0 = x0.randn_like();
        let mut p = tch::no_grad(|| &p0 + &cur_grad * (0.5 * eps));
        let mut x = x0.shallow_clone();
        let mut end = None;
        for l in 0..self.cfg.leapfrog_steps {
            x = tch::no_grad(|| &x + &p * eps);
            let (f, grad) = sampler_score(m, &x);
            let kick = if l + 1 == self.cfg.leapfrog_steps { 0.5 * eps } else { eps };
            p = tch::no_grad(|| &p + &grad * kick);
            end = Some((f, grad));
        }
        let (f, grad) = end.unwrap_or((cur_f.shallow_clone(), cur_grad.shallow_clone()));
        let (accept, prob) = tch::no_grad(|| {
            // -ΔH = f(x') - f(x) - ½(‖p'‖² - ‖p‖²)
            let log_alpha = (&f - &cur_f).to_kind(Kind::Double) - (sq_norm(&p) - sq_norm(&p0)) * 0.5;
            let finite = log_alpha.isfinite().logical_and(&finite_rows(&x)).logical_and(&finite_rows(&grad));
            let u = log_alpha.rand_like().log();
            let accept = u.lt_tensor(&log_alpha).logical_and(&finite);
            let prob = log_alpha.clamp_max(0.0).exp().where_self(&finite, &log_alpha.zeros_like());
            (accept, prob)
        });
        chain.count_accepted(&accept);
        if self.cfg.adapt.as_ref().is_some_and(|a| chain.t < a.warmup_steps) {
            // dual averaging needs the mean acceptance probability of this step on the host (warm-up only)
            let alpha = f64::try_from(prob.mean(Kind::Double))?;
            self.adapt(chain, alpha);
        }
        chain.accept(&accept, &x, &f, &grad, (cur_f, cur_grad));
        Ok(())
    }

    fn records(&self) -> bool {
        self.cfg.record
    }

    fn name(&self) -> &'static str {
        "hmc"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::{Gaussian, GaussianMixture};
    use crate::sampler::test_util::contrastive_gradient;
    use crate::sampler::test_util::moments;
    use crate::sampler::{Init, SamplerConfig};

    fn hmc(step_size: f64, leapfrog_steps: usize, adapt: Option<HmcAdapt>) -> Hmc {
        Hmc::new(HmcConfig { step_size, leapfrog_steps, adapt, record: false }).unwrap()
    }

    #[test]
    fn reproduces_a_correlated_gaussian_from_uniform_noise() {
        tch::manual_seed(31);
        // Σ = [[1, 0.6], [0.6, 0.5]]: eigenvalues 1.4 and 0.1 (stds 1.18 and 0.32). ε = 0.15 < 2·0.32 keeps the
        // leapfrog stable; the trajectory L·ε = 1.2 is ≈ 0.6 of the narrow direction's period 2π·0.32, away
        // from the resonance at a full period.
        let g = Gaussian::new(&[1.0, -0.5], &[1.0, 0.6, 0.6, 0.5], Device::Cpu).unwrap();
        let x0 = Init::Uniform { low: -4.0, high: 4.0 }.sample(4000, &[2], Device::Cpu);
        let out = hmc(0.15, 8, None).run(&g, &x0, 150).unwrap();
        let (mean, cov) = moments(&out.x);
        eprintln!("hmc gaussian: mean {mean:?} cov {cov:?} acceptance {:?}", out.acceptance);
        // HMC is exact (no step-size bias): the tolerance is Monte Carlo error. Over 4000 independent chains the
        // sd of the mean is ≤ √(1/4000) ≈ 0.016 and of a covariance entry ≤ √(2·1/4000) ≈ 0.022; allow ~3 sd.
        for (got, want) in mean.iter().zip([1.0, -0.5]) {
            assert!((got - want).abs() < 0.05, "mean {mean:?}");
        }
        for (got, want) in cov.iter().zip([1.0, 0.6, 0.6, 0.5]) {
            assert!((got - want).abs() < 0.06, "cov {cov:?}");
        }
        let acc = out.acceptance.unwrap();
        assert!(acc > 0.5 && acc <= 1.0, "acceptance {acc}");
    }

    #[test]
    fn reproduces_mixture_mode_weights() {
        tch::manual_seed(32);
        // 0.7/0.3 at x₁ = ∓1, std 0.6: close enough that trajectories of length 1.5 cross between the modes.
        let m = GaussianMixture::isotropic(&[0.7, 0.3], &[vec![-1.0, 0.0], vec![1.0, 0.0]], 0.6, Device::Cpu).unwrap();
        let x0 = Init::Uniform { low: -3.0, high: 3.0 }.sample(4000, &[2], Device::Cpu);
        let out = hmc(0.15, 10, None).run(&m, &x0, 200).unwrap();
        let left = f64::try_from(out.x.select(1, 0).lt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap();
        eprintln!("hmc mixture: share left {left}, acceptance {:?}", out.acceptance);
        // Exact share of x₁ < 0: 0.7·Φ(1/0.6) + 0.3·Φ(-1/0.6) = 0.6809. Binomial sd over 4000 chains is 0.0074;
        // allow 4 sd.
        assert!((left - 0.6809).abs() < 0.03, "share left {left}");
    }

    #[test]
    fn adaptation_reaches_the_target_during_warm_up_then_stays_fixed() {
        tch::manual_seed(33);
        let g = Gaussian::new(&[1.0, -0.5], &[1.0, 0.6, 0.6, 0.5], Device::Cpu).unwrap();
        let target = 0.8;
        // ε₀ = 1 is beyond the leapfrog's stability limit 2·0.32 for this Σ: nearly every proposal is rejected.
        let s = hmc(1.0, 5, Some(HmcAdapt { target_accept: target, warmup_steps: 150 }));
        let x0 = Init::Gaussian { mean: 0.0, std: 1.0 }.sample(1000, &[2], Device::Cpu);
        let mut chain = Chain::new(&x0);
        let window = |chain: &mut Chain, n: usize| {
            let before = chain.moves().unwrap_or((0.0, 0.0));
            s.advance(&g, chain, n).unwrap();
            let after = chain.moves().unwrap();
            (after.0 - before.0) / (after.1 - before.1)
        };
        let early = window(&mut chain, 1);
        window(&mut chain, 149);
        assert_eq!(chain.t, 150);
        let eps_end = s.step_size(&chain);
        let after = window(&mut chain, 100);
        eprintln!("hmc adapt: acceptance at the first step {early}, after warm-up {after}, ε {eps_end}");
        assert!(early < 0.3, "acceptance at ε₀ = 1 should be far below the target, got {early}");
        // After warm-up the acceptance over 100 steps × 1000 chains has Monte Carlo sd ≈ 0.002; dual averaging
        // ends at the averaged iterate ε̄, whose acceptance is within a few hundredths of the target.
        assert!((after - target).abs() < 0.06, "acceptance after warm-up {after}, target {target}");
        assert!(eps_end < 0.63, "ε {eps_end} should have shrunk below the stability limit");
        // fixed after warm-up: bit-identical
        assert_eq!(s.step_size(&chain), eps_end);
        // without adaptation ε is never touched
        let fixed = hmc(0.3, 3, None);
        let mut c = Chain::new(&x0);
        fixed.advance(&g, &mut c, 5).unwrap();
        assert_eq!(fixed.step_size(&c), 0.3);
        assert!(c.aux.is_empty());
    }

    /// `f(x) = -½x² + ln(2 - |x|)` in 1-D: NaN for |x| > 2.
    struct NanOutside;
    impl EnergyModel for NanOutside {
        fn f(&self, x: &Tensor) -> Tensor {
            let x = x.squeeze_dim(1);
            x.square() * -0.5 + (-x.abs() + 2.0).log()
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
    }

    #[test]
    fn non_finite_proposals_are_rejected() {
        tch::manual_seed(34);
        // ε = 0.8 with 3 leapfrog steps throws many trajectories past |x| = 2, where f is NaN.
        let x0 = Tensor::zeros([500, 1], (Kind::Float, Device::Cpu));
        let out = hmc(0.8, 3, None).run(&NanOutside, &x0, 30).unwrap();
        let max = f64::try_from(out.x.abs().max()).unwrap();
        let acc = out.acceptance.unwrap();
        eprintln!("hmc nan: max |x| {max}, acceptance {acc}");
        assert!(max < 2.0, "max |x| {max}");
        assert!(acc > 0.0 && acc < 1.0, "acceptance {acc}");
    }

    #[test]
    fn gives_negatives_for_contrastive_training() {
        // With exact negatives ∂L/∂θ = θ - mean(data) (see contrastive.rs). Chains start in the model's own
        // distribution N(0.5, 1), which HMC leaves invariant.
        tch::manual_seed(35);
        let sampler: SamplerConfig =
            toml::from_str("kind = \"hmc\"\nstep_size = 0.3\nleapfrog_steps = 5\n[adapt]\nwarmup_steps = 5\n").unwrap();
        assert!(matches!(&sampler, SamplerConfig::Hmc(c) if c.adapt.as_ref().unwrap().target_accept == 0.75));
        let (got, want, _) = contrastive_gradient(sampler, 10);
        eprintln!("hmc contrastive: grad {got}, want {want}");
        // sd of the negatives' mean over 20000 chains ≈ 0.007; HMC has no bias on the mean: 4 sd
        assert!((got - want).abs() < 0.03, "grad {got}, want {want}");
    }

    #[test]
    fn bad_configs_are_errors_naming_the_field() {
        let bad = |c: HmcConfig, field: &str| {
            let e = Hmc::new(c.clone()).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
            assert!(SamplerConfig::Hmc(c).validate().is_err());
        };
        for s in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            bad(HmcConfig { step_size: s, ..Default::default() }, "hmc.step_size");
        }
        bad(HmcConfig { leapfrog_steps: 0, ..Default::default() }, "hmc.leapfrog_steps");
        for t in [0.0, 1.0, 1.5, f64::NAN] {
            let adapt = Some(HmcAdapt { target_accept: t, warmup_steps: 10 });
            bad(HmcConfig { adapt, ..Default::default() }, "hmc.adapt.target_accept");
        }
        let adapt = Some(HmcAdapt { target_accept: 0.7, warmup_steps: 0 });
        bad(HmcConfig { adapt, ..Default::default() }, "hmc.adapt.warmup_steps");
        assert!(toml::from_str::<SamplerConfig>("kind = \"hmc\"\nstep = 0.1\n").is_err());
        assert!(toml::from_str::<SamplerConfig>("kind = \"hmc\"\n[adapt]\ntarget = 0.7\n").is_err());
    }
}
