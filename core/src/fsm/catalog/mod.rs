//! The catalog: nodes, services and checks (Consul's `nodes`, `services`
//! and `checks` tables, agent/consul/state/catalog.go), with Consul's index
//! rows so a blocking query wakes only when what it reads changed: one per
//! table, `service.<name>` per service name, `node.<name>` per node, and the
//! "extinction" indexes (the last time a node, or the last instance of a
//! service, went away) that a query on something missing answers with.
//!
//! Consul's lookups ignore case (its memdb indexes lowercase node names,
//! service IDs, check IDs and service names); so do the keys here, while the
//! rows keep the spelling they were registered with.
//!
//! A registration or deregistration is all or nothing, as Consul's memdb
//! transaction is: it is applied to an O(1) clone of the table (persistent
//! maps) that replaces the table only if every part succeeded.
//!
//! Sessions join as a further table later (and with them the invalidation
//! of sessions when a node or a critical check goes).

mod snapshot;
pub(crate) mod types;
pub(crate) mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use super::hash::ItemHasher;
use types::{
    CatalogError, CatalogTableName, Check, CheckServiceNode, Deregister, Node, NodeServices,
    Register, Service, ServiceInstance,
};

pub(crate) use snapshot::{CatalogSnapshot, CatalogSnapshotRef};

/// The most nodes the catalog holds; a registration of one more is refused
/// with [`CatalogError::TableFull`]. A constant, not a knob: every server
/// must refuse the same registration at the same log position.
pub const CATALOG_NODES_MAX: usize = 65_536;
/// The most service instances (all nodes together).
pub const CATALOG_SERVICES_MAX: usize = 262_144;
/// The most checks (all nodes together).
pub const CATALOG_CHECKS_MAX: usize = 262_144;

/// The table limits (the constants above; tests shrink them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub nodes: usize,
    pub services: usize,
    pub checks: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            nodes: CATALOG_NODES_MAX,
            services: CATALOG_SERVICES_MAX,
            checks: CATALOG_CHECKS_MAX,
        }
    }
}

/// What a catalog read watches, for waking parked queries: a write offers
/// a parked query only if it touched one of the query's topics (and the
/// server then compares the query's index with its `min_index`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CatalogTopic {
    /// The nodes table (`/v1/catalog/nodes`).
    Nodes,
    /// The services table (`/v1/catalog/services`).
    Services,
    /// The checks table.
    Checks,
    /// One service name, lowercased (`/v1/catalog/service/<s>`).
    Service(String),
    /// One node name, lowercased (`/v1/catalog/node/<n>`).
    Node(String),
}

/// Consul's lookups ignore case (Go's `strings.ToLower` on both sides).
pub(crate) fn fold(s: &str) -> String {
    s.to_lowercase()
}

type Key = Arc<str>;
/// `(lowercased node, lowercased service or check ID)`.
type Pair = (Key, Key);

fn key(s: &str) -> Key {
    Arc::from(fold(s))
}

fn pair(node: &str, id: &str) -> Pair {
    (key(node), key(id))
}

/// Every row of `map` whose key's node is `node` (already folded).
fn on_node<'a, V>(
    map: &'a OrdMap<Pair, V>,
    node: &'a Key,
) -> impl Iterator<Item = (&'a Pair, &'a V)> {
    let from: Pair = (Arc::clone(node), Arc::from(""));
    map.range(from..).take_while(move |(k, _)| k.0 == *node)
}

/// A stored row and its hash (kept so removing it needs no re-encoding).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row<T> {
    value: T,
    hash: u64,
}

impl<T: Serialize> Row<T> {
    fn new(domain: &str, value: T) -> Row<T> {
        // The row's canonical bytes are its postcard encoding (plain
        // structs of strings, integers and maps: it cannot fail).
        let bytes = postcard::to_allocvec(&value).expect("a catalog row encodes");
        let hash = ItemHasher::new(domain).bytes(&bytes).finish();
        Row { value, hash }
    }
}

/// A service row: the instance and the node name it was registered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct ServiceRow {
    node: String,
    service: Service,
}

fn index_hash(domain: &str, name: &str, index: u64) -> u64 {
    ItemHasher::new(domain).str(name).u64(index).finish()
}

