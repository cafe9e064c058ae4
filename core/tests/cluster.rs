//! Whole-server behaviour on the in-process test cluster (manual clock,
//! in-memory network and disks).

use tern_core::fsm::{ApplyResult, Command, KvCommand, KvWrite};
use tern_core::raft::EntryPayload;
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
            value: value.as_bytes().to_vec().into(),
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
            ReplyBody::Entry(e) => e
                .as_ref()
                .map(|e| String::from_utf8(e.value.to_vec()).unwrap()),
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
            s.fsm().kv_get("a").map(|e| e.value.to_vec()),
            Some(b"1".to_vec())
        );
    }
}

/// A value is held once per server: the table's entry and the log entry
/// it was applied from share the bytes (`fsm::Value`), on the leader, which
/// took it from the request, and on each follower, which decoded it.
#[test]
fn an_applied_value_shares_its_bytes_with_its_log_entry_on_every_server() {
    let mut c = Cluster::with_voters(3);
    let leader = c
        .run_until_leader(Duration::from_secs(5))
        .expect("a leader");
    let rid = c.request(leader, put("a", &"v".repeat(300)));
    c.run_for(Duration::from_millis(100));
    assert!(c.responses[&(leader, rid)].is_ok());
    for (id, s) in &c.servers {
        let stored = s.fsm().kv_get("a").expect("applied everywhere");
        let entry = s
            .raft()
            .log()
            .entry(tern_core::LogIndex(stored.modify_index))
            .expect("the entry is still in the log");
        let EntryPayload::Command(cmd) = &entry.payload else {
            panic!("{id}: not a command: {entry:?}");
        };
        let Command::Kv(KvCommand::Set(w)) = &**cmd else {
            panic!("{id}: not a KV set: {cmd:?}");
        };
        assert_eq!(w.value, stored.value);
        assert!(
            w.value.shares_with(&stored.value),
            "{id}: the table holds a copy of the log entry's value"
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
                value: b"1".to_vec().into(),
            },
            modify_index: 0,
        }),
        ReadMode::Default,
    );
    let forward = Message {
        from: follower,
        from_address: String::new(),
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
    // A second leave does not restart the drain.
    c.handle(leader, Input::Leave);
    assert!(!c.events.iter().any(|(_, e)| *e == tern_core::Event::Left));
    // When the drain time is over, the leave is complete: the server says so
    // once (the daemon exits on it) and keeps failing fast.
    c.run_for(Duration::from_secs(5));
    let left: Vec<_> = c
        .events
        .iter()
        .filter(|(id, e)| *id == leader && *e == tern_core::Event::Left)
        .collect();
    assert_eq!(left.len(), 1, "Event::Left once");
    assert!(c.servers[&leader].has_left());
    let rid = c.request(leader, get("x", ReadMode::Stale));
    assert_eq!(c.responses[&(leader, rid)], Err(RpcError::NoLeader));
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
        from_address: String::new(),
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
            matches!(&c.responses[&(f, rid)], Ok(r) if r.body == ReplyBody::Entry(None)),
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

fn blocking(mut r: Request, min_index: u64, wait: Duration) -> Request {
    r.blocking = Some(tern_core::rpc::Blocking {
        min_index,
        max_wait: wait,
    });
    r
}

/// Put `key` through `at`, run until it is applied everywhere; its index.
fn put_applied(c: &mut Cluster, at: NodeId, key: &str, value: &str) -> u64 {
    let w = c.request(at, put(key, value));
    c.run_for(Duration::from_millis(200));
    match &c.responses[&(at, w)] {
        Ok(r) => r.index,
        Err(e) => panic!("put {key} through {at:?} failed: {e}"),
    }
}

fn followers_of(c: &Cluster, leader: NodeId) -> Vec<NodeId> {
    c.servers
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect()
}

/// A blocking query sent to a follower is forwarded to the leader, which
/// parks it for its whole wait; the follower waits as long (the wait plus
/// Consul's wait/16 of jitter plus the hold timeout, as Consul's
/// `QueryOptions.HasTimedOut` in agent/structs/structs.go), not just the
/// 7 s hold timeout, and answers with the unchanged entry.
#[test]
fn a_follower_forwarded_blocking_query_waits_its_whole_wait() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let f = followers_of(&c, leader)[0];
    let index = put_applied(&mut c, leader, "k", "1");

    let q = c.request(
        f,
        blocking(get("k", ReadMode::Default), index, Duration::from_secs(15)),
    );
    c.run_for(Duration::from_secs(14));
    assert!(
        !c.responses.contains_key(&(f, q)),
        "still waiting after 14 s of a 15 s wait: {:?}",
        c.responses.get(&(f, q))
    );
    // The wait plus at most wait/16 of jitter (0.94 s).
    c.run_for(Duration::from_secs(2));
    let r = c.responses[&(f, q)]
        .as_ref()
        .expect("an answer, not an error");
    assert_eq!(r.index, index);
    assert_eq!(value_of(&c, f, q), Some("1".into()));
}

/// A forwarded blocking query wakes when the key changes, however long into
/// its wait that is, and answers with the new value and index.
#[test]
fn a_follower_forwarded_blocking_query_wakes_on_a_write() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let fs = followers_of(&c, leader);
    let index = put_applied(&mut c, leader, "k", "1");

    let q = c.request(
        fs[0],
        blocking(get("k", ReadMode::Default), index, Duration::from_secs(60)),
    );
    // Past the 7 s hold timeout, then a write through the other follower.
    c.run_for(Duration::from_secs(10));
    assert!(!c.responses.contains_key(&(fs[0], q)));
    let written = put_applied(&mut c, fs[1], "k", "2");
    assert_eq!(value_of(&c, fs[0], q), Some("2".into()));
    let r = c.responses[&(fs[0], q)].as_ref().unwrap();
    assert_eq!(r.index, written);
    assert!(r.index > index);
}

