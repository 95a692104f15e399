//! A linearizability checker for key-value [`History`]s.
//!
//! ```text
//!  History ──drop Fail ops──► split by key ──► per key: prepare ──► WGL search ──► Verdict
//!                                              (intern values,     (budgeted,
//!                                               drop unknown gets,  memoized)
//!                                               prune unobserved
//!                                               unknown writes)
//! ```
//!
//! # What is checked
//! Every key is an independent register, so a history is linearizable iff each per-key
//! sub-history is (P-compositionality, Herlihy & Wing 1990 §3.3; Horn & Kroening 2015); each
//! key is checked on its own, in key order. Each key starts absent.
//!
//! - An operation's interval is closed, `[invoked_at, completed_at]`: an operation that
//!   completes at `t` and one invoked at `t` are concurrent, so either order is allowed.
//! - [`Outcome::Fail`] operations are dropped: they did not happen. A value read that only a
//!   failed write wrote is a violation.
//! - [`Outcome::Unknown`] (and never-completed) operations complete at +infinity and may be
//!   linearized at any point after their invocation, or omitted. A `Get` with an unknown
//!   outcome constrains nothing and is dropped. A `Cas` with an unknown outcome takes effect
//!   only where its expected value matches.
//! - `Get` results and `Cas` swapped/not-swapped results must match the register's value.
//!
//! # The search
//! Wing & Gong's backtracking search with Lowe's memoization ("Testing for linearizability",
//! Concurrency Computat. 2017), as in Porcupine: the calls and returns are sorted in one
//! doubly linked list; the search linearizes any operation whose call precedes the first
//! return still in the list and whose result matches the model, removes it and restarts from
//! the head; a return at the head of the candidates means the last choice was wrong, so it
//! backtracks. A cache of (linearized set, register value) pairs already explored keeps each
//! configuration from being searched twice. A per-key step budget bounds the work: a key
//! that exhausts it is reported [`Inconclusive`], neither passed nor failed.
//!
//! Before the search, an unknown-outcome write whose value no operation on that key can
//! observe is dropped, when the key has no `Cas` that returned not-swapped: no operation reads
//! the value it writes, so omitting it keeps any linearization valid. This keeps histories
//! with many timed-out writes (the chaos harness) from costing 2^n.
//!
//! # Example
//! ```
//! use raftkit_tests::history::{ClientId, History, Op, Outcome, Returned};
//! use raftkit_tests::linearizability::check;
//!
//! let mut h = History::new();
//! let put = h.invoke(ClientId(1), Op::Put { key: b"k".to_vec(), value: b"new".to_vec() }, 0);
//! h.complete(put, Outcome::Ok(Returned::Done), 10)?;
//! // A read that starts after the write completed still sees the key absent: stale.
//! let get = h.invoke(ClientId(2), Op::Get { key: b"k".to_vec() }, 20);
//! h.complete(get, Outcome::Ok(Returned::Value(None)), 30)?;
//!
//! let verdict = check(&h);
//! assert!(!verdict.ok);
//! let violation = verdict.violation.expect("a stale read is a violation");
//! assert_eq!(violation.key, b"k".to_vec());
//! assert_eq!(violation.blocked.id, get);
//! # Ok::<(), raftkit_tests::history::CompleteError>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::{
    History, Key, MaybeQuoted, Op, OpId, Outcome, Quoted, Record, Returned, Value,
};

/// The default [`CheckOptions::step_budget_per_key`]. A 1,000-operation key with 5
/// concurrent clients takes about 5,000 steps when nothing needs backtracking, so this leaves
/// room for ~1,000× that; one step costs roughly 50–100 ns in release, and memory peaks at
/// about `steps × ops_on_key / 8` bytes for the cache.
pub const DEFAULT_STEP_BUDGET_PER_KEY: u64 = 2_000_000;

/// How many operations of the longest prefix a [`Violation`] keeps in `prefix_tail`.
pub const PREFIX_TAIL_LEN: usize = 8;

/// Bounds on the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The most search steps (one candidate tried or one backtrack) spent on one key before
    /// it is reported [`Inconclusive`]. Default [`DEFAULT_STEP_BUDGET_PER_KEY`]. Higher
    /// decides more pathological keys at the cost of time and memory.
    pub step_budget_per_key: u64,
}

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Verdict {
    /// True iff every key was shown linearizable: no violation and nothing inconclusive.
    pub ok: bool,
    /// How many keys were checked (keys with at least one operation that did not fail).
    pub keys_checked: usize,
    /// How many operations were checked: all but the [`Outcome::Fail`] ones.
    pub ops_checked: usize,
    /// Search steps spent, over all keys.
    pub steps: u64,
    /// The violation on the first key, in key order, that is not linearizable.
    pub violation: Option<Violation>,
    /// Keys whose search ran out of budget, in key order. Whether that fails a test is the
    /// caller's choice.
    pub inconclusive: Vec<Inconclusive>,
}

/// A key whose search exhausted [`CheckOptions::step_budget_per_key`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inconclusive {
    /// The key.
    pub key: Key,
    /// How many operations it has (not counting failed ones).
    pub ops: usize,
    /// The steps spent before giving up.
    pub steps: u64,
}

