//! MCMC samplers for `p(x) ∝ exp(f(x))`: Langevin (two parameterisations), MALA, annealed Langevin over
//! noise levels, diffusion-recovery sampling, Hamiltonian Monte Carlo, parallel tempering, and the replay
//! buffer that IGEBM-style training draws its chains from.

pub mod annealed;
pub mod buffer;
pub mod hmc;
pub mod langevin;
pub mod mala;
pub mod recovery;
pub mod tempering;

pub use annealed::{AnnealedConfig, AnnealedLangevin, NoiseScales};
pub use buffer::{BufferBatch, BufferConfig, ReplayBuffer};
pub use hmc::{Hmc, HmcAdapt, HmcConfig};
pub use langevin::{Langevin, LangevinConfig};
pub use mala::{Mala, MalaConfig};
pub use recovery::{RecoveryConfig, RecoverySampler};
pub use tempering::{InnerMove, ParallelTempering, TemperingConfig};

use crate::check::check_input;
use crate::energy::{EnergyModel, FrozenParams};
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Per-step diagnostics of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepDiag {
    /// Mean over the batch of `f(x)` before the step.
    pub mean_f: f64,
    /// Mean over the batch of `‖∇ₓf(x)‖` before the step.
    pub mean_grad_norm: f64,
}

impl StepDiag {
    /// The diagnostics of a state from its `f: [B]` and `∇ₓf: [B, *event]` (one host sync).
    pub fn of(f: &Tensor, grad: &Tensor) -> Self {
        StepDiag { mean_f: mean_f64(f), mean_grad_norm: mean_norm(grad) }
    }
}

/// What a sampler returns after `n` steps.
#[derive(Debug)]
pub struct SampleOutput {
    /// The final states, `[B, *event]`, detached.
    pub x: Tensor,
    /// The noise-free mean of the last step (`x + λ∇f` before noise), `[B, *event]`: often a cleaner
    /// picture of the chain for images.
    pub x_mean: Tensor,
    /// Acceptance rate over all steps and chains of a Metropolis-corrected sampler; `None` otherwise.
    pub acceptance: Option<f64>,
    /// Per-step diagnostics, when the sampler was asked to record them.
    pub trace: Vec<StepDiag>,
}

/// The state of a batch of chains between steps: what [`Sampler::step`] reads and advances.
#[derive(Debug)]
pub struct Chain {
    /// The current states, `[B, *event]`, detached.
    pub x: Tensor,
    /// The noise-free mean of the last step (`x` itself before the first step).
    pub x_mean: Tensor,
    /// Steps taken so far (samplers whose step depends on time, e.g. annealed Langevin, read it).
    pub t: usize,
    /// Record a [`StepDiag`] at every step while set.
    pub record: bool,
    /// The recorded diagnostics.
    pub trace: Vec<StepDiag>,
    /// `(accepted, proposed)` chain moves of a Metropolis-corrected sampler counted on the host; those counted
    /// by [`Chain::count_accepted`] are still on the device: read the total with [`Chain::moves`].
    moves: Option<(f64, f64)>,
    /// Accepted moves counted on the device (a `[]` f64 tensor), not yet in `moves`.
    accepted: Option<Tensor>,
    /// `f` and `∇ₓf` at `x`, kept by samplers that reuse them at the next step (MALA).
    pub cache: Option<(Tensor, Tensor)>,
    /// Further sampler-specific state between steps, by name (HMC's adapted step size, parallel tempering's
    /// replicas and swap counts); empty at the start.
    pub aux: BTreeMap<&'static str, Tensor>,
}

impl Chain {
    /// Chains starting at `x0` (detached).
    pub fn new(x0: &Tensor) -> Self {
        let x = x0.detach();
        Chain {
            x_mean: x.shallow_clone(),
            x,
            t: 0,
            record: false,
            trace: Vec::new(),
            moves: None,
            accepted: None,
            cache: None,
            aux: BTreeMap::new(),
        }
    }

    /// Counts Metropolis decisions.
    pub fn count_moves(&mut self, accepted: f64, proposed: f64) {
        let (a, p) = self.moves.unwrap_or((0.0, 0.0));
        self.moves = Some((a + accepted, p + proposed));
    }

