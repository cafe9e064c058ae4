//! Every knob and every limit of a server, with Consul-like validation.

use crate::autopilot::AutopilotConfig;
use crate::clock::Duration;
use crate::ids::{Datacenter, NodeId, NodeName};
use crate::raft::Membership;

/// Bugs the simulator plants to prove its checks can fail. Compiled only with
/// the `bugs` feature, which the daemon never enables.
#[cfg(feature = "bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Grant a second vote in one term.
    pub vote_twice: bool,
    /// Acknowledge appended entries before they are persisted.
    pub ack_before_fsync: bool,
    /// Serve consistent reads from local state without ReadIndex.
    pub stale_read: bool,
    /// Count replicas of an earlier term's entry toward commit (breaks §5.4.2).
    pub commit_old_term: bool,
    /// On a hint that the leader is unreachable, help elect another at once
    /// instead of honouring its lease first.
    pub hint_skips_lease: bool,
    /// The outbox releases a send that waits for a durable write as soon as
    /// the write is handed to the disk, not once it is durable.
    pub send_before_persisted: bool,
    /// The leader's lease lasts the maximum election timeout instead of
    /// 90% of `leader_lease_timeout`: it outlasts what the followers
    /// promised (they refuse candidates only for the lease timeout after a
    /// hint, and for the minimum election timeout without one).
    pub long_lease: bool,
    /// A follower told its leader is gone (a transport hint) refuses every
    /// candidate until it hears from a leader again, instead of for the
    /// lease timeout: once a leader dies, its hinted followers elect nobody.
    pub hint_blocks_elections: bool,
    /// Autopilot's dead-server cleanup removes every server gossip calls
    /// dead, ignoring the `(voters - 1) / 2` bound and the check that the
    /// configuration it leaves still has a responsive quorum.
    pub autopilot_unbounded_cleanup: bool,
    /// A gossip member never refutes a suspicion or death of itself (the
    /// driver copies this into its pool's `GossipConfig::bug_no_refute`).
    pub gossip_no_refute: bool,
    /// A client agent's retry policy (`rpc::retry::Retry`) never retries:
    /// `No cluster leader` and lost connections reach the caller.
    pub client_no_retry: bool,
    /// The leader ignores lock delays: a key a session's end released may
    /// be acquired at once (Consul's `kvsPreApply` check skipped).
    pub lock_delay_ignored: bool,
    /// A local agent's full sync trusts its own in-sync flags instead of
    /// comparing with the catalog (copied into
    /// `local::LocalConfig::bug_full_sync_trusts_flags` by the driver).
    pub local_full_sync_trusts_flags: bool,
}

/// Room kept in a frame for an `InstallSnapshotChunk`'s header (term,
/// metadata with the configuration, offsets) beside its data.
pub const SNAPSHOT_CHUNK_HEADER_BYTES: usize = 64 << 10;

