//! The HTTPS API (`ports.https`): the same router as the HTTP API behind
//! rustls, with `tls.https`'s certificate; client certificates are required
//! and verified under its `verify_incoming`.
//!
//! Handshakes in flight are bounded as Consul bounds them (agent/agent.go
//! `setupHTTPS` and go-connlimit): a connection takes one of its source
//! IP's `limits.http_max_conns_per_client` slots the moment it is accepted,
//! before a byte is read, and one over the limit is closed at once with no
//! handshake work (one rate-limited line); each handshake runs in its own
//! task under `limits.https_handshake_timeout` (5 s), so a slow or silent
//! client holds up no one and is closed when it runs out. A failed
//! handshake is a rate-limited line naming the peer and the reason. The
//! slot is held until the connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::agent::AgentHandle;
use crate::connlimit::{ConnLimits, ConnTracker, LimitedStream};
use crate::tls::{self, Tls};

type Stream = TlsStream<LimitedStream>;

/// Finished handshakes waiting for the server to take them.
const READY_MAX: usize = 128;

/// A listener whose connections have finished their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(Stream, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accept on `listener`, handshaking with the HTTPS configuration in
    /// force when each connection arrives (SIGHUP replaces it), under
    /// `limits`' per-client count and handshake deadline.
    pub fn new(
        listener: TcpListener,
        tls: Arc<Tls>,
        limits: ConnLimits,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_MAX);
        let tracker = ConnTracker::new(
            "HTTPS API",
            "http_max_conns_per_client",
            limits.http_max_conns_per_client,
        );
        let deadline = limits.https_handshake_timeout;
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("HTTPS accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Counted before anything is read: over the limit, the
                // connection is closed here (dropped) with no handshake.
                let Some(guard) = tracker.try_acquire(peer.ip()) else {
                    continue;
                };
                let Some(config) = tls.configs().https_server.clone() else {
                    continue; // no certificate: nothing to serve with
                };
                if tx.is_closed() {
                    return;
                }
                let (tx, tls) = (tx.clone(), tls.clone());
                tokio::spawn(async move {
                    let stream = LimitedStream::new(stream, guard);
                    let accept = TlsAcceptor::from(config).accept(stream);
                    let why = match tokio::time::timeout(deadline, accept).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                            return;
                        }
                        Ok(Err(e)) => tls::describe(&e),
                        Err(_) => "no handshake within the handshake timeout".to_string(),
                    };
                    tls.handshake_failed.warn(
                        &format!("https {}: {why}", peer.ip()),
                        format!("HTTPS: TLS handshake with {peer} failed: {why}"),
                    );
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serve the HTTPS API until the agent has left, as the HTTP API does.
pub async fn serve_https_until_left(
    listener: TcpListener,
    tls: Arc<Tls>,
    agent: AgentHandle,
) -> std::io::Result<()> {
    let left = agent.clone();
    let limits = agent.options().limits;
    axum::serve(
        TlsListener::new(listener, tls, limits)?,
        super::router(agent),
    )
    .with_graceful_shutdown(async move { left.left().await })
    .await
}
