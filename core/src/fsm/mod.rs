//! The replicated state machine: the KV table, autopilot's configuration
//! and the catalog (nodes, services, checks).
//!
//! `Fsm` is what every server builds by applying the committed log in order.
//! It holds one value per table (sessions and federation states join it as
//! further fields, each with its own table index, its own share of
//! `state_hash` and its own part of a new snapshot version).

pub mod catalog;
mod command;
mod error;
mod hash;
mod kv;
pub mod restore;
pub mod session;
#[cfg(test)]
mod session_tests;
mod snapshot;
mod tombstone_gc;
pub mod txn;
mod value;
mod view;

pub use catalog::types::{
    CatalogError, CatalogTableName, Check, CheckDefinition, CheckServiceNode, Deregister, Meta,
    Node, NodeServices, Register, Service, ServiceAddress, ServiceInstance, Weights,
};
pub use catalog::validate::{service_meta_error, validate_node_meta};
pub use catalog::{CatalogTopic, CATALOG_CHECKS_MAX, CATALOG_NODES_MAX, CATALOG_SERVICES_MAX};
pub use command::{ApplyResult, Command, DirEntry, KvCommand, KvEntry, KvWrite, StoredAutopilot};
pub use error::FsmError;
pub use restore::{RestoreChunk, RestoreError, RestoreProgress, RESTORE_CHUNK_BYTES_MAX};
pub use session::{ServiceCheck, Session, SessionBehavior, SESSIONS_MAX};
pub use tombstone_gc::TombstoneGc;
pub use txn::{CatalogVerb, KvVerb, TxnError, TxnOp, TxnOutcome, TxnResult, TXN_OPS_MAX};
pub use value::Value;
pub use view::FsmView;

use std::collections::BTreeMap;

use catalog::CatalogTable;
use hash::ItemHasher;
use kv::KvTable;
use session::SessionTable;
use snapshot::Snapshot;

/// The replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fsm {
    /// The Raft index of the last entry applied (command or not); 0 before
    /// any.
    last_applied: u64,
    kv: KvTable,
    /// Autopilot's configuration, once one was stored.
    autopilot: Option<StoredAutopilot>,
    catalog: CatalogTable,
    /// What tables record as the index of the entry at Raft index `i`:
    /// `i + index_offset` (0 unless an operator restored a snapshot taken
    /// past this log's index; see `restore.rs`).
    index_offset: u64,
    /// An operator's snapshot restore, staged chunk by chunk.
    restore: Option<restore::PendingRestore>,
    sessions: SessionTable,
    /// What the last applies did that is not replicated state: read by the
    /// server after each apply, equal in every state.
    scratch: Scratch,
}

/// What an apply did beyond the state, for the server: keys whose lock was
/// released by a session's end (with the session's lock delay, which each
/// server times from its own clock, as Consul's in-memory `lockDelay`
/// does) and keys it changed that no command names (to wake their parked
/// queries). Not part of the state: it compares equal, hashes to nothing
/// and is never in a snapshot.
#[derive(Clone, Debug, Default)]
struct Scratch {
    lock_delays: Vec<(String, u64)>,
    touched_keys: Vec<String>,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Scratch) -> bool {
        true
    }
}

impl Eq for Scratch {}

/// Why a session create is refused (Consul's texts).
fn session_refusal(fsm: &Fsm, s: &Session) -> Option<String> {
    if s.id.is_empty() {
        return Some("Missing session ID".to_owned());
    }
    if fsm.sessions.contains(&s.id) {
        return Some(format!("session {:?} already exists", s.id));
    }
    if s.node.is_empty() {
        return Some("Must provide Node".to_owned());
    }
    if fsm.catalog.node_checks(&s.node).is_empty()
        && fsm
            .catalog
            .node_services(&s.node)
            .1
            .filter(|ns| ns.node.node.eq_ignore_ascii_case(&s.node))
            .is_none()
    {
        return Some("Missing node registration".to_owned());
    }
    let checks = fsm.catalog.node_checks(&s.node);
    for id in s.check_ids() {
        match checks.iter().find(|c| c.check_id.eq_ignore_ascii_case(id)) {
            None => return Some(format!("Missing check '{id}' registration")),
            Some(c) if c.status == "critical" => {
                return Some(format!("Check '{id}' is in {} state", c.status))
            }
            Some(_) => {}
        }
    }
    if fsm.sessions.len() >= SESSIONS_MAX {
        return Some(format!(
            "sessions table is full: it holds its limit of {SESSIONS_MAX} (SESSIONS_MAX)"
        ));
    }
    None
}

impl Fsm {
    pub fn new() -> Fsm {
        Fsm::default()
    }

    /// Applies a committed command at Raft index `index`, which must be
    /// above `last_applied` (a broken invariant of the caller otherwise).
    pub fn apply(&mut self, index: u64, cmd: &Command) -> ApplyResult {
        self.advance(index);
        // The index the tables record (see `index_offset`).
        let raft_index = index;
        let index = raft_index + self.index_offset;
        match cmd {
            Command::Kv(KvCommand::Lock { session, .. }) if session.is_empty() => {
                ApplyResult::Refused("missing session".to_owned())
            }
            Command::Kv(KvCommand::Unlock { session, .. }) if session.is_empty() => {
                ApplyResult::Refused("missing session".to_owned())
            }
            Command::Kv(KvCommand::Lock { session, .. }) if !self.sessions.contains(session) => {
                // Consul's `kvsLockTxn` prints the ID with Go's `%#v`.
                ApplyResult::Refused(format!("invalid session {session:?}"))
            }
            Command::Kv(kv) => ApplyResult::Kv(self.kv.apply(index, kv)),
            Command::SessionCreate(s) => match session_refusal(self, s) {
                Some(why) => ApplyResult::Refused(why),
                None => {
                    let mut s = (**s).clone();
                    s.create_index = index;
                    s.modify_index = index;
                    let id = s.id.clone();
                    self.sessions.insert(index, s);
                    ApplyResult::Session(id)
                }
            },
            Command::SessionDestroy { id } => {
                self.destroy_session(index, id);
                ApplyResult::Session(id.clone())
            }
            Command::TombstoneReap { upto } => {
                self.kv.prune_tombstones(*upto);
                ApplyResult::Kv(true)
            }
            Command::AutopilotSet { config, cas } => {
                // Consul's `AutopilotCASConfig`: a CAS index must be the
                // stored modify index, or 0 when nothing is stored.
                let current = self.autopilot.as_ref().map_or(0, |a| a.modify_index);
                if cas.is_some_and(|c| c != current) {
                    return ApplyResult::Autopilot(false);
                }
                self.autopilot = Some(StoredAutopilot {
                    config: config.clone(),
                    create_index: self.autopilot.as_ref().map_or(index, |a| a.create_index),
                    modify_index: index,
                });
                ApplyResult::Autopilot(true)
            }
            Command::CatalogRegister(reg) => {
                let r = self.catalog.register(index, reg);
                if r.is_ok() {
                    self.invalidate_sessions(index, &reg.node, !reg.id.is_empty());
                }
                ApplyResult::Catalog(r)
            }
            Command::CatalogDeregister(dereg) => {
                let r = self.catalog.deregister(index, dereg);
                if r.is_ok() {
                    self.invalidate_sessions(index, &dereg.node, false);
                }
                ApplyResult::Catalog(r)
            }
            Command::RestoreChunk(chunk) => {
                ApplyResult::Restore(self.restore_chunk(raft_index, chunk))
            }
            Command::Txn(ops) => ApplyResult::Txn(self.txn(index, ops)),
        }
    }

