//! Autopilot on the in-process test cluster: the leader promotes stable
//! non-voters and removes dead servers through Raft, one change at a time,
//! and never loses quorum doing it. Mirrors Consul's
//! agent/consul/autopilot_test.go (`TestAutopilot_PromoteNonVoter`,
//! `TestAutopilot_RollingUpdate`, `TestAutopilot_CleanupDeadServer`).

use tern_core::autopilot::{AutopilotEvent, GossipStatus};
use tern_core::fsm::{KvCommand, KvWrite};
use tern_core::raft::Suffrage;
use tern_core::rpc::{Op, ReadMode, ReplyBody, Request};
use tern_core::testkit::{config, node_id, Cluster};
use tern_core::{Datacenter, Duration, Event, Input, NodeId, NodeName};

fn req(op: Op) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op,
    }
}

fn put(key: &str) -> Request {
    req(Op::KvApply(KvCommand::Set(KvWrite {
        key: key.into(),
        flags: 0,
        value: b"v".to_vec().into(),
    })))
}

/// Start server `i` with an empty log and add it to the configuration as a
/// non-voter through the leader (what the leader's reconciliation will do
/// once gossip exists).
fn add_nonvoter(c: &mut Cluster, leader: NodeId, i: u64) -> NodeId {
    let mut cfg = config(i, 3);
    cfg.bootstrap = None;
    let id = cfg.node_id;
    c.configs.insert(id, cfg);
    c.disks.insert(id, Default::default());
    c.start(id);
    let rid = c.request(
        leader,
        req(Op::RaftAddNonvoter {
            id,
            name: NodeName(format!("s{i}")),
            address: format!("s{i}:8300"),
        }),
    );
    c.run_for(Duration::from_millis(200));
    assert!(
        c.responses.get(&(leader, rid)).is_some_and(|r| r.is_ok()),
        "adding s{i} failed: {:?}",
        c.responses.get(&(leader, rid))
    );
    id
}

fn suffrage(c: &Cluster, at: NodeId, id: NodeId) -> Option<Suffrage> {
    c.servers[&at]
        .membership()
        .servers
        .get(&id)
        .map(|m| m.suffrage)
}

/// Voters of the leader's configuration that are running.
fn live_voters(c: &Cluster, leader: NodeId) -> (usize, usize) {
    let m = c.servers[&leader].membership();
    let live = m.voters().filter(|v| c.servers.contains_key(v)).count();
    (live, m.quorum())
}

/// Run `d` in steps of `step`, checking after each that some leader's
/// configuration has a running quorum of voters (autopilot never proposes
/// one that does not).
fn run_checking_quorum(c: &mut Cluster, d: Duration, step: Duration) {
    let end = c.now + d;
    while c.now < end {
        c.run_for(step);
        if let Some(l) = c.leader() {
            let (live, quorum) = live_voters(c, l);
            assert!(
                live >= quorum,
                "the leader's configuration lost its quorum: {live} of {quorum} needed live"
            );
        }
    }
}

fn autopilot_events(c: &Cluster) -> Vec<(NodeId, AutopilotEvent)> {
    c.events
        .iter()
        .filter_map(|(n, e)| match e {
            Event::Autopilot(a) => Some((*n, a.clone())),
            _ => None,
        })
        .collect()
}

