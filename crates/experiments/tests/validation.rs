//! Bad input through the binaries: one clear error naming the problem in the user's own terms (the config key
//! they wrote, the file and line), exit code 1 (no panic, no abort, no C++ trace), and nothing written: the run
//! folder `<out>/<experiment>/<run-name>` does not exist, so the corrected command can be re-run with the same
//! `--run-name`. One successful run checks that `--quick` keeps what the user set, that a relative CSV path is
//! saved absolute, and that a CSV outlier is a warning naming file, line and value.

use std::path::{Path, PathBuf};
use std::process::Command;

const CD_VS_SM: &str = env!("CARGO_BIN_EXE_exp_cd_vs_sm");
const IMAGES: &str = env!("CARGO_BIN_EXE_exp_images");
const POE: &str = env!("CARGO_BIN_EXE_exp_poe");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn experiment(bin: &str) -> &'static str {
    ["exp_cd_vs_sm", "exp_images", "exp_poe"].into_iter().find(|e| bin.ends_with(e)).expect("an experiment binary")
}

/// Runs `bin` (shipped config, CPU, one thread unless `args` says otherwise) with `args`, expects it to fail
/// with exit code 1 before creating its run folder, and returns its stderr.
fn fails(bin: &str, args: &[&str]) -> String {
    let out = tempfile::tempdir().unwrap();
    let exp = experiment(bin);
    let mut cmd = Command::new(bin);
    cmd.current_dir(repo_root()).env("RUST_BACKTRACE", "0");
    cmd.arg("--config").arg(repo_root().join("experiments").join(format!("{exp}.toml")));
    cmd.args(["--device", "cpu", "--out"]).arg(out.path());
    if !args.contains(&"--threads") {
        cmd.args(["--threads", "1"]);
    }
    if !args.contains(&"--run-name") {
        cmd.args(["--run-name", "bad"]);
    }
    let o = cmd.args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{exp} {args:?} must fail with exit code 1:\n{err}");
    for crash in ["panicked", "stack overflow", "frame #", "memory allocation of"] {
        assert!(!err.contains(crash), "{exp} {args:?} crashed instead of an error:\n{err}");
    }
    assert!(err.contains("Error: "), "{err}");
    let run = out.path().join(exp).join("bad");
    assert!(!run.exists(), "{exp} {args:?} created {} before failing:\n{err}", run.display());
    assert!(!err.contains("ebm-rs: run folder"), "{exp} {args:?} got as far as the run folder:\n{err}");
    err
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `n` points of a smooth 2-D cloud as CSV text with an `x,y` header, and `extra` lines appended.
fn cloud_csv(n: usize, extra: &str) -> String {
    let mut s = String::from("x,y\n");
    for i in 0..n {
        s.push_str(&format!("{:.4},{:.4}\n", (i as f64 * 0.37).sin() * 2.0, (i as f64 * 0.11).cos()));
    }
    s.push_str(extra);
    s
}

#[test]
fn a_model_input_width_other_than_the_datas_is_an_error_naming_the_key() {
    let e = fails(CD_VS_SM, &["--set", "model.in_dim=3"]);
    assert!(e.contains("model.in_dim = 3") && e.contains("width 2"), "{e}");
    let e = fails(POE, &["--no-images", "--set", "toy.model.in_dim=3"]);
    assert!(e.contains("toy.model.in_dim = 3") && e.contains("width 2"), "{e}");
}

#[test]
fn sizes_beyond_the_available_memory_are_refused_naming_the_key_and_the_estimate() {
    if !Path::new("/proc/meminfo").exists() {
        eprintln!("no /proc/meminfo: the memory check is skipped on this machine");
        return;
    }
    let e = fails(CD_VS_SM, &["--set", "model.hidden=[100000,100000]"]);
    assert!(e.contains("model.hidden = [100000, 100000] needs too much memory") && e.contains(" GB"), "{e}");
    assert!(e.contains("MemAvailable"), "{e}");
    let e = fails(POE, &["--no-2d", "--set", "images.shapes.image_size=100000"]);
    assert!(e.contains("images.shapes.image_size = 100000") && e.contains(" GB"), "{e}");
    // a folder of images brought to 100000×100000
    let dir = tempfile::tempdir().unwrap();
    image::GrayImage::from_pixel(4, 4, image::Luma([200u8])).save(dir.path().join("a.png")).unwrap();
    let folder = format!("folder:{}", dir.path().display());
    let e = fails(IMAGES, &["--dataset", &folder, "--set", "data.folder.image_size=[100000,100000]"]);
    assert!(e.contains("data.folder.image_size = [100000, 100000]") && e.contains(" GB"), "{e}");
}

#[test]
fn absurd_thread_counts_are_refused_naming_threads_and_the_cores() {
    for bin in [CD_VS_SM, IMAGES, POE] {
        let e = fails(bin, &["--threads", "100000"]);
        assert!(e.contains("threads = 100000") && e.contains("--threads") && e.contains("core(s)"), "{e}");
    }
}

#[test]
fn run_names_with_control_characters_are_refused() {
    let e = fails(CD_VS_SM, &["--run-name", "bad\nname"]);
    assert!(e.contains("--run-name") && e.contains("control character"), "{e}");
}

#[test]
fn an_expression_nested_20000_deep_is_an_error_at_its_column() {
    let deep = format!("{}right{}", "(".repeat(20_000), ")".repeat(20_000));
    let e = fails(POE, &["--no-images", "--expressions", &deep]);
    assert!(e.contains("toy.expressions") && e.contains("nests deeper than 64 levels"), "{}", &e[..e.len().min(500)]);
    assert!(e.contains("at column 65 "), "{}", &e[..e.len().min(500)]);
}

#[test]
fn csv_data_with_too_few_rows_no_spread_or_outliers_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.csv");
    write(&two, "x,y\n1,2\n3,4\n");
    let e = fails(CD_VS_SM, &["--datasets", two.to_str().unwrap()]);
    assert!(e.contains(two.to_str().unwrap()) && e.contains("only 2 data row(s); at least 10"), "{e}");
    let one = dir.path().join("one.csv");
    write(&one, "x,y\n1,2\n");
    let e = fails(CD_VS_SM, &["--datasets", one.to_str().unwrap()]);
    assert!(e.contains(one.to_str().unwrap()) && e.contains("no spread in column x"), "{e}");
    assert!(!e.contains("AxesBox"), "{e}");
    let flat = dir.path().join("flat.csv");
    write(&flat, &(0..30).map(|i| format!("{i},7\n")).collect::<String>());
    let e = fails(CD_VS_SM, &["--datasets", flat.to_str().unwrap()]);
    assert!(e.contains(flat.to_str().unwrap()) && e.contains("no spread in column y"), "{e}");
    // one x = 1e30 among 3 000 points: with data_outliers = "error" it is refused, naming file, line and value
    let far = dir.path().join("far.csv");
    let mut text = cloud_csv(1500, "1e30,0.5\n");
    text.push_str(&cloud_csv(1499, "")[4..]);
    write(&far, &text);
    let e = fails(CD_VS_SM, &["--datasets", far.to_str().unwrap(), "--set", "data_outliers=\"error\""]);
    assert!(e.contains(far.to_str().unwrap()) && e.contains("line 1502: x = 1e30"), "{e}");
    assert!(e.contains("data_outliers"), "{e}");
}

