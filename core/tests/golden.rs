//! Golden vectors: one fixed example of every message, request, response,
//! command and WAL record (one for each `PersistOp`, plus the older
//! `Snapshot` record that data dirs may still hold), encoded and compared byte for byte with the files
//! in `tests/golden/`, and each file decoded back to its value. A change here
//! is a wire-format change: servers of different versions would stop
//! understanding each other, or a restart would stop reading its own WAL.
//!
//! A missing file fails the test (after writing it) so CI cannot pass
//! silently; `TERN_BLESS=1 cargo test -p tern-core --test golden` rewrites
//! every file. See `tests/golden/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use tern_core::autopilot::{AutopilotConfig, GossipStatus, HealthReply, ServerHealthReply};
use tern_core::clock::Duration;
use tern_core::fsm::{
    ApplyResult, CatalogError, CatalogTableName, CatalogVerb, Check, CheckDefinition,
    CheckServiceNode, Command, Deregister, DirEntry, Fsm, KvCommand, KvEntry, KvVerb, KvWrite,
    Node, NodeServices, Register, RestoreChunk, RestoreError, RestoreProgress, Service,
    ServiceAddress, ServiceCheck, ServiceInstance, Session, SessionBehavior, StoredAutopilot,
    TxnError, TxnOp, TxnResult, Weights,
};
use tern_core::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, HardState, InstallSnapshot,
    InstallSnapshotChunk, InstallSnapshotChunkResponse, InstallSnapshotResponse, Member,
    Membership, RaftMessage, Snapshot, SnapshotMeta, Suffrage, TimeoutNow, VoteRequest,
    VoteResponse,
};
use tern_core::rpc::{
    Blocking, CatalogOp, CatalogReply, Op, RaftServer, ReadMode, Reply, ReplyBody, Request,
    Response, RpcError,
};
use tern_core::wire::{self, WalRecord};
use tern_core::{Datacenter, LogIndex, Message, MessageBody, NodeId, NodeName, Term};

const S1: NodeId = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
const S2: NodeId = NodeId(0xfedc_ba98_7654_3210_ffee_ddcc_bbaa_9988);
const S3: NodeId = NodeId(3);

fn membership() -> Membership {
    let member = |name: &str, address: &str, suffrage| Member {
        name: NodeName(name.into()),
        address: address.into(),
        suffrage,
    };
    let mut servers = BTreeMap::new();
    servers.insert(S1, member("s1", "127.0.0.1:8300", Suffrage::Voter));
    servers.insert(S2, member("s2", "127.0.0.2:8300", Suffrage::Voter));
    servers.insert(S3, member("s3", "127.0.0.3:8300", Suffrage::Nonvoter));
    Membership { servers }
}

fn kv_write() -> KvWrite {
    KvWrite {
        key: "web/config".into(),
        flags: 0xdead_beef,
        value: b"{\"port\": 8080}".to_vec().into(),
    }
}

fn kv_commands() -> Vec<(&'static str, KvCommand)> {
    vec![
        ("set", KvCommand::Set(kv_write())),
        (
            "cas",
            KvCommand::Cas {
                write: kv_write(),
                modify_index: 17,
            },
        ),
        (
            "delete",
            KvCommand::Delete {
                key: "web/config".into(),
            },
        ),
        (
            "delete_cas",
            KvCommand::DeleteCas {
                key: "web/config".into(),
                modify_index: 0,
            },
        ),
        (
            "delete_tree",
            KvCommand::DeleteTree {
                prefix: "web/".into(),
            },
        ),
        (
            "lock",
            KvCommand::Lock {
                write: kv_write(),
                session: SESSION_ID.into(),
            },
        ),
        (
            "unlock",
            KvCommand::Unlock {
                write: kv_write(),
                session: SESSION_ID.into(),
            },
        ),
    ]
}

const SESSION_ID: &str = "adf4238a-882b-9ddc-4a9d-5b6758e4159e";

/// A session with every field set.
fn session() -> Session {
    Session {
        id: SESSION_ID.into(),
        name: "web-lock".into(),
        node: "web-01".into(),
        lock_delay_ns: 15_000_000_000,
        behavior: SessionBehavior::Delete,
        ttl: "30s".into(),
        node_checks: vec!["serfHealth".into()],
        service_checks: vec![ServiceCheck {
            id: "web-check".into(),
            namespace: String::new(),
        }],
        checks: vec!["legacy".into()],
        create_index: 0,
        modify_index: 0,
    }
}

