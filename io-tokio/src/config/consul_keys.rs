//! The keys of Consul's agent configuration (agent/config/config.go
//! `Config`, and the deprecated keys of agent/config/deprecated.go), so a
//! Consul config directory loads: a key here that Tern does not implement is
//! ignored with a warning, while a key in neither is still an error.
//!
//! Blocks Tern reads key by key (`ports`, `performance`, `autopilot`,
//! `limits`) list their inner keys; every other block is one key, ignored
//! whole.

/// Consul's top-level keys.
const TOP: &[&str] = &[
    "acl",
    "acl_agent_master_token",
    "acl_agent_token",
    "acl_datacenter",
    "acl_default_policy",
    "acl_down_policy",
    "acl_enable_key_list_policy",
    "acl_master_token",
    "acl_replication_token",
    "acl_token",
    "acl_ttl",
    "addresses",
    "advertise_addr",
    "advertise_addr_ipv4",
    "advertise_addr_ipv6",
    "advertise_addr_wan",
    "advertise_addr_wan_ipv4",
    "advertise_addr_wan_ipv6",
    "advertise_reconnect_timeout",
    "ae_interval",
    "audit",
    "auto_config",
    "auto_encrypt",
    "auto_reload_config",
    "autopilot",
    "bind_addr",
    "bootstrap",
    "bootstrap_expect",
    "build_date",
    "ca_file",
    "ca_path",
    "cache",
    "cert_file",
    "check",
    "check_deregister_interval_min",
    "check_output_max_size",
    "check_reap_interval",
    "check_update_interval",
    "checks",
    "client_addr",
    "cloud",
    "config_entries",
    "connect",
    "consul",
    "data_dir",
    "datacenter",
    "default_query_time",
    "disable_anonymous_signature",
    "disable_coordinates",
    "disable_host_node_id",
    "disable_http_unprintable_char_filter",
    "disable_keyring_file",
    "disable_remote_exec",
    "disable_update_check",
    "discard_check_output",
    "discovery_max_stale",
    "dns_config",
    "domain",
    "alt_domain",
    "enable_acl_replication",
    "enable_agent_tls_for_checks",
    "enable_central_service_config",
    "enable_debug",
    "enable_local_script_checks",
    "enable_script_checks",
    "enable_syslog",
    "encrypt",
    "encrypt_verify_incoming",
    "encrypt_verify_outgoing",
    "gossip_lan",
    "gossip_wan",
    "http_config",
    "key_file",
    "leave_on_terminate",
    "license_path",
    "license_poll_base_time",
    "license_poll_max_time",
    "license_update_base_time",
    "license_update_max_time",
    "limits",
    "locality",
    "log_file",
    "log_json",
    "log_level",
    "log_rotate_bytes",
    "log_rotate_duration",
    "log_rotate_max_files",
    "log_sublevels",
    "max_query_time",
    "node_id",
    "node_meta",
    "node_name",
    "partition",
    "peering",
    "performance",
    "pid_file",
    "ports",
    "primary_datacenter",
    "primary_gateways",
    "primary_gateways_interval",
    "protocol",
    "raft_boltdb",
    "raft_logstore",
    "raft_protocol",
    "raft_snapshot_interval",
    "raft_snapshot_threshold",
    "raft_trailing_logs",
    "read_replica",
    "non_voting_server",
    "reconnect_timeout",
    "reconnect_timeout_wan",
    "recursors",
    "rejoin_after_leave",
    "reporting",
    "retry_interval",
    "retry_interval_wan",
    "retry_join",
    "retry_join_wan",
    "retry_max",
    "retry_max_wan",
    "revision",
    "rpc",
    "segment",
    "segment_limit",
    "segment_name_limit",
    "segments",
    "serf_lan",
    "serf_lan_allowed_cidrs",
    "serf_wan",
    "serf_wan_allowed_cidrs",
    "server",
    "server_name",
    "service",
    "services",
    "session_ttl_min",
    "skip_leave_on_interrupt",
    "snapshot_agent",
    "start_join",
    "start_join_wan",
    "sync_coordinate_interval_min",
    "sync_coordinate_rate_target",
    "syslog_facility",
    "tagged_addresses",
    "telemetry",
    "tls",
    "tls_cipher_suites",
    "tls_min_version",
    "tls_prefer_server_cipher_suites",
    "translate_wan_addrs",
    "ui",
    "ui_config",
    "ui_content_path",
    "ui_dir",
    "unix_sockets",
    "use_streaming_backend",
    "verify_incoming",
    "verify_incoming_https",
    "verify_incoming_rpc",
    "verify_outgoing",
    "verify_server_hostname",
    "version",
    "version_metadata",
    "version_prerelease",
    "watches",
    "xds",
];

