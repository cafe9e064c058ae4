//! The local agent: the services and checks one agent owns, the checks it
//! runs, and anti-entropy, which keeps the catalog's rows for this node in
//! line with them (Consul's agent/local/state.go, agent/ae/ae.go and the
//! check runners of agent/checks).
//!
//! Sans-IO like the rest of the core. A driver owns one [`LocalAgent`],
//! calls its methods when a client registers or updates something (the
//! HTTP API, the definitions in the data dir at start), calls
//! [`LocalAgent::handle`] with what happened (a timer, a probe's result, a
//! catalog answer), and performs the [`LocalAction`]s it appends:
//!
//! - [`LocalAction::Probe`]: run one HTTP or TCP probe and report
//!   [`LocalInput::ProbeDone`] with the same `generation`;
//! - [`LocalAction::ReadCatalog`]: read this node's services and checks
//!   from the catalog (a full sync) and report [`LocalInput::Catalog`] or
//!   [`LocalInput::CatalogFailed`];
//! - [`LocalAction::Write`]: send one catalog write and report
//!   [`LocalInput::WriteDone`] with its `seq` (one write is in flight at a
//!   time, in the order Consul syncs: deletions, then services with their
//!   checks, then lone checks, then the node);
//! - [`LocalAction::Persist`] / [`LocalAction::Forget`]: keep or drop a
//!   definition in the data dir, so a restarted agent has it again;
//! - [`LocalAction::Log`]: a line for the operator.
//!
//! Timers: call `handle(now, LocalInput::Tick)` at [`LocalAgent::poll_timeout`].
//!
//! # Sync
//!
//! A full sync reads what the catalog has for this node and marks every
//! service and check in or out of sync (a catalog row the agent does not
//! own is deleted, except the `consul` service and the `serfHealth` check,
//! which the leader owns), then writes what differs. It runs at start,
//! every `ae_interval` plus a random stagger of up to `ae_interval` scaled
//! by the cluster size (Consul's `scaleFactor`: ×1 up to 128 nodes, then
//! one more for every doubling), within a stagger of 3 s when a server
//! joins, and 15 s (plus stagger) after a failed one. Between full syncs
//! a local change is written at once (a partial sync). A check whose
//! output changed but whose status did not is written at most once per
//! `check_update_interval` (5 min by default), as Consul defers it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fsm::{ApplyResult, Check, CheckDefinition, Deregister, Meta, Register, Service};
use crate::rng::Rng;
use crate::rpc::{CatalogOp, CatalogReply, ReplyBody, Response};
use crate::serf_health::{CONSUL_SERVICE, SERF_CHECK_ID};
use crate::{Duration, Instant};

mod table;
use table::{Row, Table};

/// Consul's `checks.MinInterval`: a shorter interval is raised to this.
pub const CHECK_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// The timeout of an HTTP or TCP probe when none is given (Consul's 10 s).
pub const CHECK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Check output kept (Consul's `DefaultBufSize`, 4 KiB).
pub const CHECK_OUTPUT_MAX: usize = 4 * 1024;
/// Consul's `ae.scaleThreshold`.
const AE_SCALE_THRESHOLD: usize = 128;
/// Consul's `retryFailIntv` and `serverUpIntv`.
const SYNC_RETRY: Duration = Duration::from_secs(15);
const SERVER_UP_STAGGER: Duration = Duration::from_secs(3);
/// How often services with `DeregisterCriticalServiceAfter` are looked at,
/// and the least that setting may be (Consul's `check_reap_interval` and
/// `check_deregister_interval_min`).
const REAP_EVERY: Duration = Duration::from_secs(30);
pub const DEREGISTER_CRITICAL_MIN: Duration = Duration::from_secs(60);
/// Limits: how many services and checks one agent keeps.
pub const LOCAL_SERVICES_MAX: usize = 10_000;
pub const LOCAL_CHECKS_MAX: usize = 20_000;

/// Health statuses (Consul's `api.HealthPassing` ...).
pub const PASSING: &str = "passing";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";
pub const MAINTENANCE: &str = "maintenance";

/// What this node is in the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    /// The node ID (a UUID), or empty.
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub meta: Meta,
    pub tagged_addresses: Meta,
}

/// Timing of sync (Consul's `ae_interval` is not an option there; the
/// default is one minute) and of output-only updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalConfig {
    pub ae_interval: Duration,
    /// Consul's `check_update_interval`; zero writes every output change.
    pub check_update_interval: Duration,
    /// Planted bug (simulator self-test): a full sync trusts the agent's
    /// own in-sync flags instead of comparing with the catalog, so what
    /// changed in the catalog behind the agent's back is never repaired.
    #[cfg(feature = "bugs")]
    pub bug_full_sync_trusts_flags: bool,
}

impl Default for LocalConfig {
    fn default() -> LocalConfig {
        LocalConfig {
            ae_interval: Duration::from_secs(60),
            check_update_interval: Duration::from_secs(300),
            #[cfg(feature = "bugs")]
            bug_full_sync_trusts_flags: false,
        }
    }
}

/// How a check gets its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// Set by clients (`/v1/agent/check/pass|warn|fail|update`); critical
    /// with "TTL expired" when not set for `ttl`.
    Ttl { ttl: Duration },
    /// 2xx passing, 429 warning, anything else or no answer critical.
    Http {
        url: String,
        /// Empty: GET.
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: String,
        interval: Duration,
        timeout: Duration,
        tls_skip_verify: bool,
    },
    /// Passing when a TCP connection opens within the timeout.
    Tcp {
        address: String,
        interval: Duration,
        timeout: Duration,
    },
}

impl CheckKind {
    /// Consul's `Type` of the check.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
        }
    }

    fn interval(&self) -> Option<Duration> {
        match self {
            CheckKind::Ttl { .. } => None,
            CheckKind::Http { interval, .. } | CheckKind::Tcp { interval, .. } => Some(*interval),
        }
    }
}

