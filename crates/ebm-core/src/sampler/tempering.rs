//! Parallel tempering (replica exchange): K replicas of every chain, replica k targeting `exp(βₖ f)` for
//! inverse temperatures `1 = β₁ > β₂ > … > β_K > 0`. Each step moves every replica with its own MALA or
//! Langevin step on the tempered model `βₖ f`; every `swap_every` steps neighbouring replicas `(i, i+1)` of the
//! same chain propose to exchange their states, accepted with probability
//! `min(1, exp((βᵢ − βⱼ)(f(xⱼ) − f(xᵢ))))`, on even pairs `(0,1), (2,3), …` and odd pairs `(1,2), (3,4), …`
//! in turn. Hot replicas cross the barriers between modes, and swaps carry their states down to β = 1, the
//! replica the sampler returns as `chain.x`; the joint chain leaves `Πₖ exp(βₖ f)` exactly invariant when the
//! inner move is MALA.
//!
//! The inner step at β is scaled by default (`scale_step`): MALA or Langevin with step `ε/β` on `β f` moves
//! `x ← x + ε∇f + √(2ε/β) z` (for Langevin with noise set apart, `σ/√β`), so every replica moves the same
//! distance relative to its own width (a Gaussian's variance grows as 1/β).
//!
//! State: the replicas live in [`Chain::aux`] (stacked along the batch dimension, `[K·B, *event]`, in the
//! order of `betas`), with their `f` and `∇f` when the inner move caches them (MALA) and the swap counts per
//! pair; a chain started afresh (e.g. at every contrastive iteration) starts every replica at its `x`. That
//! joint start is not the product of the tempered laws, so even from exact β = 1 samples the β = 1 replica
//! drifts a little until the hot replicas have relaxed (run enough steps, or a persistent chain).

use super::{Chain, Langevin, LangevinConfig, Mala, MalaConfig, SampleOutput, Sampler};
use crate::energy::EnergyModel;
use crate::error::{invalid, EbmError, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The move inside each replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InnerMove {
    /// Metropolis-adjusted Langevin (exact at every temperature).
    Mala(MalaConfig),
    /// Unadjusted Langevin.
    Langevin(LangevinConfig),
}

impl Default for InnerMove {
    fn default() -> Self {
        InnerMove::Mala(MalaConfig::default())
    }
}

/// Parameters of [`ParallelTempering`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemperingConfig {
    /// The inverse temperatures, strictly monotone in (0, 1], with the target β = 1 either first (decreasing
    /// ladder) or last (increasing ladder). Neighbours in this list are the pairs that swap, and the swap
    /// acceptance is reported per pair in this order.
    pub betas: Vec<f64>,
    /// The move of every replica on its tempered model `β f`.
    pub inner: InnerMove,
    /// Scale the inner step size by 1/β (and Langevin's set-apart noise by 1/√β), see the module docs.
    pub scale_step: bool,
    /// Propose swaps after every `swap_every` steps.
    pub swap_every: usize,
    /// Record per-step diagnostics (of the β = 1 replica).
    pub record: bool,
}

impl Default for TemperingConfig {
    fn default() -> Self {
        TemperingConfig {
            betas: vec![1.0, 0.5, 0.25, 0.1, 0.05],
            inner: InnerMove::default(),
            scale_step: true,
            swap_every: 1,
            record: false,
        }
    }
}

impl TemperingConfig {
    /// Checks the ladder, the swap interval and the inner move.
    pub fn validate(&self) -> Result<()> {
        let b = &self.betas;
        if b.len() < 2 {
            return Err(invalid("tempering.betas", format!("needs at least two inverse temperatures, got {b:?}")));
        }
        if b.iter().any(|v| !(*v > 0.0 && *v <= 1.0)) {
            return Err(invalid("tempering.betas", format!("every β must be in (0, 1], got {b:?}")));
        }
        let decreasing = b.windows(2).all(|w| w[0] > w[1]);
        let increasing = b.windows(2).all(|w| w[0] < w[1]);
        if !(decreasing || increasing) {
            return Err(invalid("tempering.betas", format!("must be strictly monotone, got {b:?}")));
        }
        if (decreasing && b[0] != 1.0) || (increasing && b[b.len() - 1] != 1.0) {
            return Err(invalid("tempering.betas", format!("the target β = 1.0 must be first or last, got {b:?}")));
        }
        if self.swap_every == 0 {
            return Err(invalid("tempering.swap_every", "must be ≥ 1"));
        }
        self.moves().map(|_| ())
    }

