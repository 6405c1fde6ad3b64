//! Experiment configs: TOML files with serde defaults, overridden from the command line, saved into the
//! run folder before step 0.

use anyhow::{bail, Context, Result};
use ebm_core::{EbmError, ObjectiveConfig};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// Loads a config of type `T` from `path` (when it exists; otherwise starts from `T::default()`), then
/// applies `overrides` of the form `dotted.key=value` (the value is parsed as TOML, or taken as a string
/// when that fails), then deserialises. Unknown keys and wrong types are errors naming the key.
pub fn load<T: DeserializeOwned + Serialize + Default>(path: Option<&Path>, overrides: &[String]) -> Result<T> {
    let mut table: toml::Table = match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {} is not valid TOML", p.display()))?
        }
        None => toml::Table::try_from(T::default()).context("serialising the default config")?,
    };
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    let what = path.map(|p| p.display().to_string()).unwrap_or_else(|| "the built-in defaults".into());
    T::deserialize(toml::Value::Table(table)).map_err(|e| anyhow::anyhow!("bad config ({what} with overrides): {e}"))
}

/// Loads a config in the order a user expects: the file (or the built-in defaults when `path` is `None`),
/// then `prepare` (e.g. `--quick`'s caps), then `overrides` (`--set key=value`), so that what the user set
/// explicitly always wins over a preset. Errors as for [`load`].
pub fn load_with<T: DeserializeOwned + Serialize + Default>(
    path: Option<&Path>,
    prepare: impl FnOnce(&mut T),
    overrides: &[String],
) -> Result<T> {
    let mut cfg: T = load(path, &[])?;
    prepare(&mut cfg);
    if overrides.is_empty() {
        return Ok(cfg);
    }
    let mut table = toml::Table::try_from(&cfg).context("serialising the config")?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    let what = path.map(|p| p.display().to_string()).unwrap_or_else(|| "the built-in defaults".into());
    T::deserialize(toml::Value::Table(table)).map_err(|e| anyhow::anyhow!("bad config ({what} with overrides): {e}"))
}

