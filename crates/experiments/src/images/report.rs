//! What `exp_images` measured: [`ImagesReport`] and its markdown.

use super::config::AisPath;
use super::config::{ImageMethod, ImagesConfig};
use ebm_core::ais::BoxMoves;
use ebm_core::classifier::SampleQuality;
use serde::Serialize;
use std::path::PathBuf;

/// AIS results for the report.
#[derive(Debug, Clone, Serialize)]
pub struct AisReport {
    /// `log Z` of the model on the data box (nats).
    pub log_z: f64,
    /// Its delta-method standard error.
    pub log_z_std_err: f64,
    /// Effective sample size of the weights.
    pub ess: f64,
    /// Standard deviation of the chains' log-weights (small: the base and the path fit the model).
    pub log_weight_sd: f64,
    /// MALA acceptance.
    pub acceptance: f64,
    /// Mean test log-likelihood, nats per image.
    pub test_ll: f64,
    /// Standard deviation of the per-image test log-likelihood (of `f`: `log Z` is shared).
    pub test_ll_sd: f64,
    /// Standard error of `test_ll`: `√(se(log Z)² + sd²/N)`.
    pub test_ll_std_err: f64,
    /// The same in bits per dimension (negative log-likelihood).
    pub test_bits_per_dim: f64,
    /// The log-likelihood of the uniform density on the data box, for reference: `-D log(high - low)`.
    pub uniform_ll: f64,
    /// The start distribution, in words.
    pub base: String,
    /// The test log-likelihood of a fitted base itself (nats per image; `None` for the uniform base).
    pub base_test_ll: Option<f64>,
    /// Mean `f` of AIS's final chains: far above `test_f_mean`, the model puts mass where the data are not.
    pub chains_f_mean: f64,
    /// Mean `f` of the test images.
    pub test_f_mean: f64,
    /// Mean `f` of the training images (far above `test_f_mean`: the model has learnt them by heart).
    pub train_f_mean: f64,
    /// Each chain's log-weight (with resampling: with its group's earlier log-normalisers added).
    pub log_weights: Vec<f64>,
    /// Resampling events (0: plain AIS).
    pub resamples: usize,
    /// With resampling: each group's `log Ẑ` (independent estimates; their spread gives the se).
    pub group_log_z: Vec<f64>,
    /// Chains.
    pub chains: usize,
    /// Intermediate distributions (over all stages).
    pub steps: usize,
    /// The chains' path (`eval.ais.path`), in words.
    pub path: String,
    /// Each stage of the path (one for the direct path).
    pub stages: Vec<AisStageReport>,
    /// Seconds AIS took.
    pub seconds: f64,
}

/// One stage of the AIS path: a geometric bridge from the previous model (or the base) to `to`.
#[derive(Debug, Clone, Serialize)]
pub struct AisStageReport {
    /// The model the stage ends at (`σ = 0.549`: the DRL model at that noise level).
    pub to: String,
    /// Intermediate distributions of the stage.
    pub steps: usize,
    /// Mean over the final chains of the log-weight gained in the stage (their lineages').
    pub mean_log_weight: f64,
    /// Its sd over the chains: where the log-weights' variance builds up.
    pub log_weight_sd: f64,
    /// MALA acceptance in the stage.
    pub acceptance: f64,
}

/// The full-covariance Gaussian baseline `N(μ, Σ + r I)` fitted to the training images (closed form).
#[derive(Debug, Clone, Serialize)]
pub struct GaussianReport {
    /// The ridge `r` added to the covariance's diagonal.
    pub ridge: f64,
    /// Mean test log-likelihood, nats per image (same pixel scale as AIS).
    pub test_ll: f64,
    /// Standard deviation of the per-image test log-likelihood.
    pub test_ll_sd: f64,
    /// Standard error of `test_ll`.
    pub test_ll_std_err: f64,
    /// The same in bits per dimension (negative log-likelihood).
    pub test_bits_per_dim: f64,
}

/// JEM's own classifier `p(y | x) = softmax g(x)` on the test split.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifierReport {
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Expected calibration error.
    pub ece: f64,
    /// Confidence bins of the ECE.
    pub bins: usize,
}

