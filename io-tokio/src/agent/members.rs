//! The agent's gossip: the LAN pool every agent runs and the WAN pool of a
//! server (`tern::gossip` on real sockets), joined as Consul joins, and what
//! they say handed to the rest of the agent.
//!
//! - **Joining** (Consul's agent/retry_join.go): `start_join` is tried once
//!   at start and the agent does not start if no address answers;
//!   `retry_join` is tried in the background every `retry_interval`, up to
//!   `retry_max` retries (0: forever), each failure logged at warn. An
//!   agent whose LAN `retry_join` is exhausted stops with exit code 1, as
//!   Consul's does ("Retry join failed"). The pool itself makes one attempt
//!   per join (`join_attempts_max = 1`): the retrying is this file's, so an
//!   operator's `tern join` is one attempt too (the driver runs joins one
//!   after another, each answered with its own result).
//! - **Servers for the core** (the contract in `tern_core::reconcile`): every
//!   LAN event about a member that `ServerMember::from_gossip` maps to a
//!   server of this datacenter is sent to the agent task, which hands it to
//!   the server as `Input::ServerMember` (and, before bootstrap, uses them
//!   for `bootstrap_expect`, with their `expect` and `raft_cluster` tags). The pool's current members are sent
//!   first, a reaped member is sent with `GossipStatus::None` from its last
//!   copy, and a subscriber that fell behind the event channel resyncs from
//!   the member list.
//! - **Alive servers** of this datacenter are published on a
//!   `watch::Receiver<Vec<ServerMember>>` ([`super::AgentHandle::servers`]).
//! - **WAN flood-join** (Consul's agent/router/serf_flooder.go): a server
//!   joins the WAN pool of every other server of its datacenter it sees in
//!   the LAN, at the `wan_join_port` tag.
//! - **Leave** (Consul's `Server.Leave` order): the WAN pool first, then the
//!   LAN pool; each leave is broadcast, so the others see `left`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use tern_core::autopilot::GossipStatus;
use tern_core::gossip::{GossipConfig, GossipEvent, KeyOp, KeyReport, Member, Status, Tags};
use tern_core::reconcile::ServerMember;
use tern_core::serf_health::LanMember;
use tokio::sync::{broadcast, mpsc, watch};

use super::{AgentOptions, PoolOptions};
use crate::gossip::{GossipError, GossipHandle, GossipNode, GossipRef, PoolKind};

/// Server-member reports queued for the agent task; when it is behind, the
/// event task waits (and resyncs from the member list if the pool's event
/// channel overflows meanwhile).
const REPORTS_MAX: usize = 1024;

/// The Raft protocol our servers speak (the `raft_vsn` tag).
const RAFT_VSN: u8 = 3;

/// The LAN tag with a server's `bootstrap_expect` (Consul's `expect`).
const EXPECT: &str = "expect";

/// The LAN tag of a server whose Raft log holds a configuration (it
/// bootstrapped, or started from a data dir that has one). Tern's stand-in
/// for the `Status.Peers` RPC Consul's `maybeBootstrap` sends every server
/// it found: a new server that sees it never bootstraps a configuration of
/// its own, which could clash with the cluster's first entry.
const RAFT_CLUSTER: &str = "raft_cluster";

/// What the LAN pool says of a server of this datacenter, for the agent
/// task.
#[derive(Clone, Debug)]
pub(crate) struct ServerReport {
    pub server: ServerMember,
    /// Its `expect` tag (`bootstrap_expect`), if it has one.
    pub expect: Option<usize>,
    /// Whether it says its Raft log holds a configuration.
    pub in_cluster: bool,
}

/// What the LAN pool says of a member of this datacenter (server or
/// client), for the agent task: the catalog's view of it
/// (`tern_core::serf_health`) and, for a server, its server report.
#[derive(Clone, Debug)]
pub(crate) struct MemberReport {
    pub lan: LanMember,
    pub server: Option<ServerReport>,
}

impl MemberReport {
    fn of(m: &Member, dc: &str) -> Option<MemberReport> {
        Some(MemberReport {
            lan: LanMember::from_gossip(m, dc)?,
            server: ServerReport::of(m, dc),
        })
    }
}

