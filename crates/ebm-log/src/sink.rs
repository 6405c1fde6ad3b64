//! Metrics sinks used by the trainer: TensorBoard, CSV, progress bar, and a fan-out.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{LogError, Result};
use crate::fsutil::write_atomic;
use crate::histogram::Histogram;
use crate::tensorboard::TensorBoardWriter;
pub use ebm_core::train::{MetricsSink, SinkError, SinkResult};

/// Buckets of the histograms sent to TensorBoard through [`MetricsSink::histogram`].
pub const HISTOGRAM_BINS: usize = 30;

impl MetricsSink for TensorBoardWriter {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
        Ok(self.add_scalar(tag, step, value)?)
    }
    fn flush(&mut self) -> SinkResult {
        Ok(TensorBoardWriter::flush(self)?)
    }
    fn restart(&mut self, step: u64) -> SinkResult {
        Ok(TensorBoardWriter::restart(self, step)?)
    }
    fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> SinkResult {
        Ok(self.add_scalars(step, values)?)
    }
    fn image(&mut self, tag: &str, step: u64, image: &RgbImage) -> SinkResult {
        Ok(self.add_image(tag, step, image)?)
    }
    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> SinkResult {
        Ok(self.add_text(tag, step, markdown)?)
    }
    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> SinkResult {
        let h = Histogram::from_values(values, HISTOGRAM_BINS)?;
        Ok(self.add_histogram_buckets(tag, step, &h)?)
    }
}

impl From<LogError> for SinkError {
    fn from(e: LogError) -> Self {
        SinkError::new(e)
    }
}

/// Sends everything to several sinks. Every sink is called even when an earlier one fails; the
/// first error is returned.
#[derive(Default)]
pub struct MultiSink {
    sinks: Vec<Box<dyn MetricsSink>>,
}

impl MultiSink {
    /// Combines `sinks`.
    pub fn new(sinks: Vec<Box<dyn MetricsSink>>) -> Self {
        MultiSink { sinks }
    }

    /// Adds a sink.
    pub fn push(&mut self, sink: Box<dyn MetricsSink>) {
        self.sinks.push(sink);
    }

    /// Number of sinks.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether there is no sink.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn MetricsSink) -> SinkResult) -> SinkResult {
        let mut first = None;
        for s in &mut self.sinks {
            if let Err(e) = f(s.as_mut()) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl MetricsSink for MultiSink {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
        self.each(|s| s.scalar(tag, step, value))
    }
    fn flush(&mut self) -> SinkResult {
        self.each(|s| s.flush())
    }
    fn restart(&mut self, step: u64) -> SinkResult {
        self.each(|s| s.restart(step))
    }
    fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> SinkResult {
        self.each(|s| s.scalars(step, values))
    }
    fn image(&mut self, tag: &str, step: u64, image: &RgbImage) -> SinkResult {
        self.each(|s| s.image(tag, step, image))
    }
    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> SinkResult {
        self.each(|s| s.text(tag, step, markdown))
    }
    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> SinkResult {
        self.each(|s| s.histogram(tag, step, values))
    }
}

/// Formats a metric value for CSV: the shortest text that parses back to the same `f64`
/// (`0.1`, `1.0`, `1e-7`, `NaN`, `inf`).
fn csv_number(v: f64) -> String {
    format!("{v:?}")
}

/// Writes metrics as CSV, one row per step: `step,<tag1>,<tag2>,...`.
///
/// * Values arriving for one step are collected; the row is written when a value for a different
///   step arrives (normally the next one), or on [`MetricsSink::flush`] / drop. A tag logged twice
///   in one step keeps its last value. Missing values are empty cells.
/// * The header is the tags of the first complete step, in order of first appearance, unless
///   columns were given up front with [`CsvSink::with_columns`].
/// * A tag first seen later adds a column at the end: the file is rewritten (atomically) with
///   the wider header and empty cells for the earlier rows, so logging an eval metric only every
///   k steps just works. This is rare (once per new tag) but costs a re-read of the file.
/// * `flush` writes the pending row, so values for the same step logged after a flush start a
///   second row with the same step number.
pub struct CsvSink {
    path: PathBuf,
    columns: Vec<String>,
    header_written: bool,
    out: Option<BufWriter<File>>,
    pending_step: Option<u64>,
    pending: Vec<(String, f64)>,
}

impl std::fmt::Debug for CsvSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSink").field("path", &self.path).field("columns", &self.columns).finish()
    }
}

