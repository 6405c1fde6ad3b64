//! [`ConditionalNet`]: the label-aware model (labels, the label marginal, the view at a noise level) over one
//! struct per architecture ([`super::mlp`], [`super::conv`], [`super::denoiser`], [`super::unet`]), and the
//! layer they are built from.

use super::conv::ConvNet;
use super::denoiser::DenoiserNet;
use super::mlp::MlpNet;
use super::unet::UnetNet;
use super::{Arch, AtNoise, ConditionalConfig, View};
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use tch::{nn, Kind, Tensor};

/// A convolution (or, for the MLP, a linear map) with optional FiLM by the label and by the noise level.
#[derive(Debug)]
pub(super) struct Layer {
    pub(super) w: Tensor,
    pub(super) b: Tensor,
    stride: i64,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
    /// `[SIGMA_FEATURES, 2·c_out]`: FiLM scale and shift from the noise level's features ([`Arch::Unet`]).
    sigma_film: Option<Tensor>,
}

/// Number of noise-level features of a [`Arch::Unet`] layer's FiLM.
const SIGMA_FEATURES: i64 = 5;

/// `[B]` → `[B, SIGMA_FEATURES]`: `ln σ / 4` and `sin`, `cos` of `ln σ` and `2 ln σ`.
pub(super) fn sigma_features(log_sigma: &Tensor) -> Tensor {
    let l2 = log_sigma * 2.0;
    Tensor::stack(&[log_sigma / 4.0, log_sigma.sin(), log_sigma.cos(), l2.sin(), l2.cos()], 1)
}

impl Layer {
    /// A `kernel × kernel` convolution from `c_in` to `c_out` channels (weights under `p`).
    pub(super) fn new(
        p: &nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        film_on: bool,
        labels: i64,
    ) -> Self {
        let fan = c_in * kernel * kernel;
        let (gamma, beta) = film(p, film_on, labels, c_out);
        Layer {
            w: uniform(p, "weight", &[c_out, c_in, kernel, kernel], fan),
            b: uniform(p, "bias", &[c_out], fan),
            stride,
            gamma,
            beta,
            sigma_film: None,
        }
    }

    /// A linear map from `d_in` to `d_out` features (weights under `p`), with FiLM (created first).
    pub(super) fn linear(p: &nn::Path, d_in: i64, d_out: i64, film_on: bool, labels: i64) -> Self {
        let (gamma, beta) = film(p, film_on, labels, d_out);
        Layer {
            w: uniform(p, "weight", &[d_out, d_in], d_in),
            b: uniform(p, "bias", &[d_out], d_in),
            stride: 1,
            gamma,
            beta,
            sigma_film: None,
        }
    }

    /// Adds FiLM from the noise level's features (starting at the identity).
    pub(super) fn with_sigma_film(mut self, p: &nn::Path) -> Self {
        let c_out = self.w.size()[0];
        self.sigma_film = Some(p.var("film_sigma", &[SIGMA_FEATURES, 2 * c_out], nn::Init::Const(0.0)));
        self
    }

    /// The noise level's FiLM `h·(1+γ(σ)) + β(σ)` on the features of a linear layer, when the layer has it and
    /// `phi` is given; `h` otherwise.
    ///
    /// # Shapes
    /// `h: [B, c_out]`, `phi: [B, SIGMA_FEATURES]` → `[B, c_out]`.
    pub(super) fn sigma_film(&self, h: Tensor, phi: Option<&Tensor>) -> Tensor {
        match (&self.sigma_film, phi) {
            (Some(w), Some(phi)) => {
                let gb = phi.matmul(w).view([h.size()[0], 2, -1]);
                &h * (gb.select(1, 0) + 1.0) + gb.select(1, 1)
            }
            _ => h,
        }
    }

    /// Convolution (padding `k/2`), then FiLM when present.
    pub(super) fn conv(&self, h: &Tensor, labels: &Tensor) -> Tensor {
        self.conv_sigma(h, labels, None)
    }

    /// [`Layer::conv`] with the noise level's features `phi: [B, SIGMA_FEATURES]` for the σ-FiLM.
    pub(super) fn conv_sigma(&self, h: &Tensor, labels: &Tensor, phi: Option<&Tensor>) -> Tensor {
        let pad = self.w.size()[2] / 2;
        let h = h.conv2d(&self.w, Some(&self.b), [self.stride, self.stride], [pad, pad], [1, 1], 1);
        let h = self.film(h, labels, true);
        match (&self.sigma_film, phi) {
            (Some(w), Some(phi)) => {
                let b = h.size()[0];
                let gb = phi.matmul(w).view([b, 2, -1, 1, 1]);
                &h * (gb.select(1, 0) + 1.0) + gb.select(1, 1)
            }
            _ => h,
        }
    }

