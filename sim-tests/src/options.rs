//! Seed → options: every knob of a run is drawn from the seed and printed with it.

use std::fmt;
use std::time::Duration;

use tern_core::config::Bugs;
use tern_core::rng::Rng;

/// A planted bug, to prove the checks can fail.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Bug {
    VoteTwice,
    AckBeforeFsync,
    StaleRead,
    CommitOldTerm,
    /// A hinted follower refuses candidates until a leader speaks again (a
    /// liveness bug: caught by the check that a write commits after
    /// healing).
    HintBlocksElections,
    HintSkipsLease,
    SendBeforePersisted,
    LongLease,
    /// Dead-server cleanup removes every server gossip calls dead, past the
    /// `(voters - 1) / 2` bound and the responsive-quorum check.
    AutopilotUnboundedCleanup,
    /// Gossip members never refute a suspicion or death of themselves.
    GossipNoRefute,
    /// Client agents never retry (`No cluster leader`, lost connections and
    /// busy servers reach the caller).
    ClientNoRetry,
    /// The leader ignores lock delays: a key a session's end released can
    /// be acquired at once.
    LockDelayIgnored,
    /// A local agent's full sync trusts its own in-sync flags: what changed
    /// in the catalog behind its back is never repaired.
    LocalFullSyncTrustsFlags,
}

impl Bug {
    pub const ALL: [Bug; 13] = [
        Bug::VoteTwice,
        Bug::AckBeforeFsync,
        Bug::StaleRead,
        Bug::CommitOldTerm,
        Bug::HintBlocksElections,
        Bug::HintSkipsLease,
        Bug::SendBeforePersisted,
        Bug::LongLease,
        Bug::AutopilotUnboundedCleanup,
        Bug::GossipNoRefute,
        Bug::ClientNoRetry,
        Bug::LockDelayIgnored,
        Bug::LocalFullSyncTrustsFlags,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::VoteTwice => "vote-twice",
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::StaleRead => "stale-read",
            Bug::CommitOldTerm => "commit-old-term",
            Bug::HintBlocksElections => "hint-blocks-elections",
            Bug::HintSkipsLease => "hint-skips-lease",
            Bug::SendBeforePersisted => "send-before-persisted",
            Bug::LongLease => "long-lease",
            Bug::AutopilotUnboundedCleanup => "autopilot-unbounded-cleanup",
            Bug::GossipNoRefute => "gossip-no-refute",
            Bug::ClientNoRetry => "client-no-retry",
            Bug::LockDelayIgnored => "lock-delay-ignored",
            Bug::LocalFullSyncTrustsFlags => "local-full-sync-trusts-flags",
        }
    }

    pub fn parse(s: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == s)
    }

    pub fn bugs(bug: Option<Bug>) -> Bugs {
        let mut b = Bugs::default();
        match bug {
            Some(Bug::VoteTwice) => b.vote_twice = true,
            Some(Bug::AckBeforeFsync) => b.ack_before_fsync = true,
            Some(Bug::StaleRead) => b.stale_read = true,
            Some(Bug::CommitOldTerm) => b.commit_old_term = true,
            Some(Bug::HintBlocksElections) => b.hint_blocks_elections = true,
            Some(Bug::HintSkipsLease) => b.hint_skips_lease = true,
            Some(Bug::SendBeforePersisted) => b.send_before_persisted = true,
            Some(Bug::LongLease) => b.long_lease = true,
            Some(Bug::AutopilotUnboundedCleanup) => b.autopilot_unbounded_cleanup = true,
            Some(Bug::GossipNoRefute) => b.gossip_no_refute = true,
            Some(Bug::ClientNoRetry) => b.client_no_retry = true,
            Some(Bug::LockDelayIgnored) => b.lock_delay_ignored = true,
            Some(Bug::LocalFullSyncTrustsFlags) => b.local_full_sync_trusts_flags = true,
            None => {}
        }
        b
    }
}

/// The faults a run's nemesis may inject, as relative weights.
#[derive(Clone, Debug)]
pub struct FaultMix {
    pub partition_halves: u64,
    pub isolate_leader: u64,
    pub isolate_one: u64,
    pub one_way: u64,
    pub crash: u64,
    pub crash_leader: u64,
    pub pause: u64,
    pub membership: u64,
    pub heal: u64,
    /// Every server loses power at once (a whole-datacenter outage).
    pub crash_all: u64,
    /// Leaders are killed again and again right after they win.
    pub leader_churn: u64,
    /// One server's disk turns slow (fsync 20-300 ms), or back to normal.
    pub slow_disk: u64,
    /// Transport hints ([`tern_core::Input::Unreachable`]) beyond the true
    /// ones every crash sends: the leader is isolated and its connections
    /// reset (every other server is told it is gone), or one follower gets
    /// a false hint about a healthy leader.
    pub hints: u64,
    /// A stale-lease window: the leader is cut off from the other servers
    /// (not from clients), often with connection resets, while the nemesis
    /// writes through the others and reads through it in default mode.
    pub lease_window: u64,
    /// Gossip (port 8301) blocked on some servers for 8-20 s while Raft
    /// still flows: the others declare them failed, so autopilot's view of
    /// who is dead is wrong (the case its cleanup bound exists for).
    pub gossip_block: u64,
}

