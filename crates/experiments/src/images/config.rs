//! Settings of `exp_images`: the [`ImageMethod`]s and [`ImagesConfig`].

pub use super::ais_eval::{AisBaseSetting, AisPath, BaseComponents};
use crate::common::cli::check_run_settings;
use crate::common::config::{check_memory, f32_bytes, user_keys, validate_objective, MemoryPart};
use crate::common::device::DeviceArg;
use crate::common::CdSettings;
use anyhow::{bail, Result};
use ebm_core::ais::{AisBase, AisConfig, AisTransition, BoxMoves, Resample, Schedule};
use ebm_core::classifier::ClassifierConfig;
use ebm_core::data::images::{FolderOptions, ImageDataset, PixelScale};
use ebm_core::energy::conditional::{Arch, ConditionalConfig};
use ebm_core::energy::ConvConfig;
use ebm_core::objective::{DrlConfig, JemConfig, Negatives, ObjectiveConfig, SmMethod};
use ebm_core::optim::AdamConfig;
use ebm_core::sampler::{BufferConfig, Init, LangevinConfig, RecoveryConfig};
use ebm_core::train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the image EBM is trained; its name in configs and on the command line is `replay`, `cdk`, `dsm`, `jem`
/// or `drl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageMethod {
    /// Contrastive divergence with the IGEBM replay buffer.
    Replay,
    /// CD-k from the data.
    Cdk,
    /// Denoising score matching.
    Dsm,
    /// JEM: a conv classifier's logits as an EBM ([`super::ConvLogits`]), cross-entropy on the labels plus
    /// the replay-buffer contrastive term (the `cd` settings) on the label marginal.
    Jem,
    /// Diffusion recovery likelihood on a noise-conditional conv net (`drl.model`), sampled by recovery from
    /// the top noise level down; its density is the model at the lowest level.
    Drl,
}

impl ImageMethod {
    /// Every method.
    pub const ALL: [ImageMethod; 5] =
        [ImageMethod::Replay, ImageMethod::Cdk, ImageMethod::Dsm, ImageMethod::Jem, ImageMethod::Drl];

    /// The name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ImageMethod::Replay => "replay",
            ImageMethod::Cdk => "cdk",
            ImageMethod::Dsm => "dsm",
            ImageMethod::Jem => "jem",
            ImageMethod::Drl => "drl",
        }
    }

    /// The objective with the experiment's settings.
    pub fn objective(self, cfg: &ImagesConfig) -> ObjectiveConfig {
        match self {
            ImageMethod::Replay => ObjectiveConfig::Contrastive(cfg.cd.objective(
                Negatives::Replay(BufferConfig {
                    capacity: cfg.cd.buffer_capacity,
                    restart_prob: cfg.cd.restart_prob,
                    init: cfg.noise_init(),
                }),
                cfg.cd.k,
            )),
            ImageMethod::Cdk => ObjectiveConfig::Contrastive(cfg.cd.objective(Negatives::Data, cfg.cd.k)),
            ImageMethod::Dsm => ObjectiveConfig::ScoreMatching { method: SmMethod::Denoising { sigma: cfg.dsm_sigma } },
            ImageMethod::Jem => ObjectiveConfig::Jem(JemConfig {
                contrastive: CdSettings { langevin: cfg.method_langevin(ImageMethod::Jem), ..cfg.cd.clone() }
                    .objective(
                        Negatives::Replay(BufferConfig {
                            capacity: cfg.cd.buffer_capacity,
                            restart_prob: cfg.cd.restart_prob,
                            init: cfg.noise_init(),
                        }),
                        cfg.cd.k,
                    ),
                gen_weight: cfg.jem.gen_weight,
            }),
            ImageMethod::Drl => ObjectiveConfig::Drl(DrlConfig {
                scales: cfg.drl.scales.clone(),
                k: cfg.drl.k,
                step_ratio: cfg.drl.step_ratio,
                alpha: cfg.drl.alpha,
                ..Default::default()
            }),
        }
    }
}

