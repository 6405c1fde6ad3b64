//! [`Arch::Mlp`]: fully connected layers on the flattened input.

use super::net::{layer_params, sigma_features, Head, Layer, DENOISER_SIGMA_FLOOR};
use super::{Arch, ConditionalConfig, SigmaInput};
use crate::energy::Activation;
use tch::{nn, Tensor};

/// `f(x, y; σ) = ⟨e_y, h(x, σ; y)⟩ + c_y` with `h` fully connected layers on the flattened `x` (and, when
/// noise-conditional, σ or `ln σ / 4` as one more input feature, see [`SigmaInput`]), each with the label's
/// FiLM (and with [`SigmaInput::LogFilm`] the noise level's FiLM, σ floored at 10⁻³).
#[derive(Debug)]
pub(super) struct MlpNet {
    /// One per width, under `l{i}`.
    layers: Vec<Layer>,
    head: Head,
    activation: Activation,
    noise_conditional: bool,
    sigma_input: SigmaInput,
}

impl MlpNet {
    /// The layers for inputs of shape `event` and `labels` labels.
    pub(super) fn new(path: &nn::Path, cfg: &ConditionalConfig, event: &[i64], labels: i64) -> Self {
        debug_assert_eq!(cfg.arch, Arch::Mlp);
        let mut layers = Vec::new();
        let mut prev: i64 = event.iter().product::<i64>() + i64::from(cfg.noise_conditional);
        for (i, &w) in cfg.widths.iter().enumerate() {
            let p = path / format!("l{i}");
            let layer = Layer::linear(&p, prev, w, cfg.film, labels);
            layers.push(match cfg.sigma_input {
                SigmaInput::LogFilm => layer.with_sigma_film(&p),
                SigmaInput::Raw => layer,
            });
            prev = w;
        }
        let head = Head::new(path, labels, prev);
        MlpNet {
            layers,
            head,
            activation: cfg.activation,
            noise_conditional: cfg.noise_conditional,
            sigma_input: cfg.sigma_input,
        }
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
        let mut phi = None;
        if self.noise_conditional {
            let feature = match self.sigma_input {
                SigmaInput::Raw => sig.shallow_clone(),
                SigmaInput::LogFilm => {
                    let log_s = sig.clamp_min(DENOISER_SIGMA_FLOOR).log();
                    phi = Some(sigma_features(&log_s));
                    log_s / 4.0
                }
            };
            h = Tensor::cat(&[h, feature.view([b, 1])], 1);
        }
        for layer in &self.layers {
            h = layer.film(h.linear(&layer.w, Some(&layer.b)), labels, false);
            h = layer.sigma_film(h, phi.as_ref());
            h = self.activation.apply(&h);
        }
        self.head.apply(&h.reshape([b, -1]), labels, x.kind())
    }
}
