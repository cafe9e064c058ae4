//! A hostile peer against an in-memory cluster of three servers: no panic, a refused message changes nothing, and (safe mode) Raft's safety properties hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_core::wire::fuzz_check::cluster(data));
