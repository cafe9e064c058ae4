//! The local agents' workload and the anti-entropy invariant (issue 9,
//! deliverable 3): whatever the faults did, once they are healed every
//! agent's node in the catalog holds exactly what the agent holds.
//!
//! Three simulated local agents ([`SimLocalAgent`], the core's
//! `LocalAgent` as the daemon runs it) each own a node (`agent-0`..). While
//! the nemesis partitions, crashes and churns the servers, a driver
//! registers and deregisters services (with TTL and HTTP checks), sets TTL
//! statuses, flips what the probed services answer, and an operator now and
//! then changes the catalog behind an agent's back (deletes one of its
//! services, registers a stray one on its node). After healing, the
//! operator meddles once more, then every agent's catalog rows must match
//! it (services by ID, port and tags; checks by ID, status and service)
//! within [`CONVERGE_BOUND`]: full syncs repair what partial syncs cannot
//! know about.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_core::fsm::{Deregister, Register, Service};
use tern_core::local::{CheckDef, CheckKind, LocalConfig, LocalNode, Probe, ServiceDef};
use tern_core::rng::Rng;
use tern_core::rpc::{CatalogOp, Op, ReadMode};
use tern_core::serf_health::{CONSUL_SERVICE, SERF_CHECK_ID};
use tern_core::{Datacenter, Duration as CoreDuration};
use tern_io_sim::{ClientAgent, SimLocalAgent, World};

use crate::options::Bug;
use crate::workload::request;

/// Agents in the scenario.
pub const AGENTS: usize = 3;
/// The agents' full-sync interval (Consul's is 60 s; shorter here so that a
/// run sees many).
const AE_INTERVAL: CoreDuration = CoreDuration::from_secs(10);
/// After healing and a last meddling, convergence is required within this
/// much simulated time: two full-sync periods (interval plus stagger) and a
/// failed sync's retry.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(60);
const HOLD: Duration = Duration::from_secs(7);

/// The agents, what their probed services answer, and counters.
pub struct Agents {
    pub agents: Vec<(String, SimLocalAgent)>,
    /// Check ID -> status the probed service answers with.
    health: Arc<Mutex<BTreeMap<String, String>>>,
    operator: ClientAgent,
    pub meddled: Arc<Mutex<u64>>,
    pub changes: Arc<Mutex<u64>>,
}

pub async fn start(world: &World, seed: u64, bug: Option<Bug>) -> Agents {
    let health: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let client = world.add_client().await;
        let ca = ClientAgent::new(world.clone(), client, HOLD, seed ^ (0xAE00 + i as u64))
            .with_bugs(Bug::bugs(bug));
        let name = format!("agent-{i}");
        let node = LocalNode {
            name: name.clone(),
            id: String::new(),
            address: format!("10.1.0.{}", i + 1),
            datacenter: "dc1".into(),
            meta: BTreeMap::new(),
            tagged_addresses: BTreeMap::new(),
        };
        let config = LocalConfig {
            ae_interval: AE_INTERVAL,
            bug_full_sync_trusts_flags: Bug::bugs(bug).local_full_sync_trusts_flags,
            ..LocalConfig::default()
        };
        let h = health.clone();
        let oracle: tern_io_sim::Oracle = Arc::new(move |check_id: &str, probe: &Probe| {
            let status = h
                .lock()
                .unwrap()
                .get(check_id)
                .cloned()
                .unwrap_or_else(|| "passing".into());
            let output = match probe {
                Probe::Http { method, url, .. } => format!("HTTP {method} {url}: {status}"),
                Probe::Tcp { address, .. } => format!("TCP connect {address}: {status}"),
            };
            (status, output)
        });
        let agent = SimLocalAgent::spawn(
            ca,
            Datacenter("dc1".into()),
            node,
            config,
            seed ^ (0x10CA1 + i as u64),
            oracle,
        );
        agents.push((name, agent));
    }
    let operator_client = world.add_client().await;
    let operator = ClientAgent::new(world.clone(), operator_client, HOLD, seed ^ 0x0BE7)
        .with_bugs(Bug::bugs(bug));
    Agents {
        agents,
        health,
        operator,
        meddled: Arc::default(),
        changes: Arc::default(),
    }
}

