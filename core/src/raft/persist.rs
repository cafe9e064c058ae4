//! The one interpreter of [`PersistOp`]s: what each durable write means, and
//! which writes are outside the contract.
//!
//! [`Durable::apply`] is the definition. Everything that applies persist ops
//! uses it (the testkit's disks, io-tokio's `MemStorage`, WAL replay); the
//! data dir, which keeps only a summary of the log in memory, checks each op
//! with the same [`check`] on a [`LogShape`] before it writes anything, and
//! its recovery folds what it read back through `Durable::apply`.
//!
//! An op outside the contract is refused with a [`PersistError`] and the
//! state is unchanged: it is a bug in whoever produced it (the core never
//! does), or a damaged data dir when it comes from disk.

use core::fmt;

use super::types::{Durable, Entry, HardState, Snapshot, SnapshotMeta};
use crate::action::PersistOp;
use crate::ids::{LogIndex, Term};

/// Why an op was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistError {
    /// An append that does not start right after the last index.
    AppendNotNext { first: LogIndex, last: LogIndex },
    /// The entries of one append are not consecutive (`next` follows `at`).
    AppendNotConsecutive { at: LogIndex, next: LogIndex },
    /// A truncation at or below the floor: entries there are in the
    /// snapshot (committed) or already gone.
    TruncateAtFloor { at: LogIndex, floor: LogIndex },
    /// A truncation past the last index: nothing to drop.
    TruncatePastLast { at: LogIndex, last: LogIndex },
    /// A purge with no snapshot saved, or past the saved snapshot's last
    /// index (`snapshot` is 0 when there is none).
    PurgePastSnapshot { at: LogIndex, snapshot: LogIndex },
    /// A snapshot that is not newer than the stored one.
    SnapshotNotNewer {
        index: LogIndex,
        term: Term,
        stored_index: LogIndex,
        stored_term: Term,
    },
    /// A server's own snapshot whose last entry is not in the log with its
    /// term (`found` is the term the log holds there, if any).
    SnapshotNotInLog {
        index: LogIndex,
        term: Term,
        found: Option<Term>,
    },
    /// A hard state whose term is below the stored one.
    TermRegressed { term: Term, stored: Term },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::AppendNotNext { first, last } => write!(
                f,
                "an append at index {} does not follow the last index {}",
                first.0, last.0
            ),
            PersistError::AppendNotConsecutive { at, next } => {
                write!(f, "an append jumps from index {} to {}", at.0, next.0)
            }
            PersistError::TruncateAtFloor { at, floor } => write!(
                f,
                "a truncation at index {} is at or below the floor {} (snapshotted or gone)",
                at.0, floor.0
            ),
            PersistError::TruncatePastLast { at, last } => write!(
                f,
                "a truncation at index {} is past the last index {}",
                at.0, last.0
            ),
            PersistError::PurgePastSnapshot { at, snapshot } => write!(
                f,
                "a purge up to index {} is past the saved snapshot's last index {}",
                at.0, snapshot.0
            ),
            PersistError::SnapshotNotNewer {
                index,
                term,
                stored_index,
                stored_term,
            } => write!(
                f,
                "a snapshot at index {} term {} is not newer than the stored one at index {} \
                 term {}",
                index.0, term.0, stored_index.0, stored_term.0
            ),
            PersistError::SnapshotNotInLog { index, term, found } => match found {
                Some(t) => write!(
                    f,
                    "a snapshot at index {} term {} but the log holds term {} there",
                    index.0, term.0, t.0
                ),
                None => write!(
                    f,
                    "a snapshot at index {} term {} but the log does not hold that index",
                    index.0, term.0
                ),
            },
            PersistError::TermRegressed { term, stored } => write!(
                f,
                "a hard state at term {} is below the stored term {}",
                term.0, stored.0
            ),
        }
    }
}

impl std::error::Error for PersistError {}

/// What [`check`] needs to know of a log: the stored snapshot, the floor
/// (entries at or below it are gone or covered by the snapshot, and may not
/// be truncated), the last index (the last entry's, else the snapshot's, else
/// 0) and the stored term.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LogShape {
    /// The stored snapshot's last index and term.
    pub snapshot: Option<(LogIndex, Term)>,
    pub floor: LogIndex,
    pub last: LogIndex,
    pub term: Term,
}

impl LogShape {
    fn snapshot_index(&self) -> LogIndex {
        self.snapshot.map_or(LogIndex::ZERO, |(i, _)| i)
    }
}

