//! Settings of `exp_cd_vs_sm`: [`CdVsSmConfig`] (the [`Method`]s compared are in `method.rs`).

use crate::common::cli::check_run_settings;
use crate::common::config::{check_memory, f32_bytes, user_keys, validate_objective, MemoryPart};
use crate::common::device::DeviceArg;
use crate::common::CdSettings;
use anyhow::{bail, Context, Result};
use ebm_core::autograd::{Probe, ScorePath};
use ebm_core::data::{Source2d, OUTLIER_MADS};
use ebm_core::energy::MlpConfig;
use ebm_core::objective::{DrlConfig, EnergyDiscrepancyConfig, NceConfig};
use ebm_core::sampler::{HmcConfig, InnerMove, MalaConfig, NoiseScales, SamplerConfig, TemperingConfig};
use ebm_core::train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use super::method::Method;

/// Score-matching settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmSettings {
    /// Probes for Hutchinson and sliced SM.
    pub probes: usize,
    /// Probe distribution.
    pub probe: Probe,
    /// Noise level of denoising SM.
    pub dsm_sigma: f64,
}

impl Default for SmSettings {
    fn default() -> Self {
        SmSettings { probes: 1, probe: Probe::Rademacher, dsm_sigma: 0.05 }
    }
}

/// The sampler that continues the Langevin chains and gives the sample-based columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSampler {
    /// MALA with step `sampling.mala_step`.
    #[default]
    Mala,
    /// Hamiltonian Monte Carlo with `sampling.hmc`.
    Hmc,
    /// Parallel tempering with `sampling.pt` (its β = 1 replica gives the samples).
    Pt,
}

impl FinalSampler {
    /// The name in tables ("MALA", "HMC", "PT").
    pub fn label(self) -> &'static str {
        match self {
            FinalSampler::Mala => "MALA",
            FinalSampler::Hmc => "HMC",
            FinalSampler::Pt => "PT",
        }
    }
}

/// The network DRL trains (the other methods train `model` as it is).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrlNet {
    /// One MLP of `model`'s shape per level of `drl.scales`, each level the level above plus its own residual
    /// ([`ebm_core::energy::LadderMlp`]): the small levels inherit the mode heights and gaps that only the
    /// larger levels identify.
    #[default]
    Ladder,
    /// `model`'s MLP with σ as one more input ([`ebm_core::energy::conditional::SigmaInput::Raw`]): every level
    /// tied to every other (KL 1.43 on 8 Gaussians, the smallest level a ring).
    SigmaInput,
}

/// How every trained model is sampled for the sample metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingSettings {
    /// Chains (samples), started uniform on the data box plus margin.
    pub n: usize,
    /// Unadjusted Langevin steps from noise.
    pub langevin_steps: usize,
    /// Their step size ε (`x + ε∇f + √(2ε) z`).
    pub langevin_step: f64,
    /// Steps of the final sampler continuing the same chains (MALA or HMC; PT takes `pt_steps`).
    pub mala_steps: usize,
    /// MALA step size.
    pub mala_step: f64,
    /// The final sampler: `mala`, `hmc` or `pt`.
    pub sampler: FinalSampler,
    /// HMC settings (with `sampler = "hmc"`).
    pub hmc: HmcConfig,
    /// Parallel-tempering steps (with `sampler = "pt"`). The chains arrive from uniform noise split about evenly
    /// between far-apart modes, and only swaps move mass between them: on the 0.8/0.2 pair the replay model's
    /// β = 1 weights were 0.84/0.16 after 300 steps and settled near its whole-plane 0.88/0.12 only after
    /// about 1 000.
    pub pt_steps: usize,
    /// Parallel-tempering settings (with `sampler = "pt"`).
    pub pt: TemperingConfig,
    /// How every sampler of the run (the contrastive negatives and these samples) takes `∇ₓf`: `"fast"` (the
    /// model's closed form, the default) or `"autograd"` (the same values up to float rounding; for checking
    /// and timing). Score matching always uses autograd.
    pub score: ScorePath,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings {
            n: 2000,
            langevin_steps: 500,
            langevin_step: 1e-3,
            mala_steps: 300,
            mala_step: 2e-3,
            score: ScorePath::Fast,
            sampler: FinalSampler::Mala,
            hmc: HmcConfig { step_size: 0.03, leapfrog_steps: 10, adapt: None, record: false },
            pt_steps: 1500,
            // about geometric, neighbours close enough that β = 1 swaps with β = 0.6 about half the time (1 and
            // 0.3 swapped 8–14% of the time); β ≥ 0.05, since colder than that the heavy tails of a model such as
            // the replay buffer's (f falling only linearly far out) send the hot replicas 100+ units away
            pt: TemperingConfig {
                betas: vec![1.0, 0.6, 0.35, 0.2, 0.1, 0.05],
                inner: InnerMove::Mala(MalaConfig { step_size: 0.01, record: false }),
                ..TemperingConfig::default()
            },
        }
    }
}

