//! The agent: one task owns the `Server`; everything else talks to it
//! through an [`AgentHandle`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tern_core::gossip::Member;
use tern_core::reconcile::ServerMember;
use tern_core::rpc::{Request, Response};
use tern_core::{Config, LogIndex, NodeId, Term};

/// Everything an agent needs to start (built by `config`).
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The core's configuration (node id and name, datacenter, timings,
    /// limits). `config.address` is the advertised server-port address.
    pub core: Config,
    /// `None` keeps everything in memory (`-dev`).
    pub data_dir: Option<PathBuf>,
    pub http_addr: SocketAddr,
    pub server_addr: SocketAddr,
    /// The LAN gossip pool (Consul's `serf_lan`, 8301).
    pub lan: PoolOptions,
    /// The WAN gossip pool of a server (`serf_wan`, 8302); `None` when
    /// `ports.serf_wan = -1`.
    pub wan: Option<PoolOptions>,
    /// Bootstrap once this many servers (counting this one) are known; 0: never.
    pub bootstrap_expect: usize,
    pub dev: bool,
    /// `server = true` (`-server`, `-dev`): run Raft ([`start`]). `false`: a
    /// client agent ([`start_client`]) that forwards every request to the
    /// servers and binds no server port.
    pub server: bool,
    /// TLS on the server port (and the HTTPS API): the settings; the files
    /// are read when the agent starts.
    pub tls: crate::tls::TlsOptions,
    /// Services and checks from the agent's config files (`service {}`,
    /// `check {}`): registered with the local agent at start, not
    /// persisted (the config is their source).
    pub services: Vec<tern_core::local::ServiceDef>,
    pub checks: Vec<tern_core::local::CheckDef>,
    /// Gossip encryption (`encrypt`, `encrypt_verify_*`).
    pub encrypt: crate::keyring::EncryptOptions,
    /// Connections per client IP on the server port and the HTTP API.
    pub limits: crate::connlimit::ConnLimits,
    /// `node_meta` (`-node-meta key:value`): the node's `Meta` in the
    /// catalog, kept there by anti-entropy; validated as Consul does.
    pub node_meta: tern_core::fsm::Meta,
}

/// Where one gossip pool listens and whom it joins (Consul's `start_join`,
/// `retry_join`, `retry_interval`, `retry_max` and their `_wan` twins).
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// UDP and TCP are bound here; port 0 lets the OS pick (tests).
    pub bind: SocketAddr,
    /// The gossip address other members reach this one at.
    pub advertise: SocketAddr,
    /// Joined once at start; the agent does not start if none answers (`-join`).
    pub start_join: Vec<String>,
    /// Joined in the background, every `retry_interval`, with up to
    /// `retry_max` retries after the first attempt (0: forever), each failure
    /// logged at warn (`-retry-join`).
    pub retry_join: Vec<String>,
    pub retry_interval: tern_core::Duration,
    pub retry_max: u32,
}

/// A point-in-time view of the agent for `/v1/agent/self`, `/v1/status/*`
/// and the CLI.
#[derive(Clone, Debug, Default)]
pub struct AgentStatus {
    pub node_id: NodeId,
    pub node_name: String,
    pub datacenter: String,
    pub server_addr: String,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
    /// "Leader", "Follower", "Candidate", "PreCandidate".
    pub role: String,
    pub term: Term,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub last_log_index: LogIndex,
    /// Milliseconds since the leader was last heard from (0 on the leader).
    pub last_contact_ms: u64,
    /// The other voters (hashicorp/raft's `num_peers` stat).
    pub num_peers: usize,
    pub known_leader: bool,
    /// A client agent (`server = false`): no Raft; the Raft fields are empty.
    pub client: bool,
}

/// How the rest of the process talks to the agent task. Cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    pub(crate) inner: Arc<HandleInner>,
}

pub(crate) struct HandleInner {
    pub(crate) tx: tokio::sync::mpsc::Sender<ToAgent>,
    pub(crate) options: AgentOptions,
    /// Set once the agent's leave is complete (`Event::Left`): the process
    /// exits on it.
    pub(crate) left: Arc<tokio::sync::watch::Sender<bool>>,
    /// The gossip pools; `None` for a [`AgentHandle::detached`] handle and a
    /// client agent fed its servers by a test ([`start_client`]).
    pub(crate) pools: Option<Arc<Pools>>,
    /// What `/v1/agent/metrics` shows: the agent loop and the HTTP layer
    /// record into it.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The local agent's services and checks (`/v1/agent/service*`,
    /// `/v1/agent/check*`); unset on a detached handle.
    pub(crate) local: std::sync::OnceLock<local::LocalHandle>,
}

/// A message to the agent task.
pub enum ToAgent {
    Request(Request, tokio::sync::oneshot::Sender<Response>),
    Status(tokio::sync::oneshot::Sender<AgentStatus>),
    Leave(tokio::sync::oneshot::Sender<()>),
    /// The replicated state once this server has applied through (table)
    /// index `at_least`, for `GET /v1/snapshot`.
    SaveState(
        u64,
        tokio::sync::oneshot::Sender<Result<SavedState, String>>,
    ),
}

