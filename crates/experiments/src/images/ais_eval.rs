//! The AIS evaluation of `exp_images`: the start distribution (`eval.ais.base`) and the test log-likelihood
//! of the model on the data box, with its spread and the base's own test log-likelihood beside it.

use super::config::{ImageMethod, ImagesConfig};
use super::report::{AisReport, AisStageReport};
use anyhow::{bail, Result};
use ebm_core::ais::{ais_path, mean_log_likelihood, AisBase, BoxGaussians, BoxMoves};
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

/// The chains' path from the base to the model (`eval.ais.path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AisPath {
    /// The model's noise levels when it has them (`--method drl`), else the direct path (what
    /// `experiments/exp_images.toml` sets).
    Auto,
    /// One geometric bridge from the base to the model's density (what a config without the key means).
    #[default]
    Direct,
    /// `--method drl` only: through the model read at each level of the DRL ladder (`drl.scales`), from the
    /// largest down to `sigma_min`, the density evaluated: base → `f_{σ_max}` → … → `f_{σ_min}`, one stage
    /// per level, each a geometric bridge between neighbours with `drl.ais_steps / levels` steps (the first
    /// `drl.ais_steps % levels` stages one more; `ebm_core::ais::ais_path`).
    NoiseLevels,
}

impl AisPath {
    /// The path this setting means for `cfg`'s method: `Auto` becomes `NoiseLevels` for DRL, `Direct` for
    /// the others; the explicit settings stay.
    pub fn resolve(self, cfg: &ImagesConfig) -> AisPath {
        match (self, cfg.method) {
            (AisPath::Auto, ImageMethod::Drl) => AisPath::NoiseLevels,
            (AisPath::Auto, _) => AisPath::Direct,
            (p, _) => p,
        }
    }

    /// Checks that the method has noise levels and that every stage gets a step.
    pub fn validate(self, cfg: &ImagesConfig) -> Result<()> {
        if self.resolve(cfg) == AisPath::Direct {
            return Ok(());
        }
        let written = match self {
            AisPath::Auto => "eval.ais.path = \"auto\" (the noise levels, for drl)",
            _ => "eval.ais.path = \"noise_levels\"",
        };
        if cfg.method != ImageMethod::Drl {
            bail!(
                "{written} needs a model with noise levels (method = \"drl\"), got method = \"{}\"; \
                 use eval.ais.path = \"direct\"",
                cfg.method
            );
        }
        let steps = cfg.drl.ais_steps.unwrap_or(cfg.eval.ais.steps);
        if steps < cfg.drl.scales.levels {
            bail!(
                "{written} runs one stage per level of drl.scales ({}), but drl.ais_steps (or eval.ais.steps) is \
                 {steps}: give every stage a step, or set eval.ais.path = \"direct\"",
                cfg.drl.scales.levels
            );
        }
        Ok(())
    }

    /// The noise levels of the path's models, largest first (`[sigma_min]` for the direct path of DRL, empty
    /// for other methods' direct path: their model is not noise-conditional).
    pub fn levels(self, cfg: &ImagesConfig) -> Vec<f64> {
        match (self.resolve(cfg), cfg.method) {
            (AisPath::NoiseLevels, _) => {
                let mut a = cfg.drl.scales.sigmas();
                // the last is the density evaluated: exactly sigma_min (the ladder's exp/log may be off by an ulp)
                if let Some(last) = a.last_mut() {
                    *last = cfg.drl.scales.sigma_min;
                }
                a
            }
            (_, ImageMethod::Drl) => vec![cfg.drl.scales.sigma_min],
            (_, _) => Vec::new(),
        }
    }

    /// A description for reports.
    pub fn describe(self, cfg: &ImagesConfig) -> String {
        match self.resolve(cfg) {
            AisPath::NoiseLevels => {
                let l: Vec<String> = self.levels(cfg).iter().map(|a| format!("{a:.3}")).collect();
                format!("noise levels σ = {} ({} stages)", l.join(" → "), l.len())
            }
            _ => "direct".into(),
        }
    }
}

/// The path of `eval.ais.path` for the trained `model` (raw: for DRL the noise-conditional net): the density the
/// run scores ([`super::density`]) for the direct path, the model's views at the levels for `"noise_levels"`.
fn path_models<'a>(cfg: &ImagesConfig, model: &'a dyn EnergyModel) -> Result<Vec<Box<dyn EnergyModel + 'a>>> {
    Ok(match cfg.eval.ais.path.resolve(cfg) {
        AisPath::NoiseLevels => {
            cfg.eval.ais.path.levels(cfg).into_iter().map(|a| model.at_noise(a)).collect::<Result<_, _>>()?
        }
        _ => vec![super::density(cfg, model)?],
    })
}

