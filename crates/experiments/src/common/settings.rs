//! Settings blocks that several experiments' configs share.

use ebm_core::objective::{ContrastiveConfig, Negatives};
use ebm_core::sampler::{LangevinConfig, SamplerConfig};
use serde::{Deserialize, Serialize};

/// Contrastive-divergence settings (`[cd]` of an experiment's config). The defaults are those of the 2-D
/// experiments; each experiment's own config gives its defaults for the whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdSettings {
    /// Langevin steps per update (CD-1 uses 1).
    pub k: usize,
    /// The training sampler.
    pub langevin: LangevinConfig,
    /// L2 penalty α on f.
    pub alpha: f64,
    /// Replay-buffer size.
    pub buffer_capacity: usize,
    /// Share of chains restarted from noise.
    pub restart_prob: f64,
}

impl Default for CdSettings {
    fn default() -> Self {
        CdSettings {
            k: 20,
            langevin: LangevinConfig::seed_form(0.005),
            alpha: 0.1,
            buffer_capacity: 10_000,
            restart_prob: 0.05,
        }
    }
}

impl CdSettings {
    /// The contrastive objective with these settings, `k` sampler steps and the given chain starts.
    pub fn objective(&self, negatives: Negatives, k: usize) -> ContrastiveConfig {
        ContrastiveConfig { negatives, k, sampler: SamplerConfig::Langevin(self.langevin.clone()), alpha: self.alpha }
    }
}
