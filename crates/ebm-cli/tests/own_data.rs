//! A 2-D CSV the project has never seen (a two-component Gaussian mixture written here) trains, samples,
//! evaluates, scores and composes from the command line alone; the numbers are checked against the mixture's
//! closed form.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EBM: &str = env!("CARGO_BIN_EXE_ebm");
const WEIGHTS: [f64; 2] = [0.7, 0.3];
const MEANS: [[f64; 2]; 2] = [[-2.0, 0.0], [2.0, 0.0]];
const STD: f64 = 0.5;

/// A 64-bit LCG with Box–Muller normals: the data does not depend on any library's generator.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn mixture_points(n: usize, seed: u64) -> Vec<[f64; 2]> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| {
            let k = usize::from(r.uniform() >= WEIGHTS[0]);
            [MEANS[k][0] + STD * r.normal(), MEANS[k][1] + STD * r.normal()]
        })
        .collect()
}

/// The mixture's exact log-density.
fn log_p(x: [f64; 2]) -> f64 {
    let norm = -(2.0 * std::f64::consts::PI * STD * STD).ln();
    let terms: Vec<f64> = (0..2)
        .map(|k| {
            let d2 = (x[0] - MEANS[k][0]).powi(2) + (x[1] - MEANS[k][1]).powi(2);
            WEIGHTS[k].ln() + norm - d2 / (2.0 * STD * STD)
        })
        .collect();
    let m = terms[0].max(terms[1]);
    m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

fn write_csv(path: &Path, pts: &[[f64; 2]], header: bool) {
    let mut s = if header { "x,y\n".to_string() } else { String::new() };
    for p in pts {
        s.push_str(&format!("{},{}\n", p[0], p[1]));
    }
    std::fs::write(path, s).unwrap();
}

fn ebm(dir: &Path, args: &[&str]) -> Output {
    Command::new(EBM).current_dir(dir).args(args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = ebm(dir, args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "ebm {args:?} failed:\n{out}\n{err}");
    format!("{out}{err}")
}

/// The error of a failing command: stderr from its `ebm: error:` line on (clap's own errors start with
/// `error:`).
fn fails(dir: &Path, args: &[&str]) -> String {
    let o = ebm(dir, args);
    assert!(!o.status.success(), "ebm {args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let at = err.find("ebm: error:").or_else(|| err.find("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    err[at..].to_string()
}

fn json(p: PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn read_rows(p: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

const CONFIG: &str = r#"
seed = 0
threads = 1
device = "cpu"
[data]
source = "train.csv"
[model]
kind = "mlp"
hidden = [64, 64]
[objective]
kind = "score_matching"
method = { variant = "denoising", sigma = 0.3 }
[train]
iters = 1500
checkpoint_every = 100
[sampling]
steps = 300
n = 400
[eval]
every = 500
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("train.csv"), &mixture_points(3000, 1), true);
    write_csv(&dir.path().join("test.csv"), &mixture_points(2000, 2), false);
    std::fs::write(dir.path().join("cfg.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("mix.toml"), "weights = [0.7, 0.3]\nmeans = [[-2.0, 0.0], [2.0, 0.0]]\nstd = 0.5\n")
        .unwrap();
    dir
}

#[test]
fn a_new_csv_trains_samples_evaluates_scores_and_composes_from_the_command_line() {
    let tmp = setup();
    let d = tmp.path();
    ok(d, &["train", "cfg.toml", "--run-name", "mix"]);
    let run = d.join("runs/mix");
    for f in ["config.toml", "data.json", "fingerprint.json", "metrics.csv", "model.safetensors", "samples.csv"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    assert!(run.join("figures/density.png").is_file());
    assert!(std::fs::read_dir(&run).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("tfevents")));
    let summary = json(run.join("summary.json"));
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["steps"], 1500);

    // eval against the closed form: the mixture's entropy on the test points, and KL = NLL − entropy
    ok(d, &["eval", "runs/mix", "--data", "test.csv", "--true-density", "mix.toml", "--out", "eval.json"]);
    let e = json(d.join("eval.json"));
    let m = |k: &str| e["metrics"][k].as_f64().unwrap_or_else(|| panic!("no {k} in {e}"));
    let test = mixture_points(2000, 2);
    let entropy = -test.iter().map(|x| log_p(*x)).sum::<f64>() / test.len() as f64;
    assert!((m("data_entropy") - entropy).abs() < 1e-4, "{} vs closed form {entropy}", m("data_entropy"));
    assert!((m("kl") - (m("test_nll") - entropy)).abs() < 1e-4);
    assert!(m("kl") < 0.1 && m("kl") > -0.05, "KL(p_data ‖ p_θ) = {} nats", m("kl"));
    assert!(m("ksd").is_finite() && m("mmd2").is_finite() && m("log_z").is_finite(), "{e}");

    // score: log-ratios need no Z; against the closed form within a mode (x = centre vs centre + (0, ½):
    // ½²/2σ² = ½ nat) and between the modes (log 0.7/0.3 = 0.85 nat, which score matching learns least well)
    write_csv(&d.join("a.csv"), &[MEANS[0], MEANS[0]], true);
    write_csv(&d.join("b.csv"), &[[MEANS[0][0], 0.5], MEANS[1]], true);
    let out = ok(d, &["score", "runs/mix", "a.csv", "--vs", "b.csv"]);
    let rows: Vec<Vec<f64>> =
        out.lines().skip(1).take(2).map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    for r in &rows {
        assert!((r[3] - (r[1] - r[2])).abs() < 1e-5, "{r:?}");
    }
    let (within, between) = (log_p(MEANS[0]) - log_p([MEANS[0][0], 0.5]), (0.7f64 / 0.3).ln());
    eprintln!("log ratios: within {} (true {within}), between {} (true {between})", rows[0][3], rows[1][3]);
    assert!((rows[0][3] - within).abs() < 0.1, "within a mode: {} vs {within}", rows[0][3]);
    assert!((rows[1][3] - between).abs() < 0.4, "between the modes: {} vs {between}", rows[1][3]);

    // sample: MALA chains inside the data; parallel tempering reports swaps
    let out = ok(d, &["sample", "runs/mix", "--sampler", "mala", "--n", "300", "--out", "s.csv"]);
    assert!(out.contains("acceptance") && out.contains("split-R̂"), "{out}");
    let rows = read_rows(&d.join("s.csv"));
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|r| r.len() == 2 && r[0].abs() < 5.0 && r[1].abs() < 3.0));
    let out = ok(d, &["sample", "runs/mix", "--sampler", "pt", "--n", "200", "--steps", "200", "--out", "pt.npy"]);
    assert!(out.contains("swap acceptance per neighbouring pair"), "{out}");

    // compose: the product of a model with itself is p², whose components have std 0.5/√2
    let out = ok(
        d,
        &["compose", "a & b", "--expert", "a=runs/mix", "--expert", "b=runs/mix", "--n", "600", "--out", "c.csv"],
    );
    assert!(out.contains("composition: a & b"), "{out}");
    let rows = read_rows(&d.join("c.csv"));
    let left: Vec<f64> = rows.iter().filter(|r| r[0] < 0.0).map(|r| r[1]).collect();
    let sd = (left.iter().map(|y| y * y).sum::<f64>() / left.len() as f64).sqrt();
    assert!((sd - STD / 2f64.sqrt()).abs() < 0.06, "std of p² near (-2, 0): {sd} vs {}", STD / 2f64.sqrt());

    // nothing already written is overwritten
    let err = fails(d, &["train", "cfg.toml", "--run-name", "mix"]);
    assert!(err.contains("exists"), "{err}");
    let err = fails(d, &["sample", "runs/mix", "--out", "s.csv"]);
    assert!(err.contains("s.csv exists"), "{err}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let tmp = setup();
    let d = tmp.path();
    let line = |args: &[&str], needles: &[&str]| {
        let err = fails(d, args);
        for n in needles {
            assert!(err.contains(n), "ebm {args:?}: '{n}' not in:\n{err}");
        }
        assert!(!d.join("runs").exists(), "nothing written for a bad input ({args:?})");
    };
    line(&["train", "cfg.toml", "--set", "train.itters=5"], &["itters"]);
    line(&["train", "cfg.toml", "--set", "model.kind=transformer"], &["transformer"]);
    std::fs::write(d.join("nan.csv"), "x,y\n1,2\n3,nan\n").unwrap();
    line(&["train", "cfg.toml", "--set", "data.source=\"nan.csv\""], &["nan.csv", "line 3", "NaN"]);
    std::fs::write(d.join("cols.csv"), "1,2\n3,4,5\n").unwrap();
    line(&["train", "cfg.toml", "--set", "data.source=\"cols.csv\""], &["cols.csv", "line 2 has 3 column(s)"]);
    line(&["train", "cfg.toml", "--set", "model.kind=conv"], &["takes images"]);
    line(&["sample", "."], &["not an `ebm train` run folder"]);
    line(&["eval", "nowhere"], &["is not a folder"]);
    line(&["compose", "a & zz", "--expert", "a=."], &["unknown name 'zz'", "known names: a"]);
}

#[test]
fn train_resumes_after_sigint_to_the_uninterrupted_result() {
    let tmp = setup();
    let d = tmp.path();
    let cfg = CONFIG.replace("iters = 1500", "iters = 3000").replace("checkpoint_every = 100", "checkpoint_every = 0");
    std::fs::write(d.join("long.toml"), cfg).unwrap();
    ok(d, &["train", "long.toml", "--run-name", "whole"]);
    let child = Command::new(EBM)
        .current_dir(d)
        .args(["train", "long.toml", "--run-name", "cut"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = d.join("runs/cut/metrics.csv");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map(|t| t.lines().count()).unwrap_or(0) < 3 {
        assert!(start.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("ebm train --resume"), "{err}");
    assert!(!d.join("runs/cut/summary.json").exists());
    let out = ok(d, &["train", "--resume", "runs/cut"]);
    assert!(out.contains("resumes at update"), "{out}");
    let (a, b) = (json(d.join("runs/whole/summary.json")), json(d.join("runs/cut/summary.json")));
    assert_eq!(a["metrics"], b["metrics"], "resumed run differs from the uninterrupted one");
    let wa = std::fs::read(d.join("runs/whole/model.safetensors")).unwrap();
    assert_eq!(wa, std::fs::read(d.join("runs/cut/model.safetensors")).unwrap());
    let out = ok(d, &["train", "--resume", "runs/cut"]);
    assert!(out.contains("finished before"), "{out}");
}