    /// The index of β = 1 in `betas`.
    fn target(&self) -> usize {
        if self.betas[0] == 1.0 {
            0
        } else {
            self.betas.len() - 1
        }
    }

    /// The inner move at every β (step scaled when `scale_step`); errors name `tempering.inner.<field>`.
    fn moves(&self) -> Result<Vec<Move>> {
        let prefix = |e: EbmError| match e {
            EbmError::InvalidArg { name, msg } => EbmError::InvalidArg { name: format!("tempering.inner.{name}"), msg },
            e => e,
        };
        self.betas
            .iter()
            .map(|&beta| {
                let s = if self.scale_step { beta } else { 1.0 };
                match &self.inner {
                    InnerMove::Mala(c) => {
                        let c = MalaConfig { step_size: c.step_size / s, ..c.clone() };
                        Mala::new(c).map(Move::Mala)
                    }
                    InnerMove::Langevin(c) => {
                        let c = LangevinConfig {
                            step_size: c.step_size / s,
                            noise: c.noise.map(|n| n / s.sqrt()),
                            ..c.clone()
                        };
                        Langevin::new(c).map(Move::Langevin)
                    }
                }
                .map_err(prefix)
            })
            .collect()
    }
}

/// A replica's move.
#[derive(Debug, Clone)]
enum Move {
    Mala(Mala),
    Langevin(Langevin),
}

impl Move {
    fn sampler(&self) -> &dyn Sampler {
        match self {
            Move::Mala(s) => s,
            Move::Langevin(s) => s,
        }
    }
}

/// The tempered model `β f`.
struct Tempered<'a> {
    m: &'a dyn EnergyModel,
    beta: f64,
}

impl EnergyModel for Tempered<'_> {
    fn f(&self, x: &Tensor) -> Tensor {
        self.m.f(x) * self.beta
    }
    fn f_and_score(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (f, g) = self.m.f_and_score(x);
        (f * self.beta, g * self.beta)
    }
    fn score(&self, x: &Tensor) -> Tensor {
        self.m.score(x) * self.beta
    }
    fn f_given(&self, x: &Tensor, labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
        self.m.f_given(x, labels, sigma) * self.beta
    }
    fn event_shape(&self) -> Vec<i64> {
        self.m.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.m.parameters()
    }
}

/// Keys of the state in [`Chain::aux`].
const X_KEY: &str = "tempering.x";
const F_KEY: &str = "tempering.f";
const G_KEY: &str = "tempering.grad";
/// `[2, K-1]` f64: swaps accepted (row 0) and proposed (row 1) per neighbouring pair.
const SWAP_KEY: &str = "tempering.swaps";

/// The parallel-tempering sampler.
#[derive(Debug, Clone)]
pub struct ParallelTempering {
    cfg: TemperingConfig,
    moves: Vec<Move>,
    target: usize,
}

impl ParallelTempering {
    /// Builds the sampler after validating its configuration.
    pub fn new(cfg: TemperingConfig) -> Result<Self> {
        cfg.validate()?;
        let moves = cfg.moves()?;
        let target = cfg.target();
        Ok(ParallelTempering { cfg, moves, target })
    }

    /// The configuration.
    pub fn config(&self) -> &TemperingConfig {
        &self.cfg
    }

    /// The swap acceptance rate of every neighbouring pair `(betas[i], betas[i+1])` so far, `K-1` values (NaN
    /// for a pair that has not proposed yet); `None` before the first step.
    pub fn swap_acceptance(chain: &Chain) -> Option<Vec<f64>> {
        let c = Vec::<Vec<f64>>::try_from(chain.aux.get(SWAP_KEY)?).ok()?;
        Some(c[0].iter().zip(&c[1]).map(|(a, p)| if *p > 0.0 { a / p } else { f64::NAN }).collect())
    }

