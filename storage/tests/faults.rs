//! What the data dir does when the disk fails, on `SimFs`: a failed fsync is
//! fatal (named file and errno, every later write refused, never retried);
//! ENOSPC is its own error, and the data dir takes writes again once there
//! is room; after either, a restart recovers a consistent state.

mod support;

use support::*;
use tern_core::raft::Durable;
use tern_core::PersistOp;
use tern_storage::{FsOp, SimFs, Storage, StorageError, EIO, ENOSPC};

fn persist_all(dd: &mut tern_storage::DataDir<SimFs>, model: &mut Durable, ops: &[PersistOp]) {
    for op in ops {
        dd.persist(op, true)
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        model.apply(op).unwrap();
    }
}

/// The PostgreSQL fsync lesson: after a failed fsync the kernel may have
/// dropped the dirty pages, so the data dir never retries and carries on.
#[test]
fn a_failed_fsync_is_fatal_names_the_file_and_errno_and_refuses_later_writes() {
    let (mut dd, mut model, _) = open(SimFs::new(1));
    persist_all(
        &mut dd,
        &mut model,
        &[hard_state(1, None), append(1..=3, 1)],
    );
    let before = model.clone();
    let syncs = dd.fs_mut().stats().syncs;

    dd.fs_mut().fail_next(FsOp::Sync, EIO);
    let err = dd.persist(&append(4..=5, 1), true).unwrap_err();
    let StorageError::Io(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((e.op, e.errno), (FsOp::Sync, Some(EIO)));
    let segment = segment_files(dd.fs_mut()).pop().unwrap();
    assert_eq!(e.path, segment);
    let shown = err.to_string();
    assert!(shown.contains(&path_str(&segment)), "{shown}");
    assert!(shown.contains("errno 5"), "{shown}");

    // Every later write is refused, naming the first failure, and touches
    // nothing: in particular no second fsync of the same file.
    for op in [append(4..=5, 1), hard_state(2, None), save(3, 1)] {
        match dd.persist(&op, true) {
            Err(StorageError::Failed { first }) => assert_eq!(first, shown),
            other => panic!("{op:?}: {other:?}"),
        }
    }
    assert_eq!(dd.fs_mut().stats().syncs, syncs + 1);

    // A restart recovers: the failed append may or may not have survived.
    let mut fs = dd.into_fs();
    fs.crash();
    let (_, got, _) = open(fs);
    let mut after = before.clone();
    after.apply(&append(4..=5, 1)).unwrap();
    assert!(got == before || got == after, "{got:?}");
}

/// A failed fsync of a file being replaced (hard state, snapshot) or of the
/// directory is just as fatal.
#[test]
fn a_failed_fsync_of_the_hard_state_is_fatal_too() {
    let (mut dd, mut model, _) = open(SimFs::new(2));
    persist_all(&mut dd, &mut model, &[hard_state(1, None)]);
    dd.fs_mut().fail_next(FsOp::Sync, EIO);
    let err = dd.persist(&hard_state(2, None), true).unwrap_err();
    match &err {
        StorageError::Io(e) => {
            assert_eq!(e.op, FsOp::Sync);
            assert_eq!(e.path, raft_dir().join("hardstate.tmp"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dd.persist(&append(1..=1, 2), true),
        Err(StorageError::Failed { .. })
    ));
    let mut fs = dd.into_fs();
    fs.crash();
    assert_eq!(open(fs).1, model, "the old hard state stands");
}

/// ENOSPC from fsync (thin provisioning, NFS) is still a failed fsync:
/// fatal, not `NoSpace`.
#[test]
fn enospc_from_fsync_is_fatal_not_no_space() {
    let (mut dd, mut model, _) = open(SimFs::new(3));
    persist_all(&mut dd, &mut model, &[append(1..=2, 1)]);
    dd.fs_mut().fail_next(FsOp::Sync, ENOSPC);
    match dd.persist(&append(3..=3, 1), true) {
        Err(StorageError::Io(e)) => assert_eq!((e.op, e.errno), (FsOp::Sync, Some(ENOSPC))),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dd.persist(&append(3..=3, 1), true),
        Err(StorageError::Failed { .. })
    ));
}

/// A full disk while appending: `NoSpace` naming the segment, the partial
/// write cut back, nothing changed; once there is room the same append
/// succeeds and everything recovers exactly.
#[test]
fn enospc_on_an_append_is_no_space_and_writes_resume_when_there_is_room() {
    let (mut dd, mut model, _) = open(SimFs::new(4));
    persist_all(
        &mut dd,
        &mut model,
        &[hard_state(1, None), append(1..=3, 1)],
    );
    let segment = segment_files(dd.fs_mut()).pop().unwrap();
    let bytes_before = dd.fs_mut().contents(&segment).unwrap().to_vec();

    dd.fs_mut().set_full(true);
    for _ in 0..3 {
        match dd.persist(&append(4..=6, 1), true) {
            Err(StorageError::NoSpace { path }) => assert_eq!(path, segment),
            other => panic!("{other:?}"),
        }
        assert_eq!(dd.fs_mut().contents(&segment).unwrap(), &bytes_before[..]);
    }
    let err = dd.persist(&append(4..=6, 1), true).unwrap_err();
    assert!(err.to_string().contains("no space left on device"), "{err}");
    // A hard state cannot be written either, and the old one stands.
    assert!(matches!(
        dd.persist(&hard_state(2, None), true),
        Err(StorageError::NoSpace { .. })
    ));

    dd.fs_mut().set_full(false);
    persist_all(
        &mut dd,
        &mut model,
        &[append(4..=6, 1), hard_state(2, None), save(5, 1), purge(4)],
    );
    let (_, got, warnings) = open(dd.into_fs());
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(got, model);
}

/// ENOSPC while starting a new segment or writing a snapshot file: also
/// clean.
#[test]
fn enospc_writing_a_snapshot_file_is_no_space_and_clean() {
    let (mut dd, mut model, _) = open(SimFs::new(5));
    persist_all(&mut dd, &mut model, &[append(1..=4, 1)]);
    dd.fs_mut().fail_next(FsOp::Write, ENOSPC);
    match dd.persist(&save(3, 1), true) {
        Err(StorageError::NoSpace { path }) => {
            assert_eq!(
                path,
                raft_dir().join("snapshot-00000000000000000003-00000000000000000001.snap.tmp")
            )
        }
        other => panic!("{other:?}"),
    }
    persist_all(&mut dd, &mut model, &[save(3, 1), append(5..=5, 1)]);
    let mut fs = dd.into_fs();
    fs.crash();
    assert_eq!(open(fs).1, model);
}

/// An op outside the contract is the caller's bug, not the disk's: refused,
/// and the data dir goes on.
#[test]
fn an_invalid_op_does_not_poison_the_data_dir() {
    let (mut dd, mut model, _) = open(SimFs::new(6));
    persist_all(&mut dd, &mut model, &[append(1..=2, 1)]);
    assert!(matches!(
        dd.persist(&append(5..=5, 1), true),
        Err(StorageError::Invalid(_))
    ));
    persist_all(&mut dd, &mut model, &[append(3..=3, 1)]);
    assert_eq!(open(dd.into_fs()).1, model);
}

/// Slow disk ops: the data dir works the same, and the latency is there for
/// the simulator to sleep.
#[test]
fn a_slow_disk_reports_latency_and_changes_nothing_else() {
    let mut fs = SimFs::new(7);
    fs.set_faults(tern_storage::FaultRates {
        slow_ppm: 500_000,
        slow_ns: (1_000_000, 9_000_000),
        ..Default::default()
    });
    let (mut dd, mut model, _) = open(fs);
    let mut slept = 0;
    for i in 1..=20 {
        persist_all(&mut dd, &mut model, &[append(i..=i, 1)]);
        slept += dd.fs_mut().take_latency_ns();
    }
    assert!(slept >= 1_000_000, "{slept}");
    assert_eq!(open(dd.into_fs()).1, model);
}
