//! The configuration: [`PoeConfig`] and its parts, their defaults, `--quick` and the checks.

use super::images::annealed;
use super::toy2d::{objective_2d, ATTRS_2D};
use crate::common::cli::check_run_settings;
use crate::common::config::{check_memory, f32_bytes, user_keys, validate_objective, MemoryPart};
use crate::common::device::DeviceArg;
use crate::common::CdSettings;
use anyhow::{bail, Result};
use ebm_core::data::shapes::{AttributeKind, ShapesConfig};
use ebm_core::energy::compose::Expression;
use ebm_core::energy::conditional::{Arch, ConditionalConfig, View};
use ebm_core::energy::{Activation, MlpConfig};
use ebm_core::objective::{ContrastiveConfig, Negatives};
use ebm_core::optim::AdamConfig;
use ebm_core::sampler::{BufferConfig, Init, LangevinConfig, Mala, MalaConfig, NoiseScales, SamplerConfig};
use ebm_core::train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Sampling of the 2-D compositions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling2d {
    /// Samples per expression.
    pub n: usize,
    /// Uniform proposals in the box for the importance-resampling start.
    pub n_proposals: usize,
    /// MALA steps (restricted to the box) after the start.
    pub mala_steps: usize,
    /// MALA step size.
    pub mala_step: f64,
}

impl Default for Sampling2d {
    fn default() -> Self {
        Sampling2d { n: 4000, n_proposals: 400_000, mala_steps: 200, mala_step: 2e-3 }
    }
}

/// The 2-D part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Toy2dSettings {
    /// Run it.
    pub enabled: bool,
    /// Rotation of the 8 Gaussians (degrees), so no mode sits on an axis.
    pub rotate_deg: f64,
    /// Points drawn before the per-attribute split.
    pub n_train: usize,
    /// Expressions over `right`, `left`, `upper`, `lower` (weights allowed, e.g. `right & 0.5*!upper`).
    pub expressions: Vec<String>,
    /// Also sample every expression with an OR using the raw experts (a mixture weighted by their `Z`).
    pub or_raw: bool,
    /// Half-width of the sampling box `[-b, b]²` (the data box of the 8 Gaussians is 3).
    pub box_half: f64,
    /// One MLP per attribute.
    pub model: MlpConfig,
    /// Training loop of each expert.
    pub train: TrainConfig,
    /// Replay-buffer contrastive divergence (restarts uniform on the box).
    pub cd: CdSettings,
    /// Sampling.
    pub sampling: Sampling2d,
    /// Grid cells per axis for the exact answers and `log Z`.
    pub grid_n: usize,
}

impl Default for Toy2dSettings {
    fn default() -> Self {
        Toy2dSettings {
            enabled: true,
            rotate_deg: 22.5,
            n_train: 20_000,
            expressions: ["right & upper", "right | upper", "right & !upper", "right & 0.2*!upper", "right & lower"]
                .map(String::from)
                .to_vec(),
            or_raw: true,
            box_half: 3.0,
            model: MlpConfig { in_dim: 2, hidden: vec![128, 128], activation: Activation::Silu },
            train: TrainConfig { iters: 1500, batch_size: 256, log_every: 10, ..Default::default() },
            cd: CdSettings::default(),
            sampling: Sampling2d::default(),
            grid_n: 400,
        }
    }
}

/// Sampling of images from uniform noise, clamped to `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSampling {
    /// Samples per target.
    pub n: usize,
    /// DSM-trained models: annealed Langevin steps per noise level (levels from `images.noise`).
    pub steps_per_level: usize,
    /// DSM-trained models: step size `step_ratio · σ²` at level σ.
    pub step_ratio: f64,
    /// DSM-trained models: finish with a denoising step.
    pub denoise: bool,
    /// DSM-trained models: Metropolis-adjust every annealed step (MALA at each level; see
    /// [`ebm_core::sampler::AnnealedConfig::metropolis`]).
    pub metropolis: bool,
    /// Where chains start: `noise` (`init`) or `data` (random training images).
    pub start: Start,
    /// The noise chains start from when `start = "noise"`.
    pub init: Init,
    /// Contrastive-trained models: Langevin steps from noise.
    pub steps: usize,
    /// Contrastive-trained models: the sampler (its `clamp` should be `[0, 1]`).
    pub langevin: LangevinConfig,
}

