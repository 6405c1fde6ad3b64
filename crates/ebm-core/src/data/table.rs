//! Vectors of any dimension from a user's file: a CSV table (one row per point, an optional header) or a
//! NumPy `.npy` array `[n, d]`.
//!
//! CSV rules: fields separated by `,`, surrounded by optional spaces or double quotes; `\r\n` line ends and
//! blank lines are fine; a first line in which no field is a number is a header (its fields name the
//! columns). Every data row must have the same number of columns as the first; every value must be a finite
//! number. Errors name the file and the line, counting every line from 1 as an editor does.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{io_err, EbmError, Result};

/// A table of points read from a file.
#[derive(Debug)]
pub struct Table {
    /// The points, `[n, d]`, `f32`, on the CPU.
    pub points: Tensor,
    /// Column names from the header line (`None` without a header, or for `.npy`).
    pub columns: Option<Vec<String>>,
    /// The 1-based line of each row in the file (`None` for `.npy`).
    pub lines: Option<Vec<usize>>,
}

impl Table {
    /// The number of columns `d`.
    pub fn dim(&self) -> i64 {
        self.points.size()[1]
    }

    /// The number of rows `n`.
    pub fn len(&self) -> usize {
        self.points.size()[0] as usize
    }

    /// True when the table has no rows (never for a table read by [`read_table`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads a `.csv` or `.npy` file of points (by its extension; anything else is read as CSV).
///
/// # Shapes
/// `points: [n, d]`, `n ≥ 1`, `d ≥ 1`.
///
/// # Errors
/// [`EbmError::Io`] when the file cannot be read; [`EbmError::Data`] naming the file (and the line for CSV)
/// for a wrong column count, a field that is not a number, NaN or infinite values, an empty file, or a
/// `.npy` array that is not 2-D numbers.
pub fn read_table(path: impl AsRef<Path>) -> Result<Table> {
    let path = path.as_ref();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        return read_npy_points(path);
    }
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    parse_table_csv(&text, &path.display().to_string())
}

/// Parses CSV text of points; `source` names the text in errors (usually its path).
///
/// # Errors
/// As [`read_table`].
pub fn parse_table_csv(text: &str, source: &str) -> Result<Table> {
    let bad = |msg: String| EbmError::Data { path: source.to_string(), msg };
    let mut values: Vec<f32> = Vec::new();
    let mut lines = Vec::new();
    let mut columns: Option<Vec<String>> = None;
    let mut width: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(|f| f.trim().trim_matches('"').trim()).collect();
        if width.is_none() && columns.is_none() && fields.iter().all(|f| f.parse::<f64>().is_err()) {
            columns = Some(fields.iter().map(|f| f.to_string()).collect());
            width = Some(fields.len());
            continue;
        }
        let w = *width.get_or_insert(fields.len());
        if fields.len() != w {
            let first = if columns.is_some() { "the header" } else { "the first row" };
            return Err(bad(format!("line {line_no} has {} column(s), but {first} has {w}", fields.len())));
        }
        for (col, field) in fields.iter().enumerate() {
            let name = match &columns {
                Some(c) => format!("column {} '{}'", col + 1, c[col]),
                None => format!("column {}", col + 1),
            };
            let v: f64 =
                field.parse().map_err(|_| bad(format!("line {line_no}, {name}: cannot read '{field}' as a number")))?;
            if v.is_nan() {
                return Err(bad(format!("line {line_no}, {name}: value is NaN; remove or fix the row")));
            }
            if !v.is_finite() || !(v as f32).is_finite() {
                return Err(bad(format!("line {line_no}, {name}: value {field} is infinite or too large for f32")));
            }
            values.push(v as f32);
        }
        lines.push(line_no);
    }
    let Some(w) = width.filter(|_| !lines.is_empty()) else {
        let msg = if columns.is_some() { "no data rows after the header" } else { "the file has no data rows" };
        return Err(bad(msg.to_string()));
    };
    let n = lines.len() as i64;
    Ok(Table { points: Tensor::from_slice(&values).reshape([n, w as i64]), columns, lines: Some(lines) })
}

