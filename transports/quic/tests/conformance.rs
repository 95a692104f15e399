//! The shared transport conformance suite, run against the QUIC transport
//! over 127.0.0.1 with mutual TLS (certificates made at test time), and a
//! short run in `insecure_dev` mode.

mod common;

use common::Certs;
use raftkit::testing::transport::{self as suite, SuiteSizes, TransportFactory};
use raftkit::{NodeId, ServerAddress};
use raftkit_quic::{QuicConfig, QuicTransport};

/// The checks measure latencies; running them one at a time keeps them
/// from competing for the CPU with each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Factory {
    certs: Option<Certs>,
}

impl Factory {
    fn mtls() -> Factory {
        Factory {
            certs: Some(Certs::new("conformance")),
        }
    }

    fn config(&self, id: &NodeId) -> QuicConfig {
        match &self.certs {
            Some(certs) => certs.config(id.as_str()),
            None => QuicConfig {
                insecure_dev: true,
                ..QuicConfig::default()
            },
        }
    }
}

impl TransportFactory for Factory {
    type T = QuicTransport;

    async fn spawn(&mut self, id: &NodeId) -> QuicTransport {
        common::bind(id.as_str(), self.config(id)).await
    }

    async fn respawn(&mut self, id: &NodeId, address: &ServerAddress) -> QuicTransport {
        common::rebind(id, address, self.config(id)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_of_100k_messages() {
    let _serial = SERIAL.lock().await;
    suite::ordered_delivery(&mut Factory::mtls(), SuiteSizes::FULL.ordered_messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_64_mib_does_not_block_heartbeats() {
    let _serial = SERIAL.lock().await;
    suite::snapshot_does_not_block_messages(&mut Factory::mtls(), SuiteSizes::FULL.snapshot_bytes)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_restart_and_reconnect() {
    let _serial = SERIAL.lock().await;
    suite::peer_restart_and_reconnect(&mut Factory::mtls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_sends_are_fast_and_bounded() {
    let _serial = SERIAL.lock().await;
    suite::dead_peer_sends_are_fast_and_bounded(&mut Factory::mtls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_everything() {
    let _serial = SERIAL.lock().await;
    suite::shutdown_closes_everything(&mut Factory::mtls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_dev_mode_passes_the_suite_with_small_sizes() {
    let _serial = SERIAL.lock().await;
    let sizes = SuiteSizes {
        ordered_messages: 10_000,
        // A quarter of the full suite's snapshot: the check paces B's
        // reading (SNAPSHOT_MIN_TRANSFER), so the size does not set how long
        // the transfer lasts.
        snapshot_bytes: 16 << 20,
    };
    suite::run_all(&mut Factory { certs: None }, sizes).await;
}
