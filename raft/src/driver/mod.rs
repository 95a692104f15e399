//! The async driver and the public API, with HashiCorp Raft's names.
//!
//! One tokio task owns the [`Core`](crate::core::Core) and carries out what it
//! asks; nothing else touches it. Callers talk to that task through a
//! bounded channel and get answers on oneshot channels:
//!
//! ```text
//!  Raft::apply ──Api──▶ driver task ──Ready──┬─▶ transport.send        (leader appends, now)
//!  transport ──Inbound─▶   (owns Core)       ├─▶ I/O thread: hard state, log append (group commit),
//!  ticker ──tick──────▶                      │     then follower acks ──▶ transport
//!       ◀──IoDone / ApplyDone / snapshots────┤
//!                                            └─▶ FSM thread: apply batches, answer callers
//! ```
//!
//! Log writes of the leader run in parallel with replication, every
//! proposal waiting goes into one append (one fsync), AppendEntries carry
//! many entries with a window of them in flight, and the FSM applies
//! batches on its own thread.

mod alarm;
mod append_timer;
mod apply;
mod error;
mod io;
mod runner;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::core::{ConfChange, Event, RaftState, Status};
use crate::fsm::Fsm;
use crate::storage::{LogStore, SnapshotMeta, SnapshotStore, StableStore};
use crate::transport::Transport;
use crate::types::{Configuration, LogIndex, NodeId, ServerAddress};

pub use error::RaftError;

