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
    train_fp(iters, dir, resume, obj, None)
}

/// [`train`] by a trainer with an optional fingerprint.
fn train_fp(
    iters: usize,
    dir: &Path,
    resume: bool,
    obj: &ObjectiveConfig,
    fingerprint: Option<&str>,
) -> (Vec<(String, Tensor)>, MemorySink) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() }).unwrap();
    let objective = obj.build(&m, Device::Cpu).unwrap();
    let mut t = Trainer::new(cfg(iters), &vs, &m, objective, 42).unwrap().with_checkpoints(dir).unwrap();
    if let Some(f) = fingerprint {
        t = t.with_fingerprint(f);
    }
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

/// A rollback deletes the checkpoints written on the abandoned path, so that a resume cannot pick one.
#[test]
fn a_rollback_removes_the_checkpoints_past_the_step_it_returns_to() {
    /// Lists the checkpoints when the trainer restarts the sink after a rollback.
    struct Watch<'a>(&'a Path, Vec<(u64, Vec<usize>)>);
    impl MetricsSink for Watch<'_> {
        fn scalar(&mut self, _: &str, _: u64, _: f64) -> SinkResult {
            Ok(())
        }
        fn flush(&mut self) -> SinkResult {
            Ok(())
        }
        fn restart(&mut self, step: u64) -> SinkResult {
            let steps = list_checkpoints(self.0).unwrap().into_iter().map(|(s, _)| s).collect();
            self.1.push((step, steps));
            Ok(())
        }
    }
    let _g = lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = TrainConfig {
        checkpoint_every: 1,
        keep_checkpoints: 20,
        snapshot_every: 2,
        on_divergence: DivergencePolicy::Rollback { max_retries: 1, lr_factor: 0.5 },
        ..cfg(8)
    };
    // NaN at the 7th call: steps 1-6 are done and checkpointed, then it rolls back to an earlier snapshot
    let flaky = Box::new(Flaky { calls: 0, nan_at: vec![7] });
    let mut t = Trainer::new(c, &vs, &m, flaky, 0).unwrap().with_checkpoints(dir.path()).unwrap();
    let mut watch = Watch(dir.path(), Vec::new());
    let out = t.run(&mut data(), &mut watch, None).unwrap();
    assert_eq!((out.rollbacks, out.steps), (1, 8));
    let [(back_to, left)] = &watch.1[..] else { panic!("one restart expected: {:?}", watch.1) };
    assert!(*back_to < 6, "rolled back to step {back_to}");
    let want: Vec<usize> = (1..=*back_to as usize).collect();
    assert_eq!(left, &want, "only the checkpoints up to the step rolled back to are left");
    let steps: Vec<usize> = list_checkpoints(dir.path()).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>(), "the kept path is checkpointed at every step");
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

// ---------------------------------------------------------------------------------------------------------
// A run folder that cannot lie: checkpoint integrity, logs flushed before checkpoints, rollbacks without
// zig-zags in the logs, stale temporary folders, and the loss limit.

/// Loads `ck` into a fresh trainer (the architecture of [`train`]) with objective `obj` and an optional
/// fingerprint. On an error, checks that the failed load changed neither the weights nor the step.
fn try_load(ck: &Path, obj: &ObjectiveConfig, fingerprint: Option<&str>) -> std::result::Result<usize, String> {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() }).unwrap();
    let mut t = Trainer::new(cfg(100), &vs, &m, obj.build(&m, Device::Cpu).unwrap(), 42).unwrap();
    if let Some(f) = fingerprint {
        t = t.with_fingerprint(f);
    }
    let before: Vec<_> = vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
    match t.load_checkpoint(ck) {
        Ok(step) => Ok(step),
        Err(e) => {
            assert!(before.iter().all(|(k, v)| vs.variables()[k].equal(v)), "weights changed by a refused load");
            assert_eq!(t.step(), 0, "step changed by a refused load");
            Err(e.to_string())
        }
    }
}

fn cdk() -> ObjectiveConfig {
    ObjectiveConfig::Contrastive(ContrastiveConfig {
        negatives: Negatives::Data,
        k: 5,
        sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(0.01)),
        alpha: 0.1,
    })
}

