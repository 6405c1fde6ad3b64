//! Composition of energy models: AND, weighted AND, NOT and OR over any [`EnergyModel`]s, built in code or
//! from a small expression syntax such as `"red & circle & !left"`.
//!
//! With experts `fᵢ` (unnormalised log-densities, `pᵢ = exp(fᵢ) / Zᵢ`):
//!
//! | operator | syntax        | `f` of the composition        | density                                   |
//! |----------|---------------|-------------------------------|-------------------------------------------|
//! | AND      | `a & b`       | `f_a + f_b`                   | `∝ p_a · p_b` (product of experts)         |
//! | weight   | `2*a`         | `2 f_a`                       | `∝ p_a²` (a sharper expert; `0.5*a` flattens it) |
//! | NOT      | `a & !b`, `a & 0.5*!b` | `f_a - λ f_b`        | `∝ p_a / p_b^λ`                            |
//! | OR       | `a \| b`      | `log(exp f_a + exp f_b)`      | `∝ Z_a p_a + Z_b p_b`                      |
//!
//! Precedence: `!` and `w*` bind tightest, then `&`, then `|`; parentheses group. Names start with a letter
//! or `_` and may contain letters, digits and `_ - . : =` (so `shape=circle` is one name). Weights are
//! positive decimal numbers (`2`, `0.5`, `1e-1`); negate with `!`.
//!
//! **OR is a mixture weighted by the experts' normalising constants.** `logsumexp(f_a, f_b)` is the
//! log-density of `(Z_a p_a + Z_b p_b) / (Z_a + Z_b)`. It is the equal mixture `½ p_a + ½ p_b` only when the
//! experts are normalised (`Z = 1`, e.g. [`super::GaussianMixture`]) or share `Z`. Trained EBMs have
//! arbitrary `Z`; wrap each in [`Offset`] with `-log Zᵢ` (estimated, e.g., by
//! [`crate::eval::grid_log_z`] in 2-D) to get the equal mixture.
//!
//! **NOT is not normalisable in general.** Far from the data both `f_a` and `f_b` fall off, and
//! `f_a - λ f_b` may grow without bound (for Gaussians of equal width it is linear in `x` at `λ = 1`).
//! Sample it inside a box: [`BoxRestricted`] sets `f = -∞` outside (MALA then rejects every proposal that
//! leaves the box, which keeps the restricted target exact), or clamp Langevin with
//! [`crate::sampler::LangevinConfig::clamp`]. Inside the box `p_a / p_b^λ` puts its mass where `p_b` is
//! *smallest* relative to `p_a`, which is not the same as "spread evenly over the part of `a` outside `b`".
//!
//! [`Composition`] supersedes [`super::ProductOfExperts`] (a weighted AND): it adds OR and the expression
//! front end, and evaluates each expert once per call even when the expression names it several times.

use super::EnergyModel;
use crate::check::check_input;
use crate::error::{invalid, Result};
pub use crate::expr::{Expr, ExprError, Expression};
use std::collections::HashMap;
use std::fmt;
use tch::{Kind, Tensor};

// ---------------------------------------------------------------------------------------------------------
// The composed model
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Expert(usize),
    Scale(f64, Box<Node>),
    Sum(Vec<Node>),
    LogSumExp(Vec<Node>),
}

impl Node {
    fn from_expr(e: &Expr, index: &HashMap<&str, usize>) -> Node {
        match e {
            Expr::Name { name, .. } => Node::Expert(index[name.as_str()]),
            Expr::Not(e) => Node::Scale(-1.0, Box::new(Self::from_expr(e, index))),
            Expr::Weight(w, e) => Node::Scale(*w, Box::new(Self::from_expr(e, index))),
            Expr::And(es) => Node::Sum(es.iter().map(|e| Self::from_expr(e, index)).collect()),
            Expr::Or(es) => Node::LogSumExp(es.iter().map(|e| Self::from_expr(e, index)).collect()),
        }
    }

