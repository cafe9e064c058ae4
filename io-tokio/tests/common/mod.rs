//! What the real-process tests share: free ports, temp dirs, and a
//! one-server agent started on them.

#![allow(dead_code)] // each test crate uses its own part of this

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
            format!("-serf-lan-port={}", free_port()),
            format!("-serf-wan-port={}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tern agent")
}
