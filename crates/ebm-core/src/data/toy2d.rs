//! Seeded 2-D toy densities, each with its exact, normalised log-density where one exists.
//!
//! | name            | what                                                         | exact log p |
//! |-----------------|--------------------------------------------------------------|-------------|
//! | `8gaussians`    | 8 Gaussians on a circle of radius 2 (angles k·45°), std 0.1, equal weights | yes |
//! | `grid25`        | 5×5 Gaussians at {-2,-1,0,1,2}², std 0.1, equal weights        | yes |
//! | `two_gaussians` | weights 0.8 / 0.2 at (-2,0) / (2,0), std 0.3                  | yes |
//! | `rings`         | rings of radius 1, 2, 3 (weights 1/6, 2/6, 3/6), radial std 0.1 | yes |
//! | `checkerboard`  | uniform on the 8 black squares (side 2) of a 4×4 board on [-4,4]² | yes |
//! | `moons`         | two interleaved half circles, Gaussian noise 0.1               | no  |
//! | `swissroll`     | the spiral (t cos t, t sin t)/5, t ∈ [1.5π, 4.5π], noise 0.1   | no  |
//! | `pinwheel`      | 5 curved arms                                                 | no  |
//!
//! Sampling uses `rand`'s `StdRng` seeded by the caller, so it is deterministic for a seed and
//! independent of libtorch's global RNG.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::check::check_input;
use crate::error::{invalid, EbmError, Result};

/// Standard deviation of each of the 8 Gaussians.
const EIGHT_STD: f64 = 0.1;
/// Radius of the circle the 8 Gaussians sit on.
const EIGHT_RADIUS: f64 = 2.0;
/// Standard deviation of each of the 25 grid Gaussians.
const GRID_STD: f64 = 0.1;
/// Standard deviation of both components of `two_gaussians`.
const TWO_STD: f64 = 0.3;
/// Means of `two_gaussians`.
const TWO_CENTERS: [[f64; 2]; 2] = [[-2.0, 0.0], [2.0, 0.0]];
/// Weights of `two_gaussians`.
const TWO_WEIGHTS: [f64; 2] = [0.8, 0.2];
/// Ring radii.
const RING_RADII: [f64; 3] = [1.0, 2.0, 3.0];
/// Ring weights (proportional to the radius, so every ring has the same density along it).
const RING_WEIGHTS: [f64; 3] = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0];
/// Radial standard deviation of the rings.
const RING_STD: f64 = 0.1;
/// Smallest radius used in the rings' log-density (its `1/r` factor is infinite at the origin).
const RING_R_MIN: f64 = 1e-12;
/// Half-width of the checkerboard: it covers `[-CHECKER_HALF, CHECKER_HALF]²`.
const CHECKER_HALF: f64 = 4.0;
/// Side of one checkerboard square.
const CHECKER_SIDE: f64 = 2.0;
/// Gaussian noise added to the moons.
const MOONS_NOISE: f64 = 0.1;
/// Gaussian noise added to the swiss roll.
const SWISS_NOISE: f64 = 0.1;
/// Pinwheel: number of arms, radial and tangential std, twist rate, overall scale.
const PIN_ARMS: usize = 5;
const PIN_RADIAL_STD: f64 = 0.3;
const PIN_TANGENTIAL_STD: f64 = 0.1;
const PIN_RATE: f64 = 0.25;
const PIN_SCALE: f64 = 1.5;

