//! The Prometheus exporter and the HTTP request metrics.
//!
//! The library and the plug-ins emit `raft_*` through the `metrics` facade;
//! this module installs the process-wide recorder that keeps them, and axum
//! serves its text on `GET /metrics` (no listener of its own).

use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets in seconds, 100 µs to 10 s, for every histogram
/// (`http_request_duration_seconds`, `raft_commit_duration_seconds`, ...).
pub const BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

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
