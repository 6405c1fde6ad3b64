//! Multi-layer perceptron energy `f: R^D → R`.

use super::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

/// Non-linearity between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// SiLU / Swish: `x · sigmoid(x)` (smooth, the default: score matching needs second derivatives).
    #[default]
    Silu,
    /// Softplus (smooth).
    Softplus,
    /// ELU.
    Elu,
    /// Leaky ReLU with slope 0.2 (IGEBM style; piecewise linear, so `∇²f = 0` almost everywhere).
    LeakyRelu,
    /// ReLU (piecewise linear; unsuitable for score matching).
    Relu,
}

impl Activation {
    /// Applies the non-linearity element-wise; shapes are unchanged.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Silu => x.silu(),
            Activation::Softplus => x.softplus(),
            Activation::Elu => x.elu(),
            Activation::LeakyRelu => x.maximum(&(x * 0.2)),
            Activation::Relu => x.relu(),
        }
    }

    /// The chain rule through the non-linearity: `grad_out · φ'(h)`, with libtorch's fused backward kernel of
    /// each (the ones autograd runs). `h` is the pre-activation, `a = φ(h)` the activation when it was computed
    /// (ELU and ReLU then read it, as autograd does; without it they read `h`, the same values).
    ///
    /// # Shapes
    /// `grad_out`, `h`, `a`: `[B, H]` (`grad_out` may be a broadcast `[1, H]` expanded to it) → `[B, H]`.
    fn backward(self, grad_out: &Tensor, h: &Tensor, a: Option<&Tensor>) -> Tensor {
        match (self, a) {
            (Activation::Silu, _) => h.silu_backward(grad_out),
            // torch's defaults: β = 1, threshold 20
            (Activation::Softplus, _) => h.softplus_backward(grad_out, 1.0, 20.0),
            // as autograd: from the result, α = scale = input scale = 1
            (Activation::Elu, Some(a)) => Tensor::elu_backward(grad_out, 1.0, 1.0, 1.0, true, a),
            (Activation::Elu, None) => Tensor::elu_backward(grad_out, 1.0, 1.0, 1.0, false, h),
            // `maximum(x, 0.2x)`: slope 1 where h > 0, 0.2 where h < 0 (at h = 0 exactly autograd splits the
            // gradient of the tie, 0.6; this gives 0.2)
            (Activation::LeakyRelu, _) => h.leaky_relu_backward(grad_out, 0.2, false),
            (Activation::Relu, Some(a)) => a.threshold_backward(grad_out, 0.0),
            (Activation::Relu, None) => h.threshold_backward(grad_out, 0.0),
        }
    }
}

/// Configuration of an [`Mlp`]: `in_dim → hidden[0] → … → hidden[n-1] → 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Input dimension D.
    pub in_dim: i64,
    /// Widths of the hidden layers.
    pub hidden: Vec<i64>,
    /// Non-linearity.
    pub activation: Activation,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig { in_dim: 2, hidden: vec![128, 128], activation: Activation::Silu }
    }
}

impl MlpConfig {
    /// Checks that every dimension is positive.
    pub fn validate(&self) -> Result<()> {
        if self.in_dim < 1 {
            return Err(invalid("mlp.in_dim", format!("must be ≥ 1, got {}", self.in_dim)));
        }
        if let Some(w) = self.hidden.iter().find(|w| **w < 1) {
            return Err(invalid("mlp.hidden", format!("widths must be ≥ 1, got {w}")));
        }
        Ok(())
    }
}

/// An MLP whose scalar output is `f(x)`, the unnormalised log-density.
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
    activation: Activation,
    in_dim: i64,
}

impl Mlp {
    /// Builds the network with its parameters registered under `path` (PyTorch's default init).
    pub fn new(path: &nn::Path, cfg: &MlpConfig) -> Result<Self> {
        cfg.validate()?;
        let mut dims = vec![cfg.in_dim];
        dims.extend(&cfg.hidden);
        dims.push(1);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(path / format!("l{i}"), w[0], w[1], Default::default()))
            .collect();
        Ok(Mlp { layers, activation: cfg.activation, in_dim: cfg.in_dim })
    }

    /// Sets the output layer's weights and bias to zero (`f ≡ 0`; the hidden layers keep their values).
    pub(crate) fn zero_output_layer(&self) {
        let last = self.layers.last().expect("an MLP has an output layer");
        tch::no_grad(|| {
            let _ = last.ws.shallow_clone().zero_();
            if let Some(b) = &last.bs {
                let _ = b.shallow_clone().zero_();
            }
        });
    }
}

/// `h W^T + b` with one fused `addmm` (BLAS reads the transposed view of `W` as it is, no copy).
///
/// # Shapes
/// `h: [B, in]`, `l.ws: [out, in]`, `l.bs: [out]` → `[B, out]`.
fn affine(l: &nn::Linear, h: &Tensor) -> Tensor {
    match &l.bs {
        Some(b) => b.addmm(h, &l.ws.tr()),
        None => h.mm(&l.ws.tr()),
    }
}