/// A forwarded blocking query follows the leader: when the follower learns
/// of a new leader (here the old one crashed without a word), it sends the
/// query again to the new one, within the original deadline, and the new
/// leader's wake-up answers it.
#[test]
fn a_forwarded_blocking_query_is_sent_again_to_a_new_leader() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let fs = followers_of(&c, leader);
    let index = put_applied(&mut c, leader, "k", "1");
    let q = c.request(
        fs[0],
        blocking(get("k", ReadMode::Default), index, Duration::from_secs(60)),
    );
    c.run_for(Duration::from_secs(2));

    // The leader dies silently; the followers elect another.
    c.crash(leader);
    let new = c.run_until_leader(Duration::from_secs(5)).unwrap();
    assert_ne!(new, leader);
    c.run_for(Duration::from_millis(100));
    assert!(!c.responses.contains_key(&(fs[0], q)), "still parked");

    // A write the old leader can never see: only the new leader can answer.
    let written = put_applied(&mut c, new, "k", "2");
    assert_eq!(value_of(&c, fs[0], q), Some("2".into()));
    assert_eq!(c.responses[&(fs[0], q)].as_ref().unwrap().index, written);
}

/// When the transport reports the leader gone, a forwarded blocking query
/// is held for the next leader and sent to it with what is left of its
/// wait: it answers when its original wait ends, not 7 s after the
/// re-send, and not with an error.
#[test]
fn a_forwarded_blocking_query_survives_an_unreachable_leader_and_keeps_its_wait() {
    use tern_core::Input;
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let fs = followers_of(&c, leader);
    let index = put_applied(&mut c, leader, "k", "1");
    let started = c.now;
    let wait = Duration::from_secs(20);
    let q = c.request(fs[0], blocking(get("k", ReadMode::Default), index, wait));
    c.run_for(Duration::from_secs(3));
    c.crash(leader);
    for f in &fs {
        c.handle(*f, Input::Unreachable(leader));
    }
    c.run_until_leader(Duration::from_secs(5)).unwrap();
    // Nothing changes: no answer until the original wait is over, then the
    // unchanged entry (the wait plus at most wait/16 of jitter).
    let end = started + wait;
    c.run_for(end.saturating_since(c.now + Duration::from_secs(1)));
    assert!(
        !c.responses.contains_key(&(fs[0], q)),
        "answered before its wait ended: {:?}",
        c.responses.get(&(fs[0], q))
    );
    c.run_for(Duration::from_secs(3));
    let r = c.responses[&(fs[0], q)]
        .as_ref()
        .expect("an answer, not an error");
    assert_eq!(r.index, index);
    assert_eq!(value_of(&c, fs[0], q), Some("1".into()));
}

/// After a leadership transfer the old leader is alive and still has the
/// query parked: the follower sends it to the new leader, and only the new
/// leader's reply is delivered; the old one's is dropped.
#[test]
fn only_the_current_leaders_reply_to_a_resent_query_is_delivered() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let fs = followers_of(&c, leader);
    let (f, next) = (fs[0], fs[1]);
    let index = put_applied(&mut c, leader, "k", "1");
    let q = c.request(
        f,
        blocking(get("k", ReadMode::Default), index, Duration::from_secs(60)),
    );
    c.run_for(Duration::from_secs(1));
    let t = c.request(
        leader,
        req(
            Op::RaftTransferLeadership { to: Some(next) },
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(500));
    assert!(c.responses[&(leader, t)].is_ok());
    assert_eq!(c.leader(), Some(next));
    assert!(!c.responses.contains_key(&(f, q)));

    // The write wakes the query on both the old leader and the new one; the
    // new leader applies it first. Take its answer as soon as it is there.
    let w = c.request(next, put("k", "2"));
    for _ in 0..1000 {
        if c.responses.contains_key(&(f, q)) {
            break;
        }
        c.step(Duration::from_millis(1));
    }
    let written = c.responses[&(next, w)].as_ref().unwrap().index;
    assert_eq!(c.responses[&(f, q)].as_ref().unwrap().index, written);
    assert!(
        c.servers[&leader].last_applied().0 < written,
        "the old leader has not applied the write yet"
    );
    c.responses.remove(&(f, q));
    c.run_for(Duration::from_secs(2));
    assert!(
        !c.responses.contains_key(&(f, q)),
        "answered twice: {:?}",
        c.responses.get(&(f, q))
    );
}

/// A stale blocking query is served by the follower itself and parks
/// there until the follower applies a change to the key.
#[test]
fn a_stale_blocking_query_parks_on_the_follower() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let f = followers_of(&c, leader)[0];
    let index = put_applied(&mut c, leader, "k", "1");
    let q = c.request(
        f,
        blocking(get("k", ReadMode::Stale), index, Duration::from_secs(30)),
    );
    c.run_for(Duration::from_secs(10));
    assert!(!c.responses.contains_key(&(f, q)));
    let written = put_applied(&mut c, leader, "k", "2");
    assert_eq!(value_of(&c, f, q), Some("2".into()));
    assert_eq!(c.responses[&(f, q)].as_ref().unwrap().index, written);
}

