//! Derivatives of `f` with respect to the input, by tch autograd: the score `∇ₓf`, the exact Hessian
//! trace `tr ∇²ₓf` (D backward passes), the Hutchinson estimator of that trace (one backward pass per
//! probe), and the log-likelihood ratio `f(x1) - f(x2)` (which needs no `Z`).

use crate::check::check_input;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

/// How the samplers (Langevin, MALA, HMC, parallel tempering, annealed Langevin, and so the contrastive
/// negatives) take `f` and `∇ₓf`: through the model's [`EnergyModel::f_and_score`] (a closed form where the model
/// has one, e.g. [`crate::energy::Mlp`]; autograd otherwise), or always by autograd. Both give the same values up
/// to float rounding; `Autograd` is there to check that, and to time the difference. Score matching always uses
/// autograd (it differentiates the score again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScorePath {
    /// The model's [`EnergyModel::f_and_score`] (the default).
    #[default]
    Fast,
    /// Autograd for every model ([`score`]).
    Autograd,
}

impl ScorePath {
    /// The name used in configs: `"fast"` or `"autograd"`.
    pub fn name(self) -> &'static str {
        match self {
            ScorePath::Fast => "fast",
            ScorePath::Autograd => "autograd",
        }
    }
}

static FORCE_AUTOGRAD: AtomicBool = AtomicBool::new(false);

/// Sets the score path of every sampler in this process (see [`ScorePath`]); returns the previous one.
pub fn set_score_path(path: ScorePath) -> ScorePath {
    let was = FORCE_AUTOGRAD.swap(path == ScorePath::Autograd, Ordering::Relaxed);
    if was {
        ScorePath::Autograd
    } else {
        ScorePath::Fast
    }
}

/// The score path the samplers use now (see [`ScorePath`]).
pub fn score_path() -> ScorePath {
    if FORCE_AUTOGRAD.load(Ordering::Relaxed) {
        ScorePath::Autograd
    } else {
        ScorePath::Fast
    }
}

/// `f(x)` and `∇ₓf(x)` by autograd, detached: the default of [`EnergyModel::f_and_score`].
///
/// # Shapes
/// `x: [B, *event]` → `f: [B]`, `grad: [B, *event]`.
pub fn autograd_f_and_score<M: EnergyModel + ?Sized>(m: &M, x: &Tensor) -> (Tensor, Tensor) {
    let s = score_unchecked(m, x, false);
    (s.f, s.grad)
}

/// `f(x)` and `∇ₓf(x)` for a sampler step, detached, by the process's [`ScorePath`]; no input checks (the
/// samplers check their chains at the start and at the end). The gradient is a tensor of its own (never a view
/// of a parameter), but it may be non-contiguous or expanded: update it out of place.
///
/// # Shapes
/// `x: [B, *event]` → `f: [B]`, `grad: [B, *event]`.
pub(crate) fn sampler_score<M: EnergyModel + ?Sized>(m: &M, x: &Tensor) -> (Tensor, Tensor) {
    keep_freed_memory_in_heap();
    match score_path() {
        ScorePath::Fast => m.f_and_score(x),
        ScorePath::Autograd => autograd_f_and_score(m, x),
    }
}

/// [`sampler_score`] without `f` (what an unrecorded Langevin step needs): the model's [`EnergyModel::score`] on
/// the fast path.
///
/// # Shapes
/// `x: [B, *event]` → `[B, *event]`.
pub(crate) fn sampler_grad<M: EnergyModel + ?Sized>(m: &M, x: &Tensor) -> Tensor {
    keep_freed_memory_in_heap();
    match score_path() {
        ScorePath::Fast => m.score(x),
        ScorePath::Autograd => autograd_f_and_score(m, x).1,
    }
}

/// `f` and its score at a point, from one forward and one backward pass.
#[derive(Debug)]
pub struct Score {
    /// The input as a leaf that requires grad, `[B, *event]` (use it for further derivatives).
    pub x: Tensor,
    /// `f(x)`, `[B]`.
    pub f: Tensor,
    /// `∇ₓf(x)`, `[B, *event]`. Carries a graph when `create_graph` was set.
    pub grad: Tensor,
}

