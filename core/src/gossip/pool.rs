//! [`Gossip`]: one SWIM pool (LAN or WAN), sans-IO.
//!
//! Failure detection is memberlist's: every probe interval one member, in a
//! shuffled round-robin order, is pinged; without an ack within the probe
//! timeout, `indirect_checks` others are asked to ping it for us; without any
//! ack by the end of the interval it is suspected. A suspicion becomes a
//! failure after a timeout that starts long and shrinks as other members
//! independently confirm it (Lifeguard's dynamic suspicion), unless the
//! member refutes it by announcing a higher incarnation. Our own probe
//! interval and timeout stretch while we seem unhealthy ourselves (missed
//! nacks, having to refute: Lifeguard's local health awareness). News rides
//! on every packet and on gossip rounds; a full state exchange (push-pull)
//! runs on join and periodically, and failed members are contacted now and
//! then in case they are back (serf's reconnect). So are the addresses we
//! were asked to join that belong to no member we know: a pool that started
//! while a partition hid some servers (a power loss during a partition)
//! would otherwise never meet the pool those servers formed, since a join
//! stops at its first answer, as Consul's `retry_join` does.

use std::collections::{BTreeMap, BTreeSet};

mod keys;
mod news;
mod send;
mod suspicion;

pub use keys::KeyReport;

use crate::clock::{Duration, Instant};
use crate::ids::NodeId;
use crate::rng::Rng;

use super::config::GossipConfig;
use super::keyring::Keyring;
use super::member::{Member, Status, Tags, Version};
use super::packet::{decode_packet_sized, Body, KeyOp, MemberInfo, Update};

/// How many join addresses a pool remembers (see [`Gossip`]'s stranger
/// contact); more are used for their join but not kept.
pub const JOIN_TARGETS_MAX: usize = 256;

/// Something happened to a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipInput {
    /// Bytes arrived from `from` (the sender's address), as a datagram or a stream.
    Packet { from: String, bytes: Vec<u8> },
    /// A deadline from [`Gossip::poll_timeout`] passed.
    Tick,
    /// Join the pool through these addresses, retrying with backoff until
    /// one answers (Consul's `retry_join`).
    Join(Vec<String>),
    /// Leave the pool: tell everyone, then report [`GossipEvent::LeaveComplete`].
    Leave,
    /// An operator's force-leave: a failed member becomes `left`. With
    /// `prune` (Consul's `force-leave -prune`), a failed or left member is
    /// also forgotten at once, here and by every member the news reaches,
    /// instead of after the reap timeout.
    ForceLeave { name: String, prune: bool },
    /// An operator's keyring operation (`tern keyring`): done here, then
    /// asked of every live member over a stream; answered with
    /// [`GossipEvent::KeyringDone`] carrying `id` once every member
    /// answered or the query timeout passed.
    Keyring { id: u64, op: KeyOp },
}

/// What a pool asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipAction {
    /// Send `bytes` to `to`: over a stream (TCP) when `stream`, else a datagram.
    /// A reply goes to the address the request came `from`: a UDP driver
    /// sends from its gossip port so that is where answers land, and a TCP
    /// driver answers a stream on the connection it came in on (its source
    /// port is ephemeral), as memberlist's push-pull does.
    Send {
        to: String,
        bytes: Vec<u8>,
        stream: bool,
    },
    Event(GossipEvent),
}

