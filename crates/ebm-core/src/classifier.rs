//! A small convolutional classifier for judging generated images without `Z`: trained on the labelled
//! training split in seconds, it scores samples by their mean max-probability (are they confidently some
//! class? quality) and by the entropy of their class histogram (do they cover the classes? diversity).

use crate::error::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Classifier settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Channels of the two 3×3 conv stages (each followed by ReLU and, where the image is at least 2×2,
    /// 2×2 max-pooling).
    pub channels: [i64; 2],
    /// Width of the hidden linear layer.
    pub hidden: i64,
    /// Passes over the training split.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Std of Gaussian noise added to training images (in data units): makes the classifier less brittle on
    /// slightly noisy samples.
    pub input_noise: f64,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig { channels: [16, 32], hidden: 128, epochs: 20, batch_size: 64, lr: 2e-3, input_noise: 0.05 }
    }
}

impl ClassifierConfig {
    /// Checks the sizes and rates.
    pub fn validate(&self) -> Result<()> {
        if self.channels.iter().any(|c| *c < 1) || self.hidden < 1 || self.epochs == 0 || self.batch_size == 0 {
            return Err(invalid("classifier", "channels, hidden, epochs and batch_size must be ≥ 1"));
        }
        if !(self.lr > 0.0) || !(self.input_noise >= 0.0) {
            return Err(invalid("classifier", format!("lr must be > 0 and input_noise ≥ 0, got {self:?}")));
        }
        Ok(())
    }
}

/// The trained classifier.
#[derive(Debug)]
pub struct DigitClassifier {
    _vs: nn::VarStore,
    net: nn::Sequential,
    n_classes: i64,
    event: Vec<i64>,
    device: Device,
}

fn build(p: &nn::Path, event: &[i64], cfg: &ClassifierConfig, n_classes: i64) -> nn::Sequential {
    let (mut c, mut h, mut w) = (event[0], event[1], event[2]);
    let mut seq = nn::seq();
    for (i, &out) in cfg.channels.iter().enumerate() {
        let conv = nn::conv2d(p / format!("conv{i}"), c, out, 3, nn::ConvConfig { padding: 1, ..Default::default() });
        seq = seq.add(conv).add_fn(|x| x.relu());
        if h >= 2 && w >= 2 {
            seq = seq.add_fn(|x| x.max_pool2d_default(2));
            h /= 2;
            w /= 2;
        }
        c = out;
    }
    seq.add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(p / "fc", c * h * w, cfg.hidden, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "out", cfg.hidden, n_classes, Default::default()))
}

impl DigitClassifier {
    /// Trains on `images: [N, C, H, W]` with `labels` in `0..n_classes` (libtorch's RNG: seed it first for a
    /// reproducible classifier).
    ///
    /// # Errors
    /// A bad config, mismatched label count, a label out of range, or fewer than 2 classes.
    pub fn train(
        images: &Tensor,
        labels: &[i64],
        n_classes: usize,
        cfg: &ClassifierConfig,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let size = images.size();
        if size.len() != 4 || size[0] as usize != labels.len() || size[0] == 0 {
            return Err(invalid(
                "classifier",
                format!("needs images [N, C, H, W] and N labels, got {size:?} and {} labels", labels.len()),
            ));
        }
        if n_classes < 2 || labels.iter().any(|l| *l < 0 || *l as usize >= n_classes) {
            return Err(invalid("classifier", format!("needs ≥ 2 classes and labels in 0..{n_classes}")));
        }
        let event = size[1..].to_vec();
        let vs = nn::VarStore::new(device);
        let net = build(&vs.root(), &event, cfg, n_classes as i64);
        let mut opt = nn::Adam::default().build(&vs, cfg.lr)?;
        let x = images.to_device(device).to_kind(Kind::Float);
        let y = Tensor::from_slice(labels).to_device(device);
        let n = size[0];
        let steps_per_epoch = (n as usize).div_ceil(cfg.batch_size);
        let total = (cfg.epochs * steps_per_epoch) as f64;
        let mut step = 0.0;
        for _ in 0..cfg.epochs {
            let perm = Tensor::randperm(n, (Kind::Int64, device));
            for b in 0..steps_per_epoch as i64 {
                let start = b * cfg.batch_size as i64;
                let len = (cfg.batch_size as i64).min(n - start);
                let idx = perm.narrow(0, start, len);
                let mut xb = x.index_select(0, &idx);
                if cfg.input_noise > 0.0 {
                    xb = &xb + xb.randn_like() * cfg.input_noise;
                }
                // cosine decay of the learning rate to 0
                opt.set_lr(cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * step / total).cos()));
                let loss = net.forward(&xb).cross_entropy_for_logits(&y.index_select(0, &idx));
                opt.backward_step(&loss);
                step += 1.0;
            }
        }
        Ok(DigitClassifier { _vs: vs, net, n_classes: n_classes as i64, event, device })
    }

    /// Class probabilities `[N, n_classes]` (on the CPU).
    ///
    /// # Errors
    /// If `x` is not `[N, *event]`.
    pub fn probs(&self, x: &Tensor) -> Result<Tensor> {
        crate::check::check_input(&self.event, x, "classifier input")?;
        let p = tch::no_grad(|| {
            let mut out = Vec::new();
            for chunk in x.split(1024, 0) {
                out.push(self.net.forward(&chunk.to_device(self.device).to_kind(Kind::Float)).softmax(-1, Kind::Float));
            }
            Tensor::cat(&out, 0)
        });
        Ok(p.to_device(Device::Cpu))
    }

    /// Share of `x` classified as `labels`.
    pub fn accuracy(&self, x: &Tensor, labels: &[i64]) -> Result<f64> {
        let pred = Vec::<i64>::try_from(self.probs(x)?.argmax(-1, false))?;
        if pred.len() != labels.len() {
            return Err(invalid("accuracy", format!("{} images but {} labels", pred.len(), labels.len())));
        }
        Ok(pred.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len().max(1) as f64)
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes as usize
    }
}

