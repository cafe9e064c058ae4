//! `tern tls ca create` and `tern tls cert create` (Consul's command/tls):
//! a private CA and the certificates agents present on the server port and
//! the HTTPS API. Files carry Consul's names (`consul-agent-ca.pem`,
//! `dc1-server-consul-0.pem`, ...) so scripts written for Consul work, and
//! no existing file is ever overwritten: files are opened with `O_EXCL`.
//!
//! Keys are ECDSA P-256 as Consul's; serial numbers are 128 random bits
//! (Consul's `GenerateSerialNumber`). Keys are PKCS#8 (`PRIVATE KEY`); a CA
//! key made by Consul (SEC1, `EC PRIVATE KEY`) is read too.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
};

use super::flags::{self, flag, value, Spec};
use super::{fail, help, Io};

pub(crate) const TLS_HELP: &str = "
Usage: tern tls <subcommand> [options]

  Makes a private certificate authority and the certificates Tern agents
  present to each other (the server port) and to HTTPS clients, with the
  file names Consul's tls commands use:

      $ tern tls ca create
      ==> Saved consul-agent-ca.pem
      ==> Saved consul-agent-ca-key.pem
      $ tern tls cert create -server -dc=dc1 -node=s1
      $ tern tls cert create -client

  Run a subcommand with -h for its options.
";

pub(crate) const CA_HELP: &str = "
Usage: tern tls ca <subcommand> [options]

  Makes the certificate authority that signs the agents' certificates.

      $ tern tls ca create
";

pub(crate) const CERT_HELP: &str = "
Usage: tern tls cert <subcommand> [options]

  Makes certificates signed by the CA that tern tls ca create made.

      $ tern tls cert create -server
";

pub(crate) const CA_CREATE_USAGE: &str = "\
Usage: tern tls ca create [options]

  Makes a new CA: <domain>-agent-ca.pem and <domain>-agent-ca-key.pem in
  the current directory (consul-agent-ca.pem by default). Refuses if either
  file exists.

      $ tern tls ca create
      ==> Saved consul-agent-ca.pem
      ==> Saved consul-agent-ca-key.pem

Command Options

  -days=<n>                          days the CA is valid for (1825, 5 years)
  -domain=<domain>                   the cluster's domain, for the file names and
                                     -name-constraint (consul)
  -name-constraint                   let the CA sign only names under -domain,
                                     localhost and -additional-name-constraint;
                                     an HTTPS name has to be added now, it cannot be
                                     added later
  -additional-name-constraint=<name> another permitted DNS name (repeatable; only
                                     with -name-constraint)
  -common-name=<name>                the CA's common name (Tern Agent CA <serial>)
";

pub(crate) const CERT_CREATE_USAGE: &str = "\
Usage: tern tls cert create [options]

  Makes a certificate and its key signed by the CA, named
  <dc>-<kind>-<domain>-<n>.pem and <dc>-<kind>-<domain>-<n>-key.pem with the
  first <n> for which neither file exists.

  A server certificate names server.<dc>.<domain>, localhost and 127.0.0.1
  (and <node>.server.<dc>.<domain> with -node) and may be used as a server
  and as a client; a client certificate names client.<dc>.<domain>,
  localhost and 127.0.0.1; a cli certificate names cli.<dc>.<domain> and
  localhost and may be used only as a client.

      $ tern tls cert create -server -node=s1
      ==> WARNING: a server certificate lets its holder act as a server:
          join the cluster, read and write all of its state. Keep it on
          server hosts only, as carefully as the CA key.
      ==> Using consul-agent-ca.pem and consul-agent-ca-key.pem
      ==> Saved dc1-server-consul-0.pem
      ==> Saved dc1-server-consul-0-key.pem

