//! `exp_images`: an image EBM (conv energy, IGEBM/UvA recipe) trained on 8×8 digits, MNIST-5k or a folder of
//! images, with sample and buffer grids in TensorBoard, a grid of fresh long-run samples from noise at the
//! end (`samples.png`), and evaluations that need no `Z` or estimate it:
//! - a small classifier trained on the training split scores the samples (mean max-probability: quality;
//!   entropy of the class histogram: diversity);
//! - annealed importance sampling from the uniform distribution on the data box gives `log Z` and the test
//!   log-likelihood;
//! - `f` separates test images from noise and from pixel-shuffled test images (AUROC).
//!
//! Methods: `replay` (replay buffer with restarts, the recipe that works), and as comparisons `cdk` (CD-k from
//! the data batch) and `dsm` (denoising score matching).

use crate::common::device::DeviceArg;
use crate::common::{config, CdSettings, Outcome, RunContext, RunOptions, StartOptions};
use anyhow::{bail, Context, Result};
use ebm_core::ais::{ais, mean_log_likelihood, AisBase, AisConfig, AisTransition, Schedule};
use ebm_core::classifier::{sample_quality, ClassifierConfig, DigitClassifier, SampleQuality};
use ebm_core::data::images::{default_data_dir, FolderOptions, ImageDataset, PixelScale};
use ebm_core::energy::{ConvConfig, ConvEnergy, EnergyModel};
use ebm_core::eval::{auroc, f_of};
use ebm_core::objective::{Negatives, Objective, ObjectiveConfig, SmMethod};
use ebm_core::optim::AdamConfig;
use ebm_core::sampler::{BufferConfig, Init, Langevin, LangevinConfig, Sampler};
use ebm_core::train::{TensorData, TrainConfig, Trainer};
use ebm_log::plot;
use ebm_log::{MetricsSink, ProgressSink};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// How the image EBM is trained; its name in configs and on the command line is `replay`, `cdk` or `dsm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageMethod {
    /// Contrastive divergence with the IGEBM replay buffer.
    Replay,
    /// CD-k from the data.
    Cdk,
    /// Denoising score matching.
    Dsm,
}

impl ImageMethod {
    /// Every method.
    pub const ALL: [ImageMethod; 3] = [ImageMethod::Replay, ImageMethod::Cdk, ImageMethod::Dsm];

    /// The name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ImageMethod::Replay => "replay",
            ImageMethod::Cdk => "cdk",
            ImageMethod::Dsm => "dsm",
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

/// AIS settings for `log Z` (base: uniform on the data range).
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
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            classifier_enabled: true,
            classifier: ClassifierConfig::default(),
            ais: AisSettings::default(),
            ood_n: 1000,
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
    /// CPU threads for libtorch (0: libtorch's default).
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
    }

    /// Checks names and ranges (unknown names list the valid ones).
    pub fn validate(&self) -> Result<()> {
        self.data.dataset.parse::<ImageDataset>()?;
        if !(self.data.test_fraction > 0.0 && self.data.test_fraction < 1.0) {
            bail!("data.test_fraction must be in (0, 1), got {}", self.data.test_fraction);
        }
        if self.sampling.n == 0 || self.sampling.nrow == 0 || self.log.grid_n == 0 || self.eval.ood_n == 0 {
            bail!("sampling.n, sampling.nrow, log.grid_n and eval.ood_n must be ≥ 1");
        }
        if !(self.dsm_sigma > 0.0) {
            bail!("dsm_sigma must be > 0, got {}", self.dsm_sigma);
        }
        self.train.validate()?;
        self.eval.classifier.validate()?;
        self.ais_config().validate()?;
        self.langevin().validate()?;
        Ok(())
    }

    /// The Langevin sampler of training and sampling, clamped to the data range unless set otherwise.
    pub fn langevin(&self) -> LangevinConfig {
        let (lo, hi) = self.data.scale.range();
        let mut l = self.cd.langevin.clone();
        l.clamp = l.clamp.or(Some([lo, hi]));
        l
    }

    /// Uniform noise on the data range: the buffer's restarts and the start of fresh chains.
    pub fn noise_init(&self) -> Init {
        let (low, high) = self.data.scale.range();
        Init::Uniform { low, high }
    }

    /// The AIS configuration: uniform base on the data range, MALA transitions.
    pub fn ais_config(&self) -> AisConfig {
        let (low, high) = self.data.scale.range();
        let a = &self.eval.ais;
        AisConfig {
            chains: a.chains,
            steps: a.steps,
            sweeps: a.sweeps,
            schedule: a.schedule,
            base: AisBase::Uniform { low, high },
            transition: AisTransition::Mala { step_size: a.step_size, target_accept: Some(a.target_accept) },
        }
    }

    /// A label for tables.
    pub fn label(&self) -> String {
        match self.method {
            ImageMethod::Replay => format!("replay buffer, {} Langevin steps", self.cd.k),
            ImageMethod::Cdk => format!("CD-{} from data", self.cd.k),
            ImageMethod::Dsm => format!("denoising SM, σ = {}", self.dsm_sigma),
        }
    }
}

