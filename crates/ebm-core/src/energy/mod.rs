//! Energy models. Sign convention, used everywhere in ebm-rs:
//!
//! `f(x)` is the *unnormalised log-density*: `p(x) = exp(f(x)) / Z`, and the energy is `E(x) = -f(x)`.
//! A network that outputs an energy `E` is wrapped by negating it.

pub mod analytic;
pub mod compose;
pub mod conditional;
pub mod conv;
pub mod empirical;
pub mod mlp;
pub mod product;

pub use analytic::{Gaussian, GaussianMixture};
pub use compose::{BoxRestricted, Composition, Expression, Offset};
pub use conv::{ConvConfig, ConvEnergy};
pub use empirical::{EmpiricalChannelSum, PixelMixture};
pub use mlp::{Activation, Mlp, MlpConfig};
pub use product::ProductOfExperts;

use crate::error::{EbmError, Result};
use tch::Tensor;

/// An unnormalised log-density `f(x)`.
pub trait EnergyModel {
    /// The unnormalised log-density.
    ///
    /// # Shapes
    /// `x: [B, *event_shape]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor;

    /// The shape of one sample, without the batch dimension: `[D]` for vectors, `[C, H, W]` for images.
    fn event_shape(&self) -> Vec<i64>;

    /// Trainable parameters, frozen by the samplers while they run (no parameter gradients are built).
    /// Analytic models have none.
    fn parameters(&self) -> Vec<Tensor> {
        Vec::new()
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

impl<T: EnergyModel + ?Sized> EnergyModel for &T {
    fn f(&self, x: &Tensor) -> Tensor {
        (**self).f(x)
    }
    fn event_shape(&self) -> Vec<i64> {
        (**self).event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        (**self).parameters()
    }
}

impl<T: EnergyModel + ?Sized> EnergyModel for Box<T> {
    fn f(&self, x: &Tensor) -> Tensor {
        (**self).f(x)
    }
    fn event_shape(&self) -> Vec<i64> {
        (**self).event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        (**self).parameters()
    }
}

/// Checks that `x` has shape `[B, *event]` with `B ≥ 1` and only finite values.
pub fn check_input(event: &[i64], x: &Tensor, what: &str) -> Result<()> {
    let size = x.size();
    let ok = size.len() == event.len() + 1 && size[0] >= 1 && size[1..] == *event;
    if !ok {
        let mut expected = String::from("[B");
        for d in event {
            expected.push_str(&format!(", {d}"));
        }
        expected.push(']');
        return Err(EbmError::Shape { what: what.to_string(), expected, got: size });
    }
    check_finite(x, what)
}

/// Errors if `x` contains NaN or ±Inf.
pub fn check_finite(x: &Tensor, what: &str) -> Result<()> {
    if x.numel() > 0 && !bool::try_from(x.isfinite().all())? {
        return Err(EbmError::NonFinite(what.to_string()));
    }
    Ok(())
}

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
