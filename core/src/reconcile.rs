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

use crate::autopilot::GossipStatus;
use crate::gossip::{Member, Status};
use crate::ids::{NodeId, NodeName};

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
