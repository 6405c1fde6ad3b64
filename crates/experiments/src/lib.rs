//! Shared helpers for the ebm-rs experiment binaries: device and seed selection, run folders, configs.

pub mod device;

pub use device::{CommonArgs, DeviceArg};