/// A seeded 2-D toy density.
///
/// Serialised (serde) as its [`Toy2d::name`]; parsed with [`FromStr`], which accepts the
/// kebab-case, snake_case and squashed spellings of the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Toy2d {
    /// 8 Gaussians on a circle of radius 2 at angles k·45°, std 0.1, equal weights.
    EightGaussians,
    /// 5×5 grid of Gaussians at {-2,-1,0,1,2}², std 0.1, equal weights.
    Grid25,
    /// Unequal mixture: weight 0.8 at (-2,0), 0.2 at (2,0), std 0.3. Score matching cannot see
    /// the weights of far-apart modes; maximum likelihood can.
    TwoGaussians,
    /// Concentric rings of radius 1, 2, 3 with weights 1/6, 2/6, 3/6 and Gaussian radial noise
    /// (std 0.1): `p(x) = Σ_k w_k N(r; R_k, σ²) / (2π r)` with `r = |x|`.
    Rings,
    /// Uniform on the 8 black squares (side 2) of a 4×4 board on [-4,4]²; the square at the
    /// lower-left corner is black. `log p = -ln 32` on black squares, `-inf` elsewhere.
    Checkerboard,
    /// Two interleaved half circles with Gaussian noise (std 0.1). No closed-form density.
    TwoMoons,
    /// A swiss-roll spiral with Gaussian noise (std 0.1). No closed-form density.
    SwissRoll,
    /// Five curved arms. No closed-form density.
    Pinwheel,
}

/// Component centres and weights of a mixture of isotropic Gaussians with a shared std.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Modes {
    /// The component means.
    pub centers: Vec<[f64; 2]>,
    /// The mixture weights (they sum to 1), one per centre.
    pub weights: Vec<f64>,
    /// The shared per-coordinate standard deviation of the components.
    pub std: f64,
}

impl Toy2d {
    /// Every variant, in a fixed order.
    pub fn all() -> [Toy2d; 8] {
        [
            Toy2d::EightGaussians,
            Toy2d::Grid25,
            Toy2d::TwoGaussians,
            Toy2d::Rings,
            Toy2d::Checkerboard,
            Toy2d::TwoMoons,
            Toy2d::SwissRoll,
            Toy2d::Pinwheel,
        ]
    }

