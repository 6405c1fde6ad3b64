//! Every experiment binary checkpoints on a real SIGINT and continues with `--resume <run folder>` to the
//! results of the uninterrupted run (`exp_cd_vs_sm` has its own test in `exp_cd_vs_sm.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs `bin args` to the end; panics with its stderr when it fails.
fn run_to_end(bin: &str, args: &[String]) {
    let o = Command::new(bin).current_dir(repo_root()).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Starts `bin args`, waits until `metrics` has a few rows, sends SIGINT and checks the exit: code 130, the
/// resume command printed, a checkpoint in `ckpts`.
fn interrupt(bin: &str, name: &str, args: &[String], metrics: &Path, ckpts: &Path) {
    let child = Command::new(bin).current_dir(repo_root()).args(args).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(metrics).map(|t| t.lines().count()).unwrap_or(0) < 3 {
        assert!(start.elapsed().as_secs() < 300, "training did not start ({})", metrics.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains(&format!("resume with: just run {name} --resume")), "{err}");
    let n = std::fs::read_dir(ckpts).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n, 1, "one checkpoint at the interrupted step in {}", ckpts.display());
}

/// `bin --resume run`, which must succeed and say where it resumed.
fn resume(bin: &str, run: &Path) -> String {
    let o = Command::new(bin).current_dir(repo_root()).args(["--threads", "1", "--resume"]).arg(run).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resumes at update"), "{err}");
    err
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Drops every field that measures time.
fn without_timings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !(k.contains("seconds") || k.contains("ms_per") || k.ends_with("_png")));
            m.values_mut().for_each(without_timings);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_timings),
        _ => {}
    }
}

fn args(out: &Path, name: &str, base: &[&str], sets: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    v.extend(["--device", "cpu", "--threads", "1", "--run-name", name, "--out"].map(String::from));
    v.push(out.display().to_string());
    for s in sets {
        v.extend(["--set".to_string(), s.to_string()]);
    }
    v
}

#[test]
fn exp_images_resumes_after_sigint_to_the_uninterrupted_results() {
    const BIN: &str = env!("CARGO_BIN_EXE_exp_images");
    let out = tempfile::tempdir().unwrap();
    let sets = [
        "train.iters=300",
        "train.batch_size=32",
        "cd.k=10",
        "cd.buffer_capacity=256",
        "sampling.n=40",
        "sampling.steps=30",
        "log.image_every=100",
        "log.grid_n=16",
        "log.fresh_steps=10",
        "eval.classifier.epochs=2",
        "eval.ais.chains=16",
        "eval.ais.steps=50",
        "eval.ood_n=100",
    ];
    run_to_end(BIN, &args(out.path(), "full", &[], &sets));
    let run = out.path().join("exp_images/cut");
    interrupt(
        BIN,
        "exp_images",
        &args(out.path(), "cut", &[], &sets),
        &run.join("metrics.csv"),
        &run.join("checkpoints"),
    );
    assert!(!run.join("metrics.json").exists(), "an interrupted run has no results yet");
    resume(BIN, &run);
    let (mut want, mut got) = (json(out.path().join("exp_images/full/metrics.json")), json(run.join("metrics.json")));
    without_timings(&mut want);
    without_timings(&mut got);
    assert_eq!(got, want, "resumed run differs from the uninterrupted one");
    // the metrics file has the rows of the uninterrupted run: none lost, none repeated
    let steps = |p: PathBuf| -> Vec<String> {
        let csv = std::fs::read_to_string(p).unwrap();
        csv.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect()
    };
    assert_eq!(steps(run.join("metrics.csv")), steps(out.path().join("exp_images/full/metrics.csv")));
}

#[test]
fn exp_poe_resumes_after_sigint_to_the_uninterrupted_results() {
    const BIN: &str = env!("CARGO_BIN_EXE_exp_poe");
    let out = tempfile::tempdir().unwrap();
    let config = repo_root().join("experiments/exp_poe.toml");
    let base = ["--config", config.to_str().unwrap(), "--no-2d"];
    let sets = [
        "images.n_train=300",
        "images.iters=400",
        "images.kind_training.colour.iters=60",
        "images.batch_size=16",
        "images.baseline=false",
        "images.targets=[\"triangle & blue\"]",
        "images.sampling.n=8",
        "images.sampling.steps_per_level=2",
        "images.log_every=1",
    ];
    run_to_end(BIN, &args(out.path(), "full", &base, &sets));
    let run = out.path().join("exp_poe/cut");
    let shape = run.join("images/shape");
    interrupt(
        BIN,
        "exp_poe",
        &args(out.path(), "cut", &base, &sets),
        &shape.join("metrics.csv"),
        &shape.join("checkpoints"),
    );
    assert!(!run.join("results.json").exists(), "an interrupted run has no results yet");
    let err = resume(BIN, &run);
    assert!(err.contains("images/shape resumes at update"), "{err}");
    let (mut want, mut got) = (json(out.path().join("exp_poe/full/results.json")), json(run.join("results.json")));
    without_timings(&mut want);
    without_timings(&mut got);
    assert_eq!(got["images"], want["images"], "resumed run differs from the uninterrupted one");
    // the trained weights are the same too
    for model in ["shape", "colour"] {
        let a = std::fs::read(out.path().join("exp_poe/full/images").join(model).join("model.safetensors")).unwrap();
        let b = std::fs::read(run.join("images").join(model).join("model.safetensors")).unwrap();
        assert!(a == b, "model '{model}' differs after resuming");
    }
}
