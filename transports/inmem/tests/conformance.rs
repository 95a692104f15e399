//! The shared transport conformance suite, run against the in-process transport.

use raftkit::testing::transport::{self as suite, SuiteSizes, TransportFactory};
use raftkit::{NodeId, ServerAddress};
use raftkit_inmem::{InmemNetwork, InmemTransport};

/// The checks measure latencies; running them one at a time keeps them
/// from competing for the CPU with each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Factory {
    net: InmemNetwork,
    next: u32,
}

impl Factory {
    fn new() -> Factory {
        Factory {
            net: InmemNetwork::new(42),
            next: 0,
        }
    }
}

impl TransportFactory for Factory {
    type T = InmemTransport;

    async fn spawn(&mut self, id: &NodeId) -> InmemTransport {
        self.next += 1;
        self.net.endpoint(
            id.clone(),
            ServerAddress::new(format!("inmem-{}", self.next)),
        )
    }

    async fn respawn(&mut self, id: &NodeId, address: &ServerAddress) -> InmemTransport {
        self.net.endpoint(id.clone(), address.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_of_100k_messages() {
    let _serial = SERIAL.lock().await;
    suite::ordered_delivery(&mut Factory::new(), SuiteSizes::FULL.ordered_messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_64_mib_does_not_block_heartbeats() {
    let _serial = SERIAL.lock().await;
    suite::snapshot_does_not_block_messages(&mut Factory::new(), SuiteSizes::FULL.snapshot_bytes)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart_and_reconnect() {
    let _serial = SERIAL.lock().await;
    suite::peer_restart_and_reconnect(&mut Factory::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_sends_are_fast_and_bounded() {
    let _serial = SERIAL.lock().await;
    suite::dead_peer_sends_are_fast_and_bounded(&mut Factory::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_everything() {
    let _serial = SERIAL.lock().await;
    suite::shutdown_closes_everything(&mut Factory::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_in_one_run() {
    let _serial = SERIAL.lock().await;
    let small = SuiteSizes {
        ordered_messages: 5_000,
        snapshot_bytes: 3 << 20,
    };
    suite::run_all(&mut Factory::new(), small).await;
}
