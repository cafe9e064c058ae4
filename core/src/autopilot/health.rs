//! Server health as Consul's autopilot computes it (agent/consul/autopilot,
//! `isServerHealthy` and `updateClusterHealth`; raft-autopilot `state.go`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::{Duration, Instant};
use crate::ids::{LogIndex, NodeId, NodeName, Term};

use super::AutopilotConfig;

/// A server's status in the LAN gossip pool, as Serf reports it. Autopilot
/// takes it as an input; `None` means the server is not in the pool at all.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GossipStatus {
    Alive,
    Leaving,
    Left,
    Failed,
    None,
}

impl GossipStatus {
    /// Serf's spelling, as `SerfStatus` in `/v1/operator/autopilot/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            GossipStatus::Alive => "alive",
            GossipStatus::Leaving => "leaving",
            GossipStatus::Left => "left",
            GossipStatus::Failed => "failed",
            GossipStatus::None => "none",
        }
    }
}

/// What the leader knows of one server's log (Consul's `Status.RaftStats`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ServerStats {
    /// Time since the server last answered the leader; zero for the leader
    /// itself; `None` if it never answered in this term (Consul: "never").
    pub last_contact: Option<Duration>,
    pub last_term: Term,
    pub last_index: LogIndex,
}

/// One server of the Raft configuration, as handed to [`HealthTracker::update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub id: NodeId,
    pub name: NodeName,
    pub address: String,
    pub voter: bool,
    pub leader: bool,
    pub gossip: GossipStatus,
    pub stats: ServerStats,
}

/// One server's health (Consul's `ServerHealth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHealth {
    pub id: NodeId,
    pub name: NodeName,
    pub address: String,
    pub gossip: GossipStatus,
    pub leader: bool,
    pub voter: bool,
    pub last_contact: Option<Duration>,
    pub last_term: Term,
    pub last_index: LogIndex,
    pub healthy: bool,
    /// When `healthy` last changed (or the server was first seen).
    pub stable_since: Instant,
}

impl ServerHealth {
    /// Healthy for at least the stabilization time (Consul's `IsStable`).
    pub fn is_stable(&self, now: Instant, config: &AutopilotConfig) -> bool {
        self.healthy && now.saturating_since(self.stable_since) >= config.server_stabilization_time
    }
}

/// The cluster's health (Consul's `OperatorHealthReply`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterHealth {
    /// Every server is healthy.
    pub healthy: bool,
    /// Healthy voters beyond a quorum: how many could fail without an outage.
    pub failure_tolerance: usize,
    /// Voters beyond a quorum: the failure tolerance if every voter were
    /// healthy (raft-autopilot's `OptimisticFailureTolerance`).
    pub optimistic_failure_tolerance: usize,
    /// By id.
    pub servers: Vec<ServerHealth>,
}

/// Consul's `isServerHealthy`: alive in gossip, in contact with the leader
/// within `last_contact_threshold`, its last log entry from the leader's
/// last log term, and (once the leader's log is longer than
/// `max_trailing_logs`) at most that many entries behind.
pub fn is_healthy(
    config: &AutopilotConfig,
    gossip: GossipStatus,
    stats: &ServerStats,
    leader_last_term: Term,
    leader_last_index: LogIndex,
) -> bool {
    if gossip != GossipStatus::Alive {
        return false;
    }
    match stats.last_contact {
        Some(c) if c <= config.last_contact_threshold => {}
        _ => return false,
    }
    if stats.last_term != leader_last_term {
        return false;
    }
    let trailing = config.max_trailing_logs;
    if leader_last_index.0 > trailing && stats.last_index.0 < leader_last_index.0 - trailing {
        return false;
    }
    true
}

/// Consul's `updateClusterHealth`: healthy voters minus a quorum of all
/// voters, when positive.
pub fn failure_tolerance(voters: usize, healthy_voters: usize) -> usize {
    healthy_voters.saturating_sub(voters / 2 + 1)
}

/// The leader's view of every server's health, kept between samples so
/// `StableSince` survives while health does not change.
#[derive(Clone, Debug, Default)]
pub struct HealthTracker {
    servers: BTreeMap<NodeId, ServerHealth>,
    cluster: ClusterHealth,
}

