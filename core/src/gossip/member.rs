//! A member of a gossip pool as this agent sees it: who it is, where it
//! listens, what it carries, and what we believe about it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// Which version of a member a statement is about: `(generation,
/// incarnation)`, compared in that order. The generation is chosen by the
/// member when it starts (the driver renews it on every restart); the
/// incarnation is bumped by the member itself to refute a suspicion or to
/// announce new tags. A restarted member's first word outranks everything
/// said about its previous life, so a member declared failed comes back.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    pub generation: u64,
    pub incarnation: u32,
}

/// A member's tags, as Consul's serf tags: a string map with Consul's keys
/// (`role`, `dc`, `port`, `id`, `raft_vsn`, `build`, `vsn`). A map rather than
/// a struct so an older build passes on keys it does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tags(pub BTreeMap<String, String>);

impl Tags {
    /// The tags a Consul server carries (agent/consul/server.go, `setupSerf`):
    /// `role=consul`, its datacenter, server RPC port, node id, Raft protocol
    /// and build version.
    pub fn server(dc: &str, port: u16, id: NodeId, raft_vsn: u8, build: &str) -> Tags {
        let mut t = Tags::client(dc, id, build);
        t.0.insert("role".into(), "consul".into());
        t.0.insert("port".into(), port.to_string());
        t.0.insert("raft_vsn".into(), raft_vsn.to_string());
        t
    }

    /// The tags a Consul client agent carries (agent/consul/client_serf.go):
    /// `role=node`, datacenter, node id, build.
    pub fn client(dc: &str, id: NodeId, build: &str) -> Tags {
        let mut m = BTreeMap::new();
        m.insert("role".into(), "node".into());
        m.insert("dc".into(), dc.into());
        m.insert("id".into(), id.to_string());
        m.insert("build".into(), build.into());
        m.insert("vsn".into(), "2".into());
        Tags(m)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether the member is a server (`role=consul`).
    pub fn is_server(&self) -> bool {
        self.get("role") == Some("consul")
    }

    /// The server RPC port (`port`), if a server announced one.
    pub fn server_port(&self) -> Option<u16> {
        self.get("port")?.parse().ok()
    }

    /// The Raft protocol (`raft_vsn`); a member without it speaks 1, as
    /// Consul reads it.
    pub fn raft_vsn(&self) -> u8 {
        self.get("raft_vsn")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    /// The encoded size, checked against `tags_bytes_max` (memberlist's
    /// `MetaMaxSize`, 512).
    pub fn encoded_len(&self) -> usize {
        postcard::to_allocvec(self).map_or(usize::MAX, |b| b.len())
    }
}

/// Consul's member status, as `consul members` prints it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Reachable (or suspected but not yet declared failed: Consul shows a
    /// suspect member as alive too).
    Alive,
    /// This agent is leaving: only ever our own status.
    Leaving,
    /// Left on purpose, or force-left by an operator.
    Left,
    /// Declared dead by the failure detector.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }
}

/// What the pool knows about a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub node_id: NodeId,
    /// The gossip address (`host:port`) it is reached at.
    pub address: String,
    pub tags: Tags,
    pub version: Version,
    pub status: Status,
    /// Whether it is currently suspected (status still `Alive`).
    pub suspect: bool,
}
