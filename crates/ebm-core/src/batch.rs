//! What one training step sees: the data `x`, and for conditional models a label per sample and, for
//! noise-conditional models, a noise level per sample.

use crate::check::check_input;
use crate::error::{invalid, Result};
use tch::{Kind, Tensor};

/// A batch of data with its optional conditioning.
///
/// # Shapes
/// `x: [B, *event]`, `labels: [B]` (int64, in `0..L`), `sigma: [B]` (same kind as `x`).
#[derive(Debug)]
pub struct Batch {
    /// The samples.
    pub x: Tensor,
    /// One label per sample, for conditional models; `None` for unconditional data.
    pub labels: Option<Tensor>,
    /// One noise level per sample, for noise-conditional models; `None` for clean data.
    pub sigma: Option<Tensor>,
}

impl Batch {
    /// An unlabelled, clean batch.
    pub fn new(x: Tensor) -> Self {
        Batch { x, labels: None, sigma: None }
    }

    /// A labelled, clean batch.
    pub fn labelled(x: Tensor, labels: Tensor) -> Self {
        Batch { x, labels: Some(labels), sigma: None }
    }

    /// The batch size `B`.
    pub fn len(&self) -> i64 {
        self.x.size().first().copied().unwrap_or(0)
    }

    /// True for a batch of no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks `x: [B, *event]` (finite), and that labels are `[B]` int64 in `0..num_labels` and σ is `[B]`.
    pub fn check(&self, event: &[i64], num_labels: i64, what: &str) -> Result<()> {
        check_input(event, &self.x, what)?;
        let b = self.len();
        if let Some(labels) = &self.labels {
            if labels.size() != [b] || labels.kind() != Kind::Int64 {
                return Err(invalid(
                    "labels",
                    format!("need int64 labels of shape [{b}], got {:?} of shape {:?}", labels.kind(), labels.size()),
                ));
            }
            let (lo, hi) = (i64::try_from(labels.min())?, i64::try_from(labels.max())?);
            if lo < 0 || hi >= num_labels {
                return Err(invalid("labels", format!("must be in 0..{num_labels}, got values in [{lo}, {hi}]")));
            }
        }
        if let Some(s) = &self.sigma {
            if s.size() != [b] {
                return Err(invalid("sigma", format!("need one noise level per sample, [{b}], got {:?}", s.size())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn checks_name_the_bad_part() {
        let x = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
        let b = Batch::labelled(x.shallow_clone(), Tensor::from_slice(&[0i64, 1, 2]));
        assert!(b.check(&[2], 3, "x").is_ok());
        let e = b.check(&[2], 2, "x").unwrap_err().to_string();
        assert!(e.contains("labels") && e.contains("0..2"), "{e}");
        let e = Batch::labelled(x.shallow_clone(), Tensor::from_slice(&[0i64, 1])).check(&[2], 3, "x").unwrap_err();
        assert!(e.to_string().contains("[3]"), "{e}");
        let e = Batch::new(x.shallow_clone()).check(&[3], 1, "data batch").unwrap_err().to_string();
        assert!(e.contains("data batch"), "{e}");
        let bad_sigma = Batch { x, labels: None, sigma: Some(Tensor::zeros([2], (Kind::Float, Device::Cpu))) };
        assert!(bad_sigma.check(&[2], 1, "x").unwrap_err().to_string().contains("sigma"));
        assert_eq!(bad_sigma.len(), 3);
    }
}
