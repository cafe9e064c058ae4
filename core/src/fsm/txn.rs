//! Transactions (`PUT /v1/txn`): up to [`TXN_OPS_MAX`] KV, node, service and
//! check operations applied atomically at one Raft index, as Consul's
//! agent/consul/state/txn.go does them.
//!
//! Every operation runs against a copy of the tables (O(1): they are
//! persistent maps), in order, each seeing the ones before it. If any fails,
//! the copy is dropped and the answer lists every failure with its
//! operation's position (Consul's `TxnErrors`, which the HTTP API answers
//! with 409); otherwise the copy becomes the state and the answer lists each
//! operation's result. A transaction of reads alone is served as a read
//! (Consul's `Txn.Read`), against the state as it is.

use serde::{Deserialize, Serialize};

use super::catalog::types::{Check, Deregister, Node, Register, Service};
use super::catalog::CatalogTable;
use super::command::{DirEntry, KvCommand, KvWrite};
use super::kv::KvTable;
use super::session::SessionTable;
use super::value::Value;

/// Consul's `maxTxnOps` (agent/txn_endpoint.go).
pub const TXN_OPS_MAX: usize = 128;

/// A KV operation's verb (Consul's `api.KVOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvVerb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
}

impl KvVerb {
    /// The verb as the API spells it (`delete-cas`).
    pub fn parse(s: &str) -> Option<KvVerb> {
        Some(match s {
            "set" => KvVerb::Set,
            "cas" => KvVerb::Cas,
            "lock" => KvVerb::Lock,
            "unlock" => KvVerb::Unlock,
            "get" => KvVerb::Get,
            "get-tree" => KvVerb::GetTree,
            "check-index" => KvVerb::CheckIndex,
            "check-session" => KvVerb::CheckSession,
            "check-not-exists" => KvVerb::CheckNotExists,
            "delete" => KvVerb::Delete,
            "delete-tree" => KvVerb::DeleteTree,
            "delete-cas" => KvVerb::DeleteCas,
            _ => return None,
        })
    }

    pub fn is_write(self) -> bool {
        matches!(
            self,
            KvVerb::Set
                | KvVerb::Cas
                | KvVerb::Lock
                | KvVerb::Unlock
                | KvVerb::Delete
                | KvVerb::DeleteTree
                | KvVerb::DeleteCas
        )
    }
}

/// A node, service or check operation's verb (Consul's `api.NodeOp`,
/// `ServiceOp`, `CheckOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogVerb {
    Set,
    Cas,
    Get,
    Delete,
    DeleteCas,
}

impl CatalogVerb {
    pub fn parse(s: &str) -> Option<CatalogVerb> {
        Some(match s {
            "set" => CatalogVerb::Set,
            "cas" => CatalogVerb::Cas,
            "get" => CatalogVerb::Get,
            "delete" => CatalogVerb::Delete,
            "delete-cas" => CatalogVerb::DeleteCas,
            _ => return None,
        })
    }

    pub fn is_write(self) -> bool {
        self != CatalogVerb::Get
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnOp {
    Kv {
        verb: KvVerb,
        key: String,
        value: Value,
        flags: u64,
        /// The modify index a `cas`, `delete-cas` or `check-index` wants.
        index: u64,
        session: String,
    },
    /// `node.modify_index` is what a `cas` or `delete-cas` wants.
    Node {
        verb: CatalogVerb,
        node: Node,
    },
    Service {
        verb: CatalogVerb,
        node: String,
        service: Service,
    },
    Check {
        verb: CatalogVerb,
        check: Check,
    },
}

impl TxnOp {
    pub fn is_write(&self) -> bool {
        match self {
            TxnOp::Kv { verb, .. } => verb.is_write(),
            TxnOp::Node { verb, .. } | TxnOp::Service { verb, .. } | TxnOp::Check { verb, .. } => {
                verb.is_write()
            }
        }
    }
}

/// About how many bytes an operation takes encoded (for batching entries).
pub fn approx_bytes(op: &TxnOp) -> usize {
    16 + match op {
        TxnOp::Kv {
            key,
            value,
            session,
            ..
        } => key.len() + value.len() + session.len(),
        TxnOp::Node { node, .. } => 64 + node.node.len() + node.address.len(),
        TxnOp::Service { node, service, .. } => {
            128 + node.len() + service.service.len() + service.id.len()
        }
        TxnOp::Check { check, .. } => 128 + check.output.len() + check.notes.len(),
    }
}

/// What one operation gives back (Consul's `TxnResult`). A KV write's
/// entry comes without its value, as Consul's does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnResult {
    Kv(DirEntry),
    Node(Node),
    Service(Service),
    Check(Check),
}

/// One failed operation (Consul's `TxnError`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnError {
    pub op_index: u32,
    pub what: String,
}