    /// A transaction at table index `index`: on copies of the tables, kept
    /// only if every operation succeeded (see `txn.rs`).
    fn txn(&mut self, index: u64, ops: &[TxnOp]) -> TxnOutcome {
        let mut kv = self.kv.clone();
        let mut catalog = self.catalog.clone();
        let outcome = txn::run(
            &mut txn::TxnState {
                kv: &mut kv,
                catalog: &mut catalog,
                sessions: &self.sessions,
            },
            index,
            ops,
        );
        if outcome.is_ok() {
            self.kv = kv;
            self.catalog = catalog;
            // Catalog writes end the sessions they leave unsupported, as
            // a registration or deregistration does.
            let nodes: std::collections::BTreeSet<String> = ops
                .iter()
                .filter(|op| op.is_write())
                .filter_map(|op| match op {
                    TxnOp::Node { node, .. } => Some(node.node.clone()),
                    TxnOp::Service { node, .. } => Some(node.clone()),
                    TxnOp::Check { check, .. } => Some(check.node.clone()),
                    TxnOp::Kv { .. } => None,
                })
                .collect();
            for node in nodes {
                self.invalidate_sessions(index, &node, false);
            }
        }
        outcome
    }

    /// A transaction of reads alone (Consul's `Txn.Read`), against the
    /// state as it is: nothing changes, whatever the operations say.
    pub fn txn_read(&self, ops: &[TxnOp]) -> TxnOutcome {
        let at = self.index() + 1;
        let mut kv = self.kv.clone();
        let mut catalog = self.catalog.clone();
        // Writes never get here (the server routes them to the log); if one
        // did, it would change only these copies.
        txn::run(
            &mut txn::TxnState {
                kv: &mut kv,
                catalog: &mut catalog,
                sessions: &self.sessions,
            },
            at,
            ops,
        )
    }

    /// Stage one chunk of an operator's restore; the last one swaps the
    /// restored state in (see `restore.rs`).
    fn restore_chunk(
        &mut self,
        raft_index: u64,
        chunk: &RestoreChunk,
    ) -> Result<RestoreProgress, RestoreError> {
        let len = chunk.data.len() as u64;
        let end = chunk.offset.saturating_add(len);
        if chunk.offset == 0 {
            if chunk.total == 0 || end > chunk.total {
                return Err(RestoreError::BadLength {
                    total: chunk.total,
                    end,
                });
            }
            self.restore = Some(restore::PendingRestore::new(chunk.id, chunk.total));
        }
        let pending = match &mut self.restore {
            Some(p) if p.id == chunk.id && p.total == chunk.total => p,
            _ => return Err(RestoreError::NotStarted { id: chunk.id }),
        };
        if chunk.offset != pending.received {
            // A client that resends the chunk it last sent (its answer was
            // lost) is told where the restore stands.
            if end == pending.received && chunk.offset < end {
                return Ok(pending.progress());
            }
            return Err(RestoreError::OutOfOrder {
                expected: pending.received,
                got: chunk.offset,
            });
        }
        if end > pending.total {
            self.restore = None;
            return Err(RestoreError::BadLength {
                total: chunk.total,
                end,
            });
        }
        pending.push(&chunk.data);
        if pending.received < pending.total {
            return Ok(pending.progress());
        }
        let pending = self.restore.take().expect("staged above");
        let restored =
            Fsm::restore(&pending.concat()).map_err(|e| RestoreError::Invalid(e.to_string()))?;
        let restored_index = restored.index();
        // The entry that completes the restore must record an index past
        // everything restored, and past everything recorded before it.
        self.index_offset = self
            .index_offset
            .max((restored_index + 1).saturating_sub(raft_index));
        self.kv = restored.kv;
        self.autopilot = restored.autopilot;
        self.catalog = restored.catalog;
        self.sessions = restored.sessions;
        Ok(RestoreProgress {
            received: pending.received,
            total: pending.total,
            restored_index: Some(restored_index),
        })
    }

    /// The index tables record for the entry at Raft index `raft_index`
    /// (equal to it unless an operator restored a snapshot).
    pub fn index_at(&self, raft_index: u64) -> u64 {
        raft_index + self.index_offset
    }

    /// The index of the last applied entry as the tables count it
    /// (`index_at(last_applied())`).
    pub fn index(&self) -> u64 {
        self.index_at(self.last_applied)
    }

    /// The restore being staged, if any: `(id, received, total)`.
    pub fn restore_in_progress(&self) -> Option<(u64, u64, u64)> {
        self.restore.as_ref().map(|p| (p.id, p.received, p.total))
    }

    /// Ends session `id` at `index` (Consul's `deleteSessionTxn`): its locks
    /// are released, or its keys deleted, and each key's lock delay noted
    /// for the server. Nothing if there is no such session.
    fn destroy_session(&mut self, index: u64, id: &str) {
        let Some(s) = self.sessions.remove(index, id) else {
            return;
        };
        let delete = s.behavior == session::SessionBehavior::Delete;
        let delay = s.lock_delay_ns.min(session::LOCK_DELAY_MAX_NS);
        for key in self.kv.release_session(index, id, delete) {
            if delay > 0 {
                self.scratch.lock_delays.push((key.to_string(), delay));
            }
            self.scratch.touched_keys.push(key.to_string());
        }
    }

