//! `keygen` and `keyring`, as Consul's command/keygen and command/keyring
//! print them: `keyring` asks the agent's `/v1/operator/keyring`, which
//! rotates the key on every member of every pool.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::flags::{flag, value};
use super::kv::parse_json;
use super::{command, fail, Io};

pub(crate) const KEYGEN_USAGE: &str = "Usage: tern keygen

  Generates a new encryption key that can be used to configure the
  agent to encrypt traffic. The output of this command is already
  in the proper format that the agent expects.
";

pub(crate) const KEYRING_USAGE: &str = "Usage: tern keyring [options]

  Manages encryption keys used for gossip messages. Gossip encryption is
  optional. When enabled, this command may be used to examine active encryption
  keys in the cluster, add new keys, and remove old ones. When combined, this
  functionality provides the ability to perform key rotation cluster-wide,
  without disrupting the cluster.

  All operations performed by this command can only be run against server nodes,
  and affect both the LAN and WAN keyrings in lock-step.

  All variations of the keyring command return 0 if all nodes reply and there
  are no errors. If any node fails to reply or reports failure, the exit code
  will be 1.

Command Options:

  -install=<key>    Install a new encryption key. This will broadcast the new
                    key to all members in the cluster.

  -list             List all keys currently in use within the cluster.

  -local-only       Setting this to true will force the keyring query to only
                    hit local servers (no WAN traffic). Only with -list.

  -relay-factor=<n> Accepted for Consul's sake (0 to 5); Tern's members answer
                    directly.

  -remove=<key>     Remove the given key from the cluster. This operation may
                    only be performed on keys which are not currently the
                    primary key.

  -use=<key>        Change the primary encryption key, which is used to
                    encrypt messages. The key must already be installed before
                    this operation can succeed.

HTTP API Options:

  -http-addr=<address>  The agent's HTTP address (also TERN_HTTP_ADDR,
                        CONSUL_HTTP_ADDR). Default: 127.0.0.1:8500.
";

/// `tern keygen`: 32 random bytes, base64 (Consul's command/keygen).
pub(crate) fn keygen(args: &[String], io: &mut Io) -> i32 {
    if let Some(extra) = args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    match crate::keyring::keygen() {
        Ok(key) => {
            io.line(&key);
            0
        }
        Err(e) => fail(io, format!("Error reading random data: {e}")),
    }
}

/// One pool's keys, as `GET /v1/operator/keyring` lists them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Response {
    #[serde(rename = "WAN")]
    wan: bool,
    datacenter: String,
    segment: String,
    keys: BTreeMap<String, u64>,
    num_nodes: u64,
}

pub(crate) fn keyring(args: &[String], io: &mut Io) -> i32 {
    let own = [
        value("install"),
        value("use"),
        value("remove"),
        flag("list"),
        flag("local-only"),
        value("relay-factor"),
    ];
    let (p, client) = match command(args, &own, "keyring", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Some(extra) = p.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    let (list, local_only) = match (p.bool("list"), p.bool("local-only")) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(e), _) | (_, Err(e)) => return fail(io, e),
    };
    let actions: Vec<(&str, &str)> = ["install", "use", "remove"]
        .into_iter()
        .filter_map(|a| p.last(a).filter(|k| !k.is_empty()).map(|k| (a, k)))
        .collect();
    if actions.len() + usize::from(list) > 1 {
        return fail(io, "Only a single action is allowed".into());
    }
    if actions.is_empty() && !list {
        let _ = io.err.write_all(super::help_of("keyring").as_bytes());
        return 1;
    }
    let relay = p.last("relay-factor").unwrap_or("0");
    if !matches!(relay.parse::<i64>(), Ok(0..=5)) {
        return fail(
            io,
            "Error parsing relay factor: Relay factor must be in range: [0, 5]".into(),
        );
    }
    if local_only && !list {
        return fail(io, "Error: -local-only can only be used with -list".into());
    }
    if list {
        io.line("==> Gathering installed encryption keys...");
        let query: Vec<(&str, Option<&str>)> = if local_only {
            vec![("local-only", Some("true"))]
        } else {
            vec![]
        };
        let body = match client
            .get("/v1/operator/keyring", &query)
            .and_then(|r| r.success())
        {
            Ok(b) => b,
            Err(e) => return fail(io, format!("error: {e}")),
        };
        let responses: Vec<Response> = match parse_json(&body) {
            Ok(r) => r,
            Err(e) => return fail(io, format!("error: {e}")),
        };
        for r in responses {
            let mut pool = format!("{} (LAN)", r.datacenter);
            if !r.segment.is_empty() {
                pool.push_str(&format!(" [{}]", r.segment));
            }
            if r.wan {
                pool = "WAN".into();
            }
            io.line("");
            io.line(&format!("{pool}:"));
            for (key, n) in &r.keys {
                io.line(&format!("  {key} [{n}/{}]", r.num_nodes));
            }
        }
        return 0;
    }
    let (action, key) = actions[0];
    let (method, banner) = match action {
        "install" => ("POST", "==> Installing new gossip encryption key..."),
        "use" => ("PUT", "==> Changing primary gossip encryption key..."),
        _ => ("DELETE", "==> Removing gossip encryption key..."),
    };
    io.line(banner);
    let body = serde_json::json!({ "Key": key }).to_string();
    match client
        .with_body(method, "/v1/operator/keyring", body.as_bytes())
        .and_then(|r| r.success())
    {
        Ok(_) => 0,
        Err(e) => fail(io, format!("error: {e}")),
    }
}