impl std::fmt::Display for ImageMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ImageMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ImageMethod::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let valid: Vec<&str> = ImageMethod::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method '{s}'; valid methods: {}", valid.join(", "))
        })
    }
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSettings {
    /// `digits`, `mnist5k` or `folder:<path>`.
    pub dataset: String,
    /// Folder of `digits.csv.gz` and `mnist_5k.csv.gz` (default: `$EBM_DATA_DIR`, else `data/`).
    pub data_dir: Option<PathBuf>,
    /// Pixel range of the data (and of the samples).
    pub scale: PixelScale,
    /// Share of the images held out as the test split (deterministic for the seed, stratified by label).
    pub test_fraction: f64,
    /// How a folder is read (size, resizing, colour, bad files).
    pub folder: FolderOptions,
}

impl Default for DataSettings {
    fn default() -> Self {
        DataSettings {
            dataset: "digits".into(),
            data_dir: None,
            scale: PixelScale::MinusOneOne,
            test_fraction: 0.2,
            folder: FolderOptions::default(),
        }
    }
}

/// Final sampling: fresh chains from uniform noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingSettings {
    /// Chains (images in `samples.png` and in the classifier's score).
    pub n: usize,
    /// Langevin steps from noise (the training sampler's settings).
    pub steps: usize,
    /// Images per row of the grids.
    pub nrow: usize,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings { n: 400, steps: 1000, nrow: 20 }
    }
}

/// TensorBoard images during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Sample and buffer grids (and the classifier's score of the samples) every this many updates (0: only
    /// at the end).
    pub image_every: usize,
    /// Images per grid.
    pub grid_n: usize,
    /// Langevin steps of the fresh samples shown during training.
    pub fresh_steps: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { image_every: 250, grid_n: 100, fresh_steps: 200 }
    }
}

/// AIS settings for `log Z` (base: uniform on the data range unless `base` says otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AisSettings {
    /// Run AIS at the end.
    pub enabled: bool,
    /// Chains.
    pub chains: usize,
    /// Intermediate distributions.
    pub steps: usize,
    /// MALA sweeps per distribution.
    pub sweeps: usize,
    /// β spacing.
    pub schedule: Schedule,
    /// Initial MALA step size (adapted towards `target_accept`).
    pub step_size: f64,
    /// MALA acceptance rate the step size is adapted to.
    pub target_accept: f64,
    /// The start distribution.
    pub base: AisBaseSetting,
    /// Resample the chains when their weights degenerate (AIS becomes an SMC sampler; see
    /// `ebm_core::ais::Resample`), e.g. `{ ess_fraction = 0.5, groups = 8 }` (as in `experiments/exp_images.toml`:
    /// the groups' spread gives the standard error); unset: plain AIS.
    pub resample: Option<Resample>,
    /// The chains' path from the base to the model: `"auto"` (the noise levels for `--method drl`, direct for
    /// the others; what `experiments/exp_images.toml` sets), `"direct"` (one geometric bridge; what a config
    /// without the key means, as configs written before `"auto"` did) or `"noise_levels"` (`--method drl`:
    /// through the model at each level of `drl.scales`, largest first; see [`AisPath`]).
    pub path: AisPath,
    /// The seed of the AIS chains (libtorch's RNG, set just before AIS); unset: `seed + 13`. Changing it gives
    /// an independent AIS estimate of the same model on the same data split (`seed` also sets the split).
    pub seed: Option<u64>,
    /// How the chains move on the data box: `"tanh"` (in `atanh` coordinates, where the box has no faces, for
    /// images whose pixels and mass lie on the box's faces; same `log Z`, see `ebm_core::ais::BoxMoves`; what
    /// `experiments/exp_images.toml` sets) or `"reject"` (in pixel space; MALA rejects proposals that leave the
    /// box; what a config without the key means, as configs written before this setting did).
    pub box_moves: BoxMoves,
}

