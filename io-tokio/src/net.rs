//! The server port: one listener, the first byte of each connection picks the
//! protocol (`tern_core::wire::conn`), frames are the core's; and a pool of
//! outbound connections keyed by node name and address.
//!
//! Server-to-server traffic is one-way per connection: each server dials its
//! peers and writes `RPC_RAFT` frames (Raft messages and forwarded requests);
//! answers come back over the peer's own connection to us. `RPC_CONSUL`
//! connections carry the join handshake ([`Hello`]). `RPC_MULTIPLEX_V2`
//! connections carry a client agent's calls ([`wire::Call`]), answered on
//! the same connection by id, in any order ([`answer_calls`]).
//!
//! With TLS (`crate::tls`), as Consul's `handleConn`: a first byte of
//! `RPC_TLS` upgrades the connection to TLS and an inner type byte follows
//! inside it; a first byte above the type bytes is a ClientHello (native
//! TLS), answered with mutual TLS and dispatched by ALPN (`tern/rpc`,
//! `tern/raft`; the WAN gossip protocols are reserved and closed). Under
//! `verify_incoming` nothing else is served. Raft is taken only from a
//! certificate that names `server.<dc>.<domain>` (see `Tls::authorize_server`).
//! A failed handshake closes the connection with one rate-limited line
//! naming the peer and the reason, and changes nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tern_core::rpc::{Request, Response, RpcError};
use tern_core::wire::{self, conn};
use tern_core::{Message, MessageBody, NodeId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use crate::tls::{self, Tls};

/// A byte stream the server port speaks over: plain TCP or TLS on it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Deadline for a connection's first byte (Consul's `rpc_handshake_timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for dialing a peer.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames queued for one peer before new Raft messages are dropped (Raft
/// resends). A forwarded request or its reply is never dropped: nobody
/// would resend it (see [`Pool::send`]).
pub const PEER_QUEUE_MAX: usize = 4096;
/// Calls one client connection may have in flight at a server. The server
/// reads the next call only when one is answered, so a client that sends
/// more waits in its socket buffers (TCP back-pressure), and one connection
/// never holds more than this many of the agent's pending requests.
pub const CALLS_INFLIGHT_MAX: usize = 256;
/// Blocking queries one client connection may have parked at a server,
/// beside its `CALLS_INFLIGHT_MAX` other calls. A blocking query leaves its
/// in-flight slot for one of these once read: parked for up to ten minutes,
/// 256 of them would otherwise hold every slot, and nothing else a client
/// agent sends (writes, reads, more watches) would be read until one of
/// them is answered. Past this many, the connection waits as above.
pub const BLOCKING_CALLS_MAX: usize = 16_384;

/// What the listener hands the agent.
pub enum Inbound {
    Message(Message),
    /// A connection that had carried messages from this server closed or
    /// broke: what the OS says when a process dies. A hint, not a fact
    /// (`Input::Unreachable`).
    Gone(NodeId),
    /// A client agent's call: handled exactly as a request from this
    /// agent's own HTTP API (`ToAgent::Request`), answered on the sender.
    /// Dropping the sender unanswered closes the client's connection (what
    /// it would see if this process died: the outcome is unknown).
    Call(Request, oneshot::Sender<Response>),
}

/// The inbound Raft connections, by the server that writes on them, so the
/// agent can close those of a peer whose message the core refused
/// (`Event::PeerMessageRefused`).
#[derive(Clone, Default)]
pub struct Refusals {
    open: Arc<Mutex<BTreeMap<NodeId, Vec<Weak<Notify>>>>>,
}

impl Refusals {
    /// A connection now carries `peer`'s messages: its close signal.
    fn register(&self, peer: NodeId) -> Arc<Notify> {
        let close = Arc::new(Notify::new());
        let mut open = self.open.lock().expect("not poisoned");
        let conns = open.entry(peer).or_default();
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(&close));
        close
    }

    /// Close every open connection that carried `peer`'s messages; how many.
    pub fn close(&self, peer: NodeId) -> usize {
        let conns = self
            .open
            .lock()
            .expect("not poisoned")
            .remove(&peer)
            .unwrap_or_default();
        let mut closed = 0;
        for c in conns.iter().filter_map(Weak::upgrade) {
            // A stored permit: the reader sees it even if it is not waiting.
            c.notify_one();
            closed += 1;
        }
        closed
    }
}

