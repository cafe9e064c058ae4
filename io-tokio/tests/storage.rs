//! The data dir (`tern-storage`) on real files through `StdFs`: what
//! `DataDir` persists, `open` gives back exactly as `Durable::apply` would
//! have built it, torn tails are truncated with a warning, and every other
//! kind of damage is an error naming the file (DESIGN §9, "Data dir").

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tern::storage::{open_data_dir, MemStorage, StdDataDir as DataDir, Storage, StorageError};
use tern_core::fsm::{Command, KvCommand, KvWrite};
use tern_core::raft::{
    Durable, Entry, EntryPayload, HardState, Membership, Snapshot, SnapshotMeta,
};
use tern_core::wire::wal;
use tern_core::{LogIndex, NodeId, PersistOp, Term};

// ----- helpers -----

/// A fresh directory under the system temp dir, deleted on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tern-storage-test-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn raft(&self) -> PathBuf {
        self.0.join("raft")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: enough randomness for op sequences, fully determined by the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn entry(index: u64, term: u64, value_len: usize) -> Entry {
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

fn append(range: std::ops::RangeInclusive<u64>, term: u64) -> PersistOp {
    PersistOp::Append(range.map(|i| entry(i, term, 40)).collect())
}

fn snapshot(last_index: u64, last_term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(last_index),
            last_term: Term(last_term),
            membership: Membership::default(),
        },
        data: format!("state at {last_index}").into_bytes().into(),
    }
}

/// A server's own snapshot.
fn save(last_index: u64, last_term: u64) -> PersistOp {
    PersistOp::SaveSnapshot(snapshot(last_index, last_term))
}

/// A snapshot from the leader.
fn install(last_index: u64, last_term: u64) -> PersistOp {
    PersistOp::InstallSnapshot(snapshot(last_index, last_term))
}

fn purge(up_to: u64) -> PersistOp {
    PersistOp::PurgeUpTo(LogIndex(up_to))
}

fn hard_state(term: u64, vote: Option<u128>) -> PersistOp {
    PersistOp::HardState(HardState {
        term: Term(term),
        vote: vote.map(NodeId),
    })
}

/// Applies `ops` to a `DataDir` (each synced) and to an in-memory `Durable`.
fn persist_all(dd: &mut DataDir, model: &mut Durable, ops: &[PersistOp]) {
    for op in ops {
        dd.persist(op, true)
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        model.apply(op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}

fn open(dir: &TempDir, segment_bytes_max: u64) -> (DataDir, Durable, Vec<String>) {
    open_data_dir(&dir.0, segment_bytes_max).unwrap_or_else(|e| panic!("open: {e}"))
}

fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(prefix) && !name.ends_with(".tmp")
        })
        .collect();
    out.sort();
    out
}

/// Byte offsets where each record of a WAL file starts.
fn record_offsets(path: &Path) -> Vec<u64> {
    wal::recover(&std::fs::read(path).unwrap()).unwrap().offsets
}

// ----- a generator of op sequences shaped like the core's -----

/// What the generator needs to know to stay inside the contract of
/// `PersistOp` (the core's: appends right after the last index, a
/// conflicting suffix truncated first but never at or below the snapshot,
/// snapshots only move forward, purges only up to the snapshot).
struct Model {
    durable: Durable,
    term: u64,
}

