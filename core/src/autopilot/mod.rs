//! Autopilot: server health, non-voter promotion and dead-server cleanup
//! (Consul's `agent/consul/autopilot`, and hashicorp/raft-autopilot that
//! replaced it).
//!
//! Everything here is pure: the leader hands in what it knows (the Raft
//! configuration, each follower's replication progress, each server's gossip
//! status) and the time, and gets back health and decisions. The leader
//! (`server.rs`) samples health every `server_health_interval` (Consul's
//! `ServerHealthInterval`, 2 s) and decides every `autopilot_interval`
//! (Consul's `AutopilotInterval`, 10 s), proposing at most one membership
//! change at a time through Raft.
//!
//! - [`AutopilotConfig`]: Consul's knobs and defaults.
//! - [`HealthTracker`]: per-server health, `StableSince`, cluster health.
//! - [`promotions`], [`dead_servers`], [`keeps_quorum`]: the decisions.
//! - [`Autopilot`]: the leader's timers, its view of each server, and the
//!   one change to propose next.

mod config;
mod decide;
mod health;
mod leader;

pub use config::AutopilotConfig;
pub use decide::{dead_servers, keeps_quorum, promotions, Cleanup};
pub use health::{
    failure_tolerance, is_healthy, ClusterHealth, GossipStatus, HealthTracker, ServerHealth,
    ServerInfo, ServerStats,
};
pub use leader::{Autopilot, HealthReply, ServerHealthReply};

use crate::ids::NodeId;

/// What autopilot did or declined to do, for logs and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutopilotEvent {
    /// Proposed making this non-voter a voter.
    Promoting { id: NodeId },
    /// Proposed removing this dead server from the configuration.
    RemovingDeadServer { id: NodeId },
    /// Dead voters were found but removing them all would remove more than
    /// `(voters - 1) / 2`: none is removed (Consul logs "too many dead
    /// servers").
    TooManyDeadServers { dead: usize, voters: usize },
    /// Removing a dead voter would leave fewer voters than `min_quorum`.
    BelowMinQuorum {
        id: NodeId,
        voters: usize,
        min_quorum: u32,
    },
}

impl core::fmt::Display for AutopilotEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AutopilotEvent::Promoting { id } => write!(f, "Promoting server {id} to voter"),
            AutopilotEvent::RemovingDeadServer { id } => {
                write!(f, "Attempting removal of failed server node {id}")
            }
            AutopilotEvent::TooManyDeadServers { dead, voters } => write!(
                f,
                "Failed to remove dead servers: too many dead servers: {dead}/{voters}"
            ),
            AutopilotEvent::BelowMinQuorum {
                id,
                voters,
                min_quorum,
            } => write!(
                f,
                "will not remove server {id} as it would leave less voters ({}) than the minimum number allowed ({min_quorum})",
                voters.saturating_sub(1)
            ),
        }
    }
}