/// Whether `op` may be applied to a log of this shape; `term_at(i)` is the
/// term of the entry the log holds at `i`, if any. The one place the
/// contract of [`PersistOp`] is checked.
pub fn check(
    shape: &LogShape,
    term_at: impl Fn(LogIndex) -> Option<Term>,
    op: &PersistOp,
) -> Result<(), PersistError> {
    match op {
        PersistOp::HardState(h) => check_hard_state(shape.term, h),
        PersistOp::Append(entries) => check_append(shape.last, entries),
        PersistOp::TruncateFrom(at) => check_truncate(shape.floor, shape.last, *at),
        PersistOp::PurgeUpTo(at) => check_purge(shape.snapshot_index(), *at),
        PersistOp::SaveSnapshot(s) => {
            check_newer(shape.snapshot, &s.meta)?;
            let found = term_at(s.meta.last_index);
            if found != Some(s.meta.last_term) {
                return Err(PersistError::SnapshotNotInLog {
                    index: s.meta.last_index,
                    term: s.meta.last_term,
                    found,
                });
            }
            Ok(())
        }
        PersistOp::InstallSnapshot(s) => check_newer(shape.snapshot, &s.meta),
    }
}

fn check_hard_state(stored: Term, h: &HardState) -> Result<(), PersistError> {
    if h.term < stored {
        return Err(PersistError::TermRegressed {
            term: h.term,
            stored,
        });
    }
    Ok(())
}

/// An append starts right after `last` and its entries are consecutive (an
/// empty append is allowed and changes nothing). Indexes may come from disk:
/// no `next()`, which saturates at `u64::MAX`.
pub fn check_append(last: LogIndex, entries: &[Entry]) -> Result<(), PersistError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if last.0.checked_add(1) != Some(first.index.0) {
        return Err(PersistError::AppendNotNext {
            first: first.index,
            last,
        });
    }
    let follows = |w: &[Entry]| w[0].index.0.checked_add(1) == Some(w[1].index.0);
    if let Some(w) = entries.windows(2).find(|w| !follows(w)) {
        return Err(PersistError::AppendNotConsecutive {
            at: w[0].index,
            next: w[1].index,
        });
    }
    Ok(())
}

/// A truncation drops at least one entry above the floor.
pub fn check_truncate(floor: LogIndex, last: LogIndex, at: LogIndex) -> Result<(), PersistError> {
    if at <= floor {
        return Err(PersistError::TruncateAtFloor { at, floor });
    }
    if at > last {
        return Err(PersistError::TruncatePastLast { at, last });
    }
    Ok(())
}

/// A purge goes no further than the saved snapshot (0: none saved).
pub fn check_purge(snapshot: LogIndex, at: LogIndex) -> Result<(), PersistError> {
    if at > snapshot {
        return Err(PersistError::PurgePastSnapshot { at, snapshot });
    }
    Ok(())
}

/// A snapshot replaces only an older one: a higher last index.
pub fn check_newer(
    stored: Option<(LogIndex, Term)>,
    meta: &SnapshotMeta,
) -> Result<(), PersistError> {
    match stored {
        Some((stored_index, stored_term)) if meta.last_index <= stored_index => {
            Err(PersistError::SnapshotNotNewer {
                index: meta.last_index,
                term: meta.last_term,
                stored_index,
                stored_term,
            })
        }
        _ => Ok(()),
    }
}

/// What a [`Durable`] keeps of its log's entries, and the four changes
/// [`Durable::apply`] makes to them. Entries are in index order.
pub trait LogEntries {
    fn first_index(&self) -> Option<LogIndex>;
    fn last_index(&self) -> Option<LogIndex>;
    /// The term of the entry at `index`, if held.
    fn term_of(&self, index: LogIndex) -> Option<Term>;
    /// Whether the entry at `index` is held with `term`.
    fn holds(&self, index: LogIndex, term: Term) -> bool;
    /// Adds entries after the last (checked consecutive by the caller).
    fn append(&mut self, entries: &[Entry]);
    /// Drops every entry at or above `at`.
    fn truncate_from(&mut self, at: LogIndex);
    /// Drops every entry at or below `at`.
    fn purge_up_to(&mut self, at: LogIndex);
    fn clear(&mut self);
}

