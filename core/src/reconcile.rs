//! What the LAN gossip pool says of the servers of this datacenter, and how
//! the leader turns it into the Raft configuration (Consul's
//! `leader.go` `reconcile`, Raft protocol 3).
//!
//! # The contract with the drivers
//!
//! Each driver runs the LAN [`Gossip`](crate::gossip::Gossip) pool beside the
//! [`Server`](crate::Server). For every gossip event about a member, it
//! calls [`ServerMember::from_gossip`]; when that gives a `ServerMember`
//! (the member is a server of this datacenter), the driver hands it to the
//! server as [`Input::ServerMember`](crate::Input::ServerMember). When the
//! server starts (and after bootstrap) the driver hands over every server
//! member the pool already knows, so nothing said before the server existed
//! is lost. A reaped member (`GossipEvent::MemberReaped`, forgotten after its
//! timeout) is reported with [`GossipStatus::None`] from the driver's last
//! copy of it. Events about this agent itself are reported too: they are
//! harmless.
//!
//! The server keeps the latest report per node; autopilot's health and
//! dead-server cleanup read the status, and the leader reconciles the
//! configuration from the reports (see [`crate::server`]).

use std::collections::BTreeMap;

use crate::autopilot::GossipStatus;
use crate::gossip::{Member, Status};
use crate::ids::{NodeId, NodeName};
use crate::raft::{Member as RaftMember, Membership, Suffrage};

/// A server of this datacenter as the LAN gossip pool sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMember {
    pub node: NodeId,
    /// The gossip member name (Consul's node name).
    pub name: NodeName,
    /// The server-port address: the gossip address's host with the `port`
    /// tag, as Consul's `metadata.IsConsulServer` builds it.
    pub address: String,
    pub status: GossipStatus,
    /// The `raft_vsn` tag (1 when absent).
    pub raft_vsn: u8,
}

impl ServerMember {
    /// The server member a gossip member stands for, if it is a server
    /// (`role=consul`) of datacenter `dc` with a server port and a node id
    /// tag that agrees with its identity. Anything else (a client agent,
    /// another datacenter's server, a member with unreadable tags) is not
    /// for the Raft configuration: `None`.
    pub fn from_gossip(member: &Member, dc: &str) -> Option<ServerMember> {
        if !member.tags.is_server() || member.tags.get("dc") != Some(dc) {
            return None;
        }
        let port = member.tags.server_port()?;
        if let Some(id) = member.tags.get("id") {
            if id != member.node_id.to_string() {
                return None;
            }
        }
        let host = host_of(&member.address)?;
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Some(ServerMember {
            node: member.node_id,
            name: NodeName(member.name.clone()),
            address,
            status: match member.status {
                Status::Alive => GossipStatus::Alive,
                Status::Leaving => GossipStatus::Leaving,
                Status::Left => GossipStatus::Left,
                Status::Failed => GossipStatus::Failed,
            },
            raft_vsn: member.tags.raft_vsn(),
        })
    }
}

/// One change the leader makes to the Raft configuration to bring it in
/// line with gossip (Consul's `leader.go`: `joinConsulServer`,
/// `removeConsulServer`), for logs and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileEvent {
    /// An alive server of this datacenter is not in the configuration: it
    /// joins as a non-voter (Raft protocol 3); autopilot promotes it once
    /// it is stable.
    AddingNonvoter {
        id: NodeId,
        name: NodeName,
        address: String,
    },
    /// Another server id holds the address of an alive server that is not
    /// in the configuration (a server that restarted with a new node id,
    /// Consul's ChangeServerID): the old entry is removed first.
    RemovingDuplicateAddress {
        old: NodeId,
        new: NodeId,
        address: String,
    },
    /// The server's node id is in the configuration with another address
    /// (it moved): the old entry is removed, then it is added again.
    RemovingMovedServer { id: NodeId, old_address: String },
    /// The server left the gossip pool (or was reaped from it): it is
    /// removed from the configuration.
    RemovingLeftServer { id: NodeId, status: GossipStatus },
    /// A change was wanted but would remove this server, the leader: it is
    /// never done here (a leaving leader hands over leadership first).
    WouldRemoveSelf { id: NodeId },
}

