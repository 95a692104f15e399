//! The applier: applies committed entries in batches, answers the callers
//! waiting on them, restores snapshots, and takes snapshots. It runs on a
//! thread of its own, or in the driver's task when
//! [`Config::fsm_on_runtime`](crate::Config::fsm_on_runtime) says so.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use crate::fsm::{Committed, Fsm};
use crate::storage::{SnapshotMeta, SnapshotPoint, SnapshotStore};
use crate::types::{Configuration, Entry, EntryPayload, LogIndex, Term};

use super::runner::Internal;
use super::RaftError;

/// Who waits for an entry to be applied.
pub(crate) enum Responder<R> {
    /// `apply`: the FSM's response.
    Apply(oneshot::Sender<Result<(LogIndex, R), RaftError>>),
    /// Barrier and configuration changes: the index.
    Index(oneshot::Sender<Result<LogIndex, RaftError>>),
}

impl<R> Responder<R> {
    pub(crate) fn fail(self, e: RaftError) {
        match self {
            Responder::Apply(tx) => {
                let _ = tx.send(Err(e));
            }
            Responder::Index(tx) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}

pub(crate) enum ApplyMsg<R> {
    Entries {
        entries: Vec<Entry>,
        responders: Vec<(LogIndex, Responder<R>)>,
    },
    Restore(SnapshotMeta),
    Snapshot,
}

pub(crate) struct Applier<F> {
    pub(crate) fsm: F,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) done: UnboundedSender<Internal>,
    pub(crate) applied: (LogIndex, Term),
    pub(crate) configuration: (LogIndex, Configuration),
    pub(crate) max_batch: usize,
}

/// Where the driver hands the applier its work.
pub(crate) enum ToFsm<R> {
    /// A thread of its own, behind a channel.
    Thread(UnboundedSender<ApplyMsg<R>>),
    /// The driver's own task: applied in place, answered at once.
    Inline(Box<dyn InlineApplier<R>>),
}

/// An applier the driver calls directly.
pub(crate) trait InlineApplier<R>: Send {
    /// Carries out `msg`; what the driver learns from it, as the thread
    /// would send it.
    fn handle(&mut self, msg: ApplyMsg<R>) -> Internal;
}

impl<F: Fsm> InlineApplier<F::Response> for Applier<F> {
    fn handle(&mut self, msg: ApplyMsg<F::Response>) -> Internal {
        Applier::handle(self, msg)
    }
}

/// The applier's thread, if it has one; the driver waits for it when it stops.
pub(crate) struct ApplyWorker(Option<std::thread::JoinHandle<()>>);

impl ApplyWorker {
    /// Starts `applier` on a thread of its own, or hands it to the driver
    /// to call in place.
    pub(crate) fn start<F: Fsm>(
        applier: Applier<F>,
        in_driver: bool,
        name: String,
    ) -> std::io::Result<(ApplyWorker, ToFsm<F::Response>)> {
        if in_driver {
            return Ok((ApplyWorker(None), ToFsm::Inline(Box::new(applier))));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || applier.run_thread(rx))
            .map(|t| (ApplyWorker(Some(t)), ToFsm::Thread(tx)))
    }

