//! The 2-D part: one MLP EBM per attribute of the rotated 8 Gaussians, compositions sampled in the box and
//! checked against exact grid answers.

use super::report::Row2d;
use super::{fmt_shares, progress, tv, PoeConfig, Toy2dSettings};
use crate::common::RunContext;
use anyhow::{bail, Context, Result};
use ebm_core::data::Toy2d;
use ebm_core::energy::compose::{resample_in_box, BoxRestricted, Composition, Expression, Offset};
use ebm_core::energy::{EnergyModel, GaussianMixture, Mlp};
use ebm_core::eval::{grid_log_z, grid_mode_weights, GridLogZ, GridSpec};
use ebm_core::objective::{ContrastiveConfig, Negatives, ObjectiveConfig};
use ebm_core::sampler::{BufferConfig, Init, Mala, MalaConfig, Sampler, SamplerConfig};
use ebm_core::train::{TensorData, Trainer};
use ebm_log::plot::{self, AxesBox, HeatmapOptions};
use ebm_log::{MetricsSink, ProgressSink, TensorBoardWriter};
use std::path::PathBuf;
use tch::{nn, Tensor};

/// The 2-D attribute names.
pub const ATTRS_2D: [&str; 4] = ["right", "left", "upper", "lower"];

/// Whether a 2-D point has an attribute: `right` x > 0, `left` x < 0, `upper` y > 0, `lower` y < 0.
pub fn has_2d(name: &str, p: [f64; 2]) -> bool {
    match name {
        "right" => p[0] > 0.0,
        "left" => p[0] < 0.0,
        "upper" => p[1] > 0.0,
        "lower" => p[1] < 0.0,
        _ => false,
    }
}

pub(super) fn objective_2d(t: &Toy2dSettings) -> ObjectiveConfig {
    let b = t.box_half;
    ObjectiveConfig::Contrastive(ContrastiveConfig {
        negatives: Negatives::Replay(BufferConfig {
            capacity: t.cd.buffer_capacity,
            restart_prob: t.cd.restart_prob,
            init: Init::Uniform { low: -b, high: b },
        }),
        k: t.cd.k,
        sampler: SamplerConfig::Langevin(t.cd.langevin.clone()),
        alpha: t.cd.alpha,
    })
}

fn rotate(x: &Tensor, deg: f64) -> Tensor {
    let (s, c) = deg.to_radians().sin_cos();
    let r = Tensor::from_slice(&[c as f32, s as f32, -s as f32, c as f32]).view([2, 2]).to_device(x.device());
    // row vectors: x' = x Rᵀ with R = [[c, -s], [s, c]]
    x.matmul(&r)
}

struct Expert2d {
    name: String,
    _vs: nn::VarStore,
    model: Mlp,
    log_z: f64,
    grid: GridLogZ,
    data: Tensor,
}

/// Share of grid mass (a normalised density on the cells) in cells whose centre satisfies `expr`.
fn grid_satisfied(gz: &GridLogZ, expr: &Expression) -> f64 {
    let dens = gz.density();
    let (xs, ys) = (gz.grid.x_centers(), gz.grid.y_centers());
    let nx = gz.grid.nx();
    let (mut sat, mut total) = (0.0, 0.0);
    for (j, y) in ys.iter().enumerate() {
        for (i, x) in xs.iter().enumerate() {
            let d = f64::from(dens[j * nx + i]);
            total += d;
            if expr.satisfied_by(&|n| has_2d(n, [*x, *y])) {
                sat += d;
            }
        }
    }
    sat / total
}

