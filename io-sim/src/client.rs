//! Simulated clients: each on its own madsim node (so a fault can cut it off
//! or not), sending `Request`s to a chosen server and awaiting the answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use madsim::net::Endpoint;
use madsim::runtime::NodeHandle;
use tern_core::rpc::{Request, Response};
use tern_core::wire::{decode_response, encode_request};
use tern_core::NodeId;
use tokio::sync::oneshot;

use crate::net::{decode_envelope, encode_envelope, ClientId, TAG_REQUEST, TAG_RESPONSE};
use crate::world::Shared;

/// Why a call got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No answer in time: the request may or may not have been applied.
    Timeout,
    /// The world has no server with this id.
    UnknownServer(NodeId),
    /// The server stopped or restarted while the call was in flight: where
    /// a real client's connection would end (EOF or reset), the simulated
    /// network just goes quiet, so the caller says when it counts as gone.
    Gone,
}

impl core::fmt::Display for CallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timed out"),
            CallError::UnknownServer(id) => write!(f, "no server {id:?} in the world"),
            CallError::Gone => f.write_str("the server went away while the call was in flight"),
        }
    }
}

impl std::error::Error for CallError {}

/// What a client has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    pub calls: u64,
    pub answered: u64,
    pub timeouts: u64,
    /// Answers that did not decode (dropped).
    pub decode_errors: u64,
    /// Answers that came after their call timed out (dropped).
    pub late_answers: u64,
}

pub(crate) struct ClientSlot {
    id: ClientId,
    _node: NodeHandle,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    next_id: Mutex<u64>,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Response>>>,
    counters: Mutex<ClientCounters>,
}

/// A handle to one simulated client; clone it into as many tasks as you like
/// (calls from clones run concurrently and are matched by request id).
#[derive(Clone)]
pub struct Client {
    slot: Arc<ClientSlot>,
}

impl Client {
    pub(crate) async fn start(
        id: ClientId,
        node: NodeHandle,
        addr: SocketAddr,
        shared: Arc<Shared>,
    ) -> Client {
        let endpoint = node
            .spawn(async move { Endpoint::bind(addr).await })
            .await
            .expect("client bind task")
            .expect("client bind");
        let slot = Arc::new(ClientSlot {
            id,
            _node: node.clone(),
            endpoint: endpoint.clone(),
            shared,
            next_id: Mutex::new(1),
            pending: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(ClientCounters::default()),
        });
        for _ in 0..2 {
            node.spawn(receive_answers(endpoint.clone(), Arc::downgrade(&slot)));
        }
        Client { slot }
    }

    pub(crate) fn slot(&self) -> Arc<ClientSlot> {
        self.slot.clone()
    }

    pub fn id(&self) -> ClientId {
        self.slot.id
    }

    pub fn counters(&self) -> ClientCounters {
        self.slot.counters.lock().unwrap().clone()
    }

    /// Sends `request` to `server` and waits at most `timeout` for its answer.
    pub async fn call(
        &self,
        server: NodeId,
        request: Request,
        timeout: StdDuration,
    ) -> Result<Response, CallError> {
        self.call_inner(server, request, timeout, None::<fn() -> bool>)
            .await
    }

    /// As [`Client::call`], but gives up with [`CallError::Gone`] as soon as
    /// `gone()` says the server went away (checked every 100 ms while the
    /// call waits).
    pub async fn call_watching(
        &self,
        server: NodeId,
        request: Request,
        timeout: StdDuration,
        gone: impl Fn() -> bool,
    ) -> Result<Response, CallError> {
        self.call_inner(server, request, timeout, Some(gone)).await
    }

    async fn call_inner(
        &self,
        server: NodeId,
        request: Request,
        timeout: StdDuration,
        gone: Option<impl Fn() -> bool>,
    ) -> Result<Response, CallError> {
        let dst = self
            .slot
            .shared
            .server_addr(server)
            .ok_or(CallError::UnknownServer(server))?;
        let id = {
            let mut next = self.slot.next_id.lock().unwrap();
            *next += 1;
            *next - 1
        };
        let (tx, mut rx) = oneshot::channel();
        self.slot.pending.lock().unwrap().insert(id, tx);
        self.slot.counters.lock().unwrap().calls += 1;
        let bytes = encode_envelope(id, &encode_request(&request));
        let send = self
            .slot
            .endpoint
            .send_to_raw(dst, TAG_REQUEST, Box::new(bytes));
        let outcome = match gone {
            // One timer for the whole wait (the plain call: its timer
            // schedule is part of every seed's trace).
            None => madsim::time::timeout(timeout, async move {
                let _ = send.await;
                rx.await
            })
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(CallError::Timeout),
            Some(gone) => {
                let deadline = madsim::time::Instant::now() + timeout;
                let mut outcome = Err(CallError::Timeout);
                if madsim::time::timeout(timeout, send).await.is_ok() {
                    loop {
                        let left = deadline.saturating_duration_since(madsim::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        let poll = left.min(StdDuration::from_millis(100));
                        match madsim::time::timeout(poll, &mut rx).await {
                            Ok(Ok(response)) => {
                                outcome = Ok(response);
                                break;
                            }
                            Ok(Err(_)) => break,
                            Err(_) if gone() => {
                                outcome = Err(CallError::Gone);
                                break;
                            }
                            Err(_) => {}
                        }
                    }
                }
                outcome
            }
        };
        match outcome {
            Ok(response) => {
                self.slot.counters.lock().unwrap().answered += 1;
                Ok(response)
            }
            Err(e) => {
                self.slot.pending.lock().unwrap().remove(&id);
                self.slot.counters.lock().unwrap().timeouts += 1;
                Err(e)
            }
        }
    }
}

async fn receive_answers(ep: Endpoint, slot: std::sync::Weak<ClientSlot>) {
    loop {
        let Ok((payload, _from)) = ep.recv_from_raw(TAG_RESPONSE).await else {
            return;
        };
        let Some(slot) = slot.upgrade() else {
            return;
        };
        let frame_max = 64 << 20;
        let decoded = payload.downcast::<Vec<u8>>().ok().and_then(|bytes| {
            let (id, body) = decode_envelope(&bytes, frame_max).ok()?;
            Some((id, decode_response(body).ok()?))
        });
        match decoded {
            Some((id, response)) => {
                let waiter = slot.pending.lock().unwrap().remove(&id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(response);
                    }
                    None => slot.counters.lock().unwrap().late_answers += 1,
                }
            }
            None => {
                slot.counters.lock().unwrap().decode_errors += 1;
                println!(
                    "[io-sim] client {:?}: dropped an undecodable answer",
                    slot.id
                );
            }
        }
    }
}
