//! The message codec: one version byte, then postcard.
//!
//! An encoding is `[CODEC_VERSION][postcard bytes]`. Decoding is total and
//! strict: the version must be one we know, the postcard value must use every
//! byte, and the bytes must be the value's *canonical* encoding (the one
//! `encode_*` would produce). Postcard itself accepts some non-canonical
//! forms: over-long varints, and maps whose keys repeat or come out of order
//! (a `BTreeMap` silently keeps the last one). Rejecting them means one value
//! has exactly one encoding, so a decoded message re-encodes to the bytes that
//! arrived, and a membership map with a duplicated server never decodes.
//!
//! Allocation is bounded by the input: postcard reads sequences element by
//! element, and it offers serde a size hint only when the announced length
//! fits in the bytes that remain, which serde further caps at 1 MiB of
//! pre-allocation (postcard 1.2 `SeqAccess::size_hint`, serde
//! `size_hint::cautious`). Callers bound the input itself with their frame or
//! record limit.
//!
//! A format change that old servers cannot read bumps the version; the
//! decoders then keep accepting the older versions they know. Messages moved
//! to version 2 on their own (`MESSAGE_VERSION`: the sender's address); WAL
//! records, commands, requests and responses are still at `CODEC_VERSION`.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::fsm::Command;
use crate::message::Message;
use crate::rpc::{Request, Response};

/// The version byte that starts every encoding.
pub const CODEC_VERSION: u8 = 1;

/// Why bytes did not decode. Every variant is the sender's fault: the caller
/// drops the input (and closes the connection); no state changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// No bytes at all, not even the version byte.
    Empty,
    /// A version byte this build does not know.
    UnknownVersion(u8),
    /// The postcard bytes do not describe a value of the expected type.
    Malformed(String),
    /// A whole value decoded with this many bytes left over.
    TrailingBytes(usize),
    /// The value decoded, but the bytes are not its canonical encoding.
    NonCanonical,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty input"),
            DecodeError::UnknownVersion(v) => write!(f, "unknown codec version {v}"),
            DecodeError::Malformed(why) => write!(f, "malformed: {why}"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the value"),
            DecodeError::NonCanonical => f.write_str("not the canonical encoding of its value"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Messages are at version 2: version 1 had no `from_address`. Every other
/// type is still at `CODEC_VERSION`.
pub const MESSAGE_VERSION: u8 = 2;

/// A message as codec version 1 encoded it (no `from_address`): what a server
/// of an older build sends during a rolling upgrade.
#[derive(Serialize, Deserialize)]
struct MessageV1 {
    from: crate::ids::NodeId,
    to: crate::ids::NodeId,
    body: crate::message::MessageBody,
}

pub fn encode_message(m: &Message) -> Vec<u8> {
    postcard::to_extend(m, vec![MESSAGE_VERSION]).expect("postcard encodes every wire type")
}

/// `m` as an older build encoded it (version 1, without the sender's
/// address): what the fuzz checks compare a version-1 message with.
pub(crate) fn encode_message_v1(m: &Message) -> Vec<u8> {
    let v1 = MessageV1 {
        from: m.from,
        to: m.to,
        body: m.body.clone(),
    };
    postcard::to_extend(&v1, vec![CODEC_VERSION]).expect("postcard encodes every wire type")
}

/// Decodes a message of version 2, or of version 1 with an empty
/// `from_address`; strict and canonical within its version.
pub fn decode_message(b: &[u8]) -> Result<Message, DecodeError> {
    match b.first() {
        Some(&MESSAGE_VERSION) => decode_body(&b[1..]),
        Some(&CODEC_VERSION) => {
            let MessageV1 { from, to, body } = decode_body(&b[1..])?;
            Ok(Message {
                from,
                from_address: String::new(),
                to,
                body,
            })
        }
        Some(&v) => Err(DecodeError::UnknownVersion(v)),
        None => Err(DecodeError::Empty),
    }
}

pub fn encode_request(r: &Request) -> Vec<u8> {
    encode(r)
}

pub fn decode_request(b: &[u8]) -> Result<Request, DecodeError> {
    decode(b)
}

pub fn encode_response(r: &Response) -> Vec<u8> {
    encode(r)
}

pub fn decode_response(b: &[u8]) -> Result<Response, DecodeError> {
    decode(b)
}

pub fn encode_command(c: &Command) -> Vec<u8> {
    encode(c)
}

pub fn decode_command(b: &[u8]) -> Result<Command, DecodeError> {
    decode(b)
}

/// `[CODEC_VERSION][postcard(value)]`, for any wire type of this crate.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our wire types are plain structs, enums, Options, Vecs and BTreeMaps:
    // postcard cannot fail on them when writing to a Vec.
    postcard::to_extend(value, vec![CODEC_VERSION]).expect("postcard encodes every wire type")
}

/// The inverse of [`encode`]: total, strict about trailing bytes and canonical form.
pub(crate) fn decode<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != CODEC_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    decode_body(body)
}

