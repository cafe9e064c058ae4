//! The leader reconciles the Raft configuration with what LAN gossip says
//! of the datacenter's servers (`core/src/reconcile.rs`), and a leaving
//! server waits to be removed. Mirrors Consul's agent/consul/leader_test.go
//! (`TestLeader_LeftServer`, `TestLeader_ReapServer`,
//! `TestLeader_ChangeServerID`), server_test.go (`TestServer_JoinLAN`,
//! adding servers to a running cluster) and `Server.Leave` in server.go.
//! Gossip itself is not run here: each test hands every server the
//! `Input::ServerMember` a driver would.

use tern_core::autopilot::GossipStatus;
use tern_core::raft::Suffrage;
use tern_core::reconcile::ReconcileEvent;
use tern_core::server::RAFT_REMOVE_GRACE;
use tern_core::testkit::{config, node_id, Cluster};
use tern_core::{Config, Duration, Event, Input, NodeId};

/// Hand every running server what gossip says of `id`.
fn gossip_to_all(c: &mut Cluster, id: NodeId, status: GossipStatus) {
    let input = c.gossip_says(id, status);
    let running: Vec<NodeId> = c.servers.keys().copied().collect();
    for s in running {
        c.handle(s, input.clone());
    }
}

/// Start a fresh server from `cfg` (no bootstrap: it waits to be added).
fn start_fresh(c: &mut Cluster, mut cfg: Config) -> NodeId {
    cfg.bootstrap = None;
    let id = cfg.node_id;
    c.configs.insert(id, cfg);
    c.disks.insert(id, Default::default());
    c.start(id);
    id
}

/// Restart `id` with a shorter `leave_drain_time`, and let it catch up.
fn restart_with_drain(c: &mut Cluster, id: NodeId, drain: Duration) {
    c.configs.get_mut(&id).unwrap().leave_drain_time = drain;
    c.crash(id);
    c.start(id);
    c.run_for(Duration::from_secs(1));
}

fn suffrage(c: &Cluster, at: NodeId, id: NodeId) -> Option<Suffrage> {
    c.servers[&at]
        .membership()
        .servers
        .get(&id)
        .map(|m| m.suffrage)
}

fn reconcile_events(c: &Cluster) -> Vec<(NodeId, ReconcileEvent)> {
    c.events
        .iter()
        .filter_map(|(n, e)| match e {
            Event::Reconcile(r) => Some((*n, r.clone())),
            _ => None,
        })
        .collect()
}

/// Run until `pred` holds (checking every 100 ms), at most `max`.
fn run_until(c: &mut Cluster, max: Duration, mut pred: impl FnMut(&Cluster) -> bool) -> bool {
    let end = c.now + max;
    while c.now < end {
        if pred(c) {
            return true;
        }
        c.run_for(Duration::from_millis(100));
    }
    pred(c)
}

/// `TestServer_JoinLAN` and adding servers 4 and 5 to a running cluster:
/// an alive server gossip reports joins as a non-voter at once, and
/// autopilot promotes it once it is stable; nothing but gossip is needed.
#[test]
fn servers_gossip_reports_join_as_non_voters_and_are_promoted() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let s4 = start_fresh(&mut c, config(4, 3));
    let s5 = start_fresh(&mut c, config(5, 3));
    // Reports of servers already in the configuration change nothing.
    for i in 1..=3 {
        gossip_to_all(&mut c, node_id(i), GossipStatus::Alive);
    }
    gossip_to_all(&mut c, s4, GossipStatus::Alive);
    gossip_to_all(&mut c, s5, GossipStatus::Alive);
    assert!(run_until(&mut c, Duration::from_secs(2), |c| {
        suffrage(c, leader, s4) == Some(Suffrage::Nonvoter)
            && suffrage(c, leader, s5) == Some(Suffrage::Nonvoter)
    }));
    let events = reconcile_events(&c);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|(n, e)| *n == leader
        && matches!(e, ReconcileEvent::AddingNonvoter { id, .. } if *id == s4 || *id == s5)));
    // Non-voters are not peers (`numPeers` counts voters).
    assert_eq!(c.servers[&leader].num_peers(), 3);
    assert!(run_until(&mut c, Duration::from_secs(40), |c| {
        c.leader()
            .is_some_and(|l| c.servers[&l].membership().voter_count() == 5)
    }));
    let l = c.leader().unwrap();
    assert_eq!(c.servers[&l].num_peers(), 5);
    // Every server, the new ones too, ends with the same configuration.
    c.run_for(Duration::from_secs(1));
    for s in c.servers.values() {
        assert_eq!(s.membership().voter_count(), 5, "on {}", s.id());
    }
}