fn csv_line(fields: &[String]) -> Result<Vec<u8>, String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields).map_err(|e| e.to_string())?;
    w.into_inner().map_err(|e| e.to_string())
}

/// Rewrites the CSV file `path` (whose bytes are `old`) atomically, keeping its header and the rows whose
/// step is at most `through_step`. Returns the header, or `None` (file untouched) when the file does not
/// start with a `step` column. `doing` names the operation in errors.
fn cut_rows_after(path: &Path, old: &[u8], through_step: u64, doing: &str) -> Result<Option<Vec<String>>> {
    let bad = |e: &dyn std::fmt::Display| LogError::invalid(format!("{}: {doing}: {e}", path.display()));
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(old);
    let header: Vec<String> = reader.headers().map_err(|e| bad(&e))?.iter().map(str::to_string).collect();
    if header.first().map(String::as_str) != Some("step") {
        return Ok(None);
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).map_err(|e| bad(&e))?;
    for rec in reader.records() {
        let rec = rec.map_err(|e| bad(&e))?;
        let step: u64 = rec.get(0).unwrap_or("").trim().parse().map_err(|_| bad(&format!("bad row {rec:?}")))?;
        if step <= through_step {
            w.write_record(&rec).map_err(|e| bad(&e))?;
        }
    }
    let kept = w.into_inner().map_err(|e| bad(&e))?;
    write_atomic(path, &kept)?;
    Ok(Some(header))
}

impl CsvSink {
    /// Creates (or truncates) the CSV file at `path`; the header comes from the first step.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| LogError::io("create", path, e))?;
        Ok(CsvSink {
            path: path.to_path_buf(),
            columns: Vec::new(),
            header_written: false,
            out: Some(BufWriter::new(file)),
            pending_step: None,
            pending: Vec::new(),
        })
    }

    /// Continues a CSV file written by an earlier, interrupted run: keeps its header and the rows whose
    /// step is at most `through_step` (rows logged after the checkpoint being resumed are dropped), then
    /// appends. A missing file is created as by [`CsvSink::create`].
    pub fn resume(path: &Path, through_step: u64) -> Result<Self> {
        let old = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::create(path),
            Err(e) => return Err(LogError::io("read", path, e)),
        };
        let Some(header) = cut_rows_after(path, &old, through_step, "cannot resume")? else {
            return Self::create(path);
        };
        let file = OpenOptions::new().append(true).open(path).map_err(|e| LogError::io("open", path, e))?;
        Ok(CsvSink {
            path: path.to_path_buf(),
            columns: header[1..].to_vec(),
            header_written: true,
            out: Some(BufWriter::new(file)),
            pending_step: None,
            pending: Vec::new(),
        })
    }

    /// Creates the CSV file with a fixed header `step,<columns...>` written at once.
    pub fn with_columns(path: &Path, columns: &[&str]) -> Result<Self> {
        let mut sink = Self::create(path)?;
        for c in columns {
            if !sink.columns.iter().any(|x| x == c) {
                sink.columns.push(c.to_string());
            }
        }
        sink.write_header()?;
        Ok(sink)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metric columns so far (without the leading `step`).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    fn csv_err(&self, msg: impl std::fmt::Display) -> LogError {
        LogError::Csv { path: self.path.clone(), msg: msg.to_string() }
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().ok_or_else(|| LogError::Csv {
            path: self.path.clone(),
            msg: "file is not open (an earlier rewrite failed)".into(),
        })?;
        out.write_all(bytes).map_err(|e| LogError::io("write", &self.path, e))
    }

    fn header_fields(&self) -> Vec<String> {
        std::iter::once("step".to_string()).chain(self.columns.iter().cloned()).collect()
    }

    fn write_header(&mut self) -> Result<()> {
        let line = csv_line(&self.header_fields()).map_err(|e| self.csv_err(e))?;
        self.write_bytes(&line)?;
        self.header_written = true;
        Ok(())
    }

    /// Rewrites the file with the current (wider) header, padding earlier rows.
    fn rewrite_with_new_columns(&mut self) -> Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(|e| LogError::io("write", &self.path, e))?;
        }
        let old = std::fs::read(&self.path).map_err(|e| LogError::io("read", &self.path, e))?;
        let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(old.as_slice());
        let width = self.columns.len() + 1;
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(self.header_fields()).map_err(|e| self.csv_err(e))?;
        for rec in reader.records() {
            let rec = rec.map_err(|e| self.csv_err(e))?;
            let mut fields: Vec<&str> = rec.iter().collect();
            fields.resize(width, "");
            w.write_record(&fields).map_err(|e| self.csv_err(e))?;
        }
        let bytes = w.into_inner().map_err(|e| self.csv_err(e))?;
        write_atomic(&self.path, &bytes)?;
        let file = OpenOptions::new().append(true).open(&self.path).map_err(|e| LogError::io("open", &self.path, e))?;
        self.out = Some(BufWriter::new(file));
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        let Some(step) = self.pending_step.take() else {
            return Ok(());
        };
        let pending = std::mem::take(&mut self.pending);
        let before = self.columns.len();
        for (tag, _) in &pending {
            if !self.columns.contains(tag) {
                self.columns.push(tag.clone());
            }
        }
        if !self.header_written {
            self.write_header()?;
        } else if self.columns.len() > before {
            self.rewrite_with_new_columns()?;
        }
        let mut fields = vec![String::new(); self.columns.len() + 1];
        fields[0] = step.to_string();
        for (tag, v) in &pending {
            let i = self.columns.iter().position(|c| c == tag).expect("added above");
            fields[i + 1] = csv_number(*v);
        }
        let line = csv_line(&fields).map_err(|e| self.csv_err(e))?;
        self.write_bytes(&line)
    }
}