/// Computes `f(x)` and `∇ₓf(x)`.
///
/// With `create_graph = true` the gradient keeps its graph, so it can be differentiated again (for
/// the Hessian trace) or through the model's parameters (for score matching). Otherwise the result is
/// detached from the graph.
///
/// # Shapes
/// `x: [B, *event]` → `f: [B]`, `grad: [B, *event]`.
pub fn score<M: EnergyModel + ?Sized>(m: &M, x: &Tensor, create_graph: bool) -> Result<Score> {
    check_input(&m.event_shape(), x, "score input x")?;
    Ok(score_unchecked(m, x, create_graph))
}

/// Keeps glibc's malloc from handing activation-sized blocks back to the kernel between steps.
///
/// glibc serves blocks of at least its mmap threshold (128 KiB at start, e.g. one `[256, 128]` f32
/// activation) with `mmap`, and trims the heap top once more than twice that threshold is free. A
/// sampler or score-matching loop allocates and frees the same few activation buffers on every step, so
/// every step gave the memory back and faulted it in again (≈140 page faults and their zeroing per
/// W1 iteration). Freeing one block that was served by `mmap` raises both thresholds for the rest of
/// the process (glibc's dynamic threshold, capped at 32 MiB): after this freed 31 MiB block the mmap threshold
/// is 31 MiB and the trim threshold 62 MiB, so the buffers are reused from the heap. (With a 16 MiB block the
/// conv energy's Langevin steps of W3, which free more than 32 MiB at the heap top, still had it trimmed in
/// some builds: 16× the page faults and half the speed.) A Python process running PyTorch is in that state
/// already (its imports free large blocks). Results are unchanged; elsewhere than glibc this is one untouched
/// allocation, freed at once.
pub(crate) fn keep_freed_memory_in_heap() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // the block's address escapes through `black_box`, so the allocation cannot be optimised away (passing
        // the `Vec` by value did not keep it in every build: W3 then ran at half speed with 16× the page faults)
        let mut block: Vec<u8> = Vec::with_capacity(31 << 20);
        std::hint::black_box(&mut block);
        drop(block);
    });
}

/// [`score`] without input checks, for hot loops whose input was checked once.
pub(crate) fn score_unchecked<M: EnergyModel + ?Sized>(m: &M, x: &Tensor, create_graph: bool) -> Score {
    keep_freed_memory_in_heap();
    let x = if x.requires_grad() && x.is_leaf() { x.shallow_clone() } else { x.detach().set_requires_grad(true) };
    let f = m.f(&x);
    let grad = Tensor::run_backward(&[f.sum(f.kind())], &[&x], create_graph, create_graph).remove(0);
    let f = if create_graph { f } else { f.detach() };
    Score { x, f, grad }
}

/// The squared score norm and Hessian trace at a point.
#[derive(Debug)]
pub struct SecondOrder {
    /// `f(x)`, `[B]`.
    pub f: Tensor,
    /// `∇ₓf(x)`, `[B, *event]`.
    pub grad: Tensor,
    /// `tr ∇²ₓf(x)` (exact) or its estimate (Hutchinson), `[B]`.
    pub trace: Tensor,
    /// For Hutchinson: the sample variance over probes of the single-probe estimates `vᵀ∇²f v`, `[B]`
    /// (the estimate's own variance is this divided by the probe count). `None` for the exact trace.
    pub probe_variance: Option<Tensor>,
}

/// The exact Hessian trace `tr ∇²ₓf(x) = Σᵢ ∂²f/∂xᵢ²`, with one backward pass per input dimension.
///
/// With `create_graph = true` every output keeps its graph (for training by score matching).
///
/// # Shapes
/// `x: [B, *event]` → `trace: [B]` (event dims are flattened to D).
pub fn hessian_trace_exact<M: EnergyModel + ?Sized>(m: &M, x: &Tensor, create_graph: bool) -> Result<SecondOrder> {
    check_input(&m.event_shape(), x, "hessian_trace_exact input x")?;
    let s = score_unchecked(m, x, true);
    let b = x.size()[0];
    let g = s.grad.reshape([b, -1]);
    let d = g.size()[1];
    let mut trace = Tensor::zeros([b], (s.f.kind(), x.device()));
    for i in 0..d {
        let gi = g.select(1, i).sum(g.kind());
        let h = Tensor::run_backward(&[gi], &[&s.x], true, create_graph).remove(0);
        trace += h.reshape([b, -1]).select(1, i);
    }
    Ok(finish(s, trace, None, create_graph))
}

