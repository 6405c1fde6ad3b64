//! Helpers shared by the TensorBoard integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use ebm_log::{HParamValue, TensorBoardWriter};
use image::{Rgb, RgbImage};

/// The workspace root (two levels above this crate's manifest).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root exists")
}

fn imports_tensorboard(python: &Path) -> bool {
    Command::new(python).args(["-c", "import tensorboard"]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// The `.venv` python with `tensorboard` importable, installing the package if it is missing.
/// Panics (fails the test, never skips it) when that is impossible.
pub fn ensure_tensorboard() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run `just setup` (it creates .venv) before the TensorBoard tests",
        python.display()
    );
    if !imports_tensorboard(&python) {
        let pip = root.join(".venv/bin/pip");
        let status = Command::new(&pip).args(["install", "-q", "--disable-pip-version-check", "tensorboard"]).status();
        assert!(
            matches!(status, Ok(s) if s.success()) && imports_tensorboard(&python),
            "could not install the `tensorboard` Python package with {} ({status:?}); run \
             `just setup` and then `just tensorboard` (or `.venv/bin/pip install tensorboard`)",
            pip.display()
        );
    }
    python
}

/// The 7×5 test image: red increases with x, green with y, blue fixed.
pub fn test_image() -> RgbImage {
    RgbImage::from_fn(7, 5, |x, y| Rgb([(x * 36) as u8, (y * 60) as u8, 200]))
}

/// Markdown text logged as the run's config.
pub const CONFIG_TEXT: &str = "```toml\nlr = 0.01\nmethod = \"cd\"\n```";

/// Writes a run with scalars, an image, histograms, text and hparams into `dir`.
pub fn write_sample_run(dir: &Path) -> PathBuf {
    let mut w = TensorBoardWriter::create(dir).unwrap();
    for step in 0..=10u64 {
        w.add_scalar("train/loss", step, 1.0 / (step as f64 + 1.0)).unwrap();
        if step % 5 == 0 {
            w.add_scalar("eval/nll", step, 2.0 - step as f64 * 0.1).unwrap();
        }
    }
    w.add_image("samples", 3, &test_image()).unwrap();
    w.add_histogram("weights", 2, &[0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 3.5], 4).unwrap();
    let t = tch::Tensor::from_slice(&[-1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]).reshape([2, 3]);
    w.add_histogram_tensor("weights", 4, &t, 2).unwrap();
    w.add_text("config", 0, CONFIG_TEXT).unwrap();
    let hparams: Vec<(&str, HParamValue)> =
        vec![("method", "cd".into()), ("lr", 0.01.into()), ("steps", 1000u64.into()), ("persistent", true.into())];
    w.add_hparams(&hparams, &[("hparam/nll", 1.25)], 10).unwrap();
    w.flush().unwrap();
    w.path().to_path_buf()
}
