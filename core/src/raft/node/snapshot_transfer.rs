//! Streaming a snapshot to a follower in bounded, resumable pieces (§7's
//! InstallSnapshot with `offset` and `done`, checksummed as a whole).
//!
//! The leader sends one piece at a time from the offset the follower last
//! confirmed; a lost piece, a restart of either side or a stall resumes from
//! there. The follower appends a piece only at the end of what it holds of
//! the same snapshot (same metadata, size and crc32c), checks the crc32c of
//! the whole, and installs it as a whole snapshot.

use super::*;
use crate::raft::{InstallSnapshotChunk, InstallSnapshotChunkResponse};

/// A snapshot a leader is streaming to this server.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    meta: SnapshotMeta,
    total_bytes: u64,
    crc32c: u32,
    data: Vec<u8>,
}

impl IncomingSnapshot {
    fn is_for(&self, m: &InstallSnapshotChunk) -> bool {
        self.meta == m.meta && self.total_bytes == m.total_bytes && self.crc32c == m.crc32c
    }
}

impl Raft {
    /// Send `peer` the next piece of our snapshot: from the offset it last
    /// confirmed for this snapshot, or from the start.
    pub(super) fn send_snapshot_chunk(
        &mut self,
        now: Instant,
        peer: NodeId,
        out: &mut Vec<Action>,
    ) {
        let Some(held) = self.snapshot.as_mut() else {
            return;
        };
        let index = held.meta.last_index;
        if held.data.is_none() {
            // The bytes are the file's: read them back first, but only for
            // a follower that answers (one that is down would keep them in
            // memory for nothing). It waits in the snapshot state, sent
            // heartbeats anchored at our base (see `send_append`), which
            // also tell us when it is back; `snapshot_loaded` sends.
            let alive = self
                .progress
                .get(&peer)
                .is_some_and(|p| now.saturating_since(p.last_ack) < self.opts.election_max);
            if alive && !held.loading {
                held.loading = true;
                out.push(Action::LoadSnapshot {
                    meta: held.meta.clone(),
                    stored_by: held.stored_by,
                });
            }
            if let Some(p) = self.progress.get_mut(&peer) {
                p.state = ReplState::Snapshot;
                p.inflight.clear();
                p.next = index.next();
            }
            let heartbeat = AppendEntries {
                term: self.term,
                prev_log_index: self.log.base_index(),
                prev_log_term: self.log.base_term(),
                entries: Vec::new(),
                leader_commit: self.commit,
                seq: self.next_seq(now),
            };
            self.send(peer, RaftMessage::AppendEntries(heartbeat), out);
            return;
        }
        let crc32c = self.snapshot_crc();
        let Some(snapshot) = self.snapshot.as_ref() else {
            return;
        };
        let Some(data) = snapshot.data.as_ref() else {
            return;
        };
        let total = snapshot.len;
        let offset = match self.progress.get(&peer).and_then(|p| p.snapshot_offset) {
            Some((i, o)) if i == index && o < total => o,
            _ => 0,
        };
        let end = (offset as usize)
            .saturating_add(self.opts.snapshot_chunk_bytes)
            .min(data.len());
        let chunk = InstallSnapshotChunk {
            term: self.term,
            meta: snapshot.meta.clone(),
            total_bytes: total,
            crc32c,
            offset,
            data: data[offset as usize..end].to_vec(),
            seq: 0,
        };
        let seq = self.next_seq(now);
        if let Some(p) = self.progress.get_mut(&peer) {
            p.state = ReplState::Snapshot;
            p.inflight.clear();
            p.inflight.push(seq);
            p.next = index.next();
        }
        self.send(
            peer,
            RaftMessage::InstallSnapshotChunk(InstallSnapshotChunk { seq, ..chunk }),
            out,
        );
    }

    /// The crc32c of our current snapshot, computed once per snapshot
    /// (its bytes must be in memory).
    fn snapshot_crc(&mut self) -> u32 {
        let Some(snapshot) = self.snapshot.as_ref() else {
            return 0;
        };
        let index = snapshot.meta.last_index;
        match self.snapshot_crc {
            Some((i, crc)) if i == index => crc,
            _ => {
                let data = snapshot.data.as_ref().expect("only sent from memory");
                let crc = crc32c::crc32c(data);
                self.snapshot_crc = Some((index, crc));
                crc
            }
        }
    }

    /// What a `Persist` of `snapshot` leaves held: its bytes only if the
    /// snapshot it replaces is being streamed (the follower will want this
    /// one next).
    pub(super) fn hold_snapshot(&self, snapshot: &Snapshot) -> HeldSnapshot {
        let streaming = self.role == Role::Leader && self.snapshot_in_memory();
        HeldSnapshot {
            meta: snapshot.meta.clone(),
            len: snapshot.data.len() as u64,
            data: streaming.then(|| snapshot.data.clone()),
            stored_by: PersistId(0),
            loading: false,
        }
    }

    /// Drop the snapshot's bytes unless a follower that answers (within an
    /// election timeout) is being sent them: the file has them.
    pub(super) fn release_snapshot_if_unwanted(&mut self, now: Instant) {
        let wanted = self.role == Role::Leader
            && self.progress.values().any(|p| {
                p.state == ReplState::Snapshot
                    && now.saturating_since(p.last_ack) < self.opts.election_max
            });
        if wanted {
            return;
        }
        if let Some(held) = self.snapshot.as_mut() {
            held.data = None;
        }
    }