impl ServerReport {
    fn of(m: &Member, dc: &str) -> Option<ServerReport> {
        Some(ServerReport {
            server: ServerMember::from_gossip(m, dc)?,
            expect: m.tags.get(EXPECT).and_then(|e| e.parse().ok()),
            in_cluster: m.tags.get(RAFT_CLUSTER) == Some("1"),
        })
    }
}

/// The LAN tag naming a server's WAN gossip port (Consul's `wan_join_port`).
const WAN_JOIN_PORT: &str = "wan_join_port";

/// How often every known server of the datacenter is checked against the
/// WAN pool (Consul's flood-join ticker, 60 s).
const FLOOD_INTERVAL: StdDuration = StdDuration::from_secs(60);

/// The running pools of one agent.
pub struct Pools {
    pub(crate) lan: GossipHandle,
    /// Our LAN tags as announced at start.
    lan_tags: Tags,
    pub(crate) wan: Option<GossipHandle>,
    servers: watch::Receiver<Vec<ServerMember>>,
}

/// Which pool an operator's request is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pool {
    Lan,
    Wan,
}

/// Why a membership request failed; `Display` is the text Consul's HTTP
/// API answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembersError {
    /// `?wan` on an agent without a WAN pool.
    NoWan,
    Gossip(GossipError),
}

impl std::fmt::Display for MembersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembersError::NoWan => {
                f.write_str("Must be a server with the WAN pool enabled to use the WAN pool")
            }
            MembersError::Gossip(GossipError::ForceLeave { name, .. }) => {
                // Consul's Agent.ForceLeave.
                write!(f, "agent: No node found with name '{name}'")
            }
            MembersError::Gossip(e) => write!(f, "{e}"),
        }
    }
}

/// The build string our members carry (the `build` tag): the Consul version
/// we answer like, then ours, as `/v1/agent/self` reports it.
pub(crate) fn build() -> String {
    crate::version::build_tag()
}

impl Pools {
    /// Starts the LAN pool (and a server's WAN pool), joins `start_join`
    /// (an error if no address answers), and starts the background
    /// `retry_join`s. Server members of this datacenter are reported on the
    /// returned receiver from now on. `in_cluster`: the data dir already
    /// holds a Raft configuration.
    pub(crate) async fn start(
        options: &AgentOptions,
        in_cluster: bool,
    ) -> Result<(Pools, mpsc::Receiver<MemberReport>), String> {
        let core = &options.core;
        // Consul's tags: a server's (agent/consul/server.go `setupSerf`) or a
        // client agent's (agent/consul/client_serf.go).
        let tags = if options.server {
            Tags::server(
                &core.datacenter.0,
                options.server_addr.port(),
                core.node_id,
                RAFT_VSN,
                &build(),
            )
        } else {
            Tags::client(&core.datacenter.0, core.node_id, &build())
        };
        let wan = match options.wan.as_ref().filter(|_| options.server) {
            None => None,
            Some(w) => {
                let config = pool_config(
                    GossipConfig::wan(
                        &core.node_name.0,
                        &core.datacenter.0,
                        core.node_id,
                        &advertised(w),
                        tags.clone(),
                    ),
                    w,
                );
                let (config, file) = encrypted(config, options, crate::keyring::WAN_KEYRING)?;
                Some(
                    GossipNode::start_with_keyring_file(config, w.bind, PoolKind::Wan, file)
                        .await
                        .map_err(|e| {
                            format!(
                                "ports.serf_wan: cannot start the WAN gossip pool on {}: {e}",
                                w.bind
                            )
                        })?,
                )
            }
        };
        // Consul's servers tell the LAN where their WAN pool listens, so the
        // other servers of the datacenter flood-join it.
        let mut lan_tags = tags;
        if options.server && options.bootstrap_expect > 0 {
            lan_tags
                .0
                .insert(EXPECT.into(), options.bootstrap_expect.to_string());
        }
        if in_cluster {
            lan_tags.0.insert(RAFT_CLUSTER.into(), "1".into());
        }
        if let (Some(handle), Some(w)) = (&wan, &options.wan) {
            let port = match w.advertise.port() {
                0 => handle.local_addr().port(),
                p => p,
            };
            lan_tags.0.insert(WAN_JOIN_PORT.into(), port.to_string());
        }
        let lan_config = pool_config(
            GossipConfig::lan(
                &core.node_name.0,
                core.node_id,
                &advertised(&options.lan),
                lan_tags.clone(),
            ),
            &options.lan,
        );
        let (lan_config, lan_file) = encrypted(lan_config, options, crate::keyring::LAN_KEYRING)?;
        let lan = GossipNode::start_with_keyring_file(
            lan_config,
            options.lan.bind,
            PoolKind::Lan,
            lan_file,
        )
        .await
        .map_err(|e| {
            format!(
                "ports.serf_lan: cannot start the LAN gossip pool on {}: {e}",
                options.lan.bind
            )
        })?;
        let (reports_tx, reports_rx) = mpsc::channel(REPORTS_MAX);
        let (servers_tx, servers) = watch::channel(Vec::new());
        // Subscribe before any join so no event is missed.
        let events = lan.subscribe();
        tokio::spawn(report_servers(
            lan.members().await,
            events,
            lan.weak(),
            wan.as_ref().map(GossipHandle::weak),
            Flood {
                own_name: core.node_name.0.clone(),
                dc: core.datacenter.0.clone(),
                running: Default::default(),
            },
            reports_tx,
            servers_tx,
        ));
        let pools = Pools {
            lan,
            lan_tags,
            wan,
            servers,
        };
        pools.start_joins(options).await?;
        Ok((pools, reports_rx))
    }