/// A registration with every field set (and a second check for a service
/// the node does not have, which the state machine refuses).
fn catalog_register() -> Register {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Register {
        id: "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into(),
        node: "web-01".into(),
        address: "10.1.2.3".into(),
        datacenter: "dc1".into(),
        tagged_addresses: Some(map(&[("lan", "10.1.2.3"), ("wan", "198.51.100.3")])),
        node_meta: Some(map(&[("rack", "r1")])),
        service: Some(catalog_service()),
        checks: vec![Check {
            node: "web-01".into(),
            check_id: "web:http".into(),
            name: "web over HTTP".into(),
            status: "passing".into(),
            notes: "every 10 s".into(),
            output: "200 OK".into(),
            service_id: "web1".into(),
            service_name: "web".into(),
            service_tags: Some(vec!["v1".into()]),
            kind: "http".into(),
            definition: CheckDefinition {
                http: "http://10.1.2.3:8080/health".into(),
                tcp: String::new(),
                interval_ns: 10_000_000_000,
                timeout_ns: 1_000_000_000,
                deregister_critical_service_after_ns: 0x1_0000_0000,
            },
            create_index: 0,
            modify_index: 0,
        }],
        skip_node_update: true,
    }
}

fn catalog_service() -> Service {
    Service {
        kind: "mesh-gateway".into(),
        id: "web1".into(),
        service: "web".into(),
        tags: Some(vec!["v1".into(), "primary".into()]),
        address: "10.1.2.3".into(),
        tagged_addresses: BTreeMap::from([(
            "wan".to_string(),
            ServiceAddress {
                address: "198.51.100.3".into(),
                port: 8443,
            },
        )]),
        meta: Some(BTreeMap::from([(
            "consul-wan-federation".to_string(),
            "1".to_string(),
        )])),
        port: 8443,
        weights: Some(Weights {
            passing: 10,
            warning: 1,
        }),
        enable_tag_override: true,
        create_index: 0,
        modify_index: 0,
    }
}

fn catalog_deregister() -> Deregister {
    Deregister {
        node: "web-01".into(),
        service_id: "web1".into(),
        check_id: String::new(),
    }
}

fn catalog_node() -> Node {
    let r = catalog_register();
    Node {
        id: r.id,
        node: r.node,
        address: r.address,
        datacenter: r.datacenter,
        tagged_addresses: r.tagged_addresses,
        meta: None,
        create_index: 5,
        modify_index: 0x1_0000_0005,
    }
}

/// The state every FSM snapshot vector holds: a KV entry, autopilot's
/// configuration and, unless `kv_only`, a catalog with a node, a service,
/// a check, a removed service (so extinction indexes are set) and a
/// refused registration (which changes nothing).
fn fsm_state(kv_only: bool) -> Fsm {
    let mut fsm = Fsm::new();
    fsm.apply(1, &Command::Kv(KvCommand::Set(kv_write())));
    fsm.apply(
        2,
        &Command::AutopilotSet {
            config: autopilot_config(),
            cas: None,
        },
    );
    if !kv_only {
        let mut reg = catalog_register();
        reg.skip_node_update = false;
        assert_eq!(
            fsm.apply(3, &Command::CatalogRegister(Box::new(reg.clone()))),
            ApplyResult::Catalog(Ok(()))
        );
        let mut other = reg.clone();
        other.node = "db-01".into();
        other.id = String::new();
        other.service.as_mut().unwrap().id = "db1".into();
        other.service.as_mut().unwrap().service = "db".into();
        other.checks.clear();
        fsm.apply(4, &Command::CatalogRegister(Box::new(other)));
        fsm.apply(
            5,
            &Command::CatalogDeregister(Deregister {
                node: "db-01".into(),
                service_id: "db1".into(),
                check_id: String::new(),
            }),
        );
        let mut refused = reg;
        refused.checks[0].service_id = "nope".into();
        assert!(matches!(
            fsm.apply(6, &Command::CatalogRegister(Box::new(refused))),
            ApplyResult::Catalog(Err(_))
        ));
    }
    fsm.apply_other(7);
    fsm
}

/// `fsm_state(false)` with the node's serfHealth check, a session on it
/// and a key that session holds.
fn fsm_state_with_sessions() -> Fsm {
    let mut fsm = fsm_state(false);
    let mut reg = catalog_register();
    reg.service = None;
    reg.checks = vec![Check {
        check_id: "serfHealth".into(),
        name: "Serf Health Status".into(),
        status: "passing".into(),
        service_id: String::new(),
        ..reg.checks[0].clone()
    }];
    assert_eq!(
        fsm.apply(8, &Command::CatalogRegister(Box::new(reg))),
        ApplyResult::Catalog(Ok(()))
    );
    let s = Session {
        service_checks: vec![],
        checks: vec![],
        ..session()
    };
    assert_eq!(
        fsm.apply(9, &Command::SessionCreate(Box::new(s))),
        ApplyResult::Session(SESSION_ID.into())
    );
    let lock = KvCommand::Lock {
        write: kv_write(),
        session: SESSION_ID.into(),
    };
    assert_eq!(fsm.apply(10, &Command::Kv(lock)), ApplyResult::Kv(true));
    fsm
}

