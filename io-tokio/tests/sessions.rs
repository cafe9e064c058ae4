//! Sessions and KV locks against real `tern agent` processes: every
//! `/v1/session` endpoint with Consul's JSON, status codes and texts
//! (agent/session_endpoint.go, agent/consul/session_endpoint.go), KV
//! `?acquire`/`?release` as Consul's state store decides them
//! (agent/consul/state/kvs.go `kvsLockTxn`/`kvsUnlockTxn`), the lock delay
//! (agent/consul/kvs_endpoint.go `kvsPreApply`), a TTL session expiring on
//! the leader at twice its TTL (agent/consul/session_ttl.go), and on a
//! three-server cluster every server in the catalog with `serfHealth`
//! and the `consul` service, the check going critical when a server is
//! SIGKILLed and the session on that node invalidated (agent/consul/leader.go
//! `handleAliveMember`/`handleFailedMember`).

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
        .max_redirects(0)
        .build()
        .into();
    let result = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        ("PUT", Some(b)) => agent.put(url).send(b.as_bytes()),
        ("PUT", None) => agent.put(url).send_empty(),
        (m, _) => panic!("method {m}"),
    };
    let mut r = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let index = r
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        body,
        index,
    }
}

fn get(url: &str) -> Answer {
    http("GET", url, None, Duration::from_secs(5))
}

fn put(url: &str, body: &str) -> Answer {
    http("PUT", url, Some(body), Duration::from_secs(5))
}

fn put_empty(url: &str) -> Answer {
    http("PUT", url, None, Duration::from_secs(5))
}

/// Waits until `f` holds, polling every 100 ms.
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `tern agent` server process, killed and cleaned up on drop.
struct Agent {
    child: Child,
    dir: PathBuf,
    http: u16,
    name: String,
}

