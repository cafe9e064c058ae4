//! Entries committed per second by a 3-server cluster driven in-process with
//! no I/O: the core's own cost (Raft, the KV state machine, routing).
//!
//! `cargo bench -p tern-core` prints, for 1 and 256 concurrent proposers,
//! entries/s (median of 5 runs) and the mean batch size of AppendEntries.
//! Each proposer has one write outstanding; when its answer arrives it
//! proposes the next. Messages are delivered in FIFO order with zero latency.
//!
//! Wall-clock time is what a benchmark measures, so it may read the OS clock.
#![allow(clippy::disallowed_methods)]

use std::time::Instant as WallInstant;

use tern_core::fsm::{KvCommand, KvWrite};
use tern_core::rpc::{Op, ReadMode, Request};
use tern_core::testkit::Cluster;
use tern_core::{Datacenter, Duration, RequestId};

fn put(i: u64) -> Request {
    Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: None,
        op: Op::KvApply(KvCommand::Set(KvWrite {
            key: format!("bench/{}", i % 1024),
            flags: 0,
            value: vec![b'x'; 256].into(),
        })),
    }
}

struct Outcome {
    entries_per_sec: f64,
    mean_batch: f64,
}

fn run(proposers: usize, total: u64) -> Outcome {
    let mut c = Cluster::with_voters(3);
    c.keep_events = false;
    c.keep_disks = false;
    let leader = c
        .run_until_leader(Duration::from_secs(5))
        .expect("a leader");
    let mut next = 0u64;
    let mut outstanding: Vec<RequestId> = Vec::new();
    for _ in 0..proposers {
        outstanding.push(c.request(leader, put(next)));
        next += 1;
    }
    let mut done = 0u64;
    let start = WallInstant::now();
    while done < total {
        c.deliver_all();
        let mut still = Vec::with_capacity(outstanding.len());
        for rid in outstanding.drain(..) {
            if let Some(r) = c.responses.remove(&(leader, rid)) {
                assert!(r.is_ok(), "bench write failed: {r:?}");
                done += 1;
                still.push(c.request(leader, put(next)));
                next += 1;
            } else {
                still.push(rid);
            }
        }
        outstanding = still;
    }
    let secs = start.elapsed().as_secs_f64();
    let (appends, entries) = c.append_stats();
    Outcome {
        entries_per_sec: done as f64 / secs,
        mean_batch: entries as f64 / appends.max(1) as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 20_000 } else { 200_000 };
    println!("tern-core commit benchmark: 3 voters in-process, no I/O, 256-byte values");
    println!(
        "{:>10} {:>14} {:>12}",
        "proposers", "entries/s", "mean batch"
    );
    for proposers in [1usize, 256] {
        let mut rates = Vec::new();
        let mut batch = 0.0;
        for _ in 0..5 {
            let o = run(proposers, total);
            rates.push(o.entries_per_sec);
            batch = o.mean_batch;
        }
        println!("{:>10} {:>14.0} {:>12.1}", proposers, median(rates), batch);
    }
}
