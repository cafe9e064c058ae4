//! Client requests and their replies: what the HTTP API, the CLI and the
//! simulator's clients ask of a server, and what servers forward to the leader.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Duration;
use crate::fsm::{
    ApplyResult, Check, CheckServiceNode, Deregister, DirEntry, KvCommand, KvEntry, Node,
    NodeServices, Register, ServiceInstance, Session,
};
use crate::ids::{Datacenter, NodeId, NodeName};

/// Consul's read consistency modes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadMode {
    /// Served by the leader while its lease holds (else via ReadIndex).
    #[default]
    Default,
    /// Served by any server that has heard from a leader; may lag.
    Stale,
    /// Linearizable: the leader confirms its leadership with a quorum first (ReadIndex).
    Consistent,
}

/// What is being asked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    KvGet {
        key: String,
    },
    /// Every entry whose key starts with `prefix` (`?recurse`).
    KvList {
        prefix: String,
    },
    /// Keys under `prefix`, rolled up at the first `separator` after it (`?keys`).
    KvKeys {
        prefix: String,
        separator: Option<String>,
    },
    /// A write: goes through the log.
    KvApply(KvCommand),
    /// `/v1/status/leader`.
    StatusLeader,
    /// `/v1/status/peers`: voters' addresses.
    StatusPeers,
    /// `/v1/operator/raft/configuration`.
    RaftConfiguration,
    /// Add a server to the configuration as a non-voter.
    RaftAddNonvoter {
        id: NodeId,
        name: NodeName,
        address: String,
    },
    /// Make a non-voter a voter.
    RaftPromote {
        id: NodeId,
    },
    /// `DELETE /v1/operator/raft/peer?id=` (or `address=`).
    RaftRemovePeer {
        id: Option<NodeId>,
        address: Option<String>,
    },
    /// Hand leadership to `to`, or to the most up-to-date voter.
    RaftTransferLeadership {
        to: Option<NodeId>,
    },
    /// `/v1/operator/autopilot/health` and `/state`: the leader's last
    /// health sample (always answered by the leader, as Consul's
    /// `Operator.ServerHealth`).
    AutopilotHealth,
    /// `GET /v1/operator/autopilot/configuration`: the stored configuration
    /// (Consul's `Operator.AutopilotGetConfiguration`).
    AutopilotGetConfig,
    /// `PUT /v1/operator/autopilot/configuration` (`?cas=` sets `cas`).
    AutopilotSetConfig {
        config: crate::autopilot::AutopilotConfig,
        cas: Option<u64>,
    },
    /// The catalog: `/v1/catalog/...`.
    Catalog(CatalogOp),
    /// `PUT /v1/snapshot`: one chunk of an operator's restore, a write
    /// through the log (see `fsm/restore.rs`).
    SnapshotRestore(crate::fsm::RestoreChunk),
    /// `GET /v1/snapshot`, first step: the index of the state to save,
    /// read as any read is (from the leader unless `?stale`); the agent
    /// then saves its own state once it has applied that far.
    SnapshotIndex,
    /// `PUT /v1/txn`: a write through the log if any operation writes,
    /// otherwise a read in the request's consistency mode.
    Txn(Vec<crate::fsm::TxnOp>),
    /// `PUT /v1/session/create`: the leader draws the ID and proposes it.
    SessionCreate(Box<Session>),
    /// `PUT /v1/session/destroy/<id>`: a write.
    SessionDestroy {
        id: String,
    },
    /// `PUT /v1/session/renew/<id>`: answered by the leader from its state,
    /// resetting the session's TTL timer (Consul's `Session.Renew`: no
    /// log write); an empty list when there is no such session.
    SessionRenew {
        id: String,
    },
    /// `GET /v1/session/info/<id>`.
    SessionInfo {
        id: String,
    },
    /// `GET /v1/session/node/<node>`.
    SessionNode {
        node: String,
    },
    /// `GET /v1/session/list`.
    SessionList,
}

