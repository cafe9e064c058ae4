//! `/v1/session/...`: Consul's agent/session_endpoint.go (create, destroy,
//! renew, info, node, list) with its JSON shapes (`structs.Session`:
//! `LockDelay` in nanoseconds as Go encodes a `time.Duration`, `TTL` the
//! string the client sent, `NodeChecks`/`ServiceChecks` `null` when none,
//! the legacy `Checks` left out when empty).
//!
//! A create without a body is a session on this agent's node with check
//! `serfHealth`, a 15 s lock delay and behavior `release`. What the server
//! refuses (a missing node, a critical check, a bad TTL) is a 500 with
//! Consul's text, as its RPC errors are.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{any, get, put};
use axum::Router;
use serde::Serialize;
use serde_json::Value;
use tern_core::fsm::session::{parse_go_duration, LOCK_DELAY_DEFAULT_NS};
use tern_core::fsm::{ApplyResult, ServiceCheck, Session, SessionBehavior};
use tern_core::rpc::{Op, ReplyBody};

use super::gojson::Fields;
use super::params::{Params, QueryOptions};
use super::read;
use super::reply::{json, ApiError, ApiResult};
use crate::agent::AgentHandle;

/// Consul's `lockDelayMinThreshold`: a lock delay below 1000 (ns) is taken
/// as seconds (users send `5` meaning five seconds).
const LOCK_DELAY_MIN_THRESHOLD: u64 = 1000;

/// The session routes, merged into the API's router. Consul registers the
/// ID-taking paths as subtrees, so each is also answered without its
/// trailing slash by Go's `ServeMux` redirect.
pub(crate) fn routes() -> Router<AgentHandle> {
    let mut r = Router::new()
        .route("/v1/session/create", put(create))
        .route("/v1/session/list", get(list))
        .route("/v1/session/destroy/", put(missing_session))
        .route("/v1/session/destroy/{*id}", put(destroy))
        .route("/v1/session/renew/", put(missing_session))
        .route("/v1/session/renew/{*id}", put(renew))
        .route("/v1/session/info/", get(missing_session))
        .route("/v1/session/info/{*id}", get(info))
        .route("/v1/session/node/", get(missing_node))
        .route("/v1/session/node/{*node}", get(node));
    for root in [
        "/v1/session/destroy",
        "/v1/session/renew",
        "/v1/session/info",
        "/v1/session/node",
    ] {
        r = r.route(root, any(super::redirect_to_subtree));
    }
    r
}

// ----------------------------------------------------------------- JSON out

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceCheckJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    namespace: &'a str,
}

