//! # ebm-cli
//!
//! The `ebm` command line over the ebm-rs library: `train` a model described by a config file on a built-in
//! density, a CSV/NPY table or images; `sample`, `eval`, `score` and `compose` its run folder; `sweep` a grid
//! of configs over seeds locally or on Slurm and `report` the results. Every objective, sampler and model is
//! the library's own config type, so the command line has no list of methods of its own.

pub mod commands;
pub mod data;
pub mod evaluate;
pub mod model;
pub mod report;
pub mod report_files;
pub mod sampling;
pub mod spec;
pub mod sweep;
pub mod train;