impl Model {
    fn last(&self) -> u64 {
        match (self.durable.entries.last(), &self.durable.snapshot) {
            (Some(e), _) => e.index.0,
            (None, Some(s)) => s.meta.last_index.0,
            (None, None) => 0,
        }
    }
    fn floor(&self) -> u64 {
        match self.durable.entries.first() {
            Some(e) => e.index.0 - 1,
            None => self.last(),
        }
    }
    fn snapshot_last(&self) -> u64 {
        self.durable
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.last_index.0)
    }
    fn term_at(&self, index: u64) -> u64 {
        let e = self.durable.entries.iter().find(|e| e.index.0 == index);
        e.expect("held").term.0
    }

    /// One step of the core: usually one op, two for a truncation before
    /// an append or a purge after a snapshot.
    fn random_ops(&mut self, rng: &mut Rng) -> Vec<PersistOp> {
        let (floor, last, snap) = (self.floor(), self.last(), self.snapshot_last());
        // Entries a snapshot may be taken at (held, newer than the stored one).
        let lowest = (floor + 1).max(snap + 1);
        match rng.below(100) {
            0..=9 => vec![hard_state(
                self.term,
                (rng.below(2) == 0).then(|| rng.below(5) as u128),
            )],
            10..=74 => {
                let committed = floor.max(snap);
                let mut ops = Vec::new();
                let start = if last > committed && rng.below(5) == 0 {
                    // A new leader overwrites an uncommitted suffix.
                    self.term += 1;
                    let start = committed + 1 + rng.below(last - committed);
                    ops.push(PersistOp::TruncateFrom(LogIndex(start)));
                    start
                } else {
                    last + 1
                };
                let n = 1 + rng.below(6);
                let entries = (start..start + n)
                    .map(|i| entry(i, self.term, 20 + rng.below(400) as usize))
                    .collect();
                ops.push(PersistOp::Append(entries));
                ops
            }
            75..=84 if lowest <= last => {
                // Taken locally, trailing entries kept behind a purge.
                let index = lowest + rng.below(last - lowest + 1);
                let trailing = if rng.below(3) == 0 { 0 } else { rng.below(8) };
                let mut ops = vec![save(index, self.term_at(index))];
                if rng.below(4) != 0 {
                    ops.push(purge(index.saturating_sub(trailing)));
                }
                ops
            }
            85..=89 if lowest <= last => {
                // Installed from a leader whose log agrees: the suffix stays.
                let index = lowest + rng.below(last - lowest + 1);
                vec![install(index, self.term_at(index))]
            }
            75..=99 => {
                // Installed from a leader whose log conflicts with ours: a
                // new term at its last index, and the whole log goes.
                self.term += 1;
                let index = floor.max(snap) + 1 + rng.below(last - floor + 10);
                vec![install(index, self.term)]
            }
            _ => unreachable!(),
        }
    }
}

// ----- 1. recovery gives back what was persisted -----

/// Random op sequences (appends, conflicting overwrites, local and installed
/// snapshots, hard states) over small segments: re-opening the dir at any
/// point gives exactly the `Durable` that `Durable::apply` builds.
#[test]
fn reopening_gives_back_exactly_what_apply_builds() {
    for seed in 1..=8u64 {
        let dir = TempDir::new("random");
        let mut rng = Rng::new(seed);
        let mut model = Model {
            durable: Durable::default(),
            term: 1,
        };
        let (mut dd, start, warnings) = open(&dir, 4096);
        assert_eq!((start, warnings), (Durable::default(), vec![]));
        let mut segments_seen = std::collections::BTreeSet::new();
        let mut segments_at_once = 0;
        for step in 0..400 {
            for op in model.random_ops(&mut rng) {
                let sync = rng.below(4) != 0;
                dd.persist(&op, sync)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: {op:?}: {e}"));
                model.durable.apply(&op).unwrap();
            }
            let segments = files_named(&dir.raft(), "log-");
            segments_at_once = segments_at_once.max(segments.len());
            segments_seen.extend(segments);
            if rng.below(10) == 0 {
                drop(dd);
                let (reopened, durable, warnings) = open(&dir, 4096);
                assert_eq!(warnings, Vec::<String>::new(), "seed {seed} step {step}");
                assert!(
                    durable == model.durable,
                    "seed {seed} step {step}: recovered {durable:#?}\nwant {:#?}",
                    model.durable
                );
                dd = reopened;
            }
        }
        drop(dd);
        let (_, durable, _) = open(&dir, 4096);
        assert!(durable == model.durable, "seed {seed}: final state differs");
        // The run exercised several segments and deleted some.
        assert!(segments_at_once >= 3, "seed {seed}: {segments_at_once}");
        assert!(segments_seen.len() > files_named(&dir.raft(), "log-").len());
        assert!(files_named(&dir.raft(), "snapshot-").len() <= 2);
    }
}

