//! The catalog HTTP API against real `tern agent` processes: every
//! `/v1/catalog` endpoint on a one-server agent, with Consul's JSON shapes,
//! status codes and texts (agent/catalog_endpoint.go and
//! agent/consul/catalog_endpoint.go), a blocking query that wakes on a
//! catalog write and stays parked through KV writes (and a KV watcher that
//! stays parked through a catalog write), and a three-server cluster where a
//! registration made on one server is read back from another.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{free_gossip_port, free_port, spawn_single_server, temp_dir};

struct Answer {
    status: u16,
    body: String,
    index: Option<u64>,
    consistency: Option<String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn http(method: &str, url: &str, body: Option<&str>, timeout: Duration) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let result = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("PUT", Some(b)) => agent.put(url).send(b.as_bytes()),
        ("PUT", None) => agent.put(url).send_empty(),
        (m, _) => panic!("method {m}"),
    };
    let mut r = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let index = header("x-consul-index").and_then(|v| v.parse().ok());
    let consistency = header("x-consul-effective-consistency");
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        body,
        index,
        consistency,
    }
}

fn get(url: &str) -> Answer {
    http("GET", url, None, Duration::from_secs(5))
}

fn put(url: &str, body: &str) -> Answer {
    http("PUT", url, Some(body), Duration::from_secs(5))
}

/// One `tern agent` server process, killed and cleaned up on drop.
struct Agent {
    child: Child,
    dir: PathBuf,
    http: u16,
}

impl Agent {
    fn single(name: &str) -> Agent {
        let dir = temp_dir(name);
        let http = free_port();
        let child = spawn_single_server(name, &dir, http, free_port());
        let agent = Agent { child, dir, http };
        agent.wait_for_leader(Duration::from_secs(20));
        agent.wait_for_serf_health(name, Duration::from_secs(20));
        agent
    }

