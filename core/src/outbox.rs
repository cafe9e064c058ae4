//! The outbox: which of the core's actions may run now, and which durable
//! writes go to the disk next.
//!
//! Every driver (io-tokio, io-sim, the in-memory testkit) feeds the actions
//! from [`crate::Server::handle`] through one `Outbox`, so the pipelining the
//! daemon does (taking inputs while an fsync runs, one fsync for a group of
//! writes) is exactly what the simulator runs. The loop is:
//!
//! 1. [`Outbox::push`] the actions a `handle` produced. Writes are queued;
//!    sends whose write is not yet durable wait; everything else is ready.
//! 2. Run what is ready, in order.
//! 3. If the disk is idle, [`Outbox::start_job`] hands over every queued
//!    write as one job (group commit).
//! 4. When the job is durable, [`Outbox::job_done`] releases what waited on
//!    it and returns the id to report to the core as
//!    [`crate::Input::Persisted`]. Then back to 2.
//!
//! A server's own snapshot (`PersistOp::SaveSnapshot`) takes a second lane:
//! [`Outbox::start_background`] hands it to the driver to write *beside*
//! the log, so appends and their fsyncs never queue behind a snapshot file.
//! Nothing waits for it (the core names no own snapshot in a send's
//! `after`), except the writes that must follow it: a `PurgeUpTo` (held,
//! while later appends overtake it: they touch other entries) and an
//! `InstallSnapshot` (held with everything after it). When the driver
//! reports it written ([`Outbox::background_done`]), the snapshot goes
//! through the log lane once more, where the data dir only adopts the file
//! already on disk, and the held writes follow it.
//!
//! An [`Action::LoadSnapshot`] (read a snapshot's bytes back from its file)
//! waits until the write that stored the file, and every write before it,
//! is durable: in either lane, overtaken or not.
//!
//! Pure and synchronous: it never touches a disk or a clock.

use std::collections::VecDeque;

use crate::action::{Action, PersistId, PersistOp};

/// One durable write handed to the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistWrite {
    pub id: PersistId,
    pub op: PersistOp,
    /// Fsync after this write (the job's plan: see [`Outbox::start_job`]).
    pub sync: bool,
}