/// A check as registered (`/v1/agent/check/register`, or in a service's
/// `Check`/`Checks`), after defaults: `id` set, intervals clamped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDef {
    pub id: String,
    pub name: String,
    pub notes: String,
    /// The service this check belongs to, or empty for a node check.
    pub service_id: String,
    /// The status it starts with (Consul starts a check critical).
    pub status: String,
    pub kind: CheckKind,
    /// Remove the check's service once the check has been critical this
    /// long (Consul's `DeregisterCriticalServiceAfter`).
    pub deregister_critical_after: Option<Duration>,
}

/// A service as registered, with its checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// `id` and `service` set; indexes zero.
    pub service: Service,
    pub checks: Vec<CheckDef>,
}

impl ServiceDef {
    /// Consul's defaults for a service's checks (agent.go
    /// `addServiceInternal`): a check without an ID is `service:<id>`, or
    /// `service:<id>:<n>` (from 1) when the service has several; one
    /// without a name is `Service '<name>' check`.
    pub fn default_checks(&mut self) {
        let many = self.checks.len() > 1;
        for (i, c) in self.checks.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = if many {
                    format!("service:{}:{}", self.service.id, i + 1)
                } else {
                    format!("service:{}", self.service.id)
                };
            }
            if c.name.is_empty() {
                c.name = format!("Service '{}' check", self.service.service);
            }
            c.service_id = self.service.id.clone();
        }
    }
}

/// A probe for the driver to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: String,
        timeout: Duration,
        tls_skip_verify: bool,
    },
    Tcp {
        address: String,
        timeout: Duration,
    },
}

/// One catalog write of a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogWrite {
    Register(Box<Register>),
    Deregister(Deregister),
}

