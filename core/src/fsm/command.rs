//! Commands the replicated state machine applies, and what the KV table holds.

use serde::{Deserialize, Serialize};

use super::value::Value;

/// A key and what to store under it, as a client sends it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvWrite {
    pub key: String,
    pub flags: u64,
    pub value: Value,
}

/// One KV operation (Consul's `KVSOp`s that this release implements).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvCommand {
    /// Unconditional put.
    Set(KvWrite),
    /// Put only if the key's modify index equals `modify_index`;
    /// `0` means only if the key does not exist.
    Cas { write: KvWrite, modify_index: u64 },
    /// Delete one key (a no-op that still succeeds if absent).
    Delete { key: String },
    /// Delete only if the key's modify index equals `modify_index`
    /// (`0`: only if absent, which deletes nothing and succeeds).
    DeleteCas { key: String, modify_index: u64 },
    /// Delete every key that starts with `prefix`.
    DeleteTree { prefix: String },
    /// `PUT ?acquire=<session>` (Consul's `KVLock`): take the key's lock
    /// for `session` and write the value, unless another session holds it.
    Lock { write: KvWrite, session: String },
    /// `PUT ?release=<session>` (Consul's `KVUnlock`): give the lock up and
    /// write the value, only if `session` holds it.
    Unlock { write: KvWrite, session: String },
}

/// Everything the state machine can apply. Versioned on the wire by the
/// message codec, so new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    Kv(KvCommand),
    /// Forget every KV tombstone recorded at or below Raft index `upto`
    /// (Consul's `TombstoneRequest{Op: reap, ReapIndex}`). Proposed by the
    /// leader's tombstone GC once the tombstones are older than
    /// `tombstone_ttl`; never by a client. Changes no table index, as in
    /// Consul (`Graveyard.ReapTxn` deletes rows and touches no index).
    TombstoneReap {
        upto: u64,
    },
    /// Store autopilot's configuration (Consul's `AutopilotRequest`,
    /// `PUT /v1/operator/autopilot/configuration`). With `cas`, only if the
    /// stored configuration's modify index is `cas` (0: only if none is
    /// stored yet, which is how the leader writes the agent's own on its
    /// first term).
    AutopilotSet {
        config: crate::autopilot::AutopilotConfig,
        cas: Option<u64>,
    },
    /// `PUT /v1/catalog/register` (Consul's `RegisterRequestType`): upsert
    /// a node, optionally one service on it and checks.
    CatalogRegister(Box<super::catalog::types::Register>),
    /// `PUT /v1/catalog/deregister` (Consul's `DeregisterRequestType`).
    CatalogDeregister(super::catalog::types::Deregister),
    /// One chunk of an operator's snapshot restore (`PUT /v1/snapshot`);
    /// see `fsm/restore.rs`.
    RestoreChunk(super::restore::RestoreChunk),
    /// `PUT /v1/txn` with at least one write: every operation applied at
    /// this index, or none (see `fsm/txn.rs`).
    Txn(Vec<super::txn::TxnOp>),
    /// `PUT /v1/session/create` (Consul's `SessionRequest{Op: create}`):
    /// the ID was drawn by the leader before proposing; indexes are 0.
    SessionCreate(Box<super::session::Session>),
    /// `PUT /v1/session/destroy/<id>`, or the leader's TTL timer running
    /// out: delete the session and release (or delete) what it holds.
    SessionDestroy {
        id: String,
    },
}

/// Autopilot's configuration as the state machine stores it, with Consul's
/// raft indexes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredAutopilot {
    pub config: crate::autopilot::AutopilotConfig,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A stored KV entry (Consul's `DirEntry`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub flags: u64,
    pub value: Value,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
}

/// A KV entry with the session holding its lock (Consul's `DirEntry`;
/// `session` empty when none does). What reads answer since sessions
/// exist; [`KvEntry`] stays for the replies of older builds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirEntry {
    pub key: String,
    pub flags: u64,
    pub value: Value,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: String,
}

impl From<KvEntry> for DirEntry {
    fn from(e: KvEntry) -> DirEntry {
        DirEntry {
            key: e.key,
            flags: e.flags,
            value: e.value,
            create_index: e.create_index,
            modify_index: e.modify_index,
            lock_index: e.lock_index,
            session: String::new(),
        }
    }
}

/// What applying a command produced, returned to the client that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApplyResult {
    /// Set/Delete/DeleteTree: `true`. CAS variants: whether the condition held.
    /// `TombstoneReap` (answered to no client): always `true`.
    Kv(bool),
    /// `AutopilotSet`: whether it was stored (a CAS that failed: `false`).
    Autopilot(bool),
    /// `CatalogRegister`/`CatalogDeregister`: applied, or refused (and
    /// nothing of it applied) with the reason.
    Catalog(Result<(), super::catalog::types::CatalogError>),
    /// `RestoreChunk`: how far the restore has come, or why the chunk was
    /// refused.
    Restore(Result<super::restore::RestoreProgress, super::restore::RestoreError>),
    /// `Txn`: every operation's result, or every failure (nothing applied).
    Txn(super::txn::TxnOutcome),
    /// Refused with Consul's text, nothing applied (a lock with an unknown
    /// session: `invalid session "<id>"`; a session create on a missing
    /// node or a critical check). Consul's HTTP API answers these 500.
    Refused(String),
    /// `SessionCreate`/`SessionDestroy`: the session's ID.
    Session(String),
}
