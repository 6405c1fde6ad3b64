//! Denoising score matching over a ladder of noise levels for a noise-conditional model read as
//! `f_σ(x | y) = f(x | y; σ) / σ` (the scaling of NCSNv2; σ reaches the network through
//! [`EnergyModel::f_given`]): with `x̃ = x + σz`, `z ~ N(0, I)`, σ uniform over the levels, the loss is
//! `E ½‖∇ₓf(x̃ | y; σ) + z‖²`, i.e. σ²-weighted DSM of `f_σ` against the score of the data blurred by
//! `N(0, σ²)`. No sampling during training; sample with [`crate::sampler::AnnealedLangevin`]. A composition of
//! such experts at a common σ is again `Σ fᵢ / σ` ([`EnergyModel::at_noise`]).
//!
//! Optional per-element weights ([`PixelWeights`]) turn it into `E ½ Σᵢ wᵢ (∂ᵢf(x̃ | y; σ) + zᵢ)²`. For a model
//! that is a sum of one shared function over pixels (the per-pixel view of a conditional net), weights that
//! depend only on each clean pixel train it on the pixel values reweighted by them: [`balance_lit_pixels`]
//! counts lit and black pixels equally.

use super::{LossOutput, Objective};
use crate::batch::Batch;
use crate::data::shapes::foreground;
use crate::energy::EnergyModel;
use crate::error::{invalid, Result};
use crate::sampler::NoiseScales;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Weights on the squared error of every element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PixelWeights {
    /// Every element weighs 1.
    #[default]
    None,
    /// Lit and black pixels of images `[C, H, W]` weigh the same in total ([`balance_lit_pixels`]), given the
    /// training data's share of lit pixels.
    BalanceLit {
        /// The share of lit pixels in the training images, in (0, 1) ([`lit_share`]).
        lit_share: f64,
    },
}

/// Configuration of [`NoiseDsm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseDsmConfig {
    /// The noise levels.
    pub scales: NoiseScales,
    /// Per-element weights.
    pub weights: PixelWeights,
}

