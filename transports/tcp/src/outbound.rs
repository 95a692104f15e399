//! One long-lived outbound connection per peer, fed by a bounded queue.
//!
//! ```text
//!  send() ──try_send──▶ queue (bounded) ──▶ link task ──Messages frames──▶ TCP ──▶ peer
//!                                             │ connect (Hello first), batch, write
//!                                             └ on failure: drop the queue, answer
//!                                               Unreachable and retry with backoff
//!                                               while sends keep coming
//! ```

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use raftkit::wire::{encode_frame, Frame};
use raftkit::{Message, Peer, TransportError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::AsyncReadExt;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::FramedWrite;

use crate::codec::FrameCodec;
use crate::errors::{ErrorKind, BYTES_SENT_METRIC, MESSAGES_SENT_METRIC};
use crate::transport::{connect, Shared, Stream};

/// A peer's queue and its reachability.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) queue: mpsc::Sender<Vec<Message>>,
    pub(crate) state: Arc<LinkState>,
}

/// Whether a peer is unreachable, and whether anyone still wants it.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    /// Why the last connection attempt failed; `None` while connected or
    /// not yet tried.
    down: Mutex<Option<String>>,
    /// A send was refused since the last attempt: keep retrying.
    wanted: AtomicBool,
}

impl LinkState {
    /// Why the peer is unreachable, if it is. Marks the peer as wanted, so
    /// the link keeps trying to reconnect.
    pub(crate) fn refuse(&self) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if down.is_some() {
            self.wanted.store(true, Ordering::Release);
        }
        down
    }

    fn set_down(&self, reason: String) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    fn set_up(&self) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }
}

struct Conn {
    read: ReadHalf<Stream>,
    write: FramedWrite<WriteHalf<Stream>, FrameCodec>,
}

/// Starts the link task for `peer` and returns its handle.
pub(crate) fn spawn_link(shared: &Arc<Shared>, peer: Peer) -> Link {
    let (queue, rx) = mpsc::channel(shared.config.send_queue_batches);
    let state = Arc::new(LinkState::default());
    let task = run_link(shared.clone(), peer, rx, state.clone());
    shared.tracker.spawn(task);
    Link { queue, state }
}

async fn run_link(
    shared: Arc<Shared>,
    peer: Peer,
    mut queue: mpsc::Receiver<Vec<Message>>,
    state: Arc<LinkState>,
) {
    let mut backoff = Backoff::new(&shared, &peer);
    let mut conn: Option<Conn> = None;
    loop {
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            batch = queue.recv() => match batch {
                Some(batch) => batch,
                None => return,
            },
            () = peer_closed(&mut conn) => {
                tracing::debug!(peer = %peer.id, "peer closed the connection");
                conn = None;
                continue;
            }
            _ = tokio::time::sleep(shared.config.link_idle_timeout) => {
                // A peer nobody sends to any more (removed, say): free the
                // task and the socket. `send` starts a new link when needed.
                tracing::debug!(peer = %peer.id, "link idle; closing it");
                queue.close();
                let mut rest = Vec::new();
                while let Ok(batch) = queue.try_recv() {
                    rest.extend(batch);
                }
                if let (Some(c), false) = (conn.as_mut(), rest.is_empty()) {
                    let _ = write_batch(&shared, c, rest).await;
                }
                return;
            }
        };
        let mut batch = first;
        while batch.len() < shared.config.batch_max_messages {
            match queue.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match reconnect(&shared, &peer, &mut queue, &state, &mut backoff).await {
                Reconnect::Connected(c) => conn = Some(c),
                Reconnect::GaveUp => continue,
                Reconnect::Cancelled => return,
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let written = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            w = write_batch(&shared, c, batch) => w,
        };
        if let Err(e) = written {
            shared.errors.record(ErrorKind::Io);
            tracing::debug!(peer = %peer.id, "write failed ({e}); reconnecting");
            conn = None;
        }
    }
}

enum Reconnect {
    Connected(Conn),
    /// Nobody sent to the peer during the last backoff: stop trying until
    /// the next message (which `send` accepts again).
    GaveUp,
    Cancelled,
}

/// Connects. While attempts fail, `send` answers `Unreachable` (queueing
/// nothing) and attempts repeat with backoff as long as sends keep coming.
async fn reconnect(
    shared: &Shared,
    peer: &Peer,
    queue: &mut mpsc::Receiver<Vec<Message>>,
    state: &LinkState,
    backoff: &mut Backoff,
) -> Reconnect {
    loop {
        let connected = tokio::select! {
            _ = shared.cancel.cancelled() => return Reconnect::Cancelled,
            c = open(shared, peer) => c,
        };
        let e = match connected {
            Ok(c) => {
                backoff.reset();
                state.set_up();
                return Reconnect::Connected(c);
            }
            Err(e) => e,
        };
        shared.errors.record(ErrorKind::Connect);
        let wait = backoff.next_delay();
        tracing::debug!(peer = %peer.id, address = %peer.address, "connect failed ({e}); retrying in {wait:?}");
        state.set_down(e.to_string());
        // Raft retries: what was queued for an unreachable peer is stale.
        while queue.try_recv().is_ok() {}
        tokio::select! {
            _ = shared.cancel.cancelled() => return Reconnect::Cancelled,
            _ = tokio::time::sleep(wait) => {}
        }
        if !state.take_wanted() {
            state.set_up();
            return Reconnect::GaveUp;
        }
    }
}

