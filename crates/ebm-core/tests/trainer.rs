//! Trainer tests. They live in their own test binary (their own process) because bitwise determinism
//! needs libtorch's global RNG to itself: unit tests of other modules run in parallel threads and
//! would draw from it between a step's re-seeding and its use.

use ebm_core::energy::{EnergyModel, Mlp, MlpConfig};
use ebm_core::objective::{ContrastiveConfig, LossOutput, Negatives, Objective, ObjectiveConfig, SmMethod};
use ebm_core::optim::AdamConfig;
use ebm_core::sampler::{BufferConfig, Init, LangevinConfig, SamplerConfig};
use ebm_core::train::*;
use ebm_core::Batch;
use ebm_core::Result;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tch::{nn, Device, Kind, Tensor};

/// Serialises the tests of this binary: each one seeds and draws from the global RNG.
static RNG: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn data() -> TensorData {
    tch::manual_seed(100);
    let x = Tensor::randn([512, 2], (Kind::Float, Device::Cpu)) * 0.5 + 1.0;
    TensorData::new(x).unwrap()
}

fn replay() -> ObjectiveConfig {
    ObjectiveConfig::Contrastive(ContrastiveConfig {
        negatives: Negatives::Replay(BufferConfig { capacity: 256, restart_prob: 0.05, init: Init::default() }),
        k: 5,
        sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(0.01)),
        alpha: 0.1,
    })
}

fn cfg(iters: usize) -> TrainConfig {
    TrainConfig { iters, batch_size: 64, checkpoint_every: 5, keep_checkpoints: 3, log_every: 1, ..Default::default() }
}

/// Trains `iters` steps from seed-fixed initial weights; optionally resumes from `resume`.
fn train(iters: usize, dir: &Path, resume: bool, obj: &ObjectiveConfig) -> (Vec<(String, Tensor)>, MemorySink) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() }).unwrap();
    let objective = obj.build(&m, Device::Cpu).unwrap();
    let mut t = Trainer::new(cfg(iters), &vs, &m, objective, 42).unwrap().with_checkpoints(dir).unwrap();
    if resume {
        t.load_checkpoint(dir).unwrap();
    }
    let mut sink = MemorySink::default();
    t.run(&mut data(), &mut sink, None).unwrap();
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    (vars, sink)
}

fn bitwise_equal(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((n1, t1), (n2, t2))| n1 == n2 && t1.equal(t2))
}

#[test]
fn resumed_run_is_bitwise_identical_to_an_uninterrupted_one() {
    let _g = lock();
    for obj in [replay(), ObjectiveConfig::ScoreMatching { method: SmMethod::Denoising { sigma: 0.1 } }] {
        let full = tempfile::tempdir().unwrap();
        let (want, sink_full) = train(20, full.path(), false, &obj);
        // same config and seed → the same metrics, bit for bit
        let again = tempfile::tempdir().unwrap();
        let (_, sink_again) = train(20, again.path(), false, &obj);
        assert_eq!(sink_full.scalars, sink_again.scalars);
        // a run stopped at step 10, then resumed to 20
        let part = tempfile::tempdir().unwrap();
        let _ = train(10, part.path(), false, &obj);
        let (got, sink_resumed) = train(20, part.path(), true, &obj);
        assert!(bitwise_equal(&want, &got), "resumed weights differ for {obj:?}");
        let tail: Vec<_> = sink_full.scalars.iter().filter(|(_, s, _)| *s > 10).cloned().collect();
        assert_eq!(tail, sink_resumed.scalars, "resumed metrics differ");
        // keep_checkpoints = 3: steps 10, 15, 20 remain
        let steps: Vec<usize> = list_checkpoints(part.path()).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![10, 15, 20]);
    }
}

