//! The `LogStore` suites.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{ok, temp_dir};
use crate::storage::{LogStore, StorageError};
use crate::types::{Configuration, Entry, EntryPayload, LogIndex, Server, Term};

/// Deterministic entries for `indexes`, all of `term`, mixing every payload
/// kind: a configuration every 7th index, a blank every 5th, otherwise a
/// command of 0 to 199 pseudo-random bytes seeded by the index.
///
/// ```
/// use raftkit::testing::storage::sample_entries;
/// let a = sample_entries(5..=6, 2);
/// assert_eq!(a, sample_entries(5..=6, 2));
/// assert_eq!(a[0].index.0, 5);
/// ```
pub fn sample_entries(indexes: RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|i| sample_entry(i, term)).collect()
}

fn sample_entry(index: u64, term: u64) -> Entry {
    let payload = if index.is_multiple_of(7) {
        EntryPayload::Configuration(Configuration::new(vec![
            Server::voter(format!("n{index}"), "127.0.0.1:7001"),
            Server::nonvoter("learner", format!("10.0.0.{}:7000", index % 250).as_str()),
        ]))
    } else if index.is_multiple_of(5) {
        EntryPayload::Blank
    } else {
        EntryPayload::Command(Bytes::from(random_bytes(
            index ^ (term << 48),
            (index * 37 % 200) as usize,
        )))
    };
    Entry {
        index: LogIndex(index),
        term: Term(term),
        payload,
    }
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    data
}

/// Runs every `LogStore` check, each against a store from `fresh` (which must
/// be empty).
pub fn log_store_suite<S: LogStore>(mut fresh: impl FnMut() -> S) {
    empty_store_reports_zero(&fresh());
    get_returns_exactly_the_held_entries_of_a_range(&fresh());
    first_append_may_start_at_any_index(&fresh());
    purge_prefix_removes_a_prefix_never_more(&fresh());
    purge_past_the_end_empties_and_append_restarts_anywhere(&fresh());
    truncate_suffix_then_append_replaces_the_tail(&fresh());
    truncate_everything_empties_the_store(&fresh());
    truncate_after_purge_keeps_the_middle(&fresh());
    large_entry_round_trips(&fresh());
    many_small_entries_round_trip(&fresh());
    every_payload_kind_round_trips_byte_exact(&fresh());
    non_contiguous_append_is_invalid(&fresh());
    concurrent_readers_see_only_whole_batches(Arc::new(fresh()));
}

/// Runs the restart checks: each opens a store in a new directory, writes,
/// drops it and opens the directory again.
pub fn durable_log_store_suite<S: LogStore>(mut open: impl FnMut(&Path) -> S) {
    reopen_of_an_empty_directory_is_empty(&mut open);
    reopen_returns_what_was_written(&mut open);
    reopen_after_truncate_returns_the_new_tail(&mut open);
    reopen_after_purge_keeps_no_more_than_before(&mut open);
    reopen_after_emptying_resurrects_nothing(&mut open);
}

#[track_caller]
fn assert_bounds<S: LogStore>(store: &S, first: u64, last: u64, when: &str) {
    let f = ok(store.first_index(), "first_index");
    let l = ok(store.last_index(), "last_index");
    assert_eq!(
        (f.0, l.0),
        (first, last),
        "{when}: (first_index, last_index) should be ({first}, {last})"
    );
}

#[track_caller]
fn assert_get<S: LogStore>(store: &S, from: u64, to: u64, want: &[Entry], when: &str) {
    let got = ok(
        store.get(LogIndex(from), LogIndex(to)),
        &format!("{when}: get({from}, {to})"),
    );
    assert_eq!(
        got.len(),
        want.len(),
        "{when}: get({from}, {to}) returned the wrong number of entries"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            g, w,
            "{when}: get({from}, {to}) returned a different entry at index {}",
            w.index
        );
    }
}

