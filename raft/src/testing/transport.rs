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
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::timeout;

use crate::message::{AppendEntriesRequest, Message, MessageBody};
use crate::storage::{SnapshotId, SnapshotMeta};
use crate::transport::{Inbound, IncomingSnapshot, Peer, SnapshotOffer, Transport, TransportError};
use crate::types::{Configuration, LogIndex, NodeId, ServerAddress, Term};

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

/// Check: 100 000 messages (or `total`) sent from A to B in batches arrive
/// all, in order, without duplicates. A `Backpressure` (or a transient
/// `Unreachable`) makes the sender wait for the receiver's progress and retry.
pub async fn ordered_delivery<F: TransportFactory>(factory: &mut F, total: u64) {
    let mut timer = SendTimer::default();
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let mut inbound = b
        .take_inbound()
        .expect("ordered_delivery: B's first take_inbound is None");
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };
    let (progress_tx, mut progress) = watch::channel(0u64);

    let (from, to) = (a_id.clone(), b_id.clone());
    let receiver = tokio::spawn(async move {
        let mut next = 0u64;
        while next < total {
            let m = recv_message(&mut inbound, "ordered_delivery", next, total).await;
            assert_eq!(
                (&m.from, &m.to),
                (&from, &to),
                "ordered_delivery: wrong from/to on message {next}"
            );
            let seq = seq_of(&m);
            assert!(
                seq >= next,
                "ordered_delivery: duplicate or reordered message: got seq {seq} after {}",
                next - 1
            );
            assert_eq!(
                seq, next,
                "ordered_delivery: message(s) {next}..{seq} lost on a healthy link"
            );
            next += 1;
            if next % 64 == 0 || next == total {
                progress_tx.send_replace(next);
            }
        }
        // Anything arriving now is a duplicate.
        if let Ok(Some(extra)) = timeout(Duration::from_millis(100), inbound.recv()).await {
            panic!("ordered_delivery: message after all {total} arrived: {extra:?}");
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seq = 0u64;
    while seq < total {
        let end = (seq + ORDERED_BATCH as u64).min(total);
        let batch: Vec<Message> = (seq..end).map(|s| heartbeat(&a_id, &b_id, s, 0)).collect();
        send_with_retry(
            &a,
            &to_b,
            batch,
            &mut progress,
            deadline,
            "ordered_delivery",
            &mut timer,
        )
        .await;
        seq = end;
    }
    match timeout(Duration::from_secs(120), receiver).await {
        Ok(joined) => rethrow(joined),
        Err(_) => panic!(
            "ordered_delivery: receiver did not finish within 120 s; progress {}",
            *progress.borrow()
        ),
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Check: a `snapshot_bytes` snapshot streams from A to B while heartbeats
/// keep flowing on the same pair. B checks every chunk's offset, data and the
/// `done` flag; the slowest heartbeat must arrive in well under the transfer
/// time (no head-of-line blocking behind the snapshot).
pub async fn snapshot_does_not_block_messages<F: TransportFactory>(
    factory: &mut F,
    snapshot_bytes: u64,
) {
    let mut timer = SendTimer::default();
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = Arc::new(factory.spawn(&a_id).await);
    let b = factory.spawn(&b_id).await;
    let inbound = b
        .take_inbound()
        .expect("snapshot: B's first take_inbound is None");
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };
    let epoch = Instant::now();

    let receiver = tokio::spawn(receive_heartbeats_and_snapshot(inbound, epoch));

    // Heartbeats every HEARTBEAT_INTERVAL until the snapshot is done.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let heartbeats = {
        let (a, to_b, a_id, b_id) = (a.clone(), to_b.clone(), a_id.clone(), b_id.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
            let mut seq = 0u64;
            let mut rejected = 0u64;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                let sent = epoch.elapsed().as_micros() as u64;
                match a.send(&to_b, vec![heartbeat(&a_id, &b_id, seq, sent)]) {
                    Ok(()) => seq += 1,
                    Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {
                        rejected += 1
                    }
                    Err(e) => panic!("snapshot: heartbeat send failed: {e}"),
                }
            }
            (seq, rejected)
        })
    };

    let started = Instant::now();
    let offer = snapshot_offer(&a_id, &b_id, snapshot_bytes);
    let sent = timeout(
        Duration::from_secs(300),
        a.send_snapshot(&to_b, offer, Box::new(PatternReader::new(snapshot_bytes))),
    )
    .await;
    let transfer = started.elapsed();
    match sent {
        Err(_) => {
            panic!("snapshot: send_snapshot of {snapshot_bytes} bytes did not resolve within 300 s")
        }
        Ok(Err(e)) => panic!("snapshot: send_snapshot of {snapshot_bytes} bytes failed: {e}"),
        Ok(Ok(())) => {}
    }
    let _ = stop_tx.send(true);
    let (sent_heartbeats, rejected) = rethrow(heartbeats.await);
    // The last heartbeat tells the receiver that everything was sent.
    let last = vec![heartbeat(
        &a_id,
        &b_id,
        u64::MAX,
        epoch.elapsed().as_micros() as u64,
    )];
    send_with_retry(
        &*a,
        &to_b,
        last,
        &mut watch::channel(0).1,
        Instant::now() + STALL_TIMEOUT,
        "snapshot",
        &mut timer,
    )
    .await;
    let report = match timeout(STALL_TIMEOUT, receiver).await {
        Ok(joined) => rethrow(joined),
        Err(_) => {
            panic!("snapshot: receiver did not see the final heartbeat within {STALL_TIMEOUT:?}")
        }
    };

    eprintln!(
        "snapshot: {snapshot_bytes} bytes in {transfer:?}; {} heartbeats arrived meanwhile, the slowest in {:?}",
        report.heartbeats, report.max_latency
    );
    assert_eq!(
        report.snapshot_bytes, snapshot_bytes,
        "snapshot: B received a different number of bytes than sent"
    );
    assert!(
        report.heartbeats + 8 >= sent_heartbeats,
        "snapshot: only {} of {sent_heartbeats} heartbeats arrived (and {rejected} were rejected)",
        report.heartbeats
    );
    assert!(
        report.heartbeats >= 3,
        "snapshot: only {} heartbeats arrived during a {transfer:?} transfer",
        report.heartbeats
    );
    assert!(
        report.max_latency * 4 <= transfer.max(Duration::from_millis(100)),
        "snapshot: heartbeats waited behind the snapshot: slowest took {:?} (the transfer took {transfer:?}, \
         {} heartbeats)",
        report.max_latency,
        report.heartbeats
    );
    drop(a);
    b.shutdown().await;
}

