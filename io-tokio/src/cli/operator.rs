//! `operator raft list-peers`, `remove-peer`, `transfer-leader` and `leave`.

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
    let (p, client) = match command(args, &[], "operator raft list-peers", io) {
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
    let (p, client) = match command(args, &own, "operator raft remove-peer", io) {
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

/// `tern operator raft transfer-leader [-id=ID]` (Consul's
/// command/operator/raft/transferleader): `POST
/// /v1/operator/raft/transfer-leader`, then `Success`.
pub(crate) fn transfer_leader(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[value("id")], "operator raft transfer-leader", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    let query: Vec<(&str, Option<&str>)> = p
        .last("id")
        .filter(|id| !id.is_empty())
        .map(|id| ("id", Some(id)))
        .into_iter()
        .collect();
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct Answer {
        success: bool,
    }
    let answer = client
        .post("/v1/operator/raft/transfer-leader", &query)
        .and_then(|r| r.success())
        .and_then(|b| parse_json::<Answer>(&b));
    match answer {
        Ok(a) if a.success => {
            io.line("Success");
            0
        }
        Ok(_) => fail(io, "Error transferring leadership".into()),
        Err(e) => fail(io, format!("Error transferring leadership: {e}")),
    }
}

pub(crate) fn leave(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], "leave", io) {
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

pub(crate) const LIST_PEERS_USAGE: &str = "\
Usage: tern operator raft list-peers [options]

  Lists the servers in the Raft configuration.

  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

pub(crate) const REMOVE_PEER_USAGE: &str = "\
Usage: tern operator raft remove-peer [options] (-id=ID | -address=IP:PORT)

  Removes a server from the Raft configuration.

  -http-addr=ADDR  -datacenter=DC  -token=T";

pub(crate) const TRANSFER_LEADER_USAGE: &str = "\
Usage: tern operator raft transfer-leader [options]

  Hands Raft leadership to another voter and waits until it leads.

  -id=ID           The voter to lead (its node ID); by default the most
                   up-to-date voter that answers.
  -http-addr=ADDR  -datacenter=DC  -token=T";

pub(crate) const LEAVE_USAGE: &str = "\
Usage: tern leave [options]

  Makes the agent leave the cluster gracefully and shut down.

  -http-addr=ADDR  -token=T";
