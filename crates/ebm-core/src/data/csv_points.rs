//! 2-D points from a user's CSV file: one `x,y` pair per line, an optional header line
//! (a first line in which neither field is a number, e.g. `x,y`), blank lines ignored.
//! Fields may be surrounded by spaces or double quotes; `\r\n` line ends are fine.
//!
//! Errors name the file and the line: a missing file, a line with the wrong number of
//! columns, a field that is not a number, a NaN or infinite value, an empty file. A point set
//! whose x or y values are all equal (one point, or a constant column) is an error too: it has no
//! spread, so no box or density can be fitted to it.
//!
//! Line numbers count every line of the file from 1, the header and blank lines included, as an
//! editor numbers them.
//!
//! [`Points2d::outliers`] finds values far from the rest by a robust rule: per column, a value
//! is an outlier when it lies more than [`OUTLIER_MADS`] median absolute deviations (MAD) from
//! the column's median (when more than half the values are equal the MAD is 0, and the mean
//! absolute deviation from the median is used instead). For normal data 50 MADs is about 34
//! standard deviations, so only values that are wrong by orders of magnitude (a typo, a unit
//! mix-up, a sentinel like `1e30`) are flagged.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use crate::check::check_input;
use crate::error::{invalid, io_err, EbmError, Result};

/// The fewest points a data set read from a file may have ([`crate::data::Source2d::from_spec`]): fewer cannot
/// be split into meaningful training and test draws.
pub const MIN_POINTS: usize = 10;

/// A value more than this many median absolute deviations from its column's median is an outlier (see the
/// module documentation).
pub const OUTLIER_MADS: f64 = 50.0;

const COLUMN_NAMES: [&str; 2] = ["x", "y"];

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
    Ok(parse_points_csv_lines(text, source)?.0)
}

/// [`parse_points_csv`], also returning the 1-based line number of each point (counting every line of the
/// text, the header and blank lines included).
///
/// # Shapes
/// Returns `([n, 2], n line numbers)`.
///
/// # Errors
/// As [`parse_points_csv`].
pub fn parse_points_csv_lines(text: &str, source: &str) -> Result<(Tensor, Vec<usize>)> {
    let bad = |msg: String| EbmError::Data { path: source.to_string(), msg };
    let mut values: Vec<f32> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
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
        lines.push(line_no);
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
    Ok((Tensor::from_slice(&values).reshape([n, 2]), lines))
}

/// A value far from the rest of its column (see [`Points2d::outliers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    /// The point's index (0-based, in file order).
    pub index: usize,
    /// The point's line in its file (1-based, header and blank lines counted), when it came from one.
    pub line: Option<usize>,
    /// The column: 0 for x, 1 for y.
    pub column: usize,
    /// The value.
    pub value: f64,
    /// The column's median.
    pub median: f64,
    /// How many deviations it lies from the median: median absolute deviations (MADs), or mean absolute
    /// deviations when `by_mad` is false (the column's MAD is 0).
    pub deviations: f64,
    /// Whether `deviations` counts MADs.
    pub by_mad: bool,
}

/// Formats a value (stored as `f32`) short and as written in a file (`1e30`, `0.25`).
fn short(v: f64) -> String {
    let v = v as f32;
    if v != 0.0 && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

impl std::fmt::Display for Outlier {
    /// E.g. `line 1502: x = 1e30 lies 1.5e30 median absolute deviations from the median of x (-0.003732)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let col = COLUMN_NAMES[self.column];
        match self.line {
            Some(l) => write!(f, "line {l}: ")?,
            None => write!(f, "point {}: ", self.index)?,
        }
        let unit = if self.by_mad { "median absolute deviations" } else { "mean absolute deviations" };
        write!(
            f,
            "{col} = {} lies {} {unit} from the median of {col} ({})",
            short(self.value),
            rounded(self.deviations),
            rounded(self.median)
        )
    }
}

