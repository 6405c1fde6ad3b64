//! # ebm-core
//!
//! Energy-based models on libtorch (through `tch`).
//!
//! Sign convention: a model is `f(x)`, the unnormalised log-density, `p(x) = exp(f(x)) / Z`,
//! and the energy is `E(x) = -f(x)`.

pub mod autograd;
pub mod data;
pub mod energy;
pub mod error;
pub mod eval;
pub mod objective;
pub mod optim;
pub mod sampler;
pub mod train;

pub use energy::EnergyModel;
pub use error::{EbmError, Result};