/// `TestAutopilot_PromoteNonVoter`: a healthy non-voter becomes a voter
/// once it has been stable for `server_stabilization_time` (10 s), at the
/// first autopilot round (every 10 s) after that, and not before.
#[test]
fn a_non_voter_is_promoted_after_the_stabilization_time_and_not_before() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let s4 = add_nonvoter(&mut c, leader, 4);
    let added = c.now;

    // Phase 1: healthy, but not for 10 s yet.
    let mut promoted_at = None;
    while c.now.saturating_since(added) < Duration::from_secs(30) {
        c.run_for(Duration::from_millis(100));
        if suffrage(&c, leader, s4) == Some(Suffrage::Voter) {
            promoted_at = Some(c.now);
            break;
        }
        let h = c.servers[&leader].autopilot().health();
        if c.now.saturating_since(added) > Duration::from_secs(3) {
            assert!(h.server(s4).is_some_and(|h| h.healthy), "s4 is healthy");
        }
    }
    // Phase 2: promoted, at least 10 s after it was first seen healthy,
    // and within one autopilot round and one health sample of that.
    let promoted_at = promoted_at.expect("s4 was promoted within 30 s");
    let stable_since = c.servers[&leader]
        .autopilot()
        .health()
        .server(s4)
        .expect("s4 sampled")
        .stable_since;
    let waited = promoted_at.saturating_since(stable_since);
    assert!(
        waited >= Duration::from_secs(10),
        "promoted {} ms after it became healthy",
        waited.as_millis()
    );
    assert!(
        promoted_at.saturating_since(added) <= Duration::from_secs(22) + Duration::from_millis(200),
        "promoted {} ms after it was added",
        promoted_at.saturating_since(added).as_millis()
    );
    assert_eq!(
        autopilot_events(&c),
        vec![(leader, AutopilotEvent::Promoting { id: s4 })]
    );
    // Every server sees the new voter once it commits.
    c.run_for(Duration::from_millis(500));
    for s in c.servers.values() {
        assert_eq!(s.num_peers(), 4);
    }
}

/// A non-voter the leader cannot reach has no recent contact and stays a
/// non-voter; once it catches up it is promoted.
#[test]
fn a_lagging_non_voter_is_not_promoted() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let s4 = node_id(4);
    // s4 hears nothing from the leader.
    c.cut.insert((leader, s4));
    add_nonvoter(&mut c, leader, 4);
    c.run_for(Duration::from_secs(60));
    assert_eq!(suffrage(&c, leader, s4), Some(Suffrage::Nonvoter));
    let h = c.servers[&leader].autopilot().health();
    let s4h = h.server(s4).expect("sampled");
    assert!(!s4h.healthy);
    assert_eq!(s4h.last_contact, None, "never answered in this term");
    assert!(!h.cluster().healthy);
    assert!(autopilot_events(&c).is_empty());

    c.cut.clear();
    c.run_for(Duration::from_secs(25));
    assert_eq!(suffrage(&c, leader, s4), Some(Suffrage::Voter));
}

/// `TestAutopilot_RollingUpdate` and Consul #3611: a voter is replaced by a
/// new server, one server at a time; the new one is promoted although that
/// briefly makes an even number of voters, the dead one is removed, and the
/// configuration never lacks a live quorum. Then the next voter goes the
/// same way, and the cluster still takes writes.
#[test]
fn a_rolling_update_never_loses_quorum() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let mut others: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != leader).collect();
    others.sort();
    let step = Duration::from_millis(100);

    for (round, old) in others.into_iter().enumerate() {
        let new_i = 4 + round as u64;
        // Phase 1: the replacement joins as a non-voter; the old server stops
        // and the leader's transport notices.
        let new = add_nonvoter(&mut c, leader, new_i);
        c.crash(old);
        c.handle(leader, Input::Unreachable(old));
        // Phase 2: autopilot promotes the new server (4 voters, 3 live)
        // while gossip has not declared the old one failed yet...
        run_checking_quorum(&mut c, Duration::from_secs(25), step);
        assert_eq!(suffrage(&c, leader, new), Some(Suffrage::Voter));
        assert_eq!(suffrage(&c, leader, old), Some(Suffrage::Voter));
        // ...then removes the old one once gossip has.
        c.handle(leader, failed(&c, old));
        run_checking_quorum(&mut c, Duration::from_secs(15), step);
        assert_eq!(c.leader(), Some(leader), "no election was needed");
        assert_eq!(
            suffrage(&c, leader, old),
            None,
            "the dead server was removed"
        );
        assert_eq!(c.servers[&leader].num_peers(), 3);
    }
    let events = autopilot_events(&c);
    assert_eq!(
        events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        vec![
            AutopilotEvent::Promoting { id: node_id(4) },
            AutopilotEvent::RemovingDeadServer {
                id: *[node_id(1), node_id(2), node_id(3)]
                    .iter()
                    .filter(|i| **i != leader)
                    .min()
                    .unwrap()
            },
            AutopilotEvent::Promoting { id: node_id(5) },
            AutopilotEvent::RemovingDeadServer {
                id: *[node_id(1), node_id(2), node_id(3)]
                    .iter()
                    .filter(|i| **i != leader)
                    .max()
                    .unwrap()
            },
        ]
    );
    // Phase 3: the new configuration commits writes.
    let rid = c.request(leader, put("after-the-roll"));
    c.run_for(Duration::from_secs(1));
    assert!(matches!(
        c.responses[&(leader, rid)].as_ref().map(|r| &r.body),
        Ok(ReplyBody::Applied(_))
    ));
}