    /// Whether the node is a weighted sum of experts (no OR): then the same tree maps the experts' scores to the
    /// composition's score.
    fn is_linear(&self) -> bool {
        match self {
            Node::Expert(_) => true,
            Node::Scale(_, n) => n.is_linear(),
            Node::Sum(ns) => ns.iter().all(Node::is_linear),
            Node::LogSumExp(_) => false,
        }
    }

    fn eval(&self, leaves: &[Tensor]) -> Tensor {
        match self {
            Node::Expert(i) => leaves[*i].shallow_clone(),
            Node::Scale(w, n) => n.eval(leaves) * *w,
            Node::Sum(ns) => {
                let mut it = ns.iter();
                let mut acc = it.next().expect("validated non-empty").eval(leaves);
                for n in it {
                    // not `+=`: the first term may be a tensor autograd saved (e.g. a logsumexp output)
                    acc = &acc + n.eval(leaves);
                }
                acc
            }
            Node::LogSumExp(ns) => {
                let parts: Vec<Tensor> = ns.iter().map(|n| n.eval(leaves)).collect();
                Tensor::stack(&parts, 1).logsumexp([1], false)
            }
        }
    }
}

/// A composition of named experts: AND, weighted AND, NOT and OR (see the module documentation), itself an
/// [`EnergyModel`] that any sampler can run.
pub struct Composition<'a> {
    experts: Vec<(String, Box<dyn EnergyModel + 'a>)>,
    root: Node,
    event: Vec<i64>,
    label: String,
}

type Named<'a> = Vec<(String, Box<dyn EnergyModel + 'a>)>;