/// A blocking query on a missing key watches that key, as Consul's
/// `KVS.Get` watches the key's node (agent/consul/kvs_endpoint.go,
/// state/kvs.go `kvsGetTxn`): a write to another key does not wake it;
/// creating the key does. Its 404 carries the table index, as Consul's.
#[test]
fn a_blocking_query_on_a_missing_key_waits_for_that_key() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let f = followers_of(&c, leader)[0];
    let table = put_applied(&mut c, leader, "other", "1");

    // The 404 reports the KV table index.
    let r = c.request(f, get("missing", ReadMode::Default));
    c.run_for(Duration::from_millis(100));
    assert_eq!(value_of(&c, f, r), None);
    assert_eq!(c.responses[&(f, r)].as_ref().unwrap().index, table);

    let q = c.request(
        f,
        blocking(
            get("missing", ReadMode::Default),
            table,
            Duration::from_secs(60),
        ),
    );
    c.run_for(Duration::from_secs(1));
    put_applied(&mut c, leader, "unrelated", "1");
    put_applied(&mut c, leader, "missing/child", "1");
    c.run_for(Duration::from_secs(1));
    assert!(
        !c.responses.contains_key(&(f, q)),
        "woken by a write to another key: {:?}",
        c.responses.get(&(f, q))
    );
    let created = put_applied(&mut c, leader, "missing", "here");
    assert_eq!(value_of(&c, f, q), Some("here".into()));
    assert_eq!(c.responses[&(f, q)].as_ref().unwrap().index, created);

    // A delete of the key is a change too: it wakes with a 404.
    let q = c.request(
        f,
        blocking(
            get("missing", ReadMode::Default),
            created,
            Duration::from_secs(60),
        ),
    );
    c.run_for(Duration::from_secs(1));
    put_applied(&mut c, leader, "unrelated", "2");
    assert!(!c.responses.contains_key(&(f, q)));
    let d = c.request(
        leader,
        req(
            Op::KvApply(KvCommand::Delete {
                key: "missing".into(),
            }),
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(200));
    let deleted = c.responses[&(leader, d)].as_ref().unwrap().index;
    assert_eq!(value_of(&c, f, q), None);
    assert_eq!(c.responses[&(f, q)].as_ref().unwrap().index, deleted);
}

/// `?recurse` and `?keys` blocking queries wake only when something under
/// their prefix changes (an entry or a tombstone), also while the prefix
/// holds nothing; a query of the empty prefix wakes on any change, as
/// Consul's `kvsListTxn` (agent/consul/state/kvs.go).
#[test]
fn prefix_blocking_queries_wake_only_for_their_prefix() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let f = followers_of(&c, leader)[0];
    let table = put_applied(&mut c, leader, "other", "1");
    let wait = Duration::from_secs(60);
    let list = c.request(
        f,
        blocking(
            req(
                Op::KvList {
                    prefix: "p/".into(),
                },
                ReadMode::Default,
            ),
            table,
            wait,
        ),
    );
    let keys = c.request(
        f,
        blocking(
            req(
                Op::KvKeys {
                    prefix: "p/".into(),
                    separator: Some("/".into()),
                },
                ReadMode::Default,
            ),
            table,
            wait,
        ),
    );
    let everything = c.request(
        f,
        blocking(
            req(
                Op::KvList {
                    prefix: String::new(),
                },
                ReadMode::Default,
            ),
            table,
            wait,
        ),
    );
    c.run_for(Duration::from_secs(1));
    let unrelated = put_applied(&mut c, leader, "q/1", "1");
    c.run_for(Duration::from_secs(1));
    assert!(!c.responses.contains_key(&(f, list)), "recurse woke");
    assert!(!c.responses.contains_key(&(f, keys)), "keys woke");
    assert_eq!(
        c.responses[&(f, everything)].as_ref().unwrap().index,
        unrelated,
        "the empty prefix wakes on any change"
    );

    let created = put_applied(&mut c, leader, "p/a/b", "1");
    for q in [list, keys] {
        assert_eq!(c.responses[&(f, q)].as_ref().unwrap().index, created);
    }
    match &c.responses[&(f, keys)].as_ref().unwrap().body {
        ReplyBody::Keys(k) => assert_eq!(k, &["p/a/".to_string()]),
        b => panic!("unexpected body {b:?}"),
    }

    // A delete under the prefix (a tombstone) wakes a prefix query.
    let list = c.request(
        f,
        blocking(
            req(
                Op::KvList {
                    prefix: "p/".into(),
                },
                ReadMode::Default,
            ),
            created,
            wait,
        ),
    );
    c.run_for(Duration::from_secs(1));
    put_applied(&mut c, leader, "q/2", "1");
    assert!(!c.responses.contains_key(&(f, list)));
    let d = c.request(
        leader,
        req(
            Op::KvApply(KvCommand::DeleteTree {
                prefix: "p/".into(),
            }),
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(200));
    let deleted = c.responses[&(leader, d)].as_ref().unwrap().index;
    let r = c.responses[&(f, list)].as_ref().unwrap();
    assert_eq!((r.index, &r.body), (deleted, &ReplyBody::Entries(vec![])));
}

// ----- tombstones: reaped through the log (Consul's tombstone GC) -----

fn delete(key: &str) -> Request {
    req(
        Op::KvApply(KvCommand::Delete { key: key.into() }),
        ReadMode::Default,
    )
}