/// A transaction's outcome: every result, or every failure.
pub type TxnOutcome = Result<Vec<TxnResult>, Vec<TxnError>>;

/// The tables a transaction works on (copies, for a write).
pub(crate) struct TxnState<'a> {
    pub(crate) kv: &'a mut KvTable,
    pub(crate) catalog: &'a mut CatalogTable,
    /// Read only: a transaction locks with sessions, never makes or ends one.
    pub(crate) sessions: &'a SessionTable,
}

/// Runs `ops` at table index `index` against `state`, in order. The caller
/// keeps `state` only if the outcome is `Ok`.
pub(crate) fn run(state: &mut TxnState<'_>, index: u64, ops: &[TxnOp]) -> TxnOutcome {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match run_one(state, index, op) {
            Ok(r) => results.extend(r),
            Err(what) => errors.push(TxnError {
                op_index: i as u32,
                what,
            }),
        }
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}

fn run_one(state: &mut TxnState<'_>, index: u64, op: &TxnOp) -> Result<Vec<TxnResult>, String> {
    match op {
        TxnOp::Kv {
            verb,
            key,
            value,
            flags,
            index: want,
            session,
        } => kv(
            state.kv,
            state.sessions,
            index,
            *verb,
            key,
            value,
            *flags,
            *want,
            session,
        ),
        TxnOp::Node { verb, node } => node_op(state.catalog, index, *verb, node),
        TxnOp::Service {
            verb,
            node,
            service,
        } => service_op(state.catalog, index, *verb, node, service),
        TxnOp::Check { verb, check } => check_op(state.catalog, index, *verb, check),
    }
}