/// Consul's `structs.Session` (CE).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    node: &'a str,
    lock_delay: u64,
    behavior: &'static str,
    #[serde(rename = "TTL")]
    ttl: &'a str,
    node_checks: Option<&'a [String]>,
    service_checks: Option<Vec<ServiceCheckJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<&'a [String]>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a Session> for SessionJson<'a> {
    fn from(s: &'a Session) -> SessionJson<'a> {
        SessionJson {
            id: &s.id,
            name: &s.name,
            node: &s.node,
            lock_delay: s.lock_delay_ns,
            behavior: s.behavior.as_str(),
            ttl: &s.ttl,
            node_checks: (!s.node_checks.is_empty()).then_some(&s.node_checks[..]),
            service_checks: (!s.service_checks.is_empty()).then(|| {
                s.service_checks
                    .iter()
                    .map(|c| ServiceCheckJson {
                        id: &c.id,
                        namespace: &c.namespace,
                    })
                    .collect()
            }),
            checks: (!s.checks.is_empty()).then_some(&s.checks[..]),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

#[derive(Serialize)]
struct CreateJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
}

// ----------------------------------------------------------------- JSON in

/// The body of a create as Consul's `decodeBody` reads it into
/// `structs.Session` over the defaults, then `fixupEmptySessionChecks`.
fn parse_create(value: Option<&Value>, node: &str) -> Result<Session, CreateError> {
    let (mut s, behavior) = decode_create(value, node).map_err(CreateError::Decode)?;
    s.behavior = match behavior.as_str() {
        "" | "release" => SessionBehavior::Release,
        "delete" => SessionBehavior::Delete,
        other => {
            return Err(CreateError::Behavior(format!(
                "Invalid Behavior setting '{other}'"
            )))
        }
    };
    fixup_empty_checks(&mut s);
    Ok(s)
}

/// Why a create body is refused: not JSON of the right shape (400), or a
/// behavior Consul's server refuses (500).
#[derive(Debug, PartialEq, Eq)]
enum CreateError {
    Decode(String),
    Behavior(String),
}

/// The session the body describes over the defaults, and its behavior as
/// sent.
fn decode_create(value: Option<&Value>, node: &str) -> Result<(Session, String), String> {
    let mut s = Session {
        node: node.to_owned(),
        lock_delay_ns: LOCK_DELAY_DEFAULT_NS,
        node_checks: vec!["serfHealth".to_owned()],
        checks: vec!["serfHealth".to_owned()],
        ..Session::default()
    };
    let mut behavior = String::new();
    if let Some(value) = value {
        let f = Fields::top(value, "Session")?;
        let given = |name: &str| {
            value
                .as_object()
                .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(name)))
        };
        if given("Name") {
            s.name = f.string("Name")?;
        }
        if given("Node") {
            s.node = f.string("Node")?;
        }
        if given("TTL") {
            s.ttl = f.string("TTL")?;
        }
        if given("Behavior") {
            behavior = f.string("Behavior")?;
        }
        if given("LockDelay") {
            s.lock_delay_ns = lock_delay(value)?;
        }
        if given("NodeChecks") {
            s.node_checks = f.strings("NodeChecks")?.unwrap_or_default();
        }
        if given("Checks") {
            s.checks = f.strings("Checks")?.unwrap_or_default();
        }
        if given("ServiceChecks") {
            s.service_checks = f
                .object_list("ServiceChecks", "ServiceCheck")?
                .iter()
                .map(|c| {
                    Ok(ServiceCheck {
                        id: c.string("ID")?,
                        namespace: c.string("Namespace")?,
                    })
                })
                .collect::<Result<_, String>>()?;
        }
    }
    Ok((s, behavior))
}

/// Consul's `fixupEmptySessionChecks`: `Checks: []` empties the default
/// node check; the default `Checks` alone defers to `NodeChecks`; an empty
/// `NodeChecks` empties the default `Checks`.
fn fixup_empty_checks(s: &mut Session) {
    if s.checks.is_empty() {
        s.node_checks.clear();
    } else if (s.checks.len() == 1 && s.checks[0] == "serfHealth") || s.node_checks.is_empty() {
        s.checks.clear();
    }
}

/// Consul's `FixupLockDelay`: a Go duration string or a number of
/// nanoseconds, either taken as seconds below 1000.
fn lock_delay(value: &Value) -> Result<u64, String> {
    let raw = value
        .as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("LockDelay")))
        .map(|(_, v)| v);
    let ns = match raw {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::String(s)) => {
            parse_go_duration(s).ok_or_else(|| format!("time: invalid duration {s:?}"))?
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if (0.0..9.2e18).contains(&f) => f as u64,
            _ => {
                return Err(
                    "json: cannot unmarshal number into Go struct field Session.LockDelay of type time.Duration"
                        .to_owned(),
                )
            }
        },
        Some(_) => {
            return Err(
                "json: cannot unmarshal into Go struct field Session.LockDelay of type time.Duration"
                    .to_owned(),
            )
        }
    };
    Ok(if ns < LOCK_DELAY_MIN_THRESHOLD {
        ns.saturating_mul(1_000_000_000)
    } else {
        ns
    })
}

// ----------------------------------------------------------------- handlers

/// How big a create body may be (a session is a few strings).
const CREATE_BODY_BYTES_MAX: usize = 64 * 1024;

/// `PUT /v1/session/create`.
async fn create(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
    body: axum::body::Body,
) -> ApiResult {
    let params = Params::new(query);
    let opts = QueryOptions::parse(&params, agent.options())?;
    let bytes = axum::body::to_bytes(body, CREATE_BODY_BYTES_MAX)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            text: format!("Request body too large, max size: {CREATE_BODY_BYTES_MAX} bytes"),
        })?;
    let value: Option<Value> = if bytes.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?,
        )
    };
    let session = match parse_create(value.as_ref(), &agent.options().core.node_name.0) {
        Ok(s) => s,
        // The behavior is checked by Consul's server: a 500.
        Err(CreateError::Behavior(e)) => return Err(ApiError::internal(e)),
        Err(CreateError::Decode(e)) => {
            return Err(ApiError::bad_request(format!("Request decode failed: {e}")))
        }
    };
    let mut request = opts.request(Op::SessionCreate(Box::new(session)));
    request.blocking = None;
    let reply = agent.call(request).await?;
    match reply.body {
        ReplyBody::Applied(ApplyResult::Session(id)) => json(&CreateJson { id: &id }, opts.pretty),
        ReplyBody::Applied(ApplyResult::Refused(text)) => Err(ApiError::internal(text)),
        _ => Err(ApiError::unexpected_reply("a session create")),
    }
}

async fn missing_session() -> ApiResult {
    Err(ApiError::bad_request("Missing session"))
}

async fn missing_node() -> ApiResult {
    Err(ApiError::bad_request("Missing node name"))
}

/// `PUT /v1/session/destroy/<id>`: `true`, whether or not it existed.
async fn destroy(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let opts = QueryOptions::parse(&params, agent.options())?;
    let mut request = opts.request(Op::SessionDestroy { id });
    request.blocking = None;
    let reply = agent.call(request).await?;
    match reply.body {
        ReplyBody::Applied(ApplyResult::Session(_)) => json(&true, opts.pretty),
        ReplyBody::Applied(ApplyResult::Refused(text)) => Err(ApiError::internal(text)),
        _ => Err(ApiError::unexpected_reply("a session destroy")),
    }
}