fn pcd() -> ObjectiveConfig {
    ObjectiveConfig::Contrastive(ContrastiveConfig {
        negatives: Negatives::Persistent { init: Init::default() },
        k: 5,
        sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(0.01)),
        alpha: 0.1,
    })
}

fn edit_meta(ck: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = ck.join("meta.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn checkpoint_whose_state_bytes_changed_is_refused() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let _ = train(5, dir.path(), false, &replay());
    let ck = dir.path().join("step-00000005");
    assert_eq!(try_load(&ck, &replay(), None), Ok(5), "the untouched checkpoint loads");
    // flip bytes in the middle of the tensor data; the safetensors header stays intact
    let st = ck.join("state.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mid = data_start + (bytes.len() - data_start) / 2;
    bytes[mid] ^= 0x5a;
    bytes[mid + 1] ^= 0x0f;
    std::fs::write(&st, &bytes).unwrap();
    assert!(Tensor::read_safetensors(&st).is_ok(), "the file still parses: only a checksum can tell");
    let e = try_load(&ck, &replay(), None).unwrap_err();
    assert!(e.contains(&ck.display().to_string()), "{e}");
    assert!(e.contains("checkpoint refused: state.safetensors is corrupt or truncated: its SHA-256 is"), "{e}");
    assert!(e.contains("recorded in meta.json when it was written; resume from another checkpoint"), "{e}");
}

#[test]
fn checkpoint_with_an_edited_meta_json_is_refused() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let _ = train(5, dir.path(), false, &replay());
    let ck = dir.path().join("step-00000005");
    let orig = std::fs::read(ck.join("meta.json")).unwrap();
    let edits: [(&str, serde_json::Value); 3] =
        [("step", 4.into()), ("lr", 0.5.into()), ("fingerprint", "someone-else".into())];
    for (field, value) in edits {
        edit_meta(&ck, |m| {
            m.insert(field.into(), value);
        });
        let e = try_load(&ck, &replay(), None).unwrap_err();
        assert!(e.contains(&ck.display().to_string()), "{e}");
        assert!(e.contains("meta.json was edited or damaged after it was written"), "{field}: {e}");
        std::fs::write(ck.join("meta.json"), &orig).unwrap();
    }
    assert_eq!(try_load(&ck, &replay(), None), Ok(5));
}

#[test]
fn checkpoint_of_an_older_format_is_refused() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let _ = train(5, dir.path(), false, &replay());
    let ck = dir.path().join("step-00000005");
    // the layout format 1 wrote
    edit_meta(&ck, |m| {
        m.insert("format".into(), 1.into());
        m.remove("fingerprint");
        m.remove("state_sha256");
        m.remove("meta_sha256");
    });
    let e = try_load(&ck, &replay(), None).unwrap_err();
    assert!(e.contains(&ck.display().to_string()), "{e}");
    assert!(
        e.contains(
            "it was written by an older ebm-rs (checkpoint format 1; this version reads format 2) and cannot be \
             resumed; start a new run"
        ),
        "{e}"
    );
}

#[test]
fn checkpoint_placed_under_another_steps_name_is_refused() {
    let _g = lock();
    let other = tempfile::tempdir().unwrap();
    let _ = train(10, other.path(), false, &replay());
    // another run's step-10 checkpoint copied in as step 7
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("step-00000007");
    std::fs::create_dir(&fake).unwrap();
    for f in ["meta.json", "state.safetensors"] {
        std::fs::copy(other.path().join("step-00000010").join(f), fake.join(f)).unwrap();
    }
    for path in [fake.as_path(), dir.path()] {
        let e = try_load(path, &replay(), None).unwrap_err();
        assert!(e.contains(&fake.display().to_string()), "{e}");
        assert!(e.contains("the folder is named for step 7 but holds the state of step 10"), "{e}");
    }
}

#[test]
fn checkpoint_of_another_objective_is_refused() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let _ = train(5, dir.path(), false, &cdk());
    let ck = dir.path().join("step-00000005");
    let e = try_load(&ck, &pcd(), None).unwrap_err();
    assert!(e.contains(&ck.display().to_string()), "{e}");
    assert!(e.contains("it was written by objective 'cd5' but this run trains with 'pcd'"), "{e}");
    assert_eq!(try_load(&ck, &cdk(), None), Ok(5));
}

