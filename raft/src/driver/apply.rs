//! The applier: applies committed entries in batches, answers the callers
//! waiting on them, restores snapshots, and takes snapshots. It runs on a
//! thread of its own, or as a task on the runtime when
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

/// Where the applier runs; the driver waits for it when it stops.
pub(crate) enum ApplyWorker {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl ApplyWorker {
    /// Starts `applier` on a thread of its own, or as a task on the runtime.
    pub(crate) fn start<F: Fsm>(
        applier: Applier<F>,
        rx: UnboundedReceiver<ApplyMsg<F::Response>>,
        on_runtime: bool,
        name: String,
    ) -> std::io::Result<ApplyWorker> {
        if on_runtime {
            return Ok(ApplyWorker::Task(tokio::spawn(applier.run_task(rx))));
        }
        std::thread::Builder::new()
            .name(name)
            .spawn(move || applier.run_thread(rx))
            .map(ApplyWorker::Thread)
    }

    /// Waits until the applier has handled everything sent to it before its
    /// channel closed.
    pub(crate) async fn join(self) {
        match self {
            ApplyWorker::Thread(t) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            ApplyWorker::Task(t) => {
                let _ = t.await;
            }
        }
    }
}

impl<F: Fsm> Applier<F> {
    fn run_thread(mut self, mut rx: UnboundedReceiver<ApplyMsg<F::Response>>) {
        while let Some(msg) = rx.blocking_recv() {
            if !self.handle(msg) {
                return;
            }
        }
    }

    async fn run_task(mut self, mut rx: UnboundedReceiver<ApplyMsg<F::Response>>) {
        while let Some(msg) = rx.recv().await {
            if !self.handle(msg) {
                return;
            }
        }
    }

    /// Carries out one message; false once the applier must stop.
    fn handle(&mut self, msg: ApplyMsg<F::Response>) -> bool {
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
        if let Err(e) = result {
            tracing::error!(error = %e, "state machine failed; the node stops");
            let _ = self.done.send(Internal::FsmFailed(e));
            return false;
        }
        self.done.send(Internal::Applied(self.applied.0)).is_ok()
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
