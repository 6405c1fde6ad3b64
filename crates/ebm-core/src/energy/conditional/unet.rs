//! [`Arch::Unet`]: a U-Net denoiser energy, preconditioned as in EDM, on the view of an image.

use super::net::{layer_params, sigma_features, view_of, Layer, DENOISER_SIGMA_FLOOR};
use super::{Arch, ConditionalConfig, View};
use crate::energy::Activation;
use crate::error::{invalid, Result};
use tch::{nn, Tensor};

/// The U-Net energy of [`Arch::Unet`] (always noise-conditional). Layers, each with the label's FiLM and a
/// FiLM by the features of `ln σ`: `in`, `e1` at full resolution, `down1`, `e2` at ½, `down2`, `mid` at ¼,
/// `up2`, `up1` after nearest upsampling with skip connections, and the output layer `out`; for
/// [`View::Pixel`], three 1×1 layers `in`, `mid`, `mid2` and `out`.
#[derive(Debug)]
pub(super) struct UnetNet {
    /// In the order above.
    layers: Vec<Layer>,
    activation: Activation,
    view: View,
    /// `C` of the images (the channel-sum view's noise is `√C·σ`).
    channels: i64,
}

impl UnetNet {
    /// The layers for images of shape `event = [C, H, W]`, `widths = [w0, w1, w2]` and `labels` labels.
    pub(super) fn new(path: &nn::Path, cfg: &ConditionalConfig, event: &[i64], labels: i64) -> Result<Self> {
        debug_assert_eq!(cfg.arch, Arch::Unet);
        let ([c, _, _], [w0, w1, w2]) = (event, cfg.widths.as_slice()) else {
            return Err(invalid(
                "conditional",
                format!("unet needs event [C, H, W] and widths [w0, w1, w2], got {event:?} and {:?}", cfg.widths),
            ));
        };
        if !cfg.noise_conditional {
            return Err(invalid("conditional.noise_conditional", "arch = unet needs noise_conditional = true"));
        }
        let c_view = if cfg.view == View::ChannelSum { 1 } else { *c };
        let (f, l) = (cfg.film, labels);
        let mut layers = Vec::new();
        if cfg.view == View::Pixel {
            for (name, ci, co) in [("in", c_view + 1, *w0), ("mid", *w0, *w1), ("mid2", *w1, *w2)] {
                let p = path / name;
                layers.push(Layer::new(&p, ci, co, 1, 1, f, l).with_sigma_film(&p));
            }
            layers.push(Layer::new(&(path / "out"), *w2, c_view, 1, 1, false, l));
        } else {
            let specs: [(&str, i64, i64, i64, i64); 8] = [
                ("in", c_view + 1, *w0, 3, 1),
                ("e1", *w0, *w0, 3, 1),
                ("down1", *w0, *w1, 3, 2),
                ("e2", *w1, *w1, 3, 1),
                ("down2", *w1, *w2, 3, 2),
                ("mid", *w2, *w2, 3, 1),
                ("up2", *w2 + *w1, *w1, 3, 1),
                ("up1", *w1 + *w0, *w0, 3, 1),
            ];
            for (name, ci, co, k, st) in specs {
                let p = path / name;
                layers.push(Layer::new(&p, ci, co, k, st, f, l).with_sigma_film(&p));
            }
            layers.push(Layer::new(&(path / "out"), *w0, c_view, 3, 1, false, l));
        }
        Ok(UnetNet { layers, activation: cfg.activation, view: cfg.view, channels: *c })
    }

    /// Layer by layer.
    pub(super) fn params(&self) -> Vec<Tensor> {
        layer_params(&self.layers)
    }

