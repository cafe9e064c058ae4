//! Autopilot's decisions, each a pure function of the configuration, the
//! Raft membership and what the leader knows of each server.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::Instant;
use crate::ids::NodeId;
use crate::raft::{Membership, Suffrage};

use super::{AutopilotConfig, AutopilotEvent, GossipStatus, HealthTracker};

/// Non-voters healthy for at least `server_stabilization_time`, by id
/// (Consul's `PromoteStableServers`). As soon as one is stable it is
/// promoted, whatever the number of voters that makes: Consul 1.0.0 waited
/// for an odd number of voters, so a rolling update that replaced a voter
/// with a new server left the new one a non-voter, and stopping the next old
/// server lost quorum (issue #3611, fixed by PR #3623).
pub fn promotions(
    config: &AutopilotConfig,
    now: Instant,
    membership: &Membership,
    health: &HealthTracker,
) -> Vec<NodeId> {
    membership
        .servers
        .iter()
        .filter(|(_, m)| m.suffrage == Suffrage::Nonvoter)
        .filter(|(id, _)| {
            health
                .server(**id)
                .is_some_and(|h| h.is_stable(now, config))
        })
        .map(|(id, _)| *id)
        .collect()
}

/// What dead-server cleanup decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Servers to remove, in order: dead non-voters, then dead voters (each
    /// by id). The leader proposes them one at a time.
    pub remove: Vec<NodeId>,
    /// Removals refused, and why.
    pub events: Vec<AutopilotEvent>,
}

/// Dead-server cleanup (Consul's `pruneDeadServers`, raft-autopilot's
/// `pruneDeadServers`). A server is dead if it is failed in gossip or absent
/// from it (missing from `gossip`) and the leader has not heard from it over
/// Raft lately (it is not in `heard`: a server that acknowledges the
/// leader's appends is alive whatever gossip says, and gossip can lag: a
/// server whose pool restarted during a partition stays failed in the
/// others' pools until a reconnect round, up to 30 s after healing; Consul
/// goes by gossip alone and would remove it, chaos seed 324 lost quorum
/// that way). The leader never counts itself. Dead
/// non-voters are always removed: they do not vote, so removing them cannot
/// cost a quorum. Dead voters are removed only if there are at most
/// `(voters - 1) / 2` of them, so a majority of the voters is never removed
/// at once (a partitioned leader would otherwise empty its configuration);
/// otherwise none is and an event says "too many dead servers". No voter is
/// removed if that would leave fewer than `min_quorum` voters.
pub fn dead_servers(
    config: &AutopilotConfig,
    membership: &Membership,
    gossip: &BTreeMap<NodeId, GossipStatus>,
    heard: &BTreeSet<NodeId>,
    leader: NodeId,
) -> Cleanup {
    let mut out = Cleanup::default();
    if !config.cleanup_dead_servers {
        return out;
    }
    let dead = |id: &NodeId| {
        *id != leader
            && !heard.contains(id)
            && matches!(
                gossip.get(id).copied().unwrap_or(GossipStatus::None),
                GossipStatus::Failed | GossipStatus::None
            )
    };
    let (mut dead_voters, mut dead_nonvoters) = (Vec::new(), Vec::new());
    for (id, m) in &membership.servers {
        if dead(id) {
            match m.suffrage {
                Suffrage::Voter => dead_voters.push(*id),
                Suffrage::Nonvoter => dead_nonvoters.push(*id),
            }
        }
    }
    out.remove.extend(dead_nonvoters);
    let mut voters = membership.voter_count();
    if dead_voters.len() > voters.saturating_sub(1) / 2 {
        out.events.push(AutopilotEvent::TooManyDeadServers {
            dead: dead_voters.len(),
            voters,
        });
        return out;
    }
    for id in dead_voters {
        if voters.saturating_sub(1) < config.min_quorum as usize {
            out.events.push(AutopilotEvent::BelowMinQuorum {
                id,
                voters,
                min_quorum: config.min_quorum,
            });
            continue;
        }
        out.remove.push(id);
        voters -= 1;
    }
    out
}

