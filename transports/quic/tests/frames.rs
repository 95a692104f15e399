//! A message that no frame of `max_frame_bytes` can carry is refused by
//! `send`, naming both sizes; the largest one that fits still arrives.

mod common;

use std::time::Duration;

use common::Certs;
use raftkit::testing::transport::{seq_of, sized_append};
use raftkit::wire::WireError;
use raftkit::{Inbound, Peer};
use raftkit::{Transport, TransportError};
use raftkit_quic::{ErrorKind, QuicConfig};
use tokio::time::timeout;

const MAX_FRAME: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_frame_is_refused_by_send() {
    let certs = Certs::new("cluster");
    let config = |id: &str| QuicConfig {
        max_frame_bytes: MAX_FRAME,
        snapshot_chunk_bytes: 64 << 10,
        ..certs.config(id)
    };
    let a = common::bind("a", config("a")).await;
    let b = common::bind("b", config("b")).await;
    let mut inbound = b.take_inbound().expect("inbound");
    let to_b = Peer {
        id: "b".into(),
        address: b.local_addr(),
    };
    match a.send(&to_b, vec![sized_append(0, 10), sized_append(1, MAX_FRAME)]) {
        Err(TransportError::Wire(WireError::TooLarge { len, max })) => {
            assert!(len > MAX_FRAME, "reported length {len}");
            assert_eq!(max, MAX_FRAME);
        }
        other => panic!("expected Wire(TooLarge), got {other:?}"),
    }
    assert_eq!(a.error_count(ErrorKind::OversizedMessage), 1);
    a.send(
        &to_b,
        vec![sized_append(2, 10), sized_append(3, MAX_FRAME - 1024)],
    )
    .expect("messages that fit a frame");
    for want in [2, 3] {
        match timeout(Duration::from_secs(10), inbound.recv()).await {
            Ok(Some(Inbound::Message(m))) => assert_eq!(seq_of(&m), want),
            other => panic!("message {want} did not arrive: {other:?}"),
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}
