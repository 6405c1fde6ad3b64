//! A small convolutional energy for images `[B, C, H, W]`, with optional spectral normalisation.

use super::{Activation, EnergyModel};
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

/// Configuration of a [`ConvEnergy`].
///
/// Layout: a 3×3 conv to `channels[0]`, then for each further entry a 3×3 stride-2 conv (halving H and W),
/// then a linear layer on the flattened features to 1 output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvConfig {
    /// Input channels (1 for grayscale, 3 for RGB).
    pub in_channels: i64,
    /// Input height and width.
    pub image_size: [i64; 2],
    /// Channels of the conv stages.
    pub channels: Vec<i64>,
    /// Non-linearity (SiLU/Swish as in the UvA tutorial, or leaky ReLU as in IGEBM).
    pub activation: Activation,
    /// Spectral normalisation of every weight (one power iteration per training forward pass).
    pub spectral_norm: bool,
}

impl Default for ConvConfig {
    fn default() -> Self {
        ConvConfig {
            in_channels: 1,
            image_size: [28, 28],
            channels: vec![32, 64, 64],
            activation: Activation::Silu,
            spectral_norm: false,
        }
    }
}

impl ConvConfig {
    /// Checks every size is positive.
    pub fn validate(&self) -> Result<()> {
        if self.in_channels < 1 || self.image_size.iter().any(|s| *s < 1) {
            return Err(invalid(
                "conv",
                format!("in_channels and image_size must be ≥ 1, got {} and {:?}", self.in_channels, self.image_size),
            ));
        }
        if self.channels.is_empty() || self.channels.iter().any(|c| *c < 1) {
            return Err(invalid("conv.channels", format!("need ≥ 1 positive entries, got {:?}", self.channels)));
        }
        Ok(())
    }
}

/// A weight with optional spectral normalisation `W / σ(W)`, σ estimated by power iteration.
#[derive(Debug)]
struct SnWeight {
    w: Tensor,
    u: Option<Tensor>,
}

impl SnWeight {
    fn new(path: &nn::Path, w: Tensor, sn: bool) -> Self {
        let u = sn.then(|| {
            let rows = w.size()[0];
            let u = path.zeros_no_train("sn_u", &[rows]);
            tch::no_grad(|| {
                let r = Tensor::randn([rows], (w.kind(), w.device()));
                u.shallow_clone().copy_(&(&r / r.norm()));
            });
            u
        });
        SnWeight { w, u }
    }

    /// The weight to use. With spectral norm, one power iteration updates `u` (when gradients are on,
    /// i.e. during training) and the weight is divided by `uᵀ W v`.
    fn get(&self) -> Tensor {
        let Some(u) = &self.u else { return self.w.shallow_clone() };
        let rows = self.w.size()[0];
        let w2 = self.w.view([rows, -1]);
        let v = tch::no_grad(|| {
            let v = w2.transpose(0, 1).mv(u);
            let v = &v / (v.norm() + 1e-12);
            if self.w.requires_grad() {
                let nu = w2.mv(&v);
                let nu = &nu / (nu.norm() + 1e-12);
                u.shallow_clone().copy_(&nu);
            }
            v
        });
        let sigma = u.copy().dot(&w2.mv(&v)); // a copy: the next forward pass updates u in place
        &self.w / sigma
    }
}

#[derive(Debug)]
struct ConvLayer {
    w: SnWeight,
    b: Tensor,
    stride: i64,
}

/// Convolutional network whose scalar output is `f(x)`.
#[derive(Debug)]
pub struct ConvEnergy {
    convs: Vec<ConvLayer>,
    head_w: SnWeight,
    head_b: Tensor,
    activation: Activation,
    event: Vec<i64>,
    params: Vec<Tensor>,
}

impl ConvEnergy {
    /// Builds the network with its parameters under `path`.
    pub fn new(path: &nn::Path, cfg: &ConvConfig) -> Result<Self> {
        Self::with_outputs(path, cfg, 1)
    }

