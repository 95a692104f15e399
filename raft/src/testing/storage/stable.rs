//! The `StableStore` suites.

use std::path::Path;

use super::{ok, temp_dir};
use crate::storage::{HardState, StableStore, HARD_STATE_KEY};
use crate::types::{NodeId, Term};

/// Runs every `StableStore` check, each against a store from `fresh` (which
/// must be empty).
pub fn stable_store_suite<S: StableStore>(mut fresh: impl FnMut() -> S) {
    missing_key_is_none(&fresh());
    set_then_get_round_trips(&fresh());
    set_overwrites(&fresh());
    hard_state_round_trips(&fresh());
}

/// Runs the restart checks: each opens a store in a new directory, writes,
/// drops it and opens the directory again.
pub fn durable_stable_store_suite<S: StableStore>(mut open: impl FnMut(&Path) -> S) {
    reopen_returns_the_latest_values(&mut open);
    reopen_of_an_empty_directory_is_empty(&mut open);
}

#[track_caller]
fn assert_value<S: StableStore>(s: &S, key: &str, want: Option<&[u8]>, when: &str) {
    let got = ok(s.get(key), &format!("{when}: get({key:?})"));
    assert_eq!(
        got.as_deref(),
        want,
        "{when}: get({key:?}) returned the wrong value"
    );
}

fn missing_key_is_none<S: StableStore>(s: &S) {
    assert_value(s, "never-set", None, "a fresh store");
    assert_value(s, "", None, "a fresh store, empty key");
    let hs = ok(s.load_hard_state(), "load_hard_state on a fresh store");
    assert_eq!(
        hs,
        HardState::default(),
        "a fresh store should load the zero hard state"
    );
}

fn set_then_get_round_trips<S: StableStore>(s: &S) {
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let large = vec![0xA5u8; 64 << 10];
    ok(s.set("a", b"alpha"), "set(a)");
    ok(s.set("binary", &binary), "set(binary)");
    ok(s.set("empty", b""), "set(empty)");
    ok(s.set("large", &large), "set(large)");
    ok(s.set("ключ/with spaces", b"unicode"), "set(unicode key)");
    assert_value(s, "a", Some(b"alpha"), "after set");
    assert_value(s, "binary", Some(&binary), "after set");
    assert_value(s, "empty", Some(b""), "an empty value is not a missing one");
    assert_value(s, "large", Some(&large), "a 64 KiB value");
    assert_value(s, "ключ/with spaces", Some(b"unicode"), "a unicode key");
    assert_value(s, "A", None, "keys are case-sensitive");
}

fn set_overwrites<S: StableStore>(s: &S) {
    ok(s.set("k", b"first value, long"), "set(k) first");
    ok(s.set("k", b"second"), "set(k) second");
    assert_value(
        s,
        "k",
        Some(b"second"),
        "after overwriting with a shorter value",
    );
    ok(s.set("other", b"x"), "set(other)");
    assert_value(
        s,
        "k",
        Some(b"second"),
        "setting another key left this one alone",
    );
}

fn hard_state_round_trips<S: StableStore>(s: &S) {
    let a = HardState {
        term: Term(7),
        vote: Some(NodeId::new("n2")),
    };
    ok(s.save_hard_state(&a), "save_hard_state");
    assert_eq!(
        ok(s.load_hard_state(), "load_hard_state"),
        a,
        "hard state round trip"
    );
    let b = HardState {
        term: Term(8),
        vote: None,
    };
    ok(s.save_hard_state(&b), "save_hard_state, overwrite");
    assert_eq!(
        ok(s.load_hard_state(), "load_hard_state"),
        b,
        "overwritten hard state"
    );
    assert!(
        ok(s.get(HARD_STATE_KEY), "get(HARD_STATE_KEY)").is_some(),
        "save_hard_state should store under HARD_STATE_KEY"
    );
}

fn reopen_returns_the_latest_values<S: StableStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("stable-reopen");
    let hs = HardState {
        term: Term(42),
        vote: Some(NodeId::new("n3")),
    };
    {
        let s = open(dir.path());
        ok(s.set("k", b"old"), "set(k)");
        ok(s.set("k", b"new"), "set(k) again");
        ok(s.set("other", b"kept"), "set(other)");
        ok(
            s.save_hard_state(&HardState {
                term: Term(41),
                vote: None,
            }),
            "save_hard_state",
        );
        ok(s.save_hard_state(&hs), "save_hard_state again");
    }
    {
        let s = open(dir.path());
        assert_value(&s, "k", Some(b"new"), "after a restart");
        assert_value(&s, "other", Some(b"kept"), "after a restart");
        assert_value(&s, "missing", None, "after a restart");
        assert_eq!(
            ok(s.load_hard_state(), "load_hard_state"),
            hs,
            "hard state after a restart"
        );
        ok(s.set("k", b"newest"), "set(k) after a restart");
    }
    let s = open(dir.path());
    assert_value(&s, "k", Some(b"newest"), "after a second restart");
    assert_value(&s, "other", Some(b"kept"), "after a second restart");
}

fn reopen_of_an_empty_directory_is_empty<S: StableStore>(open: &mut impl FnMut(&Path) -> S) {
    let dir = temp_dir("stable-empty");
    drop(open(dir.path()));
    let s = open(dir.path());
    assert_value(&s, "k", None, "reopening a store that never held a value");
    let hs = ok(s.load_hard_state(), "load_hard_state");
    assert_eq!(
        hs,
        HardState::default(),
        "reopening a store that never held a hard state"
    );
}