impl Default for AisSettings {
    fn default() -> Self {
        AisSettings {
            enabled: true,
            chains: 128,
            steps: 2000,
            sweeps: 1,
            schedule: Schedule::Sigmoid { delta: 4.0 },
            step_size: 1e-3,
            target_accept: 0.6,
            base: AisBaseSetting::Uniform,
            resample: None,
            path: AisPath::Direct,
            seed: None,
            box_moves: BoxMoves::Reject,
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSettings {
    /// Train the digit classifier (needs labels) and score samples with it.
    pub classifier_enabled: bool,
    /// The classifier.
    pub classifier: ClassifierConfig,
    /// AIS.
    pub ais: AisSettings,
    /// Images per set in the out-of-distribution AUROC (test images vs noise vs shuffled pixels).
    pub ood_n: usize,
    /// Ridge `r` (pixel-scale variance) of the Gaussian baseline `N(μ, Σ + r I)` beside the AIS results; unset:
    /// `Δ²/12` with `Δ` the data's smallest grey-level step (uniform dequantisation of one level).
    pub gaussian_ridge: Option<f64>,
    /// Confidence bins of the expected calibration error (JEM).
    pub ece_bins: usize,
    /// Evaluate the model saved in this checkpoint (a `step-NNNNNNNN` folder, or a run's `checkpoints` folder:
    /// its newest) instead of training one: its weights are loaded and `train.iters` is not run. The model's
    /// settings must be those of the run that wrote it.
    pub checkpoint: Option<PathBuf>,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            classifier_enabled: true,
            classifier: ClassifierConfig::default(),
            ais: AisSettings::default(),
            ood_n: 1000,
            gaussian_ridge: None,
            ece_bins: 10,
            checkpoint: None,
        }
    }
}

/// JEM settings (`--method jem`); the contrastive term takes the `cd` settings and the classifier the `model`
/// trunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JemSettings {
    /// Weight of the contrastive term beside the cross-entropy (0: a plain classifier).
    pub gen_weight: f64,
    /// Final samples from each class's `f(x | y)` (`sampling.n / L` chains per label) instead of the label
    /// marginal `f(x)`.
    pub class_conditional_samples: bool,
    /// The Langevin sampler of JEM's contrastive term and samples (unset: `cd.langevin`). JEM's logits are
    /// sharper than the replay EBM's `f` (the cross-entropy makes them so), so its input gradients are larger
    /// and `cd.langevin`'s step 10 with the ±0.03 clamp moves every pixel by the clamp at every step: the
    /// chains bounce instead of settling. JEM's own setting (step 1, noise 0.01) works.
    pub langevin: Option<LangevinConfig>,
}

impl Default for JemSettings {
    fn default() -> Self {
        JemSettings { gen_weight: 1.0, class_conditional_samples: true, langevin: None }
    }
}

/// Diffusion recovery likelihood settings (`--method drl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrlSettings {
    /// The noise-conditional network (`noise_conditional` is forced on; labels are not used).
    pub model: ConditionalConfig,
    /// The noise ladder; the model's density is read at `scales.sigma_min`.
    pub scales: ebm_core::sampler::NoiseScales,
    /// Langevin steps on each recovery conditional per update.
    pub k: usize,
    /// Conditional step size `step_ratio · δ_t²`.
    pub step_ratio: f64,
    /// L2 penalty on `f_a`.
    pub alpha: f64,
    /// Sampling: Langevin steps per level of the descent.
    pub steps_per_level: usize,
    /// Sampling: Langevin steps on the top level's marginal, from `N(0, sigma_max²)`, before the descent.
    pub top_steps: usize,
    /// AIS steps for this method (unset: `eval.ais.steps`), shared among the noise levels of its path (the
    /// default `eval.ais.path = "auto"`): the density at `sigma_min` is far sharper than the replay EBM's.
    pub ais_steps: Option<usize>,
}

impl Default for DrlSettings {
    fn default() -> Self {
        DrlSettings {
            model: ConditionalConfig {
                arch: Arch::Conv,
                widths: vec![32, 64, 64],
                film: false,
                noise_conditional: true,
                ..Default::default()
            },
            scales: ebm_core::sampler::NoiseScales { sigma_max: 1.0, sigma_min: 0.05, levels: 6 },
            k: 30,
            step_ratio: 0.05,
            alpha: 0.0,
            steps_per_level: 30,
            top_steps: 100,
            ais_steps: None,
        }
    }
}

