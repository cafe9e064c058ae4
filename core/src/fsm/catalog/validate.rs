//! The checks and defaults Consul's `Catalog.Register` RPC applies before a
//! registration reaches Raft (`nodePreApply`, `servicePreApply`,
//! `checkPreApply` in agent/consul/catalog_endpoint.go, and the service meta
//! rules of `structs.ValidateServiceMetadata`). Pure: the leader runs them
//! to refuse a bad request before it is logged, and the state machine runs
//! them again so that any command in the log applies the same everywhere.

use super::types::{CatalogError, Check, Meta, Register, Service, Weights};

/// Consul's `metaMaxKeyPairs`, `metaKeyMaxLength`, `metaValueMaxLength`
/// and reserved prefix (agent/structs/structs.go).
const META_PAIRS_MAX: usize = 64;
const META_KEY_CHARS_MAX: usize = 128;
const META_VALUE_CHARS_MAX: usize = 512;
const META_RESERVED_PREFIX: &str = "consul-";
/// The one reserved key a mesh gateway may carry.
const MESH_GATEWAY_META_KEYS: [&str; 1] = ["consul-wan-federation"];

/// Kinds whose instances must have a port (Consul's `IsGateway` less the
/// ingress and API gateways).
const PORTED_GATEWAYS: [&str; 2] = ["mesh-gateway", "terminating-gateway"];

/// `reg` with Consul's server-side defaults filled in, or why it is refused.
pub(crate) fn normalize(mut reg: Register) -> Result<Register, CatalogError> {
    if reg.node.is_empty() {
        return Err(CatalogError::MissingNode);
    }
    if !reg.id.is_empty() {
        check_uuid(&reg.id).map_err(|why| CatalogError::BadNodeId(why.to_owned()))?;
    }
    if reg.address.is_empty() && !reg.skip_node_update {
        return Err(CatalogError::MissingAddress);
    }
    if let Some(service) = reg.service.as_mut() {
        check_service(service)?;
        if service.id.is_empty() && !service.service.is_empty() {
            service.id = service.service.clone();
        }
        if !service.id.is_empty() && service.service.is_empty() {
            return Err(CatalogError::MissingServiceName);
        }
        if is_any_address(&service.address) {
            return Err(CatalogError::InvalidServiceAddress);
        }
        check_service_meta(&reg.node, service)?;
    }
    for check in &mut reg.checks {
        default_check(check, &reg.node);
    }
    Ok(reg)
}

fn default_check(check: &mut Check, node: &str) {
    if check.node.is_empty() {
        check.node = node.to_owned();
    }
    if check.check_id.is_empty() && !check.name.is_empty() {
        check.check_id = check.name.clone();
    }
    if check.kind.is_empty() {
        // Consul's `CheckType().Type()` for the parts carried here.
        check.kind = if !check.definition.http.is_empty() {
            "http".to_owned()
        } else if !check.definition.tcp.is_empty() {
            "tcp".to_owned()
        } else {
            String::new()
        };
    }
}

/// Consul's `NodeService.Validate` for what this release carries: a
/// gateway that needs a port has one. A Connect proxy needs proxy
/// settings this release does not store, so it is refused by name.
fn check_service(service: &Service) -> Result<(), CatalogError> {
    if service.kind == "connect-proxy" {
        return Err(CatalogError::InvalidService(
            "Kind connect-proxy is not supported by this server: Connect proxies are not implemented"
                .to_owned(),
        ));
    }
    if PORTED_GATEWAYS.contains(&service.kind.as_str()) && service.port == 0 {
        // hashicorp/go-multierror's format, as Consul returns it.
        return Err(CatalogError::InvalidService(format!(
            "1 error occurred:\n\t* Port must be non-zero for a {}\n\n",
            service.kind
        )));
    }
    Ok(())
}

/// `0.0.0.0`, `::` and `[::]` (Consul's `ipaddr.IsAny`).
fn is_any_address(address: &str) -> bool {
    matches!(address, "0.0.0.0" | "::" | "[::]")
}

/// Consul's `ValidateServiceMetadata` (pairs in key order, where Go's map
/// order is random).
fn check_service_meta(node: &str, service: &Service) -> Result<(), CatalogError> {
    let Some(meta) = &service.meta else {
        return Ok(());
    };
    let refuse = |why: String| CatalogError::InvalidServiceMeta {
        node: node.to_owned(),
        service_id: service.id.clone(),
        why,
    };
    let gateway = service.kind == "mesh-gateway";
    check_meta(meta, |key| gateway && MESH_GATEWAY_META_KEYS.contains(&key)).map_err(refuse)
}