/// Runs AIS from `eval.ais.base` (fitted to `train`) to the density of the trained `model` (for DRL the
/// noise-conditional net: the density is its view at `drl.scales.sigma_min`) along `eval.ais.path`, and
/// scores `test`. Returns the report and AIS's final chains (`[chains, *event]`, approximate samples of the
/// model).
pub(super) fn evaluate(
    cfg: &ImagesConfig,
    trained: &dyn EnergyModel,
    train: &ImageSet,
    test: &ImageSet,
    device: Device,
) -> Result<(AisReport, tch::Tensor)> {
    let t0 = Instant::now();
    let path = path_models(cfg, trained)?;
    let model = &**path.last().expect("a path has at least one model");
    let base = cfg.ais_base(&train.images, train.labels.as_deref())?;
    let base_test_ll = match &base {
        AisBase::TruncatedGaussians(b) => Some(f64::try_from(b.log_prob(&test.images).mean(Kind::Double))?),
        _ => None,
    };
    let ais_cfg = cfg.ais_config(base);
    tch::manual_seed(cfg.eval.ais.seed.unwrap_or(cfg.seed.wrapping_add(13)) as i64);
    let refs: Vec<&dyn EnergyModel> = path.iter().map(|m| &**m).collect();
    let r = ais_path(&refs, &ais_cfg, device)?;
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
        path: match cfg.eval.ais.box_moves {
            BoxMoves::Reject => cfg.eval.ais.path.describe(cfg),
            BoxMoves::Tanh => format!("{}, chains moving in atanh coordinates", cfg.eval.ais.path.describe(cfg)),
        },
        stages: stage_reports(cfg, &r.stages),
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((report, r.samples))
}

/// The stages of the AIS result with the model each ends at.
fn stage_reports(cfg: &ImagesConfig, stages: &[ebm_core::ais::AisStage]) -> Vec<AisStageReport> {
    let levels = cfg.eval.ais.path.levels(cfg);
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| AisStageReport {
            to: match levels.get(i) {
                Some(a) => format!("σ = {a:.3}"),
                None => "the model".into(),
            },
            steps: s.steps,
            mean_log_weight: s.mean_log_weight,
            log_weight_sd: s.log_weight_sd,
            acceptance: s.acceptance.unwrap_or(f64::NAN),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::config::AisSettings;
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

    #[test]
    fn the_box_moves_setting_parses_and_reaches_the_ais_config() {
        let mut cfg = ImagesConfig::default();
        assert_eq!(cfg.eval.ais.box_moves, BoxMoves::Reject, "a config without the key means pixel-space moves");
        let set: AisSettings = toml::from_str(r#"box_moves = "tanh""#).unwrap();
        assert_eq!(set.box_moves, BoxMoves::Tanh);
        let e = toml::from_str::<AisSettings>(r#"box_moves = "reflect""#).unwrap_err().to_string();
        assert!(e.contains("tanh") && e.contains("reject"), "{e}");
        cfg.eval.ais.box_moves = BoxMoves::Tanh;
        let ais = cfg.ais_config(AisBase::Uniform { low: -1.0, high: 1.0 });
        assert_eq!(ais.box_moves, BoxMoves::Tanh);
        ais.validate().unwrap();
    }

    #[test]
    fn the_path_setting_parses_validates_and_lists_the_noise_levels() {
        let mut cfg = ImagesConfig::default();
        assert_eq!(cfg.eval.ais.path, AisPath::Direct, "a config without the key means the direct path");
        assert_eq!(cfg.eval.ais.path.resolve(&cfg), AisPath::Direct);
        // auto: the noise levels for drl (checked like them), the direct path for the others
        cfg.eval.ais.path = AisPath::Auto;
        assert_eq!(cfg.eval.ais.path.resolve(&cfg), AisPath::Direct);
        assert_eq!(cfg.eval.ais.path.describe(&cfg), "direct");
        assert!(cfg.eval.ais.path.levels(&cfg).is_empty());
        cfg.method = ImageMethod::Drl;
        assert_eq!(cfg.eval.ais.path.resolve(&cfg), AisPath::NoiseLevels);
        assert_eq!(AisPath::Direct.resolve(&cfg), AisPath::Direct);
        assert_eq!(cfg.eval.ais.path.levels(&cfg).len(), cfg.drl.scales.levels);
        cfg.drl.ais_steps = Some(3);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("eval.ais.path = \"auto\"") && e.contains("is 3"), "{e}");
        cfg.drl.ais_steps = None;
        assert_eq!(toml::from_str::<AisSettings>(r#"path = "auto""#).unwrap().path, AisPath::Auto);
        let set: AisSettings = toml::from_str(r#"path = "noise_levels""#).unwrap();
        assert_eq!(set.path, AisPath::NoiseLevels);
        assert!(toml::from_str::<AisSettings>(r#"path = "levels""#).unwrap_err().to_string().contains("noise_levels"));
        cfg.eval.ais.path = AisPath::NoiseLevels;
        cfg.method = ImageMethod::Replay;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("eval.ais.path = \"noise_levels\"") && e.contains("got method = \"replay\""), "{e}");
        cfg.method = ImageMethod::Drl;
        cfg.validate().unwrap();
        // 6 levels from 1 to 0.05, geometric, largest first; the last exactly sigma_min
        cfg.drl.scales = ebm_core::sampler::NoiseScales { sigma_max: 1.0, sigma_min: 0.05, levels: 6 };
        let levels = cfg.eval.ais.path.levels(&cfg);
        assert_eq!(levels.len(), 6);
        for (i, a) in levels.iter().enumerate() {
            let want = 0.05f64.powf(i as f64 / 5.0);
            assert!((a - want).abs() < 1e-12, "level {i}: {a} vs {want}");
        }
        assert_eq!((levels[0], levels[5]), (1.0, 0.05));
        assert_eq!(
            cfg.eval.ais.path.describe(&cfg),
            "noise levels σ = 1.000 → 0.549 → 0.302 → 0.166 → 0.091 → 0.050 (6 stages)"
        );
        assert_eq!(AisPath::Direct.levels(&cfg), vec![0.05]);
        cfg.drl.ais_steps = Some(5);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("drl.ais_steps") && e.contains("is 5"), "{e}");
        cfg.eval.ais.path = AisPath::Direct;
        cfg.validate().unwrap();
    }
}
