//! Deterministic simulation of whole clusters under faults.
//!
//! `cargo test --release -p raftkit-tests --test simulation`
//!
//! Environment: `RAFTKIT_SIM_SEEDS` (how many seeds, default 300),
//! `RAFTKIT_SIM_SEED_START` (the first seed, default 1), `RAFTKIT_SIM_TRACE=1`
//! (print the full trace of every seed: use it with one seed to replay a failure).

use raftkit_tests::sim::{self, SimOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn simulation() {
    let seeds = env_u64("RAFTKIT_SIM_SEEDS", 300);
    let start = env_u64("RAFTKIT_SIM_SEED_START", 1);
    let full_trace = std::env::var("RAFTKIT_SIM_TRACE").is_ok_and(|v| v == "1");
    let (mut ops, mut ok_ops, mut faults, mut violations) = (0, 0, 0, 0);
    let mut inconclusive = Vec::new();
    for seed in start..start + seeds {
        let opts = SimOptions::from_seed(seed);
        let report = sim::run(&opts, full_trace);
        ops += report.ops;
        ok_ops += report.ok_ops;
        faults += report.faults;
        if report.inconclusive_keys > 0 {
            inconclusive.push((seed, report.inconclusive_keys));
        }
        if full_trace {
            for line in &report.trace {
                println!("{line}");
            }
        }
        if !report.violations.is_empty() {
            violations += report.violations.len();
            eprintln!("--- seed {seed} failed: {opts:?}");
            if !full_trace {
                eprintln!("--- last {} trace lines:", report.trace.len());
                for line in &report.trace {
                    eprintln!("{line}");
                }
            }
            let path = std::env::temp_dir().join(format!("raftkit-sim-{seed}.history"));
            let saved = std::fs::write(&path, &report.history).is_ok();
            for v in &report.violations {
                eprintln!("VIOLATION seed {seed}: {v}");
            }
            if saved {
                eprintln!("history written to {}", path.display());
            }
            eprintln!(
                "replay: RAFTKIT_SIM_SEED_START={seed} RAFTKIT_SIM_SEEDS=1 RAFTKIT_SIM_TRACE=1 \
                 cargo test --release -p raftkit-tests --test simulation -- --nocapture"
            );
            break;
        }
    }
    println!("client ops that succeeded: {ok_ops} of {ops}");
    if !inconclusive.is_empty() {
        println!(
            "linearizability undecided within the search budget (seed, keys): {inconclusive:?}"
        );
    }
    println!(
        "simulation: {seeds} seeds, {ops} client ops, {faults} faults, {violations} violations"
    );
    assert_eq!(
        violations, 0,
        "the simulation found violations; see the replay line above"
    );
}
