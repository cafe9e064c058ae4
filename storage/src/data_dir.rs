//! [`DataDir`]: the core's durable writes as files (layout in the crate docs).

use std::path::{Path, PathBuf};

use tern_core::raft::{
    check, Durable, Entry, EntryPayload, LogEntries, Snapshot, SnapshotMeta, TermRuns,
};
use tern_core::wire::wal::{encode_record, snapshot_piece_header_for, WalRecord};
use tern_core::{LogIndex, PersistOp, Term};

use crate::files::{self, HARDSTATE, PURGED};
use crate::fs::{Fs, FsError, FsOp};
use crate::recovery;
use crate::{Storage, StorageError};

/// A data dir's Raft state, on disk under `<data dir>/raft/`, through the
/// filesystem `F`.
///
/// # Contract
///
/// It performs [`PersistOp`]s exactly as `Durable::apply` defines them. It
/// keeps in memory a summary of the state: a `Durable` whose entries carry
/// no payload and whose snapshot carries no data, maintained by
/// `Durable::apply` itself; every op is checked against it with the same
/// [`check`] before anything is written, and an op outside the contract is
/// refused with [`StorageError::Invalid`], nothing written. For every
/// sequence of valid ops, [`DataDir::open`] gives back exactly the `Durable`
/// that `Durable::apply` builds from `Durable::default()`.
///
/// # Write order, and what a crash leaves
///
/// Every multi-step write is ordered so a crash at any point leaves a state
/// recovery turns into the state before or after the write, or, for a
/// write that drops entries (`TruncateFrom`, `PurgeUpTo`,
/// `InstallSnapshot`), one in which only some of the dropped entries are
/// still there (a prefix of the old log for a truncation or a replaced log,
/// a suffix of the segments for a purge). An op that was not synced may be
/// lost, and so may everything after it, but never an op before a synced
/// one:
///
/// - hard state, snapshot and `purged` files are replaced atomically (tmp,
///   fsync, rename, directory fsync); snapshots are written after every
///   append before them is fsynced;
/// - `TruncateFrom` deletes the segments that start at or after it (newest
///   first) and makes that durable before it writes a `TruncateFrom` record
///   into the segment that is left, so a torn write is always at the end of
///   the last segment;
/// - a full segment is fsynced before the next one is created;
/// - `PurgeUpTo` appends a purge mark (a `PurgeUpTo` record) to the last
///   segment, unsynced, then deletes, oldest first, the segments wholly at
///   or below it. The mark needs no fsync before the deletions: a crash
///   that keeps some of them and loses the mark leaves a suffix of the
///   segments (the partial purge above), and any later synced write fsyncs
///   the last segment, mark and all, first. A purge that deletes no segment
///   (the usual one: segments are large) costs one buffered append;
/// - a truncation that would delete the segment holding the mark while a
///   segment left still holds entries at or below it writes the mark to
///   `purged` first; an empty last segment (left by a full disk) takes no
///   record either: the mark goes to `purged`;
/// - `InstallSnapshot` writes its file, then deletes the segments it makes
///   dead: oldest first when the log is kept after it (after raising
///   `purged` to its last index, durably: a newer snapshot file will replace
///   the one that says those entries are gone), newest first when the whole
///   log goes;
/// - a snapshot file past the newest two is not deleted here: it is handed
///   to the driver ([`DataDir::take_superseded`]), which deletes it beside
///   the log ([`remove_superseded`]) without a directory fsync, or keeps it
///   to write the next snapshot over ([`SnapshotLane`]). A deletion lost in
///   a crash is redone by recovery.
///
/// # Errors
///
/// - A failed fsync is fatal, whatever its errno: the error names the file
///   and the errno, and every later write is refused with
///   [`StorageError::Failed`] (never retry an fsync and carry on: after a
///   failure the kernel may have dropped the dirty pages, and a retry
///   "succeeds"). So is any other I/O error, except:
/// - ENOSPC while writing a new file or appending to a segment is
///   [`StorageError::NoSpace`]: the partial write is cut back, nothing in
///   the state changed, and a later write may succeed once there is room.
///   (ENOSPC in the middle of a multi-step write is fatal like any error.)
pub struct DataDir<F: Fs> {
    fs: F,
    /// `<data dir>/raft`.
    dir: PathBuf,
    segment_bytes_max: u64,
    /// Each segment on disk, ascending: its first index and its length.
    segments: Vec<(LogIndex, u64)>,
    /// The last segment was written since its last fsync.
    unsynced: bool,
    /// The snapshot files on disk, oldest first; the last is current.
    snapshots: Vec<(LogIndex, Term)>,
    /// The state, without payloads or snapshot data, and of the log only
    /// its terms (see the contract).
    summary: Durable<TermRuns>,
    /// What the `purged` file holds (0 if there is none).
    purged: LogIndex,
    /// What it must hold before another snapshot file is written (see
    /// `raise_purged`).
    purge_floor: LogIndex,
    /// The highest purge mark (a `PurgeUpTo` record) in the segments on
    /// disk, and the first index of the segment that holds it; `None` if
    /// no segment holds one.
    log_mark: Option<(LogIndex, LogIndex)>,
    /// Snapshot files no longer kept, oldest first, for the driver to
    /// delete beside the log ([`DataDir::take_superseded`]).
    superseded: Vec<PathBuf>,
    /// The first fatal error; every write after it fails.
    failed: Option<String>,
}

