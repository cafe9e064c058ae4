//! `/v1/agent/members`, `/v1/agent/join/<address>` and
//! `/v1/agent/force-leave/<node>`, as Consul's agent/agent_endpoint.go
//! (`AgentMembers`, `AgentJoin`, `AgentForceLeave`) serves them: serf's
//! member JSON (`api.AgentMember`), an empty 200 for the actions, and a
//! plain-text 500 with the error for a failed join or an unknown node.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use serde::Serialize;
use tern_core::gossip::{Member, Status};

use super::params::Params;
use super::reply::{empty_ok, json, ApiError, ApiResult};
use crate::agent::members::split_address;
use crate::agent::{AgentHandle, MembersError, Pool};

/// One member as serf's `Member` encodes it (Consul's `api.AgentMember`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AgentMember {
    pub name: String,
    /// The gossip address's host.
    pub addr: String,
    /// The gossip port.
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    /// serf's `MemberStatus`: 0 none, 1 alive, 2 leaving, 3 left, 4 failed.
    pub status: u8,
    pub protocol_min: u8,
    pub protocol_max: u8,
    pub protocol_cur: u8,
    pub delegate_min: u8,
    pub delegate_max: u8,
    pub delegate_cur: u8,
}

/// serf's integer for a status (`serf.MemberStatus`).
pub(crate) fn serf_status(s: Status) -> u8 {
    match s {
        Status::Alive => 1,
        Status::Leaving => 2,
        Status::Left => 3,
        Status::Failed => 4,
    }
}

impl AgentMember {
    pub(crate) fn of(m: &Member) -> AgentMember {
        let (addr, port) = split_address(&m.address);
        AgentMember {
            name: m.name.clone(),
            addr,
            port,
            tags: m.tags.0.clone(),
            status: serf_status(m.status),
            // memberlist's protocol range and serf's delegate versions, as
            // a Consul 1.x agent reports them.
            protocol_min: 1,
            protocol_max: 5,
            protocol_cur: 2,
            delegate_min: 2,
            delegate_max: 5,
            delegate_cur: 4,
        }
    }
}

/// `?wan=<anything non-empty>` selects the WAN pool (Consul reads it with
/// `Query().Get("wan") != ""` for members and join).
fn wan_by_value(params: &Params) -> Pool {
    match params.get("wan") {
        Some(v) if !v.is_empty() => Pool::Wan,
        _ => Pool::Lan,
    }
}

impl From<MembersError> for ApiError {
    fn from(e: MembersError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

pub(crate) async fn members(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let pool = wan_by_value(&params);
    if pool == Pool::Wan
        && params
            .get("segment")
            .is_some_and(|s| !s.is_empty() && s != "_all")
    {
        return Err(ApiError::bad_request(
            "Cannot provide a segment with wan=true",
        ));
    }
    let members = match agent.members(pool).await {
        Ok(m) => m,
        // An agent without a WAN pool has no WAN members (Consul's
        // `WANMembers` of a client is empty).
        Err(MembersError::NoWan) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let body: Vec<AgentMember> = members.iter().map(AgentMember::of).collect();
    json(&body, params.has("pretty"))
}

pub(crate) async fn join(
    State(agent): State<AgentHandle>,
    Path(address): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    agent.join(wan_by_value(&params), &address).await?;
    Ok(empty_ok())
}

/// `/v1/agent/join/` with no address: Consul tries to join "" and fails.
pub(crate) async fn join_nothing() -> ApiResult {
    Err(ApiError::internal("no address to join"))
}

/// `?prune` and `?wan` count by presence here (Consul's `AgentForceLeave`).
/// A pruned member is made `left` and then forgotten at once, here and by
/// every member the prune reaches (serf's `RemoveFailedNodePrune`).
pub(crate) async fn force_leave(
    State(agent): State<AgentHandle>,
    Path(node): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let pool = if params.has("wan") {
        Pool::Wan
    } else {
        Pool::Lan
    };
    agent.force_leave(pool, &node, params.has("prune")).await?;
    Ok(empty_ok())
}
