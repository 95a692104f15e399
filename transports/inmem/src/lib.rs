//! An in-process [`Transport`](raftkit::Transport) for raftkit, with a network you can break.
//!
//! Every server gets an [`InmemTransport`] from one [`InmemNetwork`] hub.
//! Messages pass as values (no encoding; payloads are cheap `Bytes` clones)
//! through bounded tokio channels. A message goes straight into the
//! receiver's inbound stream when nothing to that peer waits ahead of it and
//! the network adds no delay, as a call into the peer would; otherwise it
//! waits, in order, in a pipe per (sender, peer) pair:
//!
//! ```text
//!  A.send(B, msgs) ──try_send (idle link, no delay)────────────────────────────▶ B's inbound stream
//!                  └─try_send──▶ pipe A→B (bounded, FIFO) ──task: delay, rules──▶ B's inbound stream
//!  A.send_snapshot(B, ..) ──────▶ its own chunk channel (1 MiB chunks) ─────────▶ Inbound::Snapshot
//! ```
//!
//! The hub's test controls act on server ids and apply both when a message
//! is sent and when it is delivered, so messages in flight are lost when a
//! link breaks: [`disconnect`](InmemNetwork::disconnect) /
//! [`reconnect`](InmemNetwork::reconnect), [`partition`](InmemNetwork::partition) /
//! [`heal`](InmemNetwork::heal), one-way [`cut`](InmemNetwork::cut), a message
//! [drop probability](InmemNetwork::set_drop_probability) drawn from a seeded
//! ChaCha RNG, and a fixed [delay](InmemNetwork::set_delay). A broken link
//! loses messages silently (`send` returns `Ok`), as a real network would;
//! only a missing peer (nothing registered at the address, or shut down)
//! makes `send` return `Unreachable`. Drops and delay apply to messages, not
//! to snapshot streams, which the link rules abort instead.
//!
//! It is not a simulator: time is tokio's, and tasks interleave as tokio
//! schedules them. For byte-identical replays use the core simulation.
//!
//! ```
//! use raftkit::testing::transport::heartbeat;
//! use raftkit::{Inbound, Peer, Transport};
//! use raftkit_inmem::InmemNetwork;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let net = InmemNetwork::new(7);
//! let a = net.endpoint("a".into(), "addr-a".into());
//! let b = net.endpoint("b".into(), "addr-b".into());
//! let mut inbound = b.take_inbound().unwrap();
//! let to_b = Peer { id: "b".into(), address: b.local_addr() };
//!
//! a.send(&to_b, vec![heartbeat(&"a".into(), &"b".into(), 1, 0)]).unwrap();
//! assert!(matches!(inbound.recv().await, Some(Inbound::Message(_))));
//!
//! net.cut(&"a".into(), &"b".into()); // one way: a's messages to b are lost
//! a.send(&to_b, vec![heartbeat(&"a".into(), &"b".into(), 2, 0)]).unwrap();
//! net.heal();
//! # });
//! ```

mod endpoint;
mod snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftkit::{Inbound, Message, NodeId, ServerAddress};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, watch};

pub use endpoint::InmemTransport;

/// Sizes of the hub's queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InmemConfig {
    /// `send` calls queued per (sender, peer) pipe before `send` answers
    /// `Backpressure`. Default 1024: at a batch of 64 messages, 65 536
    /// messages in flight to one slow peer.
    pub queue_batches: usize,
    /// Items buffered in each endpoint's inbound stream before its pipes
    /// wait. Default 4096.
    pub inbound_capacity: usize,
    /// Bytes per snapshot chunk. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Chunks buffered per snapshot stream (so at most this many chunk sizes
    /// of memory per stream). Default 4.
    pub snapshot_chunks_buffered: usize,
}

impl Default for InmemConfig {
    fn default() -> Self {
        InmemConfig {
            queue_batches: 1024,
            inbound_capacity: 4096,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunks_buffered: 4,
        }
    }
}

/// The hub all in-process endpoints share. Cloning it is cheap (an `Arc`).
#[derive(Clone, Debug)]
pub struct InmemNetwork {
    hub: Arc<Hub>,
}

