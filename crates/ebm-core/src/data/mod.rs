//! Data sources: seeded 2-D toy densities with exact log-densities ([`toy2d`]) and a user's 2-D
//! points from a CSV file ([`csv_points`]), behind one interface, [`Source2d`].

pub mod csv_points;
pub mod images;
pub mod shapes;
pub mod toy2d;

use std::path::Path;

use tch::Tensor;

pub use csv_points::{parse_points_csv, read_points_csv, Points2d};
pub use toy2d::{Modes, Toy2d};

use crate::error::{invalid, Result};

/// A 2-D data source: a toy density, or a fixed set of points sampled with replacement.
#[derive(Debug)]
pub enum Source2d {
    /// A toy density (exact log-density for some).
    Toy(Toy2d),
    /// A user's points, e.g. from a CSV file.
    Points(Points2d),
}

impl Source2d {
    /// A toy name (see [`Toy2d`]'s `FromStr`) or the path of a CSV file of `x,y` points.
    ///
    /// # Errors
    /// If `spec` is neither a toy name nor a readable `.csv` file; the message lists the toy names.
    pub fn from_spec(spec: &str) -> Result<Self> {
        if let Ok(t) = spec.parse::<Toy2d>() {
            return Ok(Source2d::Toy(t));
        }
        let path = Path::new(spec);
        let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if is_csv || path.exists() {
            return Ok(Source2d::Points(Points2d::from_csv(path)?));
        }
        Err(invalid(
            "data",
            format!("'{spec}' is neither a toy density ({}) nor a .csv file of x,y points", Toy2d::valid_names()),
        ))
    }

    /// The toy's name, or the points' name (their file's path).
    pub fn name(&self) -> String {
        match self {
            Source2d::Toy(t) => t.name().to_string(),
            Source2d::Points(p) => p.name().to_string(),
        }
    }

    /// `n` samples, deterministic for a `seed` (a bootstrap draw for points).
    ///
    /// # Shapes
    /// Returns `[n, 2]`, `f32`, on the CPU.
    pub fn sample(&self, n: usize, seed: u64) -> Tensor {
        match self {
            Source2d::Toy(t) => t.sample(n, seed),
            Source2d::Points(p) => p.sample(n, seed),
        }
    }

    /// The exact, normalised log-density where it has a closed form, else `Ok(None)` (always
    /// `None` for points).
    ///
    /// # Shapes
    /// `x: [n, 2]` → `[n]`.
    ///
    /// # Errors
    /// If `x` is not `[n, 2]` or holds NaN/Inf.
    pub fn log_density(&self, x: &Tensor) -> Result<Option<Tensor>> {
        match self {
            Source2d::Toy(t) => t.log_density(x),
            Source2d::Points(_) => Ok(None),
        }
    }

    /// Mixture centres and weights where known (see [`Toy2d::modes`]).
    pub fn modes(&self) -> Option<Modes> {
        match self {
            Source2d::Toy(t) => t.modes(),
            Source2d::Points(_) => None,
        }
    }

    /// A box `[xmin, xmax, ymin, ymax]` holding essentially all the mass (for points: their
    /// tight box, with no margin).
    pub fn bbox(&self) -> [f64; 4] {
        match self {
            Source2d::Toy(t) => t.bbox(),
            Source2d::Points(p) => p.bbox(),
        }
    }
}

impl From<Toy2d> for Source2d {
    fn from(t: Toy2d) -> Self {
        Source2d::Toy(t)
    }
}

impl From<Points2d> for Source2d {
    fn from(p: Points2d) -> Self {
        Source2d::Points(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn from_spec_toy_csv_and_error() {
        let s = Source2d::from_spec("eight-gaussians").unwrap();
        assert_eq!(s.name(), "8gaussians");
        assert!(s.modes().is_some());
        assert!(s.sample(10, 1).equal(&Toy2d::EightGaussians.sample(10, 1)));

        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(b"x,y\n1,2\n3,4\n").unwrap();
        f.flush().unwrap();
        let s = Source2d::from_spec(f.path().to_str().unwrap()).unwrap();
        assert_eq!(s.bbox(), [1.0, 3.0, 2.0, 4.0]);
        assert!(s.modes().is_none());
        assert!(s.log_density(&s.sample(4, 0)).unwrap().is_none());

        let e = Source2d::from_spec("nonsense").unwrap_err().to_string();
        assert!(e.contains("'nonsense'") && e.contains("two_gaussians"), "{e}");
        let e = Source2d::from_spec("/no/such/file.csv").unwrap_err().to_string();
        assert!(e.contains("/no/such/file.csv"), "{e}");
    }
}
