//! Experiment configs: TOML files with serde defaults, overridden from the command line, saved into the
//! run folder before step 0.

use anyhow::{bail, Context, Result};
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
