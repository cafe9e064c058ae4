//! The core on madsim: simulated network, time and disk around tern-core's
//! `Server`, plus the fault API the chaos harness drives.
//!
//! A run is `run_seed(seed, cfg, || async { ... })`: inside it, build a
//! [`World`] of servers, add [`Client`]s, inject faults, and look at the
//! servers through [`World::with_server`] or an [`Observer`] called after
//! every `handle`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tern_io_sim::{run_seed, SimOptions, World};
//!
//! run_seed(7, madsim::Config::default(), || async {
//!     let world = World::new(SimOptions::default(), 3, |spec| spec.config());
//!     madsim::time::sleep(Duration::from_secs(5)).await;
//!     assert_eq!(world.leaders().len(), 1);
//! });
//! ```
//!
//! Each server is a madsim node whose init task (re-run on restart) opens the
//! node's data dir with the daemon's own code (`tern_storage::DataDir`) on a
//! simulated filesystem ([`fs`]), builds the `Server`, and loops: wait for a
//! datagram, the core's `poll_timeout` or the disk, `handle`, and run the
//! actions through the core's `Outbox`, as the daemon does; a disk task
//! performs each job with the simulated fsync latency meanwhile.
//! Filesystems live in the world, outside the nodes, so a kill loses only
//! what was not synced (and unsynced directory changes).
#[cfg(not(madsim))]
compile_error!("tern-io-sim only builds with --cfg madsim (see .cargo/config.toml; a RUSTFLAGS variable replaces it)");

mod client;
mod client_agent;
pub mod fs;
mod gossip;
mod local_agent;
mod net;
mod node;
mod trace;
mod world;

use std::future::Future;

pub use client::{CallError, Client, ClientCounters};
pub use client_agent::{AttemptLog, AttemptOutcome, ClientAgent};
pub use gossip::GOSSIP_PORT;
pub use local_agent::{Oracle, SimLocalAgent};
pub use net::{
    client_ip, decode_envelope, encode_envelope, server_ip, ClientId, EnvelopeError, Peer,
    CLIENT_PORT, SERVER_PORT,
};
pub use node::now;
pub use world::{
    live_worlds, NodeCounters, NodeStatus, Observation, Observer, ServerSpec, SimOptions, World,
    WorldEvent,
};

/// Runs one simulation with `seed` on a fresh OS thread (madsim keeps its
/// random state per thread, so two seeds must never share one) and returns
/// what `f`'s future returns. A panic inside the simulation is re-raised here.
pub fn run_seed<F, Fut, R>(seed: u64, config: madsim::Config, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let thread = std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .spawn(move || {
            let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, config);
            runtime.block_on(f())
        })
        .expect("spawn a simulation thread");
    match thread.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
