//! One Raft server: the roles and every rule of the paper that decides.
//!
//! Section numbers cite the Raft paper (Ongaro & Ousterhout 2014) as §N and
//! Ongaro's thesis (2014) as "thesis §N".

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::log::{LogGarbage, RaftLog};
use super::progress::{Progress, ReplState};
use super::types::*;
use super::validate::{self, Receiver};
use crate::action::{Action, Event, PersistId, PersistOp};
use crate::clock::{Duration, Instant};
use crate::config::Config;
use crate::ids::{LogIndex, NodeId, Term};
use crate::message::{Message, MessageBody};
use crate::rng::Rng;

mod snapshot_transfer;
use snapshot_transfer::IncomingSnapshot;

/// The `seq` of an answer to a request from an older term: no leader sends
/// it (its seqs start at 1), so it acknowledges nothing.
pub(super) const STALE_SEQ: u64 = 0;

/// Why a proposal or a read was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader,
    /// A leadership transfer is under way; try the next leader.
    TransferInProgress,
    /// Too many uncommitted entries (`pending_proposals_max`).
    Busy,
    /// A configuration change is still uncommitted (one at a time, thesis §4.1).
    ConfigChangeInProgress,
    /// This server's disk is full (`Input::DiskFull`): nothing can be appended.
    DiskFull,
    /// The change makes no sense: unknown server, already a voter, ...
    BadChange(String),
}

#[cfg(feature = "bugs")]
type Bugs = crate::config::Bugs;
#[cfg(not(feature = "bugs"))]
#[derive(Clone, Copy, Debug, Default)]
struct Bugs;

/// The knobs Raft reads, copied from [`Config`].
#[derive(Clone, Debug)]
struct Opts {
    election_min: Duration,
    election_max: Duration,
    heartbeat: Duration,
    lease_timeout: Duration,
    append_entries_max: usize,
    append_bytes_max: usize,
    inflight_max: usize,
    pending_proposals_max: usize,
    snapshot_chunk_bytes: usize,
    snapshot_bytes_max: u64,
    #[cfg_attr(not(feature = "bugs"), allow(dead_code))]
    bugs: Bugs,
}

/// A leader's attempt to hand over leadership (thesis §3.10).
#[derive(Clone, Debug)]
struct Transfer {
    target: NodeId,
    deadline: Instant,
    timeout_now_sent: bool,
}

#[derive(Clone, Debug)]
struct PendingRead {
    ctx: u64,
    index: LogIndex,
    seq: u64,
}

/// The latest snapshot: its metadata always, its bytes only while a
/// follower is being sent them. Once written, the bytes are the file's
/// (`Action::LoadSnapshot` reads them back): a server does not hold its
/// state twice, once live and once encoded.
#[derive(Debug)]
struct HeldSnapshot {
    meta: SnapshotMeta,
    /// The encoded state's size, in bytes.
    len: u64,
    /// The bytes, while they are being streamed to a follower.
    data: Option<SnapshotData>,
    /// The write that stores it (`PersistId(0)`: recovered from disk).
    stored_by: PersistId,
    /// An `Action::LoadSnapshot` for it is out.
    loading: bool,
}

/// Raft state for one server.
#[derive(Debug)]
pub struct Raft {
    id: NodeId,
    opts: Opts,
    rng: Rng,

    // Persistent state (Figure 2).
    term: Term,
    vote: Option<NodeId>,
    log: RaftLog,
    snapshot: Option<HeldSnapshot>,

    // Durability (see `persist` and `persisted`).
    /// The id of the last `Persist` issued.
    persist_issued: PersistId,
    /// Every write up to this id is durable (`Input::Persisted`), but for
    /// an own snapshot still being written beside the log.
    persist_durable: PersistId,
    /// The id of the last `Persist` that is not an own snapshot: what a
    /// message that needs durability waits for.
    foreground_issued: PersistId,
    /// The log is durable up to here: what a leader counts for itself toward
    /// commit. Only ever at or below the last index.
    durable_index: LogIndex,
    /// Writes in flight that extend the log, with the log index each makes
    /// durable once it is.
    pending_log_writes: VecDeque<(PersistId, LogIndex)>,
    /// The driver reported the disk full (`Input::DiskFull`): no campaign
    /// (a vote must be persisted), no new entries taken or proposed.
    disk_full: bool,

    // Volatile state.
    role: Role,
    leader: Option<NodeId>,
    commit: LogIndex,
    membership: Membership,
    membership_index: LogIndex,
    addresses: BTreeMap<NodeId, String>,
    /// This server's own address, sent in every message (`from_address`).
    address: String,
    election_deadline: Instant,
    /// When this server last heard from a leader of its term. Set to the start
    /// time after a restart, so a server that acknowledged a leader before a
    /// crash still honours that leader's lease (thesis §6.4.1).
    last_leader_contact: Option<Instant>,
    /// The leader we last heard from, if a hint said it is gone
    /// ([`crate::Input::Unreachable`]); any message from a leader, or
    /// winning an election, clears it.
    suspect: Option<NodeId>,
    votes: BTreeSet<NodeId>,
    removed_reported: bool,

    // Leader state.
    progress: BTreeMap<NodeId, Progress>,
    heartbeat_deadline: Instant,
    check_quorum_deadline: Instant,
    seq: u64,
    sent_seqs: VecDeque<(u64, Instant)>,
    term_start_index: LogIndex,
    transfer: Option<Transfer>,
    lease_disabled: bool,
    reads: VecDeque<PendingRead>,
    reads_waiting_for_commit: Vec<u64>,

    /// A snapshot a leader is streaming to us, assembled piece by piece.
    incoming: Option<IncomingSnapshot>,
    /// The crc32c of our snapshot (by its last index), for its pieces.
    snapshot_crc: Option<(LogIndex, u32)>,

    // Outputs for the server, drained after each call.
    ready_reads: Vec<(u64, LogIndex)>,
    failed_reads: Vec<u64>,
    installed: Option<Snapshot>,
}

impl Raft {
    pub fn new(config: &Config, durable: Durable, now: Instant) -> Raft {
        let opts = Opts {
            election_min: config.election_timeout_min,
            election_max: config.election_timeout_max,
            heartbeat: config.heartbeat_interval,
            lease_timeout: config.leader_lease_timeout,
            append_entries_max: config.append_entries_max,
            append_bytes_max: config.append_bytes_max,
            inflight_max: config.inflight_appends_max,
            pending_proposals_max: config.pending_proposals_max,
            snapshot_chunk_bytes: config.snapshot_chunk_bytes,
            snapshot_bytes_max: config.snapshot_bytes_max,
            #[cfg(feature = "bugs")]
            bugs: config.bugs,
            #[cfg(not(feature = "bugs"))]
            bugs: Bugs,
        };
        let Durable {
            hard_state,
            snapshot,
            mut entries,
        } = durable;
        // Entries the snapshot covers are dropped so the log's base is the
        // snapshot's last entry, whose term is known.
        let (base_index, base_term) = match &snapshot {
            Some(s) => {
                entries.retain(|e| e.index > s.meta.last_index);
                (s.meta.last_index, s.meta.last_term)
            }
            None => (LogIndex::ZERO, Term(0)),
        };
        if let Some(first) = entries.first() {
            if first.index != base_index.next() {
                // A gap between snapshot and log: the log cannot be used.
                entries.clear();
            }
        }
        let commit = base_index;
        let log = RaftLog::new(base_index, base_term, entries);
        // The server restored its state from the bytes already; they are
        // the file's from here on.
        let snapshot = snapshot.map(|s| HeldSnapshot {
            len: s.data.len() as u64,
            meta: s.meta,
            data: None,
            stored_by: PersistId(0),
            loading: false,
        });
        let durable_index = log.last_index();
        let mut raft = Raft {
            id: config.node_id,
            opts,
            rng: Rng::new(config.rng_seed),
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            snapshot,
            persist_issued: PersistId(0),
            persist_durable: PersistId(0),
            foreground_issued: PersistId(0),
            durable_index,
            pending_log_writes: VecDeque::new(),
            disk_full: false,
            role: Role::Follower,
            leader: None,
            commit,
            membership: Membership::default(),
            membership_index: LogIndex::ZERO,
            addresses: BTreeMap::new(),
            address: String::new(),
            election_deadline: now,
            last_leader_contact: Some(now),
            suspect: None,
            votes: BTreeSet::new(),
            removed_reported: false,
            progress: BTreeMap::new(),
            heartbeat_deadline: now,
            check_quorum_deadline: now,
            seq: 0,
            sent_seqs: VecDeque::new(),
            term_start_index: LogIndex::ZERO,
            transfer: None,
            lease_disabled: false,
            reads: VecDeque::new(),
            reads_waiting_for_commit: Vec::new(),
            ready_reads: Vec::new(),
            failed_reads: Vec::new(),
            installed: None,
            incoming: None,
            snapshot_crc: None,
        };
        raft.addresses
            .insert(config.node_id, config.address.clone());
        raft.address = config.address.clone();
        raft.recompute_membership();
        raft.reset_election_timer(now);
        raft
    }

