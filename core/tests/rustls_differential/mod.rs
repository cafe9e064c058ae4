//! The ClientHello peek against rustls' server side, on the same bytes: when
//! `rustls::server::Acceptor` accepts a hello, the peek must find the same
//! server name and ALPN protocols, or refuse it for one of the reasons it is
//! deliberately stricter for (`Malformed::stricter_than_rustls`,
//! `NotTls::stricter_than_rustls`). A gateway
//! that read another name than the backend will see is how SNI routing goes
//! wrong. Shared by `client_hello_rustls.rs`, the corpus replay and the
//! `client_hello` fuzz target.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tern_core::wire::client_hello::{peek_client_hello, Peek};

/// What rustls read from a hello it accepted: server name and protocols.
pub type RustlsHello = (Option<String>, Vec<Vec<u8>>);

/// Feed `data` to a fresh `Acceptor`; `Some` if it accepts a ClientHello.
pub fn rustls_accepts(data: &[u8]) -> Option<RustlsHello> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    loop {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let sni = hello.server_name().map(str::to_owned);
                let alpn = hello
                    .alpn()
                    .map(|names| names.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default();
                return Some((sni, alpn));
            }
            Err(_) => return None,
        }
    }
}

/// The differential check; returns what rustls accepted, if anything.
pub fn differential(data: &[u8]) -> Option<RustlsHello> {
    let accepted = rustls_accepts(data)?;
    match peek_client_hello(data) {
        Peek::Hello(h) => {
            assert_eq!(
                (&h.sni, &h.alpn),
                (&accepted.0, &accepted.1),
                "the peek and rustls read different hellos"
            );
        }
        Peek::Malformed(m) if m.stricter_than_rustls() => {}
        Peek::NotTls(n) if n.stricter_than_rustls() => {}
        other => panic!("rustls accepted {accepted:?}; the peek says {other:?}"),
    }
    Some(accepted)
}

#[allow(dead_code)] // not every includer writes hellos
/// The bytes a rustls client sends first, for this name and these protocols.
pub fn rustls_hello(name: &str, alpn: &[&[u8]], tls12_only: bool, sni: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let mut config = builder
        .expect("ring supports these versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni;
    let name = ServerName::try_from(name.to_string()).expect("a valid server name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

#[allow(dead_code)]
/// Real hellos with the names and protocols Tern uses, also the
/// `client_hello` and `sniff` seeds (`fuzz_corpus.rs`): (name, bytes).
pub fn real_hellos() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "raft",
            rustls_hello("node1.server.dc1.consul", &[b"tern/raft"], false, true),
        ),
        (
            "rpc",
            rustls_hello(
                "server.dc1.consul",
                &[b"tern/rpc", b"tern/raft"],
                false,
                true,
            ),
        ),
        (
            "tls12",
            rustls_hello("Server.DC1.Consul", &[b"tern/rpc"], true, true),
        ),
        (
            "no-sni",
            rustls_hello("server.dc1.consul", &[], false, false),
        ),
        ("ip", rustls_hello("10.0.0.1", &[b"h2"], false, true)),
    ]
}
