//! Product of experts: `f(x) = Σᵢ wᵢ fᵢ(x)`. A negative weight gives "NOT" (`f_a - λ f_b`).

use super::EnergyModel;
use crate::error::{invalid, Result};
use tch::Tensor;

/// A weighted sum of the `f` of several models sharing one event shape.
pub struct ProductOfExperts<'a> {
    experts: Vec<(f64, Box<dyn EnergyModel + 'a>)>,
    event: Vec<i64>,
}

impl<'a> ProductOfExperts<'a> {
    /// Builds `Σᵢ wᵢ fᵢ`; every expert must have the same event shape and every weight must be finite.
    pub fn new(experts: Vec<(f64, Box<dyn EnergyModel + 'a>)>) -> Result<Self> {
        let Some((_, first)) = experts.first() else {
            return Err(invalid("product.experts", "need at least one expert"));
        };
        let event = first.event_shape();
        for (i, (w, e)) in experts.iter().enumerate() {
            if !w.is_finite() {
                return Err(invalid("product.weights", format!("weight {i} is {w}")));
            }
            if e.event_shape() != event {
                return Err(invalid(
                    "product.experts",
                    format!("expert {i} has event shape {:?}, expert 0 has {event:?}", e.event_shape()),
                ));
            }
        }
        Ok(ProductOfExperts { experts, event })
    }

    /// The weights `wᵢ`.
    pub fn weights(&self) -> Vec<f64> {
        self.experts.iter().map(|(w, _)| *w).collect()
    }
}

impl EnergyModel for ProductOfExperts<'_> {
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let mut it = self.experts.iter();
        let (w0, e0) = it.next().expect("validated non-empty");
        let mut acc = e0.f(x) * *w0;
        for (w, e) in it {
            acc += e.f(x) * *w;
        }
        acc
    }

    /// `Σ wᵢ fᵢ` and `Σ wᵢ ∇fᵢ` from every expert's own [`EnergyModel::f_and_score`].
    fn f_and_score(&self, x: &Tensor) -> (Tensor, Tensor) {
        let mut it = self.experts.iter();
        let (w0, e0) = it.next().expect("validated non-empty");
        let (f0, g0) = e0.f_and_score(x);
        let (mut f, mut g) = (f0 * *w0, g0 * *w0);
        for (w, e) in it {
            let (fi, gi) = e.f_and_score(x);
            f += fi * *w;
            g += gi * *w;
        }
        (f, g)
    }

    /// `Σ wᵢ ∇fᵢ` from every expert's own [`EnergyModel::score`].
    fn score(&self, x: &Tensor) -> Tensor {
        let mut it = self.experts.iter();
        let (w0, e0) = it.next().expect("validated non-empty");
        let mut g = e0.score(x) * *w0;
        for (w, e) in it {
            g += e.score(x) * *w;
        }
        g
    }

    fn event_shape(&self) -> Vec<i64> {
        self.event.clone()
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.experts.iter().flat_map(|(_, e)| e.parameters()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::Gaussian;
    use tch::Device;

    #[test]
    fn product_of_gaussians_is_gaussian_with_summed_precision() {
        // N(-1, 1) · N(1, 1) ∝ N(0, 1/2): f = -(x+1)²/2 - (x-1)²/2 = -x² - 1.
        let a = Gaussian::isotropic(&[-1.0], 1.0, Device::Cpu).unwrap();
        let b = Gaussian::isotropic(&[1.0], 1.0, Device::Cpu).unwrap();
        let p = ProductOfExperts::new(vec![(1.0, Box::new(&a)), (1.0, Box::new(&b))]).unwrap();
        let x = Tensor::from_slice(&[0.0f64, 0.5, 2.0]).view([3, 1]);
        let got = Vec::<f64>::try_from(p.f(&x)).unwrap();
        for (g, xv) in got.iter().zip([0.0, 0.5, 2.0]) {
            assert!((g - (-xv * xv - 1.0)).abs() < 1e-12);
        }
        // NOT: f_a - f_b = -(x+1)²/2 + (x-1)²/2 = -2x
        let n = ProductOfExperts::new(vec![(1.0, Box::new(&a)), (-1.0, Box::new(&b))]).unwrap();
        let got = Vec::<f64>::try_from(n.f(&x)).unwrap();
        assert!((got[2] + 4.0).abs() < 1e-12);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let a = Gaussian::isotropic(&[0.0], 1.0, Device::Cpu).unwrap();
        let b = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        let e = ProductOfExperts::new(vec![(1.0, Box::new(&a)), (1.0, Box::new(&b))]).err().unwrap();
        assert!(e.to_string().contains("event shape"), "{e}");
        assert!(ProductOfExperts::new(vec![]).is_err());
    }

    #[test]
    fn fast_score_is_the_weighted_sum_of_the_experts_fast_scores() {
        use crate::energy::{Mlp, MlpConfig};
        tch::manual_seed(4);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let cfg = MlpConfig { in_dim: 2, hidden: vec![32, 32], ..Default::default() };
        let (m1, m2) = (Mlp::new(&(vs.root() / "a"), &cfg).unwrap(), Mlp::new(&(vs.root() / "b"), &cfg).unwrap());
        let gauss = Gaussian::isotropic(&[0.5, -0.5], 1.5, Device::Cpu).unwrap();
        let x = Tensor::randn([33, 2], (tch::Kind::Float, Device::Cpu));
        let p =
            ProductOfExperts::new(vec![(0.7, Box::new(&m1)), (-0.3, Box::new(&m2)), (1.0, Box::new(&gauss))]).unwrap();
        let (f, g) = p.f_and_score(&x);
        let want = crate::autograd::score(&p, &x, false).unwrap();
        let rel = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max() / b.abs().max()).unwrap();
        assert!(rel(&f, &want.f) < 1e-5 && rel(&g, &want.grad) < 1e-5);
        assert!(rel(&p.score(&x), &want.grad) < 1e-5);
    }
}
