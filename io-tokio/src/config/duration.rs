//! Go-style duration strings ("7s", "500ms", "1m30s", "1.5s", "0"), as Consul
//! writes them in its config files.

use tern_core::Duration;

/// Parse a Go duration. Negative durations are refused: no Tern setting wants one.
pub(crate) fn parse(text: &str) -> Option<Duration> {
    parse_go_nanos(text)
        .filter(|n| *n >= 0 && !text.starts_with('-'))
        .map(|n| Duration::from_nanos(n as u64))
}

/// Go's `time.ParseDuration`, in nanoseconds: `[-+]?([0-9]*(\.[0-9]*)?unit)+`
/// or a bare `0`, units `ns us µs ms s m h`, at most `i64::MAX`.
pub(crate) fn parse_go_nanos(s: &str) -> Option<i64> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, r) = split_digits(rest);
        let (fraction, r) = match r.strip_prefix('.') {
            Some(r) => split_digits(r),
            None => ("", r),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = r
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(r.len());
        let (unit, r) = r.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        // Digits past the 18th cannot change a nanosecond count.
        let (mut numerator, mut denominator) = (0u128, 1u128);
        for d in fraction.bytes().take(18) {
            numerator = numerator * 10 + u128::from(d - b'0');
            denominator *= 10;
        }
        let part = whole
            .checked_mul(scale)?
            .checked_add(numerator * scale / denominator)?;
        total = total.checked_add(part)?;
        if total > i64::MAX as u128 {
            return None;
        }
        rest = r;
    }
    let total = total as i64;
    Some(if negative { -total } else { total })
}

fn split_digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

/// Go's `time.Duration.String()`: "0s", "850ns", "1.5µs", "27.291304ms",
/// "10s", "1m30s", "2h0m0s", as Consul writes durations in its JSON.
pub(crate) fn format_go(d: Duration) -> String {
    const SECOND: u64 = 1_000_000_000;
    let n = d.as_nanos();
    if n == 0 {
        return "0s".into();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}µs", decimal(n, 1_000, 3));
    }
    if n < SECOND {
        return format!("{}ms", decimal(n, 1_000_000, 6));
    }
    let (h, rest) = (n / (3600 * SECOND), n % (3600 * SECOND));
    let (m, s) = (rest / (60 * SECOND), rest % (60 * SECOND));
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&decimal(s, SECOND, 9));
    out.push('s');
    out
}

/// `n / unit` with the remainder as up to `digits` decimals, trailing zeros dropped.
fn decimal(n: u64, unit: u64, digits: usize) -> String {
    let (whole, frac) = (n / unit, n % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_go_parses() {
        let ms = |s: &str| parse(s).map(|d| d.as_nanos() / 1_000_000);
        assert_eq!(ms("7s"), Some(7000));
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("1m30s"), Some(90_000));
        assert_eq!(ms("1.5s"), Some(1500));
        assert_eq!(ms(".5s"), Some(500));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("0"), Some(0));
        assert_eq!(parse("1500us").map(|d| d.as_nanos()), Some(1_500_000));
    }

    #[test]
    fn refuses_what_go_refuses() {
        for bad in [
            "",
            "7",
            "7 parsecs",
            "s",
            ".s",
            "-1s",
            "1.2.3s",
            "7sec",
            "1d",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    /// Go's `time.Duration.String()` on the values Consul's JSON shows.
    #[test]
    fn formats_as_go_formats() {
        let f = |n: u64| format_go(Duration::from_nanos(n));
        assert_eq!(f(0), "0s");
        assert_eq!(f(850), "850ns");
        assert_eq!(f(1_500), "1.5µs");
        assert_eq!(f(27_291_304), "27.291304ms");
        assert_eq!(f(200_000_000), "200ms");
        assert_eq!(f(10_000_000_000), "10s");
        assert_eq!(f(1_500_000_000), "1.5s");
        assert_eq!(f(90_000_000_000), "1m30s");
        assert_eq!(f(60_000_000_000), "1m0s");
        assert_eq!(f(7_200_000_000_000), "2h0m0s");
        assert_eq!(f(3_723_000_000_001), "1h2m3.000000001s");
        for text in ["200ms", "10s", "1m30s", "27.291304ms", "2h0m0s"] {
            assert_eq!(format_go(parse(text).unwrap()), text);
        }
    }
}
