//! The body of the `cluster` fuzz target: three honest servers in a
//! [`Cluster`] and a hostile peer that the fuzzer's bytes drive.
//!
//! The input is a sequence of steps (byte 0 picks the mode, then each step is
//! an opcode byte and its operands; the run ends where the bytes do, or after
//! [`STEPS_MAX`] steps): deliver honest traffic in order, out of order, or
//! lose it; move time (the snapshot builds asked for so far are encoded
//! first: until then servers take inputs with a build out); a client request; crash or restart a server; a
//! transport hint; replay an honest message seen earlier; or a message from
//! the hostile peer, either decoded with the real codec from a chunk of the
//! input or built from structured bytes relative to the receiver's state (so
//! the fuzzer reaches deep states without guessing terms and indexes).
//!
//! After every step nothing has panicked, and a message refused with
//! [`Event::PeerMessageRefused`] changed nothing. In the **safe** mode (byte
//! 0 even) the hostile peer has the powers Raft is built to survive, and the
//! safety properties are checked too (Raft paper Figure 3): at most one
//! leader per term, Log Matching between honest servers, and committed
//! entries never change; an honest message is never refused. Its powers:
//! the network's (loss, reordering, duplication, delay), plus one voter of
//! the four (`s4`, which never runs honestly) and one outsider (`s9`)
//! sending anything, except that their AppendEntries and InstallSnapshot
//! carry a term below the receiver's (Raft does not survive a forged leader:
//! such a message would be believed). Client membership changes are limited
//! to removing `s4` and adding `s9` as a non-voter, so honest voters always
//! hold a majority of every quorum. In the **wild** mode (byte 0 odd) any
//! message from anyone goes, including forged leaders; only "no panic" and
//! "a refusal changes nothing" are checked.

use std::collections::{BTreeMap, VecDeque};

use crate::action::{Event, Input};
use crate::clock::Duration;
use crate::fsm::{Command, Fsm, KvCommand, KvWrite};
use crate::ids::{Datacenter, LogIndex, NodeId, NodeName, RequestId, Term};
use crate::message::{Message, MessageBody};
use crate::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, InstallSnapshot,
    InstallSnapshotResponse, Member, Membership, RaftMessage, Role, Snapshot, SnapshotMeta,
    Suffrage, TimeoutNow, VoteRequest, VoteResponse,
};
use crate::rpc::{Op, ReadMode, Request, Response, RpcError};
use crate::server::Server;
use crate::testkit::{config, membership, node_id, Cluster};
use crate::wire::codec::decode_message;

/// Steps in one run, so an input's cost is bounded.
pub const STEPS_MAX: usize = 400;
/// Honest messages kept for replays.
const HISTORY_MAX: usize = 64;
/// The honest servers are s1..=s3.
const HONEST: u64 = 3;
/// A voter of the configuration that only the fuzzer speaks for.
const HOSTILE_VOTER: u64 = 4;
/// A server outside the configuration.
const OUTSIDER: u64 = 9;

/// Reads operands; every read past the end gives 0 and marks the run done.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
    /// `base` moved by a small signed amount.
    fn near(&mut self, base: u64) -> u64 {
        let d = self.u8() as i8;
        match self.u8() {
            // Now and then a value from anywhere, extremes included.
            0xff => u64::MAX - u64::from(self.u8()),
            0xfe => u64::from(self.u16()) << 32,
            _ => base.saturating_add_signed(i64::from(d / 8)),
        }
    }
}

/// What a refused message must leave unchanged.
type Fingerprint = (
    Term,
    Option<NodeId>,
    Role,
    Option<NodeId>,
    LogIndex,
    LogIndex,
    LogIndex,
    usize,
);

fn fingerprint(s: &Server) -> Fingerprint {
    let r = s.raft();
    (
        r.term(),
        r.vote(),
        r.role(),
        r.leader(),
        r.commit_index(),
        r.log().last_index(),
        s.last_applied(),
        s.pending_requests(),
    )
}

struct Run {
    c: Cluster,
    safe: bool,
    history: VecDeque<Message>,
    /// Term -> the one honest server that led in it.
    leaders: BTreeMap<Term, NodeId>,
    /// Index -> the entry committed there, as first seen on any server.
    committed: BTreeMap<LogIndex, Entry>,
    next_request: u64,
}

