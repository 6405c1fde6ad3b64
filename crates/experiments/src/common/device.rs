//! Device, seed and thread selection shared by every binary (`--device`, `--seed`, `--threads`).

use anyhow::{bail, Context, Result};
use std::str::FromStr;
use tch::Device;

/// The libtorch version this binary was built against (read from the libtorch folder at build time).
pub const LIBTORCH_VERSION: &str = env!("EBM_LIBTORCH_VERSION");

/// Which device to run on: `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceArg {
    /// CUDA device 0 when `tch::Cuda::is_available()`, otherwise the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" | "gpu" => Ok(DeviceArg::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceArg::Cuda(n)),
                _ => Err(format!("unknown device '{s}': use auto, cpu, cuda or cuda:N")),
            },
        }
    }
}

impl TryFrom<String> for DeviceArg {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceArg> for String {
    fn from(d: DeviceArg) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceArg::Auto => write!(f, "auto"),
            DeviceArg::Cpu => write!(f, "cpu"),
            DeviceArg::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceArg {
    /// Resolves to a `tch::Device`, failing at once with a clear message when CUDA is asked for but absent.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceArg::Auto => Ok(Device::cuda_if_available()),
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda(n) => {
                if !tch::Cuda::is_available() {
                    bail!(
                        "--device {self} asked for CUDA, but CUDA is not available: no GPU is visible or this \
                         build links a CPU-only libtorch (libtorch {LIBTORCH_VERSION}). Use --device cpu, or \
                         see README 'Using CUDA'."
                    );
                }
                let count = tch::Cuda::device_count() as usize;
                if n >= count {
                    bail!("--device {self}: only {count} CUDA device(s) visible (cuda:0..cuda:{})", count - 1);
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// The resolved run context: device and seed, after threads and seeds were applied.
#[derive(Debug, Clone, Copy)]
pub struct RunContext {
    /// The device tensors and models live on.
    pub device: Device,
    /// The seed applied with `tch::manual_seed`.
    pub seed: u64,
}

/// Applies `--threads`, seeds libtorch, resolves the device and prints device and libtorch version.
pub fn init(device: DeviceArg, seed: u64, threads: Option<usize>) -> Result<RunContext> {
    if let Some(t) = threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        tch::set_num_threads(t as i32);
    }
    let dev = device.resolve().context("selecting the device")?;
    tch::manual_seed(seed as i64);
    if let Device::Cuda(_) = dev {
        tch::Cuda::manual_seed_all(seed);
    }
    let name = match dev {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n} ({} CUDA device(s))", tch::Cuda::device_count()),
        other => format!("{other:?}"),
    };
    eprintln!("ebm-rs: device {name}, libtorch {LIBTORCH_VERSION}, seed {seed}");
    Ok(RunContext { device: dev, seed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("auto".parse::<DeviceArg>().unwrap(), DeviceArg::Auto);
        assert_eq!("CPU".parse::<DeviceArg>().unwrap(), DeviceArg::Cpu);
        assert_eq!("cuda".parse::<DeviceArg>().unwrap(), DeviceArg::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceArg>().unwrap(), DeviceArg::Cuda(3));
        let e = "tpu".parse::<DeviceArg>().unwrap_err();
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
        assert!("cuda:x".parse::<DeviceArg>().is_err());
    }

    #[test]
    fn cuda_without_gpu_is_a_clear_error() {
        if tch::Cuda::is_available() {
            return; // the message under test only exists on CPU-only machines
        }
        let e = DeviceArg::Cuda(0).resolve().unwrap_err().to_string();
        assert!(e.contains("CUDA is not available"), "{e}");
    }

    #[test]
    fn version_is_known() {
        assert_ne!(LIBTORCH_VERSION, "unknown");
        assert!(LIBTORCH_VERSION.starts_with("2."), "{LIBTORCH_VERSION}");
    }
}
