//! `ebm score RUN FILE [--vs FILE2]`: `f(x)` per row, and log-likelihood ratios `f(x1) - f(x2)` (no `Z`
//! needed).

use super::{fresh, read_points};
use crate::model::SavedRun;
use anyhow::{bail, Result};
use ebm_core::eval::f_of;
use experiments::DeviceArg;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Flags of `ebm score`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  ebm score runs/first points.csv\n  ebm score runs/first a.csv --vs b.csv --out \
                        ratios.csv")]
pub struct ScoreArgs {
    /// The run folder.
    pub run: PathBuf,
    /// Points (.csv or .npy), one per row.
    pub file: PathBuf,
    /// Points to compare with, row by row: prints `f(x1) - f(x2) = log p(x1) - log p(x2)`.
    #[arg(long)]
    pub vs: Option<PathBuf>,
    /// Write the table here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
}

/// Runs `ebm score`.
///
/// # Errors
/// Not a run folder, unreadable files, points of the wrong dimension, `--vs` with another row count.
pub fn run(a: &ScoreArgs) -> Result<()> {
    let device = a.device.resolve()?;
    let saved = SavedRun::open(&a.run, device)?;
    if saved.data.is_image() {
        bail!(
            "ebm score reads points from .csv/.npy; {} is an image model: give an .npy array [n, C·H·W]",
            a.run.display()
        );
    }
    let event = &saved.data.event_shape;
    let out = a.out.as_deref().map(fresh).transpose()?;
    let x1 = read_points(&a.file, event, "FILE")?;
    let f1 = f_of(&*saved.model, &x1.to_device(device), device, "FILE").map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut s = String::new();
    match &a.vs {
        None => {
            s.push_str("row,f\n");
            for (i, f) in f1.iter().enumerate() {
                writeln!(s, "{i},{f}")?;
            }
        }
        Some(p) => {
            let x2 = read_points(p, event, "--vs")?;
            if x2.size()[0] != x1.size()[0] {
                bail!(
                    "--vs {} has {} rows but {} has {}; the ratios pair rows one to one",
                    p.display(),
                    x2.size()[0],
                    a.file.display(),
                    x1.size()[0]
                );
            }
            let f2 = f_of(&*saved.model, &x2.to_device(device), device, "--vs").map_err(|e| anyhow::anyhow!("{e}"))?;
            s.push_str("row,f1,f2,log_ratio\n");
            for (i, (a, b)) in f1.iter().zip(&f2).enumerate() {
                writeln!(s, "{i},{a},{b},{}", a - b)?;
            }
        }
    }
    match out {
        Some(p) => {
            std::fs::write(&p, s)?;
            eprintln!("wrote {}", p.display());
        }
        None => {
            use std::io::Write;
            // a closed pipe (`ebm score … | head`) ends the output quietly
            if let Err(e) = std::io::stdout().lock().write_all(s.as_bytes()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}
