//! Snapshot streams: chunks through their own channel, never behind messages.

use raftkit::transport::chunks::spawn_reader;
use raftkit::transport::IncomingSnapshot;
use raftkit::{Inbound, NodeId, Peer, SnapshotOffer, SnapshotReader, TransportError};
use tokio::sync::{mpsc, watch};

use crate::endpoint::unreachable;
use crate::{InmemNetwork, NoRoute};

/// Streams `data` to `to` in chunks; `Ok` once the peer's channel has taken
/// the last one.
pub(crate) async fn stream(
    network: &InmemNetwork,
    from: &NodeId,
    to: &Peer,
    offer: SnapshotOffer,
    data: SnapshotReader,
    mut sender_closed: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut route = match network.route(from, &to.address) {
        Ok(route) => route,
        Err(NoRoute::Nobody) => return Err(unreachable(to, "nothing listens at that address")),
        Err(NoRoute::Blocked) => return Err(unreachable(to, "the link is cut")),
    };
    let config = network.config();
    let (chunk_tx, chunks) = mpsc::channel(config.snapshot_chunks_buffered.max(1));
    tokio::select! {
        sent = route.inbound.send(Inbound::Snapshot(IncomingSnapshot { offer, chunks })) => {
            sent.map_err(|_| unreachable(to, "the peer shut down"))?;
        }
        _ = route.closed.wait_for(|c| *c) => return Err(unreachable(to, "the peer shut down")),
        _ = sender_closed.wait_for(|c| *c) => return Err(TransportError::Shutdown),
    }

    let mut read_rx = spawn_reader(data, config.snapshot_chunk_bytes);
    while let Some(chunk) = read_rx.recv().await {
        let chunk = chunk.map_err(|source| TransportError::Io {
            context: "reading snapshot data".to_owned(),
            source,
        })?;
        if network.route(from, &to.address).is_err() {
            return Err(unreachable(to, "the link broke during the snapshot"));
        }
        tokio::select! {
            sent = chunk_tx.send(chunk) => {
                sent.map_err(|_| unreachable(to, "the peer dropped the snapshot stream"))?;
            }
            _ = route.closed.wait_for(|c| *c) => return Err(unreachable(to, "the peer shut down")),
            _ = sender_closed.wait_for(|c| *c) => return Err(TransportError::Shutdown),
        }
    }
    Ok(())
}