/// The catalog tables and their indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CatalogTable {
    nodes: OrdMap<Key, Arc<Row<Node>>>,
    /// Lowercased node ID -> lowercased node name, for nodes with an ID.
    node_ids: OrdMap<Key, Key>,
    services: OrdMap<Pair, Arc<Row<ServiceRow>>>,
    /// Lowercased service name -> the instances of it.
    by_name: OrdMap<Key, OrdSet<Pair>>,
    checks: OrdMap<Pair, Arc<Row<Check>>>,
    nodes_index: u64,
    services_index: u64,
    checks_index: u64,
    /// Consul's `node_last_extinction` and `service_last_extinction`; 0
    /// until a node or the last instance of a service first went away.
    node_extinction: u64,
    service_extinction: u64,
    /// Consul's `service.<name>` rows (lowercased name), removed when the
    /// last instance goes.
    service_index: OrdMap<Key, u64>,
    /// Consul's `node.<name>` rows, removed with the node.
    node_index: OrdMap<Key, u64>,
    /// Wrapping sum of the hashes of every row and per-name index.
    content_hash: u64,
    limits: Limits,
}

impl CatalogTable {
    #[cfg(test)]
    pub(crate) fn with_limits(limits: Limits) -> CatalogTable {
        CatalogTable {
            limits,
            ..CatalogTable::default()
        }
    }

    // ----- writes -----

    /// Consul's `EnsureRegistration` at Raft index `index`: all of it, or
    /// (with the reason) none of it.
    pub(crate) fn register(&mut self, index: u64, reg: &Register) -> Result<(), CatalogError> {
        let reg = validate::normalize(reg.clone())?;
        let mut next = self.clone();
        next.register_normalized(index, &reg)?;
        *self = next;
        Ok(())
    }

    /// Consul's `applyDeregister`: a service, else a check, else the node.
    /// Removing what is not there changes nothing and succeeds.
    pub(crate) fn deregister(
        &mut self,
        index: u64,
        dereg: &Deregister,
    ) -> Result<(), CatalogError> {
        if dereg.node.is_empty() {
            return Err(CatalogError::MissingNode);
        }
        if !dereg.service_id.is_empty() {
            self.delete_service(index, &dereg.node, &dereg.service_id);
        } else if !dereg.check_id.is_empty() {
            self.delete_check(index, &dereg.node, &dereg.check_id);
        } else {
            self.delete_node(index, &dereg.node);
        }
        Ok(())
    }

    fn register_normalized(&mut self, index: u64, reg: &Register) -> Result<(), CatalogError> {
        let node = Node {
            id: reg.id.clone(),
            node: reg.node.clone(),
            address: reg.address.clone(),
            datacenter: reg.datacenter.clone(),
            tagged_addresses: reg.tagged_addresses.clone(),
            meta: reg.node_meta.clone(),
            create_index: 0,
            modify_index: 0,
        };
        // Consul's `ChangesNode`: a registration that says nothing new of
        // the node (or asks to skip it) leaves the node row alone, so its
        // watchers are not woken by every service update.
        let changes = match self.nodes.get(&*fold(&reg.node)) {
            None => true,
            Some(_) if reg.skip_node_update => false,
            Some(row) => !same_node(&row.value, &node),
        };
        if changes {
            self.ensure_node(index, node)?;
        }
        if let Some(service) = &reg.service {
            self.ensure_service(index, &reg.node, service)?;
        }
        for check in &reg.checks {
            if fold(&check.node) != fold(&reg.node) {
                return Err(CatalogError::CheckNodeMismatch {
                    check_node: check.node.clone(),
                    node: reg.node.clone(),
                });
            }
            self.ensure_check(index, check.clone())?;
        }
        Ok(())
    }