/// The fuzz target's body; see the module documentation.
pub fn cluster(data: &[u8]) {
    run(data);
}

fn run(data: &[u8]) -> Option<Run> {
    let (&mode, rest) = data.split_first()?;
    let mut bytes = Bytes { data: rest };
    // Snapshots every few entries, keeping few behind, so compaction and
    // InstallSnapshot happen within the few hundred steps of one input.
    let configs = (1..=HONEST)
        .map(|i| {
            let mut c = config(i, 4);
            c.snapshot_threshold = 4;
            c.snapshot_interval = Duration::ZERO;
            c.trailing_logs = 2;
            c
        })
        .collect();
    let mut run = Run {
        c: Cluster::new(configs),
        safe: mode & 1 == 0,
        history: VecDeque::new(),
        leaders: BTreeMap::new(),
        committed: BTreeMap::new(),
        next_request: 0,
    };
    run.c.keep_events = true;
    run.c.hold_snapshot_builds = true;
    for _ in 0..STEPS_MAX {
        if bytes.data.is_empty() {
            break;
        }
        run.step(&mut bytes);
        run.check();
    }
    Some(run)
}

impl Run {
    fn step(&mut self, b: &mut Bytes) {
        let op = b.u8();
        match op % 12 {
            0 | 1 => {
                let n = self.c.queued().min(usize::from(b.u8() % 8) + 1);
                for _ in 0..n {
                    self.honest(0);
                }
            }
            2 => {
                let i = usize::from(b.u8());
                self.honest(i);
            }
            3 => {
                self.c.drop_nth(usize::from(b.u8()));
            }
            4 => {
                // The snapshot thread got to the builds asked for so far:
                // everything delivered since ran while they were out.
                self.c.finish_all_snapshot_builds();
                self.c.advance(Duration::from_millis(u64::from(b.u8()) * 2));
            }
            5 => {
                let upto = usize::from(b.u8()) * 4;
                for _ in 0..upto {
                    if self.c.queued() == 0 {
                        break;
                    }
                    self.honest(0);
                }
            }
            6 => {
                let m = self.build(b);
                self.hostile(m);
            }
            7 => {
                let len = usize::from(b.u8());
                if let Ok(m) = decode_message(b.take(len)) {
                    self.hostile(Some(m));
                }
            }
            8 => {
                let i = usize::from(b.u8());
                if let Some(m) = self.history.get(i % self.history.len().max(1)).cloned() {
                    self.deliver(m, false);
                }
            }
            9 => self.request(b),
            10 => {
                let id = node_id(u64::from(b.u8()) % HONEST + 1);
                if self.c.servers.contains_key(&id) {
                    self.c.crash(id);
                } else {
                    self.c.start(id);
                }
            }
            _ => {
                let to = node_id(u64::from(b.u8()) % HONEST + 1);
                let peer = node_id(u64::from(b.u8()) % 5 + 1);
                self.c.handle(to, Input::Unreachable(peer));
            }
        }
        self.c.events.clear();
    }

    /// Deliver the `i`-th queued honest message and keep it for replays.
    fn honest(&mut self, i: usize) {
        self.c.events.clear();
        let Some(m) = self.c.deliver_nth(i) else {
            return;
        };
        self.no_refusal_of_honest(&m);
        if self.history.len() == HISTORY_MAX {
            self.history.pop_front();
        }
        self.history.push_back(m);
    }

    fn no_refusal_of_honest(&self, m: &Message) {
        if !self.safe {
            return;
        }
        for (_, e) in &self.c.events {
            if let Event::PeerMessageRefused { reason, .. } = e {
                panic!("an honest message was refused ({reason}): {m:?}");
            }
        }
    }