/// The kinds of random fault, in the order the nemesis rolls over them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    PartitionHalves,
    IsolateLeader,
    IsolateOne,
    OneWay,
    Crash,
    CrashLeader,
    Pause,
    Membership,
    Heal,
    CrashAll,
    LeaderChurn,
    SlowDisk,
    Hints,
    LeaseWindow,
    GossipBlock,
}

impl Fault {
    pub const ALL: [Fault; 15] = [
        Fault::PartitionHalves,
        Fault::IsolateLeader,
        Fault::IsolateOne,
        Fault::OneWay,
        Fault::Crash,
        Fault::CrashLeader,
        Fault::Pause,
        Fault::Membership,
        Fault::Heal,
        Fault::CrashAll,
        Fault::LeaderChurn,
        Fault::SlowDisk,
        Fault::Hints,
        Fault::LeaseWindow,
        Fault::GossipBlock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PartitionHalves => "halves",
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateOne => "isolate",
            Fault::OneWay => "one-way",
            Fault::Crash => "crash",
            Fault::CrashLeader => "crash-leader",
            Fault::Pause => "pause",
            Fault::Membership => "membership",
            Fault::Heal => "heal",
            Fault::CrashAll => "crash-all",
            Fault::LeaderChurn => "leader-churn",
            Fault::SlowDisk => "slow-disk",
            Fault::Hints => "hints",
            Fault::LeaseWindow => "lease-window",
            Fault::GossipBlock => "gossip-block",
        }
    }
}

impl FaultMix {
    /// The relative weight of one kind of fault.
    pub fn weight(&self, fault: Fault) -> u64 {
        match fault {
            Fault::PartitionHalves => self.partition_halves,
            Fault::IsolateLeader => self.isolate_leader,
            Fault::IsolateOne => self.isolate_one,
            Fault::OneWay => self.one_way,
            Fault::Crash => self.crash,
            Fault::CrashLeader => self.crash_leader,
            Fault::Pause => self.pause,
            Fault::Membership => self.membership,
            Fault::Heal => self.heal,
            Fault::CrashAll => self.crash_all,
            Fault::LeaderChurn => self.leader_churn,
            Fault::SlowDisk => self.slow_disk,
            Fault::Hints => self.hints,
            Fault::LeaseWindow => self.lease_window,
            Fault::GossipBlock => self.gossip_block,
        }
    }
}

/// Everything a run does, derived from its seed.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub servers: usize,
    pub clients: usize,
    /// Requests each client keeps in flight (a task per slot, each its own
    /// process in the history).
    pub pipeline: usize,
    /// Per-mille of client operations that are blocking queries.
    pub blocking_permille: u64,
    pub keys: usize,
    pub latency_ms: (u64, u64),
    /// Per-mille of messages lost.
    pub loss_permille: u64,
    pub duplicate_permille: u64,
    pub fsync_ms: (u64, u64),
    pub election_ms: (u64, u64),
    pub heartbeat_ms: u64,
    /// The leader lease timeout, in thousandths of the minimum election timeout.
    pub lease_permille: u64,
    pub append_entries_max: usize,
    pub inflight_appends_max: usize,
    pub snapshot_threshold: u64,
    /// How often servers check the snapshot threshold (0: after every apply).
    pub snapshot_interval_ms: u64,
    pub trailing_logs: u64,
    /// How long KV tombstones live before the leader reaps them, and the
    /// bins reaps are rounded to: seconds here (Consul's 15 min and 30 s
    /// would never expire in a run), so reaps interleave with faults.
    pub tombstone_ttl_ms: u64,
    pub tombstone_granularity_ms: u64,
    /// Simulated time with faults.
    pub safety_s: u64,
    /// Mean time between faults.
    pub fault_every_ms: u64,
    pub faults: FaultMix,
    /// Simulated time the liveness phase may take to show a leader and a
    /// committed write after healing.
    pub liveness_bound_s: u64,
    pub bug: Option<Bug>,
}

