//! [`Arch::Mlp`]: fully connected layers on the flattened input.

use super::net::{layer_params, Head, Layer};
use super::{Arch, ConditionalConfig};
use crate::energy::Activation;
use tch::{nn, Tensor};

/// `f(x, y; σ) = ⟨e_y, h(x, σ; y)⟩ + c_y` with `h` fully connected layers on the flattened `x` (and σ as one
/// more input feature when noise-conditional), each with the label's FiLM.
#[derive(Debug)]
pub(super) struct MlpNet {
    /// One per width, under `l{i}`.
    layers: Vec<Layer>,
    head: Head,
    activation: Activation,
    noise_conditional: bool,
}

impl MlpNet {
    /// The layers for inputs of shape `event` and `labels` labels.
    pub(super) fn new(path: &nn::Path, cfg: &ConditionalConfig, event: &[i64], labels: i64) -> Self {
        debug_assert_eq!(cfg.arch, Arch::Mlp);
        let mut layers = Vec::new();
        let mut prev: i64 = event.iter().product::<i64>() + i64::from(cfg.noise_conditional);
        for (i, &w) in cfg.widths.iter().enumerate() {
            layers.push(Layer::linear(&(path / format!("l{i}")), prev, w, cfg.film, labels));
            prev = w;
        }
        let head = Head::new(path, labels, prev);
        MlpNet { layers, head, activation: cfg.activation, noise_conditional: cfg.noise_conditional }
    }

    /// Layer by layer, then the head.
    pub(super) fn params(&self) -> Vec<Tensor> {
        let mut p = layer_params(&self.layers);
        p.extend(self.head.params());
        p
    }

    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]`, `sig: [B]` (the kind of `x`) → `[B]`.
    pub(super) fn forward(&self, x: &Tensor, labels: &Tensor, sig: &Tensor) -> Tensor {
        let b = x.size()[0];
        let mut h = x.reshape([b, -1]);
        if self.noise_conditional {
            h = Tensor::cat(&[h, sig.view([b, 1])], 1);
        }
        for layer in &self.layers {
            h = layer.film(h.linear(&layer.w, Some(&layer.b)), labels, false);
            h = self.activation.apply(&h);
        }
        self.head.apply(&h.reshape([b, -1]), labels, x.kind())
    }
}
