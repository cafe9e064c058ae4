//! What Consul's HTTP server does around its endpoints (agent/http.go
//! `handler` and `wrap`, Go's `net/http.ServeMux`, go-cleanhttp), as one
//! middleware over every route, in Consul's order:
//!
//! 1. go-cleanhttp's `PrintablePathCheckHandler`: a path whose decoded form
//!    holds a character Go's `unicode.IsPrint` refuses (a control character
//!    such as newline or NUL, a format character, a space other than ASCII
//!    space, private use) is a **400 with an empty body**.
//! 2. `ServeMux`'s path cleaning: a path with `//`, `.` or `..` elements is a
//!    **301** to the cleaned path, the query kept, for every method but
//!    CONNECT (Go 1.22+ cleans the path as sent, so `%2F` stays as it is).
//! 3. `wrap`'s method check against the methods each pattern registers
//!    (agent/http_register.go): `OPTIONS` is a 200 with `Allow:
//!    OPTIONS,<methods>` and no body; another method is a **405**, the same
//!    `Allow` header and the body `method <M> not allowed`.
//! 4. `handleFuncMetrics`: every request to a registered pattern is timed as
//!    `consul.http.<METHOD>.<pattern parts>` (a trailing `/` becomes `_`:
//!    `consul.http.GET.v1.kv._`).
//!
//! A path no route matches is a 404 with an empty body (Consul's `Index`
//! handler).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::agent::AgentHandle;

/// The patterns Tern serves and the methods Consul registers for each
/// (agent/http_register.go). A route not listed here is still served; it
/// only gets axum's method handling and a generic metric name.
const PATTERNS: &[(&str, &[&str])] = &[
    ("/v1/agent/check/deregister/", &["PUT"]),
    ("/v1/agent/check/fail/", &["PUT"]),
    ("/v1/agent/check/pass/", &["PUT"]),
    ("/v1/agent/check/register", &["PUT"]),
    ("/v1/agent/check/update/", &["PUT"]),
    ("/v1/agent/check/warn/", &["PUT"]),
    ("/v1/agent/checks", &["GET"]),
    ("/v1/agent/force-leave/", &["PUT"]),
    ("/v1/agent/health/service/id/", &["GET"]),
    ("/v1/agent/health/service/name/", &["GET"]),
    ("/v1/agent/join/", &["PUT"]),
    ("/v1/agent/leave", &["PUT"]),
    ("/v1/agent/members", &["GET"]),
    ("/v1/agent/metrics", &["GET"]),
    ("/v1/agent/self", &["GET"]),
    ("/v1/agent/service/", &["GET"]),
    ("/v1/agent/service/deregister/", &["PUT"]),
    ("/v1/agent/service/register", &["PUT"]),
    ("/v1/agent/services", &["GET"]),
    ("/v1/catalog/datacenters", &["GET"]),
    ("/v1/catalog/deregister", &["PUT"]),
    ("/v1/catalog/node-services/", &["GET"]),
    ("/v1/catalog/node/", &["GET"]),
    ("/v1/catalog/nodes", &["GET"]),
    ("/v1/catalog/register", &["PUT"]),
    ("/v1/catalog/service/", &["GET"]),
    ("/v1/catalog/services", &["GET"]),
    ("/v1/health/checks/", &["GET"]),
    ("/v1/health/node/", &["GET"]),
    ("/v1/health/service/", &["GET"]),
    ("/v1/health/state/", &["GET"]),
    ("/v1/kv/", &["GET", "PUT", "DELETE"]),
    ("/v1/operator/autopilot/configuration", &["GET", "PUT"]),
    ("/v1/operator/autopilot/health", &["GET"]),
    ("/v1/operator/autopilot/state", &["GET"]),
    ("/v1/operator/raft/configuration", &["GET"]),
    ("/v1/operator/raft/peer", &["DELETE"]),
    ("/v1/operator/raft/transfer-leader", &["POST"]),
    ("/v1/session/create", &["PUT"]),
    ("/v1/session/destroy/", &["PUT"]),
    ("/v1/session/info/", &["GET"]),
    ("/v1/session/list", &["GET"]),
    ("/v1/session/node/", &["GET"]),
    ("/v1/session/renew/", &["PUT"]),
    ("/v1/snapshot", &["GET", "PUT"]),
    ("/v1/status/leader", &["GET"]),
    ("/v1/status/peers", &["GET"]),
    ("/v1/txn", &["PUT"]),
];

/// The middleware (see the module doc).
pub(crate) async fn consul_mux(
    State(agent): State<AgentHandle>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if !printable(&percent_decode(&path)) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    if method != Method::CONNECT {
        let clean = clean_path(&path);
        if clean != path {
            let location = match request.uri().query() {
                Some(q) if !q.is_empty() => format!("{clean}?{q}"),
                _ => clean,
            };
            return super::moved_permanently(&method, &location);
        }
    }
    let Some(matched) = request.extensions().get::<MatchedPath>() else {
        // No route: Consul's catch-all `/` handler answers 404, untimed.
        return next.run(request).await;
    };
    let pattern = consul_pattern(matched.as_str());
    if super::SUBTREES.contains(&matched.as_str()) {
        // ServeMux's redirect to the slashed subtree: not an endpoint.
        return next.run(request).await;
    }
    let metric = format!("consul.http.{method}.{}", metric_parts(&pattern));
    let allowed = PATTERNS
        .iter()
        .find(|(p, _)| *p == pattern)
        .map(|(_, methods)| *methods);
    let response = match allowed {
        Some(methods) if method == Method::OPTIONS => {
            with_allow(StatusCode::OK.into_response(), methods)
        }
        Some(methods) if !methods.contains(&method.as_str()) => with_allow(
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("method {method} not allowed"),
            )
                .into_response(),
            methods,
        ),
        _ => next.run(request).await,
    };
    agent.metrics().measure_since(&metric, start);
    response
}

