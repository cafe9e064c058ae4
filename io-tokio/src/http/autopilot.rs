//! `/v1/operator/autopilot/{configuration,health,state}` (Consul's
//! `agent/operator_endpoint.go`, shapes from `api/operator_autopilot.go`).
//!
//! Health and state are the leader's last health sample (a follower forwards
//! the request, as Consul's `Operator.ServerHealth` always goes to the
//! leader). The configuration is replicated through the state machine: a
//! new leader stores the agent's `autopilot { ... }` stanza if none is
//! stored, and `PUT` (with `?cas=`) replaces it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use tern_core::autopilot::{AutopilotConfig, HealthReply, ServerHealthReply};
use tern_core::fsm::ApplyResult;
use tern_core::rpc::{Op, ReadMode, ReplyBody};
use tern_core::Duration;

use super::params::{Params, QueryOptions};
use super::read;
use super::reply::{json, ApiError, ApiResult};
use crate::agent::{AgentHandle, Pool};
use crate::config::duration::format_go;

/// `GET /v1/operator/autopilot/configuration` (api `AutopilotConfiguration`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Configuration {
    cleanup_dead_servers: bool,
    last_contact_threshold: String,
    max_trailing_logs: u64,
    min_quorum: u32,
    server_stabilization_time: String,
    redundancy_zone_tag: String,
    disable_upgrade_migration: bool,
    upgrade_version_tag: String,
    create_index: u64,
    modify_index: u64,
}

pub(crate) async fn configuration(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    // No query-meta headers: Consul's `OperatorAutopilotConfiguration`
    // returns the configuration without `setMeta`.
    let (reply, _) = read(&agent, &opts, Op::AutopilotGetConfig).await?;
    let ReplyBody::AutopilotConfig(stored) = reply.body else {
        return Err(ApiError::unexpected_reply("the autopilot configuration"));
    };
    let c = &stored.config;
    let body = Configuration {
        cleanup_dead_servers: c.cleanup_dead_servers,
        last_contact_threshold: format_go(c.last_contact_threshold),
        max_trailing_logs: c.max_trailing_logs,
        min_quorum: c.min_quorum,
        server_stabilization_time: format_go(c.server_stabilization_time),
        redundancy_zone_tag: c.redundancy_zone_tag.clone(),
        disable_upgrade_migration: c.disable_upgrade_migration,
        upgrade_version_tag: c.upgrade_version_tag.clone(),
        create_index: stored.create_index,
        modify_index: stored.modify_index,
    };
    json(&body, opts.pretty)
}

/// Largest body taken for a configuration `PUT`.
const CONFIG_BODY_MAX: usize = 64 * 1024;

/// `PUT /v1/operator/autopilot/configuration[?cas=<index>]` (Consul's
/// `OperatorAutopilotConfiguration`): the body is a whole
/// `AutopilotConfiguration` (a field left out is its zero value, as Go
/// decodes it); answers `true`, or with `?cas` whether the index matched.
pub(crate) async fn set_configuration(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
    body: axum::body::Body,
) -> ApiResult {
    let params = Params::new(query);
    let opts = QueryOptions::parse(&params, agent.options())?;
    let bytes = axum::body::to_bytes(body, CONFIG_BODY_MAX)
        .await
        .map_err(|e| ApiError::bad_request(format!("Error parsing autopilot config: {e}")))?;
    let config = parse_configuration(&bytes)
        .map_err(|e| ApiError::bad_request(format!("Error parsing autopilot config: {e}")))?;
    let cas = match params.get("cas") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|e| ApiError::bad_request(format!("Error parsing cas value: {e}")))?,
        ),
    };
    let reply = agent
        .call(opts.request(Op::AutopilotSetConfig { config, cas }))
        .await?;
    let ReplyBody::Applied(ApplyResult::Autopilot(held)) = reply.body else {
        return Err(ApiError::unexpected_reply(
            "an autopilot configuration write",
        ));
    };
    // Only a CAS reports whether it held (Consul: "Only use the out value
    // if this was a CAS").
    json(&(held || cas.is_none()), opts.pretty)
}

