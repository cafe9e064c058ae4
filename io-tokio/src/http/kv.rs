//! `/v1/kv/<key>`: Consul's `agent/kvs_endpoint.go` for the operations this
//! release has (get, recurse, keys, raw, put, cas, delete, delete-tree).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use tern_core::fsm::{ApplyResult, KvCommand, KvWrite};
use tern_core::rpc::{Op, ReplyBody, Request};

use super::params::{Params, QueryOptions};
use super::read;
use super::reply::{json, not_found, ApiError, ApiResult};
use crate::agent::AgentHandle;

/// Where Consul's 413 text sends the reader (`kvs_endpoint.go`).
const KV_MAX_VALUE_SIZE_DOC: &str =
    "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size";

/// A KV entry as Consul's `DirEntry` is encoded (field order as Consul's).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DirEntry<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    /// Base64, or `null` for an empty value.
    value: Option<String>,
    /// The lock holder; left out when none (Consul's `omitempty`).
    #[serde(skip_serializing_if = "str::is_empty")]
    session: &'a str,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a tern_core::fsm::DirEntry> for DirEntry<'a> {
    fn from(e: &'a tern_core::fsm::DirEntry) -> DirEntry<'a> {
        DirEntry {
            lock_index: e.lock_index,
            key: &e.key,
            flags: e.flags,
            value: (!e.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
            session: &e.session,
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

/// `GET /v1/kv/` and `GET /v1/kv/<key>`.
pub(crate) async fn get_root(
    agent: State<AgentHandle>,
    query: Query<Vec<(String, String)>>,
) -> ApiResult {
    get(agent, Path(String::new()), query).await
}

pub(crate) async fn get(
    State(agent): State<AgentHandle>,
    Path(key): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (params, opts) = start(&agent, &key, query)?;
    if params.has("keys") {
        return get_keys(&agent, &params, opts, key).await;
    }
    let recurse = params.has("recurse");
    if !recurse && key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let op = if recurse {
        Op::KvList { prefix: key }
    } else {
        Op::KvGet { key }
    };
    let (reply, meta) = read(&agent, &opts, op).await?;
    let entries: Vec<tern_core::fsm::DirEntry> = match reply.body {
        ReplyBody::Entry(entry) => entry.into_iter().collect(),
        ReplyBody::Entries(entries) => entries,
        // What servers of an older build answer.
        ReplyBody::Kv(entry) => entry.into_iter().map(Into::into).collect(),
        ReplyBody::KvList(entries) => entries.into_iter().map(Into::into).collect(),
        _ => return Err(ApiError::unexpected_reply("a KV read")),
    };
    // An empty recurse is a 404 too (py-consul's tests expect `None`).
    let Some(first) = entries.first() else {
        return Ok(meta.apply(not_found()));
    };
    if params.has("raw") && !recurse {
        return Ok(meta.apply(raw(first.value.clone())));
    }
    let body: Vec<DirEntry<'_>> = entries.iter().map(DirEntry::from).collect();
    Ok(meta.apply(json(&body, opts.pretty)?))
}

/// `?keys`: an empty list only at the root; elsewhere no keys is a 404.
async fn get_keys(
    agent: &AgentHandle,
    params: &Params,
    opts: QueryOptions,
    prefix: String,
) -> ApiResult {
    // Consul still honours its historic spelling; the correct one wins.
    let separator = params
        .get("separator")
        .or_else(|| params.get("seperator"))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let root = prefix.is_empty();
    let (reply, meta) = read(agent, &opts, Op::KvKeys { prefix, separator }).await?;
    let ReplyBody::Keys(keys) = reply.body else {
        return Err(ApiError::unexpected_reply("a KV keys read"));
    };
    if keys.is_empty() && !root {
        return Ok(meta.apply(not_found()));
    }
    Ok(meta.apply(json(&keys, opts.pretty)?))
}

/// The value's bytes as Consul's `?raw` sends them, with its XSS guards.
/// The body shares the value's allocation (no copy of it).
fn raw(value: tern_core::fsm::Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "sandbox"),
        ],
        axum::body::Bytes::from_owner(value),
    )
        .into_response()
}

/// `PUT /v1/kv/<key>`: the body is the value, whatever its Content-Type.
pub(crate) async fn put_root(
    agent: State<AgentHandle>,
    query: Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    put(agent, Path(String::new()), query, headers, body).await
}

pub(crate) async fn put(
    State(agent): State<AgentHandle>,
    Path(key): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let (params, opts) = start(&agent, &key, query)?;
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    params.check_conflicting(&["cas", "acquire", "release"])?;
    let flags = params.u64("flags")?.unwrap_or(0);
    let cas = params.u64("cas")?;
    let acquire = params.get("acquire").map(str::to_owned);
    let release = params.get("release").map(str::to_owned);
    let value = read_value(&headers, body, agent.options().core.kv_value_bytes_max).await?;
    let write = KvWrite {
        key,
        flags,
        value: value.into(),
    };
    // Consul's `KVSPut`: `?acquire=<session>` is a lock, `?release=` an
    // unlock (an empty session reaches the server, which answers
    // "missing session").
    let command = match (cas, acquire, release) {
        (_, _, Some(session)) => KvCommand::Unlock { write, session },
        (_, Some(session), None) => KvCommand::Lock { write, session },
        (Some(modify_index), None, None) => KvCommand::Cas {
            write,
            modify_index,
        },
        (None, None, None) => KvCommand::Set(write),
    };
    apply(&agent, &opts, command).await
}

/// How much of a body declared over the limit is read and thrown away
/// before the 413, so a client still sending it reads the answer instead of
/// a broken pipe (Go's server discards up to 256 KiB the same way). A body
/// declared larger than this is not read: the connection closes after the
/// answer.
pub(crate) const OVERSIZE_DRAIN_BYTES_MAX: u64 = 4 << 20;
/// How long that draining may take.
const OVERSIZE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the body up to `max` bytes. Like Consul, a declared length over
/// the limit is refused without being stored; a body without one is cut
/// off.
async fn read_value(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max as u64) {
        if len <= OVERSIZE_DRAIN_BYTES_MAX {
            let drain = axum::body::to_bytes(body, OVERSIZE_DRAIN_BYTES_MAX as usize);
            let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIME, drain).await;
        }
        return Err(too_large(format!(
            "Request body({len} bytes) too large, max size: {max} bytes. See {KV_MAX_VALUE_SIZE_DOC}."
        )));
    }
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(_) => Err(too_large(format!(
            "Request body too large, max size: {max} bytes. See {KV_MAX_VALUE_SIZE_DOC}."
        ))),
    }
}

