//! Property tests of the data dir on `SimFs`, against the one interpreter
//! (`Durable::apply`) as the model:
//!
//! (a) random valid op sequences, some writes refused for lack of space
//!     (then retried), a crash at a random point (between ops or inside
//!     one), a random surviving prefix of every unsynced byte and
//!     directory entry, then recovery: the state is the model after some
//!     prefix of the ops that holds every synced op, or, when the op after
//!     that prefix drops entries, the state after it with some of the
//!     dropped entries still there (the documented outcomes: a prefix of the
//!     old log for a truncation, a suffix of it for a purge, whose mark in
//!     the log may be lost while the segments below it are already gone);
//! (b) without crashes, recovery gives the model exactly;
//! (c) every codec (WAL records, hence the hard state, snapshot and purge
//!     files) round-trips arbitrary values;
//! (d) invalid ops are refused by the interpreter, state unchanged, and by
//!     the data dir, nothing written.

mod support;

use proptest::prelude::*;
use std::sync::Arc;

use support::*;
use tern_core::fsm::{Command, KvCommand, KvWrite};
use tern_core::raft::{
    Durable, Entry, EntryPayload, HardState, Membership, Snapshot, SnapshotMeta,
};
use tern_core::wire::wal::{encode_record, recover, WalRecord};
use tern_core::{LogIndex, NodeId, PersistOp, Term};
use tern_storage::{FaultRates, SimFs, Storage, StorageError};

/// `cases` per property, or `PROPTEST_CASES` to widen a run.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `r` is `wider` with some of the entries `narrower` dropped still there:
/// equal but for entries, and `narrower.entries` ⊑ `r.entries` ⊑
/// `wider.entries` as prefixes.
fn between(r: &Durable, narrower: &Durable, wider: &Durable) -> bool {
    r.hard_state == narrower.hard_state
        && r.snapshot == narrower.snapshot
        && r.entries.starts_with(&narrower.entries)
        && wider.entries.starts_with(&r.entries)
}

/// As [`between`], with the entries as suffixes (what a purge cut short
/// leaves).
fn between_suffix(r: &Durable, narrower: &Durable, wider: &Durable) -> bool {
    r.hard_state == narrower.hard_state
        && r.snapshot == narrower.snapshot
        && r.entries.ends_with(&narrower.entries)
        && wider.entries.ends_with(&r.entries)
}