    /// All replicas of `chain`, in the order of `betas`; `None` before the first step.
    ///
    /// # Shapes
    /// → `[K, B, *event]`.
    pub fn replicas(&self, chain: &Chain) -> Option<Tensor> {
        let x = chain.aux.get(X_KEY)?;
        let mut shape = vec![self.cfg.betas.len() as i64, chain.x.size()[0]];
        shape.extend_from_slice(&x.size()[1..]);
        Some(x.reshape(shape.as_slice()))
    }

    /// [`Sampler::run`] that also returns the swap acceptance per neighbouring pair (see
    /// [`ParallelTempering::swap_acceptance`]; NaN for every pair when `n_steps < swap_every`).
    ///
    /// # Shapes
    /// `x0: [B, *event]` → `x, x_mean: [B, *event]`, `K-1` rates.
    pub fn run_with_stats(&self, m: &dyn EnergyModel, x0: &Tensor, n_steps: usize) -> Result<(SampleOutput, Vec<f64>)> {
        let chain = self.run_chain(m, x0, n_steps)?;
        let rates = Self::swap_acceptance(&chain).unwrap_or_else(|| vec![f64::NAN; self.cfg.betas.len() - 1]);
        Ok((chain.into_output(), rates))
    }

    /// Proposes swaps between the pairs `(i, i+1)`, `i = start, start + 2, …`, for every chain index, updating
    /// the replicas (and their raw `f`, `∇f`) in place and returning the per-pair accepted counts `[K-1]`.
    /// The rows of the target replica that took a new state are returned too.
    fn swap(
        &self,
        start: usize,
        xs: &mut [Tensor],
        fs: &mut [Tensor],
        mut gs: Option<&mut Vec<Tensor>>,
    ) -> (Tensor, Option<Tensor>) {
        let k = xs.len();
        let mut target_swapped = None;
        let mut accepted = Vec::with_capacity(k - 1);
        for i in 0..k - 1 {
            if i < start || !(i - start).is_multiple_of(2) {
                accepted.push(Tensor::zeros([], (Kind::Double, xs[0].device())));
                continue;
            }
            let j = i + 1;
            let (bi, bj) = (self.cfg.betas[i], self.cfg.betas[j]);
            let acc = tch::no_grad(|| {
                let log_a = (&fs[j] - &fs[i]).to_kind(Kind::Double) * (bi - bj);
                log_a.rand_like().log().lt_tensor(&log_a)
            });
            let mut shape = vec![acc.size()[0]];
            shape.extend(std::iter::repeat_n(1, xs[i].dim() - 1));
            let a = acc.view(shape.as_slice());
            let exchange = |v: &mut [Tensor], mask: &Tensor| {
                let (vi, vj) = (v[j].where_self(mask, &v[i]), v[i].where_self(mask, &v[j]));
                (v[i], v[j]) = (vi, vj);
            };
            exchange(xs, &a);
            exchange(fs, &acc);
            if let Some(g) = gs.as_deref_mut() {
                exchange(g, &a);
            }
            if i == self.target || j == self.target {
                target_swapped = Some(a.shallow_clone());
            }
            accepted.push(acc.to_kind(Kind::Double).sum(Kind::Double));
        }
        (Tensor::stack(&accepted, 0), target_swapped)
    }
}

