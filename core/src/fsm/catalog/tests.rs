//! The catalog's exact behaviour, each test after the Consul state-store
//! behaviour it names (agent/consul/state/catalog.go).

use std::collections::BTreeMap;

use super::types::{CheckDefinition, Meta};
use super::*;

fn reg(node: &str) -> Register {
    Register {
        id: String::new(),
        node: node.to_owned(),
        address: "10.0.0.1".to_owned(),
        datacenter: "dc1".to_owned(),
        tagged_addresses: None,
        node_meta: None,
        service: None,
        checks: vec![],
        skip_node_update: false,
    }
}

fn svc(id: &str, name: &str) -> Service {
    Service {
        kind: String::new(),
        id: id.to_owned(),
        service: name.to_owned(),
        tags: None,
        address: String::new(),
        tagged_addresses: Default::default(),
        meta: None,
        port: 80,
        weights: None,
        enable_tag_override: false,
        create_index: 0,
        modify_index: 0,
    }
}

fn chk(id: &str, service_id: &str) -> Check {
    Check {
        node: String::new(),
        check_id: id.to_owned(),
        name: id.to_owned(),
        status: String::new(),
        notes: String::new(),
        output: String::new(),
        service_id: service_id.to_owned(),
        service_name: String::new(),
        service_tags: None,
        kind: String::new(),
        definition: CheckDefinition::default(),
        create_index: 0,
        modify_index: 0,
    }
}

