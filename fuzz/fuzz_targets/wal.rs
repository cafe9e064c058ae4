//! WAL files: recovery and replay never panic; the intact prefix re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_core::wire::fuzz_check::wal(data));
