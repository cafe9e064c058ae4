//! One seeded run: seed → options → world → safety phase with faults →
//! liveness phase → checks.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use tern_core::autopilot::AutopilotEvent;
use tern_core::fsm::{ApplyResult, Command};
use tern_core::raft::EntryPayload;
use tern_core::rpc::ReplyBody;
use tern_core::{Action, Config, Duration as CoreDuration, Event};
use tern_io_sim::{run_seed, Client, NodeStatus, Observation, SimOptions, World};

use crate::checker::Checker;
use crate::linearizability::{self, CheckResult};
use crate::nemesis::{Nemesis, Scenario};
use crate::options::{Bug, Options};
use crate::workload::{self, History, SharedHistory};

/// What a run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub ok: bool,
    pub failures: Vec<String>,
    pub trace: u64,
    pub sim_s: f64,
    pub wall_ms: u128,
    /// Client operations: those in the linearizability history plus the
    /// blocking queries.
    pub ops: usize,
    /// Operations in the linearizability history.
    pub history_ops: usize,
    pub blocking: workload::BlockingCounts,
    /// Writes with an unknown outcome that no server ever appended (left
    /// out of the linearizability check: they never took effect).
    pub never_proposed: usize,
    pub acked_writes: u64,
    /// Acknowledged writes found committed at the index their reply named.
    pub acked_verified: usize,
    pub unknown: u64,
    pub max_commit: u64,
    /// Tombstone reaps seen applied (distinct log indexes; a lower bound, as
    /// an entry compacted in the step that applied it is not seen).
    pub tombstone_reaps: usize,
    /// Autopilot removals of a voter, and how many of those lost quorum
    /// only through changes younger than the leader could know of
    /// ([`AutopilotQuorum`]).
    pub autopilot_removals: usize,
    pub autopilot_excused: usize,
    pub faults: Vec<String>,
    /// The lock scenario: how many times a client believed it held the lock.
    pub lock_beliefs: usize,
    /// Of those, how many ended because the session was invalidated under
    /// its holder (where the lock delay is what keeps others out).
    pub lock_invalidated: usize,
    /// The anti-entropy scenario: changes the agents made, and catalog
    /// changes an operator made behind their backs.
    pub ae_changes: u64,
    pub ae_meddled: u64,
    /// Each server's Raft state at the end of the run, kept when a liveness
    /// check failed (what `chaos -v` prints to diagnose it).
    pub final_states: Vec<String>,
}

impl Outcome {
    /// The line the chaos binary prints for a seed.
    pub fn line(&self) -> String {
        format!(
            "seed={} result={} trace={:016x} sim_s={:.1} wall_ms={}",
            self.seed,
            if self.ok { "ok" } else { "FAIL" },
            self.trace,
            self.sim_s,
            self.wall_ms
        )
    }

    /// The one command that replays this run.
    pub fn replay_command(&self, bug: Option<Bug>, scenario: Option<Scenario>) -> String {
        let mut cmd = format!(
            "cargo run --release -p sim-tests --bin chaos -- --seed {}",
            self.seed
        );
        if let Some(b) = bug {
            cmd.push_str(&format!(" --bug {}", b.name()));
        }
        if let Some(s) = scenario {
            cmd.push_str(&format!(" --scenario {}", s.name()));
        }
        cmd
    }
}