impl SamplingSettings {
    /// Steps of the final sampler: `pt_steps` for parallel tempering, `mala_steps` for MALA and HMC.
    pub fn final_steps(&self) -> usize {
        match self.sampler {
            FinalSampler::Mala | FinalSampler::Hmc => self.mala_steps,
            FinalSampler::Pt => self.pt_steps,
        }
    }

    /// The final sampler's configuration.
    pub fn final_sampler(&self) -> SamplerConfig {
        match self.sampler {
            FinalSampler::Mala => SamplerConfig::Mala(MalaConfig { step_size: self.mala_step, record: false }),
            FinalSampler::Hmc => SamplerConfig::Hmc(self.hmc.clone()),
            FinalSampler::Pt => SamplerConfig::Tempering(self.pt.clone()),
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSettings {
    /// Test NLL and KL are logged every this many updates (0: only at the end).
    pub every: usize,
    /// Grid cells per axis for log Z during training.
    pub grid_n_train: usize,
    /// Grid cells per axis for the final log Z (≥ 400 per the workload definition).
    pub grid_n: usize,
    /// Heat map and sample images go to TensorBoard every this many updates (0: only at the end).
    pub image_every: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings { every: 250, grid_n_train: 200, grid_n: 400, image_every: 500 }
    }
}

/// What to do when a CSV data set holds values far from the rest of their column (more than
/// [`OUTLIER_MADS`] median absolute deviations from the column's median; see
/// [`ebm_core::data::Points2d::outliers`]): `warn` prints each (file, line, value) and trains on them,
/// `error` stops before anything is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOutliers {
    /// Print a warning naming the file, line and value, and train on the data as it is.
    #[default]
    Warn,
    /// Refuse the data set with an error naming the file, line and value.
    Error,
}

/// The data sets of a run, read and checked ([`CdVsSmConfig::load_datasets`]).
#[derive(Debug)]
pub struct Datasets {
    /// The sources, in the order of `datasets`.
    pub sources: Vec<Source2d>,
    /// Their names in tables and figures: a CSV file's name when no other data set has the same file name,
    /// else its path; a toy's name.
    pub labels: Vec<String>,
    /// Their folders inside the run folder (distinct).
    pub folders: Vec<String>,
    /// Warnings to print (outliers with `data_outliers = "warn"`).
    pub warnings: Vec<String>,
}

/// The name of a data set's folder inside the run folder: its name with every character other than ASCII
/// letters, digits, `_` and `-` replaced by `_`.
pub fn folder_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// A method's own training settings ([`CdVsSmConfig::method_training`]); unset fields take `train`'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodTraining {
    /// Decay of the exponential moving average of the weights (`train.ema`); the averaged weights are the model
    /// evaluated after training.
    pub ema: Option<f64>,
    /// Adam's learning rate (`train.optim.lr`).
    pub lr: Option<f64>,
}