/// `TestLeader_LeftServer`: a server gossip says left is removed from the
/// configuration; one it says failed is left to autopilot (not removed by
/// reconciliation).
#[test]
fn a_server_that_left_is_removed_and_a_failed_one_is_not() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let others: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != leader).collect();
    let (gone, failed) = (others[0], others[1]);
    c.crash(failed);
    gossip_to_all(&mut c, failed, GossipStatus::Failed);
    c.run_for(Duration::from_secs(1));
    assert!(reconcile_events(&c).is_empty());
    assert_eq!(suffrage(&c, leader, failed), Some(Suffrage::Voter));

    c.crash(gone);
    gossip_to_all(&mut c, gone, GossipStatus::Left);
    assert!(run_until(&mut c, Duration::from_secs(2), |c| {
        suffrage(c, leader, gone).is_none()
    }));
    assert_eq!(
        reconcile_events(&c),
        vec![(
            leader,
            ReconcileEvent::RemovingLeftServer {
                id: gone,
                status: GossipStatus::Left
            }
        )]
    );
}

/// `TestLeader_ReapServer`: a member gossip has forgotten (reaped) is
/// removed like one that left.
#[test]
fn a_reaped_server_is_removed() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let reaped = *c.servers.keys().find(|i| **i != leader).unwrap();
    c.crash(reaped);
    gossip_to_all(&mut c, reaped, GossipStatus::None);
    assert!(run_until(&mut c, Duration::from_secs(2), |c| {
        suffrage(c, leader, reaped).is_none()
    }));
}

/// `TestLeader_ChangeServerID`: a server that comes back at the same
/// address with a new node id (a wiped data dir) replaces the old entry:
/// the old id is removed first, then the new one joins as a non-voter and
/// is promoted, and the cluster ends with three voters again.
#[test]
fn a_server_back_at_the_same_address_with_a_new_id_replaces_the_old_one() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let old = *c.servers.keys().find(|i| **i != leader).unwrap();
    let old_cfg = c.configs[&old].clone();
    c.crash(old);
    let mut cfg = old_cfg.clone();
    cfg.node_id = node_id(40);
    cfg.rng_seed ^= 0xABCD;
    let new = start_fresh(&mut c, cfg);
    gossip_to_all(&mut c, new, GossipStatus::Alive);
    assert!(run_until(&mut c, Duration::from_secs(2), |c| {
        suffrage(c, leader, old).is_none() && suffrage(c, leader, new) == Some(Suffrage::Nonvoter)
    }));
    let events: Vec<ReconcileEvent> = reconcile_events(&c).into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        events,
        vec![
            ReconcileEvent::RemovingDuplicateAddress {
                old,
                new,
                address: old_cfg.address.clone()
            },
            ReconcileEvent::AddingNonvoter {
                id: new,
                name: old_cfg.node_name.clone(),
                address: old_cfg.address.clone()
            },
        ]
    );
    assert!(run_until(&mut c, Duration::from_secs(40), |c| {
        c.leader()
            .is_some_and(|l| c.servers[&l].membership().is_voter(new))
    }));
    let l = c.leader().unwrap();
    assert_eq!(c.servers[&l].membership().voter_count(), 3);
}

/// A server whose node id is in the configuration at another address (it
/// moved) is removed and added again at the new one.
#[test]
fn a_server_that_moved_is_re_added_at_its_new_address() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let moved = *c.servers.keys().find(|i| **i != leader).unwrap();
    c.crash(moved);
    c.configs.get_mut(&moved).unwrap().address = "s9:8300".into();
    c.start(moved);
    gossip_to_all(&mut c, moved, GossipStatus::Alive);
    assert!(run_until(&mut c, Duration::from_secs(3), |c| {
        c.servers[&leader]
            .membership()
            .servers
            .get(&moved)
            .is_some_and(|m| m.address == "s9:8300")
    }));
    assert!(matches!(
        reconcile_events(&c)[0].1,
        ReconcileEvent::RemovingMovedServer { id, .. } if id == moved
    ));
}

