//! `kv get`, `kv put`, `kv delete`: Consul's `command/kv/*`.

use serde::Deserialize;

use super::client::{base64_decode, base64_decode_strict, base64_encode, encode, Client};
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
    /// The value as `kv get` prints it: raw, or in base64 with `-base64`.
    fn shown(&self, base64: bool) -> Result<Vec<u8>, String> {
        let raw = self.bytes()?;
        Ok(match base64 {
            true => base64_encode(&raw).into_bytes(),
            false => raw,
        })
    }

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
        flag("base64"),
    ];
    let (p, client) = match command(args, &own, "kv get", io) {
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
    let base64 = p.bool("base64")?;
    let key = match p.args.as_slice() {
        [] => String::new(),
        // Keys never start with "/"; Consul strips one a user typed.
        [k] => k.strip_prefix('/').unwrap_or(k).to_string(),
        more => {
            return Err(format!(
                "Too many arguments (expected 1, got {})",
                more.len()
            ))
        }
    };
    if key.is_empty() && !(recurse || keys) {
        return Err("Error! Missing KEY argument".into());
    }
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
            write_detailed(pair, base64, io).map_err(query_err)?;
        } else {
            let mut v = pair.shown(base64).map_err(query_err)?;
            v.push(b'\n');
            io.bytes(&v);
        }
        return Ok(0);
    }
    for (i, pair) in pairs.iter().enumerate() {
        if detailed {
            write_detailed(pair, base64, io).map_err(query_err)?;
            if i + 1 < pairs.len() {
                io.line("");
            }
        } else {
            let mut line = format!("{}:", pair.key).into_bytes();
            line.extend(pair.shown(base64).map_err(query_err)?);
            line.push(b'\n');
            io.bytes(&line);
        }
    }
    Ok(0)
}

/// Consul's `prettyKVPair`: a tabwriter with 6 spaces of padding.
fn write_detailed(pair: &KvPair, base64: bool, io: &mut Io) -> Result<(), String> {
    let session = pair
        .session
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("-");
    let value = String::from_utf8_lossy(&pair.shown(base64)?).into_owned();
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
    let own = [
        value("flags"),
        flag("cas"),
        value("modify-index"),
        flag("base64"),
        value("session"),
        flag("acquire"),
        flag("release"),
    ];
    let (p, client) = match command(args, &own, "kv put", io) {
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
    let (key, mut data) = match p.args.as_slice() {
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
    if p.bool("base64")? {
        // Go's base64 decoder skips CR and LF wherever they are (so an
        // `echo`'s newline or a wrapped file decodes); nothing else.
        let text: Vec<u8> = data
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect();
        data = base64_decode_strict(&text)
            .map_err(|e| format!("Error! Cannot base 64 decode data: {e}"))?;
    }
    let (acquire, release) = (p.bool("acquire")?, p.bool("release")?);
    let session = p.last("session").unwrap_or_default();
    if (acquire || release) && session.is_empty() {
        return Err("Error! Missing -session (required with -acquire and -release)".into());
    }
    if cas && modify_index == 0 {
        return Err("Must specify -modify-index with -cas!".into());
    }
    let flags_text = flags.to_string();
    let index_text = modify_index.to_string();
    let mut query = Vec::new();
    if flags != 0 {
        query.push(("flags", Some(flags_text.as_str())));
    }
    // Consul's command takes the first of -cas, -acquire, -release.
    if cas {
        query.push(("cas", Some(index_text.as_str())));
    } else if acquire || release {
        let verb = if acquire { "acquire" } else { "release" };
        query.push((verb, Some(session)));
        let done = client
            .put(&path(&key), &query, &data)
            .and_then(|r| r.success())
            .and_then(|body| parse_json::<bool>(&body));
        return match (done, acquire) {
            (Ok(true), true) => {
                io.line(&format!("Success! Lock acquired on: {key}"));
                Ok(0)
            }
            (Ok(true), false) => {
                io.line(&format!("Success! Lock released on: {key}"));
                Ok(0)
            }
            (Ok(false), true) => Err("Error! Did not acquire lock".into()),
            (Ok(false), false) => Err("Error! Did not release lock".into()),
            (Err(e), true) => Err(format!("Error! Failed writing data: {e}")),
            // Consul's command prints the key here, not the error.
            (Err(_), false) => Err(format!("Error! Failed writing data: {key}")),
        };
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
    let (p, client) = match command(args, &own, "kv delete", io) {
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

/// One entry of `kv export`'s JSON (Consul's command/kv/impexp `Entry`):
/// lower-case keys, the value in standard base64.
#[derive(Debug, serde::Serialize)]
struct Entry {
    key: String,
    flags: u64,
    value: String,
}

/// `kv export [PREFIX]`: every key under the prefix with its flags and its
/// value in base64, as a tab-indented JSON array (Consul's command/kv/exp).
pub(crate) fn export(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], "kv export", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let prefix = match p.args.as_slice() {
        [] => String::new(),
        [k] => k.strip_prefix('/').unwrap_or(k).to_string(),
        more => {
            return fail(
                io,
                format!("Too many arguments (expected 1, got {})", more.len()),
            )
        }
    };
    let query_err = |e: String| format!("Error querying Consul agent: {e}");
    let listed = client
        .get(&path(&prefix), &[("recurse", None)])
        .map_err(query_err)
        .and_then(|reply| match reply.status {
            // Nothing under the prefix: Consul's client lists no pairs.
            404 => Ok(Vec::new()),
            _ => reply
                .success()
                .and_then(|body| parse_json::<Vec<KvPair>>(&body))
                .map_err(query_err),
        });
    let pairs = match listed {
        Ok(p) => p,
        Err(e) => return fail(io, e),
    };
    let mut entries = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        match pair.bytes() {
            Ok(v) => entries.push(Entry {
                key: pair.key.clone(),
                flags: pair.flags,
                value: base64_encode(&v),
            }),
            Err(e) => return fail(io, query_err(e)),
        }
    }
    io.line(&go_json_indent(&entries));
    0
}

/// JSON as Go's `json.MarshalIndent(v, "", "\t")` writes it, HTML-safe
/// escapes included (`<`, `>`, `&` as `\u003c`...; they only occur inside
/// strings).
fn go_json_indent<T: serde::Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut ser)
        .expect("serializing to memory cannot fail");
    String::from_utf8(out)
        .expect("serde_json writes UTF-8")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// `kv import DATA`: write every entry of `kv export`'s JSON, in order,
/// printing `Imported: KEY` for each and stopping at the first failure
/// (Consul's command/kv/imp). DATA is `@file`, `-` for stdin, or the JSON.
pub(crate) fn import(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], "kv import", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let data = match p.args.as_slice() {
        [] => return fail(io, "Error! Missing DATA argument".into()),
        [d] if d.is_empty() => return fail(io, "Error! Empty DATA argument".into()),
        [d] => match load_value(d, io) {
            Ok(bytes) => bytes,
            Err(e) => return fail(io, e),
        },
        more => {
            return fail(
                io,
                format!("Error! Too many arguments (expected 1, got {})", more.len()),
            )
        }
    };
    let entries = match import_entries(&data) {
        Ok(e) => e,
        Err(e) => return fail(io, e),
    };
    for (key, flags, value) in entries {
        let flags_text = flags.to_string();
        let query: Vec<(&str, Option<&str>)> = match flags {
            0 => Vec::new(),
            _ => vec![("flags", Some(flags_text.as_str()))],
        };
        let written = client
            .put(&path(&key), &query, &value)
            .and_then(|r| r.success())
            .and_then(|body| parse_json::<bool>(&body));
        match written {
            Ok(true) => io.line(&format!("Imported: {key}")),
            Ok(false) => {
                return fail(
                    io,
                    format!("Error! Failed writing data for key {key}: the agent answered false"),
                )
            }
            Err(e) => return fail(io, format!("Error! Failed writing data for key {key}: {e}")),
        }
    }
    0
}

/// The (key, flags, value) of each entry of an export. Field names match in
/// any case, as Go's `encoding/json` matches them; other fields are ignored.
fn import_entries(data: &[u8]) -> Result<Vec<(String, u64, Vec<u8>)>, String> {
    let cannot = |e: String| format!("Cannot unmarshal data: {e}");
    let doc: serde_json::Value = serde_json::from_slice(data).map_err(|e| cannot(e.to_string()))?;
    let items = match doc {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Null => Vec::new(),
        other => return Err(cannot(format!("expected an array of entries, got {other}"))),
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let serde_json::Value::Object(fields) = item else {
            return Err(cannot(format!("expected an entry object, got {item}")));
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let key = match field("key") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(k)) => k.clone(),
            Some(other) => return Err(cannot(format!("key must be a string, got {other}"))),
        };
        let flags = match field("flags") {
            None | Some(serde_json::Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| cannot(format!("flags of {key} must be a whole number, got {v}")))?,
        };
        let value = match field("value") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(v)) => v.clone(),
            Some(other) => {
                return Err(cannot(format!(
                    "value of {key} must be a string, got {other}"
                )))
            }
        };
        let bytes = base64_decode_strict(value.as_bytes())
            .map_err(|e| format!("Error base 64 decoding value for key {key}: {e}"))?;
        entries.push((key, flags, bytes));
    }
    Ok(entries)
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