/// Connects and says Hello.
async fn open(shared: &Shared, peer: &Peer) -> Result<Conn, TransportError> {
    let stream = connect(shared, peer).await?;
    let (read, write) = tokio::io::split(stream);
    let mut write = FramedWrite::new(write, FrameCodec::new(shared.config.max_frame_bytes));
    let hello = encode_frame(
        shared.config.cluster,
        &Frame::Hello {
            from: shared.id.clone(),
        },
    );
    send_frame(shared, &mut write, hello, false).await?;
    Ok(Conn { read, write })
}

/// Resolves when the peer closes a connection (it never sends on one).
async fn peer_closed(conn: &mut Option<Conn>) {
    match conn {
        Some(c) => {
            let mut byte = [0u8; 1];
            let _ = c.read.read(&mut byte).await;
        }
        None => std::future::pending().await,
    }
}

/// Writes `msgs` as `Messages` frames (split to fit `max_frame_bytes`), then flushes.
async fn write_batch(
    shared: &Shared,
    c: &mut Conn,
    msgs: Vec<Message>,
) -> Result<(), TransportError> {
    let mut kinds: Vec<(&'static str, u64)> = Vec::new();
    for msg in &msgs {
        let kind = msg.body.kind();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    let mut frames = Vec::new();
    encode_batches(shared, msgs, &mut frames);
    let bytes: usize = frames.iter().map(|f| f.len() + 4).sum();
    for frame in frames {
        send_frame(shared, &mut c.write, frame, true).await?;
    }
    timeout(shared.config.write_timeout, c.write.flush())
        .await
        .map_err(|_| write_timed_out())?
        .map_err(|e| codec_error("flushing messages", e))?;
    for (kind, n) in kinds {
        metrics::counter!(MESSAGES_SENT_METRIC, "kind" => kind).increment(n);
    }
    metrics::counter!(BYTES_SENT_METRIC, "kind" => "messages").increment(bytes as u64);
    Ok(())
}

/// Encodes `msgs` into frames no larger than the maximum, halving batches
/// that come out too large; a single message too large is dropped.
fn encode_batches(shared: &Shared, msgs: Vec<Message>, out: &mut Vec<Bytes>) {
    let frame = encode_frame(shared.config.cluster, &Frame::Messages(msgs));
    if frame.len() <= shared.config.max_frame_bytes {
        out.push(frame);
        return;
    }
    let Frame::Messages(mut msgs) = decode_own(shared, &frame) else {
        return;
    };
    if msgs.len() == 1 {
        shared.errors.record(ErrorKind::OversizedMessage);
        tracing::warn!(
            len = frame.len(),
            max = shared.config.max_frame_bytes,
            kind = msgs[0].body.kind(),
            "dropping a message larger than max_frame_bytes"
        );
        return;
    }
    let tail = msgs.split_off(msgs.len() / 2);
    encode_batches(shared, msgs, out);
    encode_batches(shared, tail, out);
}

/// Decodes a frame this transport just encoded (only on the rare oversize
/// path, to get the messages back without cloning every batch up front).
fn decode_own(shared: &Shared, frame: &[u8]) -> Frame {
    match raftkit::wire::decode_frame(shared.config.cluster, frame) {
        Ok(f) => f,
        // Our own encoding always decodes; if it did not, drop the batch.
        Err(_) => Frame::Messages(Vec::new()),
    }
}

/// Queues one frame for writing (flushing when `feed_only` is false).
pub(crate) async fn send_frame(
    shared: &Shared,
    write: &mut FramedWrite<WriteHalf<Stream>, FrameCodec>,
    frame: Bytes,
    feed_only: bool,
) -> Result<(), TransportError> {
    let fut = async {
        if feed_only {
            write.feed(frame).await
        } else {
            write.send(frame).await
        }
    };
    match timeout(shared.config.write_timeout, fut).await {
        Err(_) => Err(write_timed_out()),
        Ok(Err(e)) => Err(codec_error("writing a frame", e)),
        Ok(Ok(())) => Ok(()),
    }
}

fn write_timed_out() -> TransportError {
    io_error(
        "writing to the peer",
        std::io::Error::from(std::io::ErrorKind::TimedOut),
    )
}

fn io_error(context: &str, source: std::io::Error) -> TransportError {
    TransportError::Io {
        context: context.to_owned(),
        source,
    }
}

pub(crate) fn codec_error(context: &str, e: crate::codec::CodecError) -> TransportError {
    match e {
        crate::codec::CodecError::Io(source) => io_error(context, source),
        other => io_error(
            context,
            std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        ),
    }
}

/// Exponential reconnect delays with jitter, from a seed derived from the
/// local id and the peer address (deterministic, yet different per pair).
struct Backoff {
    bound: Duration,
    min: Duration,
    max: Duration,
    rng: ChaCha8Rng,
}

impl Backoff {
    fn new(shared: &Shared, peer: &Peer) -> Backoff {
        // DefaultHasher::new() has fixed keys, so the seed is stable.
        let mut hasher = DefaultHasher::new();
        (shared.id.as_str(), peer.address.as_str()).hash(&mut hasher);
        let (min, max) = (shared.config.backoff_min, shared.config.backoff_max);
        Backoff {
            bound: min,
            min,
            max,
            rng: ChaCha8Rng::seed_from_u64(hasher.finish()),
        }
    }

    fn reset(&mut self) {
        self.bound = self.min;
    }

    /// A delay between half and all of the current bound; doubles the bound.
    fn next_delay(&mut self) -> Duration {
        let bound = self.bound;
        self.bound = (self.bound * 2).min(self.max);
        let half = bound / 2;
        half + half.mul_f64(self.rng.random::<f64>())
    }
}
