//! Crash tests and benchmarks for raftkit's durable storage backends.
//!
//! What it is: a seeded log workload that a child process runs against a
//! real store (`storage-crash-child`), and the checker that the parent runs
//! after killing that child with `SIGKILL`:
//!
//! ```text
//!  parent (tests/crash.rs)                         child (storage-crash-child)
//!   spawn(backend, dir, seed, next) ─────────────▶ open store, print READY
//!   read lines "k A first last" ◀── println+flush ─ op k returned (durable)
//!   ... after a seeded number of lines: SIGKILL ──▶ dies mid-op
//!   reopen, check against the model of ops 1..=k (op k+1 may or may not
//!   have happened), start the next run from what the store holds
//! ```
//!
//! What it is not: a power-loss test. A killed process loses nothing that
//! reached the page cache, so this checks the stores' write protocols and
//! recovery (torn batches, half-done truncations, purges), not their fsyncs.
//!
//! ```
//! use raftkit_storage_durability::{Model, Op, Workload};
//! let mut w = Workload::new(7, 100, 1);
//! let mut model = Model::default();
//! for _ in 0..5 {
//!     let op = w.next_op();
//!     model.apply(&op);
//! }
//! ```

use std::collections::BTreeMap;
use std::str::FromStr;

use bytes::Bytes;
use raftkit::{Entry, LogIndex, Term};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The entry the workload writes at `index` in `term`: 1 to 300 seeded bytes.
///
/// ```
/// let e = raftkit_storage_durability::entry(5, 2);
/// assert_eq!(e, raftkit_storage_durability::entry(5, 2));
/// assert_ne!(e, raftkit_storage_durability::entry(5, 3));
/// ```
pub fn entry(index: u64, term: u64) -> Entry {
    let mut rng = ChaCha8Rng::seed_from_u64(index ^ term.rotate_left(32));
    let mut data = vec![0u8; 1 + (index.wrapping_mul(7) ^ term) as usize % 300];
    rng.fill_bytes(&mut data);
    Entry::command(LogIndex(index), Term(term), Bytes::from(data))
}

/// One log operation of the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `append` of the entries `first..=last`, all in `term`.
    Append {
        /// The first index of the batch.
        first: u64,
        /// The last index of the batch.
        last: u64,
        /// The term of every entry.
        term: u64,
    },
    /// `truncate_suffix(from)`.
    Truncate {
        /// The first index removed.
        from: u64,
    },
    /// `purge_prefix(upto)`.
    Purge {
        /// The last index removed.
        upto: u64,
    },
}

impl Op {
    /// The entries an append writes; empty for the other operations.
    pub fn entries(&self) -> Vec<Entry> {
        match *self {
            Op::Append { first, last, term } => (first..=last).map(|i| entry(i, term)).collect(),
            _ => Vec::new(),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Append { first, last, term } => write!(f, "A {first} {last} {term}"),
            Op::Truncate { from } => write!(f, "T {from}"),
            Op::Purge { upto } => write!(f, "P {upto}"),
        }
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Op, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("bad operation {s:?}"))
        };
        match words.first() {
            Some(&"A") => Ok(Op::Append {
                first: num(1)?,
                last: num(2)?,
                term: num(3)?,
            }),
            Some(&"T") => Ok(Op::Truncate { from: num(1)? }),
            Some(&"P") => Ok(Op::Purge { upto: num(1)? }),
            _ => Err(format!("bad operation {s:?}")),
        }
    }
}

/// A seeded sequence of log operations, from a known starting point.
///
/// Mostly appends of 1 to 64 entries, with truncations of the last few
/// entries (each followed by appends in a new term) and purges that keep the
/// log under about a thousand entries. It never purges the last entry, so
/// appends always continue at `last + 1`.
#[derive(Debug)]
pub struct Workload {
    rng: ChaCha8Rng,
    term: u64,
    first: u64,
    next: u64,
}

impl Workload {
    /// A workload on an empty log that appends first at `next`, in terms from
    /// `term` on.
    pub fn new(seed: u64, term: u64, next: u64) -> Workload {
        Workload {
            rng: ChaCha8Rng::seed_from_u64(seed),
            term,
            first: next,
            next,
        }
    }

    /// A workload on a log holding `first..next` (nothing when equal).
    pub fn resume(seed: u64, term: u64, first: u64, next: u64) -> Workload {
        Workload {
            first,
            ..Workload::new(seed, term, next)
        }
    }

    /// The index the next append starts at.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// The next operation; the workload assumes it completes.
    pub fn next_op(&mut self) -> Op {
        let held = self.next - self.first;
        let roll = self.rng.random_range(0..100);
        if roll < 8 && held > 0 {
            let back = self.rng.random_range(1..=held.min(20));
            let from = self.next - back;
            self.next = from;
            self.term += 1;
            return Op::Truncate { from };
        }
        if roll < 16 && held > 400 {
            let upto = self.next - 1 - self.rng.random_range(1..=300);
            self.first = upto + 1;
            return Op::Purge { upto };
        }
        let n = self.rng.random_range(1..=64);
        let op = Op::Append {
            first: self.next,
            last: self.next + n - 1,
            term: self.term,
        };
        self.next += n;
        op
    }
}

