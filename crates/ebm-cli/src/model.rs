//! Builds the network a [`ModelSpec`] names for the shapes of the data, and opens a finished run folder as a
//! model (its `config.toml`, `data.json` and `model.safetensors`).

use crate::data::DataInfo;
use crate::spec::{ModelSpec, TrainSpec};
use anyhow::{bail, Context, Result};
use ebm_core::energy::conditional::ConditionalNet;
use ebm_core::energy::{ConvConfig, ConvEnergy, Mlp, MlpConfig};
use ebm_core::EnergyModel;
use std::path::{Path, PathBuf};
use tch::{nn, Device};

/// The label a conditional model gets on data without labels.
pub const SINGLE_LABEL: &str = "all";

/// Builds `spec`'s network under `path` for data of shape `info.event_shape` (and its labels).
///
/// # Errors
/// A model that does not fit the data (an MLP on images, a conv net on vectors), named by the config key.
pub fn build(spec: &ModelSpec, info: &DataInfo, path: &nn::Path) -> Result<Box<dyn EnergyModel>> {
    let event = &info.event_shape;
    let lib = |e: ebm_core::EbmError| anyhow::anyhow!("model: {e}");
    Ok(match spec {
        ModelSpec::Mlp { hidden, activation } => {
            if event.len() != 1 {
                bail!(
                    "model.kind = \"mlp\" takes vectors, but data.source = \"{}\" holds images of shape {event:?}; use \
                     kind = \"conv\", or kind = \"conditional\" with arch = \"mlp\" (it flattens images)",
                    info.source
                );
            }
            let cfg = MlpConfig { in_dim: event[0], hidden: hidden.clone(), activation: *activation };
            Box::new(Mlp::new(path, &cfg).map_err(lib)?)
        }
        ModelSpec::Conv { channels, activation, spectral_norm } => {
            if event.len() != 3 {
                bail!(
                    "model.kind = \"conv\" takes images [C, H, W], but data.source = \"{}\" holds vectors of shape \
                     {event:?}; use kind = \"mlp\"",
                    info.source
                );
            }
            let cfg = ConvConfig {
                in_channels: event[0],
                image_size: [event[1], event[2]],
                channels: channels.clone(),
                activation: *activation,
                spectral_norm: *spectral_norm,
            };
            Box::new(ConvEnergy::new(path, &cfg).map_err(lib)?)
        }
        ModelSpec::Conditional(cfg) => {
            let names: Vec<&str> = if info.label_names.is_empty() {
                vec![SINGLE_LABEL]
            } else {
                info.label_names.iter().map(String::as_str).collect()
            };
            Box::new(ConditionalNet::new(path, cfg, event, &names).map_err(lib)?)
        }
    })
}

/// A trained model read back from its run folder.
pub struct SavedRun {
    /// The run folder.
    pub dir: PathBuf,
    /// The run's resolved config.
    pub spec: TrainSpec,
    /// What the run knew of its data.
    pub data: DataInfo,
    /// The weights (kept alive for the model).
    pub vs: nn::VarStore,
    /// The model.
    pub model: Box<dyn EnergyModel>,
}

impl std::fmt::Debug for SavedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedRun").field("dir", &self.dir).field("data", &self.data).finish()
    }
}

/// The files of a run folder the other commands read.
pub const DATA_FILE: &str = "data.json";
/// The final weights.
pub const MODEL_FILE: &str = "model.safetensors";

impl SavedRun {
    /// Opens the run in `dir` on `device`.
    ///
    /// # Errors
    /// One line naming what is missing: not a folder, no `config.toml` (not a run), no `model.safetensors`
    /// (training has not finished: resume it), unreadable files.
    pub fn open(dir: &Path, device: Device) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{} is not a folder; give the run folder that `ebm train` printed", dir.display());
        }
        let config = dir.join("config.toml");
        let data_file = dir.join(DATA_FILE);
        if !config.is_file() || !data_file.is_file() {
            bail!(
                "{} is not an `ebm train` run folder (it has no config.toml and data.json); give the folder that \
                 `ebm train` printed",
                dir.display()
            );
        }
        let weights = dir.join(MODEL_FILE);
        if !weights.is_file() {
            bail!(
                "{} has no {MODEL_FILE}: its training has not finished; continue it with `ebm train --resume {}`",
                dir.display(),
                dir.display()
            );
        }
        let spec = crate::spec::load_spec(&config, &[])?;
        let data: DataInfo = serde_json::from_slice(&std::fs::read(&data_file)?)
            .with_context(|| format!("{} is damaged", data_file.display()))?;
        let mut vs = nn::VarStore::new(device);
        let model = build(&spec.model, &data, &vs.root())?;
        vs.load(&weights).with_context(|| format!("cannot load the weights in {}", weights.display()))?;
        vs.freeze();
        Ok(SavedRun { dir: dir.to_path_buf(), spec, data, vs, model })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(shape: &[i64]) -> DataInfo {
        DataInfo {
            source: "x".into(),
            event_shape: shape.to_vec(),
            label_names: vec![],
            bounds: None,
            pixel_range: None,
            columns: None,
            n_train: 1,
            n_test: 1,
        }
    }

    #[test]
    fn models_take_their_shapes_from_the_data() {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = build(&ModelSpec::default(), &info(&[5]), &vs.root()).unwrap();
        assert_eq!(m.f(&tch::Tensor::zeros([3, 5], (tch::Kind::Float, Device::Cpu))).size(), [3]);
        let e = build(&ModelSpec::default(), &info(&[1, 8, 8]), &vs.root()).err().unwrap().to_string();
        assert!(e.contains("model.kind = \"mlp\" takes vectors"), "{e}");
        let conv = ModelSpec::Conv { channels: vec![4, 4], activation: Default::default(), spectral_norm: false };
        let e = build(&conv, &info(&[2]), &vs.root()).err().unwrap().to_string();
        assert!(e.contains("takes images"), "{e}");
        let m = build(&conv, &info(&[1, 8, 8]), &vs.root()).unwrap();
        assert_eq!(m.f(&tch::Tensor::zeros([2, 1, 8, 8], (tch::Kind::Float, Device::Cpu))).size(), [2]);
    }

    #[test]
    fn a_folder_that_is_not_a_run_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = SavedRun::open(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("is not an `ebm train` run folder"), "{e}");
        let e = SavedRun::open(&dir.path().join("nope"), Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("is not a folder"), "{e}");
    }
}
