//! The local agent's services and checks: Consul's agent/agent_endpoint.go
//! for `/v1/agent/service/register|deregister/<id>`, `/v1/agent/services`,
//! `/v1/agent/service/<id>`, `/v1/agent/checks`,
//! `/v1/agent/check/register|deregister|pass|warn|fail|update/<id>` and
//! `/v1/agent/health/service/name/<name>|id/<id>`.
//!
//! Bodies are decoded as Consul's `lib.DecodeJSON` does: keys match
//! case-insensitively and an unknown key is refused (`Request decode
//! failed: json: unknown field "X"`). A successful write is a 200 with an
//! empty body. Check kinds this agent runs are TTL, HTTP and TCP; a
//! definition of another kind (script, gRPC, UDP, H2PING, Docker, alias,
//! OS service) is refused by name rather than stored and never run.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tern_core::fsm::{Check, Service, Weights};
use tern_core::local::{
    aggregate, CheckDef, CheckKind, LocalError, ServiceDef, CHECK_INTERVAL_MIN,
    CHECK_TIMEOUT_DEFAULT,
};
use tern_core::Duration;

use super::catalog::{parse_service, ServiceAddressJson};
use super::gojson::Fields;
use super::health::HealthCheckJson;
use super::params::Params;
use super::reply::{empty_ok, json, ApiError, ApiResult};
use crate::agent::local::{LocalHandle, LocalView};
use crate::agent::AgentHandle;

/// A registration body past this is refused (413), as Consul's agent caps
/// request bodies.
const BODY_BYTES_MAX: usize = 512 * 1024;

const STATUSES: [&str; 3] = ["passing", "warning", "critical"];

fn local(agent: &AgentHandle) -> Result<&LocalHandle, ApiError> {
    agent
        .local()
        .ok_or_else(|| ApiError::internal("the local agent is not running"))
}

impl From<LocalError> for ApiError {
    fn from(e: LocalError) -> ApiError {
        let status = match &e {
            LocalError::UnknownService(_)
            | LocalError::UnknownCheck(_)
            | LocalError::CheckServiceMissing { .. } => StatusCode::NOT_FOUND,
            LocalError::Invalid(_) => StatusCode::BAD_REQUEST,
            LocalError::NotTtl(_) | LocalError::TooMany(..) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            text: e.to_string(),
        }
    }
}

async fn read_json(body: axum::body::Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, BODY_BYTES_MAX)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            text: format!("Request body too large, max size: {BODY_BYTES_MAX} bytes"),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request decode failed: EOF"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

fn decode_failed(e: String) -> ApiError {
    ApiError::bad_request(format!("Request decode failed: {e}"))
}

// ------------------------------------------------------------ definitions

/// Every key of Consul's `ServiceDefinition` (and its snake_case aliases):
/// the ones Tern does not use are accepted and ignored only when empty.
const SERVICE_KEYS: &[&str] = &[
    "kind",
    "id",
    "name",
    "tags",
    "address",
    "taggedaddresses",
    "tagged_addresses",
    "meta",
    "port",
    "socketpath",
    "check",
    "checks",
    "weights",
    "token",
    "enabletagoverride",
    "enable_tag_override",
    "proxy",
    "connect",
    "namespace",
    "partition",
    "locality",
];

/// Every key of a check definition (`CheckType` in a service,
/// `CheckDefinition` at `/v1/agent/check/register`).
const CHECK_KEYS: &[&str] = &[
    "checkid",
    "id",
    "name",
    "notes",
    "serviceid",
    "service_id",
    "token",
    "status",
    "scriptargs",
    "script_args",
    "args",
    "http",
    "h2ping",
    "h2pingusetls",
    "h2ping_use_tls",
    "header",
    "method",
    "body",
    "disableredirects",
    "disable_redirects",
    "tcp",
    "udp",
    "interval",
    "dockercontainerid",
    "docker_container_id",
    "shell",
    "grpc",
    "grpcusetls",
    "grpc_use_tls",
    "osservice",
    "tlsservername",
    "tls_server_name",
    "tlsskipverify",
    "tls_skip_verify",
    "aliasnode",
    "aliasservice",
    "timeout",
    "ttl",
    "successbeforepassing",
    "failuresbeforewarning",
    "failuresbeforecritical",
    "deregistercriticalserviceafter",
    "deregister_critical_service_after",
    "outputmaxsize",
    "namespace",
    "partition",
];

