//! Conditional EBMs `f(x | y; σ)` over a discrete attribute `y` (and, for noise-conditional models, a noise
//! level σ), and the adapters that fix `y` or σ so the result is an ordinary [`EnergyModel`] that can enter a
//! [`super::Composition`] by name ([`Conditioned`], [`named_experts`]; at a noise level: [`NoisyConditioned`],
//! [`named_experts_at`], [`AtNoise`]).
//!
//! The network is [`ConditionalNet`]: one struct per architecture of [`Arch`] (an MLP, a conv net, a
//! denoiser energy, a U-Net denoiser energy) behind one label-aware model. Conditional models train through
//! the ordinary objectives, the batch carrying the labels ([`crate::Batch::labelled`]):
//!
//! - [`crate::objective::Contrastive`]: maximum likelihood of `p_θ(x|y) = exp f(x, y) / Z_y` by contrastive
//!   divergence. With labels, every positive `(x⁺, y)` is paired with a negative drawn on `f(·, y)` from the
//!   replay buffer of label `y`, so the negatives' labels follow the data's.
//! - [`crate::objective::NoiseDsm`]: noise-conditional denoising score matching of `f_σ = f(x, y; σ)/σ` over a
//!   ladder of noise levels, sampled by [`crate::sampler::AnnealedLangevin`] (which runs the model's view at
//!   each level, [`EnergyModel::at_noise`]); compositions are sampled the same way, composing the experts at
//!   every level.
//!
//! One model per attribute value needs none of this: plain [`EnergyModel`]s compose directly.

mod conv;
mod denoiser;
mod mlp;
mod net;
mod unet;

pub use net::ConditionalNet;

use super::{Activation, EnergyModel};
use crate::batch::Batch;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Checks `x: [B, *event]` and `labels: [B]` (int64) with values in `0..num_labels` (see [`Batch::check`]).
pub fn check_labelled(m: &dyn EnergyModel, x: &Tensor, labels: &Tensor) -> Result<()> {
    Batch::labelled(x.shallow_clone(), labels.shallow_clone()).check(
        &m.event_shape(),
        m.num_labels(),
        "conditional model input x",
    )
}

/// `f(x, y)` with `y` fixed: an [`EnergyModel`] over `x` (one expert of a composition).
#[derive(Debug)]
pub struct Conditioned<M> {
    model: M,
    label: i64,
    name: String,
}

impl<M: EnergyModel> Conditioned<M> {
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

impl<M: EnergyModel> EnergyModel for Conditioned<M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let labels = Tensor::full([x.size()[0]], self.label, (Kind::Int64, x.device()));
        self.model.f_given(x, Some(&labels), None)
    }
    /// The fixed label replaces any given one; σ passes through.
    fn f_given(&self, x: &Tensor, _labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
        let labels = Tensor::full([x.size()[0]], self.label, (Kind::Int64, x.device()));
        self.model.f_given(x, Some(&labels), sigma)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.model.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }
    fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
        Ok(Box::new(NoisyConditioned::new(&self.model, self.label, sigma)?))
    }
}

/// Every label of a conditional model as a named expert, ready for
/// [`super::Composition::from_expression`]: the expression `"triangle & blue"` can then mix labels of
/// several conditional models (pass the concatenation of their experts) and plain models.
pub fn named_experts<'a, M: EnergyModel + 'a>(model: &'a M) -> Vec<(String, Box<dyn EnergyModel + 'a>)> {
    (0..model.num_labels())
        .map(|l| {
            let c = Conditioned { model, label: l, name: model.label_names()[l as usize].clone() };
            (c.name.clone(), Box::new(c) as Box<dyn EnergyModel + 'a>)
        })
        .collect()
}

/// `f_σ(x) = f(x, y; σ) / σ` with `y` and σ fixed: one expert of a noise-conditional model at one noise
/// level (see [`crate::objective::NoiseDsm`] and [`crate::sampler::AnnealedLangevin`]). Compositions of these
/// at a common σ are again `Σ fᵢ / σ`.
#[derive(Debug)]
pub struct NoisyConditioned<M> {
    model: M,
    label: i64,
    sigma: f64,
}

impl<M: EnergyModel> NoisyConditioned<M> {
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

impl<M: EnergyModel> EnergyModel for NoisyConditioned<M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let labels = Tensor::full([b], self.label, (Kind::Int64, x.device()));
        let sigma = Tensor::full([b], self.sigma, (x.kind(), x.device()));
        self.model.f_given(x, Some(&labels), Some(&sigma)) / self.sigma
    }
    fn event_shape(&self) -> Vec<i64> {
        self.model.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }
}

