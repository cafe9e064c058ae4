//! Autopilot on the leader: when to sample health and when to act, what the
//! leader's Raft progress says about each server, and the one membership
//! change to propose next.
//!
//! Each server's gossip status is what the driver last reported with
//! `Input::ServerMember` (serf's member status); a server nothing was
//! reported for counts as alive. Gossip is not wired into the agents yet,
//! so in the daemon every server counts as alive and dead-server cleanup
//! never acts: inferring failure from transport hints alone would remove a
//! server that is only slow to restart, and with no reconciliation of
//! members yet nothing would add it back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::clock::{Duration, Instant};
use crate::config::Config;
use crate::ids::{LogIndex, NodeId, NodeName, Term};
use crate::raft::{Membership, Raft, Role, Suffrage};

use super::{
    dead_servers, keeps_quorum, promotions, AutopilotEvent, GossipStatus, HealthTracker,
    ServerInfo, ServerStats,
};

/// One server in `/v1/operator/autopilot/health` and `/state`, as the leader
/// answers it (also forwarded between servers, so plain data).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerHealthReply {
    pub id: NodeId,
    pub name: NodeName,
    pub address: String,
    pub serf_status: GossipStatus,
    pub leader: bool,
    pub voter: bool,
    /// `None`: never in contact in this term.
    pub last_contact: Option<Duration>,
    pub last_term: Term,
    pub last_index: LogIndex,
    pub healthy: bool,
    /// How long `healthy` had not changed at the last sample (the leader's
    /// monotonic instants mean nothing elsewhere; the HTTP layer turns this
    /// into `StableSince` on its own wall clock).
    pub stable_for: Duration,
}

/// The leader's last health sample.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthReply {
    pub healthy: bool,
    pub failure_tolerance: u64,
    pub optimistic_failure_tolerance: u64,
    /// By id.
    pub servers: Vec<ServerHealthReply>,
}

/// Autopilot's state on a server; it acts only while the server leads.
#[derive(Clone, Debug, Default)]
pub struct Autopilot {
    health: HealthTracker,
    /// The term this server leads in, while autopilot runs.
    term: Option<Term>,
    sampled_at: Instant,
    next_health: Instant,
    next_run: Instant,
    /// What gossip last said of each server (`Input::ServerMember`).
    reported: BTreeMap<NodeId, GossipStatus>,
}

impl Autopilot {
    pub fn new() -> Autopilot {
        Autopilot::default()
    }

    /// What the gossip pool says of `node` (`Input::ServerMember`).
    pub fn member_status(&mut self, node: NodeId, status: GossipStatus) {
        self.reported.insert(node, status);
    }