fn list(prefix: &str, min_index: u64, wait: Duration) -> Request {
    let mut q = req(
        Op::KvList {
            prefix: prefix.into(),
        },
        ReadMode::Default,
    );
    q.blocking = Some(tern_core::rpc::Blocking {
        min_index,
        max_wait: wait,
    });
    q
}

/// A cluster of `n` voters whose tombstones live `ttl`, binned by `granularity`.
fn cluster_with_ttl(n: u64, ttl: Duration, granularity: Duration) -> Cluster {
    use tern_core::testkit::config;
    Cluster::new(
        (1..=n)
            .map(|i| {
                let mut c = config(i, n);
                c.tombstone_ttl = ttl;
                c.tombstone_ttl_granularity = granularity;
                // No compaction, so a test can count the reaps in the log.
                c.snapshot_threshold = u64::MAX;
                c
            })
            .collect(),
    )
}

/// The answer's index, which must be a success.
fn index_of(c: &Cluster, at: NodeId, rid: tern_core::RequestId) -> u64 {
    c.responses[&(at, rid)].as_ref().expect("answered ok").index
}

/// Every running server has applied the same log and holds the same state.
fn assert_replicas_agree(c: &Cluster) {
    let states: Vec<(u64, u64, usize)> = c
        .servers
        .values()
        .map(|s| {
            (
                s.last_applied().0,
                s.fsm().state_hash(),
                s.fsm().tombstone_count(),
            )
        })
        .collect();
    assert!(
        states.windows(2).all(|w| w[0] == w[1]),
        "replicas differ: {states:?}"
    );
}

/// How many reap entries the server's log holds.
fn reaps_in_log(c: &Cluster, at: NodeId) -> Vec<u64> {
    use tern_core::fsm::Command;
    use tern_core::raft::EntryPayload;
    let s = &c.servers[&at];
    (1..=s.last_log_index().0)
        .filter_map(
            |i| match s.entry(tern_core::LogIndex(i)).map(|e| &e.payload) {
                Some(EntryPayload::Command(cmd)) => match cmd.as_ref() {
                    Command::TombstoneReap { upto } => Some(*upto),
                    _ => None,
                },
                _ => None,
            },
        )
        .collect()
}

/// Consul's `TestLeader_ReapTombstones` (agent/consul/leader_test.go), with
/// the default TTL (15 min) and granularity (30 s): tombstones outlive the
/// TTL only by the granularity, then the leader's one reap removes them on
/// every server at the same log position.
#[test]
fn the_leader_reaps_tombstones_after_the_ttl_on_every_server() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let ttl = c.servers[&leader].config().tombstone_ttl;
    assert_eq!(ttl, Duration::from_secs(15 * 60));

    // Phase 1: deletes of every kind leave tombstones on every server.
    for k in ["a/1", "a/2", "b/1", "c/1", "c/2"] {
        c.request(leader, put(k, "v"));
    }
    c.run_for(Duration::from_millis(100));
    let b1 = c.servers[&leader].fsm().kv_get("b/1").unwrap().modify_index;
    c.request(leader, delete("a/1"));
    c.request(
        leader,
        req(
            Op::KvApply(KvCommand::DeleteCas {
                key: "b/1".into(),
                modify_index: b1,
            }),
            ReadMode::Default,
        ),
    );
    c.request(
        leader,
        req(
            Op::KvApply(KvCommand::DeleteTree {
                prefix: "c/".into(),
            }),
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(100));
    for s in c.servers.values() {
        assert_eq!(s.fsm().tombstone_count(), 4);
    }

    let kv_index = c.servers[&leader].fsm().kv_index();

    // Phase 2: not a moment before the TTL.
    c.run_for(Duration::from_nanos(ttl.as_nanos() - 1_000_000_000));
    for s in c.servers.values() {
        assert_eq!(s.fsm().tombstone_count(), 4, "reaped before the TTL");
    }
    assert!(reaps_in_log(&c, leader).is_empty());

    // Phase 3: within one granularity after it, one reap, applied everywhere.
    c.run_for(Duration::from_secs(32));
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(reaps_in_log(&c, leader).len(), 1);
    for s in c.servers.values() {
        assert_eq!(s.fsm().tombstone_count(), 0);
        assert_eq!(reaps_in_log(&c, s.id()), reaps_in_log(&c, leader));
    }
    assert_replicas_agree(&c);
    // The reap changed no visible value and no table index.
    assert_eq!(c.servers[&leader].fsm().kv_keys("", None), ["a/2"]);
    assert_eq!(c.servers[&leader].fsm().kv_index(), kv_index);
}

