//! The wire codec on AppendEntries frames: one `Messages` frame holding one
//! AppendEntries of `1x256B` (1 command), `64x256B` (64 commands),
//! `16x4KiB` (16 commands) or `4x64KiB` (4 commands), each command a
//! 16-byte key + a value of 256 bytes, 4 KiB or 64 KiB.
//!
//! - `codec/encode/{...}`: into one buffer of the exact length (from
//!   `message_len`) with `encode_frame_with_capacity`.
//! - `codec/encode_chunks/{...}`: `encode_frame_chunks`, as the stream
//!   transports encode (`raftkit::transport::link::encode_messages`):
//!   payloads of at least `SHARED_PAYLOAD_MIN` bytes (here the 64 KiB
//!   ones) are shared, not copied.
//! - `codec/decode/{...}`: `decode_frame` of that frame
//!   (every command payload copied out of it).
//! - `codec/decode_shared/{...}`: `decode_frame_shared`,
//!   which slices the payloads out of the frame, as the transports decode.
//! - `codec/framed_decode`: a `BytesMut` holding 256 length-prefixed
//!   `1x256B` frames, split by `FrameCodec` and each decoded with
//!   `decode_frame_shared`, as a connection's receiving side does. Small frames,
//!   so that the per-frame cost shows; compare with `codec/decode/1x256B`.
//!
//! Throughput in frame bytes (the length prefixes included for
//! `framed_decode`). Each benchmark checks once, outside the timed loop,
//! that decoding gives back the frame encoded.
//!
//! `cargo bench -p raftkit --bench codec` (add `-- --quick` for a short run)

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use raftkit::message::AppendEntriesRequest;
use raftkit::wire::stream::FrameCodec;
use raftkit::wire::{
    decode_frame, decode_frame_shared, encode_frame_chunks, encode_frame_with_capacity,
    message_len, messages_frame_len, shared_payload_bytes, ClusterId, Frame,
};
use raftkit::{Entry, LogIndex, Message, MessageBody, NodeId, ServerAddress, Term};
use tokio_util::codec::{Decoder, Encoder};

const CLUSTER: ClusterId = ClusterId(0x5eed_c0de);
const KEY_BYTES: usize = 16;
/// Frames to decode in `codec/framed_decode`.
const STREAM_FRAMES: usize = 256;
const MAX_FRAME_BYTES: usize = 16 << 20;

/// The frame shapes: name, commands, value bytes.
const SHAPES: [(&str, usize, usize); 4] = [
    ("1x256B", 1, 256),
    ("64x256B", 64, 256),
    ("16x4KiB", 16, 4096),
    ("4x64KiB", 4, 64 * 1024),
];

/// A `Messages` frame holding one AppendEntries of `count` commands of
/// a 16-byte key and `value` bytes, at a leader's steady state.
fn append_frame(count: usize, value: usize) -> Frame {
    let prev = 100_000;
    let entries = (0..count as u64)
        .map(|i| {
            let mut cmd = Vec::with_capacity(KEY_BYTES + value);
            cmd.extend_from_slice(&7u64.to_be_bytes());
            cmd.extend_from_slice(&(prev + i).to_be_bytes());
            cmd.resize(KEY_BYTES + value, b'v');
            Entry::command(LogIndex(prev + 1 + i), Term(3), Bytes::from(cmd))
        })
        .collect();
    Frame::Messages(vec![Message {
        from: NodeId::new("n1"),
        from_addr: ServerAddress::new("127.0.0.1:7001"),
        to: NodeId::new("n2"),
        term: Term(3),
        body: MessageBody::AppendEntriesRequest(AppendEntriesRequest {
            prev_log_index: LogIndex(prev),
            prev_log_term: Term(3),
            entries,
            leader_commit: LogIndex(prev - 1),
            round: 42,
        }),
    }])
}

/// Encodes `frame` as the stream transports do: exact length first.
fn encode(frame: &Frame) -> Bytes {
    let Frame::Messages(msgs) = frame else {
        unreachable!("only Messages frames are benchmarked")
    };
    let body = msgs.iter().map(message_len).sum();
    encode_frame_with_capacity(CLUSTER, frame, messages_frame_len(msgs.len(), body))
}

fn encode_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for (name, count, value) in SHAPES {
        let frame = append_frame(count, value);
        let bytes = encode(&frame);
        assert_eq!(
            decode_frame(CLUSTER, &bytes).expect("the encoded frame decodes"),
            frame,
            "{name}: decoding does not give back the frame encoded"
        );
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &frame, |b, frame| {
            b.iter(|| encode(black_box(frame)));
        });
        let Frame::Messages(msgs) = &frame else {
            unreachable!("only Messages frames are benchmarked")
        };
        let copied = bytes.len() - msgs.iter().map(shared_payload_bytes).sum::<usize>();
        assert_eq!(
            encode_frame_chunks(CLUSTER, &frame, copied).to_bytes(),
            bytes,
            "{name}: the chunks are not the frame"
        );
        group.bench_with_input(
            BenchmarkId::new("encode_chunks", name),
            &frame,
            |b, frame| {
                b.iter(|| encode_frame_chunks(CLUSTER, black_box(frame), copied));
            },
        );
        group.bench_with_input(BenchmarkId::new("decode", name), &bytes, |b, bytes| {
            b.iter(|| decode_frame(CLUSTER, black_box(bytes)).expect("decodes"));
        });
        group.bench_with_input(
            BenchmarkId::new("decode_shared", name),
            &bytes,
            |b, bytes| {
                b.iter(|| decode_frame_shared(CLUSTER, black_box(bytes)).expect("decodes"));
            },
        );
    }
    group.finish();
}

/// Splits every frame off `stream`, decodes it and hands it to `each`.
fn decode_stream(codec: &mut FrameCodec, stream: &mut BytesMut, mut each: impl FnMut(Frame)) {
    while let Some(bytes) = codec.decode(stream).expect("well-formed stream") {
        each(decode_frame_shared(CLUSTER, &bytes.freeze()).expect("well-formed frame"));
    }
}

fn framed_decode(c: &mut Criterion) {
    let frame = append_frame(1, 256);
    let bytes = encode(&frame);
    let mut stream = BytesMut::new();
    let mut codec = FrameCodec::new(MAX_FRAME_BYTES);
    for _ in 0..STREAM_FRAMES {
        codec
            .encode(bytes.clone(), &mut stream)
            .expect("under the maximum");
    }
    let stream = stream.freeze();
    let mut decoded = 0;
    decode_stream(&mut codec, &mut BytesMut::from(&stream[..]), |f| {
        assert_eq!(
            f, frame,
            "frame {decoded} of the stream decodes differently"
        );
        decoded += 1;
    });
    assert_eq!(decoded, STREAM_FRAMES, "frames decoded from the stream");

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("framed_decode", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut frames = 0;
                decode_stream(&mut codec, &mut buf, |f| {
                    black_box(f);
                    frames += 1;
                });
                assert_eq!(frames, STREAM_FRAMES);
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, encode_decode, framed_decode);
criterion_main!(benches);
