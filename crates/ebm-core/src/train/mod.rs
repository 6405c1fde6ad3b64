//! One training loop for every objective: Adam, optional gradient clipping and EMA, periodic
//! evaluation, metrics to a sink, atomic checkpoints, a divergence guard, and deterministic resume.
//!
//! Determinism: libtorch's RNG is re-seeded from `(seed, step)` at the start of every step, so a run
//! resumed from a checkpoint at step `s` draws exactly the random numbers the uninterrupted run drew.

mod checkpoint;
mod data;
mod sink;

pub use checkpoint::{list_checkpoints, load_model_weights};
pub use data::{DataSource, LabelledData, TensorData};
pub use sink::{MemorySink, MetricsSink, SinkError, SinkResult};

use crate::batch::Batch;
use crate::energy::EnergyModel;
use crate::error::{invalid, io_err, EbmError, Result};
use crate::objective::Objective;
use crate::optim::{Adam, AdamConfig, Ema};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{nn, Tensor};

/// What to do when the loss or the energies become non-finite, or the loss goes beyond
/// [`TrainConfig::loss_limit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DivergencePolicy {
    /// Stop with an error naming the step.
    Stop,
    /// Restore the last good state (kept in memory every `snapshot_every` steps), multiply the learning
    /// rate by `lr_factor` and go on; stop after `max_retries` rollbacks.
    Rollback {
        /// Rollbacks allowed before giving up.
        max_retries: usize,
        /// Learning-rate multiplier applied at each rollback.
        lr_factor: f64,
    },
}

/// Training-loop configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of parameter updates.
    pub iters: usize,
    /// Data batch size.
    pub batch_size: usize,
    /// Adam settings.
    pub optim: AdamConfig,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// EMA decay of the weights (e.g. 0.999); `None` disables it.
    pub ema: Option<f64>,
    /// Send training metrics to the sink every this many steps.
    pub log_every: usize,
    /// Call the evaluation callback every this many steps (0 = only at the end).
    pub eval_every: usize,
    /// Write a checkpoint every this many steps (0 = only at the end / on interruption).
    pub checkpoint_every: usize,
    /// How many checkpoints to keep on disk (oldest removed first).
    pub keep_checkpoints: usize,
    /// Keep an in-memory copy of the state every this many steps, for [`DivergencePolicy::Rollback`].
    pub snapshot_every: usize,
    /// Divergence guard.
    pub on_divergence: DivergencePolicy,
    /// A finite loss with `|loss|` above this is a divergence too (handled by `on_divergence` like a NaN);
    /// `None` watches only for non-finite values. Default `1e8`.
    pub loss_limit: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            iters: 1000,
            batch_size: 256,
            optim: AdamConfig::default(),
            grad_clip: None,
            ema: None,
            log_every: 10,
            eval_every: 0,
            checkpoint_every: 0,
            keep_checkpoints: 2,
            snapshot_every: 50,
            on_divergence: DivergencePolicy::Stop,
            loss_limit: Some(1e8),
        }
    }
}

impl TrainConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        if self.iters == 0 {
            return Err(invalid("train.iters", "must be ≥ 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("train.batch_size", "must be ≥ 1"));
        }
        self.optim.validate()?;
        if let Some(c) = self.grad_clip {
            if !(c > 0.0) {
                return Err(invalid("train.grad_clip", format!("must be > 0, got {c}")));
            }
        }
        if let Some(d) = self.ema {
            if !(0.0..1.0).contains(&d) {
                return Err(invalid("train.ema", format!("decay must be in [0, 1), got {d}")));
            }
        }
        if self.log_every == 0 || self.snapshot_every == 0 {
            return Err(invalid("train.log_every/snapshot_every", "must be ≥ 1"));
        }
        if self.keep_checkpoints == 0 {
            return Err(invalid("train.keep_checkpoints", "must be ≥ 1"));
        }
        if let Some(l) = self.loss_limit {
            if !(l > 0.0) {
                return Err(invalid("train.loss_limit", format!("must be > 0, got {l}")));
            }
        }
        if let DivergencePolicy::Rollback { lr_factor, .. } = self.on_divergence {
            if !(lr_factor > 0.0 && lr_factor < 1.0) {
                return Err(invalid("train.on_divergence.lr_factor", format!("must be in (0, 1), got {lr_factor}")));
            }
        }
        Ok(())
    }
}

/// Metrics of one step.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step just taken (1-based: the number of updates done).
    pub step: usize,
    /// The loss.
    pub loss: f64,
    /// Objective metrics plus `param_grad_norm` and `lr`.
    pub metrics: Vec<(String, f64)>,
}