/// A running Raft server (HashiCorp's `*Raft`). Cheap to clone: clones
/// share the server.
pub struct Raft<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Raft<R> {
    fn clone(&self) -> Self {
        Raft {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<R> {
    api: mpsc::Sender<Api<R>>,
    observed: watch::Receiver<Observed>,
    events: broadcast::Sender<Event>,
    tick: Duration,
    stop: watch::Sender<bool>,
    done: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What `leader()` and `state()` read without a round trip to the driver.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    state: RaftState,
    leader: Option<(NodeId, ServerAddress)>,
}

type Reply<T> = oneshot::Sender<Result<T, RaftError>>;

/// Requests from the API to the driver task.
pub(crate) enum Api<R> {
    Apply {
        data: Bytes,
        reply: Reply<(LogIndex, R)>,
    },
    Barrier {
        reply: Reply<LogIndex>,
    },
    ChangeConfig {
        change: ConfChange,
        prev_index: LogIndex,
        reply: Reply<LogIndex>,
    },
    Bootstrap {
        configuration: Configuration,
        reply: Reply<()>,
    },
    ReadIndex {
        lease: bool,
        wait_applied: bool,
        reply: Reply<LogIndex>,
    },
    Snapshot {
        reply: Reply<SnapshotMeta>,
    },
    Transfer {
        target: Option<NodeId>,
        reply: Reply<NodeId>,
    },
    Configuration {
        reply: Reply<(LogIndex, Configuration)>,
    },
    Stats {
        reply: Reply<Stats>,
    },
    ClockRate {
        rate: f64,
    },
}

/// A typed view of the server's state (HashiCorp's `Stats()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The core's status: role, term, indexes, configuration, peers.
    pub status: Status,
    /// Time since the leader was last heard from (zero on the leader).
    pub last_contact: Duration,
    /// Commands waiting to commit.
    pub pending_proposals: usize,
}

impl Stats {
    /// The same facts as HashiCorp's string map (`state`, `term`,
    /// `last_log_index`, `commit_index`, `applied_index`, `num_peers`, ...).
    pub fn to_map(&self) -> std::collections::BTreeMap<&'static str, String> {
        let s = &self.status;
        let peers = s.configuration.voters().filter(|v| **v != s.id).count();
        [
            ("state", s.state.to_string()),
            ("term", s.term.to_string()),
            ("last_log_index", s.last_log_index.to_string()),
            ("last_log_term", s.last_log_term.to_string()),
            ("commit_index", s.commit_index.to_string()),
            ("applied_index", s.applied_index.to_string()),
            ("last_snapshot_index", s.last_snapshot_index.to_string()),
            ("last_snapshot_term", s.last_snapshot_term.to_string()),
            (
                "latest_configuration_index",
                s.configuration_index.to_string(),
            ),
            ("num_peers", peers.to_string()),
            ("last_contact", format!("{:?}", self.last_contact)),
            ("fsm_pending", self.pending_proposals.to_string()),
        ]
        .into_iter()
        .collect()
    }
}

impl<R: Send + 'static> Raft<R> {
    /// Starts a server (HashiCorp's `NewRaft`): loads its state from the
    /// stores, restores the FSM from the newest snapshot, and starts the
    /// driver. A server with empty stores waits to be bootstrapped or added
    /// by a leader.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn new<F, L, S, P, T>(
        config: Config,
        fsm: F,
        log_store: L,
        stable_store: S,
        snapshot_store: P,
        transport: T,
    ) -> Result<Raft<R>, RaftError>
    where
        F: Fsm<Response = R>,
        L: LogStore,
        S: StableStore,
        P: SnapshotStore,
        T: Transport,
    {
        let config = config.validate()?;
        let tick = config.tick_interval();
        let (api_tx, api_rx) = mpsc::channel(config.max_pending_proposals);
        let (events, _) = broadcast::channel(1024);
        let (observed_tx, observed) = watch::channel(Observed {
            state: RaftState::Follower,
            leader: None,
        });
        let (stop, stop_rx) = watch::channel(false);
        let handle = runner::start(
            config,
            fsm,
            Arc::new(log_store),
            Arc::new(stable_store),
            Arc::new(snapshot_store),
            Arc::new(transport),
            api_rx,
            events.clone(),
            observed_tx,
            stop_rx,
        )
        .await?;
        Ok(Raft {
            inner: Arc::new(Inner {
                api: api_tx,
                observed,
                events,
                tick,
                stop,
                done: tokio::sync::Mutex::new(Some(handle)),
            }),
        })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Api<R>,
        timeout: Option<Duration>,
    ) -> Result<T, RaftError> {
        let (tx, rx) = oneshot::channel();
        let fut = async {
            self.inner
                .api
                .send(make(tx))
                .await
                .map_err(|_| RaftError::Shutdown)?;
            rx.await.map_err(|_| RaftError::Shutdown)?
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| RaftError::Timeout)?,
            None => fut.await,
        }
    }

    /// Writes the first configuration on a server with no state
    /// (HashiCorp's `BootstrapCluster`). Call it on one server only.
    pub async fn bootstrap_cluster(&self, configuration: Configuration) -> Result<(), RaftError> {
        self.call(
            |reply| Api::Bootstrap {
                configuration,
                reply,
            },
            None,
        )
        .await
    }

    /// Replicates a command and returns the FSM's response once it is
    /// committed and applied on this server (the leader).
    ///
    /// `Timeout` and `LeadershipLost` mean the outcome is unknown: the command
    /// may still take effect.
    pub async fn apply(&self, command: Bytes, timeout: Duration) -> Result<R, RaftError> {
        self.apply_with_index(command, timeout)
            .await
            .map(|(_, r)| r)
    }

    /// Like [`Raft::apply`], also returning the command's log index.
    pub async fn apply_with_index(
        &self,
        command: Bytes,
        timeout: Duration,
    ) -> Result<(LogIndex, R), RaftError> {
        self.call(
            |reply| Api::Apply {
                data: command,
                reply,
            },
            Some(timeout),
        )
        .await
    }

    /// Returns once every command before it is applied (HashiCorp's `Barrier`).
    pub async fn barrier(&self, timeout: Duration) -> Result<LogIndex, RaftError> {
        self.call(|reply| Api::Barrier { reply }, Some(timeout))
            .await
    }

    /// Confirms with a quorum that this server still leads (HashiCorp's `VerifyLeader`).
    pub async fn verify_leader(&self) -> Result<(), RaftError> {
        self.call(
            |reply| Api::ReadIndex {
                lease: false,
                wait_applied: false,
                reply,
            },
            None,
        )
        .await
        .map(|_| ())
    }

    /// A linearizable read point (ReadIndex): resolves once this leader has
    /// confirmed its leadership after the call and the local FSM has applied
    /// at least the returned index. Reading the FSM then is linearizable.
    pub async fn read_index(&self) -> Result<LogIndex, RaftError> {
        self.call(
            |reply| Api::ReadIndex {
                lease: false,
                wait_applied: true,
                reply,
            },
            None,
        )
        .await
    }

    /// Like [`Raft::read_index`], but served without a quorum round while the
    /// leader's lease holds.
    pub async fn lease_read(&self) -> Result<LogIndex, RaftError> {
        self.call(
            |reply| Api::ReadIndex {
                lease: true,
                wait_applied: true,
                reply,
            },
            None,
        )
        .await
    }

    /// Fault injection only: makes this server's timers run `rate` times as
    /// fast as real time (0.5 = slow, 2.0 = fast; 1.0 restores), as if its
    /// clock drifted. The core counts ticks, so only the tick timer changes.
    #[doc(hidden)]
    pub async fn set_clock_rate(&self, rate: f64) -> Result<(), RaftError> {
        if !(rate.is_finite() && (0.01..=100.0).contains(&rate)) {
            return Err(RaftError::Invalid(format!(
                "clock rate must be within 0.01..=100, got {rate}"
            )));
        }
        self.inner
            .api
            .send(Api::ClockRate { rate })
            .await
            .map_err(|_| RaftError::Shutdown)
    }

    /// Adds a voter, or promotes a non-voter (HashiCorp's `AddVoter`).
    /// `prev_index` of zero skips the check against the latest configuration.
    /// Returns the configuration entry's index once committed.
    ///
    /// Changes take turns: one made while another is uncommitted (or before
    /// a new leader's first entry commits) waits for it within `timeout`, and
    /// `prev_index` is checked when its turn comes. The same holds for
    /// [`Raft::add_nonvoter`], [`Raft::demote_voter`] and [`Raft::remove_server`].
    pub async fn add_voter(
        &self,
        id: NodeId,
        address: ServerAddress,
        prev_index: LogIndex,
        timeout: Duration,
    ) -> Result<LogIndex, RaftError> {
        self.change(ConfChange::AddVoter { id, address }, prev_index, timeout)
            .await
    }

    /// Adds a non-voter that receives the log but never votes (HashiCorp's `AddNonvoter`).
    pub async fn add_nonvoter(
        &self,
        id: NodeId,
        address: ServerAddress,
        prev_index: LogIndex,
        timeout: Duration,
    ) -> Result<LogIndex, RaftError> {
        self.change(ConfChange::AddNonvoter { id, address }, prev_index, timeout)
            .await
    }

    /// Makes a voter a non-voter (HashiCorp's `DemoteVoter`).
    pub async fn demote_voter(
        &self,
        id: NodeId,
        prev_index: LogIndex,
        timeout: Duration,
    ) -> Result<LogIndex, RaftError> {
        self.change(ConfChange::DemoteVoter { id }, prev_index, timeout)
            .await
    }

    /// Removes a server (HashiCorp's `RemoveServer`). A removed leader steps
    /// down once the change commits.
    pub async fn remove_server(
        &self,
        id: NodeId,
        prev_index: LogIndex,
        timeout: Duration,
    ) -> Result<LogIndex, RaftError> {
        self.change(ConfChange::RemoveServer { id }, prev_index, timeout)
            .await
    }

    async fn change(
        &self,
        change: ConfChange,
        prev_index: LogIndex,
        timeout: Duration,
    ) -> Result<LogIndex, RaftError> {
        self.call(
            |reply| Api::ChangeConfig {
                change,
                prev_index,
                reply,
            },
            Some(timeout),
        )
        .await
    }

    /// The latest configuration and its index (HashiCorp's `GetConfiguration`).
    pub async fn get_configuration(&self) -> Result<(LogIndex, Configuration), RaftError> {
        self.call(|reply| Api::Configuration { reply }, None).await
    }

    /// The leader this server knows, with its address.
    pub fn leader(&self) -> Option<(NodeId, ServerAddress)> {
        self.inner.observed.borrow().leader.clone()
    }

    /// This server's role.
    pub fn state(&self) -> RaftState {
        self.inner.observed.borrow().state
    }

    /// Detailed state (HashiCorp's `Stats`).
    pub async fn stats(&self) -> Result<Stats, RaftError> {
        self.call(|reply| Api::Stats { reply }, None).await
    }

    /// Time since this server last heard from a leader (zero on the leader).
    pub async fn last_contact(&self) -> Result<Duration, RaftError> {
        Ok(self.stats().await?.last_contact)
    }

    /// Takes a snapshot now (HashiCorp's user snapshot) and returns it.
    pub async fn snapshot(&self) -> Result<SnapshotMeta, RaftError> {
        self.call(|reply| Api::Snapshot { reply }, None).await
    }

    /// Hands leadership to the most up-to-date voter; returns the new leader
    /// once it leads (HashiCorp's `LeadershipTransfer`).
    pub async fn leadership_transfer(&self) -> Result<NodeId, RaftError> {
        self.call(
            |reply| Api::Transfer {
                target: None,
                reply,
            },
            None,
        )
        .await
    }

    /// Hands leadership to `id` (HashiCorp's `LeadershipTransferToServer`).
    pub async fn leadership_transfer_to_server(&self, id: NodeId) -> Result<NodeId, RaftError> {
        self.call(
            |reply| Api::Transfer {
                target: Some(id),
                reply,
            },
            None,
        )
        .await
    }

    /// Role, leader and configuration changes, and failed heartbeats.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Waits until `state()` is `want`, or the deadline passes.
    pub async fn wait_for_state(
        &self,
        want: RaftState,
        timeout: Duration,
    ) -> Result<(), RaftError> {
        let mut rx = self.inner.observed.clone();
        let result = tokio::time::timeout(timeout, rx.wait_for(|o| o.state == want))
            .await
            .map(|r| r.is_ok());
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(RaftError::Shutdown),
            Err(_) => Err(RaftError::Timeout),
        }
    }

    /// Waits until some leader is known, or the deadline passes.
    pub async fn wait_for_leader(
        &self,
        timeout: Duration,
    ) -> Result<(NodeId, ServerAddress), RaftError> {
        let mut rx = self.inner.observed.clone();
        let result = tokio::time::timeout(timeout, rx.wait_for(|o| o.leader.is_some()))
            .await
            .map(|r| r.ok().and_then(|o| o.leader.clone()));
        match result {
            Ok(Some(leader)) => Ok(leader),
            Ok(None) => Err(RaftError::Shutdown),
            Err(_) => Err(RaftError::Timeout),
        }
    }

    /// The driver's tick length (`heartbeat_timeout / 10`).
    pub fn tick_interval(&self) -> Duration {
        self.inner.tick
    }

    /// Stops the server: the driver, the I/O and FSM threads, the transport.
    /// Waits for them to finish; everything acknowledged is durable.
    pub async fn shutdown(&self) {
        let handle = self.inner.done.lock().await.take();
        let _ = self.inner.stop.send(true);
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}
