//! TLS for the server port (and, later, the HTTPS API): Consul's settings
//! (`tls { defaults internal_rpc https }` and the old top-level keys, merged
//! by `config`), the certificates they name loaded into rustls
//! configurations, and the checks Consul's `tlsutil` makes:
//!
//! - **Incoming, RPC-TLS** (first byte 3, then TLS, then an inner type
//!   byte): a client certificate is required and verified against the CA
//!   when `verify_incoming` is set, not asked for otherwise.
//! - **Incoming, native TLS** (a ClientHello as the first byte; ALPN picks
//!   the protocol): always mutual TLS, whatever `verify_incoming` says,
//!   because a mesh gateway can route strangers here.
//! - **A server's identity** (Consul's `AuthorizeServerConn`): Raft is taken
//!   only from a certificate naming `server.<dc>.<domain>` when
//!   `verify_incoming` and `verify_server_hostname` are set, and always on
//!   the ALPN path.
//! - **Outgoing**: with `verify_outgoing` a server dials its peers with TLS,
//!   presents its own certificate, and sends SNI `<node>.server.<dc>.<domain>`
//!   (what a gateway routes on); the peer's chain is always verified against
//!   the CA and, with `verify_server_hostname`, its name must be
//!   `server.<dc>.<domain>` (so a certificate made without `-node` still
//!   serves).
//!
//! The provider is rustls's *ring*: it builds with a C compiler alone (no
//! cmake or NASM, which aws-lc-rs needs), and the test clients already in
//! the lock file use it. Configurations are rebuilt from the files on
//! [`Tls::reload`] (SIGHUP) and swapped: connections already open keep the
//! configuration they were made with, new ones take the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};

/// ALPN protocols of the server port's native-TLS path (DESIGN.md §6),
/// defined beside the port's other preamble rules in the core.
pub use tern_core::wire::conn::{
    ALPN_ALL, ALPN_RAFT, ALPN_RPC, ALPN_WAN_GOSSIP_PACKET, ALPN_WAN_GOSSIP_STREAM,
};

/// The lowest TLS version accepted (`tls_min_version`). rustls speaks only
/// TLS 1.2 and 1.3; Consul's `TLSv1_0`/`TLSv1_1` are refused by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// Consul's spellings (`TLSv1_2`, and the older `tls12`).
    pub fn parse(s: &str) -> Result<TlsVersion, String> {
        match s {
            "TLSv1_2" | "tls12" => Ok(TlsVersion::Tls12),
            "TLSv1_3" | "tls13" => Ok(TlsVersion::Tls13),
            "TLSv1_0" | "TLSv1_1" | "tls10" | "tls11" => Err(format!(
                "{s:?} is not supported: Tern speaks TLS 1.2 and 1.3 only"
            )),
            _ => Err(format!(
                "must be one of \"TLSv1_2\", \"TLSv1_3\", got {s:?}"
            )),
        }
    }

    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => &BOTH,
            TlsVersion::Tls13 => &ONLY13,
        }
    }
}

/// TLS 1.2 cipher suites by Go's names (`tls_cipher_suites`, comma
/// separated); TLS 1.3's suites are not configurable, as in Consul.
const CIPHER_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// Parse `tls_cipher_suites`: Go's names, comma separated. A suite rustls
/// does not implement (CBC, RSA key exchange) is refused by name.
pub fn parse_cipher_suites(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        // Go also accepts the `_POLY1305` spelling without `_SHA256`.
        let canonical = match name {
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            }
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            n => n,
        };
        if !CIPHER_SUITES.contains(&canonical) {
            return Err(format!(
                "unsupported cipher suite {name:?} (supported: {})",
                CIPHER_SUITES.join(", ")
            ));
        }
        out.push(canonical.to_string());
    }
    Ok(out)
}

/// One listener's settings, `tls.defaults` under its own section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub min_version: TlsVersion,
    /// Go's names; empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
}

impl TlsSettings {
    fn has_ca(&self) -> bool {
        self.ca_file.is_some() || self.ca_path.is_some()
    }
}

