//! Reading the raft dir back after a start or a crash (see [`recover`]).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use tern_core::raft::{Durable, Entry, HardState, Snapshot};
use tern_core::wire::wal::{self, WalRecord};
use tern_core::{LogIndex, Term};

use super::files::{self, FileKind};
use super::StorageError;

/// What the raft dir held, after recovery tidied it.
pub(super) struct Recovered {
    pub durable: Durable,
    pub warnings: Vec<String>,
    /// The first index of each segment left on disk, ascending.
    pub segments: Vec<LogIndex>,
    /// The snapshot files left on disk, oldest first.
    pub snapshots: Vec<(LogIndex, Term)>,
}

/// The newest snapshot and the `compact_to` it was stored with.
struct StoredSnapshot {
    snapshot: Snapshot,
    compact_to: LogIndex,
}

impl StoredSnapshot {
    /// Entries at or below this index are gone from the log. For a
    /// snapshot taken locally it is `compact_to` (the snapshot keeps some
    /// entries behind it); for one installed from the leader it is the
    /// snapshot's last index (`compact_to` may then be the old log's last
    /// index, past the snapshot).
    fn floor(&self) -> LogIndex {
        self.compact_to.min(self.snapshot.meta.last_index)
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Reads the raft dir `dir` (which exists) and tidies it: leftover `*.tmp`
/// files are deleted, a torn tail of the last segment is truncated, and
/// files that hold nothing live any more (snapshots past the newest two,
/// segments wholly below the snapshot, an empty last segment) are deleted,
/// which finishes whatever write a crash interrupted.
///
/// The log is every segment's records replayed in order (each replaces the
/// log from its first index on), then, with the newest snapshot:
///
/// - if it was stored with `compact_to` past its last index (a snapshot from
///   the leader that replaced a conflicting log) and the log still holds
///   its last index with another term, the whole log is dropped: the crash
///   came after the snapshot was stored but before the segments were
///   deleted, and the log does not continue the snapshot (§7);
/// - entries at or below its floor ([`StoredSnapshot::floor`]) are dropped.
///
/// What is left must continue the snapshot (or start at index 1) without a
/// gap. Any damage other than a torn tail of the last segment is
/// [`StorageError::Corrupt`]; so is a newest snapshot or a hard state that
/// does not verify: nothing is silently skipped.
pub(super) fn recover(dir: &Path) -> Result<Recovered, StorageError> {
    let mut changed = false;
    let mut hard_state_file = None;
    let mut segments: BTreeMap<LogIndex, PathBuf> = BTreeMap::new();
    let mut snapshots: BTreeMap<(LogIndex, Term), PathBuf> = BTreeMap::new();
    for (path, kind) in files::list(dir)? {
        match kind {
            FileKind::HardState => hard_state_file = Some(path),
            FileKind::Segment(first) => drop(segments.insert(first, path)),
            FileKind::Snapshot(index, term) => drop(snapshots.insert((index, term), path)),
            FileKind::Tmp => {
                files::remove(&path)?;
                changed = true;
            }
            FileKind::Other => {}
        }
    }

    let stored = match snapshots.last_key_value() {
        Some((&(index, term), path)) => Some(read_snapshot(path, index, term)?),
        None => None,
    };
    while snapshots.len() > 2 {
        if let Some((_, path)) = snapshots.pop_first() {
            files::remove(&path)?;
            changed = true;
        }
    }
    let hard_state = match &hard_state_file {
        Some(path) => read_hard_state(path)?,
        None => HardState::default(),
    };

    let mut warnings = Vec::new();
    let mut entries = replay_segments(&mut segments, &mut warnings, &mut changed)?;
    if let Some(stored) = &stored {
        apply_snapshot(&mut entries, stored);
    }
    let floor = stored
        .as_ref()
        .map_or(LogIndex::ZERO, StoredSnapshot::floor);
    if let Some(e0) = entries.first() {
        if e0.index.0 != floor.0 + 1 {
            let (_, path) = segments
                .first_key_value()
                .expect("entries come from a segment");
            return Err(corrupt(
                path,
                0,
                format!(
                    "the log starts at index {} but the snapshot only covers up to {}: \
                     entries are missing",
                    e0.index.0, floor.0
                ),
            ));
        }
    }
    changed |= drop_dead_segments(&mut segments, &entries)?;
    if changed {
        files::sync_dir(dir)?;
    }

    let durable = Durable {
        hard_state,
        snapshot: stored.map(|s| s.snapshot),
        entries,
    };
    Ok(Recovered {
        durable,
        warnings,
        segments: segments.into_keys().collect(),
        snapshots: snapshots.into_keys().collect(),
    })
}

/// The one record of a file that is only ever replaced atomically: any
/// damage, even at its end, is corruption.
fn read_single(path: &Path) -> Result<(WalRecord, u64), StorageError> {
    let bytes = files::read(path)?;
    let rec = wal::recover(&bytes)
        .map_err(|wal::WalError::Corrupt { offset, reason }| corrupt(path, offset, reason))?;
    if let Some(torn) = rec.torn_tail {
        return Err(corrupt(
            path,
            torn.offset,
            "the record is damaged or cut short (the file is replaced atomically, \
             so this is not a torn write)",
        ));
    }
    let found = rec.records.len();
    let mut records = rec.records.into_iter();
    match (records.next(), found) {
        (Some(record), 1) => Ok((record, 0)),
        _ => Err(corrupt(
            path,
            rec.offsets.get(1).copied().unwrap_or(0),
            format!("expected exactly one record, found {found}"),
        )),
    }
}

fn read_hard_state(path: &Path) -> Result<HardState, StorageError> {
    match read_single(path)? {
        (WalRecord::HardState(h), _) => Ok(h),
        (_, offset) => Err(corrupt(path, offset, "expected a hard state record")),
    }
}

fn read_snapshot(path: &Path, index: LogIndex, term: Term) -> Result<StoredSnapshot, StorageError> {
    let (record, offset) = read_single(path)?;
    let WalRecord::Snapshot {
        snapshot,
        compact_to,
    } = record
    else {
        return Err(corrupt(path, offset, "expected a snapshot record"));
    };
    let meta = &snapshot.meta;
    if (meta.last_index, meta.last_term) != (index, term) {
        return Err(corrupt(
            path,
            offset,
            format!(
                "the file is named for index {} term {} but holds a snapshot at index {} term {}",
                index.0, term.0, meta.last_index.0, meta.last_term.0
            ),
        ));
    }
    Ok(StoredSnapshot {
        snapshot,
        compact_to,
    })
}

/// Replays every segment in order. A torn tail of the last one is truncated
/// on disk and reported in `warnings`; an empty last segment (created just
/// before a crash) is deleted.
fn replay_segments(
    segments: &mut BTreeMap<LogIndex, PathBuf>,
    warnings: &mut Vec<String>,
    changed: &mut bool,
) -> Result<Vec<Entry>, StorageError> {
    let mut log: Vec<Entry> = Vec::new();
    let last_first = segments.last_key_value().map(|(first, _)| *first);
    let mut empty_last = None;
    for (&first, path) in segments.iter() {
        let is_last = Some(first) == last_first;
        let bytes = files::read(path)?;
        let rec = wal::recover(&bytes)
            .map_err(|wal::WalError::Corrupt { offset, reason }| corrupt(path, offset, reason))?;
        if let Some(torn) = rec.torn_tail {
            if !is_last {
                return Err(corrupt(
                    path,
                    torn.offset,
                    "a damaged or cut-short record in a segment that is not the last \
                     (a torn write can only be at the end of the log)",
                ));
            }
            truncate(path, torn.offset)?;
            *changed = true;
            warnings.push(format!(
                "{}: truncated a torn tail of {} bytes at offset {}",
                path.display(),
                torn.len,
                torn.offset
            ));
        }
        if rec.records.is_empty() {
            if !is_last {
                return Err(corrupt(path, 0, "an empty segment before the last one"));
            }
            empty_last = Some(first);
            continue;
        }
        let mut seen_first = false;
        for (record, offset) in rec.records.into_iter().zip(rec.offsets) {
            let WalRecord::Append(entries) = record else {
                return Err(corrupt(path, offset, "a log segment holds only appends"));
            };
            if entries.is_empty() {
                continue;
            }
            replay_append(&mut log, first, !seen_first, entries)
                .map_err(|reason| corrupt(path, offset, reason))?;
            seen_first = true;
        }
    }
    if let Some(first) = empty_last {
        if let Some(path) = segments.remove(&first) {
            files::remove(&path)?;
            *changed = true;
        }
    }
    Ok(log)
}

/// Cuts a segment back to its intact records and makes that durable.
fn truncate(path: &Path, len: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(files::io_error(path))?;
    file.set_len(len).map_err(files::io_error(path))?;
    file.sync_all().map_err(files::io_error(path))
}

/// Replaces the log from the record's first index on. A segment's first
/// record starts exactly at the index in its name; every record must land
/// inside or right after the log so far.
fn replay_append(
    log: &mut Vec<Entry>,
    segment_first: LogIndex,
    first_record: bool,
    entries: Vec<Entry>,
) -> Result<(), String> {
    let Some(start) = entries.first().map(|e| e.index) else {
        return Ok(());
    };
    if first_record && start != segment_first {
        return Err(format!(
            "the segment is named for index {} but starts at index {}",
            segment_first.0, start.0
        ));
    }
    if start < segment_first {
        return Err(format!(
            "an append at index {} is below the segment's first index {}",
            start.0, segment_first.0
        ));
    }
    // Indexes come from disk: no `next()`, which saturates at u64::MAX.
    let follows = |w: &[Entry]| w[0].index.0.checked_add(1) == Some(w[1].index.0);
    if let Some(w) = entries.windows(2).find(|w| !follows(w)) {
        return Err(format!(
            "an append jumps from index {} to {}",
            w[0].index.0, w[1].index.0
        ));
    }
    if let (Some(first), Some(last)) = (log.first(), log.last()) {
        if start < first.index || start.0 > last.index.0.saturating_add(1) {
            return Err(format!(
                "an append at index {} does not fit the log {}..={}",
                start.0, first.index.0, last.index.0
            ));
        }
        let keep = (start.0 - first.index.0) as usize;
        log.truncate(keep);
    }
    log.extend(entries);
    Ok(())
}

/// Applies the newest snapshot to the replayed log (the rules are on
/// [`recover`]).
fn apply_snapshot(entries: &mut Vec<Entry>, stored: &StoredSnapshot) {
    let meta = &stored.snapshot.meta;
    if stored.compact_to > meta.last_index {
        let diverges = entries
            .iter()
            .find(|e| e.index == meta.last_index)
            .is_some_and(|e| e.term != meta.last_term);
        if diverges {
            entries.clear();
        }
    }
    let floor = stored.floor();
    let dead = entries.partition_point(|e| e.index <= floor);
    entries.drain(..dead);
}

/// Deletes the segments that hold no live entry: all of them when the log
/// is empty, else every segment whose successor starts at or below the
/// log's first index (its entries are all older). Oldest first, so a crash
/// leaves a contiguous run of segments; newest first when deleting all, so
/// a crash leaves a prefix of the log, which the rules on [`recover`] drop.
/// Returns whether it deleted any.
fn drop_dead_segments(
    segments: &mut BTreeMap<LogIndex, PathBuf>,
    entries: &[Entry],
) -> Result<bool, StorageError> {
    let mut deleted = false;
    let Some(first_live) = entries.first().map(|e| e.index) else {
        while let Some((_, path)) = segments.pop_last() {
            files::remove(&path)?;
            deleted = true;
        }
        return Ok(deleted);
    };
    while segments.len() >= 2 {
        let second = *segments.keys().nth(1).expect("two segments");
        if second > first_live {
            break;
        }
        if let Some((_, path)) = segments.pop_first() {
            files::remove(&path)?;
            deleted = true;
        }
    }
    Ok(deleted)
}
