//! Messages, requests, responses, commands, client calls and their replies: decoding never panics; what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_core::wire::fuzz_check::message(data));
