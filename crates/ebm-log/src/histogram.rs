//! Histogram buckets for TensorBoard's Histograms and Distributions tabs.

use tch::{Device, Kind, Tensor};

use crate::error::{LogError, Result};
use crate::proto::HistogramProto;

/// A histogram with equal-width buckets spanning `[min, max]` of the (finite) values.
///
/// Bucket `i` covers `[min + i·w, min + (i+1)·w)` with `w = (max - min) / bins`; the last bucket
/// also holds `max`. `bucket_limits[i]` is the right edge of bucket `i` (the last one is `max`),
/// which is how `HistogramProto` stores edges. When all values are equal there is one bucket.
/// Non-finite values (NaN, ±inf) are not counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Smallest finite value.
    pub min: f64,
    /// Largest finite value.
    pub max: f64,
    /// Number of finite values (the sum of `counts`).
    pub num: u64,
    /// Sum of the finite values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_squares: f64,
    /// Right edge of each bucket.
    pub bucket_limits: Vec<f64>,
    /// Count of each bucket.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Buckets `values` into `bins` equal-width buckets.
    ///
    /// Errors when `bins` is 0 or there is no finite value.
    pub fn from_values(values: &[f64], bins: usize) -> Result<Self> {
        Self::from_iter(values.iter().copied(), bins)
    }

    /// Like [`Histogram::from_values`] for `f32` data.
    pub fn from_f32(values: &[f32], bins: usize) -> Result<Self> {
        Self::from_iter(values.iter().map(|&v| f64::from(v)), bins)
    }

    /// Buckets all elements of a tensor of any shape, kind and device (it is copied to the CPU
    /// as `f64`; gradients are not tracked).
    pub fn from_tensor(t: &Tensor, bins: usize) -> Result<Self> {
        let values = tensor_to_f64(t)?;
        Self::from_values(&values, bins)
    }

    fn from_iter<I: Iterator<Item = f64> + Clone>(values: I, bins: usize) -> Result<Self> {
        if bins == 0 {
            return Err(LogError::invalid("histogram needs at least one bin"));
        }
        let finite = values.filter(|v| v.is_finite());
        let (mut min, mut max, mut num, mut sum, mut sum_squares) = (f64::INFINITY, f64::NEG_INFINITY, 0u64, 0.0, 0.0);
        for v in finite.clone() {
            min = min.min(v);
            max = max.max(v);
            num += 1;
            sum += v;
            sum_squares += v * v;
        }
        if num == 0 {
            return Err(LogError::invalid("histogram of no finite values (empty input, or all NaN/inf)"));
        }
        let (bucket_limits, counts) = if min == max {
            (vec![max], vec![num])
        } else {
            let width = (max - min) / bins as f64;
            let mut counts = vec![0u64; bins];
            for v in finite {
                let i = (((v - min) / width) as usize).min(bins - 1);
                counts[i] += 1;
            }
            let mut limits: Vec<f64> = (1..bins).map(|i| min + i as f64 * width).collect();
            limits.push(max);
            (limits, counts)
        };
        Ok(Histogram { min, max, num, sum, sum_squares, bucket_limits, counts })
    }

    /// The `HistogramProto` TensorBoard stores.
    pub fn to_proto(&self) -> HistogramProto {
        HistogramProto {
            min: self.min,
            max: self.max,
            num: self.num as f64,
            sum: self.sum,
            sum_squares: self.sum_squares,
            bucket_limit: self.bucket_limits.clone(),
            bucket: self.counts.iter().map(|&c| c as f64).collect(),
        }
    }
}

/// Copies all elements of `t` (any shape, kind, device) into a flat `Vec<f64>`.
pub(crate) fn tensor_to_f64(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t.detach().f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?.f_reshape([-1])?;
    Ok(Vec::<f64>::try_from(&flat)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_buckets() {
        // [0, 4] in 4 buckets of width 1: [0,1) [1,2) [2,3) [3,4].
        let h = Histogram::from_values(&[0.0, 1.0, 2.0, 3.0, 4.0, 0.5, 3.5], 4).unwrap();
        assert_eq!(h.counts, vec![2, 1, 1, 3]);
        assert_eq!(h.bucket_limits, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!((h.min, h.max, h.num), (0.0, 4.0, 7));
        assert_eq!(h.sum, 14.0);
        assert_eq!(h.sum_squares, 0.0 + 1.0 + 4.0 + 9.0 + 16.0 + 0.25 + 12.25);
        let p = h.to_proto();
        assert_eq!(p.bucket, vec![2.0, 1.0, 1.0, 3.0]);
        assert_eq!(p.num, 7.0);
    }

    #[test]
    fn counts_sum_to_n_and_skip_non_finite() {
        let values: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 / 37.0).collect();
        let h = Histogram::from_values(&values, 30).unwrap();
        assert_eq!(h.counts.iter().sum::<u64>(), 1000);
        assert_eq!(h.counts.len(), 30);
        assert_eq!(*h.bucket_limits.last().unwrap(), 999.0 / 37.0);

        let h = Histogram::from_f32(&[1.0, f32::NAN, 2.0, f32::INFINITY], 2).unwrap();
        assert_eq!((h.num, h.counts.clone()), (2, vec![1, 1]));
    }

    #[test]
    fn constant_values_give_one_bucket_and_bad_input_errors() {
        let h = Histogram::from_values(&[2.5; 4], 10).unwrap();
        assert_eq!((h.bucket_limits.clone(), h.counts.clone()), (vec![2.5], vec![4]));
        assert!(Histogram::from_values(&[], 10).is_err());
        assert!(Histogram::from_values(&[f64::NAN], 10).is_err());
        assert!(Histogram::from_values(&[1.0], 0).is_err());
    }

    #[test]
    fn from_tensor_matches_slice() {
        let t = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 4.0, 0.5]).reshape([2, 3]);
        let h = Histogram::from_tensor(&t, 4).unwrap();
        assert_eq!(h.counts, vec![2, 1, 1, 2]);
        assert_eq!(h.num, 6);
    }
}
