//! An in-process cluster on a manual clock: a perfect (or lossy) in-memory
//! network and in-memory disks. For engine-level tests and the commit
//! benchmark; the simulator (io-sim) is where faults are realistic.

use std::collections::{BTreeMap, VecDeque};

use crate::action::{Action, Event, Input, PersistOp};
use crate::clock::{Duration, Instant};
use crate::config::Config;
use crate::fsm::FsmView;
use crate::ids::{NodeId, RequestId};
use crate::message::Message;
use crate::outbox::Outbox;
use crate::raft::{Durable, Member, Membership, Role, Snapshot, SnapshotMeta, Suffrage};
use crate::rpc::{Request, Response};
use crate::server::Server;

/// A node id for test server `i` (1-based), stable and readable.
pub fn node_id(i: u64) -> NodeId {
    NodeId(0xA000_0000_0000_0000_0000_0000_0000_0000 | i as u128)
}

/// A test configuration for server `i` of a cluster bootstrapped with `n` voters.
pub fn config(i: u64, n: u64) -> Config {
    let mut c = Config::new(node_id(i), &format!("s{i}"), "dc1", &format!("s{i}:8300"));
    c.rng_seed = i * 7919;
    c.election_timeout_min = Duration::from_millis(150);
    c.election_timeout_max = Duration::from_millis(300);
    c.heartbeat_interval = Duration::from_millis(50);
    c.leader_lease_timeout = Duration::from_millis(100);
    c.bootstrap = Some(membership(n));
    c
}

/// The bootstrap membership of servers 1..=n, all voters.
pub fn membership(n: u64) -> Membership {
    let mut m = Membership::default();
    for i in 1..=n {
        m.servers.insert(
            node_id(i),
            Member {
                name: crate::ids::NodeName(format!("s{i}")),
                address: format!("s{i}:8300"),
                suffrage: Suffrage::Voter,
            },
        );
    }
    m
}

/// A one-voter membership of the server `config` describes.
pub fn membership_of(config: &Config) -> Membership {
    let mut m = Membership::default();
    m.servers.insert(
        config.node_id,
        Member {
            name: config.node_name.clone(),
            address: config.address.clone(),
            suffrage: Suffrage::Voter,
        },
    );
    m
}

/// A cluster of servers exchanging messages through a queue.
pub struct Cluster {
    pub now: Instant,
    pub servers: BTreeMap<NodeId, Server>,
    pub disks: BTreeMap<NodeId, Durable>,
    /// Each running server's outbox: the disk is instant, but writes still
    /// complete through `Input::Persisted`, as with every driver.
    outboxes: BTreeMap<NodeId, Outbox>,
    pub configs: BTreeMap<NodeId, Config>,
    queue: VecDeque<Message>,
    /// Directed links that drop everything.
    pub cut: std::collections::BTreeSet<(NodeId, NodeId)>,
    pub responses: BTreeMap<(NodeId, RequestId), Response>,
    pub events: Vec<(NodeId, Event)>,
    pub keep_events: bool,
    /// Record durable writes (off in the benchmark: no I/O of any kind).
    pub keep_disks: bool,
    /// Own snapshots asked for (`Action::BuildSnapshot`) and not yet
    /// encoded, oldest first.
    builds: Vec<(NodeId, SnapshotMeta, FsmView)>,
    /// Whether builds wait: `false` (the default) encodes each at once,
    /// right after the `handle` that asked for it; `true` keeps them until
    /// `finish_snapshot_builds`, so that inputs arrive while they are out,
    /// as under the real drivers.
    pub hold_snapshot_builds: bool,
    /// Each server's snapshot files, newest last (two kept, as a data dir
    /// does): what `Action::LoadSnapshot` reads back, kept even when
    /// `keep_disks` is off.
    snapshot_files: BTreeMap<NodeId, Vec<Snapshot>>,
    /// Snapshot loads asked for and not yet answered.
    loads: Vec<(NodeId, SnapshotMeta)>,
    next_request: u64,
    appends_with_entries: u64,
    entries_sent: u64,
}

impl Cluster {
    /// `n` servers from `configs`, all started.
    pub fn new(configs: Vec<Config>) -> Cluster {
        let mut c = Cluster {
            now: Instant(1_000_000_000),
            servers: BTreeMap::new(),
            disks: BTreeMap::new(),
            outboxes: BTreeMap::new(),
            configs: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: Default::default(),
            responses: BTreeMap::new(),
            events: Vec::new(),
            keep_events: true,
            keep_disks: true,
            builds: Vec::new(),
            hold_snapshot_builds: false,
            snapshot_files: BTreeMap::new(),
            loads: Vec::new(),
            next_request: 0,
            appends_with_entries: 0,
            entries_sent: 0,
        };
        for cfg in configs {
            let id = cfg.node_id;
            c.configs.insert(id, cfg);
            c.disks.insert(id, Durable::default());
            c.start(id);
        }
        c
    }