/// Why a key's history is not linearizable.
///
/// The search finds the longest prefix that can be linearized (`prefix`). After it, the
/// key holds `value_after_prefix`, and `blocked` (the earliest-completing operation not in
/// the prefix) must come next or be preceded by one of `concurrent` (the other operations
/// outside the prefix invoked by the time `blocked` completed). None of them matches that
/// value, and no other prefix gets further. The window to read is therefore `prefix_tail`
/// followed by `blocked` and `concurrent`; [`fmt::Display`] prints it with the reason each
/// operation cannot apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Key,
    /// How many operations it has (not counting failed ones).
    pub ops_on_key: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<OpId>,
    /// The key's value after `prefix` (`None`: absent).
    pub value_after_prefix: Option<Value>,
    /// The last [`PREFIX_TAIL_LEN`] operations of `prefix`, in linearization order.
    pub prefix_tail: Vec<Record>,
    /// The operation that cannot be linearized after `prefix`, although it had completed.
    pub blocked: Record,
    /// The other operations outside `prefix` that were invoked by the time `blocked`
    /// completed, by invocation time; none can be linearized after `prefix` either.
    pub concurrent: Vec<Record>,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            step_budget_per_key: DEFAULT_STEP_BUDGET_PER_KEY,
        }
    }
}

/// Checks `history` with the default [`CheckOptions`].
pub fn check(history: &History) -> Verdict {
    check_with(history, &CheckOptions::default())
}

/// Checks `history`: splits it by key and searches each key for a linearization.
///
/// ```
/// use raftkit_tests::history::History;
/// use raftkit_tests::linearizability::{check_with, CheckOptions};
///
/// let history = History::from_text(
///     "0 c1 0 10 put \"k\" \"a\" -> ok\n\
///      1 c2 5 15 get \"k\" -> ok \"a\"\n",
/// )?;
/// let verdict = check_with(&history, &CheckOptions { step_budget_per_key: 1_000 });
/// assert!(verdict.ok);
/// assert_eq!((verdict.keys_checked, verdict.ops_checked), (1, 2));
/// # Ok::<(), raftkit_tests::history::ParseHistoryError>(())
/// ```
pub fn check_with(history: &History, options: &CheckOptions) -> Verdict {
    let mut by_key: BTreeMap<&[u8], Vec<&Record>> = BTreeMap::new();
    for record in history.records() {
        if *record.outcome() != Outcome::Fail {
            by_key.entry(record.op.key()).or_default().push(record);
        }
    }
    let mut verdict = Verdict {
        ok: true,
        keys_checked: by_key.len(),
        ops_checked: by_key.values().map(Vec::len).sum(),
        steps: 0,
        violation: None,
        inconclusive: Vec::new(),
    };
    for (key, records) in by_key {
        let mut values = Interner::default();
        let ops = prepare(&records, &mut values);
        let mut search = Search::new(&ops);
        let result = search.run(options.step_budget_per_key);
        verdict.steps += search.steps;
        match result {
            SearchResult::Linearizable => {}
            SearchResult::OutOfBudget => verdict.inconclusive.push(Inconclusive {
                key: key.to_vec(),
                ops: records.len(),
                steps: search.steps,
            }),
            SearchResult::Violation => {
                if verdict.violation.is_none() {
                    let violation = search.violation(key, records.len(), &values);
                    verdict.violation = Some(violation);
                }
            }
        }
    }
    verdict.ok = verdict.violation.is_none() && verdict.inconclusive.is_empty();
    verdict
}

/// A register value, interned: [`ABSENT`] or an index into [`Interner::values`] plus one.
type ValueId = u32;

const ABSENT: ValueId = 0;

/// What an operation does to the register, with values interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Put (or Delete, writing [`ABSENT`]): always applies.
    Write(ValueId),
    /// Get that returned this value: applies iff the register holds it.
    Read(ValueId),
    /// Cas that swapped (or whose outcome is unknown): applies iff the register holds
    /// `expected`, and then writes `new`.
    CasSwap { expected: ValueId, new: ValueId },
    /// Cas that did not swap: applies iff the register does not hold `expected`.
    CasNoSwap { expected: ValueId },
}

/// One operation of a key's sub-history, ready for the search.
struct KeyOp<'a> {
    record: &'a Record,
    step: Step,
    /// When it completed; `None` for unknown outcomes (+infinity).
    returned_at: Option<u64>,
}

#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a [u8], ValueId>,
    values: Vec<&'a [u8]>,
}

enum SearchResult {
    Linearizable,
    Violation,
    OutOfBudget,
}

/// One entry of the search's list: the call or the return of an operation.
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
}

/// The WGL search over one key's operations. Entries `0..2n` are the calls and returns in
/// time order, linked through `next`/`prev`; `head()` and `tail()` are sentinels.
struct Search<'k, 'a> {
    ops: &'k [KeyOp<'a>],
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_entry: Vec<usize>,
    ret_entry: Vec<usize>,
    steps: u64,
    /// The deepest dead end seen: its linearization order and the register value after it.
    best: Vec<usize>,
    best_value: ValueId,
}

impl<'a> Interner<'a> {
    fn id(&mut self, value: Option<&'a [u8]>) -> ValueId {
        let Some(value) = value else { return ABSENT };
        let next = ValueId::try_from(self.values.len() + 1).unwrap_or(ValueId::MAX);
        *self.ids.entry(value).or_insert_with(|| {
            self.values.push(value);
            next
        })
    }

    fn value(&self, id: ValueId) -> Option<Value> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.values.get(index).map(|v| v.to_vec())
    }
}