/// The servers' `rpc_hold_timeout` in every run (Consul's is 7 s; its test
/// servers shorten it too).
pub const SERVER_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// The server configuration a run uses for one server.
pub fn server_config(opts: &Options, base: Config) -> Config {
    let mut c = base;
    let (min, max) = opts.election();
    c.election_timeout_min = min.into();
    c.election_timeout_max = max.into();
    c.heartbeat_interval = CoreDuration::from_millis(opts.heartbeat_ms.max(1));
    c.leader_lease_timeout = opts.lease().into();
    c.append_entries_max = opts.append_entries_max;
    c.inflight_appends_max = opts.inflight_appends_max;
    c.snapshot_threshold = opts.snapshot_threshold;
    c.snapshot_interval = CoreDuration::from_millis(opts.snapshot_interval_ms);
    c.trailing_logs = opts.trailing_logs;
    c.tombstone_ttl = CoreDuration::from_millis(opts.tombstone_ttl_ms);
    c.tombstone_ttl_granularity = CoreDuration::from_millis(opts.tombstone_granularity_ms);
    c.bugs = Bug::bugs(opts.bug);
    // Backpressure: about sixteen round trips' worth of uncommitted entries
    // (the clients keep dozens of requests in flight; with one entry per
    // message and one message in flight, an unbounded backlog would take
    // longer to commit than any client waits).
    c.pending_proposals_max =
        (16 * opts.append_entries_max * opts.inflight_appends_max).clamp(16, 1024);
    // Consul's test servers shorten the hold too; clients give up after 3 s.
    c.rpc_hold_timeout = CoreDuration::from_nanos(SERVER_HOLD.as_nanos() as u64);
    c.leave_drain_time = CoreDuration::from_millis(LEAVE_DRAIN.as_millis() as u64);
    // Autopilot's health asks for an answer within `last_contact_threshold`
    // (Consul's 200 ms, made for its 100 ms heartbeats); the simulator draws
    // slower heartbeats, links and disks, so the threshold covers two
    // heartbeats and a slow round trip: health is about lag, not timings.
    let slow_ms = 2 * opts.heartbeat_ms + 2 * opts.latency_ms.1 + opts.fsync_ms.1;
    c.autopilot.last_contact_threshold = c
        .autopilot
        .last_contact_threshold
        .max(CoreDuration::from_millis(slow_ms));
    // Autopilot acts within a run's short fault phase: health every 250 ms,
    // promotion and cleanup every second (Consul: 2 s and 10 s).
    c.server_health_interval = CoreDuration::from_millis(250);
    // Sessions: the lock scenario's TTL is shorter than Consul's 10 s
    // minimum so that sessions come and go within a run; a server that
    // restarted from a snapshot waits the scenario's longest lock delay.
    c.session_ttl_min = CoreDuration::from_secs(1);
    c.lock_delay_unknown = CoreDuration::from_nanos(lock_spec(opts).lock_delay.as_nanos() as u64);
    c.autopilot_interval = CoreDuration::from_secs(1);
    // Dead-server cleanup is on, as Consul's default: every server runs its
    // LAN gossip pool (io-sim/src/gossip.rs), so autopilot sees failed
    // servers as gossip says, and a server cleanup removed that comes back
    // is alive in gossip again and the leader's reconciliation re-adds it
    // as a non-voter for autopilot to promote.
    c
}

/// The lock clients' timings for a run: TTL 4 s; the lock delay covers a
/// TTL and two election timeouts (how long a deposed leader may still
/// serve a renew) and a second more (see `locks.rs`).
pub fn lock_spec(opts: &Options) -> crate::locks::LockSpec {
    let ttl = Duration::from_secs(4);
    crate::locks::LockSpec {
        ttl,
        lock_delay: ttl + Duration::from_millis(2 * opts.election_ms.1) + Duration::from_secs(1),
        hold_ms: (3000, 10000),
        call_timeout: Duration::from_secs(1),
    }
}

/// How long a leaving server fails fast (Consul's test servers shorten
/// `leave_drain_time` too).
pub const LEAVE_DRAIN: Duration = Duration::from_secs(2);

/// Run one seed with the given options (and an optional named scenario in
/// place of the random nemesis).
pub fn run(mut opts: Options, scenario: Option<Scenario>) -> Outcome {
    if let Some(s) = scenario {
        s.shape(&mut opts);
    }
    let seed = opts.seed;
    let wall = WallInstant::now();
    let mut cfg = madsim::Config::default();
    cfg.net.send_latency = Duration::from_millis(opts.latency_ms.0)
        ..Duration::from_millis(opts.latency_ms.1.max(opts.latency_ms.0 + 1));
    let mut outcome = run_seed(
        seed,
        cfg,
        move || async move { simulate(opts, scenario).await },
    );
    outcome.wall_ms = wall.elapsed().as_millis();
    outcome
}

