//! Smoke runs of the `exp_images` binary: the `--quick` run on 8×8 digits writes a legible `samples.png` and
//! a `metrics.json` with sane values; a folder of images with a non-image file in it is skipped with a
//! warning naming the file, or rejected, as `--on-bad-image` says; mixed sizes are an error when resizing is
//! off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::{Device, Kind, Tensor};

fn exp_images(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_exp_images"))
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("exp_images starts")
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 33 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

fn metrics(run: &Path) -> serde_json::Value {
    let p = run.join("metrics.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn num(v: &serde_json::Value, path: &str) -> f64 {
    let mut cur = v;
    for k in path.split('.') {
        cur = &cur[k];
    }
    cur.as_f64().unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

#[test]
fn quick_digits_run_writes_samples_grid_and_sane_metrics() {
    let data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/digits.csv.gz"));
    assert!(data.exists(), "{} is missing: run `just setup` (or scripts/fetch-data.sh) first", data.display());
    let out = tempfile::tempdir().unwrap();
    let o =
        exp_images(&["--quick", "--dataset", "digits", "--out", out.path().to_str().unwrap(), "--run-name", "smoke"]);
    assert!(o.status.success(), "{}", text(&o));
    let run = out.path().join("exp_images/smoke");

    // 40 samples, 10 per row, each 8×8 image shown at 32×32 with a 2-pixel border: 342 × 138.
    assert_eq!(png_size(&run.join("samples.png")), (10 * 34 + 2, 4 * 34 + 2));
    for f in ["config.toml", "metrics.csv", "results.md", "figures/buffer.png", "figures/test_images.png"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let events = std::fs::read_dir(&run).unwrap().filter_map(|e| e.ok()).any(|e| {
        e.file_name().to_string_lossy().starts_with("events.out.tfevents") && e.metadata().unwrap().len() > 1000
    });
    assert!(events, "no TensorBoard event file with images in {}", run.display());

    let m = metrics(&run);
    assert_eq!(m["dataset"], "digits");
    assert_eq!(num(&m, "iters"), 40.0);
    assert_eq!(num(&m, "n_train") + num(&m, "n_test"), 1797.0);
    assert_eq!(m["image_shape"], serde_json::json!([1, 8, 8]));
    // even 2 epochs of the classifier beat chance (10%) by far
    let acc = num(&m, "classifier_test_accuracy");
    assert!((0.5..=1.0).contains(&acc), "classifier accuracy {acc}");
    let max_p = num(&m, "samples.mean_max_prob");
    assert!((0.1..=1.0).contains(&max_p), "mean max-prob {max_p}");
    let h = num(&m, "samples.class_entropy");
    assert!((0.0..=10f64.ln() + 1e-9).contains(&h), "class entropy {h}");
    let shares: f64 = m["samples"]["class_shares"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    // the real test images are what the classifier was trained to recognise
    assert!(num(&m, "test_images.mean_max_prob") > max_p - 0.3);
    let log_z = num(&m, "ais.log_z");
    let ll = num(&m, "ais.test_ll");
    assert!(log_z.is_finite() && ll.is_finite() && ll < 50.0, "log Z {log_z}, test LL {ll}");
    assert_eq!(num(&m, "ais.uniform_ll"), -64.0 * 2f64.ln());
    for k in ["ood_auroc_noise", "ood_auroc_shuffled"] {
        assert!((0.0..=1.0).contains(&num(&m, k)), "{k}");
    }
    assert!(num(&m, "total_seconds") > 0.0);
    let md = std::fs::read_to_string(run.join("results.md")).unwrap();
    assert!(md.contains("mean max-probability") && md.contains("AIS log Z"), "{md}");

    // --resume of the finished run only samples and evaluates the trained model again, to the same numbers
    let o = exp_images(&["--resume", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resumes at update 40"), "{}", text(&o));
    let again = metrics(&run);
    assert_eq!(num(&again, "iters"), 40.0);
    assert_eq!(num(&again, "classifier_test_accuracy"), acc, "same seed, same classifier");
    assert_eq!(num(&again, "ais.log_z"), log_z, "same model, same AIS");
    assert!(num(&again, "train_seconds") < 1.0, "no training after resuming at the last update");
}

#[test]
fn quick_jem_and_drl_runs_report_their_classifier_density_and_the_gaussian_baseline() {
    let out = tempfile::tempdir().unwrap();
    let mut gaussian = Vec::new();
    for method in ["jem", "drl"] {
        let o =
            exp_images(&["--quick", "--method", method, "--out", out.path().to_str().unwrap(), "--run-name", method]);
        assert!(o.status.success(), "{}", text(&o));
        let run = out.path().join("exp_images").join(method);
        let m = metrics(&run);
        assert_eq!(m["method"], method);
        if method == "jem" {
            let acc = num(&m, "jem_classifier.test_accuracy");
            let ece = num(&m, "jem_classifier.ece");
            assert!((0.2..=1.0).contains(&acc) && (0.0..=1.0).contains(&ece), "accuracy {acc}, ECE {ece}");
        } else {
            assert!(m["jem_classifier"].is_null());
        }
        let (log_z, ll, se) = (num(&m, "ais.log_z"), num(&m, "ais.test_ll"), num(&m, "ais.test_ll_std_err"));
        assert!(log_z.is_finite() && ll.is_finite(), "log Z {log_z}, test LL {ll}");
        // the test LL's error holds log Z's
        assert!(se >= num(&m, "ais.log_z_std_err") && num(&m, "ais.test_ll_sd") > 0.0);
        // digits have 17 grey levels on [-1, 1]: the ridge is (2/16)²/12
        assert!((num(&m, "gaussian.ridge") - 0.125f64.powi(2) / 12.0).abs() < 1e-12);
        gaussian.push(num(&m, "gaussian.test_ll"));
        let md = std::fs::read_to_string(run.join("results.md")).unwrap();
        assert!(md.contains("Gaussian baseline"), "{md}");
    }
    // the baseline depends on the split only
    assert_eq!(gaussian[0], gaussian[1]);
    assert!(gaussian[0] > -64.0 * 2f64.ln(), "the Gaussian beats uniform: {}", gaussian[0]);
}

#[test]
fn saved_weights_are_evaluated_again_with_a_fitted_ais_base_and_resampling() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let first = exp_images(&["--quick", "--method", "drl", "--out", o, "--run-name", "trained"]);
    assert!(first.status.success(), "{}", text(&first));
    let trained = out.path().join("exp_images").join("trained");
    let ckpt = format!("eval.checkpoint={}", trained.join("checkpoints").display());
    let again = exp_images(&[
        "--quick",
        "--method",
        "drl",
        "--out",
        o,
        "--run-name",
        "again",
        "--set",
        &ckpt,
        "--set",
        r#"eval.ais.base={kind="fitted_gaussian",components="per_class"}"#,
        "--set",
        "eval.ais.resample={ess_fraction=0.5,groups=4}",
    ]);
    assert!(again.status.success(), "{}", text(&again));
    let (m0, m1) = (metrics(&trained), metrics(&out.path().join("exp_images").join("again")));
    // the same weights: the same samples' score and the same f on the test images
    assert_eq!(num(&m1, "samples.mean_max_prob"), num(&m0, "samples.mean_max_prob"));
    assert_eq!(num(&m1, "ais.test_f_mean"), num(&m0, "ais.test_f_mean"));
    assert!(num(&m1, "train_seconds") < 1.0, "no training");
    assert!(num(&m1, "ais.base_test_ll").is_finite() && m0["ais"]["base_test_ll"].is_null());
    assert_eq!(m1["ais"]["group_log_z"].as_array().unwrap().len(), 4);
    assert!(num(&m1, "ais.log_z").is_finite());
    let md = std::fs::read_to_string(out.path().join("exp_images").join("again").join("results.md")).unwrap();
    assert!(md.contains("per-class mixture") && md.contains("Not trained here"), "{md}");
    // a bad base is named by its key
    let bad = exp_images(&["--quick", "--out", o, "--set", r#"eval.ais.base={kind="fitted_gaussian",min_std=-1}"#]);
    assert!(!bad.status.success() && text(&bad).contains("eval.ais.base.min_std"), "{}", text(&bad));
}

/// Writes one gray image of `h × w` pixels with value `v` (in [0, 1]) as a PNG.
fn write_png(path: &Path, h: i64, w: i64, v: f64) {
    // image_grid adds a 2-pixel border: ask for (h - 4) × (w - 4) so the file is h × w.
    let t = Tensor::full([1, 1, h - 4, w - 4], v, (Kind::Float, Device::Cpu));
    ebm_log::plot::image_grid(path, &t, (0.0, 1.0), 1).unwrap();
    assert_eq!(png_size(path), (w as u32, h as u32));
}

#[test]
fn image_folder_bad_files_are_skipped_or_rejected_and_sizes_checked() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..8 {
        write_png(&imgs.join(format!("a{i}.png")), 12, 12, i as f64 / 8.0);
    }
    write_png(&imgs.join("big.png"), 16, 20, 0.5);
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
    let spec = format!("folder:{}", imgs.display());
    let out = dir.path().join("runs");
    let base = ["--quick", "--dataset", &spec, "--out", out.to_str().unwrap(), "--set", "eval.ais.steps=10"];

    // skip: a warning names the file, the run goes on with the 9 images (big.png resized to 12 × 12)
    let o = exp_images(&[&base[..], &["--run-name", "skip", "--on-bad-image", "skip"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("warning: skipped") && stderr.contains("notes.txt"), "{stderr}");
    let m = metrics(&out.join("exp_images/skip"));
    assert_eq!(num(&m, "n_train") + num(&m, "n_test"), 9.0);
    assert_eq!(num(&m, "resized"), 1.0);
    assert_eq!(m["image_shape"], serde_json::json!([1, 12, 12]));
    assert!(m["skipped_files"][0].as_str().unwrap().ends_with("notes.txt"));
    assert!(m["classifier_test_accuracy"].is_null(), "an unlabelled folder has no classifier");

    // error: the run stops before training, naming the file
    let o = exp_images(&[&base[..], &["--run-name", "error", "--on-bad-image", "error"]].concat());
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("notes.txt") && stderr.contains("not a readable image"), "{stderr}");

    // mixed sizes with resizing off: an error naming the odd image and both sizes
    let o = exp_images(&[&base[..], &["--run-name", "strict", "--set", "data.folder.resize=false"]].concat());
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("big.png") && stderr.contains("16×20") && stderr.contains("12×12"), "{stderr}");

    // a bad flag value is a clear error
    let o = exp_images(&[&base[..], &["--on-bad-image", "ignore"]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("skip or error"), "{}", text(&o));
}