fn with_service(node: &str, id: &str, name: &str) -> Register {
    Register {
        service: Some(svc(id, name)),
        ..reg(node)
    }
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn indexes(t: &CatalogTable) -> (u64, u64, u64) {
    (t.nodes_index, t.services_index, t.checks_index)
}

fn node_row(t: &CatalogTable, name: &str) -> Node {
    t.node_services(name).1.expect("node exists").node
}

/// `TestStateStore_EnsureRegistration`: node, service and checks land with
/// the registration's index, a service check takes its service's name and
/// tags, a check's status defaults to critical.
#[test]
fn a_registration_stores_node_service_and_checks_with_its_index() {
    let mut t = CatalogTable::default();
    let mut r = with_service("n1", "web1", "web");
    r.service.as_mut().unwrap().tags = Some(vec!["v1".into()]);
    r.checks = vec![chk("node-alive", ""), chk("web-alive", "web1")];
    t.register(5, &r).unwrap();

    let node = node_row(&t, "n1");
    assert_eq!((node.create_index, node.modify_index), (5, 5));
    let (index, found) = t.service_nodes("web", &[], &none());
    assert_eq!(index, 5);
    assert_eq!(found.len(), 1);
    let s = &found[0].service;
    assert_eq!((s.create_index, s.modify_index), (5, 5));
    assert_eq!(s.weights, Some(types::Weights::DEFAULT));
    let checks = t.node_checks("n1");
    assert_eq!(checks.len(), 2);
    assert!(checks
        .iter()
        .all(|c| c.status == "critical" && c.modify_index == 5));
    let web = checks.iter().find(|c| c.check_id == "web-alive").unwrap();
    assert_eq!(
        (web.service_name.as_str(), web.service_tags.clone()),
        ("web", Some(vec!["v1".to_owned()]))
    );
    assert_eq!(indexes(&t), (5, 5, 5));
    assert_eq!(t.node_read_index("n1"), 5);
}

/// `ensureRegistrationTxn` skips a node, service or check that is the same
/// ("prevent watch churn"): nothing's ModifyIndex or table index moves.
#[test]
fn an_unchanged_registration_moves_no_index() {
    let mut t = CatalogTable::default();
    let mut r = with_service("n1", "web1", "web");
    r.checks = vec![chk("alive", "web1")];
    t.register(5, &r).unwrap();
    let before = t.clone();
    t.register(9, &r).unwrap();
    assert_eq!(t, before, "nothing changed");
    // Spelled in another case, the node is the same node, and so is a
    // check's (Consul's `Node.IsSame` and `HealthCheck.IsSame` fold case);
    // a check's type alone is no change either.
    let mut upper = r.clone();
    upper.node = "N1".into();
    upper.checks[0].node = "N1".into();
    upper.checks[0].kind = "ttl".into();
    upper.service = None;
    t.register(10, &upper).unwrap();
    assert_eq!(t, before);
}

/// What each kind of change moves, as Consul's `catalogInsert*` do.
#[test]
fn each_change_moves_the_indexes_consul_moves() {
    let mut t = CatalogTable::default();
    t.register(5, &with_service("n1", "web1", "web")).unwrap();
    t.register(6, &with_service("n2", "db", "db")).unwrap();

    // A node change: the node row, the nodes index, the node's own index
    // and the index of every service on it; not the services table.
    let mut moved = with_service("n1", "web1", "web");
    moved.address = "10.0.0.9".into();
    t.register(7, &moved).unwrap();
    assert_eq!(node_row(&t, "n1").modify_index, 7);
    assert_eq!(indexes(&t), (7, 6, 0));
    assert_eq!(t.service_read_index("web"), 7);
    assert_eq!(t.service_read_index("db"), 6);
    let web = &t.service_nodes("web", &[], &none()).1[0].service;
    assert_eq!(web.modify_index, 5, "the service row itself is unchanged");

    // A service change: the service row, the services and nodes indexes,
    // the node's index and the service name's; not the node row.
    let mut retagged = moved.clone();
    retagged.service.as_mut().unwrap().tags = Some(vec![]);
    t.register(8, &retagged).unwrap();
    assert_eq!(node_row(&t, "n1").modify_index, 7);
    assert_eq!(indexes(&t), (8, 8, 0));
    assert_eq!(t.service_read_index("web"), 8);
    assert_eq!(t.node_read_index("n1"), 8);
    assert_eq!(t.service_read_index("db"), 6);
    // `null` tags and `[]` tags differ (Consul compares with DeepEqual).
    let tags = &t.service_nodes("web", &[], &none()).1[0].service.tags;
    assert_eq!(tags, &Some(vec![]));

    // A node check: the checks index and every service on the node.
    let mut checked = retagged.clone();
    checked.checks = vec![chk("mem", "")];
    t.register(9, &checked).unwrap();
    assert_eq!(indexes(&t), (8, 8, 9));
    assert_eq!(t.service_read_index("web"), 9);
    assert_eq!(t.node_read_index("n1"), 8);
    // A service check: only its service.
    let mut db_check = with_service("n2", "db", "db");
    db_check.checks = vec![chk("db-ok", "db")];
    t.register(10, &db_check).unwrap();
    assert_eq!(t.service_read_index("db"), 10);
    assert_eq!(t.service_read_index("web"), 9);
    // SkipNodeUpdate leaves the node as it is.
    let mut skip = reg("n2");
    skip.address = "10.9.9.9".into();
    skip.skip_node_update = true;
    t.register(11, &skip).unwrap();
    assert_eq!(node_row(&t, "n2").address, "10.0.0.1");
    assert_eq!(indexes(&t), (8, 8, 10));
}

/// `ensureCheckIfNodeMatches` and `ensureCheckTxn`: a check for another
/// node, or for a service the node does not have, is refused, and the
/// whole registration with it (one transaction).
#[test]
fn a_bad_check_refuses_the_whole_registration() {
    let mut t = CatalogTable::default();
    let mut other_node = with_service("n1", "web1", "web");
    other_node.checks = vec![Check {
        node: "n2".into(),
        ..chk("c", "")
    }];
    assert_eq!(
        t.register(5, &other_node),
        Err(CatalogError::CheckNodeMismatch {
            check_node: "n2".into(),
            node: "n1".into()
        })
    );
    assert_eq!(
        t.register(5, &other_node).unwrap_err().to_string(),
        "check node \"n2\" does not match node \"n1\""
    );
    let mut no_service = with_service("n1", "web1", "web");
    no_service.checks = vec![chk("c", "nope")];
    let refused = t.register(6, &no_service).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "failed inserting check on node \"n1\": Missing service registration"
    );
    assert_eq!(t, CatalogTable::default(), "nothing was applied");
}