/// A crash after a leader's snapshot was stored but before the conflicting
/// log was deleted: recovery drops that log (§7), as the write would have.
#[test]
fn a_crash_before_a_replaced_log_is_deleted_still_drops_it() {
    let dir = TempDir::new("crash-install");
    let (mut dd, mut model, _) = open(&dir, 200);
    let log: Vec<PersistOp> = (0..5).map(|i| append(i * 4 + 1..=i * 4 + 4, 1)).collect();
    persist_all(&mut dd, &mut model, &log);
    let before: Vec<(PathBuf, Vec<u8>)> = files_named(&dir.raft(), "log-")
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert!(before.len() >= 2);
    // The leader's snapshot at 15 has term 2: our log diverges there.
    persist_all(&mut dd, &mut model, &[install(15, 2)]);
    assert!(model.entries.is_empty());
    drop(dd);
    // Bring the deleted segments back, as if the crash came first.
    for (path, bytes) in &before {
        std::fs::write(path, bytes).unwrap();
    }
    let (mut dd, durable, _) = open(&dir, 200);
    assert_eq!(durable, model);
    assert!(
        files_named(&dir.raft(), "log-").is_empty(),
        "stale segments deleted"
    );
    // And the log carries on after the snapshot.
    persist_all(&mut dd, &mut model, &[append(16..=17, 2)]);
    drop(dd);
    assert_eq!(open(&dir, 200).1, model);
}

/// A crash after a local snapshot was stored but before the segments it
/// made obsolete were deleted: recovery compacts them away.
#[test]
fn a_crash_before_compaction_finishes_still_compacts() {
    let dir = TempDir::new("crash-compact");
    let (mut dd, mut model, _) = open(&dir, 300);
    for i in 0..10 {
        persist_all(&mut dd, &mut model, &[append(i * 3 + 1..=i * 3 + 3, 1)]);
    }
    let before: Vec<(PathBuf, Vec<u8>)> = files_named(&dir.raft(), "log-")
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    persist_all(&mut dd, &mut model, &[save(25, 1), purge(22)]);
    let after = files_named(&dir.raft(), "log-").len();
    assert!(after < before.len());
    drop(dd);
    // The crash: the purge mark (a record in the last segment) reached the
    // disk but the deletions did not. (A crash that loses the mark too
    // leaves the state before the purge, which a purge may: it promises
    // nothing.)
    for (path, bytes) in &before {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
        }
    }
    let (_, durable, _) = open(&dir, 300);
    assert!(durable == model, "the purge was not finished by recovery");
    // Recovery deletes every dead segment (a purge itself deletes only
    // `DEAD_SEGMENTS_PER_WRITE` and leaves the rest to later appends): what
    // is left is the segments holding an entry past 22, the purge.
    let firsts: Vec<u64> = before
        .iter()
        .map(|(p, _)| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.trim_start_matches("log-")
                .trim_end_matches(".wal")
                .parse()
                .unwrap()
        })
        .collect();
    let live = (0..firsts.len())
        .filter(|&k| firsts.get(k + 1).is_none_or(|&next| next > 23))
        .count();
    assert!(live < after, "this purge leaves dead segments to recovery");
    assert_eq!(files_named(&dir.raft(), "log-").len(), live);
}

// ----- 2. torn tails -----

/// A last write cut short anywhere inside it: open truncates it, warns
/// naming the file, and keeps everything before it; the truncation is on
/// disk, so a second open is silent.
#[test]
fn a_torn_tail_is_truncated_with_a_warning() {
    let dir = TempDir::new("torn");
    let (mut dd, mut model, _) = open(&dir, 1 << 20);
    persist_all(
        &mut dd,
        &mut model,
        &[hard_state(3, Some(1)), append(1..=3, 1), append(4..=6, 2)],
    );
    let intact = model.clone();
    persist_all(&mut dd, &mut model, &[append(7..=9, 2)]);
    drop(dd);
    let segment = files_named(&dir.raft(), "log-").pop().unwrap();
    let whole = std::fs::read(&segment).unwrap();
    let torn_at = *record_offsets(&segment).last().unwrap();
    let len = whole.len() as u64;
    for cut in [
        torn_at + 1,
        torn_at + 7,
        torn_at + 8,
        (torn_at + len) / 2,
        len - 1,
    ] {
        std::fs::write(&segment, &whole[..cut as usize]).unwrap();
        let (_, durable, warnings) = open(&dir, 1 << 20);
        assert_eq!(durable, intact, "cut at {cut}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let want = format!(
            "{}: truncated a torn tail of {} bytes at offset {torn_at}",
            segment.display(),
            cut - torn_at
        );
        assert_eq!(warnings[0], want);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), torn_at);
        let (_, again, warnings) = open(&dir, 1 << 20);
        assert_eq!((again, warnings), (intact.clone(), vec![]));
    }
    // A tail the crash extended with zeros but never wrote.
    let mut zeroed = whole.clone();
    zeroed.extend_from_slice(&[0; 64]);
    std::fs::write(&segment, &zeroed).unwrap();
    let (_, durable, warnings) = open(&dir, 1 << 20);
    assert_eq!((durable, warnings.len()), (model, 1));
}

