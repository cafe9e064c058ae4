//! An operator's snapshot restore (`PUT /v1/snapshot`) goes through the log
//! in chunks and swaps the state in on the chunk that completes it (see
//! `core/src/fsm/restore.rs`). Consul's `Snapshot.Restore`
//! (agent/consul/snapshot_endpoint.go) replaces the whole state store and
//! abandons every blocking query; hashicorp/raft's `Restore` moves the
//! index past the snapshot's, which Tern gets with the state machine's
//! index offset.

use tern_core::fsm::{
    ApplyResult, Command, Fsm, KvCommand, KvWrite, RestoreChunk, RestoreError, RestoreProgress,
    RESTORE_CHUNK_BYTES_MAX,
};
use tern_core::rpc::{Blocking, Op, ReadMode, ReplyBody, Request, RpcError};
use tern_core::testkit::Cluster;
use tern_core::{Datacenter, Duration};

fn set(key: &str, value: &str) -> Command {
    Command::Kv(KvCommand::Set(KvWrite {
        key: key.into(),
        flags: 0,
        value: value.as_bytes().to_vec().into(),
    }))
}

/// A state with keys `a`..`e` written at Raft indexes 1..=100 (the last
/// at 100), and its snapshot.
fn source() -> (Fsm, Vec<u8>) {
    let mut fsm = Fsm::new();
    for i in 1..=100u64 {
        let key = ["a", "b", "c", "d", "e"][(i % 5) as usize];
        fsm.apply(i, &set(key, &format!("v{i}")));
    }
    let bytes = fsm.snapshot();
    (fsm, bytes)
}

fn chunks(id: u64, bytes: &[u8], size: usize) -> Vec<RestoreChunk> {
    bytes
        .chunks(size)
        .scan(0u64, |offset, c| {
            let chunk = RestoreChunk {
                id,
                offset: *offset,
                total: bytes.len() as u64,
                data: c.to_vec(),
            };
            *offset += c.len() as u64;
            Some(chunk)
        })
        .collect()
}

fn restore_result(r: ApplyResult) -> Result<RestoreProgress, RestoreError> {
    match r {
        ApplyResult::Restore(r) => r,
        other => panic!("not a restore result: {other:?}"),
    }
}

/// A fresh state with one key of its own, applied through Raft index 3.
fn target() -> Fsm {
    let mut fsm = Fsm::new();
    fsm.apply(1, &set("mine", "x"));
    fsm.apply_other(2);
    fsm.apply(3, &set("mine2", "y"));
    fsm
}

#[test]
fn the_last_chunk_swaps_the_state_in_and_indexes_move_past_the_snapshot() {
    let (src, bytes) = source();
    let mut fsm = target();
    let before = fsm.kv_get("mine").expect("own key");
    let parts = chunks(7, &bytes, 10);
    assert!(parts.len() > 3, "the snapshot spans several chunks");
    let mut raft = 4;
    for (i, c) in parts.iter().enumerate() {
        let r = restore_result(fsm.apply(raft, &Command::RestoreChunk(c.clone())));
        let p = r.expect("chunk accepted");
        assert_eq!(p.received, c.offset + c.data.len() as u64);
        if i + 1 < parts.len() {
            assert_eq!(p.restored_index, None);
            // Nothing readable changes until the last chunk.
            assert_eq!(fsm.kv_get("mine"), Some(before.clone()));
            assert_eq!(fsm.kv_get("a"), None);
            assert_eq!(fsm.restore_in_progress(), Some((7, p.received, p.total)));
        } else {
            assert_eq!(p.restored_index, Some(100));
        }
        raft += 1;
    }
    assert_eq!(fsm.restore_in_progress(), None);
    assert_eq!(fsm.kv_get("mine"), None, "the old state is gone");
    for key in ["a", "b", "c", "d", "e"] {
        assert_eq!(fsm.kv_get(key), src.kv_get(key), "{key} restored as saved");
    }
    assert_eq!(fsm.kv_index(), src.kv_index());
    // The entry that completed the restore counts as index 101, past the
    // snapshot's 100, though the log is only at `raft - 1`.
    let last = raft - 1;
    assert!(last < 100);
    assert_eq!(fsm.last_applied(), last);
    assert_eq!(fsm.index(), 101);
    // The next write records an index past everything restored.
    fsm.apply(raft, &set("a", "after"));
    let a = fsm.kv_get("a").unwrap();
    assert_eq!(a.modify_index, 102);
    assert_eq!(fsm.kv_index(), 102);
    // And the offset survives a snapshot of the restored state.
    let again = Fsm::restore(&fsm.snapshot()).expect("restores");
    assert_eq!(again.state_hash(), fsm.state_hash());
    assert_eq!(again.index(), 102);
}