#[test]
fn checkpoint_of_another_fingerprint_is_refused() {
    let _g = lock();
    let with = tempfile::tempdir().unwrap();
    let _ = train_fp(5, with.path(), false, &replay(), Some("cfg-a"));
    let ck = with.path().join("step-00000005");
    let e = try_load(&ck, &replay(), Some("cfg-b")).unwrap_err();
    assert!(e.contains(&ck.display().to_string()), "{e}");
    assert!(e.contains("written by a run with fingerprint 'cfg-a' but this run's fingerprint is 'cfg-b'"), "{e}");
    let e = try_load(&ck, &replay(), None).unwrap_err();
    assert!(e.contains("written by a run with fingerprint 'cfg-a' but this run's fingerprint is none"), "{e}");
    assert_eq!(try_load(&ck, &replay(), Some("cfg-a")), Ok(5));
    let without = tempfile::tempdir().unwrap();
    let _ = train(5, without.path(), false, &replay());
    let e = try_load(without.path(), &replay(), Some("cfg-a")).unwrap_err();
    assert!(e.contains("written by a run with fingerprint none but this run's fingerprint is 'cfg-a'"), "{e}");
}

#[test]
fn checkpoint_holding_non_finite_values_is_refused() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() }).unwrap();
    let mut t = Trainer::new(cfg(10), &vs, &m, replay().build(&m, Device::Cpu).unwrap(), 42)
        .unwrap()
        .with_checkpoints(dir.path())
        .unwrap();
    t.train_step(&data().batch(64).unwrap()).unwrap();
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    let poisoned = names.last().unwrap().clone();
    tch::no_grad(|| {
        let _ = vs.variables()[&poisoned].shallow_clone().get(0).fill_(f64::NAN);
    });
    let ck = t.save_checkpoint().unwrap();
    let e = try_load(&ck, &replay(), None).unwrap_err();
    assert!(e.contains(&ck.display().to_string()), "{e}");
    assert!(
        e.contains(&format!(
            "tensor 'model.{poisoned}' holds non-finite values (NaN or inf): the training state had diverged"
        )),
        "{e}"
    );
}

/// What a [`RecordingSink`] saw.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Scalar(String, u64, f64),
    Flush,
    Restart(u64),
}

/// Records every call, and with each the checkpoint steps present in `ckpt_dir` at that moment.
struct RecordingSink {
    ckpt_dir: Option<std::path::PathBuf>,
    seen: Vec<(Seen, Vec<usize>)>,
}

impl RecordingSink {
    fn new(ckpt_dir: Option<&Path>) -> Self {
        RecordingSink { ckpt_dir: ckpt_dir.map(Path::to_path_buf), seen: Vec::new() }
    }
    fn record(&mut self, s: Seen) {
        let ckpts = match &self.ckpt_dir {
            Some(d) => list_checkpoints(d).unwrap().into_iter().map(|(s, _)| s).collect(),
            None => Vec::new(),
        };
        self.seen.push((s, ckpts));
    }
    fn events(&self) -> Vec<Seen> {
        self.seen.iter().map(|(s, _)| s.clone()).collect()
    }
    fn restarts(&self) -> Vec<u64> {
        self.seen.iter().filter_map(|(s, _)| if let Seen::Restart(r) = s { Some(*r) } else { None }).collect()
    }
}

impl MetricsSink for RecordingSink {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
        self.record(Seen::Scalar(tag.into(), step, value));
        Ok(())
    }
    fn flush(&mut self) -> SinkResult {
        self.record(Seen::Flush);
        Ok(())
    }
    fn restart(&mut self, step: u64) -> SinkResult {
        self.record(Seen::Restart(step));
        Ok(())
    }
}