#[track_caller]
fn append<S: LogStore>(store: &S, entries: &[Entry], when: &str) {
    ok(store.append(entries), when);
}

fn empty_store_reports_zero<S: LogStore>(s: &S) {
    assert_bounds(s, 0, 0, "a fresh store");
    assert_get(s, 0, 100, &[], "a fresh store");
    assert_get(s, 1, u64::MAX, &[], "a fresh store");
}

fn get_returns_exactly_the_held_entries_of_a_range<S: LogStore>(s: &S) {
    let all = sample_entries(1..=10, 1);
    append(s, &all[..3], "appending 1..=3");
    append(s, &all[3..], "appending 4..=10");
    assert_bounds(s, 1, 10, "after appending 1..=10");
    assert_get(s, 1, 11, &all, "the whole log");
    assert_get(s, 3, 6, &all[2..5], "a middle range");
    assert_get(s, 0, 100, &all, "a range wider than the log on both sides");
    assert_get(s, 10, 11, &all[9..], "the last entry alone");
    assert_get(s, 5, 5, &[], "an empty range");
    assert_get(s, 7, 3, &[], "a reversed range");
    assert_get(s, 11, 20, &[], "a range past the end");
}

fn first_append_may_start_at_any_index<S: LogStore>(s: &S) {
    let entries = sample_entries(100..=110, 3);
    append(s, &entries, "appending 100..=110 to an empty store");
    assert_bounds(s, 100, 110, "after appending 100..=110 to an empty store");
    assert_get(
        s,
        1,
        105,
        &entries[..5],
        "a range starting below the first entry",
    );
}

#[track_caller]
fn assert_held_suffix<S: LogStore>(s: &S, all: &[Entry], at_most_first: u64, when: &str) {
    let first = ok(s.first_index(), "first_index").0;
    let last = all.last().map_or(0, |e| e.index.0);
    let start = all.first().map_or(0, |e| e.index.0);
    assert!(
        first >= start && first <= at_most_first,
        "{when}: first_index {first} should be in {start}..={at_most_first} (purge may keep more, never remove more)"
    );
    assert_bounds(s, first, last, when);
    assert_get(s, 0, last + 1, &all[(first - start) as usize..], when);
}

fn purge_prefix_removes_a_prefix_never_more<S: LogStore>(s: &S) {
    let all = sample_entries(1..=100, 1);
    append(s, &all, "appending 1..=100");
    ok(s.purge_prefix(LogIndex::ZERO), "purge_prefix(0)");
    assert_bounds(s, 1, 100, "after purge_prefix(0)");
    ok(s.purge_prefix(LogIndex(10)), "purge_prefix(10)");
    assert_held_suffix(s, &all, 11, "after purge_prefix(10)");
    ok(s.purge_prefix(LogIndex(60)), "purge_prefix(60)");
    assert_held_suffix(s, &all, 61, "after purge_prefix(60)");
    ok(
        s.purge_prefix(LogIndex(5)),
        "purge_prefix(5) after purge_prefix(60)",
    );
    assert_held_suffix(s, &all, 61, "after a purge below the first entry");
    let more = sample_entries(101..=120, 2);
    append(s, &more, "appending 101..=120 after purges");
    assert_eq!(
        ok(s.last_index(), "last_index").0,
        120,
        "appending after a purge"
    );
}

