//! Sessions through whole servers on the in-process test cluster: the
//! leader draws the ID from its seeded RNG, times TTL sessions at twice
//! their TTL and re-arms them when leadership moves (Consul's
//! agent/consul/session_ttl.go), refuses an acquire during a lock delay
//! (agent/consul/kvs_endpoint.go `kvsPreApply`), and a serfHealth reported
//! failed through gossip invalidates a session (agent/consul/leader.go).

use tern_core::autopilot::GossipStatus;
use tern_core::fsm::{ApplyResult, KvCommand, KvWrite, Session};
use tern_core::rpc::{Op, ReadMode, Reply, ReplyBody, Request, RpcError};
use tern_core::serf_health::LanMember;
use tern_core::testkit::Cluster;
use tern_core::{Datacenter, Duration, Input, NodeId};

fn req(op: Op) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op,
    }
}

fn call(c: &mut Cluster, at: NodeId, op: Op) -> Result<Reply, RpcError> {
    let rid = c.request(at, req(op));
    c.run_for(Duration::from_millis(300));
    c.responses[&(at, rid)].clone()
}

/// Every server's LAN member report for `name`, alive or `status`.
fn report(c: &mut Cluster, name: &str, status: GossipStatus) {
    let ids: Vec<NodeId> = c.servers.keys().copied().collect();
    for id in ids {
        c.handle(
            id,
            Input::LanMember(LanMember {
                name: name.into(),
                address: "10.0.0.9".into(),
                status,
                server_port: None,
            }),
        );
    }
    c.run_for(Duration::from_millis(300));
}

fn create(c: &mut Cluster, at: NodeId, s: Session) -> String {
    match call(c, at, Op::SessionCreate(Box::new(s))) {
        Ok(Reply {
            body: ReplyBody::Applied(ApplyResult::Session(id)),
            ..
        }) => id,
        other => panic!("create: {other:?}"),
    }
}

fn session(ttl: &str, lock_delay_s: u64) -> Session {
    Session {
        node: "web-01".into(),
        ttl: ttl.into(),
        lock_delay_ns: lock_delay_s * 1_000_000_000,
        node_checks: vec!["serfHealth".into()],
        ..Session::default()
    }
}

fn alive(c: &Cluster, id: &str) -> bool {
    c.servers.values().all(|s| s.fsm().session(id).is_some())
}

fn acquire(c: &mut Cluster, at: NodeId, session: &str) -> Result<Reply, RpcError> {
    let lock = KvCommand::Lock {
        write: KvWrite {
            key: "lock".into(),
            flags: 0,
            value: b"v".to_vec().into(),
        },
        session: session.into(),
    };
    call(c, at, Op::KvApply(lock))
}

fn applied(r: Result<Reply, RpcError>) -> ApplyResult {
    match r {
        Ok(Reply {
            body: ReplyBody::Applied(a),
            ..
        }) => a,
        other => panic!("not applied: {other:?}"),
    }
}

/// A cluster with a leader and node `web-01` registered alive through
/// gossip (serfHealth passing).
fn cluster() -> (Cluster, NodeId, NodeId) {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).unwrap();
    report(&mut c, "web-01", GossipStatus::Alive);
    let follower = *c.servers.keys().find(|id| **id != leader).unwrap();
    (c, leader, follower)
}

/// A create through a follower is forwarded; the leader draws a UUID-shaped
/// ID; a bad TTL is refused before the log with Consul's text.
#[test]
fn a_session_created_through_a_follower_gets_an_id_from_the_leader() {
    let (mut c, _leader, follower) = cluster();
    let a = create(&mut c, follower, session("", 15));
    let b = create(&mut c, follower, session("", 15));
    assert_ne!(a, b);
    for id in [&a, &b] {
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
        assert!(alive(&c, id), "applied on every server");
    }
    let r = call(
        &mut c,
        follower,
        Op::SessionCreate(Box::new(session("9s", 15))),
    );
    assert_eq!(
        r,
        Err(RpcError::Refused(
            "Invalid Session TTL '9000000000', must be between [10s=24h0m0s]".into()
        ))
    );
    let r = call(
        &mut c,
        follower,
        Op::SessionCreate(Box::new(session("10s", 15))),
    );
    assert!(r.is_ok(), "{r:?}");
}