/// `deleteNodeTxn`: the node's services and checks go with it; the node's
/// index row goes, the extinction indexes move.
#[test]
fn deregistering_a_node_removes_its_services_and_checks() {
    let mut t = CatalogTable::default();
    let mut r = with_service("n1", "web1", "web");
    r.checks = vec![chk("alive", ""), chk("web-ok", "web1")];
    t.register(5, &r).unwrap();
    t.register(6, &with_service("n2", "web2", "web")).unwrap();
    let gone = |node: &str| Deregister {
        node: node.into(),
        service_id: String::new(),
        check_id: String::new(),
    };
    t.deregister(7, &gone("N1")).unwrap();
    assert_eq!(
        t.node_services("n1"),
        (7, None),
        "the node extinction index"
    );
    assert!(t.node_checks("n1").is_empty());
    assert_eq!(t.counts(), (1, 1, 0));
    assert_eq!(indexes(&t), (7, 7, 7));
    assert_eq!(
        t.service_read_index("web"),
        7,
        "web still has n2's instance"
    );
    assert!(!t.node_index.contains_key("n1"));
    // The last instance of web goes with n2: service.web goes, and a read
    // of the missing service answers the service extinction index.
    t.deregister(8, &gone("n2")).unwrap();
    assert!(t.service_index.is_empty());
    assert_eq!(t.service_nodes("web", &[], &none()), (8, vec![]));
    // Removing what is not there changes nothing.
    let before = t.clone();
    t.deregister(9, &gone("n1")).unwrap();
    assert_eq!(t, before);
    assert_eq!(
        t.deregister(9, &gone("")).unwrap_err().to_string(),
        "Must provide node"
    );
}

/// `deleteServiceTxn` takes the service's checks, not the node's; a check
/// deregistration takes one check.
#[test]
fn deregistering_a_service_removes_its_checks_only() {
    let mut t = CatalogTable::default();
    let mut r = with_service("n1", "web1", "web");
    r.checks = vec![chk("alive", ""), chk("web-ok", "web1")];
    t.register(5, &r).unwrap();
    t.register(6, &with_service("n1", "db", "db")).unwrap();
    let dereg = |service_id: &str, check_id: &str| Deregister {
        node: "n1".into(),
        service_id: service_id.into(),
        check_id: check_id.into(),
    };
    t.deregister(7, &dereg("WEB1", "")).unwrap();
    let left: Vec<String> = t
        .node_checks("n1")
        .into_iter()
        .map(|c| c.check_id)
        .collect();
    assert_eq!(left, ["alive"]);
    let (index, found) = t.node_services("n1");
    assert_eq!(index, 7);
    let ids: Vec<String> = found.unwrap().services.into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["db"]);
    assert_eq!(indexes(&t), (7, 7, 7));
    assert_eq!(t.service_extinction, 7);
    t.deregister(8, &dereg("", "alive")).unwrap();
    assert!(t.node_checks("n1").is_empty());
    assert_eq!(indexes(&t), (7, 7, 8));
    assert_eq!(
        t.service_read_index("db"),
        8,
        "a node check moves its services"
    );
}

/// `Catalog.ServiceNodes` with tags (all, ignoring case) and node meta, and
/// `ListServices` with the union of tags.
#[test]
fn reads_filter_by_tag_and_node_meta() {
    let mut t = CatalogTable::default();
    let mut a = with_service("a", "web1", "web");
    a.service.as_mut().unwrap().tags = Some(vec!["Primary".into(), "v1".into()]);
    a.node_meta = Some(Meta::from([("env".into(), "prod".into())]));
    t.register(5, &a).unwrap();
    let mut b = with_service("b", "web2", "web");
    b.service.as_mut().unwrap().tags = Some(vec!["v2".into()]);
    t.register(6, &b).unwrap();
    t.register(7, &with_service("b", "db", "db")).unwrap();

    let names = |found: Vec<ServiceInstance>| -> Vec<String> {
        found.into_iter().map(|s| s.node.node).collect()
    };
    assert_eq!(names(t.service_nodes("WEB", &[], &none()).1), ["a", "b"]);
    let primary = ["primary".to_owned(), "V1".to_owned()];
    assert_eq!(names(t.service_nodes("web", &primary, &none()).1), ["a"]);
    let both = ["primary".to_owned(), "v2".to_owned()];
    assert!(t.service_nodes("web", &both, &none()).1.is_empty());
    let prod = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
    assert_eq!(names(t.service_nodes("web", &[], &prod).1), ["a"]);
    assert_eq!(t.nodes(&prod).1.len(), 1);
    assert_eq!(t.nodes(&none()).1.len(), 2);

    let (index, services) = t.services(&none());
    assert_eq!(index, 7);
    assert_eq!(
        services,
        BTreeMap::from([
            ("db".to_owned(), vec![]),
            (
                "web".to_owned(),
                vec!["Primary".to_owned(), "v1".to_owned(), "v2".to_owned()]
            ),
        ])
    );
    let (index, services) = t.services(&prod);
    assert_eq!((index, services.len()), (7, 1));
}

