//! raftkit: Raft consensus with HashiCorp Raft's usage model.
//!
//! The crate has three layers:
//!
//! ```text
//!   Raft (driver)   one tokio task owns the core, performs its actions, answers the API
//!      │ step / tick / propose          ▲ Ready { persist, send, apply, reads }
//!      ▼                                │
//!   Core            sans-IO protocol state machine: no clock, no sockets, no files
//!
//!   plug-ins        Fsm, LogStore, StableStore, SnapshotStore, Transport
//! ```
//!
//! It is not a storage engine or a network library: those come as plug-in
//! crates (`raftkit-memory`, `raftkit-inmem`, and the durable and network
//! ones), each implementing the traits of [`storage`] and [`transport`].
//!
//! Each hot path has a criterion benchmark, so that a regression shows as a
//! number: `cargo bench -p raftkit --bench core` (the core's step/ready loop
//! with no I/O: proposals to commit on a leader of three, a follower's
//! append, a heartbeat round), `--bench codec` (encoding and decoding
//! AppendEntries frames, and splitting a stream of them), `--bench cluster`
//! (a whole in-memory cluster), and `cargo bench -p raftkit-storage-durability
//! --bench append` (storage appends). Each file's docs say what it measures.

pub mod config;
pub mod core;
mod driver;
pub mod fsm;
pub mod message;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;
pub mod types;
pub mod wire;

pub use crate::core::{ConfChange, Core, Event, RaftState, ReadState, Ready, Status};
pub use config::{Config, ConfigError, ValidConfig};
pub use driver::{Raft, RaftError, Stats};
pub use fsm::{Committed, Fsm, FsmError, FsmSnapshot};
pub use message::{Message, MessageBody};
pub use storage::{
    HardState, LogStore, SnapshotId, SnapshotMeta, SnapshotPoint, SnapshotReader, SnapshotSink,
    SnapshotStore, StableStore, StorageError, StorageResult,
};
pub use transport::{
    BoxFuture, Inbound, InboundStream, IncomingSnapshot, Peer, SnapshotChunk, SnapshotOffer,
    Transport, TransportError,
};
pub use types::{
    Configuration, Entry, EntryPayload, LogIndex, NodeId, Server, ServerAddress, Suffrage, Term,
};
