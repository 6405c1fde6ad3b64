//! Conditional EBMs `f(x, y)` over a discrete attribute `y` (one network with a label embedding), the
//! adapters that fix `y` so the result is an ordinary [`EnergyModel`] that can enter a
//! [`super::Composition`] by name ([`Conditioned`], [`named_experts`]; at a noise level: [`NoisyConditioned`],
//! [`named_experts_at`]), and two ways to train them:
//!
//! - [`ConditionalContrastive`]: maximum likelihood of `p_θ(x|y) = exp f(x, y) / Z_y` by contrastive
//!   divergence. Every positive `(x⁺, y)` is paired with a negative drawn by Langevin on `f(·, y)` from the
//!   replay buffer of label `y`, so the negatives' labels follow the data's.
//! - [`ConditionalDsm`]: noise-conditional denoising score matching of `f_σ = f(x, y; σ)/σ` over a ladder of
//!   noise levels, sampled by [`annealed_langevin`]; compositions are sampled the same way, composing the
//!   experts at every level.
//!
//! One model per attribute value needs none of this: plain [`EnergyModel`]s compose directly.

use super::{check_input, Activation, EnergyModel, FrozenParams};
use crate::data::shapes::foreground;
use crate::error::{invalid, Result};
use crate::objective::LossOutput;
use crate::sampler::{BufferConfig, Langevin, LangevinConfig, ReplayBuffer, StepDiag};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// An unnormalised conditional log-density `f(x, y)` with `y ∈ {0, …, L-1}`.
pub trait ConditionalEnergyModel {
    /// `f(x, y)` for a label per sample.
    ///
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]` (int64) → `[B]`.
    fn f_cond(&self, x: &Tensor, labels: &Tensor) -> Tensor;

    /// `f(x, y; σ)` of a noise-conditional model (see [`ConditionalDsm`]): the network also sees the noise
    /// level σ of each sample. Models without noise conditioning ignore σ (the default).
    ///
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]` (int64), `sigma: [B]` → `[B]`.
    fn f_noise(&self, x: &Tensor, labels: &Tensor, sigma: &Tensor) -> Tensor {
        let _ = sigma;
        self.f_cond(x, labels)
    }

    /// The number of labels L.
    fn num_labels(&self) -> i64;

    /// The names of the labels, in label order (used as expert names in compositions).
    fn label_names(&self) -> Vec<String>;

    /// The shape of one sample, without the batch dimension.
    fn event_shape(&self) -> Vec<i64>;

    /// Trainable parameters (frozen by the samplers while they run).
    fn parameters(&self) -> Vec<Tensor> {
        Vec::new()
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
}

impl<T: ConditionalEnergyModel + ?Sized> ConditionalEnergyModel for &T {
    fn f_cond(&self, x: &Tensor, labels: &Tensor) -> Tensor {
        (**self).f_cond(x, labels)
    }
    fn f_noise(&self, x: &Tensor, labels: &Tensor, sigma: &Tensor) -> Tensor {
        (**self).f_noise(x, labels, sigma)
    }
    fn num_labels(&self) -> i64 {
        (**self).num_labels()
    }
    fn label_names(&self) -> Vec<String> {
        (**self).label_names()
    }
    fn event_shape(&self) -> Vec<i64> {
        (**self).event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        (**self).parameters()
    }
}

/// Checks `x: [B, *event]` and `labels: [B]` with values in range.
pub fn check_labelled(m: &dyn ConditionalEnergyModel, x: &Tensor, labels: &Tensor) -> Result<()> {
    check_input(&m.event_shape(), x, "conditional model input x")?;
    let b = x.size()[0];
    if labels.size() != [b] || labels.kind() != Kind::Int64 {
        return Err(invalid(
            "labels",
            format!("need int64 labels of shape [{b}], got {:?} of shape {:?}", labels.kind(), labels.size()),
        ));
    }
    let (lo, hi) = (i64::try_from(labels.min())?, i64::try_from(labels.max())?);
    if lo < 0 || hi >= m.num_labels() {
        return Err(invalid("labels", format!("must be in 0..{}, got values in [{lo}, {hi}]", m.num_labels())));
    }
    Ok(())
}

/// `f(x, y)` with `y` fixed: an [`EnergyModel`] over `x` (one expert of a composition).
#[derive(Debug)]
pub struct Conditioned<M> {
    model: M,
    label: i64,
    name: String,
}

impl<M: ConditionalEnergyModel> Conditioned<M> {
    /// Fixes the label index; errors when it is out of range.
    pub fn new(model: M, label: i64) -> Result<Self> {
        let names = model.label_names();
        if !(0..model.num_labels()).contains(&label) {
            return Err(invalid("label", format!("must be in 0..{}, got {label}", model.num_labels())));
        }
        let name = names.get(label as usize).cloned().unwrap_or_else(|| label.to_string());
        Ok(Conditioned { model, label, name })
    }

    /// Fixes the label by name; errors list the names.
    pub fn by_name(model: M, name: &str) -> Result<Self> {
        let label = model.label_of(name)?;
        Self::new(model, label)
    }

    /// The label index.
    pub fn label(&self) -> i64 {
        self.label
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<M: ConditionalEnergyModel> EnergyModel for Conditioned<M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let labels = Tensor::full([x.size()[0]], self.label, (Kind::Int64, x.device()));
        self.model.f_cond(x, &labels)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.model.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }
}

/// Every label of a conditional model as a named expert, ready for
/// [`super::Composition::from_expression`]: the expression `"triangle & blue"` can then mix labels of
/// several conditional models (pass the concatenation of their experts) and plain models.
pub fn named_experts<'a, M: ConditionalEnergyModel + 'a>(model: &'a M) -> Vec<(String, Box<dyn EnergyModel + 'a>)> {
    (0..model.num_labels())
        .map(|l| {
            let c = Conditioned { model, label: l, name: model.label_names()[l as usize].clone() };
            (c.name.clone(), Box::new(c) as Box<dyn EnergyModel + 'a>)
        })
        .collect()
}

/// `f_σ(x) = f(x, y; σ) / σ` with `y` and σ fixed: one expert of a noise-conditional model at one noise
/// level (see [`ConditionalDsm`] and [`annealed_langevin`]). Compositions of these at a common σ are again
/// `Σ fᵢ / σ`.
#[derive(Debug)]
pub struct NoisyConditioned<M> {
    model: M,
    label: i64,
    sigma: f64,
}

impl<M: ConditionalEnergyModel> NoisyConditioned<M> {
    /// Fixes the label and a noise level σ > 0.
    pub fn new(model: M, label: i64, sigma: f64) -> Result<Self> {
        if !(0..model.num_labels()).contains(&label) {
            return Err(invalid("label", format!("must be in 0..{}, got {label}", model.num_labels())));
        }
        if !(sigma > 0.0) || !sigma.is_finite() {
            return Err(invalid("sigma", format!("must be > 0, got {sigma}")));
        }
        Ok(NoisyConditioned { model, label, sigma })
    }
}

impl<M: ConditionalEnergyModel> EnergyModel for NoisyConditioned<M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let labels = Tensor::full([b], self.label, (Kind::Int64, x.device()));
        let sigma = Tensor::full([b], self.sigma, (x.kind(), x.device()));
        self.model.f_noise(x, &labels, &sigma) / self.sigma
    }
    fn event_shape(&self) -> Vec<i64> {
        self.model.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }
}

/// [`named_experts`] at noise level σ: every label as a [`NoisyConditioned`] expert.
pub fn named_experts_at<'a, M: ConditionalEnergyModel + 'a>(
    model: &'a M,
    sigma: f64,
) -> Result<Vec<(String, Box<dyn EnergyModel + 'a>)>> {
    let names = model.label_names();
    (0..model.num_labels())
        .map(|l| {
            Ok((names[l as usize].clone(), Box::new(NoisyConditioned::new(model, l, sigma)?) as Box<dyn EnergyModel>))
        })
        .collect()
}

/// `f(x, yᵢ)` with one fixed label per batch row: an [`EnergyModel`] for batches of chains with mixed labels
/// (the batch size must equal the number of labels).
#[derive(Debug)]
pub struct PerSampleLabels<'a, M: ?Sized> {
    model: &'a M,
    labels: Tensor,
}

impl<'a, M: ConditionalEnergyModel + ?Sized> PerSampleLabels<'a, M> {
    /// Pairs `model` with `labels: [B]` (int64).
    pub fn new(model: &'a M, labels: &Tensor) -> Self {
        PerSampleLabels { model, labels: labels.shallow_clone() }
    }
}

impl<M: ConditionalEnergyModel + ?Sized> EnergyModel for PerSampleLabels<'_, M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`, B = the number of labels.
    fn f(&self, x: &Tensor) -> Tensor {
        self.model.f_cond(x, &self.labels)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.model.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }
}

