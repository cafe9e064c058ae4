//! The `tern` binary: `tern agent ...` runs a server (or, without `-server`,
//! a client agent); every other subcommand
//! is a client of the HTTP API (`tern kv`, `tern operator raft`, `tern members`,
//! `tern join`, `tern force-leave`, `tern leave`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("agent") => agent(&args[1..]),
        Some("bench") => ExitCode::from(tern::bench::main(&args[1..]).clamp(0, 255) as u8),
        Some("version") | Some("-version") | Some("--version") => {
            println!("Tern v{}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(cmd) if tern::cli::is_command(cmd) => {
            ExitCode::from(tern::cli::run(&args).clamp(0, 255) as u8)
        }
        Some(other) => {
            eprintln!("unknown command {other:?}; commands: agent, kv, operator, members, join, force-leave, leave, bench, version");
            ExitCode::from(1)
        }
        None => {
            eprintln!(
                "usage: tern <command> [args]\n\n\
                 commands: agent, kv, operator, members, join, force-leave, leave, bench, version\n\
                 start here: tern agent -dev"
            );
            ExitCode::from(1)
        }
    }
}

fn agent(args: &[String]) -> ExitCode {
    let (options, log_level) = match tern::config::load(args) {
        Ok(c) => (c.options, c.log_level),
        Err(e) if e.0.starts_with("usage: ") => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TERN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_level));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return ExitCode::from(1);
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
                return ExitCode::from(1);
            }
        };
        let http = match tokio::net::TcpListener::bind(options.http_addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("binding the HTTP address {}: {e}", options.http_addr);
                return ExitCode::from(1);
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
        ExitCode::SUCCESS
    })
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
