//! The interface the trainer logs through. The logging crate (`ebm-log`: TensorBoard, CSV, progress bars)
//! implements it; [`MemorySink`] keeps scalars in memory for tests and notebooks.

pub use crate::error::SinkError;
use image::RgbImage;

/// What a sink method returns.
pub type SinkResult = std::result::Result<(), SinkError>;

/// Somewhere to send training metrics: scalars, and optionally images, markdown text and histograms.
pub trait MetricsSink {
    /// Records `value` for `tag` at `step`.
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult;

    /// Makes everything recorded so far durable (on disk for file sinks).
    fn flush(&mut self) -> SinkResult;

    /// Training went back to `step` (a divergence rollback): whatever was recorded for later steps is
    /// stale and will be recorded again. File sinks drop or mark those records so the run's logs show
    /// each step once (default: nothing).
    fn restart(&mut self, _step: u64) -> SinkResult {
        Ok(())
    }

    /// Records several scalars of one step (default: one [`MetricsSink::scalar`] call each).
    fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> SinkResult {
        for &(tag, v) in values {
            self.scalar(tag, step, v)?;
        }
        Ok(())
    }

    /// Records an image (default: ignored).
    fn image(&mut self, _tag: &str, _step: u64, _image: &RgbImage) -> SinkResult {
        Ok(())
    }

    /// Records markdown text (default: ignored).
    fn text(&mut self, _tag: &str, _step: u64, _markdown: &str) -> SinkResult {
        Ok(())
    }

    /// Records a histogram of `values` (default: ignored).
    fn histogram(&mut self, _tag: &str, _step: u64, _values: &[f64]) -> SinkResult {
        Ok(())
    }
}

impl<S: MetricsSink + ?Sized> MetricsSink for Box<S> {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
        (**self).scalar(tag, step, value)
    }
    fn flush(&mut self) -> SinkResult {
        (**self).flush()
    }
    fn restart(&mut self, step: u64) -> SinkResult {
        (**self).restart(step)
    }
    fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> SinkResult {
        (**self).scalars(step, values)
    }
    fn image(&mut self, tag: &str, step: u64, image: &RgbImage) -> SinkResult {
        (**self).image(tag, step, image)
    }
    fn text(&mut self, tag: &str, step: u64, markdown: &str) -> SinkResult {
        (**self).text(tag, step, markdown)
    }
    fn histogram(&mut self, tag: &str, step: u64, values: &[f64]) -> SinkResult {
        (**self).histogram(tag, step, values)
    }
}

/// A sink that keeps every scalar in memory as `(tag, step, value)`: handy in tests and notebooks.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemorySink {
    /// The scalars in the order they arrived.
    pub scalars: Vec<(String, u64, f64)>,
}

impl MetricsSink for MemorySink {
    fn scalar(&mut self, tag: &str, step: u64, value: f64) -> SinkResult {
        self.scalars.push((tag.to_string(), step, value));
        Ok(())
    }
    fn flush(&mut self) -> SinkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_errors_keep_their_message_and_source() {
        let io = std::io::Error::other("disk full");
        let e = SinkError::new(io);
        assert_eq!(e.to_string(), "disk full");
        let ebm: crate::EbmError = e.into();
        assert!(ebm.to_string().contains("disk full"), "{ebm}");
        let mut m = MemorySink::default();
        m.scalars(3, &[("a", 1.0), ("b", 2.0)]).unwrap();
        assert_eq!(m.scalars, vec![("a".into(), 3, 1.0), ("b".into(), 3, 2.0)]);
    }
}
