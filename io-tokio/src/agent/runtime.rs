//! The agent task: owns the `Server`, turns the world into `Input`s and
//! executes the `Action`s in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tern_core::autopilot::AutopilotEvent;
use tern_core::autopilot::GossipStatus;
use tern_core::fsm::FsmView;
use tern_core::raft::{
    Durable, LogGarbage, Member, Membership, Role, Snapshot, SnapshotData, SnapshotMeta, Suffrage,
};
use tern_core::rpc::{Response, RpcError};
use tern_core::serf_health::LanMember;
use tern_core::{
    Action, Event, Input, Instant, NodeId, NodeName, Outbox, PersistOp, PersistWrite, RequestId,
    Server,
};
use tokio::sync::{mpsc, oneshot};

use super::members::{MemberReport, Pools, ServerReport};
use super::telemetry::Telemetry;
use super::{AgentHandle, AgentOptions, AgentStatus, HandleInner, ToAgent};
use crate::net::{self, Inbound, Pool};
use crate::storage::{open_data_dir, MemStorage, Storage, StorageError};

/// A running agent.
pub struct Agent {
    pub handle: AgentHandle,
    pub task: tokio::task::JoinHandle<()>,
    /// Warnings from opening the data dir (e.g. a torn tail truncated).
    pub warnings: Vec<String>,
    /// TLS on the server port, if configured: SIGHUP reloads it.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// Inputs taken in one go before the actions they cause are queued.
const INPUT_BATCH_MAX: usize = 256;

/// A disk job slower than this is logged: every reply behind it waited.
const SLOW_DISK_JOB: StdDuration = StdDuration::from_millis(100);

/// Durable writes handed to the disk thread in one go (the outbox's plan:
/// which of them to fsync).
type DiskJob = Vec<PersistWrite>;

/// Open the data dir, bind the server port, and start the agent task. A
/// corrupt data dir is an error naming the file and offset.
pub async fn start(options: AgentOptions) -> Result<Agent, String> {
    // A bad certificate, key or CA file stops the agent here, named.
    let tls = crate::tls::Tls::load(&options.tls)?;
    let (storage, durable, warnings): (Box<dyn Storage>, Durable, Vec<String>) =
        match &options.data_dir {
            None => (
                Box::new(MemStorage {
                    durable: Durable::default(),
                }),
                Durable::default(),
                Vec::new(),
            ),
            Some(dir) => {
                let (dd, durable, warnings) = open_data_dir(dir, crate::storage::SEGMENT_BYTES_MAX)
                    .map_err(|e| e.to_string())?;
                (Box::new(dd), durable, warnings)
            }
        };
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let listener = tokio::net::TcpListener::bind(options.server_addr)
        .await
        .map_err(|e| format!("binding the server port {}: {e}", options.server_addr))?;
    let in_cluster = !(durable.entries.is_empty() && durable.snapshot.is_none());
    let (pools, reports) = Pools::start(&options, in_cluster).await?;
    let pools = Arc::new(pools);
    Pools::spawn_retry_joins(&pools, &options);
    let (inbound_tx, inbound_rx) = mpsc::channel(4096);
    let refusals = net::Refusals::default();
    tokio::spawn(net::serve(
        listener,
        options.core.frame_bytes_max,
        inbound_tx,
        refusals.clone(),
        options.limits.rpc_max_conns_per_client,
        tls.clone(),
    ));
    let (tx, rx) = mpsc::channel(4096);
    let handle = AgentHandle {
        inner: Arc::new(HandleInner {
            tx,
            options: options.clone(),
            left: Arc::new(tokio::sync::watch::Sender::new(false)),
            pools: Some(pools.clone()),
            metrics: Default::default(),
            local: Default::default(),
        }),
    };
    super::local::spawn(&handle)?;
    let left = handle.inner.left.clone();
    let metrics = handle.inner.metrics.clone();
    let task = tokio::spawn(run(
        options,
        metrics,
        storage,
        durable,
        Channels {
            rx,
            inbound: inbound_rx,
            reports,
        },
        refusals,
        left,
        pools,
        tls.clone(),
    ));
    Ok(Agent {
        handle,
        task,
        warnings,
        tls,
    })
}

struct Clock {
    start: std::time::Instant,
}

impl Clock {
    fn now(&self) -> Instant {
        Instant(self.start.elapsed().as_nanos() as u64)
    }
    fn deadline(&self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + StdDuration::from_nanos(t.0))
    }
}