    /// `start_join` for each pool: one attempt, an error if nothing answers.
    async fn start_joins(&self, options: &AgentOptions) -> Result<(), String> {
        let wanted = [
            (Some(&self.lan), Some(&options.lan), PoolKind::Lan),
            (self.wan.as_ref(), options.wan.as_ref(), PoolKind::Wan),
        ];
        for (handle, o, kind) in wanted {
            let (Some(handle), Some(o)) = (handle, o) else {
                continue;
            };
            if o.start_join.is_empty() {
                continue;
            }
            match handle.join(o.start_join.clone()).await {
                Ok(addr) => tracing::info!("agent: ({kind}) joined through {addr}"),
                Err(e) => return Err(format!("Failed to join {}: {e}", o.start_join.join(", "))),
            }
        }
        Ok(())
    }

    /// Announces that our Raft log now holds a configuration (after a
    /// bootstrap), so no new server bootstraps one of its own.
    pub(crate) async fn announce_in_cluster(&self) {
        let mut tags = self.lan_tags.clone();
        tags.0.insert(RAFT_CLUSTER.into(), "1".into());
        if let Err(e) = self.lan.set_tags(tags).await {
            tracing::warn!("agent: (LAN) could not update our tags: {e}");
        }
    }

    /// The alive servers of this datacenter, as the LAN pool sees them,
    /// sorted by name.
    pub fn servers(&self) -> watch::Receiver<Vec<ServerMember>> {
        self.servers.clone()
    }

    fn pool(&self, pool: Pool) -> Result<&GossipHandle, MembersError> {
        match pool {
            Pool::Lan => Ok(&self.lan),
            Pool::Wan => self.wan.as_ref().ok_or(MembersError::NoWan),
        }
    }

    /// Every member of the pool, ourselves included, by name.
    pub async fn members(&self, pool: Pool) -> Result<Vec<Member>, MembersError> {
        Ok(self.pool(pool)?.members().await)
    }

    /// One join attempt through `address` (an operator's `tern join`).
    pub async fn join(&self, pool: Pool, address: &str) -> Result<(), MembersError> {
        self.pool(pool)?
            .join(vec![address.to_string()])
            .await
            .map(|_| ())
            .map_err(MembersError::Gossip)
    }