fn entries() -> Vec<Entry> {
    vec![
        Entry {
            term: Term(5),
            index: LogIndex(100),
            payload: EntryPayload::Noop,
        },
        Entry {
            term: Term(5),
            index: LogIndex(101),
            payload: EntryPayload::Command(Command::Kv(KvCommand::Set(kv_write())).into()),
        },
        Entry {
            term: Term(5),
            index: LogIndex(102),
            payload: EntryPayload::Membership(membership()),
        },
    ]
}

fn snapshot() -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(99),
            last_term: Term(4),
            membership: membership(),
        },
        data: vec![0, 1, 2, 3, 0x7f, 0x80, 0xff].into(),
    }
}

fn raft_messages() -> Vec<(&'static str, RaftMessage)> {
    vec![
        (
            "vote_request",
            RaftMessage::VoteRequest(VoteRequest {
                term: Term(6),
                last_log_index: LogIndex(102),
                last_log_term: Term(5),
                pre_vote: true,
                leadership_transfer: false,
            }),
        ),
        (
            "vote_response",
            RaftMessage::VoteResponse(VoteResponse {
                term: Term(6),
                granted: true,
                pre_vote: true,
            }),
        ),
        (
            "append_entries",
            RaftMessage::AppendEntries(AppendEntries {
                term: Term(5),
                prev_log_index: LogIndex(99),
                prev_log_term: Term(4),
                entries: entries(),
                leader_commit: LogIndex(99),
                seq: 1234,
            }),
        ),
        (
            "append_entries_response",
            RaftMessage::AppendEntriesResponse(AppendEntriesResponse {
                term: Term(5),
                success: false,
                match_index: LogIndex(42),
                seq: 1234,
            }),
        ),
        (
            "install_snapshot",
            RaftMessage::InstallSnapshot(InstallSnapshot {
                term: Term(5),
                snapshot: snapshot(),
                seq: 1235,
            }),
        ),
        (
            "install_snapshot_response",
            RaftMessage::InstallSnapshotResponse(InstallSnapshotResponse {
                term: Term(5),
                last_index: LogIndex(99),
                seq: 1235,
            }),
        ),
        (
            "timeout_now",
            RaftMessage::TimeoutNow(TimeoutNow {
                term: Term(u64::MAX),
            }),
        ),
        (
            "install_snapshot_chunk",
            RaftMessage::InstallSnapshotChunk(InstallSnapshotChunk {
                term: Term(5),
                meta: snapshot().meta,
                total_bytes: 1 << 20,
                crc32c: 0xE306_9283,
                offset: 4096,
                data: vec![0, 1, 2, 3, 0x7f, 0x80, 0xff],
                seq: 1236,
            }),
        ),
        (
            "install_snapshot_chunk_response",
            RaftMessage::InstallSnapshotChunkResponse(InstallSnapshotChunkResponse {
                term: Term(5),
                snapshot_index: LogIndex(99),
                next_offset: 4103,
                last_index: LogIndex(42),
                seq: 1236,
            }),
        ),
    ]
}

