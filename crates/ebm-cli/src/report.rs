//! `ebm report SWEEP_DIR`: one row per grid point of a sweep, with the number of finished seeds and the
//! mean ± sd over seeds of every metric in the runs' `summary.json`.
//!
//! Writes `report.md` (a markdown table, also printed), `report.csv` (a `_mean` and an `_sd` column per
//! metric) and `report.png` (mean ± sd per grid point for the first four metrics). Runs that are not
//! finished are listed under the table, never silently dropped; their points count only the finished seeds.

use crate::sweep::{grid, run_dir, Manifest, RunState};
use anyhow::{Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Metrics shown first, in this order, when present; the others follow alphabetically.
const PREFERRED: [&str; 4] = ["test_nll", "kl", "mmd2", "final_loss"];
/// Metrics drawn in `report.png`.
const PLOTTED: usize = 4;

/// `ebm report`: tabulate a sweep.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The sweep folder (it holds `sweep.json`).
    pub sweep_dir: PathBuf,
}

/// Mean and sample standard deviation of one metric over a point's finished seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (`n - 1` in the denominator); NaN for fewer than two values.
    pub sd: f64,
}

impl Stats {
    /// Stats of `xs` (`None` when empty).
    pub fn of(xs: &[f64]) -> Option<Stats> {
        let n = xs.len();
        if n == 0 {
            return None;
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd =
            if n < 2 { f64::NAN } else { (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() };
        Some(Stats { n, mean, sd })
    }

    /// `mean ± sd`, or the mean alone for one value.
    pub fn display(&self) -> String {
        if self.sd.is_nan() {
            fmt_num(self.mean)
        } else {
            format!("{} ± {}", fmt_num(self.mean), fmt_num(self.sd))
        }
    }
}

/// One row of the report: a grid point.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The point's index in the sweep.
    pub index: usize,
    /// The point's value of each grid axis, as written.
    pub values: Vec<String>,
    /// Finished runs of the point.
    pub finished: usize,
    /// All runs of the point.
    pub total: usize,
    /// Metric name → stats over the finished runs.
    pub stats: BTreeMap<String, Stats>,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The grid keys (`point` when the sweep has no grid).
    pub keys: Vec<String>,
    /// Metric names, in column order.
    pub metrics: Vec<String>,
    /// One row per grid point.
    pub rows: Vec<Row>,
    /// Runs that are not finished: (run name, point label and seed, state).
    pub unfinished: Vec<(String, String, String)>,
    /// Number of runs.
    pub runs: usize,
    /// Metrics with the same value in every finished run (e.g. a count of test points), left out of the
    /// table: (name, value).
    pub constant: Vec<(String, f64)>,
}

/// Sorts metric names: [`PREFERRED`] first, the others alphabetically; drops repeats.
pub fn order_metrics(names: &mut Vec<String>) {
    names.sort_by_key(|k| (PREFERRED.iter().position(|p| p == k).unwrap_or(PREFERRED.len()), k.clone()));
    names.dedup();
}

/// `x` with 4 significant digits; scientific outside `[1e-3, 1e5)`.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        format!("{x}")
    } else if a == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.3e}")
    }
}

