//! The catalog through whole servers on the in-process test cluster:
//! registrations go through the log and are refused as Consul's
//! `Catalog.Register` refuses them (agent/consul/catalog_endpoint.go), and a
//! parked catalog query is woken by the catalog writes that change what it
//! reads and by nothing else (a KV write does not wake it, nor does it a KV
//! watcher).

use std::collections::BTreeMap;

use tern_core::fsm::{
    ApplyResult, CatalogError, Check, CheckDefinition, Deregister, KvCommand, KvWrite, Register,
    Service,
};
use tern_core::rpc::{
    Blocking, CatalogOp, CatalogReply, Op, ReadMode, ReplyBody, Request, RpcError,
};
use tern_core::testkit::Cluster;
use tern_core::{Datacenter, Duration, NodeId, RequestId};

fn req(op: Op, mode: ReadMode) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: mode,
        blocking: None,
        op,
    }
}

fn register(node: &str, service: Option<(&str, &str)>) -> Register {
    Register {
        id: String::new(),
        node: node.into(),
        address: "10.0.0.1".into(),
        datacenter: "dc1".into(),
        tagged_addresses: None,
        node_meta: None,
        service: service.map(|(id, name)| Service {
            kind: String::new(),
            id: id.into(),
            service: name.into(),
            tags: Some(vec!["v1".into()]),
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: None,
            port: 8080,
            weights: None,
            enable_tag_override: false,
            create_index: 0,
            modify_index: 0,
        }),
        checks: vec![],
        skip_node_update: false,
    }
}

fn write(reg: Register) -> Request {
    req(
        Op::Catalog(CatalogOp::Register(Box::new(reg))),
        ReadMode::Default,
    )
}

fn service_nodes(name: &str, mode: ReadMode) -> Request {
    req(
        Op::Catalog(CatalogOp::ServiceNodes {
            service: name.into(),
            tags: vec![],
            node_meta: BTreeMap::new(),
        }),
        mode,
    )
}

fn put(key: &str) -> Request {
    req(
        Op::KvApply(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: b"v".to_vec().into(),
        })),
        ReadMode::Default,
    )
}

fn blocking(mut r: Request, min_index: u64) -> Request {
    r.blocking = Some(Blocking {
        min_index,
        max_wait: Duration::from_secs(60),
    });
    r
}

fn answered(c: &Cluster, at: NodeId, rid: RequestId) -> bool {
    c.responses.contains_key(&(at, rid))
}

/// Sends `r` through `at`, runs until it is answered; the answer.
fn call(c: &mut Cluster, at: NodeId, r: Request) -> tern_core::rpc::Reply {
    let rid = c.request(at, r);
    c.run_for(Duration::from_millis(300));
    c.responses[&(at, rid)].clone().expect("answered ok")
}

fn instances(reply: &tern_core::rpc::Reply) -> Vec<String> {
    match &reply.body {
        ReplyBody::Catalog(CatalogReply::ServiceNodes(found)) => {
            found.iter().map(|s| s.node.node.clone()).collect()
        }
        b => panic!("unexpected body {b:?}"),
    }
}

/// A registration sent to a follower is forwarded, logged and applied on
/// every server; each server answers reads of it (stale ones from its own
/// state), and a deregistration removes it everywhere.
#[test]
fn a_registration_through_a_follower_reaches_every_server() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let follower = *c.servers.keys().find(|id| **id != leader).unwrap();
    let done = call(
        &mut c,
        follower,
        write(register("n1", Some(("web1", "web")))),
    );
    assert_eq!(done.body, ReplyBody::Applied(ApplyResult::Catalog(Ok(()))));
    let ids: Vec<NodeId> = c.servers.keys().copied().collect();
    for id in ids {
        assert_eq!(c.servers[&id].fsm().catalog_counts(), (1, 1, 0));
        let read = call(&mut c, id, service_nodes("web", ReadMode::Stale));
        assert_eq!(instances(&read), ["n1"]);
        assert_eq!(read.index, done.index, "the service's index is its write's");
    }
    let dereg = Deregister {
        node: "n1".into(),
        service_id: String::new(),
        check_id: String::new(),
    };
    call(
        &mut c,
        leader,
        req(Op::Catalog(CatalogOp::Deregister(dereg)), ReadMode::Default),
    );
    for s in c.servers.values() {
        assert_eq!(s.fsm().catalog_counts(), (0, 0, 0));
    }
}

/// Consul's pre-apply refusals are answered before anything is logged;
/// the state-dependent ones (a check for a service the node lacks) are the
/// state machine's, answered with the applied result's error.
#[test]
fn bad_registrations_are_refused_with_consuls_text_and_change_nothing() {
    let mut c = Cluster::with_voters(1);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let commit = c.servers[&leader].fsm().last_applied();
    let rid = c.request(leader, write(register("", None)));
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        c.responses[&(leader, rid)],
        Err(RpcError::Refused("Must provide node".into()))
    );
    let mut no_address = register("n1", None);
    no_address.address.clear();
    let rid = c.request(leader, write(no_address));
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        c.responses[&(leader, rid)],
        Err(RpcError::Refused(
            "Must provide address if SkipNodeUpdate is not set".into()
        ))
    );
    assert_eq!(
        c.servers[&leader].fsm().last_applied(),
        commit,
        "nothing logged"
    );

    let mut orphan_check = register("n1", None);
    orphan_check.checks = vec![Check {
        node: String::new(),
        check_id: "c".into(),
        name: "c".into(),
        status: String::new(),
        notes: String::new(),
        output: String::new(),
        service_id: "nope".into(),
        service_name: String::new(),
        service_tags: None,
        kind: String::new(),
        definition: CheckDefinition::default(),
        create_index: 0,
        modify_index: 0,
    }];
    let r = call(&mut c, leader, write(orphan_check));
    assert_eq!(
        r.body,
        ReplyBody::Applied(ApplyResult::Catalog(Err(CatalogError::MissingService {
            node: "n1".into()
        })))
    );
    assert_eq!(c.servers[&leader].fsm().catalog_counts(), (0, 0, 0));

    // A registration over `catalog_register_bytes_max` is too large.
    let mut huge = register("n1", Some(("web1", "web")));
    huge.service.as_mut().unwrap().tags = Some(vec!["t".repeat(600 * 1024)]);
    let rid = c.request(leader, write(huge));
    c.run_for(Duration::from_millis(100));
    assert!(matches!(
        &c.responses[&(leader, rid)],
        Err(RpcError::TooLarge(why)) if why.contains("catalog_register_bytes_max")
    ));
}

