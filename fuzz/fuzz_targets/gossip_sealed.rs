//! Sealed gossip packets: the AES-GCM opener and every decoder behind it
//! (keyring operations included) never panic; what does not open changes
//! nothing and is answered with nothing; seal then open gives the bytes back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_core::gossip::fuzz::sealed(data));