/// Turns a key's records (no failed ones) into search operations, dropping those that
/// cannot matter: unknown gets and unobserved unknown writes.
fn prepare<'a>(records: &[&'a Record], values: &mut Interner<'a>) -> Vec<KeyOp<'a>> {
    let mut ops = Vec::with_capacity(records.len());
    for &record in records {
        let outcome = record.outcome();
        let step = match (&record.op, outcome) {
            (_, Outcome::Fail) | (Op::Get { .. }, Outcome::Unknown) => continue,
            (Op::Get { .. }, Outcome::Ok(Returned::Value(read))) => {
                Step::Read(values.id(read.as_deref()))
            }
            (Op::Put { value, .. }, _) => Step::Write(values.id(Some(value))),
            (Op::Delete { .. }, _) => Step::Write(ABSENT),
            (Op::Cas { expected, .. }, Outcome::Ok(Returned::Swapped(false))) => Step::CasNoSwap {
                expected: values.id(expected.as_deref()),
            },
            (Op::Cas { expected, new, .. }, _) => Step::CasSwap {
                expected: values.id(expected.as_deref()),
                new: values.id(new.as_deref()),
            },
            (Op::Get { .. }, Outcome::Ok(_)) => {
                // `History::complete` rejects a Get returning anything but a value.
                debug_assert!(false, "{record}: a get must return a value");
                continue;
            }
        };
        let returned_at = match outcome {
            Outcome::Ok(_) => record.completed_at(),
            Outcome::Fail | Outcome::Unknown => None,
        };
        ops.push(KeyOp {
            record,
            step,
            returned_at,
        });
    }
    prune_unobserved_unknown_writes(&mut ops);
    ops
}

/// Drops unknown-outcome writes of values no operation requires the register to hold.
///
/// Sound when the key has no not-swapped Cas (the only step that can need a value *other*
/// than one): in any linearization, the last write before a read or a Cas wrote the value
/// that operation requires, so it is kept, and removing the dropped writes changes no value
/// an operation sees.
fn prune_unobserved_unknown_writes(ops: &mut Vec<KeyOp<'_>>) {
    if ops
        .iter()
        .any(|op| matches!(op.step, Step::CasNoSwap { .. }))
    {
        return;
    }
    let required: HashSet<ValueId> = ops
        .iter()
        .filter_map(|op| match op.step {
            Step::Read(value)
            | Step::CasSwap {
                expected: value, ..
            } => Some(value),
            Step::Write(_) | Step::CasNoSwap { .. } => None,
        })
        .collect();
    ops.retain(|op| match op.step {
        Step::Write(new) | Step::CasSwap { new, .. } => {
            op.returned_at.is_some() || required.contains(&new)
        }
        Step::Read(_) | Step::CasNoSwap { .. } => true,
    });
}

/// The register value after applying `step` to `value`, or `None` if its result does not
/// match.
fn apply(step: Step, value: ValueId) -> Option<ValueId> {
    match step {
        Step::Write(new) => Some(new),
        Step::Read(read) => (read == value).then_some(value),
        Step::CasSwap { expected, new } => (expected == value).then_some(new),
        Step::CasNoSwap { expected } => (expected != value).then_some(value),
    }
}

