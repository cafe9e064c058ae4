//! A point-in-time view of the replicated state, for a server's own
//! snapshot.
//!
//! Taking one is O(1): the tables are persistent maps (see `kv.rs`), so a
//! view shares every node with the live state, and the live state copies
//! only the nodes a later change touches. The view is `Send`, so a driver
//! encodes it off the agent task (`Action::BuildSnapshot`) while the server
//! keeps applying entries; what it encodes is the state at the moment the
//! view was taken, byte for byte what `Fsm::snapshot` gave then.

use std::fmt;

use super::catalog::CatalogTable;
use super::kv::KvTable;
use super::snapshot::{self, SnapshotRef};

/// The whole replicated state as of one applied index, frozen.
#[derive(Clone, PartialEq, Eq)]
pub struct FsmView {
    pub(super) last_applied: u64,
    pub(super) kv: KvTable,
    pub(super) autopilot: Option<super::StoredAutopilot>,
    /// Boxed: the catalog's maps make it the view's largest part, and a
    /// view travels inside actions and driver messages.
    pub(super) catalog: Box<CatalogTable>,
    pub(super) index_offset: u64,
    /// Boxed: rarely there, and a view travels inside actions.
    pub(super) restore: Option<Box<super::restore::PendingRestore>>,
    /// Boxed, as the catalog: a view travels inside actions.
    pub(super) sessions: Box<super::session::SessionTable>,
}

impl FsmView {
    /// The Raft index of the last entry applied when the view was taken.
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// The index of the last applied entry as the tables count it (see
    /// `Fsm::index`): what a snapshot of this view says it is at.
    pub fn index(&self) -> u64 {
        self.last_applied + self.index_offset
    }

    /// The snapshot encoding of the state in view (the format
    /// `Fsm::restore` reads). Takes time in proportion to the state's size:
    /// a driver runs it off the agent task.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_inner(None)
    }

    /// [`encode`](Self::encode), the same bytes, calling `pause` each time
    /// another `every` bytes are encoded: where a driver encoding on a
    /// thread of its own lets the threads that serve requests have the CPU
    /// (the daemon yields it; the core decides nothing by it).
    pub fn encode_pausing(&self, every: usize, pause: &mut dyn FnMut()) -> Vec<u8> {
        self.encode_inner(Some((every, pause)))
    }

    fn encode_inner(&self, pause: Option<(usize, &mut dyn FnMut())>) -> Vec<u8> {
        // Only a hint: clamped, so that a miscount could cost a regrowth
        // but never an allocation the size of the address space.
        let capacity = self.kv.snapshot_bytes_guess().min(1 << 30) + 4096;
        snapshot::encode(
            &SnapshotRef {
                last_applied: self.last_applied,
                kv: self.kv.to_snapshot(),
                autopilot: self.autopilot.as_ref(),
                catalog: self.catalog.to_snapshot(),
                index_offset: self.index_offset,
                restore: self.restore.as_ref().map(|p| super::snapshot::RestoreRef {
                    id: p.id,
                    total: p.total,
                    chunks: p
                        .chunks
                        .iter()
                        .map(|c| serde_bytes::Bytes::new(c))
                        .collect(),
                }),
                sessions: self.sessions.to_snapshot(),
                locks: self
                    .kv
                    .lock_records()
                    .into_iter()
                    .map(|(key, session)| snapshot::LockRef { key, session })
                    .collect(),
            },
            capacity,
            pause,
        )
    }
}

impl fmt::Debug for FsmView {
    /// A summary: the whole state would drown an action list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsmView")
            .field("last_applied", &self.last_applied)
            .field("kv_index", &self.kv.index())
            .field("kv_entries", &self.kv.len())
            .field("kv_tombstones", &self.kv.tombstone_count())
            .field("catalog", &self.catalog.counts())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::fsm::tests::set;
    use crate::fsm::{Command, Fsm, KvCommand};

    /// Every kind of change made after a view is taken leaves the view's
    /// encoding, and the state it restores to, as they were.
    #[test]
    fn a_view_is_the_state_at_the_moment_it_was_taken() {
        let mut fsm = Fsm::new();
        for (i, k) in ["a", "b/1", "b/2", "c", "gone"].iter().enumerate() {
            set(&mut fsm, i as u64 + 1, k, k.as_bytes());
        }
        let delete = |key: &str| {
            Command::Kv(KvCommand::Delete {
                key: key.to_owned(),
            })
        };
        fsm.apply(6, &delete("gone"));
        let then = fsm.clone();
        let bytes = fsm.snapshot();
        let view = fsm.view();
        assert_eq!(view.last_applied(), 6);
        assert_eq!(view.encode(), bytes);

        // Update, create, delete, delete a tree, reap, a non-command entry.
        set(&mut fsm, 7, "a", b"changed");
        set(&mut fsm, 8, "new", b"new");
        fsm.apply(9, &delete("c"));
        let tree = KvCommand::DeleteTree {
            prefix: "b/".to_owned(),
        };
        fsm.apply(10, &Command::Kv(tree));
        fsm.apply(11, &Command::TombstoneReap { upto: 9 });
        fsm.apply_other(12);

        assert_ne!(fsm.snapshot(), bytes, "the live state moved on");
        assert_eq!(view.encode(), bytes, "the view did not");
        assert_eq!(Fsm::restore(&view.encode()).unwrap(), then);
        // A clone of the view is the same view.
        assert_eq!(view.clone(), view);
        assert_ne!(fsm.view(), view);
    }

    /// A pausing encode gives the same bytes, and pauses once each time
    /// another `every` bytes are out (never with nothing encoded since).
    #[test]
    fn a_pausing_encode_is_the_same_bytes_with_a_pause_per_stretch() {
        let mut fsm = Fsm::new();
        for i in 0..2_000u64 {
            set(&mut fsm, i + 1, &format!("key/{i:05}"), &[7u8; 100]);
        }
        let view = fsm.view();
        let plain = view.encode();
        let mut pauses = 0usize;
        let paused = view.encode_pausing(4096, &mut || pauses += 1);
        assert_eq!(paused, plain);
        // Rows are ~120 bytes, each written in pieces smaller than 4096:
        // every multiple of 4096 is passed by a piece of its own.
        assert_eq!(pauses, plain.len() / 4096, "over {} bytes", plain.len());
        // A stretch longer than the whole snapshot: no pause.
        let mut none = 0usize;
        assert_eq!(view.encode_pausing(1 << 30, &mut || none += 1), plain);
        assert_eq!(none, 0);
    }

    /// The golden sample (see `mod.rs`) encodes to the same bytes through a
    /// view: the snapshot format did not change.
    #[test]
    fn a_view_encodes_the_pinned_format() {
        let mut fsm = Fsm::new();
        set(&mut fsm, 1, "a", b"one");
        let view = fsm.view();
        assert_eq!(
            view.encode(),
            [
                5, 1, 1, 1, 1, b'a', 0, 3, b'o', b'n', b'e', 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            format!("{view:?}"),
            "FsmView { last_applied: 1, kv_index: 1, kv_entries: 1, kv_tombstones: 0, catalog: (0, 0, 0) }"
        );
    }
}
