//! One source of settings (a config file, an `-hcl` fragment, the flags), read
//! with Consul's key names, and how later sources override earlier ones.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tern_core::{Duration, NodeId};

use super::duration;

/// The key `-node-meta` sets: one `key:value` pair (not a config file key).
pub(crate) const NODE_META_FLAG_KEY: &str = "-node-meta";

/// The settings one source gives; `None` means "this source does not say".
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Layer {
    pub datacenter: Option<String>,
    pub node_name: Option<String>,
    pub node_id: Option<NodeId>,
    pub server: Option<bool>,
    pub bootstrap_expect: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub bind_addr: Option<IpAddr>,
    pub advertise_addr: Option<IpAddr>,
    pub client_addr: Option<IpAddr>,
    /// Lists append across sources, as in Consul.
    pub retry_join: Vec<String>,
    pub retry_join_wan: Vec<String>,
    pub start_join: Vec<String>,
    pub start_join_wan: Vec<String>,
    pub retry_interval: Option<Duration>,
    pub retry_interval_wan: Option<Duration>,
    pub retry_max: Option<u64>,
    pub retry_max_wan: Option<u64>,
    pub http_port: Option<u16>,
    /// The HTTPS API's port; -1 (Consul's default) turns it off.
    pub https_port: Option<i32>,
    pub server_port: Option<u16>,
    pub serf_lan_port: Option<u16>,
    /// `-1` disables the WAN pool (Consul's `ports.serf_wan = -1`).
    pub serf_wan_port: Option<i32>,
    pub raft_multiplier: Option<u64>,
    pub rpc_hold_timeout: Option<Duration>,
    pub leave_drain_time: Option<Duration>,
    pub raft_snapshot_threshold: Option<u64>,
    pub raft_snapshot_interval: Option<Duration>,
    pub raft_trailing_logs: Option<u64>,
    pub log_level: Option<String>,
    pub log_json: Option<bool>,
    pub log_file: Option<PathBuf>,
    pub log_rotate_bytes: Option<u64>,
    pub log_rotate_duration: Option<Duration>,
    /// -1 keeps no rotated file, 0 keeps them all (Consul's meaning).
    pub log_rotate_max_files: Option<i64>,
    /// A warning per Consul key this source set that Tern does not
    /// implement (ignored, not refused); they append across sources.
    pub unsupported: Vec<String>,
    /// The `autopilot { ... }` stanza.
    pub autopilot: AutopilotLayer,
    /// Consul's `domain` (the names in TLS certificates; `consul`).
    pub domain: Option<String>,
    /// The `tls { ... }` block and the old top-level TLS keys.
    pub tls: super::tls::TlsLayer,
    /// `service`/`services` and `check`/`checks` definitions, in the HTTP
    /// API's JSON (`config/services.rs`); they append across sources.
    pub services: Vec<Value>,
    pub checks: Vec<Value>,
    /// Gossip encryption: `encrypt` (base64 of a 16, 24 or 32-byte key),
    /// `encrypt_verify_incoming`, `encrypt_verify_outgoing`.
    pub encrypt: Option<String>,
    pub encrypt_verify_incoming: Option<bool>,
    pub encrypt_verify_outgoing: Option<bool>,
    /// `limits { rpc_max_conns_per_client http_max_conns_per_client
    /// https_handshake_timeout }`.
    pub rpc_max_conns_per_client: Option<u64>,
    pub http_max_conns_per_client: Option<u64>,
    pub https_handshake_timeout: Option<Duration>,
    /// `node_meta { key = "value" }` and `-node-meta key:value`; pairs
    /// merge across sources, a later value for a key wins.
    pub node_meta: std::collections::BTreeMap<String, String>,
}

/// Consul's `autopilot { ... }` keys (agent/config/config.go `Autopilot`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AutopilotLayer {
    pub cleanup_dead_servers: Option<bool>,
    pub last_contact_threshold: Option<Duration>,
    pub max_trailing_logs: Option<u64>,
    pub min_quorum: Option<u64>,
    pub server_stabilization_time: Option<Duration>,
    pub redundancy_zone_tag: Option<String>,
    pub disable_upgrade_migration: Option<bool>,
    pub upgrade_version_tag: Option<String>,
}

