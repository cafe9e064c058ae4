//! Whole-server behaviour on the in-process test cluster (manual clock,
//! in-memory network and disks).

use tern_core::fsm::{ApplyResult, KvCommand, KvWrite};
use tern_core::rpc::{Op, ReadMode, ReplyBody, Request, RpcError};
use tern_core::testkit::{node_id, Cluster};
use tern_core::{Datacenter, Duration, NodeId};

fn req(op: Op, mode: ReadMode) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: mode,
        blocking: None,
        op,
    }
}

fn put(key: &str, value: &str) -> Request {
    req(
        Op::KvApply(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: value.as_bytes().to_vec(),
        })),
        ReadMode::Default,
    )
}

fn get(key: &str, mode: ReadMode) -> Request {
    req(Op::KvGet { key: key.into() }, mode)
}

fn value_of(c: &Cluster, at: NodeId, rid: tern_core::RequestId) -> Option<String> {
    match &c.responses[&(at, rid)] {
        Ok(r) => match &r.body {
            ReplyBody::Kv(e) => e
                .as_ref()
                .map(|e| String::from_utf8(e.value.clone()).unwrap()),
            b => panic!("unexpected body {b:?}"),
        },
        Err(e) => panic!("read failed: {e}"),
    }
}

#[test]
fn three_servers_elect_one_leader_and_commit_a_write() {
    let mut c = Cluster::with_voters(3);
    let leader = c
        .run_until_leader(Duration::from_secs(5))
        .expect("a leader");
    let leaders = c
        .servers
        .values()
        .filter(|s| s.role() == tern_core::raft::Role::Leader)
        .count();
    assert_eq!(leaders, 1);
    let rid = c.request(leader, put("a", "1"));
    c.run_for(Duration::from_millis(100));
    let r = c.responses[&(leader, rid)].clone().expect("write ok");
    assert_eq!(r.body, ReplyBody::Applied(ApplyResult::Kv(true)));
    for s in c.servers.values() {
        assert_eq!(
            s.fsm().kv_get("a").map(|e| e.value.clone()),
            Some(b"1".to_vec())
        );
    }
}

#[test]
fn a_follower_forwards_writes_and_consistent_reads_to_the_leader() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let follower = *c.servers.keys().find(|id| **id != leader).unwrap();
    let w = c.request(follower, put("k", "v"));
    c.run_for(Duration::from_millis(100));
    assert!(c.responses[&(follower, w)].is_ok());
    for mode in [ReadMode::Default, ReadMode::Consistent, ReadMode::Stale] {
        let r = c.request(follower, get("k", mode));
        c.run_for(Duration::from_millis(100));
        assert_eq!(value_of(&c, follower, r), Some("v".into()), "{mode:?}");
    }
}

#[test]
fn with_no_leader_requests_are_held_then_fail_with_no_cluster_leader() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    // Only one server left: it can never elect a leader.
    let others: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != leader).collect();
    c.crash(leader);
    c.crash(others[0]);
    let lone = others[1];
    c.run_for(Duration::from_secs(1));
    let rid = c.request(lone, put("x", "1"));
    c.run_for(Duration::from_secs(6));
    assert!(
        !c.responses.contains_key(&(lone, rid)),
        "held until rpc_hold_timeout (7s)"
    );
    c.run_for(Duration::from_secs(2));
    assert_eq!(c.responses[&(lone, rid)], Err(RpcError::NoLeader));
    assert_eq!(RpcError::NoLeader.to_string(), "No cluster leader");
}

#[test]
fn a_crashed_leader_is_replaced_and_no_acknowledged_write_is_lost() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        let rid = c.request(leader, put(&format!("k{i}"), &format!("v{i}")));
        acked.push(rid);
    }
    c.run_for(Duration::from_millis(200));
    for rid in &acked {
        assert!(c.responses[&(leader, *rid)].is_ok());
    }
    c.crash(leader);
    let new_leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    assert_ne!(new_leader, leader);
    c.start(leader);
    c.run_for(Duration::from_secs(1));
    for s in c.servers.values() {
        for i in 0..20 {
            assert_eq!(
                s.fsm().kv_get(&format!("k{i}")).unwrap().value,
                format!("v{i}").into_bytes()
            );
        }
    }
}