/// How a [`Trainer::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Updates done in total (including those before a resume).
    pub steps: usize,
    /// True when the stop flag ended the run early (a checkpoint was written when a folder was set).
    pub interrupted: bool,
    /// Rollbacks made by the divergence guard.
    pub rollbacks: usize,
    /// The last checkpoint written, if any.
    pub last_checkpoint: Option<PathBuf>,
}

struct Snapshot {
    step: usize,
    tensors: Vec<(String, Tensor)>,
    objective: Option<Tensor>,
}

/// Callback for periodic evaluation: `(step, model, objective, sink)` (the objective gives access to its
/// chains, e.g. the replay buffer).
pub type EvalFn<'e> = dyn FnMut(usize, &dyn EnergyModel, &dyn Objective, &mut dyn MetricsSink) -> Result<()> + 'e;

/// The training loop.
pub struct Trainer<'a> {
    cfg: TrainConfig,
    vs: &'a nn::VarStore,
    model: &'a dyn EnergyModel,
    objective: Box<dyn Objective>,
    params: Vec<(String, Tensor)>,
    adam: Adam,
    ema: Option<Ema>,
    step: usize,
    seed: u64,
    ckpt_dir: Option<PathBuf>,
    stop: Option<Arc<AtomicBool>>,
    snapshot: Option<Snapshot>,
    rollbacks: usize,
    fingerprint: Option<String>,
}

