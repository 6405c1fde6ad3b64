//! Energy discrepancy (Schröder, Ou, Lim, Li, Vollmer & Duncan, NeurIPS 2023) with the Gaussian perturbation
//! of variance `t`: for each data point `x`, one perturbed point `y = x + √t ξ` and `M` negatives
//! `x'ⱼ = y + √t ξ'ⱼ` (ξ, ξ'ⱼ ~ N(0, I)); the loss (minimised) is the paper's w-stabilised estimator
//!
//! `L = E_x log( w/M + (1/M) Σⱼ exp(f(x'ⱼ) − f(x)) )`,
//!
//! in this crate's sign convention (`f = −U`, so the paper's `U(x) − U(x'ⱼ)` is `f(x'ⱼ) − f(x)`). It is
//! evaluated as `logsumexp(log w, f(x'₁) − f(x), …, f(x'_M) − f(x)) − log M` (the `log w` entry is left out
//! for `w = 0`), so it never overflows.
//!
//! As `M → ∞` the loss tends to `E[−log p(x)] − E[−log p_t(y)]` up to a constant (`p_t = p ∗ N(0, tI)`), a
//! divergence minimised by the data distribution itself: it interpolates between score matching (`t → 0`)
//! and maximum likelihood (`t → ∞`), so unlike score matching it sees how mass splits between modes that
//! the perturbation can jump between. No sampler, no score, no second derivatives: one batched evaluation
//! of `f` on the `B·(1 + M)` points per step. `w` (default 1, the paper's choice) keeps the loss bounded
//! below by `log(w/M)` and so stops `f` from running off to `−∞` away from the data.
//!
//! Conditional models: each negative carries the label (and noise level) of the data point it came from.

use super::{LossOutput, Objective};
use crate::batch::Batch;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Configuration of [`EnergyDiscrepancy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnergyDiscrepancyConfig {
    /// Variance `t > 0` of each of the two Gaussian perturbations (`x → y → x'`): the negatives are at
    /// `x + √(2t)·N(0, I)` from their data point. Small `t` approaches score matching, large `t` maximum
    /// likelihood (with noisier estimates).
    pub t: f64,
    /// Negatives per data point `M ≥ 1`.
    pub m: usize,
    /// Stabilising weight `w ≥ 0` (0: the plain estimator, which can diverge; the paper uses 1).
    pub w: f64,
}

impl Default for EnergyDiscrepancyConfig {
    /// `t = 1`, `M = 4`, `w = 1` (the paper's setting for its 2-D densities).
    fn default() -> Self {
        EnergyDiscrepancyConfig { t: 1.0, m: 4, w: 1.0 }
    }
}

impl EnergyDiscrepancyConfig {
    /// Checks `t > 0`, `M ≥ 1` and `w ≥ 0`, all finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.t > 0.0) || !self.t.is_finite() {
            return Err(invalid(
                "energy_discrepancy.t",
                format!("the perturbation variance must be > 0, got {}", self.t),
            ));
        }
        if self.m == 0 {
            return Err(invalid("energy_discrepancy.m", "need at least 1 negative per data point"));
        }
        if !(self.w >= 0.0) || !self.w.is_finite() {
            return Err(invalid("energy_discrepancy.w", format!("the stabilising weight must be ≥ 0, got {}", self.w)));
        }
        Ok(())
    }
}

/// The per-sample pieces of the energy-discrepancy loss of one batch.
#[derive(Debug)]
pub struct EdTerms {
    /// `log(w/M + (1/M) Σⱼ exp(f(x'ⱼ) − f(x)))` per data point: `[B]` (their mean is the loss).
    pub per_sample: Tensor,
    /// `f(x)` on the data: `[B]`.
    pub f_data: Tensor,
    /// `f(x'ⱼ)` on the negatives: `[B, M]`.
    pub f_neg: Tensor,
}

/// The energy-discrepancy objective.
#[derive(Debug, Clone)]
pub struct EnergyDiscrepancy {
    cfg: EnergyDiscrepancyConfig,
}

