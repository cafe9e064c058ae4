//! `/v1/operator/raft/configuration` and `/v1/operator/raft/peer`
//! (Consul's `agent/operator_endpoint.go`).

use axum::extract::{Query, State};
use serde::Serialize;
use tern_core::rpc::{Op, ReadMode, ReplyBody, Request};
use tern_core::NodeId;

use super::params::{datacenter, Params, QueryOptions};
use super::read;
use super::reply::{empty_ok, json, ApiError, ApiResult};
use crate::agent::AgentHandle;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfiguration {
    servers: Vec<RaftServer>,
    index: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    protocol_version: &'static str,
    voter: bool,
}

pub(crate) async fn configuration(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let mut opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    opts.blocking = None;
    let (reply, meta) = read(&agent, &opts, Op::RaftConfiguration).await?;
    let ReplyBody::Configuration { servers, index } = reply.body else {
        return Err(ApiError::unexpected_reply("operator/raft/configuration"));
    };
    let body = RaftConfiguration {
        servers: servers
            .into_iter()
            .map(|s| RaftServer {
                id: s.id.to_string(),
                node: s.node.0,
                address: s.address,
                leader: s.leader,
                protocol_version: "3",
                voter: s.voter,
            })
            .collect(),
        index,
    };
    Ok(meta.apply(json(&body, opts.pretty)?))
}

/// `DELETE /v1/operator/raft/peer?id=<uuid>` or `?address=<ip:port>`.
pub(crate) async fn remove_peer(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let (id, address) = match (params.get("id"), params.get("address")) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Must specify only one of ?id or ?address",
            ));
        }
        (Some(id), None) => {
            // Server IDs are node IDs, UUIDs; anything else names no server.
            let id = NodeId::parse(id)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid value for ?id: {id:?}")))?;
            (Some(id), None)
        }
        (None, Some(address)) => (None, Some(address.to_string())),
    };
    let request = Request {
        datacenter: datacenter(&params, agent.options()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::RaftRemovePeer { id, address },
    };
    let reply = agent.call(request).await?;
    match reply.body {
        ReplyBody::Done => Ok(empty_ok()),
        _ => Err(ApiError::unexpected_reply("operator/raft/peer")),
    }
}
