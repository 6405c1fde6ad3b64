//! Data sources: seeded 2-D toy densities with exact log-densities ([`toy2d`]) and a user's 2-D
//! points from a CSV file ([`csv_points`]), behind one interface, [`Source2d`].

pub mod csv_points;
pub mod images;
pub mod shapes;
pub mod table;
pub mod toy2d;

use std::path::Path;

use tch::Tensor;

pub use csv_points::{parse_points_csv, read_points_csv, Outlier, Points2d, MIN_POINTS, OUTLIER_MADS};
pub use table::{read_table, Table};
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
    /// If `spec` is neither a toy name nor a readable `.csv` file (the message lists the toy names); for a
    /// file, the errors of [`Points2d::from_csv`] (naming file and line; no spread in x or y), and
    /// [`EbmError::Data`](crate::error::EbmError::Data) naming the file and the count when it holds fewer than
    /// [`MIN_POINTS`] points.
    pub fn from_spec(spec: &str) -> Result<Self> {
        if let Ok(t) = spec.parse::<Toy2d>() {
            return Ok(Source2d::Toy(t));
        }
        if Self::is_file_spec(spec) {
            let points = Points2d::from_csv(spec)?;
            if points.len() < MIN_POINTS {
                return Err(crate::error::EbmError::Data {
                    path: spec.to_string(),
                    msg: format!(
                        "only {} data row(s); at least {MIN_POINTS} are needed to draw training and test points",
                        points.len()
                    ),
                });
            }
            return Ok(Source2d::Points(points));
        }
        Err(invalid(
            "data",
            format!("'{spec}' is neither a toy density ({}) nor a .csv file of x,y points", Toy2d::valid_names()),
        ))
    }

    /// True when [`Source2d::from_spec`] reads `spec` as a file (it is not a toy name, and ends in `.csv` or
    /// exists).
    pub fn is_file_spec(spec: &str) -> bool {
        if spec.parse::<Toy2d>().is_ok() {
            return false;
        }
        let path = Path::new(spec);
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) || path.exists()
    }

    /// Values far from the rest of their column (see [`Points2d::outliers`]); none for a toy density.
    pub fn outliers(&self, limit: f64) -> Vec<Outlier> {
        match self {
            Source2d::Toy(_) => Vec::new(),
            Source2d::Points(p) => p.outliers(limit),
        }
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
        // two points are too few to train and test on
        let path = f.path().to_str().unwrap().to_string();
        let path = path.as_str();
        let e = Source2d::from_spec(path).unwrap_err().to_string();
        assert!(e.contains(path) && e.contains("only 2 data row(s); at least 10"), "{e}");
        for i in 0..8 {
            writeln!(f, "{},{}", 1.0 + 0.25 * i as f64, 2.0 + 0.25 * i as f64).unwrap();
        }
        f.flush().unwrap();
        assert!(Source2d::is_file_spec(path) && !Source2d::is_file_spec("rings"));
        let s = Source2d::from_spec(path).unwrap();
        assert_eq!(s.bbox(), [1.0, 3.0, 2.0, 4.0]);
        assert!(s.outliers(OUTLIER_MADS).is_empty());
        assert!(s.modes().is_none());
        assert!(s.log_density(&s.sample(4, 0)).unwrap().is_none());

        let e = Source2d::from_spec("nonsense").unwrap_err().to_string();
        assert!(e.contains("'nonsense'") && e.contains("two_gaussians"), "{e}");
        let e = Source2d::from_spec("/no/such/file.csv").unwrap_err().to_string();
        assert!(e.contains("/no/such/file.csv"), "{e}");
    }
}
