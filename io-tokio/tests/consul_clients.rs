//! An existing Consul client, unchanged, against a real `tern agent`:
//! py-consul (installed with pip by this test if missing) runs
//! `tests/py_consul.py`, which asserts what it gets back.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have_py_consul() -> bool {
    Command::new("python3")
        .args(["-c", "import consul"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn py_consul_works_unchanged() {
    if !have_py_consul() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "py-consul",
            ])
            .status()
            .expect("python3 is needed for this test");
        assert!(status.success(), "pip install py-consul failed");
    }
    let dir = std::env::temp_dir().join(format!("tern-pyconsul-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let http = free_port();
    let server = free_port();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=1".into(),
            "-hcl=performance { raft_multiplier = 1 }".into(),
            "-node=py".into(),
            format!("-data-dir={}", dir.display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={http}"),
            format!("-server-port={server}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a leader.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("python3")
            .args(["-c", &format!(
                "import consul,sys; sys.exit(0 if consul.Consul(port={http}).status.leader() else 1)"
            )])
            .stderr(Stdio::null())
            .status();
        if out.is_ok_and(|s| s.success()) {
            break;
        }
        assert!(Instant::now() < end, "no leader");
        std::thread::sleep(Duration::from_millis(200));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py_consul.py");
    let out = Command::new("python3")
        .arg(script)
        .env("TERN_HTTP_PORT", http.to_string())
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "py-consul checks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
