//! Simulated clients and the history they record for the linearizability check.
//!
//! Each client loops: pick a server and an operation, call, record. Every
//! write writes a value unique in the whole run, so CAS on a modify index can
//! be checked as CAS on the value that was read with that index (see
//! `linearizability`). A request that failed before it was ever proposed
//! (`No cluster leader`, `Busy`, ...) is left out of the history; one that
//! timed out or lost its leader mid-commit is recorded with an unknown outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_core::fsm::{ApplyResult, Command, KvCommand, KvWrite};
use tern_core::raft::EntryPayload;
use tern_core::rpc::{Blocking, Op, ReadMode, ReplyBody, Request, Response, RpcError};
use tern_core::{Datacenter, NodeId};
use tern_io_sim::{Client, World};

use crate::linearizability::{KvInput, KvOutput, Operation};

pub fn request(op: Op, read_mode: ReadMode) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode,
        blocking: None,
        op,
    }
}

pub fn put_request(key: &str, value: &str) -> Request {
    request(
        Op::KvApply(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: value.as_bytes().to_vec().into(),
        })),
        ReadMode::Default,
    )
}

/// What the clients saw, shared by all client tasks.
#[derive(Default)]
pub struct History {
    pub ops: Vec<Operation>,
    /// (log index, payload digest) of every write acknowledged as applied.
    pub acked: Vec<(u64, u64)>,
    pub acked_writes: u64,
    pub unknown: u64,
    pub refused: u64,
    /// (position in `ops`, payload digest) of each write with an unknown
    /// outcome: one that no server ever appended to its log was certainly
    /// never applied, and leaves the history before the check.
    pub unknown_writes: Vec<(usize, u64)>,
    /// Values of every write that may have been applied (acknowledged,
    /// a successful CAS, or an unknown outcome): every value a read
    /// returns must be one of them.
    pub written: BTreeSet<String>,
    /// Entries blocking queries returned, checked at the end against
    /// `written` and the entries committed at their modify index.
    pub blocking_reads: Vec<BlockingRead>,
    pub blocking: BlockingCounts,
    /// What the per-client checks of blocking queries found broken.
    pub violations: Vec<String>,
}

/// One entry a blocking query returned.
#[derive(Clone, Debug)]
pub struct BlockingRead {
    pub client: u64,
    pub key: String,
    pub value: String,
    pub modify_index: u64,
}

/// What became of the blocking queries of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockingCounts {
    pub issued: u64,
    /// Answered before their wait ran out (the index moved).
    pub woken: u64,
    /// Answered once their wait ran out.
    pub timed_out: u64,
    /// Errors and calls with no answer.
    pub failed: u64,
}

impl History {
    fn violation(&mut self, v: String) {
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }
}

pub type SharedHistory = Arc<Mutex<History>>;

/// One client's view: the last value and modify index it read per key.
#[derive(Default)]
struct Seen {
    last: BTreeMap<String, (Option<String>, u64)>,
    /// Per key, the highest `KvGet` reply index (or acknowledged put's log
    /// index) this client has received: a committed state it observed.
    observed: BTreeMap<String, u64>,
    /// Per key, the index of the last `KvGet` reply, as the next blocking
    /// query's `min_index`.
    last_get_index: BTreeMap<String, u64>,
    last_list_index: BTreeMap<String, u64>,
    /// Per (server, key), the last stale-mode `KvGet` answer's index and
    /// the server's start count when it arrived.
    stale: BTreeMap<(NodeId, String), (u64, u64)>,
}

impl Seen {
    fn observe(&mut self, key: &str, index: u64) {
        let o = self.observed.entry(key.to_string()).or_default();
        *o = (*o).max(index);
    }
}

fn value_of(reply_body: &ReplyBody) -> Option<(Option<String>, u64)> {
    match reply_body {
        ReplyBody::Entry(Some(e)) => Some((
            Some(String::from_utf8_lossy(&e.value).into_owned()),
            e.modify_index,
        )),
        ReplyBody::Entry(None) => Some((None, 0)),
        _ => None,
    }
}

/// Whether an error means the request was certainly never applied.
fn definitely_not_applied(e: &RpcError) -> bool {
    !matches!(e, RpcError::Unknown(_))
}

