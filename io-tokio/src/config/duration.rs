//! Go-style duration strings ("7s", "500ms", "1m30s", "1.5s", "0"), as Consul
//! writes them in its config files.

use tern_core::Duration;

/// Parse a Go duration. Negative durations are refused: no Tern setting wants one.
pub(crate) fn parse(text: &str) -> Option<Duration> {
    let s = text.strip_prefix('+').unwrap_or(text);
    if s == "0" {
        return Some(Duration::from_nanos(0));
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().ok()?
        };
        total = total.checked_add(int.checked_mul(unit_nanos)?)?;
        if !frac_digits.is_empty() {
            // Digits beyond nanosecond precision cannot matter; cap them so
            // the power of ten cannot overflow.
            let digits = &frac_digits[..frac_digits.len().min(18)];
            let frac: u128 = digits.parse().ok()?;
            total = total.checked_add(frac * unit_nanos / 10u128.pow(digits.len() as u32))?;
        }
        rest = after;
    }
    u64::try_from(total).ok().map(Duration::from_nanos)
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
