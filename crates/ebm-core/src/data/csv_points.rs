//! 2-D points from a user's CSV file: one `x,y` pair per line, an optional header line
//! (a first line in which neither field is a number, e.g. `x,y`), blank lines ignored.
//! Fields may be surrounded by spaces or double quotes; `\r\n` line ends are fine.
//!
//! Errors name the file and the line: a missing file, a line with the wrong number of
//! columns, a field that is not a number, a NaN or infinite value, an empty file.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use crate::check::check_input;
use crate::error::{invalid, io_err, EbmError, Result};

/// Reads a CSV file of 2-D points.
///
/// # Shapes
/// Returns `[n, 2]`, `f32`, on the CPU, with `n ≥ 1`.
///
/// # Errors
/// [`EbmError::Io`] if the file cannot be read; [`EbmError::Data`] (naming the file and line)
/// if a line does not hold exactly two finite numbers or the file holds no points.
pub fn read_points_csv(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    parse_points_csv(&text, &path.display().to_string())
}

/// Parses CSV text of 2-D points; `source` names the text in error messages (usually its path).
///
/// # Shapes
/// Returns `[n, 2]`, `f32`, on the CPU, with `n ≥ 1`.
///
/// # Errors
/// [`EbmError::Data`] naming `source` and the 1-based line number, as for [`read_points_csv`].
pub fn parse_points_csv(text: &str, source: &str) -> Result<Tensor> {
    let bad = |msg: String| EbmError::Data { path: source.to_string(), msg };
    let mut values: Vec<f32> = Vec::new();
    let mut seen_line = false;
    let mut header = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(|f| f.trim().trim_matches('"').trim()).collect();
        if fields.len() != 2 {
            return Err(bad(format!("line {line_no} has {} columns, expected 2 (`x,y`)", fields.len())));
        }
        let first = !seen_line;
        seen_line = true;
        if first && fields.iter().all(|f| f.parse::<f64>().is_err()) {
            header = true;
            continue;
        }
        for (col, field) in fields.iter().enumerate() {
            let v: f64 = field
                .parse()
                .map_err(|_| bad(format!("line {line_no}: cannot read '{field}' (column {}) as a number", col + 1)))?;
            if v.is_nan() {
                return Err(bad(format!("line {line_no}: value is NaN (column {})", col + 1)));
            }
            if v.is_infinite() {
                return Err(bad(format!("line {line_no}: value is infinite (column {})", col + 1)));
            }
            let v32 = v as f32;
            if v32.is_infinite() {
                return Err(bad(format!("line {line_no}: value {field} (column {}) is too large for f32", col + 1)));
            }
            values.push(v32);
        }
    }
    if values.is_empty() {
        let msg = if !seen_line {
            "the file is empty; expected lines of `x,y`".to_string()
        } else if header {
            "no data lines after the header; expected lines of `x,y`".to_string()
        } else {
            "no points".to_string()
        };
        return Err(bad(msg));
    }
    let n = (values.len() / 2) as i64;
    Ok(Tensor::from_slice(&values).reshape([n, 2]))
}

/// A fixed set of 2-D points (e.g. a user's CSV file) used as a data source: sampling draws
/// from it with replacement (bootstrap).
#[derive(Debug)]
pub struct Points2d {
    name: String,
    points: Tensor,
    bbox: [f64; 4],
}

impl Points2d {
    /// Wraps `points` under a display `name`; the points are copied to the CPU as `f32`.
    ///
    /// # Shapes
    /// `points: [n, 2]` with `n ≥ 1`.
    ///
    /// # Errors
    /// If `points` is not `[n, 2]` with `n ≥ 1` or holds NaN/Inf.
    pub fn new(name: impl Into<String>, points: &Tensor) -> Result<Self> {
        let name = name.into();
        check_input(&[2], points, &format!("points of '{name}'"))?;
        let points = points.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
        let lo: Vec<f64> = Vec::try_from(&points.f_amin(0, false)?)?;
        let hi: Vec<f64> = Vec::try_from(&points.f_amax(0, false)?)?;
        if lo.len() != 2 || hi.len() != 2 {
            return Err(invalid("points", "internal: bounding box is not 2-D"));
        }
        Ok(Points2d { name, points, bbox: [lo[0], hi[0], lo[1], hi[1]] })
    }

    /// Loads the points of a CSV file (see [`read_points_csv`]); the name is the file's path.
    ///
    /// # Errors
    /// As [`read_points_csv`].
    pub fn from_csv(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pts = read_points_csv(path)?;
        Points2d::new(path.display().to_string(), &pts)
    }

    /// The display name (the file's path for [`Points2d::from_csv`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All the points.
    ///
    /// # Shapes
    /// `[n, 2]`, `f32`, on the CPU.
    pub fn points(&self) -> &Tensor {
        &self.points
    }

    /// The number of points (at least 1).
    pub fn len(&self) -> usize {
        self.points.size()[0] as usize
    }

    /// Always `false`: a point set holds at least one point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tight box `[xmin, xmax, ymin, ymax]` of the points (no margin).
    pub fn bbox(&self) -> [f64; 4] {
        self.bbox
    }