#[test]
fn a_single_server_elects_itself_and_commits_alone() {
    let mut c = Cluster::with_voters(1);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    assert_eq!(leader, node_id(1));
    let rid = c.request(leader, put("solo", "1"));
    assert!(
        c.responses[&(leader, rid)].is_ok(),
        "a single voter commits within the call"
    );
}

/// A duplicated Forward (the network replayed it) is proposed once: a CAS
/// applied twice would answer `false` for its own write. Found by the
/// simulator (seed 179 with 2.7% duplication and power losses).
#[test]
fn a_duplicated_forward_is_applied_once() {
    use tern_core::{Input, Message, MessageBody};
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let follower = *c.servers.keys().find(|id| **id != leader).unwrap();
    let cas = req(
        Op::KvApply(KvCommand::Cas {
            write: KvWrite {
                key: "once".into(),
                flags: 0,
                value: b"1".to_vec(),
            },
            modify_index: 0,
        }),
        ReadMode::Default,
    );
    let forward = Message {
        from: follower,
        to: leader,
        body: MessageBody::Forward {
            id: 77,
            request: cas,
        },
    };
    let before = c.servers[&leader].last_log_index();
    c.handle(leader, Input::Message(forward.clone()));
    c.handle(leader, Input::Message(forward));
    assert_eq!(
        c.servers[&leader].last_log_index().0,
        before.0 + 1,
        "proposed once"
    );
    c.run_for(Duration::from_millis(200));
    assert_eq!(
        c.servers[&leader].fsm().kv_get("once").unwrap().value,
        b"1".to_vec()
    );
}

/// A blocking query (`?index=N&wait=`) parks until the key's index moves
/// past N, and answers with the new value; without a change it answers when
/// the wait (plus at most wait/16 of jitter) runs out.
#[test]
fn a_blocking_query_returns_when_the_index_moves_or_the_wait_ends() {
    use tern_core::rpc::Blocking;
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let w = c.request(leader, put("watched", "1"));
    c.run_for(Duration::from_millis(100));
    let index = c.responses[&(leader, w)].as_ref().unwrap().index;

    let mut q = get("watched", ReadMode::Default);
    q.blocking = Some(Blocking {
        min_index: index,
        max_wait: Duration::from_secs(60),
    });
    let parked = c.request(leader, q.clone());
    c.run_for(Duration::from_secs(1));
    assert!(
        !c.responses.contains_key(&(leader, parked)),
        "parked while nothing changed"
    );
    c.request(leader, put("watched", "2"));
    c.run_for(Duration::from_millis(100));
    assert_eq!(value_of(&c, leader, parked), Some("2".into()));
    assert!(c.responses[&(leader, parked)].as_ref().unwrap().index > index);

    // Nothing changes: the query answers after its wait, with the same index.
    let mut q = get("watched", ReadMode::Default);
    let now_index = c.responses[&(leader, parked)].as_ref().unwrap().index;
    q.blocking = Some(Blocking {
        min_index: now_index,
        max_wait: Duration::from_secs(2),
    });
    let timed = c.request(leader, q);
    c.run_for(Duration::from_millis(1900));
    assert!(!c.responses.contains_key(&(leader, timed)));
    c.run_for(Duration::from_millis(300));
    let r = c.responses[&(leader, timed)].as_ref().unwrap();
    assert_eq!(r.index, now_index);
}

/// A leaving leader hands leadership to another voter, and a leaving server
/// fails every request at once with `No cluster leader` for the drain time,
/// so clients move on to another server.
#[test]
fn a_leaving_server_transfers_leadership_and_fails_fast() {
    use tern_core::Input;
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    c.handle(leader, Input::Leave);
    let rid = c.request(leader, put("x", "1"));
    assert_eq!(
        c.responses[&(leader, rid)],
        Err(RpcError::NoLeader),
        "answered at once"
    );
    c.run_for(Duration::from_millis(500));
    let next = c.leader().expect("a leader");
    assert_ne!(next, leader, "leadership moved to another voter");
    assert_eq!(c.servers[&leader].role(), tern_core::raft::Role::Follower);
    // After the drain time the server answers normally again (the daemon
    // exits before that; the core does not decide to stop).
    c.run_for(Duration::from_secs(5));
    let rid = c.request(leader, get("x", ReadMode::Stale));
    assert!(c.responses[&(leader, rid)].is_ok());
}

