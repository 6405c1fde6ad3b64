//! [`Arch::Mlp`]: fully connected layers on the flattened input.

use super::net::{layer_params, sigma_features, Head, Layer, DENOISER_SIGMA_FLOOR};
use super::{Arch, ConditionalConfig, SigmaInput};
use crate::energy::Activation;
use tch::{nn, Tensor};

/// `f(x, y; σ) = ⟨e_y, h(x, σ; y)⟩ + c_y` with `h` fully connected layers on the flattened `x` (and, when
/// noise-conditional, σ or `ln σ / 4` as one more input feature, see [`SigmaInput`]), each with the label's
/// FiLM (and with [`SigmaInput::LogFilm`] the noise level's FiLM, σ floored at 10⁻³).
#[derive(Debug)]
pub(super) struct MlpNet {
    /// One per width, under `l{i}`.
    layers: Vec<Layer>,
    head: Head,
    activation: Activation,
    noise_conditional: bool,
    sigma_input: SigmaInput,
}

impl MlpNet {
    /// The layers for inputs of shape `event` and `labels` labels.
    pub(super) fn new(path: &nn::Path, cfg: &ConditionalConfig, event: &[i64], labels: i64) -> Self {
        debug_assert_eq!(cfg.arch, Arch::Mlp);
        let mut layers = Vec::new();
        let mut prev: i64 = event.iter().product::<i64>() + i64::from(cfg.noise_conditional);
        for (i, &w) in cfg.widths.iter().enumerate() {
            let p = path / format!("l{i}");
            let layer = Layer::linear(&p, prev, w, cfg.film, labels);
            layers.push(match cfg.sigma_input {
                SigmaInput::LogFilm => layer.with_sigma_film(&p),
                SigmaInput::Raw => layer,
            });
            prev = w;
        }
        let head = Head::new(path, labels, prev);
        MlpNet {
            layers,
            head,
            activation: cfg.activation,
            noise_conditional: cfg.noise_conditional,
            sigma_input: cfg.sigma_input,
        }
    }

    /// Layer by layer, then the head.
    pub(super) fn params(&self) -> Vec<Tensor> {
        let mut p = layer_params(&self.layers);
        p.extend(self.head.params());
        p
    }

    /// # Shapes
    /// `x: [B, *event]`, `labels: [B]`, `sig: [B]` (the kind of `x`) → `[B]`.
    pub(super) fn forward(&self, x: &Tensor, labels: &Tensor, sig: &Tensor) -> Tensor {
        let b = x.size()[0];
        let mut h = x.reshape([b, -1]);
        let mut phi = None;
        if self.noise_conditional {
            let feature = match self.sigma_input {
                SigmaInput::Raw => sig.shallow_clone(),
                SigmaInput::LogFilm => {
                    let log_s = sig.clamp_min(DENOISER_SIGMA_FLOOR).log();
                    phi = Some(sigma_features(&log_s));
                    log_s / 4.0
                }
            };
            h = Tensor::cat(&[h, feature.view([b, 1])], 1);
        }
        for layer in &self.layers {
            h = layer.film(h.linear(&layer.w, Some(&layer.b)), labels, false);
            h = layer.sigma_film(h, phi.as_ref());
            h = self.activation.apply(&h);
        }
        self.head.apply(&h.reshape([b, -1]), labels, x.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConditionalNet, View};
    use super::*;
    use crate::energy::EnergyModel;
    use tch::{Device, Kind};

    fn set(vs: &nn::VarStore, name: &str, values: &[f64]) {
        let v = &vs.variables()[name];
        tch::no_grad(|| {
            let t = Tensor::from_slice(values).to_kind(Kind::Float).reshape(v.size());
            v.shallow_clone().copy_(&t);
        });
    }

    #[test]
    fn log_film_feeds_ln_sigma_over_4_and_film_of_its_fourier_features() {
        // one hidden unit of width 1 (SiLU), no label FiLM: by hand,
        // u = w·(x1, x2, ln σ/4) + b, u ← u·(1 + γ(φ)) + β(φ), f = e·silu(u) + c, φ = (ln σ/4, sin, cos of ln σ, 2 ln σ)
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ConditionalConfig {
            widths: vec![1],
            film: false,
            noise_conditional: true,
            sigma_input: SigmaInput::LogFilm,
            ..Default::default()
        };
        let m = ConditionalNet::new(&vs.root(), &cfg, &[2], &["only"]).unwrap();
        let (w, b, e, c) = ([0.5, -1.0, 2.0], 0.25, 1.5, -0.3);
        let film = [0.1, -0.2, 0.3, 0.05, -0.1, 0.2, 0.0, 0.4, -0.3, 0.1]; // [5 features, (γ, β)]
        set(&vs, "l0.weight", &w);
        set(&vs, "l0.bias", &[b]);
        set(&vs, "l0.film_sigma", &film);
        set(&vs, "head.embedding", &[e]);
        set(&vs, "head.bias", &[c]);
        let (x, sigma) = ([0.3, -0.7], 0.2f64);
        let l = sigma.ln();
        let phi = [l / 4.0, l.sin(), l.cos(), (2.0 * l).sin(), (2.0 * l).cos()];
        let (gamma, beta): (f64, f64) = (
            phi.iter().enumerate().map(|(i, p)| p * film[2 * i]).sum(),
            phi.iter().enumerate().map(|(i, p)| p * film[2 * i + 1]).sum(),
        );
        let u = (w[0] * x[0] + w[1] * x[1] + w[2] * l / 4.0 + b) * (1.0 + gamma) + beta;
        let want = (e * u / (1.0 + (-u).exp()) + c) / sigma;
        let xt = Tensor::from_slice(&x).to_kind(Kind::Float).view([1, 2]);
        let got = f64::try_from(m.at_noise(sigma).unwrap().f(&xt).get(0)).unwrap();
        assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "f_σ = {got}, by hand {want}");
        // without σ the net is read at σ = 0, floored at 10⁻³ for the logarithm: finite
        assert!(f64::try_from(m.f(&xt).get(0)).unwrap().is_finite());
    }

    #[test]
    fn only_a_noise_conditional_mlp_takes_log_film_and_raw_is_left_out_of_saved_configs() {
        let vs = nn::VarStore::new(Device::Cpu);
        for cfg in [
            ConditionalConfig { sigma_input: SigmaInput::LogFilm, ..Default::default() },
            ConditionalConfig {
                arch: Arch::Conv,
                noise_conditional: true,
                sigma_input: SigmaInput::LogFilm,
                view: View::Full,
                ..Default::default()
            },
        ] {
            let e = ConditionalNet::new(&vs.root(), &cfg, &[2], &["a"]).unwrap_err().to_string();
            assert!(e.contains("conditional.sigma_input"), "{e}");
        }
        let raw = serde_json::to_string(&ConditionalConfig::default()).unwrap();
        assert!(!raw.contains("sigma_input"), "{raw}");
        let cfg = ConditionalConfig { noise_conditional: true, sigma_input: SigmaInput::LogFilm, ..Default::default() };
        let back: ConditionalConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
}
