//! The gossip numbers (issue 8, deliverable 9): failure-detection time,
//! false failures and bytes per node for LAN pools of 5, 50 and 500 members
//! at 0%, 1% and 5% datagram loss, with memberlist's LAN defaults
//! (`GossipConfig::lan`: probe 1 s / timeout 500 ms, suspicion ×4, gossip
//! every 200 ms to 3, push-pull every 30 s).
//!
//! Everything runs in `tern_core::gossip::testnet` (an in-memory network on
//! a manual clock, 1 ms one-way latency, streams reliable as TCP): simulated
//! time and deterministic seeds, so the same arguments print the same table.
//! A benchmark, not a test: nothing asserts these numbers.
//!
//! ```text
//! gossip-bench [--sizes 5,50,500] [--loss 0,1,5] [--seeds S] [--kills K] [--steady-s T] [--markdown]
//! ```
//!
//! Per (size, loss, seed): every member joins through the first; once all
//! see all alive, `T` seconds at rest measure bytes sent per member per
//! second (every datagram and state exchange); then `K` times, one member
//! picked by the seed is killed (no leave), the time until every other
//! member has it `failed` is recorded, and it restarts with a new
//! generation and rejoins. Over the whole run, a false failure is a member
//! declared `failed` (by anyone) while it was running, counted once per
//! (member, version); a false suspicion likewise for `suspect`.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::process::ExitCode;

use tern_core::gossip::testnet::{lan_config, name, TestNet};
use tern_core::gossip::{GossipEvent, Status};
use tern_core::rng::Rng;
use tern_core::{Duration, Instant};

