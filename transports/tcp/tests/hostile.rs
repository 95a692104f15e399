//! Hostile input from a raw socket closes only that connection, is counted
//! in `raft_transport_errors_total{kind}`, and leaves a normal peer on the
//! same listener working.

use std::time::{Duration, Instant};

use raftkit::testing::transport::{heartbeat, seq_of};
use raftkit::transport::InboundStream;
use raftkit::wire::{encode_frame, ClusterId, Frame};
use raftkit::{Inbound, NodeId, Peer, Transport};
use raftkit_tcp::{ErrorKind, TcpConfig, TcpTransport, ERRORS_METRIC};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const CLUSTER: ClusterId = ClusterId(0xC1);

/// The process-wide `raft_transport_errors_total` for `kind`.
fn metric(kind: ErrorKind) -> u64 {
    raftkit::testing::transport::metrics::error_metric(kind)
}

struct Pair {
    a: TcpTransport,
    b: TcpTransport,
    b_inbound: InboundStream,
    seq: u64,
}

impl Pair {
    async fn new() -> Pair {
        let config = TcpConfig {
            cluster: CLUSTER,
            max_frame_bytes: 1 << 20,
            snapshot_chunk_bytes: 64 << 10,
            ..TcpConfig::default()
        };
        let any = "127.0.0.1:0".parse().expect("socket address");
        let a = TcpTransport::bind("a".into(), any, config.clone())
            .await
            .expect("bind a");
        let b = TcpTransport::bind("b".into(), any, config)
            .await
            .expect("bind b");
        let b_inbound = b.take_inbound().expect("b's inbound");
        let mut pair = Pair {
            a,
            b,
            b_inbound,
            seq: 0,
        };
        pair.assert_a_reaches_b("before the hostile input").await;
        pair
    }

    /// A's next message reaches B, in order after the earlier ones.
    async fn assert_a_reaches_b(&mut self, when: &str) {
        let to_b = Peer {
            id: "b".into(),
            address: self.b.local_addr(),
        };
        let seq = self.seq;
        self.seq += 1;
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        self.a
            .send(&to_b, vec![heartbeat(&a, &b, seq, 0)])
            .unwrap_or_else(|e| panic!("{when}: send failed: {e}"));
        loop {
            match timeout(Duration::from_secs(5), self.b_inbound.recv()).await {
                Ok(Some(Inbound::Message(m))) => {
                    assert_eq!(seq_of(&m), seq, "{when}: wrong message");
                    return;
                }
                Ok(Some(Inbound::Snapshot(mut s))) => {
                    // A hostile snapshot stream must end aborted: no `done` chunk.
                    while let Ok(Some(chunk)) =
                        timeout(Duration::from_secs(5), s.chunks.recv()).await
                    {
                        assert!(!chunk.done, "{when}: a hostile snapshot stream completed");
                    }
                }
                Ok(None) => panic!("{when}: B's inbound stream ended"),
                Err(_) => {
                    panic!("{when}: message {seq} from the normal peer did not arrive within 5 s")
                }
            }
        }
    }

    fn errors(&self) -> u64 {
        ErrorKind::ALL.iter().map(|k| self.b.error_count(*k)).sum()
    }
}

/// Sends `bytes` from a raw socket (then closes its write side if
/// `close_write`), and checks that B closes that connection, counts an error
/// of `kind` (any kind if `None`), and still serves A.
async fn hostile(name: &str, bytes: &[u8], close_write: bool, kind: Option<ErrorKind>) {
    let mut pair = Pair::new().await;
    let metric_before = kind.map(metric);
    let mut raw = TcpStream::connect(pair.b.socket_addr())
        .await
        .expect("raw connect");
    raw.write_all(bytes)
        .await
        .unwrap_or_else(|e| panic!("{name}: writing the hostile bytes: {e}"));
    if close_write {
        raw.shutdown()
            .await
            .unwrap_or_else(|e| panic!("{name}: closing the write side: {e}"));
    }
    let closed = timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 256];
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{name}: B did not close the hostile connection within 5 s"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counted = match kind {
            Some(kind) => pair.b.error_count(kind) >= 1,
            None => pair.errors() >= 1,
        };
        if counted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no error of kind {kind:?} counted within 5 s"
        );
        tokio::task::yield_now().await;
    }
    if let (Some(kind), Some(before)) = (kind, metric_before) {
        assert!(
            metric(kind) > before,
            "{name}: {ERRORS_METRIC}{{kind={kind}}} did not grow"
        );
    }
    pair.assert_a_reaches_b(&format!("{name}: after the hostile connection"))
        .await;
    pair.a.shutdown().await;
    pair.b.shutdown().await;
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