/// `maxIndexForService`: a service never seen answers the nodes and
/// services tables' index; once some service went extinct, the extinction
/// index.
#[test]
fn a_missing_service_answers_consuls_fallback_indexes() {
    let mut t = CatalogTable::default();
    t.register(5, &with_service("n1", "web1", "web")).unwrap();
    t.register(6, &reg("n2")).unwrap();
    assert_eq!(t.service_read_index("nope"), 6);
    let dereg = Deregister {
        node: "n1".into(),
        service_id: "web1".into(),
        check_id: String::new(),
    };
    t.deregister(7, &dereg).unwrap();
    t.register(8, &reg("n3")).unwrap();
    assert_eq!(t.service_read_index("nope"), 7);
    assert_eq!(t.service_read_index("web"), 7);
    // A node lookup: by name, by a unique ID prefix, else the extinction
    // index (0 for a name too short to be an ID).
    let mut with_id = reg("n4");
    with_id.id = "0123abcd-0000-0000-0000-000000000000".into();
    t.register(9, &with_id).unwrap();
    assert_eq!(t.node_services("0123a").1.unwrap().node.node, "n4");
    assert_eq!(t.node_services("zz"), (0, None));
    assert_eq!(t.node_services("x"), (0, None));
}

/// `ensureNodeTxn` with an ID: the same ID under a new name renames the
/// node (the old row and its services go); a name held by a node that is
/// healthy by its `serfHealth` check is refused to another ID.
#[test]
fn a_node_id_renames_and_a_live_name_is_kept() {
    let id = "11111111-2222-3333-4444-555555555555";
    let mut t = CatalogTable::default();
    let mut first = with_service("old", "web1", "web");
    first.id = id.into();
    t.register(5, &first).unwrap();
    let mut renamed = reg("new");
    renamed.id = id.into();
    t.register(6, &renamed).unwrap();
    assert_eq!(t.node_services("old"), (6, None));
    let new = node_row(&t, "new");
    assert_eq!((new.create_index, new.modify_index), (5, 6));
    assert!(t.service_nodes("web", &[], &none()).1.is_empty());

    let mut live = reg("taken");
    live.id = "aaaaaaaa-2222-3333-4444-555555555555".into();
    live.checks = vec![Check {
        status: "passing".into(),
        ..chk("serfHealth", "")
    }];
    t.register(7, &live).unwrap();
    let mut thief = reg("taken");
    thief.id = "bbbbbbbb-2222-3333-4444-555555555555".into();
    let before = t.clone();
    assert_eq!(
        t.register(8, &thief).unwrap_err().to_string(),
        "failed inserting node: Error while renaming Node ID: \"bbbbbbbb-2222-3333-4444-555555555555\": \
         Node name taken is reserved by node aaaaaaaa-2222-3333-4444-555555555555 with name taken (10.0.0.1)"
    );
    assert_eq!(t, before);
}

