//! PNG figures for people: sample scatter plots, heat maps, image grids, line plots, and labelled
//! grids of panels.
//!
//! Every function renders with `plotters` into an in-memory RGB buffer using the DejaVu Sans font
//! embedded in this crate (no system fonts needed), writes the PNG atomically to `path` (a
//! temporary file in the same folder, then a rename), and returns the image too, so it can also
//! be sent to TensorBoard with [`crate::TensorBoardWriter::add_image`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, RGBColor};
use tch::{Device, Kind, Tensor};

use crate::colormap::viridis;
use crate::error::{LogError, Result};
use crate::fsutil::{encode_png, write_atomic};

/// DejaVu Sans (see `assets/README.md` and `assets/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Font family names registered with plotters (all map to DejaVu Sans).
const FAMILIES: [&str; 3] = ["sans-serif", "serif", "monospace"];

/// Registers the embedded font with plotters (once per process).
pub fn ensure_fonts() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for fam in FAMILIES {
            register_font(fam, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())?;
        }
        Ok(())
    })
    .clone()
    .map_err(LogError::invalid)
}

pub(crate) type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A distinct colour for series `i` (ten colours, then repeating).
pub fn series_color(i: usize) -> RGBColor {
    const P: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (230, 85, 13),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (100, 100, 100),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

fn plot_err(path: &Path, msg: impl std::fmt::Display) -> LogError {
    LogError::Plot { path: path.to_path_buf(), msg: msg.to_string() }
}

/// Renders a `w`×`h` white canvas with `draw` and returns the image.
pub(crate) fn render(path: &Path, w: u32, h: u32, draw: impl FnOnce(&Area) -> DrawResult) -> Result<RgbImage> {
    ensure_fonts()?;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(path, "buffer size mismatch"))
}

/// Encodes `img` as PNG and writes it atomically to `path`.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let bytes = encode_png(img).map_err(|e| plot_err(path, e))?;
    write_atomic(path, &bytes)
}

/// Axis tick text: up to 4 decimals without trailing zeros in `[1e-3, 1e5)`, else scientific.
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// `v` with 3 significant digits (trailing zeros trimmed); scientific outside `[1e-3, 1e5)`.
fn sig3(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.1e}")
    }
}

pub(crate) fn tick(v: &f64) -> String {
    tick_label(*v)
}

/// A fixed axes box `[x_min, x_max] × [y_min, y_max]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxesBox {
    /// Left edge.
    pub x_min: f64,
    /// Right edge.
    pub x_max: f64,
    /// Bottom edge.
    pub y_min: f64,
    /// Top edge.
    pub y_max: f64,
}

impl AxesBox {
    /// The box `[x.0, x.1] × [y.0, y.1]`; errors unless both ranges are finite and non-empty.
    pub fn new(x: (f64, f64), y: (f64, f64)) -> Result<Self> {
        let b = AxesBox { x_min: x.0, x_max: x.1, y_min: y.0, y_max: y.1 };
        b.check()?;
        Ok(b)
    }

    /// The square `[-half, half]²`.
    pub fn square(half: f64) -> Result<Self> {
        Self::new((-half, half), (-half, half))
    }

    fn check(&self) -> Result<()> {
        let ok = [self.x_min, self.x_max, self.y_min, self.y_max].iter().all(|v| v.is_finite())
            && self.x_min < self.x_max
            && self.y_min < self.y_max;
        if ok {
            Ok(())
        } else {
            Err(LogError::invalid(format!("bad axes box {self:?}: need finite min < max")))
        }
    }

    /// Whether `p` lies inside (edges included).
    pub fn contains(&self, p: [f32; 2]) -> bool {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        (self.x_min..=self.x_max).contains(&x) && (self.y_min..=self.y_max).contains(&y)
    }
}

