//! `exp_poe --quick` end to end: it must finish fast and write every output file, and bad expressions given
//! on the command line must fail with a message pointing at the problem.

use std::path::Path;
use std::process::Command;

fn exp_poe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_exp_poe"));
    // the repository's config file is the default; pin it so the test sees the shipped settings
    c.arg("--config").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/exp_poe.toml"));
    c
}

#[test]
fn quick_run_writes_results_figures_and_tensorboard_logs() {
    let out = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let res = exp_poe()
        .args(["--quick", "--device", "cpu", "--threads", "1", "--run-name", "smoke", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "exp_poe --quick failed:\n{stderr}");
    assert!(secs < 60.0, "--quick took {secs:.1} s");
    let run = out.path().join("exp_poe").join("smoke");
    for f in ["config.toml", "results.md", "results.json", "figures/poe_2d.png", "figures/poe_images.png"] {
        let p = run.join(f);
        assert!(p.is_file() && std::fs::metadata(&p).unwrap().len() > 0, "missing {}", p.display());
    }
    // one TensorBoard run for the compositions, one per trained model
    for dir in
        [run.clone(), run.join("2d/right"), run.join("2d/upper"), run.join("images/shape"), run.join("images/joint")]
    {
        let events = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents."));
        assert!(events, "no TensorBoard events in {}", dir.display());
    }
    let csv = std::fs::read_to_string(run.join("2d/right/metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("train/loss"), "{csv}");
    // the results: one row per 2-D expression (plus raw-Z rows for OR), two per image target
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    let exprs = cfg["toy"]["expressions"].as_array().unwrap();
    let n_or = exprs.iter().filter(|e| e.as_str().unwrap().contains('|')).count();
    assert_eq!(json["toy"].as_array().unwrap().len(), exprs.len() + n_or);
    let targets = cfg["images"]["targets"].as_array().unwrap();
    assert_eq!(json["images"].as_array().unwrap().len(), 2 * targets.len());
    for row in json["toy"].as_array().unwrap() {
        for k in ["satisfied", "satisfied_model", "satisfied_true", "tv_true"] {
            let v = row[k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{k} = {v}");
        }
        assert_eq!(row["modes"].as_array().unwrap().len(), 8);
    }
    let first = &json["images"][0];
    assert_eq!(first["target"], "triangle & blue");
    assert_eq!(first["held_out"], true);
    assert!((first["chance"].as_f64().unwrap() - 1.0 / 9.0).abs() < 1e-12);
    let md = std::fs::read_to_string(run.join("results.md")).unwrap();
    assert!(md.contains("| `right & upper` |") && md.contains("| `triangle & blue` | yes | composition |"), "{md}");
}

#[test]
fn bad_expressions_fail_with_the_position_and_the_known_names() {
    let out = tempfile::tempdir().unwrap();
    let res = exp_poe().args(["--quick", "--expressions", "right & uper", "--out"]).arg(out.path()).output().unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("unknown name 'uper' at column 9"), "{err}");
    assert!(err.contains("known names: left, lower, right, upper"), "{err}");
    assert!(err.contains("right & uper\n            ^^^^"), "{err}");
    let res = exp_poe().args(["--quick", "--targets", "triangle && blue", "--out"]).arg(out.path()).output().unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("found '&' at column 11"), "{err}");
    // nothing was written for a rejected config
    assert!(!out.path().join("exp_poe").exists());
}

#[test]
fn exact_experts_replace_the_trained_ones_and_are_not_trained() {
    let out = tempfile::tempdir().unwrap();
    let res = exp_poe()
        .args(["--quick", "--no-2d", "--device", "cpu", "--threads", "1", "--run-name", "exact", "--out"])
        .arg(out.path())
        .args(["--set", r#"images.exact_experts=["shape"]"#, "--set", "images.baseline=false"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "exp_poe with an exact shape expert failed:\n{stderr}");
    let run = out.path().join("exp_poe").join("exact");
    assert!(run.join("images/colour/model.safetensors").is_file());
    assert!(!run.join("images/shape").exists(), "the exact shape expert was trained");
    let md = std::fs::read_to_string(run.join("results.md")).unwrap();
    assert!(md.contains("the shape experts are the exact noisy densities of the training data"), "{md}");
    assert!(md.contains("| `triangle & blue` | yes | composition |"), "{md}");
    assert!(!md.contains("joint-label baseline") && !md.contains("joint baseline"), "no baseline was asked for:\n{md}");
}