    /// The sessions on `node` (all sessions if `everywhere`: a
    /// registration with a node ID may have renamed a node) that the
    /// catalog no longer supports end: their node is gone, or a check they
    /// name is gone or critical (Consul invalidates them in `deleteNodeTxn`
    /// and `ensureCheckTxn`/`deleteCheckTxn`). Deterministic: it reads only
    /// the state.
    fn invalidate_sessions(&mut self, index: u64, node: &str, everywhere: bool) {
        let ids: Vec<std::sync::Arc<str>> = if everywhere {
            self.sessions
                .list()
                .into_iter()
                .map(|s| std::sync::Arc::from(s.id.as_str()))
                .collect()
        } else {
            self.sessions.ids_on_node(node)
        };
        for id in ids {
            let Some(s) = self.sessions.get(&id) else {
                continue;
            };
            let node_there = self
                .catalog
                .node_services(&s.node)
                .1
                .is_some_and(|ns| ns.node.node.eq_ignore_ascii_case(&s.node));
            let checks = self.catalog.node_checks(&s.node);
            let checks_ok = s.check_ids().all(|cid| {
                checks
                    .iter()
                    .any(|c| c.check_id.eq_ignore_ascii_case(cid) && c.status != "critical")
            });
            if !(node_there && checks_ok) {
                self.destroy_session(index, &id);
            }
        }
    }