fn check_same_event(experts: &[(String, Box<dyn EnergyModel + '_>)]) -> Result<Vec<i64>> {
    let Some((n0, first)) = experts.first() else {
        return Err(invalid("composition.experts", "need at least one expert"));
    };
    let event = first.event_shape();
    for (n, e) in experts {
        if e.event_shape() != event {
            return Err(invalid(
                "composition.experts",
                format!("expert '{n}' has event shape {:?}, expert '{n0}' has {event:?}", e.event_shape()),
            ));
        }
    }
    Ok(event)
}

fn check_weight(w: f64, what: &str) -> Result<()> {
    if !w.is_finite() {
        return Err(invalid("composition.weight", format!("weight of {what} must be finite, got {w}")));
    }
    Ok(())
}

impl<'a> Composition<'a> {
    fn build(experts: Named<'a>, root: Node, label: String) -> Result<Self> {
        let event = check_same_event(&experts)?;
        Ok(Composition { experts, root, event, label })
    }

    fn unnamed(experts: Vec<Box<dyn EnergyModel + 'a>>) -> Named<'a> {
        experts.into_iter().enumerate().map(|(i, e)| (format!("e{i}"), e)).collect()
    }

    /// AND: `f = Σᵢ fᵢ`, the product of experts `∝ Πᵢ pᵢ`.
    pub fn product(experts: Vec<Box<dyn EnergyModel + 'a>>) -> Result<Self> {
        let n = experts.len();
        let label = (0..n).map(|i| format!("e{i}")).collect::<Vec<_>>().join(" & ");
        Self::build(Self::unnamed(experts), Node::Sum((0..n).map(Node::Expert).collect()), label)
    }

    /// Weighted AND: `f = Σᵢ wᵢ fᵢ` (`∝ Πᵢ pᵢ^wᵢ`); a negative weight is a NOT. Weights must be finite.
    pub fn weighted_product(experts: Vec<(f64, Box<dyn EnergyModel + 'a>)>) -> Result<Self> {
        let mut nodes = Vec::with_capacity(experts.len());
        let mut named = Vec::with_capacity(experts.len());
        let mut parts = Vec::new();
        for (i, (w, e)) in experts.into_iter().enumerate() {
            check_weight(w, &format!("expert {i}"))?;
            nodes.push(Node::Scale(w, Box::new(Node::Expert(i))));
            named.push((format!("e{i}"), e));
            parts.push(format!("{w}*e{i}"));
        }
        Self::build(named, Node::Sum(nodes), parts.join(" + "))
    }

    /// NOT: `f = f_a - λ f_b` (`∝ p_a / p_b^λ`). Not normalisable in general: sample it in a box (see the
    /// module documentation). `λ` must be finite and ≥ 0.
    pub fn negation(a: Box<dyn EnergyModel + 'a>, b: Box<dyn EnergyModel + 'a>, lambda: f64) -> Result<Self> {
        if !(lambda >= 0.0) || !lambda.is_finite() {
            return Err(invalid("composition.lambda", format!("must be finite and ≥ 0, got {lambda}")));
        }
        let root = Node::Sum(vec![Node::Expert(0), Node::Scale(-lambda, Box::new(Node::Expert(1)))]);
        Self::build(vec![("a".into(), a), ("b".into(), b)], root, format!("a & {lambda}*!b"))
    }

    /// OR: `f = log Σᵢ exp fᵢ`, the mixture `∝ Σᵢ Zᵢ pᵢ` (equal weights only for normalised experts or
    /// experts sharing `Z`; see the module documentation).
    pub fn mixture(experts: Vec<Box<dyn EnergyModel + 'a>>) -> Result<Self> {
        let n = experts.len();
        let label = (0..n).map(|i| format!("e{i}")).collect::<Vec<_>>().join(" | ");
        Self::build(Self::unnamed(experts), Node::LogSumExp((0..n).map(Node::Expert).collect()), label)
    }

    /// The composition an expression describes, over named experts. Names the expression does not use are
    /// dropped; a name it uses that is not among `experts` is an error pointing at it and listing the
    /// known names. Each used expert is evaluated once per call of `f`.
    pub fn from_expression(expr: &Expression, experts: Vec<(String, Box<dyn EnergyModel + 'a>)>) -> Result<Self> {
        let known: Vec<&str> = experts.iter().map(|(n, _)| n.as_str()).collect();
        expr.check_names(&known)?;
        let used = expr.names();
        let mut kept: Named<'a> = Vec::with_capacity(used.len());
        let mut pool: Vec<Option<(String, Box<dyn EnergyModel + 'a>)>> = experts.into_iter().map(Some).collect();
        for u in &used {
            let slot = pool.iter_mut().find(|s| s.as_ref().is_some_and(|(n, _)| n == u)).expect("checked above");
            kept.push(slot.take().expect("distinct names"));
        }
        let index: HashMap<&str, usize> = used.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let root = Node::from_expr(expr.root(), &index);
        Self::build(kept, root, expr.to_string())
    }

    /// Parses `source` and builds [`Composition::from_expression`].
    pub fn parse(source: &str, experts: Vec<(String, Box<dyn EnergyModel + 'a>)>) -> Result<Self> {
        Self::from_expression(&Expression::parse(source)?, experts)
    }

    /// The names of the experts in use, in order of first appearance.
    pub fn expert_names(&self) -> Vec<&str> {
        self.experts.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// A readable form, e.g. `red & circle & !left` (experts built without names are `e0, e1, …`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Each expert's `f` at `x`, by name (the terms the composition combines).
    ///
    /// # Shapes
    /// `x: [B, *event]` → one `[B]` per expert.
    pub fn expert_values(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        check_input(&self.event, x, "composition input x")?;
        Ok(self.experts.iter().map(|(n, e)| (n.clone(), e.f(x))).collect())
    }
}

impl fmt::Debug for Composition<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Composition").field("label", &self.label).field("event", &self.event).finish()
    }
}

impl EnergyModel for Composition<'_> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let leaves: Vec<Tensor> = self.experts.iter().map(|(_, e)| e.f(x)).collect();
        self.root.eval(&leaves)
    }

    /// For AND, weights and NOT (a weighted sum of the experts) the same sum of the experts' own
    /// [`EnergyModel::f_and_score`]; with an OR in it, autograd.
    fn f_and_score(&self, x: &Tensor) -> (Tensor, Tensor) {
        if !self.root.is_linear() {
            return crate::autograd::autograd_f_and_score(self, x);
        }
        let (fs, gs): (Vec<Tensor>, Vec<Tensor>) = self.experts.iter().map(|(_, e)| e.f_and_score(x)).unzip();
        (self.root.eval(&fs), self.root.eval(&gs))
    }

    /// As [`Composition::f_and_score`], from the experts' [`EnergyModel::score`] when it is a weighted sum.
    fn score(&self, x: &Tensor) -> Tensor {
        if !self.root.is_linear() {
            return self.f_and_score(x).1;
        }
        let gs: Vec<Tensor> = self.experts.iter().map(|(_, e)| e.score(x)).collect();
        self.root.eval(&gs)
    }

    fn event_shape(&self) -> Vec<i64> {
        self.event.clone()
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.experts.iter().flat_map(|(_, e)| e.parameters()).collect()
    }

    /// The same expression over every expert's `f_σ` (see [`EnergyModel::at_noise`]): what annealed
    /// sampling of a composition of noise-conditional experts runs at each level.
    fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
        let experts = self
            .experts
            .iter()
            .map(|(n, e)| Ok((n.clone(), e.at_noise(sigma)?)))
            .collect::<Result<Vec<(String, Box<dyn EnergyModel + '_>)>>>()?;
        Ok(Box::new(Composition {
            experts,
            root: self.root.clone(),
            event: self.event.clone(),
            label: self.label.clone(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Adapters and a sampler start for low-dimensional compositions
// ---------------------------------------------------------------------------------------------------------

/// `f(x) + c`: the same density, a different `Z` (`Z·e^c`). With `c = -log Z` the expert is normalised,
/// which makes OR an equal mixture.
#[derive(Debug)]
pub struct Offset<M> {
    inner: M,
    offset: f64,
}

impl<M: EnergyModel> Offset<M> {
    /// Wraps `inner`; `offset` must be finite.
    pub fn new(inner: M, offset: f64) -> Result<Self> {
        if !offset.is_finite() {
            return Err(invalid("offset", format!("must be finite, got {offset}")));
        }
        Ok(Offset { inner, offset })
    }

    /// The added constant.
    pub fn offset(&self) -> f64 {
        self.offset
    }
}

impl<M: EnergyModel> EnergyModel for Offset<M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        self.inner.f(x) + self.offset
    }
    /// The inner model's `f + c` and its score unchanged.
    fn f_and_score(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (f, g) = self.inner.f_and_score(x);
        (f + self.offset, g)
    }
    fn score(&self, x: &Tensor) -> Tensor {
        self.inner.score(x)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.inner.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.inner.parameters()
    }
}

/// The model restricted to the box `[low, high]` in every coordinate: `f` inside (edges included), `-∞`
/// outside. The gradient outside is 0 (not NaN), so MALA simply rejects proposals that leave the box and
/// samples the restricted density exactly; unadjusted Langevin should clamp to the same box. For sampling
/// only: a training loss on it would be infinite.
#[derive(Debug)]
pub struct BoxRestricted<M> {
    inner: M,
    low: f64,
    high: f64,
}

impl<M: EnergyModel> BoxRestricted<M> {
    /// Wraps `inner`; needs finite `low < high`.
    pub fn new(inner: M, low: f64, high: f64) -> Result<Self> {
        if !(low < high) || !low.is_finite() || !high.is_finite() {
            return Err(invalid("box", format!("needs finite low < high, got [{low}, {high}]")));
        }
        Ok(BoxRestricted { inner, low, high })
    }

    /// `[low, high]`.
    pub fn bounds(&self) -> [f64; 2] {
        [self.low, self.high]
    }
}

impl<M: EnergyModel> EnergyModel for BoxRestricted<M> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let f = self.inner.f(x);
        let b = x.size()[0];
        let flat = x.reshape([b, -1]);
        let inside = flat.ge(self.low).logical_and(&flat.le(self.high)).all_dim(1, false);
        let minus_inf = Tensor::full([b], f64::NEG_INFINITY, (f.kind(), f.device()));
        f.where_self(&inside, &minus_inf)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.inner.event_shape()
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.inner.parameters()
    }
}

/// Sampling-importance-resampling start for low-dimensional targets: draws `n_proposals` points uniform in
/// the box `[low, high]^D`, weights each by `exp f(x)` and resamples `n` of them with replacement (libtorch's
/// RNG). The result is approximately distributed as the model restricted to the box, with the right share
/// per mode, which chains started from noise do not have (each chain stays in the basin it falls into).
/// Run MALA or Langevin from it to spread the duplicates. Practical only in a few dimensions: the effective
/// sample size is about `n_proposals / (box volume · ∫p²)`.
///
/// # Shapes
/// → `[n, *event]` (f32, on `device`).
pub fn resample_in_box(
    m: &dyn EnergyModel,
    low: f64,
    high: f64,
    n_proposals: usize,
    n: usize,
    device: tch::Device,
) -> Result<Tensor> {
    if !(low < high) || !low.is_finite() || !high.is_finite() {
        return Err(invalid("resample_in_box", format!("needs finite low < high, got [{low}, {high}]")));
    }
    if n == 0 || n_proposals == 0 {
        return Err(invalid("resample_in_box", "n and n_proposals must be ≥ 1"));
    }
    let event = m.event_shape();
    let mut shape = vec![n_proposals as i64];
    shape.extend(&event);
    let x = Tensor::rand(shape.as_slice(), (Kind::Float, device)) * (high - low) + low;
    let chunk = 65_536i64;
    let f = tch::no_grad(|| {
        let parts: Vec<Tensor> = (0..n_proposals as i64)
            .step_by(chunk as usize)
            .map(|s| m.f(&x.narrow(0, s, chunk.min(n_proposals as i64 - s))))
            .collect();
        Tensor::cat(&parts, 0).to_kind(Kind::Double)
    });
    let fmax = f64::try_from(f.max())?;
    if !fmax.is_finite() {
        return Err(invalid("resample_in_box", format!("the model's largest f in the box is {fmax}")));
    }
    let w = (f - fmax).exp().nan_to_num(0.0, 0.0, 0.0);
    let idx = w.multinomial(n as i64, true);
    Ok(x.index_select(0, &idx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gaussian;
    use tch::Device;

    fn g(mean: f64) -> Gaussian {
        Gaussian::isotropic(&[mean], 1.0, Device::Cpu).unwrap()
    }

    fn vals(t: Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap()
    }

    fn xs() -> (Tensor, [f64; 3]) {
        let p = [-0.7, 0.0, 1.3];
        (Tensor::from_slice(&p).view([3, 1]), p)
    }

    #[test]
    fn unknown_names_point_at_the_name_and_list_the_known_ones() {
        let e = Expression::parse_known("red & purple", &["red", "green", "blue"]).unwrap_err();
        assert_eq!((e.pos, e.len), (6, 6));
        assert_eq!(e.known, vec!["blue", "green", "red"]);
        let s = e.to_string();
        assert!(s.contains("unknown name 'purple' at column 7"), "{s}");
        assert!(s.contains("known names: blue, green, red"), "{s}");
        assert!(s.ends_with("red & purple\n          ^^^^^^"), "{s}");
        // through the composition builder, as an EbmError
        let a = g(0.0);
        let err = Composition::parse("a & !b", vec![("a".into(), Box::new(&a) as Box<dyn EnergyModel>)]).unwrap_err();
        let s = err.to_string();
        assert!(s.contains("unknown name 'b' at column 6") && s.contains("known names: a"), "{s}");
    }

    #[test]
    fn operators_have_their_closed_forms() {
        // f_a = -(x-1)²/2, f_b = -(x+1)²/2 (unit Gaussians, unnormalised)
        let (a, b) = (g(1.0), g(-1.0));
        let (x, p) = xs();
        let fa = |x: f64| -(x - 1.0).powi(2) / 2.0;
        let fb = |x: f64| -(x + 1.0).powi(2) / 2.0;
        let check = |c: &Composition, want: &dyn Fn(f64) -> f64| {
            for (got, xv) in vals(c.f(&x)).iter().zip(p) {
                assert!((got - want(xv)).abs() < 1e-12, "{}: at {xv}: {got} vs {}", c.label(), want(xv));
            }
        };
        check(&Composition::product(vec![Box::new(&a), Box::new(&b)]).unwrap(), &|x| fa(x) + fb(x));
        check(&Composition::weighted_product(vec![(2.0, Box::new(&a)), (0.5, Box::new(&b))]).unwrap(), &|x| {
            2.0 * fa(x) + 0.5 * fb(x)
        });
        check(&Composition::negation(Box::new(&a), Box::new(&b), 0.3).unwrap(), &|x| fa(x) - 0.3 * fb(x));
        check(&Composition::mixture(vec![Box::new(&a), Box::new(&b)]).unwrap(), &|x| (fa(x).exp() + fb(x).exp()).ln());
        // the same through expressions, with a repeated name and nesting
        let named = || -> Vec<(String, Box<dyn EnergyModel>)> {
            vec![("a".into(), Box::new(&a)), ("b".into(), Box::new(&b)), ("unused".into(), Box::new(&a))]
        };
        let c = Composition::parse("2*a | 0.5*!b & a", named()).unwrap();
        assert_eq!(c.expert_names(), vec!["a", "b"]);
        assert_eq!(c.label(), "2*a | 0.5*!b & a");
        check(&c, &|x| ((2.0 * fa(x)).exp() + (-0.5 * fb(x) + fa(x)).exp()).ln());
        // f_a - f_b = 2x: the NOT of two unit Gaussians is linear, not normalisable on R
        check(&Composition::parse("a & !b", named()).unwrap(), &|x| 2.0 * x);
        let ev = Composition::parse("a & !b", named()).unwrap().expert_values(&x).unwrap();
        assert_eq!(ev.len(), 2);
        assert!((vals(ev[1].1.shallow_clone())[2] - fb(1.3)).abs() < 1e-12);
    }

    #[test]
    fn or_is_an_equal_mixture_only_for_normalised_experts_and_offset_fixes_it() {
        // Z of an unnormalised unit Gaussian in 1-D is √(2π). With a offset by +ln 3, OR weighs a three times b.
        let (a, b) = (g(1.0), g(-1.0));
        let (x, p) = xs();
        let a3 = Offset::new(&a, 3f64.ln()).unwrap();
        let c = Composition::mixture(vec![Box::new(&a3), Box::new(&b)]).unwrap();
        let z = (2.0 * std::f64::consts::PI).sqrt();
        let n = |x: f64, m: f64| (-(x - m).powi(2) / 2.0).exp() / z;
        for (got, xv) in vals(c.f(&x)).iter().zip(p) {
            // f = log(3 Z p_a + Z p_b) = log Z + log(3 p_a + p_b)
            let want = z.ln() + (3.0 * n(xv, 1.0) + n(xv, -1.0)).ln();
            assert!((got - want).abs() < 1e-12);
        }
        assert!(Offset::new(&a, f64::NAN).is_err());
    }

    #[test]
    fn box_restriction_is_minus_infinity_outside_with_zero_gradient() {
        let a = g(0.0);
        let r = BoxRestricted::new(&a, -1.0, 1.0).unwrap();
        let x = Tensor::from_slice(&[-2.0f64, -1.0, 0.5, 1.5]).view([4, 1]);
        let f = vals(r.f(&x));
        assert_eq!(f[0], f64::NEG_INFINITY);
        assert_eq!(f[3], f64::NEG_INFINITY);
        assert!((f[1] + 0.5).abs() < 1e-12 && (f[2] + 0.125).abs() < 1e-12);
        let s = crate::autograd::score(&r, &x, false).unwrap();
        assert_eq!(vals(s.grad.view([4])), vec![0.0, 1.0, -0.5, 0.0]);
        assert!(BoxRestricted::new(&a, 1.0, 1.0).is_err());
    }

    #[test]
    fn mismatched_event_shapes_and_bad_weights_are_errors() {
        let a = g(0.0);
        let b = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        let e = Composition::product(vec![Box::new(&a), Box::new(&b)]).unwrap_err().to_string();
        assert!(e.contains("event shape") && e.contains("'e1'"), "{e}");
        assert!(Composition::mixture(vec![]).is_err());
        assert!(Composition::weighted_product(vec![(f64::INFINITY, Box::new(&a))]).is_err());
        assert!(Composition::negation(Box::new(&a), Box::new(&a), -1.0).is_err());
        let c = Composition::product(vec![Box::new(&a)]).unwrap();
        assert!(c.expert_values(&Tensor::zeros([2, 2], (Kind::Double, Device::Cpu))).is_err());
    }

    #[test]
    fn resampling_in_a_box_matches_the_mass_of_each_half() {
        // N(0.5, 1) restricted to [-2, 2]: P(x > 0 | box) = (Φ(1.5) - Φ(-0.5)) / (Φ(1.5) - Φ(-2.5)) = 0.6739
        let a = g(0.5);
        let x = resample_in_box(&a, -2.0, 2.0, 200_000, 20_000, Device::Cpu).unwrap();
        assert_eq!(x.size(), vec![20_000, 1]);
        let share = f64::try_from(x.gt(0.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap();
        // sd ≈ 0.0035 (resampling) + proposal noise, far below the tolerance
        assert!((share - 0.6739).abs() < 0.02, "share {share}");
        assert!(bool::try_from(x.abs().le(2.0).all()).unwrap());
        assert!(resample_in_box(&a, 1.0, -1.0, 10, 10, Device::Cpu).is_err());
    }

    #[test]
    fn fast_scores_of_sums_offsets_and_mixtures_match_autograd() {
        use crate::energy::{Mlp, MlpConfig};
        tch::manual_seed(6);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let cfg = MlpConfig { in_dim: 2, hidden: vec![16, 16], ..Default::default() };
        let (a, b) = (Mlp::new(&(vs.root() / "a"), &cfg).unwrap(), Mlp::new(&(vs.root() / "b"), &cfg).unwrap());
        let x = Tensor::randn([21, 2], (tch::Kind::Float, Device::Cpu));
        let rel = |got: &Tensor, want: &Tensor| f64::try_from((got - want).abs().max() / want.abs().max()).unwrap();
        let check = |m: &dyn EnergyModel, what: &str| {
            let want = crate::autograd::score(m, &x, false).unwrap();
            let (f, g) = m.f_and_score(&x);
            assert!(rel(&f, &want.f) < 1e-5 && rel(&g, &want.grad) < 1e-5, "{what}");
            assert!(rel(&m.score(&x), &want.grad) < 1e-5, "{what}");
        };
        for source in ["a & 0.5*!b", "a | b", "2*a & (a | !b)"] {
            let experts: Vec<(String, Box<dyn EnergyModel>)> =
                vec![("a".into(), Box::new(&a)), ("b".into(), Box::new(&b))];
            check(&Composition::parse(source, experts).unwrap(), source);
        }
        check(&Offset::new(&a, 1.5).unwrap(), "offset");
    }
}