/// The GC runs only on the leader, and a new leader does not know the old
/// one's hints: it hints its own last log index when it takes over
/// (Consul's `establishLeadership`), so tombstones deleted under the old
/// leader are reaped one TTL after the new one's election, on every server,
/// the old leader included once it is back.
#[test]
fn a_leader_change_between_delete_and_expiry_still_reaps_the_tombstones() {
    let (ttl, granularity) = (Duration::from_secs(60), Duration::from_secs(5));
    let mut c = cluster_with_ttl(3, ttl, granularity);
    let old = c.run_until_leader(Duration::from_secs(5)).unwrap();
    for i in 0..5 {
        c.request(old, put(&format!("k{i}"), "v"));
    }
    c.run_for(Duration::from_millis(100));
    for i in 0..5 {
        c.request(old, delete(&format!("k{i}")));
    }
    c.run_for(Duration::from_millis(100));
    assert!(c.servers[&old].tombstone_gc().buckets() > 0);
    for s in c.servers.values() {
        assert_eq!(s.fsm().tombstone_count(), 5);
        let follows = s.id() != old;
        assert_eq!(
            s.tombstone_gc().buckets() == 0,
            follows,
            "only the leader tracks"
        );
    }

    // Halfway to expiry the leader dies; another takes over.
    c.run_for(Duration::from_secs(30));
    c.crash(old);
    let new = c.run_until_leader(Duration::from_secs(5)).unwrap();
    assert_ne!(new, old);

    // The old leader's bin would have expired now: nobody reaps yet.
    c.run_for(Duration::from_secs(40));
    for s in c.servers.values() {
        assert_eq!(s.fsm().tombstone_count(), 5, "reaped before the new TTL");
    }
    // One TTL (plus a bin) after the election, the new leader reaps.
    c.run_for(Duration::from_secs(30));
    assert_eq!(c.leader(), Some(new));
    for s in c.servers.values() {
        assert_eq!(s.fsm().tombstone_count(), 0);
    }
    assert_eq!(reaps_in_log(&c, new).len(), 1);
    assert_replicas_agree(&c);

    // The old leader comes back, catches up, and has reaped too.
    c.start(old);
    c.run_for(Duration::from_secs(2));
    assert_eq!(c.servers[&old].fsm().tombstone_count(), 0);
    assert_eq!(c.servers[&old].tombstone_gc().buckets(), 0);
    assert_replicas_agree(&c);
}

/// What a Consul client sees (agent/consul/state/kvs.go `kvsListTxn`, and
/// the "reset the index if it goes backwards" rule of Consul's blocking
/// query docs): a blocking list of a prefix is woken by a delete under it;
/// the reap of that delete's tombstone wakes no one, even where the
/// prefix's index slides back to its newest live entry (as Consul's
/// `TestStateStore_ReapTombstones` shows it does); a parked query answers
/// only for a real change, at an index above what its client saw, or when
/// its wait ends. An emptied prefix never reports less than its delete.
#[test]
fn blocking_queries_see_deletes_and_are_not_fooled_by_the_reap() {
    let (ttl, granularity) = (Duration::from_secs(60), Duration::from_secs(5));
    let mut c = cluster_with_ttl(3, ttl, granularity);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let follower = *c.servers.keys().find(|id| **id != leader).unwrap();
    let live = c.request(leader, put("p/live", "v"));
    let dead = c.request(leader, put("p/dead", "v"));
    let q_only = c.request(leader, put("q/only", "v"));
    c.run_for(Duration::from_millis(100));
    let (live_at, seen) = (index_of(&c, leader, live), index_of(&c, leader, dead));
    let q_only_at = index_of(&c, leader, q_only);

    // Phase 1: a delete wakes a blocking list of its prefix, on the leader
    // and on a follower (stale read), with the delete's index.
    let wait = Duration::from_secs(300);
    let on_leader = c.request(leader, list("p/", seen, wait));
    let mut stale = list("p/", seen, wait);
    stale.read_mode = ReadMode::Stale;
    let on_follower = c.request(follower, stale);
    let emptied = c.request(leader, list("q/", q_only_at, wait));
    c.run_for(Duration::from_secs(1));
    assert!(!c.responses.contains_key(&(leader, on_leader)), "parked");
    let del = c.request(leader, delete("p/dead"));
    let del_q = c.request(leader, delete("q/only"));
    c.run_for(Duration::from_millis(100));
    let deleted_at = index_of(&c, leader, del);
    for (at, rid) in [(leader, on_leader), (follower, on_follower)] {
        let r = c.responses[&(at, rid)].as_ref().unwrap();
        assert_eq!(r.index, deleted_at);
        assert_eq!(
            r.body,
            ReplyBody::Entries(c.servers[&leader].fsm().kv_dir_list("p/"))
        );
    }
    assert_eq!(index_of(&c, leader, emptied), index_of(&c, leader, del_q));

    // Phase 2: clients park again at what they saw; the reap comes and goes.
    let after_delete = c.request(leader, list("p/", deleted_at, wait));
    let q_seen = index_of(&c, leader, del_q);
    let after_emptied = c.request(leader, list("q/", q_seen, wait));
    c.run_for(Duration::from_secs(70));
    assert_eq!(c.servers[&leader].fsm().tombstone_count(), 0, "reaped");
    assert_eq!(reaps_in_log(&c, leader).len(), 1);
    assert!(
        !c.responses.contains_key(&(leader, after_delete)),
        "the reap does not wake a query on the prefix it slid back"
    );
    assert!(!c.responses.contains_key(&(leader, after_emptied)));
    // A fresh read shows the slide (Consul's behaviour) for the prefix with
    // a live key, and no slide below the delete for the emptied one.
    let fresh = c.request(leader, list("p/", 0, wait));
    let fresh_q = c.request(leader, list("q/", 0, wait));
    c.run_for(Duration::from_millis(100));
    assert_eq!(index_of(&c, leader, fresh), live_at);
    assert!(index_of(&c, leader, fresh_q) >= q_seen);

    // Phase 3: the next change under each prefix wakes its parked query
    // with an index above anything its client saw. A write elsewhere does
    // not wake the emptied prefix's query: Consul's list watches only the
    // prefix's nodes (agent/consul/state/kvs.go `kvsListTxn`).
    let w = c.request(leader, put("p/new", "v"));
    c.run_for(Duration::from_millis(100));
    assert_eq!(index_of(&c, leader, after_delete), index_of(&c, leader, w));
    assert!(index_of(&c, leader, after_delete) > deleted_at);
    assert!(!c.responses.contains_key(&(leader, after_emptied)));
    let wq = c.request(leader, put("q/again", "v"));
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        index_of(&c, leader, after_emptied),
        index_of(&c, leader, wq)
    );
    assert!(index_of(&c, leader, after_emptied) > q_seen);
    assert_replicas_agree(&c);
}

