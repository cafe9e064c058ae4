//! The lock workload and its invariant: never two clients believe they hold
//! one lock at the same time (issue 9, deliverable 4).
//!
//! Each lock client does what Consul's `api/lock.go` does, reduced to what
//! matters for safety: create a session (TTL [`LockSpec::ttl`], lock delay
//! [`LockSpec::lock_delay`], on a server's node, with or without that
//! node's `serfHealth` check), renew it every TTL/2, try `?acquire` on one
//! key until it returns true, hold for a while, release, destroy the
//! session, start over.
//!
//! **When a client believes it holds the lock.** From the moment an acquire
//! answered `true` until the first of:
//! - it sends its release (it stops believing before asking);
//! - TTL after it *sent* its last renew that succeeded: the leader resets
//!   the session's timer when it serves the renew (after the send) and
//!   destroys the session only TTL × 2 after that, so a client that cannot
//!   renew gives up first (Consul's `RenewPeriodic` gives up after the TTL);
//! - a renew answers that the session is gone (it was invalidated: its
//!   node's `serfHealth` went critical, or its TTL ran out).
//!
//! The last case is where the lock delay matters: a session the catalog
//! invalidates is gone before its holder can know. Its keys are released
//! at once, but no one may acquire them for the session's lock delay, which
//! is longer than the holder needs to notice (its next renew, TTL/2 plus a
//! call). A renew a deposed leader still serves (it learns of its
//! deposition within two election timeouts) is covered the same way: the
//! lock delay is at least the TTL plus two election timeouts. Times are the
//! simulator's one clock (no drift between clients and servers, which real
//! deployments must bound separately).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_core::fsm::{ApplyResult, KvCommand, KvWrite, Session};
use tern_core::rpc::{Op, ReadMode, ReplyBody};
use tern_core::Instant;
use tern_io_sim::{Client, World};

use crate::workload::request;

/// The one key every lock client contends for.
pub const LOCK_KEY: &str = "service/leader";

/// A lock client's timings.
#[derive(Clone, Copy, Debug)]
pub struct LockSpec {
    pub ttl: Duration,
    pub lock_delay: Duration,
    /// How long a holder keeps the lock before releasing it.
    pub hold_ms: (u64, u64),
    /// The longest any call waits for its answer.
    pub call_timeout: Duration,
}

/// One stretch of time a client believed it held the lock.
#[derive(Clone, Debug)]
pub struct Belief {
    pub client: u64,
    pub session: String,
    pub start: Instant,
    pub end: Instant,
    /// How it ended: `released`, `ttl` (no renew for a TTL), `invalidated`.
    pub how: &'static str,
}

/// What the lock clients saw.
#[derive(Debug, Default)]
pub struct LockHistory {
    pub beliefs: Vec<Belief>,
    pub sessions_created: u64,
    pub acquires_refused: u64,
}

pub type SharedLockHistory = Arc<Mutex<LockHistory>>;

/// Every pair of beliefs by different sessions that overlap in time.
pub fn check(history: &LockHistory) -> Vec<String> {
    let mut beliefs = history.beliefs.clone();
    beliefs.sort_by_key(|b| b.start);
    let mut failures = Vec::new();
    for (i, a) in beliefs.iter().enumerate() {
        for b in &beliefs[i + 1..] {
            if b.start >= a.end {
                break;
            }
            if a.session != b.session {
                failures.push(format!(
                    "mutual exclusion: client {} (session {}, {:.3}s..{:.3}s, ended by {}) and client {} (session {}, {:.3}s..{:.3}s, ended by {}) both believed they held {LOCK_KEY}",
                    a.client, a.session, secs(a.start), secs(a.end), a.how,
                    b.client, b.session, secs(b.start), secs(b.end), b.how,
                ));
            }
        }
    }
    failures
}

fn secs(t: Instant) -> f64 {
    t.0 as f64 / 1e9
}

fn now() -> Instant {
    tern_io_sim::now()
}

fn core(d: Duration) -> tern_core::Duration {
    tern_core::Duration::from_nanos(d.as_nanos() as u64)
}

/// Run one lock client until `stop` is set.
pub async fn lock_loop(
    world: World,
    client: Client,
    index: u64,
    spec: LockSpec,
    seed: u64,
    history: SharedLockHistory,
    stop: Arc<AtomicBool>,
) {
    let mut rng = tern_core::rng::Rng::new(seed ^ (index << 40) ^ 0x10C4);
    while !stop.load(Ordering::Relaxed) {
        episode(&world, &client, index, spec, &mut rng, &history, &stop).await;
        madsim::time::sleep(Duration::from_millis(rng.range(50, 300))).await;
    }
}

fn pick(world: &World, rng: &mut tern_core::rng::Rng) -> Option<tern_core::NodeId> {
    let servers = world.servers();
    (!servers.is_empty()).then(|| servers[rng.range(0, servers.len() as u64) as usize])
}

