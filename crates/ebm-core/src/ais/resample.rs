//! The resampling step of AIS with resampling (an SMC sampler) and the per-group estimates; see
//! [`super::Resample`].

use super::Resample;
use crate::error::Result;
use tch::{Kind, Tensor};

/// The groups' running state: `log_acc [G]` (`f64`), the log-normalisers taken at earlier resamplings.
pub(super) struct Groups {
    cfg: Resample,
    log_acc: Tensor,
    /// Resampling events so far, over all groups.
    pub(super) events: usize,
}

impl Groups {
    pub(super) fn new(cfg: Resample, device: tch::Device) -> Self {
        Groups { cfg, log_acc: Tensor::zeros([cfg.groups as i64], (Kind::Double, device)), events: 0 }
    }

    /// For the log-weights `log_w [n]` (`f64`, groups of consecutive chains): in every group whose ESS is
    /// below the threshold, adds the log-mean weight to its `log_acc`, draws its chains' indices in
    /// proportion to their weights and resets its weights to 0. Returns the new log-weights and, when any
    /// group resampled, the indices `[n]` that pick the new chains from the old.
    pub(super) fn step(&mut self, log_w: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let g = self.cfg.groups as i64;
        let lw = log_w.view([g, -1]);
        let m = lw.size()[1];
        let lse = lw.logsumexp([1], false);
        let ess = (&lse * 2.0 - (&lw * 2.0).logsumexp([1], false)).exp(); // (Σw)² / Σw², [G]
        let need = ess.lt(self.cfg.ess_fraction * m as f64);
        let count = i64::try_from(need.sum(Kind::Int64))? as usize;
        if count == 0 {
            return Ok((log_w.shallow_clone(), None));
        }
        self.events += count;
        self.log_acc += (lse - (m as f64).ln()).where_self(&need, &self.log_acc.zeros_like());
        let offsets = Tensor::arange(g, (Kind::Int64, log_w.device())).unsqueeze(1) * m;
        let draws = lw.softmax(1, Kind::Double).multinomial(m, true) + &offsets; // [G, m]
        let keep = Tensor::arange(g * m, (Kind::Int64, log_w.device())).view([g, m]);
        let need2 = need.unsqueeze(1);
        let idx = draws.where_self(&need2, &keep).view([-1]);
        let new_lw = lw.zeros_like().where_self(&need2, &lw).view([-1]);
        Ok((new_lw, Some(idx)))
    }

    /// Each chain's log-weight with its group's `log_acc` added (`[n]`): `log mean exp` of them is `log Ẑ`.
    pub(super) fn total(&self, log_w: &Tensor) -> Tensor {
        let g = self.cfg.groups as i64;
        (log_w.view([g, -1]) + self.log_acc.unsqueeze(1)).view([-1])
    }

    /// Each group's `log Ẑ_g` from the final total log-weights `[n]`.
    pub(super) fn group_log_z(&self, total: &Tensor) -> Result<Vec<f64>> {
        let g = self.cfg.groups as i64;
        let lw = total.view([g, -1]);
        let m = lw.size()[1] as f64;
        Ok(Vec::<f64>::try_from(lw.logsumexp([1], false) - m.ln())?)
    }
}

/// `log mean exp` of `v` and the delta-method standard error of it, `sd(e^v) / (mean(e^v) √n)`.
pub(super) fn log_mean_exp_with_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
    let mean = w.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (max + mean.ln(), var.sqrt() / (mean * n.sqrt()))
}