impl LogEntries for Vec<Entry> {
    fn first_index(&self) -> Option<LogIndex> {
        self.first().map(|e| e.index)
    }
    fn last_index(&self) -> Option<LogIndex> {
        self.last().map(|e| e.index)
    }
    fn term_of(&self, index: LogIndex) -> Option<Term> {
        let first = self.first()?.index;
        let at = index.0.checked_sub(first.0)?;
        let e = self.get(usize::try_from(at).ok()?)?;
        Some(e.term)
    }
    fn holds(&self, index: LogIndex, term: Term) -> bool {
        self.iter().any(|e| e.index == index && e.term == term)
    }
    fn append(&mut self, entries: &[Entry]) {
        self.extend(entries.iter().cloned());
    }
    fn truncate_from(&mut self, at: LogIndex) {
        self.retain(|e| e.index < at);
    }
    fn purge_up_to(&mut self, at: LogIndex) {
        self.retain(|e| e.index > at);
    }
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// Only the terms of a log's entries: one `(first, last, term)` run per
/// stretch of consecutive entries of one term. What a data dir keeps in
/// memory to check ops against: a `Vec<Entry>` of every entry since the
/// last purge grew by doubling, and copying it stalled the disk thread
/// (10+ ms at 2^19 entries, every server at once, since their logs are as
/// long).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TermRuns {
    runs: Vec<(LogIndex, LogIndex, Term)>,
}

impl TermRuns {
    /// The runs of `entries` (in index order; a gap starts a new run).
    pub fn of(entries: &[Entry]) -> TermRuns {
        let mut runs = TermRuns::default();
        runs.append(entries);
        runs
    }

    /// How many runs it holds (its memory, in units of 24 bytes).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }
}

impl LogEntries for TermRuns {
    fn first_index(&self) -> Option<LogIndex> {
        self.runs.first().map(|r| r.0)
    }
    fn last_index(&self) -> Option<LogIndex> {
        self.runs.last().map(|r| r.1)
    }
    fn term_of(&self, index: LogIndex) -> Option<Term> {
        // The last run starting at or below `index`.
        let i = self.runs.partition_point(|r| r.0 <= index).checked_sub(1)?;
        let (_, last, term) = self.runs[i];
        (index <= last).then_some(term)
    }
    fn holds(&self, index: LogIndex, term: Term) -> bool {
        self.term_of(index) == Some(term)
    }
    fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            match self.runs.last_mut() {
                Some((_, last, term))
                    if *term == e.term && last.0.checked_add(1) == Some(e.index.0) =>
                {
                    *last = e.index
                }
                _ => self.runs.push((e.index, e.index, e.term)),
            }
        }
    }
    fn truncate_from(&mut self, at: LogIndex) {
        self.runs.retain(|r| r.0 < at);
        if let Some((_, last, _)) = self.runs.last_mut() {
            if *last >= at {
                *last = LogIndex(at.0 - 1);
            }
        }
    }
    fn purge_up_to(&mut self, at: LogIndex) {
        self.runs.retain(|r| r.1 > at);
        if let Some((first, _, _)) = self.runs.first_mut() {
            if *first <= at {
                *first = LogIndex(at.0 + 1);
            }
        }
    }
    fn clear(&mut self) {
        self.runs.clear();
    }
}

impl<L: LogEntries> Durable<L> {
    /// The last index: the last entry's, else the snapshot's, else 0.
    pub fn last_index(&self) -> LogIndex {
        match (self.entries.last_index(), &self.snapshot) {
            (Some(i), _) => i,
            (None, Some(s)) => s.meta.last_index,
            (None, None) => LogIndex::ZERO,
        }
    }