#[test]
fn a_restore_onto_a_state_further_ahead_keeps_indexes_increasing() {
    let (_, bytes) = source(); // at index 100
    let mut fsm = Fsm::new();
    for i in 1..=500 {
        fsm.apply(i, &set("k", &format!("{i}")));
    }
    let parts = chunks(1, &bytes, RESTORE_CHUNK_BYTES_MAX);
    assert_eq!(parts.len(), 1);
    let p = restore_result(fsm.apply(501, &Command::RestoreChunk(parts[0].clone()))).unwrap();
    assert_eq!(p.restored_index, Some(100));
    assert_eq!(fsm.index(), 501, "no offset needed: the log is past it");
    fsm.apply(502, &set("z", "1"));
    assert_eq!(fsm.kv_get("z").unwrap().modify_index, 502);
}

#[test]
fn a_snapshot_taken_halfway_finishes_the_restore_identically() {
    let (_, bytes) = source();
    let parts = chunks(9, &bytes, 16);
    let half = parts.len() / 2;
    let mut straight = target();
    let mut raft = 4;
    for c in &parts[..half] {
        restore_result(straight.apply(raft, &Command::RestoreChunk(c.clone()))).unwrap();
        raft += 1;
    }
    // A server that snapshots here (or restarts from this snapshot) must
    // finish the restore exactly as one that did not.
    let mut resumed = Fsm::restore(&straight.snapshot()).expect("a staged restore restores");
    assert_eq!(resumed.state_hash(), straight.state_hash());
    assert_eq!(
        resumed.restore_in_progress(),
        straight.restore_in_progress()
    );
    for c in &parts[half..] {
        let a = straight.apply(raft, &Command::RestoreChunk(c.clone()));
        let b = resumed.apply(raft, &Command::RestoreChunk(c.clone()));
        assert_eq!(a, b);
        raft += 1;
    }
    assert_eq!(resumed.state_hash(), straight.state_hash());
    assert!(straight.kv_get("a").is_some());
}

#[test]
fn the_staged_bytes_are_in_the_state_hash() {
    let (_, bytes) = source();
    let parts = chunks(3, &bytes, 16);
    let mut x = target();
    let mut y = target();
    restore_result(x.apply(4, &Command::RestoreChunk(parts[0].clone()))).unwrap();
    let mut other = parts[0].clone();
    other.data[0] ^= 1;
    restore_result(y.apply(4, &Command::RestoreChunk(other))).unwrap();
    assert_ne!(x.state_hash(), y.state_hash());
}

