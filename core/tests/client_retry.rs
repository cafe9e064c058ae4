//! A client agent's retry rules (`core/src/rpc/retry.rs`), which the daemon's
//! client agent and the simulator's both run. Mirrors Consul's
//! agent/consul/rpc.go `canRetry` and client.go `RPC` (retry `No cluster
//! leader` always, EOF-like errors for reads only, from the first attempt
//! until `rpc_hold_timeout` plus a blocking query's wait), and
//! agent/router/manager_test.go (`TestManagerInternal_NotifyFailedServer`:
//! a failed first server goes to the end).

use tern_core::fsm::{KvCommand, KvWrite};
use tern_core::rng::Rng;
use tern_core::rpc::retry::{attempt_timeout, Attempt, Next, Retry, ServerOrder};
use tern_core::rpc::{Blocking, Op, ReadMode, Reply, ReplyBody, Request, RpcError};
use tern_core::{Datacenter, Duration, Instant};

const HOLD: Duration = Duration::from_secs(7);

fn read() -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::KvGet { key: "k".into() },
    }
}

fn write() -> Request {
    Request {
        op: Op::KvApply(KvCommand::Set(KvWrite {
            key: "k".into(),
            flags: 0,
            value: b"v".to_vec().into(),
        })),
        ..read()
    }
}

fn reply() -> Reply {
    Reply {
        index: 5,
        known_leader: true,
        last_contact_ms: 0,
        body: ReplyBody::Entry(None),
    }
}

fn at(ms: u64) -> Instant {
    Instant(Duration::from_millis(ms).as_nanos())
}

fn is_retry(next: &Next) -> bool {
    matches!(next, Next::Retry { .. })
}