impl Agent {
    fn single(name: &str) -> Agent {
        let dir = temp_dir(name);
        let http = free_port();
        let child = spawn_single_server(name, &dir, http, free_port());
        let agent = Agent {
            child,
            dir,
            http,
            name: name.to_owned(),
        };
        agent.wait_for_serf_health(name, "passing", Duration::from_secs(30));
        agent
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Waits until node `node`'s `serfHealth` has `status` here.
    fn wait_for_serf_health(&self, node: &str, status: &str, within: Duration) {
        let url = format!("{}/v1/health/node/{node}", self.base());
        eventually(&format!("{node} serfHealth {status}"), within, || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(2)))
                .http_status_as_error(false)
                .build()
                .into();
            let Ok(mut r) = agent.get(&url).call() else {
                return false;
            };
            let body = r.body_mut().read_to_string().unwrap_or_default();
            serde_json::from_str::<Value>(&body).is_ok_and(|v| {
                v.as_array().is_some_and(|checks| {
                    checks
                        .iter()
                        .any(|c| c["CheckID"] == "serfHealth" && c["Status"] == status)
                })
            })
        });
    }

    fn create(&self, body: &str) -> String {
        let r = put(&format!("{}/v1/session/create", self.base()), body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["ID"].as_str().unwrap().to_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every session endpoint, its JSON and its errors, on one real agent.
#[test]
fn every_session_endpoint_answers_as_consul_does() {
    let a = Agent::single("sessions-api");
    let base = a.base();

    // A create without a body: this agent's node, serfHealth, 15 s, release.
    let r = put_empty(&format!("{base}/v1/session/create"));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["ID"].as_str().unwrap().to_owned();
    assert_eq!(r.json().as_object().unwrap().len(), 1, "only the ID");
    let r = get(&format!("{base}/v1/session/info/{id}"));
    let info = r.json();
    assert_eq!(info.as_array().unwrap().len(), 1);
    let s = &info[0];
    assert_eq!(s["ID"], id.as_str());
    assert_eq!(s["Node"], a.name.as_str());
    assert_eq!(s["LockDelay"], 15_000_000_000u64);
    assert_eq!(s["Behavior"], "release");
    assert_eq!(s["TTL"], "");
    assert_eq!(s["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(s["ServiceChecks"], Value::Null);
    assert!(s.get("Checks").is_none(), "the legacy field is omitted");
    assert_eq!(s["CreateIndex"], s["ModifyIndex"]);
    let created_at = s["CreateIndex"].as_u64().unwrap();
    assert_eq!(r.index, Some(created_at));

    // A body in any case, LockDelay under 1000 as seconds.
    let id2 = a.create(r#"{"name":"web-lock","behavior":"delete","lockdelay":2,"ttl":"30s"}"#);
    let s2 = get(&format!("{base}/v1/session/info/{id2}")).json()[0].clone();
    assert_eq!(
        (&s2["Name"], &s2["Behavior"], &s2["LockDelay"], &s2["TTL"]),
        (
            &json!("web-lock"),
            &json!("delete"),
            &json!(2_000_000_000u64),
            &json!("30s")
        )
    );

    // Lists: by node and all, in ID order; an unknown session is [].
    let mut ids = vec![id.clone(), id2.clone()];
    ids.sort();
    let listed = |url: String| -> Vec<String> {
        get(&url)
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["ID"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(format!("{base}/v1/session/list")), ids);
    assert_eq!(listed(format!("{base}/v1/session/node/{}", a.name)), ids);
    assert_eq!(
        listed(format!("{base}/v1/session/node/{}", a.name.to_uppercase())),
        ids,
        "node names in any case"
    );
    assert!(listed(format!("{base}/v1/session/node/nobody")).is_empty());
    let r = get(&format!("{base}/v1/session/info/nope"));
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    assert!(r.index.is_some());

    // Renew: the session in a list; an unknown one is 404 with Consul's text.
    let r = put_empty(&format!("{base}/v1/session/renew/{id2}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["ID"], id2.as_str());
    let r = put_empty(&format!("{base}/v1/session/renew/nope"));
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "Session id 'nope' not found")
    );

    // Refusals (Consul's RPC errors are 500 with their text; a body that
    // does not decode is 400).
    let create = |body: &str| {
        let r = put(&format!("{base}/v1/session/create"), body);
        (r.status, r.body)
    };
    assert_eq!(
        create(r#"{"TTL":"5s"}"#),
        (
            500,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]".into()
        )
    );
    assert_eq!(
        create(r#"{"TTL":"86401s"}"#),
        (
            500,
            "Invalid Session TTL '86401000000000', must be between [10s=24h0m0s]".into()
        )
    );
    assert_eq!(create(r#"{"TTL":"10s"}"#).0, 200, "10 s is the lowest TTL");
    assert_eq!(create(r#"{"TTL":"86400s"}"#).0, 200, "24 h is the highest");
    assert_eq!(create(r#"{"TTL":"0s"}"#).0, 200, "0 is no TTL");
    assert_eq!(
        create(r#"{"TTL":"soon"}"#),
        (
            500,
            "Session TTL 'soon' invalid: time: invalid duration \"soon\"".into()
        )
    );
    assert_eq!(
        create(r#"{"Node":"ghost"}"#),
        (500, "Missing node registration".into())
    );
    assert_eq!(
        create(r#"{"NodeChecks":["nope"]}"#),
        (500, "Missing check 'nope' registration".into())
    );
    assert_eq!(
        create(r#"{"Behavior":"explode"}"#),
        (500, "Invalid Behavior setting 'explode'".into())
    );
    let (status, text) = create(r#"{"Name":7}"#);
    assert_eq!(status, 400);
    assert_eq!(
        text,
        "Request decode failed: json: cannot unmarshal number into Go struct field Session.Name of type string"
    );
    let (status, _) = create("{nope");
    assert_eq!(status, 400);
    let big = format!(r#"{{"Name":"{}"}}"#, "x".repeat(70 * 1024));
    assert_eq!(create(&big).0, 413);
    for path in ["destroy/", "renew/"] {
        let r = put_empty(&format!("{base}/v1/session/{path}"));
        assert_eq!((r.status, r.body.as_str()), (400, "Missing session"));
    }
    let r = get(&format!("{base}/v1/session/info/"));
    assert_eq!((r.status, r.body.as_str()), (400, "Missing session"));
    let r = get(&format!("{base}/v1/session/node/"));
    assert_eq!((r.status, r.body.as_str()), (400, "Missing node name"));
    let r = get(&format!("{base}/v1/session/info"));
    assert_eq!(r.status, 301, "a subtree root without its slash");
    assert_eq!(get(&format!("{base}/v1/session/create")).status, 405);

    // Consistency modes and a blocking list woken by a destroy.
    assert_eq!(get(&format!("{base}/v1/session/list?stale")).status, 200);
    assert_eq!(
        get(&format!("{base}/v1/session/list?consistent")).status,
        200
    );
    let index = get(&format!("{base}/v1/session/list")).index.unwrap();
    let url = format!("{base}/v1/session/list?index={index}&wait=10s");
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let r = http("GET", &url, None, Duration::from_secs(20));
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let r = put_empty(&format!("{base}/v1/session/destroy/{id2}"));
    assert_eq!((r.status, r.body.trim()), (200, "true"));
    let (woken, took) = waiter.join().unwrap();
    assert!(
        took < Duration::from_secs(8),
        "woken by the destroy: {took:?}"
    );
    assert!(woken.index.unwrap() > index);
    assert!(!woken.body.contains(&id2));
    // Destroying what is not there is still true (Consul).
    let r = put_empty(&format!("{base}/v1/session/destroy/{id2}"));
    assert_eq!((r.status, r.body.trim()), (200, "true"));
}

/// `?acquire` and `?release` as Consul's state store decides them, the
/// holder in `Session`, the lock delay after a destroy, and a delete of a
/// locked key allowed.
#[test]
fn kv_locks_follow_consul() {
    let a = Agent::single("sessions-locks");
    let base = a.base();
    let s1 = a.create(r#"{"LockDelay":"2s"}"#);
    let s2 = a.create("");
    let kv = |q: &str, body: &str| {
        let r = put(&format!("{base}/v1/kv/lock{q}"), body);
        (r.status, r.body.trim().to_owned())
    };
    let entry = || get(&format!("{base}/v1/kv/lock")).json()[0].clone();

    assert_eq!(
        kv("?acquire=nope", "x"),
        (500, "invalid session \"nope\"".into())
    );
    assert_eq!(kv("?acquire=", "x"), (500, "missing session".into()));
    assert_eq!(get(&format!("{base}/v1/kv/lock")).status, 404);

    assert_eq!(kv(&format!("?acquire={s1}"), "one"), (200, "true".into()));
    let e = entry();
    assert_eq!((&e["Session"], &e["LockIndex"]), (&json!(s1), &json!(1)));
    // The holder again: true, the value written, the lock index kept.
    assert_eq!(kv(&format!("?acquire={s1}"), "two"), (200, "true".into()));
    let e = entry();
    assert_eq!((&e["Value"], &e["LockIndex"]), (&json!("dHdv"), &json!(1)));
    // Another session: false; its release: false.
    assert_eq!(kv(&format!("?acquire={s2}"), "x"), (200, "false".into()));
    assert_eq!(kv(&format!("?release={s2}"), "x"), (200, "false".into()));
    // The holder releases: Session gone from the JSON, lock index kept.
    assert_eq!(kv(&format!("?release={s1}"), "three"), (200, "true".into()));
    let e = entry();
    assert!(e.get("Session").is_none(), "{e}");
    assert_eq!(
        (&e["LockIndex"], &e["Value"]),
        (&json!(1), &json!("dGhyZWU="))
    );
    // s2 takes it; a destroy of s2 releases it (behavior release) and its
    // 15 s lock delay keeps s1 out.
    assert_eq!(kv(&format!("?acquire={s2}"), "x"), (200, "true".into()));
    assert_eq!(entry()["LockIndex"], 2);
    assert_eq!(
        put_empty(&format!("{base}/v1/session/destroy/{s2}")).status,
        200
    );
    assert!(entry().get("Session").is_none());
    assert_eq!(
        kv(&format!("?acquire={s1}"), "x"),
        (200, "false".into()),
        "lock delay"
    );
    // s1 on another key, destroyed: its 2 s delay, then free.
    let r = put(&format!("{base}/v1/kv/short?acquire={s1}"), "x");
    assert_eq!(r.body.trim(), "true");
    assert_eq!(
        put_empty(&format!("{base}/v1/session/destroy/{s1}")).status,
        200
    );
    let s3 = a.create(r#"{"LockDelay":"0s"}"#);
    let r = put(&format!("{base}/v1/kv/short?acquire={s3}"), "x");
    assert_eq!(r.body.trim(), "false", "inside s1's 2 s lock delay");
    std::thread::sleep(Duration::from_millis(2200));
    let r = put(&format!("{base}/v1/kv/short?acquire={s3}"), "x");
    assert_eq!(r.body.trim(), "true", "after the lock delay");
    // A locked key may be deleted (Consul allows it).
    let r = http(
        "DELETE",
        &format!("{base}/v1/kv/short"),
        None,
        Duration::from_secs(5),
    );
    assert_eq!((r.status, r.body.trim()), (200, "true"));
}

/// A TTL session is destroyed by the leader once twice its TTL has passed
/// without a renew, not at the TTL itself (Consul's grace), and its lock
/// released.
#[test]
fn a_ttl_session_expires_at_twice_its_ttl() {
    let a = Agent::single("sessions-ttl");
    let base = a.base();
    let id = a.create(r#"{"TTL":"10s","LockDelay":"0s"}"#);
    let started = Instant::now();
    let r = put(&format!("{base}/v1/kv/held?acquire={id}"), "x");
    assert_eq!(r.body.trim(), "true");
    std::thread::sleep(Duration::from_secs(12));
    let info = get(&format!("{base}/v1/session/info/{id}")).json();
    assert_eq!(
        info.as_array().unwrap().len(),
        1,
        "alive past its TTL: the grace"
    );
    eventually("the session expires", Duration::from_secs(15), || {
        get(&format!("{base}/v1/session/info/{id}")).body == "[]"
    });
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(19),
        "expired after {took:?}, before twice its TTL"
    );
    let e = get(&format!("{base}/v1/kv/held")).json();
    assert!(e[0].get("Session").is_none(), "{e}");
}

/// Three servers: each is in the catalog with serfHealth passing and the
/// `consul` service at its server port; SIGKILL one and its serfHealth goes
/// critical ("Agent not live or unreachable") on the others, and a session
/// on its node is invalidated, releasing its lock.
#[test]
fn serf_health_tracks_a_killed_server() {
    let names = ["sh1", "sh2", "sh3"];
    let ports: Vec<(u16, u16, u16)> = names
        .iter()
        .map(|_| (free_port(), free_port(), free_gossip_port()))
        .collect();
    let mut agents: Vec<Agent> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (http_port, server, lan) = ports[i];
        let dir = temp_dir(&format!("sessions-{name}"));
        let mut args = vec![
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=3".into(),
            "-hcl=performance { raft_multiplier = 1 }".into(),
            format!("-node={name}"),
            format!("-data-dir={}", dir.display()),
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
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        agents.push(Agent {
            child,
            dir,
            http: http_port,
            name: name.to_string(),
        });
    }
    for a in &agents {
        for n in names {
            a.wait_for_serf_health(n, "passing", Duration::from_secs(60));
        }
    }
    let base = agents[0].base();
    let consul = get(&format!("{base}/v1/catalog/service/consul")).json();
    let mut seen: Vec<(String, u64)> = consul
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["Node"].as_str().unwrap().to_owned(),
                s["ServicePort"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let want: Vec<(String, u64)> = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| (n.to_string(), u64::from(p.1)))
        .collect();
    assert_eq!(seen, want);
    let check = get(&format!("{base}/v1/health/node/sh3")).json()[0].clone();
    assert_eq!(
        (&check["Name"], &check["Output"]),
        (
            &json!("Serf Health Status"),
            &json!("Agent alive and reachable")
        )
    );

    // A session on sh3's node holding a lock.
    let id = {
        let r = put(&format!("{base}/v1/session/create"), r#"{"Node":"sh3"}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["ID"].as_str().unwrap().to_owned()
    };
    let r = put(&format!("{base}/v1/kv/leader-lock?acquire={id}"), "sh3");
    assert_eq!(r.body.trim(), "true");

    // SIGKILL sh3.
    let mut dead = agents.pop().unwrap();
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    for a in &agents {
        a.wait_for_serf_health("sh3", "critical", Duration::from_secs(60));
    }
    let check = get(&format!("{base}/v1/health/node/sh3")).json()[0].clone();
    assert_eq!(check["Output"], "Agent not live or unreachable");
    eventually(
        "the session on sh3 is invalidated",
        Duration::from_secs(10),
        || get(&format!("{base}/v1/session/info/{id}")).body == "[]",
    );
    let e = get(&format!("{base}/v1/kv/leader-lock")).json();
    assert!(e[0].get("Session").is_none(), "{e}");
    // The others are still passing.
    for n in ["sh1", "sh2"] {
        agents[0].wait_for_serf_health(n, "passing", Duration::from_secs(5));
    }
}
