//! One server's runtime inside its madsim node: open its data dir (the
//! daemon's `tern_storage::DataDir`, on the world's simulated filesystem),
//! build the `Server`, then loop { wait for a datagram, the core's deadline
//! or the disk → handle → run the actions through the outbox }.

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use madsim::net::Endpoint;
use madsim::rand::Rng;
use tern_core::fsm::FsmView;
use tern_core::raft::{Durable, SnapshotData, SnapshotMeta};
use tern_core::wire::{
    decode_frame, decode_message, decode_request, encode_frame, encode_message, encode_response,
};
use tern_core::{
    Action, Event, Input, Instant, Message, Outbox, PersistOp, PersistWrite, RequestId, Server,
};
use tokio::sync::mpsc;

use crate::fs::{DataDir, SharedFs, Storage, StorageError, DATA_DIR};
use crate::net::{
    decode_envelope, encode_envelope, receive_loop, send_detached, Datagram, TAG_PEER, TAG_REQUEST,
    TAG_RESPONSE,
};
use crate::world::{NodeStatus, Observation, ServerSlot, Shared, WorldEvent};

/// Virtual time since the world started, as the core's `Instant`.
pub fn now() -> Instant {
    let elapsed = madsim::time::TimeHandle::current().elapsed();
    Instant(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// Log segments are this small in the simulator so segment rolls, purges
/// of whole segments and recovery across several files happen in short runs.
const SIM_SEGMENT_BYTES_MAX: u64 = 16 << 10;

/// The node's init task: re-run from scratch by every restart.
pub(crate) async fn run_server(shared: Arc<Shared>, slot: Arc<ServerSlot>) {
    slot.counters.lock().unwrap().starts += 1;
    *slot.status.lock().unwrap() = NodeStatus::Starting;

    let Some((data_dir, durable)) = open_data_dir(&shared, &slot) else {
        return;
    };
    let (last_index, term) = (
        durable
            .entries
            .last()
            .map(|e| e.index)
            .or(durable.snapshot.as_ref().map(|s| s.meta.last_index))
            .unwrap_or_default(),
        durable.hard_state.term,
    );
    let server = match Server::new(slot.config.clone(), durable, now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[io-sim] {:?}: refusing to start: {e}", slot.id);
            *slot.status.lock().unwrap() = NodeStatus::Failed(e.to_string());
            return;
        }
    };
    let ep = match Endpoint::bind(slot.addr).await {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("[io-sim] {:?}: cannot bind {}: {e}", slot.id, slot.addr);
            *slot.status.lock().unwrap() = NodeStatus::Failed(e.to_string());
            return;
        }
    };
    *slot.server.lock().unwrap() = Some(server);
    *slot.status.lock().unwrap() = NodeStatus::Running;
    shared.record(WorldEvent::Started {
        node: slot.id,
        last_index,
        term,
    });

    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..shared.opts.receivers_per_tag.max(1) {
        madsim::task::spawn(receive_loop(ep.clone(), TAG_PEER, tx.clone()));
        madsim::task::spawn(receive_loop(ep.clone(), TAG_REQUEST, tx.clone()));
    }
    drop(tx);
    let (hint_tx, hints) = mpsc::unbounded_channel();
    *slot.hints.lock().unwrap() = Some(hint_tx);
    if shared.opts.gossip {
        // The LAN pool runs beside the node loop and feeds it
        // `Input::ServerMember` through the hints channel.
        let (control_tx, control) = mpsc::unbounded_channel();
        *slot.gossip_control.lock().unwrap() = Some(control_tx);
        let join = shared.gossip_peers(slot.id);
        madsim::task::spawn(crate::gossip::run_gossip(
            shared.clone(),
            slot.clone(),
            control,
            join,
        ));
    }
    // The disk runs beside the node loop, as the daemon's disk thread does:
    // the node keeps taking inputs while a job's fsyncs run.
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let (done_tx, disk_done) = mpsc::unbounded_channel();
    // Own snapshot files are written beside the log, and old ones deleted
    // there, as the daemon's snapshot thread does.
    let (snapshots_tx, snapshots_rx) = mpsc::unbounded_channel();
    madsim::task::spawn(disk_worker(
        shared.clone(),
        slot.clone(),
        data_dir,
        jobs_rx,
        done_tx.clone(),
        snapshots_tx.clone(),
    ));
    madsim::task::spawn(snapshot_worker(
        shared.clone(),
        slot.clone(),
        snapshots_rx,
        done_tx,
    ));
    // Own snapshots are encoded in tasks of their own, as the daemon
    // encodes them on its snapshot thread: the node keeps taking inputs.
    let (built_tx, built) = mpsc::unbounded_channel();
    let outbox = Outbox::for_config(&slot.config);
    let mut driver = Driver {
        built_tx,
        frame_bytes_max: slot.config.frame_bytes_max,
        shared,
        slot,
        ep,
        outbox,
        disk_jobs: jobs_tx,
        snapshots: snapshots_tx,
        running_job: Vec::new(),
        pending: BTreeMap::new(),
        next_request: 1,
        last_tick: None,
        exited: false,
    };
    // A fresh server writes its bootstrap configuration here; its actions
    // run like any others, strictly in order.
    if !driver.step(None, Vec::new()) {
        return;
    }
    driver.run(rx, hints, disk_done, built).await;
}