/// An `api.AutopilotConfiguration` as Go's `encoding/json` reads it: keys
/// matched without regard to case, unknown keys ignored, a missing key
/// left at its zero value, durations as Go strings ("10s") or numbers of
/// nanoseconds (`ReadableDuration`).
fn parse_configuration(bytes: &[u8]) -> Result<AutopilotConfig, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(fields) = value else {
        return Err("the body must be a JSON object".into());
    };
    let mut c = AutopilotConfig {
        cleanup_dead_servers: false,
        last_contact_threshold: Duration::ZERO,
        max_trailing_logs: 0,
        min_quorum: 0,
        server_stabilization_time: Duration::ZERO,
        redundancy_zone_tag: String::new(),
        disable_upgrade_migration: false,
        upgrade_version_tag: String::new(),
    };
    for (key, v) in &fields {
        let bad = |want: &str| format!("{key}: expected {want}, got {v}");
        let as_bool = || v.as_bool().ok_or_else(|| bad("true or false"));
        let as_u64 = || v.as_u64().ok_or_else(|| bad("a whole number"));
        let as_str = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("a string"))
        };
        let as_duration = || match v {
            serde_json::Value::String(s) => {
                crate::config::duration::parse(s).ok_or_else(|| bad("a duration such as \"10s\""))
            }
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Duration::from_nanos)
                .ok_or_else(|| bad("a duration")),
            _ => Err(bad("a duration")),
        };
        match key.to_ascii_lowercase().as_str() {
            "cleanupdeadservers" => c.cleanup_dead_servers = as_bool()?,
            "lastcontactthreshold" => c.last_contact_threshold = as_duration()?,
            "maxtrailinglogs" => c.max_trailing_logs = as_u64()?,
            "minquorum" => {
                c.min_quorum = u32::try_from(as_u64()?).map_err(|_| bad("a 32-bit number"))?
            }
            "serverstabilizationtime" => c.server_stabilization_time = as_duration()?,
            "redundancyzonetag" => c.redundancy_zone_tag = as_str()?,
            "disableupgrademigration" => c.disable_upgrade_migration = as_bool()?,
            "upgradeversiontag" => c.upgrade_version_tag = as_str()?,
            // CreateIndex, ModifyIndex (a GET's body sent back) and
            // anything unknown: ignored, as Go does.
            _ => {}
        }
    }
    Ok(c)
}

/// One server in `/health` (api `ServerHealth`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServerHealth {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    address: String,
    serf_status: &'static str,
    version: String,
    leader: bool,
    last_contact: String,
    last_term: u64,
    last_index: u64,
    healthy: bool,
    voter: bool,
    stable_since: String,
}

/// `/health` (api `OperatorHealthReply`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Health {
    healthy: bool,
    failure_tolerance: u64,
    servers: Vec<ServerHealth>,
}

/// Consul renders a server that never answered as `-1ns` (its stats
/// fetcher turns "never" into -1).
fn last_contact(d: Option<Duration>) -> String {
    d.map_or_else(|| "-1ns".to_string(), format_go)
}

/// What the leader measured as "healthy for `stable_for`", as a time on
/// this agent's wall clock.
fn stable_since(now: SystemTime, s: &ServerHealthReply) -> String {
    let at = now
        .checked_sub(std::time::Duration::from(s.stable_for))
        .unwrap_or(UNIX_EPOCH);
    rfc3339(at)
}

async fn health_reply(
    agent: &AgentHandle,
    query: Vec<(String, String)>,
) -> Result<(HealthReply, QueryOptions, super::reply::Meta), ApiError> {
    let mut opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    // Always the leader's answer, as Consul (`RequireConsistent`).
    opts.read_mode = ReadMode::Default;
    opts.blocking = None;
    let (reply, meta) = read(agent, &opts, Op::AutopilotHealth).await?;
    let ReplyBody::AutopilotHealth(h) = reply.body else {
        return Err(ApiError::unexpected_reply("operator/autopilot/health"));
    };
    Ok((h, opts, meta))
}

/// Each server's build version by node id, from the `build` tag of the LAN
/// pool as this agent sees it (Consul's autopilot reads the same tag from
/// the leader's serf), reduced as Consul's `metadata.Build` does to its
/// leading `x.y.z` (the tag is `1.21.0:tern-0.1.0`). A server gossip does
/// not know gets an empty version.
async fn build_versions(agent: &AgentHandle) -> BTreeMap<String, String> {
    agent
        .members(Pool::Lan)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let tag = m.tags.get("build")?;
            let end = tag
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(tag.len());
            let build = tag[..end].trim_end_matches('.').to_string();
            Some((m.node_id.to_string(), build))
        })
        .collect()
}

/// `GET /v1/operator/autopilot/health`: 200 when healthy, 429 with the same
/// body when not.
pub(crate) async fn health(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (h, opts, _meta) = health_reply(&agent, query).await?;
    let versions = build_versions(&agent).await;
    let now = SystemTime::now();
    let body = Health {
        healthy: h.healthy,
        failure_tolerance: h.failure_tolerance,
        servers: h
            .servers
            .iter()
            .map(|s| ServerHealth {
                id: s.id.to_string(),
                name: s.name.0.clone(),
                address: s.address.clone(),
                serf_status: s.serf_status.as_str(),
                version: versions.get(&s.id.to_string()).cloned().unwrap_or_default(),
                leader: s.leader,
                last_contact: last_contact(s.last_contact),
                last_term: s.last_term.0,
                last_index: s.last_index.0,
                healthy: s.healthy,
                voter: s.voter,
                stable_since: stable_since(now, s),
            })
            .collect(),
    };
    let mut response = json(&body, opts.pretty)?;
    if !h.healthy {
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    }
    Ok(response.into_response())
}

