//! Mutual TLS: the conformance suite over TLS, and the identity checks (a
//! certificate must name the id its holder claims, a peer must hold a
//! certificate from the cluster's CA).
#![cfg(feature = "tls")]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use raftkit::testing::transport::certs::TestCa;
use raftkit::testing::transport::{self as suite, heartbeat, seq_of, SuiteSizes, TransportFactory};
use raftkit::{Inbound, NodeId, Peer, ServerAddress, Transport};
use raftkit_tcp::{ErrorKind, TcpConfig, TcpTransport, TlsConfig};
use tokio::time::timeout;

/// The conformance checks measure latencies; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test PKI, made once per test binary in a temporary directory: the
/// cluster CA with certificates for a, b and mallory (a valid chain for the
/// wrong identity), and a rogue CA with its own certificate for a.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    rogue: TestCa,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki {
        dir: tempfile::tempdir().expect("a temporary directory"),
        ca: TestCa::new("ca"),
        rogue: TestCa::new("rogue-ca"),
    })
}

/// TLS settings with `ca` ("ca" or "rogue-ca") as the trusted CA and a
/// certificate it issues for `id`.
fn tls(ca: &str, id: &str) -> TcpConfig {
    let pki = pki();
    let (issuer, sub) = match ca {
        "ca" => (&pki.ca, "cluster"),
        "rogue-ca" => (&pki.rogue, "rogue"),
        other => panic!("no test CA {other}"),
    };
    // A directory per certificate: tests run in parallel and each issues its own.
    static ISSUED: AtomicUsize = AtomicUsize::new(0);
    let n = ISSUED.fetch_add(1, Ordering::Relaxed);
    let dir: &Path = &pki.dir.path().join(format!("{sub}-{n}"));
    let files = issuer.issue(dir, id);
    TcpConfig {
        tls: Some(TlsConfig {
            ca_pem: files.ca_pem,
            cert_pem: files.cert_pem,
            key_pem: files.key_pem,
        }),
        ..TcpConfig::default()
    }
}

async fn bind(id: &str, config: TcpConfig) -> TcpTransport {
    let any = "127.0.0.1:0".parse().expect("socket address");
    TcpTransport::bind(id.into(), any, config)
        .await
        .unwrap_or_else(|e| panic!("binding {id}: {e}"))
}

struct Factory;

impl TransportFactory for Factory {
    type T = TcpTransport;

    async fn spawn(&mut self, id: &NodeId) -> TcpTransport {
        bind(id.as_str(), tls("ca", id.as_str())).await
    }

    async fn respawn(&mut self, id: &NodeId, address: &ServerAddress) -> TcpTransport {
        let addr = address
            .as_str()
            .parse()
            .unwrap_or_else(|e| panic!("address {address}: {e}"));
        TcpTransport::bind(id.clone(), addr, tls("ca", id.as_str()))
            .await
            .unwrap_or_else(|e| panic!("rebinding {id} to {address}: {e}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_mutual_tls() {
    let _serial = SERIAL.lock().await;
    suite::run_all(&mut Factory, SuiteSizes::FULL).await;
}

/// Waits until `t` has counted an error of `kind`.
async fn wait_for_error(t: &TcpTransport, kind: ErrorKind, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.error_count(kind) == 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: no {kind} error counted within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // Polling with a deadline.
    }
}

/// Sends `from` → `to` once and returns whether it arrived within 300 ms.
async fn delivered(
    from: &TcpTransport,
    from_id: &str,
    to: &TcpTransport,
    inbound: &mut raftkit::InboundStream,
    seq: u64,
) -> bool {
    let peer = Peer {
        id: to.id().clone(),
        address: to.local_addr(),
    };
    let _ = from.send(&peer, vec![heartbeat(&from_id.into(), to.id(), seq, 0)]);
    match timeout(Duration::from_millis(300), inbound.recv()).await {
        Ok(Some(Inbound::Message(m))) => {
            assert_eq!(seq_of(&m), seq, "unexpected message");
            true
        }
        Ok(other) => panic!("unexpected inbound item {other:?}"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_must_name_the_id_claimed_in_hello() {
    let b = bind("b", tls("ca", "b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    // Mallory holds a certificate from the cluster CA, but for "mallory".
    let fake_a = bind("a", tls("ca", "mallory")).await;
    assert!(
        !delivered(&fake_a, "a", &b, &mut inbound, 1).await,
        "a message from mallory posing as a arrived"
    );
    wait_for_error(&b, ErrorKind::IdentityMismatch, "mallory posing as a").await;

    let a = bind("a", tls("ca", "a")).await;
    assert!(
        delivered(&a, "a", &b, &mut inbound, 2).await,
        "the real a could not reach b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let b = bind("b", tls("ca", "b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    let rogue = bind("a", tls("rogue-ca", "a")).await;
    assert!(
        !delivered(&rogue, "a", &b, &mut inbound, 1).await,
        "a message over a rogue certificate arrived"
    );
    wait_for_error(&b, ErrorKind::Tls, "rogue CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_client_is_refused_by_a_tls_server() {
    let b = bind("b", tls("ca", "b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    let plain = bind("a", TcpConfig::default()).await;
    assert!(
        !delivered(&plain, "a", &b, &mut inbound, 1).await,
        "a plain-TCP message reached a TLS server"
    );
    wait_for_error(&b, ErrorKind::Tls, "plain TCP client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_must_name_the_peer_dialled() {
    let b = bind("b", tls("ca", "b")).await;
    let a = bind("a", tls("ca", "a")).await;
    // A dials b's address believing it is "mallory": b's certificate says "b".
    let wrong = Peer {
        id: "mallory".into(),
        address: b.local_addr(),
    };
    let _ = a.send(
        &wrong,
        vec![heartbeat(&"a".into(), &"mallory".into(), 1, 0)],
    );
    wait_for_error(&a, ErrorKind::Connect, "dialling b as mallory").await;
}
