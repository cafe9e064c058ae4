//! The world: a cluster of simulated servers and clients, their disks, and
//! the fault API the chaos harness drives.
//!
//! Everything here must be called from inside a madsim runtime (see
//! [`crate::run_seed`]). A `World` is a cheap handle; clone it into tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use madsim::net::NetSim;
use madsim::rand::Rng;
use madsim::runtime::Handle;
use tern_core::raft::{Member, Membership, Suffrage};
use tern_core::{
    Action, Config, Event, Input, Instant, LogIndex, NodeId, NodeName, PersistWrite, Server, Term,
};

use crate::client::{Client, ClientSlot};
use crate::fs::{segments, CrashReport, FsSlot, StorageError};
use crate::gossip::GossipControl;
use crate::net::{client_ip, server_ip, ClientId, Peer, CLIENT_PORT, SERVER_PORT};
use crate::node::{now, run_server};

/// Knobs of the simulated machines (the network's own knobs are madsim's
/// `net::Config`, set at runtime with [`World::set_loss`] and
/// [`World::set_latency`]).
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// An fsync takes a random time in `[min, max]`. madsim never sleeps less
    /// than 1 ms, so a non-zero latency below that is 1 ms; zero means an
    /// fsync is instant (no crash window).
    pub fsync_latency: (StdDuration, StdDuration),
    /// Chance that a server-to-server datagram is sent twice.
    pub duplicate_rate: f64,
    /// Receiving tasks per datagram kind per server (madsim charges each
    /// receive a 1 ms sleep; several receivers keep a busy server's inbox
    /// from queueing behind it).
    pub receivers_per_tag: usize,
    /// Run each server's LAN gossip pool (`crate::gossip`) and feed what it
    /// says of servers to the server, as an agent does.
    pub gossip: bool,
    /// Gossip encryption keys every server's pool starts with (the primary
    /// first; empty: plain gossip), unless a server was given its own
    /// ([`World::add_server_with_gossip_keys`]).
    pub gossip_keyring: Vec<Vec<u8>>,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            fsync_latency: (StdDuration::from_millis(1), StdDuration::from_millis(2)),
            duplicate_rate: 0.0,
            receivers_per_tag: 8,
            gossip: true,
            gossip_keyring: Vec::new(),
        }
    }
}

/// What one server's driver has done, summed over all its restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Times the node's runtime started (1 + restarts).
    pub starts: u64,
    pub messages_sent: u64,
    pub messages_duplicated: u64,
    /// `Send` actions whose address did not parse.
    pub send_errors: u64,
    /// Datagrams received (of any kind, decodable or not).
    pub messages_received: u64,
    /// Datagrams dropped because they did not decode.
    pub decode_errors: u64,
    pub requests_received: u64,
    pub responses_sent: u64,
    /// `Respond` actions for an id this driver never gave out.
    pub responses_unmatched: u64,
    pub persists: u64,
    /// Bytes its filesystem has taken (all files, every incarnation).
    pub bytes_written: u64,
    pub fsyncs: u64,
    /// Purges of log entries a snapshot covers.
    pub compactions: u64,
    /// Own snapshots encoded in a task beside the node loop.
    pub snapshot_builds: u64,
    /// Snapshot files read back to stream them (`Action::LoadSnapshot`).
    pub snapshot_loads: u64,
    pub crashes: u64,
    pub unsynced_bytes_lost: u64,
    pub torn_tails_recovered: u64,
    /// Times the core asked for a tick at the instant it was just ticked.
    pub timer_spins: u64,
    /// Gossip datagrams and state exchanges sent, and their bytes.
    pub gossip_sent: u64,
    pub gossip_bytes_sent: u64,
    pub gossip_received: u64,
}

/// Where a server is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Created or restarted; recovering its disk.
    Starting,
    Running,
    Paused,
    Killed,
    /// Stopped for good by [`World::remove_node`].
    Removed,
    /// Left gracefully ([`World::leave`]) and stopped, as the daemon exits;
    /// it can be restarted.
    Left,
    /// Recovery found its WAL corrupt; it refused to start.
    Corrupt(StorageError),
    /// `Server::new` or binding its address failed.
    Failed(String),
}

/// What the observer sees after every `handle`.
pub struct Observation<'a> {
    pub node: NodeId,
    pub now: Instant,
    /// `None` for `Server::start` (the bootstrap write before any input).
    pub input: Option<&'a Input>,
    pub server: &'a Server,
    /// What `handle` emitted, in order.
    pub actions: &'a [Action],
    /// The writes that became durable just before this input (the disk job
    /// an `Input::Persisted` reports); empty otherwise.
    pub durable: &'a [PersistWrite],
    /// What the driver executes now, in order: the sends the outbox released
    /// and the ready actions `handle` emitted (never a `Persist`).
    pub executed: &'a [Action],
}

