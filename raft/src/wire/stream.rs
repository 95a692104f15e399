//! Length-delimited frames on a byte stream (a TCP connection, a QUIC
//! stream): a 4-byte big-endian length, then a [`crate::wire`] frame of at
//! most `max_frame_bytes`. Every stream transport frames with this one codec.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use super::{FrameChunks, WireError};

/// A framing error on a connection.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A length prefix above the maximum (refused before reading the body).
    #[error("frame length above the maximum of {max} bytes")]
    TooLarge {
        /// The maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({buffered} bytes of it buffered)")]
    Truncated {
        /// Bytes of the partial frame received.
        buffered: usize,
    },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// [`LengthDelimitedCodec`] with typed errors.
///
/// ```
/// use raftkit::wire::stream::{CodecError, FrameCodec};
/// use tokio_util::codec::Decoder;
/// let mut codec = FrameCodec::new(1024);
/// let mut buf = bytes::BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
/// assert!(matches!(codec.decode(&mut buf), Err(CodecError::TooLarge { max: 1024 })));
/// ```
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
    /// The inner codec has taken a length prefix off the buffer and waits
    /// for the rest of that frame.
    inside_frame: bool,
}

impl FrameCodec {
    /// A codec refusing frames over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(max_frame_bytes)
            .new_codec();
        FrameCodec {
            inner,
            max: max_frame_bytes,
            inside_frame: false,
        }
    }

    fn map(&self, e: io::Error) -> CodecError {
        if e.get_ref()
            .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
        {
            CodecError::TooLarge { max: self.max }
        } else {
            CodecError::Io(e)
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let before = src.len();
        match self.inner.decode(src).map_err(|e| self.map(e))? {
            Some(frame) => {
                self.inside_frame = false;
                Ok(Some(frame))
            }
            None => {
                // The inner codec consumes a frame's length prefix as soon
                // as it has it, before the frame's bytes arrive.
                if src.len() < before {
                    self.inside_frame = true;
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && !self.inside_frame => Ok(None),
            None => Err(CodecError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        if frame.len() > self.max {
            return Err(CodecError::TooLarge { max: self.max });
        }
        self.inner.encode(frame, dst).map_err(|e| self.map(e))
    }
}

/// Frames behind their 4-byte lengths, as the buffers to write in order:
/// the bytes [`FrameCodec`] puts on a stream, without copying a frame's
/// buffers into one. As a [`Buf`] it feeds vectored writes
/// (`write_all_buf`); [`PrefixedFrames::chunks`] suits quinn's chunk writes.
///
/// ```
/// use bytes::{Buf, Bytes};
/// use raftkit::wire::stream::PrefixedFrames;
/// let frame = raftkit::wire::FrameChunks {
///     chunks: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")],
///     len: 5,
/// };
/// let mut out = PrefixedFrames::new(vec![frame], 1024).unwrap();
/// assert_eq!(out.remaining(), 9);
/// assert_eq!(out.copy_to_bytes(9), Bytes::from_static(b"\0\0\0\x05abcde"));
/// ```
#[derive(Debug, Default)]
pub struct PrefixedFrames {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl PrefixedFrames {
    /// `frames` behind their lengths; refuses a frame over
    /// `max_frame_bytes` (or over 4 GiB), as the codec does.
    pub fn new(frames: Vec<FrameChunks>, max_frame_bytes: usize) -> Result<Self, WireError> {
        let mut out = PrefixedFrames {
            chunks: VecDeque::with_capacity(frames.iter().map(|f| f.chunks.len() + 1).sum()),
            remaining: 0,
        };
        for frame in frames {
            let len = u32::try_from(frame.len)
                .ok()
                .filter(|_| frame.len <= max_frame_bytes)
                .ok_or(WireError::TooLarge {
                    len: frame.len,
                    max: max_frame_bytes,
                })?;
            out.remaining += 4 + frame.len;
            out.chunks
                .push_back(Bytes::copy_from_slice(&len.to_be_bytes()));
            out.chunks
                .extend(frame.chunks.into_iter().filter(|c| !c.is_empty()));
        }
        Ok(out)
    }

    /// The buffers, in order (for a write that takes a slice of them).
    pub fn chunks(&mut self) -> &mut [Bytes] {
        self.chunks.make_contiguous()
    }
}

impl Buf for PrefixedFrames {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the frames");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                break;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
        while self.chunks.front().is_some_and(Bytes::is_empty) {
            self.chunks.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use crate::wire::{decode_frame, ClusterId};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn prefixed_frames_refuse_a_frame_over_the_maximum() {
        let frame = FrameChunks::from(Bytes::from(vec![0u8; 1025]));
        assert!(matches!(
            PrefixedFrames::new(vec![frame.clone()], 1024),
            Err(WireError::TooLarge {
                len: 1025,
                max: 1024
            })
        ));
        let fits = PrefixedFrames::new(vec![frame], 1025).expect("at the maximum");
        assert_eq!(fits.remaining(), 1029);
    }

    #[test]
    fn length_prefix_above_the_maximum_is_refused_at_once() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { max: 1024 })
        ));
    }

    #[test]
    fn stream_ending_inside_a_frame_is_truncated() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0, 0, 0, 100, 1, 2, 3][..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn stream_ending_right_after_a_length_prefix_is_truncated() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0, 0, 0, 1][..]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::Truncated { buffered: 0 })
        ));
    }

    #[test]
    fn random_input_never_panics_the_decoders() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            let len = rng.random_range(0..256);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if bytes.len() > 16 && rng.random_bool(0.5) {
                // Mostly-valid headers reach the body decoder.
                bytes[..4].copy_from_slice(&[b'R', b'K', 1, rng.random_range(1..=5)]);
                bytes[4..12].copy_from_slice(&[0; 8]);
            }
            let _ = decode_frame(ClusterId(0), &bytes);
            let mut codec = FrameCodec::new(128);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                let _ = decode_frame(ClusterId(0), &frame);
            }
            let _ = codec.decode_eof(&mut buf);
        }
    }
}
