//! Scenarios of servers joining, leaving, dying and restarting through
//! gossip alone, each mirroring a Consul test or a reported Consul failure,
//! played under the run's client load with every global check on (Raft
//! safety after each step, autopilot never losing quorum, gossip recovering,
//! linearizability). Each returns what it saw go wrong.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_core::autopilot::AutopilotEvent;
use tern_core::gossip::Status;
use tern_core::rpc::{Op, ReadMode, ReplyBody};
use tern_core::{Event, NodeId};
use tern_io_sim::{ClientAgent, NodeStatus, World, WorldEvent};

use crate::linearizability::{KvInput, KvOutput, Operation};
use crate::nemesis::Nemesis;
use crate::workload::{self, SharedHistory};

async fn sleep(d: Duration) {
    madsim::time::sleep(d).await;
}

fn now() -> madsim::time::Instant {
    madsim::time::Instant::now()
}

/// Longest a new server may take to become a voter: the stabilization time
/// (10 s) plus autopilot rounds and catch-up.
const PROMOTION_BOUND: Duration = Duration::from_secs(30);
/// Longest a dead server may take to leave the configuration: the gossip
/// failure detection (a few suspicion timeouts) plus autopilot rounds.
const CLEANUP_BOUND: Duration = Duration::from_secs(60);

/// The configuration of the current leader: (voters, non-voters).
fn configuration(n: &Nemesis) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
    let l = n.leader()?;
    n.world.with_server(l, |s| {
        let m = s.membership();
        let voters: Vec<NodeId> = m.voters().collect();
        let others = m
            .servers
            .keys()
            .filter(|id| !m.is_voter(**id))
            .copied()
            .collect();
        (voters, others)
    })
}

