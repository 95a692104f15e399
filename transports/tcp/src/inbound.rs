//! The listener and the connections it accepts.
//!
//! ```text
//!  accept ─▶ connection task: Hello? ─▶ Messages ─────────▶ inbound stream (Inbound::Message)
//!                                    └▶ SnapshotOffer ─▶ Inbound::Snapshot + chunk channel
//!                                         SnapshotChunk* ─▶ chunk channel ─▶ SnapshotReceived
//!  any bad frame: warn, count raft_transport_errors_total{kind}, close this connection only
//! ```
//!
//! Reading and checking frames is [`raftkit::transport::inbound`]'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use raftkit::transport::errors::{ConnError, ErrorKind};
use raftkit::transport::inbound::{MessageSlot, Next, Receiver};
use raftkit::wire::stream::FrameCodec;
use raftkit::wire::{encode_frame, Frame};
use raftkit::{Inbound, NodeId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::transport::{Shared, Stream};

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
    let (slot, _guard, superseded) = MessageSlot::new();
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
    let receiver = Receiver {
        cluster: shared.config.cluster,
        local: &shared.id,
        inbound,
        slots: &shared.message_slots,
        chunks_buffered: shared.config.snapshot_chunks_buffered,
    };
    let Some(from) = receiver.hello(&mut conn).await? else {
        return Ok(());
    };
    if !identity.permits(&from) {
        return Err(ConnError::new(
            ErrorKind::IdentityMismatch,
            format!("Hello claims {from}, but its TLS certificate does not name it"),
        ));
    }
    let mut slot = Some(slot);
    loop {
        let Next::Snapshot(offer) = receiver.messages(&mut conn, &from, &mut slot).await? else {
            return Ok(());
        };
        if !receiver.snapshot(&mut conn, offer).await? {
            return Ok(());
        }
        let ack = encode_frame(shared.config.cluster, &Frame::SnapshotReceived);
        conn.send(ack)
            .await
            .map_err(|e| ConnError::new(ErrorKind::Io, format!("sending SnapshotReceived: {e}")))?;
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
