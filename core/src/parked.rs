//! Blocking queries parked until what they watch changes, indexed by what
//! they watch so that a write wakes (and looks at) only the queries it can
//! concern, and a parked query costs nothing while its key is unchanged.
//!
//! A KV read watches one key (`KvGet`) or a prefix (`KvList`, `KvKeys`);
//! a write touches one key, or every key under a prefix (`DeleteTree`). A
//! query is a candidate for a write when the key is the watched key, or the
//! watched prefix is a prefix of the key, or (for a tree delete) the
//! watched key or prefix lies under the deleted prefix or the deleted prefix
//! lies under the watched one. Other reads (status, configuration) are
//! looked at on every apply. Candidates are only candidates: the server
//! still compares each one's watch index with its `min_index`.
//!
//! A catalog read watches catalog topics (a table, one service name, one
//! node: [`CatalogTopic`]); a catalog write touches the topics the state
//! machine says it may change ([`crate::fsm::Fsm::catalog_topics`]). A KV
//! write touches no catalog topic and a catalog write no KV key, so neither
//! is offered the other's queries.
//!
//! Deadlines are kept in order, so the next one is found in O(log n) and
//! expiry takes only the due.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::Instant;
use crate::fsm::{CatalogTopic, Command, KvCommand};
use crate::rpc::{CatalogOp, Op};

/// What applied entries changed, for waking parked queries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Keys set or deleted.
    pub keys: BTreeSet<String>,
    /// Prefixes deleted as a tree.
    pub trees: BTreeSet<String>,
    /// Catalog topics a write may have changed.
    pub catalog: BTreeSet<CatalogTopic>,
    /// Anything may have changed (a snapshot was installed).
    pub all: bool,
    /// Some entry was applied (non-KV reads watch the commit index).
    pub any: bool,
    /// An operator's restore replaced the state: every parked query is
    /// answered, whatever its index says (Consul's `abandonCh`: indexes
    /// inside the restored state may be below the ones clients hold).
    pub abandon: bool,
}

impl Touched {
    /// Record an applied command.
    pub fn command(&mut self, cmd: &Command) {
        self.any = true;
        match cmd {
            Command::Kv(KvCommand::Set(w) | KvCommand::Cas { write: w, .. }) => {
                self.keys.insert(w.key.clone());
            }
            Command::Kv(KvCommand::Delete { key } | KvCommand::DeleteCas { key, .. }) => {
                self.keys.insert(key.clone());
            }
            Command::Kv(KvCommand::DeleteTree { prefix }) => {
                self.trees.insert(prefix.clone());
            }
            Command::Kv(KvCommand::Lock { write: w, .. } | KvCommand::Unlock { write: w, .. }) => {
                self.keys.insert(w.key.clone());
            }
            // A reap forgets tombstones and moves no index a query waits on;
            // autopilot's configuration is no KV read's. What a catalog
            // write touches depends on the state before it
            // (`catalog_topics`).
            Command::TombstoneReap { .. }
            | Command::AutopilotSet { .. }
            | Command::CatalogRegister(_)
            | Command::CatalogDeregister(_) => {}
            // The chunk that completes a restore sets `abandon` (the server
            // knows from its result); the others change nothing readable.
            Command::RestoreChunk(_) => {}
            Command::Txn(ops) => {
                for op in ops.iter().filter(|op| op.is_write()) {
                    if let crate::fsm::TxnOp::Kv { verb, key, .. } = op {
                        if *verb == crate::fsm::KvVerb::DeleteTree {
                            self.trees.insert(key.clone());
                        } else {
                            self.keys.insert(key.clone());
                        }
                    }
                }
            }
            // A session's end touches the keys it held; the server reads
            // them from the state machine (`take_touched_keys`).
            Command::SessionCreate(_) | Command::SessionDestroy { .. } => {}
        }
    }

    /// Record the catalog topics an applied write may have changed.
    pub fn catalog_topics(&mut self, topics: Vec<CatalogTopic>) {
        self.catalog.extend(topics);
    }

    pub fn is_empty(&self) -> bool {
        !self.any && !self.all && !self.abandon
    }
}

/// What a parked query watches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Watch {
    Key(String),
    Prefix(String),
    Catalog(Vec<CatalogTopic>),
    Other,
}

