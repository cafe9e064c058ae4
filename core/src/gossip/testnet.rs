//! An in-memory network of [`Gossip`] pools on a manual clock, for tests and
//! measurements: seeded, deterministic, with latency, datagram loss, and
//! members that can be killed, paused, resumed and restarted.

use std::collections::BTreeMap;

use crate::clock::{Duration, Instant};
use crate::ids::NodeId;
use crate::rng::Rng;

use super::config::GossipConfig;
use super::member::{Member, Status, Tags};
use super::pool::{Gossip, GossipAction, GossipEvent, GossipInput};

/// The LAN address of member `i` in a [`TestNet`].
pub fn address(i: usize) -> String {
    format!("10.0.{}.{}:8301", i / 250, i % 250 + 1)
}

/// The name of member `i`.
pub fn name(i: usize) -> String {
    format!("node{i}")
}

/// The LAN config of member `i`: a server in dc1 with node id `i + 1`.
pub fn lan_config(i: usize, seed: u64) -> GossipConfig {
    let id = NodeId(i as u128 + 1);
    let tags = Tags::server("dc1", 8300, id, 3, "0.1.0");
    let mut c = GossipConfig::lan(&name(i), id, &address(i), tags);
    c.seed = seed.wrapping_mul(1000).wrapping_add(i as u64);
    c
}

/// How often [`TestNet::run_until`] checks its condition, in virtual time
/// (checking after every packet would cost more than the run).
pub const CHECK_EVERY: Duration = Duration::from_millis(50);

struct Flight {
    from: String,
    to: usize,
    bytes: Vec<u8>,
}

struct Node {
    gossip: Gossip,
    /// `gossip.poll_timeout()` as of its last input.
    deadline: Option<Instant>,
    up: bool,
    events: Vec<(Instant, GossipEvent)>,
    bytes_sent: u64,
}

/// N pools wired together in memory.
pub struct TestNet {
    pub now: Instant,
    /// One-way delay of every packet.
    pub latency: Duration,
    /// Datagram loss, in parts per thousand (streams are reliable, as TCP).
    pub loss_per_mille: u64,
    /// Datagrams lost so far.
    pub lost: u64,
    nodes: Vec<Node>,
    /// Links that drop every datagram, as (from, to).
    cut: std::collections::BTreeSet<(usize, usize)>,
    /// Members that send but receive nothing.
    deaf: std::collections::BTreeSet<usize>,
    by_address: BTreeMap<String, usize>,
    flights: BTreeMap<(Instant, u64), Flight>,
    flight_seq: u64,
    rng: Rng,
}

impl TestNet {
    /// `n` LAN members (see [`lan_config`]), none joined yet.
    pub fn lan(n: usize, seed: u64) -> TestNet {
        TestNet::new((0..n).map(|i| lan_config(i, seed)).collect(), seed)
    }

    pub fn new(configs: Vec<GossipConfig>, seed: u64) -> TestNet {
        let now = Instant(0);
        let mut net = TestNet {
            now,
            latency: Duration::from_millis(1),
            loss_per_mille: 0,
            lost: 0,
            nodes: Vec::new(),
            cut: Default::default(),
            deaf: Default::default(),
            by_address: BTreeMap::new(),
            flights: BTreeMap::new(),
            flight_seq: 0,
            rng: Rng::new(seed),
        };
        for c in configs {
            net.add(c);
        }
        net
    }