    /// An operator's force-leave. An unknown name is an error; a member that
    /// is still alive is left alone (it would refute the leave at once, as
    /// a Consul member does) and the request succeeds, as in Consul.
    pub async fn force_leave(
        &self,
        pool: Pool,
        name: &str,
        prune: bool,
    ) -> Result<(), MembersError> {
        match self.pool(pool)?.force_leave(name, prune).await {
            Ok(()) => Ok(()),
            Err(GossipError::ForceLeave {
                reason: tern_core::gossip::ForceLeaveError::NotFailed,
                ..
            }) => {
                tracing::warn!("agent: force-leave of {name}: the member is alive; it stays alive");
                Ok(())
            }
            Err(e) => Err(MembersError::Gossip(e)),
        }
    }

    /// Leaves the WAN pool, then the LAN pool, each once its leave has been
    /// broadcast (Consul's `Server.Leave`).
    pub(crate) async fn leave(&self) {
        if let Some(wan) = &self.wan {
            if let Err(e) = wan.leave().await {
                tracing::error!("agent: failed to leave the WAN pool: {e}");
            }
        }
        if let Err(e) = self.lan.leave().await {
            tracing::error!("agent: failed to leave the LAN pool: {e}");
        }
    }

    /// A keyring operation on every pool of this agent, the WAN pool first
    /// and then the LAN pool, as Consul's `Internal.KeyringOperation`
    /// orders its answers.
    pub async fn keyring(&self, op: KeyOp) -> Vec<(Pool, Result<KeyReport, GossipError>)> {
        let mut out = Vec::new();
        if let Some(wan) = &self.wan {
            out.push((Pool::Wan, wan.keyring(op.clone()).await));
        }
        out.push((Pool::Lan, self.lan.keyring(op).await));
        out
    }

    /// Each pool's keys as this agent holds them (`?local-only`), WAN first.
    pub async fn local_keyring(
        &self,
    ) -> Vec<(Pool, Result<tern_core::gossip::Keyring, GossipError>)> {
        let mut out = Vec::new();
        if let Some(wan) = &self.wan {
            out.push((Pool::Wan, wan.local_keyring().await));
        }
        out.push((Pool::Lan, self.lan.local_keyring().await));
        out
    }

    /// Starts the background `retry_join` of each pool.
    pub(crate) fn spawn_retry_joins(pools: &std::sync::Arc<Pools>, options: &AgentOptions) {
        let wanted = [
            (Pool::Lan, Some(&options.lan)),
            (Pool::Wan, options.wan.as_ref()),
        ];
        for (pool, o) in wanted {
            let Some(o) = o else { continue };
            if o.retry_join.is_empty() || pools.pool(pool).is_err() {
                continue;
            }
            tokio::spawn(retry_join(pools.clone(), pool, o.clone()));
        }
    }
}

/// The pool's keyring (its file in the data dir, or `encrypt`) and the
/// `encrypt_verify_*` settings, with the file its changes are written to.
fn encrypted(
    mut c: GossipConfig,
    options: &AgentOptions,
    file: &str,
) -> Result<(GossipConfig, Option<std::path::PathBuf>), String> {
    let (ring, path) = crate::keyring::setup(options.data_dir.as_deref(), file, &options.encrypt)?;
    c.keyring = ring;
    c.encrypt_verify_incoming = options.encrypt.verify_incoming;
    c.encrypt_verify_outgoing = options.encrypt.verify_outgoing;
    Ok((c, path))
}

/// The pool's timings with the agent's join settings: the pool makes one
/// attempt per join; [`retry_join`] does the retrying.
fn pool_config(mut c: GossipConfig, o: &PoolOptions) -> GossipConfig {
    c.join_attempts_max = 1;
    c.join_retry_min = o.retry_interval;
    c.join_retry_max = o.retry_interval;
    c
}

/// The address to advertise; empty (the bound address) when the port is
/// chosen by the OS.
fn advertised(o: &PoolOptions) -> String {
    if o.advertise.port() == 0 {
        String::new()
    } else {
        o.advertise.to_string()
    }
}

