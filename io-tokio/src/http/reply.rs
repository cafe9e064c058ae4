//! Building responses the way Consul does: JSON bodies, plain-text errors
//! with Consul's strings and status codes, and the query-meta headers.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tern_core::rpc::{ReadMode, Reply, RpcError};

/// An error answered as plain text, as Consul's `HTTPError` is.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub text: String,
}

impl ApiError {
    pub fn bad_request(text: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            text: text.into(),
        }
    }

    pub fn internal(text: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            text: text.into(),
        }
    }

    /// The agent answered with a body of the wrong kind: a broken contract
    /// between two parts of this process, reported rather than panicked on.
    pub fn unexpected_reply(what: &str) -> ApiError {
        ApiError::internal(format!("Unexpected reply from the agent to {what}"))
    }
}

impl From<RpcError> for ApiError {
    /// Status codes after Consul's `agent/http.go` (reference §1.3): the
    /// server-side conditions are 500 and clients match on the text.
    fn from(e: RpcError) -> ApiError {
        let status = match &e {
            RpcError::NoLeader
            | RpcError::NotReadyForConsistentReads
            | RpcError::NoPathToDatacenter
            | RpcError::Unknown(_)
            | RpcError::DiskFull
            | RpcError::NoServers
            | RpcError::Refused(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RpcError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RpcError::BadRequest(_) => StatusCode::BAD_REQUEST,
            // A full queue on this server: "try again later" is Consul's 429.
            RpcError::Busy => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError {
            status,
            text: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.text,
        )
            .into_response()
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The query metadata Consul sends on reads, 404s included.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Meta {
    pub index: u64,
    pub known_leader: bool,
    pub last_contact_ms: u64,
    pub read_mode: ReadMode,
}

impl Meta {
    pub fn of(reply: &Reply, read_mode: ReadMode) -> Meta {
        Meta {
            index: reply.index,
            known_leader: reply.known_leader,
            last_contact_ms: reply.last_contact_ms,
            read_mode,
        }
    }

    /// Adds the headers. `X-Consul-Index` is never 0: a client that sends
    /// `?index=0` back would not block and would spin.
    pub fn apply(self, mut response: Response) -> Response {
        let consistency = match self.read_mode {
            ReadMode::Default => "leader",
            ReadMode::Stale => "stale",
            ReadMode::Consistent => "consistent",
        };
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        set("x-consul-index", self.index.max(1).to_string());
        set("x-consul-knownleader", self.known_leader.to_string());
        set("x-consul-lastcontact", self.last_contact_ms.to_string());
        set("x-consul-effective-consistency", consistency.to_string());
        response
    }
}

/// A 200 with a JSON body; `?pretty` indents it (and ends it with a newline,
/// as Consul does).
pub(crate) fn json<T: Serialize>(value: &T, pretty: bool) -> ApiResult {
    let body = if pretty {
        serde_json::to_vec_pretty(value).map(|mut b| {
            b.push(b'\n');
            b
        })
    } else {
        serde_json::to_vec(value)
    };
    let body = body.map_err(|e| ApiError::internal(format!("Failed to encode response: {e}")))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// A 404 with an empty body (the caller adds the meta headers).
pub(crate) fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// A 200 with an empty body, as Consul answers operator actions.
pub(crate) fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}
