//! A client agent's RPC to the servers of its datacenter, with Consul's
//! client-side retry (`agent/consul/client.go` `RPC`, `agent/consul/rpc.go`
//! `canRetry`, `agent/router/manager.go`, `agent/pool/pool.go`).
//!
//! Every decision (which server, what is retried, for how long, the wait
//! between tries) is the core's [`tern_core::rpc::retry`], which the
//! simulator's client agents run too; this module moves the bytes:
//!
//! - **Servers** come from a watch (the alive servers of the LAN pool) into a
//!   [`ServerOrder`] shared by every call of this agent.
//! - **Connections.** One connection per server (by address and node name,
//!   as Consul's pool), first byte `RPC_MULTIPLEX_V2`, carrying many calls at
//!   once, answered by id in any order. A connection that breaks (EOF, reset,
//!   a reply that does not decode) fails every call in flight on it
//!   ([`Attempt::Lost`]) and is thrown away; the next call dials again. A
//!   dial that fails is [`Attempt::NotSent`].
//! - **No servers known:** `No known Consul servers` at once
//!   (`structs.ErrNoServers`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_core::autopilot::GossipStatus;
use tern_core::reconcile::ServerMember;
use tern_core::rng::Rng;
use tern_core::rpc::retry::{self, Attempt, Next, Retry, ServerOrder};
use tern_core::rpc::{Request, Response, RpcError};
use tern_core::{wire, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::net;

pub use tern_core::rpc::retry::RPC_CLIENT_TIMEOUT;

/// Calls queued for one connection's writer before a caller waits.
const CONN_QUEUE_MAX: usize = 1024;

/// A client agent's way to the servers. Cheap to clone; every clone shares
/// the server list and the connections.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Mutex<ServerList>,
    conns: Mutex<BTreeMap<ConnKey, Slot>>,
    local: Option<IpAddr>,
    /// With outgoing TLS, servers are dialed with RPC-TLS.
    tls: Option<Arc<crate::tls::Tls>>,
    hold_timeout: Duration,
    frame_bytes_max: usize,
    /// The agent's clock: core instants are nanoseconds since this.
    epoch: Instant,
}

/// A server's connection by (address, node name).
type ConnKey = (String, String);
/// The connection to one server; the async lock is held while dialing, so
/// concurrent calls share one dial.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

fn key(s: &ServerMember) -> ConnKey {
    (s.address.clone(), s.name.0.clone())
}

fn same(a: &ServerMember, b: &ServerMember) -> bool {
    a.address == b.address && a.name == b.name
}

/// The watch of servers and the order they are tried in.
struct ServerList {
    watch: watch::Receiver<Vec<ServerMember>>,
    order: ServerOrder<ServerMember>,
    rng: Rng,
}

impl ServerList {
    /// Take in the watch's latest list; only alive servers are tried.
    fn refresh(&mut self) {
        let latest: Vec<ServerMember> = self
            .watch
            .borrow_and_update()
            .iter()
            .filter(|s| s.status == GossipStatus::Alive)
            .cloned()
            .collect();
        self.order.refresh(&latest, same, &mut self.rng);
    }

    /// The server to ask, after taking in a new list if there is one
    /// (`true` then).
    fn first(&mut self) -> (Option<ServerMember>, bool) {
        let changed = self.watch.has_changed().unwrap_or(false);
        if changed {
            self.refresh();
        }
        (self.order.first().cloned(), changed)
    }

    /// Consul's `NotifyFailedServer` (see [`ServerOrder::failed`]).
    fn failed(&mut self, server: &ServerMember) {
        self.order.failed(server, same);
    }
}

/// Why an attempt on one server failed without a reply.
#[derive(Debug)]
enum Failure {
    NotSent(String),
    Lost(String),
    TimedOut(Duration),
}

impl RpcClient {
    /// A client that asks the servers in `servers` (the alive servers of
    /// this datacenter; `.address` is the server port), dialing from
    /// `local` (the agent's bind address), with the core config's
    /// `rpc_hold_timeout`, `frame_bytes_max` and `rng_seed`.
    pub fn new(
        servers: watch::Receiver<Vec<ServerMember>>,
        local: Option<IpAddr>,
        config: &Config,
    ) -> RpcClient {
        RpcClient::with_tls(servers, local, config, None)
    }

