//! The tombstone GC: decides when the leader proposes a
//! `Command::TombstoneReap` (Consul's `state/tombstone_gc.go`, driven as in
//! `leader.go`'s `reapTombstones`).
//!
//! KV tombstones exist so that a blocking query on a prefix sees a delete;
//! they only need to live long enough for clients to have noticed it
//! (`tombstone_ttl`, 15 minutes). Every applied delete that leaves
//! tombstones *hints* the GC with its Raft index. Hints are binned by
//! expiry time (now + TTL, rounded up to the next multiple of
//! `tombstone_ttl_granularity`, 30 s), each bin keeping its highest index.
//! When a bin expires, the leader proposes a reap of everything at or below
//! that index through the log, so every replica forgets the same tombstones
//! at the same log position.
//!
//! This is local, not replicated, state: it is enabled only on the leader
//! (as Consul's `SetEnabled(true)` in `establishLeadership`), and a new
//! leader does not know the old leader's hints. Instead it hints its own
//! last log index when it takes over, so everything before its election is
//! reaped one TTL later; a reap always removes every tombstone at or below
//! its index, so one reap with a higher index sweeps older tombstones too.
//!
//! Pure: time arrives as `now` values; the server turns `next_expiry` into
//! a timer and `poll_reap` into a proposal. One reap is in flight at a time.

use std::collections::BTreeMap;

use crate::clock::{Duration, Instant};

/// Bins of tombstone hints by expiry, on the leader.
#[derive(Clone, Debug)]
pub struct TombstoneGc {
    ttl: Duration,
    granularity: Duration,
    buckets_max: usize,
    enabled: bool,
    /// Expiry time -> the highest tombstone index hinted into that bin. Every
    /// expiry here is after the `now` of the last `poll_reap`.
    buckets: BTreeMap<Instant, u64>,
    /// The highest index of the bins that have expired and are not yet
    /// covered by an applied reap.
    due: Option<u64>,
    /// The log index of the reap this leader proposed and has not yet seen
    /// applied.
    in_flight: Option<u64>,
}