    /// The energy of the view `v` of `x` at noise levels `sig`.
    ///
    /// # Shapes
    /// `x: [B, C, H, W]`, `labels: [B]`, `sig: [B]` (the kind of `x`) → `[B]`.
    pub(super) fn forward(&self, x: &Tensor, labels: &Tensor, sig: &Tensor) -> Tensor {
        const SIGMA_DATA: f64 = 0.5;
        let v = &view_of(x, self.view);
        let sz = v.size();
        let b = sz[0];
        // the view's own noise level: noise σ on each of C channels is noise √C·σ on their sum
        let view_scale = match self.view {
            View::ChannelSum => (self.channels as f64).sqrt(),
            View::Full | View::Pixel => 1.0,
        };
        let sig = sig.clamp_min(DENOISER_SIGMA_FLOOR);
        let s = &sig * view_scale;
        let norm = (s.square() + SIGMA_DATA * SIGMA_DATA).sqrt();
        let c_in = norm.reciprocal().view([b, 1, 1, 1]);
        let c_skip = (norm.square().reciprocal() * (SIGMA_DATA * SIGMA_DATA)).view([b, 1, 1, 1]);
        let c_out = (&s * SIGMA_DATA / &norm).view([b, 1, 1, 1]);
        let log_s = s.log();
        let phi = sigma_features(&log_s);
        let chan = (&log_s / 4.0).view([b, 1, 1, 1]).expand([b, 1, sz[2], sz[3]], false);
        let l = &self.layers;
        let act = |t: Tensor| self.activation.apply(&t);
        let conv = |i: usize, h: &Tensor| act(l[i].conv_sigma(h, labels, Some(&phi)));
        let h0 = Tensor::cat(&[v * &c_in, chan], 1);
        let out = if self.view == View::Pixel {
            l[3].conv(&conv(2, &conv(1, &conv(0, &h0))), labels)
        } else {
            self.trunk(&h0, labels, &phi)
        };
        let d = v * c_skip + out * c_out;
        let sq = (v - d).square().reshape([b, -1]).sum_dim_intlist(1, false, v.kind());
        sq * (-0.5 / (view_scale * view_scale)) / sig
    }