/// The experiment's configuration (`experiments/exp_cd_vs_sm.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdVsSmConfig {
    /// Datasets (toy names or CSV files of x,y points; a relative path is stored absolute in the run's
    /// `config.toml`).
    pub datasets: Vec<String>,
    /// CSV data sets with values far from the rest of their column: `warn` (default) or `error`.
    pub data_outliers: OnOutliers,
    /// Methods.
    pub methods: Vec<Method>,
    /// Seed: every run starts from the same initial weights for a given seed.
    pub seed: u64,
    /// Device.
    pub device: DeviceArg,
    /// CPU threads for libtorch (0: automatic, see `device::auto_threads`: `OMP_NUM_THREADS` when set, else 1).
    pub threads: usize,
    /// Root folder of the runs.
    pub out: PathBuf,
    /// Run folder name (default: a timestamp).
    pub run_name: Option<String>,
    /// Training points drawn from each dataset.
    pub n_train: usize,
    /// Held-out test points.
    pub n_test: usize,
    /// The network, the same for every method.
    pub model: MlpConfig,
    /// Training loop (iterations, batch, Adam), the same for every method but for `method_training`.
    pub train: TrainConfig,
    /// A method's own weight averaging and learning rate over `train` (the number of updates stays shared), e.g.
    /// `method_training.drl = { ema = 0.995 }`.
    pub method_training: BTreeMap<Method, MethodTraining>,
    /// Contrastive settings.
    pub cd: CdSettings,
    /// Score-matching settings.
    pub sm: SmSettings,
    /// Energy-discrepancy settings (`t`, `m`, `w`).
    pub ed: EnergyDiscrepancyConfig,
    /// NCE settings (the noise is a Gaussian fitted to the training set).
    pub nce: NceConfig,
    /// Diffusion-recovery-likelihood settings (levels, `k`, step ratio, consistency).
    pub drl: DrlConfig,
    /// The network DRL trains: `ladder` or `sigma_input`.
    pub drl_net: DrlNet,
    /// Final sampling.
    pub sampling: SamplingSettings,
    /// Evaluation.
    pub eval: EvalSettings,
}

impl Default for CdVsSmConfig {
    fn default() -> Self {
        CdVsSmConfig {
            datasets: ["8gaussians", "rings", "checkerboard", "two_gaussians"].map(String::from).to_vec(),
            data_outliers: OnOutliers::Warn,
            // every method but sliced SM (an opt-in: `methods = [..., "sm_sliced"]`), in table order
            methods: Method::ALL.into_iter().filter(|&m| m != Method::SmSliced).collect(),
            seed: 0,
            device: DeviceArg::Auto,
            threads: 0,
            out: PathBuf::from("experiments/runs"),
            run_name: None,
            n_train: 20_000,
            n_test: 5_000,
            model: MlpConfig { in_dim: 2, hidden: vec![128, 128], activation: Default::default() },
            train: TrainConfig {
                iters: 2000,
                batch_size: 256,
                log_every: 10,
                keep_checkpoints: 1,
                ..Default::default()
            },
            method_training: BTreeMap::from([(Method::Drl, MethodTraining { ema: Some(0.995), lr: None })]),
            cd: CdSettings::default(),
            sm: SmSettings::default(),
            ed: EnergyDiscrepancyConfig::default(),
            nce: NceConfig { nu: 4.0, ..NceConfig::default() },
            drl: DrlConfig {
                scales: NoiseScales { sigma_max: 2.0, sigma_min: 0.05, levels: 6 },
                k: 30,
                step_ratio: 0.05,
                alpha: 0.0,
                consistency: 0.3,
                consistency_samples: 16,
            },
            drl_net: DrlNet::Ladder,
            sampling: SamplingSettings::default(),
            eval: EvalSettings::default(),
        }
    }
}

// every model is an MLP sampled by Langevin: threads ≥ 2 split its chains
crate::common::cli::experiment_config!(CdVsSmConfig, split_chains = true);

