//! Gossip pools on an in-memory network and a manual clock
//! (`tern_core::gossip::testnet`): convergence, failure detection,
//! refutation, restarts, leave, force-leave, reaping, loss, conflicts and
//! bad input. Behaviour mirrors hashicorp/memberlist (state_test.go) and
//! serf (serf_test.go) as Consul runs them; each test names its source.

use tern_core::gossip::testnet::{address, lan_config, name, TestNet};
use tern_core::gossip::{
    encode_packet, Body, ForceLeaveError, Gossip, GossipAction, GossipConfig, GossipEvent,
    GossipInput, Packet, Status, Tags, Update, JOIN_TARGETS_MAX,
};
use tern_core::{Duration, Instant, NodeId};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A converged LAN pool of `n`.
fn converged(n: usize, seed: u64) -> TestNet {
    let mut net = TestNet::lan(n, seed);
    net.join_all();
    let took = net.run_until(secs(30), TestNet::converged_alive);
    assert!(took.is_some(), "{n} members did not converge in 30 s");
    net
}

fn failed_events(net: &TestNet, i: usize) -> Vec<String> {
    net.events(i)
        .iter()
        .filter_map(|(_, e)| match e {
            GossipEvent::MemberFailed(m) => Some(m.name.clone()),
            _ => None,
        })
        .collect()
}

/// memberlist `TestMemberList_Join` / serf `TestSerf_eventsJoin`: members
/// that join through one of them all end up seeing everyone alive, with
/// the tags each announced.
#[test]
fn five_members_converge_to_all_alive() {
    let mut net = TestNet::lan(5, 1);
    net.join_all();
    let took = net.run_until(secs(30), TestNet::converged_alive);
    let took = took.expect("five members converge");
    assert!(took <= secs(10), "took {took:?}");
    for i in 0..5 {
        for j in 0..5 {
            let m = net.view(i, j).unwrap();
            assert_eq!(m.address, address(j));
            assert_eq!(m.node_id, NodeId(j as u128 + 1));
            assert_eq!(m.tags.get("role"), Some("consul"));
            assert_eq!(m.tags.get("dc"), Some("dc1"));
            assert_eq!(m.tags.server_port(), Some(8300));
            assert_eq!(m.tags.raft_vsn(), 3);
            assert_eq!(
                m.tags.get("id"),
                Some(NodeId(j as u128 + 1).to_string().as_str())
            );
        }
    }
    // Each joiner reported its join once.
    for i in 1..5 {
        let joined = net
            .events(i)
            .iter()
            .filter(|(_, e)| matches!(e, GossipEvent::Joined { .. }));
        assert_eq!(joined.count(), 1, "node{i}");
    }
}

/// memberlist `TestMemberList_ProbeNode_Suspect` and the Lifeguard
/// suspicion: a member that stops answering is suspected, confirmed by
/// others, declared failed, and every member agrees; nobody else is
/// declared failed. The bound is a probe round (n - 1 periods), the longest
/// suspicion timeout (`suspicion_max_timeout_mult` × 4 s) and a little
/// dissemination.
#[test]
fn a_killed_member_is_detected_failed_and_everyone_agrees() {
    let mut net = converged(5, 2);
    net.kill(4);
    let took = net.run_until(secs(60), |net| net.all_agree(&[(4, Status::Failed)]));
    let took = took.expect("the killed member is declared failed everywhere");
    println!(
        "5 members: failure agreed on by all after {:.1} s",
        took.as_secs_f64()
    );
    let bound = secs(4) + secs(24) + secs(2);
    assert!(took <= bound, "took {took:?}");
    // Faster than no confirmations at all: Lifeguard's confirmations shrank it.
    assert!(
        took < secs(24),
        "took {took:?}: confirmations did not shorten the suspicion"
    );
    for i in 0..4 {
        assert_eq!(failed_events(&net, i), vec![name(4)], "node{i}");
        assert_eq!(net.view(i, 4).unwrap().status, Status::Failed);
    }
}

