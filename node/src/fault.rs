//! Fault injection for testing the assembled node under faults (the chaos
//! tests in `tests/`). Everything here is off unless the profile's `[debug]`
//! section turns it on, and every knob is warned about at start.
//!
//! ```text
//!  [debug] fault_injection = true ─▶ POST /debug/fault {"disk": "ok"|"error"|"stall", "clock_rate": 2.0}
//!        disk ─▶ Faults ─▶ FaultLog (wraps any LogStore): writes fail / block while the fault lasts
//!        clock_rate ─▶ Raft::set_clock_rate: the driver's tick timer runs faster or slower
//!  [debug] unsafe_stale_linearizable_reads ─▶ GET /kv/{key} is answered as consistency=stale
//!  [debug] unsafe_ack_before_fsync = "2s" ─▶ FaultLog acknowledges appends at once and writes
//!                                            them up to 2 s later: SIGKILL loses acknowledged entries
//! ```
//!
//! The last two are planted bugs: they exist so a test can show that the
//! chaos harness catches a node that lies to its clients.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use raftkit::{Entry, LogIndex, LogStore, Raft, StorageError, StorageResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kv::KvResponse;
use crate::profile::DebugProfile;

/// What the disk does while a fault is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFault {
    /// Writes go through.
    #[default]
    Ok,
    /// Every log write fails with an I/O error (the node stops: storage errors are fatal).
    Error,
    /// Every log write blocks until the fault is changed.
    Stall,
}

impl DiskFault {
    fn from_u8(v: u8) -> DiskFault {
        match v {
            1 => DiskFault::Error,
            2 => DiskFault::Stall,
            _ => DiskFault::Ok,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            DiskFault::Ok => 0,
            DiskFault::Error => 1,
            DiskFault::Stall => 2,
        }
    }
}

/// The faults currently set, shared by the HTTP control and the storage wrapper.
#[derive(Debug, Default)]
pub struct Faults {
    disk: AtomicU8,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Faults {
    /// No fault set.
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// The disk fault now in force.
    pub fn disk(&self) -> DiskFault {
        DiskFault::from_u8(self.disk.load(Ordering::Acquire))
    }

    /// Sets the disk fault; writers blocked by a stall re-check it.
    pub fn set_disk(&self, fault: DiskFault) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.disk.store(fault.to_u8(), Ordering::Release);
        self.changed.notify_all();
    }

    /// Called before every log write: passes, fails, or blocks while stalled.
    fn before_write(&self, op: &str) -> StorageResult<()> {
        loop {
            match self.disk() {
                DiskFault::Ok => return Ok(()),
                DiskFault::Error => {
                    return Err(StorageError::io(
                        op,
                        "the log (fault injection)",
                        std::io::Error::other("injected disk error"),
                    ))
                }
                DiskFault::Stall => {
                    let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
                    if self.disk() == DiskFault::Stall {
                        let _unused = self.changed.wait(guard);
                    }
                }
            }
        }
    }
}

/// Logs a loud warning for every `[debug]` knob that is on.
pub fn warn_enabled(knobs: &DebugProfile) {
    if knobs.fault_injection {
        tracing::warn!(
            "[debug] fault_injection = true: POST /debug/fault can fail or stall this node's \
             disk and skew its clock. FOR TESTS ONLY"
        );
    }
    if knobs.unsafe_stale_linearizable_reads {
        tracing::warn!(
            "[debug] unsafe_stale_linearizable_reads = true: linearizable reads are answered \
             from local state WITHOUT ReadIndex. THIS NODE RETURNS STALE DATA. FOR TESTS ONLY"
        );
    }
    if !knobs.unsafe_ack_before_fsync.is_zero() {
        tracing::warn!(
            delay = ?knobs.unsafe_ack_before_fsync,
            "[debug] unsafe_ack_before_fsync: log appends are acknowledged BEFORE they are \
             written; a crash LOSES ACKNOWLEDGED WRITES. FOR TESTS ONLY"
        );
    }
}