/// Writes in flight and actions waiting for them.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Writes not yet handed to the disk, in id order.
    queued: VecDeque<PersistWrite>,
    /// The last id of the job the disk is running, if any.
    in_flight: Option<PersistId>,
    /// The first id of that job.
    in_flight_first: Option<PersistId>,
    /// Every write up to this one is durable.
    durable: PersistId,
    /// Sends waiting for a write, in the order the core asked for them.
    waiting: VecDeque<(PersistId, Action)>,
    /// Snapshot loads waiting for the write that stores their file.
    loads: VecDeque<(PersistId, Action)>,
    /// Own snapshots to write beside the log, in id order.
    background: VecDeque<PersistWrite>,
    /// The own snapshot being written beside the log.
    background_running: Option<PersistWrite>,
    /// Writes that must follow the own snapshots still to be written, in
    /// order (see the module docs).
    held: VecDeque<PersistWrite>,
    /// Planted bug `send-before-persisted`: release waiting sends when their
    /// write is *started* rather than when it is durable.
    #[cfg(feature = "bugs")]
    bug_send_before_persisted: bool,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// An outbox with the planted bugs `config` turns on.
    pub fn for_config(config: &crate::Config) -> Outbox {
        let _ = config;
        Outbox {
            #[cfg(feature = "bugs")]
            bug_send_before_persisted: config.bugs.send_before_persisted,
            ..Outbox::default()
        }
    }

    /// Take the actions one `handle` produced: writes are queued for the
    /// disk, sends that need a write not yet durable wait for it, and the rest
    /// is appended to `ready`, in order.
    pub fn push(&mut self, actions: impl IntoIterator<Item = Action>, ready: &mut Vec<Action>) {
        for a in actions {
            match a {
                Action::Persist { id, op, sync } => {
                    let last = self.queued.back().map(|w| w.id).or(self.in_flight);
                    assert!(
                        last.is_none_or(|l| id > l) && id > self.durable,
                        "persist ids increase: {id:?} after {last:?}"
                    );
                    let w = PersistWrite { id, op, sync };
                    let snapshot_pending =
                        self.background_running.is_some() || !self.background.is_empty();
                    let holding_all = self
                        .held
                        .iter()
                        .any(|h| matches!(h.op, PersistOp::InstallSnapshot(_)));
                    match &w.op {
                        PersistOp::SaveSnapshot(_) if !holding_all => self.background.push_back(w),
                        PersistOp::PurgeUpTo(_) | PersistOp::InstallSnapshot(_)
                            if snapshot_pending =>
                        {
                            self.held.push_back(w)
                        }
                        _ if holding_all => self.held.push_back(w),
                        _ => self.queued.push_back(w),
                    }
                }
                Action::Send {
                    after: Some(after), ..
                } if after > self.released_upto() => self.waiting.push_back((after, a)),
                Action::LoadSnapshot { stored_by, .. } if !self.settled(stored_by) => {
                    self.loads.push_back((stored_by, a))
                }
                other => ready.push(other),
            }
        }
    }

    /// The next own snapshot to write beside the log, if none is being
    /// written: the driver writes it (durably) without holding up the log
    /// lane, then calls [`Outbox::background_done`].
    pub fn start_background(&mut self) -> Option<PersistWrite> {
        if self.background_running.is_some() {
            return None;
        }
        let w = self.background.pop_front()?;
        self.background_running = Some(w.clone());
        Some(w)
    }

    /// The own snapshot from [`Outbox::start_background`] is on disk: it goes
    /// through the log lane once more (the data dir adopts the file) and,
    /// once no other own snapshot is pending, the held writes follow, all in
    /// the order the core issued them.
    ///
    /// # Panics
    /// If none was being written (a driver bug).
    pub fn background_done(&mut self) {
        let w = self
            .background_running
            .take()
            .expect("background_done without a background write");
        self.queued.push_back(w);
        if self.background.is_empty() {
            self.queued.extend(self.held.drain(..));
        }
        // Back into the core's order: what is still queued runs exactly as
        // it was issued (the writes that overtook are already done).
        self.queued.make_contiguous().sort_by_key(|w| w.id);
    }

    /// Whether `id` and every write before it are durable: none of them is
    /// queued, held, written beside the log or part of the running job,
    /// even if later writes overtook them.
    fn settled(&self, id: PersistId) -> bool {
        let pending = self
            .queued
            .iter()
            .chain(&self.background)
            .chain(&self.background_running)
            .chain(&self.held);
        self.durable >= id
            && self.in_flight_first.is_none_or(|first| first > id)
            && pending.into_iter().all(|w| w.id > id)
    }

    /// Every write up to this id is durable (for a planted bug: started).
    fn released_upto(&self) -> PersistId {
        #[cfg(feature = "bugs")]
        if self.bug_send_before_persisted {
            return self.in_flight.unwrap_or(self.durable).max(self.durable);
        }
        self.durable
    }

    /// If the disk is idle and writes are queued, the next job: all of them,
    /// to be performed in order. Consecutive log appends share one fsync:
    /// only the last append of a run is synced (the fsync of the same log
    /// covers those before it); any other write ends a run and keeps its own
    /// `sync`.
    ///
    /// Sends are never released here (`ready` only serves the planted bug
    /// `send-before-persisted`, which releases them as their job starts).
    pub fn start_job(&mut self, ready: &mut Vec<Action>) -> Option<Vec<PersistWrite>> {
        if self.in_flight.is_some() || self.queued.is_empty() {
            return None;
        }
        let mut job: Vec<PersistWrite> = self.queued.drain(..).collect();
        let mut later_append_syncs = false;
        for w in job.iter_mut().rev() {
            if matches!(w.op, PersistOp::Append(_)) {
                let wanted = w.sync;
                w.sync = wanted && !later_append_syncs;
                later_append_syncs |= wanted;
            } else {
                later_append_syncs = false;
            }
        }
        self.in_flight = job.last().map(|w| w.id);
        self.in_flight_first = job.first().map(|w| w.id);
        #[cfg(feature = "bugs")]
        if self.bug_send_before_persisted {
            self.release(ready);
        }
        let _ = ready;
        Some(job)
    }

    /// The running job is durable: release the sends that waited for it
    /// (appended to `ready`, in order) and return the id to report to the
    /// core as `Input::Persisted`.
    ///
    /// # Panics
    /// If no job is running (a driver bug).
    pub fn job_done(&mut self, ready: &mut Vec<Action>) -> PersistId {
        let id = self
            .in_flight
            .take()
            .expect("job_done without a running job");
        self.in_flight_first = None;
        self.durable = self.durable.max(id);
        self.release(ready);
        if !self.loads.is_empty() {
            let loads = std::mem::take(&mut self.loads);
            for (stored_by, a) in loads {
                if self.settled(stored_by) {
                    ready.push(a);
                } else {
                    self.loads.push_back((stored_by, a));
                }
            }
        }
        id
    }

    fn release(&mut self, ready: &mut Vec<Action>) {
        let upto = self.released_upto();
        if self.waiting.iter().all(|(after, _)| *after > upto) {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        for (after, a) in waiting {
            if after <= upto {
                ready.push(a);
            } else {
                self.waiting.push_back((after, a));
            }
        }
    }

    /// Whether the disk is running a job.
    pub fn disk_busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Every write up to this id is durable.
    pub fn durable(&self) -> PersistId {
        self.durable
    }

    /// Writes queued and not yet started.
    pub fn queued_writes(&self) -> usize {
        self.queued.len()
    }

    /// Sends waiting for a write.
    pub fn waiting_sends(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing is queued, running or waiting.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none()
            && self.queued.is_empty()
            && self.waiting.is_empty()
            && self.loads.is_empty()
            && self.background.is_empty()
            && self.background_running.is_none()
            && self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, RequestId, Term};
    use crate::message::{Message, MessageBody};
    use crate::raft::{AppendEntriesResponse, HardState, RaftMessage};
    use crate::rpc::RpcError;
    use crate::LogIndex;

    fn write(id: u64, op: PersistOp) -> Action {
        Action::Persist {
            id: PersistId(id),
            op,
            sync: true,
        }
    }
    fn hs(id: u64) -> Action {
        write(id, PersistOp::HardState(HardState::default()))
    }
    fn append(id: u64) -> Action {
        write(id, PersistOp::Append(Vec::new()))
    }
    fn send(to: u128, after: Option<u64>) -> Action {
        Action::Send {
            address: format!("s{to}"),
            message: Message {
                from: NodeId(0),
                from_address: "s0".into(),
                to: NodeId(to),
                body: MessageBody::Raft(RaftMessage::AppendEntriesResponse(
                    AppendEntriesResponse {
                        term: Term(1),
                        success: true,
                        match_index: LogIndex(1),
                        seq: 0,
                    },
                )),
            },
            after: after.map(PersistId),
        }
    }
    fn respond(id: u64) -> Action {
        Action::Respond {
            id: RequestId(id),
            response: Err(RpcError::NoLeader),
        }
    }

    #[test]
    fn a_send_waits_for_its_write_and_nothing_else_does() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        o.push(
            vec![send(1, None), append(1), send(2, Some(1)), respond(7)],
            &mut ready,
        );
        assert_eq!(ready, vec![send(1, None), respond(7)]);
        assert_eq!(o.waiting_sends(), 1);
        let job = o.start_job(&mut ready).unwrap();
        assert_eq!(job.len(), 1);
        assert!(o.start_job(&mut ready).is_none(), "one job at a time");
        ready.clear();
        assert_eq!(o.job_done(&mut ready), PersistId(1));
        assert_eq!(ready, vec![send(2, Some(1))]);
        assert!(o.is_idle());
    }

    #[test]
    fn writes_queued_while_a_job_runs_form_the_next_job() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        o.push(vec![hs(1)], &mut ready);
        let first = o.start_job(&mut ready).unwrap();
        assert_eq!(first.iter().map(|w| w.id.0).collect::<Vec<_>>(), vec![1]);
        o.push(vec![append(2), send(3, Some(2)), append(3)], &mut ready);
        assert!(ready.is_empty());
        assert!(o.start_job(&mut ready).is_none(), "the disk is busy");
        assert_eq!(o.job_done(&mut ready), PersistId(1));
        assert!(ready.is_empty(), "the send waits for write 2, not 1");
        let second = o.start_job(&mut ready).unwrap();
        assert_eq!(
            second.iter().map(|w| w.id.0).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(o.job_done(&mut ready), PersistId(3));
        assert_eq!(ready, vec![send(3, Some(2))]);
    }

    #[test]
    fn a_run_of_appends_shares_one_fsync_and_other_writes_keep_theirs() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        o.push(
            vec![append(1), append(2), hs(3), append(4), append(5)],
            &mut ready,
        );
        let job = o.start_job(&mut ready).unwrap();
        let syncs: Vec<bool> = job.iter().map(|w| w.sync).collect();
        assert_eq!(syncs, vec![false, true, true, false, true]);
    }

    #[test]
    fn a_send_whose_write_is_already_durable_is_ready_at_once() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        o.push(vec![append(1)], &mut ready);
        o.start_job(&mut ready);
        o.job_done(&mut ready);
        o.push(vec![send(1, Some(1))], &mut ready);
        assert_eq!(ready, vec![send(1, Some(1))]);
    }

    fn save(id: u64) -> Action {
        write(
            id,
            PersistOp::SaveSnapshot(crate::raft::Snapshot::default()),
        )
    }
    fn purge(id: u64) -> Action {
        write(id, PersistOp::PurgeUpTo(crate::LogIndex(1)))
    }
    fn ids(job: &[PersistWrite]) -> Vec<u64> {
        job.iter().map(|w| w.id.0).collect()
    }

    /// An own snapshot is written beside the log: appends after it are not
    /// held up; its purge waits until it is written, then follows it.
    #[test]
    fn an_own_snapshot_is_written_beside_the_log_and_its_purge_waits_for_it() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        o.push(vec![append(1), save(2), purge(3), append(4)], &mut ready);
        let bg = o
            .start_background()
            .expect("the snapshot goes beside the log");
        assert_eq!(bg.id, PersistId(2));
        assert!(o.start_background().is_none(), "one at a time");
        // The log lane runs past it: appends 1 and 4, not the held purge.
        let job = o.start_job(&mut ready).unwrap();
        assert_eq!(ids(&job), vec![1, 4]);
        assert_eq!(o.job_done(&mut ready), PersistId(4));
        o.push(vec![append(5)], &mut ready);
        // Written while append 5 is still queued: the log lane adopts it,
        // then the purge follows, in the order they were issued.
        o.background_done();
        assert_eq!(ids(&o.start_job(&mut ready).unwrap()), vec![2, 3, 5]);
        o.job_done(&mut ready);
        assert!(o.is_idle());
    }

    /// A snapshot installed from the leader while an own snapshot is being
    /// written waits for it, and so does everything after it.
    #[test]
    fn an_install_waits_for_an_own_snapshot_and_holds_what_follows() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        let install = write(
            3,
            PersistOp::InstallSnapshot(crate::raft::Snapshot::default()),
        );
        o.push(vec![save(1), hs(2), install, append(4)], &mut ready);
        o.start_background().unwrap();
        assert_eq!(ids(&o.start_job(&mut ready).unwrap()), vec![2]);
        o.job_done(&mut ready);
        assert!(
            o.start_job(&mut ready).is_none(),
            "the install and the append wait"
        );
        o.background_done();
        assert_eq!(ids(&o.start_job(&mut ready).unwrap()), vec![1, 3, 4]);
    }

    fn load(stored_by: u64) -> Action {
        Action::LoadSnapshot {
            meta: Default::default(),
            stored_by: PersistId(stored_by),
        }
    }

    /// A snapshot is read back only once the write that stored its file is
    /// durable: not while it is written beside the log, not once later
    /// appends overtook it (their job reports a higher id), only after the
    /// log lane adopted it.
    #[test]
    fn a_load_waits_for_the_write_that_stored_its_snapshot_even_when_overtaken() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        o.push(vec![save(1), append(2)], &mut ready);
        o.start_background().unwrap();
        assert_eq!(ids(&o.start_job(&mut ready).unwrap()), vec![2]);
        assert_eq!(o.job_done(&mut ready), PersistId(2));
        o.push(vec![load(1)], &mut ready);
        assert_eq!(ready, vec![], "the file is still being written");
        assert!(!o.is_idle());
        o.background_done();
        let job = o.start_job(&mut ready).unwrap();
        assert_eq!(ids(&job), vec![1]);
        assert_eq!(ready, vec![], "adopting it is still running");
        o.job_done(&mut ready);
        assert_eq!(ready, vec![load(1)]);
        assert!(o.is_idle());
    }

    /// A load of a snapshot whose write is durable (or that was recovered
    /// from disk: `stored_by` 0) is ready at once.
    #[test]
    fn a_load_of_a_durable_snapshot_is_ready_at_once() {
        let mut o = Outbox::new();
        let mut ready = Vec::new();
        o.push(vec![load(0)], &mut ready);
        assert_eq!(ready, vec![load(0)]);
        ready.clear();
        o.push(vec![save(1)], &mut ready);
        o.start_background().unwrap();
        o.background_done();
        o.start_job(&mut ready).unwrap();
        o.job_done(&mut ready);
        o.push(vec![append(2), load(1)], &mut ready);
        assert_eq!(ready, vec![load(1)]);
    }

    #[test]
    #[should_panic(expected = "persist ids increase")]
    fn ids_that_go_backwards_are_a_core_bug() {
        let mut o = Outbox::new();
        o.push(vec![append(2), append(1)], &mut Vec::new());
    }
}