/// Consul's retryJoiner: try every address, wait `retry_interval`, again,
/// until one answers or `retry_max` retries have failed too (then the LAN
/// retry stops the agent, as Consul's `retryJoinCh` does).
async fn retry_join(pools: std::sync::Arc<Pools>, pool: Pool, o: PoolOptions) {
    let kind = match pool {
        Pool::Lan => PoolKind::Lan,
        Pool::Wan => PoolKind::Wan,
    };
    tracing::info!(
        "agent: ({kind}) retry join: addresses={}",
        o.retry_join.join(",")
    );
    let Ok(handle) = pools.pool(pool) else {
        return;
    };
    let mut attempt: u32 = 0;
    loop {
        match handle.join(o.retry_join.clone()).await {
            Ok(addr) => {
                tracing::info!(
                    "agent: ({kind}) Join cluster completed. Synced with initial agents: {addr}"
                );
                return;
            }
            // Leaving or stopped: nothing more to join.
            Err(GossipError::Leaving | GossipError::Stopped) => return,
            Err(e) => {
                attempt = attempt.saturating_add(1);
                // As Consul counts: `retry_max` retries after the first
                // attempt (agent/retry_join.go, `attempt > maxAttempts`).
                if o.retry_max > 0 && attempt > o.retry_max {
                    tracing::error!(
                        "agent: max join {kind} retry exhausted, exiting: attempts={attempt} error={e}"
                    );
                    if pool == Pool::Lan {
                        std::process::exit(1);
                    }
                    return;
                }
                tracing::warn!(
                    "agent: ({kind}) Join cluster failed, will retry: attempt={attempt} retry_interval={}s error={e}",
                    o.retry_interval.as_millis() / 1000
                );
                tokio::time::sleep(StdDuration::from_nanos(o.retry_interval.as_nanos())).await;
            }
        }
    }
}

/// Who we are, for the WAN flood-join.
struct Flood {
    own_name: String,
    dc: String,
    /// A flood is running: the next event or tick starts another.
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Reports server members of `dc` to the agent task and keeps the alive
/// list current, from the member list `initial` and then every event; a
/// server also flood-joins the WAN pools of the other servers of its
/// datacenter (Consul's agent/router/serf_flooder.go), on every LAN event
/// about one and every [`FLOOD_INTERVAL`].
async fn report_servers(
    initial: Vec<Member>,
    mut events: broadcast::Receiver<GossipEvent>,
    resync: GossipRef,
    wan: Option<GossipRef>,
    flood: Flood,
    reports: mpsc::Sender<MemberReport>,
    alive: watch::Sender<Vec<ServerMember>>,
) {
    let mut r = Reporter {
        dc: flood.dc.clone(),
        last: BTreeMap::new(),
        reports,
        alive,
    };
    if r.sync(initial).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(FLOOD_INTERVAL);
    loop {
        let sent = tokio::select! {
            e = events.recv() => match e {
                Ok(e) => {
                    let flood_now = matches!(
                        e,
                        GossipEvent::MemberJoined(_) | GossipEvent::MemberUpdated(_)
                    );
                    let sent = r.event(e).await;
                    if flood_now {
                        flood_join(&r.last, wan.as_ref(), &flood);
                    }
                    sent
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        "agent: fell {n} gossip events behind; reading the member list again"
                    );
                    r.sync(resync.members().await).await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                flood_join(&r.last, wan.as_ref(), &flood);
                Ok(())
            }
        };
        if sent.is_err() {
            return; // the agent task is gone
        }
    }
}

/// Joins the WAN pool through every alive server of our datacenter that the
/// LAN knows and the WAN does not (by `<node>.<dc>`), at its LAN host and
/// its `wan_join_port` tag. The joins run on their own task; a failure is
/// logged and tried again on the next event or tick.
fn flood_join(lan: &BTreeMap<String, Member>, wan: Option<&GossipRef>, flood: &Flood) {
    let Some(wan) = wan else {
        return;
    };
    let candidates: Vec<(String, String)> = lan
        .values()
        .filter(|m| m.status == Status::Alive && m.name != flood.own_name)
        .filter_map(|m| {
            let server = ServerMember::from_gossip(m, &flood.dc)?;
            let port: u16 = m.tags.get(WAN_JOIN_PORT)?.parse().ok()?;
            let (host, _) = split_address(&m.address);
            let ip: std::net::IpAddr = host.parse().ok()?;
            let addr = SocketAddr::new(ip, port).to_string();
            Some((format!("{}.{}", server.name.0, flood.dc), addr))
        })
        .collect();
    use std::sync::atomic::Ordering;
    if candidates.is_empty() || flood.running.swap(true, Ordering::AcqRel) {
        return;
    }
    let wan = wan.clone();
    let running = flood.running.clone();
    tokio::spawn(async move {
        let known: std::collections::BTreeSet<String> =
            wan.members().await.into_iter().map(|m| m.name).collect();
        for (name, addr) in candidates {
            if known.contains(&name) {
                continue;
            }
            match wan.join(vec![addr.clone()]).await {
                Ok(_) => tracing::info!("agent: (WAN) flood-joined {name} at {addr}"),
                Err(e) => {
                    tracing::warn!("agent: (WAN) failed to flood-join {name} at {addr}: {e}")
                }
            }
        }
        running.store(false, Ordering::Release);
    });
}

struct Reporter {
    dc: String,
    /// The last copy of every member, by name: what a reaped member is
    /// reported from, and what a resync is compared with.
    last: BTreeMap<String, Member>,
    reports: mpsc::Sender<MemberReport>,
    alive: watch::Sender<Vec<ServerMember>>,
}

/// The agent task has stopped.
struct Gone;

impl Reporter {
    async fn event(&mut self, e: GossipEvent) -> Result<(), Gone> {
        match e {
            GossipEvent::MemberJoined(m)
            | GossipEvent::MemberUpdated(m)
            | GossipEvent::MemberAlive(m)
            | GossipEvent::MemberFailed(m)
            | GossipEvent::MemberLeft(m) => self.update(m).await,
            GossipEvent::MemberReaped { name, .. } => self.reaped(&name).await,
            _ => Ok(()),
        }
    }