    /// [`RpcClient::new`] dialing with RPC-TLS when `tls` says outgoing
    /// connections use it (`verify_outgoing`).
    pub fn with_tls(
        servers: watch::Receiver<Vec<ServerMember>>,
        local: Option<IpAddr>,
        config: &Config,
        tls: Option<Arc<crate::tls::Tls>>,
    ) -> RpcClient {
        let mut list = ServerList {
            watch: servers,
            order: ServerOrder::default(),
            rng: Rng::new(config.rng_seed),
        };
        list.refresh();
        RpcClient {
            inner: Arc::new(Inner {
                servers: Mutex::new(list),
                conns: Mutex::new(BTreeMap::new()),
                local: local.filter(|ip| !ip.is_unspecified()),
                tls: tls.filter(|t| t.options.outgoing()),
                hold_timeout: Duration::from_nanos(config.rpc_hold_timeout.as_nanos()),
                frame_bytes_max: config.frame_bytes_max,
                epoch: Instant::now(),
            }),
        }
    }

    fn now(&self) -> tern_core::Instant {
        tern_core::Instant(self.inner.epoch.elapsed().as_nanos() as u64)
    }

    /// The server calls go to now, if any is known.
    pub fn current_server(&self) -> Option<ServerMember> {
        let mut list = self.inner.servers.lock().expect("not poisoned");
        let (first, changed) = list.first();
        if changed {
            // Connections to servers that left the list are closed once the
            // calls on them are done.
            let keep: Vec<ConnKey> = list.order.servers().iter().map(key).collect();
            drop(list);
            self.inner
                .conns
                .lock()
                .expect("not poisoned")
                .retain(|k, _| keep.contains(k));
        }
        first
    }

    /// How many servers this client holds a connection slot for.
    pub fn connection_slots(&self) -> usize {
        self.inner.conns.lock().expect("not poisoned").len()
    }