#[test]
fn chunks_out_of_order_or_of_another_restore_are_refused_and_change_nothing() {
    let (_, bytes) = source();
    let parts = chunks(5, &bytes, 16);
    let mut fsm = target();
    restore_result(fsm.apply(4, &Command::RestoreChunk(parts[0].clone()))).unwrap();
    restore_result(fsm.apply(5, &Command::RestoreChunk(parts[1].clone()))).unwrap();
    let staged = fsm.restore_in_progress();

    // Skipping a chunk.
    let r = restore_result(fsm.apply(6, &Command::RestoreChunk(parts[3].clone())));
    assert_eq!(
        r,
        Err(RestoreError::OutOfOrder {
            expected: 32,
            got: 48
        })
    );
    // A resent last chunk (its answer was lost) is not staged twice.
    let r = restore_result(fsm.apply(7, &Command::RestoreChunk(parts[1].clone())));
    assert_eq!(r.unwrap().received, 32);
    // Another restore's chunk past offset 0.
    let mut stranger = parts[2].clone();
    stranger.id = 6;
    let r = restore_result(fsm.apply(8, &Command::RestoreChunk(stranger)));
    assert_eq!(r, Err(RestoreError::NotStarted { id: 6 }));
    assert_eq!(fsm.restore_in_progress(), staged, "still staged as it was");
    assert!(fsm.kv_get("mine").is_some());

    // A chunk that runs past the total drops the restore.
    let mut long = parts[2].clone();
    long.data = vec![0; bytes.len()];
    let r = restore_result(fsm.apply(9, &Command::RestoreChunk(long)));
    assert!(matches!(r, Err(RestoreError::BadLength { .. })), "{r:?}");
    assert_eq!(fsm.restore_in_progress(), None);
    let r = restore_result(fsm.apply(10, &Command::RestoreChunk(parts[2].clone())));
    assert_eq!(r, Err(RestoreError::NotStarted { id: 5 }));

    // A new restore at offset 0 replaces an unfinished one.
    restore_result(fsm.apply(11, &Command::RestoreChunk(parts[0].clone()))).unwrap();
    let mut fresh = parts[0].clone();
    fresh.id = 77;
    restore_result(fsm.apply(12, &Command::RestoreChunk(fresh))).unwrap();
    assert_eq!(fsm.restore_in_progress().unwrap().0, 77);
    // An empty snapshot is refused at once.
    let empty = RestoreChunk {
        id: 8,
        offset: 0,
        total: 0,
        data: vec![],
    };
    let r = restore_result(fsm.apply(13, &Command::RestoreChunk(empty)));
    assert_eq!(r, Err(RestoreError::BadLength { total: 0, end: 0 }));
    assert!(fsm.kv_get("mine").is_some());
}

