//! `/v1/health/{node,checks,state,service}/...`: Consul's
//! agent/health_endpoint.go over the catalog's checks, with its JSON
//! (`structs.HealthCheck`, `CheckServiceNode`): lists are `[]`, never
//! `null` (the checks of an instance, a check's `ServiceTags`, a service's
//! `Tags`), and a check's `Definition` leaves out what is not set.

use axum::extract::{Path, Query, State};
use serde::Serialize;
use tern_core::fsm::{Check, CheckServiceNode};
use tern_core::rpc::{CatalogOp, CatalogReply};
use tern_core::Duration;

use super::catalog::{catalog_read, start, NodeJson, NodeServiceJson};
use super::reply::{json, ApiError, ApiResult};
use crate::agent::AgentHandle;
use crate::config::duration::format_go;

/// A check's `HealthCheckDefinition` as its `MarshalJSON` writes it: the
/// durations first, as Go strings, and only what is set.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DefinitionJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_critical_service_after: Option<String>,
    #[serde(rename = "HTTP", skip_serializing_if = "str::is_empty")]
    http: &'a str,
    #[serde(rename = "TCP", skip_serializing_if = "str::is_empty")]
    tcp: &'a str,
}

fn go_duration(ns: u64) -> Option<String> {
    (ns > 0).then(|| format_go(Duration::from_nanos(ns)))
}

/// Consul's `structs.HealthCheck` (CE).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthCheckJson<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: &'a str,
    status: &'a str,
    notes: &'a str,
    output: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    #[serde(rename = "Type")]
    kind: &'a str,
    interval: &'static str,
    timeout: &'static str,
    exposed_port: u16,
    definition: DefinitionJson<'a>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a Check> for HealthCheckJson<'a> {
    fn from(c: &'a Check) -> HealthCheckJson<'a> {
        let d = &c.definition;
        HealthCheckJson {
            node: &c.node,
            check_id: &c.check_id,
            name: &c.name,
            status: &c.status,
            notes: &c.notes,
            output: &c.output,
            service_id: &c.service_id,
            service_name: &c.service_name,
            service_tags: c.service_tags.as_deref().unwrap_or(&[]),
            kind: &c.kind,
            interval: "",
            timeout: "",
            exposed_port: 0,
            definition: DefinitionJson {
                interval: go_duration(d.interval_ns),
                timeout: go_duration(d.timeout_ns),
                deregister_critical_service_after: go_duration(
                    d.deregister_critical_service_after_ns,
                ),
                http: &d.http,
                tcp: &d.tcp,
            },
            create_index: c.create_index,
            modify_index: c.modify_index,
        }
    }
}

/// Consul's `CheckServiceNode`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckServiceNodeJson<'a> {
    node: NodeJson<'a>,
    service: NodeServiceJson<'a>,
    checks: Vec<HealthCheckJson<'a>>,
}

impl<'a> From<&'a CheckServiceNode> for CheckServiceNodeJson<'a> {
    fn from(c: &'a CheckServiceNode) -> CheckServiceNodeJson<'a> {
        CheckServiceNodeJson {
            node: NodeJson::from(&c.node),
            service: NodeServiceJson::from(&c.service),
            checks: c.checks.iter().map(HealthCheckJson::from).collect(),
        }
    }
}

/// A check list read (`node`, `checks`, `state`).
async fn checks(
    agent: &AgentHandle,
    query: Vec<(String, String)>,
    op: impl FnOnce(std::collections::BTreeMap<String, String>) -> CatalogOp,
) -> ApiResult {
    let (params, opts, node_meta) = start(agent, query)?;
    let filter = super::filter::from_query(params.get("filter"))?;
    let (reply, meta) = catalog_read(agent, &opts, op(node_meta)).await?;
    let CatalogReply::Checks(checks) = reply else {
        return Err(ApiError::unexpected_reply("a health checks read"));
    };
    let body: Vec<HealthCheckJson<'_>> = checks.iter().map(HealthCheckJson::from).collect();
    let body = super::filter::apply(body, filter.as_ref())?;
    Ok(meta.apply(json(&body, opts.pretty)?))
}

