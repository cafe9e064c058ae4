//! Membership news: what an alive, suspect or dead statement does to our
//! table (memberlist's `aliveNode`, `suspectNode`, `deadNode`), refutation,
//! and the conflict checks.

use std::collections::BTreeSet;

use crate::clock::Instant;
use crate::ids::NodeId;

use super::super::member::Version;
use super::super::packet::{MemberInfo, PeerEntry, PeerState, Update};
use super::suspicion::{remaining, suspicion_timeout};
use super::{view, Entry, Gossip, GossipAction, GossipEvent, State, Suspicion};

impl Gossip {
    pub(super) fn apply(&mut self, now: Instant, u: Update, out: &mut Vec<GossipAction>) {
        match u {
            Update::Alive(info) => self.on_alive(now, info, out),
            Update::Suspect {
                name,
                version,
                from,
            } => self.on_suspect(now, name, version, from, out),
            Update::Dead {
                name,
                version,
                from,
            } => self.on_dead(now, name, version, from, out),
            Update::Prune {
                name,
                version,
                from,
            } => self.on_prune(name, version, from, out),
        }
    }

    /// An operator pruned `name` (force-leave `-prune`): a member we hold
    /// as left or failed at `version` or older is erased (reported reaped
    /// as left) and the news passed on. A member alive or suspect here, or
    /// newer than the statement, is kept: a prune cannot take out a member
    /// that may be alive (it left or failed only where the operator asked);
    /// it goes the ordinary way once it is seen to fail or leave. About
    /// ourselves: ignored (our own leave is what ends us).
    pub(super) fn on_prune(
        &mut self,
        name: String,
        version: Version,
        from: String,
        out: &mut Vec<GossipAction>,
    ) {
        let Some(e) = self.members.get(&name) else {
            return;
        };
        let gone = matches!(e.state, State::Left | State::Dead);
        if !gone || e.info.version > version || name == self.me.name {
            return;
        }
        self.members.remove(&name);
        self.queue.remove(&name);
        self.enqueue(Update::Prune {
            name: name.clone(),
            version,
            from,
        });
        out.push(GossipAction::Event(GossipEvent::MemberReaped {
            name,
            status: super::super::member::Status::Left,
        }));
    }

    /// One row of a state exchange, as memberlist's `mergeState`: alive is
    /// believed, left is a leave, but suspect and dead only raise a
    /// suspicion (the member gets its chance to refute).
    pub(super) fn merge(&mut self, now: Instant, entry: PeerEntry, out: &mut Vec<GossipAction>) {
        let PeerEntry { info, state } = entry;
        match state {
            PeerState::Alive => self.on_alive(now, info, out),
            PeerState::Left => self.on_dead(now, info.name.clone(), info.version, info.name, out),
            PeerState::Suspect | PeerState::Dead => {
                let from = self.me.name.clone();
                self.on_suspect(now, info.name, info.version, from, out);
            }
        }
    }

    pub(super) fn on_alive(&mut self, now: Instant, info: MemberInfo, out: &mut Vec<GossipAction>) {
        if info.name == self.me.name {
            if info.node_id != self.me.node_id {
                return self.conflict(&info, self.me.name.clone(), self.me.node_id, out);
            }
            // Someone holds a newer (or different) picture of us: refute.
            if info.version > self.me.version
                || (info.version == self.me.version && info != self.me)
            {
                self.refute(info.version, out);
            }
            return;
        }
        if let Some((holder, holder_id)) = self.node_id_holder(&info) {
            return self.conflict(&info, holder, holder_id, out);
        }
        let reclaim = self.config.dead_node_reclaim_time;
        let Some(e) = self.members.get_mut(&info.name) else {
            if self.members.len() >= self.config.members_max {
                return self.dropped(now, &info.address, "member table full".into(), out);
            }
            let e = Entry {
                info: info.clone(),
                state: State::Alive,
                since: now,
                suspicion: None,
            };
            let member = view(&e);
            self.members.insert(info.name.clone(), e);
            self.enqueue(Update::Alive(info));
            out.push(GossipAction::Event(GossipEvent::MemberJoined(member)));
            return;
        };
        let replace = e.info.node_id != info.node_id;
        if replace {
            let gone_long_enough = matches!(e.state, State::Dead | State::Left)
                && now.saturating_since(e.since) >= reclaim;
            if !gone_long_enough {
                let (holder, holder_id) = (e.info.name.clone(), e.info.node_id);
                return self.conflict(&info, holder, holder_id, out);
            }
        } else if info.version <= e.info.version {
            return;
        }
        let was = e.state;
        let changed = e.info.address != info.address || e.info.tags != info.tags;
        e.info = info.clone();
        e.suspicion = None;
        if was != State::Alive {
            e.since = now;
        }
        e.state = State::Alive;
        let member = view(e);
        self.enqueue(Update::Alive(info));
        let event = match was {
            _ if replace => GossipEvent::MemberJoined(member),
            State::Dead | State::Left => GossipEvent::MemberJoined(member),
            State::Suspect => GossipEvent::MemberAlive(member),
            State::Alive if changed => GossipEvent::MemberUpdated(member),
            State::Alive => return,
        };
        out.push(GossipAction::Event(event));
    }

