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