/// Snapshot files kept on disk.
const SNAPSHOTS_KEPT: usize = 2;

/// Superseded snapshot files that wait for a driver to delete them; past
/// this many (a driver that never takes them) the data dir deletes the
/// oldest itself.
const SUPERSEDED_MAX: usize = 8;

/// How many dead segments a purge deletes itself; appends after it delete
/// the rest, one each. Each deletion is an unlink and a directory fsync on
/// the log lane (11 ms and more for a 16 MiB segment on a disk mounted with
/// `discard`), and at 14k writes/s a snapshot's purge found about ten dead
/// segments: deleted in one job, appends waited over 100 ms behind it.
pub const DEAD_SEGMENTS_PER_WRITE: usize = 1;

/// How a write failed: cleanly (nothing changed, the data dir goes on) or
/// fatally (the data dir refuses every later write).
enum Fail {
    Clean(StorageError),
    Fatal(StorageError),
}

impl From<FsError> for Fail {
    fn from(e: FsError) -> Fail {
        Fail::Fatal(StorageError::from(e))
    }
}

/// A failed fsync (of a file or a directory) is an I/O error whatever its
/// errno; ENOSPC elsewhere is `NoSpace`.
fn fatal(e: FsError) -> Fail {
    match e.op {
        FsOp::Sync | FsOp::SyncDir => Fail::Fatal(StorageError::Io(e)),
        _ => Fail::Fatal(StorageError::from(e)),
    }
}

/// The op without what the summary does not keep: payloads and snapshot
/// data.
fn light(op: &PersistOp) -> PersistOp {
    let snap = |s: &Snapshot| Snapshot {
        meta: SnapshotMeta {
            last_index: s.meta.last_index,
            last_term: s.meta.last_term,
            membership: Default::default(),
        },
        data: Default::default(),
    };
    match op {
        PersistOp::Append(entries) => PersistOp::Append(entries.iter().map(light_entry).collect()),
        PersistOp::SaveSnapshot(s) => PersistOp::SaveSnapshot(snap(s)),
        PersistOp::InstallSnapshot(s) => PersistOp::InstallSnapshot(snap(s)),
        other => other.clone(),
    }
}

fn light_entry(e: &Entry) -> Entry {
    Entry {
        term: e.term,
        index: e.index,
        payload: EntryPayload::Noop,
    }
}

fn light_durable(d: &Durable) -> Durable<TermRuns> {
    Durable {
        hard_state: d.hard_state.clone(),
        snapshot: d
            .snapshot
            .as_ref()
            .map(|s| match light(&PersistOp::SaveSnapshot(s.clone())) {
                PersistOp::SaveSnapshot(s) => s,
                _ => unreachable!(),
            }),
        entries: TermRuns::of(&d.entries),
    }
}

