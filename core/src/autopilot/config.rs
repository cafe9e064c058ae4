//! Autopilot's configuration: Consul's `autopilot { ... }` stanza and the
//! body of `/v1/operator/autopilot/configuration`.

use serde::{Deserialize, Serialize};

use crate::clock::Duration;
use crate::config::ConfigError;

/// Consul's `AutopilotConfiguration` (api/operator_autopilot.go), with its
/// defaults (`NewAutopilotConfiguration`). The three enterprise-only fields
/// are carried with their zero values because Consul's JSON still shows them;
/// nothing here acts on them.
///
/// It is replicated (`Command::AutopilotSet`, the snapshot's autopilot
/// table), so its encoding is frozen: a new field means a new command and a
/// new snapshot version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AutopilotConfig {
    /// Remove servers that are failed in gossip (or absent from it) from the
    /// Raft configuration, a minority at a time.
    pub cleanup_dead_servers: bool,
    /// A server that has not been in contact with the leader for longer is
    /// unhealthy.
    pub last_contact_threshold: Duration,
    /// A server more entries behind the leader than this is unhealthy.
    pub max_trailing_logs: u64,
    /// Dead-server cleanup never leaves fewer voters than this.
    pub min_quorum: u32,
    /// A non-voter is promoted once it has been healthy this long.
    pub server_stabilization_time: Duration,
    /// Enterprise-only (redundancy zones): carried, not acted on.
    pub redundancy_zone_tag: String,
    /// Enterprise-only (upgrade migration): carried, not acted on.
    pub disable_upgrade_migration: bool,
    /// Enterprise-only (upgrade migration): carried, not acted on.
    pub upgrade_version_tag: String,
}

impl Default for AutopilotConfig {
    fn default() -> AutopilotConfig {
        AutopilotConfig {
            cleanup_dead_servers: true,
            last_contact_threshold: Duration::from_millis(200),
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time: Duration::from_secs(10),
            redundancy_zone_tag: String::new(),
            disable_upgrade_migration: false,
            upgrade_version_tag: String::new(),
        }
    }
}

/// Longest `last_contact_threshold` or `server_stabilization_time` taken: a
/// day. Longer ones are surely typos, and would switch autopilot off.
pub const AUTOPILOT_DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

impl AutopilotConfig {
    /// Check every knob; the error names the first bad key as the agent
    /// configuration spells it (`autopilot.<key>`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn err(key: &'static str, message: &str) -> Result<(), ConfigError> {
            Err(ConfigError {
                key,
                message: message.to_string(),
            })
        }
        // A zero threshold would mark every follower unhealthy forever, so
        // no non-voter could ever be promoted.
        if self.last_contact_threshold.as_nanos() == 0 {
            return err(
                "autopilot.last_contact_threshold",
                "must be greater than zero",
            );
        }
        if self.last_contact_threshold > AUTOPILOT_DURATION_MAX {
            return err("autopilot.last_contact_threshold", "must be at most 24h");
        }
        if self.server_stabilization_time > AUTOPILOT_DURATION_MAX {
            return err("autopilot.server_stabilization_time", "must be at most 24h");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults of Consul's `NewAutopilotConfiguration`
    /// (api/operator_autopilot.go) and agent/config/default.go.
    #[test]
    fn defaults_are_consuls() {
        let c = AutopilotConfig::default();
        assert!(c.cleanup_dead_servers);
        assert_eq!(c.last_contact_threshold, Duration::from_millis(200));
        assert_eq!(c.max_trailing_logs, 250);
        assert_eq!(c.min_quorum, 0);
        assert_eq!(c.server_stabilization_time, Duration::from_secs(10));
        assert_eq!(c.redundancy_zone_tag, "");
        assert!(!c.disable_upgrade_migration);
        assert_eq!(c.upgrade_version_tag, "");
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = AutopilotConfig {
            last_contact_threshold: Duration::ZERO,
            ..AutopilotConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "autopilot.last_contact_threshold: must be greater than zero"
        );
        c.last_contact_threshold = Duration::from_secs(24 * 3600 + 1);
        assert_eq!(
            c.validate().unwrap_err().key,
            "autopilot.last_contact_threshold"
        );
        let c = AutopilotConfig {
            server_stabilization_time: Duration::from_secs(24 * 3600 + 1),
            ..AutopilotConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().key,
            "autopilot.server_stabilization_time"
        );
        // Zero stabilization is allowed: promote as soon as healthy.
        let c = AutopilotConfig {
            server_stabilization_time: Duration::ZERO,
            ..AutopilotConfig::default()
        };
        c.validate().unwrap();
    }
}
