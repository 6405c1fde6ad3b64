//! Diffusion recovery likelihood (Gao, Song, Poole, Wu & Kingma, ICLR 2021) in the variance-exploding form,
//! for a noise-conditional model read at level `a` as `f_a = f(·; a)/a` (this crate's convention, the one
//! [`EnergyModel::at_noise`] and annealed sampling use; Gao et al. likewise scale their energy by the noise
//! level).
//!
//! With the levels `a_0 < … < a_{L-1}` of a [`NoiseScales`] ladder and the increments `δ_t` of
//! [`ladder_with_increments`], each data point `x` draws a level `t` uniformly, a positive `x⁺ = x + a_t ξ`
//! (a draw of the data blurred to level `t`) and its noisier version `x̃ = x⁺ + δ_t ξ'` (level `t + 1`). The
//! model of level `t` is trained by maximum likelihood of the *recovery* conditional
//!
//! `p(x⁺ | x̃) ∝ exp(f_{a_t}(x⁺) − ‖x̃ − x⁺‖² / 2δ_t²)`,
//!
//! whose gradient is contrastive: the loss (minimised) is
//! `L = mean f_{a_t}(x⁻) − mean f_{a_t}(x⁺) + α (mean f_{a_t}(x⁺)² + mean f_{a_t}(x⁻)²)`, with `x⁻` from `k`
//! Langevin steps on the conditional started at `x̃` (step `step_ratio · δ_t²`, [`recovery_step`]). Because the
//! Gaussian factor keeps the conditional close to unimodal and of width `δ_t`, short chains started at `x̃`
//! sample it well, where chains on the marginal would not mix.
//!
//! Optional (`consistency = λ > 0`): the recovery conditional of a small level has width `δ_t` and never leaves
//! the mode its anchor came from, so it is blind to the relative heights of separated modes (adding a
//! different constant to `f_{a_t}` on each mode leaves the loss unchanged). The blurred data obey
//! `p_{a_{t+1}} = p_{a_t} ∗ N(0, δ_t²)` exactly, which ties each level to the one above, where anchors do travel
//! between modes: [`Drl::consistency`] adds `λ ·` the within-level variance of
//! `f_{a_{t+1}}(x̃) − log E_ξ exp f_{a_t}(x̃ + δ_t ξ)` (a constant for the true densities), the level above held
//! fixed. With a model whose small levels inherit the larger ones ([`crate::energy::LadderMlp`]) this is what
//! makes the lowest level's mode weights right on 8 Gaussians.
//!
//! Sample a trained model with [`crate::sampler::RecoverySampler`] (the conditionals from the largest level
//! down: the ancestral sampler this training matches), or, since `f_a` is a density at every level, with
//! [`crate::sampler::AnnealedLangevin`] or any sampler on the lowest level's view `at_noise(a_0)`.
//!
//! Conditional models: the labels of the batch are passed to `f` with the levels.