impl core::fmt::Display for ReconcileEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReconcileEvent::AddingNonvoter { id, name, address } => write!(
                f,
                "adding server {} ({id}) at {address} as a non-voter",
                name.0
            ),
            ReconcileEvent::RemovingDuplicateAddress { old, new, address } => write!(
                f,
                "removing server {old}: server {new} now has its address {address}"
            ),
            ReconcileEvent::RemovingMovedServer { id, old_address } => {
                write!(f, "removing server {id} at its old address {old_address}")
            }
            ReconcileEvent::RemovingLeftServer { id, status } => write!(
                f,
                "removing server {id}: it is {} in the gossip pool",
                match status {
                    GossipStatus::None => "gone",
                    s => s.as_str(),
                }
            ),
            ReconcileEvent::WouldRemoveSelf { id } => {
                write!(f, "not removing server {id}: it is this leader")
            }
        }
    }
}

/// What the leader knows from gossip about the servers of its datacenter,
/// and whether the configuration may be out of line with it.
#[derive(Clone, Debug, Default)]
pub struct Reconciler {
    members: BTreeMap<NodeId, ServerMember>,
    /// Something changed since the configuration was last found in line
    /// (a report, a new term, a change proposed): look again.
    dirty: bool,
}

impl Reconciler {
    pub fn new() -> Reconciler {
        Reconciler::default()
    }

    /// Take a report (`Input::ServerMember`). Only the latest per node counts.
    pub fn report(&mut self, m: ServerMember) {
        if self.members.get(&m.node) != Some(&m) {
            self.members.insert(m.node, m);
            self.dirty = true;
        }
    }

    /// The latest report for every server, by node id.
    pub fn members(&self) -> &BTreeMap<NodeId, ServerMember> {
        &self.members
    }

    /// Look again at the next chance (a new term, a change committed).
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The configuration is in line with gossip (`plan` found nothing).
    pub fn settled(&mut self) {
        self.dirty = false;
    }

    /// The next change that brings `config` in line with the reports, if
    /// any: at most one, as Raft takes one configuration change at a time.
    /// `Err` names a change that is needed but not made: `me` (the leader)
    /// is never removed here.
    pub fn plan(&self, me: NodeId, config: &Membership) -> Option<Plan> {
        let mut refused = None;
        for m in self.members.values() {
            let step = match m.status {
                GossipStatus::Alive => join(me, config, m),
                GossipStatus::Left | GossipStatus::None if config.contains(m.node) => {
                    if m.node == me {
                        Some(Err(ReconcileEvent::WouldRemoveSelf { id: me }))
                    } else {
                        let mut next = config.clone();
                        next.servers.remove(&m.node);
                        Some(Ok((
                            next,
                            ReconcileEvent::RemovingLeftServer {
                                id: m.node,
                                status: m.status,
                            },
                        )))
                    }
                }
                // A failed server is autopilot's to remove (bounded by its
                // quorum rules); a leaving one is left soon.
                _ => None,
            };
            match step {
                Some(Ok(change)) => return Some(Ok(change)),
                Some(Err(e)) => refused = refused.or(Some(Err(e))),
                None => {}
            }
        }
        refused
    }
}

/// A configuration change to propose with the reason for it, or the
/// reason a needed change is not made.
pub type Plan = Result<(Membership, ReconcileEvent), ReconcileEvent>;

