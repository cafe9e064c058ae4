//! A server's own snapshot is encoded off the agent task: the server asks
//! its driver to encode a point-in-time view (`Action::BuildSnapshot`),
//! keeps serving meanwhile, and saves what comes back
//! (`Input::SnapshotBuilt`) unless a newer snapshot got there first. Raft
//! §7 (snapshots, log compaction); Consul's `raft.takeSnapshot`
//! (hashicorp/raft snapshot.go) likewise takes a point-in-time FSM snapshot
//! and persists it outside the main loop.
//!
//! The first tests drive one `Server` by hand and compare exact actions;
//! the rest use the in-process cluster with builds held, so that messages,
//! step-downs, InstallSnapshots and restarts happen while a build is out.

use tern_core::fsm::{FsmView, KvCommand, KvWrite};
use tern_core::raft::{Durable, Role, Snapshot, SnapshotMeta, CHUNK_ENTRIES};
use tern_core::rpc::{Op, ReadMode, Request};
use tern_core::testkit::{config, node_id, Cluster};
use tern_core::{
    Action, Config, Datacenter, Duration, Event, Input, Instant, LogIndex, NodeId, Outbox,
    PersistId, PersistOp, RequestId, Server,
};

fn put(key: &str) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::KvApply(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: format!("value of {key}").into_bytes().into(),
        })),
    }
}

/// A test config with snapshots after `threshold` applied entries, looked
/// at on every input, and no entries kept behind a snapshot.
fn snapshotting(i: u64, n: u64, threshold: u64) -> Config {
    let mut c = config(i, n);
    c.snapshot_threshold = threshold;
    c.snapshot_interval = Duration::ZERO;
    c.trailing_logs = 0;
    c
}

fn builds_in(actions: &[Action]) -> Vec<(SnapshotMeta, FsmView)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::BuildSnapshot { meta, view } => Some((meta.clone(), view.clone())),
            _ => None,
        })
        .collect()
}

/// The size of each `Action::Discard` among `actions`, in entries.
fn discarded(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Discard(g) => Some(g.len()),
            _ => None,
        })
        .collect()
}

fn saves_in(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Persist {
                    op: PersistOp::SaveSnapshot(_),
                    ..
                }
            )
        })
        .count()
}

/// One server that is its own datacenter, driven by hand: an instant disk
/// behind the real outbox, and every action it emits kept for the test.
struct Solo {
    now: Instant,
    server: Server,
    outbox: Outbox,
    disk: Durable,
    next_request: u64,
}

impl Solo {
    /// Elected, with its no-op and autopilot's configuration (which a new
    /// leader stores) committed.
    fn new(threshold: u64) -> Solo {
        let now = Instant(1_000_000_000);
        let server = Server::new(snapshotting(1, 1, threshold), Durable::default(), now).unwrap();
        let mut s = Solo {
            now,
            server,
            outbox: Outbox::new(),
            disk: Durable::default(),
            next_request: 0,
        };
        let mut out = Vec::new();
        s.server.start(&mut out);
        s.settle(out);
        for _ in 0..100 {
            if s.server.role() == Role::Leader
                && s.server.raft().committed_in_term()
                && s.server.fsm().autopilot().is_some()
            {
                return s;
            }
            s.now = s.server.poll_timeout().unwrap_or(s.now).max(s.now);
            let out = s.handle(Input::Tick);
            s.settle(out);
        }
        panic!("a one-server datacenter elects itself");
    }

    /// One input; the actions exactly as the server emitted them (not yet
    /// run: see `settle`).
    fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.server.handle(self.now, input, &mut out);
        out
    }

    /// Runs `out` through the outbox with an instant disk (an own snapshot
    /// file is written at once), reporting each job durable, until nothing
    /// is left; returns everything the server emitted on the way. A
    /// `BuildSnapshot` is left to the test.
    fn settle(&mut self, out: Vec<Action>) -> Vec<Action> {
        let mut emitted = Vec::new();
        let mut pending = out;
        loop {
            let mut ready = Vec::new();
            self.outbox.push(pending.drain(..), &mut ready);
            while self.outbox.start_background().is_some() {
                self.outbox.background_done();
            }
            let Some(job) = self.outbox.start_job(&mut ready) else {
                return emitted;
            };
            for w in &job {
                self.disk.apply(&w.op).expect("the core emits valid writes");
            }
            let id = self.outbox.job_done(&mut ready);
            pending = self.handle(Input::Persisted(id));
            emitted.extend(pending.iter().cloned());
        }
    }

    /// A client write, run to its answer; every action it caused.
    fn write(&mut self, key: &str) -> Vec<Action> {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        let out = self.handle(Input::Request {
            id,
            request: put(key),
        });
        let mut all = out.clone();
        all.extend(self.settle(out));
        let answered = all
            .iter()
            .any(|a| matches!(a, Action::Respond { id: rid, response: Ok(_) } if *rid == id));
        assert!(answered, "the write of {key} was answered: {all:?}");
        all
    }
}

