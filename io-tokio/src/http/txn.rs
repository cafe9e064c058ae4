//! `PUT /v1/txn`, as Consul's agent/txn_endpoint.go: a JSON list of KV,
//! Node, Service and Check operations. One with a write goes through the
//! log and is applied whole or not at all (`core/src/fsm/txn.rs`); one of
//! reads alone is served as a read, in the request's consistency mode, with
//! `X-Consul-KnownLeader` and `X-Consul-LastContact` (no index: it does not
//! block). Success is 200 `{"Results": [...], "Errors": null}`; a failed
//! operation is 409 `{"Results": null, "Errors": [{"OpIndex", "What"}]}`.
//!
//! Bad input, with Consul's status and text: a body past the limit is 413
//! `Request body too large, max size: N bytes`; more than 128 operations is
//! 413 `Transaction contains too many operations (N > 128)`; a value past
//! the KV limit is 413 `Value for key "k" is too large (N > M bytes)`; a
//! body that is not a list of operations is 400 `Failed to parse body: ...`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use tern_core::fsm::{
    ApplyResult, CatalogVerb, KvVerb, Node, TxnError, TxnOp, TxnOutcome, TxnResult, TXN_OPS_MAX,
};
use tern_core::rpc::{Op, ReadMode, ReplyBody};

use super::catalog::{parse_check, parse_service, NodeJson, NodeServiceJson};
use super::gojson::Fields;
use super::health::HealthCheckJson;
use super::kv::DirEntry;
use super::params::{Params, QueryOptions};
use super::reply::{ApiError, ApiResult};
use crate::agent::AgentHandle;

fn too_large(text: String) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        text,
    }
}

pub(crate) async fn txn(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let params = Params::new(query);
    let mut opts = QueryOptions::parse(&params, agent.options())?;
    opts.blocking = None;
    // Consul's limit is the larger of `txn_max_req_len` and the KV value
    // limit, both 512 KiB by default.
    let value_max = agent.options().core.kv_value_bytes_max;
    let max = value_max;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_big = || too_large(format!("Request body too large, max size: {max} bytes"));
    if declared.is_some_and(|n| n > max as u64) {
        // Read (and drop) what the client is still sending, as the KV
        // endpoint does, so it gets the 413 rather than a reset.
        let _ = axum::body::to_bytes(body, super::kv::OVERSIZE_DRAIN_BYTES_MAX as usize).await;
        return Err(too_big());
    }
    let bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_big())?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("Failed to parse body: {e}")))?;
    let items = match &value {
        Value::Array(items) => items,
        Value::Null => &Vec::new(),
        other => {
            return Err(ApiError::bad_request(format!(
                "Failed to parse body: json: cannot unmarshal {} into Go value of type api.TxnOps",
                super::gojson::kind(other)
            )))
        }
    };
    if items.len() > TXN_OPS_MAX {
        return Err(too_large(format!(
            "Transaction contains too many operations ({} > {TXN_OPS_MAX})",
            items.len()
        )));
    }
    let mut ops = Vec::new();
    let mut unknown = Vec::new();
    for item in items {
        match parse_op(item, value_max, &agent.options().core.datacenter.0)? {
            Parsed::Op(op) => ops.push(*op),
            Parsed::UnknownVerb(what) => {
                unknown.push(TxnError {
                    op_index: ops.len() as u32,
                    what,
                });
                // Keep positions: a placeholder read that is never sent.
                ops.push(TxnOp::Kv {
                    verb: KvVerb::Get,
                    key: String::new(),
                    value: Default::default(),
                    flags: 0,
                    index: 0,
                    session: String::new(),
                });
            }
            Parsed::Nothing => {}
        }
    }
    if !unknown.is_empty() {
        // The state store refuses an unknown verb as a failed operation.
        return outcome(Err(unknown), opts.pretty, None);
    }
    let writes = ops.iter().any(TxnOp::is_write);
    let mut request = opts.request(Op::Txn(ops));
    if writes {
        request.read_mode = ReadMode::Default;
    }
    let reply = agent.call(request).await?;
    let meta = (!writes).then_some((reply.known_leader, reply.last_contact_ms));
    match reply.body {
        ReplyBody::Applied(ApplyResult::Txn(o)) | ReplyBody::Txn(o) => {
            outcome(o, opts.pretty, meta)
        }
        _ => Err(ApiError::unexpected_reply("txn")),
    }
}

