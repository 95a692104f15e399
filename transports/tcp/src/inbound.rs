//! The listener and the connections it accepts.
//!
//! ```text
//!  accept ─▶ connection task: Hello? ─▶ Messages ─────────▶ inbound stream (Inbound::Message)
//!                                    └▶ SnapshotOffer ─▶ Inbound::Snapshot + chunk channel
//!                                         SnapshotChunk* ─▶ chunk channel ─▶ SnapshotReceived
//!  any bad frame: warn, count raft_transport_errors_total{kind}, close this connection only
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use raftkit::transport::IncomingSnapshot;
use raftkit::wire::{decode_frame, encode_frame, Frame};
use raftkit::{Inbound, NodeId, SnapshotChunk, SnapshotOffer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::codec::FrameCodec;
use crate::errors::{ConnError, ErrorKind};
use crate::transport::{Shared, Stream};

type Conn = Framed<Stream, FrameCodec>;

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%remote, "cannot set TCP_NODELAY: {e}");
                }
                shared.tracker.spawn(serve(shared.clone(), stream, remote));
            }
            Err(e) => {
                shared.errors.record(ErrorKind::Accept);
                tracing::warn!("accept failed: {e}");
                // Out of descriptors, say: give the others time to close.
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// Serves one connection; a protocol error closes it (and only it).
async fn serve(shared: Arc<Shared>, tcp: TcpStream, remote: SocketAddr) {
    let Some(inbound) = shared.inbound_sender() else {
        return;
    };
    // Dropped when this task ends, which tells a newer connection from the
    // same peer that nothing more comes from this one.
    let (_done, done) = watch::channel(());
    let slot = MessageSlot {
        cancel: CancellationToken::new(),
        done,
    };
    let superseded = slot.cancel.clone();
    let result = tokio::select! {
        _ = shared.cancel.cancelled() => Ok(()),
        _ = superseded.cancelled() => Ok(()),
        r = handshake_and_serve(&shared, tcp, &inbound, slot) => r,
    };
    if let Err(e) = result {
        shared.errors.record(e.kind);
        if e.kind == ErrorKind::Io {
            tracing::debug!(%remote, "connection failed: {}", e.detail);
        } else {
            tracing::warn!(%remote, kind = e.kind.as_str(), "closing connection: {}", e.detail);
        }
    }
}

async fn handshake_and_serve(
    shared: &Shared,
    tcp: TcpStream,
    inbound: &mpsc::Sender<Inbound>,
    slot: MessageSlot,
) -> Result<(), ConnError> {
    let (stream, identity) = accept_stream(shared, tcp).await?;
    let mut conn = Framed::new(stream, FrameCodec::new(shared.config.max_frame_bytes));
    serve_frames(shared, &mut conn, &identity, inbound, slot).await
}

/// A connection's claim to be its peer's message connection.
///
/// A sender opens a new message connection only after giving up the old
/// one, but frames of the old one may still wait in this server's buffers.
/// So that they never arrive after the new connection's messages (order per
/// peer), the first `Messages` frame on a new connection stops the old
/// connection's task and waits for it to end: its leftovers are lost, which
/// the contract allows, but never reordered.
#[derive(Debug)]
pub(crate) struct MessageSlot {
    cancel: CancellationToken,
    done: watch::Receiver<()>,
}

/// How long a new message connection waits for its predecessor to stop.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Makes `slot` the message connection of `from`, stopping the previous one.
async fn take_over(shared: &Shared, from: &NodeId, slot: MessageSlot) {
    let previous = shared.claim_message_slot(from, slot);
    if let Some(mut previous) = previous {
        previous.cancel.cancel();
        // `changed` fails once the old task has dropped its sender, i.e. ended.
        let _ = tokio::time::timeout(TAKEOVER_WAIT, previous.done.changed()).await;
    }
}

/// The certificate a TLS peer presented (nothing for plain TCP).
#[derive(Debug, Default)]
struct PeerIdentity {
    #[cfg(feature = "tls")]
    cert: Option<rustls::pki_types::CertificateDer<'static>>,
}

impl PeerIdentity {
    /// Whether the peer may call itself `id`: always over plain TCP; over
    /// TLS only if its certificate names `id`.
    fn permits(&self, id: &NodeId) -> bool {
        #[cfg(feature = "tls")]
        if let Some(cert) = &self.cert {
            return crate::tls::cert_names(cert, id);
        }
        let _ = id;
        true
    }
}

/// Runs the TLS handshake when configured.
async fn accept_stream(
    shared: &Shared,
    tcp: TcpStream,
) -> Result<(Stream, PeerIdentity), ConnError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        let accepted =
            tokio::time::timeout(shared.config.connect_timeout, tls.acceptor.accept(tcp)).await;
        let stream = match accepted {
            Err(_) => return Err(ConnError::new(ErrorKind::Tls, "TLS handshake timed out")),
            Ok(Err(e)) => {
                return Err(ConnError::new(
                    ErrorKind::Tls,
                    format!("TLS handshake failed: {e}"),
                ))
            }
            Ok(Ok(stream)) => stream,
        };
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .cloned();
        return Ok((Box::new(stream), PeerIdentity { cert }));
    }
    let _ = shared;
    Ok((Box::new(tcp), PeerIdentity::default()))
}