/// One session: create, acquire, hold, release, destroy.
async fn episode(
    world: &World,
    client: &Client,
    index: u64,
    spec: LockSpec,
    rng: &mut tern_core::rng::Rng,
    history: &SharedLockHistory,
    stop: &AtomicBool,
) {
    let Some(server) = pick(world, rng) else {
        return;
    };
    let Some(node) = world.with_server(pick(world, rng).unwrap_or(server), |s| {
        s.config().node_name.0.clone()
    }) else {
        return;
    };
    let session = Session {
        node,
        ttl: format!("{}ms", spec.ttl.as_millis()),
        lock_delay_ns: spec.lock_delay.as_nanos() as u64,
        // Mostly with the node's serfHealth, so a failed server invalidates
        // sessions under their holders (where the lock delay matters).
        node_checks: if rng.chance(3, 4) {
            vec!["serfHealth".into()]
        } else {
            vec![]
        },
        name: format!("lock-client-{index}"),
        ..Session::default()
    };
    let sent = now();
    let created = client
        .call(
            server,
            request(Op::SessionCreate(Box::new(session)), ReadMode::Default),
            spec.call_timeout,
        )
        .await;
    let Ok(Ok(reply)) = created else {
        return;
    };
    let ReplyBody::Applied(ApplyResult::Session(id)) = reply.body else {
        return;
    };
    history.lock().unwrap().sessions_created += 1;
    // The leader armed the timer when it applied the create, after `sent`.
    let ttl = core(spec.ttl);
    let mut deadline = sent + ttl;
    let mut next_renew = sent + core(spec.ttl / 2);
    let mut holding: Option<(Instant, Instant)> = None; // (since, release at)
    let record = |start: Instant, end: Instant, how: &'static str| {
        history.lock().unwrap().beliefs.push(Belief {
            client: index,
            session: id.clone(),
            start,
            end,
            how,
        });
    };
    let wait_left = |deadline: Instant| -> Duration {
        let left = Duration::from_nanos(deadline.saturating_since(now()).as_nanos());
        left.min(spec.call_timeout)
    };
    loop {
        let t = now();
        if t >= deadline {
            if let Some((since, _)) = holding.take() {
                record(since, deadline, "ttl");
            }
            break;
        }
        if stop.load(Ordering::Relaxed) && holding.is_none() {
            break;
        }
        if t >= next_renew {
            let Some(server) = pick(world, rng) else {
                break;
            };
            let renew = client
                .call(
                    server,
                    request(Op::SessionRenew { id: id.clone() }, ReadMode::Default),
                    wait_left(deadline),
                )
                .await;
            match renew {
                Ok(Ok(r)) => match r.body {
                    ReplyBody::Sessions(s) if !s.is_empty() => {
                        deadline = t + ttl;
                        next_renew = t + core(spec.ttl / 2);
                    }
                    ReplyBody::Sessions(_) => {
                        if let Some((since, _)) = holding.take() {
                            record(since, now().min(deadline), "invalidated");
                        }
                        break;
                    }
                    _ => next_renew = now() + core(Duration::from_millis(200)),
                },
                _ => next_renew = now() + core(Duration::from_millis(200)),
            }
            continue;
        }
        match holding {
            Some((since, release_at)) if t >= release_at || stop.load(Ordering::Relaxed) => {
                // Stop believing, then ask.
                record(since, t, "released");
                if let Some(server) = pick(world, rng) {
                    let write = KvWrite {
                        key: LOCK_KEY.into(),
                        flags: 0,
                        value: format!("c{index}").into_bytes().into(),
                    };
                    let unlock = KvCommand::Unlock {
                        write,
                        session: id.clone(),
                    };
                    let _ = client
                        .call(
                            server,
                            request(Op::KvApply(unlock), ReadMode::Default),
                            spec.call_timeout,
                        )
                        .await;
                }
                break;
            }
            Some((_, release_at)) => {
                let until = release_at.min(next_renew).min(deadline);
                let d = until.saturating_since(t).as_nanos().max(1_000_000);
                madsim::time::sleep(Duration::from_nanos(d)).await;
            }
            None => {
                let Some(server) = pick(world, rng) else {
                    break;
                };
                let write = KvWrite {
                    key: LOCK_KEY.into(),
                    flags: 0,
                    value: format!("c{index}").into_bytes().into(),
                };
                let lock = KvCommand::Lock {
                    write,
                    session: id.clone(),
                };
                let answer = client
                    .call(
                        server,
                        request(Op::KvApply(lock), ReadMode::Default),
                        wait_left(deadline),
                    )
                    .await;
                let got = now();
                match answer {
                    Ok(Ok(r)) if r.body == ReplyBody::Applied(ApplyResult::Kv(true)) => {
                        if got < deadline {
                            let hold =
                                Duration::from_millis(rng.range(spec.hold_ms.0, spec.hold_ms.1));
                            holding = Some((got, got + core(hold)));
                        }
                    }
                    Ok(Ok(_)) => {
                        history.lock().unwrap().acquires_refused += 1;
                        madsim::time::sleep(Duration::from_millis(rng.range(50, 250))).await;
                    }
                    // No answer or an error: it may hold the lock in the
                    // store, but it does not believe it (safe); it retries.
                    _ => madsim::time::sleep(Duration::from_millis(rng.range(50, 250))).await,
                }
            }
        }
    }
    // Best effort: end the session (its locks go with it).
    if let Some(server) = pick(world, rng) {
        let _ = client
            .call(
                server,
                request(Op::SessionDestroy { id: id.clone() }, ReadMode::Default),
                spec.call_timeout,
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn belief(client: u64, session: &str, start: u64, end: u64) -> Belief {
        Belief {
            client,
            session: session.into(),
            start: Instant(start),
            end: Instant(end),
            how: "released",
        }
    }

    #[test]
    fn overlapping_beliefs_of_two_sessions_are_a_violation() {
        let mut h = LockHistory {
            beliefs: vec![belief(1, "a", 0, 10), belief(2, "b", 10, 20)],
            ..LockHistory::default()
        };
        assert!(check(&h).is_empty(), "touching is not overlapping");
        h.beliefs.push(belief(3, "c", 15, 30));
        let f = check(&h);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("client 2") && f[0].contains("client 3"));
        h.beliefs = vec![
            belief(1, "a", 0, 100),
            belief(2, "b", 200, 300),
            belief(3, "c", 50, 60),
        ];
        assert_eq!(check(&h).len(), 1);
    }
}