/// Opens the data dir with the daemon's recovery code: a torn tail is
/// truncated (and counted), a corrupt file stops the node (the status says
/// which file and offset, loudly).
fn open_data_dir(shared: &Shared, slot: &ServerSlot) -> Option<(DataDir<SharedFs>, Durable)> {
    let fs = slot.fs.handle();
    match DataDir::open(fs, Path::new(DATA_DIR), SIM_SEGMENT_BYTES_MAX) {
        Ok((dd, durable, warnings)) => {
            for w in &warnings {
                println!("[io-sim] {:?}: {w}", slot.id);
            }
            let torn = warnings.iter().filter(|w| w.contains("torn tail")).count();
            slot.counters.lock().unwrap().torn_tails_recovered += torn as u64;
            if torn > 0 {
                shared.record(WorldEvent::TornTail { node: slot.id });
            }
            Some((dd, durable))
        }
        Err(e) => {
            eprintln!(
                "[io-sim] {:?}: the data dir cannot be recovered, refusing to start: {e}",
                slot.id
            );
            *slot.status.lock().unwrap() = NodeStatus::Corrupt(e.clone());
            shared.record(WorldEvent::Corrupt {
                node: slot.id,
                error: e,
            });
            None
        }
    }
}

enum Wake {
    Tick,
    Datagram(Datagram),
    /// An input from outside the network: a transport hint (a server is
    /// gone) or an operator's leave.
    Control(Input),
    /// The disk finished the running job: its writes are durable.
    DiskDone,
    /// The disk is full (it retries the job), or has room again.
    DiskFull(bool),
    /// An own snapshot file written beside the log is on disk.
    SnapshotWritten,
    /// An own snapshot asked for with `Action::BuildSnapshot` is encoded.
    SnapshotBuilt(SnapshotMeta, Vec<u8>),
    /// A snapshot file read back for `Action::LoadSnapshot`.
    SnapshotLoaded(SnapshotMeta, Option<SnapshotData>),
    Closed,
}

/// How long after its leave completes a server's sent messages still
/// arrive: a process that exits has its sockets' data delivered by the
/// kernel, and the daemon flushes its connections before it exits.
const SOCKET_LINGER: std::time::Duration = std::time::Duration::from_millis(200);

struct Driver {
    shared: Arc<Shared>,
    slot: Arc<ServerSlot>,
    ep: Endpoint,
    frame_bytes_max: usize,
    /// The same scheduler of writes and held-back sends as the daemon's.
    outbox: Outbox,
    disk_jobs: mpsc::UnboundedSender<Vec<PersistWrite>>,
    /// The task that writes own snapshot files beside the log.
    snapshots: mpsc::UnboundedSender<SnapshotJob>,
    /// Where snapshot-encoding tasks hand back their bytes.
    built_tx: mpsc::UnboundedSender<(SnapshotMeta, Vec<u8>)>,
    /// The writes of the job the disk is running (for the observer).
    running_job: Vec<PersistWrite>,
    /// Client requests in the core, by the id we gave them: who to answer.
    pending: BTreeMap<RequestId, (SocketAddr, u64)>,
    next_request: u64,
    /// When the last `Tick` was handled: a deadline still due at that same
    /// instant is not ticked again at once (see `next_wake`).
    last_tick: Option<Instant>,
    /// The server's leave is complete: the process exits once what it sent
    /// is on its way (`SOCKET_LINGER`).
    exited: bool,
}

