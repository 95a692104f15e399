//! The settings every stream transport (TCP, QUIC) has, and their checks.

use std::time::Duration;

/// Room a snapshot chunk frame needs beyond its data: header, postcard
/// framing of offset, length and flag.
pub const CHUNK_OVERHEAD_BYTES: usize = 1024;

/// A transport setting that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A queue, batch, buffer or window bound of zero.
    #[error("{field} must be at least 1")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// Snapshot chunks would not fit in a frame.
    #[error(
        "snapshot_chunk_bytes {chunk} plus {CHUNK_OVERHEAD_BYTES} bytes of framing exceeds max_frame_bytes {max}"
    )]
    ChunkAboveFrame {
        /// `snapshot_chunk_bytes`.
        chunk: usize,
        /// `max_frame_bytes`.
        max: usize,
    },
    /// The frame length does not fit the 4-byte length prefix.
    #[error("max_frame_bytes {0} does not fit a 4-byte length prefix")]
    FrameAbovePrefix(usize),
    /// Backoff bounds the wrong way round.
    #[error("backoff_min {min:?} is above backoff_max {max:?}")]
    BackoffInverted {
        /// `backoff_min`.
        min: Duration,
        /// `backoff_max`.
        max: Duration,
    },
}

/// The shared settings of a stream transport's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits<'a> {
    /// Bounds that must be at least 1, by field name.
    pub nonzero: &'a [(&'static str, usize)],
    /// `max_frame_bytes`.
    pub max_frame_bytes: usize,
    /// `snapshot_chunk_bytes`.
    pub snapshot_chunk_bytes: usize,
    /// `backoff_min`.
    pub backoff_min: Duration,
    /// `backoff_max`.
    pub backoff_max: Duration,
}

impl Limits<'_> {
    /// Checks the settings, naming the first that cannot work.
    ///
    /// ```
    /// use std::time::Duration;
    /// use raftkit::transport::limits::{Limits, LimitsError};
    /// let limits = Limits {
    ///     nonzero: &[("send_queue_batches", 0)],
    ///     max_frame_bytes: 1 << 20,
    ///     snapshot_chunk_bytes: 1 << 16,
    ///     backoff_min: Duration::from_millis(50),
    ///     backoff_max: Duration::from_secs(2),
    /// };
    /// assert_eq!(limits.check(), Err(LimitsError::Zero { field: "send_queue_batches" }));
    /// ```
    pub fn check(&self) -> Result<(), LimitsError> {
        let frame = [("max_frame_bytes", self.max_frame_bytes)];
        let chunk = [("snapshot_chunk_bytes", self.snapshot_chunk_bytes)];
        for (field, value) in frame.iter().chain(&chunk).chain(self.nonzero) {
            if *value == 0 {
                return Err(LimitsError::Zero { field });
            }
        }
        if u32::try_from(self.max_frame_bytes).is_err() {
            return Err(LimitsError::FrameAbovePrefix(self.max_frame_bytes));
        }
        if self
            .snapshot_chunk_bytes
            .saturating_add(CHUNK_OVERHEAD_BYTES)
            > self.max_frame_bytes
        {
            return Err(LimitsError::ChunkAboveFrame {
                chunk: self.snapshot_chunk_bytes,
                max: self.max_frame_bytes,
            });
        }
        if self.backoff_min > self.backoff_max {
            return Err(LimitsError::BackoffInverted {
                min: self.backoff_min,
                max: self.backoff_max,
            });
        }
        Ok(())
    }
}