/// Everything TLS the agent runs with (built by `config`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The server port (`tls.internal_rpc`).
    pub internal_rpc: TlsSettings,
    /// `tls.internal_rpc.verify_server_hostname`.
    pub verify_server_hostname: bool,
    /// The HTTPS API (`tls.https`); not served yet.
    pub https: TlsSettings,
    pub datacenter: String,
    /// Consul's `domain` (default `consul`), without a trailing dot.
    pub domain: String,
}

impl TlsOptions {
    /// Whether the server port or the HTTPS API does anything with TLS.
    pub fn enabled(&self) -> bool {
        let r = &self.internal_rpc;
        r.has_ca() || r.cert_file.is_some() || self.https.cert_file.is_some()
    }

    /// Consul's builder checks, one line naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let r = &self.internal_rpc;
        if r.cert_file.is_some() != r.key_file.is_some() {
            return Err("tls.defaults.cert_file and key_file: set both or neither".into());
        }
        if r.verify_incoming && !r.has_ca() {
            return Err(
                "tls.defaults.verify_incoming: needs tls.defaults.ca_file or ca_path".into(),
            );
        }
        if r.verify_incoming && r.cert_file.is_none() {
            return Err(
                "tls.defaults.verify_incoming: needs tls.defaults.cert_file and key_file".into(),
            );
        }
        if (r.verify_outgoing || self.verify_server_hostname) && !r.has_ca() {
            return Err(
                "tls.defaults.verify_outgoing: needs tls.defaults.ca_file or ca_path".into(),
            );
        }
        let h = &self.https;
        if h.cert_file.is_some() != h.key_file.is_some() {
            return Err("tls.https.cert_file and key_file: set both or neither".into());
        }
        if h.verify_incoming && h.cert_file.is_some() && !h.has_ca() {
            return Err("tls.https.verify_incoming: needs tls.https.ca_file or ca_path".into());
        }
        Ok(())
    }

    /// Whether outbound server-port connections use TLS
    /// (`verify_server_hostname` implies `verify_outgoing`, as in Consul).
    pub fn outgoing(&self) -> bool {
        self.internal_rpc.verify_outgoing || self.verify_server_hostname
    }

    /// `server.<dc>.<domain>`: the name every server's certificate carries.
    pub fn server_name(&self) -> String {
        format!("server.{}.{}", self.datacenter, self.domain)
    }

    /// SNI for dialing server `node`: `<node>.server.<dc>.<domain>`
    /// (Consul's `ServerSNI`).
    pub fn server_sni(&self, node: &str) -> String {
        match node {
            "" | "*" => self.server_name(),
            n => format!("{n}.server.{}.{}", self.datacenter, self.domain),
        }
    }
}

/// The configurations in force, replaced whole by a reload.
pub struct Configs {
    /// RPC-TLS (first byte 3): client certificates as `verify_incoming` says.
    pub rpc_server: Option<Arc<ServerConfig>>,
    /// Native TLS with ALPN: always mutual TLS. Needs a CA and a certificate.
    pub alpn_server: Option<Arc<ServerConfig>>,
    /// Outbound to servers: our certificate (if any), their chain checked.
    pub client: Option<Arc<ClientConfig>>,
    /// The same with the ALPN list (tests, and the federation work).
    pub alpn_client: Option<Arc<ClientConfig>>,
    /// The HTTPS API (`tls.https`): client certificates required under its
    /// `verify_incoming`.
    pub https_server: Option<Arc<ServerConfig>>,
}

/// The agent's TLS state: its options and the configurations in force.
pub struct Tls {
    pub options: TlsOptions,
    configs: RwLock<Arc<Configs>>,
    /// Rate-limited log lines: plaintext refused, handshakes failed, a
    /// certificate that may not act as a server.
    pub plaintext_refused: Throttle,
    pub handshake_failed: Throttle,
    pub unauthorized: Throttle,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("options", &self.options)
            .finish()
    }
}