impl Driver {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Datagram>,
        mut hints: mpsc::UnboundedReceiver<Input>,
        mut disk_done: mpsc::UnboundedReceiver<DiskReport>,
        mut built: mpsc::UnboundedReceiver<(SnapshotMeta, Vec<u8>)>,
    ) {
        loop {
            let mut released = Vec::new();
            let wake = self
                .next_wake(&mut rx, &mut hints, &mut disk_done, &mut built)
                .await;
            let input = match wake {
                Wake::Closed => return,
                Wake::Tick => {
                    self.last_tick = Some(now());
                    Input::Tick
                }
                Wake::Control(input) => input,
                Wake::DiskDone => Input::Persisted(self.outbox.job_done(&mut released)),
                Wake::DiskFull(full) => Input::DiskFull(full),
                Wake::SnapshotBuilt(meta, data) => Input::SnapshotBuilt { meta, data },
                Wake::SnapshotLoaded(meta, data) => Input::SnapshotLoaded { meta, data },
                Wake::SnapshotWritten => {
                    // Not an input: the snapshot now goes through the log
                    // lane (the data dir adopts the file).
                    self.outbox.background_done();
                    if !self.start_disk_work(None) {
                        return;
                    }
                    continue;
                }
                Wake::Datagram(d) => match self.decode(d) {
                    Some(input) => input,
                    None => continue,
                },
            };
            if !self.step(Some(input), released) {
                if self.exited {
                    // As the daemon's exit: the kernel still delivers what
                    // was written to its sockets (the last answers of the
                    // leave) before the server counts as gone.
                    madsim::time::sleep(SOCKET_LINGER).await;
                    *self.slot.status.lock().unwrap() = NodeStatus::Left;
                }
                return;
            }
        }
    }

    /// Waits for the next datagram or for the core's deadline.
    async fn next_wake(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Datagram>,
        hints: &mut mpsc::UnboundedReceiver<Input>,
        disk_done: &mut mpsc::UnboundedReceiver<DiskReport>,
        built: &mut mpsc::UnboundedReceiver<(SnapshotMeta, Vec<u8>)>,
    ) -> Wake {
        let deadline = match self.slot.server.lock().unwrap().as_ref() {
            Some(s) => s.poll_timeout(),
            None => return Wake::Closed,
        };
        let now = now();
        let wait = match deadline {
            None => None,
            Some(d) if d > now => Some(std::time::Duration::from_nanos(d.0 - now.0)),
            Some(_) if self.last_tick != Some(now) => return Wake::Tick,
            Some(_) => {
                // The core asked to be ticked again at an instant it was
                // just ticked at. Let time move rather than spin forever.
                self.slot.counters.lock().unwrap().timer_spins += 1;
                Some(std::time::Duration::from_millis(1))
            }
        };
        let mut sleep: Option<Pin<Box<madsim::time::Sleep>>> =
            wait.map(|d| Box::pin(madsim::time::sleep(d)));
        poll_fn(|cx| {
            match disk_done.poll_recv(cx) {
                Poll::Ready(Some(DiskReport::Done)) => return Poll::Ready(Wake::DiskDone),
                Poll::Ready(Some(DiskReport::Full(full))) => {
                    return Poll::Ready(Wake::DiskFull(full))
                }
                Poll::Ready(Some(DiskReport::SnapshotWritten)) => {
                    return Poll::Ready(Wake::SnapshotWritten)
                }
                Poll::Ready(Some(DiskReport::SnapshotLoaded(meta, data))) => {
                    return Poll::Ready(Wake::SnapshotLoaded(meta, data))
                }
                // The disk worker stopped: this incarnation was killed.
                Poll::Ready(None) => return Poll::Ready(Wake::Closed),
                Poll::Pending => {}
            }
            if let Poll::Ready(Some(input)) = hints.poll_recv(cx) {
                return Poll::Ready(Wake::Control(input));
            }
            // The driver holds a sender, so this never closes.
            if let Poll::Ready(Some((meta, data))) = built.poll_recv(cx) {
                return Poll::Ready(Wake::SnapshotBuilt(meta, data));
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(d)) => return Poll::Ready(Wake::Datagram(d)),
                Poll::Ready(None) => return Poll::Ready(Wake::Closed),
                Poll::Pending => {}
            }
            if let Some(s) = sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Tick);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Turns a datagram into an input; anything undecodable is dropped
    /// with one log line and a count, and the core never sees it.
    fn decode(&mut self, d: Datagram) -> Option<Input> {
        self.slot.counters.lock().unwrap().messages_received += 1;
        let Some(bytes) = d.bytes else {
            self.decode_error(d.from, "payload is not bytes".into());
            return None;
        };
        match d.tag {
            TAG_PEER => {
                let message = decode_frame(&bytes, self.frame_bytes_max)
                    .map_err(|e| e.to_string())
                    .and_then(|p| decode_message(p).map_err(|e| e.to_string()));
                match message {
                    Ok(m) => Some(Input::Message(m)),
                    Err(e) => {
                        self.decode_error(d.from, e);
                        None
                    }
                }
            }
            TAG_REQUEST => {
                let request = decode_envelope(&bytes, self.frame_bytes_max)
                    .map_err(|e| e.to_string())
                    .and_then(|(cid, body)| {
                        decode_request(body)
                            .map(|r| (cid, r))
                            .map_err(|e| e.to_string())
                    });
                match request {
                    Ok((client_id, request)) => {
                        let id = RequestId(self.next_request);
                        self.next_request += 1;
                        self.pending.insert(id, (d.from, client_id));
                        self.slot.counters.lock().unwrap().requests_received += 1;
                        Some(Input::Request { id, request })
                    }
                    Err(e) => {
                        self.decode_error(d.from, e);
                        None
                    }
                }
            }
            _ => {
                self.decode_error(d.from, format!("unknown tag {}", d.tag));
                None
            }
        }
    }

    fn decode_error(&self, from: SocketAddr, why: String) {
        self.slot.counters.lock().unwrap().decode_errors += 1;
        println!(
            "[io-sim] {:?}: dropped an undecodable datagram from {from}: {why}",
            self.slot.id
        );
    }

    /// One `handle`, through the outbox, then the observer, then the
    /// actions that may run now; a new disk job goes to the disk worker.
    /// The server is taken out of its slot meanwhile, so an observer may
    /// look at every *other* server through the world without deadlocking
    /// on this one. `None` is `Server::start`, called once before the first
    /// input. `released` are the sends the finished disk job let go (with
    /// `Input::Persisted`). False once the node is gone.
    fn step(&mut self, input: Option<Input>, released: Vec<Action>) -> bool {
        let Some(mut server) = self.slot.server.lock().unwrap().take() else {
            return false;
        };
        let now = now();
        let mut out = Vec::new();
        let observer = self.shared.observer();
        let seen = observer.as_ref().and(input.clone());
        let persisted = matches!(input, Some(Input::Persisted(_)));
        match input {
            Some(input) => server.handle(now, input, &mut out),
            None => server.start(&mut out),
        }
        let durable = if persisted {
            std::mem::take(&mut self.running_job)
        } else {
            Vec::new()
        };
        let mut ready = released;
        match &observer {
            Some(_) => self.outbox.push(out.iter().cloned(), &mut ready),
            None => self.outbox.push(std::mem::take(&mut out), &mut ready),
        }
        let job = self.outbox.start_job(&mut ready);
        if let Some(observer) = observer {
            observer(&Observation {
                node: self.slot.id,
                now,
                input: seen.as_ref(),
                server: &server,
                actions: &out,
                durable: &durable,
                executed: &ready,
            });
        }
        let fatal = server.fatal().map(str::to_string);
        let left = server.has_left();
        *self.slot.server.lock().unwrap() = Some(server);
        for action in ready {
            match action {
                Action::Persist { .. } => unreachable!("the outbox keeps writes"),
                Action::Send {
                    address, message, ..
                } => self.send(&address, &message),
                Action::Respond { id, response } => self.respond(id, &response),
                Action::Event(event) => self.event(event),
                Action::BuildSnapshot { meta, view } => self.build_snapshot(meta, view),
                Action::LoadSnapshot { meta, .. } => {
                    self.slot.counters.lock().unwrap().snapshot_loads += 1;
                    // A closed lane means this incarnation was killed.
                    let _ = self.snapshots.send(SnapshotJob::Load(meta));
                }
                // The daemon frees these on its snapshot thread so that no
                // request waits on it; simulated time does not pass while
                // memory is freed, so here they go at once, which keeps
                // the lane's schedule (and every seed's trajectory) free
                // of a job that decides nothing.
                Action::Discard(garbage) => drop(garbage),
            }
        }
        if let Some(reason) = fatal {
            eprintln!("[io-sim] {:?}: stopping: {reason}", self.slot.id);
            *self.slot.status.lock().unwrap() = NodeStatus::Failed(reason);
            return false;
        }
        if left {
            // The daemon exits 0 here; writes still in flight are lost as in
            // any exit (none of them was acknowledged). Messages already
            // sent are delivered (`run`).
            self.exited = true;
            return false;
        }
        self.start_disk_work(job)
    }

    /// Hands the disk a job (the one `start_job` gave, or the next one) and
    /// the snapshot writer an own snapshot, if either is idle and has work.
    fn start_disk_work(&mut self, job: Option<Vec<PersistWrite>>) -> bool {
        let job = job.or_else(|| {
            let mut early = Vec::new();
            let job = self.outbox.start_job(&mut early);
            // Only the planted bug releases sends as a job starts.
            for a in early {
                if let Action::Send {
                    address, message, ..
                } = a
                {
                    self.send(&address, &message);
                }
            }
            job
        });
        if let Some(job) = job {
            self.running_job = job.clone();
            if self.disk_jobs.send(job).is_err() {
                return false;
            }
        }
        if let Some(w) = self.outbox.start_background() {
            if self.snapshots.send(SnapshotJob::Write(w)).is_err() {
                return false;
            }
        }
        true
    }

    /// Encodes an own snapshot in a task of its own, taking simulated time
    /// in proportion to its size (plus a random part, so builds end at
    /// varied points among other inputs), while the node loop goes on. A
    /// kill ends the task with the node; the restarted server never hears
    /// of it.
    fn build_snapshot(&mut self, meta: SnapshotMeta, view: FsmView) {
        let built = self.built_tx.clone();
        let jitter = madsim::rand::thread_rng().gen_range(0..=SNAPSHOT_ENCODE_JITTER_NS);
        self.slot.counters.lock().unwrap().snapshot_builds += 1;
        madsim::task::spawn(async move {
            let data = view.encode();
            let ns = (data.len() as u64).saturating_mul(SNAPSHOT_ENCODE_NS_PER_BYTE) + jitter;
            madsim::time::sleep(std::time::Duration::from_nanos(ns)).await;
            let _ = built.send((meta, data));
        });
    }

    fn send(&mut self, address: &str, message: &Message) {
        let Ok(dst) = address.parse::<SocketAddr>() else {
            self.slot.counters.lock().unwrap().send_errors += 1;
            println!(
                "[io-sim] {:?}: cannot send to {address:?}: not an address",
                self.slot.id
            );
            return;
        };
        let mut frame = Vec::new();
        encode_frame(&encode_message(message), &mut frame);
        let rate = self.shared.duplicate_rate();
        let duplicate = rate > 0.0 && madsim::rand::thread_rng().gen_bool(rate.min(1.0));
        if duplicate {
            send_detached(&self.ep, dst, TAG_PEER, frame.clone());
        }
        send_detached(&self.ep, dst, TAG_PEER, frame);
        let mut c = self.slot.counters.lock().unwrap();
        c.messages_sent += 1;
        c.messages_duplicated += u64::from(duplicate);
    }

    fn respond(&mut self, id: RequestId, response: &tern_core::rpc::Response) {
        let Some((to, client_id)) = self.pending.remove(&id) else {
            self.slot.counters.lock().unwrap().responses_unmatched += 1;
            println!(
                "[io-sim] {:?}: the core answered unknown request {id:?}",
                self.slot.id
            );
            return;
        };
        let bytes = encode_envelope(client_id, &encode_response(response));
        send_detached(&self.ep, to, TAG_RESPONSE, bytes);
        self.slot.counters.lock().unwrap().responses_sent += 1;
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::BecameLeader { .. }
            | Event::SteppedDown { .. }
            | Event::Removed
            | Event::Left
            | Event::SnapshotTaken { .. }
            | Event::SnapshotInstalled { .. }
            | Event::Autopilot(_)
            | Event::Fatal { .. } => {
                self.shared.record(WorldEvent::Core {
                    node: self.slot.id,
                    event,
                });
            }
            _ => {}
        }
    }
}