/// A catalog operation (Consul's `Catalog.*` RPCs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogOp {
    /// `PUT /v1/catalog/register`: a write, through the log.
    Register(Box<Register>),
    /// `PUT /v1/catalog/deregister`: a write, through the log.
    Deregister(Deregister),
    /// `GET /v1/catalog/nodes[?node-meta=k:v]`.
    Nodes { node_meta: BTreeMap<String, String> },
    /// `GET /v1/catalog/services[?node-meta=k:v]`.
    Services { node_meta: BTreeMap<String, String> },
    /// `GET /v1/catalog/service/<service>[?tag=..][&node-meta=k:v]`.
    ServiceNodes {
        service: String,
        tags: Vec<String>,
        node_meta: BTreeMap<String, String>,
    },
    /// `GET /v1/catalog/node/<node>` and `/v1/catalog/node-services/<node>`.
    NodeServices { node: String },
    /// `GET /v1/health/node/<node>`: the node's checks.
    NodeChecks { node: String },
    /// `GET /v1/health/checks/<service>`: the service's checks.
    ServiceChecks {
        service: String,
        node_meta: BTreeMap<String, String>,
    },
    /// `GET /v1/health/state/<state>`: checks by status (`any`: all).
    ChecksInState {
        state: String,
        node_meta: BTreeMap<String, String>,
    },
    /// `GET /v1/health/service/<service>`: instances with their checks
    /// (`?passing` is the HTTP layer's filter, as in Consul).
    ServiceHealth {
        service: String,
        tags: Vec<String>,
        node_meta: BTreeMap<String, String>,
    },
    /// `GET /v1/catalog/services?filter=`: every service instance (on
    /// nodes whose meta matches), for the HTTP layer to filter as
    /// `ServiceNode`s and fold into names and tags; the index is the
    /// `Services` read's.
    ServiceInstances { node_meta: BTreeMap<String, String> },
}

impl CatalogOp {
    pub fn is_write(&self) -> bool {
        match self {
            CatalogOp::Register(_) | CatalogOp::Deregister(_) => true,
            CatalogOp::Nodes { .. }
            | CatalogOp::Services { .. }
            | CatalogOp::ServiceInstances { .. }
            | CatalogOp::ServiceNodes { .. }
            | CatalogOp::NodeServices { .. }
            | CatalogOp::NodeChecks { .. }
            | CatalogOp::ServiceChecks { .. }
            | CatalogOp::ChecksInState { .. }
            | CatalogOp::ServiceHealth { .. } => false,
        }
    }
}

/// What a catalog read answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogReply {
    Nodes(Vec<Node>),
    /// Service name -> the union of its instances' tags.
    Services(BTreeMap<String, Vec<String>>),
    ServiceNodes(Vec<ServiceInstance>),
    /// `None`: no such node. Boxed: a node is the largest reply part.
    NodeServices(Option<Box<NodeServices>>),
    Checks(Vec<Check>),
    ServiceHealth(Vec<CheckServiceNode>),
}

impl Op {
    /// Whether this op changes replicated state (and so goes to the leader
    /// and through the log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::KvApply(_)
                | Op::RaftAddNonvoter { .. }
                | Op::RaftPromote { .. }
                | Op::RaftRemovePeer { .. }
                | Op::RaftTransferLeadership { .. }
                | Op::AutopilotSetConfig { .. }
                | Op::SnapshotRestore(_)
                | Op::SessionCreate(_)
                | Op::SessionDestroy { .. }
        ) || matches!(self, Op::Catalog(c) if c.is_write())
            || matches!(self, Op::Txn(ops) if ops.iter().any(|op| op.is_write()))
    }
}

/// A blocking query: wait until the index moves past `min_index`, at most `max_wait`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Blocking {
    pub min_index: u64,
    pub max_wait: Duration,
}

/// A request to a server.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The datacenter it is for. Only the server's own is served in this release.
    pub datacenter: Datacenter,
    pub read_mode: ReadMode,
    pub blocking: Option<Blocking>,
    pub op: Op,
}