/// Accept connections on the server port until the process ends. Each
/// source IP may hold `max_conns_per_client` connections at once (0: no
/// limit; Consul's `limits.rpc_max_conns_per_client`): one more is closed
/// the moment it is accepted, before a byte is read (`crate::connlimit`).
pub async fn serve(
    listener: TcpListener,
    frame_bytes_max: usize,
    to_agent: mpsc::Sender<Inbound>,
    refusals: Refusals,
    max_conns_per_client: usize,
    tls: Option<Arc<Tls>>,
) {
    let limit = crate::connlimit::ConnTracker::new(
        "server port",
        "rpc_max_conns_per_client",
        max_conns_per_client,
    );
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("server port accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limit.try_acquire(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let to_agent = to_agent.clone();
        let refusals = refusals.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = Incoming {
                peer,
                frame_bytes_max,
                to_agent,
                refusals,
                tls,
            };
            if let Err(e) = conn.handle(stream).await {
                tracing::info!("server port: closed connection from {peer}: {e}");
            }
        });
    }
}

/// One accepted connection and what it needs.
struct Incoming {
    peer: SocketAddr,
    frame_bytes_max: usize,
    to_agent: mpsc::Sender<Inbound>,
    refusals: Refusals,
    tls: Option<Arc<Tls>>,
}

/// Read one byte before `deadline`.
async fn read_byte<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: tokio::time::Instant,
    what: &str,
) -> Result<u8, String> {
    let mut b = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.read_exact(&mut b)).await {
        Err(_) => Err(format!("no {what} within the handshake timeout")),
        Ok(Err(e)) => Err(format!("reading the {what}: {e}")),
        Ok(Ok(_)) => Ok(b[0]),
    }
}