/// Writes a server's own snapshot file under `<data_dir>/raft/`, durably,
/// without the [`DataDir`]: what a driver does *beside* the log lane
/// (`tern_core::Outbox::start_background`), with its own handle on the
/// filesystem, so appends never wait for a snapshot file. The `SaveSnapshot`
/// op that follows through the data dir then only adopts the file. The
/// snapshot's last entry must already be durable in the log (the core takes
/// snapshots only there), so a crash at any point leaves a state recovery
/// accepts. ENOSPC is [`StorageError::NoSpace`]; any other failure is
/// [`StorageError::Io`].
pub fn write_snapshot_file<F: Fs>(
    fs: &mut F,
    data_dir: &Path,
    snapshot: &Snapshot,
) -> Result<(), StorageError> {
    write_own_snapshot(fs, data_dir, snapshot, None)
}

fn write_own_snapshot<F: Fs>(
    fs: &mut F,
    data_dir: &Path,
    snapshot: &Snapshot,
    recycle: Option<&Path>,
) -> Result<(), StorageError> {
    let dir = data_dir.join("raft");
    write_snapshot_pieces(fs, &dir, snapshot, false, recycle).map_err(|e| {
        if e.is_no_space() {
            StorageError::NoSpace { path: e.path }
        } else {
            StorageError::Io(e)
        }
    })
}

/// A driver's snapshot lane (the daemon's snapshot thread, io-sim's
/// snapshot task): writes the server's own snapshot files beside the log
/// ([`write_snapshot_file`]) and deletes the ones the data dir no longer
/// keeps ([`remove_superseded`]), except that it keeps the newest of those
/// as a spare and overwrites it in place with the next snapshot. A
/// snapshot every few seconds then frees and allocates no blocks: on a
/// filesystem mounted with online discard, deleting a snapshot file costs
/// a TRIM of all of it at the next journal commit, which every log fsync
/// waits for, and a 256 MiB state deletes a 256 MiB file per snapshot. The
/// spare is superseded, so nothing depends on it: a crash at any point
/// leaves it under its old name untouched (recovery deletes it, as any
/// snapshot file past the newest two) or under a temporary name (recovery
/// deletes that too).
#[derive(Debug, Default)]
pub struct SnapshotLane {
    spare: Option<PathBuf>,
}

impl SnapshotLane {
    pub fn new() -> SnapshotLane {
        SnapshotLane::default()
    }

    /// The superseded file kept to be overwritten, if any.
    pub fn spare(&self) -> Option<&Path> {
        self.spare.as_deref()
    }

    /// [`write_snapshot_file`], into the spare if there is one (it is used
    /// up either way: a write that fails deletes what it wrote).
    pub fn write<F: Fs>(
        &mut self,
        fs: &mut F,
        data_dir: &Path,
        snapshot: &Snapshot,
    ) -> Result<(), StorageError> {
        let spare = self.spare.take();
        write_own_snapshot(fs, data_dir, snapshot, spare.as_deref())
    }

    /// [`remove_superseded`], keeping the newest of `paths` (they come
    /// oldest first, from [`DataDir::take_superseded`]) as the spare; a
    /// spare kept before goes.
    pub fn remove_superseded<F: Fs>(
        &mut self,
        fs: &mut F,
        paths: &[PathBuf],
    ) -> Result<(), StorageError> {
        let Some((newest, older)) = paths.split_last() else {
            return Ok(());
        };
        let old_spare = self.spare.replace(newest.clone());
        remove_superseded(fs, older)?;
        remove_superseded(fs, old_spare.as_slice())
    }
}

/// Deletes snapshot files a [`DataDir`] no longer keeps
/// ([`DataDir::take_superseded`]): what a driver does beside the log, on the
/// lane that writes its own snapshot files. No directory fsync: recovery
/// deletes any snapshot file past the newest two that a crash brings back.
/// A file already gone is no error; any other failure is returned (the
/// caller logs it: nothing depends on the deletion).
pub fn remove_superseded<F: Fs>(fs: &mut F, paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        match fs.remove(path) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(StorageError::Io(e)),
        }
    }
    Ok(())
}

