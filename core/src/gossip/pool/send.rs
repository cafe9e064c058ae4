//! Sending: datagrams with piggybacked news (memberlist's transmit-limited
//! broadcast queue), state exchanges, and the small helpers they share.

use std::borrow::Cow;

use crate::clock::Instant;

use super::super::packet::{encode_packet, Body, Packet, PeerEntry, PeerState, Update};
use super::super::seal::{self, SEAL_OVERHEAD};
use super::suspicion::retransmit_limit;
use super::{Entry, Gossip, GossipAction, GossipEvent, Queued, State};

impl Gossip {
    pub(super) fn push_pull_with(&mut self, name: &str, out: &mut Vec<GossipAction>) {
        let to = self.members[name].info.address.clone();
        let seq = self.next_seq();
        let members = self.state();
        self.send_stream(&to, seq, true, false, members, out);
    }

    pub(super) fn send_stream(
        &mut self,
        to: &str,
        seq: u32,
        reply: bool,
        join: bool,
        members: Vec<PeerEntry>,
        out: &mut Vec<GossipAction>,
    ) {
        let packet = Packet {
            body: Body::PushPull {
                seq,
                reply,
                join,
                members,
            },
            updates: Vec::new(),
        };
        let action = self.packet_action(to, &packet);
        out.push(action);
    }

    /// A datagram with as many queued updates as fit.
    pub(super) fn send(&mut self, to: &str, body: Body, out: &mut Vec<GossipAction>) {
        let packet = self.with_updates(body);
        let action = self.packet_action(to, &packet);
        out.push(action);
    }

    /// Whether what we send is sealed: with a keyring and
    /// `encrypt_verify_outgoing`, or always for keyring operations.
    fn seals(&self, packet: &Packet) -> bool {
        let key_op = matches!(
            packet.body,
            Body::KeyRequest { .. } | Body::KeyResponse { .. }
        );
        self.keyring.is_enabled() && (self.config.encrypt_verify_outgoing || key_op)
    }

    /// The packet's bytes, sealed with the primary key when [`Self::seals`].
    pub(super) fn packet_action(&mut self, to: &str, packet: &Packet) -> GossipAction {
        let plain = encode_packet(packet);
        let bytes = match self.keyring.primary() {
            Some(key) if self.seals(packet) => {
                let key = key.to_vec();
                seal::seal(&key, seal::nonce(&mut self.nonce_rng), &plain)
            }
            _ => plain,
        };
        GossipAction::Send {
            to: to.to_string(),
            bytes,
            stream: packet.is_stream(),
        }
    }

