//! The ClientHello peek: total and stable under more bytes, hellos re-read
//! the same from other records and round-trip; and, differentially, whenever
//! rustls' server accepts the bytes as a ClientHello the peek finds the same
//! server name and ALPN protocols (or refuses for a reason it is stricter for).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../core/tests/rustls_differential/mod.rs"]
mod rustls_differential;

fuzz_target!(|data: &[u8]| {
    tern_core::wire::fuzz_check::client_hello(data);
    if let [_, bytes @ ..] = data {
        rustls_differential::differential(bytes);
    }
});