/// Copies an `[N, 2]` tensor (any kind or device) into points.
///
/// # Shapes
/// `t`: `[N, 2]`.
pub fn points_from_tensor(t: &Tensor) -> Result<Vec<[f32; 2]>> {
    let size = t.size();
    if size.len() != 2 || size[1] != 2 {
        return Err(LogError::invalid(format!("points must have shape [N, 2], got {size:?}")));
    }
    let flat = t.detach().f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?.f_reshape([-1])?;
    let v = Vec::<f32>::try_from(&flat)?;
    Ok(v.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
}

fn inside(points: &[[f32; 2]], bbox: &AxesBox) -> (Vec<(f64, f64)>, usize) {
    let pts: Vec<(f64, f64)> =
        points.iter().filter(|p| bbox.contains(**p)).map(|p| (f64::from(p[0]), f64::from(p[1]))).collect();
    let outside = points.len() - pts.len();
    (pts, outside)
}

fn legend_name(name: &str, n: usize, outside: usize) -> String {
    if outside > 0 {
        format!("{name} (n={n}, {outside} outside)")
    } else {
        format!("{name} (n={n})")
    }
}

/// Scatter plot of model samples (orange) over data points (blue) in a fixed axes box.
///
/// Points outside the box (or non-finite) are not drawn; the legend counts them. The figure is
/// 640×640 pixels.
pub fn scatter_samples(
    path: &Path,
    data: &[[f32; 2]],
    samples: &[[f32; 2]],
    bbox: &AxesBox,
    title: &str,
) -> Result<RgbImage> {
    bbox.check()?;
    let (d, d_out) = inside(data, bbox);
    let (s, s_out) = inside(samples, bbox);
    let img = render(path, 640, 640, |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(bbox.x_min..bbox.x_max, bbox.y_min..bbox.y_max)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style(("sans-serif", 14))
            .draw()?;
        let blue = series_color(0);
        let orange = series_color(1);
        chart
            .draw_series(d.iter().map(|&p| Circle::new(p, 2, blue.mix(0.5).filled())))?
            .label(legend_name("data", data.len(), d_out))
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, blue.filled()));
        chart
            .draw_series(s.iter().map(|&p| Circle::new(p, 2, orange.mix(0.6).filled())))?
            .label(legend_name("samples", samples.len(), s_out))
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, orange.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    save_png(path, &img)?;
    Ok(img)
}

/// Options of [`heatmap`].
#[derive(Debug, Clone, Default)]
pub struct HeatmapOptions<'a> {
    /// Figure title.
    pub title: &'a str,
    /// Points drawn on top (white dots), e.g. data samples.
    pub points: Option<&'a [[f32; 2]]>,
    /// Fixed colour range `(low, high)`; `None` uses the finite min and max of the values.
    pub range: Option<(f64, f64)>,
    /// Label of the colour bar, e.g. `"f(x)"` or `"p(x)"`.
    pub colorbar_label: &'a str,
}

/// Heat map of a 2-D grid of values over a box, with a colour bar (viridis-like, see
/// [`crate::colormap`]). Non-finite values are drawn grey. The figure is 720×620 pixels.
///
/// `values` is row-major with `nx` columns and `ny` rows: `values[iy * nx + ix]` fills the cell
/// `[x_min + ix·dx, x_min + (ix+1)·dx] × [y_min + iy·dy, y_min + (iy+1)·dy]` with
/// `dx = (x_max - x_min) / nx`, `dy = (y_max - y_min) / ny`; row `iy = 0` is at the bottom.
///
/// # Shapes
/// `values`: `[ny, nx]` flattened row-major (length `nx * ny`).
pub fn heatmap(
    path: &Path,
    values: &[f32],
    nx: usize,
    ny: usize,
    bbox: &AxesBox,
    opts: &HeatmapOptions,
) -> Result<RgbImage> {
    bbox.check()?;
    if nx == 0 || ny == 0 || values.len() != nx * ny {
        return Err(LogError::invalid(format!(
            "heat map needs nx*ny values with nx, ny >= 1: got {} values for nx={nx}, ny={ny}",
            values.len()
        )));
    }
    let (mut lo, mut hi) = match opts.range {
        Some(r) => r,
        None => values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(f64::from(v)), b.max(f64::from(v)))),
    };
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (0.0, 1.0);
    }
    if hi <= lo {
        (lo, hi) = (lo - 0.5, lo + 0.5);
    }
    let dx = (bbox.x_max - bbox.x_min) / nx as f64;
    let dy = (bbox.y_max - bbox.y_min) / ny as f64;
    let color_of = |v: f64| {
        if v.is_finite() {
            let [r, g, b] = viridis((v - lo) / (hi - lo));
            RGBColor(r, g, b)
        } else {
            RGBColor(160, 160, 160)
        }
    };
    let img = render(path, 720, 620, |root| {
        root.fill(&WHITE)?;
        let root = root.titled(opts.title, ("sans-serif", 22))?;
        let (w, _) = root.dim_in_pixel();
        let (main, bar) = root.split_horizontally(w - 110);
        let mut chart = ChartBuilder::on(&main)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(bbox.x_min..bbox.x_max, bbox.y_min..bbox.y_max)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series((0..ny).flat_map(|iy| {
            (0..nx).map(move |ix| {
                let x0 = bbox.x_min + ix as f64 * dx;
                let y0 = bbox.y_min + iy as f64 * dy;
                let c = color_of(f64::from(values[iy * nx + ix]));
                Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], c.filled())
            })
        }))?;
        if let Some(points) = opts.points {
            let (pts, _) = inside(points, bbox);
            chart.draw_series(pts.iter().map(|&p| {
                EmptyElement::at(p)
                    + Circle::new((0, 0), 2, WHITE.filled())
                    + Circle::new((0, 0), 2, BLACK.mix(0.6).stroke_width(1))
            }))?;
        }
        let mut cb = ChartBuilder::on(&bar)
            .margin_top(12)
            .margin_bottom(48)
            .margin_right(8)
            .y_label_area_size(62)
            .build_cartesian_2d(0f64..1f64, lo..hi)?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc(opts.colorbar_label)
            .y_label_formatter(&tick)
            .axis_desc_style(("sans-serif", 14))
            .label_style(("sans-serif", 12))
            .draw()?;
        let steps = 128;
        cb.draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new([(0.0, a), (1.0, b)], color_of(0.5 * (a + b)).filled())
        }))?;
        Ok(())
    })?;
    save_png(path, &img)?;
    Ok(img)
}