    pub(super) fn on_suspect(
        &mut self,
        now: Instant,
        name: String,
        version: Version,
        from: String,
        out: &mut Vec<GossipAction>,
    ) {
        if name == self.me.name {
            if self.leave_at.is_none() && self.about_current_me(version) {
                self.refute(version, out);
            }
            return;
        }
        let n = self.live_count();
        let Some(e) = self.members.get_mut(&name) else {
            return;
        };
        if version < e.info.version {
            return;
        }
        match e.state {
            State::Dead | State::Left => {}
            State::Suspect => {
                let Some(s) = e.suspicion.as_mut() else {
                    return;
                };
                // memberlist stops counting at k: more cannot shorten the
                // timeout further, and the set stays bounded.
                let counted = u32::try_from(s.confirmers.len()).unwrap_or(u32::MAX);
                if counted <= s.k && s.confirmers.insert(from.clone()) {
                    // A new, independent confirmation shortens the timeout.
                    let c = u32::try_from(s.confirmers.len() - 1).unwrap_or(u32::MAX);
                    s.deadline = s.started + remaining(c, s.k, s.min, s.max);
                    self.enqueue(Update::Suspect {
                        name,
                        version,
                        from,
                    });
                }
            }
            State::Alive => {
                let c = &self.config;
                let min = suspicion_timeout(c.suspicion_mult, n, c.probe_interval);
                let max = min.saturating_mul(u64::from(c.suspicion_max_timeout_mult));
                let mut k = c.suspicion_mult.saturating_sub(2);
                if (n as u64).saturating_sub(2) < u64::from(k) {
                    k = 0;
                }
                e.state = State::Suspect;
                e.info.version = version;
                e.since = now;
                e.suspicion = Some(Suspicion {
                    started: now,
                    min,
                    max,
                    k,
                    confirmers: BTreeSet::from([from.clone()]),
                    deadline: now + if k == 0 { min } else { max },
                });
                out.push(GossipAction::Event(GossipEvent::MemberSuspect {
                    name: name.clone(),
                    from: from.clone(),
                }));
                self.enqueue(Update::Suspect {
                    name,
                    version,
                    from,
                });
            }
        }
    }

    pub(super) fn on_dead(
        &mut self,
        now: Instant,
        name: String,
        version: Version,
        from: String,
        out: &mut Vec<GossipAction>,
    ) {
        let left = from == name;
        if name == self.me.name {
            if self.leave_at.is_none() && self.about_current_me(version) {
                self.refute(version, out);
            }
            return;
        }
        let Some(e) = self.members.get_mut(&name) else {
            return;
        };
        if version < e.info.version {
            return;
        }
        let next = match (e.state, left) {
            (State::Left, _) | (State::Dead, false) => return,
            (_, true) => State::Left,
            (_, false) => State::Dead,
        };
        e.state = next;
        e.info.version = version;
        e.since = now;
        e.suspicion = None;
        let member = view(e);
        self.enqueue(Update::Dead {
            name,
            version,
            from,
        });
        let event = if left {
            GossipEvent::MemberLeft(member)
        } else {
            GossipEvent::MemberFailed(member)
        };
        out.push(GossipAction::Event(event));
    }

    /// Whether a statement about us concerns this life of ours (and not a
    /// past one we already outran, nor a future one we cannot speak for).
    pub(super) fn about_current_me(&self, v: Version) -> bool {
        v.generation == self.me.version.generation && v.incarnation >= self.me.version.incarnation
    }

    pub(super) fn refute(&mut self, about: Version, out: &mut Vec<GossipAction>) {
        #[cfg(feature = "bugs")]
        if self.config.bug_no_refute {
            return;
        }
        let base = if about.generation == self.me.version.generation {
            about.incarnation.max(self.me.version.incarnation)
        } else {
            self.me.version.incarnation
        };
        self.me.version.incarnation = base.saturating_add(1);
        self.raise_awareness(1);
        self.enqueue(Update::Alive(self.me.clone()));
        out.push(GossipAction::Event(GossipEvent::Refuted(self.me.version)));
    }

    pub(super) fn conflict(
        &mut self,
        info: &MemberInfo,
        holder: String,
        holder_node_id: NodeId,
        out: &mut Vec<GossipAction>,
    ) {
        out.push(GossipAction::Event(GossipEvent::Conflict {
            name: info.name.clone(),
            node_id: info.node_id,
            holder,
            holder_node_id,
        }));
    }

    /// A live member (or we) holding `info`'s node id under another name.
    /// Node id 0 means "none" and conflicts with nothing.
    pub(super) fn node_id_holder(&self, info: &MemberInfo) -> Option<(String, NodeId)> {
        if info.node_id == NodeId(0) {
            return None;
        }
        if info.node_id == self.me.node_id {
            return Some((self.me.name.clone(), self.me.node_id));
        }
        self.members
            .values()
            .find(|e| {
                e.info.node_id == info.node_id
                    && e.info.name != info.name
                    && matches!(e.state, State::Alive | State::Suspect)
            })
            .map(|e| (e.info.name.clone(), e.info.node_id))
    }
}
