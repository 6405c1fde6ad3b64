//! Quality metrics for energy-based models, mostly for 2-D densities.
//!
//! Sign convention: the model is `f(x)`, the unnormalised log-density, `p_θ(x) = exp(f(x)) / Z`.
//!
//! - [`grid_log_z`]: `log Z` by normalising `exp(f)` on a midpoint grid (logsumexp in `f64`),
//!   with the grid values for heat maps.
//! - [`nll`]: test NLL, the mean over held-out data of `log Z - f(x)`.
//! - [`kl_data_model`]: `KL(p_data ‖ p_θ)`, the mean over data of `log p_data(x) - (f(x) - log Z)`,
//!   where `log p_data` has a closed form.
//! - [`mmd2_rbf`]: unbiased MMD² with an RBF kernel and median-heuristic bandwidth (any dimension).
//! - [`mode_weights`]: the share of samples nearest each mixture component, their total-variation
//!   distance to the true weights, and the share of samples far from every component.
//! - [`evaluate_2d`]: all of the above for a model against a [`Source2d`], as an [`EvalReport`].

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::check::{check_finite, check_input};
use crate::data::{Modes, Source2d};
use crate::energy::EnergyModel;
use crate::error::{invalid, EbmError, Result};

/// Default number of grid cells per axis for [`grid_log_z`] (the workload asks for ≥ 400).
pub const DEFAULT_GRID_N: usize = 400;
/// Default margin added on each side of the data's box, as a fraction of its width/height.
pub const DEFAULT_MARGIN: f64 = 0.1;
/// Points evaluated per model call (bounds memory).
const CHUNK: usize = 1 << 15;
/// Kernel-matrix entries computed per block in [`mmd2_rbf`].
const MMD_BLOCK: i64 = 1 << 22;
/// At most this many points of each sample enter the median heuristic.
const MEDIAN_POINTS: i64 = 1000;

/// A regular grid of `nx × ny` cells over a box `[xmin, xmax, ymin, ymax]`, evaluated at the
/// cell midpoints.
///
/// Points are ordered row-major with `y` outer: index `j * nx + i` is the centre of cell
/// `(i, j)`, `x_i = xmin + (i + ½)·dx`, `y_j = ymin + (j + ½)·dy`, so row `j = 0` is the bottom
/// row (`y` near `ymin`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridSpec {
    bbox: [f64; 4],
    nx: usize,
    ny: usize,
}

impl GridSpec {
    /// A grid of `nx × ny` cells over `bbox = [xmin, xmax, ymin, ymax]`.
    ///
    /// # Errors
    /// If the box is not finite with `xmin < xmax` and `ymin < ymax`, or `nx` or `ny` is below 2.
    pub fn new(bbox: [f64; 4], nx: usize, ny: usize) -> Result<Self> {
        let g = GridSpec { bbox, nx, ny };
        g.validate()?;
        Ok(g)
    }

    /// An `n × n` grid over `bbox` widened on each side by `margin` times its width (x) and
    /// height (y).
    ///
    /// # Errors
    /// If `margin` is negative or not finite, or as [`GridSpec::new`].
    pub fn with_margin(bbox: [f64; 4], margin: f64, n: usize) -> Result<Self> {
        if !(margin.is_finite() && margin >= 0.0) {
            return Err(invalid("grid margin", format!("must be finite and ≥ 0, got {margin}")));
        }
        let [x0, x1, y0, y1] = bbox;
        let (mx, my) = (margin * (x1 - x0), margin * (y1 - y0));
        GridSpec::new([x0 - mx, x1 + mx, y0 - my, y1 + my], n, n)
    }

    fn validate(&self) -> Result<()> {
        let [x0, x1, y0, y1] = self.bbox;
        if !(self.bbox.iter().all(|v| v.is_finite()) && x0 < x1 && y0 < y1) {
            return Err(invalid("grid box", format!("need finite xmin < xmax and ymin < ymax, got {:?}", self.bbox)));
        }
        if self.nx < 2 || self.ny < 2 {
            return Err(invalid("grid size", format!("need at least 2 cells per axis, got {} × {}", self.nx, self.ny)));
        }
        if self.nx.checked_mul(self.ny).is_none_or(|c| c > 1 << 28) {
            return Err(invalid("grid size", format!("{} × {} cells is too many (at most 2^28)", self.nx, self.ny)));
        }
        Ok(())
    }

    /// The box `[xmin, xmax, ymin, ymax]`.
    pub fn bbox(&self) -> [f64; 4] {
        self.bbox
    }

    /// Cells along x.
    pub fn nx(&self) -> usize {
        self.nx
    }

    /// Cells along y.
    pub fn ny(&self) -> usize {
        self.ny
    }

    /// Cell width.
    pub fn dx(&self) -> f64 {
        (self.bbox[1] - self.bbox[0]) / self.nx as f64
    }

    /// Cell height.
    pub fn dy(&self) -> f64 {
        (self.bbox[3] - self.bbox[2]) / self.ny as f64
    }

    /// Cell area `dx · dy`.
    pub fn cell_area(&self) -> f64 {
        self.dx() * self.dy()
    }

    /// The x coordinates of the cell midpoints, left to right.
    pub fn x_centers(&self) -> Vec<f64> {
        (0..self.nx).map(|i| self.bbox[0] + (i as f64 + 0.5) * self.dx()).collect()
    }

    /// The y coordinates of the cell midpoints, bottom to top.
    pub fn y_centers(&self) -> Vec<f64> {
        (0..self.ny).map(|j| self.bbox[2] + (j as f64 + 0.5) * self.dy()).collect()
    }

    /// The midpoints of grid rows `j0..j1`, in the grid's order.
    ///
    /// # Shapes
    /// Returns `[(j1 - j0) · nx, 2]`.
    ///
    /// # Errors
    /// If `j0 ≥ j1` or `j1 > ny`.
    pub fn row_points(&self, j0: usize, j1: usize, kind: Kind, device: Device) -> Result<Tensor> {
        if j0 >= j1 || j1 > self.ny {
            return Err(invalid("grid rows", format!("need j0 < j1 ≤ {}, got {j0}..{j1}", self.ny)));
        }
        let xs = self.x_centers();
        let ys = self.y_centers();
        let mut v = Vec::with_capacity(2 * (j1 - j0) * self.nx);
        for y in &ys[j0..j1] {
            for x in &xs {
                v.push(*x);
                v.push(*y);
            }
        }
        let n = ((j1 - j0) * self.nx) as i64;
        Ok(Tensor::from_slice(&v).f_reshape([n, 2])?.f_to_kind(kind)?.f_to_device(device)?)
    }