impl CdVsSmConfig {
    /// Shrinks the budget for a smoke run of about a minute (same datasets and methods).
    pub fn make_quick(&mut self) {
        self.train.iters = self.train.iters.min(60);
        self.n_train = self.n_train.min(4000);
        self.n_test = self.n_test.min(1000);
        self.cd.k = self.cd.k.min(10);
        self.cd.buffer_capacity = self.cd.buffer_capacity.min(2000);
        self.sampling.n = self.sampling.n.min(300);
        self.sampling.langevin_steps = self.sampling.langevin_steps.min(60);
        self.sampling.mala_steps = self.sampling.mala_steps.min(30);
        self.sampling.pt_steps = self.sampling.pt_steps.min(30);
        self.drl.k = self.drl.k.min(10);
        self.eval.every = 30;
        self.eval.grid_n_train = 60;
        self.eval.grid_n = self.eval.grid_n.min(120);
        self.eval.image_every = 60;
    }

    /// Checks names and ranges, reads and checks every data set, and estimates the memory the run needs,
    /// so that every mistake in the config is reported before the run folder is created. Errors name the
    /// config keys as written in the file (`train.optim.lr`, `cd.k`, …); unknown method or dataset names list
    /// the valid ones.
    pub fn validate(&self) -> Result<()> {
        self.validate_settings()?;
        self.load_datasets()?;
        Ok(())
    }

    /// The training settings of `method`: `train` with `method_training[method]` over it.
    pub fn train_for(&self, method: Method) -> TrainConfig {
        let mut t = self.train.clone();
        if let Some(own) = self.method_training.get(&method) {
            t.ema = own.ema.or(t.ema);
            t.optim.lr = own.lr.unwrap_or(t.optim.lr);
        }
        t
    }

