//! Engine tests for one `Raft` state machine: every test drives a single
//! server with `tick` / `step` / `propose` / ... at chosen instants and
//! compares the actions it emits with an exact expected list (STYLE.md rule 9).
//!
//! Section numbers cite the Raft paper (Ongaro & Ousterhout 2014) as §N and
//! Ongaro's thesis (2014) as "thesis §N". Servers are `s1..sN` from
//! `testkit`; `s1` is the server under test unless a test says otherwise.
//! Election timeouts are drawn from a seeded RNG, so a test that needs the
//! timer to fire reads `poll_timeout()` and ticks at exactly that instant.

use tern_core::action::{Action, Event, PersistId, PersistOp};
use tern_core::clock::{Duration, Instant};
use tern_core::config::Config;
use tern_core::fsm::{Command, KvCommand, KvWrite};
use tern_core::ids::{LogIndex, NodeId, NodeName, Term};
use tern_core::message::{Message, MessageBody};
use tern_core::raft::{
    AppendEntries, AppendEntriesResponse, Durable, Entry, EntryPayload, HardState, InstallSnapshot,
    InstallSnapshotChunk, InstallSnapshotChunkResponse, InstallSnapshotResponse, Member,
    Membership, ProposeError, Raft, RaftMessage, ReplState, Role, Snapshot, SnapshotMeta, Suffrage,
    TimeoutNow, VoteRequest, VoteResponse,
};
use tern_core::testkit::{config, membership, node_id};

// ----- the server under test -----

/// When every test's server starts.
const T0: Instant = Instant(1_000_000_000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One `Raft` and the current instant; each call returns what it emitted.
///
/// The disk is instant: after each call, every write it issued is reported
/// durable (`Raft::persisted`) and what that causes is appended to the
/// returned list. Persist ids are then written as 0 and a send's `after` as
/// the position (1-based) of the write it waits for in the same list, so
/// expected lists say which write a message waits for without counting ids.
struct Node {
    raft: Raft,
    now: Instant,
}

impl Node {
    fn new(cfg: &Config, durable: Durable) -> Node {
        Node {
            raft: Raft::new(cfg, durable, T0),
            now: T0,
        }
    }

    /// Move the clock forward (no tick).
    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    /// Report the writes in `out` durable, then number them (see `Node`).
    fn settle(&mut self, mut out: Vec<Action>) -> Vec<Action> {
        let last = out.iter().rev().find_map(|a| match a {
            Action::Persist { id, .. } => Some(*id),
            _ => None,
        });
        if let Some(id) = last {
            self.raft.persisted(self.now, id, &mut out);
        }
        let ids: Vec<PersistId> = out
            .iter()
            .filter_map(|a| match a {
                Action::Persist { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        for a in out.iter_mut() {
            match a {
                Action::Persist { id, .. } => *id = PersistId(0),
                // The write that stored a snapshot is usually an earlier
                // call's (`load_asks_after_the_write_that_stored_it`).
                Action::LoadSnapshot { stored_by, .. } => *stored_by = PersistId(0),
                Action::Send {
                    after: Some(after), ..
                } => {
                    let pos = ids.iter().position(|i| i == after).expect(
                        "a send waits only for a write of the same call (the disk is instant)",
                    );
                    *after = PersistId(pos as u64 + 1);
                }
                _ => {}
            }
        }
        out
    }

    fn tick(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.raft.tick(self.now, &mut out);
        self.settle(out)
    }

    /// Jump to the next deadline the server asked for and tick there.
    fn fire(&mut self) -> Vec<Action> {
        let t = self.raft.poll_timeout();
        assert!(t >= self.now, "deadlines are never in the past");
        self.now = t;
        self.tick()
    }

    fn step(&mut self, from: u64, msg: RaftMessage) -> Vec<Action> {
        let mut out = Vec::new();
        let _ = self.raft.step(self.now, node_id(from), msg, &mut out);
        self.settle(out)
    }

    fn propose(
        &mut self,
        payload: EntryPayload,
    ) -> (Result<(LogIndex, Term), ProposeError>, Vec<Action>) {
        let mut out = Vec::new();
        let r = self.raft.propose(self.now, payload, &mut out);
        (r, self.settle(out))
    }

    fn read_index(&mut self, ctx: u64) -> (Result<(), ProposeError>, Vec<Action>) {
        let mut out = Vec::new();
        let r = self.raft.read_index(self.now, ctx, &mut out);
        (r, self.settle(out))
    }

    fn transfer(&mut self, to: u64) -> (Result<NodeId, ProposeError>, Vec<Action>) {
        let mut out = Vec::new();
        let r = self
            .raft
            .transfer_leadership(self.now, Some(node_id(to)), &mut out);
        (r, self.settle(out))
    }

    fn snapshot_taken(&mut self, snapshot: Snapshot, trailing: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.raft.snapshot_taken(snapshot, trailing, &mut out);
        self.settle(out)
    }

    /// The driver read `snapshot` back from its file (`Action::LoadSnapshot`).
    fn loaded(&mut self, snapshot: &Snapshot) -> Vec<Action> {
        let mut out = Vec::new();
        let data = Some(snapshot.data.clone());
        self.raft
            .snapshot_loaded(self.now, snapshot.meta.clone(), data, &mut out);
        self.settle(out)
    }
}

/// `Action::LoadSnapshot` of `snapshot` (the write that stored it is
/// numbered 0, see `settle`).
fn load(snapshot: &Snapshot) -> Action {
    Action::LoadSnapshot {
        meta: snapshot.meta.clone(),
        stored_by: PersistId(0),
    }
}

// ----- expected actions -----

fn send(from: u64, to: u64, msg: RaftMessage) -> Action {
    Action::Send {
        address: format!("s{to}:8300"),
        message: Message {
            from: node_id(from),
            from_address: format!("s{from}:8300"),
            to: node_id(to),
            body: MessageBody::Raft(msg),
        },
        after: None,
    }
}

/// `send` that waits for the `nth` write (1-based) of the same list.
fn after(nth: u64, send: Action) -> Action {
    match send {
        Action::Send {
            address, message, ..
        } => Action::Send {
            address,
            message,
            after: Some(PersistId(nth)),
        },
        other => panic!("only a send waits for a write, not {other:?}"),
    }
}

fn hard_state(term: u64, vote: Option<u64>) -> Action {
    Action::Persist {
        id: PersistId(0),
        op: PersistOp::HardState(HardState {
            term: Term(term),
            vote: vote.map(node_id),
        }),
        sync: true,
    }
}

fn persist_append(entries: Vec<Entry>) -> Action {
    Action::Persist {
        id: PersistId(0),
        op: PersistOp::Append(entries),
        sync: true,
    }
}

fn persist_save_snapshot(snapshot: Snapshot) -> Action {
    Action::Persist {
        id: PersistId(0),
        op: PersistOp::SaveSnapshot(snapshot),
        sync: true,
    }
}

fn persist_purge(up_to: u64) -> Action {
    Action::Persist {
        id: PersistId(0),
        op: PersistOp::PurgeUpTo(LogIndex(up_to)),
        // A purge promises nothing: no fsync of its own.
        sync: false,
    }
}

fn persist_install_snapshot(snapshot: Snapshot) -> Action {
    Action::Persist {
        id: PersistId(0),
        op: PersistOp::InstallSnapshot(snapshot),
        sync: true,
    }
}

fn persist_truncate(from: u64) -> Action {
    Action::Persist {
        id: PersistId(0),
        op: PersistOp::TruncateFrom(LogIndex(from)),
        sync: true,
    }
}

fn became_leader(term: u64) -> Action {
    Action::Event(Event::BecameLeader { term: Term(term) })
}

fn stepped_down(term: u64) -> Action {
    Action::Event(Event::SteppedDown { term: Term(term) })
}

fn refused(from: u64, reason: &str) -> Action {
    Action::Event(Event::PeerMessageRefused {
        from: node_id(from),
        reason: reason.to_string(),
    })
}

fn committed(index: u64) -> Action {
    Action::Event(Event::Committed {
        index: LogIndex(index),
    })
}

// ----- log entries, memberships, snapshots -----

fn entry(index: u64, term: u64, payload: EntryPayload) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload,
    }
}

fn noop(index: u64, term: u64) -> Entry {
    entry(index, term, EntryPayload::Noop)
}

fn set(key: &str) -> EntryPayload {
    EntryPayload::Command(std::sync::Arc::new(Command::Kv(KvCommand::Set(KvWrite {
        key: key.to_string(),
        flags: 0,
        value: b"v".to_vec().into(),
    }))))
}

fn cmd(index: u64, term: u64, key: &str) -> Entry {
    entry(index, term, set(key))
}

fn conf(index: u64, term: u64, m: Membership) -> Entry {
    entry(index, term, EntryPayload::Membership(m))
}

/// `membership(n)` plus server `id` with the given suffrage.
fn with_server(mut m: Membership, id: u64, suffrage: Suffrage) -> Membership {
    m.servers.insert(
        node_id(id),
        Member {
            name: NodeName(format!("s{id}")),
            address: format!("s{id}:8300"),
            suffrage,
        },
    );
    m
}

fn without_server(mut m: Membership, id: u64) -> Membership {
    m.servers.remove(&node_id(id));
    m
}

fn snapshot(last_index: u64, last_term: u64, m: Membership) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(last_index),
            last_term: Term(last_term),
            membership: m,
        },
        data: b"fsm-state".to_vec().into(),
    }
}

fn durable(term: u64, vote: Option<u64>, entries: Vec<Entry>) -> Durable {
    Durable {
        hard_state: HardState {
            term: Term(term),
            vote: vote.map(node_id),
        },
        snapshot: None,
        entries,
    }
}

/// What every server of an `n`-voter cluster holds right after bootstrap.
fn bootstrapped(n: u64) -> Durable {
    durable(1, None, vec![conf(1, 1, membership(n))])
}

// ----- messages -----

fn vote_request(
    term: u64,
    last_index: u64,
    last_term: u64,
    pre_vote: bool,
    transfer: bool,
) -> RaftMessage {
    RaftMessage::VoteRequest(VoteRequest {
        term: Term(term),
        last_log_index: LogIndex(last_index),
        last_log_term: Term(last_term),
        pre_vote,
        leadership_transfer: transfer,
    })
}

fn pre_vote_req(term: u64, last_index: u64, last_term: u64) -> RaftMessage {
    vote_request(term, last_index, last_term, true, false)
}

fn vote_req(term: u64, last_index: u64, last_term: u64) -> RaftMessage {
    vote_request(term, last_index, last_term, false, false)
}

fn transfer_vote_req(term: u64, last_index: u64, last_term: u64) -> RaftMessage {
    vote_request(term, last_index, last_term, false, true)
}

fn pre_vote_resp(term: u64, granted: bool) -> RaftMessage {
    RaftMessage::VoteResponse(VoteResponse {
        term: Term(term),
        granted,
        pre_vote: true,
    })
}

fn vote_resp(term: u64, granted: bool) -> RaftMessage {
    RaftMessage::VoteResponse(VoteResponse {
        term: Term(term),
        granted,
        pre_vote: false,
    })
}

/// AppendEntries in `term` anchored at `prev = (index, term)`.
fn append(
    term: u64,
    prev: (u64, u64),
    entries: Vec<Entry>,
    leader_commit: u64,
    seq: u64,
) -> RaftMessage {
    RaftMessage::AppendEntries(AppendEntries {
        term: Term(term),
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(leader_commit),
        seq,
    })
}

fn heartbeat(term: u64, prev: (u64, u64), leader_commit: u64, seq: u64) -> RaftMessage {
    append(term, prev, Vec::new(), leader_commit, seq)
}

fn append_ok(term: u64, match_index: u64, seq: u64) -> RaftMessage {
    RaftMessage::AppendEntriesResponse(AppendEntriesResponse {
        term: Term(term),
        success: true,
        match_index: LogIndex(match_index),
        seq,
    })
}

fn append_reject(term: u64, hint: u64, seq: u64) -> RaftMessage {
    RaftMessage::AppendEntriesResponse(AppendEntriesResponse {
        term: Term(term),
        success: false,
        match_index: LogIndex(hint),
        seq,
    })
}

fn install_snapshot(term: u64, snapshot: Snapshot, seq: u64) -> RaftMessage {
    RaftMessage::InstallSnapshot(InstallSnapshot {
        term: Term(term),
        snapshot,
        seq,
    })
}

fn install_snapshot_resp(term: u64, last_index: u64, seq: u64) -> RaftMessage {
    RaftMessage::InstallSnapshotResponse(InstallSnapshotResponse {
        term: Term(term),
        last_index: LogIndex(last_index),
        seq,
    })
}

/// The piece `[offset, end)` of `snap`, as its leader in `term` streams it.
fn chunk(term: u64, snap: &Snapshot, offset: u64, end: u64, seq: u64) -> RaftMessage {
    RaftMessage::InstallSnapshotChunk(InstallSnapshotChunk {
        term: Term(term),
        meta: snap.meta.clone(),
        total_bytes: snap.data.len() as u64,
        crc32c: crc32c::crc32c(&snap.data),
        offset,
        data: snap.data[offset as usize..end as usize].to_vec(),
        seq,
    })
}

fn chunk_resp(term: u64, snapshot_index: u64, next: u64, last_index: u64, seq: u64) -> RaftMessage {
    RaftMessage::InstallSnapshotChunkResponse(InstallSnapshotChunkResponse {
        term: Term(term),
        snapshot_index: LogIndex(snapshot_index),
        next_offset: next,
        last_index: LogIndex(last_index),
        seq,
    })
}

