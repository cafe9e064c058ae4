//! A client agent: no Raft, no data of its own. Every request from the HTTP
//! API and the CLI goes to a server of the datacenter through an
//! [`RpcClient`], with Consul's client-side retry.

use std::sync::Arc;

use tern_core::reconcile::ServerMember;
use tokio::sync::{mpsc, watch};

use super::Agent;
use super::{AgentHandle, AgentOptions, AgentStatus, HandleInner, ToAgent};
use crate::client_rpc::RpcClient;

/// Start a client agent that forwards every request to the servers in
/// `servers` (the alive servers of this datacenter, as the LAN gossip pool
/// reports them; `.address` is the server port). It binds no server port.
/// A leave completes at once: a client has nothing to hand over or drain.
pub async fn start_client(
    options: AgentOptions,
    servers: watch::Receiver<Vec<ServerMember>>,
) -> Result<Agent, String> {
    let client = RpcClient::new(servers, Some(options.server_addr.ip()), &options.core);
    let (tx, rx) = mpsc::channel(4096);
    let left = Arc::new(watch::Sender::new(false));
    let handle = AgentHandle {
        inner: Arc::new(HandleInner {
            tx,
            options: options.clone(),
            left: left.clone(),
        }),
    };
    let task = tokio::spawn(run(options, client, rx, left));
    Ok(Agent {
        handle,
        task,
        warnings: Vec::new(),
    })
}

async fn run(
    options: AgentOptions,
    client: RpcClient,
    mut rx: mpsc::Receiver<ToAgent>,
    left: Arc<watch::Sender<bool>>,
) {
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
            ToAgent::Leave(tx) => {
                // Leaving the LAN pool is the gossip side's; nothing else to do.
                let _ = tx.send(());
                left.send_replace(true);
            }
        }
    }
}

/// Until the LAN gossip pool feeds a client agent, its servers are the
/// `retry_join` addresses, taken as server-port addresses (what `retry_join`
/// means to a server today). Each is named by its address; the node id is
/// unknown (0) and unused by the client. The lead replaces this with the
/// gossip-fed watch.
pub fn static_servers(addresses: &[String]) -> Vec<ServerMember> {
    addresses
        .iter()
        .map(|a| ServerMember {
            node: tern_core::NodeId(0),
            name: tern_core::NodeName(a.clone()),
            address: a.clone(),
            status: tern_core::autopilot::GossipStatus::Alive,
            raft_vsn: 3,
        })
        .collect()
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
