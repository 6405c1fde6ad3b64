//! Unadjusted Langevin dynamics: `x ← x + λ ∇ₓf(x) + σ z`, `z ~ N(0, I)`.
//!
//! The seed's form is `σ = √(2ε)`, `λ = ε` (it targets `exp(f)` exactly as ε → 0). IGEBM/JEM set step and
//! noise apart (e.g. λ = 10, σ = 0.005); that samples `exp(f / T)` with the implied temperature
//! `T = σ² / (2λ)`, reported by [`LangevinConfig::temperature`].

use super::{Chain, Sampler, StepDiag};
use crate::autograd::{sampler_grad, sampler_score};
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

/// Parameters of [`Langevin`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LangevinConfig {
    /// Step size λ on the gradient (ε in the seed's form).
    pub step_size: f64,
    /// Noise scale σ. `None` gives the seed's form `σ = √(2λ)` (temperature 1).
    pub noise: Option<f64>,
    /// Clamp every component of `∇ₓf` to `[-c, c]` before the step.
    pub grad_clip: Option<f64>,
    /// Clamp the states to a box `[low, high]` after every step (e.g. the data range of images).
    pub clamp: Option<[f64; 2]>,
    /// Record per-step diagnostics (costs a host sync per step).
    pub record: bool,
}

impl Default for LangevinConfig {
    fn default() -> Self {
        LangevinConfig { step_size: 0.01, noise: None, grad_clip: None, clamp: None, record: false }
    }
}

impl LangevinConfig {
    /// The seed's form `x + ε∇f + √(2ε) z`.
    pub fn seed_form(eps: f64) -> Self {
        LangevinConfig { step_size: eps, ..Default::default() }
    }

    /// Step and noise set apart: `x + λ∇f + σ z`.
    pub fn apart(step_size: f64, noise: f64) -> Self {
        LangevinConfig { step_size, noise: Some(noise), ..Default::default() }
    }

    /// σ actually used.
    pub fn sigma(&self) -> f64 {
        self.noise.unwrap_or_else(|| (2.0 * self.step_size).sqrt())
    }

    /// The temperature `T = σ² / (2λ)` the chain samples at: it targets `exp(f / T)`.
    pub fn temperature(&self) -> f64 {
        self.sigma().powi(2) / (2.0 * self.step_size)
    }

    /// Checks step size, noise, clip and box.
    pub fn validate(&self) -> Result<()> {
        if !(self.step_size > 0.0) || !self.step_size.is_finite() {
            return Err(invalid("langevin.step_size", format!("must be > 0 and finite, got {}", self.step_size)));
        }
        if let Some(s) = self.noise {
            if !(s >= 0.0) || !s.is_finite() {
                return Err(invalid("langevin.noise", format!("must be ≥ 0 and finite, got {s}")));
            }
        }
        if let Some(c) = self.grad_clip {
            if !(c > 0.0) {
                return Err(invalid("langevin.grad_clip", format!("must be > 0, got {c}")));
            }
        }
        if let Some([lo, hi]) = self.clamp {
            if !(lo < hi) {
                return Err(invalid("langevin.clamp", format!("needs low < high, got [{lo}, {hi}]")));
            }
        }
        Ok(())
    }
}

/// Unadjusted Langevin sampler.
#[derive(Debug, Clone)]
pub struct Langevin {
    cfg: LangevinConfig,
}

