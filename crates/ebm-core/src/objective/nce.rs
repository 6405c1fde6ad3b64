//! Noise-contrastive estimation (Gutmann & Hyvärinen 2010, 2012): learn `f` and its normaliser by telling
//! the data from samples of a known noise density `q`, with `ν` noise samples per data point. With the
//! learned scalar `c = −log Z` and
//!
//! `G(x) = f(x) + c − log q(x) − log ν`,
//!
//! the loss (minimised) is `−E_data log σ(G(x)) − ν E_q log(1 − σ(G(x')))`, computed as
//! `mean softplus(−G(x)) + ν · mean softplus(G(x'))` over the batch and `⌈ν·B⌉` noise samples. (The paper's
//! `h = 1/(1 + ν exp(−(log p_m − log q)))` is `σ(G)` with `log p_m = f + c`.) Its minimiser over `f` and `c`
//! is `f + c = log p_data` wherever `q > 0`, so `−c` estimates the model's `log Z` with no integral.
//!
//! # The noise
//! `q` is a Gaussian fitted to the data: mean and covariance (full, or only its diagonal), with the
//! standard deviations multiplied by `noise_scale` (wider noise covers the tails; 1 keeps the data's
//! scale), plus a jitter of `1e-5 × (mean variance)` on the diagonal so that constant coordinates (e.g.
//! pixels that are always black) leave it proper. It is fitted, by preference, to the whole training set
//! given before training ([`Nce::with_noise_fitted_to`]); otherwise to the first batch the objective sees.
//! Either way it is kept as the objective's state ([`Objective::state`]), so checkpoints hold it and a resumed
//! run uses the same `q`.
//!
//! # Where `c` lives
//! The [`crate::train::Trainer`] trains the variables of the model's `VarStore`, so `c` is a variable of that
//! store: [`Nce::in_var_store`] creates it as `nce_c` (shape `[L]`, one `c` per label, `L = 1` for an
//! unconditional model) under the path it is given, and the trainer then optimises it with Adam, averages it
//! in the EMA and saves it in checkpoints (as `model.nce_c`) with no change. A model that reloads such a
//! checkpoint must create the variable too. [`ObjectiveConfig::build`](super::ObjectiveConfig::build) has no
//! store and so refuses NCE; [`ObjectiveConfig::build_with_vars`](super::ObjectiveConfig::build_with_vars)
//! builds every objective, NCE included. [`log_z_in`] reads the learned `log Z` back from a store.
//!
//! Conditional models: with labels, `c` has one entry per label and `G(x | y) = f(x | y) + c_y − log q(x) −
//! log ν`; the noise samples take labels drawn from the batch's labels, so the classifier separates
//! `p(x | y) p(y)` from `q(x) p(y)` and `−c_y` estimates `log Z_y`.

use super::{LossOutput, Objective};
use crate::batch::Batch;
use crate::check::check_input;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// The name of the variable `c = −log Z` that [`Nce::in_var_store`] creates.
pub const NCE_C: &str = "nce_c";

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// Which covariance the fitted Gaussian noise has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NoiseCovariance {
    /// The data's full covariance (`D × D`; right for low-dimensional data).
    #[default]
    Full,
    /// Only its diagonal (the per-coordinate variances; for images and other large `D`).
    Diagonal,
}

/// Configuration of [`Nce`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NceConfig {
    /// Noise samples per data sample `ν > 0` (`⌈ν·B⌉` noise samples per batch of `B`).
    pub nu: f64,
    /// The fitted Gaussian's covariance.
    pub noise: NoiseCovariance,
    /// Multiplies the fitted standard deviations (`> 0`; the covariance by its square).
    pub noise_scale: f64,
}

impl Default for NceConfig {
    /// `ν = 1`, full covariance at the data's own scale.
    fn default() -> Self {
        NceConfig { nu: 1.0, noise: NoiseCovariance::Full, noise_scale: 1.0 }
    }
}

impl NceConfig {
    /// Checks `ν > 0` and `noise_scale > 0`, both finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.nu > 0.0) || !self.nu.is_finite() {
            return Err(invalid("nce.nu", format!("the noise ratio must be > 0, got {}", self.nu)));
        }
        if !(self.noise_scale > 0.0) || !self.noise_scale.is_finite() {
            return Err(invalid("nce.noise_scale", format!("must be > 0, got {}", self.noise_scale)));
        }
        Ok(())
    }
}

