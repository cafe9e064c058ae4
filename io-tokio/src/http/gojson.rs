//! Reading a JSON request body the way Go's `encoding/json` decodes it
//! into a Consul struct: struct field names match in any case, unknown
//! keys are ignored, `null` leaves a field at its zero value (a map or a
//! list absent), and a value of the wrong type is an error that names the
//! field as Go names it (`json: cannot unmarshal number into Go struct field
//! RegisterRequest.Address of type string`). Map keys keep their case.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The kind of a JSON value as Go's error messages name it.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One JSON object being decoded into the Go struct `go_type`, reached at
/// `path` (the field names from the top, as Go's `FieldStack`).
pub(crate) struct Fields<'a> {
    go_type: &'static str,
    path: String,
    /// Lowercased key -> value; for a key given twice in different cases
    /// the later one wins, as Go decodes both into the one field.
    by_name: BTreeMap<String, &'a Value>,
}

impl<'a> Fields<'a> {
    /// The top-level object for `go_type` (`structs.RegisterRequest` for
    /// the message, `RegisterRequest` in field errors).
    pub(crate) fn top(value: &'a Value, go_type: &'static str) -> Result<Fields<'a>, String> {
        match value {
            Value::Object(map) => Ok(Fields::of(map, go_type, String::new())),
            other => Err(format!(
                "json: cannot unmarshal {} into Go value of type structs.{go_type}",
                kind(other)
            )),
        }
    }

    fn of(map: &'a Map<String, Value>, go_type: &'static str, path: String) -> Fields<'a> {
        let by_name = map.iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
        Fields {
            go_type,
            path,
            by_name,
        }
    }

    fn field_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn mismatch(&self, name: &str, got: &Value, want: &str) -> String {
        format!(
            "json: cannot unmarshal {} into Go struct field {}.{} of type {want}",
            kind(got),
            self.go_type,
            self.field_path(name)
        )
    }

    /// The value of field `name`, unless absent or `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.by_name
            .get(&name.to_lowercase())
            .copied()
            .filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, name: &str) -> Result<String, String> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.mismatch(name, v, "string")),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.mismatch(name, v, "bool")),
        }
    }

    /// A Go `int` (64-bit): a whole number in range.
    pub(crate) fn int(&self, name: &str) -> Result<i64, String> {
        match self.get(name) {
            None => Ok(0),
            Some(v @ Value::Number(n)) => n.as_i64().ok_or_else(|| self.mismatch(name, v, "int")),
            Some(v) => Err(self.mismatch(name, v, "int")),
        }
    }

    /// A Go `uint64`: a whole number from 0 up.
    pub(crate) fn uint(&self, name: &str) -> Result<u64, String> {
        match self.get(name) {
            None => Ok(0),
            Some(v @ Value::Number(n)) => {
                n.as_u64().ok_or_else(|| self.mismatch(name, v, "uint64"))
            }
            Some(v) => Err(self.mismatch(name, v, "uint64")),
        }
    }

    /// A Go `map[string]string`: `None` when absent or `null`.
    pub(crate) fn string_map(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        // Go stores a `null` element as the zero value.
                        Value::Null => {
                            out.insert(k.clone(), String::new());
                        }
                        other => return Err(self.mismatch(name, other, "string")),
                    }
                }
                Ok(Some(out))
            }
            Some(v) => Err(self.mismatch(name, v, "map[string]string")),
        }
    }

    /// A Go `[]string`: `None` when absent or `null`.
    pub(crate) fn strings(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Null => Ok(String::new()),
                    other => Err(self.mismatch(name, other, "string")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.mismatch(name, v, "[]string")),
        }
    }

    /// A nested struct (or pointer to one) of Go type `go_type`: `None`
    /// when absent or `null`.
    pub(crate) fn object(
        &self,
        name: &str,
        go_type: &'static str,
    ) -> Result<Option<Fields<'a>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields::of(map, go_type, self.field_path(name)))),
            Some(v) => Err(self.mismatch(name, v, &format!("structs.{go_type}"))),
        }
    }

    /// A Go `map[string]T` of structs: each value's fields.
    pub(crate) fn object_map(
        &self,
        name: &str,
        go_type: &'static str,
    ) -> Result<Vec<(String, Fields<'a>)>, String> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    Value::Object(inner) => {
                        Ok((k.clone(), Fields::of(inner, go_type, self.field_path(name))))
                    }
                    other => Err(self.mismatch(name, other, &format!("structs.{go_type}"))),
                })
                .collect(),
            Some(v) => Err(self.mismatch(name, v, &format!("map[string]structs.{go_type}"))),
        }
    }

    /// A Go `[]T` of structs.
    pub(crate) fn object_list(
        &self,
        name: &str,
        go_type: &'static str,
    ) -> Result<Vec<Fields<'a>>, String> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| match v {
                    Value::Object(inner) => Ok(Fields::of(inner, go_type, self.field_path(name))),
                    other => Err(self.mismatch(name, other, &format!("structs.{go_type}"))),
                })
                .collect(),
            Some(v) => Err(self.mismatch(name, v, &format!("[]*structs.{go_type}"))),
        }
    }

    /// A duration as Consul's check definitions take one: a Go duration
    /// string (`"10s"`) or a number of nanoseconds. Nanoseconds.
    pub(crate) fn duration_ns(&self, name: &str) -> Result<u64, String> {
        match self.get(name) {
            None => Ok(0),
            Some(Value::String(s)) if s.is_empty() => Ok(0),
            Some(Value::String(s)) => crate::config::duration::parse_go_nanos(s)
                .map(|ns| ns.max(0) as u64)
                .ok_or_else(|| format!("time: invalid duration {s:?}")),
            Some(v @ Value::Number(n)) => n
                .as_i64()
                .map(|ns| ns.max(0) as u64)
                .ok_or_else(|| self.mismatch(name, v, "time.Duration")),
            Some(v) => Err(self.mismatch(name, v, "time.Duration")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn field_names_match_in_any_case_and_map_keys_keep_theirs() {
        let v = parse(r#"{"node":"n1","ADDRESS":"a","NodeMeta":{"Rack":"r1"},"unknown":[1]}"#);
        let f = Fields::top(&v, "RegisterRequest").unwrap();
        assert_eq!(f.string("Node").unwrap(), "n1");
        assert_eq!(f.string("Address").unwrap(), "a");
        assert_eq!(
            f.string_map("NodeMeta").unwrap(),
            Some(BTreeMap::from([("Rack".into(), "r1".into())]))
        );
        assert_eq!(f.string_map("TaggedAddresses").unwrap(), None);
    }

    #[test]
    fn null_is_the_zero_value_and_wrong_types_are_named_as_go_names_them() {
        let v = parse(r#"{"Node":null,"Address":7,"Service":{"Port":"80","Tags":[1]}}"#);
        let f = Fields::top(&v, "RegisterRequest").unwrap();
        assert_eq!(f.string("Node").unwrap(), "");
        assert_eq!(
            f.string("Address").unwrap_err(),
            "json: cannot unmarshal number into Go struct field RegisterRequest.Address of type string"
        );
        let s = f.object("Service", "NodeService").unwrap().unwrap();
        assert_eq!(
            s.int("Port").unwrap_err(),
            "json: cannot unmarshal string into Go struct field NodeService.Service.Port of type int"
        );
        assert!(s.strings("Tags").is_err());
        assert_eq!(
            Fields::top(&parse("[1]"), "RegisterRequest").err().unwrap(),
            "json: cannot unmarshal array into Go value of type structs.RegisterRequest"
        );
    }

    #[test]
    fn durations_are_go_strings_or_nanoseconds() {
        let v = parse(r#"{"Interval":"10s","Timeout":1000,"X":"soon"}"#);
        let f = Fields::top(&v, "HealthCheckDefinition").unwrap();
        assert_eq!(f.duration_ns("Interval").unwrap(), 10_000_000_000);
        assert_eq!(f.duration_ns("Timeout").unwrap(), 1000);
        assert!(f.duration_ns("X").is_err());
        assert_eq!(f.duration_ns("Missing").unwrap(), 0);
    }
}
