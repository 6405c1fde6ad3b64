//! Score matching (Hyvärinen 2005): minimise `E_data[½‖∇ₓf(x)‖² + tr ∇²ₓf(x)]`, which equals
//! `½ E_data‖∇ₓf - ∇ₓ log p_data‖²` up to a constant, so `Z` never appears.
//!
//! - [`SmMethod::Exact`]: the trace by D backward passes (cost grows with D).
//! - [`SmMethod::Hutchinson`]: the trace by `vᵀ∇²f v` with M probes (cost independent of D). With the
//!   squared norm kept exact, this is sliced score matching with variance reduction (SSM-VR).
//! - [`SmMethod::Sliced`]: plain sliced score matching `E_v[vᵀ∇²f v + ½(vᵀ∇f)²]` (Song et al. 2019).
//! - [`SmMethod::Denoising`]: `E ½‖∇f(x̃) + (x̃ - x)/σ²‖²`, `x̃ = x + σz`: matches the score of the data
//!   convolved with `N(0, σ²)` (Vincent 2011); no second derivatives.

use super::{LossOutput, Objective};
use crate::autograd::{hessian_trace_exact, hessian_trace_hutchinson, score_unchecked, Probe};
use crate::batch::Batch;
use crate::check::check_input;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which score-matching estimator to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "variant", rename_all = "snake_case", deny_unknown_fields)]
pub enum SmMethod {
    /// Exact Hessian trace.
    Exact,
    /// Hutchinson trace estimator with `probes` probes (= sliced SM with variance reduction).
    Hutchinson {
        /// Probes per sample (M).
        probes: usize,
        /// Probe distribution.
        probe: Probe,
    },
    /// Sliced score matching without variance reduction.
    Sliced {
        /// Projections per sample (M).
        probes: usize,
        /// Projection distribution.
        probe: Probe,
    },
    /// Denoising score matching at noise level σ.
    Denoising {
        /// Noise standard deviation σ.
        sigma: f64,
    },
}

impl SmMethod {
    /// Checks probe counts and σ.
    pub fn validate(&self) -> Result<()> {
        match *self {
            SmMethod::Hutchinson { probes: 0, .. } | SmMethod::Sliced { probes: 0, .. } => {
                Err(invalid("score_matching.probes", "must be ≥ 1"))
            }
            SmMethod::Denoising { sigma } if !(sigma > 0.0) || !sigma.is_finite() => {
                Err(invalid("score_matching.sigma", format!("must be > 0, got {sigma}")))
            }
            _ => Ok(()),
        }
    }
}

/// The score-matching objective.
#[derive(Debug, Clone)]
pub struct ScoreMatching {
    method: SmMethod,
}

/// ½‖g‖² per sample.
fn half_sq_norm(g: &Tensor) -> Tensor {
    let b = g.size()[0];
    g.reshape([b, -1]).square().sum_dim_intlist(1, false, g.kind()) * 0.5
}

impl ScoreMatching {
    /// Builds the objective after validating the method.
    pub fn new(method: SmMethod) -> Result<Self> {
        method.validate()?;
        Ok(ScoreMatching { method })
    }

    /// Per-sample loss terms `[B]` (their mean is the loss), with `create_graph` controlling whether they
    /// carry a graph to the parameters.
    ///
    /// # Shapes
    /// `x: [B, *event]` → `[B]`.
    pub fn per_sample(&self, m: &dyn EnergyModel, x: &Tensor, create_graph: bool) -> Result<(Tensor, Tensor)> {
        check_input(&m.event_shape(), x, "data batch")?;
        Ok(match self.method {
            SmMethod::Exact => {
                let so = hessian_trace_exact(m, x, create_graph)?;
                (half_sq_norm(&so.grad) + so.trace, so.grad)
            }
            SmMethod::Hutchinson { probes, probe } => {
                let so = hessian_trace_hutchinson(m, x, probes, probe, create_graph)?;
                (half_sq_norm(&so.grad) + so.trace, so.grad)
            }
            SmMethod::Sliced { probes, probe } => {
                let s = score_unchecked(m, x, true);
                let b = x.size()[0];
                let mut terms = Vec::with_capacity(probes);
                for _ in 0..probes {
                    let v = probe.draw(&s.grad.detach());
                    let gv = (&s.grad * &v).reshape([b, -1]).sum_dim_intlist(1, false, s.grad.kind());
                    let hv = Tensor::run_backward(&[gv.sum(gv.kind())], &[&s.x], true, create_graph).remove(0);
                    let vhv = (hv * &v).reshape([b, -1]).sum_dim_intlist(1, false, s.grad.kind());
                    terms.push(vhv + gv.square() * 0.5);
                }
                let t = Tensor::stack(&terms, 0).mean_dim(0, false, s.grad.kind());
                (t, s.grad)
            }
            SmMethod::Denoising { sigma } => {
                let noise = x.randn_like() * sigma;
                let xt = x.detach() + &noise;
                let s = score_unchecked(m, &xt, create_graph);
                let target = &noise / (-sigma * sigma);
                (half_sq_norm(&(&s.grad - target)), s.grad)
            }
        })
    }
}

