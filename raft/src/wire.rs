//! The one codec for everything raftkit puts on a wire or a disk.
//!
//! A transport moves *frames*: it length-delimits them on its stream and
//! hands the bytes to [`decode_frame`]. A frame is an 16-byte header
//! followed by a postcard body:
//!
//! ```text
//! 0      2        3       4               12              16
//! +------+--------+-------+---------------+---------------+----------------
//! | "RK" | version| kind  | cluster id    | reserved (0)  | postcard body
//! +------+--------+-------+---------------+---------------+----------------
//! ```
//!
//! Decoding never panics: every malformed input is a [`WireError`] that names
//! what was wrong. Storage backends use [`encode_entry`] / [`decode_entry`]
//! for log records.

pub mod stream;

#[cfg(test)]
mod proptests;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::message::{Message, MessageBody};
use crate::transport::{SnapshotChunk, SnapshotOffer};
use crate::types::{Entry, EntryPayload, NodeId};

/// The frame format version this build speaks.
pub const WIRE_VERSION: u8 = 1;

const MAGIC: [u8; 2] = *b"RK";
const HEADER_LEN: usize = 16;

/// Identifies a cluster, so that two clusters sharing a network never mix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame on a connection: who is calling.
    Hello {
        /// The caller's server id.
        from: NodeId,
    },
    /// Raft messages, in order.
    Messages(Vec<Message>),
    /// The start of a snapshot stream.
    SnapshotOffer(SnapshotOffer),
    /// A piece of a snapshot stream.
    SnapshotChunk {
        /// Where `data` starts.
        offset: u64,
        /// The bytes.
        #[serde(serialize_with = "share_payload", deserialize_with = "payload")]
        data: Bytes,
        /// Whether this is the last piece.
        done: bool,
    },
    /// The receiver's acknowledgement of a whole snapshot stream.
    SnapshotReceived,
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => 1,
            Frame::Messages(_) => 2,
            Frame::SnapshotOffer(_) => 3,
            Frame::SnapshotChunk { .. } => 4,
            Frame::SnapshotReceived => 5,
        }
    }

    /// The frame's variant name, for log lines.
    ///
    /// ```
    /// assert_eq!(raftkit::wire::Frame::SnapshotReceived.name(), "SnapshotReceived");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Messages(_) => "Messages",
            Frame::SnapshotOffer(_) => "SnapshotOffer",
            Frame::SnapshotChunk { .. } => "SnapshotChunk",
            Frame::SnapshotReceived => "SnapshotReceived",
        }
    }
}

/// A frame or record that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its header or than its body claims.
    #[error("truncated frame: {len} bytes, need at least {need}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Does not start with the magic bytes.
    #[error("not a raftkit frame (magic {0:02x?})")]
    BadMagic([u8; 2]),
    /// A format version this build does not speak.
    #[error("unsupported wire version {got} (this build speaks {want})")]
    Version {
        /// The frame's version.
        got: u8,
        /// Ours.
        want: u8,
    },
    /// A frame from another cluster.
    #[error("frame from cluster {got}, this node is in cluster {want}")]
    ClusterMismatch {
        /// The frame's cluster.
        got: ClusterId,
        /// Ours.
        want: ClusterId,
    },
    /// The header's kind does not match the body.
    #[error("frame kind {0} does not match its body")]
    KindMismatch(u8),
    /// The body does not decode.
    #[error("undecodable body: {0}")]
    Body(String),
    /// Larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Encodes `frame` for `cluster`.
///
/// ```
/// use raftkit::wire::{decode_frame, encode_frame, ClusterId, Frame};
/// let bytes = encode_frame(ClusterId(7), &Frame::SnapshotReceived);
/// assert_eq!(decode_frame(ClusterId(7), &bytes).unwrap(), Frame::SnapshotReceived);
/// assert!(decode_frame(ClusterId(8), &bytes).is_err());
/// ```
pub fn encode_frame(cluster: ClusterId, frame: &Frame) -> Bytes {
    encode_frame_with_capacity(cluster, frame, HEADER_LEN + 64)
}

/// [`encode_frame`] into a buffer of `capacity` bytes to start with: with
/// the frame's exact length (from [`messages_frame_len`], say) the body is
/// written without growing (and copying) the buffer.
pub fn encode_frame_with_capacity(cluster: ClusterId, frame: &Frame, capacity: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(capacity.max(HEADER_LEN));
    put_header(&mut buf, cluster, frame);
    let mut writer = buf.writer();
    // Writing into a growable buffer cannot fail for these types.
    if let Err(e) = postcard::to_io(frame, &mut writer) {
        unreachable!("postcard into memory failed: {e}");
    }
    writer.into_inner().freeze()
}

