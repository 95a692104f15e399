//! The sending half every stream transport (TCP, QUIC) shares: one bounded
//! queue and one link task per peer, reconnect backoff, and the cutting of
//! queued messages into frames.
//!
//! ```text
//!  Transport::send ─▶ Links::send: refuse what no frame can carry, then
//!                        ├─▶ SendNow (if the link has one): written on the spot while the link is idle
//!                        └─▶ try_send to a peer's queue (bounded) ─▶ link task:
//!                              fill_batch (≤ batch_max_messages, ≤ max_frame_bytes of messages)
//!                              encode_messages (frames ≤ batch_max_bytes, never > max_frame_bytes)
//!                              write; on failure: LinkState::set_down, Backoff, retry
//! ```

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use super::errors::{ErrorCounts, ErrorKind, BYTES_SENT_METRIC, MESSAGES_SENT_METRIC};
use super::{Peer, TransportError};
use crate::message::Message;
use crate::types::NodeId;
use crate::wire::{
    encode_frame_chunks, message_len, messages_frame_len, shared_payload_bytes, ClusterId, Frame,
    FrameChunks, WireError,
};

/// A peer's queue and its reachability.
#[derive(Debug)]
pub struct Link {
    /// Batches waiting for the link task.
    pub queue: mpsc::Sender<Vec<Message>>,
    /// Whether the peer can be reached.
    pub state: Arc<LinkState>,
    /// Writes on the sender's thread while the link is idle, sparing the
    /// link task a wake-up; `None`: every batch goes through the queue.
    pub now: Option<Arc<dyn SendNow>>,
}

impl Link {
    /// A link with a queue of `capacity` batches; the caller spawns the
    /// task that drains the returned receiver.
    pub fn new(capacity: usize) -> (Link, mpsc::Receiver<Vec<Message>>) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let link = Link {
            queue,
            state: Arc::new(LinkState::default()),
            now: None,
        };
        (link, rx)
    }
}

/// A link's way of writing a batch at once, on the thread that calls
/// `send`, while nothing is queued or being written.
pub trait SendNow: Send + Sync + std::fmt::Debug {
    /// Writes `msgs` now, or queues them on `queue` (as `try_send` does,
    /// with its errors). The choice and the queueing must happen under one
    /// lock, which the link task also takes before it waits, so that a
    /// batch written now never overtakes one still queued.
    fn send_or_queue(
        &self,
        msgs: Vec<Message>,
        queue: &mpsc::Sender<Vec<Message>>,
    ) -> Result<(), mpsc::error::TrySendError<Vec<Message>>>;
}

/// What `send` uses of a link.
type LinkHandle = (
    mpsc::Sender<Vec<Message>>,
    Arc<LinkState>,
    Option<Arc<dyn SendNow>>,
);

/// Whether a peer is unreachable, and whether anyone still wants it.
#[derive(Debug, Default)]
pub struct LinkState {
    /// Why the last connection attempt failed; `None` while connected or
    /// not yet tried.
    down: Mutex<Option<String>>,
    /// A send was refused since the last attempt: keep retrying.
    wanted: AtomicBool,
}

impl LinkState {
    /// Why the peer is unreachable, if it is. Marks the peer as wanted, so
    /// the link keeps trying to reconnect.
    pub fn refuse(&self) -> Option<String> {
        let down = lock(&self.down).clone();
        if down.is_some() {
            self.wanted.store(true, Ordering::Release);
        }
        down
    }

    /// Marks the peer unreachable: `send` answers `Unreachable` with `reason`.
    pub fn set_down(&self, reason: String) {
        *lock(&self.down) = Some(reason);
    }

    /// Marks the peer reachable (or no longer being tried).
    pub fn set_up(&self) {
        *lock(&self.down) = None;
    }

    /// Whether a send was refused since the last call.
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }
}

/// The outbound links of one transport, by peer id and address (a new
/// server at an old address gets a link of its own).
#[derive(Debug, Default)]
pub struct Links {
    links: Mutex<HashMap<Peer, Link>>,
}

