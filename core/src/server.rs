//! The server composition root: Raft, the state machine and request routing
//! behind one `handle`/`poll_timeout` pair.
//!
//! Routing follows Consul's server RPC rules (DESIGN.md §5): writes and
//! default/consistent reads are served by the leader and forwarded to it from
//! followers; stale reads are served by any server that has heard from a
//! leader; with no known leader a request is held and re-checked with a random
//! stagger until `rpc_hold_timeout`, then fails with `No cluster leader`; a
//! leaving server fails fast for `leave_drain_time`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::action::{Action, Event, Input};
use crate::autopilot::Autopilot;
use crate::clock::{Duration, Instant};
use crate::config::{Config, ConfigError};
use crate::fsm::{
    ApplyResult, CatalogError, Command, Fsm, RestoreProgress, StoredAutopilot, TombstoneGc,
};
use crate::ids::{LogIndex, NodeId, RequestId, Term};
use crate::message::{Message, MessageBody, ADDRESS_BYTES_MAX};
use crate::parked::{Parked, Touched};
use crate::raft::{
    Durable, Entry, EntryPayload, Member, Membership, ProposeError, Raft, RaftMessage, Role,
    Snapshot, SnapshotMeta, Suffrage,
};
use crate::reconcile::Reconciler;
use crate::rng::Rng;
use crate::rpc::{
    Blocking, CatalogOp, CatalogReply, Op, RaftServer, ReadMode, Reply, ReplyBody, Request,
    Response, RpcError,
};
use crate::serf_health::SerfHealth;
use crate::session_ttl::{SessionTimers, SESSION_DESTROY_RETRY};

/// How long a leaving server waits to be removed from the configuration
/// before its leave completes anyway (Consul's `raftRemoveGracePeriod`).
pub const RAFT_REMOVE_GRACE: Duration = Duration::from_secs(5);

/// Who is waiting for a response.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Local(RequestId),
    /// Forwarded to us by another server, which matches replies by `id`.
    Remote {
        from: NodeId,
        id: u64,
    },
}

/// A request waiting for a leader.
#[derive(Clone, Debug)]
struct Held {
    origin: Origin,
    request: Request,
    deadline: Instant,
    recheck: Instant,
    /// The overall deadline of a read that was forwarded once already and
    /// is waiting for the next leader: it keeps it when forwarded again.
    forward_deadline: Option<Instant>,
}

/// A request this server forwarded to the leader.
#[derive(Clone, Debug)]
struct Forwarded {
    origin: Origin,
    /// The server it went to: only its reply counts.
    to: NodeId,
    /// The hold timeout, or for a blocking query its whole wait (see
    /// `forward_deadline`). A read asked again elsewhere keeps it.
    deadline: Instant,
    /// A read, kept so it can be asked again of a new leader, or elsewhere
    /// if `to` is reported gone. A write is never sent twice: its outcome
    /// is unknown instead.
    read: Option<Request>,
}

/// Requests this server forwarded, by id, with their deadlines indexed so
/// that finding the next one (every `poll_timeout`) and the expired ones
/// (every input) costs O(log n), not a scan: a follower may hold 10,000
/// forwarded blocking queries while it serves other writes.
#[derive(Clone, Debug, Default)]
struct ForwardTable {
    by_id: BTreeMap<u64, Forwarded>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl ForwardTable {
    fn insert(&mut self, id: u64, f: Forwarded) {
        self.by_deadline.insert((f.deadline, id));
        if let Some(old) = self.by_id.insert(id, f) {
            self.by_deadline.remove(&(old.deadline, id));
        }
    }

    fn remove(&mut self, id: &u64) -> Option<Forwarded> {
        let f = self.by_id.remove(id)?;
        self.by_deadline.remove(&(f.deadline, *id));
        Some(f)
    }

    fn get(&self, id: &u64) -> Option<&Forwarded> {
        self.by_id.get(id)
    }

    fn iter(&self) -> impl Iterator<Item = (&u64, &Forwarded)> {
        self.by_id.iter()
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Removes and returns, oldest deadline first, every request whose
    /// deadline is at or before `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Forwarded> {
        let mut due = Vec::new();
        while let Some(&(d, id)) = self.by_deadline.first() {
            if d > now {
                break;
            }
            self.by_deadline.pop_first();
            due.extend(self.by_id.remove(&id));
        }
        due
    }
}

/// A blocking query parked until its index moves.
#[derive(Clone, Debug)]
struct ParkedQuery {
    origin: Origin,
    request: Request,
}

/// A read confirmed by ReadIndex, waiting for the state machine to catch up.
#[derive(Clone, Debug)]
struct ConfirmedRead {
    index: LogIndex,
    origin: Origin,
    request: Request,
}

/// How the refusal to remove a peer that is not in the configuration ends
/// (Consul's `operator_raft_endpoint.go`).
pub const UNKNOWN_PEER_TAIL: &str = "was not found in the Raft configuration";

/// A server agent's decisions: one Raft member plus its replicated state.
pub struct Server {
    config: Config,
    raft: Raft,
    fsm: Fsm,
    /// When the leader reaps KV tombstones (enabled only while leading).
    tombstone_gc: TombstoneGc,
    rng: Rng,
    ever_had_leader: bool,
    /// Why this server stopped (`Event::Fatal`); it takes no more input.
    fatal: Option<String>,
    /// While leaving (`Input::Leave` until `Event::Left`): when the drain
    /// ends. Requests fail fast from the start of the leave.
    draining_until: Option<Instant>,
    /// While leaving with other voters in the configuration: how long to
    /// wait for the leader to remove this server (after gossip says it
    /// left) before the leave completes anyway (Consul's
    /// `raftRemoveGracePeriod`).
    removal_deadline: Option<Instant>,
    /// The leader's view of the servers gossip reports, and whether the
    /// configuration needs another look (`crate::reconcile`).
    reconciler: Reconciler,
    /// The leader's view of every LAN member, kept in the catalog with its
    /// `serfHealth` check (`crate::serf_health`).
    serf_health: SerfHealth,
    /// The term `serf_health` last looked in as leader.
    serf_health_term: Option<Term>,
    /// The leader's session TTL timers (`crate::session_ttl`).
    session_timers: SessionTimers,
    /// The term the session timers were armed in.
    session_timers_term: Option<Term>,
    /// Until when each key a session's end released may not be acquired
    /// (Consul's in-memory `lockDelay`, kept by every server from its own
    /// clock when it applies the end; only the leader consults it).
    lock_delays: BTreeMap<String, Instant>,
    /// Until when every key ever locked and free now counts as in its
    /// lock delay: set when this server's state came from a snapshot (at
    /// start or installed), which carries no lock delays
    /// (`Config::lock_delay_unknown`).
    lock_delay_blanket: Option<Instant>,
    /// Until when proposals of a term this server no longer leads wait to
    /// learn their outcome (`fail_proposals`).
    orphans_until: Option<Instant>,
    /// The term the reconciler last looked in as leader: a new term looks again.
    reconciled_term: Option<Term>,
    /// The term this server, as leader, proposed storing the agent's
    /// autopilot configuration in (`store_autopilot_config`).
    autopilot_stored_in: Option<Term>,
    /// The leave is complete (`Event::Left`): every request fails fast.
    left: bool,

    next_ctx: u64,
    proposals: BTreeMap<LogIndex, (Term, Origin)>,
    reads: BTreeMap<u64, (Origin, Request)>,
    confirmed_reads: Vec<ConfirmedRead>,
    held: Vec<Held>,
    forwarded: ForwardTable,
    /// Blocking queries, indexed by what they watch (`crate::parked`).
    parked: Parked<ParkedQuery>,
    /// What entries applied (or a snapshot installed) since parked queries
    /// were last looked at.
    touched: Touched,
    /// The leader forwarded reads were last checked against: when another
    /// becomes routable, reads forwarded elsewhere are sent to it.
    leader_followed: Option<NodeId>,
    transfer_waiter: Option<(Origin, Term)>,
    applied_since_snapshot: u64,
    /// When to look at `applied_since_snapshot` next (`snapshot_interval`).
    next_snapshot_check: Instant,
    /// The last index of the own snapshot the driver is encoding
    /// (`Action::BuildSnapshot`), until its `Input::SnapshotBuilt`: at most
    /// one is in flight.
    snapshot_building: Option<LogIndex>,
    /// Forwarded requests already taken, so a duplicated message is not
    /// applied twice (a CAS would answer `false` for its own write).
    forwards_seen: BTreeSet<(NodeId, u64)>,
    forwards_seen_order: VecDeque<(Instant, NodeId, u64)>,
    /// The state machine restored from the snapshot in the message being
    /// handled, if Raft may install it (`restore_offered_snapshot`).
    offered: Option<(LogIndex, Fsm)>,
    /// Server health, promotion and dead-server cleanup (leader only).
    autopilot: Autopilot,
}

impl Server {
    /// A server from its configuration and whatever it recovered from disk
    /// (`Durable::default()` for a new one). A new server with
    /// `config.bootstrap` writes that configuration as entry 1.
    pub fn new(config: Config, durable: Durable, now: Instant) -> Result<Server, ConfigError> {
        config.validate()?;
        let fsm = match &durable.snapshot {
            Some(s) => Fsm::restore(&s.data).map_err(|e| ConfigError {
                key: "data_dir",
                message: format!(
                    "the snapshot at index {} cannot be restored: {e}",
                    s.meta.last_index.0
                ),
            })?,
            None => Fsm::new(),
        };
        // Forwarded requests are matched to replies by id, and a reply can
        // outlive a restart: ids start at a value unique to this incarnation
        // (its start time, term and log), so an old reply never matches a new
        // request. The simulator found this (seed 179, a power loss).
        let incarnation = Rng::new(
            config.rng_seed
                ^ now.0
                ^ (durable.hard_state.term.0 << 32)
                ^ durable
                    .entries
                    .last()
                    .map_or(0, |e| e.index.0)
                    .rotate_left(17),
        )
        .next_u64();
        let lock_delay_blanket = durable
            .snapshot
            .is_some()
            .then(|| now + config.lock_delay_unknown);
        let raft = Raft::new(&config, durable, now);
        let rng = Rng::new(config.rng_seed ^ 0x005E_ED0F_5E4E);
        let tombstone_gc = TombstoneGc::new(
            config.tombstone_ttl,
            config.tombstone_ttl_granularity,
            config.tombstone_gc_buckets_max,
        );
        Ok(Server {
            config,
            raft,
            fsm,
            tombstone_gc,
            rng,
            ever_had_leader: false,
            fatal: None,
            draining_until: None,
            removal_deadline: None,
            reconciler: Reconciler::new(),
            serf_health: SerfHealth::default(),
            serf_health_term: None,
            session_timers: SessionTimers::default(),
            session_timers_term: None,
            lock_delays: BTreeMap::new(),
            lock_delay_blanket,
            reconciled_term: None,
            orphans_until: None,
            autopilot_stored_in: None,
            left: false,
            next_ctx: incarnation & !0xFFFF_FFFF,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            held: Vec::new(),
            forwarded: ForwardTable::default(),
            parked: Parked::default(),
            touched: Touched::default(),
            leader_followed: None,
            transfer_waiter: None,
            applied_since_snapshot: 0,
            next_snapshot_check: now,
            snapshot_building: None,
            forwards_seen: BTreeSet::new(),
            forwards_seen_order: VecDeque::new(),
            offered: None,
            autopilot: Autopilot::new(),
        })
    }