/// Folds every observation into one hash: the same seed gives the same trace.
fn fold_trace(h: &mut u64, obs: &Observation<'_>) {
    let mut s = DefaultHasher::new();
    h.hash(&mut s);
    obs.node.hash(&mut s);
    obs.now.hash(&mut s);
    obs.server.term().hash(&mut s);
    obs.server.commit_index().hash(&mut s);
    for a in obs.actions.iter().chain(obs.executed) {
        match a {
            Action::Persist { op, .. } => (0u8, format!("{op:?}").len()).hash(&mut s),
            Action::Send { message, .. } => (1u8, message.to).hash(&mut s),
            Action::Respond { id, response } => (2u8, id, response.is_ok()).hash(&mut s),
            Action::Event(e) => (3u8, format!("{e:?}")).hash(&mut s),
            Action::BuildSnapshot { meta, .. } => (5u8, meta.last_index).hash(&mut s),
            Action::LoadSnapshot { meta, stored_by } => {
                (6u8, meta.last_index, stored_by.0).hash(&mut s)
            }
            // Follows from the log's own changes, which the rest hashes;
            // left out so traces from before it existed still compare.
            Action::Discard(_) => {}
        }
    }
    for w in obs.durable {
        (4u8, w.id.0).hash(&mut s);
    }
    *h = s.finish();
}