impl Links {
    /// Queues `msgs` for `to` on its link, starting one with `spawn` when
    /// there is none (or it closed itself when idle).
    ///
    /// Refuses, queueing nothing: with `Wire(TooLarge)` a message that no
    /// frame of `max_frame_bytes` can carry (counted in `errors` as
    /// [`ErrorKind::OversizedMessage`] and logged); with `Unreachable`
    /// while the link's last connection attempt failed; with
    /// `Backpressure` when the queue is full.
    pub fn send(
        &self,
        to: &Peer,
        msgs: Vec<Message>,
        max_frame_bytes: usize,
        errors: &ErrorCounts,
        mut spawn: impl FnMut(&Peer) -> Link,
    ) -> Result<(), TransportError> {
        if msgs.is_empty() {
            return Ok(());
        }
        if let Err(e) = check_frame_size(&msgs, max_frame_bytes) {
            errors.record(ErrorKind::OversizedMessage);
            tracing::warn!(peer = %to.id, "refusing to send: {e}");
            return Err(e);
        }
        let mut msgs = msgs;
        // A link closes itself when idle; a send racing with that finds its
        // queue closed and starts a new link (once).
        for _ in 0..2 {
            let (queue, state, now) = self.link(to, &mut spawn);
            if let Some(reason) = state.refuse() {
                return Err(TransportError::Unreachable {
                    peer: to.id.clone(),
                    reason,
                });
            }
            let sent = match &now {
                Some(now) => now.send_or_queue(msgs, &queue),
                None => queue.try_send(msgs),
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(TransportError::Backpressure(to.id.clone()))
                }
                Err(mpsc::error::TrySendError::Closed(back)) => msgs = back,
            }
        }
        Err(TransportError::Unreachable {
            peer: to.id.clone(),
            reason: "link restarting".to_owned(),
        })
    }

    fn link(&self, to: &Peer, spawn: &mut impl FnMut(&Peer) -> Link) -> LinkHandle {
        let mut links = lock(&self.links);
        if let Some(link) = links.get(to) {
            if !link.queue.is_closed() {
                return (link.queue.clone(), link.state.clone(), link.now.clone());
            }
        }
        let link = spawn(to);
        let handle = (link.queue.clone(), link.state.clone(), link.now.clone());
        links.insert(to.clone(), link);
        handle
    }

    /// How many links are open (links that closed when idle are forgotten).
    pub fn open(&self) -> usize {
        let mut links = lock(&self.links);
        links.retain(|_, link| !link.queue.is_closed());
        links.len()
    }

    /// Drops every link's queue (their tasks end once drained).
    pub fn clear(&self) {
        lock(&self.links).clear();
    }
}

/// Refuses a batch holding a message that cannot fit in a frame of
/// `max_frame_bytes` on its own.
///
/// ```
/// use raftkit::transport::link::check_frame_size;
/// use raftkit::{Message, MessageBody, ServerAddress, Term};
/// let msg = Message {
///     from: "a".into(),
///     from_addr: ServerAddress::new("a"),
///     to: "b".into(),
///     term: Term(1),
///     body: MessageBody::TimeoutNow,
/// };
/// assert!(check_frame_size(std::slice::from_ref(&msg), 1024).is_ok());
/// let e = check_frame_size(&[msg], 20).unwrap_err();
/// assert!(e.to_string().contains("exceeds the maximum of 20"), "{e}");
/// ```
pub fn check_frame_size(msgs: &[Message], max_frame_bytes: usize) -> Result<(), TransportError> {
    for msg in msgs {
        let len = messages_frame_len(1, message_len(msg));
        if len > max_frame_bytes {
            return Err(TransportError::Wire(WireError::TooLarge {
                len,
                max: max_frame_bytes,
            }));
        }
    }
    Ok(())
}

/// How a link cuts what is queued into writes and frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// The most messages taken from the queue for one write.
    pub max_messages: usize,
    /// The most bytes of messages in one `Messages` frame (a single larger
    /// message gets a frame of its own).
    pub max_batch_bytes: usize,
    /// The largest frame the peer accepts; also the most bytes of messages
    /// taken from the queue for one write.
    pub max_frame_bytes: usize,
}

