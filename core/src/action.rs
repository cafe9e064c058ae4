//! The core's inputs and outputs: plain data in, plain data out.

use crate::fsm::FsmView;
use crate::ids::{LogIndex, NodeId, RequestId, Term};
use crate::message::Message;
use crate::raft::{Entry, HardState, LogGarbage, Snapshot, SnapshotData, SnapshotMeta};
use crate::rpc::{Request, Response};

/// Something that happened, handed to [`crate::Server::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The deadline from `poll_timeout` has passed (or any time: a spurious
    /// tick is harmless).
    Tick,
    /// A message from a peer, already decoded.
    Message(Message),
    /// A request from a local client (HTTP API, CLI, simulated client). The
    /// core answers with exactly one `Action::Respond` carrying the same id.
    Request { id: RequestId, request: Request },
    /// Begin a graceful leave: transfer leadership if leader, then drain.
    Leave,
    /// A hint from the transport that this peer is gone: a connection it
    /// held open closed or was reset, or a dial was refused (what the OS
    /// reports when a process dies). Only a hint: it may be false, and the
    /// core stays safe if it is. A follower whose leader this is campaigns
    /// as soon as the leader's lease allows instead of waiting a whole
    /// election timeout, and requests forwarded to it stop waiting for it.
    Unreachable(NodeId),
    /// What the LAN gossip pool says of a server of this datacenter
    /// (serf's member status and the server's tags): what autopilot's
    /// health and dead-server cleanup go by, and what the leader reconciles
    /// the Raft configuration from (a new server joins as a non-voter, one
    /// that left is removed). The drivers' contract is in
    /// [`crate::reconcile`]. A server no status was reported for counts as
    /// alive.
    ServerMember(crate::reconcile::ServerMember),
    /// What the LAN gossip pool says of any member of this datacenter,
    /// server or client: what the leader keeps the catalog's nodes and
    /// their `serfHealth` checks in line with. The drivers' contract is in
    /// [`crate::serf_health`].
    LanMember(crate::serf_health::LanMember),
    /// Every durable write up to and including this one is on disk (and
    /// fsynced where it asked to be). Writes complete in the order the core
    /// issued them, so one id covers all before it: a driver that commits a
    /// group of writes with one fsync reports the group's last id.
    Persisted(PersistId),
    /// The disk is full (ENOSPC): the driver's current disk job could not
    /// finish and it retries it until there is room (`false` once a retry
    /// went through). Meanwhile the server takes no new writes: as leader it
    /// refuses them with `RpcError::DiskFull`, it neither campaigns nor
    /// accepts new entries, and it keeps serving reads.
    DiskFull(bool),
    /// The driver encoded the view of an [`Action::BuildSnapshot`]: `data`
    /// is `view.encode()`, `meta` the action's, unchanged. The server saves
    /// it as its own snapshot unless it is stale (a newer snapshot, such as
    /// one installed from the leader meanwhile, is never replaced by an
    /// older one) or was not asked for by this incarnation; then it is
    /// dropped.
    SnapshotBuilt { meta: SnapshotMeta, data: Vec<u8> },
    /// The bytes an [`Action::LoadSnapshot`] read back from the snapshot
    /// file its `meta` names (`meta` is the action's, unchanged), or `None`
    /// if there is no such file any more (a newer snapshot replaced it). A
    /// load of a snapshot the server no longer holds is dropped.
    SnapshotLoaded {
        meta: SnapshotMeta,
        data: Option<SnapshotData>,
    },
}

/// Names one durable write. Ids increase by one with every
/// [`Action::Persist`] a server issues, starting after 0 in each incarnation
/// (a restarted server starts again; what it recovered is durable already).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistId(pub u64);

/// A durable write. The driver performs the writes in the order of their ids
/// (fsyncing where `sync` asks) and reports [`Input::Persisted`] once they are
/// durable; it may take other inputs meanwhile.
///
/// Each op does one thing; [`crate::raft::Durable::apply`] is the one
/// interpreter that defines them and refuses an op outside this contract
/// (with [`crate::raft::PersistError`], state unchanged). "The last index" is
/// the last entry's, else the snapshot's, else 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistOp {
    /// Replace the hard state (term and vote). The term never goes down.
    HardState(HardState),
    /// Append entries. They are consecutive and the first is exactly the
    /// last index + 1: no gap, no overlap, no implicit truncation (a
    /// conflicting suffix is dropped first with `TruncateFrom`). Empty
    /// changes nothing.
    Append(Vec<Entry>),
    /// Drop every entry at or after this index: a follower's conflicting
    /// suffix (§5.3). The index is above the floor (the snapshot's last
    /// index, and the first entry's index - 1) and at most the last index.
    TruncateFrom(LogIndex),
    /// Store a server's own snapshot of its state machine. Its last entry is
    /// in the log with its term, and it is newer than the stored snapshot.
    /// The log is untouched: `PurgeUpTo` drops what it covers, later.
    SaveSnapshot(Snapshot),
    /// Drop every entry at or below this index, which is at most the stored
    /// snapshot's last index (entries behind it may be kept for slow
    /// followers). Below the first entry it changes nothing. The core asks
    /// for no fsync of it (`sync: false`): it only frees space, and a crash
    /// that undoes it loses nothing.
    PurgeUpTo(LogIndex),
    /// Store a snapshot sent by the leader, newer than the stored one. §7:
    /// if the log holds the snapshot's last entry with its term, the entries
    /// after it are kept and the rest dropped; otherwise the whole log is
    /// dropped. The interpreter decides, from the log it holds, so the op
    /// means the same whether it is applied live or replayed after a crash.
    InstallSnapshot(Snapshot),
}

