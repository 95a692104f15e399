//! The transport's settings and their checks.

use std::time::Duration;

use raftkit::wire::ClusterId;

/// Settings of a [`TcpTransport`](crate::TcpTransport).
///
/// ```
/// use raftkit::wire::ClusterId;
/// use raftkit_tcp::TcpConfig;
/// let config = TcpConfig { cluster: ClusterId(7), ..TcpConfig::default() };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The cluster this server belongs to; frames from any other are
    /// refused. Default `ClusterId(0)`.
    pub cluster: ClusterId,
    /// The largest frame accepted or sent, in bytes (the length prefix
    /// excluded). Default 16 MiB: a 1 MiB snapshot chunk or a batch of
    /// entries fits with room to spare, and a hostile 4 GiB length prefix
    /// is refused before any memory is reserved.
    pub max_frame_bytes: usize,
    /// `send` calls queued per peer before `send` answers `Backpressure`.
    /// Default 1024: with the driver's batches of up to 64 messages that is
    /// 65 536 messages waiting for one slow peer.
    pub send_queue_batches: usize,
    /// The most messages the link takes from its queue for one write.
    /// Default 1024. A write also stops taking at `max_frame_bytes` of
    /// messages, so a backlog of large appends never becomes one huge write.
    pub batch_max_messages: usize,
    /// The most bytes in one `Messages` frame (at most `max_frame_bytes`; a
    /// single larger message gets a frame of its own). Default 1 MiB: one
    /// header and decode call per many messages, yet the receiver starts
    /// decoding while the rest of a write is still in flight, and a 64 MiB
    /// burst of appends never builds one 64 MiB frame.
    pub batch_max_bytes: usize,
    /// Inbound items buffered before the connections stop reading (TCP flow
    /// control then slows the senders). Default 4096.
    pub inbound_capacity: usize,
    /// Bytes per snapshot chunk; must fit in a frame with 1 KiB to spare.
    /// Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Snapshot chunks buffered per incoming stream. Default 4 (4 MiB).
    pub snapshot_chunks_buffered: usize,
    /// How long a connection attempt may take. Default 1 s: a peer on a LAN
    /// answers in well under a millisecond.
    pub connect_timeout: Duration,
    /// How long one frame write may block before the connection is given
    /// up as dead. Default 10 s.
    pub write_timeout: Duration,
    /// How long to wait for the receiver's `SnapshotReceived` after the last
    /// chunk. Default 30 s.
    pub snapshot_ack_timeout: Duration,
    /// The first reconnect delay after a failed connection. Default 50 ms.
    pub backoff_min: Duration,
    /// The longest reconnect delay; delays double from `backoff_min` up to
    /// here, each drawn between half and all of its bound (jitter).
    /// Default 2 s, under a typical election timeout range's upper end
    /// times ten, so a restarted peer is found again quickly.
    pub backoff_max: Duration,
    /// How long a peer's link stays open with nothing to send before its
    /// connection and task are closed (a new `send` opens it again).
    /// Default 60 s: far above any heartbeat interval, so only links to
    /// peers that left the cluster close. (Sends written on the caller's
    /// thread are noticed when the timeout fires, so such a link closes
    /// between one and two timeouts after its last send.)
    pub link_idle_timeout: Duration,
    /// Mutual TLS; `None` (the default) speaks plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::TlsConfig>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            cluster: ClusterId(0),
            max_frame_bytes: 16 << 20,
            send_queue_batches: 1024,
            batch_max_messages: 1024,
            batch_max_bytes: 1 << 20,
            inbound_capacity: 4096,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunks_buffered: 4,
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
            snapshot_ack_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            link_idle_timeout: Duration::from_secs(60),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// A [`TcpConfig`] that cannot work (the checks every stream transport
/// shares).
pub type TcpConfigError = raftkit::transport::limits::LimitsError;

impl TcpConfig {
    /// The link's batching limits.
    pub(crate) fn batch_limits(&self) -> raftkit::transport::link::BatchLimits {
        raftkit::transport::link::BatchLimits {
            max_messages: self.batch_max_messages,
            max_batch_bytes: self.batch_max_bytes.min(self.max_frame_bytes),
            max_frame_bytes: self.max_frame_bytes,
        }
    }

    /// Checks the settings, returning them unchanged when they can work.
    pub fn validate(self) -> Result<TcpConfig, TcpConfigError> {
        raftkit::transport::limits::Limits {
            nonzero: &[
                ("send_queue_batches", self.send_queue_batches),
                ("batch_max_messages", self.batch_max_messages),
                ("batch_max_bytes", self.batch_max_bytes),
                ("inbound_capacity", self.inbound_capacity),
                ("snapshot_chunks_buffered", self.snapshot_chunks_buffered),
            ],
            max_frame_bytes: self.max_frame_bytes,
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
        }
        .check()?;
        Ok(self)
    }
}