    /// [`CdVsSmConfig::validate`] without reading the data sets.
    pub fn validate_settings(&self) -> Result<()> {
        check_run_settings(self.threads, self.run_name.as_deref())?;
        if self.methods.is_empty() || self.datasets.is_empty() {
            bail!("need at least one method and one dataset");
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(m) = self.methods.iter().find(|m| !seen.insert(**m)) {
            bail!("method '{m}' is listed twice in methods: each method is one run folder");
        }
        if self.n_train == 0 || self.n_test < 2 || self.sampling.n < 2 {
            bail!("n_train must be ≥ 1, n_test and sampling.n ≥ 2");
        }
        if !(self.sampling.langevin_step > 0.0) || !(self.sampling.mala_step > 0.0) {
            bail!("sampling step sizes must be > 0");
        }
        // every final sampler's settings, used or not
        for sampler in [FinalSampler::Mala, FinalSampler::Hmc, FinalSampler::Pt] {
            let s = SamplingSettings { sampler, ..self.sampling.clone() };
            user_keys(s.final_sampler().validate(), KEYS)?;
        }
        if self.eval.grid_n < 2 || self.eval.grid_n_train < 2 {
            bail!("eval grid sizes must be ≥ 2");
        }
        if self.eval.every > 0 && !self.eval.image_every.is_multiple_of(self.eval.every) {
            bail!(
                "eval.image_every ({}) must be a multiple of eval.every ({}): images are drawn at evaluations",
                self.eval.image_every,
                self.eval.every
            );
        }
        user_keys(self.model.validate(), KEYS)?;
        if self.model.in_dim != 2 {
            bail!("model.in_dim = {}, but the data are 2-D points (width 2): set model.in_dim = 2", self.model.in_dim);
        }
        user_keys(self.train.validate(), KEYS)?;
        for (m, t) in &self.method_training {
            if let Some(d) = t.ema.filter(|d| !(0.0..1.0).contains(d)) {
                bail!("method_training.{m}.ema: the decay must be in [0, 1), got {d}");
            }
            if let Some(lr) = t.lr.filter(|lr| !(*lr > 0.0 && lr.is_finite())) {
                bail!("method_training.{m}.lr must be > 0 and finite, got {lr}");
            }
        }
        // every method's objective, used or not: a bad value is an error whichever methods are picked
        for m in Method::ALL {
            user_keys(validate_objective(&m.objective(self, [-1.0, 1.0, -1.0, 1.0])), KEYS)?;
        }
        check_memory(&self.memory_parts())
    }

    /// The parts of the run's memory estimate (parameters with their gradients and Adam's moments,
    /// activations of the largest batch, data, replay buffer), each with the key that sets its size.
    pub fn memory_parts(&self) -> Vec<MemoryPart> {
        let mut dims = vec![self.model.in_dim as f64];
        dims.extend(self.model.hidden.iter().map(|h| *h as f64));
        dims.push(1.0);
        let params: f64 = dims.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
        let width: f64 = self.model.hidden.iter().map(|h| *h as f64).sum();
        // CD evaluates positives and negatives together; evaluations run in chunks of at most 2^15 points
        let grid = (self.eval.grid_n as f64).powi(2).min((1 << 15) as f64);
        let rows = (2.0 * self.train.batch_size as f64).max(self.sampling.n as f64).max(grid);
        let hidden = format!("model.hidden = {:?}", self.model.hidden);
        vec![
            MemoryPart::new(
                &hidden,
                format!("{params:.3e} parameters with their gradients and Adam's two moments"),
                f32_bytes(4.0 * params),
            ),
            MemoryPart::new(
                format!(
                    "{hidden} (with train.batch_size = {}, sampling.n = {})",
                    self.train.batch_size, self.sampling.n
                ),
                format!("the activations of {rows} points (values, pre-activations, gradients)"),
                f32_bytes(3.0 * rows * width),
            ),
            MemoryPart::new(
                format!("n_train = {}", self.n_train),
                "the training and test points",
                f32_bytes(2.0 * (self.n_train + self.n_test) as f64),
            ),
            MemoryPart::new(
                format!("cd.buffer_capacity = {}", self.cd.buffer_capacity),
                "the replay buffer",
                f32_bytes(2.0 * self.cd.buffer_capacity as f64),
            ),
        ]
    }

    /// Reads every data set and checks it: unknown names (listing the valid ones), CSV errors (file and
    /// line), fewer than [`ebm_core::data::MIN_POINTS`] rows, no spread, the same data set twice, two data
    /// sets that would share a folder, and outliers (a warning, or an error with `data_outliers = "error"`).
    pub fn load_datasets(&self) -> Result<Datasets> {
        let mut sources = Vec::new();
        let mut warnings = Vec::new();
        for d in &self.datasets {
            let source = Source2d::from_spec(d).with_context(|| format!("dataset '{d}'"))?;
            let outliers = source.outliers(OUTLIER_MADS);
            if !outliers.is_empty() {
                let mut list: Vec<String> = outliers.iter().take(5).map(|o| o.to_string()).collect();
                if outliers.len() > 5 {
                    list.push(format!("and {} more", outliers.len() - 5));
                }
                let head = format!(
                    "{d}: {} value(s) lie more than {OUTLIER_MADS} median absolute deviations from the median of \
                     their column (lines counted from 1, the header included): {}",
                    outliers.len(),
                    list.join("; ")
                );
                match self.data_outliers {
                    OnOutliers::Error => bail!(
                        "{head}. Fix or remove these rows, or set data_outliers = \"warn\" to train on them anyway"
                    ),
                    OnOutliers::Warn => warnings.push(format!(
                        "{head}. Training goes on with them; set data_outliers = \"error\" to stop instead"
                    )),
                }
            }
            sources.push(source);
        }
        // the same data set twice (also under two spellings of a toy name or a path)
        let identity = |d: &str, s: &Source2d| match s {
            Source2d::Toy(t) => t.name().to_string(),
            Source2d::Points(_) => {
                std::fs::canonicalize(d).map(|p| p.display().to_string()).unwrap_or_else(|_| d.to_string())
            }
        };
        let ids: Vec<String> = self.datasets.iter().zip(&sources).map(|(d, s)| identity(d, s)).collect();
        let folders: Vec<String> = sources.iter().map(|s| folder_name(&s.name())).collect();
        for j in 0..ids.len() {
            for i in 0..j {
                let (a, b) = (&self.datasets[i], &self.datasets[j]);
                if ids[i] == ids[j] {
                    bail!(
                        "datasets lists the same data set twice ('{a}' and '{b}'): each data set is one folder of \
                         the run; remove one"
                    );
                }
                if folders[i] == folders[j] {
                    bail!(
                        "datasets '{a}' and '{b}' would share the folder '{}' of the run (their names differ only \
                         in characters other than letters, digits, '_' and '-'): rename or move one of the files",
                        folders[i]
                    );
                }
            }
        }
        let short: Vec<String> = sources
            .iter()
            .map(|s| match s {
                Source2d::Toy(t) => t.name().to_string(),
                Source2d::Points(p) => std::path::Path::new(p.name())
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_else(|| p.name().to_string()),
            })
            .collect();
        let labels = sources
            .iter()
            .zip(&short)
            .map(|(s, n)| if short.iter().filter(|m| *m == n).count() == 1 { n.clone() } else { s.name() })
            .collect();
        Ok(Datasets { sources, labels, folders, warnings })
    }

    /// The same config with every relative CSV path in `datasets` made absolute (against the working folder),
    /// so that the saved `config.toml` (and `--resume`) work from any folder.
    pub fn with_absolute_paths(&self) -> Result<CdVsSmConfig> {
        let mut cfg = self.clone();
        for d in &mut cfg.datasets {
            if Source2d::is_file_spec(d) && std::path::Path::new(d.as_str()).is_relative() {
                let abs = std::path::absolute(d.as_str()).with_context(|| format!("dataset '{d}'"))?;
                *d = abs.display().to_string();
            }
        }
        Ok(cfg)
    }
}

/// How the library's parameter names map to this config's keys (see [`user_keys`]).
const KEYS: &[(&str, &str)] = &[
    ("mlp", "model"),
    ("optim", "train.optim"),
    ("contrastive.k", "cd.k"),
    ("contrastive.alpha", "cd.alpha"),
    ("langevin", "cd.langevin"),
    ("buffer.capacity", "cd.buffer_capacity"),
    ("buffer.restart_prob", "cd.restart_prob"),
    ("score_matching.probes", "sm.probes"),
    ("score_matching.sigma", "sm.dsm_sigma"),
    ("energy_discrepancy", "ed"),
    ("hmc", "sampling.hmc"),
    ("tempering", "sampling.pt"),
];

/// Resolves the path of the default config relative to the working directory or the repository.
pub fn default_config_path() -> Option<PathBuf> {
    crate::config::find_config("exp_cd_vs_sm.toml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::config;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = "cd2".parse::<Method>().unwrap_err();
        assert!(e.contains("'cd2'") && e.contains("sm_hutchinson"), "{e}");
        assert_eq!("sm_sliced".parse::<Method>(), Ok(Method::SmSliced));
        let e = config::load::<CdVsSmConfig>(None, &["methods=[\"cd1\", \"cd2\"]".into()]).unwrap_err().to_string();
        assert!(e.contains("cd2") && e.contains("sm_hutchinson"), "{e}");
        let cfg = CdVsSmConfig { methods: vec![Method::Pcd, Method::Pcd], ..Default::default() };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("'pcd' is listed twice"), "{e}");
        let cfg = CdVsSmConfig { datasets: vec!["spirals".into()], ..Default::default() };
        let e = format!("{:#}", cfg.validate().unwrap_err());
        assert!(e.contains("spirals") && e.contains("checkerboard"), "{e}");
    }

