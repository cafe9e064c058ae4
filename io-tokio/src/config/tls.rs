//! Consul's TLS keys: the `tls { defaults internal_rpc https grpc }` block
//! (Consul 1.12 on) and the older top-level keys many configs still use
//! (`ca_file`, `verify_incoming`, `verify_server_hostname`, ...).
//!
//! Precedence, as Consul's builder applies it: a section's own key wins over
//! `tls.defaults`, which wins over the old top-level key; the old
//! `verify_incoming_rpc` / `verify_incoming_https` fill the section's
//! `verify_incoming`, and the old `verify_server_hostname` fills
//! `tls.internal_rpc.verify_server_hostname`.

use std::path::PathBuf;

use serde_json::Value;

use super::source::{boolean, string};
use crate::tls::{parse_cipher_suites, TlsOptions, TlsSettings, TlsVersion};

/// One section's keys as one source gives them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Section {
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify_incoming: Option<bool>,
    pub verify_outgoing: Option<bool>,
    pub min_version: Option<TlsVersion>,
    pub cipher_suites: Option<Vec<String>>,
    /// Only `internal_rpc` (and the old top-level key) has it.
    pub verify_server_hostname: Option<bool>,
}

fn over<T>(a: &mut Option<T>, b: Option<T>) {
    if b.is_some() {
        *a = b;
    }
}

impl Section {
    fn merge(&mut self, later: Section) {
        over(&mut self.ca_file, later.ca_file);
        over(&mut self.ca_path, later.ca_path);
        over(&mut self.cert_file, later.cert_file);
        over(&mut self.key_file, later.key_file);
        over(&mut self.verify_incoming, later.verify_incoming);
        over(&mut self.verify_outgoing, later.verify_outgoing);
        over(&mut self.min_version, later.min_version);
        over(&mut self.cipher_suites, later.cipher_suites);
        over(
            &mut self.verify_server_hostname,
            later.verify_server_hostname,
        );
    }

    /// `self` where it says, else `under`.
    fn or(&self, under: &Section) -> Section {
        let mut s = under.clone();
        s.merge(self.clone());
        s
    }