fn write_snapshot_pieces<F: Fs>(
    fs: &mut F,
    dir: &Path,
    snapshot: &Snapshot,
    installed: bool,
    recycle: Option<&Path>,
) -> Result<(), FsError> {
    let meta = &snapshot.meta;
    // One pass of checksums: each piece's, combined into the whole's.
    let piece_crcs: Vec<u32> = snapshot
        .data
        .chunks(SNAPSHOT_PIECE_BYTES)
        .map(crc32c::crc32c)
        .collect();
    let whole_crc = snapshot
        .data
        .chunks(SNAPSHOT_PIECE_BYTES)
        .zip(&piece_crcs)
        .fold(0, |crc, (c, &piece)| {
            crc32c::crc32c_combine(crc, piece, c.len())
        });
    let header = WalRecord::SnapshotHeader {
        installed,
        meta: meta.clone(),
        total_bytes: snapshot.data.len() as u64,
        crc32c: whole_crc,
    };
    // Each piece's record header, then its bytes straight from the
    // snapshot: no copy of the state on the way to the file.
    let pieces = std::iter::once((encode(header), &[][..])).chain(
        snapshot
            .data
            .chunks(SNAPSHOT_PIECE_BYTES)
            .zip(piece_crcs)
            .map(|(c, crc)| (snapshot_piece_header_for(c.len(), crc), c)),
    );
    let name = files::snapshot_name(meta.last_index, meta.last_term);
    files::write_atomically_pieces(fs, dir, &name, pieces, recycle)
}

/// The most snapshot bytes in one record of a snapshot file.
pub const SNAPSHOT_PIECE_BYTES: usize = 4 << 20;

fn encode(record: WalRecord) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_record(&record, &mut bytes);
    bytes
}

impl<F: Fs> DataDir<F> {
    /// Opens (creating if absent) `<dir>/raft/` on `fs`, recovers it, and
    /// returns the durable state to start from plus warnings (torn tails
    /// truncated). `segment_bytes_max` is where a log segment is closed
    /// ([`crate::SEGMENT_BYTES_MAX`] normally).
    pub fn open(
        mut fs: F,
        dir: &Path,
        segment_bytes_max: u64,
    ) -> Result<(DataDir<F>, Durable, Vec<String>), StorageError> {
        let raft = dir.join("raft");
        if fs.create_dir_all(&raft)? {
            fs.sync_dir(dir).map_err(StorageError::Io)?;
        }
        let rec = recovery::recover(&mut fs, &raft)?;
        let data_dir = DataDir {
            fs,
            dir: raft,
            segment_bytes_max: segment_bytes_max.max(1),
            segments: rec.segments,
            unsynced: false,
            snapshots: rec.snapshots,
            summary: light_durable(&rec.durable),
            purged: rec.purged,
            purge_floor: rec.purge_floor,
            log_mark: rec.log_mark,
            superseded: Vec::new(),
            failed: None,
        };
        let mut data_dir = data_dir;
        match data_dir.raise_purged() {
            // A full disk: the raise waits for the next snapshot or purge,
            // which must write it first; the state read is right as it is.
            Ok(()) | Err(Fail::Clean(StorageError::NoSpace { .. })) => {}
            Err(Fail::Clean(e)) | Err(Fail::Fatal(e)) => return Err(e),
        }
        Ok((data_dir, rec.durable, rec.warnings))
    }

    /// The raft dir (`<data dir>/raft`).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The filesystem (a simulator reads its latency and crashes it).
    pub fn fs_mut(&mut self) -> &mut F {
        &mut self.fs
    }

    /// Gives the filesystem back (to crash it and open it again).
    pub fn into_fs(self) -> F {
        self.fs
    }

