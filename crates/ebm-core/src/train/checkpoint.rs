//! Checkpoints: every tensor of the training state in one safetensors file plus `meta.json`, written
//! atomically (temporary folder, fsync, rename), pruned to `keep_checkpoints`, and restored only when
//! everything in them fits the model.

use super::Trainer;
use crate::error::{invalid, io_err, EbmError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

const FORMAT: u32 = 1;

impl Trainer<'_> {
    /// Writes a checkpoint for the current step atomically: files go to a temporary folder that is
    /// fsynced and renamed to `step-NNNNNNNN`; only then are old checkpoints beyond `keep_checkpoints`
    /// removed. Returns the checkpoint folder.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let dir = self.ckpt_dir.as_ref().ok_or_else(|| invalid("checkpoint", "no checkpoint folder set"))?;
        let name = format!("step-{:08}", self.step);
        let fin = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        let result = (|| {
            let mut tensors = self.state_tensors();
            if let Some(st) = self.objective.state() {
                tensors.push(("objective.state".into(), st));
            }
            let tensors: Vec<(String, Tensor)> =
                tensors.into_iter().map(|(k, t)| (k, t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
            let st_path = tmp.join("state.safetensors");
            Tensor::write_safetensors(&tensors, &st_path).map_err(|e| EbmError::Io {
                path: st_path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let meta = CheckpointMeta {
                format: FORMAT,
                step: self.step,
                seed: self.seed,
                lr: self.adam.cfg.lr,
                rollbacks: self.rollbacks,
                objective: self.objective.name(),
            };
            let meta_path = tmp.join("meta.json");
            std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).expect("meta serialises"))
                .map_err(|e| io_err(&meta_path, e))?;
            for p in [&st_path, &meta_path] {
                std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| io_err(p, e))?;
            }
            if fin.exists() {
                std::fs::remove_dir_all(&fin).map_err(|e| io_err(&fin, e))?;
            }
            std::fs::rename(&tmp, &fin).map_err(|e| io_err(&fin, e))?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let mut all = list_checkpoints(dir)?;
        while all.len() > self.cfg.keep_checkpoints {
            let (_, old) = all.remove(0);
            std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
        }
        Ok(fin)
    }

    /// Restores model, optimiser, EMA, objective state, step and learning rate from a checkpoint folder
    /// (`step-NNNNNNNN`) or from the newest checkpoint in a checkpoints folder. Nothing is changed if the
    /// checkpoint is corrupt or from another architecture.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<usize> {
        let dir = if path.join("meta.json").exists() {
            path.to_path_buf()
        } else {
            list_checkpoints(path)?.pop().map(|(_, p)| p).ok_or_else(|| {
                invalid("resume", format!("no checkpoint (step-NNNNNNNN folder) in {}", path.display()))
            })?
        };
        let meta_path = dir.join("meta.json");
        let meta_bytes = std::fs::read(&meta_path).map_err(|e| io_err(&meta_path, e))?;
        let meta: CheckpointMeta = serde_json::from_slice(&meta_bytes).map_err(|e| EbmError::Data {
            path: meta_path.display().to_string(),
            msg: format!("corrupt checkpoint metadata: {e}"),
        })?;
        if meta.format != FORMAT {
            return Err(invalid("checkpoint", format!("format {} is not supported (expected {FORMAT})", meta.format)));
        }
        let st_path = dir.join("state.safetensors");
        let tensors = Tensor::read_safetensors(&st_path).map_err(|e| EbmError::Data {
            path: st_path.display().to_string(),
            msg: format!("corrupt or truncated checkpoint: {e}"),
        })?;
        let device = self.params[0].1.device();
        let mut state: HashMap<String, Tensor> = tensors.into_iter().map(|(k, t)| (k, t.to_device(device))).collect();
        let objective_state = state.remove("objective.state");
        // validate everything before touching anything: restore into a scratch copy first
        let backup: HashMap<String, Tensor> =
            self.state_tensors().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        if let Err(e) = self.restore(&state) {
            let _ = self.restore(&backup);
            return Err(e);
        }
        if let Some(st) = objective_state {
            if let Err(e) = self.objective.load_state(st) {
                let _ = self.restore(&backup);
                return Err(e);
            }
        }
        self.step = meta.step;
        self.adam.cfg.lr = meta.lr;
        self.rollbacks = meta.rollbacks;
        Ok(meta.step)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    format: u32,
    step: usize,
    seed: u64,
    lr: f64,
    rollbacks: usize,
    objective: String,
}

/// The checkpoints in `dir`, oldest first, as `(step, path)`.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut out: Vec<(usize, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("step-")?.parse::<usize>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}