fn purge_past_the_end_empties_and_append_restarts_anywhere<S: LogStore>(s: &S) {
    append(s, &sample_entries(1..=50, 1), "appending 1..=50");
    ok(
        s.purge_prefix(LogIndex(51)),
        "purge_prefix(51), just past the end",
    );
    assert_bounds(s, 0, 0, "after purging just past the last entry");
    append(s, &sample_entries(1..=50, 1), "appending 1..=50 again");
    ok(
        s.purge_prefix(LogIndex(75)),
        "purge_prefix(75) past the end",
    );
    assert_bounds(s, 0, 0, "after purging past the last entry");
    assert_get(s, 0, 1000, &[], "after purging past the last entry");
    let later = sample_entries(500..=510, 4);
    append(s, &later, "appending 500..=510 to a purged-empty store");
    assert_bounds(
        s,
        500,
        510,
        "appending at a new index after emptying by purge",
    );
    assert_get(
        s,
        0,
        1000,
        &later,
        "appending at a new index after emptying by purge",
    );
    ok(
        s.purge_prefix(LogIndex(10_000)),
        "a second purge past the end",
    );
    let earlier = sample_entries(3..=4, 5);
    append(
        s,
        &earlier,
        "appending below the old first index after emptying",
    );
    assert_get(
        s,
        0,
        1000,
        &earlier,
        "appending below the old first index after emptying",
    );
}

fn truncate_suffix_then_append_replaces_the_tail<S: LogStore>(s: &S) {
    let old = sample_entries(1..=20, 1);
    append(s, &old, "appending 1..=20");
    ok(s.truncate_suffix(LogIndex(15)), "truncate_suffix(15)");
    assert_bounds(s, 1, 14, "after truncate_suffix(15)");
    assert_get(s, 0, 100, &old[..14], "after truncate_suffix(15)");
    ok(
        s.truncate_suffix(LogIndex(25)),
        "truncate_suffix(25) past the end",
    );
    assert_bounds(s, 1, 14, "after a truncate_suffix past the end");
    let new = sample_entries(15..=18, 2);
    append(s, &new, "appending 15..=18 in term 2 after truncating");
    let mut want = old[..14].to_vec();
    want.extend(new);
    assert_get(s, 0, 100, &want, "the replaced tail");
    ok(
        s.truncate_suffix(LogIndex(18)),
        "truncate_suffix(18) of the last entry",
    );
    assert_get(
        s,
        0,
        100,
        &want[..17],
        "after truncating only the last entry",
    );
}

fn truncate_everything_empties_the_store<S: LogStore>(s: &S) {
    append(s, &sample_entries(1..=20, 1), "appending 1..=20");
    ok(s.truncate_suffix(LogIndex(1)), "truncate_suffix(1)");
    assert_bounds(s, 0, 0, "after truncating every entry");
    let again = sample_entries(7..=9, 2);
    append(s, &again, "appending 7..=9 after truncating every entry");
    assert_get(
        s,
        0,
        100,
        &again,
        "after truncating every entry and appending",
    );
}

fn truncate_after_purge_keeps_the_middle<S: LogStore>(s: &S) {
    let all = sample_entries(1..=50, 1);
    append(s, &all, "appending 1..=50");
    ok(s.purge_prefix(LogIndex(20)), "purge_prefix(20)");
    ok(
        s.truncate_suffix(LogIndex(30)),
        "truncate_suffix(30) after purge_prefix(20)",
    );
    assert_held_suffix(
        s,
        &all[..29],
        21,
        "after purge_prefix(20) then truncate_suffix(30)",
    );
}

fn large_entry_round_trips<S: LogStore>(s: &S) {
    let big = Entry::command(LogIndex(1), Term(1), Bytes::from(random_bytes(8, 8 << 20)));
    let small = sample_entries(2..=3, 1);
    append(s, std::slice::from_ref(&big), "appending an 8 MiB entry");
    append(s, &small, "appending after an 8 MiB entry");
    let got = ok(s.get(LogIndex(1), LogIndex(2)), "reading the 8 MiB entry");
    assert!(
        got.len() == 1 && got[0] == big,
        "the 8 MiB entry did not round-trip byte for byte"
    );
    assert_get(s, 2, 4, &small, "entries after an 8 MiB entry");
}

