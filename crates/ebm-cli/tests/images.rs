//! Images through the command line: the shipped digits with a conv EBM (contrastive) and with a labelled
//! noise-conditional U-Net (DSM, annealed sampling), sampled per label and composed across labels. Tiny
//! budgets: these check the paths and the files, the learning itself is checked by the experiments.

use std::path::Path;
use std::process::Command;

const EBM: &str = env!("CARGO_BIN_EXE_ebm");

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(EBM).current_dir(dir).args(args).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "ebm {args:?} failed:\n{out}\n{err}");
    format!("{out}{err}")
}

fn png_size(p: &Path) -> (u32, u32) {
    image::image_dimensions(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn digits_train_sample_and_compose_by_label() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../experiments/ebm/digits.toml");
    let sets = [
        "train.iters=20",
        "train.checkpoint_every=0",
        "sampling.n=16",
        "sampling.steps=20",
        "sampling.sampler.steps_per_level=2",
        "model.widths=[8,8,8]",
    ];
    let mut args = vec!["train", cfg, "--run-name", "unet", "--threads", "1", "--device", "cpu"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let out = ok(d, &args);
    assert!(out.contains("sampler annealed"), "{out}");
    let run = d.join("runs/unet");
    assert_eq!(png_size(&run.join("samples.png")).0, png_size(&run.join("samples.png")).1, "a square grid");
    assert!(run.join("samples.npy").is_file());
    let data: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("data.json")).unwrap()).unwrap();
    assert_eq!(data["event_shape"], serde_json::json!([1, 8, 8]));
    assert_eq!(data["label_names"].as_array().unwrap().len(), 10);

    ok(d, &["sample", "runs/unet", "--label", "3", "--n", "9", "--out", "three.png", "--device", "cpu"]);
    let three = tch::Tensor::read_npy(d.join("three.npy")).unwrap();
    assert_eq!(three.size(), [9, 1, 8, 8]);
    let out = ok(
        d,
        &[
            "compose",
            "zero | one",
            "--expert",
            "zero=runs/unet:0",
            "--expert",
            "one=runs/unet:1",
            "--n",
            "4",
            "--out",
            "c.npy",
            "--device",
            "cpu",
        ],
    );
    assert!(out.contains("composition: zero | one"), "{out}");
    assert_eq!(tch::Tensor::read_npy(d.join("c.npy")).unwrap().size(), [4, 1, 8, 8]);
    let o = Command::new(EBM).current_dir(d).args(["sample", "runs/unet", "--label", "eleven"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("eleven"), "{err}");

    // an unconditional conv EBM trained contrastively on the same images
    let conv = [
        "data.labels=false",
        "model={kind=\"conv\",channels=[8,8]}",
        "objective={kind=\"contrastive\",k=5}",
        "sampling.sampler={kind=\"langevin\",step_size=0.01}",
    ];
    let mut args = vec!["train", cfg, "--run-name", "conv", "--threads", "1", "--device", "cpu"];
    for s in sets[..4].iter().chain(&conv) {
        args.extend(["--set", s]);
    }
    ok(d, &args);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("runs/conv/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["model"], "conv");
    assert!(summary["metrics"]["mmd2"].as_f64().unwrap().is_finite());

    // eval on the held-out digits: AIS on the pixel box (chains in atanh coordinates) gives a finite log Z
    let eval = ["eval", "runs/conv", "--samples", "16", "--ais-chains", "16", "--ais-steps", "50", "--out", "e.json"];
    ok(d, &[&eval[..], &["--device", "cpu"]].concat());
    let e: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("e.json")).unwrap()).unwrap();
    let m = |k: &str| e["metrics"][k].as_f64().unwrap_or_else(|| panic!("no {k} in {e}"));
    let ess = m("ais_ess");
    assert!(m("log_z").is_finite() && m("test_ll").is_finite() && (1.0..=16.0 + 1e-9).contains(&ess), "{e}");
}
