//! The bodies of the fuzz targets: each takes arbitrary bytes, must not
//! panic on its own account, and asserts the decoder's properties. cargo-fuzz
//! calls them from `fuzz/fuzz_targets/`; the normal test suite replays the
//! checked-in corpus in `fuzz/corpus/` through them (`tests/fuzz_corpus.rs`).

/// The `cluster` target (a hostile peer against an in-memory cluster) lives
/// beside the cluster it drives.
pub use crate::fuzz_cluster::cluster;
use crate::wire::call::{decode_call, decode_call_reply, encode_call, encode_call_reply};
use crate::wire::codec::{
    decode_command, decode_message, decode_request, decode_response, encode_command,
    encode_message, encode_request, encode_response,
};
use crate::wire::frame::{decode_frame, encode_frame, FrameDecoder, FrameError, FRAME_HEADER_LEN};
use crate::wire::wal::{encode_record, recover, replay};

/// Frames: byte 0 picks the size limit (0..=63, small so the fuzzer reaches
/// it), byte 1 seeds the sizes of the pieces the rest is pushed in. The
/// streaming decoder must give exactly what a whole-buffer parse gives, for
/// every way of cutting the stream, and the frames must re-encode to the
/// bytes they came from.
pub fn frame(data: &[u8]) {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let max = usize::from(limit & 0x3f);

    let (want, want_end) = parse_frames(stream, max);

    let mut decoder = FrameDecoder::new(max);
    let mut got = Vec::new();
    let mut got_err = None;
    let mut rng = u32::from(*seed) | 1;
    let mut rest = stream;
    while got_err.is_none() {
        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((rng >> 16) as usize % 9).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        decoder.push(piece);
        rest = tail;
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= max, "frame over the limit");
                    got.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    // The error sticks.
                    assert_eq!(decoder.next_frame(), Err(e.clone()));
                    got_err = Some(e);
                    break;
                }
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    assert_eq!(got, want, "streaming and whole-buffer parses differ");
    match want_end {
        Err(e) => assert_eq!(got_err, Some(e)),
        Ok(consumed) => {
            assert_eq!(got_err, None);
            assert_eq!(decoder.buffered_len(), stream.len() - consumed);
            let mut again = Vec::new();
            for f in &got {
                encode_frame(f, &mut again);
            }
            assert_eq!(again, stream[..consumed], "frames re-encode differently");
        }
    }

    if let Ok(payload) = decode_frame(stream, max) {
        assert_eq!(want.len(), 1);
        let mut again = Vec::new();
        encode_frame(payload, &mut again);
        assert_eq!(again, stream);
    }
}

/// A plain reference parse: the frames, then `Ok(bytes consumed)` or the error.
fn parse_frames(bytes: &[u8], max: usize) -> (Vec<Vec<u8>>, Result<usize, FrameError>) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        if rest.len() < FRAME_HEADER_LEN {
            return (frames, Ok(at));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > max {
            let len = len as u64;
            return (frames, Err(FrameError::TooLarge { len, max }));
        }
        if rest.len() - FRAME_HEADER_LEN < len {
            return (frames, Ok(at));
        }
        frames.push(rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec());
        at += FRAME_HEADER_LEN + len;
    }
}

/// Messages (and requests, responses, commands, client calls and their
/// replies): every decoder on the same bytes; whatever decodes must
/// re-encode to exactly those bytes (the codec accepts only canonical forms).
pub fn message(data: &[u8]) {
    if let Ok(m) = decode_message(data) {
        // A version-1 message (no sender address) re-encodes as version 1.
        let again = if data[0] == super::codec::CODEC_VERSION {
            super::codec::encode_message_v1(&m)
        } else {
            encode_message(&m)
        };
        assert_eq!(again, data, "message re-encodes differently");
    }
    if let Ok(r) = decode_request(data) {
        assert_eq!(encode_request(&r), data, "request re-encodes differently");
    }
    if let Ok(r) = decode_response(data) {
        assert_eq!(encode_response(&r), data, "response re-encodes differently");
    }
    if let Ok(c) = decode_command(data) {
        assert_eq!(encode_command(&c), data, "command re-encodes differently");
    }
    if let Ok(c) = decode_call(data) {
        assert_eq!(encode_call(&c), data, "call re-encodes differently");
    }
    if let Ok(r) = decode_call_reply(data) {
        assert_eq!(
            encode_call_reply(&r),
            data,
            "call reply re-encodes differently"
        );
    }
}