use super::{LossOutput, Objective};
use crate::batch::Batch;
use crate::energy::{EnergyModel, FrozenParams};
use crate::error::{invalid, Result};
use crate::sampler::recovery::{ladder_with_increments, recovery_step, validate_ladder};
use crate::sampler::NoiseScales;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Configuration of [`Drl`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrlConfig {
    /// The noise levels (at least two).
    pub scales: NoiseScales,
    /// Langevin steps on each recovery conditional per update.
    pub k: usize,
    /// The conditional's step size is `step_ratio · δ_t²`.
    pub step_ratio: f64,
    /// L2 penalty α on `f_a` at positives and negatives.
    pub alpha: f64,
    /// Weight λ of the consistency of adjacent levels (0: off), see [`Drl::consistency`].
    pub consistency: f64,
    /// Monte Carlo draws per anchor of the consistency term's Gaussian blur (≥ 1 when λ > 0).
    pub consistency_samples: usize,
}

impl Default for DrlConfig {
    /// Six levels from 1 down to 0.05, `k = 30`, `step_ratio = 0.05`, no penalty.
    fn default() -> Self {
        DrlConfig {
            scales: NoiseScales { sigma_max: 1.0, sigma_min: 0.05, levels: 6 },
            k: 30,
            step_ratio: 0.05,
            alpha: 0.0,
            consistency: 0.0,
            consistency_samples: 16,
        }
    }
}

impl DrlConfig {
    /// Checks the ladder (≥ 2 levels), `k ≥ 1`, `step_ratio > 0` and `α ≥ 0`.
    pub fn validate(&self) -> Result<()> {
        validate_ladder(&self.scales, "drl.scales")?;
        if self.k == 0 {
            return Err(invalid("drl.k", "must be ≥ 1 Langevin step"));
        }
        if !(self.step_ratio > 0.0) || !self.step_ratio.is_finite() {
            return Err(invalid("drl.step_ratio", format!("must be > 0, got {}", self.step_ratio)));
        }
        if !(self.alpha >= 0.0) || !self.alpha.is_finite() {
            return Err(invalid("drl.alpha", format!("must be ≥ 0, got {}", self.alpha)));
        }
        if !(self.consistency >= 0.0) || !self.consistency.is_finite() {
            return Err(invalid("drl.consistency", format!("must be ≥ 0, got {}", self.consistency)));
        }
        if self.consistency > 0.0 && self.consistency_samples == 0 {
            return Err(invalid("drl.consistency_samples", "must be ≥ 1 when drl.consistency > 0"));
        }
        Ok(())
    }
}

/// The diffusion-recovery-likelihood objective.
#[derive(Debug, Clone)]
pub struct Drl {
    cfg: DrlConfig,
    levels: Vec<f64>,
    deltas: Vec<f64>,
}

/// One batch's pairs: per row the level `a_t`, the increment `δ_t²`, the positive and the noisier anchor.
#[derive(Debug)]
pub struct RecoveryPairs {
    /// `a_t`, `[B]`.
    pub level: Tensor,
    /// `δ_t²`, `[B]`.
    pub delta2: Tensor,
    /// `x⁺ = x + a_t ξ`, `[B, *event]`.
    pub positive: Tensor,
    /// `x̃ = x⁺ + δ_t ξ'`, `[B, *event]`.
    pub anchor: Tensor,
    /// The level index `t` of every row, `[B]` (int64).
    pub index: Tensor,
}

impl Drl {
    /// Builds the objective after validating the config.
    pub fn new(cfg: DrlConfig) -> Result<Self> {
        cfg.validate()?;
        let (levels, deltas) = ladder_with_increments(&cfg.scales);
        Ok(Drl { cfg, levels, deltas })
    }

    /// The levels `a_0 < … < a_{L-1}`.
    pub fn levels(&self) -> &[f64] {
        &self.levels
    }

    /// Draws a level per row and the positive and anchor of every data point.
    ///
    /// # Shapes
    /// `x: [B, *event]` → see [`RecoveryPairs`].
    pub fn pairs(&self, x: &Tensor) -> RecoveryPairs {
        let b = x.size()[0];
        let pick = Tensor::randint(self.levels.len() as i64, [b], (Kind::Int64, x.device()));
        let level = Tensor::from_slice(&self.levels).to_kind(x.kind()).to_device(x.device()).index_select(0, &pick);
        let delta = Tensor::from_slice(&self.deltas).to_kind(x.kind()).to_device(x.device()).index_select(0, &pick);
        let mut bshape = vec![b];
        bshape.extend(std::iter::repeat_n(1, x.dim() - 1));
        let x = x.detach();
        let positive = &x + x.randn_like() * level.view(bshape.as_slice());
        let anchor = &positive + x.randn_like() * delta.view(bshape.as_slice());
        RecoveryPairs { delta2: delta.square(), level, positive, anchor, index: pick }
    }

    /// `k` Langevin steps on every row's recovery conditional, from its anchor (parameters frozen).
    ///
    /// # Shapes
    /// `pairs` of a batch of B, `labels: [B]` → `[B, *event]`, detached.
    pub fn negatives(&self, m: &dyn EnergyModel, pairs: &RecoveryPairs, labels: Option<&Tensor>) -> Tensor {
        let _frozen = FrozenParams::new(m);
        let log_p = |y: &Tensor| m.f_given(y, labels, Some(&pairs.level)) / &pairs.level;
        let mut y = pairs.anchor.shallow_clone();
        for _ in 0..self.cfg.k {
            y = recovery_step(&log_p, &y, &pairs.anchor, &pairs.delta2, self.cfg.step_ratio, None).0;
        }
        y
    }
}

impl Drl {
    /// The consistency of adjacent levels: the blurred data obey `p_{a_{t+1}} = p_{a_t} ∗ N(0, δ_t²)` exactly, so
    /// `R(x̃) = f_{a_{t+1}}(x̃) − log E_ξ exp f_{a_t}(x̃ + δ_t ξ)` is the same constant (`log Z_{t+1} − log Z_t`)
    /// at every `x̃`. Returns the within-level variance of `R` at the anchors of the levels below the top,
    /// `Σ_t Σ_{rows at t} (R − R̄_t)² / B`, the expectation estimated with `consistency_samples` draws (a
    /// log-mean-exp); `f_{a_{t+1}}` is held fixed, so the term moves level `t` towards the blurred-down view of
    /// the level above — which fixes what the recovery conditional of level `t` cannot see when it is narrow:
    /// the relative heights of modes it never leaves.
    ///
    /// # Shapes
    /// `pairs` of a batch of B, `labels: [B]` → `[]`.
    pub fn consistency(&self, m: &dyn EnergyModel, pairs: &RecoveryPairs, labels: Option<&Tensor>) -> Tensor {
        let x = &pairs.anchor;
        let (b, n) = (x.size()[0], self.cfg.consistency_samples as i64);
        let l = self.levels.len() as i64;
        let dev = x.device();
        let table = |v: &[f64]| Tensor::from_slice(v).to_kind(x.kind()).to_device(dev);
        let top = l - 1;
        let next = pairs.index.clamp_max(top - 1) + 1;
        let above = table(&self.levels).index_select(0, &next);
        let f_next = tch::no_grad(|| m.f_given(x, labels, Some(&above)) / &above);
        let mut shape = vec![b, n];
        shape.extend(&x.size()[1..]);
        let delta = pairs.delta2.sqrt();
        let mut bshape = vec![b, 1];
        bshape.extend(std::iter::repeat_n(1, x.dim() - 1));
        let y = (x.unsqueeze(1) + Tensor::randn(shape.as_slice(), (x.kind(), dev)) * delta.view(bshape.as_slice()))
            .flatten(0, 1);
        let lv = pairs.level.repeat_interleave_self_int(n, 0, None);
        let lab = labels.map(|t| t.repeat_interleave_self_int(n, 0, None));
        let f_here = (m.f_given(&y, lab.as_ref(), Some(&lv)) / &lv).view([b, n]);
        let r = f_next - (f_here.logsumexp([1i64], false) - (n as f64).ln());
        let below_top = pairs.index.lt(top).to_kind(x.kind());
        let r = &r * &below_top;
        let counts = Tensor::zeros([l], (x.kind(), dev)).index_add(0, &pairs.index, &below_top).clamp_min(1.0);
        let means = Tensor::zeros([l], (x.kind(), dev)).index_add(0, &pairs.index, &r) / counts;
        ((&r - means.index_select(0, &pairs.index)).square() * below_top).sum(x.kind()) / b as f64
    }
}

impl Objective for Drl {
    /// # Shapes
    /// `batch.x: [B, *event]`, `batch.labels: [B]` (optional) → `loss: []`.
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        batch.check(&m.event_shape(), m.num_labels(), "data batch")?;
        if batch.sigma.is_some() {
            return Err(invalid("drl", "draws its own noise levels: give it clean data (a batch without sigma)"));
        }
        let labels = batch.labels.as_ref();
        let pairs = self.pairs(&batch.x);
        let neg = self.negatives(m, &pairs, labels);
        let f_pos = m.f_given(&pairs.positive, labels, Some(&pairs.level)) / &pairs.level;
        let f_neg = m.f_given(&neg, labels, Some(&pairs.level)) / &pairs.level;
        if f_pos.size() != [batch.len()] {
            return Err(invalid(
                "model output",
                format!("f must return one value per sample, [{}], got {:?}", batch.len(), f_pos.size()),
            ));
        }
        let cd = f_neg.mean(Kind::Float) - f_pos.mean(Kind::Float);
        let loss = if self.cfg.alpha > 0.0 {
            &cd + (f_pos.square().mean(Kind::Float) + f_neg.square().mean(Kind::Float)) * self.cfg.alpha
        } else {
            cd
        };
        let (loss, cons) = if self.cfg.consistency > 0.0 {
            let c = self.consistency(m, &pairs, labels);
            let v = tch::no_grad(|| f64::try_from(c.to_kind(Kind::Double)))?;
            (loss + c * self.cfg.consistency, Some(v))
        } else {
            (loss, None)
        };
        let (mp, mn, moved) = tch::no_grad(|| {
            let b = batch.len();
            (
                f64::try_from(f_pos.mean(Kind::Double)),
                f64::try_from(f_neg.mean(Kind::Double)),
                f64::try_from(
                    (&neg - &pairs.anchor).reshape([b, -1]).norm_scalaropt_dim(2.0, [1], false).mean(Kind::Double),
                ),
            )
        });
        let (mp, mn, moved) = (mp?, mn?, moved?);
        let mut metrics = vec![("f_pos", mp), ("f_neg", mn), ("energy_gap", mp - mn), ("recovery_move", moved)];
        if let Some(c) = cons {
            metrics.push(("consistency", c));
        }
        Ok(LossOutput { loss, metrics })
    }

    fn name(&self) -> String {
        "drl".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::{nn, Device};

    /// `f(x; a) = −½ a (x − θ)² / (e^ℓ + a²)` in 1-D with trainable θ and ℓ = log s²: `f/a` is `N(θ, e^ℓ)` blurred
    /// by `N(0, a²)`, so the family holds the true noisy log-densities of Gaussian data at every level.
    struct LearnedBlur {
        theta: Tensor,
        log_s2: Tensor,
    }
    impl EnergyModel for LearnedBlur {
        fn f(&self, x: &Tensor) -> Tensor {
            self.f_given(x, None, None)
        }
        fn f_given(&self, x: &Tensor, _labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
            let s = sigma.map(|s| s.shallow_clone()).unwrap_or_else(|| x.zeros_like().squeeze_dim(1));
            (x.squeeze_dim(1) - &self.theta).square() * &s * -0.5 / (s.square() + self.log_s2.exp())
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.theta.shallow_clone(), self.log_s2.shallow_clone()]
        }
    }

    #[test]
    fn recovers_the_mean_and_variance_of_gaussian_data_at_every_level() {
        // data N(2, 0.5²); the model starts at N(0, 1): recovery likelihood is maximised by the true blurred
        // densities, so θ → 2 and s² → 0.25 (the level-a view is then N(2, 0.25 + a²), exactly).
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = LearnedBlur {
            theta: vs.root().var("theta", &[1], nn::Init::Const(0.0)),
            log_s2: vs.root().var("log_s2", &[1], nn::Init::Const(0.0)),
        };
        let cfg = DrlConfig {
            scales: NoiseScales { sigma_max: 1.0, sigma_min: 0.1, levels: 4 },
            k: 40,
            step_ratio: 0.05,
            alpha: 0.0,
            ..Default::default()
        };
        let mut obj = Drl::new(cfg).unwrap();
        let mut opt = nn::Adam::default().build(&vs, 0.05).unwrap();
        for _ in 0..300 {
            let x = Tensor::randn([1000, 1], (Kind::Float, Device::Cpu)) * 0.5 + 2.0;
            let out = obj.loss(&m, &Batch::new(x)).unwrap();
            opt.backward_step(&out.loss);
        }
        let theta = f64::try_from(m.theta.get(0)).unwrap();
        let s2 = f64::try_from(m.log_s2.exp().get(0)).unwrap();
        assert!((theta - 2.0).abs() < 0.05, "θ = {theta}");
        assert!((s2 / 0.25 - 1.0).abs() < 0.15, "s² = {s2}");
        assert_eq!(obj.name(), "drl");
    }

    #[test]
    fn negatives_sample_the_recovery_conditional_of_the_true_model() {
        // at the true parameters the negatives are draws of p(x⁺ | x̃), so f_a at them and at the positives
        // has the same mean: the energy gap is zero up to sampling noise.
        tch::manual_seed(3);
        let m = LearnedBlur { theta: Tensor::from_slice(&[1.0f32]), log_s2: Tensor::from_slice(&[0.09f32.ln()]) };
        let mut obj = Drl::new(DrlConfig { k: 400, step_ratio: 0.01, ..Default::default() }).unwrap();
        let x = Tensor::randn([40_000, 1], (Kind::Float, Device::Cpu)) * 0.3 + 1.0;
        let out = obj.loss(&m, &Batch::new(x)).unwrap();
        let gap = out.metrics.iter().find(|(n, _)| *n == "energy_gap").unwrap().1;
        let f_pos = out.metrics[0].1;
        assert!(gap.abs() < 0.03 * f_pos.abs().max(1.0), "gap {gap} (f_pos {f_pos})");
    }

    /// [`LearnedBlur`] plus a tilt `c (x − θ)` on `f_a` at the levels `a ≤ below` only: an inconsistent ladder.
    struct Tilted {
        inner: LearnedBlur,
        c: f64,
        below: f64,
    }
    impl EnergyModel for Tilted {
        fn f(&self, x: &Tensor) -> Tensor {
            self.inner.f(x)
        }
        fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
            let s = sigma.expect("a level per row");
            let on = s.le(self.below).to_kind(x.kind());
            self.inner.f_given(x, labels, sigma) + (x.squeeze_dim(1) - &self.inner.theta) * s * on * self.c
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            self.inner.parameters()
        }
    }

    #[test]
    fn consistency_is_zero_on_a_blur_family_and_the_exact_variance_of_a_tilt() {
        // levels 0.1, 0.2, 0.4 and f_a the N(θ, s² + a²) log-density up to a constant: blurring level t by δ_t
        // gives level t + 1 exactly, so R is constant. Tilting level 0 by c(y − θ) makes, in closed form,
        // R(x̃) = const − c (v₀/v₁)(x̃ − θ) with v_t = s² + a_t², so the term is Σ_{rows at 0} (c v₀/v₁)² (u − ū)² / B.
        tch::manual_seed(5);
        let (theta, s2): (f64, f64) = (1.0, 0.09);
        let blur = || LearnedBlur {
            theta: Tensor::from_slice(&[theta as f32]),
            log_s2: Tensor::from_slice(&[(s2 as f32).ln()]),
        };
        let cfg = DrlConfig {
            scales: NoiseScales { sigma_max: 0.4, sigma_min: 0.1, levels: 3 },
            consistency: 1.0,
            consistency_samples: 4000,
            ..Default::default()
        };
        let obj = Drl::new(cfg).unwrap();
        let x = Tensor::randn([3000, 1], (Kind::Float, Device::Cpu)) * s2.sqrt() + theta;
        let pairs = obj.pairs(&x);
        let c: f64 = 2.0;
        let (v0, v1) = (s2 + 0.01, s2 + 0.04);
        let at0 = pairs.index.eq(0).to_kind(Kind::Float);
        let u = pairs.anchor.squeeze_dim(1) - theta;
        let u_mean = (&u * &at0).sum(Kind::Float) / at0.sum(Kind::Float);
        let want =
            f64::try_from(((u - u_mean).square() * &at0).sum(Kind::Float)).unwrap() * (c * v0 / v1).powi(2) / 3000.0;
        let got = f64::try_from(obj.consistency(&Tilted { inner: blur(), c, below: 0.1001 }, &pairs, None)).unwrap();
        assert!((got / want - 1.0).abs() < 0.1, "tilted: {got} against {want}");
        let flat = f64::try_from(obj.consistency(&blur(), &pairs, None)).unwrap();
        assert!(flat < 0.02 * want, "consistent ladder: {flat} (tilted {want})");
    }

    #[test]
    fn bad_configs_and_noisy_batches_are_errors() {
        let c = DrlConfig { k: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("drl.k"));
        let c = DrlConfig { scales: NoiseScales { sigma_max: 1.0, sigma_min: 1.0, levels: 1 }, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("drl.scales.levels"));
        let c = DrlConfig { step_ratio: -1.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("drl.step_ratio"));
        let c = DrlConfig { alpha: f64::NAN, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("drl.alpha"));
        let c = DrlConfig { consistency: -0.5, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("drl.consistency"));
        let c = DrlConfig { consistency: 1.0, consistency_samples: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("drl.consistency_samples"));
        let m = LearnedBlur { theta: Tensor::from_slice(&[0.0f32]), log_s2: Tensor::from_slice(&[0.0f32]) };
        let x = Tensor::zeros([4, 1], (Kind::Float, Device::Cpu));
        let noisy = Batch { x, labels: None, sigma: Some(Tensor::ones([4], (Kind::Float, Device::Cpu))) };
        let e = Drl::new(DrlConfig::default()).unwrap().loss(&m, &noisy).unwrap_err().to_string();
        assert!(e.contains("drl") && e.contains("sigma"), "{e}");
    }
}