fn timeout_now(term: u64) -> RaftMessage {
    RaftMessage::TimeoutNow(TimeoutNow { term: Term(term) })
}

// ----- common situations -----

/// Let `node`'s election timer fire and feed it pre-votes and then votes from
/// `voters` until it leads. Returns what it emitted on winning.
fn elect(node: &mut Node, voters: &[u64]) -> Vec<Action> {
    let next_term = node.raft.term().0 + 1;
    node.fire();
    assert_eq!(node.raft.role(), Role::PreCandidate);
    for v in voters {
        node.step(*v, pre_vote_resp(next_term, true));
        if node.raft.role() == Role::Candidate {
            break;
        }
    }
    assert_eq!(node.raft.role(), Role::Candidate);
    let mut out = Vec::new();
    for v in voters {
        out = node.step(*v, vote_resp(next_term, true));
        if node.raft.role() == Role::Leader {
            break;
        }
    }
    assert_eq!(node.raft.role(), Role::Leader);
    out
}

/// s1 leading an `n`-voter cluster in term 2, its no-op (index 2) sent to
/// s2..sn with seq 1..n-1 but not yet acknowledged.
fn elected(cfg: &Config, n: u64) -> Node {
    let mut s1 = Node::new(cfg, bootstrapped(n));
    let voters: Vec<u64> = (2..=n).collect();
    elect(&mut s1, &voters);
    assert_eq!(s1.raft.term(), Term(2));
    s1
}

/// As `elected`, and every follower acknowledged the no-op at once: commit
/// is 2, every follower replicates, the next seq is `n`.
fn established(cfg: &Config, n: u64) -> Node {
    let mut s1 = elected(cfg, n);
    for (seq, f) in (2..=n).enumerate() {
        s1.step(f, append_ok(2, 2, seq as u64 + 1));
    }
    assert_eq!(s1.raft.commit_index(), LogIndex(2));
    assert!(s1.raft.committed_in_term());
    s1
}

/// s2 of three, following s1 in term 2 since `T0 + contact_after`.
fn follower_of_s1(contact_after: Duration) -> Node {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    s2.advance(contact_after);
    let out = s2.step(1, append(2, (1, 1), vec![noop(2, 2)], 1, 1));
    assert_eq!(
        out,
        vec![
            hard_state(2, None),
            persist_append(vec![noop(2, 2)]),
            committed(1),
            after(2, send(2, 1, append_ok(2, 2, 1))),
        ]
    );
    s2
}

/// Apply the persist actions in `out` to `disk`, as a driver would.
fn apply_persists(disk: &mut Durable, out: &[Action]) {
    for a in out {
        if let Action::Persist { op, .. } = a {
            disk.apply(op).expect("the core emits valid durable writes");
        }
    }
}

// ===== §5.2 elections, thesis §9.6 pre-vote =====

/// Thesis §9.6 and §5.2: a timed-out follower first asks for pre-votes
/// without touching its term; only a pre-vote majority makes it a candidate,
/// and it persists its new term and self-vote before asking for votes
/// (Figure 2: persist before responding to RPCs).
#[test]
fn timeout_starts_a_pre_vote_and_a_pre_vote_majority_starts_the_election() {
    let mut s1 = Node::new(&config(1, 3), bootstrapped(3));

    // Phase 1: the election timer fires. Pre-vote for term 2: nothing persisted.
    let out = s1.fire();
    assert_eq!(
        out,
        vec![
            send(1, 2, pre_vote_req(2, 1, 1)),
            send(1, 3, pre_vote_req(2, 1, 1)),
        ]
    );
    assert_eq!(s1.raft.role(), Role::PreCandidate);
    assert_eq!(s1.raft.term(), Term(1));
    assert_eq!(s1.raft.vote(), None);

    // Phase 2: s2's grant makes a majority of three (with s1's own): a real
    // election, the hard state written before any VoteRequest leaves.
    let out = s1.step(2, pre_vote_resp(2, true));
    assert_eq!(
        out,
        vec![
            hard_state(2, Some(1)),
            after(1, send(1, 2, vote_req(2, 1, 1))),
            after(1, send(1, 3, vote_req(2, 1, 1))),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Candidate);
    assert_eq!(s1.raft.term(), Term(2));

    // Phase 3: s3's late pre-vote grant changes nothing.
    assert_eq!(s1.step(3, pre_vote_resp(2, true)), vec![]);
    assert_eq!(s1.raft.role(), Role::Candidate);
}

/// Thesis §9.6: a pre-vote that is refused leaves the term alone, and the
/// pre-candidate tries again at its next timeout.
#[test]
fn refused_pre_votes_change_no_term() {
    let mut s1 = Node::new(&config(1, 3), bootstrapped(3));
    s1.fire();
    assert_eq!(s1.step(2, pre_vote_resp(1, false)), vec![]);
    assert_eq!(s1.step(3, pre_vote_resp(1, false)), vec![]);
    assert_eq!(s1.raft.role(), Role::PreCandidate);
    assert_eq!(s1.raft.term(), Term(1));

    // The next timeout asks again, still for term 2.
    let out = s1.fire();
    assert_eq!(
        out,
        vec![
            send(1, 2, pre_vote_req(2, 1, 1)),
            send(1, 3, pre_vote_req(2, 1, 1)),
        ]
    );
}

/// Thesis §9.6: granting a pre-vote changes nothing on the voter: no term,
/// no vote, nothing persisted, and it answers with the proposed term.
#[test]
fn pre_vote_is_granted_without_changing_term_or_vote() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    s2.advance(ms(150));
    let out = s2.step(1, pre_vote_req(2, 1, 1));
    assert_eq!(out, vec![send(2, 1, pre_vote_resp(2, true))]);
    assert_eq!(s2.raft.term(), Term(1));
    assert_eq!(s2.raft.vote(), None);
    assert_eq!(s2.raft.role(), Role::Follower);
}

/// Two followers that lose the same leader often time out together. Were
/// each pre-candidate to grant the other, both would campaign and split the
/// vote; a pre-candidate yields only to a more up-to-date log or, with an
/// equal log, to a lower id, so exactly one goes on.
#[test]
fn a_pre_candidate_yields_only_to_a_better_log_or_a_lower_id() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    let out = s2.fire();
    assert_eq!(
        out,
        vec![
            send(2, 1, pre_vote_req(2, 1, 1)),
            send(2, 3, pre_vote_req(2, 1, 1)),
        ]
    );
    assert_eq!(s2.raft.role(), Role::PreCandidate);
    // Equal logs: s3 (higher id) is refused, s1 (lower id) is granted.
    assert_eq!(
        s2.step(3, pre_vote_req(2, 1, 1)),
        vec![send(2, 3, pre_vote_resp(1, false))]
    );
    assert_eq!(
        s2.step(1, pre_vote_req(2, 1, 1)),
        vec![send(2, 1, pre_vote_resp(2, true))]
    );
    // A longer log wins whatever the id.
    assert_eq!(
        s2.step(3, pre_vote_req(2, 2, 1)),
        vec![send(2, 3, pre_vote_resp(2, true))]
    );
    assert_eq!(s2.raft.term(), Term(1));
    assert_eq!(s2.raft.role(), Role::PreCandidate);
}

/// Thesis §6.4.1: a server just restarted may have acknowledged a leader's
/// heartbeat right before it crashed, so for election_timeout_min after
/// starting it treats itself as having heard from a leader.
#[test]
fn restarted_server_refuses_votes_for_an_election_timeout() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    s2.advance(ms(149));
    assert_eq!(
        s2.step(1, pre_vote_req(2, 1, 1)),
        vec![send(2, 1, pre_vote_resp(1, false))]
    );
    assert_eq!(
        s2.step(1, vote_req(2, 1, 1)),
        vec![send(2, 1, vote_resp(1, false))]
    );
    assert_eq!(s2.raft.term(), Term(1));
}

/// §5.2 and Figure 2: a vote is durable before it is granted, and a server
/// grants at most one vote per term.
#[test]
fn vote_is_persisted_before_it_is_granted_and_given_once_per_term() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    // Past the stickiness window a restart opens (thesis §6.4.1).
    s2.advance(ms(150));

    // Phase 1: s1 asks for term 2. The new term and the vote are written
    // first, together, in one fsync.
    let out = s2.step(1, vote_req(2, 1, 1));
    assert_eq!(
        out,
        vec![
            hard_state(2, Some(1)),
            after(1, send(2, 1, vote_resp(2, true))),
        ]
    );
    assert_eq!(s2.raft.vote(), Some(node_id(1)));

    // Phase 2: s3 campaigns in the same term: refused, nothing written.
    let out = s2.step(3, vote_req(2, 1, 1));
    assert_eq!(out, vec![send(2, 3, vote_resp(2, false))]);
    assert_eq!(s2.raft.vote(), Some(node_id(1)));

    // Phase 3: s1's retransmitted request is granted again (same candidate).
    let out = s2.step(1, vote_req(2, 1, 1));
    assert_eq!(
        out,
        vec![
            hard_state(2, Some(1)),
            after(1, send(2, 1, vote_resp(2, true)))
        ]
    );
}

/// §5.4.1 election restriction: no vote (nor pre-vote) for a candidate whose
/// log is less up-to-date: a lower last term loses even with more entries,
/// an equal last term needs at least as many entries.
#[test]
fn vote_is_refused_to_a_candidate_with_a_less_up_to_date_log() {
    let mut s2 = Node::new(
        &config(2, 3),
        durable(2, None, vec![conf(1, 1, membership(3)), noop(2, 2)]),
    );
    s2.advance(ms(150));

    // Pre-vote from s3, whose log ends at (5, term 1): refused.
    let out = s2.step(3, pre_vote_req(3, 5, 1));
    assert_eq!(out, vec![send(2, 3, pre_vote_resp(2, false))]);

    // The real request: the term is adopted, the vote is not given.
    let out = s2.step(3, vote_req(3, 5, 1));
    assert_eq!(
        out,
        vec![
            hard_state(3, None),
            after(1, send(2, 3, vote_resp(3, false)))
        ]
    );
    assert_eq!(s2.raft.vote(), None);

    // s1's log ends at (1, term 2): same last term, shorter: refused.
    let out = s2.step(1, vote_req(3, 1, 2));
    assert_eq!(out, vec![send(2, 1, vote_resp(3, false))]);

    // s1's log ends at (2, term 2), as ours: granted.
    let out = s2.step(1, vote_req(3, 2, 2));
    assert_eq!(
        out,
        vec![
            hard_state(3, Some(1)),
            after(1, send(2, 1, vote_resp(3, true)))
        ]
    );
}