#[test]
fn bytes_that_are_not_a_snapshot_leave_the_state_as_it_was() {
    let mut fsm = target();
    let hash = |f: &Fsm| {
        let mut g = f.clone();
        // Compare what is readable: the hash also covers last_applied.
        (g.kv_list(""), g.kv_index(), {
            g.apply_other(1000);
            g.index()
        })
    };
    let before = hash(&fsm);
    let mut bad = source().1;
    bad.truncate(bad.len() - 3);
    let r = restore_result(fsm.apply(
        4,
        &Command::RestoreChunk(chunks(2, &bad, 1 << 20)[0].clone()),
    ));
    match r {
        Err(RestoreError::Invalid(why)) => assert!(why.contains("malformed"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(hash(&fsm), before);
    assert_eq!(fsm.restore_in_progress(), None);
    // Not a Tern snapshot at all (a gzip header, as a Consul snapshot
    // archive starts).
    let r = restore_result(fsm.apply(
        5,
        &Command::RestoreChunk(RestoreChunk {
            id: 3,
            offset: 0,
            total: 3,
            data: vec![0x1f, 0x8b, 0x08],
        }),
    ));
    assert_eq!(
        r.unwrap_err().to_string(),
        "snapshot restore failed: unsupported snapshot version 31"
    );
}

fn request(op: Op, read_mode: ReadMode) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode,
        blocking: None,
        op,
    }
}

#[test]
fn a_cluster_restores_through_the_log_and_every_server_ends_equal() {
    let (src, bytes) = source();
    let mut c = Cluster::with_voters(3);
    let leader = c
        .run_until_leader(Duration::from_secs(10))
        .expect("a leader");
    let follower = c.servers.keys().copied().find(|id| *id != leader).unwrap();
    let w = c.request(
        leader,
        request(
            Op::KvApply(KvCommand::Set(KvWrite {
                key: "mine".into(),
                flags: 0,
                value: b"x".to_vec().into(),
            })),
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(200));
    let written = c.responses[&(leader, w)].as_ref().unwrap().index;
    // A query parked on `mine` is answered by the restore (Consul abandons
    // every blocking query), though `mine` is gone rather than changed.
    let mut parked = request(Op::KvGet { key: "mine".into() }, ReadMode::Default);
    parked.blocking = Some(Blocking {
        min_index: written,
        max_wait: Duration::from_secs(300),
    });
    let p = c.request(follower, parked);
    c.run_for(Duration::from_millis(200));
    assert!(!c.responses.contains_key(&(follower, p)), "parked");

    // The chunks go through a follower, which forwards them as writes.
    let parts = chunks(11, &bytes, 64);
    let mut last = None;
    for part in parts {
        let r = c.request(
            follower,
            request(Op::SnapshotRestore(part), ReadMode::Default),
        );
        c.run_for(Duration::from_millis(200));
        let reply = c.responses[&(follower, r)].as_ref().expect("chunk applied");
        last = Some(reply.clone());
    }
    let last = last.unwrap();
    match &last.body {
        ReplyBody::Applied(ApplyResult::Restore(Ok(p))) => {
            assert_eq!(p.restored_index, Some(100))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        last.index > 100,
        "the restore's own index is past the snapshot's"
    );
    match &c.responses[&(follower, p)] {
        Ok(r) => assert!(matches!(r.body, ReplyBody::Entry(None)), "{:?}", r.body),
        Err(e) => panic!("{e}"),
    }
    c.run_for(Duration::from_millis(500));
    let hashes: Vec<u64> = c.servers.values().map(|s| s.fsm().state_hash()).collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    for s in c.servers.values() {
        assert_eq!(s.fsm().kv_get("c"), src.kv_get("c"));
        assert_eq!(s.fsm().kv_get("mine"), None);
    }
    // `GET /v1/snapshot`'s index read says where the restored state is.
    let r = c.request(follower, request(Op::SnapshotIndex, ReadMode::Default));
    c.run_for(Duration::from_millis(200));
    assert_eq!(
        c.responses[&(follower, r)].as_ref().unwrap().index,
        last.index
    );
}

#[test]
fn a_chunk_past_the_limits_is_refused_before_the_log() {
    let mut c = Cluster::with_voters(1);
    let leader = c
        .run_until_leader(Duration::from_secs(10))
        .expect("a leader");
    let big = RestoreChunk {
        id: 1,
        offset: 0,
        total: RESTORE_CHUNK_BYTES_MAX as u64 + 1,
        data: vec![1; RESTORE_CHUNK_BYTES_MAX + 1],
    };
    let r = c.request(leader, request(Op::SnapshotRestore(big), ReadMode::Default));
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        c.responses[&(leader, r)],
        Err(RpcError::TooLarge(format!(
            "Snapshot restore chunk exceeds {RESTORE_CHUNK_BYTES_MAX} byte limit"
        )))
    );
    // At the limit it goes through (and, not being a snapshot, fails as
    // one when complete).
    let at = RestoreChunk {
        id: 1,
        offset: 0,
        total: RESTORE_CHUNK_BYTES_MAX as u64,
        data: vec![1; RESTORE_CHUNK_BYTES_MAX],
    };
    let r = c.request(leader, request(Op::SnapshotRestore(at), ReadMode::Default));
    c.run_for(Duration::from_millis(100));
    match &c.responses[&(leader, r)].as_ref().unwrap().body {
        ReplyBody::Applied(ApplyResult::Restore(Err(RestoreError::Invalid(_)))) => {}
        other => panic!("{other:?}"),
    }
    let limit = c.servers[&leader].config().snapshot_bytes_max;
    let huge = RestoreChunk {
        id: 2,
        offset: 0,
        total: limit + 1,
        data: vec![1; 10],
    };
    let r = c.request(
        leader,
        request(Op::SnapshotRestore(huge), ReadMode::Default),
    );
    c.run_for(Duration::from_millis(100));
    assert!(
        matches!(&c.responses[&(leader, r)], Err(RpcError::TooLarge(s)) if s.contains("snapshot_bytes_max")),
        "{:?}",
        c.responses[&(leader, r)]
    );
}