    /// Write the bootstrap configuration as entry 1 (term 1) if the log is
    /// empty. Every bootstrapping server writes the same entry, so their logs
    /// match (as hashicorp/raft's `BootstrapCluster`).
    pub fn bootstrap(&mut self, membership: Membership, out: &mut Vec<Action>) {
        if self.log.last_index() != LogIndex::ZERO || self.snapshot.is_some() {
            return;
        }
        let entry = Entry {
            term: Term(1),
            index: LogIndex(1),
            payload: EntryPayload::Membership(membership),
        };
        self.term = self.term.max(Term(1));
        self.persist_hard_state(out);
        self.log.push(entry.clone());
        self.persist(PersistOp::Append(vec![entry]), out);
        self.recompute_membership();
    }

    // ----- accessors -----

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit
    }
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// The entries the log dropped since the last call, for the driver to
    /// free (`RaftLog::take_garbage`); the server asks once per input.
    pub fn take_log_garbage(&mut self) -> Option<LogGarbage> {
        self.log.take_garbage()
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// The log index of the configuration in effect (the latest in the log,
    /// committed or not; the snapshot's last index when it came from one).
    pub fn membership_index(&self) -> LogIndex {
        self.membership_index
    }
    pub fn address_of(&self, id: NodeId) -> Option<&str> {
        self.addresses.get(&id).map(String::as_str)
    }

    /// Remember `address` for a peer this server knows no address for (the
    /// `from_address` of a message it accepted). An address the
    /// configuration names is never replaced: the configuration is what
    /// every server agrees on, a message only what one peer says.
    pub fn learn_address(&mut self, id: NodeId, address: &str) {
        if id != self.id && !address.is_empty() {
            self.addresses
                .entry(id)
                .or_insert_with(|| address.to_string());
        }
    }
    pub fn last_leader_contact(&self) -> Option<Instant> {
        self.last_leader_contact
    }
    /// Whether a hint said the current leader is gone (requests are held
    /// rather than forwarded to it).
    pub fn leader_suspected(&self) -> bool {
        self.leader.is_some() && self.leader == self.suspect
    }
    /// The latest snapshot's metadata (taken here or installed).
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref().map(|s| &s.meta)
    }
    /// The latest snapshot's size, in bytes (held in memory or not).
    pub fn snapshot_bytes(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.len)
    }
    /// Whether the latest snapshot's bytes are in memory (only while a
    /// follower is being sent them, or being read back for that).
    pub fn snapshot_in_memory(&self) -> bool {
        self.snapshot.as_ref().is_some_and(|s| s.data.is_some())
    }
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|t| t.target)
    }
    /// A leader's replication progress for follower `id` (autopilot reads
    /// match index and last contact from it, as Consul's `RaftStats`).
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
    /// Whether a configuration change is appended but not yet committed
    /// (a new one would be refused with `ConfigChangeInProgress`).
    pub fn membership_change_pending(&self) -> bool {
        self.membership_index > self.commit
    }
    /// The configuration in effect at `index` (for a snapshot taken there).
    pub fn membership_at(&self, index: LogIndex) -> Membership {
        if let Some((_, m)) = self.log.membership_at(index) {
            return m.clone();
        }
        self.snapshot
            .as_ref()
            .map(|s| s.meta.membership.clone())
            .unwrap_or_default()
    }
    /// Whether this leader has committed an entry of its own term, so its
    /// commit index is current (§8).
    /// The index of the first entry of this leader's term (its no-op); zero
    /// when not leading.
    pub fn term_start_index(&self) -> LogIndex {
        if self.role == Role::Leader {
            self.term_start_index
        } else {
            LogIndex::ZERO
        }
    }

    pub fn committed_in_term(&self) -> bool {
        self.role == Role::Leader && self.commit >= self.term_start_index
    }

    pub fn take_ready_reads(&mut self) -> Vec<(u64, LogIndex)> {
        std::mem::take(&mut self.ready_reads)
    }
    pub fn take_failed_reads(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.failed_reads)
    }
    pub fn take_installed_snapshot(&mut self) -> Option<Snapshot> {
        self.installed.take()
    }

    pub fn poll_timeout(&self) -> Instant {
        match self.role {
            Role::Leader => {
                let mut t = self.heartbeat_deadline.min(self.check_quorum_deadline);
                if let Some(tr) = &self.transfer {
                    t = t.min(tr.deadline);
                }
                t
            }
            _ => self.election_deadline,
        }
    }

    // ----- timers -----

    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.role {
            Role::Leader => {
                if self.transfer.as_ref().is_some_and(|t| now >= t.deadline) {
                    // The target did not take over in time: keep leading (thesis §3.10).
                    self.transfer = None;
                }
                if now >= self.check_quorum_deadline {
                    self.check_quorum(now, out);
                    if self.role != Role::Leader {
                        return;
                    }
                }
                if now >= self.heartbeat_deadline {
                    self.heartbeat_deadline = now + self.opts.heartbeat;
                    self.broadcast_heartbeat(now, out);
                }
            }
            _ => {
                if now >= self.election_deadline {
                    // With a full disk this server could not persist its
                    // vote: it stays a follower until there is room.
                    if self.membership.is_voter(self.id) && !self.disk_full {
                        self.start_pre_vote(now, out);
                    } else {
                        self.reset_election_timer(now);
                    }
                }
            }
        }
    }

    fn reset_election_timer(&mut self, now: Instant) {
        let span = self.rng.range(
            self.opts.election_min.as_nanos(),
            self.opts.election_max.as_nanos(),
        );
        self.election_deadline = now + Duration(span);
    }

    /// A leader that has not heard from a quorum of voters within an election
    /// timeout steps down, so a partitioned leader stops serving (thesis §6.2).
    fn check_quorum(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.check_quorum_deadline = now + self.opts.election_min;
        let active = self
            .membership
            .voters()
            .filter(|v| *v == self.id || self.progress.get(v).is_some_and(|p| p.recent_active))
            .count();
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        if active < self.membership.quorum() {
            self.become_follower(now, self.term, None, out);
        }
    }

    // ----- elections -----

    /// Pre-vote (thesis §9.6): ask whether we could win before disturbing
    /// anyone's term.
    fn start_pre_vote(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.term.next() == self.term {
            // Only a hostile peer can push the term to u64::MAX: there is no
            // next term to campaign in, and reusing this one could vote twice.
            self.reset_election_timer(now);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id);
        self.reset_election_timer(now);
        if self.has_quorum(&self.votes) {
            self.start_election(now, false, out);
            return;
        }
        let req = VoteRequest {
            term: self.term.next(),
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: true,
            leadership_transfer: false,
        };
        self.send_to_voters(RaftMessage::VoteRequest(req), out);
    }

    /// Become a candidate (§5.2): new term, vote for self, ask for votes.
    fn start_election(&mut self, now: Instant, transfer: bool, out: &mut Vec<Action>) {
        if self.term.next() == self.term {
            self.reset_election_timer(now);
            return;
        }
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id);
        self.persist_hard_state(out);
        self.reset_election_timer(now);
        if self.has_quorum(&self.votes) {
            self.become_leader(now, out);
            return;
        }
        let req = VoteRequest {
            term: self.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: false,
            leadership_transfer: transfer,
        };
        self.send_to_voters(RaftMessage::VoteRequest(req), out);
    }

    fn has_quorum(&self, ids: &BTreeSet<NodeId>) -> bool {
        let n = ids
            .iter()
            .filter(|id| self.membership.is_voter(**id))
            .count();
        self.membership.voter_count() > 0 && n >= self.membership.quorum()
    }

    /// Leader stickiness (thesis §4.2.3): a server that heard from a leader
    /// within the minimum election timeout ignores candidates. After a hint
    /// that the leader is gone the window shrinks to the lease timeout, which
    /// is what the leader's lease relies on (see [`Raft::lease_valid`]).
    fn heard_from_leader_recently(&self, now: Instant) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        let window = match (self.suspect.is_some(), self.bug_hint_skips_lease()) {
            (false, _) => self.opts.election_min,
            (true, _) if self.bug_hint_blocks_elections() => return true,
            (true, false) => self.opts.lease_timeout,
            (true, true) => Duration::ZERO,
        };
        self.last_leader_contact.is_some_and(|t| now < t + window)
    }

    /// A hint that `peer` is gone ([`crate::Input::Unreachable`]). A
    /// follower whose leader it is campaigns once the leader's lease has run
    /// out since it last heard from it, instead of a whole election timeout
    /// later. A random delay of up to a heartbeat interval keeps followers
    /// that got the same hint from splitting the vote. Any message from a
    /// leader undoes it, so a false hint costs at most a pre-vote that the
    /// other servers, still hearing from the leader, refuse. Hints about
    /// anyone else change nothing here.
    pub fn peer_unreachable(&mut self, now: Instant, peer: NodeId) {
        if self.role == Role::Leader {
            // Only a hint: replication goes on as before, but a leadership
            // transfer prefers a voter nobody has reported gone.
            if let Some(p) = self.progress.get_mut(&peer) {
                p.hinted_gone = true;
            }
            return;
        }
        if self.role != Role::Follower || self.leader != Some(peer) || peer == self.id {
            return;
        }
        self.suspect = Some(peer);
        let guard_end = match self.last_leader_contact {
            Some(t) if !self.bug_hint_skips_lease() => t + self.opts.lease_timeout,
            _ => now,
        };
        let jitter = Duration(self.rng.range(0, self.opts.heartbeat.as_nanos().max(1)));
        let at = guard_end.max(now) + jitter;
        self.election_deadline = self.election_deadline.min(at);
    }

    fn handle_vote_request(
        &mut self,
        now: Instant,
        from: NodeId,
        req: VoteRequest,
        out: &mut Vec<Action>,
    ) {
        // Thesis §4.2.3: a server removed from the configuration must not
        // disrupt the cluster, and it campaigns once it stops hearing
        // heartbeats. As hashicorp/raft's `requestVote` (which Consul runs),
        // only the voters of our configuration get a vote or a pre-vote; the
        // answer carries our term and nothing here changes, not even for a
        // leadership transfer. Refusing a vote is always safe, and a new voter
        // we have not heard of yet wins with the votes of the servers that do
        // have its configuration (they are the more up-to-date ones, §5.4.1).
        // A server with no configuration yet (not bootstrapped) has nobody
        // to prefer and decides as below.
        if self.membership.voter_count() > 0 && !self.membership.is_voter(from) {
            let resp = VoteResponse {
                term: self.term,
                granted: false,
                pre_vote: req.pre_vote,
            };
            self.send(from, RaftMessage::VoteResponse(resp), out);
            return;
        }
        // §5.4.1: the candidate's log must be at least as up-to-date as ours.
        let log_ok = (req.last_log_term, req.last_log_index)
            >= (self.log.last_term(), self.log.last_index());
        if req.pre_vote {
            // Followers that lost the same leader often time out together;
            // if each pre-candidate granted the other, both would campaign
            // and split the vote. A pre-candidate yields only to a strictly
            // more up-to-date log or, with equal logs, to a lower id, so one
            // of them goes on. (Pre-votes never touch safety.)
            let yields = self.role != Role::PreCandidate
                || (req.last_log_term, req.last_log_index)
                    > (self.log.last_term(), self.log.last_index())
                || from < self.id;
            let grant =
                req.term > self.term && log_ok && yields && !self.heard_from_leader_recently(now);
            let term = if grant { req.term } else { self.term };
            self.send(
                from,
                RaftMessage::VoteResponse(VoteResponse {
                    term,
                    granted: grant,
                    pre_vote: true,
                }),
                out,
            );
            return;
        }
        let mut term_changed = false;
        if req.term > self.term {
            if self.heard_from_leader_recently(now) && !req.leadership_transfer {
                let resp = VoteResponse {
                    term: self.term,
                    granted: false,
                    pre_vote: false,
                };
                self.send(from, RaftMessage::VoteResponse(resp), out);
                return;
            }
            // The new term and the vote are persisted together below: one
            // fsync on the election path, not two.
            self.step_down(now, req.term, None, false, out);
            term_changed = true;
        }
        let free = self.vote.is_none() || self.vote == Some(from) || self.bug_vote_twice();
        let grant = req.term == self.term && free && log_ok;
        if grant {
            self.vote = Some(from);
            self.reset_election_timer(now);
        }
        if grant || term_changed {
            self.persist_hard_state(out);
        }
        let resp = VoteResponse {
            term: self.term,
            granted: grant,
            pre_vote: false,
        };
        self.send(from, RaftMessage::VoteResponse(resp), out);
    }

    fn handle_vote_response(
        &mut self,
        now: Instant,
        from: NodeId,
        resp: VoteResponse,
        out: &mut Vec<Action>,
    ) {
        // Thesis §4.2.3: votes are only asked of voters; an answer from
        // anyone else (a server removed since, or never a member) counts for
        // nothing, and its term does not depose us either.
        if !self.membership.is_voter(from) {
            return;
        }
        if resp.pre_vote {
            if self.role != Role::PreCandidate {
                return;
            }
            if resp.granted && resp.term == self.term.next() {
                self.votes.insert(from);
                if self.has_quorum(&self.votes) {
                    self.start_election(now, false, out);
                }
            } else if !resp.granted && resp.term > self.term {
                self.become_follower(now, resp.term, None, out);
            }
            return;
        }
        if resp.term > self.term {
            self.become_follower(now, resp.term, None, out);
            return;
        }
        if self.role == Role::Candidate && resp.term == self.term && resp.granted {
            self.votes.insert(from);
            if self.has_quorum(&self.votes) {
                self.become_leader(now, out);
            }
        }
    }

    fn become_follower(
        &mut self,
        now: Instant,
        term: Term,
        leader: Option<NodeId>,
        out: &mut Vec<Action>,
    ) {
        self.step_down(now, term, leader, true, out);
    }

    /// Become a follower in `term`; a new term is persisted at once unless
    /// the caller persists it together with a vote.
    fn step_down(
        &mut self,
        now: Instant,
        term: Term,
        leader: Option<NodeId>,
        persist: bool,
        out: &mut Vec<Action>,
    ) {
        assert!(term >= self.term, "terms never go back");
        if term > self.term {
            self.term = term;
            self.vote = None;
            if persist {
                self.persist_hard_state(out);
            }
        }
        if self.role == Role::Leader {
            out.push(Action::Event(Event::SteppedDown { term: self.term }));
            self.progress.clear();
            self.release_snapshot_if_unwanted(now);
            self.transfer = None;
            self.failed_reads
                .extend(self.reads.drain(..).map(|r| r.ctx));
            self.failed_reads.append(&mut self.reads_waiting_for_commit);
            self.sent_seqs.clear();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_election_timer(now);
    }

    fn become_leader(&mut self, now: Instant, out: &mut Vec<Action>) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.suspect = None;
        self.lease_disabled = false;
        self.transfer = None;
        self.seq = 0;
        self.sent_seqs.clear();
        self.progress.clear();
        let next = self.log.last_index().next();
        for id in self.membership.servers.keys() {
            if *id != self.id {
                self.progress.insert(*id, Progress::new(next, now));
            }
        }
        self.heartbeat_deadline = now + self.opts.heartbeat;
        self.check_quorum_deadline = now + self.opts.election_min;
        out.push(Action::Event(Event::BecameLeader { term: self.term }));
        // A no-op in the new term lets the leader learn what is committed (§8).
        self.term_start_index = next;
        self.append_local(now, EntryPayload::Noop, out);
    }

    // ----- proposals -----

    /// Append a new entry as leader and start replicating it.
    pub fn propose(
        &mut self,
        now: Instant,
        payload: EntryPayload,
        out: &mut Vec<Action>,
    ) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader);
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.disk_full {
            return Err(ProposeError::DiskFull);
        }
        // A configuration change is not held back by a full queue: at most
        // one is ever uncommitted (`check_membership_change`), so it cannot
        // grow the queue without bound, and under a sustained load of
        // client writes a limit would refuse autopilot's promotions (and an
        // operator's removals) for as long as the load lasts. The simulator
        // found this: a rolling restart whose leader's queue stayed full
        // left a restarted server a non-voter for 30 s (seed 14).
        let uncommitted = self.log.last_index().0 - self.commit.0;
        let membership = matches!(payload, EntryPayload::Membership(_));
        if uncommitted as usize >= self.opts.pending_proposals_max && !membership {
            return Err(ProposeError::Busy);
        }
        if let EntryPayload::Membership(m) = &payload {
            self.check_membership_change(m)?;
        }
        Ok(self.append_local(now, payload, out))
    }

    /// Thesis §4.1: one server at a time, and only once the previous change
    /// and an entry of this term are committed (the fix in thesis §4.1's errata).
    fn check_membership_change(&self, new: &Membership) -> Result<(), ProposeError> {
        if self.membership_index > self.commit || !self.committed_in_term() {
            return Err(ProposeError::ConfigChangeInProgress);
        }
        let old = &self.membership;
        let mut changed = 0;
        let ids: BTreeSet<&NodeId> = old.servers.keys().chain(new.servers.keys()).collect();
        for id in ids {
            match (old.servers.get(id), new.servers.get(id)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) if a.suffrage == b.suffrage => {}
                _ => changed += 1,
            }
        }
        if changed != 1 {
            return Err(ProposeError::BadChange(format!(
                "a configuration change must change exactly one server's membership or suffrage, this changes {changed}"
            )));
        }
        if new.voter_count() == 0 {
            return Err(ProposeError::BadChange(
                "cannot remove the last voter".to_string(),
            ));
        }
        Ok(())
    }

    fn append_local(
        &mut self,
        now: Instant,
        payload: EntryPayload,
        out: &mut Vec<Action>,
    ) -> (LogIndex, Term) {
        let entry = Entry {
            term: self.term,
            index: self.log.last_index().next(),
            payload,
        };
        let (index, term) = (entry.index, entry.term);
        let is_membership = matches!(entry.payload, EntryPayload::Membership(_));
        self.log.push(entry.clone());
        let mut before = BTreeMap::new();
        if is_membership {
            before = self.progress.clone();
            self.recompute_membership();
        }
        // Followers write in parallel with the leader's own fsync (§10.2.1):
        // the sends go first; the leader counts itself only in a later call,
        // after the driver has executed this Persist.
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for p in peers {
            self.send_append(now, p, false, out);
        }
        // A server this entry removes gets it too, once, so that it learns
        // it is out (a leaving server waits for that before it stops), as
        // hashicorp/raft's final replication to a removed server. Best
        // effort: not retried; a leaving server stops waiting after a while.
        let removed: Vec<(NodeId, Progress)> = before
            .into_iter()
            .filter(|(id, _)| !self.progress.contains_key(id))
            .collect();
        for (id, mut p) in removed {
            // Whatever is in flight to it, this one goes too.
            p.inflight.clear();
            self.progress.insert(id, p);
            self.send_append(now, id, false, out);
            self.progress.remove(&id);
        }
        self.persist(PersistOp::Append(vec![entry]), out);
        // The leader counts its own entry only once `persisted` says it is
        // durable; followers may commit it before that (§10.2.1).
        self.maybe_commit(now, out);
        (index, term)
    }

    // ----- replication -----

    fn next_seq(&mut self, now: Instant) -> u64 {
        self.seq += 1;
        self.sent_seqs.push_back((self.seq, now));
        let horizon = self.opts.election_max;
        while self
            .sent_seqs
            .front()
            .is_some_and(|(_, t)| now.saturating_since(*t) > horizon)
        {
            self.sent_seqs.pop_front();
        }
        self.seq
    }

    fn broadcast_heartbeat(&mut self, now: Instant, out: &mut Vec<Action>) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for p in peers {
            // A follower silent for several heartbeats lost our messages or
            // its answers: start over from what it is known to hold.
            let stalled = self.progress.get(&p).is_some_and(|pr| {
                pr.state != ReplState::Probe || !pr.inflight.is_empty()
            } && now.saturating_since(pr.last_ack) >= self.opts.heartbeat.saturating_mul(3));
            if stalled {
                if let Some(pr) = self.progress.get_mut(&p) {
                    pr.reset_to_probe();
                }
            }
            self.send_append(now, p, true, out);
        }
        // A follower silent for an election timeout is not being sent
        // anything worth keeping a snapshot's bytes in memory for.
        self.release_snapshot_if_unwanted(now);
    }

    /// Send the follower what it needs next: entries if the window allows, a
    /// snapshot if its entries were compacted, or (when `heartbeat`) an empty
    /// AppendEntries anchored at what it is known to hold.
    fn send_append(&mut self, now: Instant, peer: NodeId, heartbeat: bool, out: &mut Vec<Action>) {
        let Some(p) = self.progress.get(&peer) else {
            return;
        };
        if p.state == ReplState::Snapshot && !heartbeat {
            return;
        }
        if p.next <= self.log.base_index() && p.state != ReplState::Snapshot {
            self.send_snapshot(now, peer, out);
            return;
        }
        let can_send = p.can_send(self.opts.inflight_max) && p.next <= self.log.last_index();
        let (prev, entries) = if can_send {
            let entries = self.log.slice(
                p.next,
                self.opts.append_entries_max,
                self.opts.append_bytes_max,
            );
            (p.next.prev(), entries)
        } else if heartbeat {
            (p.matched, Vec::new())
        } else {
            return;
        };
        let Some(prev_term) = self.log.term_at(prev) else {
            // What it holds was compacted away: only the snapshot can bring
            // it up. (A server added while the log no longer starts at 1, a
            // removed server added back, is probed at `matched` 0 with
            // `next` past the base: without this it was sent nothing, ever.)
            // While its pieces are on their way they are its heartbeats; a
            // follower waiting for our snapshot's bytes to be read back (or
            // for a load at all: they are let go while it does not answer)
            // is sent one anchored at our base by `send_snapshot_chunk`.
            let streaming = self
                .progress
                .get(&peer)
                .is_some_and(|p| p.state == ReplState::Snapshot)
                && self.snapshot_in_memory();
            if !streaming {
                self.send_snapshot(now, peer, out);
            }
            return;
        };
        let seq = self.next_seq(now);
        let p = self.progress.get_mut(&peer).expect("checked above");
        if let Some(last) = entries.last() {
            p.next = last.index.next();
            p.inflight.push(seq);
        }
        let msg = AppendEntries {
            term: self.term,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.commit,
            seq,
        };
        self.send(peer, RaftMessage::AppendEntries(msg), out);
    }

    /// The follower needs entries we compacted: stream it our snapshot.
    fn send_snapshot(&mut self, now: Instant, peer: NodeId, out: &mut Vec<Action>) {
        self.send_snapshot_chunk(now, peer, out);
    }

    /// AppendEntries (§5.3), already validated. It is accepted from a server
    /// outside our configuration too: a follower may not yet have the entry
    /// that adds its new leader (thesis §4.2.3, §4.1: a server takes
    /// AppendEntries from any leader of a current term). Until that entry
    /// arrives we may not know the leader's address, and then cannot answer.
    fn handle_append(
        &mut self,
        now: Instant,
        from: NodeId,
        req: AppendEntries,
        out: &mut Vec<Action>,
    ) {
        if req.term < self.term {
            // Seq 0 (never sent: seqs start at 1) says this answers nothing
            // of the current term. Echoing the seq of a leader's earlier term
            // would, once it leads again, look like an acknowledgement of a
            // heartbeat of its new term (found by the cluster fuzz target).
            let resp = AppendEntriesResponse {
                term: self.term,
                success: false,
                match_index: self.log.last_index(),
                seq: STALE_SEQ,
            };
            self.send(from, RaftMessage::AppendEntriesResponse(resp), out);
            return;
        }
        self.accept_leader(now, from, req.term, out);
        if self.disk_full && !req.entries.is_empty() {
            // Nowhere to store them: taken as lost (the leader sends them
            // again), so nothing piles up in memory while the disk is full.
            return;
        }

        let AppendEntries {
            prev_log_index: mut prev,
            prev_log_term: mut prev_term,
            mut entries,
            leader_commit,
            seq,
            ..
        } = req;
        let match_index = LogIndex(prev.0.saturating_add(entries.len() as u64));
        // Entries at or below our base are committed and in our snapshot.
        let base = self.log.base_index();
        if prev < base {
            entries.retain(|e| e.index > base);
            if entries.is_empty() {
                let resp = AppendEntriesResponse {
                    term: self.term,
                    success: true,
                    match_index,
                    seq,
                };
                self.send(from, RaftMessage::AppendEntriesResponse(resp), out);
                return;
            }
            prev = base;
            prev_term = self.log.term_at(base).expect("the base term is known");
        }
        if self.log.term_at(prev) != Some(prev_term) {
            let hint = if prev > self.log.last_index() {
                self.log.last_index()
            } else {
                prev.prev()
            };
            let resp = AppendEntriesResponse {
                term: self.term,
                success: false,
                match_index: hint,
                seq,
            };
            self.send(from, RaftMessage::AppendEntriesResponse(resp), out);
            return;
        }
        // §5.3: skip entries we already have; truncate only at a real conflict,
        // so a stale or reordered AppendEntries never erases newer entries.
        let mut split = None;
        let mut truncated = false;
        for (i, e) in entries.iter().enumerate() {
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    // Validation refused any contradiction of a committed entry.
                    assert!(
                        e.index > self.commit,
                        "committed entries are never truncated"
                    );
                    self.log.truncate_from(e.index);
                    self.log_truncated(e.index);
                    self.persist(PersistOp::TruncateFrom(e.index), out);
                    truncated = true;
                    split = Some(i);
                    break;
                }
                None => {
                    split = Some(i);
                    break;
                }
            }
        }
        let new = match split {
            Some(i) => entries.split_off(i),
            None => Vec::new(),
        };
        let resp = AppendEntriesResponse {
            term: self.term,
            success: true,
            match_index,
            seq,
        };
        if !new.is_empty() {
            let had_membership = new
                .iter()
                .any(|e| matches!(e.payload, EntryPayload::Membership(_)));
            for e in &new {
                self.log.push(e.clone());
            }
            if had_membership || truncated {
                self.recompute_membership();
            }
            if self.bug_ack_before_fsync() {
                self.send(from, RaftMessage::AppendEntriesResponse(resp.clone()), out);
                self.persist(PersistOp::Append(new), out);
                self.advance_follower_commit(now, leader_commit, match_index, out);
                return;
            }
            self.persist(PersistOp::Append(new), out);
        }
        self.advance_follower_commit(now, leader_commit, match_index, out);
        self.send(from, RaftMessage::AppendEntriesResponse(resp), out);
    }

    /// A follower commits what the leader committed, but only as far as it
    /// knows its log matches the leader's (Figure 2, AppendEntries rule 5).
    fn advance_follower_commit(
        &mut self,
        now: Instant,
        leader_commit: LogIndex,
        matched: LogIndex,
        out: &mut Vec<Action>,
    ) {
        let c = leader_commit.min(matched);
        if c > self.commit {
            self.commit = c;
            out.push(Action::Event(Event::Committed { index: c }));
            self.check_removed(now, out);
        }
    }

    /// A message from a leader of term `term` (≥ ours) arrived.
    fn accept_leader(&mut self, now: Instant, from: NodeId, term: Term, out: &mut Vec<Action>) {
        if term > self.term || self.role != Role::Follower {
            self.become_follower(now, term, Some(from), out);
        }
        // Two leaders in one term would break election safety; the
        // simulator's checker reports it. Peer input never panics a server.
        self.leader = Some(from);
        self.last_leader_contact = Some(now);
        self.suspect = None;
        self.reset_election_timer(now);
    }

    /// The common start of handling a follower's answer. An answer from a
    /// server outside the configuration is ignored whatever its term: a
    /// removed server must not depose the leader (thesis §4.2.3). Else a
    /// higher term deposes this leader; an answer from another term, from a
    /// server we do not replicate to, or to a server that no longer leads is
    /// stale, and so is one that answers a request of an older term
    /// ([`STALE_SEQ`]). Else record that the follower is alive and which
    /// heartbeat it answered.
    fn accept_answer(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        seq: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        if !self.membership.contains(from) {
            return false;
        }
        if term > self.term {
            self.become_follower(now, term, None, out);
            return false;
        }
        // An answer to a request of an older term tells us its term, and
        // nothing else: not that our messages arrive, nor which one.
        if self.role != Role::Leader || term < self.term || seq == STALE_SEQ {
            return false;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return false;
        };
        p.recent_active = true;
        p.last_ack = now;
        p.hinted_gone = false;
        p.acked_seq = p.acked_seq.max(seq);
        true
    }

    /// What a follower's answer may unlock: a commit, confirmed reads, the
    /// TimeoutNow of a transfer, and the next AppendEntries for it.
    fn after_answer(&mut self, now: Instant, from: NodeId, out: &mut Vec<Action>) {
        self.maybe_commit(now, out);
        self.confirm_reads();
        self.maybe_send_timeout_now(from, out);
        if self.role == Role::Leader {
            self.send_append(now, from, false, out);
        }
    }

    fn handle_append_response(
        &mut self,
        now: Instant,
        from: NodeId,
        resp: AppendEntriesResponse,
        out: &mut Vec<Action>,
    ) {
        if !self.accept_answer(now, from, resp.term, resp.seq, out) {
            return;
        }
        let last = self.log.last_index();
        let p = self.progress.get_mut(&from).expect("accepted");
        p.inflight.retain(|s| *s > resp.seq);
        if resp.success {
            // A follower cannot match entries we never had; ignore such a claim.
            if resp.match_index > p.matched && resp.match_index <= last {
                p.matched = resp.match_index;
            }
            p.next = p.next.max(p.matched.next());
            if p.inflight.is_empty() {
                // Everything sent was answered (or overtaken by a later
                // answer): entries beyond `matched` never arrived, resend them.
                p.next = p.matched.next();
            }
            if p.state == ReplState::Probe {
                p.state = ReplState::Replicate;
            }
            if p.state == ReplState::Snapshot && p.matched >= self.log.base_index() {
                // It holds everything up to our base (a heartbeat anchored
                // there matched): our log can take it from here, and no
                // snapshot is needed any more (etcd's raft leaves its
                // snapshot state the same way). Waiting on instead left it
                // stuck whenever no snapshot piece was coming.
                p.snapshot_offset = None;
                p.reset_to_probe();
            }
        } else if p.state != ReplState::Snapshot {
            p.state = ReplState::Probe;
            p.inflight.clear();
            p.next = p
                .matched
                .next()
                .max(p.next.prev().min(resp.match_index.next()));
        }
        self.after_answer(now, from, out);
    }

    /// §5.3/§5.4.2: commit the highest index a majority of voters hold, but
    /// only by counting replicas of an entry from the current term.
    fn maybe_commit(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.role != Role::Leader {
            return;
        }
        let mut matches: Vec<LogIndex> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    self.durable_index.min(self.log.last_index())
                } else {
                    self.progress.get(&v).map_or(LogIndex::ZERO, |p| p.matched)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let n = matches[self.membership.quorum() - 1];
        if n <= self.commit {
            return;
        }
        let current_term = self.log.term_at(n) == Some(self.term);
        if !current_term && !self.bug_commit_old_term() {
            return;
        }
        self.commit = n;
        out.push(Action::Event(Event::Committed { index: n }));
        if self.commit >= self.term_start_index && !self.reads_waiting_for_commit.is_empty() {
            let waiting = std::mem::take(&mut self.reads_waiting_for_commit);
            for ctx in waiting {
                self.start_read(now, ctx, out);
            }
        }
        self.check_removed(now, out);
    }

    /// Thesis §4.2.2: once a configuration without this server commits, it
    /// stops leading (and never campaigns again).
    fn check_removed(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.membership.contains(self.id) || self.membership_index > self.commit {
            return;
        }
        if self.role == Role::Leader {
            self.become_follower(now, self.term, None, out);
        }
        if !self.removed_reported {
            self.removed_reported = true;
            out.push(Action::Event(Event::Removed));
        }
    }

    // ----- snapshots -----

    /// InstallSnapshot (§7), already validated; accepted from a server
    /// outside our configuration for the same reason as AppendEntries.
    fn handle_install_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        req: InstallSnapshot,
        out: &mut Vec<Action>,
    ) {
        if req.term < self.term {
            // Seq 0: an answer to nothing of the current term (see `handle_append`).
            let resp = InstallSnapshotResponse {
                term: self.term,
                last_index: self.log.last_index(),
                seq: STALE_SEQ,
            };
            self.send(from, RaftMessage::InstallSnapshotResponse(resp), out);
            return;
        }
        self.accept_leader(now, from, req.term, out);
        if self.disk_full {
            // Nowhere to store it: the leader sends it again later.
            return;
        }
        let meta = req.snapshot.meta.clone();
        self.install(now, req.snapshot, out);
        let resp = InstallSnapshotResponse {
            term: self.term,
            last_index: meta.last_index,
            seq: req.seq,
        };
        self.send(from, RaftMessage::InstallSnapshotResponse(resp), out);
    }

    /// Install a snapshot from the leader, if it covers more than is
    /// committed here (§7): keep the log after it if it agrees with it, else
    /// discard it all.
    fn install(&mut self, now: Instant, snapshot: Snapshot, out: &mut Vec<Action>) {
        let meta = snapshot.meta.clone();
        if meta.last_index <= self.commit {
            return;
        }
        // `PersistOp::InstallSnapshot` makes the same choice on disk.
        if self.log.term_at(meta.last_index) == Some(meta.last_term) {
            self.log.compact_to(meta.last_index);
        } else {
            self.log.reset_to(meta.last_index, meta.last_term);
            self.log_truncated(meta.last_index.next());
        }
        self.installed = Some(snapshot.clone()); // shares the bytes
        let held = self.hold_snapshot(&snapshot);
        let stored_by = self.persist(PersistOp::InstallSnapshot(snapshot), out);
        self.snapshot = Some(HeldSnapshot { stored_by, ..held });
        self.commit = meta.last_index;
        self.recompute_membership();
        out.push(Action::Event(Event::SnapshotInstalled {
            last_index: meta.last_index,
        }));
        out.push(Action::Event(Event::Committed { index: self.commit }));
        self.check_removed(now, out);
    }

    fn handle_install_snapshot_response(
        &mut self,
        now: Instant,
        from: NodeId,
        resp: InstallSnapshotResponse,
        out: &mut Vec<Action>,
    ) {
        if !self.accept_answer(now, from, resp.term, resp.seq, out) {
            return;
        }
        let last = self.log.last_index();
        let p = self.progress.get_mut(&from).expect("accepted");
        if resp.last_index > p.matched && resp.last_index <= last {
            p.matched = resp.last_index;
        }
        p.reset_to_probe();
        self.after_answer(now, from, out);
    }

    /// The server took a snapshot of its state machine at `snapshot.meta.last_index`:
    /// keep `trailing` entries behind it for slow followers and drop the rest.
    pub fn snapshot_taken(&mut self, snapshot: Snapshot, trailing: u64, out: &mut Vec<Action>) {
        let last = snapshot.meta.last_index;
        assert!(last <= self.commit, "only committed state is snapshotted");
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last_index >= last)
        {
            return; // nothing new (an installed snapshot got here first)
        }
        let compact_to = LogIndex(last.0.saturating_sub(trailing)).max(self.log.base_index());
        let purge = compact_to > self.log.base_index();
        self.log.compact_to(compact_to);
        let held = self.hold_snapshot(&snapshot);
        let stored_by = self.persist(PersistOp::SaveSnapshot(snapshot), out);
        self.snapshot = Some(HeldSnapshot { stored_by, ..held });
        if purge {
            // Only space: entries the snapshot covers may survive a crash.
            self.persist(PersistOp::PurgeUpTo(compact_to), out);
        }
        out.push(Action::Event(Event::SnapshotTaken { last_index: last }));
    }

    // ----- linearizable reads (thesis §6.4) -----

    /// Start a ReadIndex read; its answer comes out of `take_ready_reads`
    /// (or `take_failed_reads` if leadership is lost first).
    pub fn read_index(
        &mut self,
        now: Instant,
        ctx: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader);
        }
        if !self.committed_in_term() {
            self.reads_waiting_for_commit.push(ctx);
            return Ok(());
        }
        self.start_read(now, ctx, out);
        Ok(())
    }

    fn start_read(&mut self, now: Instant, ctx: u64, out: &mut Vec<Action>) {
        let index = self.commit;
        if self.membership.voter_count() == 1 && self.membership.is_voter(self.id) {
            self.ready_reads.push((ctx, index));
            return;
        }
        // Confirm leadership with a fresh round of heartbeats: any answer
        // with a sequence number at least this one's counts.
        let seq = self.seq + 1;
        self.reads.push_back(PendingRead { ctx, index, seq });
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for p in peers {
            self.send_append(now, p, true, out);
        }
    }

    fn confirm_reads(&mut self) {
        while let Some(r) = self.reads.front() {
            let acks = self
                .membership
                .voters()
                .filter(|v| {
                    *v == self.id || self.progress.get(v).is_some_and(|p| p.acked_seq >= r.seq)
                })
                .count();
            if acks < self.membership.quorum() {
                break;
            }
            let r = self.reads.pop_front().expect("front exists");
            self.ready_reads.push((r.ctx, r.index));
        }
    }

    /// Whether the leader may serve a read from local state without a round
    /// trip: a quorum acknowledged a heartbeat sent less than the lease
    /// timeout ago. Each of them refuses other candidates for at least the
    /// lease timeout after it got that heartbeat (even after a hint that we
    /// are gone), so no other leader can have been elected since (thesis
    /// §6.4.1). Never during a leadership transfer, which bypasses stickiness.
    pub fn lease_valid(&self, now: Instant) -> bool {
        if !self.committed_in_term() || self.lease_disabled || self.transfer.is_some() {
            return false;
        }
        let mut times: Vec<Instant> = Vec::new();
        for v in self.membership.voters() {
            if v == self.id {
                times.push(now);
            } else if let Some(p) = self.progress.get(&v) {
                if let Ok(i) = self
                    .sent_seqs
                    .binary_search_by_key(&p.acked_seq, |(s, _)| *s)
                {
                    times.push(self.sent_seqs[i].1);
                }
            }
        }
        let q = self.membership.quorum();
        if times.len() < q {
            return false;
        }
        times.sort_unstable_by(|a, b| b.cmp(a));
        // A tenth of the timeout is kept back for clock drift between servers.
        let lease = if self.bug_long_lease() {
            self.opts.election_max
        } else {
            self.opts.lease_timeout.saturating_mul(9).div(10)
        };
        now < times[q - 1] + lease
    }

    // ----- leadership transfer (thesis §3.10) -----

    pub fn transfer_leadership(
        &mut self,
        now: Instant,
        to: Option<NodeId>,
        out: &mut Vec<Action>,
    ) -> Result<NodeId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader);
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let target = match to {
            Some(t) => t,
            // The voter most likely to win at once: one that answered
            // within an election timeout and was not reported gone since (a
            // server that is down or cut off would never campaign, and the
            // transfer would only time out), then the most caught up, then
            // the lowest id.
            None => self
                .progress
                .iter()
                .filter(|(id, _)| self.membership.is_voter(**id))
                .max_by_key(|(id, p)| {
                    let answering =
                        !p.hinted_gone && now.saturating_since(p.last_ack) < self.opts.election_min;
                    (answering, p.matched, std::cmp::Reverse(**id))
                })
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    ProposeError::BadChange("no other voter to transfer leadership to".into())
                })?,
        };
        if target == self.id || !self.membership.is_voter(target) {
            return Err(ProposeError::BadChange(format!(
                "{target} is not another voter"
            )));
        }
        self.transfer = Some(Transfer {
            target,
            deadline: now + self.opts.election_min,
            timeout_now_sent: false,
        });
        self.lease_disabled = true;
        self.maybe_send_timeout_now(target, out);
        if self.transfer.as_ref().is_some_and(|t| !t.timeout_now_sent) {
            self.send_append(now, target, false, out);
        }
        Ok(target)
    }

    fn maybe_send_timeout_now(&mut self, peer: NodeId, out: &mut Vec<Action>) {
        let last = self.log.last_index();
        let ready = match (&self.transfer, self.progress.get(&peer)) {
            (Some(t), Some(p)) => t.target == peer && !t.timeout_now_sent && p.matched == last,
            _ => false,
        };
        if ready {
            if let Some(t) = self.transfer.as_mut() {
                t.timeout_now_sent = true;
            }
            self.send(
                peer,
                RaftMessage::TimeoutNow(TimeoutNow { term: self.term }),
                out,
            );
        }
    }

    fn handle_timeout_now(
        &mut self,
        now: Instant,
        from: NodeId,
        req: TimeoutNow,
        out: &mut Vec<Action>,
    ) {
        // TimeoutNow skips leader stickiness, so a server outside the
        // configuration may not send it (thesis §4.2.3: removed servers must
        // not disrupt); only a leader of ours transfers its leadership.
        if !self.membership.contains(from) {
            return;
        }
        if req.term < self.term || !self.membership.is_voter(self.id) {
            return;
        }
        if req.term > self.term {
            self.become_follower(now, req.term, Some(from), out);
        }
        if self.role == Role::Leader {
            return;
        }
        self.start_election(now, true, out);
    }

    // ----- plumbing -----

    /// Handle one Raft message from a peer. A message no honest peer could
    /// have sent to a server in this state is refused before it touches
    /// anything (`validate.rs`): nothing changes, and the only action is
    /// [`Event::PeerMessageRefused`], so the driver can close the connection.
    pub fn step(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: RaftMessage,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        if let Err(reason) = self.validate(&msg) {
            out.push(Action::Event(Event::PeerMessageRefused {
                from,
                reason: reason.clone(),
            }));
            return Err(reason);
        }
        match msg {
            RaftMessage::VoteRequest(m) => self.handle_vote_request(now, from, m, out),
            RaftMessage::VoteResponse(m) => self.handle_vote_response(now, from, m, out),
            RaftMessage::AppendEntries(m) => self.handle_append(now, from, m, out),
            RaftMessage::AppendEntriesResponse(m) => self.handle_append_response(now, from, m, out),
            RaftMessage::InstallSnapshot(m) => self.handle_install_snapshot(now, from, m, out),
            RaftMessage::InstallSnapshotResponse(m) => {
                self.handle_install_snapshot_response(now, from, m, out)
            }
            RaftMessage::TimeoutNow(m) => self.handle_timeout_now(now, from, m, out),
            RaftMessage::InstallSnapshotChunk(m) => self.handle_snapshot_chunk(now, from, m, out),
            RaftMessage::InstallSnapshotChunkResponse(m) => {
                self.handle_snapshot_chunk_response(now, from, m, out)
            }
        }
        Ok(())
    }

    /// Check `msg` against what an honest peer could send us now.
    pub fn validate(&self, msg: &RaftMessage) -> Result<(), String> {
        let receiver = Receiver {
            term: self.term,
            log: &self.log,
            commit: self.commit,
            leading_seq: (self.role == Role::Leader).then_some(self.seq),
            append_entries_max: self.opts.append_entries_max,
            append_bytes_max: self.opts.append_bytes_max,
        };
        validate::check(msg, &receiver)
    }

    fn persist_hard_state(&mut self, out: &mut Vec<Action>) {
        let op = PersistOp::HardState(HardState {
            term: self.term,
            vote: self.vote,
        });
        self.persist(op, out);
    }

    /// Issue a durable write. A write that extends the log is remembered, so
    /// `persisted` knows how far the log is durable.
    fn persist(&mut self, op: PersistOp, out: &mut Vec<Action>) -> PersistId {
        self.persist_issued = PersistId(self.persist_issued.0 + 1);
        let id = self.persist_issued;
        // A server's own snapshot is written beside the log and promises
        // nothing to anyone: no message waits for it.
        if !matches!(op, PersistOp::SaveSnapshot(_)) {
            self.foreground_issued = id;
        }
        let extends = match &op {
            PersistOp::Append(entries) => entries.last().map(|e| e.index),
            PersistOp::InstallSnapshot(snapshot) => Some(snapshot.meta.last_index),
            PersistOp::HardState(_)
            | PersistOp::TruncateFrom(_)
            | PersistOp::SaveSnapshot(_)
            | PersistOp::PurgeUpTo(_) => None,
        };
        if let Some(upto) = extends {
            self.pending_log_writes.push_back((id, upto));
        }
        // A purge only frees space and promises nothing: it needs no fsync
        // of its own (the next synced write carries it; a crash may undo
        // it, which the contract allows).
        let sync = !matches!(op, PersistOp::PurgeUpTo(_));
        out.push(Action::Persist { id, op, sync });
        id
    }

    /// Entries from `index` on were dropped from the log: they are no longer
    /// durable, and a write still in flight for them makes durable at most
    /// what is before `index`.
    fn log_truncated(&mut self, index: LogIndex) {
        let keep = index.prev();
        self.durable_index = self.durable_index.min(keep);
        for (_, upto) in self.pending_log_writes.iter_mut() {
            *upto = (*upto).min(keep);
        }
    }

    /// The driver reports that every write up to `id` is durable: a leader
    /// may now count more of its own log toward commit.
    pub fn persisted(&mut self, now: Instant, id: PersistId, out: &mut Vec<Action>) {
        if id <= self.persist_durable {
            return;
        }
        assert!(
            id <= self.persist_issued,
            "persisted {id:?}, but only {:?} was issued",
            self.persist_issued
        );
        self.persist_durable = id;
        while let Some((pid, upto)) = self.pending_log_writes.front().copied() {
            if pid > id {
                break;
            }
            self.pending_log_writes.pop_front();
            self.durable_index = self.durable_index.max(upto);
        }
        self.durable_index = self.durable_index.min(self.log.last_index());
        self.maybe_commit(now, out);
        self.confirm_reads();
    }

    /// The driver says the disk is full, or has room again.
    pub fn set_disk_full(&mut self, full: bool) {
        self.disk_full = full;
    }

    pub fn disk_full(&self) -> bool {
        self.disk_full
    }

    /// How far this server's own log is durable.
    pub fn durable_index(&self) -> LogIndex {
        self.durable_index
    }

    /// Whether a message may only leave once the writes issued before it are
    /// durable: a vote, and a follower's acknowledgement of what it stored.
    /// A leader's AppendEntries, snapshots and TimeoutNow, and pre-votes,
    /// promise nothing about this server's disk (§10.2.1: a leader writes
    /// its log in parallel with replicating it).
    fn needs_durable(msg: &RaftMessage) -> bool {
        match msg {
            RaftMessage::VoteRequest(r) => !r.pre_vote,
            RaftMessage::VoteResponse(r) => !r.pre_vote,
            RaftMessage::AppendEntriesResponse(_)
            | RaftMessage::InstallSnapshotResponse(_)
            | RaftMessage::InstallSnapshotChunkResponse(_) => true,
            RaftMessage::AppendEntries(_)
            | RaftMessage::InstallSnapshot(_)
            | RaftMessage::InstallSnapshotChunk(_)
            | RaftMessage::TimeoutNow(_) => false,
        }
    }

    fn send_to_voters(&mut self, msg: RaftMessage, out: &mut Vec<Action>) {
        let voters: Vec<NodeId> = self.membership.voters().filter(|v| *v != self.id).collect();
        for v in voters {
            self.send(v, msg.clone(), out);
        }
    }

    fn send(&self, to: NodeId, msg: RaftMessage, out: &mut Vec<Action>) {
        let Some(address) = self.addresses.get(&to) else {
            return;
        };
        let after = (Raft::needs_durable(&msg) && self.foreground_issued > self.persist_durable)
            .then_some(self.foreground_issued);
        out.push(Action::Send {
            address: address.clone(),
            message: Message {
                from: self.id,
                from_address: self.address.clone(),
                to,
                body: MessageBody::Raft(msg),
            },
            after,
        });
    }

    /// The configuration in effect is the latest in the log, committed or not
    /// (thesis §4.1), else the snapshot's.
    fn recompute_membership(&mut self) {
        let (index, m) = match self.log.membership_at(self.log.last_index()) {
            Some((i, m)) => (i, m.clone()),
            None => match &self.snapshot {
                Some(s) => (s.meta.last_index, s.meta.membership.clone()),
                None => (LogIndex::ZERO, Membership::default()),
            },
        };
        for (id, member) in &m.servers {
            self.addresses.insert(*id, member.address.clone());
        }
        self.membership = m;
        self.membership_index = index;
        if self.role == Role::Leader {
            let next = self.log.last_index().next();
            let now = self
                .progress
                .values()
                .map(|p| p.last_ack)
                .max()
                .unwrap_or_default();
            let members: Vec<NodeId> = self.membership.servers.keys().copied().collect();
            for id in &members {
                if *id != self.id {
                    self.progress
                        .entry(*id)
                        .or_insert_with(|| Progress::new(next, now));
                }
            }
            self.progress.retain(|id, _| members.contains(id));
        }
    }

    #[cfg(feature = "bugs")]
    fn bug_vote_twice(&self) -> bool {
        self.opts.bugs.vote_twice
    }
    #[cfg(not(feature = "bugs"))]
    fn bug_vote_twice(&self) -> bool {
        false
    }
    #[cfg(feature = "bugs")]
    fn bug_ack_before_fsync(&self) -> bool {
        self.opts.bugs.ack_before_fsync
    }
    #[cfg(not(feature = "bugs"))]
    fn bug_ack_before_fsync(&self) -> bool {
        false
    }
    #[cfg(feature = "bugs")]
    fn bug_long_lease(&self) -> bool {
        self.opts.bugs.long_lease
    }
    #[cfg(not(feature = "bugs"))]
    fn bug_long_lease(&self) -> bool {
        false
    }
    #[cfg(feature = "bugs")]
    fn bug_hint_skips_lease(&self) -> bool {
        self.opts.bugs.hint_skips_lease
    }
    #[cfg(not(feature = "bugs"))]
    fn bug_hint_skips_lease(&self) -> bool {
        false
    }
    #[cfg(feature = "bugs")]
    fn bug_hint_blocks_elections(&self) -> bool {
        self.opts.bugs.hint_blocks_elections
    }
    #[cfg(not(feature = "bugs"))]
    fn bug_hint_blocks_elections(&self) -> bool {
        false
    }
    #[cfg(feature = "bugs")]
    fn bug_commit_old_term(&self) -> bool {
        self.opts.bugs.commit_old_term
    }
    #[cfg(not(feature = "bugs"))]
    fn bug_commit_old_term(&self) -> bool {
        false
    }
}
