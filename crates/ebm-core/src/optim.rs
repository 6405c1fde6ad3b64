//! Adam with inspectable state (so checkpoints can save and restore it exactly), EMA of weights.
//!
//! tch's built-in optimisers keep their state inside libtorch where it cannot be saved; this one keeps
//! the moments as named tensors.

use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Adam hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// `(β1, β2)`. IGEBM-style image training uses `β1 = 0`.
    pub betas: [f64; 2],
    /// ε added to `√v̂`.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 disables it.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0) || !self.lr.is_finite() {
            return Err(invalid("optim.lr", format!("learning rate must be > 0, got {}", self.lr)));
        }
        if self.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(invalid("optim.betas", format!("each beta must be in [0, 1), got {:?}", self.betas)));
        }
        if !(self.eps > 0.0) || !(self.weight_decay >= 0.0) {
            return Err(invalid("optim", "eps must be > 0 and weight_decay ≥ 0"));
        }
        Ok(())
    }
}

/// Adam over a fixed, named list of parameters.
#[derive(Debug)]
pub struct Adam {
    /// The configuration (the learning rate may be lowered by the divergence guard).
    pub cfg: AdamConfig,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i64,
}

impl Adam {
    /// Creates the optimiser with zero moments for each `(name, parameter)`.
    pub fn new(cfg: AdamConfig, params: Vec<(String, Tensor)>) -> Result<Self> {
        cfg.validate()?;
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Ok(Adam { cfg, params, m, v, t: 0 })
    }

    /// Sets every parameter's gradient to zero.
    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// The global L2 norm of the gradients.
    pub fn grad_norm(&self) -> f64 {
        let sq: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .map(|g| g.square().sum(Kind::Double))
            .collect();
        if sq.is_empty() {
            return 0.0;
        }
        f64::try_from(Tensor::stack(&sq, 0).sum(Kind::Double).sqrt()).unwrap_or(f64::NAN)
    }

    /// Scales gradients so that their global norm is at most `max_norm` (given the current `norm`).
    pub fn clip_grad_norm(&mut self, norm: f64, max_norm: f64) {
        if norm > max_norm && norm.is_finite() {
            let scale = max_norm / (norm + 1e-12);
            for (_, p) in &self.params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        }
    }