    /// Consul's `ensureNodeTxn`: an ID names the node even under a new
    /// name (the old row goes, a rename), unless the name belongs to
    /// another node that is alive.
    fn ensure_node(&mut self, index: u64, mut node: Node) -> Result<(), CatalogError> {
        let mut previous: Option<Node> = None;
        if !node.id.is_empty() {
            let by_id = self
                .node_ids
                .get(&*fold(&node.id))
                .and_then(|name| self.nodes.get(name))
                .map(|row| row.value.clone());
            match by_id {
                Some(existing) => {
                    if fold(&existing.node) != fold(&node.node) {
                        self.name_free_for(&node, false).map_err(|why| {
                            CatalogError::NodeConflict(format!(
                                "Error while renaming Node ID: {:?} ({}): {why}",
                                node.id, node.address
                            ))
                        })?;
                        self.delete_node(index, &existing.node);
                    }
                    previous = Some(existing);
                }
                None => self.name_free_for(&node, true).map_err(|why| {
                    CatalogError::NodeConflict(format!(
                        "Error while renaming Node ID: {:?}: {why}",
                        node.id
                    ))
                })?,
            }
        }
        if previous.is_none() {
            previous = self
                .nodes
                .get(&*fold(&node.node))
                .map(|row| row.value.clone());
        }
        match previous {
            Some(old) => {
                node.create_index = old.create_index;
                node.modify_index = old.modify_index;
                if same_node(&old, &node) {
                    return Ok(());
                }
                node.modify_index = index;
            }
            None => {
                node.create_index = index;
                node.modify_index = index;
            }
        }
        self.insert_node(node)
    }

    /// Consul's `ensureNoNodeWithSimilarNameTxn`: another node with this
    /// name (and another ID) that is healthy by its `serfHealth` check keeps
    /// its name. A node without that check (registered from outside) is
    /// not taken as healthy.
    fn name_free_for(&self, node: &Node, allow_clash_without_id: bool) -> Result<(), String> {
        let name = key(&node.node);
        let Some(other) = self.nodes.get(&name) else {
            return Ok(());
        };
        let other = &other.value;
        if other.id == node.id {
            return Ok(());
        }
        let healthy = self
            .checks
            .get(&(Arc::clone(&name), key("serfHealth")))
            .is_some_and(|c| c.value.status != "critical");
        if !(other.id.is_empty() && allow_clash_without_id) && healthy {
            return Err(format!(
                "Node name {} is reserved by node {} with name {} ({})",
                node.node, other.id, other.node, other.address
            ));
        }
        Ok(())
    }

    /// Consul's `catalogInsertNode`: the row, the `nodes` and `node.<name>`
    /// indexes, and the `service.<name>` index of every service on the node
    /// (health reads show node fields).
    fn insert_node(&mut self, node: Node) -> Result<(), CatalogError> {
        let name = key(&node.node);
        let old = self.nodes.get(&name).cloned();
        if old.is_none() && self.nodes.len() >= self.limits.nodes {
            return Err(CatalogError::TableFull {
                table: CatalogTableName::Nodes,
                max: self.limits.nodes,
            });
        }
        if let Some(old) = &old {
            self.content_hash = self.content_hash.wrapping_sub(old.hash);
            if !old.value.id.is_empty() {
                self.node_ids.remove(&*fold(&old.value.id));
            }
        }
        if !node.id.is_empty() {
            self.node_ids.insert(key(&node.id), Arc::clone(&name));
        }
        let modify = node.modify_index;
        let row = Row::new("catalog.node", node);
        self.content_hash = self.content_hash.wrapping_add(row.hash);
        self.nodes.insert(Arc::clone(&name), Arc::new(row));
        self.nodes_index = self.nodes_index.max(modify);
        self.set_node_index(&name, modify);
        self.touch_services_of(&name, modify);
        Ok(())
    }

    /// Consul's `ensureServiceTxn` and `catalogInsertService`.
    fn ensure_service(
        &mut self,
        index: u64,
        node: &str,
        sent: &Service,
    ) -> Result<(), CatalogError> {
        let node_key = key(node);
        if !self.nodes.contains_key(&node_key) {
            return Err(CatalogError::MissingNodeRegistration {
                node: node.to_owned(),
            });
        }
        let at = (Arc::clone(&node_key), key(&sent.id));
        let mut service = sent.clone();
        service.weights = Some(validate::stored_weights(sent.weights));
        let existing = self.services.get(&at).cloned();
        match &existing {
            Some(old) => {
                service.create_index = old.value.service.create_index;
                service.modify_index = old.value.service.modify_index;
                if old.value.node == node && old.value.service == service {
                    return Ok(());
                }
            }
            None => {
                if self.services.len() >= self.limits.services {
                    return Err(CatalogError::TableFull {
                        table: CatalogTableName::Services,
                        max: self.limits.services,
                    });
                }
                service.create_index = index;
            }
        }
        service.modify_index = index;
        let name = key(&service.service);
        if let Some(old) = &existing {
            self.content_hash = self.content_hash.wrapping_sub(old.hash);
            let old_name = key(&old.value.service.service);
            if old_name != name {
                // The instance leaves its old name: that name's watchers
                // see it go (Consul leaves their index as it was).
                self.unlink_instance(index, &old_name, &at);
            }
        }
        let row = Row::new(
            "catalog.service",
            ServiceRow {
                node: node.to_owned(),
                service,
            },
        );
        self.content_hash = self.content_hash.wrapping_add(row.hash);
        self.services.insert(at.clone(), Arc::new(row));
        let mut instances = self.by_name.get(&name).cloned().unwrap_or_default();
        instances.insert(at);
        self.by_name.insert(Arc::clone(&name), instances);
        self.services_index = self.services_index.max(index);
        self.set_service_index(&name, index);
        self.nodes_index = self.nodes_index.max(index);
        self.set_node_index(&node_key, index);
        Ok(())
    }