impl MetricsSink for CsvSink {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
        if self.pending_step.is_some_and(|s| s != step) {
            self.write_pending()?;
        }
        self.pending_step = Some(step);
        match self.pending.iter_mut().find(|(t, _)| t == tag) {
            Some(slot) => slot.1 = value,
            None => self.pending.push((tag.to_string(), value)),
        }
        Ok(())
    }

    fn flush(&mut self) -> SinkResult {
        self.write_pending()?;
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|e| LogError::io("write", &self.path, e))?;
            out.get_ref().sync_data().map_err(|e| LogError::io("fsync", &self.path, e))?;
        }
        Ok(())
    }

    /// Cuts the rows with a step after `step` from the file (and a pending row for a later step), so
    /// that the steps logged again after a rollback appear once, in order. The header keeps its columns.
    fn restart(&mut self, step: u64) -> SinkResult {
        if self.pending_step.is_some_and(|p| p > step) {
            self.pending_step = None;
            self.pending.clear();
        }
        self.write_pending()?;
        if !self.header_written {
            return Ok(());
        }
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(|e| LogError::io("write", &self.path, e))?;
        }
        let old = std::fs::read(&self.path).map_err(|e| LogError::io("read", &self.path, e))?;
        cut_rows_after(&self.path, &old, step, "cannot cut rows after a rollback")?;
        let file = OpenOptions::new().append(true).open(&self.path).map_err(|e| LogError::io("open", &self.path, e))?;
        self.out = Some(BufWriter::new(file));
        Ok(())
    }
}

impl Drop for CsvSink {
    fn drop(&mut self) {
        let _ = self.write_pending();
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }
}

/// Formats a metric value for a progress message: 4 decimals in `[1e-3, 1e4)`, else scientific.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e4).contains(&a) {
        format!("{v:.4}")
    } else if v.is_finite() {
        format!("{v:.3e}")
    } else {
        format!("{v}")
    }
}

