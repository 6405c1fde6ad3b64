//! The lock of a run folder (`run.lock`, holding the PID and start time of its process) and the clean-up of
//! temporary files that an interrupted write left behind.

use super::fingerprint::LOCK_FILE;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `run.lock`: created atomically with this process's PID; removed on drop if it is still ours.
#[derive(Debug)]
pub(super) struct RunLock {
    path: PathBuf,
    content: String,
}

/// A lock's holder: its PID and, when recorded, the start time of that process (to tell a reused PID).
fn parse_lock(text: &str) -> Option<(u32, Option<u64>)> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let started = lines.next().and_then(|l| l.trim().strip_prefix("started ")).and_then(|v| v.parse().ok());
    Some((pid, started))
}

/// The start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) may hold spaces and parentheses: count fields after its last ')'
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(19)?.parse().ok()
}

/// True unless process `pid` is known to be gone (or `started` shows its PID was reused). Without `/proc`
/// every holder counts as alive.
fn holder_alive(pid: u32, started: Option<u64>) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return false;
    }
    match (started, process_start(pid)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

impl RunLock {
    /// Creates `<dir>/run.lock`, refusing while a live process holds it and taking over the lock of a
    /// dead one with a notice.
    pub(super) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let pid = std::process::id();
        let content = match process_start(pid) {
            Some(t) => format!("{pid}\nstarted {t}\n"),
            None => format!("{pid}\n"),
        };
        for _ in 0..5 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(content.as_bytes())
                        .and_then(|()| f.sync_all())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(RunLock { path, content });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // a lock being created may still be empty: give its writer a moment
                    let mut holder = None;
                    for _ in 0..20 {
                        holder = std::fs::read_to_string(&path).ok().as_deref().and_then(parse_lock);
                        if holder.is_some() || !path.exists() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    match holder {
                        Some((other, started)) if holder_alive(other, started) => bail!(
                            "run folder {} is in use by process {other} (its {LOCK_FILE}); wait for it to end, or \
                             stop it with kill -INT {other}",
                            dir.display()
                        ),
                        Some((other, _)) => eprintln!(
                            "ebm-rs: {} holds a stale {LOCK_FILE} of process {other}, which no longer runs; taking \
                             it over",
                            dir.display()
                        ),
                        None if !path.exists() => continue,
                        None => eprintln!("ebm-rs: {} holds an unreadable {LOCK_FILE}; taking it over", dir.display()),
                    }
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        bail!("cannot take {}: other processes keep creating it", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|t| t == self.content) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes, anywhere under `dir`, the temporary files and folders that atomic writes leave when they are
/// interrupted (names starting with `.` and holding `.tmp`, e.g. `.config.toml.tmp.123.0`,
/// `.step-00000100.tmp-123`, `.tmp-eval.png`); returns what was removed. Call it only while holding the
/// folder's lock: a live writer's temporary files look the same.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        let ty = e.file_type().with_context(|| format!("cannot stat {}", path.display()))?;
        if name.starts_with('.') && name.contains(".tmp") {
            let r = if ty.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            r.with_context(|| format!("cannot remove the stale temporary {}", path.display()))?;
            removed.push(path);
        } else if ty.is_dir() {
            removed.extend(remove_stale_temporaries(&path)?);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_refused_while_held_taken_over_when_stale_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        let held = RunLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(&lock).unwrap();
        assert_eq!(parse_lock(&text).unwrap().0, std::process::id());
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("is in use by process {}", std::process::id())), "{e}");
        drop(held);
        assert!(!lock.exists(), "released on drop");
        // a PID above the kernel's maximum cannot be running
        std::fs::write(&lock, "4194305\n").unwrap();
        let taken = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(parse_lock(&std::fs::read_to_string(&lock).unwrap()).unwrap().0, std::process::id());
        // our PID with another start time: a reused PID, stale
        drop(taken);
        std::fs::write(&lock, format!("{}\nstarted 1\n", std::process::id())).unwrap();
        if process_start(std::process::id()).is_some_and(|t| t != 1) {
            RunLock::acquire(dir.path()).unwrap();
        }
    }

    #[test]
    fn stale_temporaries_are_found_at_any_depth_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b/checkpoints/.step-00000010.tmp-77")).unwrap();
        std::fs::create_dir_all(d.join("a/b/checkpoints/step-00000005")).unwrap();
        for f in [".config.toml.tmp.77.0", "a/b/.tmp-eval.png", "a/b/metrics.csv", "config.toml", ".hidden"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        let removed = remove_stale_temporaries(d).unwrap();
        assert_eq!(
            removed,
            vec![
                d.join(".config.toml.tmp.77.0"),
                d.join("a/b/.tmp-eval.png"),
                d.join("a/b/checkpoints/.step-00000010.tmp-77")
            ]
        );
        for kept in ["a/b/metrics.csv", "config.toml", ".hidden", "a/b/checkpoints/step-00000005"] {
            assert!(d.join(kept).exists(), "{kept}");
        }
    }
}
