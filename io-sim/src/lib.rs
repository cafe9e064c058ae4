//! The core on madsim.
#[cfg(not(madsim))]
compile_error!("tern-io-sim only builds with --cfg madsim (see .cargo/config.toml; a RUSTFLAGS variable replaces it)");