/// A terminal progress bar (indicatif) whose message shows the latest value of every tag, e.g.
/// `loss=0.1234 lr=1.000e-4`.
///
/// The bar's position is the latest step. When the output is not a terminal indicatif draws
/// nothing; [`ProgressSink::with_print_every`] then prints a plain line every `n` steps instead
/// (handy in CI logs).
pub struct ProgressSink {
    bar: ProgressBar,
    latest: Vec<(String, f64)>,
    print_every: Option<u64>,
    last_printed: Option<u64>,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressSink").field("latest", &self.latest).finish()
    }
}

impl ProgressSink {
    /// A bar drawn on stderr; `total_steps` gives a bar with ETA, `None` a spinner.
    pub fn new(total_steps: Option<u64>) -> Self {
        Self::with_target(total_steps, ProgressDrawTarget::stderr())
    }

    /// A bar drawn on stdout.
    pub fn stdout(total_steps: Option<u64>) -> Self {
        Self::with_target(total_steps, ProgressDrawTarget::stdout())
    }

    /// A bar that draws nothing (tests, quiet runs); the message is still kept.
    pub fn hidden(total_steps: Option<u64>) -> Self {
        Self::with_target(total_steps, ProgressDrawTarget::hidden())
    }

    fn with_target(total_steps: Option<u64>, target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(total_steps, target);
        let template = if total_steps.is_some() {
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta}) {msg}"
        } else {
            "{spinner} [{elapsed_precise}] step {pos} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Self::with_bar(bar)
    }

    /// Wraps an existing bar (its style and target are kept).
    pub fn with_bar(bar: ProgressBar) -> Self {
        ProgressSink { bar, latest: Vec::new(), print_every: None, last_printed: None }
    }

    /// Also prints `step N: <message>` (after the bar's prefix, when it has one) to stdout every `n` steps
    /// when the bar is hidden (output is not a terminal). `n = 0` turns it off.
    pub fn with_print_every(mut self, n: u64) -> Self {
        self.print_every = (n > 0).then_some(n);
        self
    }

    /// The bar.
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// The current message, e.g. `loss=0.1234 acc=0.9000`.
    pub fn message(&self) -> String {
        self.latest.iter().map(|(t, v)| format!("{t}={}", short_number(*v))).collect::<Vec<_>>().join(" ")
    }

    /// Finishes the bar, leaving it on screen.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

