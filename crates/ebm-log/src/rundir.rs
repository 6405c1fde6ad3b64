//! Run folders: `<root>/<experiment>/<run-name>/` with config, metrics, figures, checkpoints.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{LogError, Result};
use crate::fsutil::create_dir_all;

/// The folder of one training run:
///
/// ```text
/// <root>/<exp>/<run-name>/
///     config.toml
///     metrics.csv
///     events.out.tfevents.*     (TensorBoard; the run folder is the TensorBoard run)
///     figures/*.png
///     checkpoints/
/// ```
///
/// Pointing TensorBoard at `<root>` (or `<root>/<exp>`) lists every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
    exp: String,
    name: String,
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.chars().any(|c| c == '/' || c == '\\' || c == '\0');
    if bad {
        return Err(LogError::invalid(format!(
            "{what} '{name}' must be a non-empty single folder name (no '/', '\\', '.' or '..')"
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(LogError::invalid(format!(
            "{what} {name:?} holds the control character {c:?}: a folder name must be printable (no newline, tab, …)"
        )));
    }
    Ok(())
}

/// Checks that `name` can be a run folder's name: non-empty, one folder (no `/`, `\`, `.` or `..`) and no
/// control character (newline, tab, …). [`RunDir::create`] checks the same; call this to refuse a bad name
/// before any other work.
///
/// # Errors
/// [`LogError::InvalidInput`] naming the problem.
pub fn check_run_name(name: &str) -> Result<()> {
    check_name("run name", name)
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DDTHH-MM-SS` (UTC) for `secs` since the Unix epoch: sortable and file-name safe.
pub fn timestamp_name(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!("{y:04}-{mo:02}-{d:02}T{:02}-{:02}-{:02}", rem / 3600, (rem / 60) % 60, rem % 60)
}

impl RunDir {
    /// Creates `<root>/<exp>/<run-name>/` with `figures/` and `checkpoints/` inside.
    ///
    /// Without `run_name` the name is the current UTC time, e.g. `2026-11-24T19-56-00`, with
    /// `-2`, `-3`, ... appended if that folder already exists. An explicit `run_name` that
    /// already exists is an error ([`LogError::RunExists`]); use [`RunDir::open`] to reuse a
    /// folder. Errors name the folder that could not be created.
    pub fn create(root: &Path, exp: &str, run_name: Option<&str>) -> Result<RunDir> {
        check_name("experiment name", exp)?;
        if let Some(n) = run_name {
            check_name("run name", n)?;
        }
        let exp_dir = root.join(exp);
        create_dir_all(&exp_dir)?;
        let base = match run_name {
            Some(n) => n.to_string(),
            None => {
                let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                timestamp_name(secs)
            }
        };
        let mut attempt = 1u32;
        let (name, path) = loop {
            let name = if attempt == 1 { base.clone() } else { format!("{base}-{attempt}") };
            let path = exp_dir.join(&name);
            match std::fs::create_dir(&path) {
                Ok(()) => break (name, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if run_name.is_some() {
                        return Err(LogError::RunExists(path));
                    }
                    if attempt >= 1000 {
                        return Err(LogError::io("create folder", &path, e));
                    }
                    attempt += 1;
                }
                Err(e) => return Err(LogError::io("create folder", &path, e)),
            }
        };
        let run = RunDir { path, exp: exp.to_string(), name };
        create_dir_all(&run.figures_dir())?;
        create_dir_all(&run.checkpoints_dir())?;
        Ok(run)
    }

    /// Opens an existing run folder (e.g. to evaluate or resume), creating `figures/` and
    /// `checkpoints/` if missing. The experiment name is the parent folder's name.
    pub fn open(path: &Path) -> Result<RunDir> {
        if !path.is_dir() {
            return Err(LogError::io(
                "open run folder",
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a folder"),
            ));
        }
        let name_of = |p: Option<&Path>| {
            p.and_then(|p| p.file_name()).map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
        };
        let run = RunDir { path: path.to_path_buf(), exp: name_of(path.parent()), name: name_of(Some(path)) };
        create_dir_all(&run.figures_dir())?;
        create_dir_all(&run.checkpoints_dir())?;
        Ok(run)
    }

    /// The run folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The experiment name.
    pub fn exp(&self) -> &str {
        &self.exp
    }

    /// The run name (the folder's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<run>/config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.toml")
    }

    /// `<run>/metrics.csv`.
    pub fn metrics_csv_path(&self) -> PathBuf {
        self.path.join("metrics.csv")
    }

    /// The folder TensorBoard event files go to: the run folder itself.
    pub fn tensorboard_dir(&self) -> &Path {
        &self.path
    }

    /// `<run>/figures/`.
    pub fn figures_dir(&self) -> PathBuf {
        self.path.join("figures")
    }

    /// `<run>/figures/<name>`, with `.png` appended when `name` has no extension.
    pub fn figure_path(&self, name: &str) -> PathBuf {
        let p = self.figures_dir().join(name);
        if p.extension().is_none() {
            p.with_extension("png")
        } else {
            p
        }
    }

    /// `<run>/checkpoints/`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// `<run>/checkpoints/<name>`.
    pub fn checkpoint_path(&self, name: &str) -> PathBuf {
        self.checkpoints_dir().join(name)
    }

    /// Writes `bytes` atomically to `rel` inside the run folder (an absolute `rel` is used as
    /// is) and returns the full path. See [`crate::write_atomic`].
    pub fn write_atomic(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.path.join(rel);
        crate::fsutil::write_atomic(&p, bytes)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(timestamp_name(0), "1970-01-01T00-00-00");
        // 2000-02-29 12:34:56 UTC = 951827696 (leap day of a century leap year).
        assert_eq!(timestamp_name(951_827_696), "2000-02-29T12-34-56");
        // 2026-11-24 19:56:00 UTC.
        assert_eq!(timestamp_name(1_795_550_160), "2026-11-24T19-56-00");
        // 2100-03-01 00:00:00 UTC (2100 is not a leap year).
        assert_eq!(timestamp_name(4_107_542_400), "2100-03-01T00-00-00");
    }

    #[test]
    fn creates_layout_and_suffixes_default_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunDir::create(dir.path(), "exp1", None).unwrap();
        assert!(a.figures_dir().is_dir() && a.checkpoints_dir().is_dir());
        assert_eq!(a.path().parent().unwrap(), dir.path().join("exp1"));
        assert_eq!(a.config_path(), a.path().join("config.toml"));
        assert_eq!(a.metrics_csv_path(), a.path().join("metrics.csv"));
        assert_eq!(a.figure_path("samples"), a.path().join("figures/samples.png"));
        assert_eq!(a.checkpoint_path("model.ot"), a.path().join("checkpoints/model.ot"));
        let b = RunDir::create(dir.path(), "exp1", Some(a.name()));
        assert!(matches!(b, Err(LogError::RunExists(_))));
        let named = RunDir::create(dir.path(), "exp1", Some("cd-lr0.1")).unwrap();
        assert_eq!(named.name(), "cd-lr0.1");
        assert_eq!(named.exp(), "exp1");
        let p = named.write_atomic("config.toml", b"lr = 0.1\n").unwrap();
        assert_eq!(std::fs::read_to_string(p).unwrap(), "lr = 0.1\n");
        let reopened = RunDir::open(named.path()).unwrap();
        assert_eq!(reopened, named);
    }

    #[test]
    fn default_name_gets_suffix_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        // Pre-create the names of this second and the next so the test cannot race the clock.
        for s in [secs, secs + 1] {
            std::fs::create_dir_all(dir.path().join("e").join(timestamp_name(s))).unwrap();
        }
        let r = RunDir::create(dir.path(), "e", None).unwrap();
        assert!(r.name().ends_with("-2"), "{}", r.name());
    }

    #[test]
    fn bad_names_and_unwritable_root_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(RunDir::create(dir.path(), "a/b", None).is_err());
        assert!(RunDir::create(dir.path(), "e", Some("..")).is_err());
        for bad in ["a\nb", "tab\there", "bell\u{7}", "\r"] {
            let e = RunDir::create(dir.path(), "e", Some(bad)).unwrap_err().to_string();
            assert!(e.contains("control character"), "{e}");
            assert!(check_run_name(bad).is_err());
            assert!(!dir.path().join("e").join(bad).exists());
        }
        check_run_name("cd-lr0.1 (second try)").unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = RunDir::create(&file, "exp", Some("r")).unwrap_err().to_string();
        assert!(err.contains(&file.join("exp").display().to_string()), "{err}");
    }
}
