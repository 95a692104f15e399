//! The endpoint's accept loop, the connections it accepts, and their streams.
//!
//! ```text
//!  accept ─▶ handshake (client cert required) ─▶ connection task
//!     uni stream: Hello? ─▶ Messages ─────────────▶ inbound stream (Inbound::Message)
//!     bi stream:  Hello? ─▶ SnapshotOffer ─▶ Inbound::Snapshot + chunk channel
//!                           SnapshotChunk* ─▶ chunk channel ─▶ SnapshotReceived (back on the stream)
//!  any bad frame: warn, count raft_transport_errors_total{kind}, close this connection only
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use raftkit::transport::IncomingSnapshot;
use raftkit::wire::{decode_frame, encode_frame, Frame};
use raftkit::{Inbound, NodeId, SnapshotChunk, SnapshotOffer};
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::codec::FrameCodec;
use crate::errors::{ConnError, ErrorKind};
use crate::transport::{Shared, CLOSE_PROTOCOL, CLOSE_SHUTDOWN};

type Frames = FramedRead<quinn::RecvStream, FrameCodec>;

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    loop {
        let incoming = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            i = shared.endpoint.accept() => i,
        };
        let Some(incoming) = incoming else {
            return; // The endpoint closed.
        };
        shared
            .tracker
            .spawn(serve_connection(shared.clone(), incoming));
    }
}

/// Completes the handshake, then serves every stream the peer opens.
async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let handshake = tokio::time::timeout(shared.config.connect_timeout, incoming);
    let conn = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        h = handshake => match h {
            Err(_) => return refuse(&shared, remote, ErrorKind::Tls, "QUIC handshake timed out"),
            Ok(Err(e)) => {
                return refuse(&shared, remote, ErrorKind::Tls, &format!("QUIC handshake failed: {e}"))
            }
            Ok(Ok(conn)) => conn,
        },
    };
    let Some(cert) = peer_cert(&conn) else {
        conn.close(CLOSE_PROTOCOL.into(), b"no client certificate");
        return refuse(&shared, remote, ErrorKind::Tls, "no client certificate");
    };
    let cert = Arc::new(cert);
    loop {
        let (recv, send) = tokio::select! {
            _ = shared.cancel.cancelled() => {
                conn.close(CLOSE_SHUTDOWN.into(), b"transport shut down");
                return;
            }
            s = conn.accept_uni() => match s {
                Ok(recv) => (recv, None),
                Err(_) => return, // Closed, by either side.
            },
            s = conn.accept_bi() => match s {
                Ok((send, recv)) => (recv, Some(send)),
                Err(_) => return,
            },
        };
        let stream = serve_stream(
            shared.clone(),
            conn.clone(),
            cert.clone(),
            recv,
            send,
            remote,
        );
        shared.tracker.spawn(stream);
    }
}

fn refuse(shared: &Shared, remote: SocketAddr, kind: ErrorKind, detail: &str) {
    shared.errors.record(kind);
    tracing::warn!(%remote, kind = kind.as_str(), "refusing connection: {detail}");
}

/// The end-entity certificate the peer presented.
fn peer_cert(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}

/// Serves one stream; a protocol error closes its connection (and only it).
async fn serve_stream(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    cert: Arc<CertificateDer<'static>>,
    recv: quinn::RecvStream,
    send: Option<quinn::SendStream>,
    remote: SocketAddr,
) {
    let Some(inbound) = shared.inbound_sender() else {
        return;
    };
    // Dropped when this task ends, which tells a newer message stream from
    // the same peer that nothing more comes from this one.
    let (_done, done) = watch::channel(());
    let slot = MessageSlot {
        cancel: CancellationToken::new(),
        done,
    };
    let superseded = slot.cancel.clone();
    let mut frames = FramedRead::new(recv, FrameCodec::new(shared.config.max_frame_bytes));
    let stream = Stream {
        shared: &shared,
        cert: &cert,
        inbound: &inbound,
    };
    let result = tokio::select! {
        _ = shared.cancel.cancelled() => Ok(()),
        _ = superseded.cancelled() => Ok(()),
        r = stream.serve(&mut frames, send, slot) => r,
    };
    if let Err(e) = result {
        shared.errors.record(e.kind);
        if e.kind == ErrorKind::Io {
            tracing::debug!(%remote, "stream failed: {}", e.detail);
        } else {
            tracing::warn!(%remote, kind = e.kind.as_str(), "closing connection: {}", e.detail);
            conn.close(CLOSE_PROTOCOL.into(), e.kind.as_str().as_bytes());
        }
    }
}

/// A stream's claim to be its peer's message stream.
///
/// A sender opens a new message stream only after giving up the old one,
/// but frames of the old one (on an old connection, say) may still wait
/// in this server's buffers. So that they never arrive after the new
/// stream's messages (order per peer), the first `Messages` frame on a new
/// stream stops the old stream's task and waits for it to end: its
/// leftovers are lost, which the contract allows, but never reordered.
#[derive(Debug)]
pub(crate) struct MessageSlot {
    cancel: CancellationToken,
    done: watch::Receiver<()>,
}

/// How long a new message stream waits for its predecessor to stop.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What serving one stream needs.
struct Stream<'a> {
    shared: &'a Shared,
    cert: &'a CertificateDer<'static>,
    inbound: &'a mpsc::Sender<Inbound>,
}