/// Arranges a batch of images in a grid (like torchvision's `make_grid`), without writing a file.
///
/// Values are mapped linearly from `range = (low, high)` to 0..255 and clamped. `nrow` is the
/// number of images per grid row. Images are separated by a 2-pixel grey border. One channel is
/// shown as grey.
///
/// # Shapes
/// `images`: `[N, C, H, W]` with `C` 1 or 3 (or `[N, H, W]`, taken as `C = 1`), any kind/device.
pub fn image_grid_image(images: &Tensor, range: (f64, f64), nrow: usize) -> Result<RgbImage> {
    let size = images.size();
    let (n, c, h, w) = match *size.as_slice() {
        [n, c, h, w] => (n, c, h, w),
        [n, h, w] => (n, 1, h, w),
        _ => return Err(LogError::invalid(format!("image grid needs [N, C, H, W] images, got shape {size:?}"))),
    };
    if n < 1 || h < 1 || w < 1 || !(c == 1 || c == 3) {
        return Err(LogError::invalid(format!("image grid needs N, H, W >= 1 and C in {{1, 3}}, got shape {size:?}")));
    }
    if nrow == 0 {
        return Err(LogError::invalid("image grid needs nrow >= 1"));
    }
    let (lo, hi) = range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(LogError::invalid(format!("image value range {range:?} needs low < high")));
    }
    let flat = images.detach().f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?.f_reshape([-1])?;
    let data = Vec::<f32>::try_from(&flat)?;
    let (n, c, h, w) = (n as usize, c as usize, h as usize, w as usize);
    let pad = 2usize;
    let cols = nrow.min(n);
    let rows = n.div_ceil(cols);
    let gw = cols * (w + pad) + pad;
    let gh = rows * (h + pad) + pad;
    let mut img = RgbImage::from_pixel(gw as u32, gh as u32, Rgb([128, 128, 128]));
    let to_u8 = |v: f32| {
        let t = ((f64::from(v) - lo) / (hi - lo)).clamp(0.0, 1.0);
        if t.is_nan() {
            0
        } else {
            (t * 255.0).round() as u8
        }
    };
    for k in 0..n {
        let (gx, gy) = (pad + (k % cols) * (w + pad), pad + (k / cols) * (h + pad));
        let base = k * c * h * w;
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| to_u8(data[base + ch * h * w + y * w + x]);
                let rgb = if c == 1 {
                    let g = px(0);
                    [g, g, g]
                } else {
                    [px(0), px(1), px(2)]
                };
                img.put_pixel((gx + x) as u32, (gy + y) as u32, Rgb(rgb));
            }
        }
    }
    Ok(img)
}

/// [`image_grid_image`], written as a PNG to `path`.
///
/// # Shapes
/// `images`: `[N, C, H, W]` with `C` 1 or 3.
pub fn image_grid(path: &Path, images: &Tensor, range: (f64, f64), nrow: usize) -> Result<RgbImage> {
    let img = image_grid_image(images, range, nrow)?;
    save_png(path, &img)?;
    Ok(img)
}

