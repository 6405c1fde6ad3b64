//! Small file-system helpers: atomic writes, PNG encoding, wall-clock time.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use image::{ExtendedColorType, ImageEncoder, RgbImage};

use crate::error::{LogError, Result};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temporary file in the same folder is written, fsynced
/// and renamed over `path`, so readers see either the old or the new content, never a partial
/// file. The folder must exist. Errors name the path that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name =
        path.file_name().ok_or_else(|| LogError::invalid(format!("{} has no file name", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| LogError::io("create", path, e))?;
        f.write_all(bytes).map_err(|e| LogError::io("write", path, e))?;
        f.sync_all().map_err(|e| LogError::io("fsync", path, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| LogError::io("rename temporary file onto", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Ok(d) = File::open(&dir) {
        // Make the rename itself durable; not every platform allows syncing a folder.
        let _ = d.sync_all();
    }
    result
}

/// Encodes an RGB image as PNG bytes.
pub(crate) fn encode_png(img: &RgbImage) -> std::result::Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    image::codecs::png::PngEncoder::new(&mut buf)
        .write_image(img.as_raw(), img.width(), img.height(), ExtendedColorType::Rgb8)
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(buf)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Creates `dir` and its parents, naming `dir` in the error.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io("create folder", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn write_atomic_under_a_regular_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let target = file.join("fig.png");
        let err = write_atomic(&target, b"data").unwrap_err().to_string();
        assert!(err.contains(&target.display().to_string()), "{err}");
    }
}