/// §5.2: a candidate that hears AppendEntries from a leader of its own term
/// returns to follower and accepts the entries.
#[test]
fn candidate_accepts_a_leader_of_its_term() {
    let mut s1 = Node::new(&config(1, 3), bootstrapped(3));
    s1.fire();
    s1.step(2, pre_vote_resp(2, true));
    assert_eq!(s1.raft.role(), Role::Candidate);

    // s3 won term 2 first.
    let out = s1.step(3, append(2, (1, 1), vec![noop(2, 2)], 1, 1));
    assert_eq!(
        out,
        vec![
            persist_append(vec![noop(2, 2)]),
            committed(1),
            after(1, send(1, 3, append_ok(2, 2, 1))),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Follower);
    assert_eq!(s1.raft.leader(), Some(node_id(3)));
    // Its own vote in term 2 stays recorded.
    assert_eq!(s1.raft.vote(), Some(node_id(1)));
}

// ===== thesis §4.2.3 leader stickiness, §3.10 transfer votes =====

/// Thesis §4.2.3: a follower that heard from its leader less than
/// election_timeout_min ago ignores a higher-term candidate (no term change,
/// no vote) and refuses its pre-vote, unless the request comes from a
/// leadership transfer (thesis §3.10).
#[test]
fn follower_that_heard_from_its_leader_recently_ignores_candidates() {
    let mut s2 = follower_of_s1(ms(10));

    // Phase 1: 100 ms after the leader's AppendEntries, s3 campaigns for term 3.
    s2.advance(ms(100));
    let out = s2.step(3, vote_req(3, 2, 2));
    assert_eq!(out, vec![send(2, 3, vote_resp(2, false))]);
    assert_eq!(s2.raft.term(), Term(2));
    assert_eq!(s2.raft.vote(), None);
    let out = s2.step(3, pre_vote_req(3, 2, 2));
    assert_eq!(out, vec![send(2, 3, pre_vote_resp(2, false))]);

    // Phase 2: the same request marked as a leadership transfer is granted.
    let out = s2.step(3, transfer_vote_req(3, 2, 2));
    assert_eq!(
        out,
        vec![
            hard_state(3, Some(3)),
            after(1, send(2, 3, vote_resp(3, true))),
        ]
    );
}

/// Thesis §4.2.3: stickiness lasts exactly election_timeout_min after the
/// last contact with the leader.
#[test]
fn stickiness_ends_an_election_timeout_after_the_last_contact() {
    let mut s2 = follower_of_s1(ms(10));
    s2.advance(ms(149));
    assert_eq!(
        s2.step(3, vote_req(3, 2, 2)),
        vec![send(2, 3, vote_resp(2, false))]
    );
    s2.advance(ms(1));
    assert_eq!(
        s2.step(3, vote_req(3, 2, 2)),
        vec![
            hard_state(3, Some(3)),
            after(1, send(2, 3, vote_resp(3, true))),
        ]
    );
}

// ===== hints from the transport (Input::Unreachable) =====

/// A hint that the leader is gone (its connections closed) lets a follower
/// campaign once the leader's lease timeout has passed since it last heard
/// from it (plus up to a heartbeat interval of jitter), not a whole election
/// timeout later. Until then it still refuses candidates, so the old
/// leader's lease (90% of the lease timeout) cannot overlap a new leader.
#[test]
fn a_hint_that_the_leader_is_gone_starts_the_pre_vote_once_the_lease_allows() {
    let mut s2 = follower_of_s1(ms(10));
    let contact = s2.now;
    let normal = s2.raft.poll_timeout();
    assert!(
        normal >= contact + ms(150),
        "no hint: a whole election timeout"
    );

    // Phase 1: the hint arrives 20 ms after the last AppendEntries.
    s2.advance(ms(20));
    s2.raft.peer_unreachable(s2.now, node_id(1));
    let early = s2.raft.poll_timeout();
    assert!(early >= contact + ms(100), "not before the lease timeout");
    assert!(early < contact + ms(150), "jitter is under a heartbeat");
    assert!(s2.raft.leader_suspected());

    // Phase 2: candidates are still refused within the lease timeout...
    s2.now = contact + ms(99);
    assert_eq!(
        s2.step(3, pre_vote_req(3, 2, 2)),
        vec![send(2, 3, pre_vote_resp(2, false))]
    );
    assert_eq!(
        s2.step(3, vote_req(3, 2, 2)),
        vec![send(2, 3, vote_resp(2, false))]
    );
    // ...and granted after it, though the election timeout has not passed.
    s2.now = contact + ms(100);
    assert_eq!(
        s2.step(3, pre_vote_req(3, 2, 2)),
        vec![send(2, 3, pre_vote_resp(3, true))]
    );

    // Phase 3: at the early deadline s2 asks for pre-votes itself.
    let out = s2.fire();
    assert_eq!(s2.now, early);
    assert_eq!(
        out,
        vec![
            send(2, 1, pre_vote_req(3, 2, 2)),
            send(2, 3, pre_vote_req(3, 2, 2)),
        ]
    );
}

/// A false hint (the leader is alive; one connection broke) is undone by
/// the leader's next message: the timer and stickiness are back to a whole
/// election timeout.
#[test]
fn a_false_hint_is_undone_by_the_next_message_from_the_leader() {
    let mut s2 = follower_of_s1(ms(10));
    s2.advance(ms(20));
    s2.raft.peer_unreachable(s2.now, node_id(1));
    s2.advance(ms(30));
    let out = s2.step(1, heartbeat(2, (2, 2), 2, 2));
    assert_eq!(out, vec![committed(2), send(2, 1, append_ok(2, 2, 2))]);
    let contact = s2.now;
    assert!(!s2.raft.leader_suspected());
    assert!(s2.raft.poll_timeout() >= contact + ms(150));
    s2.now = contact + ms(120);
    assert_eq!(
        s2.step(3, vote_req(3, 2, 2)),
        vec![send(2, 3, vote_resp(2, false))]
    );
}

/// Hints about a server that is not our leader, or hints to a leader, change
/// nothing: only a follower's own leader matters.
#[test]
fn hints_about_anyone_but_the_leader_change_nothing() {
    let mut s2 = follower_of_s1(ms(10));
    let before = s2.raft.poll_timeout();
    s2.raft.peer_unreachable(s2.now, node_id(3));
    s2.raft.peer_unreachable(s2.now, node_id(2));
    assert_eq!(s2.raft.poll_timeout(), before);
    assert!(!s2.raft.leader_suspected());

    let mut s1 = established(&config(1, 3), 3);
    let before = s1.raft.poll_timeout();
    s1.raft.peer_unreachable(s1.now, node_id(2));
    assert_eq!(s1.raft.poll_timeout(), before);
    assert_eq!(s1.raft.role(), Role::Leader);
}

// ===== §8 a new leader's no-op =====

/// §5.2 and §8: the candidate that wins announces it, appends a no-op in its
/// term, sends it to every peer (followers write in parallel with the
/// leader's own fsync), and commits once a majority holds it.
#[test]
fn new_leader_appends_a_noop_in_its_term_and_replicates_it() {
    let mut s1 = Node::new(&config(1, 3), bootstrapped(3));
    s1.fire();
    s1.step(2, pre_vote_resp(2, true));

    // Phase 1: s2's vote is a majority.
    let out = s1.step(2, vote_resp(2, true));
    assert_eq!(
        out,
        vec![
            became_leader(2),
            send(1, 2, append(2, (1, 1), vec![noop(2, 2)], 0, 1)),
            send(1, 3, append(2, (1, 1), vec![noop(2, 2)], 0, 2)),
            persist_append(vec![noop(2, 2)]),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Leader);
    assert!(!s1.raft.committed_in_term());

    // Phase 2: s3's late vote changes nothing.
    assert_eq!(s1.step(3, vote_resp(2, true)), vec![]);

    // Phase 3: s2 holds the no-op: with s1 a majority, so it commits.
    assert_eq!(s1.step(2, append_ok(2, 2, 1)), vec![committed(2)]);
    assert!(s1.raft.committed_in_term());
}

// ===== §5.3 AppendEntries on a follower =====

/// §5.3: AppendEntries whose prev entry the follower lacks or holds with
/// another term is refused, with a hint where to resume; one from an older
/// term is refused with the follower's term and seq 0 (it answers nothing
/// of that term).
#[test]
fn append_entries_with_a_mismatched_prev_is_rejected_with_a_hint() {
    let mut s2 = Node::new(
        &config(2, 3),
        durable(2, None, vec![conf(1, 1, membership(3)), noop(2, 2)]),
    );

    // Phase 1: prev (5, 2) is past our end: the hint is our last index.
    let out = s2.step(1, append(2, (5, 2), vec![cmd(6, 2, "a")], 0, 7));
    assert_eq!(out, vec![send(2, 1, append_reject(2, 2, 7))]);

    // Phase 2: prev (2, 3) conflicts with our (2, 2): the hint is the index before.
    let out = s2.step(1, append(3, (2, 3), vec![cmd(3, 3, "a")], 0, 8));
    assert_eq!(
        out,
        vec![
            hard_state(3, None),
            after(1, send(2, 1, append_reject(3, 1, 8)))
        ]
    );
    assert_eq!(s2.raft.log().last_index(), LogIndex(2));

    // Phase 3: a deposed term-2 leader is told about term 3. The answer
    // carries seq 0, not 9: were s3 to lead in term 3, seq 9 would read as
    // an acknowledgement of its own ninth message of term 3 (found by the
    // cluster fuzz target: a ReadIndex confirmed by an answer to nothing).
    let out = s2.step(3, append(2, (2, 2), vec![cmd(3, 2, "b")], 0, 9));
    assert_eq!(out, vec![send(2, 3, append_reject(3, 2, 0))]);
    assert_eq!(s2.raft.log().last_index(), LogIndex(2));
    assert_eq!(s2.raft.leader(), Some(node_id(1)));
}

/// Figure 2 and §5.3: new entries are made durable before the follower
/// acknowledges them (the Persist precedes the response in the action list),
/// and commit follows the leader's.
#[test]
fn follower_persists_new_entries_before_acknowledging_them() {
    let mut s2 = Node::new(
        &config(2, 3),
        durable(2, None, vec![conf(1, 1, membership(3)), noop(2, 2)]),
    );
    let out = s2.step(
        1,
        append(2, (2, 2), vec![cmd(3, 2, "a"), cmd(4, 2, "b")], 2, 5),
    );
    assert_eq!(
        out,
        vec![
            persist_append(vec![cmd(3, 2, "a"), cmd(4, 2, "b")]),
            committed(2),
            after(1, send(2, 1, append_ok(2, 4, 5))),
        ]
    );
    assert_eq!(s2.raft.log().last_index(), LogIndex(4));
    assert_eq!(s2.raft.leader(), Some(node_id(1)));
}

/// §5.3: entries the follower already holds are skipped, so a stale or
/// duplicated AppendEntries never truncates the newer entries after them.
#[test]
fn stale_append_entries_do_not_truncate_newer_entries() {
    let log = vec![
        conf(1, 1, membership(3)),
        noop(2, 2),
        cmd(3, 2, "a"),
        cmd(4, 2, "b"),
    ];
    let mut s2 = Node::new(&config(2, 3), durable(2, None, log.clone()));

    // An old AppendEntries carrying 2..=3 arrives late: nothing written.
    let out = s2.step(1, append(2, (1, 1), vec![noop(2, 2), cmd(3, 2, "a")], 0, 3));
    assert_eq!(out, vec![send(2, 1, append_ok(2, 3, 3))]);
    assert_eq!(s2.raft.log().last_index(), LogIndex(4));
    assert_eq!(s2.raft.log().entry(LogIndex(4)), Some(&log[3]));
}

/// §5.3: at the first entry whose term differs, the follower drops that entry
/// and all after it and takes the leader's: on disk, `TruncateFrom` there,
/// then an `Append` right after what is left.
#[test]
fn conflicting_suffix_is_truncated_and_replaced() {
    let mut disk = durable(
        3,
        None,
        vec![
            conf(1, 1, membership(3)),
            noop(2, 2),
            cmd(3, 2, "x"),
            cmd(4, 2, "y"),
        ],
    );
    let mut s2 = Node::new(&config(2, 3), disk.clone());

    // The term-3 leader's log has its no-op at 3.
    let out = s2.step(1, append(3, (2, 2), vec![noop(3, 3)], 2, 1));
    assert_eq!(
        out,
        vec![
            persist_truncate(3),
            persist_append(vec![noop(3, 3)]),
            committed(2),
            after(2, send(2, 1, append_ok(3, 3, 1))),
        ]
    );
    assert_eq!(s2.raft.log().last_index(), LogIndex(3));
    assert_eq!(s2.raft.log().term_at(LogIndex(3)), Some(Term(3)));

    apply_persists(&mut disk, &out);
    assert_eq!(
        disk.entries,
        vec![conf(1, 1, membership(3)), noop(2, 2), noop(3, 3)]
    );
}

/// §5.4 (Leader Completeness): a follower never overwrites an entry it knows
/// is committed, even if a (broken) leader asks it to: no leader of a current
/// term can hold another entry there, so the message is refused outright.
#[test]
fn follower_refuses_to_overwrite_a_committed_entry() {
    let mut s2 = Node::new(
        &config(2, 3),
        durable(
            3,
            None,
            vec![conf(1, 1, membership(3)), noop(2, 2), cmd(3, 2, "x")],
        ),
    );
    let out = s2.step(1, heartbeat(3, (3, 2), 3, 1));
    assert_eq!(out, vec![committed(3), send(2, 1, append_ok(3, 3, 1))]);

    let out = s2.step(1, append(3, (2, 2), vec![noop(3, 3)], 3, 2));
    assert_eq!(
        out,
        vec![refused(
            1,
            "AppendEntries entry 3 of term 3 contradicts committed term 2"
        )]
    );
    assert_eq!(s2.raft.log().term_at(LogIndex(3)), Some(Term(2)));
}

/// Figure 2, AppendEntries rule 5: commitIndex = min(leaderCommit, index of
/// last new entry); the follower's commit index never goes back.
#[test]
fn follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let mut s2 = Node::new(
        &config(2, 3),
        durable(2, None, vec![conf(1, 1, membership(3)), noop(2, 2)]),
    );

    // The leader committed 9, but we only know we match it up to 3.
    let out = s2.step(1, append(2, (2, 2), vec![cmd(3, 2, "a")], 9, 1));
    assert_eq!(
        out,
        vec![
            persist_append(vec![cmd(3, 2, "a")]),
            committed(3),
            after(1, send(2, 1, append_ok(2, 3, 1))),
        ]
    );
    assert_eq!(s2.raft.commit_index(), LogIndex(3));

    // A heartbeat anchored lower does not move commit backwards.
    let out = s2.step(1, heartbeat(2, (1, 1), 9, 2));
    assert_eq!(out, vec![send(2, 1, append_ok(2, 1, 2))]);
    assert_eq!(s2.raft.commit_index(), LogIndex(3));
}

/// Thesis §4.1: a configuration entry takes effect when appended, and a
/// follower whose uncommitted configuration entry is truncated away must fall
/// back to the previous configuration in its log. (Regression: before
/// 33f4251 the follower kept the configuration of the deleted entry.)
#[test]
fn truncating_a_configuration_entry_restores_the_previous_configuration() {
    let with_s4 = with_server(membership(3), 4, Suffrage::Voter);
    let mut s2 = Node::new(
        &config(2, 3),
        durable(
            2,
            None,
            vec![conf(1, 1, membership(3)), noop(2, 2), conf(3, 2, with_s4)],
        ),
    );
    assert_eq!(s2.raft.membership().voter_count(), 4);

    // The term-3 leader never had entry 3: it is replaced by its no-op.
    let out = s2.step(1, append(3, (2, 2), vec![noop(3, 3)], 2, 1));
    assert_eq!(
        out,
        vec![
            hard_state(3, None),
            persist_truncate(3),
            persist_append(vec![noop(3, 3)]),
            committed(2),
            after(3, send(2, 1, append_ok(3, 3, 1))),
        ]
    );
    assert_eq!(s2.raft.membership(), &membership(3));
}

// ===== §5.4.2 commitment rule (Figure 8) =====

/// §5.4.2 and Figure 8: a leader never commits an entry of an earlier term by
/// counting replicas. Here s1 leads term 4 with entry 2 from term 2; once
/// entry 2 is on s1, s2, s3 (a majority of five) it is still not committed,
/// because a server holding a term-3 entry at 2 could still be elected
/// (Figure 8 (c)-(d)). Only when s1's term-4 no-op at 3 reaches a majority do
/// 2 and 3 commit together (Figure 8 (e)).
#[test]
fn leader_commits_an_earlier_term_entry_only_through_an_entry_of_its_own_term() {
    let mut cfg = config(1, 5);
    cfg.append_entries_max = 1; // one entry per AppendEntries, to stop at 2
    let mut s1 = Node::new(
        &cfg,
        durable(3, None, vec![conf(1, 1, membership(5)), cmd(2, 2, "fig8")]),
    );

    // Phase 1: s1 wins term 4 with s2 and s3 and sends its no-op at 3.
    let out = elect(&mut s1, &[2, 3]);
    let noop_ae = |seq| append(4, (2, 2), vec![noop(3, 4)], 0, seq);
    assert_eq!(
        out,
        vec![
            became_leader(4),
            send(1, 2, noop_ae(1)),
            send(1, 3, noop_ae(2)),
            send(1, 4, noop_ae(3)),
            send(1, 5, noop_ae(4)),
            persist_append(vec![noop(3, 4)]),
        ]
    );

    // Phase 2: s3 lacks entry 2; the leader backs up and sends it alone.
    let out = s1.step(3, append_reject(4, 1, 2));
    assert_eq!(
        out,
        vec![send(1, 3, append(4, (1, 1), vec![cmd(2, 2, "fig8")], 0, 5))]
    );

    // Phase 3: s2 holds 1..=3; only two of five have the no-op.
    assert_eq!(s1.step(2, append_ok(4, 3, 1)), vec![]);

    // Phase 4: s3 now holds entry 2: it is on s1, s2, s3, a majority, but it
    // is from term 2, so nothing commits. The leader sends s3 the no-op.
    let out = s1.step(3, append_ok(4, 2, 5));
    assert_eq!(out, vec![send(1, 3, noop_ae(6))]);
    assert_eq!(s1.raft.commit_index(), LogIndex(0));

    // Phase 5: the term-4 no-op is on a majority: 2 and 3 commit at once.
    assert_eq!(s1.step(3, append_ok(4, 3, 6)), vec![committed(3)]);
    assert_eq!(s1.raft.commit_index(), LogIndex(3));
}

/// A full queue (`pending_proposals_max` uncommitted entries) refuses
/// client writes with `Busy`, but not a configuration change: at most one is
/// ever uncommitted, and a steady load must not keep autopilot from
/// promoting a server (the simulator's rolling restart, seed 14).
#[test]
fn a_full_queue_refuses_writes_but_not_a_configuration_change() {
    let mut cfg = config(1, 3);
    cfg.pending_proposals_max = 2;
    let mut s1 = established(&cfg, 3);
    assert_eq!(s1.propose(set("a")).0, Ok((LogIndex(3), Term(2))));
    assert_eq!(s1.propose(set("b")).0, Ok((LogIndex(4), Term(2))));
    assert_eq!(s1.propose(set("c")).0, Err(ProposeError::Busy));
    let change = with_server(membership(3), 4, Suffrage::Nonvoter);
    let (r, _) = s1.propose(EntryPayload::Membership(change.clone()));
    assert_eq!(r, Ok((LogIndex(5), Term(2))));
    // Still one at a time.
    let again = with_server(change, 5, Suffrage::Nonvoter);
    let (r, _) = s1.propose(EntryPayload::Membership(again));
    assert_eq!(r, Err(ProposeError::ConfigChangeInProgress));
}

// ===== non-voters (Raft protocol 3 / thesis §4.2.1) =====

/// Thesis §4.2.1: a non-voter receives the log but is never asked for its
/// vote, its vote does not count, its acknowledgements do not commit, and it
/// never campaigns. `voter_count` counts voters only.
#[test]
fn nonvoters_replicate_but_neither_vote_nor_count_toward_commit() {
    let m = with_server(membership(3), 4, Suffrage::Nonvoter);
    assert_eq!(m.voter_count(), 3);
    assert_eq!(m.servers.len(), 4);
    let disk = durable(1, None, vec![conf(1, 1, m.clone())]);

    // Phase 1: the non-voter's timer fires; it does not campaign.
    let mut s4 = Node::new(&config(4, 3), disk.clone());
    assert_eq!(s4.raft.membership().voter_count(), 3);
    assert_eq!(s4.fire(), vec![]);
    assert_eq!(s4.raft.role(), Role::Follower);
    assert_eq!(s4.raft.term(), Term(1));

    // Phase 2: s1 asks only the voters; s4's (unsolicited) grants do not count.
    let mut s1 = Node::new(&config(1, 3), disk);
    let out = s1.fire();
    assert_eq!(
        out,
        vec![
            send(1, 2, pre_vote_req(2, 1, 1)),
            send(1, 3, pre_vote_req(2, 1, 1)),
        ]
    );
    assert_eq!(s1.step(4, pre_vote_resp(2, true)), vec![]);
    assert_eq!(s1.raft.role(), Role::PreCandidate);
    let out = s1.step(2, pre_vote_resp(2, true));
    assert_eq!(
        out,
        vec![
            hard_state(2, Some(1)),
            after(1, send(1, 2, vote_req(2, 1, 1))),
            after(1, send(1, 3, vote_req(2, 1, 1))),
        ]
    );
    assert_eq!(s1.step(4, vote_resp(2, true)), vec![]);
    assert_eq!(s1.raft.role(), Role::Candidate);

    // Phase 3: s2's vote wins; the no-op goes to every server, s4 included.
    let out = s1.step(2, vote_resp(2, true));
    let noop_ae = |seq| append(2, (1, 1), vec![noop(2, 2)], 0, seq);
    assert_eq!(
        out,
        vec![
            became_leader(2),
            send(1, 2, noop_ae(1)),
            send(1, 3, noop_ae(2)),
            send(1, 4, noop_ae(3)),
            persist_append(vec![noop(2, 2)]),
        ]
    );

    // Phase 4: s4 holding the no-op does not make a majority; s2 does.
    assert_eq!(s1.step(4, append_ok(2, 2, 3)), vec![]);
    assert_eq!(s1.raft.commit_index(), LogIndex(0));
    assert_eq!(s1.step(2, append_ok(2, 2, 1)), vec![committed(2)]);
}

// ===== thesis §10.2.1 pipelining =====

/// Thesis §10.2.1: a leader keeps at most `inflight_appends_max`
/// AppendEntries carrying entries unanswered per follower; what is proposed
/// meanwhile is only written locally, then sent in one batch after an answer.
#[test]
fn pipeline_is_bounded_and_later_proposals_are_batched() {
    let mut cfg = config(1, 3);
    cfg.inflight_appends_max = 2;
    let mut s1 = established(&cfg, 3);

    // Phase 1: two proposals fill both windows.
    let (r, out) = s1.propose(set("a"));
    assert_eq!(r, Ok((LogIndex(3), Term(2))));
    assert_eq!(
        out,
        vec![
            send(1, 2, append(2, (2, 2), vec![cmd(3, 2, "a")], 2, 3)),
            send(1, 3, append(2, (2, 2), vec![cmd(3, 2, "a")], 2, 4)),
            persist_append(vec![cmd(3, 2, "a")]),
        ]
    );
    let (r, out) = s1.propose(set("b"));
    assert_eq!(r, Ok((LogIndex(4), Term(2))));
    assert_eq!(
        out,
        vec![
            send(1, 2, append(2, (3, 2), vec![cmd(4, 2, "b")], 2, 5)),
            send(1, 3, append(2, (3, 2), vec![cmd(4, 2, "b")], 2, 6)),
            persist_append(vec![cmd(4, 2, "b")]),
        ]
    );

    // Phase 2: the windows are full: the next two are only written locally.
    let (r, out) = s1.propose(set("c"));
    assert_eq!(r, Ok((LogIndex(5), Term(2))));
    assert_eq!(out, vec![persist_append(vec![cmd(5, 2, "c")])]);
    let (r, out) = s1.propose(set("d"));
    assert_eq!(r, Ok((LogIndex(6), Term(2))));
    assert_eq!(out, vec![persist_append(vec![cmd(6, 2, "d")])]);

    // Phase 3: s2 answers the first: 3 commits, and c and d go in one message.
    let out = s1.step(2, append_ok(2, 3, 3));
    assert_eq!(
        out,
        vec![
            committed(3),
            send(
                1,
                2,
                append(2, (4, 2), vec![cmd(5, 2, "c"), cmd(6, 2, "d")], 3, 7)
            ),
        ]
    );
}

// ===== durability is explicit (Input::Persisted, thesis §10.2.1) =====

/// `Raft` calls without the instant disk of `Node`: writes stay in flight
/// until the test reports them with `persisted`, and ids are absolute.
fn raw_step(node: &mut Node, from: u64, msg: RaftMessage) -> Vec<Action> {
    let mut out = Vec::new();
    node.raft
        .step(node.now, node_id(from), msg, &mut out)
        .expect("an honest message");
    out
}

fn raw_persisted(node: &mut Node, id: u64) -> Vec<Action> {
    let mut out = Vec::new();
    node.raft.persisted(node.now, PersistId(id), &mut out);
    out
}

fn persist_ids(out: &[Action]) -> Vec<u64> {
    out.iter()
        .filter_map(|a| match a {
            Action::Persist { id, .. } => Some(id.0),
            _ => None,
        })
        .collect()
}

/// Thesis §10.2.1: the leader sends its new entry before its own write is
/// durable, and the followers' copies may commit it; but the leader counts
/// its own copy only once the driver reports it durable.
#[test]
fn a_leader_counts_its_own_entry_toward_commit_only_once_it_is_durable() {
    let mut s1 = established(&config(1, 3), 3);

    // Phase 1: propose; the sends wait for nothing, the write is in flight.
    let mut out = Vec::new();
    let r = s1.raft.propose(s1.now, set("a"), &mut out);
    assert_eq!(r, Ok((LogIndex(3), Term(2))));
    let ids = persist_ids(&out);
    assert_eq!(ids.len(), 1);
    assert!(out
        .iter()
        .all(|a| !matches!(a, Action::Send { after: Some(_), .. })));

    // Phase 2: one follower's copy plus a leader copy that is not durable
    // yet is not a majority.
    let out = raw_step(&mut s1, 2, append_ok(2, 3, 3));
    assert!(!out.contains(&committed(3)), "{out:?}");
    assert_eq!(s1.raft.commit_index(), LogIndex(2));

    // Phase 3: the driver reports the write durable: now it commits.
    let out = raw_persisted(&mut s1, ids[0]);
    assert_eq!(out, vec![committed(3)]);

    // Phase 4: the next entry commits on the two followers alone, before the
    // leader's own write is durable.
    let mut out = Vec::new();
    s1.raft.propose(s1.now, set("b"), &mut out).unwrap();
    raw_step(&mut s1, 2, append_ok(2, 4, 5));
    let out = raw_step(&mut s1, 3, append_ok(2, 4, 6));
    assert!(out.contains(&committed(4)), "{out:?}");
    assert!(s1.raft.durable_index() < LogIndex(4));
}

/// A one-server cluster commits its no-op only after its write is durable:
/// there is nobody else whose copy could count.
#[test]
fn a_one_server_cluster_commits_only_what_its_disk_holds() {
    let mut s1 = Node::new(&config(1, 1), bootstrapped(1));
    let mut out = Vec::new();
    s1.now = s1.raft.poll_timeout();
    s1.raft.tick(s1.now, &mut out);
    assert_eq!(s1.raft.role(), Role::Leader);
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::Event(Event::Committed { .. }))));
    let ids = persist_ids(&out);
    assert_eq!(ids.len(), 2, "hard state, then the no-op: {out:?}");
    // Reporting only the hard state is not enough.
    assert_eq!(raw_persisted(&mut s1, ids[0]), vec![]);
    assert_eq!(raw_persisted(&mut s1, ids[1]), vec![committed(2)]);
}

