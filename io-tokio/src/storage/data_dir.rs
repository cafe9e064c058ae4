//! [`DataDir`]: the core's durable writes as files (layout in the module docs).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tern_core::raft::{Durable, Entry, HardState, Snapshot};
use tern_core::wire::wal::{encode_record, WalRecord};
use tern_core::{LogIndex, PersistOp, Term};

use super::files::{self, HARDSTATE};
use super::recovery;
use super::{Storage, StorageError};

/// A data dir's Raft state, on disk under `<data dir>/raft/`.
///
/// # Contract
///
/// It performs [`PersistOp`]s as `Durable::apply` defines them, for the
/// sequences the core produces. Those keep the log contiguous from a floor:
/// entries at or below it are gone (the floor is 0, then a snapshot's
/// `compact_to` for one taken locally, its last index for one installed from
/// the leader). An op outside that contract is refused with
/// [`StorageError::Invalid`] and writes nothing:
///
/// - an `Append` whose entries are not consecutive, or whose first index is
///   at or below the floor, or past the last index + 1;
/// - a `Snapshot` older than the stored one (or at its index with another
///   term), or with `compact_to` below the floor, or with `compact_to`
///   below its last index while the log does not reach its last index.
///
/// For every sequence of valid ops, [`DataDir::open`] gives back exactly the
/// `Durable` that `Durable::apply` builds from `Durable::default()`.
///
/// # Crashes
///
/// Every multi-step write is ordered so a crash at any point leaves a
/// state recovery turns into the state before or after the write (or, for a
/// write that drops log entries, one in which only some of them are gone):
///
/// - hard state and snapshot files are replaced atomically (tmp, fsync,
///   rename, directory fsync);
/// - a snapshot is durable before any segment it makes obsolete is deleted;
/// - deletions reach the disk (directory fsync) before the next write into
///   a segment, so a torn write is always at the end of the last segment;
/// - a full segment is fsynced before the next one is created, so an
///   unsynced append is never torn in a segment that is no longer last.
///
/// After an I/O error the files are in an unknown state: every later write
/// fails too, and the agent must restart (recovery finds a consistent state).
pub struct DataDir {
    /// `<data dir>/raft`.
    dir: PathBuf,
    segment_bytes_max: u64,
    /// The first index of each segment on disk, ascending.
    segments: Vec<LogIndex>,
    /// The last segment, once opened for appending.
    open: Option<OpenSegment>,
    /// The snapshot files on disk, oldest first; the last is current.
    snapshots: Vec<(LogIndex, Term)>,
    /// Entries at or below this index are gone.
    floor: LogIndex,
    /// The last index of the log (the floor when the log is empty).
    last: LogIndex,
    /// The first I/O error; every write after it fails.
    failed: Option<String>,
}

struct OpenSegment {
    path: PathBuf,
    file: File,
    len: u64,
    /// Written since the last fsync.
    unsynced: bool,
}

/// Snapshot files kept on disk.
const SNAPSHOTS_KEPT: usize = 2;

impl DataDir {
    /// Opens (creating if absent) `<dir>/raft/`, recovers it, and returns the
    /// durable state to start from plus warnings (torn tails truncated).
    /// `segment_bytes_max` is where a log segment is closed
    /// ([`super::SEGMENT_BYTES_MAX`] normally).
    pub fn open(
        dir: &Path,
        segment_bytes_max: u64,
    ) -> Result<(DataDir, Durable, Vec<String>), StorageError> {
        let raft = dir.join("raft");
        if !raft.is_dir() {
            std::fs::create_dir_all(&raft).map_err(files::io_error(&raft))?;
            files::sync_dir(dir)?;
        }
        let rec = recovery::recover(&raft)?;
        let d = &rec.durable;
        let last = match (d.entries.last(), &d.snapshot) {
            (Some(e), _) => e.index,
            (None, Some(s)) => s.meta.last_index,
            (None, None) => LogIndex::ZERO,
        };
        let floor = d.entries.first().map_or(last, |e| e.index.prev());
        let mut data_dir = DataDir {
            dir: raft,
            segment_bytes_max: segment_bytes_max.max(1),
            segments: rec.segments,
            open: None,
            snapshots: rec.snapshots,
            floor,
            last,
            failed: None,
        };
        data_dir.open_last_segment()?;
        Ok((data_dir, rec.durable, rec.warnings))
    }

