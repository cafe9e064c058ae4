//! A snapshot's bytes read back from its file (`read_snapshot_data`, what
//! the drivers run for `Action::LoadSnapshot`): a server keeps no copy of
//! its encoded state in memory once the file has it, and reads the file
//! when a follower must be sent it.

mod support;

use support::*;
use tern_core::PersistOp;
use tern_storage::{
    read_snapshot_data, remove_superseded, write_snapshot_file, Fs, SimFs, Storage, StorageError,
};

fn with_snapshots(seed: u64) -> (tern_storage::DataDir<SimFs>, Vec<tern_core::raft::Snapshot>) {
    let (mut dd, _, _) = open(SimFs::new(seed));
    dd.persist(&hard_state(1, None), true).unwrap();
    dd.persist(&append(1..=12, 1), true).unwrap();
    let mut taken = Vec::new();
    for at in [4, 8, 12] {
        let mut snap = snapshot(at, 1);
        // Bigger than one piece of a snapshot file (4 MiB), not a multiple.
        snap.data = (0..(4 << 20) + 1000 + at as usize)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        write_snapshot_file(dd.fs_mut(), &dir(), &snap).unwrap();
        dd.persist(&PersistOp::SaveSnapshot(snap.clone()), true)
            .unwrap();
        taken.push(snap);
    }
    (dd, taken)
}

#[test]
fn a_snapshot_is_read_back_byte_for_byte() {
    let (mut dd, taken) = with_snapshots(1);
    let newest = taken.last().unwrap();
    let got = read_snapshot_data(dd.fs_mut(), &dir(), &newest.meta)
        .unwrap()
        .expect("the newest file is there");
    assert!(got == newest.data, "not the bytes written");
    // And after a crash (the file was fsynced and its rename made durable).
    let mut fs = dd.into_fs();
    fs.crash();
    let got = read_snapshot_data(&mut fs, &dir(), &newest.meta).unwrap();
    assert!(got == Some(newest.data.clone()), "not the bytes written");
}

#[test]
fn a_replaced_snapshot_reads_back_as_none() {
    // Two files are kept: the oldest of three is handed to the driver,
    // which deletes it beside the log.
    let (mut dd, taken) = with_snapshots(2);
    let superseded = dd.take_superseded();
    assert_eq!(superseded.len(), 1);
    remove_superseded(dd.fs_mut(), &superseded).unwrap();
    let got = read_snapshot_data(dd.fs_mut(), &dir(), &taken[0].meta).unwrap();
    assert!(got.is_none(), "the oldest file was deleted");
    let got = read_snapshot_data(dd.fs_mut(), &dir(), &taken[1].meta).unwrap();
    assert!(got == Some(taken[1].data.clone()), "the one before is kept");
}

#[test]
fn a_damaged_snapshot_file_is_corrupt_naming_the_file() {
    let (mut dd, taken) = with_snapshots(3);
    let newest = taken.last().unwrap();
    let name = format!(
        "snapshot-{:020}-{:020}.snap",
        newest.meta.last_index.0, newest.meta.last_term.0
    );
    let path = raft_dir().join(&name);
    let fs = dd.fs_mut();
    let mut bytes = fs.read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs.create(&path).unwrap();
    fs.append(&path, &bytes).unwrap();
    let got = read_snapshot_data(fs, &dir(), &newest.meta);
    match got {
        Err(e @ StorageError::Corrupt { .. }) => {
            assert!(e.to_string().contains(&name), "{e}")
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(d) => panic!("expected corruption, read {:?} bytes", d.map(|d| d.len())),
    }
}
