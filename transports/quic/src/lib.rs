//! A QUIC [`Transport`](raftkit::Transport) for raftkit: quinn, with mutual
//! TLS through rustls and its `ring` provider.
//!
//! What it is: the same frames as `raftkit-tcp` — every [`raftkit::wire`]
//! frame behind a 4-byte length, `Hello { from }` first on every stream —
//! carried on QUIC streams. What it is not: a request/response RPC layer;
//! like every raftkit transport it moves one-way messages and snapshot
//! streams.
//!
//! ```text
//!  A.send(B, msgs) ─▶ A's queue for B (bounded) ─▶ link task ─▶ A's connection to B
//!                                                   uni stream, priority 1, long-lived:
//!                                                   Hello, Messages[..], Messages[..], ...
//!  A.send_snapshot(B, ..) ─▶ same connection, a bi stream of its own, priority 0:
//!                            Hello, SnapshotOffer, SnapshotChunk*, FIN ◀── SnapshotReceived
//!  B ─▶ A uses B's own connection to A (each side dials the other).
//! ```
//!
//! * **Ordered per peer**: one long-lived unidirectional stream per (peer,
//!   connection) carries the messages; QUIC delivers a stream in order. A
//!   new stream (after a reconnect) takes over from the old one at the
//!   receiver, which stops the old one first, so nothing is reordered.
//! * **Snapshots never block messages**: each snapshot has its own stream
//!   on the same connection. QUIC streams do not share a byte order (no
//!   head-of-line blocking between them), the message stream has the
//!   higher send priority, and a snapshot stream can only fill its own
//!   stream receive window, never the whole connection's.
//! * **Pipelined, batched, bounded**: as in TCP: `send` never waits; a full
//!   queue answers `Backpressure`; while a peer cannot be reached `send`
//!   answers `Unreachable` and the link reconnects with exponential backoff
//!   and seeded jitter, for as long as sends keep coming.
//! * **Hostile input closes only that peer's connection**: garbage, a
//!   truncated frame, an oversized length, a wrong version or cluster, a
//!   missing `Hello`, a sender other than the `Hello`, a certificate that
//!   does not name the `Hello`'s id: a `tracing` warning says why,
//!   `raft_transport_errors_total{kind}` counts it, and the connection is
//!   closed with an application error; other peers keep working. UDP
//!   datagrams that are not QUIC never get past quinn.
//! * **Mutual TLS, always**: TLS 1.3 (QUIC requires it), certificates from
//!   PEM files ([`TlsFiles`]); every server's certificate is signed by the
//!   cluster's CA and names its server id as a DNS subject alternative
//!   name. The dialler checks that the listener's certificate names the
//!   peer it meant to reach; the listener requires a client certificate
//!   and checks that it names the id each stream's `Hello` claims.
//!   [`QuicConfig::insecure_dev`] replaces all that by self-signed
//!   certificates for a development machine, with a loud warning.
//!   0-RTT is off: early data could be replayed, and a LAN handshake costs
//!   under a millisecond.
//!
//! # Flow and congestion control on a LAN
//!
//! quinn's defaults are tuned for the Internet; the defaults here are for
//! servers on one LAN (all in [`QuicConfig`]):
//!
//! | setting | here | quinn | why |
//! |---|---|---|---|
//! | stream receive window | 4 MiB | 1.25 MB | 10 Gbit/s × 1 ms RTT is 1.25 MB in flight; 3× headroom keeps a stream from stalling on window updates |
//! | connection receive window | 16 MiB | unbounded | bounds what one peer can make us buffer; ≥ 4 streams' windows, so a slow snapshot reader never starves the message stream |
//! | send window | 16 MiB | 10 MB | matches the peer's receive window |
//! | keep-alive | 1 s | off | costs nothing on a LAN, keeps the idle timer and any middlebox happy |
//! | idle timeout | 10 s | 30 s | a vanished peer is declared dead after ten missed keep-alives (a restarted one at once, by stateless reset or CONNECTION_CLOSE) |
//! | initial RTT | 10 ms | 333 ms | a lost handshake packet is resent after tens of ms, not a second |
//! | MTU discovery bound | 1452 | 1452 | raise [`QuicConfig::mtu_upper_bound`] to 8952 on jumbo-frame LANs: fewer packets, less CPU |
//! | streams per connection | 8 uni, 8 bi | 100 each | one message stream and a few snapshots is all a peer needs |
//! | datagrams | off | on | Raft needs reliable delivery only |
//!
//! Congestion control stays quinn's CUBIC: on a LAN without loss it leaves
//! slow start within a few round trips (microseconds to milliseconds) and
//! then reacts to real congestion, which a cluster sharing a switch can
//! meet; BBR in quinn is still experimental. What makes CUBIC back off on a
//! LAN is loss at the receiving socket, not the wire: hence 4 MiB UDP
//! buffers ([`QuicConfig::udp_buffer_bytes`]; raise `net.core.rmem_max`
//! where it is lower). Asking for fewer ACKs (quinn's ACK-frequency
//! extension) was tried and did not help measurably.
//!
//! # Performance
//!
//! QUIC runs in user space: every ~1.4 KB packet is built, encrypted,
//! sent, received, decrypted and acknowledged by quinn, so it costs more
//! CPU per byte than kernel TCP, and its message path has more task hops.
//! `cargo run --release -p raftkit-quic --example quic_bench` (and the
//! `tcp_bench`, `inmem_bench` examples of the other transports, all through
//! `raftkit::testing::transport::bench`, all with the `raftkit` binary's
//! allocator, mimalloc) measures loopback; a 64 KiB batch is one
//! AppendEntries of 16 × 4 KiB entries per `send`. Each figure is a median
//! of 5 runs within one invocation; the ranges span five alternating
//! invocations on the shared 2-core machine (load average about 1.4):
//!
//! | transport | small msgs/s | 64 KiB batches, MB/s | ping-pong RTT p50 |
//! |---|---:|---:|---:|
//! | raw TCP, no framing, 1 MiB writes (re-measured alone, 5 invocations) | – | 5346–6722 | 69–72 µs |
//! | TCP (plain) | 1.19–1.32 M | 2312–2651 | 65–74 µs |
//! | TCP (mTLS) | 1.18–1.27 M | 1736–1957 | 79–88 µs |
//! | QUIC (mTLS) | 0.97–1.09 M | 868–918 | 80–90 µs |
//!
//! The raw row is the floor: with 64 KiB writes it had measured 1349–1551
//! MB/s, below the transports, which hand several queued frames to one
//! vectored write; `tcp_bench` now writes 1 MiB at a time.
//!
//! The TCP (plain) row predates plain TCP's write on the caller's thread
//! (`raftkit_tcp` crate docs). Against the same code with that write
//! switched off, 3 alternating invocations: small messages 1.03–1.15 M/s →
//! 1.33–1.47 M/s, 64 KiB batches within noise, ping-pong RTT p50
//! 77–82 → 89–93 µs.
//!
//! Invocation by invocation, QUIC moved 64 KiB batches at 47–53% of TCP
//! with mutual TLS (median 47%). Built with glibc's allocator instead, all
//! are slower and TCP more so: QUIC 785–852 MB/s, TCP with mTLS
//! 1227–1527, a median ratio of 61%. Either way it is short of the 70%
//! aimed for.
//!
//! During the batch phase QUIC is CPU-bound: both cores are busy (190%)
//! for about 950 MB/s, 127 µs of CPU per 64 KiB batch against 56 µs for
//! TCP with mutual TLS, which moves twice the bytes on 1.1 cores. A
//! profile of that phase (`perf record --call-graph dwarf`) puts most of
//! the CPU in quinn: packet assembly (a copy of every byte into its
//! packet), AES-GCM and header protection per packet, ACK processing, UDP
//! send and receive, and the hand-offs between quinn's endpoint and
//! connection tasks and ours. quinn's statistics show no loss, no
//! congestion event and a congestion window far above what is in flight:
//! the limit is CPU per packet, not flow or congestion control. quinn's
//! knobs did not buy throughput on loopback: MTU bounds of 8952, 16 000
//! and 65 000 were no faster (MTU discovery raises the packet size, but
//! GSO already sends 8–10 packets per `sendmsg`), send fairness off and a
//! 1 MB initial congestion window were within noise, asking for fewer ACKs
//! (the ACK-frequency extension, thresholds 1 to 31) was within noise or
//! slower, AES-128-GCM first changed nothing, and turning segmentation
//! offload (GSO) off cost about 40%. Payloads of 16 KiB or more go to
//! quinn as their own buffers, uncopied
//! ([`raftkit::wire::SHARED_PAYLOAD_MIN`]); sharing the 4 KiB entries of
//! this benchmark made it about 10% slower, because quinn finds the bytes
//! of each packet by walking its unacknowledged buffers.
//!
//! ```
//! use raftkit::testing::transport::heartbeat;
//! use raftkit::{Inbound, Peer, Transport};
//! use raftkit_quic::{ClusterCa, QuicConfig, QuicTransport};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("raftkit-quic-crate-doc-{}", std::process::id()));
//! let ca = ClusterCa::generate("example").unwrap();
//! let config = |id| QuicConfig { tls: Some(ca.issue(&dir, id).unwrap()), ..QuicConfig::default() };
//! let any = "127.0.0.1:0".parse().unwrap();
//! let a = QuicTransport::bind("a".into(), any, config("a")).await.unwrap();
//! let b = QuicTransport::bind("b".into(), any, config("b")).await.unwrap();
//! let mut inbound = b.take_inbound().unwrap();
//!
//! let to_b = Peer { id: "b".into(), address: b.local_addr() };
//! a.send(&to_b, vec![heartbeat(&"a".into(), &"b".into(), 1, 0)]).unwrap();
//! match inbound.recv().await {
//!     Some(Inbound::Message(m)) => assert_eq!(m.from.as_str(), "a"),
//!     other => panic!("expected a message, got {other:?}"),
//! }
//! a.shutdown().await;
//! b.shutdown().await;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```

mod certs;
mod config;
mod inbound;
mod outbound;
mod snapshot;
mod tls;
mod transport;

pub use certs::{CertError, ClusterCa};
pub use config::{QuicConfig, QuicConfigError, TlsFiles};
pub use raftkit::transport::errors::{
    ErrorKind, BYTES_SENT_METRIC, ERRORS_METRIC, MESSAGES_SENT_METRIC,
};
pub use tls::TlsError;
pub use transport::{BindError, QuicTransport};
