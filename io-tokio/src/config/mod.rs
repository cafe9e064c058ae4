//! `tern agent`'s configuration: flags and Consul-style config files (JSON or
//! HCL, Consul's key names) merged into an [`AgentOptions`].
//!
//! Sources, earliest first, each overriding the ones before it (lists append,
//! as in Consul): the `-dev` defaults, then every `-config-file` and
//! `-config-dir` in command-line order (a directory contributes its `*.json`
//! and `*.hcl` files sorted by name), then `-hcl` fragments, then the flags.
//! Every error is one line that names the key or the flag.

mod consul_keys;
pub(crate) mod duration;
pub(crate) mod services;
mod source;
mod tls;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tern_core::{Config, Duration, NodeId};

use crate::agent::{AgentOptions, PoolOptions};
use crate::cli::flags::{self, flag, value, Spec};
pub(crate) use source::parse_bool;
use source::{quoted, Format, Layer};

/// A configuration error: one line naming the key or the flag, e.g.
/// `bootstrap_expect: must be a whole number, got "three"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// What `tern agent` runs with: the agent's options and the settings that
/// belong to the process rather than the agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub options: AgentOptions,
    /// A `tracing` level (`trace`, `debug`, `info`, `warn`, `error`), from
    /// Consul's `log_level` (`err` becomes `error`). Default `info`.
    pub log_level: String,
    /// Where and how the agent logs (`log_json`, `log_file`,
    /// `log_rotate_*`).
    pub logging: crate::logging::LogOptions,
    /// One line per Consul config key Tern does not implement (it was
    /// ignored), for the agent to log once logging is up.
    pub warnings: Vec<String>,
    /// The HTTPS API (`ports.https`, off unless set), on the client
    /// address; its certificate is `tls.https`'s.
    pub https_addr: Option<SocketAddr>,
}

/// Consul's defaults (`agent/config/default.go`).
pub const DEFAULT_DATACENTER: &str = "dc1";
/// Consul's `domain`: the last part of the names in server certificates.
pub const DEFAULT_DOMAIN: &str = "consul";
pub const DEFAULT_HTTP_PORT: u16 = 8500;
pub const DEFAULT_SERVER_PORT: u16 = 8300;
pub const DEFAULT_SERF_LAN_PORT: u16 = 8301;
pub const DEFAULT_SERF_WAN_PORT: u16 = 8302;
/// Consul's `retry_interval` and `retry_interval_wan`.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// Consul's default `performance.raft_multiplier` outside `-dev`.
pub const DEFAULT_RAFT_MULTIPLIER: u64 = 5;
/// The client address the CLI talks to when nothing says otherwise.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8500";

/// Consul's base Raft timings at `raft_multiplier = 1`.
const ELECTION_TIMEOUT_MS_BASE: u64 = 1000;
/// `-dev` without an explicit multiplier: a lone server elects itself well
/// within a second.
const DEV_ELECTION_TIMEOUT_MS_MIN: u64 = 100;

/// `tern agent`'s flags (Consul's names).
pub(crate) const AGENT_FLAGS: &[Spec] = &[
    flag("dev"),
    flag("server"),
    value("bootstrap-expect"),
    value("node"),
    value("node-id"),
    value("datacenter"),
    value("data-dir"),
    value("encrypt"),
    value("bind"),
    value("advertise"),
    value("client"),
    value("retry-join"),
    value("retry-join-wan"),
    value("join"),
    value("join-wan"),
    value("retry-interval"),
    value("retry-interval-wan"),
    value("retry-max"),
    value("retry-max-wan"),
    value("http-port"),
    value("https-port"),
    value("server-port"),
    value("serf-lan-port"),
    value("serf-wan-port"),
    value("config-file"),
    value("config-dir"),
    value("hcl"),
    value("log-level"),
    flag("log-json"),
    value("log-file"),
    value("log-rotate-bytes"),
    value("log-rotate-duration"),
    value("log-rotate-max-files"),
    value("node-meta"),
];