    /// The canonical name, accepted back by [`FromStr`].
    pub fn name(&self) -> &'static str {
        match self {
            Toy2d::EightGaussians => "8gaussians",
            Toy2d::Grid25 => "grid25",
            Toy2d::TwoGaussians => "two_gaussians",
            Toy2d::Rings => "rings",
            Toy2d::Checkerboard => "checkerboard",
            Toy2d::TwoMoons => "moons",
            Toy2d::SwissRoll => "swissroll",
            Toy2d::Pinwheel => "pinwheel",
        }
    }

    /// The canonical names of every variant, comma-separated (for error and help messages).
    pub fn valid_names() -> String {
        Toy2d::all().iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
    }

    /// Whether [`Toy2d::log_density`] has a closed form for this density.
    pub fn has_log_density(&self) -> bool {
        !matches!(self, Toy2d::TwoMoons | Toy2d::SwissRoll | Toy2d::Pinwheel)
    }

    /// A box `[xmin, xmax, ymin, ymax]` that holds essentially all the mass (at least 6 standard
    /// deviations of noise beyond the structure).
    pub fn bbox(&self) -> [f64; 4] {
        match self {
            Toy2d::EightGaussians | Toy2d::Grid25 => [-3.0, 3.0, -3.0, 3.0],
            Toy2d::TwoGaussians => [-4.0, 4.0, -2.0, 2.0],
            Toy2d::Rings => [-3.75, 3.75, -3.75, 3.75],
            Toy2d::Checkerboard => [-CHECKER_HALF, CHECKER_HALF, -CHECKER_HALF, CHECKER_HALF],
            Toy2d::TwoMoons => [-3.75, 3.75, -2.5, 2.5],
            Toy2d::SwissRoll => [-3.5, 3.5, -3.5, 3.5],
            Toy2d::Pinwheel => [-4.0, 4.0, -4.0, 4.0],
        }
    }

    /// Component centres and weights for the Gaussian mixtures (`8gaussians`, `grid25`,
    /// `two_gaussians`); `None` for the others.
    pub fn modes(&self) -> Option<Modes> {
        match self {
            Toy2d::EightGaussians => {
                let centers = (0..8)
                    .map(|k| {
                        let a = k as f64 * PI / 4.0;
                        [EIGHT_RADIUS * a.cos(), EIGHT_RADIUS * a.sin()]
                    })
                    .collect();
                Some(Modes { centers, weights: vec![1.0 / 8.0; 8], std: EIGHT_STD })
            }
            Toy2d::Grid25 => {
                let mut centers = Vec::with_capacity(25);
                for i in -2..=2 {
                    for j in -2..=2 {
                        centers.push([i as f64, j as f64]);
                    }
                }
                Some(Modes { centers, weights: vec![1.0 / 25.0; 25], std: GRID_STD })
            }
            Toy2d::TwoGaussians => {
                Some(Modes { centers: TWO_CENTERS.to_vec(), weights: TWO_WEIGHTS.to_vec(), std: TWO_STD })
            }
            _ => None,
        }
    }

    /// Draws `n` points, deterministically for a given `seed`.
    ///
    /// # Shapes
    /// Returns `[n, 2]`, `f32`, on the CPU.
    pub fn sample(&self, n: usize, seed: u64) -> Tensor {
        let mut rng = StdRng::seed_from_u64(seed);
        let modes = self.modes();
        let mut out: Vec<f32> = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let [x, y] = self.sample_one(&mut rng, modes.as_ref());
            out.push(x as f32);
            out.push(y as f32);
        }
        Tensor::from_slice(&out).reshape([n as i64, 2])
    }

    /// One draw; `modes` is `self.modes()`, computed once by the caller.
    fn sample_one(&self, rng: &mut StdRng, modes: Option<&Modes>) -> [f64; 2] {
        if let Some(m) = modes {
            let c = m.centers[pick(rng, &m.weights)];
            return [c[0] + m.std * normal(rng), c[1] + m.std * normal(rng)];
        }
        match self {
            Toy2d::Rings => {
                let k = pick(rng, &RING_WEIGHTS);
                // The radial law is N(R_k, σ²) restricted to r ≥ 0 (rejection; the rejected mass
                // is Φ(-R_k/σ) < 1e-23).
                let r = loop {
                    let r = RING_RADII[k] + RING_STD * normal(rng);
                    if r >= 0.0 {
                        break r;
                    }
                };
                let a = 2.0 * PI * rng.random::<f64>();
                [r * a.cos(), r * a.sin()]
            }
            Toy2d::Checkerboard => {
                // Square (i, j) counted from the lower-left corner is black when i + j is even.
                let s = rng.random_range(0..8usize);
                let i = s / 2;
                let j = 2 * (s % 2) + (i % 2);
                let x = -CHECKER_HALF + CHECKER_SIDE * (i as f64 + rng.random::<f64>());
                let y = -CHECKER_HALF + CHECKER_SIDE * (j as f64 + rng.random::<f64>());
                [x, y]
            }
            Toy2d::TwoMoons => {
                let t = PI * rng.random::<f64>();
                let upper = rng.random::<f64>() < 0.5;
                let (mx, my) = if upper { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
                [2.0 * (mx - 0.5) + MOONS_NOISE * normal(rng), 2.0 * (my - 0.25) + MOONS_NOISE * normal(rng)]
            }
            Toy2d::SwissRoll => {
                let t = 1.5 * PI * (1.0 + 2.0 * rng.random::<f64>());
                [t * t.cos() / 5.0 + SWISS_NOISE * normal(rng), t * t.sin() / 5.0 + SWISS_NOISE * normal(rng)]
            }
            Toy2d::Pinwheel => {
                let k = rng.random_range(0..PIN_ARMS);
                let a = 1.0 + PIN_RADIAL_STD * normal(rng);
                let b = PIN_TANGENTIAL_STD * normal(rng);
                let angle = 2.0 * PI * k as f64 / PIN_ARMS as f64 + PIN_RATE * a.exp();
                let (s, c) = angle.sin_cos();
                [PIN_SCALE * (c * a - s * b), PIN_SCALE * (s * a + c * b)]
            }
            // The mixtures are drawn above from their modes.
            Toy2d::EightGaussians | Toy2d::Grid25 | Toy2d::TwoGaussians => [0.0, 0.0],
        }
    }

    /// The exact, normalised log-density `log p(x)`; `Ok(None)` for the densities without a
    /// closed form (`moons`, `swissroll`, `pinwheel`).
    ///
    /// Computed in `f64` and returned in `x`'s kind, on `x`'s device. The checkerboard gives
    /// `-inf` off its black squares. The rings' `1/r` factor is infinite at the origin, so `r`
    /// is floored at 1e-12 there (the density around the origin is below e⁻⁴⁰ anyway).
    ///
    /// # Shapes
    /// `x: [n, 2]` → `[n]`.
    ///
    /// # Errors
    /// If `x` is not `[n, 2]` with `n ≥ 1` or holds NaN/Inf.
    pub fn log_density(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !self.has_log_density() {
            return Ok(None);
        }
        check_input(&[2], x, &format!("{} log_density input x", self.name()))?;
        let kind = x.kind();
        let xd = x.f_to_kind(Kind::Double)?;
        let lp = match self {
            Toy2d::EightGaussians | Toy2d::Grid25 | Toy2d::TwoGaussians => {
                let m = self.modes().ok_or_else(|| invalid("toy2d", "internal: mixture without modes"))?;
                mixture_log_density(&xd, &m)?
            }
            Toy2d::Rings => {
                let r = xd.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?.f_sqrt()?;
                let r = r.f_clamp_min(RING_R_MIN)?;
                let dev = x.device();
                let radii = Tensor::from_slice(&RING_RADII).f_to_device(dev)?;
                let logw = Tensor::from_slice(&RING_WEIGHTS.map(f64::ln)).f_to_device(dev)?;
                let norm = RING_STD.ln() + 0.5 * (2.0 * PI).ln();
                // [n, K]: log w_k + log N(r; R_k, σ²)
                let z = r.f_unsqueeze(1)?.f_sub(&radii.f_unsqueeze(0)?)?;
                let terms = z
                    .f_square()?
                    .f_mul_scalar(-0.5 / (RING_STD * RING_STD))?
                    .f_add(&logw.f_unsqueeze(0)?)?
                    .f_sub_scalar(norm)?;
                terms.f_logsumexp(1, false)?.f_sub(&r.f_log()?)?.f_sub_scalar((2.0 * PI).ln())?
            }
            Toy2d::Checkerboard => {
                let cells = xd.f_add_scalar(CHECKER_HALF)?.f_div_scalar(CHECKER_SIDE)?.f_floor()?;
                let n_side = 2.0 * CHECKER_HALF / CHECKER_SIDE;
                let inside = cells.f_ge(0.0)?.f_logical_and(&cells.f_lt(n_side)?)?.f_all_dims(1, false)?;
                let parity = cells.f_sum_dim_intlist(1, false, Kind::Double)?.f_remainder(2.0)?;
                let black = inside.f_logical_and(&parity.f_eq(0.0)?)?;
                let area = (2.0 * CHECKER_HALF).powi(2) / 2.0;
                let n = xd.size()[0];
                let opts = (Kind::Double, x.device());
                let on = Tensor::f_full([n], -area.ln(), opts)?;
                let off = Tensor::f_full([n], f64::NEG_INFINITY, opts)?;
                on.f_where_self(&black, &off)?
            }
            Toy2d::TwoMoons | Toy2d::SwissRoll | Toy2d::Pinwheel => return Ok(None),
        };
        Ok(Some(lp.f_to_kind(kind)?))
    }
}