    /// Consul's `ensureCheckTxn`: a service check takes its service's name
    /// and tags; an unchanged check is left alone (no index moves).
    fn ensure_check(&mut self, index: u64, mut check: Check) -> Result<(), CatalogError> {
        let node_key = key(&check.node);
        let at = (Arc::clone(&node_key), key(&check.check_id));
        let existing = self.checks.get(&at).cloned();
        if check.status.is_empty() {
            check.status = "critical".to_owned();
        }
        if !self.nodes.contains_key(&node_key) {
            return Err(CatalogError::MissingNodeRegistration {
                node: check.node.clone(),
            });
        }
        let mut service_name = None;
        if !check.service_id.is_empty() {
            let Some(row) = self
                .services
                .get(&(Arc::clone(&node_key), key(&check.service_id)))
            else {
                return Err(CatalogError::MissingService {
                    node: check.node.clone(),
                });
            };
            check.service_name = row.value.service.service.clone();
            check.service_tags = row.value.service.tags.clone();
            service_name = Some(key(&check.service_name));
        }
        match &existing {
            Some(old) => {
                check.create_index = old.value.create_index;
                check.modify_index = old.value.modify_index;
                if same_check(&old.value, &check) {
                    return Ok(());
                }
            }
            None => {
                if self.checks.len() >= self.limits.checks {
                    return Err(CatalogError::TableFull {
                        table: CatalogTableName::Checks,
                        max: self.limits.checks,
                    });
                }
                check.create_index = index;
            }
        }
        check.modify_index = index;
        match service_name {
            Some(name) => self.set_service_index(&name, index),
            // A node check changes the health of every service on the node.
            None => self.touch_services_of(&node_key, index),
        }
        if let Some(old) = &existing {
            self.content_hash = self.content_hash.wrapping_sub(old.hash);
        }
        let row = Row::new("catalog.check", check);
        self.content_hash = self.content_hash.wrapping_add(row.hash);
        self.checks.insert(at, Arc::new(row));
        self.checks_index = self.checks_index.max(index);
        Ok(())
    }

    /// Consul's `deleteCheckTxn`.
    fn delete_check(&mut self, index: u64, node: &str, check_id: &str) {
        let at = pair(node, check_id);
        let Some(row) = self.checks.remove(&at) else {
            return;
        };
        self.content_hash = self.content_hash.wrapping_sub(row.hash);
        self.checks_index = self.checks_index.max(index);
        let service = (!row.value.service_id.is_empty())
            .then(|| {
                self.services
                    .get(&(Arc::clone(&at.0), key(&row.value.service_id)))
            })
            .flatten()
            .map(|s| key(&s.value.service.service));
        match service {
            Some(name) => self.set_service_index(&name, index),
            None => self.touch_services_of(&at.0, index),
        }
    }

    /// Consul's `deleteServiceTxn`: the instance and its checks.
    fn delete_service(&mut self, index: u64, node: &str, service_id: &str) {
        let at = pair(node, service_id);
        if !self.services.contains_key(&at) {
            return;
        }
        let doomed: Vec<Key> = on_node(&self.checks, &at.0)
            .filter(|(_, c)| fold(&c.value.service_id) == *at.1)
            .map(|(k, _)| Arc::clone(&k.1))
            .collect();
        for check_id in doomed {
            self.delete_check(index, node, &check_id);
        }
        self.checks_index = self.checks_index.max(index);
        let Some(row) = self.services.remove(&at) else {
            return;
        };
        self.content_hash = self.content_hash.wrapping_sub(row.hash);
        self.services_index = self.services_index.max(index);
        self.nodes_index = self.nodes_index.max(index);
        self.set_node_index(&at.0, index);
        let name = key(&row.value.service.service);
        self.unlink_instance(index, &name, &at);
    }

