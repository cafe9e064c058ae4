//! The ClientHello peek on hand-built hellos (RFC 8446 §4.1.2, RFC 6066 §3,
//! RFC 7301 §3.1). Real hellos from rustls' client are in
//! `core/tests/client_hello_rustls.rs`.

use super::*;

fn hello(peek: Peek) -> ClientHello {
    match peek {
        Peek::Hello(h) => h,
        other => panic!("not a hello: {other:?}"),
    }
}

/// A hello whose extensions block is exactly `extensions` (each already
/// encoded as type, length, data), in one record.
fn with_extensions(extensions: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.push(0);
    push_vec_u16(&mut body, &[0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    push_vec_u16(&mut body, extensions);
    handshake(&body)
}

fn handshake(body: &[u8]) -> Vec<u8> {
    let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
    hs.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    hs.extend_from_slice(body);
    records(&hs, TLS_RECORD_PLAINTEXT_MAX)
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_extension(&mut out, kind, data);
    out
}

fn sni_entries(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        push_vec_u16(&mut list, name);
    }
    let mut data = Vec::new();
    push_vec_u16(&mut data, &list);
    extension(EXTENSION_SERVER_NAME, &data)
}

fn malformed(bytes: &[u8]) -> Malformed {
    match peek_client_hello(bytes) {
        Peek::Malformed(m) => m,
        other => panic!("not malformed: {other:?}"),
    }
}

#[test]
fn a_hello_in_one_record_gives_its_server_name_and_protocols() {
    let bytes = build_client_hello(
        Some("Node1.Server.DC1.consul"),
        &[b"tern/raft", b"tern/rpc"],
        TLS_RECORD_PLAINTEXT_MAX,
    );
    let h = hello(peek_client_hello(&bytes));
    assert_eq!(h.sni.as_deref(), Some("node1.server.dc1.consul"));
    assert_eq!(h.alpn, vec![b"tern/raft".to_vec(), b"tern/rpc".to_vec()]);
    assert_eq!(h.bytes, bytes.len());
}

#[test]
fn a_hello_split_across_many_records_reads_the_same() {
    let whole = hello(peek_client_hello(&build_client_hello(
        Some("server.dc1.consul"),
        &[b"tern/rpc"],
        TLS_RECORD_PLAINTEXT_MAX,
    )));
    for record_len in [1, 2, 3, 4, 5, 7, 40, 100] {
        let bytes = build_client_hello(Some("server.dc1.consul"), &[b"tern/rpc"], record_len);
        let h = hello(peek_client_hello(&bytes));
        assert_eq!((h.sni, h.alpn), (whole.sni.clone(), whole.alpn.clone()));
        assert_eq!(h.bytes, bytes.len(), "record_len {record_len}");
    }
}

#[test]
fn every_prefix_needs_more_and_never_overshoots_the_end() {
    for record_len in [1, 3, 50, TLS_RECORD_PLAINTEXT_MAX] {
        let bytes = build_client_hello(Some("a.b"), &[b"h2"], record_len);
        for n in 0..bytes.len() {
            match peek_client_hello(&bytes[..n]) {
                Peek::NeedMore { at_least } => {
                    assert!(at_least > n, "{record_len}/{n}: {at_least}");
                    assert!(at_least <= bytes.len(), "{record_len}/{n}: {at_least}");
                }
                other => panic!("prefix {n} of {record_len}-byte records: {other:?}"),
            }
        }
    }
}

#[test]
fn bytes_after_the_hello_records_are_not_read() {
    let mut bytes = build_client_hello(Some("a.b"), &[], 100);
    let end = bytes.len();
    bytes.extend_from_slice(&[23, 3, 3, 0, 1, 0xff, 0xff]);
    assert_eq!(hello(peek_client_hello(&bytes)).bytes, end);
}

#[test]
fn other_protocols_are_not_tls() {
    assert_eq!(
        peek_client_hello(b"GET / HTTP/1.1\r\n"),
        Peek::NotTls(NotTls::ContentType(b'G'))
    );
    // Tern's own first bytes: Raft, RPC-TLS, multiplex.
    for b in [1u8, 3, 4] {
        assert_eq!(
            peek_client_hello(&[b]),
            Peek::NotTls(NotTls::ContentType(b))
        );
    }
    assert_eq!(
        peek_client_hello(&[22, 2]),
        Peek::NotTls(NotTls::Version(2))
    );
    assert_eq!(peek_client_hello(&[]), Peek::NeedMore { at_least: 50 });
}

#[test]
fn records_break_the_rules_of_rfc_8446_section_5_1() {
    assert_eq!(malformed(&[22, 3, 1, 0, 0]), Malformed::EmptyRecord);
    assert_eq!(
        malformed(&[22, 3, 1, 0x40, 1]),
        Malformed::RecordTooLong(16385)
    );
    // An alert record in the middle of the hello.
    let mut bytes = build_client_hello(Some("a.b"), &[], 10);
    bytes[15] = 21;
    assert_eq!(malformed(&bytes), Malformed::Interleaved(21));
    let mut bytes = build_client_hello(Some("a.b"), &[], 10);
    bytes[16] = 2;
    assert_eq!(malformed(&bytes), Malformed::RecordVersion(2));
    // A ServerHello (type 2) is no ClientHello.
    assert_eq!(
        malformed(&[22, 3, 3, 0, 1, 2]),
        Malformed::NotClientHello(2)
    );
}

#[test]
fn a_hello_that_cannot_end_within_the_cap_is_refused_before_it_is_read() {
    // Declared 70,000 bytes: refused at its header.
    assert_eq!(
        malformed(&[22, 3, 1, 0, 4, 1, 0x01, 0x11, 0x70]),
        Malformed::TooLarge
    );
    // 60,000 declared, but sent a byte a record: the records' headers push
    // its end past the cap once enough of it has come.
    let mut bytes = Vec::new();
    let mut hs = vec![1u8, 0, 0xea, 0x60];
    hs.resize(12_000, 0);
    bytes.extend(records(&hs, 1));
    match peek_client_hello(&bytes) {
        Peek::Malformed(Malformed::TooLarge) => {}
        other => panic!("{other:?}"),
    }
    // The same in one record each of the largest size fits.
    let mut hs = vec![1u8, 0, 0xea, 0x60];
    hs.resize(1000, 0);
    let bytes = records(&hs, TLS_RECORD_PLAINTEXT_MAX);
    assert!(
        matches!(peek_client_hello(&bytes), Peek::NeedMore { at_least } if at_least <= CLIENT_HELLO_BYTES_MAX)
    );
}

#[test]
fn a_hello_too_short_for_its_fields_is_malformed() {
    assert_eq!(
        malformed(&handshake(&[3, 3, 0])),
        Malformed::Length("ClientHello")
    );
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.push(33); // a session id longer than 32
    body.extend_from_slice(&[0; 40]);
    assert_eq!(
        malformed(&handshake(&body)),
        Malformed::Length("legacy_session_id")
    );
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 3, 0x13, 0x01, 0x13, 1, 0]);
    assert_eq!(
        malformed(&handshake(&body)),
        Malformed::Length("cipher_suites")
    );
    // The extensions' length runs past the hello.
    let mut bytes = with_extensions(&extension(99, b"x"));
    let n = bytes.len();
    bytes[n - 6] = 0x20;
    assert_eq!(malformed(&bytes), Malformed::Length("extensions"));
}