    /// When autopilot next wants a tick (only while it runs).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.term.map(|_| self.next_health.min(self.next_run))
    }

    pub fn health(&self) -> &HealthTracker {
        &self.health
    }

    /// The gossip status autopilot uses for `id` (see the module doc).
    pub fn gossip_status(
        &self,
        now: Instant,
        config: &Config,
        raft: &Raft,
        id: NodeId,
    ) -> GossipStatus {
        let _ = (now, config);
        if id == raft.id() {
            return GossipStatus::Alive;
        }
        self.reported
            .get(&id)
            .copied()
            .unwrap_or(GossipStatus::Alive)
    }

    /// What the leader's progress says of `id` (Consul's `RaftStats`).
    fn stats(now: Instant, raft: &Raft, id: NodeId) -> ServerStats {
        if id == raft.id() {
            return ServerStats {
                last_contact: Some(Duration::ZERO),
                last_term: raft.log().last_term(),
                last_index: raft.log().last_index(),
            };
        }
        match raft.progress(id) {
            Some(p) => ServerStats {
                last_contact: (p.acked_seq > 0).then(|| now.saturating_since(p.last_ack)),
                // Entries up to `matched` are the leader's own (log
                // matching), so their term is the leader's term for them:
                // from its no-op on, every entry is of its current term, even
                // once compacted away (a follower a few entries behind a
                // snapshot that kept few trailing logs is still in this
                // term, as its own `LastTerm` in Consul's stats would say);
                // before that, the log says, or, compacted, term 0 (far
                // behind: unhealthy).
                last_term: if p.matched >= raft.term_start_index()
                    && raft.term_start_index() > LogIndex::ZERO
                {
                    raft.term()
                } else {
                    raft.log().term_at(p.matched).unwrap_or(Term(0))
                },
                last_index: p.matched,
            },
            None => ServerStats {
                last_contact: None,
                last_term: Term(0),
                last_index: LogIndex::ZERO,
            },
        }
    }

    fn sample(&mut self, now: Instant, config: &Config, raft: &Raft) {
        let infos: Vec<ServerInfo> = raft
            .membership()
            .servers
            .iter()
            .map(|(id, m)| ServerInfo {
                id: *id,
                name: m.name.clone(),
                address: m.address.clone(),
                voter: m.suffrage == Suffrage::Voter,
                leader: *id == raft.id(),
                gossip: self.gossip_status(now, config, raft, *id),
                stats: Autopilot::stats(now, raft, *id),
            })
            .collect();
        self.health.update(
            now,
            &config.autopilot,
            &infos,
            raft.log().last_term(),
            raft.log().last_index(),
        );
        self.sampled_at = now;
        let members = raft.membership();
        self.reported.retain(|id, _| members.contains(*id));
    }

    /// The leader's last sample, for the HTTP API.
    pub fn reply(&self) -> HealthReply {
        let c = self.health.cluster();
        HealthReply {
            healthy: c.healthy,
            failure_tolerance: c.failure_tolerance as u64,
            optimistic_failure_tolerance: c.optimistic_failure_tolerance as u64,
            servers: c
                .servers
                .iter()
                .map(|h| ServerHealthReply {
                    id: h.id,
                    name: h.name.clone(),
                    address: h.address.clone(),
                    serf_status: h.gossip,
                    leader: h.leader,
                    voter: h.voter,
                    last_contact: h.last_contact,
                    last_term: h.last_term,
                    last_index: h.last_index,
                    healthy: h.healthy,
                    stable_for: self.sampled_at.saturating_since(h.stable_since),
                })
                .collect(),
        }
    }

    /// Called after every input. While `leading` (the leader, not leaving),
    /// samples health every `server_health_interval` and, every
    /// `autopilot_interval`, picks the one membership change to propose:
    /// the first stable non-voter to promote, else the first dead server to
    /// remove (Consul promotes before it prunes). `events` gets what was
    /// refused. The caller proposes the change and reports with
    /// [`Autopilot::proposed`]; nothing is returned while a configuration
    /// change is still committing (Raft takes one at a time).
    pub fn poll(
        &mut self,
        now: Instant,
        config: &Config,
        raft: &Raft,
        leading: bool,
        events: &mut Vec<AutopilotEvent>,
    ) -> Option<(Membership, AutopilotEvent)> {
        if !leading || raft.role() != Role::Leader {
            if self.term.take().is_some() {
                self.health.clear();
            }
            return None;
        }
        if self.term != Some(raft.term()) {
            // A new leadership: start over, sample at once, act one
            // interval later (Consul starts autopilot with leadership).
            self.term = Some(raft.term());
            self.health.clear();
            self.next_health = now;
            self.next_run = now + config.autopilot_interval;
        }
        if now >= self.next_health {
            self.sample(now, config, raft);
            self.next_health = now + config.server_health_interval;
        }
        if now < self.next_run {
            return None;
        }
        if !raft.committed_in_term() || raft.membership_change_pending() {
            // Look again soon: a change commits within a round trip.
            self.next_run = now + config.heartbeat_interval;
            return None;
        }
        self.next_run = now + config.autopilot_interval;
        // Decide on what the leader knows now, not on the last sample (up
        // to `server_health_interval` old): a server heard from since, or
        // one gone quiet since, counts as it is now.
        self.sample(now, config, raft);
        self.next_health = now + config.server_health_interval;
        self.decide(now, config, raft, events)
    }

    /// After the caller proposed what `poll` returned: the next change (a
    /// removal after a promotion, say) is looked for as soon as this one
    /// has committed, as Consul's promotion triggers dead-server cleanup.
    pub fn proposed(&mut self, now: Instant, config: &Config) {
        self.next_run = now + config.heartbeat_interval;
    }

    fn decide(
        &self,
        now: Instant,
        config: &Config,
        raft: &Raft,
        events: &mut Vec<AutopilotEvent>,
    ) -> Option<(Membership, AutopilotEvent)> {
        let ap = &config.autopilot;
        let membership = raft.membership();
        let responsive: BTreeSet<NodeId> = self
            .health
            .servers()
            .values()
            .filter(|h| {
                h.gossip == GossipStatus::Alive
                    && h.last_contact
                        .is_some_and(|c| c <= ap.last_contact_threshold)
            })
            .map(|h| h.id)
            .collect();
        for id in promotions(ap, now, membership, &self.health) {
            let mut after = membership.clone();
            if let Some(m) = after.servers.get_mut(&id) {
                m.suffrage = Suffrage::Voter;
            }
            if keeps_quorum(&after, &responsive) {
                return Some((after, AutopilotEvent::Promoting { id }));
            }
        }
        let gossip: BTreeMap<NodeId, GossipStatus> = membership
            .servers
            .keys()
            .map(|id| (*id, self.gossip_status(now, config, raft, *id)))
            .collect();
        // Heard from over Raft within the last-contact threshold.
        let heard: BTreeSet<NodeId> = self
            .health
            .servers()
            .values()
            .filter(|h| {
                h.last_contact
                    .is_some_and(|c| c <= ap.last_contact_threshold)
            })
            .map(|h| h.id)
            .collect();
        let mut cleanup = dead_servers(ap, membership, &gossip, &heard, raft.id());
        let unbounded = bug_unbounded_cleanup(config);
        if unbounded && ap.cleanup_dead_servers {
            cleanup.remove = gossip
                .iter()
                .filter(|(id, s)| {
                    **id != raft.id() && matches!(s, GossipStatus::Failed | GossipStatus::None)
                })
                .map(|(id, _)| *id)
                .collect();
        }
        events.extend(cleanup.events);
        for id in cleanup.remove {
            let mut after = membership.clone();
            after.servers.remove(&id);
            if unbounded || keeps_quorum(&after, &responsive) {
                return Some((after, AutopilotEvent::RemovingDeadServer { id }));
            }
        }
        None
    }
}

#[cfg(feature = "bugs")]
fn bug_unbounded_cleanup(config: &Config) -> bool {
    config.bugs.autopilot_unbounded_cleanup
}
#[cfg(not(feature = "bugs"))]
fn bug_unbounded_cleanup(_config: &Config) -> bool {
    false
}