fn watch_of(op: &Op) -> Watch {
    match op {
        Op::KvGet { key } => Watch::Key(key.clone()),
        Op::KvList { prefix } | Op::KvKeys { prefix, .. } => Watch::Prefix(prefix.clone()),
        Op::Catalog(c) => match catalog_watch(c) {
            Some(topics) => Watch::Catalog(topics),
            None => Watch::Other,
        },
        _ => Watch::Other,
    }
}

/// The topics a catalog read watches (Consul's watch sets for them).
fn catalog_watch(op: &CatalogOp) -> Option<Vec<CatalogTopic>> {
    let fold = crate::fsm::catalog::fold;
    Some(match op {
        CatalogOp::Nodes { .. } => vec![CatalogTopic::Nodes],
        CatalogOp::Services { node_meta } | CatalogOp::ServiceInstances { node_meta }
            if node_meta.is_empty() =>
        {
            vec![CatalogTopic::Services]
        }
        CatalogOp::Services { .. } | CatalogOp::ServiceInstances { .. } => {
            vec![CatalogTopic::Services, CatalogTopic::Nodes]
        }
        CatalogOp::ServiceNodes { service, .. } => vec![CatalogTopic::Service(fold(service))],
        CatalogOp::NodeServices { node } => {
            let mut topics = vec![CatalogTopic::Node(fold(node))];
            // A node can be named by a prefix of its ID: such a read also
            // watches the nodes table, as the name alone may not be the
            // node's.
            if node.len() >= 2 && node.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                topics.push(CatalogTopic::Nodes);
            }
            topics
        }
        CatalogOp::NodeChecks { node } => vec![CatalogTopic::Node(fold(node))],
        CatalogOp::ServiceChecks { service, node_meta }
        | CatalogOp::ServiceHealth {
            service, node_meta, ..
        } => {
            let mut topics = vec![CatalogTopic::Service(fold(service))];
            if !node_meta.is_empty() {
                topics.push(CatalogTopic::Nodes);
            }
            topics
        }
        CatalogOp::ChecksInState { node_meta, .. } if node_meta.is_empty() => {
            vec![CatalogTopic::Checks]
        }
        CatalogOp::ChecksInState { .. } => vec![CatalogTopic::Checks, CatalogTopic::Nodes],
        CatalogOp::Register(_) | CatalogOp::Deregister(_) => return None,
    })
}

/// Parked queries of type `T`, each with the op it reads and a deadline.
#[derive(Clone, Debug)]
pub struct Parked<T> {
    next: u64,
    entries: BTreeMap<u64, (Instant, Watch, T)>,
    deadlines: BTreeSet<(Instant, u64)>,
    by_key: BTreeMap<String, BTreeSet<u64>>,
    by_prefix: BTreeMap<String, BTreeSet<u64>>,
    by_topic: BTreeMap<CatalogTopic, BTreeSet<u64>>,
    other: BTreeSet<u64>,
}

impl<T> Default for Parked<T> {
    fn default() -> Self {
        Parked {
            next: 0,
            entries: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            by_key: BTreeMap::new(),
            by_prefix: BTreeMap::new(),
            by_topic: BTreeMap::new(),
            other: BTreeSet::new(),
        }
    }
}

