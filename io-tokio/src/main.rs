//! The `tern` binary: `tern agent ...` runs a server (or, without `-server`,
//! a client agent); every other command is a client of the HTTP API (`tern
//! kv`, `tern operator raft`, `tern members`, ...) or `tern bench` and `tern
//! version`. `tern --help` lists them; `tern <command> -h` explains one.

/// mimalloc, built without transparent huge pages (which doubled its p99
/// while the heap grew), unless built with `--no-default-features`: with a
/// snapshot every second about a quarter more writes/s than the system
/// allocator on this project's bench VM, half the p99.9, and no worse p99
/// anywhere it was measured (README, "Snapshots and a big state").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns freed memory to the OS (`madvise`) a second after it
/// was freed, in one batch, on whichever thread next allocates past a full
/// page: under load, an agent worker serving requests. With a snapshot
/// every second that batch is the previous snapshot's bytes and the log
/// entries it compacted, tens of MB, and the worker spent 7-10 ms in the
/// kernel unmapping them while every request on it waited
/// (`bench/snapshot-stall.sh` on tmpfs, traced with `perf`: single writes
/// 3-4x the p99, once a second). A thread of its own returns it sooner
/// instead, every [`PURGE_EVERY`], so the batch is small and no request
/// waits on it; the workers then find nothing due.
#[cfg(feature = "mimalloc")]
mod purge {
    use std::time::Duration;

    /// Well under mimalloc's own delay (1 s), so that its deadline is
    /// never reached on another thread.
    pub const PURGE_EVERY: Duration = Duration::from_millis(250);

    // mimalloc's C API, linked in with the allocator (libmimalloc-sys).
    extern "C" {
        fn mi_collect(force: bool);
    }

    /// Return every free range to the OS now, whatever its age.
    pub fn collect() {
        // SAFETY: a plain call into the allocator, which is thread-safe.
        unsafe { mi_collect(true) };
    }

    pub fn spawn() {
        let spawned = std::thread::Builder::new()
            .name("tern-purge".into())
            .spawn(|| {
                // mimalloc collects only for a thread that has allocated.
                std::hint::black_box(Box::new(0u64));
                loop {
                    std::thread::sleep(PURGE_EVERY);
                    collect();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no memory purge thread ({e}): mimalloc purges on its own");
        }
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        /// This process's resident bytes (`/proc/self/statm`, 4 KiB pages).
        fn resident() -> u64 {
            let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
            let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
            pages * 4096
        }

        /// Freed memory stays resident until mimalloc purges it (a second
        /// later by itself); `collect` returns it at once. Fails if the
        /// binding does nothing (a renamed symbol, purging turned off).
        #[test]
        fn a_purge_returns_freed_memory_at_once() {
            const MIB: u64 = 1 << 20;
            let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8 | 1; MIB as usize]).collect();
            assert!(blocks.iter().all(|b| b[4096] != 0));
            let used = resident();
            drop(blocks);
            let freed = resident();
            assert!(
                freed + 32 * MIB > used,
                "mimalloc kept freed memory resident: {} MiB before the free, {} MiB after",
                used / MIB,
                freed / MIB
            );
            super::collect();
            let purged = resident();
            assert!(
                purged + 48 * MIB <= freed,
                "a purge returned {} MiB of 64 freed",
                freed.saturating_sub(purged) / MIB
            );
        }
    }
}

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match tern::cli::agent_args(&args) {
        Some(agent_args) => agent(agent_args),
        None => tern::cli::run(&args),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn agent(args: &[String]) -> i32 {
    // An unknown flag: Go's error line, then the agent's help.
    if let Err(text) = tern::cli::check_agent_flags(args) {
        let _ = std::io::stderr().write_all(text.as_bytes());
        return 1;
    }
    let config = match tern::config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if let Err(e) = tern::logging::init(&config.log_level, &config.logging) {
        eprintln!("{e}");
        return 1;
    }
    // Consul config keys Tern does not implement: one warning each.
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let options = config.options;
    let https_addr = config.https_addr;
    #[cfg(feature = "mimalloc")]
    purge::spawn();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        // A client agent routes to the servers its LAN gossip pool reports.
        let started = if options.server {
            tern::agent::start(options.clone()).await
        } else {
            tern::agent::start_gossip_client(options.clone()).await
        };
        let agent = match started {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("{e}");
                return 1;
            }
        };
        let http = match tokio::net::TcpListener::bind(options.http_addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("binding the HTTP address {}: {e}", options.http_addr);
                return 1;
            }
        };
        if options.server {
            tracing::info!(
                "Tern agent running: node {} ({}), datacenter {}, HTTP on {}, server port on {}",
                options.core.node_name,
                options.core.node_id,
                options.core.datacenter,
                options.http_addr,
                options.server_addr
            );
        } else {
            tracing::info!(
                "Tern client agent running: node {} ({}), datacenter {}, HTTP on {}, LAN gossip on {}",
                options.core.node_name,
                options.core.node_id,
                options.core.datacenter,
                options.http_addr,
                options.lan.bind
            );
        }
        let https = match (https_addr, agent.tls.clone()) {
            (None, _) => None,
            (Some(addr), tls) => {
                let Some(tls) = tls else {
                    tracing::error!("ports.https is set but there is no TLS certificate");
                    return 1;
                };
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => Some((l, tls, addr)),
                    Err(e) => {
                        tracing::error!("binding the HTTPS address {addr}: {e}");
                        return 1;
                    }
                }
            }
        };
        if let Some((listener, tls, addr)) = https {
            tracing::info!("HTTPS API on {addr}");
            let handle = agent.handle.clone();
            tokio::spawn(async move {
                if let Err(e) = tern::http::https::serve_https_until_left(listener, tls, handle).await
                {
                    tracing::error!("HTTPS server stopped: {e}");
                }
            });
        }
        spawn_reload_on_sighup(agent.tls.clone());
        let handle = agent.handle.clone();
        let http = tokio::spawn(async move {
            if let Err(e) = tern::http::serve_until_left(http, handle).await {
                tracing::error!("HTTP server stopped: {e}");
            }
        });
        // A signal, `tern leave` or `PUT /v1/agent/leave`: each hands
        // leadership over and fails fast for `leave_drain_time`, so clients
        // move to other servers; then the process exits 0.
        tokio::select! {
            _ = wait_for_signal() => {
                tracing::info!("caught a signal: leaving gracefully");
                agent.handle.leave().await;
            }
            _ = agent.handle.left() => {}
        }
        // Let the answers in flight go out (the leave request's own), but
        // not wait on a blocking query's whole wait.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), http).await;
        tracing::info!("graceful leave complete");
        0
    })
}

/// SIGHUP reads the TLS certificate, key and CA files again (Consul
/// reloads them on SIGHUP too). Open connections keep the certificates
/// they were made with; new ones get the new files. A file that no longer
/// loads leaves the old ones in force, with one error line.
fn spawn_reload_on_sighup(tls: Option<std::sync::Arc<tern::tls::Tls>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &tls {
                None => tracing::info!("caught SIGHUP: no TLS files to reload"),
                Some(t) => match t.reload() {
                    Ok(()) => tracing::info!("caught SIGHUP: reloaded the TLS certificates"),
                    Err(e) => tracing::error!(
                        "caught SIGHUP: TLS certificates not reloaded, the old ones stay in force: {e}"
                    ),
                },
            }
        }
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