/// A torn first write into a fresh segment leaves it empty: it is deleted,
/// and appends resume in a new one.
#[test]
fn a_torn_write_into_a_new_segment_deletes_it() {
    let dir = TempDir::new("torn-new");
    let (mut dd, mut model, _) = open(&dir, 200);
    persist_all(&mut dd, &mut model, &[append(1..=4, 1)]);
    let intact = model.clone();
    persist_all(&mut dd, &mut model, &[append(5..=6, 1)]);
    drop(dd);
    let segments = files_named(&dir.raft(), "log-");
    assert_eq!(segments.len(), 2);
    std::fs::write(&segments[1], [1, 0, 0]).unwrap();
    let (mut dd, durable, warnings) = open(&dir, 200);
    assert_eq!((durable, warnings.len()), (intact.clone(), 1));
    assert_eq!(files_named(&dir.raft(), "log-").len(), 1);
    let mut model = intact;
    persist_all(&mut dd, &mut model, &[append(5..=7, 2)]);
    drop(dd);
    assert_eq!(open(&dir, 200).1, model);
}

// ----- 3. corruption in the middle -----

/// A flipped byte in a record with intact records after it is corruption:
/// open refuses, naming the file and the damaged record's offset.
#[test]
fn a_flipped_byte_mid_segment_is_corrupt() {
    let dir = TempDir::new("flip");
    let (mut dd, mut model, _) = open(&dir, 1 << 20);
    persist_all(
        &mut dd,
        &mut model,
        &[append(1..=3, 1), append(4..=6, 1), append(7..=9, 1)],
    );
    drop(dd);
    let segment = files_named(&dir.raft(), "log-").pop().unwrap();
    let offsets = record_offsets(&segment);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[offsets[1] as usize + 20] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let err = open_data_dir(&dir.0, 1 << 20).err().expect("corrupt");
    match &err {
        StorageError::Corrupt { file, offset, .. } => {
            assert_eq!((file, *offset), (&segment, offsets[1]))
        }
        other => panic!("{other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.contains(&segment.display().to_string()), "{shown}");
    assert!(shown.contains(&format!("offset {}", offsets[1])), "{shown}");
}

/// A torn tail is only a torn write at the end of the log: in an earlier
/// segment it is corruption.
#[test]
fn a_torn_tail_in_an_earlier_segment_is_corrupt() {
    let dir = TempDir::new("torn-mid");
    let (mut dd, mut model, _) = open(&dir, 200);
    persist_all(&mut dd, &mut model, &[append(1..=4, 1), append(5..=8, 1)]);
    drop(dd);
    let segments = files_named(&dir.raft(), "log-");
    assert_eq!(segments.len(), 2);
    let len = std::fs::metadata(&segments[0]).unwrap().len();
    let bytes = std::fs::read(&segments[0]).unwrap();
    std::fs::write(&segments[0], &bytes[..len as usize - 3]).unwrap();
    match open_data_dir(&dir.0, 200) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (segments[0].clone(), 0))
        }
        other => panic!("{:?}", other.err()),
    }
}

// ----- 4. snapshots and hard state that do not verify -----

#[test]
fn a_corrupt_newest_snapshot_is_an_error_naming_it() {
    let dir = TempDir::new("bad-snap");
    let (mut dd, mut model, _) = open(&dir, 1 << 20);
    persist_all(
        &mut dd,
        &mut model,
        &[
            append(1..=10, 1),
            save(4, 1),
            purge(2),
            save(8, 1),
            purge(6),
        ],
    );
    drop(dd);
    let snaps = files_named(&dir.raft(), "snapshot-");
    assert_eq!(snaps.len(), 2);
    let newest = &snaps[1];
    let mut bytes = std::fs::read(newest).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x01;
    std::fs::write(newest, &bytes).unwrap();
    let err = open_data_dir(&dir.0, 1 << 20).err().expect("corrupt");
    assert!(matches!(&err, StorageError::Corrupt { file, .. } if file == newest));
    assert!(
        err.to_string().contains("snapshot-00000000000000000008"),
        "{err}"
    );
}