async fn simulate(opts: Options, scenario: Option<Scenario>) -> Outcome {
    let start = tern_io_sim::now();
    let sim_opts = SimOptions {
        fsync_latency: (
            Duration::from_millis(opts.fsync_ms.0),
            Duration::from_millis(opts.fsync_ms.1),
        ),
        duplicate_rate: opts.duplicate_permille as f64 / 1000.0,
        gossip_keyring: match scenario {
            Some(Scenario::EncryptedGossip) => vec![crate::membership::GOSSIP_KEY.to_vec()],
            _ => Vec::new(),
        },
        ..SimOptions::default()
    };
    let o2 = opts.clone();
    let world = World::new(sim_opts, opts.servers, move |spec| {
        server_config(&o2, spec.config())
    });
    world.set_loss(opts.loss_permille as f64 / 1000.0);

    let checker = Arc::new(Mutex::new(Checker::new()));
    let trace = Arc::new(Mutex::new(0u64));
    let reaps = Arc::new(Mutex::new(BTreeSet::new()));
    let quorum = Arc::new(Mutex::new(AutopilotQuorum::default()));
    {
        let checker = checker.clone();
        let trace = trace.clone();
        let reaps = reaps.clone();
        let quorum = quorum.clone();
        let w = world.clone();
        world.set_observer(Arc::new(move |obs: &Observation<'_>| {
            quorum.lock().unwrap().observe(&w, obs);
            let mut c = checker.lock().unwrap();
            if obs.input.is_none() {
                c.restarted(obs.server);
            }
            c.observe(obs.server, obs.actions, obs.durable, obs.executed);
            fold_trace(&mut trace.lock().unwrap(), obs);
            note_reaps(&mut reaps.lock().unwrap(), obs);
        }));
    }

    // Clients run through both phases.
    let history: SharedHistory = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..opts.clients {
        let client = world.add_client().await;
        // Each client keeps `pipeline` requests in flight: a task per slot,
        // each its own process in the history.
        for slot in 0..opts.pipeline {
            tasks.push(madsim::task::spawn(workload::client_loop(
                world.clone(),
                client.clone(),
                (i * opts.pipeline + slot) as u64,
                opts.keys,
                opts.seed,
                history.clone(),
                stop.clone(),
                Duration::from_secs(3),
                opts.blocking_permille,
            )));
        }
    }
    let operator = world.add_client().await;

    // The lock scenario's clients, each its own process contending for one
    // key with sessions.
    let locks: crate::locks::SharedLockHistory = Default::default();
    let mut lock_tasks = Vec::new();
    let mut lock_clients = Vec::new();
    if scenario == Some(Scenario::LockMutualExclusion) {
        for i in 0..4u64 {
            let client = world.add_client().await;
            lock_clients.push(client.id());
            lock_tasks.push(madsim::task::spawn(crate::locks::lock_loop(
                world.clone(),
                client,
                i,
                lock_spec(&opts),
                opts.seed,
                locks.clone(),
                stop.clone(),
            )));
        }
    }

    // The anti-entropy scenario's local agents and their driver.
    let ae = if scenario == Some(Scenario::AntiEntropy) {
        let agents = Arc::new(crate::anti_entropy::start(&world, opts.seed, opts.bug).await);
        let ae_stop = Arc::new(AtomicBool::new(false));
        let task = madsim::task::spawn(crate::anti_entropy::drive(
            agents.clone(),
            opts.seed,
            ae_stop.clone(),
        ));
        Some((agents, ae_stop, task))
    } else {
        None
    };

    // Safety phase: faults.
    let mut nemesis = Nemesis::new(world.clone(), operator.clone(), opts.clone());
    nemesis.lock_clients = lock_clients;
    let mut failures = match scenario {
        Some(s) => s.play(&mut nemesis, &history).await,
        None => {
            nemesis
                .random_faults(Duration::from_secs(opts.safety_s), &history)
                .await;
            Vec::new()
        }
    };

    // Liveness phase: heal everything, require a leader and a committed write.
    nemesis.heal_all().await;
    let healed_at = tern_io_sim::now().0;
    let bound = Duration::from_secs(opts.liveness_bound_s);
    // The probe, or any client's write issued after healing and
    // acknowledged: the clients keep running, and when they saturate the
    // leader's proposal queue the probe alone can be answered `Busy` for the
    // whole bound while their writes commit (seed 8073: about 13 entries/s
    // with one entry per message, two messages in flight and fsyncs up to
    // 142 ms, against 36 client tasks). A cluster that commits nothing after
    // healing acknowledges neither.
    if !committed_write(&world, &operator, bound).await
        && !acked_write_since(&history.lock().unwrap(), healed_at)
    {
        failures.push(format!(
            "liveness: no leader committed a write within {}s of simulated time after healing",
            opts.liveness_bound_s
        ));
    }
    // A member declared failed while it was alive recovers: after healing,
    // every running server's pool sees every other running server alive.
    if let Err(why) = gossip_converged(&world, GOSSIP_HEAL_BOUND).await {
        failures.push(format!(
            "liveness: gossip did not recover within {}s after healing: {why}; views: {}",
            GOSSIP_HEAL_BOUND.as_secs(),
            gossip_views(&world)
        ));
    }
    stop.store(true, Ordering::Relaxed);
    // Anti-entropy: the driver stops, the operator meddles once more, and
    // every agent's node must come to match it.
    let (mut ae_changes, mut ae_meddled) = (0, 0);
    if let Some((agents, ae_stop, task)) = ae {
        ae_stop.store(true, Ordering::Relaxed);
        let _ = task.await;
        failures.extend(crate::anti_entropy::check_converged(&world, &agents, opts.seed).await);
        crate::anti_entropy::stop(&agents);
        ae_changes = *agents.changes.lock().unwrap();
        ae_meddled = *agents.meddled.lock().unwrap();
    }
    // Let in-flight client calls finish (they time out after 3 s at most).
    for t in tasks.into_iter().chain(lock_tasks) {
        let _ = t.await;
    }
    for k in 0..opts.keys {
        let key = format!("k{k}");
        if !workload::final_read(&world, &operator, &key, &history, bound).await {
            failures.push(format!(
                "liveness: no consistent read of {key} after healing"
            ));
        }
    }
    let mut final_states = Vec::new();
    if failures.iter().any(|f| f.starts_with("liveness")) {
        for id in world.servers() {
            let state = world.with_server(id, |s| {
                let r = s.raft();
                format!(
                    "role={:?} term={:?} vote={:?} leader={:?} commit={:?} last={:?} voters={:?} addresses_known={:?}",
                    r.role(),
                    r.term(),
                    r.vote(),
                    r.leader(),
                    r.commit_index(),
                    r.log().last_index(),
                    r.membership().servers.iter().map(|(id, m)| (*id, m.suffrage)).collect::<Vec<_>>(),
                    r.membership().servers.keys().filter(|p| r.address_of(**p).is_some()).count(),
                ) + &format!(
                    // What a leader's replication to each server is
                    // waiting on (how seeds 515, 664 and 862's stall showed).
                    " base={:?} progress={:?}",
                    r.log().base_index(),
                    r.membership()
                        .servers
                        .keys()
                        .filter_map(|p| Some((*p, r.progress(*p)?.clone())))
                        .collect::<Vec<_>>()
                )
            });
            final_states.push(format!("{id:?}: {state:?} status={:?}", world.status(id)));
        }
    }
    for id in world.servers() {
        match world.status(id) {
            Some(NodeStatus::Corrupt(e)) => {
                failures.push(format!("{id:?}: data corrupt after crashes: {e}"))
            }
            Some(NodeStatus::Failed(m)) => failures.push(format!("{id:?}: failed: {m}")),
            _ => {}
        }
    }
    world.shutdown();

    // Checks.
    let h = history.lock().unwrap();
    let mut c = checker.lock().unwrap();
    let acked_verified = c.check_acknowledged(&h.acked);
    failures.extend(c.violations.iter().map(|v| v.0.clone()));
    failures.extend(quorum.lock().unwrap().violations.iter().cloned());
    failures.extend(h.violations.iter().cloned());
    failures.extend(check_blocking_reads(&h, &c).into_iter().take(10));
    let locks = locks.lock().unwrap();
    failures.extend(crate::locks::check(&locks).into_iter().take(10));
    // A write with an unknown outcome that no server ever appended to its
    // log never took effect: it leaves the history (as a refused one
    // would), which spares the search from trying it everywhere.
    let never_proposed: BTreeSet<usize> = h
        .unknown_writes
        .iter()
        .filter(|(_, d)| !c.appended_payloads.contains(d))
        .map(|(at, _)| *at)
        .collect();
    let ops: Vec<linearizability::Operation> = h
        .ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !never_proposed.contains(i))
        .map(|(_, op)| op.clone())
        .collect();
    match linearizability::check(&ops, 2_000_000) {
        CheckResult::Ok => {}
        CheckResult::Illegal { key, explanation } => failures.push(format!(
            "linearizability: history of {key} is not linearizable:\n{explanation}"
        )),
        CheckResult::Unknown { key, reason } => failures.push(format!(
            "linearizability: could not decide for {key}: {reason}"
        )),
    }
    let sim_s = tern_io_sim::now().saturating_since(start).as_secs_f64();
    let trace = *trace.lock().unwrap();
    let tombstone_reaps = reaps.lock().unwrap().len();
    let (autopilot_removals, autopilot_excused) = {
        let q = quorum.lock().unwrap();
        (q.removals, q.excused)
    };
    Outcome {
        seed: opts.seed,
        ok: failures.is_empty(),
        failures,
        trace,
        sim_s,
        wall_ms: 0,
        ops: h.ops.len() + h.blocking.issued as usize,
        history_ops: h.ops.len(),
        never_proposed: never_proposed.len(),
        blocking: h.blocking,
        acked_writes: h.acked_writes,
        acked_verified,
        unknown: h.unknown,
        max_commit: c.max_commit.0,
        tombstone_reaps,
        autopilot_removals,
        autopilot_excused,
        faults: nemesis.log.clone(),
        lock_beliefs: locks.beliefs.len(),
        lock_invalidated: locks
            .beliefs
            .iter()
            .filter(|b| b.how == "invalidated")
            .count(),
        ae_changes,
        ae_meddled,
        final_states,
    }
}