/// Hostile numbers from a peer (terms and indexes at u64::MAX) never panic a
/// server, never commit anything, and never make it vote twice in a term.
/// Indexes past any real log are refused outright (`PeerMessageRefused`); a
/// bare term of u64::MAX is believed, and then nobody can campaign past it.
#[test]
fn extreme_terms_and_indexes_from_a_peer_do_not_panic() {
    use tern_core::raft::{AppendEntries, RaftMessage, VoteRequest};
    use tern_core::{Event, Input, LogIndex, Message, MessageBody, Term};
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let follower = *c.servers.keys().find(|id| **id != leader).unwrap();
    let max = u64::MAX;
    let to_leader = |body| Message {
        from: follower,
        to: leader,
        body: MessageBody::Raft(body),
    };
    let heartbeat = |prev: u64, prev_term: u64, leader_commit: u64| {
        RaftMessage::AppendEntries(AppendEntries {
            term: Term(max),
            prev_log_index: LogIndex(prev),
            prev_log_term: Term(prev_term),
            entries: vec![],
            leader_commit: LogIndex(leader_commit),
            seq: max,
        })
    };

    // Phase 1: indexes at u64::MAX are refused; the leader keeps leading.
    let refused = [
        heartbeat(max, max, max),
        RaftMessage::VoteRequest(VoteRequest {
            term: Term(max),
            last_log_index: LogIndex(max),
            last_log_term: Term(max - 1),
            pre_vote: true,
            leadership_transfer: false,
        }),
    ];
    for body in refused {
        c.events.clear();
        c.handle(leader, Input::Message(to_leader(body)));
        assert!(
            matches!(&c.events[..], [(_, Event::PeerMessageRefused { from, .. })] if *from == follower),
            "{:?}",
            c.events
        );
    }
    assert_eq!(c.leader(), Some(leader));

    // Phase 2: a term of u64::MAX with sane indexes deposes the leader.
    c.handle(leader, Input::Message(to_leader(heartbeat(0, 0, max / 2))));
    c.run_for(Duration::from_secs(3));
    // The leader stepped down to the hostile term and nobody can campaign
    // past u64::MAX, so nobody leads; nothing was committed on its say-so.
    assert_eq!(c.leader(), None);
    for s in c.servers.values() {
        assert!(
            s.commit_index().0 < 100,
            "no commit index from the hostile message"
        );
    }
}

/// When the transport reports the leader gone, a follower holds new
/// requests instead of forwarding them into the void, answers a write it had
/// forwarded "outcome unknown" at once (it may or may not have been
/// applied), routes a forwarded read again, and the followers elect a new
/// leader well before a whole election timeout; the held requests then go
/// to it.
#[test]
fn a_leader_reported_gone_is_replaced_early_and_requests_move_on() {
    use tern_core::Input;
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let followers: Vec<NodeId> = c
        .servers
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    let f = followers[0];
    c.run_for(Duration::from_millis(20));

    // The leader dies with a write and a read forwarded to it in flight.
    c.crash(leader);
    let write = c.request(f, put("k", "v"));
    let read = c.request(f, get("k", ReadMode::Default));
    assert!(!c.responses.contains_key(&(f, write)));
    let died = c.now;
    for id in &followers {
        c.handle(*id, Input::Unreachable(leader));
    }
    assert_eq!(
        c.responses[&(f, write)],
        Err(RpcError::Unknown(
            "the connection to the leader closed before it answered".into()
        ))
    );
    assert!(!c.responses.contains_key(&(f, read)), "the read is held");
    let later = c.request(f, get("k", ReadMode::Default));
    assert!(
        !c.responses.contains_key(&(f, later)),
        "held, not forwarded"
    );

    // A new leader within the lease timeout plus jitter (100 + 50 ms), not
    // the 150-300 ms election timeout.
    let new = c.run_until_leader(Duration::from_secs(5)).unwrap();
    assert_ne!(new, leader);
    let took = c.now.saturating_since(died);
    assert!(took < Duration::from_millis(150), "took {took:?}");
    c.run_for(Duration::from_millis(50));
    for rid in [read, later] {
        assert!(
            matches!(&c.responses[&(f, rid)], Ok(r) if r.body == ReplyBody::Kv(None)),
            "{:?}",
            c.responses[&(f, rid)]
        );
    }
}