/// Which config key each value flag sets.
const FLAG_KEYS: &[(&str, &str)] = &[
    ("server", "server"),
    ("bootstrap-expect", "bootstrap_expect"),
    ("node", "node_name"),
    ("node-id", "node_id"),
    ("datacenter", "datacenter"),
    ("data-dir", "data_dir"),
    ("encrypt", "encrypt"),
    ("bind", "bind_addr"),
    ("advertise", "advertise_addr"),
    ("client", "client_addr"),
    ("retry-join", "retry_join"),
    ("retry-join-wan", "retry_join_wan"),
    ("join", "start_join"),
    ("join-wan", "start_join_wan"),
    ("retry-interval", "retry_interval"),
    ("retry-interval-wan", "retry_interval_wan"),
    ("retry-max", "retry_max"),
    ("retry-max-wan", "retry_max_wan"),
    ("http-port", "ports.http"),
    ("https-port", "ports.https"),
    ("server-port", "ports.server"),
    ("serf-lan-port", "ports.serf_lan"),
    ("serf-wan-port", "ports.serf_wan"),
    ("log-level", "log_level"),
    ("log-json", "log_json"),
    ("log-file", "log_file"),
    ("log-rotate-bytes", "log_rotate_bytes"),
    ("log-rotate-duration", "log_rotate_duration"),
    ("log-rotate-max-files", "log_rotate_max_files"),
    ("node-meta", source::NODE_META_FLAG_KEY),
];

/// Parse `tern agent` arguments (everything after "agent"), load the config
/// files, merge, validate and build the agent's options.
pub fn agent_options(args: &[String]) -> Result<AgentOptions, ConfigError> {
    load(args).map(|c| c.options)
}

/// [`agent_options`] plus the process-level settings (`log_level`).
pub fn load(args: &[String]) -> Result<AgentConfig, ConfigError> {
    let parsed = flags::parse(args, AGENT_FLAGS).map_err(ConfigError)?;
    if parsed.help {
        return Err(ConfigError(format!("usage: {AGENT_HELP}")));
    }
    if let Some(extra) = parsed.args.first() {
        return Err(ConfigError(format!(
            "unexpected argument {}",
            quoted(extra)
        )));
    }
    let dev = parsed.bool("dev").map_err(ConfigError)?;
    let mut merged = if dev { dev_layer() } else { Layer::default() };
    let mut flag_layer = Layer::default();
    let mut fragments = Vec::new();
    for (name, v) in &parsed.flags {
        match *name {
            "dev" => {}
            "config-file" => merged.merge(source::read_file(Path::new(v), "-config-file")?),
            "config-dir" => {
                for file in config_dir_files(Path::new(v))? {
                    merged.merge(source::read_file(&file, "-config-dir")?);
                }
            }
            "hcl" => {
                let mut layer =
                    source::read_text(v, Format::Hcl).map_err(|m| format!("{m} (in -hcl)"))?;
                for w in &mut layer.unsupported {
                    w.push_str(" (in -hcl)");
                }
                fragments.push(layer);
            }
            _ => {
                let key = FLAG_KEYS
                    .iter()
                    .find(|(f, _)| f == name)
                    .map(|(_, k)| *k)
                    .expect("every value flag has a key");
                let known = flag_layer.set(key, &Value::String(v.clone()), &format!("-{name}"))?;
                assert!(known, "flag key {key} is a config key");
            }
        }
    }
    for fragment in fragments {
        merged.merge(fragment);
    }
    merged.merge(flag_layer);
    build(merged, dev)
}

impl From<String> for ConfigError {
    fn from(s: String) -> ConfigError {
        ConfigError(s)
    }
}

/// `-dev`: an in-memory server on loopback that bootstraps alone.
fn dev_layer() -> Layer {
    Layer {
        server: Some(true),
        bootstrap_expect: Some(1),
        bind_addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        client_addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..Layer::default()
    }
}