// ---------------------------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------------------------

/// The trunk of a [`ConditionalNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Fully connected layers on the flattened input.
    #[default]
    Mlp,
    /// 3×3 convolutions (stride 1, then stride 2 for every further layer) on `[C, H, W]` inputs.
    Conv,
    /// A denoiser energy `f(x, y; σ) = -‖x - D(x, y, σ)‖² / 2 max(σ, 10⁻³)` on `[C, H, W]` inputs, with `D` a small
    /// image-to-image network (`widths = [c_full, c_low]`: a 1×1 path at full resolution, three 3×3 layers at
    /// half resolution, merged by a 1×1 layer and a 3×3 output layer). Read as `f_σ = f/σ` it is the energy
    /// `-‖x - D‖²/2σ²` whose score is Tweedie's `(D - x)/σ²` up to a Jacobian term — the form that suits
    /// noise-conditional DSM ([`ConditionalDsm`]); use it with `noise_conditional = true`.
    Denoiser,
    /// A U-Net denoiser energy `f = -‖v - D‖² / 2 max(σ, 10⁻³)` (over `C` for the channel sum, see below) on
    /// `[C, H, W]` inputs (`widths = [w0, w1, w2]`: two 3×3 layers at full resolution, one stride-2 layer
    /// and one 3×3 layer at ½, the same at ¼, then
    /// nearest upsampling with skip connections back to full resolution), so that every output pixel sees the
    /// whole of a small image. `D` is preconditioned as in EDM (Karras et al. 2022) with `σ_d = ½`:
    /// `D = c_skip v + c_out F(c_in v, ln σ)`, `c_skip = σ_d²/(σ²+σ_d²)`, `c_out = σσ_d/√(σ²+σ_d²)`,
    /// `c_in = 1/√(σ²+σ_d²)`; every layer's FiLM also takes Fourier features of `ln σ`. σ here is the noise
    /// level of the view: noise σ on each of `C` channels is noise `√C·σ` on their sum ([`View::ChannelSum`]), so
    /// that view is preconditioned at `√C·σ` and `f = -‖v - D‖²/2Cσ`, whose `f/σ` has Tweedie's score. With
    /// [`View::Pixel`], the same preconditioning around three 1×1 layers of widths `w0, w1, w2` (a per-pixel
    /// MLP). Needs `noise_conditional = true`.
    Unet,
}

/// What a [`ConditionalNet`] sees of an image `[C, H, W]`: an inductive bias that makes an attribute's
/// expert blind to the other attributes, so that a composition can pair attribute values never seen
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// The whole image.
    #[default]
    Full,
    /// The sum over channels `Σ_c x_c` (one channel): colour-blind, for shape-like attributes.
    ChannelSum,
    /// Each pixel's channel vector on its own (1×1 layers only, `f` a sum over pixels): blind to spatial
    /// structure, for colour-like attributes. Only with [`Arch::Denoiser`] and [`Arch::Unet`].
    Pixel,
}

/// Configuration of a [`ConditionalNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConditionalConfig {
    /// MLP or conv trunk.
    pub arch: Arch,
    /// Hidden widths (MLP) or channels (conv).
    pub widths: Vec<i64>,
    /// Non-linearity.
    pub activation: Activation,
    /// Label embedding also scales and shifts every hidden layer (FiLM: `h ← h·(1+γ_y) + β_y`); without
    /// it the label only picks the output head.
    pub film: bool,
    /// The network also sees the noise level σ of noise-conditional training ([`ConditionalDsm`]), as one
    /// more input feature (MLP) or a constant input channel (conv); [`ConditionalEnergyModel::f_cond`] is then
    /// the model at σ = 0.
    pub noise_conditional: bool,
    /// What the network sees of an image (conv and denoiser nets).
    pub view: View,
}

impl Default for ConditionalConfig {
    fn default() -> Self {
        ConditionalConfig {
            arch: Arch::Mlp,
            widths: vec![128, 128],
            activation: Activation::Silu,
            film: true,
            noise_conditional: false,
            view: View::Full,
        }
    }
}

