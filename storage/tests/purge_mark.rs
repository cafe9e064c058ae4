//! What a snapshot costs the log lane (issue 7): a purge that deletes no
//! segment appends a `PurgeUpTo` mark to the log and nothing else (no
//! fsync, rename or directory fsync of `purged`); adopting an own snapshot
//! file in steady state costs one log fsync and leaves the old file's
//! unlink to the driver's snapshot lane; and the marks survive crashes and
//! truncations, counted on `SimFs`.

mod support;

use support::*;
use tern_core::raft::Durable;
use tern_core::PersistOp;
use tern_storage::{remove_superseded, write_snapshot_file, DataDir, SimFs, SimFsStats, Storage};

fn persist_all(dd: &mut DataDir<SimFs>, model: &mut Durable, ops: &[(PersistOp, bool)]) {
    for (op, sync) in ops {
        dd.persist(op, *sync)
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
        model.apply(op).unwrap();
    }
}

fn delta(after: SimFsStats, before: SimFsStats) -> SimFsStats {
    SimFsStats {
        writes: after.writes - before.writes,
        bytes_written: after.bytes_written - before.bytes_written,
        syncs: after.syncs - before.syncs,
        dir_syncs: after.dir_syncs - before.dir_syncs,
        renames: after.renames - before.renames,
        removes: after.removes - before.removes,
        writebacks: after.writebacks - before.writebacks,
        faults: after.faults - before.faults,
    }
}

fn files(fs: &mut SimFs) -> Vec<String> {
    use tern_storage::Fs;
    fs.list(&raft_dir()).unwrap()
}

fn snapshot_files(fs: &mut SimFs) -> Vec<String> {
    files(fs)
        .into_iter()
        .filter(|n| n.starts_with("snapshot-"))
        .collect()
}

/// Large segments: every entry here stays in the first one.
fn open_one_segment(fs: SimFs) -> (DataDir<SimFs>, Durable) {
    let (dd, durable, _) = DataDir::open(fs, &dir(), 1 << 20).unwrap();
    (dd, durable)
}

/// The purge after every snapshot usually deletes no segment: it is one
/// record appended to the log, durable with the next log fsync.
#[test]
fn a_purge_that_deletes_no_segment_appends_a_mark_and_nothing_else() {
    let (mut dd, mut model) = open_one_segment(SimFs::new(1));
    persist_all(
        &mut dd,
        &mut model,
        &[
            (hard_state(1, None), true),
            (append(1..=20, 1), true),
            (save(15, 1), true),
        ],
    );

    // Phase 1: the purge, unsynced, as the core issues it.
    let before = dd.fs_mut().stats();
    persist_all(&mut dd, &mut model, &[(purge(12), false)]);
    let cost = delta(dd.fs_mut().stats(), before);
    assert_eq!(
        (
            cost.writes,
            cost.syncs,
            cost.dir_syncs,
            cost.renames,
            cost.removes
        ),
        (1, 0, 0, 0, 0),
        "one append of the mark, no fsync, rename, unlink or directory fsync: {cost:?}"
    );

    // Phase 2: the next synced append makes the mark durable with it; a
    // crash then keeps the purge (entries 1..=12 gone).
    persist_all(&mut dd, &mut model, &[(append(21..=21, 1), true)]);
    let mut fs = dd.into_fs();
    fs.crash();
    let (dd, got) = open_one_segment(fs);
    assert_eq!(got, model);
    assert_eq!(got.entries.first().map(|e| e.index.0), Some(13));

    // Phase 3: a later, lower purge brings nothing back, and costs nothing.
    let (mut dd, mut model) = (dd, got);
    let before = dd.fs_mut().stats();
    persist_all(&mut dd, &mut model, &[(purge(10), true)]);
    assert_eq!(delta(dd.fs_mut().stats(), before).writes, 0);
    let (_, got, _) = DataDir::open(dd.into_fs(), &dir(), 1 << 20).unwrap();
    assert_eq!(got, model);
}