/// A Gaussian `N(μ, S)` over flattened samples, fitted to data (the noise of [`Nce`]). Parameters in f64;
/// densities and samples in the caller's dtype.
#[derive(Debug)]
pub struct FittedGaussian {
    mean: Tensor,
    chol: Tensor,
    whiten: Tensor,
    log_norm: f64,
}

impl FittedGaussian {
    /// Fits the mean and covariance (unbiased, `N − 1`) of `x`, flattened per sample, keeps the full matrix
    /// or its diagonal, scales it by `scale²` and adds `1e-5 × (mean variance)` (at least `1e-12`) to the
    /// diagonal.
    ///
    /// # Shapes
    /// `x: [N, *event]` with `N ≥ 2`.
    pub fn fit(x: &Tensor, cov: NoiseCovariance, scale: f64) -> Result<Self> {
        let n = x.size().first().copied().unwrap_or(0);
        if x.dim() < 2 || n < 2 {
            return Err(invalid("nce noise", format!("need at least 2 samples [N, ...] to fit, got {:?}", x.size())));
        }
        crate::check::check_finite(x, "nce noise data")?;
        let flat = x.detach().to_kind(Kind::Double).reshape([n, -1]);
        let d = flat.size()[1];
        let mean = flat.mean_dim(0, false, Kind::Double);
        let centred = &flat - &mean;
        let full = centred.transpose(0, 1).matmul(&centred) / (n - 1) as f64;
        let cov_t = match cov {
            NoiseCovariance::Full => full,
            NoiseCovariance::Diagonal => full.diagonal(0, 0, 1).diag_embed(0, 0, 1),
        } * (scale * scale);
        let jitter = (f64::try_from(cov_t.trace())? / d as f64 * 1e-5).max(1e-12);
        let cov_t = cov_t + Tensor::eye(d, (Kind::Double, x.device())) * jitter;
        let (chol, info) = cov_t.linalg_cholesky_ex(false, false);
        if i64::try_from(info)? != 0 {
            return Err(invalid("nce noise", "the fitted covariance is not positive definite"));
        }
        Self::from_parts(mean, chol)
    }

    fn from_parts(mean: Tensor, chol: Tensor) -> Result<Self> {
        let d = mean.size()[0];
        let log_det_half = f64::try_from(chol.diagonal(0, 0, 1).log().sum(Kind::Double))?;
        if !log_det_half.is_finite() {
            return Err(invalid("nce noise", "the covariance's Cholesky factor has a zero or negative diagonal"));
        }
        let whiten = chol.inverse();
        Ok(FittedGaussian { mean, chol, whiten, log_norm: 0.5 * d as f64 * LN_2PI + log_det_half })
    }

    /// The dimension `D` of a flattened sample.
    pub fn dim(&self) -> i64 {
        self.mean.size()[0]
    }

    /// The mean μ, `[D]` (f64).
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The covariance `S = L Lᵀ` (scaled, with the jitter), `[D, D]` (f64).
    pub fn cov(&self) -> Tensor {
        self.chol.matmul(&self.chol.transpose(0, 1))
    }

    /// `log N(x; μ, S)` of each sample (flattened), in `x`'s dtype.
    ///
    /// # Shapes
    /// `x: [B, *event]` with `prod(event) = D` → `[B]`.
    pub fn log_prob(&self, x: &Tensor) -> Tensor {
        let k = x.kind();
        let b = x.size()[0];
        let z = (x.reshape([b, -1]) - self.mean.to_kind(k)).matmul(&self.whiten.to_kind(k).transpose(0, 1));
        z.square().sum_dim_intlist(1, false, k) * -0.5 - self.log_norm
    }

    /// `n` samples `μ + L z`, reshaped to `[n, *event]` (`prod(event) = D`).
    ///
    /// # Shapes
    /// → `[n, *event]`.
    pub fn sample(&self, n: i64, event: &[i64], kind: Kind) -> Tensor {
        let z = Tensor::randn([n, self.dim()], (kind, self.mean.device()));
        let x = z.matmul(&self.chol.to_kind(kind).transpose(0, 1)) + self.mean.to_kind(kind);
        let mut shape = vec![n];
        shape.extend(event);
        x.reshape(shape.as_slice())
    }

