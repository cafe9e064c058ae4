//! A simulated disk: one append-only WAL file per server, owned by the world
//! so it outlives the node's tasks across a kill and a restart.
//!
//! The file is `durable ++ unsynced`. A write lands in `unsynced` at once; an
//! fsync moves what was written before it into `durable`. A crash keeps all of
//! `durable` and a random prefix of `unsynced` (often cutting the last record
//! mid-way: a torn write). Everything here is synchronous and pure; the node
//! runtime adds the simulated fsync latency around it.

use tern_core::raft::{Durable, Snapshot, SnapshotMeta};
use tern_core::wire::{encode_record, recover, WalRecord};
use tern_core::LogIndex;

/// What a crash did to the unsynced bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CrashOutcome {
    /// Unsynced bytes that reached the platter anyway.
    pub kept: usize,
    /// Unsynced bytes lost.
    pub lost: usize,
}

/// How much of the unsynced suffix survives a crash.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CrashKeep {
    Nothing,
    Everything,
    /// The first `n` bytes (clamped to what is unsynced).
    Prefix(usize),
}

/// One server's WAL file.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    durable: Vec<u8>,
    unsynced: Vec<u8>,
    /// Bumped by every crash, so a write from a dead incarnation of the node
    /// (which should never run, but a kill is only as prompt as the executor)
    /// can be told apart and refused.
    incarnation: u64,
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Bytes that survive any crash.
    pub fn durable_len(&self) -> usize {
        self.durable.len()
    }

    /// Bytes written since the last fsync.
    pub fn unsynced_len(&self) -> usize {
        self.unsynced.len()
    }

    /// The whole file as a reader sees it now.
    pub fn contents(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.durable.len() + self.unsynced.len());
        all.extend_from_slice(&self.durable);
        all.extend_from_slice(&self.unsynced);
        all
    }

    /// Appends bytes; they are lost or torn by a crash until synced.
    pub fn write(&mut self, bytes: &[u8]) {
        self.unsynced.extend_from_slice(bytes);
    }

    /// Appends one encoded record.
    pub fn append_record(&mut self, record: &WalRecord) -> usize {
        let mut buf = Vec::new();
        encode_record(record, &mut buf);
        self.write(&buf);
        buf.len()
    }

    /// Completes an fsync that started when `unsynced_len()` was `upto`:
    /// those bytes become durable.
    pub fn mark_synced(&mut self, upto: usize) {
        let upto = upto.min(self.unsynced.len());
        self.durable.extend(self.unsynced.drain(..upto));
    }

    /// Syncs everything at once (no latency): for tests and setup.
    pub fn sync_all(&mut self) {
        self.mark_synced(self.unsynced.len());
    }

    /// A power cut: durable bytes stay, a prefix of the unsynced ones too.
    pub fn crash(&mut self, keep: CrashKeep) -> CrashOutcome {
        let kept = match keep {
            CrashKeep::Nothing => 0,
            CrashKeep::Everything => self.unsynced.len(),
            CrashKeep::Prefix(n) => n.min(self.unsynced.len()),
        };
        let lost = self.unsynced.len() - kept;
        self.unsynced.truncate(kept);
        self.sync_all();
        self.incarnation += 1;
        CrashOutcome { kept, lost }
    }

    /// Cuts the file to `len` bytes (recovery dropping a torn tail).
    pub fn truncate(&mut self, len: usize) {
        self.sync_all();
        self.durable.truncate(len);
    }

    /// Atomically replaces the file with `bytes`, durable (a new file
    /// written, fsynced, and renamed over the old one).
    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.durable = bytes;
        self.unsynced.clear();
    }

    /// Flips one byte inside the payload of a durable record that has an
    /// intact record after it, so recovery must report corruption there.
    /// `pick` chooses among candidates: `pick(n)` returns a value in `0..n`.
    /// Returns the damaged record's offset, or `None` if the durable part
    /// holds fewer than two records.
    pub fn corrupt_middle(&mut self, mut pick: impl FnMut(usize) -> usize) -> Option<u64> {
        let rec = recover(&self.durable).ok()?;
        if rec.offsets.len() < 2 {
            return None;
        }
        let which = pick(rec.offsets.len() - 1);
        let start = rec.offsets[which] as usize;
        let end = rec.offsets[which + 1] as usize;
        // Skip the 8-byte header (length, checksum) so the damage is a
        // checksum mismatch, not an implausible length.
        let payload_start = start + 8;
        if payload_start >= end {
            return None;
        }
        let at = payload_start + pick(end - payload_start);
        self.durable[at] ^= 0x5a;
        Some(start as u64)
    }
}