    /// One Adam update of every parameter that has a gradient.
    pub fn step(&mut self) {
        self.t += 1;
        let [b1, b2] = self.cfg.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let lr = self.cfg.lr;
        tch::no_grad(|| {
            for ((_, p), (m, v)) in self.params.iter().zip(self.m.iter_mut().zip(self.v.iter_mut())) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
                let denom = (&*v / bc2).sqrt() + self.cfg.eps;
                let mut p = p.shallow_clone();
                if self.cfg.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * self.cfg.weight_decay);
                }
                let _ = p.g_sub_(&(&*m / denom * (lr / bc1)));
            }
        });
    }

    /// The optimiser state as named tensors (`adam.m.<param>`, `adam.v.<param>`, `adam.t`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for ((name, _), (m, v)) in self.params.iter().zip(self.m.iter().zip(&self.v)) {
            out.push((format!("adam.m.{name}"), m.shallow_clone()));
            out.push((format!("adam.v.{name}"), v.shallow_clone()));
        }
        out.push(("adam.t".into(), Tensor::from_slice(&[self.t])));
        out
    }

    /// Restores [`Adam::state`]; every moment must be present with the parameter's shape.
    pub fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for ((name, p), (m, v)) in self.params.iter().zip(self.m.iter_mut().zip(self.v.iter_mut())) {
            for (kind, dst) in [("m", m), ("v", v)] {
                let key = format!("adam.{kind}.{name}");
                let src =
                    state.get(&key).ok_or_else(|| invalid("checkpoint", format!("missing optimiser entry {key}")))?;
                if src.size() != p.size() {
                    return Err(invalid(
                        "checkpoint",
                        format!("optimiser entry {key} has shape {:?}, parameter has {:?}", src.size(), p.size()),
                    ));
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        let t = state.get("adam.t").ok_or_else(|| invalid("checkpoint", "missing optimiser entry adam.t"))?;
        self.t = i64::try_from(t.get(0))?;
        Ok(())
    }
}

/// Exponential moving average of parameters: `s ← d·s + (1-d)·p` after every step.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts the average at the current parameter values.
    pub fn new(decay: f64, params: &[(String, Tensor)]) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(invalid("ema", format!("decay must be in [0, 1), got {decay}")));
        }
        let shadow = params.iter().map(|(n, p)| (n.clone(), p.detach().copy())).collect();
        Ok(Ema { decay, shadow })
    }

    /// Moves the average towards `params`.
    pub fn update(&mut self, params: &[(String, Tensor)]) {
        tch::no_grad(|| {
            for ((_, s), (_, p)) in self.shadow.iter_mut().zip(params) {
                let _ = s.g_mul_scalar_(self.decay).g_add_(&(p * (1.0 - self.decay)));
            }
        });
    }

    /// The averaged parameters, named like the model's (`ema.<param>` in checkpoints).
    pub fn shadow(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Swaps the averaged values into `params` (call again to swap back).
    pub fn swap(&mut self, params: &[(String, Tensor)]) {
        tch::no_grad(|| {
            for ((_, s), (_, p)) in self.shadow.iter_mut().zip(params) {
                let tmp = p.detach().copy();
                p.shallow_clone().copy_(s);
                s.copy_(&tmp);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_steps_match_hand_computation() {
        // f(θ) = θ²/2 → g = θ. Adam by hand: m ← β1 m + (1-β1) g, v ← β2 v + (1-β2) g²,
        // θ ← θ - lr·m̂/(√v̂ + eps) with bias corrections m̂ = m/(1-β1ᵗ), v̂ = v/(1-β2ᵗ).
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut adam =
            Adam::new(AdamConfig { lr: 0.1, ..Default::default() }, vec![("w".into(), p.shallow_clone())]).unwrap();
        let (mut th, mut m, mut v) = (1.0f64, 0.0, 0.0);
        for t in 1..=3 {
            let g = th;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            th -= 0.1 * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
            adam.zero_grad();
            (p.square() * 0.5).sum(Kind::Double).backward();
            adam.step();
            let got = f64::try_from(&p).unwrap();
            assert!((got - th).abs() < 1e-12, "step {t}: {got} vs {th}");
        }
        // state round trip
        let st: std::collections::HashMap<_, _> = adam.state().into_iter().collect();
        let mut other = Adam::new(AdamConfig::default(), vec![("w".into(), p.shallow_clone())]).unwrap();
        other.load_state(&st).unwrap();
        assert_eq!(other.t, 3);
        let mut bad = Adam::new(AdamConfig::default(), vec![("u".into(), p.shallow_clone())]).unwrap();
        assert!(bad.load_state(&st).unwrap_err().to_string().contains("adam.m.u"));
    }

    #[test]
    fn clipping_and_validation() {
        let p = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let mut adam = Adam::new(AdamConfig::default(), vec![("w".into(), p.shallow_clone())]).unwrap();
        (&p * &p * 0.5).sum(Kind::Float).backward();
        let n = adam.grad_norm();
        assert!((n - 5.0).abs() < 1e-6);
        adam.clip_grad_norm(n, 1.0);
        assert!((adam.grad_norm() - 1.0).abs() < 1e-5);
        let e = AdamConfig { lr: -1e-3, ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("learning rate"), "{e}");
    }

    #[test]
    fn ema_averages_and_swaps() {
        let p = Tensor::from_slice(&[0.0f32]);
        let params = vec![("w".to_string(), p.shallow_clone())];
        let mut ema = Ema::new(0.5, &params).unwrap();
        let _ = p.shallow_clone().fill_(2.0);
        ema.update(&params);
        assert_eq!(f64::try_from(&ema.shadow()[0].1).unwrap(), 1.0);
        ema.swap(&params);
        assert_eq!(f64::try_from(&p).unwrap(), 1.0);
        assert!(Ema::new(1.0, &params).is_err());
    }
}