    async fn update(&mut self, m: Member) -> Result<(), Gone> {
        let report = MemberReport::of(&m, &self.dc);
        self.last.insert(m.name.clone(), m);
        self.publish_alive();
        match report {
            Some(r) => self.reports.send(r).await.map_err(|_| Gone),
            None => Ok(()),
        }
    }

    async fn reaped(&mut self, name: &str) -> Result<(), Gone> {
        let Some(m) = self.last.remove(name) else {
            return Ok(());
        };
        self.publish_alive();
        match MemberReport::of(&m, &self.dc) {
            Some(mut r) => {
                r.lan.status = GossipStatus::None;
                if let Some(s) = r.server.as_mut() {
                    s.server.status = GossipStatus::None;
                }
                self.reports.send(r).await.map_err(|_| Gone)
            }
            None => Ok(()),
        }
    }

    /// Brings `last` to `members`: every member that is new or changed is
    /// reported, every member no longer listed is reported reaped.
    async fn sync(&mut self, members: Vec<Member>) -> Result<(), Gone> {
        let listed: BTreeMap<String, Member> =
            members.into_iter().map(|m| (m.name.clone(), m)).collect();
        let gone: Vec<String> = self
            .last
            .keys()
            .filter(|n| !listed.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.reaped(&name).await?;
        }
        for (name, m) in listed {
            let same = self.last.get(&name).is_some_and(|old| {
                old.status == m.status && old.address == m.address && old.tags == m.tags
            });
            if !same {
                self.update(m).await?;
            }
        }
        Ok(())
    }

    fn publish_alive(&self) {
        let alive: Vec<ServerMember> = self
            .last
            .values()
            .filter(|m| m.status == Status::Alive)
            .filter_map(|m| ServerMember::from_gossip(m, &self.dc))
            .collect();
        self.alive.send_if_modified(|current| {
            if *current == alive {
                false
            } else {
                *current = alive;
                true
            }
        });
    }
}

/// The gossip address of a member as Consul's JSON splits it: host and port.
pub(crate) fn split_address(address: &str) -> (String, u16) {
    match address.parse::<SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => match address.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse().unwrap_or(0),
            ),
            None => (address.to_string(), 0),
        },
    }
}