    /// Write the bootstrap configuration if this is a fresh server that has
    /// one. Call once, after `new`, before the first `handle`.
    pub fn start(&mut self, out: &mut Vec<Action>) {
        if let Some(m) = self.config.bootstrap.clone() {
            self.raft.bootstrap(m, out);
        }
    }

    /// Handle one input; append what to do, in order, to `out`.
    pub fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Action>) {
        if self.fatal.is_some() {
            return;
        }
        match input {
            Input::Tick => {
                self.raft.tick(now, out);
                self.expire(now, out);
            }
            Input::Message(m) => {
                if self.handle_message(now, m, out).is_err() {
                    // Refused: nothing changed, so there is nothing to catch up on.
                    return;
                }
            }
            Input::Request { id, request } => {
                self.handle_request(now, Origin::Local(id), request, out)
            }
            Input::Leave => self.leave(now, out),
            Input::Unreachable(peer) => self.peer_unreachable(now, peer, out),
            Input::ServerMember(m) => {
                self.autopilot.member_status(m.node, m.status);
                self.reconciler.report(m);
            }
            Input::LanMember(m) => self.serf_health.report(m),
            Input::Persisted(id) => self.raft.persisted(now, id, out),
            Input::DiskFull(full) => self.raft.set_disk_full(full),
            Input::SnapshotBuilt { meta, data } => self.snapshot_built(meta, data, out),
            Input::SnapshotLoaded { meta, data } => self.raft.snapshot_loaded(now, meta, data, out),
        }
        self.after(now, out);
    }

