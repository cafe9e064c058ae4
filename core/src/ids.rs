//! Identifiers. Plain values, cheap to copy where they sit on hot paths.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A server's stable identity, a UUID as Consul uses for its node IDs and Raft
/// server IDs. Displayed in the 8-4-4-4-12 form.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u128);

impl NodeId {
    /// Parse the 8-4-4-4-12 hex form (or 32 bare hex digits).
    pub fn parse(s: &str) -> Option<NodeId> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        if s.len() == 36 {
            let dashes: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
            if dashes != [8, 13, 18, 23] {
                return None;
            }
        } else if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(NodeId)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form in logs and traces: the low 16 bits are enough to tell
        // servers apart in a test, the full id is in Display.
        write!(f, "n{:04x}", self.0 & 0xffff)
    }
}

/// A node's name, unique within a datacenter (`node_name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeName(pub String);

/// A datacenter name (`datacenter`), lower case by Consul's convention.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Datacenter(pub String);

/// A Raft term.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

impl Term {
    /// The following term (saturating, as terms come from peers too).
    pub const fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

/// A Raft log index. Index 0 is "before the first entry".
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    pub const ZERO: LogIndex = LogIndex(0);
    /// The following index. Saturates: indexes come from peers, and a
    /// hostile `u64::MAX` must not panic a server.
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// Names one request from a driver (an HTTP handler, a CLI call, a simulated
/// client) so the core's `Respond` action can be matched to it. Chosen by the
/// driver, unique among that driver's requests in flight.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RequestId(pub u64);

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Datacenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_its_text_form() {
        let id = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let s = id.to_string();
        assert_eq!(s, "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(NodeId::parse(&s), Some(id));
        assert_eq!(NodeId::parse("0123456789abcdef0011223344556677"), Some(id));
        assert_eq!(NodeId::parse("01234567-89ab-cdef-0011-22334455667"), None);
        assert_eq!(NodeId::parse("0123456789abcdef-0011223344556677x"), None);
        assert_eq!(NodeId::parse(""), None);
    }
}