/// What the driver keeps in the data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persisted {
    Service(Box<ServiceDef>),
    Check(Box<CheckDef>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAction {
    Probe {
        check_id: String,
        generation: u64,
        probe: Probe,
    },
    ReadCatalog,
    Write {
        seq: u64,
        write: CatalogWrite,
    },
    Persist(Persisted),
    /// Keep a TTL check's last status for a restart (Consul's
    /// `checks/state`): restored only within `ttl` of now.
    PersistTtl {
        id: String,
        status: String,
        output: String,
        ttl: Duration,
    },
    /// Drop the persisted service (`service: true`) or check with this ID.
    Forget {
        service: bool,
        id: String,
    },
    Log(LocalLog),
}

/// The two catalog reads of a full sync, in order: this node's services,
/// then its checks (both stale reads, as Consul's anti-entropy reads them;
/// the driver sends them as any client request).
pub fn catalog_reads(node: &str) -> [CatalogOp; 2] {
    [
        CatalogOp::NodeServices {
            node: node.to_owned(),
        },
        CatalogOp::NodeChecks {
            node: node.to_owned(),
        },
    ]
}

/// The input a full sync's two answers make.
pub fn catalog_input(services: Response, checks: Response) -> LocalInput {
    match (services, checks) {
        (Ok(s), Ok(c)) => match (s.body, c.body) {
            (
                ReplyBody::Catalog(CatalogReply::NodeServices(ns)),
                ReplyBody::Catalog(CatalogReply::Checks(checks)),
            ) => {
                let (node, services) = match ns {
                    Some(ns) => (Some(ns.node), ns.services),
                    None => (None, Vec::new()),
                };
                LocalInput::Catalog {
                    node,
                    services,
                    checks,
                }
            }
            _ => LocalInput::CatalogFailed("unexpected answer to a catalog read".into()),
        },
        (Err(e), _) | (_, Err(e)) => LocalInput::CatalogFailed(e.to_string()),
    }
}

/// The request a sync write is sent as.
pub fn write_op(write: CatalogWrite) -> CatalogOp {
    match write {
        CatalogWrite::Register(r) => CatalogOp::Register(r),
        CatalogWrite::Deregister(d) => CatalogOp::Deregister(d),
    }
}

/// What a sync write's answer means for [`LocalInput::WriteDone`].
pub fn write_result(response: Response) -> Result<(), String> {
    match response {
        Ok(reply) => match reply.body {
            ReplyBody::Applied(ApplyResult::Catalog(Ok(()))) => Ok(()),
            ReplyBody::Applied(ApplyResult::Catalog(Err(e))) => Err(e.to_string()),
            other => Err(format!("unexpected answer to a catalog write: {other:?}")),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Lines for the operator, at Consul's levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalLog {
    /// warn: "Check is now critical" and friends (a runner's change).
    CheckStatus { check_id: String, status: String },
    /// warn: a TTL check missed its TTL.
    TtlExpired { check_id: String },
    /// info: "Synced service" / "Synced check" / "Deregistered service" ...
    Synced { what: &'static str, id: String },
    /// error: "failed to sync remote state" / "failed to sync changes".
    SyncFailed { full: bool, error: String },
    /// warn: a service was removed because its check stayed critical.
    Reaped {
        service_id: String,
        check_id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalInput {
    Tick,
    ProbeDone {
        check_id: String,
        generation: u64,
        status: String,
        output: String,
    },
    /// What the catalog has for this node (`None`: no node row).
    Catalog {
        node: Option<crate::fsm::Node>,
        services: Vec<Service>,
        checks: Vec<Check>,
    },
    CatalogFailed(String),
    WriteDone {
        seq: u64,
        result: Result<(), String>,
    },
    /// The number of LAN members (scales the sync interval).
    ClusterSize(usize),
    /// A server joined: full sync within a stagger of 3 s.
    ServerAdded,
}

/// Why a local registration or update was refused. `Display` is the text
/// the HTTP API answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalError {
    /// 404 `Unknown service ID "x". Ensure that the service ID is passed, not the service name.`
    UnknownService(String),
    /// 404 `Unknown check ID "x". Ensure that the check ID is passed, not the check name.`
    UnknownCheck(String),
    /// 404: the check's service is not registered here.
    CheckServiceMissing {
        check_id: String,
        service_id: String,
    },
    /// 500: only TTL checks take a status from a client.
    NotTtl(String),
    /// 400 with the text.
    Invalid(String),
    /// 500: a limit of this agent.
    TooMany(&'static str, usize),
}

impl core::fmt::Display for LocalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LocalError::UnknownService(id) => write!(
                f,
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
            LocalError::UnknownCheck(id) => write!(
                f,
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            ),
            LocalError::CheckServiceMissing { service_id, .. } => {
                write!(f, "ServiceID {service_id:?} does not exist")
            }
            LocalError::NotTtl(id) => write!(f, "CheckID {id:?} does not have associated TTL"),
            LocalError::Invalid(why) => f.write_str(why),
            LocalError::TooMany(what, max) => {
                write!(f, "This agent already has the most {what} it keeps ({max})")
            }
        }
    }
}

#[derive(Clone, Debug)]
struct LocalService {
    def: ServiceDef,
    in_sync: bool,
    deleted: bool,
    /// Bumped on every change: a write acknowledged for an older version
    /// leaves the entry out of sync.
    version: u64,
}

#[derive(Clone, Debug)]
struct LocalCheck {
    def: CheckDef,
    /// The catalog row as it should be.
    row: Check,
    in_sync: bool,
    deleted: bool,
    version: u64,
    /// An output-only change waits until then.
    deferred_until: Option<Instant>,
    next_run: Option<Instant>,
    /// Probe results carrying another generation are stale.
    generation: u64,
    running: bool,
    ttl_deadline: Option<Instant>,
    /// The output a TTL check had before it expired.
    ttl_output: String,
    critical_since: Option<Instant>,
}

impl Row for LocalService {
    fn in_sync(&self) -> bool {
        self.in_sync
    }
    fn deleted(&self) -> bool {
        self.deleted
    }
    fn wake(&self) -> Option<Instant> {
        None
    }
    fn group(&self) -> &str {
        ""
    }
}

impl Row for LocalCheck {
    fn in_sync(&self) -> bool {
        self.in_sync
    }
    fn deleted(&self) -> bool {
        self.deleted
    }
    /// The next probe (unless one is running), the TTL's end, the end of
    /// an output deferral: whichever comes first.
    fn wake(&self) -> Option<Instant> {
        if self.deleted {
            return None;
        }
        [
            self.next_run.filter(|_| !self.running),
            self.ttl_deadline,
            self.deferred_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }
    fn group(&self) -> &str {
        &self.def.service_id
    }
}

/// What the write in flight covers.
#[derive(Clone, Debug)]
enum Covers {
    Node,
    Service {
        id: String,
        version: u64,
        checks: Vec<(String, u64)>,
    },
    Check {
        id: String,
        version: u64,
    },
}

#[derive(Clone, Debug)]
enum Phase {
    Idle,
    Reading,
    Writing {
        seq: u64,
        covers: Covers,
        delete: bool,
    },
}

/// One agent's services, checks and sync state.
pub struct LocalAgent {
    node: LocalNode,
    config: LocalConfig,
    rng: Rng,
    services: Table<LocalService>,
    checks: Table<LocalCheck>,
    node_in_sync: bool,
    cluster_size: usize,
    phase: Phase,
    /// When the next full sync starts.
    full_at: Instant,
    /// A failed write stops partial syncs until then.
    retry_at: Option<Instant>,
    next_seq: u64,
    next_generation: u64,
    next_reap: Instant,
}

/// Consul's `scaleFactor`.
pub fn scale_factor(nodes: usize) -> u64 {
    if nodes <= AE_SCALE_THRESHOLD {
        return 1;
    }
    let ratio = (nodes as f64).log2() - (AE_SCALE_THRESHOLD as f64).log2();
    ratio.ceil() as u64 + 1
}

impl LocalAgent {
    /// An agent with nothing registered; its first full sync is due at once.
    pub fn new(node: LocalNode, config: LocalConfig, seed: u64, now: Instant) -> LocalAgent {
        LocalAgent {
            node,
            config,
            rng: Rng::new(seed),
            services: Table::default(),
            checks: Table::default(),
            node_in_sync: false,
            cluster_size: 1,
            phase: Phase::Idle,
            full_at: now,
            retry_at: None,
            next_seq: 1,
            next_generation: 1,
            next_reap: now + REAP_EVERY,
        }
    }

    pub fn node(&self) -> &LocalNode {
        &self.node
    }

    /// Up to `d` times the cluster's scale factor, at random (Consul's
    /// `Jitter`).
    fn jitter(&mut self, d: Duration) -> Duration {
        let span = d.saturating_mul(scale_factor(self.cluster_size));
        Duration(self.rng.range(0, span.0.max(1)))
    }

    // ----- registrations -------------------------------------------------

    /// Add or replace a service and its checks (`/v1/agent/service/register`).
    /// With `replace_checks`, the service's checks not in `def` are removed
    /// (`?replace-existing-checks`); otherwise they are kept.
    pub fn add_service(
        &mut self,
        now: Instant,
        mut def: ServiceDef,
        replace_checks: bool,
        persist: bool,
        out: &mut Vec<LocalAction>,
    ) -> Result<(), LocalError> {
        let id = def.service.id.clone();
        if id.is_empty() {
            return Err(LocalError::Invalid("Missing service name".into()));
        }
        if !self.services.contains_key(&id) && self.live_services() >= LOCAL_SERVICES_MAX {
            return Err(LocalError::TooMany("services", LOCAL_SERVICES_MAX));
        }
        let new_checks = def
            .checks
            .iter()
            .filter(|c| !self.checks.contains_key(&c.id))
            .count();
        if self.live_checks() + new_checks > LOCAL_CHECKS_MAX {
            return Err(LocalError::TooMany("checks", LOCAL_CHECKS_MAX));
        }
        for c in &mut def.checks {
            c.service_id = id.clone();
        }
        let checks = std::mem::take(&mut def.checks);
        if replace_checks {
            let stale: Vec<String> = self
                .checks
                .group(&id)
                .into_iter()
                .filter(|cid| !checks.iter().any(|n| &n.id == cid))
                .collect();
            for cid in stale {
                self.remove_check_entry(&cid, out);
            }
        }
        let version = self.services.get(&id).map_or(0, |s| s.version) + 1;
        self.services.insert(
            id.clone(),
            LocalService {
                def,
                in_sync: false,
                deleted: false,
                version,
            },
        );
        for c in checks {
            self.put_check(now, c, false, out);
        }
        if persist {
            if let Some(s) = self.services.get(&id) {
                out.push(LocalAction::Persist(Persisted::Service(Box::new(
                    self.definition_of(&s.def.service.id, &s.def),
                ))));
            }
        }
        Ok(())
    }

    /// The service's definition with its current checks (what is persisted).
    fn definition_of(&self, id: &str, def: &ServiceDef) -> ServiceDef {
        let mut d = def.clone();
        d.checks = self
            .checks
            .group_rows(id)
            .into_iter()
            .map(|(_, c)| c.def.clone())
            .collect();
        d
    }

    /// Remove a service and its checks (`/v1/agent/service/deregister/<id>`).
    pub fn remove_service(
        &mut self,
        id: &str,
        out: &mut Vec<LocalAction>,
    ) -> Result<(), LocalError> {
        match self.services.get_mut(id) {
            Some(mut s) if !s.deleted => {
                s.deleted = true;
                s.in_sync = false;
                s.version += 1;
            }
            _ => return Err(LocalError::UnknownService(id.to_owned())),
        }
        let owned = self.checks.group(id);
        for cid in owned {
            self.remove_check_entry(&cid, out);
        }
        out.push(LocalAction::Forget {
            service: true,
            id: id.to_owned(),
        });
        Ok(())
    }

    /// Add or replace a check (`/v1/agent/check/register`).
    pub fn add_check(
        &mut self,
        now: Instant,
        def: CheckDef,
        persist: bool,
        out: &mut Vec<LocalAction>,
    ) -> Result<(), LocalError> {
        if def.id.is_empty() {
            return Err(LocalError::Invalid("Missing check name".into()));
        }
        if !def.service_id.is_empty()
            && self.services.get(&def.service_id).is_none_or(|s| s.deleted)
        {
            return Err(LocalError::CheckServiceMissing {
                check_id: def.id.clone(),
                service_id: def.service_id.clone(),
            });
        }
        if !self.checks.contains_key(&def.id) && self.live_checks() >= LOCAL_CHECKS_MAX {
            return Err(LocalError::TooMany("checks", LOCAL_CHECKS_MAX));
        }
        let service_id = def.service_id.clone();
        self.put_check(now, def, persist && service_id.is_empty(), out);
        if persist && !service_id.is_empty() {
            // A service check lives in its service's definition.
            if let Some(s) = self.services.get(&service_id) {
                out.push(LocalAction::Persist(Persisted::Service(Box::new(
                    self.definition_of(&service_id, &s.def),
                ))));
            }
        }
        Ok(())
    }

    fn put_check(
        &mut self,
        now: Instant,
        def: CheckDef,
        persist: bool,
        out: &mut Vec<LocalAction>,
    ) {
        let status = if def.status.is_empty() {
            CRITICAL.to_owned()
        } else {
            def.status.clone()
        };
        let (service_name, service_tags) = match self.services.get(&def.service_id) {
            Some(s) => (s.def.service.service.clone(), s.def.service.tags.clone()),
            None => (String::new(), None),
        };
        let mut definition = CheckDefinition::default();
        match &def.kind {
            CheckKind::Http {
                url,
                interval,
                timeout,
                ..
            } => {
                definition.http = url.clone();
                definition.interval_ns = interval.0;
                definition.timeout_ns = timeout.0;
            }
            CheckKind::Tcp {
                address,
                interval,
                timeout,
            } => {
                definition.tcp = address.clone();
                definition.interval_ns = interval.0;
                definition.timeout_ns = timeout.0;
            }
            CheckKind::Ttl { .. } => {}
        }
        definition.deregister_critical_service_after_ns =
            def.deregister_critical_after.map_or(0, |d| d.0);
        let row = Check {
            node: self.node.name.clone(),
            check_id: def.id.clone(),
            name: def.name.clone(),
            status: status.clone(),
            notes: def.notes.clone(),
            output: String::new(),
            service_id: def.service_id.clone(),
            service_name,
            service_tags,
            kind: def.kind.type_name().to_owned(),
            definition,
            create_index: 0,
            modify_index: 0,
        };
        // Re-registering a check of the same kind keeps its health: a
        // service re-registered by a deploy script does not flap.
        let kept = self
            .checks
            .get(&def.id)
            .filter(|c| !c.deleted && c.def.kind.type_name() == def.kind.type_name())
            .map(|c| {
                (
                    c.row.status.clone(),
                    c.row.output.clone(),
                    c.ttl_deadline,
                    c.ttl_output.clone(),
                    c.critical_since,
                )
            });
        let mut row = row;
        let generation = self.next_generation;
        self.next_generation += 1;
        let next_run = def
            .kind
            .interval()
            .map(|i| now + Duration(self.rng.range(0, i.0.max(1))));
        let mut ttl_deadline = match def.kind {
            CheckKind::Ttl { ttl } => Some(now + ttl),
            _ => None,
        };
        let mut ttl_output = String::new();
        let mut critical_since = (status == CRITICAL).then_some(now);
        if let Some((status, output, deadline, last, since)) = kept {
            row.status = status;
            row.output = output;
            ttl_deadline = deadline
                .or(ttl_deadline)
                .map(|d| d.min(ttl_deadline.unwrap_or(d)));
            ttl_output = last;
            critical_since = since;
        }
        let version = self.checks.get(&def.id).map_or(0, |c| c.version) + 1;
        if persist {
            out.push(LocalAction::Persist(Persisted::Check(Box::new(
                def.clone(),
            ))));
        }
        self.checks.insert(
            def.id.clone(),
            LocalCheck {
                def,
                row,
                in_sync: false,
                deleted: false,
                version,
                deferred_until: None,
                next_run,
                generation,
                running: false,
                ttl_deadline,
                ttl_output,
                critical_since,
            },
        );
    }

    /// Remove a check (`/v1/agent/check/deregister/<id>`).
    pub fn remove_check(&mut self, id: &str, out: &mut Vec<LocalAction>) -> Result<(), LocalError> {
        let service_id = match self.checks.get(id) {
            Some(c) if !c.deleted => c.def.service_id.clone(),
            _ => return Err(LocalError::UnknownCheck(id.to_owned())),
        };
        self.remove_check_entry(id, out);
        if service_id.is_empty() {
            out.push(LocalAction::Forget {
                service: false,
                id: id.to_owned(),
            });
        } else if let Some(s) = self.services.get(&service_id).filter(|s| !s.deleted) {
            out.push(LocalAction::Persist(Persisted::Service(Box::new(
                self.definition_of(&service_id, &s.def),
            ))));
        }
        Ok(())
    }

    fn remove_check_entry(&mut self, id: &str, _out: &mut Vec<LocalAction>) {
        if let Some(mut c) = self.checks.get_mut(id) {
            c.deleted = true;
            c.in_sync = false;
            c.version += 1;
            c.next_run = None;
            c.ttl_deadline = None;
            c.generation = 0;
        }
    }

    /// A client sets a TTL check's status (`/v1/agent/check/pass|warn|fail|
    /// update`): the TTL restarts. Returns the output as kept (truncated to
    /// 4 KiB with Consul's note).
    pub fn update_ttl(
        &mut self,
        now: Instant,
        id: &str,
        status: &str,
        output: &str,
        out: &mut Vec<LocalAction>,
    ) -> Result<String, LocalError> {
        let mut c = match self.checks.get_mut(id) {
            Some(c) if !c.deleted => c,
            _ => return Err(LocalError::UnknownCheck(id.to_owned())),
        };
        let CheckKind::Ttl { ttl } = c.def.kind else {
            return Err(LocalError::NotTtl(id.to_owned()));
        };
        let output = truncate_ttl_output(output);
        c.ttl_deadline = Some(now + ttl);
        c.ttl_output = output.clone();
        drop(c);
        out.push(LocalAction::PersistTtl {
            id: id.to_owned(),
            status: status.to_owned(),
            output: output.clone(),
            ttl,
        });
        self.set_status(now, id, status, &output);
        Ok(output)
    }

    /// A TTL check's state from before a restart, `remaining` of its TTL
    /// left (the driver drops state whose TTL has passed).
    pub fn restore_ttl(
        &mut self,
        now: Instant,
        id: &str,
        status: &str,
        output: &str,
        remaining: Duration,
    ) {
        let Some(mut c) = self.checks.get_mut(id).filter(|c| !c.deleted) else {
            return;
        };
        let CheckKind::Ttl { ttl } = c.def.kind else {
            return;
        };
        c.ttl_deadline = Some(now + remaining.min(ttl));
        c.ttl_output = output.to_owned();
        drop(c);
        self.set_status(now, id, status, output);
    }

    /// A new status and output for a check; status changes are written at
    /// once, output-only changes at most once per `check_update_interval`.
    fn set_status(&mut self, now: Instant, id: &str, status: &str, output: &str) -> bool {
        let interval = self.config.check_update_interval;
        let stagger = Duration(self.rng.range(0, interval.0.max(1)));
        let Some(mut c) = self.checks.get_mut(id) else {
            return false;
        };
        if c.row.status == status && c.row.output == output {
            return false;
        }
        let status_changed = c.row.status != status;
        if status_changed {
            c.critical_since = (status == CRITICAL).then_some(now);
        }
        c.row.status = status.to_owned();
        c.row.output = output.to_owned();
        c.version += 1;
        if status_changed || interval == Duration::ZERO {
            c.in_sync = false;
            c.deferred_until = None;
        } else if c.in_sync && c.deferred_until.is_none() {
            // Stays "in sync" until the deferral ends (Consul's
            // `DeferCheck`); any status change meanwhile writes at once.
            c.deferred_until = Some(now + interval.div(2) + stagger);
        }
        status_changed
    }

    // ----- reads ---------------------------------------------------------

    fn live_services(&self) -> usize {
        self.services.live()
    }

    fn live_checks(&self) -> usize {
        self.checks.live()
    }

    /// The registered services, by ID.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services
            .values()
            .filter(|s| !s.deleted)
            .map(|s| &s.def.service)
    }

    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services
            .get(id)
            .filter(|s| !s.deleted)
            .map(|s| &s.def.service)
    }

    /// The registered checks with their current status and output, by ID.
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.values().filter(|c| !c.deleted).map(|c| &c.row)
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.get(id).filter(|c| !c.deleted).map(|c| &c.row)
    }

    pub fn check_def(&self, id: &str) -> Option<&CheckDef> {
        self.checks.get(id).filter(|c| !c.deleted).map(|c| &c.def)
    }

    /// The checks of one service, by check ID.
    pub fn service_checks(&self, service_id: &str) -> Vec<&Check> {
        self.checks
            .group_rows(service_id)
            .into_iter()
            .map(|(_, c)| &c.row)
            .collect()
    }

    /// The indexes over services and checks agree with the rows (O(n), for
    /// tests and the simulator's invariants).
    #[doc(hidden)]
    pub fn indexes_consistent(&self) -> bool {
        self.services.consistent() && self.checks.consistent()
    }

    /// True once everything registered is in the catalog as it is here.
    pub fn in_sync(&self) -> bool {
        self.node_in_sync && self.services.all_in_sync() && self.checks.all_in_sync()
    }

    // ----- time and inputs ----------------------------------------------

    /// When to call `handle(now, Tick)` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_reap);
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        at(self.checks.next_wake());
        if matches!(self.phase, Phase::Idle) {
            at(Some(self.full_at));
            at(self.retry_at);
        }
        t
    }

    pub fn handle(&mut self, now: Instant, input: LocalInput, out: &mut Vec<LocalAction>) {
        match input {
            LocalInput::Tick => {}
            LocalInput::ProbeDone {
                check_id,
                generation,
                status,
                output,
            } => self.probe_done(now, &check_id, generation, &status, &output, out),
            LocalInput::Catalog {
                node,
                services,
                checks,
            } => {
                if matches!(self.phase, Phase::Reading) {
                    self.phase = Phase::Idle;
                    self.compare(node, services, checks);
                    let d = self.config.ae_interval;
                    self.full_at = now + d + self.jitter(d);
                    self.retry_at = None;
                }
            }
            LocalInput::CatalogFailed(error) => {
                if matches!(self.phase, Phase::Reading) {
                    self.phase = Phase::Idle;
                    out.push(LocalAction::Log(LocalLog::SyncFailed { full: true, error }));
                    self.full_at = now + SYNC_RETRY + self.jitter(SYNC_RETRY);
                }
            }
            LocalInput::WriteDone { seq, result } => self.write_done(now, seq, result, out),
            LocalInput::ClusterSize(n) => self.cluster_size = n.max(1),
            LocalInput::ServerAdded => {
                let soon = now + self.jitter(SERVER_UP_STAGGER);
                self.full_at = self.full_at.min(soon);
            }
        }
        self.on_time(now, out);
        self.next_step(now, out);
    }

    fn probe_done(
        &mut self,
        now: Instant,
        id: &str,
        generation: u64,
        status: &str,
        output: &str,
        out: &mut Vec<LocalAction>,
    ) {
        let Some(mut c) = self.checks.get_mut(id) else {
            return;
        };
        if c.deleted || c.generation != generation {
            return;
        }
        c.running = false;
        if let Some(i) = c.def.kind.interval() {
            c.next_run = Some(now + i);
        }
        drop(c);
        let output = truncate(output, CHECK_OUTPUT_MAX);
        if self.set_status(now, id, status, &output) {
            out.push(LocalAction::Log(LocalLog::CheckStatus {
                check_id: id.to_owned(),
                status: status.to_owned(),
            }));
        }
    }

    /// Timers: probes due, TTLs expired, deferred outputs, the reaper.
    fn on_time(&mut self, now: Instant, out: &mut Vec<LocalAction>) {
        let mut expired = Vec::new();
        for id in self.checks.due(now) {
            let Some(mut c) = self.checks.get_mut(&id).filter(|c| !c.deleted) else {
                continue;
            };
            if !c.running && c.next_run.is_some_and(|t| t <= now) {
                c.running = true;
                c.next_run = None;
                let probe = match &c.def.kind {
                    CheckKind::Http {
                        url,
                        method,
                        header,
                        body,
                        timeout,
                        tls_skip_verify,
                        ..
                    } => Probe::Http {
                        url: url.clone(),
                        method: if method.is_empty() {
                            "GET".to_owned()
                        } else {
                            method.clone()
                        },
                        header: header.clone(),
                        body: body.clone(),
                        timeout: *timeout,
                        tls_skip_verify: *tls_skip_verify,
                    },
                    CheckKind::Tcp {
                        address, timeout, ..
                    } => Probe::Tcp {
                        address: address.clone(),
                        timeout: *timeout,
                    },
                    CheckKind::Ttl { .. } => continue,
                };
                out.push(LocalAction::Probe {
                    check_id: id.clone(),
                    generation: c.generation,
                    probe,
                });
            }
            if c.ttl_deadline.is_some_and(|t| t <= now) {
                c.ttl_deadline = None;
                expired.push((id.clone(), c.ttl_output.clone()));
            }
            if c.deferred_until.is_some_and(|t| t <= now) {
                c.deferred_until = None;
                c.in_sync = false;
            }
        }
        for (id, last) in expired {
            let output = if last.is_empty() {
                "TTL expired".to_owned()
            } else {
                format!("TTL expired (last output before timeout follows): {last}")
            };
            out.push(LocalAction::Log(LocalLog::TtlExpired {
                check_id: id.clone(),
            }));
            self.set_status(now, &id, CRITICAL, &output);
        }
        if now >= self.next_reap {
            self.next_reap = now + REAP_EVERY;
            self.reap(now, out);
        }
    }

    /// Remove services whose check has been critical longer than its
    /// `DeregisterCriticalServiceAfter`.
    fn reap(&mut self, now: Instant, out: &mut Vec<LocalAction>) {
        let doomed: Vec<(String, String)> = self
            .checks
            .iter()
            .filter(|(_, c)| !c.deleted && !c.def.service_id.is_empty())
            .filter_map(|(id, c)| {
                let after = c
                    .def
                    .deregister_critical_after?
                    .max(DEREGISTER_CRITICAL_MIN);
                let since = c.critical_since?;
                (now.saturating_since(since) >= after)
                    .then(|| (c.def.service_id.clone(), id.clone()))
            })
            .collect();
        for (service_id, check_id) in doomed {
            if self.remove_service(&service_id, out).is_ok() {
                out.push(LocalAction::Log(LocalLog::Reaped {
                    service_id,
                    check_id,
                }));
            }
        }
    }

    /// Mark what is in sync against what the catalog has (Consul's
    /// `updateSyncState`).
    fn compare(
        &mut self,
        node: Option<crate::fsm::Node>,
        services: Vec<Service>,
        checks: Vec<Check>,
    ) {
        #[cfg(feature = "bugs")]
        if self.config.bug_full_sync_trusts_flags && node.is_some() {
            return;
        }
        self.node_in_sync = node.is_some_and(|n| {
            n.address == self.node.address
                && (self.node.id.is_empty() || n.id.eq_ignore_ascii_case(&self.node.id))
                && n.meta.unwrap_or_default() == self.node.meta
                && n.tagged_addresses.unwrap_or_default() == self.node.tagged_addresses
        });
        let remote_services: BTreeMap<String, Service> =
            services.into_iter().map(|s| (s.id.clone(), s)).collect();
        for (id, remote) in &remote_services {
            if id == CONSUL_SERVICE {
                continue;
            }
            match self.services.contains_key(id) {
                true => {
                    let mut local = self.services.get_mut(id).expect("checked");
                    local.in_sync = !local.deleted && same_service(&local.def.service, remote);
                }
                false => {
                    // In the catalog but not here: delete it.
                    self.services.insert(
                        id.clone(),
                        LocalService {
                            def: ServiceDef {
                                service: remote.clone(),
                                checks: Vec::new(),
                            },
                            in_sync: false,
                            deleted: true,
                            version: 1,
                        },
                    );
                }
            }
        }
        self.services.update_all(|id, local| {
            if !remote_services.contains_key(id) {
                // Not in the catalog: a live one is written, a deleted one
                // is gone already.
                local.in_sync = local.deleted;
            }
        });
        self.services.retain(|_, s| !(s.deleted && s.in_sync));
        let remote_checks: BTreeMap<String, Check> = checks
            .into_iter()
            .map(|c| (c.check_id.clone(), c))
            .collect();
        for (id, remote) in &remote_checks {
            if id == SERF_CHECK_ID {
                continue;
            }
            match self.checks.contains_key(id) {
                true => {
                    let mut local = self.checks.get_mut(id).expect("checked");
                    let same = same_check(&local.row, remote);
                    local.in_sync = !local.deleted
                        && (same
                            || local.deferred_until.is_some() && remote.status == local.row.status);
                }
                false => {
                    let row = remote.clone();
                    self.checks.insert(
                        id.clone(),
                        LocalCheck {
                            def: CheckDef {
                                id: id.clone(),
                                name: row.name.clone(),
                                notes: String::new(),
                                service_id: row.service_id.clone(),
                                status: String::new(),
                                kind: CheckKind::Ttl {
                                    ttl: Duration::ZERO,
                                },
                                deregister_critical_after: None,
                            },
                            row,
                            in_sync: false,
                            deleted: true,
                            version: 1,
                            deferred_until: None,
                            next_run: None,
                            generation: 0,
                            running: false,
                            ttl_deadline: None,
                            ttl_output: String::new(),
                            critical_since: None,
                        },
                    );
                }
            }
        }
        self.checks.update_all(|id, local| {
            if !remote_checks.contains_key(id) {
                local.in_sync = local.deleted;
            }
        });
        self.checks.retain(|_, c| !(c.deleted && c.in_sync));
    }

    /// Start the next read or write, if one is due and none is in flight.
    fn next_step(&mut self, now: Instant, out: &mut Vec<LocalAction>) {
        if !matches!(self.phase, Phase::Idle) {
            return;
        }
        if now >= self.full_at {
            self.phase = Phase::Reading;
            // Until the answer, nothing else is started; if it never
            // comes the driver reports a failure.
            self.full_at = Instant(u64::MAX);
            out.push(LocalAction::ReadCatalog);
            return;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        self.retry_at = None;
        let Some((write, covers, delete)) = self.next_write() else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.phase = Phase::Writing {
            seq,
            covers,
            delete,
        };
        out.push(LocalAction::Write { seq, write });
    }

    fn node_register(&self) -> Register {
        Register {
            id: self.node.id.clone(),
            node: self.node.name.clone(),
            address: self.node.address.clone(),
            datacenter: self.node.datacenter.clone(),
            tagged_addresses: (!self.node.tagged_addresses.is_empty())
                .then(|| self.node.tagged_addresses.clone()),
            node_meta: Some(self.node.meta.clone()),
            service: None,
            checks: Vec::new(),
            skip_node_update: false,
        }
    }

    /// The next write of a sync, in Consul's order: the node, then
    /// services (a deletion, or a registration with the service's checks),
    /// then checks.
    fn next_write(&self) -> Option<(CatalogWrite, Covers, bool)> {
        if !self.node_in_sync {
            return Some((
                CatalogWrite::Register(Box::new(self.node_register())),
                Covers::Node,
                false,
            ));
        }
        let deregister = |service_id: &str, check_id: &str| {
            CatalogWrite::Deregister(Deregister {
                node: self.node.name.clone(),
                service_id: service_id.to_owned(),
                check_id: check_id.to_owned(),
            })
        };
        if let Some((id, s)) = self.services.first_dirty() {
            if s.deleted {
                return Some((
                    deregister(id, ""),
                    Covers::Service {
                        id: id.clone(),
                        version: s.version,
                        checks: Vec::new(),
                    },
                    true,
                ));
            }
            let checks: Vec<&LocalCheck> = self
                .checks
                .group_rows(id)
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            let mut reg = self.node_register();
            reg.skip_node_update = self.node_in_sync;
            reg.service = Some(s.def.service.clone());
            reg.checks = checks.iter().map(|c| c.row.clone()).collect();
            return Some((
                CatalogWrite::Register(Box::new(reg)),
                Covers::Service {
                    id: id.clone(),
                    version: s.version,
                    checks: checks
                        .iter()
                        .map(|c| (c.def.id.clone(), c.version))
                        .collect(),
                },
                false,
            ));
        }
        if let Some((id, c)) = self.checks.first_dirty() {
            if c.deleted {
                return Some((
                    deregister("", id),
                    Covers::Check {
                        id: id.clone(),
                        version: c.version,
                    },
                    true,
                ));
            }
            let mut reg = self.node_register();
            reg.skip_node_update = self.node_in_sync;
            reg.checks = vec![c.row.clone()];
            return Some((
                CatalogWrite::Register(Box::new(reg)),
                Covers::Check {
                    id: id.clone(),
                    version: c.version,
                },
                false,
            ));
        }
        None
    }

    fn write_done(
        &mut self,
        now: Instant,
        seq: u64,
        result: Result<(), String>,
        out: &mut Vec<LocalAction>,
    ) {
        let Phase::Writing {
            seq: s,
            covers,
            delete,
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        if s != seq {
            self.phase = Phase::Writing {
                seq: s,
                covers,
                delete,
            };
            return;
        }
        if let Err(error) = result {
            out.push(LocalAction::Log(LocalLog::SyncFailed {
                full: false,
                error,
            }));
            self.retry_at = Some(now + SYNC_RETRY + self.jitter(SYNC_RETRY));
            return;
        }
        match covers {
            Covers::Node => {
                self.node_in_sync = true;
                out.push(LocalAction::Log(LocalLog::Synced {
                    what: "Synced node info",
                    id: self.node.name.clone(),
                }));
            }
            Covers::Service {
                id,
                version,
                checks,
            } => {
                if self.services.get(&id).is_some_and(|s| s.version == version) {
                    if delete {
                        self.services.remove(&id);
                        // Consul's catalog drops the service's checks with it.
                        self.checks
                            .retain(|_, c| !(c.deleted && c.def.service_id == id));
                    } else if let Some(mut svc) = self.services.get_mut(&id) {
                        svc.in_sync = true;
                    }
                }
                // A registration carries the node too.
                if !delete {
                    self.node_in_sync = true;
                }
                for (cid, v) in checks {
                    if let Some(mut c) = self.checks.get_mut(&cid) {
                        if c.version == v {
                            c.in_sync = true;
                        }
                    }
                }
                out.push(LocalAction::Log(LocalLog::Synced {
                    what: if delete {
                        "Deregistered service"
                    } else {
                        "Synced service"
                    },
                    id,
                }));
            }
            Covers::Check { id, version } => {
                if self.checks.get(&id).is_some_and(|c| c.version == version) {
                    if delete {
                        self.checks.remove(&id);
                    } else if let Some(mut c) = self.checks.get_mut(&id) {
                        c.in_sync = true;
                    }
                }
                if !delete {
                    self.node_in_sync = true;
                }
                out.push(LocalAction::Log(LocalLog::Synced {
                    what: if delete {
                        "Deregistered check"
                    } else {
                        "Synced check"
                    },
                    id,
                }));
            }
        }
    }
}

/// Consul's comparison of a local service with the catalog's
/// (`NodeService.IsSame`, less the indexes).
fn same_service(a: &Service, b: &Service) -> bool {
    let tags = |t: &Option<Vec<String>>| t.clone().unwrap_or_default();
    let meta = |m: &Option<Meta>| m.clone().unwrap_or_default();
    a.kind == b.kind
        && a.id == b.id
        && a.service == b.service
        && tags(&a.tags) == tags(&b.tags)
        && a.address == b.address
        && a.tagged_addresses == b.tagged_addresses
        && meta(&a.meta) == meta(&b.meta)
        && a.port == b.port
        && a.weights.unwrap_or(crate::fsm::Weights::DEFAULT)
            == b.weights.unwrap_or(crate::fsm::Weights::DEFAULT)
        && a.enable_tag_override == b.enable_tag_override
}

/// Consul's `HealthCheck.IsSame`: what the agent owns of a check row.
fn same_check(a: &Check, b: &Check) -> bool {
    a.node.eq_ignore_ascii_case(&b.node)
        && a.check_id == b.check_id
        && a.name == b.name
        && a.status == b.status
        && a.notes == b.notes
        && a.output == b.output
        && a.service_id == b.service_id
        && a.service_name == b.service_name
}

/// At most `max` bytes, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Consul's `CheckTTL.SetStatus` truncation note.
fn truncate_ttl_output(output: &str) -> String {
    if output.len() <= CHECK_OUTPUT_MAX {
        return output.to_owned();
    }
    format!(
        "{} ... (captured {} of {} bytes)",
        truncate(output, CHECK_OUTPUT_MAX),
        CHECK_OUTPUT_MAX,
        output.len()
    )
}

/// The status a set of checks adds up to (Consul's `AggregatedStatus`:
/// maintenance, then critical, then warning, else passing).
pub fn aggregate<'a>(statuses: impl IntoIterator<Item = &'a str>) -> &'static str {
    let mut worst = PASSING;
    for s in statuses {
        match s {
            MAINTENANCE => return MAINTENANCE,
            CRITICAL => worst = CRITICAL,
            WARNING if worst == PASSING => worst = WARNING,
            _ => {}
        }
    }
    worst
}
