//! HTTPS for the client commands, as Consul's API client reads its
//! settings: `-ca-file`, `-ca-path`, `-client-cert`, `-client-key`,
//! `-tls-server-name` flags, else the `TERN_` or `CONSUL_` environment
//! (`CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`,
//! `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL`,
//! `CONSUL_HTTP_SSL_VERIFY`), and `https://` in the address.

use std::net::SocketAddr;
use std::path::Path;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};

use super::flags::Parsed;

/// The flags every client command takes for HTTPS.
pub(crate) const TLS_FLAGS: [super::flags::Spec; 5] = [
    super::flags::value("ca-file"),
    super::flags::value("ca-path"),
    super::flags::value("client-cert"),
    super::flags::value("client-key"),
    super::flags::value("tls-server-name"),
];

/// A flag, else `TERN_<env>`, else `CONSUL_<env>`; empty is unset.
fn setting(
    p: &Parsed,
    flag: &str,
    env: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    p.last(flag)
        .map(str::to_string)
        .or_else(|| read(&format!("TERN_{env}")))
        .or_else(|| read(&format!("CONSUL_{env}")))
        .filter(|v| !v.trim().is_empty())
}

/// How a client command reaches the agent.
pub(crate) struct Endpoint {
    /// `http://host:port` or `https://host:port` (with `-tls-server-name`,
    /// the host is that name, resolved to the address given).
    pub base: String,
    pub tls: Option<TlsConfig>,
    /// With `-tls-server-name`: that name is the address's.
    pub pinned: Option<Pinned>,
}

/// Resolves one host name to one address; every other name as usual.
#[derive(Debug, Clone)]
pub(crate) struct Pinned {
    host: String,
    to: SocketAddr,
    other: std::sync::Arc<DefaultResolver>,
}

impl Resolver for Pinned {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if uri.host() == Some(self.host.as_str()) {
            let mut out = self.empty();
            out.push(self.to);
            return Ok(out);
        }
        self.other.resolve(uri, config, timeout)
    }
}

/// Read the HTTPS settings for `addr` (what `-http-addr` or the
/// environment gave, `https://` and `http://` allowed).
pub(crate) fn endpoint(
    p: &Parsed,
    addr: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Endpoint, String> {
    let ssl = setting(p, "", "HTTP_SSL", read)
        .is_some_and(|v| crate::config::parse_bool(v.trim()) == Some(true));
    let (https, addr) = match addr.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "-http-addr: unknown scheme {scheme:?} (http:// or https://)"
            ))
        }
        None => (ssl, addr),
    };
    if !https {
        return Ok(Endpoint {
            base: format!("http://{addr}"),
            tls: None,
            pinned: None,
        });
    }
    let mut roots = Vec::new();
    if let Some(f) = setting(p, "ca-file", "CACERT", read) {
        roots.extend(read_certs("-ca-file", Path::new(&f))?);
    }
    if let Some(d) = setting(p, "ca-path", "CAPATH", read) {
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| format!("-ca-path: cannot read {d:?}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            roots.extend(read_certs("-ca-path", &f)?);
        }
    }
    let cert = setting(p, "client-cert", "CLIENT_CERT", read);
    let key = setting(p, "client-key", "CLIENT_KEY", read);
    let client = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let chain = read_certs("-client-cert", Path::new(&c))?;
            let bytes =
                std::fs::read(&k).map_err(|e| format!("-client-key: cannot read {k:?}: {e}"))?;
            let key = PrivateKey::from_pem(&bytes)
                .map_err(|e| format!("-client-key: {k:?} holds no PEM private key: {e}"))?;
            Some(ClientCert::new_with_certs(&chain, key))
        }
        _ => return Err("-client-cert and -client-key: give both or neither".into()),
    };
    let verify = setting(p, "", "HTTP_SSL_VERIFY", read)
        .is_none_or(|v| crate::config::parse_bool(v.trim()) != Some(false));
    let mut b = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .client_cert(client)
        .disable_verification(!verify);
    if !roots.is_empty() {
        b = b.root_certs(RootCerts::new_with_certs(&roots));
    }
    let (base, pinned) = match setting(p, "tls-server-name", "TLS_SERVER_NAME", read) {
        None => (format!("https://{addr}"), None),
        Some(name) => {
            let to: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
                .map_err(|e| format!("-http-addr: cannot resolve {addr:?}: {e}"))?
                .next()
                .ok_or_else(|| format!("-http-addr: no address for {addr:?}"))?;
            (
                format!("https://{name}:{}", to.port()),
                Some(Pinned {
                    host: name,
                    to,
                    other: Default::default(),
                }),
            )
        }
    };
    Ok(Endpoint {
        base,
        tls: Some(b.build()),
        pinned,
    })
}

fn read_certs(flag: &str, path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| format!("{flag}: cannot read {path:?}: {e}"))?;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{flag}: {path:?} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{flag}: {path:?} holds no PEM certificate"));
    }
    Ok(certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect())
}
