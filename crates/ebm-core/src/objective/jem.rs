//! JEM, the joint energy-based model (Grathwohl, Wang, Jacobsen, Duvenaud, Norouzi & Swersky, ICLR 2020):
//! a classifier's logits `g(x)_y` read as an EBM. `p(y | x) = softmax(g(x))_y` and
//! `p(x) ∝ exp f(x)` with `f(x) = logsumexp_y g(x)_y`; the loss (minimised) is
//!
//! `L = CE(g(x), y) + w · (mean f(x⁻) − mean f(x⁺) + α (mean f(x⁺)² + mean f(x⁻)²))`,
//!
//! cross-entropy on the labelled batch plus the contrastive term of maximum likelihood of `p(x)`, with
//! negatives `x⁻` from SGLD on `f` (by default, the IGEBM replay buffer of [`Contrastive`], whose machinery this
//! reuses: one buffer, since the negatives are drawn from the label marginal).
//!
//! The model is any conditional [`EnergyModel`]: its per-label `f(x | y)` ([`EnergyModel::f_given`]) are the
//! logits. [`crate::energy::ConditionalNet`] is exactly that (with `film = false`, `g(x)_y = ⟨e_y, h(x)⟩ + c_y`,
//! the usual classifier with one shared trunk), and its label-free `f` is
//! `logsumexp_y g(x)_y − log L`: JEM's `f` up to a constant, which the contrastive term does not see.
//!
//! [`accuracy`] and [`expected_calibration_error`] score the classifier `p(y | x)`.

use super::contrastive::{Contrastive, ContrastiveConfig};
use super::{LossOutput, Objective};
use crate::batch::Batch;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

/// Configuration of [`Jem`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JemConfig {
    /// The contrastive term on the label marginal (negatives, k, sampler, α).
    pub contrastive: ContrastiveConfig,
    /// Weight `w ≥ 0` of the contrastive term (0: a plain classifier).
    pub gen_weight: f64,
}

impl Default for JemConfig {
    fn default() -> Self {
        JemConfig { contrastive: ContrastiveConfig::default(), gen_weight: 1.0 }
    }
}

impl JemConfig {
    /// Checks the contrastive settings and `w ≥ 0`.
    pub fn validate(&self) -> Result<()> {
        self.contrastive.validate()?;
        if !(self.gen_weight >= 0.0) || !self.gen_weight.is_finite() {
            return Err(invalid("jem.gen_weight", format!("must be ≥ 0, got {}", self.gen_weight)));
        }
        Ok(())
    }
}

/// The label marginal of a conditional model, with no labels of its own: what the contrastive term samples.
struct Marginal<'a> {
    m: &'a dyn EnergyModel,
}

impl EnergyModel for Marginal<'_> {
    fn f(&self, x: &Tensor) -> Tensor {
        self.m.f_given(x, None, None)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.m.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.m.parameters()
    }
}

/// The logits `g(x)_y = f(x | y)` of every label ([`EnergyModel::f_all_labels`]: one pass for a model with a
/// shared trunk).
///
/// # Shapes
/// `x: [B, *event]` → `[B, L]`.
pub fn logits(m: &dyn EnergyModel, x: &Tensor) -> Tensor {
    m.f_all_labels(x, None)
}

/// The JEM objective.
pub struct Jem {
    cfg: JemConfig,
    contrastive: Contrastive,
}

impl Jem {
    /// Builds the objective for a conditional `model` (≥ 2 labels).
    pub fn new(cfg: JemConfig, model: &dyn EnergyModel, device: Device) -> Result<Self> {
        cfg.validate()?;
        if model.num_labels() < 2 {
            return Err(invalid("jem", "needs a model with ≥ 2 labels: its per-label f are the classifier's logits"));
        }
        let contrastive = Contrastive::new(cfg.contrastive.clone(), &Marginal { m: model }, device)?;
        Ok(Jem { cfg, contrastive })
    }
}

impl Objective for Jem {
    /// # Shapes
    /// `batch.x: [B, *event]`, `batch.labels: [B]` (required) → `loss: []`.
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        batch.check(&m.event_shape(), m.num_labels(), "data batch")?;
        let Some(labels) = &batch.labels else {
            return Err(invalid("jem", "needs labelled batches (the cross-entropy term); the batch has no labels"));
        };
        let g = logits(m, &batch.x);
        let ce = g.cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, 0.0);
        let acc = tch::no_grad(|| {
            f64::try_from(g.argmax(1, false).eq_tensor(labels).to_kind(Kind::Double).mean(Kind::Double))
        });
        let mut metrics = vec![("ce", f64::try_from(ce.detach())?), ("accuracy", acc?)];
        let loss = if self.cfg.gen_weight > 0.0 {
            let marginal = Marginal { m };
            let gen = self.contrastive.loss(&marginal, &Batch::new(batch.x.shallow_clone()))?;
            metrics.extend(gen.metrics);
            &ce + gen.loss * self.cfg.gen_weight
        } else {
            ce
        };
        Ok(LossOutput { loss, metrics })
    }

    fn name(&self) -> String {
        "jem".into()
    }

    fn state(&self) -> Option<Tensor> {
        self.contrastive.state()
    }

    fn load_state(&mut self, state: Tensor) -> Result<()> {
        self.contrastive.load_state(state)
    }

    /// The negatives (of the label marginal) whatever the label.
    fn chains(&self, _label: i64) -> Option<Tensor> {
        self.contrastive.chains(0)
    }
}

