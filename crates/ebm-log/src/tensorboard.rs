//! A TensorBoard event-file writer: scalars, images, histograms, text and hparams.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use image::RgbImage;
use prost::Message;
use tch::Tensor;

use crate::error::{LogError, Result};
use crate::fsutil::{create_dir_all, encode_png, unix_time};
use crate::histogram::Histogram;
use crate::proto::{self, *};
use crate::tfrecord;

/// Run folders that have a live writer in this process.
static OPEN_RUNS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// How long written records may stay in the user-space buffer before they are handed to the OS
/// (so a running TensorBoard sees fresh data). `flush()` additionally fsyncs.
const AUTO_FLUSH: Duration = Duration::from_secs(2);

/// Tag of the hparams experiment summary.
pub const HPARAMS_EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// Tag of the hparams session-start summary.
pub const HPARAMS_SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// Tag of the hparams session-end summary.
pub const HPARAMS_SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// A hyperparameter value for [`TensorBoardWriter::add_hparams`].
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    /// A number (integers are stored as `f64`, like TensorBoard does).
    Number(f64),
    /// A string (e.g. the method's name).
    Text(String),
    /// A boolean.
    Bool(bool),
}

macro_rules! hparam_from_number {
    ($($t:ty),*) => {$(
        impl From<$t> for HParamValue {
            fn from(v: $t) -> Self {
                HParamValue::Number(v as f64)
            }
        }
    )*};
}
hparam_from_number!(f64, f32, i64, i32, u64, u32, usize);

impl From<bool> for HParamValue {
    fn from(v: bool) -> Self {
        HParamValue::Bool(v)
    }
}
impl From<&str> for HParamValue {
    fn from(v: &str) -> Self {
        HParamValue::Text(v.to_string())
    }
}
impl From<String> for HParamValue {
    fn from(v: String) -> Self {
        HParamValue::Text(v)
    }
}

impl HParamValue {
    fn to_proto(&self) -> ProtoValue {
        ProtoValue {
            kind: Some(match self {
                HParamValue::Number(x) => ProtoValueKind::NumberValue(*x),
                HParamValue::Text(s) => ProtoValueKind::StringValue(s.clone()),
                HParamValue::Bool(b) => ProtoValueKind::BoolValue(*b),
            }),
        }
    }

    fn type_code(&self) -> i32 {
        match self {
            HParamValue::Number(_) => HPARAM_TYPE_FLOAT64,
            HParamValue::Text(_) => HPARAM_TYPE_STRING,
            HParamValue::Bool(_) => HPARAM_TYPE_BOOL,
        }
    }
}

/// Writes one TensorBoard event file `events.out.tfevents.<unix-time>.<host>` in a run folder.
///
/// One writer per run folder: opening a second writer on a folder that already has a live one in
/// this process is an error. Records go through a buffer that is handed to the OS at least every
/// two seconds while logging; [`TensorBoardWriter::flush`] also fsyncs, so after it returns the
/// bytes are on disk. Dropping the writer flushes (errors are ignored then; call `flush` to see
/// them).
///
/// Steps are `u64`; TensorBoard stores `int64`, so steps above `i64::MAX` are rejected.
pub struct TensorBoardWriter {
    run_dir: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    last_flush: Instant,
}

impl std::fmt::Debug for TensorBoardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorBoardWriter").field("path", &self.path).finish()
    }
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String =
        raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

fn to_step(step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| LogError::invalid(format!("step {step} does not fit TensorBoard's int64")))
}

impl TensorBoardWriter {
    /// Creates `run_dir` (and parents) if needed and a new event file in it, whose first record
    /// is an `Event` with `file_version = "brain.Event:2"`.
    ///
    /// If a file of the same name exists (a writer opened in the same second), `.1`, `.2`, ... is
    /// appended; TensorBoard reads every file whose name contains `tfevents`.
    pub fn create(run_dir: &Path) -> Result<Self> {
        create_dir_all(run_dir)?;
        let key = run_dir.canonicalize().map_err(|e| LogError::io("resolve folder", run_dir, e))?;
        {
            let mut guard = OPEN_RUNS.lock().unwrap_or_else(|p| p.into_inner());
            let set = guard.get_or_insert_with(HashSet::new);
            if !set.insert(key.clone()) {
                return Err(LogError::WriterExists(run_dir.to_path_buf()));
            }
        }
        match Self::open_file(run_dir, &key) {
            Ok(w) => Ok(w),
            Err(e) => {
                release(&key);
                Err(e)
            }
        }
    }