impl Default for ImageSampling {
    fn default() -> Self {
        ImageSampling {
            n: 200,
            steps_per_level: 100,
            step_ratio: 0.3,
            denoise: true,
            metropolis: false,
            start: Start::Data,
            init: Init::Uniform { low: 0.0, high: 1.0 },
            steps: 100,
            langevin: image_langevin(),
        }
    }
}

/// Contrastive divergence of the image models: `k` Langevin steps per update from one replay buffer per
/// label (`restart_prob = 1` gives short-run chains from `buffer.init` every time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageCd {
    /// Langevin steps per update.
    pub k: usize,
    /// The sampler.
    pub langevin: LangevinConfig,
    /// L2 penalty α on `f` at positives and negatives.
    pub alpha: f64,
    /// The replay buffer of each label.
    pub buffer: BufferConfig,
}

impl Default for ImageCd {
    fn default() -> Self {
        ImageCd { k: 20, langevin: LangevinConfig::seed_form(0.01), alpha: 0.1, buffer: BufferConfig::default() }
    }
}

impl ImageCd {
    /// The contrastive objective these settings describe.
    pub fn objective(&self) -> ContrastiveConfig {
        ContrastiveConfig {
            negatives: Negatives::Replay(self.buffer.clone()),
            k: self.k,
            sampler: SamplerConfig::Langevin(self.langevin.clone()),
            alpha: self.alpha,
        }
    }
}

fn image_langevin() -> LangevinConfig {
    LangevinConfig {
        step_size: 10.0,
        noise: Some(0.005),
        grad_clip: Some(0.01),
        clamp: Some([0.0, 1.0]),
        record: false,
    }
}

/// Where image chains start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Noise from `images.sampling.init`.
    Noise,
    /// Training images drawn at random (none of them has a held-out combination).
    Data,
}

/// How the image models are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageObjective {
    /// Denoising score matching over the noise levels `images.noise` (`f_σ = f/σ`), sampled by annealed Langevin.
    Dsm,
    /// Contrastive divergence with one replay buffer per label (`images.cd`), sampled by Langevin.
    Contrastive,
}

/// A kind's own training budget ([`ImageSettings::kind_training`]); unset fields take the shared values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindTraining {
    /// Updates.
    pub iters: Option<usize>,
    /// Adam's learning rate.
    pub lr: Option<f64>,
}

