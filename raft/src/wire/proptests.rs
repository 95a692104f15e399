//! Property tests over the frame decoder and the stream codec: arbitrary
//! bytes, mutated and truncated valid frames, and random length prefixes
//! each give `Ok` or a clear `Err`, never a panic; valid frames round-trip.
//! Case counts are bounded so the whole module runs in a few seconds.

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::stream::{CodecError, FrameCodec, PrefixedFrames};
use super::{
    contains, decode_frame, decode_frame_shared, encode_frame, encode_frame_chunks, message_len,
    messages_frame_len, ClusterId, Frame, WireError, HEADER_LEN, MAGIC, SHARED_PAYLOAD_MIN,
    WIRE_VERSION,
};
use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    Message, MessageBody, RequestVoteRequest, RequestVoteResponse,
};
use crate::storage::{SnapshotId, SnapshotMeta};
use crate::transport::SnapshotOffer;
use crate::types::{
    Configuration, Entry, EntryPayload, LogIndex, NodeId, Server, ServerAddress, Suffrage, Term,
};

const CLUSTER: ClusterId = ClusterId(0xC1A5);

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files in the source tree; a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn id() -> impl Strategy<Value = NodeId> {
    "[a-z0-9]{0,8}".prop_map(NodeId::new)
}

fn address() -> impl Strategy<Value = ServerAddress> {
    "[a-z0-9.:]{0,16}".prop_map(ServerAddress::new)
}

fn term() -> impl Strategy<Value = Term> {
    any::<u64>().prop_map(Term)
}

fn index() -> impl Strategy<Value = LogIndex> {
    any::<u64>().prop_map(LogIndex)
}

fn configuration() -> impl Strategy<Value = Configuration> {
    vec(
        (id(), address(), any::<bool>()).prop_map(|(id, address, voter)| Server {
            id,
            address,
            suffrage: if voter {
                Suffrage::Voter
            } else {
                Suffrage::Nonvoter
            },
        }),
        0..4,
    )
    .prop_map(Configuration::new)
}

/// Payload bytes: mostly short ones, some right around the length from
/// which chunked encoding shares them.
fn data(short: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..short),
        1 => (any::<u8>(), SHARED_PAYLOAD_MIN - 2..SHARED_PAYLOAD_MIN + 2)
            .prop_map(|(byte, len)| vec![byte; len]),
    ]
    .prop_map(Bytes::from)
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        data(64).prop_map(EntryPayload::Command),
        configuration().prop_map(EntryPayload::Configuration),
    ];
    (index(), term(), payload).prop_map(|(index, term, payload)| Entry {
        index,
        term,
        payload,
    })
}

fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (
        "[a-z0-9-]{0,12}",
        index(),
        term(),
        configuration(),
        index(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(id, index, term, configuration, configuration_index, size, checksum)| SnapshotMeta {
                id: SnapshotId(id),
                index,
                term,
                configuration,
                configuration_index,
                size,
                checksum,
            },
        )
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (index(), term(), vec(entry(), 0..4), index(), any::<u64>()).prop_map(
            |(prev_log_index, prev_log_term, entries, leader_commit, round)| {
                MessageBody::AppendEntriesRequest(AppendEntriesRequest {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    round,
                })
            }
        ),
        (
            any::<bool>(),
            index(),
            proptest::option::of((index(), term())),
            any::<u64>()
        )
            .prop_map(|(success, index, hint, round)| {
                MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                    success,
                    index,
                    hint,
                    round,
                })
            }),
        (index(), term(), any::<bool>(), any::<bool>()).prop_map(
            |(last_log_index, last_log_term, pre_vote, leadership_transfer)| {
                MessageBody::RequestVoteRequest(RequestVoteRequest {
                    last_log_index,
                    last_log_term,
                    pre_vote,
                    leadership_transfer,
                })
            }
        ),
        (any::<bool>(), any::<bool>()).prop_map(|(granted, pre_vote)| {
            MessageBody::RequestVoteResponse(RequestVoteResponse { granted, pre_vote })
        }),
        snapshot_meta()
            .prop_map(|meta| MessageBody::InstallSnapshotRequest(InstallSnapshotRequest { meta })),
        (any::<bool>(), index()).prop_map(|(success, index)| {
            MessageBody::InstallSnapshotResponse(InstallSnapshotResponse { success, index })
        }),
        Just(MessageBody::TimeoutNow),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (id(), address(), id(), term(), body()).prop_map(|(from, from_addr, to, term, body)| Message {
        from,
        from_addr,
        to,
        term,
        body,
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        id().prop_map(|from| Frame::Hello { from }),
        vec(message(), 0..6).prop_map(Frame::Messages),
        (id(), id(), term(), snapshot_meta()).prop_map(|(from, to, term, meta)| {
            Frame::SnapshotOffer(SnapshotOffer {
                from,
                to,
                term,
                meta,
            })
        }),
        (any::<u64>(), data(256), any::<bool>())
            .prop_map(|(offset, data, done)| { Frame::SnapshotChunk { offset, data, done } }),
        Just(Frame::SnapshotReceived),
    ]
}

