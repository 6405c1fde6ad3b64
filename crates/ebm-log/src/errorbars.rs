//! Error-bar plots: one value with its spread per category (e.g. a metric's mean ± sd over seeds for each
//! point of a hyper-parameter sweep).

use std::path::Path;

use image::RgbImage;
use plotters::prelude::*;

use crate::error::{LogError, Result};
use crate::plot::{render, save_png, series_color, tick};

/// One category of an [`error_bar_image`]: its axis label, centre and half-width (`None`: nothing to draw,
/// e.g. no finished run).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Label under the axis.
    pub label: String,
    /// `(centre, half-width)`, e.g. `(mean, sd)`; a non-finite half-width draws the point alone.
    pub value: Option<(f64, f64)>,
}

/// Options of [`error_bar_image`].
#[derive(Debug, Clone, Default)]
pub struct ErrorBarOptions<'a> {
    /// Figure title (e.g. the metric).
    pub title: &'a str,
    /// X axis label (e.g. the swept keys).
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// Colour index ([`crate::plot::series_color`]).
    pub color: usize,
}

/// A 560×420 figure: for each bar, a dot at the centre and a vertical bar of ± the half-width with caps,
/// at x = 0, 1, 2, … labelled with the bars' labels.
///
/// # Errors
/// No bar with a finite value, or a drawing failure.
pub fn error_bar_image(bars: &[Bar], opts: &ErrorBarOptions) -> Result<RgbImage> {
    let here = Path::new("error bar plot");
    let pts: Vec<(f64, f64, f64)> = bars
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let (m, s) = b.value?;
            let s = if s.is_finite() { s.abs() } else { 0.0 };
            m.is_finite().then_some((i as f64, m, s))
        })
        .collect();
    if pts.is_empty() {
        return Err(LogError::invalid(format!("error bar plot '{}' has no finite value", opts.title)));
    }
    let lo = pts.iter().map(|p| p.1 - p.2).fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.1 + p.2).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
    let pad = 0.08 * (hi - lo);
    let n = bars.len();
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let c = series_color(opts.color);
    render(here, 560, 420, |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(opts.title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(52)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), (lo - pad)..(hi + pad))?;
        let x_fmt = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n.max(1))
            .x_desc(opts.x_label)
            .y_desc(opts.y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&tick)
            .disable_x_mesh()
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 12))
            .light_line_style(BLACK.mix(0.05))
            .draw()?;
        let cap = 0.12;
        for &(x, m, s) in &pts {
            let style = c.stroke_width(2);
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, m - s), (x, m + s)], style)))?;
            for y in [m - s, m + s] {
                chart.draw_series(std::iter::once(PathElement::new(vec![(x - cap, y), (x + cap, y)], style)))?;
            }
            chart.draw_series(std::iter::once(Circle::new((x, m), 5, c.filled())))?;
        }
        Ok(())
    })
}

/// [`error_bar_image`] written to `path` as PNG.
///
/// # Errors
/// As [`error_bar_image`], or an unwritable file.
pub fn error_bar_plot(path: &Path, bars: &[Bar], opts: &ErrorBarOptions) -> Result<RgbImage> {
    let img = error_bar_image(bars, opts)?;
    save_png(path, &img)?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn colored_rows(img: &RgbImage, color: (u8, u8, u8)) -> Vec<u32> {
        let mut rows: Vec<u32> =
            img.enumerate_pixels().filter(|(_, _, p)| (p[0], p[1], p[2]) == color).map(|(_, y, _)| y).collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    #[test]
    fn taller_bars_cover_more_rows() {
        let bar = |v| Bar { label: "x".into(), value: Some(v) };
        let opts = ErrorBarOptions { title: "m", ..Default::default() };
        let RGBColor(r, g, b) = series_color(0);
        let narrow = error_bar_image(&[bar((0.0, 0.1)), bar((10.0, 0.1))], &opts).unwrap();
        let wide = error_bar_image(&[bar((0.0, 3.0)), bar((10.0, 0.1))], &opts).unwrap();
        assert_eq!((narrow.width(), narrow.height()), (560, 420));
        let (n, w) = (colored_rows(&narrow, (r, g, b)).len(), colored_rows(&wide, (r, g, b)).len());
        assert!(w > n + 20, "wide bar rows {w}, narrow {n}");
    }

    #[test]
    fn nothing_to_draw_is_an_error_and_missing_values_are_skipped() {
        let opts = ErrorBarOptions { title: "empty", ..Default::default() };
        let none = Bar { label: "a".into(), value: None };
        assert!(error_bar_image(std::slice::from_ref(&none), &opts).is_err());
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("e.png");
        let one = Bar { label: "b".into(), value: Some((1.0, f64::NAN)) };
        error_bar_plot(&p, &[none, one], &opts).unwrap();
        assert!(image::open(&p).is_ok());
    }
}