/// Quality and diversity of generated images, by a classifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleQuality {
    /// Mean over images of the largest class probability (1 = every image is confidently some class).
    pub mean_max_prob: f64,
    /// Entropy (nats) of the histogram of predicted classes; `ln(n_classes)` when all classes are equally
    /// frequent, 0 when every image is the same class.
    pub class_entropy: f64,
    /// `ln(n_classes)`, the largest possible entropy.
    pub max_entropy: f64,
    /// Share of images predicted as each class.
    pub class_shares: Vec<f64>,
}

/// Scores class probabilities `probs: [N, K]` of generated images.
pub fn sample_quality(probs: &Tensor) -> Result<SampleQuality> {
    let size = probs.size();
    if size.len() != 2 || size[0] == 0 || size[1] < 1 {
        return Err(invalid("sample_quality", format!("needs probabilities [N, K], got {size:?}")));
    }
    let k = size[1] as usize;
    let max = probs.max_dim(-1, false).0;
    let mean_max_prob = f64::try_from(max.mean(Kind::Double))?;
    let pred = Vec::<i64>::try_from(probs.argmax(-1, false))?;
    let mut counts = vec![0usize; k];
    for p in &pred {
        counts[*p as usize] += 1;
    }
    let shares: Vec<f64> = counts.iter().map(|c| *c as f64 / pred.len() as f64).collect();
    let class_entropy = -shares.iter().filter(|s| **s > 0.0).map(|s| s * s.ln()).sum::<f64>();
    Ok(SampleQuality { mean_max_prob, class_entropy, max_entropy: (k as f64).ln(), class_shares: shares })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_separable_images_and_scores_samples() {
        // Four classes of 6×6 images: a bright quadrant each, plus noise.
        tch::manual_seed(0);
        let n = 400;
        let labels: Vec<i64> = (0..n).map(|i| i % 4).collect();
        let x = Tensor::randn([n, 1, 6, 6], (Kind::Float, Device::Cpu)) * 0.3 - 1.0;
        for (i, l) in labels.iter().enumerate() {
            let (r, c) = ((l / 2) * 3, (l % 2) * 3);
            let _ = x.get(i as i64).get(0).narrow(0, r, 3).narrow(1, c, 3).fill_(1.0);
        }
        let cfg = ClassifierConfig { epochs: 5, ..Default::default() };
        let clf = DigitClassifier::train(&x, &labels, 4, &cfg, Device::Cpu).unwrap();
        assert_eq!(clf.n_classes(), 4);
        assert!(clf.accuracy(&x, &labels).unwrap() > 0.99);
        let q = sample_quality(&clf.probs(&x).unwrap()).unwrap();
        assert!(q.mean_max_prob > 0.9, "{q:?}");
        assert!((q.class_entropy - 4f64.ln()).abs() < 1e-9, "{q:?}");
        // one class only: entropy 0
        let ones: Vec<i64> = (0..n).filter(|i| labels[*i as usize] == 1).collect();
        let q1 = sample_quality(&clf.probs(&x.index_select(0, &Tensor::from_slice(&ones))).unwrap()).unwrap();
        assert_eq!(q1.class_entropy, 0.0);
        assert_eq!(q1.class_shares[1], 1.0);
    }

    #[test]
    fn quality_of_known_probabilities_and_bad_inputs() {
        let p = Tensor::from_slice(&[0.9f32, 0.1, 0.6, 0.4, 0.2, 0.8, 0.5, 0.5]).view([4, 2]);
        let q = sample_quality(&p).unwrap();
        assert!((q.mean_max_prob - (0.9 + 0.6 + 0.8 + 0.5) / 4.0).abs() < 1e-6);
        // argmax of a tie is the first class: predictions 0, 0, 1, 0 → shares 3/4, 1/4
        assert_eq!(q.class_shares, vec![0.75, 0.25]);
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((q.class_entropy - h).abs() < 1e-12);
        assert!(sample_quality(&Tensor::zeros([3], (Kind::Float, Device::Cpu))).is_err());
        let x = Tensor::zeros([3, 1, 4, 4], (Kind::Float, Device::Cpu));
        let e = DigitClassifier::train(&x, &[0, 1], 2, &ClassifierConfig::default(), Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("3 labels") || e.to_string().contains("2 labels"), "{e}");
        assert!(DigitClassifier::train(&x, &[0, 1, 5], 2, &ClassifierConfig::default(), Device::Cpu).is_err());
    }
}