impl MetricsSink for ProgressSink {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
        match self.latest.iter_mut().find(|(t, _)| t == tag) {
            Some(slot) => slot.1 = value,
            None => self.latest.push((tag.to_string(), value)),
        }
        self.bar.set_position(step);
        let msg = self.message();
        if let Some(n) = self.print_every {
            if self.bar.is_hidden() && step.checked_rem(n) == Some(0) && self.last_printed != Some(step) {
                self.last_printed = Some(step);
                let line = match self.bar.prefix().trim() {
                    "" => format!("step {step}: {msg}\n"),
                    prefix => format!("{prefix}: step {step}: {msg}\n"),
                };
                // a closed stdout (the reader of a pipe went away) must not stop training: no `println!`
                let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), line.as_bytes());
            }
        }
        self.bar.set_message(msg);
        Ok(())
    }

    fn flush(&mut self) -> SinkResult {
        self.bar.tick();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn csv_rows_per_step_and_header_from_first_step() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        let mut s = CsvSink::create(&p).unwrap();
        s.scalar("loss", 0, 1.5).unwrap();
        s.scalar("lr", 0, 0.1).unwrap();
        s.scalar("loss", 1, 0.75).unwrap();
        s.scalar("lr", 1, 1e-7).unwrap();
        s.scalar("loss", 2, f64::NAN).unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "step,loss,lr\n0,1.5,0.1\n1,0.75,1e-7\n2,NaN,\n");
        assert_eq!(s.columns(), ["loss", "lr"]);
    }

    #[test]
    fn csv_new_tag_later_widens_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        {
            let mut s = CsvSink::create(&p).unwrap();
            s.scalar("loss", 0, 2.0).unwrap();
            s.scalar("loss", 1, 1.0).unwrap();
            s.scalar("eval,nll", 1, 3.0).unwrap();
            s.scalar("loss", 1, 0.5).unwrap(); // last value of a step wins
            s.scalar("loss", 2, 0.25).unwrap();
        } // drop writes the pending row
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "step,loss,\"eval,nll\"\n0,2.0,\n1,0.5,3.0\n2,0.25,\n");
    }

    #[test]
    fn csv_resume_drops_rows_after_the_checkpoint_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        let mut s = CsvSink::create(&p).unwrap();
        for step in 0..4 {
            s.scalar("loss", step, step as f64).unwrap();
            s.scalar("eval,nll", step, 1.0).unwrap();
        }
        s.flush().unwrap();
        drop(s);
        let mut s = CsvSink::resume(&p, 1).unwrap();
        s.scalar("loss", 2, 20.0).unwrap();
        s.scalar("eval,nll", 2, 2.0).unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "step,loss,\"eval,nll\"\n0,0.0,1.0\n1,1.0,1.0\n2,20.0,2.0\n");
        // a missing file starts afresh
        let q = dir.path().join("new.csv");
        let mut s = CsvSink::resume(&q, 5).unwrap();
        s.scalar("a", 6, 1.0).unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "step,a\n6,1.0\n");
    }

    #[test]
    fn csv_restart_cuts_the_rows_after_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        let mut s = CsvSink::create(&p).unwrap();
        for step in 1..=5 {
            s.scalar("loss", step, step as f64).unwrap();
        }
        // rows 1..=4 are written, row 5 is pending: both kinds after step 3 go
        s.restart(3).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "step,loss\n1,1.0\n2,2.0\n3,3.0\n");
        s.scalar("loss", 4, 40.0).unwrap();
        s.scalar("eval", 4, 0.5).unwrap();
        // a pending row at the restart step itself is kept
        s.restart(4).unwrap();
        s.scalar("loss", 5, 50.0).unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "step,loss,eval\n1,1.0,\n2,2.0,\n3,3.0,\n4,40.0,0.5\n5,50.0,\n"
        );
        // before anything was written: the pending row of a later step is dropped
        let q = dir.path().join("early.csv");
        let mut s = CsvSink::create(&q).unwrap();
        s.scalar("loss", 2, 2.0).unwrap();
        s.restart(1).unwrap();
        s.scalar("loss", 2, 20.0).unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "step,loss\n2,20.0\n");
    }

    /// An objective whose loss is NaN at one call.
    struct NanAt {
        calls: usize,
        at: usize,
    }

    impl ebm_core::Objective for NanAt {
        fn loss(
            &mut self,
            m: &dyn ebm_core::EnergyModel,
            batch: &ebm_core::Batch,
        ) -> ebm_core::Result<ebm_core::LossOutput> {
            self.calls += 1;
            let mut loss = m.f(&batch.x).mean(tch::Kind::Float);
            if self.calls == self.at {
                loss *= f64::NAN;
            }
            Ok(ebm_core::LossOutput { loss, metrics: vec![] })
        }
        fn name(&self) -> String {
            "nan_at".into()
        }
    }

    #[test]
    fn a_rollback_leaves_each_step_once_in_the_csv_and_a_restart_marker_in_tensorboard() {
        use ebm_core::energy::{Mlp, MlpConfig};
        use ebm_core::train::{DivergencePolicy, TensorData, TrainConfig, Trainer};
        use tch::{nn, Device, Kind, Tensor};

        let dir = tempfile::tempdir().unwrap();
        let csv_path = dir.path().join("metrics.csv");
        let tb = TensorBoardWriter::create(dir.path()).unwrap();
        let tb_path = tb.path().to_path_buf();
        let mut sink = MultiSink::new(vec![Box::new(tb), Box::new(CsvSink::create(&csv_path).unwrap())]);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Mlp::new(&vs.root(), &MlpConfig::default()).unwrap();
        let cfg = TrainConfig {
            iters: 12,
            batch_size: 16,
            log_every: 1,
            snapshot_every: 4,
            on_divergence: DivergencePolicy::Rollback { max_retries: 1, lr_factor: 0.5 },
            ..Default::default()
        };
        // step 10 diverges; the snapshot of step 8 is the last good one
        let mut t = Trainer::new(cfg, &vs, &m, Box::new(NanAt { calls: 0, at: 10 }), 0).unwrap();
        let mut data = TensorData::new(Tensor::randn([64, 2], (Kind::Float, Device::Cpu))).unwrap();
        let out = t.run(&mut data, &mut sink, None).unwrap();
        assert_eq!((out.rollbacks, out.steps), (1, 12));
        drop(sink);
        let text = std::fs::read_to_string(&csv_path).unwrap();
        let steps: Vec<u64> = text.lines().skip(1).map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
        assert_eq!(steps, (1..=12).collect::<Vec<u64>>(), "{text}");
        // TensorBoard: steps 1..=9, the START marker at step 9 (drops steps >= 9), then steps 9..=12
        let events = crate::tfrecord::read_event_file(&tb_path).unwrap();
        let seq: Vec<(i64, bool)> = events[1..].iter().map(|e| (e.step, e.session_log.is_some())).collect();
        let at = seq.iter().position(|&(_, marker)| marker).expect("a restart marker");
        assert_eq!(seq[at].0, 9);
        assert_eq!(events[1 + at].session_log.as_ref().unwrap().status, crate::proto::SESSION_START);
        assert_eq!(seq.iter().filter(|&&(_, marker)| marker).count(), 1);
        assert_eq!(seq[..at].iter().map(|&(s, _)| s).max(), Some(9));
        assert_eq!(seq[at + 1].0, 9);
        // what TensorBoard keeps: before the marker, the steps below it; then everything after it
        let mut kept: Vec<i64> = seq[..at].iter().map(|&(s, _)| s).filter(|&s| s < seq[at].0).collect();
        kept.extend(seq[at + 1..].iter().map(|&(s, _)| s));
        kept.dedup();
        assert_eq!(kept, (1..=12).collect::<Vec<i64>>());
    }

    #[test]
    fn csv_with_fixed_columns_writes_header_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        let mut s = CsvSink::with_columns(&p, &["a", "b"]).unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "step,a,b\n");
        s.scalar("b", 5, 2.0).unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "step,a,b\n5,,2.0\n");
    }

    #[test]
    fn csv_in_unwritable_folder_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let p = file.join("metrics.csv");
        let err = CsvSink::create(&p).unwrap_err().to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
    }

    #[test]
    fn progress_message_shows_latest_values() {
        let mut s = ProgressSink::hidden(Some(100));
        s.scalar("loss", 3, 0.123456).unwrap();
        s.scalar("lr", 3, 1e-4).unwrap();
        s.scalar("loss", 4, 0.5).unwrap();
        assert_eq!(s.message(), "loss=0.5000 lr=1.000e-4");
        assert_eq!(s.bar().position(), 4);
        assert_eq!(s.bar().message(), "loss=0.5000 lr=1.000e-4");
    }

    struct Recorder(Rc<RefCell<Vec<String>>>, bool);
    impl MetricsSink for Recorder {
        fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
            self.0.borrow_mut().push(format!("{tag}@{step}={value}"));
            if self.1 {
                Err(LogError::invalid("boom").into())
            } else {
                Ok(())
            }
        }
        fn flush(&mut self) -> SinkResult {
            self.0.borrow_mut().push("flush".into());
            Ok(())
        }
    }

    #[test]
    fn multi_sink_calls_every_sink_and_returns_first_error() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut m = MultiSink::new(vec![Box::new(Recorder(log.clone(), true)), Box::new(Recorder(log.clone(), false))]);
        let err = m.scalar("x", 1, 2.0).unwrap_err();
        assert!(err.to_string().contains("boom"));
        m.flush().unwrap();
        m.text("t", 0, "ignored by default").unwrap();
        assert_eq!(*log.borrow(), ["x@1=2", "x@1=2", "flush", "flush"]);
        assert_eq!(m.len(), 2);
    }
}
