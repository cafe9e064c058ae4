//! The leader's session TTL timers (Consul's `session_ttl.go`).
//!
//! Only the leader times sessions. When it has committed an entry of its
//! term it arms a timer for every session with a TTL, at TTL × 2 from then
//! (Consul's `initializeSessionTimers` and its grace: the TTL is doubled);
//! a create arms one, a renew resets it, a destroy clears it. A timer that
//! runs out proposes `SessionDestroy` through the log. Time is a value
//! (`now`), as everywhere in the core: these are core timers the server's
//! `poll_timeout` reports, not driver timers.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::{Duration, Instant};

/// Consul's `structs.SessionTTLMultiplier`.
pub const SESSION_TTL_MULTIPLIER: u64 = 2;

/// Consul's `structs.SessionTTLMax` (24 h); the minimum is
/// `Config::session_ttl_min` (Consul's `session_ttl_min`, 10 s).
pub const SESSION_TTL_MAX_NS: u64 = 86_400_000_000_000;

/// How long after a refused destroy proposal (a busy log) the leader tries
/// again.
pub const SESSION_DESTROY_RETRY: Duration = Duration::from_secs(1);

/// Deadlines by session ID, and the same in deadline order.
#[derive(Clone, Debug, Default)]
pub struct SessionTimers {
    by_id: BTreeMap<String, Instant>,
    by_deadline: BTreeSet<(Instant, String)>,
}

impl SessionTimers {
    /// Arms (or re-arms) `id` to run out `ttl_ns × 2` after `now`.
    pub fn reset(&mut self, now: Instant, id: &str, ttl_ns: u64) {
        let wait = Duration(ttl_ns.saturating_mul(SESSION_TTL_MULTIPLIER));
        self.set(id, now + wait);
    }

    /// Arms `id` to run out at `at`.
    pub fn set(&mut self, id: &str, at: Instant) {
        self.clear(id);
        self.by_id.insert(id.to_owned(), at);
        self.by_deadline.insert((at, id.to_owned()));
    }

    pub fn clear(&mut self, id: &str) {
        if let Some(at) = self.by_id.remove(id) {
            self.by_deadline.remove(&(at, id.to_owned()));
        }
    }

    pub fn clear_all(&mut self) {
        self.by_id.clear();
        self.by_deadline.clear();
    }

    /// The next deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Takes every timer that ran out by `now`, in deadline order.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_deadline.first() {
            if *at > now {
                break;
            }
            let (_, id) = self.by_deadline.pop_first().expect("just looked");
            self.by_id.remove(&id);
            due.push(id);
        }
        due
    }

    pub fn deadline(&self, id: &str) -> Option<Instant> {
        self.by_id.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_runs_out_at_twice_its_ttl_and_a_reset_moves_it() {
        let mut t = SessionTimers::default();
        let ten_s = 10_000_000_000;
        t.reset(Instant(0), "a", ten_s);
        t.reset(Instant(0), "b", 2 * ten_s);
        assert_eq!(t.next(), Some(Instant(2 * ten_s)));
        assert!(t.take_due(Instant(2 * ten_s - 1)).is_empty());
        // Renewed at 15 s: now runs out at 35 s.
        t.reset(Instant(15_000_000_000), "a", ten_s);
        assert_eq!(t.deadline("a"), Some(Instant(35_000_000_000)));
        assert_eq!(t.take_due(Instant(35_000_000_000)), vec!["a".to_owned()]);
        assert_eq!(t.take_due(Instant(40_000_000_000)), vec!["b".to_owned()]);
        assert!(t.is_empty());
        t.reset(Instant(0), "c", ten_s);
        t.clear("c");
        assert_eq!(t.next(), None);
    }
}
