//! Checkpoints: every tensor of the training state in one safetensors file plus `meta.json`, written
//! atomically (temporary folder, fsync, rename), pruned to `keep_checkpoints`, and restored only when
//! everything in them fits the model.
//!
//! A checkpoint cannot lie about itself: `meta.json` holds the SHA-256 of `state.safetensors` and a
//! SHA-256 over its own fields, so a changed state file, an edited `meta.json` and a folder renamed to
//! another step are all refused on load, as are a checkpoint written by another objective or by a run
//! with another fingerprint ([`Trainer::with_fingerprint`]) and one holding non-finite values.

use super::Trainer;
use crate::error::{invalid, io_err, EbmError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Version of the checkpoint layout. 2: `meta.json` holds the checksums and the fingerprint.
const FORMAT: u32 = 2;

/// The hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The refusal of a checkpoint: names its folder, what is wrong and what to do.
fn refuse(dir: &Path, msg: impl std::fmt::Display) -> EbmError {
    EbmError::Data { path: dir.display().to_string(), msg: format!("checkpoint refused: {msg}") }
}

/// What to do with a checkpoint that cannot be trusted.
const TRUST_HINT: &str =
    "resume from another checkpoint (remove this folder and the newest remaining one is used) or start a new run";

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
            // hash what is on disk, i.e. exactly the bytes a later load will read
            let written = std::fs::read(&st_path).map_err(|e| io_err(&st_path, e))?;
            let fields = MetaFields {
                format: FORMAT,
                step: self.step,
                seed: self.seed,
                lr: self.adam.cfg.lr,
                rollbacks: self.rollbacks,
                objective: self.objective.name(),
                fingerprint: self.fingerprint.clone(),
                state_sha256: sha256_hex(&written),
            };
            let meta = CheckpointMeta { meta_sha256: fields.checksum(), fields };
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
    /// (`step-NNNNNNNN`) or from the newest checkpoint in a checkpoints folder.
    ///
    /// The checkpoint is refused, with an error naming its folder, when it was written by an older
    /// ebm-rs (format 1), when `state.safetensors` or `meta.json` changed after they were written (their
    /// SHA-256 checksums), when the folder's name says another step than `meta.json`, when it was written
    /// by another objective (`Objective::name`) or by a run with another fingerprint
    /// ([`Trainer::with_fingerprint`]), when a tensor holds NaN or ±inf, and when it does not fit the
    /// model (another architecture). Nothing is changed when a checkpoint is refused.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<usize> {
        let Verified { meta, tensors, .. } =
            read_verified(path, Purpose::Resume(&self.fingerprint), &self.objective.name())?;
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

/// What a checkpoint is read for: resuming a run (every check, the fingerprint's too) or taking a model's
/// weights under another configuration (the fingerprint is not checked). It picks the wording of the errors.
#[derive(Clone, Copy)]
enum Purpose<'a> {
    /// Resuming the run with this fingerprint ([`Trainer::with_fingerprint`]).
    Resume(&'a Option<String>),
    /// Reading the model's weights.
    Weights,
}

/// A checkpoint read and checked by [`read_verified`].
struct Verified {
    /// Its `step-NNNNNNNN` folder.
    dir: PathBuf,
    /// The fields of its `meta.json`.
    meta: MetaFields,
    /// Every tensor of `state.safetensors`, as saved.
    tensors: Vec<(String, Tensor)>,
}

/// Reads the checkpoint at `path` (a `step-NNNNNNNN` folder, or the newest in a checkpoints folder) for
/// `purpose` and refuses it, with an error naming its folder, when it was written by another format of
/// ebm-rs, when `state.safetensors` or `meta.json` changed after they were written (their SHA-256
/// checksums), when the folder's name says another step than `meta.json`, when it was written by another
/// objective than `objective` or (when resuming) by a run with another fingerprint, or when a tensor holds
/// NaN or ±inf. It only reads: the caller changes nothing until it succeeds.
fn read_verified(path: &Path, purpose: Purpose, objective: &str) -> Result<Verified> {
    let key = match purpose {
        Purpose::Resume(_) => "resume",
        Purpose::Weights => "checkpoint",
    };
    let dir = if path.join("meta.json").exists() {
        path.to_path_buf()
    } else {
        list_checkpoints(path)?
            .pop()
            .map(|(_, p)| p)
            .ok_or_else(|| invalid(key, format!("no checkpoint (step-NNNNNNNN folder) in {}", path.display())))?
    };
    let meta_path = dir.join("meta.json");
    let meta_bytes = std::fs::read(&meta_path).map_err(|e| io_err(&meta_path, e))?;
    let corrupt_meta = |e: serde_json::Error| EbmError::Data {
        path: meta_path.display().to_string(),
        msg: format!("corrupt checkpoint metadata: {e}; {TRUST_HINT}"),
    };
    let version: FormatOnly = serde_json::from_slice(&meta_bytes).map_err(corrupt_meta)?;
    if version.format < FORMAT {
        return Err(refuse(
            &dir,
            format!(
                "it was written by an older ebm-rs (checkpoint format {}; this version reads format {FORMAT}) and \
                 cannot be resumed; start a new run",
                version.format
            ),
        ));
    }
    if version.format > FORMAT {
        return Err(refuse(
            &dir,
            format!(
                "it was written by a newer ebm-rs (checkpoint format {}; this version reads format {FORMAT}); \
                 resume it with that version",
                version.format
            ),
        ));
    }
    let meta: CheckpointMeta = serde_json::from_slice(&meta_bytes).map_err(corrupt_meta)?;
    if meta.fields.checksum() != meta.meta_sha256 {
        return Err(refuse(
            &dir,
            format!(
                "meta.json was edited or damaged after it was written (the checksum of its fields does not \
                 match meta_sha256); {TRUST_HINT}"
            ),
        ));
    }
    let meta = meta.fields;
    if let Some(named) = dir.file_name().and_then(|n| n.to_str()).and_then(step_of_name) {
        if named != meta.step {
            return Err(refuse(
                &dir,
                format!(
                    "the folder is named for step {named} but holds the state of step {}: it was copied or \
                     renamed from another checkpoint (another run's?); remove it, or give it back its own name \
                     step-{:08} if it belongs to this run",
                    meta.step, meta.step
                ),
            ));
        }
    }
    if meta.objective != objective {
        let msg = match purpose {
            Purpose::Resume(_) => format!(
                "it was written by objective '{}' but this run trains with '{objective}'; resume with the \
                 objective that wrote it, or start a new run",
                meta.objective
            ),
            Purpose::Weights => {
                format!("it was written by objective '{}', not '{objective}': another model?", meta.objective)
            }
        };
        return Err(refuse(&dir, msg));
    }
    match purpose {
        Purpose::Resume(fingerprint) if *fingerprint != meta.fingerprint => {
            let show = |f: &Option<String>| f.as_ref().map_or_else(|| "none".to_string(), |f| format!("'{f}'"));
            return Err(refuse(
                &dir,
                format!(
                    "it was written by a run with fingerprint {} but this run's fingerprint is {} (another \
                     configuration); resume with the configuration that wrote it, or start a new run",
                    show(&meta.fingerprint),
                    show(fingerprint)
                ),
            ));
        }
        _ => {}
    }
    let st_path = dir.join("state.safetensors");
    let st_bytes = std::fs::read(&st_path).map_err(|e| io_err(&st_path, e))?;
    let got = sha256_hex(&st_bytes);
    if got != meta.state_sha256 {
        return Err(refuse(
            &dir,
            format!(
                "state.safetensors is corrupt or truncated: its SHA-256 is {got}, not the {} recorded in \
                 meta.json when it was written; {TRUST_HINT}",
                meta.state_sha256
            ),
        ));
    }
    drop(st_bytes);
    let tensors = Tensor::read_safetensors(&st_path).map_err(|e| EbmError::Data {
        path: st_path.display().to_string(),
        msg: format!("corrupt or truncated checkpoint: {e}"),
    })?;
    for (name, t) in &tensors {
        if t.is_floating_point() && !bool::try_from(t.isfinite().all())? {
            return Err(refuse(
                &dir,
                format!(
                    "tensor '{name}' holds non-finite values (NaN or inf): the training state had diverged \
                     when it was saved; {TRUST_HINT}"
                ),
            ));
        }
    }
    Ok(Verified { dir, meta, tensors })
}

/// Loads the model weights of a checkpoint (a `step-NNNNNNNN` folder, or the newest in a checkpoints folder)
/// into `vs`, to evaluate a trained model without its trainer: the EMA weights when the checkpoint has them
/// (they are the model a finished run evaluates), else the raw ones. The checkpoint passes the checks of
/// [`Trainer::load_checkpoint`] (format, checksums, folder name, written by `objective` (`Objective::name`),
/// finite tensors) but the fingerprint's (the point is to read it under another configuration), and every
/// variable of `vs` must be in it with its shape.
/// Returns the checkpoint's step; `vs` is unchanged on error.
pub fn load_model_weights(vs: &tch::nn::VarStore, path: &Path, objective: &str) -> Result<usize> {
    let Verified { dir, meta, tensors } = read_verified(path, Purpose::Weights, objective)?;
    let state: HashMap<String, Tensor> = tensors.into_iter().collect();
    let vars = vs.variables();
    let mut pairs = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        let src =
            state.get(&format!("ema.{name}")).or_else(|| state.get(&format!("model.{name}"))).ok_or_else(|| {
                refuse(&dir, format!("it has no tensor for model variable '{name}': another architecture?"))
            })?;
        if src.size() != var.size() {
            return Err(refuse(
                &dir,
                format!("variable '{name}' has shape {:?} there but {:?} in the model", src.size(), var.size()),
            ));
        }
        pairs.push((var.shallow_clone(), src));
    }
    tch::no_grad(|| {
        for (mut var, src) in pairs {
            var.copy_(&src.to_device(var.device()).to_kind(var.kind()));
        }
    });
    Ok(meta.step)
}