fn many_small_entries_round_trip<S: LogStore>(s: &S) {
    let all = sample_entries(1..=10_000, 1);
    for batch in all.chunks(100) {
        append(s, batch, "appending 10_000 entries in batches of 100");
    }
    assert_bounds(s, 1, 10_000, "after 10_000 small entries");
    assert_get(s, 1, 10_001, &all, "10_000 small entries");
    assert_get(
        s,
        4_321,
        4_400,
        &all[4_320..4_399],
        "a slice of 10_000 small entries",
    );
}

fn every_payload_kind_round_trips_byte_exact<S: LogStore>(s: &S) {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let entries = vec![
        Entry {
            index: LogIndex(1),
            term: Term(1),
            payload: EntryPayload::Blank,
        },
        Entry::command(LogIndex(2), Term(1), Bytes::new()),
        Entry::command(LogIndex(3), Term(2), Bytes::from(all_bytes)),
        Entry {
            index: LogIndex(4),
            term: Term(2),
            payload: EntryPayload::Configuration(Configuration::new(vec![
                Server::voter("n1", "127.0.0.1:7001"),
                Server::voter("n2", "127.0.0.1:7002"),
                Server::nonvoter("n3", "[::1]:7003"),
            ])),
        },
        Entry {
            index: LogIndex(5),
            term: Term(u64::MAX),
            payload: EntryPayload::Configuration(Configuration::default()),
        },
    ];
    append(s, &entries, "appending every payload kind");
    assert_get(s, 1, 6, &entries, "every payload kind");
}

#[track_caller]
fn assert_invalid<S: LogStore>(s: &S, batch: &[Entry], what: &str) {
    match s.append(batch) {
        Err(StorageError::Invalid(_)) => {}
        Err(e) => panic!("{what}: expected StorageError::Invalid, got another error: {e}"),
        Ok(()) => panic!("{what}: expected StorageError::Invalid, but the append succeeded"),
    }
}

fn non_contiguous_append_is_invalid<S: LogStore>(s: &S) {
    let mut gap = sample_entries(1..=3, 1);
    gap.remove(1);
    assert_invalid(s, &gap, "a batch [1, 3] with a gap, into an empty store");
    assert_invalid(s, &sample_entries(0..=1, 1), "an entry with index 0");
    assert_bounds(s, 0, 0, "after rejected appends into an empty store");
    let held = sample_entries(1..=5, 1);
    append(s, &held, "appending 1..=5");
    assert_invalid(
        s,
        &sample_entries(7..=8, 1),
        "a batch starting past last_index + 1",
    );
    assert_invalid(
        s,
        &sample_entries(5..=6, 1),
        "a batch overlapping the last entry",
    );
    assert_invalid(
        s,
        &sample_entries(1..=2, 1),
        "a batch rewriting the start of the log",
    );
    let mut inner = sample_entries(6..=8, 1);
    inner.swap(1, 2);
    assert_invalid(s, &inner, "a batch [6, 8, 7] out of order");
    assert_bounds(s, 1, 5, "after rejected appends");
    assert_get(s, 0, 100, &held, "after rejected appends");
}

fn concurrent_readers_see_only_whole_batches<S: LogStore>(s: Arc<S>) {
    const BATCH: u64 = 10;
    const BATCHES: u64 = 150;
    let all = Arc::new(sample_entries(1..=BATCH * BATCHES, 1));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, all, done) = (Arc::clone(&s), Arc::clone(&all), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                loop {
                    // Read `done` before the log, so the last pass sees every batch.
                    let finished = done.load(Ordering::Acquire);
                    let got = ok(s.get(LogIndex(1), LogIndex(u64::MAX)), "a concurrent get");
                    assert!(
                        (got.len() as u64).is_multiple_of(BATCH),
                        "a reader saw {} entries, not a whole number of {BATCH}-entry batches",
                        got.len()
                    );
                    for (g, w) in got.iter().zip(all.iter()) {
                        assert_eq!(
                            g, w,
                            "a concurrent reader saw a wrong entry at index {}",
                            w.index
                        );
                    }
                    reads += 1;
                    if finished {
                        assert_eq!(
                            got.len(),
                            all.len(),
                            "after the writer finished, a reader missed entries"
                        );
                        return reads;
                    }
                }
            })
        })
        .collect();
    for batch in all.chunks(BATCH as usize) {
        append(&*s, batch, "appending while readers run");
    }
    done.store(true, Ordering::Release);
    for r in readers {
        match r.join() {
            Ok(reads) => assert!(reads > 0, "a reader thread never read"),
            Err(_) => panic!("a concurrent reader failed (see its panic message above)"),
        }
    }
}