/// Distribution of the Hutchinson probes `v` (both have `E[v vᵀ] = I`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// ±1 with equal probability (lowest variance of the two).
    #[default]
    Rademacher,
    /// Standard normal.
    Gaussian,
}

impl Probe {
    /// Draws probes shaped like `like`, from libtorch's RNG.
    pub fn draw(self, like: &Tensor) -> Tensor {
        match self {
            Probe::Gaussian => like.randn_like(),
            Probe::Rademacher => like.bernoulli_p(0.5) * 2.0 - 1.0,
        }
    }
}

/// The Hutchinson estimate of `tr ∇²ₓf(x)`: the mean of `vᵀ(∇²f)v` over `n_probes` probes, each one
/// Hessian-vector product (one backward pass). Also returns the sample variance of the single-probe
/// estimates (needs `n_probes ≥ 2`, else it is `None`).
///
/// # Shapes
/// `x: [B, *event]` → `trace: [B]`, `probe_variance: [B]`.
pub fn hessian_trace_hutchinson<M: EnergyModel + ?Sized>(
    m: &M,
    x: &Tensor,
    n_probes: usize,
    probe: Probe,
    create_graph: bool,
) -> Result<SecondOrder> {
    if n_probes == 0 {
        return Err(invalid("n_probes", "must be ≥ 1"));
    }
    check_input(&m.event_shape(), x, "hessian_trace_hutchinson input x")?;
    let s = score_unchecked(m, x, true);
    let b = x.size()[0];
    let mut ests = Vec::with_capacity(n_probes);
    for _ in 0..n_probes {
        let v = probe.draw(&s.grad.detach());
        let gv = (&s.grad * &v).sum(s.grad.kind());
        let hv = Tensor::run_backward(&[gv], &[&s.x], true, create_graph).remove(0);
        ests.push((hv * &v).reshape([b, -1]).sum_dim_intlist(1, false, s.grad.kind()));
    }
    let stacked = Tensor::stack(&ests, 0);
    let trace = stacked.mean_dim(0, false, stacked.kind());
    let var = (n_probes >= 2).then(|| stacked.detach().var_dim(0, true, false));
    Ok(finish(s, trace, var, create_graph))
}

fn finish(s: Score, trace: Tensor, probe_variance: Option<Tensor>, create_graph: bool) -> SecondOrder {
    if create_graph {
        SecondOrder { f: s.f, grad: s.grad, trace, probe_variance }
    } else {
        SecondOrder { f: s.f.detach(), grad: s.grad.detach(), trace: trace.detach(), probe_variance }
    }
}

