//! A linearizability checker for histories of KV operations.
//!
//! This is a Wing–Gong–Lowe (WGL) search: depth-first search over the possible
//! linearization orders, pruned with Lowe's memoization (a cache of
//! `(set of linearized ops, model state)` pairs already explored). It is pure
//! std Rust so it can be unit-tested without the simulator.
//!
//! # Model
//!
//! Linearizability is compositional, and each key is an independent register, so
//! the history is partitioned by key and every key's sub-history is checked on its
//! own. The per-key model state is `Option<Value>` (`None` = absent):
//!
//! | input                      | precondition / effect                         | output        |
//! |----------------------------|-----------------------------------------------|---------------|
//! | `Put { value }`            | sets `value`                                  | `Ok`          |
//! | `Get`                      | none                                          | `Value(state)`|
//! | `Cas { expected, value }`  | iff `state == expected`, sets `value`         | `Bool(done)`  |
//! | `Delete`                   | sets absent                                   | `Ok`          |
//! | `DeleteCas { expected }`   | iff `state == Some(expected)` or absent, sets absent | `Bool(done)` |
//!
//! # Real-time order and equal timestamps
//!
//! Operation `a` must be linearized before `b` iff `a.ret <= b.call && a.call < b.call`.
//! In words: an operation that returns at the same instant another is invoked is
//! treated as having happened before it (returns sort before calls at equal times).
//! This is the conservative choice: it adds ordering constraints, so it can only turn
//! a borderline history into `Illegal`, never hide a violation. The `a.call < b.call`
//! clause only matters for zero-duration operations (`call == ret`): such an op is not
//! ordered before another op invoked at that same instant (otherwise two
//! instantaneous ops at the same time would each have to precede the other).
//!
//! # Operations with unknown outcome
//!
//! An op with `ret == None` (timed out / failed ambiguously) has its return at
//! +infinity and accepts any output: it may be linearized at any point after its call,
//! or never take effect at all. Such ops never constrain other ops in real time (they
//! never "return before" anything), and the search succeeds as soon as every op with a
//! known return has been linearized, leaving any remaining unknown ops unlinearized
//! (equivalently: linearized at the very end, where nothing observes them).
//! An unknown `Get` has no effect and no observable output, so it is dropped up front.
//!
//! Unknown ops would otherwise blow the search up (each one stays pending forever, so
//! every subset of them could be linearized at any point). Two measures keep this in
//! check, both sound because unknown ops are optional and unconstraining:
//! * at every search node, known ops are tried before unknown ones (the order in which
//!   candidates are tried does not affect correctness, only speed);
//! * the cache uses subsumption rather than equality on the unknown ops: a node with
//!   known set `K`, unknown set `U'` and state `s` is skipped if a node `(K, U, s)` with
//!   `U ⊆ U'` was already visited, because every completion of the former is also a
//!   completion of the latter (which simply never linearizes `U' \ U`).
//!
//! # Bounding the search
//!
//! `max_states_per_key` bounds the number of cache entries per key. Every forward step
//! of the search inserts a new entry, so the work is bounded by
//! `O(max_states_per_key × ops)`; exceeding the bound yields `Unknown`, never a false
//! `Ok` and never a hang.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A small multiply-rotate hasher for the search cache: its keys are bitsets
/// and small integers, hashed millions of times; SipHash cost a third of a
/// long check.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
use std::fmt::{self, Write as _};

pub type Key = String;
/// Every write in a test writes a value unique across the whole history.
pub type Value = String;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput {
    Put {
        value: Value,
    },
    Get,
    /// Consul CAS on modify index, recast on values: since every value is written once, "the key's modify index is M" is
    /// equivalent to "the key's current value is the value that was read with index M". `expected: None` = CAS index 0 = create only.
    Cas {
        expected: Option<Value>,
        value: Value,
    },
    Delete,
    /// Delete iff current value == expected.
    DeleteCas {
        expected: Value,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput {
    Ok,
    Value(Option<Value>),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub key: Key,
    pub input: KvInput,
    /// Invocation time (simulated ns).
    pub call: u64,
    /// None = the request timed out or failed ambiguously: it may or may not have taken effect, at any time after call.
    /// (A request that failed definitely — e.g. "No cluster leader" before it was sent anywhere — should simply be left out of the history by the caller.)
    pub ret: Option<(u64, KvOutput)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's sub-history is linearizable.
    Ok,
    /// Some key's sub-history has no linearization (the first such key, in key order).
    Illegal { key: Key, explanation: String },
    /// No key is illegal, but some key could not be decided within the state budget
    /// (or its history was malformed).
    Unknown { key: Key, reason: String },
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }
    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal { .. })
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self, CheckResult::Unknown { .. })
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "linearizable"),
            CheckResult::Illegal { key, explanation } => {
                write!(f, "NOT linearizable (key {key:?}):\n{explanation}")
            }
            CheckResult::Unknown { key, reason } => {
                write!(f, "linearizability unknown (key {key:?}): {reason}")
            }
        }
    }
}