    fn csv(dir: &std::path::Path, rel: &str, extra: &str) -> String {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut text = String::from("x,y\n");
        for i in 0..200 {
            text.push_str(&format!("{},{}\n", (i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()));
        }
        text.push_str(extra);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    #[test]
    fn data_sets_are_checked_labelled_and_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) =
            (csv(dir.path(), "a/good.csv", ""), csv(dir.path(), "b/good.csv", ""), csv(dir.path(), "x.csv", ""));
        let cfg = CdVsSmConfig { datasets: vec![a.clone(), c.clone(), "rings".into()], ..Default::default() };
        let d = cfg.load_datasets().unwrap();
        assert_eq!(d.labels, vec!["good.csv".to_string(), "x.csv".into(), "rings".into()], "file names when unique");
        assert_eq!(d.folders[2], "rings");
        assert!(d.warnings.is_empty());
        let cfg = CdVsSmConfig { datasets: vec![a.clone(), b.clone()], ..Default::default() };
        assert_eq!(cfg.load_datasets().unwrap().labels, vec![a.clone(), b.clone()], "paths when file names repeat");
        // /a/good.csv and /a_good.csv sanitise to the same folder
        let clash = csv(dir.path(), "a_good.csv", "");
        let cfg = CdVsSmConfig { datasets: vec![a.clone(), clash.clone()], ..Default::default() };
        let e = cfg.load_datasets().unwrap_err().to_string();
        assert!(e.contains(&a) && e.contains(&clash) && e.contains("share the folder"), "{e}");
        // the same file under two spellings
        let twice = format!("{}/a/../a/good.csv", dir.path().display());
        let cfg = CdVsSmConfig { datasets: vec![a.clone(), twice], ..Default::default() };
        assert!(cfg.load_datasets().unwrap_err().to_string().contains("same data set twice"));
    }

