//! TLS with real processes: `tern tls ca create` / `tls cert create` (the
//! files Consul's commands write, read back and checked), and the server
//! port under TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::*;

mod common;
use common::{free_gossip_port, free_port, temp_dir};

/// Run `tern ARGS` in `dir`: (exit code, stdout, stderr).
fn tern_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tern");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).expect("a PEM block");
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

/// What a test checks of a certificate.
#[derive(Debug)]
struct Seen {
    common_name: String,
    dns: Vec<String>,
    ips: Vec<String>,
    server_auth: bool,
    client_auth: bool,
    is_ca: bool,
    days: i64,
    serial_bits: u64,
}

fn inspect(der: &[u8]) -> Seen {
    let (rest, cert) = parse_x509_certificate(der).expect("a certificate");
    assert!(rest.is_empty(), "trailing bytes after the certificate");
    let mut seen = Seen {
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        dns: Vec::new(),
        ips: Vec::new(),
        server_auth: false,
        client_auth: false,
        is_ca: cert.is_ca(),
        days: (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400,
        serial_bits: cert.serial.bits(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => seen.dns.push(d.to_string()),
                        GeneralName::IPAddress(b) if b.len() == 4 => seen
                            .ips
                            .push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                        other => panic!("unexpected SAN {other:?}"),
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                seen.server_auth = eku.server_auth;
                seen.client_auth = eku.client_auth;
            }
            _ => {}
        }
    }
    seen
}