impl Tls {
    /// Load the files `options` name. `Ok(None)` when the server port does
    /// not use TLS; an error is one line naming the file and the reason.
    pub fn load(options: &TlsOptions) -> Result<Option<Arc<Tls>>, String> {
        if !options.enabled() {
            return Ok(None);
        }
        options.validate()?;
        let configs = build(options)?;
        Ok(Some(Arc::new(Tls {
            options: options.clone(),
            configs: RwLock::new(Arc::new(configs)),
            plaintext_refused: Throttle::new(),
            handshake_failed: Throttle::new(),
            unauthorized: Throttle::new(),
        })))
    }

    /// The configurations for a new connection.
    pub fn configs(&self) -> Arc<Configs> {
        self.configs.read().expect("not poisoned").clone()
    }

    /// Read the files again (SIGHUP). On an error the old configurations
    /// stay in force and the error is returned.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = build(&self.options)?;
        *self.configs.write().expect("not poisoned") = Arc::new(fresh);
        Ok(())
    }

    /// Consul's `AuthorizeServerConn`: whether the peer's (already
    /// verified) certificate names `server.<dc>.<domain>`. `always`: the
    /// ALPN path, where the check does not depend on the settings.
    pub fn authorize_server(
        &self,
        peer: Option<&[CertificateDer<'_>]>,
        always: bool,
    ) -> Result<(), String> {
        let o = &self.options;
        let settings_ask = o.internal_rpc.verify_incoming && o.verify_server_hostname;
        if !(always || settings_ask) {
            return Ok(());
        }
        let expected = o.server_name();
        let Some(leaf) = peer.and_then(|c| c.first()) else {
            return Err(format!(
                "no certificate: only a certificate for {expected} may act as a server"
            ));
        };
        let names = dns_names(leaf)?;
        if names.iter().any(|n| name_matches(n, &expected)) {
            Ok(())
        } else {
            Err(format!(
                "certificate for {} may not act as a server (needs {expected})",
                if names.is_empty() {
                    "no DNS name".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

/// The DNS names a certificate's SAN extension lists.
fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("unreadable peer certificate: {e}"))?;
    let mut out = Vec::new();
    for ext in c.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                if let GeneralName::DNSName(d) = n {
                    out.push(d.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// A DNS name as Go's `VerifyHostname` matches it: exact (ignoring case),
/// or a `*.` wildcard for exactly one leftmost label.
fn name_matches(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match p.strip_prefix("*.") {
        Some(rest) => h
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => p == h,
    }
}

/// The ring provider, with `tls_cipher_suites` applied.
fn provider(s: &TlsSettings) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if !s.cipher_suites.is_empty() {
        p.cipher_suites.retain(|suite| match suite {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => {
                let name = format!("{:?}", suite.suite());
                s.cipher_suites.contains(&name)
            }
        });
    }
    Arc::new(p)
}

fn show(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Every certificate in a PEM file; none is an error.
fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", show(path)))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key}: {} is not a PEM certificate file: {e}", show(path)))?;
    if certs.is_empty() {
        return Err(format!("{key}: {} holds no PEM certificate", show(path)));
    }
    for c in &certs {
        check_dates(key, path, c)?;
    }
    Ok(certs)
}

/// A certificate past its end date cannot serve: say so at start.
fn check_dates(key: &str, path: &Path, cert: &CertificateDer<'_>) -> Result<(), String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).map_err(|e| {
        format!(
            "{key}: {} holds a certificate that does not parse: {e}",
            show(path)
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let end = c.validity().not_after;
    if end.timestamp() < now {
        return Err(format!(
            "{key}: the certificate in {} expired on {end}",
            show(path)
        ));
    }
    Ok(())
}

fn roots(s: &TlsSettings) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    let mut files = Vec::new();
    if let Some(f) = &s.ca_file {
        files.push(("ca_file", f.clone()));
    }
    if let Some(dir) = &s.ca_path {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("ca_path: cannot read {}: {e}", show(dir)))?;
        let mut in_dir: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        in_dir.sort();
        files.extend(in_dir.into_iter().map(|p| ("ca_path", p)));
    }
    for (key, f) in files {
        for c in read_certs(key, &f)? {
            store
                .add(c)
                .map_err(|e| format!("{key}: {} is not a usable CA certificate: {e}", show(&f)))?;
        }
    }
    Ok(Arc::new(store))
}

/// The agent's certificate chain and key, checked to belong together.
fn own_cert(
    s: &TlsSettings,
    provider: &CryptoProvider,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    let (Some(cert), Some(key)) = (&s.cert_file, &s.key_file) else {
        return Ok(None);
    };
    let chain = read_certs("cert_file", cert)?;
    let bytes =
        std::fs::read(key).map_err(|e| format!("key_file: cannot read {}: {e}", show(key)))?;
    let der = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("key_file: {} holds no PEM private key: {e}", show(key)))?;
    let signing = provider
        .key_provider
        .load_private_key(der.clone_key())
        .map_err(|e| format!("key_file: {} is not a usable private key: {e}", show(key)))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|_| {
            format!(
                "key_file: {} is not the key of the certificate in {}",
                show(key),
                show(cert)
            )
        })?;
    Ok(Some((chain, der)))
}

fn build(o: &TlsOptions) -> Result<Configs, String> {
    let s = &o.internal_rpc;
    let provider = provider(s);
    let versions = s.min_version.versions();
    let roots = if s.has_ca() { Some(roots(s)?) } else { None };
    let own = own_cert(s, &provider)?;
    let tls_err = |e: rustls::Error| format!("tls: {e}");

    let server_builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(tls_err)
    };
    let rpc_server = match &own {
        None => None,
        Some((chain, key)) => {
            let b = server_builder()?;
            let b = match (&roots, s.verify_incoming) {
                (Some(r), true) => b.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(r.clone(), provider.clone())
                        .build()
                        .map_err(|e| format!("tls: {e}"))?,
                ),
                _ => b.with_no_client_auth(),
            };
            let mut c = b
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("cert_file: {e}"))?;
            resumable(&mut c)?;
            Some(Arc::new(c))
        }
    };
    let alpn_server = match (&own, &roots) {
        (Some((chain, key)), Some(r)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(r.clone(), provider.clone())
                .build()
                .map_err(|e| format!("tls: {e}"))?;
            let mut c = server_builder()?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("cert_file: {e}"))?;
            c.alpn_protocols = ALPN_ALL.iter().map(|p| p.to_vec()).collect();
            resumable(&mut c)?;
            Some(Arc::new(c))
        }
        _ => None,
    };
    let client = |alpn: bool| -> Result<Option<Arc<ClientConfig>>, String> {
        let Some(r) = &roots else { return Ok(None) };
        let inner = WebPkiServerVerifier::builder_with_provider(r.clone(), provider.clone())
            .build()
            .map_err(|e| format!("tls: {e}"))?;
        // ALPN always verifies the name; RPC-TLS as the setting says.
        let expected = (alpn || o.verify_server_hostname).then(|| o.server_name());
        let verifier = Arc::new(ServerIdentity {
            inner,
            expected,
            ignore_sni: !alpn,
        });
        let b = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut c = match &own {
            Some((chain, key)) => b
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("cert_file: {e}"))?,
            None => b.with_no_client_auth(),
        };
        if alpn {
            c.alpn_protocols = ALPN_ALL.iter().map(|p| p.to_vec()).collect();
        }
        Ok(Some(Arc::new(c)))
    };
    Ok(Configs {
        rpc_server,
        alpn_server,
        client: client(false)?,
        alpn_client: client(true)?,
        https_server: https(&o.https)?,
    })
}

