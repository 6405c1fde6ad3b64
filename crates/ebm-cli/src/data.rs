//! Loads the data a [`DataSpec`] names into training and test tensors, with what the rest of the command
//! line needs to know of it (shape, labels, box, pixel range, known density, files read).

use crate::spec::DataSpec;
use anyhow::{bail, Result};
use ebm_core::data::images::{default_data_dir, ImageDataset, ImageSet};
use ebm_core::data::{read_table, Toy2d};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// What the command line remembers of a run's data (saved as `data.json` in the run folder, read back by
/// `ebm sample / eval / score / compose`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// The source as written in the config.
    pub source: String,
    /// The shape of one point, e.g. `[2]` or `[1, 8, 8]`.
    pub event_shape: Vec<i64>,
    /// Class names when the model is given labels (empty otherwise).
    pub label_names: Vec<String>,
    /// Per-dimension `[min, max]` of the training data (vectors only).
    pub bounds: Option<Vec<[f64; 2]>>,
    /// `(low, high)` of the pixel values (images only).
    pub pixel_range: Option<(f64, f64)>,
    /// Column names from a CSV header.
    pub columns: Option<Vec<String>>,
    /// Training and test sizes.
    pub n_train: usize,
    /// Test size.
    pub n_test: usize,
}

impl DataInfo {
    /// True for image data (`[C, H, W]` events).
    pub fn is_image(&self) -> bool {
        self.pixel_range.is_some()
    }

    /// The built-in density, when the source is one (its exact log-density gives KL).
    pub fn toy(&self) -> Option<Toy2d> {
        self.source.parse::<Toy2d>().ok()
    }

    /// A box `[xmin, xmax, ymin, ymax]` for 2-D data: the built-in density's, else the training data's.
    pub fn bbox_2d(&self) -> Option<[f64; 4]> {
        if self.event_shape != [2] {
            return None;
        }
        if let Some(t) = self.toy() {
            return Some(t.bbox());
        }
        self.bounds.as_ref().map(|b| [b[0][0], b[0][1], b[1][0], b[1][1]])
    }
}

/// Loaded data.
#[derive(Debug)]
pub struct Dataset {
    /// What is saved of it.
    pub info: DataInfo,
    /// Training points `[N, *event]`, `f32`, CPU.
    pub train: Tensor,
    /// Held-out points `[M, *event]`.
    pub test: Tensor,
    /// Training labels `[N]` (int64) when the model is given labels.
    pub train_labels: Option<Tensor>,
    /// Test labels `[M]`.
    pub test_labels: Option<Tensor>,
    /// Files read (hashed into the run's fingerprint).
    pub files: Vec<PathBuf>,
    /// Warnings to print (skipped images and the like).
    pub warnings: Vec<String>,
}

/// Loads `spec`'s data; `seed` fixes the draws and the split.
///
/// # Errors
/// Names `data.source` and what is wrong: an unknown name, an unreadable file (file and line), too few rows.
pub fn load(spec: &DataSpec, seed: u64) -> Result<Dataset> {
    if !(spec.test_fraction > 0.0 && spec.test_fraction < 1.0) {
        bail!("data.test_fraction = {} must be between 0 and 1 (exclusive)", spec.test_fraction);
    }
    let src = spec.source.trim();
    if let Ok(toy) = src.parse::<Toy2d>() {
        if spec.n_train < 2 || spec.n_test < 2 {
            bail!("data.n_train and data.n_test must be at least 2 (got {} and {})", spec.n_train, spec.n_test);
        }
        if spec.labels {
            bail!("data.labels = true, but data.source = \"{src}\" has no labels; set data.labels = false");
        }
        let train = toy.sample(spec.n_train, seed);
        let test = toy.sample(spec.n_test, seed.wrapping_add(1_000_003));
        return Ok(vectors(src, train, test, None, Vec::new()));
    }
    if let Ok(set) = src.parse::<ImageDataset>() {
        if src.starts_with("folder:") || matches!(set, ImageDataset::Digits | ImageDataset::Mnist5k) {
            return images(spec, &set, seed);
        }
    }
    let path = PathBuf::from(src);
    let is_table = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("npy"));
    if !is_table {
        bail!(
            "data.source = \"{src}\" is not a built-in density ({}), a .csv or .npy file, digits, mnist5k or \
             folder:<path>",
            Toy2d::valid_names()
        );
    }
    if spec.labels {
        bail!("data.labels = true, but {src} is a table of points without labels; set data.labels = false");
    }
    let table = read_table(&path).map_err(|e| anyhow::anyhow!("data.source: {e}"))?;
    let n = table.len();
    if n < 10 {
        bail!("data.source: {src} has {n} row(s); at least 10 are needed to hold some out for evaluation");
    }
    let n_test = ((spec.test_fraction * n as f64).round() as usize).clamp(1, n - 1);
    let perm = shuffled(n, seed);
    let test = table.points.index_select(0, &perm.narrow(0, 0, n_test as i64));
    let train = table.points.index_select(0, &perm.narrow(0, n_test as i64, (n - n_test) as i64));
    Ok(vectors(src, train, test, table.columns, vec![path]))
}