fn read_npy_points(path: &Path) -> Result<Table> {
    let bad = |msg: String| EbmError::Data { path: path.display().to_string(), msg };
    if !path.is_file() {
        return Err(io_err(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
    }
    let t = Tensor::read_npy(path).map_err(|e| bad(format!("not a readable .npy array: {e}")))?;
    let size = t.size();
    let t = match size.len() {
        1 => t.reshape([size[0], 1]),
        2 => t,
        _ => return Err(bad(format!("holds an array of shape {size:?}; expected [n, d] points"))),
    };
    if t.size()[0] == 0 {
        return Err(bad("the array has no rows".into()));
    }
    if !t.is_floating_point() && !matches!(t.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
        return Err(bad(format!("holds {:?} values; expected numbers", t.kind())));
    }
    let t = t.to_kind(Kind::Float);
    let finite = t.isfinite().all_dim(1, false);
    if let Some(row) = Vec::<bool>::try_from(&finite).ok().and_then(|v| v.iter().position(|ok| !ok)) {
        return Err(bad(format!("row {row} (0-based) holds NaN or infinite values; remove or fix it")));
    }
    Ok(Table { points: t, columns: None, lines: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_and_without_header() {
        let t = parse_table_csv("a, b ,c\n1,2,3\n\n4,5,6\n", "f.csv").unwrap();
        assert_eq!(t.points.size(), [2, 3]);
        assert_eq!(t.columns.as_deref().unwrap(), ["a", "b", "c"]);
        assert_eq!(t.lines.as_deref().unwrap(), [2, 4]);
        assert_eq!(Vec::<f32>::try_from(t.points.reshape([-1])).unwrap(), [1., 2., 3., 4., 5., 6.]);
        let t = parse_table_csv("1.5,-2e-1\r\n3,4\r\n", "f.csv").unwrap();
        assert_eq!(t.points.size(), [2, 2]);
        assert!(t.columns.is_none());
        let t = parse_table_csv("\"1\",\"2\"\n", "f.csv").unwrap();
        assert_eq!(t.points.size(), [1, 2]);
    }

    #[test]
    fn csv_errors_name_file_line_and_column() {
        let e = parse_table_csv("x,y\n1,2\n3\n", "pts.csv").unwrap_err().to_string();
        assert!(e.contains("pts.csv") && e.contains("line 3 has 1 column(s), but the header has 2"), "{e}");
        let e = parse_table_csv("x,y\n1,2\n3,nan\n", "pts.csv").unwrap_err().to_string();
        assert!(e.contains("line 3, column 2 'y': value is NaN"), "{e}");
        let e = parse_table_csv("1,2\n3,abc\n", "pts.csv").unwrap_err().to_string();
        assert!(e.contains("line 2, column 2: cannot read 'abc'"), "{e}");
        let e = parse_table_csv("1,1e39\n", "pts.csv").unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
        let e = parse_table_csv("x,y\n", "pts.csv").unwrap_err().to_string();
        assert!(e.contains("no data rows after the header"), "{e}");
        let e = parse_table_csv("", "pts.csv").unwrap_err().to_string();
        assert!(e.contains("no data rows"), "{e}");
    }

    #[test]
    fn npy_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([3, 2]);
        x.write_npy(&p).unwrap();
        let t = read_table(&p).unwrap();
        assert_eq!(t.points.size(), [3, 2]);
        assert_eq!(t.points.kind(), Kind::Float);
        assert_eq!(f64::try_from(t.points.sum(Kind::Double)).unwrap(), 21.0);
        let bad = Tensor::from_slice(&[1.0f32, f32::NAN, 3.0, 4.0]).reshape([2, 2]);
        bad.write_npy(&p).unwrap();
        let e = read_table(&p).unwrap_err().to_string();
        assert!(e.contains("row 0") && e.contains("NaN"), "{e}");
        Tensor::zeros([2, 2, 2], (Kind::Float, tch::Device::Cpu)).write_npy(&p).unwrap();
        assert!(read_table(&p).unwrap_err().to_string().contains("expected [n, d]"));
        assert!(read_table(dir.path().join("missing.npy")).is_err());
    }
}