/// The leader never removes itself, whatever gossip says of it: it says
/// why, once, and the configuration stays.
#[test]
fn the_leader_never_removes_itself() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    c.handle(leader, c.gossip_says(leader, GossipStatus::Left));
    c.run_for(Duration::from_secs(2));
    assert_eq!(
        reconcile_events(&c),
        vec![(leader, ReconcileEvent::WouldRemoveSelf { id: leader })]
    );
    assert_eq!(c.servers[&leader].membership().voter_count(), 3);
}

/// Reports that reached the servers before a leader change are acted on by
/// the next leader (it looks again in its new term).
#[test]
fn the_next_leader_acts_on_reports_the_old_one_did_not() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let s4 = start_fresh(&mut c, config(4, 3));
    // Only the followers hear of s4; then the leader dies.
    let input = c.gossip_says(s4, GossipStatus::Alive);
    let followers: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != leader).collect();
    for f in &followers {
        c.handle(*f, input.clone());
    }
    c.crash(leader);
    assert!(run_until(&mut c, Duration::from_secs(5), |c| {
        c.leader()
            .is_some_and(|l| l != leader && suffrage(c, l, s4) == Some(Suffrage::Nonvoter))
    }));
}

/// `Server.Leave` on a follower: it fails fast at once, and its leave
/// completes only after the drain and after the leader removed it (gossip
/// said it left); the others keep a working two-voter configuration.
#[test]
fn a_leaving_follower_completes_once_the_leader_removed_it() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let leaving = *c.servers.keys().find(|i| **i != leader).unwrap();
    restart_with_drain(&mut c, leaving, Duration::from_secs(1));
    let began = c.now;
    c.handle(leaving, Input::Leave);
    assert!(c.servers[&leaving].is_draining(c.now));
    // The drain (1 s) passes without gossip: not left yet, still a member.
    c.run_for(Duration::from_millis(1500));
    assert!(!c.servers[&leaving].has_left());
    gossip_to_all(&mut c, leaving, GossipStatus::Left);
    assert!(run_until(&mut c, Duration::from_secs(2), |c| {
        c.servers[&leaving].has_left()
    }));
    assert!(c.now.saturating_since(began) < RAFT_REMOVE_GRACE);
    assert!(!c.servers[&leaving].membership().contains(leaving));
    assert!(!c.servers[&leader].membership().contains(leaving));
    assert_eq!(c.servers[&leader].membership().voter_count(), 2);
}

/// With nobody to remove it (gossip never says it left), a leave completes
/// `RAFT_REMOVE_GRACE` after it began, and not before.
#[test]
fn a_leave_nobody_acts_on_completes_after_the_grace_period() {
    let mut c = Cluster::with_voters(3);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let leaving = *c.servers.keys().find(|i| **i != leader).unwrap();
    restart_with_drain(&mut c, leaving, Duration::from_secs(1));
    let began = c.now;
    c.handle(leaving, Input::Leave);
    assert!(run_until(&mut c, Duration::from_secs(10), |c| {
        c.servers[&leaving].has_left()
    }));
    let took = c.now.saturating_since(began);
    assert!(
        took >= RAFT_REMOVE_GRACE,
        "left after {} ms",
        took.as_millis()
    );
    assert!(took <= RAFT_REMOVE_GRACE + Duration::from_millis(200));
    assert!(c.servers[&leader].membership().contains(leaving));
}

/// A lone server has nobody to wait for: its leave completes after the
/// drain alone.
#[test]
fn a_lone_server_leaves_after_the_drain() {
    let mut c = Cluster::with_voters(1);
    let only = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let began = c.now;
    c.handle(only, Input::Leave);
    assert!(run_until(&mut c, Duration::from_secs(10), |c| {
        c.servers[&only].has_left()
    }));
    let took = c.now.saturating_since(began);
    let drain = c.configs[&only].leave_drain_time;
    assert!(took >= drain && took <= drain + Duration::from_millis(200));
}