/// Figure 2 ("persist before responding"), now as data: a vote names the
/// write that records it, and an acknowledgement of entries the write that
/// stores them.
#[test]
fn a_vote_and_an_acknowledgement_name_the_write_they_wait_for() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    s2.advance(ms(1000));
    let out = raw_step(&mut s2, 1, vote_req(2, 1, 1));
    assert_eq!(
        out,
        vec![
            Action::Persist {
                id: PersistId(1),
                op: PersistOp::HardState(HardState {
                    term: Term(2),
                    vote: Some(node_id(1)),
                }),
                sync: true,
            },
            Action::Send {
                address: "s1:8300".into(),
                message: Message {
                    from: node_id(2),
                    from_address: "s2:8300".into(),
                    to: node_id(1),
                    body: MessageBody::Raft(vote_resp(2, true)),
                },
                after: Some(PersistId(1)),
            },
        ]
    );
    // Write 1 is still in flight: the acknowledgement waits for write 2,
    // which covers it.
    let out = raw_step(&mut s2, 1, append(2, (1, 1), vec![noop(2, 2)], 1, 1));
    let ack = out
        .iter()
        .find_map(|a| match a {
            Action::Send { after, .. } => Some(*after),
            _ => None,
        })
        .unwrap();
    assert_eq!(persist_ids(&out), vec![2]);
    assert_eq!(ack, Some(PersistId(2)));
    // Once everything is durable, a heartbeat's answer waits for nothing.
    raw_persisted(&mut s2, 2);
    let out = raw_step(&mut s2, 1, heartbeat(2, (2, 2), 2, 2));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Send { after: None, .. })));
}