/// One server as `/v1/operator/raft/configuration` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RaftServer {
    pub id: NodeId,
    pub node: NodeName,
    pub address: String,
    pub leader: bool,
    pub voter: bool,
}

/// The body of a successful reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplyBody {
    Kv(Option<KvEntry>),
    KvList(Vec<KvEntry>),
    Keys(Vec<String>),
    Applied(ApplyResult),
    /// The leader's server address, if one is known.
    Leader(Option<String>),
    Peers(Vec<String>),
    Configuration {
        servers: Vec<RaftServer>,
        index: u64,
    },
    /// An operator action that returns nothing.
    Done,
    AutopilotHealth(crate::autopilot::HealthReply),
    /// Autopilot's configuration; indexes 0 if none is stored yet (the
    /// agent's own, which the leader stores in its first term).
    AutopilotConfig(crate::fsm::StoredAutopilot),
    Catalog(CatalogReply),
    /// A transaction of reads alone (Consul's `Txn.Read`); a transaction
    /// with a write is answered `Applied(ApplyResult::Txn(..))`.
    Txn(crate::fsm::TxnOutcome),
    /// A KV read with each entry's lock holder (what servers answer since
    /// sessions exist; `Kv`/`KvList` are older builds').
    Entry(Option<DirEntry>),
    Entries(Vec<DirEntry>),
    /// Session reads and renew.
    Sessions(Vec<Session>),
}

/// A successful reply with the metadata Consul puts in its headers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reply {
    /// `X-Consul-Index`: never 0.
    pub index: u64,
    /// `X-Consul-KnownLeader`.
    pub known_leader: bool,
    /// `X-Consul-LastContact`, milliseconds since the server last heard from
    /// the leader (0 on the leader).
    pub last_contact_ms: u64,
    pub body: ReplyBody,
}

/// Why a request failed. `Display` gives the text Consul clients match on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RpcError {
    /// `No cluster leader`: no leader within the hold timeout, or this server is draining.
    NoLeader,
    /// `Not ready to serve consistent reads`.
    NotReadyForConsistentReads,
    /// `No path to datacenter`.
    NoPathToDatacenter,
    /// The request broke a limit; the text names it.
    TooLarge(String),
    /// A malformed or impossible request; the text says why.
    BadRequest(String),
    /// A queue is full; try again later.
    Busy,
    /// The outcome is unknown: the request may or may not have been applied
    /// (leadership was lost, or a forwarded request got no answer).
    Unknown(String),
    /// The leader's data dir is full (ENOSPC): it refuses writes, and
    /// nothing was applied, until there is room; reads are still served.
    DiskFull,
    /// `No known Consul servers`: a client agent knows no server to ask
    /// (Consul's `structs.ErrNoServers`). Only a client agent says it; no
    /// server sends it.
    NoServers,
    /// The server refused the request with a plain error, as Consul's RPC
    /// handlers do (`Must provide node`): nothing was applied. Consul's
    /// HTTP API answers these 500 with the text as it is.
    Refused(String),
}

impl core::fmt::Display for RpcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RpcError::NoLeader => f.write_str("No cluster leader"),
            RpcError::NotReadyForConsistentReads => {
                f.write_str("Not ready to serve consistent reads")
            }
            RpcError::NoPathToDatacenter => f.write_str("No path to datacenter"),
            RpcError::TooLarge(s) | RpcError::BadRequest(s) | RpcError::Refused(s) => {
                f.write_str(s)
            }
            RpcError::Busy => f.write_str("Server is busy, try again later"),
            RpcError::Unknown(s) => write!(f, "outcome unknown: {s}"),
            RpcError::DiskFull => f.write_str(
                "No space left on device: the leader's data dir is full; writes are refused until there is room",
            ),
            RpcError::NoServers => f.write_str("No known Consul servers"),
        }
    }
}

/// The answer to a [`Request`].
pub type Response = Result<Reply, RpcError>;