/// Whether the voters of `after` that are `responsive` (alive and in contact
/// with the leader) are a quorum of `after`: autopilot never proposes a
/// configuration that would have to wait for a dead server to commit.
pub fn keeps_quorum(after: &Membership, responsive: &BTreeSet<NodeId>) -> bool {
    let live = after.voters().filter(|id| responsive.contains(id)).count();
    live >= after.quorum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autopilot::{ServerInfo, ServerStats};
    use crate::clock::Duration;
    use crate::ids::{LogIndex, NodeName, Term};
    use crate::raft::Member;

    fn membership(voters: &[u128], nonvoters: &[u128]) -> Membership {
        let mut m = Membership::default();
        for (ids, suffrage) in [(voters, Suffrage::Voter), (nonvoters, Suffrage::Nonvoter)] {
            for i in ids {
                m.servers.insert(
                    NodeId(*i),
                    Member {
                        name: NodeName(format!("s{i}")),
                        address: format!("s{i}:8300"),
                        suffrage,
                    },
                );
            }
        }
        m
    }

    fn alive(ids: &[u128]) -> BTreeMap<NodeId, GossipStatus> {
        ids.iter()
            .map(|i| (NodeId(*i), GossipStatus::Alive))
            .collect()
    }

    /// No server heard from over Raft lately.
    fn none() -> BTreeSet<NodeId> {
        BTreeSet::new()
    }

    fn ids(v: &[u128]) -> Vec<NodeId> {
        v.iter().map(|i| NodeId(*i)).collect()
    }

    const LEADER: NodeId = NodeId(1);

    /// Health of servers 1..=n sampled at `at`, `healthy` saying which are.
    fn tracker(at: Instant, m: &Membership, unhealthy: &[u128]) -> HealthTracker {
        let servers: Vec<ServerInfo> = m
            .servers
            .iter()
            .map(|(id, member)| ServerInfo {
                id: *id,
                name: member.name.clone(),
                address: member.address.clone(),
                voter: member.suffrage == Suffrage::Voter,
                leader: *id == LEADER,
                gossip: GossipStatus::Alive,
                stats: ServerStats {
                    last_contact: Some(if unhealthy.contains(&id.0) {
                        Duration::from_secs(5)
                    } else {
                        Duration::ZERO
                    }),
                    last_term: Term(1),
                    last_index: LogIndex(10),
                },
            })
            .collect();
        let mut t = HealthTracker::new();
        t.update(
            at,
            &AutopilotConfig::default(),
            &servers,
            Term(1),
            LogIndex(10),
        );
        t
    }

    /// Consul's `TestAutopilot_PromoteNonVoter`: a healthy non-voter is
    /// promoted once stable, and not before.
    #[test]
    fn a_non_voter_is_promoted_after_the_stabilization_time_and_not_before() {
        let c = AutopilotConfig::default();
        let m = membership(&[1, 2, 3], &[4]);
        let t0 = Instant(1_000_000_000);
        let t = tracker(t0, &m, &[]);
        let almost = t0 + Duration::from_secs(10);
        assert_eq!(
            promotions(&c, Instant(almost.0 - 1), &m, &t),
            Vec::<NodeId>::new()
        );
        assert_eq!(promotions(&c, almost, &m, &t), ids(&[4]));
    }

    #[test]
    fn an_unhealthy_non_voter_is_not_promoted_and_voters_never_are() {
        let c = AutopilotConfig::default();
        let m = membership(&[1, 2, 3], &[4, 5]);
        let t0 = Instant(1_000_000_000);
        let t = tracker(t0, &m, &[5]);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(promotions(&c, later, &m, &t), ids(&[4]));
        // A non-voter the tracker never saw is not promoted either.
        let m6 = membership(&[1, 2, 3], &[6]);
        assert_eq!(promotions(&c, later, &m6, &t), Vec::<NodeId>::new());
    }

    /// #3611/#3623: with 3 voters one of which is dead and a new non-voter,
    /// the non-voter is promoted at once, though that makes 4 voters.
    #[test]
    fn promotion_does_not_wait_for_an_odd_number_of_voters() {
        let c = AutopilotConfig::default();
        let m = membership(&[1, 2, 3], &[4]);
        let t0 = Instant(1_000_000_000);
        let t = tracker(t0, &m, &[3]);
        assert_eq!(
            promotions(&c, t0 + Duration::from_secs(10), &m, &t),
            ids(&[4])
        );
    }

    /// Consul's `TestAutopilot_CleanupDeadServer`: one dead voter of five
    /// is removed, and a dead non-voter always is.
    #[test]
    fn dead_servers_within_the_bound_are_removed_non_voters_first() {
        let c = AutopilotConfig::default();
        let m = membership(&[1, 2, 3, 4, 5], &[6]);
        let mut g = alive(&[1, 2, 3, 5]);
        g.insert(NodeId(4), GossipStatus::Failed);
        // Server 6 is absent from gossip: dead too.
        assert_eq!(
            dead_servers(&c, &m, &g, &none(), LEADER),
            Cleanup {
                remove: ids(&[6, 4]),
                events: vec![]
            }
        );
        // Two dead of five voters is still within (5 - 1) / 2.
        g.insert(NodeId(5), GossipStatus::Failed);
        assert_eq!(
            dead_servers(&c, &m, &g, &none(), LEADER).remove,
            ids(&[6, 4, 5])
        );
    }

    /// A voter gossip calls failed, or does not know, is not dead while the
    /// leader hears from it over Raft; it is neither removed nor counted
    /// toward "too many dead" (chaos seed 324).
    #[test]
    fn a_server_the_leader_hears_from_is_not_dead_whatever_gossip_says() {
        let c = AutopilotConfig::default();
        let m = membership(&[1, 2, 3], &[4]);
        let mut g = alive(&[1, 3]);
        g.insert(NodeId(2), GossipStatus::Failed);
        assert_eq!(
            dead_servers(&c, &m, &g, &none(), LEADER).remove,
            ids(&[4, 2])
        );
        let heard: BTreeSet<NodeId> = ids(&[2, 4]).into_iter().collect();
        assert_eq!(dead_servers(&c, &m, &g, &heard, LEADER), Cleanup::default());
        // Two of three voters failed in gossip, one of them heard: one dead
        // voter is within the bound, and it is the one removed.
        g.insert(NodeId(3), GossipStatus::Failed);
        let heard: BTreeSet<NodeId> = ids(&[3]).into_iter().collect();
        assert_eq!(
            dead_servers(&c, &m, &g, &heard, LEADER),
            Cleanup {
                remove: ids(&[4, 2]),
                events: vec![]
            }
        );
    }

    #[test]
    fn too_many_dead_voters_removes_none_of_them() {
        let c = AutopilotConfig::default();
        // Three voters: at most one may go.
        let m = membership(&[1, 2, 3], &[4]);
        let g = alive(&[1]);
        assert_eq!(
            dead_servers(&c, &m, &g, &none(), LEADER),
            Cleanup {
                remove: ids(&[4]),
                events: vec![AutopilotEvent::TooManyDeadServers { dead: 2, voters: 3 }],
            }
        );
        assert_eq!(
            AutopilotEvent::TooManyDeadServers { dead: 2, voters: 3 }.to_string(),
            "Failed to remove dead servers: too many dead servers: 2/3"
        );
        // Two voters: (2 - 1) / 2 = 0, a dead voter is never removed.
        let m = membership(&[1, 2], &[]);
        assert_eq!(
            dead_servers(&c, &m, &alive(&[1]), &none(), LEADER).events,
            vec![AutopilotEvent::TooManyDeadServers { dead: 1, voters: 2 }]
        );
    }

    #[test]
    fn min_quorum_and_the_switch_are_respected_and_the_leader_is_never_dead() {
        let m = membership(&[1, 2, 3, 4, 5], &[]);
        let g = alive(&[1, 2, 3]);
        let c = AutopilotConfig {
            min_quorum: 4,
            ..AutopilotConfig::default()
        };
        assert_eq!(
            dead_servers(&c, &m, &g, &none(), LEADER),
            Cleanup {
                remove: ids(&[4]),
                events: vec![AutopilotEvent::BelowMinQuorum {
                    id: NodeId(5),
                    voters: 4,
                    min_quorum: 4
                }],
            }
        );
        let off = AutopilotConfig {
            cleanup_dead_servers: false,
            ..AutopilotConfig::default()
        };
        assert_eq!(
            dead_servers(&off, &m, &g, &none(), LEADER),
            Cleanup::default()
        );
        // The leader is absent from the gossip map it was given: not dead.
        let g = alive(&[2, 3, 4, 5]);
        assert_eq!(
            dead_servers(&AutopilotConfig::default(), &m, &g, &none(), LEADER),
            Cleanup::default()
        );
    }

    #[test]
    fn a_change_keeps_quorum_only_with_a_live_majority_of_the_new_voters() {
        let live: BTreeSet<NodeId> = ids(&[1, 2, 4]).into_iter().collect();
        // Rolling update: 1, 2 live voters, 3 dead, 4 a live non-voter.
        assert!(keeps_quorum(&membership(&[1, 2, 3, 4], &[]), &live));
        assert!(keeps_quorum(&membership(&[1, 2, 4], &[]), &live));
        // Promoting a dead server into a 3-of-4 configuration would not.
        let live: BTreeSet<NodeId> = ids(&[1, 2]).into_iter().collect();
        assert!(!keeps_quorum(&membership(&[1, 2, 3, 4], &[]), &live));
        assert!(keeps_quorum(&membership(&[1, 2, 3], &[4]), &live));
    }
}