/// `json: unknown field "X"` for a key Go's strict decoder would refuse.
fn only_known(value: &Value, known: &[&str]) -> Result<(), String> {
    if let Value::Object(map) = value {
        for k in map.keys() {
            if !known.contains(&k.to_lowercase().as_str()) {
                return Err(format!("json: unknown field {k:?}"));
            }
        }
    }
    Ok(())
}

/// Consul's `lib.TranslateKeys` for these bodies: a snake_case alias is
/// read as the field it stands for (the canonical key wins if both are
/// given).
fn translate(value: &Value, aliases: &[(&str, &str)]) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        if let Some((_, canonical)) = aliases.iter().find(|(a, _)| a.eq_ignore_ascii_case(k)) {
            let taken = map
                .keys()
                .any(|other| other.eq_ignore_ascii_case(canonical));
            if !taken {
                out.insert((*canonical).to_owned(), v.clone());
            }
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

const SERVICE_ALIASES: &[(&str, &str)] = &[
    ("tagged_addresses", "TaggedAddresses"),
    ("enable_tag_override", "EnableTagOverride"),
];

const CHECK_ALIASES: &[(&str, &str)] = &[
    ("service_id", "ServiceID"),
    ("script_args", "ScriptArgs"),
    ("args", "ScriptArgs"),
    (
        "deregister_critical_service_after",
        "DeregisterCriticalServiceAfter",
    ),
    ("docker_container_id", "DockerContainerID"),
    ("tls_server_name", "TLSServerName"),
    ("tls_skip_verify", "TLSSkipVerify"),
    ("grpc_use_tls", "GRPCUseTLS"),
    ("h2ping_use_tls", "H2PingUseTLS"),
    ("disable_redirects", "DisableRedirects"),
];

fn get<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value.as_object().and_then(|m| {
        m.iter()
            .filter(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_null())
            .map(|(_, v)| v)
            .next_back()
    })
}

/// The value of a key for a check kind this agent does not run, if set.
fn unsupported_kind(check: &Value) -> Option<&'static str> {
    let set = |k: &str| match get(check, k) {
        None => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Bool(b)) => *b,
        Some(_) => true,
    };
    [
        ("ScriptArgs", "script"),
        ("GRPC", "gRPC"),
        ("UDP", "UDP"),
        ("H2PING", "H2PING"),
        ("DockerContainerID", "Docker"),
        ("AliasService", "alias"),
        ("AliasNode", "alias"),
        ("OSService", "OS service"),
    ]
    .into_iter()
    .find(|(k, _)| set(k))
    .map(|(_, kind)| kind)
}

