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
//! Durability is explicit. Every [`Action::Persist`] carries a
//! [`PersistId`]; the driver performs the writes in id order and reports
//! [`Input::Persisted`]`(id)` once they are durable, taking other inputs
//! meanwhile. A [`Action::Send`] that may only leave once a write is durable
//! (a vote, a follower's acknowledgement) names it in `after`; a leader
//! counts its own log toward commit only as far as it was reported durable.
//! The bookkeeping of writes in flight and actions held back is one pure
//! piece, the [`Outbox`], which every driver runs, so the simulator runs the
//! same interleavings as the daemon. A server's own snapshot is encoded by
//! the driver too: [`Action::BuildSnapshot`] carries a point-in-time view of
//! the state machine (O(1) to take), the driver encodes it off the agent task
//! and answers with [`Input::SnapshotBuilt`]. Once written, a snapshot's
//! bytes are the file's: the server keeps only its metadata, and when a
//! follower must be sent it asks for them with [`Action::LoadSnapshot`]
//! (answered by [`Input::SnapshotLoaded`]). Time is a value ([`Instant`],
//! nanoseconds since a driver-chosen epoch) and randomness comes from a seed
//! in [`Config`], so the same inputs always give the same outputs.
//!
//! # The driving loop
//!
//! ```
//! use tern_core::raft::Durable;
//! use tern_core::rpc::{Op, ReadMode, ReplyBody, Request};
//! use tern_core::fsm::{KvCommand, KvWrite};
//! use tern_core::{Action, Config, Datacenter, Duration, Input, Instant, NodeId, Outbox, RequestId, Server};
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
//!     op: Op::KvApply(KvCommand::Set(KvWrite { key: "hello".into(), flags: 0, value: b"world".into() })),
//! };
//! let mut pending = Some(put);
//! let mut answer = None;
//! let mut outbox = Outbox::new();
//! let mut disk: Durable = Durable::default();
//! while answer.is_none() {
//!     let mut ready = Vec::new();
//!     outbox.push(out.drain(..), &mut ready);
//!     // Hand queued writes to the disk; here it is instant, so the job is
//!     // durable at once (a real driver keeps taking inputs meanwhile).
//!     let mut persisted = None;
//!     if let Some(job) = outbox.start_job(&mut ready) {
//!         for write in &job {
//!             disk.apply(&write.op); // write, and fsync if `write.sync`
//!         }
//!         persisted = Some(outbox.job_done(&mut ready));
//!     }
//!     for action in ready {
//!         match action {
//!             Action::Persist { .. } => unreachable!("the outbox keeps writes"),
//!             Action::Send { .. } => { /* frame and send to the peer */ }
//!             Action::Respond { id, response } => answer = Some((id, response)),
//!             Action::Event(_) => { /* log, metrics */ }
//!             Action::BuildSnapshot { .. } => {
//!                 /* `view.encode()` on a background thread, then
//!                    `Input::SnapshotBuilt { meta, data }` */
//!             }
//!             Action::LoadSnapshot { .. } => {
//!                 /* read the snapshot file back on the same thread, then
//!                    `Input::SnapshotLoaded { meta, data }` */
//!             }
//!             Action::Discard(garbage) => {
//!                 /* free the log's dropped entries where no request
//!                    waits (the daemon: its snapshot thread) */
//!                 drop(garbage)
//!             }
//!         }
//!     }
//!     if let Some(id) = persisted {
//!         server.handle(now, Input::Persisted(id), &mut out);
//!         continue;
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
pub mod autopilot;
pub mod clock;
pub mod config;
pub mod fsm;
pub mod fuzz_cluster;
pub mod gossip;
pub mod ids;
pub mod local;
pub mod message;
pub mod outbox;
pub mod parked;
pub mod raft;
pub mod reconcile;
pub mod rng;
pub mod rpc;
pub mod serf_health;
pub mod server;
pub mod session_ttl;
pub mod testkit;
pub mod wire;

pub use action::{Action, Event, Input, PersistId, PersistOp};
pub use clock::{Clock, Duration, Instant, ManualClock};
pub use config::{Config, ConfigError};
pub use ids::{Datacenter, LogIndex, NodeId, NodeName, RequestId, Term};
pub use message::{Message, MessageBody};
pub use outbox::{Outbox, PersistWrite};
pub use server::Server;