impl Layer {
    /// Put `later` on top of `self`: its scalars win, its lists append.
    pub fn merge(&mut self, later: Layer) {
        fn over<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        over(&mut self.datacenter, later.datacenter);
        over(&mut self.node_name, later.node_name);
        over(&mut self.node_id, later.node_id);
        over(&mut self.server, later.server);
        over(&mut self.bootstrap_expect, later.bootstrap_expect);
        over(&mut self.data_dir, later.data_dir);
        over(&mut self.bind_addr, later.bind_addr);
        over(&mut self.advertise_addr, later.advertise_addr);
        over(&mut self.client_addr, later.client_addr);
        self.retry_join.extend(later.retry_join);
        self.retry_join_wan.extend(later.retry_join_wan);
        self.start_join.extend(later.start_join);
        self.start_join_wan.extend(later.start_join_wan);
        over(&mut self.retry_interval, later.retry_interval);
        over(&mut self.retry_interval_wan, later.retry_interval_wan);
        over(&mut self.retry_max, later.retry_max);
        over(&mut self.retry_max_wan, later.retry_max_wan);
        over(&mut self.http_port, later.http_port);
        over(&mut self.https_port, later.https_port);
        over(&mut self.server_port, later.server_port);
        over(&mut self.serf_lan_port, later.serf_lan_port);
        over(&mut self.serf_wan_port, later.serf_wan_port);
        over(&mut self.raft_multiplier, later.raft_multiplier);
        over(&mut self.rpc_hold_timeout, later.rpc_hold_timeout);
        over(&mut self.leave_drain_time, later.leave_drain_time);
        over(
            &mut self.raft_snapshot_threshold,
            later.raft_snapshot_threshold,
        );
        over(&mut self.raft_trailing_logs, later.raft_trailing_logs);
        over(
            &mut self.raft_snapshot_interval,
            later.raft_snapshot_interval,
        );
        over(&mut self.log_level, later.log_level);
        over(&mut self.log_json, later.log_json);
        over(&mut self.log_file, later.log_file);
        over(&mut self.log_rotate_bytes, later.log_rotate_bytes);
        over(&mut self.log_rotate_duration, later.log_rotate_duration);
        over(&mut self.log_rotate_max_files, later.log_rotate_max_files);
        self.unsupported.extend(later.unsupported);
        self.services.extend(later.services);
        self.checks.extend(later.checks);
        let (a, b) = (&mut self.autopilot, later.autopilot);
        over(&mut a.cleanup_dead_servers, b.cleanup_dead_servers);
        over(&mut a.last_contact_threshold, b.last_contact_threshold);
        over(&mut a.max_trailing_logs, b.max_trailing_logs);
        over(&mut a.min_quorum, b.min_quorum);
        over(
            &mut a.server_stabilization_time,
            b.server_stabilization_time,
        );
        over(&mut a.redundancy_zone_tag, b.redundancy_zone_tag);
        over(
            &mut a.disable_upgrade_migration,
            b.disable_upgrade_migration,
        );
        over(&mut a.upgrade_version_tag, b.upgrade_version_tag);
        over(&mut self.encrypt, later.encrypt);
        over(
            &mut self.encrypt_verify_incoming,
            later.encrypt_verify_incoming,
        );
        over(
            &mut self.encrypt_verify_outgoing,
            later.encrypt_verify_outgoing,
        );
        over(
            &mut self.rpc_max_conns_per_client,
            later.rpc_max_conns_per_client,
        );
        over(
            &mut self.http_max_conns_per_client,
            later.http_max_conns_per_client,
        );
        over(
            &mut self.https_handshake_timeout,
            later.https_handshake_timeout,
        );
        over(&mut self.domain, later.domain);
        self.node_meta.extend(later.node_meta);
        self.tls.merge(later.tls);
    }

