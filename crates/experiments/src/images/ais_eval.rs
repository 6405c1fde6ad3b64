//! The AIS evaluation of `exp_images`: the start distribution (`eval.ais.base`) and the test log-likelihood
//! of the model on the data box, with its spread and the base's own test log-likelihood beside it.

use super::config::ImagesConfig;
use super::report::AisReport;
use anyhow::{bail, Result};
use ebm_core::ais::{ais, mean_log_likelihood, AisBase, BoxGaussians};
use ebm_core::data::images::ImageSet;
use ebm_core::energy::EnergyModel;
use ebm_core::eval::f_of;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind};

/// Which mixture [`AisBaseSetting::FittedGaussian`] fits to the training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseComponents {
    /// One per-pixel Gaussian for all images.
    #[default]
    One,
    /// One per class (weights: the class shares; needs labels).
    PerClass,
    /// One per training image, centred on it with sd `min_std` in every pixel: a kernel density estimate
    /// (`N` components: each AIS step costs `O(chains · N · D)` more).
    PerImage,
}

/// The AIS start distribution, on the data box `[low, high]^D` (`eval.ais.base`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AisBaseSetting {
    /// Uniform on the box: `{ kind = "uniform" }`.
    Uniform,
    /// Per-pixel Gaussians fitted to the training images and truncated to the box (exact normaliser and
    /// samples), so that the path starts near the data: `{ kind = "fitted_gaussian", components = "per_class",
    /// min_std = 0.05, std_scale = 1.0 }`.
    FittedGaussian {
        /// `"one"`, `"per_class"` or `"per_image"` (see [`BaseComponents`]).
        #[serde(default)]
        components: BaseComponents,
        /// Floor on each pixel's standard deviation (constant pixels, like the digits' corners, have none).
        #[serde(default = "default_min_std")]
        min_std: f64,
        /// Factor on the fitted standard deviations (> 1 widens the base).
        #[serde(default = "default_std_scale")]
        std_scale: f64,
    },
}

fn default_min_std() -> f64 {
    0.05
}

fn default_std_scale() -> f64 {
    1.0
}

impl AisBaseSetting {
    /// Checks the fitted base's numbers.
    pub fn validate(&self) -> Result<()> {
        if let AisBaseSetting::FittedGaussian { min_std, std_scale, .. } = *self {
            if !(min_std > 0.0) || !min_std.is_finite() {
                bail!("eval.ais.base.min_std must be > 0 and finite, got {min_std}");
            }
            if !(std_scale > 0.0) || !std_scale.is_finite() {
                bail!("eval.ais.base.std_scale must be > 0 and finite, got {std_scale}");
            }
        }
        Ok(())
    }

    /// The base on the box `[low, high]^D`, fitted to `x: [N, *event]` (and its `labels` for `per_class`).
    pub fn resolve(&self, (low, high): (f64, f64), x: &tch::Tensor, labels: Option<&[i64]>) -> Result<AisBase> {
        let AisBaseSetting::FittedGaussian { components, min_std, std_scale } = *self else {
            return Ok(AisBase::Uniform { low, high });
        };
        let per_image: Vec<i64>;
        let labels = match (components, labels) {
            (BaseComponents::One, _) => None,
            (BaseComponents::PerClass, Some(l)) => Some(l),
            (BaseComponents::PerClass, None) => {
                bail!(
                    "eval.ais.base.components = \"per_class\" needs a labelled data set (use \"one\" or \"per_image\")"
                )
            }
            (BaseComponents::PerImage, _) => {
                per_image = (0..x.size()[0]).collect();
                Some(per_image.as_slice())
            }
        };
        Ok(AisBase::TruncatedGaussians(crate::common::config::user_keys(
            BoxGaussians::fit(x, labels, low, high, min_std, std_scale),
            &[("ais.base", "eval.ais.base")],
        )?))
    }

    /// A description for reports.
    pub fn describe(&self) -> String {
        match *self {
            AisBaseSetting::Uniform => "uniform on the box".into(),
            AisBaseSetting::FittedGaussian { components, min_std, std_scale } => match components {
                BaseComponents::One => {
                    format!("per-pixel Gaussian truncated to the box (sd × {std_scale}, ≥ {min_std})")
                }
                BaseComponents::PerClass => format!(
                    "per-class mixture of per-pixel Gaussians truncated to the box (sd × {std_scale}, ≥ {min_std})"
                ),
                BaseComponents::PerImage => {
                    format!("kernel density of the training images, sd {min_std}, truncated to the box")
                }
            },
        }
    }
}

