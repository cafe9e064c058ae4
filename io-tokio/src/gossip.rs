//! One gossip pool (`tern_core::gossip::Gossip`) on real sockets: UDP
//! datagrams and TCP state exchanges on the same address, as memberlist's
//! `NetTransport` listens (Consul's `serf_lan` port 8301, `serf_wan` 8302).
//!
//! [`GossipNode::start`] binds both sockets, then one task owns the core pool
//! and moves bytes for it:
//!
//! - a datagram in is `GossipInput::Packet` from its source address; a
//!   `Send` with `stream: false` leaves as a datagram from the bound UDP
//!   socket, so acks come back to the gossip port;
//! - a `Send` with `stream: true` (push-pull) dials the peer's gossip
//!   address over TCP from the bind IP, writes one length-prefixed frame and
//!   reads at most one frame back (the peer's state), which goes in as a
//!   packet from the dialed address;
//! - an inbound TCP connection carries one frame; the core's answer to it is
//!   addressed to the connection's ephemeral source port, so it goes back on
//!   that same connection, as memberlist answers a push-pull.
//!
//! Frames are the core's (`wire::encode_frame`: a 4-byte big-endian length),
//! bounded by `stream_bytes_max` (plus sealing's 29 bytes), with the pool's
//! `join_timeout` (memberlist's `TCPTimeout`) on every read and write and at
//! most [`STREAMS_MAX`] streams at once. Time is a monotonic clock turned
//! into the core's `Instant`s; the pool's RNG seed comes from OS randomness
//! and its generation from the wall clock, both chosen afresh on every start
//! (see [`GossipNode::start`]).
//!
//! Events are logged at Consul's levels (members joining, failing, leaving:
//! info; a failed join attempt or a refused member: warn) and published on a
//! broadcast channel ([`GossipHandle::subscribe`]) for the agent above.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use tern_core::gossip::{
    ForceLeaveError, Gossip, GossipAction, GossipConfig, GossipEvent, GossipInput, KeyOp,
    KeyReport, Member, Status, Tags,
};
use tern_core::wire;
use tern_core::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

/// TCP state exchanges (inbound and outbound) in flight at once; more are
/// refused (inbound: the connection is closed; outbound: the send is dropped,
/// as a lost datagram would be; the core retries on its own timers).
pub const STREAMS_MAX: usize = 128;
/// Events buffered for each subscriber; a slow one misses the oldest.
pub const EVENTS_MAX: usize = 1024;
/// Commands from handles queued for the pool's task.
const COMMANDS_MAX: usize = 64;
/// The largest datagram read: a UDP payload can be no larger, so the core
/// sees the real length and refuses anything over `packet_bytes_max`.
const DATAGRAM_BUFFER: usize = 64 * 1024;
/// Remembered reasons why a stream to an address failed, for the join
/// warning; bounded, oldest forgotten first.
const STREAM_ERRORS_MAX: usize = 64;
/// How many times a bind to port 0 looks for a port free for both UDP and TCP.
const BIND_ATTEMPTS_MAX: usize = 16;

/// Which pool a node runs: only names it in log lines, as Consul prefixes
/// them with `(LAN)` or `(WAN)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Lan,
    Wan,
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolKind::Lan => "LAN",
            PoolKind::Wan => "WAN",
        })
    }
}

/// Why a request to a gossip node did nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipError {
    /// The node's task is gone (stopped, or it panicked).
    Stopped,
    /// The node is leaving or has left: it joins nothing any more.
    Leaving,
    /// A join was asked with no address.
    NoAddresses,
    /// No address answered this attempt; the core keeps retrying with
    /// backoff unless `join_attempts_max` is reached.
    JoinFailed(String),
    /// A force-leave was refused.
    ForceLeave {
        name: String,
        reason: ForceLeaveError,
    },
}

impl fmt::Display for GossipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GossipError::Stopped => f.write_str("the gossip pool is not running"),
            GossipError::Leaving => f.write_str("the gossip pool is leaving"),
            GossipError::NoAddresses => f.write_str("no address to join"),
            GossipError::JoinFailed(e) => write!(f, "join failed: {e}"),
            GossipError::ForceLeave {
                name,
                reason: ForceLeaveError::NotFound,
            } => write!(f, "No node found with name '{name}'"),
            GossipError::ForceLeave {
                name,
                reason: ForceLeaveError::NotFailed,
            } => write!(
                f,
                "node '{name}' is alive: only a failed node can be forced to leave"
            ),
        }
    }
}

