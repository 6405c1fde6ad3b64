//! The subcommands that read a finished run folder: `sample`, `eval`, `score`, `compose`.

pub mod compose;
pub mod eval;
pub mod sample;
pub mod score;

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// `path` when it does not exist yet; an existing file is refused (nothing written before is overwritten).
///
/// # Errors
/// The file exists.
pub fn fresh(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        bail!("{} exists; give another --out (nothing written before is overwritten)", path.display());
    }
    Ok(path.to_path_buf())
}

/// The first of `dir/stem.ext`, `dir/stem-2.ext`, … that does not exist.
pub fn next_free(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let first = dir.join(format!("{stem}.{ext}"));
    if !first.exists() {
        return first;
    }
    (2..).map(|i| dir.join(format!("{stem}-{i}.{ext}"))).find(|p| !p.exists()).expect("unbounded")
}

/// Reads a `.csv` / `.npy` file of points for a model with events `event` (vectors only).
///
/// # Errors
/// File errors (named, with line), or points of the wrong dimension.
pub fn read_points(path: &Path, event: &[i64], flag: &str) -> Result<tch::Tensor> {
    let t = ebm_core::data::read_table(path).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    let numel: i64 = event.iter().product();
    if t.dim() != numel {
        bail!(
            "{flag} {}: rows have {} column(s), but the model takes points of shape {event:?} ({numel} values); \
             give a file with {numel} numbers per row",
            path.display(),
            t.dim()
        );
    }
    let mut shape = vec![t.len() as i64];
    shape.extend_from_slice(event);
    Ok(t.points.reshape(shape.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_outputs_are_refused_and_free_names_found() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        assert_eq!(fresh(&a).unwrap(), a);
        std::fs::write(&a, "1,2\n").unwrap();
        assert!(fresh(&a).unwrap_err().to_string().contains("exists"));
        assert_eq!(next_free(dir.path(), "a", "csv"), dir.path().join("a-2.csv"));
        let e = read_points(&a, &[3], "--data").unwrap_err().to_string();
        assert!(e.contains("rows have 2 column(s)") && e.contains("shape [3]"), "{e}");
        assert_eq!(read_points(&a, &[2], "--data").unwrap().size(), [1, 2]);
    }
}
