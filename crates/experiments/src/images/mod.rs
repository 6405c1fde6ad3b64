//! `exp_images`: an image EBM (conv energy, IGEBM/UvA recipe) trained on 8×8 digits, MNIST-5k or a folder of
//! images, with sample and buffer grids in TensorBoard, a grid of fresh long-run samples from noise at the
//! end (`samples.png`), and evaluations that need no `Z` or estimate it:
//! - a small classifier trained on the training split scores the samples (mean max-probability: quality;
//!   entropy of the class histogram: diversity);
//! - annealed importance sampling from the uniform distribution on the data box gives `log Z` and the test
//!   log-likelihood;
//! - `f` separates test images from noise and from pixel-shuffled test images (AUROC).
//!
//! Methods: `replay` (replay buffer with restarts, the recipe that works), and as comparisons `cdk` (CD-k from
//! the data batch), `dsm` (denoising score matching), `jem` (a conv classifier's logits as an EBM, trained on
//! the labels and the replay buffer; its classifier is scored by test accuracy and calibration) and `drl`
//! (diffusion recovery likelihood on a noise-conditional net, sampled by recovery; its density is the model
//! at the lowest noise level). Every AIS table has the full-covariance Gaussian baseline beside it.

use crate::common::{Outcome, RunContext, RunOptions};
use anyhow::{Context, Result};
use ebm_core::classifier::{sample_quality, DigitClassifier};
use ebm_core::data::images::{default_data_dir, ImageDataset};
use ebm_core::energy::conditional::{ConditionalConfig, ConditionalNet, PerSampleLabels};
use ebm_core::energy::{ConvConfig, ConvEnergy, EnergyModel};
use ebm_core::eval::{auroc, f_of};
use ebm_core::objective::jem::{accuracy, expected_calibration_error};
use ebm_core::objective::Objective;
use ebm_core::sampler::{Langevin, RecoverySampler, Sampler};
use ebm_core::train::{DataSource, LabelledData, TensorData, TrainConfig, Trainer};
use ebm_log::plot;
use ebm_log::{MetricsSink, ProgressSink};
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

mod ais_eval;
mod config;
mod models;
mod report;

pub use config::{
    default_config_path, AisBaseSetting, AisSettings, BaseComponents, DataSettings, DrlSettings, EvalSettings,
    ImageMethod, ImagesConfig, JemSettings, LogSettings, SamplingSettings,
};
pub use models::{ConvLogits, GaussianBaseline, GaussianLl};
pub use report::{markdown, AisReport, ClassifierReport, GaussianReport, ImagesReport};

/// Each image with its pixels (and channels) in a random order of its own.
fn shuffle_pixels(x: &Tensor) -> Tensor {
    let b = x.size()[0];
    let flat = x.view([b, -1]);
    let keys = flat.rand_like();
    let idx = keys.argsort(1, false);
    flat.gather(1, &idx, false).view(x.size().as_slice())
}

/// Upscales small images (nearest neighbour) so a grid stays legible: at least 32 pixels per image side.
fn legible(x: &Tensor) -> Tensor {
    let h = x.size()[2];
    let s = (32 + h - 1) / h;
    if s <= 1 {
        return x.shallow_clone();
    }
    let w = x.size()[3];
    x.to_kind(Kind::Float).upsample_nearest2d([h * s, w * s], None, None)
}