struct Loop {
    options: AgentOptions,
    clock: Clock,
    /// The disk thread, which owns the storage.
    disk: mpsc::UnboundedSender<DiskJob>,
    /// The thread that encodes own snapshots and writes their files beside
    /// the log.
    snapshots: mpsc::UnboundedSender<SnapshotJob>,
    /// Writes in flight and the sends that wait for them: the same
    /// scheduler the simulator runs.
    outbox: Outbox,
    pool: Pool,
    /// Inbound connections by peer, to close a refused peer's.
    refusals: net::Refusals,
    server: Option<Server>,
    /// Who asked to leave: answered when the leave is complete.
    leaving: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Set when the leave is complete; the process exits on it.
    left: Arc<tokio::sync::watch::Sender<bool>>,
    /// The servers of this datacenter the LAN pool has reported, latest
    /// report per node: counted for `bootstrap_expect`, handed to the
    /// server when it starts.
    known: BTreeMap<NodeId, ServerReport>,
    /// The latest LAN report of every member of this datacenter, by name:
    /// handed to the server when it starts (`tern_core::serf_health`).
    known_members: BTreeMap<String, LanMember>,
    /// Servers already told about a conflicting `expect` tag.
    expect_conflicts: std::collections::BTreeSet<NodeId>,
    pools: Arc<Pools>,
    /// Told when the gossip leave (WAN, then LAN) is done.
    gossip_left_tx: mpsc::Sender<()>,
    /// The leave has started (core and gossip).
    leave_started: bool,
    /// The core's leave is over (`Event::Left`, or there was no server).
    core_left: bool,
    gossip_left: bool,
    next_request: u64,
    waiting: BTreeMap<RequestId, oneshot::Sender<Response>>,
    /// `GET /v1/snapshot`s waiting for the state to reach an index.
    saving: Vec<(u64, oneshot::Sender<Result<super::SavedState, String>>)>,
    /// What `/v1/agent/metrics` shows of the core's work.
    telemetry: Telemetry,
}

/// What the agent task reads from.
struct Channels {
    rx: mpsc::Receiver<ToAgent>,
    inbound: mpsc::Receiver<Inbound>,
    /// Server members of this datacenter, from the LAN pool.
    reports: mpsc::Receiver<MemberReport>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    options: AgentOptions,
    metrics: Arc<crate::metrics::Metrics>,
    storage: Box<dyn Storage>,
    durable: Durable,
    channels: Channels,
    refusals: net::Refusals,
    left: Arc<tokio::sync::watch::Sender<bool>>,
    pools: Arc<Pools>,
    tls: Option<Arc<crate::tls::Tls>>,
) {
    let Channels {
        mut rx,
        mut inbound,
        mut reports,
    } = channels;
    let (gossip_left_tx, mut gossip_left_rx) = mpsc::channel(1);
    let (done_tx, mut disk_done) = mpsc::unbounded_channel();
    let snapshots = spawn_snapshot_thread(options.data_dir.clone(), done_tx.clone());
    let disk = spawn_disk_thread(storage, done_tx, snapshots.clone());
    let mut l = Loop {
        clock: Clock {
            start: std::time::Instant::now(),
        },
        known: BTreeMap::new(),
        known_members: BTreeMap::new(),
        expect_conflicts: Default::default(),
        outbox: Outbox::for_config(&options.core),
        disk,
        snapshots,
        pool: Pool::new(Some(options.server_addr.ip())).with_tls(tls),
        refusals,
        server: None,
        next_request: 0,
        waiting: BTreeMap::new(),
        saving: Vec::new(),
        leaving: Vec::new(),
        left,
        pools,
        gossip_left_tx,
        leave_started: false,
        core_left: false,
        gossip_left: false,
        telemetry: Telemetry::new(metrics),
        options,
    };
    let fresh = durable.entries.is_empty() && durable.snapshot.is_none();
    if !fresh || l.options.bootstrap_expect <= 1 {
        l.start_server(durable, l.options.bootstrap_expect == 1);
    } else {
        // Consul's `maybeBootstrap`: wait until the LAN pool shows
        // `bootstrap_expect` alive servers of this datacenter (ourselves
        // included), then bootstrap with them; never if one of them is
        // already part of a cluster (then the leader adds us).
        let mut durable = Some(durable);
        while l.server.is_none() {
            tokio::select! {
                done = disk_done.recv() => l.disk_done(done),
                Some(m) = reports.recv() => l.known_server(m),
                Some(msg) = rx.recv() => l.before_bootstrap(msg),
                Some(()) = gossip_left_rx.recv() => l.gossip_leave_done(),
                Some(inb) = inbound.recv() => match inb {
                    // No server yet: a client asks another one.
                    Inbound::Call(_, tx) => {
                        let _ = tx.send(Err(RpcError::NoLeader));
                    }
                    Inbound::Message(_) | Inbound::Gone(_) => {}
                },
                else => return,
            }
            if l.leave_started {
                continue;
            }
            match l.bootstrap_decision() {
                Bootstrap::Wait => {}
                Bootstrap::Now(n) => {
                    tracing::info!("found {n} servers in the LAN pool, bootstrapping");
                    l.start_server(durable.take().unwrap_or_default(), true);
                }
                Bootstrap::Never(by) => {
                    tracing::warn!(
                        "Existing Raft peers reported by server {by}, disabling bootstrap mode"
                    );
                    l.start_server(durable.take().unwrap_or_default(), false);
                }
            }
        }
    }

    let mut inputs: Vec<Input> = Vec::new();
    let mut out: Vec<Action> = Vec::new();
    loop {
        l.answer_saves();
        let deadline = l
            .server
            .as_ref()
            .and_then(|s| s.poll_timeout())
            .map(|t| l.clock.deadline(t));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            done = disk_done.recv() => {
                l.disk_done(done);
                continue;
            }
            msg = rx.recv() => match msg {
                Some(m) => l.take(m, &mut inputs),
                None => return,
            },
            Some(inb) = inbound.recv() => l.take_inbound(inb, &mut inputs),
            Some(m) = reports.recv() => l.take_report(m, &mut inputs),
            Some(()) = gossip_left_rx.recv() => l.gossip_leave_done(),
            _ = sleep => inputs.push(Input::Tick),
        }
        // Take whatever else is waiting, so its writes share one fsync.
        while inputs.len() < INPUT_BATCH_MAX {
            if let Ok(m) = rx.try_recv() {
                l.take(m, &mut inputs);
            } else if let Ok(inb) = inbound.try_recv() {
                l.take_inbound(inb, &mut inputs);
            } else if let Ok(m) = reports.try_recv() {
                l.take_report(m, &mut inputs);
            } else {
                break;
            }
        }
        let now = l.clock.now();
        if let Some(server) = l.server.as_mut() {
            for input in inputs.drain(..) {
                server.handle(now, input, &mut out);
            }
            // A due timer is fired even if other inputs woke us.
            if server.poll_timeout().is_some_and(|t| t <= now) {
                server.handle(now, Input::Tick, &mut out);
            }
            let every = StdDuration::from_nanos(l.options.core.leader_lease_timeout.as_nanos());
            l.telemetry.sample_contact(server, now, every);
        }
        inputs.clear();
        l.pump(&mut out);
    }
}