/// A server's configuration. Durations are [`Duration`]s; sizes end in `_bytes_max`.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: NodeId,
    pub node_name: NodeName,
    pub datacenter: Datacenter,
    /// This server's own server-port address, as peers reach it.
    pub address: String,
    /// Seeds the core's one RNG (election timeouts, staggers).
    pub rng_seed: u64,
    /// The first configuration, written as entry 1 if the log is empty. All
    /// bootstrapping servers must be given the same one.
    pub bootstrap: Option<Membership>,

    /// Followers wait a random time in `[min, max)` without hearing from a
    /// leader before they campaign.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How often a leader sends AppendEntries to an idle follower.
    pub heartbeat_interval: Duration,
    /// Consul's `LeaderLeaseTimeout`: after hearing from its leader, a
    /// follower helps elect no other for at least this long, even when a
    /// hint ([`crate::Input::Unreachable`]) says the leader is gone. The
    /// leader serves `default` reads from local state for 90% of it after a
    /// quorum acknowledged a heartbeat. Without a hint a follower waits the
    /// whole election timeout, as always.
    pub leader_lease_timeout: Duration,
    /// Entries in one AppendEntries. A follower refuses a larger batch as
    /// one no honest leader sends, so every server needs the same value.
    pub append_entries_max: usize,
    /// Bytes of entry payload in one AppendEntries (at least one entry is
    /// sent). Checked by followers too, like `append_entries_max`.
    pub append_bytes_max: usize,
    /// AppendEntries in flight to one follower before the leader waits.
    pub inflight_appends_max: usize,
    /// Take a snapshot once this many entries were applied since the last one
    /// (Consul's `raft_snapshot_threshold`)...
    pub snapshot_threshold: u64,
    /// ...checked this often, staggered at random between 1x and 2x
    /// (Consul's `raft_snapshot_interval`, 30 s). A snapshot encodes the whole
    /// state machine, so taking one as soon as the threshold is reached would
    /// stall a busy server every few seconds. Zero checks after every apply.
    pub snapshot_interval: Duration,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub trailing_logs: u64,

    /// Largest frame accepted from the network.
    pub frame_bytes_max: usize,
    /// A leader streams a snapshot to a follower in pieces of at most this
    /// many bytes (each piece plus its header must fit in a frame).
    pub snapshot_chunk_bytes: usize,
    /// The largest snapshot a follower accepts from a leader (it assembles
    /// the pieces before installing).
    pub snapshot_bytes_max: u64,
    /// Proposals appended but not yet committed.
    pub pending_proposals_max: usize,
    /// Reads waiting for ReadIndex, blocking queries, held and forwarded requests.
    pub pending_requests_max: usize,
    /// How long a request waits for a leader before `No cluster leader` (`rpc_hold_timeout`).
    pub rpc_hold_timeout: Duration,
    /// How long a leaving server fails fast before it stops (`leave_drain_time`).
    pub leave_drain_time: Duration,
    /// Longest a blocking query may wait (Consul caps `wait` at 10 minutes).
    pub blocking_wait_max: Duration,

    pub kv_key_bytes_max: usize,
    /// Consul's `kv_max_value_size`, 512 KiB.
    pub kv_value_bytes_max: usize,
    /// The largest catalog registration (its encoded command), 512 KiB
    /// like a KV value, and never more than fits in one AppendEntries
    /// (`append_bytes_max` less 1 KiB); Consul has no such limit. The
    /// tables' row limits
    /// are constants (`tern_core::fsm::CATALOG_*_MAX`): every server must
    /// refuse the same registration.
    pub catalog_register_bytes_max: usize,

    /// How long a KV tombstone is kept after its delete before the leader
    /// reaps it (Consul's `TombstoneTTL`, 15 minutes): the window in which
    /// a blocking query on a prefix is sure to see a delete.
    pub tombstone_ttl: Duration,
    /// Reap times are rounded up to a multiple of this, so deletes close in
    /// time share one reap (Consul's `TombstoneTTLGranularity`, 30 s).
    pub tombstone_ttl_granularity: Duration,
    /// Expiry bins the tombstone GC tracks; beyond it, new hints fold into
    /// the newest bin (reaped later, never earlier). TTL/granularity + 1
    /// bins are enough at the defaults.
    pub tombstone_gc_buckets_max: usize,

    /// The shortest session TTL a create may ask for (Consul's
    /// `session_ttl_min`, 10 s); the longest is 24 h.
    pub session_ttl_min: Duration,
    /// How long a server that cannot know the lock delays it missed (it
    /// started from a snapshot, or installed one from the leader: lock
    /// delays are timed in memory, never replicated) treats every key that
    /// was ever locked and is free as still in its lock delay. Defaults to
    /// Consul's longest lock delay (60 s); no session's delay may exceed it
    /// for the guarantee to hold.
    pub lock_delay_unknown: Duration,

    /// Autopilot's knobs (the agent configuration's `autopilot { ... }`).
    pub autopilot: AutopilotConfig,
    /// How often the leader samples every server's health (Consul's
    /// `ServerHealthInterval`, 2 s).
    pub server_health_interval: Duration,
    /// How often the leader promotes stable non-voters and removes dead
    /// servers (Consul's `AutopilotInterval`, 10 s).
    pub autopilot_interval: Duration,

    #[cfg(feature = "bugs")]
    pub bugs: Bugs,
}