/// Parse one check definition (`standalone`: `/v1/agent/check/register`,
/// which names its ID `ID`; in a service the key is `CheckID`).
fn parse_check(
    value: &Value,
    go_type: &'static str,
    standalone: bool,
) -> Result<Option<CheckDef>, ApiError> {
    let translated = translate(value, CHECK_ALIASES);
    let value = &translated;
    let mut known: Vec<&str> = CHECK_KEYS.to_vec();
    if standalone {
        known.retain(|k| *k != "checkid");
    } else {
        known.retain(|k| *k != "id");
    }
    only_known(value, &known).map_err(decode_failed)?;
    let f = Fields::top(value, go_type).map_err(decode_failed)?;
    let header = match get(value, "Header") {
        None => BTreeMap::new(),
        Some(Value::Object(m)) => {
            let mut h = BTreeMap::new();
            for (k, v) in m {
                let values = match v {
                    Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>(),
                    Value::Null => Some(Vec::new()),
                    _ => None,
                }
                .ok_or_else(|| {
                    decode_failed(format!(
                        "json: cannot unmarshal {} into Go struct field {go_type}.Header of type []string",
                        super::gojson::kind(v)
                    ))
                })?;
                h.insert(k.clone(), values);
            }
            h
        }
        Some(v) => {
            return Err(decode_failed(format!(
                "json: cannot unmarshal {} into Go struct field {go_type}.Header of type map[string][]string",
                super::gojson::kind(v)
            )))
        }
    };
    let id = if standalone {
        f.string("ID")
    } else {
        f.string("CheckID")
    }
    .map_err(decode_failed)?;
    let name = f.string("Name").map_err(decode_failed)?;
    let notes = f.string("Notes").map_err(decode_failed)?;
    let service_id = if standalone {
        f.string("ServiceID").map_err(decode_failed)?
    } else {
        String::new()
    };
    let status = f.string("Status").map_err(decode_failed)?;
    let http = f.string("HTTP").map_err(decode_failed)?;
    let tcp = f.string("TCP").map_err(decode_failed)?;
    let method = f.string("Method").map_err(decode_failed)?;
    let body = f.string("Body").map_err(decode_failed)?;
    let dur = |k: &str| f.duration_ns(k).map(Duration).map_err(decode_failed);
    let interval = dur("Interval")?;
    let timeout = dur("Timeout")?;
    let ttl = dur("TTL")?;
    let deregister = dur("DeregisterCriticalServiceAfter")?;
    let tls_skip_verify = f.bool("TLSSkipVerify").map_err(decode_failed)?;
    if let Some(kind) = unsupported_kind(value) {
        if kind == "script" {
            // Consul's answer when `enable_script_checks` is off (its default).
            return Err(ApiError::internal(
                "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true",
            ));
        }
        return Err(ApiError::bad_request(format!(
            "Invalid check: {kind} checks are not supported by this agent (TTL, HTTP and TCP are)"
        )));
    }
    // Settings this agent does not apply are refused by name, not ignored.
    for (key, what) in [
        ("SuccessBeforePassing", "SuccessBeforePassing"),
        ("FailuresBeforeWarning", "FailuresBeforeWarning"),
        ("FailuresBeforeCritical", "FailuresBeforeCritical"),
        ("OutputMaxSize", "OutputMaxSize"),
        ("DisableRedirects", "DisableRedirects"),
        ("TLSServerName", "TLSServerName"),
    ] {
        let set = match get(value, key) {
            None => false,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(ApiError::bad_request(format!(
                "Invalid check: {what} is not supported by this agent"
            )));
        }
    }
    let interval_kind = !http.is_empty() || !tcp.is_empty();
    if !interval_kind
        && ttl == Duration::ZERO
        && interval == Duration::ZERO
        && name.is_empty()
        && id.is_empty()
        && !standalone
    {
        return Ok(None); // an empty `Check` object (Consul's `CheckType.Empty`)
    }
    // Consul's `CheckType.Validate`, first failure wins.
    let invalid = |why: &str| ApiError::bad_request(format!("Invalid check: {why}"));
    if interval > Duration::ZERO && ttl > Duration::ZERO {
        return Err(invalid("Interval and TTL cannot both be specified"));
    }
    if interval_kind && interval == Duration::ZERO {
        return Err(invalid(
            "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks",
        ));
    }
    if !interval_kind && ttl == Duration::ZERO {
        return Err(invalid("TTL must be > 0 for TTL checks"));
    }
    if !http.is_empty() && !tcp.is_empty() {
        return Err(invalid("a check is HTTP or TCP, not both"));
    }
    let interval = if interval_kind && interval < CHECK_INTERVAL_MIN {
        tracing::warn!(check = %if id.is_empty() { &name } else { &id }, minimum_interval = "1s", "check has interval below minimum");
        CHECK_INTERVAL_MIN
    } else {
        interval
    };
    let timeout = if timeout == Duration::ZERO {
        CHECK_TIMEOUT_DEFAULT
    } else {
        timeout
    };
    let kind = if !http.is_empty() {
        CheckKind::Http {
            url: http,
            method,
            header,
            body,
            interval,
            timeout,
            tls_skip_verify,
        }
    } else if !tcp.is_empty() {
        CheckKind::Tcp {
            address: tcp,
            interval,
            timeout,
        }
    } else {
        CheckKind::Ttl { ttl }
    };
    Ok(Some(CheckDef {
        id,
        name,
        notes,
        service_id,
        status,
        kind,
        deregister_critical_after: (deregister > Duration::ZERO).then_some(deregister),
    }))
}