/// WAL files. Byte 0 picks the mode: even, the rest is the file as is; odd,
/// the rest is `[len: u8][payload]` pieces, each written as a record with a
/// correct header and checksum, so the fuzzer reaches the payload decoder and
/// replay rather than bouncing off checksums; what is left over after the
/// last whole piece is appended raw, as a tail.
///
/// Recovery and replay must not panic; the intact prefix must re-encode to
/// the bytes it came from and recover again to the same records, clean.
pub fn wal(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        checksummed(rest)
    };
    let Ok(rec) = recover(&file) else {
        return;
    };
    assert_eq!(rec.records.len(), rec.offsets.len());
    match rec.torn_tail {
        Some(t) => {
            assert_eq!(t.offset, rec.valid_len as u64);
            assert_eq!(t.offset + t.len, file.len() as u64);
            assert!(t.len > 0);
        }
        None => assert_eq!(rec.valid_len, file.len()),
    }

    let mut again = Vec::new();
    for (r, &offset) in rec.records.iter().zip(&rec.offsets) {
        assert_eq!(offset, again.len() as u64);
        encode_record(r, &mut again);
    }
    assert_eq!(
        again,
        file[..rec.valid_len],
        "records re-encode differently"
    );
    let clean = recover(&again).expect("an intact prefix recovers");
    assert_eq!(clean.records, rec.records);
    assert_eq!(clean.torn_tail, None);

    if let Ok(d) = replay(&rec) {
        for w in d.entries.windows(2) {
            let next = w[0].index.0.checked_add(1);
            assert_eq!(Some(w[1].index.0), next, "replayed log has a gap");
        }
    }
}

/// Builds a file from `[len: u8][payload]` pieces, each checksummed.
fn checksummed(mut rest: &[u8]) -> Vec<u8> {
    let mut file = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if tail.len() < len {
            break;
        }
        let (payload, tail) = tail.split_at(len);
        file.extend_from_slice(&(len as u32).to_le_bytes());
        file.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        file.extend_from_slice(payload);
        rest = tail;
    }
    file.extend_from_slice(rest);
    file
}

/// The ClientHello peek: byte 0 picks a cut point and a record size, the rest
/// is what a connection sent. The answer must be total and stable: a prefix
/// answers the same or needs more (and then never asks for more than a hello
/// found in the whole takes); bytes after a final answer change nothing. A
/// hello read back from its own records, from the same hello cut into other
/// records, and from one built anew with the names it gave, gives the same
/// names (which round-trip: the server name is a lowercase DNS name).
pub fn client_hello(data: &[u8]) {
    let [knob, bytes @ ..] = data else {
        return;
    };
    check_client_hello(*knob, bytes);
}

fn check_client_hello(knob: u8, bytes: &[u8]) {
    use crate::wire::client_hello::{
        build_client_hello, is_dns_name, peek_client_hello, records, Malformed, Peek,
        CLIENT_HELLO_BYTES_MAX, TLS_RECORD_HEADER_LEN,
    };
    let whole = peek_client_hello(bytes);
    assert_eq!(
        peek_client_hello(bytes),
        whole,
        "not a function of the bytes"
    );

    // Two chunks: the first part alone needs more or says the same.
    let cut = bytes.len() * usize::from(knob) / 255;
    match peek_client_hello(&bytes[..cut]) {
        Peek::NeedMore { at_least } => {
            assert!(at_least > cut, "needs {at_least} bytes with {cut}");
            assert!(at_least <= CLIENT_HELLO_BYTES_MAX, "needs {at_least}");
            if let Peek::Hello(h) = &whole {
                assert!(
                    at_least <= h.bytes,
                    "asked for {at_least}, the hello took {}",
                    h.bytes
                );
            }
        }
        early => assert_eq!(early, whole, "a prefix of {cut} answered otherwise"),
    }
    match &whole {
        Peek::NeedMore { at_least } => assert!(*at_least > bytes.len()),
        _ => {
            // More bytes after a final answer change nothing.
            let mut more = bytes.to_vec();
            more.extend_from_slice(&[22, 3, 3, 0, 1, 1, 0]);
            assert_eq!(
                peek_client_hello(&more),
                whole,
                "more bytes changed the answer"
            );
        }
    }
    let Peek::Hello(hello) = whole else {
        return;
    };
    assert!(hello.bytes <= bytes.len());
    assert_eq!(
        peek_client_hello(&bytes[..hello.bytes]),
        Peek::Hello(hello.clone()),
        "the hello's own records read otherwise"
    );
    if let Some(sni) = &hello.sni {
        assert!(
            is_dns_name(sni) && !sni.bytes().any(|c| c.is_ascii_uppercase()),
            "{sni:?}"
        );
    }
    assert!(hello.alpn.iter().all(|p| !p.is_empty() && p.len() <= 255));

    // The same handshake bytes in records of another size.
    let mut handshake = Vec::new();
    let mut rest = &bytes[..hello.bytes];
    while rest.len() >= TLS_RECORD_HEADER_LEN {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        handshake.extend_from_slice(&rest[TLS_RECORD_HEADER_LEN..TLS_RECORD_HEADER_LEN + len]);
        rest = &rest[TLS_RECORD_HEADER_LEN + len..];
    }
    let record_len = usize::from(knob) * 64 + 1;
    let recut = records(&handshake, record_len);
    match peek_client_hello(&recut) {
        Peek::Hello(h) => {
            assert_eq!((&h.sni, &h.alpn), (&hello.sni, &hello.alpn), "recut");
            assert_eq!(h.bytes, recut.len());
        }
        Peek::Malformed(Malformed::TooLarge) => assert!(recut.len() > CLIENT_HELLO_BYTES_MAX),
        other => panic!("the hello cut into {record_len}-byte records: {other:?}"),
    }

    // Round trip: a hello built with what was read reads the same.
    let alpn: Vec<&[u8]> = hello.alpn.iter().map(Vec::as_slice).collect();
    let total: usize = alpn.iter().map(|p| p.len() + 1).sum();
    if total < 60_000 {
        let built = build_client_hello(hello.sni.as_deref(), &alpn, 16_384);
        match peek_client_hello(&built) {
            Peek::Hello(h) => assert_eq!((h.sni, h.alpn), (hello.sni, hello.alpn), "rebuilt"),
            other => panic!("the rebuilt hello: {other:?}"),
        }
    }
}