impl Sampler for ParallelTempering {
    /// One inner move of every replica, then (every `swap_every` steps) one round of swaps.
    ///
    /// # Shapes
    /// `chain.x: [B, *event]` (the β = 1 replica) stays `[B, *event]`; the replicas are `[K·B, *event]`.
    fn step(&self, m: &dyn EnergyModel, chain: &mut Chain) -> Result<()> {
        let k = self.cfg.betas.len();
        let b = chain.x.size()[0];
        let stored = chain.aux.remove(X_KEY).filter(|x| x.size()[0] == k as i64 * b);
        let (f_raw, g_raw) = (chain.aux.remove(F_KEY), chain.aux.remove(G_KEY));
        let (all, cached) = match stored {
            Some(x) => (x, f_raw.zip(g_raw)),
            None => (Tensor::cat(&(0..k).map(|_| chain.x.detach()).collect::<Vec<_>>(), 0), None),
        };
        let (mut xs, mut fs, mut gs) = (Vec::with_capacity(k), Vec::with_capacity(k), Vec::with_capacity(k));
        let mut x_mean = None;
        for (i, (mv, &beta)) in self.moves.iter().zip(&self.cfg.betas).enumerate() {
            let mut sub = Chain::new(&all.narrow(0, i as i64 * b, b));
            sub.t = chain.t;
            sub.record = chain.record && i == self.target;
            if let Some((f, g)) = &cached {
                sub.cache = Some((f.narrow(0, i as i64 * b, b) * beta, g.narrow(0, i as i64 * b, b) * beta));
            }
            mv.sampler().step(&Tempered { m, beta }, &mut sub)?;
            if i == self.target {
                chain.trace.append(&mut sub.trace);
                chain.absorb_moves(&mut sub);
                x_mean = Some(sub.x_mean);
            }
            if let Some((f, g)) = sub.cache {
                fs.push(f / beta);
                gs.push(g / beta);
            }
            xs.push(sub.x);
        }
        let mut x_mean = x_mean.unwrap_or_else(|| xs[self.target].shallow_clone());
        let has_cache = gs.len() == k;
        if (chain.t + 1).is_multiple_of(self.cfg.swap_every) {
            if !has_cache {
                fs = tch::no_grad(|| xs.iter().map(|x| m.f(x)).collect());
            }
            let start = ((chain.t + 1) / self.cfg.swap_every + 1) % 2;
            let (acc, target_swapped) = self.swap(start, &mut xs, &mut fs, has_cache.then_some(&mut gs));
            let proposed: Vec<f64> =
                (0..k - 1).map(|i| if i >= start && (i - start).is_multiple_of(2) { b as f64 } else { 0.0 }).collect();
            let inc = Tensor::stack(&[acc, Tensor::from_slice(&proposed).to_device(xs[0].device())], 0);
            let counts = match chain.aux.remove(SWAP_KEY) {
                Some(c) => c + inc,
                None => inc,
            };
            chain.aux.insert(SWAP_KEY, counts);
            if let Some(a) = target_swapped {
                x_mean = xs[self.target].where_self(&a, &x_mean);
            }
        } else if !chain.aux.contains_key(SWAP_KEY) {
            let zeros = Tensor::zeros([2, k as i64 - 1], (Kind::Double, xs[0].device()));
            chain.aux.insert(SWAP_KEY, zeros);
        }
        chain.x = xs[self.target].shallow_clone();
        chain.x_mean = x_mean;
        chain.aux.insert(X_KEY, Tensor::cat(&xs, 0));
        if has_cache {
            chain.aux.insert(F_KEY, Tensor::cat(&fs, 0));
            chain.aux.insert(G_KEY, Tensor::cat(&gs, 0));
        }
        Ok(())
    }

    fn records(&self) -> bool {
        self.cfg.record
    }

    fn name(&self) -> &'static str {
        "tempering"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::energy::{Gaussian, GaussianMixture};
    use crate::objective::contrastive::{Contrastive, ContrastiveConfig, Negatives};
    use crate::objective::Objective;
    use crate::sampler::test_util::contrastive_gradient;
    use crate::sampler::{Init, SamplerConfig};
    use tch::Device;

    fn pt(betas: &[f64], step: f64) -> ParallelTempering {
        ParallelTempering::new(TemperingConfig {
            betas: betas.to_vec(),
            inner: InnerMove::Mala(MalaConfig { step_size: step, record: false }),
            ..Default::default()
        })
        .unwrap()
    }