/// Something for the log, the metrics, or the agent above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipEvent {
    /// A member is new, or came back after it failed or left.
    MemberJoined(Member),
    /// An alive member announced new tags or a new address.
    MemberUpdated(Member),
    /// `from` suspects `name`; Consul still shows it alive.
    MemberSuspect {
        name: String,
        from: String,
    },
    /// A suspected member refuted the suspicion.
    MemberAlive(Member),
    MemberFailed(Member),
    MemberLeft(Member),
    /// A left or failed member was forgotten after its timeout.
    MemberReaped {
        name: String,
        status: Status,
    },
    /// We were suspected or declared dead and answered with this version.
    Refuted(Version),
    /// No address answered this attempt; Consul logs it at warn level
    /// ("Join cluster failed, will retry"). `retry_in` is `None` when giving up.
    JoinFailed {
        addresses: Vec<String>,
        attempt: u32,
        retry_in: Option<Duration>,
    },
    /// `address` answered the join's state exchange.
    Joined {
        address: String,
        attempt: u32,
    },
    /// Our leave has had time to spread; the driver may stop the pool.
    LeaveComplete,
    /// A member was refused because it claims a live member's name with
    /// another node id, or a live member's node id under another name
    /// (Consul's node-id conflict, agent/consul/merge.go; memberlist's
    /// "Conflicting address" check).
    Conflict {
        name: String,
        node_id: NodeId,
        holder: String,
        holder_node_id: NodeId,
    },
    ForceLeaveRefused {
        name: String,
        reason: ForceLeaveError,
    },
    /// A packet was dropped; at most one of these per
    /// `bad_packet_log_interval`, with the count suppressed since the last.
    PacketDropped {
        from: String,
        error: String,
        suppressed: u64,
    },
    /// Our keyring changed (a keyring operation, ours or an operator's
    /// through another member): the driver persists it before the answer
    /// that follows this event leaves (Consul's `serf/local.keyring`).
    KeyringChanged(Keyring),
    /// A keyring operation asked with [`GossipInput::Keyring`] is complete.
    KeyringDone(KeyReport),
}

/// Why a force-leave did nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ForceLeaveError {
    /// No member by that name (Consul: "No node found with name").
    NotFound,
    /// The member is alive: only a failed member can be forced out.
    NotFailed,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

#[derive(Clone, Debug)]
struct Suspicion {
    started: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations that bring the timeout down to `min`.
    k: u32,
    confirmers: BTreeSet<String>,
    deadline: Instant,
}

#[derive(Clone, Debug)]
struct Entry {
    info: MemberInfo,
    state: State,
    since: Instant,
    suspicion: Option<Suspicion>,
}

#[derive(Clone, Debug)]
struct Probe {
    target: String,
    /// The target's version when the probe started: a probe that fails
    /// suspects that life of the member, never a newer one it learned of
    /// meanwhile (a restart; memberlist captures the incarnation too).
    version: Version,
    seq: u32,
    indirect_at: Instant,
    indirect_sent: bool,
    acked: bool,
    expected_nacks: u32,
    nacks: u32,
}

#[derive(Clone, Debug)]
struct Relay {
    requester: String,
    seq: u32,
    nack_at: Instant,
}

#[derive(Clone, Debug)]
struct Queued {
    update: Update,
    transmits: u32,
    order: u64,
}

#[derive(Clone, Debug)]
struct Join {
    addresses: Vec<String>,
    attempt: u32,
    seqs: BTreeSet<u32>,
    deadline: Option<Instant>,
    retry_at: Option<Instant>,
}

/// One gossip pool. See the module documentation for the protocol, and
/// [`crate::gossip`] for the driving contract.
#[derive(Clone, Debug)]
pub struct Gossip {
    config: GossipConfig,
    rng: Rng,
    me: MemberInfo,
    members: BTreeMap<String, Entry>,
    queue: BTreeMap<String, Queued>,
    queue_order: u64,
    awareness: u32,
    seq: u32,
    probe: Option<Probe>,
    probe_order: Vec<String>,
    probe_index: usize,
    relays: BTreeMap<u32, Relay>,
    join: Option<Join>,
    /// Every address a join was asked to use (at most
    /// [`JOIN_TARGETS_MAX`]): on each reconnect round, one that is no known
    /// member's address is sent a state exchange.
    join_targets: BTreeSet<String>,
    leave_at: Option<Instant>,
    stopped: bool,
    next_probe_at: Instant,
    next_gossip_at: Instant,
    next_push_pull_at: Instant,
    next_reconnect_at: Instant,
    next_reap_at: Instant,
    bad_log_at: Option<Instant>,
    bad_suppressed: u64,
    /// The live keyring: `config.keyring` at start, then whatever keyring
    /// operations made of it.
    keyring: Keyring,
    /// Nonces for sealing: a stream of its own, so sealing never shifts the
    /// protocol's random choices.
    nonce_rng: Rng,
    key_queries: BTreeMap<u64, keys::KeyQuery>,
}

