//! The KV table: entries, tombstones and the table index (Consul's `kvs`
//! table, its graveyard and its `index` row).

use std::ops::Bound;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use super::command::{DirEntry, KvCommand, KvEntry, KvWrite};
use super::hash::ItemHasher;
use super::snapshot::{
    EntryRecord, EntryRef, KvSnapshot, KvSnapshotRef, Rows, TombstoneRecord, TombstoneRef,
};
use super::value::Value;
use super::FsmError;

/// Everything a stored entry holds but its key (the map key is the only
/// copy of it), and the entry's hash, kept so that replacing or removing the
/// entry does not need to hash its possibly large value again.
///
/// Behind an `Arc`: a point-in-time view and the live table share a slot
/// until the live one changes it, so copying a shared tree node copies
/// pointers, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    flags: u64,
    value: Value,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    /// The session holding the lock on this key (Consul's
    /// `DirEntry.Session`), if any.
    session: Option<Arc<str>>,
    hash: u64,
}

impl Slot {
    fn new(key: &str, flags: u64, value: Value, create_index: u64, modify_index: u64) -> Slot {
        let mut slot = Slot {
            flags,
            value,
            create_index,
            modify_index,
            lock_index: 0,
            session: None,
            hash: 0,
        };
        slot.rehash(key);
        slot
    }

    fn rehash(&mut self, key: &str) {
        let mut h = ItemHasher::new("kv.entry");
        h.str(key)
            .u64(self.flags)
            .bytes(&self.value)
            .u64(self.create_index)
            .u64(self.modify_index)
            .u64(self.lock_index);
        // An entry without a lock hashes as before sessions existed.
        if let Some(s) = &self.session {
            h.str("session").str(s);
        }
        self.hash = h.finish();
    }

    fn entry(&self, key: &str) -> KvEntry {
        KvEntry {
            key: key.to_owned(),
            flags: self.flags,
            value: self.value.clone(),
            create_index: self.create_index,
            modify_index: self.modify_index,
            lock_index: self.lock_index,
        }
    }

    fn dir_entry(&self, key: &str) -> DirEntry {
        DirEntry {
            key: key.to_owned(),
            flags: self.flags,
            value: self.value.clone(),
            create_index: self.create_index,
            modify_index: self.modify_index,
            lock_index: self.lock_index,
            session: self.session.as_deref().unwrap_or("").to_owned(),
        }
    }
}

/// An entry's share of [`KvTable::snapshot_bytes_guess`]: its key and
/// value plus room for its integers.
fn entry_bytes(key: &str, slot: &Slot) -> usize {
    key.len() + slot.value.len() + 40
}

/// A tombstone's share of [`KvTable::snapshot_bytes_guess`].
fn tombstone_bytes(key: &str) -> usize {
    key.len() + 12
}

fn tombstone_hash(key: &str, index: u64) -> u64 {
    ItemHasher::new("kv.tombstone").str(key).u64(index).finish()
}

/// Everything in `map` whose key starts with `prefix`, in key order.
fn under<'a, V>(
    map: &'a OrdMap<Arc<str>, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a Arc<str>, &'a V)> + 'a {
    map.range::<_, str>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// The KV table.
///
/// Tombstones: deleting a key that exists (by `Delete`, `DeleteCas` or
/// `DeleteTree`) records `key -> delete index`, so that a read of a prefix
/// whose newest change was a delete still reports an index that moved.
/// Unlike Consul, which records one tombstone for a whole `DeleteTree`
/// prefix, every deleted key gets its own, so a read of a deeper prefix
/// also sees the delete. Re-creating a key drops its tombstone (the new
/// entry's modify index is higher, so no read can tell), which keeps the
/// table's contents independent of history. Tombstones are removed only by
/// `prune_tombstones`, which runs when a `Command::TombstoneReap` is
/// applied, so every replica does it at the same point in the log.
///
/// Both maps are persistent B-trees (`imbl`) keyed by `Arc<str>`: `clone`
/// is O(1) and shares every node, and a later change copies only the nodes
/// on its path (pointers to keys and slots, never values). That is what
/// makes a point-in-time view ([`super::FsmView`]) free to take. Iteration
/// is in key order, as with a `BTreeMap`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvTable {
    entries: OrdMap<Arc<str>, Arc<Slot>>,
    tombstones: OrdMap<Arc<str>, u64>,
    /// The highest Raft index that changed the table; 0 if none has.
    index: u64,
    /// Wrapping sum of the hashes of every entry and tombstone.
    content_hash: u64,
    /// About how many bytes the table's snapshot takes: the sum of
    /// [`entry_bytes`] over the entries and [`tombstone_bytes`] over the
    /// tombstones, kept as they change (like `content_hash`) so that
    /// sizing a snapshot's buffer is not a walk of the whole table.
    snapshot_bytes: usize,
    /// `(session, key)` for every locked key: what a session's destroy
    /// releases (Consul's `kvs` `session` index).
    locks: OrdSet<(Arc<str>, Arc<str>)>,
}

impl KvTable {
    /// Applies `cmd` at Raft index `index`; returns whether its condition
    /// held (always `true` for unconditional commands).
    pub(crate) fn apply(&mut self, index: u64, cmd: &KvCommand) -> bool {
        // Equal for the second write of a transaction, which shares its
        // entry's index with the first.
        assert!(
            index >= self.index,
            "KV apply at {index} < table index {}",
            self.index
        );
        match cmd {
            KvCommand::Set(write) => {
                self.set(index, write);
                true
            }
            KvCommand::Cas {
                write,
                modify_index,
            } => {
                let holds = match self.entries.get(write.key.as_str()) {
                    None => *modify_index == 0,
                    Some(slot) => *modify_index != 0 && slot.modify_index == *modify_index,
                };
                if holds {
                    self.set(index, write);
                }
                holds
            }
            KvCommand::Delete { key } => {
                self.delete(index, key);
                true
            }
            KvCommand::DeleteCas { key, modify_index } => {
                match self.entries.get(key.as_str()) {
                    // Consul's `kvsDeleteCASTxn` (agent/consul/state/kvs.go)
                    // answers `entry == nil` when the index does not match:
                    // a key that is not there is "deleted", whatever the
                    // index asked.
                    None => true,
                    Some(slot) if *modify_index != 0 && slot.modify_index == *modify_index => {
                        self.delete(index, key);
                        true
                    }
                    Some(_) => false,
                }
            }
            KvCommand::Lock { write, session } => self.lock(index, write, session),
            KvCommand::Unlock { write, session } => self.unlock(index, write, session),
            KvCommand::DeleteTree { prefix } => {
                // The keys themselves (an `Arc` each), not copies.
                let doomed: Vec<Arc<str>> = under(&self.entries, prefix)
                    .map(|(k, _)| Arc::clone(k))
                    .collect();
                for key in &doomed {
                    self.delete(index, key);
                }
                true
            }
        }
    }

