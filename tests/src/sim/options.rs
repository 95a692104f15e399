//! Every fault knob of one simulation run, derived from its seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One run's knobs. `SimOptions::from_seed` picks them, so one seed names
/// one exact run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Servers in the cluster (all voters at bootstrap).
    pub nodes: usize,
    /// Virtual time to run with faults, in microseconds.
    pub duration_us: u64,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Usual one-way delay range, in microseconds.
    pub delay_us: (u64, u64),
    /// Probability of a long delay (which reorders messages).
    pub long_delay: f64,
    /// The long delay's upper bound, in microseconds.
    pub long_delay_us: u64,
    /// Upper bound of a log write's latency, in microseconds.
    pub persist_us: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys they share.
    pub keys: usize,
    /// A client's pause between operations, in microseconds.
    pub think_us: (u64, u64),
    /// Pause between nemesis actions, in microseconds.
    pub nemesis_every_us: (u64, u64),
    /// Crash and restart servers.
    pub crashes: bool,
    /// Cut links (symmetric, asymmetric, bridges).
    pub partitions: bool,
    /// Change membership while running.
    pub membership_changes: bool,
    /// Transfer leadership while running.
    pub transfers: bool,
    /// Per-server tick length skew (parts per thousand, ±).
    pub clock_skew_permille: u64,
    /// Entries applied between snapshots.
    pub snapshot_threshold: u64,
    /// Entries kept behind a snapshot.
    pub trailing_logs: u64,
    /// Most entries per AppendEntries (1 splits every batch, which exposes
    /// states like the paper's Figure 8).
    pub max_append_entries: usize,
    /// Pipeline window per follower.
    pub max_inflight: usize,
    /// Probability that a newly elected leader crashes within 20 ms.
    pub leader_churn: f64,
    /// Probability that a leader crashes as its commit index moves, losing
    /// the messages it has just sent.
    pub crash_on_commit: f64,
    /// Walk the cluster into the paper's Figure-8 states now and then.
    pub figure8: bool,
}

impl SimOptions {
    /// The knobs of the run named by `seed`.
    pub fn from_seed(seed: u64) -> SimOptions {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_0971_0115);
        let opts = SimOptions::random(seed, &mut rng);
        // One seed in seven walks the cluster into Figure-8 states again and
        // again, and does nothing else (see `figure8.rs`).
        if rng.random_bool(0.15) {
            return SimOptions {
                nodes: 3,
                drop: 0.0,
                duplicate: 0.0,
                long_delay: 0.0,
                max_append_entries: 1,
                max_inflight: 1,
                leader_churn: 0.0,
                crash_on_commit: 0.0,
                crashes: false,
                partitions: false,
                membership_changes: false,
                transfers: false,
                figure8: true,
                nemesis_every_us: (300_000, 600_000),
                ..opts
            };
        }
        // One seed in four is a leadership storm: three servers, one entry
        // per message, leaders crashed or cut off soon after they win. It
        // reaches states like the paper's Figure 8, where an old-term entry
        // sits on a majority without an entry of the leader's own term.
        if rng.random_bool(0.25) {
            return SimOptions {
                nodes: 3,
                drop: 0.0,
                max_append_entries: 1,
                max_inflight: 1,
                leader_churn: 0.7,
                crash_on_commit: 0.05,
                crashes: true,
                partitions: true,
                nemesis_every_us: (10_000, 80_000),
                persist_us: opts.persist_us.max(1_000),
                ..opts
            };
        }
        opts
    }

    fn random(seed: u64, rng: &mut ChaCha8Rng) -> SimOptions {
        let nodes = rng.random_range(3..=5);
        SimOptions {
            seed,
            nodes,
            duration_us: rng.random_range(3_000_000..8_000_000),
            drop: [0.0, 0.01, 0.05, 0.15][rng.random_range(0..4)],
            duplicate: [0.0, 0.01, 0.05][rng.random_range(0..3)],
            delay_us: (50, rng.random_range(200..3_000)),
            long_delay: [0.0, 0.01, 0.05][rng.random_range(0..3)],
            long_delay_us: rng.random_range(5_000..60_000),
            persist_us: rng.random_range(10..3_000),
            clients: rng.random_range(2..=6),
            keys: rng.random_range(1..=6),
            think_us: (0, rng.random_range(500..20_000)),
            nemesis_every_us: (50_000, rng.random_range(100_000..1_500_000)),
            crashes: rng.random_bool(0.8),
            partitions: rng.random_bool(0.8),
            membership_changes: rng.random_bool(0.6),
            transfers: rng.random_bool(0.6),
            clock_skew_permille: rng.random_range(0..50),
            snapshot_threshold: [20, 100, 1_000][rng.random_range(0..3)],
            trailing_logs: [0, 5, 50][rng.random_range(0..3)],
            max_append_entries: [1, 2, 16, 64][rng.random_range(0..4)],
            max_inflight: [1, 4, 16][rng.random_range(0..3)],
            leader_churn: [0.0, 0.0, 0.3, 0.6][rng.random_range(0..4)],
            crash_on_commit: 0.0,
            figure8: false,
        }
    }
}