/// The answer: 200 with the results, or 409 with the errors.
fn outcome(o: TxnOutcome, pretty: bool, read_meta: Option<(bool, u64)>) -> ApiResult {
    let (status, body) = match &o {
        Ok(results) => (
            StatusCode::OK,
            TxnResponse {
                results: Some(results.iter().map(ResultJson::from).collect()),
                errors: None,
            },
        ),
        Err(errors) => (
            StatusCode::CONFLICT,
            TxnResponse {
                results: None,
                errors: Some(
                    errors
                        .iter()
                        .map(|e| ErrorJson {
                            op_index: e.op_index,
                            what: &e.what,
                        })
                        .collect(),
                ),
            },
        ),
    };
    let mut bytes = if pretty {
        serde_json::to_vec_pretty(&body)
    } else {
        serde_json::to_vec(&body)
    }
    .map_err(|e| ApiError::internal(format!("Failed to encode response: {e}")))?;
    if pretty {
        bytes.push(b'\n');
    }
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    if let Some((known_leader, last_contact)) = read_meta {
        let h = response.headers_mut();
        for (name, value) in [
            ("x-consul-knownleader", known_leader.to_string()),
            ("x-consul-lastcontact", last_contact.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
    }
    Ok(response)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResponse<'a> {
    results: Option<Vec<ResultJson<'a>>>,
    errors: Option<Vec<ErrorJson<'a>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorJson<'a> {
    op_index: u32,
    what: &'a str,
}

/// Consul's `TxnResult`: one of its fields set.
#[derive(Serialize)]
enum ResultJson<'a> {
    #[serde(rename = "KV")]
    Kv(DirEntry<'a>),
    Node(NodeJson<'a>),
    Service(NodeServiceJson<'a>),
    Check(HealthCheckJson<'a>),
}

impl<'a> From<&'a TxnResult> for ResultJson<'a> {
    fn from(r: &'a TxnResult) -> ResultJson<'a> {
        match r {
            TxnResult::Kv(e) => ResultJson::Kv(DirEntry::from(e)),
            TxnResult::Node(n) => ResultJson::Node(NodeJson::from(n)),
            TxnResult::Service(s) => ResultJson::Service(NodeServiceJson::from(s)),
            TxnResult::Check(c) => ResultJson::Check(HealthCheckJson::from(c)),
        }
    }
}

enum Parsed {
    Op(Box<TxnOp>),
    /// A verb the state store does not know: a failed operation (409).
    UnknownVerb(String),
    /// An operation naming none of KV, Node, Service, Check: Consul's
    /// `convertOps` drops it.
    Nothing,
}

fn bad(e: String) -> ApiError {
    ApiError::bad_request(format!("Failed to parse body: {e}"))
}

/// One element of the list (Consul's `api.TxnOp`).
fn parse_op(item: &Value, value_max: usize, own_dc: &str) -> Result<Parsed, ApiError> {
    let f = Fields::top(item, "TxnOp").map_err(bad)?;
    if let Some(kv) = f.object("KV", "KVTxnOp").map_err(bad)? {
        let key = kv.string("Key").map_err(bad)?;
        let verb = kv.string("Verb").map_err(bad)?;
        let value = match kv.string("Value").map_err(bad)? {
            s if s.is_empty() => Vec::new(),
            s => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|e| bad(format!("failed to decode value: {e}")))?,
        };
        if value.len() > value_max {
            return Err(too_large(format!(
                "Value for key {key:?} is too large ({} > {value_max} bytes)",
                value.len()
            )));
        }
        let Some(verb) = KvVerb::parse(&verb) else {
            return Ok(Parsed::UnknownVerb(format!("unknown KV verb {verb:?}")));
        };
        return Ok(Parsed::Op(Box::new(TxnOp::Kv {
            verb,
            key,
            value: value.into(),
            flags: kv.uint("Flags").map_err(bad)?,
            index: kv.uint("Index").map_err(bad)?,
            session: kv.string("Session").map_err(bad)?,
        })));
    }
    if let Some(n) = f.object("Node", "NodeTxnOp").map_err(bad)? {
        let verb = n.string("Verb").map_err(bad)?;
        let Some(verb) = CatalogVerb::parse(&verb) else {
            return Ok(Parsed::UnknownVerb(format!("unknown Node verb {verb:?}")));
        };
        let node = match n.object("Node", "Node").map_err(bad)? {
            None => Node::default(),
            Some(node) => Node {
                id: node.string("ID").map_err(bad)?,
                node: node.string("Node").map_err(bad)?,
                address: node.string("Address").map_err(bad)?,
                datacenter: match node.string("Datacenter").map_err(bad)? {
                    dc if dc.is_empty() => own_dc.to_string(),
                    dc => dc,
                },
                tagged_addresses: node.string_map("TaggedAddresses").map_err(bad)?,
                meta: node.string_map("Meta").map_err(bad)?,
                create_index: 0,
                modify_index: node.uint("ModifyIndex").map_err(bad)?,
            },
        };
        return Ok(Parsed::Op(Box::new(TxnOp::Node { verb, node })));
    }
    if let Some(s) = f.object("Service", "ServiceTxnOp").map_err(bad)? {
        let verb = s.string("Verb").map_err(bad)?;
        let Some(verb) = CatalogVerb::parse(&verb) else {
            return Ok(Parsed::UnknownVerb(format!(
                "unknown Service verb {verb:?}"
            )));
        };
        let service = match s.object("Service", "AgentService").map_err(bad)? {
            None => Default::default(),
            Some(svc) => {
                let mut service = parse_service(&svc).map_err(bad)?;
                service.modify_index = svc.uint("ModifyIndex").map_err(bad)?;
                service
            }
        };
        return Ok(Parsed::Op(Box::new(TxnOp::Service {
            verb,
            node: s.string("Node").map_err(bad)?,
            service,
        })));
    }
    if let Some(c) = f.object("Check", "CheckTxnOp").map_err(bad)? {
        let verb = c.string("Verb").map_err(bad)?;
        let Some(verb) = CatalogVerb::parse(&verb) else {
            return Ok(Parsed::UnknownVerb(format!("unknown Check verb {verb:?}")));
        };
        let check = match c.object("Check", "HealthCheck").map_err(bad)? {
            None => Default::default(),
            Some(chk) => {
                let mut check = parse_check(&chk).map_err(bad)?;
                check.modify_index = chk.uint("ModifyIndex").map_err(bad)?;
                check
            }
        };
        return Ok(Parsed::Op(Box::new(TxnOp::Check { verb, check })));
    }
    Ok(Parsed::Nothing)
}