/// §5.3 with writes in flight: entries a conflicting AppendEntries replaced
/// are not counted durable when the write that carried them completes.
#[test]
fn a_write_in_flight_for_entries_since_replaced_makes_only_the_survivors_durable() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    s2.advance(ms(1000));
    // Term 2 entries 2 and 3 arrive (writes 1: hard state, 2: append).
    let out = raw_step(
        &mut s2,
        1,
        append(2, (1, 1), vec![noop(2, 2), cmd(3, 2, "x")], 1, 1),
    );
    assert_eq!(persist_ids(&out), vec![1, 2]);
    // A term-3 leader replaces entry 3 (writes 3: hard state, 4: the
    // truncation, 5: append).
    s2.advance(ms(1000));
    let out = raw_step(&mut s2, 3, append(3, (2, 2), vec![noop(3, 3)], 1, 1));
    assert_eq!(persist_ids(&out), vec![3, 4, 5]);
    assert_eq!(s2.raft.durable_index(), LogIndex(1));
    // Write 2 completes: of what it carried, only entry 2 is still in the log.
    raw_persisted(&mut s2, 2);
    assert_eq!(s2.raft.durable_index(), LogIndex(2));
    raw_persisted(&mut s2, 5);
    assert_eq!(s2.raft.durable_index(), LogIndex(3));
}

// ===== thesis §6.2 check-quorum =====

