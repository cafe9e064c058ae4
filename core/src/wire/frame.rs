//! Length-prefixed frames: a 4-byte big-endian payload length, then the payload.
//!
//! Used for messages on a server-port connection and for gossip packets
//! carried through a mesh gateway. The length is checked against the caller's
//! `frame_bytes_max` as soon as the header is in, before any buffer for the
//! payload is set aside, so a peer cannot make us allocate by lying about it.

use core::fmt;

/// Bytes in a frame header: the payload length as a big-endian `u32`.
pub const FRAME_HEADER_LEN: usize = 4;

/// Why bytes are not a frame. Every variant is the peer's fault: the caller
/// closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces a payload longer than the limit.
    TooLarge { len: u64, max: usize },
    /// The bytes end inside the header or the payload (whole-buffer decode only).
    Truncated { needed: usize, available: usize },
    /// Bytes follow the one frame (whole-buffer decode only).
    TrailingBytes(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the limit of {max}")
            }
            FrameError::Truncated { needed, available } => {
                write!(f, "frame truncated: needs {needed} bytes, has {available}")
            }
            FrameError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends `payload` to `out` as one frame.
///
/// Panics if the payload is longer than `u32::MAX` bytes: callers encode only
/// what fits their own `frame_bytes_max`, so a longer payload is a bug here,
/// not bad input.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("frame payload longer than u32::MAX");
    out.reserve(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads the payload length from the first `FRAME_HEADER_LEN` bytes.
fn header_len(header: &[u8]) -> u64 {
    let mut len = [0u8; FRAME_HEADER_LEN];
    len.copy_from_slice(&header[..FRAME_HEADER_LEN]);
    u64::from(u32::from_be_bytes(len))
}

fn check_len(len: u64, frame_bytes_max: usize) -> Result<usize, FrameError> {
    match usize::try_from(len) {
        Ok(n) if n <= frame_bytes_max => Ok(n),
        _ => Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        }),
    }
}

/// Decodes a buffer that holds exactly one frame and nothing else.
pub fn decode_frame(bytes: &[u8], frame_bytes_max: usize) -> Result<&[u8], FrameError> {
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN,
            available: bytes.len(),
        });
    }
    let len = check_len(header_len(bytes), frame_bytes_max)?;
    let body = &bytes[FRAME_HEADER_LEN..];
    match body.len().cmp(&len) {
        core::cmp::Ordering::Less => Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN + len,
            available: bytes.len(),
        }),
        core::cmp::Ordering::Greater => Err(FrameError::TrailingBytes(body.len() - len)),
        core::cmp::Ordering::Equal => Ok(body),
    }
}

/// A streaming frame decoder: push bytes as they arrive, take whole frames out.
///
/// It buffers what it is given; a driver reads a bounded chunk, pushes it, and
/// drains `next_frame` until `Ok(None)`, so the buffer holds at most one
/// partial frame (at most `frame_bytes_max + FRAME_HEADER_LEN` bytes) plus one
/// chunk. After an error the decoder keeps returning it: the stream has lost
/// its framing and the caller closes the connection.
#[derive(Debug)]
pub struct FrameDecoder {
    frame_bytes_max: usize,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames.
    consumed: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        FrameDecoder {
            frame_bytes_max,
            buf: Vec::new(),
            consumed: 0,
            failed: None,
        }
    }

    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Drop what was handed out before growing, so the buffer stays bounded.
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet returned in a frame.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next whole frame's payload. `Ok(None)` means more bytes are
    /// needed. `Err` means the header announced a payload over the limit:
    /// found as soon as the header is in, before the payload is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pending = &self.buf[self.consumed..];
        if pending.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = match check_len(header_len(pending), self.frame_bytes_max) {
            Ok(len) => len,
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.consumed = 0;
                return Err(e);
            }
        };
        if pending.len() - FRAME_HEADER_LEN < len {
            return Ok(None);
        }
        let payload = pending[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.consumed += FRAME_HEADER_LEN + len;
        if self.consumed == self.buf.len() {
            self.buf.clear();
            self.consumed = 0;
        }
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out);
        }
        out
    }

    #[test]
    fn frames_split_across_pushes_come_out_whole() {
        let bytes = framed(&[b"hello", b"", b"world!"]);
        for split in 1..=bytes.len() {
            let mut d = FrameDecoder::new(64);
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, vec![b"hello".to_vec(), vec![], b"world!".to_vec()]);
            assert_eq!(d.buffered_len(), 0);
        }
    }

    #[test]
    fn a_zero_length_frame_is_an_empty_payload() {
        let bytes = framed(&[b""]);
        assert_eq!(bytes, [0, 0, 0, 0]);
        let mut d = FrameDecoder::new(0);
        d.push(&bytes);
        assert_eq!(d.next_frame(), Ok(Some(vec![])));
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(decode_frame(&bytes, 0), Ok(&[][..]));
    }

    #[test]
    fn an_oversized_length_fails_on_the_header_alone() {
        // Only the header has arrived; the decoder must refuse without waiting
        // for (or reserving room for) four gigabytes.
        let mut d = FrameDecoder::new(16);
        d.push(&[0xff, 0xff]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0xff, 0xff]);
        let err = FrameError::TooLarge {
            len: u64::from(u32::MAX),
            max: 16,
        };
        assert_eq!(d.next_frame(), Err(err.clone()));
        assert!(d.buf.capacity() < 64, "payload buffer was reserved");
        // The error sticks: the stream has lost its framing.
        d.push(&framed(&[b"ok"]));
        assert_eq!(d.next_frame(), Err(err));
    }

    #[test]
    fn the_limit_is_inclusive() {
        let bytes = framed(&[&[7u8; 16]]);
        assert_eq!(decode_frame(&bytes, 16), Ok(&[7u8; 16][..]));
        assert_eq!(
            decode_frame(&bytes, 15),
            Err(FrameError::TooLarge { len: 16, max: 15 })
        );
        let mut d = FrameDecoder::new(15);
        d.push(&bytes);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn decode_frame_rejects_trailing_and_truncated_bytes() {
        let mut bytes = framed(&[b"abc"]);
        bytes.push(0);
        assert_eq!(decode_frame(&bytes, 64), Err(FrameError::TrailingBytes(1)));
        bytes.pop();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode_frame(&bytes[..cut], 64),
                    Err(FrameError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        assert_eq!(decode_frame(&bytes, 64), Ok(&b"abc"[..]));
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = FrameError::TooLarge { len: 9, max: 8 };
        assert_eq!(e.to_string(), "frame of 9 bytes is over the limit of 8");
    }
}
