//! Raft-lite: election with pre-vote and check-quorum, pipelined replication,
//! non-voters, single-server membership changes, leadership transfer,
//! snapshots, ReadIndex.

mod types;

pub use types::{
    AppendEntries, AppendEntriesResponse, Durable, Entry, EntryPayload, HardState, InstallSnapshot,
    InstallSnapshotResponse, Member, Membership, RaftMessage, Role, Snapshot, SnapshotMeta,
    Suffrage, TimeoutNow, VoteRequest, VoteResponse,
};