/// A [`LogStore`] wrapper: disk faults from [`Faults`] on every write, and
/// optionally the ack-before-fsync planted bug.
pub struct FaultLog<L: LogStore> {
    inner: Arc<L>,
    faults: Arc<Faults>,
    lag: Option<Arc<Lag>>,
    /// Dropping it stops the lag's flusher thread.
    _stop_flusher: Option<mpsc::Sender<()>>,
}

/// Appends acknowledged but not yet handed to the inner store.
struct Lag {
    delay: Duration,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    oldest: Option<Instant>,
}

impl<L: LogStore> FaultLog<L> {
    /// Wraps `inner`. A non-zero `ack_before_fsync` turns the planted bug on.
    pub fn new(inner: L, faults: Arc<Faults>, ack_before_fsync: Duration) -> FaultLog<L> {
        let inner = Arc::new(inner);
        if ack_before_fsync.is_zero() {
            return FaultLog {
                inner,
                faults,
                lag: None,
                _stop_flusher: None,
            };
        }
        let lag = Arc::new(Lag {
            delay: ack_before_fsync,
            pending: Mutex::new(Pending::default()),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let (weak, store) = (Arc::downgrade(&lag), inner.clone());
        let spawned = std::thread::Builder::new()
            .name("raftkit-lagging-log".into())
            .spawn(move || flusher(weak, store, stopped));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the lagging log's flusher; appends stay in memory");
        }
        FaultLog {
            inner,
            faults,
            lag: Some(lag),
            _stop_flusher: Some(stop),
        }
    }
}

/// Writes out pending entries once the oldest is `delay` old.
fn flusher<L: LogStore>(lag: Weak<Lag>, store: Arc<L>, stopped: mpsc::Receiver<()>) {
    const POLL: Duration = Duration::from_millis(20);
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
        let Some(lag) = lag.upgrade() else { return };
        let mut pending = lag.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.oldest.is_some_and(|t| t.elapsed() >= lag.delay) {
            flush(&mut pending, &*store);
        }
    }
}

fn flush<L: LogStore + ?Sized>(pending: &mut Pending, store: &L) {
    if !pending.entries.is_empty() {
        if let Err(e) = store.append(&pending.entries) {
            tracing::error!(error = %e, "lagging log: writing acknowledged entries failed");
        }
    }
    pending.entries.clear();
    pending.oldest = None;
}

fn poisoned() -> StorageError {
    StorageError::Other("lagging log: lock poisoned".into())
}

impl<L: LogStore> LogStore for FaultLog<L> {
    fn first_index(&self) -> StorageResult<LogIndex> {
        let Some(lag) = &self.lag else {
            return self.inner.first_index();
        };
        let pending = lag.pending.lock().map_err(|_| poisoned())?;
        let first = self.inner.first_index()?;
        match pending.entries.first() {
            Some(e) if first == LogIndex::ZERO => Ok(e.index),
            _ => Ok(first),
        }
    }

    fn last_index(&self) -> StorageResult<LogIndex> {
        let Some(lag) = &self.lag else {
            return self.inner.last_index();
        };
        let pending = lag.pending.lock().map_err(|_| poisoned())?;
        match pending.entries.last() {
            Some(e) => Ok(e.index),
            None => self.inner.last_index(),
        }
    }