#[test]
fn library_errors_name_the_keys_the_user_wrote() {
    let cases: [(&str, &[&str], &str, &str); 15] = [
        (CD_VS_SM, &["--set", "train.optim.lr=-1"], "invalid value for train.optim.lr", "for optim.lr"),
        (CD_VS_SM, &["--set", "cd.k=0"], "invalid value for cd.k", "contrastive.k"),
        (CD_VS_SM, &["--set", "cd.buffer_capacity=0"], "invalid value for cd.buffer_capacity", "buffer.capacity"),
        (CD_VS_SM, &["--set", "cd.restart_prob=2"], "invalid value for cd.restart_prob", "buffer.restart_prob"),
        (CD_VS_SM, &["--set", "sm.dsm_sigma=0"], "invalid value for sm.dsm_sigma", "score_matching"),
        (CD_VS_SM, &["--set", "cd.langevin.step_size=0"], "invalid value for cd.langevin.step_size", "for langevin"),
        (CD_VS_SM, &["--set", "model.hidden=[0]"], "invalid value for model.hidden", "mlp.hidden"),
        (IMAGES, &["--set", "train.optim.lr=0"], "invalid value for train.optim.lr", "for optim.lr"),
        (IMAGES, &["--set", "cd.alpha=-1"], "invalid value for cd.alpha", "contrastive.alpha"),
        (IMAGES, &["--set", "eval.ais.target_accept=2"], "invalid value for eval.ais.target_accept", "transition"),
        (POE, &["--set", "toy.cd.k=0"], "invalid value for toy.cd.k", "contrastive.k"),
        (POE, &["--set", "toy.train.optim.lr=0"], "invalid value for toy.train.optim.lr", "for optim.lr"),
        (POE, &["--set", "images.cd.k=0"], "invalid value for images.cd.k", "contrastive.k"),
        (POE, &["--set", "images.optim.lr=0"], "invalid value for images.optim.lr", "for optim.lr"),
        (POE, &["--set", "images.net.widths=[]"], "invalid value for images.net.widths", "conditional.widths"),
    ];
    for (bin, args, want, internal) in cases {
        let e = fails(bin, args);
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(!e.contains(internal), "{args:?} names the library's path {internal}: {e}");
    }
}

