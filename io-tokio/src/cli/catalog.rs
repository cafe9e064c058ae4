//! `tern catalog datacenters|nodes|services` (Consul's command/catalog/list):
//! the catalog as the agent's HTTP API serves it, in Consul's columns.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::client::Client;
use super::flags::{flag, value, Parsed};
use super::kv::parse_json;
use super::table::columns;
use super::{command, fail, Io};

/// Consul's CLI message when a list is empty (printed on stderr, exit 0).
const NO_NODES: &str = "No nodes match the given query - try expanding your search.";
const NO_SERVICES: &str = "No services match the given query - try expanding your search.";

/// `tern catalog datacenters`: one per line.
pub(crate) fn datacenters(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], "catalog datacenters", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if !p.args.is_empty() {
        return fail(io, "Too many arguments (expected 0)".into());
    }
    let dcs: Vec<String> = match client
        .get("/v1/catalog/datacenters", &[])
        .and_then(|r| r.success())
        .and_then(|b| parse_json(&b))
    {
        Ok(d) => d,
        Err(e) => return fail(io, format!("Error listing datacenters: {e}")),
    };
    if dcs.is_empty() {
        return fail(io, "No datacenters found".into());
    }
    for dc in dcs {
        io.line(&dc);
    }
    0
}

/// A node as `/v1/catalog/nodes` and `/v1/catalog/service/<s>` give it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Node {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    datacenter: String,
    tagged_addresses: Option<BTreeMap<String, String>>,
    /// `Meta` on a node, `NodeMeta` on a service instance.
    meta: Option<BTreeMap<String, String>>,
    node_meta: Option<BTreeMap<String, String>>,
}

/// `-node-meta=key=value`, repeatable, as the `node-meta=key:value` query
/// pairs the API reads.
fn node_meta_query(p: &Parsed) -> Result<Vec<String>, String> {
    p.flags
        .iter()
        .filter(|(n, _)| *n == "node-meta")
        .map(|(_, v)| match v.split_once('=') {
            Some((k, v)) => Ok(format!("{k}:{v}")),
            None => Ok(format!("{v}:")),
        })
        .collect()
}