/// The share of rows whose most probable class is the label.
///
/// # Shapes
/// `probs: [N, L]`, `labels: [N]` (int64) → scalar.
pub fn accuracy(probs: &Tensor, labels: &Tensor) -> Result<f64> {
    check_probs(probs, labels)?;
    Ok(f64::try_from(probs.argmax(1, false).eq_tensor(labels).to_kind(Kind::Double).mean(Kind::Double))?)
}

/// The expected calibration error with `bins` equal-width bins of confidence (the top probability):
/// `Σ_b (n_b / N) |accuracy_b − confidence_b|`.
///
/// # Shapes
/// `probs: [N, L]`, `labels: [N]` (int64) → scalar.
pub fn expected_calibration_error(probs: &Tensor, labels: &Tensor, bins: usize) -> Result<f64> {
    check_probs(probs, labels)?;
    if bins == 0 {
        return Err(invalid("ece.bins", "need ≥ 1 bin"));
    }
    let (conf, pred) = probs.to_kind(Kind::Double).max_dim(1, false);
    let conf = Vec::<f64>::try_from(conf)?;
    let hit = Vec::<bool>::try_from(pred.eq_tensor(labels))?;
    let (mut n, mut c, mut a) = (vec![0f64; bins], vec![0f64; bins], vec![0f64; bins]);
    for (p, h) in conf.iter().zip(&hit) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        n[b] += 1.0;
        c[b] += p;
        a[b] += f64::from(u8::from(*h));
    }
    let total = conf.len() as f64;
    Ok((0..bins).filter(|b| n[*b] > 0.0).map(|b| (a[b] - c[b]).abs() / total).sum())
}

