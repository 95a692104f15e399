//! Mutual TLS refusals: a client certificate from another CA, no client
//! certificate, a valid certificate for a different server id (both as a
//! client claiming another id and as a server answering for another id).

mod common;

use std::time::Duration;

use common::Certs;
use raftkit::testing::transport::{heartbeat, seq_of};
use raftkit::wire::{encode_frame, ClusterId, Frame};
use raftkit::{Inbound, Peer, Transport};
use raftkit_quic::{ErrorKind, QuicConfig, QuicTransport, TlsFiles};
use tokio::time::timeout;

/// Sends `from` → `to` once and returns whether it arrived within 300 ms.
async fn delivered(
    from: &QuicTransport,
    to: &QuicTransport,
    inbound: &mut raftkit::InboundStream,
    seq: u64,
) -> bool {
    let peer = Peer {
        id: to.id().clone(),
        address: to.local_addr(),
    };
    let _ = from.send(&peer, vec![heartbeat(from.id(), to.id(), seq, 0)]);
    match timeout(Duration::from_millis(300), inbound.recv()).await {
        Ok(Some(Inbound::Message(m))) => {
            assert_eq!(seq_of(&m), seq, "unexpected message");
            true
        }
        Ok(other) => panic!("unexpected inbound item {other:?}"),
        Err(_) => false,
    }
}

fn with_files(files: TlsFiles) -> QuicConfig {
    QuicConfig {
        tls: Some(files),
        ..QuicConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    let certs = Certs::new("cluster");
    let rogue = Certs::new("rogue");
    let b = common::bind("b", certs.config("b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    // The impostor trusts the real CA (so it accepts b's certificate) but
    // presents a certificate for "a" from its own CA.
    let rogue_a = rogue.issue("a");
    let impostor = common::bind(
        "a",
        with_files(TlsFiles {
            ca_pem: certs
                .issue_in(&certs.dir.path().join("trust"), "unused")
                .ca_pem,
            ..rogue_a
        }),
    )
    .await;
    assert!(
        !delivered(&impostor, &b, &mut inbound, 1).await,
        "a message over a rogue certificate arrived"
    );
    common::wait_until("b counting the rogue handshake", || {
        b.error_count(ErrorKind::Tls) >= 1
    })
    .await;

    let a = common::bind("a", certs.config("a")).await;
    assert!(
        delivered(&a, &b, &mut inbound, 2).await,
        "the real a could not reach b after the rogue attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused() {
    let certs = Certs::new("cluster");
    let b = common::bind("b", certs.config("b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    let endpoint = common::raw_client(&certs.ca_pem(), None);
    // The handshake may look complete to the client (TLS 1.3 sends the
    // client's certificate last); the server refuses it either way.
    if let Ok(conn) = endpoint.connect(b.socket_addr(), "b").expect("dial").await {
        if let Ok(mut send) = conn.open_uni().await {
            let hello = encode_frame(ClusterId(0), &Frame::Hello { from: "a".into() });
            let mut bytes = (hello.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&hello);
            let _ = send.write_all(&bytes).await;
        }
        assert!(
            timeout(Duration::from_secs(5), conn.closed()).await.is_ok(),
            "b did not close a connection without a client certificate"
        );
    }
    common::wait_until("b counting the handshake without a certificate", || {
        b.error_count(ErrorKind::Tls) >= 1
    })
    .await;
    assert!(
        timeout(Duration::from_millis(100), inbound.recv())
            .await
            .is_err(),
        "something arrived over a connection without a client certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_must_name_the_id_claimed_in_hello() {
    let certs = Certs::new("cluster");
    let b = common::bind("b", certs.config("b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    // Mallory holds a certificate from the cluster CA, but for "mallory".
    let mallory = certs.issue_in(&certs.dir.path().join("mallory"), "mallory");
    let fake_a = common::bind("a", with_files(mallory)).await;
    assert!(
        !delivered(&fake_a, &b, &mut inbound, 1).await,
        "a message from mallory posing as a arrived"
    );
    common::wait_until("b counting mallory posing as a", || {
        b.error_count(ErrorKind::IdentityMismatch) >= 1
    })
    .await;

    let a = common::bind("a", certs.config("a")).await;
    assert!(
        delivered(&a, &b, &mut inbound, 2).await,
        "the real a could not reach b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_must_name_the_peer_dialled() {
    let certs = Certs::new("cluster");
    let b = common::bind("b", certs.config("b")).await;
    let a = common::bind("a", certs.config("a")).await;
    // A dials b's address believing it is "mallory": b's certificate says "b".
    let wrong = Peer {
        id: "mallory".into(),
        address: b.local_addr(),
    };
    let _ = a.send(
        &wrong,
        vec![heartbeat(&"a".into(), &"mallory".into(), 1, 0)],
    );
    common::wait_until("a refusing b's certificate for mallory", || {
        a.error_count(ErrorKind::Connect) >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_dev_peer_is_refused_by_a_cluster_with_a_ca() {
    let certs = Certs::new("cluster");
    let b = common::bind("b", certs.config("b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    let dev = QuicConfig {
        insecure_dev: true,
        ..QuicConfig::default()
    };
    let a = common::bind("a", dev).await;
    assert!(
        !delivered(&a, &b, &mut inbound, 1).await,
        "a self-signed dev peer reached a server with a CA"
    );
}
