//! MCMC samplers for `p(x) ∝ exp(f(x))`: Langevin (two parameterisations), MALA, and the replay buffer
//! that IGEBM-style training draws its chains from.

pub mod buffer;
pub mod langevin;
pub mod mala;

pub use buffer::{BufferBatch, BufferConfig, ReplayBuffer};
pub use langevin::{Langevin, LangevinConfig};
pub use mala::{Mala, MalaConfig};

use crate::energy::{check_input, EnergyModel};
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Per-step diagnostics of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepDiag {
    /// Mean over the batch of `f(x)` before the step.
    pub mean_f: f64,
    /// Mean over the batch of `‖∇ₓf(x)‖` before the step.
    pub mean_grad_norm: f64,
}

/// What a sampler returns after `n` steps.
#[derive(Debug)]
pub struct SampleOutput {
    /// The final states, `[B, *event]`, detached.
    pub x: Tensor,
    /// The noise-free mean of the last step (`x + λ∇f` before noise), `[B, *event]`: often a cleaner
    /// picture of the chain for images.
    pub x_mean: Tensor,
    /// MALA's acceptance rate over all steps and chains; `None` for unadjusted Langevin.
    pub acceptance: Option<f64>,
    /// Per-step diagnostics, when the sampler was asked to record them.
    pub trace: Vec<StepDiag>,
}

/// A Markov chain sampler targeting `exp(f)`.
pub trait Sampler {
    /// Runs `n_steps` steps from `x0` and returns the final states. The model's parameters are frozen
    /// while it runs (no parameter gradients are built) and restored after.
    ///
    /// # Shapes
    /// `x0: [B, *event]` → `x, x_mean: [B, *event]`.
    fn run(&self, m: &dyn EnergyModel, x0: &Tensor, n_steps: usize) -> Result<SampleOutput>;
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

    /// Sample mean `[D]` and covariance `[D, D]` of `x: [N, D]`, as f64 vectors.
    pub fn moments(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let x = x.to_kind(Kind::Double);
        let mean = x.mean_dim(0, false, Kind::Double);
        let c = &x - &mean;
        let cov = c.transpose(0, 1).matmul(&c) / (x.size()[0] - 1) as f64;
        (Vec::<f64>::try_from(mean).unwrap(), Vec::<f64>::try_from(cov.flatten(0, -1)).unwrap())
    }
}
