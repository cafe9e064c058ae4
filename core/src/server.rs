//! The server composition root: Raft, the state machine and request routing
//! behind one `handle`/`poll_timeout` pair.
//!
//! (Work in progress: the signatures below are the contract the drivers code
//! against; the bodies are being filled in.)

use crate::action::{Action, Input};
use crate::clock::Instant;
use crate::config::{Config, ConfigError};
use crate::fsm::Fsm;
use crate::ids::{LogIndex, NodeId, Term};
use crate::raft::{Durable, Entry, Membership, Role};

pub struct Server {
    _p: (),
}

impl Server {
    /// A server from its configuration and whatever it recovered from disk
    /// (`Durable::default()` for a new one).
    pub fn new(config: Config, durable: Durable, now: Instant) -> Result<Server, ConfigError> {
        let _ = (config, durable, now);
        todo!()
    }
    pub fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Action>) {
        let _ = (now, input, out);
        todo!()
    }
    /// When the driver must call `handle(now, Input::Tick, ..)` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    pub fn id(&self) -> NodeId {
        todo!()
    }
    pub fn role(&self) -> Role {
        todo!()
    }
    pub fn term(&self) -> Term {
        todo!()
    }
    pub fn leader(&self) -> Option<NodeId> {
        todo!()
    }
    pub fn commit_index(&self) -> LogIndex {
        todo!()
    }
    pub fn last_applied(&self) -> LogIndex {
        todo!()
    }
    pub fn last_log_index(&self) -> LogIndex {
        todo!()
    }
    /// The entry at `index`, if it is in the log (not compacted away).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let _ = index;
        todo!()
    }
    pub fn membership(&self) -> &Membership {
        todo!()
    }
    /// Voters only, as Consul's `numPeers`.
    pub fn num_peers(&self) -> usize {
        todo!()
    }
    pub fn fsm(&self) -> &Fsm {
        todo!()
    }
}