    /// All midpoints, in the grid's order.
    ///
    /// # Shapes
    /// Returns `[nx · ny, 2]`.
    pub fn points(&self, kind: Kind, device: Device) -> Result<Tensor> {
        self.validate()?;
        self.row_points(0, self.ny, kind, device)
    }
}

/// The result of [`grid_log_z`].
#[derive(Debug, Clone, PartialEq)]
pub struct GridLogZ {
    /// `log Z ≈ log Σ_cells exp(f(midpoint)) · cell area`.
    pub log_z: f64,
    /// The grid it was computed on.
    pub grid: GridSpec,
    /// `f` at every midpoint, row-major: `f[j * nx + i]` at `(x_i, y_j)`, row `j = 0` at the
    /// bottom (`ymin`). A plot that draws row 0 at the top must flip the rows.
    pub f: Vec<f32>,
    /// The largest `f` on the grid.
    pub f_max: f64,
    /// Share of the grid's mass in its outermost ring of cells: large values mean the box cuts
    /// off mass and `log Z` is underestimated.
    pub edge_mass: f64,
}

impl GridLogZ {
    /// The normalised log-density `f - log Z` at every midpoint, in the order of [`GridLogZ::f`].
    pub fn log_density(&self) -> Vec<f32> {
        self.f.iter().map(|&v| (v as f64 - self.log_z) as f32).collect()
    }

    /// The normalised density `exp(f - log Z)` at every midpoint, in the order of [`GridLogZ::f`].
    pub fn density(&self) -> Vec<f32> {
        self.f.iter().map(|&v| (v as f64 - self.log_z).exp() as f32).collect()
    }
}

/// The floating-point kind to feed `model`: that of its first parameter, else `f32`.
fn model_kind<M: EnergyModel + ?Sized>(model: &M) -> Kind {
    match model.parameters().first().map(|p| p.kind()) {
        Some(k @ (Kind::Double | Kind::Float | Kind::Half | Kind::BFloat16)) => k,
        _ => Kind::Float,
    }
}

/// `f` of one batch (already on the model's device, in its kind) as `f64`s, checked for shape.
fn f_values<M: EnergyModel + ?Sized>(model: &M, x: &Tensor, what: &str) -> Result<Vec<f64>> {
    let b = x.size()[0];
    let f = model.f(x);
    if f.size() != [b] {
        return Err(EbmError::Shape {
            what: format!("model output f on {what}"),
            expected: format!("[{b}]"),
            got: f.size(),
        });
    }
    let f = f.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?;
    Ok(Vec::<f64>::try_from(&f)?)
}

/// `f` of every row of `x`, in chunks, without gradients, moved to `device` and the model's kind.
fn f_all<M: EnergyModel + ?Sized>(model: &M, x: &Tensor, device: Device, what: &str) -> Result<Vec<f64>> {
    check_input(&model.event_shape(), x, what)?;
    let kind = model_kind(model);
    let n = x.size()[0];
    let mut out = Vec::with_capacity(n as usize);
    tch::no_grad(|| -> Result<()> {
        let mut start = 0;
        while start < n {
            let len = (CHUNK as i64).min(n - start);
            let xb = x.f_narrow(0, start, len)?.f_to_device(device)?.f_to_kind(kind)?;
            out.extend(f_values(model, &xb, what)?);
            start += len;
        }
        Ok(())
    })?;
    if let Some(i) = out.iter().position(|v| v.is_nan() || *v == f64::INFINITY) {
        return Err(EbmError::NonFinite(format!("model f on {what} (f = {} at row {i})", out[i])));
    }
    Ok(out)
}

/// `f(x)` of every row of `x: [N, *event]` as `f64`s, computed in chunks on `device` without gradients;
/// NaN or `+inf` in the output is an error naming the row (`what` names the data in errors).
pub fn f_of<M: EnergyModel + ?Sized>(model: &M, x: &Tensor, device: Device, what: &str) -> Result<Vec<f64>> {
    f_all(model, x, device, what)
}

/// `log Z = log ∫ exp(f)` by the midpoint rule on `grid`, with a logsumexp in `f64`.
/// The model runs on `device`, in chunks, without gradients, on inputs of its first
/// parameter's kind (`f32` for a model without parameters).
///
/// Only the mass inside the grid's box is counted: check [`GridLogZ::edge_mass`].
/// `f = -inf` is allowed (zero density); NaN and `+inf` are errors.
///
/// # Shapes
/// The model maps `[B, 2]` → `[B]`.
///
/// # Errors
/// If the model's event shape is not `[2]`, its output is not `[B]`, it gives NaN or `+inf` at
/// a grid point, or `f = -inf` at every grid point.
pub fn grid_log_z<M: EnergyModel + ?Sized>(model: &M, grid: &GridSpec, device: Device) -> Result<GridLogZ> {
    grid.validate()?;
    let es = model.event_shape();
    if es != [2] {
        return Err(invalid(
            "model",
            format!("grid log Z needs a 2-D model (event shape [2]), got event shape {es:?}"),
        ));
    }
    let kind = model_kind(model);
    let (nx, ny) = (grid.nx, grid.ny);
    let rows = (CHUNK / nx).max(1);
    let mut f: Vec<f64> = Vec::with_capacity(nx * ny);
    tch::no_grad(|| -> Result<()> {
        let mut j0 = 0;
        while j0 < ny {
            let j1 = (j0 + rows).min(ny);
            let pts = grid.row_points(j0, j1, kind, device)?;
            f.extend(f_values(model, &pts, "the grid")?);
            j0 = j1;
        }
        Ok(())
    })?;
    if let Some(k) = f.iter().position(|v| v.is_nan() || *v == f64::INFINITY) {
        let (x, y) = (grid.x_centers()[k % nx], grid.y_centers()[k / nx]);
        return Err(EbmError::NonFinite(format!("model f on the grid: f = {} at ({x:.4}, {y:.4})", f[k])));
    }
    let f_max = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if f_max == f64::NEG_INFINITY {
        return Err(invalid("model", format!("f = -inf at every point of the grid over {:?}: exp(f) is 0", grid.bbox)));
    }
    let mut total = 0.0;
    let mut edge = 0.0;
    for j in 0..ny {
        for i in 0..nx {
            let w = (f[j * nx + i] - f_max).exp();
            total += w;
            if i == 0 || j == 0 || i == nx - 1 || j == ny - 1 {
                edge += w;
            }
        }
    }
    Ok(GridLogZ {
        log_z: f_max + total.ln() + grid.cell_area().ln(),
        grid: *grid,
        f: f.iter().map(|&v| v as f32).collect(),
        f_max,
        edge_mass: edge / total,
    })
}