impl ConditionalConfig {
    /// Checks the widths.
    pub fn validate(&self) -> Result<()> {
        if self.widths.is_empty() || self.widths.iter().any(|w| *w < 1) {
            return Err(invalid("conditional.widths", format!("need ≥ 1 positive widths, got {:?}", self.widths)));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Layer {
    w: Tensor,
    b: Tensor,
    stride: i64,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
    /// `[SIGMA_FEATURES, 2·c_out]`: FiLM scale and shift from the noise level's features ([`Arch::Unet`]).
    sigma_film: Option<Tensor>,
}

/// Number of noise-level features of a [`Arch::Unet`] layer's FiLM.
const SIGMA_FEATURES: i64 = 5;

/// `[B]` → `[B, SIGMA_FEATURES]`: `ln σ / 4` and `sin`, `cos` of `ln σ` and `2 ln σ`.
fn sigma_features(log_sigma: &Tensor) -> Tensor {
    let l2 = log_sigma * 2.0;
    Tensor::stack(&[log_sigma / 4.0, log_sigma.sin(), log_sigma.cos(), l2.sin(), l2.cos()], 1)
}

impl Layer {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, film_on: bool, labels: i64) -> Self {
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

    /// Adds FiLM from the noise level's features (starting at the identity).
    fn with_sigma_film(mut self, p: &nn::Path) -> Self {
        let c_out = self.w.size()[0];
        self.sigma_film = Some(p.var("film_sigma", &[SIGMA_FEATURES, 2 * c_out], nn::Init::Const(0.0)));
        self
    }

    /// Convolution (padding `k/2`), then FiLM when present.
    fn conv(&self, h: &Tensor, labels: &Tensor) -> Tensor {
        self.conv_sigma(h, labels, None)
    }

    /// [`Layer::conv`] with the noise level's features `phi: [B, SIGMA_FEATURES]` for the σ-FiLM.
    fn conv_sigma(&self, h: &Tensor, labels: &Tensor, phi: Option<&Tensor>) -> Tensor {
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

    fn film(&self, h: Tensor, labels: &Tensor, conv: bool) -> Tensor {
        let (Some(g), Some(be)) = (&self.gamma, &self.beta) else { return h };
        let b = h.size()[0];
        let (mut g, mut be) = (g.index_select(0, labels), be.index_select(0, labels));
        if conv {
            g = g.view([b, -1, 1, 1]);
            be = be.view([b, -1, 1, 1]);
        }
        &h * (g + 1.0) + be
    }
}

/// The smallest σ a [`Arch::Denoiser`] divides by (its clean model, σ = 0, uses this).
const DENOISER_SIGMA_FLOOR: f64 = 1e-3;

/// A conditional network. MLP and conv: `f(x, y) = ⟨e_y, h(x; y)⟩ + c_y`, a trunk `h` (optionally modulated
/// by the label through FiLM) and a per-label output embedding `e_y` with bias `c_y`. Denoiser:
/// `f = -‖v - D(v, y, σ)‖² / 2σ` on the view `v` of the image (see [`Arch::Denoiser`], [`View`]). FiLM
/// parameters start at the identity (`γ = β = 0`).
#[derive(Debug)]
pub struct ConditionalNet {
    layers: Vec<Layer>,
    head: Option<(Tensor, Tensor)>,
    arch: Arch,
    activation: Activation,
    event: Vec<i64>,
    labels: Vec<String>,
    params: Vec<Tensor>,
    noise_conditional: bool,
    view: View,
}

fn uniform(p: &nn::Path, name: &str, shape: &[i64], fan_in: i64) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    p.var(name, shape, nn::Init::Uniform { lo: -bound, up: bound })
}

impl ConditionalNet {
    /// Builds the network for inputs of shape `event` (`[D]` for an MLP, `[C, H, W]` for conv) and the
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
        let mut layers = Vec::new();
        let feat = match cfg.arch {
            Arch::Mlp => {
                let mut prev: i64 = event.iter().product::<i64>() + i64::from(cfg.noise_conditional);
                for (i, &w) in cfg.widths.iter().enumerate() {
                    let p = path / format!("l{i}");
                    let (gamma, beta) = film(&p, cfg.film, l, w);
                    layers.push(Layer {
                        w: uniform(&p, "weight", &[w, prev], prev),
                        b: uniform(&p, "bias", &[w], prev),
                        stride: 1,
                        gamma,
                        beta,
                        sigma_film: None,
                    });
                    prev = w;
                }
                prev
            }
            Arch::Conv => {
                let [c, h, w] = event else {
                    return Err(invalid("conditional.event", format!("conv needs [C, H, W], got {event:?}")));
                };
                let c_view = if cfg.view == View::ChannelSum { 1 } else { *c };
                let (mut c_in, mut h, mut w) = (c_view + i64::from(cfg.noise_conditional), *h, *w);
                for (i, &c) in cfg.widths.iter().enumerate() {
                    let p = path / format!("conv{i}");
                    let stride = if i == 0 { 1 } else { 2 };
                    layers.push(Layer::new(&p, c_in, c, 3, stride, cfg.film, l));
                    if stride == 2 {
                        h = (h + 1) / 2;
                        w = (w + 1) / 2;
                    }
                    c_in = c;
                }
                c_in * h * w
            }
            Arch::Denoiser => {
                let ([c, _, _], [c_full, c_low]) = (event, cfg.widths.as_slice()) else {
                    return Err(invalid(
                        "conditional",
                        format!(
                            "denoiser needs event [C, H, W] and widths [c_full, c_low], got {event:?} and {:?}",
                            cfg.widths
                        ),
                    ));
                };
                let c_view = if cfg.view == View::ChannelSum { 1 } else { *c };
                let c_in = c_view + i64::from(cfg.noise_conditional);
                let f = cfg.film;
                if cfg.view == View::Pixel {
                    layers.push(Layer::new(&(path / "pixel"), c_in, *c_full, 1, 1, f, l));
                    layers.push(Layer::new(&(path / "pixel2"), *c_full, *c_low, 1, 1, f, l));
                    layers.push(Layer::new(&(path / "out"), *c_low, c_view, 1, 1, false, l));
                } else {
                    layers.push(Layer::new(&(path / "pixel"), c_in, *c_full, 1, 1, f, l));
                    layers.push(Layer::new(&(path / "down"), c_in, *c_low, 3, 2, f, l));
                    layers.push(Layer::new(&(path / "low1"), *c_low, *c_low, 3, 1, f, l));
                    layers.push(Layer::new(&(path / "low2"), *c_low, *c_low, 3, 1, f, l));
                    layers.push(Layer::new(&(path / "merge"), *c_low + *c_full, *c_full, 1, 1, f, l));
                    layers.push(Layer::new(&(path / "out"), *c_full, c_view, 3, 1, false, l));
                }
                0
            }
            Arch::Unet => {
                let ([c, _, _], [w0, w1, w2]) = (event, cfg.widths.as_slice()) else {
                    return Err(invalid(
                        "conditional",
                        format!(
                            "unet needs event [C, H, W] and widths [w0, w1, w2], got {event:?} and {:?}",
                            cfg.widths
                        ),
                    ));
                };
                if !cfg.noise_conditional {
                    return Err(invalid("conditional.noise_conditional", "arch = unet needs noise_conditional = true"));
                }
                let c_view = if cfg.view == View::ChannelSum { 1 } else { *c };
                let f = cfg.film;
                if cfg.view == View::Pixel {
                    for (name, ci, co) in [("in", c_view + 1, *w0), ("mid", *w0, *w1), ("mid2", *w1, *w2)] {
                        let p = path / name;
                        layers.push(Layer::new(&p, ci, co, 1, 1, f, l).with_sigma_film(&p));
                    }
                    layers.push(Layer::new(&(path / "out"), *w2, c_view, 1, 1, false, l));
                } else {
                    let specs: [(&str, i64, i64, i64, i64); 8] = [
                        ("in", c_view + 1, *w0, 3, 1),
                        ("e1", *w0, *w0, 3, 1),
                        ("down1", *w0, *w1, 3, 2),
                        ("e2", *w1, *w1, 3, 1),
                        ("down2", *w1, *w2, 3, 2),
                        ("mid", *w2, *w2, 3, 1),
                        ("up2", *w2 + *w1, *w1, 3, 1),
                        ("up1", *w1 + *w0, *w0, 3, 1),
                    ];
                    for (name, ci, co, k, st) in specs {
                        let p = path / name;
                        layers.push(Layer::new(&p, ci, co, k, st, f, l).with_sigma_film(&p));
                    }
                    layers.push(Layer::new(&(path / "out"), *w0, c_view, 3, 1, false, l));
                }
                0
            }
        };
        let head = (!matches!(cfg.arch, Arch::Denoiser | Arch::Unet)).then(|| {
            let p = path / "head";
            (uniform(&p, "embedding", &[l, feat], feat), p.var("bias", &[l], nn::Init::Const(0.0)))
        });
        let mut params = Vec::new();
        for layer in &layers {
            params.push(layer.w.shallow_clone());
            params.push(layer.b.shallow_clone());
            if let (Some(g), Some(b)) = (&layer.gamma, &layer.beta) {
                params.push(g.shallow_clone());
                params.push(b.shallow_clone());
            }
            if let Some(s) = &layer.sigma_film {
                params.push(s.shallow_clone());
            }
        }
        if let Some((e, b)) = &head {
            params.push(e.shallow_clone());
            params.push(b.shallow_clone());
        }
        Ok(ConditionalNet {
            layers,
            head,
            arch: cfg.arch,
            activation: cfg.activation,
            event: event.to_vec(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            params,
            noise_conditional: cfg.noise_conditional,
            view: cfg.view,
        })
    }
}

fn film(p: &nn::Path, on: bool, labels: i64, width: i64) -> (Option<Tensor>, Option<Tensor>) {
    if !on {
        return (None, None);
    }
    (
        Some(p.var("film_gamma", &[labels, width], nn::Init::Const(0.0))),
        Some(p.var("film_beta", &[labels, width], nn::Init::Const(0.0))),
    )
}

impl ConditionalNet {
    fn forward(&self, x: &Tensor, labels: &Tensor, sigma: Option<&Tensor>) -> Tensor {
        let b = x.size()[0];
        let sig = match sigma {
            Some(s) => s.to_kind(x.kind()),
            None => Tensor::zeros([b], (x.kind(), x.device())),
        };
        let v = match self.view {
            View::ChannelSum => x.sum_dim_intlist(1, true, x.kind()),
            View::Full | View::Pixel => x.shallow_clone(),
        };
        if self.arch == Arch::Unet {
            return self.unet(&v, labels, &sig);
        }
        let mut h = match self.arch {
            Arch::Mlp => x.reshape([b, -1]),
            Arch::Conv | Arch::Denoiser | Arch::Unet => v.shallow_clone(),
        };
        if self.noise_conditional {
            h = match self.arch {
                Arch::Mlp => Tensor::cat(&[h, sig.view([b, 1])], 1),
                Arch::Conv | Arch::Denoiser | Arch::Unet => {
                    let sz = x.size();
                    let chan = sig.view([b, 1, 1, 1]).expand([b, 1, sz[2], sz[3]], false);
                    Tensor::cat(&[h, chan], 1)
                }
            };
        }
        let act = |t: Tensor| self.activation.apply(&t);
        if self.arch == Arch::Denoiser && self.view == View::Pixel {
            let l = &self.layers;
            let m = act(l[1].conv(&act(l[0].conv(&h, labels)), labels));
            let d = l[2].conv(&m, labels);
            let sq = (&v - d).square().reshape([b, -1]).sum_dim_intlist(1, false, x.kind());
            return sq * -0.5 / sig.clamp_min(DENOISER_SIGMA_FLOOR);
        }
        if self.arch == Arch::Denoiser {
            let l = &self.layers;
            let pix = act(l[0].conv(&h, labels));
            let mut e = act(l[1].conv(&h, labels));
            e = act(l[2].conv(&e, labels));
            e = act(l[3].conv(&e, labels));
            let sz = x.size();
            let up = e.upsample_nearest2d([sz[2], sz[3]], None, None);
            let m = act(l[4].conv(&Tensor::cat(&[up, pix], 1), labels));
            let d = l[5].conv(&m, labels);
            let sq = (&v - d).square().reshape([b, -1]).sum_dim_intlist(1, false, x.kind());
            return sq * -0.5 / sig.clamp_min(DENOISER_SIGMA_FLOOR);
        }
        for layer in &self.layers {
            h = match self.arch {
                Arch::Mlp => layer.film(h.linear(&layer.w, Some(&layer.b)), labels, false),
                _ => layer.conv(&h, labels),
            };
            h = act(h);
        }
        let h = h.reshape([b, -1]);
        let (e, c) = self.head.as_ref().expect("MLP and conv nets have a head");
        (h * e.index_select(0, labels)).sum_dim_intlist(1, false, x.kind()) + c.index_select(0, labels)
    }

    /// The [`Arch::Unet`] energy of the view `v: [B, C_v, H, W]` at noise levels `sig: [B]` → `[B]`.
    fn unet(&self, v: &Tensor, labels: &Tensor, sig: &Tensor) -> Tensor {
        const SIGMA_DATA: f64 = 0.5;
        let sz = v.size();
        let b = sz[0];
        // the view's own noise level: noise σ on each of C channels is noise √C·σ on their sum
        let view_scale = match self.view {
            View::ChannelSum => (self.event[0] as f64).sqrt(),
            View::Full | View::Pixel => 1.0,
        };
        let sig = sig.clamp_min(DENOISER_SIGMA_FLOOR);
        let s = &sig * view_scale;
        let norm = (s.square() + SIGMA_DATA * SIGMA_DATA).sqrt();
        let c_in = norm.reciprocal().view([b, 1, 1, 1]);
        let c_skip = (norm.square().reciprocal() * (SIGMA_DATA * SIGMA_DATA)).view([b, 1, 1, 1]);
        let c_out = (&s * SIGMA_DATA / &norm).view([b, 1, 1, 1]);
        let log_s = s.log();
        let phi = sigma_features(&log_s);
        let chan = (&log_s / 4.0).view([b, 1, 1, 1]).expand([b, 1, sz[2], sz[3]], false);
        let l = &self.layers;
        let act = |t: Tensor| self.activation.apply(&t);
        let conv = |i: usize, h: &Tensor| act(l[i].conv_sigma(h, labels, Some(&phi)));
        let h0 = Tensor::cat(&[v * &c_in, chan], 1);
        let out = if self.view == View::Pixel {
            l[3].conv(&conv(2, &conv(1, &conv(0, &h0))), labels)
        } else {
            self.unet_trunk(&h0, labels, &phi)
        };
        let d = v * c_skip + out * c_out;
        let sq = (v - d).square().reshape([b, -1]).sum_dim_intlist(1, false, v.kind());
        sq * (-0.5 / (view_scale * view_scale)) / sig
    }

    /// The U-Net of [`Arch::Unet`]: `h0: [B, C_v + 1, H, W]` → `[B, C_v, H, W]`.
    fn unet_trunk(&self, h0: &Tensor, labels: &Tensor, phi: &Tensor) -> Tensor {
        let l = &self.layers;
        let sz = h0.size();
        let act = |t: Tensor| self.activation.apply(&t);
        let conv = |i: usize, h: &Tensor| act(l[i].conv_sigma(h, labels, Some(phi)));
        let e1 = conv(1, &conv(0, h0));
        let e2 = conv(3, &conv(2, &e1));
        let mid = conv(5, &conv(4, &e2));
        let [h2, w2] = [e2.size()[2], e2.size()[3]];
        let u2 = conv(6, &Tensor::cat(&[mid.upsample_nearest2d([h2, w2], None, None), e2], 1));
        let u1 = conv(7, &Tensor::cat(&[u2.upsample_nearest2d([sz[2], sz[3]], None, None), e1], 1));
        l[8].conv(&u1, labels)
    }
}

impl ConditionalEnergyModel for ConditionalNet {
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]` → `[B]` (a noise-conditional net at σ = 0).
    fn f_cond(&self, x: &Tensor, labels: &Tensor) -> Tensor {
        self.forward(x, labels, None)
    }

    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]`, `sigma: [B]` → `[B]`.
    fn f_noise(&self, x: &Tensor, labels: &Tensor, sigma: &Tensor) -> Tensor {
        self.forward(x, labels, Some(sigma))
    }

    fn num_labels(&self) -> i64 {
        self.labels.len() as i64
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
}

// ---------------------------------------------------------------------------------------------------------
// Training objective
// ---------------------------------------------------------------------------------------------------------

/// Configuration of [`ConditionalContrastive`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConditionalContrastiveConfig {
    /// Langevin steps per update.
    pub k: usize,
    /// The sampler.
    pub langevin: LangevinConfig,
    /// L2 penalty α on `f` at positives and negatives.
    pub alpha: f64,
    /// One replay buffer per label, each of this configuration (`restart_prob = 1` gives short-run chains
    /// from `init` every time).
    pub buffer: BufferConfig,
}

impl Default for ConditionalContrastiveConfig {
    fn default() -> Self {
        ConditionalContrastiveConfig {
            k: 20,
            langevin: LangevinConfig::seed_form(0.01),
            alpha: 0.1,
            buffer: BufferConfig { capacity: 1000, ..Default::default() },
        }
    }
}

impl ConditionalContrastiveConfig {
    /// Checks k, α, the sampler and the buffer.
    pub fn validate(&self) -> Result<()> {
        crate::objective::contrastive::check_k_and_alpha("conditional_contrastive", self.k, self.alpha)?;
        self.langevin.validate()?;
        self.buffer.validate()
    }
}

/// Contrastive divergence for conditional models, with one replay buffer per label:
/// `L = mean f(x⁻, y) - mean f(x⁺, y) + α (mean f(x⁺, y)² + mean f(x⁻, y)²)`.
#[derive(Debug)]
pub struct ConditionalContrastive {
    cfg: ConditionalContrastiveConfig,
    sampler: Langevin,
    buffers: Vec<ReplayBuffer>,
    event: Vec<i64>,
}

impl ConditionalContrastive {
    /// Builds the objective for `num_labels` labels and inputs of shape `event`.
    pub fn new(cfg: ConditionalContrastiveConfig, num_labels: i64, event: &[i64], device: Device) -> Result<Self> {
        cfg.validate()?;
        if num_labels < 1 {
            return Err(invalid("conditional_contrastive.num_labels", format!("must be ≥ 1, got {num_labels}")));
        }
        let sampler = Langevin::new(cfg.langevin.clone())?;
        let buffers = (0..num_labels)
            .map(|_| ReplayBuffer::new(cfg.buffer.clone(), event, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(ConditionalContrastive { cfg, sampler, buffers, event: event.to_vec() })
    }

    /// The buffer of a label.
    pub fn buffer(&self, label: i64) -> Option<&ReplayBuffer> {
        self.buffers.get(label as usize)
    }

    /// Negatives for the given labels: starts from each label's buffer, `k` Langevin steps on `f(·, y)`,
    /// written back to the buffers. Also returns the diagnostics of the last step.
    ///
    /// # Shapes
    /// `labels: [B]` → `[B, *event]`.
    pub fn negatives(&mut self, m: &dyn ConditionalEnergyModel, labels: &Tensor) -> Result<(Tensor, StepDiag)> {
        let b = labels.size()[0];
        let mut shape = vec![b];
        shape.extend(&self.event);
        let dev = labels.device();
        let lab = Vec::<i64>::try_from(&labels.to_device(Device::Cpu))?;
        if let Some(bad) = lab.iter().find(|l| !(0..self.buffers.len() as i64).contains(l)) {
            return Err(invalid("labels", format!("label {bad} out of 0..{}", self.buffers.len())));
        }
        let mut start = Tensor::zeros(shape.as_slice(), (Kind::Float, dev));
        let mut groups = Vec::new();
        for (l, buf) in self.buffers.iter().enumerate() {
            let rows: Vec<i64> = (0..b).filter(|i| lab[*i as usize] == l as i64).collect();
            if rows.is_empty() {
                continue;
            }
            let rows = Tensor::from_slice(&rows).to_device(dev);
            let batch = buf.sample(rows.size()[0] as usize)?;
            start = start.index_copy(0, &rows, &batch.x.to_kind(Kind::Float));
            groups.push((l, rows, batch.idx));
        }
        let model = PerSampleLabels::new(m, labels);
        let mut diag = Vec::with_capacity(1);
        let x = {
            let _frozen = FrozenParams::new(&model);
            let mut x = start;
            for i in 0..self.cfg.k {
                let d = (i + 1 == self.cfg.k).then_some(&mut diag);
                x = self.sampler.step(&model, &x, d).0;
            }
            x
        };
        for (l, rows, idx) in groups {
            self.buffers[l].push(&idx, &x.index_select(0, &rows))?;
        }
        Ok((x, diag[0]))
    }

    /// The loss on a labelled batch.
    ///
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]` → `loss: []`.
    pub fn loss(&mut self, m: &dyn ConditionalEnergyModel, x: &Tensor, labels: &Tensor) -> Result<LossOutput> {
        check_labelled(m, x, labels)?;
        let (neg, diag) = self.negatives(m, labels)?;
        let f_pos = m.f_cond(x, labels);
        let f_neg = m.f_cond(&neg, labels);
        let cd = f_neg.mean(Kind::Float) - f_pos.mean(Kind::Float);
        let reg = f_pos.square().mean(Kind::Float) + f_neg.square().mean(Kind::Float);
        let loss = &cd + &reg * self.cfg.alpha;
        let (mp, mn) =
            tch::no_grad(|| (f64::try_from(f_pos.mean(Kind::Double)), f64::try_from(f_neg.mean(Kind::Double))));
        let (mp, mn) = (mp?, mn?);
        Ok(LossOutput {
            loss,
            metrics: vec![("f_pos", mp), ("f_neg", mn), ("energy_gap", mp - mn), ("grad_norm_x", diag.mean_grad_norm)],
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Noise-scaled denoising score matching and annealed Langevin
// ---------------------------------------------------------------------------------------------------------

/// A geometric ladder of noise levels `σ_max = σ_1 > … > σ_L = σ_min`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseScales {
    /// The largest level σ₁.
    pub sigma_max: f64,
    /// The smallest level σ_L.
    pub sigma_min: f64,
    /// The number of levels L.
    pub levels: usize,
}

impl Default for NoiseScales {
    fn default() -> Self {
        NoiseScales { sigma_max: 1.0, sigma_min: 0.02, levels: 8 }
    }
}

impl NoiseScales {
    /// Checks `0 < σ_min ≤ σ_max` and `L ≥ 1` (`L = 1` needs `σ_min = σ_max`).
    pub fn validate(&self) -> Result<()> {
        let ok = self.sigma_min > 0.0 && self.sigma_min <= self.sigma_max && self.sigma_max.is_finite();
        if !ok || self.levels == 0 || (self.levels == 1 && self.sigma_min != self.sigma_max) {
            return Err(invalid(
                "noise_scales",
                format!(
                    "need 0 < sigma_min ≤ sigma_max and ≥ 1 levels (1 only when they are equal), got {} … {} in {}",
                    self.sigma_min, self.sigma_max, self.levels
                ),
            ));
        }
        Ok(())
    }

    /// The levels, largest first.
    pub fn sigmas(&self) -> Vec<f64> {
        if self.levels == 1 {
            return vec![self.sigma_max];
        }
        let r = (self.sigma_min / self.sigma_max).ln() / (self.levels - 1) as f64;
        (0..self.levels).map(|i| self.sigma_max * (r * i as f64).exp()).collect()
    }
}

/// Denoising score matching over a ladder of noise levels for a conditional model read as
/// `f_σ(x, y) = f(x, y; σ) / σ` (the scaling of NCSNv2; σ reaches the network through
/// [`ConditionalEnergyModel::f_noise`]): with `x̃ = x + σz`, `z ~ N(0, I)`, σ uniform over the levels, the loss
/// is `E ½‖∇ₓf(x̃, y; σ) + z‖²`, i.e. σ²-weighted DSM of `f_σ` against the score of the data blurred by
/// `N(0, σ²)`. No sampling during training; sample with [`annealed_langevin`]. A composition of such experts
/// at a common σ ([`named_experts_at`]) is again `Σ fᵢ / σ`.
#[derive(Debug, Clone)]
pub struct ConditionalDsm {
    sigmas: Vec<f64>,
}

impl ConditionalDsm {
    /// Builds the objective after validating the levels.
    pub fn new(scales: &NoiseScales) -> Result<Self> {
        scales.validate()?;
        Ok(ConditionalDsm { sigmas: scales.sigmas() })
    }

    /// The loss on a labelled batch (noise from libtorch's RNG).
    ///
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]` → `loss: []`.
    pub fn loss(&self, m: &dyn ConditionalEnergyModel, x: &Tensor, labels: &Tensor) -> Result<LossOutput> {
        self.loss_weighted(m, x, labels, None)
    }

    /// [`ConditionalDsm::loss`] with a weight on every element's squared error,
    /// `E ½ Σᵢ wᵢ (∂ᵢf(x̃, y; σ) + zᵢ)²`. For a model that is a sum of one shared function over pixels
    /// ([`View::Pixel`]), weights that depend only on each clean pixel train it on the pixel values reweighted
    /// by them (e.g. lit and black pixels counted equally, see [`balance_lit_pixels`]).
    ///
    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]`, `weights`: broadcastable to `x` (e.g. `[B, 1, H, W]`) → `loss: []`.
    pub fn loss_weighted(
        &self,
        m: &dyn ConditionalEnergyModel,
        x: &Tensor,
        labels: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<LossOutput> {
        check_labelled(m, x, labels)?;
        if let Some(w) = weights {
            if w.dim() != x.dim() || w.size().iter().zip(x.size()).any(|(a, b)| *a != 1 && *a != b) {
                return Err(invalid(
                    "dsm.weights",
                    format!("weights of shape {:?} do not broadcast to the batch {:?}", w.size(), x.size()),
                ));
            }
        }
        let b = x.size()[0];
        let mut bshape = vec![b];
        bshape.extend(std::iter::repeat_n(1, x.dim() - 1));
        let sig = Tensor::from_slice(&self.sigmas).to_kind(x.kind()).to_device(x.device());
        let pick = Tensor::randint(self.sigmas.len() as i64, [b], (Kind::Int64, x.device()));
        let sigma = sig.index_select(0, &pick).view(bshape.as_slice());
        let z = x.randn_like();
        let xt = (x.detach() + &sigma * &z).set_requires_grad(true);
        let f = m.f_noise(&xt, labels, &sigma.view([b]));
        let g = Tensor::run_backward(&[f.sum(f.kind())], &[&xt], true, true).remove(0);
        let mut sq = (&g + &z).square();
        if let Some(w) = weights {
            sq *= w;
        }
        let per = sq.reshape([b, -1]).sum_dim_intlist(1, false, x.kind()) * 0.5;
        let loss = per.mean(x.kind());
        let gn = tch::no_grad(|| g.reshape([b, -1]).norm_scalaropt_dim(2.0, [1], false).mean(Kind::Double));
        Ok(LossOutput { loss, metrics: vec![("grad_norm_x", f64::try_from(gn)?)] })
    }
}

/// Per-pixel weights that count lit and black pixels equally: a pixel is lit when its brightest channel
/// exceeds ½; with `lit_share` the share of lit pixels in the training data, lit pixels weigh
/// `1 / (2·lit_share)` and black ones `1 / (2·(1 - lit_share))` (mean weight 1 over the data). A per-pixel
/// colour expert trained with them ([`ConditionalDsm::loss_weighted`]) says which colour the lit pixels have
/// and leaves how many there are (the background's share, a matter of shape and size) to the other experts:
/// with the data's own share, its mode is the all-black image.
///
/// # Shapes
/// `x: [B, C, H, W]` → `[B, 1, H, W]`.
pub fn balance_lit_pixels(x: &Tensor, lit_share: f64) -> Result<Tensor> {
    if x.dim() != 4 {
        return Err(invalid("balance_lit_pixels", format!("need images [B, C, H, W], got {:?}", x.size())));
    }
    if !(lit_share > 0.0 && lit_share < 1.0) {
        return Err(invalid("balance_lit_pixels", format!("lit share must be in (0, 1), got {lit_share}")));
    }
    let lit = foreground(x).to_kind(x.kind());
    Ok(&lit * (0.5 / lit_share) + (1.0 - &lit) * (0.5 / (1.0 - lit_share)))
}

/// The share of lit pixels (brightest channel above ½) in images `[N, C, H, W]`.
pub fn lit_share(x: &Tensor) -> f64 {
    f64::try_from(foreground(x).to_kind(Kind::Double).mean(Kind::Double)).unwrap_or(f64::NAN)
}

/// Annealed Langevin dynamics (NCSN) for a model read as `f_σ = f / σ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnealedConfig {
    /// The noise levels, visited largest first.
    pub scales: NoiseScales,
    /// Langevin steps per level.
    pub steps_per_level: usize,
    /// Step size at level σ is `step_ratio · σ²` (so the noise per step, `√(2 step)`, scales with σ).
    pub step_ratio: f64,
    /// Finish with one denoising step `x + σ_L² ∇f_{σ_L}(x)` (Tweedie's formula at the smallest level).
    pub denoise: bool,
    /// Clamp the final states to `[low, high]`. At level σ the chain itself is only kept within
    /// `[low - 3σ, high + 3σ]` (the blurred data reaches beyond the data range), so that a learned energy that
    /// is too steep somewhere cannot throw a chain to infinity.
    pub clamp: Option<[f64; 2]>,
}

impl Default for AnnealedConfig {
    fn default() -> Self {
        AnnealedConfig {
            scales: NoiseScales::default(),
            steps_per_level: 10,
            step_ratio: 0.2,
            denoise: true,
            clamp: Some([0.0, 1.0]),
        }
    }
}

impl AnnealedConfig {
    /// Checks the levels, steps, ratio and box.
    pub fn validate(&self) -> Result<()> {
        self.scales.validate()?;
        if self.steps_per_level == 0 {
            return Err(invalid("annealed.steps_per_level", "must be ≥ 1"));
        }
        if !(self.step_ratio > 0.0) || !self.step_ratio.is_finite() {
            return Err(invalid("annealed.step_ratio", format!("must be > 0, got {}", self.step_ratio)));
        }
        if let Some([lo, hi]) = self.clamp {
            if !(lo < hi) {
                return Err(invalid("annealed.clamp", format!("needs low < high, got [{lo}, {hi}]")));
            }
        }
        Ok(())
    }
}

/// The model at one noise level σ, `f_σ` (already divided by σ), e.g. a [`super::Composition`] of
/// [`named_experts_at`]`(model, σ)`.
pub type ModelAt<'a> = dyn Fn(f64) -> Result<Box<dyn EnergyModel + 'a>> + 'a;

/// Runs annealed Langevin from `x0`: at each level σ (largest first), `steps_per_level` steps of
/// `x ← x + α ∇f_σ(x) + √(2α) z` with `α = step_ratio · σ²`, then optionally `x ← x + σ_L² ∇f_{σ_L}(x)`
/// (Tweedie), then the optional clamp. `model_at(σ)` gives `f_σ`; its parameters are frozen while it runs.
///
/// # Shapes
/// `x0: [B, *event]` → `[B, *event]`.
pub fn annealed_langevin(model_at: &ModelAt<'_>, x0: &Tensor, cfg: &AnnealedConfig) -> Result<Tensor> {
    cfg.validate()?;
    let sigmas = cfg.scales.sigmas();
    let mut x = x0.detach();
    for (i, &sigma) in sigmas.iter().enumerate() {
        let m = model_at(sigma)?;
        check_input(&m.event_shape(), &x, "annealed Langevin state x")?;
        let _frozen = FrozenParams::new(&m);
        let alpha = cfg.step_ratio * sigma * sigma;
        for _ in 0..cfg.steps_per_level {
            let g = crate::autograd::score(&m, &x, false)?.grad;
            x = tch::no_grad(|| &x + g * alpha + x.randn_like() * (2.0 * alpha).sqrt());
            if let Some([lo, hi]) = cfg.clamp {
                x = x.clamp(lo - 3.0 * sigma, hi + 3.0 * sigma);
            }
        }
        if cfg.denoise && i + 1 == sigmas.len() {
            let g = crate::autograd::score(&m, &x, false)?.grad;
            x = tch::no_grad(|| &x + g * (sigma * sigma));
        }
    }
    if let Some([lo, hi]) = cfg.clamp {
        x = x.clamp(lo, hi);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Composition;
    use crate::sampler::Init;

    /// f(x, y) = -(x - θ_y)²/2 in 1-D, θ trainable.
    struct Means {
        theta: Tensor,
    }
    impl ConditionalEnergyModel for Means {
        fn f_cond(&self, x: &Tensor, labels: &Tensor) -> Tensor {
            (x.squeeze_dim(1) - self.theta.index_select(0, labels)).square() * -0.5
        }
        fn num_labels(&self) -> i64 {
            self.theta.size()[0]
        }
        fn label_names(&self) -> Vec<String> {
            (0..self.num_labels()).map(|i| format!("m{i}")).collect()
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.theta.shallow_clone()]
        }
    }

    fn net(arch: Arch, film: bool, event: &[i64]) -> (nn::VarStore, ConditionalNet) {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConditionalConfig { arch, widths: vec![8, 6], film, ..Default::default() };
        let m = ConditionalNet::new(&vs.root(), &cfg, event, &["a", "b", "c"]).unwrap();
        (vs, m)
    }

    #[test]
    fn conditioned_adapter_equals_the_labelled_network() {
        tch::manual_seed(0);
        for (arch, event) in [(Arch::Mlp, vec![2]), (Arch::Conv, vec![3, 5, 5])] {
            let (vs, m) = net(arch, true, &event);
            // FiLM starts at the identity; perturb it so labels matter in the trunk too
            tch::no_grad(|| {
                for (k, v) in vs.variables() {
                    if k.contains("film") {
                        v.shallow_clone().copy_(&(v.randn_like() * 0.5));
                    }
                }
            });
            let mut shape = vec![4];
            shape.extend(&event);
            let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            let labels = Tensor::from_slice(&[2i64, 0, 1, 2]);
            let joint = m.f_cond(&x, &labels);
            assert_eq!(joint.size(), vec![4]);
            for (i, l) in [2i64, 0, 1, 2].iter().enumerate() {
                let c = Conditioned::new(&m, *l).unwrap();
                let got = f64::try_from(c.f(&x).get(i as i64)).unwrap();
                assert!((got - f64::try_from(joint.get(i as i64)).unwrap()).abs() < 1e-5);
            }
            assert_eq!(vs.trainable_variables().len(), m.parameters().len());
            // labels are different models
            let a = Conditioned::by_name(&m, "a").unwrap().f(&x);
            let b = Conditioned::by_name(&m, "b").unwrap().f(&x);
            assert!(f64::try_from((a - b).abs().max()).unwrap() > 1e-4);
        }
    }

    #[test]
    fn labels_enter_compositions_by_name() {
        tch::manual_seed(1);
        let (_vs, m) = net(Arch::Mlp, false, &[2]);
        let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let c = Composition::parse("a & !c", named_experts(&m)).unwrap();
        let want = Conditioned::by_name(&m, "a").unwrap().f(&x) - Conditioned::by_name(&m, "c").unwrap().f(&x);
        assert!(f64::try_from((c.f(&x) - want).abs().max()).unwrap() < 1e-6);
        let e = Composition::parse("a & d", named_experts(&m)).unwrap_err().to_string();
        assert!(e.contains("unknown name 'd' at column 5") && e.contains("known names: a, b, c"), "{e}");
    }

    #[test]
    fn bad_labels_and_configs_are_errors() {
        let (_vs, m) = net(Arch::Mlp, true, &[2]);
        assert!(Conditioned::new(&m, 3).unwrap_err().to_string().contains("0..3"));
        assert!(Conditioned::by_name(&m, "z").unwrap_err().to_string().contains("known labels: a, b, c"));
        let x = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        let e = check_labelled(&m, &x, &Tensor::from_slice(&[0i64, 5])).unwrap_err().to_string();
        assert!(e.contains("[0, 5]"), "{e}");
        assert!(check_labelled(&m, &x, &Tensor::from_slice(&[0i64])).is_err());
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConditionalConfig { arch: Arch::Conv, ..Default::default() };
        assert!(ConditionalNet::new(&vs.root(), &cfg, &[4], &["a"]).unwrap_err().to_string().contains("[C, H, W]"));
        assert!(ConditionalNet::new(&vs.root(), &ConditionalConfig::default(), &[2], &[]).is_err());
    }

    #[test]
    fn gradient_is_the_maximum_likelihood_gradient_per_label() {
        // With converged negatives, ∂L/∂θ_y = (n_y / B) (θ_y - mean(x⁺ | y)) (α = 0): each label's mean only
        // sees its own data.
        tch::manual_seed(5);
        let m = Means { theta: Tensor::from_slice(&[-0.5f32, 0.5]).set_requires_grad(true) };
        let cfg = ConditionalContrastiveConfig {
            k: 150,
            langevin: LangevinConfig::seed_form(0.05),
            alpha: 0.0,
            buffer: BufferConfig { capacity: 16_000, restart_prob: 1.0, init: Init::Gaussian { mean: 0.0, std: 1.0 } },
        };
        let mut obj = ConditionalContrastive::new(cfg, 2, &[1], Device::Cpu).unwrap();
        let n = 16_000i64;
        let labels = Tensor::from_slice(&[0i64, 1]).repeat([n / 2]);
        let x =
            Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) + labels.to_kind(Kind::Float).unsqueeze(1) * 4.0 - 2.0;
        let out = obj.loss(&m, &x, &labels).unwrap();
        let g = Vec::<f32>::try_from(Tensor::run_backward(&[out.loss], &[&m.theta], false, false).remove(0)).unwrap();
        // data means: label 0 → -2, label 1 → +2; θ = ∓0.5; share ½ each
        let mean = |l: i64| {
            let mask = labels.eq(l);
            f64::try_from(x.squeeze_dim(1).masked_select(&mask).mean(Kind::Double)).unwrap()
        };
        let want = [0.5 * (-0.5 - mean(0)), 0.5 * (0.5 - mean(1))];
        // sd of each negatives' mean ≈ 0.5 · 1/√8000 ≈ 0.006
        for (gv, w) in g.iter().zip(want) {
            assert!((f64::from(*gv) - w).abs() < 0.03, "grad {g:?}, want {want:?}");
        }
        assert!((want[0] - 0.75).abs() < 0.05 && (want[1] + 0.75).abs() < 0.05);
        assert_eq!(obj.buffer(1).unwrap().data().size(), vec![16_000, 1]);
        assert!(obj.negatives(&m, &Tensor::from_slice(&[2i64])).is_err());
    }

    /// `f(x, y; σ) = -½ σ (x - θ_y)² / (s² + σ²)` in 1-D: `f/σ` is exactly the log-density of the data
    /// `N(θ_y, s²)` blurred by `N(0, σ²)`, so it is the minimiser of noise-conditional DSM.
    struct Blurred {
        theta: Vec<f64>,
        s2: f64,
    }
    impl ConditionalEnergyModel for Blurred {
        fn f_cond(&self, x: &Tensor, labels: &Tensor) -> Tensor {
            self.f_noise(x, labels, &Tensor::zeros([x.size()[0]], (x.kind(), x.device())))
        }
        fn f_noise(&self, x: &Tensor, labels: &Tensor, sigma: &Tensor) -> Tensor {
            let th = Tensor::from_slice(&self.theta).to_kind(x.kind()).index_select(0, labels);
            let s = sigma.to_kind(x.kind());
            (x.squeeze_dim(1) - th).square() * &s * -0.5 / (s.square() + self.s2)
        }
        fn num_labels(&self) -> i64 {
            self.theta.len() as i64
        }
        fn label_names(&self) -> Vec<String> {
            vec!["a".into(), "b".into()]
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
    }

    #[test]
    fn noise_levels_are_geometric() {
        let s = NoiseScales { sigma_max: 1.0, sigma_min: 0.01, levels: 3 }.sigmas();
        assert!((s[0] - 1.0).abs() < 1e-12 && (s[1] - 0.1).abs() < 1e-12 && (s[2] - 0.01).abs() < 1e-12);
        assert_eq!(NoiseScales { sigma_max: 0.3, sigma_min: 0.3, levels: 1 }.sigmas(), vec![0.3]);
        assert!(NoiseScales { sigma_max: 0.1, sigma_min: 0.2, levels: 3 }.validate().is_err());
        assert!(NoiseScales { sigma_max: 0.2, sigma_min: 0.1, levels: 1 }.validate().is_err());
    }

    #[test]
    fn dsm_loss_of_the_blurred_density_has_its_closed_form() {
        // With ∇g = -σ(x̃ - θ)/(s² + σ²) and x̃ = θ + s ε + σ z, E ½(∇g + z)² = ½ s²/(s² + σ²) per level.
        tch::manual_seed(3);
        let (s2, n) = (0.25, 40_000i64);
        let m = Blurred { theta: vec![-1.0, 2.0], s2 };
        let scales = NoiseScales { sigma_max: 1.0, sigma_min: 0.1, levels: 4 };
        let labels = Tensor::from_slice(&[0i64, 1]).repeat([n / 2]);
        let th = Tensor::from_slice(&[-1.0f64, 2.0]).index_select(0, &labels);
        let x = (Tensor::randn([n], (Kind::Double, Device::Cpu)) * s2.sqrt() + th).unsqueeze(1);
        let out = ConditionalDsm::new(&scales).unwrap().loss(&m, &x, &labels).unwrap();
        let got = f64::try_from(&out.loss).unwrap();
        let want = scales.sigmas().iter().map(|sg| 0.5 * s2 / (s2 + sg * sg)).sum::<f64>() / 4.0;
        // per-sample terms are ½·(scaled χ²₁) with sd < 0.5: sd of the mean < 0.0025
        assert!((got - want).abs() < 0.012, "DSM loss {got}, closed form {want}");
        // a model with the wrong scale has a larger loss
        let wrong = Blurred { theta: vec![-1.0, 2.0], s2: 4.0 * s2 };
        let worse =
            f64::try_from(&ConditionalDsm::new(&scales).unwrap().loss(&wrong, &x, &labels).unwrap().loss).unwrap();
        assert!(worse > got + 0.02, "{worse} vs {got}");
    }

    #[test]
    fn annealed_langevin_on_the_blurred_density_ends_at_the_data_distribution() {
        // f_σ for label b is log N(x; 2, s² + σ²) + const; after the last level and Tweedie's step the chains
        // have mean 2 and variance ≈ s² (= 1 here, the smallest σ is 0.05).
        tch::manual_seed(4);
        let m = Blurred { theta: vec![-1.0, 2.0], s2: 1.0 };
        let cfg = AnnealedConfig {
            scales: NoiseScales { sigma_max: 3.0, sigma_min: 0.05, levels: 8 },
            steps_per_level: 30,
            step_ratio: 1.0,
            denoise: true,
            clamp: None,
        };
        let x0 = Tensor::rand([8000, 1], (Kind::Float, Device::Cpu)) * 10.0 - 5.0;
        let at = |sg: f64| -> Result<Box<dyn EnergyModel + '_>> { Ok(Box::new(NoisyConditioned::new(&m, 1, sg)?)) };
        let x = annealed_langevin(&at, &x0, &cfg).unwrap().to_kind(Kind::Double);
        let mean = f64::try_from(x.mean(Kind::Double)).unwrap();
        let var = f64::try_from(x.var(true)).unwrap();
        // sd of the mean ≈ 1/√8000 ≈ 0.011; of the variance ≈ √(2/8000) ≈ 0.016. The exact variance of these
        // unadjusted chains (the recursion v ← (1 - α/v_σ)² v + 2α over all steps, then Tweedie) is 1.031: the
        // small levels do not quite finish pulling in the spread of the large ones.
        assert!((mean - 2.0).abs() < 0.05, "mean {mean}");
        assert!((var - 1.031).abs() < 0.07, "variance {var}");
        let e = annealed_langevin(&at, &Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)), &cfg).unwrap_err();
        assert!(e.to_string().contains("[B, 1]"), "{e}");
    }

    #[test]
    fn denoiser_and_noise_conditional_nets_have_the_right_shapes() {
        tch::manual_seed(6);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConditionalConfig {
            arch: Arch::Denoiser,
            widths: vec![4, 6],
            noise_conditional: true,
            ..Default::default()
        };
        let m = ConditionalNet::new(&vs.root(), &cfg, &[3, 7, 7], &["a", "b"]).unwrap();
        let x = Tensor::rand([5, 3, 7, 7], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 1]);
        let sigma = Tensor::full([5], 0.5, (Kind::Float, Device::Cpu));
        let f = m.f_noise(&x, &labels, &sigma);
        assert_eq!(f.size(), vec![5]);
        // -‖x - D‖²/2σ ≤ 0, and σ enters: at σ = 0.25 the same D would double f, the σ channel changes D too
        assert!(bool::try_from(f.le(0.0).all()).unwrap());
        let f2 = m.f_noise(&x, &labels, &(&sigma * 0.5));
        assert!(f64::try_from((&f2 - &f * 2.0).abs().max()).unwrap() > 1e-6);
        assert_eq!(vs.trainable_variables().len(), m.parameters().len());
        let bad = ConditionalConfig { arch: Arch::Denoiser, widths: vec![4], ..Default::default() };
        assert!(ConditionalNet::new(&vs.root(), &bad, &[3, 7, 7], &["a"]).unwrap_err().to_string().contains("c_full"));
        let e = named_experts_at(&m, 0.0).err().unwrap().to_string();
        assert!(e.contains("sigma"), "{e}");
    }

