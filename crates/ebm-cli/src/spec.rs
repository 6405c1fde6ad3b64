//! The config file of `ebm train`: data, model, objective, trainer, sampling and evaluation, each a table
//! whose keys are the library's own config types (so every objective, sampler and model the library has is
//! reachable, by the same names, with no list of methods of the command line's own).
//!
//! ```toml
//! seed = 0
//! [data]
//! source = "points.csv"          # or 8gaussians, points.npy, digits, mnist5k, folder:/path/to/images
//! [model]
//! kind = "mlp"                   # mlp | conv | conditional (noise_conditional = true for a σ-conditional net)
//! hidden = [128, 128]
//! [objective]
//! kind = "contrastive"           # contrastive | score_matching | noise_dsm | energy_discrepancy | nce
//! [train]
//! iters = 2000
//! [sampling]
//! sampler = { kind = "mala", step_size = 0.01 }
//! ```
//!
//! Loading applies `--set key=value` overrides on top of the file; setting a `kind` to a different value
//! replaces its whole table (the other keys belonged to the old kind), so `--set objective.kind=nce` gives
//! NCE with its defaults.

use anyhow::{bail, Context, Result};
use ebm_core::data::images::{FolderOptions, PixelScale};
use ebm_core::energy::conditional::ConditionalConfig;
use ebm_core::energy::Activation;
use ebm_core::objective::ContrastiveConfig;
use ebm_core::sampler::{Init, MalaConfig};
use ebm_core::{ObjectiveConfig, SamplerConfig, TrainConfig};
use experiments::DeviceArg;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The whole config of one training run (what `ebm train CONFIG.toml` reads and the run folder's
/// `config.toml` holds, resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    /// Seed of every random stream of the run.
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceArg,
    /// libtorch CPU threads (0: the default of [`experiments::device`]).
    pub threads: usize,
    /// The data.
    pub data: DataSpec,
    /// The network `f_θ`.
    pub model: ModelSpec,
    /// The training objective (the library's [`ObjectiveConfig`], tagged by `kind`).
    pub objective: ObjectiveConfig,
    /// The training loop (the library's [`TrainConfig`]).
    pub train: TrainConfig,
    /// How samples are drawn at the end of training and by `ebm sample`.
    pub sampling: SamplingSpec,
    /// Evaluation during and after training.
    pub eval: EvalSpec,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            seed: 0,
            device: DeviceArg::Auto,
            threads: 0,
            data: DataSpec::default(),
            model: ModelSpec::default(),
            objective: ObjectiveConfig::Contrastive(ContrastiveConfig::default()),
            train: TrainConfig::default(),
            sampling: SamplingSpec::default(),
            eval: EvalSpec::default(),
        }
    }
}

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSpec {
    /// A built-in 2-D density (`8gaussians`, `rings`, …), a `.csv` file of points (header optional), a `.npy`
    /// array `[n, d]`, `digits`, `mnist5k`, or `folder:<path>` (one sub-folder per class, or flat).
    pub source: String,
    /// Training points drawn from a built-in density.
    pub n_train: usize,
    /// Test points drawn from a built-in density.
    pub n_test: usize,
    /// Share of a file's rows (or images) held out for evaluation.
    pub test_fraction: f64,
    /// Give the model the class labels of a labelled image set (a `conditional` model needs them).
    pub labels: bool,
    /// Pixel range of image data.
    pub pixel_scale: PixelScale,
    /// How an image folder is read.
    pub folder: FolderOptions,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            source: "8gaussians".into(),
            n_train: 10_000,
            n_test: 2_000,
            test_fraction: 0.1,
            labels: false,
            pixel_scale: PixelScale::MinusOneOne,
            folder: FolderOptions::default(),
        }
    }
}

/// The network `f_θ`; shapes (input dimension, image size, labels) come from the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// A fully connected net `D → hidden… → 1` on vectors.
    Mlp {
        /// Hidden widths.
        #[serde(default = "default_hidden")]
        hidden: Vec<i64>,
        /// Non-linearity.
        #[serde(default)]
        activation: Activation,
    },
    /// A convolutional energy on images `[C, H, W]`.
    Conv {
        /// Channels of the conv stages.
        #[serde(default = "default_channels")]
        channels: Vec<i64>,
        /// Non-linearity.
        #[serde(default)]
        activation: Activation,
        /// Spectral normalisation of every weight.
        #[serde(default)]
        spectral_norm: bool,
    },
    /// A label-aware net (MLP, conv, denoiser or U-Net), optionally noise-conditional (`noise_conditional =
    /// true`, trained by `noise_dsm` and sampled by `annealed`); the labels come from the data (one label
    /// `all` for unlabelled data).
    Conditional(ConditionalConfig),
}

fn default_hidden() -> Vec<i64> {
    vec![128, 128]
}

fn default_channels() -> Vec<i64> {
    vec![32, 64, 64]
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Mlp { hidden: default_hidden(), activation: Activation::Silu }
    }
}