    fn get(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Entry>> {
        let Some(lag) = &self.lag else {
            return self.inner.get(from, to);
        };
        let pending = lag.pending.lock().map_err(|_| poisoned())?;
        let Some(head) = pending.entries.first() else {
            return self.inner.get(from, to);
        };
        let mut out = if from < head.index {
            self.inner.get(from, to.min(head.index))?
        } else {
            Vec::new()
        };
        out.extend(
            pending
                .entries
                .iter()
                .filter(|e| e.index >= from && e.index < to)
                .cloned(),
        );
        Ok(out)
    }

    fn append(&self, entries: &[Entry]) -> StorageResult<()> {
        self.faults.before_write("append")?;
        let Some(lag) = &self.lag else {
            return self.inner.append(entries);
        };
        let mut pending = lag.pending.lock().map_err(|_| poisoned())?;
        if entries.is_empty() {
            return Ok(());
        }
        pending.oldest.get_or_insert_with(Instant::now);
        pending.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn truncate_suffix(&self, from: LogIndex) -> StorageResult<()> {
        self.faults.before_write("truncate_suffix")?;
        if let Some(lag) = &self.lag {
            let mut pending = lag.pending.lock().map_err(|_| poisoned())?;
            pending.entries.retain(|e| e.index < from);
            if pending.entries.is_empty() {
                pending.oldest = None;
            }
            return self.inner.truncate_suffix(from);
        }
        self.inner.truncate_suffix(from)
    }

    fn purge_prefix(&self, upto: LogIndex) -> StorageResult<()> {
        self.faults.before_write("purge_prefix")?;
        if let Some(lag) = &self.lag {
            let mut pending = lag.pending.lock().map_err(|_| poisoned())?;
            flush(&mut pending, &*self.inner);
        }
        self.inner.purge_prefix(upto)
    }

    fn is_in_memory(&self) -> bool {
        self.inner.is_in_memory()
    }
}

impl<L: LogStore> Drop for FaultLog<L> {
    fn drop(&mut self) {
        // A graceful shutdown writes what was acknowledged; only a crash loses it.
        if let Some(lag) = &self.lag {
            let mut pending = lag.pending.lock().unwrap_or_else(|p| p.into_inner());
            flush(&mut pending, &*self.inner);
        }
    }
}

/// What `/debug/fault` controls.
pub struct Control {
    /// The faults the storage wrapper obeys.
    pub faults: Arc<Faults>,
    /// The server whose clock rate is set.
    pub raft: Raft<KvResponse>,
    /// The clock rate last set.
    pub clock_rate: Mutex<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    disk: Option<DiskFault>,
    clock_rate: Option<f64>,
}

/// `GET /debug/fault` (the faults in force) and `POST /debug/fault` (set them).
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/debug/fault", get(show).post(set))
        .with_state(control)
}

fn state_json(control: &Control) -> Response {
    let rate = *control.clock_rate.lock().unwrap_or_else(|p| p.into_inner());
    Json(json!({ "disk": control.faults.disk(), "clock_rate": rate })).into_response()
}

async fn show(State(control): State<Arc<Control>>) -> Response {
    state_json(&control)
}

async fn set(State(control): State<Arc<Control>>, body: axum::body::Bytes) -> Response {
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return crate::http::error(
                StatusCode::BAD_REQUEST,
                format_args!(
                    "bad fault request: {e}; expected {{\"disk\": \"ok\"|\"error\"|\"stall\", \"clock_rate\": <0.01..=100>}}"
                ),
            )
        }
    };
    if let Some(rate) = request.clock_rate {
        if let Err(e) = control.raft.set_clock_rate(rate).await {
            return crate::http::error(StatusCode::BAD_REQUEST, e);
        }
        *control.clock_rate.lock().unwrap_or_else(|p| p.into_inner()) = rate;
    }
    if let Some(disk) = request.disk {
        tracing::warn!(?disk, "fault injection: disk fault set");
        control.faults.set_disk(disk);
    }
    state_json(&control)
}

