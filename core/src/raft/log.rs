//! The in-memory view of the Raft log: a compacted base plus the entries after it.

use std::collections::VecDeque;

use super::types::{Entry, EntryPayload, Membership};
use crate::ids::{LogIndex, Term};

/// The log. Entries `first_index()..=last_index()` are held; everything at or
/// below `base` was compacted into a snapshot.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// Index and term of the last compacted entry (0, 0 for a fresh log).
    base_index: LogIndex,
    base_term: Term,
    entries: Chunks,
    /// Entries dropped from the log (compacted, truncated, replaced by a
    /// snapshot) and not yet handed out, oldest first: see [`LogGarbage`].
    garbage: Vec<Vec<Entry>>,
}

/// Entries the log no longer holds, in whole chunks, for the driver to
/// free ([`crate::Action::Discard`]).
///
/// A compaction drops tens of thousands of entries at once. Freeing them
/// (three allocations each, long out of cache) and the allocator's
/// returning of the emptied pages to the OS, with its TLB shootdowns, took
/// the agent task 10-20 ms right after every snapshot, while the snapshot
/// file was being written on the other CPU (`bench/snapshot-stall.sh` on
/// tmpfs, traced with `perf`): every request waited. Freed a bounded
/// number per input instead, the cost still landed in the same window.
/// So the core hands them out and the daemon frees them on its snapshot
/// thread, where no request waits; dropping them at once (the simulator,
/// the testkit) is just as correct.
#[derive(Clone, PartialEq, Eq)]
pub struct LogGarbage(Vec<Vec<Entry>>);

impl LogGarbage {
    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }
}

impl std::fmt::Debug for LogGarbage {
    /// Its size, not tens of thousands of entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogGarbage({} entries)", self.len())
    }
}

/// Entries per chunk of [`Chunks`]: 1024 entries of 48 bytes are 48 KiB,
/// under glibc's mmap threshold, so a chunk is an ordinary heap allocation.
pub const CHUNK_ENTRIES: usize = 1024;

/// The held entries, in fixed-size chunks rather than one growing buffer.
///
/// A log that is not compacted for a while (a long snapshot interval, a
/// lagging follower holding it back, no snapshots at all) grows to
/// hundreds of thousands of entries, and one contiguous buffer doubles
/// now and then: with an allocator that cannot remap in place (mimalloc)
/// each doubling copied tens of MB and touched as many fresh pages on the
/// agent task, and all three servers stalled together for up to 188 ms
/// (`bench/snapshot-stall.sh` on tmpfs). Chunks never move: an append
/// takes a new 48 KiB chunk every [`CHUNK_ENTRIES`] entries, and a
/// compaction hands whole chunks to the garbage.
///
/// Every chunk but the last holds exactly [`CHUNK_ENTRIES`] entries, so
/// entry `i` is found by division. The first `dead` entries of the first
/// chunk were compacted away but stay until the rest of their chunk goes
/// (at most `CHUNK_ENTRIES - 1` of them); nothing reads them.
#[derive(Clone, Debug, Default)]
struct Chunks {
    chunks: VecDeque<Vec<Entry>>,
    dead: usize,
    len: usize,
}

impl Chunks {
    fn from_vec(entries: Vec<Entry>) -> Chunks {
        let mut c = Chunks::default();
        for e in entries {
            c.push_back(e);
        }
        c
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get(&self, i: usize) -> Option<&Entry> {
        if i >= self.len {
            return None;
        }
        let at = self.dead + i;
        self.chunks
            .get(at / CHUNK_ENTRIES)
            .and_then(|c| c.get(at % CHUNK_ENTRIES))
    }

    fn back(&self) -> Option<&Entry> {
        if self.len == 0 {
            return None;
        }
        self.chunks.back().and_then(|c| c.last())
    }

    fn push_back(&mut self, e: Entry) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK_ENTRIES => last.push(e),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_ENTRIES);
                chunk.push(e);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// Keeps the first `keep` entries; the rest go to `garbage`.
    fn truncate(&mut self, keep: usize, garbage: &mut Vec<Vec<Entry>>) {
        if keep >= self.len {
            return;
        }
        let at = self.dead + keep;
        // Whole chunks past the cut.
        let chunks_kept = at.div_ceil(CHUNK_ENTRIES);
        while self.chunks.len() > chunks_kept.max(1) {
            garbage.extend(self.chunks.pop_back());
        }
        // The cut inside the last chunk kept.
        let before_last = self.chunks.len().saturating_sub(1) * CHUNK_ENTRIES;
        if let Some(last) = self.chunks.back_mut() {
            let within = at - before_last;
            if within < last.len() {
                garbage.push(last.split_off(within));
            }
        }
        self.len = keep;
        if self.len == 0 && self.chunks.back().is_some_and(|c| c.len() <= self.dead) {
            // Only dead entries are left: let them go too.
            garbage.extend(self.chunks.drain(..));
            self.dead = 0;
        }
    }

