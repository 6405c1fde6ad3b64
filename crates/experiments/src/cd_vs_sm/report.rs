//! The results table of `exp_cd_vs_sm`: [`ResultRow`], markdown and CSV.

use super::config::{CdVsSmConfig, FinalSampler, Method};
use anyhow::Result;
use ebm_log::RunDir;
use serde::{Deserialize, Serialize};

/// One row of the results table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRow {
    /// Dataset name.
    pub dataset: String,
    /// Method.
    pub method: Method,
    /// Test NLL (nats), grid log Z.
    pub nll: f64,
    /// KL(p_data ‖ p_θ) where the data density is known.
    pub kl: Option<f64>,
    /// MMD² between the final sampler's samples (MALA by default) and test data.
    pub mmd2: f64,
    /// MMD² of the unadjusted Langevin samples (before MALA).
    pub mmd2_langevin: f64,
    /// Total variation between sample mode shares and the true weights (mixtures).
    pub mode_tv_samples: Option<f64>,
    /// Total variation between the model density's mass per mode (grid) and the true weights.
    pub mode_tv_density: Option<f64>,
    /// The model density's mass per mode, e.g. "0.79/0.21".
    pub model_weights: Option<String>,
    /// The true weights, e.g. "0.80/0.20".
    pub true_weights: Option<String>,
    /// Share of samples far from every mode (spurious mass), mixtures only.
    pub far_share: Option<f64>,
    /// Acceptance rate of the final sampler (MALA by default).
    pub mala_acceptance: f64,
    /// log Z of the model on the evaluation grid.
    #[serde(default)]
    pub log_z_grid: Option<f64>,
    /// NCE's learned log Z (`−c`), for the NCE rows.
    #[serde(default)]
    pub log_z_nce: Option<f64>,
    /// Milliseconds per parameter update.
    pub ms_per_iter: f64,
    /// Training wall-clock seconds.
    pub train_seconds: f64,
    /// Training plus evaluation seconds.
    pub total_seconds: f64,
}

pub(super) fn fmt_weights(w: &[f64]) -> String {
    w.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join("/")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into())
}

/// The results table as markdown.
pub fn markdown_table(cfg: &CdVsSmConfig, rows: &[ResultRow]) -> String {
    let name = cfg.sampling.sampler.label();
    let mut s = format!(
        "| dataset | method | test NLL | KL(data‖model) | MMD² ({name}) | MMD² (Langevin) | mode TV samples | mode TV density | model weights (true) | far share | {name} acc. | ms/iter | total s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let weights = match (&r.model_weights, &r.true_weights) {
            (Some(m), Some(t)) if r.true_weights.as_deref().is_some_and(|t| t.matches('/').count() < 3) => {
                format!("{m} ({t})")
            }
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {:.3} | {} | {:.4} | {:.4} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |\n",
            r.dataset,
            r.method.label(cfg),
            r.nll,
            opt(r.kl, 3),
            r.mmd2,
            r.mmd2_langevin,
            opt(r.mode_tv_samples, 3),
            opt(r.mode_tv_density, 3),
            weights,
            opt(r.far_share, 3),
            r.mala_acceptance,
            r.ms_per_iter,
            r.total_seconds,
        ));
    }
    s
}

pub(super) fn write_results(cfg: &CdVsSmConfig, run_dir: &RunDir, rows: &[ResultRow]) -> Result<()> {
    let mut csv = String::from(
        "dataset,method,nll,kl,mmd2,mmd2_langevin,mode_tv_samples,mode_tv_density,model_weights,true_weights,far_share,mala_acceptance,ms_per_iter,train_seconds,total_seconds,log_z_grid,log_z_nce\n",
    );
    let o = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.dataset,
            r.method,
            r.nll,
            o(r.kl),
            r.mmd2,
            r.mmd2_langevin,
            o(r.mode_tv_samples),
            o(r.mode_tv_density),
            r.model_weights.clone().unwrap_or_default(),
            r.true_weights.clone().unwrap_or_default(),
            o(r.far_share),
            r.mala_acceptance,
            r.ms_per_iter,
            r.train_seconds,
            r.total_seconds,
            o(r.log_z_grid),
            o(r.log_z_nce)
        ));
    }
    run_dir.write_atomic("results.csv", csv.as_bytes())?;
    let table = markdown_table(cfg, rows);
    let s = &cfg.sampling;
    let final_steps = match s.sampler {
        FinalSampler::Mala => format!("{} MALA steps (ε = {})", s.mala_steps, s.mala_step),
        FinalSampler::Hmc => format!(
            "{} HMC steps ({} leapfrog steps of {}) for the sample-based columns",
            s.mala_steps, s.hmc.leapfrog_steps, s.hmc.step_size
        ),
        FinalSampler::Pt => {
            format!("{} parallel-tempering steps (β = {:?}) for the sample-based columns", s.pt_steps, s.pt.betas)
        }
    };
    // the methods with training settings of their own (`method_training`)
    let own: String = cfg
        .method_training
        .iter()
        .filter(|(m, _)| cfg.methods.contains(m))
        .filter_map(|(m, t)| {
            let mut parts = Vec::new();
            if let Some(d) = t.ema {
                parts.push(format!("weights averaged (EMA {d}), the average evaluated"));
            }
            if let Some(lr) = t.lr {
                parts.push(format!("Adam lr {lr}"));
            }
            (!parts.is_empty()).then(|| format!("{}: {}.\n", m.label(cfg), parts.join(", ")))
        })
        .collect();
    let mut md = format!(
        "# exp_cd_vs_sm results\n\nSame MLP ({:?}), Adam lr {}, {} updates of batch {} per method; seed {}.\n\
         Samples: {} chains, {} Langevin steps (ε = {}) from uniform noise, then {final_steps}.\n\
         NLL and KL use log Z on a {}² grid. Mode weights of the model are its density's mass nearest each mode.\n{own}\n{table}",
        cfg.model.hidden,
        cfg.train.optim.lr,
        cfg.train.iters,
        cfg.train.batch_size,
        cfg.seed,
        s.n,
        s.langevin_steps,
        s.langevin_step,
        cfg.eval.grid_n,
    );
    let nce: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let (n, g) = (r.log_z_nce?, r.log_z_grid?);
            Some(format!("{}: NCE {n:.3}, grid {g:.3} (difference {:+.3})", r.dataset, n - g))
        })
        .collect();
    if !nce.is_empty() {
        md.push_str(&format!("\nNCE's learned log Z against the grid's: {}.\n", nce.join("; ")));
    }
    run_dir.write_atomic("results.md", md.as_bytes())?;
    println!("\n{table}");
    Ok(())
}