    fn open_file(run_dir: &Path, key: &Path) -> Result<Self> {
        let wall = unix_time();
        let base = format!("events.out.tfevents.{:010}.{}", wall as u64, hostname());
        let mut n = 0;
        let (path, file) = loop {
            let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
            let path = run_dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(LogError::io("create event file", &path, e)),
            }
        };
        let mut w = TensorBoardWriter {
            run_dir: key.to_path_buf(),
            path,
            file: BufWriter::with_capacity(1 << 16, file),
            last_flush: Instant::now(),
        };
        w.write_event(Event {
            wall_time: wall,
            step: 0,
            file_version: "brain.Event:2".into(),
            summary: None,
            session_log: None,
        })?;
        w.file.flush().map_err(|e| LogError::io("write", &w.path, e))?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run folder (canonicalised).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn write_event(&mut self, event: Event) -> Result<()> {
        let data = event.encode_to_vec();
        tfrecord::write_record(&mut self.file, &data).map_err(|e| LogError::io("write", &self.path, e))?;
        if self.last_flush.elapsed() >= AUTO_FLUSH {
            self.file.flush().map_err(|e| LogError::io("write", &self.path, e))?;
            self.last_flush = Instant::now();
        }
        Ok(())
    }

    /// Writes one event at `step` holding `values`.
    pub fn write_values(&mut self, step: u64, values: Vec<SummaryValue>) -> Result<()> {
        let step = to_step(step)?;
        self.write_event(Event {
            wall_time: unix_time(),
            step,
            file_version: String::new(),
            summary: Some(Summary { value: values }),
            session_log: None,
        })
    }

    /// Marks that training went back to `step` (a divergence rollback, a resume): writes TensorBoard's
    /// restart marker, an event with `session_log { status: START }`, at step `step + 1`. TensorBoard then
    /// discards the records before the marker whose step is at least the marker's, i.e. everything logged
    /// for steps after `step`, so that the steps logged again are shown once.
    pub fn restart(&mut self, step: u64) -> Result<()> {
        let at = step
            .checked_add(1)
            .ok_or_else(|| LogError::invalid(format!("step {step} does not fit TensorBoard's int64")))?;
        self.write_event(Event {
            wall_time: unix_time(),
            step: to_step(at)?,
            file_version: String::new(),
            summary: None,
            session_log: Some(SessionLog { status: SESSION_START, ..Default::default() }),
        })
    }

