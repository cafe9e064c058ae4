//! What a leader knows about one follower's log (§5.3, with the probe /
//! replicate / snapshot states of etcd's raft, thesis §10.2.1 pipelining).

use crate::clock::Instant;
use crate::ids::LogIndex;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReplState {
    /// Not sure where the follower's log ends: one AppendEntries at a time.
    Probe,
    /// The follower matched: pipeline up to `inflight_appends_max`.
    Replicate,
    /// An InstallSnapshot is on its way.
    Snapshot,
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Next entry to send.
    pub next: LogIndex,
    /// Highest entry known to be durable on the follower and to match ours.
    pub matched: LogIndex,
    pub state: ReplState,
    /// Sequence numbers of AppendEntries carrying entries, not yet answered.
    pub inflight: Vec<u64>,
    /// Highest sequence number the follower answered in this term.
    pub acked_seq: u64,
    /// Answered since the last check-quorum round.
    pub recent_active: bool,
    /// When the follower last answered.
    pub last_ack: Instant,
    /// The driver reported the follower gone (`Input::Unreachable`) since it
    /// last answered: a leadership transfer looks elsewhere first.
    pub hinted_gone: bool,
    /// How much of our snapshot (by its last index) the follower confirmed
    /// holding: where streaming resumes.
    pub snapshot_offset: Option<(LogIndex, u64)>,
}

impl Progress {
    pub fn new(next: LogIndex, now: Instant) -> Progress {
        Progress {
            next,
            matched: LogIndex::ZERO,
            state: ReplState::Probe,
            inflight: Vec::new(),
            acked_seq: 0,
            recent_active: true,
            last_ack: now,
            hinted_gone: false,
            snapshot_offset: None,
        }
    }

    /// Whether another AppendEntries with entries may be sent now.
    pub fn can_send(&self, inflight_max: usize) -> bool {
        match self.state {
            ReplState::Probe => self.inflight.is_empty(),
            ReplState::Replicate => self.inflight.len() < inflight_max,
            ReplState::Snapshot => false,
        }
    }

    /// Forget what is in flight and probe again from just after `matched`.
    pub fn reset_to_probe(&mut self) {
        self.state = ReplState::Probe;
        self.inflight.clear();
        self.next = self.matched.next();
    }
}