/// `g W`, the input gradient of `h Wᵀ + b`.
///
/// For a layer with 2 to 15 inputs (the first layer of a low-dimensional model) MKL's product with the
/// row-major `[out, in]` weight takes a slow path, 3–5× slower than the same product with the weight's
/// transposed copy read transposed (e.g. `[256, 128] × [128, 2]`: 53 µs against 16 µs including the copy, one
/// thread): that case copies `Wᵀ` (a few hundred floats) once per call. Other widths read `W` as it is.
///
/// # Shapes
/// `g: [B, out]`, `w: [out, in]` → `[B, in]`.
fn input_grad(g: &Tensor, w: &Tensor) -> Tensor {
    if (2..16).contains(&w.size()[1]) {
        g.mm(&w.tr().contiguous().tr())
    } else {
        g.mm(w)
    }
}

impl Mlp {
    /// `∇ₓf` in closed form, and `f` when `with_f`: one forward pass keeping the pre-activations, then the
    /// backward pass written out, `g ← (g ⊙ φ'(hᵢ)) Wᵢ` from the last layer down (`g` starts as the last layer's
    /// weight row, broadcast over the batch). Without `f` the last hidden activation and the output layer are
    /// not computed. Call it under `no_grad`: the ops build no graph then.
    ///
    /// # Shapes
    /// `x: [B, D]` → `f: [B]` (when `with_f`), `grad: [B, D]`.
    fn closed_form_score(&self, x: &Tensor, with_f: bool) -> (Option<Tensor>, Tensor) {
        let (hidden, last) = self.layers.split_at(self.layers.len() - 1);
        let mut pre = Vec::with_capacity(hidden.len());
        let mut a = Some(x.shallow_clone());
        for (i, l) in hidden.iter().enumerate() {
            let h = affine(l, a.as_ref().expect("every activation but the last is kept"));
            let next = (with_f || i + 1 < hidden.len()).then(|| self.activation.apply(&h));
            pre.push((h, std::mem::replace(&mut a, next)));
        }
        let f = with_f.then(|| affine(&last[0], a.as_ref().expect("kept with f")).squeeze_dim(-1));
        let mut g = last[0].ws.shallow_clone(); // ∂f/∂a_last: [1, H]
        let mut a_out = a;
        for (l, (h, a_in)) in hidden.iter().zip(pre).rev() {
            let gh = self.activation.backward(&g.expand_as(&h), &h, a_out.as_ref());
            g = input_grad(&gh, &l.ws);
            a_out = a_in;
        }
        if hidden.is_empty() {
            // f = x wᵀ + b: the gradient is w in every row (a copy, never a view of the parameter)
            g = g.repeat([x.size()[0], 1]);
        }
        (f, g)
    }
}

impl EnergyModel for Mlp {
    /// The closed form of [`Mlp::closed_form_score`] (forward with `addmm`, backward with the activation's fused
    /// backward kernel), under `no_grad`.
    ///
    /// # Shapes
    /// `x: [B, D]` → `f: [B]`, `grad: [B, D]`.
    fn f_and_score(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (f, g) = tch::no_grad(|| self.closed_form_score(x, true));
        (f.expect("asked for f"), g)
    }

