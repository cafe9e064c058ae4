//! A small blocking client for the agent's HTTP API (HTTP or HTTPS, ureq;
//! the TLS settings are read in `client_tls.rs`).

use std::time::Duration;

use super::flags::Parsed;

/// Largest response body read (a recursive KV listing can be large).
const RESPONSE_BYTES_MAX: u64 = 256 << 20;
/// `leave` waits for the drain (Consul's `leave_drain_time` is 5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Talks to one agent, with the flags every client command shares.
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
    /// For HTTPS: the TLS settings and a pinned name, kept to make agents
    /// with other timeouts.
    tls: Option<ureq::tls::TlsConfig>,
    pinned: Option<super::client_tls::Pinned>,
    /// `http://host:port`
    base: String,
    datacenter: Option<String>,
    token: Option<String>,
    stale: bool,
}

/// An answer of any status.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// `X-Consul-Index`, when the answer has one (blocking queries).
    pub index: Option<u64>,
}

impl Reply {
    /// The body of a 2xx answer; otherwise the Go API client's error,
    /// `Unexpected response code: 500 (No cluster leader)`.
    pub fn success(self) -> Result<Vec<u8>, String> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            Err(format!(
                "Unexpected response code: {} ({})",
                self.status,
                one_line(&String::from_utf8_lossy(&self.body))
            ))
        }
    }
}

/// Squeeze a message onto one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Client {
    /// From `-http-addr` (or the environment), `-datacenter`, `-token`
    /// (or `CONSUL_HTTP_TOKEN`) and `-stale`.
    pub fn from_flags(p: &Parsed) -> Result<Client, String> {
        let addr = crate::config::http_addr_from_env(p.last("http-addr"));
        let endpoint = super::client_tls::endpoint(p, &addr, &|n| std::env::var(n).ok())?;
        let token = p
            .last("token")
            .map(str::to_string)
            .or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok())
            .filter(|t| !t.is_empty());
        Ok(Client {
            agent: make_agent(REQUEST_TIMEOUT, &endpoint.tls, &endpoint.pinned),
            tls: endpoint.tls,
            pinned: endpoint.pinned,
            base: endpoint.base,
            datacenter: p.last("datacenter").map(str::to_string),
            token,
            stale: p.bool("stale")?,
        })
    }

    /// The same client with a whole-request timeout of `timeout` (a large
    /// snapshot takes longer than the default minute).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.agent = make_agent(timeout, &self.tls, &self.pinned);
        self
    }

    pub fn get(&self, path: &str, query: &[(&str, Option<&str>)]) -> Result<Reply, String> {
        let mut query = query.to_vec();
        if self.stale {
            query.push(("stale", None));
        }
        self.send("GET", path, &query, None)
    }

    /// `get` with a larger response limit (`snapshot save`).
    pub fn get_large(
        &self,
        path: &str,
        query: &[(&str, Option<&str>)],
        limit: u64,
    ) -> Result<Reply, String> {
        let mut query = query.to_vec();
        if self.stale {
            query.push(("stale", None));
        }
        self.send_limited("GET", path, &query, None, limit)
    }

    pub fn put(
        &self,
        path: &str,
        query: &[(&str, Option<&str>)],
        body: &[u8],
    ) -> Result<Reply, String> {
        self.send("PUT", path, query, Some(body))
    }

    pub fn post(&self, path: &str, query: &[(&str, Option<&str>)]) -> Result<Reply, String> {
        self.send("POST", path, query, Some(&[]))
    }

    pub fn delete(&self, path: &str, query: &[(&str, Option<&str>)]) -> Result<Reply, String> {
        self.send("DELETE", path, query, None)
    }

    /// A request with a body for any method (`keyring`'s POST, PUT and
    /// DELETE all carry `{"Key": ...}`).
    pub fn with_body(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, String> {
        self.send(method, path, &[], Some(body))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, Option<&str>)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        self.send_limited(method, path, query, body, RESPONSE_BYTES_MAX)
    }

    fn send_limited(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, Option<&str>)],
        body: Option<&[u8]>,
        limit: u64,
    ) -> Result<Reply, String> {
        let mut pairs: Vec<(&str, Option<&str>)> = query.to_vec();
        if let Some(dc) = &self.datacenter {
            pairs.push(("dc", Some(dc)));
        }
        let mut url = format!("{}{path}", self.base);
        for (i, (k, v)) in pairs.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            if let Some(v) = v {
                url.push('=');
                url.push_str(&encode(v, false));
            }
        }
        let token = self.token.as_deref();
        let result = match (method, body) {
            ("PUT", body) => with_token(self.agent.put(&url), token).send(body.unwrap_or(&[])),
            ("POST", body) => with_token(self.agent.post(&url), token).send(body.unwrap_or(&[])),
            ("DELETE", Some(body)) => with_token(self.agent.delete(&url), token)
                .force_send_body()
                .send(body),
            ("DELETE", None) => with_token(self.agent.delete(&url), token).call(),
            _ => with_token(self.agent.get(&url), token).call(),
        };
        // Go's client error reads `Get "http://...": dial tcp ...`.
        let failed = |err: ureq::Error| {
            let verb = method[..1].to_string() + &method[1..].to_ascii_lowercase();
            format!("{verb} {url:?}: {}", one_line(&err.to_string()))
        };
        let mut response = result.map_err(failed)?;
        let status = response.status().as_u16();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(failed)?;
        Ok(Reply {
            status,
            body,
            index,
        })
    }
}

/// A ureq agent with Tern's settings: no proxy from the environment (the
/// agent is local or named directly), `timeout` for the whole request, and
/// the HTTPS settings if any.
fn make_agent(
    timeout: Duration,
    tls: &Option<ureq::tls::TlsConfig>,
    pinned: &Option<super::client_tls::Pinned>,
) -> ureq::Agent {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .proxy(None);
    if let Some(t) = tls {
        b = b.tls_config(t.clone());
    }
    let config = b.build();
    match pinned {
        Some(p) => ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            p.clone(),
        ),
        None => ureq::Agent::new_with_config(config),
    }
}

fn with_token<B>(r: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(t) => r.header("X-Consul-Token", t),
        None => r,
    }
}

/// Percent-encode for a URL path (`keep_slash`) or a query value.
pub(crate) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 (KV values in JSON); padding optional.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Standard base64 with padding, as Go's `base64.StdEncoding` writes it.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard base64 as Go's `base64.StdEncoding` reads it: padding required,
/// any other character an error naming its offset.
pub(crate) fn base64_decode_strict(text: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_consul_values() {
        assert_eq!(base64_decode("dGVzdA==").unwrap(), b"test");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn encodes_keys_and_query_values() {
        assert_eq!(encode("a b/c?d", true), "a%20b/c%3Fd");
        assert_eq!(encode("10.0.0.1:8300", false), "10.0.0.1%3A8300");
    }
}