    /// `[D + 1, D]`: the mean, then the Cholesky factor's rows (what [`Objective::state`] saves).
    fn packed(&self) -> Tensor {
        Tensor::cat(&[self.mean.unsqueeze(0), self.chol.shallow_clone()], 0)
    }

    fn unpack(t: &Tensor) -> Result<Self> {
        let s = t.size();
        if s.len() != 2 || s[0] != s[1] + 1 || s[1] == 0 {
            return Err(invalid("checkpoint", format!("NCE noise state must be [D + 1, D], got {s:?}")));
        }
        let t = t.to_kind(Kind::Double);
        Self::from_parts(t.select(0, 0), t.narrow(0, 1, s[1]).tril(0))
    }
}

/// The pieces of the NCE loss on one batch.
#[derive(Debug)]
pub struct NceTerms {
    /// `G` on the data, `[B]`.
    pub g_data: Tensor,
    /// `G` on the noise samples, `[⌈ν·B⌉]`.
    pub g_noise: Tensor,
    /// `f` on the data, `[B]`.
    pub f_data: Tensor,
    /// `f` on the noise samples, `[⌈ν·B⌉]`.
    pub f_noise: Tensor,
}

/// The NCE objective; see the module docs for where `c` lives and how the noise is fitted.
#[derive(Debug)]
pub struct Nce {
    cfg: NceConfig,
    c: Tensor,
    noise: Option<FittedGaussian>,
}

impl Nce {
    /// Builds the objective with `c = −log Z` given as a tensor `[L]` (`L = 1` for unlabelled batches, the
    /// model's number of labels for labelled ones). To be trained, `c` must be a trainable variable of the
    /// store the trainer trains (see [`Nce::in_var_store`]); a plain tensor keeps `c` fixed.
    pub fn new(cfg: NceConfig, c: Tensor) -> Result<Self> {
        cfg.validate()?;
        if c.dim() != 1 || c.size()[0] == 0 {
            return Err(invalid("nce.c", format!("must have shape [L] (one per label), got {:?}", c.size())));
        }
        Ok(Nce { cfg, c, noise: None })
    }

    /// Builds the objective with `c` a new trainable variable [`NCE_C`] of shape `[L]` (`L` the model's
    /// number of labels), initialised to 0, under `vars` (e.g. `vs.root()` of the model's store).
    pub fn in_var_store(cfg: NceConfig, vars: &nn::Path, model: &dyn EnergyModel) -> Result<Self> {
        cfg.validate()?;
        let c = vars.f_zeros(NCE_C, &[model.num_labels()])?;
        Self::new(cfg, c)
    }

    /// Fits the noise to `data` (the whole training set, preferably) and returns the objective.
    ///
    /// # Shapes
    /// `data: [N, *event]`, `N ≥ 2`.
    pub fn with_noise_fitted_to(mut self, data: &Tensor) -> Result<Self> {
        self.fit_noise(data)?;
        Ok(self)
    }

    /// Fits (or refits) the noise to `data`.
    ///
    /// # Shapes
    /// `data: [N, *event]`, `N ≥ 2`.
    pub fn fit_noise(&mut self, data: &Tensor) -> Result<()> {
        self.noise = Some(FittedGaussian::fit(data, self.cfg.noise, self.cfg.noise_scale)?);
        Ok(())
    }

    /// The fitted noise, once fitted.
    pub fn noise(&self) -> Option<&FittedGaussian> {
        self.noise.as_ref()
    }

    /// The learned `c = −log Z`, `[L]`.
    pub fn c(&self) -> &Tensor {
        &self.c
    }

    /// The learned `log Z = −c` (of label 0, the only one of an unconditional model).
    pub fn log_z(&self) -> f64 {
        self.log_zs().first().copied().unwrap_or(f64::NAN)
    }

    /// The learned `log Z_y = −c_y` of every label.
    pub fn log_zs(&self) -> Vec<f64> {
        tch::no_grad(|| Vec::<f64>::try_from(-self.c.to_kind(Kind::Double))).unwrap_or_default()
    }