/// What the log must hold after a sequence of completed operations.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// For each index ever written and not truncated since: its term.
    /// Purged indexes stay, because a purge may remove fewer entries.
    pub versions: BTreeMap<u64, u64>,
    /// The first index that must be held (0 when empty).
    pub first: u64,
    /// The last index that must be held (0 when empty).
    pub last: u64,
}

impl Model {
    /// Records a completed operation.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { first, last, term } => {
                for i in first..=last {
                    self.versions.insert(i, term);
                }
                if self.last == 0 {
                    self.first = first;
                }
                self.last = last;
            }
            Op::Truncate { from } => {
                self.versions.split_off(&from);
                if from <= self.first {
                    (self.first, self.last) = (0, 0);
                } else {
                    self.last = self.last.min(from - 1);
                }
            }
            Op::Purge { upto } => {
                if upto >= self.last {
                    (self.first, self.last) = (0, 0);
                } else {
                    self.first = self.first.max(upto + 1);
                }
            }
        }
    }

    /// Checks `held` (what a reopened store returns for the whole log)
    /// against this model, where `pending` may or may not have happened
    /// (the operation the process was killed in). Returns what is wrong.
    pub fn check(&self, held: &[Entry], pending: Option<&Op>) -> Result<(), String> {
        for pair in held.windows(2) {
            if pair[1].index.0 != pair[0].index.0 + 1 {
                return Err(format!(
                    "a hole between index {} and {}",
                    pair[0].index, pair[1].index
                ));
            }
        }
        for e in held {
            let i = e.index.0;
            let old = self.versions.get(&i).map(|&t| entry(i, t));
            let new = match pending {
                Some(&Op::Append { first, last, term }) if (first..=last).contains(&i) => {
                    Some(entry(i, term))
                }
                _ => None,
            };
            if old.as_ref() != Some(e) && new.as_ref() != Some(e) {
                return Err(format!(
                    "index {i} holds term {} and {} bytes, which the workload never left there",
                    e.term,
                    e.size_bytes()
                ));
            }
        }
        if self.last == 0 {
            return Ok(());
        }
        let (mut lo, mut hi) = (self.first, self.last);
        match pending {
            Some(&Op::Purge { upto }) => lo = lo.max(upto + 1),
            Some(&Op::Truncate { from }) => hi = hi.min(from.saturating_sub(1)),
            _ => {}
        }
        if lo > hi {
            return Ok(());
        }
        let (first, last) = match (held.first(), held.last()) {
            (Some(f), Some(l)) => (f.index.0, l.index.0),
            _ => (0, 0),
        };
        if held.is_empty() || first > lo || last < hi {
            return Err(format!(
                "entries {lo}..={hi} returned durably but the store holds {first}..={last}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_of(ops: &[Op]) -> Model {
        let mut m = Model::default();
        for op in ops {
            m.apply(op);
        }
        m
    }

    fn append(first: u64, last: u64, term: u64) -> Op {
        Op::Append { first, last, term }
    }

    #[test]
    fn the_checker_accepts_exactly_the_returned_log_and_the_pending_op() {
        let m = model_of(&[append(1, 10, 1), Op::Truncate { from: 8 }, append(8, 12, 2)]);
        let log = |ops: &[Op]| -> Vec<Entry> {
            let m = model_of(ops);
            (m.first..=m.last)
                .map(|i| entry(i, m.versions[&i]))
                .collect()
        };
        let held = log(&[append(1, 10, 1), Op::Truncate { from: 8 }, append(8, 12, 2)]);
        assert_eq!(m.check(&held, None), Ok(()));
        let pending = append(13, 15, 2);
        let mut more = held.clone();
        more.extend(pending.entries()[..2].iter().cloned());
        assert_eq!(
            m.check(&more, Some(&pending)),
            Ok(()),
            "a torn pending batch"
        );
        assert_eq!(m.check(&held[2..], Some(&Op::Purge { upto: 2 })), Ok(()));
    }

    #[test]
    fn the_checker_refuses_lost_wrong_stale_or_extra_entries() {
        let ops = [append(1, 10, 1), Op::Truncate { from: 8 }, append(8, 12, 2)];
        let m = model_of(&ops);
        let held: Vec<Entry> = (1..=12).map(|i| entry(i, m.versions[&i])).collect();
        assert!(m.check(&held[..11], None).is_err(), "a returned entry lost");
        assert!(m.check(&held[1..], None).is_err(), "the first entry lost");
        let mut stale = held.clone();
        stale[8] = entry(9, 1);
        assert!(
            m.check(&stale, None).is_err(),
            "a truncated entry came back"
        );
        let mut wrong = held.clone();
        wrong[3] = Entry::command(LogIndex(4), Term(1), Bytes::from_static(b"x"));
        assert!(m.check(&wrong, None).is_err(), "wrong bytes");
        let mut extra = held.clone();
        extra.push(entry(13, 2));
        assert!(m.check(&extra, None).is_err(), "an entry nobody appended");
        let mut hole = held.clone();
        hole.remove(5);
        assert!(m.check(&hole, None).is_err(), "a hole");
        assert!(
            m.check(&held[..9], Some(&Op::Truncate { from: 10 }))
                .is_ok(),
            "a pending truncation may have happened"
        );
    }
}