    /// Counts the Metropolis decisions `accept: [B]` (bool) without reading them back: the accepted count stays
    /// on the device until [`Chain::moves`] or [`Chain::into_output`] reads it (no host sync per step).
    pub fn count_accepted(&mut self, accept: &Tensor) {
        let n = tch::no_grad(|| accept.sum(Kind::Double));
        self.accepted = Some(match self.accepted.take() {
            Some(mut a) => {
                a += n;
                a
            }
            None => n,
        });
        self.count_moves(0.0, accept.size()[0] as f64);
    }

    /// Adds the move counts of `other` (e.g. a replica's sub-chain) to this chain's, without reading them back.
    pub fn absorb_moves(&mut self, other: &mut Chain) {
        if let Some((a, p)) = other.moves.take() {
            self.count_moves(a, p);
        }
        if let Some(n) = other.accepted.take() {
            self.accepted = Some(match self.accepted.take() {
                Some(a) => a + n,
                None => n,
            });
        }
    }

    /// `(accepted, proposed)` moves so far (reads the device count back: one host sync); `None` before any
    /// Metropolis decision.
    pub fn moves(&self) -> Option<(f64, f64)> {
        let (a, p) = self.moves?;
        let dev = self.accepted.as_ref().and_then(|t| f64::try_from(t).ok()).unwrap_or(0.0);
        Some((a + dev, p))
    }

    /// `f` and `∇ₓf` at the current states, `[B]` and `[B, *event]`: taken from `cache` when the previous
    /// step left them there, computed otherwise; pushes their [`StepDiag`] when `record` is set. For samplers
    /// that reuse the score of the current state (MALA, HMC).
    pub fn current_score(&mut self, m: &dyn EnergyModel) -> (Tensor, Tensor) {
        let (f, grad) = match self.cache.take() {
            Some(c) => c,
            None => crate::autograd::sampler_score(m, &self.x),
        };
        if self.record {
            self.trace.push(StepDiag::of(&f, &grad));
        }
        (f, grad)
    }

    /// The Metropolis decision of every chain: where `accept: [B]` (bool) holds, the proposal `x_new`, its `f`
    /// and `∇ₓf` replace the current state (`cur_f`, `cur_grad`), which the others keep; the kept `f` and
    /// `∇ₓf` go to `cache` for the next step.
    pub fn accept(
        &mut self,
        accept: &Tensor,
        x_new: &Tensor,
        f_new: &Tensor,
        grad_new: &Tensor,
        cur: (Tensor, Tensor),
    ) {
        let (cur_f, cur_grad) = cur;
        let mut bshape = vec![accept.size()[0]];
        bshape.extend(std::iter::repeat_n(1, self.x.dim() - 1));
        let a = accept.view(bshape.as_slice());
        let next = tch::no_grad(|| x_new.where_self(&a, &self.x));
        self.cache = Some((f_new.where_self(accept, &cur_f), grad_new.where_self(&a, &cur_grad)));
        self.x_mean = next.shallow_clone();
        self.x = next;
    }

    /// The chain's result.
    pub fn into_output(self) -> SampleOutput {
        let acceptance = self.moves().and_then(|(a, p)| (p > 0.0).then(|| a / p));
        SampleOutput { x: self.x, x_mean: self.x_mean, acceptance, trace: self.trace }
    }
}