#[test]
fn logs_are_flushed_before_every_checkpoint() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    let obj = ObjectiveConfig::ScoreMatching { method: SmMethod::Denoising { sigma: 0.1 } };
    let mut t = Trainer::new(cfg(20), &vs, &m, obj.build(&m, Device::Cpu).unwrap(), 0)
        .unwrap()
        .with_checkpoints(dir.path())
        .unwrap();
    let mut sink = RecordingSink::new(Some(dir.path()));
    t.run(&mut data(), &mut sink, None).unwrap();
    for c in [5usize, 10, 15, 20] {
        // the first call that sees checkpoint c on disk ...
        let appeared = sink.seen.iter().position(|(_, ck)| ck.contains(&c)).expect("checkpoint written");
        // ... comes after the last scalar of step c, with a flush in between
        let last_scalar = sink.seen[..appeared]
            .iter()
            .rposition(|(s, _)| matches!(s, Seen::Scalar(_, step, _) if *step == c as u64))
            .expect("step c was logged before its checkpoint");
        assert!(
            sink.seen[last_scalar..appeared].iter().any(|(s, _)| *s == Seen::Flush),
            "checkpoint {c} appeared before the logs of step {c} were flushed: {:?}",
            &sink.events()[last_scalar..=appeared]
        );
    }
}

#[test]
fn rollback_restarts_the_sink_at_the_step_rolled_back_to() {
    let _g = lock();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    let c = TrainConfig {
        snapshot_every: 3,
        on_divergence: DivergencePolicy::Rollback { max_retries: 2, lr_factor: 0.5 },
        ..cfg(10)
    };
    // call 7 is step 7 (from the state of step 6, which is therefore never a snapshot): back to step 3
    let flaky = Box::new(Flaky { calls: 0, nan_at: vec![7] });
    let mut t = Trainer::new(c, &vs, &m, flaky, 0).unwrap();
    let mut sink = RecordingSink::new(None);
    let out = t.run(&mut data(), &mut sink, None).unwrap();
    assert_eq!((out.rollbacks, out.steps), (1, 10));
    assert_eq!(sink.restarts(), vec![3]);
    let ev = sink.events();
    let at = ev.iter().position(|s| *s == Seen::Restart(3)).unwrap();
    let step_of = |s: &Seen| if let Seen::Scalar(_, step, _) = s { Some(*step) } else { None };
    assert_eq!(ev[..at].iter().filter_map(step_of).max(), Some(6), "steps 1..=6 were logged before");
    let after: Vec<u64> = ev[at..].iter().filter_map(step_of).collect();
    assert_eq!(after.first(), Some(&4), "logging continues with step 4");
    assert!(after.windows(2).all(|w| w[0] <= w[1]), "{after:?}");
    // the divergence is logged once, with the first step after the rollback
    let div: Vec<_> = ev.iter().filter(|s| matches!(s, Seen::Scalar(k, _, _) if k == "train/divergence")).collect();
    assert_eq!(div, vec![&Seen::Scalar("train/divergence".into(), 4, 1.0)]);
}

#[test]
fn stale_temporary_checkpoint_folders_are_removed() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let own = std::process::id();
    // a crashed save of a dead process, one of an earlier process that had this process's id, one of a
    // live process (pid 1 is always alive), a checkpoint and an unrelated file
    for d in [
        ".step-00000005.tmp-4000000000".to_string(),
        format!(".step-00000007.tmp-{own}"),
        ".step-00000009.tmp-1".to_string(),
        "step-00000003".to_string(),
    ] {
        std::fs::create_dir(dir.path().join(&d)).unwrap();
        std::fs::write(dir.path().join(&d).join("state.safetensors"), b"partial").unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    let _t = Trainer::new(cfg(10), &vs, &m, replay().build(&m, Device::Cpu).unwrap(), 0)
        .unwrap()
        .with_checkpoints(dir.path())
        .unwrap();
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    assert_eq!(names, [".step-00000009.tmp-1", "notes.txt", "step-00000003"]);
}

/// An objective whose loss is replaced by `value` at chosen calls (the gradient stays that of the model).
struct Jumpy {
    calls: usize,
    at: Vec<usize>,
    value: f64,
}
impl Objective for Jumpy {
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        self.calls += 1;
        let mut loss = m.f(&batch.x).mean(Kind::Float);
        if self.at.contains(&self.calls) {
            loss = loss * 0.0 + self.value;
        }
        Ok(LossOutput { loss, metrics: vec![] })
    }
    fn name(&self) -> String {
        "jumpy".into()
    }
}

