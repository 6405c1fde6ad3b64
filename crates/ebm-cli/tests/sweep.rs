//! `ebm sweep` and `ebm report` end to end: a local sweep (and its Ctrl-C and resume), a Slurm sweep on a
//! real cluster with its collector job, a Slurm task killed mid-run and resubmitted, and the error lines.
//!
//! The Slurm tests need a cluster (`scripts/slurm-local.sh start` brings one up on this machine and prints
//! the `SLURM_CONF` to export). Without one they print why they are skipped and pass, unless
//! `EBM_REQUIRE_SLURM=1` (as in CI), when they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const EBM: &str = env!("CARGO_BIN_EXE_ebm");

/// A config that trains in a few seconds on one thread.
fn config(dir: &Path, iters: usize, checkpoint_every: usize) -> PathBuf {
    let p = dir.join("tiny.toml");
    let text = format!(
        "seed = 0\nthreads = 1\ndevice = \"cpu\"\n\
         [data]\nsource = \"8gaussians\"\nn_train = 512\nn_test = 256\n\
         [model]\nkind = \"mlp\"\nhidden = [16]\n\
         [objective]\nkind = \"contrastive\"\nk = 5\n\
         [train]\niters = {iters}\nbatch_size = 64\ncheckpoint_every = {checkpoint_every}\n\
         [sampling]\nsteps = 20\nn = 128\n\
         [eval]\ngrid_n = 40\nhistogram_every = 0\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn ebm(args: &[&str], cwd: &Path) -> Output {
    Command::new(EBM).args(args).current_dir(cwd).env("OMP_NUM_THREADS", "1").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The rows of the markdown table in `report.md` (header and rule excluded).
fn report_rows(sweep: &Path) -> Vec<String> {
    let md = std::fs::read_to_string(sweep.join("report.md")).unwrap();
    md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| # ")).map(str::to_string).collect()
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

fn finished_runs(sweep: &Path) -> usize {
    std::fs::read_dir(sweep.join("runs"))
        .unwrap()
        .filter(|e| {
            let p = e.as_ref().unwrap().path().join("summary.json");
            std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"finished\""))
        })
        .count()
}

/// Every row has `2/2` finished seeds and a `mean ± sd` cell for each metric.
fn assert_four_rows_with_mean_and_sd(sweep: &Path) {
    let rows = report_rows(sweep);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    for r in &rows {
        assert!(r.contains("| 2/2 |"), "{r}");
        assert!(r.matches(" ± ").count() >= 2, "{r}");
    }
    let csv = std::fs::read_to_string(sweep.join("report.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("_sd"), "{csv}");
    assert_eq!(csv.lines().count(), 5, "{csv}");
}

const GRID: [&str; 4] = ["--grid", "train.optim.lr=1e-3,3e-3", "--grid", "model.hidden=[16],[8]"];

#[test]
fn local_sweep_runs_every_point_and_seed_and_reports_them() {
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), 60, 0);
    let cfg = cfg.to_str().unwrap();
    let mut args = vec!["sweep", cfg];
    args.extend(GRID);
    args.extend(["--seeds", "0..2", "--local", "-j", "2", "--out", "sw"]);
    let o = ebm(&args, t.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let sweep = t.path().join("sw");
    assert_eq!(finished_runs(&sweep), 8, "{out}");
    assert!(out.contains("[8/8]"), "progress lines: {out}");
    assert!(sweep.join("report.png").is_file());
    assert_four_rows_with_mean_and_sd(&sweep);
    // The seed reached the runs: the two seeds of a point trained differently.
    let (a, b) = (summary(&sweep.join("runs/p000-s0")), summary(&sweep.join("runs/p000-s1")));
    assert_ne!(a["metrics"], b["metrics"]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(manifest["runs"].as_array().unwrap().len(), 8);
    assert_eq!(manifest["runs"][3]["seed"], 1);

    // The same sweep again is refused; with --resume there is nothing left to run.
    let o = ebm(&args, t.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("exists") && err.contains("--resume"), "{err}");
    let started = Instant::now();
    let o = ebm(&["sweep", "--resume", "sw", "--local", "-j", "2"], t.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("8 already finished"), "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(20), "resuming a finished sweep trained again");
}

#[test]
fn ctrl_c_checkpoints_the_local_runs_and_resume_finishes_them() {
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), 3000, 25);
    let child = Command::new(EBM)
        .args(["sweep", cfg.to_str().unwrap(), "--seeds", "0,1", "--local", "-j", "2", "--out", "sw"])
        .current_dir(t.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sweep = t.path().join("sw");
    let ckpt = |run: &str| newest_checkpoint(&sweep.join("runs").join(run));
    let deadline = Instant::now() + Duration::from_secs(60);
    while ckpt("p000-s0").is_none() || ckpt("p000-s1").is_none() {
        assert!(Instant::now() < deadline, "no checkpoint after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}");
    assert!(out.contains("ebm sweep --resume"), "{out}");
    assert_eq!(finished_runs(&sweep), 0, "the runs should have stopped early: {out}");
    let at = ckpt("p000-s0").unwrap();
    assert!(at > 0 && at < 3000);

    let o = ebm(&["sweep", "--resume", "sw", "--local", "-j", "2"], t.path());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(finished_runs(&sweep), 2);
    let log = std::fs::read_to_string(sweep.join("logs/p000-s0.log")).unwrap();
    let k = resumed_at(&log).unwrap_or_else(|| panic!("no resume line in the log:\n{log}"));
    assert!(k > 0, "{log}");
    assert_eq!(summary(&sweep.join("runs/p000-s0"))["steps"], 3000);
}

#[test]
fn errors_are_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), 10, 0);
    let cfg = cfg.to_str().unwrap();
    let one_line = |o: &Output| {
        assert_eq!(o.status.code(), Some(1), "{}", text(o));
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = one_line(&ebm(&["sweep", cfg, "--grid", "train.optim.lrr=1e-3,1e-2", "--local", "--out", "a"], t.path()));
    assert!(err.contains("train.optim.lrr") && err.contains("does not exist") && err.contains("tiny.toml"), "{err}");
    assert!(!t.path().join("a").exists(), "nothing may be written for an invalid grid");

    let empty = tempfile::tempdir().unwrap();
    let o = Command::new(EBM)
        .args(["sweep", cfg, "--slurm", "--out", "b"])
        .current_dir(t.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(one_line(&o), "ebm: error: sbatch not found on PATH: install Slurm's client or use --local");

    let err = one_line(&ebm(&["sweep", cfg, "--seeds", "5..2", "--local", "--out", "c"], t.path()));
    assert!(err.contains("--seeds '5..2'") && err.contains("empty range"), "{err}");
    let err = one_line(&ebm(&["sweep", cfg, "--seeds", "0-4", "--local", "--out", "c"], t.path()));
    assert!(err.contains("--seeds '0-4'") && err.contains("0..5"), "{err}");
    assert!(!t.path().join("c").exists());

    // Neither or both of --local and --slurm: a usage error from the argument parser.
    assert_eq!(ebm(&["sweep", cfg], t.path()).status.code(), Some(2));
    assert_eq!(ebm(&["sweep", cfg, "--local", "--slurm"], t.path()).status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------------------
// Slurm

/// `Ok` when a Slurm cluster answers; `Err(why)` otherwise.
fn slurm_ready() -> Result<(), String> {
    if std::env::var_os("SLURM_CONF").is_none() && !Path::new("/etc/slurm/slurm.conf").is_file() {
        return Err("SLURM_CONF is not set and there is no /etc/slurm/slurm.conf (scripts/slurm-local.sh start \
                    brings up a cluster and prints the SLURM_CONF to export)"
            .into());
    }
    let ping = Command::new("scontrol").arg("ping").output().map_err(|e| format!("scontrol: {e}"))?;
    let s = String::from_utf8_lossy(&ping.stdout);
    if !s.contains("UP") {
        return Err(format!("the Slurm controller is not up: {}", s.trim()));
    }
    if Command::new("sbatch").arg("--version").output().is_err() {
        return Err("sbatch is not on PATH".into());
    }
    Ok(())
}

/// True when the test should run; prints why not (or fails under `EBM_REQUIRE_SLURM=1`).
fn need_slurm(test: &str) -> bool {
    match slurm_ready() {
        Ok(()) => true,
        Err(why) if std::env::var("EBM_REQUIRE_SLURM").is_ok_and(|v| v == "1") => {
            panic!("{test}: EBM_REQUIRE_SLURM=1 but Slurm is not usable: {why}")
        }
        Err(why) => {
            eprintln!("{test}: SKIPPED, no Slurm cluster: {why}");
            false
        }
    }
}

/// `JobState` of a job (or array task `J_i`) from `scontrol show job`.
fn job_state(job: &str) -> String {
    let o = Command::new("scontrol").args(["show", "job", job]).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    s.split_whitespace().find_map(|w| w.strip_prefix("JobState=")).unwrap_or("UNKNOWN").to_string()
}

fn wait_for_state(job: &str, done: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let s = job_state(job);
        if done.contains(&s.as_str()) {
            return s;
        }
        assert!(Instant::now() < deadline, "job {job} still {s} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `(array job, collector job)` from the "submitted array job J … collector job C" line.
fn submitted(out: &str) -> (u64, u64) {
    let line = out.lines().find(|l| l.starts_with("submitted array job")).unwrap_or_else(|| panic!("{out}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[nums.len() - 1])
}

fn newest_checkpoint(run: &Path) -> Option<usize> {
    let rd = std::fs::read_dir(run.join("checkpoints")).ok()?;
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok()).max()
}

/// K from the trainer's "… resumes at update K" line.
fn resumed_at(log: &str) -> Option<usize> {
    let rest = &log[log.find("resumes at update ")? + "resumes at update ".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn slurm_sweep_runs_an_array_and_the_collector_reports_it() {
    if !need_slurm("slurm_sweep_runs_an_array_and_the_collector_reports_it") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), 60, 0);
    let mut args = vec!["sweep", cfg.to_str().unwrap()];
    args.extend(GRID);
    args.extend(["--seeds", "0..2", "--slurm", "--submit", "--out", "sw"]);
    let o = ebm(&args, t.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let (array, collector) = submitted(&out);
    let sweep = t.path().join("sw");
    let state = wait_for_state(&collector.to_string(), &["COMPLETED", "FAILED", "CANCELLED"], Duration::from_secs(240));
    let logs: Vec<String> =
        std::fs::read_dir(sweep.join("logs")).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    assert_eq!(state, "COMPLETED", "collector {collector} of array {array}; logs {logs:?}");
    for i in 0..8 {
        let log = sweep.join(format!("logs/{array}_{i}.out"));
        assert!(log.is_file(), "no log for task {i}: {logs:?}");
    }
    assert_eq!(finished_runs(&sweep), 8);
    assert_four_rows_with_mean_and_sd(&sweep);
    let report_log = std::fs::read_to_string(sweep.join(format!("logs/report_{collector}.out"))).unwrap();
    assert!(report_log.contains("8 of 8 runs finished"), "{report_log}");
}

#[test]
fn a_killed_slurm_task_resumes_from_its_checkpoint_when_resubmitted() {
    if !need_slurm("a_killed_slurm_task_resumes_from_its_checkpoint_when_resubmitted") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let cfg = config(t.path(), 3000, 25);
    let o = ebm(&["sweep", cfg.to_str().unwrap(), "--slurm", "--submit", "--out", "sw"], t.path());
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let (array, collector) = submitted(&out);
    let sweep = t.path().join("sw");
    let run = sweep.join("runs/p000-s0");
    let deadline = Instant::now() + Duration::from_secs(90);
    while newest_checkpoint(&run).is_none() {
        assert!(
            Instant::now() < deadline,
            "task {array}_0 wrote no checkpoint in 90 s ({})",
            job_state(&format!("{array}_0"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let task = format!("{array}_0");
    let s = Command::new("scancel").args(["--signal=TERM", "--batch", &task]).status().unwrap();
    assert!(s.success());
    let state = wait_for_state(&task, &["FAILED", "CANCELLED", "COMPLETED"], Duration::from_secs(60));
    let first_log = std::fs::read_to_string(sweep.join(format!("logs/{task}.out"))).unwrap();
    assert_eq!(state, "FAILED", "the task should have stopped with 130:\n{first_log}");
    assert!(first_log.contains("interrupted after update"), "{first_log}");
    let stopped_at = newest_checkpoint(&run).unwrap();
    assert!(stopped_at < 3000);
    // The collector cannot run after a failed task (kill_invalid_depend cancels it).
    wait_for_state(&collector.to_string(), &["CANCELLED"], Duration::from_secs(30));

    let script = sweep.join("sweep.sbatch");
    let o = Command::new("sbatch").args(["--parsable", "--array=0", script.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let again = String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap().to_string();
    let task = format!("{again}_0");
    let state = wait_for_state(&task, &["COMPLETED", "FAILED", "CANCELLED"], Duration::from_secs(120));
    let log = std::fs::read_to_string(sweep.join(format!("logs/{task}.out"))).unwrap();
    assert_eq!(state, "COMPLETED", "{log}");
    let k = resumed_at(&log).unwrap_or_else(|| panic!("the resubmitted task did not resume:\n{log}"));
    assert!(k > 0 && k <= stopped_at, "resumed at {k}, last checkpoint {stopped_at}:\n{log}");
    let s = summary(&run);
    assert_eq!(s["status"], "finished");
    assert_eq!(s["steps"], 3000);
    let o = ebm(&["report", "sw"], t.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 of 1 runs finished"), "{}", text(&o));
}