/// Everything the run measured (`metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImagesReport {
    /// Data set.
    pub dataset: String,
    /// Method.
    pub method: String,
    /// `[C, H, W]`.
    pub image_shape: Vec<i64>,
    /// Training images.
    pub n_train: usize,
    /// Test images.
    pub n_test: usize,
    /// Files of a folder that were skipped.
    pub skipped_files: Vec<String>,
    /// Images of a folder that were resized.
    pub resized: usize,
    /// Updates done.
    pub iters: usize,
    /// Training seconds.
    pub train_seconds: f64,
    /// Milliseconds per update (of the updates this run did).
    pub ms_per_iter: f64,
    /// Temperature `σ²/(2λ)` the training sampler targets.
    pub langevin_temperature: f64,
    /// Test accuracy of the classifier (labelled sets).
    pub classifier_test_accuracy: Option<f64>,
    /// The classifier's score of the final samples.
    pub samples: Option<SampleQuality>,
    /// The classifier's score of as many real test images (the reference for `samples`).
    pub test_images: Option<SampleQuality>,
    /// AIS.
    pub ais: Option<AisReport>,
    /// The Gaussian baseline (when AIS runs).
    pub gaussian: Option<GaussianReport>,
    /// JEM's classifier.
    pub jem_classifier: Option<ClassifierReport>,
    /// AUROC of f: test images vs uniform noise.
    pub ood_auroc_noise: f64,
    /// AUROC of f: test images vs the same images with their pixels shuffled.
    pub ood_auroc_shuffled: f64,
    /// Whole run, seconds.
    pub total_seconds: f64,
    /// The grid of final samples.
    pub samples_png: PathBuf,
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// What to try when a few chains (or groups) carry all of AIS's weight, so that the estimate (a lower bound in
/// expectation) is unreliable: the settings that made DRL's converge on the digits, then more steps.
fn unreliable_hint(cfg: &ImagesConfig) -> String {
    let mut tries = Vec::new();
    if cfg.method == ImageMethod::Drl && cfg.eval.ais.path.resolve(cfg) == AisPath::Direct {
        tries.push("eval.ais.path = \"noise_levels\"".to_string());
    }
    if cfg.eval.ais.box_moves == BoxMoves::Reject {
        tries.push("eval.ais.box_moves = \"tanh\"".to_string());
    }
    tries.push(match cfg.method {
        ImageMethod::Drl => "more drl.ais_steps".to_string(),
        _ => "more eval.ais.steps".to_string(),
    });
    format!("; unreliable: try {}", tries.join(", "))
}

