//! What a server's own snapshot costs its snapshot thread: encoding a
//! point-in-time view of a KV state (`FsmView::encode`) of 64k and 250k
//! keys of 256 B, keys named as `tern bench kv` names them, written in the
//! order its 64 clients write them (so the walk in key order does not
//! visit the rows in the order they were allocated).
//!
//! `cargo bench -p tern-core --bench snapshot_encode` prints the median of
//! 7 encodes: milliseconds per encode and nanoseconds per key.
//!
//! Wall-clock time is what a benchmark measures, so it may read the OS clock.
#![allow(clippy::disallowed_methods)]

use std::time::Instant as WallInstant;

use tern_core::fsm::{Command, Fsm, KvCommand, KvWrite};

fn state(keys: u64) -> Fsm {
    let mut fsm = Fsm::new();
    for i in 0..keys {
        let write = KvWrite {
            key: format!("bench/{}/{}", i % 64, i / 64),
            flags: 0,
            value: vec![(i % 251) as u8; 256].into(),
        };
        fsm.apply(i + 1, &Command::Kv(KvCommand::Set(write)));
    }
    fsm
}

fn main() {
    for keys in [64_000u64, 250_000] {
        let fsm = state(keys);
        let view = fsm.view();
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..7 {
            let start = WallInstant::now();
            bytes = view.encode().len();
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "keys={keys} snapshot_bytes={bytes} encode_ms={:.1} ns_per_key={:.0}",
            median * 1e3,
            median * 1e9 / keys as f64
        );
    }
}
