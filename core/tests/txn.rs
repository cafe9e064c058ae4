//! Transactions (`PUT /v1/txn`) in the state machine and through a
//! cluster, after Consul's agent/consul/state/txn.go: every operation runs
//! in order at one index, each seeing the ones before it; one failure
//! applies nothing and every failure is reported with its position.

use tern_core::fsm::{
    ApplyResult, CatalogVerb, Command, Fsm, KvCommand, KvVerb, KvWrite, Node, Register, Service,
    TxnError, TxnOp, TxnResult, TXN_OPS_MAX,
};
use tern_core::rpc::{Op, ReadMode, ReplyBody, Request, RpcError};
use tern_core::testkit::Cluster;
use tern_core::{Datacenter, Duration};

fn kv(verb: KvVerb, key: &str, value: &str, index: u64) -> TxnOp {
    TxnOp::Kv {
        verb,
        key: key.into(),
        value: value.as_bytes().to_vec().into(),
        flags: 0,
        index,
        session: String::new(),
    }
}

fn set(fsm: &mut Fsm, index: u64, key: &str, value: &str) {
    fsm.apply(
        index,
        &Command::Kv(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: value.as_bytes().to_vec().into(),
        })),
    );
}

fn txn(fsm: &mut Fsm, index: u64, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>, Vec<TxnError>> {
    match fsm.apply(index, &Command::Txn(ops)) {
        ApplyResult::Txn(outcome) => outcome,
        other => panic!("{other:?}"),
    }
}

fn value(fsm: &Fsm, key: &str) -> Option<String> {
    fsm.kv_get(key)
        .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
}

#[test]
fn every_write_lands_at_one_index_and_later_ops_see_earlier_ones() {
    let mut fsm = Fsm::new();
    set(&mut fsm, 1, "a", "old");
    let a = fsm.kv_get("a").unwrap().modify_index;
    let r = txn(
        &mut fsm,
        2,
        vec![
            kv(KvVerb::Cas, "a", "new", a),
            kv(KvVerb::Set, "b", "bee", 0),
            kv(KvVerb::Get, "b", "", 0),
            kv(KvVerb::CheckIndex, "a", "", 2),
            kv(KvVerb::Delete, "gone", "", 0),
        ],
    )
    .expect("applied");
    assert_eq!(r.len(), 4, "{r:?}");
    // A write's entry comes back without its value; a get's with it.
    match &r[0] {
        TxnResult::Kv(e) => {
            assert_eq!((e.key.as_str(), e.modify_index, e.value.len()), ("a", 2, 0));
            assert_eq!(e.create_index, 1);
        }
        other => panic!("{other:?}"),
    }
    match &r[2] {
        TxnResult::Kv(e) => assert_eq!(e.value, b"bee"),
        other => panic!("{other:?}"),
    }
    assert_eq!(value(&fsm, "a").as_deref(), Some("new"));
    assert_eq!(fsm.kv_get("b").unwrap().modify_index, 2);
    assert_eq!(fsm.kv_index(), 2);
}

#[test]
fn one_failure_applies_nothing_and_every_failure_is_named() {
    let mut fsm = Fsm::new();
    set(&mut fsm, 1, "a", "old");
    let before = (fsm.kv_list(""), fsm.kv_index());
    let e = txn(
        &mut fsm,
        2,
        vec![
            kv(KvVerb::Set, "b", "bee", 0),
            kv(KvVerb::Cas, "a", "x", 99),
            kv(KvVerb::Delete, "a", "", 0),
            kv(KvVerb::Get, "missing", "", 0),
            kv(KvVerb::CheckIndex, "a", "", 1),
            kv(KvVerb::CheckNotExists, "b", "", 0),
        ],
    )
    .unwrap_err();
    // The strings of Consul's txn.go and kvs.go.
    assert_eq!(
        e,
        vec![
            TxnError {
                op_index: 1,
                what: "failed to set key \"a\", index is stale".into()
            },
            TxnError {
                op_index: 3,
                what: "key \"missing\" doesn't exist".into()
            },
            TxnError {
                op_index: 4,
                what: "failed to check index, key \"a\" doesn't exist".into()
            },
            TxnError {
                op_index: 5,
                what: "key \"b\" exists".into()
            },
        ]
    );
    assert_eq!((fsm.kv_list(""), fsm.kv_index()), before, "nothing applied");
    assert_eq!(fsm.last_applied(), 2);
}

#[test]
fn tree_verbs_and_delete_cas() {
    let mut fsm = Fsm::new();
    set(&mut fsm, 1, "app/x", "1");
    set(&mut fsm, 2, "app/y", "2");
    set(&mut fsm, 3, "other", "3");
    let r = txn(&mut fsm, 4, vec![kv(KvVerb::GetTree, "app/", "", 0)]).unwrap();
    assert_eq!(r.len(), 2);
    let e = txn(&mut fsm, 5, vec![kv(KvVerb::DeleteCas, "other", "", 1)]).unwrap_err();
    assert_eq!(e[0].what, "failed to delete key \"other\", index is stale");
    txn(
        &mut fsm,
        6,
        vec![
            kv(KvVerb::DeleteTree, "app/", "", 0),
            kv(KvVerb::DeleteCas, "other", "", 3),
        ],
    )
    .unwrap();
    assert!(fsm.kv_list("").is_empty());
    assert_eq!(fsm.kv_index(), 6);
    assert!(fsm.left_tombstones(6, &Command::Txn(vec![kv(KvVerb::Delete, "x", "", 0)])));
}

#[test]
fn lock_verbs_need_a_session_and_no_session_exists_yet() {
    let mut fsm = Fsm::new();
    set(&mut fsm, 1, "l", "v");
    let mut lock = kv(KvVerb::Lock, "l", "v", 0);
    let e = txn(&mut fsm, 2, vec![lock.clone()]).unwrap_err();
    assert_eq!(e[0].what, "missing session");
    if let TxnOp::Kv { session, .. } = &mut lock {
        *session = "4ca8e74b-6350-7587-addf-a18084928f3c".into();
    }
    let e = txn(&mut fsm, 3, vec![lock]).unwrap_err();
    assert_eq!(
        e[0].what,
        "invalid session \"4ca8e74b-6350-7587-addf-a18084928f3c\""
    );
    // An unlock by a session that does not hold it.
    let mut unlock = kv(KvVerb::Unlock, "l", "v2", 0);
    if let TxnOp::Kv { session, .. } = &mut unlock {
        *session = "s".into();
    }
    let e = txn(&mut fsm, 4, vec![unlock]).unwrap_err();
    assert_eq!(
        e[0].what,
        "failed to unlock key \"l\", lock isn't held, or is held by another session"
    );
    let mut check = kv(KvVerb::CheckSession, "l", "", 0);
    if let TxnOp::Kv { session, .. } = &mut check {
        *session = "s".into();
    }
    let e = txn(&mut fsm, 5, vec![check]).unwrap_err();
    assert_eq!(
        e[0].what,
        "failed session check for key \"l\", current session \"\" != \"s\""
    );
}

fn node(name: &str, modify_index: u64) -> Node {
    Node {
        node: name.into(),
        address: "10.0.0.1".into(),
        modify_index,
        ..Node::default()
    }
}

#[test]
fn node_service_and_check_verbs() {
    let mut fsm = Fsm::new();
    let web = Service {
        service: "web".into(),
        port: 80,
        ..Service::default()
    };
    let r = txn(
        &mut fsm,
        1,
        vec![
            TxnOp::Node {
                verb: CatalogVerb::Set,
                node: node("n1", 0),
            },
            TxnOp::Service {
                verb: CatalogVerb::Set,
                node: "n1".into(),
                service: web.clone(),
            },
            kv(KvVerb::Set, "k", "v", 0),
        ],
    )
    .expect("applied");
    assert_eq!(r.len(), 3, "{r:?}");
    match &r[1] {
        TxnResult::Service(s) => assert_eq!((s.id.as_str(), s.port), ("web", 80)),
        other => panic!("{other:?}"),
    }
    let (_, nodes) = fsm.catalog_nodes(&Default::default());
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].modify_index, 1);

    // A service on a node that is not there, and a stale node CAS: nothing
    // of the transaction applies, the KV write included.
    let e = txn(
        &mut fsm,
        2,
        vec![
            kv(KvVerb::Set, "k", "changed", 0),
            TxnOp::Service {
                verb: CatalogVerb::Set,
                node: "nope".into(),
                service: web.clone(),
            },
            TxnOp::Node {
                verb: CatalogVerb::Cas,
                node: node("n1", 7),
            },
            TxnOp::Service {
                verb: CatalogVerb::Get,
                node: "n1".into(),
                service: Service {
                    id: "db".into(),
                    ..Service::default()
                },
            },
        ],
    )
    .unwrap_err();
    let whats: Vec<(u32, &str)> = e.iter().map(|e| (e.op_index, e.what.as_str())).collect();
    assert_eq!(
        whats,
        vec![
            (1, "failed inserting service: node \"nope\" doesn't exist"),
            (2, "failed to set node \"n1\", index is stale"),
            (3, "service \"db\" on node \"n1\" doesn't exist"),
        ]
    );
    assert_eq!(value(&fsm, "k").as_deref(), Some("v"));

    // Delete-CAS of the node at its index removes it and its service.
    let r = txn(
        &mut fsm,
        3,
        vec![TxnOp::Node {
            verb: CatalogVerb::DeleteCas,
            node: node("n1", 1),
        }],
    );
    assert_eq!(r, Ok(vec![]));
    assert_eq!(fsm.catalog_counts(), (0, 0, 0));
}

