//! What can go wrong on a network transport's connection, counted per
//! transport and through the `metrics` facade as
//! `raft_transport_errors_total{kind}`. Shared by the stream transports
//! (TCP, QUIC), so their labels are the same.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::stream::CodecError;
use crate::wire::WireError;

/// The metric every connection error increments.
pub const ERRORS_METRIC: &str = "raft_transport_errors_total";
/// Messages written to the network, by message kind (`heartbeat`, `append_entries`, ...).
pub const MESSAGES_SENT_METRIC: &str = "raft_transport_messages_sent_total";
/// Bytes written to the network (frames with their length prefix), by
/// `kind`: `messages` or `snapshot`.
pub const BYTES_SENT_METRIC: &str = "raft_transport_bytes_sent_total";

/// Why a connection was closed or a peer could not be reached; the `kind`
/// label of [`ERRORS_METRIC`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A frame that does not start with the magic bytes.
    BadMagic,
    /// A frame of a wire version this build does not speak.
    WrongVersion,
    /// A frame from another cluster.
    WrongCluster,
    /// A frame shorter than its header, or a connection that closed in the
    /// middle of a frame.
    Truncated,
    /// A frame body that does not decode, or whose kind does not match.
    BadBody,
    /// A length prefix above `max_frame_bytes`.
    FrameTooLarge,
    /// A first frame other than `Hello`, or a frame out of place.
    UnexpectedFrame,
    /// A message or snapshot whose sender differs from the `Hello`.
    SpoofedSender,
    /// A message addressed to another server.
    Misaddressed,
    /// Snapshot chunks out of order, or not adding up to the offered size.
    SnapshotStream,
    /// An outgoing message too large for one frame (refused or dropped).
    OversizedMessage,
    /// A connection attempt that failed (refused, timed out, the peer's
    /// certificate refused, ...).
    Connect,
    /// Any other error on an established connection or stream (reset,
    /// connection lost, write timeout).
    Io,
    /// `accept` failed (e.g. out of file descriptors; TCP only).
    Accept,
    /// An incoming TLS handshake failed (no client certificate, one from an
    /// unknown CA, ...).
    Tls,
    /// A TLS peer whose certificate does not name the id in its `Hello`.
    IdentityMismatch,
}

impl ErrorKind {
    /// Every kind, in the order of their counters.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::BadMagic,
        ErrorKind::WrongVersion,
        ErrorKind::WrongCluster,
        ErrorKind::Truncated,
        ErrorKind::BadBody,
        ErrorKind::FrameTooLarge,
        ErrorKind::UnexpectedFrame,
        ErrorKind::SpoofedSender,
        ErrorKind::Misaddressed,
        ErrorKind::SnapshotStream,
        ErrorKind::OversizedMessage,
        ErrorKind::Connect,
        ErrorKind::Io,
        ErrorKind::Accept,
        ErrorKind::Tls,
        ErrorKind::IdentityMismatch,
    ];

    /// The metric label.
    ///
    /// ```
    /// use raftkit::transport::errors::ErrorKind;
    /// assert_eq!(ErrorKind::WrongCluster.as_str(), "wrong_cluster");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadMagic => "bad_magic",
            ErrorKind::WrongVersion => "wrong_version",
            ErrorKind::WrongCluster => "wrong_cluster",
            ErrorKind::Truncated => "truncated",
            ErrorKind::BadBody => "bad_body",
            ErrorKind::FrameTooLarge => "frame_too_large",
            ErrorKind::UnexpectedFrame => "unexpected_frame",
            ErrorKind::SpoofedSender => "spoofed_sender",
            ErrorKind::Misaddressed => "misaddressed",
            ErrorKind::SnapshotStream => "snapshot_stream",
            ErrorKind::OversizedMessage => "oversized_message",
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Accept => "accept",
            ErrorKind::Tls => "tls",
            ErrorKind::IdentityMismatch => "identity_mismatch",
        }
    }

    fn index(self) -> usize {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&WireError> for ErrorKind {
    fn from(e: &WireError) -> ErrorKind {
        match e {
            WireError::Truncated { .. } => ErrorKind::Truncated,
            WireError::BadMagic(_) => ErrorKind::BadMagic,
            WireError::Version { .. } => ErrorKind::WrongVersion,
            WireError::ClusterMismatch { .. } => ErrorKind::WrongCluster,
            WireError::KindMismatch(_) | WireError::Body(_) => ErrorKind::BadBody,
            WireError::TooLarge { .. } => ErrorKind::FrameTooLarge,
        }
    }
}

impl From<&CodecError> for ErrorKind {
    fn from(e: &CodecError) -> ErrorKind {
        match e {
            CodecError::TooLarge { .. } => ErrorKind::FrameTooLarge,
            CodecError::Truncated { .. } => ErrorKind::Truncated,
            CodecError::Io(_) => ErrorKind::Io,
        }
    }
}

/// Why a connection is being closed: the counter to bump and a line for
/// the log.
#[derive(Debug)]
pub struct ConnError {
    /// The counter.
    pub kind: ErrorKind,
    /// What happened, for the log.
    pub detail: String,
}

impl ConnError {
    /// A connection error of `kind`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> ConnError {
        ConnError {
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl From<CodecError> for ConnError {
    fn from(e: CodecError) -> ConnError {
        ConnError {
            kind: ErrorKind::from(&e),
            detail: e.to_string(),
        }
    }
}

impl From<WireError> for ConnError {
    fn from(e: WireError) -> ConnError {
        ConnError {
            kind: ErrorKind::from(&e),
            detail: e.to_string(),
        }
    }
}

/// Per-transport error counts (the metric is process-wide).
///
/// ```
/// use raftkit::transport::errors::{ErrorCounts, ErrorKind};
/// let counts = ErrorCounts::default();
/// counts.record(ErrorKind::Tls);
/// assert_eq!(counts.get(ErrorKind::Tls), 1);
/// assert_eq!(counts.get(ErrorKind::Io), 0);
/// ```
#[derive(Debug, Default)]
pub struct ErrorCounts {
    counts: [AtomicU64; ErrorKind::ALL.len()],
}

impl ErrorCounts {
    /// Counts one error of `kind` here and in the metric.
    pub fn record(&self, kind: ErrorKind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ERRORS_METRIC, "kind" => kind.as_str()).increment(1);
    }

    /// How many errors of `kind` were counted here.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }
}
