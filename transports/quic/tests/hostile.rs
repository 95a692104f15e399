//! Hostile input from a raw quinn client (holding a valid certificate, so
//! the bytes reach the frame decoder) closes only that connection, is
//! counted in `raft_transport_errors_total{kind}`, and leaves a normal peer
//! on the same endpoint working.

mod common;

use std::time::Duration;

use common::Certs;
use raftkit::testing::transport::{heartbeat, seq_of};
use raftkit::transport::InboundStream;
use raftkit::wire::{encode_frame, ClusterId, Frame};
use raftkit::{Inbound, NodeId, Peer, Transport};
use raftkit_quic::{ErrorKind, QuicConfig, QuicTransport, ERRORS_METRIC};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::timeout;

const CLUSTER: ClusterId = ClusterId(0xC1);

/// The process-wide `raft_transport_errors_total` for `kind`.
fn metric(kind: ErrorKind) -> u64 {
    raftkit::testing::transport::metrics::error_metric(kind)
}

/// A normal sender A, the server B under attack, and a raw client X that
/// holds a valid certificate for "x".
struct Pair {
    certs: Certs,
    a: QuicTransport,
    b: QuicTransport,
    b_inbound: InboundStream,
    seq: u64,
}

impl Pair {
    async fn new() -> Pair {
        let certs = Certs::new("hostile");
        let config = |id: &str| QuicConfig {
            cluster: CLUSTER,
            max_frame_bytes: 1 << 20,
            snapshot_chunk_bytes: 64 << 10,
            ..certs.config(id)
        };
        let a = common::bind("a", config("a")).await;
        let b = common::bind("b", config("b")).await;
        let b_inbound = b.take_inbound().expect("b's inbound");
        let mut pair = Pair {
            certs,
            a,
            b,
            b_inbound,
            seq: 0,
        };
        pair.assert_a_reaches_b("before the hostile input").await;
        pair
    }