/// The HTTPS API's server configuration, if it has a certificate.
fn https(h: &TlsSettings) -> Result<Option<Arc<ServerConfig>>, String> {
    let provider = provider(h);
    let Some((chain, key)) = own_cert(h, &provider)? else {
        return Ok(None);
    };
    let b = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(h.min_version.versions())
        .map_err(|e| format!("tls: {e}"))?;
    let b = if h.verify_incoming {
        b.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(h)?, provider.clone())
                .build()
                .map_err(|e| format!("tls: {e}"))?,
        )
    } else {
        b.with_no_client_auth()
    };
    let mut c = b
        .with_single_cert(chain, key)
        .map_err(|e| format!("cert_file: {e}"))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    resumable(&mut c)?;
    Ok(Some(Arc::new(c)))
}

/// Session resumption for a server configuration: stateless tickets (TLS
/// 1.3 and 1.2) sealed under keys that ring's [`Ticketer`] draws at random
/// and rotates every 6 hours, so a client that has connected once resumes
/// without a certificate exchange or signature, and the server keeps no
/// memory per session (rustls's default, a stateful cache of 256 sessions,
/// forgets the oldest once 128 clients have connected after them; see the
/// test). Each configuration has its own ticketer: a ticket from the
/// RPC-TLS path, which may not ask for a client certificate, cannot resume
/// on the ALPN path, which always does; and a reload (SIGHUP) builds new
/// ones, so the sessions from before it are not resumed (one full
/// handshake each) and a CA taken out of the files does not live on in
/// them.
///
/// [`Ticketer`]: rustls::crypto::ring::Ticketer
fn resumable(c: &mut ServerConfig) -> Result<(), String> {
    c.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("tls: session tickets: {e}"))?;
    Ok(())
}