fn ops() -> Vec<(&'static str, Op)> {
    vec![
        (
            "kv_get",
            Op::KvGet {
                key: "web/config".into(),
            },
        ),
        (
            "kv_list",
            Op::KvList {
                prefix: "web/".into(),
            },
        ),
        (
            "kv_keys",
            Op::KvKeys {
                prefix: "web/".into(),
                separator: Some("/".into()),
            },
        ),
        (
            "kv_apply",
            Op::KvApply(KvCommand::Cas {
                write: kv_write(),
                modify_index: 17,
            }),
        ),
        ("status_leader", Op::StatusLeader),
        ("status_peers", Op::StatusPeers),
        ("raft_configuration", Op::RaftConfiguration),
        (
            "raft_add_nonvoter",
            Op::RaftAddNonvoter {
                id: S3,
                name: NodeName("s3".into()),
                address: "127.0.0.3:8300".into(),
            },
        ),
        ("raft_promote", Op::RaftPromote { id: S3 }),
        (
            "raft_remove_peer",
            Op::RaftRemovePeer {
                id: None,
                address: Some("127.0.0.3:8300".into()),
            },
        ),
        (
            "raft_transfer_leadership",
            Op::RaftTransferLeadership { to: Some(S2) },
        ),
        ("autopilot_health", Op::AutopilotHealth),
        ("autopilot_get_config", Op::AutopilotGetConfig),
        (
            "catalog_register",
            Op::Catalog(CatalogOp::Register(Box::new(catalog_register()))),
        ),
        (
            "catalog_deregister",
            Op::Catalog(CatalogOp::Deregister(catalog_deregister())),
        ),
        (
            "catalog_nodes",
            Op::Catalog(CatalogOp::Nodes {
                node_meta: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
            }),
        ),
        (
            "catalog_services",
            Op::Catalog(CatalogOp::Services {
                node_meta: BTreeMap::new(),
            }),
        ),
        (
            "catalog_service_nodes",
            Op::Catalog(CatalogOp::ServiceNodes {
                service: "web".into(),
                tags: vec!["v1".into(), "primary".into()],
                node_meta: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
            }),
        ),
        (
            "catalog_node_services",
            Op::Catalog(CatalogOp::NodeServices {
                node: "web-01".into(),
            }),
        ),
        (
            "catalog_node_checks",
            Op::Catalog(CatalogOp::NodeChecks {
                node: "web-01".into(),
            }),
        ),
        (
            "catalog_service_checks",
            Op::Catalog(CatalogOp::ServiceChecks {
                service: "web".into(),
                node_meta: BTreeMap::new(),
            }),
        ),
        (
            "catalog_checks_in_state",
            Op::Catalog(CatalogOp::ChecksInState {
                state: "critical".into(),
                node_meta: BTreeMap::from([("rack".to_string(), "r1".to_string())]),
            }),
        ),
        (
            "catalog_service_health",
            Op::Catalog(CatalogOp::ServiceHealth {
                service: "web".into(),
                tags: vec!["v1".into()],
                node_meta: BTreeMap::new(),
            }),
        ),
        (
            "autopilot_set_config",
            Op::AutopilotSetConfig {
                config: autopilot_config(),
                cas: Some(17),
            },
        ),
        ("snapshot_restore", Op::SnapshotRestore(restore_chunk())),
        ("snapshot_index", Op::SnapshotIndex),
        ("txn", Op::Txn(txn_ops())),
        ("session_create", Op::SessionCreate(Box::new(session()))),
        (
            "session_destroy",
            Op::SessionDestroy {
                id: SESSION_ID.into(),
            },
        ),
        (
            "session_renew",
            Op::SessionRenew {
                id: SESSION_ID.into(),
            },
        ),
        (
            "session_info",
            Op::SessionInfo {
                id: SESSION_ID.into(),
            },
        ),
        (
            "session_node",
            Op::SessionNode {
                node: "web-01".into(),
            },
        ),
        ("session_list", Op::SessionList),
    ]
}

/// A transaction with one operation of each kind.
fn txn_ops() -> Vec<TxnOp> {
    vec![
        TxnOp::Kv {
            verb: KvVerb::Cas,
            key: "web/config".into(),
            value: b"\x00{\"port\": 8080}".to_vec().into(),
            flags: 0xdead_beef,
            index: 0x1_0000_0005,
            session: "adf4238a-882b-9ddc-4a9d-5b6758e4159e".into(),
        },
        TxnOp::Node {
            verb: CatalogVerb::Set,
            node: catalog_node(),
        },
        TxnOp::Service {
            verb: CatalogVerb::DeleteCas,
            node: "web-01".into(),
            service: catalog_register().service.unwrap(),
        },
        TxnOp::Check {
            verb: CatalogVerb::Get,
            check: catalog_register().checks[0].clone(),
        },
    ]
}

/// One chunk of an operator's restore (`PUT /v1/snapshot`).
fn restore_chunk() -> RestoreChunk {
    RestoreChunk {
        id: 0x0123_4567_89ab_cdef,
        offset: 0,
        total: 10,
        data: b"\x04abc".to_vec(),
    }
}

/// A non-default autopilot configuration (every field set).
fn autopilot_config() -> AutopilotConfig {
    AutopilotConfig {
        cleanup_dead_servers: false,
        last_contact_threshold: Duration::from_millis(350),
        max_trailing_logs: 400,
        min_quorum: 3,
        server_stabilization_time: Duration::from_secs(20),
        redundancy_zone_tag: "zone".into(),
        disable_upgrade_migration: true,
        upgrade_version_tag: "build".into(),
    }
}

fn request(op: Op) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op,
    }
}

fn kv_entry(key: &str) -> KvEntry {
    KvEntry {
        key: key.into(),
        flags: 1,
        value: b"v".to_vec().into(),
        create_index: 10,
        modify_index: 12,
        lock_index: 0,
    }
}

