//! What every experiment shares: command-line flags ([`cli`]), configs ([`config`]), the device
//! ([`device`]), and the run context ([`run`]): run folder, named seed streams, metrics sinks, Ctrl-C /
//! SIGTERM handling and resume, so that every experiment checkpoints on a signal and continues with
//! `--resume <run folder>`.

pub mod cli;
pub mod config;
pub mod device;
pub mod fingerprint;
pub mod lock;
pub mod run;
pub mod settings;

pub use fingerprint::{ConfigChange, DataFileHash, Fingerprint};
pub use run::{stop_on_signals, Interrupted, Outcome, RunContext, RunOptions, StartOptions, SubRun};
pub use settings::CdSettings;