/// memberlist `TestMemberList_Refute` / serf's flapping test: a member that
/// was paused long enough to be declared failed, then resumes, learns it,
/// refutes with a higher incarnation, and is alive again everywhere.
#[test]
fn a_paused_member_declared_failed_refutes_and_is_alive_again() {
    let mut net = converged(5, 3);
    let before = net.view(0, 2).unwrap().version;
    net.kill(2);
    net.run_until(secs(60), |net| net.all_agree(&[(2, Status::Failed)]))
        .expect("declared failed while paused");
    net.resume(2);
    let took = net.run_until(secs(90), |net| net.converged_alive());
    took.expect("alive again everywhere after resuming");
    let after = net.view(0, 2).unwrap().version;
    assert_eq!(after.generation, before.generation);
    assert!(
        after.incarnation > before.incarnation,
        "{before:?} -> {after:?}"
    );
    assert!(net
        .events(2)
        .iter()
        .any(|(_, e)| matches!(e, GossipEvent::Refuted(v) if *v == after)));
    // The others saw it come back.
    assert!(net
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, GossipEvent::MemberJoined(m) if m.name == name(2))));
}

/// A restarted member comes back with a new generation: its first word
/// outranks everything said about its previous life, with no refutation.
/// (FACTS.md: an identity that renews, or a member declared down never rejoins.)
#[test]
fn a_restarted_member_with_a_new_generation_is_alive_again() {
    let mut net = converged(5, 4);
    net.kill(3);
    net.run_until(secs(60), |net| net.all_agree(&[(3, Status::Failed)]))
        .expect("declared failed while down");
    let mut config = lan_config(3, 4);
    config.generation = 2;
    net.restart(3, config, 0);
    net.run_until(secs(30), TestNet::converged_alive)
        .expect("alive again after the restart");
    for i in 0..5 {
        let v = net.view(i, 3).unwrap().version;
        assert_eq!((v.generation, v.incarnation), (2, 0), "node{i} sees {v:?}");
    }
    assert!(!net
        .events(3)
        .iter()
        .any(|(_, e)| matches!(e, GossipEvent::Refuted(_))));
}

/// A pool with short reap timeouts, so a test can run past them.
fn short_timeouts(n: usize, seed: u64) -> TestNet {
    let configs = (0..n)
        .map(|i| GossipConfig {
            tombstone_timeout: secs(300),
            reconnect_timeout: secs(600),
            ..lan_config(i, seed)
        })
        .collect();
    let mut net = TestNet::new(configs, seed);
    net.join_all();
    net.run_until(secs(30), TestNet::converged_alive)
        .expect("converges");
    net
}

/// serf `TestSerf_eventsLeave` and `TestSerf_reap`: a leave is broadcast,
/// the member shows `left` everywhere (not `failed`), and is forgotten
/// after `tombstone_timeout`, not before.
#[test]
fn leave_shows_left_everywhere_and_is_reaped_after_the_tombstone_timeout() {
    let mut net = short_timeouts(5, 5);
    net.input(1, GossipInput::Leave);
    assert_eq!(net.gossip(1).local().status, Status::Leaving);
    net.run_until(secs(5), |net| {
        net.events(1)
            .iter()
            .any(|(_, e)| *e == GossipEvent::LeaveComplete)
    })
    .expect("the leave completes");
    assert_eq!(net.gossip(1).local().status, Status::Left);
    assert_eq!(
        net.gossip(1).poll_timeout(),
        None,
        "a pool that left is done"
    );
    net.kill(1); // the driver stops it
    net.run_until(secs(5), |net| net.all_agree(&[(1, Status::Left)]))
        .expect("left everywhere");
    net.run_for(secs(60));
    for i in [0, 2, 3, 4] {
        assert!(
            failed_events(&net, i).is_empty(),
            "node{i}: a leave is not a failure"
        );
    }
    // Still remembered just before the tombstone timeout...
    net.run_for(secs(200));
    assert!(net.all_agree(&[(1, Status::Left)]));
    // ...and forgotten after it (plus one reap interval).
    net.run_for(secs(60));
    for i in [0, 2, 3, 4] {
        assert!(net.view(i, 1).is_none(), "node{i} still has node1");
        assert!(net.events(i).iter().any(|(_, e)| *e
            == GossipEvent::MemberReaped {
                name: name(1),
                status: Status::Left
            }));
    }
}