/// The disk thread: performs each job's writes in order and reports when the
/// job is durable (or the first error). Blocking file I/O stays off the
/// async workers, and the agent keeps taking inputs while an fsync runs.
/// Files the storage no longer needs (old snapshot files) go to the
/// snapshot thread to delete, so no unlink of a big file holds up the log.
fn spawn_disk_thread(
    mut storage: Box<dyn Storage>,
    done_tx: mpsc::UnboundedSender<DiskReport>,
    snapshots: mpsc::UnboundedSender<SnapshotJob>,
) -> mpsc::UnboundedSender<DiskJob> {
    let (job_tx, mut job_rx) = mpsc::unbounded_channel::<DiskJob>();
    std::thread::Builder::new()
        .name("tern-disk".into())
        .spawn(move || {
            // Whether the storage may have files a purge left dead: deleted
            // one at a time while no job waits (`Storage::tidy`).
            let mut untidy = false;
            loop {
                let job = if untidy {
                    match job_rx.try_recv() {
                        Ok(job) => job,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            match storage.tidy() {
                                Ok(more) => untidy = more,
                                Err(e) => {
                                    let _ = done_tx.send(DiskReport::Failed(e.to_string()));
                                    return;
                                }
                            }
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                } else {
                    match job_rx.blocking_recv() {
                        Some(job) => job,
                        None => return,
                    }
                };
                untidy = true;
                let started = std::time::Instant::now();
                let result = persist_job(storage.as_mut(), &job, &done_tx);
                let superseded = storage.take_superseded();
                if !superseded.is_empty() {
                    let _ = snapshots.send(SnapshotJob::Remove(superseded));
                }
                let took = started.elapsed();
                if took > SLOW_DISK_JOB {
                    let snapshots = job
                        .iter()
                        .filter(|w| {
                            matches!(
                                w.op,
                                PersistOp::SaveSnapshot(_) | PersistOp::InstallSnapshot(_)
                            )
                        })
                        .count();
                    tracing::warn!(
                        "durable writes took {} ms ({} writes, {snapshots} of them snapshots); \
                         everything queued behind them waited",
                        took.as_millis(),
                        job.len()
                    );
                }
                let report = match result {
                    Ok(()) => DiskReport::Done,
                    Err(e) => DiskReport::Failed(e),
                };
                if done_tx.send(report).is_err() {
                    return;
                }
            }
        })
        .expect("spawning the disk thread");
    job_tx
}

/// How many bytes the snapshot thread encodes between two offers of the
/// CPU to other threads (`sched_yield`).
const SNAPSHOT_YIELD_BYTES: usize = 64 << 10;

/// What the snapshot thread is asked to do.
enum SnapshotJob {
    /// Encode a point-in-time view of the state machine
    /// (`Action::BuildSnapshot`); the bytes go back to the core.
    Build { meta: SnapshotMeta, view: FsmView },
    /// Write an own snapshot file beside the log (`Outbox::start_background`).
    Write(PersistWrite),
    /// Read a snapshot's bytes back from its file (`Action::LoadSnapshot`),
    /// to stream them to a follower.
    Load(SnapshotMeta),
    /// Delete snapshot files the data dir no longer keeps
    /// (`Storage::take_superseded`). Nothing waits for it.
    Remove(Vec<std::path::PathBuf>),
    /// Free log entries the core no longer holds (`Action::Discard`).
    /// Nothing waits for it.
    Discard(LogGarbage),
}

/// The thread that encodes a server's own snapshots and writes their files
/// beside the log, with its own handle on the filesystem: the agent task
/// keeps serving requests while a snapshot is encoded, and WAL appends and
/// their fsyncs never wait for a snapshot file. `-dev` has no files: the
/// snapshot is "written" at once.
fn spawn_snapshot_thread(
    data_dir: Option<std::path::PathBuf>,
    done_tx: mpsc::UnboundedSender<DiskReport>,
) -> mpsc::UnboundedSender<SnapshotJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<SnapshotJob>();
    std::thread::Builder::new()
        .name("tern-snapshot".into())
        .spawn(move || {
            let mut fs = crate::storage::StdFs::new();
            // Superseded snapshot files are deleted, but for one kept to be
            // overwritten by the next snapshot (no blocks freed and taken).
            let mut lane = crate::storage::SnapshotLane::new();
            // `-dev` has no files: the last snapshots "written" stay here,
            // two as a data dir keeps (only a `-dev` cluster reads them).
            let mut in_memory: VecDeque<Snapshot> = VecDeque::new();
            while let Some(job) = rx.blocking_recv() {
                let w = match job {
                    SnapshotJob::Write(w) => w,
                    SnapshotJob::Load(meta) => {
                        let started = std::time::Instant::now();
                        let report = match &data_dir {
                            Some(dir) => match crate::storage::read_snapshot_data(&mut fs, dir, &meta) {
                                Ok(data) => {
                                    match &data {
                                        Some(d) => tracing::info!(
                                            "snapshot at index {} read back to send it: {} bytes in {} ms",
                                            meta.last_index.0,
                                            d.len(),
                                            started.elapsed().as_millis()
                                        ),
                                        None => tracing::info!(
                                            "snapshot at index {} was replaced before it was read back",
                                            meta.last_index.0
                                        ),
                                    }
                                    DiskReport::Loaded { meta, data }
                                }
                                Err(e) => DiskReport::Failed(format!("reading a snapshot back: {e}")),
                            },
                            None => {
                                let data = in_memory
                                    .iter()
                                    .find(|s| s.meta == meta)
                                    .map(|s| s.data.clone());
                                DiskReport::Loaded { meta, data }
                            }
                        };
                        if done_tx.send(report).is_err() {
                            return;
                        }
                        continue;
                    }
                    SnapshotJob::Discard(garbage) => {
                        drop(garbage);
                        continue;
                    }
                    SnapshotJob::Remove(paths) => {
                        // A failure loses nothing: recovery deletes the
                        // snapshot files past the newest two.
                        if let Err(e) = lane.remove_superseded(&mut fs, &paths) {
                            tracing::warn!("deleting an old snapshot file: {e}");
                        }
                        continue;
                    }
                    SnapshotJob::Build { meta, view } => {
                        let started = std::time::Instant::now();
                        // The CPU is offered back every SNAPSHOT_YIELD_BYTES
                        // (about 0.2 ms of encoding): on a busy machine a
                        // waking agent or disk thread then runs at once
                        // rather than after this thread's time slice.
                        let data = view
                            .encode_pausing(SNAPSHOT_YIELD_BYTES, &mut std::thread::yield_now);
                        tracing::info!(
                            "snapshot at index {} encoded off the agent task: {} bytes in {} ms",
                            meta.last_index.0,
                            data.len(),
                            started.elapsed().as_millis()
                        );
                        if done_tx.send(DiskReport::Built { meta, data }).is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let report = match (&data_dir, &w.op) {
                    (Some(dir), PersistOp::SaveSnapshot(s)) => {
                        let started = std::time::Instant::now();
                        loop {
                            match lane.write(&mut fs, dir, s) {
                                Ok(()) => break DiskReport::BackgroundDone,
                                Err(StorageError::NoSpace { path }) => {
                                    tracing::error!(
                                        "{} is full: the snapshot is retried every {} s",
                                        path.display(),
                                        DISK_FULL_RETRY.as_secs()
                                    );
                                    std::thread::sleep(DISK_FULL_RETRY);
                                }
                                Err(e) => break DiskReport::Failed(e.to_string()),
                            }
                        }
                        .log_took(started, s.data.len())
                    }
                    (None, PersistOp::SaveSnapshot(s)) => {
                        in_memory.push_back(s.clone());
                        if in_memory.len() > 2 {
                            in_memory.pop_front();
                        }
                        DiskReport::BackgroundDone
                    }
                    _ => DiskReport::BackgroundDone,
                };
                if done_tx.send(report).is_err() {
                    return;
                }
            }
        })
        .expect("spawning the snapshot thread");
    tx
}

impl DiskReport {
    fn log_took(self, started: std::time::Instant, bytes: usize) -> DiskReport {
        tracing::info!(
            "snapshot file of {bytes} bytes written beside the log in {} ms",
            started.elapsed().as_millis()
        );
        self
    }
}

/// What the disk thread tells the agent.
enum DiskReport {
    /// The running job is durable.
    Done,
    /// The disk is full (ENOSPC): the job is retried until there is room
    /// (`false` once a retry went through).
    Full(bool),
    /// An own snapshot file written beside the log is on disk.
    BackgroundDone,
    /// An own snapshot is encoded (`SnapshotJob::Build`).
    Built { meta: SnapshotMeta, data: Vec<u8> },
    /// A snapshot's bytes read back (`SnapshotJob::Load`); `None`: no such
    /// file any more.
    Loaded {
        meta: SnapshotMeta,
        data: Option<SnapshotData>,
    },
    /// A durable write failed: the agent must stop.
    Failed(String),
}

/// How often a write refused for lack of space is tried again.
const DISK_FULL_RETRY: StdDuration = StdDuration::from_secs(1);

/// Performs a job's writes in order. A full disk is not an error: the data
/// dir cut the partial write back, so the write is tried again until there
/// is room, and the agent is told (it refuses writes meanwhile). Any other
/// failure ends the job.
fn persist_job(
    storage: &mut dyn Storage,
    job: &DiskJob,
    report: &mpsc::UnboundedSender<DiskReport>,
) -> Result<(), String> {
    for w in job {
        let mut full = false;
        loop {
            match storage.persist(&w.op, w.sync) {
                Ok(()) => break,
                Err(StorageError::NoSpace { path }) => {
                    if !full {
                        tracing::error!(
                            "{} is full: refusing writes until there is room (retrying every {} s)",
                            path.display(),
                            DISK_FULL_RETRY.as_secs()
                        );
                        full = true;
                        let _ = report.send(DiskReport::Full(true));
                    }
                    std::thread::sleep(DISK_FULL_RETRY);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if full {
            tracing::info!("the data dir has room again: taking writes");
            let _ = report.send(DiskReport::Full(false));
        }
    }
    Ok(())
}

/// What a fresh server with `bootstrap_expect` does next.
enum Bootstrap {
    /// Too few servers yet, or they disagree on `expect`.
    Wait,
    /// This many alive servers: bootstrap with them.
    Now(usize),
    /// This server is part of a cluster already: start without a
    /// configuration and wait to be added.
    Never(String),
}

impl Loop {
    fn known_server(&mut self, r: MemberReport) {
        self.known_members.insert(r.lan.name.clone(), r.lan);
        if let Some(s) = r.server {
            self.known.insert(s.server.node, s);
        }
    }

    /// Consul's `maybeBootstrap` checks on the alive servers of this
    /// datacenter: one already in a cluster disables bootstrapping; one
    /// with another `expect` blocks it ("Member ... has a conflicting expect
    /// value. All nodes should expect the same number."); else enough of
    /// them bootstrap.
    fn bootstrap_decision(&mut self) -> Bootstrap {
        let me = self.options.core.node_id;
        let expect = self.options.bootstrap_expect;
        let others: Vec<&ServerReport> = self
            .known
            .values()
            .filter(|r| r.server.node != me && r.server.status == GossipStatus::Alive)
            .collect();
        if let Some(r) = others.iter().find(|r| r.in_cluster) {
            return Bootstrap::Never(r.server.name.0.clone());
        }
        let conflicting: Vec<(NodeId, String)> = others
            .iter()
            .filter(|r| r.expect.is_some_and(|e| e != expect))
            .map(|r| (r.server.node, r.server.name.0.clone()))
            .collect();
        if !conflicting.is_empty() {
            for (id, name) in conflicting {
                if self.expect_conflicts.insert(id) {
                    tracing::error!(
                        "Member {name} has a conflicting expect value. All nodes should expect the same number."
                    );
                }
            }
            return Bootstrap::Wait;
        }
        let alive = others.len() + 1;
        if alive >= expect {
            Bootstrap::Now(alive)
        } else {
            Bootstrap::Wait
        }
    }

    /// A LAN report about a server of this datacenter: remembered, and
    /// handed to the server (`tern_core::reconcile`'s contract).
    fn take_report(&mut self, r: MemberReport, inputs: &mut Vec<Input>) {
        inputs.push(Input::LanMember(r.lan.clone()));
        if let Some(s) = &r.server {
            inputs.push(Input::ServerMember(s.server.clone()));
        }
        self.known_server(r);
    }

    /// Starts the server; a fresh one told to `bootstrap` writes the first
    /// configuration: itself and every alive server the LAN pool reported.
    fn start_server(&mut self, durable: Durable, bootstrap: bool) {
        let mut config = self.options.core.clone();
        let fresh = durable.entries.is_empty() && durable.snapshot.is_none();
        let bootstrapping = fresh && bootstrap;
        if bootstrapping {
            let mut m = Membership::default();
            // Ourselves, whether or not the pool has reported us yet
            // (`bootstrap_expect = 1` starts at once).
            m.servers.insert(
                config.node_id,
                Member {
                    name: config.node_name.clone(),
                    address: config.address.clone(),
                    suffrage: Suffrage::Voter,
                },
            );
            for (id, r) in &self.known {
                let s = &r.server;
                if s.status != GossipStatus::Alive {
                    continue;
                }
                m.servers.insert(
                    *id,
                    Member {
                        name: NodeName(s.name.0.clone()),
                        address: s.address.clone(),
                        suffrage: Suffrage::Voter,
                    },
                );
            }
            config.bootstrap = Some(m);
        } else {
            config.bootstrap = None;
        }
        let now = self.clock.now();
        let mut server = match Server::new(config, durable, now) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                std::process::exit(1);
            }
        };
        let mut out = Vec::new();
        server.start(&mut out);
        // Everything the LAN pool said before the server existed.
        let now = self.clock.now();
        for r in self.known.values() {
            server.handle(now, Input::ServerMember(r.server.clone()), &mut out);
        }
        for m in self.known_members.values() {
            server.handle(now, Input::LanMember(m.clone()), &mut out);
        }
        self.server = Some(server);
        self.pump(&mut out);
        if bootstrapping {
            let pools = self.pools.clone();
            tokio::spawn(async move { pools.announce_in_cluster().await });
        }
    }

    /// Leave the gossip pools (WAN, then LAN) in the background; the agent
    /// is told when both leaves have been broadcast.
    fn start_gossip_leave(&mut self) {
        if self.leave_started {
            return;
        }
        self.leave_started = true;
        let pools = self.pools.clone();
        let done = self.gossip_left_tx.clone();
        tokio::spawn(async move {
            pools.leave().await;
            let _ = done.send(()).await;
        });
    }

    fn gossip_leave_done(&mut self) {
        self.gossip_left = true;
        self.finish_leave();
    }

    /// The leave is complete once the core has left (or there was no
    /// server) and the gossip leave has been broadcast: answer who asked and
    /// let the process exit.
    fn finish_leave(&mut self) {
        if !(self.core_left && self.gossip_left) {
            return;
        }
        // The process exits on `left`: first let the last messages (answers
        // to requests other servers forwarded here) leave.
        let (pool, left) = (self.pool.clone(), self.left.clone());
        let leaving = std::mem::take(&mut self.leaving);
        tokio::spawn(async move {
            pool.flush(StdDuration::from_secs(1), StdDuration::from_millis(100))
                .await;
            for tx in leaving {
                let _ = tx.send(());
            }
            left.send_replace(true);
        });
    }

    /// Hand the state to every `GET /v1/snapshot` whose index it reached
    /// (a view is O(1): the tables are persistent maps); forget those whose
    /// HTTP request went away.
    fn answer_saves(&mut self) {
        if self.saving.is_empty() {
            return;
        }
        let Some(server) = self.server.as_ref() else {
            return;
        };
        let index = server.fsm().index();
        let mut still = Vec::new();
        for (at_least, tx) in self.saving.drain(..) {
            if tx.is_closed() {
                continue;
            }
            if index < at_least {
                still.push((at_least, tx));
                continue;
            }
            let last = server.last_applied();
            let term = server
                .raft()
                .log()
                .term_at(last)
                .or_else(|| {
                    server
                        .raft()
                        .snapshot_meta()
                        .filter(|s| s.last_index == last)
                        .map(|s| s.last_term)
                })
                .unwrap_or(server.term());
            let servers = server
                .raft()
                .membership_at(last)
                .servers
                .iter()
                .map(|(id, m)| {
                    (
                        id.to_string(),
                        m.address.clone(),
                        m.suffrage == tern_core::raft::Suffrage::Voter,
                    )
                })
                .collect();
            let _ = tx.send(Ok(super::SavedState {
                view: server.fsm().view(),
                term: term.0,
                servers,
            }));
        }
        self.saving = still;
    }

    fn before_bootstrap(&mut self, msg: ToAgent) {
        match msg {
            ToAgent::Request(_, tx) => {
                let _ = tx.send(Err(RpcError::NoLeader));
            }
            ToAgent::Status(tx) => {
                let _ = tx.send(self.status());
            }
            ToAgent::SaveState(_, tx) => {
                let _ = tx.send(Err(RpcError::NoLeader.to_string()));
            }
            ToAgent::Leave(tx) => {
                // Nothing to hand over or drain: only the gossip leave.
                self.leaving.push(tx);
                self.core_left = true;
                self.start_gossip_leave();
            }
        }
    }

    fn take(&mut self, msg: ToAgent, inputs: &mut Vec<Input>) {
        match msg {
            ToAgent::Request(request, tx) => {
                self.next_request += 1;
                let id = RequestId(self.next_request);
                self.telemetry.request_taken(id, &request);
                self.waiting.insert(id, tx);
                inputs.push(Input::Request { id, request });
            }
            ToAgent::Status(tx) => {
                let _ = tx.send(self.status());
            }
            ToAgent::SaveState(at_least, tx) => self.saving.push((at_least, tx)),
            ToAgent::Leave(tx) => {
                if !self.leave_started {
                    inputs.push(Input::Leave);
                }
                // Answered once `Event::Left` (the drain is over) and the
                // gossip leave are both done.
                self.leaving.push(tx);
                self.start_gossip_leave();
            }
        }
    }

    fn take_inbound(&mut self, inb: Inbound, inputs: &mut Vec<Input>) {
        match inb {
            Inbound::Message(m) => {
                if let tern_core::MessageBody::Forward { request, .. } = &m.body {
                    self.telemetry.forward_taken(request);
                }
                inputs.push(Input::Message(m))
            }
            Inbound::Gone(id) => {
                if self.server.as_ref().is_some_and(|s| s.leader() == Some(id)) {
                    tracing::info!(
                        "the connection from leader {id} closed; electing another once its lease is over"
                    );
                }
                inputs.push(Input::Unreachable(id));
            }
            // A client agent's call over the server port: as our own API's.
            Inbound::Call(request, tx) => self.take(ToAgent::Request(request, tx), inputs),
        }
    }

    /// Take the core's actions through the outbox: run what may run now,
    /// and if the disk is idle hand it every queued write as one job (group
    /// commit). Meanwhile the agent keeps handling inputs; sends that wait
    /// for a write run when `disk_done` releases them.
    fn pump(&mut self, out: &mut Vec<Action>) {
        self.telemetry.actions(out, self.server.as_ref());
        let mut ready = Vec::new();
        self.outbox.push(out.drain(..), &mut ready);
        let job = self.outbox.start_job(&mut ready);
        for a in ready {
            self.run_action(a);
        }
        if let Some(job) = job {
            self.telemetry.job_started(&job, self.server.as_ref());
            if self.disk.send(job).is_err() {
                tracing::error!("stopping: the disk thread is gone");
                std::process::exit(1);
            }
        }
        if let Some(w) = self.outbox.start_background() {
            if self.snapshots.send(SnapshotJob::Write(w)).is_err() {
                tracing::error!("stopping: the snapshot thread is gone");
                std::process::exit(1);
            }
        }
    }

    /// The running disk job finished: on success release what waited for
    /// it, tell the core what is durable, and go on; a failed durable write
    /// stops the agent (continuing could acknowledge what is not on disk).
    fn disk_done(&mut self, done: Option<DiskReport>) {
        match done {
            Some(DiskReport::Done) => {}
            Some(DiskReport::BackgroundDone) => {
                self.outbox.background_done();
                self.pump(&mut Vec::new());
                return;
            }
            Some(DiskReport::Full(full)) => {
                self.handle_now(Input::DiskFull(full));
                return;
            }
            Some(DiskReport::Built { meta, data }) => {
                self.handle_now(Input::SnapshotBuilt { meta, data });
                return;
            }
            Some(DiskReport::Loaded { meta, data }) => {
                self.handle_now(Input::SnapshotLoaded { meta, data });
                return;
            }
            Some(DiskReport::Failed(e)) => {
                tracing::error!("stopping: a durable write failed: {e}");
                std::process::exit(1);
            }
            None => {
                tracing::error!("stopping: the disk thread is gone");
                std::process::exit(1);
            }
        }
        self.telemetry.job_done();
        let mut ready = Vec::new();
        let id = self.outbox.job_done(&mut ready);
        for a in ready {
            self.run_action(a);
        }
        let mut out = Vec::new();
        if let Some(server) = self.server.as_mut() {
            server.handle(self.clock.now(), Input::Persisted(id), &mut out);
        }
        self.pump(&mut out);
    }

    /// Hand the core one input from the disk side and run what it asks.
    fn handle_now(&mut self, input: Input) {
        let mut out = Vec::new();
        if let Some(server) = self.server.as_mut() {
            server.handle(self.clock.now(), input, &mut out);
        }
        self.pump(&mut out);
    }

    fn run_action(&mut self, a: Action) {
        match a {
            Action::Persist { .. } => unreachable!("durable writes go to the disk thread"),
            Action::Send {
                address, message, ..
            } => {
                let member = self
                    .server
                    .as_ref()
                    .and_then(|s| s.membership().servers.get(&message.to));
                match member {
                    Some(m) => self.pool.send(&m.name.0, &address, &message),
                    // Not (or no longer) a member: its id stands in for a name.
                    None => self.pool.send(&message.to.to_string(), &address, &message),
                }
            }
            Action::Respond { id, response } => {
                self.telemetry.responded(id);
                if let Some(tx) = self.waiting.remove(&id) {
                    let _ = tx.send(response);
                }
            }
            Action::BuildSnapshot { meta, view } => {
                if self
                    .snapshots
                    .send(SnapshotJob::Build { meta, view })
                    .is_err()
                {
                    tracing::error!("stopping: the snapshot thread is gone");
                    std::process::exit(1);
                }
            }
            Action::LoadSnapshot { meta, .. } => {
                if self.snapshots.send(SnapshotJob::Load(meta)).is_err() {
                    tracing::error!("stopping: the snapshot thread is gone");
                    std::process::exit(1);
                }
            }
            // Freeing a compaction's entries here cost every waiting
            // request 10-20 ms (`LogGarbage`); the snapshot thread does it
            // once the file it is writing is done.
            Action::Discard(garbage) => {
                if self.snapshots.send(SnapshotJob::Discard(garbage)).is_err() {
                    tracing::error!("stopping: the snapshot thread is gone");
                    std::process::exit(1);
                }
            }
            Action::Event(e) => {
                log_event(&e);
                match e {
                    Event::PeerMessageRefused { from, .. } => {
                        self.refusals.close(from);
                    }
                    Event::Left => {
                        self.core_left = true;
                        self.finish_leave();
                    }
                    _ => {}
                }
            }
        }
    }

    fn status(&self) -> AgentStatus {
        let o = &self.options;
        let mut st = AgentStatus {
            node_id: o.core.node_id,
            node_name: o.core.node_name.0.clone(),
            datacenter: o.core.datacenter.0.clone(),
            server_addr: o.core.address.clone(),
            role: "Follower".into(),
            ..AgentStatus::default()
        };
        let Some(s) = &self.server else {
            return st;
        };
        st.leader = s.leader();
        st.leader_addr = s
            .leader()
            .and_then(|l| s.raft().address_of(l).map(str::to_string));
        st.known_leader = st.leader.is_some();
        st.role = match s.role() {
            Role::Leader => "Leader",
            Role::Follower => "Follower",
            Role::Candidate => "Candidate",
            Role::PreCandidate => "PreCandidate",
        }
        .into();
        st.term = s.term();
        st.commit_index = s.commit_index();
        st.applied_index = s.last_applied();
        st.last_log_index = s.last_log_index();
        // hashicorp/raft's `Stats()["num_peers"]`: the other voters (Consul's
        // own `numPeers`, which counts this server too, is internal).
        let me_voter = s.membership().is_voter(s.config().node_id);
        st.num_peers = s.num_peers() - usize::from(me_voter);
        st.last_contact_ms = if s.role() == Role::Leader {
            0
        } else {
            s.raft()
                .last_leader_contact()
                .map_or(0, |t| self.clock.now().saturating_since(t).as_millis())
        };
        st
    }
}

fn log_event(e: &Event) {
    match e {
        Event::BecameLeader { term } => tracing::info!("became leader in term {}", term.0),
        Event::SteppedDown { term } => tracing::info!("stepped down in term {}", term.0),
        Event::Removed => tracing::info!("removed from the Raft configuration"),
        Event::Left => tracing::info!("left: leadership handed over and the drain is over"),
        Event::SnapshotTaken { last_index } => {
            tracing::info!("snapshot taken at index {}", last_index.0)
        }
        Event::SnapshotInstalled { last_index } => {
            tracing::info!("snapshot installed at index {}", last_index.0)
        }
        Event::Fatal { reason } => {
            tracing::error!("stopping: {reason}");
            std::process::exit(1);
        }
        // The message changed nothing; the agent closes the connections
        // that carried it (`run_action`).
        Event::PeerMessageRefused { from, reason } => {
            tracing::warn!("refused a message from {from}, closing its connection: {reason}")
        }
        // Consul logs these from `autopilot:` (the refusals at debug: they
        // repeat every round while the cause lasts).
        Event::Autopilot(a) => match a {
            AutopilotEvent::Promoting { .. } | AutopilotEvent::RemovingDeadServer { .. } => {
                tracing::info!("autopilot: {a}")
            }
            AutopilotEvent::TooManyDeadServers { .. } | AutopilotEvent::BelowMinQuorum { .. } => {
                tracing::debug!("autopilot: {a}")
            }
        },
        // Consul logs the changes from `leader.go` at info.
        Event::Reconcile(r) => tracing::info!("reconcile: {r}"),
        Event::Committed { .. } | Event::Applied { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tern_core::fsm::{Command, KvCommand, KvWrite};
    use tern_core::raft::{Entry, EntryPayload, Membership, Snapshot, SnapshotMeta};
    use tern_core::{LogIndex, PersistId, Term};

    use super::*;

    fn write(id: u64, op: PersistOp) -> PersistWrite {
        PersistWrite {
            id: PersistId(id),
            op,
            sync: true,
        }
    }

    fn segments(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("raft"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("log-"))
            .count()
    }

    /// The disk thread deletes the segments a purge left dead while no job
    /// waits (`Storage::tidy`), so a server that takes no write after a
    /// snapshot gives the space back; before, they stayed until the next
    /// appends deleted them one each.
    #[test]
    fn the_disk_thread_deletes_dead_segments_once_no_job_waits() {
        let dir = std::env::temp_dir().join(format!("tern-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Segments of 600 bytes: a few entries each.
        let (dd, _, _) = crate::storage::open_data_dir(&dir, 600).unwrap();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let (snap_tx, _snap_rx) = mpsc::unbounded_channel();
        let disk = spawn_disk_thread(Box::new(dd), done_tx, snap_tx);
        let mut job: DiskJob = (1..=60u64)
            .map(|i| {
                let entry = Entry {
                    term: Term(1),
                    index: LogIndex(i),
                    payload: EntryPayload::Command(Arc::new(Command::Kv(KvCommand::Set(
                        KvWrite {
                            key: format!("k{i}"),
                            flags: 0,
                            value: vec![i as u8; 40].into(),
                        },
                    )))),
                };
                write(i, PersistOp::Append(vec![entry]))
            })
            .collect();
        job.push(write(
            61,
            PersistOp::SaveSnapshot(Snapshot {
                meta: SnapshotMeta {
                    last_index: LogIndex(55),
                    last_term: Term(1),
                    membership: Membership::default(),
                },
                data: b"state at 55".to_vec().into(),
            }),
        ));
        let before = {
            // Count the segments the appends made before the purge goes in.
            disk.send(job).unwrap();
            assert!(matches!(done_rx.blocking_recv(), Some(DiskReport::Done)));
            segments(&dir)
        };
        assert!(before >= 6, "{before} segments");
        disk.send(vec![write(62, PersistOp::PurgeUpTo(LogIndex(50)))])
            .unwrap();
        assert!(matches!(done_rx.blocking_recv(), Some(DiskReport::Done)));
        // The purge deleted one itself; the rest go while the thread idles.
        let end = std::time::Instant::now() + StdDuration::from_secs(10);
        while segments(&dir) > 2 && std::time::Instant::now() < end {
            std::thread::sleep(StdDuration::from_millis(20));
        }
        let after = segments(&dir);
        assert!(after <= 2, "{after} segments left of {before}");
        // What is left reads back as the purged log.
        drop(disk);
        std::thread::sleep(StdDuration::from_millis(100));
        let (_, durable, _) = crate::storage::open_data_dir(&dir, 600).unwrap();
        assert_eq!(durable.entries.first().map(|e| e.index), Some(LogIndex(51)));
        assert_eq!(durable.entries.last().map(|e| e.index), Some(LogIndex(60)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