/// A KV write's result: the entry as it now is, without its value.
fn written(kv: &KvTable, key: &str) -> Vec<TxnResult> {
    kv.get_dir(key)
        .map(|mut e| {
            e.value = Value::empty();
            TxnResult::Kv(e)
        })
        .into_iter()
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn kv(
    kv: &mut KvTable,
    sessions: &SessionTable,
    index: u64,
    verb: KvVerb,
    key: &str,
    value: &Value,
    flags: u64,
    want: u64,
    session: &str,
) -> Result<Vec<TxnResult>, String> {
    let write = || KvWrite {
        key: key.to_string(),
        flags,
        value: value.clone(),
    };
    match verb {
        KvVerb::Set => {
            kv.apply(index, &KvCommand::Set(write()));
            Ok(written(kv, key))
        }
        KvVerb::Cas => {
            let cmd = KvCommand::Cas {
                write: write(),
                modify_index: want,
            };
            if !kv.apply(index, &cmd) {
                return Err(format!("failed to set key {key:?}, index is stale"));
            }
            Ok(written(kv, key))
        }
        KvVerb::Get => match kv.get_dir(key) {
            Some(e) => Ok(vec![TxnResult::Kv(e)]),
            None => Err(format!("key {key:?} doesn't exist")),
        },
        KvVerb::GetTree => Ok(kv.list_dir(key).into_iter().map(TxnResult::Kv).collect()),
        KvVerb::CheckIndex => match kv.get_dir(key) {
            None => Err(format!("failed to check index, key {key:?} doesn't exist")),
            Some(e) if e.modify_index != want => Err(format!(
                "failed index check for key {key:?}, current modify index {} != {want}",
                e.modify_index
            )),
            Some(mut e) => {
                e.value = Value::empty();
                Ok(vec![TxnResult::Kv(e)])
            }
        },
        KvVerb::CheckSession => match kv.get_dir(key) {
            None => Err(format!(
                "failed to check session, key {key:?} doesn't exist"
            )),
            Some(mut e) => {
                let current = e.session.clone();
                if current != session {
                    return Err(format!(
                        "failed session check for key {key:?}, current session {current:?} != {session:?}"
                    ));
                }
                e.value = Value::empty();
                Ok(vec![TxnResult::Kv(e)])
            }
        },
        KvVerb::CheckNotExists => match kv.get(key) {
            Some(_) => Err(format!("key {key:?} exists")),
            None => Ok(Vec::new()),
        },
        KvVerb::Delete => {
            kv.apply(index, &KvCommand::Delete { key: key.into() });
            Ok(Vec::new())
        }
        KvVerb::DeleteCas => {
            let cmd = KvCommand::DeleteCas {
                key: key.into(),
                modify_index: want,
            };
            if !kv.apply(index, &cmd) {
                return Err(format!("failed to delete key {key:?}, index is stale"));
            }
            Ok(Vec::new())
        }
        KvVerb::DeleteTree => {
            kv.apply(index, &KvCommand::DeleteTree { prefix: key.into() });
            Ok(Vec::new())
        }
        KvVerb::Lock => {
            // Consul's `kvsLockTxn`: the session must exist, and no other
            // may hold the key.
            if session.is_empty() {
                return Err("missing session".into());
            }
            if !sessions.contains(session) {
                return Err(format!("invalid session {session:?}"));
            }
            let cmd = KvCommand::Lock {
                write: write(),
                session: session.to_string(),
            };
            if !kv.apply(index, &cmd) {
                return Err(format!("failed to lock key {key:?}, lock is already held"));
            }
            Ok(written(kv, key))
        }
        KvVerb::Unlock => {
            // Consul's `kvsUnlockTxn`: only the holder unlocks, and an
            // unlock writes the value and flags, keeping the lock index.
            let cmd = KvCommand::Unlock {
                write: write(),
                session: session.to_string(),
            };
            if !kv.apply(index, &cmd) {
                return Err(format!(
                    "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                ));
            }
            Ok(written(kv, key))
        }
    }
}

fn find_node(catalog: &CatalogTable, name: &str) -> Option<Node> {
    catalog.node_services(name).1.map(|ns| ns.node)
}

fn find_service(catalog: &CatalogTable, node: &str, id: &str) -> Option<Service> {
    catalog
        .node_services(node)
        .1
        .and_then(|ns| ns.services.into_iter().find(|s| s.id == id))
}

fn find_check(catalog: &CatalogTable, node: &str, id: &str) -> Option<Check> {
    catalog
        .node_checks(node)
        .into_iter()
        .find(|c| c.check_id == id)
}

/// Whether a `cas` on an item whose current modify index is `current`
/// (`None`: absent) wanting `want` holds: 0 means "only if absent".
fn cas_holds(current: Option<u64>, want: u64) -> bool {
    match current {
        None => want == 0,
        Some(c) => want != 0 && c == want,
    }
}

fn node_op(
    catalog: &mut CatalogTable,
    index: u64,
    verb: CatalogVerb,
    node: &Node,
) -> Result<Vec<TxnResult>, String> {
    let name = node.node.as_str();
    let existing = find_node(catalog, name);
    let set = |catalog: &mut CatalogTable| -> Result<Vec<TxnResult>, String> {
        let reg = Register {
            id: node.id.clone(),
            node: node.node.clone(),
            address: node.address.clone(),
            datacenter: node.datacenter.clone(),
            tagged_addresses: node.tagged_addresses.clone(),
            node_meta: node.meta.clone(),
            service: None,
            checks: Vec::new(),
            skip_node_update: false,
        };
        catalog.register(index, &reg).map_err(|e| e.to_string())?;
        Ok(find_node(catalog, name)
            .map(TxnResult::Node)
            .into_iter()
            .collect())
    };
    match verb {
        CatalogVerb::Get => existing
            .map(|n| vec![TxnResult::Node(n)])
            .ok_or_else(|| format!("node {name:?} doesn't exist")),
        CatalogVerb::Set => set(catalog),
        CatalogVerb::Cas => {
            if !cas_holds(existing.map(|n| n.modify_index), node.modify_index) {
                return Err(format!("failed to set node {name:?}, index is stale"));
            }
            set(catalog)
        }
        CatalogVerb::Delete | CatalogVerb::DeleteCas => {
            if verb == CatalogVerb::DeleteCas
                && existing.is_none_or(|n| n.modify_index != node.modify_index)
            {
                return Err(format!("failed to delete node {name:?}, index is stale"));
            }
            let dereg = Deregister {
                node: name.to_string(),
                service_id: String::new(),
                check_id: String::new(),
            };
            catalog
                .deregister(index, &dereg)
                .map_err(|e| e.to_string())?;
            Ok(Vec::new())
        }
    }
}

fn service_op(
    catalog: &mut CatalogTable,
    index: u64,
    verb: CatalogVerb,
    node: &str,
    service: &Service,
) -> Result<Vec<TxnResult>, String> {
    // Consul's service ID defaults to its name.
    let id = if service.id.is_empty() {
        service.service.as_str()
    } else {
        service.id.as_str()
    };
    let existing = find_service(catalog, node, id);
    let set = |catalog: &mut CatalogTable| -> Result<Vec<TxnResult>, String> {
        let Some(n) = find_node(catalog, node) else {
            return Err(format!(
                "failed inserting service: node {node:?} doesn't exist"
            ));
        };
        let reg = Register {
            id: n.id.clone(),
            node: n.node.clone(),
            address: n.address.clone(),
            datacenter: n.datacenter.clone(),
            tagged_addresses: None,
            node_meta: None,
            service: Some(service.clone()),
            checks: Vec::new(),
            skip_node_update: true,
        };
        catalog.register(index, &reg).map_err(|e| e.to_string())?;
        Ok(find_service(catalog, node, id)
            .map(TxnResult::Service)
            .into_iter()
            .collect())
    };
    match verb {
        CatalogVerb::Get => existing
            .map(|s| vec![TxnResult::Service(s)])
            .ok_or_else(|| format!("service {id:?} on node {node:?} doesn't exist")),
        CatalogVerb::Set => set(catalog),
        CatalogVerb::Cas => {
            if !cas_holds(existing.map(|s| s.modify_index), service.modify_index) {
                return Err(format!(
                    "failed to set service {id:?} on node {node:?}, index is stale"
                ));
            }
            set(catalog)
        }
        CatalogVerb::Delete | CatalogVerb::DeleteCas => {
            if verb == CatalogVerb::DeleteCas
                && existing.is_none_or(|s| s.modify_index != service.modify_index)
            {
                return Err(format!(
                    "failed to delete service {id:?} on node {node:?}, index is stale"
                ));
            }
            let dereg = Deregister {
                node: node.to_string(),
                service_id: id.to_string(),
                check_id: String::new(),
            };
            catalog
                .deregister(index, &dereg)
                .map_err(|e| e.to_string())?;
            Ok(Vec::new())
        }
    }
}

fn check_op(
    catalog: &mut CatalogTable,
    index: u64,
    verb: CatalogVerb,
    check: &Check,
) -> Result<Vec<TxnResult>, String> {
    let node = check.node.as_str();
    let id = if check.check_id.is_empty() {
        check.name.as_str()
    } else {
        check.check_id.as_str()
    };
    let existing = find_check(catalog, node, id);
    let set = |catalog: &mut CatalogTable| -> Result<Vec<TxnResult>, String> {
        let Some(n) = find_node(catalog, node) else {
            return Err(format!(
                "failed inserting check: node {node:?} doesn't exist"
            ));
        };
        let reg = Register {
            id: n.id.clone(),
            node: n.node.clone(),
            address: n.address.clone(),
            datacenter: n.datacenter.clone(),
            tagged_addresses: None,
            node_meta: None,
            service: None,
            checks: vec![check.clone()],
            skip_node_update: true,
        };
        catalog.register(index, &reg).map_err(|e| e.to_string())?;
        Ok(find_check(catalog, node, id)
            .map(TxnResult::Check)
            .into_iter()
            .collect())
    };
    match verb {
        CatalogVerb::Get => existing
            .map(|c| vec![TxnResult::Check(c)])
            .ok_or_else(|| format!("check {id:?} on node {node:?} doesn't exist")),
        CatalogVerb::Set => set(catalog),
        CatalogVerb::Cas => {
            if !cas_holds(existing.map(|c| c.modify_index), check.modify_index) {
                return Err(format!(
                    "failed to set check {id:?} on node {node:?}, index is stale"
                ));
            }
            set(catalog)
        }
        CatalogVerb::Delete | CatalogVerb::DeleteCas => {
            if verb == CatalogVerb::DeleteCas
                && existing.is_none_or(|c| c.modify_index != check.modify_index)
            {
                return Err(format!(
                    "failed to delete check {id:?} on node {node:?}, index is stale"
                ));
            }
            let dereg = Deregister {
                node: node.to_string(),
                service_id: String::new(),
                check_id: id.to_string(),
            };
            catalog
                .deregister(index, &dereg)
                .map_err(|e| e.to_string())?;
            Ok(Vec::new())
        }
    }
}
