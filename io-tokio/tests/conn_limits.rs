//! Connection limits before trust, on a real `tern agent`: Consul's
//! `limits { rpc_max_conns_per_client http_max_conns_per_client }`
//! (agent/consul/rpc.go `handleConn` closes a connection over the limit;
//! the HTTP server answers it with go-connlimit's 429 and closes it). From
//! one address: up to the limit are served, the rest are closed at once,
//! with one log line per second; a connection that closes frees its slot.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_gossip_port, free_port, temp_dir};

struct Agent {
    child: Child,
    log: std::path::PathBuf,
    http: u16,
    server: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start(name: &str, limits: &str) -> Agent {
    let dir = temp_dir(name);
    let (http, server) = (free_port(), free_port());
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=1".into(),
            format!("-hcl=performance {{ raft_multiplier = 1 }}\n{limits}"),
            format!("-node={name}"),
            format!("-data-dir={}", dir.display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={http}"),
            format!("-server-port={server}"),
            format!("-serf-lan-port={}", free_gossip_port()),
            format!("-serf-wan-port={}", free_gossip_port()),
        ])
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        log,
        http,
        server,
    };
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", http)) {
            if get(&mut s, "/v1/status/leader")
                .is_some_and(|r| r.contains(&format!("127.0.0.1:{server}")))
            {
                return agent;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the agent did not start\n{}", agent.log_text());
}

/// One HTTP/1.1 request on a kept-alive connection; the response head and
/// body as text, `None` if the connection was closed.
fn get(s: &mut TcpStream, path: &str) -> Option<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return (!got.is_empty()).then(|| String::from_utf8_lossy(&got).into_owned());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= head_end + 4 + len {
                return Some(text);
            }
        }
    }
}

/// Whether the server closed `s` (EOF or reset) within `within`; false if
/// it is still open, waiting for us.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // a 429 before the close
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A connection to the server port that says it carries Raft traffic (its
/// first byte) and then idles, as an attacker's or a stuck peer's would.
fn raft_conn(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&[tern_core::wire::conn::RPC_RAFT]).unwrap();
    s
}

fn lines_with(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

/// `rpc_max_conns_per_client = 5`: five idle connections from 127.0.0.1 are
/// held; the sixth to ninth are closed at once, with one log line; closing
/// one of the five lets the next one in; and the agent still serves.
#[test]
fn the_server_port_closes_connections_over_the_per_client_limit() {
    let agent = start(
        "connlimit-rpc",
        "limits {\n  rpc_max_conns_per_client = 5\n  http_max_conns_per_client = 0\n}",
    );
    let mut held: Vec<TcpStream> = (0..5).map(|_| raft_conn(agent.server)).collect();
    let mut extra: Vec<TcpStream> = (0..4).map(|_| raft_conn(agent.server)).collect();
    for (i, s) in extra.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, Duration::from_secs(2)),
            "connection {} over the limit was not closed",
            i + 6
        );
    }
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            !closed_by_server(s, Duration::from_millis(200)),
            "connection {} within the limit was closed",
            i + 1
        );
    }
    let log = agent.log_text();
    assert_eq!(
        lines_with(&log, "server port: rejecting a connection from 127.0.0.1: rpc_max_conns_per_client (5) exceeded"),
        1,
        "one line for the burst\n{log}"
    );
    // A connection that closes frees its slot.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut next = raft_conn(agent.server);
    assert!(!closed_by_server(&mut next, Duration::from_millis(500)));
    let mut over = raft_conn(agent.server);
    assert!(closed_by_server(&mut over, Duration::from_secs(2)));
    // The HTTP API (no limit here) and the agent are unaffected.
    let mut h = TcpStream::connect(("127.0.0.1", agent.http)).unwrap();
    assert!(get(&mut h, "/v1/status/leader")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
}

/// `http_max_conns_per_client = 4`: four kept-alive connections are served
/// again and again; a fifth gets Consul's 429 text and is closed; closing
/// one lets a new one be served.
#[test]
fn the_http_api_answers_429_over_the_per_client_limit() {
    let agent = start(
        "connlimit-http",
        "limits {\n  http_max_conns_per_client = 4\n}",
    );
    // The start-up probe's connection is closed by now; wait for its slot.
    std::thread::sleep(Duration::from_millis(300));
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", agent.http)).unwrap())
        .collect();
    for s in &mut held {
        let r = get(s, "/v1/status/leader").expect("served");
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let mut fifth = TcpStream::connect(("127.0.0.1", agent.http)).unwrap();
    let mut text = String::new();
    fifth
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = fifth.read_to_string(&mut text);
    assert!(
        text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\nYour IP is issuing too many concurrent connections, please rate limit your calls\n"),
        "{text:?}"
    );
    // The four still work.
    for s in &mut held {
        assert!(get(s, "/v1/agent/self")
            .unwrap()
            .starts_with("HTTP/1.1 200"));
    }
    let log = agent.log_text();
    assert_eq!(
        lines_with(&log, "HTTP API: rejecting a connection from 127.0.0.1: http_max_conns_per_client (4) exceeded"),
        1,
        "{log}"
    );
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = TcpStream::connect(("127.0.0.1", agent.http)).unwrap();
    assert!(get(&mut again, "/v1/status/leader")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
}

/// The defaults are Consul's, 100 and 200 (agent/config/default.go), and
/// at the edge: the 100th server-port connection is held, the 101st closed.
#[test]
fn the_defaults_are_consuls_100_and_200() {
    let agent = start("connlimit-default", "");
    let mut held: Vec<TcpStream> = (0..100).map(|_| raft_conn(agent.server)).collect();
    let mut over = raft_conn(agent.server);
    assert!(
        closed_by_server(&mut over, Duration::from_secs(2)),
        "the 101st"
    );
    assert!(
        !closed_by_server(held.last_mut().unwrap(), Duration::from_millis(200)),
        "the 100th"
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut http: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", agent.http)).unwrap())
        .collect();
    assert!(
        get(http.last_mut().unwrap(), "/v1/status/leader")
            .unwrap()
            .starts_with("HTTP/1.1 200"),
        "the 200th"
    );
    let mut over = TcpStream::connect(("127.0.0.1", agent.http)).unwrap();
    let mut text = String::new();
    over.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = over.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 429"), "the 201st: {text:?}");
}