/// Consul's `ServiceDefinition` from the body of
/// `/v1/agent/service/register`, validated in Consul's order.
fn parse_service_definition(value: &Value) -> Result<ServiceDef, ApiError> {
    let translated = translate(value, SERVICE_ALIASES);
    let value = &translated;
    only_known(value, SERVICE_KEYS).map_err(decode_failed)?;
    let f = Fields::top(value, "ServiceDefinition").map_err(decode_failed)?;
    // The fields a `NodeService` shares; the name is `Name` here.
    let mut service = parse_service(&f).map_err(decode_failed)?;
    service.service = f.string("Name").map_err(decode_failed)?;
    for unsupported in ["Proxy", "Connect"] {
        if get(value, unsupported).is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty())) {
            return Err(ApiError::bad_request(format!(
                "Invalid service: {unsupported} is not supported by this agent (Connect is not implemented)"
            )));
        }
    }
    let mut checks = Vec::new();
    if let Some(c) = get(value, "Check") {
        if let Some(d) = parse_check(c, "CheckType", false)? {
            checks.push(d);
        }
    }
    match get(value, "Checks") {
        None => {}
        Some(Value::Array(items)) => {
            for c in items.iter().filter(|c| !c.is_null()) {
                match parse_check(c, "CheckType", false)? {
                    Some(d) => checks.push(d),
                    None => {
                        return Err(ApiError::bad_request("Invalid check: TTL must be > 0 for TTL checks"))
                    }
                }
            }
        }
        Some(v) => {
            return Err(decode_failed(format!(
                "json: cannot unmarshal {} into Go struct field ServiceDefinition.Checks of type structs.CheckTypes",
                super::gojson::kind(v)
            )))
        }
    }
    if service.service.is_empty() {
        return Err(ApiError::bad_request("Missing service name"));
    }
    if matches!(service.address.as_str(), "0.0.0.0" | "::" | "[::]") {
        return Err(ApiError::bad_request("Invalid service address"));
    }
    if service.id.is_empty() {
        service.id = service.service.clone();
    }
    if let Some(w) = service.weights {
        if !w.is_valid() {
            return Err(ApiError::bad_request(format!(
                "Invalid Weights: passing must be between 1 and 65535 and warning between 0 and 65535, got {} and {}",
                w.passing, w.warning
            )));
        }
    } else {
        service.weights = Some(Weights::DEFAULT);
    }
    if let Some(why) = tern_core::fsm::service_meta_error(&service) {
        return Err(ApiError::bad_request(format!(
            "Invalid Service Meta: {why}"
        )));
    }
    if service.kind == "connect-proxy" {
        return Err(ApiError::bad_request(
            "Validation failed: Kind connect-proxy is not supported by this agent: Connect proxies are not implemented",
        ));
    }
    if checks
        .iter()
        .any(|c| !c.status.is_empty() && !STATUSES.contains(&c.status.as_str()))
    {
        return Err(ApiError::bad_request(
            "Status for checks must 'passing', 'warning', 'critical'",
        ));
    }
    let mut def = ServiceDef { service, checks };
    def.default_checks();
    Ok(def)
}

/// A service definition from an agent config file (already in the API's
/// JSON), checked as the endpoint checks it; the error text names what is
/// wrong.
pub(crate) fn service_from_config(value: &Value) -> Result<ServiceDef, String> {
    parse_service_definition(value).map_err(|e| e.text)
}