#[test]
fn a_hello_without_extensions_asks_for_nothing() {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    let h = hello(peek_client_hello(&handshake(&body)));
    assert_eq!((h.sni, h.alpn), (None, vec![]));
}

#[test]
fn trailing_bytes_inside_the_hello_or_its_record_are_refused() {
    let mut bytes = with_extensions(&extension(99, b""));
    // One byte more in the record, counted in the record's length only.
    bytes.push(0);
    bytes[4] += 1;
    assert_eq!(
        malformed(&bytes),
        Malformed::Trailing("ClientHello's record")
    );
    // One byte more in the hello's body.
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0, 0, 0, 9]);
    assert_eq!(
        malformed(&handshake(&body)),
        Malformed::Trailing("ClientHello")
    );
}

#[test]
fn an_extension_sent_twice_is_refused() {
    let mut exts = extension(99, b"a");
    exts.extend(extension(99, b"b"));
    assert_eq!(
        malformed(&with_extensions(&exts)),
        Malformed::DuplicateExtension(99)
    );
    let mut exts = sni_entries(&[(0, b"a.b")]);
    exts.extend(sni_entries(&[(0, b"c.d")]));
    assert_eq!(
        malformed(&with_extensions(&exts)),
        Malformed::DuplicateExtension(0)
    );
}