    /// When the driver must call `handle(now, Input::Tick, ..)` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.raft.poll_timeout();
        for h in &self.held {
            t = t.min(h.recheck).min(h.deadline);
        }
        if let Some(d) = self.forwarded.next_deadline() {
            t = t.min(d);
        }
        if let Some(d) = self.parked.next_deadline() {
            t = t.min(d);
        }
        if let Some(o) = self.orphans_until {
            t = t.min(o);
        }
        if let Some(d) = self.draining_until {
            // Once the drain is over, wait for the removal (or its deadline).
            let removed = !self.raft.membership().contains(self.config.node_id);
            let mut at = match self.removal_deadline {
                Some(r) if !removed => d.max(r),
                _ => d,
            };
            if !self.proposals.is_empty()
                || !self.forwarded.is_empty()
                || self.raft.role() == Role::Leader
            {
                at = at.max(d + self.config.rpc_hold_timeout);
            }
            t = t.min(at);
        }
        if let Some(e) = self.tombstone_gc.next_expiry() {
            t = t.min(e);
        }
        if let Some(a) = self.autopilot.poll_timeout() {
            t = t.min(a);
        }
        if let Some(s) = self.session_timers.next() {
            t = t.min(s);
        }
        Some(t)
    }

    // ----- accessors for drivers, the HTTP API and the simulator's checks -----

    pub fn id(&self) -> NodeId {
        self.config.node_id
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn raft(&self) -> &Raft {
        &self.raft
    }
    pub fn role(&self) -> Role {
        self.raft.role()
    }
    pub fn term(&self) -> Term {
        self.raft.term()
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader()
    }
    pub fn commit_index(&self) -> LogIndex {
        self.raft.commit_index()
    }
    pub fn last_applied(&self) -> LogIndex {
        LogIndex(self.fsm.last_applied())
    }
    pub fn last_log_index(&self) -> LogIndex {
        self.raft.log().last_index()
    }
    /// The entry at `index`, if it is in the log (not compacted away).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.raft.log().entry(index)
    }
    pub fn membership(&self) -> &Membership {
        self.raft.membership()
    }
    /// Voters only, as Consul's `numPeers`.
    pub fn num_peers(&self) -> usize {
        self.raft.membership().voter_count()
    }
    /// Why the server stopped taking input, if it did (`Event::Fatal`).
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }
    pub fn fsm(&self) -> &Fsm {
        &self.fsm
    }
    pub fn tombstone_gc(&self) -> &TombstoneGc {
        &self.tombstone_gc
    }
    /// The last index of the own snapshot the driver is encoding, if one
    /// was asked for and has not come back.
    pub fn snapshot_building(&self) -> Option<LogIndex> {
        self.snapshot_building
    }
    pub fn autopilot(&self) -> &Autopilot {
        &self.autopilot
    }
    /// Whether this server is failing fast while it leaves.
    pub fn is_draining(&self, _now: Instant) -> bool {
        self.left || self.draining_until.is_some()
    }
    /// What gossip last reported of each server (`Input::ServerMember`).
    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }
    /// Whether the leave is complete (`Event::Left` was reported).
    pub fn has_left(&self) -> bool {
        self.left
    }
    /// Requests waiting in any queue.
    pub fn pending_requests(&self) -> usize {
        self.proposals.len()
            + self.reads.len()
            + self.confirmed_reads.len()
            + self.held.len()
            + self.forwarded.len()
            + self.parked.len()
    }

    // ----- messages -----

    /// Handle one message from a peer; `Err` if it was refused (reported
    /// with [`Event::PeerMessageRefused`], nothing changed).
    ///
    /// A message addressed to another server is dropped, not refused: an
    /// address can be reused by a new server, and the sender is then only
    /// mistaken. One claiming to come from this server itself is refused.
    /// What a server checks here, by body: Raft messages in [`Raft::step`];
    /// an InstallSnapshot that would be installed must also carry a state the
    /// state machine can restore (else the log would claim entries the state
    /// machine never gets). A `Forward` is a client request and goes through
    /// the same checks as a local one (`handle_request`); Consul forwards
    /// RPCs from any server of the datacenter, so it is taken from servers
    /// outside the Raft configuration too (one that is joining forwards to
    /// the leader). A `ForwardReply` counts only from the server the request
    /// went to and for an id in flight; any other is a late answer to a
    /// request that timed out or was routed elsewhere, and is dropped.
    fn handle_message(
        &mut self,
        now: Instant,
        m: Message,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        if m.to != self.config.node_id {
            return Ok(());
        }
        if m.from == self.config.node_id {
            return self.refuse(m.from, "a message from this server's own id".into(), out);
        }
        if m.from_address.len() > ADDRESS_BYTES_MAX {
            let reason = format!(
                "a sender address of {} bytes (at most {ADDRESS_BYTES_MAX})",
                m.from_address.len()
            );
            return self.refuse(m.from, reason, out);
        }
        // A peer we know no address for is answered at the one it gives, but
        // only once its message is known to be acceptable (refused: nothing
        // changed, the address not learned either).
        let unknown_sender = self.raft.address_of(m.from).is_none();
        match m.body {
            MessageBody::Raft(r) => {
                if let Err(reason) = self.restore_offered_snapshot(&r) {
                    return self.refuse(m.from, reason, out);
                }
                if unknown_sender {
                    if let Err(reason) = self.raft.validate(&r) {
                        return self.refuse(m.from, reason, out);
                    }
                    self.raft.learn_address(m.from, &m.from_address);
                }
                return self.raft.step(now, m.from, r, out);
            }
            MessageBody::Forward { id, request } => {
                if unknown_sender {
                    self.raft.learn_address(m.from, &m.from_address);
                }
                if self.first_time_forwarded(now, m.from, id) {
                    self.handle_request(now, Origin::Remote { from: m.from, id }, request, out)
                }
            }
            MessageBody::ForwardReply { id, response } => {
                if self.forwarded.get(&id).is_some_and(|f| f.to == m.from) {
                    let f = self.forwarded.remove(&id).expect("checked");
                    self.respond(f.origin, response, out);
                }
            }
        }
        Ok(())
    }

    fn refuse(&self, from: NodeId, reason: String, out: &mut Vec<Action>) -> Result<(), String> {
        out.push(Action::Event(Event::PeerMessageRefused {
            from,
            reason: reason.clone(),
        }));
        Err(reason)
    }

    /// Restore the state machine from a snapshot Raft would install (one
    /// from a current leader that goes past our commit index), before Raft
    /// sees it; kept for `install_snapshot`. `Err` if it cannot be restored,
    /// or is not the state after exactly the entries the snapshot covers.
    fn restore_offered_snapshot(&mut self, r: &RaftMessage) -> Result<(), String> {
        self.offered = None;
        let RaftMessage::InstallSnapshot(m) = r else {
            return Ok(());
        };
        let meta = &m.snapshot.meta;
        if m.term < self.raft.term() || meta.last_index <= self.raft.commit_index() {
            return Ok(());
        }
        let fsm = Fsm::restore(&m.snapshot.data).map_err(|e| {
            format!(
                "InstallSnapshot at {} carries a state that cannot be restored: {e}",
                meta.last_index.0
            )
        })?;
        // Else the state machine would wait forever for entries the log no
        // longer has (or skip some).
        if fsm.last_applied() != meta.last_index.0 {
            return Err(format!(
                "InstallSnapshot at {} carries a state applied up to {}",
                meta.last_index.0,
                fsm.last_applied()
            ));
        }
        self.offered = Some((meta.last_index, fsm));
        Ok(())
    }

    /// Remember `(from, id)` for twice the hold timeout (after that the
    /// forwarder has given up on it); false if it was already seen.
    fn first_time_forwarded(&mut self, now: Instant, from: NodeId, id: u64) -> bool {
        let keep = self.config.rpc_hold_timeout.saturating_mul(2);
        while let Some((t, f, i)) = self.forwards_seen_order.front().copied() {
            let full = self.forwards_seen_order.len() >= self.config.pending_requests_max;
            if !full && now.saturating_since(t) < keep {
                break;
            }
            self.forwards_seen_order.pop_front();
            self.forwards_seen.remove(&(f, i));
        }
        if !self.forwards_seen.insert((from, id)) {
            return false;
        }
        self.forwards_seen_order.push_back((now, from, id));
        true
    }

    // ----- requests -----

    fn handle_request(
        &mut self,
        now: Instant,
        origin: Origin,
        request: Request,
        out: &mut Vec<Action>,
    ) {
        if self.is_draining(now) {
            return self.respond(origin, Err(RpcError::NoLeader), out);
        }
        if request.datacenter != self.config.datacenter {
            return self.respond(origin, Err(RpcError::NoPathToDatacenter), out);
        }
        if let Err(e) = self.check_limits(&request) {
            return self.respond(origin, Err(e), out);
        }
        // A leader whose disk is full cannot append: a write is refused at
        // once, with nothing applied, rather than left to time out. A
        // follower forwards it as usual (the leader's disk may have room).
        if self.raft.disk_full() && request.op.is_write() && self.raft.role() == Role::Leader {
            return self.respond(origin, Err(RpcError::DiskFull), out);
        }
        if self.pending_requests() >= self.config.pending_requests_max {
            return self.respond(origin, Err(RpcError::Busy), out);
        }
        self.route(now, origin, request, out);
    }

    fn check_limits(&self, request: &Request) -> Result<(), RpcError> {
        let key_max = self.config.kv_key_bytes_max;
        let key = match &request.op {
            Op::KvGet { key } => Some(key),
            Op::KvList { prefix } | Op::KvKeys { prefix, .. } => Some(prefix),
            Op::KvApply(c) => {
                use crate::fsm::KvCommand::*;
                match c {
                    Set(w)
                    | Cas { write: w, .. }
                    | Lock { write: w, .. }
                    | Unlock { write: w, .. } => {
                        if w.value.len() > self.config.kv_value_bytes_max {
                            return Err(RpcError::TooLarge(format!(
                                "Value exceeds {} byte limit",
                                self.config.kv_value_bytes_max
                            )));
                        }
                        if w.key.is_empty() {
                            return Err(RpcError::BadRequest("Missing key name".into()));
                        }
                        Some(&w.key)
                    }
                    Delete { key } | DeleteCas { key, .. } => {
                        if key.is_empty() {
                            return Err(RpcError::BadRequest("Missing key name".into()));
                        }
                        Some(key)
                    }
                    DeleteTree { prefix } => Some(prefix),
                }
            }
            Op::Catalog(c) => return self.check_catalog(c),
            Op::Txn(ops) => return self.check_txn(ops),
            Op::SnapshotRestore(chunk) => {
                let max = crate::fsm::RESTORE_CHUNK_BYTES_MAX;
                if chunk.data.len() > max {
                    return Err(RpcError::TooLarge(format!(
                        "Snapshot restore chunk exceeds {max} byte limit"
                    )));
                }
                if chunk.total > self.config.snapshot_bytes_max {
                    return Err(RpcError::TooLarge(format!(
                        "Snapshot of {} bytes exceeds the {} byte limit (snapshot_bytes_max)",
                        chunk.total, self.config.snapshot_bytes_max
                    )));
                }
                None
            }
            Op::SessionCreate(s) => return check_session_create(s, self.config.session_ttl_min),
            Op::SessionDestroy { id } | Op::SessionRenew { id } | Op::SessionInfo { id }
                if id.is_empty() =>
            {
                return Err(RpcError::BadRequest("Missing session".into()))
            }
            Op::SessionNode { node } if node.is_empty() => {
                return Err(RpcError::BadRequest("Missing node name".into()))
            }
            _ => None,
        };
        if key.is_some_and(|k| k.len() > key_max) {
            return Err(RpcError::TooLarge(format!(
                "Key exceeds {key_max} byte limit"
            )));
        }
        Ok(())
    }

    /// A transaction's limits, with Consul's texts (agent/txn_endpoint.go):
    /// at most `TXN_OPS_MAX` operations, each KV value and key within the
    /// KV limits, each catalog write within the catalog's.
    fn check_txn(&self, ops: &[crate::fsm::TxnOp]) -> Result<(), RpcError> {
        use crate::fsm::{TxnOp, TXN_OPS_MAX};
        if ops.len() > TXN_OPS_MAX {
            return Err(RpcError::TooLarge(format!(
                "Transaction contains too many operations ({} > {TXN_OPS_MAX})",
                ops.len()
            )));
        }
        for op in ops {
            if let TxnOp::Kv { key, value, .. } = op {
                if value.len() > self.config.kv_value_bytes_max {
                    return Err(RpcError::TooLarge(format!(
                        "Value for key {key:?} is too large ({} > {} bytes)",
                        value.len(),
                        self.config.kv_value_bytes_max
                    )));
                }
                if key.len() > self.config.kv_key_bytes_max {
                    return Err(RpcError::TooLarge(format!(
                        "Key exceeds {} byte limit",
                        self.config.kv_key_bytes_max
                    )));
                }
            }
        }
        let bytes: usize = ops.iter().map(crate::fsm::txn::approx_bytes).sum();
        if bytes > self.config.append_bytes_max / 2 {
            return Err(RpcError::TooLarge(format!(
                "Transaction of about {bytes} bytes exceeds the {} byte limit",
                self.config.append_bytes_max / 2
            )));
        }
        Ok(())
    }

    /// A catalog write's size and Consul's pre-apply checks
    /// (`Catalog.Register`/`Deregister`), refused with Consul's text before
    /// it is routed; the state machine checks it again when applied.
    fn check_catalog(&self, op: &CatalogOp) -> Result<(), RpcError> {
        match op {
            CatalogOp::Register(reg) => {
                // A registration must fit in one AppendEntries, or
                // followers would refuse the batch that carries it.
                let max = self
                    .config
                    .catalog_register_bytes_max
                    .min(self.config.append_bytes_max.saturating_sub(1024));
                if reg.approx_bytes() > max {
                    return Err(RpcError::TooLarge(format!(
                        "Registration exceeds {max} byte limit (catalog_register_bytes_max)"
                    )));
                }
                crate::fsm::catalog::validate::normalize((**reg).clone())
                    .map(|_| ())
                    .map_err(|e| RpcError::Refused(e.to_string()))
            }
            CatalogOp::Deregister(d) if d.node.is_empty() => {
                Err(RpcError::Refused(CatalogError::MissingNode.to_string()))
            }
            CatalogOp::Deregister(_)
            | CatalogOp::Nodes { .. }
            | CatalogOp::Services { .. }
            | CatalogOp::ServiceInstances { .. }
            | CatalogOp::ServiceNodes { .. }
            | CatalogOp::NodeServices { .. }
            | CatalogOp::NodeChecks { .. }
            | CatalogOp::ServiceChecks { .. }
            | CatalogOp::ChecksInState { .. }
            | CatalogOp::ServiceHealth { .. } => Ok(()),
        }
    }

    /// Decide where a request is served: here, at the leader, or later.
    fn route(&mut self, now: Instant, origin: Origin, request: Request, out: &mut Vec<Action>) {
        self.route_within(now, origin, request, None, out)
    }

    /// `route`, for a read that was forwarded before and must be answered
    /// by `deadline` (its first forward's) wherever it goes now.
    fn route_within(
        &mut self,
        now: Instant,
        origin: Origin,
        request: Request,
        deadline: Option<Instant>,
        out: &mut Vec<Action>,
    ) {
        let local = matches!(
            request.op,
            Op::StatusLeader | Op::StatusPeers | Op::RaftConfiguration
        ) || (request.read_mode == ReadMode::Stale
            && !request.op.is_write()
            && request.op != Op::AutopilotHealth
            && !matches!(request.op, Op::SessionRenew { .. }));
        if local {
            if request.read_mode == ReadMode::Stale
                && !self.ever_had_leader
                && !is_status(&request.op)
            {
                return self.hold(now, origin, request, out);
            }
            return self.serve_read(now, origin, request, out);
        }
        match self.routable_leader() {
            Some(l) if l == self.config.node_id => self.serve_as_leader(now, origin, request, out),
            Some(l) => self.forward(now, l, origin, request, deadline, out),
            None => self.hold_within(now, origin, request, deadline),
        }
    }

    /// The leader to send requests to: none while a hint says it is gone
    /// (requests are held for the next one rather than sent into the void).
    fn routable_leader(&self) -> Option<NodeId> {
        self.raft.leader().filter(|_| !self.raft.leader_suspected())
    }

    /// The transport says `peer` is gone. Raft may campaign early; requests
    /// forwarded to `peer` stop waiting for it: a read is routed again (held
    /// until there is a leader) within its first deadline, a write is
    /// answered "outcome unknown" at once, as Consul answers a write whose
    /// connection to the leader broke.
    fn peer_unreachable(&mut self, now: Instant, peer: NodeId, out: &mut Vec<Action>) {
        self.raft.peer_unreachable(now, peer);
        let gone: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.to == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let Some(f) = self.forwarded.remove(&id) else {
                continue;
            };
            match f.read {
                Some(request) => self.forward_again(now, f.origin, request, f.deadline, out),
                None => self.respond(
                    f.origin,
                    Err(RpcError::Unknown(
                        "the connection to the leader closed before it answered".into(),
                    )),
                    out,
                ),
            }
        }
    }

    fn hold(&mut self, now: Instant, origin: Origin, request: Request, out: &mut Vec<Action>) {
        let _ = out;
        self.hold_within(now, origin, request, None)
    }

    /// Hold for at most the hold timeout, and not past `forward_deadline`,
    /// the overall deadline of a read that was forwarded before.
    fn hold_within(
        &mut self,
        now: Instant,
        origin: Origin,
        request: Request,
        forward_deadline: Option<Instant>,
    ) {
        let hold_until = now + self.config.rpc_hold_timeout;
        let deadline = forward_deadline.map_or(hold_until, |d| d.min(hold_until));
        let recheck = now + self.stagger();
        self.held.push(Held {
            origin,
            request,
            deadline,
            recheck,
            forward_deadline,
        });
    }

    /// Consul re-checks for a leader after a random stagger in `[0, hold/16)`.
    fn stagger(&mut self) -> Duration {
        let max = self.config.rpc_hold_timeout.as_nanos() / 16;
        Duration(self.rng.range(0, max.max(1)))
    }

    /// Send a request to the leader. It gives up at `deadline` if given
    /// (a read asked again keeps its first one), else at `forward_deadline`.
    fn forward(
        &mut self,
        now: Instant,
        leader: NodeId,
        origin: Origin,
        request: Request,
        deadline: Option<Instant>,
        out: &mut Vec<Action>,
    ) {
        let Some(address) = self.raft.address_of(leader).map(str::to_string) else {
            return self.hold_within(now, origin, request, deadline);
        };
        self.next_ctx += 1;
        let id = self.next_ctx;
        let deadline = deadline.unwrap_or_else(|| self.forward_deadline(now, &request));
        let read = (!request.op.is_write()).then(|| request.clone());
        self.forwarded.insert(
            id,
            Forwarded {
                origin,
                to: leader,
                deadline,
                read,
            },
        );
        out.push(Action::Send {
            address,
            message: Message {
                from: self.config.node_id,
                from_address: self.config.address.clone(),
                to: leader,
                body: MessageBody::Forward { id, request },
            },
            after: None,
        });
    }

    /// How long a forwarded request may wait for the leader's answer: the
    /// hold timeout, or for a blocking query its wait (capped, plus the up
    /// to wait/16 of jitter the leader adds) plus the hold timeout for the
    /// round trip, as Consul's `QueryOptions.HasTimedOut`
    /// (agent/structs/structs.go).
    fn forward_deadline(&self, now: Instant, request: &Request) -> Instant {
        let hold = self.config.rpc_hold_timeout;
        match request.blocking.filter(|b| b.min_index > 0) {
            Some(b) => {
                let wait = self.blocking_wait(&b);
                now + wait + wait.div(16) + hold
            }
            None => now + hold,
        }
    }

    /// The wait a blocking query gets: 5 minutes if it names none (Consul's
    /// default query time), never more than `blocking_wait_max`.
    fn blocking_wait(&self, b: &Blocking) -> Duration {
        let wait = if b.max_wait.as_nanos() == 0 {
            Duration::from_secs(300)
        } else {
            b.max_wait
        };
        wait.min(self.config.blocking_wait_max)
    }

    /// Ask again (of a new leader, or after `to` was reported gone) a read
    /// this server forwarded, within its first `deadline`: a blocking
    /// query's wait shrinks to what is left, so that the answer (wait,
    /// jitter and round trip) still fits; with nothing left it is asked
    /// without blocking and answers at once, as a wait that ended does.
    fn forward_again(
        &mut self,
        now: Instant,
        origin: Origin,
        mut request: Request,
        deadline: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(b) = request.blocking.as_mut().filter(|b| b.min_index > 0) {
            let left = deadline.saturating_since(now).as_nanos();
            let left = left.saturating_sub(self.config.rpc_hold_timeout.as_nanos());
            // wait + wait/16 <= left.
            let wait = Duration(left / 17 * 16);
            if wait < Duration::from_millis(1) {
                request.blocking = None;
            } else {
                b.max_wait = wait.min(self.blocking_wait(b));
            }
        }
        self.route_within(now, origin, request, Some(deadline), out)
    }

    /// When another server becomes the routable leader, reads forwarded to
    /// the old one are asked again of it: the old leader may never answer
    /// (it crashed, or is cut off), and a blocking query parked there would
    /// otherwise wait out its whole wait. A late answer from the old leader
    /// is dropped (`handle_message` takes only the current target's).
    fn follow_leader(&mut self, now: Instant, out: &mut Vec<Action>) {
        let leader = self.routable_leader();
        if leader == self.leader_followed {
            return;
        }
        self.leader_followed = leader;
        let Some(leader) = leader else {
            // No leader yet: keep waiting for the old one, or the next.
            return;
        };
        let moved: Vec<u64> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.to != leader && f.read.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in moved {
            let Some(f) = self.forwarded.remove(&id) else {
                continue;
            };
            let request = f.read.expect("filtered on reads");
            self.forward_again(now, f.origin, request, f.deadline, out);
        }
    }

    fn serve_as_leader(
        &mut self,
        now: Instant,
        origin: Origin,
        request: Request,
        out: &mut Vec<Action>,
    ) {
        let result = match &request.op {
            Op::KvApply(crate::fsm::KvCommand::Lock { write, .. })
                if self.in_lock_delay(now, &write.key) =>
            {
                // Consul's `kvsPreApply`: an acquire inside the key's lock
                // delay is answered false without touching the log.
                let reply = Reply {
                    index: self.raft.commit_index().0.max(1),
                    known_leader: true,
                    last_contact_ms: 0,
                    body: ReplyBody::Applied(ApplyResult::Kv(false)),
                };
                return self.respond(origin, Ok(reply), out);
            }
            Op::SessionCreate(session) => {
                let mut session = (**session).clone();
                session.id = self.new_session_id();
                let command = Command::SessionCreate(Box::new(session));
                self.raft
                    .propose(
                        now,
                        EntryPayload::Command(std::sync::Arc::new(command)),
                        out,
                    )
                    .map(|(index, term)| {
                        self.proposals.insert(index, (term, origin.clone()));
                    })
            }
            Op::SessionDestroy { id } => {
                let command = Command::SessionDestroy { id: id.clone() };
                self.raft
                    .propose(
                        now,
                        EntryPayload::Command(std::sync::Arc::new(command)),
                        out,
                    )
                    .map(|(index, term)| {
                        self.proposals.insert(index, (term, origin.clone()));
                    })
            }
            Op::SessionRenew { id } => {
                // Consul's `Session.Renew`: the leader's own state, and the
                // timer reset; no log write.
                let found: Vec<crate::fsm::Session> =
                    self.fsm.session(id).cloned().into_iter().collect();
                if let Some(ttl) = found.first().and_then(|s| s.ttl_ns()) {
                    self.session_timers.reset(now, id, ttl);
                }
                let reply = self.reply(now, self.fsm.sessions_index(), ReplyBody::Sessions(found));
                return self.respond(origin, Ok(reply), out);
            }
            Op::KvApply(c) => self
                .raft
                .propose(
                    now,
                    EntryPayload::Command(std::sync::Arc::new(Command::Kv(c.clone()))),
                    out,
                )
                .map(|(index, term)| {
                    self.proposals.insert(index, (term, origin.clone()));
                }),
            Op::Catalog(c) if c.is_write() => {
                let command = match c {
                    CatalogOp::Register(reg) => {
                        match crate::fsm::catalog::validate::normalize((**reg).clone()) {
                            Ok(reg) => Command::CatalogRegister(Box::new(reg)),
                            Err(e) => {
                                return self.respond(
                                    origin,
                                    Err(RpcError::Refused(e.to_string())),
                                    out,
                                )
                            }
                        }
                    }
                    CatalogOp::Deregister(d) => Command::CatalogDeregister(d.clone()),
                    _ => unreachable!("is_write covers only register and deregister"),
                };
                self.raft
                    .propose(
                        now,
                        EntryPayload::Command(std::sync::Arc::new(command)),
                        out,
                    )
                    .map(|(index, term)| {
                        self.proposals.insert(index, (term, origin.clone()));
                    })
            }
            Op::SnapshotRestore(chunk) => {
                self.propose_command(now, Command::RestoreChunk(chunk.clone()), &origin, out)
            }
            Op::Txn(ops) if request.op.is_write() => {
                self.propose_command(now, Command::Txn(ops.clone()), &origin, out)
            }
            Op::RaftAddNonvoter { id, name, address } => {
                let mut m = self.raft.membership().clone();
                if m.contains(*id) {
                    return self.respond(
                        origin,
                        Err(RpcError::BadRequest(format!(
                            "server {id} is already in the configuration"
                        ))),
                        out,
                    );
                }
                m.servers.insert(
                    *id,
                    Member {
                        name: name.clone(),
                        address: address.clone(),
                        suffrage: Suffrage::Nonvoter,
                    },
                );
                self.propose_membership(now, m, origin.clone(), out)
            }
            Op::RaftPromote { id } => {
                let mut m = self.raft.membership().clone();
                match m.servers.get_mut(id) {
                    Some(member) if member.suffrage == Suffrage::Nonvoter => {
                        member.suffrage = Suffrage::Voter
                    }
                    _ => {
                        return self.respond(
                            origin,
                            Err(RpcError::BadRequest(format!(
                                "server {id} is not a non-voter in the configuration"
                            ))),
                            out,
                        )
                    }
                }
                self.propose_membership(now, m, origin.clone(), out)
            }
            Op::RaftRemovePeer { id, address } => {
                let mut m = self.raft.membership().clone();
                let target = m.servers.iter().find(|(sid, member)| {
                    Some(**sid) == *id || address.as_deref() == Some(member.address.as_str())
                });
                let Some((tid, _)) = target.map(|(a, b)| (*a, b.clone())) else {
                    // Consul's `RaftRemovePeerByID` / `ByAddress` text,
                    // naming the peer by its UUID or address (the HTTP layer
                    // answers it as Consul's RPC error, a 500). A bad
                    // request to the core: callers do not retry it.
                    let what = match (id, address) {
                        (Some(i), _) => format!("id \"{i}\""),
                        (None, Some(a)) => format!("address {a:?}"),
                        (None, None) => return self.respond(origin, Err(RpcError::BadRequest("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove".into())), out),
                    };
                    return self.respond(
                        origin,
                        Err(RpcError::BadRequest(format!("{what} {UNKNOWN_PEER_TAIL}"))),
                        out,
                    );
                };
                m.servers.remove(&tid);
                self.propose_membership(now, m, origin.clone(), out)
            }
            Op::AutopilotSetConfig { config, cas } => {
                if let Err(e) = config.validate() {
                    return self.respond(
                        origin,
                        Err(RpcError::BadRequest(format!("{}: {}", e.key, e.message))),
                        out,
                    );
                }
                let command = Command::AutopilotSet {
                    config: config.clone(),
                    cas: *cas,
                };
                self.raft
                    .propose(
                        now,
                        EntryPayload::Command(std::sync::Arc::new(command)),
                        out,
                    )
                    .map(|(index, term)| {
                        self.proposals.insert(index, (term, origin.clone()));
                    })
            }
            Op::RaftTransferLeadership { to } => {
                match self.raft.transfer_leadership(now, *to, out) {
                    Ok(_) => {
                        self.transfer_waiter = Some((origin.clone(), self.raft.term()));
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            // Reads in default or consistent mode.
            _ => {
                let lease = request.read_mode == ReadMode::Default && self.raft.lease_valid(now);
                if lease || self.bug_stale_read(&request) {
                    return self.serve_read(now, origin, request, out);
                }
                self.next_ctx += 1;
                let ctx = self.next_ctx;
                self.raft.read_index(now, ctx, out).map(|()| {
                    self.reads.insert(ctx, (origin.clone(), request.clone()));
                })
            }
        };
        match result {
            Ok(()) => {}
            Err(ProposeError::NotLeader) | Err(ProposeError::TransferInProgress) => {
                self.hold(now, origin, request, out)
            }
            Err(ProposeError::Busy) => self.respond(origin, Err(RpcError::Busy), out),
            Err(ProposeError::DiskFull) => self.respond(origin, Err(RpcError::DiskFull), out),
            Err(ProposeError::ConfigChangeInProgress) => {
                // Another configuration change is committing: wait and retry.
                self.hold(now, origin, request, out)
            }
            Err(ProposeError::BadChange(s)) => {
                self.respond(origin, Err(RpcError::BadRequest(s)), out)
            }
        }
    }

    /// Append `command` and answer `origin` once it is applied.
    fn propose_command(
        &mut self,
        now: Instant,
        command: Command,
        origin: &Origin,
        out: &mut Vec<Action>,
    ) -> Result<(), ProposeError> {
        let (index, term) = self.raft.propose(
            now,
            EntryPayload::Command(std::sync::Arc::new(command)),
            out,
        )?;
        self.proposals.insert(index, (term, origin.clone()));
        Ok(())
    }

    fn propose_membership(
        &mut self,
        now: Instant,
        m: Membership,
        origin: Origin,
        out: &mut Vec<Action>,
    ) -> Result<(), ProposeError> {
        let (index, term) = self.raft.propose(now, EntryPayload::Membership(m), out)?;
        self.proposals.insert(index, (term, origin));
        Ok(())
    }

    /// Serve a read from local state; park it if it is a blocking query
    /// whose index has not moved yet.
    fn serve_read(
        &mut self,
        now: Instant,
        origin: Origin,
        request: Request,
        out: &mut Vec<Action>,
    ) {
        let (index, body) = self.read_local(&request.op);
        if let Some(b) = request.blocking {
            if b.min_index > 0 && index <= b.min_index {
                let wait = self.blocking_wait(&b);
                // Consul adds up to wait/16 of jitter so that many blocked
                // clients do not return at once.
                let jitter = Duration(self.rng.range(0, wait.as_nanos() / 16 + 1));
                let deadline = now + wait + jitter;
                let op = request.op.clone();
                self.parked
                    .park(&op, deadline, ParkedQuery { origin, request });
                return;
            }
        }
        let reply = self.reply(now, index, body);
        self.respond(origin, Ok(reply), out);
    }

    fn read_local(&self, op: &Op) -> (u64, ReplyBody) {
        let commit = self.raft.commit_index().0;
        match op {
            Op::KvGet { key } => (
                self.fsm.kv_index_for_key(key),
                ReplyBody::Entry(self.fsm.kv_dir_entry(key)),
            ),
            Op::KvList { prefix } => (
                self.fsm.kv_index_for_prefix(prefix),
                ReplyBody::Entries(self.fsm.kv_dir_list(prefix)),
            ),
            Op::KvKeys { prefix, separator } => (
                self.fsm.kv_index_for_prefix(prefix),
                ReplyBody::Keys(self.fsm.kv_keys(prefix, separator.as_deref())),
            ),
            Op::StatusLeader => {
                let addr = self
                    .raft
                    .leader()
                    .and_then(|l| self.raft.address_of(l))
                    .map(str::to_string);
                (commit, ReplyBody::Leader(addr))
            }
            Op::StatusPeers => {
                let m = self.raft.membership();
                let peers = m
                    .voters()
                    .filter_map(|v| m.servers.get(&v))
                    .map(|s| s.address.clone())
                    .collect();
                (commit, ReplyBody::Peers(peers))
            }
            Op::RaftConfiguration => {
                let m = self.raft.membership();
                let leader = self.raft.leader();
                let servers = m
                    .servers
                    .iter()
                    .map(|(id, s)| RaftServer {
                        id: *id,
                        node: s.name.clone(),
                        address: s.address.clone(),
                        leader: leader == Some(*id),
                        voter: s.suffrage == Suffrage::Voter,
                    })
                    .collect();
                // hashicorp/raft's `GetConfiguration().Index()`: where the
                // configuration in effect was written.
                (
                    commit,
                    ReplyBody::Configuration {
                        servers,
                        index: self.raft.membership_index().0,
                    },
                )
            }
            // The leader's last sample (a follower has none: it answers
            // only once forwarded, see `route_within`).
            Op::AutopilotHealth => (commit, ReplyBody::AutopilotHealth(self.autopilot.reply())),
            Op::Catalog(c) => self.read_catalog(c),
            Op::SnapshotIndex => (self.fsm.index(), ReplyBody::Done),
            Op::Txn(ops) => (self.fsm.index(), ReplyBody::Txn(self.fsm.txn_read(ops))),
            Op::SessionInfo { id } => (
                self.fsm.sessions_index(),
                ReplyBody::Sessions(self.fsm.session(id).cloned().into_iter().collect()),
            ),
            Op::SessionNode { node } => (
                self.fsm.sessions_index(),
                ReplyBody::Sessions(self.fsm.node_sessions(node)),
            ),
            Op::SessionList => (
                self.fsm.sessions_index(),
                ReplyBody::Sessions(self.fsm.sessions()),
            ),
            Op::AutopilotGetConfig => {
                let stored = self.fsm.autopilot().cloned().unwrap_or(StoredAutopilot {
                    config: self.config.autopilot.clone(),
                    create_index: 0,
                    modify_index: 0,
                });
                (stored.modify_index, ReplyBody::AutopilotConfig(stored))
            }
            // Writes never reach here.
            _ => (commit, ReplyBody::Done),
        }
    }

    /// A catalog read from local state, with the index Consul answers it
    /// with.
    fn read_catalog(&self, op: &CatalogOp) -> (u64, ReplyBody) {
        let (index, reply) = match op {
            CatalogOp::Nodes { node_meta } => {
                let (i, nodes) = self.fsm.catalog_nodes(node_meta);
                (i, CatalogReply::Nodes(nodes))
            }
            CatalogOp::Services { node_meta } => {
                let (i, services) = self.fsm.catalog_services(node_meta);
                (i, CatalogReply::Services(services))
            }
            CatalogOp::ServiceInstances { node_meta } => {
                let (i, found) = self.fsm.catalog_service_instances(node_meta);
                (i, CatalogReply::ServiceNodes(found))
            }
            CatalogOp::ServiceNodes {
                service,
                tags,
                node_meta,
            } => {
                let (i, found) = self.fsm.catalog_service_nodes(service, tags, node_meta);
                (i, CatalogReply::ServiceNodes(found))
            }
            CatalogOp::NodeServices { node } => {
                let (i, found) = self.fsm.catalog_node_services(node);
                (i, CatalogReply::NodeServices(found.map(Box::new)))
            }
            CatalogOp::NodeChecks { node } => {
                let (i, checks) = self.fsm.catalog_node_checks(node);
                (i, CatalogReply::Checks(checks))
            }
            CatalogOp::ServiceChecks { service, node_meta } => {
                let (i, checks) = self.fsm.catalog_service_checks(service, node_meta);
                (i, CatalogReply::Checks(checks))
            }
            CatalogOp::ChecksInState { state, node_meta } => {
                let (i, checks) = self.fsm.catalog_checks_in_state(state, node_meta);
                (i, CatalogReply::Checks(checks))
            }
            CatalogOp::ServiceHealth {
                service,
                tags,
                node_meta,
            } => {
                let (i, found) = self.fsm.catalog_service_health(service, tags, node_meta);
                (i, CatalogReply::ServiceHealth(found))
            }
            // Writes never reach here (`serve_as_leader` proposes them).
            CatalogOp::Register(_) | CatalogOp::Deregister(_) => {
                return (self.raft.commit_index().0, ReplyBody::Done)
            }
        };
        (index, ReplyBody::Catalog(reply))
    }

    fn reply(&self, now: Instant, index: u64, body: ReplyBody) -> Reply {
        let leader = self.raft.leader();
        let last_contact_ms = if leader == Some(self.config.node_id) {
            0
        } else {
            self.raft
                .last_leader_contact()
                .map_or(0, |t| now.saturating_since(t).as_millis())
        };
        Reply {
            index: index.max(1),
            known_leader: leader.is_some(),
            last_contact_ms,
            body,
        }
    }

    fn respond(&mut self, origin: Origin, response: Response, out: &mut Vec<Action>) {
        match origin {
            Origin::Local(id) => out.push(Action::Respond { id, response }),
            Origin::Remote { from, id } => {
                if let Some(address) = self.raft.address_of(from).map(str::to_string) {
                    out.push(Action::Send {
                        address,
                        message: Message {
                            from: self.config.node_id,
                            from_address: self.config.address.clone(),
                            to: from,
                            body: MessageBody::ForwardReply { id, response },
                        },
                        // A reply reflects committed state, which a quorum
                        // holds durably; nothing of ours needs to be on disk.
                        after: None,
                    });
                }
            }
        }
    }

    fn leave(&mut self, now: Instant, out: &mut Vec<Action>) {
        // Leaving twice changes nothing: the first drain runs its course.
        if self.left || self.draining_until.is_some() {
            return;
        }
        if self.raft.role() == Role::Leader && self.raft.membership().voter_count() > 1 {
            let _ = self.raft.transfer_leadership(now, None, out);
        }
        self.draining_until = Some(now + self.config.leave_drain_time);
        // As Consul's `Server.Leave`: with other voters, wait (bounded) for
        // the leader to take this server out of the configuration once
        // gossip says it left, so stopping it cannot cost the quorum.
        let me = self.config.node_id;
        let m = self.raft.membership();
        if m.contains(me) && m.voters().any(|v| v != me) {
            self.removal_deadline = Some(now + RAFT_REMOVE_GRACE);
        }
    }

    /// The leave completes once the drain is over, this server was
    /// removed from the configuration (or waiting for that timed out), and
    /// every write it proposed has been answered: a former leader learns
    /// the outcome of its writes from the next leader (`fail_proposals`),
    /// at the latest from the entries its removal sends it, so a client
    /// whose write it proposed gets the answer, not a closed connection
    /// (bounded by `rpc_hold_timeout` after the drain).
    fn finish_leave(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(drain) = self.draining_until else {
            return;
        };
        let me = self.config.node_id;
        let removed = !self.raft.membership().contains(me);
        let waited = self.removal_deadline.is_none_or(|d| now >= d);
        let leading =
            self.raft.role() == Role::Leader && self.raft.membership().voters().any(|v| v != me);
        if leading && self.raft.transfer_target().is_none() {
            // The hand-over did not happen (the target lost the election,
            // or its TimeoutNow was lost): try again, so a leaving leader
            // does not stop while its followers still send it requests.
            let _ = self.raft.transfer_leadership(now, None, out);
        }
        let given_up = now >= drain + self.config.rpc_hold_timeout;
        let answered = self.proposals.is_empty() && self.forwarded.is_empty();
        if now >= drain && (removed || waited) && ((answered && !leading) || given_up) {
            self.draining_until = None;
            self.removal_deadline = None;
            self.left = true;
            out.push(Action::Event(Event::Left));
        }
    }

    /// Consul's leader `reconcile`: bring the Raft configuration in line
    /// with what gossip says of the datacenter's servers, one change at a
    /// time (`crate::reconcile`). A new alive server joins as a non-voter
    /// (autopilot promotes it), a server that left is removed, a server
    /// whose address another node id now holds is replaced.
    fn run_reconcile(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.raft.role() != Role::Leader {
            self.reconciled_term = None;
            return;
        }
        if self.reconciled_term != Some(self.raft.term()) {
            self.reconciled_term = Some(self.raft.term());
            self.reconciler.touch();
        }
        if !self.reconciler.is_dirty()
            || self.is_draining(now)
            || self.raft.membership_change_pending()
            || !self.raft.committed_in_term()
        {
            return;
        }
        match self
            .reconciler
            .plan(self.config.node_id, self.raft.membership())
        {
            None => self.reconciler.settled(),
            Some(Err(refused)) => {
                out.push(Action::Event(Event::Reconcile(refused)));
                self.reconciler.settled();
            }
            Some(Ok((membership, event))) => {
                // Refused (Busy, a transfer, a full disk): tried again at
                // the next input; it stays dirty until a look finds nothing.
                if self
                    .raft
                    .propose(now, EntryPayload::Membership(membership), out)
                    .is_ok()
                {
                    out.push(Action::Event(Event::Reconcile(event)));
                }
            }
        }
    }

    /// Consul's leader `reconcileMember`: one catalog write at a time
    /// brings a LAN member's node, `serfHealth` check and (for a server)
    /// `consul` service in line with gossip; nothing is written when the
    /// catalog already says it (`crate::serf_health`).
    fn run_serf_health(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.raft.role() != Role::Leader {
            if self.serf_health_term.take().is_some() {
                self.serf_health.reset();
            }
            return;
        }
        if self.serf_health_term != Some(self.raft.term()) {
            self.serf_health_term = Some(self.raft.term());
            self.serf_health.reset();
        }
        if self.is_draining(now)
            || !self.raft.committed_in_term()
            || !self.serf_health.due(self.fsm.last_applied())
        {
            return;
        }
        let Some(command) = self.serf_health.plan(
            &self.fsm,
            &self.config.node_name.0,
            &self.config.datacenter.0,
        ) else {
            return;
        };
        // Refused (Busy, a transfer, a full disk): looked at again at the
        // next input.
        match self.raft.propose(
            now,
            EntryPayload::Command(std::sync::Arc::new(command)),
            out,
        ) {
            Ok((index, _)) => self.serf_health.proposed(index.0),
            Err(_) => self.serf_health.reset(),
        }
    }

    /// Whether an acquire of `key` must wait for its lock delay (Consul's
    /// `KVSLockDelay` check in `kvsPreApply`): a session's end released it
    /// less than that session's lock delay ago on this server's clock, or
    /// this server's state came from a snapshot within
    /// `lock_delay_unknown` and the key was locked once and is free.
    fn in_lock_delay(&self, now: Instant, key: &str) -> bool {
        #[cfg(feature = "bugs")]
        if self.config.bugs.lock_delay_ignored {
            return false;
        }
        if self.lock_delays.get(key).is_some_and(|t| *t > now) {
            return true;
        }
        // A write that may end a session is in the log and not applied yet:
        // the acquire would follow it in the log, after a release whose
        // lock delay is not known here yet. Consul checks only the delays
        // already recorded, so an acquire racing an invalidation can take
        // the lock at once; this waits (answers false) instead. Found by
        // the lock-mutual-exclusion scenario, seed 18.
        let last = self.raft.log().last_index().0;
        let ends_sessions = (self.fsm.last_applied() + 1..=last).any(|i| {
            self.raft.log().entry(LogIndex(i)).is_some_and(|e| {
                matches!(&e.payload, EntryPayload::Command(c) if matches!(
                    c.as_ref(),
                    Command::SessionDestroy { .. }
                        | Command::CatalogRegister(_)
                        | Command::CatalogDeregister(_)
                ))
            })
        });
        if ends_sessions {
            return true;
        }
        self.lock_delay_blanket.is_some_and(|t| t > now)
            && self
                .fsm
                .kv_dir_entry(key)
                .is_some_and(|e| e.lock_index > 0 && e.session.is_empty())
    }

    /// A session ID no session has: a UUID-shaped string of 128 bits from
    /// the core's seeded RNG (Consul's `uuid.GenerateUUID`, checked for
    /// uniqueness as Consul's `Session.Apply` does).
    fn new_session_id(&mut self) -> String {
        loop {
            let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
            let id = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xFFFF,
                a & 0xFFFF,
                b >> 48,
                b & 0xFFFF_FFFF_FFFF
            );
            if self.fsm.session(&id).is_none() {
                return id;
            }
        }
    }

    /// Consul's `session_ttl.go` on the leader: once it has committed an
    /// entry of its term, every TTL session gets a timer at TTL × 2 from
    /// now; a timer that runs out proposes the session's destroy (tried
    /// again a second later if the log refuses it). Off the leader there
    /// are no timers.
    fn run_session_timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.raft.role() != Role::Leader || self.is_draining(now) {
            if self.session_timers_term.take().is_some() || !self.session_timers.is_empty() {
                self.session_timers.clear_all();
            }
            return;
        }
        if !self.raft.committed_in_term() {
            return;
        }
        if self.session_timers_term != Some(self.raft.term()) {
            self.session_timers_term = Some(self.raft.term());
            self.session_timers.clear_all();
            for s in self.fsm.sessions() {
                if let Some(ttl) = s.ttl_ns() {
                    self.session_timers.reset(now, &s.id, ttl);
                }
            }
        }
        for id in self.session_timers.take_due(now) {
            if self.fsm.session(&id).is_none() {
                continue;
            }
            let command = Command::SessionDestroy { id: id.clone() };
            if self
                .raft
                .propose(
                    now,
                    EntryPayload::Command(std::sync::Arc::new(command)),
                    out,
                )
                .is_err()
            {
                self.session_timers.set(&id, now + SESSION_DESTROY_RETRY);
            }
        }
    }

    /// What an applied command means for the session timers (on the
    /// leader) and the lock delays and parked queries (everywhere).
    fn after_apply(&mut self, now: Instant, cmd: &Command, result: &ApplyResult) {
        for (key, ns) in self.fsm.take_lock_delays() {
            if self.lock_delays.len() >= 4096 {
                self.lock_delays.retain(|_, t| *t > now);
            }
            self.lock_delays.insert(key, now + Duration(ns));
        }
        for key in self.fsm.take_touched_keys() {
            self.touched.keys.insert(key);
        }
        if self.session_timers_term.is_none() {
            return;
        }
        match (cmd, result) {
            (Command::SessionCreate(s), ApplyResult::Session(id)) => {
                if let Some(ttl) = s.ttl_ns() {
                    self.session_timers.reset(now, id, ttl);
                }
            }
            (Command::SessionDestroy { id }, _) => self.session_timers.clear(id),
            _ => {}
        }
    }

    // ----- after every input -----

    fn after(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.raft.leader().is_some() {
            self.ever_had_leader = true;
        }
        if let Some(snap) = self.raft.take_installed_snapshot() {
            self.install_snapshot(now, snap, out);
            if self.fatal.is_some() {
                return;
            }
        }
        self.offered = None;
        let applied_any = self.apply_committed(now, out);
        self.finish_reads(now, out);
        self.fail_proposals(now, out);
        self.reap_tombstones(now, out);
        self.finish_transfer(out);
        if applied_any || !self.touched.is_empty() {
            self.wake_parked(now, out);
        }
        self.follow_leader(now, out);
        self.retry_held(now, out);
        self.maybe_snapshot(now, out);
        self.run_reconcile(now, out);
        self.run_serf_health(now, out);
        self.run_session_timers(now, out);
        self.store_autopilot_config(now, out);
        self.run_autopilot(now, out);
        self.finish_leave(now, out);
        // Entries the log dropped go to the driver to free where no
        // request waits (`LogGarbage`).
        if let Some(garbage) = self.raft.take_log_garbage() {
            out.push(Action::Discard(garbage));
        }
    }

    /// Autopilot runs with the replicated configuration once one is stored;
    /// until then with the agent's own, which a leader stores (CAS 0: only
    /// if none is) once per term, as Consul's leader does when it is
    /// established (`getOrCreateAutopilotConfig`).
    fn store_autopilot_config(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(stored) = self.fsm.autopilot() {
            if stored.config != self.config.autopilot {
                self.config.autopilot = stored.config.clone();
            }
            return;
        }
        let term = self.raft.term();
        if self.raft.role() != Role::Leader
            || self.autopilot_stored_in == Some(term)
            || !self.raft.committed_in_term()
            || self.is_draining(now)
        {
            return;
        }
        let command = Command::AutopilotSet {
            config: self.config.autopilot.clone(),
            cas: Some(0),
        };
        // Refused (Busy, a full disk): tried again at the next input.
        if self
            .raft
            .propose(
                now,
                EntryPayload::Command(std::sync::Arc::new(command)),
                out,
            )
            .is_ok()
        {
            self.autopilot_stored_in = Some(term);
        }
    }

    /// Consul's autopilot loop on the leader (`autopilot.go`): health every
    /// `server_health_interval`, and every `autopilot_interval` one
    /// promotion or dead-server removal, proposed like any membership
    /// change (`propose_membership`'s path, with no client waiting).
    fn run_autopilot(&mut self, now: Instant, out: &mut Vec<Action>) {
        let leading = self.raft.role() == Role::Leader && !self.is_draining(now);
        let mut events = Vec::new();
        let change = self
            .autopilot
            .poll(now, &self.config, &self.raft, leading, &mut events);
        for e in events {
            out.push(Action::Event(Event::Autopilot(e)));
        }
        if let Some((membership, event)) = change {
            // Refused (Busy, a transfer, a full disk): tried again at the
            // next interval.
            if self
                .raft
                .propose(now, EntryPayload::Membership(membership), out)
                .is_ok()
            {
                out.push(Action::Event(Event::Autopilot(event)));
                self.autopilot.proposed(now, &self.config);
            }
        }
        assert!(
            self.autopilot.poll_timeout().is_none_or(|t| t > now),
            "autopilot asks for a time already past"
        );
    }

    fn install_snapshot(&mut self, now: Instant, snap: Snapshot, out: &mut Vec<Action>) {
        // Raft installs a whole InstallSnapshot only once
        // `restore_offered_snapshot` restored it; a snapshot assembled from
        // pieces is restored here, after its crc32c matched.
        let restored = match self.offered.take() {
            Some((index, fsm)) if index == snap.meta.last_index => Ok(fsm),
            _ => Fsm::restore(&snap.data)
                .map_err(|e| e.to_string())
                .and_then(|fsm| {
                    if fsm.last_applied() == snap.meta.last_index.0 {
                        Ok(fsm)
                    } else {
                        Err(format!("it is applied up to {}", fsm.last_applied()))
                    }
                }),
        };
        match restored {
            Ok(fsm) => {
                self.fsm = fsm;
                self.touched.all = true;
                // The lock delays of what the snapshot covers are unknown
                // here (they are never replicated).
                self.lock_delay_blanket = Some(now + self.config.lock_delay_unknown);
                self.applied_since_snapshot = 0;
                // Proposals at or below the snapshot were decided by someone
                // else's log; their outcome is unknown to us.
                let upto = snap.meta.last_index;
                let decided: Vec<LogIndex> =
                    self.proposals.range(..=upto).map(|(i, _)| *i).collect();
                self.answer_lost(decided, out);
            }
            Err(e) => {
                // The leader sent a whole snapshot (its crc32c matched) that
                // our state machine cannot restore. Applying entries on top of
                // the old state would diverge; stop instead.
                self.fatal = Some(format!(
                    "the snapshot at index {} from the leader cannot be restored: {e}",
                    snap.meta.last_index.0
                ));
                out.push(Action::Event(Event::Fatal {
                    reason: self.fatal.clone().unwrap_or_default(),
                }));
            }
        }
    }

    fn apply_committed(&mut self, now: Instant, out: &mut Vec<Action>) -> bool {
        let commit = self.raft.commit_index();
        let mut applied_any = false;
        while self.fsm.last_applied() < commit.0 {
            let index = LogIndex(self.fsm.last_applied() + 1);
            let Some(entry) = self.raft.log().entry(index) else {
                break;
            };
            let term = entry.term;
            // An `Arc` for a command: cheap, and it frees `self`.
            let payload = entry.payload.clone();
            let result = match &payload {
                EntryPayload::Command(c) => {
                    let topics = self.fsm.catalog_topics(c);
                    let r = self.fsm.apply(index.0, c);
                    self.after_apply(now, c, &r);
                    self.touched.command(c);
                    if !topics.is_empty() {
                        // A catalog write may undo what gossip says (a
                        // deregistered server node): look again.
                        self.serf_health.touch();
                        let ok = matches!(r, ApplyResult::Catalog(Ok(())));
                        self.serf_health.applied(index.0, c, ok);
                    }
                    self.touched.catalog_topics(topics);
                    if let Command::TombstoneReap { upto } = c.as_ref() {
                        self.tombstone_gc.reaped(*upto);
                    } else if self.fsm.left_tombstones(index.0, c) {
                        self.tombstone_gc.hint(now, self.fsm.index_at(index.0));
                    }
                    if let ApplyResult::Restore(Ok(RestoreProgress {
                        restored_index: Some(_),
                        ..
                    })) = &r
                    {
                        // The state was replaced: answer every parked query,
                        // and a leader arms its TTL timers afresh for the
                        // restored sessions.
                        self.touched.abandon = true;
                        self.session_timers_term = None;
                    }
                    Some(r)
                }
                _ => {
                    self.fsm.apply_other(index.0);
                    self.touched.any = true;
                    None
                }
            };
            self.tombstone_gc.applied_through(index.0);
            applied_any = true;
            self.applied_since_snapshot += 1;
            out.push(Action::Event(Event::Applied {
                index,
                term,
                state_hash: self.fsm.state_hash(),
            }));
            if let Some((pterm, origin)) = self.proposals.remove(&index) {
                let response = if pterm == term {
                    let body = match result {
                        Some(r) => ReplyBody::Applied(r),
                        None => ReplyBody::Done,
                    };
                    Ok(Reply {
                        index: self.fsm.index_at(index.0),
                        known_leader: true,
                        last_contact_ms: 0,
                        body,
                    })
                } else {
                    Err(RpcError::Unknown(
                        "leadership lost while committing log".into(),
                    ))
                };
                self.respond(origin, response, out);
            }
        }
        applied_any
    }

    /// Consul's leader loop: the tombstone GC runs only on the leader; a new
    /// leader hints its last log index (`establishLeadership`), so the
    /// tombstones of earlier terms are reaped one TTL after it took over.
    /// When a bin expires, one reap is proposed through the log like any
    /// command (`reapTombstones`), once the leader has committed an entry
    /// of its term, and only if it would remove something.
    fn reap_tombstones(&mut self, now: Instant, out: &mut Vec<Action>) {
        let leading = self.raft.role() == Role::Leader;
        if leading != self.tombstone_gc.is_enabled() {
            self.tombstone_gc.set_enabled(leading);
            if leading {
                let last = self.raft.log().last_index().0;
                self.tombstone_gc.hint(now, self.fsm.index_at(last));
            }
        }
        // Expired bins move into the due reap on every input, so the GC's
        // timer is always in the future (no busy loop while a reap waits).
        let due = self.tombstone_gc.poll_reap(now);
        assert!(
            self.tombstone_gc.next_expiry().is_none_or(|t| t > now),
            "the tombstone GC asks for a time already past"
        );
        let Some(upto) = due else {
            return;
        };
        // Hints are applied indexes or the log's end at the election, which
        // the committed no-op of this term covers: once that is committed
        // and applied through `upto`, the state machine knows every
        // tombstone a reap would take.
        if !self.raft.committed_in_term() || self.fsm.index() < upto {
            return;
        }
        if !self.fsm.has_tombstones_upto(upto) {
            self.tombstone_gc.reaped(upto);
            return;
        }
        let reap = EntryPayload::Command(std::sync::Arc::new(Command::TombstoneReap { upto }));
        // On Busy or a transfer under way the reap stays due: the next
        // input (a heartbeat tick at the latest) tries again.
        if let Ok((index, _)) = self.raft.propose(now, reap, out) {
            self.tombstone_gc.proposed(index.0);
        }
    }

    fn finish_reads(&mut self, now: Instant, out: &mut Vec<Action>) {
        for ctx in self.raft.take_failed_reads() {
            if let Some((origin, request)) = self.reads.remove(&ctx) {
                // Leadership was lost before the read was confirmed: route it
                // again (to the new leader, or hold).
                self.route(now, origin, request, out);
            }
        }
        for (ctx, index) in self.raft.take_ready_reads() {
            if let Some((origin, request)) = self.reads.remove(&ctx) {
                self.confirmed_reads.push(ConfirmedRead {
                    index,
                    origin,
                    request,
                });
            }
        }
        let applied = self.last_applied();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|r| r.index <= applied);
        self.confirmed_reads = waiting;
        for r in ready {
            self.serve_read(now, r.origin, r.request, out);
        }
    }

    /// Proposals made as leader of an earlier term (leadership moved on,
    /// as on every graceful leave) wait to learn their outcome: an entry
    /// this server proposed that the next leader commits with the term it
    /// was proposed in is that proposal (Log Matching), so it is answered
    /// with its result when applied here; one replaced by another entry is
    /// answered "leadership lost" when its index is applied
    /// (`apply_committed`). Whatever is still unknown `rpc_hold_timeout`
    /// after leadership was lost is answered "leadership lost": the
    /// outcome is unknown, never "failed".
    fn fail_proposals(&mut self, now: Instant, out: &mut Vec<Action>) {
        let (term, leading) = (self.raft.term(), self.raft.role() == Role::Leader);
        let stale: Vec<LogIndex> = self
            .proposals
            .iter()
            .filter(|(_, (t, _))| *t < term || !leading)
            .map(|(i, _)| *i)
            .collect();
        if stale.is_empty() {
            self.orphans_until = None;
            return;
        }
        let until = *self
            .orphans_until
            .get_or_insert(now + self.config.rpc_hold_timeout);
        if now >= until {
            self.orphans_until = None;
            self.answer_lost(stale, out);
        }
    }

    /// Answer these proposals "outcome unknown": their entries may yet be
    /// committed by another leader, so they are never reported as failed.
    fn answer_lost(&mut self, indexes: Vec<LogIndex>, out: &mut Vec<Action>) {
        for i in indexes {
            if let Some((_, origin)) = self.proposals.remove(&i) {
                let lost = RpcError::Unknown("leadership lost while committing log".into());
                self.respond(origin, Err(lost), out);
            }
        }
    }

    fn finish_transfer(&mut self, out: &mut Vec<Action>) {
        let Some((_, term)) = &self.transfer_waiter else {
            return;
        };
        let done = self.raft.role() != Role::Leader || self.raft.term() > *term;
        let failed = !done && self.raft.transfer_target().is_none();
        if done || failed {
            let (origin, _) = self.transfer_waiter.take().expect("checked");
            let response = if done {
                Ok(self.reply_done())
            } else {
                Err(RpcError::Unknown("leadership transfer timed out".into()))
            };
            self.respond(origin, response, out);
        }
    }

    fn reply_done(&self) -> Reply {
        Reply {
            index: self.fsm.index_at(self.raft.commit_index().0).max(1),
            known_leader: self.raft.leader().is_some(),
            last_contact_ms: 0,
            body: ReplyBody::Done,
        }
    }

    /// The index a parked query waits to see pass its `min_index`: the
    /// last change to what it reads. For a key or a prefix that is narrower
    /// than the index it answers with (a missing key answers with the table
    /// index), so a query on a missing key is not woken by writes to other
    /// keys, as Consul's watch on the key's node is not.
    fn watch_index(&self, op: &Op) -> u64 {
        match op {
            Op::KvGet { key } => self.fsm.kv_change_index_for_key(key),
            Op::KvList { prefix } | Op::KvKeys { prefix, .. } => {
                self.fsm.kv_change_index_for_prefix(prefix)
            }
            // The index a catalog read answers with, without building the
            // answer.
            Op::Catalog(CatalogOp::ServiceNodes { service, .. }) => {
                self.fsm.catalog_service_index(service)
            }
            Op::Catalog(CatalogOp::NodeServices { node }) => self.fsm.catalog_node_index(node),
            Op::Catalog(CatalogOp::NodeChecks { .. }) => {
                self.fsm.catalog_checks_index(&Default::default())
            }
            Op::Catalog(
                CatalogOp::ServiceChecks { node_meta, .. }
                | CatalogOp::ChecksInState { node_meta, .. },
            ) => self.fsm.catalog_checks_index(node_meta),
            Op::Catalog(CatalogOp::ServiceHealth { service, .. }) => {
                self.fsm.catalog_health_index(service)
            }
            Op::SessionInfo { .. } | Op::SessionNode { .. } | Op::SessionList => {
                self.fsm.sessions_index()
            }
            _ => self.read_local(op).0,
        }
    }

    /// Answer the parked queries what was applied moved past their
    /// `min_index`; only those it can concern are looked at.
    fn wake_parked(&mut self, now: Instant, out: &mut Vec<Action>) {
        let touched = std::mem::take(&mut self.touched);
        let mut parked = std::mem::take(&mut self.parked);
        let woken = parked.take_woken(&touched, |p| {
            let min = p.request.blocking.map_or(0, |b| b.min_index);
            self.watch_index(&p.request.op) > min
        });
        self.parked = parked;
        for p in woken {
            let mut request = p.request;
            request.blocking = None;
            self.serve_read(now, p.origin, request, out);
        }
    }

    fn retry_held(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.held.is_empty() {
            return;
        }
        let leader_known = self.routable_leader().is_some();
        let held = std::mem::take(&mut self.held);
        for h in held {
            if leader_known || now >= h.recheck {
                if leader_known {
                    self.route_within(now, h.origin, h.request, h.forward_deadline, out);
                } else {
                    let recheck = now + self.stagger();
                    self.held.push(Held { recheck, ..h });
                }
            } else {
                self.held.push(h);
            }
        }
    }

    /// Timeouts of held, forwarded and parked requests.
    fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        let held = std::mem::take(&mut self.held);
        for h in held {
            if now >= h.deadline {
                self.respond(h.origin, Err(RpcError::NoLeader), out);
            } else {
                self.held.push(h);
            }
        }
        for f in self.forwarded.take_due(now) {
            self.respond(
                f.origin,
                Err(RpcError::Unknown(
                    "timed out waiting for the leader's answer".into(),
                )),
                out,
            );
        }
        for p in self.parked.take_due(now) {
            let mut request = p.request;
            request.blocking = None;
            self.serve_read(now, p.origin, request, out);
        }
    }

    /// Asks the driver to encode a snapshot once `snapshot_threshold`
    /// entries were applied since the last one (looked at every
    /// `snapshot_interval`, staggered). The state machine is not encoded
    /// here: the action carries a point-in-time view (O(1)), the driver
    /// encodes it off the agent task, and `snapshot_built` saves it.
    fn maybe_snapshot(&mut self, now: Instant, out: &mut Vec<Action>) {
        // One build at a time; look again once it is back.
        if now < self.next_snapshot_check || self.snapshot_building.is_some() {
            return;
        }
        // A snapshot file is written beside the log (`Outbox`), so it may
        // reach the disk before appends still in flight: take it only at an
        // index the log already holds durably, so that recovery always finds
        // the snapshot's last entry in the log. Until then, look again after
        // every input (the log becomes durable within one fsync).
        if self.applied_since_snapshot >= self.config.snapshot_threshold
            && self.last_applied() > self.raft.durable_index()
        {
            return;
        }
        let interval = self.config.snapshot_interval;
        self.next_snapshot_check =
            now + interval + Duration(self.rng.range(0, interval.as_nanos().max(1)));
        if self.applied_since_snapshot < self.config.snapshot_threshold {
            return;
        }
        let last_index = self.last_applied();
        let Some(last_term) = self.raft.log().term_at(last_index) else {
            return;
        };
        let meta = SnapshotMeta {
            last_index,
            last_term,
            membership: self.raft.membership_at(last_index),
        };
        self.applied_since_snapshot = 0;
        self.snapshot_building = Some(last_index);
        out.push(Action::BuildSnapshot {
            meta,
            view: self.fsm.view(),
        });
    }

    /// The driver encoded the snapshot `maybe_snapshot` asked for: save it
    /// (Raft compacts the log once it is durable). Dropped if this
    /// incarnation did not ask for it, or if a snapshot at or past it is
    /// already held (one installed from the leader while it was encoded):
    /// an older state never replaces a newer one.
    fn snapshot_built(&mut self, meta: SnapshotMeta, data: Vec<u8>, out: &mut Vec<Action>) {
        if self.snapshot_building != Some(meta.last_index) {
            return;
        }
        self.snapshot_building = None;
        let newer_held = self
            .raft
            .snapshot_meta()
            .is_some_and(|s| s.last_index >= meta.last_index);
        if newer_held {
            return;
        }
        // Committed entries never change, and nothing compacts past the
        // held snapshot: the entry the view was taken at is still there.
        assert_eq!(
            self.raft.log().term_at(meta.last_index),
            Some(meta.last_term),
            "the log changed under a snapshot being built"
        );
        self.raft.snapshot_taken(
            Snapshot {
                meta,
                data: data.into(),
            },
            self.config.trailing_logs,
            out,
        );
    }

    #[cfg(feature = "bugs")]
    fn bug_stale_read(&self, request: &Request) -> bool {
        self.config.bugs.stale_read && request.read_mode == ReadMode::Consistent
    }
    #[cfg(not(feature = "bugs"))]
    fn bug_stale_read(&self, _request: &Request) -> bool {
        false
    }
}