/// Every table's limit, at the edge and one past it: the row at the limit
/// is stored, the next new row is refused with the limit named and nothing
/// of its registration applied, and updating an existing row still works.
#[test]
fn each_table_refuses_a_row_past_its_limit() {
    let mut t = CatalogTable::with_limits(Limits {
        nodes: 2,
        services: 2,
        checks: 2,
    });
    t.register(1, &with_service("n1", "s1", "s")).unwrap();
    t.register(2, &with_service("n2", "s2", "s")).unwrap();
    let full = t.clone();
    let refused = t.register(3, &reg("n3")).unwrap_err();
    assert_eq!(
        refused,
        CatalogError::TableFull {
            table: CatalogTableName::Nodes,
            max: 2
        }
    );
    assert_eq!(
        refused.to_string(),
        "catalog nodes table is full: it holds its limit of 2 (CATALOG_NODES_MAX)"
    );
    assert_eq!(
        t.register(3, &with_service("n1", "s3", "s")).unwrap_err(),
        CatalogError::TableFull {
            table: CatalogTableName::Services,
            max: 2
        }
    );
    assert_eq!(t, full);
    let mut two_checks = reg("n1");
    two_checks.checks = vec![chk("c1", ""), chk("c2", "")];
    t.register(4, &two_checks).unwrap();
    let mut third = reg("n2");
    third.checks = vec![chk("c3", "")];
    assert_eq!(
        t.register(5, &third).unwrap_err().to_string(),
        "catalog checks table is full: it holds its limit of 2 (CATALOG_CHECKS_MAX)"
    );
    // Updates of existing rows are not new rows.
    let mut moved = with_service("n2", "s2", "s");
    moved.address = "10.0.0.2".into();
    moved.checks = vec![Check {
        node: "n1".into(),
        ..chk("c1", "")
    }];
    moved.checks.clear();
    t.register(6, &moved).unwrap();
    // After a removal there is room again.
    let dereg = Deregister {
        node: "n2".into(),
        service_id: String::new(),
        check_id: String::new(),
    };
    t.deregister(7, &dereg).unwrap();
    t.register(8, &reg("n3")).unwrap();
}

/// The real node limit is wired in: `CATALOG_NODES_MAX` nodes fit, one more
/// does not.
#[test]
fn the_node_limit_is_catalog_nodes_max() {
    let mut t = CatalogTable::default();
    for i in 0..CATALOG_NODES_MAX {
        let name = format!("n{i}");
        t.ensure_node(
            i as u64 + 1,
            Node {
                id: String::new(),
                node: name,
                address: "10.0.0.1".into(),
                datacenter: "dc1".into(),
                tagged_addresses: None,
                meta: None,
                create_index: 0,
                modify_index: 0,
            },
        )
        .unwrap();
    }
    let next = CATALOG_NODES_MAX as u64 + 1;
    assert_eq!(
        t.register(next, &reg("one-more")),
        Err(CatalogError::TableFull {
            table: CatalogTableName::Nodes,
            max: CATALOG_NODES_MAX
        })
    );
}

/// What a write touches: the tables, its node and every service on it,
/// and the service it names, judged before it applies.
#[test]
fn a_write_touches_its_node_and_the_services_on_it() {
    let mut t = CatalogTable::default();
    t.register(5, &with_service("n1", "web1", "Web")).unwrap();
    t.register(6, &with_service("n1", "db", "db")).unwrap();
    let topics = t.topics("N1", "", Some("cache"));
    assert_eq!(
        topics,
        [
            CatalogTopic::Nodes,
            CatalogTopic::Services,
            CatalogTopic::Checks,
            CatalogTopic::Service("cache".into()),
            CatalogTopic::Service("db".into()),
            CatalogTopic::Service("web".into()),
            CatalogTopic::Node("n1".into()),
        ]
    );
    assert_eq!(t.topics("n2", "", None).len(), 4);
}