    /// The leader registers every gossip member, itself included, with a
    /// `serfHealth` check (Consul's leader.go): wait for this agent's own,
    /// so the tests' index arithmetic starts after it.
    fn wait_for_serf_health(&self, node: &str, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let r = get(&format!("{}/v1/health/node/{node}", self.base()));
            if r.status == 200 && r.body.contains("serfHealth") {
                return;
            }
            assert!(
                Instant::now() < end,
                "no serfHealth for {node} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn wait_for_leader(&self, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let url = format!("{}/v1/status/leader", self.base());
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(2)))
                .build()
                .into();
            let leader = agent
                .get(&url)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok());
            if leader.is_some_and(|l| l.trim() != "\"\"") {
                return;
            }
            assert!(Instant::now() < end, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every endpoint, its shapes and its errors, on one real agent.
#[test]
fn every_catalog_endpoint_answers_as_consul_does() {
    let a = Agent::single("catalog-api");
    let base = a.base();

    // Register as py-consul does: lowercase keys, a check under `check`.
    let r = put(
        &format!("{base}/v1/catalog/register"),
        &json!({
            "node": "n1", "address": "10.0.0.1",
            "NodeMeta": {"rack": "r1"},
            "service": {"service": "web", "id": "web1", "tags": ["v1", "Primary"], "port": 8080,
                        "TaggedAddresses": {"wan": {"Address": "198.51.100.1", "Port": 80}}},
            "check": {"name": "web-alive", "status": "passing", "serviceid": "web1"},
            "WriteRequest": {"Token": ""}
        })
        .to_string(),
    );
    assert_eq!((r.status, r.body.trim()), (200, "true"));
    let r = put(
        &format!("{base}/v1/catalog/register"),
        r#"{"Node":"n2","Address":"10.0.0.2","Service":{"Service":"db","Tags":[]}}"#,
    );
    assert_eq!((r.status, r.body.trim()), (200, "true"));

    // Refusals: Consul's RPC errors are 500 with their text; a body that
    // does not decode is 400 (agent/catalog_endpoint.go).
    let refused = |body: &str| {
        let r = put(&format!("{base}/v1/catalog/register"), body);
        (r.status, r.body)
    };
    assert_eq!(
        refused(r#"{"Address":"10.0.0.3"}"#),
        (500, "Must provide node".into())
    );
    assert_eq!(
        refused(r#"{"Node":"n3"}"#),
        (
            500,
            "Must provide address if SkipNodeUpdate is not set".into()
        )
    );
    assert_eq!(
        refused(r#"{"Node":"n3","Address":"a","Service":{"ID":"x"}}"#),
        (
            500,
            "Must provide service name (Service.Service) when service ID is provided".into()
        )
    );
    assert_eq!(
        refused(r#"{"Node":"n1","Address":"10.0.0.1","Check":{"Name":"c","ServiceID":"nope"}}"#),
        (
            500,
            "failed inserting check on node \"n1\": Missing service registration".into()
        )
    );
    assert_eq!(
        refused(r#"{"Node":"n3","Address":7}"#),
        (
            400,
            "Request decode failed: json: cannot unmarshal number into Go struct field RegisterRequest.Address of type string".into()
        )
    );
    assert_eq!(refused(""), (400, "Request decode failed: EOF".into()));
    let (status, text) = refused("{nope");
    assert!(
        status == 400 && text.starts_with("Request decode failed: "),
        "{text}"
    );
    assert_eq!(get(&format!("{base}/v1/catalog/register")).status, 405);

    // Datacenters: this agent's.
    let r = get(&format!("{base}/v1/catalog/datacenters"));
    assert_eq!(r.json(), json!(["dc1"]));

    // Nodes: Consul's `Node`, null for maps never sent; node-meta filters.
    // The agent's own node is there too (its leader registered it from
    // gossip, with serfHealth and the `consul` service).
    let r = get(&format!("{base}/v1/catalog/nodes"));
    assert_eq!(r.status, 200);
    let nodes = r.json();
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    assert_eq!(nodes[0]["Node"], "catalog-api");
    assert_eq!(nodes[0]["Address"], "127.0.0.1");
    let n2 = &nodes[2];
    assert_eq!(n2["Node"], "n2");
    assert_eq!(n2["TaggedAddresses"], Value::Null);
    assert_eq!(n2["Meta"], Value::Null);
    assert_eq!(n2["Datacenter"], "dc1");
    assert!(n2["CreateIndex"].as_u64().unwrap() > 0);
    let keys: Vec<&String> = n2.as_object().unwrap().keys().collect();
    let mut want = [
        "Address",
        "CreateIndex",
        "Datacenter",
        "ID",
        "Meta",
        "ModifyIndex",
        "Node",
        "TaggedAddresses",
    ];
    want.sort();
    assert_eq!(keys, want);
    let nodes_index = r.index.expect("X-Consul-Index");
    assert_eq!(nodes_index, n2["ModifyIndex"].as_u64().unwrap());
    let r = get(&format!("{base}/v1/catalog/nodes?node-meta=rack:r1"));
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.json()[0]["Meta"], json!({"rack": "r1"}));

    // Services: name -> tags (a list even when empty).
    let r = get(&format!("{base}/v1/catalog/services"));
    assert_eq!(
        r.json(),
        json!({"consul": [], "db": [], "web": ["Primary", "v1"]})
    );
    assert!(r.index.is_some());

    // One service: Consul's `ServiceNode`, tags matched in any case, all of
    // them; an unknown service is [] with 200; no name is 400.
    let r = get(&format!("{base}/v1/catalog/service/web?tag=primary&tag=V1"));
    let web = r.json();
    assert_eq!(web.as_array().unwrap().len(), 1, "{web}");
    let w = &web[0];
    assert_eq!(w["Node"], "n1");
    assert_eq!(w["Address"], "10.0.0.1");
    assert_eq!(w["NodeMeta"], json!({"rack": "r1"}));
    assert_eq!(w["ServiceID"], "web1");
    assert_eq!(w["ServiceName"], "web");
    assert_eq!(w["ServiceTags"], json!(["v1", "Primary"]));
    assert_eq!(w["ServicePort"], 8080);
    assert_eq!(w["ServiceMeta"], json!({}));
    assert_eq!(w["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(
        w["ServiceTaggedAddresses"],
        json!({"wan": {"Address": "198.51.100.1", "Port": 80}})
    );
    assert_eq!(
        w["ServiceProxy"],
        json!({"Mode": "", "MeshGateway": {}, "Expose": {}})
    );
    assert_eq!(r.index, w["ModifyIndex"].as_u64());
    let r = get(&format!("{base}/v1/catalog/service/web?tag=v2"));
    assert_eq!(r.json(), json!([]));
    let db = get(&format!("{base}/v1/catalog/service/db")).json();
    assert_eq!(db[0]["ServiceTags"], json!([]));
    assert!(db[0].get("ServiceTaggedAddresses").is_none(), "omitempty");
    let r = get(&format!("{base}/v1/catalog/service/web?node-meta=rack:r2"));
    assert_eq!(r.json(), json!([]));
    let r = get(&format!("{base}/v1/catalog/service/nope"));
    assert_eq!((r.status, r.json()), (200, json!([])));
    assert!(r.index.is_some());
    let r = get(&format!("{base}/v1/catalog/service/"));
    assert_eq!((r.status, r.body.as_str()), (400, "Missing service name"));

    // A node: services by ID; a missing node is null with 200 and the
    // meta headers.
    let r = get(&format!("{base}/v1/catalog/node/n1"));
    let n1 = r.json();
    assert_eq!(n1["Node"]["Node"], "n1");
    let s = &n1["Services"]["web1"];
    assert_eq!(s["Service"], "web");
    assert_eq!(s["Tags"], json!(["v1", "Primary"]));
    assert_eq!(s["Meta"], Value::Null);
    assert_eq!(s["Port"], 8080);
    assert!(s.get("Kind").is_none(), "omitempty");
    assert_eq!(
        r.index,
        n1["Node"]["ModifyIndex"]
            .as_u64()
            .max(s["ModifyIndex"].as_u64())
    );
    let r = get(&format!("{base}/v1/catalog/node/missing"));
    assert_eq!((r.status, r.body.trim()), (200, "null"));
    assert!(r.index.is_some());
    let r = get(&format!("{base}/v1/catalog/node/"));
    assert_eq!((r.status, r.body.as_str()), (400, "Missing node name"));

    // node-services: a list; a missing node is nulls.
    let r = get(&format!("{base}/v1/catalog/node-services/n2"));
    let n2 = r.json();
    assert_eq!(n2["Node"]["Node"], "n2");
    assert_eq!(n2["Services"][0]["ID"], "db");
    let r = get(&format!("{base}/v1/catalog/node-services/missing"));
    assert_eq!(r.json(), json!({"Node": null, "Services": null}));

    // Consistency modes are the KV reads' (and conflict the same way).
    let r = get(&format!("{base}/v1/catalog/nodes?stale"));
    assert_eq!(r.consistency.as_deref(), Some("stale"));
    let r = get(&format!("{base}/v1/catalog/nodes?consistent"));
    assert_eq!(r.consistency.as_deref(), Some("consistent"));
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    let r = get(&format!("{base}/v1/catalog/nodes?stale&consistent"));
    assert_eq!(r.status, 400);
    // `?filter=` (go-bexpr, as Consul's filtering docs show it), applied
    // to the answer after the read: the index is the read's.
    let enc = |f: &str| -> String {
        f.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let names = |url: &str, field: &str| -> Vec<String> {
        let r = get(url);
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n[field].as_str().unwrap().to_string())
            .collect()
    };
    let all_index = get(&format!("{base}/v1/catalog/nodes")).index;
    let url = format!("{base}/v1/catalog/nodes?filter={}", enc("Node == n1"));
    assert_eq!(names(&url, "Node"), ["n1"]);
    assert_eq!(get(&url).index, all_index);
    let url = format!(
        "{base}/v1/catalog/nodes?filter={}",
        enc("Meta.rack == r1 or Address matches \"^10\\.0\\.0\\.2$\"")
    );
    assert_eq!(names(&url, "Node"), ["n1", "n2"]);
    // The agent's own node is in the catalog too (the leader registers
    // every gossip member with serfHealth, as Consul's leader.go does).
    let url = format!("{base}/v1/catalog/nodes?filter={}", enc("not Node == n1"));
    assert_eq!(names(&url, "Node"), ["catalog-api", "n2"]);
    let url = format!(
        "{base}/v1/catalog/nodes?filter={}",
        enc("not (Node == n1 or Node == catalog-api)")
    );
    assert_eq!(names(&url, "Node"), ["n2"]);
    let url = format!(
        "{base}/v1/catalog/service/web?filter={}",
        enc("v1 in ServiceTags and ServicePort == 8080")
    );
    assert_eq!(names(&url, "Node"), ["n1"]);
    let url = format!(
        "{base}/v1/catalog/service/web?filter={}",
        enc("ServiceTags contains v2")
    );
    assert!(names(&url, "Node").is_empty());
    let url = format!(
        "{base}/v1/health/checks/web?filter={}",
        enc("Status == passing")
    );
    assert_eq!(names(&url, "CheckID"), ["web-alive"]);
    let url = format!(
        "{base}/v1/health/service/web?filter={}",
        enc("Checks.Status == critical")
    );
    let r = get(&url);
    assert_eq!((r.status, r.json()), (200, json!([])));
    // catalog/services filters instances as `ServiceNode`s, then folds them
    // into names and tags (Consul's `ListServices`); its index is the
    // unfiltered read's.
    let services_index = get(&format!("{base}/v1/catalog/services")).index;
    let url = format!(
        "{base}/v1/catalog/services?filter={}",
        enc("ServiceTags contains v1")
    );
    let r = get(&url);
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"web": ["Primary", "v1"]}))
    );
    assert_eq!(r.index, services_index);
    let url = format!(
        "{base}/v1/catalog/services?filter={}",
        enc("NodeMeta.rack != r1 and ServiceName != consul")
    );
    assert_eq!(get(&url).json(), json!({"db": []}));
    // catalog/node and node-services filter the node's services.
    let url = format!("{base}/v1/catalog/node/n1?filter={}", enc("Port == 8080"));
    let r = get(&url);
    assert_eq!(r.json()["Services"]["web1"]["Port"], 8080, "{}", r.body);
    let url = format!("{base}/v1/catalog/node/n1?filter={}", enc("Service == db"));
    assert_eq!(get(&url).json()["Services"], json!({}));
    let url = format!(
        "{base}/v1/catalog/node-services/n1?filter={}",
        enc("Service == db")
    );
    let r = get(&url);
    assert_eq!(r.json()["Services"], json!([]), "{}", r.body);
    assert_eq!(r.json()["Node"]["Node"], "n1");
    let url = format!(
        "{base}/v1/catalog/node-services/n1?filter={}",
        enc("\"v1\" in Tags")
    );
    assert_eq!(get(&url).json()["Services"][0]["ID"], "web1");
    // Bad expressions and selectors are 400 with bexpr's lead-in.
    for bad in ["Node ==", "(Node == n1", "Nodes == n1", "Node is full"] {
        let r = get(&format!("{base}/v1/catalog/nodes?filter={}", enc(bad)));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(
            r.body
                .starts_with("Failed to create boolean expression evaluator: "),
            "{bad}: {}",
            r.body
        );
    }

    // Deregister: a service (its checks go), then a node.
    let r = put(
        &format!("{base}/v1/catalog/deregister"),
        r#"{"node":"n1","serviceid":"web1"}"#,
    );
    assert_eq!((r.status, r.body.trim()), (200, "true"));
    assert_eq!(
        get(&format!("{base}/v1/catalog/service/web")).json(),
        json!([])
    );
    let r = put(&format!("{base}/v1/catalog/deregister"), r#"{"Node":"n2"}"#);
    assert_eq!(r.body.trim(), "true");
    let r = get(&format!("{base}/v1/catalog/node/n2"));
    assert_eq!(r.body.trim(), "null");
    let r = put(&format!("{base}/v1/catalog/deregister"), r#"{}"#);
    assert_eq!((r.status, r.body.as_str()), (500, "Must provide node"));
}

/// A blocking `catalog/service/web` wakes on web's registration, not on
/// KV writes or another service's; a blocking KV read is not woken by a
/// catalog write.
#[test]
fn a_blocking_catalog_query_wakes_on_its_service_and_not_on_kv_writes() {
    let a = Agent::single("catalog-block");
    let base = a.base();
    put(
        &format!("{base}/v1/catalog/register"),
        r#"{"Node":"n1","Address":"10.0.0.1","Service":{"Service":"web","ID":"web1"}}"#,
    );
    let kv = put(&format!("{base}/v1/kv/k"), "v");
    assert_eq!(kv.body.trim(), "true");
    let index = get(&format!("{base}/v1/catalog/service/web"))
        .index
        .unwrap();
    let kv_index = get(&format!("{base}/v1/kv/k")).index.unwrap();

    let url = format!("{base}/v1/catalog/service/web?index={index}&wait=20s");
    let watcher = std::thread::spawn(move || {
        let start = Instant::now();
        let r = http("GET", &url, None, Duration::from_secs(30));
        (start.elapsed(), r.index, r.json())
    });
    let kv_url = format!("{base}/v1/kv/k?index={kv_index}&wait=6s");
    let kv_watcher = std::thread::spawn(move || {
        let start = Instant::now();
        let r = http("GET", &kv_url, None, Duration::from_secs(30));
        (start.elapsed(), r.index)
    });
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        put(&format!("{base}/v1/kv/other/{i}"), "x");
    }
    put(
        &format!("{base}/v1/catalog/register"),
        r#"{"Node":"n2","Address":"10.0.0.2","Service":{"Service":"db"}}"#,
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !watcher.is_finished(),
        "woken by KV writes or db's registration"
    );
    let added = Instant::now();
    put(
        &format!("{base}/v1/catalog/register"),
        r#"{"Node":"n2","Address":"10.0.0.2","Service":{"Service":"web","ID":"web2"}}"#,
    );
    let (waited, new_index, body) = watcher.join().unwrap();
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    assert!(added.elapsed() < Duration::from_secs(5));
    assert!(new_index.unwrap() > index);
    assert_eq!(body.as_array().unwrap().len(), 2);

    // The KV watcher ran out its wait (6 s, plus up to 1/16 of jitter)
    // with its index unchanged: the catalog writes did not wake it.
    let (kv_waited, kv_new) = kv_watcher.join().unwrap();
    assert!(
        kv_waited >= Duration::from_secs(6),
        "woken after {kv_waited:?}"
    );
    assert_eq!(kv_new, Some(kv_index));
}

/// Three servers: a registration through one is read back from another,
/// in default (leader) and stale (local) mode.
#[test]
fn a_registration_on_one_server_is_read_back_from_another() {
    let names = ["c1", "c2", "c3"];
    let ports: Vec<(u16, u16, u16)> = names
        .iter()
        .map(|_| (free_port(), free_port(), free_gossip_port()))
        .collect();
    let dirs: Vec<PathBuf> = names
        .iter()
        .map(|n| temp_dir(&format!("catalog-{n}")))
        .collect();
    let mut children: Vec<Child> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (http_port, server, lan) = ports[i];
        let mut args = vec![
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=3".into(),
            "-hcl=performance { raft_multiplier = 1 }".into(),
            format!("-node={name}"),
            format!("-data-dir={}", dirs[i].display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={http_port}"),
            format!("-server-port={server}"),
            format!("-serf-lan-port={lan}"),
            format!("-serf-wan-port={}", free_gossip_port()),
            "-retry-interval=1s".into(),
        ];
        for (j, p) in ports.iter().enumerate() {
            if j != i {
                args.push(format!("-retry-join=127.0.0.1:{}", p.2));
            }
        }
        children.push(
            Command::new(env!("CARGO_BIN_EXE_tern"))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let agents: Vec<Agent> = children
        .into_iter()
        .zip(dirs)
        .zip(&ports)
        .map(|((child, dir), p)| Agent {
            child,
            dir,
            http: p.0,
        })
        .collect();
    for a in &agents {
        a.wait_for_leader(Duration::from_secs(30));
    }
    let r = put(
        &format!("{}/v1/catalog/register", agents[0].base()),
        r#"{"Node":"ext","Address":"192.0.2.7","Service":{"Service":"api","Port":9000}}"#,
    );
    assert_eq!((r.status, r.body.trim()), (200, "true"));
    let r = get(&format!("{}/v1/catalog/service/api", agents[2].base()));
    assert_eq!(r.json()[0]["Node"], "ext", "{}", r.body);
    assert_eq!(r.json()[0]["ServicePort"], 9000);
    // A stale read on the third server sees it once that server applied
    // it (it may lag the leader briefly).
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&format!("{}/v1/catalog/node/ext?stale", agents[1].base()));
        if r.json() != Value::Null {
            assert_eq!(r.json()["Services"]["api"]["Port"], 9000);
            break;
        }
        assert!(Instant::now() < end, "never applied on the third server");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The health endpoints over catalog checks (agent/health_endpoint.go):
/// a node's checks, a service's checks, checks by state, instances with
/// their node's and their own checks, `?passing`, and a blocking health
/// read woken when a check of its service changes status.
#[test]
fn health_endpoints_read_the_catalogs_checks() {
    let a = Agent::single("catalog-health");
    let base = a.base();
    let register = |body: Value| {
        let r = put(&format!("{base}/v1/catalog/register"), &body.to_string());
        assert_eq!((r.status, r.body.trim()), (200, "true"), "{body}");
    };
    register(json!({
        "Node": "n1", "Address": "10.0.0.1",
        "Service": {"Service": "web", "ID": "web1", "Tags": ["v1"]},
        "Checks": [
            {"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing"},
            {"CheckID": "web-http", "Name": "web", "Status": "passing", "ServiceID": "web1",
             "Definition": {"HTTP": "http://10.0.0.1/health", "Interval": "10s"}}
        ]
    }));
    register(json!({
        "Node": "n2", "Address": "10.0.0.2",
        "Service": {"Service": "web", "ID": "web2"},
        "Check": {"Name": "web2-alive", "ServiceID": "web2", "Status": "warning"}
    }));

    let r = get(&format!("{base}/v1/health/node/n1"));
    let checks = r.json();
    assert_eq!(checks.as_array().unwrap().len(), 2);
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    assert_eq!(checks[0]["ServiceTags"], json!([]));
    assert_eq!(checks[0]["Definition"], json!({}));
    assert_eq!(checks[1]["ServiceName"], "web");
    assert_eq!(checks[1]["ServiceTags"], json!(["v1"]));
    assert_eq!(checks[1]["Type"], "http");
    assert_eq!(
        checks[1]["Definition"],
        json!({"Interval": "10s", "HTTP": "http://10.0.0.1/health"})
    );
    assert!(r.index.is_some());
    assert_eq!(
        get(&format!("{base}/v1/health/node/nope")).json(),
        json!([])
    );
    let r = get(&format!("{base}/v1/health/node/"));
    assert_eq!((r.status, r.body.as_str()), (400, "Missing node name"));

    let web_checks = get(&format!("{base}/v1/health/checks/web")).json();
    let ids: Vec<&str> = web_checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web-http", "web2-alive"]);
    let warning = get(&format!("{base}/v1/health/state/warning")).json();
    assert_eq!(warning[0]["CheckID"], "web2-alive");
    assert_eq!(
        get(&format!("{base}/v1/health/state/any"))
            .json()
            .as_array()
            .unwrap()
            .len(),
        4,
        "the three registered checks and the agent's own serfHealth"
    );
    let r = get(&format!("{base}/v1/health/state/"));
    assert_eq!((r.status, r.body.as_str()), (400, "Missing check state"));

    let r = get(&format!("{base}/v1/health/service/web"));
    let all = r.json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["Node"]["Node"], "n1");
    assert_eq!(all[0]["Service"]["ID"], "web1");
    let n1_checks: Vec<&str> = all[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(n1_checks, ["serfHealth", "web-http"]);
    assert_eq!(all[1]["Service"]["Tags"], json!([]));
    let index = r.index.unwrap();
    let passing = get(&format!("{base}/v1/health/service/web?passing")).json();
    assert_eq!(passing.as_array().unwrap().len(), 1, "n2's check warns");
    assert_eq!(
        get(&format!("{base}/v1/health/service/web?passing=false")).json(),
        all
    );
    let r = get(&format!("{base}/v1/health/service/web?passing=maybe"));
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Invalid value for ?passing")
    );
    assert_eq!(
        get(&format!("{base}/v1/health/service/web?tag=V1"))
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(&format!("{base}/v1/health/service/nope")).json(),
        json!([])
    );

    // A blocking health read wakes when n2's check turns passing.
    let url = format!("{base}/v1/health/service/web?passing&index={index}&wait=20s");
    let watcher = std::thread::spawn(move || {
        let r = http("GET", &url, None, Duration::from_secs(30));
        (r.index, r.json())
    });
    std::thread::sleep(Duration::from_millis(500));
    put(&format!("{base}/v1/kv/unrelated"), "x");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!watcher.is_finished(), "a KV write woke a health watcher");
    register(json!({
        "Node": "n2", "Address": "10.0.0.2",
        "Check": {"Name": "web2-alive", "ServiceID": "web2", "Status": "passing"}
    }));
    let (new_index, body) = watcher.join().unwrap();
    assert!(new_index.unwrap() > index);
    assert_eq!(body.as_array().unwrap().len(), 2, "both pass now");
}
