//! The ebm-rs experiments as library modules (so tests can call them), one folder each (config / run /
//! report), on the shared run context of [`common`]; `src/bin/` holds thin mains.

pub mod cd_vs_sm;
pub mod common;
pub mod images;
pub mod poe;

pub use common::cli::{CommonArgs, ExperimentConfig, RunSettings};
pub use common::config;
pub use common::device::{self, DeviceArg};