/// Memory is bounded under churn: 10,000 put/delete cycles of distinct keys
/// (each delete leaves a tombstone) over five TTLs of simulated time. At
/// every point each server keeps at most the tombstones of the last TTL
/// plus two bins (one of rounding, one for the reap to commit), and at
/// least those of the last TTL less a bin (nothing is reaped early); the
/// GC's bins stay within TTL/granularity + 2; once the churn stops, one
/// more TTL leaves none.
#[test]
fn tombstones_stay_bounded_under_churn() {
    let (ttl, granularity) = (Duration::from_secs(20), Duration::from_secs(1));
    let mut c = cluster_with_ttl(3, ttl, granularity);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let period = Duration::from_millis(10); // 100 deletes a second
    let per_ttl = ttl.as_nanos() / period.as_nanos();
    let per_bin = granularity.as_nanos() / period.as_nanos();
    let (upper, lower) = (per_ttl + 2 * per_bin, per_ttl - per_bin);
    let (mut peak, mut checked_lower) = (0, 0);
    for i in 0..10_000u64 {
        c.request(leader, put(&format!("churn/{i}"), "v"));
        c.request(leader, delete(&format!("churn/{i}")));
        c.run_for(period);
        for s in c.servers.values() {
            let n = s.fsm().tombstone_count() as u64;
            assert!(n <= upper, "cycle {i}: {n} tombstones > {upper}");
            peak = peak.max(n);
            if i > per_ttl + per_bin {
                assert!(
                    n >= lower,
                    "cycle {i}: {n} tombstones < {lower}: reaped early"
                );
                checked_lower += 1;
            }
        }
        let bins = c.servers[&leader].tombstone_gc().buckets() as u64;
        assert!(bins <= per_ttl / per_bin + 2, "cycle {i}: {bins} bins");
    }
    assert_eq!(c.leader(), Some(leader), "one leader throughout");
    assert!(peak > lower && checked_lower > 20_000, "peak {peak}");
    let reaps = reaps_in_log(&c, leader).len();
    // Bins expire from one TTL into the churn to its end: ~80 of them.
    assert!((70..=110).contains(&reaps), "one reap per bin: {reaps}");

    c.run_for(ttl + granularity.saturating_mul(2));
    for s in c.servers.values() {
        assert_eq!(s.fsm().tombstone_count(), 0);
        assert!(s.fsm().kv_list("churn/").is_empty());
    }
    assert_replicas_agree(&c);
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
        from_address: "s1:8300".into(),
        to: s3,
        body: MessageBody::Raft(RaftMessage::InstallSnapshot(InstallSnapshot {
            term: Term(2),
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: LogIndex(5),
                    last_term: Term(2),
                    membership: membership(3),
                },
                data: data.into(),
            },
            seq: 1,
        })),
    };
    let mut at_4 = Fsm::new();
    at_4.apply_other(4);
    let from_itself = Message {
        from: s3,
        from_address: "s3:8300".into(),
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
        assert_eq!(s.raft().snapshot_meta(), None, "{reason}");
    }
}

/// A voter with an empty log knows no other server's address (it was made a
/// voter while it was down and lost its data dir, or never received the
/// configuration that names it). It must still answer the servers that talk
/// to it, at the address each message carries (hashicorp/raft's
/// `RPCHeader.Addr`), or a cluster that needs its vote never elects a
/// leader. Chaos seed 9000 found this: s1's configuration was {s1, s4}, s4
/// restarted empty, and s4 dropped every answer. Before the fix, this test
/// found no leader.
#[test]
fn a_voter_with_an_empty_log_answers_peers_it_knows_no_address_for() {
    use tern_core::testkit::config;
    let mut empty = config(3, 3);
    empty.bootstrap = None;
    let mut c = Cluster::new(vec![config(1, 3), config(2, 3), empty]);
    let (s1, s2, s3) = (node_id(1), node_id(2), node_id(3));
    assert_eq!(c.servers[&s3].raft().address_of(s1), None);
    // s2 is down: s1 needs s3's vote.
    c.crash(s2);
    let leader = c
        .run_until_leader(Duration::from_secs(5))
        .expect("s1 wins with s3's vote");
    assert_eq!(leader, s1);
    let rid = c.request(s1, put("a", "1"));
    c.run_for(Duration::from_millis(200));
    let r = c.responses[&(s1, rid)].clone().expect("write ok");
    assert_eq!(r.body, ReplyBody::Applied(ApplyResult::Kv(true)));
    assert_eq!(
        c.servers[&s3].fsm().kv_get("a").map(|e| e.value.to_vec()),
        Some(b"1".to_vec())
    );
    assert_eq!(c.servers[&s3].raft().address_of(s1), Some("s1:8300"));
}