    /// Ask a server, retrying as Consul's client does (see
    /// [`tern_core::rpc::retry`]).
    pub async fn call(&self, request: Request) -> Response {
        let retry = Retry::new(
            &request,
            tern_core::Duration::from_nanos(self.inner.hold_timeout.as_nanos() as u64),
            self.now(),
        );
        let attempt_timeout = Duration::from_nanos(retry::attempt_timeout(&request).as_nanos());
        let call = wire::encode_call(&wire::Call {
            id: 0,
            request: request.clone(),
        });
        // The id's varint may take up to 9 more bytes than id 0's.
        if call.len() + 9 > self.inner.frame_bytes_max {
            return Err(RpcError::TooLarge(format!(
                "call of {} bytes is over the frame limit of {} bytes",
                call.len(),
                self.inner.frame_bytes_max
            )));
        }
        loop {
            let Some(server) = self.current_server() else {
                return Err(RpcError::NoServers);
            };
            let attempt = match self.attempt(&server, &request, attempt_timeout).await {
                Ok(response) => Attempt::Answered(response),
                Err(Failure::NotSent(e)) => Attempt::NotSent(e),
                Err(Failure::Lost(e)) => Attempt::Lost(e),
                Err(Failure::TimedOut(d)) => {
                    Attempt::TimedOut(tern_core::Duration::from_nanos(d.as_nanos() as u64))
                }
            };
            let failed = attempt.server_failed();
            let next = {
                let mut list = self.inner.servers.lock().expect("not poisoned");
                if failed {
                    list.failed(&server);
                }
                retry.after(&server.name.0, attempt, self.now(), &mut list.rng)
            };
            match next {
                Next::Done(response) => {
                    if let Err(e) = &response {
                        if failed {
                            tracing::warn!(
                                "RPC failed to server {} ({}): {e}",
                                server.name,
                                server.address
                            );
                        }
                    }
                    return response;
                }
                Next::Retry { after, error } => {
                    tracing::warn!(
                        "RPC failed to server {} ({}): {error}",
                        server.name,
                        server.address
                    );
                    tokio::time::sleep(Duration::from_nanos(after.as_nanos())).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        server: &ServerMember,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let conn = self.conn(server).await.map_err(Failure::NotSent)?;
        let result = conn
            .call(request, timeout, self.inner.frame_bytes_max)
            .await;
        if matches!(result, Err(Failure::Lost(_))) {
            self.drop_conn(server, &conn);
        }
        result
    }

    /// The live connection to `server`, dialing one if there is none (or the
    /// last one broke).
    async fn conn(&self, server: &ServerMember) -> Result<Arc<Conn>, String> {
        let slot = self
            .inner
            .conns
            .lock()
            .expect("not poisoned")
            .entry(key(server))
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        if let Some(c) = held.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        *held = None;
        let mut stream = net::dial(&server.address, self.inner.local).await?;
        let _ = stream.set_nodelay(true);
        let conn = match &self.inner.tls {
            None => {
                stream
                    .write_all(&[wire::conn::RPC_MULTIPLEX_V2])
                    .await
                    .map_err(|e| format!("dialing {}: {e}", server.address))?;
                Conn::start(stream, self.inner.frame_bytes_max)
            }
            Some(t) => {
                let s = net::upgrade_outbound(
                    stream,
                    &server.address,
                    &server.name.0,
                    t,
                    wire::conn::RPC_MULTIPLEX_V2,
                )
                .await?;
                Conn::start(s, self.inner.frame_bytes_max)
            }
        };
        let conn = Arc::new(conn);
        *held = Some(conn.clone());
        Ok(conn)
    }

    /// Forget a broken connection (if it is still the one in the slot), so
    /// it is never reused.
    fn drop_conn(&self, server: &ServerMember, conn: &Arc<Conn>) {
        let slot = self
            .inner
            .conns
            .lock()
            .expect("not poisoned")
            .get(&key(server))
            .cloned();
        if let Some(slot) = slot {
            if let Ok(mut held) = slot.try_lock() {
                if held.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                    *held = None;
                }
            }
        }
    }
}

/// One multiplexed connection: a writer task fed by a queue, a reader task
/// that hands each reply to the call with its id.
struct Conn {
    queue: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

type Answer = Result<Response, String>;

struct Shared {
    /// Calls waiting for a reply, by id; `None` once the connection broke
    /// (nothing may wait on it after that).
    pending: Mutex<Option<HashMap<u64, oneshot::Sender<Answer>>>>,
    closed: AtomicBool,
    next_id: AtomicU64,
}

impl Shared {
    /// The connection is over: every call in flight gets `why`.
    fn fail(&self, why: &str) {
        self.closed.store(true, Ordering::Release);
        let pending = self.pending.lock().expect("not poisoned").take();
        for (_, tx) in pending.into_iter().flatten() {
            let _ = tx.send(Err(why.to_string()));
        }
    }
}

impl Conn {
    fn start<S: net::Stream>(stream: S, frame_bytes_max: usize) -> Conn {
        let (mut read, mut write) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Some(HashMap::new())),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        let (queue, mut rx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE_MAX);
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(mut batch) = rx.recv().await {
                    while let Ok(more) = rx.try_recv() {
                        batch.extend_from_slice(&more);
                        if batch.len() > 1 << 20 {
                            break;
                        }
                    }
                    // TLS buffers what is written: flush sends it.
                    let written = match write.write_all(&batch).await {
                        Ok(()) => write.flush().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        shared.fail(&format!("connection lost while writing: {e}"));
                        return;
                    }
                }
            })
        };
        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let why = read_replies(&mut read, frame_bytes_max, &shared).await;
                shared.fail(&why);
            })
        };
        Conn {
            queue,
            shared,
            reader,
            writer,
        }
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    async fn call(
        &self,
        request: &Request,
        timeout: Duration,
        frame_bytes_max: usize,
    ) -> Result<Response, Failure> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = wire::encode_call(&wire::Call {
            id,
            request: request.clone(),
        });
        if payload.len() > frame_bytes_max {
            return Ok(Err(RpcError::TooLarge(format!(
                "call of {} bytes is over the frame limit of {frame_bytes_max} bytes",
                payload.len()
            ))));
        }
        let mut frame = Vec::with_capacity(wire::FRAME_HEADER_LEN + payload.len());
        wire::encode_frame(&payload, &mut frame);
        let (tx, rx) = oneshot::channel();
        match self.shared.pending.lock().expect("not poisoned").as_mut() {
            Some(pending) => {
                pending.insert(id, tx);
            }
            None => return Err(Failure::NotSent("connection closed".into())),
        }
        if self.queue.send(frame).await.is_err() {
            // The writer had stopped: the frame was never queued.
            self.forget(id);
            return Err(Failure::NotSent("connection closed".into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(why))) => Err(Failure::Lost(why)),
            Ok(Err(_)) => Err(Failure::Lost("connection dropped".into())),
            Err(_) => {
                self.forget(id);
                Err(Failure::TimedOut(timeout))
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Some(pending) = self.shared.pending.lock().expect("not poisoned").as_mut() {
            pending.remove(&id);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.fail("connection closed by the client");
    }
}

/// Read replies until the connection ends; why it ended. A reply that does
/// not decode ends it: the stream can no longer be trusted.
async fn read_replies<R: tokio::io::AsyncRead + Unpin>(
    read: &mut R,
    frame_bytes_max: usize,
    shared: &Shared,
) -> String {
    let mut decoder = wire::FrameDecoder::new(frame_bytes_max);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return format!("bad reply frame: {e}"),
            };
            let reply = match wire::decode_call_reply(&frame) {
                Ok(r) => r,
                Err(e) => return format!("bad reply: {e}"),
            };
            let tx = shared
                .pending
                .lock()
                .expect("not poisoned")
                .as_mut()
                .and_then(|p| p.remove(&reply.id));
            // No one waiting: the call timed out; its late reply is dropped.
            if let Some(tx) = tx {
                let _ = tx.send(Ok(reply.response));
            }
        }
        match read.read(&mut buf).await {
            Ok(0) => return "EOF".into(),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) => return e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::{NodeId, NodeName};

    fn server(n: u8, status: GossipStatus) -> ServerMember {
        ServerMember {
            node: NodeId(u128::from(n)),
            name: NodeName(format!("s{n}")),
            address: format!("127.0.0.{n}:8300"),
            status,
            raft_vsn: 3,
        }
    }

    fn names(list: &ServerList) -> Vec<String> {
        list.order
            .servers()
            .iter()
            .map(|s| s.name.0.clone())
            .collect()
    }

    /// Consul's router manager: only alive servers are used; a failed
    /// server in use goes to the back; a new list keeps the order of the
    /// servers that stay, drops those that left and adds the new ones last.
    #[test]
    fn the_server_list_is_sticky_rotates_on_failure_and_follows_the_watch() {
        let alive = |n| server(n, GossipStatus::Alive);
        let (tx, rx) = watch::channel(vec![alive(1), server(2, GossipStatus::Leaving)]);
        let mut list = ServerList {
            watch: rx,
            order: ServerOrder::default(),
            rng: Rng::new(1),
        };
        list.refresh();
        assert_eq!(names(&list), ["s1"]);
        // Failing the only server leaves it in use.
        list.failed(&alive(1));
        assert_eq!(list.first().0, Some(alive(1)));

        tx.send_replace(vec![alive(3), alive(1), alive(2)]);
        assert_eq!(list.first().0, Some(alive(1)), "sticky across a new list");
        let mut rest = names(&list)[1..].to_vec();
        rest.sort();
        assert_eq!(rest, ["s2", "s3"]);
        let order = names(&list);

        // A failure of a server not in use changes nothing; of the one in
        // use, moves it to the back.
        list.failed(&alive(9));
        assert_eq!(names(&list), order);
        list.failed(&alive(1));
        assert_eq!(
            names(&list),
            [order[1].clone(), order[2].clone(), order[0].clone()]
        );

        // The server in use leaves: the next one takes over.
        let in_use = list.first().0.unwrap();
        let next_in_line = list.order.servers()[1].clone();
        let others: Vec<ServerMember> = [alive(1), alive(2), alive(3)]
            .into_iter()
            .filter(|s| *s != in_use)
            .collect();
        tx.send_replace(others);
        assert_eq!(list.first().0, Some(next_in_line));
        assert_eq!(list.order.servers().len(), 2);

        tx.send_replace(vec![]);
        assert_eq!(list.first().0, None);
    }
}