    /// The same trunk with a linear head to `outputs ≥ 1` values ([`ConvEnergy::outputs`]); with more than
    /// one, `f` is their log-mean-exp (the label marginal of a classifier read as an EBM under a uniform
    /// prior). Same parameter names and initialisation order as [`ConvEnergy::new`].
    pub fn with_outputs(path: &nn::Path, cfg: &ConvConfig, outputs: i64) -> Result<Self> {
        cfg.validate()?;
        if outputs < 1 {
            return Err(invalid("conv", format!("needs ≥ 1 outputs, got {outputs}")));
        }
        let mut convs = Vec::new();
        let mut c_in = cfg.in_channels;
        let [mut h, mut w] = cfg.image_size;
        for (i, &c) in cfg.channels.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let p = path / format!("conv{i}");
            let fan_in = (c_in * 9) as f64;
            let bound = 1.0 / fan_in.sqrt();
            let wt = p.var("weight", &[c, c_in, 3, 3], nn::Init::Uniform { lo: -bound, up: bound });
            let b = p.var("bias", &[c], nn::Init::Uniform { lo: -bound, up: bound });
            convs.push(ConvLayer { w: SnWeight::new(&p, wt, cfg.spectral_norm), b, stride });
            if stride == 2 {
                h = (h + 1) / 2;
                w = (w + 1) / 2;
            }
            c_in = c;
        }
        let feat = c_in * h * w;
        let p = path / "head";
        let bound = 1.0 / (feat as f64).sqrt();
        let hw = p.var("weight", &[outputs, feat], nn::Init::Uniform { lo: -bound, up: bound });
        let head_b = p.var("bias", &[outputs], nn::Init::Uniform { lo: -bound, up: bound });
        let head_w = SnWeight::new(&p, hw, cfg.spectral_norm);
        let mut params: Vec<Tensor> = convs.iter().flat_map(|l| [l.w.w.shallow_clone(), l.b.shallow_clone()]).collect();
        params.push(head_w.w.shallow_clone());
        params.push(head_b.shallow_clone());
        let event = vec![cfg.in_channels, cfg.image_size[0], cfg.image_size[1]];
        Ok(ConvEnergy { convs, head_w, head_b, activation: cfg.activation, event, params })
    }

    /// The head's values for every output.
    ///
    /// # Shapes
    /// `x: [B, C, H, W]` → `[B, outputs]`.
    pub fn outputs(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for l in &self.convs {
            h = h.conv2d(&l.w.get(), Some(&l.b), [l.stride, l.stride], [1, 1], [1, 1], 1);
            h = self.activation.apply(&h);
        }
        h.flatten(1, -1).linear(&self.head_w.get(), Some(&self.head_b))
    }
}

impl EnergyModel for ConvEnergy {
    /// The one output, or the log-mean-exp of several.
    ///
    /// # Shapes
    /// `x: [B, C, H, W]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let g = self.outputs(x);
        match g.size()[1] {
            1 => g.squeeze_dim(-1),
            l => g.logsumexp([1i64], false) - (l as f64).ln(),
        }
    }

    fn event_shape(&self) -> Vec<i64> {
        self.event.clone()
    }

    fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.shallow_clone()).collect()
    }
}

/// Kept so `nn::Module` users can call the energy as a module: `forward(x) = f(x)`.
impl Module for ConvEnergy {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.f(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn output_shape_for_mnist_and_digits() {
        for (size, sn) in [([28, 28], false), ([8, 8], true)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = ConvConfig { image_size: size, spectral_norm: sn, ..Default::default() };
            let m = ConvEnergy::new(&vs.root(), &cfg).unwrap();
            let x = Tensor::randn([5, 1, size[0], size[1]], (Kind::Float, Device::Cpu));
            assert_eq!(m.f(&x).size(), vec![5]);
            assert_eq!(m.event_shape(), vec![1, size[0], size[1]]);
            assert_eq!(vs.trainable_variables().len(), m.parameters().len());
        }
    }

    #[test]
    fn several_outputs_share_the_trunk_and_f_is_their_log_mean_exp() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConvConfig { image_size: [8, 8], channels: vec![4, 6], ..Default::default() };
        let m = ConvEnergy::with_outputs(&vs.root(), &cfg, 4).unwrap();
        let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let g = Vec::<Vec<f64>>::try_from(m.outputs(&x).to_kind(Kind::Double)).unwrap();
        let f = Vec::<f64>::try_from(m.f(&x).to_kind(Kind::Double)).unwrap();
        for (row, fi) in g.iter().zip(&f) {
            assert_eq!(row.len(), 4);
            let lme = (row.iter().map(|v| v.exp()).sum::<f64>() / 4.0).ln();
            assert!((fi - lme).abs() < 1e-5, "{fi} vs {lme}");
        }
        // one output: the same parameters, in the same order, as `new` (same seed, same values)
        let (a, b) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
        tch::manual_seed(5);
        let one = ConvEnergy::with_outputs(&a.root(), &cfg, 1).unwrap();
        tch::manual_seed(5);
        let plain = ConvEnergy::new(&b.root(), &cfg).unwrap();
        assert_eq!(Vec::<f32>::try_from(one.f(&x)).unwrap(), Vec::<f32>::try_from(plain.f(&x)).unwrap());
        assert!(ConvEnergy::with_outputs(&vs.root(), &cfg, 0).is_err());
    }

    #[test]
    fn spectral_norm_converges_to_largest_singular_value() {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let w = p.var("w", &[6, 4], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let sn = SnWeight::new(&p, w.shallow_clone(), true);
        for _ in 0..50 {
            let _ = sn.get();
        }
        let normed = sn.get();
        let (_, s, _) = tch::no_grad(|| normed.svd(true, false));
        let top = f64::try_from(s.get(0)).unwrap();
        assert!((top - 1.0).abs() < 1e-3, "largest singular value after normalisation: {top}");
    }
}
