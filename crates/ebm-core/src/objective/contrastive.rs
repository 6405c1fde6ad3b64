//! Contrastive divergence: `L = mean f(x⁻) - mean f(x⁺) + α (mean f(x⁺)² + mean f(x⁻)²)`, where `x⁺` is the
//! data batch and `x⁻` are model samples (detached) from k steps of any [`Sampler`] started at
//! - the data batch (CD-k, Hinton),
//! - the previous iteration's chains (persistent CD),
//! - a replay buffer, restarting 5% of chains from noise (IGEBM); one buffer per label for conditional
//!   models, so that every positive `(x⁺, y)` is paired with a negative drawn on `f(·, y)` from the buffer of
//!   label `y` and the negatives' labels follow the data's.
//!
//! Its gradient is the maximum-likelihood gradient `-∇θ log p(x⁺ | y)` up to the sampler's bias.

use super::{LossOutput, Objective};
use crate::batch::Batch;
use crate::check::check_input;
use crate::energy::conditional::PerSampleLabels;
use crate::energy::{EnergyModel, FrozenParams};
use crate::error::{invalid, Result};
use crate::sampler::{BufferConfig, Chain, Init, LangevinConfig, ReplayBuffer, Sampler, SamplerConfig};
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
    /// IGEBM replay buffer (one per label).
    Replay(BufferConfig),
}

/// Configuration of [`Contrastive`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveConfig {
    /// Source of chain starts.
    pub negatives: Negatives,
    /// Sampler steps per iteration (k).
    pub k: usize,
    /// The sampler.
    pub sampler: SamplerConfig,
    /// L2 penalty α on `f` at positives and negatives.
    pub alpha: f64,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        ContrastiveConfig {
            negatives: Negatives::Replay(BufferConfig::default()),
            k: 20,
            sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(0.01)),
            alpha: 0.1,
        }
    }
}

impl ContrastiveConfig {
    /// Checks k, α, the sampler and the chain starts.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(invalid("contrastive.k", "must be ≥ 1 sampler step"));
        }
        if !(self.alpha >= 0.0) || !self.alpha.is_finite() {
            return Err(invalid("contrastive.alpha", format!("must be ≥ 0, got {}", self.alpha)));
        }
        self.sampler.validate()?;
        match &self.negatives {
            Negatives::Data => Ok(()),
            Negatives::Persistent { init } => init.validate(),
            Negatives::Replay(b) => b.validate(),
        }
    }
}

/// Where a batch's chains go back to, per label: the label, the rows of the batch (all of them for `None`)
/// and the buffer indices.
type WriteBack = Vec<(usize, Option<Tensor>, Tensor)>;

enum Chains {
    Data,
    Persistent { init: Init, x: Option<Tensor> },
    Replay(Vec<ReplayBuffer>),
}

/// The contrastive-divergence objective.
pub struct Contrastive {
    cfg: ContrastiveConfig,
    sampler: Box<dyn Sampler>,
    chains: Chains,
    event: Vec<i64>,
    num_labels: i64,
    device: Device,
}

impl Contrastive {
    /// Builds the objective for `model` (its event shape and labels) with the configured sampler.
    pub fn new(cfg: ContrastiveConfig, model: &dyn EnergyModel, device: Device) -> Result<Self> {
        let sampler = cfg.sampler.build()?;
        Self::with_sampler(cfg, sampler, model, device)
    }

    /// Builds the objective with any sampler (the config's `sampler` is then not used).
    pub fn with_sampler(
        cfg: ContrastiveConfig,
        sampler: Box<dyn Sampler>,
        model: &dyn EnergyModel,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let (event, num_labels) = (model.event_shape(), model.num_labels());
        let chains = match &cfg.negatives {
            Negatives::Data => Chains::Data,
            Negatives::Persistent { .. } if num_labels > 1 => {
                return Err(invalid(
                    "contrastive.negatives",
                    "persistent chains are for unconditional models; use the replay buffer (one per label)",
                ))
            }
            Negatives::Persistent { init } => Chains::Persistent { init: init.clone(), x: None },
            Negatives::Replay(b) => Chains::Replay(
                (0..num_labels).map(|_| ReplayBuffer::new(b.clone(), &event, device)).collect::<Result<Vec<_>>>()?,
            ),
        };
        Ok(Contrastive { cfg, sampler, chains, event, num_labels, device })
    }