fn reopen_of_an_empty_directory_is_empty<S: LogStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("log-empty");
    drop(open(dir.path()));
    let s = open(dir.path());
    assert_bounds(&s, 0, 0, "reopening a store that never held an entry");
}

fn reopen_returns_what_was_written<S: LogStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("log-reopen");
    let mut all = vec![Entry::command(
        LogIndex(1),
        Term(1),
        Bytes::from(random_bytes(1, 3 << 20)),
    )];
    all.extend(sample_entries(2..=3_000, 1));
    {
        let s = open(dir.path());
        for batch in all.chunks(97) {
            append(&s, batch, "appending before a restart");
        }
    }
    {
        let s = open(dir.path());
        assert_bounds(&s, 1, 3_000, "after a restart");
        assert_get(&s, 0, 5_000, &all, "after a restart");
        let more = sample_entries(3_001..=3_010, 2);
        append(&s, &more, "appending after a restart");
        all.extend(more);
    }
    let s = open(dir.path());
    assert_get(&s, 0, 5_000, &all, "after a second restart");
}

fn reopen_after_truncate_returns_the_new_tail<S: LogStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("log-truncate");
    let mut want = sample_entries(1..=1_000, 1);
    {
        let s = open(dir.path());
        append(&s, &want, "appending 1..=1000");
        ok(s.truncate_suffix(LogIndex(400)), "truncate_suffix(400)");
        want.truncate(399);
        let new = sample_entries(400..=450, 2);
        append(&s, &new, "appending 400..=450 in term 2");
        want.extend(new);
    }
    let s = open(dir.path());
    assert_bounds(&s, 1, 450, "after truncate, append and restart");
    assert_get(&s, 0, 2_000, &want, "after truncate, append and restart");
    ok(
        s.truncate_suffix(LogIndex(1)),
        "truncate_suffix(1) after a restart",
    );
    drop(s);
    let s = open(dir.path());
    assert_bounds(&s, 0, 0, "after truncating everything and a restart");
}

fn reopen_after_purge_keeps_no_more_than_before<S: LogStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("log-purge");
    let all = sample_entries(1..=1_000, 1);
    let first_after_purge = {
        let s = open(dir.path());
        append(&s, &all, "appending 1..=1000");
        ok(s.purge_prefix(LogIndex(600)), "purge_prefix(600)");
        ok(s.first_index(), "first_index").0
    };
    let s = open(dir.path());
    assert_held_suffix(
        &s,
        &all,
        first_after_purge,
        "after purge_prefix(600) and a restart",
    );
}

fn reopen_after_emptying_resurrects_nothing<S: LogStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("log-empty-again");
    let later = sample_entries(2_000..=2_010, 3);
    {
        let s = open(dir.path());
        append(&s, &sample_entries(1..=500, 1), "appending 1..=500");
        ok(
            s.purge_prefix(LogIndex(10_000)),
            "purge_prefix past the end",
        );
        append(&s, &later, "appending 2000..=2010 after emptying");
    }
    let s = open(dir.path());
    assert_bounds(
        &s,
        2_000,
        2_010,
        "after emptying by purge, appending and a restart",
    );
    assert_get(
        &s,
        0,
        5_000,
        &later,
        "after emptying by purge, appending and a restart",
    );
}