    /// Takes instance `at` out of service `name`: the name's index moves,
    /// or, if it was the last instance, the name's index row goes and the
    /// service extinction index moves (Consul's `deleteServiceTxn`).
    fn unlink_instance(&mut self, index: u64, name: &Key, at: &Pair) {
        let mut instances = self.by_name.get(name).cloned().unwrap_or_default();
        instances.remove(at);
        if instances.is_empty() {
            self.by_name.remove(name);
            self.remove_service_index(name);
            self.service_extinction = self.service_extinction.max(index);
        } else {
            self.by_name.insert(Arc::clone(name), instances);
            self.set_service_index(name, index);
        }
    }

    /// Consul's `deleteNodeTxn`: its services, its checks, then the node.
    fn delete_node(&mut self, index: u64, node: &str) {
        let name = key(node);
        if !self.nodes.contains_key(&name) {
            return;
        }
        let services: Vec<Key> = on_node(&self.services, &name)
            .map(|(k, _)| Arc::clone(&k.1))
            .collect();
        for id in services {
            self.delete_service(index, node, &id);
        }
        let checks: Vec<Key> = on_node(&self.checks, &name)
            .map(|(k, _)| Arc::clone(&k.1))
            .collect();
        for id in checks {
            self.delete_check(index, node, &id);
        }
        let Some(row) = self.nodes.remove(&name) else {
            return;
        };
        self.content_hash = self.content_hash.wrapping_sub(row.hash);
        if !row.value.id.is_empty() {
            self.node_ids.remove(&*fold(&row.value.id));
        }
        self.nodes_index = self.nodes_index.max(index);
        self.remove_node_index(&name);
        self.node_extinction = self.node_extinction.max(index);
    }

    /// Moves the `service.<name>` index of every service on `node`.
    fn touch_services_of(&mut self, node: &Key, index: u64) {
        let names: BTreeSet<Key> = on_node(&self.services, node)
            .map(|(_, s)| key(&s.value.service.service))
            .collect();
        for name in names {
            self.set_service_index(&name, index);
        }
    }

    fn set_service_index(&mut self, name: &Key, index: u64) {
        set_index(
            &mut self.service_index,
            &mut self.content_hash,
            "catalog.service_index",
            name,
            index,
        );
    }

    fn remove_service_index(&mut self, name: &Key) {
        if let Some(old) = self.service_index.remove(name) {
            self.content_hash =
                self.content_hash
                    .wrapping_sub(index_hash("catalog.service_index", name, old));
        }
    }

    fn set_node_index(&mut self, name: &Key, index: u64) {
        set_index(
            &mut self.node_index,
            &mut self.content_hash,
            "catalog.node_index",
            name,
            index,
        );
    }

    fn remove_node_index(&mut self, name: &Key) {
        if let Some(old) = self.node_index.remove(name) {
            self.content_hash =
                self.content_hash
                    .wrapping_sub(index_hash("catalog.node_index", name, old));
        }
    }

    // ----- what a write touches -----

    /// The topics a catalog command may change, judged from the state
    /// before it is applied: the tables, the node (and the node its ID
    /// names, which a rename removes), the service it registers, and every
    /// service on those nodes (a node or node-check change moves their
    /// indexes). Over, never under: the server still compares indexes.
    pub(crate) fn topics(&self, node: &str, id: &str, service: Option<&str>) -> Vec<CatalogTopic> {
        let mut topics: BTreeSet<CatalogTopic> = [
            CatalogTopic::Nodes,
            CatalogTopic::Services,
            CatalogTopic::Checks,
        ]
        .into();
        let mut nodes = vec![key(node)];
        if let Some(renamed) = (!id.is_empty())
            .then(|| self.node_ids.get(&*fold(id)))
            .flatten()
        {
            nodes.push(Arc::clone(renamed));
        }
        for n in &nodes {
            topics.insert(CatalogTopic::Node(n.to_string()));
            for (_, s) in on_node(&self.services, n) {
                topics.insert(CatalogTopic::Service(fold(&s.value.service.service)));
            }
        }
        if let Some(name) = service {
            topics.insert(CatalogTopic::Service(fold(name)));
        }
        topics.into_iter().collect()
    }

