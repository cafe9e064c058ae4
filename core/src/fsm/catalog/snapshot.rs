//! The catalog's part of a snapshot (format version 3 on): every row in
//! key order and every index row, so a restored table is the table that was
//! saved, down to its indexes and its state hash.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::types::{Check, Node, Service};
use super::{fold, key, set_index, CatalogTable, Row, ServiceRow};
use crate::fsm::FsmError;

/// The catalog as a snapshot stores it.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogSnapshot {
    pub(crate) nodes: Vec<Node>,
    pub(crate) services: Vec<ServiceRecord>,
    pub(crate) checks: Vec<Check>,
    pub(crate) nodes_index: u64,
    pub(crate) services_index: u64,
    pub(crate) checks_index: u64,
    pub(crate) node_extinction: u64,
    pub(crate) service_extinction: u64,
    pub(crate) service_index: Vec<(String, u64)>,
    pub(crate) node_index: Vec<(String, u64)>,
}

/// A service row: the node name it was registered with, and the instance.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceRecord {
    pub(crate) node: String,
    pub(crate) service: Service,
}

/// `CatalogSnapshot`, borrowing the live rows (same encoding).
#[derive(Serialize)]
pub(crate) struct CatalogSnapshotRef<'a> {
    nodes: Vec<&'a Node>,
    services: Vec<&'a ServiceRow>,
    checks: Vec<&'a Check>,
    nodes_index: u64,
    services_index: u64,
    checks_index: u64,
    node_extinction: u64,
    service_extinction: u64,
    service_index: Vec<(&'a str, u64)>,
    node_index: Vec<(&'a str, u64)>,
}

fn invalid(why: String) -> FsmError {
    FsmError::Invalid(format!("catalog: {why}"))
}

/// `0 < create <= modify <= last_applied`.
fn indexes_ok(create: u64, modify: u64, last_applied: u64) -> bool {
    0 < create && create <= modify && modify <= last_applied
}

impl CatalogTable {
    pub(crate) fn to_snapshot(&self) -> CatalogSnapshotRef<'_> {
        CatalogSnapshotRef {
            nodes: self.nodes.values().map(|r| &r.value).collect(),
            services: self.services.values().map(|r| &r.value).collect(),
            checks: self.checks.values().map(|r| &r.value).collect(),
            nodes_index: self.nodes_index,
            services_index: self.services_index,
            checks_index: self.checks_index,
            node_extinction: self.node_extinction,
            service_extinction: self.service_extinction,
            service_index: self.service_index.iter().map(|(k, &i)| (&**k, i)).collect(),
            node_index: self.node_index.iter().map(|(k, &i)| (&**k, i)).collect(),
        }
    }

    /// Rebuilds the table, refusing a snapshot that breaks an invariant
    /// `apply` keeps (a row twice, a service or check without its node, a
    /// check without its service, an index past `last_applied`, index rows
    /// that do not match the rows).
    pub(crate) fn from_snapshot(
        snap: CatalogSnapshot,
        last_applied: u64,
    ) -> Result<CatalogTable, FsmError> {
        let mut t = CatalogTable::default();
        let tables = [
            snap.nodes_index,
            snap.services_index,
            snap.checks_index,
            snap.node_extinction,
            snap.service_extinction,
        ];
        if tables.iter().any(|&i| i > last_applied) {
            return Err(invalid(format!(
                "a table index is past the snapshot's index {last_applied}"
            )));
        }
        t.nodes_index = snap.nodes_index;
        t.services_index = snap.services_index;
        t.checks_index = snap.checks_index;
        t.node_extinction = snap.node_extinction;
        t.service_extinction = snap.service_extinction;
        for node in snap.nodes {
            let name = key(&node.node);
            if t.nodes.contains_key(&name) {
                return Err(invalid(format!("node {:?} is there twice", node.node)));
            }
            if !indexes_ok(node.create_index, node.modify_index, t.nodes_index) {
                return Err(invalid(format!("node {:?} has bad indexes", node.node)));
            }
            if !node.id.is_empty()
                && t.node_ids
                    .insert(key(&node.id), Arc::clone(&name))
                    .is_some()
            {
                return Err(invalid(format!("node ID {:?} is there twice", node.id)));
            }
            let row = Row::new("catalog.node", node);
            t.content_hash = t.content_hash.wrapping_add(row.hash);
            t.nodes.insert(name, Arc::new(row));
        }
        for ServiceRecord { node, service } in snap.services {
            let at = (key(&node), key(&service.id));
            if !t.nodes.contains_key(&at.0) || t.services.contains_key(&at) {
                return Err(invalid(format!(
                    "service {:?} on node {node:?} has no node or is there twice",
                    service.id
                )));
            }
            let ok = service.weights.is_some()
                && indexes_ok(service.create_index, service.modify_index, t.services_index);
            if !ok {
                return Err(invalid(format!("service {:?} is malformed", service.id)));
            }
            let name = key(&service.service);
            let mut instances = t.by_name.get(&name).cloned().unwrap_or_default();
            instances.insert(at.clone());
            t.by_name.insert(name, instances);
            let row = Row::new("catalog.service", ServiceRow { node, service });
            t.content_hash = t.content_hash.wrapping_add(row.hash);
            t.services.insert(at, Arc::new(row));
        }
        for check in snap.checks {
            let at = (key(&check.node), key(&check.check_id));
            let service_ok = check.service_id.is_empty()
                || t.services
                    .contains_key(&(Arc::clone(&at.0), key(&check.service_id)));
            if !t.nodes.contains_key(&at.0) || t.checks.contains_key(&at) || !service_ok {
                return Err(invalid(format!(
                    "check {:?} on node {:?} has no node or service, or is there twice",
                    check.check_id, check.node
                )));
            }
            if !indexes_ok(check.create_index, check.modify_index, t.checks_index) {
                return Err(invalid(format!(
                    "check {:?} has bad indexes",
                    check.check_id
                )));
            }
            let row = Row::new("catalog.check", check);
            t.content_hash = t.content_hash.wrapping_add(row.hash);
            t.checks.insert(at, Arc::new(row));
        }
        let mut hash = t.content_hash;
        for (name, index) in &snap.service_index {
            let name = Arc::from(name.as_str());
            if *index == 0 || *index > last_applied || t.service_index.contains_key(&name) {
                return Err(invalid(format!("service index row {name:?} is malformed")));
            }
            set_index(
                &mut t.service_index,
                &mut hash,
                "catalog.service_index",
                &name,
                *index,
            );
        }
        for (name, index) in &snap.node_index {
            let name = Arc::from(name.as_str());
            if *index == 0 || *index > last_applied || t.node_index.contains_key(&name) {
                return Err(invalid(format!("node index row {name:?} is malformed")));
            }
            set_index(
                &mut t.node_index,
                &mut hash,
                "catalog.node_index",
                &name,
                *index,
            );
        }
        t.content_hash = hash;
        // Index rows exist exactly for the names that have rows.
        let service_names_match = t.service_index.len() == t.by_name.len()
            && t.by_name.keys().all(|n| t.service_index.contains_key(n));
        let node_names_match = t.node_index.len() == t.nodes.len()
            && t.nodes.keys().all(|n| t.node_index.contains_key(n));
        if !service_names_match || !node_names_match {
            return Err(invalid(
                "the per-name index rows do not match the rows".to_owned(),
            ));
        }
        debug_assert!(t.nodes.keys().all(|k| **k == fold(k)));
        Ok(t)
    }
}
