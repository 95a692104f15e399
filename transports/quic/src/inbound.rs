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

use bytes::Bytes;
use raftkit::transport::errors::{ConnError, ErrorKind};
use raftkit::transport::inbound::{MessageSlot, Next, Receiver};
use raftkit::wire::stream::FrameCodec;
use raftkit::wire::{encode_frame, Frame};
use rustls::pki_types::CertificateDer;
use tokio_util::codec::FramedRead;

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
    let (slot, _guard, superseded) = MessageSlot::new();
    let mut frames = FramedRead::new(recv, FrameCodec::new(shared.config.max_frame_bytes));
    let receiver = Receiver {
        cluster: shared.config.cluster,
        local: &shared.id,
        inbound: &inbound,
        slots: &shared.message_slots,
        chunks_buffered: shared.config.snapshot_chunks_buffered,
    };
    let result = tokio::select! {
        _ = shared.cancel.cancelled() => Ok(()),
        _ = superseded.cancelled() => Ok(()),
        r = serve_frames(&receiver, &cert, &mut frames, send, slot) => r,
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

async fn serve_frames(
    receiver: &Receiver<'_>,
    cert: &CertificateDer<'static>,
    frames: &mut Frames,
    send: Option<quinn::SendStream>,
    slot: MessageSlot,
) -> Result<(), ConnError> {
    let Some(from) = receiver.hello(frames).await? else {
        return Ok(());
    };
    if !crate::tls::cert_names(cert, &from) {
        return Err(ConnError::new(
            ErrorKind::IdentityMismatch,
            format!("Hello claims {from}, but its TLS certificate does not name it"),
        ));
    }
    let mut slot = Some(slot);
    let Next::Snapshot(offer) = receiver.messages(frames, &from, &mut slot).await? else {
        return Ok(());
    };
    let Some(mut ack) = send else {
        return Err(ConnError::new(
            ErrorKind::UnexpectedFrame,
            "SnapshotOffer on a one-way stream",
        ));
    };
    if receiver.snapshot(frames, offer).await? {
        acknowledge(receiver, &mut ack).await?;
    }
    Ok(())
}

async fn acknowledge(
    receiver: &Receiver<'_>,
    ack: &mut quinn::SendStream,
) -> Result<(), ConnError> {
    let frame = encode_frame(receiver.cluster, &Frame::SnapshotReceived);
    let len = Bytes::copy_from_slice(&(frame.len() as u32).to_be_bytes());
    let io = |e: &dyn std::fmt::Display| {
        ConnError::new(ErrorKind::Io, format!("sending SnapshotReceived: {e}"))
    };
    ack.write_all_chunks(&mut [len, frame])
        .await
        .map_err(|e| io(&e))?;
    ack.finish().map_err(|e| io(&e))
}
