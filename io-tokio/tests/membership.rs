//! Gossip membership with real `tern agent` processes on 127.0.0.1: servers
//! find each other through `-retry-join` of LAN gossip addresses and
//! bootstrap on `-bootstrap-expect`; `tern members` shows Consul's columns
//! and statuses (`alive`, `failed` after `kill -9`, `left` after `tern
//! leave` or `tern force-leave`); a server started later with nothing but
//! `-retry-join` shows up, is added to Raft as a non-voter and promoted; the
//! HTTP endpoints answer as Consul's
//! agent/agent_endpoint.go does; an unreachable join address is retried and
//! logged while the agent serves.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_gossip_port, free_port, temp_dir};

struct Server {
    name: String,
    http: u16,
    server: u16,
    serf_lan: u16,
    serf_wan: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn new(test: &str, name: &str) -> Server {
        let dir = temp_dir(&format!("{test}-{name}"));
        Server {
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

    /// Starts `tern agent -server` with `extra` flags (`-bootstrap-expect`,
    /// `-retry-join`...), its output in `agent.log`.
    fn start(&mut self, extra: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
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
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
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

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn logs(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| format!("---- {} ----\n{}", s.name, s.log_text()))
        .collect()
}

fn http(method: &str, url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = match method {
        "PUT" => agent.put(url).send(&[][..]).ok()?,
        _ => agent.get(url).call().ok()?,
    };
    let status = r.status().as_u16();
    Some((status, r.body_mut().read_to_string().ok()?))
}

/// `tern <args> -http-addr=<addr>`: (exit code, stdout, stderr).
fn tern(args: &[&str], addr: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .arg(format!("-http-addr={addr}"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `tern members` row of `node` as its columns.
fn row(members: &str, node: &str) -> Option<Vec<String>> {
    members
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().is_some_and(|n| n == node))
}

/// Polls `tern members` on `addr` until `want` holds of its output.
fn members_until(
    addr: &str,
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        let (code, out, err) = tern(&["members"], addr);
        if code == 0 && want(&out) {
            return Ok(out);
        }
        last = format!("exit {code}\n{out}{err}");
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(last)
}

fn status_of(members: &str, node: &str) -> Option<String> {
    row(members, node).and_then(|r| r.get(2).cloned())
}

fn leader(servers: &[&Server], within: Duration) -> Option<String> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        for s in servers {
            if let Some((200, body)) = http("GET", &format!("{}/v1/status/leader", s.base())) {
                let l = body.trim().trim_matches('"').to_string();
                if !l.is_empty() {
                    return Some(l);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The story of Consul's members/join/leave/force-leave surfaces
/// (command/members/members.go, command/forceleave/forceleave.go,
/// agent/agent_endpoint.go `AgentLeave`): three servers bootstrap from
/// gossip; a fourth and a fifth join with only `-retry-join` and each
/// becomes a non-voter, then a voter; `kill -9` makes a member
/// `failed`; `tern leave` makes one `left` and its process exit 0;
/// `tern force-leave` turns the failed one `left`.
#[test]
fn servers_join_by_gossip_and_members_tracks_failed_left_and_force_left() {
    // Phase 1: three servers, each told the others' gossip addresses, find
    // each other in the LAN pool and elect a leader.
    let mut s: Vec<Server> = (1..=3)
        .map(|i| Server::new("members", &format!("s{i}")))
        .collect();
    let gossip: Vec<String> = s.iter().map(Server::gossip).collect();
    for (i, srv) in s.iter_mut().enumerate() {
        let mut extra = vec!["-bootstrap-expect=3".to_string()];
        for (j, g) in gossip.iter().enumerate() {
            if j != i {
                extra.push(format!("-retry-join={g}"));
            }
        }
        srv.start(&extra);
    }
    leader(&s.iter().collect::<Vec<_>>(), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no leader\n{}", logs(&s)));

    // Phase 2: `tern members` lists three alive servers in Consul's columns.
    let a = s[0].http_addr();
    let out = members_until(&a, Duration::from_secs(10), |o| o.lines().count() == 4)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&s)));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "Node",
            "Address",
            "Status",
            "Type",
            "Build",
            "Protocol",
            "DC",
            "Partition",
            "Segment"
        ]
    );
    for srv in &s {
        assert_eq!(
            row(&out, &srv.name).unwrap(),
            [
                srv.name.as_str(),
                &srv.gossip(),
                "alive",
                "server",
                tern::http::CONSUL_COMPATIBLE_VERSION,
                "2",
                "dc1",
                "default",
                "<all>"
            ],
            "{out}"
        );
    }

    // Phase 3: servers 4 and 5 started later with nothing but -retry-join
    // show up in every member list (issue 8: "adding servers 4 and 5 to a
    // running 3-server cluster works with nothing but -retry-join").
    let mut added: Vec<Server> = ["s4", "s5"]
        .iter()
        .map(|n| Server::new("members", n))
        .collect();
    for (i, srv) in added.iter_mut().enumerate() {
        srv.start(&[format!("-retry-join={}", s[i].gossip())]);
    }
    for srv in &s {
        for new in ["s4", "s5"] {
            members_until(&srv.http_addr(), Duration::from_secs(20), |o| {
                status_of(o, new).as_deref() == Some("alive")
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{new} not alive at {}: {e}
{}",
                    srv.name,
                    logs(&s)
                )
            });
        }
    }
    // The leader adds each to Raft as a non-voter (Raft protocol 3, Consul's
    // leader.go reconcile), and autopilot promotes them once stable
    // (`tern operator raft list-peers`, Consul's command/operator/raft).
    let voter_column = |out: &str, name: &str| row(out, name).and_then(|r| r.get(4).cloned());
    let mut seen: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let end = Instant::now() + Duration::from_secs(90);
    while seen
        .iter()
        .any(|v| v.last().map(String::as_str) != Some("true"))
    {
        assert!(
            Instant::now() < end,
            "s4 and s5 did not both become voters: {seen:?}\n{}\n{}",
            logs(&s),
            logs(&added)
        );
        let (code, out, _) = tern(&["operator", "raft", "list-peers"], &a);
        for (i, name) in ["s4", "s5"].iter().enumerate() {
            if let (0, Some(v)) = (code, voter_column(&out, name)) {
                if seen[i].last() != Some(&v) {
                    seen[i].push(v);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for v in &seen {
        assert_eq!(v, &["false", "true"], "non-voter first, then voter");
    }
    let (code, out, _) = tern(&["operator", "raft", "list-peers"], &a);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(4) == Some("true"))
            .count(),
        5,
        "five voters: {out}"
    );

    // Phase 4: kill -9 of s3: the others show it failed.
    s[2].kill9();
    for srv in &s[..2] {
        members_until(&srv.http_addr(), Duration::from_secs(60), |o| {
            status_of(o, "s3").as_deref() == Some("failed")
        })
        .unwrap_or_else(|e| panic!("s3 not failed at {}: {e}\n{}", srv.name, logs(&s)));
    }

    // Phase 5: `tern leave` of s2: it exits 0 and the others show it left
    // (the leave was broadcast), not failed.
    let (code, out, err) = tern(&["leave"], &s[1].http_addr());
    assert_eq!(
        (code, out.as_str()),
        (0, "Graceful leave complete\n"),
        "{err}"
    );
    let mut child = s[1].child.take().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("s2 still runs after tern leave\n{}", logs(&s)));
    assert!(status.success(), "a graceful leave exits 0: {status:?}");
    let out = members_until(&a, Duration::from_secs(10), |o| {
        status_of(o, "s2").as_deref() == Some("left")
    })
    .unwrap_or_else(|e| panic!("s2 not left: {e}\n{}", logs(&s)));
    assert_eq!(status_of(&out, "s3").as_deref(), Some("failed"), "{out}");
    let log = s[1].log_text();
    let wan = log
        .find("(WAN) leaving the pool")
        .expect("left the WAN pool");
    let lan = log
        .find("(LAN) leaving the pool")
        .expect("left the LAN pool");
    assert!(wan < lan, "the WAN pool is left before the LAN pool\n{log}");

    // Phase 6: `tern force-leave` of the failed s3 prints nothing and turns
    // it left; -status filters the list.
    assert_eq!(
        tern(&["force-leave", "s3"], &a),
        (0, String::new(), String::new())
    );
    members_until(&a, Duration::from_secs(10), |o| {
        status_of(o, "s3").as_deref() == Some("left")
    })
    .unwrap_or_else(|e| panic!("s3 not left after force-leave: {e}\n{}", logs(&s)));
    let (code, out, _) = tern(&["members", "-status=left"], &a);
    assert_eq!(code, 0);
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["s2", "s3"], "{out}");
    let (code, out, _) = tern(&["members", "-status=leaving"], &a);
    assert_eq!((code, out.as_str()), (2, ""));

    // Phase 7: `tern force-leave -prune` forgets the left s3 at once, on
    // every member (serf's RemoveFailedNodePrune), not after the 24 h
    // tombstone timeout; s2, left but not pruned, is still listed.
    assert_eq!(
        tern(&["force-leave", "-prune", "s3"], &a),
        (0, String::new(), String::new())
    );
    let everyone: Vec<String> = [&s[0]]
        .into_iter()
        .chain(added.iter())
        .map(Server::http_addr)
        .collect();
    for addr in &everyone {
        let out = members_until(addr, Duration::from_secs(10), |o| row(o, "s3").is_none())
            .unwrap_or_else(|e| panic!("s3 still listed at {addr}: {e}\n{}", logs(&s)));
        assert_eq!(status_of(&out, "s2").as_deref(), Some("left"), "{out}");
    }
}

/// The HTTP surfaces against a real agent, as Consul's agent_endpoint.go
/// serves them: `/v1/agent/members` (`?wan=1`) in serf's JSON with the gossip
/// address, `PUT /v1/agent/join/<addr>` (200 empty, or 500 with the error),
/// `PUT /v1/agent/force-leave/<node>` (500 "No node found" for a stranger).
#[test]
fn members_join_and_force_leave_endpoints_answer_as_consul() {
    let mut s1 = Server::new("endpoints", "s1");
    s1.start(&["-bootstrap-expect=1".to_string()]);
    // A second server, not bootstrapped and told to join nobody.
    let mut s2 = Server::new("endpoints", "s2");
    s2.start(&[]);
    let base = s1.base();
    leader(&[&s1], Duration::from_secs(20)).unwrap_or_else(|| panic!("{}", s1.log_text()));

    // The member list: only s1, as serf encodes a member.
    let (code, body) = http("GET", &format!("{base}/v1/agent/members")).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let m = &v.as_array().unwrap()[..];
    assert_eq!(m.len(), 1, "{body}");
    assert_eq!(m[0]["Name"], "s1");
    assert_eq!(m[0]["Addr"], "127.0.0.1");
    assert_eq!(m[0]["Port"], s1.serf_lan);
    assert_eq!(m[0]["Status"], 1);
    assert_eq!(m[0]["Tags"]["role"], "consul");
    assert_eq!(m[0]["Tags"]["dc"], "dc1");
    assert_eq!(m[0]["Tags"]["port"], s1.server.to_string());
    assert_eq!(m[0]["Tags"]["raft_vsn"], "3");
    for k in [
        "ProtocolMin",
        "ProtocolMax",
        "ProtocolCur",
        "DelegateMin",
        "DelegateMax",
        "DelegateCur",
    ] {
        assert!(m[0][k].is_u64(), "{k} in {body}");
    }
    // /v1/agent/self's Member is the same LAN member.
    let (_, me) = http("GET", &format!("{base}/v1/agent/self")).unwrap();
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["Member"]["Port"], s1.serf_lan);
    // The WAN pool names members <node>.<dc>.
    let (_, wan) = http("GET", &format!("{base}/v1/agent/members?wan=1")).unwrap();
    let wan: serde_json::Value = serde_json::from_str(&wan).unwrap();
    assert_eq!(wan[0]["Name"], "s1.dc1");
    assert_eq!(wan[0]["Port"], s1.serf_wan);

    // Join s2 through its gossip address (LAN) and its WAN address.
    let r = http("PUT", &format!("{base}/v1/agent/join/{}", s2.gossip()));
    assert_eq!(r, Some((200, String::new())), "{}", s1.log_text());
    let r = http(
        "PUT",
        &format!("{base}/v1/agent/join/127.0.0.1:{}?wan=1", s2.serf_wan),
    );
    assert_eq!(r, Some((200, String::new())));
    let (_, wan) = http("GET", &format!("{base}/v1/agent/members?wan=1")).unwrap();
    assert!(wan.contains("\"s2.dc1\""), "{wan}");
    // Only a PUT joins.
    assert_eq!(
        http("GET", &format!("{base}/v1/agent/join/{}", s2.gossip())).map(|r| r.0),
        Some(405)
    );

    // A join nobody answers: 500 with the address in the error text.
    let dead = format!("127.0.0.1:{}", free_gossip_port());
    let (code, text) = http("PUT", &format!("{base}/v1/agent/join/{dead}")).unwrap();
    assert_eq!(code, 500);
    assert!(text.contains(&dead), "{text}");
    // Force-leave of a stranger: Consul's error.
    let (code, text) = http("PUT", &format!("{base}/v1/agent/force-leave/nobody")).unwrap();
    assert_eq!(
        (code, text.as_str()),
        (500, "agent: No node found with name 'nobody'")
    );

    // s2 dies: failed (Status 4); force-leave makes it left (Status 3), and
    // `?prune` then removes it from the list (serf's
    // RemoveFailedNodePrune).
    s2.kill9();
    let status = |name: &str| -> Option<u64> {
        let (_, body) = http("GET", &format!("{base}/v1/agent/members"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v.as_array()?
            .iter()
            .find(|m| m["Name"] == name)
            .and_then(|m| m["Status"].as_u64())
    };
    let end = Instant::now() + Duration::from_secs(60);
    while status("s2") != Some(4) {
        assert!(Instant::now() < end, "s2 never failed\n{}", s1.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    let r = http("PUT", &format!("{base}/v1/agent/force-leave/s2"));
    assert_eq!(r, Some((200, String::new())));
    assert_eq!(status("s2"), Some(3));
    let r = http("PUT", &format!("{base}/v1/agent/force-leave/s2?prune"));
    assert_eq!(r, Some((200, String::new())));
    assert_eq!(status("s2"), None, "pruned: no longer listed");
    assert!(status("s1").is_some());
}

/// An unreachable `-retry-join` address is retried every `-retry-interval`
/// with a warning per attempt (Consul's agent/retry_join.go), while the
/// agent serves; a bad or taken gossip port stops the agent with one line
/// naming the key.
#[test]
fn an_unreachable_join_address_is_retried_and_logged_and_bad_ports_name_the_key() {
    let dead = format!("127.0.0.1:{}", free_gossip_port());
    let mut s1 = Server::new("unreachable", "s1");
    s1.start(&[
        "-bootstrap-expect=1".to_string(),
        format!("-retry-join={dead}"),
    ]);
    // And one told to `-join` it at start: it does not start (Consul's
    // start_join: "Failed to join").
    let mut s4 = Server::new("unreachable", "s4");
    s4.start(&["-bootstrap-expect=1".to_string(), format!("-join={dead}")]);
    // Beside it, one that may retry once: it stops with status 1 after its
    // second failed attempt, as Consul's agent does ("Retry join failed").
    let mut s3 = Server::new("unreachable", "s3");
    s3.start(&[
        "-bootstrap-expect=1".to_string(),
        format!("-retry-join={dead}"),
        "-retry-max=1".into(),
    ]);
    leader(&[&s1], Duration::from_secs(20)).unwrap_or_else(|| panic!("{}", s1.log_text()));
    let r = http("PUT", &format!("{}/v1/kv/k", s1.base()));
    assert_eq!(r.map(|r| r.1.trim().to_string()), Some("true".into()));
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let log = s1.log_text();
        let warned = |attempt: u32| {
            log.lines().any(|l| {
                l.contains("WARN")
                    && l.contains("Join cluster failed, will retry")
                    && l.contains(&format!("attempt={attempt} "))
                    && l.contains(&dead)
            })
        };
        if warned(1) && warned(2) {
            break;
        }
        assert!(Instant::now() < end, "no two warned attempts\n{log}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (code, out, _) = tern(&["members"], &s1.http_addr());
    assert_eq!(code, 0);
    assert_eq!(status_of(&out, "s1").as_deref(), Some("alive"), "{out}");
    let status = wait_exit(s3.child.as_mut().unwrap(), Duration::from_secs(60))
        .unwrap_or_else(|| panic!("s3 still runs after its retries\n{}", s3.log_text()));
    assert_eq!(status.code(), Some(1), "{}", s3.log_text());
    let log = s3.log_text();
    assert!(log.contains("max join LAN retry exhausted"), "{log}");
    assert_eq!(
        log.matches("Join cluster failed, will retry").count(),
        1,
        "{log}"
    );
    let status = wait_exit(s4.child.as_mut().unwrap(), Duration::from_secs(60))
        .unwrap_or_else(|| panic!("s4 started without joining\n{}", s4.log_text()));
    assert_eq!(status.code(), Some(1), "{}", s4.log_text());
    assert!(
        s4.log_text().contains(&format!("Failed to join {dead}")),
        "{}",
        s4.log_text()
    );

    // A bad port is refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["agent", "-dev", "-serf-lan-port=lan"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("-serf-lan-port: must be a port number"),
        "{err}"
    );

    // A gossip port another agent holds: the agent does not start, and says
    // which key to change.
    let mut s2 = Server::new("unreachable", "s2");
    s2.serf_lan = s1.serf_lan;
    s2.start(&["-bootstrap-expect=1".to_string()]);
    let status = wait_exit(s2.child.as_mut().unwrap(), Duration::from_secs(15))
        .unwrap_or_else(|| panic!("started on a taken port\n{}", s2.log_text()));
    assert_eq!(status.code(), Some(1));
    assert!(
        s2.log_text()
            .contains("ports.serf_lan: cannot start the LAN gossip pool on 127.0.0.1:"),
        "{}",
        s2.log_text()
    );
}

/// Consul's `maybeBootstrap` (agent/consul/leader.go): a fresh server with
/// `-bootstrap-expect` that finds a server already in a cluster does not
/// bootstrap a configuration of its own ("Existing Raft peers reported by
/// server, disabling bootstrap mode"); the leader adds it. Servers that
/// disagree on `expect` do not bootstrap at all ("has a conflicting expect
/// value").
#[test]
fn bootstrap_expect_never_bootstraps_next_to_a_cluster_or_a_conflicting_expect() {
    // s1 bootstraps alone; s2 expects 2 and finds s1, already a cluster.
    let mut s1 = Server::new("expect", "s1");
    s1.start(&["-bootstrap-expect=1".to_string()]);
    leader(&[&s1], Duration::from_secs(20)).unwrap_or_else(|| panic!("{}", s1.log_text()));
    let mut s2 = Server::new("expect", "s2");
    s2.start(&[
        "-bootstrap-expect=2".to_string(),
        format!("-retry-join={}", s1.gossip()),
    ]);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = tern(&["operator", "raft", "list-peers"], &s1.http_addr());
        if code == 0 && row(&out, "s2").is_some() {
            break;
        }
        assert!(
            Instant::now() < end,
            "s2 never added\n{out}\n{}{}",
            s1.log_text(),
            s2.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // s1 may list s2 before s2 has written its line: wait for it.
    let wanted = "Existing Raft peers reported by server s1, disabling bootstrap mode";
    let end = Instant::now() + Duration::from_secs(15);
    let log = loop {
        let log = s2.log_text();
        if log.contains(wanted) || Instant::now() >= end {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains(wanted), "{log}");
    assert!(!log.contains("bootstrapping"), "{log}");

    // s3 expects 2, s4 expects 3: they find each other and disagree.
    let mut s3 = Server::new("expect", "s3");
    let mut s4 = Server::new("expect", "s4");
    s3.start(&["-bootstrap-expect=2".to_string()]);
    s4.start(&[
        "-bootstrap-expect=3".to_string(),
        format!("-retry-join={}", s3.gossip()),
    ]);
    let end = Instant::now() + Duration::from_secs(30);
    while !s3.log_text().contains(
        "Member s4 has a conflicting expect value. All nodes should expect the same number.",
    ) {
        assert!(Instant::now() < end, "{}", s3.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !s3.log_text().contains("bootstrapping"),
        "{}",
        s3.log_text()
    );
    assert_eq!(
        http("GET", &format!("{}/v1/status/leader", s3.base())),
        Some((200, "\"\"".into()))
    );
}