fn hello(cluster: ClusterId, from: &str) -> Vec<u8> {
    framed(&encode_frame(cluster, &Frame::Hello { from: from.into() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_close_only_their_connection() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xBAD);
    let bytes: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    hostile("random bytes", &bytes, true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frame_body_is_refused() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xBAD2);
    let body: Vec<u8> = (0..64).map(|_| rng.random()).collect();
    hostile(
        "random frame body",
        &framed(&body),
        false,
        Some(ErrorKind::BadMagic),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_refused() {
    let mut bytes = hello(CLUSTER, "x");
    bytes.truncate(bytes.len() - 3);
    hostile("truncated frame", &bytes, true, Some(ErrorKind::Truncated)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gib_length_prefix_is_refused_without_allocating() {
    hostile(
        "4 GiB length prefix",
        &[0xff, 0xff, 0xff, 0xff, b'R', b'K', 1],
        false,
        Some(ErrorKind::FrameTooLarge),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_wire_version_is_refused() {
    let mut frame = encode_frame(CLUSTER, &Frame::Hello { from: "x".into() }).to_vec();
    frame[2] = 99;
    hostile(
        "wrong version",
        &framed(&frame),
        false,
        Some(ErrorKind::WrongVersion),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cluster_is_refused() {
    hostile(
        "unknown cluster",
        &hello(ClusterId(0xBEEF), "x"),
        false,
        Some(ErrorKind::WrongCluster),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_must_be_hello() {
    let msgs = Frame::Messages(vec![heartbeat(&"a".into(), &"b".into(), 1, 0)]);
    hostile(
        "no hello",
        &framed(&encode_frame(CLUSTER, &msgs)),
        false,
        Some(ErrorKind::UnexpectedFrame),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_must_come_from_the_hello_sender() {
    let mut bytes = hello(CLUSTER, "x");
    let msgs = Frame::Messages(vec![heartbeat(&"a".into(), &"b".into(), 1, 0)]);
    bytes.extend(framed(&encode_frame(CLUSTER, &msgs)));
    hostile(
        "spoofed sender",
        &bytes,
        false,
        Some(ErrorKind::SpoofedSender),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_out_of_order_are_refused() {
    use raftkit::testing::transport::snapshot_offer;
    let mut bytes = hello(CLUSTER, "x");
    let offer = Frame::SnapshotOffer(snapshot_offer(&"x".into(), &"b".into(), 10));
    bytes.extend(framed(&encode_frame(CLUSTER, &offer)));
    let chunk = Frame::SnapshotChunk {
        offset: 5,
        data: vec![0u8; 5].into(),
        done: true,
    };
    bytes.extend(framed(&encode_frame(CLUSTER, &chunk)));
    // The offer reaches B's inbound stream; the bad chunk closes the connection.
    hostile(
        "snapshot out of order",
        &bytes,
        false,
        Some(ErrorKind::SnapshotStream),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_message_connection_replaces_the_older_one() {
    let mut pair = Pair::new().await;
    let (a, b) = (NodeId::new("a"), NodeId::new("b"));
    let mut open = async |seq: u64| {
        let mut raw = TcpStream::connect(pair.b.socket_addr())
            .await
            .expect("raw connect");
        let mut bytes = hello(CLUSTER, "a");
        let msgs = Frame::Messages(vec![heartbeat(&a, &b, seq, 0)]);
        bytes.extend(framed(&encode_frame(CLUSTER, &msgs)));
        raw.write_all(&bytes).await.expect("write");
        match timeout(Duration::from_secs(5), pair.b_inbound.recv()).await {
            Ok(Some(Inbound::Message(m))) => assert_eq!(seq_of(&m), seq),
            other => panic!("message {seq} did not arrive: {other:?}"),
        }
        raw
    };
    let mut old = open(100).await;
    let _new = open(101).await;
    let closed = timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 16];
        while let Ok(n) = old.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the older message connection from a was not closed within 5 s"
    );
}