/// Checks `history` for linearizability against a KV store, key by key.
///
/// Returns `Illegal` for the first illegal key (in key order) if any key is illegal,
/// otherwise `Unknown` for the first undecided key if any, otherwise `Ok`.
pub fn check(history: &[Operation], max_states_per_key: usize) -> CheckResult {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut unknown = None;
    for (key, ops) in by_key {
        match check_key(key, &ops, max_states_per_key) {
            KeyResult::Ok => {}
            KeyResult::Illegal(explanation) => {
                return CheckResult::Illegal {
                    key: key.to_string(),
                    explanation,
                }
            }
            KeyResult::Unknown(reason) => {
                if unknown.is_none() {
                    unknown = Some(CheckResult::Unknown {
                        key: key.to_string(),
                        reason,
                    });
                }
            }
        }
    }
    unknown.unwrap_or(CheckResult::Ok)
}

// ---------------------------------------------------------------------------
// Internal representation: values are interned per key; state 0 = absent,
// state i > 0 = the value with id i.

type State = u32;
const ABSENT: State = 0;

#[derive(Clone, Copy, Debug)]
enum In {
    Put(State),
    Get,
    Cas(State, State),
    Delete,
    DeleteCas(State),
}

#[derive(Clone, Copy, Debug)]
enum Out {
    Ok,
    Value(State),
    Bool(bool),
}

/// Applies `input` to `state`; `output == None` accepts any output. Returns the new
/// state, or `None` if the op with that output is not legal in `state`.
fn step(state: State, input: In, output: Option<Out>) -> Option<State> {
    match (input, output) {
        (In::Put(v), None | Some(Out::Ok)) => Some(v),
        (In::Get, None) => Some(state),
        (In::Get, Some(Out::Value(v))) => (v == state).then_some(state),
        (In::Cas(expected, v), out) => {
            let done = state == expected;
            match out {
                None => {}
                Some(Out::Bool(b)) if b == done => {}
                Some(_) => return None,
            }
            Some(if done { v } else { state })
        }
        (In::Delete, None | Some(Out::Ok)) => Some(ABSENT),
        (In::DeleteCas(expected), out) => {
            // Consul answers `true` for a key that is not there.
            let done = state == expected || state == ABSENT;
            match out {
                None => {}
                Some(Out::Bool(b)) if b == done => {}
                Some(_) => return None,
            }
            Some(if done { ABSENT } else { state })
        }
        _ => None,
    }
}

struct Op<'a> {
    src: &'a Operation,
    call: u64,
    ret: Option<u64>,
    input: In,
    output: Option<Out>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    /// The first index `>= from` and `< len` whose bit is clear.
    fn next_zero(&self, from: usize, len: usize) -> Option<usize> {
        let mut i = from;
        while i < len {
            let (w, b) = (i / 64, i % 64);
            let inv = !self.0[w] >> b;
            if inv != 0 {
                let z = i + inv.trailing_zeros() as usize;
                return (z < len).then_some(z);
            }
            i = (w + 1) * 64;
        }
        None
    }
    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Visited search nodes, keyed by (linearized known ops, state), each holding the
/// sets of linearized unknown ops seen with it (an antichain under ⊆).
#[derive(Default)]
struct Cache {
    map: FastMap<(Bits, State), Vec<Bits>>,
    len: usize,
}

impl Cache {
    /// Records the node; returns false if it (or a node subsuming it) was already seen.
    fn insert(&mut self, known: &Bits, state: State, unknown: &Bits) -> bool {
        let seen = self.map.entry((known.clone(), state)).or_default();
        if seen.iter().any(|u| u.is_subset_of(unknown)) {
            return false;
        }
        let before = seen.len();
        seen.retain(|u| !unknown.is_subset_of(u));
        self.len -= before - seen.len();
        seen.push(unknown.clone());
        self.len += 1;
        true
    }
}

struct Frame {
    /// The op linearized to get from the parent node to this one.
    op: usize,
    /// Model state before / after `op`.
    before: State,
    after: State,
    /// The parent's candidates, and the index of the next one to try there.
    parent_candidates: Vec<usize>,
    parent_next: usize,
    parent_blocker: usize,
}

struct Deepest {
    /// (completed ops linearized, unknown ops not linearized): larger is deeper.
    depth: (usize, usize),
    prefix: Vec<(usize, State)>,
    state: State,
    blocker: usize,
    candidates: Vec<usize>,
}

enum KeyResult {
    Ok,
    Illegal(String),
    Unknown(String),
}

struct KeyChecker<'a> {
    key: &'a str,
    /// Sorted by call time; an op's index is its position here.
    ops: Vec<Op<'a>>,
    /// Known ops (ret is Some) sorted by (ret, call).
    ret_order: Vec<usize>,
    /// Position of each op in `ret_order` (known ops) or among unknown ops.
    known_pos: Vec<Option<usize>>,
    unknown_pos: Vec<Option<usize>>,
    n_unknown: usize,
    /// Interned values; id i > 0 is `values[i - 1]`.
    values: Vec<&'a str>,
    lin: Bits,
    lin_known: Bits,
    lin_unknown: Bits,
}

fn check_key(key: &str, raw: &[&Operation], max_states: usize) -> KeyResult {
    for op in raw {
        if let Some((ret, _)) = &op.ret {
            if *ret < op.call {
                return KeyResult::Unknown(format!(
                    "malformed history: op returns before it is invoked: {}",
                    describe_raw(op)
                ));
            }
        }
    }
    let mut checker = KeyChecker::new(key, raw);
    checker.search(max_states)
}

