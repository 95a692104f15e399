//! The receiving half every stream transport (TCP, QUIC) shares: reading
//! frames off a stream, checking who sent them, and handing messages and
//! snapshot chunks to the driver.
//!
//! ```text
//!  stream ─▶ Receiver::hello ─▶ Receiver::messages ─▶ Inbound::Message (after MessageSlots::take_over)
//!                                      └ SnapshotOffer ─▶ Receiver::snapshot ─▶ Inbound::Snapshot + chunks
//!  anything else: a ConnError naming what was wrong; the transport counts it and closes the stream
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::chunks::ChunkOrder;
use super::errors::{ConnError, ErrorKind};
use super::{Inbound, IncomingSnapshot, SnapshotChunk, SnapshotOffer};
use crate::types::NodeId;
use crate::wire::stream::CodecError;
use crate::wire::{decode_frame_shared, ClusterId, Frame};

/// How long a new message stream waits for its predecessor to stop.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// A stream's claim to be its peer's message stream.
///
/// A sender opens a new message stream only after giving up the old one,
/// but frames of the old one may still wait in this server's buffers. So
/// that they never arrive after the new stream's messages (order per
/// peer), the first `Messages` frame on a new stream stops the old
/// stream's task and waits for it to end: its leftovers are lost, which the
/// contract allows, but never reordered.
#[derive(Debug)]
pub struct MessageSlot {
    cancel: CancellationToken,
    done: watch::Receiver<()>,
}

/// Held by a stream's task for as long as it runs; dropping it tells a
/// newer stream from the same peer that nothing more comes from this one.
#[derive(Debug)]
pub struct SlotGuard {
    _done: watch::Sender<()>,
}

impl MessageSlot {
    /// A slot for a new stream, the guard its task holds, and the token
    /// that a newer stream cancels to stop this one.
    pub fn new() -> (MessageSlot, SlotGuard, CancellationToken) {
        let (done_tx, done) = watch::channel(());
        let cancel = CancellationToken::new();
        let slot = MessageSlot {
            cancel: cancel.clone(),
            done,
        };
        (slot, SlotGuard { _done: done_tx }, cancel)
    }
}

/// Each peer's current message stream.
#[derive(Debug, Default)]
pub struct MessageSlots {
    slots: Mutex<HashMap<NodeId, MessageSlot>>,
}

impl MessageSlots {
    /// Makes `slot` the message stream of `from`, stopping the previous one
    /// and waiting (boundedly) for it to end.
    pub async fn take_over(&self, from: &NodeId, slot: MessageSlot) {
        let previous = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(from.clone(), slot);
        if let Some(mut previous) = previous {
            previous.cancel.cancel();
            // `changed` fails once the old task has dropped its sender, i.e. ended.
            let _ = tokio::time::timeout(TAKEOVER_WAIT, previous.done.changed()).await;
        }
    }
}

/// What reading one stream needs.
#[derive(Debug)]
pub struct Receiver<'a> {
    /// This server's cluster: frames from others are refused.
    pub cluster: ClusterId,
    /// This server's id: messages to others are refused.
    pub local: &'a NodeId,
    /// Where messages and snapshots go.
    pub inbound: &'a mpsc::Sender<Inbound>,
    /// The transport's message streams by peer.
    pub slots: &'a MessageSlots,
    /// Snapshot chunks buffered per incoming snapshot.
    pub chunks_buffered: usize,
}

/// What ended [`Receiver::messages`].
#[derive(Debug)]
pub enum Next {
    /// The stream ended, or the driver dropped the inbound stream.
    Closed,
    /// A snapshot stream starts on this stream.
    Snapshot(SnapshotOffer),
}