/// The build is asked for with a view of the state at its index; writes
/// are served while it is out and no second build is asked for; what comes
/// back is saved, and the log is purged only after the snapshot file is
/// durable.
#[test]
fn a_snapshot_is_built_from_a_view_while_writes_are_served_then_saved() {
    let mut s = Solo::new(4);

    // Phase 1: writes until the threshold asks for a build.
    let mut asked = Vec::new();
    for k in 0..10 {
        let all = s.write(&format!("k{k}"));
        assert_eq!(saves_in(&all), 0, "nothing is saved before it is built");
        asked = builds_in(&all);
        if !asked.is_empty() {
            break;
        }
    }
    assert_eq!(asked.len(), 1, "one build");
    let (meta, view) = asked.pop().unwrap();
    let at = s.server.last_applied();
    assert_eq!(meta.last_index, at);
    assert_eq!(meta.last_term, s.server.term());
    assert_eq!(meta.membership, *s.server.membership());
    assert_eq!(view.last_applied(), at.0);
    let then = s.server.fsm().snapshot();
    assert_eq!(view.encode(), then, "the view is the state at its index");
    assert_eq!(s.server.snapshot_building(), Some(at));

    // Phase 2: while it is out, writes are answered (`write` checks), the
    // threshold is passed again, and nothing else is built or saved.
    for k in 0..4 {
        let all = s.write(&format!("more{k}"));
        assert!(builds_in(&all).is_empty(), "at most one build at a time");
        assert_eq!(saves_in(&all), 0);
    }
    assert!(s.server.last_applied() > at);
    assert_eq!(s.server.raft().snapshot_meta(), None);
    assert_eq!(view.encode(), then, "later writes do not reach the view");
    assert_ne!(s.server.fsm().snapshot(), then);

    // Phase 3: the bytes come back. Exactly: save it, purge what it covers
    // (trailing_logs = 0), say so; and at once the next build, since more
    // than the threshold was applied meanwhile.
    let data = view.encode();
    let out = s.handle(Input::SnapshotBuilt {
        meta: meta.clone(),
        data: data.clone(),
    });
    let Some(Action::Persist { id, .. }) = out.first() else {
        panic!("a write first: {out:?}");
    };
    let id = *id;
    let now_at = s.server.last_applied();
    let next_view = s.server.fsm().view();
    assert_eq!(
        out,
        vec![
            Action::Persist {
                id,
                op: PersistOp::SaveSnapshot(Snapshot {
                    meta: meta.clone(),
                    data: data.clone().into()
                }),
                sync: true
            },
            Action::Persist {
                id: PersistId(id.0 + 1),
                op: PersistOp::PurgeUpTo(at),
                sync: false
            },
            Action::Event(Event::SnapshotTaken { last_index: at }),
            Action::BuildSnapshot {
                meta: SnapshotMeta {
                    last_index: now_at,
                    last_term: s.server.term(),
                    membership: s.server.membership().clone(),
                },
                view: next_view,
            },
        ]
    );
    assert_eq!(s.server.snapshot_building(), Some(now_at));

    // Phase 4: the snapshot file is written beside the log; the purge
    // waits until it is durable, then follows it.
    let mut ready = Vec::new();
    s.outbox.push(out, &mut ready);
    assert_eq!(builds_in(&ready).len(), 1, "the build goes to the driver");
    assert_eq!(s.outbox.start_job(&mut ready), None, "the purge waits");
    let written = s.outbox.start_background().expect("the snapshot file");
    assert_eq!(written.id, id);
    // The background write carries the snapshot, and so does the log
    // lane's op that adopts the file: one copy of the bytes, shared, not
    // copied (a state of many megabytes was copied on the agent task). The
    // node keeps none: no follower is being sent a snapshot, and once the
    // file is written the bytes are the file's (`Action::LoadSnapshot`
    // reads them back when one is).
    let PersistOp::SaveSnapshot(saved) = &written.op else {
        panic!(
            "the background write is the snapshot file: {:?}",
            written.op
        )
    };
    assert_eq!(
        std::sync::Arc::strong_count(&saved.data),
        2,
        "the file write and the adopting op share the bytes; the node holds none"
    );
    assert!(!s.server.raft().snapshot_in_memory());
    assert_eq!(
        s.server.raft().snapshot_bytes(),
        Some(saved.data.len() as u64)
    );
    s.outbox.background_done();
    let job = s.outbox.start_job(&mut ready).expect("then the log lane");
    let ops: Vec<&PersistOp> = job.iter().map(|w| &w.op).collect();
    assert!(matches!(ops[..], [PersistOp::SaveSnapshot(_), PersistOp::PurgeUpTo(p)] if *p == at));
    for w in &job {
        s.disk.apply(&w.op).unwrap();
    }
    let durable = s.outbox.job_done(&mut ready);
    s.handle(Input::Persisted(durable));
    assert_eq!(
        s.disk
            .snapshot
            .as_ref()
            .map(|s| (&s.meta, s.data.as_slice())),
        Some((&meta, data.as_slice()))
    );
    assert!(s.disk.entries.iter().all(|e| e.index > at), "purged");
    assert!(
        Server::new(snapshotting(1, 1, 4), s.disk.clone(), s.now).is_ok(),
        "the data restarts from the snapshot"
    );
}

