//! One server's end of the in-process network.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftkit::transport::InboundStream;
use raftkit::{
    BoxFuture, Inbound, Message, NodeId, Peer, ServerAddress, SnapshotOffer, SnapshotReader,
    Transport, TransportError,
};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::{InmemNetwork, NoRoute, Route};

/// A server's transport on an [`InmemNetwork`], made by
/// [`InmemNetwork::endpoint`].
///
/// Must be used inside a tokio runtime. `send` puts messages straight into
/// the receiver's inbound stream when nothing to that peer is still queued
/// and the network adds no delay; otherwise they wait, in order, in a pipe
/// task per peer, spawned the first time it is needed.
#[derive(Debug)]
pub struct InmemTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    network: InmemNetwork,
    id: NodeId,
    address: ServerAddress,
    generation: u64,
    inbound: Mutex<Option<InboundStream>>,
    /// Set to `true` on shutdown; pipes and snapshot streams watch it.
    closed: watch::Sender<bool>,
    is_shut: AtomicBool,
    pipes: Mutex<HashMap<ServerAddress, Pipe>>,
}

#[derive(Debug)]
struct Pipe {
    queue: mpsc::Sender<Pending>,
    /// Batches in `queue` or being delivered; while any is, later messages
    /// queue behind them.
    queued: Arc<AtomicUsize>,
    task: AbortHandle,
}

/// Messages waiting in a pipe.
#[derive(Debug)]
struct Pending {
    deliver_at: Option<Instant>,
    msgs: Vec<Message>,
}

impl InmemTransport {
    pub(crate) fn new(
        network: InmemNetwork,
        id: NodeId,
        address: ServerAddress,
        generation: u64,
        inbound: InboundStream,
        closed: watch::Sender<bool>,
    ) -> InmemTransport {
        InmemTransport {
            inner: Arc::new(Inner {
                network,
                id,
                address,
                generation,
                inbound: Mutex::new(Some(inbound)),
                closed,
                is_shut: AtomicBool::new(false),
                pipes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// This server's id.
    ///
    /// ```
    /// let net = raftkit_inmem::InmemNetwork::new(1);
    /// # let _rt = tokio::runtime::Runtime::new().unwrap();
    /// let a = net.endpoint("a".into(), "a:1".into());
    /// assert_eq!(a.id().as_str(), "a");
    /// ```
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The pipe to `address`, started if there is none (or it stopped).
    fn pipe<'a>(
        &self,
        pipes: &'a mut HashMap<ServerAddress, Pipe>,
        address: &ServerAddress,
    ) -> &'a Pipe {
        if pipes.get(address).is_none_or(|p| p.queue.is_closed()) {
            let (queue, rx) = mpsc::channel(self.inner.network.config().queue_batches);
            let queued = Arc::new(AtomicUsize::new(0));
            let task = tokio::spawn(run_pipe(
                self.inner.network.clone(),
                self.inner.id.clone(),
                address.clone(),
                rx,
                queued.clone(),
                self.inner.closed.subscribe(),
            ));
            pipes.insert(
                address.clone(),
                Pipe {
                    queue,
                    queued,
                    task: task.abort_handle(),
                },
            );
        }
        &pipes[address]
    }
}

/// Puts `msgs` into the receiver's inbound stream while it has room; what
/// did not fit, in order.
fn deliver_now(route: &Route, msgs: Vec<Message>) -> Vec<Message> {
    if *route.closed.borrow() {
        return Vec::new(); // The receiver is shutting down: lost.
    }
    let mut msgs = msgs.into_iter();
    while let Some(msg) = msgs.next() {
        match route.inbound.try_send(Inbound::Message(msg)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Inbound::Message(msg))) => {
                return std::iter::once(msg).chain(msgs).collect();
            }
            // The receiver is gone: the rest are lost.
            Err(_) => return Vec::new(),
        }
    }
    Vec::new()
}

impl Transport for InmemTransport {
    fn local_addr(&self) -> ServerAddress {
        self.inner.address.clone()
    }

    fn take_inbound(&self) -> Option<InboundStream> {
        lock(&self.inner.inbound).take()
    }