    /// The closed form without `f` (no last hidden activation, no output layer).
    ///
    /// # Shapes
    /// `x: [B, D]` → `[B, D]`.
    fn score(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.closed_form_score(x, false)).1
    }

    /// # Shapes
    /// `x: [B, D]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h);
            if i < last {
                h = self.activation.apply(&h);
            }
        }
        h.squeeze_dim(-1)
    }

    fn event_shape(&self) -> Vec<i64> {
        vec![self.in_dim]
    }

    /// The same layers (shallow handles of the same weight tensors).
    fn thread_copy(&self) -> Option<Box<dyn EnergyModel + Send>> {
        let layers = self
            .layers
            .iter()
            .map(|l| nn::Linear { ws: l.ws.shallow_clone(), bs: l.bs.as_ref().map(Tensor::shallow_clone) })
            .collect();
        Some(Box::new(Mlp { layers, activation: self.activation, in_dim: self.in_dim }))
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.layers
            .iter()
            .flat_map(|l| {
                let mut v = vec![l.ws.shallow_clone()];
                if let Some(b) = &l.bs {
                    v.push(b.shallow_clone());
                }
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_and_parameter_count() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = MlpConfig { in_dim: 3, hidden: vec![5, 4], activation: Activation::Silu };
        let m = Mlp::new(&vs.root(), &cfg).unwrap();
        let x = Tensor::randn([7, 3], (Kind::Float, Device::Cpu));
        assert_eq!(m.f(&x).size(), vec![7]);
        // (3·5+5) + (5·4+4) + (4·1+1)
        let n: i64 = m.parameters().iter().map(|p| p.numel() as i64).sum();
        assert_eq!(n, 20 + 24 + 5);
        assert_eq!(vs.trainable_variables().len(), m.parameters().len());
    }

    #[test]
    fn leaky_relu_matches_definition() {
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.0, 1.5]);
        let y = Activation::LeakyRelu.apply(&x);
        assert_eq!(Vec::<f32>::try_from(&y).unwrap(), vec![-0.4, -0.1, 0.0, 1.5]);
    }

    /// The largest `|fast - autograd|` over the largest `|autograd|`, for `f` and for `∇ₓf`.
    fn rel_errors(m: &Mlp, x: &Tensor) -> (f64, f64) {
        let (f, g) = m.f_and_score(x);
        let s = crate::autograd::score(m, x, false).unwrap();
        let g_only = m.score(x);
        assert!(
            f64::try_from((&g_only - &g).abs().max()).unwrap() <= 1e-6 * (1.0 + f64::try_from(g.abs().max()).unwrap())
        );
        assert_eq!(f.size(), s.f.size());
        assert_eq!(g.size(), s.grad.size());
        assert!(!f.requires_grad() && !g.requires_grad(), "the fast path builds no graph");
        let rel = |a: &Tensor, b: &Tensor| {
            let scale = f64::try_from(b.abs().max()).unwrap().max(1e-12);
            f64::try_from((a - b).abs().max()).unwrap() / scale
        };
        (rel(&f, &s.f), rel(&g, &s.grad))
    }

    #[test]
    fn closed_form_score_matches_autograd_for_every_activation_width_and_batch() {
        let acts = [Activation::Silu, Activation::Softplus, Activation::Elu, Activation::LeakyRelu, Activation::Relu];
        let shapes: [(i64, Vec<i64>); 5] =
            [(2, vec![128, 128]), (3, vec![5]), (7, vec![64, 32, 16]), (2, vec![512, 512]), (4, vec![])];
        for (seed, act) in acts.into_iter().enumerate() {
            for (in_dim, hidden) in &shapes {
                for batch in [1i64, 17, 256] {
                    tch::manual_seed(seed as i64);
                    let vs = nn::VarStore::new(Device::Cpu);
                    let cfg = MlpConfig { in_dim: *in_dim, hidden: hidden.clone(), activation: act };
                    let m = Mlp::new(&vs.root(), &cfg).unwrap();
                    let x = Tensor::randn([batch, *in_dim], (Kind::Float, Device::Cpu)) * 2.0;
                    let (ef, eg) = rel_errors(&m, &x);
                    assert!(ef < 1e-5 && eg < 1e-5, "{act:?} {in_dim}-{hidden:?} batch {batch}: f {ef:e}, grad {eg:e}");
                }
            }
        }
    }

    #[test]
    fn closed_form_score_in_double_and_under_no_grad_and_leaves_parameters_alone() {
        tch::manual_seed(9);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 3, hidden: vec![16, 8], ..Default::default() }).unwrap();
        vs.double();
        let x = Tensor::randn([9, 3], (Kind::Double, Device::Cpu));
        let (ef, eg) = rel_errors(&m, &x);
        assert!(ef < 1e-12 && eg < 1e-12, "double: f {ef:e}, grad {eg:e}");
        let (f, g) = tch::no_grad(|| m.f_and_score(&x));
        assert!(f64::try_from((f - m.f(&x)).abs().max()).unwrap() < 1e-12);
        assert_eq!(g.size(), vec![9, 3]);
        assert!(vs.trainable_variables().iter().all(|p| !p.grad().defined() && p.requires_grad()));
        // a linear model's gradient is a copy of its weight, not a view: changing it leaves the weight alone
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = Mlp::new(&vs.root(), &MlpConfig { in_dim: 2, hidden: vec![], ..Default::default() }).unwrap();
        let w = lin.parameters()[0].copy();
        let (_, mut g) = lin.f_and_score(&Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)));
        let _ = g.fill_(7.0);
        assert!(f64::try_from((&lin.parameters()[0] - w).abs().max()).unwrap() == 0.0);
    }

    #[test]
    fn bad_config_and_bad_input_are_errors() {
        let cfg = MlpConfig { in_dim: 0, ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("in_dim"));
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
        let e = m.try_f(&Tensor::zeros([4, 3], (Kind::Float, Device::Cpu))).unwrap_err();
        assert!(e.to_string().contains("[B, 2]"), "{e}");
        let nan = Tensor::from_slice(&[0.0f32, f32::NAN]).view([1, 2]);
        assert!(m.try_f(&nan).unwrap_err().to_string().contains("non-finite"));
    }
}
