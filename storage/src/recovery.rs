//! Reading the raft dir back after a start or a crash (see [`recover`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tern_core::raft::{Durable, HardState, Snapshot, SnapshotData, SnapshotMeta};
use tern_core::wire::wal::{self, WalRecord};
use tern_core::{LogIndex, PersistOp, Term};

use crate::files::{self, FileKind};
use crate::fs::Fs;
use crate::StorageError;

/// What the raft dir held, after recovery tidied it.
pub(crate) struct Recovered {
    pub durable: Durable,
    pub warnings: Vec<String>,
    /// Each segment left on disk, ascending: its first index and length.
    pub segments: Vec<(LogIndex, u64)>,
    /// The snapshot files left on disk, oldest first.
    pub snapshots: Vec<(LogIndex, Term)>,
    /// What the `purged` file holds (0 if there is none).
    pub purged: LogIndex,
    /// What it must hold before another snapshot file is written.
    pub purge_floor: LogIndex,
    /// The highest purge mark in the segments left, and the first index of
    /// the segment that holds it.
    pub log_mark: Option<(LogIndex, LogIndex)>,
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// One segment's intact records, each with its offset.
struct Segment {
    first: LogIndex,
    path: PathBuf,
    len: u64,
    records: Vec<(u64, WalRecord)>,
    /// Its highest purge mark (a `PurgeUpTo` record) and that record's
    /// offset, if it holds one.
    mark: Option<(LogIndex, u64)>,
}

impl Segment {
    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Reads the raft dir `dir` (which exists) and tidies it: leftover `*.tmp`
/// files are deleted, a torn tail of the last segment is truncated, and
/// files that hold nothing live any more (snapshots past the newest two,
/// segments with no live entry, an empty last segment) are deleted, which
/// finishes whatever write a crash interrupted.
///
/// The state is rebuilt with [`Durable::apply`], the one interpreter of
/// persist ops, from the hard state, the newest snapshot's record, every
/// segment's records in order, and the `purged` record, in the order they
/// were written. The snapshot file does not say where among the segments'
/// records it was written, but the write order of `DataDir` pins it down
/// by the first segment's first index `f`:
///
/// - `f` past the snapshot's last index (or no segment): every segment
///   was written after the snapshot (an installed snapshot that dropped the
///   log, or a purge of everything it covers), so the snapshot comes first;
/// - otherwise the segments hold the entries the snapshot was taken from
///   (or, for an installed snapshot, the log it replaced): they come first,
///   the log before them standing in for a placeholder snapshot at `f - 1`
///   that the real one must replace.
///
/// The highest purge comes last: the `purged` file's or a purge mark's (a
/// `PurgeUpTo` record after a segment's first append), whichever is higher.
/// Applying it where it was written would not do: when the segments hold
/// the snapshot's entries the snapshot is applied after them, and a purge
/// above the placeholder would be refused. It is never newer than the
/// snapshot (a purge goes no further than a snapshot that is durable
/// before it), so it applies at the end whatever the segments held; a
/// lower mark left in an older segment is subsumed by it. A mark read from
/// the last segment is fsynced (a process crash can leave it only in the
/// page cache). When entries below the live log that no purge covers are
/// still on disk (an installed snapshot's, or an older build's
/// `compact_to`), `purged` must be raised to just below the live log (the
/// data dir does, at open or before its next snapshot file), so no later
/// snapshot file can bring them back.
/// Any record the interpreter refuses, any gap, and any damage other than a
/// torn tail of the last segment is [`StorageError::Corrupt`], naming the
/// file: nothing is silently skipped.
pub(crate) fn recover(fs: &mut impl Fs, dir: &Path) -> Result<Recovered, StorageError> {
    let mut changed = false;
    let mut hard_state_file = None;
    let mut purged_file = None;
    let mut segment_files: BTreeMap<LogIndex, PathBuf> = BTreeMap::new();
    let mut snapshot_files: BTreeMap<(LogIndex, Term), PathBuf> = BTreeMap::new();
    for (path, kind) in files::list(fs, dir)? {
        match kind {
            FileKind::HardState => hard_state_file = Some(path),
            FileKind::Purged => purged_file = Some(path),
            FileKind::Segment(first) => drop(segment_files.insert(first, path)),
            FileKind::Snapshot(index, term) => drop(snapshot_files.insert((index, term), path)),
            FileKind::Tmp => {
                fs.remove(&path)?;
                changed = true;
            }
            FileKind::Other => {}
        }
    }

    let snapshot = match snapshot_files.last_key_value() {
        Some((&(index, term), path)) => Some((path.clone(), read_snapshot(fs, path, index, term)?)),
        None => None,
    };
    while snapshot_files.len() > 2 {
        if let Some((_, path)) = snapshot_files.pop_first() {
            fs.remove(&path)?;
            changed = true;
        }
    }
    let hard_state = match &hard_state_file {
        Some(path) => read_hard_state(fs, path)?,
        None => HardState::default(),
    };
    let purged = match &purged_file {
        Some(path) => Some((path.clone(), read_purged(fs, path)?)),
        None => None,
    };

    let mut warnings = Vec::new();
    let mut segments = read_segments(fs, &segment_files, &mut warnings, &mut changed)?;

    let mut d = Durable {
        hard_state,
        ..Durable::default()
    };
    let first = segments.first().map(|s| s.first);
    let snap_last = snapshot.as_ref().map(|(_, r)| record_meta(r).last_index);
    let snapshot_first = match (first, snap_last) {
        (None, _) => true,
        (Some(f), Some(last)) => f > last,
        (Some(_), None) => false,
    };
    // Whether the segments, before the snapshot is applied, hold its last
    // entry with its term (decides the order dead segments are deleted in).
    let mut log_holds_snapshot = false;
    if snapshot_first {
        // On the empty log, whichever way the snapshot was stored, it
        // stands alone: installed.
        if let Some((path, record)) = &snapshot {
            let s = record_snapshot(record).clone();
            d.apply(&PersistOp::InstallSnapshot(s))
                .map_err(|e| corrupt(path, 0, e.to_string()))?;
        }
        replay_segments(&mut d, &segments)?;
    } else {
        let f = first.expect("segments exist");
        let placeholder = f > LogIndex(1);
        if placeholder {
            d.snapshot = Some(Snapshot {
                meta: SnapshotMeta {
                    last_index: f.prev(),
                    last_term: Term(0),
                    ..SnapshotMeta::default()
                },
                data: Default::default(),
            });
        }
        replay_segments(&mut d, &segments)?;
        if let Some((path, record)) = &snapshot {
            let meta = record_meta(record);
            log_holds_snapshot = d.term_at(meta.last_index) == Some(meta.last_term);
            apply_record(&mut d, record, path, 0)?;
        } else if placeholder {
            return Err(corrupt(
                &segments[0].path,
                0,
                format!(
                    "the log starts at index {} but there is no snapshot: entries are missing",
                    f.0
                ),
            ));
        }
    }
    // The highest purge, from `purged` or a mark in a segment, last.
    let mark = segments
        .iter()
        .filter_map(|s| s.mark.map(|(at, offset)| (at, &s.path, offset)))
        .chain(purged.as_ref().map(|(path, at)| (*at, path, 0)))
        .max_by_key(|&(at, _, _)| at);
    if let Some((at, path, offset)) = mark {
        d.apply(&PersistOp::PurgeUpTo(at))
            .map_err(|e| corrupt(path, offset, e.to_string()))?;
    }
    if let Some((below, above)) = d.gap() {
        let path = segments
            .first()
            .map_or(dir.to_path_buf(), |s| s.path.clone());
        return Err(corrupt(
            &path,
            0,
            format!(
                "the log jumps from index {} to {}: entries are missing",
                below.0, above.0
            ),
        ));
    }

    // Newest first only for a log an installed snapshot replaced.
    let replaced = snapshot.is_some() && !snapshot_first && !log_holds_snapshot;
    changed |= drop_dead_segments(fs, &mut segments, &d, !replaced)?;
    if changed {
        fs.sync_dir(dir)?;
    }
    let purged = purged.map_or(LogIndex::ZERO, |(_, at)| at);
    let log_mark = segments
        .iter()
        .filter_map(|s| s.mark.map(|(at, _)| (at, s.first)))
        .max();
    // What was read from the last segment may still be only in the page
    // cache (a process crash keeps unsynced writes there; a power loss
    // would not): entries and a purge mark alike. Recovery hands them to
    // the core as durable, and the core may vote or acknowledge on them, so
    // they are made durable first. (Every other segment was fsynced before
    // the next one was created; the other files are replaced atomically.)
    if let Some(last) = segments.last() {
        fs.sync(&last.path).map_err(StorageError::Io)?;
    }
    let on_disk = purged.max(log_mark.map_or(LogIndex::ZERO, |(at, _)| at));
    // Entries left on disk below the live log that no purge mark covers
    // were dropped by a record that a newer snapshot file may replace (an
    // installed snapshot, or an older build's snapshot record with its
    // `compact_to`): `purged` must say so on its own (the data dir writes
    // it), so they never come back.
    let mut purge_floor = purged;
    if let (Some(seg), Some(e)) = (segments.first(), d.entries.first()) {
        let dead_up_to = e.index.prev();
        if seg.first <= dead_up_to && dead_up_to > on_disk {
            purge_floor = purge_floor.max(dead_up_to);
        }
    }
    Ok(Recovered {
        durable: d,
        warnings,
        segments: segments.iter().map(|s| (s.first, s.len)).collect(),
        snapshots: snapshot_files.into_keys().collect(),
        purged,
        purge_floor,
        log_mark,
    })
}

/// The bytes of the snapshot file `meta` names in `<data_dir>/raft/`,
/// checked as recovery checks them (header, pieces, crc32c, the metadata
/// it holds), or `None` if there is no such file (a newer snapshot replaced
/// it). What `Action::LoadSnapshot` asks a driver for. A damaged file, or
/// one holding another snapshot, is [`StorageError::Corrupt`] naming it.
pub fn read_snapshot_data(
    fs: &mut impl Fs,
    data_dir: &Path,
    meta: &SnapshotMeta,
) -> Result<Option<SnapshotData>, StorageError> {
    let dir = data_dir.join("raft");
    let name = files::snapshot_name(meta.last_index, meta.last_term);
    let path = dir.join(&name);
    let record = match read_snapshot(fs, &path, meta.last_index, meta.last_term) {
        Ok(record) => record,
        Err(StorageError::Io(e)) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let snapshot = record_snapshot(&record);
    if snapshot.meta != *meta {
        return Err(corrupt(
            &path,
            0,
            "the file holds another configuration than the snapshot it is named for",
        ));
    }
    Ok(Some(snapshot.data.clone()))
}

fn record_snapshot(record: &WalRecord) -> &Snapshot {
    match record {
        WalRecord::SaveSnapshot(s)
        | WalRecord::InstallSnapshot(s)
        | WalRecord::Snapshot { snapshot: s, .. } => s,
        _ => unreachable!("read_snapshot returns only snapshot records"),
    }
}

fn record_meta(record: &WalRecord) -> &SnapshotMeta {
    &record_snapshot(record).meta
}

/// Applies one record's ops ([`WalRecord::ops`]) with the interpreter.
fn apply_record(
    d: &mut Durable,
    record: &WalRecord,
    path: &Path,
    offset: u64,
) -> Result<(), StorageError> {
    for op in record.ops(d.last_index(), |i| d.term_at(i)) {
        d.apply(&op)
            .map_err(|e| corrupt(path, offset, e.to_string()))?;
    }
    Ok(())
}

fn replay_segments(d: &mut Durable, segments: &[Segment]) -> Result<(), StorageError> {
    for seg in segments {
        for (i, (offset, record)) in seg.records.iter().enumerate() {
            match record {
                WalRecord::Append(entries) if i == 0 => {
                    let start = entries.first().map_or(LogIndex::ZERO, |e| e.index);
                    if start != seg.first || start != d.last_index().next() {
                        return Err(corrupt(
                            &seg.path,
                            *offset,
                            format!(
                                "the segment is named for index {} but starts at index {} \
                                 after a log ending at {}",
                                seg.first.0,
                                start.0,
                                d.last_index().0
                            ),
                        ));
                    }
                }
                WalRecord::Append(_) | WalRecord::TruncateFrom(_) => {}
                // A purge mark: applied last, with the highest of them.
                WalRecord::PurgeUpTo(_) if i > 0 => continue,
                _ => {
                    return Err(corrupt(
                        &seg.path,
                        *offset,
                        "a log segment holds only appends, truncations and purge marks \
                         (after its first append)",
                    ))
                }
            }
            apply_record(d, record, &seg.path, *offset)?;
        }
    }
    Ok(())
}

/// A snapshot file as one snapshot record: a `SnapshotHeader` and its
/// `SnapshotPiece`s, put back together and checked against the header's size
/// and crc32c; or, from an older build, a single snapshot record. The file
/// is only ever replaced atomically, so any damage is corruption.
fn read_snapshot_file(fs: &mut impl Fs, path: &Path) -> Result<WalRecord, StorageError> {
    let bytes = fs.read(path)?;
    let rec = wal::recover(&bytes)
        .map_err(|wal::WalError::Corrupt { offset, reason }| corrupt(path, offset, reason))?;
    drop(bytes);
    if let Some(torn) = rec.torn_tail {
        return Err(corrupt(
            path,
            torn.offset,
            "the record is damaged or cut short (the file is replaced atomically, \
             so this is not a torn write)",
        ));
    }
    let offsets = rec.offsets;
    let mut records = rec.records.into_iter();
    let Some(WalRecord::SnapshotHeader {
        installed,
        meta,
        total_bytes,
        crc32c,
    }) = records.next()
    else {
        return read_single(fs, path);
    };
    let mut data = Vec::with_capacity(usize::try_from(total_bytes).unwrap_or(0).min(1 << 30));
    for (i, r) in records.enumerate() {
        let at = offsets.get(i + 1).copied().unwrap_or(0);
        match r {
            WalRecord::SnapshotPiece(piece)
                if data.len() as u64 + piece.len() as u64 <= total_bytes =>
            {
                data.extend_from_slice(&piece)
            }
            WalRecord::SnapshotPiece(_) => {
                return Err(corrupt(
                    path,
                    at,
                    "more snapshot bytes than the header announced",
                ))
            }
            _ => {
                return Err(corrupt(
                    path,
                    at,
                    "a snapshot file holds only its pieces after its header",
                ))
            }
        }
    }
    if data.len() as u64 != total_bytes {
        return Err(corrupt(
            path,
            0,
            format!(
                "the header announced {total_bytes} snapshot bytes, the pieces hold {}",
                data.len()
            ),
        ));
    }
    if crc32c::crc32c(&data) != crc32c {
        return Err(corrupt(
            path,
            0,
            "the snapshot's bytes do not match the header's crc32c",
        ));
    }
    let snapshot = Snapshot {
        meta,
        data: data.into(),
    };
    Ok(if installed {
        WalRecord::InstallSnapshot(snapshot)
    } else {
        WalRecord::SaveSnapshot(snapshot)
    })
}

/// The one record of a file that is only ever replaced atomically: any
/// damage, even at its end, is corruption.
fn read_single(fs: &mut impl Fs, path: &Path) -> Result<WalRecord, StorageError> {
    let bytes = fs.read(path)?;
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
        (Some(record), 1) => Ok(record),
        _ => Err(corrupt(
            path,
            rec.offsets.get(1).copied().unwrap_or(0),
            format!("expected exactly one record, found {found}"),
        )),
    }
}

fn read_hard_state(fs: &mut impl Fs, path: &Path) -> Result<HardState, StorageError> {
    match read_single(fs, path)? {
        WalRecord::HardState(h) => Ok(h),
        _ => Err(corrupt(path, 0, "expected a hard state record")),
    }
}

fn read_purged(fs: &mut impl Fs, path: &Path) -> Result<LogIndex, StorageError> {
    match read_single(fs, path)? {
        WalRecord::PurgeUpTo(at) => Ok(at),
        _ => Err(corrupt(path, 0, "expected a purge record")),
    }
}

fn read_snapshot(
    fs: &mut impl Fs,
    path: &Path,
    index: LogIndex,
    term: Term,
) -> Result<WalRecord, StorageError> {
    let record = read_snapshot_file(fs, path)?;
    let meta = match &record {
        WalRecord::SaveSnapshot(s)
        | WalRecord::InstallSnapshot(s)
        | WalRecord::Snapshot { snapshot: s, .. } => &s.meta,
        _ => return Err(corrupt(path, 0, "expected a snapshot record")),
    };
    if (meta.last_index, meta.last_term) != (index, term) {
        return Err(corrupt(
            path,
            0,
            format!(
                "the file is named for index {} term {} but holds a snapshot at index {} term {}",
                index.0, term.0, meta.last_index.0, meta.last_term.0
            ),
        ));
    }
    Ok(record)
}

/// Reads every segment. A torn tail of the last one is truncated on disk
/// (and made durable) and reported in `warnings`; an empty last segment
/// (created just before a crash) is deleted.
fn read_segments(
    fs: &mut impl Fs,
    files: &BTreeMap<LogIndex, PathBuf>,
    warnings: &mut Vec<String>,
    changed: &mut bool,
) -> Result<Vec<Segment>, StorageError> {
    let mut out = Vec::new();
    let last_first = files.last_key_value().map(|(first, _)| *first);
    for (&first, path) in files {
        let is_last = Some(first) == last_first;
        let bytes = fs.read(path)?;
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
            fs.truncate(path, torn.offset)?;
            fs.sync(path).map_err(StorageError::Io)?;
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
            fs.remove(path)?;
            *changed = true;
            continue;
        }
        let records: Vec<(u64, WalRecord)> = rec.offsets.into_iter().zip(rec.records).collect();
        let mark = records
            .iter()
            .filter_map(|(offset, r)| match r {
                WalRecord::PurgeUpTo(at) => Some((*at, *offset)),
                _ => None,
            })
            .max();
        out.push(Segment {
            first,
            path: path.clone(),
            len: rec.valid_len as u64,
            records,
            mark,
        });
    }
    Ok(out)
}

/// Deletes the segments that hold no live entry: all of them when the log
/// is empty, else every segment whose successor starts at or below the
/// log's first index, each removal made durable before the next (a
/// directory's unsynced removals may reach the disk in any order). The
/// order keeps a crash in the middle recoverable to
/// the same state: when the log that was read held the snapshot's last
/// entry (or there is no snapshot), oldest first, so what is left still
/// holds it; otherwise (a log an installed snapshot replaced) newest first,
/// so what is left is a prefix of that log, which recovery drops again.
fn drop_dead_segments(
    fs: &mut impl Fs,
    segments: &mut Vec<Segment>,
    d: &Durable,
    oldest_first: bool,
) -> Result<bool, StorageError> {
    let mut deleted = false;
    let Some(first_live) = d.entries.first().map(|e| e.index) else {
        while !segments.is_empty() {
            let seg = if oldest_first {
                segments.remove(0)
            } else {
                segments.pop().expect("not empty")
            };
            fs.remove(&seg.path)?;
            fs.sync_dir(&seg.dir())?;
            deleted = true;
        }
        return Ok(deleted);
    };
    while segments.len() >= 2 && segments[1].first <= first_live {
        let seg = segments.remove(0);
        fs.remove(&seg.path)?;
        fs.sync_dir(&seg.dir())?;
        deleted = true;
    }
    Ok(deleted)
}
