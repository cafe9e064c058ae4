//! `/v1/operator/keyring`: the gossip encryption keyring of every member
//! (Consul's agent/operator_endpoint.go `OperatorKeyringEndpoint`, with the
//! answers shaped as agent/consul/internal_endpoint.go `KeyringOperation`
//! and serf's keymanager.go gather them).
//!
//! | method | body | what |
//! |---|---|---|
//! | `GET` | | every key and how many members hold it, per pool (`?local-only`: this agent's) |
//! | `POST` | `{"Key": "<base64>"}` | install a key everywhere |
//! | `PUT` | `{"Key": ...}` | make an installed key the primary everywhere |
//! | `DELETE` | `{"Key": ...}` | remove a key that is not the primary everywhere |
//!
//! Each operation runs on the WAN pool (a server's) and then the LAN pool;
//! in each, this agent applies it and asks every live member over a sealed
//! stream (`tern_core::gossip` keyring operations). A pool where a member
//! refused, or did not answer in time, makes the request a 500 whose text
//! is Consul's: one line per pool (`dc1 (LAN) error: 1/3 nodes reported
//! failure`) and one per member that said why, in go-multierror's layout.
//!
//! Not here: other datacenters' LAN pools (Consul forwards to one server of
//! each; Tern servers of another datacenter are reached only through the
//! WAN pool), and `relay-factor` (validated, then unused: answers come back
//! directly on each member's stream).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::Method;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tern_core::gossip::{KeyOp, KeyReport};

use super::params::Params;
use super::reply::{empty_ok, json, ApiError, ApiResult};
use crate::agent::{AgentHandle, Pool};
use crate::keyring::encode_key;

/// Consul's `api.KeyringResponse`.
#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "PascalCase")]
struct KeyringResponse {
    #[serde(rename = "WAN")]
    wan: bool,
    datacenter: String,
    segment: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    messages: BTreeMap<String, String>,
    keys: BTreeMap<String, usize>,
    primary_keys: BTreeMap<String, usize>,
    num_nodes: usize,
    /// Why this pool's operation failed (Consul's `structs.KeyringResponse.Error`).
    #[serde(skip)]
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeyringArgs {
    key: String,
}

pub(crate) async fn keyring(
    State(agent): State<AgentHandle>,
    method: Method,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult {
    let params = Params::new(query);
    let key = if method == Method::GET {
        String::new()
    } else {
        decode_args(&body)?.key
    };
    if let Some(r) = params.get("relay-factor").filter(|r| !r.is_empty()) {
        let n: i64 = r.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "Error parsing relay factor: strconv.Atoi: parsing {}: invalid syntax",
                super::params::go_quote(r)
            ))
        })?;
        if !(0..=5).contains(&n) {
            return Err(ApiError::bad_request(
                "Invalid relay-factor: Relay factor must be in range: [0, 5]",
            ));
        }
    }
    let mut local_only = false;
    if let Some(v) = params.get("local-only").filter(|v| !v.is_empty()) {
        local_only = crate::config::parse_bool(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Error parsing local-only: strconv.ParseBool: parsing {}: invalid syntax",
                super::params::go_quote(v)
            ))
        })?;
        if local_only && method != Method::GET {
            return Err(ApiError::bad_request(
                "Invalid use of local-only: local-only can only be set for list requests",
            ));
        }
    }
    if !agent.options().server {
        return Err(ApiError::internal(
            "keyring operations must run against a server node",
        ));
    }
    let dc = agent.options().core.datacenter.0.clone();
    if local_only {
        return json(&local(&agent, &dc).await?, params.has("pretty"));
    }
    let op = match method {
        Method::GET => KeyOp::List,
        _ => {
            let bytes = match base64::engine::general_purpose::STANDARD.decode(&key) {
                Ok(b) => b,
                // serf decodes the key before asking anyone: every pool
                // fails with Go's base64 error.
                Err(e) => return Err(every_pool_failed(&agent, &dc, go_base64_error(&e))),
            };
            match method {
                Method::POST => KeyOp::Install(bytes),
                Method::PUT => KeyOp::Use(bytes),
                _ => KeyOp::Remove(bytes),
            }
        }
    };
    let list = op == KeyOp::List;
    let pools = agent
        .keyring(op)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let responses: Vec<KeyringResponse> = pools
        .into_iter()
        .map(|(pool, report)| match report {
            Ok(r) => gather(pool, &dc, &r),
            Err(e) => KeyringResponse {
                wan: pool == Pool::Wan,
                datacenter: dc.clone(),
                error: Some(e.to_string()),
                ..Default::default()
            },
        })
        .collect();
    if let Some(text) = errors(&responses) {
        return Err(ApiError::internal(text));
    }
    if list {
        json(&responses, params.has("pretty"))
    } else {
        Ok(empty_ok())
    }
}

