//! `/v1/catalog/...`: Consul's agent/catalog_endpoint.go for register,
//! deregister, datacenters, nodes, services, service/<s>, node/<n> and
//! node-services/<n>, with its JSON shapes field by field (agent/structs:
//! `Node`, `ServiceNode`, `NodeService`, `NodeServices`, `NodeServiceList`).
//!
//! Where Consul's JSON says `null` and where `[]` or `{}`: a node's
//! `TaggedAddresses` and `Meta` are `null` when the node was registered
//! without them; `ServiceTags` (catalog/service) and `Tags` (node, node-
//! services) are always lists (the handlers replace `nil`); `ServiceMeta`
//! in catalog/service is always an object (Consul's `PartialClone` makes
//! one), while a node's services keep `Meta: null`; `ServiceTaggedAddresses`
//! and `TaggedAddresses` of a service are left out when empty
//! (`omitempty`), as are a service's `Kind` and `Port`.
//!
//! A register or deregister that the server refuses is a 500 with Consul's
//! text (its RPC answers with a plain error); a body that is not JSON of
//! the right shape is a 400 `Request decode failed: ...`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tern_core::fsm::{
    ApplyResult, Check, CheckDefinition, Deregister, Node, Register, Service, ServiceAddress,
    ServiceInstance, Weights,
};
use tern_core::gossip::Status;
use tern_core::rpc::{CatalogOp, CatalogReply, Op, ReplyBody, Request};
use tern_core::Datacenter;

use super::gojson::Fields;
use super::params::{Params, QueryOptions};
use super::read;
use super::reply::{json, ApiError, ApiResult};
use crate::agent::{AgentHandle, Pool};

// ----------------------------------------------------------------- JSON out