/// serf `TestSerf_reap` for failed members: forgotten after
/// `reconnect_timeout` (Consul's 72 h, shortened here).
#[test]
fn a_failed_member_is_reaped_after_the_reconnect_timeout() {
    let mut net = short_timeouts(4, 6);
    net.kill(3);
    net.run_until(secs(60), |net| net.all_agree(&[(3, Status::Failed)]))
        .expect("failed");
    net.run_for(secs(500));
    assert!(net.all_agree(&[(3, Status::Failed)]), "reaped too early");
    net.run_for(secs(200));
    for i in 0..3 {
        assert!(net.view(i, 3).is_none(), "node{i} still has node3");
    }
}

/// serf `TestSerf_RemoveFailedNode` (Consul's `force-leave`): a failed
/// member becomes `left` everywhere; an alive one is refused, and so is a
/// name nobody knows.
#[test]
fn force_leave_turns_a_failed_member_into_left_everywhere() {
    let mut net = converged(5, 7);
    let mut out = Vec::new();
    let mut g0 = net.gossip(0).clone();
    assert_eq!(
        g0.force_leave(net.now, &name(2), false, &mut out),
        Err(ForceLeaveError::NotFailed)
    );
    assert_eq!(
        g0.force_leave(net.now, "nobody", true, &mut out),
        Err(ForceLeaveError::NotFound)
    );
    assert!(out.is_empty());
    net.input(
        0,
        GossipInput::ForceLeave {
            name: name(2),
            prune: false,
        },
    );
    assert!(net.events(0).iter().any(|(_, e)| *e
        == GossipEvent::ForceLeaveRefused {
            name: name(2),
            reason: ForceLeaveError::NotFailed
        }));
    assert_eq!(net.view(0, 2).unwrap().status, Status::Alive);

    net.kill(3);
    net.run_until(secs(60), |net| net.all_agree(&[(3, Status::Failed)]))
        .expect("failed");
    net.input(
        0,
        GossipInput::ForceLeave {
            name: name(3),
            prune: false,
        },
    );
    assert_eq!(net.view(0, 3).unwrap().status, Status::Left);
    net.run_until(secs(10), |net| net.all_agree(&[(3, Status::Left)]))
        .expect("left everywhere");
    for i in [1, 2, 4] {
        assert!(net
            .events(i)
            .iter()
            .any(|(_, e)| matches!(e, GossipEvent::MemberLeft(m) if m.name == name(3))));
    }
}

/// serf `TestSerf_RemoveFailedNode_Prune` (Consul's `force-leave -prune`):
/// a failed member is forgotten at once by every member, well before any
/// reap timeout, and reported reaped as left; an alive member cannot be
/// pruned; a member that left is pruned too.
#[test]
fn force_leave_prune_forgets_a_failed_member_everywhere_at_once() {
    let mut net = converged(5, 8);
    let prune = |name| GossipInput::ForceLeave { name, prune: true };
    net.input(0, prune(name(2)));
    assert_eq!(net.view(0, 2).unwrap().status, Status::Alive, "alive: kept");

    net.kill(3);
    net.run_until(secs(60), |net| net.all_agree(&[(3, Status::Failed)]))
        .expect("failed");
    let at = net.now;
    net.input(0, prune(name(3)));
    assert!(net.view(0, 3).is_none(), "pruned here at once");
    net.run_until(secs(10), |net| {
        [1, 2, 4].iter().all(|i| net.view(*i, 3).is_none())
    })
    .expect("pruned everywhere within seconds");
    assert!(net.now.saturating_since(at) < secs(10));
    for i in [0, 1, 2, 4] {
        assert!(
            net.events(i).iter().any(|(_, e)| *e
                == GossipEvent::MemberReaped {
                    name: name(3),
                    status: Status::Left
                }),
            "node{i} reported no reap"
        );
    }
    // The rest of the pool is untouched and stays converged.
    net.run_for(secs(30));
    for i in [0, 1, 2, 4] {
        for j in [0, 1, 2, 4] {
            assert_eq!(net.view(i, j).unwrap().status, Status::Alive);
        }
    }

    // A member that left on its own is pruned the same way.
    net.input(4, GossipInput::Leave);
    net.run_until(secs(10), |net| {
        [0, 1, 2]
            .iter()
            .all(|i| net.view(*i, 4).map(|m| m.status) == Some(Status::Left))
    })
    .expect("left");
    net.input(1, prune(name(4)));
    net.run_until(secs(10), |net| {
        [0, 1, 2].iter().all(|i| net.view(*i, 4).is_none())
    })
    .expect("a left member pruned everywhere");
}

