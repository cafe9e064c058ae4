//! A snapshot bigger than the largest WAL record (256 MiB) is a file of
//! bounded pieces: it is written, survives a crash once durable, and comes
//! back whole. (Issue 7 found servers dying at ~270 MB of state when a
//! snapshot was one record.) A damaged piece is corruption naming the file.

mod support;

use support::*;
use tern_core::wire::WAL_RECORD_BYTES_MAX;
use tern_core::PersistOp;
use tern_storage::{SimFs, Storage, StorageError};

#[test]
fn a_snapshot_past_the_largest_record_is_written_in_pieces_and_read_back_whole() {
    let (mut dd, mut model, _) = open(SimFs::new(7));
    for op in [hard_state(1, None), append(1..=3, 1)] {
        dd.persist(&op, true).unwrap();
        model.apply(&op).unwrap();
    }
    let mut big = snapshot(3, 1);
    big.data = (0..WAL_RECORD_BYTES_MAX + (16 << 20))
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let save = PersistOp::SaveSnapshot(big.clone());
    dd.persist(&save, true).unwrap();
    model.apply(&save).unwrap();

    let mut fs = dd.into_fs();
    fs.crash();
    let (_, got, _) = open(fs.clone());
    assert_eq!(
        got.snapshot.as_ref().map(|s| s.data.len()),
        Some(big.data.len())
    );
    assert!(got == model, "recovered the same state");

    // One flipped byte inside the last piece: corruption, with the file named.
    let file = fs
        .files()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    let len = fs.contents(&file).unwrap().len();
    assert!(fs.flip_byte(&file, len - 10, 0x40));
    match tern_storage::DataDir::open(fs, &dir(), tern_storage::SEGMENT_BYTES_MAX) {
        Err(StorageError::Corrupt { file: f, .. }) => assert_eq!(f, file),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a damaged snapshot was accepted"),
    }
}