/// A directory's `*.json` and `*.hcl` files, sorted by name, not recursive.
fn config_dir_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let cannot = |err: std::io::Error| {
        ConfigError(format!(
            "-config-dir: cannot read {}: {err}",
            quoted(&dir.display().to_string())
        ))
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(cannot)? {
        let path = entry.map_err(cannot)?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("json") | Some("hcl")) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Resolve defaults, check what Consul checks, and build the options.
fn build(c: Layer, dev: bool) -> Result<AgentConfig, ConfigError> {
    let server = c.server.unwrap_or(false);
    let bootstrap_expect = c.bootstrap_expect.unwrap_or(0);
    if bootstrap_expect > 0 && !server {
        // Consul: "'bootstrap_expect > 0' requires 'server = true'".
        return Err(ConfigError(
            "bootstrap_expect: requires server = true (-server)".into(),
        ));
    }
    let data_dir = match (dev, c.data_dir) {
        (true, _) => None,
        (false, Some(d)) if !d.as_os_str().is_empty() => Some(d),
        (false, _) => return Err(ConfigError("data_dir: must be set unless -dev".into())),
    };

    let datacenter = c
        .datacenter
        .unwrap_or_else(|| DEFAULT_DATACENTER.into())
        .to_lowercase();
    let node_name = c.node_name.unwrap_or_else(hostname);
    let bind = c.bind_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let client = c.client_addr.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let server_port = c.server_port.unwrap_or(DEFAULT_SERVER_PORT);
    let http_port = c.http_port.unwrap_or(DEFAULT_HTTP_PORT);
    let advertise = c.advertise_addr.unwrap_or(match bind {
        // Consul advertises the first private IP here; Tern advertises
        // loopback, so a multi-machine cluster sets advertise_addr or bind_addr.
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    });
    if advertise.is_unspecified() {
        return Err(ConfigError(format!(
            "advertise_addr: must be an address peers can reach, got \"{advertise}\""
        )));
    }
    let server_addr = SocketAddr::new(bind, server_port);
    let http_addr = SocketAddr::new(client, http_port);

    // Build with a placeholder id so a bad setting is reported before the
    // node-id file is created.
    let mut core = Config::new(
        NodeId(0),
        &node_name,
        &datacenter,
        &SocketAddr::new(advertise, server_port).to_string(),
    );
    // Consul scales its base timings (1000 ms) by raft_multiplier; -dev
    // without an explicit multiplier uses short ones.
    let election_min = match (c.raft_multiplier, dev) {
        (Some(m), _) => ELECTION_TIMEOUT_MS_BASE * m,
        (None, true) => DEV_ELECTION_TIMEOUT_MS_MIN,
        (None, false) => ELECTION_TIMEOUT_MS_BASE * DEFAULT_RAFT_MULTIPLIER,
    };
    core.election_timeout_min = Duration::from_millis(election_min);
    core.election_timeout_max = Duration::from_millis(2 * election_min);
    core.heartbeat_interval = Duration::from_millis(election_min / 10);
    // Consul's LeaderLeaseTimeout: 500 ms at raft_multiplier 1.
    core.leader_lease_timeout = Duration::from_millis(election_min / 2);
    if let Some(d) = c.rpc_hold_timeout {
        core.rpc_hold_timeout = d;
    }
    if let Some(d) = c.leave_drain_time {
        core.leave_drain_time = d;
    }
    if let Some(n) = c.raft_snapshot_threshold {
        core.snapshot_threshold = n;
    }
    if let Some(n) = c.raft_trailing_logs {
        core.trailing_logs = n;
    }
    if let Some(d) = c.raft_snapshot_interval {
        core.snapshot_interval = d;
    }
    let (ap, a) = (&mut core.autopilot, &c.autopilot);
    if let Some(b) = a.cleanup_dead_servers {
        ap.cleanup_dead_servers = b;
    }
    if let Some(d) = a.last_contact_threshold {
        ap.last_contact_threshold = d;
    }
    if let Some(n) = a.max_trailing_logs {
        ap.max_trailing_logs = n;
    }
    if let Some(n) = a.min_quorum {
        ap.min_quorum = u32::try_from(n).map_err(|_| {
            ConfigError(format!(
                "autopilot.min_quorum: must be at most {}, got {n}",
                u32::MAX
            ))
        })?;
    }
    if let Some(d) = a.server_stabilization_time {
        ap.server_stabilization_time = d;
    }
    if let Some(t) = &a.redundancy_zone_tag {
        ap.redundancy_zone_tag = t.clone();
    }
    if let Some(b) = a.disable_upgrade_migration {
        ap.disable_upgrade_migration = b;
    }
    if let Some(t) = &a.upgrade_version_tag {
        ap.upgrade_version_tag = t.clone();
    }
    core.validate().map_err(|e| {
        let key = match e.key {
            "election_timeout_min"
            | "election_timeout_max"
            | "heartbeat_interval"
            | "leader_lease_timeout" => "performance.raft_multiplier",
            "rpc_hold_timeout" => "performance.rpc_hold_timeout",
            "leave_drain_time" => "performance.leave_drain_time",
            "snapshot_threshold" => "raft_snapshot_threshold",
            other => other,
        };
        ConfigError(format!("{key}: {}", e.message))
    })?;

    let tls = c
        .tls
        .resolve(&datacenter, c.domain.as_deref().unwrap_or(DEFAULT_DOMAIN));
    tls.validate().map_err(ConfigError)?;
    let https_addr = match c.https_port {
        None | Some(-1) => None,
        Some(p) => {
            if tls.https.cert_file.is_none() {
                return Err(ConfigError(
                    "ports.https: needs tls.https.cert_file and key_file (or tls.defaults')".into(),
                ));
            }
            let p = u16::try_from(p)
                .map_err(|_| ConfigError(format!("ports.https: must be a port number, got {p}")))?;
            if p == http_port {
                return Err(ConfigError(format!("ports.https: {p} is also ports.http")));
            }
            Some(SocketAddr::new(client, p))
        }
    };

    core.node_id = match (c.node_id, &data_dir) {
        (Some(id), _) => id,
        (None, None) => random_node_id(),
        (None, Some(dir)) => persisted_node_id(dir)?,
    };
    core.rng_seed = random_u64();

    let serf_lan_port = c.serf_lan_port.unwrap_or(DEFAULT_SERF_LAN_PORT);
    let lan = PoolOptions {
        bind: SocketAddr::new(bind, serf_lan_port),
        advertise: SocketAddr::new(advertise, serf_lan_port),
        start_join: with_default_ports(&c.start_join, serf_lan_port),
        retry_join: with_default_ports(&c.retry_join, serf_lan_port),
        retry_interval: c.retry_interval.unwrap_or(DEFAULT_RETRY_INTERVAL),
        retry_max: retry_max(c.retry_max),
    };
    // Only servers gossip over the WAN (a client agent has no WAN pool);
    // -1 turns the pool off.
    let wan_port = match server {
        true => c.serf_wan_port.unwrap_or(i32::from(DEFAULT_SERF_WAN_PORT)),
        false => -1,
    };
    let wan = match wan_port {
        -1 => None,
        p => {
            let p = u16::try_from(p).map_err(|_| {
                ConfigError(format!("ports.serf_wan: must be a port number, got {p}"))
            })?;
            Some(PoolOptions {
                bind: SocketAddr::new(bind, p),
                advertise: SocketAddr::new(advertise, p),
                start_join: with_default_ports(&c.start_join_wan, p),
                retry_join: with_default_ports(&c.retry_join_wan, p),
                retry_interval: c.retry_interval_wan.unwrap_or(DEFAULT_RETRY_INTERVAL),
                retry_max: retry_max(c.retry_max_wan),
            })
        }
    };
    if wan.is_none() && !(c.start_join_wan.is_empty() && c.retry_join_wan.is_empty()) {
        return Err(ConfigError(
            "retry_join_wan: needs the WAN pool of a server, but this is a client agent or ports.serf_wan is -1"
                .into(),
        ));
    }
    if let Some(w) = &wan {
        if w.bind.port() == lan.bind.port() {
            return Err(ConfigError(format!(
                "ports.serf_wan: {} is also ports.serf_lan",
                w.bind.port()
            )));
        }
    }
    let services = c
        .services
        .iter()
        .enumerate()
        .map(|(i, v)| {
            crate::http::service_from_config(v)
                .map_err(|e| ConfigError(format!("services[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let checks = c
        .checks
        .iter()
        .enumerate()
        .map(|(i, v)| {
            crate::http::check_from_config(v).map_err(|e| ConfigError(format!("checks[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encrypt = crate::keyring::EncryptOptions {
        key: match c.encrypt.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                crate::keyring::decode_key(text)
                    .map_err(|e| ConfigError(format!("encrypt: {e}")))?,
            ),
        },
        verify_incoming: c.encrypt_verify_incoming.unwrap_or(true),
        verify_outgoing: c.encrypt_verify_outgoing.unwrap_or(true),
    };
    tern_core::fsm::validate_node_meta(&c.node_meta)
        .map_err(|e| ConfigError(format!("node_meta invalid: {e}")))?;
    let limit = |n: Option<u64>, default: usize, key: &str| {
        n.map_or(Ok(default), |n| {
            usize::try_from(n).map_err(|_| ConfigError(format!("limits.{key}: {n} is too large")))
        })
    };
    let limits = crate::connlimit::ConnLimits {
        rpc_max_conns_per_client: limit(
            c.rpc_max_conns_per_client,
            crate::connlimit::DEFAULT_RPC_MAX_CONNS_PER_CLIENT,
            "rpc_max_conns_per_client",
        )?,
        http_max_conns_per_client: limit(
            c.http_max_conns_per_client,
            crate::connlimit::DEFAULT_HTTP_MAX_CONNS_PER_CLIENT,
            "http_max_conns_per_client",
        )?,
        https_handshake_timeout: c
            .https_handshake_timeout
            .map_or(crate::connlimit::DEFAULT_HTTPS_HANDSHAKE_TIMEOUT, |d| {
                std::time::Duration::from_nanos(d.as_nanos())
            }),
    };
    Ok(AgentConfig {
        options: AgentOptions {
            core,
            data_dir,
            http_addr,
            server_addr,
            lan,
            wan,
            bootstrap_expect,
            dev,
            server,
            tls,
            services,
            checks,
            encrypt,
            limits,
            node_meta: c.node_meta,
        },
        logging: crate::logging::LogOptions {
            json: c.log_json.unwrap_or(false),
            file: c.log_file.filter(|f| !f.as_os_str().is_empty()),
            rotate_bytes: c.log_rotate_bytes.unwrap_or(0),
            rotate_duration: c
                .log_rotate_duration
                .map(std::time::Duration::from)
                .unwrap_or(crate::logging::DEFAULT_ROTATE_DURATION),
            rotate_max_files: c.log_rotate_max_files.unwrap_or(0),
        },
        log_level: c.log_level.unwrap_or_else(|| "info".into()),
        warnings: c.unsupported,
        https_addr,
    })
}

/// `retry_max` as the gossip pool counts attempts (validated to fit).
fn retry_max(n: Option<u64>) -> u32 {
    n.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn with_default_ports(addrs: &[String], port: u16) -> Vec<String> {
    addrs
        .iter()
        .map(|a| with_default_port(a.trim(), port))
        .collect()
}

/// A join address without a port gets this agent's own gossip port for
/// that pool (8301 on the LAN unless changed), as memberlist resolves a
/// join address: `host`, `ip`, `ip:port`, `[v6]`, `[v6]:port`.
fn with_default_port(addr: &str, port: u16) -> String {
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return SocketAddr::new(ip, port).to_string();
    }
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if let Some(inner) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        return format!("[{inner}]:{port}");
    }
    match addr.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => addr.to_string(),
        _ => format!("{addr}:{port}"),
    }
}

/// The machine's host name, as Go's `os.Hostname()` gives it to Consul.
fn hostname() -> String {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tern".into())
}

/// The node id kept in `<data_dir>/node-id` (Consul's file name and format),
/// made and written on first start.
fn persisted_node_id(dir: &Path) -> Result<NodeId, ConfigError> {
    let path = dir.join("node-id");
    let show = |p: &Path| quoted(&p.display().to_string());
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(text.trim()).ok_or_else(|| {
            ConfigError(format!(
                "node_id: {} holds {}, not a UUID",
                show(&path),
                quoted(text.trim())
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|err| {
                ConfigError(format!("data_dir: cannot create {}: {err}", show(dir)))
            })?;
            let id = random_node_id();
            std::fs::write(&path, id.to_string()).map_err(|err| {
                ConfigError(format!("data_dir: cannot write {}: {err}", show(&path)))
            })?;
            Ok(id)
        }
        Err(err) => Err(ConfigError(format!(
            "data_dir: cannot read {}: {err}",
            show(&path)
        ))),
    }
}

/// A random version-4 UUID.
fn random_node_id() -> NodeId {
    let mut b = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    NodeId(u128::from_be_bytes(b))
}

fn random_u64() -> u64 {
    let b = random_bytes();
    u64::from_le_bytes(b[..8].try_into().expect("16 bytes"))
}

/// 16 bytes from `/dev/urandom`; if it cannot be read, from the standard
/// library's per-process random hash keys (also OS-seeded).
fn random_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for half in b.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(half.as_ptr() as usize);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    b
}

/// The HTTP address a client command talks to: the `-http-addr` flag, then
/// `TERN_HTTP_ADDR`, then `CONSUL_HTTP_ADDR`, then `127.0.0.1:8500`. A
/// leading `http://` and a trailing `/` are dropped.
pub fn http_addr_from_env(flag: Option<&str>) -> String {
    http_addr_from(flag, |name| std::env::var(name).ok())
}

/// [`http_addr_from_env`] with the environment passed in.
pub fn http_addr_from(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> String {
    let chosen = flag
        .map(str::to_string)
        .or_else(|| env("TERN_HTTP_ADDR"))
        .or_else(|| env("CONSUL_HTTP_ADDR"))
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| DEFAULT_HTTP_ADDR.into());
    let addr = chosen.strip_prefix("http://").unwrap_or(&chosen);
    addr.trim_end_matches('/').to_string()
}

/// `tern agent`'s help.
pub const AGENT_HELP: &str = "\
Usage: tern agent [options]

  Starts a Tern agent and runs until it is told to leave (SIGINT, SIGTERM,
  `tern leave`, PUT /v1/agent/leave). With -server it is a server of the
  Raft cluster; without, a client agent that forwards to the servers.

      $ tern agent -dev
      $ tern agent -server -bootstrap-expect=3 -data-dir=/var/tern \\
          -retry-join=10.0.0.2 -retry-join=10.0.0.3
      $ tern agent -config-dir=/etc/consul.d

  Settings come from Consul's config keys (JSON or HCL files) and these
  flags; later files win, flags win over files. Consul keys Tern does not
  implement are logged as ignored, one warning each.

Command Options

  -dev                      an in-memory server on loopback that elects itself
  -server                   run as a server (default: a client agent)
  -bootstrap-expect=<n>     servers to wait for before the first election
  -node=<name>              node name (default: the host name)
  -node-id=<uuid>           node id (default: random, kept in the data dir)
  -datacenter=<dc>          datacenter (default dc1)
  -node-meta=<key:value>    a pair of the node's metadata in the catalog
                            (repeatable; config key node_meta)
  -data-dir=<path>          where Raft state is kept (required unless -dev)
  -encrypt=<key>            gossip encryption key, base64 (`tern keygen`)
  -bind=<ip>                address for the server and gossip ports (0.0.0.0)
  -advertise=<ip>           address other agents use to reach this one
  -client=<ip>              address of the HTTP API (127.0.0.1)
  -join=<addr>              join this LAN gossip address at start (repeatable)
  -retry-join=<addr>        join, retrying until it works (repeatable)
  -retry-interval=<dur>     time between retries (30s)
  -retry-max=<n>            retries before giving up (0: forever)
  -join-wan=<addr>, -retry-join-wan=<addr>, -retry-interval-wan=<dur>,
  -retry-max-wan=<n>        the same for the WAN pool (servers only)
  -http-port=<port>         HTTP API port (8500)
  -https-port=<port>        HTTPS API port (off; needs tls.https's certificate)
  -server-port=<port>       server RPC port (8300)
  -serf-lan-port=<port>     LAN gossip port (8301)
  -serf-wan-port=<port>     WAN gossip port (8302; -1 turns the pool off)
  -config-file=<path>       a JSON or HCL config file (repeatable)
  -config-dir=<path>        every *.json and *.hcl file in it, by name (repeatable)
  -hcl=<text>               an HCL config fragment (repeatable)
  -log-level=<level>        trace, debug, info, warn or err (info)
  -log-json                 one JSON object per log line (@level, @message,
                            @module, @timestamp)
  -log-file=<path>          also log to this file (a path ending in / or an
                            existing directory gets tern.log)
  -log-rotate-bytes=<n>     start a new log file after this many bytes (0: no limit)
  -log-rotate-duration=<dur> start a new log file after this long (24h)
  -log-rotate-max-files=<n> rotated files to keep (0: all, -1: none)
";