/// Adds queued batches to `first` until `limits` are reached or the queue
/// is empty: a backlog of large appends never becomes one huge write.
pub fn fill_batch(
    first: Vec<Message>,
    queue: &mut mpsc::Receiver<Vec<Message>>,
    limits: &BatchLimits,
) -> Vec<Message> {
    let mut batch = first;
    let mut bytes: usize = batch.iter().map(message_len).sum();
    while batch.len() < limits.max_messages && bytes < limits.max_frame_bytes {
        match queue.try_recv() {
            Ok(more) => {
                bytes += more.iter().map(message_len).sum::<usize>();
                batch.extend(more);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Messages encoded as frames, ready to write.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The frames, in order, each within the limits; large entry payloads
    /// are shared with the messages, not copied ([`FrameChunks`]).
    pub frames: Vec<FrameChunks>,
    /// Their bytes, 4-byte length prefixes included.
    pub wire_bytes: usize,
    /// How many messages of each kind they hold.
    pub kinds: Vec<(&'static str, u64)>,
}

impl Encoded {
    /// Counts what was written in the sent-messages and sent-bytes metrics.
    pub fn record_sent(&self) {
        for (kind, n) in &self.kinds {
            metrics::counter!(MESSAGES_SENT_METRIC, "kind" => *kind).increment(*n);
        }
        metrics::counter!(BYTES_SENT_METRIC, "kind" => "messages")
            .increment(self.wire_bytes as u64);
    }
}

/// Encodes `msgs` into `Messages` frames of at most
/// `limits.max_batch_bytes` (a larger message alone in its frame). A
/// message whose frame would exceed `limits.max_frame_bytes` is dropped,
/// counted as [`ErrorKind::OversizedMessage`] and logged ([`Links::send`]
/// refuses those up front, so this is a last line of defence).
///
/// ```
/// use raftkit::transport::errors::ErrorCounts;
/// use raftkit::transport::link::{encode_messages, BatchLimits};
/// use raftkit::wire::ClusterId;
/// use raftkit::{Message, MessageBody, ServerAddress, Term};
/// let msg = Message {
///     from: "a".into(),
///     from_addr: ServerAddress::new("a"),
///     to: "b".into(),
///     term: Term(1),
///     body: MessageBody::TimeoutNow,
/// };
/// let limits = BatchLimits { max_messages: 1024, max_batch_bytes: 100, max_frame_bytes: 1 << 20 };
/// let encoded = encode_messages(ClusterId(1), vec![msg; 20], &limits, &ErrorCounts::default());
/// assert!(encoded.frames.len() > 1);
/// assert!(encoded.frames.iter().all(|f| f.len <= 100));
/// ```
pub fn encode_messages(
    cluster: ClusterId,
    msgs: Vec<Message>,
    limits: &BatchLimits,
    errors: &ErrorCounts,
) -> Encoded {
    let mut out = Encoded::default();
    let budget = limits.max_batch_bytes.min(limits.max_frame_bytes);
    let mut current: Vec<Message> = Vec::new();
    let mut body = 0;
    for msg in msgs {
        let len = message_len(&msg);
        let alone = messages_frame_len(1, len);
        if alone > limits.max_frame_bytes {
            errors.record(ErrorKind::OversizedMessage);
            tracing::warn!(
                len = alone,
                max = limits.max_frame_bytes,
                kind = msg.body.kind(),
                "dropping a message larger than max_frame_bytes"
            );
            continue;
        }
        if !current.is_empty() && messages_frame_len(current.len() + 1, body + len) > budget {
            push_frame(cluster, std::mem::take(&mut current), body, &mut out);
            body = 0;
        }
        let kind = msg.body.kind();
        match out.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => out.kinds.push((kind, 1)),
        }
        body += len;
        current.push(msg);
    }
    if !current.is_empty() {
        push_frame(cluster, current, body, &mut out);
    }
    out
}

fn push_frame(cluster: ClusterId, msgs: Vec<Message>, body: usize, out: &mut Encoded) {
    let len = messages_frame_len(msgs.len(), body);
    let copied = len - msgs.iter().map(shared_payload_bytes).sum::<usize>();
    let frame = encode_frame_chunks(cluster, &Frame::Messages(msgs), copied);
    out.wire_bytes += frame.len + 4;
    out.frames.push(frame);
}

/// Exponential reconnect delays with jitter, from a seed derived from the
/// local id and the peer address (deterministic, yet different per pair).
///
/// ```
/// use std::time::Duration;
/// use raftkit::transport::link::Backoff;
/// use raftkit::Peer;
/// let peer = Peer { id: "b".into(), address: raftkit::ServerAddress::new("b:1") };
/// let (min, max) = (Duration::from_millis(50), Duration::from_secs(2));
/// let mut backoff = Backoff::new(&"a".into(), &peer, min, max);
/// let first = backoff.next_delay();
/// assert!(first >= min / 2 && first <= min);
/// for _ in 0..20 {
///     assert!(backoff.next_delay() <= max);
/// }
/// ```
#[derive(Debug)]
pub struct Backoff {
    bound: Duration,
    min: Duration,
    max: Duration,
    rng: ChaCha8Rng,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`, for the link `local` → `peer`.
    pub fn new(local: &NodeId, peer: &Peer, min: Duration, max: Duration) -> Backoff {
        // DefaultHasher::new() has fixed keys, so the seed is stable.
        let mut hasher = DefaultHasher::new();
        (local.as_str(), peer.address.as_str()).hash(&mut hasher);
        Backoff {
            bound: min,
            min,
            max,
            rng: ChaCha8Rng::seed_from_u64(hasher.finish()),
        }
    }

    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.bound = self.min;
    }

    /// A delay between half and all of the current bound; doubles the bound.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound;
        self.bound = (self.bound * 2).min(self.max);
        let half = bound / 2;
        half + half.mul_f64(self.rng.random::<f64>())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map or option update, so a
    // poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a reconnect attempt ended.
#[derive(Debug)]
pub enum Reconnect<C> {
    /// Connected.
    Connected(C),
    /// Nobody sent to the peer during the last backoff: stop trying until
    /// the next message (which `send` accepts again).
    GaveUp,
    /// The transport shut down.
    Cancelled,
}

/// What [`reconnect`] works with.
#[derive(Debug)]
pub struct Reconnecting<'a> {
    /// The peer.
    pub peer: &'a Peer,
    /// Cancelled at shutdown.
    pub cancel: &'a tokio_util::sync::CancellationToken,
    /// The link's queue: emptied while the peer is down (Raft retries).
    pub queue: &'a mut mpsc::Receiver<Vec<Message>>,
    /// The link's reachability, which `send` reads.
    pub state: &'a LinkState,
    /// The delays between attempts.
    pub backoff: &'a mut Backoff,
    /// Where failed attempts are counted ([`ErrorKind::Connect`]).
    pub errors: &'a ErrorCounts,
}

/// Connects with `open`. While attempts fail, `send` answers `Unreachable`
/// (queueing nothing) and attempts repeat with backoff as long as sends
/// keep coming.
pub async fn reconnect<C, F, Fut>(r: Reconnecting<'_>, mut open: F) -> Reconnect<C>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<C, TransportError>>,
{
    loop {
        let connected = tokio::select! {
            _ = r.cancel.cancelled() => return Reconnect::Cancelled,
            c = open() => c,
        };
        let e = match connected {
            Ok(c) => {
                r.backoff.reset();
                r.state.set_up();
                return Reconnect::Connected(c);
            }
            Err(e) => e,
        };
        r.errors.record(ErrorKind::Connect);
        let wait = r.backoff.next_delay();
        tracing::debug!(peer = %r.peer.id, address = %r.peer.address, "connect failed ({e}); retrying in {wait:?}");
        r.state.set_down(e.to_string());
        // Raft retries: what was queued for an unreachable peer is stale.
        while r.queue.try_recv().is_ok() {}
        tokio::select! {
            _ = r.cancel.cancelled() => return Reconnect::Cancelled,
            _ = tokio::time::sleep(wait) => {}
        }
        if !r.state.take_wanted() {
            r.state.set_up();
            return Reconnect::GaveUp;
        }
    }
}

/// Empties a link's queue after it closed itself for idleness: what was
/// queued meanwhile, to write before the task ends.
pub fn drain_closed(queue: &mut mpsc::Receiver<Vec<Message>>) -> Vec<Message> {
    queue.close();
    let mut rest = Vec::new();
    while let Ok(batch) = queue.try_recv() {
        rest.extend(batch);
    }
    rest
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::{AppendEntriesRequest, MessageBody};
    use crate::types::{Entry, LogIndex, ServerAddress, Term};
    use crate::wire::decode_frame;

    const CLUSTER: ClusterId = ClusterId(9);

    fn append(seq: u64, bytes: usize) -> Message {
        Message {
            from: "a".into(),
            from_addr: ServerAddress::new("a"),
            to: "b".into(),
            term: Term(1),
            body: MessageBody::AppendEntriesRequest(AppendEntriesRequest {
                prev_log_index: LogIndex(seq),
                prev_log_term: Term(1),
                entries: vec![Entry::command(
                    LogIndex(seq + 1),
                    Term(1),
                    Bytes::from(vec![1; bytes]),
                )],
                leader_commit: LogIndex(0),
                round: seq,
            }),
        }
    }

    fn seqs(frames: &[FrameChunks]) -> Vec<u64> {
        let mut out = Vec::new();
        for f in frames {
            match decode_frame(CLUSTER, &f.to_bytes()) {
                Ok(Frame::Messages(msgs)) => out.extend(msgs.iter().map(|m| match &m.body {
                    MessageBody::AppendEntriesRequest(r) => r.round,
                    other => panic!("unexpected {}", other.kind()),
                })),
                other => panic!("not a Messages frame: {other:?}"),
            }
        }
        out
    }

    #[test]
    fn frames_keep_to_the_batch_budget_and_the_order() {
        let limits = BatchLimits {
            max_messages: 1024,
            max_batch_bytes: 10_000,
            max_frame_bytes: 100_000,
        };
        let msgs: Vec<Message> = (0..50).map(|i| append(i, 1000 + i as usize * 37)).collect();
        let errors = ErrorCounts::default();
        let encoded = encode_messages(CLUSTER, msgs, &limits, &errors);
        assert!(encoded.frames.len() >= 5, "{} frames", encoded.frames.len());
        for f in &encoded.frames {
            assert!(f.len <= 10_000, "a frame of {} bytes", f.len);
        }
        assert_eq!(seqs(&encoded.frames), (0..50).collect::<Vec<_>>());
        let wire: usize = encoded.frames.iter().map(|f| f.len + 4).sum();
        assert_eq!(encoded.wire_bytes, wire);
        assert_eq!(encoded.kinds, vec![("append_entries", 50)]);
        assert_eq!(errors.get(ErrorKind::OversizedMessage), 0);
    }

    #[test]
    fn a_message_above_the_budget_gets_a_frame_of_its_own() {
        let limits = BatchLimits {
            max_messages: 1024,
            max_batch_bytes: 1000,
            max_frame_bytes: 100_000,
        };
        let msgs = vec![append(0, 10), append(1, 5000), append(2, 10)];
        let encoded = encode_messages(CLUSTER, msgs, &limits, &ErrorCounts::default());
        assert_eq!(encoded.frames.len(), 3);
        assert_eq!(seqs(&encoded.frames), vec![0, 1, 2]);
    }

    #[test]
    fn a_message_above_the_frame_limit_is_dropped_and_counted() {
        let limits = BatchLimits {
            max_messages: 1024,
            max_batch_bytes: 1000,
            max_frame_bytes: 4000,
        };
        let errors = ErrorCounts::default();
        let msgs = vec![append(0, 10), append(1, 5000), append(2, 10)];
        let encoded = encode_messages(CLUSTER, msgs, &limits, &errors);
        assert_eq!(seqs(&encoded.frames), vec![0, 2]);
        assert_eq!(errors.get(ErrorKind::OversizedMessage), 1);
    }

    #[test]
    fn fill_batch_stops_at_the_message_and_byte_limits() {
        let (tx, mut rx) = mpsc::channel(100);
        for i in 1..40 {
            tx.try_send(vec![append(i, 1000)])
                .expect("room in the queue");
        }
        let by_bytes = BatchLimits {
            max_messages: 1024,
            max_batch_bytes: 1000,
            max_frame_bytes: 10_000,
        };
        let batch = fill_batch(vec![append(0, 1000)], &mut rx, &by_bytes);
        let bytes: usize = batch.iter().map(message_len).sum();
        assert!(batch.len() < 15, "{} messages taken", batch.len());
        assert!((10_000..11_500).contains(&bytes), "{bytes} bytes taken");
        let by_count = BatchLimits {
            max_messages: 5,
            max_batch_bytes: 1000,
            max_frame_bytes: 1 << 30,
        };
        let next = fill_batch(vec![append(100, 1)], &mut rx, &by_count);
        assert_eq!(next.len(), 5);
    }

    #[test]
    fn links_refuse_an_oversized_message_without_queueing() {
        let links = Links::default();
        let errors = ErrorCounts::default();
        let peer = Peer {
            id: "b".into(),
            address: ServerAddress::new("b:1"),
        };
        let mut spawned = 0;
        let refused = links.send(&peer, vec![append(0, 5000)], 4000, &errors, |_| {
            spawned += 1;
            Link::new(4).0
        });
        assert!(matches!(
            refused,
            Err(TransportError::Wire(WireError::TooLarge { max: 4000, .. }))
        ));
        assert_eq!(spawned, 0, "no link started for a refused send");
        assert_eq!(errors.get(ErrorKind::OversizedMessage), 1);
    }
}