    /// Set the setting at Consul key path `key` (`ports.http`) from `v`.
    /// `name` is what an error calls it: the key, or the flag it came from.
    /// An unknown key is `Ok(false)`.
    pub fn set(&mut self, key: &str, v: &Value, name: &str) -> Result<bool, String> {
        let e = |msg: String| format!("{name}: {msg}");
        match key {
            "datacenter" => self.datacenter = Some(string(v).map_err(e)?),
            "node_name" => self.node_name = Some(string(v).map_err(e)?),
            "node_id" => self.node_id = Some(node_id(v).map_err(e)?),
            "server" => self.server = Some(boolean(v).map_err(e)?),
            "bootstrap_expect" => self.bootstrap_expect = Some(whole(v).map_err(e)? as usize),
            "data_dir" => self.data_dir = Some(PathBuf::from(string(v).map_err(e)?)),
            "bind_addr" => self.bind_addr = Some(ip(v).map_err(e)?),
            "advertise_addr" => self.advertise_addr = Some(ip(v).map_err(e)?),
            "client_addr" => self.client_addr = Some(ip(v).map_err(e)?),
            "retry_join" => self.retry_join.extend(strings(v).map_err(e)?),
            "retry_join_wan" => self.retry_join_wan.extend(strings(v).map_err(e)?),
            "start_join" => self.start_join.extend(strings(v).map_err(e)?),
            "start_join_wan" => self.start_join_wan.extend(strings(v).map_err(e)?),
            "retry_interval" => self.retry_interval = Some(interval(v).map_err(e)?),
            "retry_interval_wan" => self.retry_interval_wan = Some(interval(v).map_err(e)?),
            "retry_max" => self.retry_max = Some(attempts(v).map_err(e)?),
            "retry_max_wan" => self.retry_max_wan = Some(attempts(v).map_err(e)?),
            "ports.http" => self.http_port = Some(port(v, 0).map_err(e)?),
            "ports.https" => self.https_port = Some(port_or_off(v).map_err(e)?),
            "ports.server" => self.server_port = Some(port(v, 1).map_err(e)?),
            "ports.serf_lan" => self.serf_lan_port = Some(port(v, 1).map_err(e)?),
            "ports.serf_wan" => self.serf_wan_port = Some(port_or_off(v).map_err(e)?),
            "performance.raft_multiplier" => self.raft_multiplier = Some(multiplier(v).map_err(e)?),
            "performance.rpc_hold_timeout" => {
                self.rpc_hold_timeout = Some(go_duration(v).map_err(e)?)
            }
            "performance.leave_drain_time" => {
                self.leave_drain_time = Some(go_duration(v).map_err(e)?)
            }
            "raft_snapshot_threshold" => self.raft_snapshot_threshold = Some(whole(v).map_err(e)?),
            "raft_trailing_logs" => self.raft_trailing_logs = Some(whole(v).map_err(e)?),
            "raft_snapshot_interval" => {
                self.raft_snapshot_interval = Some(go_duration(v).map_err(e)?)
            }
            "log_level" => self.log_level = Some(log_level(v).map_err(e)?),
            "log_json" => self.log_json = Some(boolean(v).map_err(e)?),
            "log_file" => self.log_file = Some(PathBuf::from(string(v).map_err(e)?)),
            "log_rotate_bytes" => self.log_rotate_bytes = Some(whole(v).map_err(e)?),
            "log_rotate_duration" => self.log_rotate_duration = Some(interval(v).map_err(e)?),
            "log_rotate_max_files" => self.log_rotate_max_files = Some(max_files(v).map_err(e)?),
            "autopilot.cleanup_dead_servers" => {
                self.autopilot.cleanup_dead_servers = Some(boolean(v).map_err(e)?)
            }
            "autopilot.last_contact_threshold" => {
                self.autopilot.last_contact_threshold = Some(go_duration(v).map_err(e)?)
            }
            "autopilot.max_trailing_logs" => {
                self.autopilot.max_trailing_logs = Some(whole(v).map_err(e)?)
            }
            "autopilot.min_quorum" => self.autopilot.min_quorum = Some(whole(v).map_err(e)?),
            "autopilot.server_stabilization_time" => {
                self.autopilot.server_stabilization_time = Some(go_duration(v).map_err(e)?)
            }
            "autopilot.redundancy_zone_tag" => {
                self.autopilot.redundancy_zone_tag = Some(string(v).map_err(e)?)
            }
            "autopilot.disable_upgrade_migration" => {
                self.autopilot.disable_upgrade_migration = Some(boolean(v).map_err(e)?)
            }
            "autopilot.upgrade_version_tag" => {
                self.autopilot.upgrade_version_tag = Some(string(v).map_err(e)?)
            }
            "encrypt" => self.encrypt = Some(string(v).map_err(e)?),
            "encrypt_verify_incoming" => {
                self.encrypt_verify_incoming = Some(boolean(v).map_err(e)?)
            }
            "encrypt_verify_outgoing" => {
                self.encrypt_verify_outgoing = Some(boolean(v).map_err(e)?)
            }
            "limits.rpc_max_conns_per_client" => {
                self.rpc_max_conns_per_client = Some(whole(v).map_err(e)?)
            }
            "limits.http_max_conns_per_client" => {
                self.http_max_conns_per_client = Some(whole(v).map_err(e)?)
            }
            "limits.https_handshake_timeout" => {
                self.https_handshake_timeout = Some(interval(v).map_err(e)?)
            }
            "domain" => self.domain = Some(string(v).map_err(e)?),
            "node_meta" => {
                let Value::Object(pairs) = v else {
                    return Err(e(format!("must be an object of strings, got {}", got(v))));
                };
                for (k, v) in pairs {
                    let v = string(v).map_err(|m| format!("{name}.{k}: {m}"))?;
                    self.node_meta.insert(k.clone(), v);
                }
            }
            // `-node-meta key:value` (Consul's `parseMetaPair`: split at the
            // first colon; no colon is an empty value).
            NODE_META_FLAG_KEY => {
                let pair = string(v).map_err(e)?;
                let (k, v) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
                self.node_meta.insert(k.to_owned(), v.to_owned());
            }
            k => return self.tls.set(k, v).map_err(e),
        }
        Ok(true)
    }