/// Runs AIS from `eval.ais.base` (fitted to `train`) to `model` and scores `test`.
/// Returns the report and AIS's final chains (`[chains, *event]`, approximate samples of the model).
pub(super) fn evaluate(
    cfg: &ImagesConfig,
    model: &dyn EnergyModel,
    train: &ImageSet,
    test: &ImageSet,
    device: Device,
) -> Result<(AisReport, tch::Tensor)> {
    let t0 = Instant::now();
    let base = cfg.ais_base(&train.images, train.labels.as_deref())?;
    let base_test_ll = match &base {
        AisBase::TruncatedGaussians(b) => Some(f64::try_from(b.log_prob(&test.images).mean(Kind::Double))?),
        _ => None,
    };
    let ais_cfg = cfg.ais_config(base);
    tch::manual_seed(cfg.seed.wrapping_add(13) as i64);
    let r = ais(model, &ais_cfg, device)?;
    let f_chains = f_of(model, &r.samples.to_device(Device::Cpu), device, "AIS chains")?;
    let chains_f_mean = f_chains.iter().sum::<f64>() / f_chains.len().max(1) as f64;
    let f_train = f_of(model, &train.images, device, "training images")?;
    let train_f_mean = f_train.iter().sum::<f64>() / f_train.len().max(1) as f64;
    let test_ll = mean_log_likelihood(model, &test.images.to_device(device), r.log_z)?;
    let f_test = f_of(model, &test.images, device, "test images")?;
    let n_t = f_test.len() as f64;
    let mean_f = f_test.iter().sum::<f64>() / n_t;
    let test_ll_sd = (f_test.iter().map(|v| (v - mean_f).powi(2)).sum::<f64>() / (n_t - 1.0).max(1.0)).sqrt();
    let d: i64 = train.event_shape().iter().product();
    let (lo, hi) = cfg.data.scale.range();
    if !r.log_z.is_finite() {
        bail!("AIS gave a non-finite log Z ({})", r.log_z);
    }
    let report = AisReport {
        log_z: r.log_z,
        log_z_std_err: r.log_z_std_err,
        ess: r.ess,
        log_weight_sd: r.log_weight_var.sqrt(),
        acceptance: r.acceptance.unwrap_or(f64::NAN),
        test_ll,
        test_ll_sd,
        test_ll_std_err: (r.log_z_std_err.powi(2) + test_ll_sd.powi(2) / n_t).sqrt(),
        test_bits_per_dim: -test_ll / (d as f64 * std::f64::consts::LN_2),
        uniform_ll: -(d as f64) * (hi - lo).ln(),
        base: cfg.eval.ais.base.describe(),
        base_test_ll,
        chains_f_mean,
        test_f_mean: mean_f,
        train_f_mean,
        log_weights: r.log_weights.clone(),
        resamples: r.resamples,
        group_log_z: r.group_log_z.clone(),
        chains: ais_cfg.chains,
        steps: ais_cfg.steps,
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((report, r.samples))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn the_base_setting_parses_validates_and_fits() {
        #[derive(Deserialize)]
        struct W {
            base: AisBaseSetting,
        }
        let parse = |s: &str| toml::from_str::<W>(s).map(|w| w.base);
        assert_eq!(parse(r#"base = { kind = "uniform" }"#).unwrap(), AisBaseSetting::Uniform);
        let fitted = parse(r#"base = { kind = "fitted_gaussian" }"#).unwrap();
        assert_eq!(
            fitted,
            AisBaseSetting::FittedGaussian { components: BaseComponents::One, min_std: 0.05, std_scale: 1.0 }
        );
        assert!(parse(r#"base = { kind = "fitted" }"#).unwrap_err().to_string().contains("fitted_gaussian"));
        assert!(parse(r#"base = { kind = "fitted_gaussian", sd = 1 }"#).is_err(), "unknown fields are refused");
        let mut cfg = ImagesConfig::default();
        cfg.eval.ais.base =
            AisBaseSetting::FittedGaussian { components: BaseComponents::PerClass, min_std: 0.0, std_scale: 1.0 };
        assert!(cfg.validate().unwrap_err().to_string().contains("eval.ais.base.min_std"));
        cfg.eval.ais.base =
            AisBaseSetting::FittedGaussian { components: BaseComponents::PerClass, min_std: 0.1, std_scale: -1.0 };
        assert!(cfg.validate().unwrap_err().to_string().contains("eval.ais.base.std_scale"));
        cfg.eval.ais.base =
            AisBaseSetting::FittedGaussian { components: BaseComponents::PerClass, min_std: 0.1, std_scale: 1.0 };
        cfg.validate().unwrap();
        // fitted to [N, 1, 2, 2] images on the box [-1, 1]; per_class needs labels
        let x = Tensor::rand([6, 1, 2, 2], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let e = cfg.ais_base(&x, None).unwrap_err().to_string();
        assert!(e.contains("eval.ais.base.components = \"per_class\" needs a labelled data set"), "{e}");
        match cfg.ais_base(&x, Some(&[0, 1, 2, 0, 1, 2])).unwrap() {
            AisBase::TruncatedGaussians(b) => assert_eq!((b.components(), b.dim(), b.low, b.high), (3, 4, -1.0, 1.0)),
            other => panic!("{other:?}"),
        }
        let kde = AisBaseSetting::FittedGaussian { components: BaseComponents::PerImage, min_std: 0.1, std_scale: 1.0 };
        match kde.resolve((-1.0, 1.0), &x, None).unwrap() {
            AisBase::TruncatedGaussians(b) => {
                assert_eq!((b.components(), b.stds[5].clone()), (6, vec![0.1; 4]));
                assert_eq!(b.means[5], Vec::<f64>::try_from(x.get(5).flatten(0, -1).to_kind(Kind::Double)).unwrap());
            }
            other => panic!("{other:?}"),
        }
        cfg.eval.ais.base = AisBaseSetting::Uniform;
        assert_eq!(cfg.ais_base(&x, None).unwrap(), AisBase::Uniform { low: -1.0, high: 1.0 });
    }
}
