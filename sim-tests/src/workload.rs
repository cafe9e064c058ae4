//! Simulated clients and the history they record for the linearizability check.
//!
//! Each client loops: pick a server and an operation, call, record. Every
//! write writes a value unique in the whole run, so CAS on a modify index can
//! be checked as CAS on the value that was read with that index (see
//! `linearizability`). A request that failed before it was ever proposed
//! (`No cluster leader`, `Busy`, ...) is left out of the history; one that
//! timed out or lost its leader mid-commit is recorded with an unknown outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_core::fsm::{ApplyResult, Command, KvCommand, KvWrite};
use tern_core::raft::EntryPayload;
use tern_core::rpc::{Op, ReadMode, ReplyBody, Request, Response, RpcError};
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
            value: value.as_bytes().to_vec(),
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
}

pub type SharedHistory = Arc<Mutex<History>>;

/// One client's view: the last value and modify index it read per key.
#[derive(Default)]
struct Seen {
    last: BTreeMap<String, (Option<String>, u64)>,
}

fn value_of(reply_body: &ReplyBody) -> Option<(Option<String>, u64)> {
    match reply_body {
        ReplyBody::Kv(Some(e)) => Some((
            Some(String::from_utf8_lossy(&e.value).into_owned()),
            e.modify_index,
        )),
        ReplyBody::Kv(None) => Some((None, 0)),
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
                                value: value.as_bytes().to_vec(),
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
        let outcome = classify(&input, answer);
        {
            let mut h = history.lock().unwrap();
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
