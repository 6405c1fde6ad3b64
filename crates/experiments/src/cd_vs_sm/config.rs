//! Settings of `exp_cd_vs_sm`: the [`Method`]s compared and [`CdVsSmConfig`].

use crate::common::device::DeviceArg;
use crate::common::CdSettings;
use anyhow::{bail, Context, Result};
use ebm_core::autograd::Probe;
use ebm_core::data::Source2d;
use ebm_core::energy::{Gaussian, MlpConfig};
use ebm_core::objective::{Negatives, ObjectiveConfig, SmMethod};
use ebm_core::sampler::{BufferConfig, Init};
use ebm_core::train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::Device;

/// A training method of the comparison; its name in configs and on the command line is the snake-case
/// form (`cd1`, `sm_hutchinson`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// CD-1 from the data.
    Cd1,
    /// CD-k from the data.
    Cdk,
    /// Persistent CD.
    Pcd,
    /// The IGEBM replay buffer.
    Replay,
    /// Score matching with the exact Hessian trace.
    SmExact,
    /// Score matching with Hutchinson's trace estimator.
    SmHutchinson,
    /// Sliced score matching.
    SmSliced,
    /// Denoising score matching.
    Dsm,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 8] = [
        Method::Cd1,
        Method::Cdk,
        Method::Pcd,
        Method::Replay,
        Method::SmExact,
        Method::SmHutchinson,
        Method::SmSliced,
        Method::Dsm,
    ];

    /// The name used in configs, folders and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Cd1 => "cd1",
            Method::Cdk => "cdk",
            Method::Pcd => "pcd",
            Method::Replay => "replay",
            Method::SmExact => "sm_exact",
            Method::SmHutchinson => "sm_hutchinson",
            Method::SmSliced => "sm_sliced",
            Method::Dsm => "dsm",
        }
    }

    /// The label in tables and figures.
    pub fn label(self, cfg: &CdVsSmConfig) -> String {
        match self {
            Method::Cd1 => "CD-1".into(),
            Method::Cdk => format!("CD-{}", cfg.cd.k),
            Method::Pcd => format!("PCD-{}", cfg.cd.k),
            Method::Replay => format!("Replay-{}", cfg.cd.k),
            Method::SmExact => "SM exact".into(),
            Method::SmHutchinson => format!("SM Hutchinson ({})", cfg.sm.probes),
            Method::SmSliced => format!("Sliced SM ({})", cfg.sm.probes),
            Method::Dsm => format!("DSM σ={}", cfg.sm.dsm_sigma),
        }
    }

    /// The objective; `bbox` sets the restart distribution of PCD and the buffer.
    pub fn objective(self, cfg: &CdVsSmConfig, bbox: [f64; 4]) -> ObjectiveConfig {
        let init = Init::Uniform { low: bbox[0].min(bbox[2]), high: bbox[1].max(bbox[3]) };
        let cd = |negatives, k| ObjectiveConfig::Contrastive(cfg.cd.objective(negatives, k));
        let sm = |method| ObjectiveConfig::ScoreMatching { method };
        let probes = cfg.sm.probes;
        match self {
            Method::Cd1 => cd(Negatives::Data, 1),
            Method::Cdk => cd(Negatives::Data, cfg.cd.k),
            Method::Pcd => cd(Negatives::Persistent { init }, cfg.cd.k),
            Method::Replay => cd(
                Negatives::Replay(BufferConfig {
                    capacity: cfg.cd.buffer_capacity,
                    restart_prob: cfg.cd.restart_prob,
                    init,
                }),
                cfg.cd.k,
            ),
            Method::SmExact => sm(SmMethod::Exact),
            Method::SmHutchinson => sm(SmMethod::Hutchinson { probes, probe: cfg.sm.probe }),
            Method::SmSliced => sm(SmMethod::Sliced { probes, probe: cfg.sm.probe }),
            Method::Dsm => sm(SmMethod::Denoising { sigma: cfg.sm.dsm_sigma }),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let valid: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method '{s}'; valid methods: {}", valid.join(", "))
        })
    }
}

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
    /// MALA steps continuing the same chains.
    pub mala_steps: usize,
    /// MALA step size.
    pub mala_step: f64,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings { n: 2000, langevin_steps: 500, langevin_step: 1e-3, mala_steps: 300, mala_step: 2e-3 }
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

/// The experiment's configuration (`experiments/exp_cd_vs_sm.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdVsSmConfig {
    /// Datasets (toy names or CSV files of x,y points).
    pub datasets: Vec<String>,
    /// Methods.
    pub methods: Vec<Method>,
    /// Seed: every run starts from the same initial weights for a given seed.
    pub seed: u64,
    /// Device.
    pub device: DeviceArg,
    /// CPU threads for libtorch (0: libtorch's default).
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
    /// Training loop (iterations, batch, Adam), the same for every method.
    pub train: TrainConfig,
    /// Contrastive settings.
    pub cd: CdSettings,
    /// Score-matching settings.
    pub sm: SmSettings,
    /// Final sampling.
    pub sampling: SamplingSettings,
    /// Evaluation.
    pub eval: EvalSettings,
}

impl Default for CdVsSmConfig {
    fn default() -> Self {
        CdVsSmConfig {
            datasets: ["8gaussians", "rings", "checkerboard", "two_gaussians"].map(String::from).to_vec(),
            methods: vec![
                Method::Cd1,
                Method::Cdk,
                Method::Pcd,
                Method::Replay,
                Method::SmExact,
                Method::SmHutchinson,
                Method::Dsm,
            ],
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
            cd: CdSettings::default(),
            sm: SmSettings::default(),
            sampling: SamplingSettings::default(),
            eval: EvalSettings::default(),
        }
    }
}

crate::common::cli::experiment_config!(CdVsSmConfig);

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
        self.eval.every = 30;
        self.eval.grid_n_train = 60;
        self.eval.grid_n = self.eval.grid_n.min(120);
        self.eval.image_every = 60;
    }

    /// Checks names and ranges; unknown method or dataset names list the valid ones.
    pub fn validate(&self) -> Result<()> {
        if self.methods.is_empty() || self.datasets.is_empty() {
            bail!("need at least one method and one dataset");
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(m) = self.methods.iter().find(|m| !seen.insert(**m)) {
            bail!("method '{m}' is listed twice in methods: each method is one run folder");
        }
        for d in &self.datasets {
            Source2d::from_spec(d).with_context(|| format!("dataset '{d}'"))?;
        }
        if self.n_train == 0 || self.n_test < 2 || self.sampling.n < 2 {
            bail!("n_train must be ≥ 1, n_test and sampling.n ≥ 2");
        }
        if !(self.sampling.langevin_step > 0.0) || !(self.sampling.mala_step > 0.0) {
            bail!("sampling step sizes must be > 0");
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
        self.model.validate()?;
        self.train.validate()?;
        let probe_model = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu)?;
        for m in &self.methods {
            m.objective(self, [-1.0, 1.0, -1.0, 1.0]).build(&probe_model, Device::Cpu)?;
        }
        Ok(())
    }
}

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

    #[test]
    fn shipped_config_file_equals_the_built_in_defaults() {
        let path = default_config_path().expect("experiments/exp_cd_vs_sm.toml ships with the repo");
        let from_file: CdVsSmConfig = config::load(Some(&path), &[]).unwrap();
        assert_eq!(from_file, CdVsSmConfig::default());
        from_file.validate().unwrap();
    }
}