/// Runs the experiment; returns the run folder and the report.
pub fn run(cfg: &ImagesConfig, opts: &RunOptions) -> Result<Outcome<(PathBuf, ImagesReport)>> {
    let cfg = &cfg.with_absolute_paths()?;
    cfg.validate()?;
    let t_start = Instant::now();
    let dataset: ImageDataset = cfg.data.dataset.parse()?;
    let data_dir = cfg.data.data_dir.clone().unwrap_or_else(default_data_dir);
    let loaded =
        crate::common::config::user_keys(dataset.load(&data_dir, &cfg.data.folder, cfg.data.scale), config::KEYS)
            .with_context(|| format!("loading data set '{dataset}'"))?;
    for s in &loaded.skipped {
        eprintln!("warning: skipped {}: not a readable image ({})", s.path.display(), s.reason);
    }
    if loaded.resized > 0 {
        eprintln!("ebm-rs: resized {} image(s) to the data set's size", loaded.resized);
    }
    // the model's memory, now that the image size is known (still before the run folder)
    crate::common::config::check_memory(&cfg.memory_parts(&loaded.set.event_shape(), loaded.set.len()))?;
    let (train, test) = loaded.set.split(cfg.data.test_fraction, cfg.seed)?;
    let event = train.event_shape();
    let range = cfg.data.scale.range();
    eprintln!(
        "ebm-rs: {} — {} train / {} test images of shape {:?}, method {}",
        dataset,
        train.len(),
        test.len(),
        event,
        cfg.label()
    );
    // the files the run reads go into its fingerprint: a resume refuses changed data
    let data_files: Vec<PathBuf> = match &dataset {
        ImageDataset::Folder(dir) => vec![dir.clone()],
        other => other.file(&data_dir).into_iter().collect(),
    };
    let ctx = RunContext::for_config_with_data_files(cfg, "exp_images", opts, &data_files)?;
    let r = run_in(cfg, &ctx, Loaded { dataset, loaded, train, test, event, range, t_start });
    Outcome::from_result(r, ctx.run_dir.path())
}

/// The data of a run, loaded before the run folder exists.
struct Loaded {
    dataset: ImageDataset,
    loaded: ebm_core::data::images::FolderLoad,
    train: ebm_core::data::images::ImageSet,
    test: ebm_core::data::images::ImageSet,
    event: Vec<i64>,
    range: (f64, f64),
    t_start: Instant,
}

