//! The simulated filesystem the simulated nodes' data dirs will run on.
//!
//! `SimFs` itself lives in `tern-storage` (`tern_storage::sim_fs`, which
//! documents its fault model), beside the data dir it is built to break: it
//! is synchronous and pure (a seed in, latency out), so the storage crate's
//! own property tests crash and fault-inject the very same filesystem
//! without madsim. Here it is re-exported with the one thing the simulator
//! adds: sleeping, in madsim's virtual time, the latency its slow ops
//! report.

pub use tern_storage::{
    CrashReport, DataDir, FaultRates, Fs, FsError, FsOp, SimFs, SimFsStats, Storage, StorageError,
    EIO, ENOSPC,
};

/// Sleeps (virtual time) the latency `fs`'s ops added since the last call.
pub async fn sleep_latency(fs: &mut SimFs) {
    let ns = fs.take_latency_ns();
    if ns > 0 {
        madsim::time::sleep(std::time::Duration::from_nanos(ns)).await;
    }
}
