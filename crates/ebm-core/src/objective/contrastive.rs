//! Contrastive divergence: `L = mean f(x⁻) - mean f(x⁺) + α (mean f(x⁺)² + mean f(x⁻)²)`, where `x⁺` is the
//! data batch and `x⁻` are model samples (detached) from k Langevin steps started at
//! - the data batch (CD-k, Hinton),
//! - the previous iteration's chains (persistent CD),
//! - a replay buffer, restarting 5% of chains from noise (IGEBM).
//!
//! Its gradient is the maximum-likelihood gradient `-∇θ log p(x⁺)` up to the sampler's bias.

use super::{LossOutput, Objective};
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use crate::sampler::{BufferConfig, Init, Langevin, LangevinConfig, ReplayBuffer, StepDiag};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Where the negative chains start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Negatives {
    /// CD-k: from the data batch.
    Data,
    /// Persistent CD: from the chains of the previous iteration (first started from `init`).
    Persistent {
        /// Initial distribution of the chains.
        init: Init,
    },
    /// IGEBM replay buffer.
    Replay(BufferConfig),
}

/// Configuration of [`Contrastive`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Source of chain starts.
    pub negatives: Negatives,
    /// Langevin steps per iteration (k).
    pub k: usize,
    /// The sampler.
    pub langevin: LangevinConfig,
    /// L2 penalty α on `f` at positives and negatives.
    pub alpha: f64,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        ContrastiveConfig {
            negatives: Negatives::Replay(BufferConfig::default()),
            k: 20,
            langevin: LangevinConfig::seed_form(0.01),
            alpha: 0.1,
        }
    }
}

/// Checks the chain length `k ≥ 1` and the energy penalty `α ≥ 0` (finite) of a contrastive objective;
/// errors name `<section>.k` / `<section>.alpha`.
pub(crate) fn check_k_and_alpha(section: &str, k: usize, alpha: f64) -> Result<()> {
    if k == 0 {
        return Err(invalid(&format!("{section}.k"), "must be ≥ 1 Langevin step"));
    }
    if !(alpha >= 0.0) || !alpha.is_finite() {
        return Err(invalid(&format!("{section}.alpha"), format!("must be ≥ 0, got {alpha}")));
    }
    Ok(())
}

impl ContrastiveConfig {
    /// Checks k, α and the sampler.
    pub fn validate(&self) -> Result<()> {
        check_k_and_alpha("contrastive", self.k, self.alpha)?;
        self.langevin.validate()?;
        match &self.negatives {
            Negatives::Data => Ok(()),
            Negatives::Persistent { init } => init.validate(),
            Negatives::Replay(b) => b.validate(),
        }
    }
}

enum Chains {
    Data,
    Persistent { init: Init, x: Option<Tensor> },
    Replay(ReplayBuffer),
}

/// The contrastive-divergence objective.
pub struct Contrastive {
    cfg: ContrastiveConfig,
    sampler: Langevin,
    chains: Chains,
    event: Vec<i64>,
    device: Device,
}

impl Contrastive {
    /// Builds the objective for a model with event shape `event`.
    pub fn new(cfg: ContrastiveConfig, event: &[i64], device: Device) -> Result<Self> {
        cfg.validate()?;
        let sampler = Langevin::new(cfg.langevin.clone())?;
        let chains = match &cfg.negatives {
            Negatives::Data => Chains::Data,
            Negatives::Persistent { init } => Chains::Persistent { init: init.clone(), x: None },
            Negatives::Replay(b) => Chains::Replay(ReplayBuffer::new(b.clone(), event, device)?),
        };
        Ok(Contrastive { cfg, sampler, chains, event: event.to_vec(), device })
    }

    /// The replay buffer, when negatives come from one.
    pub fn buffer(&self) -> Option<&ReplayBuffer> {
        match &self.chains {
            Chains::Replay(b) => Some(b),
            _ => None,
        }
    }

    /// Draws negatives for a batch `x⁺` (k Langevin steps from the configured starts); returns them with
    /// the diagnostics of the last step.
    ///
    /// # Shapes
    /// `pos: [B, *event]` → `[B, *event]`.
    pub fn negatives(&mut self, m: &dyn EnergyModel, pos: &Tensor) -> Result<(Tensor, StepDiag)> {
        let b = pos.size()[0];
        let (start, idx) = match &mut self.chains {
            Chains::Data => (pos.detach(), None),
            Chains::Persistent { init, x } => {
                let start = match x {
                    Some(x) if x.size()[0] == b => x.shallow_clone(),
                    _ => init.sample(b, &self.event, self.device),
                };
                (start, None)
            }
            Chains::Replay(buf) => {
                let batch = buf.sample(b as usize)?;
                (batch.x, Some(batch.idx))
            }
        };
        crate::energy::check_input(&self.event, &start, "contrastive chain start")?;
        let _frozen = crate::energy::FrozenParams::new(m);
        let mut x = start;
        let mut diag = Vec::with_capacity(1);
        for i in 0..self.cfg.k {
            let d = (i + 1 == self.cfg.k).then_some(&mut diag);
            x = self.sampler.step(m, &x, d).0;
        }
        match &mut self.chains {
            Chains::Data => {}
            Chains::Persistent { x: keep, .. } => *keep = Some(x.shallow_clone()),
            Chains::Replay(buf) => buf.push(idx.as_ref().expect("replay has indices"), &x)?,
        }
        Ok((x, diag[0]))
    }
}