struct Args {
    sizes: Vec<usize>,
    loss_percent: Vec<u64>,
    seeds: u64,
    kills: usize,
    steady_s: u64,
    markdown: bool,
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Option<Vec<T>> {
    s.split(',').map(|x| x.trim().parse().ok()).collect()
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        sizes: vec![5, 50, 500],
        loss_percent: vec![0, 1, 5],
        seeds: 3,
        kills: 5,
        steady_s: 120,
        markdown: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => a.sizes = parse_list(&value()?).ok_or("bad --sizes")?,
            "--loss" => a.loss_percent = parse_list(&value()?).ok_or("bad --loss")?,
            "--seeds" => a.seeds = value()?.parse().map_err(|_| "bad --seeds")?,
            "--kills" => a.kills = value()?.parse().map_err(|_| "bad --kills")?,
            "--steady-s" => a.steady_s = value()?.parse().map_err(|_| "bad --steady-s")?,
            "--markdown" => a.markdown = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.sizes.iter().any(|&n| n < 3) {
        return Err("every size must be at least 3".into());
    }
    Ok(a)
}

/// What one (size, loss) cell gathered over its seeds.
#[derive(Default)]
struct Cell {
    /// Kill → failed at every other running member.
    detect: Vec<Duration>,
    /// Kills never detected everywhere within the limit.
    undetected: usize,
    false_failures: u64,
    false_suspicions: u64,
    /// Member-hours observed (members × simulated run time).
    member_hours: f64,
    /// Bytes sent per member per second at rest, one per seed.
    bytes_per_s: Vec<f64>,
    /// Seeds that did not converge after the joins within the limit.
    unconverged: usize,
    lost: u64,
    sim_s: f64,
}

const CONVERGE_LIMIT: Duration = Duration::from_secs(300);
const DETECT_LIMIT: Duration = Duration::from_secs(300);

/// Runs until every member sees every member alive, checking once a
/// simulated second (the check reads every member's whole table, which at
/// 500 members costs more than the gossip itself if done every 50 ms).
fn converge(net: &mut TestNet) -> bool {
    let end = net.now + CONVERGE_LIMIT;
    while net.now < end {
        net.run_for(Duration::from_secs(1));
        if net.converged_alive() {
            return true;
        }
    }
    false
}

fn run_seed(n: usize, loss_per_mille: u64, seed: u64, args: &Args, cell: &mut Cell) {
    let mut net = TestNet::lan(n, seed);
    net.loss_per_mille = loss_per_mille;
    let mut rng = Rng::new(seed ^ 0x0090_551b);
    // When each member was down: (member, from, until).
    let mut down: Vec<(usize, Instant, Instant)> = Vec::new();

    net.join_all();
    if !converge(&mut net) {
        cell.unconverged += 1;
    }

    // At rest.
    let before: u64 = (0..n).map(|i| net.bytes_sent(i)).sum();
    net.run_for(Duration::from_secs(args.steady_s));
    let after: u64 = (0..n).map(|i| net.bytes_sent(i)).sum();
    cell.bytes_per_s
        .push((after - before) as f64 / n as f64 / args.steady_s as f64);

    // Kills, each followed by a restart with a new generation.
    for k in 0..args.kills {
        let victim = 1 + rng.range(0, n as u64 - 1) as usize;
        let killed_at = net.now;
        net.kill(victim);
        match net.run_until(DETECT_LIMIT, |net| {
            net.all_agree(&[(victim, Status::Failed)])
        }) {
            Some(d) => cell.detect.push(d),
            None => cell.undetected += 1,
        }
        let mut config = lan_config(victim, seed);
        config.generation = 2 + k as u64;
        let via = if victim == 1 { 2 } else { 1 };
        down.push((victim, killed_at, net.now));
        net.restart(victim, config, via);
        if !converge(&mut net) {
            cell.unconverged += 1;
        }
    }

    // False failures and suspicions over the whole run.
    let was_down = |member: usize, at: Instant| {
        down.iter()
            .any(|&(m, from, until)| m == member && at >= from && at <= until)
    };
    let index_of = |member: &str| (0..n).find(|&i| name(i) == member);
    let mut failures = BTreeSet::new();
    let mut suspicions = BTreeSet::new();
    for i in 0..n {
        for (at, e) in net.events(i) {
            match e {
                GossipEvent::MemberFailed(m)
                    if index_of(&m.name).is_some_and(|j| !was_down(j, *at)) =>
                {
                    failures.insert((m.name.clone(), m.version));
                }
                // The version is not in the event: count once per member per second.
                GossipEvent::MemberSuspect { name, .. }
                    if index_of(name).is_some_and(|j| !was_down(j, *at)) =>
                {
                    suspicions.insert((name.clone(), at.0 / 1_000_000_000));
                }
                _ => {}
            }
        }
    }
    cell.false_failures += failures.len() as u64;
    cell.false_suspicions += suspicions.len() as u64;
    let sim_s = net.now.0 as f64 / 1e9;
    cell.member_hours += n as f64 * sim_s / 3600.0;
    cell.sim_s += sim_s;
    cell.lost += net.lost;
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gossip-bench: {e}");
            eprintln!("usage: gossip-bench [--sizes 5,50,500] [--loss 0,1,5] [--seeds S] [--kills K] [--steady-s T] [--markdown]");
            return ExitCode::from(2);
        }
    };
    println!(
        "# LAN defaults; seeds 0..{}, {} kills per seed, {} s at rest per seed; simulated time",
        args.seeds, args.kills, args.steady_s
    );
    if args.markdown {
        println!("| members | loss | detection median / p99 / max (s) | kills | false failures (per member-hour) | false suspicions | bytes/s per member | simulated | wall |");
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    for &n in &args.sizes {
        for &loss in &args.loss_percent {
            let wall = std::time::Instant::now();
            let mut cell = Cell::default();
            for seed in 0..args.seeds {
                run_seed(n, loss * 10, seed, &args, &mut cell);
            }
            cell.detect.sort();
            let (med, p99, max) = (
                percentile(&cell.detect, 0.5),
                percentile(&cell.detect, 0.99),
                cell.detect.last().copied(),
            );
            let bytes = cell.bytes_per_s.iter().sum::<f64>() / cell.bytes_per_s.len() as f64;
            let fp_rate = cell.false_failures as f64 / cell.member_hours;
            let wall_s = wall.elapsed().as_secs_f64();
            let kills = format!(
                "{}{}",
                cell.detect.len(),
                if cell.undetected > 0 {
                    format!(" (+{} undetected)", cell.undetected)
                } else {
                    String::new()
                }
            );
            if args.markdown {
                println!(
                    "| {n} | {loss}% | {} / {} / {} | {kills} | {} in {:.1} ({fp_rate:.3}) | {} | {bytes:.0} | {:.0} s | {wall_s:.0} s |",
                    secs(med),
                    secs(p99),
                    secs(max),
                    cell.false_failures,
                    cell.member_hours,
                    cell.false_suspicions,
                    cell.sim_s,
                );
            } else {
                println!(
                    "members={n} loss={loss}% detect_s median={} p99={} max={} kills={kills} \
                     false_failures={} member_hours={:.1} per_member_hour={fp_rate:.4} \
                     false_suspicions={} bytes_per_s_per_member={bytes:.0} datagrams_lost={} \
                     unconverged={} sim_s={:.0} wall_s={wall_s:.1}",
                    secs(med),
                    secs(p99),
                    secs(max),
                    cell.false_failures,
                    cell.member_hours,
                    cell.false_suspicions,
                    cell.lost,
                    cell.unconverged,
                    cell.sim_s,
                );
            }
        }
    }
    ExitCode::SUCCESS
}
