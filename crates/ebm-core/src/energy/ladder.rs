//! [`LadderMlp`]: a noise-conditional energy on a fixed ladder of noise levels `a_0 < … < a_{L-1}` in which
//! every level inherits the level above it and adds a residual: read at level `a_t` as `f_{a_t} = f(·; a_t)/a_t`
//! (this crate's convention, [`EnergyModel::at_noise`]),
//!
//! `f_{a_t}(x) = f_{a_{t+1}}(x) + r_t(x)/a_t`, `f_{a_{L-1}} = r_{L-1}/a_{L-1}`,
//!
//! one MLP `r_s` per level, every residual but the top one zero at the start.
//!
//! What it is for: diffusion recovery likelihood ([`crate::objective::Drl`]) at a small level sees only the
//! recovery conditional of width `δ_t`, which never leaves the mode its anchor came from: the heights of
//! well-separated modes and the density between them are identified only at the larger levels. A network
//! that sees σ as an input ties every level to every other (the smallest to the largest, which has no modes);
//! here a small level is the level above plus what its own loss adds, and the parameter gradient of a level
//! reaches only its own residual (see [`LadderMlp`]), so the noisy, mode-blind losses of the small levels
//! cannot move the larger ones.

use super::{EnergyModel, Mlp, MlpConfig};
use crate::error::{invalid, Result};
use tch::{nn, Tensor};

/// `f(x; σ) = σ Σ_{s: a_s ≥ σ} r_s(x)/a_s`: one MLP `r_s` per level of the ladder `a_0 < … < a_{L-1}`, the top
/// one with the default initialisation, the others with a zero output layer (every level starts as the top
/// one). At a level of the ladder `f(x; a_t)/a_t = f(x; a_{t+1})/a_{t+1} + r_t(x)/a_t`; below `a_0` every residual
/// counts, above `a_{L-1}` none (`f = 0`); with no σ, `f = Σ_s r_s/a_s` (the lowest level's view).
///
/// Stop-gradient on the inherited part: when `x` does not require a gradient (a loss on fixed points, like
/// DRL's positives and negatives), the parameter gradient of a row at level `a_t` (the smallest level ≥ its
/// σ) reaches only `r_t`; the levels above enter as constants. When `x` requires a gradient (scores for
/// sampling) everything is differentiated.
#[derive(Debug)]
pub struct LadderMlp {
    levels: Vec<f64>,
    nets: Vec<Mlp>,
    in_dim: i64,
}

/// Relative slack when comparing a row's σ with the levels (levels computed twice in floating point agree).
const LEVEL_SLACK: f64 = 1e-5;

impl LadderMlp {
    /// One MLP of `cfg`'s shape per level, registered under `path / "level{s}"` (top level first, so that it
    /// draws the same initial weights as an [`Mlp`] built first from the same seed); `levels` increasing and
    /// positive.
    pub fn new(path: &nn::Path, cfg: &MlpConfig, levels: &[f64]) -> Result<Self> {
        if levels.is_empty() || levels.iter().any(|a| !(*a > 0.0) || !a.is_finite()) {
            return Err(invalid("ladder.levels", format!("need ≥ 1 positive finite levels, got {levels:?}")));
        }
        if levels.windows(2).any(|w| !(w[0] < w[1])) {
            return Err(invalid("ladder.levels", format!("must be increasing, got {levels:?}")));
        }
        let l = levels.len();
        let mut nets: Vec<Option<Mlp>> = (0..l).map(|_| None).collect();
        for s in (0..l).rev() {
            let p = path / format!("level{s}");
            let net = Mlp::new(&p, cfg)?;
            if s + 1 < l {
                net.zero_output_layer();
            }
            nets[s] = Some(net);
        }
        let nets = nets.into_iter().map(|n| n.expect("built every level")).collect();
        Ok(LadderMlp { levels: levels.to_vec(), nets, in_dim: cfg.in_dim })
    }

    /// The ladder `a_0 < … < a_{L-1}`.
    pub fn levels(&self) -> &[f64] {
        &self.levels
    }
}