/// memberlist `TestMemberList_ProbeNode_Suspect`'s other half (indirect
/// probes): when the direct path between two members is cut, others ping
/// for them and neither suspects the other.
#[test]
fn a_cut_link_is_bridged_by_indirect_probes() {
    let mut net = converged(5, 18);
    net.cut(0, 1, true);
    net.run_for(secs(120));
    let suspects = |i: usize| {
        net.events(i)
            .iter()
            .filter(|(_, e)| matches!(e, GossipEvent::MemberSuspect { .. }))
            .count()
    };
    assert_eq!((suspects(0), suspects(1)), (0, 0));
    assert!(net.converged_alive());
}

/// Lifeguard's local health awareness (memberlist awareness.go): a member
/// that hears nothing blames itself as its probes go unanswered and
/// stretches its own probe timings, up to `awareness_max_multiplier - 1`;
/// once it hears again its score comes back down.
#[test]
fn a_deaf_member_lowers_its_own_health_and_recovers() {
    let mut net = converged(5, 19);
    assert_eq!(net.gossip(2).awareness(), 0);
    net.deafen(2, true);
    net.run_for(secs(20));
    assert_eq!(
        net.gossip(2).awareness(),
        7,
        "the score saturates at max - 1"
    );
    net.deafen(2, false);
    net.run_until(secs(120), |net| net.gossip(2).awareness() == 0)
        .expect("the score comes back down once probes are answered");
}

/// Lifeguard's claim (and memberlist's defaults' purpose): at 5% datagram
/// loss, indirect probes and refutation keep false failures away.
#[test]
fn five_percent_loss_gives_no_false_failures_over_ten_minutes() {
    let mut net = converged(5, 8);
    net.loss_per_mille = 50;
    net.run_for(secs(600));
    for i in 0..5 {
        assert!(
            failed_events(&net, i).is_empty(),
            "node{i}: {:?}",
            failed_events(&net, i)
        );
    }
    assert!(net.converged_alive());
    // The loss was real: about one datagram in twenty vanished.
    assert!(net.lost > 0, "no datagram was lost");
    let suspicions: usize = (0..5)
        .map(|i| {
            net.events(i)
                .iter()
                .filter(|(_, e)| matches!(e, GossipEvent::MemberSuspect { .. }))
                .count()
        })
        .sum();
    println!(
        "5% loss, 10 minutes: {} datagrams lost, {suspicions} suspicions, all refuted",
        net.lost
    );
}

/// Fifty members, all joining through one, converge; and a failure among
/// them is detected by all.
#[test]
fn fifty_members_converge_and_agree_on_a_failure() {
    let mut net = TestNet::lan(50, 9);
    net.join_all();
    let took = net
        .run_until(secs(120), TestNet::converged_alive)
        .expect("fifty members converge");
    println!("50 members converged in {:.1} s", took.as_secs_f64());
    net.kill(17);
    let took = net
        .run_until(secs(120), |net| net.all_agree(&[(17, Status::Failed)]))
        .expect("a failure among fifty is agreed on");
    println!(
        "50 members agreed on a failure in {:.1} s",
        took.as_secs_f64()
    );
    for i in (0..50).filter(|&i| i != 17) {
        assert_eq!(failed_events(&net, i), vec![name(17)], "node{i}");
    }
}