/// AIS results for the report.
#[derive(Debug, Clone, Serialize)]
pub struct AisReport {
    /// `log Z` of the model on the data box (nats).
    pub log_z: f64,
    /// Its delta-method standard error.
    pub log_z_std_err: f64,
    /// Effective sample size of the weights.
    pub ess: f64,
    /// MALA acceptance.
    pub acceptance: f64,
    /// Mean test log-likelihood, nats per image.
    pub test_ll: f64,
    /// The same in bits per dimension (negative log-likelihood).
    pub test_bits_per_dim: f64,
    /// The log-likelihood of the uniform density on the data box, for reference: `-D log(high - low)`.
    pub uniform_ll: f64,
    /// Chains and intermediate distributions.
    pub chains: usize,
    /// Intermediate distributions.
    pub steps: usize,
    /// Seconds AIS took.
    pub seconds: f64,
}

/// Everything the run measured (`metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImagesReport {
    /// Data set.
    pub dataset: String,
    /// Method.
    pub method: String,
    /// `[C, H, W]`.
    pub image_shape: Vec<i64>,
    /// Training images.
    pub n_train: usize,
    /// Test images.
    pub n_test: usize,
    /// Files of a folder that were skipped.
    pub skipped_files: Vec<String>,
    /// Images of a folder that were resized.
    pub resized: usize,
    /// Updates done.
    pub iters: usize,
    /// Training seconds.
    pub train_seconds: f64,
    /// Milliseconds per update (of the updates this run did).
    pub ms_per_iter: f64,
    /// Temperature `σ²/(2λ)` the training sampler targets.
    pub langevin_temperature: f64,
    /// Test accuracy of the classifier (labelled sets).
    pub classifier_test_accuracy: Option<f64>,
    /// The classifier's score of the final samples.
    pub samples: Option<SampleQuality>,
    /// The classifier's score of as many real test images (the reference for `samples`).
    pub test_images: Option<SampleQuality>,
    /// AIS.
    pub ais: Option<AisReport>,
    /// AUROC of f: test images vs uniform noise.
    pub ood_auroc_noise: f64,
    /// AUROC of f: test images vs the same images with their pixels shuffled.
    pub ood_auroc_shuffled: f64,
    /// Whole run, seconds.
    pub total_seconds: f64,
    /// The grid of final samples.
    pub samples_png: PathBuf,
}

/// Each image with its pixels (and channels) in a random order of its own.
fn shuffle_pixels(x: &Tensor) -> Tensor {
    let b = x.size()[0];
    let flat = x.view([b, -1]);
    let keys = flat.rand_like();
    let idx = keys.argsort(1, false);
    flat.gather(1, &idx, false).view(x.size().as_slice())
}

/// Upscales small images (nearest neighbour) so a grid stays legible: at least 32 pixels per image side.
fn legible(x: &Tensor) -> Tensor {
    let h = x.size()[2];
    let s = (32 + h - 1) / h;
    if s <= 1 {
        return x.shallow_clone();
    }
    let w = x.size()[3];
    x.to_kind(Kind::Float).upsample_nearest2d([h * s, w * s], None, None)
}

