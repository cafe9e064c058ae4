//! Each simulated server runs its LAN gossip pool on madsim's network
//! (io-sim/src/gossip.rs): the servers find each other through gossip alone,
//! a kill is seen as `failed` and reaches the leader's autopilot as a
//! gossip status, a restart (new generation) is alive again, a partition
//! makes each side see the other failed and healing brings them back, and a
//! leave is seen as `left`.

use std::time::Duration;

use tern_core::autopilot::GossipStatus;
use tern_core::gossip::{Member, Status};
use tern_core::NodeId;
use tern_io_sim::{run_seed, SimOptions, World, WorldEvent};

fn three() -> World {
    World::new(SimOptions::default(), 3, |spec| spec.config())
}

fn name(id: NodeId) -> String {
    format!("s{}", id.0)
}

/// What `at`'s pool says of `of`.
fn seen(world: &World, at: NodeId, of: NodeId) -> Option<Member> {
    world
        .gossip_members(at)?
        .into_iter()
        .find(|m| m.name == name(of))
}

fn sees(world: &World, at: NodeId, of: NodeId, status: Status) -> bool {
    seen(world, at, of).is_some_and(|m| m.status == status && !m.suspect)
}

/// Waits in virtual time until `cond` holds; panics with `what` after `within`.
async fn until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = madsim::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_alive(world: &World, ids: &[NodeId]) -> bool {
    ids.iter()
        .all(|&a| ids.iter().all(|&b| sees(world, a, b, Status::Alive)))
}

#[test]
fn servers_find_each_other_through_gossip_and_see_a_kill_as_failed() {
    run_seed(1, madsim::Config::default(), || async {
        let world = three();
        let ids = world.servers();
        until(
            Duration::from_secs(5),
            "every pool sees all three alive",
            || all_alive(&world, &ids),
        )
        .await;
        // Each server's pool announces its server port and node id.
        let s1 = seen(&world, ids[1], ids[0]).unwrap();
        assert_eq!(s1.address, "10.0.0.1:8301");
        assert_eq!(s1.tags.server_port(), Some(8300));
        assert_eq!(s1.node_id, ids[0]);

        // Kill s3: the others see it failed within a few suspicion timeouts,
        // and the server itself is told (autopilot's gossip status).
        world.kill(ids[2]);
        until(Duration::from_secs(40), "s3 failed at s1 and s2", || {
            sees(&world, ids[0], ids[2], Status::Failed)
                && sees(&world, ids[1], ids[2], Status::Failed)
        })
        .await;
        until(
            Duration::from_secs(2),
            "s1's server hears s3 failed",
            || {
                world.with_server(ids[0], |s| {
                    s.autopilot()
                        .gossip_status(tern_io_sim::now(), s.config(), s.raft(), ids[2])
                }) == Some(GossipStatus::Failed)
            },
        )
        .await;
        let failed_events = world
            .events()
            .into_iter()
            .filter(|(_, e)| {
                matches!(e, WorldEvent::Gossip { event: tern_core::gossip::GossipEvent::MemberFailed(m), .. } if m.name == "s3")
            })
            .count();
        assert!(failed_events >= 2, "each survivor records s3's failure");

        // Restarted, it is a new generation and alive again everywhere.
        let old = seen(&world, ids[0], ids[2]).unwrap().version.generation;
        world.restart(ids[2]);
        until(Duration::from_secs(10), "s3 alive again", || {
            all_alive(&world, &ids)
        })
        .await;
        assert!(seen(&world, ids[0], ids[2]).unwrap().version.generation > old);
        until(Duration::from_secs(2), "s1's server hears s3 alive", || {
            world.with_server(ids[0], |s| {
                s.autopilot()
                    .gossip_status(tern_io_sim::now(), s.config(), s.raft(), ids[2])
            }) == Some(GossipStatus::Alive)
        })
        .await;
    });
}

#[test]
fn a_partition_fails_members_on_both_sides_and_healing_brings_them_back() {
    run_seed(2, madsim::Config::default(), || async {
        let world = three();
        let ids = world.servers();
        until(Duration::from_secs(5), "converged", || {
            all_alive(&world, &ids)
        })
        .await;
        world.isolate(ids[0]);
        until(
            Duration::from_secs(60),
            "s1 sees both failed and they see it failed",
            || {
                sees(&world, ids[0], ids[1], Status::Failed)
                    && sees(&world, ids[0], ids[2], Status::Failed)
                    && sees(&world, ids[1], ids[0], Status::Failed)
                    && sees(&world, ids[2], ids[0], Status::Failed)
            },
        )
        .await;
        // s2 and s3 still see each other alive: a false failure stays on
        // the far side of the cut.
        assert!(sees(&world, ids[1], ids[2], Status::Alive));
        world.heal();
        until(
            Duration::from_secs(75),
            "every pool sees all alive again",
            || all_alive(&world, &ids),
        )
        .await;
    });
}

#[test]
fn a_paused_server_declared_failed_refutes_when_it_resumes() {
    run_seed(3, madsim::Config::default(), || async {
        let world = three();
        let ids = world.servers();
        until(Duration::from_secs(5), "converged", || {
            all_alive(&world, &ids)
        })
        .await;
        world.pause(ids[1]);
        until(Duration::from_secs(40), "s2 failed at s1", || {
            sees(&world, ids[0], ids[1], Status::Failed)
        })
        .await;
        world.resume(ids[1]);
        until(Duration::from_secs(75), "s2 alive again everywhere", || {
            all_alive(&world, &ids)
        })
        .await;
        // It came back by refuting (same generation, higher incarnation).
        let refuted = world.events().into_iter().any(|(_, e)| {
            matches!(e, WorldEvent::Gossip { node, event: tern_core::gossip::GossipEvent::Refuted(_) } if node == ids[1])
        });
        assert!(refuted, "s2 refuted its death");
    });
}

#[test]
fn a_server_that_leaves_is_seen_left() {
    run_seed(4, madsim::Config::default(), || async {
        let world = three();
        let ids = world.servers();
        until(Duration::from_secs(5), "converged", || {
            all_alive(&world, &ids)
        })
        .await;
        world.leave(ids[2]);
        until(Duration::from_secs(10), "s3 left at s1 and s2", || {
            sees(&world, ids[0], ids[2], Status::Left) && sees(&world, ids[1], ids[2], Status::Left)
        })
        .await;
    });
}