/// Consul's node-id conflict (agent/consul/merge.go) and memberlist's
/// "Conflicting address": a member claiming a live member's name with
/// another node id is refused, and so is a new name with a live member's
/// node id. The real members keep their identity everywhere.
#[test]
fn a_member_claiming_a_live_name_or_node_id_is_refused() {
    let mut net = converged(3, 10);
    // An impostor named node1 with node id 99, at a new address.
    let tags = Tags::server("dc1", 8300, NodeId(99), 3, "0.1.0");
    let mut c = GossipConfig::lan(&name(1), NodeId(99), "10.9.9.9:8301", tags);
    c.seed = 99;
    let imp = net.add(c);
    net.input(imp, GossipInput::Join(vec![address(0)]));
    // And a new name carrying node2's node id.
    let tags = Tags::server("dc1", 8300, NodeId(3), 3, "0.1.0");
    let mut c = GossipConfig::lan("node9", NodeId(3), "10.9.9.8:8301", tags);
    c.seed = 98;
    let dup = net.add(c);
    net.input(dup, GossipInput::Join(vec![address(0)]));
    net.run_for(secs(60));

    for i in 0..3 {
        let m = net.view(i, 1).unwrap();
        assert_eq!(
            (m.node_id, m.address.as_str()),
            (NodeId(2), address(1).as_str())
        );
        assert_eq!(m.status, Status::Alive);
        assert!(
            net.gossip(i).member("node9").is_none(),
            "node{i} accepted node9"
        );
    }
    assert!(net.events(0).iter().any(|(_, e)| *e
        == GossipEvent::Conflict {
            name: name(1),
            node_id: NodeId(99),
            holder: name(1),
            holder_node_id: NodeId(2),
        }));
    assert!(net.events(0).iter().any(|(_, e)| *e
        == GossipEvent::Conflict {
            name: "node9".into(),
            node_id: NodeId(3),
            holder: name(2),
            holder_node_id: NodeId(3),
        }));
}

/// Once the holder of a name has failed and `dead_node_reclaim_time` has
/// passed, a new node id may take the name (Consul's ChangeServerID path).
#[test]
fn a_failed_members_name_can_be_reclaimed_by_a_new_node_id() {
    let mut net = converged(4, 11);
    net.kill(3);
    net.run_until(secs(60), |net| net.all_agree(&[(3, Status::Failed)]))
        .expect("failed");
    net.run_for(secs(31));
    let tags = Tags::server("dc1", 8300, NodeId(77), 3, "0.1.0");
    let mut c = GossipConfig::lan(&name(3), NodeId(77), &address(3), tags);
    c.generation = 2;
    net.restart(3, c, 0);
    net.run_until(secs(30), TestNet::converged_alive)
        .expect("the new node id is accepted");
    for i in 0..4 {
        assert_eq!(net.view(i, 3).unwrap().node_id, NodeId(77));
    }
}

/// Bad input from the network: each malformed packet is dropped, changes
/// no member and sends nothing, and the log line is rate limited.
#[test]
fn malformed_packets_change_nothing() {
    let net = converged(3, 12);
    let mut g = net.gossip(0).clone();
    let before = g.members();
    let good = encode_packet(&Packet {
        body: Body::Ping {
            seq: 1,
            target: name(0),
        },
        updates: vec![],
    });
    let mut trailing = good.clone();
    trailing.push(0);
    let mut unknown_version = good.clone();
    unknown_version[0] = 9;
    let long_name = encode_packet(&Packet {
        body: Body::Gossip,
        updates: vec![Update::Suspect {
            name: "x".repeat(300),
            version: Default::default(),
            from: name(2),
        }],
    });
    let oversized_datagram = encode_packet(&Packet {
        body: Body::Ping {
            seq: 1,
            target: "y".repeat(200),
        },
        updates: (0..10)
            .map(|i| Update::Suspect {
                name: format!("{i}{}", "z".repeat(200)),
                version: Default::default(),
                from: name(2),
            })
            .collect(),
    });
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![0xff; 40],
        good[..good.len() - 1].to_vec(),
        trailing,
        unknown_version,
        long_name,
        oversized_datagram,
        vec![1; 5 << 20],
    ];
    let now = net.now;
    let mut out = Vec::new();
    for (k, bytes) in bad.iter().enumerate() {
        g.handle(
            now,
            GossipInput::Packet {
                from: "10.6.6.6:1".into(),
                bytes: bytes.clone(),
            },
            &mut out,
        );
        assert_eq!(g.members(), before, "bad packet {k} changed a member");
    }
    assert!(out
        .iter()
        .all(|a| matches!(a, GossipAction::Event(GossipEvent::PacketDropped { .. }))));
    assert_eq!(out.len(), 1, "one log line per interval");
    // A second later the next drop is logged with the count it suppressed.
    out.clear();
    let later = now + secs(1);
    g.handle(
        later,
        GossipInput::Packet {
            from: "10.6.6.6:1".into(),
            bytes: vec![],
        },
        &mut out,
    );
    assert!(matches!(
        &out[..],
        [GossipAction::Event(GossipEvent::PacketDropped { suppressed, .. })] if *suppressed == bad.len() as u64 - 1
    ));
    // The good packet is answered, so the pool still works.
    out.clear();
    g.handle(
        later,
        GossipInput::Packet {
            from: address(1),
            bytes: good,
        },
        &mut out,
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, GossipAction::Send { to, .. } if *to == address(1))));
}