/// Run one client until `stop` is set.
#[allow(clippy::too_many_arguments)]
pub async fn client_loop(
    world: World,
    client: Client,
    index: u64,
    keys: usize,
    seed: u64,
    history: SharedHistory,
    stop: Arc<AtomicBool>,
    timeout: Duration,
    blocking_permille: u64,
) {
    let mut rng = tern_core::rng::Rng::new(seed ^ (index << 32) ^ 0xC11E);
    let mut seen = Seen::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let servers = world.servers();
        if servers.is_empty() {
            madsim::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let server = servers[rng.range(0, servers.len() as u64) as usize];
        let key = format!("k{}", rng.range(0, keys as u64));
        n += 1;
        let value = format!("c{index}-{n}");
        if rng.range(0, 1000) < blocking_permille {
            let call = tern_io_sim::now().0;
            blocking_query(
                &world, &client, server, &key, index, &mut rng, &mut seen, &history,
            )
            .await;
            // Never loop without letting simulated time move.
            if tern_io_sim::now().0 == call {
                madsim::time::sleep(Duration::from_millis(rng.range(1, 20))).await;
            }
            continue;
        }
        let roll = rng.range(0, 100);
        let (input, req) = match roll {
            0..=34 => (
                KvInput::Put {
                    value: value.clone(),
                },
                put_request(&key, &value),
            ),
            35..=49 => (
                KvInput::Get,
                request(Op::KvGet { key: key.clone() }, ReadMode::Default),
            ),
            50..=69 => (
                KvInput::Get,
                request(Op::KvGet { key: key.clone() }, ReadMode::Consistent),
            ),
            70..=89 => {
                let (expected, modify_index) = seen.last.get(&key).cloned().unwrap_or((None, 0));
                (
                    KvInput::Cas {
                        expected: expected.clone(),
                        value: value.clone(),
                    },
                    request(
                        Op::KvApply(KvCommand::Cas {
                            write: KvWrite {
                                key: key.clone(),
                                flags: 0,
                                value: value.as_bytes().to_vec().into(),
                            },
                            modify_index,
                        }),
                        ReadMode::Default,
                    ),
                )
            }
            90..=94 => (
                KvInput::Delete,
                request(
                    Op::KvApply(KvCommand::Delete { key: key.clone() }),
                    ReadMode::Default,
                ),
            ),
            _ => match seen.last.get(&key).cloned() {
                Some((Some(expected), modify_index)) => (
                    KvInput::DeleteCas { expected },
                    request(
                        Op::KvApply(KvCommand::DeleteCas {
                            key: key.clone(),
                            modify_index,
                        }),
                        ReadMode::Default,
                    ),
                ),
                _ => (
                    KvInput::Get,
                    request(Op::KvGet { key: key.clone() }, ReadMode::Consistent),
                ),
            },
        };
        let digest = match &req.op {
            Op::KvApply(c) => Some(crate::checker::payload_digest(&EntryPayload::Command(
                Arc::new(Command::Kv(c.clone())),
            ))),
            _ => None,
        };
        let call = tern_io_sim::now().0;
        let answer = client.call(server, req, timeout).await;
        let ret_at = tern_io_sim::now().0;
        let acked_index = match (&answer, digest) {
            (Ok(Ok(reply)), Some(d)) if matches!(reply.body, ReplyBody::Applied(_)) => {
                Some((reply.index, d))
            }
            _ => None,
        };
        let reply_index = match &answer {
            Ok(Ok(reply)) => Some(reply.index),
            _ => None,
        };
        let outcome = classify(&input, answer);
        {
            let mut h = history.lock().unwrap();
            match &outcome {
                Outcome::Done(KvOutput::Ok, _)
                | Outcome::Done(KvOutput::Bool(true), _)
                | Outcome::Unknown => {
                    if let KvInput::Put { value } | KvInput::Cas { value, .. } = &input {
                        h.written.insert(value.clone());
                    }
                }
                _ => {}
            }
            match (&input, &outcome, reply_index) {
                (KvInput::Get, Outcome::Done(..), Some(i)) => {
                    seen.observe(&key, i);
                    seen.last_get_index.insert(key.clone(), i);
                }
                (KvInput::Put { .. }, Outcome::Done(..), Some(i)) => seen.observe(&key, i),
                _ => {}
            }
            match outcome {
                Outcome::Done(output, read) => {
                    if let Some(r) = read {
                        seen.last.insert(key.clone(), r);
                    }
                    if !matches!(input, KvInput::Get) {
                        h.acked_writes += 1;
                    }
                    h.acked.extend(acked_index);
                    h.ops.push(Operation {
                        client: index,
                        key,
                        input,
                        call,
                        ret: Some((ret_at, output)),
                    });
                }
                Outcome::Unknown => {
                    h.unknown += 1;
                    if let Some(d) = digest {
                        let at = h.ops.len();
                        h.unknown_writes.push((at, d));
                    }
                    h.ops.push(Operation {
                        client: index,
                        key,
                        input,
                        call,
                        ret: None,
                    });
                }
                Outcome::Refused => h.refused += 1,
            }
        }
        // Some think time, so that clients do not move in lock step; and
        // never loop without letting simulated time move.
        if roll.is_multiple_of(3) || ret_at == call {
            madsim::time::sleep(Duration::from_millis(rng.range(1, 20))).await;
        }
    }
}