    /// The replay buffer of a label (0 for an unconditional model), when negatives come from one.
    pub fn buffer(&self, label: i64) -> Option<&ReplayBuffer> {
        match &self.chains {
            Chains::Replay(b) => b.get(usize::try_from(label).ok()?),
            _ => None,
        }
    }

    /// The chain starts of a batch: the data, the persistent chains, or each label's replay buffer; with the
    /// buffer indices to write back to, per label, as `(label, rows of the batch, buffer indices)`.
    fn starts(&mut self, batch: &Batch) -> Result<(Tensor, WriteBack)> {
        let b = batch.len();
        match &mut self.chains {
            Chains::Data => Ok((batch.x.detach(), Vec::new())),
            Chains::Persistent { init, x } => {
                let start = match x {
                    Some(x) if x.size()[0] == b => x.shallow_clone(),
                    _ => init.sample(b, &self.event, self.device),
                };
                Ok((start, Vec::new()))
            }
            Chains::Replay(bufs) => match &batch.labels {
                None => {
                    let drawn = bufs[0].sample(b as usize)?;
                    Ok((drawn.x, vec![(0, None, drawn.idx)]))
                }
                Some(labels) => {
                    let dev = labels.device();
                    let lab = Vec::<i64>::try_from(&labels.to_device(Device::Cpu))?;
                    let mut shape = vec![b];
                    shape.extend(&self.event);
                    let mut start = Tensor::zeros(shape.as_slice(), (Kind::Float, dev));
                    let mut groups = Vec::new();
                    for (l, buf) in bufs.iter().enumerate() {
                        let rows: Vec<i64> = (0..b).filter(|i| lab[*i as usize] == l as i64).collect();
                        if rows.is_empty() {
                            continue;
                        }
                        let rows = Tensor::from_slice(&rows).to_device(dev);
                        let drawn = buf.sample(rows.size()[0] as usize)?;
                        start = start.index_copy(0, &rows, &drawn.x.to_kind(Kind::Float));
                        groups.push((l, Some(rows), drawn.idx));
                    }
                    Ok((start, groups))
                }
            },
        }
    }

    /// Draws negatives for a batch `x⁺` (k sampler steps from the configured starts, on `f(·, y)` for the
    /// batch's labels); returns them with the mean `‖∇ₓf‖` of the last step when the sampler records it.
    /// Errors on a batch of the wrong shape or with labels out of range.
    ///
    /// # Shapes
    /// `batch.x: [B, *event]` → `[B, *event]`.
    pub fn negatives(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<(Tensor, Option<f64>)> {
        batch.check(&self.event, self.num_labels, "data batch")?;
        let (start, groups) = self.starts(batch)?;
        check_input(&self.event, &start, "contrastive chain start")?;
        let labelled;
        let model: &dyn EnergyModel = match &batch.labels {
            Some(l) => {
                labelled = PerSampleLabels::new(m, l);
                &labelled
            }
            None => m,
        };
        let _frozen = FrozenParams::new(model);
        let mut chain = Chain::new(&start);
        self.sampler.advance(model, &mut chain, self.cfg.k - 1)?;
        chain.record = true;
        self.sampler.advance(model, &mut chain, 1)?;
        let x = chain.x;
        match &mut self.chains {
            Chains::Data => {}
            Chains::Persistent { x: keep, .. } => *keep = Some(x.shallow_clone()),
            Chains::Replay(bufs) => {
                for (l, rows, idx) in groups {
                    match rows {
                        Some(r) => bufs[l].push(&idx, &x.index_select(0, &r))?,
                        None => bufs[l].push(&idx, &x)?,
                    }
                }
            }
        }
        Ok((x, chain.trace.last().map(|d| d.mean_grad_norm)))
    }
}

impl Objective for Contrastive {
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        let (neg, grad_norm) = self.negatives(m, batch)?; // checks the batch
        let labels = batch.labels.as_ref();
        let f_pos = m.f_given(&batch.x, labels, None);
        let f_neg = m.f_given(&neg, labels, None);
        let cd = f_neg.mean(Kind::Float) - f_pos.mean(Kind::Float);
        let reg = f_pos.square().mean(Kind::Float) + f_neg.square().mean(Kind::Float);
        let loss = &cd + &reg * self.cfg.alpha;
        let (mp, mn) =
            tch::no_grad(|| (f64::try_from(f_pos.mean(Kind::Double)), f64::try_from(f_neg.mean(Kind::Double))));
        let (mp, mn) = (mp?, mn?);
        let mut metrics = vec![("f_pos", mp), ("f_neg", mn), ("energy_gap", mp - mn)];
        metrics.extend(grad_norm.map(|g| ("grad_norm_x", g)));
        Ok(LossOutput { loss, metrics })
    }

