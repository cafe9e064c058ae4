//! Every knob and limit of a gossip pool, with Consul's defaults for the LAN
//! and the WAN pool (memberlist `DefaultLANConfig`/`DefaultWANConfig`, as
//! Consul adjusts them in agent/consul/config.go and lib/serf.go).

use crate::clock::Duration;
use crate::ids::NodeId;

use super::keyring::Keyring;
use super::member::Tags;

/// One gossip pool's configuration. Build it with [`GossipConfig::lan`] or
/// [`GossipConfig::wan`], then adjust fields.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Our member name: the node name in the LAN pool, `<node>.<dc>` in the WAN pool.
    pub name: String,
    pub node_id: NodeId,
    /// Our gossip address as other members should reach it (`host:port`).
    pub address: String,
    pub tags: Tags,
    /// Chosen anew by the driver on every start (a persisted counter, or the
    /// wall clock in milliseconds): what lets a member declared failed, or
    /// one that restarted, come back with a clean slate.
    pub generation: u64,
    /// Seeds the pool's RNG (probe order, gossip targets, indirect probers).
    pub seed: u64,

    /// How often one member is probed (memberlist `ProbeInterval`: LAN 1 s, WAN 5 s).
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others (LAN 500 ms, WAN 3 s).
    pub probe_timeout: Duration,
    /// How many members are asked to probe indirectly (`IndirectChecks`, 3).
    pub indirect_checks: usize,
    /// `SuspicionMult` (LAN 4, WAN 6): the suspicion timeout is this many
    /// probe intervals, scaled by log10 of the pool size.
    pub suspicion_mult: u32,
    /// `SuspicionMaxTimeoutMult` (6): the timeout with no confirmations is
    /// this many times the minimum (Lifeguard).
    pub suspicion_max_timeout_mult: u32,
    /// `AwarenessMaxMultiplier` (8): how far local health stretches our
    /// probe interval and timeout (Lifeguard).
    pub awareness_max_multiplier: u32,
    /// How often queued updates are gossiped (LAN 200 ms, WAN 500 ms).
    pub gossip_interval: Duration,
    /// To how many random members each round (LAN 3, WAN 4).
    pub gossip_nodes: usize,
    /// An update is sent `retransmit_mult * ceil(log10(n + 1))` times (4).
    pub retransmit_mult: u32,
    /// Failed members still get gossip this long (`GossipToTheDeadTime`, LAN 30 s, WAN 60 s).
    pub gossip_to_the_dead_time: Duration,
    /// Full state exchange with one random member (`PushPullInterval`, LAN 30 s, WAN 60 s).
    pub push_pull_interval: Duration,
    /// How often a failed member is contacted in case it is back (serf `ReconnectInterval`, 30 s).
    pub reconnect_interval: Duration,
    /// A failed member is forgotten after this (Consul `reconnect_timeout`, 72 h).
    pub reconnect_timeout: Duration,
    /// A left member is forgotten after this (serf `TombstoneTimeout`, 24 h).
    pub tombstone_timeout: Duration,
    /// How often the reaper runs (serf `ReapInterval`, 15 s).
    pub reap_interval: Duration,
    /// A failed or left member's name may be taken by another node id after
    /// this (Consul sets memberlist's `DeadNodeReclaimTime` to 30 s).
    pub dead_node_reclaim_time: Duration,
    /// How long a join attempt waits for the state exchange to come back
    /// (memberlist `TCPTimeout`, LAN 10 s, WAN 30 s).
    pub join_timeout: Duration,
    /// The first wait between join attempts; it doubles up to `join_retry_max`.
    pub join_retry_min: Duration,
    /// The longest wait between join attempts (Consul `retry_interval`, 30 s).
    pub join_retry_max: Duration,
    /// Give up after this many attempts; 0 retries forever (Consul `retry_max`).
    pub join_attempts_max: u32,
    /// How long a leave waits for its broadcast to spread before it is
    /// complete (the role of serf's `LeavePropagateDelay`): 1 s on the LAN,
    /// five gossip rounds; 2.5 s on the WAN.
    pub leave_propagate_delay: Duration,
    /// At most one malformed-packet event per this interval; the rest are counted.
    pub bad_packet_log_interval: Duration,

    /// Largest datagram we send or accept (memberlist `UDPBufferSize`, 1400).
    pub packet_bytes_max: usize,
    /// Largest state exchange (stream) we send or accept.
    pub stream_bytes_max: usize,
    /// Most members the table holds; more are refused.
    pub members_max: usize,
    /// Longest member name and address.
    pub name_bytes_max: usize,
    /// Largest encoded tags (memberlist `MetaMaxSize`, 512).
    pub tags_bytes_max: usize,
    /// Most updates accepted in one packet.
    pub updates_per_packet_max: usize,
    /// Most indirect probes we run for others at once.
    pub relays_max: usize,

    /// Encryption keys (`encrypt`, then whatever `keyring` operations
    /// installed); empty: packets travel in the clear. The pool keeps its
    /// own copy from here on ([`super::Gossip::keyring`]).
    pub keyring: Keyring,
    /// Refuse packets that are not sealed (Consul's
    /// `encrypt_verify_incoming`, default true). Only with a keyring.
    pub encrypt_verify_incoming: bool,
    /// Seal what we send (Consul's `encrypt_verify_outgoing`, default true).
    /// Only with a keyring; keyring operations are sealed regardless, since
    /// they carry keys.
    pub encrypt_verify_outgoing: bool,
    /// A keyring operation waits for answers `gossip_interval ×
    /// query_timeout_mult × ceil(log10(n + 1))` (serf's `QueryTimeoutMult`, 16).
    pub query_timeout_mult: u32,
    /// Keyring operations in flight at once; more are refused.
    pub key_queries_max: usize,

    /// Planted bug (simulator self-test only): never refute a suspicion or
    /// death of ourselves.
    #[cfg(feature = "bugs")]
    pub bug_no_refute: bool,
}