    #[test]
    fn unet_is_noise_conditional_colour_blind_on_the_channel_sum_and_checks_its_config() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConditionalConfig {
            arch: Arch::Unet,
            widths: vec![4, 6, 8],
            noise_conditional: true,
            view: View::ChannelSum,
            ..Default::default()
        };
        let m = ConditionalNet::new(&vs.root(), &cfg, &[3, 8, 8], &["a", "b"]).unwrap();
        let x = Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let sigma = Tensor::from_slice(&[0.05f32, 0.2, 0.5, 1.0]);
        let f = m.f_noise(&x, &labels, &sigma);
        assert_eq!(f.size(), vec![4]);
        assert!(bool::try_from(f.le(0.0).all()).unwrap());
        // blind to colour: permuting the channels keeps the channel sum and so f
        let perm = x.index_select(1, &Tensor::from_slice(&[2i64, 0, 1]));
        let fp = m.f_noise(&perm, &labels, &sigma);
        assert!(f64::try_from((&fp - &f).abs().max()).unwrap() < 1e-4);
        // every parameter is listed (the σ-FiLM ones too) and gets a gradient; after one step of training the
        // label and the noise level both change f
        assert_eq!(vs.trainable_variables().len(), m.parameters().len());
        let loss = ConditionalDsm::new(&NoiseScales { sigma_max: 1.0, sigma_min: 0.05, levels: 3 })
            .unwrap()
            .loss(&m, &x, &labels)
            .unwrap()
            .loss;
        loss.backward();
        for p in m.parameters() {
            let g = p.grad();
            assert!(g.defined(), "a parameter of shape {:?} has no gradient", p.size());
            tch::no_grad(|| {
                let _ = p.shallow_clone().f_sub_(&(g * 0.1)).unwrap();
            });
        }
        let g = m.f_noise(&x, &labels, &sigma);
        let other = m.f_noise(&x, &(1 - &labels), &sigma);
        let louder = m.f_noise(&x, &labels, &(&sigma * 2.0));
        assert!(f64::try_from((&other - &g).abs().max()).unwrap() > 1e-6);
        assert!(f64::try_from((&louder * 2.0 - &g).abs().max()).unwrap() > 1e-6);
        // the per-pixel variant is a sum over pixels: moving the pixels around leaves f as it is
        let pixel = ConditionalConfig { view: View::Pixel, ..cfg.clone() };
        let mp = ConditionalNet::new(&(vs.root() / "pixel"), &pixel, &[3, 8, 8], &["a", "b"]).unwrap();
        let fp = mp.f_noise(&x, &labels, &sigma);
        let moved = mp.f_noise(&x.flip([2, 3]).transpose(2, 3), &labels, &sigma);
        assert!(
            f64::try_from((&moved - &fp).abs().max()).unwrap() < 1e-3 * (1.0 + f64::try_from(fp.abs().max()).unwrap())
        );
        assert!(f64::try_from((&fp - &f).abs().max()).unwrap() > 1e-6);
        for (bad, msg) in [
            (ConditionalConfig { widths: vec![4, 6], ..cfg.clone() }, "[w0, w1, w2]"),
            (ConditionalConfig { noise_conditional: false, ..cfg.clone() }, "noise_conditional = true"),
        ] {
            let e = ConditionalNet::new(&vs.root(), &bad, &[3, 8, 8], &["a"]).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
    }