    /// The term of the entry held at `index` (the snapshot's last entry
    /// counts).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if let Some(s) = &self.snapshot {
            if s.meta.last_index == index {
                return Some(s.meta.last_term);
            }
        }
        self.entries.term_of(index)
    }

    /// What [`check`] needs to know of this state.
    pub fn shape(&self) -> LogShape {
        let snapshot = self
            .snapshot
            .as_ref()
            .map(|s| (s.meta.last_index, s.meta.last_term));
        let last = self.last_index();
        let below_entries = self.entries.first_index().map_or(last, |i| i.prev());
        let floor = below_entries.max(snapshot.map_or(LogIndex::ZERO, |(i, _)| i));
        LogShape {
            snapshot,
            floor,
            last,
            term: self.hard_state.term,
        }
    }

    /// Applies one durable write, with the meaning [`PersistOp`] documents,
    /// or refuses it (state unchanged) if it is outside the contract.
    pub fn apply(&mut self, op: &PersistOp) -> Result<(), PersistError> {
        check(&self.shape(), |i| self.term_at(i), op)?;
        match op {
            PersistOp::HardState(h) => self.hard_state = h.clone(),
            PersistOp::Append(entries) => self.entries.append(entries),
            PersistOp::TruncateFrom(at) => self.entries.truncate_from(*at),
            PersistOp::PurgeUpTo(at) => self.entries.purge_up_to(*at),
            PersistOp::SaveSnapshot(s) => self.snapshot = Some(s.clone()),
            PersistOp::InstallSnapshot(s) => {
                self.install(s.clone());
            }
        }
        Ok(())
    }

    /// §7: the log after the snapshot is kept if the entry at its last
    /// index matches; otherwise the whole log goes.
    fn install(&mut self, s: Snapshot) {
        let (index, term) = (s.meta.last_index, s.meta.last_term);
        if self.entries.holds(index, term) {
            self.entries.purge_up_to(index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(s);
    }
}

impl Durable {
    /// Where the log is not what a server can start from: entries that are
    /// not consecutive, or that do not reach back to the snapshot (or to
    /// index 1 without one). `None` when the state is whole.
    pub fn gap(&self) -> Option<(LogIndex, LogIndex)> {
        let follows = |w: &[Entry]| w[0].index.0.checked_add(1) == Some(w[1].index.0);
        if let Some(w) = self.entries.windows(2).find(|w| !follows(w)) {
            return Some((w[0].index, w[1].index));
        }
        let first = self.entries.first()?.index;
        let base = self
            .snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |s| s.meta.last_index);
        (first.0 > base.0.saturating_add(1) || first == LogIndex::ZERO).then_some((base, first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{EntryPayload, Membership};

    fn entries(range: core::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|i| Entry {
                term: Term(term),
                index: LogIndex(i),
                payload: EntryPayload::Noop,
            })
            .collect()
    }

    fn snap(index: u64, term: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: LogIndex(index),
                last_term: Term(term),
                membership: Membership::default(),
            },
            data: vec![7].into(),
        }
    }

    /// `TermRuns` keeps what `Vec<Entry>` keeps of every entry's term,
    /// through random appends (terms rising, often several per run),
    /// truncations, snapshots with purges and installs that keep or drop
    /// the log: `Durable::apply` gives both the same shape, the same term at
    /// every index and the same verdict on every op, and the runs number no
    /// more than the terms.
    #[test]
    fn term_runs_answer_as_the_entries_do() {
        use crate::raft::{LogEntries, TermRuns};
        for seed in 0..200 {
            let mut rng = crate::rng::Rng::new(seed);
            let mut full: Durable = Durable::default();
            let mut runs: Durable<TermRuns> = Durable::default();
            let mut term = 1;
            for _ in 0..300 {
                let last = full.last_index().0;
                let op = match rng.range(0, 10) {
                    0..=4 => {
                        if rng.chance(1, 4) {
                            term += 1;
                        }
                        let n = rng.range(0, 20);
                        PersistOp::Append(entries(last + 1..=last + n, term))
                    }
                    5 => PersistOp::TruncateFrom(LogIndex(rng.range(0, last + 2))),
                    6 => PersistOp::SaveSnapshot(snap(rng.range(0, last + 2), term)),
                    7 => PersistOp::PurgeUpTo(LogIndex(rng.range(0, last + 2))),
                    8 => {
                        // Now and then matching a held entry (the log after
                        // it stays), else not (the log goes).
                        let i = rng.range(0, last + 3);
                        let t = full.term_at(LogIndex(i)).unwrap_or(Term(term));
                        let t = if rng.chance(1, 2) { t } else { Term(t.0 + 1) };
                        PersistOp::InstallSnapshot(snap(i, t.0))
                    }
                    _ => PersistOp::Append(Vec::new()),
                };
                let a = full.apply(&op).map_err(|e| e.to_string());
                let b = runs.apply(&op).map_err(|e| e.to_string());
                assert_eq!(a, b, "seed {seed}: {op:?}");
                assert_eq!(full.shape(), runs.shape(), "seed {seed}: {op:?}");
                assert_eq!(full.entries.first_index(), runs.entries.first_index());
                for i in 0..=full.last_index().0 + 2 {
                    let i = LogIndex(i);
                    assert_eq!(
                        full.term_at(i),
                        runs.term_at(i),
                        "seed {seed}: at {i:?} after {op:?}"
                    );
                }
                let terms: std::collections::BTreeSet<Term> =
                    full.entries.iter().map(|e| e.term).collect();
                assert!(runs.entries.run_count() <= terms.len(), "seed {seed}");
            }
        }
    }

    fn with(ops: &[PersistOp]) -> Durable {
        let mut d = Durable::default();
        for op in ops {
            d.apply(op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        }
        d
    }

    #[test]
    fn save_leaves_the_log_and_purge_drops_only_what_it_covers() {
        let d = with(&[
            PersistOp::Append(entries(1..=6, 1)),
            PersistOp::SaveSnapshot(snap(4, 1)),
        ]);
        assert_eq!(d.entries, entries(1..=6, 1));
        let d = with(&[
            PersistOp::Append(entries(1..=6, 1)),
            PersistOp::SaveSnapshot(snap(4, 1)),
            PersistOp::PurgeUpTo(LogIndex(2)),
            PersistOp::PurgeUpTo(LogIndex(1)), // below the first entry: nothing
        ]);
        assert_eq!(d.entries, entries(3..=6, 1));
        assert_eq!(d.shape().floor, LogIndex(4), "the snapshot is the floor");
    }

    #[test]
    fn install_keeps_a_matching_suffix_and_drops_any_other_log() {
        let log = PersistOp::Append(entries(1..=6, 2));
        let d = with(&[log.clone(), PersistOp::InstallSnapshot(snap(4, 2))]);
        assert_eq!(d.entries, entries(5..=6, 2));
        let d = with(&[log.clone(), PersistOp::InstallSnapshot(snap(4, 3))]);
        assert_eq!(d.entries, vec![]);
        let d = with(&[log, PersistOp::InstallSnapshot(snap(9, 3))]);
        assert_eq!((d.last_index(), d.entries), (LogIndex(9), vec![]));
    }

    #[test]
    fn truncate_then_append_replaces_a_suffix() {
        let d = with(&[
            PersistOp::Append(entries(1..=6, 1)),
            PersistOp::TruncateFrom(LogIndex(4)),
            PersistOp::Append(entries(4..=5, 2)),
        ]);
        let mut want = entries(1..=3, 1);
        want.extend(entries(4..=5, 2));
        assert_eq!(d.entries, want);
    }

    #[test]
    fn each_refusal_names_its_reason_and_changes_nothing() {
        let base = with(&[
            PersistOp::HardState(HardState {
                term: Term(3),
                vote: None,
            }),
            PersistOp::Append(entries(1..=6, 1)),
            PersistOp::SaveSnapshot(snap(4, 1)),
        ]);
        let cases = [
            (
                PersistOp::Append(entries(8..=8, 1)),
                PersistError::AppendNotNext {
                    first: LogIndex(8),
                    last: LogIndex(6),
                },
            ),
            (
                PersistOp::Append(entries(6..=6, 1)),
                PersistError::AppendNotNext {
                    first: LogIndex(6),
                    last: LogIndex(6),
                },
            ),
            (
                PersistOp::TruncateFrom(LogIndex(4)),
                PersistError::TruncateAtFloor {
                    at: LogIndex(4),
                    floor: LogIndex(4),
                },
            ),
            (
                PersistOp::TruncateFrom(LogIndex(7)),
                PersistError::TruncatePastLast {
                    at: LogIndex(7),
                    last: LogIndex(6),
                },
            ),
            (
                PersistOp::PurgeUpTo(LogIndex(5)),
                PersistError::PurgePastSnapshot {
                    at: LogIndex(5),
                    snapshot: LogIndex(4),
                },
            ),
            (
                PersistOp::InstallSnapshot(snap(4, 1)),
                PersistError::SnapshotNotNewer {
                    index: LogIndex(4),
                    term: Term(1),
                    stored_index: LogIndex(4),
                    stored_term: Term(1),
                },
            ),
            (
                PersistOp::SaveSnapshot(snap(5, 2)),
                PersistError::SnapshotNotInLog {
                    index: LogIndex(5),
                    term: Term(2),
                    found: Some(Term(1)),
                },
            ),
            (
                PersistOp::HardState(HardState {
                    term: Term(2),
                    vote: None,
                }),
                PersistError::TermRegressed {
                    term: Term(2),
                    stored: Term(3),
                },
            ),
        ];
        for (op, want) in cases {
            let mut d = base.clone();
            assert_eq!(d.apply(&op), Err(want), "{op:?}");
            assert_eq!(d, base, "{op:?} changed the state");
        }
        let mut jumpy = entries(7..=7, 1);
        jumpy.extend(entries(9..=9, 1));
        let mut d = base.clone();
        assert_eq!(
            d.apply(&PersistOp::Append(jumpy)),
            Err(PersistError::AppendNotConsecutive {
                at: LogIndex(7),
                next: LogIndex(9)
            })
        );
        assert_eq!(d, base);
    }
}