/// Test negative log-likelihood: the mean over `x` of `log Z - f(x)` (nats). Works for any
/// event shape given a `log_z`. A point with `f = -inf` makes it `+inf`.
///
/// # Shapes
/// `x: [n, *event_shape]` (any device; moved to `device` in chunks).
///
/// # Errors
/// If `x` has the wrong shape or non-finite values, `log_z` is not finite, or `f` is NaN/`+inf`.
pub fn nll<M: EnergyModel + ?Sized>(model: &M, x: &Tensor, log_z: f64, device: Device) -> Result<f64> {
    if !log_z.is_finite() {
        return Err(invalid("log_z", format!("must be finite, got {log_z}")));
    }
    let f = f_all(model, x, device, "NLL data x")?;
    Ok(log_z - f.iter().sum::<f64>() / f.len() as f64)
}

/// `KL(p_data ‖ p_θ)` estimated on data `x ~ p_data`: the mean of
/// `log p_data(x) - (f(x) - log Z)`, given the exact `log_p_data` at the same points.
///
/// # Shapes
/// `x: [n, *event_shape]`, `log_p_data: [n]`.
///
/// # Errors
/// If the shapes disagree, `log_p_data` is not finite (a data point outside the data density's
/// support), `log_z` is not finite, or `f` is NaN/`+inf`.
pub fn kl_data_model<M: EnergyModel + ?Sized>(
    model: &M,
    x: &Tensor,
    log_p_data: &Tensor,
    log_z: f64,
    device: Device,
) -> Result<f64> {
    if !log_z.is_finite() {
        return Err(invalid("log_z", format!("must be finite, got {log_z}")));
    }
    let n = x.size().first().copied().unwrap_or(0);
    if log_p_data.size() != [n] {
        return Err(EbmError::Shape {
            what: "KL log_p_data (one value per row of x)".into(),
            expected: format!("[{n}]"),
            got: log_p_data.size(),
        });
    }
    let lp = log_p_data.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?;
    let lp = Vec::<f64>::try_from(&lp)?;
    if let Some(i) = lp.iter().position(|v| !v.is_finite()) {
        return Err(invalid(
            "log_p_data",
            format!(
                "log p_data = {} at data point {i}: the point lies outside the data density's \
                 support (or the value is corrupt)",
                lp[i]
            ),
        ));
    }
    let f = f_all(model, x, device, "KL data x")?;
    let nf = f.len() as f64;
    Ok(lp.iter().sum::<f64>() / nf - f.iter().sum::<f64>() / nf + log_z)
}

/// [`kl_data_model`] against a [`Source2d`]'s exact log-density; `Ok(None)` where the source has
/// no closed form.
///
/// # Shapes
/// `x: [n, 2]` drawn from `source`.
///
/// # Errors
/// As [`kl_data_model`].
pub fn kl_to_source<M: EnergyModel + ?Sized>(
    model: &M,
    source: &Source2d,
    x: &Tensor,
    log_z: f64,
    device: Device,
) -> Result<Option<f64>> {
    match source.log_density(x)? {
        Some(lp) => Ok(Some(kl_data_model(model, x, &lp, log_z, device)?)),
        None => Ok(None),
    }
}

/// An MMD² estimate and the kernel bandwidth it used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mmd {
    /// The unbiased MMD² estimate (can be slightly negative when the samples agree).
    pub mmd2: f64,
    /// The RBF bandwidth `ℓ` in `k(a, b) = exp(-‖a - b‖² / (2ℓ²))`.
    pub bandwidth: f64,
}

/// Unbiased MMD² between samples `x` and `y` with the RBF kernel
/// `k(a, b) = exp(-‖a - b‖² / (2ℓ²))`:
/// `Σ_{i≠j} k(x_i, x_j) / (n(n-1)) + Σ_{i≠j} k(y_i, y_j) / (m(m-1)) - 2 Σ_{i,j} k(x_i, y_j) / (nm)`.
///
/// `bandwidth = None` picks `ℓ` by the median heuristic: the (lower) median distance between
/// distinct pairs of the pooled samples (at most 1000 evenly spaced points of each enter it). If
/// that median is 0 (most points coincide) the root-mean-square distance is used, and 1 if that
/// is 0 too. Computed in `f64` on `x`'s device, in blocks.
///
/// # Shapes
/// `x: [n, *event]`, `y: [m, *event]` with the same trailing size, `n, m ≥ 2`; flattened to
/// `[n, D]`, `[m, D]`.
///
/// # Errors
/// If a sample has fewer than 2 points, the trailing sizes differ, a value is NaN/Inf, or the
/// bandwidth is not finite and > 0.
pub fn mmd2_rbf(x: &Tensor, y: &Tensor, bandwidth: Option<f64>) -> Result<Mmd> {
    let (xs, ys) = (x.size(), y.size());
    if xs.len() < 2 || ys.len() < 2 || xs[0] < 2 || ys[0] < 2 || xs[1..] != ys[1..] {
        return Err(invalid(
            "MMD samples",
            format!("need [n, ...] and [m, ...] with n, m ≥ 2 and equal trailing sizes, got {xs:?} and {ys:?}"),
        ));
    }
    check_finite(x, "MMD sample x")?;
    check_finite(y, "MMD sample y")?;
    if let Some(b) = bandwidth {
        if !(b.is_finite() && b > 0.0) {
            return Err(invalid("MMD bandwidth", format!("must be finite and > 0, got {b}")));
        }
    }
    let (n, m) = (xs[0], ys[0]);
    let dev = x.device();
    let x = x.f_to_kind(Kind::Double)?.f_reshape([n, -1])?;
    let y = y.f_to_device(dev)?.f_to_kind(Kind::Double)?.f_reshape([m, -1])?;
    tch::no_grad(|| {
        let ell = match bandwidth {
            Some(b) => b,
            None => median_distance(&x, &y)?,
        };
        let gamma = 0.5 / (ell * ell);
        let kxx = kernel_sum(&x, &x, gamma, true)?;
        let kyy = kernel_sum(&y, &y, gamma, true)?;
        let kxy = kernel_sum(&x, &y, gamma, false)?;
        let (nf, mf) = (n as f64, m as f64);
        let mmd2 = kxx / (nf * (nf - 1.0)) + kyy / (mf * (mf - 1.0)) - 2.0 * kxy / (nf * mf);
        Ok(Mmd { mmd2, bandwidth: ell })
    })
}

