//! Energy models. Sign convention, used everywhere in ebm-rs:
//!
//! `f(x)` is the *unnormalised log-density*: `p(x) = exp(f(x)) / Z`, and the energy is `E(x) = -f(x)`.
//! A network that outputs an energy `E` is wrapped by negating it.

pub mod analytic;
pub mod compose;
pub mod conditional;
pub mod conv;
pub mod empirical;
pub mod ladder;
pub mod mlp;
pub mod product;

pub use analytic::{Gaussian, GaussianMixture};
pub use compose::{BoxRestricted, Composition, Expression, Offset};
pub use conv::{ConvConfig, ConvEnergy};
pub use empirical::{EmpiricalChannelSum, PixelMixture};
pub use ladder::LadderMlp;
pub use mlp::{Activation, Mlp, MlpConfig};
pub use product::ProductOfExperts;

use crate::batch::Batch;
use crate::error::{invalid, Result};
use tch::{Kind, Tensor};

use crate::check::check_input;
/// An unnormalised log-density `f(x)`, optionally conditioned on a label `y ∈ {0, …, L-1}` and a noise
/// level σ: `f(x | y; σ)`.
///
/// One trait for every model: an unconditional model is the one-label case (it has no label names and
/// ignores labels and σ); a conditional model overrides [`EnergyModel::f_given`] and
/// [`EnergyModel::label_names`]; a noise-conditional model also reads σ and gives its view at one noise level
/// through [`EnergyModel::at_noise`] (what annealed samplers run). The adapters in [`conditional`] fix a label
/// or a noise level and give back an ordinary model.
pub trait EnergyModel {
    /// The unnormalised log-density (for a conditional model: its label-free reading, see its docs).
    ///
    /// # Shapes
    /// `x: [B, *event_shape]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor;

    /// `f(x)` and the score `∇ₓf(x)` together, both detached (no graph is kept, no parameter gradient is
    /// built). What the samplers call at every step (see [`crate::autograd::ScorePath`]).
    ///
    /// The default takes the score by autograd ([`crate::autograd::autograd_f_and_score`]); a model that knows
    /// its input gradient in closed form overrides this with a cheaper computation of the same values (e.g.
    /// [`Mlp`]). An override must give the same values up to float rounding, must not return a view of a
    /// parameter, and must work whether or not gradient mode is on.
    ///
    /// # Shapes
    /// `x: [B, *event_shape]` → `f: [B]`, `grad: [B, *event_shape]`.
    fn f_and_score(&self, x: &Tensor) -> (Tensor, Tensor) {
        crate::autograd::autograd_f_and_score(self, x)
    }

    /// The score `∇ₓf(x)` alone, detached, for callers that do not need `f` (unrecorded Langevin steps). The
    /// default is [`EnergyModel::f_and_score`]'s gradient; a closed form may skip what only `f` needs.
    ///
    /// # Shapes
    /// `x: [B, *event_shape]` → `[B, *event_shape]`.
    fn score(&self, x: &Tensor) -> Tensor {
        self.f_and_score(x).1
    }

    /// The shape of one sample, without the batch dimension: `[D]` for vectors, `[C, H, W]` for images.
    fn event_shape(&self) -> Vec<i64>;

    /// A handle to the same model (the same parameter tensors, nothing copied) that another thread may own,
    /// or `None` (the default). A model that gives one has its Langevin chains split over the libtorch
    /// threads on the CPU ([`crate::sampler::Langevin`]): its `f`/`score` must then only read the parameters.
    fn thread_copy(&self) -> Option<Box<dyn EnergyModel + Send>> {
        None
    }

    /// Trainable parameters, frozen by the samplers while they run (no parameter gradients are built).
    /// Analytic models have none.
    fn parameters(&self) -> Vec<Tensor> {
        Vec::new()
    }