/// One standard normal draw.
fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

/// Index drawn with probabilities `weights` (which sum to 1).
fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let u = rng.random::<f64>();
    let mut acc = 0.0;
    for (k, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return k;
        }
    }
    weights.len() - 1
}

/// `log Σ_k w_k N(x; c_k, σ² I)` for `x: [n, 2]` (f64) → `[n]`.
fn mixture_log_density(x: &Tensor, m: &Modes) -> Result<Tensor> {
    let dev = x.device();
    let flat: Vec<f64> = m.centers.iter().flat_map(|c| [c[0], c[1]]).collect();
    let k = m.centers.len() as i64;
    let centers = Tensor::from_slice(&flat).f_reshape([k, 2])?.f_to_device(dev)?;
    let logw: Vec<f64> = m.weights.iter().map(|w| w.ln()).collect();
    let logw = Tensor::from_slice(&logw).f_to_device(dev)?;
    let var = m.std * m.std;
    let d2 =
        x.f_unsqueeze(1)?.f_sub(&centers.f_unsqueeze(0)?)?.f_square()?.f_sum_dim_intlist(2, false, Kind::Double)?;
    let terms = d2.f_mul_scalar(-0.5 / var)?.f_add(&logw.f_unsqueeze(0)?)?.f_sub_scalar((2.0 * PI * var).ln())?;
    Ok(terms.f_logsumexp(1, false)?)
}

