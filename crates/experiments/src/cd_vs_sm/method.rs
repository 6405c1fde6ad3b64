//! The training [`Method`]s that `exp_cd_vs_sm` compares: their names, labels and objectives.

use super::config::CdVsSmConfig;
use ebm_core::objective::{Negatives, ObjectiveConfig, SmMethod};
use ebm_core::sampler::{BufferConfig, Init};
use serde::{Deserialize, Serialize};

/// A training method of the comparison; its name in configs and on the command line is the snake-case
/// form (`cd1`, `sm_hutchinson`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// Energy discrepancy.
    Ed,
    /// Noise-contrastive estimation (noise: a Gaussian fitted to the training set; learns log Z).
    Nce,
    /// Diffusion recovery likelihood (on a noise-conditional version of the same MLP, evaluated at its
    /// lowest noise level).
    Drl,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 11] = [
        Method::Cd1,
        Method::Cdk,
        Method::Pcd,
        Method::Replay,
        Method::SmExact,
        Method::SmHutchinson,
        Method::SmSliced,
        Method::Dsm,
        Method::Ed,
        Method::Nce,
        Method::Drl,
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
            Method::Ed => "ed",
            Method::Nce => "nce",
            Method::Drl => "drl",
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
            Method::Ed => format!("ED t={} M={}", cfg.ed.t, cfg.ed.m),
            Method::Nce => format!("NCE ν={}", cfg.nce.nu),
            Method::Drl => format!("DRL {}×{}", cfg.drl.scales.levels, cfg.drl.k),
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
            Method::Ed => ObjectiveConfig::EnergyDiscrepancy(cfg.ed.clone()),
            Method::Nce => ObjectiveConfig::Nce(cfg.nce.clone()),
            Method::Drl => ObjectiveConfig::Drl(cfg.drl.clone()),
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