fn sample_shares(samples: &Tensor, centers: &[[f64; 2]], expr: &Expression) -> Result<(f64, Vec<f64>, f64)> {
    let pts = plot::points_from_tensor(samples)?;
    let n = pts.len() as f64;
    let mut modes = vec![0.0; centers.len()];
    let (mut sat, mut far) = (0.0, 0.0);
    for p in &pts {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        if expr.satisfied_by(&|nm| has_2d(nm, [x, y])) {
            sat += 1.0;
        }
        let (k, d2) = centers
            .iter()
            .enumerate()
            .map(|(k, c)| (k, (x - c[0]).powi(2) + (y - c[1]).powi(2)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        modes[k] += 1.0 / n;
        if d2 > 0.25 {
            far += 1.0;
        }
    }
    Ok((sat / n, modes, far / n))
}

pub(super) struct Toy2dOut {
    pub(super) rows: Vec<Row2d>,
    pub(super) figure: PathBuf,
}

pub(super) fn run_2d(
    cfg: &PoeConfig,
    ctx: &RunContext,
    tb: &mut TensorBoardWriter,
    multi: &indicatif::MultiProgress,
) -> Result<Toy2dOut> {
    let (device, run_dir) = (ctx.device, &ctx.run_dir);
    let t = &cfg.toy;
    let b = t.box_half;
    let bbox = [-b, b, -b, b];
    let ax = AxesBox::square(b)?;
    let grid = GridSpec::new(bbox, t.grid_n, t.grid_n)?;
    let toy = Toy2d::EightGaussians;
    let m = toy.modes().context("8 Gaussians have modes")?;
    let centers: Vec<[f64; 2]> = {
        let c: Vec<f32> = m.centers.iter().flat_map(|c| [c[0] as f32, c[1] as f32]).collect();
        let r = rotate(&Tensor::from_slice(&c).view([-1, 2]), t.rotate_deg);
        plot::points_from_tensor(&r)?.iter().map(|p| [f64::from(p[0]), f64::from(p[1])]).collect()
    };
    let data = rotate(&toy.sample(t.n_train, cfg.seed), t.rotate_deg).to_device(device);
    let pts = plot::points_from_tensor(&data)?;
    let exprs: Vec<Expression> =
        t.expressions.iter().map(|e| Expression::parse_known(e, &ATTRS_2D)).collect::<std::result::Result<_, _>>()?;
    let mut used: Vec<String> = Vec::new();
    for e in &exprs {
        for n in e.names() {
            if !used.contains(&n) {
                used.push(n);
            }
        }
    }

    // One expert per attribute, trained on the points that have it.
    let mut experts: Vec<Expert2d> = Vec::new();
    for name in &used {
        let rows: Vec<i64> = pts
            .iter()
            .enumerate()
            .filter(|(_, p)| has_2d(name, [p[0].into(), p[1].into()]))
            .map(|(i, _)| i as i64)
            .collect();
        if rows.len() < 10 {
            bail!("attribute '{name}' has only {} training points", rows.len());
        }
        let sub = data.index_select(0, &Tensor::from_slice(&rows).to_device(device));
        tch::manual_seed(cfg.seed as i64);
        let vs = nn::VarStore::new(device);
        let model = Mlp::new(&vs.root(), &t.model)?;
        let objective = objective_2d(t).build(&model, device)?;
        let part = ctx.sub_run(format!("2d/{name}"))?;
        let (mut trainer, resumed_at) =
            part.attach(Trainer::new(t.train.clone(), &vs, &model, objective, cfg.seed)?)?;
        let bar = progress(multi, t.train.iters as u64, format!("2-D expert '{name}'"));
        bar.set_position(resumed_at.unwrap_or(0) as u64);
        let mut sink = part.sinks(ProgressSink::with_bar(bar.clone()), resumed_at)?;
        let outcome = trainer.run(&mut TensorData::new(sub.shallow_clone())?, &mut sink, None)?;
        sink.flush()?;
        part.finished(&outcome)?;
        bar.finish();
        let gz = grid_log_z(&BoxRestricted::new(&model, -b, b)?, &grid, device)?;
        experts.push(Expert2d { name: name.clone(), _vs: vs, model, log_z: gz.log_z, grid: gz, data: sub });
    }

    // The true attribute densities: equal mixtures of the modes with the attribute (normalised).
    let truth: Vec<(String, GaussianMixture)> = used
        .iter()
        .map(|n| {
            let means: Vec<Vec<f64>> = centers.iter().filter(|c| has_2d(n, **c)).map(|c| c.to_vec()).collect();
            let w = vec![1.0; means.len()];
            Ok((n.clone(), GaussianMixture::isotropic(&w, &means, m.std, device)?))
        })
        .collect::<Result<_>>()?;

    let tmp = run_dir.figures_dir().join(".panel.png");
    let mut panels = Vec::new();
    let mut row_titles = Vec::new();
    // first row: the experts
    let mut expert_row = Vec::new();
    for e in &experts {
        let sub = plot::points_from_tensor(&e.data.narrow(0, 0, e.data.size()[0].min(800)))?;
        let title = format!("expert '{}' (trained)", e.name);
        let o = HeatmapOptions { title: &title, points: Some(&sub), range: None, colorbar_label: "p(x)" };
        expert_row.push(Some(plot::heatmap(&tmp, &e.grid.density(), t.grid_n, t.grid_n, &ax, &o)?));
    }
    let cols = expert_row.len().max(2);
    expert_row.resize(cols, None);
    panels.push(expert_row);
    row_titles.push("experts".to_string());

    let mut rows = Vec::new();
    let sampler = Mala::new(MalaConfig { step_size: t.sampling.mala_step, record: false })?;
    for (src, expr) in t.expressions.iter().zip(&exprs) {
        let has_or = src.contains('|');
        let variants: Vec<bool> = if has_or && t.or_raw { vec![true, false] } else { vec![true] };
        for normalised in variants {
            let named: Vec<(String, Box<dyn EnergyModel + '_>)> = experts
                .iter()
                .map(|e| {
                    let off = if normalised { -e.log_z } else { 0.0 };
                    Ok((e.name.clone(), Box::new(Offset::new(&e.model, off)?) as Box<dyn EnergyModel>))
                })
                .collect::<Result<_>>()?;
            let comp = BoxRestricted::new(Composition::from_expression(expr, named)?, -b, b)?;
            let ideal_named: Vec<(String, Box<dyn EnergyModel + '_>)> =
                truth.iter().map(|(n, g)| (n.clone(), Box::new(g) as Box<dyn EnergyModel>)).collect();
            let ideal = BoxRestricted::new(Composition::from_expression(expr, ideal_named)?, -b, b)?;
            let gz_model = grid_log_z(&comp, &grid, device)?;
            let gz_true = grid_log_z(&ideal, &grid, device)?;
            tch::manual_seed(cfg.seed.wrapping_add(17) as i64);
            let x0 = resample_in_box(&comp, -b, b, t.sampling.n_proposals, t.sampling.n, device)?;
            let out = sampler.run(&comp, &x0, t.sampling.mala_steps)?;
            let (satisfied, modes, far) = sample_shares(&out.x, &centers, expr)?;
            let modes_model = grid_mode_weights(&gz_model, &centers);
            let modes_true = grid_mode_weights(&gz_true, &centers);
            let row = Row2d {
                expression: src.clone(),
                experts: if normalised { "normalised" } else { "raw" }.into(),
                satisfied,
                satisfied_model: grid_satisfied(&gz_model, expr),
                satisfied_true: grid_satisfied(&gz_true, expr),
                tv_model: tv(&modes, &modes_model),
                tv_true: tv(&modes, &modes_true),
                modes,
                modes_model,
                modes_true,
                far,
                acceptance: out.acceptance.unwrap_or(f64::NAN),
            };
            let spts = plot::points_from_tensor(&out.x.narrow(0, 0, out.x.size()[0].min(1500)))?;
            let tm = format!("{src}: trained + samples");
            let o = HeatmapOptions { title: &tm, points: Some(&spts), range: None, colorbar_label: "p(x)" };
            let a = plot::heatmap(&tmp, &gz_model.density(), t.grid_n, t.grid_n, &ax, &o)?;
            let tt = format!("{src}: true densities composed");
            let o = HeatmapOptions { title: &tt, points: None, range: None, colorbar_label: "p(x)" };
            let bimg = plot::heatmap(&tmp, &gz_true.density(), t.grid_n, t.grid_n, &ax, &o)?;
            // cells past the two panels stay white (the experts' row may be wider)
            let blank = image::RgbImage::from_pixel(a.width(), a.height(), image::Rgb([255, 255, 255]));
            let mut r = vec![Some(a), Some(bimg)];
            r.resize(cols, Some(blank));
            panels.push(r);
            row_titles.push(if normalised { src.clone() } else { format!("{src} (raw Z)") });
            eprintln!(
                "ebm-rs: 2-D {src} [{}]: satisfied {:.3} (model exact {:.3}, true {:.3}), modes {} (model {}, true {})",
                row.experts,
                row.satisfied,
                row.satisfied_model,
                row.satisfied_true,
                fmt_shares(&row.modes),
                fmt_shares(&row.modes_model),
                fmt_shares(&row.modes_true)
            );
            rows.push(row);
        }
    }
    let _ = std::fs::remove_file(&tmp);
    let figure = run_dir.figure_path("poe_2d.png");
    let titles: Vec<&str> = row_titles.iter().map(String::as_str).collect();
    let col_titles: Vec<&str> = vec!["trained experts composed (samples: dots)", "true attribute densities composed"];
    let mut col_titles = col_titles;
    col_titles.resize(cols, "");
    let img = plot::compose_images(
        &figure,
        &panels,
        &titles,
        &col_titles,
        Some("Composing per-attribute EBMs on the 8 Gaussians (rotated 22.5°), sampled in the box"),
    )?;
    tb.add_image("2d/compositions", 0, &img)?;
    Ok(Toy2dOut { rows, figure })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poe::slug;

    #[test]
    fn attributes_rotation_and_slugs() {
        assert!(has_2d("right", [0.1, -5.0]) && !has_2d("right", [0.0, 1.0]) && has_2d("lower", [3.0, -0.1]));
        // rotating (2, 0) by 22.5° gives (2 cos 22.5°, 2 sin 22.5°)
        let r = rotate(&Tensor::from_slice(&[2.0f32, 0.0]).view([1, 2]), 22.5);
        let v = Vec::<f32>::try_from(r.view([2])).unwrap();
        assert!((v[0] as f64 - 2.0 * 22.5f64.to_radians().cos()).abs() < 1e-6);
        assert!((v[1] as f64 - 2.0 * 22.5f64.to_radians().sin()).abs() < 1e-6);
        assert_eq!(slug("right & 0.5*!upper"), "right_and_0.5x_not_upper");
        assert_eq!(tv(&[0.5, 0.5], &[1.0, 0.0]), 0.5);
    }
}