impl fmt::Display for Toy2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Toy2d {
    type Err = EbmError;

    /// Case-insensitive; `-`, `_` and spaces are ignored, so "eight-gaussians",
    /// "eight_gaussians" and "8gaussians" all name [`Toy2d::EightGaussians`].
    fn from_str(s: &str) -> Result<Self> {
        let key: String = s.chars().filter(|c| !matches!(c, '-' | '_' | ' ')).map(|c| c.to_ascii_lowercase()).collect();
        let t = match key.as_str() {
            "8gaussians" | "eightgaussians" => Toy2d::EightGaussians,
            "grid25" | "25gaussians" | "grid" => Toy2d::Grid25,
            "twogaussians" | "2gaussians" => Toy2d::TwoGaussians,
            "rings" => Toy2d::Rings,
            "checkerboard" => Toy2d::Checkerboard,
            "moons" | "twomoons" => Toy2d::TwoMoons,
            "swissroll" => Toy2d::SwissRoll,
            "pinwheel" => Toy2d::Pinwheel,
            _ => {
                return Err(invalid(
                    "toy density",
                    format!("unknown name '{s}'; valid names: {}", Toy2d::valid_names()),
                ))
            }
        };
        Ok(t)
    }
}

impl TryFrom<String> for Toy2d {
    type Error = EbmError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Toy2d> for String {
    fn from(t: Toy2d) -> String {
        t.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn to_vec2(t: &Tensor) -> Vec<[f64; 2]> {
        let v: Vec<f64> = Vec::try_from(&t.reshape([-1]).to_kind(Kind::Double)).unwrap();
        v.chunks(2).map(|c| [c[0], c[1]]).collect()
    }

    fn mean_and_sq(pts: &[[f64; 2]]) -> ([f64; 2], f64) {
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p[0]).sum::<f64>() / n;
        let my = pts.iter().map(|p| p[1]).sum::<f64>() / n;
        let sq = pts.iter().map(|p| p[0] * p[0] + p[1] * p[1]).sum::<f64>() / n;
        ([mx, my], sq)
    }

    fn nearest_shares(pts: &[[f64; 2]], centers: &[[f64; 2]]) -> Vec<f64> {
        let mut counts = vec![0usize; centers.len()];
        for p in pts {
            let mut best = 0;
            let mut bd = f64::INFINITY;
            for (k, c) in centers.iter().enumerate() {
                let d = (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2);
                if d < bd {
                    bd = d;
                    best = k;
                }
            }
            counts[best] += 1;
        }
        counts.iter().map(|&c| c as f64 / pts.len() as f64).collect()
    }

    /// `Σ exp(log p) · cell area` over a midpoint grid of n×n cells on the bbox.
    fn grid_mass(t: Toy2d, n: i64) -> f64 {
        let [x0, x1, y0, y1] = t.bbox();
        let (dx, dy) = ((x1 - x0) / n as f64, (y1 - y0) / n as f64);
        let i = Tensor::arange(n, (Kind::Double, Device::Cpu));
        let xs = (&i + 0.5) * dx + x0;
        let ys = (&i + 0.5) * dy + y0;
        let gx = xs.unsqueeze(0).expand([n, n], false);
        let gy = ys.unsqueeze(1).expand([n, n], false);
        let pts = Tensor::stack(&[gx.reshape([-1]), gy.reshape([-1])], 1);
        let lp = t.log_density(&pts).unwrap().unwrap();
        lp.exp().sum(Kind::Double).double_value(&[]) * dx * dy
    }

    #[test]
    fn names_round_trip_and_aliases() {
        for t in Toy2d::all() {
            assert_eq!(t.name().parse::<Toy2d>().unwrap(), t);
            assert_eq!(t.to_string(), t.name());
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(serde_json::from_str::<Toy2d>(&json).unwrap(), t);
        }
        for (s, t) in [
            ("8gaussians", Toy2d::EightGaussians),
            ("eight_gaussians", Toy2d::EightGaussians),
            ("Eight-Gaussians", Toy2d::EightGaussians),
            ("two_gaussians", Toy2d::TwoGaussians),
            ("two-gaussians", Toy2d::TwoGaussians),
            ("grid25", Toy2d::Grid25),
            ("two_moons", Toy2d::TwoMoons),
            ("moons", Toy2d::TwoMoons),
            ("swiss_roll", Toy2d::SwissRoll),
            ("swissroll", Toy2d::SwissRoll),
            ("pinwheel", Toy2d::Pinwheel),
            ("checkerboard", Toy2d::Checkerboard),
            ("rings", Toy2d::Rings),
        ] {
            assert_eq!(s.parse::<Toy2d>().unwrap(), t, "{s}");
        }
        let err = "spiral".parse::<Toy2d>().unwrap_err().to_string();
        assert!(err.contains("'spiral'"), "{err}");
        for t in Toy2d::all() {
            assert!(err.contains(t.name()), "{err} lacks {}", t.name());
        }
    }

    #[test]
    fn same_seed_same_samples_different_seed_different() {
        for t in Toy2d::all() {
            let a = t.sample(500, 7);
            let b = t.sample(500, 7);
            let c = t.sample(500, 8);
            assert_eq!(a.size(), vec![500, 2]);
            assert_eq!(a.kind(), Kind::Float);
            assert_eq!(a.device(), Device::Cpu);
            assert!(a.equal(&b), "{t}: same seed gave different samples");
            assert!(!a.equal(&c), "{t}: different seeds gave equal samples");
            // Independent of libtorch's global RNG.
            tch::manual_seed(1);
            let d = t.sample(500, 7);
            tch::manual_seed(2);
            assert!(a.equal(&d));
        }
        assert_eq!(Toy2d::Rings.sample(0, 1).size(), vec![0, 2]);
    }

    #[test]
    fn samples_lie_in_bbox() {
        for t in Toy2d::all() {
            let pts = to_vec2(&t.sample(20_000, 3));
            let [x0, x1, y0, y1] = t.bbox();
            let inside = pts.iter().filter(|p| p[0] > x0 && p[0] < x1 && p[1] > y0 && p[1] < y1).count();
            assert!(inside as f64 >= 0.999 * pts.len() as f64, "{t}: only {inside} inside");
        }
    }

    #[test]
    fn closed_forms_integrate_to_one() {
        for t in Toy2d::all() {
            if !t.has_log_density() {
                assert!(t.log_density(&Tensor::zeros([3, 2], (Kind::Float, Device::Cpu))).unwrap().is_none());
                continue;
            }
            let mass = grid_mass(t, 400);
            assert!((mass - 1.0).abs() < 1e-2, "{t}: grid mass {mass}");
        }
        // The checkerboard on a grid aligned with its squares is exact.
        assert!((grid_mass(Toy2d::Checkerboard, 400) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn log_density_point_values() {
        let x = Tensor::from_slice(&[-2.0f64, 0.0, 1.0, 0.0, -3.0, -3.0, -1.0, -3.0, 4.5, 0.0]).reshape([5, 2]);
        // two_gaussians at its first mean; the second component is e^{-16/0.18} smaller.
        let lp = Toy2d::TwoGaussians.log_density(&x).unwrap().unwrap();
        assert_eq!(lp.kind(), Kind::Double);
        let want = 0.8f64.ln() - (2.0 * PI * 0.09).ln();
        assert!((lp.double_value(&[0]) - want).abs() < 1e-12);
        // rings at r = 1 (ring 2 at distance 1 = 10σ contributes e^{-50}-relative terms).
        let lp = Toy2d::Rings.log_density(&x).unwrap().unwrap();
        let n = |z: f64| (-0.5 * z * z).exp() / (0.1 * (2.0 * PI).sqrt());
        let want = ((1.0 / 6.0) * n(0.0) + (2.0 / 6.0) * n(10.0) + 0.5 * n(20.0)).ln() - (2.0 * PI).ln();
        assert!((lp.double_value(&[1]) - want).abs() < 1e-12);
        // checkerboard: (-3,-3) is in the black lower-left square, (-1,-3) is white, (4.5,0) is off.
        let lp = Toy2d::Checkerboard.log_density(&x).unwrap().unwrap();
        assert!((lp.double_value(&[2]) + 32f64.ln()).abs() < 1e-12);
        assert_eq!(lp.double_value(&[3]), f64::NEG_INFINITY);
        assert_eq!(lp.double_value(&[4]), f64::NEG_INFINITY);
        // kind follows the input.
        let lp32 = Toy2d::Grid25.log_density(&x.to_kind(Kind::Float)).unwrap().unwrap();
        assert_eq!(lp32.kind(), Kind::Float);
        assert_eq!(lp32.size(), vec![5]);
    }

    #[test]
    fn log_density_rejects_bad_input() {
        let bad = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
        let e = Toy2d::EightGaussians.log_density(&bad).unwrap_err().to_string();
        assert!(e.contains("[B, 2]"), "{e}");
        let nan = Tensor::from_slice(&[f32::NAN, 0.0]).reshape([1, 2]);
        assert!(Toy2d::Rings.log_density(&nan).is_err());
    }

    #[test]
    fn checkerboard_samples_are_on_black_squares() {
        let x = Toy2d::Checkerboard.sample(5_000, 11);
        let lp = Toy2d::Checkerboard.log_density(&x).unwrap().unwrap();
        let finite = lp.isfinite().all().int64_value(&[]);
        assert_eq!(finite, 1);
        let pts = to_vec2(&x);
        let (m, sq) = mean_and_sq(&pts);
        // Each marginal is uniform on [-4, 4]: mean 0, variance 16/3.
        assert!(m[0].abs() < 0.08 && m[1].abs() < 0.08, "{m:?}");
        assert!((sq - 32.0 / 3.0).abs() < 0.25, "{sq}");
    }

    #[test]
    fn mixture_moments_and_shares() {
        let n = 20_000;
        // two_gaussians: share near the first mode 0.8.
        let pts = to_vec2(&Toy2d::TwoGaussians.sample(n, 1));
        let left = pts.iter().filter(|p| p[0] < 0.0).count() as f64 / n as f64;
        assert!((left - 0.8).abs() < 0.02, "{left}");
        // mean x = 0.8·(-2) + 0.2·2 = -1.2
        let (m, _) = mean_and_sq(&pts);
        assert!((m[0] + 1.2).abs() < 0.03 && m[1].abs() < 0.01, "{m:?}");

        // 8 gaussians: mean 0, E|x|² = 4 + 2σ², each share 1/8.
        let modes = Toy2d::EightGaussians.modes().unwrap();
        assert!((modes.centers[1][0] - 2f64.sqrt()).abs() < 1e-12);
        let pts = to_vec2(&Toy2d::EightGaussians.sample(n, 2));
        let (m, sq) = mean_and_sq(&pts);
        assert!(m[0].abs() < 0.04 && m[1].abs() < 0.04, "{m:?}");
        assert!((sq - 4.02).abs() < 0.01, "{sq}");
        for s in nearest_shares(&pts, &modes.centers) {
            assert!((s - 0.125).abs() < 0.01, "{s}");
        }

        // grid25: each coordinate uniform on {-2..2} plus noise: variance 2 + σ².
        let modes = Toy2d::Grid25.modes().unwrap();
        let pts = to_vec2(&Toy2d::Grid25.sample(n, 3));
        let (m, sq) = mean_and_sq(&pts);
        assert!(m[0].abs() < 0.04 && m[1].abs() < 0.04, "{m:?}");
        assert!((sq - 2.0 * 2.01).abs() < 0.08, "{sq}");
        for s in nearest_shares(&pts, &modes.centers) {
            assert!((s - 0.04).abs() < 0.006, "{s}");
        }
    }

    #[test]
    fn rings_radius_shares() {
        let pts = to_vec2(&Toy2d::Rings.sample(20_000, 4));
        let mut counts = [0usize; 3];
        let mut mean_r = 0.0;
        for p in &pts {
            let r = (p[0] * p[0] + p[1] * p[1]).sqrt();
            mean_r += r;
            counts[((r - 0.5).floor().clamp(0.0, 2.0)) as usize] += 1;
        }
        mean_r /= pts.len() as f64;
        // E r = Σ w_k R_k = 14/6.
        assert!((mean_r - 14.0 / 6.0).abs() < 0.02, "{mean_r}");
        for (c, w) in counts.iter().zip(RING_WEIGHTS) {
            assert!((*c as f64 / pts.len() as f64 - w).abs() < 0.015);
        }
        let (m, _) = mean_and_sq(&pts);
        assert!(m[0].abs() < 0.05 && m[1].abs() < 0.05, "{m:?}");
    }

    #[test]
    fn no_closed_form_moments() {
        let n = 20_000;
        // moons: mean 0, E|x|² = 4·(1.3125 - 1/π) + 2·0.1².
        let (m, sq) = mean_and_sq(&to_vec2(&Toy2d::TwoMoons.sample(n, 5)));
        assert!(m[0].abs() < 0.03 && m[1].abs() < 0.03, "{m:?}");
        let want = 4.0 * (1.3125 - 1.0 / PI) + 0.02;
        assert!((sq - want).abs() < 0.05, "{sq} vs {want}");
        // swiss roll: E[t cos t]/5 = 2/5, E[t sin t]/5 = 2/(15π), E|x|² = 9.75π²/25 + 0.02.
        let (m, sq) = mean_and_sq(&to_vec2(&Toy2d::SwissRoll.sample(n, 6)));
        assert!((m[0] - 0.4).abs() < 0.04 && (m[1] - 2.0 / (15.0 * PI)).abs() < 0.04, "{m:?}");
        let want = 9.75 * PI * PI / 25.0 + 0.02;
        assert!((sq - want).abs() < 0.06, "{sq} vs {want}");
        // pinwheel: the 5 arms cancel: mean 0; E|x|² = 1.5²·(1 + 0.3² + 0.1²).
        let (m, sq) = mean_and_sq(&to_vec2(&Toy2d::Pinwheel.sample(n, 7)));
        assert!(m[0].abs() < 0.03 && m[1].abs() < 0.03, "{m:?}");
        let want = 2.25 * 1.1;
        assert!((sq - want).abs() < 0.04, "{sq} vs {want}");
        for t in [Toy2d::TwoMoons, Toy2d::SwissRoll, Toy2d::Pinwheel, Toy2d::Rings] {
            assert!(t.modes().is_none());
        }
    }
}
