//! One long-lived outbound connection per peer, fed by a bounded queue.
//!
//! ```text
//!  send() ─┬─ link idle, plain TCP: written on the caller's thread ────────────┐
//!          └─ try_send ─▶ queue (bounded) ─▶ link task ──Messages frames──▶ TCP ──▶ peer
//!                                              │ connect (Hello first), batch, write
//!                                              └ on failure: drop the queue, answer
//!                                                Unreachable and retry with backoff
//!                                                while sends keep coming
//! ```
//!
//! The queue, backoff and batching are [`raftkit::transport::link`]'s.
//!
//! While the link task waits with nothing queued on a plain TCP connection,
//! it leaves the socket in its [`Direct`]: `send` then encodes and writes a
//! batch itself, as far as the socket takes it without waiting, and wakes
//! nobody. What the socket does not take goes to the task, which writes it
//! before anything else; until then every `send` queues. TLS connections
//! always go through the task (their writer is not shared).

use std::io::IoSlice;
use std::sync::{Arc, Mutex, Weak};

use bytes::Buf;
use raftkit::transport::errors::ErrorKind;
use raftkit::transport::link::{
    drain_closed, encode_messages, fill_batch, reconnect, Backoff, Encoded, Link, LinkState,
    Reconnect, Reconnecting, SendNow,
};
use raftkit::wire::stream::{CodecError, PrefixedFrames};
use raftkit::wire::{encode_frame, message_len, Frame, FrameChunks};
use raftkit::{Message, Peer, TransportError};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

use crate::transport::{connect, connect_tcp, lock, uses_tls, Shared, Stream};

enum Conn {
    /// Plain TCP: `send` may write too, while the link is idle.
    Plain(Arc<TcpStream>),
    /// TLS: only the link task writes.
    Tls {
        read: ReadHalf<Stream>,
        write: WriteHalf<Stream>,
    },
}

/// Starts the link task for `peer` and returns its handle.
pub(crate) fn spawn_link(shared: &Arc<Shared>, peer: Peer) -> Link {
    let (mut link, rx) = Link::new(shared.config.send_queue_batches);
    let direct = Arc::new(Direct {
        shared: Arc::downgrade(shared),
        state: Mutex::default(),
        leftover: Notify::new(),
    });
    link.now = Some(direct.clone());
    let task = run_link(shared.clone(), peer, rx, link.state.clone(), direct);
    shared.tracker.spawn(task);
    link
}

/// The most message bytes `send` writes on the caller's thread. A write
/// costs the caller the copy into the kernel and, on loopback, the
/// receiving side's work too; past a few small messages that costs more than
/// waking the link task, which also gathers queued batches into few writes
/// (64 KiB batches over plain TCP moved at the rate of TLS ones when every
/// batch was written where it was sent).
const DIRECT_WRITE_MAX: usize = 32 << 10;

/// Lets `send` write on a plain TCP connection while its link is idle.
#[derive(Debug)]
pub(crate) struct Direct {
    shared: Weak<Shared>,
    state: Mutex<DirectState>,
    /// Wakes the link task when a write left bytes over.
    leftover: Notify,
}

#[derive(Debug, Default)]
struct DirectState {
    /// The connection, while the link task waits with nothing queued and
    /// nothing left over; `None` sends everything through the queue.
    idle: Option<Arc<TcpStream>>,
    /// What a write on the caller's thread did not finish: the link task
    /// writes it before anything queued after it.
    rest: Option<(PrefixedFrames, Encoded)>,
    /// A batch was written on the caller's thread since the task last
    /// looked: the link is in use, not idle.
    used: bool,
}

