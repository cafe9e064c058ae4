//! What the catalog holds and the commands that change it: Consul's
//! `structs.Node`, `NodeService` (a service instance on a node),
//! `HealthCheck`, `RegisterRequest` and `DeregisterRequest`, with typed maps
//! (`BTreeMap<String, String>`) and never an opaque blob.
//!
//! Where Consul tells an absent map or list (`null` in its JSON) from an
//! empty one (`{}`/`[]`), so do these types (`Option`): Consul stores what
//! it was sent, compares with `reflect.DeepEqual` (so a re-registration that
//! turns `null` into `{}` is a change) and encodes it back as sent.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Consul's metadata and tagged-address maps.
pub type Meta = BTreeMap<String, String>;

/// A node (Consul's `structs.Node`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    /// Consul's node ID: a UUID, or empty for a node registered without one.
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: Option<Meta>,
    pub meta: Option<Meta>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// An address and port a service is reachable at (Consul's
/// `structs.ServiceAddress`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub address: String,
    pub port: i64,
}

/// DNS weights by health status (Consul's `structs.Weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Weights {
    pub passing: i64,
    pub warning: i64,
}

impl Weights {
    /// What Consul stores when none (or an invalid pair) is given
    /// (`NodeService.ToServiceNode`).
    pub const DEFAULT: Weights = Weights {
        passing: 1,
        warning: 1,
    };

    /// Consul's `ValidateWeights`.
    pub fn is_valid(&self) -> bool {
        self.passing >= 1 && self.warning >= 0 && self.passing <= 65535 && self.warning <= 65535
    }
}

/// A service instance on a node (Consul's `structs.NodeService`; the
/// node's own fields are joined in on the way out).
///
/// In a [`Register`] command the indexes are 0 and `weights` is what the
/// client sent; stored, `weights` is always set (Consul's default of
/// passing 1, warning 1 when none or an invalid pair was sent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    /// `""` (a typical service), `mesh-gateway`, ... (Consul's `Kind`).
    pub kind: String,
    pub id: String,
    pub service: String,
    pub tags: Option<Vec<String>>,
    pub address: String,
    /// Consul leaves an empty map out of its JSON (`omitempty`), so empty
    /// and absent are one here.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: Option<Meta>,
    pub port: i64,
    pub weights: Option<Weights>,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The basics of how a check is run (Consul's `HealthCheckDefinition`, the
/// part this release carries). Durations in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckDefinition {
    pub http: String,
    pub tcp: String,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    pub deregister_critical_service_after_ns: u64,
}

/// A health check (Consul's `structs.HealthCheck`). In a [`Register`]
/// command the indexes are 0 and `service_name`/`service_tags` are ignored:
/// the state machine copies them from the service `service_id` names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Check {
    pub node: String,
    pub check_id: String,
    pub name: String,
    /// `passing`, `warning`, `critical` (the default when empty) or
    /// anything a client sent: Consul's catalog does not check it.
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Option<Vec<String>>,
    /// Consul's `Type` (`http`, `tcp`, `ttl`, ...; derived from the
    /// definition when empty).
    pub kind: String,
    pub definition: CheckDefinition,
    pub create_index: u64,
    pub modify_index: u64,
}

/// `PUT /v1/catalog/register` (Consul's `RegisterRequest`, after its
/// server-side defaults: a service ID defaults to its name, a check's node
/// to the request's, a check ID to its name; `Check` and `Checks` are one
/// list).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Register {
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: Option<Meta>,
    pub node_meta: Option<Meta>,
    pub service: Option<Service>,
    pub checks: Vec<Check>,
    /// Leave an existing node's fields as they are (Consul's
    /// `SkipNodeUpdate`).
    pub skip_node_update: bool,
}

fn map_bytes(m: &Option<Meta>) -> usize {
    m.iter().flatten().map(|(k, v)| 2 + k.len() + v.len()).sum()
}

fn list_bytes(l: &Option<Vec<String>>) -> usize {
    l.iter().flatten().map(|s| 1 + s.len()).sum()
}

impl Register {
    /// About how many bytes the command takes encoded (for batching
    /// entries; postcard's varints make the real size a little smaller).
    pub fn approx_bytes(&self) -> usize {
        let node = 16
            + self.id.len()
            + self.node.len()
            + self.address.len()
            + self.datacenter.len()
            + map_bytes(&self.tagged_addresses)
            + map_bytes(&self.node_meta);
        let service = self.service.as_ref().map_or(0, |s| {
            64 + s.kind.len()
                + s.id.len()
                + s.service.len()
                + list_bytes(&s.tags)
                + s.address.len()
                + s.tagged_addresses
                    .iter()
                    .map(|(k, a)| 12 + k.len() + a.address.len())
                    .sum::<usize>()
                + map_bytes(&s.meta)
        });
        let checks: usize = self
            .checks
            .iter()
            .map(|c| {
                64 + c.node.len()
                    + c.check_id.len()
                    + c.name.len()
                    + c.status.len()
                    + c.notes.len()
                    + c.output.len()
                    + c.service_id.len()
                    + c.service_name.len()
                    + list_bytes(&c.service_tags)
                    + c.kind.len()
                    + c.definition.http.len()
                    + c.definition.tcp.len()
            })
            .sum();
        node + service + checks
    }
}