    /// Drops the first `n` entries (`n <= len`): whole chunks go to
    /// `garbage`, the rest of a chunk waits as `dead`.
    fn drop_front(&mut self, n: usize, garbage: &mut Vec<Vec<Entry>>) {
        assert!(n <= self.len, "drop only held entries");
        self.len -= n;
        self.dead += n;
        while self.dead >= CHUNK_ENTRIES || (self.len == 0 && !self.chunks.is_empty()) {
            let Some(first) = self.chunks.pop_front() else {
                break;
            };
            self.dead -= first.len().min(self.dead);
            garbage.push(first);
        }
        if self.chunks.is_empty() {
            self.dead = 0;
        }
    }

    /// Everything goes to `garbage`.
    fn clear(&mut self, garbage: &mut Vec<Vec<Entry>>) {
        garbage.extend(self.chunks.drain(..));
        self.dead = 0;
        self.len = 0;
    }

    /// The held entries, oldest first.
    fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.chunks.iter().flatten().skip(self.dead)
    }

    /// The held entries, newest first.
    fn iter_rev(&self) -> impl Iterator<Item = &Entry> + '_ {
        (0..self.len).rev().filter_map(move |i| self.get(i))
    }
}

impl RaftLog {
    pub fn new(base_index: LogIndex, base_term: Term, entries: Vec<Entry>) -> RaftLog {
        let log = RaftLog {
            base_index,
            base_term,
            entries: Chunks::from_vec(entries),
            garbage: Vec::new(),
        };
        log.assert_contiguous();
        log
    }

    fn assert_contiguous(&self) {
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(
                e.index.0,
                self.base_index.0 + 1 + i as u64,
                "log must be contiguous"
            );
        }
    }

    pub fn base_index(&self) -> LogIndex {
        self.base_index
    }

    /// The term of the entry at the base (the snapshot's last entry).
    pub fn base_term(&self) -> Term {
        self.base_term
    }

    pub fn first_index(&self) -> LogIndex {
        self.base_index.next()
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.base_index.0 + self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.base_term, |e| e.term)
    }

    /// The term of the entry at `index`, if known (the base counts).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.base_index {
            return None;
        }
        usize::try_from(index.0 - self.base_index.0 - 1)
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// Entries from `from` on, at most `count_max` of them and about
    /// `bytes_max` of payload (always at least one if any exist).
    pub fn slice(&self, from: LogIndex, count_max: usize, bytes_max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = from;
        while let Some(e) = self.entry(i) {
            let size = entry_size(e);
            if !out.is_empty() && (out.len() >= count_max || bytes + size > bytes_max) {
                break;
            }
            bytes += size;
            out.push(e.clone());
            i = i.next();
        }
        out
    }

    /// Append one entry at `last_index() + 1`.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "append must be contiguous"
        );
        assert!(
            entry.term >= self.last_term(),
            "terms in the log never decrease"
        );
        self.entries.push_back(entry);
    }

    /// Drop every entry at `index` and after.
    pub fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.base_index, "never truncate compacted entries");
        let keep = (index.0 - self.base_index.0 - 1) as usize;
        self.entries.truncate(keep, &mut self.garbage);
    }

    /// Forget entries up to and including `index`, which must be held.
    pub fn compact_to(&mut self, index: LogIndex) {
        if index <= self.base_index {
            return;
        }
        let term = self.term_at(index).expect("compact only held entries");
        let drop = (index.0 - self.base_index.0) as usize;
        // Whole chunks wait in the garbage to be freed; nothing is copied.
        self.entries.drop_front(drop, &mut self.garbage);
        self.base_index = index;
        self.base_term = term;
    }

    /// Replace everything with a snapshot's base.
    pub fn reset_to(&mut self, index: LogIndex, term: Term) {
        self.entries.clear(&mut self.garbage);
        self.base_index = index;
        self.base_term = term;
    }

    /// The entries dropped from the log since the last call, if any, for
    /// the driver to free (see [`LogGarbage`]).
    pub fn take_garbage(&mut self) -> Option<LogGarbage> {
        if self.garbage.is_empty() {
            return None;
        }
        Some(LogGarbage(std::mem::take(&mut self.garbage)))
    }

    /// Entries dropped from the log and not yet handed out ([`RaftLog::take_garbage`]).
    pub fn garbage_len(&self) -> usize {
        self.garbage.iter().map(Vec::len).sum()
    }

    /// The latest configuration in the held entries at or below `upto`, if any.
    pub fn membership_at(&self, upto: LogIndex) -> Option<(LogIndex, &Membership)> {
        self.entries
            .iter_rev()
            .filter(|e| e.index <= upto)
            .find_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some((e.index, m)),
                _ => None,
            })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A cheap estimate of an entry's encoded size, for batching.
