//! How one process spreads its work over CPU threads.
//!
//! libtorch splits an op over its intra-op (OpenMP) threads only when the op is large: element-wise kernels
//! under 32 768 elements run on one thread, and the OpenMP workers spin at every barrier, so on small tensors a
//! second libtorch thread gains little and collapses when another process takes a core. Langevin chains are
//! independent, so they split cleanly instead: with [`set_chain_threads`]`(n)`, n ≥ 2, [`crate::sampler::Langevin`]
//! runs its unrecorded steps on `n` threads, each with a share of the chains and one libtorch thread of its own,
//! for models that allow it ([`crate::EnergyModel::thread_copy`], e.g. the MLP). Run the rest of such a process
//! on one libtorch thread ([`use_threads`] does both), so that no spinning OpenMP worker competes with the
//! chain threads.

use std::sync::atomic::{AtomicUsize, Ordering};

static CHAIN_THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets how many threads Langevin splits its chains over (1: no splitting, the default); values below 1 count
/// as 1. Process-wide.
pub fn set_chain_threads(n: usize) {
    CHAIN_THREADS.store(n.max(1), Ordering::Relaxed);
}

/// The number of threads Langevin splits its chains over (see [`set_chain_threads`]).
pub fn chain_threads() -> usize {
    CHAIN_THREADS.load(Ordering::Relaxed)
}

/// Spends a budget of `n` CPU threads: when `split_chains` and n ≥ 2, Langevin chains on `n` threads and one
/// libtorch thread for everything else; otherwise `n` libtorch threads and no splitting. Returns a description
/// for the start-up line, e.g. `"2 threads: Langevin chains split over 2, 1 libtorch thread each"`.
pub fn use_threads(n: usize, split_chains: bool) -> String {
    let n = n.max(1);
    if split_chains && n >= 2 {
        tch::set_num_threads(1);
        set_chain_threads(n);
        format!("{n} threads: Langevin chains split over {n}, 1 libtorch thread each")
    } else {
        tch::set_num_threads(n as i32);
        set_chain_threads(1);
        format!("{n} libtorch thread(s)")
    }
}