/// Every entry a blocking query returned holds a value that some write
/// which may have been applied wrote (never an invented one), and if the
/// entry committed at its modify index was seen, it wrote this key and value.
fn check_blocking_reads(h: &History, c: &Checker) -> Vec<String> {
    let mut failures = Vec::new();
    for r in &h.blocking_reads {
        if !h.written.contains(&r.value) {
            failures.push(format!(
                "blocking read by client {} returned {}={:?}, a value no write that may have been applied wrote",
                r.client, r.key, r.value
            ));
        }
        if let Some(w) = c.committed_kv.get(&r.modify_index) {
            let matches = w
                .as_ref()
                .is_some_and(|(k, v)| *k == r.key && *v == r.value.as_bytes());
            if !matches {
                failures.push(format!(
                    "blocking read by client {} returned {}={:?} with modify index {}, but the entry committed there is {:?}",
                    r.client, r.key, r.value, r.modify_index,
                    w.as_ref().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                ));
            }
        }
    }
    failures
}

/// Records the log index of every tombstone reap a server applied.
fn note_reaps(reaps: &mut BTreeSet<u64>, obs: &Observation<'_>) {
    for a in obs.actions {
        if let Action::Event(Event::Applied { index, .. }) = a {
            let reap = obs.server.entry(*index).is_some_and(|e| {
                matches!(&e.payload, EntryPayload::Command(c)
                    if matches!(c.as_ref(), Command::TombstoneReap { .. }))
            });
            if reap {
                reaps.insert(index.0);
            }
        }
    }
}