/// A value to about four significant digits (`1.5e30`, `0.003732`, `1234`).
fn rounded(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&v.abs()) {
        format!("{v:.1e}")
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.digits$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

/// The median of `v` (sorted in place; not empty; the mean of the two middle values for an even count).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// A fixed set of 2-D points (e.g. a user's CSV file) used as a data source: sampling draws
/// from it with replacement (bootstrap).
#[derive(Debug)]
pub struct Points2d {
    name: String,
    points: Tensor,
    bbox: [f64; 4],
    /// The file line of each point, when read from a file.
    lines: Option<Vec<usize>>,
}

impl Points2d {
    /// Wraps `points` under a display `name`; the points are copied to the CPU as `f32`.
    ///
    /// # Shapes
    /// `points: [n, 2]` with `n ≥ 2` (x and y must each take two values or more).
    ///
    /// # Errors
    /// If `points` is not `[n, 2]` with `n ≥ 1` or holds NaN/Inf; [`EbmError::Data`] naming `name` if
    /// every point has the same x or the same y (one point, or a constant column): such data has no spread.
    pub fn new(name: impl Into<String>, points: &Tensor) -> Result<Self> {
        let name = name.into();
        check_input(&[2], points, &format!("points of '{name}'"))?;
        let points = points.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?;
        let lo: Vec<f64> = Vec::try_from(&points.f_amin(0, false)?)?;
        let hi: Vec<f64> = Vec::try_from(&points.f_amax(0, false)?)?;
        if lo.len() != 2 || hi.len() != 2 {
            return Err(invalid("points", "internal: bounding box is not 2-D"));
        }
        if let Some(c) = (0..2).find(|&c| !(hi[c] > lo[c])) {
            let n = points.size()[0];
            let col = COLUMN_NAMES[c];
            let all = if n == 1 { "its one point has".to_string() } else { format!("all {n} points have") };
            return Err(EbmError::Data {
                path: name,
                msg: format!(
                    "the data has no spread in column {col} ({all} {col} = {}): a density needs points that \
                     differ in x and in y",
                    short(lo[c])
                ),
            });
        }
        Ok(Points2d { name, points, bbox: [lo[0], hi[0], lo[1], hi[1]], lines: None })
    }

    /// Loads the points of a CSV file (see [`read_points_csv`]); the name is the file's path, and each
    /// point remembers its line (for [`Points2d::outliers`]).
    ///
    /// # Errors
    /// As [`read_points_csv`] and [`Points2d::new`].
    pub fn from_csv(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let (pts, lines) = parse_points_csv_lines(&text, &path.display().to_string())?;
        let mut p = Points2d::new(path.display().to_string(), &pts)?;
        p.lines = Some(lines);
        Ok(p)
    }

    /// The file line (1-based, header and blank lines counted) of point `i`, when the points came from a file.
    pub fn line_of(&self, i: usize) -> Option<usize> {
        self.lines.as_ref().and_then(|l| l.get(i).copied())
    }

    /// The values farther than `limit` deviations from their column's median, in file order (by point, x
    /// before y). The deviation is the median absolute deviation (MAD) of the column, or, when more than half
    /// its values are equal (MAD = 0), the mean absolute deviation from the median. [`OUTLIER_MADS`] is the
    /// limit the experiments use.
    pub fn outliers(&self, limit: f64) -> Vec<Outlier> {
        let Ok(flat) = Vec::<f32>::try_from(&self.points.reshape([-1])) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut stats = [(0.0, 0.0, true); 2];
        for (c, stat) in stats.iter_mut().enumerate() {
            let mut col: Vec<f64> = flat.iter().skip(c).step_by(2).map(|v| *v as f64).collect();
            let med = median(&mut col);
            let mut dev: Vec<f64> = col.iter().map(|v| (v - med).abs()).collect();
            let mad = median(&mut dev);
            *stat = if mad > 0.0 { (med, mad, true) } else { (med, dev.iter().sum::<f64>() / dev.len() as f64, false) };
        }
        for (i, p) in flat.chunks(2).enumerate() {
            for (c, &(median, scale, by_mad)) in stats.iter().enumerate() {
                let value = p[c] as f64;
                let deviations = (value - median).abs() / scale;
                if scale > 0.0 && deviations > limit {
                    let line = self.line_of(i);
                    found.push(Outlier { index: i, line, column: c, value, median, deviations, by_mad });
                }
            }
        }
        found
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

    /// The number of points (at least 2).
    pub fn len(&self) -> usize {
        self.points.size()[0] as usize
    }

    /// Always `false`: a point set holds at least two points.
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

    #[test]
    fn numbers_in_messages_are_short() {
        assert_eq!(rounded(1.4503113e30), "1.5e30");
        assert_eq!(rounded(-0.0037317974), "-0.003732");
        assert_eq!(rounded(1234.4), "1234");
        assert_eq!(rounded(57.25), "57.25");
        assert_eq!(rounded(0.0), "0");
        assert_eq!(short(1e30_f32 as f64), "1e30");
        assert_eq!(short(-400.0), "-400");
    }

    #[test]
    fn one_point_or_a_constant_column_has_no_spread() {
        let f = write_tmp("x,y\n1,2\n");
        let e = Points2d::from_csv(f.path()).unwrap_err();
        assert!(matches!(e, EbmError::Data { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("no spread in column x (its one point has x = 1)"), "{e}");
        assert!(!e.contains("AxesBox"), "{e}");
        let f = write_tmp(&format!("x,y\n{}", (0..20).map(|i| format!("{i},2.5\n")).collect::<String>()));
        let e = Points2d::from_csv(f.path()).unwrap_err().to_string();
        assert!(e.contains("no spread in column y (all 20 points have y = 2.5)"), "{e}");
    }

    #[test]
    fn outliers_name_the_line_and_value_by_a_robust_rule() {
        // 3 000 points of a standard normal-ish spread, one x = 1e30 on line 1502 (header = line 1) and one
        // y = -400 on line 2001; a blank line before the end moves nothing.
        let mut text = String::from("x,y\n");
        for i in 0..3000 {
            let (x, y) = ((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos());
            let x = if i == 1500 { 1e30 } else { x };
            let y = if i == 1999 { -400.0 } else { y };
            text.push_str(&format!("{x},{y}\n"));
        }
        text.push('\n');
        let f = write_tmp(&text);
        let p = Points2d::from_csv(f.path()).unwrap();
        assert_eq!(p.line_of(0), Some(2));
        let found = p.outliers(OUTLIER_MADS);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].index, found[0].line, found[0].column, found[0].value),
            (1500, Some(1502), 0, 1e30_f32 as f64)
        );
        assert!(found[0].by_mad);
        let msg = found[0].to_string();
        assert!(msg.starts_with("line 1502: x = 1e30 lies") && msg.contains("median absolute deviations"), "{msg}");
        assert_eq!((found[1].line, found[1].column, found[1].value), (Some(2001), 1, -400.0));
        assert!(found[1].to_string().starts_with("line 2001: y = -400 lies"), "{}", found[1]);
        // legitimately wide data is not flagged
        let wide: Vec<f32> = (0..2000).flat_map(|i| [(i as f32 - 1000.0) * 10.0, (i % 7) as f32]).collect();
        let p = Points2d::new("wide", &Tensor::from_slice(&wide).view([2000, 2])).unwrap();
        assert!(p.outliers(OUTLIER_MADS).is_empty());
        // more than half the values equal: the MAD is 0 and the mean absolute deviation takes over
        let mut v: Vec<f32> = Vec::new();
        for i in 0..100 {
            v.extend([if i < 60 { 0.0 } else { 1.0 + i as f32 * 0.01 }, i as f32]);
        }
        v[2 * 99] = 1e6;
        let p = Points2d::new("ties", &Tensor::from_slice(&v).view([100, 2])).unwrap();
        let found = p.outliers(OUTLIER_MADS);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].index, found[0].line, found[0].by_mad), (99, None, false));
        assert!(found[0].to_string().starts_with("point 99: x = 1e6 lies"), "{}", found[0]);
    }
}