#[derive(Debug)]
struct Hub {
    config: InmemConfig,
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    nodes: HashMap<ServerAddress, Registered>,
    next_generation: u64,
    disconnected: HashSet<NodeId>,
    partition: Option<Vec<HashSet<NodeId>>>,
    cuts: HashSet<(NodeId, NodeId)>,
    drop_probability: f64,
    delay: Duration,
    rng: ChaCha8Rng,
}

/// An endpoint registered at an address.
#[derive(Clone, Debug)]
struct Registered {
    id: NodeId,
    generation: u64,
    inbound: mpsc::Sender<Inbound>,
    closed: watch::Receiver<bool>,
}

/// Where a message may go right now.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) inbound: mpsc::Sender<Inbound>,
    pub(crate) closed: watch::Receiver<bool>,
}

/// Why a route is missing.
#[derive(Debug)]
pub(crate) enum NoRoute {
    /// Nothing is registered at the address.
    Nobody,
    /// The link rules forbid it.
    Blocked,
}

impl InmemNetwork {
    /// A network with default queue sizes whose drop decisions come from a
    /// ChaCha RNG seeded with `seed`.
    pub fn new(seed: u64) -> InmemNetwork {
        InmemNetwork::with_config(seed, InmemConfig::default())
    }

    /// A network with the given queue sizes.
    ///
    /// ```
    /// let config = raftkit_inmem::InmemConfig { queue_batches: 8, ..Default::default() };
    /// let net = raftkit_inmem::InmemNetwork::with_config(1, config);
    /// # drop(net);
    /// ```
    pub fn with_config(seed: u64, config: InmemConfig) -> InmemNetwork {
        let state = HubState {
            nodes: HashMap::new(),
            next_generation: 1,
            disconnected: HashSet::new(),
            partition: None,
            cuts: HashSet::new(),
            drop_probability: 0.0,
            delay: Duration::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        InmemNetwork {
            hub: Arc::new(Hub {
                config,
                state: Mutex::new(state),
            }),
        }
    }

    /// Registers server `id` at `address` and returns its transport.
    ///
    /// An endpoint registered at an address already in use takes it over,
    /// as a restarted server would; the old one no longer receives anything.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit::Transport;
    /// let net = raftkit_inmem::InmemNetwork::new(1);
    /// let a = net.endpoint("a".into(), "a:1".into());
    /// assert_eq!(a.local_addr().as_str(), "a:1");
    /// # });
    /// ```
    pub fn endpoint(&self, id: NodeId, address: ServerAddress) -> InmemTransport {
        let (inbound_tx, inbound_rx) = mpsc::channel(self.hub.config.inbound_capacity);
        let (closed_tx, closed_rx) = watch::channel(false);
        let generation = {
            let mut state = self.state();
            let generation = state.next_generation;
            state.next_generation += 1;
            let registered = Registered {
                id: id.clone(),
                generation,
                inbound: inbound_tx,
                closed: closed_rx,
            };
            state.nodes.insert(address.clone(), registered);
            generation
        };
        InmemTransport::new(self.clone(), id, address, generation, inbound_rx, closed_tx)
    }

    /// Cuts `id` off: every message to or from it is lost until
    /// [`reconnect`](Self::reconnect) or [`heal`](Self::heal).
    ///
    /// ```
    /// let net = raftkit_inmem::InmemNetwork::new(1);
    /// net.disconnect(&"n2".into());
    /// net.reconnect(&"n2".into());
    /// ```
    pub fn disconnect(&self, id: &NodeId) {
        self.state().disconnected.insert(id.clone());
    }

    /// Undoes [`disconnect`](Self::disconnect) for `id`.
    pub fn reconnect(&self, id: &NodeId) {
        self.state().disconnected.remove(id);
    }

    /// Splits the network: servers talk only within their group. Servers
    /// named in no group form one more group together. Replaces any earlier
    /// partition.
    ///
    /// ```
    /// let net = raftkit_inmem::InmemNetwork::new(1);
    /// let (a, b, c) = ("a".into(), "b".into(), "c".into());
    /// net.partition(&[&[a], &[b, c]]);
    /// net.heal();
    /// ```
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let groups = groups.iter().map(|g| g.iter().cloned().collect()).collect();
        self.state().partition = Some(groups);
    }

