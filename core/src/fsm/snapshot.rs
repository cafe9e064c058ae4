//! The snapshot format: one version byte, then postcard of a concrete
//! snapshot struct for that version.
//!
//! Postcard is not self-describing, so a snapshot struct never changes once
//! released: a new table (catalog, federation states, autopilot
//! configuration) means a new version byte and a new struct, and `decode`
//! keeps a branch for every older version so an old snapshot still
//! restores.
//!
//! The snapshot has its own record types rather than reusing `KvEntry`, so
//! a later change to a command or RPC type (a `session` field on `KvEntry`,
//! say) cannot silently change what version 1 means.
//!
//! Encoding borrows the live state (`*Ref` types) so a snapshot does not
//! first copy every value; decoding produces the owned types. The two must
//! encode identically, which a test checks.

use serde::{Deserialize, Serialize};

use super::catalog::{CatalogSnapshot, CatalogSnapshotRef};
use super::session::{SessionSnapshot, SessionSnapshotRef};
use super::value::Value;
use super::{FsmError, StoredAutopilot};

/// The version byte this release writes.
pub(crate) const SNAPSHOT_VERSION: u8 = 5;

/// Version 5 (what this release writes and what `decode` gives for every
/// version): the KV table, autopilot's configuration, the catalog, the
/// index offset, an operator's restore staged halfway (`restore.rs`), the
/// sessions and which session holds each locked key.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) last_applied: u64,
    pub(crate) kv: KvSnapshot,
    pub(crate) autopilot: Option<StoredAutopilot>,
    pub(crate) catalog: CatalogSnapshot,
    pub(crate) index_offset: u64,
    pub(crate) restore: Option<RestoreRecord>,
    pub(crate) sessions: SessionSnapshot,
    /// Strictly increasing by key; every key in `kv.entries`, every
    /// session in `sessions`.
    pub(crate) locks: Vec<LockRecord>,
}

/// Version 4: version 3 and the index offset and a staged restore. Read,
/// never written.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotV4 {
    pub(crate) last_applied: u64,
    pub(crate) kv: KvSnapshot,
    pub(crate) autopilot: Option<StoredAutopilot>,
    pub(crate) catalog: CatalogSnapshot,
    pub(crate) index_offset: u64,
    pub(crate) restore: Option<RestoreRecord>,
}

/// An operator's restore, staged: its chunks as they arrived.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RestoreRecord {
    pub(crate) id: u64,
    pub(crate) total: u64,
    pub(crate) chunks: Vec<serde_bytes::ByteBuf>,
}

/// Version 3: the KV table, autopilot's configuration and the catalog.
/// Read, never written.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotV3 {
    pub(crate) last_applied: u64,
    pub(crate) kv: KvSnapshot,
    pub(crate) autopilot: Option<StoredAutopilot>,
    pub(crate) catalog: CatalogSnapshot,
}

/// A locked key and the session holding it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockRecord {
    pub(crate) key: String,
    pub(crate) session: String,
}

/// `LockRecord`, borrowing.
#[derive(Serialize)]
pub(crate) struct LockRef<'a> {
    pub(crate) key: &'a str,
    pub(crate) session: &'a str,
}

/// Version 2: the KV table and autopilot's configuration. Read, never
/// written.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotV2 {
    pub(crate) last_applied: u64,
    pub(crate) kv: KvSnapshot,
    pub(crate) autopilot: Option<StoredAutopilot>,
}

/// Version 1: the KV table alone. Read, never written.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotV1 {
    pub(crate) last_applied: u64,
    pub(crate) kv: KvSnapshot,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvSnapshot {
    pub(crate) index: u64,
    /// Strictly increasing by key.
    pub(crate) entries: Vec<EntryRecord>,
    /// Strictly increasing by key; no key also in `entries`.
    pub(crate) tombstones: Vec<TombstoneRecord>,
}

/// A KV entry as version 1 stores it (the fields of `KvEntry` today).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub(crate) key: String,
    pub(crate) flags: u64,
    pub(crate) value: Value,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) lock_index: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TombstoneRecord {
    pub(crate) key: String,
    pub(crate) index: u64,
}