#[test]
fn a_read_only_transaction_changes_nothing() {
    let mut fsm = Fsm::new();
    set(&mut fsm, 1, "a", "1");
    fsm.apply(
        2,
        &Command::CatalogRegister(Box::new(Register {
            node: "n1".into(),
            address: "10.0.0.1".into(),
            ..Register::default()
        })),
    );
    let hash = fsm.state_hash();
    let r = fsm
        .txn_read(&[
            kv(KvVerb::Get, "a", "", 0),
            TxnOp::Node {
                verb: CatalogVerb::Get,
                node: node("n1", 0),
            },
        ])
        .unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(fsm.state_hash(), hash);
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
fn through_a_cluster_writes_commit_everywhere_and_reads_take_any_mode() {
    let mut c = Cluster::with_voters(3);
    let leader = c
        .run_until_leader(Duration::from_secs(10))
        .expect("a leader");
    let follower = c.servers.keys().copied().find(|id| *id != leader).unwrap();
    let w = c.request(
        follower,
        request(
            Op::Txn(vec![
                kv(KvVerb::Set, "x", "1", 0),
                kv(KvVerb::Set, "y", "2", 0),
            ]),
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(300));
    let reply = c.responses[&(follower, w)].as_ref().expect("applied");
    match &reply.body {
        ReplyBody::Applied(ApplyResult::Txn(Ok(r))) => assert_eq!(r.len(), 2),
        other => panic!("{other:?}"),
    }
    for s in c.servers.values() {
        assert_eq!(s.fsm().kv_get("y").unwrap().modify_index, reply.index);
    }
    for mode in [ReadMode::Stale, ReadMode::Default, ReadMode::Consistent] {
        let r = c.request(
            follower,
            request(Op::Txn(vec![kv(KvVerb::Get, "x", "", 0)]), mode),
        );
        c.run_for(Duration::from_millis(300));
        match &c.responses[&(follower, r)].as_ref().unwrap().body {
            ReplyBody::Txn(Ok(r)) => assert_eq!(r.len(), 1),
            other => panic!("{mode:?}: {other:?}"),
        }
    }
    // Limits, at and past the edge, refused before the log.
    let at: Vec<TxnOp> = (0..TXN_OPS_MAX)
        .map(|i| kv(KvVerb::Set, &format!("k{i}"), "v", 0))
        .collect();
    let r = c.request(leader, request(Op::Txn(at.clone()), ReadMode::Default));
    c.run_for(Duration::from_millis(300));
    assert!(c.responses[&(leader, r)].is_ok());
    let mut past = at;
    past.push(kv(KvVerb::Set, "one-more", "v", 0));
    let r = c.request(leader, request(Op::Txn(past), ReadMode::Default));
    c.run_for(Duration::from_millis(300));
    assert_eq!(
        c.responses[&(leader, r)],
        Err(RpcError::TooLarge(
            "Transaction contains too many operations (129 > 128)".into()
        ))
    );
    let max = c.servers[&leader].config().kv_value_bytes_max;
    let big = "x".repeat(max + 1);
    let r = c.request(
        leader,
        request(
            Op::Txn(vec![kv(KvVerb::Set, "big", &big, 0)]),
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(300));
    assert_eq!(
        c.responses[&(leader, r)],
        Err(RpcError::TooLarge(format!(
            "Value for key \"big\" is too large ({} > {max} bytes)",
            max + 1
        )))
    );
}