    /// Stores `write`. An update keeps the entry's create and lock indexes.
    /// An entry that would not change (same flags, same value) is not
    /// written: its modify index and the table index stay, so no blocking
    /// query wakes (Consul's `kvsSetTxn` returns early when
    /// `existing.Equal(entry)`, agent/consul/state/kvs.go).
    fn set(&mut self, index: u64, write: &KvWrite) {
        let key = write.key.as_str();
        if self
            .entries
            .get(key)
            .is_some_and(|slot| slot.flags == write.flags && slot.value == write.value)
        {
            return;
        }
        let Some(shared) = self.entries.get_mut(key) else {
            self.remove_tombstone(key);
            let slot = Slot::new(key, write.flags, write.value.clone(), index, index);
            self.content_hash = self.content_hash.wrapping_add(slot.hash);
            self.snapshot_bytes += entry_bytes(key, &slot);
            self.entries.insert(Arc::from(key), Arc::new(slot));
            self.index = index;
            return;
        };
        self.content_hash = self.content_hash.wrapping_sub(shared.hash);
        self.snapshot_bytes -= entry_bytes(key, shared);
        match Arc::get_mut(shared) {
            // No view holds the slot: rewrite it in place (the hot path of
            // every write); the value is the log entry's, shared, not copied.
            Some(slot) => {
                slot.flags = write.flags;
                slot.value.clone_from(&write.value);
                slot.modify_index = index;
                slot.rehash(key);
            }
            // A view holds it: a new slot, and the view keeps the old one.
            None => {
                let mut slot = Slot::new(
                    key,
                    write.flags,
                    write.value.clone(),
                    shared.create_index,
                    index,
                );
                slot.lock_index = shared.lock_index;
                slot.session = shared.session.clone();
                slot.rehash(key);
                *shared = Arc::new(slot);
            }
        }
        self.content_hash = self.content_hash.wrapping_add(shared.hash);
        self.snapshot_bytes += entry_bytes(key, shared);
        self.index = index;
    }

    /// Deletes `key` if present; only a delete that removed something moves
    /// the table index.
    fn delete(&mut self, index: u64, key: &str) {
        let Some((key, old)) = self.entries.remove_with_key(key) else {
            return;
        };
        if let Some(s) = &old.session {
            self.locks.remove(&(Arc::clone(s), Arc::clone(&key)));
        }
        self.content_hash = self.content_hash.wrapping_sub(old.hash);
        self.snapshot_bytes -= entry_bytes(&key, &old);
        self.remove_tombstone(&key);
        self.content_hash = self.content_hash.wrapping_add(tombstone_hash(&key, index));
        self.snapshot_bytes += tombstone_bytes(&key);
        self.tombstones.insert(key, index);
        self.index = index;
    }

    /// Consul's `kvsLockTxn` (the session is known to exist): a key held
    /// by another session is refused; a free or missing key is taken (its
    /// lock index moves up by one, 1 for a new key); the holder acquiring
    /// again keeps the lock index. The value and flags are written in both
    /// cases; an acquire that changes nothing writes nothing.
    fn lock(&mut self, index: u64, write: &KvWrite, session: &str) -> bool {
        let key = write.key.as_str();
        let (create_index, lock_index) = match self.entries.get(key) {
            Some(slot) => match slot.session.as_deref() {
                Some(holder) if holder == session => {
                    if slot.flags == write.flags && slot.value == write.value {
                        return true;
                    }
                    (slot.create_index, slot.lock_index)
                }
                Some(_) => return false,
                None => (slot.create_index, slot.lock_index + 1),
            },
            None => (index, 1),
        };
        self.put_slot(
            index,
            write,
            create_index,
            lock_index,
            Some(Arc::from(session)),
        );
        true
    }

    /// Consul's `kvsUnlockTxn`: only the holder releases; the session is
    /// cleared, the lock index kept, the value and flags written.
    fn unlock(&mut self, index: u64, write: &KvWrite, session: &str) -> bool {
        let key = write.key.as_str();
        let Some(slot) = self.entries.get(key) else {
            return false;
        };
        if slot.session.as_deref() != Some(session) {
            return false;
        }
        let (create_index, lock_index) = (slot.create_index, slot.lock_index);
        self.put_slot(index, write, create_index, lock_index, None);
        true
    }

    /// Replaces (or creates) `write.key`'s slot whole, keeping the lock
    /// index of the session map.
    fn put_slot(
        &mut self,
        index: u64,
        write: &KvWrite,
        create_index: u64,
        lock_index: u64,
        session: Option<Arc<str>>,
    ) {
        let key: Arc<str> = match self.entries.get_key_value(write.key.as_str()) {
            Some((k, old)) => {
                let k = Arc::clone(k);
                self.content_hash = self.content_hash.wrapping_sub(old.hash);
                self.snapshot_bytes -= entry_bytes(&k, old);
                if let Some(s) = &old.session {
                    self.locks.remove(&(Arc::clone(s), Arc::clone(&k)));
                }
                k
            }
            None => {
                self.remove_tombstone(&write.key);
                Arc::from(write.key.as_str())
            }
        };
        let mut slot = Slot::new(&key, write.flags, write.value.clone(), create_index, index);
        slot.lock_index = lock_index;
        slot.session = session;
        slot.rehash(&key);
        if let Some(s) = &slot.session {
            self.locks.insert((Arc::clone(s), Arc::clone(&key)));
        }
        self.content_hash = self.content_hash.wrapping_add(slot.hash);
        self.snapshot_bytes += entry_bytes(&key, &slot);
        self.entries.insert(key, Arc::new(slot));
        self.index = self.index.max(index);
    }

    /// The keys `session` holds, in key order.
    pub(crate) fn held_by(&self, session: &str) -> Vec<Arc<str>> {
        let from: (Arc<str>, Arc<str>) = (Arc::from(session), Arc::from(""));
        self.locks
            .range(from..)
            .take_while(|(s, _)| &**s == session)
            .map(|(_, k)| Arc::clone(k))
            .collect()
    }

