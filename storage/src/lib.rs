//! Tern's data dir: where a server's Raft state survives a crash, written
//! once for both drivers.
//!
//! # Why a crate of its own
//!
//! What is written where (segments, hard state, snapshot files) and how
//! recovery reads it back must be one code path for the daemon (io-tokio)
//! and the simulator (io-sim), or the simulator tests a data dir nobody
//! runs. It cannot live in `tern-core`, which stays free of even the idea of
//! files (no I/O, no paths, nothing that could block), nor in a driver,
//! which the other driver must not depend on. So it sits between them: it
//! depends only on `tern-core`, performs the core's [`PersistOp`]s through a
//! small filesystem trait ([`Fs`]), and the drivers only choose how bytes
//! move: [`StdFs`] (real files) in the daemon, [`SimFs`] (in memory, with
//! crashes and injected faults) in the simulator and the property tests.
//! No tokio, no madsim: every call is synchronous; a driver runs it where
//! blocking is fine (io-tokio's disk thread) and sleeps the latency SimFs
//! reports (io-sim).
//!
//! # Layout of `<data dir>/raft/`
//!
//! Every file is made of records in the WAL format of
//! [`tern_core::wire::wal`] (length, crc32c, payload), so every byte read back
//! is checksummed.
//!
//! - `hardstate`: one `WalRecord::HardState`. Replaced atomically: written to
//!   `hardstate.tmp`, fsynced, renamed over `hardstate`, directory fsynced.
//! - `log-<first index, 20 digits>.wal`: log segments of `Append`,
//!   `TruncateFrom`, `PurgeUpTo` (purge marks, after the first append) and
//!   (from older builds) overlapping `Append` records.
//!   Appends go to the last segment; once it holds `segment_bytes_max`
//!   bytes, the next append starts a new segment named by its first index.
//! - `snapshot-<last index, 20 digits>-<last term, 20 digits>.snap`: one
//!   `SaveSnapshot` or `InstallSnapshot` record (or an older build's
//!   `Snapshot { snapshot, compact_to }`), written like the hard state. The
//!   newest two are kept.
//! - `purged`: one `PurgeUpTo` record, an index whose entries were dropped,
//!   written like the hard state, only when a mark in the log would not do:
//!   an installed snapshot that kept the log after it (a newer snapshot file
//!   will replace the one that says so), entries an older build's snapshot
//!   record dropped, a truncation deleting the segment that holds the mark.
//!   A plain purge writes its mark into the log instead (one record, no
//!   fsync of its own). Recovery applies the highest of the file and the
//!   marks last, so entries the first segment still holds below the live
//!   log never come back, whichever snapshot file is newest.
//!
//! See [`DataDir`] for the write order that keeps every crash recoverable,
//! the recovery rules, and what an I/O error does.

mod data_dir;
mod files;
pub mod fs;
mod recovery;
pub mod sim_fs;

use std::fmt;
use std::path::PathBuf;

use tern_core::raft::{Durable, PersistError};
use tern_core::PersistOp;

pub use data_dir::{
    remove_superseded, write_snapshot_file, DataDir, SnapshotLane, DEAD_SEGMENTS_PER_WRITE,
};
pub use fs::{Fs, FsError, FsOp, StdFs, EIO, ENOSPC};
pub use recovery::read_snapshot_data;
pub use sim_fs::{CrashReport, FaultRates, SimFs, SimFsStats};

/// The default size at which a log segment is closed and a new one started.
///
/// 16 MiB, not the 64 MiB of Consul's raft-wal and etcd: a purge deletes
/// whole segments on the log lane, in order, each unlink followed by a
/// directory fsync, and appends wait meanwhile. Freeing a segment's blocks
/// costs about 0.6 ms per MiB on the project's VM (ext4 with `discard`): a
/// 64 MiB segment held the log lane for 30-100 ms under load, the worst
/// latency of `bench/snapshot-stall.sh` (see the README). Smaller segments
/// spread the same work into stalls a quarter as long.
pub const SEGMENT_BYTES_MAX: u64 = 16 << 20;

/// Why a durable write or the recovery of the data dir failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// A corrupt record or file: the agent must refuse to start rather than
    /// guess (a torn tail of the last log segment is not this: recovery
    /// truncates it and warns).
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The device is full (ENOSPC) while writing `path`. Nothing that was
    /// durable is damaged and the partial write was cut back: the
    /// [`DataDir`] takes writes again once there is room. The agent refuses
    /// writes with this error and keeps serving reads.
    NoSpace { path: PathBuf },
    /// The filesystem refused a read, write, fsync, rename or removal (the
    /// error names the file, the move and the errno). Fatal: the files are
    /// in an unknown state (after a failed fsync the kernel may have dropped
    /// the unwritten pages, so a retry that "succeeds" proves nothing: the
    /// PostgreSQL fsync lesson). The [`DataDir`] refuses every later write
    /// with [`StorageError::Failed`]; the agent must restart, and recovery
    /// finds a consistent state.
    Io(FsError),
    /// An earlier write failed fatally (it is named); nothing was written.
    Failed { first: String },
    /// The op breaks the contract of [`PersistOp`] (a bug in the core);
    /// nothing was written.
    Invalid(PersistError),
}

impl From<FsError> for StorageError {
    fn from(e: FsError) -> StorageError {
        if e.is_no_space() {
            StorageError::NoSpace { path: e.path }
        } else {
            StorageError::Io(e)
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "{}: corrupt record at offset {offset}: {reason}",
                file.display()
            ),
            StorageError::NoSpace { path } => write!(
                f,
                "{}: no space left on device; writes are refused until there is room",
                path.display()
            ),
            StorageError::Io(e) => write!(f, "{e}"),
            StorageError::Failed { first } => write!(
                f,
                "the data dir refuses writes after an earlier failure ({first}); restart to \
                 recover"
            ),
            StorageError::Invalid(e) => write!(f, "invalid durable write: {e}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io(e) => Some(e),
            StorageError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// Somewhere to perform the core's durable writes.
pub trait Storage: Send {
    /// Perform one durable write exactly as [`PersistOp`] documents. If
    /// `sync`, it is on disk (fsynced) when this returns, and so is every
    /// write before it.
    fn persist(&mut self, op: &PersistOp, sync: bool) -> Result<(), StorageError>;

    /// Files the storage no longer needs, for the driver to delete beside
    /// the log with [`SnapshotLane::remove_superseded`] (old snapshot
    /// files, one of which it may keep to overwrite: see
    /// [`DataDir::take_superseded`]). None by default.
    fn take_superseded(&mut self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Housekeeping for an idle disk: deletes one file a purge left dead
    /// (a log segment all of whose entries are purged; see
    /// [`DataDir::tidy`]), if there is one. Returns whether more are left.
    /// Drivers call it while no write waits, so a server that stops taking
    /// writes after a snapshot still gives the space back. A failure is
    /// fatal, as for a durable write. Nothing to do by default.
    fn tidy(&mut self) -> Result<bool, StorageError> {
        Ok(false)
    }
}

/// Storage for `-dev`: the durable state lives, and dies, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStorage {
    pub durable: Durable,
}

impl Storage for MemStorage {
    fn persist(&mut self, op: &PersistOp, _sync: bool) -> Result<(), StorageError> {
        self.durable.apply(op).map_err(StorageError::Invalid)
    }
}