/// How an outbound connection judges the server: the chain always against
/// the CA; the name `expected` (`server.<dc>.<domain>`) when set, whatever
/// SNI was sent, else no name check (`verify_outgoing` without
/// `verify_server_hostname`, as Consul). On the ALPN path (`ignore_sni`
/// false) the SNI name must match too, as Consul's ALPN dialer checks the
/// node's name.
#[derive(Debug)]
struct ServerIdentity {
    inner: Arc<WebPkiServerVerifier>,
    expected: Option<String>,
    ignore_sni: bool,
}

fn name_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

impl ServerCertVerifier for ServerIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.ignore_sni {
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        }
        match &self.expected {
            Some(name) => {
                let name = ServerName::try_from(name.as_str())
                    .map_err(|_| rustls::Error::General(format!("bad server name {name}")))?;
                self.inner
                    .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
            }
            // The chain is checked before the name: a name error means the
            // chain was good.
            None => match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            ) {
                Err(e) if name_error(&e) => Ok(ServerCertVerified::assertion()),
                other => other,
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A handshake error in words an operator knows (unknown CA, wrong name,
/// expired, no client certificate), from what tokio-rustls returns.
pub fn describe(e: &std::io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    use rustls::Error as E;
    match tls {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "certificate from an unknown CA".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate for the wrong name".into()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate not valid for this use (extended key usage)".into()
            }
            other => format!("bad certificate: {other:?}"),
        },
        E::NoCertificatesPresented => "no client certificate".into(),
        E::NoApplicationProtocol => "no ALPN protocol in common".into(),
        E::AlertReceived(a) => format!("the peer refused the handshake ({a:?})"),
        other => other.to_string(),
    }
}

/// One log line per [`THROTTLE_PERIOD`] at most for each key (the callers
/// key by the peer, its IP address or node name, and the reason: a flood
/// of the same failure from one peer is one line; another peer or reason
/// gets its own); the lines left out are counted in the next one for that
/// key.
pub struct Throttle {
    reasons: Mutex<BTreeMap<String, Seen>>,
}

/// When a reason was last logged and how many lines were left out since.
struct Seen {
    at: std::time::Instant,
    dropped: u64,
}

