//! `operator autopilot get-config` and `operator autopilot state`, with the
//! output of Consul's `command/operator/autopilot/get` and
//! `command/operator/autopilot/state/formatter.go`. `set-config` needs the
//! configuration replicated through the state machine and is not built yet.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::flags::value;
use super::kv::parse_json;
use super::{command, fail, Io};

/// `GET /v1/operator/autopilot/configuration`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Configuration {
    cleanup_dead_servers: bool,
    last_contact_threshold: String,
    max_trailing_logs: u64,
    min_quorum: u64,
    server_stabilization_time: String,
    redundancy_zone_tag: String,
    disable_upgrade_migration: bool,
    upgrade_version_tag: String,
}

pub(crate) fn get_config(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], GET_CONFIG_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    let c: Configuration = match client
        .get("/v1/operator/autopilot/configuration", &[])
        .and_then(|r| r.success())
        .and_then(|b| parse_json(&b))
    {
        Ok(c) => c,
        Err(e) => return fail(io, format!("Error querying Autopilot configuration: {e}")),
    };
    io.line(&format!("CleanupDeadServers = {}", c.cleanup_dead_servers));
    io.line(&format!(
        "LastContactThreshold = {}",
        c.last_contact_threshold
    ));
    io.line(&format!("MaxTrailingLogs = {}", c.max_trailing_logs));
    io.line(&format!("MinQuorum = {}", c.min_quorum));
    io.line(&format!(
        "ServerStabilizationTime = {}",
        c.server_stabilization_time
    ));
    io.line(&format!("RedundancyZoneTag = {:?}", c.redundancy_zone_tag));
    io.line(&format!(
        "DisableUpgradeMigration = {}",
        c.disable_upgrade_migration
    ));
    io.line(&format!("UpgradeVersionTag = {:?}", c.upgrade_version_tag));
    0
}

/// `GET /v1/operator/autopilot/state`, the fields the pretty format shows.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct State {
    healthy: bool,
    failure_tolerance: i64,
    optimistic_failure_tolerance: i64,
    servers: BTreeMap<String, StateServer>,
    leader: String,
    voters: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct StateServer {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    address: String,
    node_status: String,
    version: String,
    last_contact: String,
    last_term: u64,
    last_index: u64,
    healthy: bool,
    stable_since: String,
    read_replica: bool,
    status: String,
    meta: BTreeMap<String, String>,
    node_type: String,
}

pub(crate) fn state(args: &[String], io: &mut Io) -> i32 {
    let own = [value("format")];
    let (p, client) = match command(args, &own, STATE_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    let format = p.last("format").unwrap_or("pretty").to_string();
    if format != "pretty" && format != "json" {
        return fail(io, format!("Unknown format: {format}"));
    }
    let body = match client
        .get("/v1/operator/autopilot/state", &[])
        .and_then(|r| r.success())
    {
        Ok(b) => b,
        Err(e) => return fail(io, format!("Error querying Autopilot state: {e}")),
    };
    if format == "json" {
        // Go's `json.MarshalIndent(state, "", "    ")` of what was read.
        let value: serde_json::Value = match parse_json(&body) {
            Ok(v) => v,
            Err(e) => return fail(io, format!("Error querying Autopilot state: {e}")),
        };
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        if let Err(e) = value.serialize(&mut ser) {
            return fail(io, format!("Failed to marshal token: {e}"));
        }
        io.line(&String::from_utf8_lossy(&out));
        return 0;
    }
    let s: State = match parse_json(&body) {
        Ok(s) => s,
        Err(e) => return fail(io, format!("Error querying Autopilot state: {e}")),
    };
    // Consul's `c.UI.Info(out)` adds a newline to text that ends in one.
    io.line(&pretty(&s));
    0
}

/// Consul's `prettyFormatter.FormatState` for the fields Tern fills (no
/// read replicas, redundancy zones or upgrade: enterprise features).
fn pretty(s: &State) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "Healthy:                      {}", s.healthy);
    let _ = writeln!(b, "Failure Tolerance:            {}", s.failure_tolerance);
    let _ = writeln!(
        b,
        "Optimistic Failure Tolerance: {}",
        s.optimistic_failure_tolerance
    );
    let _ = writeln!(b, "Leader:                       {}", s.leader);
    b.push_str("Voters:\n");
    for v in &s.voters {
        let _ = writeln!(b, "   {v}");
    }
    b.push_str("Servers:\n");
    for (id, srv) in &s.servers {
        let _ = writeln!(b, "   {id}");
        let _ = writeln!(b, "      Name:            {}", srv.name);
        let _ = writeln!(b, "      Address:         {}", srv.address);
        let _ = writeln!(b, "      Version:         {}", srv.version);
        let _ = writeln!(b, "      Status:          {}", srv.status);
        let _ = writeln!(b, "      Node Type:       {}", srv.node_type);
        let _ = writeln!(b, "      Node Status:     {}", srv.node_status);
        let _ = writeln!(b, "      Healthy:         {}", srv.healthy);
        let _ = writeln!(b, "      Last Contact:    {}", srv.last_contact);
        let _ = writeln!(b, "      Last Term:       {}", srv.last_term);
        let _ = writeln!(b, "      Last Index:      {}", srv.last_index);
        if srv.read_replica {
            let _ = writeln!(b, "      Read Replica:    {}", srv.read_replica);
        }
        if !srv.meta.is_empty() {
            b.push_str("      Meta\n");
            for (k, v) in &srv.meta {
                let _ = writeln!(b, "         {k:?}: {v:?}");
            }
        }
    }
    b
}

pub(crate) const GET_CONFIG_USAGE: &str = "\
Usage: tern operator autopilot get-config [options]

  Displays the current Autopilot configuration.

  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

pub(crate) const STATE_USAGE: &str = "\
Usage: tern operator autopilot state [options]

  Displays the current Autopilot state.

  -format=pretty|json  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of Consul's `prettyFormatter.FormatState`
    /// (command/operator/autopilot/state/formatter.go), column for column.
    #[test]
    fn state_prints_as_consul_prints_it() {
        let body = br#"{"Healthy":true,"FailureTolerance":1,"OptimisticFailureTolerance":1,
            "Servers":{"a1":{"ID":"a1","Name":"s1","Address":"127.0.0.1:8300","NodeStatus":"alive",
            "Version":"","LastContact":"0s","LastTerm":2,"LastIndex":9,"Healthy":true,
            "StableSince":"2026-12-01T19:52:14Z","ReadReplica":false,"Status":"leader","Meta":{},
            "NodeType":"voter"}},"Leader":"a1","Voters":["a1"]}"#;
        let s: State = parse_json(body).unwrap();
        assert_eq!(
            pretty(&s),
            "\
Healthy:                      true
Failure Tolerance:            1
Optimistic Failure Tolerance: 1
Leader:                       a1
Voters:
   a1
Servers:
   a1
      Name:            s1
      Address:         127.0.0.1:8300
      Version:         
      Status:          leader
      Node Type:       voter
      Node Status:     alive
      Healthy:         true
      Last Contact:    0s
      Last Term:       2
      Last Index:      9
"
        );
    }
}