impl Receiver<'_> {
    /// The next frame, decoded; `None` at the end of the stream.
    pub async fn next_frame<S>(&self, frames: &mut S) -> Result<Option<Frame>, ConnError>
    where
        S: Stream<Item = Result<BytesMut, CodecError>> + Unpin,
    {
        match frames.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(bytes)) => Ok(Some(decode_frame_shared(self.cluster, &bytes.freeze())?)),
        }
    }

    /// The `Hello` that must open every stream: who is calling (`None` if
    /// the stream ends first).
    pub async fn hello<S>(&self, frames: &mut S) -> Result<Option<NodeId>, ConnError>
    where
        S: Stream<Item = Result<BytesMut, CodecError>> + Unpin,
    {
        match self.next_frame(frames).await? {
            None => Ok(None),
            Some(Frame::Hello { from }) => Ok(Some(from)),
            Some(other) => Err(ConnError::new(
                ErrorKind::UnexpectedFrame,
                format!("first frame is {}, not Hello", other.name()),
            )),
        }
    }

    /// Hands `Messages` frames from `from` to the driver, in order, until
    /// the stream ends or a snapshot starts. The first `Messages` frame
    /// takes `slot` over (see [`MessageSlot`]).
    pub async fn messages<S>(
        &self,
        frames: &mut S,
        from: &NodeId,
        slot: &mut Option<MessageSlot>,
    ) -> Result<Next, ConnError>
    where
        S: Stream<Item = Result<BytesMut, CodecError>> + Unpin,
    {
        while let Some(frame) = self.next_frame(frames).await? {
            match frame {
                Frame::Messages(msgs) => {
                    if let Some(slot) = slot.take() {
                        self.slots.take_over(from, slot).await;
                    }
                    for msg in msgs {
                        if msg.from != *from {
                            return Err(spoofed(from, &msg.from));
                        }
                        if msg.to != *self.local {
                            return Err(ConnError::new(
                                ErrorKind::Misaddressed,
                                format!("message for {} reached {}", msg.to, self.local),
                            ));
                        }
                        if self.inbound.send(Inbound::Message(msg)).await.is_err() {
                            return Ok(Next::Closed); // The driver dropped the stream.
                        }
                    }
                }
                Frame::SnapshotOffer(offer) => {
                    if offer.from != *from {
                        return Err(spoofed(from, &offer.from));
                    }
                    return Ok(Next::Snapshot(offer));
                }
                other => {
                    return Err(ConnError::new(
                        ErrorKind::UnexpectedFrame,
                        format!("unexpected {} from {from}", other.name()),
                    ))
                }
            }
        }
        Ok(Next::Closed)
    }

    /// Hands one snapshot stream to the driver and forwards its chunks,
    /// checking their order. `Ok(true)` once the last chunk is handed over
    /// (the caller acknowledges it); `Ok(false)` if the sender gave up or
    /// the driver discarded the snapshot.
    pub async fn snapshot<S>(&self, frames: &mut S, offer: SnapshotOffer) -> Result<bool, ConnError>
    where
        S: Stream<Item = Result<BytesMut, CodecError>> + Unpin,
    {
        let mut order = ChunkOrder::new(offer.meta.size);
        let (tx, chunks) = mpsc::channel(self.chunks_buffered.max(1));
        if self
            .inbound
            .send(Inbound::Snapshot(IncomingSnapshot { offer, chunks }))
            .await
            .is_err()
        {
            return Ok(false);
        }
        loop {
            let Some(frame) = self.next_frame(frames).await? else {
                // The sender gave up; dropping `tx` tells the receiver the
                // stream was aborted (no `done` chunk).
                return Ok(false);
            };
            let Frame::SnapshotChunk { offset, data, done } = frame else {
                return Err(ConnError::new(
                    ErrorKind::UnexpectedFrame,
                    format!("{} inside a snapshot stream", frame.name()),
                ));
            };
            order.check(offset, data.len(), done)?;
            if tx.send(SnapshotChunk { offset, data, done }).await.is_err() {
                return Ok(false); // The driver discarded the snapshot; closing tells the sender.
            }
            if done {
                return Ok(true);
            }
        }
    }
}

fn spoofed(hello: &NodeId, claimed: &NodeId) -> ConnError {
    ConnError::new(
        ErrorKind::SpoofedSender,
        format!("{hello} said Hello but sent as {claimed}"),
    )
}