    /// The raft dir (`<data dir>/raft`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn segment_path(&self, first: LogIndex) -> PathBuf {
        self.dir.join(files::segment_name(first))
    }

    fn open_last_segment(&mut self) -> Result<(), StorageError> {
        self.open = None;
        if let Some(&first) = self.segments.last() {
            let path = self.segment_path(first);
            let (file, len) = files::open_append(&path)?;
            self.open = Some(OpenSegment {
                path,
                file,
                len,
                unsynced: false,
            });
        }
        Ok(())
    }

    /// Makes every append so far durable.
    fn sync_log(&mut self) -> Result<(), StorageError> {
        if let Some(seg) = &mut self.open {
            if seg.unsynced {
                seg.file.sync_all().map_err(files::io_error(&seg.path))?;
                seg.unsynced = false;
            }
        }
        Ok(())
    }

    fn persist_hard_state(&mut self, h: &HardState) -> Result<(), StorageError> {
        let mut bytes = Vec::new();
        encode_record(&WalRecord::HardState(h.clone()), &mut bytes);
        files::write_atomically(&self.dir, HARDSTATE, &bytes)
    }

    fn persist_append(&mut self, entries: &[Entry], sync: bool) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        self.check_append(entries)?;
        let start = first.index;
        if start <= self.last {
            self.drop_segments_from(start)?;
        }
        let full = self
            .open
            .as_ref()
            .is_none_or(|s| s.len >= self.segment_bytes_max);
        if full {
            self.start_segment(start)?;
        }
        let mut bytes = Vec::new();
        encode_record(&WalRecord::Append(entries.to_vec()), &mut bytes);
        let seg = self.open.as_mut().expect("a segment is open");
        seg.file
            .write_all(&bytes)
            .map_err(files::io_error(&seg.path))?;
        seg.len += bytes.len() as u64;
        seg.unsynced = true;
        self.last = last.index;
        if sync {
            self.sync_log()?;
        }
        Ok(())
    }

    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let invalid = |reason: String| Err(StorageError::Invalid { reason });
        let start = entries[0].index;
        if start <= self.floor || start.0 > self.last.0.saturating_add(1) {
            return invalid(format!(
                "an append at index {} outside {}..={} (after the floor {}, at most one past \
                 the last index {})",
                start.0,
                self.floor.0 + 1,
                self.last.0.saturating_add(1),
                self.floor.0,
                self.last.0
            ));
        }
        let follows = |w: &[Entry]| w[0].index.0.checked_add(1) == Some(w[1].index.0);
        if let Some(w) = entries.windows(2).find(|w| !follows(w)) {
            return invalid(format!(
                "an append jumps from index {} to {}",
                w[0].index.0, w[1].index.0
            ));
        }
        Ok(())
    }

    /// A conflicting suffix from `start` on: deletes the segments that
    /// start at or after it (newest first, so a crash leaves a prefix of the
    /// log), durably, before anything is written after them. The append then
    /// goes into the segment before them, where replay lets it replace the
    /// entries from `start` on.
    fn drop_segments_from(&mut self, start: LogIndex) -> Result<(), StorageError> {
        let mut dropped = false;
        while self.segments.last().is_some_and(|&first| first >= start) {
            let first = self.segments.pop().expect("checked");
            self.open = None;
            files::remove(&self.segment_path(first))?;
            dropped = true;
        }
        if dropped {
            files::sync_dir(&self.dir)?;
            self.open_last_segment()?;
        }
        Ok(())
    }

    /// Closes the open segment (fsynced: nothing unsynced may be left behind
    /// in a segment that is no longer last) and creates one for `first`.
    fn start_segment(&mut self, first: LogIndex) -> Result<(), StorageError> {
        self.sync_log()?;
        let path = self.segment_path(first);
        let file = files::create_new(&path)?;
        files::sync_dir(&self.dir)?;
        self.segments.push(first);
        self.open = Some(OpenSegment {
            path,
            file,
            len: 0,
            unsynced: false,
        });
        Ok(())
    }

    fn persist_snapshot(
        &mut self,
        snapshot: &Snapshot,
        compact_to: LogIndex,
    ) -> Result<(), StorageError> {
        self.check_snapshot(snapshot, compact_to)?;
        let meta = &snapshot.meta;
        let (index, term) = (meta.last_index, meta.last_term);
        // Durable::apply: drop entries up to compact_to; if what is left
        // does not continue the snapshot, drop it all.
        let log_left = compact_to < self.last && compact_to <= index;
        // Appends the snapshot depends on reach the disk before it does.
        self.sync_log()?;
        let mut bytes = Vec::new();
        encode_record(
            &WalRecord::Snapshot {
                snapshot: snapshot.clone(),
                compact_to,
            },
            &mut bytes,
        );
        files::write_atomically(&self.dir, &files::snapshot_name(index, term), &bytes)?;
        if self.snapshots.last() != Some(&(index, term)) {
            self.snapshots.push((index, term));
        }
        let mut deleted = false;
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            let (i, t) = self.snapshots.remove(0);
            files::remove(&self.dir.join(files::snapshot_name(i, t)))?;
            deleted = true;
        }
        if log_left {
            self.floor = compact_to;
            deleted |= self.drop_segments_below(compact_to.next())?;
        } else {
            self.floor = index;
            self.last = index;
            deleted |= self.drop_all_segments()?;
        }
        if deleted {
            files::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn check_snapshot(
        &self,
        snapshot: &Snapshot,
        compact_to: LogIndex,
    ) -> Result<(), StorageError> {
        let invalid = |reason: String| Err(StorageError::Invalid { reason });
        let meta = &snapshot.meta;
        if let Some(&(index, term)) = self.snapshots.last() {
            if meta.last_index < index || (meta.last_index == index && meta.last_term != term) {
                return invalid(format!(
                    "a snapshot at index {} term {} is not newer than the stored one at \
                     index {} term {}",
                    meta.last_index.0, meta.last_term.0, index.0, term.0
                ));
            }
        }
        if compact_to < self.floor {
            return invalid(format!(
                "compacting to {} is below the floor {}",
                compact_to.0, self.floor.0
            ));
        }
        if compact_to < meta.last_index && self.last < meta.last_index {
            return invalid(format!(
                "keeping entries after {} behind a snapshot at {} that the log (up to {}) \
                 does not reach",
                compact_to.0, meta.last_index.0, self.last.0
            ));
        }
        Ok(())
    }

    /// Deletes, oldest first, the segments whose successor starts at or
    /// below `first_live` (all their entries are older).
    fn drop_segments_below(&mut self, first_live: LogIndex) -> Result<bool, StorageError> {
        let mut deleted = false;
        while self.segments.len() >= 2 && self.segments[1] <= first_live {
            let first = self.segments.remove(0);
            files::remove(&self.segment_path(first))?;
            deleted = true;
        }
        Ok(deleted)
    }

    /// Deletes every segment, newest first: a crash leaves a prefix of the
    /// log, which recovery drops (see `recovery::recover`).
    fn drop_all_segments(&mut self) -> Result<bool, StorageError> {
        self.open = None;
        let deleted = !self.segments.is_empty();
        while let Some(first) = self.segments.pop() {
            files::remove(&self.segment_path(first))?;
        }
        Ok(deleted)
    }
}

impl Storage for DataDir {
    fn persist(&mut self, op: &PersistOp, sync: bool) -> Result<(), StorageError> {
        if let Some(first) = &self.failed {
            return Err(StorageError::Io {
                path: self.dir.clone(),
                error: std::io::Error::other(format!(
                    "an earlier write failed ({first}); restart to recover"
                )),
            });
        }
        let result = match op {
            // Always fsynced: a rename of an unsynced file may leave an
            // empty file after a crash, which recovery would call corrupt.
            PersistOp::HardState(h) => match sync {
                true => self.sync_log().and_then(|()| self.persist_hard_state(h)),
                false => self.persist_hard_state(h),
            },
            PersistOp::Append(entries) => self.persist_append(entries, sync),
            PersistOp::Snapshot {
                snapshot,
                compact_to,
            } => self.persist_snapshot(snapshot, *compact_to),
        };
        if let Err(e @ StorageError::Io { .. }) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }
}
