//! Gossip packets and their codec: `[GOSSIP_VERSION][postcard]`, strict and
//! canonical like every other decoder of the core (`wire::codec`), with the
//! size bounds checked before decoding and the contents checked after.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::wire::codec::{self, DecodeError};

use super::config::GossipConfig;
use super::member::{Tags, Version};

/// The version byte that starts every gossip packet. Gossip shares the
/// core's postcard codec; if it ever moves on alone, its decoder gets a
/// version dispatch like `wire::decode_message`.
pub const GOSSIP_VERSION: u8 = 1;
const _: () = assert!(GOSSIP_VERSION == codec::CODEC_VERSION);

/// A member's self-description, as carried by `Alive` and state exchanges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub node_id: NodeId,
    pub address: String,
    pub tags: Tags,
    pub version: Version,
}

/// One piece of membership news, piggybacked on every packet (memberlist's
/// alive, suspect and dead messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// The member says it is alive at this version (also: new tags).
    Alive(MemberInfo),
    /// `from` could not reach `name` at `version`.
    Suspect {
        name: String,
        version: Version,
        from: String,
    },
    /// `name` at `version` is dead; when `from == name` it left on purpose
    /// (memberlist's leave is a dead message from the node itself), and an
    /// operator's force-leave sends the same about a failed member.
    Dead {
        name: String,
        version: Version,
        from: String,
    },
    /// An operator pruned `name`, left at `version` (Consul's `force-leave
    /// -prune`, serf's leave intent with `Prune`): forget it now rather than
    /// after the reap timeout. Appended to the enum so older packets decode
    /// unchanged; an older build drops a packet carrying it.
    Prune {
        name: String,
        version: Version,
        from: String,
    },
}

impl Update {
    pub fn name(&self) -> &str {
        match self {
            Update::Alive(m) => &m.name,
            Update::Suspect { name, .. }
            | Update::Dead { name, .. }
            | Update::Prune { name, .. } => name,
        }
    }
}

/// What a member believes about another, in a state exchange.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerState {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// One row of a state exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub info: MemberInfo,
    pub state: PeerState,
}

/// The packet's own purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Are you `target`? Answer with `Ack { seq }`. (Naming the target keeps
    /// a new member at a reused address from answering for the old one.)
    Ping {
        seq: u32,
        target: String,
    },
    Ack {
        seq: u32,
    },
    /// Please ping `target` at `address` for me and relay its ack as
    /// `Ack { seq }`, or `Nack { seq }` if it does not answer (Lifeguard).
    PingReq {
        seq: u32,
        target: String,
        address: String,
    },
    Nack {
        seq: u32,
    },
    /// Nothing but the piggybacked updates.
    Gossip,
    /// A full state exchange (memberlist's push-pull, sent over a stream).
    /// `reply` asks for ours back, echoing `seq`; `join` marks a join.
    PushPull {
        seq: u32,
        reply: bool,
        join: bool,
        members: Vec<PeerEntry>,
    },
    /// A keyring operation from an operator's `keyring` command, sent over
    /// a stream to every live member (serf's key queries, but direct:
    /// answered with `KeyResponse { seq }` on the same stream). Appended to
    /// the enum so older packets decode unchanged. Only ever accepted sealed.
    KeyRequest {
        seq: u32,
        op: KeyOp,
    },
    /// A member's answer to a `KeyRequest` (serf's `nodeKeyResponse`).
    KeyResponse {
        seq: u32,
        result: KeyResult,
    },
}

/// What a keyring operation asks of each member. Its `Debug` never shows
/// key bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyOp {
    List,
    #[serde(with = "serde_bytes")]
    Install(Vec<u8>),
    #[serde(with = "serde_bytes")]
    Use(Vec<u8>),
    #[serde(with = "serde_bytes")]
    Remove(Vec<u8>),
}

/// One member's answer to a keyring operation: its keys after the
/// operation (primary first; empty when encryption is off), or why it
/// refused (memberlist's message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyResult {
    pub ok: bool,
    pub message: String,
    pub keys: Vec<KeyBytes>,
}

impl core::fmt::Debug for KeyOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            KeyOp::List => "List",
            KeyOp::Install(_) => "Install(..)",
            KeyOp::Use(_) => "Use(..)",
            KeyOp::Remove(_) => "Remove(..)",
        })
    }
}

/// One key on the wire. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl core::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyBytes({} bytes)", self.0.len())
    }
}

/// The longest message a `KeyResult` carries.
pub const KEY_MESSAGE_BYTES_MAX: usize = 256;

