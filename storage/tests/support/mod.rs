//! Shared by the storage tests: entries, snapshots, and a generator of op
//! sequences inside the contract of `PersistOp`, shaped like the core's
//! (appends, conflicting suffixes truncated, own snapshots with purges,
//! installed snapshots that keep or drop the log, hard states), driven by a
//! tape of numbers so proptest can shrink it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern_core::fsm::{Command, KvCommand, KvWrite};
use tern_core::raft::{
    Durable, Entry, EntryPayload, HardState, Membership, Snapshot, SnapshotMeta,
};
use tern_core::{LogIndex, NodeId, PersistOp, Term};
use tern_storage::{DataDir, SimFs};

pub fn entry(index: u64, term: u64, value_len: usize) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Arc::new(Command::Kv(KvCommand::Set(KvWrite {
            key: format!("k{index}"),
            flags: term,
            value: vec![index as u8; value_len].into(),
        })))),
    }
}

pub fn append(range: std::ops::RangeInclusive<u64>, term: u64) -> PersistOp {
    PersistOp::Append(range.map(|i| entry(i, term, 40)).collect())
}

pub fn snapshot(last_index: u64, last_term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(last_index),
            last_term: Term(last_term),
            membership: Membership::default(),
        },
        data: format!("state at {last_index}").into_bytes().into(),
    }
}

pub fn save(last_index: u64, last_term: u64) -> PersistOp {
    PersistOp::SaveSnapshot(snapshot(last_index, last_term))
}

pub fn install(last_index: u64, last_term: u64) -> PersistOp {
    PersistOp::InstallSnapshot(snapshot(last_index, last_term))
}

pub fn purge(up_to: u64) -> PersistOp {
    PersistOp::PurgeUpTo(LogIndex(up_to))
}

pub fn truncate(from: u64) -> PersistOp {
    PersistOp::TruncateFrom(LogIndex(from))
}

pub fn hard_state(term: u64, vote: Option<u128>) -> PersistOp {
    PersistOp::HardState(HardState {
        term: Term(term),
        vote: vote.map(NodeId),
    })
}

pub fn dir() -> PathBuf {
    PathBuf::from("/data")
}

/// A data dir on `fs` under [`dir`], with small segments.
pub fn open(fs: SimFs) -> (DataDir<SimFs>, Durable, Vec<String>) {
    DataDir::open(fs, &dir(), 600).unwrap_or_else(|e| panic!("open: {e}"))
}

pub fn raft_dir() -> PathBuf {
    dir().join("raft")
}

pub fn segment_files(fs: &mut SimFs) -> Vec<PathBuf> {
    use tern_storage::Fs;
    let raft = raft_dir();
    fs.list(&raft)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("log-"))
        .map(|n| raft.join(n))
        .collect()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Reads choices off a tape (0 when it runs out).
pub struct Tape<'a> {
    tape: &'a [u32],
    at: usize,
}

impl<'a> Tape<'a> {
    pub fn new(tape: &'a [u32]) -> Tape<'a> {
        Tape { tape, at: 0 }
    }
    pub fn done(&self) -> bool {
        self.at >= self.tape.len()
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let v = self.tape.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        u64::from(v) % n.max(1)
    }
}

/// The generator's view of the state: the model itself.
pub struct Gen {
    pub model: Durable,
    pub term: u64,
}

impl Default for Gen {
    fn default() -> Gen {
        Gen {
            model: Durable::default(),
            term: 1,
        }
    }
}

impl Gen {
    fn floor(&self) -> u64 {
        self.model.shape().floor.0
    }
    fn last(&self) -> u64 {
        self.model.last_index().0
    }
    fn snapshot_last(&self) -> u64 {
        self.model
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.last_index.0)
    }
    fn term_at(&self, index: u64) -> u64 {
        self.model.term_at(LogIndex(index)).expect("held").0
    }

    /// One step of a core: one op, or two (a truncation before its
    /// append, a purge after its snapshot), each with the `sync` the core
    /// gives it (appends may be unsynced, as a driver coalescing fsyncs
    /// makes them). Applies them to the model.
    pub fn step(&mut self, t: &mut Tape) -> Vec<(PersistOp, bool)> {
        let ops = self.ops(t);
        for (op, _) in &ops {
            self.model
                .apply(op)
                .unwrap_or_else(|e| panic!("the generator made an invalid op {op:?}: {e}"));
        }
        ops
    }

    fn ops(&mut self, t: &mut Tape) -> Vec<(PersistOp, bool)> {
        let (floor, last, snap) = (self.floor(), self.last(), self.snapshot_last());
        let lowest = (floor + 1).max(snap + 1);
        match t.below(100) {
            0..=9 => {
                self.term += t.below(2);
                let vote = (t.below(2) == 0).then(|| u128::from(t.below(3) as u8));
                vec![(hard_state(self.term, vote), true)]
            }
            10..=69 => {
                let committed = floor.max(snap);
                let mut ops = Vec::new();
                let start = if last > committed && t.below(5) == 0 {
                    self.term += 1;
                    let start = committed + 1 + t.below(last - committed);
                    ops.push((truncate(start), false));
                    start
                } else {
                    last + 1
                };
                let n = 1 + t.below(5);
                let entries = (start..start + n)
                    .map(|i| entry(i, self.term, 10 + t.below(200) as usize))
                    .collect();
                ops.push((PersistOp::Append(entries), t.below(3) != 0));
                ops
            }
            70..=82 if lowest <= last => {
                let index = lowest + t.below(last - lowest + 1);
                let mut ops = vec![(save(index, self.term_at(index)), true)];
                if t.below(4) != 0 {
                    let trailing = t.below(6);
                    let at = index.saturating_sub(trailing).max(floor);
                    ops.push((purge(at), false));
                }
                ops
            }
            83..=89 if lowest <= last => {
                let index = lowest + t.below(last - lowest + 1);
                vec![(install(index, self.term_at(index)), true)]
            }
            70..=99 => {
                self.term += 1;
                let index = floor.max(snap) + 1 + t.below(last.saturating_sub(floor) + 8);
                vec![(install(index, self.term), true)]
            }
            _ => unreachable!(),
        }
    }
}