proptest! {
    #![proptest_config(config(160))]

    /// (a) A crash anywhere.
    #[test]
    fn a_crash_anywhere_recovers_to_a_prefix_of_the_ops(
        tape in prop::collection::vec(any::<u32>(), 20..160),
        seed in any::<u64>(),
        crash_step in 0usize..40,
        die_after in prop::option::of(0u64..12),
        full_ppm in prop_oneof![Just(0u64), 50_000u64..300_000],
        tidy_every in 0usize..4,
    ) {
        let mut t = Tape::new(&tape);
        let mut gen = Gen::default();
        // models[i]: the state after the first i ops.
        let mut models = vec![Durable::default()];
        let mut ops = Vec::new();
        let mut synced = 0; // every op before this index is durable
        let (mut dd, _, _) = open(SimFs::new(seed));
        // Writes that hit a full disk: NoSpace must leave no trace, so the
        // op is simply retried with room.
        let rates = FaultRates { write_enospc_ppm: full_ppm, ..FaultRates::default() };
        dd.fs_mut().set_faults(rates);
        let mut no_space = 0;
        let mut step = 0;
        'run: while !t.done() {
            if step == crash_step {
                if let Some(n) = die_after {
                    dd.fs_mut().die_after(n);
                }
            }
            for (op, sync) in gen.step(&mut t) {
                let mut result = dd.persist(&op, sync);
                if let Err(StorageError::NoSpace { .. }) = result {
                    no_space += 1;
                    dd.fs_mut().set_faults(FaultRates::default());
                    result = dd.persist(&op, sync);
                    dd.fs_mut().set_faults(rates);
                }
                let mut m = models.last().expect("one").clone();
                m.apply(&op).expect("the generator's ops are valid");
                models.push(m);
                ops.push(op);
                match result {
                    Ok(()) if sync => synced = ops.len(),
                    Ok(()) => {}
                    Err(StorageError::Io(_)) | Err(StorageError::Failed { .. }) => break 'run,
                    Err(e) => panic!("{:?}: {e}", ops.last()),
                }
            }
            // An idle disk lane deletes dead segments (`tidy`): the state
            // is the same, and so is what a crash may leave.
            if tidy_every > 0 && step % tidy_every == 0 {
                match dd.tidy() {
                    Ok(_) => {}
                    Err(StorageError::Io(_)) | Err(StorageError::Failed { .. }) => break 'run,
                    Err(e) => panic!("tidy: {e}"),
                }
            }
            if step == crash_step && die_after.is_none() {
                break;
            }
            step += 1;
        }
        let mut fs = dd.into_fs();
        fs.crash();
        let (_, r, _) = DataDirOpen::open(fs);
        let ok = (synced..models.len()).any(|p| {
            r == models[p]
                || (p + 1 < models.len()
                    && matches!(ops[p], PersistOp::TruncateFrom(_))
                    && between(&r, &models[p + 1], &models[p]))
                || (p + 1 < models.len()
                    && matches!(ops[p], PersistOp::PurgeUpTo(_))
                    && between_suffix(&r, &models[p + 1], &models[p]))
        });
        prop_assert!(
            ok,
            "recovered {:?} ({no_space} writes refused for lack of space)\nnot a state after \
             ops {synced}..={} of {:?}",
            summary(&r),
            models.len() - 1,
            ops.iter().map(op_summary).collect::<Vec<_>>()
        );
    }

    /// (b) No crash: exactly the model, at every reopen.
    #[test]
    fn without_a_crash_recovery_is_the_model_exactly(
        tape in prop::collection::vec(any::<u32>(), 20..200),
        seed in any::<u64>(),
        reopen_every in 3usize..12,
        tidy_every in 0usize..4,
    ) {
        let mut t = Tape::new(&tape);
        let mut gen = Gen::default();
        let (mut dd, _, _) = open(SimFs::new(seed));
        let mut step = 0;
        while !t.done() {
            for (op, sync) in gen.step(&mut t) {
                dd.persist(&op, sync).unwrap_or_else(|e| panic!("{op:?}: {e}"));
            }
            if tidy_every > 0 && step % tidy_every == 0 {
                dd.tidy().unwrap_or_else(|e| panic!("tidy: {e}"));
            }
            step += 1;
            if step % reopen_every == 0 {
                let (reopened, r, warnings) = open(dd.into_fs());
                prop_assert_eq!(warnings, Vec::<String>::new());
                prop_assert!(r == gen.model, "{:?} != {:?}", summary(&r), summary(&gen.model));
                dd = reopened;
            }
        }
        let (_, r, _) = open(dd.into_fs());
        prop_assert!(r == gen.model, "{:?} != {:?}", summary(&r), summary(&gen.model));
    }

    /// (c) Every WAL record round-trips, alone and in a file of several.
    #[test]
    fn every_record_round_trips(records in prop::collection::vec(arb_record(), 1..6)) {
        let mut bytes = Vec::new();
        for r in &records {
            encode_record(r, &mut bytes);
        }
        let rec = recover(&bytes).unwrap();
        prop_assert_eq!(rec.torn_tail, None);
        prop_assert_eq!(rec.records, records);
    }

    /// (d) An op outside the contract: refused, nothing changed, by the
    /// interpreter and by the data dir (not a file touched, and the data
    /// dir still takes valid writes).
    #[test]
    fn invalid_ops_are_refused_with_state_unchanged(
        tape in prop::collection::vec(any::<u32>(), 10..80),
        kind in 0u8..10,
        pick in any::<u64>(),
    ) {
        let mut t = Tape::new(&tape);
        let mut gen = Gen::default();
        let (mut dd, _, _) = open(SimFs::new(pick));
        while !t.done() {
            for (op, sync) in gen.step(&mut t) {
                dd.persist(&op, sync).unwrap();
            }
        }
        let Some(op) = invalid_op(&gen.model, kind, pick) else {
            return Ok(());
        };
        let before = gen.model.clone();
        let mut m = gen.model.clone();
        prop_assert!(m.apply(&op).is_err(), "{:?} accepted on {:?}", op_summary(&op), summary(&before));
        prop_assert!(m == before);
        let files_before = files(dd.fs_mut());
        let refused = matches!(dd.persist(&op, true), Err(StorageError::Invalid(_)));
        prop_assert!(refused);
        prop_assert_eq!(files(dd.fs_mut()), files_before);
        // Still usable, and still the model.
        let next = PersistOp::Append(vec![entry(before.last_index().0 + 1, gen.term, 5)]);
        dd.persist(&next, true).unwrap();
        m.apply(&next).unwrap();
        let (_, r, _) = open(dd.into_fs());
        prop_assert!(r == m);
    }
}

/// Reopens after a crash: like `open`, but a crash may leave a torn tail
/// (warnings allowed).
struct DataDirOpen;
impl DataDirOpen {
    fn open(fs: SimFs) -> (tern_storage::DataDir<SimFs>, Durable, Vec<String>) {
        open(fs)
    }
}