/// The server port's preamble (`wire::conn`): byte 0 is the port's TLS
/// configuration (bit 0 a certificate, bit 1 mutual TLS, bit 2
/// `verify_incoming`), then the connection's bytes. The first byte is
/// decided; after `RPC_TLS` the next byte is the inner type byte; a
/// ClientHello is peeked and each protocol it offers decided as if the
/// handshake settled on it. Checked: what `verify_incoming` forbids is never
/// served, a ClientHello goes to TLS whenever the port can answer it, TLS is
/// never nested, and only the two Tern protocols are ever served.
pub fn sniff(data: &[u8]) {
    use crate::wire::client_hello::{peek_client_hello, Peek};
    use crate::wire::conn::{
        alpn_step, classify_first_byte, first_step, inner_step, ConnKind, FirstStep, PortTls,
        Protocol, Refusal, ALPN_RAFT, ALPN_RPC, RPC_TLS, RPC_TLS_INSECURE,
    };
    let [flags, stream @ ..] = data else {
        return;
    };
    let tls = PortTls {
        rpc_tls: flags & 1 != 0,
        native_tls: flags & 2 != 0,
        verify_incoming: flags & 4 != 0,
    };
    let Some(&first) = stream.first() else {
        return;
    };
    let kind = classify_first_byte(first);
    let step = first_step(tls, first);
    match &step {
        FirstStep::NativeTls => assert!(tls.native_tls && kind == ConnKind::NativeTls),
        FirstStep::UpgradeTls => assert!(tls.rpc_tls && first == RPC_TLS),
        FirstStep::Serve(p) => {
            assert!(
                !tls.verify_incoming,
                "plaintext served under verify_incoming"
            );
            let want = match p {
                Protocol::Raft => ConnKind::Raft,
                Protocol::Multiplex => ConnKind::Multiplex,
            };
            assert_eq!(kind, want);
        }
        FirstStep::Refuse(_) => {}
    }
    if kind == ConnKind::NativeTls && tls.native_tls {
        assert_eq!(step, FirstStep::NativeTls, "a ClientHello kept from TLS");
    }
    if tls.verify_incoming && kind != ConnKind::UpgradeTls && kind != ConnKind::NativeTls {
        assert_eq!(step, FirstStep::Refuse(Refusal::Plaintext(first)));
    }
    match step {
        FirstStep::UpgradeTls => {
            let Some(&inner) = stream.get(1) else {
                return;
            };
            match inner_step(inner) {
                Ok(Protocol::Raft) => assert_eq!(classify_first_byte(inner), ConnKind::Raft),
                Ok(Protocol::Multiplex) => {
                    assert_eq!(classify_first_byte(inner), ConnKind::Multiplex)
                }
                Err(Refusal::TlsInTls(b)) => {
                    assert!(b == inner && (inner == RPC_TLS || inner == RPC_TLS_INSECURE))
                }
                Err(Refusal::NotServed(b, k)) => {
                    assert_eq!((b, k), (inner, classify_first_byte(inner)));
                    assert!(inner != RPC_TLS && inner != RPC_TLS_INSECURE, "TLS in TLS");
                }
                Err(other) => panic!("inner byte {inner}: {other:?}"),
            }
        }
        FirstStep::NativeTls => {
            let peek = peek_client_hello(stream);
            if first != 22 {
                assert!(matches!(peek, Peek::NotTls(_)), "{first}: {peek:?}");
            }
            if let Peek::Hello(h) = peek {
                for p in h.alpn.iter().map(|p| Some(p.as_slice())).chain([None]) {
                    match alpn_step(p) {
                        Ok(Protocol::Raft) => assert_eq!(p, Some(ALPN_RAFT)),
                        Ok(Protocol::Multiplex) => assert_eq!(p, Some(ALPN_RPC)),
                        Err(Refusal::ReservedAlpn(r)) => assert_eq!(Some(r.as_slice()), p),
                        Err(Refusal::NoAlpn) => assert_eq!(p, None),
                        Err(other) => panic!("ALPN {p:?}: {other:?}"),
                    }
                }
            }
            check_client_hello(*flags, stream);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_pass() {
        for data in [
            &[][..],
            &[0],
            &[63, 5, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 0, 0],
            &[0, 0, 0, 0, 0, 9],
            &[1, 3, 1, 0, 0],
        ] {
            frame(data);
            message(data);
            wal(data);
        }
    }
}