    #[test]
    fn unet_is_preconditioned_at_the_noise_level_of_its_view() {
        // with the output layer at zero, D = c_skip·v and f/σ = -‖(1 - c_skip) v‖² / 2σ_v², where the view's
        // noise level σ_v is √3·σ for the sum of 3 channels and σ for the full image
        for (view, c_view, scale) in [(View::ChannelSum, 1, 3f64.sqrt()), (View::Full, 3, 1.0), (View::Pixel, 3, 1.0)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = ConditionalConfig {
                arch: Arch::Unet,
                widths: vec![4, 6, 8],
                noise_conditional: true,
                view,
                ..Default::default()
            };
            let m = ConditionalNet::new(&vs.root(), &cfg, &[3, 8, 8], &["a"]).unwrap();
            for (name, t) in vs.variables() {
                if name.starts_with("out.") {
                    let _ = tch::no_grad(|| t.shallow_clone().zero_());
                }
            }
            let x = Tensor::rand([3, 3, 8, 8], (Kind::Float, Device::Cpu));
            let v = if c_view == 1 { x.sum_dim_intlist(1, true, Kind::Float) } else { x.shallow_clone() };
            for sigma in [0.05, 0.3, 1.0] {
                let got = m.f_noise(
                    &x,
                    &Tensor::zeros([3], (Kind::Int64, Device::Cpu)),
                    &Tensor::full([3], sigma, (Kind::Float, Device::Cpu)),
                ) / sigma;
                let sv = scale * sigma;
                let c_skip = 0.25 / (sv * sv + 0.25);
                let want = v.square().sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
                    * (-(1.0 - c_skip).powi(2) / (2.0 * sv * sv));
                let err = f64::try_from((&got - &want).abs().max()).unwrap();
                assert!(
                    err < 1e-3 * f64::try_from(want.abs().max()).unwrap(),
                    "{view:?} σ {sigma}: {got:?} vs {want:?}"
                );
            }
        }
    }