    /// A raw connection to B presenting a valid certificate for `id`.
    async fn raw(&self, id: &str) -> (quinn::Endpoint, quinn::Connection) {
        let sub = self.certs.dir.path().join(format!("raw-{id}"));
        let files = self.certs.issue_in(&sub, id);
        let endpoint = common::raw_client(&files.ca_pem, Some(&files));
        let conn = endpoint
            .connect(self.b.socket_addr(), "b")
            .expect("dial b")
            .await
            .expect("handshake with b");
        (endpoint, conn)
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

/// How the raw client delivers its bytes.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// A unidirectional stream (a message stream), finished or left open.
    Uni { finish: bool },
    /// A bidirectional stream (a snapshot stream), left open.
    Bi,
}

/// Sends `bytes` on a stream from a raw client, and checks that B closes
/// that connection, counts an error of `kind` (any kind if `None`), and
/// still serves A.
async fn hostile(name: &str, bytes: &[u8], via: Via, kind: Option<ErrorKind>) {
    let mut pair = Pair::new().await;
    let metric_before = kind.map(metric);
    let (_endpoint, conn) = pair.raw("x").await;
    let mut send = match via {
        Via::Uni { .. } => conn.open_uni().await.expect("open a uni stream"),
        Via::Bi => conn.open_bi().await.expect("open a bi stream").0,
    };
    send.write_all(bytes)
        .await
        .unwrap_or_else(|e| panic!("{name}: writing the hostile bytes: {e}"));
    if let Via::Uni { finish: true } = via {
        send.finish().expect("finish the stream");
    }
    let closed = timeout(Duration::from_secs(5), conn.closed()).await;
    match closed {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code, 1u32.into(), "{name}: wrong close code");
        }
        Ok(other) => panic!("{name}: the connection ended otherwise: {other}"),
        Err(_) => panic!("{name}: B did not close the hostile connection within 5 s"),
    }
    match kind {
        Some(kind) => {
            common::wait_until(&format!("{name}: counting a {kind} error"), || {
                pair.b.error_count(kind) >= 1
            })
            .await
        }
        None => {
            common::wait_until(&format!("{name}: counting an error"), || pair.errors() >= 1).await
        }
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
    hostile("random bytes", &bytes, Via::Uni { finish: true }, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frame_body_is_refused() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xBAD2);
    let body: Vec<u8> = (0..64).map(|_| rng.random()).collect();
    hostile(
        "random frame body",
        &framed(&body),
        Via::Uni { finish: false },
        Some(ErrorKind::BadMagic),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_refused() {
    let mut bytes = hello(CLUSTER, "x");
    bytes.truncate(bytes.len() - 3);
    hostile(
        "truncated frame",
        &bytes,
        Via::Uni { finish: true },
        Some(ErrorKind::Truncated),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gib_length_prefix_is_refused_without_allocating() {
    hostile(
        "4 GiB length prefix",
        &[0xff, 0xff, 0xff, 0xff, b'R', b'K', 1],
        Via::Uni { finish: false },
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
        Via::Uni { finish: false },
        Some(ErrorKind::WrongVersion),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cluster_is_refused() {
    hostile(
        "unknown cluster",
        &hello(ClusterId(0xBEEF), "x"),
        Via::Uni { finish: false },
        Some(ErrorKind::WrongCluster),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_must_be_hello() {
    let msgs = Frame::Messages(vec![heartbeat(&"x".into(), &"b".into(), 1, 0)]);
    hostile(
        "no hello",
        &framed(&encode_frame(CLUSTER, &msgs)),
        Via::Uni { finish: false },
        Some(ErrorKind::UnexpectedFrame),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_must_match_the_certificate() {
    // X's certificate names "x"; it claims to be "a".
    hostile(
        "hello as a with x's certificate",
        &hello(CLUSTER, "a"),
        Via::Uni { finish: false },
        Some(ErrorKind::IdentityMismatch),
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
        Via::Uni { finish: false },
        Some(ErrorKind::SpoofedSender),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_offer_on_a_one_way_stream_is_refused() {
    use raftkit::testing::transport::snapshot_offer;
    let mut bytes = hello(CLUSTER, "x");
    let offer = Frame::SnapshotOffer(snapshot_offer(&"x".into(), &"b".into(), 10));
    bytes.extend(framed(&encode_frame(CLUSTER, &offer)));
    hostile(
        "snapshot on a uni stream",
        &bytes,
        Via::Uni { finish: false },
        Some(ErrorKind::UnexpectedFrame),
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
        Via::Bi,
        Some(ErrorKind::SnapshotStream),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_udp_datagrams_are_ignored() {
    let mut pair = Pair::new().await;
    let mut rng = ChaCha8Rng::seed_from_u64(0xDA7A);
    let socket = tokio::net::UdpSocket::bind(common::any())
        .await
        .expect("udp socket");
    for _ in 0..200 {
        let len = rng.random_range(1..1500);
        let datagram: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        socket
            .send_to(&datagram, pair.b.socket_addr())
            .await
            .expect("send a datagram");
    }
    pair.assert_a_reaches_b("after 200 random datagrams").await;
    pair.a.shutdown().await;
    pair.b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_message_stream_replaces_the_older_one() {
    let mut pair = Pair::new().await;
    let (x, b) = (NodeId::new("x"), NodeId::new("b"));
    let mut streams = Vec::new();
    for seq in [100, 101] {
        // Each on a connection of its own, as after a reconnect.
        let (endpoint, conn) = pair.raw("x").await;
        let mut send = conn.open_uni().await.expect("open a uni stream");
        let mut bytes = hello(CLUSTER, "x");
        let msgs = Frame::Messages(vec![heartbeat(&x, &b, seq, 0)]);
        bytes.extend(framed(&encode_frame(CLUSTER, &msgs)));
        send.write_all(&bytes).await.expect("write");
        match timeout(Duration::from_secs(5), pair.b_inbound.recv()).await {
            Ok(Some(Inbound::Message(m))) => assert_eq!(seq_of(&m), seq),
            other => panic!("message {seq} did not arrive: {other:?}"),
        }
        streams.push((endpoint, conn, send));
    }
    let (_, _, old) = &mut streams[0];
    assert!(
        timeout(Duration::from_secs(5), old.stopped()).await.is_ok(),
        "the older message stream from x was not stopped within 5 s"
    );
}