/// Called synchronously after every `Server::handle`, before the actions run.
/// While it runs, this node's server is out of its slot: `World::with_server`
/// on the same node returns `None` (other nodes are fine).
pub type Observer = Arc<dyn Fn(&Observation<'_>) + Send + Sync>;

/// Notable things that happened, in order, with the virtual time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorldEvent {
    Started {
        node: NodeId,
        last_index: LogIndex,
        term: Term,
    },
    Crashed {
        node: NodeId,
        outcome: CrashReport,
    },
    /// Recovery truncated a torn tail of the last log segment.
    TornTail {
        node: NodeId,
    },
    Corrupt {
        node: NodeId,
        error: StorageError,
    },
    /// `BecameLeader`, `SteppedDown`, `Removed` and the snapshot events from the core.
    Core {
        node: NodeId,
        event: Event,
    },
    /// What a server's LAN gossip pool reported (members joining, failing,
    /// coming back, leaving, reaped; refutations; conflicts).
    Gossip {
        node: NodeId,
        event: tern_core::gossip::GossipEvent,
    },
    /// A fault the harness injected, in words.
    Fault(String),
}

/// What the caller's config closure is told about a server it configures.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// 0-based, in creation order.
    pub index: usize,
    pub node_id: NodeId,
    pub name: NodeName,
    /// `10.0.0.<index+1>:8300`.
    pub address: String,
    /// Drawn from the world's seeded RNG.
    pub rng_seed: u64,
    /// All initial servers as voters; `None` for servers added later.
    pub bootstrap: Option<Membership>,
}

impl ServerSpec {
    /// `Config::new` defaults (datacenter `dc1`) with this spec's identity.
    pub fn config(&self) -> Config {
        let mut c = Config::new(self.node_id, &self.name.0, "dc1", &self.address);
        c.rng_seed = self.rng_seed;
        c.bootstrap = self.bootstrap.clone();
        c
    }
}

pub(crate) struct ServerSlot {
    pub id: NodeId,
    pub config: Config,
    pub addr: SocketAddr,
    /// Its filesystem, which outlives every incarnation of the node.
    pub fs: FsSlot,
    pub server: Mutex<Option<Server>>,
    pub counters: Mutex<NodeCounters>,
    pub status: Mutex<NodeStatus>,
    /// This server's own fsync latency, in place of `SimOptions::fsync_latency`.
    pub fsync_latency: Mutex<Option<(StdDuration, StdDuration)>>,
    /// Where the running incarnation takes inputs that come from outside
    /// the network: transport hints ([`tern_core::Input::Unreachable`]) and
    /// an operator's leave ([`tern_core::Input::Leave`]); `None` while it is
    /// down.
    pub hints: Mutex<Option<tokio::sync::mpsc::UnboundedSender<tern_core::Input>>>,
    /// Where the running incarnation's gossip pool takes the world's
    /// requests (leave, force-leave); `None` while it is down.
    pub gossip_control: Mutex<Option<tokio::sync::mpsc::UnboundedSender<GossipControl>>>,
    /// The members its running gossip pool knows, as of its last input.
    pub gossip_view: Mutex<Option<Vec<tern_core::gossip::Member>>>,
    /// A firewall drops this server's gossip traffic (both ways) while set;
    /// Raft traffic still flows. Outlives restarts.
    pub gossip_blocked: std::sync::atomic::AtomicBool,
    /// This server's own gossip keys, in place of
    /// `SimOptions::gossip_keyring`.
    pub gossip_keys: Option<Vec<Vec<u8>>>,
}

pub(crate) struct Shared {
    pub opts: SimOptions,
    observer: Mutex<Option<Observer>>,
    duplicate_rate: Mutex<f64>,
    servers: Mutex<BTreeMap<NodeId, Arc<ServerSlot>>>,
    clients: Mutex<BTreeMap<ClientId, Arc<ClientSlot>>>,
    sim_ids: Mutex<BTreeMap<Peer, madsim::task::NodeId>>,
    /// Which server each machine runs (by every id it ever ran).
    machines: Mutex<BTreeMap<NodeId, Arc<Mutex<Arc<ServerSlot>>>>>,
    /// Links we clogged, so `heal` can undo exactly them.
    clogged: Mutex<BTreeSet<(Peer, Peer)>>,
    events: Mutex<Vec<(Instant, WorldEvent)>>,
    raw_senders: Mutex<u32>,
}

