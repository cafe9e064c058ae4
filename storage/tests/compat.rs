//! Data dirs written by earlier builds still load: their snapshot files hold
//! the old `Snapshot { snapshot, compact_to }` record and their segments
//! may hold an `Append` that overlaps the log (meaning "replace from
//! here"). Recovery maps them to the new ops (`WalRecord::ops`) and the
//! result is what the old format meant; writing on goes on in the new
//! format.

mod support;

use std::path::Path;

use support::*;
use tern_core::raft::{Durable, HardState};
use tern_core::wire::wal::{encode_record, WalRecord};
use tern_core::{LogIndex, PersistOp, Term};
use tern_storage::{Fs, SimFs, Storage};

fn write(fs: &mut SimFs, name: &str, records: &[WalRecord]) {
    let path = raft_dir().join(name);
    let mut bytes = Vec::new();
    for r in records {
        encode_record(r, &mut bytes);
    }
    fs.create(&path).unwrap();
    fs.append(&path, &bytes).unwrap();
    fs.sync(&path).unwrap();
}

fn records_of(op: PersistOp) -> Vec<tern_core::raft::Entry> {
    match op {
        PersistOp::Append(e) => e,
        _ => unreachable!(),
    }
}

/// An old data dir: entries 1..=5 of term 1, then 4..=6 of term 2 written
/// over them, and a snapshot at 3 compacted to 2.
fn old_data_dir() -> SimFs {
    let mut fs = SimFs::new(1);
    fs.create_dir_all(&raft_dir()).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    write(
        &mut fs,
        "hardstate",
        &[WalRecord::HardState(HardState {
            term: Term(2),
            vote: None,
        })],
    );
    write(
        &mut fs,
        "log-00000000000000000001.wal",
        &[
            WalRecord::Append(records_of(append(1..=5, 1))),
            WalRecord::Append(records_of(append(4..=6, 2))),
        ],
    );
    write(
        &mut fs,
        "snapshot-00000000000000000003-00000000000000000001.snap",
        &[WalRecord::Snapshot {
            snapshot: snapshot(3, 1),
            compact_to: LogIndex(2),
        }],
    );
    fs.sync_dir(&raft_dir()).unwrap();
    fs
}

fn expected() -> Durable {
    let mut entries = records_of(append(3..=3, 1));
    entries.extend(records_of(append(4..=6, 2)));
    Durable {
        hard_state: HardState {
            term: Term(2),
            vote: None,
        },
        snapshot: Some(snapshot(3, 1)),
        entries,
    }
}

#[test]
fn an_old_data_dir_loads_as_the_old_format_meant() {
    let (_, got, warnings) = open(old_data_dir());
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(got, expected());
}

/// New writes go on in the new format; a newer snapshot replacing the old
/// file does not bring back the entries its `compact_to` dropped.
#[test]
fn an_old_data_dir_takes_new_writes_and_keeps_what_it_dropped_dropped() {
    let (mut dd, mut model, _) = open(old_data_dir());
    for op in [append(7..=8, 2), save(6, 2), save(7, 2)] {
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
    }
    let (_, got, _) = open(dd.into_fs());
    assert_eq!(got, model);
    assert_eq!(got.entries.first().map(|e| e.index), Some(LogIndex(3)));
}