    /// One pixel `[1, 1, 1]` that is 1 (lit) with probability `pi` and 0 otherwise, blurred by σ: `f` is
    /// `σ · log(π N(x; 1, σ²) + (1 - π) N(x; 0, σ²))`, so `f_σ = f/σ` is the exact blurred log-density.
    struct LitPixel {
        pi: f64,
    }
    impl ConditionalEnergyModel for LitPixel {
        fn f_cond(&self, x: &Tensor, labels: &Tensor) -> Tensor {
            self.f_noise(x, labels, &Tensor::full([x.size()[0]], 0.05, (x.kind(), x.device())))
        }
        fn f_noise(&self, x: &Tensor, _labels: &Tensor, sigma: &Tensor) -> Tensor {
            let x = x.reshape([-1]);
            let s2 = sigma.to_kind(x.kind()).square();
            let lit = (&x - 1.0).square() * -0.5 / &s2 + self.pi.ln();
            let black = x.square() * -0.5 / &s2 + (1.0 - self.pi).ln();
            Tensor::stack(&[lit, black], 1).logsumexp([1], false) * s2.sqrt()
        }
        fn num_labels(&self) -> i64 {
            1
        }
        fn label_names(&self) -> Vec<String> {
            vec!["a".into()]
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1, 1, 1]
        }
    }

    #[test]
    fn balanced_dsm_is_minimised_by_the_half_lit_pixel_and_plain_dsm_by_the_data() {
        // Data: a pixel lit with probability 0.2. Plain DSM prefers the model with π = 0.2, DSM with the
        // balancing weights (lit 2.5, black 0.625) the one with π = 0.5; the same noise for every model
        // (measured: 0.179 against 0.242 plain, 0.242 against 0.314 balanced).
        let n = 100_000i64;
        tch::manual_seed(8);
        let x = Tensor::rand([n, 1, 1, 1], (Kind::Double, Device::Cpu)).lt(0.2).to_kind(Kind::Double);
        let share = lit_share(&x);
        assert!((share - 0.2).abs() < 0.005, "{share}");
        let w = balance_lit_pixels(&x, share).unwrap();
        assert_eq!(w.size(), vec![n, 1, 1, 1]);
        assert!((f64::try_from(w.mean(Kind::Double)).unwrap() - 1.0).abs() < 1e-9);
        let labels = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
        let dsm = ConditionalDsm::new(&NoiseScales { sigma_max: 0.4, sigma_min: 0.4, levels: 1 }).unwrap();
        let loss = |pi: f64, w: Option<&Tensor>| {
            tch::manual_seed(9);
            f64::try_from(&dsm.loss_weighted(&LitPixel { pi }, &x, &labels, w).unwrap().loss).unwrap()
        };
        let (plain_data, plain_half) = (loss(0.2, None), loss(0.5, None));
        let (bal_data, bal_half) = (loss(0.2, Some(&w)), loss(0.5, Some(&w)));
        assert!(plain_data < plain_half - 0.03, "plain DSM: π = 0.2 {plain_data}, π = 0.5 {plain_half}");
        assert!(bal_half < bal_data - 0.03, "balanced DSM: π = 0.5 {bal_half}, π = 0.2 {bal_data}");
        // and the weights are checked
        let bad = Tensor::ones([n, 2], (Kind::Double, Device::Cpu));
        let e = dsm.loss_weighted(&LitPixel { pi: 0.5 }, &x, &labels, Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("broadcast"), "{e}");
        assert!(balance_lit_pixels(&x, 0.0).unwrap_err().to_string().contains("(0, 1)"));
        assert!(balance_lit_pixels(&x.view([n, 1]), 0.2).unwrap_err().to_string().contains("[B, C, H, W]"));
    }

    /// `f = 10³ Σ x⁴`: its score `4·10³ x³` throws any chain outwards, faster and faster.
    struct Steep;
    impl EnergyModel for Steep {
        fn f(&self, x: &Tensor) -> Tensor {
            x.pow_tensor_scalar(4).sum_dim_intlist(1, false, x.kind()) * 1e3
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![2]
        }
    }

    #[test]
    fn annealed_langevin_keeps_chains_near_the_clamp_range() {
        tch::manual_seed(10);
        let mut cfg = AnnealedConfig {
            scales: NoiseScales { sigma_max: 1.0, sigma_min: 0.1, levels: 3 },
            steps_per_level: 20,
            step_ratio: 0.5,
            denoise: false,
            clamp: Some([0.0, 1.0]),
        };
        let at = |_: f64| -> Result<Box<dyn EnergyModel + '_>> { Ok(Box::new(Steep)) };
        let x0 = Tensor::rand([64, 2], (Kind::Float, Device::Cpu));
        let x = annealed_langevin(&at, &x0, &cfg).unwrap();
        assert!(bool::try_from(x.isfinite().all()).unwrap());
        assert!(bool::try_from(x.ge(0.0).logical_and(&x.le(1.0)).all()).unwrap());
        // without a range the same chains leave every finite number behind, which is an error
        cfg.clamp = None;
        let e = annealed_langevin(&at, &x0, &cfg).unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
    }
}