fn check_probs(probs: &Tensor, labels: &Tensor) -> Result<()> {
    let (ps, ls) = (probs.size(), labels.size());
    if ps.len() != 2 || ls != [ps[0]] || labels.kind() != Kind::Int64 || ps[0] == 0 {
        return Err(invalid(
            "probs",
            format!("need probs [N, L] and int64 labels [N], N ≥ 1; got {ps:?} and {:?} {ls:?}", labels.kind()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::Negatives;
    use crate::sampler::{BufferConfig, Init, LangevinConfig, SamplerConfig};
    use tch::nn;
    use tch::nn::OptimizerConfig;

    /// Logits `g(x)_y = −(x − μ_y)²/2v + b_y` in 1-D with trainable `μ`, `ℓ = log v` and `b`: the family holds
    /// the Bayes classifier of two Gaussian classes with a common variance, and its `logsumexp` the mixture's
    /// log-density up to a constant.
    struct GaussLogits {
        mu: Tensor,
        log_v: Tensor,
        b: Tensor,
    }
    impl EnergyModel for GaussLogits {
        fn f(&self, x: &Tensor) -> Tensor {
            self.f_given(x, None, None)
        }
        fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, _s: Option<&Tensor>) -> Tensor {
            let x = x.squeeze_dim(1);
            let at = |l: &Tensor| {
                (&x - self.mu.index_select(0, l)).square() * (-0.5) / self.log_v.exp() + self.b.index_select(0, l)
            };
            match labels {
                Some(l) => at(l),
                None => {
                    let b = x.size()[0];
                    let per: Vec<Tensor> =
                        (0..2).map(|l| at(&Tensor::full([b], l, (Kind::Int64, x.device())))).collect();
                    Tensor::stack(&per, 1).logsumexp([1i64], false)
                }
            }
        }
        fn label_names(&self) -> Vec<String> {
            vec!["neg".into(), "pos".into()]
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.mu.shallow_clone(), self.log_v.shallow_clone(), self.b.shallow_clone()]
        }
    }

    /// The classes' standard deviation.
    const SD: f64 = 0.6;

    /// Two classes N(∓1, 0.6²) with priors 0.3 / 0.7: `n` points and labels.
    fn two_classes(n: i64) -> (Tensor, Tensor) {
        let labels = Tensor::rand([n], (Kind::Float, Device::Cpu)).lt(0.7).to_kind(Kind::Int64);
        let x = Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) * SD
            + (labels.to_kind(Kind::Float) * 2.0 - 1.0).unsqueeze(1);
        (x, labels)
    }

    /// The true log p(x) of [`two_classes`] and p(y = 1 | x).
    fn truth(x: f64) -> (f64, f64) {
        let v = SD * SD;
        let n = |m: f64| (-(x - m).powi(2) / (2.0 * v)).exp() / (2.0 * std::f64::consts::PI * v).sqrt();
        let (p0, p1) = (0.3 * n(-1.0), 0.7 * n(1.0));
        ((p0 + p1).ln(), p1 / (p0 + p1))
    }

    #[test]
    fn learns_the_bayes_posterior_and_the_mixture_density() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = GaussLogits {
            mu: vs.root().var_copy("mu", &Tensor::from_slice(&[-0.2f32, 0.3])),
            log_v: vs.root().var("log_v", &[1], nn::Init::Const(0.0)),
            b: vs.root().var("b", &[2], nn::Init::Const(0.0)),
        };
        let cfg = JemConfig {
            contrastive: ContrastiveConfig {
                negatives: Negatives::Replay(BufferConfig {
                    capacity: 4000,
                    restart_prob: 0.0,
                    init: Init::Uniform { low: -3.0, high: 3.0 },
                }),
                k: 30,
                sampler: SamplerConfig::Langevin(LangevinConfig::seed_form(0.05)),
                alpha: 0.0,
            },
            gen_weight: 1.0,
        };
        let mut obj = Jem::new(cfg, &m, Device::Cpu).unwrap();
        let mut opt = nn::Adam::default().build(&vs, 0.03).unwrap();
        for _ in 0..400 {
            let (x, y) = two_classes(500);
            let out = obj.loss(&m, &Batch::labelled(x, y)).unwrap();
            opt.backward_step(&out.loss);
        }
        // p(y | x) against the Bayes posterior, and f differences against the mixture's log-density ratios
        let pts = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5];
        let xs = Tensor::from_slice(&pts).to_kind(Kind::Float).unsqueeze(1);
        let probs = logits(&m, &xs).softmax(1, Kind::Double);
        let f = Vec::<f64>::try_from(m.f(&xs).to_kind(Kind::Double)).unwrap();
        for (i, x) in pts.iter().enumerate() {
            let (lp, post) = truth(*x);
            let got = f64::try_from(probs.get(i as i64).get(1)).unwrap();
            assert!((got - post).abs() < 0.05, "p(y=1 | {x}) = {got}, Bayes {post}");
            let (lp0, _) = truth(1.0);
            let ratio = f[i] - f[5];
            assert!((ratio - (lp - lp0)).abs() < 0.2, "f({x}) − f(1) = {ratio}, true {}", lp - lp0);
        }
        // accuracy and calibration on fresh data: the Bayes classifier's accuracy, and well calibrated
        let (x, y) = two_classes(20_000);
        let probs = logits(&m, &x).softmax(1, Kind::Float);
        let bayes = {
            let p = Vec::<f32>::try_from(x.squeeze_dim(1)).unwrap();
            let l = Vec::<i64>::try_from(&y).unwrap();
            p.iter().zip(&l).filter(|(x, l)| i64::from(truth(f64::from(**x)).1 > 0.5) == **l).count() as f64 / 20_000.0
        };
        let acc = accuracy(&probs, &y).unwrap();
        assert!((acc - bayes).abs() < 0.01, "accuracy {acc}, Bayes {bayes}");
        let ece = expected_calibration_error(&probs, &y, 10).unwrap();
        assert!(ece < 0.03, "ECE {ece}");
        assert_eq!(obj.state().unwrap().size(), vec![4000, 1]);
    }

    #[test]
    fn calibration_error_and_accuracy_of_known_predictions() {
        // confidence 0.9 everywhere, right on 60%: ECE = 0.3; accuracy 0.6
        let probs = Tensor::from_slice(&[0.9f32, 0.1]).repeat([10, 1]);
        let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert!((accuracy(&probs, &labels).unwrap() - 0.6).abs() < 1e-9);
        assert!((expected_calibration_error(&probs, &labels, 10).unwrap() - 0.3).abs() < 1e-6);
        assert!(expected_calibration_error(&probs, &labels, 0).unwrap_err().to_string().contains("ece.bins"));
        assert!(accuracy(&probs, &labels.narrow(0, 0, 3)).is_err());
    }

    #[test]
    fn needs_labels_and_a_conditional_model() {
        let m = GaussLogits {
            mu: Tensor::from_slice(&[-1.0f32, 1.0]),
            log_v: Tensor::zeros([1], (Kind::Float, Device::Cpu)),
            b: Tensor::zeros([2], (Kind::Float, Device::Cpu)),
        };
        let mut obj = Jem::new(JemConfig::default(), &m, Device::Cpu).unwrap();
        let e = obj.loss(&m, &Batch::new(Tensor::zeros([4, 1], (Kind::Float, Device::Cpu)))).unwrap_err();
        assert!(e.to_string().contains("labelled"), "{e}");
        let plain = crate::energy::Gaussian::isotropic(&[0.0], 1.0, Device::Cpu).unwrap();
        assert!(Jem::new(JemConfig::default(), &plain, Device::Cpu).is_err());
        let c = JemConfig { gen_weight: -1.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("jem.gen_weight"));
    }
}
