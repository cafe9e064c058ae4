//! Why a snapshot was refused.

use std::fmt;

/// Why `Fsm::restore` refused a snapshot. Every variant is bad input (a
/// corrupt or foreign snapshot); restore builds a new `Fsm`, so no existing
/// state is ever changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsmError {
    /// No bytes at all.
    Empty,
    /// A version byte this release cannot read.
    UnsupportedVersion(u8),
    /// The body is not a postcard encoding of the snapshot struct
    /// (truncated, bad varint, invalid UTF-8, ...).
    Malformed(postcard::Error),
    /// This many bytes followed a complete snapshot.
    TrailingBytes(usize),
    /// The KV table index is above the last applied Raft index.
    KvIndexBeyondLastApplied { kv_index: u64, last_applied: u64 },
    /// KV entries are not in strictly increasing key order (unsorted or a
    /// duplicate); `key` is the first out of place.
    KvKeysUnordered { key: String },
    /// An entry breaks `0 < create_index <= modify_index <= kv index`.
    KvEntryIndexes { key: String },
    /// Tombstones are not in strictly increasing key order.
    KvTombstonesUnordered { key: String },
    /// A tombstone's index is 0 or above the KV table index, or its key is
    /// also a live entry.
    KvTombstoneInvalid { key: String },
    /// Another table breaks an invariant `apply` keeps.
    Invalid(String),
}

impl fmt::Display for FsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsmError::Empty => write!(f, "snapshot is empty"),
            FsmError::UnsupportedVersion(v) => write!(f, "unsupported snapshot version {v}"),
            FsmError::Malformed(e) => write!(f, "malformed snapshot: {e}"),
            FsmError::TrailingBytes(n) => write!(f, "{n} trailing bytes after snapshot"),
            FsmError::KvIndexBeyondLastApplied {
                kv_index,
                last_applied,
            } => write!(
                f,
                "KV index {kv_index} is beyond last applied index {last_applied}"
            ),
            FsmError::KvKeysUnordered { key } => write!(f, "KV key {key:?} is out of order"),
            FsmError::KvEntryIndexes { key } => {
                write!(f, "KV key {key:?} has inconsistent indexes")
            }
            FsmError::KvTombstonesUnordered { key } => {
                write!(f, "KV tombstone {key:?} is out of order")
            }
            FsmError::KvTombstoneInvalid { key } => write!(f, "KV tombstone {key:?} is invalid"),
            FsmError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for FsmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FsmError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}
