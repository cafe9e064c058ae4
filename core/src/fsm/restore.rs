//! An operator's snapshot restore (`PUT /v1/snapshot`, `tern snapshot
//! restore`), carried through the log.
//!
//! A restore replaces the whole replicated state with a snapshot the
//! operator saved earlier. hashicorp/raft does it by installing the
//! snapshot on the leader at an index past its log and letting followers
//! fault into InstallSnapshot; until a quorum has it, the leader holds
//! state no quorum agreed on. Tern sends it through the log instead: the
//! snapshot is cut into [`RestoreChunk`] commands, each committed like any
//! write, and staged in the state machine; the chunk that completes it
//! swaps the state in, on every server at the same index. So a restore is
//! committed exactly when a write is, a leader lost halfway leaves the
//! state as it was, and the simulator runs it as production does.
//!
//! The staged bytes are replicated state (in the hash and the snapshot,
//! since a server may snapshot or restart halfway). A chunk at offset 0
//! starts a restore and drops any unfinished one, so a restore abandoned
//! by a client that went away costs memory only until the next starts.
//!
//! **Indexes.** Consul's raft jumps its index past the snapshot's, so every
//! index after a restore is higher than any inside it. Tern's log cannot
//! jump, so the state machine keeps an *index offset*: the index a table
//! records for the entry at Raft index `i` is `i + offset`, and a restore
//! raises the offset so that its own entry's index is past the restored
//! state's. Indexes never go backwards and the restored entries keep their
//! own; the offset is 0 on a cluster that never restored.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::hash::ItemHasher;

/// The largest chunk a client may send (each is one log entry).
pub const RESTORE_CHUNK_BYTES_MAX: usize = 1 << 20;

/// One piece of an operator's snapshot restore: bytes
/// `offset..offset + data.len()` of a snapshot `total` bytes long, for the
/// restore `id` (chosen by the client; a new id at offset 0 starts over).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestoreChunk {
    pub id: u64,
    pub offset: u64,
    pub total: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl fmt::Debug for RestoreChunk {
    /// A summary: a chunk is a megabyte of opaque bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreChunk")
            .field("id", &self.id)
            .field("offset", &self.offset)
            .field("total", &self.total)
            .field("len", &self.data.len())
            .finish()
    }
}

/// How far a restore has come, after a chunk was applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RestoreProgress {
    pub received: u64,
    pub total: u64,
    /// Set by the chunk that completed the restore: the index the restored
    /// state had (the snapshot's own).
    pub restored_index: Option<u64>,
}

/// Why a chunk was refused. Nothing is applied for a refused chunk except
/// that a restore which cannot go on any more (too long, or complete but
/// not a snapshot) is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestoreError {
    /// No restore with this id is staged (never started, replaced by a
    /// newer one, or already finished).
    NotStarted { id: u64 },
    /// The chunk does not start where the staged bytes end.
    OutOfOrder { expected: u64, got: u64 },
    /// The chunk runs past the announced total, or the total is zero.
    BadLength { total: u64, end: u64 },
    /// All bytes arrived but they are not a snapshot this release can
    /// restore; the state is unchanged.
    Invalid(String),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::NotStarted { id } => write!(
                f,
                "no snapshot restore {id:016x} is in progress (another restore replaced it, or it never started)"
            ),
            RestoreError::OutOfOrder { expected, got } => write!(
                f,
                "snapshot restore chunk at offset {got} does not follow the staged bytes (expected offset {expected})"
            ),
            RestoreError::BadLength { total, end } => write!(
                f,
                "snapshot restore chunk ends at byte {end}, past the snapshot's {total} bytes"
            ),
            RestoreError::Invalid(why) => write!(f, "snapshot restore failed: {why}"),
        }
    }
}

/// The staged bytes of an unfinished restore. Cheap to clone (the chunks
/// are shared), so a state view stays O(chunks).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PendingRestore {
    pub(crate) id: u64,
    pub(crate) total: u64,
    pub(crate) received: u64,
    pub(crate) chunks: Vec<Arc<[u8]>>,
    /// A running hash of the staged bytes, so the state hash stays O(1).
    pub(crate) digest: u64,
}

impl fmt::Debug for PendingRestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRestore")
            .field("id", &self.id)
            .field("total", &self.total)
            .field("received", &self.received)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl PendingRestore {
    pub(crate) fn new(id: u64, total: u64) -> PendingRestore {
        PendingRestore {
            id,
            total,
            received: 0,
            chunks: Vec::new(),
            digest: ItemHasher::new("restore").u64(id).u64(total).finish(),
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        self.digest = ItemHasher::new("restore-chunk")
            .u64(self.digest)
            .bytes(data)
            .finish();
        self.chunks.push(Arc::from(data));
    }

    /// Rebuilt from a snapshot: the same staged bytes give the same digest.
    pub(crate) fn from_chunks(id: u64, total: u64, chunks: Vec<Vec<u8>>) -> PendingRestore {
        let mut p = PendingRestore::new(id, total);
        for c in &chunks {
            p.push(c);
        }
        p
    }

    pub(crate) fn hash(&self) -> u64 {
        ItemHasher::new("pending-restore")
            .u64(self.received)
            .u64(self.digest)
            .finish()
    }

    pub(crate) fn progress(&self) -> RestoreProgress {
        RestoreProgress {
            received: self.received,
            total: self.total,
            restored_index: None,
        }
    }

    pub(crate) fn concat(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.received as usize);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}
