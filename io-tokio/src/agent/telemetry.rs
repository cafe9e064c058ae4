//! What the agent loop records into [`Metrics`]: it watches the requests it
//! hands the core, the actions the core returns and the disk jobs it runs,
//! and times them with the process's clock (the core has none).
//!
//! | metric | what, here |
//! |---|---|
//! | `consul.rpc.request` (counter) | every request this server's core takes: its own HTTP API's, client agents' and those other servers forward to it |
//! | `consul.rpc.query` (counter) | those that are reads |
//! | `consul.kvs.apply`, `consul.catalog.register`, `consul.catalog.deregister`, `consul.session.apply`, `consul.session.renew`, `consul.txn.apply` (timers) | a KV write, a registration, a session create/destroy or renew, a transaction taken here, until its answer (forwarding to the leader included) |
//! | `consul.raft.apply` (counter) | commands a leader appends to its log |
//! | `consul.raft.commitTime` (timer) | a leader's command, from its append to its commit |
//! | `consul.raft.leader.dispatchLog` (timer) | a leader's disk job that writes entries, until durable |
//! | `consul.raft.leader.lastContact` (timer) | on a leader, each follower's time since it last answered, sampled every `leader_lease_timeout` |
//! | `consul.raft.state.leader`, `.candidate`, `.follower` (counters) | transitions into each role |
//! | `consul.autopilot.healthy`, `consul.autopilot.failure_tolerance` (gauges) | on a leader, from autopilot's last health sample, every `leader_lease_timeout` |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tern_core::raft::{EntryPayload, Role};
use tern_core::rpc::{CatalogOp, Op, Request};
use tern_core::{Action, Event, LogIndex, PersistOp, PersistWrite, RequestId, Server};

use crate::metrics::Metrics;

/// Requests timed at once, at most; past it the oldest is forgotten (the
/// core answers every request, so this only bounds a bug).
const TIMED_MAX: usize = 65_536;

pub(crate) struct Telemetry {
    pub(crate) metrics: Arc<Metrics>,
    timed: BTreeMap<RequestId, (StdInstant, &'static str)>,
    /// A leader's appended commands not yet committed, by index.
    dispatched: BTreeMap<LogIndex, StdInstant>,
    /// The running disk job writes a leader's entries, since then.
    dispatch_job: Option<StdInstant>,
    role: Option<Role>,
    last_contact_sampled: Option<StdInstant>,
}

impl Telemetry {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Telemetry {
        Telemetry {
            metrics,
            timed: BTreeMap::new(),
            dispatched: BTreeMap::new(),
            dispatch_job: None,
            role: None,
            last_contact_sampled: None,
        }
    }

    /// A request another server forwarded here: counted, not timed (its
    /// forwarder times it).
    pub(crate) fn forward_taken(&mut self, request: &Request) {
        self.count_request(request);
    }

    fn count_request(&mut self, request: &Request) {
        self.metrics.incr_counter("consul.rpc.request", 1.0);
        if !request.op.is_write() {
            self.metrics.incr_counter("consul.rpc.query", 1.0);
        }
    }

    pub(crate) fn request_taken(&mut self, id: RequestId, request: &Request) {
        self.count_request(request);
        let timer = match &request.op {
            Op::KvApply(_) => "consul.kvs.apply",
            Op::Catalog(CatalogOp::Register(_)) => "consul.catalog.register",
            Op::Catalog(CatalogOp::Deregister(_)) => "consul.catalog.deregister",
            // Consul's `Session.Apply` and `Txn.Apply` timers.
            Op::SessionCreate(_) | Op::SessionDestroy { .. } => "consul.session.apply",
            Op::SessionRenew { .. } => "consul.session.renew",
            Op::Txn(_) => "consul.txn.apply",
            _ => return,
        };
        if self.timed.len() >= TIMED_MAX {
            self.timed.pop_first();
        }
        self.timed.insert(id, (StdInstant::now(), timer));
    }