/// The change that makes alive server `m` a member at its address, if one
/// is needed (`Ok`), or why the one needed is not made (`Err`).
fn join(me: NodeId, config: &Membership, m: &ServerMember) -> Option<Plan> {
    if let Some(current) = config.servers.get(&m.node) {
        if current.address == m.address {
            return None;
        }
        if m.node == me {
            return Some(Err(ReconcileEvent::WouldRemoveSelf { id: me }));
        }
        let mut next = config.clone();
        next.servers.remove(&m.node);
        return Some(Ok((
            next,
            ReconcileEvent::RemovingMovedServer {
                id: m.node,
                old_address: current.address.clone(),
            },
        )));
    }
    if let Some((old, _)) = config.servers.iter().find(|(_, s)| s.address == m.address) {
        if *old == me {
            return Some(Err(ReconcileEvent::WouldRemoveSelf { id: me }));
        }
        let mut next = config.clone();
        next.servers.remove(old);
        return Some(Ok((
            next,
            ReconcileEvent::RemovingDuplicateAddress {
                old: *old,
                new: m.node,
                address: m.address.clone(),
            },
        )));
    }
    let mut next = config.clone();
    next.servers.insert(
        m.node,
        RaftMember {
            name: m.name.clone(),
            address: m.address.clone(),
            suffrage: Suffrage::Nonvoter,
        },
    );
    Some(Ok((
        next,
        ReconcileEvent::AddingNonvoter {
            id: m.node,
            name: m.name.clone(),
            address: m.address.clone(),
        },
    )))
}

/// The host part of `host:port` or `[v6]:port`, without brackets.
fn host_of(address: &str) -> Option<&str> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        tail.strip_prefix(':')?;
        return Some(host);
    }
    let (host, _port) = address.rsplit_once(':')?;
    if host.is_empty() || host.contains(':') {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{Tags, Version};

    fn member(address: &str, tags: Tags, status: Status) -> Member {
        Member {
            name: "s1".into(),
            node_id: NodeId(7),
            address: address.into(),
            tags,
            version: Version::default(),
            status,
            suspect: false,
        }
    }

    #[test]
    fn a_server_of_this_datacenter_is_one_with_its_server_port() {
        let m = member(
            "10.0.0.5:8301",
            Tags::server("dc1", 8300, NodeId(7), 3, "0.1.0"),
            Status::Failed,
        );
        let s = ServerMember::from_gossip(&m, "dc1").unwrap();
        assert_eq!(s.address, "10.0.0.5:8300");
        assert_eq!(s.status, GossipStatus::Failed);
        assert_eq!(s.raft_vsn, 3);
        assert_eq!(s.name.0, "s1");
        let v6 = member(
            "[::1]:8301",
            Tags::server("dc1", 9300, NodeId(7), 3, "0.1.0"),
            Status::Alive,
        );
        assert_eq!(
            ServerMember::from_gossip(&v6, "dc1").unwrap().address,
            "[::1]:9300"
        );
    }

    #[test]
    fn clients_other_datacenters_and_bad_tags_are_not_servers() {
        let client = member(
            "10.0.0.5:8301",
            Tags::client("dc1", NodeId(7), "0.1.0"),
            Status::Alive,
        );
        assert_eq!(ServerMember::from_gossip(&client, "dc1"), None);
        let other = member(
            "10.0.0.5:8301",
            Tags::server("dc2", 8300, NodeId(7), 3, "0.1.0"),
            Status::Alive,
        );
        assert_eq!(ServerMember::from_gossip(&other, "dc1"), None);
        let mut tags = Tags::server("dc1", 8300, NodeId(7), 3, "0.1.0");
        tags.0.insert("port".into(), "http".into());
        assert_eq!(
            ServerMember::from_gossip(&member("10.0.0.5:8301", tags, Status::Alive), "dc1"),
            None
        );
        let lying = member(
            "10.0.0.5:8301",
            Tags::server("dc1", 8300, NodeId(8), 3, "0.1.0"),
            Status::Alive,
        );
        assert_eq!(ServerMember::from_gossip(&lying, "dc1"), None);
        let no_port = member(
            "10.0.0.5",
            Tags::server("dc1", 8300, NodeId(7), 3, "0.1.0"),
            Status::Alive,
        );
        assert_eq!(ServerMember::from_gossip(&no_port, "dc1"), None);
    }
}