/// A query parked on `catalog/service/web` is woken by a write to web, and
/// by nothing else: not by a KV write, not by a registration of another
/// service on another node. A KV query is not woken by a catalog write.
#[test]
fn a_parked_catalog_query_wakes_only_for_its_service() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let first = call(&mut c, leader, write(register("n1", Some(("web1", "web")))));
    let kv = call(&mut c, leader, put("k"));

    let on_web = c.request(
        leader,
        blocking(service_nodes("web", ReadMode::Default), first.index),
    );
    let on_key = c.request(
        leader,
        blocking(
            req(Op::KvGet { key: "k".into() }, ReadMode::Default),
            kv.index,
        ),
    );
    let on_nodes = c.request(
        leader,
        blocking(
            req(
                Op::Catalog(CatalogOp::Nodes {
                    node_meta: BTreeMap::new(),
                }),
                ReadMode::Default,
            ),
            first.index,
        ),
    );
    c.run_for(Duration::from_millis(300));
    assert!(!answered(&c, leader, on_web) && !answered(&c, leader, on_key));

    // A KV write to another key and a write to k's neighbours: web sleeps.
    call(&mut c, leader, put("other"));
    assert!(
        !answered(&c, leader, on_web),
        "a KV write woke a catalog watcher"
    );
    // Another service on another node: web and the KV watcher sleep, the
    // nodes watcher (a new node) wakes.
    call(&mut c, leader, write(register("n2", Some(("db1", "db")))));
    assert!(
        !answered(&c, leader, on_web),
        "db's registration woke web's watcher"
    );
    assert!(
        !answered(&c, leader, on_key),
        "a catalog write woke a KV watcher"
    );
    assert!(
        answered(&c, leader, on_nodes),
        "a new node wakes the nodes watcher"
    );

    // A second instance of web wakes it, with the new instance.
    let second = call(&mut c, leader, write(register("n2", Some(("web2", "web")))));
    let woken = c.responses[&(leader, on_web)].clone().expect("woken");
    assert_eq!(instances(&woken), ["n1", "n2"]);
    assert_eq!(woken.index, second.index);
    assert!(!answered(&c, leader, on_key));
}

/// A query on a missing service waits for that service: other services
/// going extinct move the index it answered with but do not wake it.
#[test]
fn a_query_on_a_missing_service_waits_for_that_service() {
    let mut c = Cluster::with_voters(1);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    call(&mut c, leader, write(register("n1", Some(("db1", "db")))));
    let missing = call(&mut c, leader, service_nodes("web", ReadMode::Default));
    assert!(instances(&missing).is_empty());
    let q = c.request(
        leader,
        blocking(service_nodes("web", ReadMode::Default), missing.index),
    );
    let dereg = Deregister {
        node: "n1".into(),
        service_id: "db1".into(),
        check_id: String::new(),
    };
    call(
        &mut c,
        leader,
        req(Op::Catalog(CatalogOp::Deregister(dereg)), ReadMode::Default),
    );
    assert!(!answered(&c, leader, q), "db's extinction is not web's");
    let added = call(&mut c, leader, write(register("n1", Some(("web1", "web")))));
    let woken = c.responses[&(leader, q)].clone().unwrap();
    assert_eq!(
        (instances(&woken), woken.index),
        (vec!["n1".to_owned()], added.index)
    );
}

/// A registration must fit in one AppendEntries: the limit is
/// `catalog_register_bytes_max` or `append_bytes_max` less 1 KiB, whichever
/// is smaller. One just under it is replicated to every server; one over it
/// is refused with the limit named, before the log.
#[test]
fn a_registration_over_what_one_append_carries_is_refused() {
    let configs = (1..=3)
        .map(|i| {
            let mut c = tern_core::testkit::config(i, 3);
            c.append_bytes_max = 64 << 10;
            c.kv_value_bytes_max = 8 << 10;
            c
        })
        .collect();
    let mut c = Cluster::new(configs);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let with_tag = |bytes: usize| {
        let mut r = register("n1", Some(("web1", "web")));
        r.service.as_mut().unwrap().tags = Some(vec!["t".repeat(bytes)]);
        r
    };
    let fits = call(&mut c, leader, write(with_tag(60 << 10)));
    assert_eq!(fits.body, ReplyBody::Applied(ApplyResult::Catalog(Ok(()))));
    for s in c.servers.values() {
        assert_eq!(s.fsm().catalog_counts(), (1, 1, 0), "replicated everywhere");
    }
    let rid = c.request(leader, write(with_tag(64 << 10)));
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        c.responses[&(leader, rid)],
        Err(RpcError::TooLarge(
            "Registration exceeds 64512 byte limit (catalog_register_bytes_max)".into()
        ))
    );
}
