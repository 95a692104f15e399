//! The transport's settings and their checks.

use std::path::PathBuf;
use std::time::Duration;

use raftkit::transport::limits::{Limits, LimitsError};
use raftkit::wire::ClusterId;

/// Settings of a [`QuicTransport`](crate::QuicTransport).
///
/// QUIC always encrypts, and this transport always authenticates both ends:
/// either [`tls`](Self::tls) names the cluster's CA and this server's
/// certificate, or [`insecure_dev`](Self::insecure_dev) is set and each
/// server makes itself a throw-away self-signed certificate.
///
/// ```
/// use raftkit::wire::ClusterId;
/// use raftkit_quic::{QuicConfig, QuicConfigError, TlsFiles};
/// // Neither certificates nor dev mode: refused.
/// assert!(matches!(QuicConfig::default().validate(), Err(QuicConfigError::NoTls)));
/// let config = QuicConfig {
///     cluster: ClusterId(7),
///     tls: Some(TlsFiles {
///         ca_pem: "certs/ca.pem".into(),
///         cert_pem: "certs/n1.pem".into(),
///         key_pem: "certs/n1.key".into(),
///     }),
///     ..QuicConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicConfig {
    /// The cluster this server belongs to; frames from any other are
    /// refused. Default `ClusterId(0)`.
    pub cluster: ClusterId,
    /// The largest frame accepted or sent, in bytes (the 4-byte length
    /// prefix excluded). Default 16 MiB, as for TCP: a 1 MiB snapshot chunk
    /// or a batch of entries fits, and a hostile 4 GiB length prefix is
    /// refused before any memory is reserved.
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
    /// Inbound items buffered before the streams stop reading (QUIC flow
    /// control then slows the senders). Default 4096.
    pub inbound_capacity: usize,
    /// Bytes per snapshot chunk; must fit in a frame with 1 KiB to spare.
    /// Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Snapshot chunks buffered per incoming stream. Default 4 (4 MiB).
    pub snapshot_chunks_buffered: usize,
    /// How long a connection attempt (UDP handshake and TLS) may take.
    /// Default 1 s: a peer on a LAN answers in well under a millisecond,
    /// and a dead peer sends no QUIC answer at all, so this bounds how long
    /// a link takes to report it `Unreachable`.
    pub connect_timeout: Duration,
    /// How long one frame write may wait for flow-control credit before the
    /// connection is given up as dead. Default 10 s.
    pub write_timeout: Duration,
    /// How long to wait for the receiver's `SnapshotReceived` after the last
    /// chunk. Default 30 s.
    pub snapshot_ack_timeout: Duration,
    /// The first reconnect delay after a failed connection. Default 50 ms.
    pub backoff_min: Duration,
    /// The longest reconnect delay; delays double from `backoff_min` up to
    /// here, each drawn between half and all of its bound (jitter).
    /// Default 2 s.
    pub backoff_max: Duration,
    /// How long a peer's link stays open with nothing to send before its
    /// stream and task are closed (a new `send` opens it again).
    /// Default 60 s.
    pub link_idle_timeout: Duration,
    /// Receive window of one stream, in bytes: how much a sender may have in
    /// flight on the message stream or one snapshot stream. Default 4 MiB:
    /// a 10 Gbit/s LAN with a 1 ms round trip has 1.25 MB in flight, and a
    /// snapshot stream whose reader is slow can never hold more than this
    /// of the connection's window, so messages keep their share.
    pub stream_receive_window_bytes: u32,
    /// Receive window of one connection (all its streams), in bytes.
    /// Default 16 MiB, four streams' worth; it bounds the memory a peer can
    /// make this server buffer. quinn's own default is unbounded.
    pub connection_receive_window_bytes: u32,
    /// Bytes buffered for sending per connection, across streams. Default
    /// 16 MiB.
    pub send_window_bytes: u32,
    /// A PING after this long without sending, so that NATs, firewalls and
    /// the idle timer see a live connection. Default 1 s: nothing on a LAN,
    /// and well under `idle_timeout`.
    pub keep_alive_interval: Duration,
    /// A connection that hears nothing for this long is dead. Default 10 s:
    /// ten missed keep-alives. A peer that restarts is noticed within a
    /// keep-alive (its shutdown sends CONNECTION_CLOSE; after a crash the
    /// restarted process answers the old connection with a stateless reset
    /// whose token it derives from its private key, as before the crash);
    /// this catches a peer that vanished.
    pub idle_timeout: Duration,
    /// The largest UDP payload path-MTU discovery tries, in bytes (and the
    /// largest this endpoint accepts, at least 1472). Default 1452
    /// (Ethernet's 1500 less IPv6 and UDP headers); 8952 suits jumbo
    /// frames, 65 000 loopback. A path that drops large packets falls back
    /// to the minimum.
    pub mtu_upper_bound: u16,
    /// The UDP socket's kernel send and receive buffers, in bytes. Default
    /// 4 MiB. A burst that overflows the receive buffer is lost, and each
    /// loss halves the sender's congestion window: with Linux's usual
    /// 208 KiB a busy receiver drops packets at LAN speed. Linux caps the
    /// request at `net.core.rmem_max` / `wmem_max`; raise those with
    /// sysctl for the full effect.
    pub udp_buffer_bytes: usize,
    /// The certificates for mutual TLS. Required unless `insecure_dev`.
    pub tls: Option<TlsFiles>,
    /// Make a self-signed certificate at start-up and accept any peer's
    /// self-signed certificate, checking only that it names the id the peer
    /// claims. Anyone who reaches the port can then claim any id: for a
    /// laptop, never for a cluster. Logs a warning at start-up. Default
    /// `false`; ignored when `tls` is set.
    pub insecure_dev: bool,
}

