//! The data Raft keeps and sends: log entries, membership, hard state,
//! snapshots, and the peer messages of the Raft paper (§5, §6, §7; thesis §4.2.3
//! for pre-vote, §3.10 for leadership transfer, §6.4 for ReadIndex).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fsm::Command;
use crate::ids::{LogIndex, NodeId, NodeName, Term};

/// Whether a server votes and counts toward commit (Raft protocol 3: new
/// servers join as non-voters and are promoted).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Suffrage {
    Voter,
    Nonvoter,
}

/// One server in the Raft configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub name: NodeName,
    /// Where to reach its server port: `host:port`, or a simulator address.
    pub address: String,
    pub suffrage: Suffrage,
}

/// The Raft configuration: every server that replicates the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    pub servers: BTreeMap<NodeId, Member>,
}

impl Membership {
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.servers
            .get(&id)
            .is_some_and(|m| m.suffrage == Suffrage::Voter)
    }
    pub fn contains(&self, id: NodeId) -> bool {
        self.servers.contains_key(&id)
    }
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.servers
            .iter()
            .filter(|(_, m)| m.suffrage == Suffrage::Voter)
            .map(|(id, _)| *id)
    }
    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }
    /// Votes or acknowledgements needed for a majority of voters.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader so it can commit in its own term (§5.4.2, §8).
    Noop,
    /// A state-machine command, shared rather than copied as the entry
    /// travels to each follower (encoded exactly like a bare `Command`).
    Command(std::sync::Arc<Command>),
    /// A new configuration, in effect as soon as it is appended (thesis §4.1).
    Membership(Membership),
}

/// One Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

/// What must survive a crash besides the log (Figure 2, "persistent state").
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

/// Describes a snapshot: the last entry it covers and the configuration then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    pub membership: Membership,
}

/// A snapshot of the state machine with its metadata (§7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    /// The state machine's own encoding (see `fsm::Fsm::snapshot`), shared:
    /// the node keeps the snapshot it persists (to send to followers) and
    /// the driver writes it, and a state of many megabytes must not be
    /// copied on the agent task for that. Encoded as plain bytes.
    #[serde(with = "shared_bytes")]
    pub data: SnapshotData,
}

/// A snapshot's bytes, shared rather than copied ([`Snapshot::data`]).
pub type SnapshotData = Arc<Vec<u8>>;

/// Serde for [`SnapshotData`]: the same encoding as `serde_bytes` on a
/// `Vec<u8>`, so nothing written or sent changes.
mod shared_bytes {
    use super::SnapshotData;
    use serde::{Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(data: &SnapshotData, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(data.as_slice(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SnapshotData, D::Error> {
        let bytes: serde_bytes::ByteBuf = serde::Deserialize::deserialize(d)?;
        Ok(Arc::new(bytes.into_vec()))
    }
}

/// RequestVote, and the pre-vote that precedes it (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoteRequest {
    /// For a pre-vote, the term the candidate *would* campaign in.
    pub term: Term,
    pub last_log_index: LogIndex,
    pub last_log_term: Term,
    pub pre_vote: bool,
    /// Sent after `TimeoutNow`: voters grant even though they heard from a
    /// leader recently (thesis §3.10).
    pub leadership_transfer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoteResponse {
    pub term: Term,
    pub granted: bool,
    pub pre_vote: bool,
}

/// AppendEntries (§5.3). Also the heartbeat, and the quorum check behind ReadIndex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendEntries {
    pub term: Term,
    pub prev_log_index: LogIndex,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: LogIndex,
    /// Increases with every AppendEntries or InstallSnapshot the leader sends
    /// in this term; echoed back so a ReadIndex round knows which heartbeat a
    /// follower answered.
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    pub term: Term,
    pub success: bool,
    /// On success, the index of the last entry now known to match the
    /// leader's. On failure, a hint: the follower's last log index, so the
    /// leader can jump back rather than step one entry at a time.
    pub match_index: LogIndex,
    pub seq: u64,
}

/// InstallSnapshot (§7), sent whole in one message. Still understood, but a
/// leader now sends `InstallSnapshotChunk`s.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstallSnapshot {
    pub term: Term,
    pub snapshot: Snapshot,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    pub term: Term,
    /// The last index now in the follower's log or snapshot.
    pub last_index: LogIndex,
    pub seq: u64,
}

/// One piece of a snapshot on its way to a follower (§7's `offset`/`done`
/// fields, made resumable). A leader streams its snapshot in pieces of at
/// most `snapshot_chunk_bytes`, so a state of any size reaches a follower
/// through frames of bounded size. Every piece names the whole snapshot
/// (its metadata, size and crc32c), so a follower can tell a piece of
/// another snapshot, and checks the whole before installing it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstallSnapshotChunk {
    pub term: Term,
    pub meta: SnapshotMeta,
    /// The snapshot's size in bytes and the crc32c of all of them.
    pub total_bytes: u64,
    pub crc32c: u32,
    /// Where `data` starts in the snapshot.
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub seq: u64,
}

/// A follower's answer to a piece: how much of the snapshot at
/// `snapshot_index` it holds, so the leader resumes from there (after a lost
/// piece or a restart) rather than from the start.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstallSnapshotChunkResponse {
    pub term: Term,
    /// The snapshot the answer is about.
    pub snapshot_index: LogIndex,
    /// The next byte it wants: the total size once it is installed (or if
    /// it already holds everything the snapshot covers).
    pub next_offset: u64,
    /// The last index in its log or snapshot, as `InstallSnapshotResponse`.
    pub last_index: LogIndex,
    pub seq: u64,
}

/// Tells a caught-up follower to campaign at once (leadership transfer, thesis §3.10).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeoutNow {
    pub term: Term,
}

/// Every message Raft peers exchange.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RaftMessage {
    VoteRequest(VoteRequest),
    VoteResponse(VoteResponse),
    AppendEntries(AppendEntries),
    AppendEntriesResponse(AppendEntriesResponse),
    InstallSnapshot(InstallSnapshot),
    InstallSnapshotResponse(InstallSnapshotResponse),
    TimeoutNow(TimeoutNow),
    InstallSnapshotChunk(InstallSnapshotChunk),
    InstallSnapshotChunkResponse(InstallSnapshotChunkResponse),
}

impl RaftMessage {
    pub fn term(&self) -> Term {
        match self {
            RaftMessage::VoteRequest(m) => m.term,
            RaftMessage::VoteResponse(m) => m.term,
            RaftMessage::AppendEntries(m) => m.term,
            RaftMessage::AppendEntriesResponse(m) => m.term,
            RaftMessage::InstallSnapshot(m) => m.term,
            RaftMessage::InstallSnapshotResponse(m) => m.term,
            RaftMessage::TimeoutNow(m) => m.term,
            RaftMessage::InstallSnapshotChunk(m) => m.term,
            RaftMessage::InstallSnapshotChunkResponse(m) => m.term,
        }
    }
}

/// What a server recovered from its disk: the input to `Server::new`.
///
/// `L` is what it keeps of the log's entries: all of them (`Vec<Entry>`,
/// the default, what a server starts from), or only their terms
/// ([`TermRuns`](super::TermRuns): a data dir's summary of what it holds,
/// whose memory grows with the number of terms, not of entries). Both are
/// changed by the one interpreter, [`Durable::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable<L = Vec<Entry>> {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot (or from index 1), contiguous.
    pub entries: L,
}

/// A server's Raft role. `PreCandidate` is the pre-vote phase.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}