impl Objective for Contrastive {
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Tensor) -> Result<LossOutput> {
        crate::energy::check_input(&self.event, batch, "data batch")?;
        let (neg, diag) = self.negatives(m, batch)?;
        let f_pos = m.f(batch);
        let f_neg = m.f(&neg);
        let cd = f_neg.mean(Kind::Float) - f_pos.mean(Kind::Float);
        let reg = f_pos.square().mean(Kind::Float) + f_neg.square().mean(Kind::Float);
        let loss = &cd + &reg * self.cfg.alpha;
        let (mp, mn) =
            tch::no_grad(|| (f64::try_from(f_pos.mean(Kind::Double)), f64::try_from(f_neg.mean(Kind::Double))));
        let (mp, mn) = (mp?, mn?);
        Ok(LossOutput {
            loss,
            metrics: vec![("f_pos", mp), ("f_neg", mn), ("energy_gap", mp - mn), ("grad_norm_x", diag.mean_grad_norm)],
        })
    }

    fn name(&self) -> String {
        match &self.cfg.negatives {
            Negatives::Data => format!("cd{}", self.cfg.k),
            Negatives::Persistent { .. } => "pcd".into(),
            Negatives::Replay(_) => "replay".into(),
        }
    }

    fn state(&self) -> Option<Tensor> {
        match &self.chains {
            Chains::Data => None,
            Chains::Persistent { x, .. } => x.as_ref().map(|x| x.shallow_clone()),
            Chains::Replay(b) => Some(b.data().shallow_clone()),
        }
    }

    fn load_state(&mut self, state: Tensor) -> Result<()> {
        match &mut self.chains {
            Chains::Data => Ok(()),
            Chains::Persistent { x, .. } => {
                crate::energy::check_input(&self.event, &state, "saved persistent chains")?;
                *x = Some(state.to_device(self.device));
                Ok(())
            }
            Chains::Replay(b) => {
                *b = ReplayBuffer::from_tensor(b.config().clone(), state.to_device(self.device))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gaussian;

    /// A 1-D Gaussian model with a trainable mean: f(x) = -(x - θ)²/2.
    struct Shift {
        theta: Tensor,
    }
    impl EnergyModel for Shift {
        fn f(&self, x: &Tensor) -> Tensor {
            (x.squeeze_dim(1) - &self.theta).square() * -0.5
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.theta.shallow_clone()]
        }
    }

    #[test]
    fn gradient_is_the_maximum_likelihood_gradient() {
        // With exact negatives (long chains from the model), ∂L/∂θ = E_model[∂f/∂θ] - E_data[∂f/∂θ]
        // = E_model[x - θ] - E_data[x - θ] = 0 - (mean(data) - θ) = θ - mean(data).
        tch::manual_seed(2);
        let m = Shift { theta: Tensor::from_slice(&[0.5f32]).set_requires_grad(true) };
        let cfg = ContrastiveConfig {
            negatives: Negatives::Persistent { init: Init::Gaussian { mean: 0.5, std: 1.0 } },
            k: 50,
            langevin: LangevinConfig::seed_form(0.05),
            alpha: 0.0,
        };
        let mut obj = Contrastive::new(cfg, &[1], Device::Cpu).unwrap();
        let data = Tensor::randn([20000, 1], (Kind::Float, Device::Cpu)) + 2.0;
        let out = obj.loss(&m, &data).unwrap();
        let g = Tensor::run_backward(&[out.loss], &[&m.theta], false, false).remove(0);
        let want = 0.5 - f64::try_from(data.mean(Kind::Double)).unwrap();
        let got = f64::try_from(g).unwrap();
        // sd of the negatives' mean over 20000 chains ≈ 0.007; ULA bias on the mean is 0
        assert!((got - want).abs() < 0.03, "grad {got}, want {want}");
        assert_eq!(obj.name(), "pcd");
        assert_eq!(obj.state().unwrap().size(), vec![20000, 1]);
    }

    #[test]
    fn cd_from_data_on_the_true_model_has_zero_mean_gap() {
        // If the model equals the data distribution, chains started at data stay in distribution.
        tch::manual_seed(4);
        let g = Gaussian::isotropic(&[1.0, -1.0], 0.5, Device::Cpu).unwrap();
        let cfg = ContrastiveConfig { negatives: Negatives::Data, k: 10, ..Default::default() };
        let mut obj = Contrastive::new(cfg, &[2], Device::Cpu).unwrap();
        let data = Tensor::randn([20000, 2], (Kind::Float, Device::Cpu)) * 0.5 + Tensor::from_slice(&[1.0f32, -1.0]);
        let out = obj.loss(&g, &data).unwrap();
        let gap = out.metrics.iter().find(|(n, _)| *n == "energy_gap").unwrap().1;
        assert!(gap.abs() < 0.03, "gap {gap}");
        assert_eq!(obj.name(), "cd10");
    }

    #[test]
    fn replay_buffer_round_trips_its_state() {
        let cfg = ContrastiveConfig {
            negatives: Negatives::Replay(BufferConfig { capacity: 64, ..Default::default() }),
            k: 2,
            ..Default::default()
        };
        let g = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        let mut obj = Contrastive::new(cfg.clone(), &[2], Device::Cpu).unwrap();
        obj.loss(&g, &Tensor::zeros([8, 2], (Kind::Float, Device::Cpu))).unwrap();
        let st = obj.state().unwrap();
        let mut other = Contrastive::new(cfg, &[2], Device::Cpu).unwrap();
        other.load_state(st.copy()).unwrap();
        assert!(bool::try_from(other.buffer().unwrap().data().eq_tensor(&st).all()).unwrap());
        assert!(other.load_state(Tensor::zeros([3, 2], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn bad_configs_are_errors() {
        let c = ContrastiveConfig { k: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("contrastive.k"));
        let c = ContrastiveConfig { alpha: -1.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("alpha"));
        let c = ContrastiveConfig { langevin: LangevinConfig::seed_form(-0.1), ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("step_size"));
    }
}