/// Where the PEM files for mutual TLS live. Every server of a cluster has
/// a certificate whose subject alternative name (DNS) is its server id,
/// signed by the cluster's CA, usable for server and client auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) that sign every server's certificate.
    pub ca_pem: PathBuf,
    /// This server's certificate chain, leaf first.
    pub cert_pem: PathBuf,
    /// This server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PathBuf,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
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
            stream_receive_window_bytes: 4 << 20,
            connection_receive_window_bytes: 16 << 20,
            send_window_bytes: 16 << 20,
            keep_alive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            mtu_upper_bound: 1452,
            udp_buffer_bytes: 4 << 20,
            tls: None,
            insecure_dev: false,
        }
    }
}

/// The smallest UDP payload QUIC allows (RFC 9000 §14).
const MIN_MTU: u16 = 1200;

/// A [`QuicConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuicConfigError {
    /// Neither `tls` nor `insecure_dev`.
    #[error("no certificates: set tls, or insecure_dev for a development cluster")]
    NoTls,
    /// A setting every stream transport checks (a zero bound, chunks that
    /// do not fit a frame, inverted backoff, ...).
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The stream window exceeds the connection window, so one stream could
    /// starve the others.
    #[error("stream_receive_window_bytes {stream} is above connection_receive_window_bytes {connection}")]
    StreamAboveConnectionWindow {
        /// `stream_receive_window_bytes`.
        stream: u32,
        /// `connection_receive_window_bytes`.
        connection: u32,
    },
    /// Keep-alives no more frequent than the idle timeout cannot keep a
    /// connection alive.
    #[error("keep_alive_interval {keep_alive:?} is not below idle_timeout {idle:?}")]
    KeepAliveNotBelowIdle {
        /// `keep_alive_interval`.
        keep_alive: Duration,
        /// `idle_timeout`.
        idle: Duration,
    },
    /// An idle timeout QUIC cannot carry (over 2^62 ms).
    #[error("idle_timeout {0:?} is too large")]
    IdleTimeoutTooLarge(Duration),
    /// An MTU below QUIC's minimum of 1200 bytes.
    #[error("mtu_upper_bound {0} is below QUIC's minimum of {MIN_MTU}")]
    MtuBelowMinimum(u16),
}

impl QuicConfig {
    /// The link's batching limits.
    pub(crate) fn batch_limits(&self) -> raftkit::transport::link::BatchLimits {
        raftkit::transport::link::BatchLimits {
            max_messages: self.batch_max_messages,
            max_batch_bytes: self.batch_max_bytes.min(self.max_frame_bytes),
            max_frame_bytes: self.max_frame_bytes,
        }
    }

