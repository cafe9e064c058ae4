//! Monotonic time as a value.
//!
//! The core never reads a clock. Drivers own a [`Clock`] and pass `now` into
//! every call; tests and fuzzers can make any instant they like.

use serde::{Deserialize, Serialize};

/// Nanoseconds since an arbitrary, driver-chosen epoch. Monotonic.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Instant(pub u64);

/// A span of time in nanoseconds.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Duration(pub u64);

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_nanos(n: u64) -> Duration {
        Duration(n)
    }
    pub const fn from_micros(us: u64) -> Duration {
        Duration(us * 1_000)
    }
    pub const fn from_millis(ms: u64) -> Duration {
        Duration(ms * 1_000_000)
    }
    pub const fn from_secs(s: u64) -> Duration {
        Duration(s * 1_000_000_000)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    pub const fn saturating_mul(self, k: u64) -> Duration {
        Duration(self.0.saturating_mul(k))
    }
    pub const fn div(self, k: u64) -> Duration {
        Duration(self.0 / k)
    }
}

impl Instant {
    pub const ZERO: Instant = Instant(0);

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl core::ops::Add for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}

impl From<core::time::Duration> for Duration {
    fn from(d: core::time::Duration) -> Duration {
        Duration(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> core::time::Duration {
        core::time::Duration::from_nanos(d.0)
    }
}

/// What a driver implements to tell the core the time. Only drivers call it.
pub trait Clock {
    fn now(&self) -> Instant;
}

/// A clock that moves only when told to: for tests and benchmarks.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: core::cell::Cell<Instant>,
}

impl ManualClock {
    pub fn new(start: Instant) -> ManualClock {
        ManualClock {
            now: core::cell::Cell::new(start),
        }
    }
    pub fn advance(&self, d: Duration) {
        self.now.set(self.now.get() + d);
    }
    pub fn set(&self, t: Instant) {
        assert!(t >= self.now.get(), "a monotonic clock never goes back");
        self.now.set(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.now.get()
    }
}
