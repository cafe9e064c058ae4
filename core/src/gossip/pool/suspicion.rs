//! memberlist's timing formulas, kept as it computes them.

use crate::clock::Duration;

/// memberlist's `suspicionTimeout`: `mult * max(1, log10(n)) * interval`,
/// with the scale truncated to thousandths as memberlist does.
pub(super) fn suspicion_timeout(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale_milli = ((n.max(1) as f64).log10().max(1.0) * 1000.0) as u64;
    Duration(
        interval
            .0
            .saturating_mul(u64::from(mult))
            .saturating_mul(scale_milli)
            / 1000,
    )
}

/// memberlist's `pushPullScale`: above 32 members the push-pull interval
/// grows by one interval per doubling (`interval * (ceil(log2(n) - 5) + 1)`),
/// so a full-state exchange, whose size grows with the pool, does not make
/// gossip traffic grow with the square of the pool.
pub(super) fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    const THRESHOLD: usize = 32;
    if n <= THRESHOLD {
        return interval;
    }
    let multiplier = ((n as f64).log2() - (THRESHOLD as f64).log2()).ceil() as u64 + 1;
    interval.saturating_mul(multiplier)
}

/// memberlist's `retransmitLimit`: `mult * ceil(log10(n + 1))`.
pub(super) fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let mut digits = 0u32;
    let mut x = 1usize;
    while x < n.saturating_add(1) {
        x = x.saturating_mul(10);
        digits += 1;
    }
    mult.saturating_mul(digits)
}

/// memberlist's `remainingSuspicionTime` (Lifeguard): from `max` with no
/// confirmations down to `min` with `k` of them, logarithmically.
pub(super) fn remaining(c: u32, k: u32, min: Duration, max: Duration) -> Duration {
    if k == 0 {
        return min;
    }
    let frac = (f64::from(c) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    let t = Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64);
    t.max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// memberlist's suspicion_test.go `TestSuspicion_remainingSuspicionTime`
    /// (k = 3, min 2 s, max 30 s), as totals from the start of the suspicion
    /// (memberlist subtracts the elapsed time: 14 s at 2 s, 4.81 s at 3 s).
    #[test]
    fn suspicion_timeout_shrinks_as_memberlist_computes_it() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(30));
        assert_eq!(remaining(0, 3, min, max), max);
        assert_eq!(remaining(1, 3, min, max), Duration::from_secs(16));
        assert_eq!(remaining(2, 3, min, max), Duration::from_millis(7_810));
        assert_eq!(remaining(3, 3, min, max), min);
        assert_eq!(remaining(4, 3, min, max), min);
        assert_eq!(remaining(5, 0, min, max), min);
    }

    /// memberlist's util_test.go `TestPushPullScale`.
    #[test]
    fn push_pull_slows_down_above_32_members_as_memberlist_does() {
        let sec = Duration::from_secs(1);
        for n in 0..=32 {
            assert_eq!(push_pull_scale(sec, n), sec, "{n}");
        }
        for n in 33..=64 {
            assert_eq!(push_pull_scale(sec, n), sec.saturating_mul(2), "{n}");
        }
        for n in 65..=128 {
            assert_eq!(push_pull_scale(sec, n), sec.saturating_mul(3), "{n}");
        }
        assert_eq!(push_pull_scale(sec, 500), sec.saturating_mul(5));
    }

    /// memberlist's util_test.go `TestSuspicionTimeout` and `TestRetransmitLimit`.
    #[test]
    fn timeouts_and_limits_scale_as_memberlist_scales_them() {
        let t = |n| {
            suspicion_timeout(3, n, Duration::from_secs(1))
                .div(3)
                .as_millis()
        };
        assert_eq!(
            [5, 10, 50, 100, 500, 1000].map(t),
            [1000, 1000, 1698, 2000, 2698, 3000]
        );
        assert_eq!(retransmit_limit(3, 0), 0);
        assert_eq!(retransmit_limit(3, 1), 3);
        assert_eq!(retransmit_limit(3, 99), 6);
    }
}
