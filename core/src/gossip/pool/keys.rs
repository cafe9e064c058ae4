//! Keyring operations across the pool (Consul's `keyring -install|-use|
//! -remove|-list`): done on this member, then asked of every live member
//! over a stream, each answering on that stream with its keys or why it
//! refused; the answers are collected until all are in or the query
//! timeout passes, as serf's key manager collects the answers to its
//! internal queries.
//!
//! Why direct streams and not serf's gossiped queries: every member is
//! asked by the member the operator talked to, over the same sealed,
//! reliable channel a push-pull uses, so an answer is never lost to a
//! dropped datagram and nothing is relayed; the cost is one TCP exchange
//! per member per operation, which operators run by hand.

use std::collections::BTreeMap;

use crate::clock::{Duration, Instant};

use super::super::keyring::validate_key;
use super::super::packet::{Body, KeyBytes, KeyOp, KeyResult, Packet};
use super::{Gossip, GossipAction, GossipEvent, State};

/// The outcome of one keyring operation: who was asked and what each
/// member said (serf's `KeyResponse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    /// The id the operation was asked with.
    pub id: u64,
    /// Members believed alive when it started, ourselves included
    /// (memberlist's `NumMembers`).
    pub num_nodes: usize,
    /// Each member's answer by name; a member that did not answer in time
    /// is missing.
    pub responses: BTreeMap<String, KeyResult>,
}

#[derive(Clone, Debug)]
pub(super) struct KeyQuery {
    pub deadline: Instant,
    /// Requests awaiting an answer: seq → (member name, its address).
    pending: BTreeMap<u32, (String, String)>,
    report: KeyReport,
}

impl KeyResult {
    fn done(keys: &[Vec<u8>]) -> KeyResult {
        KeyResult {
            ok: true,
            message: String::new(),
            keys: keys.iter().map(|k| KeyBytes(k.clone())).collect(),
        }
    }

    fn refused(message: String, keys: &[Vec<u8>]) -> KeyResult {
        KeyResult {
            ok: false,
            message,
            keys: keys.iter().map(|k| KeyBytes(k.clone())).collect(),
        }
    }
}