pub(crate) const GET_USAGE: &str = "\
Usage: tern kv get [options] [KEY_OR_PREFIX]

  Prints the value at KEY. With -recurse, every key:value under the prefix;
  with -keys, the keys under the prefix up to -separator (default \"/\").

  -recurse  -keys  -separator=S  -detailed
  -base64   print values in base64 (binary values stay intact)
  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

pub(crate) const PUT_USAGE: &str = "\
Usage: tern kv put [options] KEY [VALUE]

  Writes VALUE (\"-\" reads stdin, \"@file\" reads a file) at KEY.

  -flags=N  -cas -modify-index=N
  -base64   the data is base64; the decoded bytes are written
  -acquire -session=ID   take the key's lock for the session (the session
                         must exist); writes VALUE if it is taken
  -release -session=ID   give the key's lock up
  -http-addr=ADDR  -datacenter=DC  -token=T";

pub(crate) const DELETE_USAGE: &str = "\
Usage: tern kv delete [options] KEY_OR_PREFIX

  Deletes KEY, or with -recurse every key under the prefix.

  -recurse  -cas -modify-index=N
  -http-addr=ADDR  -datacenter=DC  -token=T";

pub(crate) const EXPORT_USAGE: &str = "\
Usage: tern kv export [options] [PREFIX]

  Prints every key under PREFIX (all keys without one) as a JSON array of
  {\"key\", \"flags\", \"value\"} entries, values in base64: Consul's export
  format, which `tern kv import` and `consul kv import` read back.

      $ tern kv export app/ > app.json

  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

pub(crate) const IMPORT_USAGE: &str = "\
Usage: tern kv import [options] DATA

  Writes every entry of the JSON that `tern kv export` (or `consul kv
  export`) prints, in order, and stops at the first failure. DATA is
  \"@file\" for a file, \"-\" for stdin, or the JSON itself.

      $ tern kv import @app.json
      $ tern kv export app/ | tern kv import -http-addr=other:8500 -

  -http-addr=ADDR  -datacenter=DC  -token=T";
