//! `/v1/operator/raft/configuration`, `/v1/operator/raft/peer` and
//! `/v1/operator/raft/transfer-leader` (Consul's `agent/operator_endpoint.go`
//! and `agent/consul/operator_raft_endpoint.go`).

use axum::extract::{Query, State};
use serde::Serialize;
use tern_core::rpc::{Op, ReadMode, ReplyBody, Request, RpcError};
use tern_core::server::UNKNOWN_PEER_TAIL;
use tern_core::NodeId;

use super::params::{datacenter, go_quote, Params, QueryOptions};
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

/// `Index` is the Raft index of the configuration (hashicorp/raft's
/// `GetConfiguration().Index()`), and no query-meta headers are sent: Consul
/// returns the RPC's reply as it is, without `setMeta`.
pub(crate) async fn configuration(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let mut opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    opts.blocking = None;
    let (reply, _) = read(&agent, &opts, Op::RaftConfiguration).await?;
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
    json(&body, opts.pretty)
}

/// `DELETE /v1/operator/raft/peer?id=<id>` or `?address=<ip:port>`.
///
/// A peer that is not in the configuration is Consul's RPC error, a 500
/// naming what the user sent: `id "x" was not found in the Raft
/// configuration` (`RaftRemovePeerByID`) or `address "x" was not found in
/// the Raft configuration` (`RaftRemovePeerByAddress`). Server IDs are
/// UUIDs here, so an id that is not one names no server and is answered so
/// without asking the leader.
pub(crate) async fn remove_peer(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let (id, address) = match (params.has("id"), params.has("address")) {
        (false, false) => {
            return Err(ApiError::bad_request(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            ));
        }
        (true, true) => {
            return Err(ApiError::bad_request(
                "Must specify only one of ?id or ?address",
            ));
        }
        (true, false) => {
            let sent = params.get("id").unwrap_or_default();
            let id = NodeId::parse(sent).ok_or_else(|| not_found("id", sent))?;
            (Some(id), None)
        }
        (false, true) => (None, Some(params.get("address").unwrap_or_default())),
    };
    let request = Request {
        datacenter: datacenter(&params, agent.options()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::RaftRemovePeer {
            id,
            address: address.map(str::to_string),
        },
    };
    match agent.call(request).await {
        Ok(reply) => match reply.body {
            ReplyBody::Done => Ok(empty_ok()),
            _ => Err(ApiError::unexpected_reply("operator/raft/peer")),
        },
        // The core names the peer by its UUID; answer with the user's own
        // spelling of it, as Consul does.
        Err(RpcError::BadRequest(text)) if text.ends_with(UNKNOWN_PEER_TAIL) => {
            Err(match (params.get("id"), address) {
                (Some(sent), _) => not_found("id", sent),
                (None, Some(sent)) => not_found("address", sent),
                (None, None) => ApiError::internal(text),
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn not_found(what: &str, sent: &str) -> ApiError {
    ApiError::internal(format!("{what} {} {UNKNOWN_PEER_TAIL}", go_quote(sent)))
}

/// `POST /v1/operator/raft/transfer-leader[?id=<id>]`: hand leadership to
/// the voter `id`, or to the most up-to-date one. Answers Consul's
/// `{"Success":true}` once another server leads.
pub(crate) async fn transfer_leader(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let to = match params.get("id").filter(|id| !id.is_empty()) {
        None => None,
        Some(sent) => Some(NodeId::parse(sent).ok_or_else(|| not_found("id", sent))?),
    };
    let request = Request {
        datacenter: datacenter(&params, agent.options()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::RaftTransferLeadership { to },
    };
    let reply = agent.call(request).await?;
    match reply.body {
        ReplyBody::Done => json(
            &serde_json::json!({ "Success": true }),
            params.has("pretty"),
        ),
        _ => Err(ApiError::unexpected_reply("operator/raft/transfer-leader")),
    }
}
