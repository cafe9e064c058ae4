//! A client agent: no Raft, no data of its own. Every request from the HTTP
//! API and the CLI goes to a server of the datacenter through an
//! [`RpcClient`], with Consul's client-side retry.

use std::sync::Arc;

use tern_core::reconcile::ServerMember;
use tokio::sync::{mpsc, watch};

use super::members::Pools;
use super::Agent;
use super::{AgentHandle, AgentOptions, AgentStatus, HandleInner, ToAgent};
use crate::client_rpc::RpcClient;

/// Start a client agent as `tern agent` without `-server` runs it: it joins
/// the LAN gossip pool (Consul's client tags, no WAN pool; `-join` and
/// `-retry-join` as a server's) and forwards every request to the alive
/// servers of its datacenter the pool reports ([`AgentHandle::servers`]).
/// Its leave leaves the LAN pool.
pub async fn start_gossip_client(options: AgentOptions) -> Result<Agent, String> {
    let (pools, mut reports) = Pools::start(&options, false).await?;
    let pools = Arc::new(pools);
    Pools::spawn_retry_joins(&pools, &options);
    // A client hands no server reports to a core: it routes by the watch.
    tokio::spawn(async move { while reports.recv().await.is_some() {} });
    start(options, pools.servers(), Some(pools)).await
}

/// Start a client agent that forwards every request to the servers in
/// `servers` (the alive servers of this datacenter, as the LAN gossip pool
/// reports them; `.address` is the server port), without a gossip pool of
/// its own (tests feed the list). It binds no server port. A leave
/// completes at once: a client has nothing to hand over or drain.
pub async fn start_client(
    options: AgentOptions,
    servers: watch::Receiver<Vec<ServerMember>>,
) -> Result<Agent, String> {
    start(options, servers, None).await
}

async fn start(
    options: AgentOptions,
    servers: watch::Receiver<Vec<ServerMember>>,
    pools: Option<Arc<Pools>>,
) -> Result<Agent, String> {
    // A bad certificate, key or CA file stops the agent here, named.
    let tls = crate::tls::Tls::load(&options.tls)?;
    let client = RpcClient::with_tls(
        servers,
        Some(options.server_addr.ip()),
        &options.core,
        tls.clone(),
    );
    let (tx, rx) = mpsc::channel(4096);
    let left = Arc::new(watch::Sender::new(false));
    let handle = AgentHandle {
        inner: Arc::new(HandleInner {
            tx,
            options: options.clone(),
            left: left.clone(),
            pools: pools.clone(),
            metrics: Default::default(),
            local: Default::default(),
        }),
    };
    super::local::spawn(&handle)?;
    let task = tokio::spawn(run(options, client, rx, left, pools));
    Ok(Agent {
        handle,
        task,
        warnings: Vec::new(),
        tls,
    })
}

async fn run(
    options: AgentOptions,
    client: RpcClient,
    mut rx: mpsc::Receiver<ToAgent>,
    left: Arc<watch::Sender<bool>>,
    pools: Option<Arc<Pools>>,
) {
    let mut leaving = false;
    while let Some(msg) = rx.recv().await {
        match msg {
            ToAgent::Request(request, tx) => {
                let client = client.clone();
                tokio::spawn(async move {
                    let _ = tx.send(client.call(request).await);
                });
            }
            ToAgent::Status(tx) => {
                let _ = tx.send(status(&options));
            }
            ToAgent::SaveState(_, tx) => {
                // The state would have to cross the server port in one
                // frame; a server's own API streams it instead.
                let _ = tx.send(Err(
                    "snapshots are saved through a server agent's HTTP API; this agent is a client"
                        .to_string(),
                ));
            }
            ToAgent::Leave(tx) => {
                // Nothing to hand over or drain: leave the LAN pool (its
                // leave is broadcast, so the others see `left`), then stop.
                let pools = pools.clone().filter(|_| !leaving);
                leaving = true;
                let left = left.clone();
                tokio::spawn(async move {
                    if let Some(p) = pools {
                        p.leave().await;
                    }
                    let _ = tx.send(());
                    left.send_replace(true);
                });
            }
        }
    }
}

/// A client has no Raft and no server port: only its identity.
fn status(options: &AgentOptions) -> AgentStatus {
    let o = &options.core;
    AgentStatus {
        node_id: o.node_id,
        node_name: o.node_name.0.clone(),
        datacenter: o.datacenter.0.clone(),
        client: true,
        ..AgentStatus::default()
    }
}