impl NoiseDsmConfig {
    /// Checks the levels and the weights.
    pub fn validate(&self) -> Result<()> {
        self.scales.validate()?;
        if let PixelWeights::BalanceLit { lit_share } = self.weights {
            if !(lit_share > 0.0 && lit_share < 1.0) {
                return Err(invalid(
                    "noise_dsm.weights.lit_share",
                    format!(
                        "must be in (0, 1): the training images need some lit and some black pixels, got {lit_share}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The noise-conditional DSM objective.
#[derive(Debug, Clone)]
pub struct NoiseDsm {
    sigmas: Vec<f64>,
    weights: PixelWeights,
}

impl NoiseDsm {
    /// Builds the objective after validating the config.
    pub fn new(cfg: NoiseDsmConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(NoiseDsm { sigmas: cfg.scales.sigmas(), weights: cfg.weights })
    }
}

impl Objective for NoiseDsm {
    /// # Shapes
    /// `batch.x: [B, *event]`, `batch.labels: [B]` (optional) → `loss: []`.
    fn loss(&mut self, m: &dyn EnergyModel, batch: &Batch) -> Result<LossOutput> {
        batch.check(&m.event_shape(), m.num_labels(), "data batch")?;
        let x = &batch.x;
        let weights = match self.weights {
            PixelWeights::None => None,
            PixelWeights::BalanceLit { lit_share } => Some(balance_lit_pixels(x, lit_share)?),
        };
        let b = x.size()[0];
        let mut bshape = vec![b];
        bshape.extend(std::iter::repeat_n(1, x.dim() - 1));
        let sig = Tensor::from_slice(&self.sigmas).to_kind(x.kind()).to_device(x.device());
        let pick = Tensor::randint(self.sigmas.len() as i64, [b], (Kind::Int64, x.device()));
        let sigma = sig.index_select(0, &pick).view(bshape.as_slice());
        let z = x.randn_like();
        let xt = (x.detach() + &sigma * &z).set_requires_grad(true);
        let f = m.f_given(&xt, batch.labels.as_ref(), Some(&sigma.view([b])));
        let g = Tensor::run_backward(&[f.sum(f.kind())], &[&xt], true, true).remove(0);
        let mut sq = (&g + &z).square();
        if let Some(w) = &weights {
            sq *= w;
        }
        let per = sq.reshape([b, -1]).sum_dim_intlist(1, false, x.kind()) * 0.5;
        let loss = per.mean(x.kind());
        let gn = tch::no_grad(|| g.reshape([b, -1]).norm_scalaropt_dim(2.0, [1], false).mean(Kind::Double));
        Ok(LossOutput { loss, metrics: vec![("grad_norm_x", f64::try_from(gn)?)] })
    }

    fn name(&self) -> String {
        "noise_dsm".into()
    }
}

/// Per-pixel weights that count lit and black pixels equally: a pixel is lit when its brightest channel
/// exceeds ½; with `lit_share` the share of lit pixels in the training data, lit pixels weigh
/// `1 / (2·lit_share)` and black ones `1 / (2·(1 - lit_share))` (mean weight 1 over the data). A per-pixel
/// colour expert trained with them says which colour the lit pixels have and leaves how many there are (the
/// background's share, a matter of shape and size) to the other experts: with the data's own share, its
/// mode is the all-black image.
///
/// # Shapes
/// `x: [B, C, H, W]` → `[B, 1, H, W]`.
pub fn balance_lit_pixels(x: &Tensor, lit_share: f64) -> Result<Tensor> {
    if x.dim() != 4 {
        return Err(invalid("balance_lit_pixels", format!("need images [B, C, H, W], got {:?}", x.size())));
    }
    if !(lit_share > 0.0 && lit_share < 1.0) {
        return Err(invalid("balance_lit_pixels", format!("lit share must be in (0, 1), got {lit_share}")));
    }
    let lit = foreground(x).to_kind(x.kind());
    Ok(&lit * (0.5 / lit_share) + (1.0 - &lit) * (0.5 / (1.0 - lit_share)))
}

/// The share of lit pixels (brightest channel above ½) in images `[N, C, H, W]`.
pub fn lit_share(x: &Tensor) -> f64 {
    f64::try_from(foreground(x).to_kind(Kind::Double).mean(Kind::Double)).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::test_util::Blurred;
    use tch::Device;

    fn dsm(scales: &NoiseScales, weights: PixelWeights) -> NoiseDsm {
        NoiseDsm::new(NoiseDsmConfig { scales: scales.clone(), weights }).unwrap()
    }

    #[test]
    fn dsm_loss_of_the_blurred_density_has_its_closed_form() {
        // With ∇g = -σ(x̃ - θ)/(s² + σ²) and x̃ = θ + s ε + σ z, E ½(∇g + z)² = ½ s²/(s² + σ²) per level.
        tch::manual_seed(3);
        let (s2, n) = (0.25, 40_000i64);
        let m = Blurred { theta: vec![-1.0, 2.0], s2 };
        let scales = NoiseScales { sigma_max: 1.0, sigma_min: 0.1, levels: 4 };
        let labels = Tensor::from_slice(&[0i64, 1]).repeat([n / 2]);
        let th = Tensor::from_slice(&[-1.0f64, 2.0]).index_select(0, &labels);
        let x = (Tensor::randn([n], (Kind::Double, Device::Cpu)) * s2.sqrt() + th).unsqueeze(1);
        let batch = Batch::labelled(x, labels);
        let out = dsm(&scales, PixelWeights::None).loss(&m, &batch).unwrap();
        let got = f64::try_from(&out.loss).unwrap();
        let want = scales.sigmas().iter().map(|sg| 0.5 * s2 / (s2 + sg * sg)).sum::<f64>() / 4.0;
        // per-sample terms are ½·(scaled χ²₁) with sd < 0.5: sd of the mean < 0.0025
        assert!((got - want).abs() < 0.012, "DSM loss {got}, closed form {want}");
        // a model with the wrong scale has a larger loss
        let wrong = Blurred { theta: vec![-1.0, 2.0], s2: 4.0 * s2 };
        let worse = f64::try_from(&dsm(&scales, PixelWeights::None).loss(&wrong, &batch).unwrap().loss).unwrap();
        assert!(worse > got + 0.02, "{worse} vs {got}");
    }

    /// One pixel `[1, 1, 1]` that is 1 (lit) with probability `pi` and 0 otherwise, blurred by σ: `f` is
    /// `σ · log(π N(x; 1, σ²) + (1 - π) N(x; 0, σ²))`, so `f_σ = f/σ` is the exact blurred log-density
    /// (without a σ, at σ = 0.05).
    struct LitPixel {
        pi: f64,
    }
    impl EnergyModel for LitPixel {
        fn f(&self, x: &Tensor) -> Tensor {
            self.f_given(x, None, None)
        }
        fn f_given(&self, x: &Tensor, _labels: Option<&Tensor>, sigma: Option<&Tensor>) -> Tensor {
            let default = Tensor::full([x.size()[0]], 0.05, (x.kind(), x.device()));
            let x = x.reshape([-1]);
            let s2 = sigma.unwrap_or(&default).to_kind(x.kind()).square();
            let lit = (&x - 1.0).square() * -0.5 / &s2 + self.pi.ln();
            let black = x.square() * -0.5 / &s2 + (1.0 - self.pi).ln();
            Tensor::stack(&[lit, black], 1).logsumexp([1], false) * s2.sqrt()
        }
        fn label_names(&self) -> Vec<String> {
            vec!["a".into()]
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![1, 1, 1]
        }
    }

    #[test]
    fn balanced_dsm_is_minimised_by_the_half_lit_pixel_and_plain_dsm_by_the_data() {
        // Data: a pixel lit with probability 0.2. Plain DSM prefers the model with π = 0.2, DSM with the
        // balancing weights (lit 2.5, black 0.625) the one with π = 0.5; the same noise for every model
        // (measured: 0.179 against 0.242 plain, 0.242 against 0.314 balanced).
        let n = 100_000i64;
        tch::manual_seed(8);
        let x = Tensor::rand([n, 1, 1, 1], (Kind::Double, Device::Cpu)).lt(0.2).to_kind(Kind::Double);
        let share = lit_share(&x);
        assert!((share - 0.2).abs() < 0.005, "{share}");
        let w = balance_lit_pixels(&x, share).unwrap();
        assert_eq!(w.size(), vec![n, 1, 1, 1]);
        assert!((f64::try_from(w.mean(Kind::Double)).unwrap() - 1.0).abs() < 1e-9);
        let batch = Batch::labelled(x.shallow_clone(), Tensor::zeros([n], (Kind::Int64, Device::Cpu)));
        let scales = NoiseScales { sigma_max: 0.4, sigma_min: 0.4, levels: 1 };
        let loss = |pi: f64, weights: PixelWeights| {
            tch::manual_seed(9);
            f64::try_from(&dsm(&scales, weights).loss(&LitPixel { pi }, &batch).unwrap().loss).unwrap()
        };
        let balanced = PixelWeights::BalanceLit { lit_share: share };
        let (plain_data, plain_half) = (loss(0.2, PixelWeights::None), loss(0.5, PixelWeights::None));
        let (bal_data, bal_half) = (loss(0.2, balanced.clone()), loss(0.5, balanced));
        assert!(plain_data < plain_half - 0.03, "plain DSM: π = 0.2 {plain_data}, π = 0.5 {plain_half}");
        assert!(bal_half < bal_data - 0.03, "balanced DSM: π = 0.5 {bal_half}, π = 0.2 {bal_data}");
        // and the weights are checked: the share when configured, images when used
        for bad in [0.0, 1.0, f64::NAN] {
            let cfg = NoiseDsmConfig { scales: scales.clone(), weights: PixelWeights::BalanceLit { lit_share: bad } };
            assert!(NoiseDsm::new(cfg).unwrap_err().to_string().contains("(0, 1)"));
        }
        let flat = Batch::new(Tensor::zeros([4, 1], (Kind::Double, Device::Cpu)));
        let e = dsm(&scales, PixelWeights::BalanceLit { lit_share: 0.2 })
            .loss(&Blurred { theta: vec![0.0], s2: 1.0 }, &flat)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[B, C, H, W]"), "{e}");
        assert!(balance_lit_pixels(&x, 0.0).unwrap_err().to_string().contains("(0, 1)"));
        assert!(balance_lit_pixels(&x.view([n, 1]), 0.2).unwrap_err().to_string().contains("[B, C, H, W]"));
    }
}