/// `tern catalog nodes [-service=S] [-node-meta=k=v] [-detailed] [-near=N]
/// [-filter=F]`: `Node  ID  Address  DC` (the ID's first group), or with
/// `-detailed` the whole ID and `TaggedAddresses` and `Meta` as sorted
/// `k=v, k=v`.
pub(crate) fn nodes(args: &[String], io: &mut Io) -> i32 {
    let own = [
        flag("detailed"),
        value("service"),
        value("node-meta"),
        value("near"),
        value("filter"),
    ];
    let (p, client) = match command(args, &own, "catalog nodes", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if !p.args.is_empty() {
        return fail(io, "Too many arguments (expected 0)".into());
    }
    let detailed = match p.bool("detailed") {
        Ok(d) => d,
        Err(e) => return fail(io, e),
    };
    let meta = match node_meta_query(&p) {
        Ok(m) => m,
        Err(e) => return fail(io, e),
    };
    if p.last("near").is_some_and(|n| !n.is_empty()) {
        let _ = writeln!(
            io.err,
            "Warning: -near is not supported by Tern (no network coordinates yet); nodes are listed by name"
        );
    }
    let mut query: Vec<(&str, Option<&str>)> = meta
        .iter()
        .map(|m| ("node-meta", Some(m.as_str())))
        .collect();
    if let Some(f) = p.last("filter") {
        query.push(("filter", Some(f)));
    }
    let path = match p.last("service").filter(|s| !s.is_empty()) {
        Some(s) => format!("/v1/catalog/service/{}", super::client::encode(s, false)),
        None => "/v1/catalog/nodes".into(),
    };
    let nodes: Vec<Node> = match client
        .get(&path, &query)
        .and_then(|r| r.success())
        .and_then(|b| parse_json(&b))
    {
        Ok(n) => n,
        Err(e) => return fail(io, format!("Error listing nodes: {e}")),
    };
    if nodes.is_empty() {
        let _ = writeln!(io.err, "{NO_NODES}");
        return 0;
    }
    let mut rows = vec![if detailed {
        cells(&["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"])
    } else {
        cells(&["Node", "ID", "Address", "DC"])
    }];
    for n in &nodes {
        if detailed {
            let meta = n.meta.as_ref().or(n.node_meta.as_ref());
            rows.push(vec![
                n.node.clone(),
                n.id.clone(),
                n.address.clone(),
                n.datacenter.clone(),
                key_values(n.tagged_addresses.as_ref()),
                key_values(meta),
            ]);
        } else {
            // The ID's first group, as Consul shortens it.
            let id = match n.id.find('-') {
                Some(i) if i > 0 => &n.id[..i],
                _ => &n.id,
            };
            rows.push(cells(&[&n.node, id, &n.address, &n.datacenter]));
        }
    }
    for line in columns(&rows) {
        io.line(&line);
    }
    0
}

/// `tern catalog services [-node=N] [-node-meta=k=v] [-tags] [-filter=F]`:
/// the names, sorted, one per line; with `-tags` each name's tags, sorted
/// and joined by commas, in a column padded as Go's tabwriter pads it.
pub(crate) fn services(args: &[String], io: &mut Io) -> i32 {
    let own = [
        flag("tags"),
        value("node"),
        value("node-meta"),
        value("filter"),
    ];
    let (p, client) = match command(args, &own, "catalog services", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if !p.args.is_empty() {
        return fail(io, "Too many arguments (expected 0)".into());
    }
    let tags = match p.bool("tags") {
        Ok(t) => t,
        Err(e) => return fail(io, e),
    };
    let meta = match node_meta_query(&p) {
        Ok(m) => m,
        Err(e) => return fail(io, e),
    };
    let mut query: Vec<(&str, Option<&str>)> = meta
        .iter()
        .map(|m| ("node-meta", Some(m.as_str())))
        .collect();
    if let Some(f) = p.last("filter") {
        query.push(("filter", Some(f)));
    }
    let services = match p.last("node").filter(|n| !n.is_empty()) {
        Some(node) => node_services(&client, node, &query),
        None => client
            .get("/v1/catalog/services", &query)
            .and_then(|r| r.success())
            .and_then(|b| parse_json::<BTreeMap<String, Vec<String>>>(&b)),
    };
    let services = match services {
        Ok(s) => s,
        Err(e) => return fail(io, format!("Error listing services: {e}")),
    };
    if services.is_empty() {
        let _ = writeln!(io.err, "{NO_SERVICES}");
        return 0;
    }
    if !tags {
        for name in services.keys() {
            io.line(name);
        }
        return 0;
    }
    // text/tabwriter with padding 6: a column as wide as its widest cell
    // plus six; the output is trimmed at both ends as a whole.
    let width = services
        .keys()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        + 6;
    let mut text = String::new();
    for (name, tags) in &services {
        let mut tags = tags.clone();
        tags.sort();
        let pad = width - name.chars().count();
        text.push_str(&format!("{name}{}{}\n", " ".repeat(pad), tags.join(",")));
    }
    io.line(text.trim());
    0
}

/// The services on one node, name to tags (`/v1/catalog/node/<n>`).
fn node_services(
    client: &Client,
    node: &str,
    query: &[(&str, Option<&str>)],
) -> Result<BTreeMap<String, Vec<String>>, String> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct NodeServices {
        services: Option<BTreeMap<String, Service>>,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct Service {
        service: String,
        tags: Option<Vec<String>>,
    }
    let path = format!("/v1/catalog/node/{}", super::client::encode(node, false));
    let body = client.get(&path, query)?.success()?;
    let found: Option<NodeServices> = parse_json(&body)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in found
        .and_then(|n| n.services)
        .unwrap_or_default()
        .into_values()
    {
        let tags = out.entry(s.service).or_default();
        for t in s.tags.unwrap_or_default() {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    Ok(out)
}

/// Consul's `mapToKV`: `k=v` pairs sorted by key, joined by `, `.
fn key_values(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

fn cells(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub(crate) const CATALOG_HELP: &str = "
Usage: tern catalog <subcommand> [options] [args]

  Lists what the catalog holds: datacenters, nodes and services, as
  Consul's catalog commands do. For example:

      $ tern catalog datacenters
      $ tern catalog nodes -detailed
      $ tern catalog nodes -service=web
      $ tern catalog services -tags

  Run a subcommand with -h for its options.
";

pub(crate) const DATACENTERS_USAGE: &str = "\
Usage: tern catalog datacenters [options]

  Lists the datacenters this agent knows of: its own, then those of the
  WAN pool.

  -http-addr=ADDR  -token=T";

pub(crate) const NODES_USAGE: &str = "\
Usage: tern catalog nodes [options]

  Lists the nodes in the catalog: Node, ID (its first group), Address, DC.

  -detailed          Also the whole ID, TaggedAddresses and Meta.
  -service=NAME      Only nodes that provide this service.
  -node-meta=KEY=VALUE
                     Only nodes with this metadata (repeatable: all must
                     match).
  -near=NODE         Accepted for Consul's scripts; Tern has no network
                     coordinates yet, so it warns and lists by name.
  -filter=EXPR       Passed on; Tern's API refuses filter expressions.
  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

pub(crate) const SERVICES_USAGE: &str = "\
Usage: tern catalog services [options]

  Lists the services in the catalog, one name per line.

  -tags              Also each service's tags, comma-separated.
  -node=NAME         Only the services on this node (name or ID).
  -node-meta=KEY=VALUE
                     Only services on nodes with this metadata
                     (repeatable).
  -filter=EXPR       Passed on; Tern's API refuses filter expressions.
  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_sorted_and_joined_as_consuls_map_to_kv() {
        let m: BTreeMap<String, String> = [("rack", "r1"), ("az", "a")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(key_values(Some(&m)), "az=a, rack=r1");
        assert_eq!(key_values(None), "");
    }

    #[test]
    fn node_meta_flags_become_the_apis_pairs() {
        let p = super::super::flags::parse(
            &["-node-meta=rack=r1".into(), "-node-meta=env".into()],
            &[value("node-meta")],
        )
        .unwrap();
        assert_eq!(node_meta_query(&p).unwrap(), ["rack:r1", "env:"]);
    }
}