    /// The lock delays the applies since the last call started: each key
    /// a session's end released, with the delay in nanoseconds (at most
    /// 60 s). The server times them from its own clock.
    pub fn take_lock_delays(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.scratch.lock_delays)
    }

    /// Keys the applies since the last call changed without naming them
    /// (released or deleted by a session's end), for parked queries.
    pub fn take_touched_keys(&mut self) -> Vec<String> {
        std::mem::take(&mut self.scratch.touched_keys)
    }

    /// A session by ID.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Every session, by ID.
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.list()
    }

    /// The sessions of `node` (any case), by ID.
    pub fn node_sessions(&self, node: &str) -> Vec<Session> {
        self.sessions.on_node(node)
    }

    /// The sessions table index (Consul's `sessions` index row).
    pub fn sessions_index(&self) -> u64 {
        self.sessions.index()
    }

    /// The entry under `key` with its lock holder.
    pub fn kv_dir_entry(&self, key: &str) -> Option<DirEntry> {
        self.kv.get_dir(key)
    }

    /// Every entry under `prefix` with its lock holder, by key.
    pub fn kv_dir_list(&self, prefix: &str) -> Vec<DirEntry> {
        self.kv.list_dir(prefix)
    }

    /// The session holding `key`'s lock, if any.
    pub fn kv_lock_holder(&self, key: &str) -> Option<&str> {
        self.kv.session_of(key)
    }

    /// What `cmd` may change in the catalog, judged before it is applied
    /// (for waking parked catalog queries; see [`CatalogTopic`]). Nothing
    /// for a command that is not the catalog's.
    pub fn catalog_topics(&self, cmd: &Command) -> Vec<CatalogTopic> {
        match cmd {
            Command::CatalogRegister(reg) => self.catalog.topics(
                &reg.node,
                &reg.id,
                reg.service.as_ref().map(|s| s.service.as_str()),
            ),
            Command::CatalogDeregister(dereg) => self.catalog.topics(&dereg.node, "", None),
            Command::Kv(_)
            | Command::TombstoneReap { .. }
            | Command::AutopilotSet { .. }
            | Command::RestoreChunk(_) => Vec::new(),
            Command::Txn(ops) => {
                let mut topics = Vec::new();
                for op in ops.iter().filter(|op| op.is_write()) {
                    match op {
                        TxnOp::Node { node, .. } => {
                            topics.extend(self.catalog.topics(&node.node, &node.id, None))
                        }
                        TxnOp::Service { node, service, .. } => topics.extend(self.catalog.topics(
                            node,
                            "",
                            Some(service.service.as_str()),
                        )),
                        TxnOp::Check { check, .. } => {
                            topics.extend(self.catalog.topics(&check.node, "", None))
                        }
                        TxnOp::Kv { .. } => {}
                    }
                }
                topics
            }
            Command::SessionCreate(_) | Command::SessionDestroy { .. } => Vec::new(),
        }
    }

    /// `/v1/catalog/nodes`: the nodes index and the nodes whose meta has
    /// every pair of `node_meta`, by name.
    pub fn catalog_nodes(&self, node_meta: &BTreeMap<String, String>) -> (u64, Vec<Node>) {
        self.catalog.nodes(node_meta)
    }

    /// `/v1/catalog/services`: each service name with its instances' tags.
    pub fn catalog_services(
        &self,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, BTreeMap<String, Vec<String>>) {
        self.catalog.services(node_meta)
    }

    /// Every service instance on nodes whose meta matches, with the index
    /// `catalog_services` answers with.
    pub fn catalog_service_instances(
        &self,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<crate::fsm::ServiceInstance>) {
        self.catalog.service_instances(node_meta)
    }

    /// `/v1/catalog/service/<name>`: the instances with every tag.
    pub fn catalog_service_nodes(
        &self,
        name: &str,
        tags: &[String],
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<ServiceInstance>) {
        self.catalog.service_nodes(name, tags, node_meta)
    }

    /// The index `catalog_service_nodes` answers with, alone (cheap).
    pub fn catalog_service_index(&self, name: &str) -> u64 {
        self.catalog.service_read_index(name)
    }

    /// `/v1/catalog/node/<n>`: the node (by name or ID prefix) and its
    /// services.
    pub fn catalog_node_services(&self, name_or_id: &str) -> (u64, Option<NodeServices>) {
        self.catalog.node_services(name_or_id)
    }

    /// The index `catalog_node_services` answers with, alone (cheap).
    pub fn catalog_node_index(&self, name_or_id: &str) -> u64 {
        self.catalog.node_read_index(name_or_id)
    }

    /// `/v1/health/node/<n>`: the node's checks, and the checks index.
    pub fn catalog_node_checks(&self, node: &str) -> (u64, Vec<Check>) {
        (
            self.catalog.checks_read_index(&BTreeMap::new()),
            self.catalog.node_checks(node),
        )
    }

    /// `/v1/health/checks/<s>`: the checks of service `name`'s instances.
    pub fn catalog_service_checks(
        &self,
        name: &str,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<Check>) {
        self.catalog.service_checks(name, node_meta)
    }

    /// `/v1/health/state/<state>`: the checks with that status (`any`:
    /// all).
    pub fn catalog_checks_in_state(
        &self,
        state: &str,
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<Check>) {
        self.catalog.checks_in_state(state, node_meta)
    }

    /// The index the check reads answer with, alone (cheap).
    pub fn catalog_checks_index(&self, node_meta: &BTreeMap<String, String>) -> u64 {
        self.catalog.checks_read_index(node_meta)
    }

    /// `/v1/health/service/<s>`: each instance with its node and checks.
    pub fn catalog_service_health(
        &self,
        name: &str,
        tags: &[String],
        node_meta: &BTreeMap<String, String>,
    ) -> (u64, Vec<CheckServiceNode>) {
        self.catalog.service_health(name, tags, node_meta)
    }

    /// The index `catalog_service_health` answers with, alone (cheap).
    pub fn catalog_health_index(&self, name: &str) -> u64 {
        self.catalog.health_read_index(name)
    }

    /// How many nodes, services and checks the catalog holds.
    pub fn catalog_counts(&self) -> (usize, usize, usize) {
        self.catalog.counts()
    }

    /// Autopilot's stored configuration, if one was stored.
    pub fn autopilot(&self) -> Option<&StoredAutopilot> {
        self.autopilot.as_ref()
    }

    /// Whether `cmd`, just applied at `index`, left tombstones at `index`:
    /// a delete that removed something (only such a delete moves the KV
    /// table index). What the tombstone GC is hinted with, as Consul's
    /// `Graveyard.InsertTxn` hints its GC.
    pub fn left_tombstones(&self, index: u64, cmd: &Command) -> bool {
        let deletes = matches!(
            cmd,
            Command::Kv(
                KvCommand::Delete { .. }
                    | KvCommand::DeleteCas { .. }
                    | KvCommand::DeleteTree { .. }
            )
        ) || matches!(cmd, Command::Txn(ops) if ops.iter().any(|op| matches!(
            op,
            TxnOp::Kv {
                verb: KvVerb::Delete | KvVerb::DeleteCas | KvVerb::DeleteTree,
                ..
            }
        )));
        deletes && self.kv.index() == self.index_at(index)
    }

    /// Records that a non-command entry (no-op, membership change) at
    /// `index` was applied: only `last_applied` moves.
    pub fn apply_other(&mut self, index: u64) {
        self.advance(index);
    }

    fn advance(&mut self, index: u64) {
        assert!(
            index > self.last_applied,
            "apply at index {index} <= last applied {}",
            self.last_applied
        );
        self.last_applied = index;
    }

    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// The entry stored under `key`, copied out (the table stores a key
    /// once, apart from the rest of the entry).
    pub fn kv_get(&self, key: &str) -> Option<KvEntry> {
        self.kv.get(key)
    }

    /// Every entry whose key starts with `prefix`, sorted by key.
    pub fn kv_list(&self, prefix: &str) -> Vec<KvEntry> {
        self.kv.list(prefix)
    }

    /// The keys that start with `prefix`, sorted and deduplicated. With a
    /// (non-empty) separator, a key is cut just after the first separator
    /// that follows the prefix, as Consul's `?keys&separator=` does: prefix
    /// `a/`, separator `/`: `a/b/c` and `a/b/d` give `a/b/`.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        self.kv.keys(prefix, separator)
    }

    /// The KV table index (for blocking queries and `X-Consul-Index`): the
    /// highest Raft index that changed the table (a set, a CAS that held, a
    /// delete that removed something). 0 if nothing has.
    pub fn kv_index(&self) -> u64 {
        self.kv.index()
    }

    /// The index for a read of `prefix` (`?recurse`, `?keys`): the highest
    /// modify index among the matching entries and tombstones, or
    /// `kv_index()` if there are none. For the empty prefix this is always
    /// `kv_index()`, as in Consul.
    pub fn kv_index_for_prefix(&self, prefix: &str) -> u64 {
        self.kv.index_for_prefix(prefix)
    }

    /// The index for a read of one key, as Consul's `KVS.Get`: the entry's
    /// modify index if it exists, otherwise `kv_index()`.
    pub fn kv_index_for_key(&self, key: &str) -> u64 {
        self.kv.index_for_key(key)
    }

    /// What a blocking query on one key waits to see pass its index: the
    /// last change to that key (its modify index, or its tombstone's if it
    /// was deleted), 0 if none is known. Unlike `kv_index_for_key`, writes
    /// to other keys do not move it, as Consul's `KVS.Get` watches only the
    /// key's node.
    pub fn kv_change_index_for_key(&self, key: &str) -> u64 {
        self.kv.change_index_for_key(key)
    }

    /// What a blocking `?recurse`/`?keys` query waits to see pass its index:
    /// the last change (entry or tombstone) under `prefix`, 0 if none; for
    /// the empty prefix the table index, as any change is under it.
    pub fn kv_change_index_for_prefix(&self, prefix: &str) -> u64 {
        self.kv.change_index_for_prefix(prefix)
    }

    /// How many KV tombstones are kept (for tests and metrics).
    pub fn tombstone_count(&self) -> usize {
        self.kv.tombstone_count()
    }

    /// Whether any tombstone was recorded at or below Raft index `upto`
    /// (whether a reap of `upto` would change anything).
    pub fn has_tombstones_upto(&self, upto: u64) -> bool {
        self.kv.has_tombstones_upto(upto)
    }

    /// A hash of the whole replicated state: every table's contents and
    /// index, and `last_applied`. Equal states hash equally however they
    /// were reached (applied or restored). O(1): each table keeps its hash
    /// up to date as it changes (see `hash.rs`).
    pub fn state_hash(&self) -> u64 {
        let mut h = ItemHasher::new("fsm");
        h.u64(self.last_applied).u64(self.kv.hash());
        // Nothing stored hashes as before the table existed.
        if let Some(a) = &self.autopilot {
            h.u64(hash::autopilot_hash(a));
        }
        if !self.catalog.is_empty() {
            h.u64(self.catalog.hash());
        }
        if self.index_offset != 0 {
            h.str("index_offset").u64(self.index_offset);
        }
        if let Some(p) = &self.restore {
            h.u64(p.hash());
        }
        if !self.sessions.is_empty() {
            h.u64(self.sessions.hash());
        }
        h.finish()
    }

    /// The whole state as it is now, frozen, in O(1): later applies do not
    /// change it (see `view.rs`).
    pub fn view(&self) -> FsmView {
        FsmView {
            last_applied: self.last_applied,
            kv: self.kv.clone(),
            autopilot: self.autopilot.clone(),
            catalog: Box::new(self.catalog.clone()),
            index_offset: self.index_offset,
            restore: self.restore.clone().map(Box::new),
            sessions: Box::new(self.sessions.clone()),
        }
    }

    /// The whole state, encoded: a format version byte, then postcard.
    /// Takes time in proportion to the state; a server's own snapshot is
    /// encoded from a [`Fsm::view`] off the agent task instead.
    pub fn snapshot(&self) -> Vec<u8> {
        self.view().encode()
    }

    /// The state a `snapshot` encoded. Total: any bytes give a state or an
    /// error, never a panic; a snapshot whose contents break an invariant
    /// that `apply` keeps is refused.
    pub fn restore(bytes: &[u8]) -> Result<Fsm, FsmError> {
        let Snapshot {
            last_applied,
            kv,
            autopilot,
            catalog,
            index_offset,
            restore,
            sessions,
            locks,
        } = snapshot::decode(bytes)?;
        // Every index inside is at most the last applied entry's.
        let index = last_applied.checked_add(index_offset).ok_or_else(|| {
            FsmError::Invalid(format!(
                "the index offset {index_offset} overflows past the snapshot's index {last_applied}"
            ))
        })?;
        if let Some(a) = &autopilot {
            if a.create_index > a.modify_index || a.modify_index > index {
                return Err(FsmError::Invalid(format!(
                    "the autopilot configuration's indexes ({}, {}) are out of order or past the snapshot's index {index}",
                    a.create_index, a.modify_index
                )));
            }
        }
        let restore = match restore {
            None => None,
            Some(r) => {
                let staged: u64 = r.chunks.iter().map(|c| c.len() as u64).sum();
                if staged >= r.total {
                    return Err(FsmError::Invalid(format!(
                        "a staged restore holds {staged} of its {} bytes: it would have completed",
                        r.total
                    )));
                }
                Some(restore::PendingRestore::from_chunks(
                    r.id,
                    r.total,
                    r.chunks.into_iter().map(|c| c.into_vec()).collect(),
                ))
            }
        };
        let sessions = SessionTable::from_snapshot(sessions, index)?;
        let mut kv = KvTable::from_snapshot(kv, index)?;
        for snapshot::LockRecord { key, session } in locks {
            if !sessions.contains(&session) {
                return Err(FsmError::Invalid(format!(
                    "key {key:?} is locked by unknown session {session:?}"
                )));
            }
            kv.restore_lock(&key, &session)?;
        }
        Ok(Fsm {
            last_applied,
            kv,
            autopilot,
            catalog: CatalogTable::from_snapshot(catalog, index)?,
            index_offset,
            restore,
            sessions,
            scratch: Scratch::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Whole-state properties: snapshot and restore, the state hash, and a
    //! restore that refuses bad bytes without panicking.

    use super::snapshot::{EntryRecord, KvSnapshot, Snapshot, TombstoneRecord, SNAPSHOT_VERSION};
    use super::*;

    /// A small deterministic generator (xorshift64), local so the test does
    /// not depend on the core's `Rng` staying the same.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// One step of a log: a command (a tombstone reap among them) or a
    /// non-command entry.
    enum Step {
        Cmd(u64, Command),
        Other(u64),
    }

    const KEYS: [&str; 10] = [
        "a", "a/b", "a/b/c", "a/b/d", "a/c", "ab", "b", "b/x/y", "c/", "",
    ];

    fn random_log(seed: u64, len: usize) -> Vec<Step> {
        let mut rng = XorShift(seed);
        let mut log = Vec::with_capacity(len);
        let mut index = 0;
        for _ in 0..len {
            index += 1 + rng.below(3);
            let key = KEYS[rng.below(KEYS.len() as u64) as usize].to_owned();
            let near = index.saturating_sub(rng.below(20));
            let kv = match rng.below(15) {
                0..=3 => KvCommand::Set(KvWrite {
                    key,
                    flags: rng.below(4),
                    value: rng.next().to_le_bytes()[..rng.below(9) as usize]
                        .to_vec()
                        .into(),
                }),
                4 | 5 => KvCommand::Cas {
                    write: KvWrite {
                        key,
                        flags: 1,
                        value: b"cas".to_vec().into(),
                    },
                    modify_index: if rng.below(2) == 0 { 0 } else { near },
                },
                6 | 7 => KvCommand::Delete { key },
                8 => KvCommand::DeleteCas {
                    key,
                    modify_index: near,
                },
                9 => {
                    // The key or the key less its last character; the empty
                    // prefix (delete everything) only rarely.
                    let cut = (rng.below(2) as usize).min(key.len());
                    let prefix = key[..key.len() - cut].to_owned();
                    if prefix.is_empty() && rng.below(8) != 0 {
                        KvCommand::DeleteTree {
                            prefix: "a/".to_owned(),
                        }
                    } else {
                        KvCommand::DeleteTree { prefix }
                    }
                }
                10 => {
                    // A non-command entry, or now and then a (CAS) write of
                    // autopilot's configuration.
                    if rng.below(4) == 0 {
                        let config = crate::autopilot::AutopilotConfig {
                            max_trailing_logs: rng.below(500),
                            ..Default::default()
                        };
                        let cas = match rng.below(3) {
                            0 => None,
                            1 => Some(0),
                            _ => Some(near),
                        };
                        log.push(Step::Cmd(index, Command::AutopilotSet { config, cas }));
                    } else {
                        log.push(Step::Other(index));
                    }
                    continue;
                }
                11 => {
                    log.push(Step::Cmd(index, Command::TombstoneReap { upto: near }));
                    continue;
                }
                12 => {
                    // A transaction of a few KV operations over colliding
                    // keys: it holds or fails whole.
                    let verbs = [
                        txn::KvVerb::Set,
                        txn::KvVerb::Cas,
                        txn::KvVerb::Delete,
                        txn::KvVerb::DeleteTree,
                        txn::KvVerb::CheckIndex,
                        txn::KvVerb::CheckNotExists,
                        txn::KvVerb::Get,
                    ];
                    let ops = (0..1 + rng.below(4))
                        .map(|_| TxnOp::Kv {
                            verb: verbs[rng.below(verbs.len() as u64) as usize],
                            key: KEYS[rng.below(KEYS.len() as u64) as usize].to_owned(),
                            value: rng.next().to_le_bytes()[..rng.below(9) as usize]
                                .to_vec()
                                .into(),
                            flags: rng.below(2),
                            index: if rng.below(2) == 0 { 0 } else { near },
                            session: String::new(),
                        })
                        .collect();
                    log.push(Step::Cmd(index, Command::Txn(ops)));
                    continue;
                }
                _ => {
                    log.push(Step::Cmd(index, random_catalog(&mut rng)));
                    continue;
                }
            };
            log.push(Step::Cmd(index, Command::Kv(kv)));
        }
        log
    }

    /// A catalog write over a few names that collide (in case too), so
    /// that updates, renames, refusals and removals all happen.
    fn random_catalog(rng: &mut XorShift) -> Command {
        const NODES: [&str; 4] = ["n1", "N1", "n2", "n3"];
        const IDS: [&str; 3] = [
            "",
            "11111111-2222-3333-4444-555555555555",
            "aaaaaaaa-2222-3333-4444-555555555555",
        ];
        const NAMES: [&str; 3] = ["web", "db", "Web"];
        const SERVICE_IDS: [&str; 3] = ["web1", "web2", "db"];
        fn pick(rng: &mut XorShift, items: &[&'static str]) -> &'static str {
            items[rng.below(items.len() as u64) as usize]
        }
        let node = pick(rng, &NODES).to_owned();
        if rng.below(4) == 0 {
            let (service_id, check_id) = match rng.below(3) {
                0 => (pick(rng, &SERVICE_IDS).to_owned(), String::new()),
                1 => (
                    String::new(),
                    pick(rng, &["c1", "c2", "serfHealth"]).to_owned(),
                ),
                _ => (String::new(), String::new()),
            };
            return Command::CatalogDeregister(Deregister {
                node,
                service_id,
                check_id,
            });
        }
        let meta = |rng: &mut XorShift| match rng.below(3) {
            0 => None,
            1 => Some(Meta::new()),
            _ => Some([("env".to_owned(), format!("e{}", rng.below(2)))].into()),
        };
        let service = (rng.below(3) != 0).then(|| Service {
            kind: String::new(),
            id: SERVICE_IDS[rng.below(3) as usize].to_owned(),
            service: NAMES[rng.below(3) as usize].to_owned(),
            tags: [None, Some(vec![]), Some(vec!["v1".to_owned()])][rng.below(3) as usize].clone(),
            address: String::new(),
            tagged_addresses: Default::default(),
            meta: meta(rng),
            port: rng.below(3) as i64,
            weights: None,
            enable_tag_override: false,
            create_index: 0,
            modify_index: 0,
        });
        let checks = (0..rng.below(3))
            .map(|_| Check {
                node: String::new(),
                check_id: ["c1", "c2", "serfHealth"][rng.below(3) as usize].to_owned(),
                name: String::new(),
                status: ["", "passing", "critical"][rng.below(3) as usize].to_owned(),
                notes: String::new(),
                output: String::new(),
                service_id: ["", "web1", "db"][rng.below(3) as usize].to_owned(),
                service_name: String::new(),
                service_tags: None,
                kind: String::new(),
                definition: CheckDefinition::default(),
                create_index: 0,
                modify_index: 0,
            })
            .collect();
        Command::CatalogRegister(Box::new(Register {
            id: IDS[rng.below(3) as usize].to_owned(),
            node,
            address: format!("10.0.0.{}", rng.below(2)),
            datacenter: "dc1".to_owned(),
            tagged_addresses: meta(rng),
            node_meta: meta(rng),
            service,
            checks,
            skip_node_update: rng.below(5) == 0,
        }))
    }

    fn replay(log: &[Step]) -> Fsm {
        replay_counting(log).0
    }

    /// Replays `log`; also returns how many commands held and failed.
    fn replay_counting(log: &[Step]) -> (Fsm, usize, usize) {
        let (mut held, mut failed) = (0, 0);
        let mut fsm = Fsm::new();
        for step in log {
            match step {
                Step::Cmd(index, cmd) => match fsm.apply(*index, cmd) {
                    ApplyResult::Kv(true)
                    | ApplyResult::Autopilot(true)
                    | ApplyResult::Catalog(Ok(()))
                    | ApplyResult::Restore(Ok(_))
                    | ApplyResult::Txn(Ok(_))
                    | ApplyResult::Session(_) => held += 1,
                    ApplyResult::Kv(false)
                    | ApplyResult::Autopilot(false)
                    | ApplyResult::Catalog(Err(_))
                    | ApplyResult::Restore(Err(_))
                    | ApplyResult::Txn(Err(_))
                    | ApplyResult::Refused(_) => failed += 1,
                },
                Step::Other(index) => fsm.apply_other(*index),
            }
        }
        (fsm, held, failed)
    }

    /// Sets `key` to `value` at `index` (also used by `view.rs`'s tests).
    pub(super) fn set(fsm: &mut Fsm, index: u64, key: &str, value: &[u8]) {
        let write = KvWrite {
            key: key.to_owned(),
            flags: 0,
            value: value.to_vec().into(),
        };
        fsm.apply(index, &Command::Kv(KvCommand::Set(write)));
    }

    /// A small state with entries, a tombstone and a gap after the last
    /// KV change.
    fn sample() -> Fsm {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "a", b"one");
        set(&mut fsm, 2, "b/c", b"two");
        set(&mut fsm, 3, "gone", b"x");
        fsm.apply(
            4,
            &Command::Kv(KvCommand::Delete {
                key: "gone".to_owned(),
            }),
        );
        set(&mut fsm, 5, "a", b"uno");
        fsm.apply_other(7);
        fsm
    }

    fn encode(snap: &Snapshot) -> Vec<u8> {
        let mut bytes = vec![SNAPSHOT_VERSION];
        bytes.extend(postcard::to_allocvec(snap).unwrap());
        bytes
    }

    fn entry(key: &str, create_index: u64, modify_index: u64) -> EntryRecord {
        EntryRecord {
            key: key.to_owned(),
            flags: 0,
            value: Default::default(),
            create_index,
            modify_index,
            lock_index: 0,
        }
    }

    fn snap(entries: Vec<EntryRecord>, tombstones: Vec<(&str, u64)>) -> Snapshot {
        Snapshot {
            last_applied: 10,
            kv: KvSnapshot {
                index: 8,
                entries,
                tombstones: tombstones
                    .into_iter()
                    .map(|(key, index)| TombstoneRecord {
                        key: key.to_owned(),
                        index,
                    })
                    .collect(),
            },
            autopilot: None,
            catalog: Default::default(),
            index_offset: 0,
            restore: None,
            sessions: Default::default(),
            locks: vec![],
        }
    }

    #[test]
    fn snapshot_restore_gives_an_equal_state() {
        let fsm = sample();
        let restored = Fsm::restore(&fsm.snapshot()).unwrap();
        assert_eq!(restored, fsm);
        assert_eq!(restored.state_hash(), fsm.state_hash());
        assert_eq!(restored.last_applied(), 7);
        assert_eq!(restored.kv_index(), 5);
        assert_eq!(
            restored.kv_index_for_prefix("gone"),
            4,
            "tombstones survive"
        );
        assert_eq!(restored.snapshot(), fsm.snapshot());
    }

    #[test]
    fn the_sample_snapshot_is_pinned() {
        // Golden bytes of format version 5: an old snapshot must keep
        // restoring, so a change here needs a new version byte instead.
        #[rustfmt::skip]
        let golden: [u8; 49] = [
            5,                                  // format version
            7,                                  // last_applied
            5,                                  // kv index
            2,                                  // two entries
            1, b'a', 0, 3, b'u', b'n', b'o', 1, 5, 0,
            3, b'b', b'/', b'c', 0, 3, b't', b'w', b'o', 2, 2, 0,
            1,                                  // one tombstone
            4, b'g', b'o', b'n', b'e', 4,
            0,                                  // no autopilot configuration
            0, 0, 0,                            // no nodes, services, checks
            0, 0, 0, 0, 0,                      // catalog table indexes
            0, 0,                               // no per-name index rows
            0,                                  // index offset
            0,                                  // no restore staged
            0, 0,                               // sessions index, no sessions
            0,                                  // no locks
        ];
        assert_eq!(sample().snapshot(), golden);
        assert_eq!(Fsm::restore(&golden).unwrap(), sample());
        // The same state as version 4 wrote it (no sessions), as version 3
        // wrote it (no offset, no staged restore either), as version 2
        // wrote it (no catalog) and as version 1 wrote it (no autopilot
        // table either) still restores, to the same state and hash.
        let mut v4 = golden[..46].to_vec();
        v4[0] = 4;
        let mut v3 = golden[..44].to_vec();
        v3[0] = 3;
        let mut v2 = golden[..34].to_vec();
        v2[0] = 2;
        let mut v1 = golden[..33].to_vec();
        v1[0] = 1;
        for old in [v4, v3, v2, v1] {
            let restored = Fsm::restore(&old).unwrap();
            assert_eq!(restored, sample());
            assert_eq!(restored.state_hash(), PINNED_SAMPLE_HASH);
        }
    }

    /// A stored autopilot configuration is part of the state: it moves the
    /// hash, survives a snapshot, and a CAS write holds only at the stored
    /// modify index (0: only if none is stored), as Consul's
    /// `AutopilotCASConfig` (agent/consul/state/autopilot.go).
    #[test]
    fn the_autopilot_configuration_is_replicated_state() {
        use crate::autopilot::AutopilotConfig;
        let mut fsm = sample();
        let before = fsm.state_hash();
        let first = AutopilotConfig {
            max_trailing_logs: 100,
            ..Default::default()
        };
        let set = |config: &AutopilotConfig, cas| Command::AutopilotSet {
            config: config.clone(),
            cas,
        };
        assert_eq!(
            fsm.apply(8, &set(&first, Some(3))),
            ApplyResult::Autopilot(false)
        );
        assert_eq!(fsm.autopilot(), None);
        assert_eq!(
            fsm.apply(9, &set(&first, Some(0))),
            ApplyResult::Autopilot(true)
        );
        assert_eq!(
            fsm.apply(10, &set(&first, Some(0))),
            ApplyResult::Autopilot(false)
        );
        assert_ne!(fsm.state_hash(), before);
        let second = AutopilotConfig {
            cleanup_dead_servers: false,
            ..first.clone()
        };
        assert_eq!(
            fsm.apply(11, &set(&second, Some(8))),
            ApplyResult::Autopilot(false)
        );
        assert_eq!(
            fsm.apply(12, &set(&second, Some(9))),
            ApplyResult::Autopilot(true)
        );
        let stored = fsm.autopilot().unwrap().clone();
        assert_eq!(
            (
                stored.config.clone(),
                stored.create_index,
                stored.modify_index
            ),
            (second.clone(), 9, 12)
        );
        assert_eq!(
            fsm.apply(13, &set(&first, None)),
            ApplyResult::Autopilot(true)
        );
        assert_eq!(fsm.autopilot().unwrap().create_index, 9);
        let restored = Fsm::restore(&fsm.snapshot()).unwrap();
        assert_eq!(restored, fsm);
        assert_eq!(restored.state_hash(), fsm.state_hash());
        // Indexes past the snapshot's own are refused.
        let mut bad = fsm.clone();
        bad.autopilot.as_mut().unwrap().modify_index = 99;
        assert!(matches!(
            Fsm::restore(&bad.snapshot()),
            Err(FsmError::Invalid(_))
        ));
    }

    #[test]
    fn the_empty_state_round_trips() {
        let restored = Fsm::restore(&Fsm::new().snapshot()).unwrap();
        assert_eq!(restored, Fsm::new());
        assert_eq!(restored.state_hash(), Fsm::new().state_hash());
    }

    #[test]
    fn a_random_log_hashes_the_same_applied_replayed_and_restored() {
        for seed in [1, 0x9E37_79B9, 0xDEAD_BEEF_u64] {
            let log = random_log(seed, 1000);
            let (applied, held, failed) = replay_counting(&log);
            // The log exercises both outcomes of the conditional commands.
            assert!(held > 300 && failed > 30, "held {held}, failed {failed}");
            let replayed = replay(&log);
            let restored = Fsm::restore(&applied.snapshot()).unwrap();

            assert!(
                !applied.kv_list("").is_empty(),
                "the log should leave some keys"
            );
            assert_eq!(replayed, applied);
            assert_eq!(restored, applied);
            assert_eq!(replayed.state_hash(), applied.state_hash());
            assert_eq!(restored.state_hash(), applied.state_hash());
        }
    }

    #[test]
    fn every_state_change_changes_the_hash() {
        // Every step that changes state changes the hash: walk the log and
        // compare the hash before and after each step with the contents.
        let log = random_log(7, 1000);
        let mut fsm = Fsm::new();
        for step in &log {
            let before = (fsm.clone(), fsm.state_hash());
            match step {
                Step::Cmd(index, cmd) => {
                    fsm.apply(*index, cmd);
                }
                Step::Other(index) => fsm.apply_other(*index),
            }
            assert_eq!(fsm == before.0, fsm.state_hash() == before.1);
        }
    }

    #[test]
    fn a_one_byte_difference_changes_the_hash() {
        let base = sample();
        let mut other = base.clone();
        other.apply_other(8);
        let mut base = base;
        base.apply_other(8);
        assert_eq!(base.state_hash(), other.state_hash());

        set(&mut base, 9, "k", b"value-a");
        set(&mut other, 9, "k", b"value-b");
        assert_ne!(base.state_hash(), other.state_hash());

        // Only last_applied differs.
        let (mut x, mut y) = (Fsm::new(), Fsm::new());
        x.apply_other(1);
        y.apply_other(2);
        assert_ne!(x.state_hash(), y.state_hash());

        // Same entries and last_applied, but one state still remembers a
        // tombstone: a reap changes the hash beyond last_applied.
        let mut pruned = sample();
        pruned.apply(8, &Command::TombstoneReap { upto: 4 });
        let mut kept = sample();
        kept.apply(8, &Command::TombstoneReap { upto: 3 });
        assert_eq!((pruned.tombstone_count(), kept.tombstone_count()), (0, 1));
        assert_ne!(pruned.state_hash(), kept.state_hash());
    }

    #[test]
    fn the_state_hash_is_pinned() {
        // The hash is documented as fixed (FNV-1a 64 + splitmix64, see
        // hash.rs); a change here must be deliberate.
        assert_eq!(sample().state_hash(), PINNED_SAMPLE_HASH);
    }

    const PINNED_SAMPLE_HASH: u64 = 13760590587651379968;

    #[test]
    fn restore_rejects_empty_and_unknown_versions() {
        assert_eq!(Fsm::restore(&[]), Err(FsmError::Empty));
        let mut bytes = sample().snapshot();
        bytes[0] = 0;
        assert_eq!(Fsm::restore(&bytes), Err(FsmError::UnsupportedVersion(0)));
        bytes[0] = 6;
        assert_eq!(Fsm::restore(&bytes), Err(FsmError::UnsupportedVersion(6)));
    }

    #[test]
    fn restore_rejects_every_truncation() {
        let bytes = replay(&random_log(3, 200)).snapshot();
        for len in 0..bytes.len() {
            assert!(
                Fsm::restore(&bytes[..len]).is_err(),
                "a prefix of {len} bytes restored"
            );
        }
    }

    #[test]
    fn restore_rejects_trailing_bytes() {
        let mut bytes = sample().snapshot();
        bytes.push(0);
        assert_eq!(Fsm::restore(&bytes), Err(FsmError::TrailingBytes(1)));
    }

    #[test]
    fn restore_never_panics_on_corrupted_bytes() {
        // Every single-byte corruption of a real snapshot gives Ok or Err.
        let bytes = sample().snapshot();
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let _ = Fsm::restore(&bad);
            }
        }
        // And random garbage.
        let mut rng = XorShift(99);
        for len in 0..200 {
            let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = Fsm::restore(&garbage);
        }
    }

    #[test]
    fn restore_rejects_unsorted_and_duplicate_keys() {
        let unsorted = snap(vec![entry("b", 1, 1), entry("a", 2, 2)], vec![]);
        assert_eq!(
            Fsm::restore(&encode(&unsorted)),
            Err(FsmError::KvKeysUnordered {
                key: "a".to_owned()
            })
        );
        let duplicate = snap(vec![entry("a", 1, 1), entry("a", 2, 2)], vec![]);
        assert_eq!(
            Fsm::restore(&encode(&duplicate)),
            Err(FsmError::KvKeysUnordered {
                key: "a".to_owned()
            })
        );
        let tombstones = snap(vec![], vec![("b", 1), ("a", 2)]);
        assert_eq!(
            Fsm::restore(&encode(&tombstones)),
            Err(FsmError::KvTombstonesUnordered {
                key: "a".to_owned()
            })
        );
        // The well-formed neighbours restore.
        assert!(Fsm::restore(&encode(&snap(
            vec![entry("a", 1, 1), entry("b", 2, 2)],
            vec![("c", 3)]
        )))
        .is_ok());
    }

    #[test]
    fn restore_rejects_inconsistent_indexes() {
        let bad_entry = |e: EntryRecord| {
            let key = e.key.clone();
            assert_eq!(
                Fsm::restore(&encode(&snap(vec![e], vec![]))),
                Err(FsmError::KvEntryIndexes { key })
            );
        };
        bad_entry(entry("zero", 0, 1));
        bad_entry(entry("created-after-modified", 3, 2));
        bad_entry(entry("beyond-kv-index", 1, 9));

        let bad_tombstone = |t: (&str, u64), entries: Vec<EntryRecord>| {
            let key = t.0.to_owned();
            assert_eq!(
                Fsm::restore(&encode(&snap(entries, vec![t]))),
                Err(FsmError::KvTombstoneInvalid { key })
            );
        };
        bad_tombstone(("zero", 0), vec![]);
        bad_tombstone(("beyond", 9), vec![]);
        bad_tombstone(("live", 3), vec![entry("live", 1, 1)]);

        let mut ahead = snap(vec![], vec![]);
        ahead.kv.index = 11;
        assert_eq!(
            Fsm::restore(&encode(&ahead)),
            Err(FsmError::KvIndexBeyondLastApplied {
                kv_index: 11,
                last_applied: 10
            })
        );
    }
}
