//! Frames: the streaming decoder, fed in random pieces, agrees with a whole-buffer parse and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_core::wire::fuzz_check::frame(data));