/// Consul's `ValidateNodeMetadata` for an agent's `node_meta` (agent/structs
/// `validateMetadata`): at most 64 pairs; keys of letters, digits, `_` and
/// `-`, at most 128 characters, not starting with `consul-`; values of at
/// most 512 characters. The error is Consul's text (pairs in key order).
pub fn validate_node_meta(meta: &Meta) -> Result<(), String> {
    check_meta(meta, |_| false)
}

/// The rules both share; `reserved_ok` lets a `consul-` key through.
fn check_meta(meta: &Meta, reserved_ok: impl Fn(&str) -> bool) -> Result<(), String> {
    if meta.len() > META_PAIRS_MAX {
        return Err(format!(
            "Node metadata cannot contain more than {META_PAIRS_MAX} key/value pairs"
        ));
    }
    for (key, value) in meta {
        let why = if key.is_empty() {
            Some("Key cannot be blank".to_owned())
        } else if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("Key contains invalid characters".to_owned())
        } else if key.len() > META_KEY_CHARS_MAX {
            Some(format!(
                "Key is too long (limit: {META_KEY_CHARS_MAX} characters)"
            ))
        } else if key.starts_with(META_RESERVED_PREFIX) && !reserved_ok(key) {
            Some(format!(
                "Key prefix '{META_RESERVED_PREFIX}' is reserved for internal use"
            ))
        } else if value.len() > META_VALUE_CHARS_MAX {
            Some(format!(
                "Value is too long (limit: {META_VALUE_CHARS_MAX} characters)"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!(
                "Couldn't load metadata pair ('{key}', '{value}'): {why}"
            ));
        }
    }
    Ok(())
}

/// Consul's `ValidateServiceMetadata` for a service registered through the
/// local agent: the reason it fails, in Consul's words.
pub fn service_meta_error(service: &Service) -> Option<String> {
    match check_service_meta("", service) {
        Err(CatalogError::InvalidServiceMeta { why, .. }) => Some(why),
        _ => None,
    }
}

/// hashicorp/go-uuid's `ParseUUID` checks: 36 characters, dashes at 8, 13,
/// 18 and 23, hex digits elsewhere.
fn check_uuid(id: &str) -> Result<(), &'static str> {
    if id.len() != 36 {
        return Err("uuid string is wrong length");
    }
    let ok = id.bytes().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    if ok {
        Ok(())
    } else {
        Err("uuid is improperly formatted")
    }
}

