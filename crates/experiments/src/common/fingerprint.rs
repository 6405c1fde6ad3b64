//! The fingerprint of a run folder (`fingerprint.json`): a random run id, the ebm-rs version, the resolved
//! config and the SHA-256 of every data file, written when the run starts and checked by `--resume`, so that a
//! run folder cannot silently stop describing its run.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file in a run folder that records what the run started from (see [`Fingerprint`]).
pub const FINGERPRINT_FILE: &str = "fingerprint.json";

/// The file in a run folder that holds the PID of the process working in it.
pub const LOCK_FILE: &str = "run.lock";

/// What a run started from, written to `fingerprint.json` when its folder is created and checked on
/// `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// A random id of this run (32 hex digits).
    pub run_id: String,
    /// The ebm-rs version that created the folder.
    pub ebm_rs_version: String,
    /// SHA-256 of `config`.
    pub config_sha256: String,
    /// The resolved config as TOML text (the same as the `config.toml` written beside it).
    pub config: String,
    /// Every data file the run reads.
    pub data_files: Vec<DataFileHash>,
}

/// One data file of a run: where it is, its size and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFileHash {
    /// The path as the run was given it (relative paths are relative to the working folder).
    pub path: String,
    /// The absolute path when the run started.
    pub absolute: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

impl Fingerprint {
    /// A fingerprint with a fresh random run id for a run of `config_toml` reading `data_files`.
    pub fn new(config_toml: &str, data_files: Vec<DataFileHash>) -> Self {
        Fingerprint {
            run_id: random_run_id(),
            ebm_rs_version: env!("CARGO_PKG_VERSION").to_string(),
            config_sha256: hex(&Sha256::digest(config_toml.as_bytes())),
            config: config_toml.to_string(),
            data_files,
        }
    }

    /// The tag of this run's checkpoints ([`Trainer::with_fingerprint`]): the run id and the config's hash.
    pub fn checkpoint_tag(&self) -> String {
        format!("run {} config {}", self.run_id, &self.config_sha256[..self.config_sha256.len().min(16)])
    }

