//! The faults a run injects, one at a time, on a seeded schedule.
//!
//! ```text
//!  quiet 2-5 s ─▶ pick a fault ─▶ inject ─▶ hold ─▶ heal ─▶ quiet ─▶ ...
//!  kill           SIGKILL a random node or the leader; restart it 2-5 s later
//!  kill-majority  SIGSTOP a minority, let the majority commit, SIGKILL the whole
//!                 majority at once, restart it, then SIGCONT the minority: the
//!                 acknowledged tail now lives only on disks that were just killed
//!  pause          SIGSTOP a random node or the leader, SIGCONT 3-7 s later
//!  partition      majority/minority, isolate the leader, bridge (one node sees
//!                 both halves), asymmetric (one node's packets to the rest dropped,
//!                 or the rest's to it); network namespaces only
//!  clock          a node's timers run 0.25x-4x real time (POST /debug/fault)
//!  disk           a node's log writes stall, or fail (the node stops on a storage
//!                 error and is restarted at heal)
//! ```

use std::fmt;
use std::str::FromStr;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL one node, restart later.
    Kill,
    /// Pause a minority, SIGKILL the majority, restart it, resume the minority.
    KillMajority,
    /// SIGSTOP / SIGCONT.
    Pause,
    /// Cut links between namespaces.
    Partition,
    /// Timers run fast or slow.
    Clock,
    /// Log writes stall or fail.
    Disk,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 6] = [
        Fault::Kill,
        Fault::KillMajority,
        Fault::Pause,
        Fault::Partition,
        Fault::Clock,
        Fault::Disk,
    ];

    /// Its name in reports and in `CHAOS_NEMESES`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillMajority => "kill-majority",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Clock => "clock",
            Fault::Disk => "disk",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown nemesis {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Parses a comma-separated list of faults (`all` = every one).
pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
    if s.trim() == "all" {
        return Ok(Fault::ALL.to_vec());
    }
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Fault::from_str)
        .collect()
}

/// The partition shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A random minority cut off from the majority.
    MajorityMinority,
    /// The leader alone on one side.
    IsolateLeader,
    /// Two halves that cannot talk; one node talks to both.
    Bridge,
    /// One direction only between one node and the rest.
    Asymmetric,
}

impl Shape {
    /// Its name in event details.
    pub fn name(self) -> &'static str {
        match self {
            Shape::MajorityMinority => "majority-minority",
            Shape::IsolateLeader => "isolate-leader",
            Shape::Bridge => "bridge",
            Shape::Asymmetric => "asymmetric",
        }
    }

    /// Whether a connected majority exists throughout, so writes must go on.
    pub fn keeps_a_majority(self) -> bool {
        matches!(self, Shape::MajorityMinority | Shape::IsolateLeader)
    }
}

/// Both directions of every link between `a` and `b`.
pub fn cut_between(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for &x in a {
        for &y in b {
            pairs.push((x, y));
            pairs.push((y, x));
        }
    }
    pairs
}

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct Event {
    /// Which fault.
    pub fault: Fault,
    /// What exactly (targets, shape, rate).
    pub detail: String,
    /// Nanoseconds since the run started when it was injected.
    pub start: u64,
    /// When it was healed.
    pub heal: u64,
    /// For partitions: whether a connected majority existed throughout.
    pub majority_side: bool,
}
