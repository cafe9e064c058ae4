//! Every LAN gossip member of this datacenter in the catalog, as Consul's
//! leader keeps it (`leader.go`: `reconcileMember`, `handleAliveMember`,
//! `handleFailedMember`, `handleLeftMember`/`handleReapMember`).
//!
//! # The contract with the drivers
//!
//! Beside [`Input::ServerMember`](crate::Input::ServerMember) (servers only,
//! for the Raft configuration), a driver hands the server every member of
//! its LAN pool that belongs to this datacenter, clients too, as
//! [`Input::LanMember`](crate::Input::LanMember): for every gossip event
//! about a member, [`LanMember::from_gossip`]; at start, every member the
//! pool already knows; a reaped member with [`GossipStatus::None`] from the
//! driver's last copy of it.
//!
//! # What the leader does with them
//!
//! The leader keeps the latest report per member name and, once it has
//! committed an entry of its term, brings the catalog in line one write at
//! a time (the next is looked for once the previous one is applied):
//!
//! - alive: the node at the member's address with check `serfHealth`
//!   ("Serf Health Status") passing, output "Agent alive and reachable";
//!   a server also carries service `consul` (ID `consul`) at its server
//!   port;
//! - failed: the node with `serfHealth` critical, output "Agent not live or
//!   unreachable";
//! - left or reaped: the node deregistered (never the leader's own).
//!
//! A member whose catalog rows already say this is not written: no Raft
//! entry per report or per term. Sessions on a member's node are
//! invalidated by the state machine when `serfHealth` goes critical or the
//! node goes (see `fsm::session`).

use std::collections::BTreeMap;

use crate::autopilot::GossipStatus;
use crate::fsm::{Check, CheckDefinition, Command, Deregister, Fsm, Register, Service};
use crate::gossip::{Member, Status};

/// Consul's `structs.SerfCheckID` and its name and outputs.
pub const SERF_CHECK_ID: &str = "serfHealth";
pub const SERF_CHECK_NAME: &str = "Serf Health Status";
pub const SERF_CHECK_ALIVE_OUTPUT: &str = "Agent alive and reachable";
pub const SERF_CHECK_FAILED_OUTPUT: &str = "Agent not live or unreachable";
/// Consul's `structs.ConsulServiceID` / `ConsulServiceName`.
pub const CONSUL_SERVICE: &str = "consul";

/// A member of this datacenter's LAN pool, server or client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanMember {
    /// The gossip member name: the catalog node name.
    pub name: String,
    /// The gossip address's host (the catalog node address).
    pub address: String,
    pub status: GossipStatus,
    /// A server's server port (its `port` tag); `None` for a client.
    pub server_port: Option<u16>,
}

impl LanMember {
    /// The member `m` stands for if it belongs to datacenter `dc` (its `dc`
    /// tag) and has a readable address; `None` otherwise.
    pub fn from_gossip(m: &Member, dc: &str) -> Option<LanMember> {
        if m.tags.get("dc") != Some(dc) {
            return None;
        }
        let address = host_of(&m.address)?.to_owned();
        let server_port = if m.tags.is_server() {
            m.tags.server_port()
        } else {
            None
        };
        Some(LanMember {
            name: m.name.clone(),
            address,
            status: match m.status {
                Status::Alive => GossipStatus::Alive,
                Status::Leaving => GossipStatus::Leaving,
                Status::Left => GossipStatus::Left,
                Status::Failed => GossipStatus::Failed,
            },
            server_port,
        })
    }
}

fn host_of(address: &str) -> Option<&str> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        tail.strip_prefix(':')?;
        return Some(host);
    }
    let (host, port) = address.rsplit_once(':')?;
    if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
        return None;
    }
    Some(host)
}

/// The leader's copy of what gossip says of each member, and whether the
/// catalog may be out of line with it.
#[derive(Clone, Debug, Default)]
pub struct SerfHealth {
    members: BTreeMap<String, LanMember>,
    dirty: bool,
    /// The Raft index of the catalog write in flight: the next is planned
    /// once it is applied.
    in_flight: Option<u64>,
    /// A write the state machine refused (a full table): not proposed
    /// again until a report changes something, or it would be proposed
    /// after every apply.
    refused: Option<Command>,
}

impl SerfHealth {
    /// Takes a report; only the latest per member name counts.
    pub fn report(&mut self, m: LanMember) {
        if self.members.get(&m.name) != Some(&m) {
            self.members.insert(m.name.clone(), m);
            self.dirty = true;
            self.refused = None;
        }
    }

    pub fn members(&self) -> &BTreeMap<String, LanMember> {
        &self.members
    }