impl EnergyDiscrepancy {
    /// Builds the objective after validating the config.
    pub fn new(cfg: EnergyDiscrepancyConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(EnergyDiscrepancy { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &EnergyDiscrepancyConfig {
        &self.cfg
    }

    /// The negatives of a batch: `y = x + √t ξ`, then `M` points `y + √t ξ'ⱼ` per data point, flattened
    /// data-point-major (the `M` negatives of `x_b` are rows `b·M .. (b+1)·M`).
    ///
    /// # Shapes
    /// `x: [B, *event]` → `[B·M, *event]`.
    pub fn negatives(&self, x: &Tensor) -> Tensor {
        let (st, m) = (self.cfg.t.sqrt(), self.cfg.m as i64);
        let size = x.size();
        let x = x.detach();
        let y = &x + x.randn_like() * st;
        let mut wide = vec![size[0], m];
        wide.extend(&size[1..]);
        let xi = Tensor::randn(wide.as_slice(), (x.kind(), x.device())) * st;
        let neg = y.unsqueeze(1) + xi;
        let mut flat = vec![size[0] * m];
        flat.extend(&size[1..]);
        neg.reshape(flat.as_slice())
    }

    /// Draws the negatives and evaluates the model on the data and the negatives in one call (labels and
    /// noise levels repeated `M` times for the negatives). Errors on a batch of the wrong shape, with
    /// non-finite values, or with labels out of range.
    ///
    /// # Shapes
    /// `batch.x: [B, *event]`, `batch.labels: [B]`, `batch.sigma: [B]` (optional) → `per_sample: [B]`,
    /// `f_data: [B]`, `f_neg: [B, M]`.
    pub fn terms(&self, m: &dyn EnergyModel, batch: &Batch) -> Result<EdTerms> {
        batch.check(&m.event_shape(), m.num_labels(), "data batch")?;
        let (b, mm) = (batch.len(), self.cfg.m as i64);
        let neg = self.negatives(&batch.x);
        let x_all = Tensor::cat(&[batch.x.detach(), neg], 0);
        // each data point's label / σ, then M copies of it for its negatives
        let with_negatives =
            |v: &Tensor| Tensor::cat(&[v.shallow_clone(), v.unsqueeze(1).expand([b, mm], false).reshape([-1])], 0);
        let labels = batch.labels.as_ref().map(with_negatives);
        let sigma = batch.sigma.as_ref().map(with_negatives);
        let f = m.f_given(&x_all, labels.as_ref(), sigma.as_ref());
        if f.size() != [b * (1 + mm)] {
            return Err(invalid(
                "model output",
                format!("f must return one value per sample, [{}], got {:?}", b * (1 + mm), f.size()),
            ));
        }
        let f_data = f.narrow(0, 0, b);
        let f_neg = f.narrow(0, b, b * mm).view([b, mm]);
        let diff = &f_neg - f_data.unsqueeze(1);
        let log_terms = if self.cfg.w > 0.0 {
            Tensor::cat(&[Tensor::full([b, 1], self.cfg.w.ln(), (diff.kind(), diff.device())), diff], 1)
        } else {
            diff
        };
        let per_sample = log_terms.logsumexp([1i64], false) - (self.cfg.m as f64).ln();
        Ok(EdTerms { per_sample, f_data, f_neg })
    }
}

impl Objective for EnergyDiscrepancy {
    /// The mean of [`EdTerms::per_sample`]; metrics `f_data` (mean `f(x)`), `f_neg` (mean `f(x'ⱼ)`) and
    /// `energy_gap` (their difference).
    ///
    /// # Shapes
    /// `batch.x: [B, *event]`, `batch.labels: [B]` (optional) → `loss: []`.
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        let t = self.terms(m, batch)?;
        let loss = t.per_sample.mean(t.per_sample.kind());
        let (fd, fn_) =
            tch::no_grad(|| (f64::try_from(t.f_data.mean(Kind::Double)), f64::try_from(t.f_neg.mean(Kind::Double))));
        let (fd, fn_) = (fd?, fn_?);
        Ok(LossOutput { loss, metrics: vec![("f_data", fd), ("f_neg", fn_), ("energy_gap", fd - fn_)] })
    }

    fn name(&self) -> String {
        "energy_discrepancy".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamConfig;
    use crate::sampler::test_util::Shift;
    use crate::train::{LabelledData, MemorySink, TensorData, TrainConfig, Trainer};
    use tch::{nn, Device};

    fn ed(t: f64, m: usize, w: f64) -> EnergyDiscrepancy {
        EnergyDiscrepancy::new(EnergyDiscrepancyConfig { t, m, w }).unwrap()
    }

    fn train_cfg(iters: usize, batch_size: usize, lr: f64) -> TrainConfig {
        let optim = AdamConfig { lr, ..Default::default() };
        TrainConfig { iters, batch_size, optim, ema: Some(0.97), log_every: 50, ..Default::default() }
    }

    #[test]
    fn loss_is_minimised_by_the_true_location_and_training_finds_it() {
        tch::manual_seed(0);
        let n = 20_000i64;
        let data = Tensor::randn([n, 1], (Kind::Double, Device::Cpu)) + 2.0;
        let obj = ed(1.0, 16, 1.0);
        // the same perturbations for every θ (re-seeded), so the per-sample differences are paired
        let per = |theta: f64| {
            tch::manual_seed(1);
            let m = Shift { theta: Tensor::from_slice(&[theta]) };
            obj.terms(&m, &Batch::new(data.shallow_clone())).unwrap().per_sample
        };
        let at_true = per(2.0);
        for theta in [1.5, 2.5] {
            let d = per(theta) - &at_true;
            let mean = f64::try_from(d.mean(Kind::Double)).unwrap();
            let se = (f64::try_from(d.var(true)).unwrap() / n as f64).sqrt();
            // as M → ∞ the gap is ½δ²·t/(1 + t) = 0.0625 for δ = 0.5, t = 1 (the M = 16, w = 1 estimator
            // keeps most of it); it must be well beyond the noise of the paired mean
            eprintln!("ED loss gap at θ = {theta}: {mean:.4} (se {se:.4})");
            assert!(mean > 5.0 * se && mean > 0.02, "θ = {theta}: loss gap {mean} (se {se})");
        }
        // a few hundred Adam steps from θ = 0 reach the data's mean
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Shift { theta: vs.root().var("theta", &[1], nn::Init::Const(0.0)) };
        let data = Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) + 2.0;
        let mean = f64::try_from(data.mean(Kind::Double)).unwrap();
        let mut trainer = Trainer::new(train_cfg(300, 256, 0.05), &vs, &model, Box::new(ed(1.0, 16, 1.0)), 3).unwrap();
        trainer.run(&mut TensorData::new(data).unwrap(), &mut MemorySink::default(), None).unwrap();
        trainer.use_ema_weights();
        let theta = f64::try_from(&model.theta).unwrap();
        eprintln!("ED-trained θ = {theta:.4} (data mean {mean:.4})");
        // Adam at lr 0.05 wanders around the optimum (the loss's curvature in θ is only t/(1 + t) = ½); the EMA
        // of the last ~30 steps is what is kept. Over 16 seeds of data and trainer |θ − mean| ≤ 0.03: 0.1 is
        // beyond that and far below the distance 2 travelled
        assert!((theta - mean).abs() < 0.1, "θ = {theta}, data mean {mean}");
    }

    /// `w N(4, 1) + (1 − w) N(−4, 1)` in 1-D (normalised) with `w = σ(a)` and `a` trainable.
    struct Weight {
        a: Tensor,
    }
    impl EnergyModel for Weight {
        fn f(&self, x: &Tensor) -> Tensor {
            let x = x.squeeze_dim(1);
            let log_n = |mu: f64| (&x - mu).square() * -0.5 - 0.5 * (2.0 * std::f64::consts::PI).ln();
            let (hi, lo) = (self.a.log_sigmoid() + log_n(4.0), (-&self.a).log_sigmoid() + log_n(-4.0));
            Tensor::stack(&[hi, lo], 1).logsumexp([1i64], false)
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.a.shallow_clone()]
        }
    }

    #[test]
    fn recovers_the_weights_of_separated_modes() {
        // Score matching cannot: ∇ₓf is nearly the same for every weight where the data lie. With t = 9 the
        // negatives move by √18 ≈ 4.2 on average, so they reach the other mode and the loss sees the weights.
        tch::manual_seed(4);
        let n = 20_000i64;
        let hi = Tensor::rand([n, 1], (Kind::Float, Device::Cpu)).lt(0.8).to_kind(Kind::Float);
        let data = Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) + (hi * 8.0 - 4.0);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Weight { a: vs.root().var("a", &[1], nn::Init::Const(0.0)) };
        let mut trainer = Trainer::new(train_cfg(400, 256, 0.05), &vs, &model, Box::new(ed(9.0, 64, 1.0)), 5).unwrap();
        trainer.run(&mut TensorData::new(data).unwrap(), &mut MemorySink::default(), None).unwrap();
        trainer.use_ema_weights();
        let w = f64::try_from(model.a.sigmoid()).unwrap();
        eprintln!("ED-trained weight {w:.4} (data 0.8)");
        // the data's own share has sd 0.003; over 16 seeds of data and trainer the weight was in [0.794, 0.811]
        // (the finite-M bias and the optimiser's wander are smaller than that spread): 0.05 leaves room
        assert!((w - 0.8).abs() < 0.05, "weight {w}");
    }

