//! The sessions table (Consul's `sessions` table and its `index` row,
//! agent/consul/state/session.go).
//!
//! A session belongs to a node and names health checks on it; it holds KV
//! locks (`KvCommand::Lock`). It ends when destroyed (a client, or the
//! leader's TTL timer) or invalidated by the catalog: its node deregistered
//! or one of its checks critical or gone. Ending it releases its locks
//! (behavior `release`: the session is cleared from each key, its lock
//! index kept) or deletes the keys (`delete`), at the same log position on
//! every server. The lock delay that follows is not replicated state (see
//! `Fsm::take_lock_delays`).

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use super::hash::ItemHasher;
use super::FsmError;

/// How many sessions the table holds at most: a create past it is
/// refused (every server refuses it at the same log position).
pub const SESSIONS_MAX: usize = 65_536;

/// The most a session create may carry (its strings together), refused
/// before the log with the limit named (HTTP 413).
pub const SESSION_BYTES_MAX: usize = 64 * 1024;

/// Consul's `structs.MaxLockDelay`: a longer delay is cut to this when the
/// session ends.
pub const LOCK_DELAY_MAX_NS: u64 = 60_000_000_000;

/// Consul's default lock delay (the HTTP API's `15s`).
pub const LOCK_DELAY_DEFAULT_NS: u64 = 15_000_000_000;

/// What ending a session does to the keys it holds (Consul's
/// `SessionBehavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionBehavior {
    /// Clear the session from each key (`release`, the default).
    #[default]
    Release,
    /// Delete each key (`delete`).
    Delete,
}

impl SessionBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionBehavior::Release => "release",
            SessionBehavior::Delete => "delete",
        }
    }
}

/// A service check a session names (Consul's `ServiceCheck`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceCheck {
    pub id: String,
    pub namespace: String,
}

/// A session (Consul's `structs.Session`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    /// A UUID drawn by the leader from the core's seeded RNG.
    pub id: String,
    pub name: String,
    pub node: String,
    /// Nanoseconds (Consul's `time.Duration`).
    pub lock_delay_ns: u64,
    pub behavior: SessionBehavior,
    /// As the client sent it (`"30s"`), empty for none; checked before the
    /// log to be 0 or within 10 s..=86400 s.
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<ServiceCheck>,
    /// Consul's deprecated `Checks`: kept as sent, counted as node checks.
    pub checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Session {
    /// Every check ID the session depends on (Consul's `CheckIDs`).
    pub fn check_ids(&self) -> impl Iterator<Item = &str> {
        self.node_checks
            .iter()
            .chain(self.checks.iter())
            .map(String::as_str)
            .chain(self.service_checks.iter().map(|c| c.id.as_str()))
    }

    /// The TTL in nanoseconds, if it has a non-zero one that parses.
    pub fn ttl_ns(&self) -> Option<u64> {
        parse_go_duration(&self.ttl).filter(|&n| n > 0)
    }

    /// About how many bytes the session's strings take.
    pub fn approx_bytes(&self) -> usize {
        self.id.len()
            + self.name.len()
            + self.node.len()
            + self.ttl.len()
            + self.check_ids().map(|c| 8 + c.len()).sum::<usize>()
            + self
                .service_checks
                .iter()
                .map(|c| c.namespace.len())
                .sum::<usize>()
    }

    fn hash(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).expect("a session encodes");
        ItemHasher::new("session").bytes(&bytes).finish()
    }
}

/// Go's `time.ParseDuration` for what sessions use: a sequence of decimal
/// numbers (with an optional fraction) each with a unit `ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`; `0` alone; no sign. `None` if it does not parse or
/// overflows.
pub fn parse_go_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        if number.is_empty() || number == "." {
            return None;
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.contains('.') {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut part = whole.checked_mul(scale)?;
        let mut place = scale;
        for d in frac.chars() {
            place /= 10;
            part += u128::from(d.to_digit(10)?) * place;
        }
        total = total.checked_add(part)?;
        rest = tail;
    }
    u64::try_from(total).ok().filter(|&t| t <= i64::MAX as u64)
}

/// Go's `time.Duration.String` for whole and fractional seconds, minutes
/// and hours (what Consul's errors print): `15s`, `1m0s`, `24h0m0s`,
/// `1.5s`, `100ms`.
pub fn go_duration_string(ns: u64) -> String {
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000_000_000 {
        let (v, unit) = if ns < 1_000 {
            (ns as f64, "ns")
        } else if ns < 1_000_000 {
            (ns as f64 / 1e3, "µs")
        } else {
            (ns as f64 / 1e6, "ms")
        };
        return format!("{}{unit}", trim_float(v));
    }
    let h = ns / 3_600_000_000_000;
    let m = (ns / 60_000_000_000) % 60;
    let s_ns = ns % 60_000_000_000;
    let secs = format!("{}s", trim_float(s_ns as f64 / 1e9));
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// The sessions and the table index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SessionTable {
    sessions: OrdMap<Arc<str>, Arc<Session>>,
    /// `(lowercased node, session ID)`: the sessions of a node.
    by_node: OrdSet<(Arc<str>, Arc<str>)>,
    /// The highest Raft index that created or destroyed a session.
    index: u64,
    content_hash: u64,
}