/// The experiment's configuration (`experiments/exp_images.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// The data.
    pub data: DataSettings,
    /// How the model is trained.
    pub method: ImageMethod,
    /// Seed (weights, split, chains).
    pub seed: u64,
    /// Device.
    pub device: DeviceArg,
    /// CPU threads for libtorch (0: automatic, see `device::auto_threads`: `OMP_NUM_THREADS` when set, else 1).
    pub threads: usize,
    /// Root folder of the runs.
    pub out: PathBuf,
    /// Run folder name (default: a timestamp).
    pub run_name: Option<String>,
    /// The conv energy; `in_channels` and `image_size` are taken from the data.
    pub model: ConvConfig,
    /// Training loop.
    pub train: TrainConfig,
    /// Contrastive settings.
    pub cd: CdSettings,
    /// Noise level σ of denoising score matching.
    pub dsm_sigma: f64,
    /// JEM.
    pub jem: JemSettings,
    /// Diffusion recovery likelihood.
    pub drl: DrlSettings,
    /// Final samples.
    pub sampling: SamplingSettings,
    /// TensorBoard images.
    pub log: LogSettings,
    /// Evaluation.
    pub eval: EvalSettings,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            data: DataSettings::default(),
            method: ImageMethod::Replay,
            seed: 0,
            device: DeviceArg::Auto,
            threads: 0,
            out: PathBuf::from("experiments/runs"),
            run_name: None,
            model: ConvConfig { channels: vec![32, 64, 64], ..Default::default() },
            train: TrainConfig {
                iters: 2000,
                batch_size: 128,
                optim: AdamConfig { lr: 1e-4, betas: [0.0, 0.999], ..Default::default() },
                log_every: 10,
                ..Default::default()
            },
            cd: CdSettings {
                k: 60,
                langevin: LangevinConfig {
                    step_size: 10.0,
                    noise: Some(0.005),
                    grad_clip: Some(0.03),
                    clamp: None,
                    record: false,
                },
                alpha: 0.1,
                buffer_capacity: 8192,
                restart_prob: 0.05,
            },
            dsm_sigma: 0.1,
            jem: JemSettings::default(),
            drl: DrlSettings::default(),
            sampling: SamplingSettings::default(),
            log: LogSettings::default(),
            eval: EvalSettings::default(),
        }
    }
}

crate::common::cli::experiment_config!(ImagesConfig);

impl ImagesConfig {
    /// Shrinks everything for a smoke run of a few seconds (same data, method and code paths).
    pub fn make_quick(&mut self) {
        self.train.iters = self.train.iters.min(40);
        self.train.batch_size = self.train.batch_size.min(32);
        self.cd.k = self.cd.k.min(10);
        self.cd.buffer_capacity = self.cd.buffer_capacity.min(256);
        self.sampling.n = self.sampling.n.min(40);
        self.sampling.steps = self.sampling.steps.min(30);
        self.sampling.nrow = self.sampling.nrow.min(10);
        self.log.image_every = 20;
        self.log.grid_n = self.log.grid_n.min(16);
        self.log.fresh_steps = self.log.fresh_steps.min(10);
        self.eval.classifier.epochs = self.eval.classifier.epochs.min(2);
        self.eval.ais.chains = self.eval.ais.chains.min(16);
        self.eval.ais.steps = self.eval.ais.steps.min(50);
        self.eval.ood_n = self.eval.ood_n.min(100);
        self.drl.k = self.drl.k.min(5);
        self.drl.steps_per_level = self.drl.steps_per_level.min(5);
        self.drl.top_steps = self.drl.top_steps.min(5);
        self.drl.ais_steps = self.drl.ais_steps.map(|s| s.min(50));
    }