#[test]
fn corrupt_or_foreign_checkpoints_are_clear_errors_and_change_nothing() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let _ = train(5, dir.path(), false, &replay());
    let ck = dir.path().join("step-00000005");
    let vs = nn::VarStore::new(Device::Cpu);
    // a different architecture
    let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![8], ..Default::default() }).unwrap();
    let obj = replay().build(&m, Device::Cpu).unwrap();
    let mut t = Trainer::new(cfg(10), &vs, &m, obj, 1).unwrap();
    let before: Vec<_> = vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
    let e = t.load_checkpoint(&ck).unwrap_err().to_string();
    assert!(e.contains("different architecture"), "{e}");
    assert!(before.iter().all(|(k, v)| vs.variables()[k].equal(v)), "weights changed by a failed load");
    assert_eq!(t.step(), 0);
    // truncated state file
    let st = ck.join("state.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let vs2 = nn::VarStore::new(Device::Cpu);
    let m2 = Mlp::new(&vs2.root(), &MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() }).unwrap();
    let mut t2 = Trainer::new(cfg(10), &vs2, &m2, replay().build(&m2, Device::Cpu).unwrap(), 1).unwrap();
    let e = t2.load_checkpoint(&ck).unwrap_err().to_string();
    assert!(e.contains("corrupt or truncated") && e.contains("state.safetensors"), "{e}");
    // garbage metadata
    std::fs::write(ck.join("meta.json"), b"{not json").unwrap();
    let e = t2.load_checkpoint(&ck).unwrap_err().to_string();
    assert!(e.contains("corrupt checkpoint metadata"), "{e}");
    // empty folder
    let empty = tempfile::tempdir().unwrap();
    assert!(t2.load_checkpoint(empty.path()).unwrap_err().to_string().contains("no checkpoint"));
}

/// An objective whose loss becomes NaN at chosen calls.
struct Flaky {
    calls: usize,
    nan_at: Vec<usize>,
}
impl Objective for Flaky {
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        self.calls += 1;
        let mut loss = m.f(&batch.x).mean(Kind::Float);
        if self.nan_at.contains(&self.calls) {
            loss *= f64::NAN;
        }
        Ok(LossOutput { loss, metrics: vec![] })
    }
    fn name(&self) -> String {
        "flaky".into()
    }
}

#[test]
fn divergence_stops_with_the_step_or_rolls_back_with_a_lower_lr() {
    let _g = lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flaky = Box::new(Flaky { calls: 0, nan_at: vec![4] });
    let mut t = Trainer::new(cfg(10), &vs, &m, flaky, 0).unwrap().with_checkpoints(dir.path()).unwrap();
    let e = t.run(&mut data(), &mut MemorySink::default(), None).unwrap_err().to_string();
    assert!(e.contains("diverged at step 4") && e.contains("loss is NaN"), "{e}");
    // the checkpoint written before the divergence is intact and loadable
    let ck = list_checkpoints(dir.path()).unwrap();
    assert!(ck.is_empty(), "no checkpoint was due before step 5");

    let c = TrainConfig {
        snapshot_every: 2,
        on_divergence: DivergencePolicy::Rollback { max_retries: 2, lr_factor: 0.5 },
        ..cfg(10)
    };
    let flaky = Box::new(Flaky { calls: 0, nan_at: vec![4, 8] });
    let mut t = Trainer::new(c.clone(), &vs, &m, flaky, 0).unwrap();
    let mut sink = MemorySink::default();
    let out = t.run(&mut data(), &mut sink, None).unwrap();
    assert_eq!(out.rollbacks, 2);
    assert_eq!(out.steps, 10);
    assert!((t.lr() - 0.25e-3).abs() < 1e-12);
    assert_eq!(sink.scalars.iter().filter(|(k, _, _)| k == "train/divergence").count(), 2);
    // more divergences than retries → error
    let flaky = Box::new(Flaky { calls: 0, nan_at: vec![2, 3, 4] });
    let mut t = Trainer::new(c, &vs, &m, flaky, 0).unwrap();
    let e = t.run(&mut data(), &mut MemorySink::default(), None).unwrap_err().to_string();
    assert!(e.contains("gave up after 2 rollbacks"), "{e}");
}

