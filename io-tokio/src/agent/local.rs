//! The local agent on tokio: one task owns the core's
//! [`tern_core::local::LocalAgent`] and does its I/O.
//!
//! - HTTP and TCP probes run as tasks (an HTTP probe on a blocking thread
//!   with `ureq`, no keep-alive, Consul's `User-Agent` and `Accept`, the
//!   body read up to 4 KiB); each reports back with its generation.
//! - Catalog reads and writes of anti-entropy go through the agent's own
//!   [`AgentHandle::call`], as any client request does: on a server to its
//!   core, on a client agent to a server with Consul's retry.
//! - Definitions persist in the data dir as Consul lays it out:
//!   `services/<sha256 of ID>`, `checks/<sha256 of ID>` and
//!   `checks/state/<sha256 of ID>` (a TTL check's last status and when it
//!   expires, in Unix seconds), each written to a temporary file, synced and
//!   renamed. `-dev` keeps nothing.
//! - Reads (`/v1/agent/services`, `/checks`, ...) take the latest published
//!   [`LocalView`] without a round trip to the task; its `version` moves on
//!   every change so `/v1/agent/service/<id>?hash=` can block on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tern_core::fsm::{Check, Service};
use tern_core::local::{
    CatalogWrite, CheckDef, LocalAction, LocalAgent, LocalConfig, LocalError, LocalInput, LocalLog,
    LocalNode, Persisted, Probe, ServiceDef,
};
use tern_core::rpc::{CatalogOp, Op, ReadMode, Request};
use tern_core::{Datacenter, Instant};
use tokio::sync::{mpsc, oneshot, watch};

use super::AgentHandle;

/// What readers see: every registered service and check, as of `version`.
#[derive(Clone, Debug, Default)]
pub struct LocalView {
    pub version: u64,
    pub node: String,
    pub datacenter: String,
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
}

/// How the HTTP API reaches the local agent. Cheap to clone.
#[derive(Clone)]
pub struct LocalHandle {
    tx: mpsc::Sender<Msg>,
    view: watch::Receiver<Arc<LocalView>>,
}

enum Msg {
    AddService(
        Box<ServiceDef>,
        bool,
        oneshot::Sender<Result<(), LocalError>>,
    ),
    RemoveService(String, oneshot::Sender<Result<(), LocalError>>),
    AddCheck(Box<CheckDef>, oneshot::Sender<Result<(), LocalError>>),
    RemoveCheck(String, oneshot::Sender<Result<(), LocalError>>),
    UpdateTtl {
        id: String,
        status: String,
        output: String,
        reply: oneshot::Sender<Result<String, LocalError>>,
    },
    Done(LocalInput),
}

fn stopped() -> LocalError {
    LocalError::Invalid("the local agent has stopped".into())
}

impl LocalHandle {
    async fn ask<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<T, LocalError>>) -> Msg,
    ) -> Result<T, LocalError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).await.map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    pub async fn add_service(
        &self,
        def: ServiceDef,
        replace_checks: bool,
    ) -> Result<(), LocalError> {
        self.ask(|tx| Msg::AddService(Box::new(def), replace_checks, tx))
            .await
    }

    pub async fn remove_service(&self, id: &str) -> Result<(), LocalError> {
        let id = id.to_owned();
        self.ask(|tx| Msg::RemoveService(id, tx)).await
    }

    pub async fn add_check(&self, def: CheckDef) -> Result<(), LocalError> {
        self.ask(|tx| Msg::AddCheck(Box::new(def), tx)).await
    }

    pub async fn remove_check(&self, id: &str) -> Result<(), LocalError> {
        let id = id.to_owned();
        self.ask(|tx| Msg::RemoveCheck(id, tx)).await
    }

    pub async fn update_ttl(
        &self,
        id: &str,
        status: &str,
        output: &str,
    ) -> Result<String, LocalError> {
        let (id, status, output) = (id.to_owned(), status.to_owned(), output.to_owned());
        self.ask(|reply| Msg::UpdateTtl {
            id,
            status,
            output,
            reply,
        })
        .await
    }

    pub fn view(&self) -> Arc<LocalView> {
        self.view.borrow().clone()
    }

    /// A receiver that wakes on every change (blocking reads).
    pub fn watch(&self) -> watch::Receiver<Arc<LocalView>> {
        self.view.clone()
    }
}