impl HealthTracker {
    pub fn new() -> HealthTracker {
        HealthTracker::default()
    }

    /// Take a new sample of every server in the configuration. A server seen
    /// for the first time, or whose health flipped, is stable since `now`;
    /// servers no longer in `servers` are forgotten.
    pub fn update(
        &mut self,
        now: Instant,
        config: &AutopilotConfig,
        servers: &[ServerInfo],
        leader_last_term: Term,
        leader_last_index: LogIndex,
    ) -> &ClusterHealth {
        let mut next = BTreeMap::new();
        for s in servers {
            let healthy = is_healthy(
                config,
                s.gossip,
                &s.stats,
                leader_last_term,
                leader_last_index,
            );
            let stable_since = match self.servers.get(&s.id) {
                Some(prev) if prev.healthy == healthy => prev.stable_since,
                _ => now,
            };
            next.insert(
                s.id,
                ServerHealth {
                    id: s.id,
                    name: s.name.clone(),
                    address: s.address.clone(),
                    gossip: s.gossip,
                    leader: s.leader,
                    voter: s.voter,
                    last_contact: s.stats.last_contact,
                    last_term: s.stats.last_term,
                    last_index: s.stats.last_index,
                    healthy,
                    stable_since,
                },
            );
        }
        self.servers = next;
        let voters = self.servers.values().filter(|h| h.voter).count();
        let healthy_voters = self
            .servers
            .values()
            .filter(|h| h.voter && h.healthy)
            .count();
        self.cluster = ClusterHealth {
            healthy: self.servers.values().all(|h| h.healthy),
            failure_tolerance: failure_tolerance(voters, healthy_voters),
            optimistic_failure_tolerance: failure_tolerance(voters, voters),
            servers: self.servers.values().cloned().collect(),
        };
        &self.cluster
    }

    /// The last sample.
    pub fn cluster(&self) -> &ClusterHealth {
        &self.cluster
    }

    pub fn server(&self, id: NodeId) -> Option<&ServerHealth> {
        self.servers.get(&id)
    }

    pub fn servers(&self) -> &BTreeMap<NodeId, ServerHealth> {
        &self.servers
    }