/// A standalone check definition from an agent config file.
pub(crate) fn check_from_config(value: &Value) -> Result<CheckDef, String> {
    let name = get(value, "Name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        return Err("Missing check name".into());
    }
    match parse_check(value, "CheckDefinition", true).map_err(|e| e.text)? {
        Some(mut def) => {
            if def.id.is_empty() {
                def.id = def.name.clone();
            }
            Ok(def)
        }
        None => Err("Invalid check: TTL must be > 0 for TTL checks".into()),
    }
}

// ----------------------------------------------------------------- writes

/// `PUT /v1/agent/service/register[?replace-existing-checks]`.
pub(crate) async fn register_service(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
    body: axum::body::Body,
) -> ApiResult {
    let params = Params::new(query);
    let replace = params
        .get("replace-existing-checks")
        .is_some_and(|v| v.is_empty() || v == "true");
    let value = read_json(body).await?;
    let def = parse_service_definition(&value)?;
    local(&agent)?.add_service(def, replace).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/service/deregister/<id>`.
pub(crate) async fn deregister_service(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
) -> ApiResult {
    local(&agent)?.remove_service(&id).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/check/register`.
pub(crate) async fn register_check(
    State(agent): State<AgentHandle>,
    body: axum::body::Body,
) -> ApiResult {
    let value = read_json(body).await?;
    let name = match get(&value, "Name") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let status = match get(&value, "Status") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let parsed = parse_check(&value, "CheckDefinition", true)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing check name"));
    }
    if !status.is_empty() && !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::bad_request("Bad check status"));
    }
    let Some(mut def) = parsed else {
        return Err(ApiError::bad_request(
            "Invalid check: TTL must be > 0 for TTL checks",
        ));
    };
    if def.id.is_empty() {
        def.id = def.name.clone();
    }
    local(&agent)?.add_check(def).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/check/deregister/<id>`.
pub(crate) async fn deregister_check(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
) -> ApiResult {
    local(&agent)?.remove_check(&id).await?;
    Ok(empty_ok())
}

async fn set_ttl(agent: &AgentHandle, id: &str, status: &str, note: &str) -> ApiResult {
    local(agent)?.update_ttl(id, status, note).await?;
    Ok(empty_ok())
}

/// `PUT /v1/agent/check/pass/<id>?note=`.
pub(crate) async fn pass(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let note = Params::new(query)
        .get("note")
        .unwrap_or_default()
        .to_owned();
    set_ttl(&agent, &id, "passing", &note).await
}

/// `PUT /v1/agent/check/warn/<id>?note=`.
pub(crate) async fn warn(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let note = Params::new(query)
        .get("note")
        .unwrap_or_default()
        .to_owned();
    set_ttl(&agent, &id, "warning", &note).await
}

/// `PUT /v1/agent/check/fail/<id>?note=`.
pub(crate) async fn fail(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let note = Params::new(query)
        .get("note")
        .unwrap_or_default()
        .to_owned();
    set_ttl(&agent, &id, "critical", &note).await
}

/// `PUT /v1/agent/check/update/<id>` with `{"Status": .., "Output": ..}`.
pub(crate) async fn update(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> ApiResult {
    let value = read_json(body).await?;
    only_known(&value, &["status", "output"]).map_err(decode_failed)?;
    let f = Fields::top(&value, "checkUpdate").map_err(decode_failed)?;
    let status = f.string("Status").map_err(decode_failed)?;
    let output = f.string("Output").map_err(decode_failed)?;
    if !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Invalid check status: '{status}'"
        )));
    }
    set_ttl(&agent, &id, &status, &output).await
}

// ------------------------------------------------------------------ reads

/// Consul's `api.AgentService` as `buildAgentService` fills it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentServiceJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    meta: BTreeMap<&'a str, &'a str>,
    port: i64,
    address: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tagged_addresses: BTreeMap<&'a str, ServiceAddressJson<'a>>,
    weights: WeightsOut,
    enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_hash: Option<String>,
    datacenter: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WeightsOut {
    passing: i64,
    warning: i64,
}

fn agent_service<'a>(s: &'a Service, dc: &'a str) -> AgentServiceJson<'a> {
    let w = s.weights.unwrap_or(Weights::DEFAULT);
    AgentServiceJson {
        kind: &s.kind,
        id: &s.id,
        service: &s.service,
        tags: s.tags.as_deref().unwrap_or(&[]),
        meta: s
            .meta
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        port: s.port,
        address: &s.address,
        tagged_addresses: s
            .tagged_addresses
            .iter()
            .map(|(k, a)| {
                (
                    k.as_str(),
                    ServiceAddressJson {
                        address: &a.address,
                        port: a.port,
                    },
                )
            })
            .collect(),
        weights: WeightsOut {
            passing: if w.passing > 0 { w.passing } else { 1 },
            warning: w.warning,
        },
        enable_tag_override: s.enable_tag_override,
        content_hash: None,
        datacenter: dc,
    }
}

fn pretty(params: &Params) -> bool {
    params.has("pretty")
}

/// `GET /v1/agent/services`: every service by ID.
pub(crate) async fn services(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let view = local(&agent)?.view();
    let out: BTreeMap<&str, AgentServiceJson<'_>> = view
        .services
        .iter()
        .map(|s| (s.id.as_str(), agent_service(s, &view.datacenter)))
        .collect();
    let out = filter_map(out, &params)?;
    json(&out, pretty(&params))
}

/// `?filter=` over a map's values, as Consul filters these maps.
fn filter_map<'k, T: Serialize>(
    map: BTreeMap<&'k str, T>,
    params: &Params,
) -> Result<BTreeMap<&'k str, T>, ApiError> {
    let Some(f) = super::filter::from_query(params.get("filter"))? else {
        return Ok(map);
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if !super::filter::apply(vec![&v], Some(&f))?.is_empty() {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// Consul's `ContentHash`: a hash of the service as answered, hex.
fn content_hash(s: &AgentServiceJson<'_>) -> String {
    let bytes = serde_json::to_vec(s).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /v1/agent/service/<id>[?hash=&wait=]`: one service with its
