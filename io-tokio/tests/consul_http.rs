//! Issue 10's HTTP details against a real `tern agent` process: what
//! Consul's HTTP server does around its endpoints (agent/http.go, Go's
//! ServeMux, go-cleanhttp), the Raft operator errors
//! (agent/consul/operator_raft_endpoint.go), the configuration's index, and
//! `/v1/agent/metrics` (agent/agent_endpoint.go `AgentMetrics`) with
//! Consul's metric names. Requests are raw HTTP/1.1, so every byte of the
//! path is what the test wrote.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_single_server, temp_dir};

struct Solo {
    child: Child,
    http: u16,
}

impl Drop for Solo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Solo {
    /// One server that has taken a write.
    fn start(name: &str) -> Solo {
        let dir = temp_dir(name);
        let http = free_port();
        let child = spawn_single_server(name, &dir.join("data"), http, free_port());
        let mut solo = Solo { child, http };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = solo.try_request("PUT", "/v1/kv/ready", b"1") {
                if r.status == 200 && r.text() == "true" {
                    return solo;
                }
            }
            if let Ok(Some(status)) = solo.child.try_wait() {
                panic!("the agent exited: {status}");
            }
            assert!(Instant::now() < end, "the agent never took a write");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn request(&self, method: &str, target: &str, body: &[u8]) -> Answer {
        self.try_request(method, target, body)
            .unwrap_or_else(|| panic!("no answer to {method} {target}"))
    }

    fn try_request(&self, method: &str, target: &str, body: &[u8]) -> Option<Answer> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        s.write_all(&req).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        Answer::parse(&raw)
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn parse(raw: &[u8]) -> Option<Answer> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&raw[..split]).ok()?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked =
            matches!(Answer::header_in(&headers, "Transfer-Encoding"), Some(v) if v == "chunked");
        if chunked {
            body = dechunk(&body);
        }
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        Answer::header_in(&self.headers, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 2 + size + 2..];
    }
    out
}

/// agent/http.go and what surrounds it, on a real agent: go-cleanhttp's
/// printable-path check (400, empty body), ServeMux's clean-path 301,
/// Consul's 404 and `wrap`'s 405/OPTIONS with `Allow`
/// (agent/http_register.go), and query-meta headers only where Consul's
/// handlers call `setMeta`.
#[test]
fn consuls_http_conventions_on_a_real_agent() {
    let a = Solo::start("conventions");
    for bad in ["%0A", "%00", "%1F", "%7F", "%C2%A0", "%E2%80%8B"] {
        for method in ["GET", "PUT", "DELETE"] {
            let r = a.request(method, &format!("/v1/kv/x{bad}y"), b"v");
            assert_eq!((r.status, r.body.len()), (400, 0), "{method} {bad}");
        }
    }
    // Nothing was written under those names.
    let r = a.request("GET", "/v1/kv/?keys", b"");
    assert_eq!(r.json(), serde_json::json!(["ready"]));

    for (target, location) in [
        ("/v1/kv//a?raw", "/v1/kv/a?raw"),
        ("/v1/./kv/a", "/v1/kv/a"),
        ("/v1/kv/b/../a", "/v1/kv/a"),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let r = a.request(method, target, b"v");
            assert_eq!(r.status, 301, "{method} {target}");
            assert_eq!(r.header("Location"), Some(location));
        }
    }
    assert_eq!(a.request("GET", "/v1/kv/a", b"").status, 404);

    for target in ["/v1/nope", "/v1/coordinate/nodes", "/ui/"] {
        let r = a.request("GET", target, b"");
        assert_eq!((r.status, r.body.len()), (404, 0), "{target}");
    }
    let r = a.request("POST", "/v1/kv/a", b"v");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("OPTIONS,GET,PUT,DELETE"));
    assert_eq!(r.text(), "method POST not allowed");
    let r = a.request("PUT", "/v1/agent/self", b"");
    assert_eq!(
        (r.status, r.header("Allow"), r.text().as_str()),
        (405, Some("OPTIONS,GET"), "method PUT not allowed")
    );
    let r = a.request("OPTIONS", "/v1/operator/raft/peer", b"");
    assert_eq!((r.status, r.header("Allow")), (200, Some("OPTIONS,DELETE")));

    // Meta headers where Consul sends them, and only there.
    let r = a.request("GET", "/v1/kv/missing", b"");
    assert_eq!(r.status, 404);
    assert!(r.header("X-Consul-Index").is_some());
    assert!(r.header("X-Consul-KnownLeader").is_some());
    assert!(r.header("X-Consul-LastContact").is_some());
    assert!(a
        .request("GET", "/v1/catalog/nodes", b"")
        .header("X-Consul-Index")
        .is_some());
    for target in [
        "/v1/status/leader",
        "/v1/status/peers",
        "/v1/operator/raft/configuration",
        "/v1/operator/autopilot/configuration",
    ] {
        let r = a.request("GET", target, b"");
        assert_eq!(r.status, 200, "{target}");
        for h in [
            "X-Consul-Index",
            "X-Consul-KnownLeader",
            "X-Consul-LastContact",
        ] {
            assert_eq!(r.header(h), None, "{target} {h}");
        }
    }
}