    /// Read a parsed config document (JSON or HCL turned into JSON values).
    pub fn from_document(doc: &Value) -> Result<Layer, String> {
        let Value::Object(top) = doc else {
            return Err(format!("the top level must be an object, got {}", got(doc)));
        };
        let mut layer = Layer::default();
        for (key, v) in top {
            match key.as_str() {
                "service" | "services" => {
                    for b in super::services::blocks(v) {
                        layer
                            .services
                            .push(super::services::service_to_api(&b, key)?);
                    }
                }
                "check" | "checks" => {
                    for b in super::services::blocks(v) {
                        layer.checks.push(super::services::check_to_api(&b, key)?);
                    }
                }
                "ports" | "performance" | "autopilot" | "limits" => {
                    for (inner, v) in block(v).map_err(|m| format!("{key}: {m}"))? {
                        let path = format!("{key}.{inner}");
                        layer.set_or_ignore(&path, &v)?;
                    }
                }
                "tls" => {
                    for (section, inner) in block(v).map_err(|m| format!("tls: {m}"))? {
                        let inner = block(&inner).map_err(|m| format!("tls.{section}: {m}"))?;
                        for (k, v) in inner {
                            layer.set_or_ignore(&format!("tls.{section}.{k}"), &v)?;
                        }
                    }
                }
                _ => layer.set_or_ignore(key, v)?,
            }
        }
        Ok(layer)
    }

    /// Set `key`; a key of Consul's configuration that Tern does not
    /// implement is recorded as ignored (its value unread), any other
    /// unknown key is an error.
    fn set_or_ignore(&mut self, key: &str, v: &Value) -> Result<(), String> {
        if self.set(key, v, key)? {
            return Ok(());
        }
        if super::consul_keys::is_consul_key(key) {
            let consequence = if super::consul_keys::is_security_key(key) {
                " (NOT enforced: Tern does not implement it yet)"
            } else {
                ""
            };
            self.unsupported.push(format!(
                "config: key {} is not supported by Tern; ignored{consequence}",
                quoted(key)
            ));
            return Ok(());
        }
        Err(format!("invalid config key {key}"))
    }
}

/// Read one config file, JSON or HCL by its extension. Errors are one line
/// and end with the file's path.
pub(crate) fn read_file(path: &Path, flag: &str) -> Result<Layer, String> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("hcl") => Format::Hcl,
        _ => {
            return Err(format!(
                "{flag}: {} must end in .json or .hcl",
                quoted(&path.display().to_string())
            ))
        }
    };
    let text = std::fs::read_to_string(path).map_err(|err| {
        format!(
            "{flag}: cannot read {}: {err}",
            quoted(&path.display().to_string())
        )
    })?;
    let mut layer = read_text(&text, format).map_err(|m| format!("{m} (in {})", path.display()))?;
    for w in &mut layer.unsupported {
        w.push_str(&format!(" (in {})", path.display()));
    }
    Ok(layer)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Hcl,
}

/// Parse config text into a layer.
pub(crate) fn read_text(text: &str, format: Format) -> Result<Layer, String> {
    let doc: Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?,
        Format::Hcl => {
            let body: hcl::Value = hcl::from_str(text).map_err(|err| match &err {
                hcl::Error::Parse(e) => format!(
                    "invalid HCL at line {}, column {}: {}",
                    e.location().line(),
                    e.location().column(),
                    one_line(&e.message())
                ),
                _ => format!("invalid HCL: {}", one_line(&err)),
            })?;
            serde_json::to_value(body).map_err(|err| format!("invalid HCL: {err}"))?
        }
    };
    Layer::from_document(&doc)
}