/// A frame as a list of buffers whose concatenation is
/// [`encode_frame`]'s output: entry payloads and snapshot chunks of at
/// least [`SHARED_PAYLOAD_MIN`] bytes are their own buffers, shared with
/// the message rather than copied into the frame; everything between them
/// is copied into the buffers in between. A transport hands the buffers to
/// the socket as they are (vectored writes, or quinn's chunk writes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameChunks {
    /// The buffers, in order.
    pub chunks: Vec<Bytes>,
    /// Their total length: the frame's length.
    pub len: usize,
}

impl FrameChunks {
    /// The frame as one buffer (a copy unless it is one already).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len);
                for chunk in many {
                    out.put_slice(chunk);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for FrameChunks {
    fn from(frame: Bytes) -> FrameChunks {
        FrameChunks {
            len: frame.len(),
            chunks: vec![frame],
        }
    }
}

/// Payloads at least this long travel as their own buffer in
/// [`encode_frame_chunks`]; shorter ones are cheaper to copy than to
/// carry as one more buffer. Measured on loopback (`tcp_bench`,
/// `quic_bench`): 4 KiB entries shared one by one made plain TCP about 8%
/// slower (a `writev` of many small pieces) and QUIC about 10% slower
/// (quinn walks its unacknowledged buffers for every packet), while
/// 64 KiB entries shared moved 1.5× the bytes over plain TCP and 8% more
/// over QUIC than copied.
pub const SHARED_PAYLOAD_MIN: usize = 16 * 1024;

/// The payload bytes of `msg` that [`encode_frame_chunks`] shares rather
/// than copies: a frame's length less these is what it copies.
pub fn shared_payload_bytes(msg: &Message) -> usize {
    match &msg.body {
        MessageBody::AppendEntriesRequest(r) => r
            .entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Command(data) if data.len() >= SHARED_PAYLOAD_MIN => data.len(),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// [`encode_frame_with_capacity`] without copying large payloads: see
/// [`FrameChunks`]. `capacity` is a hint for the copied parts.
///
/// ```
/// use bytes::Bytes;
/// use raftkit::wire::{encode_frame, encode_frame_chunks, ClusterId, Frame};
/// let data = Bytes::from(vec![7u8; 1 << 16]);
/// let frame = Frame::SnapshotChunk { offset: 0, data: data.clone(), done: true };
/// let chunks = encode_frame_chunks(ClusterId(1), &frame, 64);
/// assert_eq!(chunks.to_bytes(), encode_frame(ClusterId(1), &frame));
/// assert!(chunks.chunks.iter().any(|c| c.as_ptr() == data.as_ptr()), "shared, not copied");
/// ```
pub fn encode_frame_chunks(cluster: ClusterId, frame: &Frame, capacity: usize) -> FrameChunks {
    let mut out = ChunkedFlavor {
        current: BytesMut::with_capacity(capacity.max(HEADER_LEN)),
        done: FrameChunks::default(),
    };
    put_header(&mut out.current, cluster, frame);
    let _sharing = SharingPayloads::start();
    match postcard::serialize_with_flavor(frame, out) {
        Ok(chunks) => chunks,
        // Writing into growable buffers cannot fail for these types.
        Err(e) => unreachable!("postcard into memory failed: {e}"),
    }
}

/// A `SnapshotChunk` frame for `chunk`, its data shared rather than copied
/// (when at least [`SHARED_PAYLOAD_MIN`] long).
///
/// ```
/// use raftkit::wire::{decode_frame, encode_snapshot_chunk, ClusterId, Frame};
/// let data = bytes::Bytes::from(vec![3u8; 1 << 20]);
/// let chunk = raftkit::SnapshotChunk { offset: 7, data: data.clone(), done: false };
/// let frame = encode_snapshot_chunk(ClusterId(1), chunk);
/// assert!(frame.chunks.iter().any(|c| c.as_ptr() == data.as_ptr()), "shared, not copied");
/// let decoded = decode_frame(ClusterId(1), &frame.to_bytes()).unwrap();
/// assert_eq!(decoded, Frame::SnapshotChunk { offset: 7, data, done: false });
/// ```
pub fn encode_snapshot_chunk(cluster: ClusterId, chunk: SnapshotChunk) -> FrameChunks {
    let SnapshotChunk { offset, data, done } = chunk;
    // The header, the offset, the data's length and `done`.
    let copied = HEADER_LEN + 32;
    encode_frame_chunks(
        cluster,
        &Frame::SnapshotChunk { offset, data, done },
        copied,
    )
}

/// A postcard output that copies into `current` and, when postcard writes
/// the bytes of the payload [`share_payload`] just announced, closes
/// `current` and appends the payload's own buffer instead.
struct ChunkedFlavor {
    current: BytesMut,
    done: FrameChunks,
}

impl ChunkedFlavor {
    fn close_current(&mut self) {
        if !self.current.is_empty() {
            let chunk = self.current.split().freeze();
            self.done.len += chunk.len();
            self.done.chunks.push(chunk);
        }
    }
}

impl postcard::ser_flavors::Flavor for ChunkedFlavor {
    type Output = FrameChunks;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.current.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match take_announced(data) {
            Some(payload) => {
                self.close_current();
                self.done.len += payload.len();
                self.done.chunks.push(payload);
            }
            None => self.current.put_slice(data),
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<FrameChunks> {
        self.close_current();
        Ok(self.done)
    }
}

thread_local! {
    /// Whether [`encode_frame_chunks`] is encoding on this thread, and the
    /// payload [`share_payload`] announced last.
    static SHARING: std::cell::RefCell<Option<Option<Bytes>>> =
        const { std::cell::RefCell::new(None) };
}

/// Turns payload sharing on for this thread for as long as it lives.
struct SharingPayloads;

impl SharingPayloads {
    fn start() -> SharingPayloads {
        SHARING.with(|s| *s.borrow_mut() = Some(None));
        SharingPayloads
    }
}

impl Drop for SharingPayloads {
    fn drop(&mut self) {
        SHARING.with(|s| *s.borrow_mut() = None);
    }
}

/// The announced payload, if `data` is exactly its bytes (same memory,
/// same length); it is taken either way, so it is used at most once.
fn take_announced(data: &[u8]) -> Option<Bytes> {
    if data.len() < SHARED_PAYLOAD_MIN {
        return None;
    }
    SHARING.with(|s| {
        let mut s = s.borrow_mut();
        let announced = s.as_mut()?.take()?;
        let same = announced.as_ptr() == data.as_ptr() && announced.len() == data.len();
        same.then_some(announced)
    })
}

/// `#[serde(serialize_with)]` for payload `Bytes`: serializes them as
/// `Bytes` does, and while [`encode_frame_chunks`] runs on this thread,
/// first announces them so that its output can share them.
pub(crate) fn share_payload<S: serde::Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    if v.len() >= SHARED_PAYLOAD_MIN {
        SHARING.with(|sharing| {
            if let Some(announced) = sharing.borrow_mut().as_mut() {
                *announced = Some(v.clone());
            }
        });
    }
    s.serialize_bytes(v)
}

fn put_header(buf: &mut BytesMut, cluster: ClusterId, frame: &Frame) {
    buf.put_slice(&MAGIC);
    buf.put_u8(WIRE_VERSION);
    buf.put_u8(frame.kind());
    buf.put_u64(cluster.0);
    buf.put_u32(0);
}

/// [`decode_frame`] of a frame held in `buf`, with command payloads and
/// snapshot chunks coming out as slices of `buf` instead of copies: an
/// entry's bytes are copied once, from the socket into the frame, and then
/// shared by everything that holds the entry. Whoever keeps such a slice
/// keeps the buffer it points into alive; see [`Committed`](crate::Committed).
///
/// ```
/// use raftkit::wire::{decode_frame_shared, encode_frame, ClusterId, Frame};
/// let frame = Frame::SnapshotChunk { offset: 0, data: vec![7u8; 64].into(), done: true };
/// let bytes = encode_frame(ClusterId(1), &frame);
/// let Frame::SnapshotChunk { data, .. } = decode_frame_shared(ClusterId(1), &bytes).unwrap() else {
///     unreachable!()
/// };
/// assert_eq!(&data[..], &[7u8; 64][..]);
/// let within = bytes.as_ptr_range();
/// assert!(within.contains(&data.as_ptr()), "a slice of the frame, not a copy");
/// ```
pub fn decode_frame_shared(cluster: ClusterId, buf: &Bytes) -> Result<Frame, WireError> {
    let _shared = SharedFrame::set(buf);
    decode_frame(cluster, buf)
}

thread_local! {
    /// The frame [`decode_frame_shared`] is decoding on this thread.
    static SHARED_FRAME: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Sets [`SHARED_FRAME`] for as long as it lives.
struct SharedFrame;

impl SharedFrame {
    fn set(buf: &Bytes) -> SharedFrame {
        SHARED_FRAME.with(|f| *f.borrow_mut() = Some(buf.clone()));
        SharedFrame
    }
}

impl Drop for SharedFrame {
    fn drop(&mut self) {
        SHARED_FRAME.with(|f| *f.borrow_mut() = None);
    }
}

/// `v` as a slice of the frame being decoded by [`decode_frame_shared`] on
/// this thread, or else a copy.
fn shared_or_copied(v: &[u8]) -> Bytes {
    SHARED_FRAME.with(|f| {
        let frame = f.borrow();
        match frame.as_ref() {
            Some(frame) if contains(frame, v) => frame.slice_ref(v),
            _ => Bytes::copy_from_slice(v),
        }
    })
}

/// Whether `inner` lies within `outer`'s memory.
fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}

/// `#[serde(deserialize_with)]` for the `Bytes` that carry entry payloads
/// and snapshot chunks: borrowed bytes become a slice of the frame being
/// decoded by [`decode_frame_shared`]; anything else is copied, as
/// `Bytes`' own `Deserialize` does.
pub(crate) fn payload<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    struct Payload;

    impl<'de> serde::de::Visitor<'de> for Payload {
        type Value = Bytes;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
            Ok(shared_or_copied(v))
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(Bytes::from(v))
        }
    }

    d.deserialize_bytes(Payload)
}

/// Decodes a frame, checking magic, version and cluster.
pub fn decode_frame(cluster: ClusterId, buf: &[u8]) -> Result<Frame, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Truncated {
            len: buf.len(),
            need: HEADER_LEN,
        });
    }
    let magic = [buf[0], buf[1]];
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if buf[2] != WIRE_VERSION {
        return Err(WireError::Version {
            got: buf[2],
            want: WIRE_VERSION,
        });
    }
    let kind = buf[3];
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[4..12]);
    let got = ClusterId(u64::from_be_bytes(id));
    if got != cluster {
        return Err(WireError::ClusterMismatch { got, want: cluster });
    }
    let (frame, rest): (Frame, &[u8]) = postcard::take_from_bytes(&buf[HEADER_LEN..])
        .map_err(|e| WireError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Body(format!("{} trailing bytes", rest.len())));
    }
    if frame.kind() != kind {
        return Err(WireError::KindMismatch(kind));
    }
    Ok(frame)
}

