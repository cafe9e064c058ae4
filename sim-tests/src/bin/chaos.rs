//! Seeded chaos runs of Tern's core on madsim.
//!
//! ```text
//! chaos --seed N                 replay one seed
//! chaos --seeds K [--seed N]     sweep seeds N..N+K (N defaults to 0)
//! chaos --bug NAME               plant a bug: vote-twice, ack-before-fsync, stale-read, commit-old-term,
//!                                 hint-blocks-elections, hint-skips-lease, send-before-persisted, long-lease,
//!                                 and the rest `--help` lists
//! chaos --scenario NAME          play a named scenario instead of random faults
//! chaos --servers 5 --safety-s S override the seed's cluster size / fault phase length
//! chaos -v                       print the options, the fault log, the counts (client operations,
//!                                blocking queries issued/woken/timed out) and failures of every seed
//! ```
//! The last line for each seed is exactly
//! `seed=N result=ok|FAIL trace=<16 hex> sim_s=<simulated seconds> wall_ms=<ms>`.
#![allow(clippy::disallowed_methods)]

use std::process::ExitCode;

use sim_tests::{run, Bug, Options, Scenario};

struct Args {
    seed: u64,
    seeds: u64,
    bug: Option<Bug>,
    scenario: Option<Scenario>,
    servers: Option<usize>,
    safety_s: Option<u64>,
    verbose: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("chaos: {msg}");
    eprintln!(
        "usage: chaos [--seed N] [--seeds K] [--bug {}] [--scenario {}] [--servers N] [--safety-s S] [-v]",
        Bug::ALL.map(Bug::name).join("|"),
        Scenario::ALL.map(Scenario::name).join("|")
    );
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        seed: 0,
        seeds: 1,
        bug: None,
        scenario: None,
        servers: None,
        safety_s: None,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--seed" => {
                a.seed = value("--seed")
                    .parse()
                    .unwrap_or_else(|_| usage("--seed takes a number"))
            }
            "--seeds" => {
                a.seeds = value("--seeds")
                    .parse()
                    .unwrap_or_else(|_| usage("--seeds takes a number"))
            }
            "--bug" => {
                let v = value("--bug");
                a.bug =
                    Some(Bug::parse(&v).unwrap_or_else(|| usage(&format!("unknown bug {v:?}"))));
            }
            "--scenario" => {
                let v = value("--scenario");
                a.scenario = Some(
                    Scenario::parse(&v)
                        .unwrap_or_else(|| usage(&format!("unknown scenario {v:?}"))),
                );
            }
            "--servers" => {
                a.servers = Some(
                    value("--servers")
                        .parse()
                        .unwrap_or_else(|_| usage("--servers takes a number")),
                )
            }
            "--safety-s" => {
                a.safety_s = Some(
                    value("--safety-s")
                        .parse()
                        .unwrap_or_else(|_| usage("--safety-s takes a number")),
                )
            }
            "-v" | "--verbose" => a.verbose = true,
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    a
}

fn main() -> ExitCode {
    let args = parse();
    let mut failed = 0u64;
    let mut sim_total = 0.0;
    let mut wall_total = 0u128;
    let mut ops: Vec<usize> = Vec::new();
    for seed in args.seed..args.seed + args.seeds {
        let mut opts = Options::from_seed(seed);
        opts.bug = args.bug;
        if let Some(n) = args.servers {
            opts.servers = n;
        }
        if let Some(s) = args.safety_s {
            opts.safety_s = s;
        }
        if args.verbose || args.seeds == 1 {
            println!("seed={seed} options: {opts}");
        }
        let out = run(opts, args.scenario);
        sim_total += out.sim_s;
        ops.push(out.ops);
        wall_total += out.wall_ms;
        if args.verbose {
            for f in &out.faults {
                println!("  fault {f}");
            }
            println!(
                "  ops={} (history={} blocking={}: woken={} timed_out={} failed={}) acked_writes={} (verified committed: {}) unknown={} (never proposed: {}) max_commit={} tombstone_reaps={} autopilot_removals={} (lost quorum through changes too recent to know: {})",
                out.ops,
                out.history_ops,
                out.blocking.issued,
                out.blocking.woken,
                out.blocking.timed_out,
                out.blocking.failed,
                out.acked_writes,
                out.acked_verified,
                out.unknown,
                out.never_proposed,
                out.max_commit,
                out.tombstone_reaps,
                out.autopilot_removals,
                out.autopilot_excused
            );
        }
        if !out.ok {
            failed += 1;
            for f in &out.failures {
                println!("  FAILURE: {f}");
            }
            if args.verbose {
                for st in &out.final_states {
                    println!("  state {st}");
                }
            }
            println!("  replay: {}", out.replay_command(args.bug, args.scenario));
        }
        println!("{}", out.line());
    }
    if args.seeds > 1 {
        let speed = if wall_total > 0 {
            sim_total / (wall_total as f64 / 1000.0)
        } else {
            0.0
        };
        ops.sort_unstable();
        println!(
            "{} seeds, {} failed; median ops/seed {}; {:.0} simulated s in {:.1} wall s ({:.0}x real time)",
            args.seeds,
            failed,
            ops[ops.len() / 2],
            sim_total,
            wall_total as f64 / 1000.0,
            speed
        );
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
