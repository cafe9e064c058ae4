//! `operator raft list-peers`, `operator raft remove-peer`, `members` and
//! `leave`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::client::Client;
use super::flags::value;
use super::kv::parse_json;
use super::table::columns;
use super::{command, fail, Io};

/// `GET /v1/operator/raft/configuration`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RaftConfiguration {
    servers: Vec<RaftServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    protocol_version: String,
    voter: bool,
}

fn raft_configuration(client: &Client) -> Result<RaftConfiguration, String> {
    let body = client
        .get("/v1/operator/raft/configuration", &[])?
        .success()?;
    parse_json(&body)
}

pub(crate) fn list_peers(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], LIST_PEERS_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    let config = match raft_configuration(&client) {
        Ok(c) => c,
        Err(e) => return fail(io, format!("Error getting peers: {e}")),
    };
    let mut rows = vec![cells(&[
        "Node",
        "ID",
        "Address",
        "State",
        "Voter",
        "RaftProtocol",
    ])];
    for s in &config.servers {
        let state = if s.leader { "leader" } else { "follower" };
        let protocol = if s.protocol_version.is_empty() {
            "<=1"
        } else {
            &s.protocol_version
        };
        rows.push(cells(&[
            &s.node,
            &s.id,
            &s.address,
            state,
            &s.voter.to_string(),
            protocol,
        ]));
    }
    for line in columns(&rows) {
        io.line(&line);
    }
    0
}

pub(crate) fn remove_peer(args: &[String], io: &mut Io) -> i32 {
    let own = [value("id"), value("address")];
    let (p, client) = match command(args, &own, REMOVE_PEER_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let id = p.last("id").filter(|s| !s.is_empty());
    let address = p.last("address").filter(|s| !s.is_empty());
    let (query, done) = match (id, address) {
        (None, None) => {
            return fail(
                io,
                "Error removing peer: an address or id is required for the peer to remove".into(),
            )
        }
        (Some(_), Some(_)) => {
            return fail(
                io,
                "Error removing peer: cannot give both an address and id".into(),
            )
        }
        (Some(id), None) => (("id", id), format!("Removed peer with id {id:?}")),
        (None, Some(a)) => (("address", a), format!("Removed peer with address {a:?}")),
    };
    let removed = client
        .delete("/v1/operator/raft/peer", &[(query.0, Some(query.1))])
        .and_then(|r| r.success());
    match removed {
        Ok(_) => {
            io.line(&done);
            0
        }
        Err(e) => fail(io, format!("Error removing peer: {e}")),
    }
}

/// `GET /v1/agent/members`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Member {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<String, String>,
    status: u8,
}

/// The parts of `GET /v1/agent/self` the CLI reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct AgentSelf {
    config: SelfConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SelfConfig {
    datacenter: String,
    node_name: String,
    version: String,
}

pub(crate) fn members(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], MEMBERS_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    match member_rows(&client) {
        Ok(rows) => {
            for line in columns(&rows) {
                io.line(&line);
            }
            0
        }
        Err(e) => fail(io, format!("Error retrieving members: {e}")),
    }
}

const MEMBER_HEADER: [&str; 9] = [
    "Node",
    "Address",
    "Status",
    "Type",
    "Build",
    "Protocol",
    "DC",
    "Partition",
    "Segment",
];

/// The agent's member list if it keeps one (gossip), otherwise one alive
/// server per entry of the Raft configuration.
fn member_rows(client: &Client) -> Result<Vec<Vec<String>>, String> {
    let reply = client.get("/v1/agent/members", &[])?;
    let mut members: Vec<Member> = if reply.status == 404 {
        Vec::new()
    } else {
        parse_json(&reply.success()?)?
    };
    if members.is_empty() {
        return raft_member_rows(client);
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = vec![cells(&MEMBER_HEADER)];
    for m in &members {
        let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_default();
        let build = match tag("build") {
            b if b.is_empty() => "<unknown>".to_string(),
            b => b.split(':').next().unwrap_or_default().to_string(),
        };
        let partition = Some(tag("ap"))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".into());
        let (kind, segment) = match tag("role").as_str() {
            "consul" => (
                "server",
                Some(tag("segment"))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "<all>".into()),
            ),
            "node" => (
                "client",
                Some(tag("segment"))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "<default>".into()),
            ),
            _ => ("unknown", tag("segment")),
        };
        let status = match m.status {
            1 => "alive",
            2 => "leaving",
            3 => "left",
            4 => "failed",
            _ => "none",
        };
        let addr = match m.addr.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, m.port).to_string(),
            Err(_) => format!("{}:{}", m.addr, m.port),
        };
        rows.push(vec![
            m.name.clone(),
            addr,
            status.into(),
            kind.into(),
            build,
            tag("vsn"),
            tag("dc"),
            partition,
            segment,
        ]);
    }
    Ok(rows)
}

/// Until Tern gossips, its members are the servers in the Raft
/// configuration, each reported alive at its server address. Only the local
/// server's build is known (from `/v1/agent/self`).
fn raft_member_rows(client: &Client) -> Result<Vec<Vec<String>>, String> {
    let me: AgentSelf = parse_json(&client.get("/v1/agent/self", &[])?.success()?)?;
    let mut servers = raft_configuration(client)?.servers;
    servers.sort_by(|a, b| a.node.cmp(&b.node));
    let mut rows = vec![cells(&MEMBER_HEADER)];
    for s in &servers {
        let build = if s.node == me.config.node_name && !me.config.version.is_empty() {
            me.config.version.clone()
        } else {
            "<unknown>".to_string()
        };
        rows.push(vec![
            s.node.clone(),
            s.address.clone(),
            "alive".into(),
            "server".into(),
            build,
            "2".into(),
            me.config.datacenter.clone(),
            "default".into(),
            "<all>".into(),
        ]);
    }
    Ok(rows)
}

pub(crate) fn leave(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], LEAVE_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if !p.args.is_empty() {
        return fail(io, "This command takes no arguments".into());
    }
    match client
        .put("/v1/agent/leave", &[], &[])
        .and_then(|r| r.success())
    {
        Ok(_) => {
            io.line("Graceful leave complete");
            0
        }
        Err(e) => fail(io, format!("Error leaving: {e}")),
    }
}

fn cells(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const LIST_PEERS_USAGE: &str = "\
Usage: tern operator raft list-peers [options]

  Lists the servers in the Raft configuration.

  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

const REMOVE_PEER_USAGE: &str = "\
Usage: tern operator raft remove-peer [options] (-id=ID | -address=IP:PORT)

  Removes a server from the Raft configuration.

  -http-addr=ADDR  -datacenter=DC  -token=T";

const MEMBERS_USAGE: &str = "\
Usage: tern members [options]

  Lists the members of the datacenter.

  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

const LEAVE_USAGE: &str = "\
Usage: tern leave [options]

  Makes the agent leave the cluster gracefully and shut down.

  -http-addr=ADDR  -token=T";
