//! The boundary between a decoded peer message and the Raft state machine.
//!
//! Every Raft message is checked here against what an honest peer could have
//! sent, and against the receiver's state, before any handler touches it
//! (STYLE.md: validate at the boundary, then trust). A refused message
//! changes no state; the server reports
//! [`crate::Event::PeerMessageRefused`] so its driver can close that peer's
//! connection. Handlers may then rely on what is checked here: the log's
//! `push` asserts contiguity and non-decreasing terms, and AppendEntries
//! entries that pass reach it only in that shape.
//!
//! What is *not* refused here, because honest peers send it: anything from a
//! server outside the configuration (thesis §4.2.3; see the handlers in
//! `node.rs`), stale messages from older terms, `prev_log_index` beyond our
//! log, `leader_commit` beyond what the message carries (the leader commits
//! entries it has not sent us yet), and failure hints of any value.

use super::log::{entry_size, RaftLog};
use super::node::STALE_SEQ;
use super::types::{
    AppendEntries, AppendEntriesResponse, InstallSnapshot, InstallSnapshotChunk,
    InstallSnapshotChunkResponse, InstallSnapshotResponse, RaftMessage, SnapshotMeta, VoteRequest,
};
use crate::ids::{LogIndex, Term};

/// No log index an honest server sends is above this: at a billion entries
/// a second a log takes three centuries to get there. A larger one could
/// only be planted by a forged message, and a log that reached `u64::MAX`
/// would have no index left for its next entry (found by the cluster fuzz
/// target: a leader whose snapshot ended there overflowed on its next write).
pub const INDEX_MAX: LogIndex = LogIndex(u64::MAX / 2);

/// What the checks read of the receiver.
pub(super) struct Receiver<'a> {
    pub term: Term,
    pub log: &'a RaftLog,
    pub commit: LogIndex,
    /// While this server leads: the last `seq` it sent in its term. Answers
    /// in its term can only echo a `seq` up to this one.
    pub leading_seq: Option<u64>,
    pub append_entries_max: usize,
    pub append_bytes_max: usize,
}

/// `Ok` if an honest peer could have sent `msg` to a server in state `r`;
/// otherwise why not, in a sentence for the log.
pub(super) fn check(msg: &RaftMessage, r: &Receiver) -> Result<(), String> {
    indexes_in_range(msg)?;
    match msg {
        RaftMessage::VoteRequest(m) => vote_request(m),
        // Any term and either answer are possible (a late answer, a refusal).
        RaftMessage::VoteResponse(_) => Ok(()),
        RaftMessage::AppendEntries(m) => append_entries(m, r),
        RaftMessage::AppendEntriesResponse(m) => append_response(m, r),
        RaftMessage::InstallSnapshot(m) => install_snapshot(m, r),
        RaftMessage::InstallSnapshotResponse(m) => snapshot_response(m, r),
        // Only a term, and any term is possible (a late one is ignored).
        RaftMessage::TimeoutNow(_) => Ok(()),
        RaftMessage::InstallSnapshotChunk(m) => snapshot_chunk(m, r),
        RaftMessage::InstallSnapshotChunkResponse(m) => chunk_response(m, r),
    }
}

fn indexes_in_range(msg: &RaftMessage) -> Result<(), String> {
    let (what, index) = match msg {
        RaftMessage::VoteRequest(m) => ("VoteRequest last_log_index", m.last_log_index),
        RaftMessage::AppendEntries(m) => {
            let last = m.entries.last().map_or(m.prev_log_index, |e| e.index);
            let i = m.prev_log_index.max(last).max(m.leader_commit);
            ("AppendEntries index", i)
        }
        RaftMessage::AppendEntriesResponse(m) => ("AppendEntriesResponse index", m.match_index),
        RaftMessage::InstallSnapshot(m) => ("InstallSnapshot index", m.snapshot.meta.last_index),
        RaftMessage::InstallSnapshotResponse(m) => ("InstallSnapshotResponse index", m.last_index),
        RaftMessage::InstallSnapshotChunk(m) => ("InstallSnapshotChunk index", m.meta.last_index),
        RaftMessage::InstallSnapshotChunkResponse(m) => (
            "InstallSnapshotChunkResponse index",
            m.snapshot_index.max(m.last_index),
        ),
        RaftMessage::VoteResponse(_) | RaftMessage::TimeoutNow(_) => return Ok(()),
    };
    if index > INDEX_MAX {
        return Err(format!("{what} {} is past any real log", index.0));
    }
    Ok(())
}