impl Gossip {
    pub(super) fn handle_key_op(
        &mut self,
        now: Instant,
        id: u64,
        op: KeyOp,
        out: &mut Vec<GossipAction>,
    ) {
        let mut report = KeyReport {
            id,
            num_nodes: self.live_count(),
            responses: BTreeMap::new(),
        };
        let me = self.me.name.clone();
        let bad_key = match &op {
            KeyOp::List => None,
            KeyOp::Install(k) | KeyOp::Use(k) | KeyOp::Remove(k) => validate_key(k).err(),
        };
        if self.key_queries.len() >= self.config.key_queries_max
            || self.key_queries.contains_key(&id)
        {
            let why = "too many keyring operations in flight".to_string();
            report.responses.insert(me, KeyResult::refused(why, &[]));
            out.push(GossipAction::Event(GossipEvent::KeyringDone(report)));
            return;
        }
        let local = match &bad_key {
            // Refused here and asked of nobody: every member would refuse it.
            Some(e) => KeyResult::refused(e.to_string(), self.keyring.keys()),
            None => self.apply_key_op(&op, out),
        };
        report.responses.insert(me, local);
        // Without a keyring the request could not be sealed, and keys never
        // travel in the clear: this member's refusal is the answer.
        if bad_key.is_some() || !self.keyring.is_enabled() {
            out.push(GossipAction::Event(GossipEvent::KeyringDone(report)));
            return;
        }
        let targets: Vec<(String, String)> = self
            .members
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Alive | State::Suspect))
            .map(|(n, e)| (n.clone(), e.info.address.clone()))
            .collect();
        let mut pending = BTreeMap::new();
        for (name, address) in targets {
            let seq = self.next_seq();
            let packet = Packet {
                body: Body::KeyRequest {
                    seq,
                    op: op.clone(),
                },
                updates: Vec::new(),
            };
            let action = self.packet_action(&address, &packet);
            out.push(action);
            pending.insert(seq, (name, address));
        }
        if pending.is_empty() {
            out.push(GossipAction::Event(GossipEvent::KeyringDone(report)));
            return;
        }
        let deadline = now + self.key_query_timeout();
        self.key_queries.insert(
            id,
            KeyQuery {
                deadline,
                pending,
                report,
            },
        );
    }

    /// serf's `DefaultQueryTimeout`: `GossipInterval × QueryTimeoutMult ×
    /// ceil(log10(n + 1))`.
    fn key_query_timeout(&self) -> Duration {
        let n = self.live_count() as u64;
        let mut scale = 1;
        let mut x = 10;
        while x < n + 1 {
            x = x.saturating_mul(10);
            scale += 1;
        }
        self.config
            .gossip_interval
            .saturating_mul(u64::from(self.config.query_timeout_mult).saturating_mul(scale))
    }

    /// A member asks us to apply a keyring operation; we answer on its
    /// stream with our keys after it (sealed with our primary then, which
    /// the asker holds: it applied the operation first).
    pub(super) fn handle_key_request(
        &mut self,
        from: &str,
        seq: u32,
        op: KeyOp,
        out: &mut Vec<GossipAction>,
    ) {
        let result = self.apply_key_op(&op, out);
        let packet = Packet {
            body: Body::KeyResponse { seq, result },
            updates: Vec::new(),
        };
        let action = self.packet_action(from, &packet);
        out.push(action);
    }

    pub(super) fn handle_key_response(
        &mut self,
        from: &str,
        seq: u32,
        result: KeyResult,
        out: &mut Vec<GossipAction>,
    ) {
        // Only the member we asked, at the address we asked, answers.
        let Some(id) = self
            .key_queries
            .iter()
            .find(|(_, q)| q.pending.get(&seq).is_some_and(|(_, a)| a == from))
            .map(|(id, _)| *id)
        else {
            return;
        };
        let q = self.key_queries.get_mut(&id).expect("found above");
        let (name, _) = q.pending.remove(&seq).expect("found above");
        q.report.responses.insert(name, result);
        if q.pending.is_empty() {
            let q = self.key_queries.remove(&id).expect("found above");
            out.push(GossipAction::Event(GossipEvent::KeyringDone(q.report)));
        }
    }

    pub(super) fn tick_key_queries(&mut self, now: Instant, out: &mut Vec<GossipAction>) {
        let due: Vec<u64> = self
            .key_queries
            .iter()
            .filter(|(_, q)| now >= q.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(q) = self.key_queries.remove(&id) {
                out.push(GossipAction::Event(GossipEvent::KeyringDone(q.report)));
            }
        }
    }

    /// Applies `op` to our keyring, with memberlist's rules and serf's
    /// messages; a change is announced first so the driver persists it.
    fn apply_key_op(&mut self, op: &KeyOp, out: &mut Vec<GossipAction>) -> KeyResult {
        if !self.keyring.is_enabled() {
            let why = match op {
                KeyOp::List => "Keyring is empty (encryption not enabled)",
                _ => "No keyring to modify (encryption not enabled)",
            };
            return KeyResult::refused(why.into(), &[]);
        }
        let before = self.keyring.clone();
        let result = match op {
            KeyOp::List => Ok(()),
            KeyOp::Install(k) => self.keyring.install(k.clone()),
            KeyOp::Use(k) => self.keyring.use_key(k),
            KeyOp::Remove(k) => self.keyring.remove(k),
        };
        if self.keyring != before {
            out.push(GossipAction::Event(GossipEvent::KeyringChanged(
                self.keyring.clone(),
            )));
        }
        match result {
            Ok(()) => KeyResult::done(self.keyring.keys()),
            Err(e) => KeyResult::refused(e.to_string(), self.keyring.keys()),
        }
    }
}