fn too_large(text: String) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        text,
    }
}

/// `DELETE /v1/kv/<key>`, `?recurse` for a whole prefix, `?cas` for a
/// conditional delete.
pub(crate) async fn delete_root(
    agent: State<AgentHandle>,
    query: Query<Vec<(String, String)>>,
) -> ApiResult {
    delete(agent, Path(String::new()), query).await
}

pub(crate) async fn delete(
    State(agent): State<AgentHandle>,
    Path(key): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (params, opts) = start(&agent, &key, query)?;
    params.check_conflicting(&["recurse", "cas"])?;
    let command = if params.has("recurse") {
        KvCommand::DeleteTree { prefix: key }
    } else if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    } else {
        match params.u64("cas")? {
            Some(modify_index) => KvCommand::DeleteCas { key, modify_index },
            None => KvCommand::Delete { key },
        }
    };
    apply(&agent, &opts, command).await
}

/// Sends a write and answers `true`/`false`. Only the CAS variants report
/// their condition; the others answer `true`, as Consul's do.
async fn apply(agent: &AgentHandle, opts: &QueryOptions, command: KvCommand) -> ApiResult {
    let conditional = matches!(
        command,
        KvCommand::Cas { .. }
            | KvCommand::DeleteCas { .. }
            | KvCommand::Lock { .. }
            | KvCommand::Unlock { .. }
    );
    let request = Request {
        datacenter: opts.datacenter.clone(),
        read_mode: opts.read_mode,
        blocking: None,
        op: Op::KvApply(command),
    };
    let reply = agent.call(request).await?;
    match reply.body {
        ReplyBody::Applied(ApplyResult::Kv(held)) => json(&(held || !conditional), opts.pretty),
        // `invalid session "<id>"`: Consul's RPC error, a 500 with its text.
        ReplyBody::Applied(ApplyResult::Refused(text)) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            text,
        }),
        _ => Err(ApiError::unexpected_reply("a KV write")),
    }
}

