//! A run folder cannot lie about its run (through `exp_cd_vs_sm`, on the shared run context):
//! `fingerprint.json` and `--resume` refuse an edited config, changed data and another run's checkpoint;
//! `run.lock` keeps a second process out and a dead one's lock is taken over; a resumed run's metrics have
//! every step once; stale temporary files are removed; results re-read from `result.json` are the same to
//! the last digit; a run started in the background of a non-interactive shell still checkpoints on SIGINT.

use experiments::cd_vs_sm::{Method, ResultRow};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_exp_cd_vs_sm");

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn args_with(out: &Path, name: &str, base: &[&str], sets: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--device", "cpu", "--threads", "1", "--run-name", name].map(String::from).to_vec();
    v.extend(base.iter().map(|s| s.to_string()));
    for s in sets {
        v.extend(["--set".to_string(), s.to_string()]);
    }
    v.push("--out".into());
    v.push(out.display().to_string());
    v
}

/// A run of a second or two: exact score matching, 30 updates, a small evaluation.
fn tiny_args(out: &Path, name: &str, dataset: &str, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "n_train=500",
        "n_test=200",
        "cd.k=20",
        "sampling.n=50",
        "sampling.langevin_steps=5",
        "sampling.mala_steps=5",
        "eval.every=0",
        "eval.image_every=0",
        "eval.grid_n=40",
        "eval.grid_n_train=20",
    ];
    sets.extend_from_slice(extra);
    args_with(out, name, &["--datasets", dataset, "--methods", "sm_exact", "--iters", "30"], &sets)
}

/// A replay-buffer run of a few seconds, long enough to be interrupted mid-training (as in
/// `exp_cd_vs_sm.rs`), after `methods` that come before it.
fn long_args(out: &Path, name: &str, methods: &str) -> Vec<String> {
    let sets = [
        "n_train=4000",
        "n_test=1000",
        "cd.k=20",
        "cd.buffer_capacity=2000",
        "sampling.n=300",
        "sampling.langevin_steps=60",
        "sampling.mala_steps=30",
        "eval.every=500",
        "eval.image_every=1500",
        "eval.grid_n=120",
        "eval.grid_n_train=60",
    ];
    args_with(out, name, &["--datasets", "two_gaussians", "--methods", methods, "--iters", "1500"], &sets)
}

