//! The nemesis: faults drawn from the seed, and the named scenarios.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tern_core::autopilot::AutopilotEvent;
use tern_core::raft::Role;
use tern_core::rng::Rng;
use tern_core::rpc::{Op, ReadMode, ReplyBody};
use tern_core::{Event, NodeId, NodeName};
use tern_io_sim::{Client, NodeStatus, World, WorldEvent};

use crate::linearizability::{KvInput, KvOutput, Operation};
use crate::options::{Fault, Options};
use crate::run::server_config;
use crate::workload::{self, SharedHistory};

/// Drives faults into a world and remembers what it did.
pub struct Nemesis {
    pub world: World,
    pub operator: Client,
    pub opts: Options,
    rng: Rng,
    /// Killed servers and when to restart them.
    killed: BTreeMap<NodeId, madsim::time::Instant>,
    paused: BTreeMap<NodeId, madsim::time::Instant>,
    removed: BTreeSet<NodeId>,
    /// Servers with a slow disk, and when it recovers.
    slow: BTreeMap<NodeId, madsim::time::Instant>,
    /// Servers whose gossip port is blocked, and when it opens again.
    gossip_blocked: BTreeMap<NodeId, madsim::time::Instant>,
    pub log: Vec<String>,
    /// Probe writes so far (each writes a value unique in the run).
    probes: u64,
    /// The lock scenario's clients (`lock_faults` cuts them off).
    pub lock_clients: Vec<tern_io_sim::ClientId>,
}

async fn sleep(d: Duration) {
    madsim::time::sleep(d).await;
}

fn now() -> madsim::time::Instant {
    madsim::time::Instant::now()
}