Command Options

  -server | -client | -cli         which kind of certificate (exactly one)
  -dc=<dc>                         the datacenter (dc1)
  -domain=<domain>                 the cluster's domain (consul)
  -node=<name>                     also name <name>.server.<dc>.<domain> (needs
                                   -server): what a mesh gateway routes on
  -additional-dnsname=<name>       another DNS name (repeatable)
  -additional-ipaddress=<ip>       another IP address (repeatable)
  -days=<n>                        days the certificate is valid for (365)
  -ca=<path>                       the CA certificate (<domain>-agent-ca.pem)
  -key=<path>                      the CA key (<domain>-agent-ca-key.pem)
";

/// How many numbered names `cert create` tries before giving up (Consul's).
const CERT_NUMBER_MAX: u32 = 10_000;
/// The longest validity accepted, in days (about 100 years): beyond it the
/// date arithmetic and X.509's GeneralizedTime stop meaning much.
const DAYS_MAX: u64 = 36_500;

/// The flags of `ca create`.
const CA_FLAGS: &[Spec] = &[
    value("days"),
    value("domain"),
    flag("name-constraint"),
    value("additional-name-constraint"),
    value("common-name"),
];

/// The flags of `cert create`.
const CERT_FLAGS: &[Spec] = &[
    flag("server"),
    flag("client"),
    flag("cli"),
    value("dc"),
    value("domain"),
    value("node"),
    value("additional-dnsname"),
    value("additional-ipaddress"),
    value("days"),
    value("ca"),
    value("key"),
];

/// Parse flags, printing help or the flag error as every command does.
fn parse(args: &[String], specs: &[Spec], path: &str, io: &mut Io) -> Result<flags::Parsed, i32> {
    let doc = help::find(path).expect("every command has help");
    match flags::parse(args, specs) {
        Ok(p) if p.help => {
            let _ = io.out.write_all(help::command_help(doc).as_bytes());
            Err(0)
        }
        Ok(p) => match p.args.first() {
            Some(extra) => Err(fail(io, format!("unexpected argument {extra:?}"))),
            None => Ok(p),
        },
        Err(e) => {
            let _ = write!(io.err, "{e}\n\n{}", help::command_help(doc));
            Err(1)
        }
    }
}

fn all<'a>(p: &'a flags::Parsed, name: &str) -> Vec<&'a str> {
    p.flags
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .collect()
}

fn days(p: &flags::Parsed, default: u64) -> Result<u64, String> {
    match p.number("days")? {
        None => Ok(default),
        Some(d) if (1..=DAYS_MAX).contains(&d) => Ok(d),
        Some(d) => Err(format!("-days: must be between 1 and {DAYS_MAX}, got {d}")),
    }
}

/// 128 random bits from the OS (through ring), as a positive serial.
fn serial() -> Result<Vec<u8>, String> {
    let mut b = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| "no random numbers from the OS".to_string())?;
    // A leading zero byte would be dropped by the DER encoding; keep 16.
    b[0] |= 0x01;
    Ok(b.to_vec())
}

fn validity(params: &mut CertificateParams, days: u64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(days as i64);
}

/// Write `bytes` to a new file at `path`; an existing file is never
/// touched. Keys are readable by their owner only.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    o.mode(if private { 0o600 } else { 0o644 });
    let mut f = o.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!("{} already exists.", path.display()),
        _ => format!("writing {}: {e}", path.display()),
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// `tern tls ca create`.
pub(crate) fn ca_create(args: &[String], io: &mut Io) -> i32 {
    let p = match parse(args, CA_FLAGS, "tls ca create", io) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match make_ca(&p, io) {
        Ok(()) => 0,
        Err(e) => fail(io, e),
    }
}