impl Shared {
    pub fn observer(&self) -> Option<Observer> {
        self.observer.lock().unwrap().clone()
    }
    pub fn duplicate_rate(&self) -> f64 {
        *self.duplicate_rate.lock().unwrap()
    }
    pub fn record(&self, event: WorldEvent) {
        if crate::trace::world()
            && (crate::trace::world_all() || !matches!(event, WorldEvent::Core { .. }))
        {
            eprintln!("[world] {:.3} {:?}", now().0 as f64 / 1e9, event);
        }
        self.events.lock().unwrap().push((now(), event));
    }
    pub fn server_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.servers.lock().unwrap().get(&id).map(|s| s.addr)
    }
    /// The gossip addresses of every server but `id`: where a starting
    /// server's pool joins.
    pub fn gossip_peers(&self, id: NodeId) -> Vec<String> {
        let servers = self.servers.lock().unwrap();
        let own = servers.get(&id).map(|s| s.addr);
        servers
            .values()
            .filter(|s| s.id != id && Some(s.addr) != own)
            .map(|s| crate::gossip::gossip_address(s.addr).to_string())
            .collect()
    }
}

/// A simulated cluster. See the crate docs for the lifecycle.
#[derive(Clone)]
pub struct World {
    shared: Arc<Shared>,
}

impl World {
    /// Starts `n` servers that bootstrap together as voters. `make` turns
    /// each [`ServerSpec`] into its `Config` (`|s| s.config()` for defaults);
    /// the config must keep the spec's `node_id` and `address`.
    pub fn new(opts: SimOptions, n: usize, mut make: impl FnMut(&ServerSpec) -> Config) -> World {
        LIVE_WORLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let world = World {
            shared: Arc::new(Shared {
                duplicate_rate: Mutex::new(opts.duplicate_rate),
                opts,
                observer: Mutex::new(None),
                servers: Mutex::new(BTreeMap::new()),
                clients: Mutex::new(BTreeMap::new()),
                sim_ids: Mutex::new(BTreeMap::new()),
                machines: Mutex::new(BTreeMap::new()),
                clogged: Mutex::new(BTreeSet::new()),
                events: Mutex::new(Vec::new()),
                raw_senders: Mutex::new(0),
            }),
        };
        let mut bootstrap = Membership::default();
        for i in 0..n {
            let (id, name, address) = Self::identity(i);
            bootstrap.servers.insert(
                id,
                Member {
                    name,
                    address,
                    suffrage: Suffrage::Voter,
                },
            );
        }
        for i in 0..n {
            let spec = world.spec(i, Some(bootstrap.clone()));
            world.start(&spec, make(&spec));
        }
        world
    }

    fn identity(index: usize) -> (NodeId, NodeName, String) {
        let n = index as u32 + 1;
        (
            NodeId(u128::from(n)),
            NodeName(format!("s{n}")),
            SocketAddr::new(server_ip(n), SERVER_PORT).to_string(),
        )
    }

    fn spec(&self, index: usize, bootstrap: Option<Membership>) -> ServerSpec {
        let (node_id, name, address) = Self::identity(index);
        ServerSpec {
            index,
            node_id,
            name,
            address,
            rng_seed: madsim::rand::thread_rng().gen(),
            bootstrap,
        }
    }

    fn start(&self, spec: &ServerSpec, config: Config) -> NodeId {
        self.start_with_gossip_keys(spec, config, None)
    }

    fn start_with_gossip_keys(
        &self,
        spec: &ServerSpec,
        config: Config,
        gossip_keys: Option<Vec<Vec<u8>>>,
    ) -> NodeId {
        assert_eq!(
            config.node_id, spec.node_id,
            "config must keep the spec's node_id"
        );
        assert_eq!(
            config.address, spec.address,
            "config must keep the spec's address"
        );
        let slot = Arc::new(ServerSlot {
            id: spec.node_id,
            addr: spec.address.parse().expect("spec address parses"),
            config,
            fs: FsSlot::new(madsim::rand::thread_rng().gen()),
            server: Mutex::new(None),
            counters: Mutex::new(NodeCounters::default()),
            status: Mutex::new(NodeStatus::Starting),
            fsync_latency: Mutex::new(None),
            hints: Mutex::new(None),
            gossip_control: Mutex::new(None),
            gossip_view: Mutex::new(None),
            gossip_blocked: std::sync::atomic::AtomicBool::new(false),
            gossip_keys,
        });
        self.shared
            .servers
            .lock()
            .unwrap()
            .insert(spec.node_id, slot.clone());
        let shared = self.shared.clone();
        // The machine runs whichever server its cell holds: a new node id at
        // the same address (`change_server_id`) is the same madsim node.
        let cell = Arc::new(Mutex::new(slot.clone()));
        let machine = cell.clone();
        let node = Handle::current()
            .create_node()
            .name(spec.name.0.clone())
            .ip(slot.addr.ip())
            .init(move || run_server(shared.clone(), machine.lock().unwrap().clone()))
            .build();
        self.shared
            .sim_ids
            .lock()
            .unwrap()
            .insert(Peer::Server(spec.node_id), node.id());
        self.shared
            .machines
            .lock()
            .unwrap()
            .insert(spec.node_id, cell);
        spec.node_id
    }