    /// A destroyed session's locks at Raft index `index` (Consul's
    /// `deleteSessionTxn`): released (session cleared, lock index kept,
    /// modify index moved) or, with `delete`, the keys deleted. Returns
    /// the keys it touched.
    pub(crate) fn release_session(
        &mut self,
        index: u64,
        session: &str,
        delete: bool,
    ) -> Vec<Arc<str>> {
        let keys = self.held_by(session);
        for key in &keys {
            if delete {
                self.delete(index, key);
            } else if let Some(slot) = self.entries.get(&**key) {
                let write = KvWrite {
                    key: key.to_string(),
                    flags: slot.flags,
                    value: slot.value.clone(),
                };
                let (create_index, lock_index) = (slot.create_index, slot.lock_index);
                self.put_slot(index, &write, create_index, lock_index, None);
            }
        }
        keys
    }

    /// The session holding `key`'s lock, if any.
    pub(crate) fn session_of(&self, key: &str) -> Option<&str> {
        self.entries.get(key).and_then(|s| s.session.as_deref())
    }

    /// Every `(key, session)` lock, in key order (for a snapshot). From
    /// the lock index (`locks`, in session order), so a snapshot of a
    /// table with few locks does not walk every entry to find them.
    pub(crate) fn lock_records(&self) -> Vec<(&str, &str)> {
        let mut records: Vec<(&str, &str)> = self.locks.iter().map(|(s, k)| (&**k, &**s)).collect();
        // A key has at most one holder: the keys are distinct.
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        records
    }

    /// Restores the lock of `key` by `session` (a snapshot's); the key must
    /// exist and hold no lock yet.
    pub(crate) fn restore_lock(&mut self, key: &str, session: &str) -> Result<(), FsmError> {
        let Some((k, shared)) = self.entries.get_key_value(key) else {
            return Err(FsmError::Invalid(format!("a lock on missing key {key:?}")));
        };
        if shared.session.is_some() {
            return Err(FsmError::Invalid(format!("key {key:?} locked twice")));
        }
        let k = Arc::clone(k);
        let mut slot = (**shared).clone();
        self.content_hash = self.content_hash.wrapping_sub(slot.hash);
        slot.session = Some(Arc::from(session));
        slot.rehash(&k);
        self.content_hash = self.content_hash.wrapping_add(slot.hash);
        self.locks.insert((Arc::from(session), Arc::clone(&k)));
        self.entries.insert(k, Arc::new(slot));
        Ok(())
    }

    fn remove_tombstone(&mut self, key: &str) {
        if let Some(at) = self.tombstones.remove(key) {
            self.content_hash = self.content_hash.wrapping_sub(tombstone_hash(key, at));
            self.snapshot_bytes -= tombstone_bytes(key);
        }
    }

    /// Forgets tombstones recorded at or below `upto`.
    pub(crate) fn prune_tombstones(&mut self, upto: u64) {
        let reaped: Vec<(Arc<str>, u64)> = self
            .tombstones
            .iter()
            .filter(|(_, &at)| at <= upto)
            .map(|(key, &at)| (Arc::clone(key), at))
            .collect();
        for (key, at) in reaped {
            self.tombstones.remove(&*key);
            self.content_hash = self.content_hash.wrapping_sub(tombstone_hash(&key, at));
            self.snapshot_bytes -= tombstone_bytes(&key);
        }
    }

    pub(crate) fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    pub(crate) fn has_tombstones_upto(&self, upto: u64) -> bool {
        self.tombstones.values().any(|&at| at <= upto)
    }

    /// The entry stored under `key` (a copy: the table stores its parts).
    pub(crate) fn get(&self, key: &str) -> Option<KvEntry> {
        self.entries.get(key).map(|slot| slot.entry(key))
    }

    /// The entry under `key` with its lock holder.
    pub(crate) fn get_dir(&self, key: &str) -> Option<DirEntry> {
        self.entries.get(key).map(|slot| slot.dir_entry(key))
    }

    /// Every entry under `prefix` with its lock holder, by key.
    pub(crate) fn list_dir(&self, prefix: &str) -> Vec<DirEntry> {
        under(&self.entries, prefix)
            .map(|(key, slot)| slot.dir_entry(key))
            .collect()
    }

    fn modify_index_of(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(|slot| slot.modify_index)
    }

    pub(crate) fn list(&self, prefix: &str) -> Vec<KvEntry> {
        under(&self.entries, prefix)
            .map(|(key, slot)| slot.entry(key))
            .collect()
    }

    /// Consul's `KVSKeys`: with a non-empty separator, each key is cut just
    /// after the first separator that follows the prefix.
    pub(crate) fn keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let separator = separator.filter(|s| !s.is_empty());
        let mut keys: Vec<String> = Vec::new();
        for (key, _) in under(&self.entries, prefix) {
            let key: &str = key;
            let rolled = match separator {
                Some(sep) => match key[prefix.len()..].find(sep) {
                    Some(at) => &key[..prefix.len() + at + sep.len()],
                    None => key,
                },
                None => key,
            };
            // Keys sharing a rolled-up prefix are adjacent in key order, so
            // comparing with the last one is enough to deduplicate.
            if keys.last().map(String::as_str) != Some(rolled) {
                debug_assert!(keys.last().is_none_or(|last| last.as_str() < rolled));
                keys.push(rolled.to_owned());
            }
        }
        keys
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn index_for_prefix(&self, prefix: &str) -> u64 {
        if prefix.is_empty() {
            // Consul uses the table index for a read of everything.
            return self.index;
        }
        match self.newest_under(prefix) {
            Some(at) if at > 0 => at,
            _ => self.index,
        }
    }

    /// The highest modify index among the entries and tombstones under
    /// `prefix`, if there are any.
    fn newest_under(&self, prefix: &str) -> Option<u64> {
        let live = under(&self.entries, prefix).map(|(_, s)| s.modify_index);
        let dead = under(&self.tombstones, prefix).map(|(_, at)| *at);
        live.chain(dead).max()
    }

    pub(crate) fn index_for_key(&self, key: &str) -> u64 {
        self.modify_index_of(key).unwrap_or(self.index)
    }

    /// The last change to `key` itself: its entry's modify index, else its
    /// tombstone's index, else 0.
    pub(crate) fn change_index_for_key(&self, key: &str) -> u64 {
        match self.modify_index_of(key) {
            Some(at) => at,
            None => self.tombstones.get(key).copied().unwrap_or(0),
        }
    }