/// Consul's `retry_join`: an unreachable address is retried with a
/// doubling backoff (each failure an event the driver logs at warn), and
/// the join succeeds once it answers.
#[test]
fn join_retries_with_backoff_until_an_address_answers() {
    let mut net = TestNet::lan(2, 13);
    net.kill(0);
    net.input(1, GossipInput::Join(vec![address(0)]));
    net.run_for(secs(10 + 1 + 10 + 2 + 10 + 4 + 5));
    let waits: Vec<Option<Duration>> = net
        .events(1)
        .iter()
        .filter_map(|(_, e)| match e {
            GossipEvent::JoinFailed {
                retry_in,
                addresses,
                ..
            } => {
                assert_eq!(addresses, &vec![address(0)]);
                Some(*retry_in)
            }
            _ => None,
        })
        .collect();
    assert_eq!(waits, vec![Some(secs(1)), Some(secs(2)), Some(secs(4))]);
    // Attempt 4 left at 37 s into the void; it fails at 47 s, and attempt 5
    // (after 8 s) finds node0 back.
    net.resume(0);
    net.run_until(secs(60), TestNet::converged_alive)
        .expect("joins once the address answers");
    assert!(net
        .events(1)
        .iter()
        .any(|(_, e)| matches!(e, GossipEvent::Joined { attempt: 5, .. })));
}

/// Two pools that formed apart, each through the same join list while the
/// other half was unreachable (a power loss during a partition), merge once
/// both halves can talk: each member sends a state exchange, on its
/// reconnect round (30 s), to a join address that belongs to no member it
/// knows. Without that, nothing would ever make them meet: a join stops at
/// its first answer (Consul's `retry_join`) and serf's reconnect retries
/// only members known as failed (chaos seed 490).
#[test]
fn pools_formed_apart_from_one_join_list_merge_after_healing() {
    let mut net = TestNet::lan(4, 31);
    let others = |i: usize| -> Vec<String> { (0..4).filter(|j| *j != i).map(address).collect() };
    let knows = |net: &TestNet, i: usize, j: usize| {
        net.view(i, j).is_some_and(|m| m.status == Status::Alive)
    };
    net.kill(2);
    net.kill(3);
    net.input(0, GossipInput::Join(others(0)));
    net.input(1, GossipInput::Join(others(1)));
    net.run_until(secs(5), |n| knows(n, 0, 1) && knows(n, 1, 0))
        .expect("0 and 1 meet");
    net.kill(0);
    net.kill(1);
    net.resume(2);
    net.resume(3);
    net.input(2, GossipInput::Join(others(2)));
    net.input(3, GossipInput::Join(others(3)));
    net.run_until(secs(5), |n| knows(n, 2, 3) && knows(n, 3, 2))
        .expect("2 and 3 meet");
    net.resume(0);
    net.resume(1);
    assert!(net.view(0, 2).is_none() && net.view(2, 0).is_none());
    // Every join has ended (each stopped at its first answer); the pools
    // meet on the next reconnect round.
    let took = net.run_until(secs(65), TestNet::converged_alive);
    assert!(
        took.is_some(),
        "the pools never met: 0 knows {:?}, 2 knows {:?}",
        net.gossip(0).members(),
        net.gossip(2).members()
    );
}