    /// A scalar (stored as `f32`, TensorBoard's scalar type; NaN and ±inf are kept).
    pub fn add_scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        self.add_scalars(step, &[(tag, value)])
    }

    /// Several scalars of the same step in one event.
    pub fn add_scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let values = values
            .iter()
            .map(|&(tag, v)| SummaryValue {
                tag: tag.to_string(),
                metadata: None,
                value: Some(SummaryValueKind::SimpleValue(v as f32)),
            })
            .collect();
        self.write_values(step, values)
    }

    /// An RGB image, PNG-encoded.
    pub fn add_image(&mut self, tag: &str, step: u64, image: &RgbImage) -> Result<()> {
        if image.width() == 0 || image.height() == 0 {
            return Err(LogError::invalid(format!("image '{tag}' is empty ({}x{})", image.width(), image.height())));
        }
        let png = encode_png(image)
            .map_err(|msg| LogError::Plot { path: self.path.clone(), msg: format!("image '{tag}': {msg}") })?;
        let value = SummaryValue {
            tag: tag.to_string(),
            metadata: None,
            value: Some(SummaryValueKind::Image(SummaryImage {
                height: image.height() as i32,
                width: image.width() as i32,
                colorspace: 3,
                encoded_image_string: png,
            })),
        };
        self.write_values(step, vec![value])
    }

    /// A histogram of precomputed buckets.
    pub fn add_histogram_buckets(&mut self, tag: &str, step: u64, h: &Histogram) -> Result<()> {
        let value =
            SummaryValue { tag: tag.to_string(), metadata: None, value: Some(SummaryValueKind::Histo(h.to_proto())) };
        self.write_values(step, vec![value])
    }

    /// A histogram of `values` in `bins` equal-width buckets (see [`Histogram`]).
    pub fn add_histogram(&mut self, tag: &str, step: u64, values: &[f64], bins: usize) -> Result<()> {
        let h = Histogram::from_values(values, bins)?;
        self.add_histogram_buckets(tag, step, &h)
    }

    /// A histogram of all elements of a tensor (any shape, kind or device).
    pub fn add_histogram_tensor(&mut self, tag: &str, step: u64, t: &Tensor, bins: usize) -> Result<()> {
        let h = Histogram::from_tensor(t, bins)?;
        self.add_histogram_buckets(tag, step, &h)
    }

    /// Markdown text, shown in the Text tab (e.g. the run's config inside a code fence).
    pub fn add_text(&mut self, tag: &str, step: u64, markdown: &str) -> Result<()> {
        let value = SummaryValue {
            tag: tag.to_string(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData { plugin_name: "text".into(), content: Vec::new() }),
                ..Default::default()
            }),
            value: Some(SummaryValueKind::Tensor(TensorProto {
                dtype: DT_STRING,
                tensor_shape: Some(TensorShapeProto { dim: vec![TensorShapeDim { size: 1, name: String::new() }] }),
                float_val: Vec::new(),
                string_val: vec![markdown.as_bytes().to_vec()],
            })),
        };
        self.write_values(step, vec![value])
    }

    fn hparams_value(tag: &str, data: HParamsData) -> SummaryValue {
        let content = HParamsPluginData { version: 0, data: Some(data) }.encode_to_vec();
        SummaryValue {
            tag: tag.to_string(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData { plugin_name: "hparams".into(), content }),
                ..Default::default()
            }),
            // The hparams plugin ignores the tensor; TensorBoard's own writer stores an empty
            // float tensor of shape [0] here.
            value: Some(SummaryValueKind::Tensor(TensorProto {
                dtype: proto::DT_FLOAT,
                tensor_shape: Some(TensorShapeProto { dim: vec![TensorShapeDim { size: 0, name: String::new() }] }),
                float_val: Vec::new(),
                string_val: Vec::new(),
            })),
        }
    }

    /// Records this run's hyperparameters and final metrics for the HParams tab, the way
    /// `torch.utils.tensorboard.SummaryWriter.add_hparams` does, but in this run's own folder:
    /// an experiment summary (the hparam names and metric tags), a session-start summary (the
    /// values), a session-end summary (status success), all at step 0, then each metric as a
    /// scalar at `step`. Metric tags may be the same tags as the training scalars (the HParams
    /// tab shows the last value of each).
    pub fn add_hparams(&mut self, hparams: &[(&str, HParamValue)], metrics: &[(&str, f64)], step: u64) -> Result<()> {
        let mut seen = HashSet::new();
        for (name, _) in hparams {
            if name.is_empty() || !seen.insert(*name) {
                return Err(LogError::invalid(format!("hparam names must be non-empty and distinct (got '{name}')")));
            }
        }
        let now = unix_time();
        let experiment = Experiment {
            description: String::new(),
            time_created_secs: now,
            hparam_infos: hparams
                .iter()
                .map(|(name, v)| HParamInfo { name: name.to_string(), r#type: v.type_code(), ..Default::default() })
                .collect(),
            metric_infos: metrics
                .iter()
                .map(|(tag, _)| MetricInfo {
                    name: Some(MetricName { group: String::new(), tag: tag.to_string() }),
                    ..Default::default()
                })
                .collect(),
        };
        let start = SessionStartInfo {
            hparams: hparams.iter().map(|(k, v)| (k.to_string(), v.to_proto())).collect::<HashMap<_, _>>(),
            group_name: String::new(),
            start_time_secs: now,
        };
        let end = SessionEndInfo { status: STATUS_SUCCESS, end_time_secs: now };
        self.write_values(0, vec![Self::hparams_value(HPARAMS_EXPERIMENT_TAG, HParamsData::Experiment(experiment))])?;
        self.write_values(
            0,
            vec![Self::hparams_value(HPARAMS_SESSION_START_TAG, HParamsData::SessionStartInfo(start))],
        )?;
        self.write_values(0, vec![Self::hparams_value(HPARAMS_SESSION_END_TAG, HParamsData::SessionEndInfo(end))])?;
        if !metrics.is_empty() {
            self.add_scalars(step, metrics)?;
        }
        Ok(())
    }

    /// Writes buffered records and fsyncs the file: afterwards the bytes are on disk.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| LogError::io("write", &self.path, e))?;
        self.file.get_ref().sync_data().map_err(|e| LogError::io("fsync", &self.path, e))?;
        self.last_flush = Instant::now();
        Ok(())
    }
}

fn release(key: &Path) {
    let mut guard = OPEN_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(set) = guard.as_mut() {
        set.remove(key);
    }
}

