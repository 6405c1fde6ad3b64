//! # ebm-core
//!
//! Energy-based models on libtorch (through `tch`).
//!
//! Sign convention: a model is `f(x)`, the unnormalised log-density, `p(x) = exp(f(x)) / Z`,
//! and the energy is `E(x) = -f(x)`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ebm_core::energy::{Mlp, MlpConfig};
//! use ebm_core::objective::{ContrastiveConfig, ObjectiveConfig};
//! use ebm_core::sampler::{Init, Langevin, LangevinConfig, Sampler};
//! use ebm_core::train::{MemorySink, TensorData, TrainConfig, Trainer};
//!
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let model = Mlp::new(&vs.root(), &MlpConfig::default())?; // f: [B, 2] -> [B]
//! let objective = ObjectiveConfig::Contrastive(ContrastiveConfig::default()) // replay buffer, k = 20
//!     .build(&model, tch::Device::Cpu)?;
//! let data = ebm_core::data::Toy2d::EightGaussians.sample(10_000, 0);
//! let mut trainer = Trainer::new(TrainConfig::default(), &vs, &model, objective, 0)?;
//! trainer.run(&mut TensorData::new(data)?, &mut MemorySink::default(), None)?;
//! let x0 = Init::Uniform { low: -3.0, high: 3.0 }.sample(1000, &[2], tch::Device::Cpu);
//! let samples = Langevin::new(LangevinConfig::seed_form(1e-3))?.run(&model, &x0, 500)?.x;
//! # let _ = samples;
//! # Ok(())
//! # }
//! ```

pub mod ais;
pub mod autograd;
pub mod batch;
pub mod check;
pub mod classifier;
pub mod data;
pub mod energy;
pub mod error;
pub mod eval;
pub mod expr;
pub mod objective;
pub mod optim;
pub mod sampler;
pub mod threads;
pub mod train;

pub use batch::Batch;
pub use energy::EnergyModel;
pub use error::{EbmError, Result};
pub use expr::Expression;
pub use objective::{LossOutput, Objective, ObjectiveConfig};
pub use sampler::{Sampler, SamplerConfig};
pub use train::{DataSource, MetricsSink, TrainConfig, Trainer};