fn reply_bodies() -> Vec<(&'static str, ReplyBody)> {
    vec![
        ("kv", ReplyBody::Kv(Some(kv_entry("web/config")))),
        (
            "kv_list",
            ReplyBody::KvList(vec![kv_entry("web/a"), kv_entry("web/b")]),
        ),
        (
            "keys",
            ReplyBody::Keys(vec!["web/a".into(), "web/sub/".into()]),
        ),
        ("applied", ReplyBody::Applied(ApplyResult::Kv(true))),
        (
            "applied_refused",
            ReplyBody::Applied(ApplyResult::Refused(format!(
                "invalid session {SESSION_ID:?}"
            ))),
        ),
        (
            "applied_session",
            ReplyBody::Applied(ApplyResult::Session(SESSION_ID.into())),
        ),
        (
            "entry",
            ReplyBody::Entry(Some(DirEntry {
                session: SESSION_ID.into(),
                lock_index: 2,
                ..DirEntry::from(kv_entry("web/config"))
            })),
        ),
        (
            "entries",
            ReplyBody::Entries(vec![
                DirEntry::from(kv_entry("web/a")),
                DirEntry::from(kv_entry("web/b")),
            ]),
        ),
        (
            "sessions",
            ReplyBody::Sessions(vec![Session {
                create_index: 7,
                modify_index: 7,
                ..session()
            }]),
        ),
        ("leader", ReplyBody::Leader(Some("127.0.0.1:8300".into()))),
        (
            "peers",
            ReplyBody::Peers(vec!["127.0.0.1:8300".into(), "127.0.0.2:8300".into()]),
        ),
        (
            "configuration",
            ReplyBody::Configuration {
                servers: vec![RaftServer {
                    id: S1,
                    node: NodeName("s1".into()),
                    address: "127.0.0.1:8300".into(),
                    leader: true,
                    voter: true,
                }],
                index: 102,
            },
        ),
        ("done", ReplyBody::Done),
        (
            "autopilot_config",
            ReplyBody::AutopilotConfig(StoredAutopilot {
                config: autopilot_config(),
                create_index: 5,
                modify_index: 17,
            }),
        ),
        (
            "applied_autopilot",
            ReplyBody::Applied(ApplyResult::Autopilot(false)),
        ),
        (
            "applied_catalog",
            ReplyBody::Applied(ApplyResult::Catalog(Ok(()))),
        ),
        (
            "applied_catalog_refused",
            ReplyBody::Applied(ApplyResult::Catalog(Err(CatalogError::TableFull {
                table: CatalogTableName::Checks,
                max: 262_144,
            }))),
        ),
        (
            "applied_restore",
            ReplyBody::Applied(ApplyResult::Restore(Ok(RestoreProgress {
                received: 1 << 20,
                total: 3 << 20,
                restored_index: Some(0x1_0000_0005),
            }))),
        ),
        (
            "applied_restore_refused",
            ReplyBody::Applied(ApplyResult::Restore(Err(RestoreError::OutOfOrder {
                expected: 1 << 20,
                got: 2 << 20,
            }))),
        ),
        (
            "applied_txn",
            ReplyBody::Applied(ApplyResult::Txn(Ok(vec![
                TxnResult::Kv(DirEntry {
                    session: SESSION_ID.into(),
                    ..DirEntry::from(kv_entry("web/config"))
                }),
                TxnResult::Node(catalog_node()),
            ]))),
        ),
        (
            "applied_txn_refused",
            ReplyBody::Applied(ApplyResult::Txn(Err(vec![TxnError {
                op_index: 127,
                what: "failed to set key \"a\", index is stale".into(),
            }]))),
        ),
        (
            "txn_read",
            ReplyBody::Txn(Ok(vec![TxnResult::Check(
                catalog_register().checks[0].clone(),
            )])),
        ),
        (
            "catalog_nodes",
            ReplyBody::Catalog(CatalogReply::Nodes(vec![catalog_node()])),
        ),
        (
            "catalog_services",
            ReplyBody::Catalog(CatalogReply::Services(BTreeMap::from([
                ("db".to_string(), vec![]),
                ("web".to_string(), vec!["primary".into(), "v1".into()]),
            ]))),
        ),
        (
            "catalog_service_nodes",
            ReplyBody::Catalog(CatalogReply::ServiceNodes(vec![ServiceInstance {
                node: catalog_node(),
                node_name: "WEB-01".into(),
                service: catalog_service(),
            }])),
        ),
        (
            "catalog_node_services",
            ReplyBody::Catalog(CatalogReply::NodeServices(Some(Box::new(NodeServices {
                node: catalog_node(),
                services: vec![catalog_service()],
            })))),
        ),
        (
            "catalog_node_services_none",
            ReplyBody::Catalog(CatalogReply::NodeServices(None)),
        ),
        (
            "catalog_checks",
            ReplyBody::Catalog(CatalogReply::Checks(catalog_register().checks)),
        ),
        (
            "catalog_service_health",
            ReplyBody::Catalog(CatalogReply::ServiceHealth(vec![CheckServiceNode {
                node: catalog_node(),
                service: catalog_service(),
                checks: catalog_register().checks,
            }])),
        ),
        (
            "autopilot_health",
            ReplyBody::AutopilotHealth(HealthReply {
                healthy: false,
                failure_tolerance: 0,
                optimistic_failure_tolerance: 1,
                servers: vec![
                    ServerHealthReply {
                        id: S1,
                        name: NodeName("s1".into()),
                        address: "127.0.0.1:8300".into(),
                        serf_status: GossipStatus::Alive,
                        leader: true,
                        voter: true,
                        last_contact: Some(Duration::ZERO),
                        last_term: Term(3),
                        last_index: LogIndex(102),
                        healthy: true,
                        stable_for: Duration::from_secs(12),
                    },
                    ServerHealthReply {
                        id: S2,
                        name: NodeName("s2".into()),
                        address: "127.0.0.2:8300".into(),
                        serf_status: GossipStatus::Failed,
                        leader: false,
                        voter: false,
                        last_contact: None,
                        last_term: Term(0),
                        last_index: LogIndex(0),
                        healthy: false,
                        stable_for: Duration::from_millis(1500),
                    },
                ],
            }),
        ),
    ]
}