    fn send(&self, to: &Peer, msgs: Vec<Message>) -> Result<(), TransportError> {
        if self.inner.is_shut.load(Ordering::Acquire) {
            return Err(TransportError::Shutdown);
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let (mut msgs, delay, route) =
            match self.inner.network.admit(&self.inner.id, &to.address, msgs) {
                Ok(admitted) => admitted,
                Err(NoRoute::Nobody | NoRoute::Blocked) => {
                    return Err(unreachable(to, "nothing listens at that address"));
                }
            };
        let Some(route) = route.filter(|_| !msgs.is_empty()) else {
            return Ok(()); // Lost to the link rules or the drop probability.
        };
        // The lock keeps concurrent sends to one peer in order.
        let mut pipes = lock(&self.inner.pipes);
        let nothing_queued = pipes
            .get(&to.address)
            .is_none_or(|p| p.queued.load(Ordering::Acquire) == 0);
        if delay.is_zero() && nothing_queued {
            msgs = deliver_now(&route, msgs);
            if msgs.is_empty() {
                return Ok(());
            }
        }
        let deliver_at = (delay > Duration::ZERO).then(|| Instant::now() + delay);
        let pipe = self.pipe(&mut pipes, &to.address);
        pipe.queued.fetch_add(1, Ordering::AcqRel);
        match pipe.queue.try_send(Pending { deliver_at, msgs }) {
            Ok(()) => Ok(()),
            Err(e) => {
                pipe.queued.fetch_sub(1, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        Err(TransportError::Backpressure(to.id.clone()))
                    }
                    // Only after shutdown aborted the pipe.
                    mpsc::error::TrySendError::Closed(_) => Err(TransportError::Shutdown),
                }
            }
        }
    }

    fn send_snapshot(
        &self,
        to: &Peer,
        offer: SnapshotOffer,
        data: SnapshotReader,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let inner = self.inner.clone();
        let to = to.clone();
        Box::pin(async move {
            if inner.is_shut.load(Ordering::Acquire) {
                return Err(TransportError::Shutdown);
            }
            crate::snapshot::stream(
                &inner.network,
                &inner.id,
                &to,
                offer,
                data,
                inner.closed.subscribe(),
            )
            .await
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.is_shut.store(true, Ordering::Release);
            inner.closed.send_replace(true);
            inner.network.unregister(&inner.address, inner.generation);
            for (_, pipe) in lock(&inner.pipes).drain() {
                pipe.task.abort();
            }
            // An untaken inbound stream is dropped with its queued items.
            lock(&inner.inbound).take();
        })
    }
}

impl Drop for InmemTransport {
    fn drop(&mut self) {
        // Dropping the transport stops its pipes and frees its address, as
        // a process exit would.
        for (_, pipe) in lock(&self.inner.pipes).drain() {
            pipe.task.abort();
        }
        self.inner.closed.send_replace(true);
        self.inner
            .network
            .unregister(&self.inner.address, self.inner.generation);
    }
}

/// Delivers one pipe's messages in order, after their delay, while the link
/// rules allow; stops when the sender shuts down.
async fn run_pipe(
    network: InmemNetwork,
    from: NodeId,
    address: ServerAddress,
    mut queue: mpsc::Receiver<Pending>,
    queued: Arc<AtomicUsize>,
    mut sender_closed: watch::Receiver<bool>,
) {
    while let Some(pending) = queue.recv().await {
        if let Some(at) = pending.deliver_at {
            tokio::time::sleep_until(at).await;
        }
        // Rules are checked again at delivery: a link that broke while the
        // messages were in flight loses them.
        if let Ok(mut route) = network.route(&from, &address) {
            for msg in pending.msgs {
                tokio::select! {
                    sent = route.inbound.send(Inbound::Message(msg)) => {
                        if sent.is_err() {
                            break; // The receiver is gone; the rest are lost.
                        }
                    }
                    _ = route.closed.wait_for(|c| *c) => break,
                    _ = sender_closed.wait_for(|c| *c) => return,
                }
            }
        }
        queued.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) fn unreachable(to: &Peer, reason: &str) -> TransportError {
    TransportError::Unreachable {
        peer: to.id.clone(),
        reason: reason.to_owned(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent at every await-free step, so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
