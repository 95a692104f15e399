//! The transport conformance suite: one generic suite, written once, run by
//! every transport (inmem, TCP, QUIC) against itself.
//!
//! ```text
//!   transport crate's tests/conformance.rs
//!        │  impl TransportFactory for MyFactory { spawn, respawn }
//!        ▼
//!   raftkit::testing::transport::run_all(&mut factory)
//!        │  one check per clause of the `Transport` contract
//!        ▼
//!   panics naming the clause that broke, with the numbers that broke it
//! ```
//!
//! Each check is a `pub async fn` of its own, so a crate can run them as
//! separate `#[tokio::test]`s and a failure names the rule. The checks need a
//! multi-threaded tokio runtime (`#[tokio::test(flavor = "multi_thread")]`):
//! a transport may read snapshot data on a blocking thread while heartbeats
//! keep flowing.
//!
//! No check sleeps to wait for a condition: every wait is a
//! [`tokio::time::timeout`] with a deadline and a message.
//!
//! ```
//! use raftkit::testing::transport::{heartbeat, seq_of};
//! let m = heartbeat(&"a".into(), &"b".into(), 7, 0);
//! assert_eq!(seq_of(&m), 7);
//! ```

use std::future::Future;
use std::io::Read;
use std::time::Duration;

use crate::message::{AppendEntriesRequest, Message, MessageBody};
use crate::storage::{SnapshotId, SnapshotMeta};
use crate::transport::{SnapshotOffer, Transport};
use crate::types::{Configuration, LogIndex, NodeId, ServerAddress, Term};

pub mod bench;
pub mod certs;
mod checks;
pub mod metrics;
mod snapshot;
mod support;

pub use checks::{
    dead_peer_sends_are_fast_and_bounded, ordered_delivery, peer_restart_and_reconnect,
    shutdown_closes_everything,
};
pub use snapshot::{snapshot_does_not_block_messages, SNAPSHOT_MIN_TRANSFER};

/// How many messages [`ordered_delivery`] sends in the full suite.
pub const ORDERED_MESSAGES: u64 = 100_000;
/// How many messages go in one `send` call in [`ordered_delivery`].
pub const ORDERED_BATCH: usize = 100;
/// The snapshot size [`snapshot_does_not_block_messages`] streams in the full suite: 64 MiB.
pub const SNAPSHOT_BYTES: u64 = 64 << 20;
/// The longest a `send` call may take: it must never wait for a peer.
pub const SEND_CALL_MAX: Duration = Duration::from_millis(10);
/// How many calls per check may exceed [`SEND_CALL_MAX`], plus one per 200
/// calls made (never [`SEND_CALL_HARD_MAX`]): on a loaded machine the OS
/// deschedules a thread for longer than 10 ms now and then, which says
/// nothing about the transport. A send that waits for a peer (a connect, a
/// write) takes far longer and fails the hard limit.
pub const SLOW_SEND_CALLS_TOLERATED: u32 = 3;
/// No `send` call may ever take this long.
pub const SEND_CALL_HARD_MAX: Duration = Duration::from_millis(100);
/// How long a receiver may see nothing before a check fails as stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The gap between heartbeats while a snapshot streams.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(2);

/// Makes the transports the suite tests.
///
/// Network transports bind `127.0.0.1:0` in [`spawn`](Self::spawn) and
/// report the port they got through [`Transport::local_addr`].
pub trait TransportFactory: Send {
    /// The transport under test.
    type T: Transport;

    /// A new transport for server `id`, listening at a fresh address.
    fn spawn(&mut self, id: &NodeId) -> impl Future<Output = Self::T> + Send;

    /// A transport for server `id` listening at `address` again: the server
    /// restarted. Called only after the previous transport at `address` was
    /// shut down and dropped.
    fn respawn(
        &mut self,
        id: &NodeId,
        address: &ServerAddress,
    ) -> impl Future<Output = Self::T> + Send;
}