/// Reads the sweep in `dir`: its manifest and every run's `summary.json`.
///
/// # Errors
/// A folder without a readable `sweep.json`.
pub fn collect(dir: &Path) -> Result<Report> {
    let m = Manifest::load(dir)?;
    let keys: Vec<String> =
        if m.grid.is_empty() { vec!["point".into()] } else { m.grid.iter().map(|a| a.key.clone()).collect() };
    let mut values: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); m.points.len()];
    let mut finished = vec![0usize; m.points.len()];
    let mut total = vec![0usize; m.points.len()];
    let mut unfinished = Vec::new();
    for r in &m.runs {
        total[r.point] += 1;
        match RunState::of(&run_dir(dir, r)) {
            RunState::Finished(s) => {
                finished[r.point] += 1;
                for (k, v) in s.get("metrics").and_then(|v| v.as_object()).into_iter().flatten() {
                    if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
                        values[r.point].entry(k.clone()).or_default().push(x);
                    }
                }
            }
            state => {
                let label = format!("{}, seed {}", grid::point_label(&m.points[r.point].overrides), r.seed);
                unfinished.push((r.name().to_string(), label, state.describe()));
            }
        }
    }
    let mut metrics: Vec<String> = values.iter().flat_map(|v| v.keys().cloned()).collect();
    order_metrics(&mut metrics);
    let mut constant = Vec::new();
    if finished.iter().sum::<usize>() > 1 {
        metrics.retain(|k| {
            let mut all = values.iter().filter_map(|v| v.get(k)).flatten();
            let first = *all.next().expect("a listed metric has a value");
            let same =
                all.all(|x| *x == first) && values.iter().zip(&finished).all(|(v, &f)| f == 0 || v.contains_key(k));
            if same {
                constant.push((k.clone(), first));
            }
            !same
        });
    }
    let rows = m
        .points
        .iter()
        .map(|p| Row {
            index: p.index,
            values: if m.grid.is_empty() {
                vec![p.index.to_string()]
            } else {
                p.overrides.iter().map(|o| o.split_once('=').map_or(o.clone(), |(_, v)| v.to_string())).collect()
            },
            finished: finished[p.index],
            total: total[p.index],
            stats: values[p.index].iter().filter_map(|(k, xs)| Some((k.clone(), Stats::of(xs)?))).collect(),
        })
        .collect();
    Ok(Report { keys, metrics, rows, unfinished, runs: m.runs.len(), constant })
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The markdown table (one row per point) followed by the list of unfinished runs.
pub fn markdown(r: &Report) -> String {
    let mut head: Vec<String> = vec!["#".into()];
    head.extend(r.keys.iter().map(|k| md_cell(k)));
    head.push("finished".into());
    head.extend(r.metrics.iter().map(|m| md_cell(m)));
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for row in &r.rows {
        let mut cells: Vec<String> = vec![row.index.to_string()];
        cells.extend(row.values.iter().map(|v| format!("`{}`", md_cell(v))));
        cells.push(format!("{}/{}", row.finished, row.total));
        cells.extend(r.metrics.iter().map(|m| row.stats.get(m).map_or("–".into(), Stats::display)));
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    if !r.constant.is_empty() {
        let c: Vec<String> = r.constant.iter().map(|(k, v)| format!("{k} = {}", fmt_num(*v))).collect();
        let _ = writeln!(s, "\nThe same in every run: {}.", c.join(", "));
    }
    if !r.unfinished.is_empty() {
        let _ = writeln!(s, "\nUnfinished runs ({} of {}):", r.unfinished.len(), r.runs);
        for (name, label, state) in &r.unfinished {
            let _ = writeln!(s, "- {name} ({label}): {state}");
        }
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV table: the grid keys, `finished`, `total`, then `<metric>_mean` and `<metric>_sd` per metric
/// (empty where there is no value, and `sd` for a single seed).
pub fn csv(r: &Report) -> String {
    let mut head: Vec<String> = vec!["point".into()];
    head.extend(r.keys.iter().map(|k| csv_field(k)));
    head.extend(["finished".into(), "total".into()]);
    for m in &r.metrics {
        head.push(csv_field(&format!("{m}_mean")));
        head.push(csv_field(&format!("{m}_sd")));
    }
    let mut s = head.join(",") + "\n";
    for row in &r.rows {
        let mut cells: Vec<String> = vec![row.index.to_string()];
        cells.extend(row.values.iter().map(|v| csv_field(v)));
        cells.extend([row.finished.to_string(), row.total.to_string()]);
        for m in &r.metrics {
            let num = |x: f64| if x.is_finite() { format!("{x}") } else { String::new() };
            match row.stats.get(m) {
                Some(st) => cells.extend([num(st.mean), num(st.sd)]),
                None => cells.extend([String::new(), String::new()]),
            }
        }
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    s
}

/// `report.png`: mean ± sd per grid point for each of the first [`PLOTTED`] metrics (two panels a row).
/// Returns false (drawing nothing) when no run has finished.
///
/// # Errors
/// A drawing or writing failure.
pub fn figure(r: &Report, path: &Path, title: &str) -> Result<bool> {
    use ebm_log::errorbars::{error_bar_image, Bar, ErrorBarOptions};
    // Values as tick labels when they fit under their point, else the point numbers of the table.
    let labels: Vec<String> = r.rows.iter().map(|row| row.values.join(", ")).collect();
    let fits = labels.iter().all(|l| l.chars().count() * r.rows.len() <= 60);
    let x_label = if fits { r.keys.join(", ") } else { "grid point (# in report.md)".into() };
    let mut panels = Vec::new();
    for (i, m) in r.metrics.iter().take(PLOTTED).enumerate() {
        let bars: Vec<Bar> = r
            .rows
            .iter()
            .zip(&labels)
            .map(|(row, l)| Bar {
                label: if fits { l.clone() } else { row.index.to_string() },
                value: row.stats.get(m).map(|s| (s.mean, s.sd)),
            })
            .collect();
        let opts = ErrorBarOptions { title: m, x_label: &x_label, y_label: m, color: i };
        panels.push(Some(error_bar_image(&bars, &opts)?));
    }
    if panels.is_empty() {
        return Ok(false);
    }
    let rows: Vec<Vec<_>> = panels.chunks(2).map(<[_]>::to_vec).collect();
    let rows: Vec<Vec<_>> = rows
        .into_iter()
        .map(|mut r| {
            if r.len() < 2 && panels.len() > 1 {
                r.push(None);
            }
            r
        })
        .collect();
    ebm_log::plot::compose_images(path, &rows, &[], &[], Some(title))?;
    Ok(true)
}

/// Runs `ebm report`: writes `report.md`, `report.csv` and `report.png` into the sweep folder and prints the
/// table.
///
/// # Errors
/// Not a sweep folder, or unwritable files.
pub fn run(args: ReportArgs) -> Result<()> {
    let dir = &args.sweep_dir;
    let r = collect(dir)?;
    let table = markdown(&r);
    let done = r.runs - r.unfinished.len();
    let name = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let name = name.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned());
    let md = format!(
        "# Sweep {name}\n\n{done} of {} runs finished; mean ± sd over the finished seeds of each grid point.\n\n{table}",
        r.runs
    );
    ebm_log::write_atomic(&dir.join("report.md"), md.as_bytes()).context("cannot write report.md")?;
    ebm_log::write_atomic(&dir.join("report.csv"), csv(&r).as_bytes()).context("cannot write report.csv")?;
    let png = dir.join("report.png");
    let drew = figure(&r, &png, &format!("{name}: mean ± sd over seeds"))?;
    println!("mean ± sd over the finished seeds of each grid point:\n");
    print!("{table}");
    println!(
        "\n{done} of {} runs finished; wrote {}/report.md, report.csv{}",
        r.runs,
        dir.display(),
        if drew { ", report.png" } else { " (no figure: no finished run)" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep of 2 points × 3 seeds where point 1's seed 2 never finished.
    fn fake_sweep() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("c.toml");
        std::fs::write(&c, "[model]\nkind = \"mlp\"\n[train]\niters = 10\n").unwrap();
        let m = crate::sweep::plan(&c, &["model.hidden=[8],[16,16]".into()], Some("0..3"), &[]).unwrap();
        m.save(t.path()).unwrap();
        for r in &m.runs {
            let d = run_dir(t.path(), r);
            std::fs::create_dir_all(d.join("checkpoints/step-00000050")).unwrap();
            if r.point == 1 && r.seed == 2 {
                continue;
            }
            let kl = (r.point * 10 + r.seed as usize) as f64; // point 0: 0, 1, 2; point 1: 10, 11
            let s = format!(
                r#"{{"status": "finished", "steps": 10, "seconds": 1.5,
                    "metrics": {{"kl": {kl}, "test_nll": 2.5, "zeta": {}, "note": "text", "bad": null}}}}"#,
                r.seed
            );
            std::fs::write(d.join("summary.json"), s).unwrap();
        }
        t
    }

    #[test]
    fn stats_use_the_sample_sd() {
        let s = Stats::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.n, s.mean, s.sd), (3, 2.0, 1.0));
        assert!(Stats::of(&[4.0]).unwrap().sd.is_nan());
        assert_eq!(Stats::of(&[4.0]).unwrap().display(), "4");
        assert!(Stats::of(&[]).is_none());
        assert_eq!(fmt_num(2.81234), "2.812");
        assert_eq!(fmt_num(0.1), "0.1");
        assert_eq!(fmt_num(1234.6), "1235");
        assert_eq!(fmt_num(2.5e-6), "2.500e-6");
    }

    #[test]
    fn rows_hold_mean_and_sd_over_finished_seeds() {
        let t = fake_sweep();
        let r = collect(t.path()).unwrap();
        assert_eq!(r.keys, ["model.hidden"]);
        assert_eq!(r.metrics, ["kl", "zeta"]);
        assert_eq!(r.constant, [("test_nll".to_string(), 2.5)]);
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[1].values, ["[16,16]"]);
        assert_eq!((r.rows[0].finished, r.rows[0].total), (3, 3));
        assert_eq!((r.rows[1].finished, r.rows[1].total), (2, 3));
        let kl = r.rows[0].stats["kl"];
        assert_eq!((kl.mean, kl.sd), (1.0, 1.0));
        let kl = r.rows[1].stats["kl"];
        assert!((kl.mean - 10.5).abs() < 1e-12 && (kl.sd - 0.5f64.sqrt()).abs() < 1e-12, "{kl:?}");
        assert_eq!(r.unfinished.len(), 1);
        assert_eq!(r.unfinished[0].0, "p001-s2");
        assert!(r.unfinished[0].2.contains("update 50"), "{:?}", r.unfinished[0]);
    }

    #[test]
    fn markdown_csv_and_figure_are_written() {
        let t = fake_sweep();
        run(ReportArgs { sweep_dir: t.path().to_path_buf() }).unwrap();
        let md = std::fs::read_to_string(t.path().join("report.md")).unwrap();
        assert!(md.contains("| # | model.hidden | finished | kl | zeta |"), "{md}");
        assert!(md.contains("| 0 | `[8]` | 3/3 | 1 ± 1 | 1 ± 1 |"), "{md}");
        assert!(md.contains("| 1 | `[16,16]` | 2/3 | 10.5 ± 0.7071 | 0.5 ± 0.7071 |"), "{md}");
        assert!(md.contains("The same in every run: test_nll = 2.5."), "{md}");
        assert!(md.contains("- p001-s2 (model.hidden=[16,16], seed 2): unfinished"), "{md}");
        let csv = std::fs::read_to_string(t.path().join("report.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "point,model.hidden,finished,total,kl_mean,kl_sd,zeta_mean,zeta_sd");
        assert_eq!(lines[1], "0,[8],3,3,1,1,1,1");
        assert!(lines[2].starts_with("1,\"[16,16]\",2,3,10.5,"), "{}", lines[2]);
        let png = image::open(t.path().join("report.png"));
        assert!(png.is_ok_and(|i| i.width() > 1000), "report.png should hold two panels side by side");
    }

    #[test]
    fn a_sweep_with_nothing_finished_still_reports() {
        let t = fake_sweep();
        for e in std::fs::read_dir(t.path().join("runs")).unwrap() {
            let _ = std::fs::remove_file(e.unwrap().path().join("summary.json"));
        }
        let r = collect(t.path()).unwrap();
        assert!(r.metrics.is_empty());
        assert_eq!(r.unfinished.len(), 6);
        assert!(!figure(&r, &t.path().join("x.png"), "t").unwrap());
        assert!(markdown(&r).contains("| 0 | `[8]` | 0/3 |"));
    }
}
