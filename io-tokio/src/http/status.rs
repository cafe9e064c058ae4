//! `/v1/status/leader` and `/v1/status/peers` (Consul's
//! `agent/status_endpoint.go`: no query-meta headers).

use axum::extract::{Query, State};
use tern_core::rpc::{Op, ReadMode, ReplyBody, RpcError};

use super::params::{Params, QueryOptions};
use super::read;
use super::reply::{json, ApiError, ApiResult};
use crate::agent::AgentHandle;

/// The leader's server address, or `""` (still 200) when there is none:
/// clients poll this until it is non-empty. Any server answers (stale).
pub(crate) async fn leader(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let mut opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    opts.read_mode = ReadMode::Stale;
    opts.blocking = None;
    let reply = match agent.call(opts.request(Op::StatusLeader)).await {
        Ok(reply) => reply,
        // The agent has stopped: there is no leader to name.
        Err(RpcError::NoLeader) => return json(&"", opts.pretty),
        Err(e) => return Err(e.into()),
    };
    let ReplyBody::Leader(address) = reply.body else {
        return Err(ApiError::unexpected_reply("status/leader"));
    };
    json(&address.unwrap_or_default(), opts.pretty)
}

/// The voters' server addresses.
pub(crate) async fn peers(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let mut opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    opts.blocking = None;
    let (reply, _) = read(&agent, &opts, Op::StatusPeers).await?;
    let ReplyBody::Peers(peers) = reply.body else {
        return Err(ApiError::unexpected_reply("status/peers"));
    };
    json(&peers, opts.pretty)
}