/// [`named_experts`] at noise level σ: every label as a [`NoisyConditioned`] expert.
pub fn named_experts_at<'a, M: EnergyModel + 'a>(
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

impl<'a, M: EnergyModel + ?Sized> PerSampleLabels<'a, M> {
    /// Pairs `model` with `labels: [B]` (int64).
    pub fn new(model: &'a M, labels: &Tensor) -> Self {
        PerSampleLabels { model, labels: labels.shallow_clone() }
    }
}

impl<M: EnergyModel + ?Sized> EnergyModel for PerSampleLabels<'_, M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`, B = the number of labels.
    fn f(&self, x: &Tensor) -> Tensor {
        self.model.f_given(x, Some(&self.labels), None)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.model.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }
}

/// `f_σ(x) = f(x; σ) / σ` of a noise-conditional model with no label fixed (for conditional models, the
/// label marginal at σ); [`NoisyConditioned`] fixes a label too.
#[derive(Debug)]
pub struct AtNoise<M> {
    model: M,
    sigma: f64,
}

impl<M: EnergyModel> AtNoise<M> {
    /// Fixes a noise level σ > 0.
    pub fn new(model: M, sigma: f64) -> Result<Self> {
        if !(sigma > 0.0) || !sigma.is_finite() {
            return Err(invalid("sigma", format!("must be > 0, got {sigma}")));
        }
        Ok(AtNoise { model, sigma })
    }
}

impl<M: EnergyModel> EnergyModel for AtNoise<M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let sigma = Tensor::full([x.size()[0]], self.sigma, (x.kind(), x.device()));
        self.model.f_given(x, None, Some(&sigma)) / self.sigma
    }
    fn event_shape(&self) -> Vec<i64> {
        self.model.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.model.parameters()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Configuration of the network
// ---------------------------------------------------------------------------------------------------------

/// The architecture of a [`ConditionalNet`] (one struct each behind it).
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
    /// noise-conditional DSM ([`crate::objective::NoiseDsm`]); use it with `noise_conditional = true`.
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
    /// The architecture.
    pub arch: Arch,
    /// Hidden widths (MLP) or channels (conv); for the denoiser and the U-Net, see [`Arch`].
    pub widths: Vec<i64>,
    /// Non-linearity.
    pub activation: Activation,
    /// Label embedding also scales and shifts every hidden layer (FiLM: `h ← h·(1+γ_y) + β_y`); without
    /// it the label only picks the output head.
    pub film: bool,
    /// The network also sees the noise level σ of noise-conditional training ([`crate::objective::NoiseDsm`]),
    /// as one more input feature (MLP) or a constant input channel (conv); without a σ
    /// ([`EnergyModel::f_given`] with `sigma = None`) it is the model at σ = 0.
    pub noise_conditional: bool,
    /// How a noise-conditional MLP sees σ (the other architectures have their own; see [`SigmaInput`]). Left
    /// out of a saved config when `raw`, so configs written before it existed read back the same.
    #[serde(skip_serializing_if = "SigmaInput::is_raw")]
    pub sigma_input: SigmaInput,
    /// What the network sees of an image (conv and denoiser nets).
    pub view: View,
}

/// How a noise-conditional [`Arch::Mlp`] sees the noise level σ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaInput {
    /// σ itself as one more input feature. Levels that differ by little in σ (0.05 and 0.1 next to inputs of
    /// size 2) get nearly the same function: the small levels inherit the shape of the large ones.
    #[default]
    Raw,
    /// `ln σ / 4` as one more input feature and, on every hidden layer, FiLM from Fourier features of `ln σ`
    /// (`h ← h·(1+γ(σ)) + β(σ)`, starting at the identity; the U-Net's embedding): every level of a geometric
    /// ladder is as far from its neighbours as any other, and each can scale and shift every hidden unit.
    LogFilm,
}

impl SigmaInput {
    /// Whether this is [`SigmaInput::Raw`] (the default).
    pub fn is_raw(&self) -> bool {
        *self == SigmaInput::Raw
    }
}

impl Default for ConditionalConfig {
    fn default() -> Self {
        ConditionalConfig {
            arch: Arch::Mlp,
            widths: vec![128, 128],
            activation: Activation::Silu,
            film: true,
            noise_conditional: false,
            sigma_input: SigmaInput::Raw,
            view: View::Full,
        }
    }
}

impl ConditionalConfig {
    /// Checks the widths, and that a σ input other than `raw` is on a noise-conditional MLP.
    pub fn validate(&self) -> Result<()> {
        if self.widths.is_empty() || self.widths.iter().any(|w| *w < 1) {
            return Err(invalid("conditional.widths", format!("need ≥ 1 positive widths, got {:?}", self.widths)));
        }
        if self.sigma_input != SigmaInput::Raw && !(self.arch == Arch::Mlp && self.noise_conditional) {
            return Err(invalid(
                "conditional.sigma_input",
                "only a noise-conditional MLP (arch = mlp, noise_conditional = true) takes sigma_input = log_film",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Composition;
    use tch::{nn, Device};

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
            let joint = m.f_given(&x, Some(&labels), None);
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
}