/// One line of a [`line_plot`]: a run's name and its `(step, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry (e.g. the run or method name).
    pub name: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A named series.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points }
    }
}

/// Options of [`line_plot`].
#[derive(Debug, Clone, Default)]
pub struct LinePlotOptions<'a> {
    /// Figure title.
    pub title: &'a str,
    /// X axis label, e.g. `"step"`.
    pub x_label: &'a str,
    /// Y axis label, e.g. the metric's name.
    pub y_label: &'a str,
    /// Logarithmic y axis (points with y <= 0 are then dropped).
    pub log_y: bool,
}

/// A line plot of one metric for several runs, with a legend of their names. Non-finite points
/// are dropped. The figure is 800×520 pixels.
pub fn line_plot(path: &Path, series: &[Series], opts: &LinePlotOptions) -> Result<RgbImage> {
    let ty = |y: f64| if opts.log_y { y.log10() } else { y };
    let cleaned: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!opts.log_y || *y > 0.0))
                .map(|&(x, y)| (x, ty(y)))
                .collect()
        })
        .collect();
    let all = cleaned.iter().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = all
        .fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| {
            (a.min(x), b.max(x), c.min(y), d.max(y))
        });
    if !x0.is_finite() {
        return Err(LogError::invalid(format!("line plot {} has no finite point to draw", path.display())));
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 0.5, x0 + 0.5);
    }
    if y1 <= y0 {
        (y0, y1) = (y0 - 0.5, y0 + 0.5);
    }
    let ym = 0.05 * (y1 - y0);
    let (y0, y1) = (y0 - ym, y1 + ym);
    let log_y = opts.log_y;
    let img = render(path, 800, 520, |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(opts.title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let y_fmt = |v: &f64| {
            if log_y {
                sig3(10f64.powf(*v))
            } else {
                tick_label(*v)
            }
        };
        chart
            .configure_mesh()
            .x_desc(opts.x_label)
            .y_desc(if log_y { format!("{} (log scale)", opts.y_label) } else { opts.y_label.to_string() })
            .x_label_formatter(&tick)
            .y_label_formatter(&y_fmt)
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .light_line_style(BLACK.mix(0.05))
            .draw()?;
        for (i, (s, pts)) in series.iter().zip(&cleaned).enumerate() {
            let c = series_color(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    save_png(path, &img)?;
    Ok(img)
}

/// Text size in pixels with the embedded font.
fn text_size(text: &str, size: f64) -> Result<(u32, u32)> {
    ensure_fonts()?;
    ("sans-serif", size)
        .into_font()
        .box_size(text)
        .map_err(|e| LogError::invalid(format!("cannot lay out text '{text}': {e:?}")))
}

/// Lays out images as a labelled grid: `panels[r][c]` goes to row `r`, column `c`, with
/// `row_titles` on the left, `col_titles` on top and an optional overall `title`. Panels keep
/// their size and are centred in cells as large as the largest panel; a `None` panel is drawn
/// as a grey "missing" box.
///
/// `row_titles` must be empty or have one entry per row; `col_titles` likewise per column; all
/// rows must have the same number of panels.
pub fn compose_images(
    path: &Path,
    panels: &[Vec<Option<RgbImage>>],
    row_titles: &[&str],
    col_titles: &[&str],
    title: Option<&str>,
) -> Result<RgbImage> {
    let rows = panels.len();
    let cols = panels.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 || panels.iter().any(|r| r.len() != cols) {
        return Err(LogError::invalid(format!(
            "figure grid {} needs at least one row, and the same number (>= 1) of panels in each",
            path.display()
        )));
    }
    if !row_titles.is_empty() && row_titles.len() != rows {
        return Err(LogError::invalid(format!(
            "{} row titles for {rows} rows of {}",
            row_titles.len(),
            path.display()
        )));
    }
    if !col_titles.is_empty() && col_titles.len() != cols {
        return Err(LogError::invalid(format!(
            "{} column titles for {cols} columns of {}",
            col_titles.len(),
            path.display()
        )));
    }
    let (label_size, title_size) = (22.0, 28.0);
    let gap = 10u32;
    let mut cell_w = panels.iter().flatten().flatten().map(|p| p.width()).max().unwrap_or(200);
    let cell_h = panels.iter().flatten().flatten().map(|p| p.height()).max().unwrap_or(200);
    for t in col_titles {
        cell_w = cell_w.max(text_size(t, label_size)?.0 + gap);
    }
    let mut left = gap;
    for t in row_titles {
        left = left.max(text_size(t, label_size)?.0 + 2 * gap);
    }
    let title_h = match title {
        Some(t) if !t.is_empty() => text_size(t, title_size)?.1 + 2 * gap,
        _ => 0,
    };
    let col_h = if col_titles.is_empty() { 0 } else { text_size("Ag", label_size)?.1 + 2 * gap };
    let top = gap + title_h + col_h;
    let mut width = left + cols as u32 * (cell_w + gap);
    let height = top + rows as u32 * (cell_h + gap);
    if let Some(t) = title {
        width = width.max(text_size(t, title_size)?.0 + 2 * gap);
    }
    let cell_x = |c: usize| left + c as u32 * (cell_w + gap);
    let cell_y = |r: usize| top + r as u32 * (cell_h + gap);

    let mut img = render(path, width, height, |root| {
        root.fill(&WHITE)?;
        if let Some(t) = title {
            let style = ("sans-serif", title_size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new(t.to_string(), ((width / 2) as i32, (gap + title_h / 2) as i32), style))?;
        }
        let style = ("sans-serif", label_size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        for (c, t) in col_titles.iter().enumerate() {
            let x = cell_x(c) + cell_w / 2;
            let y = gap + title_h + col_h / 2;
            root.draw(&Text::new(t.to_string(), (x as i32, y as i32), style.clone()))?;
        }
        let rstyle = ("sans-serif", label_size).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        for (r, t) in row_titles.iter().enumerate() {
            let y = cell_y(r) + cell_h / 2;
            root.draw(&Text::new(t.to_string(), ((left - gap) as i32, y as i32), rstyle.clone()))?;
        }
        for (r, row) in panels.iter().enumerate() {
            for (c, p) in row.iter().enumerate() {
                if p.is_none() {
                    let (x, y) = (cell_x(c) as i32, cell_y(r) as i32);
                    root.draw(&Rectangle::new(
                        [(x, y), (x + cell_w as i32, y + cell_h as i32)],
                        RGBColor(235, 235, 235).filled(),
                    ))?;
                    root.draw(&Text::new(
                        "missing",
                        (x + cell_w as i32 / 2, y + cell_h as i32 / 2),
                        style.clone().color(&RGBColor(120, 120, 120)),
                    ))?;
                }
            }
        }
        Ok(())
    })?;
    for (r, row) in panels.iter().enumerate() {
        for (c, p) in row.iter().enumerate() {
            if let Some(p) = p {
                let x = cell_x(c) + (cell_w - p.width()) / 2;
                let y = cell_y(r) + (cell_h - p.height()) / 2;
                image::imageops::replace(&mut img, p, i64::from(x), i64::from(y));
            }
        }
    }
    save_png(path, &img)?;
    Ok(img)
}

/// [`compose_images`] with panels read from PNG files (`None` for a missing panel). Used for
/// "rows = methods, columns = datasets" figures. Errors name the panel file that cannot be read.
pub fn compose_grid(
    path: &Path,
    panels: &[Vec<Option<PathBuf>>],
    row_titles: &[&str],
    col_titles: &[&str],
    title: Option<&str>,
) -> Result<RgbImage> {
    let images = panels
        .iter()
        .map(|row| {
            row.iter()
                .map(|p| {
                    p.as_ref()
                        .map(|p| {
                            image::open(p)
                                .map(|i| i.to_rgb8())
                                .map_err(|e| LogError::Plot { path: p.clone(), msg: format!("cannot read panel: {e}") })
                        })
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    compose_images(path, &images, row_titles, col_titles, title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_color(img: &RgbImage, pred: impl Fn(&Rgb<u8>) -> bool) -> usize {
        img.pixels().filter(|p| pred(p)).count()
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(100.0), "100");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(-1.5), "-1.5");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2.5e-5), "2.5e-5");
        assert_eq!(tick_label(3e6), "3.0e6");
        assert_eq!(sig3(10f64.powf(0.2)), "1.58");
        assert_eq!(sig3(0.398107), "0.398");
        assert_eq!(sig3(0.1), "0.1");
        assert_eq!(sig3(250.0), "250");
    }

    #[test]
    fn text_renders_with_embedded_font() {
        let (w, h) = text_size("Hello", 20.0).unwrap();
        assert!(w > 30 && h > 10, "{w}x{h}");
        assert!(text_size("Hello, world", 20.0).unwrap().0 > w);
    }

    #[test]
    fn image_grid_places_pixels_exactly() {
        // Two 1-channel 2x2 images in [-1, 1]: image 0 all -1 (black), image 1 all +1 (white).
        let t = Tensor::cat(
            &[
                Tensor::full([1, 1, 2, 2], -1.0, (Kind::Float, Device::Cpu)),
                Tensor::full([1, 1, 2, 2], 1.0, (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        let img = image_grid_image(&t, (-1.0, 1.0), 2).unwrap();
        // width = 2 * (2 + 2) + 2 = 10, height = 1 * (2 + 2) + 2 = 6.
        assert_eq!(img.dimensions(), (10, 6));
        assert_eq!(img.get_pixel(2, 2), &Rgb([0, 0, 0]));
        assert_eq!(img.get_pixel(6, 3), &Rgb([255, 255, 255]));
        assert_eq!(img.get_pixel(0, 0), &Rgb([128, 128, 128]));
        // nrow = 1 stacks them vertically.
        assert_eq!(image_grid_image(&t, (-1.0, 1.0), 1).unwrap().dimensions(), (6, 10));
        // RGB channels land in the right place; 0 maps to the middle of the range.
        let rgb = Tensor::from_slice(&[1.0f32, 0.0, 0.5]).reshape([1, 3, 1, 1]);
        let img = image_grid_image(&rgb, (0.0, 1.0), 8).unwrap();
        assert_eq!(img.get_pixel(2, 2), &Rgb([255, 0, 128]));
        assert!(image_grid_image(&rgb.reshape([3, 1]), (0.0, 1.0), 1).is_err());
        assert!(image_grid_image(&rgb, (1.0, 0.0), 1).is_err());
    }

    #[test]
    fn figures_are_written_and_have_expected_colours() {
        let dir = tempfile::tempdir().unwrap();
        let bbox = AxesBox::square(2.0).unwrap();
        let data: Vec<[f32; 2]> = (0..200).map(|i| [(i as f32 / 100.0) - 1.0, 0.5]).collect();
        let samples: Vec<[f32; 2]> = (0..200).map(|i| [0.3, (i as f32 / 100.0) - 1.0]).collect();
        let p = dir.path().join("scatter.png");
        let img = scatter_samples(&p, &data, &samples, &bbox, "samples vs data").unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(back, img);
        // Orange sample dots and blue data dots are both visible.
        assert!(count_color(&img, |q| q.0[0] > 200 && q.0[1] < 160 && q.0[2] < 120) > 100);
        assert!(count_color(&img, |q| q.0[2] > 150 && q.0[0] < 120) > 100);

        // Heat map of f(x, y) = x on a 4x3 grid: left column darkest, right brightest.
        let (nx, ny) = (4, 3);
        let vals: Vec<f32> = (0..nx * ny).map(|k| (k % nx) as f32).collect();
        let opts = HeatmapOptions { title: "f(x) = x", colorbar_label: "f", ..Default::default() };
        let hm = heatmap(&dir.path().join("hm.png"), &vals, nx, ny, &bbox, &opts).unwrap();
        let low = viridis(0.0);
        let high = viridis(1.0);
        assert!(count_color(&hm, |q| q.0 == low) > 1000);
        assert!(count_color(&hm, |q| q.0 == high) > 1000);
        assert!(heatmap(&dir.path().join("x.png"), &vals, 5, 3, &bbox, &opts).is_err());

        let series = vec![
            Series::new("cd", vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)]),
            Series::new("sm", vec![(0.0, 2.0), (2.0, 0.1)]),
        ];
        let lp = LinePlotOptions { title: "nll", x_label: "step", y_label: "nll", log_y: true };
        line_plot(&dir.path().join("line.png"), &series, &lp).unwrap();

        let grid = compose_grid(
            &dir.path().join("grid.png"),
            &[vec![Some(p.clone()), None]],
            &["CD"],
            &["ring", "moons"],
            Some("samples"),
        )
        .unwrap();
        assert!(grid.width() >= 2 * 640 && grid.height() > 640);
        let err = compose_grid(&dir.path().join("g2.png"), &[vec![Some(dir.path().join("nope.png"))]], &[], &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.png"), "{err}");
    }

    #[test]
    fn figure_in_unwritable_folder_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let p = file.join("fig.png");
        let t = Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu));
        let err = image_grid(&p, &t, (0.0, 1.0), 1).unwrap_err().to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
}