/// Whether `cert` carries a signature by `ca`'s key.
fn signed_by(cert: &[u8], ca: &[u8]) -> bool {
    let (_, cert) = parse_x509_certificate(cert).unwrap();
    let (_, ca) = parse_x509_certificate(ca).unwrap();
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// Consul's command/tls: the CA and server, client and cli certificates in
/// Consul's file names, numbered without overwriting, with the names and
/// key usages Consul's carry (tls_cert_create_test.go), and every refusal.
#[test]
fn tls_ca_and_cert_create_write_consuls_files_and_never_overwrite() {
    let dir = temp_dir("tls-create");

    // The CA: Consul's names, 5 years, a CA, a 128-bit random serial.
    let (code, out, err) = tern_in(&dir, &["tls", "ca", "create"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "==> Saved consul-agent-ca.pem\n==> Saved consul-agent-ca-key.pem\n"
    );
    let ca = pem_der(&dir.join("consul-agent-ca.pem"));
    let seen = inspect(&ca);
    assert!(seen.is_ca, "{seen:?}");
    assert_eq!(seen.days, 1825, "{seen:?}");
    assert!(seen.serial_bits > 64, "{seen:?}");
    let key = std::fs::read_to_string(dir.join("consul-agent-ca-key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("consul-agent-ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is its owner's only");

    // A second CA would overwrite: refused, the files untouched.
    let (code, _, err) = tern_in(&dir, &["tls", "ca", "create"]);
    assert_eq!(code, 1);
    assert_eq!(err, "consul-agent-ca.pem already exists.\n");
    assert_eq!(pem_der(&dir.join("consul-agent-ca.pem")), ca);
    // Another domain is another pair of files.
    let (code, out, _) = tern_in(&dir, &["tls", "ca", "create", "-domain=tern", "-days=30"]);
    assert_eq!(code, 0);
    assert!(out.contains("==> Saved tern-agent-ca.pem"), "{out}");
    assert_eq!(inspect(&pem_der(&dir.join("tern-agent-ca.pem"))).days, 30);

    // A server certificate with -node: the names a gateway routes on.
    let (code, out, err) = tern_in(
        &dir,
        &[
            "tls",
            "cert",
            "create",
            "-server",
            "-dc=dc2",
            "-node=s1",
            "-additional-dnsname=tern.example.com",
            "-additional-ipaddress=10.1.2.3",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("==> WARNING: a server certificate"),
        "{out}"
    );
    assert!(out.contains(
        "==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n\
         ==> Saved dc2-server-consul-0.pem\n==> Saved dc2-server-consul-0-key.pem\n"
    ));
    let server = pem_der(&dir.join("dc2-server-consul-0.pem"));
    let seen = inspect(&server);
    assert_eq!(seen.common_name, "server.dc2.consul");
    assert_eq!(
        seen.dns,
        [
            "tern.example.com",
            "s1.server.dc2.consul",
            "server.dc2.consul",
            "localhost"
        ]
    );
    assert_eq!(seen.ips, ["10.1.2.3", "127.0.0.1"]);
    assert!(seen.server_auth && seen.client_auth, "{seen:?}");
    assert!(!seen.is_ca);
    assert_eq!(seen.days, 365);
    assert!(signed_by(&server, &ca));
    assert!(!signed_by(
        &server,
        &pem_der(&dir.join("tern-agent-ca.pem"))
    ));

    // The next server certificate takes the next number; none is replaced.
    let (code, out, _) = tern_in(&dir, &["tls", "cert", "create", "-server", "-dc=dc2"]);
    assert_eq!(code, 0);
    assert!(out.contains("==> Saved dc2-server-consul-1.pem"), "{out}");
    assert_eq!(pem_der(&dir.join("dc2-server-consul-0.pem")), server);
    let seen = inspect(&pem_der(&dir.join("dc2-server-consul-1.pem")));
    assert_eq!(seen.dns, ["server.dc2.consul", "localhost"]);
    // A lone key file also holds its number.
    std::fs::write(dir.join("dc1-client-consul-0-key.pem"), "mine").unwrap();

    // Client: client.<dc>.<domain>, client auth (and server auth, as
    // Consul's: client agents serve HTTPS with it).
    let (code, out, _) = tern_in(&dir, &["tls", "cert", "create", "-client", "-days=7"]);
    assert_eq!(code, 0);
    assert!(out.contains("==> Saved dc1-client-consul-1.pem"), "{out}");
    assert!(!out.contains("WARNING"));
    assert_eq!(
        std::fs::read_to_string(dir.join("dc1-client-consul-0-key.pem")).unwrap(),
        "mine"
    );
    let seen = inspect(&pem_der(&dir.join("dc1-client-consul-1.pem")));
    assert_eq!(seen.common_name, "client.dc1.consul");
    assert_eq!(seen.dns, ["client.dc1.consul", "localhost"]);
    assert_eq!(seen.ips, ["127.0.0.1"]);
    assert!(seen.client_auth, "{seen:?}");
    assert!(!seen.dns.iter().any(|d| d.starts_with("server.")));
    assert_eq!(seen.days, 7);

    // Cli: client auth only.
    let (code, _, _) = tern_in(&dir, &["tls", "cert", "create", "-cli"]);
    assert_eq!(code, 0);
    let seen = inspect(&pem_der(&dir.join("dc1-cli-consul-0.pem")));
    assert_eq!(seen.dns, ["cli.dc1.consul", "localhost"]);
    assert!(seen.client_auth && !seen.server_auth, "{seen:?}");

    // A certificate from the other CA, with -ca and -key.
    let (code, out, err) = tern_in(
        &dir,
        &[
            "tls",
            "cert",
            "create",
            "-server",
            "-domain=tern",
            "-ca=tern-agent-ca.pem",
            "-key=tern-agent-ca-key.pem",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let other = pem_der(&dir.join("dc1-server-tern-0.pem"));
    assert!(signed_by(&other, &pem_der(&dir.join("tern-agent-ca.pem"))));
    assert_eq!(inspect(&other).dns, ["server.dc1.tern", "localhost"]);

    // Refusals, one line each, nothing written.
    let before = files(&dir);
    for (args, expect) in [
        (
            &["tls", "cert", "create"][..],
            "Please provide either -server, -client, or -cli",
        ),
        (
            &["tls", "cert", "create", "-server", "-client"][..],
            "Please provide either -server, -client, or -cli",
        ),
        (
            &["tls", "cert", "create", "-client", "-node=s1"][..],
            "-node requires -server",
        ),
        (
            &["tls", "cert", "create", "-server", "-ca=nope.pem"][..],
            "Error reading CA: No such file or directory (os error 2)",
        ),
        (
            &[
                "tls",
                "cert",
                "create",
                "-server",
                "-key=tern-agent-ca-key.pem",
            ][..],
            "the CA key does not belong to the CA certificate",
        ),
        (
            &["tls", "cert", "create", "-server", "-days=0"][..],
            "-days: must be between 1 and 36500, got 0",
        ),
        (
            &[
                "tls",
                "cert",
                "create",
                "-server",
                "-additional-ipaddress=nope",
            ][..],
            "-additional-ipaddress: \"nope\" is not an IP address",
        ),
    ] {
        let (code, out, err) = tern_in(&dir, args);
        assert_eq!((code, err.trim()), (1, expect), "{args:?}: {out}");
    }
    assert_eq!(files(&dir), before, "a refusal wrote nothing");

    // Help in the CLI's style.
    let (code, out, _) = tern_in(&dir, &["tls", "cert", "create", "-h"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Usage: tern tls cert create [options]"),
        "{out}"
    );
    let (code, _, err) = tern_in(&dir, &["tls"]);
    assert_eq!(code, 1);
    assert!(err.contains("Subcommands:\n    ca      "), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

// ----- PKI made with the real binary -----

/// A CA and the certificates made from it, in one directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = temp_dir(name);
        let (code, out, err) = tern_in(&dir, &["tls", "ca", "create"]);
        assert_eq!(code, 0, "{out}{err}");
        Pki { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("consul-agent-ca.pem")
    }

    /// `tern tls cert create ARGS`: the certificate and key files.
    fn cert(&self, args: &[&str]) -> (PathBuf, PathBuf) {
        let mut all = vec!["tls", "cert", "create"];
        all.extend_from_slice(args);
        let (code, out, err) = tern_in(&self.dir, &all);
        assert_eq!(code, 0, "{out}{err}");
        let saved: Vec<PathBuf> = out
            .lines()
            .filter_map(|l| l.strip_prefix("==> Saved "))
            .map(|f| self.dir.join(f))
            .collect();
        assert_eq!(saved.len(), 2, "{out}");
        (saved[0].clone(), saved[1].clone())
    }
}

/// The agent's `tls` block: everything verified.
fn tls_hcl(ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "tls {{\n  defaults {{\n    ca_file = \"{}\"\n    cert_file = \"{}\"\n    key_file = \"{}\"\n    \
         verify_incoming = true\n    verify_outgoing = true\n  }}\n  \
         internal_rpc {{\n    verify_server_hostname = true\n  }}\n}}\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

// ----- agents -----

struct Agent {
    name: String,
    http: u16,
    server: u16,
    serf_lan: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Start `tern agent` (a server unless `client`), joining `join` (LAN
    /// gossip ports), with `hcl`.
    fn start(
        name: &str,
        dir: &Path,
        client: bool,
        expect: usize,
        join: &[u16],
        hcl: &str,
    ) -> Agent {
        let (http, server, serf_lan) = (free_port(), free_port(), free_gossip_port());
        let data = dir.join(format!("data-{name}"));
        let log = dir.join(format!("{name}.log"));
        let mut args = vec![
            "agent".to_string(),
            format!("-hcl={hcl}"),
            "-hcl=performance { raft_multiplier = 1 }".into(),
            format!("-node={name}"),
            format!("-data-dir={}", data.display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={http}"),
            format!("-server-port={server}"),
            format!("-serf-lan-port={serf_lan}"),
            "-retry-interval=1s".into(),
        ];
        if !client {
            args.push("-server".into());
            args.push(format!("-bootstrap-expect={expect}"));
            args.push(format!("-serf-wan-port={}", free_gossip_port()));
        }
        for p in join {
            args.push(format!("-retry-join=127.0.0.1:{p}"));
        }
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(&args)
            .env("TERN_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start tern agent");
        Agent {
            name: name.into(),
            http,
            server,
            serf_lan,
            log,
            child: Some(child),
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn logs(agents: &[&Agent]) -> String {
    agents
        .iter()
        .map(|a| format!("---- {} ----\n{}", a.name, a.log()))
        .collect()
}

fn http(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = match method {
        "GET" => agent.get(url).call().ok()?,
        _ => agent.put(url).send(body.as_bytes()).ok()?,
    };
    let status = r.status().as_u16();
    Some((status, r.body_mut().read_to_string().ok()?))
}

/// Poll `f` every 100 ms until it gives `Some`, for at most `within`.
fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn leader(agents: &[&Agent]) -> Option<usize> {
    wait_for(Duration::from_secs(30), || {
        agents.iter().find_map(|a| {
            let (_, body) = http("GET", &format!("{}/v1/status/leader", a.base()), "")?;
            let addr = body.trim().trim_matches('"').to_string();
            agents
                .iter()
                .position(|b| addr == format!("127.0.0.1:{}", b.server))
        })
    })
}

/// The node id `/v1/agent/self` reports.
fn node_id(a: &Agent) -> tern_core::NodeId {
    let (_, body) = http("GET", &format!("{}/v1/agent/self", a.base()), "").unwrap();
    body.split("\"NodeID\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(tern_core::NodeId::parse)
        .expect("agent self names the node id")
}

// ----- a TLS client of the server port -----

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client_config(
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut c = match cert {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// Open a TLS connection to the server port: RPC-TLS (`prefix` = [3]) or
/// native (`prefix` empty), SNI `sni`. The handshake's outcome.
fn tls_connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    prefix: &[u8],
    sni: &str,
) -> Result<TlsStream, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(prefix).unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// Whether the server ended the connection (EOF, a TLS alert, a reset)
/// rather than leaving it open for 5 s.
fn ends<S: Read>(s: &mut S) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// A KV write as a server forwards one to its leader (`MessageBody::Forward`).
fn forwarded_put(from: u128, to: tern_core::NodeId, key: &str) -> Vec<u8> {
    use tern_core::fsm::{KvCommand, KvWrite};
    use tern_core::rpc::{Op, ReadMode, Request};
    use tern_core::{Datacenter, Message, MessageBody, NodeId};
    let m = Message {
        from: NodeId(from),
        from_address: "127.0.0.1:1".into(),
        to,
        body: MessageBody::Forward {
            id: 1,
            request: Request {
                datacenter: Datacenter("dc1".into()),
                read_mode: ReadMode::Default,
                blocking: None,
                op: Op::KvApply(KvCommand::Set(KvWrite {
                    key: key.into(),
                    flags: 0,
                    value: b"forged".to_vec().into(),
                })),
            },
        },
    };
    let mut frame = Vec::new();
    tern_core::wire::encode_frame(&tern_core::wire::encode_message(&m), &mut frame);
    frame
}

/// A client's call (`RPC_MULTIPLEX_V2` or ALPN `tern/rpc`): a KV put.
fn call_put(s: &mut TlsStream, key: &str) -> Result<(), String> {
    use tern_core::fsm::{KvCommand, KvWrite};
    use tern_core::rpc::{Op, ReadMode, Request};
    let call = tern_core::wire::Call {
        id: 7,
        request: Request {
            datacenter: tern_core::Datacenter("dc1".into()),
            read_mode: ReadMode::Default,
            blocking: None,
            op: Op::KvApply(KvCommand::Set(KvWrite {
                key: key.into(),
                flags: 0,
                value: b"v".to_vec().into(),
            })),
        },
    };
    let mut frame = Vec::new();
    tern_core::wire::encode_frame(&tern_core::wire::encode_call(&call), &mut frame);
    s.write_all(&frame).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let mut header = [0u8; 4];
    s.read_exact(&mut header).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut payload).map_err(|e| e.to_string())?;
    let reply = tern_core::wire::decode_call_reply(&payload).map_err(|e| e.to_string())?;
    assert_eq!(reply.id, 7);
    reply.response.map(|_| ()).map_err(|e| e.to_string())
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Issue 11, deliverables 2 and 8: three servers with TLS everywhere
/// (verify_incoming, verify_outgoing, verify_server_hostname) elect a leader
/// and serve KV, also through a client agent that dials them with its
/// client certificate; plaintext is refused with one rate-limited line; a
/// client certificate cannot act as a server (a write it forwards as a
/// server would is not applied), while the same bytes under a server
/// certificate are (so the check is what stops them).
#[test]
fn a_tls_cluster_elects_serves_kv_and_refuses_plaintext_and_client_certificates_as_servers() {
    let pki = Pki::new("tls-cluster");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let mut agents: Vec<Agent> = Vec::new();
    let mut joins = Vec::new();
    for i in 1..=3 {
        let name = format!("s{i}");
        let (cert, key) = pki.cert(&["-server", &format!("-node={name}")]);
        let a = Agent::start(&name, &dir, false, 3, &joins, &tls_hcl(&ca, &cert, &key));
        joins.push(a.serf_lan);
        agents.push(a);
    }
    // Phase 1: the cluster forms over TLS.
    let servers: Vec<&Agent> = agents.iter().collect();
    let l = leader(&servers).unwrap_or_else(|| panic!("no leader\n{}", logs(&servers)));
    let follower = (l + 1) % 3;
    let put = http(
        "PUT",
        &format!("{}/v1/kv/over-tls", servers[follower].base()),
        "yes",
    );
    assert_eq!(put.map(|r| r.1), Some("true".into()), "{}", logs(&servers));
    for a in &servers {
        let read = wait_for(Duration::from_secs(10), || {
            http("GET", &format!("{}/v1/kv/over-tls?raw&stale", a.base()), "")
                .filter(|r| r.0 == 200)
        });
        assert_eq!(read.map(|r| r.1), Some("yes".into()), "{}", a.name);
    }

    // Phase 2: a client agent with a client certificate works through them.
    let (ccert, ckey) = pki.cert(&["-client"]);
    let client = Agent::start(
        "c1",
        &dir,
        true,
        0,
        &joins,
        &tls_hcl(&ca, &ccert, &ckey).replace("verify_server_hostname = true", ""),
    );
    let put = wait_for(Duration::from_secs(20), || {
        http("PUT", &format!("{}/v1/kv/via-client", client.base()), "c").filter(|r| r.0 == 200)
    });
    assert_eq!(put.map(|r| r.1), Some("true".into()), "{}", client.log());

    // Phase 3: plaintext is refused, one line for a burst of five.
    let port = servers[l].server;
    for _ in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&forwarded_put(0xBAD, node_id(servers[l]), "plain"));
        assert!(ends(&mut s), "a plaintext connection is closed");
    }
    let line = "refused a non-TLS connection from 127.0.0.1";
    let seen = wait_for(Duration::from_secs(5), || {
        Some(servers[l].log()).filter(|log| log.contains(line))
    })
    .expect("the refusal is logged");
    assert_eq!(count(&seen, line), 1, "rate-limited to one line:\n{seen}");
    assert!(seen.contains("verify_incoming is set"), "{seen}");

    // Phase 4: a client certificate cannot act as a server: RPC-TLS with
    // the inner Raft byte, and ALPN tern/raft. Its forwarded write is not
    // applied; the connection is closed with one line.
    let leader_id = node_id(servers[l]);
    let client_cert = (ccert.clone(), ckey.clone());
    let mut s = tls_connect(
        port,
        client_config(&ca, Some(&client_cert), &[]),
        &[3],
        "server.dc1.consul",
    )
    .expect("the handshake itself succeeds: the CA is right");
    s.write_all(&[1]).unwrap();
    let _ = s.write_all(&forwarded_put(0xC1, leader_id, "forged-rpc-tls"));
    let _ = s.flush();
    assert!(ends(&mut s));
    let mut s = tls_connect(
        port,
        client_config(&ca, Some(&client_cert), &[b"tern/raft"]),
        &[],
        &format!("{}.server.dc1.consul", servers[l].name),
    )
    .expect("handshake");
    let _ = s.write_all(&forwarded_put(0xC2, leader_id, "forged-alpn"));
    let _ = s.flush();
    assert!(ends(&mut s));
    // But its calls as a client are served, on both paths.
    let mut s = tls_connect(
        port,
        client_config(&ca, Some(&client_cert), &[]),
        &[3],
        "server.dc1.consul",
    )
    .unwrap();
    s.write_all(&[4]).unwrap();
    assert_eq!(call_put(&mut s, "client-call-rpc-tls"), Ok(()));
    let mut s = tls_connect(
        port,
        client_config(&ca, Some(&client_cert), &[b"tern/rpc"]),
        &[],
        &format!("{}.server.dc1.consul", servers[l].name),
    )
    .unwrap();
    assert_eq!(call_put(&mut s, "client-call-alpn"), Ok(()));

    // The control: the same forwarded write under a server certificate is
    // applied, so it is the certificate check that stopped the others.
    let server_cert = pki.cert(&["-server"]);
    let mut s = tls_connect(
        port,
        client_config(&ca, Some(&server_cert), &[]),
        &[3],
        "server.dc1.consul",
    )
    .unwrap();
    s.write_all(&[1]).unwrap();
    s.write_all(&forwarded_put(0x5E, leader_id, "forwarded-by-a-server"))
        .unwrap();
    s.flush().unwrap();
    let base = servers[l].base();
    let applied = wait_for(Duration::from_secs(10), || {
        http(
            "GET",
            &format!("{base}/v1/kv/forwarded-by-a-server?raw"),
            "",
        )
        .filter(|r| r.0 == 200)
    });
    assert_eq!(
        applied.map(|r| r.1),
        Some("forged".into()),
        "{}",
        servers[l].log()
    );
    for key in ["forged-rpc-tls", "forged-alpn", "plain"] {
        assert_eq!(
            http("GET", &format!("{base}/v1/kv/{key}"), "").map(|r| r.0),
            Some(404),
            "{key} was not written"
        );
    }
    for key in ["client-call-rpc-tls", "client-call-alpn"] {
        assert_eq!(
            http("GET", &format!("{base}/v1/kv/{key}?raw"), "").map(|r| r.1),
            Some("v".into()),
        );
    }
    // No handshake between the agents themselves failed.
    for a in servers.iter().chain([&&client]) {
        assert_eq!(count(&a.log(), "TLS handshake with"), 0, "{}", a.log());
    }
    let log = servers[l].log();
    assert!(
        log.contains("refused Raft from 127.0.0.1")
            && log.contains("certificate for client.dc1.consul, localhost may not act as a server (needs server.dc1.consul)"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11, deliverables 2 and 8, on one server with everything verified:
/// a certificate from another CA is refused at the handshake; a dc2 server
/// certificate (right CA) may not send Raft to dc1; an unknown ALPN
/// protocol fails the handshake; the reserved WAN gossip protocols are
/// closed politely; TLS inside TLS is refused; a connection that never
/// finishes its handshake is closed at the deadline. Each refusal is one
/// line naming the peer and the reason. On a server without
/// verify_incoming, the ALPN path still demands a client certificate
/// (Consul's handleNativeTLS) while RPC-TLS does not.
#[test]
fn the_server_port_refuses_foreign_cas_other_datacenters_unknown_alpn_and_slow_handshakes() {
    let pki = Pki::new("tls-refusals");
    let other = Pki::new("tls-refusals-other-ca");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let (cert, key) = pki.cert(&["-server", "-node=solo"]);
    let solo = Agent::start("solo", &dir, false, 1, &[], &tls_hcl(&ca, &cert, &key));
    assert_eq!(leader(&[&solo]), Some(0), "{}", solo.log());
    let port = solo.server;
    let sni = "solo.server.dc1.consul";
    let logged = |needle: &str| {
        wait_for(Duration::from_secs(5), || {
            Some(solo.log()).filter(|l| l.contains(needle))
        })
        .unwrap_or_else(|| panic!("no line {needle:?} in\n{}", solo.log()))
    };

    // Another CA's certificate: the server refuses it (under TLS 1.3 the
    // client learns it from the alert after its last flight).
    let foreign = other.cert(&["-server"]);
    let attempt = tls_connect(port, client_config(&ca, Some(&foreign), &[]), &[3], sni);
    if let Ok(mut s) = attempt {
        let _ = s.write_all(&[4]);
        let _ = s.flush();
        assert!(ends(&mut s));
    }
    logged("TLS handshake with 127.0.0.1");
    logged("failed: certificate from an unknown CA");

    // A dc2 server certificate from the right CA: TLS works, Raft does not.
    let dc2 = pki.cert(&["-server", "-dc=dc2"]);
    let mut s =
        tls_connect(port, client_config(&ca, Some(&dc2), &[]), &[3], sni).expect("the CA is right");
    s.write_all(&[1]).unwrap();
    let _ = s.write_all(&forwarded_put(0xDC2, node_id(&solo), "from-dc2"));
    let _ = s.flush();
    assert!(ends(&mut s));
    logged("certificate for server.dc2.consul, localhost may not act as a server (needs server.dc1.consul)");

    // An ALPN protocol the server does not speak: no handshake.
    let server_cert = pki.cert(&["-server"]);
    let attempt = tls_connect(
        port,
        client_config(&ca, Some(&server_cert), &[b"h2"]),
        &[],
        sni,
    );
    assert!(attempt.is_err(), "an unknown ALPN fails the handshake");
    // The line names what the ClientHello asked for (read with
    // `tern_core::wire::client_hello`, as a mesh gateway will).
    logged("failed: no ALPN protocol in common (ClientHello: SNI \"solo.server.dc1.consul\", ALPN [\"h2\"])");

    // The reserved WAN gossip protocols: a handshake, then a polite close.
    for proto in [&b"tern/wan-gossip/packet"[..], b"tern/wan-gossip/stream"] {
        let mut s = tls_connect(
            port,
            client_config(&ca, Some(&server_cert), &[proto]),
            &[],
            sni,
        )
        .expect("reserved protocols are negotiated");
        assert_eq!(s.conn.alpn_protocol(), Some(proto));
        let mut buf = [0u8; 8];
        assert_eq!(
            s.read(&mut buf).ok(),
            Some(0),
            "a close_notify, not a reset"
        );
    }
    logged("ALPN protocol \"tern/wan-gossip/packet\" is reserved and not served yet");

    // No TLS inside TLS.
    let mut s = tls_connect(port, client_config(&ca, Some(&server_cert), &[]), &[3], sni).unwrap();
    s.write_all(&[3]).unwrap();
    s.flush().unwrap();
    assert!(ends(&mut s));
    logged("TLS connection attempting to establish inner TLS connection");

    // The handshake deadline (Consul's rpc_handshake_timeout, 5 s): RPC-TLS
    // asked for, then silence.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    tcp.write_all(&[3]).unwrap();
    assert!(ends(&mut tcp));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
    logged("failed: no handshake within the handshake timeout");

    // The node still serves, and nothing refused was written.
    let base = solo.base();
    assert_eq!(
        http("PUT", &format!("{base}/v1/kv/after"), "1").map(|r| r.1),
        Some("true".into())
    );
    assert_eq!(
        http("GET", &format!("{base}/v1/kv/from-dc2"), "").map(|r| r.0),
        Some(404)
    );
    drop(solo);

    // Without verify_incoming: RPC-TLS needs no client certificate, the
    // ALPN path still does.
    let hcl =
        tls_hcl(&ca, &cert, &key).replace("verify_incoming = true", "verify_incoming = false");
    let lax = Agent::start("lax", &dir, false, 1, &[], &hcl);
    assert_eq!(leader(&[&lax]), Some(0), "{}", lax.log());
    let mut s = tls_connect(
        lax.server,
        client_config(&ca, None, &[]),
        &[3],
        "server.dc1.consul",
    )
    .expect("RPC-TLS without a client certificate");
    s.write_all(&[4]).unwrap();
    assert_eq!(call_put(&mut s, "anonymous-call"), Ok(()));
    let attempt = tls_connect(
        lax.server,
        client_config(&ca, None, &[b"tern/rpc"]),
        &[],
        "server.dc1.consul",
    );
    if let Ok(mut s) = attempt {
        assert!(call_put(&mut s, "anonymous-alpn").is_err());
    }
    let line = wait_for(Duration::from_secs(5), || {
        Some(lax.log()).filter(|l| l.contains("failed: no client certificate"))
    });
    assert!(line.is_some(), "{}", lax.log());
    assert_eq!(
        http("GET", &format!("{}/v1/kv/anonymous-alpn", lax.base()), "").map(|r| r.0),
        Some(404)
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other.dir);
}

/// Issue 11, deliverable 8, with real processes: a server holding a dc2
/// server certificate, and one holding a client certificate, both
/// configured as dc1 servers and joined to dc1's gossip pool, never become
/// part of dc1's Raft: the leader's dial fails its name check
/// (verify_server_hostname) and their own Raft is refused; neither ever
/// holds dc1's data, and each failure is logged with its reason.
#[test]
fn a_dc2_server_certificate_and_a_client_certificate_cannot_join_dc1_as_servers() {
    let pki = Pki::new("tls-intruders");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let (cert, key) = pki.cert(&["-server", "-node=s1"]);
    let s1 = Agent::start("s1", &dir, false, 1, &[], &tls_hcl(&ca, &cert, &key));
    assert_eq!(leader(&[&s1]), Some(0), "{}", s1.log());
    let put = http("PUT", &format!("{}/v1/kv/dc1-data", s1.base()), "x");
    assert_eq!(put.map(|r| r.1), Some("true".into()));

    let (c2, k2) = pki.cert(&["-server", "-dc=dc2", "-node=intruder-dc2"]);
    let (cc, kc) = pki.cert(&["-client"]);
    let intruders = [
        Agent::start(
            "intruder-dc2",
            &dir,
            false,
            0,
            &[s1.serf_lan],
            &tls_hcl(&ca, &c2, &k2),
        ),
        Agent::start(
            "intruder-client",
            &dir,
            false,
            0,
            &[s1.serf_lan],
            &tls_hcl(&ca, &cc, &kc),
        ),
    ];
    // They join the gossip pool (gossip is not what this test is about)...
    for i in &intruders {
        let joined = wait_for(Duration::from_secs(20), || {
            let (_, body) = http("GET", &format!("{}/v1/agent/members", s1.base()), "")?;
            body.contains(&format!("\"Name\":\"{}\"", i.name))
                .then_some(())
        });
        assert!(joined.is_some(), "{} joined gossip\n{}", i.name, s1.log());
    }
    // ...and the leader's dials to them fail on the name.
    let dial_failed = wait_for(Duration::from_secs(20), || {
        let log = s1.log();
        (log.contains("TLS handshake with intruder-dc2 at")
            && log.contains("TLS handshake with intruder-client at")
            && log.contains("failed: certificate for the wrong name"))
        .then_some(())
    });
    assert!(dial_failed.is_some(), "{}", s1.log());
    // Neither ever holds dc1's data (a stale read is served from what a
    // server has applied).
    std::thread::sleep(Duration::from_secs(3));
    for i in &intruders {
        let r = http("GET", &format!("{}/v1/kv/dc1-data?stale", i.base()), "");
        assert_ne!(r.map(|r| r.0), Some(200), "{} has dc1's data", i.name);
    }
    // The leader is still alone in its Raft voters, and serves.
    let put = http("PUT", &format!("{}/v1/kv/still", s1.base()), "y");
    assert_eq!(put.map(|r| r.1), Some("true".into()), "{}", s1.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run `tern agent ARGS` expecting it to stop at start: its exit code and
/// output.
fn agent_refuses(dir: &Path, hcl: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "agent",
            "-server",
            "-bootstrap-expect=1",
            &format!("-data-dir={}", dir.join("refused-data").display()),
            "-bind=127.0.0.1",
            &format!("-http-port={}", free_port()),
            &format!("-server-port={}", free_port()),
            &format!("-serf-lan-port={}", free_gossip_port()),
            "-serf-wan-port=-1",
            &format!("-hcl={hcl}"),
        ])
        .output()
        .expect("run tern agent");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Issue 11, deliverable 1: a bad certificate, key or CA file, or a bad TLS
/// setting, stops the agent at start with one line naming the file or key
/// and the reason; SIGHUP reloads the certificates for new connections
/// while open ones carry on, and a reload that fails keeps the old ones.
#[test]
fn bad_tls_files_stop_the_agent_and_sighup_reloads_certificates_without_dropping_connections() {
    let pki = Pki::new("tls-files");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let (cert, key) = pki.cert(&["-server", "-node=solo"]);
    let (other_cert, other_key) = pki.cert(&["-server", "-additional-dnsname=reloaded.example"]);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let missing = dir.join("missing.pem");
    let q = |p: &Path| format!("{:?}", p.display().to_string());

    for (hcl, expect) in [
        (
            tls_hcl(&ca, &missing, &key),
            format!("cert_file: cannot read {}: No such file or directory", q(&missing)),
        ),
        (
            tls_hcl(&ca, &cert, &other_key),
            format!(
                "key_file: {} is not the key of the certificate in {}",
                q(&other_key),
                q(&cert)
            ),
        ),
        (
            tls_hcl(&garbage, &cert, &key),
            format!("ca_file: {} holds no PEM certificate", q(&garbage)),
        ),
        (
            tls_hcl(&ca, &cert, &garbage),
            format!("key_file: {} holds no PEM private key", q(&garbage)),
        ),
        (
            format!("verify_incoming = true\ncert_file = \"{}\"\nkey_file = \"{}\"", cert.display(), key.display()),
            "tls.defaults.verify_incoming: needs tls.defaults.ca_file or ca_path".to_string(),
        ),
        (
            "tls {\n  defaults {\n    tls_min_version = \"TLSv1_1\"\n  }\n}\n".to_string(),
            "tls.defaults.tls_min_version: \"TLSv1_1\" is not supported: Tern speaks TLS 1.2 and 1.3 only".to_string(),
        ),
        (
            "tls_cipher_suites = \"TLS_RSA_WITH_RC4_128_SHA\"".to_string(),
            "tls_cipher_suites: unsupported cipher suite \"TLS_RSA_WITH_RC4_128_SHA\"".to_string(),
        ),
    ] {
        let (code, out) = agent_refuses(&dir, &hcl);
        assert_ne!(code, 0, "{hcl}: {out}");
        assert!(out.contains(&expect), "{hcl}:\nwanted {expect}\ngot {out}");
        let lines = out.lines().filter(|l| l.contains(&expect)).count();
        assert_eq!(lines, 1, "{out}");
    }

    // A good configuration: TLS keys are read, not warned about; the grpc
    // section (not implemented) still is.
    let hcl = format!(
        "{}\ntls {{\n  grpc {{\n    verify_incoming = true\n  }}\n}}\n",
        tls_hcl(&ca, &cert, &key)
    );
    let solo = Agent::start("solo", &dir, false, 1, &[], &hcl);
    assert_eq!(leader(&[&solo]), Some(0), "{}", solo.log());
    let log = solo.log();
    assert!(!log.contains("key \"tls.defaults"), "{log}");
    assert!(
        log.contains("config: key \"tls.grpc.verify_incoming\" is not supported by Tern; ignored (NOT enforced"),
        "{log}"
    );

    // An open connection, made with the first certificate.
    let config = client_config(&ca, Some(&(cert.clone(), key.clone())), &[]);
    let sni = "server.dc1.consul";
    let mut open = tls_connect(solo.server, config.clone(), &[3], sni).unwrap();
    open.write_all(&[4]).unwrap();
    assert_eq!(call_put(&mut open, "before-reload"), Ok(()));
    let names = |s: &TlsStream| inspect(s.conn.peer_certificates().unwrap()[0].as_ref()).dns;
    assert!(!names(&open).contains(&"reloaded.example".to_string()));

    // New files in place, SIGHUP: new connections see the new certificate,
    // the open one carries on.
    std::fs::copy(&other_cert, &cert).unwrap();
    std::fs::copy(&other_key, &key).unwrap();
    let pid = solo.child.as_ref().unwrap().id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    hup();
    let reloaded = wait_for(Duration::from_secs(5), || {
        Some(solo.log()).filter(|l| l.contains("caught SIGHUP: reloaded the TLS certificates"))
    });
    assert!(reloaded.is_some(), "{}", solo.log());
    let fresh = tls_connect(solo.server, config.clone(), &[3], sni).unwrap();
    assert!(names(&fresh).contains(&"reloaded.example".to_string()));
    assert_eq!(call_put(&mut open, "after-reload"), Ok(()));

    // A reload that fails keeps what is in force, with one error line.
    std::fs::write(&cert, "broken\n").unwrap();
    hup();
    let failed = wait_for(Duration::from_secs(5), || {
        Some(solo.log())
            .filter(|l| l.contains("TLS certificates not reloaded, the old ones stay in force"))
    });
    assert!(failed.is_some(), "{}", solo.log());
    let again = tls_connect(solo.server, config, &[3], sni).unwrap();
    assert!(names(&again).contains(&"reloaded.example".to_string()));
    assert_eq!(call_put(&mut open, "after-failed-reload"), Ok(()));
    assert!(solo.child.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run `tern ARGS` with `env` set (and the TLS variables cleared first).
fn tern_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    c.args(args);
    for v in [
        "CONSUL_HTTP_ADDR",
        "TERN_HTTP_ADDR",
        "CONSUL_HTTP_SSL",
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
        "TERN_CACERT",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run tern");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 11, deliverable 5: the HTTPS API (`ports.https`) with client
/// certificates required (`tls.https.verify_incoming`), used by the CLI
/// through its flags (`-ca-file -client-cert -client-key -tls-server-name`),
/// through Consul's environment (`CONSUL_HTTP_SSL`, `CONSUL_CACERT`, ...)
/// and through `https://` in `CONSUL_HTTP_ADDR`; without a client
/// certificate, with the wrong server name or with another CA it fails.
/// The plain HTTP API stays on loopback.
#[test]
fn the_https_api_serves_the_cli_with_client_certificates_and_refuses_without() {
    let pki = Pki::new("tls-https");
    let other = Pki::new("tls-https-other");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let (cert, key) = pki.cert(&["-server", "-node=web"]);
    let (cli_cert, cli_key) = pki.cert(&["-cli"]);
    let https = free_port();
    let hcl = format!(
        "{}\nports {{\n  https = {https}\n}}\ntls {{\n  https {{\n    verify_incoming = true\n  }}\n}}\n",
        tls_hcl(&ca, &cert, &key)
    );
    let web = Agent::start("web", &dir, false, 1, &[], &hcl);
    assert_eq!(leader(&[&web]), Some(0), "{}", web.log());
    assert!(
        web.log()
            .contains(&format!("HTTPS API on 127.0.0.1:{https}")),
        "{}",
        web.log()
    );
    let (ca_s, cc, ck) = (
        ca.display().to_string(),
        cli_cert.display().to_string(),
        cli_key.display().to_string(),
    );
    let addr = format!("https://127.0.0.1:{https}");

    // Flags.
    let (code, out, err) = tern_env(
        &[
            "kv",
            "put",
            "-http-addr",
            &addr,
            "-ca-file",
            &ca_s,
            "-client-cert",
            &cc,
            "-client-key",
            &ck,
            "greeting",
            "hello",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}\n{}", web.log());
    assert_eq!(out.trim(), "Success! Data written to: greeting");
    // Consul's environment, with the address without a scheme.
    let env = [
        ("CONSUL_HTTP_ADDR", format!("127.0.0.1:{https}")),
        ("CONSUL_HTTP_SSL", "true".to_string()),
        ("CONSUL_CACERT", ca_s.clone()),
        ("CONSUL_CLIENT_CERT", cc.clone()),
        ("CONSUL_CLIENT_KEY", ck.clone()),
    ];
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = tern_env(&["kv", "get", "greeting"], &env_ref);
    assert_eq!((code, out.trim()), (0, "hello"), "{err}");
    // https:// in CONSUL_HTTP_ADDR, and a server name other than the host.
    let mut env2 = env_ref.clone();
    env2[0] = ("CONSUL_HTTP_ADDR", addr.as_str());
    env2.remove(1);
    let (code, out, err) = tern_env(
        &[
            "kv",
            "get",
            "-tls-server-name=server.dc1.consul",
            "greeting",
        ],
        &env2,
    );
    assert_eq!((code, out.trim()), (0, "hello"), "{err}");

    // Refusals: no client certificate, the wrong name, another CA.
    let (code, _, err) = tern_env(
        &[
            "kv",
            "get",
            "-http-addr",
            &addr,
            "-ca-file",
            &ca_s,
            "greeting",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = tern_env(
        &["kv", "get", "-tls-server-name=wrong.example", "greeting"],
        &env2,
    );
    assert_eq!(code, 1);
    assert!(err.contains("Get \"https://wrong.example:"), "{err}");
    let other_ca = other.ca().display().to_string();
    let (code, _, _) = tern_env(
        &[
            "kv",
            "get",
            "-http-addr",
            &addr,
            "-ca-file",
            &other_ca,
            "-client-cert",
            &cc,
            "-client-key",
            &ck,
            "greeting",
        ],
        &[],
    );
    assert_eq!(code, 1);
    let refused = wait_for(Duration::from_secs(5), || {
        Some(web.log()).filter(|l| {
            l.contains("HTTPS: TLS handshake with 127.0.0.1") && l.contains("no client certificate")
        })
    });
    assert!(refused.is_some(), "{}", web.log());
    // Bad settings are one line naming them.
    let (code, _, err) = tern_env(
        &[
            "kv",
            "get",
            "-http-addr",
            &addr,
            "-ca-file",
            "/nope.pem",
            "greeting",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with("-ca-file: cannot read \"/nope.pem\""),
        "{err}"
    );
    let (code, _, err) = tern_env(
        &[
            "kv",
            "get",
            "-http-addr",
            &addr,
            "-client-cert",
            &cc,
            "greeting",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "-client-cert and -client-key: give both or neither"
    );

    // Plain HTTP stays where it was, on loopback.
    assert_eq!(
        http("GET", &format!("{}/v1/kv/greeting?raw", web.base()), "").map(|r| r.1),
        Some("hello".into())
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other.dir);
}

/// A certificate signed by `pki`'s CA whose validity ended yesterday.
fn expired_cert(pki: &Pki, name: &str) -> (PathBuf, PathBuf) {
    let ca_pem = std::fs::read_to_string(pki.ca()).unwrap();
    let ca_key_pem = std::fs::read_to_string(pki.dir.join("consul-agent-ca-key.pem")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![
        "server.dc1.consul".to_string(),
        "localhost".to_string(),
    ])
    .unwrap();
    let now = ::time::OffsetDateTime::now_utc();
    params.not_before = now - ::time::Duration::days(10);
    params.not_after = now - ::time::Duration::days(1);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let c = pki.dir.join(format!("{name}.pem"));
    let k = pki.dir.join(format!("{name}-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// The fourth reason the issue names: an expired certificate. As the
/// agent's own it stops the agent at start; presented by a peer it fails
/// the handshake with one line saying so.
#[test]
fn an_expired_certificate_stops_the_agent_and_is_refused_from_a_peer() {
    let pki = Pki::new("tls-expired");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let (old_cert, old_key) = expired_cert(&pki, "expired");
    let (code, out) = agent_refuses(&dir, &tls_hcl(&ca, &old_cert, &old_key));
    assert_ne!(code, 0, "{out}");
    let want = format!(
        "cert_file: the certificate in {:?} expired on",
        old_cert.display().to_string()
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(&want)).count(),
        1,
        "{out}"
    );

    let (cert, key) = pki.cert(&["-server", "-node=solo"]);
    let solo = Agent::start("solo", &dir, false, 1, &[], &tls_hcl(&ca, &cert, &key));
    assert_eq!(leader(&[&solo]), Some(0), "{}", solo.log());
    let expired = (old_cert, old_key);
    if let Ok(mut s) = tls_connect(
        solo.server,
        client_config(&ca, Some(&expired), &[]),
        &[3],
        "server.dc1.consul",
    ) {
        let _ = s.write_all(&[4]);
        let _ = s.flush();
        assert!(ends(&mut s));
    }
    let refused = wait_for(Duration::from_secs(5), || {
        Some(solo.log()).filter(|l| l.contains("failed: certificate expired"))
    });
    assert!(refused.is_some(), "{}", solo.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTPS request on a raw rustls connection (`s`), the answer's status
/// line.
fn https_get(s: &mut TlsStream, path: &str) -> String {
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    s.flush().unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    answer.lines().next().unwrap_or_default().to_string()
}

/// A TCP connection that has sent nothing: whether the server closed it
/// (EOF or a reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        // The server has nothing to say before a ClientHello.
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Issue 11, deliverable 10 and the HTTPS bounds (Consul: agent/agent.go
/// `setupHTTPS`, `limits.https_handshake_timeout` and
/// `http_max_conns_per_client` in agent/config/default.go):
///
/// - a second connection from the same client configuration resumes its
///   TLS session (`HandshakeKind::Resumed`) on the server port's RPC-TLS
///   and native (ALPN) paths and on the HTTPS API, and a resumed session
///   keeps its certificate's identity (Raft from a server certificate is
///   taken, from a client certificate refused);
/// - an HTTPS client that connects and never sends a ClientHello is
///   closed when `https_handshake_timeout` runs out, with a line naming
///   it and why;
/// - the 201st connection from one address is closed before any handshake
///   (a ClientHello gets no ServerHello), with the connection limit's
///   line, and a slot freed by a closed connection serves again.
#[test]
fn sessions_resume_on_both_ports_and_https_handshakes_are_bounded_in_time_and_count() {
    use rustls::HandshakeKind::{Full, Resumed};
    let pki = Pki::new("tls-bounds");
    let dir = pki.dir.clone();
    let ca = pki.ca();
    let (cert, key) = pki.cert(&["-server", "-node=solo"]);
    let cli = pki.cert(&["-cli"]);
    let peer = pki.cert(&["-server"]);
    let https = free_port();
    let hcl = format!(
        "{}\nports {{\n  https = {https}\n}}\nlimits {{\n  https_handshake_timeout = \"3s\"\n}}\n",
        tls_hcl(&ca, &cert, &key)
    );
    let solo = Agent::start("solo", &dir, false, 1, &[], &hcl);
    assert_eq!(leader(&[&solo]), Some(0), "{}", solo.log());
    let logged = |needle: &str| {
        wait_for(Duration::from_secs(10), || {
            Some(solo.log()).filter(|l| l.contains(needle))
        })
        .unwrap_or_else(|| panic!("no line {needle:?} in\n{}", solo.log()))
    };

    // Resumption: RPC-TLS, native TLS with ALPN, HTTPS. The call's answer
    // (or the HTTP answer) is read after the handshake, which is when a
    // TLS 1.3 client takes in the server's tickets.
    let rpc = client_config(&ca, Some(&peer), &[]);
    for (i, want) in [Full, Resumed, Resumed].into_iter().enumerate() {
        let mut s = tls_connect(solo.server, rpc.clone(), &[3], "server.dc1.consul").unwrap();
        assert_eq!(
            s.conn.handshake_kind(),
            Some(want),
            "RPC-TLS connection {i}"
        );
        s.write_all(&[4]).unwrap();
        assert_eq!(call_put(&mut s, &format!("rpc-tls-{i}")), Ok(()));
    }
    // A resumed session keeps its certificate's identity: Raft from a
    // server certificate is taken on it (its forwarded write is applied),
    // and a client certificate's resumed session still may not act as a
    // server.
    let mut s = tls_connect(solo.server, rpc.clone(), &[3], "server.dc1.consul").unwrap();
    assert_eq!(s.conn.handshake_kind(), Some(Resumed));
    s.write_all(&[1]).unwrap();
    s.write_all(&forwarded_put(0x5E, node_id(&solo), "resumed-server"))
        .unwrap();
    s.flush().unwrap();
    let base = solo.base();
    let applied = wait_for(Duration::from_secs(10), || {
        http("GET", &format!("{base}/v1/kv/resumed-server?raw"), "").filter(|r| r.0 == 200)
    });
    assert_eq!(
        applied.map(|r| r.1),
        Some("forged".into()),
        "{}",
        solo.log()
    );
    let client_cert = pki.cert(&["-client"]);
    let as_client = client_config(&ca, Some(&client_cert), &[]);
    let mut s = tls_connect(solo.server, as_client.clone(), &[3], "server.dc1.consul").unwrap();
    s.write_all(&[4]).unwrap();
    assert_eq!(call_put(&mut s, "client-full"), Ok(()));
    let mut s = tls_connect(solo.server, as_client, &[3], "server.dc1.consul").unwrap();
    assert_eq!(s.conn.handshake_kind(), Some(Resumed));
    s.write_all(&[1]).unwrap();
    let _ = s.write_all(&forwarded_put(0xC1, node_id(&solo), "resumed-client"));
    let _ = s.flush();
    assert!(ends(&mut s));
    logged("certificate for client.dc1.consul, localhost may not act as a server");
    assert_eq!(
        http("GET", &format!("{base}/v1/kv/resumed-client"), "").map(|r| r.0),
        Some(404)
    );

    let alpn = client_config(&ca, Some(&peer), &[b"tern/rpc"]);
    for (i, want) in [Full, Resumed, Resumed].into_iter().enumerate() {
        let mut s = tls_connect(solo.server, alpn.clone(), &[], "solo.server.dc1.consul").unwrap();
        assert_eq!(s.conn.handshake_kind(), Some(want), "ALPN connection {i}");
        assert_eq!(call_put(&mut s, &format!("alpn-{i}")), Ok(()));
    }
    let web = client_config(&ca, Some(&cli), &[b"http/1.1"]);
    for (i, want) in [Full, Resumed, Resumed].into_iter().enumerate() {
        let mut s = tls_connect(https, web.clone(), &[], "localhost").unwrap();
        assert_eq!(s.conn.handshake_kind(), Some(want), "HTTPS connection {i}");
        assert_eq!(https_get(&mut s, "/v1/kv/alpn-1?raw"), "HTTP/1.1 200 OK");
    }
    // Another client configuration has its own sessions: a full handshake.
    let other = client_config(&ca, Some(&cli), &[b"http/1.1"]);
    let s = tls_connect(https, other, &[], "localhost").unwrap();
    assert_eq!(s.conn.handshake_kind(), Some(Full));
    drop(s);

    // Every failed HTTPS handshake is a line naming the peer and why: a
    // client certificate from another CA, an expired one, none, and a
    // client that refuses the server's name (its alert).
    let other = Pki::new("tls-bounds-other");
    let foreign = other.cert(&["-cli"]);
    let expired = expired_cert(&pki, "https-expired");
    for (config, sni) in [
        (
            client_config(&ca, Some(&foreign), &[b"http/1.1"]),
            "localhost",
        ),
        (
            client_config(&ca, Some(&expired), &[b"http/1.1"]),
            "localhost",
        ),
        (client_config(&ca, None, &[b"http/1.1"]), "localhost"),
        (
            client_config(&ca, Some(&cli), &[b"http/1.1"]),
            "wrong.example",
        ),
    ] {
        // Under TLS 1.3 the client may finish before the server refuses it.
        if let Ok(mut s) = tls_connect(https, config, &[], sni) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
            let _ = s.flush();
            assert!(ends(&mut s));
        }
    }
    for why in [
        "certificate from an unknown CA",
        "certificate expired",
        "no client certificate",
        "the peer refused the handshake",
    ] {
        logged(&format!("failed: {why}"));
    }
    assert_eq!(
        solo.log()
            .lines()
            .filter(|l| l.contains("HTTPS: TLS handshake with 127.0.0.1:"))
            .count(),
        4,
        "{}",
        solo.log()
    );
    let _ = std::fs::remove_dir_all(&other.dir);

    // A client that never sends its ClientHello is closed at the deadline
    // (3 s here), not before, and named in the log.
    let mut silent = TcpStream::connect(("127.0.0.1", https)).unwrap();
    let start = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(30)),
        "a silent HTTPS client was left open\n{}",
        solo.log()
    );
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "closed before the deadline"
    );
    logged("failed: no handshake within the handshake timeout");

    // 200 connections from 127.0.0.1 (Consul's default
    // http_max_conns_per_client) hold every slot before their handshake...
    let held: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", https)).unwrap())
        .collect();
    // ... so the 201st gets no ServerHello to its ClientHello: it is closed
    // unread.
    let refused = tls_connect(https, web.clone(), &[], "localhost");
    assert!(refused.is_err(), "the 201st connection was served");
    logged("HTTPS API: rejecting a connection from 127.0.0.1: http_max_conns_per_client (200) exceeded");
    // Closing them frees their slots (the server sees the close when its
    // handshake reads EOF).
    drop(held);
    let served = wait_for(Duration::from_secs(10), || {
        let mut s = tls_connect(https, web.clone(), &[], "localhost").ok()?;
        Some(https_get(&mut s, "/v1/kv/alpn-1?raw"))
    });
    assert_eq!(served.as_deref(), Some("HTTP/1.1 200 OK"), "{}", solo.log());

    // A bad value is one line naming the key.
    let (code, err) = agent_refuses(&dir, "limits {\n  https_handshake_timeout = \"0s\"\n}\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("limits.https_handshake_timeout: must be greater than zero"),
        "{err}"
    );
    let (code, err) = agent_refuses(&dir, "limits {\n  https_handshake_timeout = \"soon\"\n}\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("limits.https_handshake_timeout: must be a duration"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