/// Runs the experiment; returns the run folder and the report.
pub fn run(cfg: &ImagesConfig, opts: &RunOptions) -> Result<Outcome<(PathBuf, ImagesReport)>> {
    cfg.validate()?;
    let t_start = Instant::now();
    let dataset: ImageDataset = cfg.data.dataset.parse()?;
    let data_dir = cfg.data.data_dir.clone().unwrap_or_else(default_data_dir);
    let loaded = dataset
        .load(&data_dir, &cfg.data.folder, cfg.data.scale)
        .with_context(|| format!("loading data set '{dataset}'"))?;
    for s in &loaded.skipped {
        eprintln!("warning: skipped {}: not a readable image ({})", s.path.display(), s.reason);
    }
    if loaded.resized > 0 {
        eprintln!("ebm-rs: resized {} image(s) to the data set's size", loaded.resized);
    }
    let (train, test) = loaded.set.split(cfg.data.test_fraction, cfg.seed)?;
    let event = train.event_shape();
    let range = cfg.data.scale.range();
    eprintln!(
        "ebm-rs: {} — {} train / {} test images of shape {:?}, method {}",
        dataset,
        train.len(),
        test.len(),
        event,
        cfg.label()
    );
    let start = StartOptions {
        experiment: "exp_images",
        device: cfg.device,
        seed: cfg.seed,
        threads: cfg.threads,
        out: &cfg.out,
        run_name: cfg.run_name.as_deref(),
        resume: opts.resume.as_deref(),
        stop: opts.stop.clone(),
    };
    let ctx = RunContext::start(cfg, &start)?;
    let r = run_in(cfg, &ctx, Loaded { dataset, loaded, train, test, event, range, t_start });
    Outcome::from_result(r, ctx.run_dir.path())
}

/// The data of a run, loaded before the run folder exists.
struct Loaded {
    dataset: ImageDataset,
    loaded: ebm_core::data::images::FolderLoad,
    train: ebm_core::data::images::ImageSet,
    test: ebm_core::data::images::ImageSet,
    event: Vec<i64>,
    range: (f64, f64),
    t_start: Instant,
}