/// Thesis §6.2: at each check-quorum round (every election_timeout_min) a
/// leader that heard from no majority of voters since the previous round
/// steps down; its term does not change.
#[test]
fn leader_that_hears_from_no_majority_for_a_round_steps_down() {
    let mut s1 = established(&config(1, 3), 3);
    let elected_at = s1.now;

    // Phase 1: the first round ends; both followers answered in it.
    s1.now = elected_at + ms(150);
    let out = s1.tick();
    assert_eq!(
        out,
        vec![
            send(1, 2, heartbeat(2, (2, 2), 2, 3)),
            send(1, 3, heartbeat(2, (2, 2), 2, 4)),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Leader);

    // Phase 2: silence. Just before the second round ends, still leading.
    s1.now = elected_at + ms(299);
    let out = s1.tick();
    assert_eq!(
        out,
        vec![
            send(1, 2, heartbeat(2, (2, 2), 2, 5)),
            send(1, 3, heartbeat(2, (2, 2), 2, 6)),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Leader);

    // Phase 3: the round ends with no answer: step down, same term, nothing persisted.
    s1.now = elected_at + ms(300);
    assert_eq!(s1.raft.poll_timeout(), s1.now);
    assert_eq!(s1.tick(), vec![stepped_down(2)]);
    assert_eq!(s1.raft.role(), Role::Follower);
    assert_eq!(s1.raft.term(), Term(2));
    assert_eq!(s1.raft.leader(), None);
}

/// Thesis §6.2: one answering follower keeps a leader of three in office.
#[test]
fn leader_that_hears_from_a_majority_keeps_leading() {
    let mut s1 = established(&config(1, 3), 3);
    let elected_at = s1.now;
    s1.now = elected_at + ms(150);
    s1.tick();
    s1.now = elected_at + ms(200);
    assert_eq!(s1.step(3, append_ok(2, 2, 4)), vec![]);
    s1.now = elected_at + ms(300);
    let out = s1.tick();
    assert_eq!(
        out,
        vec![
            send(1, 2, heartbeat(2, (2, 2), 2, 5)),
            send(1, 3, heartbeat(2, (2, 2), 2, 6)),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Leader);
}

// ===== thesis §6.4 ReadIndex =====

/// Thesis §6.4: a read is served at the commit index only after a fresh
/// round of heartbeats shows a majority still follows this leader; an answer
/// to an earlier heartbeat does not count.
#[test]
fn read_index_waits_for_a_heartbeat_round_from_a_majority() {
    let mut s1 = established(&config(1, 3), 3);

    // Phase 1: the read starts a round of heartbeats (seq 3 and 4).
    let (r, out) = s1.read_index(7);
    assert_eq!(r, Ok(()));
    assert_eq!(
        out,
        vec![
            send(1, 2, heartbeat(2, (2, 2), 2, 3)),
            send(1, 3, heartbeat(2, (2, 2), 2, 4)),
        ]
    );
    assert_eq!(s1.raft.take_ready_reads(), vec![]);

    // Phase 2: s2 repeats its answer to seq 1, sent before the read: not enough.
    assert_eq!(s1.step(2, append_ok(2, 2, 1)), vec![]);
    assert_eq!(s1.raft.take_ready_reads(), vec![]);

    // Phase 3: s3 answers the read's round: with s1, a majority.
    assert_eq!(s1.step(3, append_ok(2, 2, 4)), vec![]);
    assert_eq!(s1.raft.take_ready_reads(), vec![(7, LogIndex(2))]);
    assert_eq!(s1.raft.take_ready_reads(), vec![]);
}

/// Thesis §6.4 step 1: until the leader has committed an entry of its term it
/// does not know the commit index, so a read waits for the no-op to commit
/// before its heartbeat round even starts. Followers cannot serve it.
#[test]
fn read_index_before_the_noop_commits_is_delayed() {
    let mut s1 = elected(&config(1, 3), 3);

    // Phase 1: accepted, but nothing is sent yet.
    let (r, out) = s1.read_index(9);
    assert_eq!(r, Ok(()));
    assert_eq!(out, vec![]);

    // Phase 2: the no-op commits; the read's round starts at once. s3 has not
    // answered yet, so its heartbeat is anchored at what it is known to hold.
    let out = s1.step(2, append_ok(2, 2, 1));
    assert_eq!(
        out,
        vec![
            committed(2),
            send(1, 2, heartbeat(2, (2, 2), 2, 3)),
            send(1, 3, heartbeat(2, (0, 0), 2, 4)),
        ]
    );
    assert_eq!(s1.raft.take_ready_reads(), vec![]);

    // Phase 3: s2 answers the round.
    assert_eq!(s1.step(2, append_ok(2, 2, 3)), vec![]);
    assert_eq!(s1.raft.take_ready_reads(), vec![(9, LogIndex(2))]);

    // A follower refuses reads.
    let mut s2 = follower_of_s1(ms(10));
    assert_eq!(s2.read_index(1), (Err(ProposeError::NotLeader), vec![]));
}

// ===== thesis §6.4.1 leases =====

/// Thesis §6.4.1: the lease runs from when the heartbeat a majority answered
/// was *sent*, for 90% of the lease timeout (100 ms here; a tenth kept for
/// clock drift); it is void before the no-op commits and during a leadership
/// transfer (whose vote requests bypass stickiness, thesis §3.10).
#[test]
fn lease_holds_after_a_majority_answers_and_lapses_without_answers() {
    let mut s1 = elected(&config(1, 3), 3);
    let t = s1.now; // the no-op went out now, seq 1 and 2
    assert!(!s1.raft.lease_valid(t));

    // Phase 1: s2 answers seq 1: lease until t + 90 ms.
    s1.now = t + ms(5);
    assert_eq!(s1.step(2, append_ok(2, 2, 1)), vec![committed(2)]);
    assert!(s1.raft.lease_valid(t + ms(5)));
    assert!(s1.raft.lease_valid(t + Duration::from_nanos(ms(90).0 - 1)));
    assert!(!s1.raft.lease_valid(t + ms(90)));
    s1.now = t + ms(6);
    assert_eq!(s1.step(3, append_ok(2, 2, 2)), vec![]);
    assert!(!s1.raft.lease_valid(t + ms(90)));

    // Phase 2: a heartbeat round at t + 100 ms, answered by s3 only.
    s1.now = t + ms(100);
    let out = s1.tick();
    assert_eq!(
        out,
        vec![
            send(1, 2, heartbeat(2, (2, 2), 2, 3)),
            send(1, 3, heartbeat(2, (2, 2), 2, 4)),
        ]
    );
    assert!(!s1.raft.lease_valid(t + ms(110)));
    s1.now = t + ms(120);
    assert_eq!(s1.step(3, append_ok(2, 2, 4)), vec![]);
    assert!(s1.raft.lease_valid(t + ms(120)));
    assert!(s1.raft.lease_valid(t + ms(189)));
    assert!(!s1.raft.lease_valid(t + ms(190)));

    // Phase 3: a leadership transfer voids the lease at once.
    s1.now = t + ms(130);
    let (r, out) = s1.transfer(2);
    assert_eq!(r, Ok(node_id(2)));
    assert_eq!(out, vec![send(1, 2, timeout_now(2))]);
    assert!(!s1.raft.lease_valid(t + ms(131)));
}

// ===== thesis §3.10 leadership transfer =====

/// Thesis §3.10: a target that is up to date gets TimeoutNow at once; while
/// the transfer is under way the leader accepts no proposals; when it times
/// out (election_timeout_min) the leader carries on.
#[test]
fn transfer_to_an_up_to_date_target_sends_timeout_now_and_pauses_proposals() {
    let mut s1 = established(&config(1, 3), 3);
    let started = s1.now;

    // Phase 1: s2 holds everything: TimeoutNow right away.
    let (r, out) = s1.transfer(2);
    assert_eq!(r, Ok(node_id(2)));
    assert_eq!(out, vec![send(1, 2, timeout_now(2))]);
    assert_eq!(s1.raft.transfer_target(), Some(node_id(2)));

    // Phase 2: proposals and a second transfer are refused.
    assert_eq!(
        s1.propose(set("a")),
        (Err(ProposeError::TransferInProgress), vec![])
    );
    assert_eq!(
        s1.transfer(3),
        (Err(ProposeError::TransferInProgress), vec![])
    );

    // Phase 3: s2 never took over; at the deadline s1 resumes.
    s1.now = started + ms(150);
    let out = s1.tick();
    assert_eq!(
        out,
        vec![
            send(1, 2, heartbeat(2, (2, 2), 2, 3)),
            send(1, 3, heartbeat(2, (2, 2), 2, 4)),
        ]
    );
    assert_eq!(s1.raft.transfer_target(), None);
    assert_eq!(s1.propose(set("a")).0, Ok((LogIndex(3), Term(2))));
}

/// Thesis §3.10: a lagging target is first brought up to date; TimeoutNow
/// follows the answer that shows it holds the leader's whole log.
#[test]
fn transfer_to_a_lagging_target_waits_until_it_catches_up() {
    let mut s1 = elected(&config(1, 3), 3);
    assert_eq!(s1.step(2, append_ok(2, 2, 1)), vec![committed(2)]);

    // s3 has the no-op in flight (seq 2): nothing more to send it yet.
    let (r, out) = s1.transfer(3);
    assert_eq!(r, Ok(node_id(3)));
    assert_eq!(out, vec![]);

    assert_eq!(
        s1.step(3, append_ok(2, 2, 2)),
        vec![send(1, 3, timeout_now(2))]
    );
}

/// Thesis §3.10: TimeoutNow makes the target campaign at once, skipping
/// pre-vote, with `leadership_transfer` set so voters that still hear from
/// the old leader grant their vote; a TimeoutNow from an old term is ignored.
#[test]
fn timeout_now_starts_an_election_at_once_without_pre_vote() {
    let mut s2 = follower_of_s1(ms(10));
    s2.advance(ms(20));

    assert_eq!(s2.step(1, timeout_now(1)), vec![]);
    assert_eq!(s2.raft.role(), Role::Follower);

    let out = s2.step(1, timeout_now(2));
    assert_eq!(
        out,
        vec![
            hard_state(3, Some(2)),
            after(1, send(2, 1, transfer_vote_req(3, 2, 2))),
            after(1, send(2, 3, transfer_vote_req(3, 2, 2))),
        ]
    );
    assert_eq!(s2.raft.role(), Role::Candidate);
}

/// Thesis §3.10: the old leader, which would ignore an ordinary candidate
/// (thesis §4.2.3), steps down for the transfer target's vote request.
#[test]
fn leader_grants_its_vote_to_the_transfer_target() {
    let mut s1 = established(&config(1, 3), 3);
    assert_eq!(s1.transfer(2).1, vec![send(1, 2, timeout_now(2))]);

    assert_eq!(
        s1.step(3, vote_req(3, 2, 2)),
        vec![send(1, 3, vote_resp(2, false))]
    );
    let out = s1.step(2, transfer_vote_req(3, 2, 2));
    assert_eq!(
        out,
        vec![
            stepped_down(3),
            hard_state(3, Some(2)),
            after(1, send(1, 2, vote_resp(3, true))),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Follower);
}

// ===== thesis §4.1, §4.2.2 membership changes =====

/// Thesis §4.1: one configuration change at a time. The new configuration is
/// in effect as soon as it is appended (a non-voter joins, the voter count
/// stays); a second change is refused until the first commits.
#[test]
fn second_membership_change_waits_for_the_first_to_commit() {
    let mut s1 = established(&config(1, 3), 3);
    let joins = with_server(membership(3), 4, Suffrage::Nonvoter);
    let promoted = with_server(membership(3), 4, Suffrage::Voter);

    // Phase 1: add s4 as a non-voter.
    let (r, out) = s1.propose(EntryPayload::Membership(joins.clone()));
    assert_eq!(r, Ok((LogIndex(3), Term(2))));
    assert_eq!(
        out,
        vec![
            send(
                1,
                2,
                append(2, (2, 2), vec![conf(3, 2, joins.clone())], 2, 3)
            ),
            send(
                1,
                3,
                append(2, (2, 2), vec![conf(3, 2, joins.clone())], 2, 4)
            ),
            persist_append(vec![conf(3, 2, joins.clone())]),
        ]
    );
    assert_eq!(s1.raft.membership(), &joins);
    assert_eq!(s1.raft.membership().voter_count(), 3);

    // Phase 2: promoting s4 now is refused, nothing emitted.
    assert_eq!(
        s1.propose(EntryPayload::Membership(promoted.clone())),
        (Err(ProposeError::ConfigChangeInProgress), vec![])
    );

    // Phase 3: the first change commits; the promotion is accepted and goes
    // to s4 too.
    assert_eq!(s1.step(2, append_ok(2, 3, 3)), vec![committed(3)]);
    let (r, out) = s1.propose(EntryPayload::Membership(promoted.clone()));
    assert_eq!(r, Ok((LogIndex(4), Term(2))));
    let ae = |seq| append(2, (3, 2), vec![conf(4, 2, promoted.clone())], 3, seq);
    assert_eq!(
        out,
        vec![
            send(1, 2, ae(5)),
            send(1, 3, ae(6)),
            send(1, 4, ae(7)),
            persist_append(vec![conf(4, 2, promoted.clone())]),
        ]
    );
    assert_eq!(s1.raft.membership().voter_count(), 4);

    // A change of more than one server is refused outright.
    let two = with_server(
        with_server(membership(4), 5, Suffrage::Voter),
        6,
        Suffrage::Voter,
    );
    s1.step(2, append_ok(2, 4, 5));
    assert_eq!(s1.step(3, append_ok(2, 4, 6)), vec![committed(4)]);
    assert!(matches!(
        s1.propose(EntryPayload::Membership(two)),
        (Err(ProposeError::BadChange(_)), _)
    ));
}

/// Thesis §4.2.2: a leader removing itself keeps leading and replicating
/// until the new configuration commits, but does not count itself toward
/// that majority; then it steps down, reports `Removed`, and never campaigns.
#[test]
fn leader_that_removes_itself_steps_down_once_the_removal_commits() {
    let mut s1 = established(&config(1, 3), 3);
    let without_s1 = without_server(membership(3), 1);

    // Phase 1: the removal is appended and sent; s1 still leads.
    let (r, out) = s1.propose(EntryPayload::Membership(without_s1.clone()));
    assert_eq!(r, Ok((LogIndex(3), Term(2))));
    assert_eq!(
        out,
        vec![
            send(
                1,
                2,
                append(2, (2, 2), vec![conf(3, 2, without_s1.clone())], 2, 3)
            ),
            send(
                1,
                3,
                append(2, (2, 2), vec![conf(3, 2, without_s1.clone())], 2, 4)
            ),
            persist_append(vec![conf(3, 2, without_s1.clone())]),
        ]
    );
    assert_eq!(s1.raft.role(), Role::Leader);

    // Phase 2: it still takes and replicates commands.
    let (r, out) = s1.propose(set("a"));
    assert_eq!(r, Ok((LogIndex(4), Term(2))));
    assert_eq!(
        out,
        vec![
            send(1, 2, append(2, (3, 2), vec![cmd(4, 2, "a")], 2, 5)),
            send(1, 3, append(2, (3, 2), vec![cmd(4, 2, "a")], 2, 6)),
            persist_append(vec![cmd(4, 2, "a")]),
        ]
    );

    // Phase 3: s2 holds everything. s1 + s2 would be a majority of the old
    // three, but s1 no longer counts: one of the two voters is not enough.
    assert_eq!(s1.step(2, append_ok(2, 4, 5)), vec![]);
    assert_eq!(s1.raft.commit_index(), LogIndex(2));

    // Phase 4: s3 too: the removal commits and s1 steps down.
    assert_eq!(
        s1.step(3, append_ok(2, 4, 6)),
        vec![committed(4), stepped_down(2), Action::Event(Event::Removed)]
    );
    assert_eq!(s1.raft.role(), Role::Follower);

    // Phase 5: its election timer fires: it is no voter, so nothing happens.
    assert_eq!(s1.fire(), vec![]);
    assert_eq!(s1.raft.role(), Role::Follower);
    assert_eq!(s1.raft.term(), Term(2));
}

// ===== §7 snapshots =====

/// §7: after the state machine snapshots at 5, the log drops what the
/// snapshot covers except `trailing` entries kept for slow followers; the
/// snapshot is persisted before `SnapshotTaken` is reported.
#[test]
fn snapshot_taken_compacts_the_log_keeping_trailing_entries() {
    let log = vec![
        conf(1, 1, membership(3)),
        noop(2, 2),
        cmd(3, 2, "a"),
        cmd(4, 2, "b"),
        cmd(5, 2, "c"),
        cmd(6, 2, "d"),
    ];
    let mut disk = durable(2, None, log);
    let mut s2 = Node::new(&config(2, 3), disk.clone());
    assert_eq!(
        s2.step(1, heartbeat(2, (6, 2), 6, 1)),
        vec![committed(6), send(2, 1, append_ok(2, 6, 1))]
    );

    let snap = snapshot(5, 2, membership(3));
    let out = s2.snapshot_taken(snap.clone(), 2);
    assert_eq!(
        out,
        vec![
            persist_save_snapshot(snap.clone()),
            persist_purge(3),
            Action::Event(Event::SnapshotTaken {
                last_index: LogIndex(5)
            }),
        ]
    );
    assert_eq!(s2.raft.log().base_index(), LogIndex(3));
    assert_eq!(s2.raft.log().first_index(), LogIndex(4));
    assert_eq!(s2.raft.log().last_index(), LogIndex(6));
    assert_eq!(s2.raft.snapshot_meta(), Some(&snap.meta));
    // Nobody is being sent a snapshot: the bytes are left to the write.
    assert!(!s2.raft.snapshot_in_memory());

    apply_persists(&mut disk, &out);
    assert_eq!(disk.snapshot, Some(snap));
    assert_eq!(
        disk.entries,
        vec![cmd(4, 2, "b"), cmd(5, 2, "c"), cmd(6, 2, "d")]
    );
}

/// §7: a follower that needs entries the leader has compacted gets the
/// snapshot instead; once it answers, replication resumes after it.
#[test]
fn leader_sends_install_snapshot_to_a_follower_that_needs_compacted_entries() {
    let mut s1 = elected(&config(1, 3), 3);
    assert_eq!(s1.step(2, append_ok(2, 2, 1)), vec![committed(2)]);

    // Phase 1: two commands reach s2 (s3 still has the no-op in flight); they
    // commit and the leader snapshots at 4, keeping nothing.
    assert_eq!(s1.propose(set("a")).0, Ok((LogIndex(3), Term(2))));
    assert_eq!(s1.propose(set("b")).0, Ok((LogIndex(4), Term(2))));
    assert_eq!(s1.step(2, append_ok(2, 4, 4)), vec![committed(4)]);
    let snap = snapshot(4, 2, membership(3));
    s1.snapshot_taken(snap.clone(), 0);
    assert_eq!(s1.raft.log().base_index(), LogIndex(4));

    // Phase 2: s3 turns out to hold only entry 1; 2.. are gone: snapshot,
    // read back from its file (nobody needed its bytes until now), then
    // streamed (it fits in one piece).
    // Meanwhile s3 gets a heartbeat anchored at the leader's base.
    assert!(!s1.raft.snapshot_in_memory());
    let out = s1.step(3, append_reject(2, 1, 2));
    assert_eq!(
        out,
        vec![load(&snap), send(1, 3, heartbeat(2, (4, 2), 4, 5))]
    );
    let out = s1.loaded(&snap);
    assert_eq!(out, vec![send(1, 3, chunk(2, &snap, 0, 9, 6))]);
    assert!(s1.raft.snapshot_in_memory());

    // Phase 3: s3 installed it; nothing left to send until the next entry,
    // which goes to s3 anchored at the snapshot. Nobody else needs the
    // bytes: they are let go.
    assert_eq!(s1.step(3, chunk_resp(2, 4, 9, 4, 6)), vec![]);
    assert!(!s1.raft.snapshot_in_memory());
    let (r, out) = s1.propose(set("c"));
    assert_eq!(r, Ok((LogIndex(5), Term(2))));
    assert_eq!(
        out,
        vec![
            send(1, 2, append(2, (4, 2), vec![cmd(5, 2, "c")], 4, 7)),
            send(1, 3, append(2, (4, 2), vec![cmd(5, 2, "c")], 4, 8)),
            persist_append(vec![cmd(5, 2, "c")]),
        ]
    );
}

/// §7: a follower whose log disagrees with the snapshot at its last entry
/// discards the whole log (even entries past the snapshot), persists the
/// snapshot, commits to its end, and hands it to the state machine once.
#[test]
fn installing_a_snapshot_discards_a_conflicting_log() {
    let mut disk = durable(
        2,
        None,
        vec![
            conf(1, 1, membership(3)),
            noop(2, 2),
            cmd(3, 2, "x"),
            cmd(4, 2, "x"),
            cmd(5, 2, "x"),
            cmd(6, 2, "x"),
        ],
    );
    let mut s3 = Node::new(&config(3, 3), disk.clone());
    let snap = snapshot(5, 3, membership(3));

    let out = s3.step(1, install_snapshot(3, snap.clone(), 9));
    assert_eq!(
        out,
        vec![
            hard_state(3, None),
            persist_install_snapshot(snap.clone()),
            Action::Event(Event::SnapshotInstalled {
                last_index: LogIndex(5)
            }),
            committed(5),
            after(2, send(3, 1, install_snapshot_resp(3, 5, 9))),
        ]
    );
    assert_eq!(s3.raft.log().base_index(), LogIndex(5));
    assert_eq!(s3.raft.log().last_index(), LogIndex(5));
    assert_eq!(s3.raft.log().last_term(), Term(3));
    assert_eq!(s3.raft.commit_index(), LogIndex(5));
    assert_eq!(s3.raft.take_installed_snapshot(), Some(snap.clone()));
    assert_eq!(s3.raft.take_installed_snapshot(), None);

    apply_persists(&mut disk, &out);
    assert_eq!(disk.snapshot, Some(snap));
    assert_eq!(disk.entries, vec![]);
}

/// §7: "If existing log entry has same index and term as snapshot's last
/// included entry, retain log entries following it." A repeated snapshot at
/// or below the commit index is only acknowledged.
#[test]
fn installing_a_snapshot_keeps_a_matching_suffix() {
    let mut disk = durable(
        2,
        None,
        vec![
            conf(1, 1, membership(3)),
            noop(2, 2),
            cmd(3, 2, "a"),
            cmd(4, 2, "b"),
            cmd(5, 2, "c"),
        ],
    );
    let mut s3 = Node::new(&config(3, 3), disk.clone());
    let snap = snapshot(3, 2, membership(3));

    let out = s3.step(1, install_snapshot(2, snap.clone(), 4));
    assert_eq!(
        out,
        vec![
            persist_install_snapshot(snap.clone()),
            Action::Event(Event::SnapshotInstalled {
                last_index: LogIndex(3)
            }),
            committed(3),
            after(1, send(3, 1, install_snapshot_resp(2, 3, 4))),
        ]
    );
    assert_eq!(s3.raft.log().first_index(), LogIndex(4));
    assert_eq!(s3.raft.log().last_index(), LogIndex(5));
    assert_eq!(s3.raft.take_installed_snapshot(), Some(snap.clone()));

    apply_persists(&mut disk, &out);
    assert_eq!(disk.entries, vec![cmd(4, 2, "b"), cmd(5, 2, "c")]);

    // The same snapshot again: already covered by commit, only acknowledged.
    let out = s3.step(1, install_snapshot(2, snap, 5));
    assert_eq!(out, vec![send(3, 1, install_snapshot_resp(2, 3, 5))]);
    assert_eq!(s3.raft.take_installed_snapshot(), None);
}

/// Thesis §4.2.2: a server that learns from a snapshot that it was removed
/// reports `Removed`, as it does when it learns it from AppendEntries.
#[test]
fn removal_learned_from_a_snapshot_is_reported() {
    let mut s3 = Node::new(&config(3, 3), bootstrapped(3));
    let snap = snapshot(5, 2, without_server(membership(3), 3));
    let out = s3.step(1, install_snapshot(2, snap.clone(), 1));
    assert_eq!(
        out,
        vec![
            hard_state(2, None),
            persist_install_snapshot(snap),
            Action::Event(Event::SnapshotInstalled {
                last_index: LogIndex(5)
            }),
            committed(5),
            Action::Event(Event::Removed),
            after(2, send(3, 1, install_snapshot_resp(2, 5, 1))),
        ]
    );
}

// ===== §5.1 higher terms =====

/// §5.1 and Figure 2: whatever response carries a higher term, the leader
/// adopts it, persists it (with no vote) and steps down; reads it was
/// confirming fail.
#[test]
fn higher_term_in_any_response_makes_a_leader_step_down() {
    let responses = [
        ("AppendEntriesResponse", append_reject(5, 2, 3)),
        ("VoteResponse", vote_resp(5, false)),
        ("InstallSnapshotResponse", install_snapshot_resp(5, 2, 3)),
    ];
    for (what, resp) in responses {
        let mut s1 = established(&config(1, 3), 3);
        let (r, _) = s1.read_index(11);
        assert_eq!(r, Ok(()));

        let out = s1.step(2, resp);
        assert_eq!(out, vec![hard_state(5, None), stepped_down(5)], "{what}");
        assert_eq!(s1.raft.role(), Role::Follower, "{what}");
        assert_eq!(s1.raft.term(), Term(5), "{what}");
        assert_eq!(s1.raft.vote(), None, "{what}");
        assert_eq!(s1.raft.leader(), None, "{what}");
        assert_eq!(s1.raft.take_failed_reads(), vec![11], "{what}");
        assert_eq!(s1.raft.take_ready_reads(), vec![], "{what}");
    }
}

/// §5.1: a response from an older term is ignored.
#[test]
fn stale_term_responses_are_ignored() {
    let mut s1 = elected(&config(1, 3), 3);
    assert_eq!(s1.step(2, append_ok(1, 2, 1)), vec![]);
    assert_eq!(s1.raft.commit_index(), LogIndex(0));
    assert_eq!(s1.step(2, vote_resp(1, true)), vec![]);
    assert_eq!(s1.raft.role(), Role::Leader);
}

// ===== §7 snapshots streamed in pieces (issue 7: any state size) =====

/// §7 (offset/done), made resumable: with 4-byte pieces the leader streams
/// its 9-byte snapshot from whatever offset the follower confirms, resumes
/// after a lost piece, and replication goes on once it is installed.
#[test]
fn a_leader_streams_its_snapshot_in_pieces_and_resumes_where_the_follower_is() {
    let mut cfg = config(1, 3);
    cfg.snapshot_chunk_bytes = 4;
    let mut s1 = elected(&cfg, 3);
    s1.step(2, append_ok(2, 2, 1));
    s1.propose(set("a")).0.unwrap();
    s1.propose(set("b")).0.unwrap();
    s1.step(2, append_ok(2, 4, 4));
    let snap = snapshot(4, 2, membership(3));
    s1.snapshot_taken(snap.clone(), 0);

    // Phase 1: s3 needs compacted entries: the snapshot is read back, then
    // its first piece goes.
    let out = s1.step(3, append_reject(2, 1, 2));
    assert_eq!(
        out,
        vec![load(&snap), send(1, 3, heartbeat(2, (4, 2), 4, 5))]
    );
    let out = s1.loaded(&snap);
    assert_eq!(out, vec![send(1, 3, chunk(2, &snap, 0, 4, 6))]);
    // Phase 2: it took 4 bytes: the next piece.
    let out = s1.step(3, chunk_resp(2, 4, 4, 1, 6));
    assert_eq!(out, vec![send(1, 3, chunk(2, &snap, 4, 8, 7))]);
    // Phase 3: that piece was lost; a stall makes the leader resend from
    // what s3 confirmed (4), not from the start.
    s1.advance(ms(200));
    let out = s1.tick();
    assert!(
        out.contains(&send(1, 3, chunk(2, &snap, 4, 8, 9))),
        "{out:?}"
    );
    // Phase 4: the last piece, then replication resumes after the snapshot.
    let out = s1.step(3, chunk_resp(2, 4, 8, 1, 9));
    assert_eq!(out, vec![send(1, 3, chunk(2, &snap, 8, 9, 10))]);
    assert_eq!(s1.step(3, chunk_resp(2, 4, 9, 4, 10)), vec![]);
    let (_, out) = s1.propose(set("c"));
    assert!(out.contains(&send(1, 3, append(2, (4, 2), vec![cmd(5, 2, "c")], 4, 12))));
}

/// A leader with a snapshot taken and 4, 5 compacted, whose follower s3
/// holds only entry 1 and was just told to wait for the snapshot's bytes.
fn leader_loading_for_s3() -> (Node, Snapshot) {
    let mut s1 = elected(&config(1, 3), 3);
    s1.step(2, append_ok(2, 2, 1));
    s1.propose(set("a")).0.unwrap();
    s1.propose(set("b")).0.unwrap();
    s1.step(2, append_ok(2, 4, 4));
    let snap = snapshot(4, 2, membership(3));
    s1.snapshot_taken(snap.clone(), 0);
    assert_eq!(
        s1.step(3, append_reject(2, 1, 2)),
        vec![load(&snap), send(1, 3, heartbeat(2, (4, 2), 4, 5))]
    );
    (s1, snap)
}

/// The empty AppendEntries to `to` in `out`, as (prev index, prev term,
/// seq).
fn heartbeats_to(out: &[Action], to: u64) -> Vec<(u64, u64, u64)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { message, .. } if message.to == node_id(to) => match &message.body {
                MessageBody::Raft(RaftMessage::AppendEntries(ae)) if ae.entries.is_empty() => {
                    Some((ae.prev_log_index.0, ae.prev_log_term.0, ae.seq))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Issue 7 (memory per key): while the snapshot is read back, the waiting
/// follower gets heartbeats anchored at the leader's base (so it does not
/// time out), and the file is asked for once, not on every heartbeat.
#[test]
fn a_follower_waiting_for_a_snapshot_read_back_gets_heartbeats_and_one_load() {
    let (mut s1, snap) = leader_loading_for_s3();
    let mut seq = 0;
    for _ in 0..5 {
        s1.advance(ms(50));
        let out = s1.tick();
        let beats = heartbeats_to(&out, 3);
        assert_eq!(beats.len(), 1, "{out:?}");
        let (prev, prev_term);
        (prev, prev_term, seq) = beats[0];
        assert_eq!((prev, prev_term), (4, 2), "anchored at the base");
        assert!(
            !out.iter().any(|a| matches!(a, Action::LoadSnapshot { .. })),
            "{out:?}"
        );
        // It refuses the anchor (it holds only entry 1): nothing changes,
        // it still waits for the snapshot.
        assert_eq!(s1.step(3, append_reject(2, 1, seq)), vec![]);
        assert_eq!(
            s1.raft.progress(node_id(3)).map(|p| p.state),
            Some(ReplState::Snapshot)
        );
    }
    let out = s1.loaded(&snap);
    assert_eq!(out, vec![send(1, 3, chunk(2, &snap, 0, 9, seq + 1))]);
}

/// A follower waiting for the snapshot's bytes that turns out to hold the
/// leader's base already (it matches the heartbeat anchored there) is sent
/// entries from the log: the leader stops waiting on a snapshot it does not
/// need. Chaos seeds 515, 664 and 862 lost liveness for good here: the
/// follower matched the base and stayed in the snapshot state, sent
/// nothing but heartbeats, while the leader needed it for a quorum.
#[test]
fn a_follower_that_matches_the_base_leaves_the_snapshot_wait_and_gets_entries() {
    let (mut s1, _snap) = leader_loading_for_s3();
    s1.advance(ms(50));
    let out = s1.tick();
    let (prev, _, seq) = heartbeats_to(&out, 3)[0];
    assert_eq!(prev, 4, "anchored at the base");
    s1.step(3, append_ok(2, 4, seq));
    assert_ne!(
        s1.raft.progress(node_id(3)).map(|p| p.state),
        Some(ReplState::Snapshot)
    );
    let (_, out) = s1.propose(set("c"));
    let to_s3: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { message, .. } if message.to == node_id(3) => match &message.body {
                MessageBody::Raft(RaftMessage::AppendEntries(ae)) => {
                    Some((ae.prev_log_index.0, ae.entries.len()))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(to_s3, vec![(4, 1)], "{out:?}");
}

/// A load that finds no file (a newer snapshot replaced it) is asked again
/// at the next heartbeat; a load of a snapshot the leader no longer holds
/// is dropped.
#[test]
fn a_load_that_finds_nothing_is_asked_again_and_a_stale_one_is_dropped() {
    let (mut s1, snap) = leader_loading_for_s3();
    let mut out = Vec::new();
    s1.raft
        .snapshot_loaded(s1.now, snap.meta.clone(), None, &mut out);
    assert_eq!(out, vec![]);
    assert!(!s1.raft.snapshot_in_memory());
    s1.advance(ms(50));
    let out = s1.tick();
    assert_eq!(
        out.iter().filter(|a| **a == load(&snap)).count(),
        1,
        "{out:?}"
    );
    assert_eq!(heartbeats_to(&out, 3).len(), 1, "{out:?}");
    // A load of another snapshot (an older one) changes nothing.
    let older = snapshot(3, 2, membership(3));
    let mut out = Vec::new();
    s1.raft.snapshot_loaded(
        s1.now,
        older.meta.clone(),
        Some(older.data.clone()),
        &mut out,
    );
    assert_eq!(out, vec![]);
    assert!(!s1.raft.snapshot_in_memory());
}

/// A follower that stops answering mid-stream: after an election timeout
/// the leader lets the bytes go and stops reading the file for it, but
/// keeps sending it heartbeats anchored at its base; once it answers one,
/// the snapshot is read back and streamed again.
#[test]
fn a_silent_follower_does_not_keep_the_snapshot_in_memory() {
    let (mut s1, snap) = leader_loading_for_s3();
    let out = s1.loaded(&snap);
    assert_eq!(out, vec![send(1, 3, chunk(2, &snap, 0, 9, 6))]);
    assert!(s1.raft.snapshot_in_memory());
    let mut loads = 0;
    let mut last_beat = None;
    for _ in 0..40 {
        s1.advance(ms(50));
        let out = s1.tick();
        loads += out.iter().filter(|a| **a == load(&snap)).count();
        if let Some(b) = heartbeats_to(&out, 3).last() {
            last_beat = Some(*b);
        }
        // s2 keeps answering, so the leader keeps its lease.
        for (prev, _, seq) in heartbeats_to(&out, 2) {
            s1.step(2, append_ok(2, prev, seq));
        }
    }
    assert!(!s1.raft.snapshot_in_memory(), "let go after s3 went silent");
    assert_eq!(loads, 0, "no file read for a follower that does not answer");
    let (prev, prev_term, seq) = last_beat.expect("s3 still gets heartbeats");
    assert_eq!((prev, prev_term), (4, 2));
    // s3 is back: it refuses the anchor, and the next heartbeat reads the
    // snapshot back for it.
    assert_eq!(s1.step(3, append_reject(2, 1, seq)), vec![]);
    s1.advance(ms(50));
    let out = s1.tick();
    assert!(out.contains(&load(&snap)), "{out:?}");
}

/// A snapshot taken while a follower is being sent one keeps its bytes (the
/// follower will want this one next); taken with nobody streaming, it keeps
/// none.
#[test]
fn a_new_snapshot_keeps_its_bytes_only_while_a_follower_streams() {
    let (mut s1, snap) = leader_loading_for_s3();
    s1.loaded(&snap);
    assert!(s1.raft.snapshot_in_memory());
    s1.propose(set("c")).0.unwrap();
    s1.step(2, append_ok(2, 5, 6));
    assert_eq!(s1.raft.commit_index(), LogIndex(5));
    s1.snapshot_taken(snapshot(5, 2, membership(3)), 0);
    assert!(s1.raft.snapshot_in_memory(), "s3 is still being sent one");
    assert_eq!(s1.raft.snapshot_bytes(), Some(9));
}

/// The load names the write that stored the snapshot, so the outbox holds
/// it until that file is durable.
#[test]
fn load_asks_after_the_write_that_stored_it() {
    let mut s1 = elected(&config(1, 3), 3);
    s1.step(2, append_ok(2, 2, 1));
    s1.propose(set("a")).0.unwrap();
    s1.propose(set("b")).0.unwrap();
    s1.step(2, append_ok(2, 4, 4));
    let snap = snapshot(4, 2, membership(3));
    let mut out = Vec::new();
    s1.raft.snapshot_taken(snap.clone(), 0, &mut out);
    let saved = out
        .iter()
        .find_map(|a| match a {
            Action::Persist {
                id,
                op: PersistOp::SaveSnapshot(_),
                ..
            } => Some(*id),
            _ => None,
        })
        .expect("saved");
    let mut out = Vec::new();
    s1.raft
        .step(s1.now, node_id(3), append_reject(2, 1, 2), &mut out)
        .unwrap();
    assert_eq!(
        out[0],
        Action::LoadSnapshot {
            meta: snap.meta.clone(),
            stored_by: saved
        }
    );
}

/// The follower side: pieces are taken only in order and only of the same
/// snapshot; the whole is checked (crc32c) before it is installed, and the
/// install is persisted before it is acknowledged.
#[test]
fn a_follower_assembles_pieces_in_order_and_checks_the_whole() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    s2.advance(ms(1000));
    let snap = snapshot(5, 2, membership(3));

    // Out of order before anything: ask from the start.
    let out = s2.step(1, chunk(2, &snap, 4, 8, 1));
    assert_eq!(
        out.last(),
        Some(&after(1, send(2, 1, chunk_resp(2, 5, 0, 0, 1))))
    );
    let out = s2.step(1, chunk(2, &snap, 0, 4, 2));
    assert_eq!(out, vec![send(2, 1, chunk_resp(2, 5, 4, 0, 2))]);
    // A repeated piece: ask for what comes next.
    let out = s2.step(1, chunk(2, &snap, 0, 4, 3));
    assert_eq!(out, vec![send(2, 1, chunk_resp(2, 5, 4, 0, 3))]);
    // A piece damaged on the way: the whole fails its check, start over.
    let mut bad = chunk(2, &snap, 4, 9, 4);
    if let RaftMessage::InstallSnapshotChunk(c) = &mut bad {
        c.data[0] ^= 1;
    }
    let out = s2.step(1, bad);
    assert_eq!(out, vec![send(2, 1, chunk_resp(2, 5, 0, 0, 4))]);
    assert_eq!(s2.raft.snapshot_meta(), None);
    // Whole and intact: persisted, committed, then acknowledged.
    s2.step(1, chunk(2, &snap, 0, 4, 5));
    let out = s2.step(1, chunk(2, &snap, 4, 9, 6));
    assert_eq!(
        out,
        vec![
            persist_install_snapshot(snap.clone()),
            Action::Event(Event::SnapshotInstalled {
                last_index: LogIndex(5)
            }),
            committed(5),
            after(1, send(2, 1, chunk_resp(2, 5, 9, 5, 6))),
        ]
    );
    assert_eq!(s2.raft.snapshot_meta(), Some(&snap.meta));
    assert!(!s2.raft.snapshot_in_memory(), "a follower keeps no bytes");
    // A piece claiming more than `snapshot_bytes_max` is refused outright.
    let mut cfg = config(2, 3);
    cfg.snapshot_bytes_max = 8;
    let mut s2 = Node::new(&cfg, bootstrapped(3));
    s2.advance(ms(1000));
    let out = s2.step(1, chunk(2, &snap, 0, 4, 1));
    assert!(out
        .iter()
        .any(|a| *a == after(1, send(2, 1, chunk_resp(2, 5, 0, 0, 1)))));
}

// ===== peer input is validated before it touches anything (raft/validate.rs) =====

/// What a refused message must leave alone.
fn state(
    node: &Node,
) -> (
    Term,
    Option<NodeId>,
    Role,
    Option<NodeId>,
    LogIndex,
    LogIndex,
    Term,
) {
    let r = &node.raft;
    (
        r.term(),
        r.vote(),
        r.role(),
        r.leader(),
        r.commit_index(),
        r.log().last_index(),
        r.log().last_term(),
    )
}

/// Send `msg` from `from` and check it is refused for `reason` with no other
/// action and no change of state.
fn assert_refused(node: &mut Node, from: u64, msg: RaftMessage, reason: &str) {
    let before = state(node);
    assert_eq!(node.step(from, msg), vec![refused(from, reason)]);
    assert_eq!(state(node), before, "{reason}");
}

/// AppendEntries entries with a gap (3 then 5). Before validation the log's
/// `push` asserted contiguity and the server panicked.
#[test]
fn append_entries_with_a_gap_is_refused() {
    let mut s2 = follower_of_s1(ms(10));
    assert_refused(
        &mut s2,
        1,
        append(2, (2, 2), vec![cmd(3, 2, "a"), cmd(5, 2, "b")], 2, 2),
        "AppendEntries entry at index 5 where 4 follows prev_log_index 2",
    );
}

/// Entries that do not start right after `prev_log_index`. Before: the
/// follower pushed entry 4 onto a log ending at 2 and panicked.
#[test]
fn append_entries_not_starting_after_prev_is_refused() {
    let mut s2 = follower_of_s1(ms(10));
    assert_refused(
        &mut s2,
        1,
        append(2, (2, 2), vec![cmd(4, 2, "a")], 2, 2),
        "AppendEntries entry at index 4 where 3 follows prev_log_index 2",
    );
}

/// Entry terms that go down (3, then 2). Before: `push` asserted that log
/// terms never decrease and the server panicked.
#[test]
fn append_entries_with_decreasing_terms_is_refused() {
    let mut s2 = follower_of_s1(ms(10));
    assert_refused(
        &mut s2,
        1,
        append(3, (2, 2), vec![cmd(3, 3, "a"), cmd(4, 2, "b")], 2, 2),
        "AppendEntries entry 4 has term 2 after term 3",
    );
}

/// An entry from a term after the message's own, and a prev term after it:
/// no leader has entries from a future term. Before: the entry of term 5 was
/// appended by a follower in term 2 (wrong state: its log ran ahead of its term).
#[test]
fn append_entries_with_terms_above_the_message_term_is_refused() {
    let mut s2 = follower_of_s1(ms(10));
    assert_refused(
        &mut s2,
        1,
        append(2, (2, 2), vec![cmd(3, 5, "a")], 2, 2),
        "AppendEntries in term 2 carries entry 3 of term 5",
    );
    assert_refused(
        &mut s2,
        1,
        heartbeat(2, (2, 3), 2, 2),
        "AppendEntries in term 2 with prev_log_term 3",
    );
    assert_refused(
        &mut s2,
        1,
        heartbeat(2, (0, 1), 2, 2),
        "AppendEntries prev index 0 with term 1: only index 0 has term 0",
    );
}

/// A batch over `append_entries_max`, and one over `append_bytes_max`.
/// Before: both were appended whole (wrong state: a peer could make a
/// follower take any amount of work and memory in one message).
#[test]
fn oversized_append_entries_batches_are_refused() {
    let mut cfg = config(2, 3);
    cfg.append_entries_max = 2;
    cfg.append_bytes_max = 100;
    let mut s2 = Node::new(&cfg, bootstrapped(3));
    let three: Vec<Entry> = (2..=4).map(|i| cmd(i, 2, "k")).collect();
    assert_refused(
        &mut s2,
        1,
        append(2, (1, 1), three, 1, 1),
        "AppendEntries with 3 entries (append_entries_max is 2)",
    );
    let big = |i| {
        let value = vec![b'v'; 60];
        entry(
            i,
            2,
            EntryPayload::Command(std::sync::Arc::new(Command::Kv(KvCommand::Set(KvWrite {
                key: "k".to_string(),
                flags: 0,
                value: value.into(),
            })))),
        )
    };
    assert_refused(
        &mut s2,
        1,
        append(2, (1, 1), vec![big(2), big(3)], 1, 1),
        "AppendEntries with about 170 bytes of entries (append_bytes_max is 100)",
    );
    // One entry always goes, whatever its size (`RaftLog::slice`).
    assert_eq!(
        s2.step(1, append(2, (1, 1), vec![big(2)], 1, 1)),
        vec![
            hard_state(2, None),
            persist_append(vec![big(2)]),
            committed(1),
            after(2, send(2, 1, append_ok(2, 2, 1))),
        ]
    );
}

/// A snapshot whose last term is after the message's term, or whose
/// configuration has no voter. Before: both were installed (wrong state: a
/// log base from a future term; a follower left with nobody to elect).
#[test]
fn install_snapshot_with_bogus_meta_is_refused() {
    let mut s3 = Node::new(&config(3, 3), bootstrapped(3));
    assert_refused(
        &mut s3,
        1,
        install_snapshot(2, snapshot(5, 4, membership(3)), 1),
        "InstallSnapshot in term 2 covers entries of term 4",
    );
    assert_refused(
        &mut s3,
        1,
        install_snapshot(2, snapshot(5, 2, Membership::default()), 1),
        "InstallSnapshot at 5 has a configuration without voters",
    );
    assert_refused(
        &mut s3,
        1,
        install_snapshot(2, snapshot(0, 0, membership(3)), 1),
        "InstallSnapshot of an empty log (last_index 0)",
    );
    assert_eq!(s3.raft.take_installed_snapshot(), None);
}

/// Indexes no real log reaches (above `u64::MAX / 2`). Before: a snapshot
/// ending at u64::MAX was installed, and the server overflowed computing its
/// last index after its next append (found by the cluster fuzz target).
#[test]
fn indexes_past_any_real_log_are_refused() {
    let mut s3 = Node::new(&config(3, 3), bootstrapped(3));
    assert_refused(
        &mut s3,
        1,
        install_snapshot(2, snapshot(u64::MAX, 2, membership(3)), 1),
        "InstallSnapshot index 18446744073709551615 is past any real log",
    );
    assert_refused(
        &mut s3,
        1,
        heartbeat(2, (1, 1), u64::MAX / 2 + 1, 1),
        "AppendEntries index 9223372036854775808 is past any real log",
    );
}

/// An answer to a heartbeat this leader never sent. Before: the bogus seq
/// was recorded as s2's latest acknowledgement, so the next ReadIndex was
/// confirmed by s1 + s2 with no round trip at all (a stale read).
#[test]
fn answers_to_messages_never_sent_are_refused() {
    let mut s1 = established(&config(1, 3), 3);
    assert_refused(
        &mut s1,
        2,
        append_ok(2, 2, 1000),
        "AppendEntriesResponse answers seq 1000, but this leader sent only 2 in term 2",
    );
    assert_refused(
        &mut s1,
        2,
        append_ok(2, 9, 2),
        "AppendEntriesResponse claims index 9 but this leader's log ends at 2",
    );
    assert_refused(
        &mut s1,
        2,
        install_snapshot_resp(2, 9, 2),
        "InstallSnapshotResponse claims index 9 but this leader's log ends at 2",
    );
    let (r, _) = s1.read_index(7);
    assert_eq!(r, Ok(()));
    assert_eq!(s1.raft.take_ready_reads(), vec![]);
}

/// A vote request whose last log term is not below its term. Before: granted
/// (wrong state: a vote for a log no candidate can have).
#[test]
fn vote_request_with_an_impossible_log_is_refused() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    s2.advance(ms(400));
    assert_refused(
        &mut s2,
        3,
        vote_req(3, 7, 3),
        "VoteRequest for term 3 with a last log term of 3",
    );
    assert_eq!(s2.raft.vote(), None);
}

// ===== thesis §4.2.3 servers outside the configuration =====

/// s1 of s1..s4, after leader s2 replicated the removal of s4 (index 2, term
/// 2) and 400 ms passed without a word from s2 (no leader heard recently).
fn s1_after_s4_removed() -> Node {
    let mut s1 = Node::new(
        &config(1, 4),
        durable(1, None, vec![conf(1, 1, membership(4))]),
    );
    let removal = conf(2, 2, without_server(membership(4), 4));
    s1.step(2, append(2, (1, 1), vec![removal], 2, 1));
    assert_eq!(s1.raft.commit_index(), LogIndex(2));
    s1.advance(ms(400));
    s1
}

/// Thesis §4.2.3: a removed server (s4) must not disrupt the cluster. Its
/// vote request, pre-vote and even a "leadership transfer" vote are refused
/// with our term, and nothing changes, although no leader was heard from
/// recently (hashicorp/raft's `requestVote` does the same). Before: s1 moved
/// to term 3 and voted for s4.
#[test]
fn vote_requests_from_outside_the_configuration_are_refused() {
    let mut s1 = s1_after_s4_removed();
    assert_eq!(
        s1.step(4, vote_req(3, 2, 2)),
        vec![send(1, 4, vote_resp(2, false))]
    );
    assert_eq!(
        s1.step(4, pre_vote_req(3, 2, 2)),
        vec![send(1, 4, pre_vote_resp(2, false))]
    );
    assert_eq!(
        s1.step(4, transfer_vote_req(3, 2, 2)),
        vec![send(1, 4, vote_resp(2, false))]
    );
    assert_eq!(s1.raft.term(), Term(2));
    assert_eq!(s1.raft.vote(), None);

    // A voter of the configuration is granted the same vote.
    assert_eq!(
        s1.step(3, vote_req(3, 2, 2)),
        vec![
            hard_state(3, Some(3)),
            after(1, send(1, 3, vote_resp(3, true)))
        ]
    );
}

/// Thesis §4.2.3: answers from servers outside the configuration do not
/// depose a leader, whatever their term. Before: each made s1 step down to
/// term 5.
#[test]
fn answers_from_outside_the_configuration_are_ignored() {
    for resp in [
        append_reject(5, 2, 3),
        vote_resp(5, false),
        install_snapshot_resp(5, 2, 3),
    ] {
        let mut s1 = established(&config(1, 3), 3);
        assert_eq!(s1.step(4, resp.clone()), vec![], "{resp:?}");
        assert_eq!(s1.raft.role(), Role::Leader, "{resp:?}");
        assert_eq!(s1.raft.term(), Term(2), "{resp:?}");
    }
}

/// Thesis §4.2.3: TimeoutNow skips leader stickiness, so it is taken only
/// from a member. Before: s4's TimeoutNow made s2 adopt term 5 and campaign.
#[test]
fn timeout_now_from_outside_the_configuration_is_ignored() {
    let mut s2 = follower_of_s1(ms(10));
    assert_eq!(s2.step(4, timeout_now(5)), vec![]);
    assert_eq!(s2.raft.role(), Role::Follower);
    assert_eq!(s2.raft.term(), Term(2));
}

/// Thesis §4.2.3 and §4.1: AppendEntries from a leader of a current term is
/// accepted even if that leader is not in our configuration yet: here s4,
/// added as a voter and elected, sends s2 the very entry that adds it, and
/// s2 answers it (it learns s4's address from that entry).
#[test]
fn append_entries_from_a_leader_not_yet_in_our_configuration_is_accepted() {
    let mut s2 = Node::new(&config(2, 3), bootstrapped(3));
    let with_s4 = with_server(membership(3), 4, Suffrage::Voter);
    let out = s2.step(
        4,
        append(3, (1, 1), vec![conf(2, 3, with_s4.clone())], 1, 1),
    );
    assert_eq!(
        out,
        vec![
            hard_state(3, None),
            persist_append(vec![conf(2, 3, with_s4.clone())]),
            committed(1),
            after(2, send(2, 4, append_ok(3, 2, 1))),
        ]
    );
    assert_eq!(s2.raft.leader(), Some(node_id(4)));
    assert_eq!(s2.raft.membership(), &with_s4);
}

/// A snapshot piece that cannot lie within the snapshot it names (past its
/// end, or of an empty snapshot), or that names a snapshot no honest leader
/// could send, is refused and changes nothing.
#[test]
fn a_snapshot_piece_outside_its_snapshot_is_refused() {
    let mut s3 = Node::new(&config(3, 3), bootstrapped(3));
    let snap = snapshot(5, 2, membership(3));
    let mut past_end = chunk(2, &snap, 4, 9, 1);
    if let RaftMessage::InstallSnapshotChunk(c) = &mut past_end {
        c.offset = 5;
    }
    assert_refused(
        &mut s3,
        1,
        past_end,
        "InstallSnapshotChunk of 5 bytes at offset 5 in a snapshot of 9 bytes",
    );
    let mut empty = chunk(2, &snap, 0, 0, 1);
    if let RaftMessage::InstallSnapshotChunk(c) = &mut empty {
        c.total_bytes = 0;
    }
    assert_refused(
        &mut s3,
        1,
        empty,
        "InstallSnapshotChunk of 0 bytes at offset 0 in a snapshot of 0 bytes",
    );
    assert_refused(
        &mut s3,
        1,
        chunk(2, &snapshot(5, 4, membership(3)), 0, 4, 1),
        "InstallSnapshotChunk in term 2 covers entries of term 4",
    );
}
