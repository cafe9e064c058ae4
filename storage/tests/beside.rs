//! A server's own snapshot file is written beside the log (the driver's
//! snapshot thread or task, `write_snapshot_file`) and then only adopted by
//! the data dir's `SaveSnapshot`; a crash between the two leaves a state
//! recovery accepts, since the core snapshots only what the log holds
//! durably.

mod support;

use support::*;
use tern_core::PersistOp;
use tern_storage::{write_snapshot_file, SimFs, Storage};

#[test]
fn a_snapshot_written_beside_the_log_is_adopted_not_written_again() {
    let (mut dd, mut model, _) = open(SimFs::new(3));
    for op in [hard_state(1, None), append(1..=5, 1)] {
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
    }
    let mut snap = snapshot(4, 1);
    snap.data = vec![7; 4096].into();
    write_snapshot_file(dd.fs_mut(), &dir(), &snap).unwrap();
    // The log lane goes on meanwhile.
    let op = append(6..=6, 1);
    dd.persist(&op, true).unwrap();
    model.apply(&op).unwrap();
    let before = dd.fs_mut().stats().bytes_written;
    for op in [PersistOp::SaveSnapshot(snap), purge(4)] {
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
    }
    let adopted = dd.fs_mut().stats().bytes_written - before;
    assert!(
        adopted < 200,
        "adopting wrote {adopted} bytes: the file was written again"
    );
    let mut fs = dd.into_fs();
    fs.crash();
    let (_, got, _) = open(fs);
    assert!(got == model, "recovered {got:?}");
}

#[test]
fn a_crash_after_writing_beside_the_log_but_before_adopting_recovers_the_snapshot() {
    let (mut dd, mut model, _) = open(SimFs::new(4));
    for op in [hard_state(1, None), append(1..=5, 1)] {
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
    }
    let snap = snapshot(4, 1);
    write_snapshot_file(dd.fs_mut(), &dir(), &snap).unwrap();
    let mut fs = dd.into_fs();
    fs.crash();
    let (_, got, _) = open(fs);
    // As if the snapshot had been saved: same log, and the snapshot.
    model.apply(&PersistOp::SaveSnapshot(snap.clone())).unwrap();
    assert_eq!(got.snapshot.as_ref().map(|s| &s.meta), Some(&snap.meta));
    assert_eq!(got.entries, model.entries);
}

#[test]
fn a_snapshot_file_starts_its_writeback_after_every_mib() {
    // 10 MiB in 4 MiB pieces: writeback is started after every MiB (each
    // call first waits for the one before), so the final fsync has little
    // left to write, and at most about a MiB of the file is ever queued at
    // the device ahead of the log's fsyncs.
    let (dd, _, _) = open(SimFs::new(5));
    let mut fs = dd.into_fs();
    let mut snap = snapshot(4, 1);
    snap.data = (0..10usize << 20)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let before = fs.stats();
    write_snapshot_file(&mut fs, &dir(), &snap).unwrap();
    let after = fs.stats();
    assert_eq!(
        after.writebacks - before.writebacks,
        10,
        "one per MiB written"
    );
    assert_eq!(
        after.syncs - before.syncs,
        1,
        "and still one fsync of the file"
    );
    // A small snapshot: no writeback started.
    let small = snapshot(5, 1);
    write_snapshot_file(&mut fs, &dir(), &small).unwrap();
    assert_eq!(fs.stats().writebacks, after.writebacks);
}