    // ----- reads -----

    /// `/v1/catalog/nodes` (Consul's `Nodes`/`NodesByMeta`): the nodes in
    /// name order whose meta has every `node_meta` pair, and the nodes
    /// index.
    pub(crate) fn nodes(&self, node_meta: &BTreeMap<String, String>) -> (u64, Vec<Node>) {
        let nodes = self
            .nodes
            .values()
            .filter(|row| satisfies(&row.value.meta, node_meta))
            .map(|row| row.value.clone())
            .collect();
        (self.nodes_index, nodes)
    }

    /// `/v1/catalog/services` (Consul's `ListServices`): each service name
    /// with the union of its instances' tags (sorted; Consul's order is
    /// Go's random map order), only instances on nodes whose meta matches.
    pub(crate) fn services(
        &self,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, BTreeMap<String, Vec<String>>) {
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((node, _), row) in &self.services {
            if !node_meta.is_empty() {
                let meta = self.nodes.get(node).and_then(|n| n.value.meta.as_ref());
                if !satisfies_opt(meta, node_meta) {
                    continue;
                }
            }
            let s = &row.value.service;
            names
                .entry(s.service.clone())
                .or_default()
                .extend(s.tags.iter().flatten().cloned());
        }
        let index = if node_meta.is_empty() {
            self.services_index
        } else {
            self.services_index.max(self.nodes_index)
        };
        let names = names
            .into_iter()
            .map(|(name, tags)| (name, tags.into_iter().collect()))
            .collect();
        (index, names)
    }

    /// Every instance on a node whose meta matches, in node and service-ID
    /// order, with [`Self::services`]' index (`/v1/catalog/services?filter=`).
    pub(crate) fn service_instances(
        &self,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<ServiceInstance>) {
        let mut out = Vec::new();
        for ((node, _), row) in &self.services {
            let Some(n) = self.nodes.get(node) else {
                continue;
            };
            if !satisfies(&n.value.meta, node_meta) {
                continue;
            }
            out.push(ServiceInstance {
                node: n.value.clone(),
                node_name: row.value.node.clone(),
                service: row.value.service.clone(),
            });
        }
        let index = if node_meta.is_empty() {
            self.services_index
        } else {
            self.services_index.max(self.nodes_index)
        };
        (index, out)
    }

    /// `/v1/catalog/service/<s>` (Consul's `ServiceTagNodes` and the node
    /// meta filter of `Catalog.ServiceNodes`): the instances of `name`
    /// that carry every tag (ignoring case) on nodes whose meta matches,
    /// in node and service-ID order.
    pub(crate) fn service_nodes(
        &self,
        name: &str,
        tags: &[String],
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<ServiceInstance>) {
        let wanted: Vec<String> = tags.iter().map(|t| fold(t)).collect();
        let mut out = Vec::new();
        let instances = self.by_name.get(&*fold(name));
        for at in instances.into_iter().flatten() {
            let (Some(row), Some(node)) = (self.services.get(at), self.nodes.get(&at.0)) else {
                continue;
            };
            let service = &row.value.service;
            let has = |t: &String| service.tags.iter().flatten().any(|have| fold(have) == *t);
            if !wanted.iter().all(has) || !satisfies(&node.value.meta, node_meta) {
                continue;
            }
            out.push(ServiceInstance {
                node: node.value.clone(),
                node_name: row.value.node.clone(),
                service: service.clone(),
            });
        }
        (self.service_read_index(name), out)
    }

    /// Consul's `maxIndexForService`: a service with no instance answers
    /// with the service extinction index (once there is one), else with
    /// its `service.<name>` index, else with the nodes and services
    /// tables' index.
    pub(crate) fn service_read_index(&self, name: &str) -> u64 {
        let name = fold(name);
        let exists = self.by_name.contains_key(&*name);
        if !exists && self.service_extinction > 0 {
            return self.service_extinction;
        }
        match self.service_index.get(&*name) {
            Some(&at) => at,
            None => self.nodes_index.max(self.services_index),
        }
    }

