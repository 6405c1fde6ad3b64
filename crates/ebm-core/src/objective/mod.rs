//! Training objectives. Each maps a model and a data batch to a scalar loss to minimise, plus metrics.
//!
//! - [`contrastive`]: maximum likelihood by contrastive divergence, with negatives from CD-k, persistent
//!   chains or the IGEBM replay buffer.
//! - [`score_matching`]: Hyvärinen score matching (exact trace, Hutchinson/sliced), and denoising SM.
//! - [`noise_dsm`]: denoising score matching over a ladder of noise levels for noise-conditional models.
//! - [`energy_discrepancy`]: energy discrepancy with Gaussian perturbations (no sampler, no scores).
//! - [`nce`]: noise-contrastive estimation against a Gaussian fitted to the data, learning `c = −log Z`.
//! - [`drl`]: diffusion recovery likelihood for noise-conditional models (short Langevin chains on the
//!   conditional of a less noisy level given a noisier one).
//! - [`jem`]: JEM, a conditional model's per-label `f` read as a classifier's logits: cross-entropy plus the
//!   contrastive term on the label marginal.
//!
//! Conditional models train through the same objectives: the batch carries the labels.

pub mod contrastive;
pub mod drl;
pub mod energy_discrepancy;
pub mod jem;
pub mod nce;
pub mod noise_dsm;
pub mod score_matching;

pub use contrastive::{Contrastive, ContrastiveConfig, Negatives};
pub use drl::{Drl, DrlConfig, RecoveryPairs};
pub use energy_discrepancy::{EdTerms, EnergyDiscrepancy, EnergyDiscrepancyConfig};
pub use jem::{Jem, JemConfig};
pub use nce::{log_z_in, FittedGaussian, Nce, NceConfig, NceTerms, NoiseCovariance, NCE_C};
pub use noise_dsm::{balance_lit_pixels, lit_share, NoiseDsm, NoiseDsmConfig, PixelWeights};
pub use score_matching::{ScoreMatching, SmMethod};

use crate::batch::Batch;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

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
    /// The loss on one batch of data (with its labels, for conditional models).
    ///
    /// # Shapes
    /// `batch.x: [B, *event]` → `loss: []`.
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput>;

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

    /// The current negative samples of label `label` (0 for an unconditional model) of an objective that
    /// keeps chains (persistent chains, replay buffers), e.g. to show them while training; `None` otherwise.
    ///
    /// # Shapes
    /// → `[N, *event]`.
    fn chains(&self, label: i64) -> Option<Tensor> {
        let _ = label;
        None
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
    /// Denoising score matching over noise levels (noise-conditional models).
    NoiseDsm(NoiseDsmConfig),
    /// Energy discrepancy (Gaussian perturbations).
    EnergyDiscrepancy(EnergyDiscrepancyConfig),
    /// Noise-contrastive estimation; its `c = −log Z` lives in the model's `VarStore`, so build it with
    /// [`ObjectiveConfig::build_with_vars`] (or [`Nce::in_var_store`]), not [`ObjectiveConfig::build`].
    Nce(NceConfig),
    /// Diffusion recovery likelihood (noise-conditional models).
    Drl(DrlConfig),
    /// JEM: cross-entropy on the per-label `f` plus contrastive divergence on the label marginal.
    Jem(JemConfig),
}

impl ObjectiveConfig {
    /// Validates and builds the objective for `model` (its event shape and number of labels).
    pub fn build(&self, model: &dyn EnergyModel, device: Device) -> Result<Box<dyn Objective>> {
        Ok(match self {
            ObjectiveConfig::Contrastive(c) => Box::new(Contrastive::new(c.clone(), model, device)?),
            ObjectiveConfig::ScoreMatching { method } => Box::new(ScoreMatching::new(method.clone())?),
            ObjectiveConfig::NoiseDsm(c) => Box::new(NoiseDsm::new(c.clone())?),
            ObjectiveConfig::EnergyDiscrepancy(c) => Box::new(EnergyDiscrepancy::new(c.clone())?),
            ObjectiveConfig::Drl(c) => Box::new(Drl::new(c.clone())?),
            ObjectiveConfig::Jem(c) => Box::new(Jem::new(c.clone(), model, device)?),
            ObjectiveConfig::Nce(c) => {
                c.validate()?;
                return Err(invalid(
                    "objective.nce",
                    "NCE learns c = −log Z as a variable of the model's VarStore (so that the trainer trains and \
                     checkpoints it): build it with ObjectiveConfig::build_with_vars(model, &vs.root(), device) \
                     or Nce::in_var_store(cfg, &vs.root(), model)",
                ));
            }
        })
    }

    /// As [`ObjectiveConfig::build`], for every objective including those that add trainable variables
    /// next to the model's (NCE's `c`, created under `vars`, e.g. `vs.root()` of the model's store).
    /// The NCE noise is then fitted to the first batch; fit it to the whole data set with
    /// [`Nce::in_var_store`] and [`Nce::with_noise_fitted_to`] instead.
    pub fn build_with_vars(
        &self,
        model: &dyn EnergyModel,
        vars: &nn::Path,
        device: Device,
    ) -> Result<Box<dyn Objective>> {
        match self {
            ObjectiveConfig::Nce(c) => Ok(Box::new(Nce::in_var_store(c.clone(), vars, model)?)),
            other => other.build(model, device),
        }
    }
}