fn make_ca(p: &flags::Parsed, io: &mut Io) -> Result<(), String> {
    let days = days(p, 1825)?;
    let domain = p.last("domain").unwrap_or("consul").trim_end_matches('.');
    if domain.is_empty() {
        return Err("-domain: must not be empty".into());
    }
    let cert_file = format!("{domain}-agent-ca.pem");
    let key_file = format!("{domain}-agent-ca-key.pem");
    for f in [&cert_file, &key_file] {
        if Path::new(f).exists() {
            return Err(format!("{f} already exists."));
        }
    }
    let sn = serial()?;
    let key = KeyPair::generate().map_err(|e| format!("error generating private key: {e}"))?;
    let mut params = CertificateParams::default();
    validity(&mut params, days);
    params.serial_number = Some(SerialNumber::from_slice(&sn));
    let mut dn = DistinguishedName::new();
    let cn = match p.last("common-name") {
        Some(cn) if !cn.trim().is_empty() => cn.trim().to_string(),
        _ => format!(
            "Tern Agent CA {}",
            u128::from_be_bytes(sn[..].try_into().expect("16"))
        ),
    };
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    if p.bool("name-constraint")? {
        let mut permitted: Vec<GeneralSubtree> = all(p, "additional-name-constraint")
            .into_iter()
            .map(|n| GeneralSubtree::DnsName(n.to_string()))
            .collect();
        permitted.push(GeneralSubtree::DnsName(domain.to_string()));
        permitted.push(GeneralSubtree::DnsName("localhost".into()));
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: Vec::new(),
        });
    } else if !all(p, "additional-name-constraint").is_empty() {
        return Err("-additional-name-constraint needs -name-constraint".into());
    }
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("error generating CA certificate: {e}"))?;
    write_new(Path::new(&cert_file), cert.pem().as_bytes(), false)?;
    io.line(&format!("==> Saved {cert_file}"));
    write_new(Path::new(&key_file), key.serialize_pem().as_bytes(), true)?;
    io.line(&format!("==> Saved {key_file}"));
    Ok(())
}

/// Which certificate `cert create` makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Server,
    Client,
    Cli,
}

/// `tern tls cert create`.
pub(crate) fn cert_create(args: &[String], io: &mut Io) -> i32 {
    let p = match parse(args, CERT_FLAGS, "tls cert create", io) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match make_cert(&p, io) {
        Ok(()) => 0,
        Err(e) => fail(io, e),
    }
}

