//! The transport micro-benchmark, generic over any [`Transport`]: one-way
//! throughput of small messages and of 64 KiB batches, and ping-pong
//! latency, as one Markdown table row per transport. Every transport
//! crate's `*_bench` example runs it, so their figures compare; figures are
//! medians of [`RUNS`] runs.
//!
//! ```text
//! cargo run --release -p raftkit-inmem --example inmem_bench
//! cargo run --release -p raftkit-tcp --example tcp_bench     # + the raw TCP floor
//! cargo run --release -p raftkit-quic --example quic_bench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::{AppendEntriesRequest, Message, MessageBody};
use crate::transport::{Inbound, InboundStream, Peer, Transport, TransportError};
use crate::types::{Entry, LogIndex, NodeId, ServerAddress, Term};
use crate::wire::{decode_frame_shared, encode_frame, ClusterId, Frame};
use bytes::Bytes;

/// Runs per figure; the table shows the median.
pub const RUNS: usize = 5;
/// Small messages: one 100-byte entry each, 64 per `send` (the
/// driver's batch).
pub const SMALL_ENTRY_BYTES: usize = 100;
/// Small messages sent per run.
pub const SMALL_MESSAGES: u64 = 100_000;
/// Small messages per `send` call.
pub const SMALL_PER_SEND: usize = 64;
/// 64 KiB batches: one AppendEntries of 16 entries of 4 KiB per `send`.
pub const BATCH_ENTRIES: usize = 16;
/// Bytes per entry of a 64 KiB batch.
pub const BATCH_ENTRY_BYTES: usize = 4096;
/// 64 KiB batches sent per run (128 MiB).
pub const BATCHES: u64 = 2_000;
/// Ping-pongs per run.
pub const PINGS: usize = 2_000;

/// One row of the table (`NaN` / zero for a figure not measured).
#[derive(Debug)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Small messages per second, one way.
    pub small_msgs_per_s: f64,
    /// Their entry bytes per second, in MB/s.
    pub small_mb_per_s: f64,
    /// 64 KiB batches per second, one way.
    pub batch_msgs_per_s: f64,
    /// Their entry bytes per second, in MB/s.
    pub batch_mb_per_s: f64,
    /// Median round trip of a heartbeat-sized ping-pong.
    pub rtt_p50: Duration,
    /// Its 99th percentile.
    pub rtt_p99: Duration,
}

/// Prints the table's header.
pub fn print_header() {
    println!(
        "| transport | small msgs/s | small MB/s | 64 KiB batches/s | 64 KiB MB/s | RTT p50 | RTT p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
}

/// Prints one row.
pub fn print_row(row: &Row) {
    let cell = |v: f64| {
        if v.is_nan() {
            "-".to_owned()
        } else {
            format!("{v:.0}")
        }
    };
    let lat = |d: Duration| {
        if d.is_zero() {
            "-".to_owned()
        } else {
            format!("{:.1} µs", d.as_secs_f64() * 1e6)
        }
    };
    println!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        row.name,
        cell(row.small_msgs_per_s),
        cell(row.small_mb_per_s),
        cell(row.batch_msgs_per_s),
        cell(row.batch_mb_per_s),
        lat(row.rtt_p50),
        lat(row.rtt_p99),
    );
}

/// The median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An AppendEntries from `from` to `to` of `entries` entries of
/// `entry_bytes` each (sharing one buffer).
pub fn append(from: &NodeId, to: &NodeId, entries: usize, entry_bytes: usize) -> Message {
    let data = Bytes::from(vec![0x5a; entry_bytes]);
    Message {
        from: from.clone(),
        from_addr: ServerAddress::new(from.as_str()),
        to: to.clone(),
        term: Term(1),
        body: MessageBody::AppendEntriesRequest(AppendEntriesRequest {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(1),
            entries: (0..entries)
                .map(|i| Entry::command(LogIndex(i as u64 + 1), Term(1), data.clone()))
                .collect(),
            leader_commit: LogIndex(0),
            round: 0,
        }),
    }
}

