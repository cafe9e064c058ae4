//! Raft's safety properties, checked after every step of every server.
//!
//! The checker sees each server right after it handled an input, together
//! with the actions it produced, and keeps just enough global history to
//! check (Raft paper, Figure 3):
//! - election safety: at most one leader per term;
//! - log matching: two entries with the same index and term are the same entry
//!   (recorded as servers append them);
//! - leader completeness: a new leader holds every entry committed before it;
//! - state-machine safety: every server applies the same entry at an index,
//!   and reaches the same state hash there;
//! - commit indexes never go back on a running server;
//! - a leader's commit index only moves to an entry of its own term (§5.4.2);
//! - durability before acknowledgement, the core's contract: a server never
//!   sends a success AppendEntries/InstallSnapshot answer for entries, or
//!   grants a vote, that its earlier `Persist` actions have not made durable.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use tern_core::fsm::{Command, KvCommand};
use tern_core::raft::{Entry, EntryPayload, HardState, RaftMessage, Role};
use tern_core::{
    Action, Event, LogIndex, MessageBody, NodeId, PersistOp, PersistWrite, Server, Term,
};

/// One broken property, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

/// A stable digest of an entry's payload, as a client can compute it from
/// the command it sent.
pub fn payload_digest(p: &EntryPayload) -> u64 {
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// The key and value a KV set or CAS entry writes.
fn kv_write(p: &EntryPayload) -> Option<(String, Vec<u8>)> {
    let EntryPayload::Command(c) = p else {
        return None;
    };
    match c.as_ref() {
        Command::Kv(KvCommand::Set(w)) | Command::Kv(KvCommand::Cas { write: w, .. }) => {
            Some((w.key.clone(), w.value.to_vec()))
        }
        _ => None,
    }
}

/// A stable digest of an entry (SipHash with fixed keys: deterministic).
fn digest(e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    e.hash(&mut h);
    h.finish()
}

#[derive(Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) → digest of every entry any server appended.
    appended: BTreeMap<(LogIndex, Term), u64>,
    /// index → (term, digest) of committed entries.
    committed: BTreeMap<LogIndex, (Term, u64)>,
    /// index → digest of the committed entry's payload (what a client wrote).
    committed_payload: BTreeMap<LogIndex, u64>,
    /// Payload digests of every entry any server appended to its log: a
    /// client command not among them was never proposed, so never applied.
    pub appended_payloads: HashSet<u64>,
    /// index → the key and value a committed KV set or CAS wrote there
    /// (`None` for a committed entry that writes no value).
    pub committed_kv: BTreeMap<u64, Option<(String, Vec<u8>)>>,
    /// index → (term, state hash) after applying it.
    applied: BTreeMap<LogIndex, (Term, u64, NodeId)>,
    commit_seen: BTreeMap<NodeId, LogIndex>,
    /// What each server has made durable: last log index and hard state.
    durable: BTreeMap<NodeId, (LogIndex, HardState)>,
    pub violations: Vec<Violation>,
    pub max_commit: LogIndex,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    fn fail(&mut self, msg: String) {
        if self.violations.len() < 20 {
            self.violations.push(Violation(msg));
        }
    }

    /// No acknowledged write lost: every write a client was told succeeded,
    /// at the log index its reply named, is the entry committed there.
    /// Returns how many could be verified (an entry compacted away in the
    /// same step that committed it was never seen).
    pub fn check_acknowledged(&mut self, acked: &[(u64, u64)]) -> usize {
        let mut verified = 0;
        for (index, digest) in acked {
            match self.committed_payload.get(&LogIndex(*index)) {
                Some(d) if d == digest => verified += 1,
                Some(_) => self.fail(format!(
                    "acknowledged write lost: the write acknowledged at index {index} is not the entry committed there"
                )),
                None => {}
            }
        }
        verified
    }

    /// A server (re)started from what its disk held.
    pub fn restarted(&mut self, server: &Server) {
        let node = server.id();
        self.commit_seen.remove(&node);
        let hs = HardState {
            term: server.term(),
            vote: server.raft().vote(),
        };
        self.durable.insert(node, (server.last_log_index(), hs));
    }

    fn check_durable_before_send(&mut self, node: NodeId, a: &Action) {
        let Action::Send { message, .. } = a else {
            return;
        };
        let MessageBody::Raft(m) = &message.body else {
            return;
        };
        let (last, hs) = self.durable.get(&node).cloned().unwrap_or_default();
        match m {
            RaftMessage::AppendEntriesResponse(r) if r.success && r.match_index > last => {
                self.fail(format!(
                    "durability: {node:?} acknowledged entries up to {} but only {} are durable",
                    r.match_index.0, last.0
                ))
            }
            RaftMessage::InstallSnapshotResponse(r) if r.last_index > last => self.fail(format!(
                "durability: {node:?} acknowledged a snapshot up to {} but only {} is durable",
                r.last_index.0, last.0
            )),
            // A durable later term also keeps the promise: the server can
            // never vote in `r.term` again (several writes of one disk job
            // become durable at once, so the grant's own record may already
            // be superseded when it leaves).
            RaftMessage::VoteResponse(r)
                if r.granted
                    && !r.pre_vote
                    && (hs.term < r.term
                        || (hs.term == r.term && hs.vote != Some(message.to))) =>
            {
                self.fail(format!(
                    "durability: {node:?} granted its term-{} vote to {:?} before persisting it (durable: {hs:?})",
                    r.term.0, message.to
                ))
            }
            _ => {}
        }
    }

    /// Look at `server` right after it produced `actions`, once `durable`
    /// (the disk job an `Input::Persisted` reported) is on disk, as the
    /// driver is about to run `executed`.
    pub fn observe(
        &mut self,
        server: &Server,
        actions: &[Action],
        durable: &[PersistWrite],
        executed: &[Action],
    ) {
        let node = server.id();
        // Each send is checked against what was durable when it became
        // releasable: right after the write it waited for (`after`). A job
        // may make a write durable and then one that truncates it (a new
        // term's conflicting entry): an acknowledgement that waited only
        // for the first was true when it could leave, as a delayed message
        // would be.
        let after = |a: &Action| match a {
            Action::Send { after, .. } => *after,
            _ => None,
        };
        let first = durable.first().map(|w| w.id);
        let last = durable.last().map(|w| w.id);
        for a in executed {
            if after(a).is_none_or(|id| first.is_none_or(|f| id < f)) {
                self.check_durable_before_send(node, a);
            }
        }
        for w in durable {
            self.made_durable(node, &w.op);
            for a in executed {
                if after(a) == Some(w.id) {
                    self.check_durable_before_send(node, a);
                }
            }
        }
        // Sends released before the write they wait for is durable.
        for a in executed {
            if let (Some(id), Some(f), Some(l)) = (after(a), first, last) {
                if id > l || (id >= f && !durable.iter().any(|w| w.id == id)) {
                    self.check_durable_before_send(node, a);
                }
            }
        }
        for a in actions {
            match a {
                Action::Persist {
                    op: PersistOp::Append(entries),
                    ..
                } => {
                    for e in entries {
                        self.check_appended(node, e);
                    }
                }
                Action::Event(Event::Committed { index }) if server.role() == Role::Leader => {
                    let term = server.raft().log().term_at(*index);
                    if term.is_some() && term != Some(server.term()) {
                        self.fail(format!(
                            "commitment rule (§5.4.2): leader {node:?} of term {} advanced its commit index to {} whose entry is of term {}",
                            server.term().0,
                            index.0,
                            term.map_or(0, |t| t.0)
                        ));
                    }
                }
                Action::Event(Event::BecameLeader { term }) => {
                    self.check_leader(node, *term, server);
                }
                Action::Event(Event::Applied {
                    index,
                    term,
                    state_hash,
                }) => self.check_applied(node, *index, *term, *state_hash),
                _ => {}
            }
        }
        self.check_commit(node, server);
    }

    /// A write reached the disk: what the server may now acknowledge.
    fn made_durable(&mut self, node: NodeId, op: &PersistOp) {
        let d = self.durable.entry(node).or_default();
        match op {
            PersistOp::Append(entries) => {
                if let Some(last) = entries.last() {
                    d.0 = last.index;
                }
            }
            PersistOp::HardState(hs) => d.1 = hs.clone(),
            PersistOp::TruncateFrom(at) => d.0 = d.0.min(at.prev()),
            PersistOp::SaveSnapshot(snapshot) | PersistOp::InstallSnapshot(snapshot) => {
                d.0 = d.0.max(snapshot.meta.last_index)
            }
            PersistOp::PurgeUpTo(_) => {}
        }
    }

    fn check_appended(&mut self, node: NodeId, e: &Entry) {
        self.appended_payloads.insert(payload_digest(&e.payload));
        let d = digest(e);
        match self.appended.get(&(e.index, e.term)) {
            Some(prev) if *prev != d => self.fail(format!(
                "log matching: {node:?} appended a different entry at index {} term {}",
                e.index.0, e.term.0
            )),
            Some(_) => {}
            None => {
                self.appended.insert((e.index, e.term), d);
            }
        }
    }

    fn check_leader(&mut self, node: NodeId, term: Term, server: &Server) {
        if let Some(other) = self.leaders.insert(term, node) {
            if other != node {
                self.fail(format!(
                    "election safety: {other:?} and {node:?} both led term {}",
                    term.0
                ));
            }
        }
        // Leader completeness: every committed entry the leader's log still
        // holds explicitly must match; compacted ones are in its snapshot.
        let log = server.raft().log();
        let base = log.base_index();
        let missing: Vec<LogIndex> = self
            .committed
            .range(base.next()..)
            .filter(|(i, (t, _))| log.term_at(**i) != Some(*t))
            .map(|(i, _)| *i)
            .take(3)
            .collect();
        if !missing.is_empty() {
            self.fail(format!(
                "leader completeness: {node:?} leads term {} without committed entries {:?}",
                term.0,
                missing.iter().map(|i| i.0).collect::<Vec<_>>()
            ));
        }
    }

    fn check_applied(&mut self, node: NodeId, index: LogIndex, term: Term, hash: u64) {
        match self.applied.get(&index) {
            Some((t, h, other)) if (*t, *h) != (term, hash) => {
                let other = *other;
                self.fail(format!(
                    "state-machine safety: at index {} {other:?} applied term {} (state {:016x}) \
                     but {node:?} applied term {} (state {hash:016x})",
                    index.0, t.0, h, term.0
                ))
            }
            Some(_) => {}
            None => {
                self.applied.insert(index, (term, hash, node));
            }
        }
    }

    fn check_commit(&mut self, node: NodeId, server: &Server) {
        let commit = server.commit_index();
        let seen = self.commit_seen.get(&node).copied().unwrap_or_default();
        if commit < seen {
            self.fail(format!(
                "{node:?}'s commit index went back from {} to {}",
                seen.0, commit.0
            ));
        }
        let from = seen.max(server.raft().log().base_index());
        let mut i = from.next();
        while i <= commit {
            if let Some(e) = server.entry(i) {
                let d = digest(e);
                match self.committed.get(&i) {
                    Some((t, d0)) if (*t, *d0) != (e.term, d) => {
                        let t = *t;
                        self.fail(format!(
                            "state-machine safety: {node:?} committed term {} at index {} where term {} was committed",
                            e.term.0, i.0, t.0
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(i, (e.term, d));
                        self.committed_payload.insert(i, payload_digest(&e.payload));
                        self.committed_kv.insert(i.0, kv_write(&e.payload));
                    }
                }
            }
            i = i.next();
        }
        self.commit_seen.insert(node, commit);
        self.max_commit = self.max_commit.max(commit);
    }
}
