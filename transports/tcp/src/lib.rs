//! A TCP [`Transport`](raftkit::Transport) for raftkit.
//!
//! Every frame on the wire is a [`raftkit::wire`] frame inside a 4-byte
//! length prefix, at most [`TcpConfig::max_frame_bytes`] long. The first frame
//! on every connection is `Hello { from }`. Messages and snapshots never
//! share a connection:
//!
//! ```text
//!  A.send(B, msgs) ─▶ A's queue for B (bounded) ─▶ link task ══ one long-lived connection ══▶ B's inbound
//!                                                  Hello, Messages[..], Messages[..], ...
//!  A.send_snapshot(B, ..) ═══ a connection of its own ═══▶ B: Inbound::Snapshot + chunk channel
//!                             Hello, SnapshotOffer, SnapshotChunk*, ◀── SnapshotReceived
//! ```
//!
//! * **Pipelined and batched**: the link task never waits for a reply; it
//!   takes what is queued (up to [`TcpConfig::batch_max_messages`] messages
//!   and [`TcpConfig::max_frame_bytes`] bytes) into one write of `Messages`
//!   frames of at most [`TcpConfig::batch_max_bytes`]. A message that no
//!   frame can carry is refused by `send` (`TransportError::Wire`, naming
//!   its size and the maximum). `TCP_NODELAY` is set on every socket.
//! * **Written on the spot when idle**: on a plain TCP connection whose
//!   link task has nothing queued, `send` encodes and writes the batch
//!   itself, as far as the socket takes it without waiting, and wakes no
//!   task; the link task writes whatever is left before anything queued
//!   after it, and until then `send` queues. Order is kept either way. (TLS
//!   connections always go through the link task.)
//! * **Bounded**: a full queue makes `send` answer `Backpressure`. When a
//!   connection attempt fails, the queue is dropped (Raft retries) and `send`
//!   answers `Unreachable`, queueing nothing, until a reconnect succeeds.
//!   Reconnects back off exponentially with seeded jitter, and stop when a
//!   whole backoff passes without a send to that peer.
//! * **Hostile input closes only its connection**: garbage, an oversized
//!   length prefix, a wrong version or cluster, a missing `Hello`, or a
//!   message whose sender differs from the `Hello`: the connection is
//!   closed, a `tracing` warning says why, and `raft_transport_errors_total
//!   {kind}` (through the `metrics` facade) counts it. Decoding never panics.
//! * **Mutual TLS** (feature `tls`, on by default; `TcpConfig::tls`):
//!   rustls with the `ring` provider, certificates from PEM files. Both sides
//!   present a certificate signed by the cluster's CA whose DNS subject
//!   alternative name is the server id: the dialler checks that the
//!   listener's certificate names the peer it meant to reach, and the
//!   listener checks that the dialler's certificate names the id it claims in
//!   `Hello` (`identity_mismatch` otherwise).
//!
//! Without TLS nothing is authenticated: any host that reaches the port can
//! claim any id. Run plain TCP on a trusted network only.
//!
//! ```
//! use raftkit::testing::transport::heartbeat;
//! use raftkit::{Inbound, Peer, Transport};
//! use raftkit_tcp::{TcpConfig, TcpTransport};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let any = "127.0.0.1:0".parse().unwrap();
//! let a = TcpTransport::bind("a".into(), any, TcpConfig::default()).await.unwrap();
//! let b = TcpTransport::bind("b".into(), any, TcpConfig::default()).await.unwrap();
//! let mut inbound = b.take_inbound().unwrap();
//!
//! let to_b = Peer { id: "b".into(), address: b.local_addr() };
//! a.send(&to_b, vec![heartbeat(&"a".into(), &"b".into(), 1, 0)]).unwrap();
//! match inbound.recv().await {
//!     Some(Inbound::Message(m)) => assert_eq!(m.from.as_str(), "a"),
//!     other => panic!("expected a message, got {other:?}"),
//! }
//! a.shutdown().await;
//! b.shutdown().await;
//! # });
//! ```

mod config;
mod inbound;
mod outbound;
mod snapshot;
#[cfg(feature = "tls")]
mod tls;
mod transport;

pub use config::{TcpConfig, TcpConfigError};
pub use raftkit::transport::errors::{
    ErrorKind, BYTES_SENT_METRIC, ERRORS_METRIC, MESSAGES_SENT_METRIC,
};
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsError};
pub use transport::{BindError, TcpTransport};