/// Compacting the log behind a saved snapshot drops every entry it covers;
/// freeing 30-55k of them on the agent task held it for 10-20 ms, freed at
/// once or a bounded number per input, and every request in flight waited
/// (`bench/snapshot-stall.sh`). The server hands them to its driver in one
/// `Action::Discard`, whole chunks and nothing copied, and what it serves
/// is unchanged.
#[test]
fn the_entries_a_snapshot_compacts_are_handed_to_the_driver() {
    let threshold = 4 * CHUNK_ENTRIES as u64;
    let mut s = Solo::new(threshold);
    let mut asked = Vec::new();
    for k in 0..2 * threshold {
        let out = s.write(&format!("k{k}"));
        assert!(discarded(&out).is_empty(), "nothing dropped before");
        asked = builds_in(&out);
        if !asked.is_empty() {
            break;
        }
    }
    let (meta, view) = asked.pop().expect("a build");
    let base = s.server.raft().log().base_index();
    let (first_kept, last) = (meta.last_index.next(), s.server.raft().log().last_index());

    // The input that compacts (trailing_logs = 0) hands the entries out.
    let out = s.handle(Input::SnapshotBuilt {
        meta: meta.clone(),
        data: view.encode(),
    });
    assert_eq!(saves_in(&out), 1);
    let log = s.server.raft().log();
    assert_eq!(log.base_index(), meta.last_index, "compacted at once");
    let compacted = (meta.last_index.0 - base.0) as usize;
    assert!(compacted > 2 * CHUNK_ENTRIES, "{compacted} compacted");
    let handed = discarded(&out);
    assert_eq!(handed.len(), 1, "one Discard: {handed:?}");
    // Whole chunks: the compacted head of the chunk the first kept entry
    // is in waits for the rest of it.
    assert!(
        handed[0] <= compacted && compacted - handed[0] < CHUNK_ENTRIES,
        "{} of {compacted} handed out",
        handed[0]
    );
    assert_eq!(log.garbage_len(), 0, "nothing kept back");
    assert_eq!((log.first_index(), log.last_index()), (first_kept, last));

    // Nothing more is handed out until something else is dropped.
    s.settle(out);
    let out = s.handle(Input::Tick);
    assert!(discarded(&out).is_empty());
    s.settle(out);
    // Writes go on after it, and the snapshot saved is the one built.
    s.write("after");
    assert_eq!(
        s.server.raft().snapshot_meta().map(|m| m.last_index),
        Some(meta.last_index)
    );
}