/// A configuration error: names the key and says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Defaults in the spirit of Consul's, for the given identity.
    pub fn new(node_id: NodeId, node_name: &str, datacenter: &str, address: &str) -> Config {
        Config {
            node_id,
            node_name: NodeName(node_name.to_string()),
            datacenter: Datacenter(datacenter.to_string()),
            address: address.to_string(),
            rng_seed: node_id.0 as u64 ^ (node_id.0 >> 64) as u64,
            bootstrap: None,
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            heartbeat_interval: Duration::from_millis(100),
            leader_lease_timeout: Duration::from_millis(500),
            append_entries_max: 1024,
            append_bytes_max: 4 << 20,
            inflight_appends_max: 8,
            snapshot_threshold: 16384,
            snapshot_interval: Duration::from_secs(30),
            trailing_logs: 10240,
            frame_bytes_max: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 16 << 30,
            pending_proposals_max: 65536,
            pending_requests_max: 65536,
            rpc_hold_timeout: Duration::from_secs(7),
            leave_drain_time: Duration::from_secs(5),
            blocking_wait_max: Duration::from_secs(600),
            kv_key_bytes_max: 4096,
            kv_value_bytes_max: 512 * 1024,
            catalog_register_bytes_max: 512 * 1024,
            tombstone_ttl: Duration::from_secs(15 * 60),
            tombstone_ttl_granularity: Duration::from_secs(30),
            tombstone_gc_buckets_max: 1024,
            session_ttl_min: Duration::from_secs(10),
            lock_delay_unknown: Duration::from_secs(60),
            autopilot: AutopilotConfig::default(),
            server_health_interval: Duration::from_secs(2),
            autopilot_interval: Duration::from_secs(10),
            #[cfg(feature = "bugs")]
            bugs: Bugs::default(),
        }
    }

    /// Check every knob; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn err(key: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError {
                key,
                message: message.into(),
            })
        }
        if self.node_name.0.is_empty() {
            return err("node_name", "must not be empty");
        }
        if self.datacenter.0.is_empty()
            || !self
                .datacenter
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err(
                "datacenter",
                format!(
                    "{:?} must be non-empty and contain only alphanumerics, '-' and '_'",
                    self.datacenter.0
                ),
            );
        }
        if self.election_timeout_min.as_nanos() == 0 {
            return err("election_timeout_min", "must be greater than zero");
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return err(
                "election_timeout_max",
                "must be greater than election_timeout_min",
            );
        }
        if self.heartbeat_interval.as_nanos() == 0
            || self.heartbeat_interval.saturating_mul(2) > self.election_timeout_min
        {
            return err(
                "heartbeat_interval",
                "must be greater than zero and at most half of election_timeout_min",
            );
        }
        if self.leader_lease_timeout.as_nanos() == 0
            || self.leader_lease_timeout > self.election_timeout_min
        {
            return err(
                "leader_lease_timeout",
                "must be greater than zero and at most election_timeout_min",
            );
        }
        let positive: [(&'static str, usize); 7] = [
            ("append_entries_max", self.append_entries_max),
            ("append_bytes_max", self.append_bytes_max),
            ("inflight_appends_max", self.inflight_appends_max),
            ("pending_proposals_max", self.pending_proposals_max),
            ("pending_requests_max", self.pending_requests_max),
            ("kv_key_bytes_max", self.kv_key_bytes_max),
            ("tombstone_gc_buckets_max", self.tombstone_gc_buckets_max),
        ];
        for (key, v) in positive {
            if v == 0 {
                return err(key, "must be greater than zero");
            }
        }
        if self.snapshot_threshold == 0 {
            return err("snapshot_threshold", "must be greater than zero");
        }
        if self.frame_bytes_max < 4096 {
            return err("frame_bytes_max", "must be at least 4096");
        }
        if self.kv_value_bytes_max + self.kv_key_bytes_max + 1024 > self.append_bytes_max {
            return err(
                "kv_value_bytes_max",
                "the largest key and value must fit in append_bytes_max",
            );
        }
        if self.catalog_register_bytes_max == 0 {
            return err("catalog_register_bytes_max", "must be greater than zero");
        }
        if self.append_bytes_max + 4096 > self.frame_bytes_max {
            return err("append_bytes_max", "must fit in frame_bytes_max");
        }
        if self.snapshot_chunk_bytes == 0
            || self.snapshot_chunk_bytes + SNAPSHOT_CHUNK_HEADER_BYTES > self.frame_bytes_max
        {
            return err(
                "snapshot_chunk_bytes",
                "must be greater than zero and fit in frame_bytes_max with its header (64 KiB)",
            );
        }
        if self.snapshot_bytes_max == 0 {
            return err("snapshot_bytes_max", "must be greater than zero");
        }
        if self.rpc_hold_timeout.as_nanos() == 0 {
            return err("rpc_hold_timeout", "must be greater than zero");
        }
        // Consul's NewTombstoneGC: "Tombstone TTL and granularity must be
        // positive"; a TTL shorter than one bin would be rounded past itself.
        if self.tombstone_ttl_granularity.as_nanos() == 0 {
            return err("tombstone_ttl_granularity", "must be greater than zero");
        }
        if self.tombstone_ttl < self.tombstone_ttl_granularity {
            return err(
                "tombstone_ttl",
                "must be at least tombstone_ttl_granularity",
            );
        }
        if self.server_health_interval.as_nanos() == 0 {
            return err("server_health_interval", "must be greater than zero");
        }
        if self.autopilot_interval.as_nanos() == 0 {
            return err("autopilot_interval", "must be greater than zero");
        }
        self.autopilot.validate()?;
        if let Some(m) = &self.bootstrap {
            if !m.is_voter(self.node_id) {
                return err("bootstrap", "must list this server as a voter");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::new(NodeId(1), "s1", "dc1", "127.0.0.1:8300")
    }

    #[test]
    fn defaults_are_valid() {
        base().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = base();
        c.datacenter = Datacenter("dc 1".into());
        assert_eq!(c.validate().unwrap_err().key, "datacenter");

        let mut c = base();
        c.election_timeout_max = c.election_timeout_min;
        assert_eq!(c.validate().unwrap_err().key, "election_timeout_max");

        let mut c = base();
        c.heartbeat_interval = Duration::from_millis(600);
        assert_eq!(c.validate().unwrap_err().key, "heartbeat_interval");

        let mut c = base();
        c.leader_lease_timeout = Duration::from_millis(1001);
        assert_eq!(c.validate().unwrap_err().key, "leader_lease_timeout");

        let mut c = base();
        c.inflight_appends_max = 0;
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "inflight_appends_max: must be greater than zero"
        );

        let mut c = base();
        c.bootstrap = Some(Membership::default());
        assert_eq!(c.validate().unwrap_err().key, "bootstrap");

        let mut c = base();
        c.autopilot_interval = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().key, "autopilot_interval");

        let mut c = base();
        c.server_health_interval = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().key, "server_health_interval");

        let mut c = base();
        c.autopilot.last_contact_threshold = Duration::ZERO;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "autopilot.last_contact_threshold: must be greater than zero"
        );
    }

    #[test]
    fn tombstone_gc_defaults_are_consuls_and_are_checked() {
        let c = base();
        assert_eq!(c.tombstone_ttl, Duration::from_secs(900));
        assert_eq!(c.tombstone_ttl_granularity, Duration::from_secs(30));

        let mut c = base();
        c.tombstone_ttl_granularity = Duration::ZERO;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "tombstone_ttl_granularity: must be greater than zero"
        );

        let mut c = base();
        c.tombstone_ttl = Duration::from_secs(29);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "tombstone_ttl: must be at least tombstone_ttl_granularity"
        );
        c.tombstone_ttl = Duration::from_secs(30);
        c.validate().unwrap();

        let mut c = base();
        c.tombstone_gc_buckets_max = 0;
        assert_eq!(c.validate().unwrap_err().key, "tombstone_gc_buckets_max");
    }
}