/// Sets `a.b.c = value` in a TOML table; `value` is parsed as a TOML value (e.g. `1e-4`, `[1, 2]`,
/// `"x"`, `true`) or kept as a bare string.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("override '{assignment}' must look like key=value (e.g. train.optim.lr=1e-4)");
    };
    let key = key.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("override key '{key}' has an empty part");
    }
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        cur = entry.as_table_mut().with_context(|| format!("override '{key}': '{p}' is not a table"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Finds the shipped config `experiments/<file>`: relative to the working directory (where `just run`
/// starts), else in the repository this crate was built from.
pub fn find_config(file: &str) -> Option<std::path::PathBuf> {
    let rel = Path::new("experiments").join(file);
    if rel.exists() {
        return Some(rel);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    repo.exists().then_some(repo)
}

/// The config file of a run: the run folder's `config.toml` when resuming (an error when the folder has none),
/// else the file given with `--config`, else the experiment's shipped default.
pub fn config_path(
    resume: Option<&Path>,
    given: Option<&Path>,
    default: fn() -> Option<std::path::PathBuf>,
) -> Result<Option<std::path::PathBuf>> {
    match resume {
        Some(dir) => {
            let p = dir.join("config.toml");
            if !p.is_file() {
                bail!("--resume {}: not a run folder (it has no config.toml)", dir.display());
            }
            Ok(Some(p))
        }
        None => Ok(given.map(Path::to_path_buf).or_else(default)),
    }
}

/// Renames the parameter of a library error ([`EbmError::InvalidArg`], whose message reads `invalid value
/// for <name>: …`) from the library's own path to the config key the user wrote. `map` holds
/// `(library prefix, config prefix)` pairs, tried in order; a prefix matches the whole name or its leading
/// dotted parts, e.g. `("optim", "train.optim")` turns `optim.lr` into `train.optim.lr`. Other errors pass
/// through unchanged.
pub fn user_keys<T>(r: ebm_core::Result<T>, map: &[(&str, &str)]) -> Result<T> {
    r.map_err(|e| match e {
        EbmError::InvalidArg { name, msg } => {
            anyhow::Error::new(EbmError::InvalidArg { name: user_key(&name, map), msg })
        }
        other => anyhow::Error::new(other),
    })
}

/// The config key for the library parameter `name` (see [`user_keys`]).
pub fn user_key(name: &str, map: &[(&str, &str)]) -> String {
    for (from, to) in map {
        if name == *from {
            return to.to_string();
        }
        if let Some(rest) = name.strip_prefix(from) {
            if rest.starts_with('.') {
                return format!("{to}{rest}");
            }
        }
    }
    name.to_string()
}

/// Checks an objective's settings without building it (no model and no memory needed): CD's `k`, `alpha`,
/// sampler and chain starts, score matching's probes and σ, the noise levels of noise-conditional DSM, and
/// the settings of energy discrepancy, NCE, diffusion recovery likelihood and JEM.
pub fn validate_objective(o: &ObjectiveConfig) -> ebm_core::Result<()> {
    match o {
        ObjectiveConfig::Contrastive(c) => c.validate(),
        ObjectiveConfig::ScoreMatching { method } => method.validate(),
        ObjectiveConfig::NoiseDsm(c) => c.validate(),
        ObjectiveConfig::EnergyDiscrepancy(c) => c.validate(),
        ObjectiveConfig::Nce(c) => c.validate(),
        ObjectiveConfig::Drl(c) => c.validate(),
        ObjectiveConfig::Jem(c) => c.validate(),
    }
}

/// One part of a run's memory estimate: what takes the memory, and the config key that sets its size.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPart {
    /// The config key (with its value) that makes this part large, e.g. `model.hidden = [128, 128]`.
    pub key: String,
    /// What it is, e.g. `17 000 parameters with their gradients and Adam's moments`.
    pub what: String,
    /// Its size in bytes.
    pub bytes: f64,
}

impl MemoryPart {
    /// A part of `bytes` bytes.
    pub fn new(key: impl Into<String>, what: impl Into<String>, bytes: f64) -> Self {
        MemoryPart { key: key.into(), what: what.into(), bytes }
    }
}

/// The memory this machine has available (`MemAvailable` of `/proc/meminfo`), in bytes; `None` when it
/// cannot be read (not Linux, no `/proc`).
pub fn available_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Refuses a run whose estimated memory ([`MemoryPart`]s, summed) exceeds the available memory
/// ([`available_memory`]); does nothing when that cannot be read. The error names the largest part's key and
/// the estimate in GB. Call it before building anything.
pub fn check_memory(parts: &[MemoryPart]) -> Result<()> {
    match available_memory() {
        Some(avail) => check_memory_within(parts, avail),
        None => Ok(()),
    }
}

/// [`check_memory`] against `available` bytes.
pub fn check_memory_within(parts: &[MemoryPart], available: f64) -> Result<()> {
    let total: f64 = parts.iter().map(|p| p.bytes).sum();
    if total <= available {
        return Ok(());
    }
    let big = parts.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes)).expect("a total above 0 has parts");
    let gb = |b: f64| {
        let g = b / 1e9;
        if g >= 1e5 {
            format!("{g:.1e} GB")
        } else {
            format!("{g:.1} GB")
        }
    };
    bail!(
        "{} needs too much memory: about {} for {}, {} in all, but this machine has {} available \
         (MemAvailable in /proc/meminfo); make it smaller",
        big.key,
        gb(big.bytes),
        big.what,
        gb(total),
        gb(available)
    )
}

/// Bytes of an `f32` tensor with `n` elements.
pub fn f32_bytes(n: f64) -> f64 {
    4.0 * n
}

/// Serialises a config to TOML text (for `config.toml` in the run folder).
pub fn to_toml<T: Serialize>(cfg: &T) -> Result<String> {
    toml::to_string_pretty(cfg).context("serialising the config to TOML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        lr: f64,
        names: Vec<String>,
    }
    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        iters: usize,
        inner: Inner,
    }

    #[test]
    fn overrides_apply_to_nested_keys() {
        let c: Cfg =
            load(None, &["iters=5".into(), "inner.lr=1e-4".into(), "inner.names=[\"a\", \"b\"]".into()]).unwrap();
        assert_eq!(c, Cfg { iters: 5, inner: Inner { lr: 1e-4, names: vec!["a".into(), "b".into()] } });
    }

    #[test]
    fn unknown_keys_wrong_types_and_missing_files_are_named() {
        let e = load::<Cfg>(None, &["inner.lrr=1".into()]).unwrap_err().to_string();
        assert!(e.contains("lrr"), "{e}");
        let e = load::<Cfg>(None, &["iters=\"many\"".into()]).unwrap_err().to_string();
        assert!(e.contains("iters") || e.contains("invalid type"), "{e}");
        let e = load::<Cfg>(Some(Path::new("/nonexistent/x.toml")), &[]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
        assert!(load::<Cfg>(None, &["novalue".into()]).unwrap_err().to_string().contains("key=value"));
    }

    #[test]
    fn a_preset_comes_before_the_overrides() {
        let cap = |c: &mut Cfg| c.iters = c.iters.min(60);
        let c: Cfg = load_with(None, |c: &mut Cfg| c.iters = 1000, &[]).unwrap();
        assert_eq!(c.iters, 1000);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "iters = 500\n[inner]\nlr = 0.5\n").unwrap();
        let c: Cfg = load_with(Some(file.path()), cap, &[]).unwrap();
        assert_eq!((c.iters, c.inner.lr), (60, 0.5), "the preset caps the file's value");
        let c: Cfg = load_with(Some(file.path()), cap, &["iters=300".into()]).unwrap();
        assert_eq!((c.iters, c.inner.lr), (300, 0.5), "an explicit --set wins over the preset");
        let e = load_with::<Cfg>(Some(file.path()), cap, &["inner.lrr=1".into()]).unwrap_err().to_string();
        assert!(e.contains("lrr"), "{e}");
    }

    #[test]
    fn library_names_become_config_keys() {
        let map = [("optim", "train.optim"), ("contrastive.k", "cd.k"), ("langevin", "cd.langevin")];
        let e = user_keys::<()>(Err(ebm_core::error::invalid("optim.lr", "must be > 0")), &map).unwrap_err();
        assert_eq!(e.to_string(), "invalid value for train.optim.lr: must be > 0");
        assert_eq!(user_key("contrastive.k", &map), "cd.k");
        assert_eq!(user_key("langevin.step_size", &map), "cd.langevin.step_size");
        assert_eq!(user_key("optimizer", &map), "optimizer", "whole parts only");
        assert_eq!(user_key("mlp.in_dim", &map), "mlp.in_dim");
        let e = user_keys::<()>(Err(EbmError::NonFinite("x".into())), &map).unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
    }

    #[test]
    fn memory_beyond_what_is_available_is_refused_naming_the_key() {
        let parts = [
            MemoryPart::new("model.hidden = [100000, 100000]", "1.0e10 parameters", 1.6e11),
            MemoryPart::new("train.batch_size = 256", "activations", 1e6),
        ];
        check_memory_within(&parts, 2e11).unwrap();
        let e = check_memory_within(&parts, 8e9).unwrap_err().to_string();
        assert!(e.starts_with("model.hidden = [100000, 100000] needs too much memory: about 160.0 GB"), "{e}");
        assert!(e.contains("8.0 GB available"), "{e}");
        let avail = available_memory();
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(avail.is_some_and(|a| a > 0.0), "{avail:?}");
        }
    }

    #[test]
    fn resume_reads_the_run_folders_config_and_a_folder_without_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let none = || None;
        let e = config_path(Some(dir.path()), None, none).unwrap_err().to_string();
        assert!(e.contains("not a run folder") && e.contains("config.toml"), "{e}");
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        assert_eq!(config_path(Some(dir.path()), None, none).unwrap(), Some(dir.path().join("config.toml")));
        let given = Path::new("x.toml");
        assert_eq!(config_path(None, Some(given), none).unwrap(), Some(given.to_path_buf()));
        assert_eq!(config_path(None, None, none).unwrap(), None);
    }
}