impl ModelSpec {
    /// The `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Conv { .. } => "conv",
            ModelSpec::Conditional(c) if c.noise_conditional => "conditional (noise-conditional)",
            ModelSpec::Conditional(_) => "conditional",
        }
    }

    /// True for a net that takes the noise level σ.
    pub fn noise_conditional(&self) -> bool {
        matches!(self, ModelSpec::Conditional(c) if c.noise_conditional)
    }
}

/// How samples are drawn from the trained model (at the end of `ebm train`, and by `ebm sample` unless its
/// flags say otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingSpec {
    /// The sampler (the library's [`SamplerConfig`], tagged by `kind`).
    pub sampler: SamplerConfig,
    /// Sampler steps.
    pub steps: usize,
    /// Number of chains (samples).
    pub n: usize,
    /// Chain starts; `None`: uniform over the data's box plus 10% on each side (vectors), or uniform over the
    /// pixel range (images).
    pub init: Option<Init>,
}

impl Default for SamplingSpec {
    fn default() -> Self {
        SamplingSpec {
            sampler: SamplerConfig::Mala(MalaConfig { step_size: 0.01, record: false }),
            steps: 500,
            n: 1000,
            init: None,
        }
    }
}

/// Evaluation during and after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSpec {
    /// Evaluate (and log `eval/*` to TensorBoard) every this many updates; 0: only at the end.
    pub every: usize,
    /// Grid cells per axis for `log Z` of 2-D models.
    pub grid_n: usize,
    /// Log histograms of `f` at data and at negatives and of `‖∇ₓf‖` every this many updates (0: never).
    pub histogram_every: usize,
}

impl Default for EvalSpec {
    fn default() -> Self {
        EvalSpec { every: 0, grid_n: 200, histogram_every: 100 }
    }
}

/// Reads a config file and applies `overrides` (`key=value`, TOML values); unknown keys and wrong types are
/// errors naming the key and the file.
///
/// # Errors
/// A missing or malformed file, an override that is not `key=value`, or a key the config does not have.
pub fn load_spec(path: &Path, overrides: &[String]) -> Result<TrainSpec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    for o in overrides {
        apply_override(&mut table, o).with_context(|| format!("--set {o}"))?;
    }
    let what = if overrides.is_empty() { path.display().to_string() } else { format!("{} with --set", path.display()) };
    spec_from_table(table).with_context(|| format!("bad config ({what})"))
}

/// Deserialises a spec from a TOML table (unknown keys are errors).
pub fn spec_from_table(table: toml::Table) -> Result<TrainSpec> {
    TrainSpec::deserialize(toml::Value::Table(table)).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

/// Sets `a.b.c = value` in `table` as `experiments::config::apply_override` does, except that a new value
/// for a `kind` key that differs from the current one clears the rest of that table first (the other keys
/// belonged to the old kind).
///
/// # Errors
/// An assignment without `=`, an empty key part, or a key whose parent is not a table.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("'{assignment}' must look like key=value (e.g. train.optim.lr=1e-4)");
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    if let Some((last, parents)) = parts.split_last() {
        if *last == "kind" {
            let new = raw.trim().trim_matches('"');
            let mut cur = Some(&mut *table);
            for p in parents {
                cur = cur.and_then(|t| t.get_mut(*p)).and_then(|v| v.as_table_mut());
            }
            if let Some(t) = cur {
                if t.get("kind").and_then(|k| k.as_str()).is_some_and(|old| old != new) {
                    t.clear();
                }
            }
        }
    }
    experiments::config::apply_override(table, assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let s = TrainSpec::default();
        let text = toml::to_string(&s).unwrap();
        assert_eq!(spec_from_table(toml::from_str(&text).unwrap()).unwrap(), s);
    }

    #[test]
    fn a_new_kind_drops_the_old_kinds_keys() {
        let mut t = table("[objective]\nkind = \"contrastive\"\nk = 5\n");
        apply_override(&mut t, "objective.kind=nce").unwrap();
        let s = spec_from_table(t).unwrap();
        assert!(matches!(s.objective, ObjectiveConfig::Nce(_)), "{:?}", s.objective);
        let mut t = table("[objective]\nkind = \"contrastive\"\nk = 5\n");
        apply_override(&mut t, "objective.kind=contrastive").unwrap();
        match spec_from_table(t).unwrap().objective {
            ObjectiveConfig::Contrastive(c) => assert_eq!(c.k, 5),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = spec_from_table(table("[train]\nitersx = 3\n")).unwrap_err().to_string();
        assert!(e.contains("itersx"), "{e}");
        let e = spec_from_table(table("[model]\nkind = \"mlp\"\nwidth = 3\n")).unwrap_err().to_string();
        assert!(e.contains("width"), "{e}");
        let e = spec_from_table(table("[model]\nkind = \"transformer\"\n")).unwrap_err().to_string();
        assert!(e.contains("transformer"), "{e}");
    }
}