fn reply(body: ReplyBody) -> Reply {
    Reply {
        index: 102,
        known_leader: true,
        last_contact_ms: 3,
        body,
    }
}

fn rpc_errors() -> Vec<(&'static str, RpcError)> {
    vec![
        ("no_leader", RpcError::NoLeader),
        (
            "not_ready_for_consistent_reads",
            RpcError::NotReadyForConsistentReads,
        ),
        ("no_path_to_datacenter", RpcError::NoPathToDatacenter),
        (
            "too_large",
            RpcError::TooLarge("value of 600000 bytes is over kv_value_bytes_max".into()),
        ),
        ("bad_request", RpcError::BadRequest("missing key".into())),
        ("busy", RpcError::Busy),
        ("disk_full", RpcError::DiskFull),
        ("unknown", RpcError::Unknown("leadership lost".into())),
        ("refused", RpcError::Refused("Must provide node".into())),
    ]
}

fn wal_records() -> Vec<(&'static str, WalRecord)> {
    vec![
        (
            "hard_state",
            WalRecord::HardState(HardState {
                term: Term(6),
                vote: Some(S2),
            }),
        ),
        ("append", WalRecord::Append(entries())),
        (
            "snapshot",
            WalRecord::Snapshot {
                snapshot: snapshot(),
                compact_to: LogIndex(90),
            },
        ),
        ("truncate_from", WalRecord::TruncateFrom(LogIndex(93))),
        ("save_snapshot", WalRecord::SaveSnapshot(snapshot())),
        ("purge_up_to", WalRecord::PurgeUpTo(LogIndex(90))),
        ("install_snapshot", WalRecord::InstallSnapshot(snapshot())),
        (
            "snapshot_header",
            WalRecord::SnapshotHeader {
                installed: true,
                meta: snapshot().meta,
                total_bytes: 7,
                crc32c: 0x1234_5678,
            },
        ),
        (
            "snapshot_piece",
            WalRecord::SnapshotPiece(vec![0, 1, 2, 3, 0x7f, 0x80, 0xff]),
        ),
    ]
}

fn message(body: MessageBody) -> Message {
    Message {
        from: S1,
        from_address: "10.0.0.1:8300".into(),
        to: S2,
        body,
    }
}

/// Compares (or, when blessing, writes) golden files and collects failures.
struct Golden {
    dir: PathBuf,
    bless: bool,
    seen: BTreeSet<String>,
    failures: Vec<String>,
}

impl Golden {
    fn new() -> Golden {
        Golden {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
            bless: std::env::var("TERN_BLESS").is_ok_and(|v| v == "1"),
            seen: BTreeSet::new(),
            failures: Vec::new(),
        }
    }

    /// `encoded` must equal the file; the file must decode to `value`.
    fn check<T, E>(
        &mut self,
        name: &str,
        value: &T,
        encoded: Vec<u8>,
        decode: impl Fn(&[u8]) -> Result<T, E>,
    ) where
        T: PartialEq + Debug,
        E: Debug,
    {
        let file = format!("{name}.bin");
        assert!(self.seen.insert(file.clone()), "two vectors named {name}");
        let path = self.dir.join(&file);
        let stored = match std::fs::read(&path) {
            Ok(stored) if !self.bless => stored,
            Ok(_) => {
                std::fs::write(&path, &encoded).unwrap();
                return;
            }
            Err(_) => {
                std::fs::create_dir_all(&self.dir).unwrap();
                std::fs::write(&path, &encoded).unwrap();
                if !self.bless {
                    self.failures
                        .push(format!("{file}: was missing; written (commit it)"));
                }
                return;
            }
        };
        if stored != encoded {
            self.failures.push(format!(
                "{file}: encoding changed\n  stored  {stored:02x?}\n  encoded {encoded:02x?}"
            ));
        }
        match decode(&stored) {
            Ok(decoded) if decoded == *value => {}
            Ok(decoded) => self.failures.push(format!(
                "{file}: decodes to a different value\n  want {value:?}\n  got  {decoded:?}"
            )),
            Err(e) => self
                .failures
                .push(format!("{file}: does not decode: {e:?}")),
        }
    }