    /// Checks the settings, returning them unchanged when they can work.
    pub fn validate(self) -> Result<QuicConfig, QuicConfigError> {
        if self.tls.is_none() && !self.insecure_dev {
            return Err(QuicConfigError::NoTls);
        }
        Limits {
            nonzero: &[
                ("send_queue_batches", self.send_queue_batches),
                ("batch_max_messages", self.batch_max_messages),
                ("batch_max_bytes", self.batch_max_bytes),
                ("inbound_capacity", self.inbound_capacity),
                ("snapshot_chunks_buffered", self.snapshot_chunks_buffered),
                (
                    "stream_receive_window_bytes",
                    self.stream_receive_window_bytes as usize,
                ),
                ("send_window_bytes", self.send_window_bytes as usize),
                ("udp_buffer_bytes", self.udp_buffer_bytes),
            ],
            max_frame_bytes: self.max_frame_bytes,
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
        }
        .check()?;
        if self.stream_receive_window_bytes > self.connection_receive_window_bytes {
            return Err(QuicConfigError::StreamAboveConnectionWindow {
                stream: self.stream_receive_window_bytes,
                connection: self.connection_receive_window_bytes,
            });
        }
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(QuicConfigError::KeepAliveNotBelowIdle {
                keep_alive: self.keep_alive_interval,
                idle: self.idle_timeout,
            });
        }
        if quinn::IdleTimeout::try_from(self.idle_timeout).is_err() {
            return Err(QuicConfigError::IdleTimeoutTooLarge(self.idle_timeout));
        }
        if self.mtu_upper_bound < MIN_MTU {
            return Err(QuicConfigError::MtuBelowMinimum(self.mtu_upper_bound));
        }
        Ok(self)
    }

    /// quinn's endpoint settings: accept datagrams up to the MTU bound;
    /// stateless-reset tokens and connection ids keyed by `reset_secret`,
    /// which stays the same across restarts (see `Crypto::reset_secret`).
    /// Both must survive a crash: the restarted process answers a packet of
    /// the old connection with a reset only if it recognises the connection
    /// id as one it could have issued, and the peer believes the reset only
    /// if its token is the one announced for that id.
    pub(crate) fn endpoint_config(&self, reset_secret: &[u8; 32]) -> quinn::EndpointConfig {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_secret);
        let cid_key = cid_key(reset_secret);
        let mut e = quinn::EndpointConfig::new(std::sync::Arc::new(key));
        e.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        // 1472 is quinn's default; `validate` checked the bound is at least
        // QUIC's minimum of 1200, which quinn accepts.
        let _ = e.max_udp_payload_size(self.mtu_upper_bound.max(1472));
        e
    }

    /// quinn's transport parameters for these settings (the same on both
    /// ends of every connection).
    pub(crate) fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        // One message stream per peer connection, plus room for a new one
        // taking over and for concurrent snapshots; more is refused by QUIC
        // flow control, which bounds what a hostile peer can open.
        t.max_concurrent_uni_streams(8u32.into());
        t.max_concurrent_bidi_streams(8u32.into());
        t.stream_receive_window(self.stream_receive_window_bytes.into());
        t.receive_window(self.connection_receive_window_bytes.into());
        t.send_window(u64::from(self.send_window_bytes));
        t.keep_alive_interval(Some(self.keep_alive_interval));
        // `validate` checked that it converts.
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        // A LAN round trip is well under a millisecond; quinn's 333 ms
        // default (for the Internet) would make a lost handshake packet
        // cost a third of a second before the first RTT sample.
        t.initial_rtt(Duration::from_millis(10));
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu_upper_bound);
        t.mtu_discovery_config(Some(mtu));
        // Raft needs no unreliable datagrams.
        t.datagram_receive_buffer_size(None);
        t
    }
}

/// The key of the connection-id generator, derived from the endpoint's
/// stable secret so that a restarted process recognises the ids it issued
/// before a crash.
fn cid_key(reset_secret: &[u8; 32]) -> u64 {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_secret);
    let tag = ring::hmac::sign(&key, b"raftkit-quic connection ids");
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_issued_before_a_restart_are_recognised_after_it() {
        use quinn::ConnectionIdGenerator;
        use quinn_proto::HashedConnectionIdGenerator;
        let secret = [7u8; 32];
        let mut before = HashedConnectionIdGenerator::from_key(cid_key(&secret));
        let after = HashedConnectionIdGenerator::from_key(cid_key(&secret));
        let stranger = HashedConnectionIdGenerator::from_key(cid_key(&[8u8; 32]));
        for _ in 0..32 {
            let cid = before.generate_cid();
            assert!(
                after.validate(&cid).is_ok(),
                "an id issued before the restart was not recognised after it: {cid}"
            );
            assert!(
                stranger.validate(&cid).is_err(),
                "an endpoint with another secret accepted {cid}"
            );
        }
    }
}
