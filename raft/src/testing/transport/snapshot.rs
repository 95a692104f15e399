//! The check that a snapshot stream never holds messages back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::timeout;

use super::support::{rethrow, send_with_retry, SendTimer};
use super::{
    heartbeat, pattern_byte, seq_of, snapshot_offer, PatternReader, TransportFactory,
    HEARTBEAT_INTERVAL, STALL_TIMEOUT,
};
use crate::message::MessageBody;
use crate::transport::{Inbound, IncomingSnapshot, Peer, Transport, TransportError};
use crate::types::NodeId;

/// How long B takes at least to read a snapshot in
/// [`snapshot_does_not_block_messages`]: it reads at this pace however fast
/// the transport is. A heartbeat queued behind the snapshot then waits for a
/// good part of this, while one delayed by a busy machine (tens of
/// milliseconds when the tests share two cores) stays well under it.
pub const SNAPSHOT_MIN_TRANSFER: Duration = Duration::from_secs(1);

/// Check: a `snapshot_bytes` snapshot streams from A to B while heartbeats
/// keep flowing on the same pair. B checks every chunk's offset, data and the
/// `done` flag, and reads no faster than [`SNAPSHOT_MIN_TRANSFER`]; the
/// slowest heartbeat must arrive in well under the transfer time (no
/// head-of-line blocking behind the snapshot).
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

    // From the offer to B's reading of the last chunk: at least
    // SNAPSHOT_MIN_TRANSFER, and longer than `transfer` when the sender's
    // buffers let send_snapshot resolve before B has read everything.
    let span = report.snapshot_done.saturating_duration_since(started);
    eprintln!(
        "snapshot: {snapshot_bytes} bytes sent in {transfer:?}, read by B after {span:?}; \
         {} heartbeats arrived meanwhile, the slowest in {:?}",
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
    // One heartbeat per interval, less scheduling slack (a fast transfer
    // may see only the first, which is sent as the transfer starts).
    let expected = (transfer.as_micros() / HEARTBEAT_INTERVAL.as_micros() / 4).max(1) as u64;
    assert!(
        report.heartbeats >= expected,
        "snapshot: only {} heartbeats arrived during a {transfer:?} transfer (expected at least {expected})",
        report.heartbeats
    );
    assert!(
        report.max_latency * 4 <= span,
        "snapshot: heartbeats waited behind the snapshot: slowest took {:?} (B read the snapshot in {span:?}, \
         {} heartbeats)",
        report.max_latency,
        report.heartbeats
    );
    drop(a);
    b.shutdown().await;
}

/// What B saw in [`snapshot_does_not_block_messages`].
struct SnapshotReport {
    heartbeats: u64,
    max_latency: Duration,
    snapshot_bytes: u64,
    /// When B read the last chunk.
    snapshot_done: Instant,
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
    let (snapshot_bytes, snapshot_done) = match timeout(STALL_TIMEOUT, snapshot).await {
        Ok(joined) => rethrow(joined),
        Err(_) => panic!("snapshot: B's snapshot stream did not end within {STALL_TIMEOUT:?} of the final heartbeat"),
    };
    SnapshotReport {
        heartbeats,
        max_latency,
        snapshot_bytes,
        snapshot_done,
    }
}

/// Reads a snapshot stream at no more than `size / SNAPSHOT_MIN_TRANSFER`,
/// checking offsets, data and `done`; returns its size and when the last
/// chunk was read.
async fn check_snapshot_stream(mut s: IncomingSnapshot) -> (u64, Instant) {
    let size = s.offer.meta.size;
    let started = Instant::now();
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
        let due = started + SNAPSHOT_MIN_TRANSFER.mul_f64(expected as f64 / size.max(1) as f64);
        tokio::time::sleep_until(due.into()).await;
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
    let done = Instant::now();
    if let Ok(Some(extra)) = timeout(Duration::from_millis(100), s.chunks.recv()).await {
        panic!("snapshot: a chunk after `done`: offset {}", extra.offset);
    }
    (expected, done)
}