    /// A file an older build wrote, which this one no longer writes but must
    /// still decode to `value`. Never blessed: it is history.
    fn check_decodes<T, E>(&mut self, name: &str, value: &T, decode: impl Fn(&[u8]) -> Result<T, E>)
    where
        T: PartialEq + Debug,
        E: Debug,
    {
        let file = format!("{name}.bin");
        assert!(self.seen.insert(file.clone()), "two vectors named {name}");
        match std::fs::read(self.dir.join(&file)) {
            Err(e) => self.failures.push(format!("{file}: {e}")),
            Ok(stored) => match decode(&stored) {
                Ok(decoded) if decoded == *value => {}
                Ok(decoded) => self.failures.push(format!(
                    "{file}: decodes to a different value\n  want {value:?}\n  got  {decoded:?}"
                )),
                Err(e) => self
                    .failures
                    .push(format!("{file}: does not decode: {e:?}")),
            },
        }
    }

    /// Fails on collected failures, and on files no vector claims.
    fn finish(self) {
        let mut failures = self.failures;
        for f in std::fs::read_dir(&self.dir).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".bin") && !self.seen.contains(&name) {
                failures.push(format!("{name}: no vector claims this file; delete it"));
            }
        }
        assert!(
            failures.is_empty(),
            "golden vectors differ (if the format change is intended, bump \
             CODEC_VERSION and re-bless; see tests/golden/README.md):\n{}",
            failures.join("\n")
        );
    }
}

fn decode_wal_record(bytes: &[u8]) -> Result<WalRecord, String> {
    let rec = wire::recover(bytes).map_err(|e| e.to_string())?;
    match (rec.torn_tail, <[WalRecord; 1]>::try_from(rec.records)) {
        (None, Ok([r])) => Ok(r),
        (t, r) => Err(format!("not one clean record: torn {t:?}, records {r:?}")),
    }
}