#[test]
fn an_answer_ends_the_call_and_a_no_leader_is_retried_within_the_hold() {
    let mut rng = Rng::new(1);
    let r = Retry::new(&write(), HOLD, at(0));
    assert_eq!(
        r.after("s1", Attempt::Answered(Ok(reply())), at(10), &mut rng),
        Next::Done(Ok(reply()))
    );
    let next = r.after(
        "s1",
        Attempt::Answered(Err(RpcError::NoLeader)),
        at(10),
        &mut rng,
    );
    match next {
        Next::Retry { after, error } => {
            assert_eq!(error, RpcError::NoLeader);
            // Consul's stagger: in [0, hold / 16).
            assert!(after < HOLD.div(16), "stagger {after:?}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[test]
fn the_hold_counts_from_the_first_attempt_and_the_last_error_is_returned() {
    let mut rng = Rng::new(2);
    let r = Retry::new(&write(), HOLD, at(1_000));
    assert_eq!(r.deadline(), at(8_000));
    let no_leader = || Attempt::Answered(Err(RpcError::NoLeader));
    assert!(is_retry(&r.after("s1", no_leader(), at(7_999), &mut rng)));
    assert_eq!(
        r.after("s1", no_leader(), at(8_000), &mut rng),
        Next::Done(Err(RpcError::NoLeader))
    );
}

#[test]
fn a_blocking_query_may_take_its_wait_and_a_sixteenth_beyond_the_hold() {
    let mut rng = Rng::new(3);
    let mut q = read();
    q.blocking = Some(Blocking {
        min_index: 4,
        max_wait: Duration::from_secs(16),
    });
    let r = Retry::new(&q, HOLD, at(0));
    // 7 s + 16 s + 1 s.
    assert_eq!(r.deadline(), at(24_000));
    assert!(is_retry(&r.after(
        "s1",
        Attempt::Lost("eof".into()),
        at(23_999),
        &mut rng
    )));
    assert_eq!(
        attempt_timeout(&q),
        Duration::from_secs(60 + 16 + 1),
        "an attempt waits the client timeout plus the query's wait"
    );
    assert_eq!(attempt_timeout(&read()), Duration::from_secs(60));
}

#[test]
fn a_lost_connection_is_retried_for_reads_only() {
    let mut rng = Rng::new(4);
    let lost = || Attempt::Lost("connection reset".into());
    let r = Retry::new(&read(), HOLD, at(0));
    assert!(is_retry(&r.after("s1", lost(), at(5), &mut rng)));
    let w = Retry::new(&write(), HOLD, at(0));
    match w.after("s1", lost(), at(5), &mut rng) {
        Next::Done(Err(RpcError::Unknown(text))) => {
            assert_eq!(text, "rpc error making call to s1: connection reset")
        }
        other => panic!("a write whose connection broke may have applied: {other:?}"),
    }
}

#[test]
fn a_call_that_never_left_is_retried_for_writes_too() {
    let mut rng = Rng::new(5);
    let w = Retry::new(&write(), HOLD, at(0));
    assert!(is_retry(&w.after(
        "s1",
        Attempt::NotSent("connection refused".into()),
        at(5),
        &mut rng
    )));
}

#[test]
fn a_busy_or_not_ready_server_is_retried_and_nothing_else_is() {
    let mut rng = Rng::new(6);
    let w = Retry::new(&write(), HOLD, at(0));
    for e in [RpcError::Busy, RpcError::NotReadyForConsistentReads] {
        assert!(is_retry(&w.after(
            "s1",
            Attempt::Answered(Err(e)),
            at(5),
            &mut rng
        )));
    }
    for e in [
        RpcError::BadRequest("bad".into()),
        RpcError::TooLarge("big".into()),
        RpcError::Unknown("leadership lost while committing log".into()),
        RpcError::DiskFull,
        RpcError::NoPathToDatacenter,
        RpcError::Refused("Must provide node".into()),
    ] {
        assert_eq!(
            w.after("s1", Attempt::Answered(Err(e.clone())), at(5), &mut rng),
            Next::Done(Err(e))
        );
    }
    // A stuck server: the outcome is unknown, not retried, even for a read.
    let r = Retry::new(&read(), HOLD, at(0));
    match r.after(
        "s2",
        Attempt::TimedOut(Duration::from_secs(60)),
        at(60_000),
        &mut rng,
    ) {
        Next::Done(Err(RpcError::Unknown(text))) => {
            assert_eq!(text, "no answer from s2 within 60000 ms")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_a_server_to_blame_is_rotated_away() {
    assert!(!Attempt::Answered(Ok(reply())).server_failed());
    assert!(!Attempt::Answered(Err(RpcError::BadRequest("x".into()))).server_failed());
    assert!(!Attempt::Answered(Err(RpcError::Refused("Must provide node".into()))).server_failed());
    assert!(Attempt::Answered(Err(RpcError::NoLeader)).server_failed());
    assert!(Attempt::Lost("eof".into()).server_failed());
    assert!(Attempt::NotSent("refused".into()).server_failed());
}

#[test]
fn a_failed_first_server_goes_to_the_end_and_others_keep_their_place() {
    let mut rng = Rng::new(7);
    let mut order = ServerOrder::default();
    let eq = |a: &&str, b: &&str| a == b;
    assert!(order.refresh(&["a", "b", "c"], eq, &mut rng));
    let first = *order.first().unwrap();
    let before: Vec<&str> = order.servers().to_vec();
    // A failure reported for a server that is not first changes nothing
    // (another call already moved on).
    order.failed(&before[1], eq);
    assert_eq!(order.servers(), &before[..]);
    order.failed(&first, eq);
    let after = order.servers().to_vec();
    assert_eq!(after, vec![before[1], before[2], before[0]]);
    // The same list again: no change, order kept.
    assert!(!order.refresh(&["c", "b", "a"], eq, &mut rng));
    assert_eq!(order.servers(), &after[..]);
    // One gone, one new: survivors keep their order, the new one is last.
    let gone = after[1];
    let latest: Vec<&str> = ["a", "b", "c", "d"]
        .into_iter()
        .filter(|s| *s != gone)
        .collect();
    assert!(order.refresh(&latest, eq, &mut rng));
    assert_eq!(order.servers(), &[after[0], after[2], "d"][..]);
    // A single server is never rotated away from itself.
    let mut one = ServerOrder::default();
    one.refresh(&["x"], eq, &mut rng);
    one.failed(&"x", eq);
    assert_eq!(one.servers(), &["x"][..]);
}

#[test]
fn new_servers_are_shuffled_so_clients_spread_over_them() {
    let servers: Vec<u32> = (0..5).collect();
    let mut firsts = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let mut rng = Rng::new(seed);
        let mut order = ServerOrder::default();
        order.refresh(&servers, |a, b| a == b, &mut rng);
        let mut sorted = order.servers().to_vec();
        sorted.sort();
        assert_eq!(sorted, servers, "a shuffle keeps every server once");
        firsts.insert(*order.first().unwrap());
    }
    assert_eq!(firsts.len(), 5, "every server is some client's first");
}
