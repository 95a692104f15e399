//! What can go wrong on a connection, counted per transport and through the
//! `metrics` facade as `raft_transport_errors_total{kind}`.

use std::sync::atomic::{AtomicU64, Ordering};

use raftkit::wire::WireError;

use crate::codec::CodecError;

/// The metric every connection error increments.
pub const ERRORS_METRIC: &str = "raft_transport_errors_total";
/// Messages written to streams, by message kind (`heartbeat`, `append_entries`, ...).
pub const MESSAGES_SENT_METRIC: &str = "raft_transport_messages_sent_total";
/// Bytes written to streams (frames with their length prefix), by
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
    /// An outgoing message too large for one frame (dropped).
    OversizedMessage,
    /// A connection attempt that failed (no handshake within the connect
    /// timeout, the peer's certificate refused, ...).
    Connect,
    /// Any other error on an established connection or stream (reset,
    /// connection lost, write timeout).
    Io,
    /// Not used by QUIC (quinn accepts without file descriptors); kept so
    /// the labels match the TCP transport's.
    Accept,
    /// An incoming QUIC/TLS handshake failed (no client certificate, one
    /// from an unknown CA, ...).
    Tls,
    /// A peer whose certificate does not name the id in its `Hello`.
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
    /// assert_eq!(raftkit_quic::ErrorKind::WrongCluster.as_str(), "wrong_cluster");
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

/// Why a connection is being closed.
#[derive(Debug)]
pub(crate) struct ConnError {
    pub(crate) kind: ErrorKind,
    pub(crate) detail: String,
}

impl ConnError {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<String>) -> ConnError {
        ConnError {
            kind,
            detail: detail.into(),
        }
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
#[derive(Debug, Default)]
pub(crate) struct ErrorCounts {
    counts: [AtomicU64; ErrorKind::ALL.len()],
}

impl ErrorCounts {
    /// Counts one error of `kind` here and in the metric.
    pub(crate) fn record(&self, kind: ErrorKind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ERRORS_METRIC, "kind" => kind.as_str()).increment(1);
    }

    pub(crate) fn get(&self, kind: ErrorKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }
}