fn make_cert(p: &flags::Parsed, io: &mut Io) -> Result<(), String> {
    let kinds = [
        (p.bool("server")?, Kind::Server),
        (p.bool("client")?, Kind::Client),
        (p.bool("cli")?, Kind::Cli),
    ];
    let chosen: Vec<Kind> = kinds
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, k)| *k)
        .collect();
    let [kind] = chosen[..] else {
        return Err("Please provide either -server, -client, or -cli".into());
    };
    let node = p.last("node").map(str::trim).filter(|n| !n.is_empty());
    if node.is_some() && kind != Kind::Server {
        return Err("-node requires -server".into());
    }
    let days = days(p, 365)?;
    let dc = p.last("dc").unwrap_or("dc1").trim();
    let domain = p
        .last("domain")
        .unwrap_or("consul")
        .trim()
        .trim_end_matches('.');
    if dc.is_empty() || domain.is_empty() {
        return Err("-dc and -domain must not be empty".into());
    }
    let mut dns: Vec<String> = all(p, "additional-dnsname")
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut ips = Vec::new();
    for ip in all(p, "additional-ipaddress") {
        ips.push(
            ip.parse::<IpAddr>()
                .map_err(|_| format!("-additional-ipaddress: {ip:?} is not an IP address"))?,
        );
    }
    let (word, eku) = match kind {
        Kind::Server => (
            "server",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        // Consul's client agents also serve HTTPS with theirs.
        Kind::Client => (
            "client",
            vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        ),
        Kind::Cli => ("cli", vec![ExtendedKeyUsagePurpose::ClientAuth]),
    };
    let name = format!("{word}.{dc}.{domain}");
    if let Some(n) = node {
        dns.push(format!("{n}.server.{dc}.{domain}"));
    }
    dns.push(name.clone());
    dns.push("localhost".into());
    if kind != Kind::Cli {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }

    let prefix = format!("{dc}-{word}-{domain}");
    let (cert_file, key_file) = (0..=CERT_NUMBER_MAX)
        .map(|i| (format!("{prefix}-{i}.pem"), format!("{prefix}-{i}-key.pem")))
        .find(|(c, k)| !Path::new(c).exists() && !Path::new(k).exists())
        .ok_or("Could not find a filename that doesn't already exist")?;

    let ca_file = p
        .last("ca")
        .map_or_else(|| format!("{domain}-agent-ca.pem"), str::to_string);
    let ca_key_file = p
        .last("key")
        .map_or_else(|| format!("{domain}-agent-ca-key.pem"), str::to_string);
    let ca_pem = std::fs::read_to_string(&ca_file).map_err(|e| format!("Error reading CA: {e}"))?;
    let ca_key_pem =
        std::fs::read_to_string(&ca_key_file).map_err(|e| format!("Error reading CA key: {e}"))?;
    let ca_key = read_ca_key(&ca_key_pem).map_err(|e| format!("Error reading CA key: {e}"))?;
    check_key_matches(&ca_pem, &ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| format!("Error reading CA: {ca_file}: {e}"))?;

    if kind == Kind::Server {
        io.line(
            "==> WARNING: a server certificate lets its holder act as a server:\n    \
             join the cluster, read and write all of its state. Keep it on\n    \
             server hosts only, as carefully as the CA key.",
        );
    }
    io.line(&format!("==> Using {ca_file} and {ca_key_file}"));

    let key = KeyPair::generate().map_err(|e| format!("error generating private key: {e}"))?;
    let mut params = CertificateParams::default();
    validity(&mut params, days);
    params.serial_number = Some(SerialNumber::from_slice(&serial()?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = eku;
    params.use_authority_key_identifier_extension = true;
    for d in dns {
        let san = d
            .clone()
            .try_into()
            .map_err(|_| format!("{d:?} is not a DNS name"))?;
        params.subject_alt_names.push(SanType::DnsName(san));
    }
    params
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("error signing the certificate: {e}"))?;
    write_new(Path::new(&cert_file), cert.pem().as_bytes(), false)?;
    io.line(&format!("==> Saved {cert_file}"));
    write_new(Path::new(&key_file), key.serialize_pem().as_bytes(), true)?;
    io.line(&format!("==> Saved {key_file}"));
    Ok(())
}

/// A CA key in PKCS#8 (ours) or SEC1 (`EC PRIVATE KEY`, Consul's).
fn read_ca_key(pem: &str) -> Result<KeyPair, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("no private key in PEM: {e}"))?;
    let pkcs8 = match der {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Sec1(k) => sec1_p256_to_pkcs8(k.secret_sec1_der()),
        PrivateKeyDer::Pkcs1(_) => return Err("RSA CA keys are not supported".into()),
        _ => return Err("unknown private key type".into()),
    };
    KeyPair::try_from(pkcs8.as_slice()).map_err(|e| e.to_string())
}

/// Wrap a SEC1 P-256 key in PKCS#8 (RFC 5208: version 0, the EC public key
/// algorithm with the P-256 curve, the SEC1 bytes as an octet string).
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = body.len();
        if n < 0x80 {
            out.push(n as u8);
        } else if n < 0x100 {
            out.extend([0x81, n as u8]);
        } else {
            out.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(body);
        out
    }
    const ALGORITHM: &[u8] = &[
        0x30, 0x13, // SEQUENCE
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(ALGORITHM);
    body.extend(der(0x04, sec1));
    der(0x30, &body)
}

/// The CA key must be the one the CA certificate names, or every
/// certificate signed with it would fail to verify.
fn check_key_matches(ca_pem: &str, key: &KeyPair) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| format!("Error reading CA: no certificate in PEM: {e}"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| format!("Error reading CA: {e}"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("the CA key does not belong to the CA certificate".into());
    }
    Ok(())
}