/// The join addresses remembered for reconnect rounds stop at
/// `JOIN_TARGETS_MAX`: from a join list longer than that (none answering),
/// the first `JOIN_TARGETS_MAX` distinct addresses are each contacted on
/// some round, and none past them ever is, whatever later joins ask.
#[test]
fn join_targets_stop_at_their_limit() {
    let mut c = lan_config(0, 33);
    c.join_attempts_max = 1;
    let interval = c.reconnect_interval;
    let mut g = Gossip::new(c, Instant(0)).unwrap();
    let addr = |i: usize| format!("10.9.{}.{}:8301", i / 250, i % 250 + 1);
    let n = JOIN_TARGETS_MAX + 44;
    // A repeated address takes no slot: the first JOIN_TARGETS_MAX
    // *distinct* ones are kept.
    let mut list: Vec<String> = (0..n).map(addr).collect();
    list.insert(10, addr(3));
    let mut out = Vec::new();
    g.handle(Instant(0), GossipInput::Join(list), &mut out);
    let mut now = Instant(0);
    // The join's one attempt ends; then 3,000 reconnect rounds, each
    // contacting one remembered stranger (missing any one of 256 over
    // them has odds under 1e-5). A second join past the limit adds nothing.
    let rounds = 3_000;
    let end = Instant(0) + interval.saturating_mul(rounds);
    let mut contacted = std::collections::BTreeSet::new();
    let mut joined_again = false;
    while now < end {
        now = g.poll_timeout().unwrap();
        if !joined_again && now > Instant(0) + secs(120) {
            joined_again = true;
            out.clear();
            g.handle(now, GossipInput::Join(vec![addr(n + 1)]), &mut out);
        }
        out.clear();
        g.handle(now, GossipInput::Tick, &mut out);
        for a in &out {
            if let GossipAction::Send {
                to, stream: true, ..
            } = a
            {
                contacted.insert(to.clone());
            }
        }
    }
    let kept: std::collections::BTreeSet<String> = (0..JOIN_TARGETS_MAX).map(addr).collect();
    let past: Vec<&String> = contacted.difference(&kept).collect();
    let missed: Vec<&String> = kept.difference(&contacted).collect();
    assert!(
        past.is_empty() && missed.is_empty(),
        "contacted past the limit: {past:?}; never contacted: {missed:?}"
    );
}

/// `join_attempts_max` (Consul `retry_max`) gives up, and says so.
#[test]
fn join_gives_up_after_the_attempt_limit() {
    let mut c = lan_config(0, 14);
    c.join_attempts_max = 2;
    let mut g = Gossip::new(c, Instant(0)).unwrap();
    let mut out = Vec::new();
    g.handle(
        Instant(0),
        GossipInput::Join(vec!["10.1.1.1:8301".into()]),
        &mut out,
    );
    // Attempt 1 fails at 10 s, attempt 2 (at 11 s) at 21 s; run well past.
    while g.poll_timeout().unwrap() < Instant(0) + secs(60) {
        let now = g.poll_timeout().unwrap();
        g.handle(now, GossipInput::Tick, &mut out);
    }
    let fails: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            GossipAction::Event(GossipEvent::JoinFailed {
                attempt, retry_in, ..
            }) => Some((*attempt, *retry_in)),
            _ => None,
        })
        .collect();
    assert_eq!(fails, vec![(1, Some(secs(1))), (2, None)]);
}

/// New tags ride a higher incarnation and show up everywhere as an update
/// (serf `TestSerf_SetTags`).
#[test]
fn new_tags_spread_as_an_update() {
    let mut net = converged(4, 15);
    let mut tags = net.gossip(2).local().tags;
    tags.0.insert("build".into(), "0.2.0".into());
    net.set_tags(2, tags.clone()).unwrap();
    assert_eq!(net.gossip(2).local().version.incarnation, 1);
    net.run_until(secs(10), |net| {
        (0..4).all(|i| net.view(i, 2).unwrap().tags == tags)
    })
    .expect("the new tags spread");
    assert!(net
        .events(0)
        .iter()
        .any(|(_, e)| matches!(e, GossipEvent::MemberUpdated(m) if m.name == name(2))));
    let mut huge = tags.clone();
    huge.0.insert("x".into(), "y".repeat(600));
    assert!(net.gossip(2).clone().set_tags(huge).is_err());
}