    pub(crate) fn responded(&mut self, id: RequestId) {
        if let Some((start, name)) = self.timed.remove(&id) {
            self.metrics.measure_since(name, start);
        }
    }

    /// The core's actions, before they run.
    pub(crate) fn actions(&mut self, actions: &[Action], server: Option<&Server>) {
        let leader = server.is_some_and(|s| s.role() == Role::Leader);
        let now = StdInstant::now();
        for a in actions {
            match a {
                Action::Persist {
                    op: PersistOp::Append(entries),
                    ..
                } if leader => {
                    for e in entries {
                        if matches!(e.payload, EntryPayload::Command(_)) {
                            self.metrics.incr_counter("consul.raft.apply", 1.0);
                            self.dispatched.insert(e.index, now);
                        }
                    }
                }
                Action::Event(Event::Committed { index }) => {
                    while let Some(entry) = self.dispatched.first_entry() {
                        if entry.key() > index {
                            break;
                        }
                        let start = entry.remove();
                        self.metrics.measure_since("consul.raft.commitTime", start);
                    }
                }
                Action::Event(Event::SteppedDown { .. }) => self.dispatched.clear(),
                _ => {}
            }
        }
        if let Some(s) = server {
            self.role_now(s);
        }
    }

    /// Counts a change of role, as hashicorp/raft's `raft.state.*`.
    fn role_now(&mut self, server: &Server) {
        let role = server.role();
        if self.role == Some(role) {
            return;
        }
        let name = match role {
            Role::Leader => Some("consul.raft.state.leader"),
            Role::Candidate => Some("consul.raft.state.candidate"),
            Role::Follower => Some("consul.raft.state.follower"),
            // hashicorp/raft has no pre-vote state to count.
            Role::PreCandidate => None,
        };
        // The role a server starts in is not a transition.
        if let (Some(_), Some(name)) = (self.role, name) {
            self.metrics.incr_counter(name, 1.0);
        }
        if role != Role::Leader {
            self.dispatched.clear();
        }
        self.role = Some(role);
    }

    pub(crate) fn job_started(&mut self, job: &[PersistWrite], server: Option<&Server>) {
        let leader = server.is_some_and(|s| s.role() == Role::Leader);
        let appends = job.iter().any(|w| matches!(w.op, PersistOp::Append(_)));
        self.dispatch_job = (leader && appends).then(StdInstant::now);
    }

    pub(crate) fn job_done(&mut self) {
        if let Some(start) = self.dispatch_job.take() {
            self.metrics
                .measure_since("consul.raft.leader.dispatchLog", start);
        }
    }

    /// On a leader, each follower's time since it last answered, once per
    /// `every`.
    pub(crate) fn sample_contact(
        &mut self,
        server: &Server,
        now: tern_core::Instant,
        every: std::time::Duration,
    ) {
        if server.role() != Role::Leader {
            return;
        }
        let wall = StdInstant::now();
        if self
            .last_contact_sampled
            .is_some_and(|t| wall.duration_since(t) < every)
        {
            return;
        }
        self.last_contact_sampled = Some(wall);
        // Consul's leader sets these from each autopilot state; before the
        // first health sample there is none to report.
        let health = server.autopilot().reply();
        if !health.servers.is_empty() {
            let healthy = if health.healthy { 1.0 } else { 0.0 };
            self.metrics.set_gauge("consul.autopilot.healthy", healthy);
            self.metrics.set_gauge(
                "consul.autopilot.failure_tolerance",
                health.failure_tolerance as f64,
            );
        }
        let me = server.config().node_id;
        for id in server.membership().servers.keys() {
            if *id == me {
                continue;
            }
            if let Some(p) = server.raft().progress(*id) {
                let ms = now.saturating_since(p.last_ack).as_nanos() as f64 / 1e6;
                self.metrics
                    .add_sample("consul.raft.leader.lastContact", ms);
            }
        }
    }
}