impl GossipConfig {
    /// The LAN pool: servers and clients of one datacenter.
    pub fn lan(name: &str, node_id: NodeId, address: &str, tags: Tags) -> GossipConfig {
        GossipConfig {
            name: name.into(),
            node_id,
            address: address.into(),
            tags,
            generation: 1,
            seed: 0,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            retransmit_mult: 4,
            gossip_to_the_dead_time: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(72 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            reap_interval: Duration::from_secs(15),
            dead_node_reclaim_time: Duration::from_secs(30),
            join_timeout: Duration::from_secs(10),
            join_retry_min: Duration::from_secs(1),
            join_retry_max: Duration::from_secs(30),
            join_attempts_max: 0,
            leave_propagate_delay: Duration::from_secs(1),
            bad_packet_log_interval: Duration::from_secs(1),
            packet_bytes_max: 1400,
            stream_bytes_max: 4 << 20,
            members_max: 10_000,
            name_bytes_max: 256,
            tags_bytes_max: 512,
            updates_per_packet_max: 256,
            relays_max: 256,
            keyring: Keyring::empty(),
            encrypt_verify_incoming: true,
            encrypt_verify_outgoing: true,
            query_timeout_mult: 16,
            key_queries_max: 16,
            #[cfg(feature = "bugs")]
            bug_no_refute: false,
        }
    }

    /// The WAN pool: the servers of every datacenter, named `<node>.<dc>`,
    /// with memberlist's WAN timings.
    pub fn wan(node: &str, dc: &str, node_id: NodeId, address: &str, tags: Tags) -> GossipConfig {
        GossipConfig {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            gossip_to_the_dead_time: Duration::from_secs(60),
            push_pull_interval: Duration::from_secs(60),
            join_timeout: Duration::from_secs(30),
            leave_propagate_delay: Duration::from_millis(2500),
            ..GossipConfig::lan(&format!("{node}.{dc}"), node_id, address, tags)
        }
    }
}