    /// The label's FiLM `h·(1+γ_y) + β_y` (on channels when `conv`), or `h` without FiLM.
    pub(super) fn film(&self, h: Tensor, labels: &Tensor, conv: bool) -> Tensor {
        let (Some(g), Some(be)) = (&self.gamma, &self.beta) else { return h };
        let b = h.size()[0];
        let (mut g, mut be) = (g.index_select(0, labels), be.index_select(0, labels));
        if conv {
            g = g.view([b, -1, 1, 1]);
            be = be.view([b, -1, 1, 1]);
        }
        &h * (g + 1.0) + be
    }

    /// The layer's tensors: weight, bias, FiLM γ and β, σ-FiLM (those present, in this order).
    fn params(&self) -> Vec<Tensor> {
        let mut params = vec![self.w.shallow_clone(), self.b.shallow_clone()];
        if let (Some(g), Some(b)) = (&self.gamma, &self.beta) {
            params.push(g.shallow_clone());
            params.push(b.shallow_clone());
        }
        if let Some(s) = &self.sigma_film {
            params.push(s.shallow_clone());
        }
        params
    }
}

/// Every tensor of `layers`, layer by layer.
pub(super) fn layer_params(layers: &[Layer]) -> Vec<Tensor> {
    layers.iter().flat_map(Layer::params).collect()
}

/// A tensor initialised uniformly in `±1/√fan_in`.
fn uniform(p: &nn::Path, name: &str, shape: &[i64], fan_in: i64) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    p.var(name, shape, nn::Init::Uniform { lo: -bound, up: bound })
}

/// The label FiLM tensors `[labels, width]` (at the identity), when `on`.
fn film(p: &nn::Path, on: bool, labels: i64, width: i64) -> (Option<Tensor>, Option<Tensor>) {
    if !on {
        return (None, None);
    }
    (
        Some(p.var("film_gamma", &[labels, width], nn::Init::Const(0.0))),
        Some(p.var("film_beta", &[labels, width], nn::Init::Const(0.0))),
    )
}

/// The per-label output of the MLP and conv nets: `⟨e_y, h⟩ + c_y`.
#[derive(Debug)]
pub(super) struct Head {
    embedding: Tensor,
    bias: Tensor,
}

impl Head {
    /// `e: [labels, feat]`, `c: [labels]` (at 0) under `path / "head"`.
    pub(super) fn new(path: &nn::Path, labels: i64, feat: i64) -> Self {
        let p = path / "head";
        Head {
            embedding: uniform(&p, "embedding", &[labels, feat], feat),
            bias: p.var("bias", &[labels], nn::Init::Const(0.0)),
        }
    }

    /// `h: [B, feat]` → `[B]` in `kind`.
    pub(super) fn apply(&self, h: &Tensor, labels: &Tensor, kind: Kind) -> Tensor {
        (h * self.embedding.index_select(0, labels)).sum_dim_intlist(1, false, kind) + self.bias.index_select(0, labels)
    }

    pub(super) fn params(&self) -> Vec<Tensor> {
        vec![self.embedding.shallow_clone(), self.bias.shallow_clone()]
    }
}

/// What a net with `view` sees of `x: [B, C, H, W]`: `[B, 1, H, W]` for the channel sum, `x` itself otherwise.
pub(super) fn view_of(x: &Tensor, view: View) -> Tensor {
    match view {
        View::ChannelSum => x.sum_dim_intlist(1, true, x.kind()),
        View::Full | View::Pixel => x.shallow_clone(),
    }
}

/// `σ: [B]` → a constant input channel `[B, 1, H, W]` (H, W those of `x: [B, C, H, W]`).
pub(super) fn sigma_channel(sig: &Tensor, x: &Tensor) -> Tensor {
    let (b, sz) = (x.size()[0], x.size());
    sig.view([b, 1, 1, 1]).expand([b, 1, sz[2], sz[3]], false)
}

/// The smallest σ a denoiser energy divides by (its clean model, σ = 0, uses this).
pub(super) const DENOISER_SIGMA_FLOOR: f64 = 1e-3;

/// One struct per architecture.
#[derive(Debug)]
enum Trunk {
    Mlp(MlpNet),
    Conv(ConvNet),
    Denoiser(DenoiserNet),
    Unet(UnetNet),
}