/// What the disk and snapshot workers tell the node loop.
enum DiskReport {
    /// The running job is durable.
    Done,
    /// The disk is full (the job is retried), or has room again.
    Full(bool),
    /// An own snapshot file written beside the log is on disk.
    SnapshotWritten,
    /// A snapshot file read back (`Action::LoadSnapshot`).
    SnapshotLoaded(SnapshotMeta, Option<SnapshotData>),
}

/// What the snapshot worker does, in order, as the daemon's snapshot
/// thread does.
enum SnapshotJob {
    /// Write an own snapshot file beside the log.
    Write(PersistWrite),
    /// Read a snapshot file back (`Action::LoadSnapshot`).
    Load(SnapshotMeta),
    /// Delete snapshot files the data dir no longer keeps
    /// (`DataDir::take_superseded`). Nothing waits for it.
    Remove(Vec<std::path::PathBuf>),
}

/// Writes own snapshot files beside the log with the daemon's
/// `SnapshotLane`, on its own handle on the node's filesystem, with the
/// simulated fsync latency; a failure other than a full disk (retried)
/// stops the node. Deletes old snapshot files with the same lane, which
/// keeps one to overwrite (a failure loses nothing: recovery deletes them).
async fn snapshot_worker(
    shared: Arc<Shared>,
    slot: Arc<ServerSlot>,
    mut snapshots: mpsc::UnboundedReceiver<SnapshotJob>,
    done: mpsc::UnboundedSender<DiskReport>,
) {
    let incarnation = slot.fs.incarnation();
    let mut fs = slot.fs.handle();
    let mut lane = crate::fs::SnapshotLane::new();
    while let Some(job) = snapshots.recv().await {
        let w = match job {
            SnapshotJob::Write(w) => w,
            SnapshotJob::Load(meta) => {
                disk_latency(&shared, &slot).await;
                let result = crate::fs::read_snapshot_data(&mut fs, Path::new(DATA_DIR), &meta);
                if slot.fs.incarnation() != incarnation {
                    return;
                }
                match result {
                    Ok(data) => {
                        if done.send(DiskReport::SnapshotLoaded(meta, data)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!(
                            "[io-sim] {:?}: stopping: reading a snapshot back failed: {e}",
                            slot.id
                        );
                        *slot.status.lock().unwrap() = NodeStatus::Failed(e.to_string());
                        *slot.server.lock().unwrap() = None;
                        return;
                    }
                }
                continue;
            }
            SnapshotJob::Remove(paths) => {
                if slot.fs.incarnation() != incarnation {
                    return;
                }
                if let Err(e) = lane.remove_superseded(&mut fs, &paths) {
                    println!("[io-sim] {:?}: deleting an old snapshot file: {e}", slot.id);
                }
                continue;
            }
        };
        let PersistOp::SaveSnapshot(s) = &w.op else {
            continue;
        };
        loop {
            disk_latency(&shared, &slot).await;
            let result = lane.write(&mut fs, Path::new(DATA_DIR), s);
            if slot.fs.incarnation() != incarnation {
                return;
            }
            match result {
                Ok(()) => break,
                Err(StorageError::NoSpace { .. }) => {
                    madsim::time::sleep(DISK_FULL_RETRY).await;
                }
                Err(e) => {
                    eprintln!(
                        "[io-sim] {:?}: stopping: writing a snapshot failed: {e}",
                        slot.id
                    );
                    *slot.status.lock().unwrap() = NodeStatus::Failed(e.to_string());
                    *slot.server.lock().unwrap() = None;
                    return;
                }
            }
        }
        if done.send(DiskReport::SnapshotWritten).is_err() {
            return;
        }
    }
}

/// How often a write refused for lack of space is tried again.
const DISK_FULL_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Simulated encoding speed of an own snapshot: about what postcard does on
/// the bench machine (64k keys of 256 B, 17.8 MB, in ~37 ms).
const SNAPSHOT_ENCODE_NS_PER_BYTE: u64 = 2;

/// Up to this much more per build (5 ms), drawn from the seed.
const SNAPSHOT_ENCODE_JITTER_NS: u64 = 5_000_000;

/// The node's disk: performs each job's writes in order through the
/// daemon's data-dir code, with the simulated fsync latency, and reports
/// when the job is durable. It is the only writer of the node's files. A
/// kill ends it with the node; a failed write stops the node, as a failed
/// durable write stops the daemon (continuing could acknowledge what is not
/// on disk).
async fn disk_worker(
    shared: Arc<Shared>,
    slot: Arc<ServerSlot>,
    mut data_dir: DataDir<SharedFs>,
    mut jobs: mpsc::UnboundedReceiver<Vec<PersistWrite>>,
    done: mpsc::UnboundedSender<DiskReport>,
    snapshots: mpsc::UnboundedSender<SnapshotJob>,
) {
    let incarnation = slot.fs.incarnation();
    // Whether the data dir may hold segments a purge left dead: deleted one
    // at a time while no job waits, as the daemon's disk thread does.
    let mut untidy = false;
    loop {
        let job = if untidy {
            match jobs.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if data_dir.dead_segments() == 0 {
                        untidy = false;
                        continue;
                    }
                    // An unlink and a directory fsync: a job that comes
                    // meanwhile waits for them, as on a real disk.
                    disk_latency(&shared, &slot).await;
                    if slot.fs.incarnation() != incarnation {
                        return;
                    }
                    match data_dir.tidy() {
                        Ok(more) => untidy = more,
                        Err(e) => {
                            eprintln!(
                                "[io-sim] {:?}: stopping: deleting a dead log segment failed: {e}",
                                slot.id
                            );
                            *slot.status.lock().unwrap() = NodeStatus::Failed(e.to_string());
                            *slot.server.lock().unwrap() = None;
                            return;
                        }
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        } else {
            match jobs.recv().await {
                Some(job) => job,
                None => return,
            }
        };
        untidy = true;
        for w in &job {
            let mut full = false;
            loop {
                // The fsync's latency is a window in which a crash finds the
                // write incomplete: an append is written, then synced after the
                // latency (a crash meanwhile keeps a random prefix of it, often
                // tearing it); any other write (replaced atomically) happens at
                // the end of the window or not at all.
                let append = matches!(w.op, PersistOp::Append(_));
                let result = if !w.sync {
                    data_dir.persist(&w.op, false)
                } else if append {
                    match data_dir.persist(&w.op, false) {
                        Ok(()) => {
                            disk_latency(&shared, &slot).await;
                            data_dir.sync()
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    disk_latency(&shared, &slot).await;
                    data_dir.persist(&w.op, true)
                };
                if slot.fs.incarnation() != incarnation {
                    return;
                }
                if let Err(StorageError::NoSpace { path }) = &result {
                    // Nothing durable is damaged and the partial write was cut
                    // back: tell the node once, and try again until there is room.
                    if !full {
                        println!(
                            "[io-sim] {:?}: {} is full; refusing writes until there is room",
                            slot.id,
                            path.display()
                        );
                        full = true;
                        if done.send(DiskReport::Full(true)).is_err() {
                            return;
                        }
                    }
                    madsim::time::sleep(DISK_FULL_RETRY).await;
                    continue;
                }
                if full && done.send(DiskReport::Full(false)).is_err() {
                    return;
                }
                if let Err(e) = result {
                    eprintln!(
                        "[io-sim] {:?}: stopping: a durable write failed: {e}",
                        slot.id
                    );
                    *slot.status.lock().unwrap() = NodeStatus::Failed(e.to_string());
                    *slot.server.lock().unwrap() = None;
                    return;
                }
                {
                    let mut c = slot.counters.lock().unwrap();
                    c.persists += 1;
                    c.fsyncs += u64::from(w.sync);
                    c.compactions += u64::from(matches!(w.op, PersistOp::PurgeUpTo(_)));
                    c.bytes_written = slot.fs.lock().stats().bytes_written;
                }
                let slow = data_dir.fs_mut().take_latency_ns();
                if slow > 0 {
                    madsim::time::sleep(std::time::Duration::from_nanos(slow)).await;
                }
                break;
            }
        }
        let superseded = data_dir.take_superseded();
        if !superseded.is_empty() {
            let _ = snapshots.send(SnapshotJob::Remove(superseded));
        }
        if slot.fs.incarnation() != incarnation || done.send(DiskReport::Done).is_err() {
            return;
        }
    }
}

/// What one fsync takes on this node's disk (a slow disk fault sets its own).
async fn disk_latency(shared: &Shared, slot: &ServerSlot) {
    let own = *slot.fsync_latency.lock().unwrap();
    let (lo, hi) = own.unwrap_or(shared.opts.fsync_latency);
    let d = if hi > lo {
        madsim::rand::thread_rng().gen_range(lo..=hi)
    } else {
        lo
    };
    if !d.is_zero() {
        madsim::time::sleep(d).await;
    }
}