/// Just the format of a `meta.json`, read first so that an older layout gets its own message.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// The fields of `meta.json` that its checksum covers.
#[derive(Debug, Serialize, Deserialize)]
struct MetaFields {
    format: u32,
    step: usize,
    seed: u64,
    lr: f64,
    rollbacks: usize,
    objective: String,
    fingerprint: Option<String>,
    state_sha256: String,
}

impl MetaFields {
    /// SHA-256 of the compact JSON of the fields (serde_json writes `f64` in shortest round-trip form and,
    /// with its `float_roundtrip` feature, parses it back exactly, so the JSON of the parsed fields is the
    /// JSON that was hashed when writing).
    fn checksum(&self) -> String {
        sha256_hex(&serde_json::to_vec(self).expect("meta serialises"))
    }
}

/// `meta.json`: the fields and their checksum.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    #[serde(flatten)]
    fields: MetaFields,
    meta_sha256: String,
}

/// The step of a checkpoint folder's name `step-NNNNNNNN`.
fn step_of_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The checkpoints in `dir`, oldest first, as `(step, path)`.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut out: Vec<(usize, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((step_of_name(&name)?, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Removes the temporary folders `.step-NNNNNNNN.tmp-PID` that a save interrupted by a crash left in `dir`,
/// returning their names. A folder whose PID is a live process other than this one is kept: that process
/// may be saving right now.
pub(super) fn remove_stale_temporaries(dir: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some((stem, pid)) = name.strip_prefix('.').and_then(|n| n.split_once(".tmp-")) else { continue };
        if step_of_name(stem).is_none() {
            continue;
        }
        let live_elsewhere = pid
            .parse::<u32>()
            .is_ok_and(|pid| pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists());
        if live_elsewhere {
            continue;
        }
        let path = entry.path();
        let res = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        res.map_err(|e| io_err(&path, e))?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}
