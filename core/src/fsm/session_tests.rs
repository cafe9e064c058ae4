//! Sessions and KV locks, exactly: each test after the Consul state-store
//! behaviour it names (agent/consul/state/session.go `sessionCreateTxn`,
//! `deleteSessionTxn`; kvs.go `kvsLockTxn`, `kvsUnlockTxn`; catalog.go's
//! session invalidation in `ensureCheckTxn`, `deleteCheckTxn`,
//! `deleteNodeTxn`).

use super::*;
use crate::serf_health::{SERF_CHECK_ALIVE_OUTPUT, SERF_CHECK_ID};

fn register(fsm: &mut Fsm, index: u64, node: &str, check: &str, status: &str) {
    let reg = Register {
        id: String::new(),
        node: node.to_owned(),
        address: "10.0.0.1".to_owned(),
        datacenter: "dc1".to_owned(),
        tagged_addresses: None,
        node_meta: None,
        service: None,
        checks: vec![Check {
            node: node.to_owned(),
            check_id: check.to_owned(),
            name: check.to_owned(),
            status: status.to_owned(),
            notes: String::new(),
            output: SERF_CHECK_ALIVE_OUTPUT.to_owned(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: None,
            kind: String::new(),
            definition: CheckDefinition::default(),
            create_index: 0,
            modify_index: 0,
        }],
        skip_node_update: false,
    };
    let r = fsm.apply(index, &Command::CatalogRegister(Box::new(reg)));
    assert_eq!(r, ApplyResult::Catalog(Ok(())));
}

fn session(id: &str, node: &str) -> Session {
    Session {
        id: id.to_owned(),
        node: node.to_owned(),
        lock_delay_ns: 15_000_000_000,
        node_checks: vec![SERF_CHECK_ID.to_owned()],
        ..Session::default()
    }
}

fn create(fsm: &mut Fsm, index: u64, s: Session) -> ApplyResult {
    fsm.apply(index, &Command::SessionCreate(Box::new(s)))
}

fn write(key: &str, value: &str) -> KvWrite {
    KvWrite {
        key: key.to_owned(),
        flags: 0,
        value: value.as_bytes().to_vec().into(),
    }
}

fn lock(fsm: &mut Fsm, index: u64, key: &str, value: &str, session: &str) -> ApplyResult {
    let cmd = KvCommand::Lock {
        write: write(key, value),
        session: session.to_owned(),
    };
    fsm.apply(index, &Command::Kv(cmd))
}

fn unlock(fsm: &mut Fsm, index: u64, key: &str, value: &str, session: &str) -> ApplyResult {
    let cmd = KvCommand::Unlock {
        write: write(key, value),
        session: session.to_owned(),
    };
    fsm.apply(index, &Command::Kv(cmd))
}

/// A node `n1` with serfHealth passing and sessions `s1` and `s2` on it.
fn two_sessions() -> Fsm {
    let mut fsm = Fsm::new();
    register(&mut fsm, 1, "n1", SERF_CHECK_ID, "passing");
    assert_eq!(
        create(&mut fsm, 2, session("s1", "n1")),
        ApplyResult::Session("s1".into())
    );
    assert_eq!(
        create(&mut fsm, 3, session("s2", "n1")),
        ApplyResult::Session("s2".into())
    );
    fsm
}

/// `TestStateStore_SessionCreate_SessionGet`: a missing node, a missing
/// check and a critical check refuse the create with Consul's texts;
/// a create sets both indexes and the table index.
#[test]
fn create_needs_the_node_and_healthy_checks() {
    let mut fsm = Fsm::new();
    assert_eq!(
        create(&mut fsm, 1, session("s1", "n1")),
        ApplyResult::Refused("Missing node registration".into())
    );
    register(&mut fsm, 2, "n1", "other", "passing");
    assert_eq!(
        create(&mut fsm, 3, session("s1", "n1")),
        ApplyResult::Refused("Missing check 'serfHealth' registration".into())
    );
    register(&mut fsm, 4, "n1", SERF_CHECK_ID, "critical");
    assert_eq!(
        create(&mut fsm, 5, session("s1", "n1")),
        ApplyResult::Refused("Check 'serfHealth' is in critical state".into())
    );
    assert_eq!(fsm.sessions_index(), 0, "nothing created");
    register(&mut fsm, 6, "n1", SERF_CHECK_ID, "warning");
    assert_eq!(
        create(&mut fsm, 7, session("s1", "n1")),
        ApplyResult::Session("s1".into())
    );
    let s = fsm.session("s1").unwrap();
    assert_eq!((s.create_index, s.modify_index), (7, 7));
    assert_eq!(fsm.sessions_index(), 7);
    // The node's name in any case; the same ID twice is refused.
    assert_eq!(fsm.node_sessions("N1").len(), 1);
    assert_eq!(
        create(&mut fsm, 8, session("s1", "n1")),
        ApplyResult::Refused("session \"s1\" already exists".into())
    );
    // No checks at all: only the node is needed.
    let bare = Session {
        node_checks: vec![],
        ..session("s2", "n1")
    };
    assert_eq!(create(&mut fsm, 9, bare), ApplyResult::Session("s2".into()));
    assert_eq!(
        fsm.sessions()
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["s1", "s2"]
    );
}

/// `kvsLockTxn`/`kvsUnlockTxn`: the rules of acquire and release.
#[test]
fn acquire_and_release_follow_consul() {
    let mut fsm = two_sessions();
    assert_eq!(
        lock(&mut fsm, 4, "k", "v", "nope"),
        ApplyResult::Refused("invalid session \"nope\"".into())
    );
    assert_eq!(
        lock(&mut fsm, 5, "k", "v", ""),
        ApplyResult::Refused("missing session".into())
    );
    assert_eq!(fsm.kv_get("k"), None, "a refused acquire writes nothing");

    // A new key: taken, lock index 1.
    assert_eq!(lock(&mut fsm, 6, "k", "v1", "s1"), ApplyResult::Kv(true));
    let e = fsm.kv_dir_entry("k").unwrap();
    assert_eq!(
        (
            e.session.as_str(),
            e.lock_index,
            e.create_index,
            e.modify_index
        ),
        ("s1", 1, 6, 6)
    );
    // The holder again: true, the value written, the lock index kept.
    assert_eq!(lock(&mut fsm, 7, "k", "v2", "s1"), ApplyResult::Kv(true));
    let e = fsm.kv_dir_entry("k").unwrap();
    assert_eq!(
        (e.value.as_slice(), e.lock_index, e.modify_index),
        (&b"v2"[..], 1, 7)
    );
    // Another session: false, nothing written.
    assert_eq!(lock(&mut fsm, 8, "k", "v3", "s2"), ApplyResult::Kv(false));
    assert_eq!(fsm.kv_dir_entry("k").unwrap().modify_index, 7);
    // A release by a non-holder: false.
    assert_eq!(unlock(&mut fsm, 9, "k", "x", "s2"), ApplyResult::Kv(false));
    assert_eq!(
        unlock(&mut fsm, 10, "missing", "x", "s1"),
        ApplyResult::Kv(false)
    );
    // A plain PUT keeps the holder (Consul's `kvsSetTxn` without
    // `updateSession`).
    let set = Command::Kv(KvCommand::Set(write("k", "plain")));
    assert_eq!(fsm.apply(11, &set), ApplyResult::Kv(true));
    assert_eq!(fsm.kv_lock_holder("k"), Some("s1"));
    // The holder releases: session cleared, lock index kept, value written.
    assert_eq!(
        unlock(&mut fsm, 12, "k", "rel", "s1"),
        ApplyResult::Kv(true)
    );
    let e = fsm.kv_dir_entry("k").unwrap();
    assert_eq!(
        (
            e.session.as_str(),
            e.lock_index,
            e.modify_index,
            e.value.as_slice()
        ),
        ("", 1, 12, &b"rel"[..])
    );
    // Taken again by another: the lock index moves to 2.
    assert_eq!(lock(&mut fsm, 13, "k", "v", "s2"), ApplyResult::Kv(true));
    assert_eq!(fsm.kv_dir_entry("k").unwrap().lock_index, 2);
    // A locked key may be deleted (as in Consul), which frees it.
    let del = Command::Kv(KvCommand::Delete { key: "k".into() });
    assert_eq!(fsm.apply(14, &del), ApplyResult::Kv(true));
    assert_eq!(lock(&mut fsm, 15, "k", "v", "s1"), ApplyResult::Kv(true));
    assert_eq!(fsm.kv_dir_entry("k").unwrap().lock_index, 1);
}

/// `deleteSessionTxn`: behavior release clears the session from each key
/// it holds (lock index kept, modify index moved) and reports the lock
/// delay per key, capped at 60 s; behavior delete deletes them.
#[test]
fn destroy_releases_or_deletes_and_reports_lock_delays() {
    let mut fsm = two_sessions();
    let mut long = session("s3", "n1");
    long.lock_delay_ns = 90_000_000_000;
    long.behavior = SessionBehavior::Delete;
    create(&mut fsm, 4, long);
    lock(&mut fsm, 5, "a", "1", "s1");
    lock(&mut fsm, 6, "b", "2", "s1");
    lock(&mut fsm, 7, "c", "3", "s3");
    lock(&mut fsm, 8, "d", "4", "s2");
    fsm.take_lock_delays();
    fsm.take_touched_keys();

    let destroy = |id: &str| Command::SessionDestroy { id: id.to_owned() };
    assert_eq!(
        fsm.apply(9, &destroy("s1")),
        ApplyResult::Session("s1".into())
    );
    assert!(fsm.session("s1").is_none());
    assert_eq!(fsm.sessions_index(), 9);
    for key in ["a", "b"] {
        let e = fsm.kv_dir_entry(key).unwrap();
        assert_eq!(
            (e.session.as_str(), e.lock_index, e.modify_index),
            ("", 1, 9)
        );
    }
    assert_eq!(
        fsm.take_lock_delays(),
        vec![
            ("a".to_owned(), 15_000_000_000),
            ("b".to_owned(), 15_000_000_000)
        ]
    );
    assert_eq!(fsm.take_touched_keys(), ["a", "b"]);
    assert_eq!(
        fsm.kv_lock_holder("d"),
        Some("s2"),
        "another session's lock stays"
    );

    fsm.apply(10, &destroy("s3"));
    assert_eq!(fsm.kv_get("c"), None, "behavior delete deletes the key");
    assert_eq!(fsm.kv_index_for_prefix("c"), 10, "and leaves a tombstone");
    assert_eq!(
        fsm.take_lock_delays(),
        vec![("c".to_owned(), 60_000_000_000)]
    );
    // Destroying a session that is not there changes nothing but time.
    let before = fsm.clone();
    assert_eq!(
        fsm.apply(11, &destroy("s3")),
        ApplyResult::Session("s3".into())
    );
    assert_eq!(fsm.sessions_index(), before.sessions_index());
    assert_eq!(fsm.kv_index(), before.kv_index());
}

/// Consul's catalog invalidates a session when its node goes, or one of
/// its checks goes critical or away, releasing its locks at that index.
#[test]
fn the_catalog_invalidates_sessions() {
    // A check turning critical.
    let mut fsm = two_sessions();
    lock(&mut fsm, 4, "k", "v", "s1");
    register(&mut fsm, 5, "n1", SERF_CHECK_ID, "warning");
    assert!(fsm.session("s1").is_some(), "warning is not critical");
    register(&mut fsm, 6, "n1", SERF_CHECK_ID, "critical");
    assert!(fsm.sessions().is_empty());
    assert_eq!(fsm.sessions_index(), 6);
    let e = fsm.kv_dir_entry("k").unwrap();
    assert_eq!((e.session.as_str(), e.modify_index), ("", 6));
    assert_eq!(
        fsm.take_lock_delays(),
        vec![("k".to_owned(), 15_000_000_000)]
    );

    // The node deregistered.
    let mut fsm = two_sessions();
    let dereg = |check: &str| {
        Command::CatalogDeregister(Deregister {
            node: "N1".into(),
            service_id: String::new(),
            check_id: check.into(),
        })
    };
    fsm.apply(4, &dereg(""));
    assert!(fsm.sessions().is_empty());

    // The check deregistered; a session without checks stays.
    let mut fsm = two_sessions();
    let bare = Session {
        node_checks: vec![],
        ..session("s3", "n1")
    };
    create(&mut fsm, 4, bare);
    fsm.apply(5, &dereg(SERF_CHECK_ID));
    assert_eq!(
        fsm.sessions()
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["s3"]
    );
    // Another node's write leaves n1's sessions alone.
    register(&mut fsm, 6, "n2", SERF_CHECK_ID, "critical");
    assert!(fsm.session("s3").is_some());
}

/// `SESSIONS_MAX` at and past its edge.
#[test]
fn the_sessions_table_has_a_limit() {
    let mut fsm = Fsm::new();
    register(&mut fsm, 1, "n1", SERF_CHECK_ID, "passing");
    let mut index = 1;
    for i in 0..SESSIONS_MAX {
        index += 1;
        let r = create(&mut fsm, index, session(&format!("s{i:06}"), "n1"));
        assert!(matches!(r, ApplyResult::Session(_)), "{i}: {r:?}");
    }
    assert_eq!(fsm.sessions().len(), SESSIONS_MAX);
    let r = create(&mut fsm, index + 1, session("one-too-many", "n1"));
    assert_eq!(
        r,
        ApplyResult::Refused(
            "sessions table is full: it holds its limit of 65536 (SESSIONS_MAX)".into()
        )
    );
    // One destroyed: room for one more.
    fsm.apply(
        index + 2,
        &Command::SessionDestroy {
            id: "s000000".into(),
        },
    );
    let r = create(&mut fsm, index + 3, session("one-more", "n1"));
    assert_eq!(r, ApplyResult::Session("one-more".into()));
}

/// Sessions and locks are replicated state: in the hash and the snapshot
/// (format version 5), restored exactly; a lock by an unknown session or
/// on a missing key is refused.
#[test]
fn sessions_and_locks_survive_a_snapshot() {
    let mut fsm = two_sessions();
    let hash_before = fsm.state_hash();
    lock(&mut fsm, 4, "k", "v", "s1");
    assert_ne!(fsm.state_hash(), hash_before);
    let bytes = fsm.snapshot();
    assert_eq!(bytes[0], 5);
    let restored = Fsm::restore(&bytes).unwrap();
    assert_eq!(restored, fsm);
    assert_eq!(restored.state_hash(), fsm.state_hash());
    assert_eq!(restored.kv_lock_holder("k"), Some("s1"));
    // The restored state keeps applying the same way.
    let (mut a, mut b) = (fsm.clone(), restored);
    for f in [&mut a, &mut b] {
        f.apply(5, &Command::SessionDestroy { id: "s1".into() });
    }
    assert_eq!(a, b);
    assert_eq!(a.state_hash(), b.state_hash());

    // A lock naming a session the snapshot does not have.
    let mut snap = snapshot::decode(&fsm.snapshot()).unwrap();
    snap.locks[0].session = "ghost".into();
    let mut bad = vec![5];
    bad.extend(postcard::to_allocvec(&snap).unwrap());
    assert!(matches!(Fsm::restore(&bad), Err(FsmError::Invalid(_))));
    let mut snap = snapshot::decode(&fsm.snapshot()).unwrap();
    snap.locks[0].key = "gone".into();
    let mut bad = vec![5];
    bad.extend(postcard::to_allocvec(&snap).unwrap());
    assert!(matches!(Fsm::restore(&bad), Err(FsmError::Invalid(_))));
}
