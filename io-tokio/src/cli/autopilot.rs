//! `operator autopilot get-config|set-config|state`, with the output of
//! Consul's `command/operator/autopilot/get`, `.../set` and
//! `.../state/formatter.go`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::flags::{flag, value};
use super::kv::parse_json;
use super::{command, fail, Io};

/// `GET /v1/operator/autopilot/configuration`, and the body of its `PUT`.
#[derive(Debug, Default, Deserialize, Serialize)]
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
    create_index: u64,
    modify_index: u64,
}

/// `operator autopilot set-config`: fetch the configuration, change what
/// the flags name, and write it back with `?cas=` its modify index, as
/// Consul's `command/operator/autopilot/set` does.
pub(crate) fn set_config(args: &[String], io: &mut Io) -> i32 {
    let own = [
        flag("cleanup-dead-servers"),
        flag("disable-upgrade-migration"),
        value("max-trailing-logs"),
        value("min-quorum"),
        value("last-contact-threshold"),
        value("server-stabilization-time"),
        value("redundancy-zone-tag"),
        value("upgrade-version-tag"),
    ];
    let (p, client) = match command(args, &own, "operator autopilot set-config", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    let duration = |name: &str| -> Result<Option<String>, String> {
        match p.last(name) {
            None => Ok(None),
            Some(v) => match crate::config::duration::parse(v) {
                Some(d) => Ok(Some(crate::config::duration::format_go(d))),
                None => Err(format!(
                    "-{name}: must be a duration such as 200ms, got {v:?}"
                )),
            },
        }
    };
    let changes = (|| -> Result<_, String> {
        let cleanup = p
            .last("cleanup-dead-servers")
            .map(|_| p.bool("cleanup-dead-servers"))
            .transpose()?;
        let migration = p
            .last("disable-upgrade-migration")
            .map(|_| p.bool("disable-upgrade-migration"))
            .transpose()?;
        let trailing = p.number("max-trailing-logs")?;
        let quorum = p.number("min-quorum")?;
        let contact = duration("last-contact-threshold")?;
        let stabilization = duration("server-stabilization-time")?;
        Ok((cleanup, migration, trailing, quorum, contact, stabilization))
    })();
    let (cleanup, migration, trailing, quorum, contact, stabilization) = match changes {
        Ok(c) => c,
        Err(e) => return fail(io, e),
    };
    let mut c: Configuration = match client
        .get("/v1/operator/autopilot/configuration", &[])
        .and_then(|r| r.success())
        .and_then(|b| parse_json(&b))
    {
        Ok(c) => c,
        Err(e) => return fail(io, format!("Error querying Autopilot configuration: {e}")),
    };
    if let Some(v) = cleanup {
        c.cleanup_dead_servers = v;
    }
    if let Some(v) = migration {
        c.disable_upgrade_migration = v;
    }
    if let Some(v) = trailing {
        c.max_trailing_logs = v;
    }
    if let Some(v) = quorum {
        c.min_quorum = v;
    }
    if let Some(v) = contact {
        c.last_contact_threshold = v;
    }
    if let Some(v) = stabilization {
        c.server_stabilization_time = v;
    }
    if let Some(v) = p.last("redundancy-zone-tag") {
        c.redundancy_zone_tag = v.to_string();
    }
    if let Some(v) = p.last("upgrade-version-tag") {
        c.upgrade_version_tag = v.to_string();
    }
    let body = serde_json::to_vec(&c).expect("a configuration encodes");
    let cas = c.modify_index.to_string();
    let held: bool = match client
        .put(
            "/v1/operator/autopilot/configuration",
            &[("cas", Some(&cas))],
            &body,
        )
        .and_then(|r| r.success())
        .and_then(|b| parse_json(&b))
    {
        Ok(h) => h,
        Err(e) => return fail(io, format!("Error setting Autopilot configuration: {e}")),
    };
    if held {
        io.line("Configuration updated!");
        0
    } else {
        io.line("Configuration could not be atomically updated, please try again");
        1
    }
}

pub(crate) fn get_config(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], "operator autopilot get-config", io) {
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
    let (p, client) = match command(args, &own, "operator autopilot state", io) {
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

pub(crate) const SET_CONFIG_USAGE: &str = "\
Usage: tern operator autopilot set-config [options]

  Modifies the current Autopilot configuration. Only the options given
  change; the write fails if the configuration changed meanwhile.

  -cleanup-dead-servers=[true|false]   remove failed servers automatically
  -max-trailing-logs=<n>               entries a healthy server may trail by
  -min-quorum=<n>                      voters dead-server cleanup never goes below
  -last-contact-threshold=<duration>   contact a healthy server had within
  -server-stabilization-time=<duration> healthy this long before promotion
  -redundancy-zone-tag=<tag>           (Enterprise; stored, not acted on)
  -disable-upgrade-migration=[true|false] (Enterprise; stored, not acted on)
  -upgrade-version-tag=<tag>           (Enterprise; stored, not acted on)
  -http-addr=ADDR  -datacenter=DC  -token=T";

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