fn with_allow(mut response: Response<Body>, methods: &[&str]) -> Response<Body> {
    let allow = std::iter::once("OPTIONS")
        .chain(methods.iter().copied())
        .collect::<Vec<_>>()
        .join(",");
    if let Ok(v) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, v);
    }
    response
}

/// The Consul pattern of an axum route: a trailing wildcard segment
/// (`/v1/kv/{*key}`) is the subtree pattern `/v1/kv/`.
fn consul_pattern(route: &str) -> String {
    match route.rfind("/{") {
        Some(i) if route.ends_with('}') => route[..=i].to_string(),
        _ => route.to_string(),
    }
}

/// Consul's metric key parts of a pattern: the parts between slashes, the
/// empty part after a trailing slash as `_`, joined by `.`.
fn metric_parts(pattern: &str) -> String {
    pattern
        .split('/')
        .skip(1)
        .map(|p| if p.is_empty() { "_" } else { p })
        .collect::<Vec<_>>()
        .join(".")
}

/// The path as Go's `url.URL.Path` holds it: `%XX` decoded (an invalid
/// escape is left as it is; Go refuses such a request line before any
/// handler), invalid UTF-8 read as U+FFFD.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether every character passes Go's `unicode.IsPrint`: letters, marks,
/// numbers, punctuation, symbols and the ASCII space. Refused here: control
/// characters (Cc), format characters (Cf), spaces and separators other than
/// U+0020 (Z*), private use (Co) and noncharacters. Unassigned code points,
/// which Go also refuses, pass: telling them apart needs Unicode's tables.
fn printable(path: &str) -> bool {
    path.chars().all(go_is_print)
}

fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format = matches!(u,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F);
    let private_use = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    let noncharacter = matches!(u, 0xFDD0..=0xFDEF) || (u & 0xFFFE) == 0xFFFE;
    !(format || private_use || noncharacter)
}

/// Go's `net/http` `cleanPath`: `path.Clean` (repeated slashes, `.` and
/// `..` elements resolved, `..` above the root dropped) with a trailing
/// slash put back.
pub(crate) fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".into();
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    if p.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_as_gos_servemux_cleans_them() {
        for (raw, clean) in [
            ("/v1/kv/a", "/v1/kv/a"),
            ("/v1/kv//a", "/v1/kv/a"),
            ("/v1//kv/a/", "/v1/kv/a/"),
            ("/v1/kv/./a", "/v1/kv/a"),
            ("/v1/kv/a/../b", "/v1/kv/b"),
            ("/v1/kv/..", "/v1"),
            ("/../../v1/status/leader", "/v1/status/leader"),
            ("/v1/kv/a/.", "/v1/kv/a"),
            ("/v1/kv/a/./", "/v1/kv/a/"),
            ("/v1/kv/a%2F..%2Fb", "/v1/kv/a%2F..%2Fb"),
            ("/", "/"),
            ("//", "/"),
        ] {
            assert_eq!(clean_path(raw), clean, "{raw}");
        }
    }

    #[test]
    fn printable_is_gos_is_print() {
        for ok in [
            "/v1/kv/a b",
            "/v1/kv/é/日本",
            "/v1/kv/\u{FFFD}",
            "/v1/kv/~!@$",
        ] {
            assert!(printable(ok), "{ok:?}");
        }
        for bad in [
            "\n",
            "\0",
            "\t",
            "\r",
            "\u{7f}",
            "\u{85}",
            "\u{a0}",
            "\u{ad}",
            "\u{200b}",
            "\u{2028}",
            "\u{3000}",
            "\u{feff}",
            "\u{e000}",
            "\u{fdd0}",
            "\u{ffff}",
            "\u{10fffd}",
        ] {
            assert!(!printable(&format!("/v1/kv/{bad}")), "{bad:?}");
        }
    }

    #[test]
    fn percent_decoding_as_go_reads_the_path() {
        assert_eq!(percent_decode("/v1/kv/a%0Ab"), "/v1/kv/a\nb");
        assert_eq!(percent_decode("/v1/kv/%00"), "/v1/kv/\0");
        assert_eq!(percent_decode("/v1/kv/%e6%97%a5"), "/v1/kv/日");
        assert_eq!(percent_decode("/v1/kv/%ff"), "/v1/kv/\u{FFFD}");
        assert_eq!(percent_decode("/v1/kv/%zz%4"), "/v1/kv/%zz%4");
    }

    #[test]
    fn metric_names_are_consuls() {
        assert_eq!(consul_pattern("/v1/kv/{*key}"), "/v1/kv/");
        assert_eq!(consul_pattern("/v1/kv/"), "/v1/kv/");
        assert_eq!(consul_pattern("/v1/status/leader"), "/v1/status/leader");
        assert_eq!(metric_parts("/v1/kv/"), "v1.kv._");
        assert_eq!(
            metric_parts("/v1/agent/force-leave/"),
            "v1.agent.force-leave._"
        );
        assert_eq!(metric_parts("/v1/status/leader"), "v1.status.leader");
    }

    #[test]
    fn the_method_table_is_sorted_and_every_pattern_is_absolute() {
        let names: Vec<&str> = PATTERNS.iter().map(|(p, _)| *p).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.iter().all(|p| p.starts_with("/v1/")));
    }
}