    /// A received packet's plain bytes and whether it was sealed; an error
    /// (for the rate-limited drop log) when it may not be taken: sealed with
    /// no key of ours, sealed while we have no keyring, or plain while
    /// `encrypt_verify_incoming` asks for sealed packets.
    pub(super) fn unseal<'a>(&self, bytes: &'a [u8]) -> Result<(Cow<'a, [u8]>, bool), String> {
        if seal::is_sealed(bytes) {
            if !self.keyring.is_enabled() {
                return Err("an encrypted packet, but encryption is not configured".into());
            }
            if bytes.len() > self.config.stream_bytes_max.saturating_add(SEAL_OVERHEAD) {
                return Err(format!(
                    "sealed packet of {} bytes is over the limit",
                    bytes.len()
                ));
            }
            return seal::open(self.keyring.keys(), bytes)
                .map(|p| (Cow::Owned(p), true))
                .map_err(|e| e.to_string());
        }
        if self.keyring.is_enabled() && self.config.encrypt_verify_incoming {
            return Err("a packet that is not encrypted (encrypt_verify_incoming is on)".into());
        }
        Ok((Cow::Borrowed(bytes), false))
    }

    /// Our view of the pool, for a state exchange.
    pub(super) fn state(&self) -> Vec<PeerEntry> {
        let me = PeerEntry {
            info: self.me.clone(),
            state: if self.leave_at.is_some() {
                PeerState::Left
            } else {
                PeerState::Alive
            },
        };
        let others = self.members.values().map(|e| PeerEntry {
            info: e.info.clone(),
            state: match e.state {
                State::Alive => PeerState::Alive,
                State::Suspect => PeerState::Suspect,
                State::Dead => PeerState::Dead,
                State::Left => PeerState::Left,
            },
        });
        std::iter::once(me).chain(others).collect()
    }

    /// Fills a datagram with queued updates, least-sent first, newest first
    /// among equals (memberlist's transmit-limited queue), up to the packet
    /// size; each update is dropped after its retransmit limit.
    pub(super) fn with_updates(&mut self, body: Body) -> Packet {
        let mut packet = Packet {
            body,
            updates: Vec::new(),
        };
        if self.queue.is_empty() {
            return packet;
        }
        // The update count is a varint of at most 3 bytes for our limits;
        // sealing adds its overhead to what crosses the network.
        let mut size = encode_packet(&packet).len() + 2;
        if self.seals(&packet) {
            size += SEAL_OVERHEAD;
        }
        let mut order: Vec<(u32, u64, String)> = self
            .queue
            .iter()
            .map(|(n, q)| (q.transmits, u64::MAX - q.order, n.clone()))
            .collect();
        order.sort();
        let limit = self.retransmit_limit();
        for (_, _, name) in order {
            if packet.updates.len() >= self.config.updates_per_packet_max {
                break;
            }
            let q = self.queue.get_mut(&name).expect("listed from the queue");
            let len = postcard::to_allocvec(&q.update).map_or(usize::MAX, |b| b.len());
            if size.saturating_add(len) > self.config.packet_bytes_max {
                continue;
            }
            size += len;
            packet.updates.push(q.update.clone());
            q.transmits += 1;
            if q.transmits >= limit {
                self.queue.remove(&name);
            }
        }
        packet
    }

    pub(super) fn retransmit_limit(&self) -> u32 {
        retransmit_limit(self.config.retransmit_mult, self.live_count())
    }

    /// Queues news for gossip; a newer update about the same member
    /// replaces the older one (memberlist's invalidation).
    pub(super) fn enqueue(&mut self, update: Update) {
        self.queue_order += 1;
        self.queue.insert(
            update.name().to_string(),
            Queued {
                update,
                transmits: 0,
                order: self.queue_order,
            },
        );
    }

    pub(super) fn dropped(
        &mut self,
        now: Instant,
        from: &str,
        error: String,
        out: &mut Vec<GossipAction>,
    ) {
        if self.bad_log_at.is_some_and(|t| now < t) {
            self.bad_suppressed += 1;
            return;
        }
        self.bad_log_at = Some(now + self.config.bad_packet_log_interval);
        out.push(GossipAction::Event(GossipEvent::PacketDropped {
            from: from.to_string(),
            error,
            suppressed: std::mem::take(&mut self.bad_suppressed),
        }));
    }

    // ---- helpers ----

    pub(super) fn names(&self, keep: impl Fn(&Entry) -> bool) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, e)| keep(e))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Up to `k` of `names`, chosen at random (a partial Fisher–Yates).
    pub(super) fn pick(&mut self, mut names: Vec<String>, k: usize) -> Vec<String> {
        let k = k.min(names.len());
        for i in 0..k {
            let j = self.rng.range(i as u64, names.len() as u64) as usize;
            names.swap(i, j);
        }
        names.truncate(k);
        names
    }

    /// Members believed alive, ourselves included.
    pub(super) fn live_count(&self) -> usize {
        1 + self
            .members
            .values()
            .filter(|e| matches!(e.state, State::Alive | State::Suspect))
            .count()
    }

    pub(super) fn raise_awareness(&mut self, delta: u32) {
        let max = self.config.awareness_max_multiplier.saturating_sub(1);
        self.awareness = self.awareness.saturating_add(delta).min(max);
    }

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }
}