impl Options {
    pub fn from_seed(seed: u64) -> Options {
        let mut r = Rng::new(seed ^ 0x007E_570F_7E4E);
        let servers = if r.chance(1, 2) { 3 } else { 5 };
        let lat_min = r.range(1, 4);
        let lat_max = lat_min + r.range(0, 20);
        let election_min = r.range(150, 600);
        let fsync_min = r.range(0, 3);
        Options {
            seed,
            servers,
            clients: r.range(2, 7) as usize,
            pipeline: 1,
            blocking_permille: 0,
            keys: r.range(2, 6) as usize,
            latency_ms: (lat_min, lat_max),
            loss_permille: if r.chance(1, 3) { 0 } else { r.range(0, 50) },
            duplicate_permille: if r.chance(1, 2) { 0 } else { r.range(0, 30) },
            // A quarter of the runs get a slow disk (fsync up to 200 ms),
            // which widens the window between a write and its durability.
            fsync_ms: if r.chance(1, 4) {
                (fsync_min + 1, fsync_min + r.range(20, 200))
            } else {
                (fsync_min, fsync_min + r.range(0, 15))
            },
            election_ms: (election_min, election_min * 2),
            heartbeat_ms: election_min / r.range(4, 8),
            // Small batches and a window of one keep entries of different
            // terms in different messages: Figure 8 needs exactly that.
            append_entries_max: [1, 1, 2, 4, 64, 1024][r.range(0, 6) as usize],
            inflight_appends_max: if r.chance(1, 3) {
                1
            } else {
                r.range(2, 9) as usize
            },
            snapshot_threshold: r.range(20, 400),
            trailing_logs: r.range(0, 50),
            safety_s: r.range(10, 30),
            fault_every_ms: r.range(200, 2000),
            faults: FaultMix {
                partition_halves: r.range(0, 4),
                isolate_leader: r.range(0, 4),
                isolate_one: r.range(0, 3),
                one_way: r.range(0, 3),
                crash: r.range(0, 5),
                crash_leader: r.range(0, 4),
                pause: r.range(0, 3),
                membership: r.range(0, 3),
                heal: r.range(1, 5),
                crash_all: r.range(0, 3),
                leader_churn: r.range(0, 5),
                slow_disk: r.range(0, 4),
                hints: 0,
                lease_window: 0,
                gossip_block: 0,
            },
            lease_permille: 0,
            snapshot_interval_ms: 0,
            tombstone_ttl_ms: 0,
            tombstone_granularity_ms: 0,
            liveness_bound_s: 30,
            bug: None,
        }
        .drawn_last(&mut r)
    }

    /// Knobs added after the others, drawn after them so that every earlier
    /// knob of a seed stays what it was.
    fn drawn_last(mut self, r: &mut Rng) -> Options {
        self.faults.hints = r.range(0, 4);
        self.lease_permille = r.range(300, 1001);
        self.snapshot_interval_ms = if r.chance(1, 2) {
            0
        } else {
            r.range(100, 3000)
        };
        self.tombstone_ttl_ms = r.range(200, 3001);
        self.tombstone_granularity_ms = r.range(10, self.tombstone_ttl_ms / 4 + 1);
        self.pipeline = r.range(4, 9) as usize;
        // About three client processes per key, as before pipelining (the
        // linearizability check is exponential in a key's concurrency).
        self.keys = self.keys.max(self.clients * self.pipeline / 3);
        self.blocking_permille = r.range(50, 250);
        self.faults.lease_window = if r.chance(1, 10) { 0 } else { r.range(3, 9) };
        self.faults.gossip_block = if r.chance(1, 2) { 0 } else { r.range(1, 4) };
        self
    }

    /// The leader lease timeout this run's servers use.
    pub fn lease(&self) -> Duration {
        Duration::from_millis((self.election_ms.0 * self.lease_permille / 1000).max(1))
    }

    pub fn election(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.election_ms.0),
            Duration::from_millis(self.election_ms.1),
        )
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "servers={} clients={}x{} blocking={}‰ keys={} latency_ms={}..{} loss={}‰ dup={}‰ fsync_ms={}..{} \
             election_ms={}..{} heartbeat_ms={} lease_ms={} append_max={} inflight_max={} snapshot_every={} snapshot_interval_ms={} \
             trailing={} tombstone_ttl_ms={} tombstone_granularity_ms={} safety_s={} fault_every_ms={} faults=[",
            self.servers,
            self.clients,
            self.pipeline,
            self.blocking_permille,
            self.keys,
            self.latency_ms.0,
            self.latency_ms.1,
            self.loss_permille,
            self.duplicate_permille,
            self.fsync_ms.0,
            self.fsync_ms.1,
            self.election_ms.0,
            self.election_ms.1,
            self.heartbeat_ms,
            self.lease().as_millis(),
            self.append_entries_max,
            self.inflight_appends_max,
            self.snapshot_threshold,
            self.snapshot_interval_ms,
            self.trailing_logs,
            self.tombstone_ttl_ms,
            self.tombstone_granularity_ms,
            self.safety_s,
            self.fault_every_ms,
        )?;
        for (i, fault) in Fault::ALL.into_iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{} {}", fault.name(), self.faults.weight(fault))?;
        }
        write!(f, "] bug={}", self.bug.map_or("none", Bug::name))
    }
}