/// A conditional network `f(x, y; σ)` of one of the architectures of [`Arch`]. MLP and conv:
/// `f(x, y) = ⟨e_y, h(x; y)⟩ + c_y`, a trunk `h` (optionally modulated by the label through FiLM) and a
/// per-label output embedding `e_y` with bias `c_y`. Denoiser and U-Net: `f = -‖v - D(v, y, σ)‖² / 2σ` on
/// the view `v` of the image (see [`Arch::Denoiser`], [`Arch::Unet`], [`View`]). FiLM parameters start at the
/// identity (`γ = β = 0`).
#[derive(Debug)]
pub struct ConditionalNet {
    trunk: Trunk,
    event: Vec<i64>,
    labels: Vec<String>,
    params: Vec<Tensor>,
    noise_conditional: bool,
}

impl ConditionalNet {
    /// Builds the network for inputs of shape `event` (`[D]` for an MLP, `[C, H, W]` for the others) and the
    /// given label names, with its parameters under `path`.
    pub fn new(path: &nn::Path, cfg: &ConditionalConfig, event: &[i64], labels: &[&str]) -> Result<Self> {
        cfg.validate()?;
        if labels.is_empty() {
            return Err(invalid("conditional.labels", "need at least one label"));
        }
        if event.is_empty() || event.iter().any(|d| *d < 1) {
            return Err(invalid("conditional.event", format!("need positive dimensions, got {event:?}")));
        }
        if cfg.view == View::Pixel && !matches!(cfg.arch, Arch::Denoiser | Arch::Unet) {
            return Err(invalid("conditional.view", "the pixel view needs arch = denoiser or unet"));
        }
        if cfg.view != View::Full && cfg.arch == Arch::Mlp {
            return Err(invalid("conditional.view", "an MLP sees the full input (view = full)"));
        }
        let l = labels.len() as i64;
        let (trunk, params) = match cfg.arch {
            Arch::Mlp => {
                let n = MlpNet::new(path, cfg, event, l);
                let p = n.params();
                (Trunk::Mlp(n), p)
            }
            Arch::Conv => {
                let n = ConvNet::new(path, cfg, event, l)?;
                let p = n.params();
                (Trunk::Conv(n), p)
            }
            Arch::Denoiser => {
                let n = DenoiserNet::new(path, cfg, event, l)?;
                let p = n.params();
                (Trunk::Denoiser(n), p)
            }
            Arch::Unet => {
                let n = UnetNet::new(path, cfg, event, l)?;
                let p = n.params();
                (Trunk::Unet(n), p)
            }
        };
        Ok(ConditionalNet {
            trunk,
            event: event.to_vec(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            params,
            noise_conditional: cfg.noise_conditional,
        })
    }

    /// `f(x, y; σ)` with σ = 0 when absent.
    fn forward(&self, x: &Tensor, labels: &Tensor, sigma: Option<&Tensor>) -> Tensor {
        let sig = match sigma {
            Some(s) => s.to_kind(x.kind()),
            None => Tensor::zeros([x.size()[0]], (x.kind(), x.device())),
        };
        match &self.trunk {
            Trunk::Mlp(n) => n.forward(x, labels, &sig),
            Trunk::Conv(n) => n.forward(x, labels, &sig),
            Trunk::Denoiser(n) => n.forward(x, labels, &sig),
            Trunk::Unet(n) => n.forward(x, labels, &sig),
        }
    }
}

impl EnergyModel for ConditionalNet {
    /// The label-free reading: the marginal over labels under a uniform label prior,
    /// `log (1/L) Σ_y exp f(x, y)` (for a noise-conditional net, at σ = 0).
    ///
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        self.f_given(x, None, None)
    }

    /// `f(x, y; σ)`; without labels, the marginal over labels (see [`ConditionalNet::f`]); without σ, σ = 0.
    ///
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]`, `sigma: [B]` → `[B]`.
    fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
        match labels {
            Some(l) => self.forward(x, l, sigma),
            None => self.f_all_labels(x, sigma).logsumexp([1i64], false) - (self.labels.len() as f64).ln(),
        }
    }

    fn label_names(&self) -> Vec<String> {
        self.labels.clone()
    }

    fn event_shape(&self) -> Vec<i64> {
        self.event.clone()
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.shallow_clone()).collect()
    }

    /// The label marginal at σ, divided by σ (only for `noise_conditional` nets).
    fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
        if !self.noise_conditional {
            return Err(invalid("model", "this conditional net is not noise-conditional (noise_conditional = false)"));
        }
        Ok(Box::new(AtNoise::new(self, sigma)?))
    }
}
