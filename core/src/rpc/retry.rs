//! A client agent's retry rules, as one pure policy: the daemon's client
//! agent (`io-tokio/src/client_rpc.rs`) and the simulator's client agents
//! (`sim-tests/src/membership.rs`) both ask it what to do after every
//! attempt, so the simulator runs the retry decisions production runs.
//!
//! Consul's rules (`agent/consul/client.go` `RPC`, `agent/consul/rpc.go`
//! `canRetry`, `agent/router/manager.go` `NotifyFailedServer`):
//!
//! - **Which server.** [`ServerOrder`]: every call goes to the first server
//!   of a shuffled list (sticky); a server that fails a call goes to the end,
//!   so the next attempt goes to another. New servers join at the end in a
//!   random order; departed ones are dropped.
//! - **What is retried.** `No cluster leader` always (nothing was applied).
//!   A call that never left (the dial failed) always. A connection lost after
//!   the call was sent (EOF-like) only for reads: a write may have been
//!   applied. Beyond Consul 1.8, and as its later rate-limit errors are:
//!   `Server is busy` (a full queue refused the request before it did
//!   anything) and `Not ready to serve consistent reads` (only reads get it,
//!   and they changed nothing). Nothing else.
//! - **For how long.** The clock starts at the first attempt, because the
//!   servers may already have held the call. No retry starts once
//!   `rpc_hold_timeout` (plus a blocking query's wait and its 1/16 jitter:
//!   Consul's `HasTimedOut`) has passed; the last error is returned.
//! - **Between tries** a random wait in `[0, hold / 16)` (Consul's
//!   `jitterFraction`), so clients do not retry in lockstep.
//! - **A stuck server**: an attempt with no answer within
//!   [`attempt_timeout`] fails with an unknown outcome and is not retried.

use super::{Request, Response, RpcError};
use crate::clock::{Duration, Instant};
use crate::rng::Rng;

/// How long one attempt waits for its answer (Consul's
/// `limits.rpc_client_timeout`, 60 s), before a blocking query's wait is
/// added. A server holds a call for its own `rpc_hold_timeout` before it
/// says `No cluster leader`, so this is far longer than any hold; it only
/// catches a server that is stuck.
pub const RPC_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one attempt of `request` may wait for its answer.
pub fn attempt_timeout(request: &Request) -> Duration {
    let wait = blocking_wait(request);
    Duration(RPC_CLIENT_TIMEOUT.0 + wait.0 + wait.0 / 16)
}

fn blocking_wait(request: &Request) -> Duration {
    request.blocking.map_or(Duration::ZERO, |b| b.max_wait)
}

/// What became of one attempt on one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered, with a reply or an error.
    Answered(Response),
    /// The call never left: no connection could be made. Nothing happened.
    NotSent(String),
    /// The connection broke after the call was sent (EOF-like): a write may
    /// have been applied.
    Lost(String),
    /// No answer within [`attempt_timeout`]; the outcome is unknown.
    TimedOut(Duration),
}

impl Attempt {
    /// Whether the server is to blame, so the client moves on from it
    /// (Consul's `NotifyFailedServer` after a failed call). A request the
    /// server refused as bad or too large would fail on any server: it does
    /// not rotate the list.
    pub fn server_failed(&self) -> bool {
        !matches!(
            self,
            Attempt::Answered(
                Ok(_)
                    | Err(RpcError::BadRequest(_)
                        | RpcError::TooLarge(_)
                        | RpcError::Refused(_)
                        | RpcError::NoPathToDatacenter)
            )
        )
    }
}

/// What the caller does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Hand this to the caller; the call is over.
    Done(Response),
    /// The attempt failed with `error` (log it); mark the server failed
    /// ([`ServerOrder::failed`]) and try again after `after`.
    Retry { after: Duration, error: RpcError },
}

/// One call's retry state, from its first attempt to its answer.
#[derive(Clone, Debug)]
pub struct Retry {
    first_attempt: Instant,
    budget: Duration,
    hold: Duration,
    write: bool,
    #[cfg(feature = "bugs")]
    no_retry: bool,
}