/// A result the server did not ask for, one it already saved, and one
/// older than what it holds are dropped: nothing is written.
#[test]
fn stale_and_unasked_build_results_are_dropped() {
    let mut s = Solo::new(4);
    let mut asked = Vec::new();
    for k in 0..10 {
        asked = builds_in(&s.write(&format!("k{k}")));
        if !asked.is_empty() {
            break;
        }
    }
    let (meta, view) = asked.pop().expect("a build");
    let data = view.encode();

    // Not what is being built: another index.
    let mut other = meta.clone();
    other.last_index = LogIndex(meta.last_index.0 - 1);
    let out = s.handle(Input::SnapshotBuilt {
        meta: other,
        data: data.clone(),
    });
    assert_eq!(out, vec![]);
    assert_eq!(s.server.snapshot_building(), Some(meta.last_index));

    // The real one is saved once...
    let built = Input::SnapshotBuilt {
        meta: meta.clone(),
        data: data.clone(),
    };
    let out = s.handle(built.clone());
    assert_eq!(saves_in(&out), 1);
    s.settle(out);
    // ...and a duplicate of it is dropped.
    assert_eq!(s.handle(built.clone()), vec![]);

    // A newer build is out; the old result arriving again is older than
    // the snapshot held and is not what is being built.
    let mut newer = Vec::new();
    for k in 0..10 {
        newer = builds_in(&s.write(&format!("n{k}")));
        if !newer.is_empty() {
            break;
        }
    }
    let (newer_meta, _) = newer.pop().expect("a second build");
    assert!(newer_meta.last_index > meta.last_index);
    assert_eq!(s.handle(built), vec![]);
    assert_eq!(s.server.snapshot_building(), Some(newer_meta.last_index));
    assert_eq!(
        s.server.raft().snapshot_meta().map(|s| s.last_index),
        Some(meta.last_index)
    );
}

// ----- on the test cluster, with builds held -----

fn cluster(threshold: u64) -> Cluster {
    let mut c = Cluster::new((1..=3).map(|i| snapshotting(i, 3, threshold)).collect());
    c.hold_snapshot_builds = true;
    c
}

