//! Opt-in event traces on stderr for replaying a failing seed:
//! `TERN_WORLD_TRACE=1` prints every world event but the cores' own
//! (faults, starts, crashes, torn tails, gossip events; `=all` adds the
//! cores' events: elections, applies, autopilot, ...), and
//! `TERN_GOSSIP_TRACE=1` every event of every gossip pool, each with its
//! simulated time. Read once per process.

use std::sync::OnceLock;

fn flag(cell: &'static OnceLock<bool>, name: &str) -> bool {
    *cell.get_or_init(|| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Whether `TERN_WORLD_TRACE` is set.
pub(crate) fn world() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    flag(&CELL, "TERN_WORLD_TRACE")
}

/// Whether `TERN_WORLD_TRACE` is `all`.
pub(crate) fn world_all() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    *CELL.get_or_init(|| std::env::var("TERN_WORLD_TRACE").is_ok_and(|v| v == "all"))
}

/// Whether `TERN_GOSSIP_TRACE` is set.
pub(crate) fn gossip() -> bool {
    static CELL: OnceLock<bool> = OnceLock::new();
    flag(&CELL, "TERN_GOSSIP_TRACE")
}