    /// Checks names and ranges (unknown names list the valid ones), every method's objective, the conv
    /// network, and the memory the run needs where the image size is known before loading, so that a
    /// mistake is reported before the run folder is created. Errors name the config keys as written in the
    /// file (`train.optim.lr`, `cd.k`, `model.channels`, …).
    pub fn validate(&self) -> Result<()> {
        check_run_settings(self.threads, self.run_name.as_deref())?;
        let dataset = user_keys(self.data.dataset.parse::<ImageDataset>(), KEYS)?;
        if !(self.data.test_fraction > 0.0 && self.data.test_fraction < 1.0) {
            bail!("data.test_fraction must be in (0, 1), got {}", self.data.test_fraction);
        }
        if self.sampling.n == 0 || self.sampling.nrow == 0 || self.log.grid_n == 0 || self.eval.ood_n == 0 {
            bail!("sampling.n, sampling.nrow, log.grid_n and eval.ood_n must be ≥ 1");
        }
        if !(self.dsm_sigma > 0.0) {
            bail!("dsm_sigma must be > 0, got {}", self.dsm_sigma);
        }
        if let Some(r) = self.eval.gaussian_ridge {
            if !(r > 0.0) || !r.is_finite() {
                bail!("eval.gaussian_ridge must be > 0 (or unset), got {r}");
            }
        }
        if self.eval.ece_bins == 0 {
            bail!("eval.ece_bins must be ≥ 1");
        }
        user_keys(self.drl.model.validate(), KEYS)?;
        user_keys(self.recovery().validate(), KEYS)?;
        user_keys(self.train.validate(), KEYS)?;
        user_keys(self.eval.classifier.validate(), KEYS)?;
        self.eval.ais.base.validate()?;
        user_keys(self.ais_config(AisBase::Uniform { low: 0.0, high: 1.0 }).validate(), KEYS)?;
        self.eval.ais.path.validate(self)?;
        // each sampler under its own key (before the objectives, which name any sampler `langevin`)
        user_keys(self.clamped(self.cd.langevin.clone()).validate(), KEYS)?;
        if let Some(l) = &self.jem.langevin {
            user_keys(self.clamped(l.clone()).validate(), &[("langevin", "jem.langevin")])?;
        }
        // in_channels and image_size come from the data; the rest of the network is the user's
        user_keys(ConvConfig { in_channels: 1, image_size: [1, 1], ..self.model.clone() }.validate(), KEYS)?;
        // every method's objective, used or not
        for m in ImageMethod::ALL {
            user_keys(validate_objective(&m.objective(self)), KEYS)?;
        }
        if let Some((event, n)) = self.known_data_shape(&dataset) {
            check_memory(&self.memory_parts(&event, n))?;
        }
        Ok(())
    }

    /// The image shape `[C, H, W]` and (an upper bound on) the number of images, where known before loading:
    /// the shipped data sets, and a folder with `data.folder.image_size` set (its files are counted).
    fn known_data_shape(&self, dataset: &ImageDataset) -> Option<(Vec<i64>, usize)> {
        match dataset {
            ImageDataset::Digits => Some((vec![1, 8, 8], 1797)),
            ImageDataset::Mnist5k => Some((vec![1, 28, 28], 5000)),
            ImageDataset::Folder(dir) => {
                let [h, w] = self.data.folder.image_size?;
                Some((vec![self.data.folder.color.channels(), h as i64, w as i64], count_files(dir).max(1)))
            }
        }
    }