impl<'a> KeyChecker<'a> {
    fn new(key: &'a str, raw: &[&'a Operation]) -> Self {
        let mut ids: HashMap<&'a str, State> = HashMap::new();
        let mut values: Vec<&'a str> = Vec::new();
        let mut intern = |v: &'a str| -> State {
            *ids.entry(v).or_insert_with(|| {
                values.push(v);
                values.len() as State
            })
        };
        let mut ops: Vec<Op<'a>> = Vec::new();
        for &src in raw {
            // An unknown Get has no effect and no observable output: drop it.
            if src.ret.is_none() && src.input == KvInput::Get {
                continue;
            }
            let input = match &src.input {
                KvInput::Put { value } => In::Put(intern(value)),
                KvInput::Get => In::Get,
                KvInput::Cas { expected, value } => {
                    let e = expected.as_deref().map_or(ABSENT, &mut intern);
                    In::Cas(e, intern(value))
                }
                KvInput::Delete => In::Delete,
                KvInput::DeleteCas { expected } => In::DeleteCas(intern(expected)),
            };
            let output = src.ret.as_ref().map(|(_, out)| match out {
                KvOutput::Ok => Out::Ok,
                KvOutput::Value(v) => Out::Value(v.as_deref().map_or(ABSENT, &mut intern)),
                KvOutput::Bool(b) => Out::Bool(*b),
            });
            ops.push(Op {
                src,
                call: src.call,
                ret: src.ret.as_ref().map(|(t, _)| *t),
                input,
                output,
            });
        }
        ops.sort_by_key(|op| op.call);
        let n = ops.len();
        let mut ret_order: Vec<usize> = (0..n).filter(|&i| ops[i].ret.is_some()).collect();
        ret_order.sort_by_key(|&i| (ops[i].ret, ops[i].call));
        let mut known_pos = vec![None; n];
        for (pos, &i) in ret_order.iter().enumerate() {
            known_pos[i] = Some(pos);
        }
        let mut unknown_pos = vec![None; n];
        let mut n_unknown = 0;
        for (i, op) in ops.iter().enumerate() {
            if op.ret.is_none() {
                unknown_pos[i] = Some(n_unknown);
                n_unknown += 1;
            }
        }
        KeyChecker {
            key,
            lin: Bits::new(n),
            lin_known: Bits::new(ret_order.len()),
            lin_unknown: Bits::new(n_unknown),
            ops,
            ret_order,
            known_pos,
            unknown_pos,
            n_unknown,
            values,
        }
    }

    /// Fills `out` with the ops that may be linearized next (known ops first, then
    /// unknown ones, each in call order) and returns the pending known op with the
    /// earliest return, or `None` if every known op is linearized.
    fn candidates(&self, out: &mut Vec<usize>) -> Option<usize> {
        out.clear();
        let first = self.lin_known.next_zero(0, self.ret_order.len())?;
        let blocker = self.ret_order[first];
        let r = self.ops[blocker].ret.expect("known op");
        // b may go next iff no pending known op a has a.ret <= b.call && a.call < b.call.
        // The blocker has the least (ret, call) among pending known ops, so that is:
        // b.call < r, or b.call == r when the blocker is instantaneous at r.
        let inclusive = self.ops[blocker].call == r;
        let mut unknown = Vec::new();
        let mut i = 0;
        while let Some(b) = self.lin.next_zero(i, self.ops.len()) {
            let c = self.ops[b].call;
            if c > r || (c == r && !inclusive) {
                break;
            }
            if self.ops[b].ret.is_some() {
                out.push(b);
            } else {
                unknown.push(b);
            }
            i = b + 1;
        }
        out.extend(unknown);
        Some(blocker)
    }

    fn mark(&mut self, op: usize, linearized: bool) {
        if linearized {
            self.lin.set(op);
            if let Some(p) = self.known_pos[op] {
                self.lin_known.set(p);
            }
            if let Some(p) = self.unknown_pos[op] {
                self.lin_unknown.set(p);
            }
        } else {
            self.lin.clear(op);
            if let Some(p) = self.known_pos[op] {
                self.lin_known.clear(p);
            }
            if let Some(p) = self.unknown_pos[op] {
                self.lin_unknown.clear(p);
            }
        }
    }

    fn search(&mut self, max_states: usize) -> KeyResult {
        let mut cache = Cache::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut state = ABSENT;
        let mut candidates = Vec::new();
        let Some(mut blocker) = self.candidates(&mut candidates) else {
            return KeyResult::Ok;
        };
        let mut next = 0;
        let mut known_depth = 0;
        let mut deepest: Option<Deepest> = None;
        loop {
            // Try the remaining candidates of the current node.
            let mut advanced = false;
            while next < candidates.len() {
                let op = candidates[next];
                next += 1;
                let Some(after) = step(state, self.ops[op].input, self.ops[op].output) else {
                    continue;
                };
                self.mark(op, true);
                if !cache.insert(&self.lin_known, after, &self.lin_unknown) {
                    self.mark(op, false);
                    continue;
                }
                if cache.len > max_states {
                    return KeyResult::Unknown(format!(
                        "gave up after {} cached search states (max_states_per_key = {max_states}); \
                         {} ops on this key, {} of them with unknown outcome; at most {} of the \
                         {} completed ops were linearized so far",
                        cache.len,
                        self.ops.len(),
                        self.n_unknown,
                        deepest.as_ref().map_or(0, |d| d.depth.0).max(known_depth),
                        self.ret_order.len(),
                    ));
                }
                let mut child = Vec::new();
                let child_blocker = self.candidates(&mut child);
                stack.push(Frame {
                    op,
                    before: state,
                    after,
                    parent_candidates: std::mem::replace(&mut candidates, child),
                    parent_next: next,
                    parent_blocker: blocker,
                });
                state = after;
                next = 0;
                if self.ops[op].ret.is_some() {
                    known_depth += 1;
                }
                match child_blocker {
                    None => return KeyResult::Ok,
                    Some(b) => blocker = b,
                }
                advanced = true;
                break;
            }
            if advanced {
                continue;
            }
            // Dead end: remember the deepest one for the explanation (the most completed
            // ops linearized, then the fewest unknown ones), then backtrack.
            let depth = (known_depth, self.n_unknown + known_depth - stack.len());
            if deepest.as_ref().is_none_or(|d| depth > d.depth) {
                deepest = Some(Deepest {
                    depth,
                    prefix: stack.iter().map(|f| (f.op, f.after)).collect(),
                    state,
                    blocker,
                    candidates: candidates.clone(),
                });
            }
            let Some(frame) = stack.pop() else {
                return KeyResult::Illegal(self.explain(deepest.expect("recorded above")));
            };
            self.mark(frame.op, false);
            if self.ops[frame.op].ret.is_some() {
                known_depth -= 1;
            }
            state = frame.before;
            candidates = frame.parent_candidates;
            next = frame.parent_next;
            blocker = frame.parent_blocker;
        }
    }

    fn show_state(&self, s: State) -> String {
        if s == ABSENT {
            "<absent>".to_string()
        } else {
            format!("{:?}", self.values[s as usize - 1])
        }
    }

    fn explain(&self, d: Deepest) -> String {
        let mut e = String::new();
        let total_known = self.ret_order.len();
        let known_done = d
            .prefix
            .iter()
            .filter(|(op, _)| self.ops[*op].ret.is_some())
            .count();
        let _ = writeln!(
            e,
            "key {:?}: no linearization exists ({} ops: {} completed, {} with unknown outcome).",
            self.key,
            self.ops.len(),
            total_known,
            self.n_unknown
        );
        let _ = writeln!(
            e,
            "The search got furthest after linearizing {} ops ({known_done} of {total_known} completed ops); \
             the state was then {}.",
            d.prefix.len(),
            self.show_state(d.state)
        );
        let _ = writeln!(
            e,
            "Op that could not be linearized there (the pending op with the earliest return):\n  {}",
            describe_raw(self.ops[d.blocker].src)
        );
        let _ = writeln!(e, "Ops that were candidates to go next at that point:");
        for &c in &d.candidates {
            let why = match step(d.state, self.ops[c].input, self.ops[c].output) {
                None => format!("illegal in state {}", self.show_state(d.state)),
                Some(s) => format!(
                    "legal (-> {}), but no linearization continues from there",
                    self.show_state(s)
                ),
            };
            let _ = writeln!(e, "  {}: {why}", describe_raw(self.ops[c].src));
        }
        const SHOWN: usize = 50;
        let skip = d.prefix.len().saturating_sub(SHOWN);
        let _ = writeln!(
            e,
            "Longest linearizable prefix found ({} ops{}), each with the state after it:",
            d.prefix.len(),
            if skip > 0 {
                format!(", first {skip} not shown")
            } else {
                String::new()
            }
        );
        for (n, (op, after)) in d.prefix.iter().enumerate().skip(skip) {
            let _ = writeln!(
                e,
                "  {:>4}. {}  => {}",
                n + 1,
                describe_raw(self.ops[*op].src),
                self.show_state(*after)
            );
        }
        e
    }
}

