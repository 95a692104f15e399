//! The transport plug-in trait: ordered one-way messages per peer, plus
//! snapshot streams on the side.
//!
//! ```text
//!  driver ──send(peer, msgs)──▶ per-peer queue ──▶ wire ──▶ peer's inbound stream ──▶ peer's driver
//!  driver ──send_snapshot(peer, offer, reader)──▶ its own stream (chunks) ──▶ Inbound::Snapshot
//! ```
//!
//! A transport never decodes or interprets messages beyond what
//! [`crate::wire`] does, and never waits for a reply before sending the next
//! batch (pipelining is the core's business).
//!
//! The submodules hold what the network transports share: [`errors`] (the
//! `raft_transport_errors_total{kind}` labels), [`link`] (per-peer queues,
//! backoff, batching into frames), [`inbound`] (reading and checking frames)
//! and [`chunks`] (snapshot data in chunks).

pub mod chunks;
pub mod errors;
pub mod inbound;
pub mod limits;
pub mod link;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::message::Message;
use crate::storage::{SnapshotMeta, SnapshotReader};
use crate::types::{NodeId, ServerAddress, Term};

/// A boxed, sendable future (keeps the traits object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A peer as the transport addresses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Its server id.
    pub id: NodeId,
    /// Where it listens.
    pub address: ServerAddress,
}

/// What went wrong in a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer's send queue is full; the messages were not queued.
    #[error("send queue to {0} is full")]
    Backpressure(NodeId),
    /// The peer cannot be reached right now.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// The transport has been shut down.
    #[error("transport is shut down")]
    Shutdown,
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure, e.g. a TLS handshake refused.
    #[error("{0}")]
    Other(String),
}

/// The header of a snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffer {
    /// The sending leader.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The leader's term.
    pub term: Term,
    /// What the snapshot holds (the data's size and CRC included).
    pub meta: SnapshotMeta,
}

/// One piece of a snapshot stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Where `data` starts in the snapshot.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// A snapshot arriving from a peer.
#[derive(Debug)]
pub struct IncomingSnapshot {
    /// Its header.
    pub offer: SnapshotOffer,
    /// Its data, in order. The stream ends after a chunk with `done`; a
    /// stream that ends without one was aborted and must be discarded.
    pub chunks: mpsc::Receiver<SnapshotChunk>,
}

/// Something that arrived from a peer.
#[derive(Debug)]
pub enum Inbound {
    /// A message, in the order the peer sent it.
    Message(Message),
    /// A snapshot stream.
    Snapshot(IncomingSnapshot),
}

/// The receiving end of a transport, taken once by the driver.
pub type InboundStream = mpsc::Receiver<Inbound>;

/// Moves messages between servers (HashiCorp's `Transport`, one-way).
pub trait Transport: Send + Sync + 'static {
    /// The address peers reach this server at.
    fn local_addr(&self) -> ServerAddress;

    /// Takes the inbound stream.
    ///
    /// # Contract
    /// Returns `Some` exactly once; the driver calls it when the node starts.
    /// Messages arriving before that are queued (boundedly) or dropped.
    fn take_inbound(&self) -> Option<InboundStream>;

    /// Queues `msgs` for `to`, after every message queued for `to` before.
    ///
    /// # Contract
    /// Never blocks and never waits for the peer. Delivery is in order per
    /// peer, at most once; messages may be lost (Raft retries). Queues are
    /// bounded: a full queue returns `Backpressure` and queues nothing, so
    /// memory stays bounded when a peer is slow or gone.
    fn send(&self, to: &Peer, msgs: Vec<Message>) -> Result<(), TransportError>;

    /// Streams a snapshot to `to`, apart from the message queue so that
    /// heartbeats and appends never wait behind it.
    ///
    /// # Contract
    /// Resolves `Ok` once the peer's transport has received every chunk.
    /// An error means the peer may hold part of it, which it discards.
    fn send_snapshot(
        &self,
        to: &Peer,
        offer: SnapshotOffer,
        data: SnapshotReader,
    ) -> BoxFuture<'static, Result<(), TransportError>>;

    /// Closes listeners and connections; later sends fail with `Shutdown`.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}