/// `PUT /v1/catalog/deregister` (Consul's `DeregisterRequest`): a service
/// (and its checks) if `service_id` is set, else a check if `check_id` is,
/// else the node and everything on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deregister {
    pub node: String,
    pub service_id: String,
    pub check_id: String,
}

/// A catalog table and its limit (for [`CatalogError::TableFull`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogTableName {
    Nodes,
    Services,
    Checks,
}

/// Why a catalog write was refused; nothing of it was applied. `Display`
/// gives Consul's text where Consul has one (its RPC answers these as
/// plain errors, HTTP 500).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogError {
    /// `Must provide node` (Consul's `nodePreApply`).
    MissingNode,
    /// `Must provide address if SkipNodeUpdate is not set`.
    MissingAddress,
    /// `Bad node ID: ...`: the ID is not a UUID.
    BadNodeId(String),
    /// A service ID without a service name.
    MissingServiceName,
    /// `Invalid service address`: `0.0.0.0` or `::`.
    InvalidServiceAddress,
    /// The service fails Consul's `NodeService.Validate` (the text is
    /// Consul's multi-error list).
    InvalidService(String),
    /// The service's meta breaks Consul's metadata rules.
    InvalidServiceMeta {
        node: String,
        service_id: String,
        why: String,
    },
    /// A check names another node than the registration.
    CheckNodeMismatch { check_node: String, node: String },
    /// A service check whose service is not registered on the node.
    MissingService { node: String },
    /// A service or check for a node that is not registered.
    MissingNodeRegistration { node: String },
    /// The node's ID or name belongs to another live node.
    NodeConflict(String),
    /// A table holds its limit of rows.
    TableFull { table: CatalogTableName, max: usize },
}

/// Go's `%q` for the strings Consul quotes in its errors.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::MissingNode => f.write_str("Must provide node"),
            CatalogError::MissingAddress => {
                f.write_str("Must provide address if SkipNodeUpdate is not set")
            }
            CatalogError::BadNodeId(why) => write!(f, "Bad node ID: {why}"),
            CatalogError::MissingServiceName => f.write_str(
                "Must provide service name (Service.Service) when service ID is provided",
            ),
            CatalogError::InvalidServiceAddress => f.write_str("Invalid service address"),
            CatalogError::InvalidService(why) => f.write_str(why),
            CatalogError::InvalidServiceMeta {
                node,
                service_id,
                why,
            } => write!(
                f,
                "failed inserting service: Invalid Service Meta for node {node} and serviceID {service_id}: {why}"
            ),
            CatalogError::CheckNodeMismatch { check_node, node } => write!(
                f,
                "check node {} does not match node {}",
                quoted(check_node),
                quoted(node)
            ),
            CatalogError::MissingService { node } => write!(
                f,
                "failed inserting check on node {}: Missing service registration",
                quoted(node)
            ),
            CatalogError::MissingNodeRegistration { node } => write!(
                f,
                "failed inserting check on node {}: Missing node registration",
                quoted(node)
            ),
            CatalogError::NodeConflict(why) => write!(f, "failed inserting node: {why}"),
            CatalogError::TableFull { table, max } => {
                let (name, knob) = match table {
                    CatalogTableName::Nodes => ("nodes", "CATALOG_NODES_MAX"),
                    CatalogTableName::Services => ("services", "CATALOG_SERVICES_MAX"),
                    CatalogTableName::Checks => ("checks", "CATALOG_CHECKS_MAX"),
                };
                write!(
                    f,
                    "catalog {name} table is full: it holds its limit of {max} ({knob})"
                )
            }
        }
    }
}

impl std::error::Error for CatalogError {}

/// A service instance with its node, as `/v1/catalog/service/<s>` lists
/// it (Consul's `ServiceNode` after `parseServiceNodes`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceInstance {
    pub node: Node,
    /// The node name the service was registered with (Consul keeps the
    /// request's spelling on the service row).
    pub node_name: String,
    pub service: Service,
}

/// A node and its services, as `/v1/catalog/node/<n>` and
/// `/v1/catalog/node-services/<n>` show them (in service-ID order).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeServices {
    pub node: Node,
    pub services: Vec<Service>,
}

/// A service instance with its node and the checks that tell its health:
/// the node's own checks and the instance's (Consul's `CheckServiceNode`,
/// `/v1/health/service/<s>`), checks in check-ID order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckServiceNode {
    pub node: Node,
    pub service: Service,
    pub checks: Vec<Check>,
}
