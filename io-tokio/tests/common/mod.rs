//! What the real-process tests share: free ports, temp dirs, and a
//! one-server agent started on them.

#![allow(dead_code)] // each test crate uses its own part of this

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A port nobody listens on right now, taken (like [`free_gossip_port`])
/// from below the OS's ephemeral range: an agent killed and started again
/// binds the same port, and a port from inside the range can meanwhile be
/// handed to some outbound connection (a flake seen in CI: "Address already
/// in use" on a restarted server's HTTP port).
pub fn free_port() -> u16 {
    free_gossip_port()
}

/// A port free for both TCP and UDP on 127.0.0.1, for a gossip pool (which
/// binds both). It is taken from below the OS's ephemeral range, so no
/// outbound connection can be handed the same number while the agent is
/// starting; the walk through the range is spread by the process id and the
/// clock so parallel test processes pick different ports, and one process
/// never picks the same port twice in a row.
pub fn free_gossip_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(10_001));
    let span = high - low;
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + seed.wrapping_add(n.wrapping_mul(104_729)) % span) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no port free for TCP and UDP below {high}");
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tern-test-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Start `tern agent` as the only server of its cluster (bootstrap-expect
/// 1, raft_multiplier 1) on loopback, with its output discarded.
pub fn spawn_single_server(node: &str, data_dir: &Path, http: u16, server: u16) -> Child {
    spawn_single_server_gossiping(node, data_dir, http, server, free_gossip_port())
}

/// [`spawn_single_server`] with its LAN gossip port given (others join it
/// there).
pub fn spawn_single_server_gossiping(
    node: &str,
    data_dir: &Path,
    http: u16,
    server: u16,
    serf_lan: u16,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=1".into(),
            "-hcl=performance { raft_multiplier = 1 }".into(),
            format!("-node={node}"),
            format!("-data-dir={}", data_dir.display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={http}"),
            format!("-server-port={server}"),
            format!("-serf-lan-port={serf_lan}"),
            format!("-serf-wan-port={}", free_gossip_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tern agent")
}