/// Checks that quorum is never lost by autopilot's own action: when a
/// leader's autopilot removes a voter (`Event::Autopilot(RemovingDeadServer)`)
/// from a configuration that had a healthy majority, the configuration it
/// leaves must still have one. Healthy is the world's truth, not gossip's:
/// the leader itself, or a server that is running and whose links with the
/// leader are not cut. Removing a dead voter never breaks this; removing a
/// healthy one that gossip wrongly calls failed breaks it when the quorum
/// was tight (another voter really down), which is what cleanup's
/// `(voters - 1) / 2` bound, its responsive-quorum check and its rule that a
/// server heard from over Raft is not dead refuse.
///
/// One case no leader can avoid is excused, and counted: the removed
/// server became healthy less than a grace of `2 × last_contact_threshold`
/// before the removal, and the voters left would still have had a healthy
/// majority had no change younger than the grace happened (the leader
/// hears of a healed link a heartbeat later, and counts a server responsive
/// until its last contact is older than the threshold; the simulator's
/// threshold already covers two heartbeats and a slow round trip). So it is
/// still a violation to remove a server that had been healthy for longer
/// (the leader could have heard from it), or to leave a configuration
/// whose majority was already known to be gone.
#[derive(Default)]
pub struct AutopilotQuorum {
    /// Each server's configuration as of its previous `handle`.
    before: std::collections::BTreeMap<tern_core::NodeId, tern_core::raft::Membership>,
    /// Per (observer, server): whether the server is healthy as the
    /// observer would see it, and since when (as of the observer's
    /// observations, which come at least every heartbeat while it leads).
    since: std::collections::BTreeMap<(tern_core::NodeId, tern_core::NodeId), (bool, u64)>,
    pub removals: usize,
    /// Removals that lost quorum only through a change younger than the
    /// leader could know of (see the type's doc).
    pub excused: usize,
    pub violations: Vec<String>,
}

impl AutopilotQuorum {
    pub fn observe(&mut self, world: &World, obs: &Observation<'_>) {
        let leader = obs.node;
        let healthy = |v: tern_core::NodeId| {
            v == leader
                || (world.status(v) == Some(NodeStatus::Running)
                    && !world.link_clogged(leader, v)
                    && !world.link_clogged(v, leader))
        };
        let now = obs.now.0;
        for v in world.servers() {
            let h = healthy(v);
            match self.since.get(&(leader, v)) {
                Some((was, _)) if *was == h => {}
                _ => {
                    self.since.insert((leader, v), (h, now));
                }
            }
        }
        for a in obs.actions {
            let Action::Event(Event::Autopilot(AutopilotEvent::RemovingDeadServer { id })) = a
            else {
                continue;
            };
            self.removals += 1;
            let Some(before) = self.before.get(&obs.node) else {
                continue;
            };
            if !before.is_voter(*id) {
                continue;
            }
            let voters: Vec<_> = before.voters().collect();
            let majority_before = voters.len() / 2 + 1;
            let majority_after = (voters.len() - 1) / 2 + 1;
            let healthy_before = voters.iter().filter(|v| healthy(**v)).count();
            let healthy_after = voters.iter().filter(|v| **v != *id && healthy(**v)).count();
            if healthy_before >= majority_before && healthy_after < majority_after {
                let grace = 2 * obs.server.config().autopilot.last_contact_threshold.0;
                let age = |v: tern_core::NodeId| {
                    self.since
                        .get(&(leader, v))
                        .map_or(0, |(_, t)| now.saturating_sub(*t))
                };
                // What the leader could know: a change younger than the
                // grace had not reached it yet.
                let known = |v: tern_core::NodeId| {
                    if age(v) < grace {
                        !healthy(v)
                    } else {
                        healthy(v)
                    }
                };
                let known_after = voters.iter().filter(|v| **v != *id && known(**v)).count();
                if age(*id) < grace && known_after >= majority_after {
                    self.excused += 1;
                    continue;
                }
                self.violations.push(format!(
                    "autopilot: leader {leader:?} removed voter {id:?} (healthy: {}, for {} ms) from {voters:?} at {:.3}s and lost quorum: {healthy_after} healthy voters left of the {majority_after} needed",
                    healthy(*id),
                    age(*id) / 1_000_000,
                    obs.now.0 as f64 / 1e9
                ));
            }
        }
        self.before
            .insert(obs.node, obs.server.membership().clone());
    }
}