impl Drop for TensorBoardWriter {
    fn drop(&mut self) {
        let _ = self.flush();
        release(&self.run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tfrecord::read_event_file;

    fn values(events: &[Event]) -> Vec<(i64, SummaryValue)> {
        events
            .iter()
            .flat_map(|e| e.summary.iter().flat_map(move |s| s.value.iter().map(move |v| (e.step, v.clone()))))
            .collect()
    }

    #[test]
    fn writes_parsable_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TensorBoardWriter::create(dir.path()).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        w.add_scalar("loss", 3, 0.25).unwrap();
        w.add_text("config", 0, "lr = 0.1").unwrap();
        w.add_histogram("w", 5, &[0.0, 1.0, 2.0, 3.0, 4.0], 4).unwrap();
        w.add_image("img", 1, &RgbImage::new(3, 2)).unwrap();
        w.flush().unwrap();
        let events = read_event_file(w.path()).unwrap();
        assert_eq!(events[0].file_version, "brain.Event:2");
        let vals = values(&events);
        assert_eq!(vals.len(), 4);
        assert_eq!(vals[0].0, 3);
        assert_eq!(vals[0].1.value, Some(SummaryValueKind::SimpleValue(0.25)));
        match &vals[1].1.value {
            Some(SummaryValueKind::Tensor(t)) => {
                assert_eq!(t.dtype, DT_STRING);
                assert_eq!(t.string_val, vec![b"lr = 0.1".to_vec()]);
            }
            other => panic!("expected a tensor, got {other:?}"),
        }
        match &vals[2].1.value {
            Some(SummaryValueKind::Histo(h)) => assert_eq!(h.bucket, vec![1.0, 1.0, 1.0, 2.0]),
            other => panic!("expected a histogram, got {other:?}"),
        }
        match &vals[3].1.value {
            Some(SummaryValueKind::Image(i)) => {
                assert_eq!((i.width, i.height, i.colorspace), (3, 2, 3));
                assert_eq!(&i.encoded_image_string[1..4], b"PNG");
            }
            other => panic!("expected an image, got {other:?}"),
        }
    }

    #[test]
    fn restart_writes_the_session_start_marker_one_step_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TensorBoardWriter::create(dir.path()).unwrap();
        w.add_scalar("loss", 5, 1.0).unwrap();
        w.restart(3).unwrap();
        w.add_scalar("loss", 4, 2.0).unwrap();
        assert!(w.restart(u64::MAX).is_err());
        assert!(w.restart(i64::MAX as u64).is_err());
        w.flush().unwrap();
        let events = read_event_file(w.path()).unwrap();
        let got: Vec<(i64, Option<SessionLog>, bool)> =
            events[1..].iter().map(|e| (e.step, e.session_log.clone(), e.summary.is_some())).collect();
        let start = SessionLog { status: SESSION_START, checkpoint_path: String::new(), msg: String::new() };
        assert_eq!(got, vec![(5, None, true), (4, Some(start), false), (4, None, true)]);
    }

    #[test]
    fn one_writer_per_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let w = TensorBoardWriter::create(dir.path()).unwrap();
        let err = TensorBoardWriter::create(dir.path()).unwrap_err();
        assert!(matches!(err, LogError::WriterExists(_)), "{err}");
        drop(w);
        let w2 = TensorBoardWriter::create(dir.path()).unwrap();
        assert_eq!(w2.run_dir(), dir.path().canonicalize().unwrap());
    }

    #[test]
    fn unwritable_folder_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("regular-file");
        std::fs::write(&file, b"x").unwrap();
        let run = file.join("run");
        let err = TensorBoardWriter::create(&run).unwrap_err().to_string();
        assert!(err.contains(&run.display().to_string()), "{err}");
    }

    #[test]
    fn hparams_encode_the_plugin_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TensorBoardWriter::create(dir.path()).unwrap();
        w.add_hparams(&[("method", "cd".into()), ("lr", 0.01.into())], &[("nll", 1.5)], 9).unwrap();
        assert!(w.add_hparams(&[("a", 1.0.into()), ("a", 2.0.into())], &[], 0).is_err());
        w.flush().unwrap();
        let vals = values(&read_event_file(w.path()).unwrap());
        let tags: Vec<_> = vals.iter().map(|(_, v)| v.tag.as_str()).collect();
        assert_eq!(tags, [HPARAMS_EXPERIMENT_TAG, HPARAMS_SESSION_START_TAG, HPARAMS_SESSION_END_TAG, "nll"]);
        let content = &vals[1].1.metadata.as_ref().unwrap().plugin_data.as_ref().unwrap().content;
        let data = HParamsPluginData::decode(content.as_slice()).unwrap();
        match data.data {
            Some(HParamsData::SessionStartInfo(s)) => {
                assert_eq!(s.hparams["method"].kind, Some(ProtoValueKind::StringValue("cd".into())));
                assert_eq!(s.hparams["lr"].kind, Some(ProtoValueKind::NumberValue(0.01)));
            }
            other => panic!("expected session start info, got {other:?}"),
        }
        assert_eq!(vals[3].0, 9);
    }
}