    /// The driver read back our snapshot's bytes (`Action::LoadSnapshot`):
    /// send the first piece to every follower waiting for it. A load of a
    /// snapshot we no longer hold is dropped; `None` (no such file: it was
    /// replaced meanwhile) lets the next heartbeat ask again.
    pub fn snapshot_loaded(
        &mut self,
        now: Instant,
        meta: SnapshotMeta,
        data: Option<SnapshotData>,
        out: &mut Vec<Action>,
    ) {
        let Some(held) = self.snapshot.as_mut().filter(|h| h.meta == meta) else {
            return;
        };
        held.loading = false;
        let Some(data) = data else {
            return;
        };
        if held.data.is_none() {
            if data.len() as u64 != held.len {
                // Not the size it was taken with: a follower that holds
                // pieces of it starts over (they name another size).
                held.len = data.len() as u64;
                held.data = Some(data);
                self.snapshot_crc = None;
            } else {
                held.data = Some(data);
            }
        }
        if self.role == Role::Leader {
            let waiting: Vec<NodeId> = self
                .progress
                .iter()
                .filter(|(_, p)| p.state == ReplState::Snapshot && p.inflight.is_empty())
                .map(|(id, _)| *id)
                .collect();
            for peer in waiting {
                self.send_snapshot_chunk(now, peer, out);
            }
        }
        self.release_snapshot_if_unwanted(now);
    }

    pub(super) fn handle_snapshot_chunk(
        &mut self,
        now: Instant,
        from: NodeId,
        m: InstallSnapshotChunk,
        out: &mut Vec<Action>,
    ) {
        let index = m.meta.last_index;
        // `last_index` claims what this server holds only once it holds the
        // whole snapshot (an answer claiming more than the leader's log
        // would be refused by it); while assembling it claims nothing.
        let seq = m.seq;
        let answer = |raft: &Raft, next_offset: u64, out: &mut Vec<Action>| {
            let done = next_offset == m.total_bytes && next_offset > 0;
            let resp = InstallSnapshotChunkResponse {
                term: raft.term,
                snapshot_index: index,
                next_offset,
                last_index: if done { index } else { LogIndex::ZERO },
                seq,
            };
            raft.send(from, RaftMessage::InstallSnapshotChunkResponse(resp), out);
        };
        if m.term < self.term {
            // A stale leader's piece: the answer acknowledges nothing it
            // could mistake for an answer in a later term (`STALE_SEQ`).
            let resp = InstallSnapshotChunkResponse {
                term: self.term,
                snapshot_index: index,
                next_offset: 0,
                last_index: LogIndex::ZERO,
                seq: STALE_SEQ,
            };
            self.send(from, RaftMessage::InstallSnapshotChunkResponse(resp), out);
            return;
        }
        self.accept_leader(now, from, m.term, out);
        if self.disk_full {
            // Nowhere to store it: the leader resumes once there is room.
            return;
        }
        if index <= self.commit {
            // Everything it covers is committed here already.
            return answer(self, m.total_bytes, out);
        }
        let end = m.offset.checked_add(m.data.len() as u64);
        let sane = m.total_bytes <= self.opts.snapshot_bytes_max
            && end.is_some_and(|e| e <= m.total_bytes)
            && m.meta.last_term <= m.term;
        if !sane {
            // Nothing is kept of a piece that cannot belong to a snapshot.
            return answer(self, 0, out);
        }
        if m.offset == 0 {
            self.incoming = Some(IncomingSnapshot {
                meta: m.meta.clone(),
                total_bytes: m.total_bytes,
                crc32c: m.crc32c,
                data: Vec::new(),
            });
        }
        let Some(incoming) = self.incoming.as_mut().filter(|i| i.is_for(&m)) else {
            // A piece of another snapshot than the one being assembled:
            // ask for this one from the start.
            return answer(self, 0, out);
        };
        if incoming.data.len() as u64 != m.offset {
            // Out of order (a lost or repeated piece): ask from where we are.
            let have = incoming.data.len() as u64;
            return answer(self, have, out);
        }
        incoming.data.extend_from_slice(&m.data);
        if (incoming.data.len() as u64) < m.total_bytes {
            let have = incoming.data.len() as u64;
            return answer(self, have, out);
        }
        let incoming = self.incoming.take().expect("checked above");
        if crc32c::crc32c(&incoming.data) != incoming.crc32c {
            // Damaged on the way: start over.
            return answer(self, 0, out);
        }
        let snapshot = Snapshot {
            meta: incoming.meta,
            data: incoming.data.into(),
        };
        self.install(now, snapshot, out);
        answer(self, m.total_bytes, out);
    }

    pub(super) fn handle_snapshot_chunk_response(
        &mut self,
        now: Instant,
        from: NodeId,
        resp: InstallSnapshotChunkResponse,
        out: &mut Vec<Action>,
    ) {
        if !self.accept_answer(now, from, resp.term, resp.seq, out) {
            return;
        }
        let last = self.log.last_index();
        let ours = self.snapshot.as_ref().map(|s| s.meta.last_index);
        let total = self.snapshot.as_ref().map_or(0, |s| s.len);
        let p = self.progress.get_mut(&from).expect("accepted");
        p.inflight.retain(|s| *s > resp.seq);
        if p.state != ReplState::Snapshot {
            return;
        }
        if Some(resp.snapshot_index) != ours {
            // About a snapshot we no longer have: send the current one.
            p.snapshot_offset = None;
        } else if resp.next_offset >= total {
            // Installed (or nothing of it was needed).
            if resp.last_index > p.matched && resp.last_index <= last {
                p.matched = resp.last_index;
            }
            p.snapshot_offset = None;
            p.reset_to_probe();
            self.release_snapshot_if_unwanted(now);
            self.after_answer(now, from, out);
            return;
        } else {
            p.snapshot_offset = Some((resp.snapshot_index, resp.next_offset));
        }
        self.maybe_commit(now, out);
        self.confirm_reads();
        if self.role == Role::Leader {
            self.send_snapshot_chunk(now, from, out);
        }
    }
}
