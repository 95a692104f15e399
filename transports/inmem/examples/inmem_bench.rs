//! Micro-benchmark of the in-process transport (no sockets, no encoding:
//! the ceiling the network transports are measured against), through the
//! harness every transport's `*_bench` example shares
//! ([`raftkit::testing::transport::bench`]). Run it in release mode:
//!
//! ```text
//! cargo run --release -p raftkit-inmem --example inmem_bench
//! ```

use raftkit::testing::transport::bench;
use raftkit_inmem::InmemNetwork;

/// The allocator of the `raftkit` binary, so these figures are the ones a
/// node sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let net = InmemNetwork::new(7);
    let a = net.endpoint("a".into(), "addr-a".into());
    let b = net.endpoint("b".into(), "addr-b".into());
    bench::print_header();
    bench::print_row(&bench::measure("inmem", a, b).await);
}
