//! Query parameters the way Consul reads them: flags count by presence, the
//! first value of a repeated key wins, and the common read options (`dc`,
//! `stale`/`consistent`, `index`/`wait`) are parsed in Consul's order.

pub(crate) use crate::config::duration::parse_go_nanos as parse_go_duration;
use tern_core::rpc::{Blocking, Op, ReadMode, Request};
use tern_core::Datacenter;
use tern_core::Duration;

use super::reply::ApiError;
use crate::agent::AgentOptions;

/// Consul's `default_query_time`: a blocking query given `index` but no `wait`.
pub(crate) const DEFAULT_QUERY_TIME: Duration = Duration::from_secs(300);

/// The decoded query string, in the order the client sent it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Params {
        Params { pairs }
    }

    /// Whether the key is present at all: `?recurse`, `?recurse=false` and
    /// `?recurse=1` all count (rs-consul always sends `recurse=false`).
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// The first value, like Go's `url.Values.Get`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key, in order (Go's `url.Values[key]`).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// An unsigned integer parameter, if present; a bad value is a 400
    /// that names the parameter.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("Invalid value for ?{key}: {v:?}"))),
        }
    }

    /// Consul's `conflictingFlags`: more than one of `flags` present is a 400
    /// whose text echoes the query as Go's `url.Values.Encode` would.
    pub fn check_conflicting(&self, flags: &[&str]) -> Result<(), ApiError> {
        if flags.iter().filter(|f| self.has(f)).count() > 1 {
            return Err(ApiError::bad_request(format!(
                "Conflicting flags: {}\n",
                self.go_encode()
            )));
        }
        Ok(())
    }

    /// Go's `url.Values.Encode`: keys sorted, values in their order.
    fn go_encode(&self) -> String {
        let mut pairs: Vec<&(String, String)> = self.pairs.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", go_query_escape(k), go_query_escape(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Go's `url.QueryEscape`.
fn go_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `%q` for a string of printable text: quoted, with `"` and `\`
/// escaped and control characters as Go escapes them.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What every read (and, as in Consul, every KV call) takes from the query.
#[derive(Clone, Debug)]
pub(crate) struct QueryOptions {
    pub datacenter: Datacenter,
    pub read_mode: ReadMode,
    pub blocking: Option<Blocking>,
    pub pretty: bool,
    /// `?max_stale=<dur>` (Consul's `MaxStaleDuration`): a stale read whose
    /// server last heard from the leader longer ago is asked again of the
    /// leader (catalog and health reads, as Consul's `RETRY_ONCE`).
    pub max_stale: Option<Duration>,
}

impl QueryOptions {
    /// Consul's `parse`: datacenter, then consistency, then wait and index.
    pub fn parse(params: &Params, options: &AgentOptions) -> Result<QueryOptions, ApiError> {
        let datacenter = datacenter(params, options);
        // agent/http.go `parseConsistency`: a positive `max_stale` allows a
        // stale read (and so conflicts with `?consistent` like `?stale`).
        let max_stale = match params.get("max_stale").filter(|m| !m.is_empty()) {
            None => None,
            Some(m) => match parse_go_duration(m) {
                None => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid max_stale value {}",
                        go_quote(m)
                    )))
                }
                Some(ns) if ns > 0 => Some(Duration::from_nanos(ns as u64)),
                Some(_) => None,
            },
        };
        let stale = params.has("stale") || max_stale.is_some();
        let read_mode = match (stale, params.has("consistent")) {
            (true, true) => {
                return Err(ApiError::bad_request(
                    "Cannot specify ?stale with ?consistent, conflicting semantics.",
                ));
            }
            (true, false) => ReadMode::Stale,
            (false, true) => ReadMode::Consistent,
            (false, false) => ReadMode::Default,
        };
        let wait = match params.get("wait").filter(|w| !w.is_empty()) {
            None => None,
            Some(w) => Some(
                parse_go_duration(w).ok_or_else(|| ApiError::bad_request("Invalid wait time"))?,
            ),
        };
        let index = match params.get("index").filter(|i| !i.is_empty()) {
            None => None,
            Some(i) => Some(
                i.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("Invalid index"))?,
            ),
        };
        let blocking = index.map(|min_index| Blocking {
            min_index,
            max_wait: blocking_wait(wait, options.core.blocking_wait_max),
        });
        Ok(QueryOptions {
            datacenter,
            read_mode,
            blocking,
            pretty: params.has("pretty"),
            max_stale,
        })
    }
}

impl QueryOptions {
    /// A request for `op` with these options.
    pub fn request(&self, op: Op) -> Request {
        Request {
            datacenter: self.datacenter.clone(),
            read_mode: self.read_mode,
            blocking: self.blocking,
            op,
        }
    }
}

/// `?dc=`, or the agent's own datacenter when absent or empty.
pub(crate) fn datacenter(params: &Params, options: &AgentOptions) -> Datacenter {
    match params.get("dc").filter(|dc| !dc.is_empty()) {
        Some(dc) => Datacenter(dc.to_string()),
        None => options.core.datacenter.clone(),
    }
}

/// The wait a blocking query gets: Consul's default when none (or a
/// non-positive one) is given, capped at `max_query_time`.
fn blocking_wait(wait_ns: Option<i64>, max: Duration) -> Duration {
    let wait = match wait_ns {
        Some(ns) if ns > 0 => Duration::from_nanos(ns as u64),
        _ => DEFAULT_QUERY_TIME,
    };
    wait.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        let ms = 1_000_000i64;
        assert_eq!(parse_go_duration("10s"), Some(10_000 * ms));
        assert_eq!(parse_go_duration("5m"), Some(300_000 * ms));
        assert_eq!(parse_go_duration("100ms"), Some(100 * ms));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(3_723_500 * ms));
        assert_eq!(parse_go_duration(".5s"), Some(500 * ms));
        assert_eq!(parse_go_duration("1.s"), Some(1_000 * ms));
        assert_eq!(parse_go_duration("3µs"), Some(3_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("-1s"), Some(-1_000 * ms));
        for bad in [
            "",
            "10",
            "forever",
            "s",
            ".s",
            "1x",
            "1s2",
            "-",
            "1e3s",
            "99999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_blocking_wait_defaults_and_is_capped() {
        let max = Duration::from_secs(600);
        assert_eq!(blocking_wait(None, max), DEFAULT_QUERY_TIME);
        assert_eq!(blocking_wait(Some(0), max), DEFAULT_QUERY_TIME);
        assert_eq!(blocking_wait(Some(-5), max), DEFAULT_QUERY_TIME);
        assert_eq!(
            blocking_wait(Some(20 * 60 * 1_000_000_000), max),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn conflicting_flags_echo_the_query_like_go() {
        let p = Params::new(vec![
            ("recurse".into(), String::new()),
            ("cas".into(), "1 2".into()),
        ]);
        let e = p.check_conflicting(&["recurse", "cas"]).unwrap_err();
        assert_eq!(e.text, "Conflicting flags: cas=1+2&recurse=\n");
        assert!(p.check_conflicting(&["cas", "acquire"]).is_ok());
    }
}