/// The file contents equivalent to `durable`, as few records as possible,
/// replaying (through [`Durable::apply`]) to exactly `durable`. Used to
/// rewrite the WAL after a snapshot.
///
/// The ops cannot set a log's floor without a snapshot there, so when
/// entries the snapshot covers are kept (trailing entries for slow
/// followers, from index `f > 1`), a placeholder snapshot at `f - 1` with no
/// data comes first: it is installed on the empty log, the entries follow
/// it, and the real snapshot replaces it at once.
pub fn compacted_file(durable: &Durable) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&WalRecord::HardState(durable.hard_state.clone()), &mut out);
    let first = durable.entries.first().map(|e| e.index);
    let append = |out: &mut Vec<u8>| {
        if !durable.entries.is_empty() {
            encode_record(&WalRecord::Append(durable.entries.clone()), out);
        }
    };
    match (&durable.snapshot, first) {
        (None, _) => append(&mut out),
        (Some(s), Some(first)) if first <= s.meta.last_index => {
            if first > LogIndex(1) {
                let placeholder = Snapshot {
                    meta: SnapshotMeta {
                        last_index: first.prev(),
                        ..s.meta.clone()
                    },
                    data: Vec::new(),
                };
                encode_record(&WalRecord::InstallSnapshot(placeholder), &mut out);
            }
            append(&mut out);
            encode_record(&WalRecord::SaveSnapshot(s.clone()), &mut out);
        }
        (Some(s), _) => {
            encode_record(&WalRecord::InstallSnapshot(s.clone()), &mut out);
            append(&mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::fsm::{Command, KvCommand, KvWrite};
    use tern_core::raft::{Entry, EntryPayload, HardState};
    use tern_core::wire::replay;
    use tern_core::{NodeId, Term};

    fn entry(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(std::sync::Arc::new(Command::Kv(KvCommand::Set(
                KvWrite {
                    key: format!("k{index}"),
                    flags: 0,
                    value: vec![index as u8; 40],
                },
            )))),
        }
    }

    fn hard(term: u64) -> WalRecord {
        WalRecord::HardState(HardState {
            term: Term(term),
            vote: Some(NodeId(1)),
        })
    }

    fn read(disk: &SimDisk) -> Durable {
        replay(&recover(&disk.contents()).unwrap()).unwrap()
    }

    #[test]
    fn a_crash_before_fsync_loses_the_unsynced_suffix() {
        let mut disk = SimDisk::new();
        disk.append_record(&hard(1));
        disk.append_record(&WalRecord::Append(vec![entry(1), entry(2)]));
        disk.sync_all();
        disk.append_record(&WalRecord::Append(vec![entry(3)]));
        let out = disk.crash(CrashKeep::Nothing);
        assert!(out.lost > 0 && out.kept == 0);
        let d = read(&disk);
        assert_eq!(d.entries.len(), 2, "only the synced entries survive");
        assert_eq!(d.hard_state.term, Term(1));
    }

    #[test]
    fn a_torn_last_record_is_found_and_truncated() {
        let mut disk = SimDisk::new();
        disk.append_record(&hard(1));
        disk.sync_all();
        let synced = disk.durable_len();
        let n = disk.append_record(&WalRecord::Append(vec![entry(1)]));
        // Every cut inside the record is a torn tail, never corruption.
        for keep in 1..n {
            let mut d = disk.clone();
            d.crash(CrashKeep::Prefix(keep));
            let rec = recover(&d.contents()).unwrap();
            let torn = rec.torn_tail.expect("a cut record is a torn tail");
            assert_eq!(torn.offset as usize, synced);
            assert_eq!(rec.valid_len, synced);
            d.truncate(rec.valid_len);
            assert!(recover(&d.contents()).unwrap().torn_tail.is_none());
        }
    }

    #[test]
    fn synced_data_always_survives() {
        let mut disk = SimDisk::new();
        disk.append_record(&hard(3));
        disk.append_record(&WalRecord::Append(vec![entry(1)]));
        disk.sync_all();
        let before = read(&disk);
        disk.crash(CrashKeep::Nothing);
        assert_eq!(read(&disk), before);
        disk.append_record(&WalRecord::Append(vec![entry(2)]));
        disk.crash(CrashKeep::Everything);
        assert_eq!(read(&disk).entries.len(), 2);
    }

    #[test]
    fn a_flipped_middle_byte_is_corruption_at_that_record() {
        let mut disk = SimDisk::new();
        disk.append_record(&hard(1));
        disk.append_record(&WalRecord::Append(vec![entry(1)]));
        disk.append_record(&WalRecord::Append(vec![entry(2)]));
        disk.sync_all();
        let offset = disk.corrupt_middle(|n| n / 2).unwrap();
        match recover(&disk.contents()) {
            Err(tern_core::wire::WalError::Corrupt { offset: at, .. }) => assert_eq!(at, offset),
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn the_compacted_file_replays_to_the_same_state() {
        let mut disk = SimDisk::new();
        disk.append_record(&hard(2));
        disk.append_record(&WalRecord::Append((1..=10).map(entry).collect()));
        disk.append_record(&WalRecord::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: LogIndex(8),
                    last_term: Term(1),
                    membership: Default::default(),
                },
                data: vec![1, 2, 3],
            },
            compact_to: LogIndex(5),
        });
        let before = read(&disk);
        assert_eq!(before.entries.first().unwrap().index, LogIndex(6));
        let new = compacted_file(&before);
        assert!(new.len() < disk.contents().len());
        disk.replace(new);
        assert_eq!(read(&disk), before);
    }
}