/// The address a message carries is a hint for an unknown peer only: it
/// never replaces one the configuration names (a peer can claim anything),
/// and one over `ADDRESS_BYTES_MAX` is refused, changing nothing.
#[test]
fn a_sender_address_never_overrides_the_configuration_and_is_bounded() {
    use tern_core::message::ADDRESS_BYTES_MAX;
    use tern_core::raft::{AppendEntries, RaftMessage};
    use tern_core::{Event, Input, LogIndex, Message, MessageBody, Term};

    let mut c = Cluster::with_voters(3);
    let (s1, s3) = (node_id(1), node_id(3));
    let heartbeat = |from_address: String| Message {
        from: s1,
        from_address,
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
    c.handle(s3, Input::Message(heartbeat("evil:1".into())));
    assert_eq!(c.servers[&s3].raft().address_of(s1), Some("s1:8300"));
    assert_eq!(
        c.servers[&s3].term(),
        Term(2),
        "the heartbeat itself counted"
    );

    c.events.clear();
    let long = "x".repeat(ADDRESS_BYTES_MAX + 1);
    c.handle(s3, Input::Message(heartbeat(long)));
    let refused: Vec<&Event> = c.events.iter().map(|(_, e)| e).collect();
    assert!(
        matches!(refused.as_slice(), [Event::PeerMessageRefused { reason, .. }]
            if reason.starts_with(&format!("a sender address of {} bytes", ADDRESS_BYTES_MAX + 1))),
        "{refused:?}"
    );
    // At the limit it is taken.
    c.events.clear();
    c.handle(s3, Input::Message(heartbeat("y".repeat(ADDRESS_BYTES_MAX))));
    assert!(c
        .events
        .iter()
        .all(|(_, e)| !matches!(e, Event::PeerMessageRefused { .. })));
}

/// A leaving leader hands leadership to a voter that is answering, not to
/// one that is down even if it is as caught up and would win the tie on id
/// (found by the real-process leave test: the TimeoutNow went to a server
/// that had already left, and nobody took over until the leader was gone).
#[test]
fn a_leaving_leader_transfers_to_a_voter_that_answers() {
    let (mut c, leader, _down, up) = leader_with_one_follower_down();
    c.run_for(Duration::from_millis(200));
    c.handle(leader, tern_core::Input::Leave);
    // Well within one election timeout (150-300 ms): a transfer, not an
    // election.
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        c.leader(),
        Some(up),
        "leadership moved to the answering voter"
    );
}

/// The same, the moment the driver reports the voter gone (its connection
/// closed): it answered a moment ago, but a transfer looks elsewhere.
#[test]
fn a_leaving_leader_skips_a_voter_reported_gone() {
    let (mut c, leader, down, up) = leader_with_one_follower_down();
    c.handle(leader, tern_core::Input::Unreachable(down));
    c.handle(leader, tern_core::Input::Leave);
    c.run_for(Duration::from_millis(100));
    assert_eq!(
        c.leader(),
        Some(up),
        "leadership moved to the answering voter"
    );
}

/// Three voters that all hold a write; then the follower with the lowest
/// id (the transfer tie-break's choice among equals) crashes. Returns the
/// cluster, the leader, the crashed follower and the one still up.
fn leader_with_one_follower_down() -> (Cluster, NodeId, NodeId, NodeId) {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let mut followers: Vec<NodeId> = c
        .servers
        .keys()
        .filter(|id| **id != leader)
        .copied()
        .collect();
    followers.sort();
    let (down, up) = (followers[0], followers[1]);
    let rid = c.request(leader, put("x", "1"));
    c.run_for(Duration::from_millis(50));
    assert!(c.responses[&(leader, rid)].is_ok());
    c.crash(down);
    (c, leader, down, up)
}

/// A write in flight when its leader loses leadership is not answered
/// "leadership lost" if the next leader commits it: the old leader, now a
/// follower, learns the entry it proposed was committed with the term it
/// proposed it in (Log Matching) and answers with its result. This is what
/// makes a graceful leave or a leadership change invisible to a client
/// whose write was in flight (issue 8's rolling restart with zero
/// client-visible errors).
#[test]
fn a_write_in_flight_at_a_leader_change_is_answered_once_the_next_leader_commits_it() {
    let mut c = Cluster::with_voters(3);
    let old = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let followers: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != old).collect();
    // The followers' acknowledgements never reach the leader: it cannot
    // commit the write, but its entry reaches them.
    for f in &followers {
        c.cut.insert((*f, old));
    }
    let rid = c.request(old, put("in-flight", "v"));
    c.deliver_all();
    for f in &followers {
        c.cut.insert((old, *f));
    }
    // The old leader steps down (no quorum); the others elect a leader,
    // which commits the entry with its first entry of the new term.
    c.run_for(Duration::from_secs(2));
    assert!(!c.responses.contains_key(&(old, rid)), "not answered yet");
    let new = c.leader().expect("a new leader");
    assert_ne!(new, old);
    c.cut.clear();
    c.run_for(Duration::from_secs(2));
    let reply = c.responses.get(&(old, rid)).expect("answered").clone();
    let reply = reply.expect("the committed write is answered with its result");
    assert_eq!(reply.body, ReplyBody::Applied(ApplyResult::Kv(true)));
    assert!(c.servers[&old].fsm().kv_get("in-flight").is_some());
}