/// `TestAutopilot_CleanupDeadServer`: of five voters, two dead ones
/// ((5 - 1) / 2) are removed, one at a time.
#[test]
fn dead_servers_are_removed_within_the_bound() {
    let mut c = Cluster::new((1..=5).map(|i| config(i, 5)).collect());
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let dead: Vec<NodeId> = c
        .servers
        .keys()
        .copied()
        .filter(|i| *i != leader)
        .take(2)
        .collect();
    for d in &dead {
        c.crash(*d);
        c.handle(leader, Input::Unreachable(*d));
        c.handle(leader, failed(&c, *d));
    }
    run_checking_quorum(&mut c, Duration::from_secs(30), Duration::from_millis(100));
    assert_eq!(c.leader(), Some(leader));
    let m = c.servers[&leader].membership();
    assert_eq!(m.servers.len(), 3);
    assert!(dead.iter().all(|d| !m.contains(*d)));
    assert_eq!(
        autopilot_events(&c)
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>(),
        dead.iter()
            .map(|id| AutopilotEvent::RemovingDeadServer { id: *id })
            .collect::<Vec<_>>()
    );
}

/// A server that is only gone (a transport hint, a restart that takes a
/// while) is not removed: only gossip's verdict counts (see
/// `core/src/autopilot/leader.rs`), and with gossip not yet wired into the
/// agents a slow restart must not cost a server its place, since nothing
/// would add it back. Once gossip says it is alive again, it stays.
#[test]
fn a_server_that_is_only_gone_is_not_removed() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let f = *c.servers.keys().find(|i| **i != leader).unwrap();
    c.crash(f);
    c.handle(leader, Input::Unreachable(f));
    c.run_for(Duration::from_secs(40));
    assert_eq!(
        c.servers[&leader].autopilot().gossip_status(
            c.now,
            c.servers[&leader].config(),
            c.servers[&leader].raft(),
            f
        ),
        GossipStatus::Alive,
        "a transport hint is not a failure"
    );
    assert!(c.servers[&leader].membership().is_voter(f));
    // Failed in gossip, then alive again before autopilot's next round.
    c.handle(leader, failed(&c, f));
    c.start(f);
    c.handle(leader, c.gossip_says(f, GossipStatus::Alive));
    c.run_for(Duration::from_secs(40));
    assert!(c.servers[&leader].membership().is_voter(f));
    assert!(autopilot_events(&c).is_empty());
    assert!(c.servers[&leader].autopilot().health().cluster().healthy);
}

/// With two of three voters dead the leader loses its quorum and steps
/// down (check-quorum) long before autopilot would remove anyone: nothing
/// is removed, and the configuration still names all three.
#[test]
fn a_majority_of_dead_voters_is_never_removed() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let dead: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != leader).collect();
    for d in &dead {
        c.crash(*d);
        c.handle(leader, Input::Unreachable(*d));
        c.handle(leader, failed(&c, *d));
    }
    c.run_for(Duration::from_secs(40));
    assert_eq!(c.servers[&leader].membership().servers.len(), 3);
    assert!(autopilot_events(&c)
        .iter()
        .all(|(_, e)| !matches!(e, AutopilotEvent::RemovingDeadServer { .. })));
}