impl std::error::Error for GossipError {}

/// Starts gossip pools on real sockets.
pub struct GossipNode;

impl GossipNode {
    /// Binds UDP and TCP on `bind` (port 0: one port free for both, chosen
    /// by the OS) and runs `config`'s pool on a new task.
    ///
    /// `config.generation` and `config.seed` are replaced: the generation by
    /// [`new_generation`] (so a restarted member outranks what was said about
    /// its previous life), the seed by OS randomness. An empty
    /// `config.address` advertises the bound address, which then must not be
    /// unspecified (`0.0.0.0`).
    pub async fn start(
        config: GossipConfig,
        bind: SocketAddr,
        pool: PoolKind,
    ) -> io::Result<GossipHandle> {
        GossipNode::start_with_keyring_file(config, bind, pool, None).await
    }

    /// As [`GossipNode::start`], writing every change of the pool's keyring
    /// to `keyring_file` (see `crate::keyring`) before the change is
    /// acknowledged to whoever asked for it.
    pub async fn start_with_keyring_file(
        mut config: GossipConfig,
        bind: SocketAddr,
        pool: PoolKind,
        keyring_file: Option<std::path::PathBuf>,
    ) -> io::Result<GossipHandle> {
        let (udp, listener) = bind_both(bind).await?;
        let local = udp.local_addr()?;
        if config.address.is_empty() {
            if local.ip().is_unspecified() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("gossip: bound to {local}: an unspecified bind address needs an advertise address"),
                ));
            }
            config.address = local.to_string();
        }
        config.generation = new_generation();
        config.seed = os_random_seed();
        let clock = Clock {
            start: std::time::Instant::now(),
        };
        let gossip = Gossip::new(config, clock.now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (events, _) = broadcast::channel(EVENTS_MAX);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS_MAX);
        let (inbound_tx, inbound_rx) = mpsc::channel(STREAMS_MAX);
        let local_member = gossip.local();
        tracing::info!(
            "serf: ({pool}) gossip pool started: name={} address={} bind={local} generation={} encrypted={}",
            local_member.name,
            local_member.address,
            local_member.version.generation,
            gossip.keyring().is_enabled()
        );
        let driver = Driver {
            pool,
            stream_timeout: std::time::Duration::from_nanos(
                gossip.config().join_timeout.as_nanos(),
            ),
            // A sealed state exchange carries the sealing's overhead on top.
            stream_bytes_max: gossip.config().stream_bytes_max
                + tern_core::gossip::seal::SEAL_OVERHEAD,
            bad_log_interval: std::time::Duration::from_nanos(
                gossip.config().bad_packet_log_interval.as_nanos(),
            ),
            gossip,
            clock,
            default_port: local.port(),
            local_ip: local.ip(),
            udp: Some(udp),
            listener: Some(listener),
            events: events.clone(),
            cmds: cmd_rx,
            inbound_tx,
            inbound_rx,
            streams: JoinSet::new(),
            join_waiters: Vec::new(),
            join_queue: std::collections::VecDeque::new(),
            leave_waiters: Vec::new(),
            stream_errors: BTreeMap::new(),
            bad_stream_log_at: None,
            bad_stream_suppressed: 0,
            keyring_file,
            key_waiters: BTreeMap::new(),
            next_key_id: 0,
        };
        let task = tokio::spawn(driver.run());
        Ok(GossipHandle {
            cmds: cmd_tx,
            events,
            local,
            name: local_member.name,
            generation: local_member.version.generation,
            task: Some(task),
        })
    }
}