#[test]
fn golden_vectors_match() {
    let mut g = Golden::new();

    // Every message vector twice: the current encoding (version 2, with the
    // sender's address), and the file an older build wrote (version 1,
    // without it), which must still decode, with an empty address.
    let mut messages: Vec<(String, Message)> = raft_messages()
        .into_iter()
        .map(|(name, raft)| (format!("raft_{name}"), message(MessageBody::Raft(raft))))
        .collect();
    messages.push((
        "forward".into(),
        message(MessageBody::Forward {
            id: 77,
            request: Request {
                datacenter: Datacenter("dc1".into()),
                read_mode: ReadMode::Stale,
                blocking: Some(Blocking {
                    min_index: 101,
                    max_wait: Duration::from_secs(300),
                }),
                op: Op::KvList {
                    prefix: "web/".into(),
                },
            },
        }),
    ));
    messages.push((
        "forward_reply_ok".into(),
        message(MessageBody::ForwardReply {
            id: 77,
            response: Ok(reply(ReplyBody::Kv(None))),
        }),
    ));
    for (name, err) in rpc_errors() {
        messages.push((
            format!("forward_reply_err_{name}"),
            message(MessageBody::ForwardReply {
                id: 78,
                response: Err(err),
            }),
        ));
    }
    for (name, m) in messages {
        g.check(
            &format!("message_{name}"),
            &m,
            wire::encode_message(&m),
            wire::decode_message,
        );
        // Version 1 never carried the errors added after it.
        if name.ends_with("_refused") {
            continue;
        }
        let v1 = Message {
            from_address: String::new(),
            ..m
        };
        g.check_decodes(&format!("message_v1_{name}"), &v1, wire::decode_message);
    }

    for (name, op) in ops() {
        let r = request(op);
        g.check(
            &format!("request_{name}"),
            &r,
            wire::encode_request(&r),
            wire::decode_request,
        );
    }
    for (name, body) in reply_bodies() {
        let r: Response = Ok(reply(body));
        g.check(
            &format!("response_ok_{name}"),
            &r,
            wire::encode_response(&r),
            wire::decode_response,
        );
    }
    for (name, err) in rpc_errors() {
        let r: Response = Err(err);
        g.check(
            &format!("response_err_{name}"),
            &r,
            wire::encode_response(&r),
            wire::decode_response,
        );
    }

    // A client agent's calls and the replies on the same connection
    // (`wire::call`), and the error only a client agent produces.
    let call = wire::Call {
        id: 0x1_0000_0001,
        request: request(Op::KvApply(KvCommand::Set(kv_write()))),
    };
    g.check(
        "call_kv_apply",
        &call,
        wire::encode_call(&call),
        wire::decode_call,
    );
    let replies = [
        ("ok", Ok(reply(ReplyBody::Applied(ApplyResult::Kv(true))))),
        ("err_no_leader", Err(RpcError::NoLeader)),
    ];
    for (name, response) in replies {
        let r = wire::CallReply { id: 7, response };
        g.check(
            &format!("call_reply_{name}"),
            &r,
            wire::encode_call_reply(&r),
            wire::decode_call_reply,
        );
    }
    let no_servers: Response = Err(RpcError::NoServers);
    g.check(
        "response_err_no_servers",
        &no_servers,
        wire::encode_response(&no_servers),
        wire::decode_response,
    );

    for (name, kv) in kv_commands() {
        let c = Command::Kv(kv);
        g.check(
            &format!("command_kv_{name}"),
            &c,
            wire::encode_command(&c),
            wire::decode_command,
        );
    }
    // Proposed by the leader's tombstone GC; an index above 2^32 pins the
    // varint's width.
    let reap = Command::TombstoneReap {
        upto: 0x1_2345_6789,
    };
    g.check(
        "command_tombstone_reap",
        &reap,
        wire::encode_command(&reap),
        wire::decode_command,
    );
    let autopilot = Command::AutopilotSet {
        config: autopilot_config(),
        cas: Some(0),
    };
    g.check(
        "command_autopilot_set",
        &autopilot,
        wire::encode_command(&autopilot),
        wire::decode_command,
    );

    for (name, c) in [
        ("create", Command::SessionCreate(Box::new(session()))),
        (
            "destroy",
            Command::SessionDestroy {
                id: SESSION_ID.into(),
            },
        ),
    ] {
        g.check(
            &format!("command_session_{name}"),
            &c,
            wire::encode_command(&c),
            wire::decode_command,
        );
    }

    for (name, c) in [
        (
            "register",
            Command::CatalogRegister(Box::new(catalog_register())),
        ),
        (
            "deregister",
            Command::CatalogDeregister(catalog_deregister()),
        ),
    ] {
        g.check(
            &format!("command_catalog_{name}"),
            &c,
            wire::encode_command(&c),
            wire::decode_command,
        );
    }

    let txn = Command::Txn(txn_ops());
    g.check(
        "command_txn",
        &txn,
        wire::encode_command(&txn),
        wire::decode_command,
    );

    let restore = Command::RestoreChunk(restore_chunk());
    g.check(
        "command_restore_chunk",
        &restore,
        wire::encode_command(&restore),
        wire::decode_command,
    );

    // The state machine's snapshot format: version 5 (with sessions and
    // locks) as this build writes it, and the version 4 files (with the
    // index offset and a staged restore), version 3 files and a version 2
    // file earlier builds wrote, which must restore.
    let full = fsm_state(false);
    let kv_only = fsm_state(true);
    g.check_decodes("fsm_snapshot_v3", &full, Fsm::restore);
    g.check_decodes("fsm_snapshot_v3_kv_only", &kv_only, Fsm::restore);
    g.check_decodes("fsm_snapshot_v2", &kv_only, Fsm::restore);
    g.check_decodes("fsm_snapshot_v4", &full, Fsm::restore);
    // Halfway through a restore: three of its ten bytes staged.
    let mut staging = fsm_state(false);
    let mut first = restore_chunk();
    first.data.truncate(3);
    assert!(matches!(
        staging.apply(8, &Command::RestoreChunk(first)),
        ApplyResult::Restore(Ok(_))
    ));
    g.check_decodes("fsm_snapshot_v4_restore_staged", &staging, Fsm::restore);
    // After a restore of a state at index 1000 onto a log at 8: the
    // index offset is 993, so the next write records index 1002.
    let mut restored = fsm_state(true);
    let mut far = Fsm::new();
    far.apply(1000, &Command::Kv(KvCommand::Set(kv_write())));
    let source = far.snapshot();
    let whole = RestoreChunk {
        id: 9,
        offset: 0,
        total: source.len() as u64,
        data: source,
    };
    assert!(matches!(
        restored.apply(8, &Command::RestoreChunk(whole)),
        ApplyResult::Restore(Ok(RestoreProgress {
            restored_index: Some(_),
            ..
        }))
    ));
    restored.apply(9, &Command::Kv(KvCommand::Set(kv_write())));
    assert_eq!(restored.index(), 1002);
    g.check_decodes("fsm_snapshot_v4_restored", &restored, Fsm::restore);
    let with_sessions = fsm_state_with_sessions();
    g.check(
        "fsm_snapshot_v5",
        &with_sessions,
        with_sessions.snapshot(),
        Fsm::restore,
    );

    for (name, record) in wal_records() {
        let mut bytes = Vec::new();
        wire::encode_record(&record, &mut bytes);
        g.check(&format!("wal_{name}"), &record, bytes, decode_wal_record);
    }

    g.finish();
}
