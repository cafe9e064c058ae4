//! Tern's core: every decision, no I/O.
#![forbid(unsafe_code)]

pub mod action;
pub mod clock;
pub mod config;
pub mod fsm;
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