    /// Set `key` (the name inside a section); an unknown key is `Ok(false)`.
    fn set(&mut self, key: &str, v: &Value, hostname: bool) -> Result<bool, String> {
        let path = |v: &Value| string(v).map(PathBuf::from);
        match key {
            "ca_file" => self.ca_file = Some(path(v)?),
            "ca_path" => self.ca_path = Some(path(v)?),
            "cert_file" => self.cert_file = Some(path(v)?),
            "key_file" => self.key_file = Some(path(v)?),
            "verify_incoming" => self.verify_incoming = Some(boolean(v)?),
            "verify_outgoing" => self.verify_outgoing = Some(boolean(v)?),
            "tls_min_version" => self.min_version = Some(TlsVersion::parse(&string(v)?)?),
            "tls_cipher_suites" => self.cipher_suites = Some(parse_cipher_suites(&string(v)?)?),
            "verify_server_hostname" if hostname => self.verify_server_hostname = Some(boolean(v)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn settings(&self) -> TlsSettings {
        let empty = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        TlsSettings {
            ca_file: empty(&self.ca_file),
            ca_path: empty(&self.ca_path),
            cert_file: empty(&self.cert_file),
            key_file: empty(&self.key_file),
            verify_incoming: self.verify_incoming.unwrap_or(false),
            verify_outgoing: self.verify_outgoing.unwrap_or(false),
            min_version: self.min_version.unwrap_or_default(),
            cipher_suites: self.cipher_suites.clone().unwrap_or_default(),
        }
    }
}

/// Every TLS key one source gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TlsLayer {
    /// The old top-level keys (`ca_file`, `verify_incoming`, ...).
    pub legacy: Section,
    pub legacy_verify_incoming_rpc: Option<bool>,
    pub legacy_verify_incoming_https: Option<bool>,
    pub defaults: Section,
    pub internal_rpc: Section,
    pub https: Section,
}

/// The old top-level keys this module reads.
const LEGACY: &[&str] = &[
    "ca_file",
    "ca_path",
    "cert_file",
    "key_file",
    "verify_incoming",
    "verify_outgoing",
    "verify_server_hostname",
    "tls_min_version",
    "tls_cipher_suites",
    "verify_incoming_rpc",
    "verify_incoming_https",
];

impl TlsLayer {
    pub fn merge(&mut self, later: TlsLayer) {
        self.legacy.merge(later.legacy);
        over(
            &mut self.legacy_verify_incoming_rpc,
            later.legacy_verify_incoming_rpc,
        );
        over(
            &mut self.legacy_verify_incoming_https,
            later.legacy_verify_incoming_https,
        );
        self.defaults.merge(later.defaults);
        self.internal_rpc.merge(later.internal_rpc);
        self.https.merge(later.https);
    }

    /// Set a TLS key: an old top-level key or `tls.<section>.<key>`.
    /// `Ok(false)`: not a key this module implements.
    pub fn set(&mut self, key: &str, v: &Value) -> Result<bool, String> {
        if LEGACY.contains(&key) {
            return match key {
                "verify_incoming_rpc" => {
                    self.legacy_verify_incoming_rpc = Some(boolean(v)?);
                    Ok(true)
                }
                "verify_incoming_https" => {
                    self.legacy_verify_incoming_https = Some(boolean(v)?);
                    Ok(true)
                }
                k => self.legacy.set(k, v, true),
            };
        }
        let Some(rest) = key.strip_prefix("tls.") else {
            return Ok(false);
        };
        match rest.split_once('.') {
            Some(("defaults", k)) => self.defaults.set(k, v, false),
            Some(("internal_rpc", k)) => self.internal_rpc.set(k, v, true),
            Some(("https", k)) => self.https.set(k, v, false),
            _ => Ok(false),
        }
    }

    /// The settings in force, with `dc` and `domain` for the names.
    pub fn resolve(&self, datacenter: &str, domain: &str) -> TlsOptions {
        let defaults = self.defaults.or(&self.legacy);
        let mut rpc = self.internal_rpc.or(&defaults);
        if self.internal_rpc.verify_incoming.is_none() && self.defaults.verify_incoming.is_none() {
            over(&mut rpc.verify_incoming, self.legacy_verify_incoming_rpc);
        }
        let mut https = self.https.or(&defaults);
        if self.https.verify_incoming.is_none() && self.defaults.verify_incoming.is_none() {
            over(
                &mut https.verify_incoming,
                self.legacy_verify_incoming_https,
            );
        }
        TlsOptions {
            verify_server_hostname: rpc.verify_server_hostname.unwrap_or(false),
            internal_rpc: rpc.settings(),
            https: https.settings(),
            datacenter: datacenter.to_string(),
            domain: domain.trim_end_matches('.').to_string(),
        }
    }
}

/// Whether `key` (`tls.grpc.ca_file`) names a key of Consul's `tls` block.
pub(crate) fn is_tls_block_key(key: &str) -> bool {
    key.strip_prefix("tls.")
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(section, _)| {
            matches!(section, "defaults" | "internal_rpc" | "https" | "grpc")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(pairs: &[(&str, Value)]) -> TlsLayer {
        let mut l = TlsLayer::default();
        for (k, v) in pairs {
            assert!(l.set(k, v).unwrap(), "{k}");
        }
        l
    }

    /// Consul's builder: a section beats defaults, defaults beat the old
    /// top-level keys, and the old keys still work alone.
    #[test]
    fn a_section_beats_defaults_which_beat_the_old_keys() {
        let old = layer(&[
            ("ca_file", json!("/old/ca.pem")),
            ("verify_incoming", json!(true)),
            ("verify_server_hostname", json!(true)),
            ("tls_min_version", json!("tls13")),
        ]);
        let o = old.resolve("dc1", "consul.");
        assert_eq!(o.internal_rpc.ca_file, Some("/old/ca.pem".into()));
        assert!(o.internal_rpc.verify_incoming && o.https.verify_incoming);
        assert!(o.verify_server_hostname);
        assert_eq!(o.internal_rpc.min_version, TlsVersion::Tls13);
        assert_eq!(o.domain, "consul");

        let mut l = old.clone();
        l.merge(layer(&[
            ("tls.defaults.ca_file", json!("/new/ca.pem")),
            ("tls.defaults.verify_incoming", json!(false)),
            ("tls.internal_rpc.verify_incoming", json!(true)),
            ("tls.https.ca_file", json!("/https/ca.pem")),
        ]));
        let o = l.resolve("dc1", "consul");
        assert_eq!(o.internal_rpc.ca_file, Some("/new/ca.pem".into()));
        assert_eq!(o.https.ca_file, Some("/https/ca.pem".into()));
        assert!(o.internal_rpc.verify_incoming);
        assert!(!o.https.verify_incoming);
        assert!(
            o.verify_server_hostname,
            "the old key still fills internal_rpc"
        );

        // verify_incoming_rpc only fills internal_rpc, and only when
        // nothing newer says.
        let o = layer(&[("verify_incoming_rpc", json!(true))]).resolve("dc1", "consul");
        assert!(o.internal_rpc.verify_incoming && !o.https.verify_incoming);
    }

    #[test]
    fn bad_values_and_misplaced_keys_are_refused() {
        let mut l = TlsLayer::default();
        assert!(l
            .set("tls.defaults.verify_incoming", &json!("yes"))
            .is_err());
        assert!(l
            .set("tls.defaults.tls_min_version", &json!("TLSv1_1"))
            .is_err());
        // verify_server_hostname belongs to internal_rpc only.
        assert_eq!(
            l.set("tls.defaults.verify_server_hostname", &json!(true)),
            Ok(false)
        );
        assert_eq!(l.set("tls.grpc.ca_file", &json!("x")), Ok(false));
        assert!(is_tls_block_key("tls.grpc.ca_file"));
        assert!(!is_tls_block_key("tls.nope.ca_file"));
    }
}