/// The snapshot lane's steady state: the file is written beside the log,
/// the log lane adopts it and purges, and the oldest file is handed to the
/// driver. The log lane pays one fsync (the appends the snapshot depends
/// on) and no directory fsync.
#[test]
fn adopting_a_snapshot_in_steady_state_costs_the_log_lane_one_fsync() {
    let (mut dd, mut model) = open_one_segment(SimFs::new(2));
    persist_all(&mut dd, &mut model, &[(hard_state(1, None), true)]);
    let mut last = 0;
    for round in 1..=4u64 {
        // Appends the core has not fsynced yet (a coalescing driver).
        persist_all(
            &mut dd,
            &mut model,
            &[(append(last + 1..=last + 10, 1), false)],
        );
        last += 10;
        let snap = snapshot(last - 2, 1);
        dd.sync().unwrap(); // the core snapshots only durable entries
        write_snapshot_file(dd.fs_mut(), &dir(), &snap).unwrap();
        persist_all(
            &mut dd,
            &mut model,
            &[(append(last + 1..=last + 1, 1), false)],
        );
        last += 1;

        let before = dd.fs_mut().stats();
        persist_all(
            &mut dd,
            &mut model,
            &[
                (PersistOp::SaveSnapshot(snap), true),
                (purge(last - 6), false),
            ],
        );
        let cost = delta(dd.fs_mut().stats(), before);
        assert_eq!(
            (cost.syncs, cost.dir_syncs, cost.renames, cost.removes),
            (1, 0, 0, 0),
            "round {round}: the log lane's cost of a snapshot: {cost:?}"
        );

        // The driver deletes what the data dir no longer keeps, beside the
        // log: from the third snapshot on, the oldest file.
        let gone = dd.take_superseded();
        assert_eq!(gone.len(), usize::from(round >= 3), "round {round}");
        let before = dd.fs_mut().stats();
        remove_superseded(dd.fs_mut(), &gone).unwrap();
        let cost = delta(dd.fs_mut().stats(), before);
        assert_eq!((cost.removes, cost.dir_syncs), (gone.len() as u64, 0));
        assert_eq!(snapshot_files(dd.fs_mut()).len(), round.min(2) as usize);
    }

    // A crash may bring back an unlink that was never made durable:
    // recovery deletes it again, and the state is the model's.
    persist_all(
        &mut dd,
        &mut model,
        &[(append(last + 1..=last + 1, 1), true)],
    );
    let mut fs = dd.into_fs();
    fs.crash();
    let (mut dd, got) = open_one_segment(fs);
    assert_eq!(got, model);
    assert_eq!(snapshot_files(dd.fs_mut()).len(), 2);
}

/// A purge that deletes segments, with the machine dying after every
/// possible number of filesystem calls (and a synced append after it):
/// recovery gives the state before the purge, after it, after the append,
/// or the documented partial purge (a suffix of the log).
#[test]
fn a_purge_that_deletes_segments_recovers_from_a_crash_at_every_step() {
    let mut partial = 0;
    for seed in 0..4 {
        let (mut dd, mut model, _) = open(SimFs::new(seed));
        persist_all(&mut dd, &mut model, &[(hard_state(1, None), true)]);
        for i in 1..=40 {
            persist_all(&mut dd, &mut model, &[(append(i..=i, 1), i % 3 == 0)]);
        }
        persist_all(&mut dd, &mut model, &[(save(35, 1), true)]);
        let segments = segment_files(dd.fs_mut()).len();
        assert!(segments >= 4, "{segments} segments: too few to delete some");
        let start = dd.into_fs();

        let ops = [(purge(30), false), (append(41..=41, 1), true)];
        let mut states = vec![model.clone()];
        for (op, _) in &ops {
            let mut m = states.last().unwrap().clone();
            m.apply(op).unwrap();
            states.push(m);
        }
        let (before, purged, appended) = (&states[0], &states[1], &states[2]);
        for calls in 0..=40 {
            let (mut dd, _, _) = open(start.clone());
            dd.fs_mut().die_after(calls);
            let mut done = 0;
            for (op, sync) in &ops {
                if dd.persist(op, *sync).is_err() {
                    break;
                }
                done += 1;
            }
            let mut fs = dd.into_fs();
            fs.crash();
            let (_, got, _) = open(fs);
            let suffix = got.hard_state == purged.hard_state
                && got.snapshot == purged.snapshot
                && got.entries.ends_with(&purged.entries)
                && before.entries.ends_with(&got.entries);
            partial += usize::from(suffix && got != *before && got != *purged);
            assert!(
                got == *before || got == *purged || got == *appended || suffix,
                "seed {seed}, dying after {calls} calls ({done} ops done): recovered {:?}",
                got.entries.iter().map(|e| e.index.0).collect::<Vec<_>>()
            );
            if done == ops.len() {
                assert!(
                    got == *appended,
                    "the synced append and the purge before it"
                );
            }
        }
    }
    assert!(
        partial > 0,
        "no crash left a partial purge: the test does not reach it"
    );
}