/// Check: when B goes away, A's sends fail or are lost without blocking;
/// once B restarts at the same address, new sends arrive, in order.
pub async fn peer_restart_and_reconnect<F: TransportFactory>(factory: &mut F) {
    let mut timer = SendTimer::default();
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let address = b.local_addr();
    let to_b = Peer {
        id: b_id.clone(),
        address: address.clone(),
    };
    let mut inbound = b
        .take_inbound()
        .expect("restart: B's first take_inbound is None");

    let mut seq = 0;
    wait_for_delivery(
        &a,
        &to_b,
        &mut inbound,
        &mut seq,
        0,
        "restart: before the restart",
        &mut timer,
    )
    .await;

    timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("restart: B's shutdown took over 10 s");
    drop(inbound);
    drop(b);

    // B is gone: sends must neither block nor fail with anything but
    // Backpressure or Unreachable.
    // `seq` is the next number to send; every number is sent once.
    for _ in 0..50 {
        let started = Instant::now();
        let result = a.send(&to_b, vec![heartbeat(&a_id, &b_id, seq, 0)]);
        timer.check(started.elapsed(), "restart: send while B is down");
        match result {
            Ok(()) | Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {}
            Err(e) => panic!("restart: send while B is down failed with {e}"),
        }
        seq += 1;
    }

    let b = factory.respawn(&b_id, &address).await;
    assert_eq!(
        b.local_addr(),
        address,
        "restart: B came back at another address"
    );
    let mut inbound = b
        .take_inbound()
        .expect("restart: restarted B's take_inbound is None");
    // Messages queued while B was down may still arrive (in order); the
    // check waits for one sent after the restart.
    let first_new = seq;
    wait_for_delivery(
        &a,
        &to_b,
        &mut inbound,
        &mut seq,
        first_new,
        "restart: after the restart",
        &mut timer,
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Check: sends to a peer that vanished return quickly (each call under
/// [`SEND_CALL_MAX`]) and the queue stays bounded: the transport starts
/// answering `Backpressure` or `Unreachable` instead of queueing forever.
pub async fn dead_peer_sends_are_fast_and_bounded<F: TransportFactory>(factory: &mut F) {
    let mut timer = SendTimer::default();
    const BATCH: usize = 16;
    const MAX_CALLS: u64 = 200_000;
    const CALLS_AFTER_FIRST_REJECTION: u64 = 10_000;
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };
    timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("dead peer: B's shutdown took over 10 s");
    drop(b);

    let batch: Vec<Message> = (0..BATCH as u64)
        .map(|s| heartbeat(&a_id, &b_id, s, 0))
        .collect();
    let (mut first_rejection, mut accepted_after, mut calls) = (None, 0u64, 0u64);
    while calls < MAX_CALLS {
        let started = Instant::now();
        let result = a.send(&to_b, batch.clone());
        timer.check(started.elapsed(), "dead peer: send");
        match result {
            Ok(()) if first_rejection.is_some() => accepted_after += 1,
            Ok(()) => {}
            Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {
                first_rejection.get_or_insert(calls);
            }
            Err(e) => {
                panic!("dead peer: send failed with {e}, expected Backpressure or Unreachable")
            }
        }
        calls += 1;
        if first_rejection.is_some_and(|first| calls - first > CALLS_AFTER_FIRST_REJECTION) {
            break;
        }
        if calls % 1024 == 0 {
            // Let the transport's tasks notice the dead peer.
            tokio::task::yield_now().await;
        }
    }
    let first = first_rejection.unwrap_or_else(|| {
        panic!("dead peer: {MAX_CALLS} sends of {BATCH} messages to a dead peer were all accepted: unbounded queue")
    });
    assert!(
        accepted_after * 10 <= CALLS_AFTER_FIRST_REJECTION,
        "dead peer: after the first rejection (call {first}), {accepted_after} of the next \
         {CALLS_AFTER_FIRST_REJECTION} sends were accepted again"
    );
    a.shutdown().await;
}

/// Check: `shutdown` closes everything. Later sends fail with `Shutdown`,
/// snapshots too, the inbound stream ends, and `shutdown` is idempotent.
/// Also checks that `take_inbound` returns `Some` exactly once.
pub async fn shutdown_closes_everything<F: TransportFactory>(factory: &mut F) {
    let mut timer = SendTimer::default();
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let mut a_inbound = a
        .take_inbound()
        .expect("shutdown: A's first take_inbound is None");
    assert!(
        a.take_inbound().is_none(),
        "shutdown: take_inbound returned Some twice"
    );
    let mut b_inbound = b
        .take_inbound()
        .expect("shutdown: B's first take_inbound is None");
    let to_a = Peer {
        id: a_id.clone(),
        address: a.local_addr(),
    };
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };

    // Connections in both directions are up.
    let mut seq = 0;
    wait_for_delivery(
        &a,
        &to_b,
        &mut b_inbound,
        &mut seq,
        0,
        "shutdown: A to B",
        &mut timer,
    )
    .await;
    let mut seq = 0;
    wait_for_delivery(
        &b,
        &to_a,
        &mut a_inbound,
        &mut seq,
        0,
        "shutdown: B to A",
        &mut timer,
    )
    .await;

    timeout(Duration::from_secs(10), a.shutdown())
        .await
        .expect("shutdown: A's shutdown took over 10 s");
    match a.send(&to_b, vec![heartbeat(&a_id, &b_id, 99, 0)]) {
        Err(TransportError::Shutdown) => {}
        other => panic!("shutdown: send after shutdown returned {other:?}, expected Err(Shutdown)"),
    }
    let offer = snapshot_offer(&a_id, &b_id, 10);
    match timeout(
        Duration::from_secs(5),
        a.send_snapshot(&to_b, offer, Box::new(PatternReader::new(10))),
    )
    .await
    {
        Ok(Err(TransportError::Shutdown)) => {}
        Ok(other) => panic!(
            "shutdown: send_snapshot after shutdown returned {other:?}, expected Err(Shutdown)"
        ),
        Err(_) => panic!("shutdown: send_snapshot after shutdown did not resolve within 5 s"),
    }
    let ended = timeout(Duration::from_secs(10), async {
        while a_inbound.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "shutdown: A's inbound stream did not end within 10 s of shutdown"
    );

    // B sending to the closed A neither blocks nor panics.
    let started = Instant::now();
    let _ = b.send(&to_a, vec![heartbeat(&b_id, &a_id, 1, 0)]);
    timer.check(started.elapsed(), "shutdown: B's send to the shut-down A");

    timeout(Duration::from_secs(10), a.shutdown())
        .await
        .expect("shutdown: a second shutdown took over 10 s");
    timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("shutdown: B's shutdown took over 10 s");
    let ended = timeout(Duration::from_secs(10), async {
        while b_inbound.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "shutdown: B's inbound stream did not end within 10 s of shutdown"
    );
}

/// What B saw in [`snapshot_does_not_block_messages`].
struct SnapshotReport {
    heartbeats: u64,
    max_latency: Duration,
    snapshot_bytes: u64,
}

async fn receive_heartbeats_and_snapshot(
    mut inbound: crate::transport::InboundStream,
    epoch: Instant,
) -> SnapshotReport {
    let mut heartbeats = 0u64;
    let mut max_latency = Duration::ZERO;
    let mut last_seq = None;
    let mut snapshot = None;
    loop {
        let item = match timeout(STALL_TIMEOUT, inbound.recv()).await {
            Err(_) => panic!("snapshot: B received nothing for {STALL_TIMEOUT:?} ({heartbeats} heartbeats so far)"),
            Ok(None) => panic!("snapshot: B's inbound stream ended"),
            Ok(Some(item)) => item,
        };
        match item {
            Inbound::Message(m) => {
                let seq = seq_of(&m);
                if seq == u64::MAX {
                    break;
                }
                if let Some(last) = last_seq {
                    assert!(seq > last, "snapshot: heartbeat {seq} arrived after {last}");
                }
                last_seq = Some(seq);
                let MessageBody::AppendEntriesRequest(r) = &m.body else {
                    unreachable!("seq_of checked")
                };
                let latency = epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(r.leader_commit.0));
                max_latency = max_latency.max(latency);
                heartbeats += 1;
            }
            Inbound::Snapshot(s) => {
                assert!(
                    snapshot.is_none(),
                    "snapshot: a second snapshot stream arrived"
                );
                snapshot = Some(tokio::spawn(check_snapshot_stream(s)));
            }
        }
    }
    let snapshot =
        snapshot.expect("snapshot: the final heartbeat arrived but no snapshot stream did");
    let snapshot_bytes = match timeout(STALL_TIMEOUT, snapshot).await {
        Ok(joined) => rethrow(joined),
        Err(_) => panic!("snapshot: B's snapshot stream did not end within {STALL_TIMEOUT:?} of the final heartbeat"),
    };
    SnapshotReport {
        heartbeats,
        max_latency,
        snapshot_bytes,
    }
}

/// Reads a snapshot stream, checking offsets, data and `done`; returns its size.
async fn check_snapshot_stream(mut s: IncomingSnapshot) -> u64 {
    let size = s.offer.meta.size;
    let mut expected = 0u64;
    let mut chunks = 0u64;
    loop {
        let chunk = match timeout(STALL_TIMEOUT, s.chunks.recv()).await {
            Err(_) => {
                panic!("snapshot: no chunk for {STALL_TIMEOUT:?} at offset {expected} of {size}")
            }
            Ok(None) => panic!(
                "snapshot: stream ended without a `done` chunk at offset {expected} of {size}"
            ),
            Ok(Some(chunk)) => chunk,
        };
        assert_eq!(
            chunk.offset, expected,
            "snapshot: chunk {chunks} starts at the wrong offset"
        );
        if let Some(bad) =
            (0..chunk.data.len()).find(|&i| chunk.data[i] != pattern_byte(expected + i as u64))
        {
            panic!(
                "snapshot: wrong byte at offset {} (chunk {chunks})",
                expected + bad as u64
            );
        }
        expected += chunk.data.len() as u64;
        chunks += 1;
        assert!(
            expected <= size,
            "snapshot: received {expected} bytes of a {size}-byte snapshot"
        );
        if chunk.done {
            assert_eq!(
                expected, size,
                "snapshot: `done` after {expected} of {size} bytes"
            );
            break;
        }
    }
    if let Ok(Some(extra)) = timeout(Duration::from_millis(100), s.chunks.recv()).await {
        panic!("snapshot: a chunk after `done`: offset {}", extra.offset);
    }
    expected
}

/// Sends `seq`, `seq+1`, ... until B receives one numbered `first` or higher;
/// everything B receives must be in order.
async fn wait_for_delivery<T: Transport>(
    from: &T,
    to: &Peer,
    inbound: &mut crate::transport::InboundStream,
    seq: &mut u64,
    first: u64,
    what: &str,
    timer: &mut SendTimer,
) {
    let from_id = NodeId::new(from_id_of(to));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_seen: Option<u64> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{what}: no message with seq >= {first} arrived within 15 s (sent up to {seq})"
        );
        let started = Instant::now();
        let result = from.send(to, vec![heartbeat(&from_id, &to.id, *seq, 0)]);
        timer.check(started.elapsed(), what);
        match result {
            Ok(()) | Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {}
            Err(e) => panic!("{what}: send failed with {e}"),
        }
        *seq += 1;
        // Poll for deliveries for a while before sending the next message.
        while let Ok(item) = timeout(Duration::from_millis(20), inbound.recv()).await {
            let Some(Inbound::Message(m)) = item else {
                panic!("{what}: inbound stream ended or sent a snapshot");
            };
            let got = seq_of(&m);
            if let Some(last) = last_seen {
                assert!(got > last, "{what}: message {got} arrived after {last}");
            }
            last_seen = Some(got);
            if got >= first {
                return;
            }
        }
    }
}