/// `ContentHash`; with `?hash=` equal to the current one, the answer waits
/// for a change or the wait (5 min by default, 10 at most).
pub(crate) async fn service(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let handle = local(&agent)?;
    let mut watch = handle.watch();
    let wait = match params.get("wait") {
        None => StdDuration::from_secs(300),
        Some(w) => crate::config::duration::parse_go_nanos(w)
            .filter(|n| *n >= 0)
            .map(|n| StdDuration::from_nanos(n as u64).min(StdDuration::from_secs(600)))
            .ok_or_else(|| ApiError::bad_request("Invalid wait time"))?,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let want = params.get("hash").map(str::to_owned);
    loop {
        let view: std::sync::Arc<LocalView> = watch.borrow_and_update().clone();
        let Some(s) = view.services.iter().find(|s| s.id == id) else {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                text: format!("unknown service ID: {id}"),
            });
        };
        let mut out = agent_service(s, &view.datacenter);
        let hash = content_hash(&out);
        let unchanged = want.as_deref() == Some(hash.as_str());
        if !unchanged || tokio::time::Instant::now() >= deadline {
            out.content_hash = Some(hash.clone());
            let mut response = json(&out, pretty(&params))?;
            if let Ok(v) = HeaderValue::from_str(&hash) {
                response.headers_mut().insert("X-Consul-ContentHash", v);
            }
            return Ok(response);
        }
        if tokio::time::timeout_at(deadline, watch.changed())
            .await
            .is_err()
        {
            continue;
        }
    }
}

/// `GET /v1/agent/checks`: every check by ID.
pub(crate) async fn checks(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let view = local(&agent)?.view();
    let out: BTreeMap<&str, HealthCheckJson<'_>> = view
        .checks
        .iter()
        .map(|c| (c.check_id.as_str(), HealthCheckJson::from(c)))
        .collect();
    let out = filter_map(out, &params)?;
    json(&out, pretty(&params))
}

/// Consul's `api.AgentServiceChecksInfo`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceChecksInfo<'a> {
    aggregated_status: &'static str,
    service: AgentServiceJson<'a>,
    checks: Vec<HealthCheckJson<'a>>,
}

