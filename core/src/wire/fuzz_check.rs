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
