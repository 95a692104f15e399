//! Micro-benchmark of the TCP transport on loopback, plain and with mutual
//! TLS (certificates made at start-up), beside raw TCP (the floor), through
//! the harness every transport's `*_bench` example shares
//! ([`raftkit::testing::transport::bench`]). Run it in release mode:
//!
//! ```text
//! cargo run --release -p raftkit-tcp --example tcp_bench
//! ```

use std::time::{Duration, Instant};

use raftkit::testing::transport::bench as harness;
use raftkit::testing::transport::certs::TestCa;
use raftkit_tcp::{TcpConfig, TcpTransport, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The allocator of the `raftkit` binary, so these figures are the ones a
/// node sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let any = "127.0.0.1:0".parse().expect("socket address");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = TestCa::new("bench");
    let tls = |id: &str| {
        let files = ca.issue(dir.path(), id);
        TlsConfig {
            ca_pem: files.ca_pem,
            cert_pem: files.cert_pem,
            key_pem: files.key_pem,
        }
    };
    harness::print_header();
    harness::print_row(&raw_tcp().await);
    for (name, with_tls) in [("TCP (plain)", false), ("TCP (mTLS)", true)] {
        let config = |id: &str| TcpConfig {
            tls: with_tls.then(|| tls(id)),
            ..TcpConfig::default()
        };
        let a = TcpTransport::bind("a".into(), any, config("a"))
            .await
            .expect("bind a");
        let b = TcpTransport::bind("b".into(), any, config("b"))
            .await
            .expect("bind b");
        harness::print_row(&harness::measure(name, a, b).await);
    }
}

/// Blocks of 64 KiB per raw write. The transports hand several queued
/// frames to one vectored write; a floor that wrote 64 KiB at a time paid a
/// system call and a wake-up per block and measured below them.
const BLOCKS_PER_WRITE: u64 = 16;
const _: () = assert!(harness::BATCHES.is_multiple_of(BLOCKS_PER_WRITE));

/// Raw TCP on loopback, no framing or encoding: 1 MiB writes one way, and
/// a heartbeat-sized (64-byte) ping-pong. The floor under every transport.
async fn raw_tcp() -> harness::Row {
    const PING_BYTES: usize = 64;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    // Server: sink for the one-way runs, then echo.
    let server = tokio::spawn(async move {
        let (mut sink, _) = listener.accept().await.expect("accept");
        // The warm-up block, then every run's.
        let total = (1 + harness::BATCHES as usize * harness::RUNS) * (64 << 10);
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < total {
            let n = sink.read(&mut buf).await.expect("read");
            assert!(n > 0, "raw sink closed early");
            got += n;
        }
        sink.write_all(&[1]).await.expect("ack");
        let (mut echo, _) = listener.accept().await.expect("accept");
        echo.set_nodelay(true).expect("nodelay");
        let mut ping = [0u8; PING_BYTES];
        while echo.read_exact(&mut ping).await.is_ok() {
            echo.write_all(&ping).await.expect("echo");
        }
    });
    let mut out = TcpStream::connect(addr).await.expect("connect");
    let block = vec![0x5a; 64 << 10];
    let blocks = vec![0x5a; BLOCKS_PER_WRITE as usize * (64 << 10)];
    let mut rates = Vec::new();
    out.write_all(&block).await.expect("warm-up write");
    for _ in 0..harness::RUNS {
        let started = Instant::now();
        for _ in 0..harness::BATCHES / BLOCKS_PER_WRITE {
            out.write_all(&blocks).await.expect("write");
        }
        out.flush().await.expect("flush");
        rates.push(harness::BATCHES as f64 / started.elapsed().as_secs_f64());
    }
    let mut ack = [0u8; 1];
    out.read_exact(&mut ack).await.expect("sink ack");
    let batch_msgs_per_s = harness::median(rates);

    let mut ping = TcpStream::connect(addr).await.expect("connect");
    ping.set_nodelay(true).expect("nodelay");
    let mut buf = [7u8; PING_BYTES];
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for run in 0..=harness::RUNS {
        let mut rtts = Vec::with_capacity(harness::PINGS);
        for _ in 0..harness::PINGS {
            let started = Instant::now();
            ping.write_all(&buf).await.expect("ping");
            ping.read_exact(&mut buf).await.expect("pong");
            rtts.push(started.elapsed());
        }
        if run > 0 {
            rtts.sort();
            p50s.push(rtts[harness::PINGS / 2].as_secs_f64());
            p99s.push(rtts[harness::PINGS * 99 / 100].as_secs_f64());
        }
    }
    drop(ping);
    server.await.expect("raw server");
    harness::Row {
        name: "raw TCP (floor; writes of 1 MiB)".to_owned(),
        small_msgs_per_s: f64::NAN,
        small_mb_per_s: f64::NAN,
        batch_msgs_per_s,
        batch_mb_per_s: batch_msgs_per_s * (64 << 10) as f64 / 1e6,
        rtt_p50: Duration::from_secs_f64(harness::median(p50s)),
        rtt_p99: Duration::from_secs_f64(harness::median(p99s)),
    }
}