#[test]
fn a_corrupt_hard_state_is_an_error() {
    let dir = TempDir::new("bad-hs");
    let (mut dd, mut model, _) = open(&dir, 1 << 20);
    persist_all(&mut dd, &mut model, &[hard_state(7, Some(2))]);
    drop(dd);
    let path = dir.raft().join("hardstate");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[9] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = open_data_dir(&dir.0, 1 << 20).err().expect("corrupt");
    assert!(matches!(&err, StorageError::Corrupt { file, .. } if *file == path));
    // Cut short is no better: the file is only ever replaced whole.
    std::fs::write(&path, &bytes[..4]).unwrap();
    assert!(matches!(
        open_data_dir(&dir.0, 1 << 20),
        Err(StorageError::Corrupt { .. })
    ));
}

// ----- 5. the hard state is replaced atomically -----

/// A crash after `hardstate.tmp` was written but before the rename: the old
/// hard state stands and the leftover is deleted.
#[test]
fn a_leftover_hard_state_tmp_is_ignored() {
    let dir = TempDir::new("hs-tmp");
    let (mut dd, mut model, _) = open(&dir, 1 << 20);
    persist_all(&mut dd, &mut model, &[hard_state(3, Some(1))]);
    drop(dd);
    let tmp = dir.raft().join("hardstate.tmp");
    for leftover in [vec![0xde, 0xad], {
        let mut b = Vec::new();
        wal::encode_record(
            &wal::WalRecord::HardState(HardState {
                term: Term(4),
                vote: None,
            }),
            &mut b,
        );
        b
    }] {
        std::fs::write(&tmp, &leftover).unwrap();
        let (_, durable, warnings) = open(&dir, 1 << 20);
        assert_eq!((durable, warnings), (model.clone(), vec![]));
        assert!(!tmp.exists());
    }
}

// ----- 6. -dev storage -----

#[test]
fn mem_storage_matches_durable_apply() {
    let mut rng = Rng::new(99);
    let mut model = Model {
        durable: Durable::default(),
        term: 1,
    };
    let mut mem = MemStorage::default();
    for _ in 0..300 {
        for op in model.random_ops(&mut rng) {
            mem.persist(&op, false).unwrap();
            model.durable.apply(&op).unwrap();
            assert_eq!(mem.durable, model.durable);
        }
    }
}

// ----- the contract -----

/// Ops the core never produces are refused and leave no trace.
#[test]
fn ops_outside_the_contract_are_refused() {
    let dir = TempDir::new("invalid");
    let (mut dd, mut model, _) = open(&dir, 1 << 20);
    persist_all(
        &mut dd,
        &mut model,
        &[append(1..=5, 1), save(4, 1), purge(3)],
    );
    let refused = [
        append(7..=8, 1),                     // a gap after the last index
        append(5..=6, 2),                     // overlapping (no implicit truncation)
        save(3, 1),                           // older than the stored snapshot
        save(4, 2),                           // same index, another term
        save(5, 2),                           // its last entry is not in the log with its term
        install(4, 1),                        // not newer than the stored snapshot
        purge(5),                             // past the snapshot
        PersistOp::TruncateFrom(LogIndex(4)), // at the snapshot (committed)
        PersistOp::TruncateFrom(LogIndex(6)), // past the last index
        PersistOp::Append(vec![entry(6, 1, 1), entry(8, 1, 1)]), // not consecutive
        hard_state(0, None),                  // the term goes down
    ];
    persist_all(&mut dd, &mut model, &[hard_state(1, None)]);
    let files_before = files_named(&dir.raft(), "");
    for op in &refused {
        match dd.persist(op, true) {
            Err(StorageError::Invalid(_)) => {}
            other => panic!("{op:?}: {other:?}"),
        }
        let mut m = model.clone();
        assert!(m.apply(op).is_err() && m == model, "{op:?}");
    }
    assert_eq!(files_named(&dir.raft(), ""), files_before);
    // The data dir still works, and holds only the valid ops.
    persist_all(&mut dd, &mut model, &[append(6..=6, 1)]);
    drop(dd);
    assert_eq!(open(&dir, 1 << 20).1, model);
}