/// The persisted form of a service (`services/<sha256>`).
#[derive(Serialize, Deserialize)]
struct PersistedService {
    #[serde(rename = "Service")]
    service: ServiceDef,
}

#[derive(Serialize, Deserialize)]
struct PersistedCheck {
    #[serde(rename = "Check")]
    check: CheckDef,
}

/// `checks/state/<sha256>`, as Consul's `persistedCheckState`.
#[derive(Serialize, Deserialize)]
struct PersistedTtl {
    #[serde(rename = "CheckID")]
    check_id: String,
    #[serde(rename = "Output")]
    output: String,
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "Expires")]
    expires: i64,
}

fn file_name(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `bytes` to `path` durably: a temporary file, fsync, rename, and
/// an fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Where the local agent keeps its definitions; `None` in `-dev`.
struct Store {
    root: Option<PathBuf>,
}

impl Store {
    fn services(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join("services"))
    }
    fn checks(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join("checks"))
    }
    fn state(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|r| r.join("checks").join("state"))
    }

    fn save(&self, dir: Option<PathBuf>, id: &str, json: Result<Vec<u8>, serde_json::Error>) {
        let Some(dir) = dir else { return };
        let path = dir.join(file_name(id));
        let result = json
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomic(&path, &bytes));
        if let Err(e) = result {
            tracing::error!("failed to persist {}: {e}", path.display());
        }
    }

    fn remove(&self, dir: Option<PathBuf>, id: &str) {
        let Some(dir) = dir else { return };
        let path = dir.join(file_name(id));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!("failed to remove {}: {e}", path.display()),
        }
    }

    /// Every file of `dir` parsed as `T`; a file that does not parse stops
    /// the agent with its name (never silently dropped).
    fn load<T: for<'de> Deserialize<'de>>(dir: Option<PathBuf>) -> Result<Vec<T>, String> {
        let Some(dir) = dir else {
            return Ok(Vec::new());
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("reading {}: {e}", dir.display())),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_none())
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            let bytes = std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            let parsed = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{}: not a service or check definition this agent wrote: {e} (at line {}, column {})",
                    p.display(),
                    e.line(),
                    e.column()
                )
            })?;
            out.push(parsed);
        }
        Ok(out)
    }
}

/// Start the local agent of `handle`'s node and attach it to the handle.
/// Definitions in the data dir are loaded first; one that cannot be read
/// is an error naming the file.
pub(crate) fn spawn(handle: &AgentHandle) -> Result<(), String> {
    let options = handle.options();
    let node = LocalNode {
        name: options.core.node_name.0.clone(),
        id: options.core.node_id.to_string(),
        address: options.lan.advertise.ip().to_string(),
        datacenter: options.core.datacenter.0.clone(),
        meta: options.node_meta.clone(),
        tagged_addresses: Default::default(),
    };
    let store = Store {
        root: options.data_dir.clone(),
    };
    let clock = std::time::Instant::now();
    let now = || Instant(clock.elapsed().as_nanos() as u64);
    let seed = super::super::gossip::new_generation() ^ u64::from(std::process::id());
    let mut agent = LocalAgent::new(node.clone(), LocalConfig::default(), seed, now());
    let mut out = Vec::new();
    for s in Store::load::<PersistedService>(store.services())? {
        agent
            .add_service(now(), s.service, false, false, &mut out)
            .map_err(|e| format!("restoring a service from the data dir: {e}"))?;
    }
    for c in Store::load::<PersistedCheck>(store.checks())? {
        if let Err(e) = agent.add_check(now(), c.check, false, &mut out) {
            tracing::warn!("not restoring a check from the data dir: {e}");
        }
    }
    // The agent's config files come after the data dir: a service or check
    // they define wins, and its persisted copy is dropped (Consul purges
    // it: the config is its source).
    for s in &options.services {
        let id = s.service.id.clone();
        if agent.service(&id).is_some() {
            store.remove(store.services(), &id);
        }
        agent
            .add_service(now(), s.clone(), false, false, &mut out)
            .map_err(|e| format!("services: {id}: {e}"))?;
    }
    for c in &options.checks {
        let id = c.id.clone();
        if agent.check(&id).is_some() && c.service_id.is_empty() {
            store.remove(store.checks(), &id);
        }
        agent
            .add_check(now(), c.clone(), false, &mut out)
            .map_err(|e| format!("checks: {id}: {e}"))?;
    }
    let unix = unix_now();
    for t in Store::load::<PersistedTtl>(store.state())? {
        let left = t.expires - unix;
        if left > 0 {
            agent.restore_ttl(
                now(),
                &t.check_id,
                &t.status,
                &t.output,
                tern_core::Duration::from_secs(left as u64),
            );
        } else {
            store.remove(store.state(), &t.check_id);
        }
    }
    let (tx, rx) = mpsc::channel(1024);
    let (view_tx, view_rx) = watch::channel(Arc::new(LocalView::default()));
    let local = LocalHandle {
        tx: tx.clone(),
        view: view_rx,
    };
    if handle.inner.local.set(local).is_err() {
        return Err("the local agent was started twice".into());
    }
    let mut task = Task {
        agent,
        store,
        handle: handle.clone(),
        tx,
        view: view_tx,
        version: 0,
        clock,
        datacenter: options.core.datacenter.clone(),
        node: node.name,
        dirty: false,
    };
    task.publish();
    tokio::spawn(async move { task.run(rx, out).await });
    Ok(())
}

