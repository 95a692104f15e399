//! Micro-benchmark of the QUIC transport on loopback (mutual TLS with
//! certificates made at start-up), through the harness every transport's
//! `*_bench` example shares ([`raftkit::testing::transport::bench`]), and
//! the wire codec alone (the ceiling). Run it in release mode:
//!
//! ```text
//! cargo run --release -p raftkit-quic --example quic_bench
//! ```

use raftkit::testing::transport::bench;
use raftkit_quic::{ClusterCa, QuicConfig, QuicTransport};

/// The allocator of the `raftkit` binary, so these figures are the ones a
/// node sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = ClusterCa::generate("bench").expect("generating a CA");
    let config = |id: &str| QuicConfig {
        tls: Some(ca.issue(dir.path(), id).expect("issuing a certificate")),
        ..QuicConfig::default()
    };
    let any = "127.0.0.1:0".parse().expect("socket address");
    bench::print_header();
    let a = QuicTransport::bind("a".into(), any, config("a"))
        .await
        .expect("bind a");
    let b = QuicTransport::bind("b".into(), any, config("b"))
        .await
        .expect("bind b");
    bench::print_row(&bench::measure("QUIC (mTLS)", a, b).await);
    bench::print_row(&bench::codec_only());
}
