//! Shared helpers for the ebm-rs experiment binaries: device and seed selection, configs, and the
//! experiments themselves as library modules (so tests can call them).

pub mod cd_vs_sm;
pub mod cli;
pub mod config;
pub mod device;
pub mod images;
pub mod poe;

pub use cli::{CommonArgs, ExperimentConfig, RunSettings};
pub use device::DeviceArg;