/// `Snapshot`, borrowing.
#[derive(Serialize)]
pub(crate) struct SnapshotRef<'a> {
    pub(crate) last_applied: u64,
    pub(crate) kv: KvSnapshotRef<'a>,
    pub(crate) autopilot: Option<&'a StoredAutopilot>,
    pub(crate) catalog: CatalogSnapshotRef<'a>,
    pub(crate) index_offset: u64,
    pub(crate) restore: Option<RestoreRef<'a>>,
    pub(crate) sessions: SessionSnapshotRef<'a>,
    pub(crate) locks: Vec<LockRef<'a>>,
}

/// `RestoreRecord`, borrowing.
#[derive(Serialize)]
pub(crate) struct RestoreRef<'a> {
    pub(crate) id: u64,
    pub(crate) total: u64,
    pub(crate) chunks: Vec<&'a serde_bytes::Bytes>,
}

/// `KvSnapshot`, borrowing. Its rows are written straight from the table,
/// not collected into vectors of references first.
#[derive(Serialize)]
pub(crate) struct KvSnapshotRef<'a> {
    pub(crate) index: u64,
    pub(crate) entries: Rows<'a, EntryRef<'a>>,
    pub(crate) tombstones: Rows<'a, TombstoneRef<'a>>,
}

/// A sequence serialized from an iterator made when it is written: a
/// table of a million rows is encoded without first building a vector of a
/// million references to it. Encodes exactly as a `Vec<T>` of the same rows.
pub(crate) struct Rows<'a, T> {
    len: usize,
    rows: Box<dyn Fn() -> Box<dyn Iterator<Item = T> + 'a> + 'a>,
}

impl<'a, T: 'a> Rows<'a, T> {
    /// `rows()` must yield exactly `len` rows, every time.
    pub(crate) fn new<I>(len: usize, rows: impl Fn() -> I + 'a) -> Rows<'a, T>
    where
        I: Iterator<Item = T> + 'a,
    {
        Rows {
            len,
            rows: Box::new(move || Box::new(rows())),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_vec(rows: Vec<T>) -> Rows<'a, T>
    where
        T: Clone,
    {
        Rows::new(rows.len(), move || rows.clone().into_iter())
    }
}

impl<T: Serialize> Serialize for Rows<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len))?;
        let mut n = 0;
        for row in (self.rows)() {
            seq.serialize_element(&row)?;
            n += 1;
        }
        // A count that disagrees would write a snapshot that decodes wrong.
        assert_eq!(n, self.len, "a snapshot table yielded another row count");
        seq.end()
    }
}

/// `EntryRecord`, borrowing.
#[derive(Clone, Serialize)]
pub(crate) struct EntryRef<'a> {
    pub(crate) key: &'a str,
    pub(crate) flags: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) value: &'a [u8],
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) lock_index: u64,
}

/// `TombstoneRecord`, borrowing.
#[derive(Clone, Serialize)]
pub(crate) struct TombstoneRef<'a> {
    pub(crate) key: &'a str,
    pub(crate) index: u64,
}

/// Encodes a snapshot: the version byte, then the body, written in place
/// into one buffer of at least `capacity` bytes (a good guess spares the
/// copies of growing it; the state can be hundreds of megabytes).
pub(crate) fn encode(
    snap: &SnapshotRef<'_>,
    capacity: usize,
    pause: Option<(usize, &mut dyn FnMut())>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity.max(1));
    out.push(SNAPSHOT_VERSION);
    let (every, pause) = match pause {
        Some((every, pause)) => (every.max(1), Some(pause)),
        None => (usize::MAX, None),
    };
    let flavor = VecFlavor {
        out,
        pause,
        every,
        next_pause_at: every,
    };
    // Serializing plain structs of strings, bytes and integers into a Vec
    // cannot fail.
    postcard::serialize_with_flavor(snap, flavor).expect("snapshot encodes")
}

