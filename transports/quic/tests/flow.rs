//! Flow control between streams: a snapshot whose receiver stops reading
//! fills only its own stream's window, so messages keep flowing on the
//! same connection; dropping the snapshot fails the sender's
//! `send_snapshot` instead of leaving it hanging.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Certs;
use raftkit::testing::transport::{heartbeat, seq_of, snapshot_offer, PatternReader};
use raftkit::{Inbound, NodeId, Peer, Transport};
use tokio::time::timeout;

/// Eight times the 4 MiB stream window: the sender must block on flow
/// control long before it is done.
const SNAPSHOT_BYTES: u64 = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_snapshot_receiver_does_not_stall_messages() {
    let certs = Certs::new("flow");
    let a = Arc::new(common::bind("a", certs.config("a")).await);
    let b = common::bind("b", certs.config("b")).await;
    let mut inbound = b.take_inbound().expect("b's inbound");
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };

    let snapshot = {
        let (a, to_b) = (a.clone(), to_b.clone());
        let offer = snapshot_offer(&a_id, &b_id, SNAPSHOT_BYTES);
        tokio::spawn(async move {
            a.send_snapshot(&to_b, offer, Box::new(PatternReader::new(SNAPSHOT_BYTES)))
                .await
        })
    };
    // B takes the snapshot stream and never reads a chunk.
    let stalled = match timeout(Duration::from_secs(10), inbound.recv()).await {
        Ok(Some(Inbound::Snapshot(s))) => s,
        other => panic!("expected the snapshot offer first, got {other:?}"),
    };

    for seq in 0..200 {
        a.send(&to_b, vec![heartbeat(&a_id, &b_id, seq, 0)])
            .unwrap_or_else(|e| panic!("heartbeat {seq}: send failed: {e}"));
        match timeout(Duration::from_secs(5), inbound.recv()).await {
            Ok(Some(Inbound::Message(m))) => assert_eq!(seq_of(&m), seq, "heartbeat order"),
            other => panic!("heartbeat {seq} did not arrive behind a stalled snapshot: {other:?}"),
        }
    }
    assert!(
        !snapshot.is_finished(),
        "the snapshot finished although its receiver never read a chunk"
    );

    // B discards the snapshot: the sender learns it failed.
    drop(stalled);
    match timeout(Duration::from_secs(10), snapshot).await {
        Ok(Ok(Err(_))) => {}
        Ok(Ok(Ok(()))) => panic!("send_snapshot succeeded although B discarded it"),
        Ok(Err(e)) => panic!("the snapshot task failed: {e}"),
        Err(_) => panic!("send_snapshot did not fail within 10 s of B discarding it"),
    }
    a.shutdown().await;
    b.shutdown().await;
}
