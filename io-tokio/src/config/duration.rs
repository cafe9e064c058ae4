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
}