    /// Reads `<run>/fingerprint.json`; `None` when the folder has none (made by an older ebm-rs).
    pub fn read(run: &Path) -> Result<Option<Self>> {
        let p = run.join(FINGERPRINT_FILE);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| format!("corrupt {}", p.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// An error naming every key of `<run>/config.toml` that differs from the config the run started with,
    /// with its old → new value.
    pub fn check_config(&self, run: &Path) -> Result<()> {
        let p = run.join("config.toml");
        let now = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let changes = config_changes(&self.config, &now)
            .with_context(|| format!("{} is not a valid config file", p.display()))?;
        if changes.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = changes.iter().map(ConfigChange::to_string).collect();
        bail!(
            "config.toml of {} was edited after the run started: {}; a run folder must keep describing its run: \
             restore the old value(s) to resume it, or start a new run with --config {} --run-name <new name>",
            run.display(),
            list.join(", "),
            p.display()
        )
    }

    /// An error naming the first data file that is missing or whose content changed since the run started.
    /// `now` are the data files the resumed run reads, hashed; recorded files it does not name are
    /// checked at the path recorded.
    pub fn check_data(&self, run: &Path, now: &[DataFileHash]) -> Result<()> {
        let hint = "a run must keep reading the data it started with: restore the file to resume it, or start a \
                    new run with --run-name <new name>";
        for old in &self.data_files {
            let cur = match now.iter().find(|c| c.path == old.path) {
                Some(c) => c.clone(),
                None => match hash_file(&old.absolute) {
                    Ok((bytes, sha256)) => DataFileHash { sha256, bytes, ..old.clone() },
                    Err(_) => bail!(
                        "data file {} of {} is missing (it had {} bytes, sha256 {}); {hint}",
                        old.path,
                        run.display(),
                        old.bytes,
                        short(&old.sha256)
                    ),
                },
            };
            if cur.sha256 != old.sha256 || cur.bytes != old.bytes {
                bail!(
                    "data file {} of {} changed after the run started (sha256 {} → {}, {} → {} bytes); {hint}",
                    old.path,
                    run.display(),
                    short(&old.sha256),
                    short(&cur.sha256),
                    old.bytes,
                    cur.bytes
                );
            }
        }
        for c in now.iter().filter(|c| !self.data_files.iter().any(|o| o.path == c.path)) {
            eprintln!(
                "ebm-rs: warning: data file {} was not recorded when {} started; it cannot be checked",
                c.path,
                run.display()
            );
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short(sha: &str) -> String {
    format!("{}…", &sha[..sha.len().min(12)])
}

/// 128 random bits from the OS (`/dev/urandom`), else a hash of the time, the PID and a stack address.
fn random_run_id() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return hex(&b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let local = 0u8;
    let seed = format!("{} {} {:p}", t.as_nanos(), std::process::id(), &local);
    hex(&Sha256::digest(seed.as_bytes())[..16])
}

/// Size and SHA-256 (hex) of a file, read in chunks.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex(&h.finalize())))
}

/// Size and SHA-256 of every file in `files`; a folder counts as every file under it (sorted by path).
pub fn hash_data_files(files: &[PathBuf]) -> Result<Vec<DataFileHash>> {
    fn walk(given: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let meta = std::fs::metadata(given).with_context(|| format!("cannot read data file {}", given.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(given)
                .with_context(|| format!("cannot list data folder {}", given.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("cannot list data folder {}", given.display()))?;
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
        } else {
            out.push(given.to_path_buf());
        }
        Ok(())
    }
    let mut paths = Vec::new();
    for f in files {
        walk(f, &mut paths)?;
    }
    paths
        .into_iter()
        .map(|p| {
            let (bytes, sha256) = hash_file(&p).with_context(|| format!("cannot read data file {}", p.display()))?;
            let absolute = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            Ok(DataFileHash { path: p.display().to_string(), absolute, bytes, sha256 })
        })
        .collect()
}

/// One key whose value differs between two configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The dotted key, e.g. `cd.k`.
    pub key: String,
    /// Its value before, as TOML (`None`: absent).
    pub old: Option<String>,
    /// Its value now, as TOML (`None`: absent).
    pub new: Option<String>,
}

impl std::fmt::Display for ConfigChange {
    /// `cd.k 20 → 7` (an absent side reads `(absent)`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        write!(f, "{} {} → {}", self.key, show(&self.old), show(&self.new))
    }
}

/// The keys whose values differ between two configs given as TOML text, sorted by key. Formatting and
/// comments do not count.
pub fn config_changes(old: &str, new: &str) -> Result<Vec<ConfigChange>> {
    fn flatten(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(inner) => flatten(&key, inner, out),
                v => {
                    out.insert(key, v.to_string());
                }
            }
        }
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &toml::from_str(old).context("the config the run started with")?, &mut a);
    flatten("", &toml::from_str(new)?, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| ConfigChange { key: k.clone(), old: a.get(k).cloned(), new: b.get(k).cloned() })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_changes_name_each_changed_key_with_old_and_new_values() {
        let old = "seed = 0\n[cd]\nk = 20\n[train.optim]\nlr = 0.001\n";
        let new = "# a comment\nseed = 0\n[cd]\nk = 7\nextra = true\n[train.optim]\nlr = 0.01\n";
        let c = config_changes(old, new).unwrap();
        let shown: Vec<String> = c.iter().map(ConfigChange::to_string).collect();
        assert_eq!(shown, ["cd.extra (absent) → true", "cd.k 20 → 7", "train.optim.lr 0.001 → 0.01"]);
        assert_eq!(c[1], ConfigChange { key: "cd.k".into(), old: Some("20".into()), new: Some("7".into()) });
        assert!(config_changes(old, "seed = 0 # same\n\n[cd]\nk = 20\n[train.optim]\nlr = 1e-3").unwrap().is_empty());
    }

    #[test]
    fn data_files_are_hashed_folders_included_and_a_change_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("pts.csv");
        std::fs::write(&csv, "x,y\n1,2\n").unwrap();
        std::fs::create_dir_all(dir.path().join("imgs")).unwrap();
        std::fs::write(dir.path().join("imgs/b.png"), "b").unwrap();
        std::fs::write(dir.path().join("imgs/a.png"), "a").unwrap();
        let files = vec![csv.clone(), dir.path().join("imgs")];
        let h = hash_data_files(&files).unwrap();
        assert_eq!(h.len(), 3);
        assert!(h[1].path.ends_with("imgs/a.png") && h[2].path.ends_with("imgs/b.png"));
        assert_eq!(h[0].sha256, hex(&Sha256::digest(b"x,y\n1,2\n")));
        let fp = Fingerprint::new("k = 1\n", h.clone());
        assert_eq!(fp.run_id.len(), 32);
        assert_ne!(fp.run_id, Fingerprint::new("k = 1\n", vec![]).run_id, "run ids are random");
        fp.check_data(dir.path(), &h).unwrap();
        std::fs::write(&csv, "x,y\n1,3\n").unwrap();
        let e = fp.check_data(dir.path(), &hash_data_files(&files).unwrap()).unwrap_err().to_string();
        assert!(e.contains(&format!("data file {} ", csv.display())) && e.contains("changed"), "{e}");
        // not passed again: checked at the recorded path
        let e = fp.check_data(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("pts.csv"), "{e}");
        std::fs::remove_file(&csv).unwrap();
        let e = fp.check_data(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("is missing"), "{e}");
        assert!(hash_data_files(&[dir.path().join("nope.csv")]).unwrap_err().to_string().contains("nope.csv"));
    }
}