/// The bytes `msg` takes inside a `Messages` frame.
///
/// ```
/// use raftkit::wire::{encode_frame, message_len, messages_frame_len, ClusterId, Frame};
/// use raftkit::{Message, MessageBody, ServerAddress, Term};
/// let msg = Message {
///     from: "a".into(),
///     from_addr: ServerAddress::new("127.0.0.1:7000"),
///     to: "b".into(),
///     term: Term(3),
///     body: MessageBody::TimeoutNow,
/// };
/// let msgs = vec![msg; 3];
/// let body: usize = msgs.iter().map(message_len).sum();
/// let frame = encode_frame(ClusterId(1), &Frame::Messages(msgs));
/// assert_eq!(frame.len(), messages_frame_len(3, body));
/// ```
pub fn message_len(msg: &Message) -> usize {
    let size = postcard::ser_flavors::Size::default();
    match postcard::serialize_with_flavor::<Message, _, usize>(msg, size) {
        Ok(n) => n,
        Err(e) => unreachable!("postcard size count failed: {e}"),
    }
}

/// The length of an encoded `Messages` frame of `count` messages whose
/// [`message_len`]s add up to `body` (its header and framing included).
pub fn messages_frame_len(count: usize, body: usize) -> usize {
    // The variant index (1: one varint byte) and the sequence length.
    HEADER_LEN + 1 + varint_len(count as u64) + body
}

/// The bytes of a postcard (LEB128) varint.
fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Encodes a log entry for storage.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    match postcard::to_stdvec(entry) {
        Ok(v) => v,
        Err(e) => unreachable!("postcard into memory failed: {e}"),
    }
}

/// Decodes a log entry written by [`encode_entry`].
pub fn decode_entry(buf: &[u8]) -> Result<Entry, WireError> {
    postcard::from_bytes(buf).map_err(|e| WireError::Body(e.to_string()))
}

/// Encodes any serde value with the same codec (snapshot metadata, say).
pub fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    match postcard::to_stdvec(value) {
        Ok(v) => v,
        Err(e) => unreachable!("postcard into memory failed: {e}"),
    }
}

/// Decodes a value written by [`encode_value`].
pub fn decode_value<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(buf).map_err(|e| WireError::Body(e.to_string()))
}