    /// The snapshot files this data dir no longer keeps (past the newest
    /// two), oldest first: the driver deletes them with
    /// [`remove_superseded`] on the lane that writes its own snapshot files,
    /// so the log lane never waits for an unlink of a big file. They need
    /// no directory fsync: a deletion a crash loses is redone by recovery,
    /// which deletes every snapshot file past the newest two.
    pub fn take_superseded(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.superseded)
    }

    fn segment_path(&self, first: LogIndex) -> PathBuf {
        self.dir.join(files::segment_name(first))
    }

    /// Deletes a segment and makes that durable before the next deletion:
    /// the order segments go in is what keeps a crash recoverable, and a
    /// directory's unsynced removals may reach the disk in any order.
    fn remove_segment(&mut self, first: LogIndex) -> Result<(), Fail> {
        if self.log_mark.is_some_and(|(_, seg)| seg == first) {
            // Lower marks may remain in older segments; forgetting them
            // only means the next purge writes its own.
            self.log_mark = None;
        }
        self.fs.remove(&self.segment_path(first)).map_err(fatal)?;
        self.fs.sync_dir(&self.dir).map_err(fatal)
    }

    /// The highest purge the disk holds, in `purged` or as a mark in a
    /// segment: what recovery applies last.
    fn purged_on_disk(&self) -> LogIndex {
        self.purged
            .max(self.log_mark.map_or(LogIndex::ZERO, |(m, _)| m))
    }

    /// Makes every append so far durable: what `persist` of an append with
    /// `sync` does after writing it. A driver that wants the write and its
    /// fsync apart (the simulator, to crash between them) persists the
    /// append without `sync` and calls this later. A failed fsync is fatal,
    /// as in `persist`.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if let Some(first) = &self.failed {
            return Err(StorageError::Failed {
                first: first.clone(),
            });
        }
        match self.sync_log() {
            Ok(()) => Ok(()),
            Err(Fail::Clean(e)) | Err(Fail::Fatal(e)) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Makes every append so far durable.
    fn sync_log(&mut self) -> Result<(), Fail> {
        if let (true, Some(&(first, _))) = (self.unsynced, self.segments.last()) {
            let path = self.segment_path(first);
            self.fs.sync(&path).map_err(fatal)?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Replaces a whole small file: ENOSPC while writing it is clean (the
    /// old file is still there); anything later is fatal.
    fn replace_file(&mut self, name: &str, bytes: &[u8]) -> Result<(), Fail> {
        files::write_atomically(&mut self.fs, &self.dir, name, bytes).map_err(|e| match e.op {
            FsOp::Create | FsOp::Write if e.is_no_space() => {
                Fail::Clean(StorageError::NoSpace { path: e.path })
            }
            _ => fatal(e),
        })
    }

    /// Appends `bytes` to the last segment. ENOSPC is clean once the
    /// partial write is cut back.
    fn append_to_log(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let (first, len) = *self.segments.last().expect("a segment is open");
        let path = self.segment_path(first);
        if let Err(e) = self.fs.append(&path, bytes) {
            if !e.is_no_space() {
                return Err(fatal(e));
            }
            self.fs.truncate(&path, len).map_err(fatal)?;
            return Err(Fail::Clean(StorageError::NoSpace { path }));
        }
        self.segments.last_mut().expect("checked").1 += bytes.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    fn persist_append(&mut self, entries: &[Entry], sync: bool) -> Result<(), Fail> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let full = self
            .segments
            .last()
            .is_none_or(|&(_, len)| len >= self.segment_bytes_max);
        if full {
            self.start_segment(first.index)?;
        }
        self.append_to_log(&encode(WalRecord::Append(entries.to_vec())))?;
        if sync {
            self.sync_log()?;
        }
        Ok(())
    }

    /// Closes the last segment (fsynced: nothing unsynced may be left behind
    /// in a segment that is no longer last) and creates one for `first`.
    fn start_segment(&mut self, first: LogIndex) -> Result<(), Fail> {
        self.sync_log()?;
        let path = self.segment_path(first);
        self.fs.create(&path).map_err(|e| match e.is_no_space() {
            true => Fail::Clean(StorageError::NoSpace { path: e.path }),
            false => fatal(e),
        })?;
        self.fs.sync_dir(&self.dir).map_err(fatal)?;
        self.segments.push((first, 0));
        Ok(())
    }

    fn persist_truncate(&mut self, at: LogIndex, sync: bool) -> Result<(), Fail> {
        self.keep_mark_past_truncation(at)?;
        let mut lowest_dropped = None;
        while self.segments.last().is_some_and(|&(first, _)| first >= at) {
            let (first, _) = self.segments.pop().expect("checked");
            self.unsynced = false;
            self.remove_segment(first)?;
            lowest_dropped = Some(first);
        }
        // The entries left on disk end where the last deleted segment began.
        let last_on_disk = match lowest_dropped {
            Some(first) => first.prev(),
            None => self.summary.last_index(),
        };
        if !self.segments.is_empty() && last_on_disk >= at {
            let bytes = encode(WalRecord::TruncateFrom(at));
            self.append_to_log(&bytes).map_err(|f| match f {
                Fail::Clean(e) | Fail::Fatal(e) => Fail::Fatal(e),
            })?;
        }
        if sync {
            self.sync_log()?;
        }
        Ok(())
    }

    /// A truncation at `at` deletes the segments that start at or after it.
    /// If one of them holds the purge mark while a segment that is left
    /// still holds entries at or below the mark, the mark goes to `purged`
    /// first (durably), or those entries would come back after a restart.
    /// Rare: a conflicting suffix that spans a segment boundary.
    fn keep_mark_past_truncation(&mut self, at: LogIndex) -> Result<(), Fail> {
        let Some((mark, seg)) = self.log_mark else {
            return Ok(());
        };
        let first_left = self.segments.first().map(|&(first, _)| first);
        let needed = seg >= at && first_left.is_some_and(|f| f < at && f <= mark);
        if needed && mark > self.purged {
            self.purge_floor = self.purge_floor.max(mark);
            self.raise_purged().map_err(|f| match f {
                Fail::Clean(e) | Fail::Fatal(e) => Fail::Fatal(e),
            })?;
        }
        Ok(())
    }

    /// Stores a snapshot file: a `SnapshotHeader` record, then the bytes in
    /// `SnapshotPiece` records of at most [`SNAPSHOT_PIECE_BYTES`] (see
    /// [`write_snapshot_file`]). A server's own snapshot whose file the
    /// driver already wrote beside the log is only adopted here.
    fn persist_snapshot_file(&mut self, snapshot: &Snapshot, installed: bool) -> Result<(), Fail> {
        // Appends the snapshot depends on reach the disk before it does.
        self.sync_log()?;
        self.raise_purged()?;
        let meta = &snapshot.meta;
        let (index, term) = (meta.last_index, meta.last_term);
        let name = files::snapshot_name(index, term);
        let written = !installed && self.fs.list(&self.dir).map_err(fatal)?.contains(&name);
        if !written {
            write_snapshot_pieces(&mut self.fs, &self.dir, snapshot, installed, None).map_err(
                |e| match e.op {
                    FsOp::Create | FsOp::Write if e.is_no_space() => {
                        Fail::Clean(StorageError::NoSpace { path: e.path })
                    }
                    _ => fatal(e),
                },
            )?;
        }
        self.snapshots.push((index, term));
        while self.snapshots.len() > SNAPSHOTS_KEPT {
            let (i, t) = self.snapshots.remove(0);
            self.superseded
                .push(self.dir.join(files::snapshot_name(i, t)));
        }
        while self.superseded.len() > SUPERSEDED_MAX {
            let path = self.superseded.remove(0);
            self.fs.remove(&path).map_err(fatal)?;
        }
        Ok(())
    }

    /// Drops the entries at or below `at` from the disk: a purge mark
    /// records the highest such index (so a later, lower purge cannot bring
    /// entries back), then the segments wholly at or below it go, oldest
    /// first.
    ///
    /// The mark of a plain purge is a `PurgeUpTo` record appended to the
    /// last segment, not fsynced here: it becomes durable with the log's
    /// next fsync, which every later synced write does first. A crash
    /// before that may keep some of the deletions and lose the mark: what is
    /// left is a suffix of the segments, whose dead entries the next purge
    /// drops again (the contract allows it, as for any unsynced purge). A
    /// `floor` purge (an installed snapshot that keeps the log after it)
    /// raises `purged` instead, durably, before anything is deleted: a newer
    /// snapshot file will replace the installed one that says those entries
    /// are gone.
    fn purge_disk(&mut self, at: LogIndex, floor: bool) -> Result<(), Fail> {
        if self.segments.first().is_none_or(|&(first, _)| first > at) {
            return Ok(());
        }
        let last_len = self.segments.last().map_or(0, |&(_, len)| len);
        if floor || last_len == 0 {
            // (An empty last segment, left by a full disk, takes no mark: a
            // segment starts with its first append.)
            self.purge_floor = self.purge_floor.max(at);
            self.raise_purged()?;
        } else if at > self.purged_on_disk() {
            self.append_to_log(&encode(WalRecord::PurgeUpTo(at)))?;
            let (seg, _) = *self.segments.last().expect("checked");
            self.log_mark = Some((at, seg));
        }
        if at >= self.summary.last_index() {
            return self.drop_segments_oldest_first(None, usize::MAX);
        }
        self.drop_segments_oldest_first(Some(at.next()), DEAD_SEGMENTS_PER_WRITE)
    }

    /// Deletes the oldest segment if a purge left it dead (every entry in
    /// it below the first live one), before an append: a purge deletes at
    /// most [`DEAD_SEGMENTS_PER_WRITE`] itself, and the appends after it
    /// the rest, one each. A segment left on disk meanwhile is dead for
    /// recovery too: the purge's mark drops its entries (or, if a crash
    /// loses the mark, what is left is a suffix of the log, as after any
    /// crash during a purge), and recovery deletes it. A server that takes
    /// no writes after a purge keeps its dead segments until it does, or
    /// until its driver calls [`DataDir::tidy`].
    fn drop_a_dead_segment(&mut self) -> Result<(), Fail> {
        self.drop_segments_oldest_first(Some(self.first_live()), 1)
    }

    /// Log segments a purge left dead (every entry in them purged) that
    /// are still on disk: a purge deletes [`DEAD_SEGMENTS_PER_WRITE`]
    /// itself, and each later append or [`DataDir::tidy`] one more.
    pub fn dead_segments(&self) -> usize {
        let first_live = self.first_live();
        self.segments
            .windows(2)
            .take_while(|w| w[1].0 <= first_live)
            .count()
    }

    /// Deletes the oldest dead segment, if there is one (an unlink and a
    /// directory fsync), and says whether more are left: the drivers call
    /// it while no write is queued, so a server that takes no writes after
    /// a purge does not keep its dead segments until it does. A failure is
    /// fatal, as for a write: every later write fails.
    pub fn tidy(&mut self) -> Result<bool, StorageError> {
        if let Some(first) = &self.failed {
            return Err(StorageError::Failed {
                first: first.clone(),
            });
        }
        if self.dead_segments() == 0 {
            return Ok(false);
        }
        match self.drop_a_dead_segment() {
            Ok(()) => Ok(self.dead_segments() > 0),
            Err(Fail::Clean(e)) | Err(Fail::Fatal(e)) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The first index whose entry is live: the first in the log, or past
    /// the last if the log is empty.
    fn first_live(&self) -> LogIndex {
        match self.summary.entries.first_index() {
            Some(i) => i,
            None => self.summary.last_index().next(),
        }
    }

    /// Writes `purged` up to `purge_floor` if it is behind. `purged` holds
    /// the highest index whose entries were dropped, so a later, lower purge
    /// cannot bring entries back, and entries that an installed snapshot (or
    /// an older build's snapshot record) dropped stay dropped once a newer
    /// snapshot file replaces the one that said so.
    fn raise_purged(&mut self) -> Result<(), Fail> {
        if self.purge_floor <= self.purged {
            return Ok(());
        }
        // Appends before it reach the disk first: a crash never keeps a
        // purge and loses a write before it.
        self.sync_log()?;
        let at = self.purge_floor;
        self.replace_file(PURGED, &encode(WalRecord::PurgeUpTo(at)))?;
        self.purged = at;
        Ok(())
    }

    /// Deletes, oldest first, up to `max` segments whose successor starts
    /// at or below `first_live` (all their entries are dead); up to `max`
    /// of every segment when `first_live` is `None`.
    fn drop_segments_oldest_first(
        &mut self,
        first_live: Option<LogIndex>,
        max: usize,
    ) -> Result<(), Fail> {
        for _ in 0..max {
            let dead = match first_live {
                None => !self.segments.is_empty(),
                Some(live) => self.segments.len() >= 2 && self.segments[1].0 <= live,
            };
            if !dead {
                break;
            }
            let (first, _) = self.segments.remove(0);
            if self.segments.is_empty() {
                self.unsynced = false;
            }
            self.remove_segment(first)?;
        }
        Ok(())
    }

    fn persist_install(&mut self, snapshot: &Snapshot) -> Result<(), Fail> {
        let meta = &snapshot.meta;
        let keep = self.summary.term_at(meta.last_index) == Some(meta.last_term);
        self.persist_snapshot_file(snapshot, true)?;
        if keep {
            // Past the snapshot file, any failure is fatal.
            return self.purge_disk(meta.last_index, true).map_err(|f| match f {
                Fail::Clean(e) | Fail::Fatal(e) => Fail::Fatal(e),
            });
        }
        // The whole log goes, newest first: a crash leaves a prefix of it,
        // which recovery drops too (it still disagrees with the snapshot).
        self.unsynced = false;
        while let Some((first, _)) = self.segments.pop() {
            self.remove_segment(first)?;
        }
        Ok(())
    }

    fn write(&mut self, op: &PersistOp, sync: bool) -> Result<(), Fail> {
        match op {
            PersistOp::HardState(h) => {
                if sync {
                    self.sync_log()?;
                }
                // Always fsynced: a rename of an unsynced file may leave an
                // empty file after a crash, which recovery would call corrupt.
                self.replace_file(HARDSTATE, &encode(WalRecord::HardState(h.clone())))
            }
            PersistOp::Append(entries) => {
                // Before the append: on a full disk, what it frees is what
                // lets the append through.
                self.drop_a_dead_segment()?;
                self.persist_append(entries, sync)
            }
            PersistOp::TruncateFrom(at) => self.persist_truncate(*at, sync),
            PersistOp::SaveSnapshot(s) => self.persist_snapshot_file(s, false),
            PersistOp::PurgeUpTo(at) => {
                self.purge_disk(*at, false)?;
                if sync {
                    self.sync_log()?;
                }
                Ok(())
            }
            PersistOp::InstallSnapshot(s) => self.persist_install(s),
        }
    }
}

impl<F: Fs + Send> Storage for DataDir<F> {
    fn persist(&mut self, op: &PersistOp, sync: bool) -> Result<(), StorageError> {
        if let Some(first) = &self.failed {
            return Err(StorageError::Failed {
                first: first.clone(),
            });
        }
        check(&self.summary.shape(), |i| self.summary.term_at(i), op)
            .map_err(StorageError::Invalid)?;
        match self.write(op, sync) {
            Ok(()) => {
                // An append goes in as it is: the summary reads only each
                // entry's index and term, and copies nothing.
                let applied = match op {
                    PersistOp::Append(_) => self.summary.apply(op),
                    _ => self.summary.apply(&light(op)),
                };
                applied.expect("checked against the same state");
                Ok(())
            }
            Err(Fail::Clean(e)) => Err(e),
            Err(Fail::Fatal(e)) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn take_superseded(&mut self) -> Vec<PathBuf> {
        DataDir::take_superseded(self)
    }

    fn tidy(&mut self) -> Result<bool, StorageError> {
        DataDir::tidy(self)
    }
}