/// Index 0 ("before the first entry") has term 0, and every real entry a
/// term of at least 1 (the bootstrap entry is term 1).
fn index_and_term(what: &str, index: LogIndex, term: Term) -> Result<(), String> {
    if (index == LogIndex::ZERO) != (term == Term(0)) {
        return Err(format!(
            "{what} index {} with term {}: only index 0 has term 0",
            index.0, term.0
        ));
    }
    Ok(())
}

fn vote_request(m: &VoteRequest) -> Result<(), String> {
    index_and_term("VoteRequest last log", m.last_log_index, m.last_log_term)?;
    // A candidate campaigns in a term after every term in its log (a
    // pre-candidate in the term it would campaign in).
    if m.last_log_term >= m.term {
        return Err(format!(
            "VoteRequest for term {} with a last log term of {}",
            m.term.0, m.last_log_term.0
        ));
    }
    Ok(())
}

fn append_entries(m: &AppendEntries, r: &Receiver) -> Result<(), String> {
    index_and_term("AppendEntries prev", m.prev_log_index, m.prev_log_term)?;
    if m.prev_log_term > m.term {
        return Err(format!(
            "AppendEntries in term {} with prev_log_term {}",
            m.term.0, m.prev_log_term.0
        ));
    }
    if m.entries.len() > r.append_entries_max {
        return Err(format!(
            "AppendEntries with {} entries (append_entries_max is {})",
            m.entries.len(),
            r.append_entries_max
        ));
    }
    // The leader stops a batch before it would pass `append_bytes_max`,
    // except that one entry always goes (`RaftLog::slice`).
    if m.entries.len() > 1 {
        let bytes = m
            .entries
            .iter()
            .fold(0usize, |n, e| n.saturating_add(entry_size(e)));
        if bytes > r.append_bytes_max {
            return Err(format!(
                "AppendEntries with about {bytes} bytes of entries (append_bytes_max is {})",
                r.append_bytes_max
            ));
        }
    }
    let mut index = m.prev_log_index;
    let mut term = m.prev_log_term;
    for e in &m.entries {
        index =
            LogIndex(index.0.checked_add(1).ok_or_else(|| {
                "AppendEntries entries run past the largest log index".to_string()
            })?);
        if e.index != index {
            return Err(format!(
                "AppendEntries entry at index {} where {} follows prev_log_index {}",
                e.index.0, index.0, m.prev_log_index.0
            ));
        }
        if e.term < term || e.term == Term(0) {
            return Err(format!(
                "AppendEntries entry {} has term {} after term {}",
                e.index.0, e.term.0, term.0
            ));
        }
        if e.term > m.term {
            return Err(format!(
                "AppendEntries in term {} carries entry {} of term {}",
                m.term.0, e.index.0, e.term.0
            ));
        }
        term = e.term;
    }
    // A leader of our term or a later one holds every entry we know is
    // committed (Leader Completeness, §5.4), so it cannot disagree with one.
    // (An older leader can: its message is stale and answered as such.)
    if m.term >= r.term {
        let committed = |i: LogIndex| (i <= r.commit).then(|| r.log.term_at(i)).flatten();
        if let Some(ours) = committed(m.prev_log_index) {
            if ours != m.prev_log_term {
                return Err(format!(
                    "AppendEntries prev ({}, term {}) contradicts committed term {}",
                    m.prev_log_index.0, m.prev_log_term.0, ours.0
                ));
            }
        }
        for e in m.entries.iter().take_while(|e| e.index <= r.commit) {
            if let Some(ours) = committed(e.index) {
                if ours != e.term {
                    return Err(format!(
                        "AppendEntries entry {} of term {} contradicts committed term {}",
                        e.index.0, e.term.0, ours.0
                    ));
                }
            }
        }
    }
    Ok(())
}

