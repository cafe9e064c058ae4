//! Tern's core: every decision of a Tern server, and no I/O.
//!
//! The core never reads a clock, touches a socket or a file, or asks the OS
//! for randomness. A driver (tokio in `io-tokio`, madsim in `io-sim`, the
//! in-memory [`testkit`] in tests) owns all of that and talks to a
//! [`Server`] through one pair of calls:
//!
//! - [`Server::handle`]`(now, input, &mut out)`: something happened (a timer
//!   fired, a peer's message arrived, a client asked something); the server
//!   appends what to do to `out`.
//! - [`Server::poll_timeout`]`()`: when to call `handle` with
//!   [`Input::Tick`] next, if nothing else happens first.
//!
//! The driver executes the [`Action`]s **strictly in order**. A
//! [`Action::Persist`] must be written (and, if `sync`, fsynced) before the
//! driver executes the next action: that is how "acknowledge only what is
//! durable" is kept — a reply or message that depends on a write always comes
//! after it in the list. Time is a value ([`Instant`], nanoseconds since a
//! driver-chosen epoch) and randomness comes from a seed in [`Config`], so the
//! same inputs always give the same outputs.
//!
//! # The driving loop
//!
//! ```
//! use tern_core::raft::Durable;
//! use tern_core::rpc::{Op, ReadMode, ReplyBody, Request};
//! use tern_core::fsm::{KvCommand, KvWrite};
//! use tern_core::{Action, Config, Datacenter, Duration, Input, Instant, NodeId, RequestId, Server};
//!
//! // A one-server datacenter that bootstraps itself.
//! let mut config = Config::new(NodeId(1), "s1", "dc1", "127.0.0.1:8300");
//! config.bootstrap = Some(tern_core::testkit::membership_of(&config));
//! let mut now = Instant(0);
//! let mut server = Server::new(config, Durable::default(), now).unwrap();
//! let mut out = Vec::new();
//! server.start(&mut out);
//!
//! // A client's write, then the loop every driver runs.
//! let put = Request {
//!     datacenter: Datacenter("dc1".into()),
//!     read_mode: ReadMode::Default,
//!     blocking: None,
//!     op: Op::KvApply(KvCommand::Set(KvWrite { key: "hello".into(), flags: 0, value: b"world".to_vec() })),
//! };
//! let mut pending = Some(put);
//! let mut answer = None;
//! while answer.is_none() {
//!     for action in out.drain(..) {
//!         match action {
//!             Action::Persist { op: _, sync: _ } => { /* write, fsync if sync, before going on */ }
//!             Action::Send { address: _, message: _ } => { /* frame and send to the peer */ }
//!             Action::Respond { id, response } => answer = Some((id, response)),
//!             Action::Event(_) => { /* log, metrics */ }
//!         }
//!     }
//!     // Sleep until the next deadline (or an input arrives), then tell the core.
//!     now = server.poll_timeout().unwrap_or(now + Duration::from_millis(10)).max(now);
//!     server.handle(now, Input::Tick, &mut out);
//!     if server.raft().committed_in_term() {
//!         if let Some(request) = pending.take() {
//!             server.handle(now, Input::Request { id: RequestId(1), request }, &mut out);
//!         }
//!     }
//! }
//! let (id, response) = answer.unwrap();
//! assert_eq!(id, RequestId(1));
//! assert!(matches!(response.unwrap().body, ReplyBody::Applied(_)));
//! ```
#![forbid(unsafe_code)]

pub mod action;
pub mod clock;
pub mod config;
pub mod fsm;
pub mod fuzz_cluster;
pub mod ids;
pub mod message;
pub mod raft;
pub mod rng;
pub mod rpc;
pub mod server;
pub mod testkit;
pub mod wire;

pub use action::{Action, Event, Input, PersistOp};
pub use clock::{Clock, Duration, Instant, ManualClock};
pub use config::{Config, ConfigError};
pub use ids::{Datacenter, LogIndex, NodeId, NodeName, RequestId, Term};
pub use message::{Message, MessageBody};
pub use server::Server;