    /// Draws `⌈ν·B⌉` noise samples (fitting the noise to the batch if none is fitted yet) and evaluates `G`
    /// and `f` on the data and the noise, in one call of the model. Errors on a batch of the wrong shape or
    /// labels out of range, or a `c` without one entry per label.
    ///
    /// # Shapes
    /// `batch.x: [B, *event]`, `batch.labels: [B]` (optional) → `g_data, f_data: [B]`,
    /// `g_noise, f_noise: [⌈ν·B⌉]`.
    pub fn terms(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<NceTerms> {
        let event = m.event_shape();
        batch.check(&event, m.num_labels(), "data batch")?;
        let want_c = if batch.labels.is_some() { m.num_labels() } else { 1 };
        if self.c.size() != [want_c] {
            return Err(invalid(
                "nce.c",
                format!(
                    "has shape {:?}, but {} batches need [{want_c}] (one c = −log Z per label)",
                    self.c.size(),
                    if batch.labels.is_some() { "labelled" } else { "unlabelled" }
                ),
            ));
        }
        if self.noise.is_none() {
            self.fit_noise(&batch.x)?;
        }
        let noise = self.noise.as_ref().expect("fitted above");
        let d: i64 = event.iter().product();
        if noise.dim() != d {
            return Err(invalid(
                "nce noise",
                format!("was fitted to samples of {} values, but the model's samples have {d}", noise.dim()),
            ));
        }
        let b = batch.len();
        let nq = (self.cfg.nu * b as f64).ceil() as i64;
        let x = batch.x.detach();
        let xq = noise.sample(nq, &event, x.kind());
        check_input(&event, &xq, "nce noise samples")?;
        let x_all = Tensor::cat(&[x, xq], 0);
        let labels = batch.labels.as_ref().map(|l| {
            let pick = Tensor::randint(b, [nq], (Kind::Int64, l.device()));
            Tensor::cat(&[l.shallow_clone(), l.index_select(0, &pick)], 0)
        });
        let f = m.f_given(&x_all, labels.as_ref(), None);
        if f.size() != [b + nq] {
            return Err(invalid(
                "model output",
                format!("f must return one value per sample, [{}], got {:?}", b + nq, f.size()),
            ));
        }
        let c = self.c.to_kind(f.kind()).to_device(f.device());
        let c = match &labels {
            Some(l) => c.index_select(0, l),
            None => c.expand([b + nq], false),
        };
        let g = &f + c - noise.log_prob(&x_all).to_kind(f.kind()) - self.cfg.nu.ln();
        Ok(NceTerms {
            g_data: g.narrow(0, 0, b),
            g_noise: g.narrow(0, b, nq),
            f_data: f.narrow(0, 0, b),
            f_noise: f.narrow(0, b, nq),
        })
    }
}

impl Objective for Nce {
    /// `mean softplus(−G(x)) + ν · mean softplus(G(x'))`; metrics `log_z` (`−c`, averaged over labels),
    /// `f_data`, `f_noise` (means of `f`) and `nce_accuracy` (share of data with `G > 0` and noise with
    /// `G < 0`, ½ for a classifier that cannot tell them apart at ν = 1).
    ///
    /// # Shapes
    /// `batch.x: [B, *event]`, `batch.labels: [B]` (optional) → `loss: []`.
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        let t = self.terms(m, batch)?;
        let k = t.g_data.kind();
        let loss = (-&t.g_data).softplus().mean(k) + t.g_noise.softplus().mean(k) * self.cfg.nu;
        let metrics = tch::no_grad(|| -> Result<Vec<(&'static str, f64)>> {
            let right = t.g_data.gt(0.0).sum(Kind::Double) + t.g_noise.lt(0.0).sum(Kind::Double);
            let n = (t.g_data.size()[0] + t.g_noise.size()[0]) as f64;
            Ok(vec![
                ("log_z", -f64::try_from(self.c.mean(Kind::Double))?),
                ("f_data", f64::try_from(t.f_data.mean(Kind::Double))?),
                ("f_noise", f64::try_from(t.f_noise.mean(Kind::Double))?),
                ("nce_accuracy", f64::try_from(right)? / n),
            ])
        })?;
        Ok(LossOutput { loss, metrics })
    }

    fn name(&self) -> String {
        "nce".into()
    }

    /// The fitted noise, `[D + 1, D]` (f64): the mean, then the Cholesky factor of the covariance.
    fn state(&self) -> Option<Tensor> {
        self.noise.as_ref().map(FittedGaussian::packed)
    }

