//! Grid normalisation of 2-D models: [`grid_log_z`], and the NLL and KL that use its `log Z`.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::check::check_input;
use crate::data::Source2d;
use crate::energy::EnergyModel;
use crate::error::{invalid, EbmError, Result};

/// Default number of grid cells per axis for [`grid_log_z`] (the workload asks for ≥ 400).
pub const DEFAULT_GRID_N: usize = 400;
/// Default margin added on each side of the data's box, as a fraction of its width/height.
pub const DEFAULT_MARGIN: f64 = 0.1;
/// Points evaluated per model call (bounds memory).
const CHUNK: usize = 1 << 15;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Toy2d;
    use crate::eval::tests::ToyModel;
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
}
