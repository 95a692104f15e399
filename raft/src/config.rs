//! The library's configuration: HashiCorp Raft's knobs, typed.
//!
//! Build a [`Config`], then [`Config::validate`] it into a [`ValidConfig`],
//! the only form the core and driver accept. Validation never fills in or
//! rewrites a value: a bad field is an error that names it.

use std::time::Duration;

/// Raft's tunables. `Config::default()` gives HashiCorp Raft's defaults
/// where it has one, with the reason beside each.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// This server's id (HashiCorp's `LocalID`). No default: it must be set.
    pub local_id: crate::types::NodeId,
    /// How long a follower waits without hearing from a leader before it
    /// starts an election (randomized in `[t, 2t)`). The leader sends
    /// heartbeats every `heartbeat_timeout / 10`, which is also the core's tick.
    /// Default 1 s (HashiCorp's): survives GC-free but busy 2-core boxes;
    /// a LAN cluster can go to 100 ms for faster failover.
    pub heartbeat_timeout: Duration,
    /// How long a candidate waits for votes before starting over
    /// (randomized in `[t, 2t)`). Default 1 s (HashiCorp's).
    pub election_timeout: Duration,
    /// How long a leader stays leader without hearing from a quorum
    /// (check-quorum); also the length of its read lease. Must not exceed
    /// `heartbeat_timeout`, since followers promise not to elect another
    /// leader for that long after hearing from this one. Default 500 ms (HashiCorp's).
    pub leader_lease_timeout: Duration,
    /// How long the leader may wait before telling followers of a new
    /// commit index when nothing else is sent (HashiCorp's `CommitTimeout`).
    /// A new commit index rides on the next AppendEntries, which under load
    /// follows within microseconds; sending it on its own after every commit
    /// would double the messages a lone client causes. When the leader falls
    /// quiet, followers (and what stale reads on them see) learn of the last
    /// commits within this time or the next heartbeat, whichever comes
    /// first. Default 50 ms (HashiCorp's).
    pub commit_timeout: Duration,
    /// Most entries in one AppendEntries message. Default 512: at 256-byte
    /// commands that is 140 KiB per message, enough to amortize a round trip
    /// at 100k ops/s without delaying heartbeats.
    pub max_append_entries: usize,
    /// Most payload bytes in one AppendEntries message (at least one entry is
    /// always sent). Default 1 MiB.
    pub max_append_bytes: usize,
    /// Most AppendEntries messages in flight to one peer (the pipeline
    /// window). Default 64: with a 100 µs round trip and 512-entry messages
    /// that caps a peer at ~300M entries/s, far above need, while bounding
    /// memory at 64 MiB per peer.
    pub max_inflight: usize,
    /// Most commands handed to the FSM in one `apply` call. Default 1024.
    pub max_apply_batch: usize,
    /// Most proposals waiting to be appended; further `apply` calls wait.
    /// Default 16384.
    pub max_pending_proposals: usize,
    /// Log entries kept after a snapshot, so that slightly lagging followers
    /// catch up from the log rather than by snapshot. Default 10240 (HashiCorp's).
    pub trailing_logs: u64,
    /// How often to check whether a snapshot is due. Default 120 s (HashiCorp's).
    pub snapshot_interval: Duration,
    /// Applied entries since the last snapshot that make one due. Default 8192 (HashiCorp's).
    pub snapshot_threshold: u64,
    /// Bytes per InstallSnapshot chunk. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Run a pre-vote round before a real election (§9.6 of Ongaro's thesis),
    /// so a partitioned node rejoining cannot depose a healthy leader. Default true.
    pub pre_vote: bool,
    /// Shut the node down when a configuration change removes it. Default true (HashiCorp's).
    pub shutdown_on_remove: bool,
    /// Run the FSM (`apply`, `restore`, `snapshot`) on the Tokio runtime, in
    /// the driver's own task, instead of on a thread of its own. That saves
    /// the hand-offs to the FSM and back for every applied batch, which is
    /// most of the cost of a small command; only for state machines whose
    /// calls are quick and never block (an in-memory map, not one that
    /// writes to disk), since the driver sends and answers nothing while
    /// the FSM runs. `FsmSnapshot::persist` still runs on a thread of its
    /// own. Default false.
    ///
    /// Wherever it runs, a follower's FSM gets committed entries in batches
    /// held back for up to a millisecond (or 256 entries): only the leader
    /// answers callers from its FSM, and waking a follower's FSM for every
    /// commit round costs more than applying.
    pub fsm_on_runtime: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            local_id: crate::types::NodeId::new(""),
            heartbeat_timeout: Duration::from_millis(1000),
            election_timeout: Duration::from_millis(1000),
            leader_lease_timeout: Duration::from_millis(500),
            commit_timeout: Duration::from_millis(50),
            max_append_entries: 512,
            max_append_bytes: 1 << 20,
            max_inflight: 64,
            max_apply_batch: 1024,
            max_pending_proposals: 16384,
            trailing_logs: 10240,
            snapshot_interval: Duration::from_secs(120),
            snapshot_threshold: 8192,
            snapshot_chunk_bytes: 1 << 20,
            pre_vote: true,
            shutdown_on_remove: true,
            fsm_on_runtime: false,
        }
    }
}