    /// The parts of the run's memory estimate for images of shape `event = [C, H, W]`, `n` of them: the
    /// data, the conv network's parameters (with gradients and Adam's moments) and activations, the replay
    /// buffer. Each names the key that sets its size.
    pub fn memory_parts(&self, event: &[i64], n: usize) -> Vec<MemoryPart> {
        let (c, h, w) = (event[0] as f64, event[1] as f64, event[2] as f64);
        let size_key = match (self.data.dataset.starts_with("folder:"), self.data.folder.image_size) {
            (true, Some(s)) => format!("data.folder.image_size = {s:?}"),
            _ => format!("the data set's image size ({}×{})", h, w),
        };
        let (mut params, mut acts) = (0.0, 0.0);
        let (mut c_in, mut hh, mut ww) = (c, h, w);
        for (i, &ch) in self.model.channels.iter().enumerate() {
            let ch = ch as f64;
            if i > 0 {
                hh = (hh / 2.0).ceil();
                ww = (ww / 2.0).ceil();
            }
            params += ch * c_in * 9.0 + ch;
            acts += ch * hh * ww;
            c_in = ch;
        }
        params += c_in * hh * ww + 1.0;
        let rows = [2 * self.train.batch_size, self.sampling.n, self.log.grid_n, self.eval.ais.chains, self.eval.ood_n]
            .into_iter()
            .map(|r| r as f64)
            .fold(1.0, f64::max);
        let pixels = c * h * w;
        vec![
            MemoryPart::new(
                &size_key,
                format!("{n} images of {c}×{h}×{w} pixels (the data set and its split)"),
                f32_bytes(2.0 * n as f64 * pixels),
            ),
            MemoryPart::new(
                format!(
                    "{size_key} (with model.channels = {:?}, train.batch_size = {})",
                    self.model.channels, self.train.batch_size
                ),
                format!("the conv activations of {rows} images (values, pre-activations, gradients)"),
                f32_bytes(3.0 * rows * acts),
            ),
            MemoryPart::new(
                format!("model.channels = {:?}", self.model.channels),
                format!("{params:.3e} parameters with their gradients and Adam's two moments"),
                f32_bytes(4.0 * params),
            ),
            MemoryPart::new(
                format!("cd.buffer_capacity = {}", self.cd.buffer_capacity),
                "the replay buffer",
                f32_bytes(self.cd.buffer_capacity as f64 * pixels),
            ),
        ]
    }

    /// The same config with a relative `folder:<path>` data set and a relative `data.data_dir` made absolute
    /// (against the working folder), so that the saved `config.toml` (and `--resume`) work from any folder.
    pub fn with_absolute_paths(&self) -> Result<ImagesConfig> {
        let mut cfg = self.clone();
        if let Some(p) = cfg.data.dataset.trim().strip_prefix("folder:") {
            if !p.is_empty() && std::path::Path::new(p).is_relative() {
                cfg.data.dataset = format!("folder:{}", std::path::absolute(p)?.display());
            }
        }
        if let Some(d) = &cfg.data.data_dir {
            if d.is_relative() {
                cfg.data.data_dir = Some(std::path::absolute(d)?);
            }
        }
        Ok(cfg)
    }

    /// The Langevin settings of `method` as written: `jem.langevin` for JEM when set, else `cd.langevin`.
    pub fn method_langevin(&self, method: ImageMethod) -> LangevinConfig {
        match (method, &self.jem.langevin) {
            (ImageMethod::Jem, Some(l)) => l.clone(),
            _ => self.cd.langevin.clone(),
        }
    }

    /// The Langevin sampler of training and sampling of this run's method, clamped to the data range unless
    /// set otherwise.
    pub fn langevin(&self) -> LangevinConfig {
        self.clamped(self.method_langevin(self.method))
    }

    /// `l` clamped to the data range unless it sets its own clamp.
    fn clamped(&self, mut l: LangevinConfig) -> LangevinConfig {
        let (lo, hi) = self.data.scale.range();
        l.clamp = l.clamp.or(Some([lo, hi]));
        l
    }

    /// Uniform noise on the data range: the buffer's restarts and the start of fresh chains.
    pub fn noise_init(&self) -> Init {
        let (low, high) = self.data.scale.range();
        Init::Uniform { low, high }
    }

    /// The AIS base of `eval.ais.base` on the data range, fitted to the training images `x: [N, *event]`
    /// (and their `labels` for `components = "per_class"`).
    pub fn ais_base(&self, x: &tch::Tensor, labels: Option<&[i64]>) -> Result<AisBase> {
        self.eval.ais.base.resolve(self.data.scale.range(), x, labels)
    }