fn install_snapshot(m: &InstallSnapshot, r: &Receiver) -> Result<(), String> {
    snapshot_meta("InstallSnapshot", m.term, &m.snapshot.meta, r)
}

/// What an honest leader of `term` can say about a snapshot it sends.
fn snapshot_meta(what: &str, term: Term, meta: &SnapshotMeta, r: &Receiver) -> Result<(), String> {
    // A snapshot covers at least the bootstrap entry.
    if meta.last_index == LogIndex::ZERO {
        return Err(format!("{what} of an empty log (last_index 0)"));
    }
    index_and_term(&format!("{what} last"), meta.last_index, meta.last_term)?;
    if meta.last_term > term {
        return Err(format!(
            "{what} in term {} covers entries of term {}",
            term.0, meta.last_term.0
        ));
    }
    if meta.membership.voter_count() == 0 {
        return Err(format!(
            "{what} at {} has a configuration without voters",
            meta.last_index.0
        ));
    }
    if term >= r.term && meta.last_index <= r.commit {
        if let Some(ours) = r.log.term_at(meta.last_index) {
            if ours != meta.last_term {
                return Err(format!(
                    "{what} at ({}, term {}) contradicts committed term {}",
                    meta.last_index.0, meta.last_term.0, ours.0
                ));
            }
        }
    }
    Ok(())
}

/// A piece lies within the snapshot it names, which is not empty.
fn snapshot_chunk(m: &InstallSnapshotChunk, r: &Receiver) -> Result<(), String> {
    snapshot_meta("InstallSnapshotChunk", m.term, &m.meta, r)?;
    let end = m.offset.checked_add(m.data.len() as u64);
    if m.total_bytes == 0 || end.is_none_or(|e| e > m.total_bytes) {
        return Err(format!(
            "InstallSnapshotChunk of {} bytes at offset {} in a snapshot of {} bytes",
            m.data.len(),
            m.offset,
            m.total_bytes
        ));
    }
    Ok(())
}

fn chunk_response(m: &InstallSnapshotChunkResponse, r: &Receiver) -> Result<(), String> {
    let matched = Some(m.last_index);
    answer_in_my_term("InstallSnapshotChunkResponse", m.term, m.seq, matched, r)
}

/// An answer in this leader's own term answers something it sent: it can
/// neither acknowledge a `seq` it never used nor match entries it never had.
fn answer_in_my_term(
    what: &str,
    term: Term,
    seq: u64,
    matched: Option<LogIndex>,
    r: &Receiver,
) -> Result<(), String> {
    let Some(sent) = r.leading_seq.filter(|_| term == r.term) else {
        return Ok(());
    };
    if seq == STALE_SEQ {
        // The answer to a request of an older term, from a server now in
        // ours: it claims nothing about what this leader sent.
        return Ok(());
    }
    if seq > sent {
        return Err(format!(
            "{what} answers seq {seq}, but this leader sent only {sent} in term {}",
            term.0
        ));
    }
    if let Some(i) = matched.filter(|i| *i > r.log.last_index()) {
        return Err(format!(
            "{what} claims index {} but this leader's log ends at {}",
            i.0,
            r.log.last_index().0
        ));
    }
    Ok(())
}

fn append_response(m: &AppendEntriesResponse, r: &Receiver) -> Result<(), String> {
    // A failure's `match_index` is only a hint (the follower's own last
    // index), which may well be past ours.
    let matched = m.success.then_some(m.match_index);
    answer_in_my_term("AppendEntriesResponse", m.term, m.seq, matched, r)
}

fn snapshot_response(m: &InstallSnapshotResponse, r: &Receiver) -> Result<(), String> {
    let matched = Some(m.last_index);
    answer_in_my_term("InstallSnapshotResponse", m.term, m.seq, matched, r)
}