impl Stream<'_> {
    async fn serve(
        &self,
        frames: &mut Frames,
        send: Option<quinn::SendStream>,
        slot: MessageSlot,
    ) -> Result<(), ConnError> {
        let mut slot = Some(slot);
        let from = match self.next_frame(frames).await? {
            None => return Ok(()),
            Some(Frame::Hello { from }) => from,
            Some(other) => {
                return Err(ConnError::new(
                    ErrorKind::UnexpectedFrame,
                    format!("first frame is {}, not Hello", frame_name(&other)),
                ))
            }
        };
        if !crate::tls::cert_names(self.cert, &from) {
            return Err(ConnError::new(
                ErrorKind::IdentityMismatch,
                format!("Hello claims {from}, but its TLS certificate does not name it"),
            ));
        }
        let mut send = send;
        while let Some(frame) = self.next_frame(frames).await? {
            match frame {
                Frame::Messages(msgs) => {
                    if let Some(slot) = slot.take() {
                        self.take_over(&from, slot).await;
                    }
                    for msg in msgs {
                        if msg.from != from {
                            return Err(spoofed(&from, &msg.from));
                        }
                        if msg.to != self.shared.id {
                            return Err(ConnError::new(
                                ErrorKind::Misaddressed,
                                format!("message for {} reached {}", msg.to, self.shared.id),
                            ));
                        }
                        if self.inbound.send(Inbound::Message(msg)).await.is_err() {
                            return Ok(()); // The driver dropped the stream.
                        }
                    }
                }
                Frame::SnapshotOffer(offer) => {
                    if offer.from != from {
                        return Err(spoofed(&from, &offer.from));
                    }
                    let Some(ack) = send.take() else {
                        return Err(ConnError::new(
                            ErrorKind::UnexpectedFrame,
                            "SnapshotOffer on a one-way stream",
                        ));
                    };
                    return self.receive_snapshot(frames, ack, offer).await;
                }
                other => {
                    return Err(ConnError::new(
                        ErrorKind::UnexpectedFrame,
                        format!("unexpected {} from {from}", frame_name(&other)),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Makes `slot` the message stream of `from`, stopping the previous one.
    async fn take_over(&self, from: &NodeId, slot: MessageSlot) {
        let previous = self.shared.claim_message_slot(from, slot);
        if let Some(mut previous) = previous {
            previous.cancel.cancel();
            // `changed` fails once the old task has dropped its sender, i.e. ended.
            let _ = tokio::time::timeout(TAKEOVER_WAIT, previous.done.changed()).await;
        }
    }

    /// Forwards one snapshot stream's chunks, checking their order, and
    /// acknowledges it once the last chunk is handed over.
    async fn receive_snapshot(
        &self,
        frames: &mut Frames,
        mut ack: quinn::SendStream,
        offer: SnapshotOffer,
    ) -> Result<(), ConnError> {
        let size = offer.meta.size;
        let (tx, chunks) = mpsc::channel(self.shared.config.snapshot_chunks_buffered);
        if self
            .inbound
            .send(Inbound::Snapshot(IncomingSnapshot { offer, chunks }))
            .await
            .is_err()
        {
            return Ok(());
        }
        let mut expected = 0u64;
        loop {
            let Some(frame) = self.next_frame(frames).await? else {
                // The sender gave up; dropping `tx` tells the receiver the
                // stream was aborted (no `done` chunk).
                return Ok(());
            };
            let Frame::SnapshotChunk { offset, data, done } = frame else {
                return Err(ConnError::new(
                    ErrorKind::UnexpectedFrame,
                    format!("{} inside a snapshot stream", frame_name(&frame)),
                ));
            };
            if offset != expected {
                return Err(ConnError::new(
                    ErrorKind::SnapshotStream,
                    format!("snapshot chunk at offset {offset}, expected {expected}"),
                ));
            }
            expected += data.len() as u64;
            if expected > size || (done && expected != size) {
                return Err(ConnError::new(
                    ErrorKind::SnapshotStream,
                    format!(
                        "snapshot stream of {expected} bytes (done: {done}) for an offer of {size}"
                    ),
                ));
            }
            if tx.send(SnapshotChunk { offset, data, done }).await.is_err() {
                return Ok(()); // The driver discarded the snapshot; closing tells the sender.
            }
            if done {
                return self.acknowledge(&mut ack).await;
            }
        }
    }

    async fn acknowledge(&self, ack: &mut quinn::SendStream) -> Result<(), ConnError> {
        let frame = encode_frame(self.shared.config.cluster, &Frame::SnapshotReceived);
        let len = Bytes::copy_from_slice(&(frame.len() as u32).to_be_bytes());
        let io = |e: &dyn std::fmt::Display| {
            ConnError::new(ErrorKind::Io, format!("sending SnapshotReceived: {e}"))
        };
        ack.write_all_chunks(&mut [len, frame])
            .await
            .map_err(|e| io(&e))?;
        ack.finish().map_err(|e| io(&e))
    }

    async fn next_frame(&self, frames: &mut Frames) -> Result<Option<Frame>, ConnError> {
        match frames.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(bytes)) => decode(self.shared, &bytes).map(Some),
        }
    }
}

fn decode(shared: &Shared, bytes: &BytesMut) -> Result<Frame, ConnError> {
    Ok(decode_frame(shared.config.cluster, bytes)?)
}

fn spoofed(hello: &NodeId, claimed: &NodeId) -> ConnError {
    ConnError::new(
        ErrorKind::SpoofedSender,
        format!("{hello} said Hello but sent as {claimed}"),
    )
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "Hello",
        Frame::Messages(_) => "Messages",
        Frame::SnapshotOffer(_) => "SnapshotOffer",
        Frame::SnapshotChunk { .. } => "SnapshotChunk",
        Frame::SnapshotReceived => "SnapshotReceived",
    }
}