fn run_in(cfg: &ImagesConfig, ctx: &RunContext, data: Loaded) -> Result<(PathBuf, ImagesReport)> {
    let Loaded { dataset, loaded, train, test, event, range, t_start } = data;
    let (device, run_dir) = (ctx.device, &ctx.run_dir);

    // The classifier that scores samples (labelled sets only).
    let classifier = match (&train.labels, cfg.eval.classifier_enabled) {
        (Some(labels), true) if train.class_names.len() >= 2 => {
            let t0 = Instant::now();
            tch::manual_seed(cfg.seed.wrapping_add(11) as i64);
            let clf =
                DigitClassifier::train(&train.images, labels, train.class_names.len(), &cfg.eval.classifier, device)?;
            let acc = clf.accuracy(&test.images, test.labels.as_deref().unwrap_or_default())?;
            eprintln!("ebm-rs: classifier test accuracy {:.2}% ({:.1}s)", 100.0 * acc, t0.elapsed().as_secs_f64());
            Some((clf, acc))
        }
        _ => None,
    };

    // Model and objective.
    let model_cfg = ConvConfig { in_channels: event[0], image_size: [event[1], event[2]], ..cfg.model.clone() };
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let model = ConvEnergy::new(&vs.root(), &model_cfg)?;
    let objective = cfg.method.objective(cfg).build(&model, device)?;
    // the grids and the classifier's score of fresh samples go out at every `log.image_every` updates
    let train_cfg = TrainConfig { eval_every: cfg.log.image_every, ..cfg.train.clone() };
    let part = ctx.sub_run("")?;
    let (mut trainer, resumed_at) = part.attach(Trainer::new(train_cfg, &vs, &model, objective, cfg.seed)?)?;
    let start_step = resumed_at.unwrap_or(0);
    let progress = ProgressSink::new(Some(cfg.train.iters as u64)).with_print_every(cfg.log.image_every as u64);
    progress.bar().set_position(start_step as u64);
    let mut sink = part.sinks(progress, resumed_at)?;
    if resumed_at.is_none() {
        sink.text("config", 0, &format!("```toml\n{}\n```", config::to_toml(cfg)?))?;
    }
    let nrow = cfg.sampling.nrow;
    let grid = |x: &Tensor| {
        plot::image_grid_image(&legible(&x.to_device(Device::Cpu)), range, nrow)
            .map_err(ebm_core::train::SinkError::from)
    };
    sink.image(
        "data/test_images",
        0,
        &grid(&test.images.narrow(0, 0, (cfg.log.grid_n as i64).min(test.len() as i64)))?,
    )?;

    let sampler = Langevin::new(cfg.langevin())?;
    let noise = cfg.noise_init();
    let grid_n = cfg.log.grid_n as i64;
    let test_f_set = test.images.narrow(0, 0, (cfg.eval.ood_n as i64).min(test.len() as i64)).to_device(device);
    let mut eval = |step: usize, m: &dyn EnergyModel, obj: &dyn Objective, sink: &mut dyn MetricsSink| {
        if let Some(chains) = obj.chains(0) {
            let b = chains.narrow(0, 0, grid_n.min(chains.size()[0]));
            sink.image("samples/buffer", step as u64, &grid(&b)?)?;
        }
        let x0 = noise.sample(grid_n, &event, device);
        let fresh = sampler.run(m, &x0, cfg.log.fresh_steps)?.x;
        sink.image("samples/fresh_from_noise", step as u64, &grid(&fresh)?)?;
        if let Some((clf, _)) = &classifier {
            let q = sample_quality(&clf.probs(&fresh)?)?;
            sink.scalar("eval/fresh_mean_max_prob", step as u64, q.mean_max_prob)?;
            sink.scalar("eval/fresh_class_entropy", step as u64, q.class_entropy)?;
        }
        let f_test = tch::no_grad(|| m.f(&test_f_set));
        let f_noise = tch::no_grad(|| m.f(&noise.sample(test_f_set.size()[0], &event, device)));
        let a = auroc(
            &Vec::<f64>::try_from(f_test.to_kind(Kind::Double))?,
            &Vec::<f64>::try_from(f_noise.to_kind(Kind::Double))?,
        );
        sink.scalar("eval/ood_auroc_noise", step as u64, a)?;
        Ok(())
    };
    let t0 = Instant::now();
    let outcome = trainer.run(&mut TensorData::new(train.images.to_device(device))?, &mut sink, Some(&mut eval))?;
    sink.flush()?;
    part.finished(&outcome)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    eprintln!("ebm-rs: trained {} updates in {:.1}s", outcome.steps, train_seconds);

    // Fresh long-run samples from noise.
    tch::manual_seed(cfg.seed.wrapping_add(7) as i64);
    let x0 = noise.sample(cfg.sampling.n as i64, &event, device);
    let samples = sampler.run(&model, &x0, cfg.sampling.steps)?.x;
    let samples_png = run_dir.path().join("samples.png");
    let img = plot::image_grid(&samples_png, &legible(&samples), range, cfg.sampling.nrow)?;
    sink.image("final/samples_from_noise", outcome.steps as u64, &img)?;
    if let Some(chains) = trainer.objective().chains(0) {
        let b = chains.narrow(0, 0, (cfg.sampling.n as i64).min(chains.size()[0]));
        plot::image_grid(&run_dir.figure_path("buffer.png"), &legible(&b), range, cfg.sampling.nrow)?;
    }
    let n_show = (cfg.sampling.n as i64).min(test.len() as i64);
    plot::image_grid(
        &run_dir.figure_path("test_images.png"),
        &legible(&test.images.narrow(0, 0, n_show)),
        range,
        cfg.sampling.nrow,
    )?;

    // Evaluation.
    let (classifier_test_accuracy, sample_q, test_q) = match &classifier {
        Some((clf, acc)) => {
            let q = sample_quality(&clf.probs(&samples)?)?;
            let tq = sample_quality(&clf.probs(&test.images.narrow(0, 0, n_show))?)?;
            (Some(*acc), Some(q), Some(tq))
        }
        None => (None, None, None),
    };
    let ais_report = if cfg.eval.ais.enabled {
        let t0 = Instant::now();
        tch::manual_seed(cfg.seed.wrapping_add(13) as i64);
        let r = ais(&model, &cfg.ais_config(), device)?;
        let test_ll = mean_log_likelihood(&model, &test.images.to_device(device), r.log_z)?;
        let d: i64 = event.iter().product();
        let (lo, hi) = range;
        Some(AisReport {
            log_z: r.log_z,
            log_z_std_err: r.log_z_std_err,
            ess: r.ess,
            acceptance: r.acceptance.unwrap_or(f64::NAN),
            test_ll,
            test_bits_per_dim: -test_ll / (d as f64 * std::f64::consts::LN_2),
            uniform_ll: -(d as f64) * (hi - lo).ln(),
            chains: cfg.eval.ais.chains,
            steps: cfg.eval.ais.steps,
            seconds: t0.elapsed().as_secs_f64(),
        })
    } else {
        None
    };
    tch::manual_seed(cfg.seed.wrapping_add(17) as i64);
    let n_ood = (cfg.eval.ood_n as i64).min(test.len() as i64);
    let pos = test.images.narrow(0, 0, n_ood);
    let f_pos = f_of(&model, &pos, device, "test images")?;
    let f_noise = f_of(&model, &noise.sample(n_ood, &event, Device::Cpu), device, "uniform noise")?;
    let f_shuffled = f_of(&model, &shuffle_pixels(&pos), device, "shuffled test images")?;
    let report = ImagesReport {
        dataset: dataset.to_string(),
        method: cfg.method.name().to_string(),
        image_shape: event.clone(),
        n_train: train.len(),
        n_test: test.len(),
        skipped_files: loaded.skipped.iter().map(|s| s.path.display().to_string()).collect(),
        resized: loaded.resized,
        iters: outcome.steps,
        train_seconds,
        ms_per_iter: 1e3 * train_seconds / outcome.steps.saturating_sub(start_step).max(1) as f64,
        langevin_temperature: cfg.langevin().temperature(),
        classifier_test_accuracy,
        samples: sample_q,
        test_images: test_q,
        ais: ais_report,
        ood_auroc_noise: auroc(&f_pos, &f_noise),
        ood_auroc_shuffled: auroc(&f_pos, &f_shuffled),
        total_seconds: t_start.elapsed().as_secs_f64(),
        samples_png: samples_png.clone(),
    };
    let mut finals = vec![
        ("final/ood_auroc_noise", report.ood_auroc_noise),
        ("final/ood_auroc_shuffled", report.ood_auroc_shuffled),
        ("final/ms_per_iter", report.ms_per_iter),
    ];
    if let Some(q) = &report.samples {
        finals.push(("final/samples_mean_max_prob", q.mean_max_prob));
        finals.push(("final/samples_class_entropy", q.class_entropy));
    }
    if let Some(a) = &report.ais {
        finals.push(("final/ais_log_z", a.log_z));
        finals.push(("final/test_ll", a.test_ll));
    }
    sink.scalars(outcome.steps as u64, &finals)?;
    let md = markdown(cfg, &report);
    sink.text("results", outcome.steps as u64, &md)?;
    sink.flush()?;
    run_dir.write_atomic("metrics.json", serde_json::to_string_pretty(&report)?.as_bytes())?;
    run_dir.write_atomic("results.md", md.as_bytes())?;
    println!("{md}");
    Ok((run_dir.path().to_path_buf(), report))
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// The run's results as markdown.
pub fn markdown(cfg: &ImagesConfig, r: &ImagesReport) -> String {
    let mut s = format!(
        "# exp_images: {} on {}\n\n{} train / {} test images of shape {:?}; {} updates of batch {} in {:.1}s \
         ({:.0} ms/update); Langevin step {} noise {} (temperature {:.2e}), grad clamp {}.\n\
         Samples: {} chains, {} Langevin steps from uniform noise → `samples.png`.\n\n| metric | value |\n|---|---:|\n",
        cfg.label(),
        r.dataset,
        r.n_train,
        r.n_test,
        r.image_shape,
        r.iters,
        cfg.train.batch_size,
        r.train_seconds,
        r.ms_per_iter,
        cfg.cd.langevin.step_size,
        cfg.langevin().sigma(),
        r.langevin_temperature,
        cfg.cd.langevin.grad_clip.map(|c| format!("±{c}")).unwrap_or_else(|| "off".into()),
        cfg.sampling.n,
        cfg.sampling.steps,
    );
    let mut row = |k: &str, v: String| s.push_str(&format!("| {k} | {v} |\n"));
    row("classifier test accuracy", opt(r.classifier_test_accuracy, |v| format!("{:.1}%", 100.0 * v)));
    if let (Some(q), Some(t)) = (&r.samples, &r.test_images) {
        row("samples: mean max-probability (test images)", format!("{:.3} ({:.3})", q.mean_max_prob, t.mean_max_prob));
        row(
            "samples: class entropy, nats (test images; max)",
            format!("{:.3} ({:.3}; {:.3})", q.class_entropy, t.class_entropy, q.max_entropy),
        );
        let shares: Vec<String> = q.class_shares.iter().map(|v| format!("{:.0}", 100.0 * v)).collect();
        row("samples: class shares, %", shares.join(" / "));
    }
    if let Some(a) = &r.ais {
        row(
            "AIS log Z (± se)",
            format!(
                "{:.3} ± {:.3} ({} chains, {} steps, ESS {:.0}{})",
                a.log_z,
                a.log_z_std_err,
                a.chains,
                a.steps,
                a.ess,
                // a few chains carry all the weight: the estimate (a lower bound in expectation) is unreliable
                if a.ess < 0.1 * a.chains as f64 { "; unreliable: raise eval.ais.steps" } else { "" }
            ),
        );
        row("test log-likelihood, nats/image (uniform on the box)", format!("{:.2} ({:.2})", a.test_ll, a.uniform_ll));
        row("test NLL, bits/dim", format!("{:.3}", a.test_bits_per_dim));
    }
    row("OOD AUROC of f: test vs uniform noise", format!("{:.3}", r.ood_auroc_noise));
    row("OOD AUROC of f: test vs shuffled pixels", format!("{:.3}", r.ood_auroc_shuffled));
    row("total run time", format!("{:.1}s", r.total_seconds));
    s
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
    fn shuffled_pixels_keep_each_image_values() {
        tch::manual_seed(0);
        let x = Tensor::arange(2 * 9, (Kind::Float, Device::Cpu)).view([2, 1, 3, 3]);
        let s = shuffle_pixels(&x);
        assert_eq!(s.size(), x.size());
        for i in 0..2 {
            let sorted = s.get(i).flatten(0, -1).sort(0, false).0;
            assert!(bool::try_from(sorted.eq_tensor(&x.get(i).flatten(0, -1)).all()).unwrap());
        }
        assert!(!bool::try_from(s.eq_tensor(&x).all()).unwrap());
    }

    #[test]
    fn bad_names_are_errors_listing_the_valid_ones() {
        let e = "pcd".parse::<ImageMethod>().unwrap_err();
        assert!(e.contains("pcd") && e.contains("replay, cdk, dsm"), "{e}");
        let cfg =
            ImagesConfig { data: DataSettings { dataset: "cifar".into(), ..Default::default() }, ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("folder:<path>"));
        let mut cfg = ImagesConfig::default();
        cfg.make_quick();
        cfg.validate().unwrap();
        assert_eq!(cfg.langevin().clamp, Some([-1.0, 1.0]));
    }
}
