//! Input checks shared by models, samplers, objectives and data sources: shapes and finiteness, with
//! errors that name what was checked.

use crate::error::{EbmError, Result};
use tch::Tensor;

/// Checks that `x` has shape `[B, *event]` with `B ≥ 1` and only finite values.
pub fn check_input(event: &[i64], x: &Tensor, what: &str) -> Result<()> {
    let size = x.size();
    let ok = size.len() == event.len() + 1 && size[0] >= 1 && size[1..] == *event;
    if !ok {
        let mut expected = String::from("[B");
        for d in event {
            expected.push_str(&format!(", {d}"));
        }
        expected.push(']');
        return Err(EbmError::Shape { what: what.to_string(), expected, got: size });
    }
    check_finite(x, what)
}

/// Errors if `x` contains NaN or ±Inf.
pub fn check_finite(x: &Tensor, what: &str) -> Result<()> {
    if x.numel() > 0 && !bool::try_from(x.isfinite().all())? {
        return Err(EbmError::NonFinite(what.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shape_and_finiteness_errors_name_the_input() {
        let x = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
        assert!(check_input(&[2], &x, "x").is_ok());
        let e = check_input(&[3], &x, "model input x").unwrap_err().to_string();
        assert!(e.contains("model input x") && e.contains("[B, 3]"), "{e}");
        let nan = Tensor::from_slice(&[1.0f32, f32::NAN]).view([1, 2]);
        assert!(check_input(&[2], &nan, "data").unwrap_err().to_string().contains("data"));
        assert!(check_input(&[2], &Tensor::zeros([0, 2], (Kind::Float, Device::Cpu)), "x").is_err());
    }
}
