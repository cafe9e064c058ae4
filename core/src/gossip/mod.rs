//! Gossip: LAN and WAN membership with SWIM, sans-IO.
//!
//! One [`Gossip`] per pool: the LAN pool (servers and clients of one
//! datacenter, [`GossipConfig::lan`]) and the WAN pool (servers of every
//! datacenter, named `<node>.<dc>`, [`GossipConfig::wan`]). It follows the
//! core's contract: [`Gossip::handle`]`(now, input, &mut out)` with a
//! [`GossipInput`] (a packet from an address, a tick, join, leave,
//! force-leave), actions out ([`GossipAction::Send`] to an address, over a
//! stream for state exchanges, or a [`GossipEvent`]), and
//! [`Gossip::poll_timeout`] for the next tick. Time comes in as
//! [`Instant`](crate::Instant)s, randomness from the core's seeded
//! [`Rng`](crate::rng::Rng); nothing here reads a clock or a socket.
//!
//! # What it does
//!
//! memberlist's SWIM with the Lifeguard refinements Consul runs: random
//! round-robin probes, indirect probes with nacks, suspicion with a timeout
//! that shrinks as independent confirmations arrive, refutation by
//! incarnation, local health awareness stretching our own probe timings,
//! piggybacked and periodic gossip with transmit limits, push-pull state
//! exchange on join and every `push_pull_interval`, and serf's layer on top:
//! `alive|leaving|left|failed`, tags, reconnecting to failed members,
//! reaping left members after `tombstone_timeout` and failed ones after
//! `reconnect_timeout`, force-leave, join with retry and backoff, and the
//! node-id conflict check. See [`pool`] for the protocol.
//!
//! Identities renew: a member's [`Version`] is `(generation, incarnation)`.
//! The driver picks a new generation on every start, so a member declared
//! failed that restarts (or a replacement with the same name and node id)
//! outranks everything said about its previous life and is alive again.
//!
//! # Why not foca
//!
//! foca 2.0 (caio/foca) was evaluated first. It is a good sans-IO SWIM: no
//! clock (it hands out `Timer`s with a `Duration` that we could schedule on
//! our `Instant`s), an RNG passed in (rand 0.10's traits), suspicion and
//! refutation by incarnation, and identities that `renew()` after being
//! declared down. We wrote a compact SWIM instead because what Consul users
//! observe is not in it:
//!
//! - **left vs failed**: foca's leave marks the member `Down`, the same state
//!   as a failure; Consul shows `left` and `failed` apart and reaps them on
//!   different timeouts, and force-leave turns one into the other.
//! - **Lifeguard**: foca has a fixed `suspect_to_down_after`; no suspicion
//!   timeout shrinking with confirmations, no nacks, no local health awareness.
//! - **conflicts**: foca resolves two identities with one address by
//!   `win_addr_conflict` (one silently replaces the other); Consul refuses a
//!   member that claims a live member's name or node id, and says so.
//! - **tags** would live in the identity, and changing them means changing
//!   identity (a `Rename` everywhere), where serf bumps the incarnation.
//! - **the wire**: foca's packets are its own `Header`/`Member` types, so a
//!   foca upgrade could change our wire format under the golden vectors;
//!   here every byte is ours, one versioned, strict postcard codec.
//!
//! Wrapping foca would have meant rebuilding each of these around it; the
//! protocol itself is small enough to own. (Not checked: building foca under
//! `--cfg madsim`; it is `no_std` with no I/O, so it should.)
//!
//! # Not here yet
//!
//! The drivers (UDP and TCP sockets in io-tokio, madsim in io-sim), the
//! server's tags and reconciliation, the agent's members API and CLI.
//! Packets travel as datagrams except state exchanges (`stream: true`),
//! which a driver sends over TCP as memberlist does; keeping the transport
//! a plain address and bytes lets the WAN pool run through mesh gateways later.

pub mod config;
pub mod fuzz;
pub mod keyring;
pub mod member;
pub mod packet;
pub mod pool;
pub mod seal;
pub mod testnet;

pub use config::GossipConfig;
pub use keyring::{Keyring, KeyringError};
pub use member::{Member, Status, Tags, Version};
pub use packet::{
    decode_packet, encode_packet, Body, KeyOp, KeyResult, Packet, PacketError, Update,
    GOSSIP_VERSION,
};
pub use pool::{
    ForceLeaveError, Gossip, GossipAction, GossipEvent, GossipInput, KeyReport, JOIN_TARGETS_MAX,
};