#[test]
fn stop_flag_checkpoints_and_ends_the_run() {
    let _g = lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flag = Arc::new(AtomicBool::new(true));
    let mut t = Trainer::new(cfg(100), &vs, &m, replay().build(&m, Device::Cpu).unwrap(), 0)
        .unwrap()
        .with_checkpoints(dir.path())
        .unwrap()
        .with_stop_flag(flag);
    let out = t.run(&mut data(), &mut MemorySink::default(), None).unwrap();
    assert!(out.interrupted);
    assert_eq!(out.steps, 1);
    assert_eq!(out.last_checkpoint.unwrap(), dir.path().join("step-00000001"));
}

#[test]
fn bad_configs_and_data_are_errors() {
    let _g = lock();
    let c = TrainConfig { optim: AdamConfig { lr: -0.1, ..Default::default() }, ..Default::default() };
    assert!(c.validate().unwrap_err().to_string().contains("learning rate must be > 0, got -0.1"));
    assert!(TrainConfig { batch_size: 0, ..Default::default() }.validate().is_err());
    let e = TensorData::new(Tensor::zeros([0, 2], (Kind::Float, Device::Cpu))).unwrap_err();
    assert!(e.to_string().contains("non-empty"), "{e}");
    let nan = Tensor::from_slice(&[1.0f32, f32::NAN]).view([1, 2]);
    assert!(TensorData::new(nan).unwrap_err().to_string().contains("non-finite"));
    let toml = "iters = 10\nbatch_sise = 3\n";
    let e = toml::from_str::<TrainConfig>(toml).unwrap_err().to_string();
    assert!(e.contains("batch_sise"), "{e}");
}

/// Mounts a tmpfs of `kib` KiB at a fresh folder; unmounted on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(kib: usize) -> std::io::Result<TinyFs> {
        let dir = tempfile::tempdir()?;
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::piped())
            .output()?;
        if !st.status.success() {
            return Err(std::io::Error::other(String::from_utf8_lossy(&st.stderr).to_string()));
        }
        Ok(TinyFs { dir })
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn disk_full_during_a_checkpoint_is_a_clear_error_and_keeps_the_previous_checkpoint() {
    let _g = lock();
    // A real full disk: a 512 KiB tmpfs (needs root, as in CI; elsewhere the test says why it cannot run).
    let fs = match TinyFs::mount(512) {
        Ok(fs) => fs,
        Err(e) if !is_root() => {
            eprintln!("disk-full test needs root to mount a tmpfs ({e}); run `just test` as root to include it");
            return;
        }
        Err(e) => panic!("cannot mount a tmpfs as root: {e}"),
    };
    let dir = fs.dir.path().join("ckpt");
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![32, 32], ..Default::default() }).unwrap();
    let mut t = Trainer::new(cfg(10), &vs, &m, replay().build(&m, Device::Cpu).unwrap(), 0)
        .unwrap()
        .with_checkpoints(&dir)
        .unwrap();
    let first = t.save_checkpoint().unwrap();
    // fill the disk, leaving less room than a checkpoint needs
    let size = std::fs::metadata(first.join("state.safetensors")).unwrap().len() as usize;
    let filler = fs.dir.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    use std::io::Write;
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let keep = std::fs::metadata(&filler).unwrap().len() as usize;
    std::fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len((keep - size / 2) as u64).unwrap();
    // train one more step so the next checkpoint is for another step
    t.train_step(&data().batch(8).unwrap()).unwrap();
    let e = t.save_checkpoint().unwrap_err().to_string();
    assert!(e.contains("No space left on device") && e.contains(&dir.display().to_string()), "{e}");
    // the previous checkpoint is intact, no temporary folder is left, and it still loads
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(names, vec!["step-00000000".to_string()]);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let m2 = Mlp::new(&vs2.root(), &MlpConfig { in_dim: 2, hidden: vec![32, 32], ..Default::default() }).unwrap();
    let mut t2 = Trainer::new(cfg(10), &vs2, &m2, replay().build(&m2, Device::Cpu).unwrap(), 0).unwrap();
    assert_eq!(t2.load_checkpoint(&dir).unwrap(), 0);
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}
