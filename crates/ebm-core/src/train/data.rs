//! Where training batches come from: [`DataSource`], with rows drawn uniformly with replacement from a
//! tensor ([`TensorData`]) or from a labelled tensor ([`LabelledData`]).

use crate::batch::Batch;
use crate::check::check_finite;
use crate::error::{invalid, Result};
use tch::{Kind, Tensor};

/// Where training batches come from.
pub trait DataSource {
    /// A batch of `n` samples `[n, *event]` (on the model's device), with labels for conditional data.
    fn batch(&mut self, n: usize) -> Result<Batch>;
}

/// Batches of rows drawn uniformly with replacement (libtorch's RNG) from a tensor `[N, *event]`.
#[derive(Debug)]
pub struct TensorData {
    data: Tensor,
}

impl TensorData {
    /// Wraps a non-empty, finite data tensor `[N, *event]`.
    pub fn new(data: Tensor) -> Result<Self> {
        if data.dim() < 2 || data.size()[0] == 0 {
            return Err(invalid("data", format!("need a non-empty [N, ...] tensor, got shape {:?}", data.size())));
        }
        check_finite(&data, "training data")?;
        Ok(TensorData { data })
    }

    /// The wrapped tensor.
    pub fn data(&self) -> &Tensor {
        &self.data
    }
}

impl DataSource for TensorData {
    fn batch(&mut self, n: usize) -> Result<Batch> {
        let idx = Tensor::randint(self.data.size()[0], [n as i64], (Kind::Int64, self.data.device()));
        Ok(Batch::new(self.data.index_select(0, &idx)))
    }
}

/// Labelled rows drawn uniformly with replacement (libtorch's RNG): images `[N, *event]` with `K` labels each
/// (`labels: [N, K]`, int64); every draw of a row takes one of its `K` labels at random (K = 1: its only
/// label). Several labels per row train one model on several attributes of the same data.
#[derive(Debug)]
pub struct LabelledData {
    data: Tensor,
    labels: Tensor,
}

impl LabelledData {
    /// Wraps a non-empty, finite data tensor `[N, *event]` and its labels `[N, K]` (or `[N]`).
    pub fn new(data: Tensor, labels: Tensor) -> Result<Self> {
        let data = TensorData::new(data)?.data;
        let labels = if labels.dim() == 1 { labels.unsqueeze(1) } else { labels };
        if labels.dim() != 2 || labels.size()[0] != data.size()[0] || labels.size()[1] == 0 {
            return Err(invalid(
                "labels",
                format!("need [N, K] labels for {} rows, got shape {:?}", data.size()[0], labels.size()),
            ));
        }
        if labels.kind() != Kind::Int64 {
            return Err(invalid("labels", format!("need int64 labels, got {:?}", labels.kind())));
        }
        Ok(LabelledData { data, labels })
    }
}

impl DataSource for LabelledData {
    fn batch(&mut self, n: usize) -> Result<Batch> {
        let (rows, k) = (self.data.size()[0], self.labels.size()[1]);
        let dev = self.data.device();
        let idx = Tensor::randint(rows, [n as i64], (Kind::Int64, dev));
        let col = Tensor::randint(k, [n as i64, 1], (Kind::Int64, dev));
        let x = self.data.index_select(0, &idx);
        let y = self.labels.index_select(0, &idx).gather(1, &col, false).squeeze_dim(1);
        Ok(Batch::labelled(x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn labelled_rows_keep_their_labels() {
        tch::manual_seed(0);
        // row i holds the value i and the labels {i, i + 10}
        let x = Tensor::arange(5, (Kind::Float, Device::Cpu)).view([5, 1]);
        let lab = Tensor::stack(
            &[Tensor::arange(5, (Kind::Int64, Device::Cpu)), Tensor::arange(5, (Kind::Int64, Device::Cpu)) + 10],
            1,
        );
        let mut d = LabelledData::new(x, lab).unwrap();
        let b = d.batch(400).unwrap();
        let xs = Vec::<f32>::try_from(b.x.view([-1])).unwrap();
        let ys = Vec::<i64>::try_from(b.labels.unwrap()).unwrap();
        assert!(xs.iter().zip(&ys).all(|(x, y)| *y == *x as i64 || *y == *x as i64 + 10));
        let high = ys.iter().filter(|y| **y >= 10).count();
        // each of 400 draws takes the second label with probability ½: sd 10
        assert!((160..240).contains(&high), "{high}");
        let e = LabelledData::new(
            Tensor::zeros([3, 1], (Kind::Float, Device::Cpu)),
            Tensor::zeros([2], (Kind::Int64, Device::Cpu)),
        );
        assert!(e.unwrap_err().to_string().contains("[N, K]"));
    }
}