/// A snapshot restores the same table, indexes and hash included, and a
/// snapshot that breaks what apply keeps is refused.
#[test]
fn the_catalog_round_trips_through_a_snapshot_and_bad_ones_are_refused() {
    let mut t = CatalogTable::default();
    let mut r = with_service("n1", "web1", "web");
    r.id = "11111111-2222-3333-4444-555555555555".into();
    r.checks = vec![chk("alive", ""), chk("web-ok", "web1")];
    t.register(5, &r).unwrap();
    t.register(6, &with_service("n2", "db", "db")).unwrap();
    let dereg = Deregister {
        node: "n2".into(),
        service_id: "db".into(),
        check_id: String::new(),
    };
    t.deregister(7, &dereg).unwrap();
    let bytes = postcard::to_allocvec(&t.to_snapshot()).unwrap();
    let decode = |b: &[u8]| postcard::from_bytes::<CatalogSnapshot>(b).unwrap();
    let restored = CatalogTable::from_snapshot(decode(&bytes), 7).unwrap();
    assert_eq!(restored, t);
    assert_eq!(restored.hash(), t.hash());
    assert!(CatalogTable::from_snapshot(decode(&bytes), 6).is_err());

    let mut orphan = decode(&bytes);
    orphan.nodes.remove(0);
    assert!(CatalogTable::from_snapshot(orphan, 7).is_err());
    let mut twice = decode(&bytes);
    let dup = twice.nodes[0].clone();
    twice.nodes.push(dup);
    assert!(CatalogTable::from_snapshot(twice, 7).is_err());
    let mut stray_index = decode(&bytes);
    stray_index.service_index.push(("nope".into(), 3));
    assert!(CatalogTable::from_snapshot(stray_index, 7).is_err());
    let mut no_check_service = decode(&bytes);
    no_check_service.services.clear();
    no_check_service.service_index.clear();
    assert!(CatalogTable::from_snapshot(no_check_service, 7).is_err());
}

/// The health reads (Consul's `NodeChecks`, `ServiceChecks`,
/// `ChecksInState`, `CheckServiceNodes`): a service instance carries its
/// node's checks and its own, not another service's; the check reads
/// answer with the checks index; a health read of a service answers with
/// its `service.<name>` index, which a node check moves.
#[test]
fn health_reads_join_services_with_their_checks() {
    let mut t = CatalogTable::default();
    let mut r = with_service("n1", "web1", "web");
    r.node_meta = Some(Meta::from([("env".into(), "prod".into())]));
    r.checks = vec![
        Check {
            status: "passing".into(),
            ..chk("serfHealth", "")
        },
        Check {
            status: "warning".into(),
            ..chk("web-ok", "web1")
        },
    ];
    t.register(5, &r).unwrap();
    let mut db = with_service("n1", "db1", "db");
    // The same node fields, or the registration would change the node.
    db.node_meta = r.node_meta.clone();
    db.checks = vec![chk("db-ok", "db1")];
    t.register(6, &db).unwrap();
    t.register(7, &with_service("n2", "web2", "web")).unwrap();

    let ids =
        |checks: &[Check]| -> Vec<String> { checks.iter().map(|c| c.check_id.clone()).collect() };
    let (index, on_n1) = (t.checks_read_index(&none()), t.node_checks("N1"));
    assert_eq!(
        (index, ids(&on_n1)),
        (
            6,
            vec!["db-ok".into(), "serfHealth".into(), "web-ok".into()]
        )
    );
    let (index, web_checks) = t.service_checks("WEB", &none());
    assert_eq!((index, ids(&web_checks)), (6, vec!["web-ok".to_owned()]));
    assert_eq!(ids(&t.checks_in_state("critical", &none()).1), ["db-ok"]);
    assert_eq!(t.checks_in_state("any", &none()).1.len(), 3);
    let prod = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
    assert_eq!(
        t.checks_in_state("any", &prod),
        (7, t.checks_in_state("any", &none()).1)
    );

    let (index, web) = t.service_health("web", &[], &none());
    assert_eq!(index, 7);
    let shape: Vec<(String, Vec<String>)> = web
        .iter()
        .map(|c| (c.node.node.clone(), ids(&c.checks)))
        .collect();
    assert_eq!(
        shape,
        [
            (
                "n1".to_owned(),
                vec!["serfHealth".to_owned(), "web-ok".to_owned()]
            ),
            ("n2".to_owned(), vec![])
        ]
    );
    // A node check on n1 moves web's and db's indexes, not n2's.
    let mut alive = reg("n1");
    alive.node_meta = r.node_meta.clone();
    alive.checks = vec![chk("mem", "")];
    t.register(8, &alive).unwrap();
    assert_eq!(t.health_read_index("web"), 8);
    assert_eq!(t.health_read_index("db"), 8);
    // A service never seen: the nodes, services and checks tables' index.
    assert_eq!(t.health_read_index("nope"), 8);
}