/// Consul's TTL grace: a session lives until twice its TTL after its last
/// renew, renewing resets that, and its end goes through the log.
#[test]
fn a_ttl_session_is_destroyed_at_twice_its_ttl_and_a_renew_resets_it() {
    let (mut c, leader, follower) = cluster();
    let id = create(&mut c, follower, session("10s", 0));
    c.run_for(Duration::from_secs(15));
    assert!(alive(&c, &id), "past its TTL, within the grace");
    // A renew through a follower reaches the leader and resets the timer.
    let r = call(&mut c, follower, Op::SessionRenew { id: id.clone() }).unwrap();
    assert!(matches!(&r.body, ReplyBody::Sessions(s) if s.len() == 1));
    c.run_for(Duration::from_secs(15));
    assert!(alive(&c, &id), "30 s after create, 15 s after the renew");
    c.run_for(Duration::from_secs(6));
    assert!(
        c.servers.values().all(|s| s.fsm().session(&id).is_none()),
        "destroyed on every server 20 s after its renew"
    );
    // Renewing what is gone answers an empty list (HTTP: 404).
    let r = call(&mut c, leader, Op::SessionRenew { id }).unwrap();
    assert_eq!(r.body, ReplyBody::Sessions(vec![]));
}

/// A new leader arms every TTL session at twice its TTL from when it took
/// over (Consul's `initializeSessionTimers`): a session does not outlive
/// that, nor die earlier.
#[test]
fn a_new_leader_rearms_the_timers() {
    let (mut c, leader, _) = cluster();
    let id = create(&mut c, leader, session("10s", 0));
    c.run_for(Duration::from_secs(12));
    // The leader goes away; another takes over.
    c.crash(leader);
    let next = loop {
        c.step(Duration::from_millis(10));
        if let Some(l) = c.leader().filter(|l| *l != leader) {
            if c.servers[&l].raft().committed_in_term() {
                break l;
            }
        }
    };
    let took_over = c.now;
    c.run_for(Duration::from_secs(19));
    assert!(
        c.servers[&next].fsm().session(&id).is_some(),
        "within 2 x TTL of the takeover"
    );
    c.run_for(Duration::from_secs(2));
    assert!(c.servers[&next].fsm().session(&id).is_none());
    assert!(c.now.saturating_since(took_over) >= Duration::from_secs(20));
}

/// After a session holding a lock is destroyed, an acquire by another
/// session is refused for the lock delay and granted after it.
#[test]
fn the_lock_delay_refuses_acquires_until_it_passes() {
    let (mut c, leader, follower) = cluster();
    let holder = create(&mut c, leader, session("", 5));
    let other = create(&mut c, leader, session("", 0));
    assert_eq!(
        applied(acquire(&mut c, follower, &holder)),
        ApplyResult::Kv(true)
    );
    assert_eq!(
        applied(acquire(&mut c, follower, &other)),
        ApplyResult::Kv(false)
    );
    call(&mut c, leader, Op::SessionDestroy { id: holder }).unwrap();
    assert_eq!(
        c.servers[&leader].fsm().kv_lock_holder("lock"),
        None,
        "released"
    );
    assert_eq!(
        applied(acquire(&mut c, follower, &other)),
        ApplyResult::Kv(false)
    );
    c.run_for(Duration::from_secs(4));
    assert_eq!(
        applied(acquire(&mut c, follower, &other)),
        ApplyResult::Kv(false)
    );
    c.run_for(Duration::from_secs(1));
    assert_eq!(
        applied(acquire(&mut c, follower, &other)),
        ApplyResult::Kv(true)
    );
    // An unknown session is Consul's error.
    assert_eq!(
        applied(acquire(&mut c, follower, "nope")),
        ApplyResult::Refused("invalid session \"nope\"".into())
    );
}

/// Gossip says the session's node failed: the leader turns its serfHealth
/// critical, which invalidates the session and releases its lock, with
/// its lock delay.
#[test]
fn a_failed_node_invalidates_its_sessions() {
    let (mut c, leader, follower) = cluster();
    let holder = create(&mut c, leader, session("", 5));
    assert_eq!(
        applied(acquire(&mut c, follower, &holder)),
        ApplyResult::Kv(true)
    );
    report(&mut c, "web-01", GossipStatus::Failed);
    assert!(c
        .servers
        .values()
        .all(|s| s.fsm().session(&holder).is_none()));
    assert_eq!(c.servers[&leader].fsm().kv_lock_holder("lock"), None);
    // Alive again: a new session, still inside the old one's lock delay.
    report(&mut c, "web-01", GossipStatus::Alive);
    let next = create(&mut c, leader, session("", 0));
    assert_eq!(
        applied(acquire(&mut c, follower, &next)),
        ApplyResult::Kv(false)
    );
    c.run_for(Duration::from_secs(5));
    assert_eq!(
        applied(acquire(&mut c, follower, &next)),
        ApplyResult::Kv(true)
    );
}