impl TombstoneGc {
    /// A disabled GC. `granularity` must be non-zero and `buckets_max` at
    /// least one (`Config::validate` checks both).
    pub fn new(ttl: Duration, granularity: Duration, buckets_max: usize) -> TombstoneGc {
        assert!(granularity.as_nanos() > 0 && buckets_max > 0);
        TombstoneGc {
            ttl,
            granularity,
            buckets_max,
            enabled: false,
            buckets: BTreeMap::new(),
            due: None,
            in_flight: None,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Turn the GC on (this server became leader) or off (it stopped
    /// leading). Off forgets every hint and the reap in flight, as
    /// Consul's `SetEnabled(false)` stops every timer.
    pub fn set_enabled(&mut self, enabled: bool) {
        if !enabled {
            self.buckets.clear();
            self.due = None;
            self.in_flight = None;
        }
        self.enabled = enabled;
    }

    /// Tombstones were left at Raft index `index`, applied at `now`. Ignored
    /// while disabled.
    pub fn hint(&mut self, now: Instant, index: u64) {
        if !self.enabled {
            return;
        }
        let expires = self.expiry(now);
        if let Some(max) = self.buckets.get_mut(&expires) {
            *max = (*max).max(index);
            return;
        }
        if self.buckets.len() >= self.buckets_max {
            // At the limit: fold the newest bin into this one, which expires
            // later. Its tombstones are then reaped a little late, never
            // early, and the table of bins stays bounded.
            let (_, newest) = self.buckets.pop_last().expect("buckets_max > 0");
            self.buckets.insert(expires, newest.max(index));
            return;
        }
        self.buckets.insert(expires, index);
    }

    /// Consul's `nextExpires`: now + TTL, rounded up past the next multiple
    /// of the granularity (a time already on a multiple moves a whole
    /// granularity on, as in Consul).
    fn expiry(&self, now: Instant) -> Instant {
        let at = now + self.ttl;
        let g = self.granularity.as_nanos();
        at + Duration(g - at.0 % g)
    }

    /// Moves every bin that expired by `now` into the due reap and returns
    /// the index a reap should cover now: `None` while disabled, while a
    /// reap is in flight, or when nothing has expired.
    pub fn poll_reap(&mut self, now: Instant) -> Option<u64> {
        if !self.enabled {
            return None;
        }
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > now {
                break;
            }
            let max = entry.remove();
            self.due = Some(self.due.map_or(max, |d| d.max(max)));
        }
        if self.in_flight.is_some() {
            return None;
        }
        self.due
    }

    /// The leader appended the reap `poll_reap` asked for at log index
    /// `entry_index`; no other is proposed until that entry is applied or
    /// leadership is lost.
    pub fn proposed(&mut self, entry_index: u64) {
        self.in_flight = Some(entry_index);
    }

    /// A reap of everything at or below `upto` was applied (by whichever
    /// leader proposed it), or found nothing to remove: forget what it
    /// covered.
    pub fn reaped(&mut self, upto: u64) {
        if self.due.is_some_and(|d| d <= upto) {
            self.due = None;
        }
        self.buckets.retain(|_, max| *max > upto);
    }

    /// The state machine applied the log through `index`: a reap proposed
    /// at or below it is no longer in flight (applied, or replaced by
    /// another leader's entry, in which case leadership was lost anyway).
    pub fn applied_through(&mut self, index: u64) {
        if self.in_flight.is_some_and(|i| i <= index) {
            self.in_flight = None;
        }
    }

    /// When the next bin expires, if the GC is waiting for one. No time is
    /// asked for while a reap is in flight: its apply wakes the server.
    pub fn next_expiry(&self) -> Option<Instant> {
        if !self.enabled || self.in_flight.is_some() {
            return None;
        }
        self.buckets.keys().next().copied()
    }

    /// Bins tracked (bounded by `tombstone_gc_buckets_max`).
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    //! Mirrors Consul's `state/tombstone_gc_test.go` (`TestTombstoneGC`,
    //! `TestTombstoneGC_Expire`, `TestTombstoneGC_NoEnabled`).

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn gc() -> TombstoneGc {
        let mut gc = TombstoneGc::new(Duration::from_secs(20), Duration::from_secs(5), 64);
        gc.set_enabled(true);
        gc
    }

    #[test]
    fn a_hint_expires_after_the_ttl_rounded_up_to_the_granularity() {
        let mut gc = gc();
        gc.hint(Instant(100 * SEC + 1), 7);
        // 100 s + 20 s TTL = 120 s (+1 ns), rounded up to 125 s.
        assert_eq!(gc.next_expiry(), Some(Instant(125 * SEC)));
        assert_eq!(gc.poll_reap(Instant(125 * SEC - 1)), None);
        assert_eq!(gc.poll_reap(Instant(125 * SEC)), Some(7));
        assert_eq!(gc.next_expiry(), None);

        // A time exactly on a multiple moves a whole granularity on.
        let mut gc = self::gc();
        gc.hint(Instant(100 * SEC), 1);
        assert_eq!(gc.next_expiry(), Some(Instant(125 * SEC)));
    }

    #[test]
    fn hints_in_one_bin_share_a_timer_and_keep_the_highest_index() {
        let mut gc = gc();
        gc.hint(Instant(101 * SEC), 10);
        gc.hint(Instant(103 * SEC), 30);
        gc.hint(Instant(102 * SEC), 20);
        assert_eq!(gc.buckets(), 1);
        gc.hint(Instant(106 * SEC), 40);
        assert_eq!(gc.buckets(), 2);
        assert_eq!(gc.poll_reap(Instant(125 * SEC)), Some(30));
        gc.proposed(41);
        gc.applied_through(41);
        gc.reaped(30);
        assert_eq!(gc.next_expiry(), Some(Instant(130 * SEC)));
        assert_eq!(gc.poll_reap(Instant(130 * SEC)), Some(40));
    }

    #[test]
    fn one_reap_at_a_time_and_expired_bins_merge_while_it_is_in_flight() {
        let mut gc = gc();
        gc.hint(Instant(100 * SEC), 5);
        gc.hint(Instant(110 * SEC), 9);
        assert_eq!(gc.poll_reap(Instant(125 * SEC)), Some(5));
        gc.proposed(12);
        assert_eq!(gc.next_expiry(), None, "no timer while a reap is in flight");
        // The second bin expires while the first reap is in flight.
        assert_eq!(gc.poll_reap(Instant(140 * SEC)), None);
        gc.applied_through(11);
        assert_eq!(gc.poll_reap(Instant(140 * SEC)), None, "still in flight");
        gc.applied_through(12);
        gc.reaped(5);
        assert_eq!(gc.poll_reap(Instant(140 * SEC)), Some(9));
    }

    #[test]
    fn a_reap_that_is_lost_is_proposed_again() {
        let mut gc = gc();
        gc.hint(Instant(100 * SEC), 5);
        assert_eq!(gc.poll_reap(Instant(125 * SEC)), Some(5));
        gc.proposed(12);
        // Entry 12 was replaced by another leader's entry: applied, but not
        // our reap. The due index stays until a reap covers it.
        gc.applied_through(12);
        assert_eq!(gc.poll_reap(Instant(126 * SEC)), Some(5));
        // A reap with a higher index (another leader's) covers it.
        gc.reaped(8);
        assert_eq!(gc.poll_reap(Instant(127 * SEC)), None);
    }

    #[test]
    fn a_disabled_gc_tracks_nothing_and_disabling_forgets_everything() {
        let mut gc = TombstoneGc::new(Duration::from_secs(20), Duration::from_secs(5), 64);
        gc.hint(Instant(100 * SEC), 5);
        assert_eq!((gc.buckets(), gc.next_expiry()), (0, None));
        assert_eq!(gc.poll_reap(Instant(1000 * SEC)), None);

        let mut gc = self::gc();
        gc.hint(Instant(100 * SEC), 5);
        gc.hint(Instant(110 * SEC), 6);
        assert_eq!(gc.poll_reap(Instant(125 * SEC)), Some(5));
        gc.proposed(9);
        gc.set_enabled(false);
        assert_eq!((gc.buckets(), gc.next_expiry()), (0, None));
        gc.set_enabled(true);
        assert_eq!(
            gc.poll_reap(Instant(1000 * SEC)),
            None,
            "nothing carried over"
        );
    }

    #[test]
    fn the_number_of_bins_is_bounded_and_nothing_is_reaped_early() {
        // A granularity far below the TTL would need a bin per hint: at the
        // limit, the newest bin is folded into the new one, which expires
        // later.
        let mut gc = TombstoneGc::new(Duration::from_secs(100), Duration::from_secs(1), 4);
        gc.set_enabled(true);
        for i in 0..50u64 {
            gc.hint(Instant((1000 + i) * SEC), i + 1);
            assert!(gc.buckets() <= 4);
        }
        // Every hint's tombstones live at least the TTL: whatever is due at
        // a time covers only hints made a TTL or more before it.
        for t in 1000..1200u64 {
            if let Some(upto) = gc.poll_reap(Instant(t * SEC)) {
                let hinted_at = 1000 + (upto - 1);
                assert!(t >= hinted_at + 100, "index {upto} due at {t}s");
                gc.reaped(upto);
            }
        }
        assert_eq!(gc.poll_reap(Instant(2000 * SEC)), None);
        assert_eq!(gc.buckets(), 0);
    }
}