fn service_def(id: &str, port: i64, rng: &mut Rng) -> ServiceDef {
    let mut checks = vec![CheckDef {
        id: String::new(),
        name: String::new(),
        notes: String::new(),
        service_id: String::new(),
        status: String::new(),
        kind: CheckKind::Ttl {
            ttl: CoreDuration::from_secs(rng.range(5, 30)),
        },
        deregister_critical_after: None,
    }];
    if rng.chance(1, 2) {
        checks.push(CheckDef {
            id: String::new(),
            name: String::new(),
            notes: String::new(),
            service_id: String::new(),
            status: String::new(),
            kind: CheckKind::Http {
                url: format!("http://10.9.9.9:{port}/health"),
                method: String::new(),
                header: BTreeMap::new(),
                body: String::new(),
                interval: CoreDuration::from_secs(rng.range(1, 5)),
                timeout: CoreDuration::from_secs(1),
                tls_skip_verify: false,
            },
            deregister_critical_after: None,
        });
    }
    let mut def = ServiceDef {
        service: Service {
            id: id.into(),
            service: id.split('-').next().unwrap_or(id).into(),
            port,
            tags: Some(vec![format!("v{}", rng.range(1, 4))]),
            ..Service::default()
        },
        checks,
    };
    def.default_checks();
    def
}

/// Change the agents at random until `stop`.
pub async fn drive(agents: Arc<Agents>, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed ^ 0xD21E);
    while !stop.load(Ordering::Relaxed) {
        madsim::time::sleep(Duration::from_millis(rng.range(100, 700))).await;
        let a = rng.range(0, AGENTS as u64) as usize;
        let (_, agent) = &agents.agents[a];
        match rng.range(0, 10) {
            0..=2 => {
                let id = format!("svc{}-{a}", rng.range(0, 4));
                let def = service_def(&id, rng.range(1000, 2000) as i64, &mut rng);
                let replace = rng.chance(1, 2);
                agent.with(|l, now, out| l.add_service(now, def, replace, true, out).ok());
            }
            3 => {
                let id = format!("svc{}-{a}", rng.range(0, 4));
                agent.with(|l, _, out| l.remove_service(&id, out).ok());
            }
            4..=6 => {
                let ids: Vec<String> = agent.read(|l| {
                    l.checks()
                        .filter(|c| c.kind == "ttl")
                        .map(|c| c.check_id.clone())
                        .collect()
                });
                if let Some(id) = ids.get(rng.range(0, ids.len().max(1) as u64) as usize) {
                    let status = ["passing", "warning", "critical"][rng.range(0, 3) as usize];
                    let output = format!("o{}", rng.range(0, 3));
                    agent.with(|l, now, out| l.update_ttl(now, id, status, &output, out).ok());
                }
            }
            7 => {
                let ids: Vec<String> = agent.read(|l| {
                    l.checks()
                        .filter(|c| c.kind == "http")
                        .map(|c| c.check_id.clone())
                        .collect()
                });
                if let Some(id) = ids.get(rng.range(0, ids.len().max(1) as u64) as usize) {
                    let status = ["passing", "warning", "critical"][rng.range(0, 3) as usize];
                    agents
                        .health
                        .lock()
                        .unwrap()
                        .insert(id.clone(), status.into());
                }
            }
            8 => {
                meddle(&agents, a, &mut rng).await;
            }
            _ => {}
        }
        *agents.changes.lock().unwrap() += 1;
    }
}