impl Nemesis {
    pub fn new(world: World, operator: Client, opts: Options) -> Nemesis {
        let rng = Rng::new(opts.seed ^ 0x000E_3E51_5000);
        Nemesis {
            world,
            operator,
            opts,
            rng,
            killed: BTreeMap::new(),
            paused: BTreeMap::new(),
            removed: BTreeSet::new(),
            slow: BTreeMap::new(),
            gossip_blocked: BTreeMap::new(),
            log: Vec::new(),
            probes: 0,
            lock_clients: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, what: String) {
        let t = tern_io_sim::now().0 as f64 / 1e9;
        self.log.push(format!("{t:8.3}s {what}"));
    }

    /// Stops a server for good (no leave, no restart): a dead machine.
    pub fn stop_for_good(&mut self, id: NodeId) {
        self.killed.remove(&id);
        self.paused.remove(&id);
        self.removed.insert(id);
        self.world.remove_node(id);
        self.note(format!("stop {id:?} for good"));
    }

    /// `id` is gone from the cluster (it left): no fault picks it again.
    pub fn mark_removed(&mut self, id: NodeId) {
        self.removed.insert(id);
    }

    /// Starts a new server with an empty disk; it joins through gossip.
    pub fn start_server(&mut self) -> NodeId {
        let opts = self.opts.clone();
        let id = self
            .world
            .add_server(move |spec| server_config(&opts, spec.config()));
        self.note(format!("start new server {id:?}"));
        id
    }

    /// [`Nemesis::start_server`] whose gossip pool has `keys` instead of
    /// the world's.
    pub fn start_server_with_gossip_keys(&mut self, keys: Vec<Vec<u8>>) -> NodeId {
        let opts = self.opts.clone();
        let id = self
            .world
            .add_server_with_gossip_keys(move |spec| server_config(&opts, spec.config()), keys);
        self.note(format!("start new server {id:?} with its own gossip keys"));
        id
    }

    pub(crate) fn rng_range(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.range(lo, hi)
    }

    /// Servers that are members and not removed.
    pub fn live_servers(&self) -> Vec<NodeId> {
        self.world
            .servers()
            .into_iter()
            .filter(|id| !self.removed.contains(id))
            .collect()
    }

    fn pick(&mut self, from: &[NodeId]) -> Option<NodeId> {
        if from.is_empty() {
            return None;
        }
        Some(from[self.rng.range(0, from.len() as u64) as usize])
    }

    /// The leader with the highest term among running servers.
    pub fn leader(&self) -> Option<NodeId> {
        self.world
            .leaders()
            .into_iter()
            .max_by_key(|(_, t)| *t)
            .map(|(id, _)| id)
    }

    /// Wait (in simulated time) for a leader, at most `within`.
    /// Whether `id` is up and believes it leads.
    pub fn still_leads(&self, id: NodeId) -> bool {
        self.world
            .with_server(id, |s| s.role() == Role::Leader)
            .unwrap_or(false)
    }

    pub async fn wait_for_leader(&self, within: Duration) -> Option<NodeId> {
        let end = now() + within;
        while now() < end {
            if let Some(l) = self.leader() {
                let ready = self
                    .world
                    .with_server(l, |s| s.raft().committed_in_term())
                    .unwrap_or(false);
                if ready {
                    return Some(l);
                }
            }
            sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Wait for any server to win an election (its no-op may be uncommitted).
    pub async fn wait_for_any_leader(&self, within: Duration) -> Option<NodeId> {
        let end = now() + within;
        while now() < end {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            sleep(Duration::from_millis(2)).await;
        }
        None
    }

    fn election_max(&self) -> Duration {
        self.opts.election().1
    }

    /// Restart killed servers, resume paused ones and restore slow disks
    /// whose time has come (all of them with `all`).
    fn wake_due(&mut self, all: bool) {
        let t = now();
        let due = |m: &BTreeMap<NodeId, madsim::time::Instant>| -> Vec<NodeId> {
            m.iter()
                .filter(|(_, at)| all || **at <= t)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in due(&self.slow) {
            self.slow.remove(&id);
            self.world.set_fsync_latency(id, None);
            self.note(format!("disk of {id:?} back to normal"));
        }
        for id in due(&self.gossip_blocked) {
            self.gossip_blocked.remove(&id);
            self.world.block_gossip(id, false);
            self.note(format!("gossip of {id:?} unblocked"));
        }
        for id in due(&self.killed) {
            self.killed.remove(&id);
            self.world.restart(id);
            self.note(format!("restart {id:?}"));
        }
        for id in due(&self.paused) {
            self.paused.remove(&id);
            self.world.resume(id);
            self.note(format!("resume {id:?}"));
        }
    }

    /// Random faults for `duration` of simulated time.
    pub async fn random_faults(&mut self, duration: Duration, history: &SharedHistory) {
        let end = now() + duration;
        while now() < end {
            let gap = self.rng.range(1, 2 * self.opts.fault_every_ms.max(1));
            sleep(Duration::from_millis(gap)).await;
            self.wake_due(false);
            let m = &self.opts.faults;
            let total: u64 = Fault::ALL.iter().map(|f| m.weight(*f)).sum();
            if total == 0 {
                continue;
            }
            let mut roll = self.rng.range(0, total);
            let mut which = Fault::ALL[0];
            for fault in Fault::ALL {
                let w = m.weight(fault);
                if roll < w {
                    which = fault;
                    break;
                }
                roll -= w;
            }
            match which {
                Fault::PartitionHalves => self.partition_halves(),
                Fault::IsolateLeader => self.isolate_leader(),
                Fault::IsolateOne => self.isolate_one(),
                Fault::OneWay => self.one_way(),
                Fault::Crash => self.crash_one(false),
                Fault::CrashLeader => self.crash_one(true),
                Fault::Pause => self.pause_one(),
                Fault::Membership => self.membership_change().await,
                Fault::Heal => self.heal(),
                Fault::CrashAll => self.crash_all(),
                Fault::LeaderChurn => self.leader_churn().await,
                Fault::SlowDisk => self.slow_disk(),
                Fault::Hints => self.false_hints(),
                Fault::LeaseWindow => self.lease_window(history).await,
                Fault::GossipBlock => self.gossip_block(),
            }
        }
    }

    /// Blocks the gossip port of one to all-but-one of the servers for
    /// 8-20 s (longer than the LAN pool takes to declare them failed), while
    /// their Raft traffic still flows.
    pub fn gossip_block(&mut self) {
        let mut servers = self.live_servers();
        for i in (1..servers.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            servers.swap(i, j);
        }
        if servers.len() < 2 {
            return;
        }
        let k = self.rng.range(1, servers.len() as u64) as usize;
        let span = Duration::from_millis(self.rng.range(8_000, 20_000));
        for &id in &servers[..k] {
            self.world.block_gossip(id, true);
            self.gossip_blocked.insert(id, now() + span);
        }
        self.note(format!("block gossip of {:?} for {span:?}", &servers[..k]));
    }

    pub fn heal(&mut self) {
        self.world.heal();
        self.gossip_blocked.clear();
        self.note("heal".into());
    }

    pub fn partition_halves(&mut self) {
        let mut servers = self.live_servers();
        // Fisher–Yates with the nemesis's own RNG.
        for i in (1..servers.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            servers.swap(i, j);
        }
        if servers.len() < 2 {
            return;
        }
        let cut = self.rng.range(1, servers.len() as u64) as usize;
        let (a, b) = servers.split_at(cut);
        self.world.partition(&[a.to_vec(), b.to_vec()]);
        self.note(format!("partition {a:?} | {b:?}"));
    }

    pub fn isolate_leader(&mut self) {
        if let Some(l) = self.leader() {
            self.world.isolate(l);
            self.note(format!("isolate leader {l:?}"));
        }
    }

    /// Hints that are not the truth of a crash: either the leader is cut off
    /// and its connections reset (every other server is told it is gone
    /// while it still serves its clients), or one follower is told a
    /// healthy leader is gone.
    pub fn false_hints(&mut self) {
        let Some(l) = self.leader() else {
            return;
        };
        let others: Vec<NodeId> = self
            .live_servers()
            .into_iter()
            .filter(|id| *id != l)
            .collect();
        if self.rng.chance(1, 2) {
            self.isolate_with_resets(l);
        } else if let Some(f) = self.pick(&others) {
            self.world.hint_unreachable(f, l);
            self.note(format!("false hint to {f:?}: {l:?} is gone"));
        }
    }

    /// A stale-lease window: the leader is cut off from the other servers
    /// but not from the clients (in two runs of three with connection
    /// resets, so the others elect early, after its lease), and for one to
    /// two and a half maximum election timeouts the nemesis writes through
    /// the newest other leader and reads `k0` through the old one in default
    /// mode, which it serves from its lease; then everything heals. A read
    /// it serves after a new leader committed a write, from a lease that
    /// outlasted what the followers promised, is a linearizability failure.
    pub async fn lease_window(&mut self, history: &SharedHistory) {
        let Some(l) = self.leader() else {
            return;
        };
        if self.killed.contains_key(&l) || self.paused.contains_key(&l) {
            return;
        }
        if self.rng.chance(3, 4) {
            self.isolate_with_resets(l);
        } else {
            self.world.isolate(l);
            self.note(format!("isolate leader {l:?} (lease window)"));
        }
        let span = self.election_max() * self.rng.range(2, 6) as u32 / 2;
        write_elsewhere_read_there(self, l, ReadMode::Default, span, history).await;
        self.heal();
    }

    /// Cut `leader` off from the other servers and tell each of them it is
    /// gone, as connection resets would.
    pub fn isolate_with_resets(&mut self, leader: NodeId) {
        self.world.isolate(leader);
        for id in self.live_servers() {
            if id != leader {
                self.world.hint_unreachable(id, leader);
            }
        }
        self.note(format!("isolate leader {leader:?} with connection resets"));
    }

    /// The lock scenario's faults for `safety_s`: every 1–4 s one of a
    /// server isolated, the leader or another server killed (restarted
    /// later), the servers split in halves, a lock client cut off from
    /// every server, or everything healed.
    pub async fn lock_faults(&mut self) {
        let end = now() + Duration::from_secs(self.opts.safety_s);
        while now() < end {
            sleep(Duration::from_millis(self.rng.range(1000, 4000))).await;
            self.wake_due(false);
            match self.rng.range(0, 9) {
                0 => self.isolate_one(),
                // The server whose node the lock holder's session is on:
                // gossip fails it and the session is invalidated under
                // its holder, which is what the lock delay is for.
                6 => self.isolate_lock_holders_node(),
                // Or its serfHealth turned critical by a catalog write (a
                // health check failing): the same invalidation, at once.
                7 | 8 => self.fail_lock_holders_check().await,
                1 => self.crash_one(true),
                2 => self.crash_one(false),
                3 => self.partition_halves(),
                4 => {
                    let clients = self.lock_clients.clone();
                    if let Some(&c) =
                        clients.get(self.rng.range(0, clients.len().max(1) as u64) as usize)
                    {
                        for id in self.live_servers() {
                            self.world.cut_client(c, id);
                        }
                        self.note(format!("cut lock client {c:?} off"));
                    }
                }
                _ => self.heal(),
            }
        }
    }

    /// The node of the session holding the lock key, as the leader sees it.
    fn lock_holders_node(&self) -> Option<String> {
        let leader = self.leader()?;
        self.world
            .with_server(leader, |s| {
                let fsm = s.fsm();
                let session = fsm.kv_lock_holder(crate::locks::LOCK_KEY)?;
                Some(fsm.session(session)?.node.clone())
            })
            .flatten()
    }

    async fn fail_lock_holders_check(&mut self) {
        let Some(node) = self.lock_holders_node() else {
            return;
        };
        let Some(leader) = self.leader() else {
            return;
        };
        let reg = tern_core::fsm::Register {
            id: String::new(),
            node: node.clone(),
            address: String::new(),
            datacenter: "dc1".into(),
            tagged_addresses: None,
            node_meta: None,
            service: None,
            checks: vec![tern_core::fsm::Check {
                node: node.clone(),
                check_id: "serfHealth".into(),
                name: "Serf Health Status".into(),
                status: "critical".into(),
                notes: String::new(),
                output: "failed by the nemesis".into(),
                service_id: String::new(),
                service_name: String::new(),
                service_tags: None,
                kind: String::new(),
                definition: Default::default(),
                create_index: 0,
                modify_index: 0,
            }],
            skip_node_update: true,
        };
        let op = Op::Catalog(tern_core::rpc::CatalogOp::Register(Box::new(reg)));
        let r = self
            .operator
            .call(
                leader,
                workload::request(op, ReadMode::Default),
                Duration::from_secs(2),
            )
            .await;
        self.note(format!(
            "serfHealth of {node} (the lock holder's session node) set critical: {}",
            matches!(r, Ok(Ok(_)))
        ));
    }

    fn isolate_lock_holders_node(&mut self) {
        let Some(node) = self.lock_holders_node() else {
            return;
        };
        let target = self.live_servers().into_iter().find(|id| {
            self.world
                .with_server(*id, |s| s.config().node_name.0 == node)
                .unwrap_or(false)
        });
        if let Some(id) = target {
            self.world.isolate(id);
            self.note(format!("isolate {id:?}, the lock holder's session node"));
        }
    }

    pub fn isolate_one(&mut self) {
        let servers = self.live_servers();
        if let Some(id) = self.pick(&servers) {
            self.world.isolate(id);
            self.note(format!("isolate {id:?}"));
        }
    }

    pub fn one_way(&mut self) {
        let servers = self.live_servers();
        let (Some(a), Some(b)) = (self.pick(&servers), self.pick(&servers)) else {
            return;
        };
        if a != b {
            self.world.clog_one_way(a, b);
            self.note(format!("clog {a:?} -> {b:?}"));
        }
    }

    pub fn crash_one(&mut self, leader: bool) {
        let target = if leader {
            self.leader()
        } else {
            let up: Vec<NodeId> = self
                .live_servers()
                .into_iter()
                .filter(|id| !self.killed.contains_key(id) && !self.paused.contains_key(id))
                .collect();
            self.pick(&up)
        };
        let Some(id) = target else {
            return;
        };
        if self.killed.contains_key(&id) || self.paused.contains_key(&id) {
            return;
        }
        self.world.kill(id);
        let down = Duration::from_millis(self.rng.range(10, 4 * self.opts.election_ms.1));
        self.killed.insert(id, now() + down);
        self.note(format!("kill {id:?} for {down:?}"));
    }

    /// Disks turn slow for a while (fsync 20-300 ms): one server's, or
    /// every follower's at once while the leader's stays fast, so that acks
    /// race ahead of durability on a majority.
    pub fn slow_disk(&mut self) {
        let lo = self.rng.range(20, 100);
        let hi = lo + self.rng.range(0, 200);
        let until = now() + Duration::from_millis(self.rng.range(500, 4000));
        let targets: Vec<NodeId> = if self.rng.chance(1, 2) {
            let Some(l) = self.leader() else {
                return;
            };
            self.live_servers()
                .into_iter()
                .filter(|id| *id != l)
                .collect()
        } else {
            let servers = self.live_servers();
            self.pick(&servers).into_iter().collect()
        };
        for id in &targets {
            self.world.set_fsync_latency(
                *id,
                Some((Duration::from_millis(lo), Duration::from_millis(hi))),
            );
            self.slow.insert(*id, until);
        }
        self.note(format!("disks of {targets:?} slow: fsync {lo}..{hi} ms"));
    }

    /// Power loss of the whole datacenter: every server dies at once and
    /// loses what it had not fsynced.
    pub fn crash_all(&mut self) {
        let up: Vec<NodeId> = self
            .live_servers()
            .into_iter()
            .filter(|id| !self.killed.contains_key(id))
            .collect();
        for id in &up {
            self.paused.remove(id);
            self.world.kill(*id);
            let down = Duration::from_millis(self.rng.range(10, 2 * self.opts.election_ms.1));
            self.killed.insert(*id, now() + down);
        }
        self.note(format!("power loss: kill {up:?}"));
    }

    /// A flapping leader: kill each new leader shortly after it wins, a few
    /// times, restarting it soon after.
    pub async fn leader_churn(&mut self) {
        let rounds = self.rng.range(3, 10);
        for _ in 0..rounds {
            let Some(l) = self.wait_for_any_leader(self.election_max() * 4).await else {
                return;
            };
            let after = self.rng.range(0, 60);
            sleep(Duration::from_millis(after)).await;
            if self.killed.contains_key(&l) || self.paused.contains_key(&l) {
                continue;
            }
            self.world.kill(l);
            let down = Duration::from_millis(self.rng.range(10, 2 * self.opts.election_ms.1));
            self.killed.insert(l, now() + down);
            self.note(format!(
                "churn: kill leader {l:?} {after}ms after checking, for {down:?}"
            ));
            self.wake_due(false);
        }
    }

    pub fn pause_one(&mut self) {
        let up: Vec<NodeId> = self
            .live_servers()
            .into_iter()
            .filter(|id| !self.killed.contains_key(id) && !self.paused.contains_key(id))
            .collect();
        let Some(id) = self.pick(&up) else {
            return;
        };
        self.world.pause(id);
        let span = Duration::from_millis(self.rng.range(10, 3 * self.opts.election_ms.1));
        self.paused.insert(id, now() + span);
        self.note(format!("pause {id:?} for {span:?}"));
    }

    /// Voters and non-voters in the current leader's configuration.
    fn configuration(&self) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
        let l = self.leader()?;
        self.world.with_server(l, |s| {
            let m = s.membership();
            let voters: Vec<NodeId> = m.voters().collect();
            let nonvoters = m
                .servers
                .keys()
                .filter(|id| !m.is_voter(**id))
                .copied()
                .collect();
            (voters, nonvoters)
        })
    }

    /// One step of membership churn: promote a non-voter, remove a voter, or
    /// add a new server as a non-voter.
    pub async fn membership_change(&mut self) {
        let Some((voters, nonvoters)) = self.configuration() else {
            return;
        };
        // Never a server this nemesis stopped for good: the leader's
        // reconciliation may have added it back as a non-voter while gossip
        // still called it alive, and promoting it makes a dead voter that a
        // later removal of a live one can leave in the majority for ever
        // (seed 8228 of the 10,000-seed sweep: {n0002 dead, n0003}).
        // Autopilot promotes only healthy servers; an operator would not
        // promote a server they decommissioned.
        let promotable = nonvoters.iter().find(|id| !self.removed.contains(id));
        if let Some(id) = promotable.copied() {
            self.promote(id).await;
        } else if voters.len() > 3 || (voters.len() == 3 && self.rng.chance(1, 3)) {
            let v = self.pick(&voters).expect("voters");
            self.remove(v).await;
        } else if self.world.servers().len() < 8 {
            self.add_nonvoter().await;
        }
    }

    /// Start a new, empty server and add it as a non-voter.
    pub async fn add_nonvoter(&mut self) -> Option<NodeId> {
        let opts = self.opts.clone();
        let id = self
            .world
            .add_server(move |spec| server_config(&opts, spec.config()));
        let address = self.world.address(id)?;
        let name = NodeName(format!("s{}", self.world.servers().len()));
        // Its gossip pool joins the others at once, and the leader's
        // reconciliation adds it as a non-voter (Raft protocol 3), as
        // Consul's does; the operator's add is the fallback.
        if self.joined_via_gossip(id, Duration::from_secs(5)).await {
            self.note(format!("add non-voter {id:?}: joined through gossip"));
            return Some(id);
        }
        let ok = self
            .operate(Op::RaftAddNonvoter { id, name, address })
            .await;
        let ok = ok || self.joined_via_gossip(id, Duration::from_millis(1)).await;
        self.note(format!("add non-voter {id:?}: {ok}"));
        ok.then_some(id)
    }

    /// Whether the leader's configuration holds `id` within `within`.
    pub async fn joined_via_gossip(&self, id: NodeId, within: Duration) -> bool {
        let end = now() + within;
        loop {
            let member = self.leader().is_some_and(|l| {
                self.world
                    .with_server(l, |s| s.membership().contains(id))
                    .unwrap_or(false)
            });
            if member {
                return true;
            }
            if now() >= end {
                return false;
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `at`'s configuration no longer holds `gone` (a removed
    /// server killed for good: while gossip still calls it alive the
    /// leader's reconciliation may add it back as a non-voter, and once
    /// gossip calls it failed autopilot's cleanup removes it).
    pub async fn until_removed(
        &self,
        at: impl Fn(&Nemesis) -> Option<NodeId>,
        gone: NodeId,
        within: Duration,
    ) -> bool {
        let end = now() + within;
        loop {
            let out = at(self).is_some_and(|a| {
                self.world
                    .with_server(a, |s| !s.membership().contains(gone))
                    .unwrap_or(false)
            });
            if out {
                return true;
            }
            if now() >= end {
                return false;
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn promote(&mut self, id: NodeId) -> bool {
        let ok = self.operate(Op::RaftPromote { id }).await;
        self.note(format!("promote {id:?}: {ok}"));
        ok
    }

    pub async fn remove(&mut self, id: NodeId) -> bool {
        let ok = self
            .operate(Op::RaftRemovePeer {
                id: Some(id),
                address: None,
            })
            .await;
        self.note(format!("remove {id:?}: {ok}"));
        if ok {
            // It is out of the configuration: stop it for good.
            self.killed.remove(&id);
            self.paused.remove(&id);
            self.removed.insert(id);
            self.world.remove_node(id);
        }
        ok
    }

    /// An operator request through any live server; true once it succeeded.
    async fn operate(&mut self, op: Op) -> bool {
        for _ in 0..3 {
            let servers = self.live_servers();
            let Some(server) = self.pick(&servers) else {
                return false;
            };
            let req = workload::request(op.clone(), ReadMode::Default);
            match self
                .operator
                .call(server, req, Duration::from_secs(3))
                .await
            {
                Ok(Ok(r)) if r.body == ReplyBody::Done => return true,
                Ok(Err(tern_core::rpc::RpcError::BadRequest(_))) => return false,
                _ => {}
            }
        }
        false
    }

    /// End of the safety phase: heal the network, restart and resume everyone.
    pub async fn heal_all(&mut self) {
        self.world.heal();
        self.world.set_loss(0.0);
        self.wake_due(true);
        for id in self.live_servers() {
            if matches!(self.world.status(id), Some(NodeStatus::Killed)) {
                self.world.restart(id);
            }
        }
        self.note("heal all".into());
    }
}

/// A named scenario: a scripted fault schedule instead of random faults.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// An operator's leave of the leader (Consul's `TestServer_LeaveLeader`):
    /// it hands leadership over, fails fast for the drain time, stops, and
    /// is started again.
    LeaderLeaves,
    LeaderIsolated,
    MinorityPartition,
    AsymmetricPartition,
    LeaderCrashMidReplication,
    CrashBetweenAppendAndFsync,
    MembershipWhilePartitioned,
    RemoveLeader,
    SnapshotInstall,
    ConsistentReadDuringPartition,
    LeaderIsolatedWithResets,
    /// Consul's `TestAutopilot_PromoteNonVoter` under the clients' load: a
    /// new server joins as a non-voter and autopilot, not the nemesis,
    /// promotes it once it has been healthy for the stabilization time.
    AutopilotPromotes,
    /// Consul's `TestAutopilot_CleanupDeadServer`: a follower dies for
    /// good; gossip fails it and autopilot removes it.
    CleanupDeadServer,
    /// Consul's `TestAutopilot_CleanupDeadNonvoter`: a new server joins as a
    /// non-voter and dies before promotion; autopilot removes it.
    CleanupDeadNonvoter,
    /// Consul's `TestServer_Leave`: a follower leaves; the leader removes it
    /// on its gossip `left`, and it stops.
    ServerLeave,
    /// Servers 4 and 5 join a running 3-server cluster through gossip only
    /// and autopilot makes them voters.
    AddServersThroughGossip,
    /// Consul's `TestAutopilot_RollingUpdate`: every server is replaced by a
    /// new one, one at a time (new joins and is promoted, then an old one leaves).
    RollingUpdate,
    /// Consul #3611: the same replacement with each old server killed as soon
    /// as its replacement is a voter; promotion to an even voter count keeps quorum.
    RollingUpdate3611,
    /// Consul #8118: each server rebooted faster than the stabilization time.
    QuickReboots8118,
    /// The headline: a rolling restart of every server (leave, start) under
    /// load from retrying clients, with zero client-visible errors.
    RollingRestart,
    /// Consul's `TestLeader_ChangeServerID`: a new node id at a follower's address.
    ChangeServerId,
    /// Client-side retry across a leader loss: the leader is killed under
    /// load through a client agent; no read fails, and only writes in flight
    /// on the dead leader's connections may end with an unknown outcome.
    ClientRetryLeaderLoss,
    /// Consul's `TestRPC_NoLeader_Fail`: no quorum, so a call through a
    /// client agent fails with `No cluster leader` once its hold runs out.
    NoLeaderFail,
    /// Consul's `TestRPC_NoLeader_Retry`: a leader is elected during the
    /// hold, and the call succeeds.
    NoLeaderRetry,
    /// An operator's snapshot restore (`PUT /v1/snapshot`) through the log,
    /// with the leader killed halfway: the restore finishes through the next
    /// leader, every server ends with exactly the restored state, and the
    /// next write's index is past the snapshot's.
    SnapshotRestore,
    /// Issue 9: lock clients contend for one key with sessions while
    /// servers are isolated, killed (the leader too) and lock clients cut
    /// off; never two of them believe they hold it at once (`locks.rs`).
    LockMutualExclusion,
    /// Issue 9: local agents register, deregister and update services and
    /// checks, and an operator changes the catalog behind their backs,
    /// while servers are partitioned and killed; after healing every
    /// agent's node in the catalog matches the agent (`anti_entropy.rs`).
    AntiEntropy,
    /// Gossip encryption (issue 11): every server's pool seals with one
    /// key; the encrypted cluster runs as a plain one does, a server with
    /// another key never becomes a member, one with the key joins and is
    /// promoted.
    EncryptedGossip,
}

impl Scenario {
    pub const ALL: [Scenario; 28] = [
        Scenario::LeaderIsolated,
        Scenario::MinorityPartition,
        Scenario::AsymmetricPartition,
        Scenario::LeaderCrashMidReplication,
        Scenario::CrashBetweenAppendAndFsync,
        Scenario::MembershipWhilePartitioned,
        Scenario::RemoveLeader,
        Scenario::SnapshotInstall,
        Scenario::ConsistentReadDuringPartition,
        Scenario::LeaderIsolatedWithResets,
        Scenario::LeaderLeaves,
        Scenario::AutopilotPromotes,
        Scenario::CleanupDeadServer,
        Scenario::CleanupDeadNonvoter,
        Scenario::ServerLeave,
        Scenario::AddServersThroughGossip,
        Scenario::RollingUpdate,
        Scenario::RollingUpdate3611,
        Scenario::QuickReboots8118,
        Scenario::RollingRestart,
        Scenario::ChangeServerId,
        Scenario::ClientRetryLeaderLoss,
        Scenario::NoLeaderFail,
        Scenario::NoLeaderRetry,
        Scenario::SnapshotRestore,
        Scenario::LockMutualExclusion,
        Scenario::AntiEntropy,
        Scenario::EncryptedGossip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderIsolated => "leader-isolated",
            Scenario::MinorityPartition => "minority-partition",
            Scenario::AsymmetricPartition => "asymmetric-partition",
            Scenario::LeaderCrashMidReplication => "leader-crash-mid-replication",
            Scenario::CrashBetweenAppendAndFsync => "crash-between-append-and-fsync",
            Scenario::MembershipWhilePartitioned => "membership-while-partitioned",
            Scenario::RemoveLeader => "remove-leader",
            Scenario::SnapshotInstall => "snapshot-install",
            Scenario::ConsistentReadDuringPartition => "consistent-read-during-partition",
            Scenario::LeaderIsolatedWithResets => "leader-isolated-with-resets",
            Scenario::LeaderLeaves => "leader-leaves",
            Scenario::AutopilotPromotes => "autopilot-promotes",
            Scenario::CleanupDeadServer => "cleanup-dead-server",
            Scenario::CleanupDeadNonvoter => "cleanup-dead-nonvoter",
            Scenario::ServerLeave => "server-leave",
            Scenario::AddServersThroughGossip => "add-servers-through-gossip",
            Scenario::RollingUpdate => "rolling-update",
            Scenario::RollingUpdate3611 => "rolling-update-3611",
            Scenario::QuickReboots8118 => "quick-reboots-8118",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::ChangeServerId => "change-server-id",
            Scenario::ClientRetryLeaderLoss => "client-retry-leader-loss",
            Scenario::NoLeaderFail => "no-leader-fail",
            Scenario::NoLeaderRetry => "no-leader-retry",
            Scenario::SnapshotRestore => "snapshot-restore",
            Scenario::LockMutualExclusion => "lock-mutual-exclusion",
            Scenario::AntiEntropy => "anti-entropy",
            Scenario::EncryptedGossip => "encrypted-gossip",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Adjust the seed's options to what the scenario needs.
    pub fn shape(self, opts: &mut Options) {
        opts.loss_permille = 0;
        opts.clients = opts.clients.max(3);
        match self {
            Scenario::MinorityPartition | Scenario::MembershipWhilePartitioned => opts.servers = 5,
            Scenario::AddServersThroughGossip
            | Scenario::EncryptedGossip
            | Scenario::RollingUpdate
            | Scenario::RollingUpdate3611
            | Scenario::RollingRestart
            | Scenario::ServerLeave
            | Scenario::CleanupDeadNonvoter
            | Scenario::ChangeServerId
            | Scenario::ClientRetryLeaderLoss
            | Scenario::NoLeaderFail
            | Scenario::NoLeaderRetry => opts.servers = 3,
            Scenario::SnapshotRestore => {
                opts.servers = 3;
                // A restore replaces every key, which the KV clients' model
                // does not know; the scenario checks the state itself.
                opts.clients = 0;
            }
            Scenario::LockMutualExclusion | Scenario::AntiEntropy => {
                opts.servers = 3;
                opts.safety_s = opts.safety_s.max(30);
            }
            Scenario::CrashBetweenAppendAndFsync => {
                opts.fsync_ms = (5, 40);
            }
            Scenario::SnapshotInstall => {
                opts.snapshot_threshold = 20;
                opts.snapshot_interval_ms = 0;
                opts.trailing_logs = 0;
            }
            Scenario::LeaderIsolatedWithResets => {
                // A long lease and frequent heartbeats: the old leader keeps
                // serving reads from its lease for most of the election
                // timeout, which is when a new leader must not exist yet.
                opts.lease_permille = 1000;
                opts.heartbeat_ms = (opts.election_ms.0 / 8).max(1);
            }
            _ => {}
        }
    }

    /// Play the scenario; what it saw go wrong beyond the global checks is
    /// returned.
    pub async fn play(self, n: &mut Nemesis, history: &SharedHistory) -> Vec<String> {
        let mut failures = Vec::new();
        let em = n.election_max();
        let Some(leader) = n.wait_for_leader(Duration::from_secs(20)).await else {
            failures.push(format!("{}: no leader to start from", self.name()));
            return failures;
        };
        sleep(Duration::from_secs(1)).await;
        match self {
            Scenario::LeaderIsolated
            | Scenario::ConsistentReadDuringPartition
            | Scenario::LeaderIsolatedWithResets => {
                // Clients still reach the old leader; only servers are cut off.
                if self == Scenario::LeaderIsolatedWithResets {
                    n.isolate_with_resets(leader);
                } else {
                    n.world.isolate(leader);
                    n.note(format!("isolate leader {leader:?}"));
                }
                if self == Scenario::ConsistentReadDuringPartition {
                    // Write through the majority, then read consistently
                    // through the old leader: the read must never return
                    // the value the write replaced.
                    write_elsewhere_read_there(n, leader, ReadMode::Consistent, em * 4, history)
                        .await;
                } else if self == Scenario::LeaderIsolatedWithResets {
                    // The others were told the leader is gone and elect
                    // another after its lease; a default read through the
                    // old leader (served from its lease) must still never
                    // miss a write the new leader committed.
                    write_elsewhere_read_there(n, leader, ReadMode::Default, em * 4, history).await;
                } else {
                    sleep(em * 4).await;
                }
                match n.leader() {
                    Some(l) if l != leader => {}
                    other => failures.push(format!(
                        "{}: no new leader while {leader:?} was isolated (leader now {other:?})",
                        self.name()
                    )),
                }
                if n.still_leads(leader) {
                    failures.push(format!(
                        "{}: isolated {leader:?} still believes it leads after 4 election timeouts (check-quorum)",
                        self.name()
                    ));
                }
                n.heal();
                sleep(Duration::from_secs(2)).await;
            }
            Scenario::MinorityPartition => {
                let servers = n.live_servers();
                let others: Vec<NodeId> =
                    servers.iter().copied().filter(|s| *s != leader).collect();
                let minority = vec![leader, others[0]];
                let majority: Vec<NodeId> = others[1..].to_vec();
                n.world.partition(&[minority.clone(), majority.clone()]);
                n.note(format!("partition {minority:?} | {majority:?}"));
                sleep(em * 4).await;
                let l = n.leader();
                if !l.is_some_and(|l| majority.contains(&l)) {
                    failures.push(format!(
                        "{}: the majority elected no leader ({l:?})",
                        self.name()
                    ));
                }
                n.heal();
                sleep(Duration::from_secs(2)).await;
            }
            Scenario::AsymmetricPartition => {
                // The leader's messages arrive; nothing comes back to it.
                for s in n.live_servers() {
                    if s != leader {
                        n.world.clog_one_way(s, leader);
                    }
                }
                n.note(format!("everyone -> {leader:?} clogged"));
                sleep(em * 5).await;
                if n.still_leads(leader) {
                    failures.push(format!(
                        "{}: {leader:?} hears no follower but still leads (check-quorum)",
                        self.name()
                    ));
                }
                n.heal();
                sleep(Duration::from_secs(2)).await;
            }
            Scenario::LeaderCrashMidReplication => {
                for round in 0..4 {
                    let Some(l) = n.wait_for_leader(Duration::from_secs(20)).await else {
                        failures.push(format!("{}: no leader in round {round}", self.name()));
                        break;
                    };
                    let wait = n.rng.range(1, 300);
                    sleep(Duration::from_millis(wait)).await;
                    n.world.kill(l);
                    n.note(format!("kill leader {l:?}"));
                    sleep(em * 2).await;
                    n.world.restart(l);
                    n.note(format!("restart {l:?}"));
                }
            }
            Scenario::CrashBetweenAppendAndFsync => {
                // Writes keep coming; servers die while their last appends are
                // still being fsynced: one at a time, and all at once.
                for round in 0..12 {
                    let wait = n.rng.range(1, 400);
                    sleep(Duration::from_millis(wait)).await;
                    let unsynced: u64 = n
                        .live_servers()
                        .iter()
                        .map(|id| n.world.disk_len(*id).map_or(0, |(_, u)| u as u64))
                        .sum();
                    if round % 2 == 0 {
                        n.crash_all();
                    } else {
                        n.crash_one(false);
                    }
                    n.note(format!("  ({unsynced} unsynced bytes in the cluster)"));
                    sleep(Duration::from_millis(n.rng.range(50, 1000))).await;
                    n.wake_due(true);
                    let _ = n.wait_for_leader(em * 8).await;
                }
            }
            Scenario::MembershipWhilePartitioned => {
                let Some(new) = n.add_nonvoter().await else {
                    failures.push(format!("{}: could not add a non-voter", self.name()));
                    return failures;
                };
                sleep(Duration::from_secs(2)).await;
                // Cut one old voter off, then promote and remove while it is away.
                let old: Vec<NodeId> = n
                    .live_servers()
                    .into_iter()
                    .filter(|s| *s != new && *s != leader)
                    .collect();
                let cut = old[0];
                n.world.isolate(cut);
                n.note(format!("isolate {cut:?}"));
                if !n.promote(new).await {
                    failures.push(format!("{}: promote {new:?} failed", self.name()));
                }
                sleep(Duration::from_secs(1)).await;
                let victim = old[1];
                if !n.remove(victim).await {
                    failures.push(format!("{}: remove {victim:?} failed", self.name()));
                }
                sleep(Duration::from_secs(1)).await;
                n.heal();
                sleep(Duration::from_secs(3)).await;
                let caught_up = n
                    .until_removed(|_| Some(cut), victim, Duration::from_secs(40))
                    .await;
                if !caught_up {
                    failures.push(format!(
                        "{}: {cut:?} did not learn that {victim:?} was removed",
                        self.name()
                    ));
                }
            }
            Scenario::RemoveLeader => {
                if !n.remove(leader).await {
                    failures.push(format!(
                        "{}: removing leader {leader:?} failed",
                        self.name()
                    ));
                }
                match n.wait_for_leader(Duration::from_secs(20)).await {
                    Some(l) if l != leader => {
                        let voter = n
                            .world
                            .with_server(l, |s| s.membership().is_voter(leader))
                            .unwrap_or(true);
                        // The removed leader is stopped for good; gossip may
                        // still call it alive for a few seconds, so the new
                        // leader may add it back as a non-voter until gossip
                        // calls it failed and autopilot cleans it up.
                        let gone = n
                            .until_removed(|n| n.leader(), leader, Duration::from_secs(40))
                            .await;
                        if voter || !gone {
                            failures.push(format!(
                                "{}: {leader:?} still in the configuration (voter: {voter})",
                                self.name()
                            ));
                        }
                    }
                    other => failures.push(format!(
                        "{}: no new leader after removing the leader ({other:?})",
                        self.name()
                    )),
                }
            }
            Scenario::AutopilotPromotes => {
                let Some(new) = n.add_nonvoter().await else {
                    failures.push(format!("{}: could not add a non-voter", self.name()));
                    return failures;
                };
                // Stabilization (10 s) + one autopilot round (10 s) + one
                // health sample (2 s), with room for a slow catch-up.
                let end = now() + Duration::from_secs(40);
                let mut voter = false;
                while !voter && now() < end {
                    sleep(Duration::from_millis(500)).await;
                    voter = n.leader().is_some_and(|l| {
                        n.world
                            .with_server(l, |s| s.membership().is_voter(new))
                            .unwrap_or(false)
                    });
                }
                let by_autopilot = n.world.events().iter().any(|(_, e)| {
                    matches!(e, WorldEvent::Core { event: Event::Autopilot(AutopilotEvent::Promoting { id }), .. } if *id == new)
                });
                if !voter || !by_autopilot {
                    failures.push(format!(
                        "{}: {new:?} was not promoted by autopilot within 40 s (voter: {voter})",
                        self.name()
                    ));
                }
            }
            Scenario::LeaderLeaves => {
                n.world.leave(leader);
                n.note(format!("leave {leader:?}"));
                // Leadership moves at once (TimeoutNow), well within the drain.
                sleep(em * 2).await;
                match n.leader() {
                    Some(l) if l != leader => {}
                    other => failures.push(format!(
                        "{}: leadership did not move off the leaving {leader:?} (leader now {other:?})",
                        self.name()
                    )),
                }
                // Its gossip leave tells the new leader it left, and the
                // leader's reconciliation removes it; it stops once removed
                // (or once waiting for its removal times out).
                let grace = Duration::from_nanos(tern_core::server::RAFT_REMOVE_GRACE.as_nanos());
                sleep(crate::run::LEAVE_DRAIN.max(grace)).await;
                if n.world.status(leader) != Some(NodeStatus::Left) {
                    failures.push(format!(
                        "{}: {leader:?} did not stop after its drain and removal grace: {:?}",
                        self.name(),
                        n.world.status(leader)
                    ));
                }
                // Started again, it is a follower of the new leader.
                n.world.restart(leader);
                n.note(format!("restart {leader:?}"));
            }
            Scenario::CleanupDeadServer => {
                failures.extend(crate::membership::cleanup_dead_server(n, leader).await)
            }
            Scenario::CleanupDeadNonvoter => {
                failures.extend(crate::membership::cleanup_dead_nonvoter(n).await)
            }
            Scenario::ServerLeave => {
                failures.extend(crate::membership::server_leave(n, leader).await)
            }
            Scenario::AddServersThroughGossip => {
                failures.extend(crate::membership::add_servers_through_gossip(n).await)
            }
            Scenario::RollingUpdate => failures.extend(
                crate::membership::rolling_update(n, crate::membership::Departure::Leave).await,
            ),
            Scenario::RollingUpdate3611 => failures.extend(
                crate::membership::rolling_update(n, crate::membership::Departure::Kill).await,
            ),
            Scenario::QuickReboots8118 => {
                failures.extend(crate::membership::quick_reboots(n).await)
            }
            Scenario::RollingRestart => {
                failures.extend(crate::membership::rolling_restart(n, history, false).await)
            }
            Scenario::ChangeServerId => {
                failures.extend(crate::membership::change_server_id(n, leader).await)
            }
            Scenario::ClientRetryLeaderLoss => failures.extend(
                crate::membership::client_retry_across_leader_loss(n, history, leader).await,
            ),
            Scenario::NoLeaderFail => {
                failures.extend(crate::membership::no_leader(n, leader, false).await)
            }
            Scenario::NoLeaderRetry => {
                failures.extend(crate::membership::no_leader(n, leader, true).await)
            }
            Scenario::SnapshotRestore => failures.extend(snapshot_restore(n, leader).await),
            Scenario::LockMutualExclusion | Scenario::AntiEntropy => n.lock_faults().await,
            Scenario::EncryptedGossip => {
                failures.extend(crate::membership::encrypted_gossip(n).await)
            }
            Scenario::SnapshotInstall => {
                let servers = n.live_servers();
                let follower = servers
                    .into_iter()
                    .find(|s| *s != leader)
                    .expect("a follower");
                n.world.kill(follower);
                n.note(format!("kill {follower:?}"));
                // The others write well past several snapshots.
                for i in 0..120 {
                    let _ = n
                        .operator
                        .call(
                            leader,
                            workload::put_request("bulk", &format!("b{i}")),
                            Duration::from_secs(2),
                        )
                        .await;
                }
                n.world.restart(follower);
                n.note(format!("restart {follower:?}"));
                sleep(Duration::from_secs(5)).await;
                let installed = n.world.events().iter().any(|(_, e)| {
                    matches!(e, WorldEvent::Core { node, event: Event::SnapshotInstalled { .. } } if *node == follower)
                });
                if !installed {
                    failures.push(format!(
                        "{}: {follower:?} never installed a snapshot",
                        self.name()
                    ));
                }
                let same = n.world.with_server(follower, |s| {
                    s.fsm().kv_get("bulk").map(|e| e.value.clone())
                });
                if same != Some(Some(b"b119".to_vec().into())) {
                    failures.push(format!(
                        "{}: {follower:?} did not catch up: {same:?}",
                        self.name()
                    ));
                }
            }
        }
        failures
    }
}

/// The `snapshot-restore` scenario (see [`Scenario::SnapshotRestore`]).
async fn snapshot_restore(n: &mut Nemesis, first_leader: NodeId) -> Vec<String> {
    use tern_core::fsm::{ApplyResult, Fsm, RestoreChunk, RestoreError};
    let name = Scenario::SnapshotRestore.name();
    let mut failures = Vec::new();
    // A key of the cluster's own, which the restore must remove.
    let _ = n
        .operator
        .call(
            first_leader,
            workload::put_request("before", "x"),
            Duration::from_secs(2),
        )
        .await;
    // The snapshot: 40 keys written at indexes up to 5000, far past this
    // cluster's log, so the index offset must carry it.
    let mut source = Fsm::new();
    for i in 0..40u64 {
        let cmd =
            tern_core::fsm::Command::Kv(tern_core::fsm::KvCommand::Set(tern_core::fsm::KvWrite {
                key: format!("restored/{i}"),
                flags: i,
                value: format!("value {i}").into_bytes().into(),
            }));
        source.apply(4961 + i, &cmd);
    }
    let bytes = source.snapshot();
    let chunk_bytes = 64;
    let mut id = 1u64;
    let mut offset = 0u64;
    let mut killed = None;
    let mut done = false;
    let deadline = now() + Duration::from_secs(120);
    while !done && now() < deadline {
        // Halfway, the leader dies.
        if killed.is_none() && offset as usize >= bytes.len() / 2 {
            if let Some(l) = n.leader() {
                n.world.kill(l);
                n.note(format!("kill {l:?} halfway through the restore"));
                killed = Some(l);
            }
        }
        let Some(leader) = n.wait_for_leader(Duration::from_secs(20)).await else {
            continue;
        };
        let end = (offset as usize + chunk_bytes).min(bytes.len());
        let chunk = RestoreChunk {
            id,
            offset,
            total: bytes.len() as u64,
            data: bytes[offset as usize..end].to_vec(),
        };
        let request = workload::request(Op::SnapshotRestore(chunk), ReadMode::Default);
        match n
            .operator
            .call(leader, request, Duration::from_secs(3))
            .await
        {
            Ok(Ok(reply)) => match reply.body {
                ReplyBody::Applied(ApplyResult::Restore(Ok(p))) => {
                    offset = p.received;
                    done = p.restored_index.is_some();
                }
                // The staged bytes were lost with a leader that had not
                // committed them, or a resend overtook them: start over.
                ReplyBody::Applied(ApplyResult::Restore(Err(
                    RestoreError::NotStarted { .. } | RestoreError::OutOfOrder { .. },
                ))) => {
                    id += 1;
                    offset = 0;
                }
                other => failures.push(format!("{name}: unexpected answer {other:?}")),
            },
            // Outcome unknown or refused for now: send the same chunk again
            // (a resent last chunk is not staged twice).
            Ok(Err(_)) | Err(_) => sleep(Duration::from_millis(200)).await,
        }
    }
    if !done {
        failures.push(format!("{name}: the restore never completed"));
        return failures;
    }
    if let Some(k) = killed {
        n.world.restart(k);
        n.note(format!("restart {k:?}"));
    }
    // A write after the restore records an index past the snapshot's.
    let Some(leader) = n.wait_for_leader(Duration::from_secs(20)).await else {
        failures.push(format!("{name}: no leader after the restore"));
        return failures;
    };
    let after = n
        .operator
        .call(
            leader,
            workload::put_request("after", "y"),
            Duration::from_secs(3),
        )
        .await;
    match after {
        Ok(Ok(reply)) if reply.index > 5000 => {}
        other => failures.push(format!(
            "{name}: the write after the restore answered {other:?}, not an index past 5000"
        )),
    }
    sleep(Duration::from_secs(5)).await;
    for s in n.live_servers() {
        let seen = n.world.with_server(s, |srv| {
            let f = srv.fsm();
            let restored = (0..40u64).all(|i| {
                f.kv_get(&format!("restored/{i}"))
                    .is_some_and(|e| e == source.kv_get(&format!("restored/{i}")).unwrap())
            });
            (
                restored,
                f.kv_get("before").is_none(),
                f.kv_get("after").map(|e| e.modify_index),
                f.restore_in_progress(),
            )
        });
        match seen {
            Some((true, true, Some(m), None)) if m > 5000 => {}
            other => failures.push(format!(
                "{name}: {s:?} holds (restored, before gone, after's index, staged) = {other:?}"
            )),
        }
    }
    failures
}

/// Write `k0` through the newest leader other than `old` as soon as there is
/// one, then read it through `old` with `mode`, again and again for `span`;
/// both go into the history, so the linearizability check sees any read that
/// misses a write acknowledged before it began.
async fn write_elsewhere_read_there(
    n: &mut Nemesis,
    old: NodeId,
    mode: ReadMode,
    span: Duration,
    history: &SharedHistory,
) {
    let leader = old;
    let end = now() + span;
    // Readers through the old leader all along, so that a read begins soon
    // after each write is acknowledged (the window may be a few ms wide).
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let client = n.operator.clone();
        let history = history.clone();
        readers.push(madsim::task::spawn(async move {
            sleep(Duration::from_millis(r)).await;
            while now() < end {
                let call = tern_io_sim::now().0;
                let answer = client
                    .call(
                        leader,
                        workload::request(Op::KvGet { key: "k0".into() }, mode),
                        Duration::from_millis(500),
                    )
                    .await;
                if let Ok(Ok(reply)) = answer {
                    if let ReplyBody::Entry(e) = reply.body {
                        let v = e.map(|e| String::from_utf8_lossy(&e.value).into_owned());
                        history.lock().unwrap().ops.push(Operation {
                            client: 1_000_001 + r,
                            key: "k0".into(),
                            input: KvInput::Get,
                            call,
                            ret: Some((tern_io_sim::now().0, KvOutput::Value(v))),
                        });
                    }
                }
                sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    while now() < end {
        // Write through the new leader as soon as there is one.
        let new_leader = n
            .world
            .leaders()
            .into_iter()
            .filter(|(id, _)| *id != leader)
            .max_by_key(|(_, t)| *t)
            .map(|(id, _)| id);
        let Some(via) = new_leader else {
            sleep(Duration::from_millis(5)).await;
            continue;
        };
        n.probes += 1;
        let value = format!("probe-{}", n.probes);
        let call = tern_io_sim::now().0;
        let w = n
            .operator
            .call(
                via,
                workload::put_request("k0", &value),
                Duration::from_secs(3),
            )
            .await;
        let ret = tern_io_sim::now().0;
        let output = match w {
            Ok(Ok(_)) => Some((ret, KvOutput::Ok)),
            Ok(Err(e)) if !matches!(e, tern_core::rpc::RpcError::Unknown(_)) => continue,
            _ => None,
        };
        history.lock().unwrap().written.insert(value.clone());
        history.lock().unwrap().ops.push(Operation {
            client: 1_000_000,
            key: "k0".into(),
            input: KvInput::Put { value },
            call,
            ret: output,
        });
        let call = tern_io_sim::now().0;
        let r = n
            .operator
            .call(
                leader,
                workload::request(Op::KvGet { key: "k0".into() }, mode),
                Duration::from_millis(500),
            )
            .await;
        if let Ok(Ok(reply)) = r {
            if let ReplyBody::Entry(e) = reply.body {
                let v = e.map(|e| String::from_utf8_lossy(&e.value).into_owned());
                history.lock().unwrap().ops.push(Operation {
                    client: 1_000_000,
                    key: "k0".into(),
                    input: KvInput::Get,
                    call,
                    ret: Some((tern_io_sim::now().0, KvOutput::Value(v))),
                });
            }
        }
    }
    for r in readers {
        let _ = r.await;
    }
}