impl Gossip {
    /// A pool that knows only itself, started at `now`.
    pub fn new(config: GossipConfig, now: Instant) -> Result<Gossip, String> {
        validate(&config)?;
        let mut rng = Rng::new(config.seed ^ 0x6055_1b00_0000_0000);
        let nonce_rng = Rng::new(config.seed ^ 0x5ea1_ed00_0000_0000);
        let me = MemberInfo {
            name: config.name.clone(),
            node_id: config.node_id,
            address: config.address.clone(),
            tags: config.tags.clone(),
            version: Version {
                generation: config.generation,
                incarnation: 0,
            },
        };
        // Stagger the periodic work so members started together do not probe
        // and exchange state in lockstep (memberlist starts each ticker after
        // a random fraction of its interval).
        let stagger = |rng: &mut Rng, d: Duration| now + Duration(rng.range(0, d.0.max(1)));
        let next_probe_at = stagger(&mut rng, config.probe_interval);
        let next_gossip_at = stagger(&mut rng, config.gossip_interval);
        let next_push_pull_at = stagger(&mut rng, config.push_pull_interval);
        Ok(Gossip {
            next_reconnect_at: now + config.reconnect_interval,
            next_reap_at: now + config.reap_interval,
            next_probe_at,
            next_gossip_at,
            next_push_pull_at,
            rng,
            me,
            members: BTreeMap::new(),
            queue: BTreeMap::new(),
            queue_order: 0,
            awareness: 0,
            seq: 0,
            probe: None,
            probe_order: Vec::new(),
            probe_index: 0,
            relays: BTreeMap::new(),
            join: None,
            join_targets: BTreeSet::new(),
            leave_at: None,
            stopped: false,
            bad_log_at: None,
            bad_suppressed: 0,
            keyring: config.keyring.clone(),
            nonce_rng,
            key_queries: BTreeMap::new(),
            config,
        })
    }

    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// The keys this pool seals and opens with now (primary first).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Ourselves as the pool sees us.
    pub fn local(&self) -> Member {
        let status = if self.stopped {
            Status::Left
        } else if self.leave_at.is_some() {
            Status::Leaving
        } else {
            Status::Alive
        };
        Member {
            name: self.me.name.clone(),
            node_id: self.me.node_id,
            address: self.me.address.clone(),
            tags: self.me.tags.clone(),
            version: self.me.version,
            status,
            suspect: false,
        }
    }

    /// Every member we know, ourselves included, by name.
    pub fn members(&self) -> Vec<Member> {
        let mut all: Vec<Member> = self.members.values().map(view).collect();
        let at = all.partition_point(|m| m.name < self.me.name);
        all.insert(at, self.local());
        all
    }

    pub fn member(&self, name: &str) -> Option<Member> {
        if name == self.me.name {
            return Some(self.local());
        }
        self.members.get(name).map(view)
    }