/// `v` in scientific notation with at most 6 significant digits and no trailing zeros (`-3.4e17`, `1e8`):
/// a loss computed in `f32` then shows as it was meant, not as `-3.3999998779234714e17`.
fn sci(v: f64) -> String {
    let full = format!("{v:.5e}");
    match full.split_once('e') {
        Some((mantissa, exp)) if mantissa.contains('.') => {
            format!("{}e{exp}", mantissa.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => full,
    }
}

/// Mixes the run seed and the step into the seed of that step.
fn step_seed(seed: u64, step: usize) -> i64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

impl<'a> Trainer<'a> {
    /// A trainer for `model`, whose trainable parameters live in `vs`.
    pub fn new(
        cfg: TrainConfig,
        vs: &'a nn::VarStore,
        model: &'a dyn EnergyModel,
        objective: Box<dyn Objective>,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if params.is_empty() {
            return Err(invalid("model", "has no trainable parameters"));
        }
        let adam = Adam::new(cfg.optim.clone(), params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect())?;
        let ema = cfg.ema.map(|d| Ema::new(d, &params)).transpose()?;
        Ok(Trainer {
            cfg,
            vs,
            model,
            objective,
            params,
            adam,
            ema,
            step: 0,
            seed,
            ckpt_dir: None,
            stop: None,
            snapshot: None,
            rollbacks: 0,
            fingerprint: None,
        })
    }

    /// Writes checkpoints into `dir` (created if missing). Temporary folders (`.step-NNNNNNNN.tmp-PID`)
    /// left in it by a save that crashed are removed, with a one-line notice on stderr.
    pub fn with_checkpoints(mut self, dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let removed = checkpoint::remove_stale_temporaries(&dir)?;
        if !removed.is_empty() {
            eprintln!(
                "note: removed {} unfinished checkpoint folder(s) left in {} by an interrupted save: {}",
                removed.len(),
                dir.display(),
                removed.join(", ")
            );
        }
        self.ckpt_dir = Some(dir);
        Ok(self)
    }

    /// Tags this run's checkpoints with `fingerprint` (e.g. a hash of the run's configuration): it is
    /// written into every checkpoint, and [`Trainer::load_checkpoint`] refuses a checkpoint whose
    /// fingerprint differs (including one with a fingerprint when this trainer has none, and the reverse).
    pub fn with_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    /// A flag that, once set (e.g. by a SIGINT handler), ends [`Trainer::run`] after the current step.
    pub fn with_stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Updates done so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The objective.
    pub fn objective(&self) -> &dyn Objective {
        self.objective.as_ref()
    }

    /// The current learning rate (lowered by rollbacks).
    pub fn lr(&self) -> f64 {
        self.adam.cfg.lr
    }

    /// Makes the EMA weights the model's weights from now on (EMA is then off); nothing when EMA is off.
    /// Use it once training is done, when the averaged model is the one to keep.
    pub fn use_ema_weights(&mut self) {
        if let Some(mut e) = self.ema.take() {
            e.swap(&self.params);
        }
    }

    /// Runs `f` with the EMA weights swapped into the model (or the raw weights when EMA is off).
    pub fn with_ema_weights<T>(&mut self, f: impl FnOnce(&dyn EnergyModel) -> T) -> T {
        if let Some(e) = self.ema.as_mut() {
            e.swap(&self.params);
        }
        let out = f(self.model);
        if let Some(e) = self.ema.as_mut() {
            e.swap(&self.params);
        }
        out
    }

    /// One update on one batch. Errors with [`EbmError::Diverged`] if the loss or metrics are not finite,
    /// or the loss is beyond [`TrainConfig::loss_limit`] (the parameters are then left untouched).
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepReport> {
        let out = self.objective.loss(self.model, batch)?;
        let loss = f64::try_from(&out.loss)?;
        let next = self.step + 1;
        if !loss.is_finite() {
            return Err(EbmError::Diverged { step: next, msg: format!("loss is {loss}") });
        }
        if let Some(limit) = self.cfg.loss_limit {
            if loss.abs() > limit {
                return Err(EbmError::Diverged {
                    step: next,
                    msg: format!("loss {} is beyond train.loss_limit ({})", sci(loss), sci(limit)),
                });
            }
        }
        if let Some((name, v)) = out.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(EbmError::Diverged { step: next, msg: format!("{name} is {v}") });
        }
        self.adam.zero_grad();
        out.loss.backward();
        let gn = self.adam.grad_norm();
        if !gn.is_finite() {
            self.adam.zero_grad();
            return Err(EbmError::Diverged { step: next, msg: format!("parameter gradient norm is {gn}") });
        }
        if let Some(c) = self.cfg.grad_clip {
            self.adam.clip_grad_norm(gn, c);
        }
        self.adam.step();
        if let Some(e) = self.ema.as_mut() {
            e.update(&self.params);
        }
        self.step = next;
        let mut metrics: Vec<(String, f64)> = out.metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        metrics.push(("param_grad_norm".into(), gn));
        Ok(StepReport { step: next, loss, metrics })
    }

    /// Trains until `cfg.iters` updates are done (continuing from a resumed step), calling `eval` every
    /// `eval_every` steps and at the end, and checkpointing every `checkpoint_every` steps and at the end.
    ///
    /// The sink is flushed before every checkpoint, so the logs on disk reach at least the step of the
    /// newest checkpoint. On a divergence: with [`DivergencePolicy::Stop`], `train/divergence` is logged
    /// at the diverged step, the sink flushed and the error returned; with [`DivergencePolicy::Rollback`]
    /// the sink is told to [`MetricsSink::restart`] at the step rolled back to (file sinks drop what they
    /// hold for later steps, so each step is logged once), and `train/divergence` (the number of
    /// divergences since the previous logged step) is logged with the next logged step.
    ///
    /// A rollback snapshot of the state after step `s` is kept only once step `s + 1` has made a sound
    /// update from it (finite loss within [`TrainConfig::loss_limit`], finite gradient), so a rollback never
    /// returns to a state whose own next step diverged.
    pub fn run(
        &mut self,
        data: &mut dyn DataSource,
        sink: &mut dyn MetricsSink,
        mut eval: Option<&mut EvalFn<'_>>,
    ) -> Result<TrainOutcome> {
        let mut last_checkpoint = None;
        let mut interrupted = false;
        let mut unlogged_divergences = 0usize;
        self.take_snapshot();
        while self.step < self.cfg.iters {
            // a snapshot due for the current state is kept only if this step's loss from it is sound
            let due = self.step.checked_rem(self.cfg.snapshot_every) == Some(0)
                && self.snapshot.as_ref().is_none_or(|snap| snap.step != self.step);
            let candidate = due.then(|| self.capture());
            tch::manual_seed(step_seed(self.seed, self.step));
            let batch = data.batch(self.cfg.batch_size)?;
            let report = match self.train_step(&batch) {
                Ok(r) => r,
                Err(EbmError::Diverged { step, msg }) => {
                    match self.handle_divergence(step, msg) {
                        Ok(back) => {
                            sink.restart(back as u64)?;
                            unlogged_divergences += 1;
                        }
                        Err(e) => {
                            sink.scalar("train/divergence", step as u64, 1.0)?;
                            sink.flush()?;
                            return Err(e);
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(snap) = candidate {
                self.snapshot = Some(snap);
            }
            let s = report.step;
            if s % self.cfg.log_every == 0 || s == self.cfg.iters {
                sink.scalar("train/loss", s as u64, report.loss)?;
                for (k, v) in &report.metrics {
                    sink.scalar(&format!("train/{k}"), s as u64, *v)?;
                }
                sink.scalar("train/lr", s as u64, self.adam.cfg.lr)?;
                if unlogged_divergences > 0 {
                    sink.scalar("train/divergence", s as u64, unlogged_divergences as f64)?;
                    unlogged_divergences = 0;
                }
            }
            if let Some(ev) = eval.as_deref_mut() {
                if (self.cfg.eval_every > 0 && s % self.cfg.eval_every == 0) || s == self.cfg.iters {
                    ev(s, self.model, self.objective.as_ref(), sink)?;
                }
            }
            let stop_now = self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
            let periodic = self.cfg.checkpoint_every > 0 && s % self.cfg.checkpoint_every == 0;
            if self.ckpt_dir.is_some() && (periodic || s == self.cfg.iters || stop_now) {
                sink.flush()?;
                last_checkpoint = Some(self.save_checkpoint()?);
            }
            if stop_now {
                interrupted = true;
                break;
            }
        }
        sink.flush()?;
        Ok(TrainOutcome { steps: self.step, interrupted, rollbacks: self.rollbacks, last_checkpoint })
    }

    /// Rolls back (returning the step rolled back to) or returns the divergence error, per the policy.
    fn handle_divergence(&mut self, step: usize, msg: String) -> Result<usize> {
        match self.cfg.on_divergence {
            DivergencePolicy::Stop => Err(EbmError::Diverged {
                step,
                msg: format!("{msg}; lower the learning rate or the Langevin step, or set on_divergence = rollback"),
            }),
            DivergencePolicy::Rollback { max_retries, lr_factor } => {
                if self.rollbacks >= max_retries {
                    return Err(EbmError::Diverged {
                        step,
                        msg: format!("{msg}; gave up after {max_retries} rollbacks"),
                    });
                }
                let snap = self.snapshot.as_ref().expect("a snapshot is taken before the first step");
                let by_name: HashMap<_, _> = snap.tensors.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
                let objective_state = snap.objective.as_ref().map(|t| t.copy());
                let snap_step = snap.step;
                self.restore(&by_name)?;
                if let Some(st) = objective_state {
                    self.objective.load_state(st)?;
                }
                self.step = snap_step;
                self.rollbacks += 1;
                self.adam.cfg.lr *= lr_factor;
                // checkpoints past the step rolled back to belong to the abandoned path: a resume must not
                // pick one of them
                if let Some(dir) = &self.ckpt_dir {
                    for (s, path) in list_checkpoints(dir)? {
                        if s > snap_step {
                            std::fs::remove_dir_all(&path).map_err(|e| io_err(&path, e))?;
                        }
                    }
                }
                eprintln!(
                    "warning: training diverged at step {step} ({msg}); rolled back to step {snap_step}, lr now {:.3e} \
                     (rollback {}/{max_retries})",
                    self.adam.cfg.lr, self.rollbacks
                );
                Ok(snap_step)
            }
        }
    }

    fn take_snapshot(&mut self) {
        self.snapshot = Some(self.capture());
    }

    /// A copy of the current training state.
    fn capture(&self) -> Snapshot {
        let tensors = self.state_tensors().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
        let objective = self.objective.state().map(|t| t.copy());
        Snapshot { step: self.step, tensors, objective }
    }

    /// Every tensor of the training state: model variables (`model.<name>`), optimiser, EMA.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().map(|(k, t)| (format!("model.{k}"), t)).collect();
        v.extend(self.adam.state());
        if let Some(e) = &self.ema {
            v.extend(e.shadow().iter().map(|(k, t)| (format!("ema.{k}"), t.shallow_clone())));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let vars = self.vs.variables();
        for (name, var) in &vars {
            let key = format!("model.{name}");
            let src = state.get(&key).ok_or_else(|| {
                invalid(
                    "checkpoint",
                    format!("has no tensor for model variable '{name}': is it from a different architecture?"),
                )
            })?;
            if src.size() != var.size() {
                return Err(invalid(
                    "checkpoint",
                    format!(
                        "variable '{name}' has shape {:?} in the checkpoint but {:?} in the model: a different architecture",
                        src.size(),
                        var.size()
                    ),
                ));
            }
        }
        let extra: Vec<_> =
            state.keys().filter_map(|k| k.strip_prefix("model.")).filter(|k| !vars.contains_key(*k)).collect();
        if let Some(k) = extra.first() {
            return Err(invalid(
                "checkpoint",
                format!("has variable '{k}' that the model lacks: a different architecture"),
            ));
        }
        tch::no_grad(|| {
            for (name, var) in &vars {
                var.shallow_clone().copy_(&state[&format!("model.{name}")]);
            }
        });
        self.adam.load_state(state)?;
        if let Some(e) = self.ema.as_mut() {
            let shadow: Vec<(String, Tensor)> =
                e.shadow().iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
            for (k, t) in shadow {
                let src =
                    state.get(&format!("ema.{k}")).ok_or_else(|| invalid("checkpoint", format!("missing ema.{k}")))?;
                tch::no_grad(|| t.shallow_clone().copy_(src));
            }
        }
        Ok(())
    }
}