impl<'k, 'a> Search<'k, 'a> {
    fn new(ops: &'k [KeyOp<'a>]) -> Search<'k, 'a> {
        let mut entries: Vec<Entry> = (0..ops.len())
            .flat_map(|op| [Entry { op, is_call: true }, Entry { op, is_call: false }])
            .collect();
        // Calls sort before returns at equal times: intervals are closed. Unknown returns
        // sort after every known return.
        entries.sort_by_key(|e| {
            let op = &ops[e.op];
            let time = match (e.is_call, op.returned_at) {
                (true, _) => u128::from(op.record.invoked_at),
                (false, Some(t)) => u128::from(t),
                (false, None) => u128::MAX,
            };
            (time, !e.is_call, e.op)
        });
        let len = entries.len();
        let mut call_entry = vec![0; ops.len()];
        let mut ret_entry = vec![0; ops.len()];
        for (index, e) in entries.iter().enumerate() {
            if e.is_call {
                call_entry[e.op] = index;
            } else {
                ret_entry[e.op] = index;
            }
        }
        // The list in time order, between the sentinels head = len and tail = len + 1.
        let order: Vec<usize> = std::iter::once(len)
            .chain(0..len)
            .chain(std::iter::once(len + 1))
            .collect();
        let mut next = vec![0; len + 2];
        let mut prev = vec![0; len + 2];
        for pair in order.windows(2) {
            next[pair[0]] = pair[1];
            prev[pair[1]] = pair[0];
        }
        Search {
            ops,
            entries,
            next,
            prev,
            call_entry,
            ret_entry,
            steps: 0,
            best: Vec::new(),
            best_value: ABSENT,
        }
    }

    fn head(&self) -> usize {
        self.entries.len()
    }

    fn run(&mut self, budget: u64) -> SearchResult {
        let mut known_left = self
            .ops
            .iter()
            .filter(|op| op.returned_at.is_some())
            .count();
        let mut linearized = Bitset::new(self.ops.len());
        let mut cache = Cache::default();
        // The linearized operations in order, each with the register value before it.
        let mut stack: Vec<(usize, ValueId)> = Vec::new();
        let mut value = ABSENT;
        let mut entry = self.next[self.head()];
        // While a known operation is left, its return is in the list after its call, so the
        // scan meets a return before it reaches the tail sentinel.
        while known_left > 0 {
            if self.steps >= budget {
                return SearchResult::OutOfBudget;
            }
            self.steps += 1;
            let Entry { op, is_call } = self.entries[entry];
            if is_call {
                if let Some(new_value) = apply(self.ops[op].step, value) {
                    linearized.set(op);
                    if cache.insert(&linearized, new_value) {
                        stack.push((op, value));
                        value = new_value;
                        known_left -= usize::from(self.ops[op].returned_at.is_some());
                        self.lift(op);
                        entry = self.next[self.head()];
                        continue;
                    }
                    linearized.clear(op);
                }
                entry = self.next[entry];
            } else {
                // A return before any fitting call: the last choice was wrong. Known returns
                // precede unknown ones, so with `known_left > 0` this is a known return.
                debug_assert!(self.ops[op].returned_at.is_some());
                if stack.len() > self.best.len() {
                    self.best = stack.iter().map(|&(op, _)| op).collect();
                    self.best_value = value;
                }
                let Some((op, before)) = stack.pop() else {
                    return SearchResult::Violation;
                };
                linearized.clear(op);
                value = before;
                known_left += usize::from(self.ops[op].returned_at.is_some());
                self.unlift(op);
                entry = self.next[self.call_entry[op]];
            }
        }
        SearchResult::Linearizable
    }

    /// Unlinks `op`'s call and return entries.
    fn lift(&mut self, op: usize) {
        for entry in [self.call_entry[op], self.ret_entry[op]] {
            let (prev, next) = (self.prev[entry], self.next[entry]);
            self.next[prev] = next;
            self.prev[next] = prev;
        }
    }

    /// Relinks what the matching [`Search::lift`] unlinked; lifts are undone in reverse order.
    fn unlift(&mut self, op: usize) {
        for entry in [self.ret_entry[op], self.call_entry[op]] {
            let (prev, next) = (self.prev[entry], self.next[entry]);
            self.next[prev] = entry;
            self.prev[next] = entry;
        }
    }

    /// Builds the report after [`Search::run`] returned [`SearchResult::Violation`].
    fn violation(&self, key: &[u8], ops_on_key: usize, values: &Interner<'_>) -> Violation {
        let mut in_prefix = vec![false; self.ops.len()];
        for &op in &self.best {
            in_prefix[op] = true;
        }
        // The first return not in the prefix: a known op, or the prefix would have finished.
        let blocked = self
            .entries
            .iter()
            .find(|e| !e.is_call && !in_prefix[e.op])
            .map_or(0, |e| e.op);
        let blocked_at = self.ops[blocked].returned_at.unwrap_or(u64::MAX);
        let mut concurrent: Vec<&Record> = (0..self.ops.len())
            .filter(|&op| op != blocked && !in_prefix[op])
            .map(|op| self.ops[op].record)
            .filter(|record| record.invoked_at <= blocked_at)
            .collect();
        concurrent.sort_by_key(|record| (record.invoked_at, record.id));
        let tail_start = self.best.len().saturating_sub(PREFIX_TAIL_LEN);
        Violation {
            key: key.to_vec(),
            ops_on_key,
            prefix: self.best.iter().map(|&op| self.ops[op].record.id).collect(),
            value_after_prefix: values.value(self.best_value),
            prefix_tail: self.best[tail_start..]
                .iter()
                .map(|&op| self.ops[op].record.clone())
                .collect(),
            blocked: self.ops[blocked].record.clone(),
            concurrent: concurrent.into_iter().cloned().collect(),
        }
    }
}

/// The set of linearized operations, with an incrementally kept Zobrist hash.
struct Bitset {
    words: Vec<u64>,
    hash: u64,
}

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset {
            words: vec![0; len.div_ceil(64)],
            hash: 0,
        }
    }

    fn set(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
        self.hash ^= zobrist(bit);
    }

    fn clear(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
        self.hash ^= zobrist(bit);
    }
}

/// A fixed pseudo-random 64-bit tag per operation (SplitMix64's finalizer).
fn zobrist(bit: usize) -> u64 {
    let mut z = (bit as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The (linearized set, register value) configurations already explored.
#[derive(Default)]
struct Cache {
    seen: HashMap<(u64, ValueId), Vec<Box<[u64]>>, MixState>,
}

impl Cache {
    /// Records the configuration; false if it was already there.
    fn insert(&mut self, set: &Bitset, value: ValueId) -> bool {
        let bucket = self.seen.entry((set.hash, value)).or_default();
        if bucket.iter().any(|words| **words == *set.words) {
            return false;
        }
        bucket.push(set.words.clone().into_boxed_slice());
        true
    }
}

type MixState = BuildHasherDefault<MixHasher>;

/// A fast hasher for keys that are already hashes (the FxHash mixing step).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok {
            "linearizable"
        } else if self.violation.is_some() {
            "NOT linearizable"
        } else {
            "inconclusive"
        };
        writeln!(
            f,
            "{verdict}: {} keys, {} ops, {} steps",
            self.keys_checked, self.ops_checked, self.steps
        )?;
        for key in &self.inconclusive {
            writeln!(
                f,
                "inconclusive on key {}: {} ops, gave up after {} steps",
                Quoted(&key.key),
                key.ops,
                key.steps
            )?;
        }
        match &self.violation {
            Some(violation) => write!(f, "{violation}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = MaybeQuoted(&self.value_after_prefix);
        writeln!(
            f,
            "key {} is not linearizable ({} ops on it)",
            Quoted(&self.key),
            self.ops_on_key
        )?;
        writeln!(
            f,
            "the longest linearizable prefix has {} ops and leaves the key at {value}",
            self.prefix.len()
        )?;
        if !self.prefix_tail.is_empty() {
            writeln!(
                f,
                "its last {}, in linearization order:",
                self.prefix_tail.len()
            )?;
            for record in &self.prefix_tail {
                writeln!(f, "    {record}")?;
            }
        }
        writeln!(f, "then this op cannot take effect, yet it completed:")?;
        let why = Mismatch(&self.value_after_prefix);
        writeln!(f, "  > {}    <- {}", self.blocked, why.of(&self.blocked))?;
        if !self.concurrent.is_empty() {
            writeln!(f, "nor can any op pending by then take effect first:")?;
            for record in &self.concurrent {
                writeln!(f, "    {record}    <- {}", why.of(record))?;
            }
        }
        Ok(())
    }
}

/// Explains why an operation cannot apply to a register value.
struct Mismatch<'v>(&'v Option<Value>);

