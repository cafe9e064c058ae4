//! The `tern` binary's library: the core on tokio, real sockets and a real disk.
//!
//! `agent` owns one `tern_core::Server` in one task and drives it with real
//! timers, the server port (`net`) and the data dir (`storage`); `http` is the
//! Consul-compatible HTTP API on top of an [`agent::AgentHandle`]; `config`
//! turns flags and Consul-style config files into [`agent::AgentOptions`];
//! `cli` holds the command line: every command's help and the client
//! commands (`kv`, `operator`, `members`, `leave`, `version`); `logging` sets
//! up the agent's logs (JSON, a rotating file); `metrics` holds what
//! `/v1/agent/metrics` serves; `version` is the one source
//! of the versions the binary reports;
//! `client_rpc` is a client agent's way to the servers (`agent::start_client`);
//! `tls` holds the server port's TLS settings and rustls configurations;
//! `gossip` runs a core gossip pool on UDP and TCP sockets; `keyring` holds
//! gossip encryption's keys and files; `connlimit` the per-client connection
//! limits of the server port and the HTTP API.

pub mod agent;
pub mod bench;
pub mod bench_tls;
pub mod cli;
pub mod client_rpc;
pub mod config;
pub mod connlimit;
pub mod gossip;
pub mod http;
pub mod keyring;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod snapshot;
pub mod storage;
pub mod tls;
pub mod version;