/// Consul's `Session.Apply` checks before the log: a node, and a TTL that
/// parses as a Go duration and is 0 or within 10 s..=24 h (the texts are
/// Consul's; its HTTP API answers them 500). A session whose strings
/// pass `SESSION_BYTES_MAX` is refused with the limit named.
fn check_session_create(s: &crate::fsm::Session, ttl_min: Duration) -> Result<(), RpcError> {
    use crate::fsm::session::{go_duration_string, parse_go_duration, SESSION_BYTES_MAX};
    use crate::session_ttl::SESSION_TTL_MAX_NS;
    let ttl_min_ns = ttl_min.as_nanos();
    if s.approx_bytes() > SESSION_BYTES_MAX {
        return Err(RpcError::TooLarge(format!(
            "Session exceeds {SESSION_BYTES_MAX} byte limit (SESSION_BYTES_MAX)"
        )));
    }
    if s.node.is_empty() {
        return Err(RpcError::Refused("Must provide Node".into()));
    }
    if !s.ttl.is_empty() {
        let Some(ttl) = parse_go_duration(&s.ttl) else {
            return Err(RpcError::Refused(format!(
                "Session TTL '{}' invalid: time: invalid duration {:?}",
                s.ttl, s.ttl
            )));
        };
        if ttl != 0 && !(ttl_min_ns..=SESSION_TTL_MAX_NS).contains(&ttl) {
            return Err(RpcError::Refused(format!(
                "Invalid Session TTL '{ttl}', must be between [{}={}]",
                go_duration_string(ttl_min_ns),
                go_duration_string(SESSION_TTL_MAX_NS)
            )));
        }
    }
    Ok(())
}

fn is_status(op: &Op) -> bool {
    matches!(
        op,
        Op::StatusLeader | Op::StatusPeers | Op::RaftConfiguration
    )
}

/// `ApplyResult` is re-exported here for drivers that match on replies.
pub type Applied = ApplyResult;