#[test]
fn server_names_follow_rfc_6066() {
    let sni = |entries: &[(u8, &[u8])]| peek_client_hello(&with_extensions(&sni_entries(entries)));
    let refused = |e| Peek::Malformed(Malformed::ServerName(e));
    assert_eq!(
        hello(sni(&[(0, b"Web.Service_1.x")])).sni.as_deref(),
        Some("web.service_1.x")
    );
    // IP literals are not host names: as rustls, treated as no name.
    assert_eq!(hello(sni(&[(0, b"10.0.0.1")])).sni, None);
    assert_eq!(hello(sni(&[(0, b"::1")])).sni, None);
    assert_eq!(sni(&[(0, b"a.b.")]), refused(ServerNameError::TrailingDot));
    assert_eq!(
        sni(&[(0, b"a.b"), (0, b"c.d")]),
        refused(ServerNameError::TwoHostNames)
    );
    assert_eq!(sni(&[(1, b"a.b")]), refused(ServerNameError::NameType(1)));
    assert_eq!(sni(&[(0, b"")]), refused(ServerNameError::Empty));
    assert_eq!(sni(&[]), refused(ServerNameError::Empty));
    for bad in [
        &b"a..b"[..],
        b"-a.b",
        b"a-.b",
        b"a b",
        b"1.2.3",
        b"a.0x1f",
        b"\xff.b",
    ] {
        assert_eq!(
            sni(&[(0, bad)]),
            refused(ServerNameError::Invalid),
            "{bad:?}"
        );
    }
    let long = format!("{}.b", "a".repeat(64));
    assert_eq!(
        sni(&[(0, long.as_bytes())]),
        refused(ServerNameError::Invalid)
    );
}

#[test]
fn alpn_follows_rfc_7301() {
    let alpn = |names: &[u8]| {
        let mut data = Vec::new();
        push_vec_u16(&mut data, names);
        peek_client_hello(&with_extensions(&extension(EXTENSION_ALPN, &data)))
    };
    assert_eq!(
        hello(alpn(b"\x02h2\x08http/1.1")).alpn,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(
        alpn(b"\x02h2\x00"),
        Peek::Malformed(Malformed::EmptyProtocolName)
    );
    assert_eq!(
        alpn(b""),
        Peek::Malformed(Malformed::Length("protocol_name_list"))
    );
    assert_eq!(
        alpn(b"\x05h2"),
        Peek::Malformed(Malformed::Length("ProtocolName"))
    );
}

#[test]
fn an_answer_once_given_does_not_change_with_more_bytes() {
    let mut cases = vec![
        build_client_hello(Some("a.b"), &[b"x"], 9),
        vec![22, 3, 1, 0, 0, 1, 2, 3],
        vec![22, 3, 3, 0, 1, 2, 9, 9],
        b"GET /".to_vec(),
    ];
    let mut bad = build_client_hello(Some("a.b"), &[b"x"], 9);
    bad[30] ^= 0xff;
    cases.push(bad);
    for bytes in cases {
        let mut first_final = None;
        for n in 0..=bytes.len() {
            let peek = peek_client_hello(&bytes[..n]);
            if let Peek::NeedMore { .. } = peek {
                assert!(
                    first_final.is_none(),
                    "{bytes:?}: needs more after {first_final:?}"
                );
            } else if let Some(f) = &first_final {
                assert_eq!(&peek, f, "{bytes:?} at {n}");
            } else {
                first_final = Some(peek);
            }
        }
    }
}