impl<T> Parked<T> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Park `item`, which reads `op`, until `deadline`.
    pub fn park(&mut self, op: &Op, deadline: Instant, item: T) {
        self.next += 1;
        let id = self.next;
        let watch = watch_of(op);
        match &watch {
            Watch::Key(k) => {
                self.by_key.entry(k.clone()).or_default().insert(id);
            }
            Watch::Prefix(p) => {
                self.by_prefix.entry(p.clone()).or_default().insert(id);
            }
            Watch::Catalog(topics) => {
                for t in topics {
                    self.by_topic.entry(t.clone()).or_default().insert(id);
                }
            }
            Watch::Other => {
                self.other.insert(id);
            }
        }
        self.deadlines.insert((deadline, id));
        self.entries.insert(id, (deadline, watch, item));
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Take every query whose deadline is at or before `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            if let Some(item) = self.remove(id) {
                due.push(item);
            }
        }
        due
    }

    /// Take the queries `touched` may concern, for which `wakes` says yes
    /// (it is asked only of candidates); the others stay parked.
    pub fn take_woken(&mut self, touched: &Touched, mut wakes: impl FnMut(&T) -> bool) -> Vec<T> {
        if touched.is_empty() {
            return Vec::new();
        }
        let candidates: BTreeSet<u64> = if touched.all || touched.abandon {
            self.entries.keys().copied().collect()
        } else {
            self.candidates(touched)
        };
        let woken: Vec<u64> = candidates
            .into_iter()
            .filter(|id| {
                touched.abandon || self.entries.get(id).is_some_and(|(_, _, item)| wakes(item))
            })
            .collect();
        woken.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    fn candidates(&self, touched: &Touched) -> BTreeSet<u64> {
        let mut ids: BTreeSet<u64> = self.other.clone();
        for key in &touched.keys {
            if let Some(s) = self.by_key.get(key) {
                ids.extend(s);
            }
            self.watched_prefixes_of(key, &mut ids);
        }
        for tree in &touched.trees {
            // Watched keys and prefixes under the deleted prefix.
            for (k, s) in self.by_key.range(tree.clone()..) {
                if !k.starts_with(tree.as_str()) {
                    break;
                }
                ids.extend(s);
            }
            for (p, s) in self.by_prefix.range(tree.clone()..) {
                if !p.starts_with(tree.as_str()) {
                    break;
                }
                ids.extend(s);
            }
            // Watched prefixes the deleted prefix lies under.
            self.watched_prefixes_of(tree, &mut ids);
        }
        for topic in &touched.catalog {
            if let Some(s) = self.by_topic.get(topic) {
                ids.extend(s);
            }
        }
        ids
    }

    /// Every query watching a prefix of `key` (the empty prefix included).
    fn watched_prefixes_of(&self, key: &str, ids: &mut BTreeSet<u64>) {
        if self.by_prefix.is_empty() {
            return;
        }
        for (i, _) in key.char_indices().chain(std::iter::once((key.len(), ' '))) {
            if let Some(s) = self.by_prefix.get(&key[..i]) {
                ids.extend(s);
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let (deadline, watch, item) = self.entries.remove(&id)?;
        self.deadlines.remove(&(deadline, id));
        match watch {
            Watch::Key(k) => remove_from(&mut self.by_key, &k, id),
            Watch::Prefix(p) => remove_from(&mut self.by_prefix, &p, id),
            Watch::Catalog(topics) => {
                for t in topics {
                    if let Some(s) = self.by_topic.get_mut(&t) {
                        s.remove(&id);
                        if s.is_empty() {
                            self.by_topic.remove(&t);
                        }
                    }
                }
            }
            Watch::Other => {
                self.other.remove(&id);
            }
        }
        Some(item)
    }
}

fn remove_from(map: &mut BTreeMap<String, BTreeSet<u64>>, k: &str, id: u64) {
    if let Some(s) = map.get_mut(k) {
        s.remove(&id);
        if s.is_empty() {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::KvWrite;

    fn get(key: &str) -> Op {
        Op::KvGet { key: key.into() }
    }
    fn list(prefix: &str) -> Op {
        Op::KvList {
            prefix: prefix.into(),
        }
    }
    fn set(key: &str) -> Command {
        Command::Kv(KvCommand::Set(KvWrite {
            key: key.into(),
            flags: 0,
            value: Default::default(),
        }))
    }
    fn touched(cmds: &[Command]) -> Touched {
        let mut t = Touched::default();
        for c in cmds {
            t.command(c);
        }
        t
    }

    /// Each write is offered exactly the queries it can concern.
    #[test]
    fn a_write_is_offered_only_the_queries_it_concerns() {
        let mut p = Parked::default();
        let t = Instant(1);
        p.park(&get("a/b"), t, "get a/b");
        p.park(&get("a/bc"), t, "get a/bc");
        p.park(&get("z"), t, "get z");
        p.park(&list("a/"), t, "list a/");
        p.park(&list(""), t, "list all");
        p.park(&list("a/b/"), t, "list a/b/");
        p.park(&Op::StatusLeader, t, "status");
        let offered = |p: &mut Parked<&'static str>, t: &Touched| {
            let mut seen = Vec::new();
            p.take_woken(t, |item| {
                seen.push(*item);
                false
            });
            seen.sort();
            seen
        };
        assert_eq!(
            offered(&mut p, &touched(&[set("a/b")])),
            ["get a/b", "list a/", "list all", "status"]
        );
        assert_eq!(
            offered(&mut p, &touched(&[set("a/b/c")])),
            ["list a/", "list a/b/", "list all", "status"]
        );
        assert_eq!(
            offered(&mut p, &touched(&[set("q")])),
            ["list all", "status"]
        );
        let tree = Command::Kv(KvCommand::DeleteTree {
            prefix: "a/b".into(),
        });
        assert_eq!(
            offered(&mut p, &touched(&[tree])),
            [
                "get a/b",
                "get a/bc",
                "list a/",
                "list a/b/",
                "list all",
                "status"
            ]
        );
        let reap = Command::TombstoneReap { upto: 3 };
        assert_eq!(offered(&mut p, &touched(&[reap])), ["status"]);
        assert_eq!(offered(&mut p, &Touched::default()), Vec::<&str>::new());
        let all = Touched {
            all: true,
            ..Touched::default()
        };
        assert_eq!(offered(&mut p, &all).len(), 7);
        assert_eq!(p.len(), 7, "nothing was woken");
    }

    /// A catalog write is offered the catalog queries whose topics it
    /// touched and no KV query; a KV write is offered no catalog query.
    #[test]
    fn catalog_and_kv_writes_are_offered_only_their_own_queries() {
        use std::collections::BTreeMap;
        let catalog = |op: CatalogOp| Op::Catalog(op);
        let mut p = Parked::default();
        let t = Instant(1);
        p.park(&get("k"), t, "get k");
        p.park(&list(""), t, "list all");
        p.park(
            &catalog(CatalogOp::ServiceNodes {
                service: "Web".into(),
                tags: vec![],
                node_meta: BTreeMap::new(),
            }),
            t,
            "service web",
        );
        p.park(
            &catalog(CatalogOp::Nodes {
                node_meta: BTreeMap::new(),
            }),
            t,
            "nodes",
        );
        p.park(
            &catalog(CatalogOp::NodeServices { node: "n1".into() }),
            t,
            "node n1",
        );
        p.park(
            &catalog(CatalogOp::NodeServices {
                node: "ab12".into(),
            }),
            t,
            "node by id prefix",
        );
        let offered = |p: &mut Parked<&'static str>, t: &Touched| {
            let mut seen = Vec::new();
            p.take_woken(t, |item| {
                seen.push(*item);
                false
            });
            seen.sort();
            seen
        };
        assert_eq!(
            offered(&mut p, &touched(&[set("k")])),
            ["get k", "list all"]
        );
        let mut web = Touched {
            any: true,
            ..Touched::default()
        };
        web.catalog_topics(vec![CatalogTopic::Service("web".into())]);
        assert_eq!(offered(&mut p, &web), ["service web"]);
        let mut node = Touched {
            any: true,
            ..Touched::default()
        };
        node.catalog_topics(vec![CatalogTopic::Nodes, CatalogTopic::Node("n1".into())]);
        assert_eq!(
            offered(&mut p, &node),
            ["node by id prefix", "node n1", "nodes"]
        );
        assert_eq!(p.len(), 6);
        // Taken, a catalog query leaves every topic's index.
        p.take_woken(&node, |_| true);
        p.take_woken(&web, |_| true);
        assert!(p.by_topic.is_empty());
        assert_eq!(p.len(), 2);
    }

    /// Woken and due queries leave every index; deadlines come out in order.
    #[test]
    fn woken_and_due_queries_are_gone_from_every_index() {
        let mut p = Parked::default();
        p.park(&get("k"), Instant(30), 1);
        p.park(&get("k"), Instant(10), 2);
        p.park(&list("k"), Instant(20), 3);
        assert_eq!(p.next_deadline(), Some(Instant(10)));
        assert_eq!(p.take_woken(&touched(&[set("k")]), |i| *i == 1), vec![1]);
        assert_eq!(p.take_due(Instant(20)), vec![2, 3]);
        assert!(p.is_empty());
        assert_eq!(p.next_deadline(), None);
        assert!(p.by_key.is_empty() && p.by_prefix.is_empty() && p.deadlines.is_empty());
        p.park(&Op::StatusLeader, Instant(5), 4);
        assert_eq!(p.take_due(Instant(5)), vec![4]);
        assert!(p.other.is_empty());
    }
}
