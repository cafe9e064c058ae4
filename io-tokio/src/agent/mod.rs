//! The agent: one task owns the `Server`; everything else talks to it
//! through an [`AgentHandle`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Other servers' server-port addresses to find at start.
    pub retry_join: Vec<String>,
    /// Bootstrap once this many servers (counting this one) are known; 0: never.
    pub bootstrap_expect: usize,
    pub dev: bool,
    /// `server = true` (`-server`, `-dev`): run Raft ([`start`]). `false`: a
    /// client agent ([`start_client`]) that forwards every request to the
    /// servers and binds no server port.
    pub server: bool,
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
}

/// A message to the agent task.
pub enum ToAgent {
    Request(Request, tokio::sync::oneshot::Sender<Response>),
    Status(tokio::sync::oneshot::Sender<AgentStatus>),
    Leave(tokio::sync::oneshot::Sender<()>),
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

    pub fn options(&self) -> &AgentOptions {
        &self.inner.options
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
                }),
            },
            rx,
        )
    }
}

mod client;
mod runtime;
pub use client::{start_client, static_servers};
pub use runtime::{start, Agent};
