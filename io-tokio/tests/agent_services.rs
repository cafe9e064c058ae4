//! The local agent against real `tern agent` processes: every
//! `/v1/agent/service*`, `/v1/agent/check*` and `/v1/agent/health/service/*`
//! endpoint with Consul's JSON, status codes and texts
//! (agent/agent_endpoint.go, agent/structs/check_type.go), the checks the
//! agent runs (agent/checks/check.go: TTL, HTTP, TCP), anti-entropy into the
//! catalog (agent/local/state.go), and definitions kept in the data dir
//! across a SIGKILL (agent/agent.go `persistService`/`loadServices`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{free_gossip_port, free_port, spawn_single_server_gossiping, temp_dir};

struct Answer {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn http(method: &str, url: &str, body: Option<&str>, timeout: Duration) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let result = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("PUT", Some(b)) => agent.put(url).send(b.as_bytes()),
        ("PUT", None) => agent.put(url).send_empty(),
        (m, _) => panic!("method {m}"),
    };
    let mut r = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        body,
        headers,
    }
}

fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Agent {
    child: Child,
    dir: PathBuf,
    http: u16,
    args: Vec<String>,
    keep_dir: bool,
}

impl Agent {
    fn server(name: &str) -> Agent {
        let dir = temp_dir(name);
        let http = free_port();
        let gossip = free_gossip_port();
        let child = spawn_single_server_gossiping(name, &dir, http, free_port(), gossip);
        let agent = Agent {
            child,
            dir,
            http,
            args: vec![gossip.to_string()],
            keep_dir: false,
        };
        agent.wait_ready();
        agent
    }

