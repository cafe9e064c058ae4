//! Gossip encryption with real `tern agent` processes on 127.0.0.1:
//! `tern keygen`, `-encrypt`, and `tern keyring -install|-use|-remove|-list`
//! rotating the key of a live three-server cluster without a restart, as
//! Consul's command/keyring and agent/operator_endpoint.go
//! `OperatorKeyringEndpoint` do; the keyring files in the data dir
//! (`serf/local.keyring`) keep a rotation across a restart; an agent with
//! an old key cannot join while one with the new key can; bad keys stop the
//! agent with one line.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_gossip_port, free_port, temp_dir};

struct Agent {
    name: String,
    http: u16,
    server: u16,
    serf_lan: u16,
    serf_wan: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn new(test: &str, name: &str) -> Agent {
        let dir = temp_dir(&format!("{test}-{name}"));
        Agent {
            name: name.into(),
            http: free_port(),
            server: free_port(),
            serf_lan: free_gossip_port(),
            serf_wan: free_gossip_port(),
            log: dir.join("agent.log"),
            dir,
            child: None,
        }
    }

    fn args(&self, extra: &[String]) -> Vec<String> {
        let mut args = vec![
            "agent".to_string(),
            "-server".into(),
            "-hcl=performance {\n  raft_multiplier = 1\n  leave_drain_time = \"1s\"\n}\n\
             autopilot {\n  server_stabilization_time = \"2s\"\n}"
                .into(),
            format!("-node={}", self.name),
            format!("-data-dir={}", self.dir.display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={}", self.http),
            format!("-server-port={}", self.server),
            format!("-serf-lan-port={}", self.serf_lan),
            format!("-serf-wan-port={}", self.serf_wan),
            "-retry-interval=1s".into(),
        ];
        args.extend(extra.iter().cloned());
        args
    }

    /// Starts `tern agent -server` with `extra` flags, output in `agent.log`.
    fn start(&mut self, extra: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(self.args(extra))
            .env("TERN_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start tern agent");
        self.child = Some(child);
    }

    fn gossip(&self) -> String {
        format!("127.0.0.1:{}", self.serf_lan)
    }

    fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn logs(agents: &[&Agent]) -> String {
    agents
        .iter()
        .map(|s| format!("---- {} ----\n{}", s.name, s.log_text()))
        .collect()
}

/// (status, body) of one request with an optional body.
fn http(method: &str, url: &str, body: Option<&str>) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let b = body.unwrap_or("").as_bytes();
    let mut r = match method {
        "PUT" => agent.put(url).send(b).ok()?,
        "POST" => agent.post(url).send(b).ok()?,
        "PATCH" => agent.patch(url).send(b).ok()?,
        "DELETE" => agent.delete(url).force_send_body().send(b).ok()?,
        _ => agent.get(url).call().ok()?,
    };
    let status = r.status().as_u16();
    Some((status, r.body_mut().read_to_string().ok()?))
}

/// `tern <args>`: (exit code, stdout, stderr).
fn tern(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn keygen() -> String {
    let (code, out, err) = tern(&["keygen"]);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_string();
    assert_eq!(out, format!("{key}\n"), "one line");
    assert_eq!(key.len(), 44, "base64 of 32 bytes: {key}");
    key
}

fn until<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(x) = f() {
            return Some(x);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The status column of `node` in `tern members` at `addr`.
fn member_status(addr: &str, node: &str) -> Option<String> {
    let (code, out, _) = tern(&["members", &format!("-http-addr={addr}")]);
    if code != 0 {
        return None;
    }
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&node))
        .and_then(|c| c.get(2).map(|s| s.to_string()))
}

/// `GET /v1/operator/keyring`, parsed.
fn keyring_list(a: &Agent) -> Option<serde_json::Value> {
    match http("GET", &a.url("/v1/operator/keyring"), None)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The (Keys, PrimaryKeys, NumNodes) of the LAN or WAN entry of a listing.
fn pool_keys(list: &serde_json::Value, wan: bool) -> (serde_json::Value, serde_json::Value, u64) {
    let r = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["WAN"] == wan)
        .unwrap();
    (
        r["Keys"].clone(),
        r["PrimaryKeys"].clone(),
        r["NumNodes"].as_u64().unwrap(),
    )
}

fn keyring_file(a: &Agent) -> Vec<String> {
    let text = std::fs::read_to_string(a.dir.join("serf/local.keyring")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The story of Consul's key rotation (its docs' "Rotate the gossip
/// encryption key" and serf's keymanager tests) on three live servers:
/// install B, use B, remove A, with `tern keyring`; removing the primary is
/// refused; the cluster stays joined and keeps serving throughout; the
/// keyring files follow; a server restarted with the old `-encrypt` keeps
/// the rotated keyring; an agent with only B joins and one with only A
/// cannot.
#[test]
fn a_live_cluster_rotates_its_gossip_key_with_tern_keyring() {
    let a = keygen();
    let b = keygen();
    assert_ne!(a, b);
    let mut servers: Vec<Agent> = (1..=3)
        .map(|i| Agent::new("rotate", &format!("s{i}")))
        .collect();
    let join = servers[0].gossip();
    for s in &mut servers {
        s.start(&[
            format!("-encrypt={a}"),
            "-bootstrap-expect=3".into(),
            format!("-retry-join={join}"),
        ]);
    }
    let s1 = servers[0].http_addr();
    let all_alive = |addr: &str, names: &[&str]| {
        names
            .iter()
            .all(|n| member_status(addr, n).as_deref() == Some("alive"))
    };
    let ok = until(Duration::from_secs(60), || {
        // Every server sees all three in both pools (a keyring operation
        // reaches the members its server knows).
        (all_alive(&s1, &["s1", "s2", "s3"])
            && servers.iter().all(|s| {
                keyring_list(s)
                    .is_some_and(|l| pool_keys(&l, true).2 == 3 && pool_keys(&l, false).2 == 3)
            }))
        .then_some(())
    });
    let refs: Vec<&Agent> = servers.iter().collect();
    assert!(
        ok.is_some(),
        "three encrypted servers did not form a cluster\n{}",
        logs(&refs)
    );
    for s in &servers {
        assert!(
            s.log_text().contains("encrypted=true"),
            "{} says its pools are encrypted",
            s.name
        );
        assert_eq!(
            keyring_file(s),
            vec![a.clone()],
            "{}: the file from -encrypt",
            s.name
        );
    }

    // List: both pools, every server holds A, which is the primary.
    let (code, out, err) = tern(&["keyring", "-list", &format!("-http-addr={s1}")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("==> Gathering installed encryption keys...\n"),
        "{out}"
    );
    assert!(out.contains(&format!("\nWAN:\n  {a} [3/3]\n")), "{out}");
    assert!(
        out.contains(&format!("\ndc1 (LAN):\n  {a} [3/3]\n")),
        "{out}"
    );

    // Install B through s2.
    let s2 = servers[1].http_addr();
    let (code, out, err) = tern(&["keyring", "-install", &b, &format!("-http-addr={s2}")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "==> Installing new gossip encryption key...\n");
    let list = keyring_list(&servers[0]).unwrap();
    for wan in [true, false] {
        let (keys, primary, n) = pool_keys(&list, wan);
        assert_eq!(n, 3);
        assert_eq!(
            keys,
            serde_json::json!({ a.clone(): 3, b.clone(): 3 }),
            "{list}"
        );
        assert_eq!(primary, serde_json::json!({ a.clone(): 3 }), "{list}");
    }
    for s in &servers {
        assert_eq!(keyring_file(s), vec![a.clone(), b.clone()], "{}", s.name);
    }

    // Use B.
    let (code, out, err) = tern(&["keyring", "-use", &b, &format!("-http-addr={s1}")]);
    assert_eq!(code, 0, "{out}{err}");
    let list = keyring_list(&servers[2]).unwrap();
    assert_eq!(
        pool_keys(&list, false).1,
        serde_json::json!({ b.clone(): 3 })
    );
    assert_eq!(
        pool_keys(&list, true).1,
        serde_json::json!({ b.clone(): 3 })
    );

    // The primary cannot be removed: every member refuses, exit 1.
    let (code, _, err) = tern(&["keyring", "-remove", &b, &format!("-http-addr={s1}")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("removing the primary key is not allowed"),
        "{err}"
    );
    let body = format!("{{\"Key\":\"{b}\"}}");
    let (status, text) = http(
        "DELETE",
        &servers[0].url("/v1/operator/keyring"),
        Some(&body),
    )
    .unwrap();
    assert_eq!(status, 500);
    assert!(text.starts_with("8 errors occurred:\n\t* WAN error: 3/3 nodes reported failure\n\t* s1.dc1: removing the primary key is not allowed\n"), "{text}");
    assert!(text.contains("\n\t* dc1 (LAN) error: 3/3 nodes reported failure\n\t* s1: removing the primary key is not allowed\n"), "{text}");

    // Remove A.
    let (code, out, err) = tern(&["keyring", "-remove", &a, &format!("-http-addr={s1}")]);
    assert_eq!(code, 0, "{out}{err}");
    let list = keyring_list(&servers[1]).unwrap();
    for wan in [true, false] {
        assert_eq!(pool_keys(&list, wan).0, serde_json::json!({ b.clone(): 3 }));
    }
    for s in &servers {
        assert_eq!(keyring_file(s), vec![b.clone()], "{}", s.name);
    }

    // Still one cluster, still serving, a minute of gossip later.
    std::thread::sleep(Duration::from_secs(3));
    assert!(all_alive(&s1, &["s1", "s2", "s3"]));
    let (status, _) = http("PUT", &servers[2].url("/v1/kv/after-rotation"), Some("yes")).unwrap();
    assert_eq!(status, 200);

    // s3 restarts with the old -encrypt: its keyring file (B) wins.
    servers[2].kill9();
    servers[2].start(&[format!("-encrypt={a}"), format!("-retry-join={join}")]);
    let back = until(Duration::from_secs(30), || {
        (member_status(&s1, "s3").as_deref() == Some("alive")
            && member_status(&servers[2].http_addr(), "s1").as_deref() == Some("alive"))
        .then_some(())
    });
    assert!(
        back.is_some(),
        "s3 did not come back with the rotated keyring\n{}",
        servers[2].log_text()
    );
    assert!(servers[2].log_text().contains(
        "exists but does not contain the key given with encrypt; using the keyring file"
    ));

    // A newcomer with only B joins; one with only A cannot.
    let mut good = Agent::new("rotate", "s4");
    good.start(&[format!("-encrypt={b}"), format!("-retry-join={join}")]);
    let mut old = Agent::new("rotate", "s5");
    old.start(&[format!("-encrypt={a}"), format!("-retry-join={join}")]);
    let joined = until(Duration::from_secs(30), || {
        (member_status(&s1, "s4").as_deref() == Some("alive")).then_some(())
    });
    assert!(
        joined.is_some(),
        "the B agent did not join\n{}",
        good.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        member_status(&s1, "s5"),
        None,
        "the A agent must not be a member"
    );
    assert_eq!(member_status(&old.http_addr(), "s1"), None, "nor see any");
    assert!(
        servers[0]
            .log_text()
            .contains("no installed key could decrypt the packet"),
        "the refused packets are logged\n{}",
        servers[0].log_text()
    );
    // Its join's state exchange is dropped unanswered; the attempt fails
    // at the join timeout (memberlist's TCPTimeout, 10 s) and is retried.
    let failed = until(Duration::from_secs(30), || {
        old.log_text()
            .contains("Join cluster failed, will retry")
            .then_some(())
    });
    assert!(failed.is_some(), "{}", old.log_text());
    assert_eq!(member_status(&s1, "s5"), None, "still not a member");
}

/// Consul's answers for bad keyring requests (agent/operator_endpoint.go
/// `OperatorKeyringEndpoint`, agent/keyring.go `ParseRelayFactor`,
/// `ValidateLocalOnly`; serf's key manager for the key itself), and an
/// agent without encryption has no keyring to list or change.
#[test]
fn keyring_requests_are_checked_as_consul_checks_them() {
    let key = keygen();
    let mut s = Agent::new("keyring-errors", "e1");
    s.start(&["-bootstrap-expect=1".into(), format!("-encrypt={key}")]);
    let up = until(Duration::from_secs(30), || keyring_list(&s));
    assert!(up.is_some(), "{}", s.log_text());
    let url = s.url("/v1/operator/keyring");
    let cases: Vec<(&str, String, Option<&str>, u16, String)> = vec![
        ("POST", url.clone(), Some(""), 400, "Request decode failed: EOF".into()),
        ("POST", url.clone(), Some("{nope"), 400, "Request decode failed: ".into()),
        (
            "GET",
            format!("{url}?relay-factor=9"),
            None,
            400,
            "Invalid relay-factor: Relay factor must be in range: [0, 5]".into(),
        ),
        (
            "GET",
            format!("{url}?relay-factor=x"),
            None,
            400,
            "Error parsing relay factor: ".into(),
        ),
        (
            "POST",
            format!("{url}?local-only=true"),
            Some(&*Box::leak(format!("{{\"Key\":\"{key}\"}}").into_boxed_str())),
            400,
            "Invalid use of local-only: local-only can only be set for list requests".into(),
        ),
        (
            "POST",
            url.clone(),
            Some("{\"Key\":\"%%%%\"}"),
            500,
            "2 errors occurred:\n\t* WAN error: illegal base64 data at input byte 0\n\t* dc1 (LAN) error: illegal base64 data at input byte 0\n\n".into(),
        ),
        (
            "POST",
            url.clone(),
            Some("{\"Key\":\"AAAA\"}"),
            500,
            "key size must be 16, 24 or 32 bytes".into(),
        ),
        ("PATCH", url.clone(), Some(""), 405, String::new()),
    ];
    for (method, u, body, want_status, want_text) in cases {
        let (status, text) = http(method, &u, body).unwrap();
        assert_eq!(status, want_status, "{method} {u} {body:?}: {text}");
        assert!(text.contains(&want_text), "{method} {u} {body:?}: {text}");
    }
    // ?local-only: this agent's keys, one node per pool.
    let (status, text) = http("GET", &format!("{url}?local-only=true"), None).unwrap();
    assert_eq!(status, 200, "{text}");
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        pool_keys(&list, false),
        (
            serde_json::json!({ key.clone(): 1 }),
            serde_json::json!({ key.clone(): 1 }),
            1
        )
    );
    // The CLI: one action only, and none prints the help.
    let addr = format!("-http-addr={}", s.http_addr());
    let (code, _, err) = tern(&["keyring", "-list", "-install", &key, &addr]);
    assert_eq!((code, err.trim()), (1, "Only a single action is allowed"));
    let (code, _, err) = tern(&["keyring", &addr]);
    assert_eq!(code, 1);
    assert!(err.starts_with("Usage: tern keyring [options]"), "{err}");
    drop(s);

    // Without encryption: serf's messages, a 500, exit 1.
    let mut plain = Agent::new("keyring-errors", "p1");
    plain.start(&["-bootstrap-expect=1".into()]);
    let text = until(Duration::from_secs(30), || {
        http("GET", &plain.url("/v1/operator/keyring"), None).filter(|(s, _)| *s == 500)
    })
    .map(|(_, t)| t)
    .expect("the plain agent answers");
    assert!(
        text.contains("dc1 (LAN) error: 1/1 nodes reported failure"),
        "{text}"
    );
    assert!(
        text.contains("p1: Keyring is empty (encryption not enabled)"),
        "{text}"
    );
    let addr = format!("-http-addr={}", plain.http_addr());
    let (code, _, err) = tern(&["keyring", "-install", &key, &addr]);
    assert_eq!(code, 1);
    assert!(
        err.contains("No keyring to modify (encryption not enabled)"),
        "{err}"
    );
}

/// A bad `encrypt` key or keyring file stops the agent at start with one
/// line naming it, as Consul's config builder and `loadKeyringFile` do.
#[test]
fn a_bad_key_or_keyring_file_stops_the_agent_with_one_line() {
    for (enc, want) in [
        ("not-base64!", "encrypt: not valid base64"),
        (
            "AAAAAAAA",
            "encrypt: key size must be 16, 24 or 32 bytes (got 6 bytes)",
        ),
    ] {
        let a = Agent::new("bad-key", "b1");
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(a.args(&[format!("-encrypt={enc}"), "-bootstrap-expect=1".into()]))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{enc}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].contains(want), "{enc}: {err}");
    }
    let a = Agent::new("bad-key", "b2");
    let file = a.dir.join("serf/local.keyring");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "[\"AAAA\"]").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(a.args(&["-bootstrap-expect=1".into()]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "keyring file {}: key size must be 16, 24 or 32 bytes",
        file.display()
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(&want)).count(),
        1,
        "{text}"
    );
}
