//! What every run measures besides its operations: CPU used by this process
//! and by the rest of the machine, peak RSS, latency percentiles.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`; 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    at: Instant,
    /// user + system seconds of this process (`/proc/self/stat`).
    self_s: Option<f64>,
    /// Busy seconds of the whole machine, every CPU, without idle and
    /// iowait (`/proc/stat`).
    host_s: Option<f64>,
}

impl CpuSample {
    /// Reads the counters now.
    pub fn now() -> CpuSample {
        CpuSample {
            at: Instant::now(),
            self_s: self_cpu_seconds(),
            host_s: host_busy_seconds(),
        }
    }

    /// CPU used between `self` and `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let self_s = match (self.self_s, later.self_s) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        let other_s = match (self.host_s, later.host_s, self_s) {
            (Some(a), Some(b), Some(s)) => Some((b - a - s).max(0.0)),
            _ => None,
        };
        CpuUse {
            self_s,
            self_cores: self_s.map(|s| s / wall),
            other_cores: other_s.map(|s| s / wall),
        }
    }
}

/// CPU used over an interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// CPU seconds this process used.
    pub self_s: Option<f64>,
    /// Cores this process used on average (2.0 = two cores busy).
    pub self_cores: Option<f64>,
    /// Cores the rest of the machine used meanwhile: the noise indicator.
    pub other_cores: Option<f64>,
}

/// user + system CPU seconds of this process, from `/proc/self/stat`.
fn self_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_self_stat(&stat)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/PID/stat` line, in seconds.
fn parse_self_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14 → index 11.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Busy seconds of every CPU together, from the first line of `/proc/stat`.
fn host_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&stat)
}

fn parse_proc_stat(stat: &str) -> Option<f64> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut busy = 0.0;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // idle and iowait are not busy; guest time is already in user/nice.
    for (i, v) in fields.take(8).enumerate() {
        if i == 3 || i == 4 {
            continue;
        }
        busy += v.parse::<f64>().ok()?;
    }
    Some(busy / USER_HZ)
}

/// Forgets the process's peak RSS so the next reading covers one run only
/// (Linux ≥ 4.0; silently does nothing elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set size in MiB (`VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The current resident set size in MiB (`VmRSS`) of a process: `"self"`
/// or a pid.
pub fn rss_mib(process: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The disk space the files under `path` take (allocated blocks, so
/// sparse and preallocated files count what they really use), in MiB.
/// Files that vanish while being counted are skipped.
pub fn disk_mib(path: &std::path::Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(items) = std::fs::read_dir(&dir) else {
            continue;
        };
        for item in items.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if meta.is_dir() {
                stack.push(item.path());
            } else {
                bytes += meta.blocks() * 512;
            }
        }
    }
    bytes as f64 / (1024.0 * 1024.0)
}

/// A latency histogram in nanoseconds: 1 µs to 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("constant histogram bounds")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(ns.clamp(h.low(), h.high()));
}

/// Percentiles of a histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of nanoseconds (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| round1(ns as f64 / 1e3);
        LatencySummary {
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: round1(h.mean() / 1e3),
        }
    }
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to two decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_stat_fields_with_spaces_in_the_name() {
        let line = "4242 (raft kit) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 200 300";
        assert_eq!(parse_self_stat(line), Some(3.0));
        assert_eq!(parse_self_stat("garbage"), None);
    }

    #[test]
    fn proc_stat_skips_idle_and_iowait() {
        let stat = "cpu  100 0 50 9000 70 10 5 0 30 0\ncpu0 1 2 3\n";
        assert_eq!(parse_proc_stat(stat), Some(1.65));
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
    }

    #[test]
    fn live_counters_read_on_linux() {
        let a = CpuSample::now();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = a.until(&CpuSample::now());
        assert!(used.self_s.is_some(), "/proc/self/stat unreadable");
        assert!(used.other_cores.is_some(), "/proc/stat unreadable");
        assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
    }

    #[test]
    fn summary_of_known_latencies() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let s = LatencySummary::of(&h);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
        // Out-of-range values are clamped, not dropped.
        record(&mut h, Duration::from_nanos(1));
        assert_eq!(h.len(), 1001);
    }
}