    /// The AIS configuration: `base` (see [`ImagesConfig::ais_base`]), MALA transitions.
    pub fn ais_config(&self, base: AisBase) -> AisConfig {
        let a = &self.eval.ais;
        AisConfig {
            chains: a.chains,
            steps: match self.method {
                ImageMethod::Drl => self.drl.ais_steps.unwrap_or(a.steps),
                _ => a.steps,
            },
            sweeps: a.sweeps,
            schedule: a.schedule,
            base,
            transition: AisTransition::Mala { step_size: a.step_size, target_accept: Some(a.target_accept) },
            resample: a.resample,
            box_moves: a.box_moves,
        }
    }

    /// The recovery sampler of `--method drl`.
    pub fn recovery(&self) -> RecoveryConfig {
        RecoveryConfig {
            scales: self.drl.scales.clone(),
            steps_per_level: self.drl.steps_per_level,
            step_ratio: self.drl.step_ratio,
            top_steps: self.drl.top_steps,
        }
    }

    /// A label for tables.
    pub fn label(&self) -> String {
        match self.method {
            ImageMethod::Replay => format!("replay buffer, {} Langevin steps", self.cd.k),
            ImageMethod::Cdk => format!("CD-{} from data", self.cd.k),
            ImageMethod::Dsm => format!("denoising SM, σ = {}", self.dsm_sigma),
            ImageMethod::Jem => {
                format!(
                    "JEM (conv classifier, replay buffer, {} Langevin steps, weight {})",
                    self.cd.k, self.jem.gen_weight
                )
            }
            ImageMethod::Drl => format!(
                "diffusion recovery likelihood ({} levels σ = {} … {}, {} steps per conditional)",
                self.drl.scales.levels, self.drl.scales.sigma_max, self.drl.scales.sigma_min, self.drl.k
            ),
        }
    }
}

/// How the library's parameter names map to this config's keys (see [`user_keys`]).
pub(super) const KEYS: &[(&str, &str)] = &[
    ("conv", "model"),
    ("optim", "train.optim"),
    ("contrastive.k", "cd.k"),
    ("contrastive.alpha", "cd.alpha"),
    ("langevin", "cd.langevin"),
    ("buffer.capacity", "cd.buffer_capacity"),
    ("buffer.restart_prob", "cd.restart_prob"),
    ("score_matching.sigma", "dsm_sigma"),
    ("recovery.scales", "drl.scales"),
    ("recovery.steps_per_level", "drl.steps_per_level"),
    ("recovery.step_ratio", "drl.step_ratio"),
    ("conditional", "drl.model"),
    ("classifier", "eval.classifier"),
    ("ais.transition", "eval.ais"),
    ("ais.base", "data.scale"),
    ("ais", "eval.ais"),
    ("image_size", "data.folder.image_size"),
    ("dataset", "data.dataset"),
];

/// The files under `dir` (recursively; hidden ones skipped), as the folder loader counts them.
fn count_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
        .sum()
}