/// A permutation of `0..n` fixed by `seed` (a Fisher–Yates shuffle on a 64-bit LCG, independent of libtorch's
/// global generator).
fn shuffled(n: usize, seed: u64) -> Tensor {
    let mut idx: Vec<i64> = (0..n as i64).collect();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    Tensor::from_slice(&idx)
}

fn vectors(src: &str, train: Tensor, test: Tensor, columns: Option<Vec<String>>, files: Vec<PathBuf>) -> Dataset {
    let d = train.size()[1];
    let lo = Vec::<f64>::try_from(train.min_dim(0, false).0.to_kind(Kind::Double)).unwrap_or_default();
    let hi = Vec::<f64>::try_from(train.max_dim(0, false).0.to_kind(Kind::Double)).unwrap_or_default();
    let bounds = lo.iter().zip(&hi).map(|(a, b)| [*a, *b]).collect();
    let info = DataInfo {
        source: src.to_string(),
        event_shape: vec![d],
        label_names: Vec::new(),
        bounds: Some(bounds),
        pixel_range: None,
        columns,
        n_train: train.size()[0] as usize,
        n_test: test.size()[0] as usize,
    };
    Dataset { info, train, test, train_labels: None, test_labels: None, files, warnings: Vec::new() }
}

fn images(spec: &DataSpec, set: &ImageDataset, seed: u64) -> Result<Dataset> {
    let dir = default_data_dir();
    let load = set.load(&dir, &spec.folder, spec.pixel_scale).map_err(|e| anyhow::anyhow!("data.source: {e}"))?;
    let mut warnings: Vec<String> =
        load.skipped.iter().map(|s| format!("skipped {}: {}", s.path.display(), s.reason)).collect();
    if load.resized > 0 {
        warnings.push(format!("{} image(s) resized to the common size", load.resized));
    }
    let full: ImageSet = load.set;
    if spec.labels && full.labels.is_none() {
        bail!(
            "data.labels = true, but {} has no labels (a folder needs one sub-folder per class); set data.labels = \
             false",
            spec.source
        );
    }
    let (train, test) = full.split(spec.test_fraction, seed).map_err(|e| anyhow::anyhow!("data: {e}"))?;
    let files = match set {
        ImageDataset::Folder(p) => vec![p.clone()],
        other => other.file(&dir).into_iter().collect(),
    };
    let info = DataInfo {
        source: spec.source.clone(),
        event_shape: full.event_shape(),
        label_names: if spec.labels { full.class_names.clone() } else { Vec::new() },
        bounds: None,
        pixel_range: Some(spec.pixel_scale.range()),
        columns: None,
        n_train: train.len(),
        n_test: test.len(),
    };
    let (train_labels, test_labels) =
        if spec.labels { (train.labels_tensor(), test.labels_tensor()) } else { (None, None) };
    Ok(Dataset { info, train: train.images, test: test.images, train_labels, test_labels, files, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_is_split_into_train_and_test_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pts.csv");
        let rows: String = (0..20).map(|i| format!("{i},{}\n", 2 * i)).collect();
        std::fs::write(&p, format!("a,b\n{rows}")).unwrap();
        let spec = DataSpec { source: p.display().to_string(), ..DataSpec::default() };
        let d = load(&spec, 3).unwrap();
        assert_eq!((d.info.n_train, d.info.n_test), (18, 2));
        assert_eq!(d.info.event_shape, [2]);
        assert_eq!(d.info.columns.as_deref().unwrap(), ["a", "b"]);
        let all = Tensor::cat(&[&d.train, &d.test], 0).sum(Kind::Double);
        assert_eq!(f64::try_from(all).unwrap(), (0..20).map(|i| 3.0 * i as f64).sum::<f64>());
        let again = load(&spec, 3).unwrap();
        assert!(again.test.equal(&d.test), "the split is fixed by the seed");
    }

    #[test]
    fn bad_sources_say_what_is_accepted() {
        let spec = DataSpec { source: "nowhere.txt".into(), ..DataSpec::default() };
        let e = load(&spec, 0).unwrap_err().to_string();
        assert!(e.contains("data.source") && e.contains(".csv") && e.contains("8gaussians"), "{e}");
        let spec = DataSpec { source: "8gaussians".into(), labels: true, ..DataSpec::default() };
        assert!(load(&spec, 0).unwrap_err().to_string().contains("data.labels"));
    }
}
