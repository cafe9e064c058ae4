//! A simulated client agent: a [`Client`] that calls servers the way the
//! daemon's client agent does (`io-tokio/src/client_rpc.rs`), with the same
//! decisions from the core ([`tern_core::rpc::retry`]): a sticky, shuffled
//! server order that moves past a failed server, `No cluster leader` (and
//! busy, not-ready) retried on another server after a stagger in
//! `[0, hold/16)`, reads retried after a lost connection, all from the first
//! attempt until `rpc_hold_timeout` (plus a blocking query's wait).
//!
//! What differs from the daemon, and why:
//! - **The server list** is the alive, unsuspected servers in a running
//!   server's gossip view, read before each attempt. The daemon's client
//!   agent is a member of the LAN pool itself and watches its own view; the
//!   simulated one is not in the pool (the servers' gossip is simulated, a
//!   client's membership is not yet), so it borrows a server's.
//! - **Connections.** The simulated network has none: a call to a server
//!   that is not running counts as never sent (the daemon's dial would be
//!   refused), and a call in flight when its server stops or restarts counts
//!   as a lost connection (the daemon would read EOF or a reset).

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tern_core::rng::Rng;
use tern_core::rpc::retry::{attempt_timeout, Attempt, Next, Retry, ServerOrder};
use tern_core::rpc::{Request, Response, RpcError};
use tern_core::{Duration, NodeId};

use crate::client::{CallError, Client};
use crate::node::now;
use crate::world::{NodeStatus, World};

/// One attempt of a [`ClientAgent::call_logged`].
#[derive(Clone, Debug)]
pub struct AttemptLog {
    /// When its answer (or failure) came.
    pub at: tern_core::Instant,
    pub server: NodeId,
    pub outcome: AttemptOutcome,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    /// A reply.
    Answered,
    /// An error reply (`Server is busy`, `No cluster leader`, ...).
    Refused(RpcError),
    /// The server was not running.
    NotSent,
    /// The server stopped or restarted while the call was in flight.
    Lost,
    /// No answer within the attempt's timeout.
    TimedOut,
}

/// A client agent; clones share its server order (as every request of one
/// daemon agent shares its `RpcClient`).
#[derive(Clone)]
pub struct ClientAgent {
    client: Client,
    world: World,
    hold: Duration,
    state: Arc<Mutex<State>>,
    #[cfg(feature = "bugs")]
    bugs: tern_core::config::Bugs,
}

struct State {
    order: ServerOrder<NodeId>,
    rng: Rng,
}

fn same(a: &NodeId, b: &NodeId) -> bool {
    a == b
}

impl ClientAgent {
    /// A client agent calling through `client`, with `hold` as its
    /// `rpc_hold_timeout` and its shuffles and staggers drawn from `seed`.
    pub fn new(world: World, client: Client, hold: StdDuration, seed: u64) -> ClientAgent {
        ClientAgent {
            client,
            world,
            hold: Duration::from_nanos(hold.as_nanos() as u64),
            state: Arc::new(Mutex::new(State {
                order: ServerOrder::default(),
                rng: Rng::new(seed),
            })),
            #[cfg(feature = "bugs")]
            bugs: Default::default(),
        }
    }

    /// Plant the simulator's client-agent bugs (`client_no_retry`).
    #[cfg(feature = "bugs")]
    pub fn with_bugs(mut self, bugs: tern_core::config::Bugs) -> ClientAgent {
        self.bugs = bugs;
        self
    }

    /// The servers this agent would try, in order, as of now.
    pub fn servers(&self) -> Vec<NodeId> {
        self.refresh();
        self.state.lock().unwrap().order.servers().to_vec()
    }

    /// Take in the servers a running server's gossip view calls alive.
    fn refresh(&self) {
        let ids = self.world.servers();
        let view = ids
            .iter()
            .filter(|id| self.world.status(**id) == Some(NodeStatus::Running))
            .find_map(|id| self.world.gossip_members(*id));
        let alive: Vec<NodeId> = match view {
            Some(view) => ids
                .into_iter()
                .filter(|id| {
                    view.iter().any(|m| {
                        m.node_id == *id
                            && m.status == tern_core::gossip::Status::Alive
                            && !m.suspect
                    })
                })
                .collect(),
            // No running server: keep the list the agent had (its own pool
            // would still remember them for a while).
            None => return,
        };
        let mut state = self.state.lock().unwrap();
        let State { order, rng } = &mut *state;
        order.refresh(&alive, same, rng);
    }

    /// Ask a server, retrying as a client agent does.
    pub async fn call(&self, request: Request) -> Response {
        self.call_logged(request).await.0
    }

    /// [`call`](Self::call), with every attempt it made, in order: what a
    /// scenario reads to tell why a call failed (its error is only the last
    /// attempt's).
    pub async fn call_logged(&self, request: Request) -> (Response, Vec<AttemptLog>) {
        let mut log = Vec::new();
        let retry = Retry::new(&request, self.hold, now());
        #[cfg(feature = "bugs")]
        let retry = retry.planting(&self.bugs);
        loop {
            self.refresh();
            let server = self.state.lock().unwrap().order.first().copied();
            let Some(server) = server else {
                return (Err(RpcError::NoServers), log);
            };
            let attempt = self.attempt(server, &request).await;
            log.push(AttemptLog {
                at: now(),
                server,
                outcome: match &attempt {
                    Attempt::Answered(Ok(_)) => AttemptOutcome::Answered,
                    Attempt::Answered(Err(e)) => AttemptOutcome::Refused(e.clone()),
                    Attempt::NotSent(_) => AttemptOutcome::NotSent,
                    Attempt::Lost(_) => AttemptOutcome::Lost,
                    Attempt::TimedOut(_) => AttemptOutcome::TimedOut,
                },
            });
            let next = {
                let mut state = self.state.lock().unwrap();
                let State { order, rng } = &mut *state;
                if attempt.server_failed() {
                    order.failed(&server, same);
                }
                retry.after(&format!("{server:?}"), attempt, now(), rng)
            };
            match next {
                Next::Done(response) => return (response, log),
                Next::Retry { after, .. } => {
                    madsim::time::sleep(StdDuration::from_nanos(after.as_nanos())).await
                }
            }
        }
    }

    async fn attempt(&self, server: NodeId, request: &Request) -> Attempt {
        let incarnation = |world: &World| world.counters(server).map(|c| c.starts);
        if self.world.status(server) != Some(NodeStatus::Running) {
            return Attempt::NotSent("connection refused".into());
        }
        let started = incarnation(&self.world);
        let timeout = StdDuration::from_nanos(attempt_timeout(request).as_nanos());
        let world = self.world.clone();
        let gone = move || {
            world.status(server) != Some(NodeStatus::Running) || incarnation(&world) != started
        };
        match self
            .client
            .call_watching(server, request.clone(), timeout, gone)
            .await
        {
            Ok(response) => Attempt::Answered(response),
            Err(CallError::Gone) => Attempt::Lost("connection closed (EOF)".into()),
            Err(CallError::UnknownServer(_)) => Attempt::NotSent("no such server".into()),
            Err(CallError::Timeout) => {
                Attempt::TimedOut(Duration::from_nanos(timeout.as_nanos() as u64))
            }
        }
    }
}