/// `PUT /v1/session/renew/<id>`: the session in a list, or 404 `Session id
/// '<id>' not found`.
async fn renew(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let opts = QueryOptions::parse(&params, agent.options())?;
    let mut request = opts.request(Op::SessionRenew { id: id.clone() });
    request.blocking = None;
    let reply = agent.call(request).await?;
    let ReplyBody::Sessions(sessions) = reply.body else {
        return Err(ApiError::unexpected_reply("a session renew"));
    };
    if sessions.is_empty() {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            text: format!("Session id '{id}' not found"),
        });
    }
    sessions_json(&sessions, opts.pretty)
}

fn sessions_json(sessions: &[Session], pretty: bool) -> ApiResult {
    let body: Vec<SessionJson<'_>> = sessions.iter().map(SessionJson::from).collect();
    json(&body, pretty)
}

async fn read_sessions(agent: &AgentHandle, query: Vec<(String, String)>, op: Op) -> ApiResult {
    let params = Params::new(query);
    let opts = QueryOptions::parse(&params, agent.options())?;
    let (reply, meta) = read(agent, &opts, op).await?;
    let ReplyBody::Sessions(sessions) = reply.body else {
        return Err(ApiError::unexpected_reply("a session read"));
    };
    Ok(meta.apply(sessions_json(&sessions, opts.pretty)?))
}

/// `GET /v1/session/info/<id>`: `[]` when there is no such session.
async fn info(
    State(agent): State<AgentHandle>,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    read_sessions(&agent, query, Op::SessionInfo { id }).await
}

/// `GET /v1/session/node/<node>`.
async fn node(
    State(agent): State<AgentHandle>,
    Path(node): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    read_sessions(&agent, query, Op::SessionNode { node }).await
}

/// `GET /v1/session/list`.
async fn list(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    read_sessions(&agent, query, Op::SessionList).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Session, CreateError> {
        let v: Value = serde_json::from_str(body).unwrap();
        parse_create(Some(&v), "agent-node")
    }

    #[test]
    fn a_create_without_a_body_takes_consuls_defaults() {
        let s = parse_create(None, "agent-node").unwrap();
        assert_eq!(s.node, "agent-node");
        assert_eq!(s.node_checks, ["serfHealth"]);
        assert!(s.checks.is_empty());
        assert_eq!(s.lock_delay_ns, 15_000_000_000);
        assert_eq!(s.behavior, SessionBehavior::Release);
        assert_eq!(s.ttl, "");
    }

    #[test]
    fn lock_delays_below_1000_are_seconds() {
        assert_eq!(
            parse(r#"{"LockDelay":"5s"}"#).unwrap().lock_delay_ns,
            5_000_000_000
        );
        assert_eq!(
            parse(r#"{"lockdelay":5}"#).unwrap().lock_delay_ns,
            5_000_000_000
        );
        assert_eq!(
            parse(r#"{"LockDelay":"5ns"}"#).unwrap().lock_delay_ns,
            5_000_000_000
        );
        assert_eq!(parse(r#"{"LockDelay":2000}"#).unwrap().lock_delay_ns, 2000);
        assert_eq!(parse(r#"{"LockDelay":"0s"}"#).unwrap().lock_delay_ns, 0);
        assert!(parse(r#"{"LockDelay":"soon"}"#).is_err());
    }

    #[test]
    fn checks_follow_consuls_fixup() {
        let s = parse(r#"{"Checks":[]}"#).unwrap();
        assert!(s.node_checks.is_empty() && s.checks.is_empty());
        let s = parse(r#"{"NodeChecks":[]}"#).unwrap();
        assert!(s.node_checks.is_empty() && s.checks.is_empty());
        let s = parse(r#"{"NodeChecks":["a"],"ServiceChecks":[{"ID":"web"}]}"#).unwrap();
        assert_eq!(s.node_checks, ["a"]);
        assert!(s.checks.is_empty());
        assert_eq!(s.service_checks[0].id, "web");
    }

    #[test]
    fn a_bad_behavior_is_the_servers_refusal() {
        let e = parse(r#"{"Behavior":"explode"}"#).unwrap_err();
        assert_eq!(
            e,
            CreateError::Behavior("Invalid Behavior setting 'explode'".into())
        );
        assert_eq!(
            parse(r#"{"Behavior":"delete"}"#).unwrap().behavior,
            SessionBehavior::Delete
        );
        assert!(parse(r#"{"Name":7}"#).is_err());
    }

    #[test]
    fn the_json_is_consuls() {
        let s = Session {
            id: "x".into(),
            node: "n".into(),
            lock_delay_ns: 15_000_000_000,
            ttl: "30s".into(),
            node_checks: vec!["serfHealth".into()],
            create_index: 5,
            modify_index: 5,
            ..Session::default()
        };
        assert_eq!(
            serde_json::to_string(&SessionJson::from(&s)).unwrap(),
            r#"{"ID":"x","Name":"","Node":"n","LockDelay":15000000000,"Behavior":"release","TTL":"30s","NodeChecks":["serfHealth"],"ServiceChecks":null,"CreateIndex":5,"ModifyIndex":5}"#
        );
    }
}
