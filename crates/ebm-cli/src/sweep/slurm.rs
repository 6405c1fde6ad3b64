//! A sweep on Slurm: an `sbatch --array` script with one task per run, and a collector job that waits for
//! the whole array (`--dependency=afterok:<array job>`) and runs `ebm report`.
//!
//! Each task looks its run up by `SLURM_ARRAY_TASK_ID` and `exec`s `ebm train` (so the batch shell *is* the
//! trainer and `--signal=B:TERM@…` reaches it before the time limit): with `--resume RUN` when the run
//! folder already has its `config.toml` (a requeued, preempted or resubmitted task continues from its
//! newest checkpoint; a finished run just says so), else a fresh start. The scripts call the `ebm` binary by
//! its absolute path (it finds libtorch through its rpath) and `cd` to the folder the sweep was started
//! in, where relative data paths resolve.

use super::{ebm_binary, run_dir, Manifest, RunState};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// File name of the array job script in the sweep folder.
pub const ARRAY_SCRIPT: &str = "sweep.sbatch";
/// File name of the collector job script.
pub const COLLECTOR_SCRIPT: &str = "report.sbatch";
/// Seconds before the time limit at which Slurm sends SIGTERM to a task (it then checkpoints and exits).
pub const SIGNAL_SECS: u32 = 120;

/// Resources of each task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` of each task.
    pub time: Option<String>,
    /// `--cpus-per-task`, also the libtorch threads of each run.
    pub cpus: usize,
    /// `--gpus` per task.
    pub gpus: Option<usize>,
}

/// `s` quoted for bash (single quotes; a `'` inside becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Array ranges in Slurm's syntax: `[0,1,2,5,7,8]` → `0-2,5,7-8`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if j == i { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    parts.join(",")
}

fn resource_lines(s: &mut String, o: &SlurmOptions) {
    if let Some(p) = &o.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(t) = &o.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
    }
    if let Some(g) = o.gpus {
        let _ = writeln!(s, "#SBATCH --gpus={g}");
    }
}

/// Environment the runs need besides what Slurm exports from the submitting shell: the thread count, and a
/// `LD_LIBRARY_PATH` that was set when the sweep was written (the binary normally finds libtorch through its
/// rpath).
fn env_lines(s: &mut String, threads: usize) {
    let _ = writeln!(s, "export OMP_NUM_THREADS={threads}");
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH").filter(|p| !p.is_empty()) {
        let _ = writeln!(s, "export LD_LIBRARY_PATH={}", shell_quote(&p.to_string_lossy()));
    }
}

/// The array job script: one task per run of `m`, with the sweep folder `dir` and the binary `ebm`
/// (both absolute).
pub fn array_script(dir: &Path, m: &Manifest, ebm: &Path, o: &SlurmOptions) -> String {
    let name = dir.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned());
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(s, "#SBATCH --job-name={}", shell_quote(&format!("ebm-{name}")));
    let _ = writeln!(s, "#SBATCH --array={}", array_spec(&(0..m.runs.len()).collect::<Vec<_>>()));
    let _ = writeln!(s, "#SBATCH --output={}/logs/%A_%a.out", dir.display());
    let _ = writeln!(s, "#SBATCH --requeue");
    let _ = writeln!(s, "#SBATCH --signal=B:TERM@{SIGNAL_SECS}");
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", o.cpus);
    resource_lines(&mut s, o);
    let _ = writeln!(
        s,
        "# Written by `ebm sweep`: one task per (grid point, seed) run, listed in {}/sweep.json.\n\
         # A task whose run folder exists resumes it from its newest checkpoint (resubmit one with\n\
         # `sbatch --array=<index> {}/{ARRAY_SCRIPT}`).",
        dir.display(),
        dir.display()
    );
    s.push_str("set -euo pipefail\n");
    let _ = writeln!(s, "cd {}", shell_quote(&m.cwd.display().to_string()));
    env_lines(&mut s, o.cpus);
    let _ = writeln!(s, "EBM={}", shell_quote(&ebm.display().to_string()));
    let _ = writeln!(s, "SWEEP={}", shell_quote(&dir.display().to_string()));
    s.push_str("case \"${SLURM_ARRAY_TASK_ID:?not an array task}\" in\n");
    for r in &m.runs {
        let sets: Vec<String> = r.overrides.iter().map(|o| format!("--set {}", shell_quote(o))).collect();
        let _ = writeln!(s, "  {}) NAME={}; SET=({}) ;;", r.index, shell_quote(r.name()), sets.join(" "));
    }
    s.push_str("  *) echo \"ebm sweep: no run has array index $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n");
    s.push_str("RUN=\"$SWEEP/runs/$NAME\"\n");
    s.push_str(
        "echo \"ebm sweep: task $SLURM_ARRAY_TASK_ID ($NAME) on $(hostname), restart ${SLURM_RESTART_COUNT:-0}\"\n",
    );
    let _ = writeln!(s, "if [ -f \"$RUN/config.toml\" ]; then");
    s.push_str("  exec \"$EBM\" train --resume \"$RUN\"\nelse\n");
    let _ = writeln!(
        s,
        "  exec \"$EBM\" train \"$SWEEP/{}\" \"${{SET[@]}}\" --out \"$SWEEP/runs\" --run-name \"$NAME\" --threads {}",
        m.config, o.cpus
    );
    s.push_str("fi\n");
    s
}