fn run_in(cfg: &ImagesConfig, ctx: &RunContext, data: Loaded) -> Result<(PathBuf, ImagesReport)> {
    let Loaded { dataset, loaded, train, test, event, range, t_start } = data;
    let (device, run_dir) = (ctx.device, &ctx.run_dir);

    // The classifier that scores samples (labelled sets only).
    let classifier = match (&train.labels, cfg.eval.classifier_enabled) {
        (Some(labels), true) if train.class_names.len() >= 2 => {
            let t0 = Instant::now();
            tch::manual_seed(cfg.seed.wrapping_add(11) as i64);
            let clf =
                DigitClassifier::train(&train.images, labels, train.class_names.len(), &cfg.eval.classifier, device)?;
            let acc = clf.accuracy(&test.images, test.labels.as_deref().unwrap_or_default())?;
            eprintln!("ebm-rs: classifier test accuracy {:.2}% ({:.1}s)", 100.0 * acc, t0.elapsed().as_secs_f64());
            Some((clf, acc))
        }
        _ => None,
    };

    // Model and objective.
    let model_cfg = ConvConfig { in_channels: event[0], image_size: [event[1], event[2]], ..cfg.model.clone() };
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let model: Box<dyn EnergyModel> = match cfg.method {
        ImageMethod::Replay | ImageMethod::Cdk | ImageMethod::Dsm => Box::new(ConvEnergy::new(&vs.root(), &model_cfg)?),
        ImageMethod::Jem => {
            if train.labels.is_none() {
                anyhow::bail!("method jem needs a labelled data set ('{dataset}' has no labels)");
            }
            Box::new(ConvLogits::new(&vs.root(), &model_cfg, &train.class_names)?)
        }
        ImageMethod::Drl => {
            let net_cfg = ConditionalConfig { noise_conditional: true, ..cfg.drl.model.clone() };
            Box::new(crate::common::config::user_keys(
                ConditionalNet::new(&vs.root(), &net_cfg, &event, &["image"]),
                config::KEYS,
            )?)
        }
    };
    let model = &*model;
    let objective = cfg.method.objective(cfg).build(model, device)?;
    // the grids and the classifier's score of fresh samples go out at every `log.image_every` updates
    let train_cfg = TrainConfig { eval_every: cfg.log.image_every, ..cfg.train.clone() };
    let part = ctx.sub_run("")?;
    let (mut trainer, resumed_at) = part.attach(Trainer::new(train_cfg, &vs, model, objective, cfg.seed)?)?;
    let start_step = resumed_at.unwrap_or(0);
    let progress = ProgressSink::new(Some(cfg.train.iters as u64)).with_print_every(cfg.log.image_every as u64);
    progress.bar().set_position(start_step as u64);
    let mut sink = part.sinks(progress, resumed_at)?;
    if resumed_at.is_none() {
        sink.text("config", 0, &format!("```toml\n{}\n```", crate::common::config::to_toml(cfg)?))?;
    }
    let nrow = cfg.sampling.nrow;
    let grid = |x: &Tensor| {
        plot::image_grid_image(&legible(&x.to_device(Device::Cpu)), range, nrow)
            .map_err(ebm_core::train::SinkError::from)
    };
    sink.image(
        "data/test_images",
        0,
        &grid(&test.images.narrow(0, 0, (cfg.log.grid_n as i64).min(test.len() as i64)))?,
    )?;

    let sampler = Langevin::new(cfg.langevin())?;
    let recovery = RecoverySampler::new(cfg.recovery())?;
    let noise = cfg.noise_init();
    // fresh samples from noise: Langevin on f, or (drl) recovery from N(0, σ_max²) down to the lowest level
    let fresh_samples = |m: &dyn EnergyModel, n: i64, langevin_steps: usize| -> ebm_core::Result<Tensor> {
        Ok(match cfg.method {
            ImageMethod::Drl => {
                let x0 = Tensor::randn([n].iter().chain(&event).copied().collect::<Vec<_>>(), (Kind::Float, device))
                    * cfg.drl.scales.sigma_max;
                recovery.run(m, &x0, recovery.total_steps())?.x
            }
            _ => sampler.run(m, &noise.sample(n, &event, device), langevin_steps)?.x,
        })
    };
    let grid_n = cfg.log.grid_n as i64;
    let test_f_set = test.images.narrow(0, 0, (cfg.eval.ood_n as i64).min(test.len() as i64)).to_device(device);
    let mut eval = |step: usize, m: &dyn EnergyModel, obj: &dyn Objective, sink: &mut dyn MetricsSink| {
        if let Some(chains) = obj.chains(0) {
            let b = chains.narrow(0, 0, grid_n.min(chains.size()[0]));
            sink.image("samples/buffer", step as u64, &grid(&b)?)?;
        }
        let fresh = fresh_samples(m, grid_n, cfg.log.fresh_steps)?;
        sink.image("samples/fresh_from_noise", step as u64, &grid(&fresh)?)?;
        if let Some((clf, _)) = &classifier {
            let q = sample_quality(&clf.probs(&fresh)?)?;
            sink.scalar("eval/fresh_mean_max_prob", step as u64, q.mean_max_prob)?;
            sink.scalar("eval/fresh_class_entropy", step as u64, q.class_entropy)?;
        }
        let m = density(cfg, m)?;
        let f_test = tch::no_grad(|| m.f(&test_f_set));
        let f_noise = tch::no_grad(|| m.f(&noise.sample(test_f_set.size()[0], &event, device)));
        let a = auroc(
            &Vec::<f64>::try_from(f_test.to_kind(Kind::Double))?,
            &Vec::<f64>::try_from(f_noise.to_kind(Kind::Double))?,
        );
        sink.scalar("eval/ood_auroc_noise", step as u64, a)?;
        Ok(())
    };
    let t0 = Instant::now();
    let mut data: Box<dyn DataSource> = match (cfg.method, train.labels_tensor()) {
        (ImageMethod::Jem, Some(labels)) => {
            Box::new(LabelledData::new(train.images.to_device(device), labels.to_device(device))?)
        }
        _ => Box::new(TensorData::new(train.images.to_device(device))?),
    };
    let outcome = match &cfg.eval.checkpoint {
        Some(path) => {
            let step = ebm_core::train::load_model_weights(&vs, path, &trainer.objective().name())
                .with_context(|| format!("eval.checkpoint = {}", path.display()))?;
            eprintln!("ebm-rs: evaluating the weights of {} (update {step}); no training", path.display());
            ebm_core::train::TrainOutcome { steps: step, interrupted: false, rollbacks: 0, last_checkpoint: None }
        }
        None => trainer.run(&mut *data, &mut sink, Some(&mut eval))?,
    };
    sink.flush()?;
    part.finished(&outcome)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    eprintln!("ebm-rs: trained {} updates in {:.1}s", outcome.steps, train_seconds);

    // Fresh long-run samples from noise.
    tch::manual_seed(cfg.seed.wrapping_add(7) as i64);
    let samples = if cfg.method == ImageMethod::Jem && cfg.jem.class_conditional_samples {
        // chain i samples f(x | i mod L)
        let n = cfg.sampling.n as i64;
        let labels = Tensor::arange(n, (Kind::Int64, device)).remainder(model.num_labels());
        sampler.run(&PerSampleLabels::new(model, &labels), &noise.sample(n, &event, device), cfg.sampling.steps)?.x
    } else {
        fresh_samples(model, cfg.sampling.n as i64, cfg.sampling.steps)?
    };
    let samples_png = run_dir.path().join("samples.png");
    let img = plot::image_grid(&samples_png, &legible(&samples), range, cfg.sampling.nrow)?;
    sink.image("final/samples_from_noise", outcome.steps as u64, &img)?;
    if let Some(chains) = trainer.objective().chains(0) {
        let b = chains.narrow(0, 0, (cfg.sampling.n as i64).min(chains.size()[0]));
        plot::image_grid(&run_dir.figure_path("buffer.png"), &legible(&b), range, cfg.sampling.nrow)?;
    }
    let n_show = (cfg.sampling.n as i64).min(test.len() as i64);
    plot::image_grid(
        &run_dir.figure_path("test_images.png"),
        &legible(&test.images.narrow(0, 0, n_show)),
        range,
        cfg.sampling.nrow,
    )?;

    // Evaluation.
    let (classifier_test_accuracy, sample_q, test_q) = match &classifier {
        Some((clf, acc)) => {
            let q = sample_quality(&clf.probs(&samples)?)?;
            let tq = sample_quality(&clf.probs(&test.images.narrow(0, 0, n_show))?)?;
            (Some(*acc), Some(q), Some(tq))
        }
        None => (None, None, None),
    };
    let jem_classifier = match (cfg.method, test.labels_tensor()) {
        (ImageMethod::Jem, Some(labels)) => {
            let probs = tch::no_grad(|| {
                ebm_core::objective::jem::logits(model, &test.images.to_device(device)).softmax(1, Kind::Double)
            });
            let labels = labels.to_device(device);
            Some(ClassifierReport {
                test_accuracy: accuracy(&probs, &labels)?,
                ece: expected_calibration_error(&probs, &labels, cfg.eval.ece_bins)?,
                bins: cfg.eval.ece_bins,
            })
        }
        _ => None,
    };
    let trained = model;
    let dens = density(cfg, model)?;
    let model = &*dens;
    let ais_report = if cfg.eval.ais.enabled {
        let (r, chains) = ais_eval::evaluate(cfg, trained, &train, &test, device)?;
        let n = (cfg.sampling.n as i64).min(chains.size()[0]);
        plot::image_grid(&run_dir.figure_path("ais_chains.png"), &legible(&chains.narrow(0, 0, n)), range, nrow)?;
        Some(r)
    } else {
        None
    };
    let gaussian = if cfg.eval.ais.enabled {
        let ridge = match cfg.eval.gaussian_ridge {
            Some(r) => r,
            None => GaussianBaseline::dequantisation_ridge(&train.images).context(
                "the Gaussian baseline's ridge: every training pixel has the same value; set eval.gaussian_ridge",
            )?,
        };
        let g = GaussianBaseline::fit(&train.images, ridge)?;
        let ll = g.test_ll(&test.images)?;
        let d: i64 = event.iter().product();
        Some(GaussianReport {
            ridge,
            test_ll: ll.mean,
            test_ll_sd: ll.sd,
            test_ll_std_err: ll.std_err,
            test_bits_per_dim: -ll.mean / (d as f64 * std::f64::consts::LN_2),
        })
    } else {
        None
    };
    tch::manual_seed(cfg.seed.wrapping_add(17) as i64);
    let n_ood = (cfg.eval.ood_n as i64).min(test.len() as i64);
    let pos = test.images.narrow(0, 0, n_ood);
    let f_pos = f_of(model, &pos, device, "test images")?;
    let f_noise = f_of(model, &noise.sample(n_ood, &event, Device::Cpu), device, "uniform noise")?;
    let f_shuffled = f_of(model, &shuffle_pixels(&pos), device, "shuffled test images")?;
    let report = ImagesReport {
        dataset: dataset.to_string(),
        method: cfg.method.name().to_string(),
        image_shape: event.clone(),
        n_train: train.len(),
        n_test: test.len(),
        skipped_files: loaded.skipped.iter().map(|s| s.path.display().to_string()).collect(),
        resized: loaded.resized,
        iters: outcome.steps,
        train_seconds,
        ms_per_iter: 1e3 * train_seconds / outcome.steps.saturating_sub(start_step).max(1) as f64,
        langevin_temperature: cfg.langevin().temperature(),
        classifier_test_accuracy,
        samples: sample_q,
        test_images: test_q,
        ais: ais_report,
        gaussian,
        jem_classifier,
        ood_auroc_noise: auroc(&f_pos, &f_noise),
        ood_auroc_shuffled: auroc(&f_pos, &f_shuffled),
        total_seconds: t_start.elapsed().as_secs_f64(),
        samples_png: samples_png.clone(),
    };
    let mut finals = vec![
        ("final/ood_auroc_noise", report.ood_auroc_noise),
        ("final/ood_auroc_shuffled", report.ood_auroc_shuffled),
        ("final/ms_per_iter", report.ms_per_iter),
    ];
    if let Some(q) = &report.samples {
        finals.push(("final/samples_mean_max_prob", q.mean_max_prob));
        finals.push(("final/samples_class_entropy", q.class_entropy));
    }
    if let Some(a) = &report.ais {
        finals.push(("final/ais_log_z", a.log_z));
        finals.push(("final/test_ll", a.test_ll));
    }
    if let Some(g) = &report.gaussian {
        finals.push(("final/gaussian_test_ll", g.test_ll));
    }
    if let Some(c) = &report.jem_classifier {
        finals.push(("final/jem_test_accuracy", c.test_accuracy));
        finals.push(("final/jem_ece", c.ece));
    }
    sink.scalars(outcome.steps as u64, &finals)?;
    let md = markdown(cfg, &report);
    sink.text("results", outcome.steps as u64, &md)?;
    sink.flush()?;
    run_dir.write_atomic("metrics.json", serde_json::to_string_pretty(&report)?.as_bytes())?;
    run_dir.write_atomic("results.md", md.as_bytes())?;
    println!("{md}");
    Ok((run_dir.path().to_path_buf(), report))
}

/// The density the evaluations read: the model itself, or (drl) its view at the lowest noise level.
fn density<'a>(cfg: &ImagesConfig, m: &'a dyn EnergyModel) -> ebm_core::Result<Box<dyn EnergyModel + 'a>> {
    Ok(match cfg.method {
        ImageMethod::Drl => m.at_noise(cfg.drl.scales.sigma_min)?,
        _ => Box::new(m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_pixels_keep_each_image_values() {
        tch::manual_seed(0);
        let x = Tensor::arange(2 * 9, (Kind::Float, Device::Cpu)).view([2, 1, 3, 3]);
        let s = shuffle_pixels(&x);
        assert_eq!(s.size(), x.size());
        for i in 0..2 {
            let sorted = s.get(i).flatten(0, -1).sort(0, false).0;
            assert!(bool::try_from(sorted.eq_tensor(&x.get(i).flatten(0, -1)).all()).unwrap());
        }
        assert!(!bool::try_from(s.eq_tensor(&x).all()).unwrap());
    }
}
