//! Gossip packets: decoding never panics, what decodes re-encodes to the same bytes,
//! and a pool fed the bytes neither panics nor changes when they are malformed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_core::gossip::fuzz::gossip(data));