    fn load_state(&mut self, state: Tensor) -> Result<()> {
        let noise = FittedGaussian::unpack(&state)?;
        if let Some(old) = &self.noise {
            if old.dim() != noise.dim() {
                return Err(invalid(
                    "checkpoint",
                    format!("holds NCE noise of dimension {}, this objective's is {}", noise.dim(), old.dim()),
                ));
            }
        }
        self.noise = Some(noise);
        Ok(())
    }
}

/// The learned `log Z = −c` of label 0 from the variable [`NCE_C`] at the root of `vs` (where
/// [`Nce::in_var_store`]`(.., &vs.root(), ..)` put it), e.g. after training or after loading a checkpoint;
/// `None` if the store has no such variable.
pub fn log_z_in(vs: &nn::VarStore) -> Option<f64> {
    let c = vs.variables().remove(NCE_C)?;
    tch::no_grad(|| f64::try_from(c.to_kind(Kind::Double).get(0))).ok().map(|c| -c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gaussian;
    use crate::optim::AdamConfig;
    use crate::train::{MemorySink, TensorData, TrainConfig, Trainer};
    use tch::Device;

    #[test]
    fn the_true_model_with_its_normaliser_has_the_closed_form_loss() {
        // Model = noise = N(μ̂, Ŝ) with c = −log Z: then G = −log ν everywhere, σ(G) = 1/(1 + ν), and the loss
        // is log(1 + ν) + ν log((1 + ν)/ν) for every sample, and ∂L/∂c = −ν/(1+ν) + ν/(1+ν) = 0.
        tch::manual_seed(0);
        let x = Tensor::randn([500, 2], (Kind::Double, Device::Cpu))
            .matmul(&Tensor::from_slice(&[1.0f64, 0.5, 0.0, 2.0]).view([2, 2]))
            + Tensor::from_slice(&[1.0f64, -1.0]);
        let nu = 3.0;
        let noise = FittedGaussian::fit(&x, NoiseCovariance::Full, 1.0).unwrap();
        let mean = Vec::<f64>::try_from(noise.mean()).unwrap();
        let cov = Vec::<f64>::try_from(noise.cov().reshape([-1])).unwrap();
        let model = Gaussian::new(&mean, &cov, Device::Cpu).unwrap();
        let c = Tensor::from_slice(&[-model.log_z()]).set_requires_grad(true);
        let mut nce = Nce::new(NceConfig { nu, ..Default::default() }, c.shallow_clone())
            .unwrap()
            .with_noise_fitted_to(&x)
            .unwrap();
        let out = nce.loss(&model, &Batch::new(x.shallow_clone())).unwrap();
        let want = (1.0 + nu).ln() + nu * ((1.0 + nu) / nu).ln();
        let got = f64::try_from(&out.loss).unwrap();
        // f64 throughout: only rounding separates the two
        assert!((got - want).abs() < 1e-9, "loss {got}, closed form {want}");
        let g = f64::try_from(Tensor::run_backward(&[out.loss], &[&c], false, false).remove(0)).unwrap();
        assert!(g.abs() < 1e-9, "∂L/∂c = {g}");
        // 1500 noise samples for a batch of 500 at ν = 3
        let t = nce.terms(&model, &Batch::new(x.shallow_clone())).unwrap();
        assert_eq!((t.g_data.size(), t.g_noise.size(), t.f_noise.size()), (vec![500], vec![1500], vec![1500]));
        // the fitted mean and covariance are the data's (up to the jitter, 1e-5 × mean variance)
        let xm = x.mean_dim(0, false, Kind::Double);
        assert!(f64::try_from((noise.mean() - &xm).abs().max()).unwrap() < 1e-12);
        let xc = &x - &xm;
        let emp = xc.transpose(0, 1).matmul(&xc) / 499.0;
        let tol = 1e-5 * f64::try_from(emp.trace()).unwrap() / 2.0 + 1e-12;
        assert!(f64::try_from((noise.cov() - &emp).abs().max()).unwrap() < 1.01 * tol);
        // log q is the normalised density
        let lp = noise.log_prob(&x) - model.log_prob(&x);
        assert!(f64::try_from(lp.abs().max()).unwrap() < 1e-9);
        // the diagonal option keeps only the variances, scaled by noise_scale²
        let diag = FittedGaussian::fit(&x, NoiseCovariance::Diagonal, 2.0).unwrap().cov();
        assert!(f64::try_from(diag.get(0).get(1)).unwrap() == 0.0);
        assert!(
            (f64::try_from(diag.get(1).get(1)).unwrap() / f64::try_from(emp.get(1).get(1)).unwrap() - 4.0).abs() < 1e-4
        );
    }

    /// `f(x) = −½ Σ_d exp(s_d) (x_d − μ_d)²` with μ and the log-precisions s trainable: `log Z = ½ D log 2π
    /// − ½ Σ s_d`.
    struct DiagGauss {
        mu: Tensor,
        s: Tensor,
    }
    impl EnergyModel for DiagGauss {
        fn f(&self, x: &Tensor) -> Tensor {
            ((x - &self.mu).square() * self.s.exp()).sum_dim_intlist(1, false, x.kind()) * -0.5
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![2]
        }
        fn parameters(&self) -> Vec<Tensor> {
            vec![self.mu.shallow_clone(), self.s.shallow_clone()]
        }
    }

    #[test]
    fn learns_the_normaliser_and_the_mean_of_a_gaussian() {
        tch::manual_seed(1);
        let n = 20_000i64;
        let std = Tensor::from_slice(&[0.5f32, 2.0]);
        let data = Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * &std + Tensor::from_slice(&[1.0f32, -1.0]);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = DiagGauss {
            mu: vs.root().var("mu", &[2], nn::Init::Const(0.0)),
            s: vs.root().var("s", &[2], nn::Init::Const(0.0)),
        };
        let cfg = NceConfig { nu: 4.0, noise: NoiseCovariance::Full, noise_scale: 1.5 };
        let nce = Nce::in_var_store(cfg, &vs.root(), &model).unwrap().with_noise_fitted_to(&data).unwrap();
        let fitted = Vec::<f64>::try_from(nce.noise().unwrap().mean()).unwrap();
        let train = TrainConfig {
            iters: 600,
            batch_size: 512,
            optim: AdamConfig { lr: 0.03, ..Default::default() },
            ema: Some(0.98),
            log_every: 100,
            ..Default::default()
        };
        let mut trainer = Trainer::new(train, &vs, &model, Box::new(nce), 2).unwrap();
        trainer.run(&mut TensorData::new(data.shallow_clone()).unwrap(), &mut MemorySink::default(), None).unwrap();
        trainer.use_ema_weights();
        let data_mean = Vec::<f64>::try_from(data.to_kind(Kind::Double).mean_dim(0, false, Kind::Double)).unwrap();
        let mu = Vec::<f32>::try_from(&model.mu).unwrap();
        let s = Vec::<f32>::try_from(&model.s).unwrap();
        let true_log_z = LN_2PI - 0.5 * s.iter().map(|v| f64::from(*v)).sum::<f64>();
        let learned = log_z_in(&vs).unwrap();
        eprintln!(
            "NCE: log Z learned {learned:.4}, closed form {true_log_z:.4}; μ {mu:?} (data {data_mean:?}), s {s:?}"
        );
        // the fitted noise mean is the data mean (f32 data summed in f64)
        for (a, b) in fitted.iter().zip(&data_mean) {
            assert!((a - b).abs() < 1e-5, "noise mean {fitted:?}, data mean {data_mean:?}");
        }
        // −c against the closed form of the model it was trained with: over 16 seeds of data and trainer the
        // two differed by at most 0.008 (the EMA of c and of s lag alike); 0.03 is beyond that, and far below
        // the 1.84 travelled from c = 0
        assert!((learned - true_log_z).abs() < 0.03, "learned log Z {learned}, closed form {true_log_z}");
        // and both are near the data's own log Z = log 2π + log(0.5 · 2) (the model's fit to 20 000 samples:
        // s within 0.03 of ±log 4, so log Z within 0.02 over the 16 seeds)
        assert!((learned - LN_2PI).abs() < 0.05, "learned log Z {learned}, the data's {LN_2PI}");
        // the mean: the sd of a batch mean of 512 is 0.09 in the second coordinate, the EMA averages ~50
        // batches; over 16 seeds the worst coordinate was 0.013 off: 0.05
        for (m, d) in mu.iter().zip(&data_mean) {
            assert!((f64::from(*m) - d).abs() < 0.05, "μ {mu:?}, data mean {data_mean:?}");
        }
    }

    #[test]
    fn bad_configs_and_shapes_are_errors() {
        for (cfg, field) in [
            (NceConfig { nu: 0.0, ..Default::default() }, "nce.nu"),
            (NceConfig { nu: f64::NAN, ..Default::default() }, "nce.nu"),
            (NceConfig { noise_scale: -1.0, ..Default::default() }, "nce.noise_scale"),
        ] {
            let e = Nce::new(cfg, Tensor::zeros([1], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        let cfg: NceConfig = toml::from_str("nu = 2.0\nnoise = \"diagonal\"").unwrap();
        assert_eq!(cfg, NceConfig { nu: 2.0, noise: NoiseCovariance::Diagonal, noise_scale: 1.0 });
        assert!(toml::from_str::<NceConfig>("noise = \"sparse\"").is_err());
        assert!(toml::from_str::<NceConfig>("ratio = 1.0").is_err());
        let e = Nce::new(NceConfig::default(), Tensor::zeros([], (Kind::Float, Device::Cpu))).unwrap_err();
        assert!(e.to_string().contains("nce.c"), "{e}");
        // a batch of the wrong shape, a c per label for unlabelled data, noise of another dimension
        let g = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        let mut nce = Nce::new(NceConfig::default(), Tensor::zeros([1], (Kind::Float, Device::Cpu))).unwrap();
        let e = nce.loss(&g, &Batch::new(Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)))).unwrap_err();
        assert!(e.to_string().contains("[B, 2]"), "{e}");
        let mut two = Nce::new(NceConfig::default(), Tensor::zeros([2], (Kind::Float, Device::Cpu))).unwrap();
        let x = Tensor::randn([8, 2], (Kind::Float, Device::Cpu));
        assert!(two.loss(&g, &Batch::new(x.shallow_clone())).unwrap_err().to_string().contains("nce.c"));
        nce.fit_noise(&Tensor::randn([8, 3], (Kind::Float, Device::Cpu))).unwrap();
        assert!(nce.loss(&g, &Batch::new(x.shallow_clone())).unwrap_err().to_string().contains("nce noise"));
        assert!(nce.fit_noise(&Tensor::zeros([1, 2], (Kind::Float, Device::Cpu))).is_err());
        // without a fitted noise the first batch fits it; the state round-trips and is checked
        let mut lazy = Nce::new(NceConfig::default(), Tensor::zeros([1], (Kind::Float, Device::Cpu))).unwrap();
        assert!(lazy.state().is_none());
        let out = lazy.loss(&g, &Batch::new(x.shallow_clone())).unwrap();
        assert!(f64::try_from(&out.loss).unwrap().is_finite());
        let st = lazy.state().unwrap();
        assert_eq!(st.size(), vec![3, 2]);
        let mut other = Nce::new(NceConfig::default(), Tensor::zeros([1], (Kind::Float, Device::Cpu))).unwrap();
        other.load_state(st.copy()).unwrap();
        assert!(
            f64::try_from((other.noise().unwrap().cov() - lazy.noise().unwrap().cov()).abs().max()).unwrap() == 0.0
        );
        assert!(other.load_state(Tensor::zeros([2, 2], (Kind::Double, Device::Cpu))).is_err());
        assert!(other.load_state(Tensor::zeros([4, 3], (Kind::Double, Device::Cpu))).is_err());
        assert_eq!(other.name(), "nce");
    }

    #[test]
    fn the_config_arm_builds_only_with_a_var_store() {
        use crate::objective::ObjectiveConfig;
        let cfg: ObjectiveConfig = toml::from_str("kind = \"nce\"\nnu = 2.0\nnoise_scale = 1.5").unwrap();
        assert_eq!(cfg, ObjectiveConfig::Nce(NceConfig { nu: 2.0, noise_scale: 1.5, ..Default::default() }));
        let g = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        let e = cfg.build(&g, Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("objective.nce") && e.contains("build_with_vars"), "{e}");
        let bad = ObjectiveConfig::Nce(NceConfig { nu: -1.0, ..Default::default() });
        assert!(bad.build(&g, Device::Cpu).err().unwrap().to_string().contains("nce.nu"));
        let vs = nn::VarStore::new(Device::Cpu);
        let obj = cfg.build_with_vars(&g, &vs.root(), Device::Cpu).unwrap();
        assert_eq!(obj.name(), "nce");
        assert_eq!(vs.variables()[NCE_C].size(), vec![1]);
        assert_eq!(log_z_in(&vs), Some(0.0));
        assert!(log_z_in(&nn::VarStore::new(Device::Cpu)).is_none());
    }
}
