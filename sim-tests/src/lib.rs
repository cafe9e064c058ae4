//! Seeded chaos runs and named scenarios.
#[cfg(not(madsim))]
compile_error!("sim-tests only builds with --cfg madsim (see .cargo/config.toml; a RUSTFLAGS variable replaces it)");
pub mod linearizability;