/// The stale-read planted bug: rewrites `GET /kv/{key}` to `consistency=stale`.
pub async fn stale_reads(mut req: Request) -> Request {
    if req.method() == axum::http::Method::GET && req.uri().path().starts_with("/kv/") {
        let rewritten = format!("{}?consistency=stale", req.uri().path());
        if let Ok(uri) = rewritten.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use raftkit::{Entry, LogIndex, LogStore, Term};
    use raftkit_memory::MemLogStore;

    use super::{DiskFault, FaultLog, Faults};

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry::command(LogIndex(i), Term(1), Bytes::from(format!("e{i}"))))
            .collect()
    }

    #[test]
    fn disk_error_fails_every_write_until_cleared() {
        let faults = Faults::new();
        let log = FaultLog::new(MemLogStore::new(), faults.clone(), Duration::ZERO);
        log.append(&entries(1, 3)).unwrap();
        faults.set_disk(DiskFault::Error);
        assert!(log.append(&entries(4, 4)).is_err());
        assert!(log.truncate_suffix(LogIndex(2)).is_err());
        assert!(log.purge_prefix(LogIndex(1)).is_err());
        // Reads still work, and nothing was written.
        assert_eq!(log.last_index().unwrap(), LogIndex(3));
        faults.set_disk(DiskFault::Ok);
        log.append(&entries(4, 4)).unwrap();
        assert_eq!(log.last_index().unwrap(), LogIndex(4));
    }

    #[test]
    fn disk_stall_blocks_writes_until_cleared() {
        let faults = Faults::new();
        let log = std::sync::Arc::new(FaultLog::new(
            MemLogStore::new(),
            faults.clone(),
            Duration::ZERO,
        ));
        faults.set_disk(DiskFault::Stall);
        let (done_tx, done) = std::sync::mpsc::channel();
        let writer = log.clone();
        let thread = std::thread::spawn(move || {
            let _ = done_tx.send(writer.append(&entries(1, 2)).is_ok());
        });
        assert_eq!(
            done.recv_timeout(Duration::from_millis(300)),
            Err(RecvTimeoutError::Timeout),
            "an append went through a stalled disk"
        );
        assert_eq!(log.last_index().unwrap(), LogIndex(0));
        faults.set_disk(DiskFault::Ok);
        let ok = done
            .recv_timeout(Duration::from_secs(10))
            .expect("the stalled append did not finish after the stall was cleared");
        assert!(ok);
        thread.join().unwrap();
        assert_eq!(log.last_index().unwrap(), LogIndex(2));
    }

    #[test]
    fn ack_before_fsync_answers_at_once_and_writes_later() {
        let inner = MemLogStore::new();
        let lag = Duration::from_millis(200);
        let log = FaultLog::new(inner.clone(), Faults::new(), lag);
        log.append(&entries(1, 3)).unwrap();
        log.append(&entries(4, 5)).unwrap();
        // The wrapper answers as if written; the store behind it has nothing yet.
        assert_eq!(log.last_index().unwrap(), LogIndex(5));
        assert_eq!(log.first_index().unwrap(), LogIndex(1));
        assert_eq!(log.get(LogIndex(2), LogIndex(5)).unwrap(), entries(2, 4));
        assert_eq!(inner.last_index().unwrap(), LogIndex(0));
        // A conflicting suffix replaces pending entries.
        log.truncate_suffix(LogIndex(5)).unwrap();
        assert_eq!(log.last_index().unwrap(), LogIndex(4));
        // The flusher writes the tail out once it is `lag` old.
        let deadline = Instant::now() + Duration::from_secs(10);
        while inner.last_index().unwrap() != LogIndex(4) {
            assert!(
                Instant::now() < deadline,
                "the lagging log never wrote its tail"
            );
            std::thread::yield_now();
        }
        assert_eq!(inner.get(LogIndex(1), LogIndex(5)).unwrap(), entries(1, 4));
        // Reads that span the written part and a new pending tail.
        log.append(&entries(5, 6)).unwrap();
        assert_eq!(log.get(LogIndex(3), LogIndex(7)).unwrap(), entries(3, 6));
        // Dropping it (a graceful stop) writes what is pending.
        drop(log);
        assert_eq!(inner.last_index().unwrap(), LogIndex(6));
    }
}
