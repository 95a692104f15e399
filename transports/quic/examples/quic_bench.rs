//! Micro-benchmark of the QUIC transport on loopback (mutual TLS with
//! certificates made at start-up): one-way throughput of small messages
//! and of 64 KiB batches, and ping-pong latency. Prints one Markdown table
//! row per configuration; the figures are medians of
//! [`harness::RUNS`] runs. Run it in release mode:
//!
//! ```text
//! cargo run --release -p raftkit-quic --example quic_bench
//! ```
//!
//! The inmem and TCP crates have the same example (TCP's adds the raw TCP
//! floor); their rows go in one table.

use raftkit_quic::{ClusterCa, QuicConfig, QuicTransport};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("raftkit-quic-bench-{}", std::process::id()));
    let ca = ClusterCa::generate("bench").expect("generating a CA");
    // The defaults (MTU ≤ 1452, 4 MiB UDP buffers): a larger MTU bound
    // does not help on loopback, where quinn's black-hole detection falls
    // back to 1200 bytes once the big datagrams overflow a socket buffer.
    let config = |id: &str| QuicConfig {
        tls: Some(ca.issue(&dir, id).expect("issuing a certificate")),
        ..QuicConfig::default()
    };
    let any = "127.0.0.1:0".parse().expect("socket address");
    harness::print_header();
    let a = QuicTransport::bind("a".into(), any, config("a"))
        .await
        .expect("bind a");
    let b = QuicTransport::bind("b".into(), any, config("b"))
        .await
        .expect("bind b");
    harness::print_row(&harness::measure("QUIC (mTLS)", a, b).await);
    let _ = std::fs::remove_dir_all(&dir);
    codec_only();
}

/// The wire codec alone (encode and decode a `Messages` frame, no I/O):
/// the ceiling of every network transport's message throughput.
fn codec_only() {
    use raftkit::wire::{decode_frame, encode_frame, ClusterId, Frame};
    use raftkit::{Entry, LogIndex, Message, MessageBody, ServerAddress, Term};
    use std::time::Instant;

    let entries = (0..harness::BATCH_ENTRIES)
        .map(|i| {
            let data = bytes::Bytes::from(vec![0x5a; harness::BATCH_ENTRY_BYTES]);
            Entry::command(LogIndex(i as u64 + 1), Term(1), data)
        })
        .collect();
    let msg = Message {
        from: "a".into(),
        from_addr: ServerAddress::new("a"),
        to: "b".into(),
        term: Term(1),
        body: MessageBody::AppendEntriesRequest(raftkit::message::AppendEntriesRequest {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(1),
            entries,
            leader_commit: LogIndex(0),
            round: 0,
        }),
    };
    let mut rates = Vec::new();
    for _ in 0..harness::RUNS {
        let started = Instant::now();
        for _ in 0..harness::BATCHES {
            let frame = encode_frame(ClusterId(0), &Frame::Messages(vec![msg.clone()]));
            let decoded = decode_frame(ClusterId(0), &frame).expect("own frame decodes");
            std::hint::black_box(decoded);
        }
        rates.push(harness::BATCHES as f64 / started.elapsed().as_secs_f64());
    }
    let rate = harness::median(rates);
    let bytes = (harness::BATCH_ENTRIES * harness::BATCH_ENTRY_BYTES) as f64;
    println!(
        "\nwire codec alone (encode + decode of a 64 KiB batch, one thread, no I/O): \
         {rate:.0} batches/s, {:.0} MB/s",
        rate * bytes / 1e6
    );
}

/// The measurements, generic over any [`Transport`]; the same text in the
/// inmem, TCP and QUIC crates' `*_bench` examples, so their figures
/// compare.
mod harness {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use raftkit::message::{AppendEntriesRequest, MessageBody};
    use raftkit::transport::InboundStream;
    use raftkit::{Entry, Inbound, LogIndex, Message, NodeId, Peer, ServerAddress, Term};
    use raftkit::{Transport, TransportError};

    /// Runs per figure; the table shows the median.
    pub(crate) const RUNS: usize = 5;
    /// Small messages: one 100-byte entry each, 64 per `send` (the
    /// driver's batch).
    pub(crate) const SMALL_ENTRY_BYTES: usize = 100;
    /// Small messages sent per run.
    pub(crate) const SMALL_MESSAGES: u64 = 100_000;
    /// Small messages per `send` call.
    pub(crate) const SMALL_PER_SEND: usize = 64;
    /// 64 KiB batches: one AppendEntries of 16 entries of 4 KiB per `send`.
    pub(crate) const BATCH_ENTRIES: usize = 16;
    /// Bytes per entry of a 64 KiB batch.
    pub(crate) const BATCH_ENTRY_BYTES: usize = 4096;
    /// 64 KiB batches sent per run (128 MiB).
    pub(crate) const BATCHES: u64 = 2_000;
    /// Ping-pongs per run.
    pub(crate) const PINGS: usize = 2_000;

    /// One row of the table.
    #[derive(Debug)]
    pub(crate) struct Row {
        pub(crate) name: String,
        pub(crate) small_msgs_per_s: f64,
        pub(crate) small_mb_per_s: f64,
        pub(crate) batch_msgs_per_s: f64,
        pub(crate) batch_mb_per_s: f64,
        pub(crate) rtt_p50: Duration,
        pub(crate) rtt_p99: Duration,
    }

    pub(crate) fn print_header() {
        println!(
            "| transport | small msgs/s | small MB/s | 64 KiB batches/s | 64 KiB MB/s | RTT p50 | RTT p99 |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
    }

    pub(crate) fn print_row(row: &Row) {
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

    pub(crate) fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn append(from: &NodeId, to: &NodeId, entries: usize, entry_bytes: usize) -> Message {
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

    /// Measures a connected pair: A sends, B receives, B echoes pings.
    pub(crate) async fn measure<T: Transport>(name: &str, a: T, b: T) -> Row {
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
}
