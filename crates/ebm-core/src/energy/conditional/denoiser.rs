//! [`Arch::Denoiser`]: a denoiser energy `f = -‖v - D(v, y, σ)‖² / 2 max(σ, 10⁻³)` on the view `v` of an image.

use super::net::{layer_params, sigma_channel, view_of, Layer, DENOISER_SIGMA_FLOOR};
use super::{Arch, ConditionalConfig, View};
use crate::energy::Activation;
use crate::error::{invalid, Result};
use tch::{nn, Tensor};

/// The denoiser energy of [`Arch::Denoiser`]. `D` is a small image-to-image network on the view (with σ as a
/// constant input channel when noise-conditional): a 1×1 path at full resolution (`pixel`), a stride-2 layer
/// and two 3×3 layers at half resolution (`down`, `low1`, `low2`), merged by a 1×1 layer (`merge`) and a 3×3
/// output layer (`out`); for [`View::Pixel`], three 1×1 layers (`pixel`, `pixel2`, `out`).
#[derive(Debug)]
pub(super) struct DenoiserNet {
    /// In the order above.
    layers: Vec<Layer>,
    activation: Activation,
    noise_conditional: bool,
    view: View,
}

impl DenoiserNet {
    /// The layers for images of shape `event = [C, H, W]`, `widths = [c_full, c_low]` and `labels` labels.
    pub(super) fn new(path: &nn::Path, cfg: &ConditionalConfig, event: &[i64], labels: i64) -> Result<Self> {
        debug_assert_eq!(cfg.arch, Arch::Denoiser);
        let ([c, _, _], [c_full, c_low]) = (event, cfg.widths.as_slice()) else {
            return Err(invalid(
                "conditional",
                format!(
                    "denoiser needs event [C, H, W] and widths [c_full, c_low], got {event:?} and {:?}",
                    cfg.widths
                ),
            ));
        };
        let c_view = if cfg.view == View::ChannelSum { 1 } else { *c };
        let c_in = c_view + i64::from(cfg.noise_conditional);
        let (f, l) = (cfg.film, labels);
        let mut layers = Vec::new();
        if cfg.view == View::Pixel {
            layers.push(Layer::new(&(path / "pixel"), c_in, *c_full, 1, 1, f, l));
            layers.push(Layer::new(&(path / "pixel2"), *c_full, *c_low, 1, 1, f, l));
            layers.push(Layer::new(&(path / "out"), *c_low, c_view, 1, 1, false, l));
        } else {
            layers.push(Layer::new(&(path / "pixel"), c_in, *c_full, 1, 1, f, l));
            layers.push(Layer::new(&(path / "down"), c_in, *c_low, 3, 2, f, l));
            layers.push(Layer::new(&(path / "low1"), *c_low, *c_low, 3, 1, f, l));
            layers.push(Layer::new(&(path / "low2"), *c_low, *c_low, 3, 1, f, l));
            layers.push(Layer::new(&(path / "merge"), *c_low + *c_full, *c_full, 1, 1, f, l));
            layers.push(Layer::new(&(path / "out"), *c_full, c_view, 3, 1, false, l));
        }
        Ok(DenoiserNet { layers, activation: cfg.activation, noise_conditional: cfg.noise_conditional, view: cfg.view })
    }

    /// Layer by layer.
    pub(super) fn params(&self) -> Vec<Tensor> {
        layer_params(&self.layers)
    }

    /// # Shapes
    /// `x: [B, C, H, W]`, `labels: [B]`, `sig: [B]` (the kind of `x`) → `[B]`.
    pub(super) fn forward(&self, x: &Tensor, labels: &Tensor, sig: &Tensor) -> Tensor {
        let b = x.size()[0];
        let v = view_of(x, self.view);
        let mut h = v.shallow_clone();
        if self.noise_conditional {
            h = Tensor::cat(&[h, sigma_channel(sig, x)], 1);
        }
        let act = |t: Tensor| self.activation.apply(&t);
        let l = &self.layers;
        let d = if self.view == View::Pixel {
            let m = act(l[1].conv(&act(l[0].conv(&h, labels)), labels));
            l[2].conv(&m, labels)
        } else {
            let pix = act(l[0].conv(&h, labels));
            let mut e = act(l[1].conv(&h, labels));
            e = act(l[2].conv(&e, labels));
            e = act(l[3].conv(&e, labels));
            let sz = x.size();
            let up = e.upsample_nearest2d([sz[2], sz[3]], None, None);
            let m = act(l[4].conv(&Tensor::cat(&[up, pix], 1), labels));
            l[5].conv(&m, labels)
        };
        let sq = (&v - d).square().reshape([b, -1]).sum_dim_intlist(1, false, x.kind());
        sq * -0.5 / sig.clamp_min(DENOISER_SIGMA_FLOOR)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{named_experts_at, ConditionalNet};
    use super::*;
    use crate::energy::EnergyModel;
    use tch::{Device, Kind};

    #[test]
    fn denoiser_and_noise_conditional_nets_have_the_right_shapes() {
        tch::manual_seed(6);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConditionalConfig {
            arch: Arch::Denoiser,
            widths: vec![4, 6],
            noise_conditional: true,
            ..Default::default()
        };
        let m = ConditionalNet::new(&vs.root(), &cfg, &[3, 7, 7], &["a", "b"]).unwrap();
        let x = Tensor::rand([5, 3, 7, 7], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1, 1]);
        let sigma = Tensor::full([5], 0.5, (Kind::Float, Device::Cpu));
        let f = m.f_given(&x, Some(&labels), Some(&sigma));
        assert_eq!(f.size(), vec![5]);
        // -‖x - D‖²/2σ ≤ 0, and σ enters: at σ = 0.25 the same D would double f, the σ channel changes D too
        assert!(bool::try_from(f.le(0.0).all()).unwrap());
        let f2 = m.f_given(&x, Some(&labels), Some(&(&sigma * 0.5)));
        assert!(f64::try_from((&f2 - &f * 2.0).abs().max()).unwrap() > 1e-6);
        assert_eq!(vs.trainable_variables().len(), m.parameters().len());
        let bad = ConditionalConfig { arch: Arch::Denoiser, widths: vec![4], ..Default::default() };
        assert!(ConditionalNet::new(&vs.root(), &bad, &[3, 7, 7], &["a"]).unwrap_err().to_string().contains("c_full"));
        let e = named_experts_at(&m, 0.0).err().unwrap().to_string();
        assert!(e.contains("sigma"), "{e}");
    }
}