/// Waits until `cond` holds of the leader's configuration.
async fn until_config(
    n: &Nemesis,
    within: Duration,
    cond: impl Fn(&[NodeId], &[NodeId]) -> bool,
) -> bool {
    let end = now() + within;
    loop {
        if configuration(n).is_some_and(|(v, o)| cond(&v, &o)) {
            return true;
        }
        if now() >= end {
            return false;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn until_voter(n: &Nemesis, id: NodeId, within: Duration) -> bool {
    until_config(n, within, |v, _| v.contains(&id)).await
}

async fn until_gone(n: &Nemesis, id: NodeId, within: Duration) -> bool {
    until_config(n, within, |v, o| !v.contains(&id) && !o.contains(&id)).await
}

/// Waits until `id` has stopped after a leave.
async fn until_left(n: &Nemesis, id: NodeId, within: Duration) -> bool {
    let end = now() + within;
    while now() < end {
        if n.world.status(id) == Some(NodeStatus::Left) {
            return true;
        }
        sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What the leader's autopilot says of `id` (for failure messages).
fn autopilot_health(n: &Nemesis, id: NodeId) -> Option<String> {
    let l = n.leader()?;
    n.world.with_server(l, |s| {
        let others: Vec<String> = s
            .autopilot()
            .health()
            .servers()
            .values()
            .filter(|h| h.id != id)
            .map(|h| {
                format!(
                    "{:?}: healthy {} last_contact {:?} index {:?}",
                    h.id, h.healthy, h.last_contact, h.last_index
                )
            })
            .collect();
        format!(
            "{:?}; leader {l:?}'s last index {:?}, commit {:?}, change pending {}; the others: {others:?}",
            s.autopilot().health().server(id),
            s.raft().log().last_index(),
            s.raft().commit_index(),
            s.raft().membership_change_pending(),
        )
    })
}

fn autopilot_removed(world: &World, id: NodeId) -> bool {
    world.events().iter().any(|(_, e)| {
        matches!(e, WorldEvent::Core { event: Event::Autopilot(AutopilotEvent::RemovingDeadServer { id: r }), .. } if *r == id)
    })
}

/// Consul's `TestAutopilot_CleanupDeadServer` (agent/consul/autopilot_test.go):
/// a follower dies for good; gossip declares it failed and autopilot removes
/// it from the configuration, which keeps every other voter.
pub async fn cleanup_dead_server(n: &mut Nemesis, leader: NodeId) -> Vec<String> {
    let mut failures = Vec::new();
    let servers = n.live_servers();
    let dead = *servers.iter().find(|s| **s != leader).expect("a follower");
    n.stop_for_good(dead);
    if !until_gone(n, dead, CLEANUP_BOUND).await || !autopilot_removed(&n.world, dead) {
        failures.push(format!(
            "cleanup-dead-server: {dead:?} was not removed by autopilot within {CLEANUP_BOUND:?}: {:?}",
            configuration(n)
        ));
    }
    let others = servers.len() - 1;
    if configuration(n).is_none_or(|(v, _)| v.len() != others) {
        failures.push(format!(
            "cleanup-dead-server: expected {others} voters after the cleanup: {:?}",
            configuration(n)
        ));
    }
    failures
}

/// Consul's `TestAutopilot_CleanupDeadNonvoter`: a new server joins through
/// gossip (the leader adds it as a non-voter) and dies before it is
/// promoted; autopilot removes the dead non-voter.
pub async fn cleanup_dead_nonvoter(n: &mut Nemesis) -> Vec<String> {
    let mut failures = Vec::new();
    let Some(new) = n.add_nonvoter().await else {
        return vec!["cleanup-dead-nonvoter: the new server never joined".into()];
    };
    if configuration(n).is_some_and(|(v, _)| v.contains(&new)) {
        failures.push("cleanup-dead-nonvoter: the new server was a voter at once".into());
    }
    n.stop_for_good(new);
    if !until_gone(n, new, CLEANUP_BOUND).await || !autopilot_removed(&n.world, new) {
        failures.push(format!(
            "cleanup-dead-nonvoter: dead non-voter {new:?} not removed by autopilot: {:?}",
            configuration(n)
        ));
    }
    failures
}

/// Consul's `TestServer_Leave` (agent/consul/server_test.go): a follower
/// leaves; its gossip leave tells the leader, whose reconciliation removes it
/// from the configuration, and it stops.
pub async fn server_leave(n: &mut Nemesis, leader: NodeId) -> Vec<String> {
    let mut failures = Vec::new();
    let follower = *n
        .live_servers()
        .iter()
        .find(|s| **s != leader)
        .expect("a follower");
    n.world.leave(follower);
    n.note(format!("leave {follower:?}"));
    // Removal comes from gossip (`left`), well before the removal grace.
    if !until_gone(n, follower, Duration::from_secs(4)).await {
        failures.push(format!(
            "server-leave: {follower:?} still in the configuration 4 s after its leave: {:?}",
            configuration(n)
        ));
    }
    if !until_left(n, follower, Duration::from_secs(10)).await {
        failures.push(format!(
            "server-leave: {follower:?} did not stop: {:?}",
            n.world.status(follower)
        ));
    }
    let seen_left = n.live_servers().iter().any(|s| {
        n.world.gossip_members(*s).is_some_and(|ms| {
            ms.iter()
                .any(|m| m.name == format!("s{}", follower.0) && m.status == Status::Left)
        })
    });
    if !seen_left {
        failures.push(format!("server-leave: no pool shows {follower:?} left"));
    }
    n.mark_removed(follower);
    failures
}

/// Adding servers 4 and 5 to a running 3-server cluster through gossip only
/// (Consul's `TestLeader_RollRaftServer`/`TestServer_JoinLAN` path with
/// `-retry-join`): each starts, joins the LAN pool, the leader adds it as a
/// non-voter and autopilot promotes it once stable. No operator request.
pub async fn add_servers_through_gossip(n: &mut Nemesis) -> Vec<String> {
    let mut failures = Vec::new();
    let a = n.start_server();
    let b = n.start_server();
    for id in [a, b] {
        if !until_voter(n, id, PROMOTION_BOUND).await {
            failures.push(format!(
                "add-servers-through-gossip: {id:?} not a voter within {PROMOTION_BOUND:?}: {:?}",
                configuration(n)
            ));
        }
    }
    if configuration(n).is_none_or(|(v, o)| v.len() != 5 || !o.is_empty()) {
        failures.push(format!(
            "add-servers-through-gossip: expected 5 voters: {:?}",
            configuration(n)
        ));
    }
    failures
}

/// The gossip key of the `encrypted-gossip` scenario's world.
pub const GOSSIP_KEY: [u8; 32] = [0x5e; 32];
/// The key of a server that has the wrong one.
const WRONG_GOSSIP_KEY: [u8; 16] = [0x77; 16];

/// Gossip encryption (Consul's `encrypt`): every server of the world seals
/// its gossip with [`GOSSIP_KEY`] and the cluster runs under the seed's
/// load as a plain one does. A server with another key starts and tries to
/// join: for 30 s no server's pool learns of it, it learns of nobody, and
/// it never enters the Raft configuration. Then a server with the right
/// key joins and autopilot makes it a voter.
pub async fn encrypted_gossip(n: &mut Nemesis) -> Vec<String> {
    let mut failures = Vec::new();
    if let Err(why) = crate::run::gossip_converged(&n.world, Duration::from_secs(30)).await {
        failures.push(format!(
            "encrypted-gossip: the encrypted pools did not converge: {why}"
        ));
        return failures;
    }
    let members = n.live_servers();
    let wrong = n.start_server_with_gossip_keys(vec![WRONG_GOSSIP_KEY.to_vec()]);
    sleep(Duration::from_secs(30)).await;
    let wrong_name = n
        .world
        .with_server(wrong, |s| s.config().node_name.0.clone())
        .unwrap_or_default();
    for id in members {
        let knows = n
            .world
            .gossip_members(id)
            .is_some_and(|v| v.iter().any(|m| m.name == wrong_name));
        if knows {
            failures.push(format!(
                "encrypted-gossip: {id:?} let {wrong_name} (another key) into its pool"
            ));
        }
    }
    match n.world.gossip_members(wrong) {
        Some(v) if v.len() == 1 => {}
        other => failures.push(format!(
            "encrypted-gossip: the server with another key knows {other:?}"
        )),
    }
    if configuration(n).is_some_and(|(v, o)| v.contains(&wrong) || o.contains(&wrong)) {
        failures.push(format!(
            "encrypted-gossip: {wrong:?} (another key) entered the configuration"
        ));
    }
    n.stop_for_good(wrong);
    let right = n.start_server();
    if !until_voter(n, right, PROMOTION_BOUND).await {
        failures.push(format!(
            "encrypted-gossip: {right:?} (the key) not a voter within {PROMOTION_BOUND:?}: {:?}",
            configuration(n)
        ));
    }
    failures
}

/// How an old server goes away in a rolling update.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Departure {
    /// A graceful leave (Consul's `TestAutopilot_RollingUpdate` shuts
    /// servers down after they leave).
    Leave,
    /// Killed for good as soon as its replacement is a voter (Consul #3611:
    /// an operator who replaced servers one by one lost quorum because the
    /// new servers were never promoted while the voter count was even).
    Kill,
}

/// Replaces every original server with a new one, one at a time: start a
/// new server (it joins through gossip), wait until autopilot promotes it,
/// then take an old one away. The cluster must keep a quorum throughout
/// (the autopilot quorum check, and the run's writes).
pub async fn rolling_update(n: &mut Nemesis, how: Departure) -> Vec<String> {
    let name = match how {
        Departure::Leave => "rolling-update",
        Departure::Kill => "rolling-update-3611",
    };
    let mut failures = Vec::new();
    let old = n.live_servers();
    let mut even_promotion = false;
    for o in old {
        let new = n.start_server();
        if !until_voter(n, new, PROMOTION_BOUND).await {
            failures.push(format!(
                "{name}: replacement {new:?} not promoted within {PROMOTION_BOUND:?}: {:?}",
                configuration(n)
            ));
            return failures;
        }
        even_promotion |= configuration(n).is_some_and(|(v, _)| v.len() % 2 == 0);
        match how {
            Departure::Leave => {
                n.world.leave(o);
                n.note(format!("leave {o:?}"));
                if !until_left(n, o, Duration::from_secs(15)).await {
                    failures.push(format!("{name}: {o:?} did not stop after its leave"));
                }
                n.mark_removed(o);
            }
            Departure::Kill => n.stop_for_good(o),
        }
        if !until_gone(n, o, CLEANUP_BOUND).await {
            failures.push(format!(
                "{name}: {o:?} still in the configuration: {:?}",
                configuration(n)
            ));
            return failures;
        }
        if n.wait_for_leader(Duration::from_secs(20)).await.is_none() {
            failures.push(format!("{name}: no leader after {o:?} went away"));
            return failures;
        }
    }
    if how == Departure::Kill && !even_promotion {
        failures.push(format!(
            "{name}: no replacement was promoted to an even number of voters (#3611)"
        ));
    }
    failures
}

/// Consul #8118 (a server rebooted faster than `server_stabilization_time`):
/// every server in turn is power-cycled and back within a few seconds, less
/// than the stabilization time, then the next. None may be removed or left
/// a non-voter, and the cluster keeps serving.
pub async fn quick_reboots(n: &mut Nemesis) -> Vec<String> {
    let mut failures = Vec::new();
    let servers = n.live_servers();
    for s in servers.iter().copied() {
        n.world.kill(s);
        n.note(format!("reboot {s:?}"));
        sleep(Duration::from_millis(n.rng_range(300, 3000))).await;
        n.world.restart(s);
        // Back in gossip and caught up, but nowhere near stable for 10 s.
        sleep(Duration::from_secs(4)).await;
        if n.wait_for_leader(Duration::from_secs(20)).await.is_none() {
            failures.push(format!("quick-reboots: no leader after rebooting {s:?}"));
            return failures;
        }
    }
    sleep(Duration::from_secs(5)).await;
    let all_voters = configuration(n)
        .is_some_and(|(v, o)| o.is_empty() && servers.iter().all(|s| v.contains(s)));
    if !all_voters {
        failures.push(format!(
            "quick-reboots: the rebooted servers are not all voters: {:?}",
            configuration(n)
        ));
    }
    for s in &servers {
        if autopilot_removed(&n.world, *s) {
            failures.push(format!("quick-reboots: autopilot removed rebooted {s:?}"));
        }
    }
    failures
}

/// The headline: a rolling restart of every server, one at a time, each by
/// a graceful leave (it hands leadership over, drains, is removed, stops)
/// and a start (it rejoins through gossip as a non-voter and autopilot
/// promotes it), under continuous load from retrying clients, with zero
/// client-visible errors. Their history joins the run's linearizability
/// check.
pub async fn rolling_restart(n: &mut Nemesis, history: &SharedHistory, quick: bool) -> Vec<String> {
    let mut failures = Vec::new();
    let load = AgentLoad::start(n, history.clone(), 6);
    sleep(Duration::from_secs(2)).await;
    for s in n.live_servers() {
        n.world.leave(s);
        n.note(format!("leave {s:?}"));
        if !until_left(n, s, Duration::from_secs(15)).await {
            failures.push(format!(
                "rolling-restart: {s:?} did not stop after its leave"
            ));
        }
        if !quick {
            sleep(Duration::from_secs(1)).await;
        }
        n.world.restart(s);
        n.note(format!("start {s:?}"));
        if !until_voter(n, s, PROMOTION_BOUND).await {
            failures.push(format!(
                "rolling-restart: {s:?} not a voter again within {PROMOTION_BOUND:?}: {:?}; the leader's autopilot health of it: {:?}",
                configuration(n),
                autopilot_health(n, s)
            ));
            break;
        }
    }
    sleep(Duration::from_secs(2)).await;
    let (ok, errors) = load.stop().await;
    n.note(format!(
        "retrying clients: {ok} operations succeeded, {} failed",
        errors.len()
    ));
    for e in errors.iter().take(10) {
        let last = e.attempts.last();
        n.note(format!(
            "client {} called at {:.3}s failed at {:.3}s after {} attempts ({} refused as busy; the last to {:?}): {}",
            if e.write { "write" } else { "read" },
            e.call as f64 / 1e9,
            last.map_or(0.0, |a| a.at.0 as f64 / 1e9),
            e.attempts.len(),
            e.busy(),
            last.map(|a| a.server),
            e.error
        ));
    }
    if ok == 0 {
        failures.push("rolling-restart: the clients did nothing".into());
    }
    if !errors.is_empty() {
        // Overload: every failed call spent most of its hold refused as
        // busy, whatever its last attempt answered.
        let overload = errors.iter().all(|e| 2 * e.busy() > e.attempts.len());
        failures.push(format!(
            "rolling-restart: {} client-visible errors{}, first: {}",
            errors.len(),
            if overload {
                " (overload: each failed call was refused as busy on most of its attempts)"
            } else {
                ""
            },
            errors[0].error
        ));
    }
    failures
}

/// Load through a simulated client agent ([`ClientAgent`]), which retries
/// as the daemon's client agent does (the core's `rpc::retry`): every task
/// of the load shares the one agent, as requests through one agent's HTTP
/// API share its server order.
struct AgentLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    /// Each failed call.
    errors: Arc<std::sync::Mutex<Vec<FailedCall>>>,
    tasks: Vec<madsim::task::JoinHandle<()>>,
}

/// A call of an [`AgentLoad`] that failed.
#[derive(Clone, Debug)]
struct FailedCall {
    write: bool,
    /// When it was made (the simulator's clock, ns).
    call: u64,
    /// What the client saw: the last attempt's error.
    error: String,
    attempts: Vec<tern_io_sim::AttemptLog>,
}

impl FailedCall {
    /// How many of its attempts a server refused as busy (its queue of
    /// requests waiting for the log was full).
    fn busy(&self) -> usize {
        let busy = |a: &&tern_io_sim::AttemptLog| {
            a.outcome == tern_io_sim::AttemptOutcome::Refused(tern_core::rpc::RpcError::Busy)
        };
        self.attempts.iter().filter(busy).count()
    }
}

/// Consul's `rpc_hold_timeout`.
const HOLD: Duration = Duration::from_secs(7);

/// A simulated client agent with the client's default hold, calling
/// through the run's operator client, with the run's planted bug.
fn client_agent(n: &Nemesis, seed: u64) -> ClientAgent {
    ClientAgent::new(n.world.clone(), n.operator.clone(), HOLD, seed)
        .with_bugs(crate::options::Bug::bugs(n.opts.bug))
}

impl AgentLoad {
    fn start(n: &Nemesis, history: SharedHistory, tasks: u64) -> AgentLoad {
        let agent = client_agent(n, 0xA6E7);
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (agent, history) = (agent.clone(), history.clone());
            let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
            handles.push(madsim::task::spawn(async move {
                let mut rng = tern_core::rng::Rng::new(0xA6E7 ^ t);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let key = format!("agent{}", t % 3);
                    let write = i % 2 == 1;
                    let value = format!("a{t}-{i}");
                    let (input, req) = if write {
                        history.lock().unwrap().written.insert(value.clone());
                        (
                            KvInput::Put {
                                value: value.clone(),
                            },
                            workload::put_request(&key, &value),
                        )
                    } else {
                        (
                            KvInput::Get,
                            workload::request(Op::KvGet { key: key.clone() }, ReadMode::Consistent),
                        )
                    };
                    let call = tern_io_sim::now().0;
                    let (out, attempts) = agent.call_logged(req).await;
                    let failed = |error: String| FailedCall {
                        write,
                        call,
                        error,
                        attempts: attempts.clone(),
                    };
                    let ret = match out.map(|reply| reply.body) {
                        Ok(ReplyBody::Applied(_)) if write => Some(KvOutput::Ok),
                        Ok(ReplyBody::Entry(e)) if !write => Some(KvOutput::Value(
                            e.map(|e| String::from_utf8_lossy(&e.value).into_owned()),
                        )),
                        Ok(other) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(failed(format!("unexpected reply {other:?}")));
                            None
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(failed(e.to_string()));
                            None
                        }
                    };
                    if ret.is_some() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // A failed read took no effect: only writes stay in the
                    // history with an unknown outcome.
                    if ret.is_some() || write {
                        history.lock().unwrap().ops.push(Operation {
                            client: 2_000_000 + t,
                            key,
                            input,
                            call,
                            ret: ret.map(|r| (tern_io_sim::now().0, r)),
                        });
                    }
                    sleep(Duration::from_millis(rng.range(5, 30))).await;
                }
            }));
        }
        AgentLoad {
            stop,
            ok,
            errors,
            tasks: handles,
        }
    }

    async fn stop(self) -> (u64, Vec<FailedCall>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

/// Consul's `TestLeader_ChangeServerID` (agent/consul/leader_test.go): a
/// follower's machine is rebuilt, so a server with a new node id and an
/// empty disk comes up at the same address. The leader's reconciliation
/// replaces the old id at that address with the new one (as a non-voter
/// that autopilot promotes); the old id leaves the configuration.
pub async fn change_server_id(n: &mut Nemesis, leader: NodeId) -> Vec<String> {
    let mut failures = Vec::new();
    let old = *n
        .live_servers()
        .iter()
        .find(|s| **s != leader)
        .expect("a follower");
    let address = n.world.address(old);
    let opts = n.opts.clone();
    let new = n.world.change_server_id(old, move |spec| {
        crate::run::server_config(&opts, spec.config())
    });
    n.mark_removed(old);
    n.note(format!(
        "change server id {old:?} -> {new:?} at {address:?}"
    ));
    let replaced = until_config(n, PROMOTION_BOUND + CLEANUP_BOUND, |v, o| {
        v.contains(&new) && !v.contains(&old) && !o.contains(&old)
    })
    .await;
    if !replaced {
        failures.push(format!(
            "change-server-id: {new:?} did not replace {old:?}: {:?}",
            configuration(n)
        ));
    }
    let at = n.leader().and_then(|l| {
        n.world.with_server(l, |s| {
            s.membership().servers.get(&new).map(|m| m.address.clone())
        })
    });
    if at.flatten() != address {
        failures.push(format!(
            "change-server-id: {new:?} is not at {address:?} in the configuration"
        ));
    }
    failures
}

/// Consul's client-side retry across a leader loss (agent/consul/client.go
/// `RPC` with `canRetry`; the seed's "clients retry No cluster leader
/// against another server"): under load through a client agent the leader
/// is killed (no graceful hand-over) and started again. Reads never fail:
/// `No cluster leader`, a busy server and a lost connection are all retried
/// on another server. A write in flight on a connection that broke may have
/// been applied, so it may fail with an unknown outcome, and only it: a write
/// made before a new leader was elected. Consul does no better (a write
/// forwarded to a dead leader fails there too); a forward that provably
/// never reached the leader could be retried, which the core does not do yet.
pub async fn client_retry_across_leader_loss(
    n: &mut Nemesis,
    history: &SharedHistory,
    leader: NodeId,
) -> Vec<String> {
    const TASKS: u64 = 6;
    let mut failures = Vec::new();
    let load = AgentLoad::start(n, history.clone(), TASKS);
    sleep(Duration::from_secs(2)).await;
    n.world.kill(leader);
    n.note(format!("kill leader {leader:?}"));
    let elected = match n.wait_for_leader(Duration::from_secs(20)).await {
        Some(l) if l != leader => {
            n.note(format!("new leader {l:?}"));
            tern_io_sim::now().0
        }
        other => {
            failures.push(format!(
                "client-retry-leader-loss: no new leader after killing {leader:?} (leader {other:?})"
            ));
            u64::MAX
        }
    };
    sleep(Duration::from_secs(2)).await;
    n.world.restart(leader);
    n.note(format!("restart {leader:?}"));
    sleep(Duration::from_secs(3)).await;
    let (ok, errors) = load.stop().await;
    // Only a write made before the new leader was elected may have an
    // unknown outcome: in flight on the dead leader, or forwarded to it by a
    // follower that did not know it was dead (the follower cannot tell
    // whether it arrived, so it answers "timed out waiting for the leader's
    // answer" after its hold).
    let in_flight_unknown =
        |e: &&FailedCall| e.write && e.call < elected && e.error.starts_with("outcome unknown");
    let writes_unknown = errors.iter().filter(in_flight_unknown).count();
    n.note(format!(
        "client agent: {ok} operations succeeded, {} failed ({writes_unknown} writes with an unknown outcome)",
        errors.len()
    ));
    if ok == 0 {
        failures.push("client-retry-leader-loss: the clients did nothing".into());
    }
    if let Some(e) = errors.iter().find(|e| !in_flight_unknown(e)) {
        failures.push(format!(
            "client-retry-leader-loss: a {} made at {:.3}s (new leader at {:.3}s) failed where a retry was due: {}",
            if e.write { "write" } else { "read" },
            e.call as f64 / 1e9,
            elected as f64 / 1e9,
            e.error,
        ));
    }
    failures
}

/// Consul's `TestRPC_NoLeader_Fail` and `TestRPC_NoLeader_Retry`
/// (agent/consul/rpc_test.go), through a client agent: the leader and a
/// follower of three servers die, so the survivor cannot elect one. A call
/// then fails with `No cluster leader` once the client's hold time (counted
/// from its first attempt) has run out, and not before: every attempt in
/// between (a dead server: never sent; the survivor: holds, then no leader)
/// was retried. With `retry`, the dead servers start again one second into
/// the call, a leader is elected within the hold time, and the call
/// succeeds.
pub async fn no_leader(n: &mut Nemesis, leader: NodeId, retry: bool) -> Vec<String> {
    let name = if retry {
        "no-leader-retry"
    } else {
        "no-leader-fail"
    };
    let mut failures = Vec::new();
    let servers = n.live_servers();
    let follower = *servers.iter().find(|s| **s != leader).expect("a follower");
    let agent = client_agent(n, 0x4E4C);
    // The agent learns the three servers while they are alive.
    if agent.servers().len() != servers.len() {
        failures.push(format!(
            "{name}: the client agent knows {:?}, not all of {servers:?}",
            agent.servers()
        ));
    }
    for s in [leader, follower] {
        n.world.kill(s);
        n.note(format!("kill {s:?}"));
    }
    // Let the survivor notice it has no leader.
    sleep(Duration::from_secs(2)).await;
    let start = now();
    let call = madsim::task::spawn({
        let agent = agent.clone();
        async move { agent.call(workload::put_request("no-leader", "v")).await }
    });
    if retry {
        sleep(Duration::from_secs(1)).await;
        for s in [leader, follower] {
            n.world.restart(s);
            n.note(format!("restart {s:?}"));
        }
    }
    let out = call.await.expect("the call's task");
    let took = now() - start;
    n.note(format!("{name}: {out:?} after {took:?}"));
    if retry {
        if out.is_err() {
            failures.push(format!(
                "{name}: the call failed although a leader was elected within the hold: {out:?} after {took:?}"
            ));
        }
        if took >= HOLD {
            failures.push(format!("{name}: the call took {took:?}, past the hold"));
        }
    } else {
        if out != Err(tern_core::rpc::RpcError::NoLeader) {
            failures.push(format!(
                "{name}: expected `No cluster leader`, got {out:?} after {took:?}"
            ));
        }
        // The last attempt starts before the hold runs out and may itself be
        // held by the survivor for its own hold, plus one stagger.
        let latest = HOLD + crate::run::SERVER_HOLD + HOLD / 16;
        if took < HOLD || took > latest {
            failures.push(format!(
                "{name}: `No cluster leader` after {took:?}, expected within [{HOLD:?}, {latest:?}]"
            ));
        }
        for s in [leader, follower] {
            n.world.restart(s);
            n.note(format!("restart {s:?}"));
        }
    }
    // Either way the cluster serves again, and so does the agent.
    if n.wait_for_leader(Duration::from_secs(20)).await.is_none() {
        failures.push(format!("{name}: no leader after the servers came back"));
    } else if let Err(e) = agent.call(workload::put_request("no-leader", "w")).await {
        failures.push(format!(
            "{name}: a call after the leader came back failed: {e}"
        ));
    }
    failures
}