    /// Deliver a message; if it is refused, nothing may change.
    fn deliver(&mut self, m: Message, hostile: bool) {
        let to = m.to;
        let Some(before) = self.c.servers.get(&to).map(fingerprint) else {
            return;
        };
        let queued = self.c.queued();
        self.c.events.clear();
        self.c.handle(to, Input::Message(m.clone()));
        let refused = self
            .c
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::PeerMessageRefused { .. }));
        if refused {
            assert_eq!(self.c.events.len(), 1, "a refusal is the only event");
            assert_eq!(self.c.queued(), queued, "a refused message sends nothing");
            let after = self.c.servers.get(&to).map(fingerprint);
            assert_eq!(
                after,
                Some(before),
                "a refused message changed state: {m:?}"
            );
        }
        if !hostile {
            self.no_refusal_of_honest(&m);
        }
    }

    /// A hostile message, tamed in the safe mode (see the module docs).
    fn hostile(&mut self, m: Option<Message>) {
        let Some(mut m) = m else {
            return;
        };
        if self.safe {
            if m.from.0 >= node_id(1).0 && m.from.0 <= node_id(HONEST).0 || m.from == m.to {
                m.from = node_id(HOSTILE_VOTER);
            }
            let Some(term) = self.c.servers.get(&m.to).map(|s| s.term()) else {
                return;
            };
            let below = Term(term.0.saturating_sub(1));
            match &mut m.body {
                MessageBody::Raft(RaftMessage::AppendEntries(ae)) => ae.term = ae.term.min(below),
                MessageBody::Raft(RaftMessage::InstallSnapshot(is)) => is.term = is.term.min(below),
                _ => {}
            }
        }
        self.deliver(m, true);
    }

    /// A message from structured bytes, with terms and indexes near the
    /// receiver's own.
    fn build(&mut self, b: &mut Bytes) -> Option<Message> {
        let to = node_id(u64::from(b.u8()) % HONEST + 1);
        let from = node_id(match b.u8() % 8 {
            0 => OUTSIDER,
            k @ 1..=3 => u64::from(k),
            _ => HOSTILE_VOTER,
        });
        // The address it claims: none, its own, another server's (a peer
        // lying about who it is), or one past the limit.
        let from_address = match b.u8() % 4 {
            0 => String::new(),
            1 => format!("s{}:8300", from.0),
            2 => format!("s{}:8300", u64::from(b.u8()) % HONEST + 1),
            _ => "x".repeat(crate::message::ADDRESS_BYTES_MAX + 1),
        };
        let s = self.c.servers.get(&to)?;
        let term = Term(b.near(s.term().0));
        let last = s.last_log_index().0;
        let commit = s.commit_index().0;
        let kind = b.u8();
        let raft = match kind % 9 {
            0 => RaftMessage::VoteRequest(VoteRequest {
                term,
                last_log_index: LogIndex(b.near(last)),
                last_log_term: Term(b.near(s.raft().log().last_term().0)),
                pre_vote: b.u8() & 1 == 1,
                leadership_transfer: b.u8() & 1 == 1,
            }),
            1 => RaftMessage::VoteResponse(VoteResponse {
                term,
                granted: b.u8() & 1 == 1,
                pre_vote: b.u8() & 1 == 1,
            }),
            2 => {
                let prev = b.near(last);
                let prev_term = match s.raft().log().term_at(LogIndex(prev)) {
                    Some(t) if b.u8() & 3 != 0 => t,
                    _ => Term(b.near(term.0)),
                };
                let n = u64::from(b.u8() % 5);
                let mut entries = Vec::new();
                let mut t = prev_term.max(Term(1));
                for i in 0..n {
                    let twist = b.u8();
                    if twist & 7 == 0 {
                        t = Term(b.near(t.0));
                    } else if twist & 7 == 1 {
                        t = term;
                    }
                    let gap = u64::from(twist >> 6 == 3);
                    let index = LogIndex(prev.saturating_add(i + 1 + gap));
                    entries.push(Entry {
                        term: t,
                        index,
                        payload: self.payload(b),
                    });
                }
                RaftMessage::AppendEntries(AppendEntries {
                    term,
                    prev_log_index: LogIndex(prev),
                    prev_log_term: prev_term,
                    entries,
                    leader_commit: LogIndex(b.near(commit)),
                    seq: u64::from(b.u8()),
                })
            }
            3 => RaftMessage::AppendEntriesResponse(AppendEntriesResponse {
                term,
                success: b.u8() & 1 == 1,
                match_index: LogIndex(b.near(last)),
                seq: u64::from(b.u8()),
            }),
            4 | 5 => {
                let last_index = LogIndex(b.near(commit));
                let mut fsm = Fsm::new();
                let data = match b.u8() % 4 {
                    0 => b.take(8).to_vec(),
                    _ => {
                        if last_index.0 > 0 && last_index.0 < u64::MAX {
                            fsm.apply_other(last_index.0);
                        }
                        fsm.snapshot()
                    }
                };
                RaftMessage::InstallSnapshot(InstallSnapshot {
                    term,
                    snapshot: Snapshot {
                        meta: SnapshotMeta {
                            last_index,
                            last_term: Term(b.near(term.0)),
                            membership: self.membership(b),
                        },
                        data: data.into(),
                    },
                    seq: u64::from(b.u8()),
                })
            }
            6 => RaftMessage::InstallSnapshotResponse(InstallSnapshotResponse {
                term,
                last_index: LogIndex(b.near(last)),
                seq: u64::from(b.u8()),
            }),
            7 => RaftMessage::TimeoutNow(TimeoutNow { term }),
            _ => {
                let body = if b.u8() & 1 == 0 {
                    MessageBody::Forward {
                        id: u64::from(b.u8()),
                        request: self.client_request(b),
                    }
                } else {
                    MessageBody::ForwardReply {
                        id: u64::from(b.u8()),
                        response: Err::<_, RpcError>(RpcError::NoLeader) as Response,
                    }
                };
                return Some(Message {
                    from,
                    from_address,
                    to,
                    body,
                });
            }
        };
        Some(Message {
            from,
            from_address,
            to,
            body: MessageBody::Raft(raft),
        })
    }

    fn payload(&self, b: &mut Bytes) -> EntryPayload {
        match b.u8() % 4 {
            0 => EntryPayload::Noop,
            1 => EntryPayload::Membership(self.membership(b)),
            _ => EntryPayload::Command(std::sync::Arc::new(kv_set(b.u8()))),
        }
    }

    fn membership(&self, b: &mut Bytes) -> Membership {
        match b.u8() % 5 {
            0 => Membership::default(),
            1 => membership(3),
            2 => {
                let mut m = membership(4);
                m.servers
                    .insert(node_id(OUTSIDER), member(OUTSIDER, Suffrage::Voter));
                m
            }
            _ => membership(4),
        }
    }

    fn client_request(&self, b: &mut Bytes) -> Request {
        let op = match b.u8() % 8 {
            0 => Op::KvGet {
                key: format!("k{}", b.u8() % 4),
            },
            1 => Op::KvList { prefix: "k".into() },
            2 => Op::RaftRemovePeer {
                id: Some(node_id(HOSTILE_VOTER)),
                address: None,
            },
            3 => Op::RaftAddNonvoter {
                id: node_id(OUTSIDER),
                name: NodeName(format!("s{OUTSIDER}")),
                address: format!("s{OUTSIDER}:8300"),
            },
            4 if !self.safe => Op::RaftPromote {
                id: node_id(OUTSIDER),
            },
            5 => Op::RaftTransferLeadership { to: None },
            _ => Op::KvApply(KvCommand::Set(KvWrite {
                key: format!("k{}", b.u8() % 4),
                flags: 0,
                value: vec![b.u8()].into(),
            })),
        };
        let read_mode = match b.u8() % 3 {
            0 => ReadMode::Default,
            1 => ReadMode::Consistent,
            _ => ReadMode::Stale,
        };
        Request {
            datacenter: Datacenter("dc1".into()),
            read_mode,
            blocking: None,
            op,
        }
    }

    fn request(&mut self, b: &mut Bytes) {
        let to = node_id(u64::from(b.u8()) % HONEST + 1);
        let request = self.client_request(b);
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.c.handle(to, Input::Request { id, request });
    }

    /// The safety properties, in the safe mode.
    fn check(&mut self) {
        if !self.safe {
            return;
        }
        let ids: Vec<NodeId> = self.c.servers.keys().copied().collect();
        for id in &ids {
            let s = &self.c.servers[id];
            // Election Safety: at most one leader per term.
            if s.role() == Role::Leader {
                let first = *self.leaders.entry(s.term()).or_insert(*id);
                assert_eq!(first, *id, "two leaders in term {:?}", s.term());
            }
            // State Machine Safety: what a server holds as committed is what
            // every server committed at that index.
            let log = s.raft().log();
            let mut i = s.commit_index();
            while i > log.base_index() {
                let e = log
                    .entry(i)
                    .expect("committed entries above the base are held");
                match self.committed.get(&i) {
                    Some(c) => assert_eq!(c, e, "committed entry {i:?} changed on {id:?}"),
                    None => {
                        self.committed.insert(i, e.clone());
                    }
                }
                i = i.prev();
            }
        }
        // Log Matching: same index and term, same entries up to there.
        for (n, a) in ids.iter().enumerate() {
            for b in &ids[n + 1..] {
                log_matching(&self.c.servers[a], &self.c.servers[b]);
            }
        }
    }
}