impl SendNow for Direct {
    fn send_or_queue(
        &self,
        msgs: Vec<Message>,
        queue: &mpsc::Sender<Vec<Message>>,
    ) -> Result<(), mpsc::error::TrySendError<Vec<Message>>> {
        let mut state = lock(&self.state);
        let (Some(socket), Some(shared)) = (state.idle.clone(), self.shared.upgrade()) else {
            return queue.try_send(msgs);
        };
        if msgs.iter().map(message_len).sum::<usize>() > DIRECT_WRITE_MAX {
            // Large batches go through the task, which writes them in
            // parallel with the caller and gathers what queues behind
            // them into few writes. Sends queue behind this one.
            state.idle = None;
            return queue.try_send(msgs);
        }
        let limits = shared.config.batch_limits();
        let mut encoded = encode_messages(shared.config.cluster, msgs, &limits, &shared.errors);
        let frames = std::mem::take(&mut encoded.frames);
        // encode_messages keeps every frame within max_frame_bytes.
        let Ok(mut out) = PrefixedFrames::new(frames, shared.config.max_frame_bytes) else {
            shared.errors.record(ErrorKind::OversizedMessage);
            return Ok(());
        };
        state.used = true;
        if let Ok(true) = write_now(&socket, &mut out) {
            encoded.record_sent();
            return Ok(());
        }
        // The socket is full (or failed): the task finishes (or finds the
        // error and reconnects); later sends queue behind it.
        state.idle = None;
        state.rest = Some((out, encoded));
        drop(state);
        self.leftover.notify_one();
        Ok(())
    }
}

impl Direct {
    /// The task is about to wait: if nothing is queued or left over, `send`
    /// may write on `socket` itself until [`Direct::busy`].
    fn idle(&self, socket: &Arc<TcpStream>, queue: &mpsc::Receiver<Vec<Message>>) {
        let mut state = lock(&self.state);
        if state.rest.is_none() && queue.is_empty() {
            state.idle = Some(socket.clone());
        }
    }

    /// The task is back: `send` queues again. Returns what a write on the
    /// caller's thread left over.
    fn busy(&self) -> Option<(PrefixedFrames, Encoded)> {
        let mut state = lock(&self.state);
        state.idle = None;
        state.rest.take()
    }

    /// At the idle timeout: `false` if a batch was written on the caller's
    /// thread since the last call; otherwise `true`, and `send` queues from
    /// now on (one lock for both, so no write slips in between).
    fn close_if_unused(&self) -> bool {
        let mut state = lock(&self.state);
        if std::mem::take(&mut state.used) {
            return false;
        }
        state.idle = None;
        true
    }
}