impl Langevin {
    /// Builds the sampler after validating its configuration.
    pub fn new(cfg: LangevinConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Langevin { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &LangevinConfig {
        &self.cfg
    }

    /// One step from `x` (no checks, parameters assumed frozen): returns `(x_next, x_mean)`, and pushes
    /// the diagnostics of `x` onto `diag` when given.
    ///
    /// # Shapes
    /// `x: [B, *event]` → two `[B, *event]`.
    pub(crate) fn step_from(
        &self,
        m: &dyn EnergyModel,
        x: &Tensor,
        diag: Option<&mut Vec<StepDiag>>,
    ) -> (Tensor, Tensor) {
        let g = match diag {
            Some(d) => {
                let (f, g) = sampler_score(m, x);
                d.push(StepDiag::of(&f, &g));
                g
            }
            None => sampler_grad(m, x),
        };
        self.update(x, &g, None)
    }

    /// The move from `x` with score `g`: `x_mean = x + λ·clip(g)` and `x_next = x_mean + σz`, both kept in the
    /// box when one is set. `noise` is `σz` when the caller drew it; without it `σz` is drawn here, in place
    /// into the result's buffer (the same numbers as `randn_like() * σ`).
    ///
    /// # Shapes
    /// `x`, `g`, `noise`: `[B, *event]` → two `[B, *event]`.
    fn update(&self, x: &Tensor, g: &Tensor, noise: Option<&Tensor>) -> (Tensor, Tensor) {
        tch::no_grad(|| {
            // `g` may be an expanded view (autograd's gradient of a sum): every update writes a fresh tensor
            // first, then works in place on it
            let mut x_mean = match self.cfg.grad_clip {
                Some(c) => g.clamp(-c, c) * self.cfg.step_size,
                None => g * self.cfg.step_size,
            };
            x_mean += x;
            let sigma = self.cfg.sigma();
            let mut x_next = match (sigma > 0.0, noise) {
                (false, _) => x_mean.shallow_clone(),
                (true, Some(z)) => z + &x_mean,
                (true, None) => {
                    let mut z = x_mean.empty_like();
                    let _ = z.normal_(0.0, sigma);
                    z += &x_mean;
                    z
                }
            };
            if let Some([lo, hi]) = self.cfg.clamp {
                x_mean = x_mean.clamp(lo, hi);
                if sigma > 0.0 {
                    let _ = x_next.clamp_(lo, hi);
                } else {
                    x_next = x_mean.shallow_clone();
                }
            }
            (x_next, x_mean)
        })
    }

    /// The threads to split `n` unrecorded steps of `chain` over: one copy of the model per chain thread
    /// ([`crate::threads::chain_threads`]) when the chains are on the CPU, there are at least two threads with
    /// [`MIN_ROWS_PER_THREAD`] chains each, and the model gives [`EnergyModel::thread_copy`]; empty otherwise
    /// (the steps run on the calling thread).
    fn split(&self, m: &dyn EnergyModel, chain: &Chain, n: usize) -> Vec<Box<dyn EnergyModel + Send>> {
        if n < 2 || chain.record || chain.x.device() != Device::Cpu {
            return Vec::new();
        }
        let threads = (crate::threads::chain_threads() as i64).min(chain.x.size()[0] / MIN_ROWS_PER_THREAD);
        if threads < 2 {
            return Vec::new();
        }
        (0..threads).map(|_| m.thread_copy()).collect::<Option<Vec<_>>>().unwrap_or_default()
    }

    /// `n` steps of `chain` with its rows split evenly over one thread per model copy, each thread with one
    /// libtorch thread of its own. The noise of every step is drawn here first, in one call, so the result
    /// does not depend on how the threads interleave (it differs from the unsplit steps, which draw it step
    /// by step, but is the same from run to run).
    fn advance_split(&self, copies: Vec<Box<dyn EnergyModel + Send>>, chain: &mut Chain, n: usize) {
        let sigma = self.cfg.sigma();
        let x = &chain.x;
        let b = x.size()[0];
        let z = (sigma > 0.0).then(|| {
            let mut shape = vec![n as i64];
            shape.extend(x.size());
            let mut z = Tensor::empty(shape.as_slice(), (x.kind(), x.device()));
            let _ = z.normal_(0.0, sigma);
            z
        });
        let parts = copies.len() as i64;
        let parts: Vec<(Tensor, Tensor)> = std::thread::scope(|scope| {
            let handles: Vec<_> = copies
                .into_iter()
                .enumerate()
                .map(|(i, model)| {
                    let (start, end) = (b * i as i64 / parts, b * (i as i64 + 1) / parts);
                    let mut xi = x.narrow(0, start, end - start);
                    let zi = z.as_ref().map(|z| z.narrow(1, start, end - start));
                    scope.spawn(move || {
                        tch::set_num_threads(1);
                        let mut mean = xi.shallow_clone();
                        for t in 0..n {
                            let g = sampler_grad(model.as_ref(), &xi);
                            (xi, mean) = self.update(&xi, &g, zi.as_ref().map(|z| z.select(0, t as i64)).as_ref());
                        }
                        (xi, mean)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a Langevin thread panicked")).collect()
        });
        let (xs, means): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
        chain.x = Tensor::cat(&xs, 0);
        chain.x_mean = Tensor::cat(&means, 0);
        chain.t += n;
    }
}

/// Chains per thread below which [`Langevin`] does not split its steps over threads (thinner products lose
/// more than a second thread gains).
pub const MIN_ROWS_PER_THREAD: i64 = 64;

impl Sampler for Langevin {
    fn step(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        let diag = chain.record.then_some(&mut chain.trace);
        (chain.x, chain.x_mean) = self.step_from(m, &chain.x, diag);
        Ok(())
    }

    /// `n` steps; on the CPU with [`crate::threads::chain_threads`] ≥ 2 the chains are split over that many
    /// threads when the model allows it ([`EnergyModel::thread_copy`]; each thread runs one libtorch thread),
    /// which also runs the element-wise kernels (too small for libtorch to split) in parallel.
    fn advance(&self, m: &dyn EnergyModel, chain: &mut Chain, n: usize) -> Result<()> {
        let copies = self.split(m, chain, n);
        if !copies.is_empty() {
            self.advance_split(copies, chain, n);
            return Ok(());
        }
        for _ in 0..n {
            self.step(m, chain)?;
            chain.t += 1;
        }
        Ok(())
    }

    fn records(&self) -> bool {
        self.cfg.record
    }

    fn name(&self) -> &'static str {
        "langevin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::{Gaussian, GaussianMixture, Mlp, MlpConfig};
    use crate::sampler::test_util::moments;
    use crate::sampler::Init;
    use tch::{nn, Device, Kind};

    #[test]
    fn reproduces_a_correlated_gaussian_from_uniform_noise() {
        tch::manual_seed(11);
        // Σ = [[1, 0.6], [0.6, 0.5]]
        let g = Gaussian::new(&[1.0, -0.5], &[1.0, 0.6, 0.6, 0.5], Device::Cpu).unwrap();
        let x0 = Init::Uniform { low: -4.0, high: 4.0 }.sample(4000, &[2], Device::Cpu);
        let s = Langevin::new(LangevinConfig::seed_form(0.01)).unwrap();
        let out = s.run(&g, &x0, 600).unwrap();
        let (mean, cov) = moments(&out.x);
        // Tolerances: Monte Carlo error of 4000 chains is ≈ 0.02 on the mean; ULA's O(ε) bias on the
        // covariance is ≈ ε·Σ²-sized, < 0.03 at ε = 0.01.
        for (got, want) in mean.iter().zip([1.0, -0.5]) {
            assert!((got - want).abs() < 0.06, "mean {mean:?}");
        }
        for (got, want) in cov.iter().zip([1.0, 0.6, 0.6, 0.5]) {
            assert!((got - want).abs() < 0.08, "cov {cov:?}");
        }
    }

    /// `f(x) = -½ Σ_pixels (Σ_c x_c)²` on `[B, 3, 2]`: its gradient comes back from autograd as an expanded
    /// (non-contiguous) tensor, as for every model that looks at a channel sum.
    struct ChannelSumQuadratic;
    impl EnergyModel for ChannelSumQuadratic {
        fn f(&self, x: &Tensor) -> Tensor {
            x.sum_dim_intlist(1, false, x.kind()).square().sum_dim_intlist(1, false, x.kind()) * -0.5
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![3, 2]
        }
    }

    #[test]
    fn non_contiguous_gradients_are_sampled_and_measured() {
        tch::manual_seed(3);
        let x0 = Tensor::rand([4, 3, 2], (Kind::Float, Device::Cpu));
        let g = crate::autograd::score(&ChannelSumQuadratic, &x0, false).unwrap().grad;
        assert!(!g.is_contiguous(), "the test needs a non-contiguous gradient");
        // the channel sum s = Σ_c x_c: ∇f = -s in every channel, so one noiseless step at ε scales s by 1 - 3ε
        let cfg = LangevinConfig { step_size: 0.1, noise: Some(0.0), record: true, ..LangevinConfig::seed_form(0.1) };
        let out = Langevin::new(cfg).unwrap().run(&ChannelSumQuadratic, &x0, 1).unwrap();
        let (s0, s1) = (x0.sum_dim_intlist(1, false, Kind::Float), out.x.sum_dim_intlist(1, false, Kind::Float));
        assert!(f64::try_from((s1 - s0 * 0.7).abs().max()).unwrap() < 1e-5);
        let mala = crate::sampler::Mala::new(crate::sampler::MalaConfig { step_size: 0.01, record: false }).unwrap();
        assert!(mala.run(&ChannelSumQuadratic, &x0, 3).unwrap().acceptance.unwrap() > 0.0);
        // and the second-order estimators: tr ∇²f = -3 per pixel pair (2 pixels), exact and Hutchinson alike
        let t = crate::autograd::hessian_trace_exact(&ChannelSumQuadratic, &x0, false).unwrap().trace;
        assert!(f64::try_from((t + 6.0).abs().max()).unwrap() < 1e-5);
        // Rademacher: vᵀHv = -(Σ_c v_c)² per pixel is -1 or -9 (mean -3, variance 12): 64 probes, 2 pixels give
        // a standard deviation of √(24/64) ≈ 0.61; allow 4 of them
        let h = crate::autograd::hessian_trace_hutchinson(&ChannelSumQuadratic, &x0, 64, Default::default(), false);
        assert!(f64::try_from((h.unwrap().trace + 6.0).abs().max()).unwrap() < 2.5);
    }

    #[test]
    fn reproduces_mixture_mode_weights() {
        tch::manual_seed(5);
        // Two overlapping-enough modes so that chains can cross: weights 0.7/0.3 at ±1, std 0.6.
        let m = GaussianMixture::isotropic(&[0.7, 0.3], &[vec![-1.0, 0.0], vec![1.0, 0.0]], 0.6, Device::Cpu).unwrap();
        let x0 = Init::Uniform { low: -3.0, high: 3.0 }.sample(4000, &[2], Device::Cpu);
        let out = Langevin::new(LangevinConfig::seed_form(0.02)).unwrap().run(&m, &x0, 1500).unwrap();
        let left =
            f64::try_from(out.x.select(1, 0).lt(0.0).to_kind(tch::Kind::Double).mean(tch::Kind::Double)).unwrap();
        // Exact share of x<0: 0.7·Φ(1/0.6) + 0.3·Φ(-1/0.6) = 0.7·0.9522 + 0.3·0.0478 = 0.6809.
        assert!((left - 0.681).abs() < 0.04, "share left {left}");
    }

    #[test]
    fn temperature_and_validation() {
        assert!((LangevinConfig::seed_form(0.3).temperature() - 1.0).abs() < 1e-12);
        let t = LangevinConfig::apart(10.0, 0.005).temperature();
        assert!((t - 0.005f64.powi(2) / 20.0).abs() < 1e-15);
        for bad in [0.0, -1.0, f64::NAN] {
            let e = Langevin::new(LangevinConfig::seed_form(bad)).unwrap_err();
            assert!(e.to_string().contains("step_size"), "{e}");
        }
        assert!(Langevin::new(LangevinConfig { clamp: Some([1.0, -1.0]), ..Default::default() }).is_err());
    }

    #[test]
    fn clamps_records_and_freezes_parameters() {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
        let cfg = LangevinConfig { clamp: Some([-0.5, 0.5]), grad_clip: Some(0.1), record: true, ..Default::default() };
        let x0 = Init::Uniform { low: -3.0, high: 3.0 }.sample(32, &[2], Device::Cpu);
        let out = Langevin::new(cfg).unwrap().run(&m, &x0, 5).unwrap();
        assert!(f64::try_from(out.x.abs().max()).unwrap() <= 0.5);
        assert_eq!(out.trace.len(), 5);
        assert!(out.trace.iter().all(|d| d.mean_grad_norm.is_finite()));
        // no parameter gradient was accumulated, and the parameters train again afterwards
        assert!(vs.trainable_variables().iter().all(|p| !p.grad().defined() && p.requires_grad()));
    }

    #[test]
    fn bad_start_is_an_error() {
        let g = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        let s = Langevin::new(LangevinConfig::default()).unwrap();
        let e = s.run(&g, &Tensor::zeros([3, 5], (tch::Kind::Float, Device::Cpu)), 1).unwrap_err();
        assert!(e.to_string().contains("[B, 2]"), "{e}");
        let x = Tensor::from_slice(&[f32::INFINITY, 0.0]).view([1, 2]);
        assert!(s.run(&g, &x, 1).unwrap_err().to_string().contains("non-finite"));
    }

    #[test]
    fn chains_split_over_threads_take_the_one_thread_steps_with_the_same_noise() {
        // 20 steps of 256 chains of an MLP split over 2 threads: each thread takes its rows through the updates
        // one thread would make with the noise drawn up front (as the split draws it), to float rounding
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
        let s = Langevin::new(LangevinConfig { clamp: Some([-3.0, 3.0]), ..LangevinConfig::seed_form(0.01) }).unwrap();
        let x0 = Tensor::rand([256, 2], (Kind::Float, Device::Cpu)) * 6.0 - 3.0;
        let n = 20;
        let before = crate::threads::chain_threads();
        crate::threads::set_chain_threads(2);
        assert_eq!(s.split(&m, &Chain::new(&x0), n).len(), 2);
        // a model that cannot be shared, too few chains per thread, or a recorded step: not split
        let g = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        assert!(s.split(&g, &Chain::new(&x0), n).is_empty());
        assert!(s.split(&m, &Chain::new(&x0.narrow(0, 0, 100)), n).is_empty());
        let mut recorded = Chain::new(&x0);
        recorded.record = true;
        assert!(s.split(&m, &recorded, n).is_empty());
        tch::manual_seed(9);
        let mut chain = Chain::new(&x0);
        s.advance(&m, &mut chain, n).unwrap();
        crate::threads::set_chain_threads(1);
        assert!(s.split(&m, &Chain::new(&x0), n).is_empty());
        crate::threads::set_chain_threads(before);
        assert_eq!(chain.t, n);
        tch::manual_seed(9);
        let mut z = Tensor::empty([n as i64, 256, 2], (Kind::Float, Device::Cpu));
        let _ = z.normal_(0.0, s.config().sigma());
        let (mut x, mut mean) = (x0.shallow_clone(), x0.shallow_clone());
        for t in 0..n {
            let grad = m.score(&x);
            (x, mean) = s.update(&x, &grad, Some(&z.select(0, t as i64)));
        }
        let gap = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
        assert!(gap(&chain.x, &x) < 1e-5, "x differs by {}", gap(&chain.x, &x));
        assert!(gap(&chain.x_mean, &mean) < 1e-5, "x_mean differs by {}", gap(&chain.x_mean, &mean));
        // the chains moved, and stayed in the box
        assert!(gap(&chain.x, &x0) > 0.1);
        assert!(f64::try_from(chain.x.abs().max()).unwrap() <= 3.0);
    }
}