/// A server added once the leader's log no longer starts at index 1 (here:
/// a fresh server after a snapshot compacted the log; in the daemon, also a
/// server autopilot removed and reconciliation adds back) is probed with
/// nothing to anchor an AppendEntries on, and must be sent the snapshot
/// (Raft §7). Before the fix it was sent nothing at all and never caught
/// up (found by io-tokio/tests/processes.rs
/// `autopilot_removes_a_server_gossip_declares_failed`).
#[test]
fn a_server_added_after_the_log_was_compacted_gets_the_snapshot() {
    let snapshotting = |i: u64| {
        let mut cfg = config(i, 3);
        cfg.snapshot_threshold = 4;
        cfg.snapshot_interval = Duration::ZERO;
        cfg.trailing_logs = 0;
        cfg
    };
    let mut c = tern_core::testkit::Cluster::new((1..=3).map(snapshotting).collect());
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    // Enough writes that the leader snapshots and compacts its log.
    for i in 0..12 {
        c.request(leader, put(&format!("k{i}")));
        c.deliver_all();
    }
    c.run_for(Duration::from_secs(1));
    let base = c.servers[&leader]
        .raft()
        .snapshot_meta()
        .map(|s| s.last_index);
    assert!(base.is_some_and(|b| b.0 > 1), "compacted: {base:?}");

    let s4 = start_fresh(&mut c, snapshotting(4));
    gossip_to_all(&mut c, s4, GossipStatus::Alive);
    assert!(
        run_until(&mut c, Duration::from_secs(5), |c| {
            let l = c.leader().unwrap_or(leader);
            c.servers[&s4].last_applied() >= c.servers[&l].last_applied()
        }),
        "s4 applied {:?}",
        c.servers[&s4].last_applied()
    );
    assert!(c
        .events
        .iter()
        .any(|(of, e)| *of == s4 && matches!(e, Event::SnapshotInstalled { .. })));
}

fn put(key: &str) -> tern_core::rpc::Request {
    use tern_core::fsm::{KvCommand, KvWrite};
    use tern_core::rpc::{Op, ReadMode, Request};
    Request {
        datacenter: tern_core::Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::KvApply(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: b"v".to_vec().into(),
        })),
    }
}

/// A former leader that leaves while a write it proposed is still waiting
/// for its outcome does not complete its leave (after which the driver
/// stops it, and the client would see a closed connection) until the write
/// is answered: here the next leader committed it while the former leader
/// was cut off, and once it hears so the write is answered with its result
/// and the leave completes. (Found by the simulator's rolling restart,
/// seed 6.)
#[test]
fn a_leave_completes_only_once_the_writes_it_proposed_are_answered() {
    use tern_core::fsm::{ApplyResult, KvCommand, KvWrite};
    use tern_core::rpc::{Op, ReadMode, ReplyBody, Request};
    // A 1 s drain, so the removal grace (5 s) ends before the write's
    // outcome would be given up on (`rpc_hold_timeout`, 7 s).
    let mut c = Cluster::new(
        (1..=3)
            .map(|i| {
                let mut cfg = config(i, 3);
                cfg.leave_drain_time = Duration::from_secs(1);
                cfg
            })
            .collect(),
    );
    let old = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let followers: Vec<NodeId> = c.servers.keys().copied().filter(|i| *i != old).collect();
    for f in &followers {
        c.cut.insert((*f, old));
    }
    let put = Request {
        datacenter: tern_core::Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::KvApply(KvCommand::Set(KvWrite {
            key: "k".into(),
            flags: 0,
            value: b"v".to_vec().into(),
        })),
    };
    let rid = c.request(old, put);
    c.deliver_all();
    for f in &followers {
        c.cut.insert((old, *f));
    }
    c.run_for(Duration::from_secs(1));
    assert!(c.leader().is_some_and(|l| l != old), "another leader");
    c.handle(old, Input::Leave);
    // Drain (1 s) and removal grace (5 s) pass; the write is unanswered.
    c.run_for(RAFT_REMOVE_GRACE + Duration::from_millis(500));
    assert!(!c.responses.contains_key(&(old, rid)));
    assert!(!c.servers[&old].has_left(), "left with a write unanswered");
    c.cut.clear();
    assert!(run_until(&mut c, Duration::from_secs(2), |c| {
        c.servers[&old].has_left()
    }));
    let reply = c.responses[&(old, rid)]
        .clone()
        .expect("answered with its result");
    assert_eq!(reply.body, ReplyBody::Applied(ApplyResult::Kv(true)));
}
