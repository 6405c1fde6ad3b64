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
}

impl EnergyModel for Mlp {
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