/// A gossip packet: its purpose and the updates riding along.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub body: Body,
    pub updates: Vec<Update>,
}

impl Packet {
    /// A packet the driver sends over a stream (TCP) rather than a datagram.
    pub fn is_stream(&self) -> bool {
        matches!(
            self.body,
            Body::PushPull { .. } | Body::KeyRequest { .. } | Body::KeyResponse { .. }
        )
    }
}

/// Why a packet was dropped. Always the sender's fault; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// More bytes than a stream may carry, refused before decoding.
    TooLarge(usize),
    Decode(DecodeError),
    /// Decoded, but a field is over its limit or makes no sense.
    Invalid(&'static str),
}

impl core::fmt::Display for PacketError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PacketError::TooLarge(n) => write!(f, "packet of {n} bytes is over the limit"),
            PacketError::Decode(e) => write!(f, "{e}"),
            PacketError::Invalid(why) => write!(f, "invalid packet: {why}"),
        }
    }
}

pub fn encode_packet(p: &Packet) -> Vec<u8> {
    codec::encode(p)
}

/// Decodes without any limit but the input's length: for tools and tests.
/// A pool decodes with [`decode_packet_bounded`].
pub fn decode_packet(b: &[u8]) -> Result<Packet, DecodeError> {
    codec::decode(b)
}

/// Decodes and validates a packet against a pool's limits: the length
/// before decoding, then every name, address, tag set and list.
pub fn decode_packet_bounded(b: &[u8], c: &GossipConfig) -> Result<Packet, PacketError> {
    decode_packet_sized(b, b.len(), c)
}

/// As [`decode_packet_bounded`] for a packet that arrived as `wire_len`
/// bytes (sealed, it was larger than its plain text): the datagram limit
/// applies to what crossed the network.
pub fn decode_packet_sized(
    b: &[u8],
    wire_len: usize,
    c: &GossipConfig,
) -> Result<Packet, PacketError> {
    if b.len() > c.stream_bytes_max {
        return Err(PacketError::TooLarge(b.len()));
    }
    let p = decode_packet(b).map_err(PacketError::Decode)?;
    validate(&p, wire_len.max(b.len()), c)?;
    Ok(p)
}

fn validate(p: &Packet, len: usize, c: &GossipConfig) -> Result<(), PacketError> {
    if !p.is_stream() && len > c.packet_bytes_max {
        return Err(PacketError::TooLarge(len));
    }
    let name_ok = |s: &str| !s.is_empty() && s.len() <= c.name_bytes_max;
    let info_ok = |m: &MemberInfo| {
        name_ok(&m.name) && name_ok(&m.address) && m.tags.encoded_len() <= c.tags_bytes_max
    };
    if p.updates.len() > c.updates_per_packet_max {
        return Err(PacketError::Invalid("too many updates"));
    }
    for u in &p.updates {
        let ok = match u {
            Update::Alive(m) => info_ok(m),
            Update::Suspect { name, from, .. }
            | Update::Dead { name, from, .. }
            | Update::Prune { name, from, .. } => name_ok(name) && name_ok(from),
        };
        if !ok {
            return Err(PacketError::Invalid("bad update"));
        }
    }
    match &p.body {
        Body::Ping { target, .. } if !name_ok(target) => Err(PacketError::Invalid("bad target")),
        Body::PingReq {
            target, address, ..
        } if !name_ok(target) || !name_ok(address) => Err(PacketError::Invalid("bad target")),
        Body::PushPull { members, .. } => {
            if members.len() > c.members_max {
                return Err(PacketError::Invalid("too many members"));
            }
            if members.iter().all(|e| info_ok(&e.info)) {
                Ok(())
            } else {
                Err(PacketError::Invalid("bad member"))
            }
        }
        Body::KeyRequest { op, .. } => match op {
            KeyOp::List => Ok(()),
            KeyOp::Install(k) | KeyOp::Use(k) | KeyOp::Remove(k) => {
                match super::keyring::validate_key(k) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(PacketError::Invalid("bad key")),
                }
            }
        },
        Body::KeyResponse { result, .. } => {
            let keys_ok = result.keys.len() <= super::keyring::KEYS_MAX
                && result
                    .keys
                    .iter()
                    .all(|k| super::keyring::validate_key(&k.0).is_ok());
            if keys_ok && result.message.len() <= KEY_MESSAGE_BYTES_MAX {
                Ok(())
            } else {
                Err(PacketError::Invalid("bad key response"))
            }
        }
        Body::Ping { .. }
        | Body::Ack { .. }
        | Body::Nack { .. }
        | Body::Gossip
        | Body::PingReq { .. } => Ok(()),
    }
}