async fn serve_frames(
    shared: &Shared,
    conn: &mut Conn,
    identity: &PeerIdentity,
    inbound: &mpsc::Sender<Inbound>,
    slot: MessageSlot,
) -> Result<(), ConnError> {
    let mut slot = Some(slot);
    let from = match next_frame(shared, conn).await? {
        None => return Ok(()),
        Some(Frame::Hello { from }) => from,
        Some(other) => {
            return Err(ConnError::new(
                ErrorKind::UnexpectedFrame,
                format!("first frame is {}, not Hello", frame_name(&other)),
            ))
        }
    };
    if !identity.permits(&from) {
        return Err(ConnError::new(
            ErrorKind::IdentityMismatch,
            format!("Hello claims {from}, but its TLS certificate does not name it"),
        ));
    }
    while let Some(frame) = next_frame(shared, conn).await? {
        match frame {
            Frame::Messages(msgs) => {
                if let Some(slot) = slot.take() {
                    take_over(shared, &from, slot).await;
                }
                for msg in msgs {
                    if msg.from != from {
                        return Err(spoofed(&from, &msg.from));
                    }
                    if msg.to != shared.id {
                        return Err(ConnError::new(
                            ErrorKind::Misaddressed,
                            format!("message for {} reached {}", msg.to, shared.id),
                        ));
                    }
                    if inbound.send(Inbound::Message(msg)).await.is_err() {
                        return Ok(()); // The driver dropped the stream.
                    }
                }
            }
            Frame::SnapshotOffer(offer) => {
                if offer.from != from {
                    return Err(spoofed(&from, &offer.from));
                }
                receive_snapshot(shared, conn, inbound, offer).await?;
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

/// Forwards one snapshot stream's chunks, checking their order, and
/// acknowledges it once the last chunk is handed over.
async fn receive_snapshot(
    shared: &Shared,
    conn: &mut Conn,
    inbound: &mpsc::Sender<Inbound>,
    offer: SnapshotOffer,
) -> Result<(), ConnError> {
    let size = offer.meta.size;
    let (tx, chunks) = mpsc::channel(shared.config.snapshot_chunks_buffered);
    if inbound
        .send(Inbound::Snapshot(IncomingSnapshot { offer, chunks }))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut expected = 0u64;
    loop {
        let Some(frame) = next_frame(shared, conn).await? else {
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
            let ack = encode_frame(shared.config.cluster, &Frame::SnapshotReceived);
            return conn.send(ack).await.map_err(|e| {
                ConnError::new(ErrorKind::Io, format!("sending SnapshotReceived: {e}"))
            });
        }
    }
}

async fn next_frame(shared: &Shared, conn: &mut Conn) -> Result<Option<Frame>, ConnError> {
    match conn.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(bytes)) => decode(shared, &bytes).map(Some),
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