/// Gossip's verdict that `node` failed.
fn failed(c: &Cluster, node: NodeId) -> Input {
    c.gossip_says(node, GossipStatus::Failed)
}

/// Ask the leader; run until the answer is in.
fn ask(c: &mut Cluster, leader: NodeId, op: Op) -> tern_core::rpc::Response {
    let rid = c.request(leader, req(op));
    c.run_for(Duration::from_millis(300));
    c.responses
        .get(&(leader, rid))
        .cloned()
        .expect("answered within 300 ms")
}

/// Autopilot's configuration is replicated, as Consul's
/// (agent/consul/operator_autopilot_endpoint.go,
/// state/autopilot.go `AutopilotCASConfig`): a new leader stores the
/// agent's own if none is stored, `PUT ?cas=` replaces it only at the
/// stored modify index, every server runs with the stored one, and a bad
/// one is refused naming the key.
#[test]
fn the_configuration_is_replicated_and_replaced_by_a_cas_write() {
    use tern_core::autopilot::AutopilotConfig;
    use tern_core::rpc::RpcError;
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    c.run_for(Duration::from_millis(500));
    let first = c.servers[&leader]
        .fsm()
        .autopilot()
        .cloned()
        .expect("stored");
    assert_eq!(first.config, AutopilotConfig::default());
    assert_eq!(first.create_index, first.modify_index);
    for s in c.servers.values() {
        assert_eq!(s.fsm().autopilot(), Some(&first), "on {}", s.id());
    }
    let got = ask(&mut c, leader, Op::AutopilotGetConfig).unwrap();
    assert_eq!(got.body, ReplyBody::AutopilotConfig(first.clone()));
    assert_eq!(got.index, first.modify_index);

    let off = AutopilotConfig {
        cleanup_dead_servers: false,
        ..AutopilotConfig::default()
    };
    let set = |cas| Op::AutopilotSetConfig {
        config: off.clone(),
        cas,
    };
    let stale = ask(&mut c, leader, set(Some(first.modify_index + 100))).unwrap();
    assert_eq!(
        stale.body,
        ReplyBody::Applied(tern_core::fsm::ApplyResult::Autopilot(false))
    );
    let held = ask(&mut c, leader, set(Some(first.modify_index))).unwrap();
    assert_eq!(
        held.body,
        ReplyBody::Applied(tern_core::fsm::ApplyResult::Autopilot(true))
    );
    c.run_for(Duration::from_millis(300));
    for s in c.servers.values() {
        assert!(!s.config().autopilot.cleanup_dead_servers, "on {}", s.id());
        assert_eq!(
            s.fsm().autopilot().unwrap().create_index,
            first.create_index
        );
    }

    let bad = Op::AutopilotSetConfig {
        config: AutopilotConfig {
            last_contact_threshold: Duration::ZERO,
            ..AutopilotConfig::default()
        },
        cas: None,
    };
    match ask(&mut c, leader, bad) {
        Err(RpcError::BadRequest(m)) => assert!(m.contains("greater than zero"), "{m}"),
        other => panic!("a zero threshold was taken: {other:?}"),
    }

    // Cleanup is off now: a dead follower stays in the configuration.
    let dead = *c.servers.keys().find(|i| **i != leader).unwrap();
    c.crash(dead);
    c.handle(leader, Input::Unreachable(dead));
    c.handle(leader, failed(&c, dead));
    c.run_for(Duration::from_secs(40));
    let l = c.leader().expect("a leader");
    assert!(c.servers[&l].membership().is_voter(dead));
    assert!(autopilot_events(&c)
        .iter()
        .all(|(_, e)| !matches!(e, AutopilotEvent::RemovingDeadServer { .. })));
}