pub fn entry_size(e: &Entry) -> usize {
    use crate::fsm::{Command, KvCommand};
    24 + match &e.payload {
        EntryPayload::Noop => 0,
        EntryPayload::Membership(m) => m.servers.len() * 96,
        EntryPayload::Command(cmd) => match cmd.as_ref() {
            Command::Kv(c) => match c {
                KvCommand::Set(w) | KvCommand::Cas { write: w, .. } => w.key.len() + w.value.len(),
                KvCommand::Delete { key } | KvCommand::DeleteCas { key, .. } => key.len(),
                KvCommand::DeleteTree { prefix } => prefix.len(),
                KvCommand::Lock { write: w, session } | KvCommand::Unlock { write: w, session } => {
                    w.key.len() + w.value.len() + session.len()
                }
            },
            Command::TombstoneReap { .. } => 8,
            Command::AutopilotSet { config, .. } => {
                64 + config.redundancy_zone_tag.len() + config.upgrade_version_tag.len()
            }
            Command::CatalogRegister(reg) => reg.approx_bytes(),
            Command::CatalogDeregister(d) => {
                8 + d.node.len() + d.service_id.len() + d.check_id.len()
            }
            Command::RestoreChunk(c) => 32 + c.data.len(),
            Command::Txn(ops) => ops.iter().map(crate::fsm::txn::approx_bytes).sum(),
            Command::SessionCreate(s) => {
                64 + s.id.len()
                    + s.name.len()
                    + s.node.len()
                    + s.ttl.len()
                    + s.check_ids().map(|c| 8 + c.len()).sum::<usize>()
            }
            Command::SessionDestroy { id } => 8 + id.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Noop,
        }
    }

    #[test]
    fn indexes_terms_and_compaction() {
        let mut log = RaftLog::new(LogIndex(0), Term(0), vec![e(1, 1), e(2, 1), e(3, 2)]);
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.last_term(), Term(2));
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(2)), Some(Term(1)));
        assert_eq!(log.term_at(LogIndex(4)), None);
        log.compact_to(LogIndex(2));
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(2)), Some(Term(1)));
        assert_eq!(log.entry(LogIndex(2)), None);
        assert_eq!(log.last_index(), LogIndex(3));
        log.truncate_from(LogIndex(3));
        assert_eq!(log.last_index(), LogIndex(2));
        assert_eq!(log.last_term(), Term(1));
        log.push(e(3, 3));
        assert_eq!(log.slice(LogIndex(3), 10, 1 << 20), vec![e(3, 3)]);
    }

    /// Entries dropped by a compaction, a truncation or a reset wait in the
    /// garbage, in whole chunks (nothing is copied or freed on the way),
    /// until `take_garbage` hands them all out; the log reads the same
    /// before and after.
    #[test]
    fn dropped_entries_are_handed_out_whole() {
        let n = 100_000;
        let mut log = RaftLog::new(
            LogIndex(0),
            Term(0),
            (1..=n).map(|i| e(i, 1 + i / 1000)).collect(),
        );
        assert_eq!(log.take_garbage(), None, "nothing dropped yet");
        log.compact_to(LogIndex(90_000));
        // Whole chunks wait in the garbage; the compacted head of the
        // chunk that holds the new first entry goes with that chunk.
        let whole = 90_000 - 90_000 % CHUNK_ENTRIES;
        assert_eq!(log.garbage_len(), whole);
        log.truncate_from(LogIndex(99_001));
        assert_eq!(log.garbage_len(), whole + 1_000);
        let (first, last, last_term) = (log.first_index(), log.last_index(), log.last_term());
        assert_eq!((first, last), (LogIndex(90_001), LogIndex(99_000)));

        let garbage = log.take_garbage().expect("entries were dropped");
        assert_eq!(garbage.len(), whole + 1_000);
        assert_eq!(
            format!("{garbage:?}"),
            format!("LogGarbage({} entries)", whole + 1_000)
        );
        // Compacted chunks are the log's own, full and never copied; the
        // truncated tail is one piece.
        assert!(garbage.0[..whole / CHUNK_ENTRIES]
            .iter()
            .all(|c| c.len() == CHUNK_ENTRIES && c.capacity() == CHUNK_ENTRIES));
        assert_eq!(garbage.0[0][0], e(1, 1));
        assert_eq!(garbage.0.last().unwrap()[0], e(99_001, 100));
        assert_eq!(log.garbage_len(), 0);
        assert_eq!(log.take_garbage(), None, "handed out once");
        assert_eq!((log.first_index(), log.last_index()), (first, last));
        assert_eq!(log.last_term(), last_term);
        assert_eq!(log.term_at(LogIndex(90_000)), Some(Term(91)));
        assert_eq!(log.entry(LogIndex(95_000)), Some(&e(95_000, 96)));

        log.reset_to(LogIndex(120_000), Term(200));
        // The 9,000 held entries and the compacted head of their first chunk.
        assert_eq!(
            log.take_garbage().map(|g| g.len()),
            Some(9_000 + 90_000 % CHUNK_ENTRIES)
        );
        assert!(log.is_empty());
        assert_eq!(log.term_at(LogIndex(120_000)), Some(Term(200)));
        log.push(e(120_001, 200));
        assert_eq!(log.last_index(), LogIndex(120_001));
        assert_eq!(log.take_garbage(), None);
    }

    /// Appends, truncations, compactions and resets at random, against a
    /// plain `VecDeque` as the model: every held entry reads the same, and
    /// every entry the model dropped is in the garbage or (at most a
    /// chunk's worth) in the compacted head of the first chunk.
    #[test]
    fn the_chunked_log_reads_like_one_buffer_through_any_sequence() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let mut log = RaftLog::default();
        let mut model: VecDeque<Entry> = VecDeque::new();
        let (mut base, mut base_term, mut term) = (0u64, 0u64, 1u64);
        let mut dropped = 0usize;
        for step in 0..20_000 {
            match next(100) {
                0..=69 => {
                    // A burst of appends, sometimes across chunk edges.
                    for _ in 0..=next(3 * CHUNK_ENTRIES as u64 / 2) {
                        let index = base + model.len() as u64 + 1;
                        let entry = e(index, term);
                        log.push(entry.clone());
                        model.push_back(entry);
                    }
                }
                70..=79 if !model.is_empty() => {
                    let keep = next(model.len() as u64 + 1) as usize;
                    log.truncate_from(LogIndex(base + keep as u64 + 1));
                    dropped += model.len() - keep;
                    model.truncate(keep);
                    term += 1;
                }
                80..=94 if !model.is_empty() => {
                    let n = 1 + next(model.len() as u64) as usize;
                    let to = base + n as u64;
                    log.compact_to(LogIndex(to));
                    base_term = model[n - 1].term.0;
                    base = to;
                    model.drain(..n);
                    dropped += n;
                }
                95..=97 => {
                    base += next(5000);
                    term += 1;
                    base_term = term;
                    log.reset_to(LogIndex(base), Term(base_term));
                    dropped += model.len();
                    model.clear();
                }
                _ => {
                    let freed = log.take_garbage().map_or(0, |g| g.len());
                    dropped -= freed;
                }
            }
            assert_eq!(log.len(), model.len(), "step {step}");
            assert_eq!(log.base_index(), LogIndex(base), "step {step}");
            assert_eq!(log.base_term(), Term(base_term), "step {step}");
            assert_eq!(log.last_index(), LogIndex(base + model.len() as u64));
            assert_eq!(
                log.last_term(),
                model.back().map_or(Term(base_term), |e| e.term)
            );
            assert_eq!(log.entry(LogIndex(base)), None);
            assert_eq!(log.entry(LogIndex(base + model.len() as u64 + 1)), None);
            for i in [0, model.len() / 2, model.len().saturating_sub(1)] {
                if let Some(m) = model.get(i) {
                    assert_eq!(log.entry(m.index), Some(m), "step {step}");
                }
            }
            if step % 97 == 0 {
                let all = log.slice(LogIndex(base + 1), usize::MAX, usize::MAX);
                assert!(all.iter().eq(model.iter()), "step {step}");
            }
            // Dropped entries wait in the garbage, or in the first chunk's
            // compacted head (less than a chunk).
            let garbage = log.garbage_len();
            assert!(
                garbage <= dropped && dropped - garbage < CHUNK_ENTRIES,
                "step {step}: {garbage} of {dropped}"
            );
        }
        log.take_garbage();
        assert_eq!(log.garbage_len(), 0);
    }

    #[test]
    fn slice_respects_count_and_always_sends_one() {
        let log = RaftLog::new(LogIndex(0), Term(0), (1..=10).map(|i| e(i, 1)).collect());
        assert_eq!(log.slice(LogIndex(1), 3, 1 << 20).len(), 3);
        assert_eq!(log.slice(LogIndex(1), 100, 1).len(), 1);
        assert_eq!(log.slice(LogIndex(11), 100, 1 << 20).len(), 0);
    }
}