/// The run's results as markdown.
pub fn markdown(cfg: &ImagesConfig, r: &ImagesReport) -> String {
    let mut s = format!(
        "# exp_images: {} on {}\n\n{} train / {} test images of shape {:?}; {} updates of batch {} in {:.1}s \
         ({:.0} ms/update); Langevin step {} noise {} (temperature {:.2e}), grad clamp {}.\n\
         Samples: {} chains, {} Langevin steps from uniform noise → `samples.png`.\n\n| metric | value |\n|---|---:|\n",
        cfg.label(),
        r.dataset,
        r.n_train,
        r.n_test,
        r.image_shape,
        r.iters,
        cfg.train.batch_size,
        r.train_seconds,
        r.ms_per_iter,
        cfg.langevin().step_size,
        cfg.langevin().sigma(),
        r.langevin_temperature,
        cfg.langevin().grad_clip.map(|c| format!("±{c}")).unwrap_or_else(|| "off".into()),
        cfg.sampling.n,
        cfg.sampling.steps,
    );
    match cfg.method {
        // the Langevin lines above describe the other methods; say what drl and jem do instead
        ImageMethod::Drl => {
            let (levels, rec) = (cfg.drl.scales.levels, cfg.recovery());
            s = s.replace(
                &format!(
                    "Samples: {} chains, {} Langevin steps from uniform noise",
                    cfg.sampling.n, cfg.sampling.steps
                ),
                &format!(
                    "Training: recovery conditionals by {} Langevin steps (step {} δ²); the density is the model at \
                     σ = {}. Samples: {} chains from N(0, {}²), {} Langevin steps on the top level, then {} per level \
                     down {} levels",
                    cfg.drl.k,
                    rec.step_ratio,
                    cfg.drl.scales.sigma_min,
                    cfg.sampling.n,
                    cfg.drl.scales.sigma_max,
                    rec.top_steps,
                    rec.steps_per_level,
                    levels - 1
                ),
            );
        }
        ImageMethod::Jem if cfg.jem.class_conditional_samples => {
            s = s.replace("steps from uniform noise →", "steps from uniform noise on f(x | y), y = chain mod L →");
        }
        _ => {}
    }
    if let Some(p) = &cfg.eval.checkpoint {
        s = s.replacen(
            "\n\n| metric",
            &format!(
                "\nNot trained here: the weights of `{}` (update {}) were evaluated.\n\n| metric",
                p.display(),
                r.iters
            ),
            1,
        );
    }
    let mut row = |k: &str, v: String| s.push_str(&format!("| {k} | {v} |\n"));
    row("classifier test accuracy", opt(r.classifier_test_accuracy, |v| format!("{:.1}%", 100.0 * v)));
    if let Some(c) = &r.jem_classifier {
        row("JEM classifier: test accuracy", format!("{:.1}%", 100.0 * c.test_accuracy));
        row(&format!("JEM classifier: ECE ({} bins)", c.bins), format!("{:.4}", c.ece));
    }
    if let (Some(q), Some(t)) = (&r.samples, &r.test_images) {
        row("samples: mean max-probability (test images)", format!("{:.3} ({:.3})", q.mean_max_prob, t.mean_max_prob));
        row(
            "samples: class entropy, nats (test images; max)",
            format!("{:.3} ({:.3}; {:.3})", q.class_entropy, t.class_entropy, q.max_entropy),
        );
        let shares: Vec<String> = q.class_shares.iter().map(|v| format!("{:.0}", 100.0 * v)).collect();
        row("samples: class shares, %", shares.join(" / "));
    }
    if let Some(a) = &r.ais {
        row(
            "AIS log Z (± se)",
            format!(
                "{:.3} ± {:.3} ({} chains, {} steps from the {}, path {}, ESS {:.0}, log-weight sd {:.2}{})",
                a.log_z,
                a.log_z_std_err,
                a.chains,
                a.steps,
                a.base,
                a.path,
                a.ess,
                a.log_weight_sd,
                if a.ess < 0.1 * a.chains as f64 || a.log_z_std_err > 0.5 {
                    unreliable_hint(cfg)
                } else {
                    String::new()
                }
            ),
        );
        if a.stages.len() > 1 {
            for (i, st) in a.stages.iter().enumerate() {
                row(
                    &format!("AIS stage {} (to {}): steps; mean (sd) of its log-weight; acceptance", i + 1, st.to),
                    format!("{}; {:.2} ({:.2}); {:.2}", st.steps, st.mean_log_weight, st.log_weight_sd, st.acceptance),
                );
            }
        }
        row("test log-likelihood, nats/image (uniform on the box)", format!("{:.2} ({:.2})", a.test_ll, a.uniform_ll));
        row(
            "mean f: AIS final chains (test images; training images)",
            format!("{:.2} ({:.2}; {:.2})", a.chains_f_mean, a.test_f_mean, a.train_f_mean),
        );
        if !a.group_log_z.is_empty() {
            let g: Vec<String> = a.group_log_z.iter().map(|v| format!("{v:.1}")).collect();
            row(
                &format!("AIS with resampling: {} resamplings; log Z of the {} groups", a.resamples, g.len()),
                g.join(" / "),
            );
        }
        if let Some(b) = a.base_test_ll {
            row("AIS base: test log-likelihood, nats/image", format!("{b:.2}"));
        }
        row("test NLL, bits/dim", format!("{:.3}", a.test_bits_per_dim));
        row(
            "test log-likelihood spread: se (sd over images)",
            format!("{:.3} ({:.2})", a.test_ll_std_err, a.test_ll_sd),
        );
    }
    if let Some(g) = &r.gaussian {
        row(
            &format!("Gaussian baseline N(μ, Σ + {:.2e} I): test log-likelihood ± se (sd)", g.ridge),
            format!("{:.2} ± {:.3} ({:.2})", g.test_ll, g.test_ll_std_err, g.test_ll_sd),
        );
        row("Gaussian baseline: test NLL, bits/dim", format!("{:.3}", g.test_bits_per_dim));
    }
    row("OOD AUROC of f: test vs uniform noise", format!("{:.3}", r.ood_auroc_noise));
    row("OOD AUROC of f: test vs shuffled pixels", format!("{:.3}", r.ood_auroc_shuffled));
    row("total run time", format!("{:.1}s", r.total_seconds));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreliable_ais_points_at_the_settings_not_yet_tried() {
        let mut cfg = ImagesConfig { method: ImageMethod::Drl, ..Default::default() };
        assert_eq!(cfg.eval.ais.path, AisPath::Direct);
        assert_eq!(
            unreliable_hint(&cfg),
            "; unreliable: try eval.ais.path = \"noise_levels\", eval.ais.box_moves = \"tanh\", more drl.ais_steps"
        );
        cfg.eval.ais.path = AisPath::Auto; // the noise levels, for drl
        cfg.eval.ais.box_moves = BoxMoves::Tanh;
        assert_eq!(unreliable_hint(&cfg), "; unreliable: try more drl.ais_steps");
        cfg.method = ImageMethod::Replay;
        cfg.eval.ais.box_moves = BoxMoves::Reject;
        assert_eq!(unreliable_hint(&cfg), "; unreliable: try eval.ais.box_moves = \"tanh\", more eval.ais.steps");
    }
}