/// A Markov chain sampler targeting `exp(f)`, defined by one transition; [`Sampler::run`] is the one
/// loop that every sampler shares. A new sampler implements [`Sampler::step`] (and [`Sampler::finish`] when
/// it ends with a special step) and is usable at once for final sampling and for contrastive training.
pub trait Sampler {
    /// Advances `chain` by one transition (no input checks; the model's parameters are already frozen).
    /// Pushes a [`StepDiag`] of the state before the step onto `chain.trace` when `chain.record` is set.
    ///
    /// # Shapes
    /// `chain.x: [B, *event]` stays `[B, *event]`.
    fn step(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()>;

    /// Ends a run (e.g. a final denoising step); nothing by default.
    fn finish(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        let _ = (m, chain);
        Ok(())
    }

    /// Whether [`Sampler::run`] records per-step diagnostics (the sampler's `record` setting).
    fn records(&self) -> bool {
        false
    }

    /// Short name, e.g. `"langevin"`.
    fn name(&self) -> &'static str;

    /// `n` transitions of `chain` (no checks, parameters assumed frozen).
    fn advance(&self, m: &dyn EnergyModel, chain: &mut Chain, n: usize) -> Result<()> {
        for _ in 0..n {
            self.step(m, chain)?;
            chain.t += 1;
        }
        Ok(())
    }

    /// Runs `n_steps` steps from `x0` and returns the final states. The start is checked, and the model's
    /// parameters are frozen while it runs (no parameter gradients are built) and restored after.
    ///
    /// # Shapes
    /// `x0: [B, *event]` → `x, x_mean: [B, *event]`.
    fn run(&self, m: &dyn EnergyModel, x0: &Tensor, n_steps: usize) -> Result<SampleOutput> {
        Ok(self.run_chain(m, x0, n_steps)?.into_output())
    }

    /// [`Sampler::run`], returning the whole [`Chain`] (its `aux` state included, e.g. parallel tempering's
    /// swap counts) instead of its output.
    ///
    /// # Shapes
    /// `x0: [B, *event]` → `chain.x: [B, *event]`.
    fn run_chain(&self, m: &dyn EnergyModel, x0: &Tensor, n_steps: usize) -> Result<Chain> {
        check_start(m, x0)?;
        let _frozen = FrozenParams::new(m);
        let mut chain = Chain::new(x0);
        chain.record = self.records();
        self.advance(m, &mut chain, n_steps)?;
        self.finish(m, &mut chain)?;
        Ok(chain)
    }
}

/// Which sampler to use; `build()` turns it into a [`Sampler`]. Adding a sampler is one new file plus one
/// arm here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerConfig {
    /// Unadjusted Langevin.
    Langevin(LangevinConfig),
    /// Metropolis-adjusted Langevin.
    Mala(MalaConfig),
    /// Annealed Langevin over noise levels (noise-conditional models).
    Annealed(AnnealedConfig),
    /// Hamiltonian Monte Carlo (leapfrog, Metropolis-corrected, optional step-size adaptation).
    Hmc(HmcConfig),
    /// Parallel tempering: MALA or Langevin replicas at several inverse temperatures, with swaps.
    Tempering(TemperingConfig),
    /// Diffusion-recovery ancestral sampling (noise-conditional models trained by
    /// [`crate::objective::Drl`]): the recovery conditionals from the largest noise level down.
    Recovery(RecoveryConfig),
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig::Langevin(LangevinConfig::default())
    }
}

impl SamplerConfig {
    /// Validates and builds the sampler.
    pub fn build(&self) -> Result<Box<dyn Sampler>> {
        Ok(match self {
            SamplerConfig::Langevin(c) => Box::new(Langevin::new(c.clone())?),
            SamplerConfig::Mala(c) => Box::new(Mala::new(c.clone())?),
            SamplerConfig::Annealed(c) => Box::new(AnnealedLangevin::new(c.clone())?),
            SamplerConfig::Hmc(c) => Box::new(Hmc::new(c.clone())?),
            SamplerConfig::Tempering(c) => Box::new(ParallelTempering::new(c.clone())?),
            SamplerConfig::Recovery(c) => Box::new(RecoverySampler::new(c.clone())?),
        })
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        self.build().map(|_| ())
    }
}

/// Initial states of chains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Init {
    /// Uniform on `[low, high]` in every coordinate.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// `N(mean, std²)` in every coordinate.
    Gaussian {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
}

impl Default for Init {
    fn default() -> Self {
        Init::Uniform { low: -4.0, high: 4.0 }
    }
}

