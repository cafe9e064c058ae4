//! Service and check definitions in agent config files (`service { ... }`,
//! `services = [ ... ]`, `check { ... }`, `checks = [ ... ]`, Consul's
//! snake_case keys) turned into the HTTP API's JSON, which the local
//! agent's endpoint parser then reads: one parser for the API, the config
//! and `tern services register`.

use serde_json::{Map, Value};

/// Config keys of a service definition and the API's names for them.
const SERVICE_KEYS: &[(&str, &str)] = &[
    ("kind", "Kind"),
    ("id", "ID"),
    ("name", "Name"),
    ("tags", "Tags"),
    ("address", "Address"),
    ("tagged_addresses", "TaggedAddresses"),
    ("taggedaddresses", "TaggedAddresses"),
    ("meta", "Meta"),
    ("port", "Port"),
    ("enable_tag_override", "EnableTagOverride"),
    ("enabletagoverride", "EnableTagOverride"),
    ("weights", "Weights"),
    ("check", "Check"),
    ("checks", "Checks"),
    ("token", "Token"),
];

const CHECK_KEYS: &[(&str, &str)] = &[
    ("id", "CheckID"),
    ("check_id", "CheckID"),
    ("checkid", "CheckID"),
    ("name", "Name"),
    ("notes", "Notes"),
    ("status", "Status"),
    ("ttl", "TTL"),
    ("http", "HTTP"),
    ("method", "Method"),
    ("header", "Header"),
    ("body", "Body"),
    ("tcp", "TCP"),
    ("interval", "Interval"),
    ("timeout", "Timeout"),
    (
        "deregister_critical_service_after",
        "DeregisterCriticalServiceAfter",
    ),
    (
        "deregistercriticalserviceafter",
        "DeregisterCriticalServiceAfter",
    ),
    ("tls_skip_verify", "TLSSkipVerify"),
    ("tlsskipverify", "TLSSkipVerify"),
    ("args", "ScriptArgs"),
    ("script_args", "ScriptArgs"),
    ("scriptargs", "ScriptArgs"),
    ("grpc", "GRPC"),
];

/// Rename a config object's keys to the API's, refusing unknown ones as
/// Consul's config loader does (`invalid config key service.foo`).
fn rename(
    obj: &Map<String, Value>,
    keys: &[(&str, &str)],
    at: &str,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in obj {
        let api = keys
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(k))
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("invalid config key {at}.{k}"))?;
        out.insert(api.to_owned(), v.clone());
    }
    Ok(out)
}

/// One service definition from a config file, in the API's JSON.
pub(crate) fn service_to_api(v: &Value, at: &str) -> Result<Value, String> {
    let Value::Object(obj) = v else {
        return Err(format!("{at}: expected a block"));
    };
    let mut s = rename(obj, SERVICE_KEYS, at)?;
    let fix_check = |c: &Value, at: &str| -> Result<Value, String> {
        match c {
            Value::Object(o) => Ok(Value::Object(rename(o, CHECK_KEYS, at)?)),
            _ => Err(format!("{at}: expected a block")),
        }
    };
    if let Some(c) = s.get("Check").cloned() {
        s.insert("Check".into(), fix_check(&c, &format!("{at}.check"))?);
    }
    if let Some(cs) = s.get("Checks").cloned() {
        let list = match cs {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            _ => return Err(format!("{at}.checks: expected a list of blocks")),
        };
        let fixed = list
            .iter()
            .map(|c| fix_check(c, &format!("{at}.checks")))
            .collect::<Result<Vec<_>, _>>()?;
        s.insert("Checks".into(), Value::Array(fixed));
    }
    if let Some(Value::Object(w)) = s.get("Weights").cloned() {
        let w = rename(
            &w,
            &[("passing", "Passing"), ("warning", "Warning")],
            &format!("{at}.weights"),
        )?;
        s.insert("Weights".into(), Value::Object(w));
    }
    if let Some(Value::Object(t)) = s.get("TaggedAddresses").cloned() {
        let mut out = Map::new();
        for (name, a) in t {
            let Value::Object(a) = a else {
                return Err(format!("{at}.tagged_addresses.{name}: expected a block"));
            };
            let a = rename(
                &a,
                &[("address", "Address"), ("port", "Port")],
                &format!("{at}.tagged_addresses.{name}"),
            )?;
            out.insert(name, Value::Object(a));
        }
        s.insert("TaggedAddresses".into(), Value::Object(out));
    }
    Ok(Value::Object(s))
}

/// A standalone check's config keys (`/v1/agent/check/register` takes
/// `ID`, where a service's check takes `CheckID`).
const STANDALONE_CHECK_KEYS: &[(&str, &str)] = &[
    ("id", "ID"),
    ("check_id", "ID"),
    ("checkid", "ID"),
    ("service_id", "ServiceID"),
    ("serviceid", "ServiceID"),
];

/// One standalone check definition from a config file, in the API's JSON.
pub(crate) fn check_to_api(v: &Value, at: &str) -> Result<Value, String> {
    let Value::Object(obj) = v else {
        return Err(format!("{at}: expected a block"));
    };
    let keys: Vec<(&str, &str)> = STANDALONE_CHECK_KEYS
        .iter()
        .chain(
            CHECK_KEYS
                .iter()
                .filter(|(c, _)| !["id", "check_id", "checkid"].contains(c)),
        )
        .copied()
        .collect();
    Ok(Value::Object(rename(obj, &keys, at)?))
}

/// The blocks under a config key: one block or a list of them.
pub(crate) fn blocks(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    }
}
