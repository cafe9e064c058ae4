//! A simulated server's LAN gossip pool: the core's [`Gossip`] on madsim's
//! network, as `io-tokio/src/gossip.rs` runs it on UDP and TCP.
//!
//! Each server node runs one pool task beside its node loop, bound to
//! `<server ip>:8301` (Consul's `serf_lan` port) on the same madsim node,
//! so partitions, one-way clogs, packet loss, kills and pauses hit gossip
//! exactly as they hit Raft traffic. Datagrams are madsim datagrams
//! (lossy, reordered); a `stream: true` send (a push-pull state exchange)
//! goes over one of madsim's reliable connections (`connect1`, which stalls
//! while its link is clogged and is refused when the link is clogged at
//! connect time, as TCP's would be), and the answer to an inbound one goes
//! back on its connection. Every start is a new pool with a new generation
//! (`starts << 32 | 32 bits from the seeded RNG`, so it only grows), which
//! joins every other server of the world, retrying with the pool's backoff.
//!
//! What the pool says of servers reaches the server as the contract in
//! `tern_core::reconcile` asks: every member event goes through
//! [`ServerMember::from_gossip`] and, when it is a server of this
//! datacenter, becomes [`Input::ServerMember`] (and every member of this
//! datacenter, through [`LanMember::from_gossip`], [`Input::LanMember`]); a reaped member is reported
//! from its last copy with [`GossipStatus::None`]; the pool's own member is
//! reported when it starts.

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use madsim::net::Endpoint;
use madsim::rand::Rng;
use tern_core::autopilot::GossipStatus;
use tern_core::gossip::{
    Gossip, GossipAction, GossipConfig, GossipEvent, GossipInput, Member, Status, Tags,
};
use tern_core::reconcile::ServerMember;
use tern_core::serf_health::LanMember;
use tern_core::{Input, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::net::{receive_loop, send_detached, Datagram};
use crate::node::now;
use crate::world::{ServerSlot, Shared, WorldEvent};

/// Consul's LAN gossip port.
pub const GOSSIP_PORT: u16 = 8301;
pub(crate) const TAG_GOSSIP: u64 = 4;

/// Streams (state exchanges) a pool runs at once, as the tokio driver's
/// `STREAMS_MAX`; more are dropped (push-pull is retried on its interval).
const STREAMS_MAX: usize = 128;

/// The build version servers announce in their `build` tag.
const BUILD: &str = "0.1.0";

/// What the world asks of a running pool.
#[derive(Debug)]
pub(crate) enum GossipControl {
    Leave,
    ForceLeave(String),
    Join(Vec<String>),
}

/// What the pool's helper tasks hand its loop.
enum Inbound {
    Datagram(Datagram),
    /// A state exchange: `reply` is set for an inbound connection.
    Stream {
        from: String,
        bytes: Vec<u8>,
        reply: Option<oneshot::Sender<Vec<u8>>>,
    },
    StreamDone,
}

/// The gossip address of a server address (`10.0.0.1:8300` → `10.0.0.1:8301`).
pub fn gossip_address(server: SocketAddr) -> SocketAddr {
    SocketAddr::new(server.ip(), GOSSIP_PORT)
}

/// The pool's configuration for a server: LAN defaults, its identity and
/// tags, and a generation and seed drawn from the world's seeded RNG.
fn pool_config(slot: &ServerSlot, starts: u64, world_keys: &[Vec<u8>]) -> GossipConfig {
    let c = &slot.config;
    let port = slot.addr.port();
    let tags = Tags::server(&c.datacenter.0, port, c.node_id, 3, BUILD);
    let address = gossip_address(slot.addr).to_string();
    let mut g = GossipConfig::lan(&c.node_name.0, c.node_id, &address, tags);
    let mut rng = madsim::rand::thread_rng();
    g.generation = (starts << 32) | u64::from(rng.gen::<u32>());
    g.seed = rng.gen();
    let keys = slot
        .gossip_keys
        .clone()
        .unwrap_or_else(|| world_keys.to_vec());
    g.keyring =
        tern_core::gossip::Keyring::new(keys).expect("the world's gossip keys are AES keys");
    #[cfg(feature = "bugs")]
    {
        g.bug_no_refute = c.bugs.gossip_no_refute;
    }
    g
}

/// The pool task of one server incarnation: started by the node's init
/// task, killed with the node.
pub(crate) async fn run_gossip(
    shared: Arc<Shared>,
    slot: Arc<ServerSlot>,
    mut control: mpsc::UnboundedReceiver<GossipControl>,
    join: Vec<String>,
) {
    let starts = slot.counters.lock().unwrap().starts;
    let config = pool_config(&slot, starts, &shared.opts.gossip_keyring);
    let bind = gossip_address(slot.addr);
    let ep = match Endpoint::bind(bind).await {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("[io-sim] {:?}: cannot bind gossip {bind}: {e}", slot.id);
            return;
        }
    };
    let gossip = match Gossip::new(config, now()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("[io-sim] {:?}: gossip refused its config: {e}", slot.id);
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (dtx, mut drx) = mpsc::unbounded_channel();
    for _ in 0..shared.opts.receivers_per_tag.max(1) {
        madsim::task::spawn(receive_loop(ep.clone(), TAG_GOSSIP, dtx.clone()));
    }
    drop(dtx);
    // Datagrams into the one inbound channel.
    {
        let tx = tx.clone();
        madsim::task::spawn(async move {
            while let Some(d) = drx.recv().await {
                if tx.send(Inbound::Datagram(d)).is_err() {
                    return;
                }
            }
        });
    }
    madsim::task::spawn(accept_loop(
        ep.clone(),
        tx.clone(),
        gossip.config().join_timeout,
    ));
    let mut pool = Pool {
        dc: slot.config.datacenter.0.clone(),
        shared,
        slot,
        ep,
        gossip,
        inbound_tx: tx,
        streams: 0,
        last_tick: None,
        known: BTreeMap::new(),
    };
    // The server hears of this agent itself first, then of everyone the
    // pool learns about.
    let local = pool.gossip.local();
    pool.report(&local, None);
    pool.publish();
    if !join.is_empty() {
        pool.input(GossipInput::Join(join), None);
    }
    pool.run(rx, &mut control).await;
}

/// Accepts state exchanges and hands each, with a way to answer on its
/// connection, to the pool's loop.
async fn accept_loop(
    ep: Endpoint,
    tx: mpsc::UnboundedSender<Inbound>,
    timeout: tern_core::Duration,
) {
    let timeout = std::time::Duration::from_nanos(timeout.0);
    loop {
        let Ok((sender, mut receiver, from)) = ep.accept1().await else {
            return;
        };
        let tx = tx.clone();
        madsim::task::spawn(async move {
            let Ok(Ok(payload)) = madsim::time::timeout(timeout, receiver.recv()).await else {
                return;
            };
            let Ok(bytes) = payload.downcast::<Vec<u8>>() else {
                return;
            };
            let (reply_tx, reply_rx) = oneshot::channel();
            let msg = Inbound::Stream {
                from: from.to_string(),
                bytes: *bytes,
                reply: Some(reply_tx),
            };
            if tx.send(msg).is_err() {
                return;
            }
            // No answer: the connection just closes.
            if let Ok(Ok(answer)) = madsim::time::timeout(timeout, reply_rx).await {
                let _ = sender.send(Box::new(answer)).await;
                // Keep the connection up until the answer has gone out.
                madsim::time::sleep(timeout).await;
            }
        });
    }
}

struct Pool {
    shared: Arc<Shared>,
    slot: Arc<ServerSlot>,
    dc: String,
    ep: Endpoint,
    gossip: Gossip,
    inbound_tx: mpsc::UnboundedSender<Inbound>,
    /// Outbound state exchanges in flight.
    streams: usize,
    last_tick: Option<Instant>,
    /// The last copy of every member, to report a reaped one.
    known: BTreeMap<String, Member>,
}

enum Wake {
    Tick,
    Inbound(Inbound),
    Control(GossipControl),
    Closed,
}

impl Pool {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Inbound>,
        control: &mut mpsc::UnboundedReceiver<GossipControl>,
    ) {
        loop {
            match self.next_wake(&mut rx, control).await {
                Wake::Closed => return,
                Wake::Tick => {
                    self.last_tick = Some(now());
                    self.input(GossipInput::Tick, None);
                }
                Wake::Control(GossipControl::Leave) => self.input(GossipInput::Leave, None),
                Wake::Control(GossipControl::Join(addresses)) => {
                    self.input(GossipInput::Join(addresses), None)
                }
                Wake::Control(GossipControl::ForceLeave(name)) => {
                    self.input(GossipInput::ForceLeave { name, prune: false }, None)
                }
                Wake::Inbound(Inbound::StreamDone) => self.streams -= 1,
                Wake::Inbound(Inbound::Datagram(_)) | Wake::Inbound(Inbound::Stream { .. })
                    if self.blocked() => {}
                Wake::Inbound(Inbound::Datagram(d)) => {
                    let Some(bytes) = d.bytes else {
                        continue;
                    };
                    self.slot.counters.lock().unwrap().gossip_received += 1;
                    let input = GossipInput::Packet {
                        from: d.from.to_string(),
                        bytes,
                    };
                    self.input(input, None);
                }
                Wake::Inbound(Inbound::Stream { from, bytes, reply }) => {
                    self.slot.counters.lock().unwrap().gossip_received += 1;
                    let input = GossipInput::Packet {
                        from: from.clone(),
                        bytes,
                    };
                    self.input(input, reply.map(|r| (from, r)));
                }
            }
            if self.gossip.local().status == Status::Left {
                // The leave has spread: stop, as memberlist shuts its
                // transport down after a leave.
                return;
            }
        }
    }

    async fn next_wake(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Inbound>,
        control: &mut mpsc::UnboundedReceiver<GossipControl>,
    ) -> Wake {
        let now = now();
        let wait = match self.gossip.poll_timeout() {
            None => None,
            Some(d) if d > now => Some(std::time::Duration::from_nanos(d.0 - now.0)),
            Some(_) if self.last_tick != Some(now) => return Wake::Tick,
            Some(_) => Some(std::time::Duration::from_millis(1)),
        };
        let mut sleep: Option<Pin<Box<madsim::time::Sleep>>> =
            wait.map(|d| Box::pin(madsim::time::sleep(d)));
        poll_fn(|cx| {
            if let Poll::Ready(c) = control.poll_recv(cx) {
                return Poll::Ready(c.map_or(Wake::Closed, Wake::Control));
            }
            if let Poll::Ready(i) = rx.poll_recv(cx) {
                // The pool holds a sender, so this never closes.
                return Poll::Ready(i.map_or(Wake::Closed, Wake::Inbound));
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

    /// Whether a firewall drops this server's gossip traffic
    /// ([`crate::World::block_gossip`]).
    fn blocked(&self) -> bool {
        self.slot
            .gossip_blocked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn input(&mut self, input: GossipInput, mut reply: Option<(String, oneshot::Sender<Vec<u8>>)>) {
        let mut out = Vec::new();
        self.gossip.handle(now(), input, &mut out);
        let blocked = self.blocked();
        for action in out {
            match action {
                GossipAction::Send { .. } if blocked => {}
                GossipAction::Send { to, bytes, stream } => {
                    {
                        let mut c = self.slot.counters.lock().unwrap();
                        c.gossip_sent += 1;
                        c.gossip_bytes_sent += bytes.len() as u64;
                    }
                    if stream && reply.as_ref().is_some_and(|(from, _)| *from == to) {
                        if let Some((_, tx)) = reply.take() {
                            let _ = tx.send(bytes);
                        }
                    } else if stream {
                        self.send_stream(to, bytes);
                    } else if let Ok(dst) = to.parse::<SocketAddr>() {
                        send_detached(&self.ep, dst, TAG_GOSSIP, bytes);
                    }
                }
                GossipAction::Event(e) => self.event(e),
            }
        }
        self.publish();
    }

    /// One outbound state exchange over a reliable connection; its answer
    /// comes back as a stream packet from `to`.
    fn send_stream(&mut self, to: String, bytes: Vec<u8>) {
        let Ok(dst) = to.parse::<SocketAddr>() else {
            return;
        };
        if self.streams >= STREAMS_MAX {
            return;
        }
        self.streams += 1;
        let ep = self.ep.clone();
        let tx = self.inbound_tx.clone();
        let timeout = std::time::Duration::from_nanos(self.gossip.config().join_timeout.0);
        madsim::task::spawn(async move {
            let exchange = async {
                let (sender, mut receiver) = ep.connect1(dst).await.ok()?;
                sender.send(Box::new(bytes)).await.ok()?;
                let payload = receiver.recv().await.ok()?;
                payload.downcast::<Vec<u8>>().ok().map(|b| *b)
            };
            if let Ok(Some(answer)) = madsim::time::timeout(timeout, exchange).await {
                let _ = tx.send(Inbound::Stream {
                    from: to,
                    bytes: answer,
                    reply: None,
                });
            }
            let _ = tx.send(Inbound::StreamDone);
        });
    }

    fn event(&mut self, e: GossipEvent) {
        if crate::trace::gossip() {
            eprintln!(
                "[gossip] {:.3} {:?} {:?}",
                now().0 as f64 / 1e9,
                self.slot.id,
                e
            );
        }
        let member = match &e {
            GossipEvent::MemberJoined(m)
            | GossipEvent::MemberUpdated(m)
            | GossipEvent::MemberAlive(m)
            | GossipEvent::MemberFailed(m)
            | GossipEvent::MemberLeft(m) => Some(m.clone()),
            _ => None,
        };
        if let Some(m) = member {
            self.report(&m, None);
            self.known.insert(m.name.clone(), m);
        }
        if let GossipEvent::MemberReaped { name, .. } = &e {
            if let Some(m) = self.known.remove(name) {
                self.report(&m, Some(GossipStatus::None));
            }
        }
        let notable = !matches!(
            e,
            GossipEvent::MemberUpdated(_) | GossipEvent::JoinFailed { .. }
        );
        if notable {
            self.shared.record(WorldEvent::Gossip {
                node: self.slot.id,
                event: e,
            });
        }
    }

    /// Hands the server what gossip says of `m`, if it is a server of this
    /// datacenter (`status` overrides, for a reaped member).
    fn report(&self, m: &Member, status: Option<GossipStatus>) {
        let tx = self.slot.hints.lock().unwrap().clone();
        let Some(tx) = tx else {
            return;
        };
        // Every member of this datacenter, for the catalog's serfHealth
        // (`tern_core::serf_health`'s contract).
        if let Some(mut lm) = LanMember::from_gossip(m, &self.dc) {
            if let Some(s) = status {
                lm.status = s;
            }
            let _ = tx.send(Input::LanMember(lm));
        }
        let Some(mut sm) = ServerMember::from_gossip(m, &self.dc) else {
            return;
        };
        if let Some(s) = status {
            sm.status = s;
        }
        let _ = tx.send(Input::ServerMember(sm));
    }

    /// What the world shows of this pool.
    fn publish(&self) {
        *self.slot.gossip_view.lock().unwrap() = Some(self.gossip.members());
    }
}
