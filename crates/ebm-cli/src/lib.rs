//! The `ebm` command line as a library: config specs, data, models, sampling, sweeps and reports.

pub mod data;
pub mod model;
pub mod report;
pub mod sampling;
pub mod spec;
pub mod sweep;