    /// Forget everything (a new leader starts over, as Consul's autopilot
    /// starts with leadership).
    pub fn clear(&mut self) {
        *self = HealthTracker::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(contact_ms: Option<u64>, term: u64, index: u64) -> ServerStats {
        ServerStats {
            last_contact: contact_ms.map(Duration::from_millis),
            last_term: Term(term),
            last_index: LogIndex(index),
        }
    }

    fn info(i: u128, voter: bool, gossip: GossipStatus, s: ServerStats) -> ServerInfo {
        ServerInfo {
            id: NodeId(i),
            name: NodeName(format!("s{i}")),
            address: format!("10.0.0.{i}:8300"),
            voter,
            leader: i == 1,
            gossip,
            stats: s,
        }
    }

    /// Each condition of Consul's `isServerHealthy`
    /// (agent/consul/autopilot/autopilot.go), at its boundary.
    #[test]
    fn a_server_is_healthy_only_if_alive_in_contact_same_term_and_not_trailing() {
        let c = AutopilotConfig::default();
        let ok = |g, s: ServerStats| is_healthy(&c, g, &s, Term(5), LogIndex(1000));
        assert!(ok(GossipStatus::Alive, stats(Some(200), 5, 750)));
        // Not alive in gossip.
        for g in [
            GossipStatus::Leaving,
            GossipStatus::Left,
            GossipStatus::Failed,
            GossipStatus::None,
        ] {
            assert!(!ok(g, stats(Some(0), 5, 1000)), "{g:?}");
        }
        // Contact just past the threshold, or never.
        assert!(!ok(
            GossipStatus::Alive,
            ServerStats {
                last_contact: Some(Duration::from_millis(200) + Duration(1)),
                ..stats(None, 5, 1000)
            }
        ));
        assert!(!ok(GossipStatus::Alive, stats(None, 5, 1000)));
        // Another last term.
        assert!(!ok(GossipStatus::Alive, stats(Some(10), 4, 1000)));
        // 251 entries behind.
        assert!(!ok(GossipStatus::Alive, stats(Some(10), 5, 749)));
        // A short log: trailing is not checked until the leader has more
        // than max_trailing_logs entries.
        assert!(is_healthy(
            &c,
            GossipStatus::Alive,
            &stats(Some(10), 5, 0),
            Term(5),
            LogIndex(250)
        ));
    }

    #[test]
    fn failure_tolerance_counts_healthy_voters_beyond_a_quorum() {
        assert_eq!(failure_tolerance(1, 1), 0);
        assert_eq!(failure_tolerance(3, 3), 1);
        assert_eq!(failure_tolerance(3, 2), 0);
        assert_eq!(failure_tolerance(3, 1), 0);
        assert_eq!(failure_tolerance(5, 5), 2);
        assert_eq!(failure_tolerance(5, 4), 1);
        assert_eq!(failure_tolerance(4, 4), 1);
    }

    /// `StableSince` resets only when health flips (Consul's
    /// `updateClusterHealth` keeps the last value otherwise).
    #[test]
    fn stable_since_resets_when_health_flips() {
        let c = AutopilotConfig::default();
        let mut t = HealthTracker::new();
        let healthy = stats(Some(10), 2, 20);
        let lagging = stats(Some(900), 2, 20);
        let s1 = info(1, true, GossipStatus::Alive, stats(Some(0), 2, 20));
        let at = |ms: u64| Instant(1_000_000_000 + ms * 1_000_000);

        let h = t.update(
            at(0),
            &c,
            &[s1.clone(), info(2, false, GossipStatus::Alive, healthy)],
            Term(2),
            LogIndex(20),
        );
        assert!(h.healthy);
        assert_eq!(h.servers[1].stable_since, at(0));

        t.update(
            at(2000),
            &c,
            &[s1.clone(), info(2, false, GossipStatus::Alive, healthy)],
            Term(2),
            LogIndex(20),
        );
        assert_eq!(t.server(NodeId(2)).unwrap().stable_since, at(0));
        assert!(!t.server(NodeId(2)).unwrap().is_stable(at(2000), &c));
        assert!(t.server(NodeId(2)).unwrap().is_stable(at(10_000), &c));

        let h = t.update(
            at(4000),
            &c,
            &[s1.clone(), info(2, false, GossipStatus::Alive, lagging)],
            Term(2),
            LogIndex(20),
        );
        assert!(!h.healthy);
        assert_eq!(h.failure_tolerance, 0);
        assert_eq!(h.servers[1].stable_since, at(4000));
        assert!(!h.servers[1].healthy);

        t.update(
            at(6000),
            &c,
            &[s1, info(2, false, GossipStatus::Alive, healthy)],
            Term(2),
            LogIndex(20),
        );
        let s2 = t.server(NodeId(2)).unwrap();
        assert!(s2.healthy);
        assert_eq!(s2.stable_since, at(6000));
        assert!(!s2.is_stable(at(15_999), &c));
        assert!(s2.is_stable(at(16_000), &c));
    }

    #[test]
    fn cluster_health_is_all_servers_and_tolerance_counts_voters() {
        let c = AutopilotConfig::default();
        let mut t = HealthTracker::new();
        let good = stats(Some(10), 3, 9);
        let h = t.update(
            Instant(1),
            &c,
            &[
                info(1, true, GossipStatus::Alive, stats(Some(0), 3, 9)),
                info(2, true, GossipStatus::Alive, good),
                info(3, true, GossipStatus::Failed, good),
                info(4, true, GossipStatus::Alive, good),
                info(5, true, GossipStatus::Alive, good),
            ],
            Term(3),
            LogIndex(9),
        );
        assert!(!h.healthy);
        assert_eq!(h.failure_tolerance, 1);
        assert_eq!(h.optimistic_failure_tolerance, 2);
        assert_eq!(
            h.servers.iter().map(|s| s.healthy).collect::<Vec<_>>(),
            [true, true, false, true, true]
        );
        // A server that left the configuration is forgotten.
        t.update(
            Instant(2),
            &c,
            &[info(1, true, GossipStatus::Alive, stats(Some(0), 3, 9))],
            Term(3),
            LogIndex(9),
        );
        assert!(t.server(NodeId(3)).is_none());
        assert!(t.cluster().healthy);
    }
}