/// Writes as much of `out` as `socket` takes without waiting; `true` once
/// all of it is written.
fn write_now(socket: &TcpStream, out: &mut PrefixedFrames) -> std::io::Result<bool> {
    while out.has_remaining() {
        let tried = {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = out.chunks_vectored(&mut slices);
            socket.try_write_vectored(&slices[..n])
        };
        match tried {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => out.advance(written),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `out` to `socket`, waiting for room.
async fn write_all(socket: &TcpStream, out: &mut PrefixedFrames) -> std::io::Result<()> {
    while !write_now(socket, out)? {
        socket.writable().await?;
    }
    Ok(())
}

async fn run_link(
    shared: Arc<Shared>,
    peer: Peer,
    mut queue: mpsc::Receiver<Vec<Message>>,
    state: Arc<LinkState>,
    direct: Arc<Direct>,
) {
    let config = &shared.config;
    let limits = config.batch_limits();
    let mut backoff = Backoff::new(&shared.id, &peer, config.backoff_min, config.backoff_max);
    let mut conn: Option<Conn> = None;
    loop {
        if let Some(Conn::Plain(socket)) = &conn {
            direct.idle(socket, &queue);
        }
        let first = tokio::select! {
            _ = shared.cancel.cancelled() => {
                direct.busy();
                return;
            }
            batch = queue.recv() => match batch {
                Some(batch) => Some(batch),
                None => {
                    direct.busy();
                    return;
                }
            },
            () = direct.leftover.notified() => None,
            () = peer_closed(&mut conn) => {
                tracing::debug!(peer = %peer.id, "peer closed the connection");
                direct.busy();
                conn = None;
                continue;
            }
            _ = tokio::time::sleep(config.link_idle_timeout) => {
                if !direct.close_if_unused() {
                    continue;
                }
                // A peer nobody sends to any more (removed, say): free the
                // task and the socket. `send` starts a new link when needed.
                tracing::debug!(peer = %peer.id, "link idle; closing it");
                let rest = drain_closed(&mut queue);
                if let (Some(c), false) = (conn.as_mut(), rest.is_empty()) {
                    let _ = write_batch(&shared, c, rest).await;
                }
                return;
            }
        };
        let plain = match &conn {
            Some(Conn::Plain(socket)) => Some(socket.clone()),
            _ => None,
        };
        if let (Some((out, encoded)), Some(socket)) = (direct.busy(), plain) {
            let written = tokio::select! {
                _ = shared.cancel.cancelled() => return,
                w = write_plain(&shared, &socket, out) => w,
            };
            match written {
                Ok(()) => encoded.record_sent(),
                Err(e) => {
                    shared.errors.record(ErrorKind::Io);
                    tracing::debug!(peer = %peer.id, "write failed ({e}); reconnecting");
                    conn = None;
                }
            }
        }
        let Some(first) = first else { continue };
        let batch = fill_batch(first, &mut queue, &limits);
        if conn.is_none() {
            let r = Reconnecting {
                peer: &peer,
                cancel: &shared.cancel,
                queue: &mut queue,
                state: &state,
                backoff: &mut backoff,
                errors: &shared.errors,
            };
            match reconnect(r, || open(&shared, &peer)).await {
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

/// Connects and says Hello.
async fn open(shared: &Shared, peer: &Peer) -> Result<Conn, TransportError> {
    let hello = encode_frame(
        shared.config.cluster,
        &Frame::Hello {
            from: shared.id.clone(),
        },
    );
    let hello = vec![hello.into()];
    if !uses_tls(shared) {
        let mut socket = connect_tcp(shared, peer).await?;
        write_frames(shared, &mut socket, hello, "writing a frame").await?;
        return Ok(Conn::Plain(Arc::new(socket)));
    }
    let stream = connect(shared, peer).await?;
    let (read, mut write) = tokio::io::split(stream);
    write_frames(shared, &mut write, hello, "writing a frame").await?;
    Ok(Conn::Tls { read, write })
}

/// Resolves when the peer closes a connection (it never sends on one).
async fn peer_closed(conn: &mut Option<Conn>) {
    let mut byte = [0u8; 1];
    match conn {
        Some(Conn::Tls { read, .. }) => {
            let _ = read.read(&mut byte).await;
        }
        Some(Conn::Plain(socket)) => loop {
            if socket.readable().await.is_err() {
                return;
            }
            match socket.try_read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        },
        None => std::future::pending().await,
    }
}

/// Writes `msgs` as `Messages` frames within the batching limits.
async fn write_batch(
    shared: &Shared,
    c: &mut Conn,
    msgs: Vec<Message>,
) -> Result<(), TransportError> {
    let limits = shared.config.batch_limits();
    let mut encoded = encode_messages(shared.config.cluster, msgs, &limits, &shared.errors);
    let frames = std::mem::take(&mut encoded.frames);
    match c {
        Conn::Tls { write, .. } => {
            write_frames(shared, write, frames, "writing messages").await?;
        }
        Conn::Plain(socket) => {
            let out = PrefixedFrames::new(frames, shared.config.max_frame_bytes)?;
            write_plain(shared, socket, out).await?;
        }
    }
    encoded.record_sent();
    Ok(())
}

/// Writes `out` to a plain TCP connection within the write timeout.
async fn write_plain(
    shared: &Shared,
    socket: &TcpStream,
    mut out: PrefixedFrames,
) -> Result<(), TransportError> {
    match timeout(shared.config.write_timeout, write_all(socket, &mut out)).await {
        Err(_) => Err(write_timed_out()),
        Ok(Err(e)) => Err(io_error("writing messages", e)),
        Ok(Ok(())) => Ok(()),
    }
}

/// Writes each frame behind its 4-byte length straight to the socket with
/// vectored writes (no frame is copied into a codec's buffer, shared
/// payloads included), then flushes, within the write timeout; returns the
/// bytes written. `context` names the write in an error.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    shared: &Shared,
    stream: &mut W,
    frames: Vec<FrameChunks>,
    context: &str,
) -> Result<usize, TransportError> {
    let mut out = PrefixedFrames::new(frames, shared.config.max_frame_bytes)?;
    let bytes = out.remaining();
    let write = async {
        stream.write_all_buf(&mut out).await?;
        stream.flush().await
    };
    match timeout(shared.config.write_timeout, write).await {
        Err(_) => Err(write_timed_out()),
        Ok(Err(e)) => Err(io_error(context, e)),
        Ok(Ok(())) => Ok(bytes),
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

/// A framing error as a transport error: the socket's own, or the codec's
/// (a frame over `max_frame_bytes`) as `InvalidData`.
pub(crate) fn codec_error(context: &str, e: CodecError) -> TransportError {
    match e {
        CodecError::Io(source) => io_error(context, source),
        other => io_error(
            context,
            std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use raftkit::testing::transport::{heartbeat, seq_of, sized_append};
    use raftkit::wire::decode_frame;
    use raftkit::Transport;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket};

    use super::*;
    use crate::{TcpConfig, TcpTransport};

    /// A connected pair over loopback with small socket buffers.
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpSocket::new_v4().expect("socket");
        listener.set_recv_buffer_size(64 << 10).expect("rcvbuf");
        listener
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let listener: TcpListener = listener.listen(1).expect("listen");
        let client = TcpSocket::new_v4().expect("socket");
        client.set_send_buffer_size(64 << 10).expect("sndbuf");
        let addr = listener.local_addr().expect("local address");
        let (client, accepted) = tokio::join!(client.connect(addr), listener.accept());
        (
            Arc::new(client.expect("connect")),
            accepted.expect("accept").0,
        )
    }

    /// A transport (for its settings and counters), a [`Direct`] on it, a
    /// link queue and a connected pair of sockets.
    type Setup = (
        TcpTransport,
        Direct,
        mpsc::Sender<Vec<Message>>,
        mpsc::Receiver<Vec<Message>>,
        Arc<TcpStream>,
        TcpStream,
    );

    async fn setup() -> Setup {
        let t = TcpTransport::bind(
            "a".into(),
            "127.0.0.1:0".parse().expect("address"),
            TcpConfig::default(),
        )
        .await
        .expect("bind");
        let direct = Direct {
            shared: Arc::downgrade(&t.shared),
            state: Mutex::default(),
            leftover: Notify::new(),
        };
        let (tx, rx) = mpsc::channel(8);
        let (socket, peer) = pair().await;
        (t, direct, tx, rx, socket, peer)
    }

    /// Reads one frame and returns the sequence numbers of its messages.
    async fn read_frame(t: &TcpTransport, from: &mut TcpStream) -> Vec<u64> {
        let len = from.read_u32().await.expect("length prefix") as usize;
        let mut body = vec![0; len];
        from.read_exact(&mut body).await.expect("frame body");
        match decode_frame(t.shared.config.cluster, &body) {
            Ok(Frame::Messages(msgs)) => msgs.iter().map(seq_of).collect(),
            other => panic!("not a Messages frame: {other:?}"),
        }
    }

    fn hb(seq: u64) -> Vec<Message> {
        vec![heartbeat(&"a".into(), &"b".into(), seq, 0)]
    }

    #[tokio::test]
    async fn an_idle_link_writes_on_the_callers_thread_and_a_busy_one_queues() {
        let (t, direct, tx, mut rx, socket, mut peer) = setup().await;

        direct.send_or_queue(hb(0), &tx).expect("queued");
        let queued = rx
            .try_recv()
            .expect("before the task idles, a batch is queued");
        assert_eq!(seq_of(&queued[0]), 0);

        direct.idle(&socket, &rx);
        direct.send_or_queue(hb(1), &tx).expect("written");
        assert!(rx.is_empty(), "an idle link queued a batch it could write");
        assert_eq!(read_frame(&t, &mut peer).await, vec![1]);

        assert!(direct.busy().is_none(), "nothing was left over");
        direct.send_or_queue(hb(2), &tx).expect("queued");
        assert_eq!(seq_of(&rx.try_recv().expect("a busy link queues")[0]), 2);

        // A batch still queued keeps the link from going idle.
        direct.send_or_queue(hb(3), &tx).expect("queued");
        direct.idle(&socket, &rx);
        direct.send_or_queue(hb(4), &tx).expect("queued");
        assert_eq!(rx.len(), 2, "a send overtook a queued batch");
        t.shutdown().await;
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_waits_for_the_task_in_order() {
        let (t, direct, tx, mut rx, socket, mut peer) = setup().await;

        // Appends just under DIRECT_WRITE_MAX until the socket, whose
        // buffers are small and which nobody reads, leaves one half-written.
        direct.idle(&socket, &rx);
        let size = DIRECT_WRITE_MAX - 1024;
        let mut sent = 0;
        while lock(&direct.state).rest.is_none() {
            assert!(
                sent < 1000,
                "1000 appends of {size} bytes never filled the socket"
            );
            direct
                .send_or_queue(vec![sized_append(sent, size)], &tx)
                .expect("accepted");
            sent += 1;
        }
        assert!(rx.is_empty(), "appends were queued while the link was idle");
        assert!(
            lock(&direct.state).idle.is_none(),
            "a link with bytes left over still lets sends write"
        );
        direct.send_or_queue(hb(sent), &tx).expect("queued");
        assert_eq!(rx.len(), 1, "a send after the leftover must queue");
        timeout(Duration::from_secs(5), direct.leftover.notified())
            .await
            .expect("the task was not woken for the leftover");

        // The task's part: the rest, then what was queued.
        let (mut rest, _) = direct.busy().expect("the rest is the task's");
        let writer = async {
            write_all(&socket, &mut rest).await.expect("write the rest");
            let batch = rx.try_recv().expect("the queued batch");
            let limits = t.shared.config.batch_limits();
            let mut encoded =
                encode_messages(t.shared.config.cluster, batch, &limits, &t.shared.errors);
            let frames = std::mem::take(&mut encoded.frames);
            let mut out = PrefixedFrames::new(frames, limits.max_frame_bytes).expect("frames");
            write_all(&socket, &mut out).await.expect("write the batch");
        };
        let reader = async {
            let mut seqs = Vec::new();
            while seqs.len() <= sent as usize {
                seqs.extend(read_frame(&t, &mut peer).await);
            }
            seqs
        };
        let ((), seqs) = tokio::join!(writer, reader);
        assert_eq!(
            seqs,
            (0..=sent).collect::<Vec<_>>(),
            "the peer got the written appends, the rest and the queued batch out of order"
        );
        t.shutdown().await;
    }

    #[tokio::test]
    async fn a_large_batch_goes_through_the_task_and_later_sends_queue_behind_it() {
        let (t, direct, tx, mut rx, socket, mut peer) = setup().await;

        direct.idle(&socket, &rx);
        direct
            .send_or_queue(vec![sized_append(0, DIRECT_WRITE_MAX)], &tx)
            .expect("queued");
        direct.send_or_queue(hb(1), &tx).expect("queued");
        assert_eq!(rx.len(), 2, "a small send overtook a large queued one");
        assert_eq!(seq_of(&rx.try_recv().expect("the large batch")[0]), 0);
        assert!(
            direct.busy().is_none(),
            "nothing was written on the caller's thread"
        );
        direct.idle(&socket, &rx);
        assert!(
            lock(&direct.state).idle.is_none(),
            "the link went idle with a batch still queued"
        );
        assert_eq!(seq_of(&rx.try_recv().expect("the small batch")[0]), 1);
        direct.idle(&socket, &rx);
        direct.send_or_queue(hb(2), &tx).expect("written");
        assert!(rx.is_empty(), "an idle link queued a small batch");
        assert_eq!(read_frame(&t, &mut peer).await, vec![2]);
        t.shutdown().await;
    }
}