    /// `/v1/catalog/node/<n>` and `/node-services/<n>` (Consul's
    /// `nodeServices`): the node by name, or by a unique prefix of its ID
    /// (two characters or more), with its services; the index is the
    /// node's own, or the node extinction index when there is no such node
    /// (0 when the name is too short to be an ID or the prefix is
    /// ambiguous).
    pub(crate) fn node_services(&self, name_or_id: &str) -> (u64, Option<NodeServices>) {
        let Some(name) = self.resolve_node(name_or_id) else {
            return (self.missing_node_index(name_or_id), None);
        };
        let Some(node) = self.nodes.get(&name) else {
            return (self.node_extinction, None);
        };
        let services = on_node(&self.services, &name)
            .map(|(_, s)| s.value.service.clone())
            .collect();
        let index = self.node_index.get(&name).copied().unwrap_or(0);
        let found = NodeServices {
            node: node.value.clone(),
            services,
        };
        (index, Some(found))
    }

    /// The index `node_services` answers with: the node's own, else as
    /// for a missing node.
    pub(crate) fn node_read_index(&self, name_or_id: &str) -> u64 {
        match self.resolve_node(name_or_id) {
            Some(name) => self.node_index.get(&name).copied().unwrap_or(0),
            None => self.missing_node_index(name_or_id),
        }
    }

    fn missing_node_index(&self, name_or_id: &str) -> u64 {
        if name_or_id.len() < 2 || self.nodes_with_id_prefix(name_or_id).len() > 1 {
            0
        } else {
            self.node_extinction
        }
    }

    /// The node a lookup names: by name, else by ID prefix if exactly one
    /// node's ID starts with it (Consul cuts an odd-length prefix by one).
    fn resolve_node(&self, name_or_id: &str) -> Option<Key> {
        let name = key(name_or_id);
        if self.nodes.contains_key(&name) {
            return Some(name);
        }
        if name_or_id.len() < 2 {
            return None;
        }
        match self.nodes_with_id_prefix(name_or_id).as_slice() {
            [one] => Some(Arc::clone(one)),
            _ => None,
        }
    }

    fn nodes_with_id_prefix(&self, prefix: &str) -> Vec<Key> {
        let mut prefix = fold(prefix);
        if prefix.len() % 2 == 1 {
            prefix.pop();
        }
        let from: Key = Arc::from(prefix.as_str());
        self.node_ids
            .range(from..)
            .take_while(|(id, _)| id.starts_with(prefix.as_str()))
            .map(|(_, name)| Arc::clone(name))
            .collect()
    }

    /// Every check on `node`, in check-ID order.
    pub(crate) fn node_checks(&self, node: &str) -> Vec<Check> {
        let name = key(node);
        on_node(&self.checks, &name)
            .map(|(_, c)| c.value.clone())
            .collect()
    }

    /// The checks index, or with a node-meta filter the checks and nodes
    /// tables' (what Consul's health check reads answer with).
    pub(crate) fn checks_read_index(&self, node_meta: &BTreeMap<String, String>) -> u64 {
        if node_meta.is_empty() {
            self.checks_index
        } else {
            self.checks_index.max(self.nodes_index)
        }
    }

    /// `/v1/health/checks/<s>` (Consul's `ServiceChecks`): the checks of
    /// the instances of service `name` (ignoring case), on nodes whose meta
    /// matches.
    pub(crate) fn service_checks(
        &self,
        name: &str,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<Check>) {
        let name = fold(name);
        let checks = self
            .checks
            .iter()
            .filter(|(_, c)| !c.value.service_id.is_empty() && fold(&c.value.service_name) == name)
            .filter(|((node, _), _)| self.node_matches(node, node_meta))
            .map(|(_, c)| c.value.clone())
            .collect();
        (self.checks_read_index(node_meta), checks)
    }

    /// `/v1/health/state/<state>` (Consul's `ChecksInState`): every check
    /// with that status (`any`: every check), by node and check ID.
    pub(crate) fn checks_in_state(
        &self,
        state: &str,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<Check>) {
        let checks = self
            .checks
            .iter()
            .filter(|(_, c)| state == "any" || c.value.status == state)
            .filter(|((node, _), _)| self.node_matches(node, node_meta))
            .map(|(_, c)| c.value.clone())
            .collect();
        (self.checks_read_index(node_meta), checks)
    }

    fn node_matches(&self, node: &Key, node_meta: &BTreeMap<String, String>) -> bool {
        node_meta.is_empty()
            || self
                .nodes
                .get(node)
                .is_some_and(|n| satisfies(&n.value.meta, node_meta))
    }