/// The weights Consul stores for a service (`NodeService.ToServiceNode`):
/// the ones sent if valid, else passing 1, warning 1.
pub(crate) fn stored_weights(sent: Option<Weights>) -> Weights {
    sent.filter(Weights::is_valid).unwrap_or(Weights::DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::catalog::types::{CheckDefinition, Service};

    pub(crate) fn register(node: &str) -> Register {
        Register {
            id: String::new(),
            node: node.to_owned(),
            address: "10.0.0.1".to_owned(),
            datacenter: "dc1".to_owned(),
            tagged_addresses: None,
            node_meta: None,
            service: None,
            checks: vec![],
            skip_node_update: false,
        }
    }

    fn service(name: &str) -> Service {
        Service {
            kind: String::new(),
            id: String::new(),
            service: name.to_owned(),
            tags: None,
            address: String::new(),
            tagged_addresses: Default::default(),
            meta: None,
            port: 0,
            weights: None,
            enable_tag_override: false,
            create_index: 0,
            modify_index: 0,
        }
    }

    fn check(name: &str) -> Check {
        Check {
            node: String::new(),
            check_id: String::new(),
            name: name.to_owned(),
            status: String::new(),
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: None,
            kind: String::new(),
            definition: CheckDefinition::default(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// Consul's `TestCatalog_Register*` refusals, with its texts
    /// (agent/consul/catalog_endpoint.go).
    #[test]
    fn a_registration_is_refused_as_consul_refuses_it() {
        let refused = |reg: Register| normalize(reg).unwrap_err().to_string();
        assert_eq!(refused(register("")), "Must provide node");
        let mut no_address = register("n1");
        no_address.address.clear();
        assert_eq!(
            refused(no_address.clone()),
            "Must provide address if SkipNodeUpdate is not set"
        );
        no_address.skip_node_update = true;
        assert!(normalize(no_address).is_ok());

        let mut bad_id = register("n1");
        bad_id.id = "nope".into();
        assert_eq!(
            refused(bad_id.clone()),
            "Bad node ID: uuid string is wrong length"
        );
        bad_id.id = "adf4238a-882b-9ddc-4a9d-5b6758e4159g".into();
        assert_eq!(
            refused(bad_id.clone()),
            "Bad node ID: uuid is improperly formatted"
        );
        bad_id.id = "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into();
        assert!(normalize(bad_id).is_ok());

        let mut nameless = register("n1");
        nameless.service = Some(Service {
            id: "web1".into(),
            ..service("")
        });
        assert_eq!(
            refused(nameless),
            "Must provide service name (Service.Service) when service ID is provided"
        );
        for any in ["0.0.0.0", "::", "[::]"] {
            let mut reg = register("n1");
            reg.service = Some(Service {
                address: any.into(),
                ..service("web")
            });
            assert_eq!(refused(reg), "Invalid service address", "{any}");
        }
        let mut gateway = register("n1");
        gateway.service = Some(Service {
            kind: "mesh-gateway".into(),
            ..service("gw")
        });
        assert_eq!(
            refused(gateway),
            "1 error occurred:\n\t* Port must be non-zero for a mesh-gateway\n\n"
        );
    }

    #[test]
    fn service_meta_follows_consuls_rules_at_and_past_each_limit() {
        let with_meta = |pairs: Vec<(String, String)>, kind: &str| {
            let mut reg = register("n1");
            reg.service = Some(Service {
                kind: kind.into(),
                port: 443,
                meta: Some(pairs.into_iter().collect()),
                ..service("web")
            });
            normalize(reg).map(|_| ()).map_err(|e| e.to_string())
        };
        let prefix =
            "failed inserting service: Invalid Service Meta for node n1 and serviceID web: ";
        let pairs = |n: usize| {
            (0..n)
                .map(|i| (format!("k{i:03}"), "v".to_owned()))
                .collect()
        };
        assert!(with_meta(pairs(64), "").is_ok());
        assert_eq!(
            with_meta(pairs(65), ""),
            Err(format!(
                "{prefix}Node metadata cannot contain more than 64 key/value pairs"
            ))
        );
        assert!(with_meta(vec![("k".repeat(128), "v".into())], "").is_ok());
        assert_eq!(
            with_meta(vec![("k".repeat(129), "v".into())], ""),
            Err(format!(
                "{prefix}Couldn't load metadata pair ('{}', 'v'): Key is too long (limit: 128 characters)",
                "k".repeat(129)
            ))
        );
        assert!(with_meta(vec![("k".into(), "v".repeat(512))], "").is_ok());
        assert!(with_meta(vec![("k".into(), "v".repeat(513))], "").is_err());
        assert_eq!(
            with_meta(vec![("a b".into(), "v".into())], ""),
            Err(format!(
                "{prefix}Couldn't load metadata pair ('a b', 'v'): Key contains invalid characters"
            ))
        );
        assert_eq!(
            with_meta(vec![("consul-x".into(), "v".into())], ""),
            Err(format!(
                "{prefix}Couldn't load metadata pair ('consul-x', 'v'): Key prefix 'consul-' is reserved for internal use"
            ))
        );
        // A mesh gateway may say it serves WAN federation.
        let federation = vec![("consul-wan-federation".to_owned(), "1".to_owned())];
        assert!(with_meta(federation.clone(), "mesh-gateway").is_ok());
        assert!(with_meta(federation, "").is_err());
    }

    #[test]
    fn defaults_are_filled_in_as_consuls_rpc_fills_them() {
        let mut reg = register("n1");
        reg.service = Some(service("web"));
        reg.checks = vec![
            check("alive"),
            Check {
                definition: CheckDefinition {
                    http: "http://x".into(),
                    ..Default::default()
                },
                ..check("h")
            },
            Check {
                check_id: "keep".into(),
                node: "n1".into(),
                kind: "ttl".into(),
                ..check("t")
            },
        ];
        let reg = normalize(reg).unwrap();
        assert_eq!(reg.service.as_ref().unwrap().id, "web");
        let ids: Vec<(&str, &str, &str)> = reg
            .checks
            .iter()
            .map(|c| (c.node.as_str(), c.check_id.as_str(), c.kind.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("n1", "alive", ""),
                ("n1", "h", "http"),
                ("n1", "keep", "ttl")
            ]
        );
        // Normalizing twice changes nothing.
        assert_eq!(normalize(reg.clone()).unwrap(), reg);
    }

    #[test]
    fn weights_outside_consuls_bounds_become_the_default() {
        let w = |passing, warning| Some(Weights { passing, warning });
        assert_eq!(stored_weights(None), Weights::DEFAULT);
        assert_eq!(
            stored_weights(w(3, 0)),
            Weights {
                passing: 3,
                warning: 0
            }
        );
        assert_eq!(stored_weights(w(65535, 65535)).passing, 65535);
        assert_eq!(stored_weights(w(0, 1)), Weights::DEFAULT);
        assert_eq!(stored_weights(w(1, -1)), Weights::DEFAULT);
        assert_eq!(stored_weights(w(65536, 1)), Weights::DEFAULT);
    }
}
