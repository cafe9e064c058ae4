//! `GET /v1/agent/metrics` (Consul's `AgentMetrics`, agent/agent_endpoint.go):
//! go-metrics' JSON summary, or with `?format=prometheus` the Prometheus
//! text format 0.0.4. Consul answers the latter only when
//! `telemetry.prometheus_retention_time` is positive (else a 415); Tern has
//! no telemetry settings and always answers it.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use super::params::Params;
use super::reply::{json, ApiResult};
use crate::agent::AgentHandle;
use crate::metrics::Metrics;

/// The content type of the text exposition format (promhttp's).
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let m = agent.metrics();
    runtime_gauges(m);
    if params.get("format") == Some("prometheus") {
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            m.prometheus(),
        )
            .into_response());
    }
    json(&m.summary(), params.has("pretty"))
}

/// The `consul.runtime.*` gauges this process has an answer for: the tokio
/// tasks alive stand in for Go's goroutines (`num_goroutines`), and the
/// resident set size for the memory taken from the OS (`sys_bytes`). Go's
/// heap and GC figures have no counterpart and are not sent.
fn runtime_gauges(m: &Metrics) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let tasks = handle.metrics().num_alive_tasks();
        m.set_gauge("consul.runtime.num_goroutines", tasks as f64);
    }
    if let Some(rss) = resident_bytes() {
        m.set_gauge("consul.runtime.sys_bytes", rss as f64);
    }
}

/// `VmRSS` of /proc/self/status, in bytes (Linux; elsewhere none).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
