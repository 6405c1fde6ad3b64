//! The results: the rows of both parts and their markdown tables.

use super::config::{kind_budget, kind_net, kinds_list};
use super::{fmt_shares, ImageObjective, PoeConfig, Start};
use serde::Serialize;
use std::path::PathBuf;

/// One 2-D composition: sample statistics against the two exact answers.
#[derive(Debug, Clone, Serialize)]
pub struct Row2d {
    /// The expression as given.
    pub expression: String,
    /// `normalised` (experts divided by their grid Z) or `raw` (OR weighted by each expert's Z).
    pub experts: String,
    /// Share of samples satisfying the expression.
    pub satisfied: f64,
    /// The same share under the trained composition's exact density (grid).
    pub satisfied_model: f64,
    /// The same share under the composition of the true attribute densities (grid).
    pub satisfied_true: f64,
    /// Share of samples nearest each mode (modes in order of angle 22.5°, 67.5°, …).
    pub modes: Vec<f64>,
    /// Mode masses of the trained composition (grid).
    pub modes_model: Vec<f64>,
    /// Mode masses of the composition of the true densities (grid).
    pub modes_true: Vec<f64>,
    /// Total variation between sample mode shares and the trained composition's mode masses.
    pub tv_model: f64,
    /// Total variation between sample mode shares and the true composition's mode masses.
    pub tv_true: f64,
    /// Share of samples farther than 0.5 (5 std) from every mode.
    pub far: f64,
    /// MALA acceptance rate.
    pub acceptance: f64,
}

/// One image target: detector accuracies of the samples of a method.
#[derive(Debug, Clone, Serialize)]
pub struct RowImage {
    /// The target expression.
    pub target: String,
    /// Whether the target's combination was held out of training.
    pub held_out: bool,
    /// `composition` (sum of the per-attribute EBMs) or `joint baseline`.
    pub method: String,
    /// Share of samples with each requested attribute value, e.g. `[("triangle", 0.8), ("blue", 0.9)]`.
    pub per_attribute: Vec<(String, f64)>,
    /// Share of samples satisfying the whole expression.
    pub all: f64,
    /// The same share if attributes were drawn at random (uniform values, independent).
    pub chance: f64,
    /// Mean IoU of the samples with their best template (1 for a perfectly drawn shape).
    pub mean_iou: f64,
    /// Share of samples with no foreground at all.
    pub empty: f64,
    /// Share of the chains' starting images that already satisfied the target (0 for a held-out target
    /// started from data).
    pub at_start: f64,
}

/// Everything the experiment measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoeResults {
    /// The 2-D rows.
    pub toy: Vec<Row2d>,
    /// The image rows.
    pub images: Vec<RowImage>,
    /// Wall-clock seconds of the 2-D part.
    pub toy_seconds: f64,
    /// Wall-clock seconds of the image part.
    pub image_seconds: f64,
    /// Training seconds of each image model.
    pub image_train_seconds: Vec<(String, f64)>,
    /// Wall-clock seconds of the whole run.
    pub total_seconds: f64,
    /// The figures written (PNG).
    pub figures: Vec<PathBuf>,
}