    /// Replaces server `old` with a new server at the same address: a new
    /// node id and name and an empty disk, on the same machine (Consul's
    /// `TestLeader_ChangeServerID`: the operator rebuilt the box). The old
    /// one is stopped for good first. Returns the new id.
    pub fn change_server_id(
        &self,
        old: NodeId,
        make: impl FnOnce(&ServerSpec) -> Config,
    ) -> NodeId {
        let old_slot = self.slot(old).expect("no such server");
        self.remove_node(old);
        let index = self.shared.servers.lock().unwrap().len();
        let n = index as u32 + 1;
        let spec = ServerSpec {
            index,
            node_id: NodeId(u128::from(n)),
            name: NodeName(format!("s{n}")),
            address: old_slot.addr.to_string(),
            rng_seed: madsim::rand::thread_rng().gen(),
            bootstrap: None,
        };
        let config = make(&spec);
        assert_eq!(
            config.node_id, spec.node_id,
            "config must keep the spec's node_id"
        );
        let slot = Arc::new(ServerSlot {
            id: spec.node_id,
            addr: old_slot.addr,
            config,
            fs: FsSlot::new(madsim::rand::thread_rng().gen()),
            server: Mutex::new(None),
            counters: Mutex::new(NodeCounters::default()),
            status: Mutex::new(NodeStatus::Starting),
            fsync_latency: Mutex::new(None),
            hints: Mutex::new(None),
            gossip_control: Mutex::new(None),
            gossip_view: Mutex::new(None),
            gossip_blocked: std::sync::atomic::AtomicBool::new(false),
            gossip_keys: old_slot.gossip_keys.clone(),
        });
        self.shared
            .servers
            .lock()
            .unwrap()
            .insert(spec.node_id, slot.clone());
        let sim = self.sim_id(Peer::Server(old));
        self.shared
            .sim_ids
            .lock()
            .unwrap()
            .insert(Peer::Server(spec.node_id), sim);
        let cell = self
            .shared
            .machines
            .lock()
            .unwrap()
            .get(&old)
            .cloned()
            .expect("a machine for every server");
        *cell.lock().unwrap() = slot;
        self.shared
            .machines
            .lock()
            .unwrap()
            .insert(spec.node_id, cell);
        self.fault(format!(
            "change server id {old:?} -> {:?} at {}",
            spec.node_id, spec.address
        ));
        Handle::current().restart(sim);
        spec.node_id
    }

    /// Starts a new server with an empty disk and no bootstrap (it waits to
    /// be added to the configuration, e.g. by `Op::RaftAddNonvoter`).
    pub fn add_server(&self, make: impl FnOnce(&ServerSpec) -> Config) -> NodeId {
        let index = self.shared.servers.lock().unwrap().len();
        let spec = self.spec(index, None);
        self.start(&spec, make(&spec))
    }

    /// [`World::add_server`] whose gossip pool has `keys` (empty: plain)
    /// instead of the world's `gossip_keyring`.
    pub fn add_server_with_gossip_keys(
        &self,
        make: impl FnOnce(&ServerSpec) -> Config,
        keys: Vec<Vec<u8>>,
    ) -> NodeId {
        let index = self.shared.servers.lock().unwrap().len();
        let spec = self.spec(index, None);
        self.start_with_gossip_keys(&spec, make(&spec), Some(keys))
    }

    /// Starts a client on its own node, reachable from every server until
    /// a fault says otherwise.
    pub async fn add_client(&self) -> Client {
        let n = self.shared.clients.lock().unwrap().len() as u32 + 1;
        let id = ClientId(n);
        let addr = SocketAddr::new(client_ip(n), CLIENT_PORT);
        let node = Handle::current()
            .create_node()
            .name(format!("c{n}"))
            .ip(addr.ip())
            .build();
        self.shared
            .sim_ids
            .lock()
            .unwrap()
            .insert(Peer::Client(id), node.id());
        let client = Client::start(id, node, addr, self.shared.clone()).await;
        self.shared
            .clients
            .lock()
            .unwrap()
            .insert(id, client.slot());
        client
    }

    // ---- inspection ----

    /// Every server ever started, in id order (removed ones too).
    pub fn servers(&self) -> Vec<NodeId> {
        self.shared
            .servers
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect()
    }