    /// `n` points drawn uniformly with replacement, deterministically for a given `seed`.
    ///
    /// # Shapes
    /// Returns `[n, 2]`, `f32`, on the CPU.
    pub fn sample(&self, n: usize, seed: u64) -> Tensor {
        let mut rng = StdRng::seed_from_u64(seed);
        let len = self.len() as i64;
        let idx: Vec<i64> = (0..n).map(|_| rng.random_range(0..len)).collect();
        self.points.index_select(0, &Tensor::from_slice(&idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.flush().unwrap();
        f
    }

    fn err_of(text: &str) -> (String, String) {
        let f = write_tmp(text);
        let path = f.path().display().to_string();
        let e = read_points_csv(f.path()).unwrap_err();
        assert!(matches!(e, EbmError::Data { .. }), "{e:?}");
        (e.to_string(), path)
    }

    #[test]
    fn reads_header_blank_lines_crlf_quotes() {
        let f = write_tmp("\"x\", \"y\"\r\n1.5,-2\r\n\r\n  \n 3e-1 , 4\n-0,7.25\n");
        let t = read_points_csv(f.path()).unwrap();
        assert_eq!(t.size(), vec![3, 2]);
        assert_eq!(t.kind(), Kind::Float);
        let v: Vec<f32> = Vec::try_from(&t.reshape([-1])).unwrap();
        assert_eq!(v, vec![1.5, -2.0, 0.3, 4.0, 0.0, 7.25]);
        // Without a header the first line is data.
        let t = parse_points_csv("1,2\n3,4", "mem").unwrap();
        let v: Vec<f32> = Vec::try_from(&t.reshape([-1])).unwrap();
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.csv");
        let e = read_points_csv(&p).unwrap_err();
        assert!(matches!(e, EbmError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.csv"), "{e}");
    }

    #[test]
    fn wrong_column_count_names_line() {
        let text = "x,y\n1,2\n3,4\n5,6\n\n7,8\n9,10,11\n";
        let (e, path) = err_of(text);
        assert!(e.contains(&path), "{e}");
        assert!(e.contains("line 7 has 3 columns, expected 2"), "{e}");
        let (e, _) = err_of("1\n");
        assert!(e.contains("line 1 has 1 columns, expected 2"), "{e}");
    }

    #[test]
    fn non_numeric_names_line_and_field() {
        let (e, path) = err_of("x,y\n1,2\n3,abc\n");
        assert!(e.contains(&path), "{e}");
        assert!(e.contains("line 3: cannot read 'abc' (column 2) as a number"), "{e}");
        // A first line with one number is not a header but a bad data line.
        let (e, _) = err_of("1.0,oops\n2,3\n");
        assert!(e.contains("line 1: cannot read 'oops'"), "{e}");
    }

    #[test]
    fn nan_and_inf_rejected() {
        let (e, path) = err_of("x,y\n1,2\nNaN,0\n");
        assert!(e.contains(&path), "{e}");
        assert!(e.contains("line 3: value is NaN (column 1)"), "{e}");
        let (e, _) = err_of("1,2\n0,inf\n");
        assert!(e.contains("line 2: value is infinite (column 2)"), "{e}");
        let (e, _) = err_of("1,1e39\n");
        assert!(e.contains("line 1: value 1e39 (column 2) is too large for f32"), "{e}");
    }

    #[test]
    fn empty_file_and_header_only() {
        let (e, path) = err_of("");
        assert!(e.contains(&path), "{e}");
        assert!(e.contains("the file is empty"), "{e}");
        let (e, _) = err_of("\n  \n");
        assert!(e.contains("the file is empty"), "{e}");
        let (e, _) = err_of("x,y\n\n");
        assert!(e.contains("no data lines after the header"), "{e}");
    }

    #[test]
    fn points2d_bbox_and_bootstrap() {
        let f = write_tmp("x,y\n0,1\n2,-3\n-1,5\n");
        let p = Points2d::from_csv(f.path()).unwrap();
        assert_eq!(p.len(), 3);
        assert!(!p.is_empty());
        assert_eq!(p.bbox(), [-1.0, 2.0, -3.0, 5.0]);
        assert_eq!(p.name(), f.path().display().to_string());
        let a = p.sample(1000, 3);
        assert_eq!(a.size(), vec![1000, 2]);
        assert!(a.equal(&p.sample(1000, 3)));
        assert!(!a.equal(&p.sample(1000, 4)));
        // Every drawn row is one of the points, and each point is drawn about a third of the time.
        let rows: Vec<f32> = Vec::try_from(&a.reshape([-1])).unwrap();
        let mut counts = [0usize; 3];
        for r in rows.chunks(2) {
            let k = match (r[0], r[1]) {
                (0.0, 1.0) => 0,
                (2.0, -3.0) => 1,
                (-1.0, 5.0) => 2,
                other => panic!("drew {other:?}, not one of the points"),
            };
            counts[k] += 1;
        }
        for c in counts {
            assert!((c as f64 / 1000.0 - 1.0 / 3.0).abs() < 0.06, "{counts:?}");
        }
        let bad = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(Points2d::new("bad", &bad).is_err());
    }
}
