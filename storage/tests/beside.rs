//! A server's own snapshot file is written beside the log (the driver's
//! snapshot thread or task, `write_snapshot_file`) and then only adopted by
//! the data dir's `SaveSnapshot`; a crash between the two leaves a state
//! recovery accepts, since the core snapshots only what the log holds
//! durably.

mod support;

use support::*;
use tern_core::PersistOp;
use tern_storage::{read_snapshot_data, write_snapshot_file, Fs, SimFs, SnapshotLane, Storage};

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

/// A snapshot of `len` bytes that differ from snapshot to snapshot.
fn sized(last_index: u64, len: usize) -> tern_core::raft::Snapshot {
    let mut s = snapshot(last_index, 1);
    s.data = (0..len)
        .map(|i| (i % 251) as u8 ^ last_index as u8)
        .collect::<Vec<u8>>()
        .into();
    s
}

/// Three own snapshots through the lane as a driver runs it (written
/// beside the log, adopted, the superseded one handed back); returns the
/// data dir, its model, the lane (whose spare is the first snapshot's
/// file) and the snapshots.
fn three_snapshots(
    seed: u64,
) -> (
    tern_storage::DataDir<SimFs>,
    tern_core::raft::Durable,
    SnapshotLane,
    Vec<tern_core::raft::Snapshot>,
) {
    let (mut dd, mut model, _) = open(SimFs::new(seed));
    for op in [hard_state(1, None), append(1..=12, 1)] {
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
    }
    let mut lane = SnapshotLane::new();
    let mut snaps = Vec::new();
    for (index, len) in [(4, 3 << 20), (6, 1 << 20), (8, 2 << 20)] {
        let snap = sized(index, len);
        lane.write(dd.fs_mut(), &dir(), &snap).unwrap();
        let op = PersistOp::SaveSnapshot(snap.clone());
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
        let gone = dd.take_superseded();
        lane.remove_superseded(dd.fs_mut(), &gone).unwrap();
        snaps.push(snap);
    }
    (dd, model, lane, snaps)
}

fn snapshot_path(s: &tern_core::raft::Snapshot) -> std::path::PathBuf {
    raft_dir().join(format!(
        "snapshot-{:020}-{:020}.snap",
        s.meta.last_index.0, s.meta.last_term.0
    ))
}

#[test]
fn the_lane_overwrites_a_superseded_snapshot_file_in_place() {
    let (mut dd, mut model, mut lane, snaps) = three_snapshots(8);
    // The first snapshot is superseded: kept as the spare, not deleted.
    let spare = snapshot_path(&snaps[0]);
    assert_eq!(lane.spare(), Some(spare.as_path()));
    assert!(
        dd.fs_mut().inode_of(&spare).is_some(),
        "the spare is still on disk"
    );
    assert_eq!(dd.fs_mut().stats().removes, 0);

    // A smaller snapshot into the spare's 3 MiB, then a larger one into
    // the next spare's 1 MiB: each is the spare's file, renamed, and reads
    // back byte for byte (a stale tail cut off, a short file extended).
    for (snap, spare_of) in [
        (sized(10, (3 << 20) / 2), &snaps[0]),
        (sized(12, 5 << 20 >> 1), &snaps[1]),
    ] {
        let spare = snapshot_path(spare_of);
        let inode = dd.fs_mut().inode_of(&spare).expect("spare on disk");
        let removes = dd.fs_mut().stats().removes;
        lane.write(dd.fs_mut(), &dir(), &snap).unwrap();
        assert_eq!(lane.spare(), None, "a spare is used once");
        assert_eq!(dd.fs_mut().inode_of(&spare), None, "the spare was renamed");
        assert_eq!(
            dd.fs_mut().inode_of(&snapshot_path(&snap)),
            Some(inode),
            "the new snapshot is the spare's file, rewritten"
        );
        assert_eq!(dd.fs_mut().stats().removes, removes, "nothing deleted");
        let back = read_snapshot_data(dd.fs_mut(), &dir(), &snap.meta).unwrap();
        assert!(back.as_ref() == Some(&snap.data), "read back differs");
        let op = PersistOp::SaveSnapshot(snap.clone());
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
        let gone = dd.take_superseded();
        assert_eq!(gone.len(), 1);
        lane.remove_superseded(dd.fs_mut(), &gone).unwrap();
    }
    let mut fs = dd.into_fs();
    fs.crash();
    let (_, got, _) = open(fs);
    assert!(got == model, "recovered {got:?}");
}

#[test]
fn a_spare_kept_before_is_deleted_when_a_newer_one_comes() {
    let (mut dd, _, mut lane, snaps) = three_snapshots(9);
    let first = snapshot_path(&snaps[0]);
    let second = snapshot_path(&snaps[1]);
    lane.remove_superseded(dd.fs_mut(), std::slice::from_ref(&second))
        .unwrap();
    assert_eq!(lane.spare(), Some(second.as_path()));
    assert_eq!(
        dd.fs_mut().inode_of(&first),
        None,
        "the old spare is deleted"
    );
    // A spare that is gone when it is needed is no error: the file is
    // created afresh.
    dd.fs_mut().remove(&second).unwrap();
    let snap = sized(10, 4096);
    lane.write(dd.fs_mut(), &dir(), &snap).unwrap();
    let back = read_snapshot_data(dd.fs_mut(), &dir(), &snap.meta).unwrap();
    assert!(back.as_ref() == Some(&snap.data));
}

/// The machine dies after every possible number of filesystem calls while
/// a snapshot is written into the spare, then crashes: recovery finds the
/// log as it was and the newest snapshot either the one before (with its
/// bytes) or the new one (with its bytes), and leaves no temporary file
/// and at most two snapshot files.
#[test]
fn a_crash_at_every_step_of_rewriting_the_spare_recovers_one_snapshot_or_the_other() {
    let (dd, model, lane, snaps) = three_snapshots(10);
    let spare = lane.spare().expect("a spare").to_path_buf();
    let start = dd.into_fs();
    let new = sized(10, (3 << 20) / 2);
    let (mut old_seen, mut new_seen, mut completed) = (0, 0, false);
    for calls in 0..=40 {
        let mut fs = start.clone();
        fs.die_after(calls);
        let mut lane = SnapshotLane::new();
        lane.remove_superseded(&mut fs, std::slice::from_ref(&spare))
            .unwrap();
        let wrote = lane.write(&mut fs, &dir(), &new);
        completed |= wrote.is_ok();
        fs.crash();
        let (mut dd, got, _) = open(fs);
        assert_eq!(got.entries, model.entries, "calls={calls}");
        let got_snap = got.snapshot.as_ref().expect("a snapshot");
        if got_snap.meta == new.meta {
            new_seen += 1;
            assert!(
                got_snap.data == new.data,
                "calls={calls}: new snapshot's bytes"
            );
        } else {
            old_seen += 1;
            assert_eq!(got_snap.meta, snaps[2].meta, "calls={calls}");
            assert!(
                got_snap.data == snaps[2].data,
                "calls={calls}: old snapshot's bytes"
            );
            assert!(wrote.is_err(), "calls={calls}: a finished write was lost");
        }
        let names = dd.fs_mut().list(&raft_dir()).unwrap();
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "calls={calls}: {names:?}"
        );
        let snapshots = names.iter().filter(|n| n.ends_with(".snap")).count();
        assert!(snapshots <= 2, "calls={calls}: {names:?}");
    }
    assert!(
        completed && old_seen > 0 && new_seen > 0,
        "old {old_seen}, new {new_seen}"
    );
}
