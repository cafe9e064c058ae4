//! `tern services register|deregister` (Consul's command/services): a
//! service registered with the local agent, from flags or from the
//! `service`/`services` blocks of agent config files (HCL or JSON), through
//! `/v1/agent/service/register` and `/v1/agent/service/deregister/<id>`.

use serde_json::{Map, Value};

use crate::config::services::service_to_api;

use super::flags::{value, Parsed};
use super::{command, fail, Io};

pub(crate) const SERVICES_HELP: &str = "
Usage: tern services <subcommand> [options] [args]

  Registers and deregisters services with the local agent, which runs
  their checks and keeps the catalog in line by anti-entropy. For example:

      $ tern services register -name=web -port=80
      $ tern services register web.hcl
      $ tern services deregister -id=web

  Run a subcommand with -h for its options.
";

pub(crate) const REGISTER_USAGE: &str = "\
Usage: tern services register [options] [FILE...]

  Registers a service with the local agent: either the one the flags
  describe, or every service defined in the given config files (HCL or
  JSON, in `service { ... }` or `services = [ ... ]` blocks as an agent's
  config takes them). The agent keeps it in its data dir and syncs it to
  the catalog.

      $ tern services register -name=web -port=80 -tag=v1
      $ tern services register web.hcl

  -name=NAME                 the service's name
  -id=ID                     its ID (default: the name)
  -address=ADDR              its address (default: the node's)
  -port=PORT                 its port
  -tag=TAG                   a tag; repeat for more
  -meta=KEY=VALUE            a metadata pair; repeat for more
  -tagged-address=KEY=ADDR   a tagged address (host:port or host); repeat
  -kind=KIND                 the service kind (e.g. mesh-gateway)
  -http-addr=ADDR  -datacenter=DC  -token=T";

pub(crate) const DEREGISTER_USAGE: &str = "\
Usage: tern services deregister [options] [FILE...]

  Deregisters a service from the local agent: the one named by -id, or
  every service defined in the given config files (by ID, or by name when
  it has none). The agent removes it from the catalog too.

      $ tern services deregister -id=web
      $ tern services deregister web.hcl

  -id=ID                     the ID of the service to deregister
  -http-addr=ADDR  -datacenter=DC  -token=T";

/// Every service a config file defines (`service` blocks and `services`
/// lists), in the API's JSON. HCL unless the file ends in `.json`.
fn services_in_file(path: &str) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let doc: Value = if path.ends_with(".json") {
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?
    } else {
        hcl::from_str(&text).map_err(|e| format!("{path}: {e}"))?
    };
    let Value::Object(top) = doc else {
        return Err(format!("{path}: expected a config file"));
    };
    let mut out = Vec::new();
    for (k, v) in &top {
        let (key, items) = match (k.as_str(), v) {
            ("service", Value::Array(items)) | ("services", Value::Array(items)) => {
                (k.as_str(), items.clone())
            }
            ("service", one) | ("services", one) => (k.as_str(), vec![one.clone()]),
            _ => {
                return Err(format!(
                    "{path}: invalid config key {k} (only service and services are read here)"
                ))
            }
        };
        for item in items {
            out.push(service_to_api(&item, key).map_err(|e| format!("{path}: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err(format!("{path}: no service definitions"));
    }
    Ok(out)
}

/// The service the flags describe.
fn service_from_flags(p: &Parsed) -> Result<Value, String> {
    let mut s = Map::new();
    let all = |name: &str| -> Vec<&str> {
        p.flags
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    s.insert(
        "Name".into(),
        Value::from(p.last("name").unwrap_or_default()),
    );
    for (flag, key) in [("id", "ID"), ("address", "Address"), ("kind", "Kind")] {
        if let Some(v) = p.last(flag).filter(|v| !v.is_empty()) {
            s.insert(key.into(), Value::from(v));
        }
    }
    if let Some(port) = p.last("port") {
        let n: i64 = port
            .parse()
            .map_err(|_| format!("invalid value {port:?} for flag -port: parse error"))?;
        s.insert("Port".into(), Value::from(n));
    }
    let tags = all("tag");
    if !tags.is_empty() {
        s.insert("Tags".into(), Value::from(tags));
    }
    let mut meta = Map::new();
    for kv in all("meta") {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        meta.insert(k.to_owned(), Value::from(v));
    }
    if !meta.is_empty() {
        s.insert("Meta".into(), Value::Object(meta));
    }
    let mut tagged = Map::new();
    for kv in all("tagged-address") {
        let (k, addr) = kv
            .split_once('=')
            .ok_or_else(|| format!("Invalid Tagged Address: {kv:?} is not KEY=ADDRESS"))?;
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                let port: i64 = p
                    .parse()
                    .map_err(|_| format!("Invalid Tagged Address: bad port in {addr:?}"))?;
                (h.trim_start_matches('[').trim_end_matches(']'), port)
            }
            _ => (addr, 0),
        };
        tagged.insert(
            k.to_owned(),
            serde_json::json!({"Address": host, "Port": port}),
        );
    }
    if !tagged.is_empty() {
        s.insert("TaggedAddresses".into(), Value::Object(tagged));
    }
    Ok(Value::Object(s))
}

/// `tern services register`.
pub(crate) fn register(args: &[String], io: &mut Io) -> i32 {
    let own = [
        value("name"),
        value("id"),
        value("address"),
        value("port"),
        value("tag"),
        value("meta"),
        value("tagged-address"),
        value("kind"),
        value("socket"),
    ];
    let (p, client) = match command(args, &own, "services register", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let has_name = p.last("name").is_some_and(|n| !n.is_empty());
    if p.args.is_empty() && !has_name {
        return fail(
            io,
            "Service registration requires at least one argument or flags.".into(),
        );
    }
    if !p.args.is_empty() && has_name {
        return fail(
            io,
            "Service registration requires arguments or -id, not both.".into(),
        );
    }
    if p.last("socket").is_some_and(|s| !s.is_empty()) {
        return fail(io, "Error: -socket is not supported by this agent (services on Unix sockets are not implemented)".into());
    }
    let services = if has_name {
        match service_from_flags(&p) {
            Ok(s) => vec![s],
            Err(e) => return fail(io, e),
        }
    } else {
        let mut all = Vec::new();
        for path in &p.args {
            match services_in_file(path) {
                Ok(s) => all.extend(s),
                Err(e) => return fail(io, format!("Error: {e}")),
            }
        }
        all
    };
    for s in services {
        let name = s["Name"].as_str().unwrap_or_default().to_owned();
        let body = s.to_string();
        if let Err(e) = client
            .put("/v1/agent/service/register", &[], body.as_bytes())
            .and_then(|r| r.success())
        {
            return fail(io, format!("Error registering service {name:?}: {e}"));
        }
        io.line(&format!("Registered service: {name}"));
    }
    0
}

/// `tern services deregister`.
pub(crate) fn deregister(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[value("id")], "services deregister", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let id = p.last("id").filter(|i| !i.is_empty());
    if p.args.is_empty() && id.is_none() {
        return fail(
            io,
            "Service deregistration requires at least one argument or -id.".into(),
        );
    }
    if !p.args.is_empty() && id.is_some() {
        return fail(
            io,
            "Service deregistration requires arguments or -id, not both.".into(),
        );
    }
    let ids: Vec<String> = match id {
        Some(id) => vec![id.to_owned()],
        None => {
            let mut ids = Vec::new();
            for path in &p.args {
                match services_in_file(path) {
                    Ok(s) => ids.extend(s.iter().filter_map(|s| {
                        s["ID"]
                            .as_str()
                            .filter(|i| !i.is_empty())
                            .or_else(|| s["Name"].as_str())
                            .filter(|i| !i.is_empty())
                            .map(str::to_owned)
                    })),
                    Err(e) => return fail(io, format!("Error: {e}")),
                }
            }
            ids
        }
    };
    for id in ids {
        let path = format!(
            "/v1/agent/service/deregister/{}",
            super::client::encode(&id, false)
        );
        if let Err(e) = client.put(&path, &[], b"").and_then(|r| r.success()) {
            return fail(io, format!("Error deregistering service {id:?}: {e}"));
        }
        io.line(&format!("Deregistered service: {id}"));
    }
    0
}