/// A truncation that deletes the segment holding the purge mark while a
/// segment below still holds purged entries writes the mark to `purged`
/// first: the purged entries never come back.
#[test]
fn a_truncation_that_deletes_the_marked_segment_keeps_the_purge() {
    let (mut dd, mut model, _) = open(SimFs::new(4));
    persist_all(&mut dd, &mut model, &[(hard_state(1, None), true)]);
    for i in 1..=12 {
        persist_all(&mut dd, &mut model, &[(append(i..=i, 1), true)]);
    }
    persist_all(
        &mut dd,
        &mut model,
        &[(save(4, 1), true), (purge(3), false)],
    );
    // More segments after the one holding the mark.
    for i in 13..=30 {
        persist_all(&mut dd, &mut model, &[(append(i..=i, 1), true)]);
    }
    let segments = segment_files(dd.fs_mut());
    assert!(segments.len() >= 3, "{segments:?}");
    // A conflicting suffix from the second segment on.
    assert!(!files(dd.fs_mut()).contains(&"purged".to_string()));
    let second = segments[1]
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("log-"))
        .and_then(|n| n.strip_suffix(".wal"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    persist_all(
        &mut dd,
        &mut model,
        &[
            (hard_state(2, None), true),
            (truncate(second), false),
            (append(second..=second, 2), true),
        ],
    );
    assert!(
        files(dd.fs_mut()).contains(&"purged".to_string()),
        "the mark went with its segment and was not kept in purged"
    );
    let mut fs = dd.into_fs();
    fs.crash();
    let (_, got, _) = open(fs);
    assert_eq!(got, model);
    assert_eq!(got.entries.first().map(|e| e.index.0), Some(4));
}

/// Sixty entries, one append each (several segments), and a snapshot at 55
/// saved: a purge below it finds many dead segments.
fn sixty_entries_and_a_snapshot_at_55(seed: u64) -> (DataDir<SimFs>, Durable) {
    let (mut dd, mut model, _) = open(SimFs::new(seed));
    persist_all(&mut dd, &mut model, &[(hard_state(1, None), true)]);
    for i in 1..=60 {
        persist_all(&mut dd, &mut model, &[(append(i..=i, 1), true)]);
    }
    persist_all(&mut dd, &mut model, &[(save(55, 1), true)]);
    (dd, model)
}

/// A purge that finds many dead segments deletes one itself and leaves the
/// rest to the appends after it, one each: each deletion is an unlink and
/// a directory fsync on the log lane, and ten of them in one job held
/// appends over 100 ms. Meanwhile the state read back is the purged one.
#[test]
fn a_purge_deletes_one_dead_segment_and_each_append_after_it_one_more() {
    let (mut dd, mut model) = sixty_entries_and_a_snapshot_at_55(7);
    let before = segment_files(dd.fs_mut()).len();
    assert!(before >= 6, "{before} segments: too few to show the spread");

    let removes = dd.fs_mut().stats().removes;
    persist_all(&mut dd, &mut model, &[(purge(50), true)]);
    assert_eq!(
        dd.fs_mut().stats().removes - removes,
        tern_storage::DEAD_SEGMENTS_PER_WRITE as u64,
        "the purge deletes one segment itself"
    );
    assert_eq!(segment_files(dd.fs_mut()).len(), before - 1);
    // Recovery now already reads the purged state: the dead segments still
    // on disk are below the mark.
    let (_, got, _) = open(dd.fs_mut().clone());
    assert_eq!(got, model, "dead segments on disk are dead for recovery");

    // Each append deletes one more, until none is dead; then none.
    let mut per_append = Vec::new();
    for i in 61..=80 {
        let removes = dd.fs_mut().stats().removes;
        persist_all(&mut dd, &mut model, &[(append(i..=i, 1), true)]);
        per_append.push(dd.fs_mut().stats().removes - removes);
    }
    let carried = per_append.iter().take_while(|&&d| d == 1).count();
    assert!(
        carried >= 2,
        "appends carried the deletions: {per_append:?}"
    );
    assert!(
        per_append[carried..].iter().all(|&d| d == 0),
        "one per append, then none: {per_append:?}"
    );
    let (_, got, _) = open(dd.into_fs());
    assert_eq!(got, model);
    assert_eq!(got.entries.first().map(|e| e.index.0), Some(51));
}

/// On a full disk the dead segments still go: an append deletes one before
/// it writes, so each refused append frees space for the next.
#[test]
fn a_refused_append_on_a_full_disk_still_deletes_a_dead_segment() {
    let (mut dd, mut model) = sixty_entries_and_a_snapshot_at_55(8);
    persist_all(&mut dd, &mut model, &[(purge(50), true)]);
    dd.fs_mut().set_full(true);
    let removes = dd.fs_mut().stats().removes;
    let e = dd.persist(&append(61..=61, 1), true).unwrap_err();
    assert!(
        matches!(e, tern_storage::StorageError::NoSpace { .. }),
        "{e}"
    );
    assert_eq!(dd.fs_mut().stats().removes - removes, 1);
    dd.fs_mut().set_full(false);
    persist_all(&mut dd, &mut model, &[(append(61..=61, 1), true)]);
    let (_, got, _) = open(dd.into_fs());
    assert_eq!(got, model);
}

/// A server that takes no writes after a purge still gives the space back:
/// `tidy`, which the drivers call while no write waits, deletes one dead
/// segment per call (an unlink and a directory fsync, nothing else) and
/// says whether more are left; the state read back never changes.
#[test]
fn tidy_deletes_the_dead_segments_one_per_call_while_no_write_comes() {
    let (mut dd, mut model) = sixty_entries_and_a_snapshot_at_55(9);
    persist_all(&mut dd, &mut model, &[(purge(50), true)]);
    let dead = dd.dead_segments();
    assert!(
        dead >= 2,
        "{dead} dead segments: too few to show the spread"
    );
    let files_before = segment_files(dd.fs_mut()).len();
    let mut answers = Vec::new();
    loop {
        let before = dd.fs_mut().stats();
        let more = dd.tidy().unwrap();
        let cost = delta(dd.fs_mut().stats(), before);
        assert_eq!(
            (cost.removes, cost.dir_syncs, cost.writes, cost.syncs),
            (1, 1, 0, 0),
            "one unlink and one directory fsync per call"
        );
        answers.push(more);
        let (_, got, _) = open(dd.fs_mut().clone());
        assert_eq!(got, model, "tidying changed the state read back");
        if !more {
            break;
        }
    }
    assert_eq!(answers.len(), dead, "{answers:?}");
    assert_eq!(dd.dead_segments(), 0);
    assert_eq!(segment_files(dd.fs_mut()).len(), files_before - dead);
    // Nothing left: a call costs nothing.
    let before = dd.fs_mut().stats();
    assert!(!dd.tidy().unwrap());
    assert_eq!(delta(dd.fs_mut().stats(), before), SimFsStats::default());
    // And the log carries on.
    persist_all(&mut dd, &mut model, &[(append(61..=61, 1), true)]);
    let (_, got, _) = open(dd.into_fs());
    assert_eq!(got, model);
}

/// A tidy whose directory fsync fails is fatal, as a failed durable write
/// is (never carry on after a failed fsync): the error names the
/// directory, every later write is refused, and what recovery reads is
/// still the state before.
#[test]
fn a_tidy_whose_directory_fsync_fails_stops_the_data_dir() {
    let (mut dd, mut model) = sixty_entries_and_a_snapshot_at_55(10);
    persist_all(&mut dd, &mut model, &[(purge(50), true)]);
    assert!(dd.dead_segments() >= 1);
    dd.fs_mut()
        .fail_next(tern_storage::FsOp::SyncDir, tern_storage::EIO);
    let e = dd.tidy().unwrap_err().to_string();
    assert!(e.contains("raft"), "{e}");
    assert!(matches!(
        dd.persist(&append(61..=61, 1), true),
        Err(tern_storage::StorageError::Failed { .. })
    ));
    assert!(dd.tidy().is_err());
    let (_, got, _) = open(dd.into_fs());
    assert_eq!(got, model);
}
