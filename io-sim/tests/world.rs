//! The simulated world end to end: servers on madsim elect, answer clients,
//! survive crashes from their simulated disks, and the faults do what they say.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_core::fsm::{ApplyResult, KvCommand, KvWrite};
use tern_core::rpc::{Op, ReadMode, Reply, ReplyBody, Request};
use tern_core::{Datacenter, NodeId};
use tern_io_sim::fs::StorageError;
use tern_io_sim::{run_seed, CallError, Client, NodeStatus, SimOptions, World, WorldEvent};

fn put(key: &str, value: &str) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::KvApply(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: value.as_bytes().to_vec().into(),
        })),
    }
}

fn get(key: &str) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Consistent,
        blocking: None,
        op: Op::KvGet { key: key.into() },
    }
}

fn three() -> World {
    World::new(SimOptions::default(), 3, |spec| spec.config())
}

/// Waits (in virtual time) until exactly one running server is leader.
async fn one_leader(world: &World, within: Duration) -> NodeId {
    let deadline = madsim::time::Instant::now() + within;
    loop {
        let leaders = world.leaders();
        if leaders.len() == 1 {
            return leaders[0].0;
        }
        assert!(
            madsim::time::Instant::now() < deadline,
            "no single leader within {within:?}: {leaders:?}"
        );
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_ok(client: &Client, server: NodeId, key: &str, value: &str) {
    let answer = client
        .call(server, put(key, value), Duration::from_secs(10))
        .await;
    match answer {
        Ok(Ok(Reply {
            body: ReplyBody::Applied(ApplyResult::Kv(true)),
            ..
        })) => {}
        other => panic!("put {key} via {server:?}: {other:?}"),
    }
}

#[test]
fn three_servers_elect_a_leader_and_answer_a_put() {
    run_seed(1, madsim::Config::default(), || async {
        let world = three();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let client = world.add_client().await;

        // Through the leader, and through a follower (which forwards).
        put_ok(&client, leader, "a", "1").await;
        let follower = world.servers().into_iter().find(|s| *s != leader).unwrap();
        put_ok(&client, follower, "b", "2").await;

        let read = client
            .call(follower, get("a"), Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        match read.body {
            ReplyBody::Entry(Some(e)) => assert_eq!(e.value, b"1"),
            other => panic!("read a: {other:?}"),
        }
        let c = world.counters(leader).unwrap();
        assert!(c.fsyncs > 0 && c.messages_sent > 0, "{c:?}");
    });
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    run_seed(2, madsim::Config::default(), || async {
        let world = three();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let target = world.servers().into_iter().find(|s| *s != leader).unwrap();

        // Not a frame; a frame of garbage; a frame too short for an envelope.
        world.send_raw(target, vec![0xde, 0xad], true).await;
        world
            .send_raw(target, vec![0, 0, 0, 3, 0xff, 0xff, 0xff], true)
            .await;
        world.send_raw(target, vec![0, 0, 0, 1, 7], false).await;
        madsim::time::sleep(Duration::from_millis(100)).await;

        assert_eq!(world.counters(target).unwrap().decode_errors, 3);
        assert_eq!(world.status(target), Some(NodeStatus::Running));
        // And it still does its job.
        let client = world.add_client().await;
        put_ok(&client, target, "k", "v").await;
    });
}

#[test]
fn a_killed_follower_recovers_from_its_disk() {
    run_seed(3, madsim::Config::default(), || async {
        let world = three();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let client = world.add_client().await;
        for i in 0..5 {
            put_ok(&client, leader, &format!("k{i}"), "v").await;
        }
        let follower = world.servers().into_iter().find(|s| *s != leader).unwrap();
        let before = world.with_server(follower, |s| s.last_log_index()).unwrap();
        assert!(before.0 >= 6, "follower has the puts: {before:?}");

        world.kill(follower);
        assert_eq!(world.with_server(follower, |_| ()), None);
        // The two survivors still commit.
        put_ok(&client, leader, "while-down", "v").await;

        world.restart(follower);
        madsim::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(world.status(follower), Some(NodeStatus::Running));
        let started = world
            .events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                WorldEvent::Started {
                    node, last_index, ..
                } if node == follower => Some(last_index),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert_eq!(started.len(), 2);
        assert!(started[1] >= before, "recovered {started:?} from disk");
        // Caught up with the write it missed.
        let after = world.with_server(follower, |s| s.last_log_index()).unwrap();
        assert!(after > before);
    });
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_wal_stops_the_restart() {
    run_seed(4, madsim::Config::default(), || async {
        let world = three();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let client = world.add_client().await;
        for i in 0..5 {
            put_ok(&client, leader, &format!("k{i}"), "v").await;
        }
        let victim = world.servers().into_iter().find(|s| *s != leader).unwrap();
        world.kill(victim);
        let (file, offset) = world.corrupt_disk(victim).expect("several records");
        world.restart(victim);
        madsim::time::sleep(Duration::from_secs(1)).await;
        match world.status(victim) {
            Some(NodeStatus::Corrupt(StorageError::Corrupt {
                file: f,
                offset: at,
                ..
            })) => {
                assert_eq!((f, at), (file, offset))
            }
            other => panic!("expected a corrupt data dir, got {other:?}"),
        }
        assert_eq!(world.with_server(victim, |_| ()), None);
        // The other two carry on.
        put_ok(&client, leader, "after", "v").await;
    });
}

#[test]
fn crashes_under_load_tear_writes_but_recovery_always_succeeds() {
    run_seed(5, madsim::Config::default(), || async {
        use madsim::rand::Rng;
        let world = World::new(SimOptions::default(), 3, |spec| {
            let mut c = spec.config();
            c.election_timeout_min = tern_core::Duration::from_millis(300);
            c.election_timeout_max = tern_core::Duration::from_millis(600);
            c.heartbeat_interval = tern_core::Duration::from_millis(50);
            c.leader_lease_timeout = tern_core::Duration::from_millis(150);
            c
        });
        one_leader(&world, Duration::from_secs(10)).await;
        // Eight clients writing at once keep every disk busy, so crashes
        // land inside fsyncs.
        let mut writers = Vec::new();
        for w in 0..8u32 {
            let client = world.add_client().await;
            let world = world.clone();
            writers.push(madsim::task::spawn(async move {
                for i in 0..200u32 {
                    let to = world.servers()[((w + i) % 3) as usize];
                    let _ = client
                        .call(
                            to,
                            put(&format!("w{w}-{i}"), "v"),
                            Duration::from_millis(500),
                        )
                        .await;
                }
            }));
        }
        for _ in 0..20 {
            let pause = madsim::rand::thread_rng().gen_range(200..1500);
            madsim::time::sleep(Duration::from_millis(pause)).await;
            let victim = world.servers()[madsim::rand::thread_rng().gen_range(0..3)];
            world.restart(victim);
        }
        for w in writers {
            w.await.unwrap();
        }
        madsim::time::sleep(Duration::from_secs(5)).await;

        // Every restart recovered; some of them found a torn last write.
        let (mut torn, mut lost) = (0, 0);
        for id in world.servers() {
            assert_eq!(world.status(id), Some(NodeStatus::Running), "{id:?}");
            let c = world.counters(id).unwrap();
            torn += c.torn_tails_recovered;
            lost += c.unsynced_bytes_lost;
        }
        println!("torn tails recovered: {torn}, unsynced bytes lost: {lost}");
        assert!(torn > 0 && lost > 0, "the crashes hit unsynced writes");
        let client = world.add_client().await;
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        put_ok(&client, leader, "final", "v").await;
    });
}

#[test]
fn partitions_clogs_and_heal_block_and_restore_delivery() {
    run_seed(6, madsim::Config::default(), || async {
        let world = three();
        let old = one_leader(&world, Duration::from_secs(10)).await;
        let old_term = world.with_server(old, |s| s.term()).unwrap();
        let rest: Vec<NodeId> = world.servers().into_iter().filter(|s| *s != old).collect();

        // The leader alone on one side: the majority elects a new one.
        world.partition(&[vec![old], rest.clone()]);
        madsim::time::sleep(Duration::from_secs(6)).await;
        let new_leaders: Vec<_> = world
            .leaders()
            .into_iter()
            .filter(|(id, _)| rest.contains(id))
            .collect();
        assert_eq!(new_leaders.len(), 1, "{:?}", world.leaders());
        assert!(new_leaders[0].1 > old_term);
        let sent_before = world.counters(old).unwrap().messages_received;

        // Heal: one leader, everyone on its term.
        world.heal();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        madsim::time::sleep(Duration::from_secs(1)).await;
        let term = world.with_server(leader, |s| s.term()).unwrap();
        for id in world.servers() {
            assert_eq!(world.with_server(id, |s| s.term()), Some(term));
        }
        assert!(world.counters(old).unwrap().messages_received > sent_before);

        // A client cut off from one server times out there, not elsewhere.
        let client = world.add_client().await;
        world.cut_client(client.id(), leader);
        let answer = client
            .call(leader, put("x", "1"), Duration::from_secs(2))
            .await;
        assert_eq!(answer, Err(CallError::Timeout));
        let other = world.servers().into_iter().find(|s| *s != leader).unwrap();
        put_ok(&client, other, "y", "1").await;
        world.heal();
        put_ok(&client, leader, "z", "1").await;

        // One-way clog: the leader's messages do not reach a follower, so
        // it stops hearing heartbeats while its own messages still flow.
        let follower = world.servers().into_iter().find(|s| *s != leader).unwrap();
        let received = world.counters(follower).unwrap().messages_received;
        world.clog_one_way(leader, follower);
        world.clog_one_way(
            world
                .servers()
                .into_iter()
                .find(|s| *s != leader && *s != follower)
                .unwrap(),
            follower,
        );
        madsim::time::sleep(Duration::from_millis(500)).await;
        let got = world.counters(follower).unwrap().messages_received;
        assert!(
            got <= received + 8,
            "nothing new arrives: {received} -> {got}"
        );
        world.heal();
        madsim::time::sleep(Duration::from_millis(500)).await;
        assert!(world.counters(follower).unwrap().messages_received > got);
    });
}

/// Runs a small faulty scenario and hashes everything observed.
fn trace_hash(seed: u64) -> u64 {
    run_seed(seed, madsim::Config::default(), || async {
        let world = three();
        let hasher = Arc::new(Mutex::new(DefaultHasher::new()));
        let h = hasher.clone();
        world.set_observer(Arc::new(move |o| {
            let mut guard = h.lock().unwrap();
            let h = &mut *guard;
            o.node.hash(h);
            o.now.hash(h);
            format!("{:?}{:?}", o.input, o.actions).hash(h);
        }));
        world.set_latency(Duration::from_millis(1), Duration::from_millis(20));
        world.set_loss(0.05);
        let leader = one_leader(&world, Duration::from_secs(20)).await;
        let client = world.add_client().await;
        for i in 0..10 {
            let _ = client
                .call(leader, put(&format!("k{i}"), "v"), Duration::from_secs(1))
                .await;
        }
        world.restart(leader);
        madsim::time::sleep(Duration::from_secs(5)).await;
        let mut h = hasher.lock().unwrap();
        format!("{:?}", world.events()).hash(&mut *h);
        h.finish()
    })
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = trace_hash(11);
    let b = trace_hash(11);
    assert_eq!(a, b, "seed 11 replays identically");
    assert_ne!(a, trace_hash(12), "another seed takes another path");
}

/// A killed process's connections close, so the others are told it is gone
/// (`Input::Unreachable`): they elect a new leader once its lease (500 ms)
/// is over, well before the 1-2 s election timeout. A paused leader sends no
/// such hint, and the others wait the whole election timeout.
#[test]
fn a_killed_leader_is_replaced_after_its_lease_not_an_election_timeout() {
    run_seed(11, madsim::Config::default(), || async {
        let world = three();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        madsim::time::sleep(Duration::from_secs(1)).await;
        let t0 = madsim::time::Instant::now();
        world.kill(leader);
        let deadline = t0 + Duration::from_secs(10);
        while !world.leaders().into_iter().any(|(l, _)| l != leader) {
            assert!(madsim::time::Instant::now() < deadline, "no new leader");
            madsim::time::sleep(Duration::from_millis(5)).await;
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(490) && took < Duration::from_millis(800),
            "killed: a new leader after {took:?}"
        );

        world.restart(leader);
        madsim::time::sleep(Duration::from_secs(3)).await;
        let next = one_leader(&world, Duration::from_secs(10)).await;
        let t0 = madsim::time::Instant::now();
        world.pause(next);
        let deadline = t0 + Duration::from_secs(10);
        while !world.leaders().into_iter().any(|(l, _)| l != next) {
            assert!(madsim::time::Instant::now() < deadline, "no new leader");
            madsim::time::sleep(Duration::from_millis(5)).await;
        }
        // The followers' election timers run from their last heartbeat,
        // up to one heartbeat interval (100 ms) before the pause.
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "paused (no hint): a new leader after only {took:?}"
        );
        world.resume(next);
    });
}

/// Issue 7, deliverable 1: the simulated node runs the daemon's pipeline.
/// Its disk works beside the node loop, so a leader whose own fsync is slow
/// keeps taking its followers' answers meanwhile, and a write commits on the
/// followers' durable copies (thesis §10.2.1) long before the leader's own
/// fsync ends. A driver that handled no input while an fsync ran could not
/// answer before the leader's fsync finished.
#[test]
fn a_leader_with_a_slow_disk_commits_on_its_followers_disks() {
    run_seed(8, madsim::Config::default(), || async {
        let world = three();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let client = world.add_client().await;
        put_ok(&client, leader, "warm", "up").await;

        // The leader's fsyncs now take 400 ms; its followers' 1-2 ms.
        let slow = (Duration::from_millis(400), Duration::from_millis(400));
        world.set_fsync_latency(leader, Some(slow));
        // Let any fsync that started before the change finish.
        madsim::time::sleep(Duration::from_millis(500)).await;

        let started = madsim::time::Instant::now();
        put_ok(&client, leader, "k", "v").await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(400),
            "the write waited for the leader's own fsync: {took:?}"
        );
        // The leader's copy still becomes durable: its fsync completes later.
        let fsyncs = world.counters(leader).unwrap().fsyncs;
        madsim::time::sleep(Duration::from_millis(900)).await;
        assert!(world.counters(leader).unwrap().fsyncs > fsyncs);
    });
}

/// Issue 7, deliverable 3: a state bigger than one frame reaches a follower
/// that needs a snapshot. Frames are capped at 128 KiB; the state is about
/// 600 KiB, so a snapshot sent as one message would be dropped by the
/// receiver's frame check on every try and the follower would never catch
/// up. Streamed in 32 KiB pieces, it arrives and installs.
#[test]
fn a_snapshot_bigger_than_a_frame_reaches_a_lagging_follower() {
    run_seed(9, madsim::Config::default(), || async {
        let world = World::new(SimOptions::default(), 3, |spec| {
            let mut c = spec.config();
            c.frame_bytes_max = 128 << 10;
            c.snapshot_chunk_bytes = 32 << 10;
            c.append_bytes_max = 48 << 10;
            c.kv_value_bytes_max = 8 << 10;
            c.snapshot_threshold = 20;
            c.snapshot_interval = tern_core::Duration::ZERO;
            c.trailing_logs = 5;
            c
        });
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let client = world.add_client().await;
        let follower = world.servers().into_iter().find(|s| *s != leader).unwrap();
        world.kill(follower);

        // Phase 1: about 600 KiB of state while the follower is down; the
        // others snapshot and compact their logs past what it holds.
        let value = "x".repeat(6 << 10);
        for i in 0..100 {
            put_ok(&client, leader, &format!("big/{i:03}"), &value).await;
        }
        let snapshot_bytes = world
            .with_server(leader, |s| s.raft().snapshot_bytes())
            .unwrap()
            .expect("the leader has a snapshot");
        assert!(snapshot_bytes > 4 * (128 << 10), "{snapshot_bytes} bytes");
        // Written, its bytes are the file's, not the heap's: the follower
        // that needs them does not answer (it may have been read back once
        // while its last answer was recent, then let go).
        let in_memory = |id| world.with_server(id, |s| s.raft().snapshot_in_memory());
        assert_eq!(in_memory(leader), Some(false));
        let loads = || world.counters(leader).unwrap().snapshot_loads;
        let loads_while_down = loads();

        // Phase 2: the follower comes back and needs the snapshot.
        world.restart(follower);
        let deadline = madsim::time::Instant::now() + Duration::from_secs(20);
        loop {
            let caught_up = world
                .with_server(follower, |s| s.fsm().kv_get("big/099").is_some())
                .unwrap_or(false);
            if caught_up {
                break;
            }
            assert!(
                madsim::time::Instant::now() < deadline,
                "the follower never caught up"
            );
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        let installed = world.events().into_iter().any(|(_, e)| {
            matches!(e, WorldEvent::Core { node, event: tern_core::Event::SnapshotInstalled { .. } } if node == follower)
        });
        assert!(installed, "it caught up through a snapshot");
        let hash = |id| world.with_server(id, |s| (s.last_applied(), s.fsm().state_hash()));
        madsim::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(hash(follower), hash(leader));
        // The leader read its snapshot back from the file to stream it, and
        // let go of the bytes once the follower had them all.
        assert!(
            loads() > loads_while_down,
            "the snapshot was read back from its file for the follower"
        );
        assert_eq!(in_memory(leader), Some(false));
    });
}

/// Issue 7, deliverable 2: a failed fsync stops the server, naming the file
/// and the errno; it is never retried (the PostgreSQL fsync lesson: after a
/// failed fsync the page cache may have dropped the data). The others carry
/// on and nothing acknowledged is lost; restarted, the server recovers what
/// its disk really holds.
#[test]
fn a_failed_fsync_stops_the_server_naming_file_and_errno() {
    use tern_io_sim::fs::{FsOp, EIO};
    run_seed(12, madsim::Config::default(), || async {
        let world = three();
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let client = world.add_client().await;
        put_ok(&client, leader, "before", "1").await;
        let victim = world.servers().into_iter().find(|s| *s != leader).unwrap();

        world.fail_next_disk_op(victim, FsOp::Sync, EIO);
        put_ok(&client, leader, "during", "2").await;
        madsim::time::sleep(Duration::from_millis(500)).await;
        match world.status(victim) {
            Some(NodeStatus::Failed(why)) => {
                assert!(why.contains("fsync"), "{why}");
                assert!(why.contains("/data/raft/log-"), "{why}");
                assert!(why.contains("errno 5"), "{why}");
            }
            other => panic!("expected the server to stop, got {other:?}"),
        }
        put_ok(&client, leader, "after", "3").await;

        world.restart(victim);
        let deadline = madsim::time::Instant::now() + Duration::from_secs(10);
        while world
            .with_server(victim, |s| s.fsm().kv_get("after").is_none())
            .unwrap_or(true)
        {
            assert!(madsim::time::Instant::now() < deadline, "never caught up");
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(world.status(victim), Some(NodeStatus::Running));
    });
}

/// Issue 7, deliverable 2: a full disk (ENOSPC) refuses writes with a clear
/// error and keeps serving reads; once there is room, writes resume and
/// nothing is lost. Here a one-server datacenter, where the leader's disk is
/// the only one, so no other server could take the writes.
#[test]
fn a_full_disk_refuses_writes_keeps_serving_reads_and_recovers() {
    use tern_core::rpc::RpcError;
    run_seed(13, madsim::Config::default(), || async {
        let world = World::new(SimOptions::default(), 1, |spec| spec.config());
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        let client = world.add_client().await;
        put_ok(&client, leader, "before", "1").await;

        // Phase 1: the disk fills; the next write cannot be stored. The
        // server learns it is full and refuses the writes that follow.
        world.set_disk_full(leader, true);
        let stuck = {
            let client = world.add_client().await;
            madsim::task::spawn(async move {
                client
                    .call(leader, put("stuck", "2"), Duration::from_secs(30))
                    .await
            })
        };
        madsim::time::sleep(Duration::from_millis(200)).await;
        let refused = client
            .call(leader, put("refused", "3"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(refused, Err(RpcError::DiskFull));
        assert!(RpcError::DiskFull
            .to_string()
            .starts_with("No space left on device"));

        // Reads are still served.
        let read = client
            .call(leader, get("before"), Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        match read.body {
            ReplyBody::Entry(Some(e)) => assert_eq!(e.value, b"1"),
            other => panic!("read before: {other:?}"),
        }

        // Phase 2: room again. The stuck write goes through and writes are
        // taken again; nothing was lost.
        world.set_disk_full(leader, false);
        match stuck.await.unwrap() {
            Ok(Ok(_)) => {}
            other => panic!("the write queued while full: {other:?}"),
        }
        put_ok(&client, leader, "after", "4").await;
        world.restart(leader);
        let leader = one_leader(&world, Duration::from_secs(10)).await;
        // A write in the new term makes the restarted server apply its log.
        put_ok(&client, leader, "restarted", "5").await;
        for (k, v) in [("before", "1"), ("stuck", "2"), ("after", "4")] {
            let got = world
                .with_server(leader, |s| s.fsm().kv_get(k).map(|e| e.value.clone()))
                .unwrap();
            assert_eq!(got.as_deref(), Some(v.as_bytes()), "{k} after a restart");
        }
        assert_eq!(
            world.with_server(leader, |s| s.fsm().kv_get("refused").is_none()),
            Some(true)
        );
    });
}
