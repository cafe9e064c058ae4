//! `kv get`, `kv put`, `kv delete`: Consul's `command/kv/*`.

use serde::Deserialize;

use super::client::{base64_decode, encode, Client};
use super::flags::{flag, value, Parsed};
use super::{command, fail, Io};

/// One entry of `GET /v1/kv/<key>`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct KvPair {
    key: String,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    flags: u64,
    value: Option<String>,
    session: Option<String>,
}

impl KvPair {
    fn bytes(&self) -> Result<Vec<u8>, String> {
        match &self.value {
            None => Ok(Vec::new()),
            Some(v) => {
                base64_decode(v).ok_or_else(|| format!("the value of {} is not base64", self.key))
            }
        }
    }
}

fn path(key: &str) -> String {
    format!("/v1/kv/{}", encode(key, true))
}

pub(crate) fn get(args: &[String], io: &mut Io) -> i32 {
    let own = [
        flag("recurse"),
        flag("keys"),
        value("separator"),
        flag("detailed"),
    ];
    let (p, client) = match command(args, &own, GET_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match run_get(&p, &client, io) {
        Ok(code) => code,
        Err(msg) => fail(io, msg),
    }
}

fn run_get(p: &Parsed, client: &Client, io: &mut Io) -> Result<i32, String> {
    let (recurse, keys, detailed) = (p.bool("recurse")?, p.bool("keys")?, p.bool("detailed")?);
    let key = match p.args.as_slice() {
        [] if recurse || keys => String::new(),
        [] => return Err("Error! Missing KEY argument".into()),
        [k] => k.clone(),
        more => {
            return Err(format!(
                "Too many arguments (expected 1, got {})",
                more.len()
            ))
        }
    };
    let query_err = |e: String| format!("Error querying Consul agent: {e}");
    if keys {
        let separator = p.last("separator").unwrap_or("/");
        let mut query = vec![("keys", None)];
        if !separator.is_empty() && !recurse {
            query.push(("separator", Some(separator)));
        }
        let reply = client.get(&path(&key), &query).map_err(query_err)?;
        if reply.status == 404 {
            return Ok(0);
        }
        let body = reply.success().map_err(query_err)?;
        let list: Vec<String> = parse_json(&body).map_err(query_err)?;
        for k in list {
            io.line(&k);
        }
        return Ok(0);
    }
    let query: &[(&str, Option<&str>)] = if recurse { &[("recurse", None)] } else { &[] };
    let reply = client.get(&path(&key), query).map_err(query_err)?;
    if reply.status == 404 {
        if recurse {
            return Ok(0);
        }
        return Err(format!("Error! No key exists at: {key}"));
    }
    let body = reply.success().map_err(query_err)?;
    let pairs: Vec<KvPair> = parse_json(&body).map_err(query_err)?;
    if !recurse {
        let Some(pair) = pairs.first() else {
            return Err(format!("Error! No key exists at: {key}"));
        };
        if detailed {
            write_detailed(pair, io).map_err(query_err)?;
        } else {
            let mut v = pair.bytes().map_err(query_err)?;
            v.push(b'\n');
            io.bytes(&v);
        }
        return Ok(0);
    }
    for (i, pair) in pairs.iter().enumerate() {
        if detailed {
            write_detailed(pair, io).map_err(query_err)?;
            if i + 1 < pairs.len() {
                io.line("");
            }
        } else {
            let mut line = format!("{}:", pair.key).into_bytes();
            line.extend(pair.bytes().map_err(query_err)?);
            line.push(b'\n');
            io.bytes(&line);
        }
    }
    Ok(0)
}

/// Consul's `prettyKVPair`: a tabwriter with 6 spaces of padding.
fn write_detailed(pair: &KvPair, io: &mut Io) -> Result<(), String> {
    let session = pair
        .session
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("-");
    let value = String::from_utf8_lossy(&pair.bytes()?).into_owned();
    let rows = [
        ("CreateIndex", pair.create_index.to_string()),
        ("Flags", pair.flags.to_string()),
        ("Key", pair.key.clone()),
        ("LockIndex", pair.lock_index.to_string()),
        ("ModifyIndex", pair.modify_index.to_string()),
        ("Session", session.to_string()),
        ("Value", value),
    ];
    for (name, v) in rows {
        io.line(&format!("{name:<17}{v}"));
    }
    Ok(())
}

pub(crate) fn put(args: &[String], io: &mut Io) -> i32 {
    let own = [value("flags"), flag("cas"), value("modify-index")];
    let (p, client) = match command(args, &own, PUT_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match run_put(&p, &client, io) {
        Ok(code) => code,
        Err(msg) => fail(io, msg),
    }
}

fn run_put(p: &Parsed, client: &Client, io: &mut Io) -> Result<i32, String> {
    let flags = p.number("flags")?.unwrap_or(0);
    let cas = p.bool("cas")?;
    let modify_index = p.number("modify-index")?.unwrap_or(0);
    let (key, data) = match p.args.as_slice() {
        [] => return Err("Error! Missing KEY argument".into()),
        [k] => (k.clone(), Vec::new()),
        [k, v] => (k.clone(), load_value(v, io)?),
        more => {
            return Err(format!(
                "Too many arguments (expected 1 or 2, got {})",
                more.len()
            ))
        }
    };
    if key.is_empty() {
        return Err("Error! Missing KEY argument".into());
    }
    let flags_text = flags.to_string();
    let index_text = modify_index.to_string();
    let mut query = Vec::new();
    if flags != 0 {
        query.push(("flags", Some(flags_text.as_str())));
    }
    if cas {
        query.push(("cas", Some(index_text.as_str())));
    }
    let written = client
        .put(&path(&key), &query, &data)
        .and_then(|r| r.success())
        .and_then(|body| parse_json::<bool>(&body));
    match (written, cas) {
        (Ok(true), _) => {
            io.line(&format!("Success! Data written to: {key}"));
            Ok(0)
        }
        (Ok(false), _) => Err(format!("Error! Did not write to {key}: CAS failed")),
        (Err(e), true) => Err(format!("Error! Did not write to {key}: {e}")),
        (Err(e), false) => Err(format!("Error! Failed writing data: {e}")),
    }
}

/// VALUE as given, `-` for stdin, `@path` for a file's contents.
fn load_value(v: &str, io: &mut Io) -> Result<Vec<u8>, String> {
    if v == "-" {
        let mut data = Vec::new();
        io.input
            .read_to_end(&mut data)
            .map_err(|e| format!("Error! Failed to read stdin: {e}"))?;
        return Ok(data);
    }
    if let Some(file) = v.strip_prefix('@') {
        return std::fs::read(file).map_err(|e| format!("Error! Failed to read file {file}: {e}"));
    }
    Ok(v.as_bytes().to_vec())
}

pub(crate) fn delete(args: &[String], io: &mut Io) -> i32 {
    let own = [flag("recurse"), flag("cas"), value("modify-index")];
    let (p, client) = match command(args, &own, DELETE_USAGE, io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match run_delete(&p, &client, io) {
        Ok(code) => code,
        Err(msg) => fail(io, msg),
    }
}

fn run_delete(p: &Parsed, client: &Client, io: &mut Io) -> Result<i32, String> {
    let (recurse, cas) = (p.bool("recurse")?, p.bool("cas")?);
    let modify_index = p.number("modify-index")?.unwrap_or(0);
    let key = match p.args.as_slice() {
        [] if recurse => String::new(),
        [] => return Err("Error! Missing KEY argument".into()),
        [k] => k.clone(),
        more => {
            return Err(format!(
                "Too many arguments (expected 1, got {})",
                more.len()
            ))
        }
    };
    if key.is_empty() && !recurse {
        return Err("Error! Missing KEY argument".into());
    }
    if cas && recurse {
        return Err("Cannot specify both -cas and -recurse!".into());
    }
    if cas && modify_index == 0 {
        return Err("Must specify -modify-index with -cas!".into());
    }
    let index_text = modify_index.to_string();
    let query: Vec<(&str, Option<&str>)> = if recurse {
        vec![("recurse", None)]
    } else if cas {
        vec![("cas", Some(index_text.as_str()))]
    } else {
        Vec::new()
    };
    let deleted = client
        .delete(&path(&key), &query)
        .and_then(|r| r.success())
        .and_then(|body| parse_json::<bool>(&body));
    match deleted {
        Ok(true) if recurse => {
            io.line(&format!("Success! Deleted keys with prefix: {key}"));
            Ok(0)
        }
        Ok(true) => {
            io.line(&format!("Success! Deleted key: {key}"));
            Ok(0)
        }
        Ok(false) => Err(format!("Error! Did not delete key {key}: CAS failed")),
        Err(e) if recurse => Err(format!("Error! Did not delete prefix {key}: {e}")),
        Err(e) => Err(format!("Error! Did not delete key {key}: {e}")),
    }
}

/// Decode an agent's JSON answer.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("unexpected answer from the agent ({e}): {}", snippet(body)))
}

fn snippet(body: &[u8]) -> String {
    let text = super::client::one_line(&String::from_utf8_lossy(body));
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

const GET_USAGE: &str = "\
Usage: tern kv get [options] [KEY_OR_PREFIX]

  Prints the value at KEY. With -recurse, every key:value under the prefix;
  with -keys, the keys under the prefix up to -separator (default \"/\").

  -recurse  -keys  -separator=S  -detailed
  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

const PUT_USAGE: &str = "\
Usage: tern kv put [options] KEY [VALUE]

  Writes VALUE (\"-\" reads stdin, \"@file\" reads a file) at KEY.

  -flags=N  -cas -modify-index=N
  -http-addr=ADDR  -datacenter=DC  -token=T";

const DELETE_USAGE: &str = "\
Usage: tern kv delete [options] KEY_OR_PREFIX

  Deletes KEY, or with -recurse every key under the prefix.

  -recurse  -cas -modify-index=N
  -http-addr=ADDR  -datacenter=DC  -token=T";