struct Task {
    agent: LocalAgent,
    store: Store,
    handle: AgentHandle,
    tx: mpsc::Sender<Msg>,
    view: watch::Sender<Arc<LocalView>>,
    version: u64,
    clock: std::time::Instant,
    datacenter: Datacenter,
    node: String,
    /// A change since the view was last published.
    dirty: bool,
}

impl Task {
    fn now(&self) -> Instant {
        Instant(self.clock.elapsed().as_nanos() as u64)
    }

    fn deadline(&self, t: Instant) -> tokio::time::Instant {
        let now = self.now();
        tokio::time::Instant::now() + StdDuration::from_nanos(t.0.saturating_sub(now.0))
    }

    fn publish(&mut self) {
        self.version += 1;
        self.view.send_replace(Arc::new(LocalView {
            version: self.version,
            node: self.node.clone(),
            datacenter: self.datacenter.0.clone(),
            services: self.agent.services().cloned().collect(),
            checks: self.agent.checks().cloned().collect(),
        }));
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Msg>, first: Vec<LocalAction>) {
        let mut out = first;
        let mut members_every = tokio::time::interval(StdDuration::from_secs(10));
        let mut servers = self.handle.servers();
        let mut server_count = servers.borrow().len();
        loop {
            let now = self.now();
            self.agent.handle(now, LocalInput::Tick, &mut out);
            let changed = self.perform(std::mem::take(&mut out));
            if changed || std::mem::take(&mut self.dirty) {
                self.publish();
            }
            let deadline = self.agent.poll_timeout().map(|t| self.deadline(t));
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { return };
                    self.take(msg, &mut out);
                    // Take whatever else is queued before acting.
                    while let Ok(msg) = rx.try_recv() {
                        self.take(msg, &mut out);
                    }
                }
                _ = sleep_until(deadline) => {}
                _ = members_every.tick() => {
                    if let Ok(members) = self.handle.members(super::Pool::Lan).await {
                        let now = self.now();
                        self.agent.handle(now, LocalInput::ClusterSize(members.len()), &mut out);
                    }
                }
                Ok(()) = servers.changed() => {
                    let n = servers.borrow_and_update().len();
                    if n > server_count {
                        let now = self.now();
                        self.agent.handle(now, LocalInput::ServerAdded, &mut out);
                    }
                    server_count = n;
                }
            }
        }
    }

    /// Take one message. A change a client made is published before the
    /// client hears back, so its next read sees it.
    fn take(&mut self, msg: Msg, out: &mut Vec<LocalAction>) {
        let now = self.now();
        fn answer<T>(
            task: &mut Task,
            r: Result<T, LocalError>,
            reply: oneshot::Sender<Result<T, LocalError>>,
        ) {
            if r.is_ok() {
                task.publish();
            }
            let _ = reply.send(r);
        }
        match msg {
            Msg::AddService(def, replace, reply) => {
                let r = self.agent.add_service(now, *def, replace, true, out);
                answer(self, r, reply);
            }
            Msg::RemoveService(id, reply) => {
                let r = self.agent.remove_service(&id, out);
                answer(self, r, reply);
            }
            Msg::AddCheck(def, reply) => {
                let r = self.agent.add_check(now, *def, true, out);
                answer(self, r, reply);
            }
            Msg::RemoveCheck(id, reply) => {
                let r = self.agent.remove_check(&id, out);
                answer(self, r, reply);
            }
            Msg::UpdateTtl {
                id,
                status,
                output,
                reply,
            } => {
                let r = self.agent.update_ttl(now, &id, &status, &output, out);
                answer(self, r, reply);
            }
            Msg::Done(input) => {
                self.dirty |= matches!(input, LocalInput::ProbeDone { .. });
                self.agent.handle(now, input, out);
            }
        }
    }

    /// Perform actions; true if the view may have changed.
    fn perform(&mut self, actions: Vec<LocalAction>) -> bool {
        let mut changed = false;
        for a in actions {
            match a {
                LocalAction::Probe {
                    check_id,
                    generation,
                    probe,
                } => {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let (status, output) = run_probe(probe).await;
                        let _ = tx
                            .send(Msg::Done(LocalInput::ProbeDone {
                                check_id,
                                generation,
                                status,
                                output,
                            }))
                            .await;
                    });
                }
                LocalAction::ReadCatalog => {
                    let (handle, tx, node, dc) = (
                        self.handle.clone(),
                        self.tx.clone(),
                        self.node.clone(),
                        self.datacenter.clone(),
                    );
                    tokio::spawn(async move {
                        let input = read_catalog(&handle, dc, node).await;
                        let _ = tx.send(Msg::Done(input)).await;
                    });
                }
                LocalAction::Write { seq, write } => {
                    let (handle, tx, dc) = (
                        self.handle.clone(),
                        self.tx.clone(),
                        self.datacenter.clone(),
                    );
                    tokio::spawn(async move {
                        let result = write_catalog(&handle, dc, write).await;
                        let _ = tx
                            .send(Msg::Done(LocalInput::WriteDone { seq, result }))
                            .await;
                    });
                }
                LocalAction::Persist(Persisted::Service(def)) => {
                    changed = true;
                    let id = def.service.id.clone();
                    let json = serde_json::to_vec(&PersistedService { service: *def });
                    self.store.save(self.store.services(), &id, json);
                }
                LocalAction::Persist(Persisted::Check(def)) => {
                    changed = true;
                    let id = def.id.clone();
                    let json = serde_json::to_vec(&PersistedCheck { check: *def });
                    self.store.save(self.store.checks(), &id, json);
                }
                LocalAction::PersistTtl {
                    id,
                    status,
                    output,
                    ttl,
                } => {
                    changed = true;
                    let state = PersistedTtl {
                        check_id: id.clone(),
                        output,
                        status,
                        expires: unix_now() + (ttl.as_nanos() / 1_000_000_000) as i64,
                    };
                    self.store
                        .save(self.store.state(), &id, serde_json::to_vec(&state));
                }
                LocalAction::Forget { service, id } => {
                    changed = true;
                    if service {
                        self.store.remove(self.store.services(), &id);
                    } else {
                        self.store.remove(self.store.checks(), &id);
                        self.store.remove(self.store.state(), &id);
                    }
                }
                LocalAction::Log(line) => {
                    changed = true;
                    log(&line);
                }
            }
        }
        changed
    }
}