/// A blocking `KvGet` or `KvList` (a list of the one key's prefix) through
/// `server`, in default or stale mode, with the index of an earlier reply
/// as `min_index` and a wait of 0.2-3 s, so that it often spans leader
/// changes and faults. Blocking reads do not enter the linearizability
/// history: in Consul they are not linearizable (a parked query is answered
/// later from the state of the server that parked it, which may have been
/// deposed meanwhile). What is checked instead, each rule holding by design:
///
/// - **The index moved unless the wait ran out.** An answer that arrives
///   before `max_wait` has passed (as the client measures it, from send to
///   answer) must have `index > min_index`: a server answers early only if
///   its index is already past `min_index` or when a change wakes the
///   query; otherwise it answers at `max_wait` plus jitter, and a follower
///   that re-sends a forwarded query to a new leader shrinks the wait so
///   that it still ends no earlier than `max_wait` after the first send.
/// - **Default-mode `KvGet` answers are monotonic per client.** Their
///   index is never below the highest index this client had already
///   received for the key (from any read, which returns committed state,
///   or an acknowledged put) before it sent the query. The query reaches
///   the leader, which serves or parks it only with a valid lease or after
///   a ReadIndex round, so its state then holds every committed entry;
///   the answer comes later from that same server's state, which only
///   grows; and a `KvGet` index (the entry's modify index, else the table
///   index, which no reap lowers) never goes back as state grows. A
///   deposed leader's answer may miss newer writes (which is why it is not
///   linearizable) but never goes behind what was committed before the
///   query was sent. So when the wait ran out too, `index >= min_index`.
/// - **Stale-mode `KvGet` answers are monotonic per server.** A follower
///   may lag another server, so an answer may go back relative to what the
///   client saw elsewhere; but one server's state only grows while it
///   runs, so an answer from a server that has not restarted since this
///   client's previous stale answer from it is not below that answer.
/// - **Values are real.** Every returned entry's value was written by a
///   write that may have been applied (checked at the end), and if the
///   checker saw the entry committed at the returned modify index, that
///   entry wrote this key and this value.
#[allow(clippy::too_many_arguments)]
async fn blocking_query(
    world: &World,
    client: &Client,
    server: NodeId,
    key: &str,
    index: u64,
    rng: &mut tern_core::rng::Rng,
    seen: &mut Seen,
    history: &SharedHistory,
) {
    let stale = rng.chance(1, 2);
    let list = rng.chance(1, 4);
    let starts = |id: NodeId| world.counters(id).map_or(0, |c| c.starts);
    let min_index = if list {
        seen.last_list_index.get(key).copied()
    } else if stale {
        seen.stale
            .get(&(server, key.to_string()))
            .map(|(i, _)| *i)
            .or_else(|| seen.last_get_index.get(key).copied())
    } else {
        seen.last_get_index.get(key).copied()
    }
    .unwrap_or(1)
    .max(1);
    let wait = Duration::from_millis(rng.range(200, 3001));
    let op = if list {
        Op::KvList { prefix: key.into() }
    } else {
        Op::KvGet { key: key.into() }
    };
    let mode = if stale {
        ReadMode::Stale
    } else {
        ReadMode::Default
    };
    let mut req = request(op, mode);
    req.blocking = Some(Blocking {
        min_index,
        max_wait: wait.into(),
    });
    let observed = seen.observed.get(key).copied().unwrap_or(0);
    let starts_before = starts(server);
    history.lock().unwrap().blocking.issued += 1;
    let call = tern_io_sim::now().0;
    // The wait, the server's jitter (up to wait/16), the hold timeout of a
    // forwarded query's round trip (2 s) and a margin.
    let answer = client
        .call(server, req, wait + wait / 16 + Duration::from_secs(3))
        .await;
    let elapsed = tern_io_sim::now().0.saturating_sub(call);
    let mut h = history.lock().unwrap();
    let Ok(Ok(reply)) = answer else {
        h.blocking.failed += 1;
        return;
    };
    let what = format!(
        "client {index}: blocking {} {} of {key} (min_index {min_index}, wait {wait:?}) via {server:?}",
        if stale { "stale" } else { "default" },
        if list { "list" } else { "get" },
    );
    let woken = elapsed < wait.as_nanos() as u64;
    if woken {
        h.blocking.woken += 1;
        if reply.index <= min_index {
            h.violation(format!(
                "{what} answered after {elapsed} ns, before its wait ran out, with index {} <= min_index",
                reply.index
            ));
        }
    } else {
        h.blocking.timed_out += 1;
    }
    let entries: Vec<tern_core::fsm::DirEntry> = match reply.body {
        ReplyBody::Entry(e) => e.into_iter().collect(),
        ReplyBody::Entries(l) => l,
        other => {
            h.violation(format!("{what}: unexpected answer {other:?}"));
            return;
        }
    };
    for e in &entries {
        let ok_key = if list {
            e.key.starts_with(key)
        } else {
            e.key == key
        };
        if !ok_key {
            h.violation(format!("{what}: returned key {:?}", e.key));
        }
        h.blocking_reads.push(BlockingRead {
            client: index,
            key: e.key.clone(),
            value: String::from_utf8_lossy(&e.value).into_owned(),
            modify_index: e.modify_index,
        });
    }
    if list {
        seen.last_list_index.insert(key.to_string(), reply.index);
        return;
    }
    if !stale && reply.index < observed {
        h.violation(format!(
            "{what}: index {} is older than index {observed} this client had already seen (default mode is monotonic per client)",
            reply.index
        ));
    }
    if stale {
        let starts_after = starts(server);
        let k = (server, key.to_string());
        if let Some((prev, prev_starts)) = seen.stale.get(&k).copied() {
            if prev_starts == starts_before && starts_before == starts_after && reply.index < prev {
                h.violation(format!(
                    "{what}: index {} went back from {prev}, the same server's earlier stale answer, without a restart",
                    reply.index
                ));
            }
        }
        seen.stale.insert(k, (reply.index, starts_after));
    }
    seen.observe(key, reply.index);
    seen.last_get_index.insert(key.to_string(), reply.index);
}