fn describe_raw(op: &Operation) -> String {
    match &op.ret {
        Some((ret, out)) => format!(
            "client {} {:?} -> {:?} [call {}, ret {}]",
            op.client, op.input, out, op.call, ret
        ),
        None => format!(
            "client {} {:?} -> <unknown outcome> [call {}, ret never]",
            op.client, op.input, op.call
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1_000_000;

    fn op(
        client: u64,
        key: &str,
        input: KvInput,
        call: u64,
        ret: Option<(u64, KvOutput)>,
    ) -> Operation {
        Operation {
            client,
            key: key.to_string(),
            input,
            call,
            ret,
        }
    }
    fn put(c: u64, k: &str, v: &str, call: u64, ret: u64) -> Operation {
        op(
            c,
            k,
            KvInput::Put { value: v.into() },
            call,
            Some((ret, KvOutput::Ok)),
        )
    }
    fn put_lost(c: u64, k: &str, v: &str, call: u64) -> Operation {
        op(c, k, KvInput::Put { value: v.into() }, call, None)
    }
    fn get(c: u64, k: &str, v: Option<&str>, call: u64, ret: u64) -> Operation {
        op(
            c,
            k,
            KvInput::Get,
            call,
            Some((ret, KvOutput::Value(v.map(String::from)))),
        )
    }
    fn cas(
        c: u64,
        k: &str,
        expected: Option<&str>,
        v: &str,
        ok: bool,
        call: u64,
        ret: u64,
    ) -> Operation {
        let input = KvInput::Cas {
            expected: expected.map(String::from),
            value: v.into(),
        };
        op(c, k, input, call, Some((ret, KvOutput::Bool(ok))))
    }
    fn del(c: u64, k: &str, call: u64, ret: u64) -> Operation {
        op(c, k, KvInput::Delete, call, Some((ret, KvOutput::Ok)))
    }
    fn del_cas(c: u64, k: &str, expected: &str, ok: bool, call: u64, ret: u64) -> Operation {
        let input = KvInput::DeleteCas {
            expected: expected.into(),
        };
        op(c, k, input, call, Some((ret, KvOutput::Bool(ok))))
    }

    #[track_caller]
    fn assert_ok(h: &[Operation]) {
        let r = check(h, MAX);
        assert!(r.is_ok(), "expected linearizable, got {r}");
    }
    #[track_caller]
    fn assert_illegal(h: &[Operation]) -> String {
        match check(h, MAX) {
            CheckResult::Illegal { explanation, .. } => explanation,
            r => panic!("expected Illegal, got {r}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_ok(&[]);
        assert_ok(&[
            get(1, "k", None, 0, 10),
            put(1, "k", "a", 20, 30),
            get(2, "k", Some("a"), 40, 50),
            put(2, "k", "b", 60, 70),
            get(1, "k", Some("b"), 80, 90),
            del(1, "k", 100, 110),
            get(2, "k", None, 120, 130),
        ]);
    }

    #[test]
    fn concurrent_puts_with_reads_seeing_either_order() {
        for (first, second) in [("a", "b"), ("b", "a")] {
            assert_ok(&[
                put(1, "k", "a", 0, 100),
                put(2, "k", "b", 10, 110),
                get(3, "k", Some(first), 20, 105),
                get(3, "k", Some(second), 120, 130),
                get(4, "k", Some(second), 140, 150),
            ]);
        }
        // But once a reader saw the second write win, nobody may see the first again.
        assert_illegal(&[
            put(1, "k", "a", 0, 100),
            put(2, "k", "b", 10, 110),
            get(3, "k", Some("b"), 120, 130),
            get(4, "k", Some("a"), 140, 150),
        ]);
    }

    #[test]
    fn read_concurrent_with_write_sees_old_or_new() {
        for seen in [Some("a"), Some("b")] {
            assert_ok(&[
                put(1, "k", "a", 0, 10),
                put(1, "k", "b", 20, 100),
                get(2, "k", seen, 30, 40),
                get(2, "k", Some("b"), 110, 120),
            ]);
        }
        // Old then new from two overlapping reads of the same writer is fine too.
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            put(1, "k", "b", 20, 100),
            get(2, "k", Some("b"), 30, 60),
            get(3, "k", Some("a"), 25, 35),
        ]);
    }

    #[test]
    fn cas_chains_are_linearizable() {
        assert_ok(&[
            cas(1, "k", None, "a", true, 0, 10),
            cas(2, "k", None, "x", false, 20, 30),
            cas(1, "k", Some("a"), "b", true, 40, 50),
            cas(2, "k", Some("a"), "y", false, 60, 70),
            cas(3, "k", Some("b"), "c", true, 80, 90),
            get(1, "k", Some("c"), 100, 110),
        ]);
        // Two concurrent CASes from the same expected value: exactly one may win.
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", false, 20, 60),
            cas(2, "k", Some("a"), "c", true, 25, 55),
            get(3, "k", Some("c"), 70, 80),
        ]);
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", true, 20, 60),
            cas(2, "k", Some("a"), "c", true, 25, 55),
        ]);
    }

    #[test]
    fn timed_out_put_seen_later_is_linearizable() {
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            put_lost(2, "k", "b", 20),
            get(3, "k", Some("a"), 30, 40),
            get(3, "k", Some("b"), 1_000, 1_010),
            get(1, "k", Some("b"), 2_000, 2_010),
        ]);
    }

    #[test]
    fn timed_out_put_never_seen_is_linearizable() {
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            put_lost(2, "k", "b", 20),
            get(3, "k", Some("a"), 30, 40),
            get(3, "k", Some("a"), 1_000, 1_010),
            get(1, "k", Some("a"), 2_000, 2_010),
        ]);
        // A timed-out CAS and delete that never took effect either.
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            op(
                2,
                "k",
                KvInput::Cas {
                    expected: Some("a".into()),
                    value: "b".into(),
                },
                20,
                None,
            ),
            op(2, "k", KvInput::Delete, 30, None),
            get(3, "k", Some("a"), 1_000, 1_010),
        ]);
    }

    #[test]
    fn timed_out_put_cannot_take_effect_before_its_call() {
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            get(3, "k", Some("b"), 20, 30),
            put_lost(2, "k", "b", 40),
        ]);
    }

    #[test]
    fn timed_out_put_seen_then_unseen_is_illegal() {
        // Once the lost write is observed it has taken effect; it cannot be undone.
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            put_lost(2, "k", "b", 20),
            get(3, "k", Some("b"), 30, 40),
            get(3, "k", Some("a"), 50, 60),
        ]);
    }

    #[test]
    fn delete_cas_is_linearizable() {
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            del_cas(2, "k", "x", false, 20, 30),
            get(1, "k", Some("a"), 40, 50),
            del_cas(2, "k", "a", true, 60, 70),
            get(1, "k", None, 80, 90),
            // Consul answers `true` for a key that is not there.
            del_cas(2, "k", "a", true, 100, 110),
            cas(1, "k", None, "b", true, 120, 130),
        ]);
        // Two concurrent DeleteCas on the same value: both succeed (the
        // second finds the key gone), and neither may fail.
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            del_cas(1, "k", "a", true, 20, 50),
            del_cas(2, "k", "a", true, 21, 49),
        ]);
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            del_cas(1, "k", "a", false, 20, 50),
            del_cas(2, "k", "a", true, 21, 49),
        ]);
        // A DeleteCas of a value that is neither current nor gone fails.
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            del_cas(2, "k", "a", true, 40, 50),
        ]);
        // A successful DeleteCas must see its value current and leave the key absent.
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            del_cas(2, "k", "a", true, 20, 30),
            get(1, "k", Some("a"), 40, 50),
        ]);
    }

    #[test]
    fn stale_read_is_illegal() {
        let e = assert_illegal(&[
            put(1, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            get(2, "k", Some("a"), 40, 50),
        ]);
        assert!(e.contains("key \"k\""), "{e}");
        assert!(
            e.contains("client 2 Get -> Value(Some(\"a\")) [call 40, ret 50]"),
            "{e}"
        );
        assert!(
            e.contains("Longest linearizable prefix found (2 ops)"),
            "{e}"
        );
    }

    #[test]
    fn read_your_writes_violation_is_illegal() {
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            put(2, "k", "b", 20, 30),
            get(2, "k", Some("a"), 40, 50),
        ]);
        assert_illegal(&[put(1, "k", "a", 0, 10), get(1, "k", None, 20, 30)]);
    }

    #[test]
    fn reads_contradicting_real_time_order_are_illegal() {
        // b's write completed before any read; reads see a, then b, then a again.
        assert_illegal(&[
            put(1, "k", "a", 0, 100),
            put(2, "k", "b", 0, 10),
            get(3, "k", Some("a"), 20, 30),
            get(3, "k", Some("b"), 40, 50),
            get(4, "k", Some("a"), 60, 70),
        ]);
    }

    #[test]
    fn cas_with_expected_value_never_current_is_illegal() {
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            cas(2, "k", Some("zzz"), "b", true, 20, 30),
        ]);
        // Expected value written only later.
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            cas(2, "k", Some("c"), "b", true, 20, 30),
            put(1, "k", "c", 40, 50),
        ]);
        // A create-only CAS succeeding on a present key.
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            cas(2, "k", None, "b", true, 20, 30),
        ]);
    }

    #[test]
    fn lost_acknowledged_write_is_illegal() {
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            put(2, "k", "b", 20, 30),
            get(3, "k", Some("a"), 40, 50),
            get(1, "k", Some("a"), 60, 70),
            get(2, "k", Some("a"), 80, 90),
        ]);
    }

    #[test]
    fn value_never_written_is_illegal() {
        assert_illegal(&[put(1, "k", "a", 0, 10), get(2, "k", Some("ghost"), 5, 50)]);
        assert_illegal(&[get(2, "k", Some("ghost"), 5, 50)]);
    }

    #[test]
    fn equal_times_order_return_before_call() {
        // The put returns at 30 and the read is invoked at 30: the put came first.
        assert_illegal(&[
            put(1, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            get(2, "k", Some("a"), 30, 40),
        ]);
        // One ns earlier, the read overlaps the put and may see the old value.
        assert_ok(&[
            put(1, "k", "a", 0, 10),
            put(1, "k", "b", 20, 30),
            get(2, "k", Some("a"), 29, 40),
        ]);
        // Instantaneous ops at one instant are not ordered among themselves.
        assert_ok(&[
            put(1, "k", "a", 5, 5),
            get(2, "k", None, 5, 5),
            get(3, "k", Some("a"), 5, 5),
        ]);
    }

    #[test]
    fn wrong_output_kind_is_illegal() {
        assert_illegal(&[op(
            1,
            "k",
            KvInput::Put { value: "a".into() },
            0,
            Some((10, KvOutput::Bool(true))),
        )]);
    }

    #[test]
    fn malformed_history_is_unknown() {
        let r = check(&[put(1, "k", "a", 10, 5)], MAX);
        assert!(r.is_unknown(), "{r}");
    }

    #[test]
    fn keys_are_independent() {
        // Each key alone is linearizable; as a single register it would not be.
        let h = [
            put(1, "x", "a", 0, 10),
            put(2, "y", "b", 20, 30),
            get(3, "x", Some("a"), 40, 50),
            get(4, "y", Some("b"), 40, 50),
            get(3, "y", Some("b"), 60, 70),
            get(4, "x", Some("a"), 60, 70),
        ];
        assert_ok(&h);
        let mut same_key = h.to_vec();
        for o in &mut same_key {
            o.key = "z".into();
        }
        assert_illegal(&same_key);
        // A violation on one key is reported against that key.
        let mut bad = h.to_vec();
        bad.push(get(5, "y", None, 80, 90));
        match check(&bad, MAX) {
            CheckResult::Illegal { key, explanation } => {
                assert_eq!(key, "y");
                assert!(explanation.contains("client 5"), "{explanation}");
            }
            r => panic!("expected Illegal, got {r}"),
        }
    }

    #[test]
    fn state_budget_exhaustion_is_unknown_not_ok() {
        // Many concurrent blind writes then an impossible read: the search has to
        // explore many orders before concluding, so a tiny budget gives Unknown.
        let mut h: Vec<Operation> = (0..12)
            .map(|c| put(c, "k", &format!("v{c}"), 0, 100))
            .collect();
        h.push(get(99, "k", Some("never"), 200, 210));
        assert!(check(&h, 1_000_000).is_illegal());
        let r = check(&h, 10);
        assert!(r.is_unknown(), "{r}");
        // An illegal key wins over an undecided one.
        h.push(put(1, "other", "a", 0, 10));
        h.push(get(1, "other", None, 20, 30));
        assert!(check(&h, 10).is_illegal());
    }

    // -- randomized histories --------------------------------------------------

    /// splitmix64
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Generates a history by running a sequential KV store: every op gets a random
    /// interval (clients are sequential) and a linearization point inside it; ops are
    /// applied in linearization-point order. `lost_percent` of ops time out (ret None),
    /// half of those taking effect.
    fn random_history(
        seed: u64,
        clients: u64,
        per_client: usize,
        keys: usize,
        lost_percent: u64,
    ) -> Vec<Operation> {
        let mut rng = Rng(seed);
        // (client, call, linearization point, ret) with distinct linearization points.
        let mut slots = Vec::new();
        for c in 0..clients {
            let mut t = rng.below(50);
            for _ in 0..per_client {
                let call = t + 1 + rng.below(30);
                let lin = call + rng.below(60);
                let ret = lin + rng.below(60);
                slots.push((c, call * 16, lin * 16 + c, ret * 16 + 15));
                t = ret;
            }
        }
        slots.sort_by_key(|s| s.2);
        let mut state: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut history = Vec::new();
        for (n, (client, call, _, ret)) in slots.into_iter().enumerate() {
            let key = format!("key{}", rng.below(keys as u64));
            let cur = state.get(&key).cloned().flatten();
            let old = written
                .get(&key)
                .filter(|w| !w.is_empty())
                .map(|w| w[rng.below(w.len() as u64) as usize].clone());
            let fresh = format!("c{client}-{n}");
            let input = match rng.below(100) {
                0..=29 => KvInput::Put {
                    value: fresh.clone(),
                },
                30..=64 => KvInput::Get,
                65..=84 => KvInput::Cas {
                    expected: if rng.chance(60) {
                        cur.clone()
                    } else {
                        old.clone()
                    },
                    value: fresh.clone(),
                },
                85..=89 => KvInput::Delete,
                _ => KvInput::DeleteCas {
                    expected: if rng.chance(60) {
                        cur.clone()
                    } else {
                        old.clone()
                    }
                    .unwrap_or_else(|| "none".into()),
                },
            };
            let lost = rng.chance(lost_percent);
            let applies = !lost || rng.chance(50);
            let (new, output) = match &input {
                KvInput::Put { value } => (Some(value.clone()), KvOutput::Ok),
                KvInput::Get => (cur.clone(), KvOutput::Value(cur.clone())),
                KvInput::Cas { expected, value } => {
                    let done = *expected == cur;
                    (
                        if done {
                            Some(value.clone())
                        } else {
                            cur.clone()
                        },
                        KvOutput::Bool(done),
                    )
                }
                KvInput::Delete => (None, KvOutput::Ok),
                KvInput::DeleteCas { expected } => {
                    let done = cur.as_ref() == Some(expected) || cur.is_none();
                    (if done { None } else { cur.clone() }, KvOutput::Bool(done))
                }
            };
            if applies {
                if new != cur {
                    if let Some(v) = &new {
                        written.entry(key.clone()).or_default().push(v.clone());
                    }
                }
                state.insert(key.clone(), new);
            }
            history.push(Operation {
                client,
                key,
                input,
                call,
                ret: (!lost).then_some((ret, output)),
            });
        }
        history
    }

    /// Makes one completed read return a value that was overwritten (by a completed
    /// put that finished before the read started, itself invoked after the value's
    /// put completed) — impossible in any linearization.
    fn inject_stale_read(h: &mut [Operation]) -> bool {
        let puts: Vec<(usize, u64, u64)> = h
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match (&o.input, &o.ret) {
                (KvInput::Put { .. }, Some((r, _))) => Some((i, o.call, *r)),
                _ => None,
            })
            .collect();
        for g in (0..h.len()).rev() {
            if h[g].input != KvInput::Get || h[g].ret.is_none() {
                continue;
            }
            let (key, gcall) = (h[g].key.clone(), h[g].call);
            for &(w1, _, r1) in &puts {
                if h[w1].key != key {
                    continue;
                }
                let overwritten = puts
                    .iter()
                    .any(|&(w2, c2, r2)| h[w2].key == key && c2 > r1 && r2 < gcall);
                if overwritten {
                    let KvInput::Put { value } = h[w1].input.clone() else {
                        unreachable!()
                    };
                    let ret = h[g].ret.as_mut().unwrap();
                    assert_ne!(ret.1, KvOutput::Value(Some(value.clone())));
                    ret.1 = KvOutput::Value(Some(value));
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn random_histories_are_linearizable_and_a_stale_read_is_caught() {
        for seed in 0..5 {
            let lost = if seed % 2 == 0 { 0 } else { 3 };
            let mut h = random_history(seed, 8, 200, 3, lost);
            let r = check(&h, MAX);
            assert!(r.is_ok(), "seed {seed}: {r}");
            assert!(
                inject_stale_read(&mut h),
                "seed {seed}: no stale read to inject"
            );
            let r = check(&h, MAX);
            assert!(r.is_illegal(), "seed {seed}: {r}");
        }
    }

    /// Exhaustive reference checker for one key: tries every order of every subset of
    /// ops that contains all completed ops, with its own copy of the model.
    fn brute_force(ops: &[Operation]) -> bool {
        fn precedes(a: &Operation, b: &Operation) -> bool {
            matches!(a.ret, Some((r, _)) if r <= b.call && a.call < b.call)
        }
        fn apply(state: &Option<String>, o: &Operation) -> Option<Option<String>> {
            let out = o.ret.as_ref().map(|(_, out)| out);
            let (new, expect) = match &o.input {
                KvInput::Put { value } => (Some(value.clone()), KvOutput::Ok),
                KvInput::Get => (state.clone(), KvOutput::Value(state.clone())),
                KvInput::Cas { expected, value } if expected == state => {
                    (Some(value.clone()), KvOutput::Bool(true))
                }
                KvInput::Cas { .. } => (state.clone(), KvOutput::Bool(false)),
                KvInput::Delete => (None, KvOutput::Ok),
                KvInput::DeleteCas { expected }
                    if state.as_ref() == Some(expected) || state.is_none() =>
                {
                    (None, KvOutput::Bool(true))
                }
                KvInput::DeleteCas { .. } => (state.clone(), KvOutput::Bool(false)),
            };
            (out.is_none() || out == Some(&expect)).then_some(new)
        }
        fn rec(ops: &[Operation], used: &mut [bool], state: &Option<String>) -> bool {
            if ops
                .iter()
                .zip(used.iter())
                .all(|(o, u)| *u || o.ret.is_none())
            {
                return true;
            }
            for i in 0..ops.len() {
                if used[i] || (0..ops.len()).any(|j| !used[j] && precedes(&ops[j], &ops[i])) {
                    continue;
                }
                if let Some(next) = apply(state, &ops[i]) {
                    used[i] = true;
                    if rec(ops, used, &next) {
                        return true;
                    }
                    used[i] = false;
                }
            }
            false
        }
        rec(ops, &mut vec![false; ops.len()], &None)
    }

    fn random_small_history(rng: &mut Rng, n: usize, lost_percent: u64) -> Vec<Operation> {
        let pick = |rng: &mut Rng| -> Option<String> {
            let i = rng.below(n as u64 + 1);
            (i < n as u64).then(|| format!("v{i}"))
        };
        (0..n)
            .map(|i| {
                let input = match rng.below(5) {
                    0 => KvInput::Put {
                        value: format!("v{i}"),
                    },
                    1 => KvInput::Get,
                    2 => KvInput::Cas {
                        expected: pick(rng),
                        value: format!("v{i}"),
                    },
                    3 => KvInput::Delete,
                    _ => KvInput::DeleteCas {
                        expected: pick(rng).unwrap_or_else(|| "v0".into()),
                    },
                };
                let output = match &input {
                    KvInput::Put { .. } | KvInput::Delete => KvOutput::Ok,
                    KvInput::Get => KvOutput::Value(pick(rng)),
                    _ => KvOutput::Bool(rng.chance(50)),
                };
                let call = rng.below(12);
                let ret = call + rng.below(8);
                let ret = (!rng.chance(lost_percent)).then_some((ret, output));
                op(i as u64, "k", input, call, ret)
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = Rng(7);
        let (mut ok, mut illegal) = (0, 0);
        for round in 0..6000 {
            let h = random_small_history(&mut rng, 3 + round % 7, [0, 20, 50][round % 3] as u64);
            let expected = brute_force(&h);
            let got = check(&h, MAX);
            assert_eq!(got.is_ok(), expected, "history {h:#?}\ngot {got}");
            assert_eq!(got.is_illegal(), !expected, "history {h:#?}\ngot {got}");
            if expected {
                ok += 1;
            } else {
                illegal += 1;
            }
            // A small budget may give up, but must never give a wrong verdict.
            let small = check(&h, 4);
            assert!(
                small.is_unknown() || small == got,
                "history {h:#?}\nsmall budget {small}"
            );
        }
        assert!(ok > 400 && illegal > 400, "ok {ok}, illegal {illegal}");
    }

    #[test]
    fn performance_2000_ops_over_10_keys() {
        let h = random_history(42, 10, 200, 10, 1);
        assert_eq!(h.len(), 2000);
        let start = std::time::Instant::now();
        let r = check(&h, MAX);
        println!("checked {} ops in {:?}", h.len(), start.elapsed());
        assert!(r.is_ok(), "{r}");
    }
}