/// The operator changes agent `a`'s node in the catalog behind its back:
/// deletes one of its services, or registers a stray service there.
async fn meddle(agents: &Agents, a: usize, rng: &mut Rng) {
    let (name, agent) = &agents.agents[a];
    let op = if rng.chance(1, 2) {
        let ids: Vec<String> = agent.read(|l| l.services().map(|s| s.id.clone()).collect());
        let Some(id) = ids.get(rng.range(0, ids.len().max(1) as u64) as usize) else {
            return;
        };
        CatalogOp::Deregister(Deregister {
            node: name.clone(),
            service_id: id.clone(),
            check_id: String::new(),
        })
    } else {
        CatalogOp::Register(Box::new(Register {
            node: name.clone(),
            address: format!("10.1.0.{}", a + 1),
            datacenter: "dc1".into(),
            service: Some(Service {
                id: format!("stray-{}", rng.range(0, 1000)),
                service: "stray".into(),
                port: 1,
                ..Service::default()
            }),
            ..Register::default()
        }))
    };
    let r = agents
        .operator
        .call(request(Op::Catalog(op), ReadMode::Default))
        .await;
    if r.is_ok() {
        *agents.meddled.lock().unwrap() += 1;
    }
}

/// What must match: services by (ID, port, tags), checks by (ID, status,
/// service ID).
type Rows = (
    Vec<(String, i64, Vec<String>)>,
    Vec<(String, String, String)>,
);

fn catalog_rows(world: &World, node: &str) -> Option<Rows> {
    let leader = world.leaders().into_iter().max_by_key(|(_, t)| *t)?.0;
    world.with_server(leader, |s| {
        let fsm = s.fsm();
        let services = fsm
            .catalog_node_services(node)
            .1
            .map(|ns| ns.services)
            .unwrap_or_default();
        let mut services: Vec<(String, i64, Vec<String>)> = services
            .into_iter()
            .filter(|s| s.id != CONSUL_SERVICE)
            .map(|s| (s.id, s.port, s.tags.unwrap_or_default()))
            .collect();
        services.sort();
        let mut checks: Vec<(String, String, String)> = fsm
            .catalog_node_checks(node)
            .1
            .into_iter()
            .filter(|c| c.check_id != SERF_CHECK_ID)
            .map(|c| (c.check_id, c.status, c.service_id))
            .collect();
        checks.sort();
        (services, checks)
    })
}

fn local_rows(agent: &SimLocalAgent) -> Rows {
    agent.read(|l| {
        let mut services: Vec<(String, i64, Vec<String>)> = l
            .services()
            .map(|s| (s.id.clone(), s.port, s.tags.clone().unwrap_or_default()))
            .collect();
        services.sort();
        let mut checks: Vec<(String, String, String)> = l
            .checks()
            .map(|c| (c.check_id.clone(), c.status.clone(), c.service_id.clone()))
            .collect();
        checks.sort();
        (services, checks)
    })
}

/// After healing: one last meddling per agent, then every agent's rows in
/// the catalog must match it within [`CONVERGE_BOUND`]. The failures.
pub async fn check_converged(world: &World, agents: &Agents, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0xC0DE);
    for a in 0..AGENTS {
        meddle(agents, a, &mut rng).await;
        meddle(agents, a, &mut rng).await;
    }
    let end = tern_io_sim::now() + CoreDuration::from_nanos(CONVERGE_BOUND.as_nanos() as u64);
    loop {
        let mut diverged = Vec::new();
        for (name, agent) in &agents.agents {
            let local = local_rows(agent);
            match catalog_rows(world, name) {
                Some(remote) if remote == local => {}
                remote => diverged.push(format!(
                    "anti-entropy: {name}'s node in the catalog is {remote:?}, the agent has {local:?}"
                )),
            }
        }
        if diverged.is_empty() {
            return Vec::new();
        }
        if tern_io_sim::now() >= end {
            return diverged;
        }
        madsim::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn stop(agents: &Agents) {
    for (_, a) in &agents.agents {
        a.stop();
    }
}