impl Incoming {
    async fn handle(self, mut stream: TcpStream) -> Result<(), String> {
        // The first byte (and a TLS handshake and its inner byte) must
        // arrive within Consul's rpc_handshake_timeout.
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let configs = self.tls.as_ref().map(|t| t.configs());
        let port = conn::PortTls {
            rpc_tls: configs.as_ref().is_some_and(|c| c.rpc_server.is_some()),
            native_tls: configs.as_ref().is_some_and(|c| c.alpn_server.is_some()),
            verify_incoming: self
                .tls
                .as_ref()
                .is_some_and(|t| t.options.internal_rpc.verify_incoming),
        };
        // A server able to do mutual TLS peeks: a ClientHello is native TLS,
        // and its first byte belongs to the handshake.
        if let Some(alpn) = configs.as_ref().and_then(|c| c.alpn_server.clone()) {
            let mut b = [0u8; 1];
            match tokio::time::timeout_at(deadline, stream.peek(&mut b)).await {
                Err(_) => return Err("no first byte within the handshake timeout".into()),
                Ok(Err(e)) => return Err(format!("reading the first byte: {e}")),
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) if conn::first_step(port, b[0]) == conn::FirstStep::NativeTls => {
                    return self.native_tls(stream, alpn, deadline).await;
                }
                Ok(Ok(_)) => {}
            }
        }
        let first = read_byte(&mut stream, deadline, "first byte").await?;
        match conn::first_step(port, first) {
            conn::FirstStep::Serve(protocol) => self.serve(stream, protocol).await,
            conn::FirstStep::UpgradeTls => {
                let config = configs
                    .and_then(|c| c.rpc_server.clone())
                    .ok_or("RPC-TLS without a server config")?;
                self.rpc_tls(stream, config, deadline).await
            }
            conn::FirstStep::Refuse(conn::Refusal::Plaintext(_)) => {
                if let Some(t) = &self.tls {
                    t.plaintext_refused.warn(&self.peer.ip().to_string(), format!(
                        "server port: refused a non-TLS connection from {} (first byte {first:#04x}): verify_incoming is set",
                        self.peer
                    ));
                }
                Ok(())
            }
            // Only a server without mutual TLS reads a ClientHello's first
            // byte: it is not served.
            conn::FirstStep::Refuse(r) => Err(r.to_string()),
            conn::FirstStep::NativeTls => {
                Err(conn::Refusal::NotServed(first, conn::ConnKind::NativeTls).to_string())
            }
        }
    }

    /// Serve a plain or TLS connection's protocol.
    async fn serve<S: Stream>(self, stream: S, protocol: conn::Protocol) -> Result<(), String> {
        match protocol {
            conn::Protocol::Raft => {
                read_messages(stream, self.frame_bytes_max, self.to_agent, self.refusals).await
            }
            conn::Protocol::Multiplex => {
                answer_calls(stream, self.frame_bytes_max, self.to_agent).await
            }
        }
    }

    /// A failed handshake: one rate-limited line naming the peer and why.
    fn handshake_failed(&self, why: String) {
        if let Some(t) = &self.tls {
            t.handshake_failed.warn(
                &format!("{}: {why}", self.peer.ip()),
                format!(
                    "server port: TLS handshake with {} failed: {why}",
                    self.peer
                ),
            );
        }
    }

    /// Whether the peer's certificate may act as a server; if not, one
    /// rate-limited line.
    fn authorized<S>(&self, s: &tokio_rustls::server::TlsStream<S>, always: bool) -> bool {
        let Some(t) = &self.tls else { return true };
        match t.authorize_server(s.get_ref().1.peer_certificates(), always) {
            Ok(()) => true,
            Err(e) => {
                t.unauthorized.warn(
                    &format!("{}: {e}", self.peer.ip()),
                    format!("server port: refused Raft from {}: {e}", self.peer),
                );
                false
            }
        }
    }

    /// First byte `RPC_TLS`: the handshake, then the inner type byte.
    async fn rpc_tls(
        self,
        stream: TcpStream,
        config: Arc<rustls::ServerConfig>,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        // A copy of the handshake's first bytes, so that a failure can name
        // the server and protocols the peer asked for.
        let copy = Arc::new(Mutex::new(Vec::new()));
        let stream = Recorded {
            inner: stream,
            copy: Some(copy.clone()),
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let failed = |why: String| {
            let asked = asked_for(&copy.lock().unwrap_or_else(|e| e.into_inner()));
            self.handshake_failed(format!("{why} ({asked})"));
        };
        let mut s = match tokio::time::timeout_at(deadline, accept).await {
            Err(_) => {
                failed("no handshake within the handshake timeout".into());
                return Ok(());
            }
            Ok(Err(e)) => {
                failed(tls::describe(&e));
                return Ok(());
            }
            Ok(Ok(s)) => s,
        };
        s.get_mut().0.copy = None;
        let inner = read_byte(&mut s, deadline, "inner type byte").await?;
        match conn::inner_step(inner) {
            Ok(conn::Protocol::Raft) if !self.authorized(&s, false) => Ok(()),
            Ok(protocol) => self.serve(s, protocol).await,
            Err(r) => Err(r.to_string()),
        }
    }

    /// A ClientHello: mutual TLS, then the ALPN protocol says what follows.
    async fn native_tls(
        self,
        stream: TcpStream,
        config: Arc<rustls::ServerConfig>,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        // A copy of the handshake's first bytes, so that a failure can name
        // the server and protocols the peer asked for.
        let copy = Arc::new(Mutex::new(Vec::new()));
        let stream = Recorded {
            inner: stream,
            copy: Some(copy.clone()),
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let failed = |why: String| {
            let asked = asked_for(&copy.lock().unwrap_or_else(|e| e.into_inner()));
            self.handshake_failed(format!("{why} ({asked})"));
        };
        let mut s = match tokio::time::timeout_at(deadline, accept).await {
            Err(_) => {
                failed("no handshake within the handshake timeout".into());
                return Ok(());
            }
            Ok(Err(e)) => {
                failed(tls::describe(&e));
                return Ok(());
            }
            Ok(Ok(s)) => s,
        };
        s.get_mut().0.copy = None;
        let alpn = s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        match conn::alpn_step(alpn.as_deref()) {
            Ok(conn::Protocol::Raft) if !self.authorized(&s, true) => Ok(()),
            Ok(protocol) => self.serve(s, protocol).await,
            Err(r) => {
                // Reserved for WAN federation through mesh gateways, or no
                // protocol: said politely (a close_notify), not served.
                let _ = s.shutdown().await;
                Err(r.to_string())
            }
        }
    }
}

/// What a ClientHello asked for, for a log line: its server name and ALPN
/// protocols, or why it could not be read.
fn asked_for(bytes: &[u8]) -> String {
    use wire::client_hello::Peek;
    match wire::peek_client_hello(bytes) {
        Peek::Hello(h) => {
            let alpn: Vec<String> = h
                .alpn
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            format!(
                "ClientHello: SNI {:?}, ALPN {alpn:?}",
                h.sni.as_deref().unwrap_or("")
            )
        }
        Peek::NeedMore { .. } => "an incomplete ClientHello".into(),
        Peek::NotTls(e) => format!("not a ClientHello: {e}"),
        Peek::Malformed(e) => format!("a malformed ClientHello: {e}"),
    }
}

/// A stream that keeps a copy of the first bytes read from it (at most
/// `CLIENT_HELLO_BYTES_MAX`) while `copy` is set: the native-TLS handshake
/// reads through it, and drops the copy once it succeeds.
struct Recorded<S> {
    inner: S,
    copy: Option<Arc<Mutex<Vec<u8>>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (std::task::Poll::Ready(Ok(())), Some(copy)) = (&polled, &this.copy) {
            let mut copy = copy.lock().unwrap_or_else(|e| e.into_inner());
            let read = &buf.filled()[before..];
            let room = wire::client_hello::CLIENT_HELLO_BYTES_MAX.saturating_sub(copy.len());
            copy.extend_from_slice(&read[..read.len().min(room)]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why reading a frame stopped: the peer sent something malformed, or the
/// connection itself failed.
enum ReadError {
    BadFrame(String),
    Io(std::io::Error),
}

impl From<ReadError> for String {
    fn from(e: ReadError) -> String {
        match e {
            ReadError::BadFrame(e) => format!("bad frame: {e}"),
            ReadError::Io(e) => e.to_string(),
        }
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    decoder: &mut wire::FrameDecoder,
    buf: &mut [u8],
) -> Result<Option<Vec<u8>>, ReadError> {
    loop {
        match decoder.next_frame() {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(e) => return Err(ReadError::BadFrame(e.to_string())),
        }
        let n = stream.read(buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        decoder.push(&buf[..n]);
    }
}

async fn read_messages<S: AsyncRead + Unpin>(
    mut stream: S,
    frame_bytes_max: usize,
    to_agent: mpsc::Sender<Inbound>,
    refusals: Refusals,
) -> Result<(), String> {
    let mut decoder = wire::FrameDecoder::new(frame_bytes_max);
    let mut buf = vec![0u8; 64 * 1024];
    // Who writes on this connection (a peer's writer only ever carries its
    // own messages): when the connection ends, the agent hears it is gone.
    let mut sender: Option<NodeId> = None;
    let mut close: Option<Arc<Notify>> = None;
    let ended = loop {
        let read = read_frame(&mut stream, &mut decoder, &mut buf);
        let refused = async {
            match &close {
                Some(c) => c.notified().await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            r = read => match r {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e @ ReadError::BadFrame(_)) => return Err(e.into()),
                Err(e) => break Err(String::from(e)),
            },
            // The core refused a message from this peer: close the
            // connection. It is not a sign the peer is gone, so no hint.
            () = refused => {
                return Err(format!(
                    "a message from {} was refused",
                    sender.map_or_else(String::new, |s| s.to_string())
                ));
            }
        };
        let message = wire::decode_message(&frame).map_err(|e| format!("bad message: {e}"))?;
        if sender != Some(message.from) {
            sender = Some(message.from);
            close = Some(refusals.register(message.from));
        }
        if to_agent.send(Inbound::Message(message)).await.is_err() {
            return Ok(());
        }
    };
    if let Some(id) = sender {
        let _ = to_agent.send(Inbound::Gone(id)).await;
    }
    ended
}

/// Answer a client's calls on its multiplexed connection until it closes.
///
/// Each call becomes an `Inbound::Call` (a request like any other); its
/// reply is written back with the call's id as soon as it is ready, so
/// replies come out in any order. At most `CALLS_INFLIGHT_MAX` calls are in
/// flight, and besides them at most `BLOCKING_CALLS_MAX` blocking queries:
/// the next frame is read only when a slot is free. A frame that is
/// not a call (or over `frame_bytes_max`) closes the connection at once and
/// changes nothing; calls already handed to the agent run their course, but
/// their replies are not written. So does the client closing its side.
async fn answer_calls<S: Stream>(
    stream: S,
    frame_bytes_max: usize,
    to_agent: mpsc::Sender<Inbound>,
) -> Result<(), String> {
    let (mut read, mut write) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(CALLS_INFLIGHT_MAX);
    let writer = tokio::spawn(async move {
        while let Some(mut batch) = out_rx.recv().await {
            while let Ok(more) = out_rx.try_recv() {
                batch.extend_from_slice(&more);
                if batch.len() > 1 << 20 {
                    break;
                }
            }
            // TLS buffers what is written: flush sends it.
            if write.write_all(&batch).await.is_err() || write.flush().await.is_err() {
                return;
            }
        }
    });
    // Aborting the writer on the way out (any error) drops the write half,
    // so the client sees the close even while replies are pending.
    let _writer = AbortOnDrop(writer);
    let slots = Arc::new(Semaphore::new(CALLS_INFLIGHT_MAX));
    let parking = Arc::new(Semaphore::new(BLOCKING_CALLS_MAX));
    // Set when the agent dropped a call unanswered (it stopped): the client
    // must see an EOF, as if this process had died, not a reply.
    let stop = Arc::new(Notify::new());
    let mut decoder = wire::FrameDecoder::new(frame_bytes_max);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = stop.notified() => return Err("the agent stopped with calls unanswered".into()),
        };
        let frame = tokio::select! {
            r = read_frame(&mut read, &mut decoder, &mut buf) => match r {
                Ok(Some(f)) => f,
                // The client is gone: nobody reads what is pending.
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.into()),
            },
            () = stop.notified() => return Err("the agent stopped with calls unanswered".into()),
        };
        let call = wire::decode_call(&frame).map_err(|e| format!("bad call: {e}"))?;
        // A blocking query trades its in-flight slot for a parking one.
        let slot = if call.request.blocking.is_some() {
            drop(slot);
            tokio::select! {
                s = parking.clone().acquire_owned() => s.expect("the semaphore is never closed"),
                () = stop.notified() => return Err("the agent stopped with calls unanswered".into()),
            }
        } else {
            slot
        };
        let (to_agent, out, stop) = (to_agent.clone(), out_tx.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let (tx, rx) = oneshot::channel();
            let response = if to_agent
                .send(Inbound::Call(call.request, tx))
                .await
                .is_err()
            {
                // The agent has stopped and never saw the call: nothing was
                // done, so the client may safely ask another server.
                Err(RpcError::NoLeader)
            } else if let Ok(r) = rx.await {
                r
            } else {
                stop.notify_one();
                return;
            };
            let _ = out
                .send(reply_frame(call.id, response, frame_bytes_max))
                .await;
        });
    }
}

/// The framed reply to call `id`. A reply too big for a frame would be
/// refused by the client's decoder and read as a broken connection: it is
/// replaced by an error that says so.
fn reply_frame(id: u64, response: Response, frame_bytes_max: usize) -> Vec<u8> {
    let mut payload = wire::encode_call_reply(&wire::CallReply { id, response });
    if payload.len() > frame_bytes_max {
        let too_large = RpcError::TooLarge(format!(
            "reply of {} bytes is over the frame limit of {frame_bytes_max} bytes",
            payload.len()
        ));
        payload = wire::encode_call_reply(&wire::CallReply {
            id,
            response: Err(too_large),
        });
    }
    let mut frame = Vec::with_capacity(wire::FRAME_HEADER_LEN + payload.len());
    wire::encode_frame(&payload, &mut frame);
    frame
}

/// A task aborted when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connect to `address` (an `ip:port` or `host:port`) within
/// `DIAL_TIMEOUT`, from `local` when given (the agent's bind address; port
/// chosen by the OS), so that peers, firewalls and partition tests see which
/// agent is talking. A `local` of the other address family than the peer's
/// is not used.
pub async fn dial(address: &str, local: Option<IpAddr>) -> Result<TcpStream, String> {
    let addr: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(address)
            .await
            .map_err(|e| format!("dialing {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("dialing {address}: no address found"))?,
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("dialing {address}: {e}"))?;
    if let Some(ip) = local.filter(|ip| ip.is_ipv4() == addr.is_ipv4() && !ip.is_unspecified()) {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("dialing {address} from {ip}: {e}"))?;
    }
    tokio::time::timeout(DIAL_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| format!("dialing {address} timed out"))?
        .map_err(|e| format!("dialing {address}: {e}"))
}

/// Outbound connections, one writer task per peer, keyed by address and
/// node name (as Consul's pool): a different server at a reused address gets
/// a connection of its own, which TLS will need to name the right server.
/// Looking a peer up allocates nothing; only a new peer does.
#[derive(Clone, Default)]
pub struct Pool {
    peers: Arc<Mutex<BTreeMap<String, ByName>>>,
    /// The address outbound connections leave from (the agent's bind
    /// address), as Consul's pool dials from its RPC bind address.
    local: Option<IpAddr>,
    /// With outgoing TLS, peers are dialed with RPC-TLS (SNI
    /// `<node>.server.<dc>.<domain>`).
    tls: Option<Arc<Tls>>,
}

/// The writers at one address, by node name.
type ByName = BTreeMap<String, mpsc::Sender<Vec<u8>>>;

impl Pool {
    /// A pool whose connections leave from `local` (`None` or an
    /// unspecified address: wherever the OS routes them from).
    pub fn new(local: Option<IpAddr>) -> Pool {
        Pool {
            peers: Arc::default(),
            local: local.filter(|ip| !ip.is_unspecified()),
            tls: None,
        }
    }

    /// Dial peers with TLS when `tls` says outgoing connections use it.
    pub fn with_tls(mut self, tls: Option<Arc<Tls>>) -> Pool {
        self.tls = tls.filter(|t| t.options.outgoing());
        self
    }

    /// Frames queued and not yet taken by their writers.
    pub fn queued(&self) -> usize {
        let peers = self.peers.lock().expect("pool lock");
        peers
            .values()
            .flat_map(|by_name| by_name.values())
            .map(|tx| tx.max_capacity() - tx.capacity())
            .sum()
    }

    /// Wait (at most `within`) until every queued frame has been taken by
    /// its writer, then `linger` more for the writes themselves: what a
    /// leaving agent sent last (its answers to forwarded requests) leaves
    /// before the process exits.
    pub async fn flush(&self, within: Duration, linger: Duration) {
        let end = tokio::time::Instant::now() + within;
        while self.queued() > 0 && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(linger).await;
    }

    /// Queue a message for server `node` at `address`. Never blocks: if the
    /// peer's queue is full a Raft message is dropped (Raft retries), and a
    /// forwarded request or reply waits for room in a task of its own.
    /// Nobody resends those: a dropped reply left its request waiting until
    /// it timed out (minutes, for a blocking query), and one write answers
    /// every blocking query parked through a follower at once (10,000 of
    /// them through a client agent, bench/watch-fanout.sh, lost all but
    /// 4,095). They are bounded anyway: each is one of the sender's or the
    /// leader's `pending_requests_max` requests.
    pub fn send(&self, node: &str, address: &str, message: &Message) {
        let mut frame = Vec::new();
        wire::encode_frame(&wire::encode_message(message), &mut frame);
        let mut peers = self.peers.lock().expect("pool lock");
        let tx = match peers.get(address).and_then(|by_name| by_name.get(node)) {
            Some(tx) => tx.clone(),
            None => {
                let tx = spawn_writer(
                    address.to_string(),
                    node.to_string(),
                    self.local,
                    self.tls.clone(),
                );
                peers
                    .entry(address.to_string())
                    .or_default()
                    .insert(node.to_string(), tx.clone());
                tx
            }
        };
        match tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(frame)) => {
                if !matches!(message.body, MessageBody::Raft(_)) {
                    tokio::spawn(async move {
                        let _ = tx.send(frame).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                if let Some(by_name) = peers.get_mut(address) {
                    by_name.remove(node);
                    if by_name.is_empty() {
                        peers.remove(address);
                    }
                }
            }
        }
    }
}

/// A task that owns the connection to one peer: dials on demand, writes
/// frames, and throws the connection away after any error (the next frame
/// dials again), so a broken connection is never reused. The peer never
/// writes on this connection, so a read that returns means it closed (its
/// process died or restarted): the connection is dropped at once rather
/// than found dead by a later write, which the kernel would accept and then
/// lose.
fn spawn_writer(
    address: String,
    node: String,
    local: Option<IpAddr>,
    tls: Option<Arc<Tls>>,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PEER_QUEUE_MAX);
    tokio::spawn(async move {
        let mut conn: Option<Conn> = None;
        while let Some(frame) = rx.recv().await {
            if conn.as_ref().is_some_and(Conn::closed) {
                tracing::debug!("connection to {address} closed by the peer; redialing");
                conn = None;
            }
            if conn.is_none() {
                conn = dial_raft(&address, &node, local, tls.as_deref()).await;
            }
            let Some(c) = conn.as_mut() else {
                continue; // dropped: the peer is unreachable
            };
            // Coalesce whatever else is queued into one write.
            let mut batch = frame;
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
                if batch.len() > 1 << 20 {
                    break;
                }
            }
            let written = match c.write.write_all(&batch).await {
                Ok(()) => c.write.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::debug!(
                    "connection to {address} failed: {e}; redialing on the next message"
                );
                conn = None;
            }
        }
    });
    tx
}

/// An outbound connection: its write half, and a watcher on the read half
/// that notes when the peer closes it.
struct Conn {
    write: Box<dyn AsyncWrite + Send + Unpin>,
    closed: tokio::sync::oneshot::Receiver<()>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn new<S: Stream>(stream: S) -> Conn {
        let (mut read, write) = tokio::io::split(stream);
        let (tx, closed) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // Anything the peer sends here is unexpected; EOF or an error
            // means the connection is over. (TLS's own records, such as
            // session tickets, are taken by the TLS layer.)
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
        Conn {
            write: Box::new(write),
            closed,
            watcher,
        }
    }

    fn closed(&self) -> bool {
        !self.closed.is_empty() || self.closed.is_terminated()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Dial server `node` at `address` for Raft: the type byte, or with TLS
/// the RPC-TLS byte, the handshake and the type byte inside.
async fn dial_raft(
    address: &str,
    node: &str,
    local: Option<IpAddr>,
    tls: Option<&Tls>,
) -> Option<Conn> {
    let mut stream = dial(address, local).await.ok()?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            stream.write_all(&[wire::conn::RPC_RAFT]).await.ok()?;
            Some(Conn::new(stream))
        }
        Some(t) => upgrade_outbound(stream, address, node, t, wire::conn::RPC_RAFT)
            .await
            .ok()
            .map(Conn::new),
    }
}

/// Turn a fresh connection to server `node` into RPC-TLS (Consul's
/// `wrapTLSClient`): byte 3, the handshake with SNI
/// `<node>.server.<dc>.<domain>` within the handshake timeout, then
/// `inner`, the type byte of what follows. A failed handshake is one
/// rate-limited line naming the server and the reason.
pub async fn upgrade_outbound(
    mut stream: TcpStream,
    address: &str,
    node: &str,
    t: &Tls,
    inner: u8,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = t
        .configs()
        .client
        .clone()
        .ok_or("outgoing TLS needs tls.defaults.ca_file or ca_path")?;
    stream
        .write_all(&[wire::conn::RPC_TLS])
        .await
        .map_err(|e| format!("dialing {address}: {e}"))?;
    let sni = rustls::pki_types::ServerName::try_from(t.options.server_sni(node))
        .or_else(|_| rustls::pki_types::ServerName::try_from(t.options.server_name()))
        .map_err(|e| format!("dialing {address}: no usable TLS server name: {e}"))?;
    let connect = tokio_rustls::TlsConnector::from(config).connect(sni, stream);
    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect).await {
        Ok(Ok(mut s)) => {
            s.write_all(&[inner])
                .await
                .map_err(|e| format!("dialing {address}: {e}"))?;
            s.flush()
                .await
                .map_err(|e| format!("dialing {address}: {e}"))?;
            return Ok(s);
        }
        Ok(Err(e)) => tls::describe(&e),
        Err(_) => "no handshake within the handshake timeout".to_string(),
    };
    let line = format!("server port: TLS handshake with {node} at {address} failed: {why}");
    t.handshake_failed
        .warn(&format!("{node} at {address}: {why}"), line.clone());
    Err(line)
}