    /// A bootstrapped cluster of `n` voters with test timings.
    pub fn with_voters(n: u64) -> Cluster {
        Cluster::new((1..=n).map(|i| config(i, n)).collect())
    }

    /// (Re)start a server from its disk.
    pub fn start(&mut self, id: NodeId) {
        let cfg = self.configs[&id].clone();
        let durable = self.disks[&id].clone();
        let outbox = Outbox::for_config(&cfg);
        let mut s = Server::new(cfg, durable, self.now).expect("valid test config");
        self.outboxes.insert(id, outbox);
        let mut out = Vec::new();
        s.start(&mut out);
        self.servers.insert(id, s);
        self.execute(id, out);
    }

    /// Stop a server; what it persisted stays on its disk, and a snapshot
    /// it was having built is forgotten.
    /// What gossip would report of server `id` (from its config): the
    /// `Input::ServerMember` a driver hands over.
    pub fn gossip_says(&self, id: NodeId, status: crate::autopilot::GossipStatus) -> crate::Input {
        let config = &self.configs[&id];
        crate::Input::ServerMember(crate::reconcile::ServerMember {
            node: id,
            name: config.node_name.clone(),
            address: config.address.clone(),
            status,
            raft_vsn: 3,
        })
    }

    pub fn crash(&mut self, id: NodeId) {
        self.servers.remove(&id);
        self.outboxes.remove(&id);
        self.queue.retain(|m| m.to != id);
        self.builds.retain(|(of, _, _)| *of != id);
        self.loads.retain(|(of, _)| *of != id);
    }

    /// The snapshots asked for and not yet built: (server, metadata).
    pub fn snapshot_builds(&self) -> Vec<(NodeId, SnapshotMeta)> {
        self.builds
            .iter()
            .map(|(id, meta, _)| (*id, meta.clone()))
            .collect()
    }

    /// Encode every snapshot `id` has asked for so far and hand each back
    /// with `Input::SnapshotBuilt` (what a driver's snapshot thread does);
    /// returns how many.
    pub fn finish_snapshot_builds(&mut self, id: NodeId) -> usize {
        let (mine, rest) = std::mem::take(&mut self.builds)
            .into_iter()
            .partition(|(of, _, _)| *of == id);
        self.builds = rest;
        let mine: Vec<(NodeId, SnapshotMeta, FsmView)> = mine;
        for (_, meta, view) in &mine {
            let data = view.encode();
            self.handle(
                id,
                Input::SnapshotBuilt {
                    meta: meta.clone(),
                    data,
                },
            );
        }
        mine.len()
    }

    /// `finish_snapshot_builds` for every server with a build out (builds
    /// asked for while these are handed back wait for the next call).
    pub fn finish_all_snapshot_builds(&mut self) {
        let ids: std::collections::BTreeSet<NodeId> =
            self.builds.iter().map(|(id, _, _)| *id).collect();
        for id in ids {
            self.finish_snapshot_builds(id);
        }
    }

    pub fn handle(&mut self, id: NodeId, input: Input) {
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        let mut out = Vec::new();
        s.handle(self.now, input, &mut out);
        self.execute(id, out);
    }

    /// Run a server's actions through its outbox, then (unless they are
    /// held) encode the snapshots it asked for.
    fn execute(&mut self, id: NodeId, out: Vec<Action>) {
        self.execute_actions(id, out);
        // Loads are answered after the handle that asked (a driver reads
        // the file off the agent task).
        let loads: Vec<SnapshotMeta> = {
            let (mine, rest) = std::mem::take(&mut self.loads)
                .into_iter()
                .partition(|(of, _)| *of == id);
            self.loads = rest;
            mine.into_iter().map(|(_, m)| m).collect::<Vec<_>>()
        };
        for meta in loads {
            let data = self
                .snapshot_files
                .get(&id)
                .and_then(|files| files.iter().find(|s| s.meta == meta))
                .map(|s| s.data.clone());
            self.handle(id, Input::SnapshotLoaded { meta, data });
        }
        if !self.hold_snapshot_builds && self.builds.iter().any(|(of, _, _)| *of == id) {
            self.finish_snapshot_builds(id);
        }
    }