/// Facts the core reports for logs, metrics and the simulator's checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    BecameLeader {
        term: Term,
    },
    SteppedDown {
        term: Term,
    },
    /// Entries up to `index` are committed; reported once per advance.
    Committed {
        index: LogIndex,
    },
    /// The state machine applied the entry at `index`; `state_hash` is the
    /// hash of the whole replicated state after it.
    Applied {
        index: LogIndex,
        term: Term,
        state_hash: u64,
    },
    SnapshotTaken {
        last_index: LogIndex,
    },
    SnapshotInstalled {
        last_index: LogIndex,
    },
    /// This server has been removed from the configuration.
    Removed,
    /// The leave that `Input::Leave` started is complete: leadership was
    /// handed over, requests failed fast for `leave_drain_time`, and (with
    /// other voters) the leader removed this server from the configuration
    /// or `RAFT_REMOVE_GRACE` passed waiting for it. The
    /// server keeps failing every request fast; the driver stops it (the
    /// daemon exits 0, as Consul's agent does after a leave).
    Left,
    /// The server cannot go on safely (a snapshot from the leader that its
    /// state machine cannot restore): it ignores every later input, and the
    /// driver must stop it, saying why. Restarting it from its data dir
    /// stops again, naming the snapshot, until an operator intervenes.
    Fatal {
        reason: String,
    },
    /// A message from `from` was refused: no honest peer could have sent it
    /// to a server in this state (`raft/validate.rs`). Nothing changed; the
    /// driver should close the connection it came on and log `reason`.
    PeerMessageRefused {
        from: NodeId,
        reason: String,
    },
    /// Autopilot proposed a promotion or a removal, or declined one.
    Autopilot(crate::autopilot::AutopilotEvent),
    /// The leader proposed a change that brings the configuration in line
    /// with gossip, or declined one (`crate::reconcile`).
    Reconcile(crate::reconcile::ReconcileEvent),
}

/// What the core asks its driver to do.
///
/// Durability is explicit: a `Persist` has an id, and a `Send` that may only
/// leave once a write is durable names it in `after` (a follower's
/// acknowledgement of entries, a vote). Everything else may run at once, in
/// the order given, while writes are still in flight: a leader's
/// AppendEntries go out in parallel with its own fsync (Raft §10.2.1), and a
/// reply to a client reflects only committed state, which a quorum holds
/// durably. [`crate::Outbox`] is the one place that applies these rules; every
/// driver runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Persist {
        id: PersistId,
        op: PersistOp,
        sync: bool,
    },
    /// Send to a peer; `address` is where the peer's server port is. Not
    /// before the write `after` names is durable.
    Send {
        address: String,
        message: Message,
        after: Option<PersistId>,
    },
    /// Answer a local client's request.
    Respond {
        id: RequestId,
        response: Response,
    },
    Event(Event),
    /// Encode `view` ([`FsmView::encode`]) off the agent task, so requests
    /// are served meanwhile, and report the bytes with
    /// [`Input::SnapshotBuilt`] and the same `meta`. The server asks for at
    /// most one at a time. A driver that restarts the server drops it.
    BuildSnapshot {
        meta: SnapshotMeta,
        view: FsmView,
    },
    /// Read back the bytes of the snapshot `meta` names (its file in the
    /// data dir) off the agent task and answer [`Input::SnapshotLoaded`]
    /// with the same `meta`. A server keeps its snapshot's bytes in memory
    /// only while it streams them to a follower: once written they are the
    /// file's, and a state of gigabytes is not held twice. `stored_by` is
    /// the write that stores that file; the [`crate::Outbox`] releases the
    /// action only once that write and every write before it is durable
    /// (`PersistId(0)`: the snapshot was recovered from disk). A read that
    /// finds the file damaged is the driver's fatal storage error, naming
    /// the file and offset, as at startup.
    LoadSnapshot {
        meta: SnapshotMeta,
        stored_by: PersistId,
    },
    /// Free these entries, which the log no longer holds, wherever freeing
    /// costs no request its latency: the daemon hands them to its snapshot
    /// thread. Dropping them at once is correct too (the simulator does);
    /// nothing reads them again.
    Discard(LogGarbage),
}

impl Action {
    pub fn send_to(&self) -> Option<NodeId> {
        match self {
            Action::Send { message, .. } => Some(message.to),
            _ => None,
        }
    }
}