fn log_matching(a: &Server, b: &Server) {
    let (la, lb) = (a.raft().log(), b.raft().log());
    let low = la.base_index().max(lb.base_index());
    let mut i = la.last_index().min(lb.last_index());
    let mut matched = false;
    while i > low {
        let (ea, eb) = (la.entry(i), lb.entry(i));
        if matched {
            assert_eq!(ea, eb, "Log Matching broken at {i:?}");
        } else if ea.map(|e| e.term) == eb.map(|e| e.term) {
            assert_eq!(ea, eb, "same index and term, different entries at {i:?}");
            matched = true;
        }
        i = i.prev();
    }
}

fn member(i: u64, suffrage: Suffrage) -> Member {
    Member {
        name: NodeName(format!("s{i}")),
        address: format!("s{i}:8300"),
        suffrage,
    }
}

fn kv_set(b: u8) -> Command {
    Command::Kv(KvCommand::Set(KvWrite {
        key: format!("k{}", b % 4),
        flags: 0,
        value: vec![b].into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar reaches real states: time and delivery alone elect a
    /// leader, and a client write through a follower commits and applies on
    /// every server.
    #[test]
    fn time_and_delivery_elect_a_leader_and_writes_commit() {
        let mut data = vec![0];
        data.extend_from_slice(&[4, 150, 5, 255].repeat(6));
        let r = super::run(&data).unwrap();
        let leader = r.c.leader().expect("a leader");
        assert!(r.c.servers[&leader].raft().committed_in_term());
        let follower = (1..=HONEST).find(|i| node_id(*i) != leader).unwrap();
        data.extend_from_slice(&[9, follower as u8 - 1, 6, 1, 42, 0, 5, 255, 4, 60, 5, 255]);
        let r = super::run(&data).unwrap();
        for s in r.c.servers.values() {
            assert!(s.fsm().kv_get("k1").is_some(), "applied everywhere");
        }
    }

    /// Snapshots happen within one input: a follower that was down while
    /// the others wrote and compacted catches up through InstallSnapshot.
    #[test]
    fn a_follower_that_missed_compacted_entries_gets_a_snapshot() {
        let mut data = vec![0];
        data.extend_from_slice(&[4, 150, 5, 255].repeat(6));
        let r = super::run(&data).unwrap();
        let leader = r.c.leader().expect("a leader");
        let down = (1..=HONEST).find(|i| node_id(*i) != leader).unwrap() as u8 - 1;
        let to = leader.0 as u8 - 1;
        data.extend_from_slice(&[10, down]);
        for k in 0..12 {
            data.extend_from_slice(&[9, to, 6, k, k, 0, 5, 255]);
        }
        data.extend_from_slice(&[4, 30, 5, 255, 10, down]);
        data.extend_from_slice(&[4, 30, 5, 255].repeat(4));
        let r = super::run(&data).unwrap();
        let s = &r.c.servers[&node_id(u64::from(down) + 1)];
        assert!(s.raft().snapshot_meta().is_some(), "installed a snapshot");
        assert_eq!(
            s.fsm().kv_get("k3"),
            r.c.servers[&leader].fsm().kv_get("k3")
        );
        assert!(s.fsm().kv_get("k3").is_some());
    }

    /// A few hand-made runs pass: empty, time only, an election and writes.
    #[test]
    fn small_inputs_pass() {
        for data in [
            &[][..],
            &[0],
            &[0, 4, 200, 5, 255, 4, 200, 5, 255, 9, 0, 6, 1, 5, 255],
            &[1, 6, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ] {
            cluster(data);
        }
    }
}