    /// Cuts the link from `from` to `to` one way: `to` still reaches `from`.
    ///
    /// ```
    /// let net = raftkit_inmem::InmemNetwork::new(1);
    /// net.cut(&"leader".into(), &"follower".into()); // follower still answers
    /// net.heal();
    /// ```
    pub fn cut(&self, from: &NodeId, to: &NodeId) {
        self.state().cuts.insert((from.clone(), to.clone()));
    }

    /// Restores full connectivity: clears partitions, cuts and disconnects.
    /// The drop probability and delay stay as they are.
    pub fn heal(&self) {
        let mut state = self.state();
        state.partition = None;
        state.cuts.clear();
        state.disconnected.clear();
    }

    /// Loses each message independently with probability `p` (clamped to
    /// `0.0..=1.0`), decided when it is sent by the seeded RNG.
    ///
    /// ```
    /// let net = raftkit_inmem::InmemNetwork::new(42); // same seed, same losses
    /// net.set_drop_probability(0.1);
    /// ```
    pub fn set_drop_probability(&self, p: f64) {
        self.state().drop_probability = p.clamp(0.0, 1.0);
    }

    /// Delivers every message sent from now on `delay` after its send.
    /// Order per pipe is kept.
    ///
    /// ```
    /// let net = raftkit_inmem::InmemNetwork::new(1);
    /// net.set_delay(std::time::Duration::from_millis(5));
    /// ```
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    pub(crate) fn config(&self) -> &InmemConfig {
        &self.hub.config
    }

    /// Where a message from `from` to `address` goes now, if anywhere.
    pub(crate) fn route(&self, from: &NodeId, address: &ServerAddress) -> Result<Route, NoRoute> {
        self.state().route(from, address)
    }

    /// Applies the link rules and the drop probability to `msgs` at send
    /// time: what survives, when to deliver it, and the route it would take
    /// now.
    pub(crate) fn admit(
        &self,
        from: &NodeId,
        address: &ServerAddress,
        mut msgs: Vec<Message>,
    ) -> Result<(Vec<Message>, Duration, Option<Route>), NoRoute> {
        let mut state = self.state();
        let route = match state.route(from, address) {
            Ok(route) => route,
            Err(NoRoute::Blocked) => return Ok((Vec::new(), Duration::ZERO, None)),
            Err(nobody) => return Err(nobody),
        };
        let p = state.drop_probability;
        if p > 0.0 {
            msgs.retain(|_| !state.rng.random_bool(p));
        }
        Ok((msgs, state.delay, Some(route)))
    }

    /// Removes the registration at `address` if it is still `generation`'s.
    pub(crate) fn unregister(&self, address: &ServerAddress, generation: u64) {
        let mut state = self.state();
        if state
            .nodes
            .get(address)
            .is_some_and(|n| n.generation == generation)
        {
            state.nodes.remove(address);
        }
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves plain data behind (no
        // invariant spans two fields), so a poisoned lock is still usable.
        self.hub.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HubState {
    fn route(&self, from: &NodeId, address: &ServerAddress) -> Result<Route, NoRoute> {
        let node = self.nodes.get(address).ok_or(NoRoute::Nobody)?;
        if !self.allows(from, &node.id) {
            return Err(NoRoute::Blocked);
        }
        Ok(Route {
            inbound: node.inbound.clone(),
            closed: node.closed.clone(),
        })
    }

    fn allows(&self, from: &NodeId, to: &NodeId) -> bool {
        // Checked on every send: a healthy network costs no hashing or clone.
        if !self.disconnected.is_empty()
            && (self.disconnected.contains(from) || self.disconnected.contains(to))
        {
            return false;
        }
        if !self.cuts.is_empty() && self.cuts.contains(&(from.clone(), to.clone())) {
            return false;
        }
        match &self.partition {
            None => true,
            Some(groups) => {
                let side = |id: &NodeId| groups.iter().position(|g| g.contains(id));
                side(from) == side(to)
            }
        }
    }
}
