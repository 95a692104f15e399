//! Framing on the byte stream: the shared codec of [`raftkit::wire::stream`].

pub(crate) use raftkit::wire::stream::{CodecError, FrameCodec};