/// A running gossip pool. Dropping it stops the pool at once, without a
/// leave (as a crash would); [`GossipHandle::leave`] first for a clean exit.
pub struct GossipHandle {
    cmds: mpsc::Sender<Command>,
    events: broadcast::Sender<GossipEvent>,
    local: SocketAddr,
    name: String,
    generation: u64,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl GossipHandle {
    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Our member name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The generation this start picked.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every member we know, ourselves included, by name; empty once the
    /// pool's task is gone.
    pub async fn members(&self) -> Vec<Member> {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Members(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// A cheap, clonable reference for another task that must not keep the
    /// pool running: it reads the member list and joins.
    pub fn weak(&self) -> GossipRef {
        GossipRef {
            cmds: self.cmds.downgrade(),
        }
    }

    /// Joins the pool through `addresses` (`ip`, `ip:port`, `host:port`; a
    /// missing port is our own gossip port, as memberlist resolves join
    /// addresses). Returns the address that answered the first attempt, or
    /// why the first attempt failed; after a failure the core keeps
    /// retrying in the background with a doubling backoff (Consul's
    /// `retry_join`) until `join_attempts_max`.
    pub async fn join(&self, addresses: Vec<String>) -> Result<String, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Join(addresses, tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }

    /// Leaves the pool: announces it, waits `leave_propagate_delay` for the
    /// news to spread, then closes the sockets. Returns once the leave was
    /// broadcast; members then show us as `left`.
    pub async fn leave(&self) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Leave(tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// An operator's force-leave (Consul's `force-leave`): a failed member
    /// becomes `left` here and everywhere; with `prune` it is also
    /// forgotten at once.
    pub async fn force_leave(&self, name: &str, prune: bool) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::ForceLeave(name.to_string(), prune, tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }

    /// Announces new tags (serf's `SetTags`); refused when over the pool's
    /// `tags_bytes_max`.
    pub async fn set_tags(&self, tags: Tags) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let stopped = || GossipError::Stopped.to_string();
        self.cmds
            .send(Command::SetTags(tags, tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A keyring operation across the pool (Consul's `keyring`): applied
    /// here, then asked of every live member; returns once every member
    /// answered or the query timeout passed.
    pub async fn keyring(&self, op: KeyOp) -> Result<KeyReport, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Keyring(op, tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// The keys this pool holds now (no member is asked).
    pub async fn local_keyring(&self) -> Result<tern_core::gossip::Keyring, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::LocalKeyring(tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// Every event from now on (joins, failures, leaves, dropped packets...).
    pub fn subscribe(&self) -> broadcast::Receiver<GossipEvent> {
        self.events.subscribe()
    }

    /// Stops the pool without a leave (what a crash looks like to the
    /// others) and returns once its sockets are closed, so the address can
    /// be bound again.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A pool reference that does not keep the pool running
/// ([`GossipHandle::weak`]).
#[derive(Clone)]
pub struct GossipRef {
    cmds: mpsc::WeakSender<Command>,
}

impl GossipRef {
    /// Every member we know, ourselves included; empty once the pool is gone.
    pub async fn members(&self) -> Vec<Member> {
        let Some(cmds) = self.cmds.upgrade() else {
            return Vec::new();
        };
        let (tx, rx) = oneshot::channel();
        if cmds.send(Command::Members(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// As [`GossipHandle::join`].
    pub async fn join(&self, addresses: Vec<String>) -> Result<String, GossipError> {
        let cmds = self.cmds.upgrade().ok_or(GossipError::Stopped)?;
        let (tx, rx) = oneshot::channel();
        cmds.send(Command::Join(addresses, tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }
}

impl Drop for GossipHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A generation for a new start: the wall clock in milliseconds, and above
/// any this process picked before (two starts in one millisecond, or a clock
/// stepped back while running, still get increasing generations). A clock
/// stepped back between two runs of the process could give a restarted
/// member a lower generation than its previous life; a persisted counter
/// (the agent's data dir) would close that gap.
pub fn new_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(wall.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    wall.max(prev.saturating_add(1))
}

/// A seed from OS randomness: std's `RandomState` keys come from the OS
/// (getrandom), mixed with the time and the process id so two nodes started
/// in one process differ too.
fn os_random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Binds UDP and TCP to the same address. Port 0: TCP picks a port, and UDP
/// must get the same one, retried if another socket holds it.
async fn bind_both(bind: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..BIND_ATTEMPTS_MAX {
        let listener = listen(bind)?;
        let at = listener.local_addr()?;
        match UdpSocket::bind(at).await {
            Ok(udp) => return Ok((udp, listener)),
            Err(e) if bind.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_err = Some(e);
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("gossip: UDP {at}: {e}"))),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("gossip: no free port")))
}

/// A TCP listener with `SO_REUSEADDR`, so a restarted agent binds its gossip
/// port again while old connections to it sit in TIME_WAIT.
fn listen(bind: SocketAddr) -> io::Result<TcpListener> {
    let socket = if bind.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(bind)
        .map_err(|e| io::Error::new(e.kind(), format!("gossip: TCP {bind}: {e}")))?;
    socket.listen(1024)
}

/// The daemon's monotonic clock, as the core's `Instant`s (the agent's
/// runtime does the same).
struct Clock {
    start: std::time::Instant,
}

impl Clock {
    fn now(&self) -> Instant {
        Instant(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn deadline(&self, t: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + StdDuration::from_nanos(t.0))
    }
}

type JoinReply = oneshot::Sender<Result<String, GossipError>>;

enum Command {
    Members(oneshot::Sender<Vec<Member>>),
    Join(Vec<String>, JoinReply),
    Leave(oneshot::Sender<()>),
    ForceLeave(String, bool, oneshot::Sender<Result<(), GossipError>>),
    SetTags(Tags, oneshot::Sender<Result<(), String>>),
    Keyring(KeyOp, oneshot::Sender<KeyReport>),
    LocalKeyring(oneshot::Sender<tern_core::gossip::Keyring>),
}

/// What a stream task hands the pool's task.
enum Inbound {
    /// A frame from a TCP stream. `reply` is set for an inbound connection:
    /// the core's answer addressed to `from` goes back on it.
    Stream {
        from: String,
        bytes: Vec<u8>,
        reply: Option<oneshot::Sender<Vec<u8>>>,
    },
    /// An outbound stream to `to` failed (dial, write, or read).
    StreamFailed { to: String, error: String },
    /// An inbound connection sent something that is not a frame.
    BadStream { from: String, error: String },
}

/// The pool's task: the core pool, its sockets, and the streams in flight.
struct Driver {
    pool: PoolKind,
    gossip: Gossip,
    clock: Clock,
    stream_timeout: StdDuration,
    stream_bytes_max: usize,
    bad_log_interval: StdDuration,
    /// Our gossip port: the port of a join address that has none.
    default_port: u16,
    /// Where outbound streams leave from.
    local_ip: IpAddr,
    /// Closed (`None`) once a leave is complete.
    udp: Option<UdpSocket>,
    listener: Option<TcpListener>,
    events: broadcast::Sender<GossipEvent>,
    cmds: mpsc::Receiver<Command>,
    inbound_tx: mpsc::Sender<Inbound>,
    inbound_rx: mpsc::Receiver<Inbound>,
    /// Stream tasks; dropped (so aborted) with the driver.
    streams: JoinSet<()>,
    join_waiters: Vec<JoinReply>,
    /// Joins asked while an attempt is in flight: each gets an attempt of
    /// its own once the current one is decided, so an operator's join never
    /// takes over (or answers for) a background retry-join, or the reverse.
    join_queue: std::collections::VecDeque<(Vec<String>, JoinReply)>,
    leave_waiters: Vec<oneshot::Sender<()>>,
    stream_errors: BTreeMap<String, String>,
    bad_stream_log_at: Option<tokio::time::Instant>,
    bad_stream_suppressed: u64,
    /// Where the keyring is persisted (`serf/local.keyring`), if anywhere.
    keyring_file: Option<std::path::PathBuf>,
    /// Keyring operations in flight, by the id handed to the core.
    key_waiters: BTreeMap<u64, oneshot::Sender<KeyReport>>,
    next_key_id: u64,
}

/// What woke the pool's task.
enum Wake {
    Command(Command),
    Datagram(io::Result<(usize, SocketAddr)>),
    Accept(io::Result<(TcpStream, SocketAddr)>),
    Inbound(Inbound),
    StreamDone,
    Tick,
}

impl Driver {
    async fn run(mut self) {
        let mut buf = vec![0u8; DATAGRAM_BUFFER];
        loop {
            let deadline = self.gossip.poll_timeout().map(|t| self.clock.deadline(t));
            let wake = tokio::select! {
                c = self.cmds.recv() => match c {
                    Some(c) => Wake::Command(c),
                    None => return, // every handle is gone
                },
                r = recv_datagram(self.udp.as_ref(), &mut buf) => Wake::Datagram(r),
                a = accept(self.listener.as_ref()) => Wake::Accept(a),
                Some(i) = self.inbound_rx.recv() => Wake::Inbound(i),
                Some(_) = self.streams.join_next(), if !self.streams.is_empty() => Wake::StreamDone,
                () = sleep_until(deadline) => Wake::Tick,
            };
            match wake {
                Wake::Command(c) => self.handle_command(c),
                Wake::Datagram(Ok((n, from))) => {
                    let input = GossipInput::Packet {
                        from: from.to_string(),
                        bytes: buf[..n].to_vec(),
                    };
                    self.input(input, None);
                }
                Wake::Datagram(Err(e)) => {
                    // ICMP errors from earlier sends surface here on some
                    // systems; nothing to do but carry on.
                    tracing::debug!("serf: ({}) UDP receive failed: {e}", self.pool);
                }
                Wake::Accept(Ok((stream, peer))) => self.accepted(stream, peer),
                Wake::Accept(Err(e)) => {
                    tracing::warn!("serf: ({}) TCP accept failed: {e}", self.pool);
                    tokio::time::sleep(StdDuration::from_millis(50)).await;
                }
                Wake::Inbound(i) => self.handle_inbound(i),
                Wake::StreamDone => {}
                Wake::Tick => self.input(GossipInput::Tick, None),
            }
        }
    }

    fn handle_command(&mut self, c: Command) {
        match c {
            Command::Members(tx) => {
                let _ = tx.send(self.gossip.members());
            }
            Command::Join(addresses, tx) => {
                if self.gossip.local().status != Status::Alive {
                    let _ = tx.send(Err(GossipError::Leaving));
                    return;
                }
                let addresses: Vec<String> = addresses
                    .iter()
                    .map(|a| with_port(a.trim(), self.default_port))
                    .filter(|a| !a.is_empty())
                    .collect();
                if addresses.is_empty() {
                    let _ = tx.send(Err(GossipError::NoAddresses));
                    return;
                }
                tracing::info!(
                    "agent: ({}) joining: addresses={}",
                    self.pool,
                    addresses.join(",")
                );
                if !self.join_waiters.is_empty() {
                    if self.join_queue.len() >= COMMANDS_MAX {
                        let _ = tx.send(Err(GossipError::JoinFailed(
                            "too many joins waiting".into(),
                        )));
                    } else {
                        self.join_queue.push_back((addresses, tx));
                    }
                    return;
                }
                self.join_waiters.push(tx);
                self.input(GossipInput::Join(addresses), None);
            }
            Command::Leave(tx) => {
                if self.gossip.local().status == Status::Left {
                    let _ = tx.send(());
                    return;
                }
                tracing::info!("serf: ({}) leaving the pool", self.pool);
                for (_, w) in self.join_queue.drain(..) {
                    let _ = w.send(Err(GossipError::Leaving));
                }
                self.leave_waiters.push(tx);
                self.input(GossipInput::Leave, None);
            }
            Command::SetTags(tags, tx) => {
                let _ = tx.send(self.gossip.set_tags(tags));
            }
            Command::LocalKeyring(tx) => {
                let _ = tx.send(self.gossip.keyring().clone());
            }
            Command::Keyring(op, tx) => {
                self.next_key_id += 1;
                let id = self.next_key_id;
                tracing::info!("serf: ({}) keyring operation {op:?}", self.pool);
                self.key_waiters.insert(id, tx);
                self.input(GossipInput::Keyring { id, op }, None);
            }
            Command::ForceLeave(name, prune, tx) => {
                if self.gossip.local().status == Status::Left {
                    let _ = tx.send(Err(GossipError::Stopped));
                    return;
                }
                let now = self.clock.now();
                let mut out = Vec::new();
                let result = self.gossip.force_leave(now, &name, prune, &mut out);
                match &result {
                    Ok(()) if prune => {
                        tracing::info!("serf: ({}) force-leaving and pruning {name}", self.pool)
                    }
                    Ok(()) => tracing::info!("serf: ({}) force-leaving {name}", self.pool),
                    Err(reason) => {
                        tracing::warn!(
                            "serf: ({}) force-leave of {name} refused: {reason:?}",
                            self.pool
                        );
                    }
                }
                self.dispatch(out, None);
                let _ = tx.send(result.map_err(|reason| GossipError::ForceLeave { name, reason }));
            }
        }
    }

    fn handle_inbound(&mut self, i: Inbound) {
        match i {
            Inbound::Stream { from, bytes, reply } => {
                let reply = reply.map(|r| (from.clone(), r));
                self.input(GossipInput::Packet { from, bytes }, reply);
            }
            Inbound::StreamFailed { to, error } => {
                tracing::debug!("serf: ({}) stream to {to} failed: {error}", self.pool);
                if self.stream_errors.len() >= STREAM_ERRORS_MAX {
                    self.stream_errors.pop_first();
                }
                self.stream_errors.insert(to, error);
            }
            Inbound::BadStream { from, error } => {
                // The core rate-limits what it drops; frames it never sees
                // are limited here the same way.
                let now = tokio::time::Instant::now();
                if self
                    .bad_stream_log_at
                    .is_some_and(|t| now < t + self.bad_log_interval)
                {
                    self.bad_stream_suppressed += 1;
                } else {
                    tracing::warn!(
                        "memberlist: ({}) dropped a malformed stream from {from}: {error} ({} suppressed since the last)",
                        self.pool,
                        self.bad_stream_suppressed
                    );
                    self.bad_stream_log_at = Some(now);
                    self.bad_stream_suppressed = 0;
                }
            }
        }
    }

    /// Hands `input` to the core and carries out what it asks.
    fn input(&mut self, input: GossipInput, reply: Option<(String, oneshot::Sender<Vec<u8>>)>) {
        let mut out = Vec::new();
        self.gossip.handle(self.clock.now(), input, &mut out);
        self.dispatch(out, reply);
    }

    fn dispatch(
        &mut self,
        out: Vec<GossipAction>,
        mut reply: Option<(String, oneshot::Sender<Vec<u8>>)>,
    ) {
        for action in out {
            match action {
                GossipAction::Send { to, bytes, stream } => {
                    if stream && reply.as_ref().is_some_and(|(from, _)| *from == to) {
                        if let Some((_, tx)) = reply.take() {
                            let _ = tx.send(bytes);
                        }
                    } else if stream {
                        self.send_stream(to, bytes);
                    } else {
                        self.send_datagram(&to, &bytes);
                    }
                }
                GossipAction::Event(e) => self.event(e),
            }
        }
        if self.gossip.local().status == Status::Left && self.udp.is_some() {
            // The leave has spread: close the sockets, as memberlist shuts
            // its transport down after a leave.
            self.udp = None;
            self.listener = None;
            self.streams.abort_all();
        }
    }

    fn send_datagram(&self, to: &str, bytes: &[u8]) {
        let Some(udp) = &self.udp else {
            return;
        };
        let Ok(addr) = to.parse::<SocketAddr>() else {
            // Members advertise an IP and port; anything else is not a
            // gossip address we can send a datagram to.
            tracing::debug!(
                "serf: ({}) not an ip:port, datagram dropped: {to}",
                self.pool
            );
            return;
        };
        // Never wait on a datagram: a full socket buffer loses it, as the
        // network might have; the protocol tolerates loss.
        if let Err(e) = udp.try_send_to(bytes, addr) {
            tracing::debug!("serf: ({}) datagram to {to} failed: {e}", self.pool);
        }
    }

    fn send_stream(&mut self, to: String, bytes: Vec<u8>) {
        if self.udp.is_none() {
            return;
        }
        if self.streams.len() >= STREAMS_MAX {
            tracing::debug!(
                "serf: ({}) too many streams; push-pull to {to} dropped",
                self.pool
            );
            return;
        }
        // What went wrong last time is stale now.
        self.stream_errors.remove(&to);
        let local = self.local_ip;
        let timeout = self.stream_timeout;
        let max = self.stream_bytes_max;
        let inbound = self.inbound_tx.clone();
        self.streams.spawn(async move {
            let result = exchange(&to, local, &bytes, timeout, max).await;
            let msg = match result {
                Ok(Some(bytes)) => Inbound::Stream {
                    from: to,
                    bytes,
                    reply: None,
                },
                // Every push-pull we dial asks for the peer's state.
                Ok(None) => Inbound::StreamFailed {
                    to,
                    error: "closed without an answer".into(),
                },
                Err(error) => Inbound::StreamFailed { to, error },
            };
            let _ = inbound.send(msg).await;
        });
    }

    fn accepted(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.streams.len() >= STREAMS_MAX {
            tracing::debug!(
                "serf: ({}) too many streams; closed one from {peer}",
                self.pool
            );
            return;
        }
        let timeout = self.stream_timeout;
        let max = self.stream_bytes_max;
        let inbound = self.inbound_tx.clone();
        self.streams.spawn(async move {
            let from = peer.to_string();
            let bytes = match tokio::time::timeout(timeout, read_frame(&mut stream, max)).await {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => return, // closed before a frame: nothing said
                Ok(Err(FrameReadError::Bad(error))) => {
                    let _ = inbound.send(Inbound::BadStream { from, error }).await;
                    return;
                }
                Ok(Err(FrameReadError::Io(_))) | Err(_) => return,
            };
            let (tx, rx) = oneshot::channel();
            let msg = Inbound::Stream {
                from,
                bytes,
                reply: Some(tx),
            };
            if inbound.send(msg).await.is_err() {
                return;
            }
            // No answer (the sender did not ask for our state, or the
            // packet was refused): the connection just closes.
            if let Ok(Ok(answer)) = tokio::time::timeout(timeout, rx).await {
                let mut frame = Vec::with_capacity(answer.len() + wire::FRAME_HEADER_LEN);
                wire::encode_frame(&answer, &mut frame);
                let _ = tokio::time::timeout(timeout, stream.write_all(&frame)).await;
                let _ = tokio::time::timeout(timeout, stream.shutdown()).await;
            }
        });
    }

    fn event(&mut self, e: GossipEvent) {
        self.log(&e);
        let decided = matches!(
            e,
            GossipEvent::Joined { .. } | GossipEvent::JoinFailed { .. }
        );
        match &e {
            GossipEvent::Joined { address, .. } => {
                for w in self.join_waiters.drain(..) {
                    let _ = w.send(Ok(address.clone()));
                }
            }
            GossipEvent::JoinFailed { addresses, .. } => {
                let why = self.join_failure(addresses);
                for w in self.join_waiters.drain(..) {
                    let _ = w.send(Err(GossipError::JoinFailed(why.clone())));
                }
            }
            GossipEvent::LeaveComplete => {
                for w in self.leave_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            GossipEvent::KeyringChanged(ring) => {
                // Persisted before the answer that follows this event in
                // the core's output leaves (serf writes its keyring file
                // before answering a key query).
                if let Some(path) = &self.keyring_file {
                    if let Err(e) = crate::keyring::save(path, ring) {
                        tracing::error!("serf: ({}) failed to write keyring file: {e}", self.pool);
                    }
                }
            }
            GossipEvent::KeyringDone(report) => {
                if let Some(w) = self.key_waiters.remove(&report.id) {
                    let _ = w.send(report.clone());
                }
            }
            _ => {}
        }
        // Nobody subscribed is fine.
        let _ = self.events.send(e);
        if decided && self.join_waiters.is_empty() {
            self.next_join();
        }
    }

    /// Starts the join that waited longest for the one in flight.
    fn next_join(&mut self) {
        let Some((addresses, tx)) = self.join_queue.pop_front() else {
            return;
        };
        if self.gossip.local().status != Status::Alive {
            let _ = tx.send(Err(GossipError::Leaving));
            return;
        }
        tracing::info!(
            "agent: ({}) joining: addresses={}",
            self.pool,
            addresses.join(",")
        );
        self.join_waiters.push(tx);
        self.input(GossipInput::Join(addresses), None);
    }

    /// Why no address answered: what each stream reported, if anything.
    fn join_failure(&self, addresses: &[String]) -> String {
        addresses
            .iter()
            .map(|a| match self.stream_errors.get(a) {
                Some(e) => format!("{a}: {e}"),
                None => format!("{a}: no answer"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Consul's log lines and levels for serf's and memberlist's events.
    fn log(&self, e: &GossipEvent) {
        let pool = self.pool;
        match e {
            GossipEvent::MemberJoined(m) => {
                tracing::info!("serf: ({pool}) EventMemberJoin: {} {}", m.name, m.address);
            }
            GossipEvent::MemberUpdated(m) => {
                tracing::info!("serf: ({pool}) EventMemberUpdate: {} {}", m.name, m.address);
            }
            GossipEvent::MemberSuspect { name, from } => {
                tracing::info!("memberlist: ({pool}) suspect {name} has failed (from {from})");
            }
            GossipEvent::MemberAlive(m) => {
                tracing::info!("memberlist: ({pool}) {} refuted a suspicion", m.name);
            }
            GossipEvent::MemberFailed(m) => {
                tracing::info!("serf: ({pool}) EventMemberFailed: {} {}", m.name, m.address);
            }
            GossipEvent::MemberLeft(m) => {
                tracing::info!("serf: ({pool}) EventMemberLeft: {} {}", m.name, m.address);
            }
            GossipEvent::MemberReaped { name, status } => {
                tracing::info!(
                    "serf: ({pool}) EventMemberReap: {name} ({} too long)",
                    status.as_str()
                );
            }
            GossipEvent::Refuted(v) => tracing::warn!(
                "memberlist: ({pool}) refuting a suspect or dead message (generation {}, incarnation {})",
                v.generation,
                v.incarnation
            ),
            GossipEvent::JoinFailed {
                addresses,
                attempt,
                retry_in,
            } => {
                let why = self.join_failure(addresses);
                match retry_in {
                    Some(d) => tracing::warn!(
                        "agent: ({pool}) Join cluster failed, will retry: attempt={attempt} retry_interval={}ms error={why}",
                        d.as_millis()
                    ),
                    // One attempt per join: whoever asked retries (the
                    // agent's retry_join) or reports it (an operator's join).
                    None if self.gossip.config().join_attempts_max == 1 => tracing::warn!(
                        "agent: ({pool}) couldn't join: error={why}"
                    ),
                    None => tracing::error!(
                        "agent: ({pool}) max join retry exhausted: attempts={attempt} error={why}"
                    ),
                }
            }
            GossipEvent::Joined { address, attempt } => {
                tracing::info!("agent: ({pool}) joined: address={address} attempt={attempt}");
            }
            GossipEvent::LeaveComplete => tracing::info!("serf: ({pool}) left the pool"),
            GossipEvent::Conflict {
                name,
                node_id,
                holder,
                holder_node_id,
            } => tracing::warn!(
                "serf: ({pool}) member {name} with node id {node_id} refused: conflicts with {holder} ({holder_node_id})"
            ),
            GossipEvent::ForceLeaveRefused { name, reason } => {
                tracing::warn!("serf: ({pool}) force-leave of {name} refused: {reason:?}");
            }
            GossipEvent::PacketDropped {
                from,
                error,
                suppressed,
            } => tracing::warn!(
                "memberlist: ({pool}) dropped a malformed packet from {from}: {error} ({suppressed} suppressed since the last)"
            ),
            GossipEvent::KeyringChanged(ring) => tracing::info!(
                "serf: ({pool}) keyring changed: {} keys installed",
                ring.keys().len()
            ),
            GossipEvent::KeyringDone(r) => tracing::info!(
                "serf: ({pool}) keyring operation done: {}/{} members answered",
                r.responses.len(),
                r.num_nodes
            ),
        }
    }
}

/// A join address with our gossip port when it has none.
fn with_port(address: &str, port: u16) -> String {
    if address.is_empty() || address.parse::<SocketAddr>().is_ok() {
        return address.to_string();
    }
    if let Ok(ip) = address.parse::<IpAddr>() {
        return SocketAddr::new(ip, port).to_string();
    }
    match address.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => address.to_string(),
        _ => format!("{address}:{port}"),
    }
}

async fn recv_datagram(udp: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match udp {
        Some(u) => u.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

enum FrameReadError {
    /// The peer's fault: a length over the limit.
    Bad(String),
    Io(io::Error),
}

/// One frame: the 4-byte length checked against `max` before the payload is
/// read. `Ok(None)`: the stream closed before a frame began.
async fn read_frame(stream: &mut TcpStream, max: usize) -> Result<Option<Vec<u8>>, FrameReadError> {
    let mut header = [0u8; wire::FRAME_HEADER_LEN];
    let mut got = 0;
    while got < header.len() {
        let n = stream
            .read(&mut header[got..])
            .await
            .map_err(FrameReadError::Io)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameReadError::Bad("closed inside a frame header".into()))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameReadError::Bad(format!(
            "frame of {len} bytes is over the limit of {max}"
        )));
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(FrameReadError::Io)?;
    Ok(Some(payload))
}

/// An outbound state exchange: dial `to` from `local`, send one frame, and
/// read the answer if the peer sends one (`None`: it closed without one).
async fn exchange(
    to: &str,
    local: IpAddr,
    bytes: &[u8],
    timeout: StdDuration,
    max: usize,
) -> Result<Option<Vec<u8>>, String> {
    let mut stream = crate::net::dial(to, Some(local)).await?;
    let _ = stream.set_nodelay(true);
    let mut frame = Vec::with_capacity(bytes.len() + wire::FRAME_HEADER_LEN);
    wire::encode_frame(bytes, &mut frame);
    tokio::time::timeout(timeout, stream.write_all(&frame))
        .await
        .map_err(|_| "write timed out".to_string())?
        .map_err(|e| format!("write: {e}"))?;
    match tokio::time::timeout(timeout, read_frame(&mut stream, max)).await {
        Err(_) => Err("no answer within the timeout".into()),
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(FrameReadError::Bad(e))) => Err(e),
        Ok(Err(FrameReadError::Io(e))) => Err(format!("read: {e}")),
    }
}