/// How often a throttled line may repeat.
pub const THROTTLE_PERIOD: Duration = Duration::from_secs(10);
/// Reasons remembered at once; past it, a new reason waits for old ones
/// to age out (its lines are left out meanwhile).
pub const THROTTLE_REASONS_MAX: usize = 64;

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            reasons: Mutex::new(BTreeMap::new()),
        }
    }

    /// `Some(line)` to log now (with the count left out since the last
    /// one for `reason`), or `None` when the line is left out.
    pub fn allow(&self, reason: &str, line: String) -> Option<String> {
        let now = std::time::Instant::now();
        let mut reasons = self.reasons.lock().expect("not poisoned");
        if let Some(seen) = reasons.get_mut(reason) {
            if now.duration_since(seen.at) < THROTTLE_PERIOD {
                seen.dropped += 1;
                return None;
            }
            let n = std::mem::replace(
                seen,
                Seen {
                    at: now,
                    dropped: 0,
                },
            )
            .dropped;
            return Some(match n {
                0 => line,
                n => format!(
                    "{line} ({n} more like it in the last {}s)",
                    THROTTLE_PERIOD.as_secs()
                ),
            });
        }
        if reasons.len() >= THROTTLE_REASONS_MAX {
            reasons.retain(|_, s| now.duration_since(s.at) < THROTTLE_PERIOD);
            if reasons.len() >= THROTTLE_REASONS_MAX {
                return None;
            }
        }
        reasons.insert(
            reason.to_string(),
            Seen {
                at: now,
                dropped: 0,
            },
        );
        Some(line)
    }

    /// Log `line` at warn if it is its turn for `reason`.
    pub fn warn(&self, reason: &str, line: String) {
        if let Some(l) = self.allow(reason, line) {
            tracing::warn!("{l}");
        }
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_as_go_verifies_them() {
        assert!(name_matches("server.dc1.consul", "server.dc1.consul"));
        assert!(name_matches("Server.DC1.consul", "server.dc1.consul"));
        assert!(name_matches("*.dc1.consul", "server.dc1.consul"));
        assert!(!name_matches("*.consul", "server.dc1.consul"));
        assert!(!name_matches("server.dc2.consul", "server.dc1.consul"));
        assert!(!name_matches("client.dc1.consul", "server.dc1.consul"));
        assert!(!name_matches("s1.server.dc1.consul", "server.dc1.consul"));
    }

    #[test]
    fn versions_and_suites_parse_as_consuls_and_refuse_the_rest() {
        assert_eq!(TlsVersion::parse("TLSv1_2"), Ok(TlsVersion::Tls12));
        assert_eq!(TlsVersion::parse("tls13"), Ok(TlsVersion::Tls13));
        assert!(TlsVersion::parse("TLSv1_0")
            .unwrap_err()
            .contains("not supported"));
        assert!(TlsVersion::parse("ssl3").is_err());
        assert_eq!(
            parse_cipher_suites(
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
            ),
            Ok(vec![
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string(),
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256".to_string()
            ])
        );
        assert!(parse_cipher_suites("TLS_RSA_WITH_AES_128_CBC_SHA")
            .unwrap_err()
            .contains("unsupported cipher suite"));
        // Every name we accept is one the ring provider has.
        let p = rustls::crypto::ring::default_provider();
        for name in CIPHER_SUITES {
            assert!(
                p.cipher_suites
                    .iter()
                    .any(|s| format!("{:?}", s.suite()) == *name),
                "{name}"
            );
        }
    }

    #[test]
    fn a_throttled_line_is_logged_once_per_period_and_reason_with_a_count() {
        let t = Throttle::new();
        assert_eq!(t.allow("x", "a".into()), Some("a".into()));
        assert_eq!(t.allow("x", "b".into()), None);
        assert_eq!(t.allow("x", "c".into()), None);
        assert_eq!(t.allow("y", "other".into()), Some("other".into()));
        let past = std::time::Instant::now() - THROTTLE_PERIOD;
        t.reasons.lock().unwrap().get_mut("x").unwrap().at = past;
        assert_eq!(
            t.allow("x", "d".into()),
            Some("d (2 more like it in the last 10s)".into())
        );
        // At the limit of reasons, a new one waits until old ones age out.
        for i in 0..THROTTLE_REASONS_MAX {
            let _ = t.allow(&format!("r{i}"), String::new());
        }
        assert_eq!(t.allow("new", "n".into()), None);
        for s in t.reasons.lock().unwrap().values_mut() {
            s.at = past;
        }
        assert_eq!(t.allow("new", "n".into()), Some("n".into()));
        assert_eq!(t.reasons.lock().unwrap().len(), 1);
    }

    /// A CA, a server certificate for `server.dc1.consul` and its files
    /// in `dir`, as the options of a server with everything verified.
    fn pki_options(dir: &Path) -> TlsOptions {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![
            "server.dc1.consul".to_string(),
            "s1.server.dc1.consul".into(),
        ])
        .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let settings = TlsSettings {
            ca_file: Some(dir.join("ca.pem")),
            cert_file: Some(dir.join("cert.pem")),
            key_file: Some(dir.join("key.pem")),
            verify_incoming: true,
            verify_outgoing: true,
            ..TlsSettings::default()
        };
        TlsOptions {
            internal_rpc: settings.clone(),
            verify_server_hostname: true,
            https: settings,
            datacenter: "dc1".into(),
            domain: "consul".into(),
        }
    }

    /// One handshake in memory, then the server's first application bytes
    /// read by the client (under TLS 1.3 the tickets come after the
    /// handshake): how the client's connection was made.
    fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> rustls::HandshakeKind {
        use std::io::{Read, Write};
        let name = ServerName::try_from("s1.server.dc1.consul").unwrap();
        let mut c = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
        let mut wire = Vec::new();
        let mut pump = |c: &mut rustls::ClientConnection, s: &mut rustls::ServerConnection| {
            for _ in 0..10 {
                wire.clear();
                c.write_tls(&mut wire).unwrap();
                let mut r = &wire[..];
                while !r.is_empty() {
                    s.read_tls(&mut r).unwrap();
                }
                s.process_new_packets().unwrap();
                wire.clear();
                s.write_tls(&mut wire).unwrap();
                let mut r = &wire[..];
                while !r.is_empty() {
                    c.read_tls(&mut r).unwrap();
                }
                c.process_new_packets().unwrap();
            }
        };
        pump(&mut c, &mut s);
        assert!(!c.is_handshaking() && !s.is_handshaking());
        s.writer().write_all(b"hi").unwrap();
        pump(&mut c, &mut s);
        let mut got = [0u8; 2];
        c.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        assert_eq!(c.handshake_kind(), s.handshake_kind());
        c.handshake_kind().unwrap()
    }

    /// Issue 11, deliverable 10: a client resumes on every server
    /// configuration (RPC-TLS, ALPN, HTTPS), even after more clients than
    /// rustls's stateful session cache holds have connected since; a
    /// reload's new configurations do not resume the old sessions.
    #[test]
    fn a_client_resumes_after_many_others_and_not_across_a_reload() {
        let dir = std::env::temp_dir().join(format!("tern-tls-resume-{}", std::process::id()));
        let tls = Tls::load(&pki_options(&dir)).unwrap().unwrap();
        let configs = tls.configs();
        let alpn_client = configs.alpn_client.clone().unwrap();
        let rpc_client = configs.client.clone().unwrap();
        use rustls::HandshakeKind::{Full, Resumed};
        for (client, server) in [
            (&rpc_client, configs.rpc_server.as_ref().unwrap()),
            (&alpn_client, configs.alpn_server.as_ref().unwrap()),
            (&rpc_client, configs.https_server.as_ref().unwrap()),
        ] {
            assert_eq!(handshake(client, server), Full);
            assert_eq!(handshake(client, server), Resumed);
            // 200 other clients (each a fresh configuration, so its own
            // cache): 400 tickets issued since ours.
            for _ in 0..200 {
                let mut fresh = (**client).clone();
                fresh.resumption = rustls::client::Resumption::in_memory_sessions(4);
                let fresh = Arc::new(fresh);
                assert_eq!(handshake(&fresh, server), Full);
            }
            assert_eq!(handshake(client, server), Resumed);
        }
        // A reload: new tickets keys, so the old sessions are not resumed.
        tls.reload().unwrap();
        let fresh = tls.configs();
        let server = fresh.alpn_server.as_ref().unwrap();
        assert_eq!(handshake(&alpn_client, server), Full);
        // ... while the client config from before still works (and now
        // resumes with the new one).
        assert_eq!(handshake(&alpn_client, server), Resumed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_sni_names_the_node_and_the_check_names_the_datacenter() {
        let o = TlsOptions {
            datacenter: "dc1".into(),
            domain: "consul".into(),
            ..TlsOptions::default()
        };
        assert_eq!(o.server_sni("s1"), "s1.server.dc1.consul");
        assert_eq!(o.server_sni(""), "server.dc1.consul");
        assert_eq!(o.server_name(), "server.dc1.consul");
    }
}