#[test]
fn a_loss_beyond_the_limit_is_a_divergence() {
    let _g = lock();
    assert_eq!(toml::from_str::<TrainConfig>("iters = 10").unwrap().loss_limit, Some(1e8));
    for bad in [0.0, -1.0, f64::NAN] {
        let e = TrainConfig { loss_limit: Some(bad), ..cfg(10) }.validate().unwrap_err().to_string();
        assert!(e.contains("train.loss_limit") && e.contains("must be > 0"), "{e}");
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
    // stop policy: an error naming the step, the loss and the limit
    let jumpy = Box::new(Jumpy { calls: 0, at: vec![4], value: -3.4e17 });
    let mut t = Trainer::new(cfg(10), &vs, &m, jumpy, 0).unwrap();
    let e = t.run(&mut data(), &mut MemorySink::default(), None).unwrap_err().to_string();
    assert!(e.contains("training diverged at step 4: loss -3.4e17 is beyond train.loss_limit (1e8)"), "{e}");
    assert_eq!(t.step(), 3, "the step beyond the limit made no update");
    // no limit: the same loss is trained on
    let jumpy = Box::new(Jumpy { calls: 0, at: vec![4], value: -3.4e17 });
    let mut t = Trainer::new(TrainConfig { loss_limit: None, ..cfg(10) }, &vs, &m, jumpy, 0).unwrap();
    assert_eq!(t.run(&mut data(), &mut MemorySink::default(), None).unwrap().steps, 10);
    // rollback policy: step 5 (from the state of step 4) jumps to 1e12, so the state of step 4 is never a
    // snapshot and the run goes back to step 2
    let c = TrainConfig {
        snapshot_every: 2,
        on_divergence: DivergencePolicy::Rollback { max_retries: 1, lr_factor: 0.5 },
        ..cfg(10)
    };
    let jumpy = Box::new(Jumpy { calls: 0, at: vec![5], value: 1e12 });
    let mut t = Trainer::new(c, &vs, &m, jumpy, 0).unwrap();
    let mut sink = RecordingSink::new(None);
    let out = t.run(&mut data(), &mut sink, None).unwrap();
    assert_eq!((out.rollbacks, out.steps), (1, 10));
    assert_eq!(sink.restarts(), vec![2]);
    let losses: Vec<f64> = sink
        .events()
        .iter()
        .filter_map(|s| if let Seen::Scalar(k, _, v) = s { (k == "train/loss").then_some(*v) } else { None })
        .collect();
    assert!(losses.iter().all(|l| l.abs() <= 1e8), "{losses:?}");
}

#[test]
fn model_weights_load_from_another_runs_checkpoint_without_a_trainer() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let (trained, _) = train_fp(10, dir.path(), false, &replay(), Some("run a"));
    let fresh = || {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() }).unwrap();
        vs
    };
    // the newest checkpoint's weights, whatever the fingerprint; the objective must match
    let vs = fresh();
    let name = {
        let vs = fresh();
        let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() }).unwrap();
        replay().build(&m, Device::Cpu).unwrap().name()
    };
    assert_eq!(load_model_weights(&vs, dir.path(), &name).unwrap(), 10);
    let loaded = vs.variables();
    assert!(trained.iter().all(|(k, v)| loaded[k].equal(v)), "loaded weights differ from the trained ones");
    let vs = fresh();
    let before: Vec<_> = vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
    let e = load_model_weights(&vs, dir.path(), "other").unwrap_err().to_string();
    assert!(e.contains("objective 'other'") || e.contains("not 'other'"), "{e}");
    assert!(before.iter().all(|(k, v)| vs.variables()[k].equal(v)), "weights changed by a refused load");
    // another architecture is refused
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 3, hidden: vec![16, 16], ..Default::default() }).unwrap();
    assert!(load_model_weights(&vs, dir.path(), &name).unwrap_err().to_string().contains("shape"));
    let empty = tempfile::tempdir().unwrap();
    assert!(load_model_weights(&vs, empty.path(), &name).unwrap_err().to_string().contains("no checkpoint"));
}
