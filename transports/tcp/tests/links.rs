//! Outbound links: one per peer, closed when idle, reopened on demand.

use std::time::{Duration, Instant};

use raftkit::testing::transport::{heartbeat, seq_of};
use raftkit::transport::InboundStream;
use raftkit::{Inbound, Peer, Transport};
use raftkit_tcp::{TcpConfig, TcpTransport};
use tokio::time::timeout;

async fn receive(inbound: &mut InboundStream, seq: u64) {
    match timeout(Duration::from_secs(5), inbound.recv()).await {
        Ok(Some(Inbound::Message(m))) => assert_eq!(seq_of(&m), seq, "wrong message"),
        other => panic!("message {seq} did not arrive within 5 s: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_link_closes_and_reopens_on_the_next_send() {
    let config = TcpConfig {
        link_idle_timeout: Duration::from_millis(50),
        ..TcpConfig::default()
    };
    let any = "127.0.0.1:0".parse().expect("socket address");
    let a = TcpTransport::bind("a".into(), any, config.clone())
        .await
        .expect("bind a");
    let b = TcpTransport::bind("b".into(), any, config)
        .await
        .expect("bind b");
    let mut inbound = b.take_inbound().expect("inbound");
    let to_b = Peer {
        id: "b".into(),
        address: b.local_addr(),
    };
    let hb = |seq| vec![heartbeat(&"a".into(), &"b".into(), seq, 0)];

    a.send(&to_b, hb(0)).expect("send");
    receive(&mut inbound, 0).await;
    assert_eq!(a.open_links(), 1, "one peer sent to, one link");

    let deadline = Instant::now() + Duration::from_secs(5);
    while a.open_links() > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle link did not close within 5 s (idle timeout 50 ms)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await; // Polling with a deadline.
    }
    a.send(&to_b, hb(1)).expect("send after the link closed");
    receive(&mut inbound, 1).await;
    assert_eq!(a.open_links(), 1, "the send reopened the link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_at_an_old_address_gets_its_own_link() {
    let any = "127.0.0.1:0".parse().expect("socket address");
    let a = TcpTransport::bind("a".into(), any, TcpConfig::default())
        .await
        .expect("bind a");
    let b = TcpTransport::bind("b".into(), any, TcpConfig::default())
        .await
        .expect("bind b");
    let mut inbound = b.take_inbound().expect("inbound");
    a.send(
        &Peer {
            id: "b".into(),
            address: b.local_addr(),
        },
        vec![heartbeat(&"a".into(), &"b".into(), 0, 0)],
    )
    .expect("send");
    receive(&mut inbound, 0).await;
    // Same address, another id (a server that replaced b): a link of its own.
    // (b itself refuses the misaddressed message.)
    let _ = a.send(
        &Peer {
            id: "c".into(),
            address: b.local_addr(),
        },
        vec![heartbeat(&"a".into(), &"c".into(), 1, 0)],
    );
    assert_eq!(a.open_links(), 2, "links are per (id, address)");
}