    #[test]
    fn outliers_warn_by_default_and_stop_with_data_outliers_error() {
        let dir = tempfile::tempdir().unwrap();
        let far = csv(dir.path(), "far.csv", "1e30,0.5\n");
        let mut cfg = CdVsSmConfig { datasets: vec![far.clone()], ..Default::default() };
        let d = cfg.load_datasets().unwrap();
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0].starts_with(&far) && d.warnings[0].contains("line 202: x = 1e30 lies"),
            "{:?}",
            d.warnings
        );
        cfg.data_outliers = OnOutliers::Error;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(&far) && e.contains("line 202: x = 1e30") && e.contains("data_outliers"), "{e}");
        let cfg: CdVsSmConfig = config::load(None, &["data_outliers=\"error\"".into()]).unwrap();
        assert_eq!(cfg.data_outliers, OnOutliers::Error);
    }

    #[test]
    fn relative_csv_paths_become_absolute_and_toy_names_stay() {
        let cfg = CdVsSmConfig { datasets: vec!["data/x.csv".into(), "rings".into()], ..Default::default() };
        let abs = cfg.with_absolute_paths().unwrap();
        assert_eq!(abs.datasets[0], std::env::current_dir().unwrap().join("data/x.csv").display().to_string());
        assert_eq!(abs.datasets[1], "rings");
        assert_eq!(abs.with_absolute_paths().unwrap(), abs);
    }

    #[test]
    fn sampling_score_is_fast_by_default_and_set_by_its_key() {
        let load = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            config::load::<CdVsSmConfig>(None, &sets)
        };
        assert_eq!(load(&[]).unwrap().sampling.score, ScorePath::Fast);
        assert_eq!(load(&["sampling.score=\"autograd\""]).unwrap().sampling.score, ScorePath::Autograd);
        let e = format!("{:#}", load(&["sampling.score=\"slow\""]).unwrap_err());
        assert!(e.contains("score") && e.contains("slow") && e.contains("autograd"), "{e}");
        assert_eq!(load(&[]).unwrap().drl_net, DrlNet::Ladder);
        assert_eq!(load(&["drl_net=\"sigma_input\""]).unwrap().drl_net, DrlNet::SigmaInput);
        let e = format!("{:#}", load(&["drl_net=\"film\""]).unwrap_err());
        assert!(e.contains("drl_net") && e.contains("film") && e.contains("ladder"), "{e}");
    }

    #[test]
    fn a_method_takes_its_own_averaging_and_rate_and_bad_ones_name_the_key() {
        let load = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            config::load::<CdVsSmConfig>(None, &sets)
        };
        let cfg = load(&[]).unwrap();
        assert_eq!(cfg.train_for(Method::Drl).ema, Some(0.995));
        assert_eq!(cfg.train_for(Method::Replay), cfg.train);
        let cfg = load(&["method_training.cd1={lr=3e-3}"]).unwrap();
        assert_eq!(cfg.train_for(Method::Cd1).optim.lr, 3e-3);
        assert_eq!(cfg.train_for(Method::Cd1).ema, cfg.train.ema);
        assert_eq!(cfg.train_for(Method::Cdk).optim.lr, cfg.train.optim.lr);
        for (set, want) in [
            ("method_training.drl={ema=1.0}", "method_training.drl.ema"),
            ("method_training.cd1={lr=0.0}", "method_training.cd1.lr"),
        ] {
            let e = load(&[set]).unwrap().validate_settings().unwrap_err().to_string();
            assert!(e.contains(want), "{set}: {e}");
        }
        for (set, want) in [("method_training.cd7={ema=0.9}", "cd7"), ("method_training.drl={iters=5}", "iters")] {
            let e = format!("{:#}", load(&[set]).unwrap_err());
            assert!(e.contains(want), "{set}: {e}");
        }
    }

    #[test]
    fn settings_errors_name_the_users_keys_and_unused_methods_are_checked_too() {
        let check = |sets: &[&str], want: &str| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let cfg: CdVsSmConfig = config::load(None, &sets).unwrap();
            let e = cfg.validate_settings().unwrap_err().to_string();
            assert!(e.contains(want), "{sets:?}: {e}");
        };
        check(&["train.optim.lr=-1"], "invalid value for train.optim.lr");
        check(&["methods=[\"cd1\"]", "sm.probes=0"], "invalid value for sm.probes");
        check(&["methods=[\"cd1\"]", "sm.dsm_sigma=0"], "invalid value for sm.dsm_sigma");
        check(&["cd.k=0"], "invalid value for cd.k");
        check(&["ed.t=0"], "invalid value for ed.t");
        check(&["nce.nu=0"], "invalid value for nce.nu");
        check(&["drl.k=0"], "invalid value for drl.k");
        check(&["drl.consistency=-1"], "invalid value for drl.consistency");
        check(&["drl.consistency_samples=0"], "invalid value for drl.consistency_samples");
        check(&["drl.scales.levels=1", "drl.scales.sigma_min=2.0"], "invalid value for drl.scales.levels");
        check(&["sampling.hmc.step_size=0"], "invalid value for sampling.hmc.step_size");
        check(&["cd.buffer_capacity=0"], "invalid value for cd.buffer_capacity");
        check(&["cd.langevin.step_size=0"], "invalid value for cd.langevin.step_size");
        check(&["model.in_dim=3"], "model.in_dim = 3, but the data are 2-D points (width 2)");
        check(&["threads=100000"], "threads = 100000");
        if crate::common::config::available_memory().is_some_and(|a| a < 1e11) {
            check(&["model.hidden=[100000, 100000]"], "model.hidden = [100000, 100000] needs too much memory");
        }
        let parts = CdVsSmConfig::default().memory_parts();
        let total: f64 = parts.iter().map(|p| p.bytes).sum();
        assert!(total > 1e6 && total < 2e9, "the defaults need about {total} bytes");
    }

    #[test]
    fn shipped_config_file_equals_the_built_in_defaults() {
        let path = default_config_path().expect("experiments/exp_cd_vs_sm.toml ships with the repo");
        let from_file: CdVsSmConfig = config::load(Some(&path), &[]).unwrap();
        assert_eq!(from_file, CdVsSmConfig::default());
        from_file.validate().unwrap();
    }
}