fn log(line: &LocalLog) {
    match line {
        LocalLog::CheckStatus { check_id, status } => match status.as_str() {
            "passing" => tracing::debug!(check = %check_id, "Check is passing"),
            s => tracing::warn!(check = %check_id, "Check is now {s}"),
        },
        LocalLog::TtlExpired { check_id } => {
            tracing::warn!(check = %check_id, "Check missed TTL, is now critical")
        }
        LocalLog::Synced { what, id } if what.ends_with("service") => {
            tracing::info!(service = %id, "{what}")
        }
        LocalLog::Synced { what, id } if what.ends_with("check") => {
            tracing::info!(check = %id, "{what}")
        }
        LocalLog::Synced { what, .. } => tracing::info!("{what}"),
        LocalLog::SyncFailed { full: true, error } => {
            tracing::error!(error = %error, "failed to sync remote state")
        }
        LocalLog::SyncFailed { full: false, error } => {
            tracing::error!(error = %error, "failed to sync changes")
        }
        LocalLog::Reaped {
            service_id,
            check_id,
        } => tracing::info!(
            service = %service_id,
            check = %check_id,
            "deregistered service with critical health due to exceeding health check's 'deregister_critical_service_after' timeout"
        ),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn request(dc: Datacenter, read_mode: ReadMode, op: CatalogOp) -> Request {
    Request {
        datacenter: dc,
        read_mode,
        blocking: None,
        op: Op::Catalog(op),
    }
}

/// This node's services and checks as the catalog has them (stale reads,
/// as Consul's anti-entropy reads them).
async fn read_catalog(handle: &AgentHandle, dc: Datacenter, node: String) -> LocalInput {
    let [services, checks] = tern_core::local::catalog_reads(&node);
    let services = handle
        .call(request(dc.clone(), ReadMode::Stale, services))
        .await;
    let checks = handle.call(request(dc, ReadMode::Stale, checks)).await;
    tern_core::local::catalog_input(services, checks)
}

async fn write_catalog(
    handle: &AgentHandle,
    dc: Datacenter,
    write: CatalogWrite,
) -> Result<(), String> {
    let op = tern_core::local::write_op(write);
    tern_core::local::write_result(handle.call(request(dc, ReadMode::Default, op)).await)
}

/// Run one probe: (status, output) in Consul's words.
async fn run_probe(probe: Probe) -> (String, String) {
    match probe {
        Probe::Tcp { address, timeout } => {
            let t: StdDuration = timeout.into();
            match tokio::time::timeout(t, tokio::net::TcpStream::connect(&address)).await {
                Ok(Ok(_)) => ("passing".into(), format!("TCP connect {address}: Success")),
                Ok(Err(e)) => ("critical".into(), format!("dial tcp {address}: {e}")),
                Err(_) => (
                    "critical".into(),
                    format!("dial tcp {address}: i/o timeout"),
                ),
            }
        }
        Probe::Http {
            url,
            method,
            header,
            body,
            timeout,
            tls_skip_verify,
        } => {
            let t: StdDuration = timeout.into();
            let run = tokio::task::spawn_blocking(move || {
                http_probe(&url, &method, &header, &body, t, tls_skip_verify)
            });
            match run.await {
                Ok(r) => r,
                Err(e) => ("critical".into(), format!("the probe failed: {e}")),
            }
        }
    }
}

fn http_probe(
    url: &str,
    method: &str,
    header: &std::collections::BTreeMap<String, Vec<String>>,
    body: &str,
    timeout: StdDuration,
    tls_skip_verify: bool,
) -> (String, String) {
    use std::io::Read;
    // HTTPS against Mozilla's roots (webpki-roots: Go's checks use the
    // system's); `TLSSkipVerify` turns verification off, as in Consul.
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(tls_skip_verify)
        .build();
    let config = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(10)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    let has = |name: &str| header.keys().any(|k| k.eq_ignore_ascii_case(name));
    if !has("User-Agent") {
        builder = builder.header("User-Agent", "Consul Health Check");
    }
    if !has("Accept") {
        builder = builder.header("Accept", "text/plain, text/*, */*");
    }
    builder = builder.header("Connection", "close");
    for (k, values) in header {
        for v in values {
            builder = builder.header(k.as_str(), v.as_str());
        }
    }
    let request = match builder.body(body.as_bytes().to_vec()) {
        Ok(r) => r,
        Err(e) => return ("critical".into(), e.to_string()),
    };
    match agent.run(request) {
        Ok(mut resp) => {
            let code = resp.status();
            let mut buf = Vec::new();
            let _ = resp
                .body_mut()
                .as_reader()
                .take(tern_core::local::CHECK_OUTPUT_MAX as u64)
                .read_to_end(&mut buf);
            let text = String::from_utf8_lossy(&buf);
            let status_line = format!(
                "{} {}",
                code.as_u16(),
                code.canonical_reason().unwrap_or("")
            );
            let output = format!(
                "HTTP {method} {url}: {} Output: {text}",
                status_line.trim_end()
            );
            let status = match code.as_u16() {
                200..=299 => "passing",
                429 => "warning",
                _ => "critical",
            };
            (status.into(), output)
        }
        Err(e) => ("critical".into(), format!("{method} {url}: {e}")),
    }
}
