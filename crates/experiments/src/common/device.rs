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

/// The libtorch CPU thread count a run uses when neither `--threads` nor `threads` in the config gave one,
/// with the reason printed at start: `OMP_NUM_THREADS` when the user set it (libtorch reads it), else 1.
///
/// One thread by default because the experiments' tensors are small (a 2-D toy density with a 128-wide MLP does
/// tens of microseconds of work per op): a second libtorch thread gains little on an idle machine, and its
/// OpenMP worker spins at every barrier, so when another process takes a core the run slows down several-fold.
/// Measured on a 2-core machine (`exp_cd_vs_sm --quick`, see BENCHMARKS.md "Threads"): with one other busy
/// process, 2 threads took 66 s and 1 thread 17.5 s.
pub fn auto_threads(omp_num_threads: Option<&str>) -> (Option<usize>, String) {
    match omp_num_threads.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => (None, format!("OMP_NUM_THREADS={v} is set (libtorch's own choice from it)")),
        None => (
            Some(1),
            "the default: small tensors gain little from a second thread, and spinning OpenMP threads slow \
             down several-fold when another process takes a core; --threads N (or threads = N) to change"
                .into(),
        ),
    }
}

/// Applies `--threads` (or [`auto_threads`] without one; with `split_chains`, 2 or more threads go to Langevin
/// chains split over them, see [`ebm_core::threads::use_threads`]), seeds libtorch, resolves the device and
/// prints the device, the thread count and why, and the libtorch version.
pub fn init(device: DeviceArg, seed: u64, threads: Option<usize>, split_chains: bool) -> Result<RunContext> {
    let (layout, why) = match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => (ebm_core::threads::use_threads(t, split_chains), "--threads / threads in the config".to_string()),
        None => {
            let (t, why) = auto_threads(std::env::var("OMP_NUM_THREADS").ok().as_deref());
            let layout = match t {
                Some(t) => ebm_core::threads::use_threads(t, split_chains),
                None => format!("{} libtorch thread(s)", tch::get_num_threads()),
            };
            (layout, why)
        }
    };
    let dev = device.resolve().context("selecting the device")?;
    tch::manual_seed(seed as i64);
    if let Device::Cuda(_) = dev {
        tch::Cuda::manual_seed_all(seed);
    }
    let name = match dev {
        Device::Cpu => format!("cpu ({layout}: {why})"),
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
    fn auto_threads_is_one_unless_omp_num_threads_is_set() {
        let (t, why) = auto_threads(None);
        assert_eq!(t, Some(1));
        assert!(why.contains("--threads"), "{why}");
        assert_eq!(auto_threads(Some(" ")).0, Some(1));
        let (t, why) = auto_threads(Some("3"));
        assert_eq!(t, None);
        assert!(why.contains("OMP_NUM_THREADS=3"), "{why}");
    }

    #[test]
    fn version_is_known() {
        assert_ne!(LIBTORCH_VERSION, "unknown");
        assert!(LIBTORCH_VERSION.starts_with("2."), "{LIBTORCH_VERSION}");
    }
}