/// `GET /v1/health/node/<node>`.
pub(crate) async fn node(
    State(agent): State<AgentHandle>,
    Path(node): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    checks(&agent, query, |_| CatalogOp::NodeChecks { node }).await
}

/// `GET /v1/health/checks/<service>`.
pub(crate) async fn service_checks(
    State(agent): State<AgentHandle>,
    Path(service): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    checks(&agent, query, |node_meta| CatalogOp::ServiceChecks {
        service,
        node_meta,
    })
    .await
}

/// `GET /v1/health/state/<state>` (`any`, `passing`, `warning`,
/// `critical`; another state matches no check, as in Consul).
pub(crate) async fn state(
    State(agent): State<AgentHandle>,
    Path(state): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    checks(&agent, query, |node_meta| CatalogOp::ChecksInState {
        state,
        node_meta,
    })
    .await
}

/// The three `GET /v1/health/<x>/` without a name.
pub(crate) async fn missing(
    what: &'static str,
    agent: &AgentHandle,
    query: Vec<(String, String)>,
) -> ApiResult {
    start(agent, query)?;
    Err(ApiError::bad_request(what))
}

pub(crate) async fn node_nameless(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    missing("Missing node name", &agent, query).await
}

pub(crate) async fn service_nameless(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    missing("Missing service name", &agent, query).await
}

pub(crate) async fn state_nameless(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    missing("Missing check state", &agent, query).await
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `GET /v1/health/service/<service>[?passing][&tag=..]`: with `?passing`
/// (empty or a Go bool that is true), only instances whose every check
/// passes (Consul's `filterNonPassing`, after the read: the index is the
/// service's either way).
pub(crate) async fn service(
    State(agent): State<AgentHandle>,
    Path(service): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (params, opts, node_meta) = start(&agent, query)?;
    let passing = match params.get("passing") {
        None => false,
        Some("") => true,
        Some(v) => {
            parse_go_bool(v).ok_or_else(|| ApiError::bad_request("Invalid value for ?passing"))?
        }
    };
    let tags = params.all("tag").into_iter().map(str::to_owned).collect();
    let op = CatalogOp::ServiceHealth {
        service,
        tags,
        node_meta,
    };
    let (reply, meta) = catalog_read(&agent, &opts, op).await?;
    let CatalogReply::ServiceHealth(found) = reply else {
        return Err(ApiError::unexpected_reply("health/service"));
    };
    let body: Vec<CheckServiceNodeJson<'_>> = found
        .iter()
        .filter(|c| !passing || c.checks.iter().all(|k| k.status == "passing"))
        .map(CheckServiceNodeJson::from)
        .collect();
    let filter = super::filter::from_query(params.get("filter"))?;
    let body = super::filter::apply(body, filter.as_ref())?;
    Ok(meta.apply(json(&body, opts.pretty)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::fsm::CheckDefinition;

    #[test]
    fn a_check_is_written_as_consul_writes_it() {
        let mut c = Check {
            node: "n1".into(),
            check_id: "web".into(),
            name: "web".into(),
            status: "passing".into(),
            notes: String::new(),
            output: String::new(),
            service_id: "web1".into(),
            service_name: "web".into(),
            service_tags: None,
            kind: String::new(),
            definition: CheckDefinition::default(),
            create_index: 3,
            modify_index: 4,
        };
        assert_eq!(
            serde_json::to_string(&HealthCheckJson::from(&c)).unwrap(),
            r#"{"Node":"n1","CheckID":"web","Name":"web","Status":"passing","Notes":"","Output":"","ServiceID":"web1","ServiceName":"web","ServiceTags":[],"Type":"","Interval":"","Timeout":"","ExposedPort":0,"Definition":{},"CreateIndex":3,"ModifyIndex":4}"#
        );
        c.definition = CheckDefinition {
            http: "http://x/health".into(),
            interval_ns: 10_000_000_000,
            timeout_ns: 1_500_000_000,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(HealthCheckJson::from(&c)).unwrap();
        assert_eq!(
            v["Definition"],
            serde_json::json!({"Interval": "10s", "Timeout": "1.5s", "HTTP": "http://x/health"})
        );
    }

    #[test]
    fn passing_is_a_go_bool() {
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