/// The postcard part of [`decode`], after the version byte.
fn decode_body<T>(body: &[u8]) -> Result<T, DecodeError>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    if !is_canonical(&value, body) {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Whether `value` encodes to exactly `bytes`, checked by serializing into a
/// sink that compares as it goes: no allocation, and it stops at the first
/// differing byte.
fn is_canonical<T: Serialize>(value: &T, bytes: &[u8]) -> bool {
    postcard::serialize_with_flavor(
        value,
        Compare {
            expected: bytes,
            pos: 0,
        },
    )
    .unwrap_or(false)
}

struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl postcard::ser_flavors::Flavor for Compare<'_> {
    type Output = bool;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.pos.saturating_add(data.len());
        if self.expected.get(self.pos..end) == Some(data) {
            self.pos = end;
            Ok(())
        } else {
            // Any error stops the serializer; which one does not matter.
            Err(postcard::Error::SerializeBufferFull)
        }
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.pos == self.expected.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fsm::{KvCommand, KvWrite};
    use crate::ids::{Datacenter, LogIndex, NodeId, NodeName, Term};
    use crate::message::MessageBody;
    use crate::raft::{
        AppendEntries, Entry, EntryPayload, Member, Membership, RaftMessage, Suffrage,
    };
    use crate::rpc::{Op, ReadMode, Reply, ReplyBody, RpcError};

    fn kv_set(key: &str, value: &[u8]) -> Command {
        Command::Kv(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 42,
            value: value.to_vec().into(),
        }))
    }

    fn append_message() -> Message {
        let mut servers = BTreeMap::new();
        servers.insert(
            NodeId(1),
            Member {
                name: NodeName("s1".into()),
                address: "127.0.0.1:8300".into(),
                suffrage: Suffrage::Voter,
            },
        );
        servers.insert(
            NodeId(2),
            Member {
                name: NodeName("s2".into()),
                address: "127.0.0.2:8300".into(),
                suffrage: Suffrage::Nonvoter,
            },
        );
        Message {
            from: NodeId(1),
            from_address: "127.0.0.1:8300".into(),
            to: NodeId(u128::MAX),
            body: MessageBody::Raft(RaftMessage::AppendEntries(AppendEntries {
                term: Term(3),
                prev_log_index: LogIndex(9),
                prev_log_term: Term(2),
                entries: vec![
                    Entry {
                        term: Term(3),
                        index: LogIndex(10),
                        payload: EntryPayload::Command(kv_set("a/b", b"v").into()),
                    },
                    Entry {
                        term: Term(3),
                        index: LogIndex(11),
                        payload: EntryPayload::Membership(Membership { servers }),
                    },
                ],
                leader_commit: LogIndex(9),
                seq: 300,
            })),
        }
    }

    fn request() -> Request {
        Request {
            datacenter: Datacenter("dc1".into()),
            read_mode: ReadMode::Consistent,
            blocking: None,
            op: Op::KvKeys {
                prefix: "web/".into(),
                separator: Some("/".into()),
            },
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let m = append_message();
        let b = encode_message(&m);
        assert_eq!(b[0], MESSAGE_VERSION);
        assert_eq!(decode_message(&b), Ok(m));

        let r = request();
        assert_eq!(decode_request(&encode_request(&r)), Ok(r));

        let ok: Response = Ok(Reply {
            index: 7,
            known_leader: true,
            last_contact_ms: 0,
            body: ReplyBody::Keys(vec!["web/a".into(), "web/b/".into()]),
        });
        assert_eq!(decode_response(&encode_response(&ok)), Ok(ok));
        let err: Response = Err(RpcError::Unknown("leadership lost".into()));
        assert_eq!(decode_response(&encode_response(&err)), Ok(err));

        let c = kv_set("k", &[0, 1, 2, 255]);
        assert_eq!(decode_command(&encode_command(&c)), Ok(c));
    }

    /// A version-1 message (an older build's: no sender address) decodes with
    /// an empty address; a version-2 body under a version-1 byte does not
    /// (the two are told apart by the byte, never guessed from the body).
    #[test]
    fn messages_of_version_1_still_decode() {
        let m = append_message();
        let old = encode_message_v1(&m);
        let want = Message {
            from_address: String::new(),
            ..m.clone()
        };
        assert_eq!(decode_message(&old), Ok(want));
        let mut relabelled = encode_message(&m);
        relabelled[0] = CODEC_VERSION;
        assert!(decode_message(&relabelled).is_err());
        assert_eq!(decode_message(&[]), Err(DecodeError::Empty));
        for v in [0u8, 3, 0xff] {
            relabelled[0] = v;
            assert_eq!(
                decode_message(&relabelled),
                Err(DecodeError::UnknownVersion(v))
            );
        }
    }

    #[test]
    fn empty_and_unknown_versions_are_refused() {
        assert_eq!(decode_command(&[]), Err(DecodeError::Empty));
        let mut b = encode_command(&kv_set("k", b"v"));
        for v in [0u8, 2, 0xff] {
            b[0] = v;
            assert_eq!(decode_command(&b), Err(DecodeError::UnknownVersion(v)));
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let m = encode_message(&append_message());
        for cut in 0..m.len() {
            assert!(decode_message(&m[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let r = encode_request(&request());
        for cut in 0..r.len() {
            assert!(decode_request(&r[..cut]).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut b = encode_message(&append_message());
        b.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode_message(&b), Err(DecodeError::TrailingBytes(3)));
    }

    #[test]
    fn an_overlong_varint_is_not_canonical() {
        // Command::Kv(KvCommand::Delete { key: "k" }): variant 0, variant 2,
        // then the key. Spell the outer variant index 0 as two bytes.
        let good = encode_command(&Command::Kv(KvCommand::Delete { key: "k".into() }));
        assert_eq!(good, [CODEC_VERSION, 0, 2, 1, b'k']);
        let long = [CODEC_VERSION, 0x80, 0x00, 2, 1, b'k'];
        assert_eq!(decode_command(&long), Err(DecodeError::NonCanonical));
    }

    #[test]
    fn a_membership_with_a_repeated_server_is_not_canonical() {
        let m = append_message();
        let b = encode_message(&m);
        // Re-spell the membership so both servers carry id 1: the map would
        // collapse them, so the decoder must refuse. The second server is
        // the key 2 followed by its name, the 2-byte string "s2".
        let at = b.windows(4).position(|w| w == [2, 2, b's', b'2']).unwrap();
        let mut dup = b.clone();
        dup[at] = 1;
        assert_eq!(decode_message(&dup), Err(DecodeError::NonCanonical));
    }

    #[test]
    fn a_huge_announced_length_fails_without_allocating_it() {
        // A KV value announcing u32::MAX bytes in a 12-byte input: postcard
        // offers no size hint, so nothing is reserved, and the read runs out.
        let mut b = vec![CODEC_VERSION, 0, 0, 1, b'k', 0];
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        b.push(1);
        assert!(matches!(decode_command(&b), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            DecodeError::UnknownVersion(9).to_string(),
            "unknown codec version 9"
        );
        assert_eq!(
            DecodeError::TrailingBytes(2).to_string(),
            "2 trailing bytes after the value"
        );
    }
}