    /// Adds a member; returns its index.
    pub fn add(&mut self, config: GossipConfig) -> usize {
        let i = self.nodes.len();
        self.by_address.insert(config.address.clone(), i);
        let gossip = Gossip::new(config, self.now).expect("a valid test config");
        self.nodes.push(Node {
            deadline: gossip.poll_timeout(),
            gossip,
            up: true,
            events: Vec::new(),
            bytes_sent: 0,
        });
        i
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn gossip(&self, i: usize) -> &Gossip {
        &self.nodes[i].gossip
    }

    /// Every member but the first joins through the first.
    pub fn join_all(&mut self) {
        for i in 1..self.nodes.len() {
            self.input(i, GossipInput::Join(vec![address(0)]));
        }
    }

    /// Hands `input` to member `i` and routes what comes out.
    pub fn input(&mut self, i: usize, input: GossipInput) {
        let mut out = Vec::new();
        self.nodes[i].gossip.handle(self.now, input, &mut out);
        self.nodes[i].deadline = self.nodes[i].gossip.poll_timeout();
        self.route(i, out);
    }

    /// Stops member `i` dead: no packets in or out, no timers (a crash, or
    /// a pause when followed by [`TestNet::resume`]).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Cuts (or mends) the link between `i` and `j` both ways: datagrams
    /// are dropped, streams still pass (a UDP-only firewall rule).
    pub fn cut(&mut self, i: usize, j: usize, cut: bool) {
        for link in [(i, j), (j, i)] {
            if cut {
                self.cut.insert(link);
            } else {
                self.cut.remove(&link);
            }
        }
    }

    /// Makes member `i` deaf (or not): it runs and sends, but nothing reaches it.
    pub fn deafen(&mut self, i: usize, deaf: bool) {
        if deaf {
            self.deaf.insert(i);
        } else {
            self.deaf.remove(&i);
        }
    }

    /// Lets a paused member run again with the state it had.
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].up = true;
    }

    /// Starts member `i` afresh with `config` (a restart: state lost; the
    /// config normally carries a new generation), and joins it through `via`.
    pub fn restart(&mut self, i: usize, config: GossipConfig, via: usize) {
        self.by_address.insert(config.address.clone(), i);
        self.nodes[i].gossip = Gossip::new(config, self.now).expect("a valid test config");
        self.nodes[i].deadline = self.nodes[i].gossip.poll_timeout();
        self.nodes[i].up = true;
        self.input(i, GossipInput::Join(vec![address(via)]));
    }

    /// Member `i` announces new tags.
    pub fn set_tags(&mut self, i: usize, tags: Tags) -> Result<(), String> {
        self.nodes[i].gossip.set_tags(tags)?;
        self.nodes[i].deadline = self.nodes[i].gossip.poll_timeout();
        Ok(())
    }

    pub fn events(&self, i: usize) -> &[(Instant, GossipEvent)] {
        &self.nodes[i].events
    }

    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.nodes[i].bytes_sent
    }

    /// What member `i` believes about member `j`.
    pub fn view(&self, i: usize, j: usize) -> Option<Member> {
        self.nodes[i].gossip.member(&name(j))
    }

    /// Whether every running member sees every member in `want` with that status
    /// (and, for `Alive`, not suspected).
    pub fn all_agree(&self, want: &[(usize, Status)]) -> bool {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && !want.iter().any(|(j, _)| *j == i))
            .all(|i| {
                want.iter().all(|&(j, status)| {
                    self.view(i, j).is_some_and(|m| {
                        m.status == status && !(status == Status::Alive && m.suspect)
                    })
                })
            })
    }

    /// Whether every running member sees every member alive.
    pub fn converged_alive(&self) -> bool {
        let n = self.nodes.len();
        (0..n).filter(|&i| self.nodes[i].up).all(|i| {
            let ms = self.nodes[i].gossip.members();
            ms.len() == n && ms.iter().all(|m| m.status == Status::Alive && !m.suspect)
        })
    }

    /// Runs until `done` holds or `limit` passes; returns the time it took
    /// (to within [`CHECK_EVERY`]), or `None` at the limit.
    pub fn run_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&TestNet) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let end = start + limit;
        let mut checked = None;
        loop {
            if checked.is_none_or(|t| self.now >= t + CHECK_EVERY) {
                if done(self) {
                    return Some(self.now.saturating_since(start));
                }
                checked = Some(self.now);
            }
            if !self.step(end) {
                return done(self).then(|| self.now.saturating_since(start));
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.step(end) {}
    }

    /// Advances to the next event no later than `end`; false when there is none.
    fn step(&mut self, end: Instant) -> bool {
        let next_flight = self.flights.keys().next().map(|(t, _)| *t);
        let next_timer = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.deadline)
            .min();
        let next = match (next_flight, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => {
                    self.now = end;
                    return false;
                }
            },
        };
        if next > end {
            self.now = end;
            return false;
        }
        self.now = self.now.max(next);
        while let Some(entry) = self.flights.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let f = entry.remove();
            if self.nodes[f.to].up {
                let input = GossipInput::Packet {
                    from: f.from,
                    bytes: f.bytes,
                };
                self.input(f.to, input);
            }
        }
        for i in 0..self.nodes.len() {
            let due = self.nodes[i].up && self.nodes[i].deadline.is_some_and(|t| t <= self.now);
            if due {
                self.input(i, GossipInput::Tick);
            }
        }
        true
    }

    fn route(&mut self, i: usize, out: Vec<GossipAction>) {
        let from = self.nodes[i].gossip.config().address.clone();
        for action in out {
            match action {
                GossipAction::Event(e) => self.nodes[i].events.push((self.now, e)),
                GossipAction::Send { to, bytes, stream } => {
                    self.nodes[i].bytes_sent += bytes.len() as u64;
                    let Some(&to) = self.by_address.get(&to) else {
                        continue;
                    };
                    if self.deaf.contains(&to) || (!stream && self.cut.contains(&(i, to))) {
                        continue;
                    }
                    if !stream && self.rng.chance(self.loss_per_mille, 1000) {
                        self.lost += 1;
                        continue;
                    }
                    self.flight_seq += 1;
                    let flight = Flight {
                        from: from.clone(),
                        to,
                        bytes,
                    };
                    self.flights
                        .insert((self.now + self.latency, self.flight_seq), flight);
                }
            }
        }
    }
}