impl Mismatch<'_> {
    fn of(&self, record: &Record) -> String {
        let value = MaybeQuoted(self.0);
        match (&record.op, record.outcome()) {
            (Op::Get { .. }, Outcome::Ok(Returned::Value(read))) => {
                format!("read {} but the key holds {value}", MaybeQuoted(read))
            }
            (Op::Cas { expected, .. }, Outcome::Ok(Returned::Swapped(false))) => format!(
                "did not swap but the key holds the expected {}",
                MaybeQuoted(expected)
            ),
            (Op::Cas { expected, .. }, _) => format!(
                "swap needs {} but the key holds {value}",
                MaybeQuoted(expected)
            ),
            (Op::Put { .. } | Op::Delete { .. }, _) => "a write; it applies".to_owned(),
            (Op::Get { .. }, _) => "an unchecked read".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::history::ClientId;

    /// What a case's history must check to.
    #[derive(Debug)]
    enum Expect {
        Linearizable,
        /// Not linearizable on `key`, and `blocked` is the op reported as unplaceable.
        Violation {
            key: &'static str,
            blocked: u64,
        },
    }

    struct Case {
        name: &'static str,
        /// A history in its text form, one op per line.
        history: &'static str,
        expect: Expect,
    }

    const CASES: &[Case] = &[
        Case {
            name: "sequential puts, reads, deletes and cas",
            history: r#"
                0 c1 0 1 get "k" -> ok nil
                1 c1 2 3 put "k" "a" -> ok
                2 c2 4 5 get "k" -> ok "a"
                3 c1 6 7 delete "k" -> ok
                4 c2 8 9 get "k" -> ok nil
                5 c1 10 11 put "k" "" -> ok
                6 c2 12 13 get "k" -> ok ""
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "sequential read of an overwritten value",
            history: r#"
                0 c1 0 1 put "k" "a" -> ok
                1 c1 2 3 put "k" "b" -> ok
                2 c1 4 5 get "k" -> ok "a"
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 2,
            },
        },
        Case {
            name: "concurrent puts linearize in the one order the reads allow",
            history: r#"
                0 c1 0 100 put "k" "a" -> ok
                1 c2 0 100 put "k" "b" -> ok
                2 c3 30 40 get "k" -> ok "b"
                3 c3 50 60 get "k" -> ok "a"
                4 c3 110 120 get "k" -> ok "a"
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "concurrent puts cannot explain b, a, b",
            history: r#"
                0 c1 0 100 put "k" "a" -> ok
                1 c2 0 100 put "k" "b" -> ok
                2 c3 30 40 get "k" -> ok "b"
                3 c3 50 60 get "k" -> ok "a"
                4 c3 70 80 get "k" -> ok "b"
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 4,
            },
        },
        Case {
            name: "a read concurrent with a write may see either value",
            history: r#"
                0 c1 0 1 put "k" "a" -> ok
                1 c1 10 20 put "k" "b" -> ok
                2 c2 12 14 get "k" -> ok "a"
                3 c3 13 15 get "k" -> ok "b"
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "intervals are closed: an op invoked when another completes is concurrent",
            history: r#"
                0 c1 0 10 put "k" "a" -> ok
                1 c2 10 20 get "k" -> ok nil
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "stale read after a completed write",
            history: r#"
                0 c1 0 10 put "k" "a" -> ok
                1 c1 20 30 put "k" "b" -> ok
                2 c2 40 50 get "k" -> ok "a"
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 2,
            },
        },
        Case {
            name: "lost acknowledged write",
            history: r#"
                0 c1 0 10 put "k" "a" -> ok
                1 c2 20 30 get "k" -> ok nil
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 1,
            },
        },
        Case {
            name: "read of a value never written",
            history: r#"
                0 c1 0 10 put "k" "a" -> ok
                1 c2 5 30 get "k" -> ok "ghost"
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 1,
            },
        },
        Case {
            name: "cas swaps only on a match and reports it",
            history: r#"
                0 c1 0 1 cas "k" nil "a" -> ok true
                1 c1 2 3 cas "k" nil "b" -> ok false
                2 c1 4 5 cas "k" "a" "b" -> ok true
                3 c1 6 7 cas "k" "a" "c" -> ok false
                4 c1 8 9 get "k" -> ok "b"
                5 c1 10 11 cas "k" "b" nil -> ok true
                6 c1 12 13 get "k" -> ok nil
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "cas that did not swap although the key held the expected value",
            history: r#"
                0 c1 0 1 put "k" "a" -> ok
                1 c1 2 3 cas "k" "a" "b" -> ok false
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 1,
            },
        },
        Case {
            name: "cas that swapped although the key did not hold the expected value",
            history: r#"
                0 c1 0 1 put "k" "a" -> ok
                1 c1 2 3 cas "k" nil "b" -> ok true
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 1,
            },
        },
        Case {
            name: "a failed cas still counts when it reads",
            history: r#"
                0 c1 0 1 cas "k" nil "a" -> fail
                1 c1 2 3 get "k" -> ok "a"
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 1,
            },
        },
        Case {
            name: "unknown write observed long after it timed out",
            history: r#"
                0 c1 0 10 put "k" "a" -> unknown
                1 c2 20 30 get "k" -> ok nil
                2 c2 1000 1010 get "k" -> ok "a"
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "never completed write observed",
            history: r#"
                0 c1 0 - put "k" "a" -> pending
                1 c2 20 30 get "k" -> ok "a"
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "unknown write never observed",
            history: r#"
                0 c1 0 10 put "k" "a" -> unknown
                1 c2 20 30 get "k" -> ok nil
                2 c2 40 50 get "k" -> ok nil
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "unknown write cannot take effect before its invocation",
            history: r#"
                0 c2 0 10 get "k" -> ok "a"
                1 c1 20 30 put "k" "a" -> unknown
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 0,
            },
        },
        Case {
            name: "unknown write observed only by a cas that did not swap",
            history: r#"
                0 c1 0 10 put "k" "w" -> ok
                1 c1 20 30 put "k" "v" -> unknown
                2 c2 40 50 cas "k" "w" "x" -> ok false
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "unknown cas observed",
            history: r#"
                0 c1 0 10 put "k" "a" -> ok
                1 c1 20 30 cas "k" "a" "b" -> unknown
                2 c2 40 50 get "k" -> ok "b"
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "unknown cas cannot swap a value the key did not hold",
            history: r#"
                0 c1 0 10 put "k" "a" -> ok
                1 c1 20 30 cas "k" "z" "b" -> unknown
                2 c2 40 50 get "k" -> ok "b"
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 2,
            },
        },
        Case {
            name: "unknown delete observed",
            history: r#"
                0 c1 0 10 put "k" "a" -> ok
                1 c1 20 30 delete "k" -> unknown
                2 c2 40 50 get "k" -> ok nil
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "failed write observed",
            history: r#"
                0 c1 0 10 put "k" "a" -> fail
                1 c2 20 30 get "k" -> ok "a"
            "#,
            expect: Expect::Violation {
                key: "k",
                blocked: 1,
            },
        },
        Case {
            name: "keys are independent registers",
            history: r#"
                0 c1 0 10 put "x" "a" -> ok
                1 c2 0 10 put "y" "b" -> ok
                2 c1 20 30 get "x" -> ok "a"
                3 c2 20 30 get "y" -> ok "b"
                4 c3 40 50 get "z" -> ok nil
            "#,
            expect: Expect::Linearizable,
        },
        Case {
            name: "a violation on one key is reported on that key",
            history: r#"
                0 c1 0 10 put "x" "a" -> ok
                1 c2 0 10 put "y" "b" -> ok
                2 c1 20 30 get "x" -> ok "a"
                3 c2 20 30 get "y" -> ok "a"
            "#,
            expect: Expect::Violation {
                key: "y",
                blocked: 3,
            },
        },
    ];

    #[test]
    fn table_cases_check_as_expected() {
        for case in CASES {
            let history = History::from_text(case.history)
                .unwrap_or_else(|e| panic!("case {:?}: {e}", case.name));
            let verdict = check(&history);
            assert!(
                verdict.inconclusive.is_empty(),
                "case {:?}: {verdict}",
                case.name
            );
            match case.expect {
                Expect::Linearizable => {
                    assert!(verdict.ok, "case {:?}: {verdict}", case.name);
                    assert_eq!(verdict.violation, None, "case {:?}", case.name);
                }
                Expect::Violation { key, blocked } => {
                    assert!(!verdict.ok, "case {:?} passed", case.name);
                    let violation = verdict.violation.expect("not ok without inconclusive");
                    assert_eq!(
                        (violation.key.as_slice(), violation.blocked.id),
                        (key.as_bytes(), OpId(blocked)),
                        "case {:?}: {violation}",
                        case.name
                    );
                }
            }
        }
    }

    #[test]
    fn verdict_counts_keys_and_ops_without_failed_ones() {
        let history = History::from_text(
            r#"
            0 c1 0 10 put "x" "a" -> ok
            1 c1 0 10 put "y" "a" -> fail
            2 c1 0 10 put "z" "a" -> fail
            3 c1 20 30 put "z" "b" -> unknown
            4 c1 40 - get "x" -> pending
            "#,
        )
        .expect("valid");
        let verdict = check(&history);
        assert!(verdict.ok, "{verdict}");
        assert_eq!((verdict.keys_checked, verdict.ops_checked), (2, 3));
    }

    #[test]
    fn violation_reports_longest_prefix_and_the_blocked_window() {
        let history = History::from_text(
            r#"
            0 c1 0 10 put "k" "a" -> ok
            1 c1 20 30 put "k" "b" -> ok
            2 c2 25 60 get "k" -> ok "c"
            3 c3 40 50 get "k" -> ok "a"
            4 c1 70 80 put "k" "d" -> ok
            "#,
        )
        .expect("valid");
        let verdict = check(&history);
        let violation = verdict.violation.expect("stale read");
        assert_eq!(violation.ops_on_key, 5);
        assert_eq!(violation.prefix, vec![OpId(0), OpId(1)]);
        assert_eq!(violation.value_after_prefix, Some(b"b".to_vec()));
        let ids = |records: &[Record]| records.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&violation.prefix_tail), vec![OpId(0), OpId(1)]);
        assert_eq!(violation.blocked.id, OpId(3));
        assert_eq!(ids(&violation.concurrent), vec![OpId(2)]);
        let text = violation.to_string();
        for line in [
            r#"key "k" is not linearizable (5 ops on it)"#,
            r#"the longest linearizable prefix has 2 ops and leaves the key at "b""#,
            r#"    1 c1 20 30 put "k" "b" -> ok"#,
            r#"  > 3 c3 40 50 get "k" -> ok "a"    <- read "a" but the key holds "b""#,
            r#"    2 c2 25 60 get "k" -> ok "c"    <- read "c" but the key holds "b""#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn exhausted_budget_is_inconclusive_not_a_verdict() {
        let history = History::from_text(CASES[2].history).expect("valid");
        let verdict = check_with(
            &history,
            &CheckOptions {
                step_budget_per_key: 2,
            },
        );
        assert!(!verdict.ok);
        assert_eq!(verdict.violation, None);
        let inconclusive = &verdict.inconclusive;
        assert_eq!(inconclusive.len(), 1, "{verdict}");
        assert_eq!(
            (inconclusive[0].key.as_slice(), inconclusive[0].steps),
            (&b"k"[..], 2)
        );
    }

    #[test]
    fn many_concurrent_unobserved_unknown_writes_stay_cheap() {
        // 40 timed-out writes, all concurrent, none observed: 2^40 subsets without pruning.
        let mut h = History::new();
        for i in 0..40 {
            let op = Op::Put {
                key: b"k".to_vec(),
                value: format!("lost-{i}").into_bytes(),
            };
            let id = h.invoke(ClientId(i), op, 0);
            h.complete(id, Outcome::Unknown, 10).expect("valid");
        }
        for i in 0..40 {
            let id = h.invoke(ClientId(100), Op::Get { key: b"k".to_vec() }, 20 + 2 * i);
            h.complete(id, Outcome::Ok(Returned::Value(None)), 21 + 2 * i)
                .expect("valid");
        }
        let verdict = check_with(
            &h,
            &CheckOptions {
                step_budget_per_key: 10_000,
            },
        );
        assert!(verdict.ok, "{verdict}");
    }

    /// An operation planned by [`random_history`], before its result is known.
    struct Planned {
        client: ClientId,
        op: Op,
        invoked_at: u64,
        takes_effect_at: u64,
        completed_at: u64,
        fate: Fate,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Fate {
        Ok,
        Fail,
        /// Reported unknown; `true` if it took effect anyway.
        Unknown(bool),
        /// Never completed; `true` if it took effect anyway.
        Pending(bool),
    }

    /// A history produced by a real sequential store: `clients` clients each run
    /// `ops_per_client` ops one after another on `keys` keys; each op takes effect at a random
    /// instant of its interval, so ops of different clients overlap at random. Every written
    /// value is unique. About 2% of ops fail and 3% end unknown or pending, half of which
    /// take effect (possibly after the client gave up).
    fn random_history(seed: u64, clients: u64, ops_per_client: u64, keys: u64) -> History {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut clock = vec![0u64; clients as usize];
        let mut planned = Vec::new();
        for round in 0..ops_per_client {
            for client in 0..clients {
                let now = &mut clock[client as usize];
                let invoked_at = *now + rng.random_range(0..10);
                let takes_effect_at = invoked_at + rng.random_range(0..30);
                let completed_at = takes_effect_at + rng.random_range(0..30);
                *now = completed_at + 1;
                let key = format!("key-{}", rng.random_range(0..keys)).into_bytes();
                let unique = format!("c{client}-{round}").into_bytes();
                let op = match rng.random_range(0..100) {
                    0..40 => Op::Get { key },
                    40..70 => Op::Put { key, value: unique },
                    70..80 => Op::Delete { key },
                    _ => {
                        // Expect a recent value of any client's, so some swaps succeed.
                        let other = rng.random_range(0..clients);
                        let back = round.saturating_sub(rng.random_range(0..3));
                        let expected = format!("c{other}-{back}").into_bytes();
                        let expected = rng.random_bool(0.8).then_some(expected);
                        Op::Cas {
                            key,
                            expected,
                            new: rng.random_bool(0.9).then_some(unique),
                        }
                    }
                };
                let fate = match rng.random_range(0..100) {
                    0..2 => Fate::Fail,
                    2..4 => Fate::Unknown(rng.random_bool(0.5)),
                    4..5 => Fate::Pending(rng.random_bool(0.5)),
                    _ => Fate::Ok,
                };
                // An op whose client gave up may still take effect much later.
                let takes_effect_at = match fate {
                    Fate::Unknown(true) | Fate::Pending(true) => {
                        takes_effect_at + rng.random_range(0..200)
                    }
                    _ => takes_effect_at,
                };
                let client = ClientId(client);
                planned.push(Planned {
                    client,
                    op,
                    invoked_at,
                    takes_effect_at,
                    completed_at,
                    fate,
                });
            }
        }
        record(&planned, &apply_in_order(&planned))
    }

    /// Runs the ops that take effect on a sequential store, in order of their instants.
    fn apply_in_order(planned: &[Planned]) -> Vec<Option<Returned>> {
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| (planned[i].takes_effect_at, i));
        let mut store: BTreeMap<Key, Value> = BTreeMap::new();
        let mut results = vec![None; planned.len()];
        for i in order {
            if let Fate::Fail | Fate::Unknown(false) | Fate::Pending(false) = planned[i].fate {
                continue;
            }
            results[i] = Some(match &planned[i].op {
                Op::Put { key, value } => {
                    store.insert(key.clone(), value.clone());
                    Returned::Done
                }
                Op::Get { key } => Returned::Value(store.get(key).cloned()),
                Op::Delete { key } => {
                    store.remove(key);
                    Returned::Done
                }
                Op::Cas { key, expected, new } => {
                    let swapped = store.get(key) == expected.as_ref();
                    if swapped {
                        match new {
                            Some(new) => store.insert(key.clone(), new.clone()),
                            None => store.remove(key),
                        };
                    }
                    Returned::Swapped(swapped)
                }
            });
        }
        results
    }

    /// Records the planned ops in invocation order, as a harness would.
    fn record(planned: &[Planned], results: &[Option<Returned>]) -> History {
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| (planned[i].invoked_at, i));
        let mut history = History::new();
        for i in order {
            let p = &planned[i];
            let id = history.invoke(p.client, p.op.clone(), p.invoked_at);
            let outcome = match (p.fate, &results[i]) {
                (Fate::Pending(_), _) => continue,
                (Fate::Ok, Some(returned)) => Outcome::Ok(returned.clone()),
                (Fate::Fail, _) => Outcome::Fail,
                _ => Outcome::Unknown,
            };
            history
                .complete(id, outcome, p.completed_at)
                .expect("planned times are ordered");
        }
        history
    }

    /// The same history with op `id` completed with `outcome` instead.
    fn with_outcome(history: &History, id: OpId, outcome: Outcome) -> History {
        let mut changed = History::new();
        for r in history.records() {
            let new_id = changed.invoke(r.client, r.op.clone(), r.invoked_at);
            if let Some(c) = &r.completion {
                let outcome = if r.id == id {
                    outcome.clone()
                } else {
                    c.outcome.clone()
                };
                changed
                    .complete(new_id, outcome, c.completed_at)
                    .expect("same times");
            }
        }
        changed
    }

    fn is_ok_write(r: &Record) -> bool {
        match (&r.op, r.outcome()) {
            (Op::Put { .. } | Op::Delete { .. }, Outcome::Ok(_)) => true,
            (Op::Cas { .. }, Outcome::Ok(Returned::Swapped(swapped))) => *swapped,
            _ => false,
        }
    }

    /// A successful read R from the second half of the history, and a value that R reading
    /// it would make stale for certain: written by a put W only (values are unique), with
    /// another write W2 on the key completed after W and before R was invoked.
    fn stale_read(history: &History) -> (OpId, Value) {
        let records = history.records();
        let completed = |r: &Record| r.completed_at().unwrap_or(u64::MAX);
        let same_key = |a: &Record, b: &Record| a.op.key() == b.op.key();
        records[records.len() / 2..]
            .iter()
            .filter(|r| matches!((&r.op, r.outcome()), (Op::Get { .. }, Outcome::Ok(_))))
            .find_map(|read| {
                let w2 = records
                    .iter()
                    .filter(|w2| same_key(w2, read) && is_ok_write(w2))
                    .filter(|w2| completed(w2) < read.invoked_at)
                    .max_by_key(|w2| completed(w2))?;
                records
                    .iter()
                    .filter(|w| same_key(w, read) && completed(w) < w2.invoked_at)
                    .filter_map(|w| match (&w.op, w.outcome()) {
                        (Op::Put { value, .. }, Outcome::Ok(_)) => Some((completed(w), value)),
                        _ => None,
                    })
                    .max_by_key(|(at, _)| *at)
                    .map(|(_, value)| (read.id, value.clone()))
            })
            .expect("a long random history has a read after two writes")
    }

    #[test]
    fn random_history_from_a_sequential_store_is_linearizable() {
        for seed in [1, 2, 3] {
            let history = random_history(seed, 5, 2_000, 10);
            let started = Instant::now();
            let verdict = check(&history);
            let elapsed = started.elapsed();
            assert!(verdict.ok, "seed {seed}: {verdict}");
            assert_eq!(verdict.keys_checked, 10);
            eprintln!("seed {seed}: {elapsed:?}, {verdict}");
            assert_eq!(
                check(&history),
                verdict,
                "seed {seed}: checking is deterministic"
            );
        }
    }

    #[test]
    fn random_history_with_one_mutated_read_is_rejected() {
        for seed in [1, 2, 3] {
            let history = random_history(seed, 5, 2_000, 10);
            let (read, stale) = stale_read(&history);
            let key = history.get(read).expect("recorded").op.key().to_vec();
            let mutations = [stale, b"never-written".to_vec()];
            for value in mutations {
                let mutated =
                    with_outcome(&history, read, Outcome::Ok(Returned::Value(Some(value))));
                let started = Instant::now();
                let verdict = check(&mutated);
                let elapsed = started.elapsed();
                assert!(!verdict.ok, "seed {seed}: mutating {read} went unnoticed");
                let violation = verdict
                    .violation
                    .as_ref()
                    .expect("a violation, not a timeout");
                assert_eq!(violation.key, key, "seed {seed}: {violation}");
                eprintln!("seed {seed}: {elapsed:?}, mutated {read}: {verdict}");
            }
        }
    }

    #[test]
    fn random_history_survives_the_text_round_trip() {
        let history = random_history(4, 5, 200, 3);
        let text = history.to_text();
        let read = History::from_text(&text).expect("own text parses");
        assert_eq!(read, history);
        assert_eq!(check(&read), check(&history));
    }
}
