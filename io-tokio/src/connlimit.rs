//! Connection limits before trust (Consul's `limits {
//! rpc_max_conns_per_client http_max_conns_per_client }`, enforced in its
//! agent/consul/rpc.go `handleConn` and the HTTP server with
//! hashicorp/go-connlimit): connections are counted per source IP the
//! moment they are accepted, before a byte is read, and one over the limit
//! is closed at once, with one rate-limited log line.

/// Consul's defaults (agent/config/default.go).
pub const DEFAULT_RPC_MAX_CONNS_PER_CLIENT: usize = 100;
pub const DEFAULT_HTTP_MAX_CONNS_PER_CLIENT: usize = 200;
pub const DEFAULT_HTTPS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's limits; 0 connections means no limit, as in Consul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    pub rpc_max_conns_per_client: usize,
    /// The HTTP API's, and the HTTPS API's (its own count, taken before
    /// the TLS handshake).
    pub http_max_conns_per_client: usize,
    /// How long an HTTPS client may take over its TLS handshake (Consul's
    /// `limits.https_handshake_timeout`; above zero).
    pub https_handshake_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            rpc_max_conns_per_client: DEFAULT_RPC_MAX_CONNS_PER_CLIENT,
            http_max_conns_per_client: DEFAULT_HTTP_MAX_CONNS_PER_CLIENT,
            https_handshake_timeout: DEFAULT_HTTPS_HANDSHAKE_TIMEOUT,
        }
    }
}

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// At most one "too many connections" line per listener per this interval;
/// the lines in between are counted and the count goes in the next one.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What Consul's HTTP server answers a connection over the limit
/// (hashicorp/go-connlimit's 429 handler) before closing it.
const TOO_MANY_MESSAGE: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls\n";
/// How long writing that answer may take before the connection is just closed.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(10);

/// Open connections per source IP on one listener.
pub struct ConnTracker {
    /// The config key, for the log line (`rpc_max_conns_per_client`).
    key: &'static str,
    /// What the listener is, for the log line (`server port`, `HTTP API`).
    listener: &'static str,
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    log: Mutex<(Option<Instant>, u64)>,
}

/// A slot held by one open connection; dropping it frees the slot.
pub struct ConnGuard {
    tracker: Option<Arc<ConnTracker>>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Some(t) = &self.tracker else { return };
        let mut open = t.open.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl ConnTracker {
    /// `limit` connections per IP (0: no limit).
    pub fn new(listener: &'static str, key: &'static str, limit: usize) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            key,
            listener,
            limit,
            open: Mutex::new(HashMap::new()),
            log: Mutex::new((None, 0)),
        })
    }

    /// A slot for a connection from `ip`, or `None` (and a rate-limited
    /// log line) when `ip` already holds `limit`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        if self.limit == 0 {
            return Some(ConnGuard { tracker: None, ip });
        }
        {
            let mut open = self.open.lock().expect("not poisoned");
            let n = open.entry(ip).or_insert(0);
            if *n < self.limit {
                *n += 1;
                return Some(ConnGuard {
                    tracker: Some(self.clone()),
                    ip,
                });
            }
        }
        self.refused(ip);
        None
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .expect("not poisoned")
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }

    fn refused(&self, ip: IpAddr) {
        let mut log = self.log.lock().expect("not poisoned");
        let now = Instant::now();
        if log.0.is_some_and(|t| now < t + LOG_INTERVAL) {
            log.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.1);
        log.0 = Some(now);
        tracing::warn!(
            "{}: rejecting a connection from {ip}: {} ({}) exceeded; {suppressed} more rejected since the last line",
            self.listener,
            self.key,
            self.limit
        );
    }
}

/// The HTTP API's listener with `http_max_conns_per_client`: a connection
/// over the limit gets Consul's 429 and is closed; the rest are served
/// and hold their slot until they close.
pub struct LimitedListener {
    inner: TcpListener,
    tracker: Arc<ConnTracker>,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limit: usize) -> LimitedListener {
        LimitedListener {
            inner,
            tracker: ConnTracker::new("HTTP API", "http_max_conns_per_client", limit),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            let (mut stream, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // As axum's own listener: the error is the OS's
                    // (descriptors exhausted, ...); wait and go on.
                    tracing::warn!("HTTP API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.tracker.try_acquire(peer.ip()) {
                Some(guard) => {
                    return (
                        LimitedStream {
                            stream,
                            _guard: guard,
                        },
                        peer,
                    )
                }
                None => {
                    tokio::spawn(async move {
                        let answer = format!(
                            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TOO_MANY_MESSAGE}",
                            TOO_MANY_MESSAGE.len()
                        );
                        let _ = tokio::time::timeout(
                            REFUSAL_WRITE_TIMEOUT,
                            stream.write_all(answer.as_bytes()),
                        )
                        .await;
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that frees its slot when it closes.
pub struct LimitedStream {
    stream: TcpStream,
    _guard: ConnGuard,
}

impl LimitedStream {
    /// `stream` holding `guard`'s slot until it is dropped.
    pub fn new(stream: TcpStream, guard: ConnGuard) -> LimitedStream {
        LimitedStream {
            stream,
            _guard: guard,
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_ip_and_freed_on_drop() {
        let t = ConnTracker::new("test", "rpc_max_conns_per_client", 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = t.try_acquire(a).unwrap();
        let _g2 = t.try_acquire(a).unwrap();
        assert!(t.try_acquire(a).is_none(), "the third from one IP");
        let _g3 = t.try_acquire(b).expect("another IP has its own count");
        assert_eq!(t.open_from(a), 2);
        drop(g1);
        assert_eq!(t.open_from(a), 1);
        let _g4 = t
            .try_acquire(a)
            .expect("a closed connection frees its slot");
        assert!(t.try_acquire(a).is_none());
    }

    #[test]
    fn zero_means_no_limit() {
        let t = ConnTracker::new("test", "http_max_conns_per_client", 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let guards: Vec<_> = (0..1000).map(|_| t.try_acquire(a).unwrap()).collect();
        assert_eq!(guards.len(), 1000);
    }
}