    /// Look again (a new term, a catalog write applied).
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Whether a look is due given that the state machine applied through
    /// `applied`.
    pub fn due(&mut self, applied: u64) -> bool {
        if let Some(i) = self.in_flight {
            if applied < i {
                return false;
            }
            self.in_flight = None;
            self.dirty = true;
        }
        self.dirty
    }

    /// A write for the member's catalog rows was proposed at `index`.
    pub fn proposed(&mut self, index: u64) {
        self.in_flight = Some(index);
    }

    /// The write proposed at `index` was applied and refused.
    pub fn applied(&mut self, index: u64, command: &Command, ok: bool) {
        if !ok && self.in_flight == Some(index) {
            self.refused = Some(command.clone());
        }
    }

    /// Leadership lost or a proposal refused: forget the write in flight.
    pub fn reset(&mut self) {
        self.in_flight = None;
        self.dirty = true;
    }

    /// The next catalog write that brings a member's rows in line with
    /// gossip, if any (`None` also clears the dirty flag). `me` is the
    /// leader's own node name (never deregistered here), `dc` the
    /// datacenter its registrations name.
    pub fn plan(&mut self, fsm: &Fsm, me: &str, dc: &str) -> Option<Command> {
        for m in self.members.values() {
            if let Some(cmd) = plan_member(fsm, m, me, dc) {
                if self.refused.as_ref() != Some(&cmd) {
                    return Some(cmd);
                }
            }
        }
        self.dirty = false;
        None
    }
}

/// The write member `m` needs, if any.
fn plan_member(fsm: &Fsm, m: &LanMember, me: &str, dc: &str) -> Option<Command> {
    let (_, found) = fsm.catalog_node_services(&m.name);
    // By name only: `catalog_node_services` also resolves ID prefixes.
    let found = found.filter(|ns| ns.node.node.eq_ignore_ascii_case(&m.name));
    let serf = || {
        fsm.catalog_node_checks(&m.name)
            .1
            .into_iter()
            .find(|c| c.check_id.eq_ignore_ascii_case(SERF_CHECK_ID))
    };
    match m.status {
        GossipStatus::Alive => {
            let node_ok = found
                .as_ref()
                .is_some_and(|ns| ns.node.address == m.address);
            let service_ok = match m.server_port {
                None => true,
                Some(port) => found.as_ref().is_some_and(|ns| {
                    ns.services
                        .iter()
                        .any(|s| s.id == CONSUL_SERVICE && s.port == i64::from(port))
                }),
            };
            let check_ok = serf()
                .is_some_and(|c| c.status == "passing" && c.output == SERF_CHECK_ALIVE_OUTPUT);
            if node_ok && service_ok && check_ok {
                return None;
            }
            let service = m.server_port.map(|port| Service {
                kind: String::new(),
                id: CONSUL_SERVICE.to_owned(),
                service: CONSUL_SERVICE.to_owned(),
                tags: None,
                address: String::new(),
                tagged_addresses: BTreeMap::new(),
                meta: None,
                port: i64::from(port),
                weights: None,
                enable_tag_override: false,
                create_index: 0,
                modify_index: 0,
            });
            let known = found.as_ref().map(|ns| &ns.node);
            let mut cmd = register(m, dc, known, service, "passing", SERF_CHECK_ALIVE_OUTPUT);
            // Unless the address must be fixed, leave the node as it is
            // when the write applies: its own agent may have written it
            // (ID, meta) after this plan was made. A node still missing
            // then is created all the same (the FSM skips only an update).
            if let Command::CatalogRegister(r) = &mut cmd {
                r.skip_node_update = found.is_none() || node_ok;
            }
            Some(cmd)
        }
        GossipStatus::Failed => {
            if found.is_some() && serf().is_some_and(|c| c.status == "critical") {
                return None;
            }
            let mut cmd = register(m, dc, None, None, "critical", SERF_CHECK_FAILED_OUTPUT);
            // Consul's `handleFailedMember`: an existing node is not
            // clobbered, only its serfHealth check is written.
            if let Command::CatalogRegister(r) = &mut cmd {
                r.skip_node_update = true;
            }
            Some(cmd)
        }
        GossipStatus::Left | GossipStatus::None => {
            if found.is_none() || m.name.eq_ignore_ascii_case(me) {
                return None;
            }
            Some(Command::CatalogDeregister(Deregister {
                node: m.name.clone(),
                service_id: String::new(),
                check_id: String::new(),
            }))
        }
        // Leaving: left soon; Consul's reconcile waits for left too.
        GossipStatus::Leaving => None,
    }
}