/// How long after healing every running member may take to see every other
/// running member alive again: a member declared failed on one side of a
/// partition is contacted again by serf's reconnect (every 30 s, one failed
/// member at a time) or hears of its death in a push-pull (every 30 s) and
/// refutes; two reconnect rounds and a suspicion timeout cover it.
pub const GOSSIP_HEAL_BOUND: Duration = Duration::from_secs(75);

/// Waits until every running server's gossip pool sees every other running
/// server alive and unsuspected; the reason it is not, at `within`.
pub async fn gossip_converged(world: &World, within: Duration) -> Result<(), String> {
    let deadline = tern_io_sim::now() + within.into();
    loop {
        let why = gossip_disagreement(world);
        match why {
            None => return Ok(()),
            Some(why) if tern_io_sim::now() >= deadline => return Err(why),
            Some(_) => madsim::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Every running server's gossip view, for a failure report.
pub fn gossip_views(world: &World) -> String {
    let mut out = Vec::new();
    for id in world.servers() {
        if world.status(id) != Some(NodeStatus::Running) {
            continue;
        }
        let view: Vec<String> = world
            .gossip_members(id)
            .unwrap_or_default()
            .iter()
            .map(|m| {
                format!(
                    "{} {}{}",
                    m.name,
                    m.status.as_str(),
                    if m.suspect { "?" } else { "" }
                )
            })
            .collect();
        out.push(format!("{id:?} {view:?}"));
    }
    out.join("; ")
}

/// Why the running servers' pools do not all see each other alive, if they do not.
pub fn gossip_disagreement(world: &World) -> Option<String> {
    let running: Vec<_> = world
        .servers()
        .into_iter()
        .filter(|id| world.status(*id) == Some(NodeStatus::Running))
        .collect();
    for &at in &running {
        let Some(view) = world.gossip_members(at) else {
            return Some(format!("{at:?} runs no gossip pool"));
        };
        for &of in &running {
            let Some(name) = world.with_server(of, |s| s.config().node_name.0.clone()) else {
                continue;
            };
            match view.iter().find(|m| m.name == name) {
                None => {
                    let knows: Vec<String> = view
                        .iter()
                        .map(|m| format!("{} {}", m.name, m.status.as_str()))
                        .collect();
                    return Some(format!("{at:?} does not know {name} (knows {knows:?})"));
                }
                Some(m) if m.status != tern_core::gossip::Status::Alive || m.suspect => {
                    return Some(format!(
                        "{at:?} sees {name} {}{}",
                        m.status.as_str(),
                        if m.suspect { " (suspect)" } else { "" }
                    ))
                }
                Some(_) => {}
            }
        }
    }
    None
}

/// Whether a client's write called at or after `since` (simulated ns) was
/// acknowledged as applied (a put or delete answered, a CAS answered true).
fn acked_write_since(history: &History, since: u64) -> bool {
    use crate::linearizability::{KvInput, KvOutput};
    history.ops.iter().any(|op| {
        op.call >= since
            && matches!(
                (&op.input, &op.ret),
                (
                    KvInput::Put { .. } | KvInput::Delete,
                    Some((_, KvOutput::Ok))
                ) | (
                    KvInput::Cas { .. } | KvInput::DeleteCas { .. },
                    Some((_, KvOutput::Bool(true)))
                )
            )
    })
}

/// Retry a write through any server until one commits or `within` passes.
async fn committed_write(world: &World, client: &Client, within: Duration) -> bool {
    workload::until_some_server(world, within, |server, attempt| async move {
        let answer = client
            .call(
                server,
                workload::put_request("liveness", &format!("probe-{attempt}")),
                Duration::from_secs(5),
            )
            .await;
        matches!(answer, Ok(Ok(reply)) if reply.body == ReplyBody::Applied(ApplyResult::Kv(true)))
    })
    .await
}