    /// `f(x | y) = −(x − θ_y)²/2` in 1-D with θ trainable.
    struct Means {
        theta: Tensor,
    }
    impl EnergyModel for Means {
        fn f(&self, x: &Tensor) -> Tensor {
            (x.squeeze_dim(1) - self.theta.mean(self.theta.kind())).square() * -0.5
        }
        fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, _sigma: Option<&Tensor>) -> Tensor {
            match labels {
                Some(l) => (x.squeeze_dim(1) - self.theta.index_select(0, l)).square() * -0.5,
                None => self.f(x),
            }
        }
        fn label_names(&self) -> Vec<String> {
            vec!["a".into(), "b".into()]
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.theta.shallow_clone()]
        }
    }

    #[test]
    fn labels_reach_the_negatives_and_shapes_are_checked() {
        tch::manual_seed(6);
        let obj = ed(0.5, 3, 1.0);
        // shapes of the pieces, for images
        let img = Tensor::zeros([5, 1, 2, 3], (Kind::Float, Device::Cpu));
        assert_eq!(obj.negatives(&img).size(), vec![15, 1, 2, 3]);
        // with M = 1, w = 0 the loss is exactly mean f(x') − f(x): the negatives come from the data point
        let m = Shift { theta: Tensor::from_slice(&[0.0f64]) };
        let x = Tensor::randn([4, 1], (Kind::Double, Device::Cpu));
        let t = ed(0.5, 1, 0.0).terms(&m, &Batch::new(x.shallow_clone())).unwrap();
        assert_eq!((t.per_sample.size(), t.f_data.size(), t.f_neg.size()), (vec![4], vec![4], vec![4, 1]));
        let want = t.f_neg.squeeze_dim(1) - &t.f_data;
        assert!(f64::try_from((&t.per_sample - want).abs().max()).unwrap() < 1e-12);
        assert!(f64::try_from((&t.f_data - m.f(&x)).abs().max()).unwrap() < 1e-12);
        // and w/M enters as one more term: with w = 1, M = 1 it is log(1 + exp(f(x') − f(x)))
        tch::manual_seed(7);
        let t0 = ed(0.5, 1, 0.0).terms(&m, &Batch::new(x.shallow_clone())).unwrap();
        tch::manual_seed(7);
        let t1 = ed(0.5, 1, 1.0).terms(&m, &Batch::new(x.shallow_clone())).unwrap();
        assert!(f64::try_from((t0.per_sample.exp().log1p() - &t1.per_sample).abs().max()).unwrap() < 1e-12);
        // a wrong shape and a label out of range are errors
        let e = obj.terms(&m, &Batch::new(Tensor::zeros([4, 2], (Kind::Double, Device::Cpu)))).unwrap_err();
        assert!(e.to_string().contains("[B, 1]"), "{e}");
        let cm = Means { theta: Tensor::from_slice(&[0.0f32, 0.0]) };
        let bad = Batch::labelled(Tensor::zeros([2, 1], (Kind::Float, Device::Cpu)), Tensor::from_slice(&[0i64, 2]));
        assert!(obj.terms(&cm, &bad).unwrap_err().to_string().contains("0..2"));
        // a conditional model trained on labelled data learns each label's mean (the negatives carry labels)
        let n = 10_000i64;
        let labels = Tensor::from_slice(&[0i64, 1]).repeat([n / 2]);
        let x =
            Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) + labels.to_kind(Kind::Float).unsqueeze(1) * 4.0 - 2.0;
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Means { theta: vs.root().var("theta", &[2], nn::Init::Const(0.0)) };
        let mut trainer = Trainer::new(train_cfg(300, 256, 0.05), &vs, &model, Box::new(ed(1.0, 8, 1.0)), 8).unwrap();
        trainer.run(&mut LabelledData::new(x, labels).unwrap(), &mut MemorySink::default(), None).unwrap();
        trainer.use_ema_weights();
        let th = Vec::<f32>::try_from(&model.theta).unwrap();
        eprintln!("ED-trained label means {th:?} (data −2, 2)");
        // each label sees half the batch, so the wander is larger than in the unconditional test: over 12
        // seeds of data and trainer the worst label was 0.074 off; 0.15 is twice that
        assert!((th[0] + 2.0).abs() < 0.15 && (th[1] - 2.0).abs() < 0.15, "{th:?}");
        assert_eq!(trainer.objective().name(), "energy_discrepancy");
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (cfg, field) in [
            (EnergyDiscrepancyConfig { t: 0.0, ..Default::default() }, "energy_discrepancy.t"),
            (EnergyDiscrepancyConfig { t: f64::NAN, ..Default::default() }, "energy_discrepancy.t"),
            (EnergyDiscrepancyConfig { m: 0, ..Default::default() }, "energy_discrepancy.m"),
            (EnergyDiscrepancyConfig { w: -1.0, ..Default::default() }, "energy_discrepancy.w"),
            (EnergyDiscrepancyConfig { w: f64::INFINITY, ..Default::default() }, "energy_discrepancy.w"),
        ] {
            let e = EnergyDiscrepancy::new(cfg).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        let cfg: EnergyDiscrepancyConfig = toml::from_str("t = 0.25\nm = 8").unwrap();
        assert_eq!(cfg, EnergyDiscrepancyConfig { t: 0.25, m: 8, w: 1.0 });
        assert!(toml::from_str::<EnergyDiscrepancyConfig>("tt = 1.0").is_err());
        let arm: crate::objective::ObjectiveConfig = toml::from_str("kind = \"energy_discrepancy\"\nm = 2").unwrap();
        let shift = Shift { theta: Tensor::from_slice(&[0.0f32]) };
        assert_eq!(arm.build(&shift, Device::Cpu).unwrap().name(), "energy_discrepancy");
        let bad: crate::objective::ObjectiveConfig = toml::from_str("kind = \"energy_discrepancy\"\nm = 0").unwrap();
        assert!(bad.build(&shift, Device::Cpu).err().unwrap().to_string().contains("energy_discrepancy.m"));
    }
}