/// Writes through `leader` and lets every server hear of the commit.
fn write_all(c: &mut Cluster, leader: NodeId, keys: &[String]) {
    for k in keys {
        c.request(leader, put(k));
        c.deliver_all();
    }
    c.run_for(Duration::from_millis(120));
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn building(c: &Cluster, id: NodeId) -> Option<LogIndex> {
    let asked: Vec<LogIndex> = c
        .snapshot_builds()
        .into_iter()
        .filter(|(of, _)| *of == id)
        .map(|(_, m)| m.last_index)
        .collect();
    assert!(asked.len() <= 1, "at most one build per server: {asked:?}");
    assert_eq!(asked.first().copied(), c.servers[&id].snapshot_building());
    asked.first().copied()
}

fn snapshot_index(c: &Cluster, id: NodeId) -> Option<LogIndex> {
    c.servers[&id].raft().snapshot_meta().map(|s| s.last_index)
}

fn took_snapshot(c: &Cluster, id: NodeId) -> bool {
    c.events
        .iter()
        .any(|(of, e)| *of == id && matches!(e, Event::SnapshotTaken { .. }))
}

/// A follower whose build is out installs a newer snapshot from the
/// leader; when its build comes back, it is older and is dropped, never
/// saved over the installed one (Raft §7: a snapshot only moves forward).
#[test]
fn a_build_that_returns_after_an_install_of_a_newer_snapshot_is_dropped() {
    let mut c = cluster(5);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let follower = (1..=3).map(node_id).find(|&i| i != leader).unwrap();
    let third = (1..=3)
        .map(node_id)
        .find(|&i| i != leader && i != follower)
        .unwrap();

    // Phase 1: enough writes that every server asks for a build.
    write_all(&mut c, leader, &keys("a", 6));
    let built_at = building(&c, follower).expect("the follower builds");
    assert!(building(&c, leader).is_some());

    // Phase 2: the follower is cut off; the others save their snapshots,
    // write on, and snapshot again past everything the follower has.
    for peer in [leader, third] {
        c.cut.insert((peer, follower));
        c.cut.insert((follower, peer));
    }
    c.finish_snapshot_builds(leader);
    c.finish_snapshot_builds(third);
    write_all(&mut c, leader, &keys("b", 6));
    assert!(building(&c, leader).is_some());
    c.finish_snapshot_builds(leader);
    let leader_snapshot = snapshot_index(&c, leader).unwrap();
    assert!(leader_snapshot > c.servers[&follower].last_applied());

    // Phase 3: healed, the follower gets the leader's snapshot while its
    // own build is still out.
    c.cut.clear();
    c.events.clear();
    for _ in 0..200 {
        if snapshot_index(&c, follower) >= Some(leader_snapshot) {
            break;
        }
        c.step(Duration::from_millis(10));
    }
    let installed = snapshot_index(&c, follower).expect("installed");
    assert!(installed >= leader_snapshot && installed > built_at);
    assert!(c
        .events
        .iter()
        .any(|(of, e)| *of == follower && matches!(e, Event::SnapshotInstalled { .. })));
    assert_eq!(building(&c, follower), Some(built_at), "still out");

    // Phase 4: the old build comes back and is dropped.
    c.events.clear();
    assert_eq!(c.finish_snapshot_builds(follower), 1);
    assert!(!took_snapshot(&c, follower));
    assert_eq!(snapshot_index(&c, follower), Some(installed));
    assert_eq!(
        c.disks[&follower]
            .snapshot
            .as_ref()
            .map(|s| s.meta.last_index),
        Some(installed),
        "the disk keeps the newer snapshot"
    );
    // The old build is forgotten (a new one may already be out, past the
    // installed snapshot).
    assert!(c.servers[&follower]
        .snapshot_building()
        .is_none_or(|b| b > installed));

    // And it goes on: it applies, builds and saves snapshots again.
    write_all(&mut c, leader, &keys("c", 6));
    let again = building(&c, follower).expect("a new build");
    assert!(again > installed);
    c.finish_snapshot_builds(follower);
    assert_eq!(snapshot_index(&c, follower), Some(again));
}

/// A leader that loses leadership while its build is out still saves it
/// when it comes back: it is committed state, whoever leads.
#[test]
fn a_build_survives_a_step_down() {
    let mut c = cluster(5);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    write_all(&mut c, leader, &keys("a", 6));
    let built_at = building(&c, leader).expect("the leader builds");

    // The leader is isolated until it steps down (check-quorum).
    for peer in (1..=3).map(node_id).filter(|&i| i != leader) {
        c.cut.insert((peer, leader));
        c.cut.insert((leader, peer));
    }
    for _ in 0..300 {
        if c.servers[&leader].role() != Role::Leader {
            break;
        }
        c.step(Duration::from_millis(10));
    }
    assert_ne!(c.servers[&leader].role(), Role::Leader, "stepped down");
    assert_eq!(building(&c, leader), Some(built_at));

    c.events.clear();
    c.finish_snapshot_builds(leader);
    assert!(took_snapshot(&c, leader));
    assert_eq!(snapshot_index(&c, leader), Some(built_at));
    assert_eq!(
        c.disks[&leader]
            .snapshot
            .as_ref()
            .map(|s| s.meta.last_index),
        Some(built_at)
    );
}

/// A server restarted while its build is out never hears of it: the new
/// incarnation drops a result it did not ask for, and builds its own.
#[test]
fn a_restart_forgets_the_build_in_flight() {
    let mut c = cluster(5);
    let leader = c.run_until_leader(Duration::from_secs(5)).expect("leader");
    let follower = (1..=3).map(node_id).find(|&i| i != leader).unwrap();
    write_all(&mut c, leader, &keys("a", 6));
    let built_at = building(&c, follower).expect("the follower builds");
    let stale = SnapshotMeta {
        last_index: built_at,
        last_term: c.servers[&follower].raft().log().term_at(built_at).unwrap(),
        membership: c.servers[&follower].membership().clone(),
    };
    let stale_data = c.servers[&follower].fsm().snapshot();

    c.crash(follower);
    assert!(building(&c, leader).is_some());
    assert!(c.snapshot_builds().iter().all(|(of, _)| *of != follower));
    c.start(follower);
    assert_eq!(c.servers[&follower].snapshot_building(), None);

    // A late result from the old incarnation changes nothing.
    c.events.clear();
    c.handle(
        follower,
        Input::SnapshotBuilt {
            meta: stale,
            data: stale_data,
        },
    );
    assert!(!took_snapshot(&c, follower));
    assert_eq!(snapshot_index(&c, follower), None);
    assert_eq!(c.disks[&follower].snapshot, None);

    // It catches up, asks for its own build and saves it.
    write_all(&mut c, leader, &keys("b", 6));
    let own = building(&c, follower).expect("its own build");
    c.finish_snapshot_builds(follower);
    assert_eq!(snapshot_index(&c, follower), Some(own));
}
