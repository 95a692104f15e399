//! The I/O thread: makes the core's writes durable, in order, batching every
//! write waiting into one log append (group commit), then sends the
//! messages that promised durability.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::message::Message;
use crate::storage::{HardState, LogStore, StableStore, StorageError};
use crate::transport::{Peer, Transport};
use crate::types::{Entry, LogIndex, NodeId, ServerAddress, Term};

use super::runner::Internal;

/// Most batches folded into one group commit.
const MAX_GROUP: usize = 1024;

/// One `Ready`'s writes.
#[derive(Debug, Default)]
pub(crate) struct IoBatch {
    pub(crate) hard_state: Option<HardState>,
    /// Empty the log: a snapshot from the leader replaces it.
    pub(crate) reset_log: bool,
    pub(crate) truncate_from: Option<LogIndex>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) purge_upto: Option<LogIndex>,
    pub(crate) ack: Option<(LogIndex, Term)>,
    pub(crate) after: Vec<Message>,
}

impl IoBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && !self.reset_log
            && self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.purge_upto.is_none()
            && self.after.is_empty()
    }
}

/// Where each peer listens: from configurations and from messages received.
#[derive(Debug, Default)]
pub(crate) struct AddressBook {
    map: RwLock<HashMap<NodeId, ServerAddress>>,
}

impl AddressBook {
    pub(crate) fn learn(&self, id: &NodeId, address: &ServerAddress) {
        if address.as_str().is_empty() {
            return;
        }
        let known = self
            .map
            .read()
            .map(|m| m.get(id) == Some(address))
            .unwrap_or(false);
        if !known {
            if let Ok(mut m) = self.map.write() {
                m.insert(id.clone(), address.clone());
            }
        }
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<ServerAddress> {
        self.map.read().ok().and_then(|m| m.get(id).cloned())
    }

    pub(crate) fn peer(&self, id: &NodeId) -> Option<Peer> {
        self.get(id).map(|address| Peer {
            id: id.clone(),
            address,
        })
    }
}

/// Sends messages grouped per peer; returns the peers that could not be reached.
pub(crate) fn send_grouped(
    transport: &dyn Transport,
    book: &AddressBook,
    msgs: Vec<Message>,
) -> Vec<NodeId> {
    let mut by_peer: Vec<(NodeId, Vec<Message>)> = Vec::new();
    for m in msgs {
        match by_peer.iter_mut().find(|(id, _)| *id == m.to) {
            Some((_, v)) => v.push(m),
            None => by_peer.push((m.to.clone(), vec![m])),
        }
    }
    let mut failed = Vec::new();
    for (id, msgs) in by_peer {
        let Some(peer) = book.peer(&id) else {
            tracing::debug!(peer = %id, "no address known; dropping {} messages", msgs.len());
            failed.push(id);
            continue;
        };
        let kinds: Vec<&'static str> = msgs.iter().map(|m| m.body.kind()).collect();
        match transport.send(&peer, msgs) {
            Ok(()) => {
                for kind in kinds {
                    metrics::counter!("raft_transport_messages_queued_total", "kind" => kind)
                        .increment(1);
                }
            }
            Err(e) => {
                tracing::debug!(peer = %id, error = %e, "send failed");
                metrics::counter!("raft_transport_errors_total", "kind" => "send").increment(1);
                failed.push(id);
            }
        }
    }
    failed
}

/// Performs the core's writes and sends what waited for them.
pub(crate) struct Writer {
    pub(crate) log: Arc<dyn LogStore>,
    pub(crate) stable: Arc<dyn StableStore>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) book: Arc<AddressBook>,
}

/// The writer on its own thread, reporting to the driver.
pub(crate) struct IoThread {
    pub(crate) writer: Writer,
    pub(crate) done: UnboundedSender<Internal>,
}

impl IoThread {
    pub(crate) fn run(self, rx: Receiver<IoBatch>, runtime: tokio::runtime::Handle) {
        let _guard = runtime.enter();
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(b) => group.push(b),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            match self.writer.write_and_send(&mut group) {
                Ok(acks) => {
                    if self.done.send(Internal::Persisted(acks)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "storage failed; the node stops");
                    let _ = self.done.send(Internal::StorageFailed(Arc::new(e)));
                    return;
                }
            }
        }
    }
}

impl Writer {
    /// Whether both stores are in memory, so writes can happen inline.
    pub(crate) fn in_memory(&self) -> bool {
        self.log.is_in_memory() && self.stable.is_in_memory()
    }

    /// Makes a group durable, then sends the messages that waited for it.
    /// Returns the acks for `Core::on_persisted`.
    pub(crate) fn write_and_send(
        &self,
        group: &mut [IoBatch],
    ) -> Result<Vec<(LogIndex, Term)>, StorageError> {
        let acks = self.write(group)?;
        let after: Vec<Message> = group
            .iter_mut()
            .flat_map(|b| std::mem::take(&mut b.after))
            .collect();
        if !after.is_empty() {
            send_grouped(&*self.transport, &self.book, after);
        }
        Ok(acks)
    }

    /// Performs a group of batches in order; returns their acks.
    fn write(&self, group: &mut [IoBatch]) -> Result<Vec<(LogIndex, Term)>, StorageError> {
        // Only the latest term and vote matter; nothing of the group is
        // acknowledged before all of it is durable.
        if let Some(hs) = group.iter().rev().find_map(|b| b.hard_state.clone()) {
            self.stable.save_hard_state(&hs)?;
        }
        let mut pending: Vec<Entry> = Vec::new();
        let mut acks = Vec::new();
        for b in group.iter_mut() {
            if b.reset_log || b.truncate_from.is_some() {
                self.append(&mut pending)?;
            }
            if b.reset_log {
                self.log.truncate_suffix(LogIndex(1))?;
            }
            if let Some(from) = b.truncate_from {
                self.log.truncate_suffix(from)?;
            }
            pending.append(&mut b.entries);
            if let Some(upto) = b.purge_upto {
                self.append(&mut pending)?;
                self.log.purge_prefix(upto)?;
            }
            if let Some(ack) = b.ack {
                acks.push(ack);
            }
        }
        self.append(&mut pending)?;
        Ok(acks)
    }

    fn append(&self, pending: &mut Vec<Entry>) -> Result<(), StorageError> {
        if pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.log.append(pending)?;
        metrics::histogram!("raft_log_append_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("raft_log_appended_entries_total").increment(pending.len() as u64);
        pending.clear();
        Ok(())
    }
}