impl Init {
    /// Checks the bounds / std.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Init::Uniform { low, high } if !(low < high) || !low.is_finite() || !high.is_finite() => {
                Err(invalid("init", format!("uniform needs finite low < high, got [{low}, {high}]")))
            }
            Init::Gaussian { mean, std } if !(std > 0.0) || !mean.is_finite() || !std.is_finite() => {
                Err(invalid("init", format!("gaussian needs finite mean and std > 0, got N({mean}, {std}²)")))
            }
            _ => Ok(()),
        }
    }

    /// Draws `n` states of shape `event` (f32) from libtorch's RNG.
    ///
    /// # Shapes
    /// → `[n, *event]`.
    pub fn sample(&self, n: i64, event: &[i64], device: Device) -> Tensor {
        let mut shape = vec![n];
        shape.extend_from_slice(event);
        let opts = (Kind::Float, device);
        match *self {
            Init::Uniform { low, high } => Tensor::rand(shape.as_slice(), opts) * (high - low) + low,
            Init::Gaussian { mean, std } => Tensor::randn(shape.as_slice(), opts) * std + mean,
        }
    }
}

/// Validates a chain's start against the model.
pub(crate) fn check_start(m: &dyn EnergyModel, x0: &Tensor) -> Result<()> {
    check_input(&m.event_shape(), x0, "sampler start x0")
}

/// The Langevin move from `x` with gradient `grad` and step `α`: `(x + α grad + √(2α) z, x + α grad)`, the
/// noise drawn in place into the result's buffer.
///
/// # Shapes
/// `x`, `grad`: `[B, *event]` → two `[B, *event]`.
pub(crate) fn langevin_proposal(x: &Tensor, grad: &Tensor, alpha: f64) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let mut mean = grad * alpha;
        mean += x;
        let mut next = mean.empty_like();
        let _ = next.normal_(0.0, (2.0 * alpha).sqrt());
        next += &mean;
        (next, mean)
    })
}

/// `‖t‖²` per sample: `[B, *event]` → `[B]`.
pub(crate) fn sq_norm(t: &Tensor) -> Tensor {
    let b = t.size()[0];
    t.reshape([b, -1]).square().sum_dim_intlist(1, false, t.kind())
}

/// `‖g‖` per sample, averaged over the batch.
pub(crate) fn mean_norm(g: &Tensor) -> f64 {
    let b = g.size()[0];
    f64::try_from(g.reshape([b, -1]).norm_scalaropt_dim(2.0, [1], false).mean(Kind::Double)).unwrap_or(f64::NAN)
}

