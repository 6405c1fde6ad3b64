//! A sweep on this machine: a bounded pool of `ebm train` child processes.
//!
//! At most `-j` runs at a time, each with `max(1, cores / j)` libtorch threads (also `OMP_NUM_THREADS`) so
//! that together they do not oversubscribe the CPU. Every child writes its output to `logs/<run>.log` and
//! runs in its own process group, so a Ctrl-C at the terminal reaches only the sweep, which then sends each
//! running child one SIGTERM: the child finishes its current update, writes a checkpoint and exits with
//! 130, and `ebm sweep --resume SWEEP_DIR --local` continues from there.

use super::{ebm_binary, grid, run_dir, Manifest, RunEntry, RunState};
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// CPU cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// libtorch threads of each of `jobs` concurrent runs on `cores` cores: `max(1, cores / jobs)`.
pub fn threads_per_run(cores: usize, jobs: usize) -> usize {
    (cores / jobs.max(1)).max(1)
}

/// The arguments of `ebm train` for run `r` of the sweep in `dir`: `--resume RUN` when the run folder has its
/// `config.toml` (it was started), else a fresh start from the sweep's config with the run's overrides.
pub fn train_args(dir: &Path, m: &Manifest, r: &RunEntry, threads: usize) -> Vec<String> {
    let run = run_dir(dir, r);
    if run.join("config.toml").is_file() {
        return vec!["train".into(), "--resume".into(), run.display().to_string()];
    }
    let mut a = vec!["train".to_string(), dir.join(&m.config).display().to_string()];
    for o in &r.overrides {
        a.push("--set".into());
        a.push(o.clone());
    }
    a.extend([
        "--out".into(),
        dir.join("runs").display().to_string(),
        "--run-name".into(),
        r.name().to_string(),
        "--threads".into(),
        threads.to_string(),
    ]);
    a
}

struct Running<'a> {
    child: Child,
    run: &'a RunEntry,
    started: Instant,
}

/// Runs the unfinished runs of the sweep in `dir`, `jobs` at a time, printing a line as each ends; then
/// prints the report. On SIGINT/SIGTERM the children checkpoint and the process exits with 130.
///
/// # Errors
/// A child that cannot be started, or runs that failed (after all others ended).
pub fn run(dir: &Path, m: &Manifest, jobs: usize) -> Result<()> {
    let ebm = ebm_binary()?;
    let stop = experiments::common::stop_on_signals()?;
    let threads = threads_per_run(cores(), jobs);
    let total = m.runs.len();
    let mut pending: VecDeque<&RunEntry> =
        m.runs.iter().filter(|r| !RunState::of(&run_dir(dir, r)).finished()).collect();
    let mut done = total - pending.len();
    println!(
        "sweep {}: {total} runs ({} points × {} seeds), {done} already finished; {} at a time, {threads} thread(s) each",
        dir.display(),
        m.points.len(),
        m.seeds.as_ref().map_or(1, Vec::len),
        jobs.min(pending.len().max(1)),
    );
    let mut running: Vec<Running> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut signalled = false;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        while !stopping && running.len() < jobs {
            let Some(r) = pending.pop_front() else { break };
            running.push(Running { child: spawn(&ebm, dir, m, r, threads)?, run: r, started: Instant::now() });
        }
        if running.is_empty() {
            break;
        }
        if stopping && !signalled {
            signalled = true;
            for c in &running {
                terminate(&c.child);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait()? {
                None => i += 1,
                Some(status) => {
                    let c = running.swap_remove(i);
                    let state = RunState::of(&run_dir(dir, c.run));
                    if state.finished() {
                        done += 1;
                    } else if status.code() != Some(130) {
                        failed.push(c.run.name().to_string());
                    }
                    println!("{}", progress_line(done, total, m, c.run, status, &state, c.started.elapsed()));
                }
            }
        }
    }
    if stop.load(Ordering::SeqCst) {
        eprintln!(
            "ebm sweep: interrupted; {} of {total} runs finished, the others checkpointed.\n           continue with: \
             ebm sweep --resume {} --local -j {jobs}",
            done,
            dir.display()
        );
        std::process::exit(130);
    }
    println!();
    crate::report::run(crate::report::ReportArgs { sweep_dir: dir.to_path_buf() })?;
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {total} runs failed ({}); see their logs in {}",
            failed.len(),
            failed.join(", "),
            dir.join("logs").display()
        );
    }
    Ok(())
}