/// The image part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSettings {
    /// Run it.
    pub enabled: bool,
    /// The data (image size, shape sizes, held-out combinations).
    pub shapes: ShapesConfig,
    /// Training images.
    pub n_train: usize,
    /// Attribute types the composition may use (their values are the names targets can use).
    pub kinds: Vec<AttributeKind>,
    /// One conditional network `f(x, attribute)` over the values of every kind (each training image is paired
    /// with one of its attribute values, drawn at random); `false`: one network per kind.
    pub one_network: bool,
    /// With one network per kind: what each kind's network sees (`full`, `channel_sum`, `pixel`), overriding
    /// `net.view`; e.g. `{ shape = "channel_sum", colour = "pixel" }` makes each expert blind to the other
    /// attribute. The joint baseline always uses `net`.
    pub views: BTreeMap<AttributeKind, View>,
    /// With one network per kind: a kind's whole network, overriding `net` and `views` for that kind (e.g. a
    /// scalar-output conv energy on the channel sum for the shape).
    pub nets: BTreeMap<AttributeKind, ConditionalConfig>,
    /// The network of every conditional EBM (the baseline too).
    pub net: ConditionalConfig,
    /// With one network per kind: a kind's own number of updates and learning rate, overriding `iters` and
    /// `optim.lr` (e.g. `{ colour = { iters = 5000, lr = 3e-3 } }`: the per-pixel colour expert fits in fewer
    /// updates than the shape expert, at a larger rate).
    pub kind_training: BTreeMap<AttributeKind, KindTraining>,
    /// Updates per model.
    pub iters: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam.
    pub optim: AdamConfig,
    /// Clip the gradient norm.
    pub grad_clip: Option<f64>,
    /// Train experts that see each pixel alone (`view = "pixel"`, the colour) with lit and black pixels
    /// counted equally ([`balance_lit_pixels`]): the expert then says which colour lit pixels have and not how
    /// many there are, which is the shape expert's business. Without it the per-pixel expert's mode is the
    /// all-black image (about four pixels in five are black), and the composition drifts there.
    pub balance_pixels: bool,
    /// Keep an exponential moving average of the weights with this decay and use it after training
    /// (for saving and sampling); `None`: the last weights.
    pub ema: Option<f64>,
    /// Training objective.
    pub objective: ImageObjective,
    /// Noise levels of DSM training and annealed sampling.
    pub noise: NoiseScales,
    /// Contrastive divergence with one replay buffer per label.
    pub cd: ImageCd,
    /// Sampling of compositions and the baseline.
    pub sampling: ImageSampling,
    /// What to generate, as expressions over the attribute values (the first is normally the held-out one);
    /// the detectors check the samples against these.
    pub targets: Vec<String>,
    /// The composition sampled for a target: `{target}` is replaced by the target in parentheses. Besides the
    /// attribute values it may name `any_<kind>` (e.g. `any_colour`): every network also learns its kind's
    /// unconditional model under that label (`any` for the single network of `one_network`) when the
    /// composition names one. E.g. `{target} & !any_colour` is Bayes' rule for attributes independent given the
    /// image, `p(x | a, b) ∝ p(x | a) p(x | b) / p(x)`.
    pub composition: String,
    /// Train and sample the joint-label baseline.
    pub baseline: bool,
    /// A sample's shape (and size, position) counts only when its best template has at least this IoU with
    /// the sample's foreground (generated images have 1).
    pub min_iou: f64,
    /// Log training metrics every this many updates.
    pub log_every: usize,
    /// Skip training and load the image models saved by an earlier run of the same settings (its run folder,
    /// holding `images/<model>/model.safetensors`), e.g. to try other sampler settings.
    pub load_from: Option<PathBuf>,
    /// Kinds whose experts in the compositions are the exact noisy densities of the training data
    /// (`ebm_core::energy::empirical`) instead of trained networks, to tell which expert limits a
    /// composition: the shape's sees the channel sum, the colour's each pixel (lit with probability ½ when
    /// `balance_pixels`, else with the share of lit pixels in that colour's images). These kinds are not trained.
    pub exact_experts: Vec<AttributeKind>,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            enabled: true,
            shapes: ShapesConfig { max_offset: Some(2), ..Default::default() },
            n_train: 6000,
            kinds: vec![AttributeKind::Shape, AttributeKind::Colour],
            one_network: false,
            views: BTreeMap::from([(AttributeKind::Shape, View::ChannelSum), (AttributeKind::Colour, View::Pixel)]),
            nets: BTreeMap::from([(
                AttributeKind::Colour,
                ConditionalConfig {
                    arch: Arch::Unet,
                    widths: vec![32, 32, 32],
                    activation: Activation::Silu,
                    film: true,
                    noise_conditional: true,
                    view: View::Pixel,
                    ..Default::default()
                },
            )]),
            kind_training: BTreeMap::from([(
                AttributeKind::Colour,
                KindTraining { iters: Some(5000), lr: Some(3e-3) },
            )]),
            net: ConditionalConfig {
                arch: Arch::Unet,
                widths: vec![16, 32, 64],
                activation: Activation::Silu,
                film: true,
                noise_conditional: true,
                view: View::Full,
                ..Default::default()
            },
            iters: 12_000,
            batch_size: 64,
            optim: AdamConfig { lr: 2e-3, betas: [0.9, 0.999], ..Default::default() },
            grad_clip: Some(10.0),
            balance_pixels: true,
            ema: Some(0.999),
            objective: ImageObjective::Dsm,
            noise: NoiseScales::default(),
            cd: ImageCd {
                k: 20,
                langevin: image_langevin(),
                alpha: 1.0,
                buffer: BufferConfig {
                    capacity: 1000,
                    restart_prob: 0.05,
                    init: Init::Uniform { low: 0.0, high: 1.0 },
                },
            },
            sampling: ImageSampling::default(),
            targets: ["triangle & blue", "circle & red", "square & green"].map(String::from).to_vec(),
            composition: "{target}".into(),
            baseline: true,
            min_iou: 0.5,
            log_every: 10,
            load_from: None,
            exact_experts: Vec::new(),
        }
    }
}

