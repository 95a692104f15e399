//! The Prometheus exporter and the HTTP request metrics.
//!
//! The library and the plug-ins emit `raft_*` through the `metrics` facade;
//! this module installs the process-wide recorder that keeps them, and axum
//! serves its text on `GET /metrics` (no listener of its own).
//!
//! [`CATALOGUE`] lists every metric with its help text (the `# HELP` line,
//! and the README's metrics table). At start the counters and histograms
//! that only move on rare events (elections, snapshot installs, transport
//! errors) are registered at zero, so a scrape shows the whole catalogue from
//! the first second; the per-peer series appear once the node has peers.

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets in seconds, 100 µs to 10 s, for every histogram
/// (`http_request_duration_seconds`, `raft_commit_duration_seconds`, ...).
pub const BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// What a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only goes up (`_total`).
    Counter,
    /// Observations in [`BUCKETS_SECONDS`].
    Histogram,
}

/// One exported metric: name, kind, labels, meaning.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Gauge, counter or histogram.
    pub kind: Kind,
    /// Its labels (empty if none).
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric a node exports: the catalogue of DESIGN.md, the HTTP
/// metrics, and the driver's extra counters.
pub const CATALOGUE: &[Metric] = &[
    m("raft_state", Kind::Gauge, &["state"], "1 for the state this server is in (Follower, Candidate, Leader, Shutdown), 0 for the others"),
    m("raft_term", Kind::Gauge, &[], "current term"),
    m("raft_commit_index", Kind::Gauge, &[], "highest log index known to be committed"),
    m("raft_applied_index", Kind::Gauge, &[], "highest log index applied to the state machine"),
    m("raft_last_log_index", Kind::Gauge, &[], "index of the last entry in the local log"),
    m("raft_last_snapshot_index", Kind::Gauge, &[], "last index covered by the latest snapshot"),
    m("raft_last_contact_seconds", Kind::Gauge, &[], "time since a follower last heard from the leader (0 on the leader)"),
    m("raft_replication_match_index", Kind::Gauge, &["peer"], "leader only: highest index known replicated on each peer (lag = raft_last_log_index - this)"),
    m("raft_replication_inflight", Kind::Gauge, &["peer"], "leader only: AppendEntries in flight to each peer"),
    m("raft_apply_total", Kind::Counter, &[], "commands applied to the state machine"),
    m("raft_elections_total", Kind::Counter, &[], "elections this server started (became candidate)"),
    m("raft_leader_changes_total", Kind::Counter, &[], "times this server saw the leader change"),
    m("raft_transport_messages_sent_total", Kind::Counter, &["kind"], "raft messages sent by the transport, by message kind"),
    m("raft_transport_bytes_sent_total", Kind::Counter, &["kind"], "bytes sent by the transport (messages or snapshot)"),
    m("raft_transport_errors_total", Kind::Counter, &["kind"], "transport errors, by kind (send, bad_magic, wrong_cluster, ...)"),
    m("raft_transport_messages_queued_total", Kind::Counter, &["kind"], "messages handed to the transport, by kind"),
    m("raft_snapshot_installs_total", Kind::Counter, &[], "snapshots received from a leader and restored"),
    m("raft_log_appended_entries_total", Kind::Counter, &[], "entries written to the local log"),
    m("raft_commit_duration_seconds", Kind::Histogram, &[], "leader only: from proposing an entry to its commit"),
    m("raft_fsm_apply_duration_seconds", Kind::Histogram, &[], "one batch applied to the state machine"),
    m("raft_log_append_duration_seconds", Kind::Histogram, &[], "one durable log write (group commit)"),
    m("raft_replication_append_entries_duration_seconds", Kind::Histogram, &["peer"], "leader only: AppendEntries round trip to each peer, the peer's durable write included"),
    m("raft_snapshot_create_duration_seconds", Kind::Histogram, &[], "taking and persisting one snapshot"),
    m("http_requests_total", Kind::Counter, &["route", "method", "status"], "HTTP requests answered, by route, method and status"),
    m("http_request_duration_seconds", Kind::Histogram, &["route"], "HTTP request latency by route"),
];

/// Metrics of DESIGN.md's catalogue that nothing emits yet.
pub const NOT_EMITTED: &[&str] = &[];

/// How often histograms are compacted.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global Prometheus recorder and returns a handle that
/// renders it. If a recorder is already installed (several nodes in one
/// process), returns a handle of a private recorder: it renders only what
/// this module records, which is better than failing.
///
/// Must be called inside a tokio runtime: it spawns the upkeep task.
pub fn install() -> PrometheusHandle {
    let builder = || {
        PrometheusBuilder::new()
            .set_buckets(BUCKETS_SECONDS)
            // The bucket list is a non-empty constant, so this cannot fail.
            .unwrap_or_else(|_| PrometheusBuilder::new())
    };
    let handle = match builder().install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics shows a private one");
            builder().build_recorder().handle()
        }
    };
    describe_and_register();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    handle
}

/// Records one HTTP request: `http_requests_total{route,method,status}` and
/// `http_request_duration_seconds{route}`.
pub fn record_request(route: &str, method: &str, status: u16, started: Instant) {
    metrics::counter!(
        "http_requests_total",
        "route" => route.to_string(),
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route.to_string())
        .record(started.elapsed().as_secs_f64());
}

/// Gives every metric its help text, and registers at zero the unlabelled
/// counters and histograms (and `raft_transport_errors_total{kind="send"}`),
/// which may otherwise stay absent for a long time.
fn describe_and_register() {
    for metric in CATALOGUE {
        match metric.kind {
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
        if !metric.labels.is_empty() {
            continue;
        }
        match metric.kind {
            Kind::Counter => metrics::counter!(metric.name).increment(0),
            Kind::Histogram => drop(metrics::histogram!(metric.name)),
            Kind::Gauge => {}
        }
    }
    metrics::counter!("raft_transport_errors_total", "kind" => "send").increment(0);
}