/// A write in flight when its leader loses leadership and that nobody
/// commits (its entry never left the old leader) is answered "leadership
/// lost" (outcome unknown) once `rpc_hold_timeout` has passed, not before.
#[test]
fn a_write_nobody_commits_is_answered_unknown_after_the_hold_timeout() {
    let mut c = Cluster::with_voters(3);
    let old = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let followers: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != old).collect();
    for f in &followers {
        c.cut.insert((*f, old));
        c.cut.insert((old, *f));
    }
    let rid = c.request(old, put("lost", "v"));
    c.run_for(Duration::from_secs(2));
    assert!(c.servers[&old].role() != tern_core::raft::Role::Leader);
    assert!(!c.responses.contains_key(&(old, rid)), "still waiting");
    c.run_for(c.configs[&old].rpc_hold_timeout);
    match c.responses.get(&(old, rid)) {
        Some(Err(RpcError::Unknown(m))) => assert!(m.contains("leadership lost"), "{m}"),
        other => panic!("expected leadership lost, got {other:?}"),
    }
}

fn configuration_index(c: &mut Cluster, at: NodeId) -> (u64, usize) {
    let rid = c.request(at, req(Op::RaftConfiguration, ReadMode::Stale));
    c.run_for(Duration::from_millis(50));
    match &c.responses[&(at, rid)] {
        Ok(r) => match &r.body {
            ReplyBody::Configuration { servers, index } => (*index, servers.len()),
            b => panic!("unexpected body {b:?}"),
        },
        Err(e) => panic!("configuration read failed: {e}"),
    }
}

/// `/v1/operator/raft/configuration`'s `Index` is where the configuration
/// in effect was written (hashicorp/raft `GetConfiguration().Index()`):
/// writes do not move it, a membership change moves it to its own entry.
/// Removing a peer that is not in the configuration names it as Consul's
/// `RaftRemovePeerByID`/`ByAddress` do, and changes nothing.
#[test]
fn the_configuration_index_is_the_configurations_and_an_unknown_peer_is_named() {
    let mut c = Cluster::with_voters(3);
    let leader = c
        .run_until_leader(Duration::from_secs(5))
        .expect("a leader");
    let (first, n) = configuration_index(&mut c, leader);
    assert_eq!(n, 3);
    let mut last_write = 0;
    for i in 0..5 {
        last_write = put_applied(&mut c, leader, &format!("k{i}"), "v");
    }
    assert!(last_write > first);
    assert_eq!(configuration_index(&mut c, leader).0, first);

    let unknown = node_id(99);
    let rid = c.request(
        leader,
        req(
            Op::RaftRemovePeer {
                id: Some(unknown),
                address: None,
            },
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(50));
    assert_eq!(
        c.responses[&(leader, rid)],
        Err(RpcError::BadRequest(format!(
            "id \"{unknown}\" was not found in the Raft configuration"
        )))
    );
    let rid = c.request(
        leader,
        req(
            Op::RaftRemovePeer {
                id: None,
                address: Some("10.9.9.9:8300".into()),
            },
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(50));
    assert_eq!(
        c.responses[&(leader, rid)],
        Err(RpcError::BadRequest(
            "address \"10.9.9.9:8300\" was not found in the Raft configuration".into()
        ))
    );
    assert_eq!(configuration_index(&mut c, leader), (first, 3));

    let follower = followers_of(&c, leader)[0];
    let rid = c.request(
        leader,
        req(
            Op::RaftRemovePeer {
                id: Some(follower),
                address: None,
            },
            ReadMode::Default,
        ),
    );
    c.run_for(Duration::from_millis(200));
    assert!(c.responses[&(leader, rid)].is_ok());
    let (moved, n) = configuration_index(&mut c, leader);
    assert_eq!(n, 2);
    assert!(moved > last_write, "{moved} > {last_write}");
}

/// Forwarded requests each time out at their own deadline, whatever else
/// is waiting: a follower whose forwarded write is lost answers it
/// "outcome unknown" once the 7 s hold is over (not earlier, not at the
/// deadline of a later request), while a forwarded blocking query with a
/// longer wait stays parked and still wakes on a write. (Deadlines are
/// indexed, `ForwardTable` in core/src/server.rs; this pins that the index
/// finds the earliest and expires only what is due.)
#[test]
fn forwarded_requests_expire_each_at_their_own_deadline() {
    use tern_core::MessageBody;
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    let fs = followers_of(&c, leader);
    let f = fs[0];
    let index = put_applied(&mut c, leader, "k", "1");
    // The blocking query first (a later deadline), then a write whose
    // forward is lost on the way.
    let q = c.request(
        f,
        blocking(get("k", ReadMode::Default), index, Duration::from_secs(60)),
    );
    c.deliver_all();
    let w = c.request(f, put("lost", "x"));
    let mut dropped = 0;
    for _ in 0..c.queued() {
        let m = c.drop_nth(0).unwrap();
        if matches!(m.body, MessageBody::Forward { .. }) {
            dropped += 1;
        } else {
            c.handle(m.to, tern_core::Input::Message(m));
        }
    }
    assert_eq!(dropped, 1, "the write's forward was queued");
    c.run_for(Duration::from_millis(6_900));
    assert!(
        !c.responses.contains_key(&(f, w)),
        "answered before its hold"
    );
    c.run_for(Duration::from_millis(200));
    match &c.responses[&(f, w)] {
        Err(RpcError::Unknown(m)) => assert_eq!(m, "timed out waiting for the leader's answer"),
        other => panic!("expected outcome unknown, got {other:?}"),
    }
    // The query with the later deadline was not taken with it.
    assert!(!c.responses.contains_key(&(f, q)));
    let written = put_applied(&mut c, fs[1], "k", "2");
    assert_eq!(value_of(&c, f, q), Some("2".into()));
    assert_eq!(c.responses[&(f, q)].as_ref().unwrap().index, written);
}
