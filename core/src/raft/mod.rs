//! Raft-lite: election with pre-vote and check-quorum, pipelined replication,
//! non-voters, single-server membership changes, leadership transfer,
//! snapshots, ReadIndex and leader leases.

mod log;
mod node;
mod persist;
mod progress;
mod types;
mod validate;

pub use log::{LogGarbage, RaftLog, CHUNK_ENTRIES};
pub use node::{ProposeError, Raft};
pub use persist::{
    check, check_append, check_newer, check_purge, check_truncate, LogEntries, LogShape,
    PersistError, TermRuns,
};
pub use progress::{Progress, ReplState};
pub use types::{
    AppendEntries, AppendEntriesResponse, Durable, Entry, EntryPayload, HardState, InstallSnapshot,
    InstallSnapshotChunk, InstallSnapshotChunkResponse, InstallSnapshotResponse, Member,
    Membership, RaftMessage, Role, Snapshot, SnapshotData, SnapshotMeta, Suffrage, TimeoutNow,
    VoteRequest, VoteResponse,
};