    /// The last change under `prefix`: the highest modify index among its
    /// entries and tombstones, 0 if there are none; the table index for the
    /// empty prefix (everything is under it).
    pub(crate) fn change_index_for_prefix(&self, prefix: &str) -> u64 {
        if prefix.is_empty() {
            return self.index;
        }
        self.newest_under(prefix).unwrap_or(0)
    }

    pub(crate) fn hash(&self) -> u64 {
        ItemHasher::new("kv.table")
            .u64(self.index)
            .u64(self.content_hash)
            .finish()
    }

    pub(crate) fn to_snapshot(&self) -> KvSnapshotRef<'_> {
        KvSnapshotRef {
            index: self.index,
            entries: Rows::new(self.entries.len(), || {
                self.entries.iter().map(|(key, s)| EntryRef {
                    key,
                    flags: s.flags,
                    value: &s.value,
                    create_index: s.create_index,
                    modify_index: s.modify_index,
                    lock_index: s.lock_index,
                })
            }),
            tombstones: Rows::new(self.tombstones.len(), || {
                self.tombstones
                    .iter()
                    .map(|(key, &index)| TombstoneRef { key, index })
            }),
        }
    }

    /// About how many bytes the table's snapshot takes: every key and
    /// value's length plus room for a row's integers. Sizes the buffer a
    /// snapshot is encoded into, so it is not regrown and copied on the
    /// way. Kept as the table changes: O(1), not a walk of every row.
    pub(crate) fn snapshot_bytes_guess(&self) -> usize {
        self.snapshot_bytes
    }

    /// [`Self::snapshot_bytes_guess`] the slow way, row by row: what the
    /// kept sum must always equal.
    #[cfg(test)]
    fn snapshot_bytes_by_walk(&self) -> usize {
        let entries: usize = self.entries.iter().map(|(k, s)| entry_bytes(k, s)).sum();
        let tombstones: usize = self.tombstones.keys().map(|k| tombstone_bytes(k)).sum();
        entries + tombstones
    }

    /// How many entries the table holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Rebuilds the table from a decoded snapshot, checking every invariant
    /// that `apply` keeps. `last_applied` bounds every index.
    pub(crate) fn from_snapshot(snap: KvSnapshot, last_applied: u64) -> Result<KvTable, FsmError> {
        if snap.index > last_applied {
            return Err(FsmError::KvIndexBeyondLastApplied {
                kv_index: snap.index,
                last_applied,
            });
        }
        let mut table = KvTable {
            index: snap.index,
            ..KvTable::default()
        };
        for record in snap.entries {
            let EntryRecord {
                key,
                flags,
                value,
                create_index,
                modify_index,
                lock_index,
            } = record;
            if table
                .entries
                .get_max()
                .is_some_and(|(last, _)| **last >= *key)
            {
                return Err(FsmError::KvKeysUnordered { key });
            }
            let indexes_ok =
                0 < create_index && create_index <= modify_index && modify_index <= snap.index;
            if !indexes_ok {
                return Err(FsmError::KvEntryIndexes { key });
            }
            let mut slot = Slot::new(&key, flags, value, create_index, modify_index);
            slot.lock_index = lock_index;
            slot.rehash(&key);
            table.content_hash = table.content_hash.wrapping_add(slot.hash);
            table.snapshot_bytes += entry_bytes(&key, &slot);
            table.entries.insert(Arc::from(key), Arc::new(slot));
        }
        for TombstoneRecord { key, index } in snap.tombstones {
            if table
                .tombstones
                .get_max()
                .is_some_and(|(last, _)| **last >= *key)
            {
                return Err(FsmError::KvTombstonesUnordered { key });
            }
            if index == 0 || index > snap.index || table.entries.contains_key(key.as_str()) {
                return Err(FsmError::KvTombstoneInvalid { key });
            }
            table.content_hash = table.content_hash.wrapping_add(tombstone_hash(&key, index));
            table.snapshot_bytes += tombstone_bytes(&key);
            table.tombstones.insert(Arc::from(key), index);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    //! KV semantics, driven through `Fsm` as a caller would. Mirrors
    //! Consul's `state/kvs_test.go` (`TestStateStore_KVSSet_KVSGet`,
    //! `KVSSetCAS`, `KVSDeleteCAS`, `KVSDeleteTree`, `KVSListKeys`).

    use crate::fsm::{ApplyResult, Command, Fsm, KvCommand, KvWrite};

    fn write(key: &str, flags: u64, value: &str) -> KvWrite {
        KvWrite {
            key: key.to_owned(),
            flags,
            value: value.as_bytes().to_vec().into(),
        }
    }

    fn set(fsm: &mut Fsm, index: u64, key: &str, value: &str) -> bool {
        run(fsm, index, KvCommand::Set(write(key, 0, value)))
    }

    fn run(fsm: &mut Fsm, index: u64, cmd: KvCommand) -> bool {
        let ApplyResult::Kv(ok) = fsm.apply(index, &Command::Kv(cmd)) else {
            panic!("a KV command gives a KV result");
        };
        ok
    }

    fn cas(fsm: &mut Fsm, index: u64, key: &str, value: &str, modify_index: u64) -> bool {
        run(
            fsm,
            index,
            KvCommand::Cas {
                write: write(key, 0, value),
                modify_index,
            },
        )
    }

    fn delete(fsm: &mut Fsm, index: u64, key: &str) -> bool {
        run(
            fsm,
            index,
            KvCommand::Delete {
                key: key.to_owned(),
            },
        )
    }

    fn delete_cas(fsm: &mut Fsm, index: u64, key: &str, modify_index: u64) -> bool {
        run(
            fsm,
            index,
            KvCommand::DeleteCas {
                key: key.to_owned(),
                modify_index,
            },
        )
    }

    fn delete_tree(fsm: &mut Fsm, index: u64, prefix: &str) -> bool {
        run(
            fsm,
            index,
            KvCommand::DeleteTree {
                prefix: prefix.to_owned(),
            },
        )
    }

    fn reap(fsm: &mut Fsm, index: u64, upto: u64) {
        let ApplyResult::Kv(ok) = fsm.apply(index, &Command::TombstoneReap { upto }) else {
            panic!("a reap gives a KV result");
        };
        assert!(ok, "a reap always holds");
    }

    fn keys(fsm: &Fsm, prefix: &str, sep: Option<&str>) -> Vec<String> {
        fsm.kv_keys(prefix, sep)
    }

    fn value(fsm: &Fsm, key: &str) -> Option<String> {
        fsm.kv_get(key)
            .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
    }

    #[test]
    fn set_creates_then_updates_keeping_create_index() {
        let mut fsm = Fsm::new();
        assert!(run(&mut fsm, 3, KvCommand::Set(write("k", 42, "one"))));
        let e = fsm.kv_get("k").unwrap();
        assert_eq!((e.flags, e.value.as_slice()), (42, &b"one"[..]));
        assert_eq!((e.create_index, e.modify_index, e.lock_index), (3, 3, 0));

        // An update replaces flags and value, keeps the create index.
        assert!(run(&mut fsm, 5, KvCommand::Set(write("k", 7, "two"))));
        let e = fsm.kv_get("k").unwrap();
        assert_eq!((e.flags, e.value.as_slice()), (7, &b"two"[..]));
        assert_eq!((e.create_index, e.modify_index, e.lock_index), (3, 5, 0));
        assert_eq!((fsm.kv_index(), fsm.last_applied()), (5, 5));
    }

    #[test]
    fn cas_zero_creates_only() {
        let mut fsm = Fsm::new();
        assert!(cas(&mut fsm, 1, "k", "first", 0));
        assert_eq!(value(&fsm, "k").as_deref(), Some("first"));

        // The key now exists, so a create-only CAS fails and changes nothing.
        assert!(!cas(&mut fsm, 2, "k", "second", 0));
        assert_eq!(value(&fsm, "k").as_deref(), Some("first"));
        assert_eq!(fsm.kv_get("k").unwrap().modify_index, 1);
        assert_eq!((fsm.kv_index(), fsm.last_applied()), (1, 2));
    }

    #[test]
    fn cas_needs_the_current_modify_index() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "k", "a");
        set(&mut fsm, 2, "k", "b");

        // A stale index fails and changes nothing but last_applied.
        let before = fsm.kv_get("k");
        assert!(!cas(&mut fsm, 3, "k", "c", 1));
        assert_eq!(fsm.kv_get("k"), before);
        assert_eq!((fsm.kv_index(), fsm.last_applied()), (2, 3));

        // The current index succeeds.
        assert!(cas(&mut fsm, 4, "k", "c", 2));
        let e = fsm.kv_get("k").unwrap();
        assert_eq!((e.create_index, e.modify_index), (1, 4));
        assert_eq!(value(&fsm, "k").as_deref(), Some("c"));

        // A non-zero index on a missing key fails.
        assert!(!cas(&mut fsm, 5, "missing", "x", 4));
        assert_eq!(fsm.kv_get("missing"), None);
        assert_eq!(fsm.kv_index(), 4);
    }

    #[test]
    fn delete_removes_and_missing_delete_changes_no_index() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "k", "v");
        assert!(delete(&mut fsm, 2, "k"));
        assert_eq!(fsm.kv_get("k"), None);
        assert_eq!(fsm.kv_index(), 2);

        // Deleting what is not there succeeds and moves no table index.
        assert!(delete(&mut fsm, 3, "k"));
        assert_eq!((fsm.kv_index(), fsm.last_applied()), (2, 3));
    }

    #[test]
    fn delete_cas_semantics() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "k", "v");
        set(&mut fsm, 2, "k", "w");

        // Wrong index, and 0 while present: refused, nothing changes.
        assert!(!delete_cas(&mut fsm, 3, "k", 1));
        assert!(!delete_cas(&mut fsm, 4, "k", 0));
        assert_eq!(fsm.kv_get("k").unwrap().modify_index, 2);
        assert_eq!(fsm.kv_index(), 2);

        // The current index deletes.
        assert!(delete_cas(&mut fsm, 5, "k", 2));
        assert_eq!(fsm.kv_get("k"), None);
        assert_eq!(fsm.kv_index(), 5);

        // Absent, whatever the index: holds and deletes nothing (Consul's
        // `kvsDeleteCASTxn` answers `entry == nil`).
        assert!(delete_cas(&mut fsm, 6, "k", 0));
        assert!(delete_cas(&mut fsm, 7, "k", 2));
        assert_eq!((fsm.kv_index(), fsm.last_applied()), (5, 7));
    }

    /// Consul's `kvsSetTxn` skips an entry equal to the stored one
    /// (agent/consul/state/kvs.go, `existing.Equal(entry)`): an identical
    /// re-PUT keeps the modify index and moves no table index; a change of
    /// flags or value is a write as before, and so is a CAS at the current
    /// index with the same value (it holds, and changes nothing).
    #[test]
    fn an_identical_put_changes_no_index() {
        let mut fsm = Fsm::new();
        assert!(run(&mut fsm, 3, KvCommand::Set(write("k", 7, "v"))));
        assert!(run(&mut fsm, 4, KvCommand::Set(write("k", 7, "v"))));
        let e = fsm.kv_get("k").unwrap();
        assert_eq!((e.create_index, e.modify_index), (3, 3));
        assert_eq!((fsm.kv_index(), fsm.last_applied()), (3, 4));
        assert!(run(
            &mut fsm,
            5,
            KvCommand::Cas {
                write: write("k", 7, "v"),
                modify_index: 3
            }
        ));
        assert_eq!(fsm.kv_get("k").unwrap().modify_index, 3);
        assert_eq!(fsm.kv_index(), 3);
        assert!(run(&mut fsm, 6, KvCommand::Set(write("k", 8, "v"))));
        assert_eq!(fsm.kv_get("k").unwrap().modify_index, 6);
        assert!(run(&mut fsm, 7, KvCommand::Set(write("k", 8, "w"))));
        assert_eq!(fsm.kv_get("k").unwrap().modify_index, 7);
        assert_eq!(fsm.kv_index(), 7);
    }

    #[test]
    fn delete_tree_removes_the_prefix_only() {
        let mut fsm = Fsm::new();
        for (i, k) in ["a", "a/b", "a/b/c", "ab", "b/x"].iter().enumerate() {
            set(&mut fsm, i as u64 + 1, k, "v");
        }
        assert!(delete_tree(&mut fsm, 10, "a/"));
        assert_eq!(keys(&fsm, "", None), ["a", "ab", "b/x"]);
        assert_eq!(fsm.kv_index(), 10);

        // A prefix that matches nothing succeeds and moves no index.
        assert!(delete_tree(&mut fsm, 11, "zzz"));
        assert_eq!(fsm.kv_index(), 10);

        // A plain-string prefix: "a" also covers "ab".
        assert!(delete_tree(&mut fsm, 12, "a"));
        assert_eq!(keys(&fsm, "", None), ["b/x"]);
    }

    #[test]
    fn delete_tree_with_the_empty_prefix_deletes_everything() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "a", "v");
        set(&mut fsm, 2, "z/y", "v");
        assert!(delete_tree(&mut fsm, 3, ""));
        assert!(fsm.kv_list("").is_empty());
        assert_eq!(fsm.kv_index(), 3);
    }

    #[test]
    fn list_is_sorted_and_prefix_bounded() {
        let mut fsm = Fsm::new();
        for (i, k) in ["b", "a/2", "a/1", "a", "c"].iter().enumerate() {
            set(&mut fsm, i as u64 + 1, k, k);
        }
        let listed: Vec<String> = fsm.kv_list("a").into_iter().map(|e| e.key).collect();
        assert_eq!(listed, ["a", "a/1", "a/2"]);
        let listed: Vec<String> = fsm.kv_list("a/").into_iter().map(|e| e.key).collect();
        assert_eq!(listed, ["a/1", "a/2"]);
        assert_eq!(fsm.kv_list("").len(), 5);
        assert!(fsm.kv_list("d").is_empty());
    }

    #[test]
    fn keys_with_and_without_separator() {
        let mut fsm = Fsm::new();
        let all = ["a/b/c", "a/b/d", "a/b/e/f", "a/c", "a/d/", "a/e", "b"];
        for (i, k) in all.iter().enumerate() {
            set(&mut fsm, i as u64 + 1, k, "v");
        }
        // Without a separator: every key under the prefix.
        assert_eq!(keys(&fsm, "", None), all);
        assert_eq!(keys(&fsm, "a/b/", None), ["a/b/c", "a/b/d", "a/b/e/f"]);
        // An empty separator is no separator.
        assert_eq!(keys(&fsm, "a/b/", Some("")), ["a/b/c", "a/b/d", "a/b/e/f"]);

        // Rolled up to the first separator after the prefix, deduplicated.
        assert_eq!(keys(&fsm, "a/", Some("/")), ["a/b/", "a/c", "a/d/", "a/e"]);
        assert_eq!(keys(&fsm, "", Some("/")), ["a/", "b"]);
        assert_eq!(keys(&fsm, "a/b/", Some("/")), ["a/b/c", "a/b/d", "a/b/e/"]);
        // A prefix that ends mid-segment.
        assert_eq!(keys(&fsm, "a/b", Some("/")), ["a/b/"]);
        // A multi-character separator.
        set(&mut fsm, 20, "x--y--z", "v");
        set(&mut fsm, 21, "x--y--w", "v");
        assert_eq!(keys(&fsm, "x", Some("--")), ["x--"]);
        assert_eq!(keys(&fsm, "x--", Some("--")), ["x--y--"]);
        assert!(keys(&fsm, "q", Some("/")).is_empty());
    }

    #[test]
    fn indexes_move_on_delete() {
        let mut fsm = Fsm::new();
        assert_eq!((fsm.kv_index(), fsm.kv_index_for_prefix("a/")), (0, 0));
        set(&mut fsm, 1, "a/x", "v");
        set(&mut fsm, 2, "a/y", "v");
        set(&mut fsm, 3, "b/z", "v");
        assert_eq!(fsm.kv_index_for_prefix("a/"), 2);
        assert_eq!(fsm.kv_index_for_prefix("b/"), 3);
        assert_eq!(fsm.kv_index_for_prefix(""), 3);

        // Deleting the newest key under a/ must not make a/'s index go back.
        delete(&mut fsm, 4, "a/y");
        assert_eq!(fsm.kv_index(), 4);
        assert_eq!(fsm.kv_index_for_prefix("a/"), 4);
        assert_eq!(fsm.kv_index_for_prefix("a/y"), 4);
        assert_eq!(fsm.kv_index_for_prefix("b/"), 3);

        // A tree delete is seen from a deeper prefix too.
        set(&mut fsm, 5, "c/d/e", "v");
        set(&mut fsm, 6, "b/q", "v");
        delete_tree(&mut fsm, 7, "c/");
        assert_eq!(fsm.kv_index_for_prefix("c/d/"), 7);
        assert_eq!(fsm.kv_index_for_prefix("b/"), 6);

        // Nothing matched, ever: the table index.
        assert_eq!(fsm.kv_index_for_prefix("nothing/"), 7);

        // A reap forgets tombstones; the prefix falls back to what is left.
        reap(&mut fsm, 8, 4);
        assert_eq!(fsm.kv_index_for_prefix("a/"), 1);
        assert_eq!(fsm.kv_index_for_prefix("c/"), 7);
        reap(&mut fsm, 9, 7);
        assert_eq!(fsm.kv_index_for_prefix("c/"), 7, "falls back to kv_index");
        assert_eq!(fsm.kv_index(), 7);
    }

    #[test]
    fn the_empty_prefix_reads_the_table_index() {
        // As Consul: a read of everything reports the table index, even once
        // the tombstone that moved it is pruned.
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "a", "v");
        set(&mut fsm, 2, "b", "v");
        delete(&mut fsm, 3, "b");
        reap(&mut fsm, 4, 3);
        assert_eq!(fsm.kv_index_for_prefix(""), 3);
        assert_eq!(fsm.kv_index_for_prefix("a"), 1);
    }

    #[test]
    fn a_reap_removes_tombstones_up_to_its_index_and_no_further() {
        // Consul's TestStateStore_ReapTombstones (state/kvs_test.go).
        let mut fsm = Fsm::new();
        for (i, k) in ["foo/a", "foo/bar", "foo/baz", "foo/moo", "foo/zoo"]
            .iter()
            .enumerate()
        {
            set(&mut fsm, i as u64 + 1, k, "v");
        }
        delete(&mut fsm, 6, "foo/baz");
        delete(&mut fsm, 7, "foo/moo");
        delete_cas(&mut fsm, 8, "foo/bar", 2);
        delete_tree(&mut fsm, 9, "foo/z");
        assert_eq!(fsm.tombstone_count(), 4);
        assert!(fsm.has_tombstones_upto(6) && !fsm.has_tombstones_upto(5));

        // Tombstones at or below 7 go; those of 8 and 9 (created after the
        // reap's index) survive, and the prefix still reports the newest.
        reap(&mut fsm, 10, 7);
        assert_eq!(fsm.tombstone_count(), 2);
        assert!(!fsm.has_tombstones_upto(7) && fsm.has_tombstones_upto(8));
        assert_eq!(fsm.kv_index_for_prefix("foo/"), 9);
        assert_eq!(fsm.kv_index_for_prefix("foo/m"), 9, "table index");

        // A reap moves no table index, only last_applied (Consul's
        // Graveyard.ReapTxn touches no index), and reaping again is a no-op.
        assert_eq!((fsm.kv_index(), fsm.last_applied()), (9, 10));
        let before = fsm.clone();
        reap(&mut fsm, 11, 7);
        assert_eq!(fsm.tombstone_count(), 2);
        assert_eq!(fsm.kv_list("foo/"), before.kv_list("foo/"));

        // A later reap with a higher index sweeps every older tombstone.
        reap(&mut fsm, 12, 100);
        assert_eq!(fsm.tombstone_count(), 0);
        assert_eq!(keys(&fsm, "", None), ["foo/a"]);
    }

    #[test]
    fn after_a_reap_an_emptied_prefix_keeps_an_index_at_least_its_delete() {
        // A client that saw a delete's index on a prefix that is now empty
        // never sees that prefix's index go below it: with no entry and no
        // tombstone left, the read reports the table index, which a reap
        // does not move and which is at least every delete's index.
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "gone/a", "v");
        set(&mut fsm, 2, "gone/b", "v");
        set(&mut fsm, 3, "other", "v");
        delete_tree(&mut fsm, 4, "gone/");
        let seen = fsm.kv_index_for_prefix("gone/");
        assert_eq!(seen, 4);
        for (i, upto) in [(5, 3), (6, 4), (7, 6)] {
            reap(&mut fsm, i, upto);
            assert!(fsm.kv_index_for_prefix("gone/") >= seen, "reap at {i}");
            assert!(fsm.kv_index_for_key("gone/a") >= seen, "reap at {i}");
        }
        assert_eq!(fsm.tombstone_count(), 0);
        assert_eq!(fsm.kv_index_for_prefix("gone/"), 4);
    }

    #[test]
    fn after_a_reap_a_prefix_with_live_keys_slides_back_to_its_newest_entry() {
        // As Consul ("At this point the sub index will slide backwards",
        // TestStateStore_ReapTombstones): once the tombstone is reaped, a
        // prefix that still has entries reports the newest of them. Consul's
        // blocking-query docs tell clients to reset an index that goes
        // backwards; the server keeps such a query parked (see
        // core/tests/cluster.rs) until the prefix really changes, at an
        // index above anything the client saw.
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "p/live", "v");
        set(&mut fsm, 2, "p/dead", "v");
        delete(&mut fsm, 3, "p/dead");
        assert_eq!(fsm.kv_index_for_prefix("p/"), 3);
        reap(&mut fsm, 4, 3);
        assert_eq!(fsm.kv_index_for_prefix("p/"), 1);
        set(&mut fsm, 5, "p/new", "v");
        assert_eq!(fsm.kv_index_for_prefix("p/"), 5);
    }

    #[test]
    fn deletes_that_remove_something_leave_tombstones_and_say_so() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "a/1", "v");
        set(&mut fsm, 2, "a/2", "v");
        let cases: [(u64, KvCommand, bool); 6] = [
            (3, KvCommand::Delete { key: "a/1".into() }, true),
            (4, KvCommand::Delete { key: "a/1".into() }, false),
            (
                5,
                KvCommand::DeleteCas {
                    key: "a/2".into(),
                    modify_index: 1,
                },
                false,
            ),
            (
                6,
                KvCommand::DeleteCas {
                    key: "a/2".into(),
                    modify_index: 2,
                },
                true,
            ),
            (
                7,
                KvCommand::DeleteTree {
                    prefix: "a/".into(),
                },
                false,
            ),
            (8, KvCommand::Set(write("a/3", 0, "v")), false),
        ];
        for (index, cmd, left) in cases {
            let cmd = Command::Kv(cmd);
            fsm.apply(index, &cmd);
            assert_eq!(fsm.left_tombstones(index, &cmd), left, "{cmd:?}");
        }
        let tree = Command::Kv(KvCommand::DeleteTree {
            prefix: "a/".into(),
        });
        fsm.apply(9, &tree);
        assert!(fsm.left_tombstones(9, &tree));
        assert_eq!(fsm.tombstone_count(), 3);
    }

    #[test]
    fn index_for_key_is_the_modify_index_or_the_table_index() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "a", "v");
        set(&mut fsm, 2, "a/b", "v");
        assert_eq!(fsm.kv_index_for_key("a"), 1);
        assert_eq!(fsm.kv_index_for_key("missing"), 2);
    }

    #[test]
    fn change_indexes_see_only_their_key_or_prefix() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "a/x", "v");
        set(&mut fsm, 2, "b", "v");
        assert_eq!(fsm.kv_change_index_for_key("a/x"), 1);
        assert_eq!(fsm.kv_change_index_for_key("missing"), 0);
        assert_eq!(fsm.kv_change_index_for_prefix("a/"), 1);
        assert_eq!(fsm.kv_change_index_for_prefix("c/"), 0);
        assert_eq!(fsm.kv_change_index_for_prefix(""), 2);
        // A delete is a change of the key and of every prefix above it.
        delete(&mut fsm, 3, "a/x");
        set(&mut fsm, 4, "b", "w");
        assert_eq!(fsm.kv_change_index_for_key("a/x"), 3);
        assert_eq!(fsm.kv_change_index_for_prefix("a/"), 3);
        assert_eq!(fsm.kv_change_index_for_prefix(""), 4);
        // The read indexes are never below the change indexes.
        for key in ["a/x", "b", "missing"] {
            assert!(fsm.kv_index_for_key(key) >= fsm.kv_change_index_for_key(key));
        }
        for prefix in ["a/", "b", "c/", ""] {
            assert!(fsm.kv_index_for_prefix(prefix) >= fsm.kv_change_index_for_prefix(prefix));
        }
    }

    #[test]
    fn recreating_a_key_drops_its_tombstone() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "k", "v");
        delete(&mut fsm, 2, "k");
        set(&mut fsm, 3, "k", "v");
        let e = fsm.kv_get("k").unwrap();
        assert_eq!((e.create_index, e.modify_index), (3, 3));

        // The same contents reached with no delete in between.
        let mut other = Fsm::new();
        other.apply_other(1);
        other.apply_other(2);
        set(&mut other, 3, "k", "v");
        assert_eq!(fsm, other);
        assert_eq!(fsm.state_hash(), other.state_hash());
    }

    /// After a view (a clone of the table), changing one key copies tree
    /// nodes, not values: every other slot is still the very same
    /// allocation in both, and the view keeps the old value of the key that
    /// changed.
    #[test]
    fn a_change_after_a_view_shares_every_untouched_value() {
        use std::sync::Arc;

        let mut fsm = Fsm::new();
        let big = vec![7u8; 64 << 10];
        let keys: Vec<String> = (0..300).map(|i| format!("k{i:03}")).collect();
        for (i, k) in keys.iter().enumerate() {
            run(
                &mut fsm,
                i as u64 + 1,
                KvCommand::Set(KvWrite {
                    key: k.clone(),
                    flags: 0,
                    value: big.clone().into(),
                }),
            );
        }
        let view = fsm.kv.clone();
        set(&mut fsm, 301, "k150", "small");
        delete(&mut fsm, 302, "k151");

        assert!(!view.entries.ptr_eq(&fsm.kv.entries), "the live tree moved");
        let mut shared = 0;
        for (key, old) in view.entries.iter() {
            let Some(new) = fsm.kv.entries.get(key) else {
                assert_eq!(&**key, "k151", "only the deleted key is gone");
                continue;
            };
            if &**key == "k150" {
                assert_eq!(old.value, big, "the view keeps the old value");
                assert_eq!(new.value, b"small");
                continue;
            }
            assert!(Arc::ptr_eq(old, new), "{key} was copied");
            shared += 1;
        }
        assert_eq!(shared, 298);
        assert_eq!(fsm.kv.get("k151"), None);
        assert!(view.get("k151").is_some());
    }

    /// With no view holding it, an update rewrites the slot in place (no
    /// new allocation on the hot path); with one, it makes a new slot.
    #[test]
    fn an_update_rewrites_the_slot_in_place_unless_a_view_holds_it() {
        use std::sync::Arc;

        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "k", "one");
        let before = Arc::as_ptr(fsm.kv.entries.get("k").unwrap());
        set(&mut fsm, 2, "k", "two");
        assert_eq!(Arc::as_ptr(fsm.kv.entries.get("k").unwrap()), before);

        let view = fsm.view();
        set(&mut fsm, 3, "k", "three");
        assert_ne!(Arc::as_ptr(fsm.kv.entries.get("k").unwrap()), before);
        assert_eq!(value(&fsm, "k").as_deref(), Some("three"));
        let e = fsm.kv_get("k").unwrap();
        assert_eq!((e.create_index, e.modify_index), (1, 3));
        assert_eq!(view.kv.get("k").unwrap().value, b"two");
    }

    /// The snapshot size the table keeps as it changes equals a walk of
    /// every row, and the locks read from the lock index are the entries'
    /// own, in key order, through every kind of change (with and without a
    /// view holding the old rows) and a restore from a snapshot.
    #[test]
    fn the_kept_snapshot_size_and_lock_list_match_a_walk_of_the_rows() {
        use super::{EntryRecord, KvSnapshot, KvTable, TombstoneRecord};

        fn walked_locks(t: &KvTable) -> Vec<(String, String)> {
            t.entries
                .iter()
                .filter_map(|(k, s)| s.session.as_deref().map(|s| (k.to_string(), s.to_owned())))
                .collect()
        }
        fn check(t: &KvTable, step: usize) {
            assert_eq!(
                t.snapshot_bytes_guess(),
                t.snapshot_bytes_by_walk(),
                "step {step}"
            );
            let kept: Vec<(String, String)> = t
                .lock_records()
                .into_iter()
                .map(|(k, s)| (k.to_owned(), s.to_owned()))
                .collect();
            assert_eq!(kept, walked_locks(t), "step {step}");
        }

        let mut t = KvTable::default();
        let mut views = Vec::new();
        // A fixed xorshift: the same sequence every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let sessions = ["s1", "s2", "s3"];
        for step in 0..4000usize {
            let index = step as u64 + 1;
            let key = format!("k/{}/{}", next(4), next(40));
            let value = "v".repeat(next(300) as usize);
            let w = write(&key, next(3), &value);
            let session = sessions[next(3) as usize];
            match next(12) {
                0..=3 => {
                    t.apply(index, &KvCommand::Set(w));
                }
                4 => {
                    let modify_index = next(index);
                    t.apply(
                        index,
                        &KvCommand::Cas {
                            write: w,
                            modify_index,
                        },
                    );
                }
                5 => {
                    t.apply(index, &KvCommand::Delete { key });
                }
                6 => {
                    let prefix = format!("k/{}/", next(4));
                    t.apply(index, &KvCommand::DeleteTree { prefix });
                }
                7 => {
                    let session = session.to_owned();
                    t.apply(index, &KvCommand::Lock { write: w, session });
                }
                8 => {
                    let session = session.to_owned();
                    t.apply(index, &KvCommand::Unlock { write: w, session });
                }
                9 => {
                    t.release_session(index, session, next(2) == 0);
                }
                10 => t.prune_tombstones(next(index)),
                _ => {
                    // Hold a view across the next changes, or let one go.
                    if next(2) == 0 {
                        views.push(t.clone());
                    } else {
                        views.pop();
                    }
                }
            }
            check(&t, step);
        }
        assert!(!t.lock_records().is_empty(), "the sequence left some locks");
        assert!(t.tombstone_count() > 0, "and some tombstones");
        for (i, v) in views.iter().enumerate() {
            check(v, 10_000 + i);
        }

        // A table restored from a snapshot counts from scratch and agrees.
        let snap = KvSnapshot {
            index: t.index(),
            entries: t
                .entries
                .iter()
                .map(|(k, s)| EntryRecord {
                    key: k.to_string(),
                    flags: s.flags,
                    value: s.value.clone(),
                    create_index: s.create_index,
                    modify_index: s.modify_index,
                    lock_index: s.lock_index,
                })
                .collect(),
            tombstones: t
                .tombstones
                .iter()
                .map(|(k, &index)| TombstoneRecord {
                    key: k.to_string(),
                    index,
                })
                .collect(),
        };
        let restored = KvTable::from_snapshot(snap, t.index()).unwrap();
        assert_eq!(restored.snapshot_bytes_guess(), t.snapshot_bytes_guess());
    }

    #[test]
    #[should_panic(expected = "last applied")]
    fn applying_out_of_order_is_a_broken_invariant() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 2, "k", "v");
        fsm.apply_other(2);
    }
}