/// Inner keys of the blocks Tern reads key by key (`Ports`, `Performance`,
/// `Autopilot`, `Limits` in config.go).
const NESTED: &[&str] = &[
    "limits.http_max_conns_per_client",
    "limits.https_handshake_timeout",
    "limits.kv_max_value_size",
    "limits.request_limits",
    "limits.rpc_client_timeout",
    "limits.rpc_handshake_timeout",
    "limits.rpc_max_burst",
    "limits.rpc_max_conns_per_client",
    "limits.rpc_rate",
    "limits.txn_max_req_len",
    "autopilot.cleanup_dead_servers",
    "autopilot.disable_upgrade_migration",
    "autopilot.last_contact_threshold",
    "autopilot.max_trailing_logs",
    "autopilot.min_quorum",
    "autopilot.redundancy_zone_tag",
    "autopilot.server_stabilization_time",
    "autopilot.upgrade_version_tag",
    "performance.leave_drain_time",
    "performance.raft_multiplier",
    "performance.rpc_hold_timeout",
    "ports.dns",
    "ports.expose_max_port",
    "ports.expose_min_port",
    "ports.grpc",
    "ports.grpc_tls",
    "ports.http",
    "ports.https",
    "ports.proxy_max_port",
    "ports.proxy_min_port",
    "ports.serf_lan",
    "ports.serf_wan",
    "ports.server",
    "ports.sidecar_max_port",
    "ports.sidecar_min_port",
];

/// Whether ignoring `key` leaves the agent less protected than its
/// operator asked (ACLs, gossip encryption, the parts of TLS Tern does not
/// implement, such as `tls.grpc`): its warning says so in words, so nobody
/// reads one line as "configured". The TLS keys Tern enforces (`tls.defaults`,
/// `tls.internal_rpc`, `tls.https`, the old `ca_file`, `verify_*`, ...,
/// `ports.https`) never reach a warning: `config::tls` reads them.
pub(crate) fn is_security_key(key: &str) -> bool {
    let top = key.split('.').next().unwrap_or(key);
    top.starts_with("acl")
        || top.starts_with("encrypt")
        || top.starts_with("auto_encrypt")
        || top.starts_with("auto_config")
        || matches!(top, "tls" | "tls_prefer_server_cipher_suites")
}

/// Whether `key` (`"acl"`, `"ports.grpc"`) is a key of Consul's
/// configuration.
pub(crate) fn is_consul_key(key: &str) -> bool {
    if super::tls::is_tls_block_key(key) {
        return true;
    }
    match key.contains('.') {
        true => NESTED.contains(&key),
        false => TOP.contains(&key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_keys_are_known_and_others_are_not() {
        for k in [
            "acl",
            "telemetry",
            "ui_config",
            "connect",
            "ports.grpc",
            "encrypt",
        ] {
            assert!(is_consul_key(k), "{k}");
        }
        for k in [
            "acls",
            "ports.grcp",
            "telemetry.disable_hostname",
            "frobnicate",
            "",
        ] {
            assert!(!is_consul_key(k), "{k}");
        }
        let mut seen = std::collections::BTreeSet::new();
        for k in TOP.iter().chain(NESTED) {
            assert!(seen.insert(*k), "{k} listed twice");
        }
    }
}