    fn name(&self) -> String {
        match &self.cfg.negatives {
            Negatives::Data => format!("cd{}", self.cfg.k),
            Negatives::Persistent { .. } => "pcd".into(),
            Negatives::Replay(_) => "replay".into(),
        }
    }

    /// The persistent chains, or the replay buffers (`[capacity, *event]` for one label, stacked to
    /// `[L, capacity, *event]` for L > 1).
    fn state(&self) -> Option<Tensor> {
        match &self.chains {
            Chains::Data => None,
            Chains::Persistent { x, .. } => x.as_ref().map(|x| x.shallow_clone()),
            Chains::Replay(b) if b.len() == 1 => Some(b[0].data().shallow_clone()),
            Chains::Replay(b) => {
                Some(Tensor::stack(&b.iter().map(|b| b.data().shallow_clone()).collect::<Vec<_>>(), 0))
            }
        }
    }

    fn load_state(&mut self, state: Tensor) -> Result<()> {
        match &mut self.chains {
            Chains::Data => Ok(()),
            Chains::Persistent { x, .. } => {
                check_input(&self.event, &state, "saved persistent chains")?;
                *x = Some(state.to_device(self.device));
                Ok(())
            }
            Chains::Replay(bufs) => {
                let parts = if bufs.len() == 1 {
                    vec![state]
                } else {
                    if state.size().first() != Some(&(bufs.len() as i64)) {
                        return Err(invalid(
                            "checkpoint",
                            format!(
                                "holds replay buffers of shape {:?}, expected one per label ({})",
                                state.size(),
                                bufs.len()
                            ),
                        ));
                    }
                    (0..bufs.len() as i64).map(|l| state.select(0, l)).collect()
                };
                let new = bufs
                    .iter()
                    .zip(parts)
                    .map(|(b, t)| ReplayBuffer::from_tensor(b.config().clone(), t.to_device(self.device)))
                    .collect::<Result<Vec<_>>>()?;
                *bufs = new;
                Ok(())
            }
        }
    }

