//! The Consul-compatible HTTP API on top of an [`AgentHandle`].
//!
//! The subset this release serves, with Consul's paths, PascalCase JSON,
//! query-meta headers on reads (`X-Consul-Index`, never 0,
//! `X-Consul-KnownLeader`, `X-Consul-LastContact`, 404s included), query
//! flags that count by presence, and plain-text errors with Consul's strings
//! and status codes (see `reply.rs`):
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/status/leader`, `GET /v1/status/peers` | leader and voter addresses |
//! | `GET /v1/agent/self`, `PUT /v1/agent/leave` | this agent |
//! | `GET /v1/agent/members`, `PUT /v1/agent/join/<addr>`, `PUT /v1/agent/force-leave/<node>` | gossip membership (`?wan`, `?prune`) |
//! | `GET/PUT/DELETE /v1/kv/<key>` | KV: recurse, keys, separator, raw, cas, flags, blocking, stale/consistent |
//! | `GET /v1/operator/raft/configuration`, `DELETE /v1/operator/raft/peer`, `POST /v1/operator/raft/transfer-leader` | Raft membership |
//! | `GET /v1/agent/metrics` | go-metrics' JSON, `?format=prometheus` |
//! | `GET /v1/operator/autopilot/{configuration,health,state}`, `PUT .../configuration[?cas=]` | autopilot (health: 429 when unhealthy) |
//! | `GET/POST/PUT/DELETE /v1/operator/keyring` | gossip encryption keys: list, install, use, remove (`keyring.rs`) |
//! | `GET /v1/health/{node,checks,state,service}/<name>` | checks and instances with their checks: passing, tag, node-meta, blocking |
//! | `PUT /v1/catalog/{register,deregister}`, `GET /v1/catalog/{datacenters,nodes,services}`, `GET /v1/catalog/{service,node,node-services}/<name>` | the catalog: tag, node-meta, blocking, stale/consistent |
//! | `PUT /v1/session/{create,destroy/<id>,renew/<id>}`, `GET /v1/session/{info/<id>,node/<n>,list}` | sessions (`session.rs`); KV `?acquire=`/`?release=` |
//!
//! Around every route, `mux.rs` does what Consul's server does around its
//! endpoints: non-printable paths 400, unclean paths 301, 405 with `Allow`,
//! `OPTIONS`, and a `consul.http.*` timer per request.
//!
//! Request bodies are read as bytes whatever their `Content-Type` (python
//! `requests` sends none), and nothing a client sends can panic a handler:
//! bad input is a 400 that names the parameter.

mod agent_api;
mod agent_local;
pub(crate) use agent_local::{check_from_config, service_from_config};
mod autopilot;
mod catalog;
mod filter;
mod gojson;
mod health;
pub mod https;
mod keyring;
mod kv;
mod members;
mod metrics;
mod mux;
mod operator;
mod params;
mod reply;
mod session;
mod snapshot;
mod status;
mod txn;

use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::Router;
use tern_core::rpc::{Op, ReadMode, Reply};

pub use agent_api::CONSUL_COMPATIBLE_VERSION;

use crate::agent::AgentHandle;
use params::QueryOptions;
use reply::{ApiError, Meta};

/// The subtrees Consul registers with a trailing slash (agent/http.go):
/// Go's `ServeMux` answers a request for one of them without its slash with
/// a 301 to the slashed path.
const SUBTREES: [&str; 10] = [
    "/v1/kv",
    "/v1/agent/join",
    "/v1/agent/force-leave",
    "/v1/catalog/service",
    "/v1/catalog/node",
    "/v1/catalog/node-services",
    "/v1/health/node",
    "/v1/health/checks",
    "/v1/health/state",
    "/v1/health/service",
];

/// Go's `ServeMux` redirect of a subtree root named without its trailing
/// slash (net/http server.go `redirectToPathSlash`, `http.Redirect`): 301,
/// `Location` the path with `/` added and the query kept, and for GET and
/// HEAD a small HTML body.
async fn redirect_to_subtree(method: Method, uri: Uri) -> Response {
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    moved_permanently(&method, &location)
}

/// Go's `http.Redirect` with 301: `Location`, and for GET and HEAD an HTML
/// content type and a small body.
fn moved_permanently(method: &Method, location: &str) -> Response {
    let mut response = (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location.to_string())],
    )
        .into_response();
    if method == Method::GET || method == Method::HEAD {
        let escaped = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        *response.body_mut() =
            axum::body::Body::from(format!("<a href=\"{escaped}\">Moved Permanently</a>.\n\n"));
    }
    response
}

/// Every route of the API, answering through `agent`.
pub fn router(agent: AgentHandle) -> Router {
    let mut router = Router::new();
    for root in SUBTREES {
        router = router.route(root, any(redirect_to_subtree));
    }
    router
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route("/v1/agent/self", get(agent_api::agent_self))
        .route("/v1/agent/leave", put(agent_api::leave))
        .route("/v1/agent/members", get(members::members))
        .route("/v1/agent/metrics", get(metrics::metrics))
        .route("/v1/agent/join/", put(members::join_nothing))
        .route("/v1/agent/join/{*address}", put(members::join))
        .route("/v1/agent/force-leave/{*node}", put(members::force_leave))
        .route("/v1/agent/services", get(agent_local::services))
        .route(
            "/v1/agent/service/register",
            put(agent_local::register_service),
        )
        .route(
            "/v1/agent/service/deregister/{*id}",
            put(agent_local::deregister_service),
        )
        .route("/v1/agent/service/{*id}", get(agent_local::service))
        .route("/v1/agent/checks", get(agent_local::checks))
        .route("/v1/agent/check/register", put(agent_local::register_check))
        .route(
            "/v1/agent/check/deregister/{*id}",
            put(agent_local::deregister_check),
        )
        .route("/v1/agent/check/pass/{*id}", put(agent_local::pass))
        .route("/v1/agent/check/warn/{*id}", put(agent_local::warn))
        .route("/v1/agent/check/fail/{*id}", put(agent_local::fail))
        .route("/v1/agent/check/update/{*id}", put(agent_local::update))
        .route(
            "/v1/agent/health/service/name/",
            get(agent_local::health_missing_name),
        )
        .route(
            "/v1/agent/health/service/name/{*name}",
            get(agent_local::health_by_name),
        )
        .route(
            "/v1/agent/health/service/id/",
            get(agent_local::health_missing_id),
        )
        .route(
            "/v1/agent/health/service/id/{*id}",
            get(agent_local::health_by_id),
        )
        // `{*key}` needs at least one character: `/v1/kv/` is its own route
        // (py-consul cleans up with `DELETE /v1/kv/?recurse=1`).
        .route(
            "/v1/kv/",
            get(kv::get_root).put(kv::put_root).delete(kv::delete_root),
        )
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route(
            "/v1/operator/raft/configuration",
            get(operator::configuration),
        )
        .route("/v1/operator/raft/peer", delete(operator::remove_peer))
        .route(
            "/v1/operator/raft/transfer-leader",
            post(operator::transfer_leader),
        )
        .route(
            "/v1/operator/autopilot/configuration",
            get(autopilot::configuration).put(autopilot::set_configuration),
        )
        .route("/v1/operator/autopilot/health", get(autopilot::health))
        .route(
            "/v1/operator/keyring",
            get(keyring::keyring)
                .post(keyring::keyring)
                .put(keyring::keyring)
                .delete(keyring::keyring),
        )
        .route("/v1/operator/autopilot/state", get(autopilot::state))
        .route("/v1/catalog/register", put(catalog::register))
        .route("/v1/catalog/deregister", put(catalog::deregister))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/catalog/nodes", get(catalog::nodes))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/service/", get(catalog::service_nameless))
        .route("/v1/catalog/service/{*service}", get(catalog::service))
        .route("/v1/catalog/node/", get(catalog::node_nameless))
        .route("/v1/catalog/node/{*node}", get(catalog::node))
        .route("/v1/catalog/node-services/", get(catalog::node_nameless))
        .route(
            "/v1/catalog/node-services/{*node}",
            get(catalog::node_service_list),
        )
        .route("/v1/health/node/", get(health::node_nameless))
        .route("/v1/health/node/{*node}", get(health::node))
        .route("/v1/health/checks/", get(health::service_nameless))
        .route("/v1/health/checks/{*service}", get(health::service_checks))
        .route("/v1/health/state/", get(health::state_nameless))
        .route("/v1/health/state/{*state}", get(health::state))
        .route("/v1/health/service/", get(health::service_nameless))
        .route("/v1/health/service/{*service}", get(health::service))
        .route("/v1/snapshot", get(snapshot::save).put(snapshot::restore))
        .route("/v1/txn", put(txn::txn))
        .merge(session::routes())
        // Consul's catch-all: 404 with an empty body.
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            mux::consul_mux,
        ))
        .with_state(agent)
}

/// Serves the API on `listener` until the process stops or accepting fails.
pub async fn serve(listener: tokio::net::TcpListener, agent: AgentHandle) -> std::io::Result<()> {
    axum::serve(listener, router(agent)).await
}

/// `serve` until the agent has left, then stop taking connections and let
/// the requests in flight finish (the leave's own answer among them). Each
/// client IP may hold `limits.http_max_conns_per_client` connections; one
/// more gets Consul's 429 and is closed (`crate::connlimit`).
pub async fn serve_until_left(
    listener: tokio::net::TcpListener,
    agent: AgentHandle,
) -> std::io::Result<()> {
    let left = agent.clone();
    let listener = crate::connlimit::LimitedListener::new(
        listener,
        agent.options().limits.http_max_conns_per_client,
    );
    axum::serve(listener, router(agent))
        .with_graceful_shutdown(async move { left.left().await })
        .await
}

/// Sends a read and returns the reply with its meta headers.
///
/// A catalog or health read with `?max_stale` whose server last heard from
/// the leader longer ago than that is asked once more as a default read,
/// answered by the leader (Consul's `RETRY_ONCE` in `catalog_endpoint.go`
/// and `health_endpoint.go`; its KV endpoint has no retry, and neither has
/// Tern's).
async fn read(agent: &AgentHandle, opts: &QueryOptions, op: Op) -> Result<(Reply, Meta), ApiError> {
    let retry = (opts.max_stale.is_some() && matches!(op, Op::Catalog(_))).then(|| op.clone());
    let reply = agent.call(opts.request(op)).await?;
    if let (Some(op), Some(max)) = (retry, opts.max_stale) {
        let last_contact = tern_core::Duration::from_millis(reply.last_contact_ms);
        if opts.read_mode == ReadMode::Stale && max < last_contact {
            let mut again = opts.clone();
            again.read_mode = ReadMode::Default;
            again.max_stale = None;
            let reply = agent.call(again.request(op)).await?;
            let meta = Meta::of(&reply, again.read_mode);
            return Ok((reply, meta));
        }
    }
    let meta = Meta::of(&reply, opts.read_mode);
    Ok((reply, meta))
}