    /// Share of `x[:, 0] < 0`.
    fn share_left(x: &Tensor) -> f64 {
        f64::try_from(x.select(1, 0).lt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap()
    }

    #[test]
    fn recovers_separated_mode_weights_where_mala_does_not() {
        tch::manual_seed(41);
        // 0.8 N(-4, 1) + 0.2 N(4, 1): modes 8σ apart, f drops by ≈ 7.8 nats between them, so a MALA chain at
        // β = 1 practically never crosses. Every chain starts in the light mode at x = +4.
        let m = GaussianMixture::isotropic(&[0.8, 0.2], &[vec![-4.0], vec![4.0]], 1.0, Device::Cpu).unwrap();
        let n = 4000;
        let x0 = Tensor::full([n, 1], 4.0, (Kind::Float, Device::Cpu));
        let steps = 300;
        let (out, rates) = pt(&[1.0, 0.5, 0.25, 0.1, 0.05], 0.5).run_with_stats(&m, &x0, steps).unwrap();
        let mala = Mala::new(MalaConfig { step_size: 0.5, record: false }).unwrap().run(&m, &x0, steps).unwrap();
        let (w_pt, w_mala) = (share_left(&out.x), share_left(&mala.x));
        eprintln!(
            "tempering: weight of the heavy mode PT {w_pt} vs MALA {w_mala} (exact 0.8); swap rates {rates:?}; \
             acceptance {:?}",
            out.acceptance
        );
        // Exact share of x < 0: 0.8 Φ(4) + 0.2 Φ(-4) = 0.8 - 0.6·3.2e-5 ≈ 0.79998. Over 4000 independent chains
        // the binomial sd is 0.0063: 0.03 is 4.7 sd (the residual transient from the start is part of it).
        assert!((w_pt - 0.8).abs() < 0.03, "PT weight {w_pt}");
        assert!((w_mala - 0.8).abs() > 0.5, "MALA alone should stay in its start mode, weight {w_mala}");
        assert!(rates.iter().all(|r| *r > 0.0 && *r <= 1.0), "{rates:?}");
    }

    #[test]
    fn swap_rates_match_exact_draws_on_a_gaussian() {
        tch::manual_seed(42);
        // On f = -x²/2 the replica at β is N(0, 1/β). The stationary swap rate of pair (i, j) is
        // E min(1, exp((βᵢ - βⱼ)(f(xⱼ) - f(xᵢ)))) with xᵢ ~ N(0, 1/βᵢ), xⱼ ~ N(0, 1/βⱼ) independent;
        // estimated here from 10⁶ exact draws (sd < 0.0005).
        let betas = [1.0, 0.5, 0.25, 0.1];
        let g = Gaussian::isotropic(&[0.0], 1.0, Device::Cpu).unwrap();
        let x0 = Init::Gaussian { mean: 0.0, std: 1.0 }.sample(2000, &[1], Device::Cpu);
        let s = pt(&betas, 0.5);
        let (out, rates) = s.run_with_stats(&g, &x0, 300).unwrap();
        let exact: Vec<f64> = betas
            .windows(2)
            .map(|w| {
                let draw = |b: f64| Tensor::randn([1_000_000], (Kind::Double, Device::Cpu)) / b.sqrt();
                let (xi, xj) = (draw(w[0]), draw(w[1]));
                let log_a = (xi.square() - xj.square()) * (0.5 * (w[0] - w[1]));
                f64::try_from(log_a.clamp_max(0.0).exp().mean(Kind::Double)).unwrap()
            })
            .collect();
        eprintln!("tempering swap rates {rates:?}, exact {exact:?}");
        assert_eq!(rates.len(), 3);
        // Each pair proposes 150 rounds × 2000 chains; rounds are correlated through the chains, and the
        // first few rounds run before the hot replicas reach N(0, 1/β) (they start at N(0, 1)): 0.03.
        for (r, e) in rates.iter().zip(&exact) {
            assert!(*r > 0.0 && *r <= 1.0, "{rates:?}");
            assert!((r - e).abs() < 0.03, "rates {rates:?}, exact {exact:?}");
        }
        // the β = 1 replica is still N(0, 1): sd of the variance over 2000 chains ≈ 0.03
        assert!(s.replicas(&Chain::new(&x0)).is_none());
        let var = |t: &Tensor| f64::try_from(t.var(true)).unwrap();
        assert!((var(&out.x) - 1.0).abs() < 0.1, "variance {}", var(&out.x));
    }

    #[test]
    fn replicas_follow_their_temperatures_and_swaps_alternate() {
        tch::manual_seed(43);
        // β = 1 last (increasing ladder) and swaps every 2nd step, with unadjusted Langevin inside.
        let betas = [0.25, 0.5, 1.0];
        let cfg = TemperingConfig {
            betas: betas.to_vec(),
            inner: InnerMove::Langevin(LangevinConfig::seed_form(0.02)),
            swap_every: 2,
            record: true,
            ..Default::default()
        };
        let s = ParallelTempering::new(cfg).unwrap();
        let g = Gaussian::isotropic(&[1.0], 1.0, Device::Cpu).unwrap();
        let x0 = Init::Gaussian { mean: 1.0, std: 1.0 }.sample(3000, &[1], Device::Cpu);
        let _frozen = crate::energy::FrozenParams::new(&g);
        let mut chain = Chain::new(&x0);
        chain.record = true;
        s.advance(&g, &mut chain, 1).unwrap();
        // no swap round yet: counts are zero, rates NaN
        assert!(ParallelTempering::swap_acceptance(&chain).unwrap().iter().all(|r| r.is_nan()));
        s.advance(&g, &mut chain, 2).unwrap();
        // one round, at t + 1 = 2: even pairs only, (0, 1)
        let r = ParallelTempering::swap_acceptance(&chain).unwrap();
        assert!(r[0] > 0.0 && r[1].is_nan(), "{r:?}");
        s.advance(&g, &mut chain, 397).unwrap();
        let r = ParallelTempering::swap_acceptance(&chain).unwrap();
        assert!(r.iter().all(|v| *v > 0.0 && *v <= 1.0), "{r:?}");
        assert_eq!(chain.trace.len(), 400);
        let reps = s.replicas(&chain).unwrap();
        assert_eq!(reps.size(), vec![3, 3000, 1]);
        assert!(bool::try_from(reps.get(2).eq_tensor(&chain.x).all()).unwrap());
        // Replica at β is N(1, 1/β) (ULA moving x + ε∇f + √(2ε/β) z inflates it by 1/(1 - ε/2) ≈ 1.01, and swaps keep
        // the joint law). Sd of a variance over 3000 chains ≈ √(2/3000)/β ≈ 0.026/β: tolerance 0.12/β.
        for (i, b) in betas.iter().enumerate() {
            let v = f64::try_from(reps.get(i as i64).var(true)).unwrap();
            let mu = f64::try_from(reps.get(i as i64).mean(Kind::Double)).unwrap();
            eprintln!("tempering replica β = {b}: mean {mu}, variance {v} (exact 1, {})", 1.0 / b);
            assert!((v - 1.0 / b).abs() < 0.12 / b, "β = {b}: variance {v}");
            assert!((mu - 1.0).abs() < 0.1 / b.sqrt(), "β = {b}: mean {mu}");
        }
    }

    /// f(x | y) = -(x - θ_y)²/2 in 1-D; without labels, the label marginal (unused).
    struct Means {
        theta: Tensor,
    }
    impl EnergyModel for Means {
        fn f(&self, x: &Tensor) -> Tensor {
            (x.squeeze_dim(1) - self.theta.mean(Kind::Float)).square() * -0.5
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
    fn gives_negatives_for_contrastive_training() {
        // With exact negatives ∂L/∂θ = θ - mean(data) (see contrastive.rs); chains start in the model's own
        // distribution N(0.5, 1), which every replica's move and the swaps leave invariant at β = 1.
        tch::manual_seed(44);
        let sampler: SamplerConfig = toml::from_str(
            "kind = \"tempering\"\nbetas = [1.0, 0.3]\nswap_every = 2\n[inner]\nkind = \"mala\"\nstep_size = 0.3\n",
        )
        .unwrap();
        let (got, want, _) = contrastive_gradient(sampler, 10);
        eprintln!("tempering contrastive: grad {got}, want {want}");
        // sd of the negatives' mean over 20000 chains ≈ 0.007, MALA has no bias: 4 sd
        assert!((got - want).abs() < 0.03, "grad {got}, want {want}");

        // A conditional model: every replica block is evaluated with the batch's own labels. Chains start at the
        // data (x | y ~ N(∓2, 1)) and relax to the model N(θ_y, 1), θ = ∓0.5, within 60 steps (MALA at ε = 0.3
        // contracts by ≈ 0.7 per step); with converged negatives ∂L/∂θ_y = (n_y / B)(θ_y - mean(x⁺ | y)).
        let m = Means { theta: Tensor::from_slice(&[-0.5f32, 0.5]).set_requires_grad(true) };
        let inner = InnerMove::Mala(MalaConfig { step_size: 0.3, record: false });
        let sampler = SamplerConfig::Tempering(TemperingConfig { inner, ..Default::default() });
        let cfg = ContrastiveConfig { negatives: Negatives::Data, k: 60, sampler, alpha: 0.0 };
        let mut obj = Contrastive::new(cfg, &m, Device::Cpu).unwrap();
        let n = 4000i64;
        let labels = Tensor::from_slice(&[0i64, 1]).repeat([n / 2]);
        let x =
            Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) + labels.to_kind(Kind::Float).unsqueeze(1) * 4.0 - 2.0;
        let out = obj.loss(&m, &Batch::labelled(x.shallow_clone(), labels.shallow_clone())).unwrap();
        let g = Vec::<f32>::try_from(Tensor::run_backward(&[out.loss], &[&m.theta], false, false).remove(0)).unwrap();
        let mean = |l: i64| f64::try_from(x.squeeze_dim(1).masked_select(&labels.eq(l)).mean(Kind::Double)).unwrap();
        let want = [0.5 * (-0.5 - mean(0)), 0.5 * (0.5 - mean(1))];
        eprintln!("tempering conditional contrastive: grad {g:?}, want {want:?}");
        // sd of each label's negatives' mean ≈ 0.5 · 1/√2000 ≈ 0.011: 0.04
        for (gv, w) in g.iter().zip(want) {
            assert!((f64::from(*gv) - w).abs() < 0.04, "grad {g:?}, want {want:?}");
        }
    }

    #[test]
    fn bad_configs_are_errors_naming_the_field() {
        let bad = |c: TemperingConfig, field: &str| {
            let e = ParallelTempering::new(c.clone()).unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
            assert!(SamplerConfig::Tempering(c).validate().is_err());
        };
        for betas in [vec![1.0], vec![1.0, 0.0], vec![1.0, 1.5], vec![0.5, 0.25], vec![1.0, 0.2, 0.5], vec![1.0, 1.0]] {
            bad(TemperingConfig { betas, ..Default::default() }, "tempering.betas");
        }
        bad(TemperingConfig { betas: vec![1.0, f64::NAN], ..Default::default() }, "tempering.betas");
        bad(TemperingConfig { swap_every: 0, ..Default::default() }, "tempering.swap_every");
        let inner = InnerMove::Mala(MalaConfig { step_size: -1.0, record: false });
        bad(TemperingConfig { inner, ..Default::default() }, "tempering.inner.mala.step_size");
        let inner = InnerMove::Langevin(LangevinConfig::seed_form(0.0));
        bad(TemperingConfig { inner, ..Default::default() }, "tempering.inner.langevin.step_size");
        assert!(ParallelTempering::new(TemperingConfig { betas: vec![0.1, 0.5, 1.0], ..Default::default() }).is_ok());
        assert!(toml::from_str::<SamplerConfig>("kind = \"tempering\"\nbeta = [1.0]\n").is_err());
        assert!(toml::from_str::<SamplerConfig>("kind = \"tempering\"\n[inner]\nkind = \"hmc\"\n").is_err());
    }
}