fn status_code(status: &str) -> StatusCode {
    match status {
        "passing" => StatusCode::OK,
        "warning" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The checks that tell a service's health: its own and the node's, with
/// the fields `api.HealthCheck` carries there (no type or definition).
fn health_checks(view: &LocalView, service_id: &str) -> Vec<Check> {
    view.checks
        .iter()
        .filter(|c| c.service_id == service_id || c.service_id.is_empty())
        .map(|c| Check {
            kind: String::new(),
            definition: Default::default(),
            ..c.clone()
        })
        .collect()
}

fn text_wanted(params: &Params, headers: &HeaderMap) -> bool {
    params.get("format") == Some("text")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with("text/plain"))
}

fn with_reason(mut response: Response, code: StatusCode, reason: &str) -> Response {
    *response.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(reason) {
        response.headers_mut().insert("X-Consul-Reason", v);
    }
    response
}

fn text(code: StatusCode, body: &str) -> Response {
    with_reason(
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body.to_owned(),
        )
            .into_response(),
        code,
        body,
    )
}

/// `GET /v1/agent/health/service/name/<name>[?format=text]`.
pub(crate) async fn health_by_name(
    State(agent): State<AgentHandle>,
    Path(name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> ApiResult {
    let params = Params::new(query);
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing service Name"));
    }
    let view = local(&agent)?.view();
    let instances: Vec<&Service> = view.services.iter().filter(|s| s.service == name).collect();
    let all_checks: Vec<Vec<Check>> = instances
        .iter()
        .map(|s| health_checks(&view, &s.id))
        .collect();
    let mut code = StatusCode::NOT_FOUND;
    let mut reason = format!("ServiceName {name} Not Found");
    let mut infos = Vec::new();
    for (s, checks) in instances.iter().zip(&all_checks) {
        let status = aggregate(checks.iter().map(|c| c.status.as_str()));
        let c = status_code(status);
        if code == StatusCode::NOT_FOUND || c.as_u16() > code.as_u16() {
            code = c;
            reason = status.to_owned();
        }
        infos.push(ServiceChecksInfo {
            aggregated_status: status,
            service: agent_service(s, &view.datacenter),
            checks: checks.iter().map(HealthCheckJson::from).collect(),
        });
    }
    if text_wanted(&params, &headers) {
        return Ok(text(code, &reason));
    }
    Ok(with_reason(json(&infos, pretty(&params))?, code, &reason))
}

/// `GET /v1/agent/health/service/id/<id>[?format=text]`.
pub(crate) async fn health_by_id(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> ApiResult {
    let params = Params::new(query);
    if id.is_empty() {
        return Err(ApiError::bad_request("Missing serviceID"));
    }
    let view = local(&agent)?.view();
    let Some(s) = view.services.iter().find(|s| s.id == id) else {
        let reason = format!("ServiceId {id} not found");
        if text_wanted(&params, &headers) {
            return Ok(text(StatusCode::NOT_FOUND, &reason));
        }
        let body =
            serde_json::json!({"AggregatedStatus": "critical", "Service": null, "Checks": null});
        return Ok(with_reason(
            json(&body, pretty(&params))?,
            StatusCode::NOT_FOUND,
            &reason,
        ));
    };
    let checks = health_checks(&view, &s.id);
    let status = aggregate(checks.iter().map(|c| c.status.as_str()));
    let code = status_code(status);
    if text_wanted(&params, &headers) {
        return Ok(text(code, status));
    }
    let info = ServiceChecksInfo {
        aggregated_status: status,
        service: agent_service(s, &view.datacenter),
        checks: checks.iter().map(HealthCheckJson::from).collect(),
    };
    Ok(with_reason(json(&info, pretty(&params))?, code, status))
}

/// `.../name/` and `.../id/` with nothing after them.
pub(crate) async fn health_missing_name() -> ApiResult {
    Err(ApiError::bad_request("Missing service Name"))
}

pub(crate) async fn health_missing_id() -> ApiResult {
    Err(ApiError::bad_request("Missing serviceID"))
}