impl Objective for ScoreMatching {
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        let (terms, grad) = self.per_sample(m, &batch.x, true)?;
        let loss = terms.mean(Kind::Float);
        let b = grad.size()[0];
        let gn = tch::no_grad(|| grad.reshape([b, -1]).norm_scalaropt_dim(2.0, [1], false).mean(Kind::Double));
        Ok(LossOutput { loss, metrics: vec![("grad_norm_x", f64::try_from(gn)?)] })
    }

    fn name(&self) -> String {
        match self.method {
            SmMethod::Exact => "sm_exact".into(),
            SmMethod::Hutchinson { .. } => "sm_hutchinson".into(),
            SmMethod::Sliced { .. } => "sm_sliced".into(),
            SmMethod::Denoising { .. } => "dsm".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::{Gaussian, Mlp, MlpConfig};
    use tch::{nn, Device};

    fn mean_and_se(t: &Tensor) -> (f64, f64) {
        let n = t.size()[0] as f64;
        (f64::try_from(t.mean(Kind::Double)).unwrap(), (f64::try_from(t.var(true)).unwrap() / n).sqrt())
    }

    #[test]
    fn exact_sm_loss_of_a_gaussian_model_has_its_closed_form() {
        // Model N(0, s²I) in D=2 on data N(0, I): ½‖x‖²/s⁴ - D/s², expectation D/(2s⁴) - D/s².
        tch::manual_seed(0);
        let s = 0.8f64;
        let g = Gaussian::isotropic(&[0.0, 0.0], s, Device::Cpu).unwrap();
        let x = Tensor::randn([20000, 2], (Kind::Double, Device::Cpu));
        let (terms, _) = ScoreMatching::new(SmMethod::Exact).unwrap().per_sample(&g, &x, false).unwrap();
        let (mean, se) = mean_and_se(&terms);
        let want = 2.0 / (2.0 * s.powi(4)) - 2.0 / (s * s);
        assert!((mean - want).abs() < 4.0 * se, "{mean} vs {want} (se {se})");
        // and it is minimised at s = 1 (the data's own scale)
        let g1 = Gaussian::isotropic(&[0.0, 0.0], 1.0, Device::Cpu).unwrap();
        let (t1, _) = ScoreMatching::new(SmMethod::Exact).unwrap().per_sample(&g1, &x, false).unwrap();
        assert!(f64::try_from(t1.mean(Kind::Double)).unwrap() < mean);
    }

    #[test]
    fn exact_hutchinson_and_sliced_agree_in_expectation_on_a_fixed_mlp() {
        tch::manual_seed(1);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let m = Mlp::new(&vs.root(), &MlpConfig { in_dim: 4, hidden: vec![32, 32], ..Default::default() }).unwrap();
        vs.double();
        let x = Tensor::randn([16, 4], (Kind::Double, Device::Cpu));
        let exact = ScoreMatching::new(SmMethod::Exact).unwrap().per_sample(&m, &x, false).unwrap().0;
        let exact = f64::try_from(exact.mean(Kind::Double)).unwrap();
        for method in [
            SmMethod::Hutchinson { probes: 1, probe: Probe::Rademacher },
            SmMethod::Sliced { probes: 1, probe: Probe::Gaussian },
        ] {
            let sm = ScoreMatching::new(method.clone()).unwrap();
            let reps: Vec<f64> = (0..1500)
                .map(|_| f64::try_from(sm.per_sample(&m, &x, false).unwrap().0.mean(Kind::Double)).unwrap())
                .collect();
            let (mean, se) = mean_and_se(&Tensor::from_slice(&reps));
            assert!(se > 0.0);
            assert!((mean - exact).abs() < 3.5 * se, "{method:?}: {mean} vs exact {exact} (se {se})");
        }
    }

    #[test]
    fn denoising_target_is_the_noisy_score_for_the_convolved_gaussian() {
        // Data N(0, I), noise σ: the DSM optimum is the score of N(0, (1+σ²)I). Its loss is lower than a
        // model at the clean scale N(0, I).
        tch::manual_seed(2);
        let sigma = 0.5;
        let x = Tensor::randn([40000, 2], (Kind::Double, Device::Cpu));
        let sm = ScoreMatching::new(SmMethod::Denoising { sigma }).unwrap();
        let loss = |std: f64| {
            tch::manual_seed(3);
            let g = Gaussian::isotropic(&[0.0, 0.0], std, Device::Cpu).unwrap();
            f64::try_from(sm.per_sample(&g, &x, false).unwrap().0.mean(Kind::Double)).unwrap()
        };
        let opt = loss((1.0f64 + sigma * sigma).sqrt());
        assert!(opt < loss(1.0) && opt < loss(1.4), "optimum not at the convolved scale");
    }

    #[test]
    fn bad_methods_are_errors() {
        assert!(ScoreMatching::new(SmMethod::Hutchinson { probes: 0, probe: Probe::Gaussian }).is_err());
        let e = ScoreMatching::new(SmMethod::Denoising { sigma: 0.0 }).unwrap_err();
        assert!(e.to_string().contains("sigma"), "{e}");
    }
}