/// A server's replicated state frozen at one index (O(1) to take; encoded
/// off the agent task), with what a snapshot archive's `meta.json` says.
pub struct SavedState {
    pub view: tern_core::fsm::FsmView,
    /// The Raft term of the last applied entry.
    pub term: u64,
    /// The Raft configuration then: (id, address, voter).
    pub servers: Vec<(String, String, bool)>,
}

impl AgentHandle {
    /// Ask the server; the answer is the core's `Respond`. If the agent has
    /// stopped, `No cluster leader` (clients retry elsewhere).
    pub async fn call(&self, request: Request) -> Response {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .inner
            .tx
            .send(ToAgent::Request(request, tx))
            .await
            .is_err()
        {
            return Err(tern_core::rpc::RpcError::NoLeader);
        }
        rx.await.unwrap_or(Err(tern_core::rpc::RpcError::NoLeader))
    }

    /// This server's replicated state once it has applied through index
    /// `at_least` (`GET /v1/snapshot`); an error on a client agent, or if
    /// the agent stops first.
    pub async fn save_state(&self, at_least: u64) -> Result<SavedState, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || "the agent stopped before the snapshot was taken".to_string();
        if self
            .inner
            .tx
            .send(ToAgent::SaveState(at_least, tx))
            .await
            .is_err()
        {
            return Err(gone());
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    pub async fn status(&self) -> AgentStatus {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.tx.send(ToAgent::Status(tx)).await.is_err() {
            return AgentStatus::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Leave gracefully: a leader hands leadership over, then requests fail
    /// fast for `leave_drain_time`. Returns when the leave is complete (as
    /// Consul's `Agent.Leave`, which the HTTP answer waits for); the process
    /// then exits (`left`).
    pub async fn leave(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.tx.send(ToAgent::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Resolves once the agent has left (through any surface: HTTP, CLI,
    /// signal), or its task has stopped.
    pub async fn left(&self) {
        let mut rx = self.inner.left.subscribe();
        // An error means the sender is gone: nothing will ever leave.
        let _ = rx.wait_for(|left| *left).await;
    }

    /// The alive servers of this datacenter as the LAN pool sees them,
    /// sorted by name (what client agents route requests to). A detached
    /// handle has none.
    pub fn servers(&self) -> tokio::sync::watch::Receiver<Vec<ServerMember>> {
        match &self.inner.pools {
            Some(p) => p.servers(),
            None => tokio::sync::watch::channel(Vec::new()).1,
        }
    }

    fn pools(&self) -> Result<&Pools, MembersError> {
        self.inner
            .pools
            .as_deref()
            .ok_or(MembersError::Gossip(crate::gossip::GossipError::Stopped))
    }

    /// The members of the LAN pool, or of the WAN pool (`/v1/agent/members`).
    pub async fn members(&self, pool: Pool) -> Result<Vec<Member>, MembersError> {
        self.pools()?.members(pool).await
    }

    /// One join attempt through `address` (`/v1/agent/join/<address>`).
    pub async fn join(&self, pool: Pool, address: &str) -> Result<(), MembersError> {
        self.pools()?.join(pool, address).await
    }

    /// Force a failed member to `left` (`/v1/agent/force-leave/<node>`),
    /// and with `prune` forget it at once (`?prune`).
    pub async fn force_leave(
        &self,
        pool: Pool,
        node: &str,
        prune: bool,
    ) -> Result<(), MembersError> {
        self.pools()?.force_leave(pool, node, prune).await
    }

    /// A keyring operation on every pool (`/v1/operator/keyring`), the WAN
    /// pool's answer first.
    pub async fn keyring(
        &self,
        op: tern_core::gossip::KeyOp,
    ) -> Result<
        Vec<(
            Pool,
            Result<tern_core::gossip::KeyReport, crate::gossip::GossipError>,
        )>,
        MembersError,
    > {
        Ok(self.pools()?.keyring(op).await)
    }

    /// Each pool's own keys (`/v1/operator/keyring?local-only`).
    pub async fn local_keyring(
        &self,
    ) -> Result<
        Vec<(
            Pool,
            Result<tern_core::gossip::Keyring, crate::gossip::GossipError>,
        )>,
        MembersError,
    > {
        Ok(self.pools()?.local_keyring().await)
    }

    pub fn options(&self) -> &AgentOptions {
        &self.inner.options
    }

    /// The local agent, once started (every real agent has one).
    pub fn local(&self) -> Option<&local::LocalHandle> {
        self.inner.local.get()
    }

    /// The agent's metrics (`/v1/agent/metrics`).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// A handle whose messages arrive on the returned receiver: for testing
    /// a surface (HTTP, CLI) against a scripted agent.
    pub fn detached(options: AgentOptions) -> (AgentHandle, tokio::sync::mpsc::Receiver<ToAgent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        (
            AgentHandle {
                inner: Arc::new(HandleInner {
                    tx,
                    options,
                    left: Arc::new(tokio::sync::watch::Sender::new(false)),
                    pools: None,
                    metrics: Default::default(),
                    local: Default::default(),
                }),
            },
            rx,
        )
    }
}

mod client;
pub mod local;
pub(crate) mod members;
mod runtime;
mod telemetry;
pub use client::{start_client, start_gossip_client};
pub use members::{MembersError, Pool, Pools};
pub use runtime::{start, Agent};