/// Resolves the default config (`experiments/exp_images.toml`) relative to the working directory or the
/// repository.
pub fn default_config_path() -> Option<PathBuf> {
    crate::config::find_config("exp_images.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_errors_listing_the_valid_ones() {
        let e = "pcd".parse::<ImageMethod>().unwrap_err();
        assert!(e.contains("pcd") && e.contains("replay, cdk, dsm, jem, drl"), "{e}");
        let cfg =
            ImagesConfig { data: DataSettings { dataset: "cifar".into(), ..Default::default() }, ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("folder:<path>"));
        let mut cfg = ImagesConfig::default();
        cfg.make_quick();
        cfg.validate().unwrap();
        assert_eq!(cfg.langevin().clamp, Some([-1.0, 1.0]));
    }

    #[test]
    fn the_network_every_objective_and_the_memory_are_checked_before_the_run() {
        let cfg = ImagesConfig { model: ConvConfig { channels: vec![], ..Default::default() }, ..Default::default() };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("invalid value for model.channels"), "{e}");
        let mut cfg = ImagesConfig { method: ImageMethod::Dsm, ..Default::default() };
        cfg.cd.k = 0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("invalid value for cd.k"), "{e}");
        let mut cfg = ImagesConfig::default();
        cfg.train.optim.lr = 0.0;
        assert!(cfg.validate().unwrap_err().to_string().contains("invalid value for train.optim.lr"));
        // digits need little; a 100000² image needs far more than any machine
        let small: f64 = ImagesConfig::default().memory_parts(&[1, 8, 8], 1797).iter().map(|p| p.bytes).sum();
        assert!(small < 1e9, "{small}");
        let mut cfg = ImagesConfig::default();
        cfg.data.dataset = "folder:/nonexistent".into();
        cfg.data.folder.image_size = Some([100_000, 100_000]);
        let e = crate::common::config::check_memory_within(&cfg.memory_parts(&[1, 100_000, 100_000], 1), 1e12)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("data.folder.image_size = [100000, 100000]") && e.contains(" GB"), "{e}");
        let rel = ImagesConfig {
            data: DataSettings { dataset: "folder:imgs".into(), ..Default::default() },
            ..Default::default()
        };
        let abs = rel.with_absolute_paths().unwrap();
        assert_eq!(abs.data.dataset, format!("folder:{}", std::env::current_dir().unwrap().join("imgs").display()));
    }

    #[test]
    fn jem_drl_and_baseline_settings_are_checked_and_errors_name_their_keys() {
        assert_eq!("jem".parse::<ImageMethod>().unwrap(), ImageMethod::Jem);
        assert_eq!("drl".parse::<ImageMethod>().unwrap(), ImageMethod::Drl);
        let err = |f: &dyn Fn(&mut ImagesConfig)| {
            let mut cfg = ImagesConfig::default();
            f(&mut cfg);
            cfg.validate().unwrap_err().to_string()
        };
        let e = err(&|c| c.drl.k = 0);
        assert!(e.contains("drl.k"), "{e}");
        let e = err(&|c| c.drl.scales.levels = 1);
        assert!(e.starts_with("invalid value for drl.scales"), "{e}");
        let e = err(&|c| c.drl.steps_per_level = 0);
        assert!(e.contains("drl.steps_per_level"), "{e}");
        let e = err(&|c| c.drl.model.widths = vec![]);
        assert!(e.contains("drl.model.widths"), "{e}");
        let e = err(&|c| c.jem.gen_weight = -1.0);
        assert!(e.contains("jem.gen_weight"), "{e}");
        let e = err(&|c| c.eval.gaussian_ridge = Some(0.0));
        assert!(e.contains("eval.gaussian_ridge"), "{e}");
        let e = err(&|c| c.eval.ece_bins = 0);
        assert!(e.contains("eval.ece_bins"), "{e}");
        // the objectives carry the settings
        let cfg = ImagesConfig::default();
        match ImageMethod::Drl.objective(&cfg) {
            ObjectiveConfig::Drl(d) => assert_eq!((d.k, d.scales.sigma_min), (cfg.drl.k, cfg.drl.scales.sigma_min)),
            other => panic!("{other:?}"),
        }
        match ImageMethod::Jem.objective(&cfg) {
            ObjectiveConfig::Jem(j) => assert_eq!((j.contrastive.k, j.gen_weight), (cfg.cd.k, cfg.jem.gen_weight)),
            other => panic!("{other:?}"),
        }
        // jem.langevin replaces cd.langevin for JEM only
        let mut cfg = ImagesConfig::default();
        cfg.jem.langevin = Some(LangevinConfig { step_size: 1.0, noise: Some(0.01), ..cfg.cd.langevin.clone() });
        match ImageMethod::Jem.objective(&cfg) {
            ObjectiveConfig::Jem(j) => match j.contrastive.sampler {
                ebm_core::sampler::SamplerConfig::Langevin(l) => assert_eq!(l.step_size, 1.0),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert_eq!(cfg.langevin().step_size, 10.0);
        cfg.method = ImageMethod::Jem;
        assert_eq!(cfg.langevin().step_size, 1.0);
        assert_eq!(cfg.langevin().clamp, Some([-1.0, 1.0]));
        cfg.jem.langevin.as_mut().unwrap().step_size = 0.0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("jem.langevin"), "{e}");
    }
}