enum Outcome {
    Done(KvOutput, Option<(Option<String>, u64)>),
    Unknown,
    Refused,
}

fn classify(input: &KvInput, answer: Result<Response, tern_io_sim::CallError>) -> Outcome {
    let response = match answer {
        Ok(r) => r,
        Err(_) => return Outcome::Unknown,
    };
    match response {
        Ok(reply) => match (&input, &reply.body) {
            (KvInput::Get, body) => match value_of(body) {
                Some(read) => Outcome::Done(KvOutput::Value(read.0.clone()), Some(read)),
                None => Outcome::Unknown,
            },
            (KvInput::Put { .. }, ReplyBody::Applied(ApplyResult::Kv(_)))
            | (KvInput::Delete, ReplyBody::Applied(ApplyResult::Kv(_))) => {
                Outcome::Done(KvOutput::Ok, None)
            }
            (KvInput::Cas { .. }, ReplyBody::Applied(ApplyResult::Kv(ok)))
            | (KvInput::DeleteCas { .. }, ReplyBody::Applied(ApplyResult::Kv(ok))) => {
                Outcome::Done(KvOutput::Bool(*ok), None)
            }
            _ => Outcome::Unknown,
        },
        Err(e) if definitely_not_applied(&e) => Outcome::Refused,
        Err(_) => Outcome::Unknown,
    }
}

/// Ask the servers in turn, 100 ms apart, until `attempt` (given the server
/// and the attempt number, from 1) reports success or `within` passes.
pub async fn until_some_server<F, Fut>(world: &World, within: Duration, mut attempt: F) -> bool
where
    F: FnMut(NodeId, usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = madsim::time::Instant::now() + within;
    let mut n = 0usize;
    while madsim::time::Instant::now() < deadline {
        let servers = world.servers();
        let server = servers[n % servers.len()];
        n += 1;
        if attempt(server, n).await {
            return true;
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A consistent read of `key` through any server, retried until it succeeds
/// or `within` passes; recorded in the history.
pub async fn final_read(
    world: &World,
    client: &Client,
    key: &str,
    history: &SharedHistory,
    within: Duration,
) -> bool {
    until_some_server(world, within, |server, _| async move {
        let call = tern_io_sim::now().0;
        let answer = client
            .call(
                server,
                request(Op::KvGet { key: key.into() }, ReadMode::Consistent),
                Duration::from_secs(5),
            )
            .await;
        let Ok(Ok(reply)) = answer else {
            return false;
        };
        let Some((value, _)) = value_of(&reply.body) else {
            return false;
        };
        history.lock().unwrap().ops.push(Operation {
            client: u64::MAX,
            key: key.into(),
            input: KvInput::Get,
            call,
            ret: Some((tern_io_sim::now().0, KvOutput::Value(value))),
        });
        true
    })
    .await
}