/// Postcard output appended to a `Vec` with `extend_from_slice` (postcard's
/// own `to_extend` pushes byte by byte; `to_allocvec` cannot start after a
/// version byte). Each time the output passes another `every` bytes it
/// calls `pause`, if any.
struct VecFlavor<'p> {
    out: Vec<u8>,
    pause: Option<&'p mut dyn FnMut()>,
    every: usize,
    next_pause_at: usize,
}

impl VecFlavor<'_> {
    fn maybe_pause(&mut self) {
        if self.out.len() >= self.next_pause_at {
            // The next multiple of `every`: one pause per mark passed (one
            // for several, if a single value passed more than one).
            self.next_pause_at = (self.out.len() / self.every)
                .saturating_add(1)
                .saturating_mul(self.every);
            if let Some(pause) = self.pause.as_mut() {
                pause();
            }
        }
    }
}

impl postcard::ser_flavors::Flavor for VecFlavor<'_> {
    type Output = Vec<u8>;

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.out.push(b);
        self.maybe_pause();
        Ok(())
    }

    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        self.out.extend_from_slice(b);
        self.maybe_pause();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.out)
    }
}

/// Decodes the bytes of a snapshot without checking what they say (the
/// tables check that as they rebuild).
pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, FsmError> {
    let (&version, body) = bytes.split_first().ok_or(FsmError::Empty)?;
    let (snap, rest) = match version {
        1 => {
            let (v1, rest) =
                postcard::take_from_bytes::<SnapshotV1>(body).map_err(FsmError::Malformed)?;
            let snap = Snapshot {
                last_applied: v1.last_applied,
                kv: v1.kv,
                autopilot: None,
                catalog: CatalogSnapshot::default(),
                index_offset: 0,
                restore: None,
                sessions: SessionSnapshot::default(),
                locks: Vec::new(),
            };
            (snap, rest)
        }
        2 => {
            let (v2, rest) =
                postcard::take_from_bytes::<SnapshotV2>(body).map_err(FsmError::Malformed)?;
            let snap = Snapshot {
                last_applied: v2.last_applied,
                kv: v2.kv,
                autopilot: v2.autopilot,
                catalog: CatalogSnapshot::default(),
                index_offset: 0,
                restore: None,
                sessions: SessionSnapshot::default(),
                locks: Vec::new(),
            };
            (snap, rest)
        }
        3 => {
            let (v3, rest) =
                postcard::take_from_bytes::<SnapshotV3>(body).map_err(FsmError::Malformed)?;
            let snap = Snapshot {
                last_applied: v3.last_applied,
                kv: v3.kv,
                autopilot: v3.autopilot,
                catalog: v3.catalog,
                index_offset: 0,
                restore: None,
                sessions: SessionSnapshot::default(),
                locks: Vec::new(),
            };
            (snap, rest)
        }
        4 => {
            let (v4, rest) =
                postcard::take_from_bytes::<SnapshotV4>(body).map_err(FsmError::Malformed)?;
            let snap = Snapshot {
                last_applied: v4.last_applied,
                kv: v4.kv,
                autopilot: v4.autopilot,
                catalog: v4.catalog,
                index_offset: v4.index_offset,
                restore: v4.restore,
                sessions: SessionSnapshot::default(),
                locks: Vec::new(),
            };
            (snap, rest)
        }
        SNAPSHOT_VERSION => {
            postcard::take_from_bytes::<Snapshot>(body).map_err(FsmError::Malformed)?
        }
        v => return Err(FsmError::UnsupportedVersion(v)),
    };
    if !rest.is_empty() {
        return Err(FsmError::TrailingBytes(rest.len()));
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> EntryRecord {
        EntryRecord {
            key: key.to_owned(),
            flags: 7,
            value: Value::from(b"v"),
            create_index: 1,
            modify_index: 2,
            lock_index: 3,
        }
    }

    fn by_ref(e: &EntryRecord) -> EntryRef<'_> {
        EntryRef {
            key: &e.key,
            flags: e.flags,
            value: &e.value,
            create_index: e.create_index,
            modify_index: e.modify_index,
            lock_index: e.lock_index,
        }
    }

    #[test]
    fn borrowed_and_owned_snapshots_encode_identically() {
        let (a, b) = (entry("a"), entry("b"));
        let catalog = crate::fsm::catalog::CatalogTable::default();
        let by_ref = SnapshotRef {
            last_applied: 9,
            kv: KvSnapshotRef {
                index: 3,
                entries: Rows::from_vec(vec![by_ref(&a), by_ref(&b)]),
                tombstones: Rows::from_vec(vec![TombstoneRef { key: "c", index: 3 }]),
            },
            autopilot: None,
            catalog: catalog.to_snapshot(),
            index_offset: 5,
            restore: Some(RestoreRef {
                id: 3,
                total: 10,
                chunks: vec![
                    serde_bytes::Bytes::new(b"ab"),
                    serde_bytes::Bytes::new(b"c"),
                ],
            }),
            sessions: SessionSnapshotRef {
                index: 0,
                sessions: vec![],
            },
            locks: vec![],
        };
        let owned = Snapshot {
            last_applied: 9,
            kv: KvSnapshot {
                index: 3,
                entries: vec![a.clone(), b.clone()],
                tombstones: vec![TombstoneRecord {
                    key: "c".to_owned(),
                    index: 3,
                }],
            },
            autopilot: None,
            catalog: CatalogSnapshot::default(),
            index_offset: 5,
            restore: Some(RestoreRecord {
                id: 3,
                total: 10,
                chunks: vec![
                    serde_bytes::ByteBuf::from(b"ab".to_vec()),
                    serde_bytes::ByteBuf::from(b"c".to_vec()),
                ],
            }),
            sessions: SessionSnapshot::default(),
            locks: vec![],
        };
        let mut expected = vec![SNAPSHOT_VERSION];
        expected.extend(postcard::to_allocvec(&owned).unwrap());
        let bytes = encode(&by_ref, 0, None);
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes).unwrap(), owned);
    }

    #[test]
    fn the_empty_snapshot_is_pinned() {
        // Version 5, last_applied 0, kv index 0, no entries, no
        // tombstones, no autopilot configuration, an empty catalog (three
        // empty tables, five zero indexes, two empty index-row lists), index
        // offset 0, no staged restore, sessions index 0, no sessions, no
        // locks.
        let catalog = crate::fsm::catalog::CatalogTable::default();
        let empty = SnapshotRef {
            last_applied: 0,
            kv: KvSnapshotRef {
                index: 0,
                entries: Rows::from_vec(vec![]),
                tombstones: Rows::from_vec(vec![]),
            },
            autopilot: None,
            catalog: catalog.to_snapshot(),
            index_offset: 0,
            restore: None,
            sessions: SessionSnapshotRef {
                index: 0,
                sessions: vec![],
            },
            locks: vec![],
        };
        assert_eq!(
            encode(&empty, 0, None),
            [[5u8].as_slice(), &[0; 20]].concat()
        );
        // Version 4 (no sessions, no locks) and version 3 (no offset, no
        // restore either) still decode.
        let v4 = decode(&[[4u8].as_slice(), &[0; 17]].concat()).unwrap();
        assert_eq!(
            (v4.sessions, v4.locks),
            (SessionSnapshot::default(), vec![])
        );
        let v3 = decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((v3.index_offset, v3.restore), (0, None));
        assert_eq!(
            (v3.sessions, v3.locks),
            (SessionSnapshot::default(), vec![])
        );
        // Version 1 (no autopilot table) and version 2 (no catalog) still
        // decode, with an empty catalog.
        let v1 = decode(&[1, 0, 0, 0, 0]).unwrap();
        assert_eq!(v1.autopilot, None);
        assert_eq!(v1.kv.entries, vec![]);
        assert_eq!(v1.catalog, CatalogSnapshot::default());
        let v2 = decode(&[2, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            (v2.autopilot, v2.catalog),
            (None, CatalogSnapshot::default())
        );
        assert_eq!(
            decode(&[6, 0, 0, 0, 0, 0]),
            Err(FsmError::UnsupportedVersion(6))
        );
    }
}