/// The WAN pool: names `<node>.<dc>`, memberlist's WAN timings, and it
/// works the same way across datacenters.
#[test]
fn a_wan_pool_spans_datacenters_with_wan_timings() {
    let configs: Vec<GossipConfig> = (0..4)
        .map(|i| {
            let dc = if i < 2 { "dc1" } else { "dc2" };
            let id = NodeId(i as u128 + 1);
            let tags = Tags::server(dc, 8300, id, 3, "0.1.0");
            let mut c = GossipConfig::wan(&name(i), dc, id, &address(i), tags);
            c.seed = i as u64;
            c
        })
        .collect();
    assert_eq!(configs[2].name, "node2.dc2");
    assert_eq!(configs[0].probe_interval, secs(5));
    let mut net = TestNet::new(configs, 16);
    net.join_all();
    net.run_until(secs(60), TestNet::converged_alive)
        .expect("the WAN pool converges");
    net.kill(3);
    let took = net
        .run_until(secs(300), |net| {
            (0..3).all(|i| {
                net.gossip(i)
                    .member("node3.dc2")
                    .is_some_and(|m| m.status == Status::Failed)
            })
        })
        .expect("a WAN failure is detected");
    // Slower than the LAN: at least one WAN probe interval plus the
    // 6-interval minimum suspicion.
    assert!(took >= secs(5 + 30), "took {took:?}");
}

/// Memberlist's and Consul's defaults, as an operator would look them up.
#[test]
fn defaults_are_consuls() {
    let lan = lan_config(0, 0);
    assert_eq!(
        (lan.probe_interval, lan.probe_timeout, lan.suspicion_mult),
        (secs(1), Duration::from_millis(500), 4)
    );
    assert_eq!(
        (lan.gossip_interval, lan.gossip_nodes, lan.retransmit_mult),
        (Duration::from_millis(200), 3, 4)
    );
    assert_eq!(
        (lan.reconnect_timeout, lan.tombstone_timeout),
        (secs(72 * 3600), secs(24 * 3600))
    );
    let wan = GossipConfig::wan("s1", "dc1", NodeId(1), "10.0.0.1:8302", Tags::default());
    assert_eq!(
        (
            wan.probe_interval,
            wan.probe_timeout,
            wan.suspicion_mult,
            wan.gossip_interval
        ),
        (secs(5), secs(3), 6, Duration::from_millis(500))
    );
}

/// Bandwidth at 5 and 50 members, at rest after convergence: printed for
/// the README and bounded so a regression (a gossip storm) fails.
#[test]
fn bytes_per_member_per_second_stay_small() {
    for (n, bound) in [(5usize, 1_000u64), (50, 2_000)] {
        let mut net = TestNet::lan(n, 17);
        net.join_all();
        net.run_until(secs(120), TestNet::converged_alive)
            .expect("converges");
        net.run_for(secs(30)); // let the join news die down
        let before: u64 = (0..n).map(|i| net.bytes_sent(i)).sum();
        net.run_for(secs(60));
        let after: u64 = (0..n).map(|i| net.bytes_sent(i)).sum();
        let per = (after - before) / n as u64 / 60;
        println!("{n} members: {per} bytes per member per second at rest");
        assert!(per > 0 && per <= bound, "{n} members: {per} B/s");
    }
}

/// A probe that started against a member's previous life and fails after
/// the member restarted suspects that previous life only, never the new
/// generation (memberlist suspects the incarnation it probed). Before, such a
/// probe made the restarted member refute a suspicion of itself at once
/// (found by the io-tokio driver's test). Quick restarts at many moments, so
/// some land while a probe of the old life is in flight.
#[test]
fn a_probe_of_a_previous_life_never_suspects_the_restarted_member() {
    let mut net = converged(5, 11);
    for round in 0..120u64 {
        net.kill(3);
        // Down past a probe's direct and indirect pings, back (joining
        // through some prober) before that probe gives up.
        net.run_for(Duration::from_millis(300 + (round * 53) % 600));
        let mut config = lan_config(3, 11);
        config.generation = 2 + round;
        net.restart(3, config, [0, 1, 2, 4][(round % 4) as usize]);
        net.run_for(Duration::from_millis(1500));
    }
    let refuted: Vec<_> = net
        .events(3)
        .iter()
        .filter(|(_, e)| matches!(e, GossipEvent::Refuted(_)))
        .collect();
    assert!(
        refuted.is_empty(),
        "the restarted member had to refute: {refuted:?}"
    );
}
