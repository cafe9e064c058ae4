//! Seeded chaos runs and named scenarios for tern-core on madsim.
//!
//! A run is seed → [`options::Options`] (printed with the seed) → a
//! [`tern_io_sim::World`] → a safety phase with faults → a liveness phase
//! (heal, then require a leader and a committed write within a bound) →
//! checks: Raft's safety properties after every step ([`checker`]) and the
//! clients' KV history linearizable ([`linearizability`]).
#[cfg(not(madsim))]
compile_error!("sim-tests only builds with --cfg madsim (see .cargo/config.toml; a RUSTFLAGS variable replaces it)");

pub mod anti_entropy;
pub mod checker;
pub mod linearizability;
pub mod locks;
pub mod membership;
pub mod nemesis;
pub mod options;
pub mod run;
pub mod workload;

pub use nemesis::Scenario;
pub use options::{Bug, Options};
pub use run::{run, Outcome};