/// The experiment's configuration (`experiments/exp_poe.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoeConfig {
    /// Seed.
    pub seed: u64,
    /// Device.
    pub device: DeviceArg,
    /// CPU threads for libtorch (0: automatic, see `device::auto_threads`). 1 by default: the models are small,
    /// and on a busy 2-core machine libtorch's thread pool is many times slower than one thread.
    pub threads: usize,
    /// Root folder of the runs.
    pub out: PathBuf,
    /// Run folder name (default: a timestamp).
    pub run_name: Option<String>,
    /// The 2-D part.
    pub toy: Toy2dSettings,
    /// The image part.
    pub images: ImageSettings,
}

impl Default for PoeConfig {
    fn default() -> Self {
        PoeConfig {
            seed: 0,
            device: DeviceArg::Auto,
            threads: 1,
            out: PathBuf::from("experiments/runs"),
            run_name: None,
            toy: Toy2dSettings::default(),
            images: ImageSettings::default(),
        }
    }
}

crate::common::cli::experiment_config!(PoeConfig);

impl PoeConfig {
    /// Shrinks the budget for a smoke run well under a minute (same expressions and targets).
    pub fn make_quick(&mut self) {
        let t = &mut self.toy;
        t.train.iters = t.train.iters.min(40);
        t.n_train = t.n_train.min(4000);
        t.cd.k = t.cd.k.min(5);
        t.cd.buffer_capacity = t.cd.buffer_capacity.min(1000);
        t.sampling.n = t.sampling.n.min(300);
        t.sampling.n_proposals = t.sampling.n_proposals.min(20_000);
        t.sampling.mala_steps = t.sampling.mala_steps.min(20);
        t.grid_n = t.grid_n.min(100);
        let im = &mut self.images;
        im.n_train = im.n_train.min(500);
        im.iters = im.iters.min(8);
        for k in im.kind_training.values_mut() {
            k.iters = k.iters.map(|n| n.min(8));
        }
        im.batch_size = im.batch_size.min(32);
        im.cd.k = im.cd.k.min(3);
        im.cd.buffer.capacity = im.cd.buffer.capacity.min(100);
        im.sampling.n = im.sampling.n.min(16);
        im.sampling.steps = im.sampling.steps.min(5);
        im.sampling.steps_per_level = im.sampling.steps_per_level.min(1);
        im.log_every = im.log_every.min(4);
    }

