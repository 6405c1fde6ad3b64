//! Exact noisy experts of an image data set, for the views of [`super::conditional::View`]: the densities
//! that noise-conditional DSM converges to for a colour-blind (channel-sum) or a per-pixel expert. They
//! replace a learned expert in a composition to tell which expert limits it, and give compositions with a
//! known right answer in tests.
//!
//! Both are read as `f_σ` (already the log-density at noise level σ, like
//! [`super::conditional::NoisyConditioned`]), so they sum with learned experts at the same σ.

use super::EnergyModel;
use crate::error::{invalid, Result};
use tch::{Kind, Tensor};

/// `log p_σ(Σ_c x_c)` up to a constant, for the empirical distribution of the channel sums of a set of images
/// blurred by noise σ on every channel (noise of variance `C·σ²` on the sum): a colour-blind expert.
#[derive(Debug)]
pub struct EmpiricalChannelSum {
    /// Distinct channel sums `[M, H·W]`.
    views: Tensor,
    /// Log of each view's share of the images `[M]`.
    log_w: Tensor,
    event: Vec<i64>,
    sigma: f64,
}

impl EmpiricalChannelSum {
    /// From images `[N, C, H, W]` at noise level σ > 0.
    pub fn new(images: &Tensor, sigma: f64) -> Result<Self> {
        let s = images.size();
        if s.len() != 4 || s[0] < 1 {
            return Err(invalid("empirical.images", format!("need images [N, C, H, W] with N ≥ 1, got {s:?}")));
        }
        let sums = images.to_kind(Kind::Float).sum_dim_intlist(1, false, Kind::Float).reshape([s[0], -1]);
        let (views, _, counts) = sums.unique_dim(0, true, false, true);
        let log_w = (counts.to_kind(Kind::Float) / s[0] as f64).log();
        let me = EmpiricalChannelSum { views, log_w, event: s[1..].to_vec(), sigma: 1.0 };
        me.at(sigma)
    }

    /// The same images at another noise level σ > 0 (shares the tensors).
    pub fn at(&self, sigma: f64) -> Result<Self> {
        if !(sigma > 0.0) || !sigma.is_finite() {
            return Err(invalid("empirical.sigma", format!("must be > 0, got {sigma}")));
        }
        Ok(EmpiricalChannelSum {
            views: self.views.shallow_clone(),
            log_w: self.log_w.shallow_clone(),
            event: self.event.clone(),
            sigma,
        })
    }

    /// Number of distinct channel sums.
    pub fn num_views(&self) -> i64 {
        self.views.size()[0]
    }
}

impl EnergyModel for EmpiricalChannelSum {
    /// # Shapes
    /// `x: [B, C, H, W]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let var = self.event[0] as f64 * self.sigma * self.sigma;
        let views = self.views.to_device(x.device()).to_kind(x.kind());
        let v = x.sum_dim_intlist(1, false, x.kind()).reshape([b, -1]);
        let d2 = (v.unsqueeze(1) - views.unsqueeze(0)).square().sum_dim_intlist(2, false, x.kind());
        (d2 * (-0.5 / var) + self.log_w.to_device(x.device()).to_kind(x.kind()).unsqueeze(0)).logsumexp([1i64], false)
    }
    fn event_shape(&self) -> Vec<i64> {
        self.event.clone()
    }
    fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
        Ok(Box::new(self.at(sigma)?))
    }
}

/// `Σ_pixels log p_σ(x_pixel)` with every pixel black (probability `1 - on`) or of one colour `c`
/// (probability `on`), blurred by noise σ on each channel: a per-pixel colour expert.
#[derive(Debug)]
pub struct PixelMixture {
    /// `[1, C, 1, 1]`.
    colour: Tensor,
    on: f64,
    sigma: f64,
    event: Vec<i64>,
}

impl PixelMixture {
    /// Pixels of `colour` (one value per channel) with probability `on ∈ (0, 1)` on images `[C, H, W]`.
    pub fn new(colour: &[f64], on: f64, sigma: f64, event: &[i64]) -> Result<Self> {
        if event.len() != 3 || event[0] != colour.len() as i64 {
            return Err(invalid(
                "pixel_mixture",
                format!("need an event [C, H, W] with C = {} colour channels, got {event:?}", colour.len()),
            ));
        }
        if !(on > 0.0 && on < 1.0) {
            return Err(invalid("pixel_mixture.on", format!("must be in (0, 1), got {on}")));
        }
        if !(sigma > 0.0) || !sigma.is_finite() {
            return Err(invalid("pixel_mixture.sigma", format!("must be > 0, got {sigma}")));
        }
        let c = Tensor::from_slice(colour).to_kind(Kind::Float).view([1, -1, 1, 1]);
        Ok(PixelMixture { colour: c, on, sigma, event: event.to_vec() })
    }