/// Sizes of the suite's heavy checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuiteSizes {
    /// Messages sent by [`ordered_delivery`].
    pub ordered_messages: u64,
    /// Bytes streamed by [`snapshot_does_not_block_messages`].
    pub snapshot_bytes: u64,
}

impl SuiteSizes {
    /// The full sizes: 100 000 messages and a 64 MiB snapshot.
    pub const FULL: SuiteSizes = SuiteSizes {
        ordered_messages: ORDERED_MESSAGES,
        snapshot_bytes: SNAPSHOT_BYTES,
    };
}

/// Runs every check in turn, each with fresh transports from `factory`.
pub async fn run_all<F: TransportFactory>(factory: &mut F, sizes: SuiteSizes) {
    ordered_delivery(factory, sizes.ordered_messages).await;
    snapshot_does_not_block_messages(factory, sizes.snapshot_bytes).await;
    peer_restart_and_reconnect(factory).await;
    dead_peer_sends_are_fast_and_bounded(factory).await;
    shutdown_closes_everything(factory).await;
}

/// A heartbeat from `from` to `to` carrying a sequence number (in `round`
/// and `prev_log_index`) and a send time in microseconds (in `leader_commit`).
pub fn heartbeat(from: &NodeId, to: &NodeId, seq: u64, sent_micros: u64) -> Message {
    Message {
        from: from.clone(),
        from_addr: crate::types::ServerAddress::new(from.as_str()),
        to: to.clone(),
        term: Term(1),
        body: MessageBody::AppendEntriesRequest(AppendEntriesRequest {
            prev_log_index: LogIndex(seq),
            prev_log_term: Term(0),
            entries: Vec::new(),
            leader_commit: LogIndex(sent_micros),
            round: seq,
        }),
    }
}

/// An AppendEntries from `a` to `b` with one entry of `bytes` bytes, its
/// sequence number `seq` carried as [`heartbeat`] carries it (read it back
/// with [`seq_of`]): a message of a chosen size, for frame-limit tests.
pub fn sized_append(seq: u64, bytes: usize) -> Message {
    let mut m = heartbeat(&"a".into(), &"b".into(), seq, 0);
    if let MessageBody::AppendEntriesRequest(r) = &mut m.body {
        r.prev_log_term = Term(1);
        r.entries = vec![crate::types::Entry::command(
            LogIndex(seq + 1),
            Term(1),
            bytes::Bytes::from(vec![0x5a; bytes]),
        )];
    }
    m
}

/// The sequence number of a message made by [`heartbeat`].
///
/// # Panics
/// If `m` is not such a message.
pub fn seq_of(m: &Message) -> u64 {
    match &m.body {
        MessageBody::AppendEntriesRequest(r) => {
            assert_eq!(
                r.round, r.prev_log_index.0,
                "heartbeat's two copies of its seq differ: {m:?}"
            );
            r.round
        }
        other => panic!("expected a heartbeat from the suite, got {}", other.kind()),
    }
}

/// The byte at `offset` of the suite's snapshot data: a multiplicative hash,
/// so a chunk at the wrong offset never matches.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// A reader producing `len` bytes of [`pattern_byte`] data.
#[derive(Debug)]
pub struct PatternReader {
    pos: u64,
    len: u64,
}

impl PatternReader {
    /// A reader of `len` bytes.
    pub fn new(len: u64) -> PatternReader {
        PatternReader { pos: 0, len }
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A snapshot offer of `size` bytes from `from` to `to`.
pub fn snapshot_offer(from: &NodeId, to: &NodeId, size: u64) -> SnapshotOffer {
    SnapshotOffer {
        from: from.clone(),
        to: to.clone(),
        term: Term(1),
        meta: SnapshotMeta {
            id: SnapshotId::for_point(Term(1), LogIndex(100), 1),
            index: LogIndex(100),
            term: Term(1),
            configuration: Configuration::default(),
            configuration_index: LogIndex(1),
            size,
            checksum: 0,
        },
    }
}