/// The collector job script: `ebm report` on the sweep folder.
pub fn collector_script(dir: &Path, ebm: &Path, o: &SlurmOptions) -> String {
    let name = dir.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned());
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(s, "#SBATCH --job-name={}", shell_quote(&format!("ebm-report-{name}")));
    let _ = writeln!(s, "#SBATCH --output={}/logs/report_%j.out", dir.display());
    let _ = writeln!(s, "#SBATCH --cpus-per-task=1");
    if let Some(p) = &o.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    s.push_str("# Written by `ebm sweep`: submitted with --dependency=afterok:<array job>, it tabulates the sweep.\n");
    s.push_str("set -euo pipefail\n");
    env_lines(&mut s, 1);
    let _ = writeln!(
        s,
        "exec {} report {}",
        shell_quote(&ebm.display().to_string()),
        shell_quote(&dir.display().to_string())
    );
    s
}

/// The job id in `sbatch --parsable`'s output (`123` or `123;cluster`).
///
/// # Errors
/// Output that does not start with a number.
pub fn parse_job_id(out: &str) -> Result<u64> {
    let first = out.trim().split(';').next().unwrap_or("").trim();
    first.parse().with_context(|| format!("sbatch --parsable printed '{}', not a job id", out.trim()))
}

fn sbatch(args: &[String]) -> Result<u64> {
    let out = Command::new("sbatch").args(args).output().context("cannot run sbatch")?;
    if !out.status.success() {
        bail!("sbatch {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_job_id(&String::from_utf8_lossy(&out.stdout))
}

/// Writes the two scripts into `dir` and submits them (`submit`) or prints the commands that would.
/// Only unfinished runs are submitted (all of them for a new sweep).
///
/// # Errors
/// Unwritable scripts, or an `sbatch` that fails.
pub fn run(dir: &Path, m: &Manifest, o: &SlurmOptions, submit: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let ebm = ebm_binary()?;
    let array = dir.join(ARRAY_SCRIPT);
    let collector = dir.join(COLLECTOR_SCRIPT);
    for (p, text) in [(&array, array_script(dir, m, &ebm, o)), (&collector, collector_script(dir, &ebm, o))] {
        ebm_log::write_atomic(p, text.as_bytes())?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    let todo: Vec<usize> =
        m.runs.iter().filter(|r| !RunState::of(&run_dir(dir, r)).finished()).map(|r| r.index).collect();
    if todo.is_empty() {
        println!(
            "all {} runs of {} are finished; `ebm report {}` tabulates them",
            m.runs.len(),
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    let mut array_args = vec!["--parsable".to_string()];
    if todo.len() < m.runs.len() {
        array_args.push(format!("--array={}", array_spec(&todo)));
    }
    array_args.push(array.display().to_string());
    println!(
        "wrote {} ({} array task(s) of {} runs) and {}",
        array.display(),
        todo.len(),
        m.runs.len(),
        collector.display()
    );
    if !submit {
        let arr: Vec<String> = array_args.iter().map(|a| shell_quote(a)).collect();
        println!("submit them with:");
        println!("  jid=$(sbatch {}) && \\", arr.join(" "));
        println!("  sbatch --dependency=afterok:${{jid%%;*}} {}", shell_quote(&collector.display().to_string()));
        return Ok(());
    }
    let job = sbatch(&array_args)?;
    let report =
        sbatch(&["--parsable".into(), format!("--dependency=afterok:{job}"), collector.display().to_string()])?;
    let line = format!("array {job} tasks {} collector {report}\n", array_spec(&todo));
    let log = dir.join("logs").join("submissions.txt");
    let mut prev = std::fs::read_to_string(&log).unwrap_or_default();
    prev.push_str(&line);
    ebm_log::write_atomic(&log, prev.as_bytes())?;
    println!("submitted array job {job} ({} task(s)) and collector job {report} (afterok:{job})", todo.len());
    println!(
        "  watch: squeue -j {job},{report}    logs: {}/logs/    report: {}/report.md",
        dir.display(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn manifest() -> (tempfile::TempDir, Manifest) {
        let t = tempfile::tempdir().unwrap();
        let c = t.path().join("c.toml");
        std::fs::write(&c, "[train]\niters = 10\n").unwrap();
        let m = super::super::plan(
            &c,
            &[r#"objective={kind="score_matching",method={variant="denoising",sigma=0.1}},{kind="contrastive",k=5}"#
                .into()],
            Some("0..2"),
            &["train.iters=3".into()],
        )
        .unwrap();
        (t, m)
    }

    #[test]
    fn quoting_survives_bash() {
        for s in ["plain", "a b", "it's", r#"{kind="x",v=[1,2]}"#, "$HOME `x` \\n", ""] {
            let out = Command::new("bash").arg("-c").arg(format!("printf %s {}", shell_quote(s))).output().unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }

    #[test]
    fn array_specs_compress_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(array_spec(&[3]), "3");
        assert_eq!(array_spec(&[]), "");
    }

    #[test]
    fn job_ids_parse_with_or_without_a_cluster() {
        assert_eq!(parse_job_id("123\n").unwrap(), 123);
        assert_eq!(parse_job_id("77;big\n").unwrap(), 77);
        assert!(parse_job_id("Submitted batch job 5").is_err());
    }

    #[test]
    fn the_array_script_has_one_task_per_run_and_resumes_started_ones() {
        let (_t, m) = manifest();
        let o = SlurmOptions { partition: Some("gpu".into()), time: Some("01:00:00".into()), cpus: 2, gpus: Some(1) };
        let s = array_script(Path::new("/abs/sw"), &m, Path::new("/opt/ebm"), &o);
        for line in [
            "#SBATCH --array=0-3",
            "#SBATCH --output=/abs/sw/logs/%A_%a.out",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:TERM@120",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=01:00:00",
            "#SBATCH --gpus=1",
            "EBM=/opt/ebm",
            "export OMP_NUM_THREADS=2",
            "  exec \"$EBM\" train --resume \"$RUN\"",
        ] {
            assert!(s.lines().any(|l| l == line), "missing line {line:?} in\n{s}");
        }
        assert_eq!(s.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count(), 4);
        assert!(s.contains("--threads 2"), "{s}");
    }

    /// Runs the task body of the script for each index with a fake `ebm` that prints its arguments, with and
    /// without an existing run folder.
    #[test]
    fn each_task_runs_its_own_command() {
        let (t, m) = manifest();
        let sweep = t.path().join("sw");
        std::fs::create_dir_all(sweep.join("runs")).unwrap();
        let fake = t.path().join("fake-ebm");
        std::fs::write(&fake, "#!/bin/bash\nfor a in \"$@\"; do printf '<%s>' \"$a\"; done\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = array_script(&sweep, &m, &fake, &SlurmOptions { cpus: 1, ..Default::default() });
        let run = |i: usize| {
            let out = Command::new("bash").arg("-c").arg(&script).env("SLURM_ARRAY_TASK_ID", i.to_string()).output();
            let out = out.unwrap();
            (out.status.code(), String::from_utf8(out.stdout).unwrap())
        };
        let (code, out) = run(1);
        assert_eq!(code, Some(0));
        let sw = sweep.display();
        assert!(
            out.ends_with(&format!(
                "<train><{sw}/config.toml><--set><train.iters=3><--set><objective={{kind=\"score_matching\",method={{variant=\"denoising\",sigma=0.1}}}}><--set><seed=1><--out><{sw}/runs><--run-name><p000-s1><--threads><1>"
            )),
            "{out}"
        );
        let r: PathBuf = sweep.join("runs/p001-s0");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join("config.toml"), "").unwrap();
        let (code, out) = run(2);
        assert_eq!(code, Some(0));
        assert!(out.ends_with(&format!("<train><--resume><{}>", r.display())), "{out}");
        assert_eq!(run(9).0, Some(2));
    }

    #[test]
    fn the_collector_reports_the_sweep() {
        let s = collector_script(Path::new("/abs/sw"), Path::new("/opt/ebm"), &SlurmOptions::default());
        assert!(s.lines().any(|l| l == "exec /opt/ebm report /abs/sw"), "{s}");
        assert!(s.contains("#SBATCH --output=/abs/sw/logs/report_%j.out"));
    }
}