    /// A client agent joined to `server`'s LAN gossip pool.
    fn client(name: &str, server: &Agent) -> Agent {
        let dir = temp_dir(name);
        let http = free_port();
        let args = vec![
            "agent".to_string(),
            format!("-node={name}"),
            format!("-data-dir={}", dir.display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={http}"),
            format!("-serf-lan-port={}", free_gossip_port()),
            "-retry-interval=1s".into(),
            format!("-retry-join=127.0.0.1:{}", server.args[0]),
        ];
        let child = spawn(&args, &dir);
        let agent = Agent {
            child,
            dir,
            http,
            args,
            keep_dir: false,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&self) {
        let url = format!("{}/v1/catalog/nodes", self.base());
        eventually(
            "agent answers with a leader",
            Duration::from_secs(30),
            || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(2)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                agent
                    .get(&url)
                    .call()
                    .is_ok_and(|r| r.status().as_u16() == 200)
            },
        );
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn get(&self, path: &str) -> Answer {
        http(
            "GET",
            &format!("{}{path}", self.base()),
            None,
            Duration::from_secs(10),
        )
    }

    fn put(&self, path: &str, body: &str) -> Answer {
        http(
            "PUT",
            &format!("{}{path}", self.base()),
            Some(body),
            Duration::from_secs(10),
        )
    }

    fn put_empty(&self, path: &str) -> Answer {
        http(
            "PUT",
            &format!("{}{path}", self.base()),
            None,
            Duration::from_secs(10),
        )
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

fn spawn(args: &[String], dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start tern agent")
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The catalog's health entries for `service` as seen through `agent`.
fn catalog_health(agent: &Agent, service: &str) -> Value {
    agent.get(&format!("/v1/health/service/{service}")).json()
}

/// Every local-agent endpoint, its JSON and its errors, on one real agent;
/// what is registered reaches the catalog by anti-entropy.
#[test]
fn agent_service_and_check_endpoints_answer_as_consul_does() {
    let a = Agent::server("local-api");

    // Register: 200 with an empty body.
    let r = a.put(
        "/v1/agent/service/register",
        r#"{"Name":"web","Port":8080,"Tags":["v1"],"Meta":{"team":"a"},"Check":{"TTL":"30s"}}"#,
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    // `/v1/agent/services`: api.AgentService in Consul's field order.
    let r = a.get("/v1/agent/services");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"web":{"ID":"web","Service":"web","Tags":["v1"],"Meta":{"team":"a"},"Port":8080,"Address":"","Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"Datacenter":"dc1"}}"#
    );
    // `?filter` over the map's values.
    let r = a.get("/v1/agent/services?filter=Service%20%3D%3D%20%22nope%22");
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));

    // `/v1/agent/checks`: the service's check, defaulted as Consul does.
    let checks = a.get("/v1/agent/checks").json();
    let c = &checks["service:web"];
    assert_eq!(c["Name"], "Service 'web' check");
    assert_eq!(c["Status"], "critical", "a check starts critical");
    assert_eq!(c["ServiceID"], "web");
    assert_eq!(c["ServiceName"], "web");
    assert_eq!(c["Type"], "ttl");

    // TTL updates.
    assert_eq!(
        a.put_empty("/v1/agent/check/pass/service:web?note=ok")
            .status,
        200
    );
    assert_eq!(
        a.get("/v1/agent/checks").json()["service:web"]["Output"],
        "ok"
    );
    let r = a.put(
        "/v1/agent/check/update/service:web",
        r#"{"Status":"warning","Output":"slow"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.get("/v1/agent/health/service/name/web");
    assert_eq!(r.status, 429, "warning is 429");
    assert_eq!(r.header("X-Consul-Reason"), Some("warning"));
    assert_eq!(r.json()[0]["AggregatedStatus"], "warning");
    assert_eq!(r.json()[0]["Service"]["ID"], "web");
    assert_eq!(r.json()[0]["Checks"][0]["Output"], "slow");
    assert_eq!(a.put_empty("/v1/agent/check/fail/service:web").status, 200);
    let r = a.get("/v1/agent/health/service/id/web?format=text");
    assert_eq!((r.status, r.body.as_str()), (503, "critical"));
    assert_eq!(a.put_empty("/v1/agent/check/pass/service:web").status, 200);
    let r = a.get("/v1/agent/health/service/name/web?format=text");
    assert_eq!((r.status, r.body.as_str()), (200, "passing"));
    let r = a.get("/v1/agent/health/service/name/nope");
    assert_eq!((r.status, r.body.as_str()), (404, "[]"));
    assert_eq!(
        r.header("X-Consul-Reason"),
        Some("ServiceName nope Not Found")
    );
    let r = a.get("/v1/agent/health/service/id/nope?format=text");
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "ServiceId nope not found")
    );

    // Anti-entropy: the catalog has the service and its check as here.
    eventually(
        "the catalog has web passing",
        Duration::from_secs(15),
        || {
            let h = catalog_health(&a, "web");
            h.as_array().is_some_and(|e| {
                e.len() == 1
                    && e[0]["Service"]["Port"] == 8080
                    && e[0]["Checks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["CheckID"] == "service:web" && c["Status"] == "passing")
            })
        },
    );

    // One service with its ContentHash; a blocking read on that hash waits
    // for a change.
    let r = a.get("/v1/agent/service/web");
    assert_eq!(r.status, 200);
    let hash = r.json()["ContentHash"].as_str().unwrap().to_owned();
    assert_eq!(r.header("X-Consul-ContentHash"), Some(hash.as_str()));
    let base = a.base();
    let h2 = hash.clone();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let r = http(
            "GET",
            &format!("{base}/v1/agent/service/web?hash={h2}&wait=20s"),
            None,
            Duration::from_secs(30),
        );
        (started.elapsed(), r.json()["Port"].clone())
    });
    std::thread::sleep(Duration::from_millis(500));
    let r = a.put(
        "/v1/agent/service/register",
        r#"{"Name":"web","Port":9090}"#,
    );
    assert_eq!(r.status, 200);
    let (took, port) = waiter.join().unwrap();
    assert_eq!(port, 9090);
    assert!(
        took < Duration::from_secs(15),
        "woke by the change: {took:?}"
    );
    // Re-registering kept the check (no ?replace-existing-checks) ...
    assert!(a
        .get("/v1/agent/checks")
        .json()
        .get("service:web")
        .is_some());
    // ... and with it, drops it.
    let r = a.put(
        "/v1/agent/service/register?replace-existing-checks",
        r#"{"Name":"web","Port":9090}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(a.get("/v1/agent/checks").body, "{}");

    // Bad input: Consul's codes and texts.
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/agent/service/register", "", 400, "Request decode failed: EOF"),
        ("/v1/agent/service/register", r#"{"Port":1}"#, 400, "Missing service name"),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Bogus":1}"#,
            400,
            "Request decode failed: json: unknown field \"Bogus\"",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Address":"0.0.0.0"}"#,
            400,
            "Invalid service address",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"HTTP":"http://127.0.0.1:1/"}}"#,
            400,
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"10s","Interval":"10s"}}"#,
            400,
            "Invalid check: Interval and TTL cannot both be specified",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"ten"}}"#,
            400,
            "Request decode failed: time: invalid duration \"ten\"",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"10s","Status":"fine"}}"#,
            400,
            "Status for checks must 'passing', 'warning', 'critical'",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Meta":{"consul-x":"y"}}"#,
            400,
            "Invalid Service Meta: Couldn't load metadata pair ('consul-x', 'y'): Key prefix 'consul-' is reserved for internal use",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"Args":["/bin/true"],"Interval":"10s"}}"#,
            500,
            "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true",
        ),
        (
            "/v1/agent/service/register",
            r#"{"Name":"x","Check":{"TTL":"10s","SuccessBeforePassing":2}}"#,
            400,
            "Invalid check: SuccessBeforePassing is not supported by this agent",
        ),
        ("/v1/agent/check/register", r#"{"TTL":"10s"}"#, 400, "Missing check name"),
        (
            "/v1/agent/check/register",
            r#"{"Name":"c","TTL":"10s","Status":"ok"}"#,
            400,
            "Bad check status",
        ),
        (
            "/v1/agent/check/register",
            r#"{"Name":"c","CheckID":"c","TTL":"10s"}"#,
            400,
            "Request decode failed: json: unknown field \"CheckID\"",
        ),
        (
            "/v1/agent/check/register",
            r#"{"Name":"c","TTL":"10s","ServiceID":"ghost"}"#,
            404,
            "ServiceID \"ghost\" does not exist",
        ),
        (
            "/v1/agent/check/update/service:web",
            r#"{"Status":"fine"}"#,
            400,
            "Invalid check status: 'fine'",
        ),
        (
            "/v1/agent/check/update/nope",
            r#"{"Status":"passing"}"#,
            404,
            "Unknown check ID \"nope\". Ensure that the check ID is passed, not the check name.",
        ),
    ];
    for (path, body, status, text) in cases {
        let r = a.put(path, body);
        assert_eq!(
            (r.status, r.body.as_str()),
            (*status, *text),
            "PUT {path} {body}"
        );
    }
    let r = a.put_empty("/v1/agent/service/deregister/nope");
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            404,
            "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name."
        )
    );
    let r = a.get("/v1/agent/service/nope");
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "unknown service ID: nope")
    );
    // Only TTL checks take a status from a client.
    let r = a.put(
        "/v1/agent/check/register",
        r#"{"Name":"self-tcp","TCP":"127.0.0.1:1","Interval":"30s"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.put_empty("/v1/agent/check/pass/self-tcp");
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "CheckID \"self-tcp\" does not have associated TTL")
    );
    // A wrong method: 405 with Allow, as Consul's mux.
    let r = a.get("/v1/agent/service/register");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("OPTIONS,PUT"));
    // Nothing bad was registered.
    let services = a.get("/v1/agent/services").json();
    assert_eq!(services.as_object().unwrap().len(), 1, "{services}");

    // Deregister: gone here and, by anti-entropy, from the catalog.
    assert_eq!(a.put_empty("/v1/agent/service/deregister/web").status, 200);
    assert_eq!(
        a.put_empty("/v1/agent/check/deregister/self-tcp").status,
        200
    );
    assert_eq!(a.get("/v1/agent/services").body, "{}");
    eventually("web leaves the catalog", Duration::from_secs(15), || {
        catalog_health(&a, "web")
            .as_array()
            .is_some_and(|e| e.is_empty())
    });
    // The lone check goes too (checks are synced after services); the
    // leader's serfHealth stays.
    let node_check_ids = || -> Vec<String> {
        a.get("/v1/health/node/local-api")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["CheckID"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(
        "self-tcp leaves the catalog",
        Duration::from_secs(15),
        || node_check_ids() == ["serfHealth"],
    );
}

/// A tiny HTTP server answering every request with the status in `code`
/// and the body "ok"; its port.
fn health_server(code: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let code = code.load(Ordering::SeqCst);
            let reason = match code {
                200 => "OK",
                429 => "Too Many Requests",
                _ => "Service Unavailable",
            };
            let _ = write!(
                s,
                "HTTP/1.1 {code} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    port
}

/// HTTP and TCP checks run on their interval with Consul's status rules
/// and output; a check that cannot reach anything is critical with the
/// error and the agent carries on.
#[test]
fn http_and_tcp_checks_report_consuls_statuses_and_output() {
    let a = Agent::server("local-checks");
    let code = Arc::new(AtomicU16::new(200));
    let port = health_server(code.clone());
    let body = format!(
        r#"{{"Name":"api","Port":{port},"Checks":[{{"CheckID":"api-http","HTTP":"http://127.0.0.1:{port}/health","Interval":"1s"}},{{"CheckID":"api-tcp","TCP":"127.0.0.1:{port}","Interval":"1s"}}]}}"#
    );
    let r = a.put("/v1/agent/service/register", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let check = |id: &str| a.get("/v1/agent/checks").json()[id].clone();
    eventually("the HTTP check passes", Duration::from_secs(10), || {
        check("api-http")["Status"] == "passing"
    });
    assert_eq!(
        check("api-http")["Output"],
        format!("HTTP GET http://127.0.0.1:{port}/health: 200 OK Output: ok")
    );
    eventually("the TCP check passes", Duration::from_secs(10), || {
        check("api-tcp")["Status"] == "passing"
    });
    assert_eq!(
        check("api-tcp")["Output"],
        format!("TCP connect 127.0.0.1:{port}: Success")
    );
    code.store(429, Ordering::SeqCst);
    eventually("429 is warning", Duration::from_secs(10), || {
        check("api-http")["Status"] == "warning"
    });
    code.store(503, Ordering::SeqCst);
    eventually("503 is critical", Duration::from_secs(10), || {
        check("api-http")["Status"] == "critical"
    });
    // The catalog follows status changes at once.
    eventually(
        "the catalog has api-http critical",
        Duration::from_secs(10),
        || {
            catalog_health(&a, "api").as_array().is_some_and(|e| {
                e.len() == 1
                    && e[0]["Checks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c["CheckID"] == "api-http" && c["Status"] == "critical")
            })
        },
    );
    let r = a.get("/v1/agent/health/service/name/api");
    assert_eq!(r.status, 503);

    // Nothing listens there: critical with the error, the agent stays up.
    let closed = free_port();
    let r = a.put(
        "/v1/agent/check/register",
        &format!(
            r#"{{"Name":"down","HTTP":"http://127.0.0.1:{closed}/","Interval":"1s","Timeout":"500ms"}}"#
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.put(
        "/v1/agent/check/register",
        &format!(r#"{{"Name":"down-tcp","TCP":"127.0.0.1:{closed}","Interval":"1s"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    eventually(
        "the unreachable checks report why",
        Duration::from_secs(10),
        || {
            let c = a.get("/v1/agent/checks").json();
            c["down"]["Status"] == "critical"
                && c["down"]["Output"]
                    .as_str()
                    .is_some_and(|o| o.contains(&format!("127.0.0.1:{closed}")))
                && c["down-tcp"]["Status"] == "critical"
                && c["down-tcp"]["Output"]
                    .as_str()
                    .is_some_and(|o| o.starts_with(&format!("dial tcp 127.0.0.1:{closed}:")))
        },
    );
    assert_eq!(a.get("/v1/agent/services").status, 200, "the agent is up");
}

/// A client agent's services reach the catalog through a server; after a
/// SIGKILL the restarted agent has its services and checks from the data
/// dir, and its first full sync repairs what an operator broke in the
/// catalog meanwhile: the deleted service comes back, a service registered
/// on its node behind its back goes.
#[test]
fn a_client_agents_services_survive_sigkill_and_anti_entropy_repairs_the_catalog() {
    let server = Agent::server("ae-server");
    let mut client = Agent::client("ae-client", &server);
    let r = client.put(
        "/v1/agent/service/register",
        r#"{"Name":"db","ID":"db-1","Port":5432,"Check":{"CheckID":"db-ttl","TTL":"1h"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        client
            .put_empty("/v1/agent/check/pass/db-ttl?note=fine")
            .status,
        200
    );
    let in_catalog = |server: &Agent| {
        catalog_health(server, "db").as_array().is_some_and(|e| {
            e.len() == 1
                && e[0]["Node"]["Node"] == "ae-client"
                && e[0]["Service"]["ID"] == "db-1"
                && e[0]["Checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["CheckID"] == "db-ttl" && c["Status"] == "passing")
        })
    };
    eventually("db reaches the catalog", Duration::from_secs(20), || {
        in_catalog(&server)
    });

    // SIGKILL the client; an operator deletes its service from the catalog
    // and registers a stray one on its node.
    client.child.kill().unwrap();
    client.child.wait().unwrap();
    let r = server.put(
        "/v1/catalog/deregister",
        r#"{"Node":"ae-client","ServiceID":"db-1"}"#,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    let r = server.put(
        "/v1/catalog/register",
        r#"{"Node":"ae-client","Address":"127.0.0.1","Service":{"Service":"stray","Port":1}}"#,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    assert!(catalog_health(&server, "db").as_array().unwrap().is_empty());

    // Restart on the same data dir.
    client.child = spawn(&client.args, &client.dir);
    client.wait_ready();
    let services = client.get("/v1/agent/services").json();
    assert_eq!(services["db-1"]["Port"], 5432, "{services}");
    let checks = client.get("/v1/agent/checks").json();
    assert_eq!(
        checks["db-ttl"]["Status"], "passing",
        "TTL state restored: {checks}"
    );
    assert_eq!(checks["db-ttl"]["Output"], "fine");
    eventually(
        "the full sync repairs the catalog",
        Duration::from_secs(30),
        || {
            in_catalog(&server)
                && catalog_health(&server, "stray")
                    .as_array()
                    .is_some_and(|e| e.is_empty())
        },
    );
    assert!(
        client.logs().contains("Synced service"),
        "{}",
        client.logs()
    );
    client.keep_dir = false;
}

fn tern(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .output()
        .expect("run tern");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tern services register|deregister` (Consul's command/services) against
/// a real agent: from flags, from an HCL file with a check, from a JSON file
/// with a `services` list; Consul's output lines and usage errors.
#[test]
fn tern_services_register_and_deregister_against_a_real_agent() {
    let a = Agent::server("services-cli");
    let addr = format!("-http-addr=127.0.0.1:{}", a.http);
    let (code, out, err) = tern(&[
        "services",
        "register",
        &addr,
        "-name=web",
        "-port=8080",
        "-tag=v1",
        "-tag=blue",
        "-meta=team=core",
        "-tagged-address=wan=203.0.113.5:80",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Registered service: web\n"),
        "{err}"
    );
    let web = &a.get("/v1/agent/services").json()["web"];
    assert_eq!(web["Port"], 8080);
    assert_eq!(web["Tags"], serde_json::json!(["v1", "blue"]));
    assert_eq!(web["Meta"]["team"], "core");
    assert_eq!(web["TaggedAddresses"]["wan"]["Address"], "203.0.113.5");
    assert_eq!(web["TaggedAddresses"]["wan"]["Port"], 80);

    let dir = temp_dir("services-cli-files");
    let hcl = dir.join("api.hcl");
    std::fs::write(
        &hcl,
        r#"service {
  name = "api"
  id   = "api-1"
  port = 9000
  check {
    id  = "api-ttl"
    ttl = "30s"
  }
}
"#,
    )
    .unwrap();
    let json = dir.join("more.json");
    std::fs::write(
        &json,
        r#"{"services": [{"name": "cache", "port": 6379}, {"name": "queue", "id": "q1", "port": 5672}]}"#,
    )
    .unwrap();
    let (code, out, err) = tern(&["services", "register", &addr, hcl.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Registered service: api\n"),
        "{err}"
    );
    assert_eq!(
        a.get("/v1/agent/checks").json()["api-ttl"]["ServiceID"],
        "api-1"
    );
    let (code, out, err) = tern(&["services", "register", &addr, json.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Registered service: cache\nRegistered service: queue\n"),
        "{err}"
    );
    let ids: Vec<String> = a
        .get("/v1/agent/services")
        .json()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(ids, vec!["api-1", "cache", "q1", "web"]);

    // Deregister by ID and by file.
    let (code, out, _) = tern(&["services", "deregister", &addr, "-id=web"]);
    assert_eq!((code, out.as_str()), (0, "Deregistered service: web\n"));
    let (code, out, _) = tern(&["services", "deregister", &addr, json.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Deregistered service: cache\nDeregistered service: q1\n")
    );
    let ids: Vec<String> = a
        .get("/v1/agent/services")
        .json()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(ids, vec!["api-1"]);

    // Usage and request errors: one line, exit 1.
    let (code, _, err) = tern(&["services", "register", &addr]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Service registration requires at least one argument or flags.\n"
        )
    );
    let (code, _, err) = tern(&[
        "services",
        "register",
        &addr,
        "-name=x",
        hcl.to_str().unwrap(),
    ]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Service registration requires arguments or -id, not both.\n"
        )
    );
    let (code, _, err) = tern(&["services", "deregister", &addr]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Service deregistration requires at least one argument or -id.\n"
        )
    );
    let (code, _, err) = tern(&["services", "deregister", &addr, "-id=ghost"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error deregistering service \"ghost\": Unexpected response code: 404 (Unknown service ID \"ghost\". Ensure that the service ID is passed, not the service name.)\n"
    );
    let bad = dir.join("bad.hcl");
    std::fs::write(&bad, "service {\n  name = \"x\"\n  colour = \"red\"\n}\n").unwrap();
    let (code, _, err) = tern(&["services", "register", &addr, bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid config key service.colour"), "{err}");
    let (code, _, err) = tern(&[
        "services",
        "register",
        &addr,
        "-name=bad",
        "-meta=consul-x=1",
    ]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Error registering service \"bad\": Unexpected response code: 400 (Invalid Service Meta:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `openssl` for a throwaway HTTPS server; installed from Debian if
/// missing (as `.ci/run` installs what tests need).
fn openssl() -> &'static str {
    let have = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let ok = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "openssl is needed for the HTTPS check test and could not be installed"
        );
    }
    "openssl"
}

/// HTTPS checks (Consul's CheckHTTP with a TLS client config): a server with
/// a self-signed certificate fails verification (critical, with the
/// reason), and passes with `TLSSkipVerify`.
#[test]
fn https_checks_verify_the_certificate_unless_told_not_to() {
    let dir = temp_dir("https-check");
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    let made = Command::new(openssl())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=tern-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the HTTPS server listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let a = Agent::server("https-check");
    for (name, skip) in [("strict", false), ("lax", true)] {
        let r = a.put(
            "/v1/agent/check/register",
            &format!(
                r#"{{"Name":"{name}","HTTP":"https://127.0.0.1:{port}/","Interval":"1s","TLSSkipVerify":{skip}}}"#
            ),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    eventually("both HTTPS checks ran", Duration::from_secs(15), || {
        let c = a.get("/v1/agent/checks").json();
        // (A check starts critical with no output: wait for a result.)
        c["lax"]["Status"] == "passing"
            && c["strict"]["Status"] == "critical"
            && c["strict"]["Output"]
                .as_str()
                .is_some_and(|o| !o.is_empty())
    });
    let c = a.get("/v1/agent/checks").json();
    let lax = c["lax"]["Output"].as_str().unwrap();
    assert!(
        lax.starts_with(&format!("HTTP GET https://127.0.0.1:{port}/: 200")),
        "{lax}"
    );
    let strict = c["strict"]["Output"].as_str().unwrap();
    assert!(strict.to_lowercase().contains("certificate"), "{strict}");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Services and checks in the agent's config files (`service {}` and
/// `checks = [...]`, Consul's snake_case keys) are registered at start and
/// synced to the catalog; a bad one stops the agent with one line naming
/// it.
#[test]
fn services_and_checks_from_config_files_are_registered_at_start() {
    let dir = temp_dir("config-services");
    let conf = dir.join("services.hcl");
    std::fs::write(
        &conf,
        r#"
service {
  name = "web"
  id   = "web-1"
  port = 8080
  tags = ["v1"]
  check {
    id  = "web-ttl"
    ttl = "1h"
  }
}
checks = [
  { id = "disk", name = "Disk", ttl = "1h", status = "passing" }
]
node_meta {
  rack = "r1"
}
"#,
    )
    .unwrap();
    let http = free_port();
    let args: Vec<String> = vec![
        "agent".into(),
        "-server".into(),
        "-bootstrap-expect=1".into(),
        "-node=config-services".into(),
        format!("-data-dir={}", dir.join("data").display()),
        "-bind=127.0.0.1".into(),
        "-client=127.0.0.1".into(),
        format!("-http-port={http}"),
        format!("-server-port={}", free_port()),
        format!("-serf-lan-port={}", free_gossip_port()),
        format!("-serf-wan-port={}", free_gossip_port()),
        "-node-meta=env:prod".into(),
        format!("-config-file={}", conf.display()),
    ];
    let a = Agent {
        child: spawn(&args, &dir),
        dir: dir.clone(),
        http,
        args: args.clone(),
        keep_dir: true,
    };
    a.wait_ready();
    let services = a.get("/v1/agent/services").json();
    assert_eq!(services["web-1"]["Port"], 8080, "{services}");
    assert_eq!(services["web-1"]["Tags"], serde_json::json!(["v1"]));
    let checks = a.get("/v1/agent/checks").json();
    assert_eq!(checks["web-ttl"]["ServiceID"], "web-1");
    assert_eq!(checks["disk"]["Status"], "passing");
    eventually(
        "the config's service reaches the catalog",
        Duration::from_secs(15),
        || {
            catalog_health(&a, "web")
                .as_array()
                .is_some_and(|e| e.len() == 1 && e[0]["Service"]["ID"] == "web-1")
        },
    );
    // node_meta (file) and -node-meta (flag) make the node's Meta, kept in
    // the catalog by anti-entropy.
    let node = a.get("/v1/catalog/node/config-services").json();
    assert_eq!(
        node["Node"]["Meta"],
        serde_json::json!({"env": "prod", "rack": "r1"}),
        "{node}"
    );
    let nodes = a.get("/v1/catalog/nodes?node-meta=rack:r1").json();
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    drop(a);

    // Bad node metadata stops the agent with Consul's words
    // (agent/config/builder.go "node_meta invalid", structs.ValidateNodeMetadata).
    let mut meta_args = args.clone();
    meta_args.insert(1, "-node-meta=consul-x:v".into());
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(&meta_args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node_meta invalid: Couldn't load metadata pair ('consul-x', 'v'): Key prefix 'consul-' is reserved for internal use"),
        "{err}"
    );

    // A bad definition: the agent does not start, and says which and why.
    let bad = dir.join("bad.hcl");
    std::fs::write(&bad, "service {\n  port = 1\n}\n").unwrap();
    let mut bad_args = args.clone();
    *bad_args.last_mut().unwrap() = format!("-config-file={}", bad.display());
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(&bad_args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services[0]: Missing service name"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
