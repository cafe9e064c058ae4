//! `members`, `join` and `force-leave`, as Consul's command/members,
//! command/join and command/forceleave print them.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::client::encode;
use super::flags::{flag, value};
use super::kv::parse_json;
use super::table::columns;
use super::{command, fail, Io};

/// `GET /v1/agent/members` (Consul's `api.AgentMember`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Member {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<String, String>,
    status: u8,
}

/// serf's `MemberStatus.String()`.
fn status_name(s: u8) -> &'static str {
    match s {
        0 => "none",
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "unknown",
    }
}

impl Member {
    fn tag(&self, k: &str) -> String {
        self.tags.get(k).cloned().unwrap_or_default()
    }

    /// Go's `net.TCPAddr{IP, Port}.String()`: `[v6]:port` for IPv6.
    fn address(&self) -> String {
        match self.addr.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.addr, self.port),
        }
    }

    fn is_server(&self) -> bool {
        self.tag("role") == "consul"
    }
}

pub(crate) fn members(args: &[String], io: &mut Io) -> i32 {
    let own = [
        flag("detailed"),
        flag("wan"),
        value("status"),
        value("segment"),
    ];
    let (p, client) = match command(args, &own, "members", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    let (detailed, wan) = match (p.bool("detailed"), p.bool("wan")) {
        (Ok(d), Ok(w)) => (d, w),
        (Err(e), _) | (_, Err(e)) => return fail(io, e),
    };
    let pattern = p.last("status").unwrap_or(".*");
    let status_re = match regex_automata::meta::Regex::new(pattern) {
        Ok(r) => r,
        Err(e) => return fail(io, format!("Failed to compile status regexp: {e}")),
    };
    let query: Vec<(&str, Option<&str>)> = if wan {
        vec![("wan", Some("1"))]
    } else {
        vec![("segment", Some("_all"))]
    };
    let fetched = client
        .get("/v1/agent/members", &query)
        .and_then(|r| r.success())
        .and_then(|body| parse_json::<Vec<Member>>(&body));
    let mut members = match fetched {
        Ok(m) => m,
        Err(e) => return fail(io, format!("Error retrieving members: {e}")),
    };
    members.retain(|m| status_re.is_match(status_name(m.status)));
    // No matching members: Consul exits 2 with no output.
    if members.is_empty() {
        return 2;
    }
    // Servers first, then by name (Consul's ByMemberNamePartitionAndSegment
    // with one partition and no segments).
    members.sort_by(|a, b| {
        b.is_server()
            .cmp(&a.is_server())
            .then_with(|| a.name.cmp(&b.name))
    });
    let rows = if detailed {
        detailed_rows(&members)
    } else {
        standard_rows(&members)
    };
    for line in columns(&rows) {
        io.line(&line);
    }
    0
}

fn standard_rows(members: &[Member]) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "Node",
        "Address",
        "Status",
        "Type",
        "Build",
        "Protocol",
        "DC",
        "Partition",
        "Segment",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()];
    for m in members {
        let status = status_name(m.status).to_string();
        let kind = match m.tag("role").as_str() {
            "consul" => "server",
            "node" => "client",
            _ => {
                rows.push(vec![m.name.clone(), m.address(), status, "unknown".into()]);
                continue;
            }
        };
        let build = match m.tag("build") {
            b if b.is_empty() => "< 0.3".to_string(),
            b => b.split(':').next().unwrap_or_default().to_string(),
        };
        let partition = Some(m.tag("ap"))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".into());
        let segment = match (kind, m.tag("segment")) {
            ("server", _) => "<all>".to_string(),
            (_, s) if s.is_empty() => "<default>".to_string(),
            (_, s) => s,
        };
        rows.push(vec![
            m.name.clone(),
            m.address(),
            status,
            kind.into(),
            build,
            m.tag("vsn"),
            m.tag("dc"),
            partition,
            segment,
        ]);
    }
    rows
}

/// `-detailed`: every tag, sorted by key, as `k=v,k=v`.
fn detailed_rows(members: &[Member]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "Node".to_string(),
        "Address".into(),
        "Status".into(),
        "Tags".into(),
    ]];
    for m in members {
        let tags = m
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        rows.push(vec![
            m.name.clone(),
            m.address(),
            status_name(m.status).into(),
            tags,
        ]);
    }
    rows
}

pub(crate) fn join(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[flag("wan")], "join", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let wan = match p.bool("wan") {
        Ok(w) => w,
        Err(e) => return fail(io, e),
    };
    if p.args.is_empty() {
        let _ = writeln!(io.err, "At least one address to join must be specified.\n");
        let _ = write!(io.err, "{}", super::help_of("join"));
        return 1;
    }
    let query: Vec<(&str, Option<&str>)> = if wan {
        vec![("wan", Some("1"))]
    } else {
        vec![]
    };
    let mut joins = 0;
    for addr in &p.args {
        let path = format!("/v1/agent/join/{}", encode(addr, false));
        match client.put(&path, &query, &[]).and_then(|r| r.success()) {
            Ok(_) => joins += 1,
            Err(e) => {
                let _ = writeln!(io.err, "Error joining address '{addr}': {e}");
            }
        }
    }
    if joins == 0 {
        return fail(io, "Failed to join any nodes.".into());
    }
    io.line(&format!(
        "Successfully joined cluster by contacting {joins} nodes."
    ));
    0
}

pub(crate) fn force_leave(args: &[String], io: &mut Io) -> i32 {
    let own = [flag("prune"), flag("wan")];
    let (p, client) = match command(args, &own, "force-leave", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (prune, wan) = match (p.bool("prune"), p.bool("wan")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(io, e),
    };
    if p.args.len() != 1 {
        let _ = writeln!(
            io.err,
            "A single node name must be specified to force leave.\n"
        );
        let _ = write!(io.err, "{}", super::help_of("force-leave"));
        return 1;
    }
    let mut query: Vec<(&str, Option<&str>)> = Vec::new();
    if prune {
        query.push(("prune", Some("1")));
    }
    if wan {
        query.push(("wan", Some("1")));
    }
    let path = format!("/v1/agent/force-leave/{}", encode(&p.args[0], false));
    match client.put(&path, &query, &[]).and_then(|r| r.success()) {
        Ok(_) => 0,
        Err(e) => fail(io, format!("Error force leaving: {e}")),
    }
}

pub(crate) const MEMBERS_USAGE: &str = "\
Usage: tern members [options]

  Outputs the members of a running agent's gossip pool.

  -detailed         every tag of every member
  -status=REGEXP    only members whose status matches (alive, leaving, left, failed)
  -wan              the WAN pool (servers of every datacenter) instead of the LAN pool

  -http-addr=ADDR  -datacenter=DC  -token=T";

pub(crate) const JOIN_USAGE: &str = "\
Usage: tern join [options] address ...

  Tells a running agent to join the cluster by specifying at least one
  existing member's gossip address (port 8301 when omitted).

  -wan              join the WAN pool (servers only; port 8302)

  -http-addr=ADDR  -token=T";

pub(crate) const FORCE_LEAVE_USAGE: &str = "\
Usage: tern force-leave [options] name

  Forces a member of the cluster to enter the \"left\" state. Note that if
  the member is still actually alive, it will eventually rejoin the
  cluster. This command is most useful for cleaning out \"failed\" nodes
  that are never coming back.

  -prune            remove the member from the member list at once (here
                    and on every member the news reaches) instead of
                    after the tombstone timeout
  -wan              force-leave from the WAN pool (name as <node>.<dc>)

  -http-addr=ADDR  -token=T";