/// Squared distances `[a_rows, b_rows]` from precomputed squared norms.
fn sq_dists(a: &Tensor, a2: &Tensor, b: &Tensor, b2: &Tensor) -> Result<Tensor> {
    let cross = a.f_mm(&b.f_tr()?)?;
    Ok(a2.f_unsqueeze(1)?.f_add(&b2.f_unsqueeze(0)?)?.f_sub(&cross.f_mul_scalar(2.0)?)?.f_clamp_min(0.0)?)
}

/// `Σ_{i,j} exp(-γ‖a_i - b_j‖²)`, leaving out `i = j` when `skip_diag` (then `a` is `b`).
fn kernel_sum(a: &Tensor, b: &Tensor, gamma: f64, skip_diag: bool) -> Result<f64> {
    let (na, nb) = (a.size()[0], b.size()[0]);
    let a2 = a.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let b2 = b.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let rows = (MMD_BLOCK / nb).max(1);
    let mut total = 0.0;
    let mut s = 0;
    while s < na {
        let len = rows.min(na - s);
        let d2 = sq_dists(&a.f_narrow(0, s, len)?, &a2.f_narrow(0, s, len)?, b, &b2)?;
        let k = d2.f_mul_scalar(-gamma)?.f_exp()?;
        total += k.f_sum(Kind::Double)?.f_double_value(&[])?;
        if skip_diag {
            total -= k.f_diagonal(s, 0, 1)?.f_sum(Kind::Double)?.f_double_value(&[])?;
        }
        s += len;
    }
    Ok(total)
}

/// At most `MEDIAN_POINTS` evenly spaced rows of `t`.
fn thin(t: &Tensor) -> Result<Tensor> {
    let n = t.size()[0];
    if n <= MEDIAN_POINTS {
        return Ok(t.shallow_clone());
    }
    let idx: Vec<i64> = (0..MEDIAN_POINTS).map(|i| i * n / MEDIAN_POINTS).collect();
    Ok(t.f_index_select(0, &Tensor::from_slice(&idx).f_to_device(t.device())?)?)
}

/// Median distance between distinct pairs of the pooled (thinned) samples; see [`mmd2_rbf`].
fn median_distance(x: &Tensor, y: &Tensor) -> Result<f64> {
    let p = Tensor::f_cat(&[thin(x)?, thin(y)?], 0)?;
    let np = p.size()[0];
    let p2 = p.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?;
    let d2 = sq_dists(&p, &p2, &p, &p2)?;
    let mask = Tensor::f_ones([np, np], (Kind::Bool, p.device()))?.f_triu(1)?;
    let pairs = d2.f_masked_select(&mask)?;
    let med = pairs.f_median()?.f_double_value(&[])?;
    if med > 0.0 {
        return Ok(med.sqrt());
    }
    let mean = pairs.f_mean(Kind::Double)?.f_double_value(&[])?;
    Ok(if mean > 0.0 { mean.sqrt() } else { 1.0 })
}

/// How samples spread over the components of a known mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeWeights {
    /// Share of all samples whose nearest centre is each component (sums to 1).
    pub shares: Vec<f64>,
    /// Total variation `½ Σ_k |shares_k - w_k|` against the true weights.
    pub tv: f64,
    /// Share of samples farther than `radius` from every centre (spurious modes, stray mass).
    pub far_share: f64,
    /// The radius used for `far_share`.
    pub radius: f64,
    /// `far_share` of exact samples from well-separated components: `exp(-radius² / (2σ²))`,
    /// the tail of a 2-D isotropic Gaussian.
    pub expected_far_share: f64,
}

/// Default radius for [`ModeWeights::far_share`], in units of the components' std.
pub const DEFAULT_FAR_STDS: f64 = 3.0;

/// Shares of `samples` nearest each centre of `modes`, their total-variation distance to the
/// true weights, and the share farther than `radius` (default `3 · modes.std`) from every centre.
///
/// # Shapes
/// `samples: [n, 2]`, `n ≥ 1`.
///
/// # Errors
/// If `samples` is not `[n, 2]` or is not finite; `modes` has no centres, a weight per centre
/// summing to 1, or a positive std; or `radius` is not finite and > 0.
pub fn mode_weights(samples: &Tensor, modes: &Modes, radius: Option<f64>) -> Result<ModeWeights> {
    check_input(&[2], samples, "mode-weight samples")?;
    let k = modes.centers.len();
    let wsum: f64 = modes.weights.iter().sum();
    if k == 0
        || modes.weights.len() != k
        || modes.weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
        || (wsum - 1.0).abs() > 1e-6
    {
        return Err(invalid(
            "modes",
            format!(
                "need ≥ 1 centre and one weight ≥ 0 per centre summing to 1, got {k} centres and \
                 weights {:?}",
                modes.weights
            ),
        ));
    }
    if !(modes.std.is_finite() && modes.std > 0.0) {
        return Err(invalid("modes.std", format!("must be finite and > 0, got {}", modes.std)));
    }
    let radius = radius.unwrap_or(DEFAULT_FAR_STDS * modes.std);
    if !(radius.is_finite() && radius > 0.0) {
        return Err(invalid("far radius", format!("must be finite and > 0, got {radius}")));
    }
    let flat: Vec<f64> = modes.centers.iter().flat_map(|c| [c[0], c[1]]).collect();
    let centers = Tensor::from_slice(&flat).f_reshape([k as i64, 2])?;
    let x = samples.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    let d2 =
        x.f_unsqueeze(1)?.f_sub(&centers.f_unsqueeze(0)?)?.f_square()?.f_sum_dim_intlist(2, false, Kind::Double)?;
    let (dmin, idx) = d2.f_min_dim(1, false)?;
    let dmin = Vec::<f64>::try_from(&dmin.f_contiguous()?)?;
    let idx = Vec::<i64>::try_from(&idx.f_contiguous()?)?;
    let n = idx.len() as f64;
    let mut counts = vec![0usize; k];
    for &i in &idx {
        counts[i as usize] += 1;
    }
    let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / n).collect();
    let tv = 0.5 * shares.iter().zip(&modes.weights).map(|(s, w)| (s - w).abs()).sum::<f64>();
    let r2 = radius * radius;
    let far_share = dmin.iter().filter(|&&d| d > r2).count() as f64 / n;
    let expected_far_share = (-r2 / (2.0 * modes.std * modes.std)).exp();
    Ok(ModeWeights { shares, tv, far_share, radius, expected_far_share })
}