    /// `f(x | y; σ)`: with a label per sample and a noise level per sample. Unconditional models ignore
    /// both (the default).
    ///
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]` (int64), `sigma: [B]` → `[B]`.
    fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
        let _ = (labels, sigma);
        self.f(x)
    }

    /// `f` on a batch, with the batch's labels and noise levels.
    ///
    /// # Shapes
    /// `batch.x: [B, *event]` → `[B]`.
    fn f_batch(&self, batch: &Batch) -> Tensor {
        self.f_given(&batch.x, batch.labels.as_ref(), batch.sigma.as_ref())
    }

    /// The names of the labels, in label order; empty for an unconditional model (one implicit label).
    fn label_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// The number of labels L (1 for an unconditional model).
    fn num_labels(&self) -> i64 {
        (self.label_names().len() as i64).max(1)
    }

    /// `f(x | y; σ)` for every label y at once, the columns in label order (for a classifier read as an EBM:
    /// its logits). The default calls [`EnergyModel::f_given`] once per label; a model that computes all
    /// labels in one pass (a shared trunk with `L` outputs) overrides it with the same values.
    ///
    /// # Shapes
    /// `x: [B, *event]`, `sigma: [B]` → `[B, L]`.
    fn f_all_labels(&self, x: &Tensor, sigma: Option<&Tensor>) -> Tensor {
        let b = x.size()[0];
        let per: Vec<Tensor> = (0..self.num_labels())
            .map(|l| self.f_given(x, Some(&Tensor::full([b], l, (Kind::Int64, x.device()))), sigma))
            .collect();
        Tensor::stack(&per, 1)
    }

    /// The label called `name`, or an error listing the names.
    fn label_of(&self, name: &str) -> Result<i64> {
        let names = self.label_names();
        names
            .iter()
            .position(|n| n == name)
            .map(|i| i as i64)
            .ok_or_else(|| invalid("label", format!("unknown label '{name}'; known labels: {}", names.join(", "))))
    }

    /// The model at noise level σ > 0 read as `f_σ` (already divided by σ, so that its score is the score
    /// of the data blurred by `N(0, σ²)`), for noise-conditional models and their compositions; an error
    /// for the others.
    fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
        let _ = sigma;
        Err(invalid("model", "is not noise-conditional: it has no view at a noise level (annealed sampling needs one)"))
    }

    /// Checked version of [`EnergyModel::f`]: rejects a wrong shape or non-finite input.
    ///
    /// # Shapes
    /// `x: [B, *event_shape]` → `[B]`.
    fn try_f(&self, x: &Tensor) -> Result<Tensor> {
        check_input(self.event_shape().as_slice(), x, "model input x")?;
        Ok(self.f(x))
    }
}

macro_rules! forward_energy_model {
    ($ty:ty) => {
        impl<T: EnergyModel + ?Sized> EnergyModel for $ty {
            fn f(&self, x: &Tensor) -> Tensor {
                (**self).f(x)
            }
            fn f_and_score(&self, x: &Tensor) -> (Tensor, Tensor) {
                (**self).f_and_score(x)
            }
            fn score(&self, x: &Tensor) -> Tensor {
                (**self).score(x)
            }
            fn event_shape(&self) -> Vec<i64> {
                (**self).event_shape()
            }
            fn thread_copy(&self) -> Option<Box<dyn EnergyModel + Send>> {
                (**self).thread_copy()
            }
            fn parameters(&self) -> Vec<Tensor> {
                (**self).parameters()
            }
            fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
                (**self).f_given(x, labels, sigma)
            }
            fn label_names(&self) -> Vec<String> {
                (**self).label_names()
            }
            fn num_labels(&self) -> i64 {
                (**self).num_labels()
            }
            fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
                (**self).at_noise(sigma)
            }
        }
    };
}

forward_energy_model!(&T);
forward_energy_model!(Box<T>);

/// Sets `requires_grad` on a model's parameters to `false` for as long as the guard lives,
/// then restores each one's previous flag. Used by samplers so that no parameter gradients are built.
pub struct FrozenParams {
    params: Vec<(Tensor, bool)>,
}

impl FrozenParams {
    /// Freezes the parameters of `m`.
    pub fn new(m: &(impl EnergyModel + ?Sized)) -> Self {
        let params = m
            .parameters()
            .into_iter()
            .map(|p| {
                let was = p.requires_grad();
                let p = p.set_requires_grad(false);
                (p, was)
            })
            .collect();
        FrozenParams { params }
    }
}

impl Drop for FrozenParams {
    fn drop(&mut self) {
        for (p, was) in &self.params {
            let _ = p.set_requires_grad(*was);
        }
    }
}