    /// The server's address (`10.0.0.x:8300`).
    pub fn address(&self, id: NodeId) -> Option<String> {
        self.shared.server_addr(id).map(|a| a.to_string())
    }

    /// Looks at a running server. `None` if it is not running (or is the
    /// one the observer is being called for).
    pub fn with_server<R>(&self, id: NodeId, f: impl FnOnce(&Server) -> R) -> Option<R> {
        let slot = self.slot(id)?;
        let guard = slot.server.lock().unwrap();
        guard.as_ref().map(f)
    }

    /// The running servers that believe they are leader, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.servers()
            .into_iter()
            .filter_map(|id| {
                self.with_server(id, |s| {
                    (s.role() == tern_core::raft::Role::Leader).then(|| (id, s.term()))
                })
                .flatten()
            })
            .collect()
    }

    pub fn status(&self, id: NodeId) -> Option<NodeStatus> {
        Some(self.slot(id)?.status.lock().unwrap().clone())
    }

    pub fn counters(&self, id: NodeId) -> Option<NodeCounters> {
        Some(self.slot(id)?.counters.lock().unwrap().clone())
    }

    /// Bytes of the server's WAL: (durable, written but not yet synced).
    pub fn disk_len(&self, id: NodeId) -> Option<(usize, usize)> {
        let slot = self.slot(id)?;
        let (durable, unsynced) = slot.fs.lock().byte_counts();
        Some((durable as usize, unsynced as usize))
    }

    /// Everything notable so far, in order.
    pub fn events(&self) -> Vec<(Instant, WorldEvent)> {
        self.shared.events.lock().unwrap().clone()
    }

    pub fn set_observer(&self, observer: Observer) {
        *self.shared.observer.lock().unwrap() = Some(observer);
    }

    pub fn clear_observer(&self) {
        *self.shared.observer.lock().unwrap() = None;
    }

    /// Ends the world: clears the observer and kills every node it made,
    /// so that their tasks, and all they hold (servers, data dirs, gossip
    /// pools), are dropped now. madsim 0.2 does not drop the futures of
    /// tasks still pending when its runtime is dropped: without this every
    /// seed's world stayed in memory (about 4 MB a seed; a 5,000-seed
    /// sweep in one process passed 12 GB and was killed). Call it last.
    pub fn shutdown(&self) {
        self.clear_observer();
        let ids: Vec<madsim::task::NodeId> = self
            .shared
            .sim_ids
            .lock()
            .unwrap()
            .values()
            .copied()
            .collect();
        for id in ids {
            Handle::current().kill(id);
        }
        // A client's slot holds the world's shared state, which holds the
        // slot: break the cycle.
        self.shared.clients.lock().unwrap().clear();
    }

    /// Virtual time since the world's runtime started.
    pub fn now(&self) -> Instant {
        now()
    }

    fn slot(&self, id: NodeId) -> Option<Arc<ServerSlot>> {
        self.shared.servers.lock().unwrap().get(&id).cloned()
    }

    fn sim_id(&self, peer: Peer) -> madsim::task::NodeId {
        *self
            .shared
            .sim_ids
            .lock()
            .unwrap()
            .get(&peer)
            .unwrap_or_else(|| panic!("no such node in the world: {peer:?}"))
    }

    // ---- process faults ----

    /// Power-cuts a server: its tasks stop, its unsynced writes are lost or
    /// torn (a random prefix survives), its durable bytes stay.
    pub fn kill(&self, id: NodeId) {
        self.crash(id, NodeStatus::Killed);
        Handle::current().kill(self.sim_id(Peer::Server(id)));
        self.connections_closed(id);
    }

    /// Tells server `at` that `about` is gone, as a transport hint
    /// ([`tern_core::Input::Unreachable`]): what a real agent concludes when
    /// a connection from `about` closes. May be false (`about` alive); the
    /// core must stay safe either way. Dropped if `at` is not running.
    pub fn hint_unreachable(&self, at: NodeId, about: NodeId) {
        let Some(slot) = self.slot(at) else {
            return;
        };
        let tx = slot.hints.lock().unwrap().clone();
        if let Some(tx) = tx {
            let _ = tx.send(tern_core::Input::Unreachable(about));
        }
    }

    /// An operator's graceful leave (`tern leave`, SIGTERM): the server hands
    /// leadership over, fails fast for `leave_drain_time`, then stops with
    /// [`NodeStatus::Left`], as the daemon exits. Dropped if it is not
    /// running.
    pub fn leave(&self, id: NodeId) {
        self.fault(format!("leave {id:?}"));
        let tx = self.slot(id).and_then(|s| s.hints.lock().unwrap().clone());
        if let Some(tx) = tx {
            let _ = tx.send(tern_core::Input::Leave);
        }
        // Consul's server leave leaves the LAN pool at once (the leader
        // then sees it `left` and removes it), before it waits to be removed.
        self.gossip_control(id, GossipControl::Leave);
    }

    /// An operator's `force-leave <name>` at server `at`'s gossip pool.
    pub fn force_leave(&self, at: NodeId, name: &str) {
        self.fault(format!("force-leave {name} at {at:?}"));
        self.gossip_control(at, GossipControl::ForceLeave(name.to_string()));
    }

    /// Server `at`'s gossip pool joins through `addresses` (`ip:8301`).
    pub fn gossip_join(&self, at: NodeId, addresses: Vec<String>) {
        self.gossip_control(at, GossipControl::Join(addresses));
    }

    fn gossip_control(&self, id: NodeId, c: GossipControl) {
        let tx = self
            .slot(id)
            .and_then(|s| s.gossip_control.lock().unwrap().clone());
        if let Some(tx) = tx {
            let _ = tx.send(c);
        }
    }

    /// What server `id`'s running gossip pool knows of every member, in
    /// name order; `None` while it runs no pool.
    pub fn gossip_members(&self, id: NodeId) -> Option<Vec<tern_core::gossip::Member>> {
        self.slot(id)?.gossip_view.lock().unwrap().clone()
    }

    /// The gossip address of a server (`10.0.0.x:8301`).
    pub fn gossip_address(&self, id: NodeId) -> Option<String> {
        self.shared
            .server_addr(id)
            .map(|a| crate::gossip::gossip_address(a).to_string())
    }

    /// A process that dies has its connections closed by its OS: every
    /// server that can still hear from it (no clogged link) gets a hint.
    fn connections_closed(&self, id: NodeId) {
        let others: Vec<NodeId> = self.servers().into_iter().filter(|o| *o != id).collect();
        for other in others {
            let cut = self
                .shared
                .clogged
                .lock()
                .unwrap()
                .contains(&(Peer::Server(id), Peer::Server(other)));
            if !cut {
                self.hint_unreachable(other, id);
            }
        }
    }

    /// Crashes the server if it is up, then starts it again from its disk.
    pub fn restart(&self, id: NodeId) {
        let status = self.status(id).expect("no such server");
        assert_ne!(status, NodeStatus::Removed, "a removed server stays down");
        self.crash(id, NodeStatus::Starting);
        self.fault(format!("restart {id:?}"));
        // madsim's restart alone keeps the old incarnation's sockets bound;
        // a kill first releases them.
        let sim = self.sim_id(Peer::Server(id));
        Handle::current().kill(sim);
        self.connections_closed(id);
        Handle::current().restart(sim);
    }

    /// Freezes the server's tasks (a long GC pause, a stopped VM): its
    /// timers and inbox pile up until `resume`.
    pub fn pause(&self, id: NodeId) {
        self.fault(format!("pause {id:?}"));
        Handle::current().pause(self.sim_id(Peer::Server(id)));
        self.set_status(id, NodeStatus::Paused);
    }

    pub fn resume(&self, id: NodeId) {
        self.fault(format!("resume {id:?}"));
        Handle::current().resume(self.sim_id(Peer::Server(id)));
        if self.status(id) == Some(NodeStatus::Paused) {
            self.set_status(id, NodeStatus::Running);
        }
    }

    /// Stops a server for good (its disk is kept for inspection).
    pub fn remove_node(&self, id: NodeId) {
        self.crash(id, NodeStatus::Removed);
        Handle::current().kill(self.sim_id(Peer::Server(id)));
        self.connections_closed(id);
    }

    fn set_status(&self, id: NodeId, status: NodeStatus) {
        if let Some(slot) = self.slot(id) {
            *slot.status.lock().unwrap() = status;
        }
    }

    fn crash(&self, id: NodeId, status: NodeStatus) {
        let slot = self.slot(id).expect("no such server");
        *slot.hints.lock().unwrap() = None;
        *slot.gossip_control.lock().unwrap() = None;
        *slot.gossip_view.lock().unwrap() = None;
        let down = matches!(
            *slot.status.lock().unwrap(),
            NodeStatus::Killed
                | NodeStatus::Removed
                | NodeStatus::Corrupt(_)
                | NodeStatus::Failed(_)
        );
        if down {
            // Nothing runs, so nothing is unsynced: no second crash to count.
            *slot.status.lock().unwrap() = status;
            return;
        }
        // The filesystem keeps every synced byte and a random prefix of the
        // rest (often tearing the last write), and may lose each directory
        // change made since its directory was last synced.
        let outcome = slot.fs.crash();
        *slot.server.lock().unwrap() = None;
        *slot.status.lock().unwrap() = status;
        {
            let mut c = slot.counters.lock().unwrap();
            c.crashes += 1;
            c.unsynced_bytes_lost += outcome.bytes_lost;
        }
        self.shared
            .record(WorldEvent::Crashed { node: id, outcome });
    }

    /// Flips a byte inside a durable record of a log segment that has intact
    /// records after it, so the server's next recovery must refuse to start.
    /// Returns the segment and the damaged record's offset (what the
    /// recovery error will name), or `None` if no segment holds two records.
    pub fn corrupt_disk(&self, id: NodeId) -> Option<(std::path::PathBuf, u64)> {
        let slot = self.slot(id)?;
        let mut rng = madsim::rand::thread_rng();
        let mut fs = slot.fs.lock();
        let candidates: Vec<(std::path::PathBuf, Vec<u64>)> = segments(&fs)
            .into_iter()
            .filter_map(|p| {
                let rec = tern_core::wire::recover(fs.contents(&p)?).ok()?;
                (rec.offsets.len() >= 2).then_some((p, rec.offsets))
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (path, offsets) = &candidates[rng.gen_range(0..candidates.len())];
        let which = rng.gen_range(0..offsets.len() - 1);
        let (start, end) = (offsets[which] as usize, offsets[which + 1] as usize);
        // Past the 8-byte header (length, checksum): a checksum mismatch,
        // not an implausible length.
        if start + 8 >= end {
            return None;
        }
        let at = rng.gen_range(start + 8..end);
        fs.flip_byte(path, at, 0x5a);
        drop(fs);
        self.fault(format!(
            "corrupt {} of {id:?} at offset {start}",
            path.display()
        ));
        Some((path.clone(), start as u64))
    }

    /// The server's next filesystem op of kind `op` (`FsOp::Write` or
    /// `FsOp::Sync`) fails with `errno` (`fs::EIO`, `fs::ENOSPC`).
    pub fn fail_next_disk_op(&self, id: NodeId, op: crate::fs::FsOp, errno: i32) {
        if let Some(slot) = self.slot(id) {
            slot.fs.lock().fail_next(op, errno);
            self.fault(format!("the next {op} on {id:?} fails with errno {errno}"));
        }
    }

    // ---- network faults ----

    fn clog(&self, from: Peer, to: Peer) {
        if from == to {
            return;
        }
        NetSim::current().clog_link(self.sim_id(from), self.sim_id(to));
        self.shared.clogged.lock().unwrap().insert((from, to));
    }

    fn unclog_servers(&self) {
        let net = NetSim::current();
        let mut clogged = self.shared.clogged.lock().unwrap();
        let links: Vec<(Peer, Peer)> = clogged
            .iter()
            .filter(|(a, b)| matches!((a, b), (Peer::Server(_), Peer::Server(_))))
            .copied()
            .collect();
        for (a, b) in links {
            net.unclog_link(self.sim_id(a), self.sim_id(b));
            clogged.remove(&(a, b));
        }
    }

    /// Splits the servers into groups that cannot reach each other (both
    /// directions). Replaces any earlier server-to-server partition or clog;
    /// a server in no group is alone. Clients still reach every server.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        self.unclog_servers();
        let servers = self.servers();
        let group_of = |id: NodeId| groups.iter().position(|g| g.contains(&id));
        for &a in &servers {
            for &b in &servers {
                let apart = match (group_of(a), group_of(b)) {
                    (Some(x), Some(y)) => x != y,
                    _ => true,
                };
                if a != b && apart {
                    self.clog(Peer::Server(a), Peer::Server(b));
                }
            }
        }
        self.fault(format!("partition {groups:?}"));
    }

    /// Drops everything `from` sends to `to` (the other way still works).
    pub fn clog_one_way(&self, from: NodeId, to: NodeId) {
        self.clog(Peer::Server(from), Peer::Server(to));
        self.fault(format!("clog {from:?} -> {to:?}"));
    }

    /// Cuts one server off from every other server (clients still reach it).
    pub fn isolate(&self, id: NodeId) {
        for other in self.servers() {
            self.clog(Peer::Server(id), Peer::Server(other));
            self.clog(Peer::Server(other), Peer::Server(id));
        }
        self.fault(format!("isolate {id:?}"));
    }

    /// Cuts a client off from a server, both ways.
    pub fn cut_client(&self, client: ClientId, server: NodeId) {
        self.clog(Peer::Client(client), Peer::Server(server));
        self.clog(Peer::Server(server), Peer::Client(client));
        self.fault(format!("cut {client:?} from {server:?}"));
    }

    /// A firewall that drops server `id`'s gossip port (8301) both ways
    /// while the server port works (the classic "UDP 8301 blocked"
    /// misconfiguration): its pool hears nothing and says nothing, so the
    /// others declare it failed while Raft still reaches it. `heal` lifts it.
    pub fn block_gossip(&self, id: NodeId, blocked: bool) {
        if let Some(slot) = self.slot(id) {
            slot.gossip_blocked
                .store(blocked, std::sync::atomic::Ordering::Relaxed);
        }
        self.fault(format!(
            "gossip of {id:?} {}",
            if blocked { "blocked" } else { "unblocked" }
        ));
    }

    /// Whether datagrams from `from` to `to` are dropped by a clog this
    /// world made (a partition, an isolation, a one-way clog).
    pub fn link_clogged(&self, from: NodeId, to: NodeId) -> bool {
        self.shared
            .clogged
            .lock()
            .unwrap()
            .contains(&(Peer::Server(from), Peer::Server(to)))
    }

    /// Restores every link this world clogged, and every blocked gossip port.
    pub fn heal(&self) {
        for slot in self.shared.servers.lock().unwrap().values() {
            slot.gossip_blocked
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let net = NetSim::current();
        let links: Vec<(Peer, Peer)> = std::mem::take(&mut *self.shared.clogged.lock().unwrap())
            .into_iter()
            .collect();
        for (a, b) in links {
            net.unclog_link(self.sim_id(a), self.sim_id(b));
        }
        self.fault("heal".into());
    }

    /// Make a server's disk full (every write fails with ENOSPC), or give
    /// it room again.
    pub fn set_disk_full(&self, id: NodeId, full: bool) {
        if let Some(slot) = self.slot(id) {
            slot.fs.lock().set_full(full);
            self.fault(format!(
                "the disk of {id:?} is {}",
                if full { "full" } else { "no longer full" }
            ));
        }
    }

    /// Give one server a disk of its own speed (a slow or failing disk), or
    /// `None` to go back to the world's.
    pub fn set_fsync_latency(&self, id: NodeId, latency: Option<(StdDuration, StdDuration)>) {
        if let Some(slot) = self.slot(id) {
            *slot.fsync_latency.lock().unwrap() = latency;
        }
        self.fault(format!("fsync latency of {id:?}: {latency:?}"));
    }

    /// Chance that any datagram is lost.
    pub fn set_loss(&self, rate: f64) {
        NetSim::current().update_config(|c| c.packet_loss_rate = rate.clamp(0.0, 1.0));
        self.fault(format!("loss {rate}"));
    }

    /// Each datagram takes a random time in `[min, max)`, so they reorder.
    pub fn set_latency(&self, min: StdDuration, max: StdDuration) {
        let max = if max > min {
            max
        } else {
            min + StdDuration::from_nanos(1)
        };
        NetSim::current().update_config(|c| c.send_latency = min..max);
        self.fault(format!("latency {min:?}..{max:?}"));
    }

    /// Chance that a server-to-server datagram is delivered twice.
    pub fn set_duplication(&self, rate: f64) {
        *self.shared.duplicate_rate.lock().unwrap() = rate.clamp(0.0, 1.0);
        self.fault(format!("duplicate {rate}"));
    }

    /// Sends raw bytes to a server's port from a throwaway client node, as
    /// a peer would (`as_peer`) or as a client request (otherwise):
    /// for tests that bad input is dropped and counted.
    pub async fn send_raw(&self, to: NodeId, bytes: Vec<u8>, as_peer: bool) {
        let dst = self.shared.server_addr(to).expect("no such server");
        let tag = if as_peer {
            crate::net::TAG_PEER
        } else {
            crate::net::TAG_REQUEST
        };
        let n = {
            let mut raw = self.shared.raw_senders.lock().unwrap();
            *raw += 1;
            50_000 + *raw
        };
        let node = Handle::current()
            .create_node()
            .name(format!("raw{n}"))
            .ip(client_ip(n))
            .build();
        node.spawn(async move {
            let ep = madsim::net::Endpoint::bind(SocketAddr::new(client_ip(n), CLIENT_PORT))
                .await
                .expect("bind");
            let _ = ep.send_to_raw(dst, tag, Box::new(bytes)).await;
        })
        .await
        .expect("raw sender task");
    }

    fn fault(&self, what: String) {
        self.shared.record(WorldEvent::Fault(what));
    }
}
/// Worlds whose shared state is still in memory, in this process.
static LIVE_WORLDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many worlds' shared state is still in memory in this process: after
/// a seed's run and [`World::shutdown`], its world is gone (a test checks
/// it, so long sweeps stay flat in memory).
pub fn live_worlds() -> usize {
    LIVE_WORLDS.load(std::sync::atomic::Ordering::Relaxed)
}

impl Drop for Shared {
    fn drop(&mut self) {
        LIVE_WORLDS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