/// What every KV handler does first, in Consul's order: the query options,
/// then the key checks.
fn start(
    agent: &AgentHandle,
    key: &str,
    query: Vec<(String, String)>,
) -> Result<(Params, QueryOptions), ApiError> {
    let params = Params::new(query);
    let opts = QueryOptions::parse(&params, agent.options())?;
    check_key(key)?;
    Ok((params, opts))
}

/// Consul's key checks (`validateKVKey` in newer `kvs_endpoint.go`): no
/// leading `/`, no path traversal, plain or still encoded, before or after
/// normalizing the key as a path. An empty key is left to each handler.
/// Consul's newer list of refused file extensions (`.json`, `.txt`, ...) is
/// not copied: keys like `app/config.json` are common and older Consul
/// versions accept them.
fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Ok(());
    }
    let refuse = |why: &str| Err(ApiError::bad_request(why));
    if key.starts_with('/') {
        return refuse("key must not begin with a '/'");
    }
    if key.contains("../") || key.contains("..\\") {
        return refuse("key contains invalid path traversal sequence");
    }
    let lower = key.to_ascii_lowercase();
    if ["%2e%2e%2f", "%2e%2e/", "..%2f", "%2e%2e%5c"]
        .iter()
        .any(|s| lower.contains(s))
    {
        return refuse("key contains encoded path traversal sequence");
    }
    let clean = clean_path(key);
    if clean != key && (clean.contains("..") || clean.starts_with('/')) {
        return refuse("key path normalization results in invalid path");
    }
    if clean.starts_with("..") || clean.contains("/..") {
        return refuse("key contains path traversal sequence after normalization");
    }
    Ok(())
}

/// A path with repeated slashes, `.` elements and resolvable `..` elements
/// removed, as Go's `filepath.Clean` gives it on Unix.
fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(p) if *p != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::{check_key, clean_path};

    #[test]
    fn clean_path_matches_go() {
        for (input, want) in [
            ("a/b", "a/b"),
            ("a//b/", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("..", ".."),
            ("/a/../..", "/"),
            ("a/..b", "a/..b"),
            ("", "."),
        ] {
            assert_eq!(clean_path(input), want, "{input:?}");
        }
    }

    #[test]
    fn keys_are_checked_as_consul_checks_them() {
        for ok in [
            "a",
            "a/b/",
            "app/config.json",
            "a..b",
            "a/.b",
            "a/..",
            "x y",
        ] {
            assert!(check_key(ok).is_ok(), "{ok:?} should pass");
        }
        for (bad, why) in [
            ("/a", "key must not begin with a '/'"),
            ("a/../b", "key contains invalid path traversal sequence"),
            ("a\\..\\b", "key contains invalid path traversal sequence"),
            (
                "a/%2E%2E%2Fb",
                "key contains encoded path traversal sequence",
            ),
            ("a//b/..c", "key path normalization results in invalid path"),
            (
                "..",
                "key contains path traversal sequence after normalization",
            ),
            (
                "a/..b",
                "key contains path traversal sequence after normalization",
            ),
        ] {
            let e = check_key(bad).expect_err(bad);
            assert_eq!((e.status.as_u16(), e.text.as_str()), (400, why), "{bad:?}");
        }
    }
}
