//! The ClientHello peek (`tern_core::wire::client_hello`) on real hellos,
//! written by rustls' client with the settings Tern's servers and clients use
//! (`io-tokio/src/tls.rs`), and checked against rustls' server side.

mod rustls_differential;

use tern_core::wire::client_hello::{peek_client_hello, records, ClientHello, Peek};

fn peeked(bytes: &[u8]) -> ClientHello {
    match peek_client_hello(bytes) {
        Peek::Hello(h) => h,
        other => panic!("{other:?}"),
    }
}

#[test]
fn real_hellos_give_what_the_client_asked_for() {
    let want: [(Option<&str>, Vec<&[u8]>); 5] = [
        (Some("node1.server.dc1.consul"), vec![b"tern/raft"]),
        (Some("server.dc1.consul"), vec![b"tern/rpc", b"tern/raft"]),
        // Lowercased, as rustls' server sees it.
        (Some("server.dc1.consul"), vec![b"tern/rpc"]),
        (None, vec![]),
        // rustls sends no server_name for an IP address (RFC 6066).
        (None, vec![b"h2"]),
    ];
    for ((name, bytes), (sni, alpn)) in rustls_differential::real_hellos().into_iter().zip(want) {
        let h = peeked(&bytes);
        assert_eq!(h.sni.as_deref(), sni, "{name}");
        assert_eq!(
            h.alpn,
            alpn.iter().map(|p| p.to_vec()).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(h.bytes, bytes.len(), "{name}: one flight, one record");
        assert!(
            rustls_differential::differential(&bytes).is_some(),
            "{name}: rustls accepts its own hello"
        );
    }
}

/// The handshake bytes of a hello in records, without the record headers.
fn handshake_bytes(mut records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while records.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([records[3], records[4]]));
        out.extend_from_slice(&records[5..5 + len]);
        records = &records[5 + len..];
    }
    out
}

#[test]
fn a_real_hello_cut_into_small_records_reads_the_same_here_and_in_rustls() {
    for (name, bytes) in rustls_differential::real_hellos() {
        let whole = peeked(&bytes);
        for record_len in [1, 2, 5, 64, 300] {
            let cut = records(&handshake_bytes(&bytes), record_len);
            let h = peeked(&cut);
            assert_eq!(
                (&h.sni, &h.alpn),
                (&whole.sni, &whole.alpn),
                "{name}/{record_len}"
            );
            assert_eq!(h.bytes, cut.len());
            assert!(
                rustls_differential::differential(&cut).is_some(),
                "{name}/{record_len}: rustls accepts it cut up as well"
            );
        }
    }
}

#[test]
fn a_hello_the_peek_refuses_as_stricter_is_one_rustls_takes() {
    // A trailing dot: RFC 6066 forbids it, rustls takes it; the peek is
    // stricter, and the differential check allows exactly that.
    let bytes = tern_core::wire::client_hello::build_client_hello(Some("a.b."), &[], 1000);
    assert!(matches!(peek_client_hello(&bytes), Peek::Malformed(m) if m.stricter_than_rustls()));
    assert!(rustls_differential::differential(&bytes).is_some());
}
