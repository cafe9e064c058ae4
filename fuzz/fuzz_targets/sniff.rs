//! The server port's preamble: the first byte, RPC-TLS's inner type byte, a
//! ClientHello's ALPN protocols, under every TLS configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_core::wire::fuzz_check::sniff(data));