    /// The disk is instant: each handle's writes are durable before the
    /// next input, and the server hears so through `Input::Persisted` like
    /// under any driver.
    fn execute_actions(&mut self, id: NodeId, out: Vec<Action>) {
        let Some(outbox) = self.outboxes.get_mut(&id) else {
            return;
        };
        let mut ready = Vec::new();
        outbox.push(out, &mut ready);
        // An own snapshot "written beside the log" is on disk at once; it
        // then goes through the log lane (the model applies it there).
        while outbox.start_background().is_some() {
            outbox.background_done();
        }
        let job = outbox.start_job(&mut ready);
        self.run(id, ready);
        let Some(job) = job else {
            return;
        };
        for w in &job {
            if let PersistOp::SaveSnapshot(s) | PersistOp::InstallSnapshot(s) = &w.op {
                let files = self.snapshot_files.entry(id).or_default();
                files.push(s.clone());
                if files.len() > 2 {
                    files.remove(0);
                }
            }
        }
        if self.keep_disks {
            if let Some(d) = self.disks.get_mut(&id) {
                for w in &job {
                    // The core emits only valid ops: a refusal is a bug.
                    if let Err(e) = d.apply(&w.op) {
                        panic!("{id:?} emitted an invalid durable write {:?}: {e}", w.op);
                    }
                }
            }
        }
        let mut released = Vec::new();
        let Some(outbox) = self.outboxes.get_mut(&id) else {
            return;
        };
        let persisted = outbox.job_done(&mut released);
        self.run(id, released);
        self.handle(id, Input::Persisted(persisted));
    }

    fn run(&mut self, id: NodeId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Persist { .. } => unreachable!("the outbox keeps writes"),
                Action::Send { message, .. } => {
                    if let crate::message::MessageBody::Raft(
                        crate::raft::RaftMessage::AppendEntries(ae),
                    ) = &message.body
                    {
                        if !ae.entries.is_empty() {
                            self.appends_with_entries += 1;
                            self.entries_sent += ae.entries.len() as u64;
                        }
                    }
                    if !self.cut.contains(&(message.from, message.to)) {
                        self.queue.push_back(message);
                    }
                }
                Action::Respond { id: rid, response } => {
                    self.responses.insert((id, rid), response);
                }
                Action::Event(e) => {
                    if self.keep_events {
                        self.events.push((id, e));
                    }
                }
                Action::BuildSnapshot { meta, view } => self.builds.push((id, meta, view)),
                Action::LoadSnapshot { meta, .. } => self.loads.push((id, meta)),
                // Freed here and now: nothing waits on an in-memory cluster.
                Action::Discard(garbage) => drop(garbage),
            }
        }
    }

    /// Send a request to server `id`; returns the id to look the answer up with.
    pub fn request(&mut self, id: NodeId, request: Request) -> RequestId {
        self.next_request += 1;
        let rid = RequestId(self.next_request);
        self.handle(id, Input::Request { id: rid, request });
        rid
    }

    /// Deliver every queued message (and what they cause) without moving time.
    pub fn deliver_all(&mut self) -> usize {
        let mut n = 0;
        while let Some(m) = self.queue.pop_front() {
            n += 1;
            let to = m.to;
            self.handle(to, Input::Message(m));
        }
        n
    }

    /// Messages sent and not yet delivered.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Deliver the `i`-th queued message (counting from the oldest, modulo
    /// the queue's length) out of order; returns it. None if nothing is queued.
    pub fn deliver_nth(&mut self, i: usize) -> Option<Message> {
        let n = self.queue.len();
        let m = self.queue.remove(i.checked_rem(n)?)?;
        self.handle(m.to, Input::Message(m.clone()));
        Some(m)
    }

    /// Lose the `i`-th queued message (modulo the queue's length).
    pub fn drop_nth(&mut self, i: usize) -> Option<Message> {
        let n = self.queue.len();
        self.queue.remove(i.checked_rem(n)?)
    }

    /// Move time forward by `d` and tick every server whose deadline has
    /// passed, delivering nothing.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.tick_due();
    }

    /// Tick every server whose deadline has passed.
    fn tick_due(&mut self) {
        let due: Vec<NodeId> = self
            .servers
            .iter()
            .filter(|(_, s)| s.poll_timeout().is_some_and(|t| t <= self.now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.handle(id, Input::Tick);
        }
    }

    /// Move time to the earliest timer (at most `max`), fire due timers and
    /// deliver messages.
    pub fn step(&mut self, max: Duration) {
        self.deliver_all();
        let next = self
            .servers
            .values()
            .filter_map(|s| s.poll_timeout())
            .min()
            .unwrap_or(self.now + max);
        self.now = next.min(self.now + max).max(self.now);
        self.tick_due();
        self.deliver_all();
    }

    /// Run for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(end.saturating_since(self.now));
        }
    }

    /// Run until some server leads (and its no-op is committed), at most `d`.
    pub fn run_until_leader(&mut self, d: Duration) -> Option<NodeId> {
        let end = self.now + d;
        while self.now < end {
            if let Some(l) = self.leader() {
                if self.servers[&l].raft().committed_in_term() {
                    return Some(l);
                }
            }
            self.step(Duration::from_millis(10));
        }
        self.leader()
    }

    /// AppendEntries sent that carried entries, and the entries they carried.
    pub fn append_stats(&self) -> (u64, u64) {
        (self.appends_with_entries, self.entries_sent)
    }

    /// The one server that believes it leads in the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.servers
            .iter()
            .filter(|(_, s)| s.role() == Role::Leader)
            .max_by_key(|(_, s)| s.term())
            .map(|(id, _)| *id)
    }
}