/// One server in `/state` (api `AutopilotServer`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StateServer {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    address: String,
    node_status: &'static str,
    version: String,
    last_contact: String,
    last_term: u64,
    last_index: u64,
    healthy: bool,
    stable_since: String,
    read_replica: bool,
    status: &'static str,
    meta: BTreeMap<String, String>,
    node_type: &'static str,
}

/// `/state` (api `AutopilotState`, the fields Consul's CE fills).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AutopilotState {
    healthy: bool,
    failure_tolerance: u64,
    optimistic_failure_tolerance: u64,
    servers: BTreeMap<String, StateServer>,
    leader: String,
    voters: Vec<String>,
}

/// `GET /v1/operator/autopilot/state`.
pub(crate) async fn state(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (h, opts, _meta) = health_reply(&agent, query).await?;
    let versions = build_versions(&agent).await;
    let now = SystemTime::now();
    let servers = h
        .servers
        .iter()
        .map(|s| {
            let status = match (s.leader, s.voter) {
                (true, _) => "leader",
                (false, true) => "voter",
                (false, false) => "non-voter",
            };
            let server = StateServer {
                id: s.id.to_string(),
                name: s.name.0.clone(),
                address: s.address.clone(),
                node_status: s.serf_status.as_str(),
                version: versions.get(&s.id.to_string()).cloned().unwrap_or_default(),
                last_contact: last_contact(s.last_contact),
                last_term: s.last_term.0,
                last_index: s.last_index.0,
                healthy: s.healthy,
                stable_since: stable_since(now, s),
                read_replica: false,
                status,
                meta: BTreeMap::new(),
                node_type: "voter",
            };
            (s.id.to_string(), server)
        })
        .collect();
    let body = AutopilotState {
        healthy: h.healthy,
        failure_tolerance: h.failure_tolerance,
        optimistic_failure_tolerance: h.optimistic_failure_tolerance,
        servers,
        leader: h
            .servers
            .iter()
            .find(|s| s.leader)
            .map(|s| s.id.to_string())
            .unwrap_or_default(),
        voters: h
            .servers
            .iter()
            .filter(|s| s.voter)
            .map(|s| s.id.to_string())
            .collect(),
    };
    json(&body, opts.pretty)
}

/// Go's `time.Time` JSON encoding (RFC 3339 with nanoseconds, trailing
/// zeros dropped), in UTC.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let nanos = since.subsec_nanos();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PUT body as Go decodes an `api.AutopilotConfiguration`: keys in
    /// any case, durations as strings or nanoseconds, unknown keys and the
    /// indexes ignored, a missing key zero; a wrong type is an error naming
    /// the key.
    #[test]
    fn a_configuration_body_is_read_as_go_reads_it() {
        let c = parse_configuration(
            br#"{"cleanupdeadservers": true, "LastContactThreshold": "250ms",
                 "MAXTRAILINGLOGS": 9, "ServerStabilizationTime": 3000000000,
                 "ModifyIndex": 12, "Unknown": [1]}"#,
        )
        .unwrap();
        assert!(c.cleanup_dead_servers);
        assert_eq!(c.last_contact_threshold, Duration::from_millis(250));
        assert_eq!(c.max_trailing_logs, 9);
        assert_eq!(c.server_stabilization_time, Duration::from_secs(3));
        assert_eq!(c.min_quorum, 0);
        assert!(!c.disable_upgrade_migration);
        let e = parse_configuration(br#"{"MinQuorum": -1}"#).unwrap_err();
        assert!(e.starts_with("MinQuorum: expected a whole number"), "{e}");
        let e = parse_configuration(br#"{"LastContactThreshold": "soon"}"#).unwrap_err();
        assert!(
            e.starts_with("LastContactThreshold: expected a duration"),
            "{e}"
        );
        assert!(parse_configuration(b"[]").is_err());
        assert!(parse_configuration(b"{").is_err());
    }

    /// Go's `time.Time.MarshalJSON` (RFC3339Nano) on known instants.
    #[test]
    fn times_are_written_as_go_writes_them() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::new(1_764_618_734, 120_000_000);
        assert_eq!(rfc3339(t), "2025-12-01T19:52:14.12Z");
        let t = UNIX_EPOCH + std::time::Duration::new(951_782_400, 1);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn a_server_never_heard_from_has_last_contact_minus_one_nanosecond() {
        assert_eq!(last_contact(None), "-1ns");
        assert_eq!(last_contact(Some(Duration::ZERO)), "0s");
        assert_eq!(
            last_contact(Some(Duration::from_micros(27_291))),
            "27.291ms"
        );
    }
}