/// Consul's `decodeBody` into `keyringArgs`: an empty body is Go's `EOF`.
fn decode_args(body: &[u8]) -> Result<KeyringArgs, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request decode failed: EOF"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

/// Go's `base64.CorruptInputError` text.
fn go_base64_error(e: &base64::DecodeError) -> String {
    let at = match e {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            *at
        }
        base64::DecodeError::InvalidLength(n) => *n,
        base64::DecodeError::InvalidPadding => 0,
    };
    format!("illegal base64 data at input byte {at}")
}

fn every_pool_failed(agent: &AgentHandle, dc: &str, why: String) -> ApiError {
    let mut responses = Vec::new();
    if agent.options().wan.is_some() {
        responses.push(KeyringResponse {
            wan: true,
            datacenter: dc.into(),
            error: Some(why.clone()),
            ..Default::default()
        });
    }
    responses.push(KeyringResponse {
        datacenter: dc.into(),
        error: Some(why),
        ..Default::default()
    });
    ApiError::internal(errors(&responses).expect("every pool failed"))
}

/// serf's `streamKeyResp` and `handleKeyRequest`: count each member's keys
/// and primary key, keep each refusal's message, and fail the pool when a
/// member refused or did not answer.
fn gather(pool: Pool, dc: &str, r: &KeyReport) -> KeyringResponse {
    let mut out = KeyringResponse {
        wan: pool == Pool::Wan,
        datacenter: dc.into(),
        num_nodes: r.num_nodes,
        ..Default::default()
    };
    let mut failed = 0;
    for (name, result) in &r.responses {
        if !result.ok {
            failed += 1;
        }
        if !result.message.is_empty() {
            out.messages.insert(name.clone(), result.message.clone());
        }
        for k in &result.keys {
            *out.keys.entry(encode_key(&k.0)).or_default() += 1;
        }
        if let Some(p) = result.keys.first() {
            *out.primary_keys.entry(encode_key(&p.0)).or_default() += 1;
        }
    }
    if failed > 0 {
        out.error = Some(format!("{failed}/{} nodes reported failure", r.num_nodes));
    } else if r.responses.len() != r.num_nodes {
        out.error = Some(format!(
            "{}/{} nodes reported success",
            r.responses.len(),
            r.num_nodes
        ));
    }
    out
}

/// `?local-only`: this agent's keys, one member per pool.
async fn local(agent: &AgentHandle, dc: &str) -> Result<Vec<KeyringResponse>, ApiError> {
    let pools = agent
        .local_keyring()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out = Vec::new();
    for (pool, ring) in pools {
        let ring = ring.map_err(|e| ApiError::internal(e.to_string()))?;
        let mut r = KeyringResponse {
            wan: pool == Pool::Wan,
            datacenter: dc.into(),
            num_nodes: 1,
            ..Default::default()
        };
        for k in ring.keys() {
            r.keys.insert(encode_key(k), 1);
        }
        if let Some(p) = ring.primary() {
            r.primary_keys.insert(encode_key(p), 1);
        }
        out.push(r);
    }
    Ok(out)
}

/// Consul's `keyringErrorsOrNil`: for each failed pool, `<pool> error:
/// <why>` and then `<member>: <message>` for each member that said why,
/// joined as go-multierror's `ListFormatFunc` prints them.
fn errors(responses: &[KeyringResponse]) -> Option<String> {
    let mut errs = Vec::new();
    for r in responses {
        let Some(e) = &r.error else { continue };
        let pool = if r.wan {
            "WAN".to_string()
        } else {
            format!("{} (LAN)", r.datacenter)
        };
        errs.push(format!("{pool} error: {e}"));
        for (node, message) in &r.messages {
            errs.push(format!("{node}: {message}"));
        }
    }
    match errs.len() {
        0 => None,
        1 => Some(format!("1 error occurred:\n\t* {}\n\n", errs[0])),
        n => {
            let points: Vec<String> = errs.iter().map(|e| format!("* {e}")).collect();
            Some(format!(
                "{n} errors occurred:\n\t{}\n\n",
                points.join("\n\t")
            ))
        }
    }
}