    /// Lifeguard's local health score: 0 is healthy; probes stretch by `score + 1`.
    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    /// The next instant to call `handle` with [`GossipInput::Tick`]; `None`
    /// once the pool has left.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let mut t = self
            .next_gossip_at
            .min(self.next_push_pull_at)
            .min(self.next_reconnect_at)
            .min(self.next_reap_at);
        if self.leave_at.is_none() {
            t = t.min(self.next_probe_at);
        }
        if let Some(p) = &self.probe {
            if !p.acked && !p.indirect_sent {
                t = t.min(p.indirect_at);
            }
        }
        for e in self.members.values() {
            if let Some(s) = &e.suspicion {
                t = t.min(s.deadline);
            }
        }
        for r in self.relays.values() {
            t = t.min(r.nack_at);
        }
        if let Some(j) = &self.join {
            for d in [j.deadline, j.retry_at].into_iter().flatten() {
                t = t.min(d);
            }
        }
        if let Some(l) = self.leave_at {
            t = t.min(l);
        }
        for q in self.key_queries.values() {
            t = t.min(q.deadline);
        }
        Some(t)
    }

    pub fn handle(&mut self, now: Instant, input: GossipInput, out: &mut Vec<GossipAction>) {
        if self.stopped {
            return;
        }
        match input {
            GossipInput::Packet { from, bytes } => self.handle_packet(now, &from, &bytes, out),
            GossipInput::Tick => self.handle_tick(now, out),
            GossipInput::Join(addresses) => self.handle_join(now, addresses, out),
            GossipInput::Leave => self.handle_leave(now),
            GossipInput::ForceLeave { name, prune } => {
                if let Err(reason) = self.force_leave(now, &name, prune, out) {
                    out.push(GossipAction::Event(GossipEvent::ForceLeaveRefused {
                        name,
                        reason,
                    }));
                }
            }
            GossipInput::Keyring { id, op } => self.handle_key_op(now, id, op, out),
        }
    }

    /// Moves a failed member to `left` here and everywhere (Consul's
    /// `force-leave`). A member that is alive is refused: if it were really
    /// gone, the failure detector would say so first.
    /// With `prune`, the member is then erased (serf's
    /// `RemoveFailedNodePrune`): reported reaped, and a prune statement
    /// spreads so every other member erases it too.
    pub fn force_leave(
        &mut self,
        now: Instant,
        name: &str,
        prune: bool,
        out: &mut Vec<GossipAction>,
    ) -> Result<(), ForceLeaveError> {
        let e = self.members.get(name).ok_or(ForceLeaveError::NotFound)?;
        let version = e.info.version;
        match e.state {
            State::Left => {}
            State::Alive | State::Suspect => return Err(ForceLeaveError::NotFailed),
            State::Dead => self.on_dead(now, name.to_string(), version, name.to_string(), out),
        }
        if prune {
            let from = self.me.name.clone();
            self.on_prune(name.to_string(), version, from, out);
        }
        Ok(())
    }

    /// Announces new tags (a higher incarnation carries them), as serf's
    /// `SetTags`. Refused when they are over `tags_bytes_max`.
    pub fn set_tags(&mut self, tags: Tags) -> Result<(), String> {
        let len = tags.encoded_len();
        if len > self.config.tags_bytes_max {
            return Err(format!(
                "encoded tags are {len} bytes, over the limit of {}",
                self.config.tags_bytes_max
            ));
        }
        self.me.tags = tags;
        self.me.version.incarnation = self.me.version.incarnation.saturating_add(1);
        self.enqueue(Update::Alive(self.me.clone()));
        Ok(())
    }

    // ---- inputs ----

    fn handle_packet(
        &mut self,
        now: Instant,
        from: &str,
        bytes: &[u8],
        out: &mut Vec<GossipAction>,
    ) {
        let (plain, sealed) = match self.unseal(bytes) {
            Ok(p) => p,
            Err(e) => return self.dropped(now, from, e, out),
        };
        let packet = match decode_packet_sized(&plain, bytes.len(), &self.config) {
            Ok(p) => p,
            Err(e) => return self.dropped(now, from, e.to_string(), out),
        };
        let key_op = matches!(
            packet.body,
            Body::KeyRequest { .. } | Body::KeyResponse { .. }
        );
        if key_op && !sealed {
            // Keys never travel, and are never taken, in the clear.
            let e = "a keyring operation that is not encrypted".to_string();
            return self.dropped(now, from, e, out);
        }
        for u in packet.updates {
            self.apply(now, u, out);
        }
        match packet.body {
            Body::Ping { seq, target } => {
                if target == self.me.name {
                    self.send(from, Body::Ack { seq }, out);
                }
            }
            Body::Ack { seq } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
                    p.acked = true;
                } else if let Some(r) = self.relays.remove(&seq) {
                    self.send(&r.requester, Body::Ack { seq: r.seq }, out);
                }
            }
            Body::Nack { seq } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
                    p.nacks = p.nacks.saturating_add(1);
                }
            }
            Body::PingReq {
                seq,
                target,
                address,
            } => {
                if self.relays.len() < self.config.relays_max {
                    let s = self.next_seq();
                    let nack_at = now + self.config.probe_timeout;
                    self.relays.insert(
                        s,
                        Relay {
                            requester: from.to_string(),
                            seq,
                            nack_at,
                        },
                    );
                    self.send(&address, Body::Ping { seq: s, target }, out);
                }
            }
            Body::Gossip => {}
            Body::PushPull {
                seq,
                reply,
                members,
                ..
            } => {
                for entry in members {
                    self.merge(now, entry, out);
                }
                if reply {
                    let members = self.state();
                    self.send_stream(from, seq, false, false, members, out);
                } else if let Some(j) = self.join.as_ref().filter(|j| j.seqs.contains(&seq)) {
                    let attempt = j.attempt;
                    self.join = None;
                    out.push(GossipAction::Event(GossipEvent::Joined {
                        address: from.to_string(),
                        attempt,
                    }));
                }
            }
            Body::KeyRequest { seq, op } => self.handle_key_request(from, seq, op, out),
            Body::KeyResponse { seq, result } => self.handle_key_response(from, seq, result, out),
        }
    }

    fn handle_join(&mut self, now: Instant, addresses: Vec<String>, out: &mut Vec<GossipAction>) {
        if addresses.is_empty() || self.leave_at.is_some() {
            return;
        }
        for a in &addresses {
            if self.join_targets.len() < JOIN_TARGETS_MAX && *a != self.me.address {
                self.join_targets.insert(a.clone());
            }
        }
        self.join = Some(Join {
            addresses,
            attempt: 0,
            seqs: BTreeSet::new(),
            deadline: None,
            retry_at: None,
        });
        self.join_attempt(now, out);
    }

    fn join_attempt(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        let Some(mut j) = self.join.take() else {
            return;
        };
        j.attempt = j.attempt.saturating_add(1);
        j.seqs.clear();
        j.deadline = Some(now + self.config.join_timeout);
        j.retry_at = None;
        let members = self.state();
        for a in &j.addresses {
            let seq = self.next_seq();
            j.seqs.insert(seq);
            self.send_stream(a, seq, true, true, members.clone(), out);
        }
        self.join = Some(j);
    }

    fn handle_leave(&mut self, now: Instant) {
        if self.leave_at.is_some() {
            return;
        }
        self.leave_at = Some(now + self.config.leave_propagate_delay);
        self.join = None;
        self.join_targets.clear();
        self.probe = None;
        // memberlist's leave: a dead message about ourselves, from ourselves.
        self.enqueue(Update::Dead {
            name: self.me.name.clone(),
            version: self.me.version,
            from: self.me.name.clone(),
        });
    }

    fn handle_tick(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        if let Some(at) = self.leave_at {
            if now >= at {
                self.stopped = true;
                out.push(GossipAction::Event(GossipEvent::LeaveComplete));
                return;
            }
        }
        self.tick_join(now, out);
        self.tick_key_queries(now, out);
        self.tick_relays(now, out);
        self.tick_suspicions(now, out);
        if self.leave_at.is_none() {
            self.tick_probe(now, out);
        }
        if now >= self.next_gossip_at {
            self.next_gossip_at = now + self.config.gossip_interval;
            self.gossip_round(now, out);
        }
        if now >= self.next_push_pull_at {
            // memberlist scales the interval with the number of known
            // members (`estNumNodes`: ourselves and every entry).
            let interval =
                suspicion::push_pull_scale(self.config.push_pull_interval, self.members.len() + 1);
            self.next_push_pull_at = now + interval;
            let alive = self.names(|e| e.state == State::Alive);
            if let Some(name) = self.pick(alive, 1).pop() {
                self.push_pull_with(&name, out);
            }
        }
        if now >= self.next_reconnect_at {
            self.next_reconnect_at = now + self.config.reconnect_interval;
            let failed = self.names(|e| e.state == State::Dead);
            if let Some(name) = self.pick(failed, 1).pop() {
                self.push_pull_with(&name, out);
            }
            self.contact_a_stranger(out);
        }
        if now >= self.next_reap_at {
            self.next_reap_at = now + self.config.reap_interval;
            self.reap(now, out);
        }
    }

    /// One join address that is no known member's, if any and no join is
    /// under way, gets a state exchange: if a pool answers there, the two
    /// pools merge.
    fn contact_a_stranger(&mut self, out: &mut Vec<GossipAction>) {
        if self.join.is_some() || self.join_targets.is_empty() {
            return;
        }
        let known: BTreeSet<&str> = self
            .members
            .values()
            .map(|e| e.info.address.as_str())
            .collect();
        let strangers: Vec<String> = self
            .join_targets
            .iter()
            .filter(|a| !known.contains(a.as_str()))
            .cloned()
            .collect();
        if let Some(to) = self.pick(strangers, 1).pop() {
            let seq = self.next_seq();
            let members = self.state();
            self.send_stream(&to, seq, true, false, members, out);
        }
    }

    // ---- timers ----

    fn tick_join(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        let Some(j) = self.join.as_mut() else {
            return;
        };
        if j.deadline.is_some_and(|d| now >= d) {
            j.deadline = None;
            let give_up =
                self.config.join_attempts_max > 0 && j.attempt >= self.config.join_attempts_max;
            let shift = j.attempt.saturating_sub(1).min(32);
            let backoff = self
                .config
                .join_retry_min
                .saturating_mul(1u64 << shift)
                .min(self.config.join_retry_max);
            out.push(GossipAction::Event(GossipEvent::JoinFailed {
                addresses: j.addresses.clone(),
                attempt: j.attempt,
                retry_in: (!give_up).then_some(backoff),
            }));
            if give_up {
                self.join = None;
            } else {
                j.retry_at = Some(now + backoff);
            }
        } else if j.retry_at.is_some_and(|r| now >= r) {
            self.join_attempt(now, out);
        }
    }

    fn tick_relays(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        let due: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.nack_at)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if let Some(r) = self.relays.remove(&s) {
                self.send(&r.requester, Body::Nack { seq: r.seq }, out);
            }
        }
    }

    fn tick_suspicions(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        let due: Vec<(String, Version)> = self
            .members
            .iter()
            .filter(|(_, e)| e.suspicion.as_ref().is_some_and(|s| now >= s.deadline))
            .map(|(n, e)| (n.clone(), e.info.version))
            .collect();
        for (name, version) in due {
            let from = self.me.name.clone();
            self.on_dead(now, name, version, from, out);
        }
    }

    fn tick_probe(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        let scale = u64::from(self.awareness) + 1;
        if let Some(p) = self.probe.as_mut() {
            if !p.acked && !p.indirect_sent && now >= p.indirect_at {
                p.indirect_sent = true;
                let (target, seq) = (p.target.clone(), p.seq);
                self.indirect_probe(&target, seq, out);
            }
        }
        if now < self.next_probe_at {
            return;
        }
        if let Some(p) = self.probe.take() {
            self.finish_probe(now, p, out);
        }
        self.next_probe_at = now + self.config.probe_interval.saturating_mul(scale);
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let seq = self.next_seq();
        let version = self.members[&target].info.version;
        self.probe = Some(Probe {
            target: target.clone(),
            version,
            seq,
            indirect_at: now + self.config.probe_timeout.saturating_mul(scale),
            indirect_sent: false,
            acked: false,
            expected_nacks: 0,
            nacks: 0,
        });
        let address = self.members[&target].info.address.clone();
        self.send(&address, Body::Ping { seq, target }, out);
    }

    fn indirect_probe(&mut self, target: &str, seq: u32, out: &mut Vec<GossipAction>) {
        let Some(address) = self.members.get(target).map(|e| e.info.address.clone()) else {
            return;
        };
        let helpers = self.names(|e| e.state == State::Alive && e.info.name != target);
        let helpers = self.pick(helpers, self.config.indirect_checks);
        if let Some(p) = self.probe.as_mut() {
            p.expected_nacks = u32::try_from(helpers.len()).unwrap_or(u32::MAX);
        }
        for h in helpers {
            let to = self.members[&h].info.address.clone();
            let body = Body::PingReq {
                seq,
                target: target.to_string(),
                address: address.clone(),
            };
            self.send(&to, body, out);
        }
    }

    fn finish_probe(&mut self, now: Instant, p: Probe, out: &mut Vec<GossipAction>) {
        if p.acked {
            self.awareness = self.awareness.saturating_sub(1);
            return;
        }
        // Lifeguard: a missing nack means the fault may be ours.
        let delta = if p.expected_nacks > 0 {
            p.expected_nacks.saturating_sub(p.nacks)
        } else {
            1
        };
        self.raise_awareness(delta);
        let Some(e) = self.members.get(&p.target) else {
            return;
        };
        if matches!(e.state, State::Alive | State::Suspect) {
            let from = self.me.name.clone();
            self.on_suspect(now, p.target, p.version, from, out);
        }
    }

    fn next_probe_target(&mut self) -> Option<String> {
        for _ in 0..2 {
            while self.probe_index < self.probe_order.len() {
                let name = self.probe_order[self.probe_index].clone();
                self.probe_index += 1;
                if self
                    .members
                    .get(&name)
                    .is_some_and(|e| matches!(e.state, State::Alive | State::Suspect))
                {
                    return Some(name);
                }
            }
            // A new round: reshuffle (memberlist's probe list).
            let names = self.names(|e| matches!(e.state, State::Alive | State::Suspect));
            let n = names.len();
            self.probe_order = self.pick(names, n);
            self.probe_index = 0;
        }
        None
    }

    fn gossip_round(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        if self.queue.is_empty() {
            return;
        }
        let dead_window = self.config.gossip_to_the_dead_time;
        let targets = self.names(|e| match e.state {
            State::Alive | State::Suspect => true,
            State::Dead | State::Left => now.saturating_since(e.since) < dead_window,
        });
        for name in self.pick(targets, self.config.gossip_nodes) {
            let to = self.members[&name].info.address.clone();
            let packet = self.with_updates(Body::Gossip);
            if !packet.updates.is_empty() {
                let action = self.packet_action(&to, &packet);
                out.push(action);
            }
        }
    }

    fn reap(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        let (tombstone, reconnect) = (self.config.tombstone_timeout, self.config.reconnect_timeout);
        let gone: Vec<(String, Status)> = self
            .members
            .iter()
            .filter_map(|(n, e)| {
                let age = now.saturating_since(e.since);
                match e.state {
                    State::Left if age >= tombstone => Some((n.clone(), Status::Left)),
                    State::Dead if age >= reconnect => Some((n.clone(), Status::Failed)),
                    _ => None,
                }
            })
            .collect();
        for (name, status) in gone {
            self.members.remove(&name);
            self.queue.remove(&name);
            out.push(GossipAction::Event(GossipEvent::MemberReaped {
                name,
                status,
            }));
        }
    }
}