/// A registration of member `m`. What the catalog already knows of the
/// node (its ID, tagged addresses and metadata, which the node's own agent
/// writes) is carried over, as Consul's `handleAliveMember` does: the
/// leader's reconcile only fixes the address, the `consul` service and
/// serfHealth.
fn register(
    m: &LanMember,
    dc: &str,
    known: Option<&crate::fsm::Node>,
    service: Option<Service>,
    status: &str,
    output: &str,
) -> Command {
    Command::CatalogRegister(Box::new(Register {
        id: known.map(|n| n.id.clone()).unwrap_or_default(),
        node: m.name.clone(),
        address: m.address.clone(),
        datacenter: dc.to_owned(),
        tagged_addresses: known.and_then(|n| n.tagged_addresses.clone()),
        node_meta: known.and_then(|n| n.meta.clone()),
        service,
        checks: vec![Check {
            node: m.name.clone(),
            check_id: SERF_CHECK_ID.to_owned(),
            name: SERF_CHECK_NAME.to_owned(),
            status: status.to_owned(),
            notes: String::new(),
            output: output.to_owned(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: None,
            kind: String::new(),
            definition: CheckDefinition::default(),
            create_index: 0,
            modify_index: 0,
        }],
        skip_node_update: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::ApplyResult;
    use crate::gossip::{Tags, Version};
    use crate::ids::NodeId;

    fn member(name: &str, status: GossipStatus, server_port: Option<u16>) -> LanMember {
        LanMember {
            name: name.into(),
            address: "10.0.0.1".into(),
            status,
            server_port,
        }
    }

    /// Applies what `plan` asks until it asks nothing; returns how many
    /// writes that took.
    fn settle(fsm: &mut Fsm, sh: &mut SerfHealth, next: &mut u64) -> usize {
        let mut writes = 0;
        while let Some(cmd) = sh.plan(fsm, "s1", "dc1") {
            *next += 1;
            let r = fsm.apply(*next, &cmd);
            assert!(matches!(r, ApplyResult::Catalog(Ok(()))), "{r:?}");
            writes += 1;
            assert!(writes < 10, "plan does not settle");
        }
        writes
    }

    #[test]
    fn members_of_this_datacenter_only_clients_without_a_port() {
        let m = Member {
            name: "c1".into(),
            node_id: NodeId(9),
            address: "10.0.0.9:8301".into(),
            tags: Tags::client("dc1", NodeId(9), "0.1.0"),
            version: Version::default(),
            status: Status::Failed,
            suspect: false,
        };
        assert_eq!(
            LanMember::from_gossip(&m, "dc1"),
            Some(LanMember {
                name: "c1".into(),
                address: "10.0.0.9".into(),
                status: GossipStatus::Failed,
                server_port: None,
            })
        );
        assert_eq!(LanMember::from_gossip(&m, "dc2"), None);
        let s = Member {
            tags: Tags::server("dc1", 8300, NodeId(9), 3, "0.1.0"),
            ..m
        };
        assert_eq!(
            LanMember::from_gossip(&s, "dc1").unwrap().server_port,
            Some(8300)
        );
    }

    /// What a node's own agent wrote of it (ID, tagged addresses, meta)
    /// survives the leader's reconcile, alive and failed (Consul's
    /// `handleAliveMember` carries them over; `handleFailedMember` sets
    /// `SkipNodeUpdate`).
    #[test]
    fn reconcile_keeps_what_the_nodes_agent_wrote() {
        let mut fsm = Fsm::new();
        let mut sh = SerfHealth::default();
        let meta: crate::fsm::Meta = [("rack".to_owned(), "r1".to_owned())].into();
        let tagged: BTreeMap<String, String> = [("wan".to_owned(), "1.2.3.4".to_owned())].into();
        let own = Command::CatalogRegister(Box::new(Register {
            id: "2b3c1a2e-0000-4000-8000-000000000001".into(),
            node: "c1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: Some(tagged.clone()),
            node_meta: Some(meta.clone()),
            service: None,
            checks: Vec::new(),
            skip_node_update: false,
        }));
        assert!(matches!(fsm.apply(1, &own), ApplyResult::Catalog(Ok(()))));
        let mut index = 1;
        let kept = |fsm: &Fsm| {
            let (_, ns) = fsm.catalog_node_services("c1");
            let n = ns.expect("the node").node;
            assert_eq!(n.id, "2b3c1a2e-0000-4000-8000-000000000001");
            assert_eq!(n.meta.as_ref(), Some(&meta));
            assert_eq!(n.tagged_addresses.as_ref(), Some(&tagged));
        };
        sh.report(member("c1", GossipStatus::Alive, None));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        kept(&fsm);
        sh.report(member("c1", GossipStatus::Failed, None));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        kept(&fsm);
        assert_eq!(fsm.catalog_node_checks("c1").1[0].status, "critical");

        // A plan made before the agent's own write and applied after it
        // (the leader's reconcile racing the agent's first sync) does not
        // undo it.
        let mut fsm = Fsm::new();
        let mut sh = SerfHealth::default();
        sh.report(member("c1", GossipStatus::Alive, None));
        let planned = sh.plan(&fsm, "s1", "dc1").expect("a registration");
        assert!(matches!(fsm.apply(1, &own), ApplyResult::Catalog(Ok(()))));
        assert!(matches!(
            fsm.apply(2, &planned),
            ApplyResult::Catalog(Ok(()))
        ));
        kept(&fsm);
        assert_eq!(fsm.catalog_node_checks("c1").1[0].status, "passing");
    }

    /// Consul's `handleAliveMember`/`handleFailedMember`/`handleLeftMember`:
    /// alive registers the node with serfHealth passing (and `consul` for a
    /// server), failed turns it critical, left deregisters; each only once.
    #[test]
    fn alive_failed_left_each_write_once() {
        let mut fsm = Fsm::new();
        let mut sh = SerfHealth::default();
        let mut index = 0;
        sh.report(member("s2", GossipStatus::Alive, Some(8300)));
        sh.report(member("c1", GossipStatus::Alive, None));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 2);
        let (_, checks) = fsm.catalog_node_checks("s2");
        assert_eq!(checks.len(), 1);
        assert_eq!(
            (
                checks[0].check_id.as_str(),
                checks[0].name.as_str(),
                checks[0].status.as_str(),
                checks[0].output.as_str()
            ),
            (
                "serfHealth",
                "Serf Health Status",
                "passing",
                "Agent alive and reachable"
            )
        );
        let s2 = fsm.catalog_node_services("s2").1.unwrap();
        assert_eq!(s2.services.len(), 1);
        assert_eq!(
            (s2.services[0].id.as_str(), s2.services[0].port),
            ("consul", 8300)
        );
        assert!(fsm
            .catalog_node_services("c1")
            .1
            .unwrap()
            .services
            .is_empty());
        // Nothing changed: nothing to write, however often it looks.
        sh.touch();
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 0);
        sh.report(member("s2", GossipStatus::Alive, Some(8300)));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 0);

        sh.report(member("c1", GossipStatus::Failed, None));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        let c = &fsm.catalog_node_checks("c1").1[0];
        assert_eq!(
            (c.status.as_str(), c.output.as_str()),
            ("critical", "Agent not live or unreachable")
        );
        sh.report(member("c1", GossipStatus::Alive, None));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        assert_eq!(fsm.catalog_node_checks("c1").1[0].status, "passing");

        sh.report(member("c1", GossipStatus::Left, None));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        assert!(fsm.catalog_node_services("c1").1.is_none());
        // Reaped afterwards: already gone.
        sh.report(member("c1", GossipStatus::None, None));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 0);
        // The leader's own node is never deregistered here.
        sh.report(member("s1", GossipStatus::Alive, Some(8300)));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        sh.report(member("s1", GossipStatus::Left, Some(8300)));
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 0);
        assert!(fsm.catalog_node_services("s1").1.is_some());
    }

    #[test]
    fn a_moved_node_or_a_lost_service_is_written_again() {
        let mut fsm = Fsm::new();
        let mut sh = SerfHealth::default();
        let mut index = 0;
        sh.report(member("s2", GossipStatus::Alive, Some(8300)));
        settle(&mut fsm, &mut sh, &mut index);
        let mut moved = member("s2", GossipStatus::Alive, Some(8300));
        moved.address = "10.0.0.2".into();
        sh.report(moved);
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        assert_eq!(
            fsm.catalog_node_services("s2").1.unwrap().node.address,
            "10.0.0.2"
        );
        index += 1;
        fsm.apply(
            index,
            &Command::CatalogDeregister(Deregister {
                node: "s2".into(),
                service_id: "consul".into(),
                check_id: String::new(),
            }),
        );
        sh.touch();
        assert_eq!(settle(&mut fsm, &mut sh, &mut index), 1);
        assert_eq!(fsm.catalog_node_services("s2").1.unwrap().services.len(), 1);
    }

    #[test]
    fn one_write_in_flight_at_a_time() {
        let mut sh = SerfHealth::default();
        sh.report(member("c1", GossipStatus::Alive, None));
        assert!(sh.due(0));
        sh.proposed(5);
        assert!(!sh.due(4), "the write at 5 is not applied yet");
        assert!(sh.due(5), "applied: look again");
    }
}