    /// Waits until the applier has handled everything sent to it before its
    /// channel closed.
    pub(crate) async fn join(self) {
        if let Some(t) = self.0 {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl<F: Fsm> Applier<F> {
    fn run_thread(mut self, mut rx: UnboundedReceiver<ApplyMsg<F::Response>>) {
        while let Some(msg) = rx.blocking_recv() {
            let done = self.handle(msg);
            let failed = matches!(done, Internal::FsmFailed(_));
            if self.done.send(done).is_err() || failed {
                return;
            }
        }
    }

    /// Carries out one message: `Applied` with the index applied so far, or
    /// `FsmFailed`, which stops the node.
    fn handle(&mut self, msg: ApplyMsg<F::Response>) -> Internal {
        let result = match msg {
            ApplyMsg::Entries {
                entries,
                responders,
            } => {
                self.apply(entries, responders);
                Ok(())
            }
            ApplyMsg::Restore(meta) => self.restore(meta),
            ApplyMsg::Snapshot => {
                self.snapshot();
                Ok(())
            }
        };
        match result {
            Ok(()) => Internal::Applied(self.applied.0),
            Err(e) => {
                tracing::error!(error = %e, "state machine failed; the node stops");
                Internal::FsmFailed(e)
            }
        }
    }

    fn apply(
        &mut self,
        entries: Vec<Entry>,
        mut responders: Vec<(LogIndex, Responder<F::Response>)>,
    ) {
        let mut batch: Vec<Committed> = Vec::with_capacity(entries.len().min(self.max_batch));
        responders.reverse();
        for e in entries {
            match e.payload {
                EntryPayload::Command(data) => {
                    batch.push(Committed {
                        index: e.index,
                        term: e.term,
                        data,
                    });
                    if batch.len() >= self.max_batch {
                        self.apply_batch(&mut batch, &mut responders);
                    }
                }
                EntryPayload::Configuration(c) => {
                    self.apply_batch(&mut batch, &mut responders);
                    self.configuration = (e.index, c);
                }
                EntryPayload::Blank => self.apply_batch(&mut batch, &mut responders),
            }
            self.applied = (e.index, e.term);
            // Barriers and configuration changes answer once applied.
            while responders
                .last()
                .is_some_and(|(i, _)| *i <= e.index && batch.iter().all(|c| c.index != *i))
            {
                let Some((i, r)) = responders.pop() else {
                    break;
                };
                match r {
                    Responder::Index(tx) => {
                        let _ = tx.send(Ok(i));
                    }
                    Responder::Apply(tx) => {
                        let _ = tx.send(Err(RaftError::Invalid(format!(
                            "entry {i} was not a command"
                        ))));
                    }
                }
            }
        }
        self.apply_batch(&mut batch, &mut responders);
    }

    fn apply_batch(
        &mut self,
        batch: &mut Vec<Committed>,
        responders: &mut Vec<(LogIndex, Responder<F::Response>)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let results = self.fsm.apply(batch);
        metrics::histogram!("raft_fsm_apply_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("raft_apply_total").increment(batch.len() as u64);
        if results.len() != batch.len() {
            tracing::error!(
                got = results.len(),
                want = batch.len(),
                "Fsm::apply broke its contract: one response per command"
            );
        }
        for (c, r) in batch.iter().zip(results) {
            while responders.last().is_some_and(|(i, _)| *i < c.index) {
                if let Some((i, resp)) = responders.pop() {
                    resp.fail(RaftError::Invalid(format!(
                        "entry {i} not found in its batch"
                    )));
                }
            }
            if responders.last().is_some_and(|(i, _)| *i == c.index) {
                if let Some((i, resp)) = responders.pop() {
                    match resp {
                        Responder::Apply(tx) => {
                            let _ = tx.send(Ok((i, r)));
                        }
                        Responder::Index(tx) => {
                            let _ = tx.send(Ok(i));
                        }
                    }
                }
            }
        }
        batch.clear();
    }

    fn restore(&mut self, meta: SnapshotMeta) -> Result<(), String> {
        let (stored, mut reader) = self
            .snapshots
            .open(&meta.id)
            .map_err(|e| format!("opening snapshot {}: {e}", meta.id))?;
        self.fsm
            .restore(&mut reader)
            .map_err(|e| format!("restoring snapshot {}: {e}", meta.id))?;
        self.applied = (stored.index, stored.term);
        self.configuration = (stored.configuration_index, stored.configuration);
        metrics::counter!("raft_snapshot_installs_total").increment(1);
        Ok(())
    }

    fn snapshot(&mut self) {
        let (index, term) = self.applied;
        if index == LogIndex::ZERO {
            let _ = self
                .done
                .send(Internal::SnapshotCreated(Err("nothing applied yet".into())));
            return;
        }
        let started = Instant::now();
        let snap = match self.fsm.snapshot() {
            Ok(s) => s,
            Err(e) => {
                let _ = self.done.send(Internal::SnapshotCreated(Err(format!(
                    "Fsm::snapshot: {e}"
                ))));
                return;
            }
        };
        let point = SnapshotPoint {
            index,
            term,
            configuration: self.configuration.1.clone(),
            configuration_index: self.configuration.0,
        };
        let store = self.snapshots.clone();
        let done = self.done.clone();
        // Writing happens beside apply, which goes on.
        std::thread::spawn(move || {
            let result = (|| {
                let mut sink = store
                    .create(point)
                    .map_err(|e| format!("creating snapshot: {e}"))?;
                if let Err(e) = snap.persist(&mut sink) {
                    let _ = sink.cancel();
                    return Err(format!("writing snapshot: {e}"));
                }
                sink.finish()
                    .map_err(|e| format!("finishing snapshot: {e}"))
            })();
            metrics::histogram!("raft_snapshot_create_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            let _ = done.send(Internal::SnapshotCreated(result));
        });
    }
}
