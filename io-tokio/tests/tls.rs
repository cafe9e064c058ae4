//! TLS with real processes: `tern tls ca create` / `tls cert create` (the
//! files Consul's commands write, read back and checked), and the server
//! port under TLS.

use std::path::{Path, PathBuf};
use std::process::Command;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::*;

mod common;
use common::temp_dir;

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
    assert!(out.starts_with("==> WARNING: a server certificate"), "{out}");
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
    assert!(!signed_by(&server, &pem_der(&dir.join("tern-agent-ca.pem"))));

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
            &["tls", "cert", "create", "-server", "-key=tern-agent-ca-key.pem"][..],
            "the CA key does not belong to the CA certificate",
        ),
        (
            &["tls", "cert", "create", "-server", "-days=0"][..],
            "-days: must be between 1 and 36500, got 0",
        ),
        (
            &["tls", "cert", "create", "-server", "-additional-ipaddress=nope"][..],
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
    assert!(out.starts_with("Usage: tern tls cert create [options]"), "{out}");
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
