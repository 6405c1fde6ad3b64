//! Logging for ebm-rs: TensorBoard event files, CSV metrics, progress bars, PNG figures and run
//! folders.
//!
//! * [`TensorBoardWriter`] writes TensorBoard event files directly (TFRecord framing around
//!   hand-written `prost` messages, see [`tfrecord`] and [`proto`]): scalars, PNG images,
//!   histograms, markdown text and hparams (HParams tab).
//! * [`MetricsSink`] is what the trainer logs to; [`TensorBoardWriter`], [`CsvSink`],
//!   [`ProgressSink`] implement it and [`MultiSink`] fans out to several.
//! * [`plot`] draws figures for people (sample scatter plots, heat maps, image grids, line plots,
//!   labelled grids of panels) with an embedded font, written atomically.
//! * [`RunDir`] lays out `<root>/<exp>/<run-name>/` and [`write_atomic`] writes files safely.
//!
//! ```no_run
//! use ebm_log::{MetricsSink, MultiSink, CsvSink, ProgressSink, RunDir, TensorBoardWriter};
//! # fn main() -> ebm_log::Result<()> {
//! let run = RunDir::create("experiments/runs".as_ref(), "exp_cd_vs_sm", None)?;
//! run.write_atomic("config.toml", b"lr = 0.01\n")?;
//! let mut tb = TensorBoardWriter::create(run.tensorboard_dir())?;
//! tb.add_text("config", 0, "```toml\nlr = 0.01\n```")?;
//! let mut sink = MultiSink::new(vec![
//!     Box::new(tb),
//!     Box::new(CsvSink::create(&run.metrics_csv_path())?),
//!     Box::new(ProgressSink::new(Some(1000))),
//! ]);
//! for step in 0..1000 {
//!     sink.scalar("train/loss", step, 1.0 / (step + 1) as f64)?;
//! }
//! sink.flush()?;
//! # Ok(())
//! # }
//! ```

pub mod colormap;
mod error;
pub mod errorbars;
mod fsutil;
mod histogram;
pub mod plot;
pub mod proto;
mod rundir;
mod sink;
mod tensorboard;
pub mod tfrecord;

pub use error::{LogError, Result};
pub use fsutil::write_atomic;
pub use histogram::Histogram;
pub use rundir::{check_run_name, timestamp_name, RunDir};
pub use sink::{CsvSink, MetricsSink, MultiSink, ProgressSink};
pub use tensorboard::{
    HParamValue, TensorBoardWriter, HPARAMS_EXPERIMENT_TAG, HPARAMS_SESSION_END_TAG, HPARAMS_SESSION_START_TAG,
};
