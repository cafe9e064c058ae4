//! `/v1/agent/self` and `/v1/agent/leave`.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use serde::Serialize;

use super::members::AgentMember;
use super::params::Params;
use super::reply::{empty_ok, json, ApiResult};
use crate::agent::{AgentHandle, AgentOptions, AgentStatus, Pool};

/// The versions come from one place (`crate::version`), so this endpoint,
/// `tern version` and the `build` gossip tag agree.
pub use crate::version::CONSUL_COMPATIBLE_VERSION;

/// Serf's member status "alive".
const MEMBER_STATUS_ALIVE: u8 = 1;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentSelf {
    config: SelfConfig,
    member: SelfMember,
    stats: BTreeMap<&'static str, BTreeMap<&'static str, String>>,
    meta: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum SelfMember {
    Gossip(AgentMember),
    Options(Member),
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SelfConfig {
    datacenter: String,
    primary_datacenter: String,
    node_name: String,
    #[serde(rename = "NodeID")]
    node_id: String,
    server: bool,
    revision: String,
    version: &'static str,
    build_date: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Member {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<&'static str, String>,
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
}

pub(crate) async fn agent_self(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let status = agent.status().await;
    let options = agent.options();
    // Consul's `Member` is the local LAN member; an agent without a pool
    // (a detached handle) describes itself from its options.
    let name = &options.core.node_name.0;
    let lan_member = agent
        .members(Pool::Lan)
        .await
        .ok()
        .and_then(|ms| ms.into_iter().find(|m| &m.name == name))
        .map(|m| AgentMember::of(&m));
    let mut config = self_config(options);
    // A client agent says so, as Consul's `Config.Server` does.
    config.server = !status.client;
    let mut stats = BTreeMap::from([("consul", consul_stats(options, &status))]);
    // A client agent runs no Raft: Consul's client has no `raft` stats.
    if !status.client {
        stats.insert("raft", raft_stats(&status));
    }
    let body = AgentSelf {
        config,
        member: match lan_member {
            Some(m) => SelfMember::Gossip(m),
            None => SelfMember::Options(member(options, &status)),
        },
        stats,
        meta: BTreeMap::new(),
    };
    json(&body, params.has("pretty"))
}

fn self_config(options: &AgentOptions) -> SelfConfig {
    let dc = options.core.datacenter.0.clone();
    SelfConfig {
        primary_datacenter: dc.clone(),
        datacenter: dc,
        node_name: options.core.node_name.0.clone(),
        node_id: options.core.node_id.to_string(),
        server: true,
        revision: crate::version::REVISION.to_string(),
        version: CONSUL_COMPATIBLE_VERSION,
        build_date: crate::version::BUILD_DATE,
    }
}

/// This server as a LAN member, from its options alone (a handle with no
/// gossip pool): `Port` is the server port, as the `port` tag is.
fn member(options: &AgentOptions, status: &AgentStatus) -> Member {
    let address = if status.server_addr.is_empty() {
        options.core.address.as_str()
    } else {
        status.server_addr.as_str()
    };
    let (host, port) = split_host_port(address, options.server_addr.port());
    let tags = BTreeMap::from([
        ("role", "consul".to_string()),
        ("dc", options.core.datacenter.0.clone()),
        ("port", port.to_string()),
        ("id", options.core.node_id.to_string()),
        ("vsn", "2".to_string()),
        ("vsn_min", "2".to_string()),
        ("vsn_max", "3".to_string()),
        ("raft_vsn", "3".to_string()),
        ("build", crate::version::build_tag()),
        ("expect", options.bootstrap_expect.to_string()),
        ("ft_fs", "1".to_string()),
    ]);
    Member {
        name: options.core.node_name.0.clone(),
        addr: host,
        port,
        tags,
        status: MEMBER_STATUS_ALIVE,
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}

/// `"10.0.0.1:8300"` → (`"10.0.0.1"`, 8300); `"[::1]:8300"` → (`"::1"`, 8300).
fn split_host_port(address: &str, default_port: u16) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port.parse().unwrap_or(default_port),
        ),
        _ => (address.to_string(), default_port),
    }
}

/// `Stats.consul`: every value a string, as Consul sends them.
fn consul_stats(options: &AgentOptions, status: &AgentStatus) -> BTreeMap<&'static str, String> {
    let is_leader = status.leader.is_some() && status.leader == Some(status.node_id);
    // Consul's `bootstrap` is the single-server bootstrap mode (`-bootstrap`,
    // which `-dev` implies).
    let bootstrap = options.dev || options.bootstrap_expect == 1;
    BTreeMap::from([
        ("server", (!status.client).to_string()),
        ("leader", is_leader.to_string()),
        (
            "leader_addr",
            status.leader_addr.clone().unwrap_or_default(),
        ),
        ("bootstrap", bootstrap.to_string()),
        ("known_datacenters", "1".to_string()),
        ("acl", "disabled".to_string()),
    ])
}

/// `Stats.raft`, named as hashicorp/raft's `Stats()` names them.
fn raft_stats(status: &AgentStatus) -> BTreeMap<&'static str, String> {
    let state = if status.role.is_empty() {
        "Follower".to_string()
    } else {
        status.role.clone()
    };
    // hashicorp/raft says "0" on the leader, "never" before any contact, and
    // a Go duration otherwise.
    let last_contact = if state == "Leader" {
        "0".to_string()
    } else if !status.known_leader && status.last_contact_ms == 0 {
        "never".to_string()
    } else {
        format!("{}ms", status.last_contact_ms)
    };
    BTreeMap::from([
        ("state", state),
        ("term", status.term.0.to_string()),
        ("commit_index", status.commit_index.0.to_string()),
        ("applied_index", status.applied_index.0.to_string()),
        ("last_log_index", status.last_log_index.0.to_string()),
        ("num_peers", status.num_peers.to_string()),
        ("last_contact", last_contact),
        ("protocol_version", "3".to_string()),
        ("protocol_version_min", "0".to_string()),
        ("protocol_version_max", "3".to_string()),
    ])
}

/// Leave gracefully: answers once the drain has started.
pub(crate) async fn leave(State(agent): State<AgentHandle>) -> ApiResult {
    agent.leave().await;
    Ok(empty_ok())
}