/// Settings of [`evaluate_2d`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalOptions {
    /// Grid cells per axis for log Z (default 400).
    pub grid_n: usize,
    /// Margin around the source's box, as a fraction of its width/height (default 0.1).
    pub margin: f64,
    /// At most this many model samples and test points enter the MMD (default 2000).
    pub mmd_points: usize,
    /// Radius for the far share, in units of the components' std (default 3).
    pub far_radius_stds: f64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            grid_n: DEFAULT_GRID_N,
            margin: DEFAULT_MARGIN,
            mmd_points: 2000,
            far_radius_stds: DEFAULT_FAR_STDS,
        }
    }
}

impl EvalOptions {
    /// Checks every field's range.
    ///
    /// # Errors
    /// Names the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.grid_n < 2 {
            return Err(invalid("grid_n", format!("must be ≥ 2, got {}", self.grid_n)));
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(invalid("margin", format!("must be finite and ≥ 0, got {}", self.margin)));
        }
        if self.mmd_points < 2 {
            return Err(invalid("mmd_points", format!("must be ≥ 2, got {}", self.mmd_points)));
        }
        if !(self.far_radius_stds.is_finite() && self.far_radius_stds > 0.0) {
            return Err(invalid("far_radius_stds", format!("must be finite and > 0, got {}", self.far_radius_stds)));
        }
        Ok(())
    }
}

/// Metrics of a 2-D model against its data source (serialisable to JSON/TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Grid estimate of `log Z`.
    pub log_z: f64,
    /// Test NLL: mean of `log Z - f(x)` over the test data (nats).
    pub nll: f64,
    /// `KL(p_data ‖ p_θ)` where the source's density has a closed form.
    pub kl: Option<f64>,
    /// Unbiased MMD² between model samples and test data.
    pub mmd2: f64,
    /// The RBF bandwidth used for `mmd2`.
    pub mmd_bandwidth: f64,
    /// Share of model samples nearest each mixture component, for mixture sources.
    pub mode_weights: Option<Vec<f64>>,
    /// The source's true mixture weights.
    pub true_mode_weights: Option<Vec<f64>>,
    /// Total variation `½ Σ |ŵ_k - w_k|` between `mode_weights` and the true weights.
    pub mode_weight_tv: Option<f64>,
    /// Share of model samples far from every component (see [`ModeWeights::far_share`]).
    pub far_share: Option<f64>,
    /// Share of the grid mass in its outer ring of cells (large: the box cuts off mass).
    pub grid_edge_mass: f64,
}

/// Evaluates a 2-D `model` against `source`: grid `log Z` over the source's box plus a margin,
/// test NLL and (where the source's density is known) KL on `test_data`, MMD² between
/// `model_samples` and `test_data` (the first `opts.mmd_points` rows of each), and mode weights of
/// `model_samples` for mixture sources. Returns the grid as well, for heat maps.
///
/// # Shapes
/// `test_data: [n, 2]` drawn from `source`; `model_samples: [m, 2]` drawn from the model;
/// `n, m ≥ 2`.
///
/// # Errors
/// As [`grid_log_z`], [`nll`], [`kl_data_model`], [`mmd2_rbf`], [`mode_weights`], or invalid
/// `opts`.
pub fn evaluate_2d<M: EnergyModel + ?Sized>(
    model: &M,
    source: &Source2d,
    test_data: &Tensor,
    model_samples: &Tensor,
    opts: &EvalOptions,
    device: Device,
) -> Result<(EvalReport, GridLogZ)> {
    opts.validate()?;
    check_input(&[2], test_data, "evaluation test data")?;
    check_input(&[2], model_samples, "evaluation model samples")?;
    let grid = GridSpec::with_margin(source.bbox(), opts.margin, opts.grid_n)?;
    let gz = grid_log_z(model, &grid, device)?;
    let nll = nll(model, test_data, gz.log_z, device)?;
    let kl = kl_to_source(model, source, test_data, gz.log_z, device)?;
    let k = opts.mmd_points as i64;
    let xs = model_samples.f_narrow(0, 0, k.min(model_samples.size()[0]))?;
    let ys = test_data.f_narrow(0, 0, k.min(test_data.size()[0]))?;
    let mmd = mmd2_rbf(&xs, &ys, None)?;
    let modes = source.modes();
    let mw = match &modes {
        Some(m) => Some(mode_weights(model_samples, m, Some(opts.far_radius_stds * m.std))?),
        None => None,
    };
    let report = EvalReport {
        log_z: gz.log_z,
        nll,
        kl,
        mmd2: mmd.mmd2,
        mmd_bandwidth: mmd.bandwidth,
        mode_weights: mw.as_ref().map(|w| w.shares.clone()),
        true_mode_weights: modes.map(|m| m.weights),
        mode_weight_tv: mw.as_ref().map(|w| w.tv),
        far_share: mw.as_ref().map(|w| w.far_share),
        grid_edge_mass: gz.edge_mass,
    };
    Ok((report, gz))
}

// ---------------------------------------------------------------------------------------------------------
// Mode weights of a density, OOD scores
// ---------------------------------------------------------------------------------------------------------