fn spawn(ebm: &Path, dir: &Path, m: &Manifest, r: &RunEntry, threads: usize) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let run = run_dir(dir, r);
    if run.is_dir() && !run.join("config.toml").is_file() {
        // A folder that never got its config holds nothing to resume; `ebm train` would refuse it.
        std::fs::remove_dir_all(&run)
            .with_context(|| format!("cannot remove the empty run folder {}", run.display()))?;
    }
    let log_path = dir.join("logs").join(format!("{}.log", r.name()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    Command::new(ebm)
        .args(train_args(dir, m, r, threads))
        .current_dir(&m.cwd)
        .env("OMP_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {} for run {}", ebm.display(), r.name()))
}

/// Sends SIGTERM to a child (it checkpoints and exits with 130).
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
}

/// The line printed when a run ends, e.g. `[3/8] p001-s0 (lr=1e-3, seed 0) finished in 12.3 s: kl 0.12`.
fn progress_line(
    done: usize,
    total: usize,
    m: &Manifest,
    r: &RunEntry,
    status: ExitStatus,
    state: &RunState,
    took: Duration,
) -> String {
    let point = &m.points[r.point].overrides;
    let what = if point.is_empty() {
        format!("seed {}", r.seed)
    } else {
        format!("{}, seed {}", grid::point_label(point), r.seed)
    };
    let head = format!("[{done}/{total}] {} ({what})", r.name());
    let secs = took.as_secs_f64();
    match state {
        RunState::Finished(s) => {
            let values = s.get("metrics").and_then(|v| v.as_object());
            let mut names: Vec<String> = values.into_iter().flatten().map(|(k, _)| k.clone()).collect();
            crate::report::order_metrics(&mut names);
            let metrics: Vec<String> = names
                .iter()
                .filter_map(|k| {
                    let x = values?.get(k)?.as_f64()?;
                    Some(format!("{k} {}", crate::report::fmt_num(x)))
                })
                .take(4)
                .collect();
            format!("{head} finished in {secs:.1} s: {}", metrics.join(", "))
        }
        _ if status.code() == Some(130) => format!("{head} interrupted after {secs:.1} s, {}", state.describe()),
        _ => format!("{head} FAILED ({status}) after {secs:.1} s, {}; log: logs/{}.log", state.describe(), r.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_split_the_cores_without_going_to_zero() {
        assert_eq!(threads_per_run(8, 2), 4);
        assert_eq!(threads_per_run(8, 3), 2);
        assert_eq!(threads_per_run(2, 4), 1);
        assert_eq!(threads_per_run(2, 0), 2);
    }

    #[test]
    fn a_started_run_resumes_and_a_new_one_starts_fresh() {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("c.toml");
        std::fs::write(&c, "[train]\niters = 10\n").unwrap();
        let m = super::super::plan(&c, &["train.iters=3,4".into()], Some("5"), &[]).unwrap();
        let sweep = t.path().join("s");
        let a = train_args(&sweep, &m, &m.runs[1], 3);
        let want: Vec<String> = [
            "train",
            &sweep.join("config.toml").display().to_string(),
            "--set",
            "train.iters=4",
            "--set",
            "seed=5",
            "--out",
            &sweep.join("runs").display().to_string(),
            "--run-name",
            "p001-s5",
            "--threads",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(a, want);
        let run = sweep.join("runs/p001-s5");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.toml"), "").unwrap();
        assert_eq!(train_args(&sweep, &m, &m.runs[1], 3), ["train", "--resume", &run.display().to_string()]);
    }
}
