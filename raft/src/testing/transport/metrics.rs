//! Reading `raft_transport_errors_total{kind}` in a test: a `metrics`
//! recorder that keeps that counter by its `kind` label, installed as the
//! process's global recorder on first use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use crate::transport::errors::{ErrorKind, ERRORS_METRIC};

/// A recorder that keeps `raft_transport_errors_total` by `kind` label.
#[derive(Debug, Default)]
struct ErrorRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Recorder for ErrorRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != ERRORS_METRIC {
            return Counter::noop();
        }
        let kind = key
            .labels()
            .find(|l| l.key() == "kind")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        Counter::from_arc(counters.entry(kind).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process-wide `raft_transport_errors_total{kind}` so far. Tests run
/// in parallel, so compare against a value read before, never expect an
/// exact count.
///
/// # Panics
/// On first use, if another global `metrics` recorder is installed.
pub fn error_metric(kind: ErrorKind) -> u64 {
    static RECORDER: OnceLock<&'static ErrorRecorder> = OnceLock::new();
    let recorder = RECORDER.get_or_init(|| {
        let recorder: &'static ErrorRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        recorder
    });
    let counters = recorder.counters.lock().unwrap_or_else(|e| e.into_inner());
    counters
        .get(kind.as_str())
        .map_or(0, |c| c.load(Ordering::Relaxed))
}