/// Snapshots follow Consul's `raft_snapshot_interval`: the threshold is
/// looked at only every interval (staggered between 1x and 2x), not after
/// every apply, so a busy server does not encode its whole state every few
/// thousand writes.
#[test]
fn snapshots_wait_for_the_snapshot_interval() {
    use tern_core::testkit::config;
    use tern_core::Event;
    let configs = (1..=3)
        .map(|i| {
            let mut c = config(i, 3);
            c.snapshot_threshold = 5;
            c.snapshot_interval = Duration::from_secs(1);
            c
        })
        .collect();
    let mut c = Cluster::new(configs);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    for i in 0..10 {
        c.request(leader, put(&format!("k{i}"), "v"));
    }
    c.run_for(Duration::from_millis(100));
    let taken = |c: &Cluster| {
        c.events
            .iter()
            .filter(|(id, e)| *id == leader && matches!(e, Event::SnapshotTaken { .. }))
            .count()
    };
    assert_eq!(
        taken(&c),
        0,
        "10 applied, past the threshold, but not yet checked"
    );
    c.run_for(Duration::from_secs(2));
    assert_eq!(taken(&c), 1, "checked within 2 intervals: one snapshot");
}

/// A server refuses, changing nothing, a snapshot whose state cannot be
/// restored or is not the state after exactly the entries it covers, and any
/// message claiming to come from itself. Before: the first two were installed
/// by Raft (commit moved to 5) while the state machine stayed at 1, so it
/// could never apply another entry; the third made a follower take itself
/// for its leader.
#[test]
fn a_server_refuses_unusable_snapshots_and_messages_from_itself() {
    use tern_core::fsm::Fsm;
    use tern_core::raft::{AppendEntries, InstallSnapshot, RaftMessage, Snapshot, SnapshotMeta};
    use tern_core::testkit::membership;
    use tern_core::{Event, Input, LogIndex, Message, MessageBody, Term};

    let mut c = Cluster::with_voters(3);
    let s3 = node_id(3);
    let offer = |data: Vec<u8>| Message {
        from: node_id(1),
        to: s3,
        body: MessageBody::Raft(RaftMessage::InstallSnapshot(InstallSnapshot {
            term: Term(2),
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: LogIndex(5),
                    last_term: Term(2),
                    membership: membership(3),
                },
                data,
            },
            seq: 1,
        })),
    };
    let mut at_4 = Fsm::new();
    at_4.apply_other(4);
    let from_itself = Message {
        from: s3,
        to: s3,
        body: MessageBody::Raft(RaftMessage::AppendEntries(AppendEntries {
            term: Term(2),
            prev_log_index: LogIndex(1),
            prev_log_term: Term(1),
            entries: vec![],
            leader_commit: LogIndex(1),
            seq: 1,
        })),
    };
    let cases = [
        (
            offer(b"not a state".to_vec()),
            "InstallSnapshot at 5 carries a state that cannot be restored",
        ),
        (
            offer(at_4.snapshot()),
            "InstallSnapshot at 5 carries a state applied up to 4",
        ),
        (from_itself, "a message from this server's own id"),
    ];
    for (m, reason) in cases {
        c.events.clear();
        c.handle(s3, Input::Message(m));
        let refused: Vec<String> = c
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::PeerMessageRefused { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 1, "{reason}");
        assert!(refused[0].starts_with(reason), "{}", refused[0]);
        assert_eq!(c.events.len(), 1, "{reason}: nothing else happened");
        let s = &c.servers[&s3];
        assert_eq!(s.commit_index(), LogIndex(0), "{reason}");
        assert_eq!(s.term(), Term(1), "{reason}");
        assert_eq!(s.leader(), None, "{reason}");
        assert_eq!(s.raft().snapshot(), None, "{reason}");
    }
}