fn run_ok(args: &[String]) -> String {
    let o = Command::new(BIN).current_dir(repo_root()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{args:?} failed:\n{err}");
    err
}

fn resume(run: &Path) -> Output {
    Command::new(BIN).current_dir(repo_root()).args(["--threads", "1", "--resume"]).arg(run).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn resume_ok(run: &Path) -> String {
    let o = resume(run);
    let err = stderr(&o);
    assert!(o.status.success(), "resume failed:\n{err}");
    err
}

/// A resume that must be refused before anything is done: exit code 1, the error on stderr.
fn resume_refused(run: &Path) -> String {
    let o = resume(run);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "resume should be refused:\n{err}");
    assert!(!err.contains("resumes at update") && !err.contains("finished before"), "{err}");
    err
}

fn wait_for_rows(metrics: &Path, rows: usize) {
    let start = Instant::now();
    while std::fs::read_to_string(metrics).map(|t| t.lines().count()).unwrap_or(0) < rows {
        assert!(start.elapsed().as_secs() < 300, "training did not start ({})", metrics.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigint(pid: u32) {
    assert!(Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
}

/// Waits for `child` to exit after SIGINT: code 130, the resume command printed.
fn expect_interrupted(child: Child) -> String {
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("resume with: just run exp_cd_vs_sm --resume"), "{err}");
    err
}

/// Starts `args`, interrupts it with SIGINT once `metrics` has a few rows; expects exit 130 and one
/// checkpoint in `metrics`' folder.
fn interrupt(args: &[String], metrics: &Path) {
    let child = Command::new(BIN).current_dir(repo_root()).args(args).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_rows(metrics, 3);
    sigint(child.id());
    expect_interrupted(child);
    let n = std::fs::read_dir(metrics.parent().unwrap().join("checkpoints")).unwrap().count();
    assert_eq!(n, 1, "one checkpoint at the interrupted step");
}

/// The step column of a metrics file.
fn steps(metrics: &Path) -> Vec<u64> {
    let csv = std::fs::read_to_string(metrics).unwrap();
    csv.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect()
}

/// The steps of the rows of a metrics file that hold a training loss.
fn training_steps(metrics: &Path) -> Vec<u64> {
    let csv = std::fs::read_to_string(metrics).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let loss = header.iter().position(|c| *c == "train/loss").unwrap_or_else(|| panic!("no loss column: {header:?}"));
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|cells| cells.get(loss).is_some_and(|c| !c.is_empty()))
        .map(|cells| cells[0].parse().unwrap())
        .collect()
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// Sets `key` (dotted) in a TOML file to `value`.
fn edit_toml(path: &Path, key: &str, value: toml::Value) {
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = &mut t;
    for p in &parts[..parts.len() - 1] {
        cur = cur.get_mut(*p).unwrap().as_table_mut().unwrap();
    }
    assert!(cur.insert(parts[parts.len() - 1].to_string(), value).is_some(), "{key} is in {}", path.display());
    std::fs::write(path, toml::to_string(&t).unwrap()).unwrap();
}

/// `n` points of a 2-D Gaussian centred at `(cx, 0)`, as a CSV file of x,y.
fn write_gaussian_csv(path: &Path, n: usize, cx: f64, seed: u64) {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut uniform = || {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut csv = String::from("x,y\n");
    for _ in 0..n {
        let (u, v) = (uniform(), uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let (x, y) = (r * (std::f64::consts::TAU * v).cos(), r * (std::f64::consts::TAU * v).sin());
        csv.push_str(&format!("{},{}\n", cx + x, y));
    }
    std::fs::write(path, csv).unwrap();
}

// 1. fingerprint.json: config, data and checkpoints of a resumed run are the ones it started with

#[test]
fn a_new_run_writes_its_fingerprint_and_holds_no_lock_after_it_ends() {
    let out = tempfile::tempdir().unwrap();
    run_ok(&tiny_args(out.path(), "a", "two_gaussians", &[]));
    let run = out.path().join("exp_cd_vs_sm/a");
    let fp: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("fingerprint.json")).unwrap()).unwrap();
    assert_eq!(fp["run_id"].as_str().unwrap().len(), 32, "{fp}");
    assert_eq!(fp["ebm_rs_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(fp["config"].as_str().unwrap(), std::fs::read_to_string(run.join("config.toml")).unwrap());
    assert_eq!(fp["config_sha256"].as_str().unwrap().len(), 64);
    assert!(!run.join("run.lock").exists(), "the lock is released when the run ends");
}

#[test]
fn resume_refuses_an_edited_config_naming_the_changed_keys() {
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("exp_cd_vs_sm/cut");
    interrupt(&long_args(out.path(), "cut", "replay"), &run.join("two_gaussians/replay/metrics.csv"));
    let config = run.join("config.toml");
    let original = std::fs::read(&config).unwrap();
    let before = snapshot(&run);

    edit_toml(&config, "cd.k", toml::Value::Integer(7));
    let err = resume_refused(&run);
    let line = err.lines().find(|l| l.contains("was edited after the run started")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&format!("config.toml of {} was edited", run.display())), "{err}");
    assert!(line.contains("cd.k 20 → 7") && line.contains("--run-name"), "one line names it all: {err}");

    std::fs::write(&config, &original).unwrap();
    edit_toml(&config, "train.optim.lr", toml::Value::Float(0.5));
    let err = resume_refused(&run);
    assert!(err.contains("train.optim.lr") && err.contains("→ 0.5"), "{err}");
    assert!(!err.contains("cd.k"), "{err}");

    std::fs::write(&config, &original).unwrap();
    assert_eq!(snapshot(&run), before, "a refused resume changes nothing in the run folder");
    let err = resume_ok(&run);
    assert!(err.contains("resumes at update"), "{err}");
}

#[test]
fn resume_refuses_a_changed_data_file_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let csv = out.path().join("pts.csv");
    write_gaussian_csv(&csv, 300, 0.0, 1);
    let dataset = csv.display().to_string();
    run_ok(&tiny_args(out.path(), "csv", &dataset, &[]));
    let run = out.path().join("exp_cd_vs_sm/csv");
    let fp: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("fingerprint.json")).unwrap()).unwrap();
    let files = fp["data_files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "the CSV dataset is recorded in fingerprint.json: {fp}");
    assert_eq!(files[0]["path"], dataset.as_str());
    assert_eq!(files[0]["bytes"], std::fs::metadata(&csv).unwrap().len());
    resume_ok(&run);

    write_gaussian_csv(&csv, 300, 1.0, 1);
    let err = resume_refused(&run);
    assert!(err.contains(&format!("data file {dataset} ")) && err.contains("changed after the run started"), "{err}");
    std::fs::remove_file(&csv).unwrap();
    let err = resume_refused(&run);
    assert!(err.contains(&dataset), "{err}");
}

#[test]
fn a_checkpoint_copied_in_from_another_run_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let ckpt = ["--set", "train.checkpoint_every=10"];
    let ab = |name: &str| {
        let mut a = tiny_args(out.path(), name, "two_gaussians", &[]);
        a.extend(ckpt.map(String::from));
        run_ok(&a);
        out.path().join("exp_cd_vs_sm").join(name).join("two_gaussians/sm_exact")
    };
    let (a, b) = (ab("a"), ab("b"));
    // b's model is trained again from its checkpoint ...
    std::fs::remove_file(b.join("result.json")).unwrap();
    let err = resume_ok(b.parent().unwrap().parent().unwrap());
    assert!(err.contains("resumes at update 30"), "{err}");
    // ... but not from one of run a
    std::fs::remove_file(b.join("result.json")).unwrap();
    std::fs::remove_dir_all(b.join("checkpoints")).unwrap();
    copy_dir(&a.join("checkpoints"), &b.join("checkpoints"));
    let err = resume_refused(b.parent().unwrap().parent().unwrap());
    assert!(err.contains("fingerprint"), "{err}");
}

#[test]
fn a_run_folder_without_fingerprint_resumes_with_a_warning() {
    let out = tempfile::tempdir().unwrap();
    run_ok(&tiny_args(out.path(), "old", "two_gaussians", &[]));
    let run = out.path().join("exp_cd_vs_sm/old");
    std::fs::remove_file(run.join("fingerprint.json")).unwrap();
    let err = resume_ok(&run);
    assert!(err.contains("has no fingerprint.json (made by an older ebm-rs)"), "{err}");
}

// 2. run.lock: one process per run folder

#[test]
fn a_second_process_on_the_same_run_folder_is_refused_at_once() {
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("exp_cd_vs_sm/cut");
    let metrics = run.join("two_gaussians/replay/metrics.csv");
    interrupt(&long_args(out.path(), "cut", "replay"), &metrics);
    let rows = std::fs::read_to_string(&metrics).unwrap().lines().count();

    let first = Command::new(BIN)
        .current_dir(repo_root())
        .args(["--threads", "1", "--resume"])
        .arg(&run)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = run.join("run.lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with(&format!("{}\n", first.id()))) {
        assert!(start.elapsed().as_secs() < 60, "the first resume did not take the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let err = resume_refused(&run);
    assert!(err.contains(&format!("run folder {} is in use by process {}", run.display(), first.id())), "{err}");
    assert!(started.elapsed().as_secs() < 20, "refused at once");

    wait_for_rows(&metrics, rows + 3);
    sigint(first.id());
    expect_interrupted(first);
    assert!(!lock.exists(), "the lock is released on exit");
}

#[test]
fn a_stale_lock_of_a_dead_process_is_taken_over_with_a_notice() {
    let out = tempfile::tempdir().unwrap();
    run_ok(&tiny_args(out.path(), "a", "two_gaussians", &[]));
    let run = out.path().join("exp_cd_vs_sm/a");
    // above the kernel's largest PID (2^22): no such process
    std::fs::write(run.join("run.lock"), "4194305\n").unwrap();
    let err = resume_ok(&run);
    assert!(err.contains("stale run.lock of process 4194305") && err.contains("taking it over"), "{err}");
    assert!(!run.join("run.lock").exists());
}

// 3. metrics of a resumed run: every step once

#[test]
fn after_sigint_and_resume_metrics_have_every_step_once_like_the_uninterrupted_run() {
    let out = tempfile::tempdir().unwrap();
    run_ok(&long_args(out.path(), "full", "replay"));
    let run = out.path().join("exp_cd_vs_sm/cut");
    let sub = run.join("two_gaussians/replay");
    interrupt(&long_args(out.path(), "cut", "replay"), &sub.join("metrics.csv"));
    let err = resume_ok(&run);
    let at: u64 = err.split("resumes at update ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();

    let got = steps(&sub.join("metrics.csv"));
    assert_eq!(got, steps(&out.path().join("exp_cd_vs_sm/full/two_gaussians/replay/metrics.csv")));
    // every training step once, increasing (the final evaluation adds its own row at the last step, in the
    // uninterrupted run too)
    let train = training_steps(&sub.join("metrics.csv"));
    assert!(train.windows(2).all(|w| w[0] < w[1]), "steps once each, increasing: {train:?}");
    assert_eq!(train.len(), 150, "{train:?}");

    // TensorBoard: the resumed writer starts with a restart marker at the resumed step
    let mut markers = Vec::new();
    for e in std::fs::read_dir(&sub).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents.") {
            for ev in ebm_log::tfrecord::read_event_file(&p).unwrap() {
                if ev.session_log.is_some_and(|s| s.status == ebm_log::proto::SESSION_START) {
                    markers.push(ev.step as u64);
                }
            }
        }
    }
    // (TensorBoard's marker sits one past the last step kept: it drops what was logged from there on)
    assert_eq!(markers, vec![at + 1], "one restart marker, at the resumed step");
}

// 4. stale temporary files

#[test]
fn resume_removes_stale_temporary_files_with_a_notice() {
    let out = tempfile::tempdir().unwrap();
    run_ok(&tiny_args(out.path(), "a", "two_gaussians", &[]));
    let run = out.path().join("exp_cd_vs_sm/a");
    let stale = [
        run.join(".results.csv.tmp.999.0"),
        run.join("two_gaussians/sm_exact/.tmp-eval.png"),
        run.join("two_gaussians/sm_exact/checkpoints/.step-00000010.tmp-999"),
    ];
    std::fs::write(&stale[0], "partial").unwrap();
    std::fs::write(&stale[1], "partial").unwrap();
    std::fs::create_dir_all(&stale[2]).unwrap();
    std::fs::write(stale[2].join("meta.json"), "{").unwrap();
    let err = resume_ok(&run);
    assert!(err.contains("removed 3 temporary file(s) left by an interrupted write"), "{err}");
    assert!(err.contains(".tmp-eval.png"), "{err}");
    for p in &stale {
        assert!(!p.exists(), "{}", p.display());
    }
    assert!(run.join("results.csv").exists() && run.join("config.toml").exists());
}

// 5. results re-read from result.json are the same to the last digit

#[test]
fn result_rows_round_trip_through_json_exactly() {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        // a finite double with a random mantissa, over a wide range of exponents
        let mantissa = (s >> 12) as f64 / (1u64 << 52) as f64 + 1.0;
        mantissa * 2f64.powi((s % 40) as i32 - 30)
    };
    for _ in 0..3000 {
        let row = ResultRow {
            dataset: "two_gaussians".into(),
            method: Method::Replay,
            nll: next(),
            kl: Some(next()),
            mmd2: next(),
            mmd2_langevin: next(),
            mode_tv_samples: Some(next()),
            mode_tv_density: None,
            model_weights: Some("0.79/0.21".into()),
            true_weights: Some("0.80/0.20".into()),
            far_share: Some(next()),
            mala_acceptance: next(),
            ms_per_iter: next(),
            train_seconds: next(),
            total_seconds: next(),
            log_z_grid: Some(next()),
            log_z_nce: None,
        };
        let json = serde_json::to_vec_pretty(&row).unwrap();
        let back: ResultRow = serde_json::from_slice(&json).unwrap();
        let line = |r: &ResultRow| {
            format!(
                "{},{:?},{},{},{},{},{},{},{},{}",
                r.nll,
                r.kl,
                r.mmd2,
                r.mmd2_langevin,
                r.mode_tv_samples.unwrap(),
                r.far_share.unwrap(),
                r.mala_acceptance,
                r.ms_per_iter,
                r.train_seconds,
                r.total_seconds
            )
        };
        assert_eq!(line(&back), line(&row), "{}", String::from_utf8_lossy(&json));
        assert_eq!(serde_json::to_vec_pretty(&back).unwrap(), json);
    }
}

#[test]
fn a_resumed_runs_results_csv_has_the_full_rows_of_the_uninterrupted_run() {
    let out = tempfile::tempdir().unwrap();
    let mut a = tiny_args(out.path(), "a", "two_gaussians", &[]);
    let m = a.iter().position(|s| s == "sm_exact").unwrap();
    a[m] = "sm_exact,sm_hutchinson,dsm".into();
    run_ok(&a);
    let run = out.path().join("exp_cd_vs_sm/a");
    let want = std::fs::read_to_string(run.join("results.csv")).unwrap();
    assert_eq!(want.lines().count(), 4, "{want}");
    // every row is now read back from its result.json: all 15 columns, timings included, must be the same
    let err = resume_ok(&run);
    assert_eq!(err.matches("finished before; kept").count(), 3, "{err}");
    assert_eq!(std::fs::read_to_string(run.join("results.csv")).unwrap(), want);
}

// 6. SIGINT reaches a run started in the background of a non-interactive shell

#[test]
fn sigint_checkpoints_a_run_started_in_the_background_of_a_non_interactive_shell() {
    // the premise: `sh -c` has no job control, so its background jobs start with SIGINT ignored
    if Path::new("/proc/self/status").exists() {
        let o = Command::new("sh")
            .arg("-c")
            .arg("sleep 2 & p=$!; sleep 0.3; grep SigIgn /proc/$p/status; wait")
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&o.stdout).to_string();
        let mask = u64::from_str_radix(line.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
        assert!(mask & (1 << (2 - 1)) != 0, "SIGINT is ignored in a background job: {line}");
    }
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("exp_cd_vs_sm/bg");
    let mut sh = Command::new("sh")
        .current_dir(repo_root())
        .arg("-c")
        .arg("\"$0\" \"$@\" 2>/dev/null & echo $!; wait $!")
        .arg(BIN)
        .args(long_args(out.path(), "bg", "replay"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(sh.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    let ignored = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("SigIgn:")).map(|l| l[7..].trim().to_string()));
    wait_for_rows(&run.join("two_gaussians/replay/metrics.csv"), 3);
    sigint(pid);
    let status = sh.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit code of the background run (SigIgn at start: {ignored:?})");
    let ckpts = std::fs::read_dir(run.join("two_gaussians/replay/checkpoints")).unwrap().count();
    assert_eq!(ckpts, 1, "a checkpoint was written");
    assert!(!run.join("run.lock").exists());
    let err = resume_ok(&run);
    assert!(err.contains("resumes at update"), "{err}");
}

/// exp_images: `--method` cannot come with `--resume`, and a run whose config.toml was switched to another
/// method (replay → dsm) is refused instead of continuing a replay checkpoint as DSM.
#[test]
fn exp_images_refuses_to_continue_a_run_under_another_method() {
    const IMAGES: &str = env!("CARGO_BIN_EXE_exp_images");
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(IMAGES)
        .current_dir(repo_root())
        .args(["--quick", "--device", "cpu", "--threads", "1", "--run-name", "r", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let run = out.path().join("exp_images/r");
    let o =
        Command::new(IMAGES).current_dir(repo_root()).args(["--method", "dsm", "--resume"]).arg(&run).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    edit_toml(&run.join("config.toml"), "method", toml::Value::String("dsm".into()));
    let o =
        Command::new(IMAGES).current_dir(repo_root()).args(["--threads", "1", "--resume"]).arg(&run).output().unwrap();
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("method") && e.contains("replay") && e.contains("dsm"), "{e}");
}