impl Retry {
    /// A call of `request` whose first attempt starts at `now`, by a client
    /// whose `rpc_hold_timeout` is `hold`.
    pub fn new(request: &Request, hold: Duration, now: Instant) -> Retry {
        let wait = blocking_wait(request);
        Retry {
            first_attempt: now,
            budget: Duration(hold.0 + wait.0 + wait.0 / 16),
            hold,
            write: request.op.is_write(),
            #[cfg(feature = "bugs")]
            no_retry: false,
        }
    }

    /// Plant the simulator's bugs that concern a client agent.
    #[cfg(feature = "bugs")]
    pub fn planting(mut self, bugs: &crate::config::Bugs) -> Retry {
        self.no_retry = bugs.client_no_retry;
        self
    }

    /// The time after which no retry starts.
    pub fn deadline(&self) -> Instant {
        Instant(self.first_attempt.0.saturating_add(self.budget.0))
    }

    /// Decide after an attempt on `server` (its name, for messages) ended
    /// as `attempt` at `now`. The stagger is drawn from `rng` only when the
    /// answer is a retry.
    pub fn after(&self, server: &str, attempt: Attempt, now: Instant, rng: &mut Rng) -> Next {
        let (retryable, error) = match attempt {
            Attempt::Answered(Ok(reply)) => return Next::Done(Ok(reply)),
            Attempt::Answered(Err(e)) => {
                let retryable = matches!(
                    e,
                    RpcError::NoLeader | RpcError::Busy | RpcError::NotReadyForConsistentReads
                );
                (retryable, e)
            }
            Attempt::NotSent(e) => (
                true,
                RpcError::Unknown(format!("rpc error making call to {server}: {e}")),
            ),
            Attempt::Lost(e) => (
                !self.write,
                RpcError::Unknown(format!("rpc error making call to {server}: {e}")),
            ),
            Attempt::TimedOut(d) => (
                false,
                RpcError::Unknown(format!(
                    "no answer from {server} within {} ms",
                    d.as_millis()
                )),
            ),
        };
        #[cfg(feature = "bugs")]
        let retryable = retryable && !self.no_retry;
        if !retryable || now >= self.deadline() {
            return Next::Done(Err(error));
        }
        Next::Retry {
            after: Duration(rng.range(0, self.hold.0 / 16)),
            error,
        }
    }
}

/// The servers in the order a client tries them (Consul's router manager):
/// the first is used until it fails; a failed one goes to the end.
#[derive(Clone, Debug)]
pub struct ServerOrder<T> {
    order: Vec<T>,
}

impl<T> Default for ServerOrder<T> {
    fn default() -> Self {
        ServerOrder { order: Vec::new() }
    }
}

impl<T: Clone> ServerOrder<T> {
    /// The servers in their current order.
    pub fn servers(&self) -> &[T] {
        &self.order
    }

    /// The server to ask now, if any is known.
    pub fn first(&self) -> Option<&T> {
        self.order.first()
    }

    /// Take in the latest list of servers (`same` tells whether two entries
    /// are one server): those still there keep their place (their entry is
    /// replaced by the latest one), new ones are appended in random order,
    /// gone ones are dropped. Returns whether the list changed.
    pub fn refresh(&mut self, latest: &[T], same: impl Fn(&T, &T) -> bool, rng: &mut Rng) -> bool {
        let mut next: Vec<T> = self
            .order
            .iter()
            .filter_map(|old| latest.iter().find(|s| same(s, old)).cloned())
            .collect();
        let kept = next.len();
        let mut new: Vec<T> = latest
            .iter()
            .filter(|s| !next.iter().any(|o| same(o, s)))
            .cloned()
            .collect();
        // Fisher-Yates, so each client starts on a random server.
        for i in (1..new.len()).rev() {
            let j = rng.range(0, i as u64 + 1) as usize;
            new.swap(i, j);
        }
        let changed = kept != self.order.len() || !new.is_empty();
        next.extend(new);
        self.order = next;
        changed
    }

    /// Consul's `NotifyFailedServer`: if the failed server is the one in
    /// use, the next one takes its place and it goes to the end. A server
    /// that is not first (another call already moved it) changes nothing.
    pub fn failed(&mut self, server: &T, same: impl Fn(&T, &T) -> bool) {
        if self.order.len() > 1 && self.order.first().is_some_and(|f| same(f, server)) {
            self.order.rotate_left(1);
        }
    }
}
