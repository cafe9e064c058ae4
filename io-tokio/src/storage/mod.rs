//! The data dir: where a server's Raft state survives a crash.
//!
//! The core says what must be durable with [`PersistOp`]s; a [`Storage`]
//! performs them. [`DataDir`] keeps them in files under `<data dir>/raft/`,
//! [`MemStorage`] keeps them in memory for `-dev`.
//!
//! # Layout of `<data dir>/raft/`
//!
//! Every file is made of records in the WAL format of
//! [`tern_core::wire::wal`] (length, crc32c, payload), so every byte read back
//! is checksummed.
//!
//! - `hardstate`: one `WalRecord::HardState`. Replaced atomically: written to
//!   `hardstate.tmp`, fsynced, renamed over `hardstate`, directory fsynced.
//! - `log-<first index, 20 digits>.wal`: log segments of `WalRecord::Append`
//!   records. Appends go to the last segment; once it holds
//!   `segment_bytes_max` bytes, the next append starts a new segment named by
//!   its first index. A conflicting append (its first index at or below the
//!   last index) deletes the segments that start at or after it and then is
//!   simply appended: replaying a segment replaces the log from each record's
//!   first index on, as [`tern_core::wire::wal::replay`] does.
//! - `snapshot-<last index, 20 digits>-<last term, 20 digits>.snap`: one
//!   `WalRecord::Snapshot { snapshot, compact_to }`, written like the hard
//!   state. The newest two are kept.
//!
//! See [`DataDir`] for the write order that keeps every crash recoverable,
//! and for the recovery rules.

mod data_dir;
mod files;
mod recovery;

use std::fmt;
use std::path::PathBuf;

use tern_core::raft::Durable;
use tern_core::PersistOp;

pub use data_dir::DataDir;

/// The default size at which a log segment is closed and a new one started.
pub const SEGMENT_BYTES_MAX: u64 = 64 << 20;

/// Why a durable write or the recovery of the data dir failed.
#[derive(Debug)]
pub enum StorageError {
    /// A corrupt record or file: the agent must refuse to start rather than
    /// guess (a torn tail of the last log segment is not this: recovery
    /// truncates it and warns).
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The operating system refused a read, write, fsync, rename or delete.
    /// After one, the data dir's files are in an unknown state: the
    /// [`DataDir`] refuses every later write, and the agent must restart
    /// (recovery then finds a consistent state).
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The op breaks the contract [`DataDir`] documents (caller misuse, a
    /// bug in the core); nothing was written.
    Invalid { reason: String },
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
            StorageError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            StorageError::Invalid { reason } => write!(f, "invalid durable write: {reason}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { error, .. } => Some(error),
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
}

/// Storage for `-dev`: the durable state lives, and dies, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStorage {
    pub durable: Durable,
}

impl Storage for MemStorage {
    fn persist(&mut self, op: &PersistOp, _sync: bool) -> Result<(), StorageError> {
        self.durable.apply(op);
        Ok(())
    }
}