impl EnergyModel for LadderMlp {
    /// Every residual: `Σ_s r_s/a_s`.
    ///
    /// # Shapes
    /// `x: [B, D]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        self.f_given(x, None, None)
    }

    /// # Shapes
    /// `x: [B, D]`, `sigma: [B]` → `[B]`.
    fn f_given(&self, x: &Tensor, _labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
        let Some(s) = sigma else {
            // every residual on every row
            let mut nets = self.levels.iter().zip(&self.nets).map(|(a, net)| net.f(x) / *a);
            let first = nets.next().expect("a ladder has at least one level");
            return nets.fold(first, |acc, r| acc + r);
        };
        // Each residual runs only on the rows that count it (σ ≤ its level): the level of a row at a_t is
        // evaluated L − t times instead of L. Rows are added level by level, lowest first.
        let detach_inherited = !x.requires_grad();
        let mut out = Tensor::zeros([x.size()[0]], (x.kind(), x.device()));
        let mut below: Option<Tensor> = None; // rows whose own level is lower
        for (a, net) in self.levels.iter().zip(&self.nets) {
            let on = s.le(a * (1.0 + LEVEL_SLACK));
            let rows = on.nonzero().squeeze_dim(1);
            let own = match &below {
                Some(b) => on.logical_and(&b.logical_not()),
                None => on.shallow_clone(),
            };
            below = Some(on);
            if rows.size()[0] == 0 {
                continue;
            }
            let r = net.f(&x.index_select(0, &rows)) / *a;
            let r = if detach_inherited {
                let own = own.index_select(0, &rows).to_kind(r.kind());
                let inherited: Tensor = &r * (own.ones_like() - &own);
                &r * &own + inherited.detach()
            } else {
                r
            };
            out = out.index_add(0, &rows, &r);
        }
        out * s
    }

    fn event_shape(&self) -> Vec<i64> {
        vec![self.in_dim]
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.nets.iter().flat_map(|n| n.parameters()).collect()
    }

    fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
        Ok(Box::new(super::conditional::AtNoise::new(self, sigma)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn ladder() -> (nn::VarStore, LadderMlp) {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = MlpConfig { in_dim: 2, hidden: vec![8, 8], activation: Default::default() };
        let m = LadderMlp::new(&vs.root(), &cfg, &[0.1, 0.3, 1.0]).unwrap();
        (vs, m)
    }

    /// Every weight drawn from N(0, 1), so that every residual is non-zero.
    fn randomise(m: &LadderMlp) {
        tch::no_grad(|| {
            for p in m.parameters() {
                p.shallow_clone().copy_(&p.randn_like());
            }
        });
    }

    fn at(m: &LadderMlp, x: &Tensor, a: f64) -> Tensor {
        m.at_noise(a).unwrap().f(x)
    }

    #[test]
    fn every_level_starts_as_the_top_and_adds_its_residual() {
        tch::manual_seed(0);
        let (_vs, m) = ladder();
        let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let top = m.nets[2].f(&x) / 1.0;
        for a in [0.1, 0.3, 1.0] {
            assert!(f64::try_from((at(&m, &x, a) - &top).abs().max()).unwrap() < 1e-6, "level {a}");
        }
        // give the residuals values: f_{a_t} − f_{a_{t+1}} = r_t / a_t exactly
        randomise(&m);
        let d0 = at(&m, &x, 0.1) - at(&m, &x, 0.3) - m.nets[0].f(&x) / 0.1;
        let d1 = at(&m, &x, 0.3) - at(&m, &x, 1.0) - m.nets[1].f(&x) / 0.3;
        assert!(f64::try_from(d0.abs().max()).unwrap() < 1e-4);
        assert!(f64::try_from(d1.abs().max()).unwrap() < 1e-4);
        assert!(f64::try_from(m.nets[0].f(&x).abs().max()).unwrap() > 1e-3, "residual not zero any more");
        // no σ: the lowest level's view
        assert!(f64::try_from((m.f(&x) - at(&m, &x, 0.1)).abs().max()).unwrap() < 1e-4);
    }

    #[test]
    fn a_level_trains_only_its_own_residual_on_fixed_points_and_scores_see_all() {
        tch::manual_seed(1);
        let (_vs, m) = ladder();
        randomise(&m);
        let x = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
        let per_net = m.parameters().len() / 3;
        // rows at the middle level: parameter gradients only in r_1
        let sigma = Tensor::full([4], 0.3, (Kind::Float, Device::Cpu));
        let f = m.f_given(&x, None, Some(&sigma)).sum(Kind::Float);
        let params = m.parameters();
        let grads = Tensor::run_backward(&[f], &params.iter().collect::<Vec<_>>(), false, true);
        for (i, g) in grads.iter().enumerate() {
            let norm = if g.defined() { f64::try_from(g.norm()).unwrap() } else { 0.0 };
            if i / per_net == 1 {
                assert!(norm > 0.0, "r_1 parameter {i} has no gradient");
            } else {
                assert_eq!(norm, 0.0, "parameter {i} of another level moved");
            }
        }
        // the score at level a_0 is the sum of every residual's input gradient
        let xg = x.set_requires_grad(true);
        let f = at(&m, &xg, 0.1).sum(Kind::Float);
        let g = Tensor::run_backward(&[f], &[&xg], false, false).remove(0);
        let want: Tensor = [0, 1, 2]
            .iter()
            .zip([0.1, 0.3, 1.0])
            .map(|(s, a)| {
                let xs = x.detach().set_requires_grad(true);
                let r = (m.nets[*s].f(&xs) / a).sum(Kind::Float);
                Tensor::run_backward(&[r], &[&xs], false, false).remove(0)
            })
            .reduce(|a, b| a + b)
            .unwrap();
        assert!(f64::try_from((g - want).abs().max()).unwrap() < 1e-3);
    }

    #[test]
    fn a_batch_of_mixed_levels_gives_every_row_its_own_level() {
        // rows at the three levels, between levels (counted from the next level up) and above the top (0)
        tch::manual_seed(2);
        let (_vs, m) = ladder();
        randomise(&m);
        let sig = [0.3, 0.1, 2.0, 1.0, 0.2, 0.1, 0.05];
        let x = Tensor::randn([sig.len() as i64, 2], (Kind::Float, Device::Cpu));
        let sigma = Tensor::from_slice(&sig).to_kind(Kind::Float);
        let got = m.f_given(&x, None, Some(&sigma));
        for (i, s) in sig.iter().enumerate() {
            let xi = x.narrow(0, i as i64, 1);
            let want: f64 = [0.1, 0.3, 1.0]
                .iter()
                .enumerate()
                .filter(|(_, a)| *s <= **a)
                .map(|(k, a)| f64::try_from(m.nets[k].f(&xi) / *a).unwrap())
                .sum::<f64>()
                * s;
            let g = f64::try_from(got.get(i as i64)).unwrap();
            assert!((g - want).abs() < 1e-4 * (1.0 + want.abs()), "row {i} at σ = {s}: {g} vs {want}");
        }
    }

    #[test]
    fn bad_ladders_are_errors() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = MlpConfig { in_dim: 2, hidden: vec![4], activation: Default::default() };
        for bad in [vec![], vec![0.5, 0.2], vec![0.0, 1.0], vec![0.1, f64::NAN]] {
            let e = LadderMlp::new(&vs.root(), &cfg, &bad).unwrap_err().to_string();
            assert!(e.contains("ladder.levels"), "{e}");
        }
    }
}