/// How to damage a valid frame.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { to: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        (any::<usize>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Flip { at, xor } if len > 0 => bytes[at % len] ^= xor,
        Mutation::Truncate { to } => bytes.truncate(to % (len + 1)),
        Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), *byte),
        Mutation::Remove { at } if len > 0 => {
            bytes.remove(at % len);
        }
        Mutation::Overwrite { at, bytes: new } if len > 0 => {
            for (i, b) in new.iter().enumerate() {
                let j = (at + i) % len;
                bytes[j] = *b;
            }
        }
        _ => {}
    }
}

/// The command payloads and snapshot chunk bytes of `frame`.
fn payloads(frame: &Frame) -> Vec<Bytes> {
    match frame {
        Frame::Messages(msgs) => msgs
            .iter()
            .flat_map(|m| match &m.body {
                MessageBody::AppendEntriesRequest(r) => r
                    .entries
                    .iter()
                    .filter_map(|e| match &e.payload {
                        EntryPayload::Command(data) => Some(data.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect(),
        Frame::SnapshotChunk { data, .. } => vec![data.clone()],
        _ => Vec::new(),
    }
}

/// Every decoding error has a message that says something.
fn assert_clear(e: &WireError) {
    let text = e.to_string();
    assert!(text.len() > 10, "unhelpful error text {text:?} for {e:?}");
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn valid_frames_round_trip(frame in frame()) {
        let bytes = encode_frame(CLUSTER, &frame);
        prop_assert_eq!(decode_frame(CLUSTER, &bytes), Ok(frame.clone()));
        if let Frame::Messages(msgs) = &frame {
            let body: usize = msgs.iter().map(message_len).sum();
            prop_assert_eq!(bytes.len(), messages_frame_len(msgs.len(), body));
        }
        // Another cluster's frame is refused, by name.
        let other = ClusterId(CLUSTER.0 ^ 1);
        let refused = matches!(
            decode_frame(other, &bytes),
            Err(WireError::ClusterMismatch { .. })
        );
        prop_assert!(refused, "a frame of another cluster was not refused");
    }

    #[test]
    fn shared_decoding_slices_payloads_out_of_the_frame(frame in frame()) {
        let bytes = encode_frame(CLUSTER, &frame);
        let shared = decode_frame_shared(CLUSTER, &bytes);
        prop_assert_eq!(&shared, &Ok(frame.clone()));
        let Ok(shared) = shared else { unreachable!() };
        for data in payloads(&shared).iter().filter(|d| !d.is_empty()) {
            prop_assert!(contains(&bytes, data), "a payload of {} bytes was copied", data.len());
        }
        // Plain decoding copies, and so does decoding after a shared decode
        // ended: the frame is not left behind for the next caller.
        let copied = decode_frame(CLUSTER, &bytes).unwrap();
        for data in payloads(&copied).iter().filter(|d| !d.is_empty()) {
            prop_assert!(!contains(&bytes, data), "a plain decode shared a payload");
        }
    }

    #[test]
    fn chunked_encoding_is_the_frame_with_large_payloads_shared(frame in frame()) {
        let whole = encode_frame(CLUSTER, &frame);
        let chunked = encode_frame_chunks(CLUSTER, &frame, 32);
        prop_assert_eq!(chunked.len, whole.len());
        prop_assert_eq!(chunked.chunks.iter().map(Bytes::len).sum::<usize>(), chunked.len);
        prop_assert!(chunked.chunks.iter().all(|c| !c.is_empty()), "an empty chunk");
        prop_assert_eq!(chunked.to_bytes(), whole);
        for data in payloads(&frame) {
            let shared = chunked
                .chunks
                .iter()
                .any(|c| c.as_ptr() == data.as_ptr() && c.len() == data.len());
            prop_assert_eq!(
                shared,
                data.len() >= SHARED_PAYLOAD_MIN,
                "a payload of {} bytes shared: {}", data.len(), shared
            );
        }
        // Sharing ends with the call: a plain encode afterwards copies.
        let again = encode_frame(CLUSTER, &frame);
        for data in payloads(&frame).iter().filter(|d| !d.is_empty()) {
            prop_assert!(!contains(&again, data) || again.as_ptr() == data.as_ptr());
        }
    }

    #[test]
    fn prefixed_frames_are_the_codecs_bytes_however_the_writes_split(
        frames in vec(frame(), 1..4),
        steps in vec(1..300usize, 1..32),
    ) {
        let mut codec = FrameCodec::new(1 << 20);
        let mut expected = BytesMut::new();
        for frame in &frames {
            codec.encode(encode_frame(CLUSTER, frame), &mut expected).unwrap();
        }
        let chunked = frames.iter().map(|f| encode_frame_chunks(CLUSTER, f, 16)).collect();
        let mut buf = PrefixedFrames::new(chunked, 1 << 20).unwrap();
        prop_assert_eq!(buf.remaining(), expected.len());
        // Each "write" takes part of what the vectored view offers, as a
        // socket taking a short write does.
        let mut written = Vec::new();
        let mut steps = steps.into_iter().cycle();
        while buf.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 3];
            let n = buf.chunks_vectored(&mut slices);
            let offered: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            prop_assert!(!offered.is_empty(), "nothing offered with {} left", buf.remaining());
            prop_assert_eq!(&offered[..buf.chunk().len().min(offered.len())], buf.chunk());
            let take = steps.next().unwrap().min(offered.len());
            written.extend_from_slice(&offered[..take]);
            buf.advance(take);
        }
        prop_assert_eq!(written, expected.to_vec());
    }

    #[test]
    fn shared_decoding_of_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        if let Err(e) = decode_frame_shared(CLUSTER, &Bytes::from(bytes)) {
            assert_clear(&e);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in vec(any::<u8>(), 0..512)) {
        if let Err(e) = decode_frame(CLUSTER, &bytes) {
            assert_clear(&e);
        }
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        kind in 0..=6u8,
        body in vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.push(WIRE_VERSION);
        bytes.push(kind);
        bytes.extend_from_slice(&CLUSTER.0.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&body);
        if let Err(e) = decode_frame(CLUSTER, &bytes) {
            assert_clear(&e);
        }
    }

    #[test]
    fn mutated_frames_never_panic_and_truncated_ones_fail(
        frame in frame(),
        mutations in vec(mutation(), 1..4),
    ) {
        let valid = encode_frame(CLUSTER, &frame).to_vec();
        let mut bytes = valid.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        match decode_frame(CLUSTER, &bytes) {
            Err(e) => assert_clear(&e),
            Ok(_) => {
                // A strict prefix of a valid frame never decodes: the body
                // codec is self-delimiting and trailing bytes are refused.
                let is_prefix = bytes.len() < valid.len() && valid.starts_with(&bytes);
                prop_assert!(!is_prefix, "a truncated frame decoded");
            }
        }
    }

    #[test]
    fn stream_codec_round_trips_frames_split_anywhere(
        frames in vec(frame(), 1..6),
        cuts in vec(1..64usize, 1..32),
    ) {
        let max = 1 << 16;
        let mut codec = FrameCodec::new(max);
        let mut wire = BytesMut::new();
        let encoded: Vec<Bytes> = frames.iter().map(|f| encode_frame(CLUSTER, f)).collect();
        for e in &encoded {
            codec.encode(e.clone(), &mut wire).expect("a frame under the maximum");
        }
        // Feed the byte stream in arbitrary pieces.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap_or(&1)).min(rest.len());
            buf.put_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = codec.decode(&mut buf).expect("valid stream") {
                decoded.push(decode_frame(CLUSTER, &f).expect("valid frame"));
            }
        }
        prop_assert!(matches!(codec.decode_eof(&mut buf), Ok(None)));
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn random_length_prefixes_are_refused_or_awaited(
        len in prop_oneof![any::<u32>(), 0..300u32],
        body in prop_oneof![Just(Vec::new()), vec(any::<u8>(), 0..300)],
    ) {
        let max = 256usize;
        let mut codec = FrameCodec::new(max);
        let mut buf = BytesMut::new();
        buf.put_u32(len);
        buf.put_slice(&body);
        let len = len as usize;
        match codec.decode(&mut buf) {
            Err(CodecError::TooLarge { max: m }) => {
                prop_assert!(len > max, "a {len}-byte prefix refused under the maximum");
                prop_assert_eq!(m, max);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(Some(frame)) => {
                prop_assert!(len <= max && len <= body.len());
                prop_assert_eq!(&frame[..], &body[..len]);
                // Whatever the frame holds, decoding it is Ok or a clear Err.
                if let Err(e) = decode_frame(CLUSTER, &frame) {
                    assert_clear(&e);
                }
            }
            Ok(None) => {
                prop_assert!(len <= max && len > body.len());
                let truncated = matches!(
                    codec.decode_eof(&mut buf),
                    Err(CodecError::Truncated { .. })
                );
                prop_assert!(truncated, "end of stream inside a frame not reported as truncated");
            }
        }
    }

    #[test]
    fn arbitrary_streams_never_panic_the_codec(bytes in vec(any::<u8>(), 0..1024)) {
        let mut codec = FrameCodec::new(128);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Err(e) = decode_frame(CLUSTER, &frame) {
                        assert_clear(&e);
                    }
                }
                Ok(None) => {
                    let _ = codec.decode_eof(&mut buf);
                    break;
                }
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    break;
                }
            }
        }
    }
}