    /// Checks names and ranges; expressions that do not parse or name unknown attributes are errors pointing
    /// at them.
    ///
    /// Every check runs before the run folder is created: settings (errors name the config keys as written
    /// in the file, e.g. `toy.cd.k`, `images.optim.lr`), the 2-D network's input width, and the memory the
    /// run needs.
    pub fn validate(&self) -> Result<()> {
        check_run_settings(self.threads, self.run_name.as_deref())?;
        let t = &self.toy;
        if t.enabled {
            if t.expressions.is_empty() {
                bail!("toy.expressions: need at least one expression");
            }
            for e in &t.expressions {
                Expression::parse_known(e, &ATTRS_2D).map_err(|e| anyhow::anyhow!("toy.expressions: {e}"))?;
            }
            if !(t.box_half > 0.0) || !t.rotate_deg.is_finite() {
                bail!("toy.box_half must be > 0 and toy.rotate_deg finite");
            }
            if t.n_train < 10 || t.sampling.n < 2 || t.sampling.n_proposals < t.sampling.n || t.grid_n < 10 {
                bail!("toy: need n_train ≥ 10, sampling.n ≥ 2, sampling.n_proposals ≥ sampling.n, grid_n ≥ 10");
            }
            user_keys(Mala::new(MalaConfig { step_size: t.sampling.mala_step, record: false }), TOY_KEYS)?;
            user_keys(t.model.validate(), TOY_KEYS)?;
            if t.model.in_dim != 2 {
                bail!(
                    "toy.model.in_dim = {}, but the 2-D data are points of width 2: set toy.model.in_dim = 2",
                    t.model.in_dim
                );
            }
            user_keys(t.train.validate(), TOY_KEYS)?;
            user_keys(validate_objective(&objective_2d(t)), TOY_KEYS)?;
        }
        let im = &self.images;
        if im.enabled {
            user_keys(im.shapes.validate(), IMAGE_KEYS)?;
            user_keys(im.net.validate(), IMAGE_KEYS)?;
            for (kind, n) in &im.nets {
                let key = format!("images.nets.{}", kind.name());
                user_keys(n.validate(), &[("conditional", key.as_str())])?;
            }
            if let Some(d) = im.ema {
                if !(0.0..1.0).contains(&d) {
                    bail!("images.ema: the decay must be in [0, 1), got {d}");
                }
            }
            user_keys(im.cd.objective().validate(), IMAGE_KEYS)?;
            user_keys(im.optim.validate(), IMAGE_KEYS)?;
            user_keys(im.sampling.langevin.validate(), &[("langevin", "images.sampling.langevin")])?;
            user_keys(im.sampling.init.validate(), IMAGE_KEYS)?;
            user_keys(annealed(im).validate(), IMAGE_KEYS)?;
            if im.kinds.is_empty() || im.targets.is_empty() {
                bail!("images: need at least one attribute kind and one target");
            }
            if im.n_train == 0 || im.iters == 0 || im.batch_size == 0 || im.sampling.n == 0 || im.log_every == 0 {
                bail!("images: n_train, iters, batch_size, sampling.n and log_every must be ≥ 1");
            }
            for kind in im.kind_training.keys() {
                let (iters, optim) = kind_budget(im, *kind);
                if iters == 0 {
                    bail!("images.kind_training.{}.iters must be ≥ 1", kind.name());
                }
                optim.validate().map_err(|e| anyhow::anyhow!("images.kind_training.{}: {e}", kind.name()))?;
            }
            for k in &im.exact_experts {
                if !im.kinds.contains(k) || im.one_network || im.objective != ImageObjective::Dsm || uses_priors(im) {
                    bail!(
                        "images.exact_experts: {} must be one of images.kinds, with one network per kind, objective = \"dsm\" and no prior labels (any_…) in images.composition",
                        k.name()
                    );
                }
            }
            let pixel_expert = !im.one_network && im.kinds.iter().any(|k| kind_net(im, *k).view == View::Pixel);
            if im.balance_pixels && !pixel_expert {
                bail!("images.balance_pixels = true, but no expert sees single pixels (view = \"pixel\"); set it to false");
            }
            let known: Vec<&str> = im.kinds.iter().flat_map(|k| k.values().iter().copied()).collect();
            let with_priors = composition_names(im);
            for e in &im.targets {
                Expression::parse_known(e, &known).map_err(|e| {
                    anyhow::anyhow!("images.targets (the names are the values of images.kinds = {:?}): {e}", im.kinds)
                })?;
                Expression::parse_known(&composition_of(im, e), &with_priors)
                    .map_err(|e| anyhow::anyhow!("images.composition: {e}"))?;
            }
        }
        if !t.enabled && !im.enabled {
            bail!("both parts are disabled (toy.enabled = images.enabled = false)");
        }
        check_memory(&self.memory_parts())
    }

