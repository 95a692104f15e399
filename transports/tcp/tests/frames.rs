//! The sending side keeps to the frame limits: a burst of large appends is
//! cut into frames of at most `batch_max_bytes` (never one huge frame), and
//! a message that no frame of `max_frame_bytes` can carry is refused by
//! `send` with an error naming both sizes.

use std::time::Duration;

use raftkit::testing::transport::{seq_of, sized_append};
use raftkit::wire::{decode_frame, ClusterId, Frame, WireError};
use raftkit::{Peer, ServerAddress, Transport, TransportError};
use raftkit_tcp::{ErrorKind, TcpConfig, TcpTransport};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const CLUSTER: ClusterId = ClusterId(0x5eed);
const MAX_FRAME: usize = 1 << 20;
const BATCH_BYTES: usize = 128 << 10;

async fn sender() -> TcpTransport {
    let config = TcpConfig {
        cluster: CLUSTER,
        max_frame_bytes: MAX_FRAME,
        batch_max_bytes: BATCH_BYTES,
        snapshot_chunk_bytes: 64 << 10,
        ..TcpConfig::default()
    };
    TcpTransport::bind("a".into(), "127.0.0.1:0".parse().expect("address"), config)
        .await
        .expect("bind a")
}

/// Reads one length-prefixed frame (`None` at a clean end of stream).
async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    match timeout(Duration::from_secs(10), stream.read_exact(&mut len)).await {
        Err(_) => panic!("no frame within 10 s"),
        Ok(Err(_)) => return None,
        Ok(Ok(_)) => {}
    }
    let len = u32::from_be_bytes(len) as usize;
    assert!(
        len <= MAX_FRAME,
        "a frame of {len} bytes exceeds max_frame_bytes {MAX_FRAME}"
    );
    let mut frame = vec![0u8; len];
    timeout(Duration::from_secs(10), stream.read_exact(&mut frame))
        .await
        .expect("frame body within 10 s")
        .expect("frame body");
    Some(frame)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_appends_is_cut_into_bounded_frames() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let b = Peer {
        id: "b".into(),
        address: ServerAddress::new(listener.local_addr().expect("address").to_string()),
    };
    let a = sender().await;
    // 64 appends of 48 KiB (3 MiB) queued at once: with only a message
    // count limit they would go out as one frame of 3 MiB.
    const N: u64 = 64;
    for i in 0..N {
        a.send(&b, vec![sized_append(i, 48 << 10)]).expect("send");
    }
    let (mut peer, _) = timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a connects within 5 s")
        .expect("accept");
    let hello = read_frame(&mut peer).await.expect("Hello");
    assert_eq!(
        decode_frame(CLUSTER, &hello),
        Ok(Frame::Hello { from: "a".into() })
    );
    let (mut next, mut frames, mut largest) = (0u64, 0, 0);
    while next < N {
        let frame = read_frame(&mut peer).await.expect("more frames");
        let Ok(Frame::Messages(msgs)) = decode_frame(CLUSTER, &frame) else {
            panic!("expected a Messages frame");
        };
        assert!(
            frame.len() <= BATCH_BYTES,
            "a frame of {} bytes holds {} messages, above batch_max_bytes {BATCH_BYTES}",
            frame.len(),
            msgs.len()
        );
        for m in msgs {
            assert_eq!(seq_of(&m), next, "messages out of order");
            next += 1;
        }
        frames += 1;
        largest = largest.max(frame.len());
    }
    assert!(
        frames >= (N * (48 << 10)) as usize / BATCH_BYTES,
        "{frames} frames for 3 MiB of appends (largest {largest} bytes)"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_frame_is_refused_by_send() {
    let b = TcpTransport::bind(
        "b".into(),
        "127.0.0.1:0".parse().expect("address"),
        TcpConfig {
            cluster: CLUSTER,
            max_frame_bytes: MAX_FRAME,
            snapshot_chunk_bytes: 64 << 10,
            ..TcpConfig::default()
        },
    )
    .await
    .expect("bind b");
    let mut inbound = b.take_inbound().expect("inbound");
    let to_b = Peer {
        id: "b".into(),
        address: b.local_addr(),
    };
    let a = sender().await;
    // A small append, then one whose single entry is larger than a frame,
    // together in one call: the call is refused and queues nothing.
    let refused = a.send(&to_b, vec![sized_append(0, 10), sized_append(1, MAX_FRAME)]);
    match &refused {
        Err(TransportError::Wire(WireError::TooLarge { len, max })) => {
            assert!(*len > MAX_FRAME, "reported length {len}");
            assert_eq!(*max, MAX_FRAME);
        }
        other => panic!("expected Wire(TooLarge), got {other:?}"),
    }
    let text = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("exceeds the maximum of 1048576"),
        "the error should name the limit: {text}"
    );
    assert_eq!(a.error_count(ErrorKind::OversizedMessage), 1);

    // The largest message that fits still goes through, after a small one.
    a.send(
        &to_b,
        vec![sized_append(2, 10), sized_append(3, MAX_FRAME - 1024)],
    )
    .expect("messages that fit a frame");
    for want in [2, 3] {
        match timeout(Duration::from_secs(10), inbound.recv()).await {
            Ok(Some(raftkit::Inbound::Message(m))) => assert_eq!(seq_of(&m), want),
            other => panic!("message {want} did not arrive: {other:?}"),
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}
