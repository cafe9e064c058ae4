//! The replicated state machine. This release: the KV table.

mod command;

pub use command::{ApplyResult, Command, KvCommand, KvEntry, KvWrite};

/// The replicated state (work in progress: interface only).
#[derive(Clone, Debug, Default)]
pub struct Fsm {}