    /// The parts of the run's memory estimate of the enabled parts, each with the key that sets its size:
    /// the 2-D experts (parameters with gradients and Adam's moments, activations, data, replay buffer,
    /// sampling proposals) and the image part (the shapes data, the networks' activations at the image size,
    /// their parameters, the replay buffers).
    pub fn memory_parts(&self) -> Vec<MemoryPart> {
        let mut parts = Vec::new();
        let t = &self.toy;
        if t.enabled {
            let mut dims = vec![t.model.in_dim as f64];
            dims.extend(t.model.hidden.iter().map(|h| *h as f64));
            dims.push(1.0);
            let params: f64 = dims.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
            let width: f64 = t.model.hidden.iter().map(|h| *h as f64).sum();
            let grid = (t.grid_n as f64).powi(2).min((1 << 15) as f64);
            let rows = (2.0 * t.train.batch_size as f64).max(t.sampling.n as f64).max(grid);
            let hidden = format!("toy.model.hidden = {:?}", t.model.hidden);
            parts.push(MemoryPart::new(
                &hidden,
                format!("{params:.3e} parameters per expert with their gradients and Adam's two moments"),
                f32_bytes(4.0 * params * ATTRS_2D.len() as f64),
            ));
            parts.push(MemoryPart::new(
                format!("{hidden} (with toy.train.batch_size = {})", t.train.batch_size),
                format!("the activations of {rows} points"),
                f32_bytes(3.0 * rows * width),
            ));
            parts.push(MemoryPart::new(
                format!("toy.sampling.n_proposals = {}", t.sampling.n_proposals),
                "the uniform proposals and their f of the importance-resampling start",
                f32_bytes(3.0 * t.sampling.n_proposals as f64),
            ));
            parts.push(MemoryPart::new(
                format!("toy.n_train = {}", t.n_train),
                "the training points",
                f32_bytes(2.0 * t.n_train as f64),
            ));
            parts.push(MemoryPart::new(
                format!("toy.cd.buffer_capacity = {}", t.cd.buffer_capacity),
                "the replay buffers",
                f32_bytes(2.0 * (t.cd.buffer_capacity * ATTRS_2D.len()) as f64),
            ));
        }
        let im = &self.images;
        if im.enabled {
            let s = im.shapes.image_size as f64;
            let pixels = 3.0 * s * s;
            let size = format!("images.shapes.image_size = {}", im.shapes.image_size);
            parts.push(MemoryPart::new(
                format!("{size} (with images.n_train = {})", im.n_train),
                format!("{} training images of 3×{s}×{s} pixels", im.n_train),
                f32_bytes(im.n_train as f64 * pixels),
            ));
            // the widest network at full resolution: one feature map per width, kept for the backward pass
            let nets: Vec<ConditionalConfig> =
                std::iter::once(im.net.clone()).chain(im.nets.values().cloned()).collect();
            let widths = nets.iter().map(|n| n.widths.iter().map(|w| *w as f64).sum::<f64>()).fold(0.0, f64::max);
            let rows = (im.batch_size as f64).max(im.sampling.n as f64);
            parts.push(MemoryPart::new(
                format!("{size} (with images.batch_size = {}, images.net.widths = {:?})", im.batch_size, im.net.widths),
                format!("the network activations of {rows} images"),
                f32_bytes(3.0 * rows * widths * s * s),
            ));
            let params = nets
                .iter()
                .map(|n| n.widths.windows(2).map(|w| (w[0] * w[1]) as f64 * 9.0 * 2.0).sum::<f64>())
                .fold(0.0, f64::max);
            parts.push(MemoryPart::new(
                format!("images.net.widths = {:?}", im.net.widths),
                format!("{params:.3e} parameters per network with their gradients and Adam's two moments"),
                f32_bytes(4.0 * params * (im.kinds.len() + 1) as f64),
            ));
            parts.push(MemoryPart::new(
                format!("images.cd.buffer.capacity = {}", im.cd.buffer.capacity),
                "the replay buffer of each label",
                f32_bytes(im.cd.buffer.capacity as f64 * pixels * 8.0),
            ));
        }
        parts
    }
}

