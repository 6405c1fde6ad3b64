//! Metropolis-adjusted Langevin (MALA): a Langevin proposal `y = x + ε∇f(x) + √(2ε) z` accepted with
//! probability `min(1, exp(f(y) - f(x) + log q(x|y) - log q(y|x)))`, `log q(y|x) = -‖y - x - ε∇f(x)‖² / 4ε`.
//! Unlike unadjusted Langevin it leaves `exp(f)` exactly invariant, at any step size.

use super::{langevin_proposal, sq_norm, Chain, Sampler};
use crate::autograd::sampler_score;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};

/// Parameters of [`Mala`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MalaConfig {
    /// Step size ε of the proposal.
    pub step_size: f64,
    /// Record per-step diagnostics.
    pub record: bool,
}

impl Default for MalaConfig {
    fn default() -> Self {
        MalaConfig { step_size: 0.01, record: false }
    }
}

/// The MALA sampler.
#[derive(Debug, Clone)]
pub struct Mala {
    cfg: MalaConfig,
}

impl Mala {
    /// Builds the sampler; the step size must be positive and finite.
    pub fn new(cfg: MalaConfig) -> Result<Self> {
        if !(cfg.step_size > 0.0) || !cfg.step_size.is_finite() {
            return Err(invalid("mala.step_size", format!("must be > 0 and finite, got {}", cfg.step_size)));
        }
        Ok(Mala { cfg })
    }
}

impl Sampler for Mala {
    fn step(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        mala_step(m, chain, self.cfg.step_size, None);
        Ok(())
    }

    fn records(&self) -> bool {
        self.cfg.record
    }

    fn name(&self) -> &'static str {
        "mala"
    }
}

/// One MALA transition of `chain` under `m` at step `eps` (also the Metropolis-adjusted levels of
/// [`super::AnnealedLangevin`]): the proposal `y = x + ε∇f(x) + √(2ε) z`, accepted with probability
/// `min(1, exp(f(y) − f(x) + log q(x|y) − log q(y|x)))`; with `bounds = Some([lo, hi])` a proposal with any
/// coordinate outside `[lo, hi]` is rejected. `f` and `∇f` of the kept states go to `chain.cache`.
///
/// # Shapes
/// `chain.x: [B, *event]` stays `[B, *event]`.
pub(crate) fn mala_step(m: &dyn EnergyModel, chain: &mut Chain, eps: f64, bounds: Option<[f64; 2]>) {
    let (cur_f, cur_grad) = chain.current_score(m);
    let (y, _) = langevin_proposal(&chain.x, &cur_grad, eps);
    let (prop_f, prop_grad) = sampler_score(m, &y);
    let x = &chain.x;
    let accept = tch::no_grad(|| {
        let fwd = sq_norm(&(&y - x - &cur_grad * eps)) * (-1.0 / (4.0 * eps));
        let bwd = sq_norm(&(x - &y - &prop_grad * eps)) * (-1.0 / (4.0 * eps));
        let log_alpha = &prop_f - &cur_f + bwd - fwd;
        let accept = log_alpha.rand_like().log().lt_tensor(&log_alpha);
        match bounds {
            Some([lo, hi]) => {
                let flat = y.reshape([y.size()[0], -1]);
                accept.logical_and(&flat.ge(lo).logical_and(&flat.le(hi)).all_dim(1, false))
            }
            None => accept,
        }
    });
    chain.count_accepted(&accept);
    chain.accept(&accept, &y, &prop_f, &prop_grad, (cur_f, cur_grad));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::{Gaussian, GaussianMixture};
    use crate::sampler::test_util::moments;
    use crate::sampler::{Init, Langevin, LangevinConfig};
    use tch::{Device, Kind, Tensor};

    #[test]
    fn reproduces_a_correlated_gaussian_from_uniform_noise() {
        tch::manual_seed(3);
        let g = Gaussian::new(&[1.0, -0.5], &[1.0, 0.6, 0.6, 0.5], Device::Cpu).unwrap();
        let x0 = Init::Uniform { low: -4.0, high: 4.0 }.sample(4000, &[2], Device::Cpu);
        let out = Mala::new(MalaConfig { step_size: 0.1, record: false }).unwrap().run(&g, &x0, 400).unwrap();
        let (mean, cov) = moments(&out.x);
        // MALA has no step-size bias: tolerances are Monte Carlo error (≈ 0.02 on 4000 chains) times 3.
        for (got, want) in mean.iter().zip([1.0, -0.5]) {
            assert!((got - want).abs() < 0.06, "mean {mean:?}");
        }
        for (got, want) in cov.iter().zip([1.0, 0.6, 0.6, 0.5]) {
            assert!((got - want).abs() < 0.06, "cov {cov:?}");
        }
        let acc = out.acceptance.unwrap();
        assert!(acc > 0.3 && acc < 1.0, "acceptance {acc}");
    }

    #[test]
    fn reproduces_mixture_mode_weights() {
        tch::manual_seed(8);
        let m = GaussianMixture::isotropic(&[0.7, 0.3], &[vec![-1.0, 0.0], vec![1.0, 0.0]], 0.6, Device::Cpu).unwrap();
        let x0 = Init::Uniform { low: -3.0, high: 3.0 }.sample(4000, &[2], Device::Cpu);
        let out = Mala::new(MalaConfig { step_size: 0.1, record: false }).unwrap().run(&m, &x0, 800).unwrap();
        let left = f64::try_from(out.x.select(1, 0).lt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap();
        // exact share of x < 0 is 0.6809 (see the Langevin test)
        assert!((left - 0.681).abs() < 0.04, "share left {left}");
    }

    #[test]
    fn mala_bias_is_smaller_than_langevin_at_a_large_step() {
        // 1-D N(0, 1), ε = 0.5: ULA's stationary variance is 1/(1 - ε/2) = 4/3 exactly; MALA's is 1.
        tch::manual_seed(21);
        let g = Gaussian::isotropic(&[0.0], 1.0, Device::Cpu).unwrap();
        let x0 = Init::Gaussian { mean: 0.0, std: 1.0 }.sample(20000, &[1], Device::Cpu);
        let ula = Langevin::new(LangevinConfig::seed_form(0.5)).unwrap().run(&g, &x0, 200).unwrap();
        let mala = Mala::new(MalaConfig { step_size: 0.5, record: false }).unwrap().run(&g, &x0, 200).unwrap();
        let var = |t: &Tensor| f64::try_from(t.var(true)).unwrap();
        let (vu, vm) = (var(&ula.x), var(&mala.x));
        assert!((vu - 4.0 / 3.0).abs() < 0.05, "ULA variance {vu}");
        assert!((vm - 1.0).abs() < 0.05, "MALA variance {vm}");
        assert!((vm - 1.0).abs() < (vu - 1.0).abs() / 3.0);
    }

    #[test]
    fn bad_step_is_an_error() {
        assert!(Mala::new(MalaConfig { step_size: -0.1, record: false })
            .unwrap_err()
            .to_string()
            .contains("step_size"));
    }
}
