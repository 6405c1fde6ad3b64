//! [`Arch::Conv`]: 3×3 convolutions on `[C, H, W]` inputs.

use super::net::{layer_params, sigma_channel, view_of, Head, Layer};
use super::{Arch, ConditionalConfig, View};
use crate::energy::Activation;
use crate::error::{invalid, Result};
use tch::{nn, Tensor};

/// `f(x, y; σ) = ⟨e_y, h(v, σ; y)⟩ + c_y` with `h` 3×3 convolutions (stride 1, then stride 2 for every
/// further layer) on the view `v` of the image (and σ as a constant input channel when noise-conditional),
/// each with the label's FiLM.
#[derive(Debug)]
pub(super) struct ConvNet {
    /// One per width, under `conv{i}`.
    layers: Vec<Layer>,
    head: Head,
    activation: Activation,
    noise_conditional: bool,
    view: View,
}

impl ConvNet {
    /// The layers for images of shape `event = [C, H, W]` and `labels` labels.
    pub(super) fn new(path: &nn::Path, cfg: &ConditionalConfig, event: &[i64], labels: i64) -> Result<Self> {
        debug_assert_eq!(cfg.arch, Arch::Conv);
        let [c, h, w] = event else {
            return Err(invalid("conditional.event", format!("conv needs [C, H, W], got {event:?}")));
        };
        let c_view = if cfg.view == View::ChannelSum { 1 } else { *c };
        let (mut c_in, mut h, mut w) = (c_view + i64::from(cfg.noise_conditional), *h, *w);
        let mut layers = Vec::new();
        for (i, &c) in cfg.widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            layers.push(Layer::new(&(path / format!("conv{i}")), c_in, c, 3, stride, cfg.film, labels));
            if stride == 2 {
                h = (h + 1) / 2;
                w = (w + 1) / 2;
            }
            c_in = c;
        }
        let head = Head::new(path, labels, c_in * h * w);
        Ok(ConvNet {
            layers,
            head,
            activation: cfg.activation,
            noise_conditional: cfg.noise_conditional,
            view: cfg.view,
        })
    }

    /// Layer by layer, then the head.
    pub(super) fn params(&self) -> Vec<Tensor> {
        let mut p = layer_params(&self.layers);
        p.extend(self.head.params());
        p
    }

    /// # Shapes
    /// `x: [B, C, H, W]`, `labels: [B]`, `sig: [B]` (the kind of `x`) → `[B]`.
    pub(super) fn forward(&self, x: &Tensor, labels: &Tensor, sig: &Tensor) -> Tensor {
        let b = x.size()[0];
        let mut h = view_of(x, self.view);
        if self.noise_conditional {
            h = Tensor::cat(&[h, sigma_channel(sig, x)], 1);
        }
        for layer in &self.layers {
            h = layer.conv(&h, labels);
            h = self.activation.apply(&h);
        }
        self.head.apply(&h.reshape([b, -1]), labels, x.kind())
    }
}