/// How the library's parameter names map to the keys of `[toy]` (see [`user_keys`]).
const TOY_KEYS: &[(&str, &str)] = &[
    ("mlp", "toy.model"),
    ("train", "toy.train"),
    ("optim", "toy.train.optim"),
    ("contrastive.k", "toy.cd.k"),
    ("contrastive.alpha", "toy.cd.alpha"),
    ("langevin", "toy.cd.langevin"),
    ("buffer.capacity", "toy.cd.buffer_capacity"),
    ("buffer.restart_prob", "toy.cd.restart_prob"),
    ("mala.step_size", "toy.sampling.mala_step"),
];

/// How the library's parameter names map to the keys of `[images]` (see [`user_keys`]).
const IMAGE_KEYS: &[(&str, &str)] = &[
    ("shapes", "images.shapes"),
    ("conditional", "images.net"),
    ("contrastive", "images.cd"),
    ("langevin", "images.cd.langevin"),
    ("buffer", "images.cd.buffer"),
    ("optim", "images.optim"),
    ("init", "images.sampling.init"),
    ("noise_scales", "images.noise"),
    ("annealed.steps_per_level", "images.sampling.steps_per_level"),
    ("annealed.step_ratio", "images.sampling.step_ratio"),
];

/// The network of one kind's expert: `nets[kind]`, else `net` with the view `views[kind]`.
pub(super) fn kind_net(im: &ImageSettings, kind: AttributeKind) -> ConditionalConfig {
    im.nets.get(&kind).cloned().unwrap_or_else(|| ConditionalConfig {
        view: im.views.get(&kind).copied().unwrap_or(im.net.view),
        ..im.net.clone()
    })
}

/// A kind's updates and optimiser: `kind_training[kind]` over the shared `iters` and `optim`.
pub(super) fn kind_budget(im: &ImageSettings, kind: AttributeKind) -> (usize, AdamConfig) {
    let own = im.kind_training.get(&kind).cloned().unwrap_or_default();
    (own.iters.unwrap_or(im.iters), AdamConfig { lr: own.lr.unwrap_or(im.optim.lr), ..im.optim.clone() })
}