fn view(e: &Entry) -> Member {
    Member {
        name: e.info.name.clone(),
        node_id: e.info.node_id,
        address: e.info.address.clone(),
        tags: e.info.tags.clone(),
        version: e.info.version,
        status: match e.state {
            State::Alive | State::Suspect => Status::Alive,
            State::Dead => Status::Failed,
            State::Left => Status::Left,
        },
        suspect: e.state == State::Suspect,
    }
}

fn validate(c: &GossipConfig) -> Result<(), String> {
    let fail = |why: &str| Err(format!("gossip: {why}"));
    if c.name.is_empty() || c.name.len() > c.name_bytes_max {
        return fail("the member name must be 1 to name_bytes_max bytes");
    }
    if c.address.is_empty() || c.address.len() > c.name_bytes_max {
        return fail("the gossip address must be 1 to name_bytes_max bytes");
    }
    if c.tags.encoded_len() > c.tags_bytes_max {
        return fail("the tags are over tags_bytes_max");
    }
    if c.probe_timeout == Duration::ZERO || c.probe_timeout >= c.probe_interval {
        return fail("probe_timeout must be above zero and below probe_interval");
    }
    if c.gossip_interval == Duration::ZERO
        || c.push_pull_interval == Duration::ZERO
        || c.reconnect_interval == Duration::ZERO
        || c.reap_interval == Duration::ZERO
    {
        return fail("periodic intervals must be above zero");
    }
    if c.join_retry_min == Duration::ZERO || c.join_retry_min > c.join_retry_max {
        return fail("join_retry_min must be above zero and at most join_retry_max");
    }
    if c.suspicion_mult == 0 || c.suspicion_max_timeout_mult == 0 || c.retransmit_mult == 0 {
        return fail("multipliers must be at least 1");
    }
    if c.packet_bytes_max < 512 || c.stream_bytes_max < c.packet_bytes_max {
        return fail("packet_bytes_max must be at least 512 and at most stream_bytes_max");
    }
    Ok(())
}