/// Consul's `structs.Node` (CE: no partition, peer or locality).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'a str,
    datacenter: &'a str,
    tagged_addresses: &'a Option<BTreeMap<String, String>>,
    meta: &'a Option<BTreeMap<String, String>>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a Node> for NodeJson<'a> {
    fn from(n: &'a Node) -> NodeJson<'a> {
        NodeJson {
            id: &n.id,
            node: &n.node,
            address: &n.address,
            datacenter: &n.datacenter,
            tagged_addresses: &n.tagged_addresses,
            meta: &n.meta,
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WeightsJson {
    passing: i64,
    warning: i64,
}

fn weights(w: Option<Weights>) -> WeightsJson {
    let w = w.unwrap_or(Weights::DEFAULT);
    WeightsJson {
        passing: w.passing,
        warning: w.warning,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceAddressJson<'a> {
    pub(crate) address: &'a str,
    pub(crate) port: i64,
}

fn service_addresses(
    m: &BTreeMap<String, ServiceAddress>,
) -> BTreeMap<&str, ServiceAddressJson<'_>> {
    m.iter()
        .map(|(k, a)| {
            (
                k.as_str(),
                ServiceAddressJson {
                    address: &a.address,
                    port: a.port,
                },
            )
        })
        .collect()
}

/// A typical service's `ConnectProxyConfig` as Consul encodes it (its
/// `MarshalJSON` leaves out the zero transparent-proxy and access-log
/// settings; the mesh gateway and expose settings are empty objects).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProxyJson {
    mode: &'static str,
    mesh_gateway: Empty,
    expose: Empty,
}

const PROXY: ProxyJson = ProxyJson {
    mode: "",
    mesh_gateway: Empty {},
    expose: Empty {},
};

#[derive(Serialize)]
struct Empty {}

/// Consul's `ServiceNode` (`/v1/catalog/service/<s>`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceNodeJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'a str,
    datacenter: &'a str,
    tagged_addresses: &'a Option<BTreeMap<String, String>>,
    node_meta: &'a Option<BTreeMap<String, String>>,
    service_kind: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    service_address: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    service_tagged_addresses: BTreeMap<&'a str, ServiceAddressJson<'a>>,
    service_weights: WeightsJson,
    service_meta: &'a BTreeMap<String, String>,
    service_port: i64,
    service_socket_path: &'static str,
    service_enable_tag_override: bool,
    service_proxy: ProxyJson,
    service_connect: Empty,
    service_locality: Option<()>,
    create_index: u64,
    modify_index: u64,
}

static NO_META: BTreeMap<String, String> = BTreeMap::new();

impl<'a> From<&'a ServiceInstance> for ServiceNodeJson<'a> {
    fn from(i: &'a ServiceInstance) -> ServiceNodeJson<'a> {
        let s = &i.service;
        ServiceNodeJson {
            id: &i.node.id,
            node: &i.node_name,
            address: &i.node.address,
            datacenter: &i.node.datacenter,
            tagged_addresses: &i.node.tagged_addresses,
            node_meta: &i.node.meta,
            service_kind: &s.kind,
            service_id: &s.id,
            service_name: &s.service,
            service_tags: s.tags.as_deref().unwrap_or(&[]),
            service_address: &s.address,
            service_tagged_addresses: service_addresses(&s.tagged_addresses),
            service_weights: weights(s.weights),
            service_meta: s.meta.as_ref().unwrap_or(&NO_META),
            service_port: s.port,
            service_socket_path: "",
            service_enable_tag_override: s.enable_tag_override,
            service_proxy: PROXY,
            service_connect: Empty {},
            service_locality: None,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

fn is_zero(p: &i64) -> bool {
    *p == 0
}

/// Consul's `NodeService` (`/v1/catalog/node/<n>`, `/node-services/<n>`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeServiceJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    address: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tagged_addresses: BTreeMap<&'a str, ServiceAddressJson<'a>>,
    meta: &'a Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "is_zero")]
    port: i64,
    weights: WeightsJson,
    enable_tag_override: bool,
    proxy: ProxyJson,
    connect: Empty,
    peer_name: &'static str,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a Service> for NodeServiceJson<'a> {
    fn from(s: &'a Service) -> NodeServiceJson<'a> {
        NodeServiceJson {
            kind: &s.kind,
            id: &s.id,
            service: &s.service,
            tags: s.tags.as_deref().unwrap_or(&[]),
            address: &s.address,
            tagged_addresses: service_addresses(&s.tagged_addresses),
            meta: &s.meta,
            port: s.port,
            weights: weights(s.weights),
            enable_tag_override: s.enable_tag_override,
            proxy: PROXY,
            connect: Empty {},
            peer_name: "",
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// Consul's `NodeServices` (services by ID).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServicesJson<'a> {
    node: NodeJson<'a>,
    services: BTreeMap<&'a str, NodeServiceJson<'a>>,
}

/// Consul's `NodeServiceList` (services in ID order; both `null` for a
/// node that is not there).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServiceListJson<'a> {
    node: Option<NodeJson<'a>>,
    services: Option<Vec<NodeServiceJson<'a>>>,
}

// ------------------------------------------------------------- the handlers

/// `PUT /v1/catalog/register`.
pub(crate) async fn register(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
    body: axum::body::Body,
) -> ApiResult {
    let params = Params::new(query);
    let pretty = params.has("pretty");
    let max = agent.options().core.catalog_register_bytes_max;
    let value = read_body(body, max).await?;
    let (datacenter, mut reg) = parse_register(&value)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    // The node's datacenter is the request's, the agent's when it names
    // none (Consul fills `args.Datacenter` before the node is built).
    let dc = dc_or_agents(datacenter, &agent);
    reg.datacenter = dc.0.clone();
    write(&agent, dc, CatalogOp::Register(Box::new(reg)), pretty).await
}

/// `PUT /v1/catalog/deregister`.
pub(crate) async fn deregister(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
    body: axum::body::Body,
) -> ApiResult {
    let params = Params::new(query);
    let pretty = params.has("pretty");
    let value = read_body(body, 64 * 1024).await?;
    let (datacenter, dereg) = parse_deregister(&value)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let dc = dc_or_agents(datacenter, &agent);
    write(&agent, dc, CatalogOp::Deregister(dereg), pretty).await
}

/// The body as JSON. Like Go's decoder, an empty body is `EOF`.
async fn read_body(body: axum::body::Body, max: usize) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            text: format!("Request body too large, max size: {max} bytes"),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request decode failed: EOF"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

/// The request's datacenter, or the agent's when it names none (Consul's
/// handlers fill `args.Datacenter` in the same way).
fn dc_or_agents(datacenter: String, agent: &AgentHandle) -> Datacenter {
    if datacenter.is_empty() {
        agent.options().core.datacenter.clone()
    } else {
        Datacenter(datacenter)
    }
}

async fn write(
    agent: &AgentHandle,
    datacenter: Datacenter,
    op: CatalogOp,
    pretty: bool,
) -> ApiResult {
    let request = Request {
        datacenter,
        read_mode: Default::default(),
        blocking: None,
        op: Op::Catalog(op),
    };
    let reply = agent.call(request).await?;
    match reply.body {
        ReplyBody::Applied(ApplyResult::Catalog(Ok(()))) => json(&true, pretty),
        ReplyBody::Applied(ApplyResult::Catalog(Err(e))) => Err(ApiError::internal(e.to_string())),
        _ => Err(ApiError::unexpected_reply("a catalog write")),
    }
}

/// Consul's `RegisterRequest` as `encoding/json` reads it; `Check` and
/// `Checks` become one list. The datacenter comes back apart.
fn parse_register(value: &Value) -> Result<(String, Register), String> {
    let f = Fields::top(value, "RegisterRequest")?;
    let service = match f.object("Service", "NodeService")? {
        None => None,
        Some(s) => Some(parse_service(&s)?),
    };
    let mut checks = Vec::new();
    if let Some(c) = f.object("Check", "HealthCheck")? {
        checks.push(parse_check(&c)?);
    }
    for c in f.object_list("Checks", "HealthCheck")? {
        checks.push(parse_check(&c)?);
    }
    let reg = Register {
        id: f.string("ID")?,
        node: f.string("Node")?,
        address: f.string("Address")?,
        datacenter: f.string("Datacenter")?,
        tagged_addresses: f.string_map("TaggedAddresses")?,
        node_meta: f.string_map("NodeMeta")?,
        service,
        checks,
        skip_node_update: f.bool("SkipNodeUpdate")?,
    };
    Ok((reg.datacenter.clone(), reg))
}

pub(crate) fn parse_service(f: &Fields<'_>) -> Result<Service, String> {
    let mut tagged_addresses = BTreeMap::new();
    for (name, a) in f.object_map("TaggedAddresses", "ServiceAddress")? {
        tagged_addresses.insert(
            name,
            ServiceAddress {
                address: a.string("Address")?,
                port: a.int("Port")?,
            },
        );
    }
    let weights = match f.object("Weights", "Weights")? {
        None => None,
        Some(w) => Some(Weights {
            passing: w.int("Passing")?,
            warning: w.int("Warning")?,
        }),
    };
    Ok(Service {
        kind: f.string("Kind")?,
        id: f.string("ID")?,
        service: f.string("Service")?,
        tags: f.strings("Tags")?,
        address: f.string("Address")?,
        tagged_addresses,
        meta: f.string_map("Meta")?,
        port: f.int("Port")?,
        weights,
        enable_tag_override: f.bool("EnableTagOverride")?,
        create_index: 0,
        modify_index: 0,
    })
}

pub(crate) fn parse_check(f: &Fields<'_>) -> Result<Check, String> {
    let definition = match f.object("Definition", "HealthCheckDefinition")? {
        None => CheckDefinition::default(),
        Some(d) => CheckDefinition {
            http: d.string("HTTP")?,
            tcp: d.string("TCP")?,
            interval_ns: d.duration_ns("Interval")?,
            timeout_ns: d.duration_ns("Timeout")?,
            deregister_critical_service_after_ns: d
                .duration_ns("DeregisterCriticalServiceAfter")?,
        },
    };
    Ok(Check {
        node: f.string("Node")?,
        check_id: f.string("CheckID")?,
        name: f.string("Name")?,
        status: f.string("Status")?,
        notes: f.string("Notes")?,
        output: f.string("Output")?,
        service_id: f.string("ServiceID")?,
        service_name: f.string("ServiceName")?,
        service_tags: f.strings("ServiceTags")?,
        kind: f.string("Type")?,
        definition,
        create_index: 0,
        modify_index: 0,
    })
}

/// Consul's `DeregisterRequest`.
fn parse_deregister(value: &Value) -> Result<(String, Deregister), String> {
    let f = Fields::top(value, "DeregisterRequest")?;
    let dereg = Deregister {
        node: f.string("Node")?,
        service_id: f.string("ServiceID")?,
        check_id: f.string("CheckID")?,
    };
    Ok((f.string("Datacenter")?, dereg))
}

/// `GET /v1/catalog/datacenters`: this agent's datacenter first, then the
/// others its WAN pool knows, by name (Consul sorts by round-trip time; no
/// coordinates here). Needs no leader, as in Consul.
pub(crate) async fn datacenters(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::new(query);
    let own = agent.options().core.datacenter.0.clone();
    let mut others: Vec<String> = match agent.members(Pool::Wan).await {
        Ok(members) => members
            .iter()
            .filter(|m| m.status != Status::Left)
            .filter_map(|m| m.tags.0.get("dc").cloned())
            .filter(|dc| *dc != own)
            .collect(),
        Err(_) => Vec::new(),
    };
    others.sort();
    others.dedup();
    let mut all = vec![own];
    all.extend(others);
    json(&all, params.has("pretty"))
}

/// What every catalog read takes from the query: the read options, and
/// the node-meta filter (`?node-meta=k:v`, repeatable; a value without
/// `:` is a key with an empty value, as Consul's `ParseMetaPair`). A
/// `?filter=` expression that does not parse is a 400 here; the list
/// handlers apply it to their answer (`filter.rs`).
pub(crate) fn start(
    agent: &AgentHandle,
    query: Vec<(String, String)>,
) -> Result<(Params, QueryOptions, BTreeMap<String, String>), ApiError> {
    let params = Params::new(query);
    let opts = QueryOptions::parse(&params, agent.options())?;
    super::filter::from_query(params.get("filter"))?;
    let node_meta = params
        .all("node-meta")
        .into_iter()
        .map(|pair| match pair.split_once(':') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (pair.to_owned(), String::new()),
        })
        .collect();
    Ok((params, opts, node_meta))
}

pub(crate) async fn catalog_read(
    agent: &AgentHandle,
    opts: &QueryOptions,
    op: CatalogOp,
) -> Result<(CatalogReply, super::reply::Meta), ApiError> {
    let (reply, meta) = read(agent, opts, Op::Catalog(op)).await?;
    match reply.body {
        ReplyBody::Catalog(c) => Ok((c, meta)),
        _ => Err(ApiError::unexpected_reply("a catalog read")),
    }
}

/// `GET /v1/catalog/nodes`.
pub(crate) async fn nodes(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (params, opts, node_meta) = start(&agent, query)?;
    let filter = super::filter::from_query(params.get("filter"))?;
    let (reply, meta) = catalog_read(&agent, &opts, CatalogOp::Nodes { node_meta }).await?;
    let CatalogReply::Nodes(nodes) = reply else {
        return Err(ApiError::unexpected_reply("catalog/nodes"));
    };
    let body: Vec<NodeJson<'_>> = nodes.iter().map(NodeJson::from).collect();
    let body = super::filter::apply(body, filter.as_ref())?;
    Ok(meta.apply(json(&body, opts.pretty)?))
}

/// `GET /v1/catalog/services`.
pub(crate) async fn services(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (params, opts, node_meta) = start(&agent, query)?;
    let Some(filter) = super::filter::from_query(params.get("filter"))? else {
        let (reply, meta) = catalog_read(&agent, &opts, CatalogOp::Services { node_meta }).await?;
        let CatalogReply::Services(services) = reply else {
            return Err(ApiError::unexpected_reply("catalog/services"));
        };
        return Ok(meta.apply(json(&services, opts.pretty)?));
    };
    // Consul's `ListServices` with a filter: the filter runs over every
    // instance as a `ServiceNode`, and what passes is folded into names
    // with the union of their tags.
    let (reply, meta) =
        catalog_read(&agent, &opts, CatalogOp::ServiceInstances { node_meta }).await?;
    let CatalogReply::ServiceNodes(found) = reply else {
        return Err(ApiError::unexpected_reply("catalog/services"));
    };
    let mut services: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for instance in &found {
        let kept = super::filter::apply(vec![ServiceNodeJson::from(instance)], Some(&filter))?;
        if !kept.is_empty() {
            services
                .entry(&instance.service.service)
                .or_default()
                .extend(instance.service.tags.iter().flatten().map(String::as_str));
        }
    }
    Ok(meta.apply(json(&services, opts.pretty)?))
}

/// `GET /v1/catalog/service/` with no name.
pub(crate) async fn service_nameless(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    start(&agent, query)?;
    Err(ApiError::bad_request("Missing service name"))
}

/// `GET /v1/catalog/service/<service>[?tag=..]`.
pub(crate) async fn service(
    State(agent): State<AgentHandle>,
    Path(service): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (params, opts, node_meta) = start(&agent, query)?;
    let tags = params.all("tag").into_iter().map(str::to_owned).collect();
    let op = CatalogOp::ServiceNodes {
        service,
        tags,
        node_meta,
    };
    let (reply, meta) = catalog_read(&agent, &opts, op).await?;
    let CatalogReply::ServiceNodes(found) = reply else {
        return Err(ApiError::unexpected_reply("catalog/service"));
    };
    let body: Vec<ServiceNodeJson<'_>> = found.iter().map(ServiceNodeJson::from).collect();
    let filter = super::filter::from_query(params.get("filter"))?;
    let body = super::filter::apply(body, filter.as_ref())?;
    Ok(meta.apply(json(&body, opts.pretty)?))
}

/// `GET /v1/catalog/node/` and `/node-services/` with no name.
pub(crate) async fn node_nameless(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    start(&agent, query)?;
    Err(ApiError::bad_request("Missing node name"))
}

/// The node's services, those `?filter=` keeps (Consul filters a node's
/// `NodeService`s there: `Service`, `Tags`, `Port`, `Meta`, ...).
async fn node_services(
    agent: &AgentHandle,
    node: String,
    query: Vec<(String, String)>,
) -> Result<
    (
        Option<Box<tern_core::fsm::NodeServices>>,
        QueryOptions,
        super::reply::Meta,
        bool,
    ),
    ApiError,
> {
    let (params, opts, _) = start(agent, query)?;
    let filter = super::filter::from_query(params.get("filter"))?;
    let (reply, meta) = catalog_read(agent, &opts, CatalogOp::NodeServices { node }).await?;
    let CatalogReply::NodeServices(mut found) = reply else {
        return Err(ApiError::unexpected_reply("catalog/node"));
    };
    if let (Some(f), Some(ns)) = (filter.as_ref(), found.as_mut()) {
        let keep: Vec<bool> = ns
            .services
            .iter()
            .map(|s| {
                super::filter::apply(vec![NodeServiceJson::from(s)], Some(f)).map(|v| !v.is_empty())
            })
            .collect::<Result<_, _>>()?;
        let mut keep = keep.into_iter();
        ns.services.retain(|_| keep.next().unwrap_or(false));
    }
    Ok((found, opts, meta, filter.is_some()))
}

/// `GET /v1/catalog/node/<node>`: `{Node, Services: {id: service}}`, or
/// `null` for a node that is not there (still 200).
pub(crate) async fn node(
    State(agent): State<AgentHandle>,
    Path(node): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (found, opts, meta, _) = node_services(&agent, node, query).await?;
    let body = found.as_ref().map(|ns| NodeServicesJson {
        node: NodeJson::from(&ns.node),
        services: ns
            .services
            .iter()
            .map(|s| (s.id.as_str(), NodeServiceJson::from(s)))
            .collect(),
    });
    Ok(meta.apply(json(&body, opts.pretty)?))
}

/// `GET /v1/catalog/node-services/<node>`: `{Node, Services: [..]}`;
/// both `null` for a node that is not there, `Services` `null` for a node
/// without services (Consul appends to a nil list).
pub(crate) async fn node_service_list(
    State(agent): State<AgentHandle>,
    Path(node): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let (found, opts, meta, filtered) = node_services(&agent, node, query).await?;
    let body = match &found {
        None => NodeServiceListJson {
            node: None,
            services: None,
        },
        Some(ns) => NodeServiceListJson {
            node: Some(NodeJson::from(&ns.node)),
            // A filtered list is a new (empty, not nil) slice in Consul.
            services: (filtered || !ns.services.is_empty())
                .then(|| ns.services.iter().map(NodeServiceJson::from).collect()),
        },
    };
    Ok(meta.apply(json(&body, opts.pretty)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Register, String> {
        parse_register(&serde_json::from_str(s).unwrap()).map(|(_, r)| r)
    }

    /// What py-consul sends: lowercase keys, a `WriteRequest` object Consul
    /// ignores, a check under `check`.
    #[test]
    fn py_consuls_lowercase_body_is_read_as_consul_reads_it() {
        let reg = parse(
            r#"{"node":"n1","address":"10.0.0.1","datacenter":"dc1",
                "service":{"service":"web","id":"web1","tags":["a"],"port":80,
                           "enabletagoverride":true,"weights":{"passing":3,"warning":1}},
                "check":{"name":"alive","status":"passing","serviceid":"web1",
                         "definition":{"http":"http://x","interval":"10s"}},
                "WriteRequest":{"Token":"t"}}"#,
        )
        .unwrap();
        assert_eq!(
            (reg.node.as_str(), reg.address.as_str()),
            ("n1", "10.0.0.1")
        );
        let s = reg.service.unwrap();
        assert_eq!(
            (s.id.as_str(), s.port, s.enable_tag_override),
            ("web1", 80, true)
        );
        assert_eq!(
            s.weights,
            Some(Weights {
                passing: 3,
                warning: 1
            })
        );
        assert_eq!(s.tags, Some(vec!["a".to_owned()]));
        let c = &reg.checks[0];
        assert_eq!((c.name.as_str(), c.service_id.as_str()), ("alive", "web1"));
        assert_eq!(c.definition.interval_ns, 10_000_000_000);
        assert_eq!(reg.node_meta, None);
    }

    #[test]
    fn a_body_of_the_wrong_shape_names_the_field() {
        assert_eq!(
            parse(r#"{"Node":"n1","Service":{"Port":"80"}}"#).unwrap_err(),
            "json: cannot unmarshal string into Go struct field NodeService.Service.Port of type int"
        );
        assert_eq!(
            parse(r#"{"Node":"n1","NodeMeta":{"a":1}}"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field RegisterRequest.NodeMeta of type string"
        );
    }

    #[test]
    fn the_json_shapes_are_consuls() {
        let node = Node {
            id: String::new(),
            node: "n1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: None,
            meta: Some(BTreeMap::new()),
            create_index: 5,
            modify_index: 6,
        };
        assert_eq!(
            serde_json::to_string(&NodeJson::from(&node)).unwrap(),
            r#"{"ID":"","Node":"n1","Address":"10.0.0.1","Datacenter":"dc1","TaggedAddresses":null,"Meta":{},"CreateIndex":5,"ModifyIndex":6}"#
        );
        let service = Service {
            kind: String::new(),
            id: "web1".into(),
            service: "web".into(),
            tags: None,
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: None,
            port: 0,
            weights: Some(Weights::DEFAULT),
            enable_tag_override: false,
            create_index: 5,
            modify_index: 5,
        };
        assert_eq!(
            serde_json::to_string(&NodeServiceJson::from(&service)).unwrap(),
            r#"{"ID":"web1","Service":"web","Tags":[],"Address":"","Meta":null,"Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"Proxy":{"Mode":"","MeshGateway":{},"Expose":{}},"Connect":{},"PeerName":"","CreateIndex":5,"ModifyIndex":5}"#
        );
        let instance = ServiceInstance {
            node,
            node_name: "n1".into(),
            service,
        };
        assert_eq!(
            serde_json::to_string(&ServiceNodeJson::from(&instance)).unwrap(),
            r#"{"ID":"","Node":"n1","Address":"10.0.0.1","Datacenter":"dc1","TaggedAddresses":null,"NodeMeta":{},"ServiceKind":"","ServiceID":"web1","ServiceName":"web","ServiceTags":[],"ServiceAddress":"","ServiceWeights":{"Passing":1,"Warning":1},"ServiceMeta":{},"ServicePort":0,"ServiceSocketPath":"","ServiceEnableTagOverride":false,"ServiceProxy":{"Mode":"","MeshGateway":{},"Expose":{}},"ServiceConnect":{},"ServiceLocality":null,"CreateIndex":5,"ModifyIndex":5}"#
        );
    }
}