pub(super) fn kinds_list(im: &ImageSettings) -> String {
    im.kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// The label of a network's unconditional model.
pub(super) fn prior_label(kind: Option<AttributeKind>) -> String {
    kind.map(|k| format!("any_{}", k.name())).unwrap_or_else(|| "any".into())
}

/// The names a composition may use: the values of every kind and the prior labels.
pub(super) fn composition_names(im: &ImageSettings) -> Vec<String> {
    let mut v: Vec<String> = im.kinds.iter().flat_map(|k| k.values().iter().map(|s| s.to_string())).collect();
    if im.one_network {
        v.push(prior_label(None));
    } else {
        v.extend(im.kinds.iter().map(|k| prior_label(Some(*k))));
    }
    v
}

/// Whether the composition names a prior (`any…`): only then do the networks learn one.
pub(super) fn uses_priors(im: &ImageSettings) -> bool {
    Expression::parse(&composition_of(im, "x")).is_ok_and(|e| e.names().iter().any(|n| n.starts_with("any")))
}

/// The composition sampled for a target.
pub(super) fn composition_of(im: &ImageSettings, target: &str) -> String {
    im.composition.replace("{target}", &format!("({target})"))
}

/// Resolves the path of the default config relative to the working directory or the repository.
pub fn default_config_path() -> Option<PathBuf> {
    crate::config::find_config("exp_poe.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_expressions_are_errors_pointing_at_them() {
        let mut cfg = PoeConfig::default();
        cfg.toy.expressions = vec!["right & uper".into()];
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("unknown name 'uper' at column 9") && e.contains("known names: left, lower, right, upper"),
            "{e}"
        );
        let mut cfg = PoeConfig::default();
        cfg.images.targets = vec!["triangle & (blue".into()];
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("never closed") && e.contains("column 12"), "{e}");
        let mut cfg = PoeConfig::default();
        cfg.images.targets = vec!["triangle & small".into()];
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("unknown name 'small'") && e.contains("images.kinds"), "{e}");
    }

    #[test]
    fn the_input_width_the_users_keys_and_the_memory_are_checked() {
        let mut cfg = PoeConfig::default();
        cfg.toy.model.in_dim = 3;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("toy.model.in_dim = 3") && e.contains("width 2"), "{e}");
        let mut cfg = PoeConfig::default();
        cfg.toy.cd.buffer_capacity = 0;
        assert!(cfg.validate().unwrap_err().to_string().contains("invalid value for toy.cd.buffer_capacity"));
        let mut cfg = PoeConfig::default();
        cfg.images.cd.buffer.restart_prob = 2.0;
        assert!(cfg.validate().unwrap_err().to_string().contains("invalid value for images.cd.buffer.restart_prob"));
        let mut cfg = PoeConfig::default();
        cfg.images.noise.levels = 0;
        assert!(cfg.validate().unwrap_err().to_string().contains("invalid value for images.noise"));
        let mut cfg = PoeConfig::default();
        cfg.images.nets.get_mut(&AttributeKind::Colour).unwrap().widths = vec![];
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("invalid value for images.nets.colour.widths"), "{e}");
        let cfg = PoeConfig { threads: 100_000, ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("threads = 100000"));
        // the defaults need little; a 100000² image far more than any machine
        let total: f64 = PoeConfig::default().memory_parts().iter().map(|p| p.bytes).sum();
        assert!(total < 2e9, "{total}");
        let mut cfg = PoeConfig::default();
        cfg.images.shapes.image_size = 100_000;
        let e = crate::common::config::check_memory_within(&cfg.memory_parts(), 1e12).unwrap_err().to_string();
        assert!(e.starts_with("images.shapes.image_size = 100000") && e.contains(" GB"), "{e}");
    }

    #[test]
    fn per_kind_networks_and_ema_are_checked_and_used() {
        let mut cfg = PoeConfig::default();
        cfg.images.ema = Some(1.5);
        assert!(cfg.validate().unwrap_err().to_string().contains("images.ema"));
        let mut cfg = PoeConfig::default();
        cfg.images.nets.insert(AttributeKind::Shape, ConditionalConfig { widths: vec![], ..Default::default() });
        assert!(cfg.validate().unwrap_err().to_string().contains("widths"));
        // a kind without its own network gets `net` with its view; one with gets exactly its own
        let mut im = ImageSettings { nets: BTreeMap::new(), ..ImageSettings::default() };
        assert_eq!(kind_net(&im, AttributeKind::Colour), ConditionalConfig { view: View::Pixel, ..im.net.clone() });
        let own = ConditionalConfig { arch: Arch::Conv, view: View::ChannelSum, ..Default::default() };
        im.nets.insert(AttributeKind::Shape, own.clone());
        assert_eq!(kind_net(&im, AttributeKind::Shape), own);
        // a kind's own budget overrides the shared one, field by field, and is checked
        im.kind_training.insert(AttributeKind::Colour, KindTraining { iters: Some(5000), lr: None });
        assert_eq!(kind_budget(&im, AttributeKind::Colour), (5000, im.optim.clone()));
        assert_eq!(kind_budget(&im, AttributeKind::Shape), (im.iters, im.optim.clone()));
        let mut cfg = PoeConfig::default();
        cfg.images.kind_training.insert(AttributeKind::Shape, KindTraining { iters: None, lr: Some(-1.0) });
        assert!(cfg.validate().unwrap_err().to_string().contains("images.kind_training.shape"));
        let mut cfg = PoeConfig::default();
        cfg.images.kind_training.insert(AttributeKind::Colour, KindTraining { iters: Some(0), lr: None });
        assert!(cfg.validate().unwrap_err().to_string().contains("images.kind_training.colour.iters"));
        // balancing lit and black pixels needs a per-pixel expert
        let mut cfg = PoeConfig::default();
        cfg.images.balance_pixels = true;
        cfg.validate().unwrap();
        cfg.images.nets.clear();
        cfg.images.views.insert(AttributeKind::Colour, View::Full);
        assert!(cfg.validate().unwrap_err().to_string().contains("images.balance_pixels"));
    }
}