    /// The U-Net proper: `h0: [B, C_v + 1, H, W]` → `[B, C_v, H, W]`.
    fn trunk(&self, h0: &Tensor, labels: &Tensor, phi: &Tensor) -> Tensor {
        let l = &self.layers;
        let sz = h0.size();
        let act = |t: Tensor| self.activation.apply(&t);
        let conv = |i: usize, h: &Tensor| act(l[i].conv_sigma(h, labels, Some(phi)));
        let e1 = conv(1, &conv(0, h0));
        let e2 = conv(3, &conv(2, &e1));
        let mid = conv(5, &conv(4, &e2));
        let [h2, w2] = [e2.size()[2], e2.size()[3]];
        let u2 = conv(6, &Tensor::cat(&[mid.upsample_nearest2d([h2, w2], None, None), e2], 1));
        let u1 = conv(7, &Tensor::cat(&[u2.upsample_nearest2d([sz[2], sz[3]], None, None), e1], 1));
        l[8].conv(&u1, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConditionalNet;
    use super::*;
    use crate::batch::Batch;
    use crate::energy::EnergyModel;
    use crate::objective::{NoiseDsm, NoiseDsmConfig, Objective, PixelWeights};
    use crate::sampler::NoiseScales;
    use tch::{Device, Kind};

    #[test]
    fn unet_is_noise_conditional_colour_blind_on_the_channel_sum_and_checks_its_config() {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConditionalConfig {
            arch: Arch::Unet,
            widths: vec![4, 6, 8],
            noise_conditional: true,
            view: View::ChannelSum,
            ..Default::default()
        };
        let m = ConditionalNet::new(&vs.root(), &cfg, &[3, 8, 8], &["a", "b"]).unwrap();
        let x = Tensor::rand([4, 3, 8, 8], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let sigma = Tensor::from_slice(&[0.05f32, 0.2, 0.5, 1.0]);
        let f = m.f_given(&x, Some(&labels), Some(&sigma));
        assert_eq!(f.size(), vec![4]);
        assert!(bool::try_from(f.le(0.0).all()).unwrap());
        // blind to colour: permuting the channels keeps the channel sum and so f
        let perm = x.index_select(1, &Tensor::from_slice(&[2i64, 0, 1]));
        let fp = m.f_given(&perm, Some(&labels), Some(&sigma));
        assert!(f64::try_from((&fp - &f).abs().max()).unwrap() < 1e-4);
        // every parameter is listed (the σ-FiLM ones too) and gets a gradient; after one step of training the
        // label and the noise level both change f
        assert_eq!(vs.trainable_variables().len(), m.parameters().len());
        let scales = NoiseScales { sigma_max: 1.0, sigma_min: 0.05, levels: 3 };
        let loss = NoiseDsm::new(NoiseDsmConfig { scales, weights: PixelWeights::None })
            .unwrap()
            .loss(&m, &Batch::labelled(x.shallow_clone(), labels.shallow_clone()))
            .unwrap()
            .loss;
        loss.backward();
        for p in m.parameters() {
            let g = p.grad();
            assert!(g.defined(), "a parameter of shape {:?} has no gradient", p.size());
            tch::no_grad(|| {
                let _ = p.shallow_clone().f_sub_(&(g * 0.1)).unwrap();
            });
        }
        let g = m.f_given(&x, Some(&labels), Some(&sigma));
        let other = m.f_given(&x, Some(&(1 - &labels)), Some(&sigma));
        let louder = m.f_given(&x, Some(&labels), Some(&(&sigma * 2.0)));
        assert!(f64::try_from((&other - &g).abs().max()).unwrap() > 1e-6);
        assert!(f64::try_from((&louder * 2.0 - &g).abs().max()).unwrap() > 1e-6);
        // the per-pixel variant is a sum over pixels: moving the pixels around leaves f as it is
        let pixel = ConditionalConfig { view: View::Pixel, ..cfg.clone() };
        let mp = ConditionalNet::new(&(vs.root() / "pixel"), &pixel, &[3, 8, 8], &["a", "b"]).unwrap();
        let fp = mp.f_given(&x, Some(&labels), Some(&sigma));
        let moved = mp.f_given(&x.flip([2, 3]).transpose(2, 3), Some(&labels), Some(&sigma));
        assert!(
            f64::try_from((&moved - &fp).abs().max()).unwrap() < 1e-3 * (1.0 + f64::try_from(fp.abs().max()).unwrap())
        );
        assert!(f64::try_from((&fp - &f).abs().max()).unwrap() > 1e-6);
        for (bad, msg) in [
            (ConditionalConfig { widths: vec![4, 6], ..cfg.clone() }, "[w0, w1, w2]"),
            (ConditionalConfig { noise_conditional: false, ..cfg.clone() }, "noise_conditional = true"),
        ] {
            let e = ConditionalNet::new(&vs.root(), &bad, &[3, 8, 8], &["a"]).unwrap_err().to_string();
            assert!(e.contains(msg), "{e}");
        }
    }

    #[test]
    fn unet_is_preconditioned_at_the_noise_level_of_its_view() {
        // with the output layer at zero, D = c_skip·v and f/σ = -‖(1 - c_skip) v‖² / 2σ_v², where the view's
        // noise level σ_v is √3·σ for the sum of 3 channels and σ for the full image
        for (view, c_view, scale) in [(View::ChannelSum, 1, 3f64.sqrt()), (View::Full, 3, 1.0), (View::Pixel, 3, 1.0)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = ConditionalConfig {
                arch: Arch::Unet,
                widths: vec![4, 6, 8],
                noise_conditional: true,
                view,
                ..Default::default()
            };
            let m = ConditionalNet::new(&vs.root(), &cfg, &[3, 8, 8], &["a"]).unwrap();
            for (name, t) in vs.variables() {
                if name.starts_with("out.") {
                    let _ = tch::no_grad(|| t.shallow_clone().zero_());
                }
            }
            let x = Tensor::rand([3, 3, 8, 8], (Kind::Float, Device::Cpu));
            let v = if c_view == 1 { x.sum_dim_intlist(1, true, Kind::Float) } else { x.shallow_clone() };
            for sigma in [0.05, 0.3, 1.0] {
                let got = m.f_given(
                    &x,
                    Some(&Tensor::zeros([3], (Kind::Int64, Device::Cpu))),
                    Some(&Tensor::full([3], sigma, (Kind::Float, Device::Cpu))),
                ) / sigma;
                let sv = scale * sigma;
                let c_skip = 0.25 / (sv * sv + 0.25);
                let want = v.square().sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
                    * (-(1.0 - c_skip).powi(2) / (2.0 * sv * sv));
                let err = f64::try_from((&got - &want).abs().max()).unwrap();
                assert!(
                    err < 1e-3 * f64::try_from(want.abs().max()).unwrap(),
                    "{view:?} σ {sigma}: {got:?} vs {want:?}"
                );
            }
        }
    }
}