#[test]
fn errors_that_came_after_the_run_folder_now_come_before_it() {
    // unused settings are checked too: sm.probes with only CD-1, dsm_sigma with only CD-1
    let e = fails(CD_VS_SM, &["--methods", "cd1", "--set", "sm.probes=0"]);
    assert!(e.contains("invalid value for sm.probes"), "{e}");
    let e = fails(CD_VS_SM, &["--methods", "cd1", "--set", "sm.dsm_sigma=0"]);
    assert!(e.contains("invalid value for sm.dsm_sigma"), "{e}");
    let e = fails(IMAGES, &["--set", "model.channels=[]"]);
    assert!(e.contains("invalid value for model.channels"), "{e}");
    let e = fails(IMAGES, &["--set", "cd.k=0"]);
    assert!(e.contains("invalid value for cd.k"), "{e}");
    let e = fails(IMAGES, &["--method", "dsm", "--set", "cd.k=0"]);
    assert!(e.contains("invalid value for cd.k"), "{e}");
}

#[test]
fn the_same_data_set_twice_or_two_csvs_sharing_a_folder_are_errors_naming_both() {
    let e = fails(CD_VS_SM, &["--datasets", "8gaussians,8gaussians"]);
    assert!(e.contains("same data set twice ('8gaussians' and '8gaussians')"), "{e}");
    let e = fails(CD_VS_SM, &["--datasets", "8gaussians,eight-gaussians"]);
    assert!(e.contains("'8gaussians' and 'eight-gaussians'"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a/good.csv"), dir.path().join("a_good.csv"));
    write(&a, &cloud_csv(50, ""));
    write(&b, &cloud_csv(60, ""));
    let list = format!("{},{}", a.display(), b.display());
    let e = fails(CD_VS_SM, &["--datasets", &list]);
    assert!(e.contains(&a.display().to_string()) && e.contains(&b.display().to_string()), "{e}");
    assert!(e.contains("would share the folder"), "{e}");
}

#[test]
fn quick_keeps_what_the_user_set_and_a_relative_csv_path_is_saved_absolute() {
    let cwd = tempfile::tempdir().unwrap();
    // x = 500 on line 42 (the header is line 1): far from the rest, a warning by default
    let mut text = cloud_csv(40, "500,0.5\n");
    text.push_str(&cloud_csv(300, "")[4..]);
    write(&cwd.path().join("data/pts.csv"), &text);
    let out = cwd.path().join("runs");
    let o = Command::new(CD_VS_SM)
        .current_dir(cwd.path())
        .env("RUST_BACKTRACE", "0")
        .arg("--config")
        .arg(repo_root().join("experiments/exp_cd_vs_sm.toml"))
        .args(["--device", "cpu", "--threads", "1", "--quick", "--run-name", "r", "--out"])
        .arg(&out)
        .args(["--datasets", "data/pts.csv", "--methods", "dsm", "--iters", "61"])
        .args(["--set", "sampling.n=301", "--set", "eval.every=61", "--set", "eval.image_every=61"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: ") && err.contains("line 42: x = 500 lies"), "{err}");
    let run = out.join("exp_cd_vs_sm/r");
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg["train"]["iters"].as_integer(), Some(61), "--iters wins over --quick's 60");
    assert_eq!(cfg["sampling"]["n"].as_integer(), Some(301), "--set wins over --quick's 300");
    assert_eq!(cfg["sampling"]["langevin_steps"].as_integer(), Some(60), "what was not set is still quick");
    let abs = std::fs::canonicalize(cwd.path().join("data/pts.csv")).unwrap();
    let saved = cfg["datasets"].as_array().unwrap()[0].as_str().unwrap().to_string();
    assert!(Path::new(&saved).is_absolute(), "{saved}");
    assert_eq!(std::fs::canonicalize(&saved).unwrap(), abs);
    // the table names the file, not its whole path (it is the only pts.csv)
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().starts_with("pts.csv,dsm,"), "{csv}");
}