fn fold(node: &str) -> Arc<str> {
    Arc::from(node.to_lowercase())
}

impl SessionTable {
    pub(crate) fn get(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id).map(|s| &**s)
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    pub(crate) fn list(&self) -> Vec<Session> {
        self.sessions.values().map(|s| (**s).clone()).collect()
    }

    /// The IDs of the sessions on `node` (any case).
    pub(crate) fn ids_on_node(&self, node: &str) -> Vec<Arc<str>> {
        let n = fold(node);
        let from = (Arc::clone(&n), Arc::from(""));
        self.by_node
            .range(from..)
            .take_while(|(k, _)| *k == n)
            .map(|(_, id)| Arc::clone(id))
            .collect()
    }

    pub(crate) fn on_node(&self, node: &str) -> Vec<Session> {
        self.ids_on_node(node)
            .iter()
            .filter_map(|id| self.get(id).cloned())
            .collect()
    }

    /// Inserts `session` (its indexes set) at `index`.
    pub(crate) fn insert(&mut self, index: u64, session: Session) {
        let id: Arc<str> = Arc::from(session.id.as_str());
        self.by_node.insert((fold(&session.node), Arc::clone(&id)));
        self.content_hash = self.content_hash.wrapping_add(session.hash());
        self.sessions.insert(id, Arc::new(session));
        self.index = self.index.max(index);
    }

    /// Removes session `id` at `index`; the session, if it was there.
    pub(crate) fn remove(&mut self, index: u64, id: &str) -> Option<Arc<Session>> {
        let (id, s) = self.sessions.remove_with_key(id)?;
        self.by_node.remove(&(fold(&s.node), id));
        self.content_hash = self.content_hash.wrapping_sub(s.hash());
        self.index = self.index.max(index);
        Some(s)
    }

    pub(crate) fn hash(&self) -> u64 {
        ItemHasher::new("session.table")
            .u64(self.index)
            .u64(self.content_hash)
            .finish()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.index == 0
    }

    pub(crate) fn to_snapshot(&self) -> SessionSnapshotRef<'_> {
        SessionSnapshotRef {
            index: self.index,
            sessions: self.sessions.values().map(|s| &**s).collect(),
        }
    }

    pub(crate) fn from_snapshot(
        snap: SessionSnapshot,
        last_applied: u64,
    ) -> Result<SessionTable, FsmError> {
        let bad = |why: String| FsmError::Invalid(format!("sessions: {why}"));
        if snap.index > last_applied {
            return Err(bad(format!(
                "the table index {} is past the snapshot's {last_applied}",
                snap.index
            )));
        }
        if snap.sessions.len() > SESSIONS_MAX {
            return Err(bad(format!("more than {SESSIONS_MAX} sessions")));
        }
        let mut table = SessionTable::default();
        for s in snap.sessions {
            if table
                .sessions
                .get_max()
                .is_some_and(|(last, _)| **last >= *s.id)
            {
                return Err(bad(format!("session {:?} out of order", s.id)));
            }
            if s.create_index == 0 || s.create_index > s.modify_index || s.modify_index > snap.index
            {
                return Err(bad(format!("session {:?} has bad indexes", s.id)));
            }
            table.insert(0, s);
        }
        table.index = snap.index;
        Ok(table)
    }
}

/// The sessions as a snapshot (format version 5 on) stores them.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionSnapshot {
    pub(crate) index: u64,
    /// By ID, strictly increasing.
    pub(crate) sessions: Vec<Session>,
}

/// `SessionSnapshot`, borrowing.
#[derive(Serialize)]
pub(crate) struct SessionSnapshotRef<'a> {
    pub(crate) index: u64,
    pub(crate) sessions: Vec<&'a Session>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        assert_eq!(parse_go_duration("10s"), Some(10_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("24h"), Some(86_400_000_000_000));
        assert_eq!(parse_go_duration("15ms"), Some(15_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("0s"), Some(0));
        for bad in ["", "10", "s", "1x", "-1s", "1..5s", "99999999999999999999h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_durations_print_as_go_prints_them() {
        assert_eq!(go_duration_string(10_000_000_000), "10s");
        assert_eq!(go_duration_string(86_400_000_000_000), "24h0m0s");
        assert_eq!(go_duration_string(90_000_000_000), "1m30s");
        assert_eq!(go_duration_string(1_500_000_000), "1.5s");
        assert_eq!(go_duration_string(15_000_000), "15ms");
        assert_eq!(go_duration_string(0), "0s");
    }
}