/// The log-likelihood ratio `log p(x1) - log p(x2) = f(x1) - f(x2)`; `Z` cancels. (The ratio itself is
/// its `exp`.)
///
/// # Shapes
/// `x1, x2: [B, *event]` → `[B]`.
pub fn log_ratio<M: EnergyModel + ?Sized>(m: &M, x1: &Tensor, x2: &Tensor) -> Result<Tensor> {
    let f1 = m.try_f(x1)?;
    let f2 = m.try_f(x2)?;
    if x1.size()[0] != x2.size()[0] {
        return Err(invalid("log_ratio", format!("batch sizes differ: {} and {}", x1.size()[0], x2.size()[0])));
    }
    Ok(tch::no_grad(|| f1 - f2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::{Gaussian, Mlp, MlpConfig};
    use tch::{nn, Device, Kind};

    fn gaussian() -> Gaussian {
        // Non-diagonal Σ in 3-D.
        Gaussian::new(&[0.5, -1.0, 2.0], &[2.0, 0.6, 0.2, 0.6, 1.0, -0.3, 0.2, -0.3, 0.5], Device::Cpu).unwrap()
    }

    fn points(n: i64) -> Tensor {
        tch::manual_seed(1);
        Tensor::randn([n, 3], (Kind::Double, Device::Cpu))
    }

    #[test]
    fn score_of_gaussian_is_minus_precision_times_offset() {
        let g = gaussian();
        let x = points(16);
        let s = score(&g, &x, false).unwrap();
        let err = f64::try_from((&s.grad - g.exact_score(&x)).abs().max()).unwrap();
        assert!(err < 1e-12, "max error {err}");
        assert!(!s.grad.requires_grad());
    }

    #[test]
    fn exact_trace_of_gaussian_is_minus_trace_of_precision() {
        let g = gaussian();
        let so = hessian_trace_exact(&g, &points(8), false).unwrap();
        let want = g.exact_laplacian();
        let err = f64::try_from((so.trace - want).abs().max()).unwrap();
        assert!(err < 1e-10, "max error {err}");
    }

    #[test]
    fn hutchinson_mean_is_within_three_standard_errors_of_exact() {
        let g = gaussian();
        let x = points(4);
        let want = g.exact_laplacian();
        for probe in [Probe::Rademacher, Probe::Gaussian] {
            let m = 4000;
            let so = hessian_trace_hutchinson(&g, &x, m, probe, false).unwrap();
            let var = so.probe_variance.unwrap();
            for i in 0..4 {
                let est = f64::try_from(so.trace.get(i)).unwrap();
                let se = (f64::try_from(var.get(i)).unwrap() / m as f64).sqrt();
                assert!(se > 0.0);
                assert!((est - want).abs() < 3.0 * se, "{probe:?}: {est} vs {want} (se {se})");
            }
        }
    }

    /// An MLP's Hessian diagonal from central finite differences of its autograd score.
    fn fd_trace(m: &Mlp, x: &Tensor, h: f64) -> Tensor {
        let d = x.size()[1];
        let mut tr = Tensor::zeros([x.size()[0]], (Kind::Double, Device::Cpu));
        for i in 0..d {
            let e = Tensor::zeros([d], (Kind::Double, Device::Cpu)).index_fill(0, &Tensor::from_slice(&[i]), h);
            let gp = score(m, &(x + &e), false).unwrap().grad.select(1, i);
            let gm = score(m, &(x - &e), false).unwrap().grad.select(1, i);
            tr += (gp - gm) / (2.0 * h);
        }
        tr
    }

    #[test]
    fn mlp_score_and_traces_match_finite_differences() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut vs = vs;
        let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 3, hidden: vec![16, 16], ..Default::default() }).unwrap();
        vs.double();
        let x = points(5);
        // score vs finite differences of f
        let s = score(&m, &x, false).unwrap();
        let h = 1e-5;
        for i in 0..3 {
            let e = Tensor::zeros([3], (Kind::Double, Device::Cpu)).index_fill(0, &Tensor::from_slice(&[i]), h);
            let fd = (m.f(&(&x + &e)) - m.f(&(&x - &e))) / (2.0 * h);
            let err = f64::try_from((fd - s.grad.select(1, i)).abs().max()).unwrap();
            assert!(err < 1e-7, "score dim {i}: {err}");
        }
        let exact = hessian_trace_exact(&m, &x, false).unwrap().trace;
        let fd = fd_trace(&m, &x, 1e-5);
        let err = f64::try_from((&exact - fd).abs().max()).unwrap();
        assert!(err < 1e-6, "exact trace vs finite differences: {err}");
        let n = 3000;
        let hu = hessian_trace_hutchinson(&m, &x, n, Probe::Gaussian, false).unwrap();
        let se = (hu.probe_variance.unwrap() / n as f64).sqrt();
        let z = ((hu.trace - &exact).abs() / se).max();
        assert!(f64::try_from(z).unwrap() < 3.5, "Hutchinson off by more than 3.5 se");
    }

    #[test]
    fn log_ratio_needs_no_normaliser() {
        let g = gaussian();
        let x1 = points(6);
        let x2 = &x1 * 0.5;
        let r = log_ratio(&g, &x1, &x2).unwrap();
        let want = g.log_prob(&x1) - g.log_prob(&x2);
        assert!(f64::try_from((r - want).abs().max()).unwrap() < 1e-12);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let g = gaussian();
        let e = score(&g, &Tensor::zeros([2, 2], (Kind::Double, Device::Cpu)), false).unwrap_err();
        assert!(e.to_string().contains("[B, 3]"), "{e}");
        let mut x = points(2);
        let _ = x.get(1).get(1).fill_(f64::NAN);
        let e = hessian_trace_exact(&g, &x, false).unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
        let _ = x.fill_(0.0);
        assert!(hessian_trace_hutchinson(&g, &x, 0, Probe::Rademacher, false).is_err());
    }
}