    fn chains(&self, label: i64) -> Option<Tensor> {
        match &self.chains {
            Chains::Data => None,
            Chains::Persistent { x, .. } => x.as_ref().filter(|_| label == 0).map(|x| x.shallow_clone()),
            Chains::Replay(_) => self.buffer(label).map(|b| b.data().shallow_clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gaussian;
    use crate::sampler::test_util::contrastive_gradient;

    #[test]
    fn gradient_is_the_maximum_likelihood_gradient() {
        // With exact negatives (long chains from the model), ∂L/∂θ = E_model[∂f/∂θ] - E_data[∂f/∂θ]
        // = E_model[x - θ] - E_data[x - θ] = 0 - (mean(data) - θ) = θ - mean(data).
        tch::manual_seed(2);
        let (got, want, obj) = contrastive_gradient(SamplerConfig::Langevin(LangevinConfig::seed_form(0.05)), 50);
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
        let mut obj = Contrastive::new(cfg, &g, Device::Cpu).unwrap();
        let data = Tensor::randn([20000, 2], (Kind::Float, Device::Cpu)) * 0.5 + Tensor::from_slice(&[1.0f32, -1.0]);
        let out = obj.loss(&g, &Batch::new(data)).unwrap();
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
        let mut obj = Contrastive::new(cfg.clone(), &g, Device::Cpu).unwrap();
        obj.loss(&g, &Batch::new(Tensor::zeros([8, 2], (Kind::Float, Device::Cpu)))).unwrap();
        let st = obj.state().unwrap();
        let mut other = Contrastive::new(cfg, &g, Device::Cpu).unwrap();
        other.load_state(st.copy()).unwrap();
        assert!(bool::try_from(other.buffer(0).unwrap().data().eq_tensor(&st).all()).unwrap());
        assert!(other.load_state(Tensor::zeros([3, 2], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn bad_configs_are_errors() {
        let c = ContrastiveConfig { k: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("contrastive.k"));
        let c = ContrastiveConfig { alpha: -1.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("alpha"));
        let c = ContrastiveConfig {
            sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(-0.1)),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("step_size"));
    }

    /// f(x, y) = -(x - θ_y)²/2 in 1-D, θ trainable; without labels, the label marginal.
    struct Means {
        theta: Tensor,
    }
    impl EnergyModel for Means {
        fn f(&self, x: &Tensor) -> Tensor {
            self.f_given(x, None, None)
        }
        fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, _sigma: Option<&Tensor>) -> Tensor {
            let at = |labels: &Tensor| (x.squeeze_dim(1) - self.theta.index_select(0, labels)).square() * -0.5;
            match labels {
                Some(l) => at(l),
                None => self.f_all_labels(x, None).logsumexp([1i64], false) - (self.num_labels() as f64).ln(),
            }
        }
        fn label_names(&self) -> Vec<String> {
            (0..self.theta.size()[0]).map(|i| format!("m{i}")).collect()
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.theta.shallow_clone()]
        }
    }

    #[test]
    fn gradient_is_the_maximum_likelihood_gradient_per_label() {
        // With converged negatives, ∂L/∂θ_y = (n_y / B) (θ_y - mean(x⁺ | y)) (α = 0): each label's mean only
        // sees its own data.
        tch::manual_seed(5);
        let m = Means { theta: Tensor::from_slice(&[-0.5f32, 0.5]).set_requires_grad(true) };
        let cfg = ContrastiveConfig {
            negatives: Negatives::Replay(BufferConfig {
                capacity: 16_000,
                restart_prob: 1.0,
                init: Init::Gaussian { mean: 0.0, std: 1.0 },
            }),
            k: 150,
            sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(0.05)),
            alpha: 0.0,
        };
        let mut obj = Contrastive::new(cfg, &m, Device::Cpu).unwrap();
        let n = 16_000i64;
        let labels = Tensor::from_slice(&[0i64, 1]).repeat([n / 2]);
        let x =
            Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) + labels.to_kind(Kind::Float).unsqueeze(1) * 4.0 - 2.0;
        let out = obj.loss(&m, &Batch::labelled(x.shallow_clone(), labels.shallow_clone())).unwrap();
        let g = Vec::<f32>::try_from(Tensor::run_backward(&[out.loss], &[&m.theta], false, false).remove(0)).unwrap();
        // data means: label 0 → -2, label 1 → +2; θ = ∓0.5; share ½ each
        let mean = |l: i64| {
            let mask = labels.eq(l);
            f64::try_from(x.squeeze_dim(1).masked_select(&mask).mean(Kind::Double)).unwrap()
        };
        let want = [0.5 * (-0.5 - mean(0)), 0.5 * (0.5 - mean(1))];
        // sd of each negatives' mean ≈ 0.5 · 1/√8000 ≈ 0.006
        for (gv, w) in g.iter().zip(want) {
            assert!((f64::from(*gv) - w).abs() < 0.03, "grad {g:?}, want {want:?}");
        }
        assert!((want[0] - 0.75).abs() < 0.05 && (want[1] + 0.75).abs() < 0.05);
        assert_eq!(obj.buffer(1).unwrap().data().size(), vec![16_000, 1]);
        assert!(obj.buffer(2).is_none());
        // the label buffers are saved together and restored
        let st = obj.state().unwrap();
        assert_eq!(st.size(), vec![2, 16_000, 1]);
        obj.load_state(st.copy()).unwrap();
        assert!(bool::try_from(obj.buffer(1).unwrap().data().eq_tensor(&st.select(0, 1)).all()).unwrap());
        // labels out of range are an error, and persistent chains are only for unconditional models
        let zero = Tensor::zeros([1, 1], (Kind::Float, Device::Cpu));
        let e = obj.negatives(&m, &Batch::labelled(zero, Tensor::from_slice(&[2i64]))).unwrap_err().to_string();
        assert!(e.contains("0..2"), "{e}");
        let pcd =
            ContrastiveConfig { negatives: Negatives::Persistent { init: Init::default() }, ..Default::default() };
        assert!(Contrastive::new(pcd, &m, Device::Cpu).is_err());
    }
}