/// Sends `msgs`, retrying while the queue is full. It pauses a
/// millisecond between tries rather than spinning, which would take a
/// core from the transport's own tasks; the queues hold far more than a
/// millisecond of traffic, so the link never runs dry.
async fn send_all<T: Transport>(t: &T, to: &Peer, msgs: Vec<Message>) {
    loop {
        match t.send(to, msgs.clone()) {
            Ok(()) => return,
            Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

/// Streams `total` copies of `msg`, `per_send` at a time, from A to B;
/// returns the time until B received the last.
async fn one_way<T: Transport>(
    a: &Arc<T>,
    to_b: &Peer,
    b_inbound: &mut InboundStream,
    msg: &Message,
    per_send: usize,
    total: u64,
) -> Duration {
    let started = Instant::now();
    let sender = {
        let (a, to_b, msg) = (a.clone(), to_b.clone(), msg.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while sent < total {
                let n = (per_send as u64).min(total - sent);
                send_all(&*a, &to_b, vec![msg.clone(); n as usize]).await;
                sent += n;
            }
        })
    };
    let mut received = 0u64;
    while received < total {
        match tokio::time::timeout(Duration::from_secs(30), b_inbound.recv()).await {
            Ok(Some(Inbound::Message(_))) => received += 1,
            Ok(other) => panic!("unexpected inbound item: {other:?}"),
            Err(_) => panic!("stalled after {received} of {total} messages"),
        }
    }
    let took = started.elapsed();
    sender.await.expect("sender task");
    took
}

/// Measures a connected pair: A sends, B receives, B echoes pings. Needs
/// a multi-threaded runtime.
pub async fn measure<T: Transport>(name: &str, a: T, b: T) -> Row {
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let to_a = Peer {
        id: a_id.clone(),
        address: a.local_addr(),
    };
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };
    let mut a_inbound = a.take_inbound().expect("a's inbound");
    let mut b_inbound = b.take_inbound().expect("b's inbound");

    let small = append(&a_id, &b_id, 1, SMALL_ENTRY_BYTES);
    let batch = append(&a_id, &b_id, BATCH_ENTRIES, BATCH_ENTRY_BYTES);
    // Warm up: connections open, buffers grow.
    one_way(&a, &to_b, &mut b_inbound, &small, SMALL_PER_SEND, 10_000).await;
    one_way(&a, &to_b, &mut b_inbound, &batch, 1, 100).await;

    let (mut small_rates, mut batch_rates) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = one_way(
            &a,
            &to_b,
            &mut b_inbound,
            &small,
            SMALL_PER_SEND,
            SMALL_MESSAGES,
        )
        .await;
        small_rates.push(SMALL_MESSAGES as f64 / t.as_secs_f64());
        let t = one_way(&a, &to_b, &mut b_inbound, &batch, 1, BATCHES).await;
        batch_rates.push(BATCHES as f64 / t.as_secs_f64());
    }
    let small_msgs_per_s = median(small_rates);
    let batch_msgs_per_s = median(batch_rates);

    // Ping-pong: B answers every message from A with a heartbeat.
    let echo = {
        let (b, to_a, a_id, b_id) = (b.clone(), to_a.clone(), a_id.clone(), b_id.clone());
        tokio::spawn(async move {
            let pong = append(&b_id, &a_id, 0, 0);
            while let Some(item) = b_inbound.recv().await {
                if let Inbound::Message(_) = item {
                    send_all(&*b, &to_a, vec![pong.clone()]).await;
                }
            }
        })
    };
    let ping = append(&a_id, &b_id, 0, 0);
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for run in 0..=RUNS {
        let mut rtts = Vec::with_capacity(PINGS);
        for _ in 0..PINGS {
            let started = Instant::now();
            send_all(&*a, &to_b, vec![ping.clone()]).await;
            match tokio::time::timeout(Duration::from_secs(10), a_inbound.recv()).await {
                Ok(Some(Inbound::Message(_))) => rtts.push(started.elapsed()),
                other => panic!("no pong: {other:?}"),
            }
        }
        if run == 0 {
            continue; // Warm-up.
        }
        rtts.sort();
        p50s.push(rtts[PINGS / 2].as_secs_f64());
        p99s.push(rtts[PINGS * 99 / 100].as_secs_f64());
    }
    echo.abort();
    a.shutdown().await;
    b.shutdown().await;
    Row {
        name: name.to_owned(),
        small_msgs_per_s,
        small_mb_per_s: small_msgs_per_s * SMALL_ENTRY_BYTES as f64 / 1e6,
        batch_msgs_per_s,
        batch_mb_per_s: batch_msgs_per_s * (BATCH_ENTRIES * BATCH_ENTRY_BYTES) as f64 / 1e6,
        rtt_p50: Duration::from_secs_f64(median(p50s)),
        rtt_p99: Duration::from_secs_f64(median(p99s)),
    }
}

/// The wire codec alone (encode and decode of a `Messages` frame holding
/// one 64 KiB batch, one thread, no I/O): the ceiling of every network
/// transport's batch throughput.
pub fn codec_only() -> Row {
    let msg = append(&"a".into(), &"b".into(), BATCH_ENTRIES, BATCH_ENTRY_BYTES);
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        for _ in 0..BATCHES {
            let frame = encode_frame(ClusterId(0), &Frame::Messages(vec![msg.clone()]));
            let decoded = decode_frame_shared(ClusterId(0), &frame);
            assert!(decoded.is_ok(), "own frame does not decode: {decoded:?}");
            let _ = std::hint::black_box(decoded);
        }
        rates.push(BATCHES as f64 / started.elapsed().as_secs_f64());
    }
    let batch_msgs_per_s = median(rates);
    Row {
        name: "wire codec alone (encode + decode, no I/O)".to_owned(),
        small_msgs_per_s: f64::NAN,
        small_mb_per_s: f64::NAN,
        batch_msgs_per_s,
        batch_mb_per_s: batch_msgs_per_s * (BATCH_ENTRIES * BATCH_ENTRY_BYTES) as f64 / 1e6,
        rtt_p50: Duration::ZERO,
        rtt_p99: Duration::ZERO,
    }
}