/// Mean of a tensor as f64.
pub(crate) fn mean_f64(t: &Tensor) -> f64 {
    f64::try_from(t.mean(Kind::Double)).unwrap_or(f64::NAN)
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// A 1-D Gaussian model with a trainable mean: `f(x) = -(x - θ)²/2` (the test model of the contrastive,
    /// energy-discrepancy, HMC and tempering tests).
    pub struct Shift {
        /// The mean θ, `[1]`.
        pub theta: Tensor,
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

    /// The contrastive loss's gradient `∂L/∂θ` for the model [`Shift`] at θ = 0.5 with negatives from `k` steps of
    /// `sampler` on persistent chains started in the model's own distribution N(0.5, 1), on 20 000 data points
    /// from N(2, 1), α = 0; returned with the exact maximum-likelihood gradient `θ − mean(data)` and the
    /// objective. Seed libtorch before calling.
    pub fn contrastive_gradient(sampler: SamplerConfig, k: usize) -> (f64, f64, crate::objective::Contrastive) {
        use crate::objective::{Contrastive, ContrastiveConfig, Negatives, Objective};
        let m = Shift { theta: Tensor::from_slice(&[0.5f32]).set_requires_grad(true) };
        let cfg = ContrastiveConfig {
            negatives: Negatives::Persistent { init: Init::Gaussian { mean: 0.5, std: 1.0 } },
            k,
            sampler,
            alpha: 0.0,
        };
        let mut obj = Contrastive::new(cfg, &m, Device::Cpu).unwrap();
        let data = Tensor::randn([20000, 1], (Kind::Float, Device::Cpu)) + 2.0;
        let out = obj.loss(&m, &crate::batch::Batch::new(data.shallow_clone())).unwrap();
        let g = Tensor::run_backward(&[out.loss], &[&m.theta], false, false).remove(0);
        let want = 0.5 - f64::try_from(data.mean(Kind::Double)).unwrap();
        (f64::try_from(g).unwrap(), want, obj)
    }

    /// Sample mean `[D]` and covariance `[D, D]` of `x: [N, D]`, as f64 vectors.
    pub fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let x = x.to_kind(Kind::Double);
        let mean = x.mean_dim(0, false, Kind::Double);
        let c = &x - &mean;
        let cov = c.transpose(0, 1).matmul(&c) / (x.size()[0] - 1) as f64;
        (Vec::<f64>::try_from(mean).unwrap(), Vec::<f64>::try_from(cov.flatten(0, -1)).unwrap())
    }

    /// `f(x | y; σ) = -½ σ (x - θ_y)² / (s² + σ²)` in 1-D (σ = 0 without a σ): `f/σ` is exactly the
    /// log-density of the data `N(θ_y, s²)` blurred by `N(0, σ²)`, so it is the minimiser of noise-conditional
    /// DSM, and annealed Langevin on it ends at the data. Without labels, the label marginal.
    pub struct Blurred {
        pub theta: Vec<f64>,
        pub s2: f64,
    }

    impl EnergyModel for Blurred {
        fn f(&self, x: &Tensor) -> Tensor {
            self.f_given(x, None, None)
        }
        fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
            let b = x.size()[0];
            let s = match sigma {
                Some(s) => s.to_kind(x.kind()),
                None => Tensor::zeros([b], (x.kind(), x.device())),
            };
            let at = |labels: &Tensor| {
                let th = Tensor::from_slice(&self.theta).to_kind(x.kind()).index_select(0, labels);
                (x.squeeze_dim(1) - th).square() * &s * -0.5 / (s.square() + self.s2)
            };
            match labels {
                Some(l) => at(l),
                None => {
                    let per: Vec<Tensor> = (0..self.theta.len() as i64)
                        .map(|l| at(&Tensor::full([b], l, (Kind::Int64, x.device()))))
                        .collect();
                    Tensor::stack(&per, 1).logsumexp([1i64], false) - (self.theta.len() as f64).ln()
                }
            }
        }
        fn label_names(&self) -> Vec<String> {
            (0..self.theta.len()).map(|i| ((b'a' + i as u8) as char).to_string()).collect()
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{set_score_path, ScorePath};
    use crate::energy::{Mlp, MlpConfig};
    use tch::nn;

    /// Every sampler that takes scores, run twice from the same start and seed, once through the MLP's closed-form
    /// score and once through autograd: the chains agree to float rounding.
    #[test]
    fn fast_and_autograd_score_paths_give_the_same_chains() {
        tch::manual_seed(12);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![64, 64], ..Default::default() }).unwrap();
        let x0 = Init::Uniform { low: -2.0, high: 2.0 }.sample(128, &[2], Device::Cpu);
        let configs = [
            "kind = \"langevin\"\nstep_size = 0.01\ngrad_clip = 5.0\nclamp = [-3.0, 3.0]\nrecord = true",
            "kind = \"langevin\"\nstep_size = 0.01\nnoise = 0.05",
            "kind = \"mala\"\nstep_size = 0.02\nrecord = true",
            "kind = \"hmc\"\nstep_size = 0.05\nleapfrog_steps = 3\nrecord = true",
            "kind = \"tempering\"\nbetas = [1.0, 0.5]\n[inner]\nkind = \"mala\"\nstep_size = 0.02",
        ];
        for text in configs {
            let sampler = toml::from_str::<SamplerConfig>(text).unwrap().build().unwrap();
            let run = |path| {
                let was = set_score_path(path);
                tch::manual_seed(5);
                let out = sampler.run(&m, &x0, 30).unwrap();
                set_score_path(was);
                out
            };
            let (fast, slow) = (run(ScorePath::Fast), run(ScorePath::Autograd));
            let diff = f64::try_from((&fast.x - &slow.x).abs().max()).unwrap();
            assert!(diff < 1e-4, "{}: chains differ by {diff}", sampler.name());
            assert_eq!(fast.acceptance, slow.acceptance, "{}", sampler.name());
            for (a, b) in fast.trace.iter().zip(&slow.trace) {
                assert!((a.mean_f - b.mean_f).abs() < 1e-4 * (1.0 + b.mean_f.abs()), "{}", sampler.name());
                assert!((a.mean_grad_norm - b.mean_grad_norm).abs() < 1e-4 * (1.0 + b.mean_grad_norm));
            }
        }
    }
}