/// The suite names servers "a" and "b"; a message to one comes from the other.
fn from_id_of(to: &Peer) -> &'static str {
    if to.id.as_str() == "a" {
        "b"
    } else {
        "a"
    }
}

async fn send_with_retry<T: Transport>(
    t: &T,
    to: &Peer,
    msgs: Vec<Message>,
    progress: &mut watch::Receiver<u64>,
    deadline: Instant,
    what: &str,
    timer: &mut SendTimer,
) {
    loop {
        let started = Instant::now();
        let result = t.send(to, msgs.clone());
        timer.check(started.elapsed(), what);
        match result {
            Ok(()) => return,
            Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: send still rejected at the deadline (receiver progress {})",
                    *progress.borrow()
                );
                // Wait for the receiver to make progress, or a moment.
                let _ = timeout(Duration::from_millis(5), progress.changed()).await;
            }
            Err(e) => panic!("{what}: send failed with {e}"),
        }
    }
}

async fn recv_message(
    inbound: &mut crate::transport::InboundStream,
    what: &str,
    next: u64,
    total: u64,
) -> Message {
    match timeout(STALL_TIMEOUT, inbound.recv()).await {
        Err(_) => {
            panic!("{what}: nothing arrived for {STALL_TIMEOUT:?} after {next} of {total} messages")
        }
        Ok(None) => panic!("{what}: inbound stream ended after {next} of {total} messages"),
        Ok(Some(Inbound::Snapshot(_))) => panic!("{what}: unexpected snapshot stream"),
        Ok(Some(Inbound::Message(m))) => m,
    }
}

/// Times `send` calls: each must take under [`SEND_CALL_MAX`]. A few calls
/// (see [`SLOW_SEND_CALLS_TOLERATED`]) may exceed it on a loaded machine,
/// never [`SEND_CALL_HARD_MAX`].
#[derive(Debug, Default)]
struct SendTimer {
    calls: u64,
    slow: u64,
}

impl SendTimer {
    #[track_caller]
    fn check(&mut self, took: Duration, what: &str) {
        self.calls += 1;
        assert!(
            took < SEND_CALL_HARD_MAX,
            "{what}: a send call took {took:?}; send must never block"
        );
        if took >= SEND_CALL_MAX {
            self.slow += 1;
            let tolerated = u64::from(SLOW_SEND_CALLS_TOLERATED) + self.calls / 200;
            assert!(
                self.slow <= tolerated,
                "{what}: {} of {} send calls took over {SEND_CALL_MAX:?} (the last {took:?}); \
                 send must never block",
                self.slow,
                self.calls
            );
        }
    }
}

/// Unwraps a joined task, re-raising its panic so the message is kept.
fn rethrow<T>(joined: Result<T, tokio::task::JoinError>) -> T {
    match joined {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a suite task was cancelled: {e}"),
    }
}
