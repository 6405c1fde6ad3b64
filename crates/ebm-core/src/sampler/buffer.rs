//! The IGEBM replay buffer: chains start from stored past samples, and a fraction of them (5% by default)
//! restart from noise; after sampling, the new states are written back.

use super::Init;
use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Configuration of a [`ReplayBuffer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// Number of stored states.
    pub capacity: usize,
    /// Probability that a drawn chain restarts from `init` instead of the buffer.
    pub restart_prob: f64,
    /// The restart (and initial fill) distribution.
    pub init: Init,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig { capacity: 10_000, restart_prob: 0.05, init: Init::default() }
    }
}

impl BufferConfig {
    /// Checks capacity, probability and init.
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(invalid("buffer.capacity", "must be ≥ 1, got 0"));
        }
        if !(0.0..=1.0).contains(&self.restart_prob) {
            return Err(invalid("buffer.restart_prob", format!("must be in [0, 1], got {}", self.restart_prob)));
        }
        self.init.validate()
    }
}

/// A batch drawn from the buffer: the chain starts and the buffer slots they came from.
#[derive(Debug)]
pub struct BufferBatch {
    /// Chain starts, `[B, *event]`.
    pub x: Tensor,
    /// Buffer slots, `[B]` (int64); [`ReplayBuffer::push`] writes the new states back there.
    pub idx: Tensor,
}

/// Fixed-capacity store of chain states `[capacity, *event]`, initially filled from `init`.
#[derive(Debug)]
pub struct ReplayBuffer {
    cfg: BufferConfig,
    data: Tensor,
    event: Vec<i64>,
}

impl ReplayBuffer {
    /// Creates the buffer and fills it from `cfg.init`.
    pub fn new(cfg: BufferConfig, event: &[i64], device: Device) -> Result<Self> {
        cfg.validate()?;
        let data = cfg.init.sample(cfg.capacity as i64, event, device);
        Ok(ReplayBuffer { cfg, data, event: event.to_vec() })
    }

    /// Restores a buffer from saved states `[capacity, *event]` (e.g. from a checkpoint).
    pub fn from_tensor(cfg: BufferConfig, data: Tensor) -> Result<Self> {
        cfg.validate()?;
        let size = data.size();
        if size.is_empty() || size[0] != cfg.capacity as i64 {
            return Err(invalid(
                "buffer",
                format!("saved buffer has shape {size:?}, expected [{}, ...]", cfg.capacity),
            ));
        }
        Ok(ReplayBuffer { cfg, event: size[1..].to_vec(), data })
    }

    /// The stored states `[capacity, *event]`.
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    /// The configuration.
    pub fn config(&self) -> &BufferConfig {
        &self.cfg
    }

    /// Draws `n` chain starts: uniformly random slots, each replaced by a fresh `init` draw with
    /// probability `restart_prob`.
    ///
    /// # Shapes
    /// → `x: [n, *event]`, `idx: [n]`.
    pub fn sample(&self, n: usize) -> Result<BufferBatch> {
        if n == 0 {
            return Err(invalid("buffer.sample", "batch size must be ≥ 1"));
        }
        let dev = self.data.device();
        let idx = Tensor::randint(self.cfg.capacity as i64, [n as i64], (Kind::Int64, dev));
        let x = self.data.index_select(0, &idx);
        if self.cfg.restart_prob > 0.0 {
            let fresh = self.cfg.init.sample(n as i64, &self.event, dev);
            let mut mshape = vec![n as i64];
            mshape.extend(std::iter::repeat_n(1, self.event.len()));
            let restart = Tensor::rand(mshape.as_slice(), (Kind::Float, dev)).lt(self.cfg.restart_prob);
            return Ok(BufferBatch { x: fresh.where_self(&restart, &x), idx });
        }
        Ok(BufferBatch { x, idx })
    }

    /// Writes states back into the slots they were drawn from.
    ///
    /// # Shapes
    /// `idx: [n]`, `x: [n, *event]`.
    pub fn push(&mut self, idx: &Tensor, x: &Tensor) -> Result<()> {
        let n = idx.size();
        let mut want = n.clone();
        want.extend(&self.event);
        if n.len() != 1 || x.size() != want {
            return Err(invalid(
                "buffer.push",
                format!("idx {n:?} and x {:?} do not match [n] and {want:?}", x.size()),
            ));
        }
        let _ = self.data.index_copy_(0, idx, &x.detach().to_kind(self.data.kind()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_rate_matches_probability() {
        tch::manual_seed(0);
        // Buffer filled with zeros-like content far from the restart box, so restarts are recognisable.
        let cfg = BufferConfig { capacity: 1000, restart_prob: 0.05, init: Init::Uniform { low: 10.0, high: 11.0 } };
        let mut b = ReplayBuffer::new(cfg, &[2], Device::Cpu).unwrap();
        let _ = b.data.fill_(0.0);
        let batch = b.sample(20000).unwrap();
        let share = f64::try_from(batch.x.select(1, 0).gt(5.0).to_kind(Kind::Double).mean(Kind::Double)).unwrap();
        // binomial sd at p = 0.05, n = 20000 is 0.0015
        assert!((share - 0.05).abs() < 0.006, "restart share {share}");
    }

    #[test]
    fn push_writes_back_to_the_drawn_slots() {
        tch::manual_seed(1);
        let cfg = BufferConfig { capacity: 50, restart_prob: 0.0, init: Init::default() };
        let mut b = ReplayBuffer::new(cfg, &[3], Device::Cpu).unwrap();
        let batch = b.sample(10).unwrap();
        let new = Tensor::full([10, 3], 7.0, (Kind::Float, Device::Cpu));
        b.push(&batch.idx, &new).unwrap();
        let back = b.data().index_select(0, &batch.idx);
        assert!(bool::try_from(back.eq(7.0).all()).unwrap());
        assert!(b.push(&batch.idx, &Tensor::zeros([10, 2], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn bad_configs_are_errors() {
        let e = ReplayBuffer::new(BufferConfig { capacity: 0, ..Default::default() }, &[2], Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("capacity"), "{e}");
        let e = BufferConfig { restart_prob: 1.5, ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("restart_prob"));
        let saved = Tensor::zeros([5, 2], (Kind::Float, Device::Cpu));
        assert!(ReplayBuffer::from_tensor(BufferConfig::default(), saved).is_err());
    }
}