/// The results as markdown tables.
pub fn markdown(cfg: &PoeConfig, r: &PoeResults) -> String {
    let mut s = String::from("# exp_poe results\n\n");
    if !r.toy.is_empty() {
        let t = &cfg.toy;
        s.push_str(&format!(
            "## 2-D: 8 Gaussians rotated {}°, one MLP EBM per attribute\n\nExperts: {:?} MLP, {} updates of batch {} \
             (replay CD, k = {}). Samples: {} per expression, importance resampling from {} uniform proposals in \
             [-{b}, {b}]², then {} MALA steps (ε = {}) restricted to the box. Exact answers: {}² grid over the box. \
             Modes in order of angle 22.5°, 67.5°, …, 337.5° (upper-right first, counter-clockwise).\n\n\
             | expression | experts | satisfied (samples) | exact, trained | exact, true densities | mode shares (samples) | exact, trained | exact, true | TV vs trained | TV vs true | far | MALA acc. |\n\
             |---|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|\n",
            t.rotate_deg,
            t.model.hidden,
            t.train.iters,
            t.train.batch_size,
            t.cd.k,
            t.sampling.n,
            t.sampling.n_proposals,
            t.sampling.mala_steps,
            t.sampling.mala_step,
            t.grid_n,
            b = t.box_half,
        ));
        for x in &r.toy {
            s.push_str(&format!(
                "| `{}` | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} |\n",
                x.expression,
                x.experts,
                x.satisfied,
                x.satisfied_model,
                x.satisfied_true,
                fmt_shares(&x.modes),
                fmt_shares(&x.modes_model),
                fmt_shares(&x.modes_true),
                x.tv_model,
                x.tv_true,
                x.far,
                x.acceptance
            ));
        }
        s.push_str(&format!("\n2-D part: {:.1} s.\n\n", r.toy_seconds));
    }
    if !r.images.is_empty() {
        let im = &cfg.images;
        let nets = if im.one_network {
            format!(
                "one conditional network ({:?} {:?}, view {:?}, FiLM = {}) over the values of {}",
                im.net.arch,
                im.net.widths,
                im.net.view,
                im.net.film,
                kinds_list(im)
            )
        } else {
            let views: Vec<String> = im
                .kinds
                .iter()
                .map(|k| {
                    let n = kind_net(im, *k);
                    let (iters, optim) = kind_budget(im, *k);
                    format!(
                        "{} ({:?} {:?}, view {:?}, FiLM = {}, {iters} updates at lr {})",
                        k.name(),
                        n.arch,
                        n.widths,
                        n.view,
                        n.film,
                        optim.lr
                    )
                })
                .collect();
            let exact = if im.exact_experts.is_empty() {
                String::new()
            } else {
                let kinds: Vec<&str> = im.exact_experts.iter().map(|k| k.name()).collect();
                format!(
                    " (the {} experts are the exact noisy densities of the training data, not trained)",
                    kinds.join(", ")
                )
            };
            format!("one conditional network per attribute type: {}{exact}", views.join(", "))
        };
        let training = match im.objective {
            ImageObjective::Dsm => format!(
                "noise-conditional DSM over {} levels σ ∈ [{}, {}]",
                im.noise.levels, im.noise.sigma_min, im.noise.sigma_max
            ),
            ImageObjective::Contrastive => format!("replay CD per label (k = {})", im.cd.k),
        };
        let sampler = match im.objective {
            ImageObjective::Dsm => format!(
                "annealed Langevin, {} steps per level (step {}·σ²){}",
                im.sampling.steps_per_level,
                im.sampling.step_ratio,
                if im.sampling.denoise { " and a final denoising step" } else { "" }
            ),
            ImageObjective::Contrastive => format!(
                "{} Langevin steps (step {}, noise {:?})",
                im.sampling.steps, im.sampling.langevin.step_size, im.sampling.langevin.noise
            ),
        };
        let start = match im.sampling.start {
            Start::Data => "random training images".to_string(),
            Start::Noise => format!("{:?}", im.sampling.init),
        };
        let baseline = if im.baseline {
            format!(
                ", and a joint-label baseline ({:?} {:?}, view {:?}, {} updates at lr {})",
                im.net.arch, im.net.widths, im.net.view, im.iters, im.optim.lr
            )
        } else {
            String::new()
        };
        s.push_str(&format!(
            "## Images: {}×{} shapes, held out of training: {:?}\n\n{nets}{baseline}; batches of {}, {training}. Each target is sampled as the \
             composition `{}`. Samples: {} per target, chains start from {start}, then {sampler}; attributes read by \
             the exact detectors (a shape counts when its best template has IoU ≥ {}).\n\n\
             | target | held out | method | per attribute | all requested | at the start | chance | mean IoU | empty |\n\
             |---|---|---|---|---:|---:|---:|---:|---:|\n",
            im.shapes.image_size,
            im.shapes.image_size,
            im.shapes.held_out,
            im.batch_size,
            im.composition,
            im.sampling.n,
            im.min_iou,
        ));
        for x in &r.images {
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {:.3} |\n",
                x.target,
                if x.held_out { "yes" } else { "no" },
                x.method,
                x.per_attribute.iter().map(|(a, v)| format!("{a} {v:.3}")).collect::<Vec<_>>().join(", "),
                x.all,
                x.at_start,
                x.chance,
                x.mean_iou,
                x.empty
            ));
        }
        s.push_str(&format!(
            "\nImage part: {:.1} s (training: {}).\n\n",
            r.image_seconds,
            r.image_train_seconds.iter().map(|(n, v)| format!("{n} {v:.1} s")).collect::<Vec<_>>().join(", ")
        ));
    }
    s.push_str(&format!("Total: {:.1} s.\n", r.total_seconds));
    s
}
