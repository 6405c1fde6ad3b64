//! The image part: conditional EBMs per attribute type on procedurally generated shapes, their compositions
//! sampled by (annealed) Langevin and checked by the exact detectors, against a joint-label baseline.

use super::config::{composition_names, composition_of, kind_budget, kind_net, prior_label, uses_priors};
use super::report::RowImage;
use super::{progress, slug, upscale, ImageObjective, ImageSampling, ImageSettings, PoeConfig, Start};
use crate::common::RunContext;
use anyhow::{bail, Context, Result};
use ebm_core::data::shapes::{joint_label_names, AttributeKind, Detection, ShapeDetector, ShapesData};
use ebm_core::energy::compose::{Composition, Expression};
use ebm_core::energy::conditional::{named_experts, ConditionalConfig, ConditionalNet, Conditioned, View};
use ebm_core::energy::{EmpiricalChannelSum, EnergyModel, PixelMixture};
use ebm_core::objective::{lit_share, Contrastive, NoiseDsm, NoiseDsmConfig, Objective, PixelWeights};
use ebm_core::optim::AdamConfig;
use ebm_core::sampler::{AnnealedConfig, AnnealedLangevin, Langevin, Sampler};
use ebm_core::train::{LabelledData, TrainConfig, Trainer};
use ebm_log::plot;
use ebm_log::{MetricsSink, ProgressSink, TensorBoardWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

struct CondModel {
    name: String,
    _vs: nn::VarStore,
    net: ConditionalNet,
}

/// The annealed sampler of DSM-trained image models.
pub(super) fn annealed(im: &ImageSettings) -> AnnealedConfig {
    AnnealedConfig {
        scales: im.noise.clone(),
        steps_per_level: im.sampling.steps_per_level,
        step_ratio: im.sampling.step_ratio,
        denoise: im.sampling.denoise,
        clamp: Some([0.0, 1.0]),
        metropolis: im.sampling.metropolis,
    }
}

/// Trains one conditional network. `labels: [N, K]`: each draw of image `i` takes one of its `K` labels at
/// random (K = 1: its only label).
#[allow(clippy::too_many_arguments)]
fn train_conditional(
    cfg: &PoeConfig,
    net_cfg: &ConditionalConfig,
    (n_iters, optim): (usize, &AdamConfig),
    name: &str,
    labels_names: &[String],
    images: &Tensor,
    labels: &Tensor,
    ctx: &RunContext,
    multi: &indicatif::MultiProgress,
) -> Result<(CondModel, f64)> {
    let im = &cfg.images;
    let device = ctx.device;
    // each model has a seed stream of its own, for its initial weights and its training
    let seed = ctx.seed_for(&format!("images/{name}"));
    tch::manual_seed(seed as i64);
    let vs = nn::VarStore::new(device);
    let event = images.size()[1..].to_vec();
    let names: Vec<&str> = labels_names.iter().map(String::as_str).collect();
    let net = ConditionalNet::new(&vs.root(), net_cfg, &event, &names)?;
    let bar = progress(multi, n_iters as u64, format!("images: model '{name}'"));
    let part = ctx.sub_run(Path::new("images").join(slug(name)))?;
    let dir = part.dir.clone();
    let t0 = Instant::now();
    let weights = dir.join("model.safetensors");
    // lit and black pixels weigh the same for a per-pixel expert trained by DSM
    let balance = im.balance_pixels && net_cfg.view == View::Pixel && im.objective == ImageObjective::Dsm;
    let lit = if balance { lit_share(images) } else { f64::NAN };
    if balance && !(lit > 0.0 && lit < 1.0) {
        bail!(
            "images.balance_pixels: the training images have a share {lit} of lit pixels; need some lit and some black"
        );
    }
    let mut chains = None;
    // a finished model of the run being resumed is kept as it is
    let finished = part.resuming().then(|| weights.clone()).filter(|w| w.exists());
    let load =
        finished.or_else(|| im.load_from.as_ref().map(|f| f.join("images").join(slug(name)).join("model.safetensors")));
    let mut sink;
    if let Some(p) = load {
        sink = part.sinks(ProgressSink::with_bar(bar.clone()), None)?;
        let saved = Tensor::read_safetensors(&p).with_context(|| format!("loading the image model {}", p.display()))?;
        let mut vars = vs.variables();
        for (k, v) in saved {
            let Some(t) = vars.get_mut(&k) else {
                bail!("{} holds '{k}', which model '{name}' does not have", p.display())
            };
            tch::no_grad(|| t.copy_(&v));
        }
    } else {
        let objective: Box<dyn Objective> = match im.objective {
            ImageObjective::Dsm => {
                let weights = if balance { PixelWeights::BalanceLit { lit_share: lit } } else { PixelWeights::None };
                Box::new(NoiseDsm::new(NoiseDsmConfig { scales: im.noise.clone(), weights })?)
            }
            ImageObjective::Contrastive => Box::new(Contrastive::new(im.cd.objective(), &net, device)?),
        };
        let train_cfg = TrainConfig {
            iters: n_iters,
            batch_size: im.batch_size,
            optim: optim.clone(),
            grad_clip: im.grad_clip,
            ema: im.ema,
            log_every: im.log_every,
            ..TrainConfig::default()
        };
        let (mut trainer, resumed_at) = part.attach(Trainer::new(train_cfg, &vs, &net, objective, seed)?)?;
        bar.set_position(resumed_at.unwrap_or(0) as u64);
        sink = part.sinks(ProgressSink::with_bar(bar.clone()), resumed_at)?;
        let outcome = trainer
            .run(&mut LabelledData::new(images.shallow_clone(), labels.shallow_clone())?, &mut sink, None)
            .with_context(|| format!("training the image model '{name}'"))?;
        sink.flush()?;
        part.finished(&outcome)?;
        // the averaged weights are the model from here on (saved, sampled)
        trainer.use_ema_weights();
        if im.objective == ImageObjective::Contrastive {
            chains = Some((0..net.num_labels()).filter_map(|l| trainer.objective().chains(l)).collect::<Vec<_>>());
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    Tensor::write_safetensors(&named, &weights).with_context(|| format!("saving {}", weights.display()))?;
    // a look at every label's samples (the replay buffers of contrastive training)
    let per = 8i64;
    let shows: Vec<Tensor> = match chains {
        Some(c) => c.iter().map(|b| b.narrow(0, 0, b.size()[0].min(per))).collect(),
        None => {
            let mut v = Vec::new();
            for l in 0..net.num_labels() {
                let s = ImageSampling { n: per as usize, ..im.sampling.clone() };
                v.push(sample_images(&Conditioned::new(&net, l)?, im, &s, images, device)?.1);
            }
            v
        }
    };
    let img =
        plot::image_grid(&dir.join("samples.png"), &upscale(&Tensor::cat(&shows, 0), 3), (0.0, 1.0), per as usize)?;
    sink.image("samples (one row per label)", n_iters as u64, &img)?;
    sink.flush()?;
    bar.finish();
    Ok((CondModel { name: name.to_string(), _vs: vs, net }, secs))
}

/// Samples `s.n` images: chains start from noise or from random training images (`s.start`), then annealed
/// Langevin over `model_at(σ)` for DSM-trained models, plain Langevin on `model_at(0)` (the clean model) for
/// contrastive ones. Returns the starts and the samples.
fn sample_images(
    model: &dyn EnergyModel,
    im: &ImageSettings,
    s: &ImageSampling,
    data: &Tensor,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let event = [3, im.shapes.image_size, im.shapes.image_size];
    let x0 = match s.start {
        Start::Noise => s.init.sample(s.n as i64, &event, device),
        Start::Data => data.index_select(0, &Tensor::randint(data.size()[0], [s.n as i64], (Kind::Int64, device))),
    };
    let x = match im.objective {
        ImageObjective::Dsm => {
            let sampler = AnnealedLangevin::new(annealed(im))?;
            let out = sampler.run(model, &x0, sampler.total_steps())?;
            if let Some(a) = out.acceptance {
                eprintln!("ebm-rs: annealed sampling: Metropolis acceptance {a:.3}");
            }
            out.x
        }
        ImageObjective::Contrastive => Langevin::new(s.langevin.clone())?.run(model, &x0, s.steps)?.x_mean,
    };
    Ok((x0, x))
}

/// The exact noisy experts of `images.exact_experts`, one per value of those kinds.
enum ExactExpert {
    /// The channel sums of the training images with that value.
    Shape(EmpiricalChannelSum),
    /// Each pixel black or of the colour (one value per channel), lit with probability `on`, on images of
    /// shape `[C, H, W]`.
    Colour(Vec<f64>, f64, Vec<i64>),
}

fn exact_experts(im: &ImageSettings, data: &ShapesData) -> Result<Vec<(String, ExactExpert)>> {
    let mut out = Vec::new();
    for kind in &im.exact_experts {
        let labels = data.labels(*kind);
        for (i, value) in kind.values().iter().enumerate() {
            let rows = labels.eq(i as i64).nonzero().squeeze_dim(1);
            if rows.size()[0] == 0 {
                bail!("images.exact_experts: no training image is '{value}'");
            }
            let of_value = data.images.index_select(0, &rows);
            let expert = match kind {
                AttributeKind::Shape => ExactExpert::Shape(EmpiricalChannelSum::new(&of_value, 1.0)?),
                AttributeKind::Colour => {
                    // red, green and blue are channels 0, 1 and 2
                    let colour: Vec<f64> = (0..3).map(|c| if c == i { 1.0 } else { 0.0 }).collect();
                    let on = if im.balance_pixels { 0.5 } else { lit_share(&of_value) };
                    ExactExpert::Colour(colour, on, data.images.size()[1..].to_vec())
                }
                other => bail!("images.exact_experts: no exact expert for {}", other.name()),
            };
            out.push((value.to_string(), expert));
        }
    }
    Ok(out)
}

/// The composition of `expr` over every label of `models` and the exact experts (the exact ones built at
/// σ = 1; a sampler reads every expert at its own noise levels through [`EnergyModel::at_noise`]).
fn composed<'a>(
    models: &'a [CondModel],
    exact: &'a [(String, ExactExpert)],
    expr: &Expression,
) -> ebm_core::Result<Composition<'a>> {
    let mut experts: Vec<(String, Box<dyn EnergyModel + 'a>)> = Vec::new();
    for (name, e) in exact {
        let expert: Box<dyn EnergyModel + 'a> = match e {
            ExactExpert::Shape(s) => Box::new(s.at(1.0)?),
            ExactExpert::Colour(c, on, event) => Box::new(PixelMixture::new(c, *on, 1.0, event)?),
        };
        experts.push((name.clone(), expert));
    }
    for m in models {
        experts.extend(named_experts(&m.net));
    }
    Composition::from_expression(expr, experts)
}

/// Share of detections satisfying `expr`.
fn share_satisfying(det: &[Detection], expr: &Expression) -> f64 {
    det.iter().filter(|d| d.satisfies(expr)).count() as f64 / det.len().max(1) as f64
}

fn score_images(
    target: &str,
    held_out: bool,
    method: &str,
    expr: &Expression,
    det: &[Detection],
    kinds: &[AttributeKind],
    at_start: f64,
) -> RowImage {
    let n = det.len().max(1) as f64;
    let share = |f: &dyn Fn(&Detection) -> bool| det.iter().filter(|d| f(d)).count() as f64 / n;
    let per_attribute = expr.names().into_iter().map(|a| (a.clone(), share(&|d: &Detection| d.has(&a)))).collect();
    // chance: attributes uniform and independent over the values of each kind
    let chance = {
        let mut total = 0usize;
        let mut hit = 0usize;
        let mut idx = vec![0usize; kinds.len()];
        loop {
            let vals: Vec<&str> = kinds.iter().zip(&idx).map(|(k, i)| k.values()[*i]).collect();
            total += 1;
            if expr.satisfied_by(&|nm| vals.contains(&nm)) {
                hit += 1;
            }
            let mut c = 0;
            loop {
                if c == kinds.len() {
                    break;
                }
                idx[c] += 1;
                if idx[c] < kinds[c].values().len() {
                    break;
                }
                idx[c] = 0;
                c += 1;
            }
            if c == kinds.len() {
                break;
            }
        }
        hit as f64 / total as f64
    };
    RowImage {
        target: target.to_string(),
        held_out,
        method: method.to_string(),
        per_attribute,
        all: share(&|d: &Detection| d.satisfies(expr)),
        chance,
        mean_iou: det.iter().map(|d| d.iou).sum::<f64>() / n,
        empty: share(&|d: &Detection| d.foreground == 0),
        at_start,
    }
}

/// The joint label a conjunctive target asks for (`"blue & triangle"` → `"triangle & blue"` for kinds
/// `[shape, colour]`), or `None` when the target uses `|` or `!` or does not name one value of every kind.
fn joint_label_of(expr: &Expression, source: &str, kinds: &[AttributeKind]) -> Option<String> {
    if source.contains(['|', '!']) {
        return None;
    }
    let names = expr.names();
    if names.len() != kinds.len() {
        return None;
    }
    let parts: Option<Vec<String>> =
        kinds.iter().map(|k| names.iter().find(|n| k.values().contains(&n.as_str())).cloned()).collect();
    parts.map(|p| p.join(" & "))
}

pub(super) struct ImageOut {
    pub(super) rows: Vec<RowImage>,
    pub(super) figure: PathBuf,
    pub(super) train_seconds: Vec<(String, f64)>,
}

pub(super) fn run_images(
    cfg: &PoeConfig,
    ctx: &RunContext,
    tb: &mut TensorBoardWriter,
    multi: &indicatif::MultiProgress,
) -> Result<ImageOut> {
    let device = ctx.device;
    let im = &cfg.images;
    let data = im.shapes.generate(im.n_train, cfg.seed)?;
    let images = data.images.to_device(device);
    tb.add_image(
        "images/data",
        0,
        &plot::image_grid_image(&upscale(&data.images.narrow(0, 0, 32), 3), (0.0, 1.0), 8)?,
    )?;
    let mut models = Vec::new();
    let mut train_seconds = Vec::new();
    // (name, network, label names, labels [N, K]) of each attribute network
    // (model name, network, (updates, optimiser), label names, labels [N, K])
    type Spec = (String, ConditionalConfig, (usize, AdamConfig), Vec<String>, Tensor);
    let mut specs: Vec<Spec> = Vec::new();
    let shared = (im.iters, im.optim.clone());
    if im.one_network {
        let mut names = Vec::new();
        let mut cols = Vec::new();
        for kind in &im.kinds {
            cols.push(data.labels(*kind) + names.len() as i64);
            names.extend(kind.values().iter().map(|s| s.to_string()));
        }
        if uses_priors(im) {
            cols.push(Tensor::full([data.attrs.len() as i64], names.len() as i64, (Kind::Int64, Device::Cpu)));
            names.push(prior_label(None));
        }
        specs.push(("attributes".into(), im.net.clone(), shared.clone(), names, Tensor::stack(&cols, 1)));
    } else {
        for kind in im.kinds.iter().filter(|k| !im.exact_experts.contains(k)) {
            let mut names: Vec<String> = kind.values().iter().map(|s| s.to_string()).collect();
            let mut cols = vec![data.labels(*kind)];
            if uses_priors(im) {
                cols.push(Tensor::full([data.attrs.len() as i64], names.len() as i64, (Kind::Int64, Device::Cpu)));
                names.push(prior_label(Some(*kind)));
            }
            let net = kind_net(im, *kind);
            specs.push((kind.name().into(), net, kind_budget(im, *kind), names, Tensor::stack(&cols, 1)));
        }
    }
    for (name, net, (iters, optim), names, labels) in &specs {
        let (m, secs) =
            train_conditional(cfg, net, (*iters, optim), name, names, &images, &labels.to_device(device), ctx, multi)?;
        train_seconds.push((name.clone(), secs));
        models.push(m);
    }
    let exact = exact_experts(im, &data)?;
    let joint_names = joint_label_names(&im.kinds);
    let baseline = if im.baseline {
        let (m, secs) = train_conditional(
            cfg,
            &im.net,
            (im.iters, &im.optim),
            "joint",
            &joint_names,
            &images,
            &data.joint_labels(&im.kinds).unsqueeze(1).to_device(device),
            ctx,
            multi,
        )?;
        train_seconds.push(("joint".into(), secs));
        Some(m)
    } else {
        None
    };
    let detector = ShapeDetector::new(&im.shapes)?.with_min_iou(im.min_iou)?;
    let mut rows = Vec::new();
    let mut panels = Vec::new();
    let mut row_titles = Vec::new();
    let known: Vec<&str> = im.kinds.iter().flat_map(|k| k.values().iter().copied()).collect();
    for target in &im.targets {
        let expr = Expression::parse_known(target, &known)?;
        let comp_expr = Expression::parse_known(&composition_of(im, target), &composition_names(im))?;
        // held out when no training image satisfies the expression
        let held_out = !data.attrs.iter().any(|a| expr.satisfied_by(&|n| a.has(n)));
        tch::manual_seed(ctx.seed_for(&format!("images/sample/{target}")) as i64);
        let (x0, xs) = sample_images(&composed(&models, &exact, &comp_expr)?, im, &im.sampling, &images, device)?;
        let start_share = share_satisfying(&detector.detect(&x0)?, &expr);
        rows.push(score_images(target, held_out, "composition", &expr, &detector.detect(&xs)?, &im.kinds, start_share));
        let show = xs.narrow(0, 0, xs.size()[0].min(32));
        let img_c = plot::image_grid_image(&upscale(&show, 3), (0.0, 1.0), 8)?;
        tb.add_image(&format!("images/compose/{}", slug(target)), im.iters as u64, &img_c)?;
        let mut row = vec![Some(img_c)];
        // the baseline, when the target is a conjunction naming one value of every kind
        let joint = joint_label_of(&expr, target, &im.kinds).filter(|j| joint_names.contains(j));
        if let (Some(b), Some(jn)) = (&baseline, joint) {
            let label = b.net.label_of(&jn)?;
            tch::manual_seed(ctx.seed_for(&format!("images/sample/{target}")) as i64);
            let (_, xb) = sample_images(&Conditioned::new(&b.net, label)?, im, &im.sampling, &images, device)?;
            rows.push(score_images(
                target,
                held_out,
                "joint baseline",
                &expr,
                &detector.detect(&xb)?,
                &im.kinds,
                start_share,
            ));
            let img_b = plot::image_grid_image(&upscale(&xb.narrow(0, 0, xb.size()[0].min(32)), 3), (0.0, 1.0), 8)?;
            tb.add_image(&format!("images/baseline/{}", slug(target)), im.iters as u64, &img_b)?;
            row.push(Some(img_b));
        } else if baseline.is_some() {
            // the joint labels cannot express this target
            row.push(None);
        }
        for r in rows.iter().rev().take(2) {
            eprintln!(
                "ebm-rs: images {} [{}]: all {:.3} ({}) chance {:.3}",
                r.target,
                r.method,
                r.all,
                r.per_attribute.iter().map(|(a, v)| format!("{a} {v:.3}")).collect::<Vec<_>>().join(", "),
                r.chance
            );
        }
        panels.push(row);
        row_titles.push(if held_out { format!("{target} (held out)") } else { target.clone() });
    }
    let figure = ctx.run_dir.figure_path("poe_images.png");
    let titles: Vec<&str> = row_titles.iter().map(String::as_str).collect();
    let mut names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    names.extend(im.exact_experts.iter().map(|k| format!("exact {}", k.name())));
    let c0 = format!("composition of the {} EBMs", names.join(" + "));
    let col_titles: &[&str] =
        if baseline.is_some() { &[c0.as_str(), "joint-label EBM (baseline)"] } else { &[c0.as_str()] };
    plot::compose_images(
        &figure,
        &panels,
        &titles,
        col_titles,
        Some("Generating attribute combinations by composing per-attribute EBMs"),
    )?;
    Ok(ImageOut { rows, figure, train_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_experts_need_a_listed_kind_one_network_per_kind_and_dsm() {
        let mut cfg = PoeConfig::default();
        cfg.images.exact_experts = vec![AttributeKind::Shape];
        cfg.validate().unwrap();
        cfg.images.kinds = vec![AttributeKind::Colour];
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("images.exact_experts: shape must be one of images.kinds"), "{e}");
        let mut cfg = PoeConfig::default();
        cfg.images.exact_experts = vec![AttributeKind::Colour];
        cfg.images.objective = ImageObjective::Contrastive;
        assert!(cfg.validate().unwrap_err().to_string().contains("images.exact_experts: colour"));
        // one expert per value: the shape's see the channel sums of that shape's images, the colour's each pixel
        let im = ImageSettings {
            exact_experts: vec![AttributeKind::Shape, AttributeKind::Colour],
            ..ImageSettings::default()
        };
        let data = im.shapes.generate(300, 0).unwrap();
        let exact = exact_experts(&im, &data).unwrap();
        let names: Vec<&str> = exact.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["circle", "square", "triangle", "red", "green", "blue"]);
        assert!(matches!(&exact[5].1, ExactExpert::Colour(c, on, _) if *c == [0.0, 0.0, 1.0] && *on == 0.5));
        // the composition of the exact experts rates a blue triangle of the data above a red one and a blue circle
        let expr = Expression::parse("triangle & blue").unwrap();
        let c = composed(&[], &exact, &expr).unwrap();
        let f = c.at_noise(0.1).unwrap();
        let pick = |shape: &str, colour: &str| {
            let i = data.attrs.iter().position(|a| a.has(shape) && a.has(colour)).unwrap();
            data.images.narrow(0, i as i64, 1)
        };
        let tri_red = pick("triangle", "red");
        // a blue triangle: the red triangle's pixels moved to the blue channel (blue triangles are held out)
        let tri_blue = Tensor::cat(&[tri_red.narrow(1, 1, 2), tri_red.narrow(1, 0, 1)], 1);
        let circle_blue = pick("circle", "blue");
        let fv = |x: &Tensor| f64::try_from(f.f(x)).unwrap();
        assert!(fv(&tri_blue) > fv(&tri_red) + 10.0 && fv(&tri_blue) > fv(&circle_blue) + 10.0);
    }

    #[test]
    fn chance_of_a_joint_target_is_one_over_the_combinations() {
        let e = Expression::parse("triangle & blue").unwrap();
        let r = score_images("t", true, "m", &e, &[], &[AttributeKind::Shape, AttributeKind::Colour], 0.0);
        assert!((r.chance - 1.0 / 9.0).abs() < 1e-12);
        let e = Expression::parse("triangle & !blue").unwrap();
        let r = score_images("t", true, "m", &e, &[], &[AttributeKind::Shape, AttributeKind::Colour], 0.0);
        assert!((r.chance - 2.0 / 9.0).abs() < 1e-12);
    }
}