/// A field of [`Config`] that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid raft config: {field}: {reason}")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

impl Config {
    /// Checks every field and converts the durations into ticks.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = raftkit::Config { local_id: "n1".into(), heartbeat_timeout: Duration::from_millis(100),
    ///     election_timeout: Duration::from_millis(100),
    ///     leader_lease_timeout: Duration::from_millis(50), ..Default::default() };
    /// let valid = cfg.validate().unwrap();
    /// assert_eq!(valid.tick_interval(), Duration::from_millis(10));
    ///
    /// let bad = raftkit::Config { local_id: "n1".into(), max_inflight: 0, ..Default::default() };
    /// assert_eq!(bad.validate().unwrap_err().field, "max_inflight");
    /// ```
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        if self.local_id.as_str().is_empty() {
            return Err(invalid("local_id", "must be set to this server's id"));
        }
        if self.heartbeat_timeout < Duration::from_millis(5) {
            return Err(invalid("heartbeat_timeout", "must be at least 5ms"));
        }
        let tick = self.heartbeat_timeout / 10;
        let ticks = |d: Duration| (d.as_nanos() / tick.as_nanos()) as u64;
        if self.election_timeout < self.heartbeat_timeout / 2 {
            return Err(invalid(
                "election_timeout",
                format!(
                    "{:?} is shorter than half the heartbeat_timeout ({:?})",
                    self.election_timeout, self.heartbeat_timeout
                ),
            ));
        }
        if self.leader_lease_timeout > self.heartbeat_timeout {
            return Err(invalid(
                "leader_lease_timeout",
                format!(
                    "{:?} exceeds heartbeat_timeout {:?}; a lease longer than followers' \
                     election timeout would allow two leaders to serve reads",
                    self.leader_lease_timeout, self.heartbeat_timeout
                ),
            ));
        }
        if ticks(self.leader_lease_timeout) < 3 {
            return Err(invalid(
                "leader_lease_timeout",
                format!(
                    "{:?} is under 3 heartbeats ({:?} each); it must outlast a few heartbeats",
                    self.leader_lease_timeout, tick
                ),
            ));
        }
        let positive = [
            ("max_append_entries", self.max_append_entries),
            ("max_append_bytes", self.max_append_bytes),
            ("max_inflight", self.max_inflight),
            ("max_apply_batch", self.max_apply_batch),
            ("max_pending_proposals", self.max_pending_proposals),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if self.snapshot_threshold == 0 {
            return Err(invalid("snapshot_threshold", "must be at least 1"));
        }
        if self.commit_timeout.is_zero() {
            return Err(invalid("commit_timeout", "must be positive"));
        }
        if self.snapshot_interval < tick {
            return Err(invalid(
                "snapshot_interval",
                format!("must be at least one tick ({tick:?})"),
            ));
        }
        Ok(ValidConfig {
            tick,
            election_ticks: ticks(self.heartbeat_timeout),
            candidate_ticks: ticks(self.election_timeout).max(1),
            // One tick of margin for clock drift between leader and followers.
            lease_ticks: ticks(self.leader_lease_timeout) - 1,
            check_quorum_ticks: ticks(self.leader_lease_timeout),
            heartbeat_ticks: 1,
            snapshot_interval_ticks: ticks(self.snapshot_interval).max(1),
            config: self,
        })
    }
}

/// A [`Config`] that passed validation, with its durations in ticks.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidConfig {
    config: Config,
    tick: Duration,
    pub(crate) election_ticks: u64,
    pub(crate) candidate_ticks: u64,
    pub(crate) lease_ticks: u64,
    pub(crate) check_quorum_ticks: u64,
    pub(crate) heartbeat_ticks: u64,
    pub(crate) snapshot_interval_ticks: u64,
}

impl ValidConfig {
    /// The wall-clock length of one core tick (`heartbeat_timeout / 10`).
    pub fn tick_interval(&self) -> Duration {
        self.tick
    }

    /// The validated settings.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}