/// hcl-rs errors come with a source excerpt over several lines.
fn one_line(err: &dyn std::fmt::Display) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A block: one object, or several (a block written twice in HCL arrives as
/// an array) merged in order, later keys winning.
fn block(v: &Value) -> Result<Map<String, Value>, String> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        Value::Array(items) => {
            let mut merged = Map::new();
            for item in items {
                let Value::Object(m) = item else {
                    return Err(format!("must be a block, got {}", got(item)));
                };
                for (k, v) in m {
                    merged.insert(k.clone(), v.clone());
                }
            }
            Ok(merged)
        }
        _ => Err(format!("must be a block, got {}", got(v))),
    }
}

/// How a value is shown in an error: JSON, so a string is quoted.
pub(crate) fn got(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

pub(crate) fn quoted(s: &str) -> String {
    got(&Value::String(s.to_string()))
}

pub(super) fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(format!("must be a string, got {}", got(v))),
    }
}

fn strings(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(items
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()),
        _ => Err(format!("must be a list of strings, got {}", got(v))),
    }
}

/// Go's `strconv.ParseBool` words, as Consul's flags accept them.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

pub(super) fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_bool(s).ok_or(()),
        _ => Err(()),
    }
    .map_err(|()| format!("must be true or false, got {}", got(v)))
}

/// A whole number from a JSON/HCL number or a string of digits (flags).
fn whole_opt(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn whole(v: &Value) -> Result<u64, String> {
    whole_opt(v).ok_or_else(|| format!("must be a whole number, got {}", got(v)))
}

fn port(v: &Value, min: u16) -> Result<u16, String> {
    match whole_opt(v).and_then(|n| u16::try_from(n).ok()) {
        Some(p) if p >= min => Ok(p),
        _ => Err(format!(
            "must be a port number ({min} to 65535), got {}",
            got(v)
        )),
    }
}

/// A port, or -1 to turn the listener off (Consul's `ports.serf_wan = -1`).
fn port_or_off(v: &Value) -> Result<i32, String> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match n {
        Some(-1) => Ok(-1),
        Some(p @ 1..=65535) => Ok(p as i32),
        _ => Err(format!(
            "must be a port number (1 to 65535) or -1 to disable, got {}",
            got(v)
        )),
    }
}

/// `retry_interval`: a Go duration above zero (Consul retries every 30s).
fn interval(v: &Value) -> Result<Duration, String> {
    let d = go_duration(v)?;
    if d == Duration::ZERO {
        return Err(format!("must be greater than zero, got {}", got(v)));
    }
    Ok(d)
}

/// `retry_max`: how many join attempts; 0 retries forever. At most
/// `u32::MAX`, the gossip pool's counter.
fn attempts(v: &Value) -> Result<u64, String> {
    match whole_opt(v) {
        Some(n) if n <= u64::from(u32::MAX) => Ok(n),
        _ => Err(format!(
            "must be a whole number of attempts (0: retry forever), got {}",
            got(v)
        )),
    }
}

/// `log_rotate_max_files`: how many rotated files to keep; 0 keeps every
/// one, -1 none (Consul's logging/logfile.go `pruneFiles`).
fn max_files(v: &Value) -> Result<i64, String> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= -1 => Ok(n),
        _ => Err(format!(
            "must be a whole number of files (0: keep all, -1: keep none), got {}",
            got(v)
        )),
    }
}

/// Consul: "performance.raft_multiplier cannot be N. Must be between 1 and 10".
fn multiplier(v: &Value) -> Result<u64, String> {
    match whole_opt(v) {
        Some(m) if (1..=10).contains(&m) => Ok(m),
        _ => Err(format!("must be between 1 and 10, got {}", got(v))),
    }
}

fn go_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => duration::parse(s),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "must be a duration such as \"7s\" or \"500ms\", got {}",
            got(v)
        )
    })
}

fn ip(v: &Value) -> Result<IpAddr, String> {
    match v {
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("must be an IP address, got {}", got(v)))
}

fn node_id(v: &Value) -> Result<NodeId, String> {
    match v {
        Value::String(s) => NodeId::parse(s),
        _ => None,
    }
    .ok_or_else(|| format!("must be a UUID, got {}", got(v)))
}

/// Consul's levels (trace, debug, info, warn, err), stored as the `tracing`
/// level of the same meaning.
fn log_level(v: &Value) -> Result<String, String> {
    let level = match v {
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "trace" => Some("trace"),
            "debug" => Some("debug"),
            "info" => Some("info"),
            "warn" | "warning" => Some("warn"),
            "err" | "error" => Some("error"),
            _ => None,
        },
        _ => None,
    };
    level.map(str::to_string).ok_or_else(|| {
        format!(
            "must be one of trace, debug, info, warn, err, got {}",
            got(v)
        )
    })
}