    /// `/v1/health/service/<s>` (Consul's `CheckServiceNodes`): each
    /// instance with its node and its health checks (the node's own and
    /// its own), filtered as `service_nodes` filters.
    pub(crate) fn service_health(
        &self,
        name: &str,
        tags: &[String],
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<CheckServiceNode>) {
        let (_, instances) = self.service_nodes(name, tags, node_meta);
        let found = instances
            .into_iter()
            .map(|i| {
                let node = key(&i.node.node);
                let id = fold(&i.service.id);
                let checks = on_node(&self.checks, &node)
                    .filter(|(_, c)| {
                        c.value.service_id.is_empty() || fold(&c.value.service_id) == id
                    })
                    .map(|(_, c)| c.value.clone())
                    .collect();
                CheckServiceNode {
                    node: i.node,
                    service: i.service,
                    checks,
                }
            })
            .collect();
        (self.health_read_index(name), found)
    }

    /// Consul's `maxIndexForService` with checks: as `service_read_index`,
    /// the fallback counting the checks table too.
    pub(crate) fn health_read_index(&self, name: &str) -> u64 {
        let name = fold(name);
        let exists = self.by_name.contains_key(&*name);
        if !exists && self.service_extinction > 0 {
            return self.service_extinction;
        }
        match self.service_index.get(&*name) {
            Some(&at) => at,
            None => self
                .nodes_index
                .max(self.services_index)
                .max(self.checks_index),
        }
    }

    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.nodes.len(), self.services.len(), self.checks.len())
    }

    pub(crate) fn hash(&self) -> u64 {
        ItemHasher::new("catalog.table")
            .u64(self.nodes_index)
            .u64(self.services_index)
            .u64(self.checks_index)
            .u64(self.node_extinction)
            .u64(self.service_extinction)
            .u64(self.content_hash)
            .finish()
    }

    /// Whether the table is as new (so a state without a catalog hashes as
    /// it did before the catalog existed).
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.nodes_index == 0
            && self.services_index == 0
            && self.checks_index == 0
            && self.node_extinction == 0
            && self.service_extinction == 0
    }
}

/// Raises the per-name index row `name` to `index` (index rows only ever
/// rise, as Consul's `indexUpdateMaxTxn`), keeping `content_hash` in step.
fn set_index(
    rows: &mut OrdMap<Key, u64>,
    content_hash: &mut u64,
    domain: &str,
    name: &Key,
    index: u64,
) {
    let old = rows.get(name).copied();
    if let Some(old) = old {
        *content_hash = content_hash.wrapping_sub(index_hash(domain, name, old));
    }
    let index = index.max(old.unwrap_or(0));
    rows.insert(Arc::clone(name), index);
    *content_hash = content_hash.wrapping_add(index_hash(domain, name, index));
}

/// Consul's `Node.IsSame` (and `ChangesNode`): every node field but the
/// indexes, the name ignoring case.
fn same_node(a: &Node, b: &Node) -> bool {
    a.id == b.id
        && fold(&a.node) == fold(&b.node)
        && a.address == b.address
        && a.datacenter == b.datacenter
        && a.tagged_addresses == b.tagged_addresses
        && a.meta == b.meta
}

/// Consul's `HealthCheck.IsSame`: the node ignoring case, and not the
/// type (a re-registration that changes only the type is no change, and
/// the stored check keeps its type).
fn same_check(a: &Check, b: &Check) -> bool {
    fold(&a.node) == fold(&b.node)
        && a.check_id == b.check_id
        && a.name == b.name
        && a.status == b.status
        && a.notes == b.notes
        && a.output == b.output
        && a.service_id == b.service_id
        && a.service_name == b.service_name
        && a.service_tags == b.service_tags
        && a.definition == b.definition
}

/// Consul's `SatisfiesMetaFilters`.
fn satisfies(meta: &Option<BTreeMap<String, String>>, filters: &BTreeMap<String, String>) -> bool {
    satisfies_opt(meta.as_ref(), filters)
}

fn satisfies_opt(
    meta: Option<&BTreeMap<String, String>>,
    filters: &BTreeMap<String, String>,
) -> bool {
    filters
        .iter()
        .all(|(k, v)| meta.and_then(|m| m.get(k)) == Some(v))
}

#[cfg(test)]
mod tests;