    /// The same mixture at another noise level σ > 0.
    pub fn at(&self, sigma: f64) -> Result<Self> {
        let colour = Vec::<f64>::try_from(self.colour.to_kind(Kind::Double).flatten(0, -1))?;
        PixelMixture::new(&colour, self.on, sigma, &self.event)
    }
}

impl EnergyModel for PixelMixture {
    /// # Shapes
    /// `x: [B, C, H, W]` → `[B]`.
    fn f(&self, x: &Tensor) -> Tensor {
        let k = -0.5 / (self.sigma * self.sigma);
        let colour = self.colour.to_device(x.device()).to_kind(x.kind());
        let black = x.square().sum_dim_intlist(1, false, x.kind()) * k + (1.0 - self.on).ln();
        let lit = (x - colour).square().sum_dim_intlist(1, false, x.kind()) * k + self.on.ln();
        Tensor::stack(&[black, lit], 0).logsumexp([0i64], false).sum_dim_intlist(&[1i64, 2][..], false, x.kind())
    }
    fn event_shape(&self) -> Vec<i64> {
        self.event.clone()
    }
    fn at_noise(&self, sigma: f64) -> Result<Box<dyn EnergyModel + '_>> {
        Ok(Box::new(self.at(sigma)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::score;
    use tch::Device;

    #[test]
    fn channel_sum_expert_is_the_blurred_empirical_density_of_the_sums() {
        // two images [2, 1, 2] whose channel sums are [1, 0] and [0, 2] (the second twice)
        let a = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0]).view([1, 2, 1, 2]);
        let b = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0]).view([1, 2, 1, 2]);
        let imgs = Tensor::cat(&[&a, &b, &b], 0);
        let e = EmpiricalChannelSum::new(&imgs, 0.5).unwrap();
        assert_eq!(e.num_views(), 2);
        let x = Tensor::from_slice(&[0.3f32, 0.2, 0.4, 0.1]).view([1, 2, 1, 2]); // sums [0.7, 0.3]
        let var = 2.0 * 0.25; // two channels, σ = ½
        let d_a = (0.7f64 - 1.0).powi(2) + 0.3f64.powi(2);
        let d_b = 0.7f64.powi(2) + (0.3f64 - 2.0).powi(2);
        let want = ((1.0 / 3.0) * (-d_a / (2.0 * var)).exp() + (2.0 / 3.0) * (-d_b / (2.0 * var)).exp()).ln();
        let got = f64::try_from(e.f(&x)).unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // colour-blind: moving mass between channels changes nothing
        let swapped = x.flip([1]);
        assert!((f64::try_from(e.f(&swapped)).unwrap() - got).abs() < 1e-5);
        assert!(EmpiricalChannelSum::new(&imgs, 0.0).unwrap_err().to_string().contains("sigma"));
        assert!(EmpiricalChannelSum::new(&x.view([2, 2]), 1.0).unwrap_err().to_string().contains("[N, C, H, W]"));
        assert!(e
            .try_f(&Tensor::zeros([1, 3, 1, 2], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string()
            .contains("[B, 2, 1, 2]"));
    }

    #[test]
    fn pixel_mixture_score_points_to_the_nearer_of_black_and_the_colour() {
        let e = PixelMixture::new(&[0.0, 0.0, 1.0], 0.5, 0.1, &[3, 1, 2]).unwrap();
        // one pixel near blue, one near black: at small σ the score is (target - x)/σ²
        let x = Tensor::from_slice(&[0.0f32, 0.05, 0.0, 0.0, 0.9, 0.1]).view([1, 3, 1, 2]).to_kind(Kind::Double);
        let g = score(&e, &x, false).unwrap().grad;
        let want = Tensor::from_slice(&[0.0f64, -0.05, 0.0, 0.0, 0.1, -0.1]).view([1, 3, 1, 2]) / 0.01;
        let err = f64::try_from((&g - &want).abs().max()).unwrap();
        assert!(err < 1e-3, "score {g:?}");
        // f is the sum over pixels of the two-component log-density
        let f = f64::try_from(e.f(&x)).unwrap();
        let comp = |d2: f64, p: f64| p.ln() - d2 / (2.0 * 0.01);
        let lse = |a: f64, b: f64| a.max(b) + (-(a - b).abs()).exp().ln_1p();
        let want_f = lse(comp(0.81, 0.5), comp(0.01, 0.5)) + lse(comp(0.0125, 0.5), comp(0.8125, 0.5));
        assert!((f - want_f).abs() < 1e-6, "{f} vs {want_f}");
        for (colour, on, sigma, event, msg) in [
            (vec![0.0, 1.0], 0.5, 0.1, vec![3, 1, 2], "colour channels"),
            (vec![0.0, 0.0, 1.0], 1.0, 0.1, vec![3, 1, 2], "(0, 1)"),
            (vec![0.0, 0.0, 1.0], 0.5, -1.0, vec![3, 1, 2], "sigma"),
        ] {
            assert!(PixelMixture::new(&colour, on, sigma, &event).unwrap_err().to_string().contains(msg));
        }
    }
}