fn files(fs: &mut SimFs) -> Vec<(String, Vec<u8>)> {
    use tern_storage::Fs;
    let raft = raft_dir();
    fs.list(&raft)
        .unwrap()
        .into_iter()
        .map(|n| {
            let bytes = fs.read(&raft.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// An op of the given kind that breaks the contract on `d`, if `d` allows
/// one of that kind.
fn invalid_op(d: &Durable, kind: u8, pick: u64) -> Option<PersistOp> {
    let shape = d.shape();
    let (last, floor) = (shape.last.0, shape.floor.0);
    let snap = shape.snapshot.map_or(0, |(i, _)| i.0);
    let term = d.entries.last().map_or(1, |e| e.term.0);
    Some(match kind {
        // A gap after the last index.
        0 => PersistOp::Append(vec![entry(last + 2 + pick % 5, term, 3)]),
        // An overlap: at or below the last index.
        1 if last > 0 => PersistOp::Append(vec![entry(1 + pick % last, term, 3)]),
        // Not consecutive.
        2 => PersistOp::Append(vec![entry(last + 1, term, 3), entry(last + 3, term, 3)]),
        // A purge past the snapshot.
        3 => PersistOp::PurgeUpTo(LogIndex(snap + 1 + pick % 5)),
        // A truncation at or below the floor.
        4 if floor > 0 => PersistOp::TruncateFrom(LogIndex(1 + pick % floor)),
        // A truncation past the last index.
        5 => PersistOp::TruncateFrom(LogIndex(last + 1 + pick % 5)),
        // A snapshot not newer than the stored one.
        6 if snap > 0 => PersistOp::InstallSnapshot(support::snapshot(pick % (snap + 1), term)),
        7 if snap > 0 => PersistOp::SaveSnapshot(support::snapshot(pick % (snap + 1), term)),
        // An own snapshot of an entry the log does not hold (past the end).
        8 => PersistOp::SaveSnapshot(support::snapshot(last + 1 + pick % 5, term)),
        // The term going down.
        9 if d.hard_state.term.0 > 0 => PersistOp::HardState(HardState {
            term: Term(pick % d.hard_state.term.0),
            vote: None,
        }),
        _ => return None,
    })
}

fn summary(d: &Durable) -> String {
    format!(
        "term {} snapshot {:?} entries {:?}",
        d.hard_state.term.0,
        d.snapshot
            .as_ref()
            .map(|s| (s.meta.last_index.0, s.meta.last_term.0)),
        d.entries
            .iter()
            .map(|e| (e.index.0, e.term.0))
            .collect::<Vec<_>>()
    )
}

fn op_summary(op: &PersistOp) -> String {
    match op {
        PersistOp::Append(e) => format!(
            "append {}..={}@{}",
            e[0].index.0,
            e.last().unwrap().index.0,
            e[0].term.0
        ),
        PersistOp::SaveSnapshot(s) => {
            format!("save {}@{}", s.meta.last_index.0, s.meta.last_term.0)
        }
        PersistOp::InstallSnapshot(s) => {
            format!("install {}@{}", s.meta.last_index.0, s.meta.last_term.0)
        }
        PersistOp::TruncateFrom(i) => format!("truncate {}", i.0),
        PersistOp::PurgeUpTo(i) => format!("purge {}", i.0),
        PersistOp::HardState(h) => format!("hs {}", h.term.0),
    }
}

// ----- strategies for (c) -----

fn arb_membership() -> impl Strategy<Value = Membership> {
    prop::collection::btree_map(
        any::<u128>(),
        ("[a-z]{0,8}", "[a-z0-9.:]{0,20}", any::<bool>()),
        0..3,
    )
    .prop_map(|servers| Membership {
        servers: servers
            .into_iter()
            .map(|(id, (name, address, voter))| {
                (
                    NodeId(id),
                    tern_core::raft::Member {
                        name: tern_core::NodeName(name),
                        address,
                        suffrage: if voter {
                            tern_core::raft::Suffrage::Voter
                        } else {
                            tern_core::raft::Suffrage::Nonvoter
                        },
                    },
                )
            })
            .collect(),
    })
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    let payload =
        prop_oneof![
            Just(EntryPayload::Noop),
            (
                "\\PC{0,16}",
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..32)
            )
                .prop_map(|(key, flags, value)| EntryPayload::Command(Arc::new(
                    Command::Kv(KvCommand::Set(KvWrite {
                        key,
                        flags,
                        value: value.into()
                    }))
                ))),
            arb_membership().prop_map(EntryPayload::Membership),
        ];
    (any::<u64>(), any::<u64>(), payload).prop_map(|(term, index, payload)| Entry {
        term: Term(term),
        index: LogIndex(index),
        payload,
    })
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<u64>(),
        any::<u64>(),
        arb_membership(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(i, t, membership, data)| Snapshot {
            meta: SnapshotMeta {
                last_index: LogIndex(i),
                last_term: Term(t),
                membership,
            },
            data: data.into(),
        })
}

fn arb_record() -> impl Strategy<Value = WalRecord> {
    prop_oneof![
        (any::<u64>(), prop::option::of(any::<u128>())).prop_map(|(t, v)| {
            WalRecord::HardState(HardState {
                term: Term(t),
                vote: v.map(NodeId),
            })
        }),
        prop::collection::vec(arb_entry(), 0..4).prop_map(WalRecord::Append),
        (arb_snapshot(), any::<u64>()).prop_map(|(snapshot, c)| WalRecord::Snapshot {
            snapshot,
            compact_to: LogIndex(c),
        }),
        any::<u64>().prop_map(|i| WalRecord::TruncateFrom(LogIndex(i))),
        arb_snapshot().prop_map(WalRecord::SaveSnapshot),
        any::<u64>().prop_map(|i| WalRecord::PurgeUpTo(LogIndex(i))),
        arb_snapshot().prop_map(WalRecord::InstallSnapshot),
    ]
}
