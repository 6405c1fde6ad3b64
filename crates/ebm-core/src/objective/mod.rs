//! Training objectives. Each maps a model and a data batch to a scalar loss to minimise, plus metrics.
//!
//! - [`contrastive`]: maximum likelihood by contrastive divergence, with negatives from CD-k, persistent
//!   chains or the IGEBM replay buffer.
//! - [`score_matching`]: Hyvärinen score matching (exact trace, Hutchinson/sliced), and denoising SM.

pub mod contrastive;
pub mod score_matching;

pub use contrastive::{Contrastive, ContrastiveConfig, Negatives};
pub use score_matching::{ScoreMatching, SmMethod};

use crate::energy::EnergyModel;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// A loss and the metrics that came with it (names are stable: they become TensorBoard tags).
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar loss to minimise (carries the graph to the model's parameters).
    pub loss: Tensor,
    /// Named scalar metrics, e.g. `("energy_gap", 0.3)`.
    pub metrics: Vec<(&'static str, f64)>,
}

/// A training objective.
pub trait Objective {
    /// The loss on one batch of data.
    ///
    /// # Shapes
    /// `batch: [B, *event]` → `loss: []`.
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Tensor) -> Result<LossOutput>;

    /// Short name, e.g. `"pcd"` or `"sm_exact"`.
    fn name(&self) -> String;

    /// Sampler state that must survive a restart (persistent chains, replay buffer), if any.
    fn state(&self) -> Option<Tensor> {
        None
    }

    /// Restores what [`Objective::state`] returned.
    fn load_state(&mut self, _state: Tensor) -> Result<()> {
        Ok(())
    }
}

/// Which objective to train with; `build()` turns it into an [`Objective`]. Adding an objective is one
/// new file plus one arm here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObjectiveConfig {
    /// Contrastive divergence (CD-k, PCD or replay buffer).
    Contrastive(ContrastiveConfig),
    /// Score matching.
    ScoreMatching {
        /// The variant.
        method: SmMethod,
    },
}

impl ObjectiveConfig {
    /// Validates and builds the objective for a model with the given event shape.
    pub fn build(&self, event: &[i64], device: Device) -> Result<Box<dyn Objective>> {
        Ok(match self {
            ObjectiveConfig::Contrastive(c) => Box::new(Contrastive::new(c.clone(), event, device)?),
            ObjectiveConfig::ScoreMatching { method } => Box::new(ScoreMatching::new(method.clone())?),
        })
    }
}
