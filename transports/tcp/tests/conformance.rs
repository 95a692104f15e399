//! The shared transport conformance suite, run against the TCP transport
//! over 127.0.0.1.

use raftkit::testing::transport::{self as suite, SuiteSizes, TransportFactory};
use raftkit::{NodeId, ServerAddress};
use raftkit_tcp::{TcpConfig, TcpTransport};

/// The checks measure latencies; running them one at a time keeps them
/// from competing for the CPU with each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Factory;

impl TransportFactory for Factory {
    type T = TcpTransport;

    async fn spawn(&mut self, id: &NodeId) -> TcpTransport {
        let any = "127.0.0.1:0".parse().expect("valid socket address");
        TcpTransport::bind(id.clone(), any, TcpConfig::default())
            .await
            .unwrap_or_else(|e| panic!("binding {id} to 127.0.0.1:0: {e}"))
    }

    async fn respawn(&mut self, id: &NodeId, address: &ServerAddress) -> TcpTransport {
        let addr = address
            .as_str()
            .parse()
            .unwrap_or_else(|e| panic!("address {address}: {e}"));
        TcpTransport::bind(id.clone(), addr, TcpConfig::default())
            .await
            .unwrap_or_else(|e| panic!("rebinding {id} to {address}: {e}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_of_100k_messages() {
    let _serial = SERIAL.lock().await;
    suite::ordered_delivery(&mut Factory, SuiteSizes::FULL.ordered_messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_64_mib_does_not_block_heartbeats() {
    let _serial = SERIAL.lock().await;
    suite::snapshot_does_not_block_messages(&mut Factory, SuiteSizes::FULL.snapshot_bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart_and_reconnect() {
    let _serial = SERIAL.lock().await;
    suite::peer_restart_and_reconnect(&mut Factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_sends_are_fast_and_bounded() {
    let _serial = SERIAL.lock().await;
    suite::dead_peer_sends_are_fast_and_bounded(&mut Factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_everything() {
    let _serial = SERIAL.lock().await;
    suite::shutdown_closes_everything(&mut Factory).await;
}