/// agent/consul/operator_raft_endpoint.go: removing a peer that is not in
/// the configuration is an RPC error (500) naming it as the user sent it;
/// `Index` of the configuration is where the configuration was written
/// (hashicorp/raft `GetConfiguration().Index()`), not the commit index.
#[test]
fn raft_operator_errors_name_what_the_user_sent_and_the_index_is_the_configurations() {
    let a = Solo::start("raftops");
    let conf = a
        .request("GET", "/v1/operator/raft/configuration", b"")
        .json();
    let index = conf["Index"].as_u64().unwrap();
    let id = conf["Servers"][0]["ID"].as_str().unwrap().to_string();
    assert!(index >= 1);
    for i in 0..5 {
        assert_eq!(
            a.request("PUT", &format!("/v1/kv/w{i}"), b"v").text(),
            "true"
        );
    }
    let conf = a
        .request("GET", "/v1/operator/raft/configuration", b"")
        .json();
    assert_eq!(conf["Index"].as_u64(), Some(index), "writes do not move it");
    let kv_index: u64 = a
        .request("GET", "/v1/kv/w4", b"")
        .header("X-Consul-Index")
        .unwrap()
        .parse()
        .unwrap();
    assert!(kv_index > index);

    let unknown = "0123ABCD-0000-0000-0000-00000000000F";
    for (query, text) in [
        (
            "id=n0000".to_string(),
            "id \"n0000\" was not found in the Raft configuration",
        ),
        (
            format!("id={unknown}"),
            "id \"0123ABCD-0000-0000-0000-00000000000F\" was not found in the Raft configuration",
        ),
        (
            "address=10.9.9.9:8300".to_string(),
            "address \"10.9.9.9:8300\" was not found in the Raft configuration",
        ),
    ] {
        let r = a.request("DELETE", &format!("/v1/operator/raft/peer?{query}"), b"");
        assert_eq!((r.status, r.text().as_str()), (500, text), "{query}");
    }
    // The only server is still there.
    let conf = a
        .request("GET", "/v1/operator/raft/configuration", b"")
        .json();
    assert_eq!(conf["Servers"][0]["ID"].as_str(), Some(id.as_str()));
    // A transfer with no other voter fails, and says why.
    let r = a.request("POST", "/v1/operator/raft/transfer-leader", b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no other voter"), "{}", r.text());
}

/// `/v1/agent/metrics` on a real agent: after N KV writes
/// `consul.kvs.apply` counts at least N in both formats, the Raft metrics
/// (`consul.raft.apply`, `commitTime`, `leader.dispatchLog`) and
/// `consul.rpc.request` are there, each HTTP pattern is timed, and the
/// Prometheus text parses.
#[test]
fn agent_metrics_count_kv_writes_and_the_prometheus_text_parses() {
    let a = Solo::start("metrics");
    const N: usize = 25;
    for i in 0..N {
        assert_eq!(
            a.request("PUT", &format!("/v1/kv/m/{i}"), b"v").text(),
            "true"
        );
    }
    a.request("GET", "/v1/kv/m/0", b"");
    // A registration, a session and a transaction: their RPC timers.
    let reg = a.request(
        "PUT",
        "/v1/catalog/register",
        br#"{"Node":"m1","Address":"10.0.0.9"}"#,
    );
    assert_eq!(reg.status, 200);
    assert_eq!(a.request("PUT", "/v1/session/create", b"{}").status, 200);
    let txn = a.request(
        "PUT",
        "/v1/txn",
        br#"[{"KV":{"Verb":"set","Key":"m/t","Value":"dg=="}}]"#,
    );
    assert_eq!(txn.status, 200, "{}", txn.text());
    let r = a.request("GET", "/v1/agent/metrics?format=prometheus", b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let samples = tern::metrics::parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert!(value("consul_kvs_apply_count") >= N as f64);
    assert!(value("consul_raft_apply") >= N as f64);
    assert!(value("consul_raft_commitTime_count") >= N as f64);
    assert!(value("consul_raft_leader_dispatchLog_count") >= 1.0);
    assert!(value("consul_rpc_request") >= N as f64 + 1.0);
    assert!(value("consul_rpc_query") >= 1.0);
    assert!(value("consul_catalog_register_count") >= 1.0);
    assert!(value("consul_session_apply_count") >= 1.0);
    assert!(value("consul_txn_apply_count") >= 1.0);
    assert!(value("consul_http_PUT_v1_kv___count") >= N as f64);
    assert!(value("consul_http_GET_v1_kv___count") >= 1.0);
    assert!(value("consul_runtime_num_goroutines") >= 1.0);
    assert!(value("consul_runtime_sys_bytes") > 1e6);
    for q in ["0.5", "0.9", "0.99"] {
        let series = format!("consul_kvs_apply{{quantile=\"{q}\"}}");
        assert!(value(&series) >= 0.0, "{series}");
    }
    assert!(text.contains("# TYPE consul_kvs_apply summary\n"));
    assert!(text.contains("# TYPE consul_raft_apply counter\n"));
    assert!(text.contains("# TYPE consul_runtime_num_goroutines gauge\n"));

    // Autopilot's gauges, once the leader has a health sample (every 2 s).
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = a
            .request("GET", "/v1/agent/metrics?format=prometheus", b"")
            .text();
        let samples = tern::metrics::parse_prometheus(&text).unwrap();
        let healthy = samples
            .iter()
            .find(|(n, _)| n == "consul_autopilot_healthy");
        if let Some((_, v)) = healthy {
            assert_eq!(*v, 1.0, "{text}");
            assert!(samples.contains(&("consul_autopilot_failure_tolerance".into(), 0.0)));
            break;
        }
        assert!(Instant::now() < end, "no autopilot gauges:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // JSON: go-metrics' summary of the current interval or the one before
    // it; the writes above are in one of them unless the test straddled
    // two interval boundaries, so look at the counters through Prometheus
    // above and at the shape here.
    let j = a.request("GET", "/v1/agent/metrics", b"").json();
    for key in ["Timestamp", "Gauges", "Points", "Counters", "Samples"] {
        assert!(j.get(key).is_some(), "{key}");
    }
    let ts = j["Timestamp"].as_str().unwrap();
    assert!(ts.ends_with("0 +0000 UTC"), "{ts}");
    for s in j["Samples"].as_array().unwrap() {
        assert!(s["Name"].as_str().unwrap().starts_with("consul."));
        assert!(s["Count"].as_u64().unwrap() >= 1);
        assert!(s["Min"].as_f64().unwrap() <= s["Max"].as_f64().unwrap());
    }
}