/// Mass of the grid density nearest each centre (a model's own mode weights, free of sampler bias).
pub fn grid_mode_weights(gz: &GridLogZ, centers: &[[f64; 2]]) -> Vec<f64> {
    let dens = gz.density();
    let (xs, ys) = (gz.grid.x_centers(), gz.grid.y_centers());
    let nx = gz.grid.nx();
    let mut w = vec![0.0; centers.len()];
    for (j, y) in ys.iter().enumerate() {
        for (i, x) in xs.iter().enumerate() {
            let k = centers
                .iter()
                .enumerate()
                .map(|(k, c)| (k, (x - c[0]).powi(2) + (y - c[1]).powi(2)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| k)
                .unwrap_or(0);
            w[k] += dens[j * nx + i] as f64;
        }
    }
    let total: f64 = w.iter().sum();
    w.iter().map(|v| v / total).collect()
}

/// The area under the ROC curve of a score that should rank `pos` above `neg` (Mann–Whitney, ties count ½).
pub fn auroc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = pos.iter().map(|v| (*v, true)).chain(neg.iter().map(|v| (*v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|e| e.1).count() as f64 * avg_rank;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Toy2d;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    use std::f64::consts::PI;

    /// f(x) = -|x - μ|² / (2σ²) + c; log Z = (D/2) log(2πσ²) + c.
    struct IsoGauss {
        mu: Vec<f64>,
        sigma: f64,
        c: f64,
    }

    impl IsoGauss {
        fn log_z(&self) -> f64 {
            0.5 * self.mu.len() as f64 * (2.0 * PI * self.sigma * self.sigma).ln() + self.c
        }
    }

    impl EnergyModel for IsoGauss {
        fn f(&self, x: &Tensor) -> Tensor {
            let mu = Tensor::from_slice(&self.mu).to_kind(x.kind()).to_device(x.device());
            (x - mu.unsqueeze(0)).square().sum_dim_intlist(1, false, x.kind()) * (-0.5 / (self.sigma * self.sigma))
                + self.c
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![self.mu.len() as i64]
        }
    }

    /// f = log(0.7 N(x; a, s1²I) + 0.3 N(x; b, s2²I)) + c in 2-D; log Z = c.
    struct TwoComp {
        c: f64,
    }

    impl EnergyModel for TwoComp {
        fn f(&self, x: &Tensor) -> Tensor {
            let comp = |mu: [f64; 2], s: f64, w: f64| {
                let mu = Tensor::from_slice(&mu).to_kind(x.kind()).unsqueeze(0);
                (x - mu).square().sum_dim_intlist(1, false, x.kind()) * (-0.5 / (s * s))
                    + (w.ln() - (2.0 * PI * s * s).ln())
            };
            let a = comp([-1.0, 0.5], 0.4, 0.7);
            let b = comp([1.5, -1.0], 0.25, 0.3);
            Tensor::stack(&[a, b], 1).logsumexp(1, false) + self.c
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![2]
        }
    }

    /// A toy density's exact log-density as a model.
    struct ToyModel(Toy2d);

    impl EnergyModel for ToyModel {
        fn f(&self, x: &Tensor) -> Tensor {
            self.0.log_density(x).unwrap().unwrap()
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![2]
        }
    }

    /// A model with a fixed value everywhere.
    struct Constant(f64);

    impl EnergyModel for Constant {
        fn f(&self, x: &Tensor) -> Tensor {
            Tensor::full([x.size()[0]], self.0, (Kind::Float, x.device()))
        }
        fn event_shape(&self) -> Vec<i64> {
            vec![2]
        }
    }

    const CPU: Device = Device::Cpu;

    #[test]
    fn grid_layout_and_validation() {
        let g = GridSpec::new([0.0, 4.0, 0.0, 2.0], 4, 2).unwrap();
        assert_eq!((g.dx(), g.dy(), g.cell_area()), (1.0, 1.0, 1.0));
        let p: Vec<f64> = Vec::try_from(&g.points(Kind::Double, CPU).unwrap().reshape([-1])).unwrap();
        assert_eq!(p, vec![0.5, 0.5, 1.5, 0.5, 2.5, 0.5, 3.5, 0.5, 0.5, 1.5, 1.5, 1.5, 2.5, 1.5, 3.5, 1.5]);
        let g = GridSpec::with_margin([-1.0, 1.0, 0.0, 4.0], 0.25, 10).unwrap();
        assert_eq!(g.bbox(), [-1.5, 1.5, -1.0, 5.0]);
        assert!(GridSpec::new([1.0, 0.0, 0.0, 1.0], 10, 10).is_err());
        assert!(GridSpec::new([0.0, f64::NAN, 0.0, 1.0], 10, 10).is_err());
        assert!(GridSpec::new([0.0, 1.0, 0.0, 1.0], 1, 10).is_err());
        assert!(GridSpec::with_margin([0.0, 1.0, 0.0, 1.0], -0.1, 10).is_err());
    }

    #[test]
    fn grid_log_z_of_gaussian() {
        let m = IsoGauss { mu: vec![0.3, -0.2], sigma: 0.5, c: 100.0 };
        let g = GridSpec::with_margin([-3.0, 3.0, -3.0, 3.0], 0.1, 400).unwrap();
        let gz = grid_log_z(&m, &g, CPU).unwrap();
        assert!((gz.log_z - m.log_z()).abs() < 1e-3, "{} vs {}", gz.log_z, m.log_z());
        assert!(gz.edge_mass < 1e-8, "{}", gz.edge_mass);
        // f is stored row-major with y outer, row 0 at ymin.
        let (i, j) = (7, 300);
        let (x, y) = (g.x_centers()[i], g.y_centers()[j]);
        let want = -((x - 0.3).powi(2) + (y + 0.2).powi(2)) / 0.5 + 100.0;
        assert!((gz.f[j * 400 + i] as f64 - want).abs() < 1e-4);
        // The normalised density integrates to 1.
        let mass: f64 = gz.density().iter().map(|&v| v as f64).sum::<f64>() * g.cell_area();
        assert!((mass - 1.0).abs() < 1e-4);
    }

    #[test]
    fn grid_log_z_of_mixture() {
        let m = TwoComp { c: -3.5 };
        let g = GridSpec::with_margin([-3.0, 3.0, -3.0, 3.0], 0.1, 400).unwrap();
        let gz = grid_log_z(&m, &g, CPU).unwrap();
        assert!((gz.log_z + 3.5).abs() < 1e-3, "{}", gz.log_z);
    }

    #[test]
    fn grid_log_z_truncated_box() {
        // Standard normal on [-1,1]²: the grid holds (Φ(1) - Φ(-1))² of the mass.
        let m = IsoGauss { mu: vec![0.0, 0.0], sigma: 1.0, c: 0.0 };
        let g = GridSpec::new([-1.0, 1.0, -1.0, 1.0], 400, 400).unwrap();
        let gz = grid_log_z(&m, &g, CPU).unwrap();
        let inside = 0.682_689_492_137_085_9f64;
        let want = (2.0 * PI * inside * inside).ln();
        assert!((gz.log_z - want).abs() < 1e-4, "{} vs {want}", gz.log_z);
        assert!(gz.edge_mass > 0.005, "{}", gz.edge_mass);
    }

    #[test]
    fn grid_log_z_errors() {
        let g = GridSpec::new([-1.0, 1.0, -1.0, 1.0], 50, 50).unwrap();
        let m3 = IsoGauss { mu: vec![0.0; 3], sigma: 1.0, c: 0.0 };
        let e = grid_log_z(&m3, &g, CPU).unwrap_err().to_string();
        assert!(e.contains("event shape [3]"), "{e}");
        let e = grid_log_z(&Constant(f64::NAN), &g, CPU).unwrap_err();
        assert!(matches!(e, EbmError::NonFinite(_)), "{e}");
        let e = grid_log_z(&Constant(f64::NEG_INFINITY), &g, CPU).unwrap_err().to_string();
        assert!(e.contains("-inf at every point"), "{e}");
        // A constant model: log Z = c + log(area).
        let gz = grid_log_z(&Constant(2.0), &g, CPU).unwrap();
        assert!((gz.log_z - (2.0 + 4f64.ln())).abs() < 1e-9);
    }

    #[test]
    fn nll_and_kl_of_shifted_gaussian() {
        // Antithetic samples of N(μ0, σ²I): their mean is exactly μ0, so the KL estimate of a
        // shifted model equals the closed form |μ0 - μ1|² / (2σ²).
        let (mu0, sigma) = ([0.5, -0.25], 0.5);
        let mut rng = StdRng::seed_from_u64(9);
        let mut v = Vec::new();
        for _ in 0..2000 {
            let z: [f64; 2] = [rng.sample(StandardNormal), rng.sample(StandardNormal)];
            v.extend([mu0[0] + sigma * z[0], mu0[1] + sigma * z[1]]);
            v.extend([mu0[0] - sigma * z[0], mu0[1] - sigma * z[1]]);
        }
        let x = Tensor::from_slice(&v).reshape([-1, 2]);
        let data = IsoGauss { mu: mu0.to_vec(), sigma, c: 0.0 };
        let lp = data.f(&x) - data.log_z();
        let model = IsoGauss { mu: vec![0.9, 0.05], sigma, c: 7.0 };
        let g = GridSpec::with_margin([-3.0, 3.0, -3.0, 3.0], 0.1, 400).unwrap();
        let gz = grid_log_z(&model, &g, CPU).unwrap();

        let kl = kl_data_model(&model, &x, &lp, gz.log_z, CPU).unwrap();
        let want = (0.4f64.powi(2) + 0.3f64.powi(2)) / (2.0 * sigma * sigma);
        assert!((kl - want).abs() < 1e-3, "{kl} vs {want}");
        // The model against itself: KL ≈ 0.
        let gz0 = grid_log_z(&data, &g, CPU).unwrap();
        let kl0 = kl_data_model(&data, &x, &lp, gz0.log_z, CPU).unwrap();
        assert!(kl0.abs() < 1e-3, "{kl0}");

        // NLL = log(2πσ²) + mean |x - μ1|² / (2σ²).
        let nll_v = nll(&model, &x, gz.log_z, CPU).unwrap();
        let msq = v.chunks(2).map(|p| (p[0] - 0.9).powi(2) + (p[1] - 0.05).powi(2)).sum::<f64>() / (v.len() / 2) as f64;
        let want = (2.0 * PI * sigma * sigma).ln() + msq / (2.0 * sigma * sigma);
        assert!((nll_v - want).abs() < 1e-3, "{nll_v} vs {want}");

        // Bad inputs.
        assert!(nll(&model, &x, f64::NAN, CPU).is_err());
        let wrong = Tensor::zeros([5, 3], (Kind::Float, CPU));
        assert!(nll(&model, &wrong, 0.0, CPU).is_err());
        let short = lp.narrow(0, 0, 10);
        assert!(kl_data_model(&model, &x, &short, gz.log_z, CPU).is_err());
        let outside = lp.full_like(f64::NEG_INFINITY);
        let e = kl_data_model(&model, &x, &outside, gz.log_z, CPU).unwrap_err().to_string();
        assert!(e.contains("outside the data density's support"), "{e}");
    }

    #[test]
    fn toy_densities_against_themselves() {
        for t in Toy2d::all() {
            if !t.has_log_density() {
                continue;
            }
            let g = if t == Toy2d::Checkerboard {
                // A grid aligned with the squares integrates the piecewise constant exactly.
                GridSpec::new(t.bbox(), 400, 400).unwrap()
            } else {
                GridSpec::with_margin(t.bbox(), 0.1, 400).unwrap()
            };
            let model = ToyModel(t);
            let gz = grid_log_z(&model, &g, CPU).unwrap();
            assert!(gz.log_z.abs() < 1e-3, "{t}: log Z {}", gz.log_z);
            let x = t.sample(2000, 1);
            let kl = kl_to_source(&model, &Source2d::Toy(t), &x, gz.log_z, CPU).unwrap().unwrap();
            assert!(kl.abs() < 1e-3, "{t}: KL {kl}");
        }
    }

    #[test]
    fn mmd_exact_small_case() {
        // 1-D: x = {0, 1}, y = {0, 3}, ℓ = 1.
        let x = Tensor::from_slice(&[0.0f64, 1.0]).reshape([2, 1]);
        let y = Tensor::from_slice(&[0.0f64, 3.0]).reshape([2, 1]);
        let k = |d: f64| (-d * d / 2.0).exp();
        let want = k(1.0) + k(3.0) - 2.0 * (k(0.0) + k(3.0) + k(1.0) + k(2.0)) / 4.0;
        let got = mmd2_rbf(&x, &y, Some(1.0)).unwrap();
        assert!((got.mmd2 - want).abs() < 1e-12, "{} vs {want}", got.mmd2);
        // Median heuristic: pooled pair distances {1, 0, 3, 1, 2, 3}: lower median 1.
        let got = mmd2_rbf(&x, &y, None).unwrap();
        assert_eq!(got.bandwidth, 1.0);
        assert!((got.mmd2 - want).abs() < 1e-12);
        // Identical points everywhere: bandwidth falls back to 1 and MMD² is 0.
        let z = Tensor::zeros([3, 2], (Kind::Float, CPU));
        let got = mmd2_rbf(&z, &z, None).unwrap();
        assert_eq!((got.mmd2, got.bandwidth), (0.0, 1.0));
        // Errors.
        assert!(mmd2_rbf(&x.narrow(0, 0, 1), &y, None).is_err());
        assert!(mmd2_rbf(&x, &Tensor::zeros([4, 2], (Kind::Double, CPU)), None).is_err());
        assert!(mmd2_rbf(&x, &y, Some(0.0)).is_err());
        let nan = Tensor::from_slice(&[f64::NAN, 1.0]).reshape([2, 1]);
        assert!(mmd2_rbf(&x, &nan, None).is_err());
    }

    #[test]
    fn mmd_same_versus_different_distributions() {
        let a = Toy2d::EightGaussians.sample(1000, 1);
        let b = Toy2d::EightGaussians.sample(1000, 2);
        let same = mmd2_rbf(&a, &b, None).unwrap().mmd2;
        assert!(same.abs() < 1e-3, "same {same}");
        for (t, min) in [(Toy2d::Rings, 4e-3), (Toy2d::TwoGaussians, 0.1)] {
            let diff = mmd2_rbf(&a, &t.sample(1000, 3), None).unwrap().mmd2;
            assert!(diff > min && diff > 10.0 * same.abs(), "{t}: {diff} vs same {same}");
        }
        // 8 Gaussians and the 5×5 grid share mean and covariance: the median bandwidth (≈ 2.7)
        // barely tells them apart, a bandwidth at the modes' scale does.
        let c = Toy2d::Grid25.sample(1000, 3);
        let wide = mmd2_rbf(&a, &c, None).unwrap();
        assert!(wide.bandwidth > 2.0 && wide.mmd2 < 1e-3, "{wide:?}");
        let narrow_same = mmd2_rbf(&a, &b, Some(0.2)).unwrap().mmd2;
        let narrow_diff = mmd2_rbf(&a, &c, Some(0.2)).unwrap().mmd2;
        assert!(narrow_diff > 0.05 && narrow_diff > 20.0 * narrow_same.abs(), "{narrow_diff} vs {narrow_same}");
        // Higher-dimensional input is flattened: [n, 1, 2] works like [n, 2].
        let a3 = a.reshape([1000, 1, 2]);
        let b3 = b.reshape([1000, 1, 2]);
        assert!((mmd2_rbf(&a3, &b3, None).unwrap().mmd2 - same).abs() < 1e-12);
    }

    #[test]
    fn mode_weights_exact_and_sampled() {
        let modes = Toy2d::TwoGaussians.modes().unwrap();
        let pts = Tensor::from_slice(&[-2.0f32, 0.0, -2.0, 0.1, 2.0, 0.0, 0.5, 5.0]).reshape([4, 2]);
        let mw = mode_weights(&pts, &modes, None).unwrap();
        assert_eq!(mw.shares, vec![0.5, 0.5]);
        assert_eq!(mw.far_share, 0.25);
        assert!((mw.radius - 0.9).abs() < 1e-12);
        assert!((mw.tv - 0.3).abs() < 1e-12);

        let x = Toy2d::TwoGaussians.sample(20_000, 5);
        let mw = mode_weights(&x, &modes, None).unwrap();
        assert!((mw.shares[0] - 0.8).abs() < 0.02 && (mw.shares[1] - 0.2).abs() < 0.02);
        assert!(mw.tv < 0.02, "{}", mw.tv);
        assert!((mw.expected_far_share - (-4.5f64).exp()).abs() < 1e-12);
        assert!((mw.far_share - mw.expected_far_share).abs() < 0.003, "{}", mw.far_share);

        let bad = Modes { centers: vec![[0.0, 0.0]], weights: vec![0.5], std: 0.1 };
        assert!(mode_weights(&x, &bad, None).is_err());
        assert!(mode_weights(&x, &modes, Some(-1.0)).is_err());
    }

    #[test]
    fn evaluate_true_density() {
        let t = Toy2d::TwoGaussians;
        let src = Source2d::Toy(t);
        let model = ToyModel(t);
        let test = t.sample(4000, 1);
        let samples = t.sample(4000, 2);
        let (r, gz) = evaluate_2d(&model, &src, &test, &samples, &EvalOptions::default(), CPU).unwrap();
        assert_eq!((gz.grid.nx(), gz.grid.ny()), (400, 400));
        assert!(r.log_z.abs() < 1e-3, "{}", r.log_z);
        let kl = r.kl.unwrap();
        assert!(kl.abs() < 1e-3, "{kl}");
        let lp = t.log_density(&test).unwrap().unwrap();
        let ent = -lp.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((r.nll - ent).abs() < 1e-3, "{} vs {ent}", r.nll);
        assert!(r.mmd2.abs() < 2e-3, "{}", r.mmd2);
        assert!(r.mode_weight_tv.unwrap() < 0.02);
        assert_eq!(r.true_mode_weights, Some(vec![0.8, 0.2]));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"nll\"") && json.contains("\"mode_weight_tv\""), "{json}");

        // A model that puts the weights the wrong way round: the KL is positive and matches
        // Σ_k w_k log(w_k / v_k) for well-separated components.
        struct Swapped;
        impl EnergyModel for Swapped {
            fn f(&self, x: &Tensor) -> Tensor {
                let flipped = x * Tensor::from_slice(&[-1.0f32, 1.0]).unsqueeze(0);
                Toy2d::TwoGaussians.log_density(&flipped).unwrap().unwrap()
            }
            fn event_shape(&self) -> Vec<i64> {
                vec![2]
            }
        }
        let (r, _) = evaluate_2d(&Swapped, &src, &test, &samples, &EvalOptions::default(), CPU).unwrap();
        let left = Vec::<f32>::try_from(&test.select(1, 0)).unwrap();
        let share = left.iter().filter(|v| **v < 0.0).count() as f64 / left.len() as f64;
        let want = share * (0.8f64 / 0.2).ln() + (1.0 - share) * (0.2f64 / 0.8).ln();
        assert!((r.kl.unwrap() - want).abs() < 1e-3, "{:?} vs {want}", r.kl);

        let bad = EvalOptions { grid_n: 1, ..EvalOptions::default() };
        assert!(evaluate_2d(&model, &src, &test, &samples, &bad, CPU).is_err());
    }

    #[test]
    fn grid_mode_weights_of_a_known_mixture() {
        let m = crate::energy::GaussianMixture::isotropic(
            &[0.8, 0.2],
            &[vec![-2.0, 0.0], vec![2.0, 0.0]],
            0.3,
            Device::Cpu,
        )
        .unwrap();
        let grid = GridSpec::with_margin([-3.5, 3.5, -2.0, 2.0], 0.1, 200).unwrap();
        let gz = grid_log_z(&m, &grid, Device::Cpu).unwrap();
        let w = grid_mode_weights(&gz, &[[-2.0, 0.0], [2.0, 0.0]]);
        assert!((w[0] - 0.8).abs() < 1e-4 && (w[1] - 0.2).abs() < 1e-4, "{w:?}");
    }

    #[test]
    fn auroc_of_known_rankings() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auroc(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
        // pos {1, 3}, neg {2}: one of two pairs ordered right
        assert_eq!(auroc(&[1.0, 3.0], &[2.0]), 0.5);
        // pos {2, 3}, neg {2, 1}: pairs (2>2 tie ½, 2>1, 3>2, 3>1) = 3.5 / 4
        assert_eq!(auroc(&[2.0, 3.0], &[2.0, 1.0]), 0.875);
    }
}
