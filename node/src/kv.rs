//! The key-value state machine behind the HTTP API.
//!
//! ```text
//!  HTTP handler ──Command::encode──▶ Raft::apply ──▶ log ──▶ KvFsm::apply (FSM thread)
//!       ▲                                                       │ writes State under a lock
//!       └────────────── KvReader::get (after read_index) ◀──────┘
//! ```
//!
//! Besides user keys, the state holds a replicated table `server id -> HTTP
//! address` ([`Command::SetHttpAddr`]). Followers use it to forward requests to
//! the leader's HTTP API. It lives in its own namespace of the state (not under
//! a key prefix), so no user key can shadow or overwrite it; each node writes
//! its own entry once it sees a leader (see `node::register_http_addr`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use raftkit::{Committed, Fsm, FsmError, FsmSnapshot};
use serde::{Deserialize, Serialize};

/// A command in the replicated log (postcard via `raftkit::wire`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key` (no error when absent).
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Set `key` to `new` (`None` deletes) only if its value is `expected`
    /// (`None` means absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The value required now.
        expected: Option<Bytes>,
        /// The value to store.
        new: Option<Bytes>,
    },
    /// Record the HTTP address of server `id` (internal table).
    SetHttpAddr {
        /// The server id.
        id: String,
        /// Its HTTP API address, `host:port`.
        http_addr: String,
    },
}

impl Command {
    /// The command's log encoding.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use raftkit_node::kv::Command;
    /// let put = Command::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") };
    /// assert_eq!(Command::decode(&put.encode()).unwrap(), put);
    /// assert!(Command::decode(&[0xff]).is_err());
    /// ```
    pub fn encode(&self) -> Bytes {
        Bytes::from(raftkit::wire::encode_value(self))
    }

    /// Decodes a command written by [`Command::encode`].
    pub fn decode(data: &[u8]) -> Result<Command, raftkit::wire::WireError> {
        raftkit::wire::decode_value(data)
    }
}

/// What applying one command answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// Put, Delete or SetHttpAddr done.
    Done,
    /// A CAS found the expected value and swapped.
    Swapped,
    /// A CAS found another value (`None`: absent) and changed nothing.
    CasFailed {
        /// The value found.
        current: Option<Bytes>,
    },
    /// The entry did not decode as a command; it changed nothing.
    Undecodable,
}

/// Everything the state machine holds; also the snapshot format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// The last log index applied.
    applied: u64,
    data: BTreeMap<Bytes, Bytes>,
    http_addrs: BTreeMap<String, String>,
}

/// The [`Fsm`] handed to `Raft::new`.
#[derive(Debug)]
pub struct KvFsm {
    state: Arc<RwLock<State>>,
}

/// A read handle on the state machine's current state.
#[derive(Clone, Debug)]
pub struct KvReader {
    state: Arc<RwLock<State>>,
}

impl KvFsm {
    /// An empty state machine and a reader of it.
    ///
    /// ```
    /// use raftkit::{Committed, Fsm, LogIndex, Term};
    /// use raftkit_node::kv::{Command, KvFsm, KvResponse};
    /// let (mut fsm, reader) = KvFsm::new();
    /// let put = Command::Put { key: "k".into(), value: "v".into() };
    /// let out = fsm.apply(&[Committed { index: LogIndex(1), term: Term(1), data: put.encode() }]);
    /// assert_eq!(out, vec![KvResponse::Done]);
    /// assert_eq!(reader.get(b"k"), (Some("v".into()), 1));
    /// ```
    pub fn new() -> (KvFsm, KvReader) {
        let state = Arc::new(RwLock::new(State::default()));
        (
            KvFsm {
                state: state.clone(),
            },
            KvReader { state },
        )
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated
        // (each command is a single map operation), so recover the guard.
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KvReader {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key` and the applied index it reflects.
    pub fn get(&self, key: &[u8]) -> (Option<Bytes>, u64) {
        let state = self.read();
        (state.data.get(key).cloned(), state.applied)
    }

    /// The last log index the state machine applied.
    pub fn applied(&self) -> u64 {
        self.read().applied
    }

    /// The HTTP address server `id` registered, if any.
    pub fn http_addr(&self, id: &str) -> Option<String> {
        self.read().http_addrs.get(id).cloned()
    }

    /// Number of user keys.
    pub fn len(&self) -> usize {
        self.read().data.len()
    }

    /// Whether there are no user keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn apply(&mut self, command: Command) -> KvResponse {
        match command {
            Command::Put { key, value } => {
                self.data.insert(key, value);
                KvResponse::Done
            }
            Command::Delete { key } => {
                self.data.remove(&key);
                KvResponse::Done
            }
            Command::Cas { key, expected, new } => {
                let current = self.data.get(&key);
                if current != expected.as_ref() {
                    return KvResponse::CasFailed {
                        current: current.cloned(),
                    };
                }
                match new {
                    Some(v) => self.data.insert(key, v),
                    None => self.data.remove(&key),
                };
                KvResponse::Swapped
            }
            Command::SetHttpAddr { id, http_addr } => {
                self.http_addrs.insert(id, http_addr);
                KvResponse::Done
            }
        }
    }
}

impl Fsm for KvFsm {
    type Response = KvResponse;

    fn apply(&mut self, batch: &[Committed]) -> Vec<KvResponse> {
        let mut state = self.write();
        batch
            .iter()
            .map(|c| {
                state.applied = state.applied.max(c.index.0);
                match Command::decode(&c.data) {
                    Ok(command) => state.apply(command),
                    Err(e) => {
                        tracing::warn!(index = %c.index, error = %e, "undecodable KV command ignored");
                        KvResponse::Undecodable
                    }
                }
            })
            .collect()
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        // A clone of the maps: values are `Bytes`, so this copies pointers,
        // not payloads.
        Ok(Box::new(KvSnapshot(self.write().clone())))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut buf = Vec::new();
        snapshot.read_to_end(&mut buf)?;
        let restored: State = raftkit::wire::decode_value(&buf)
            .map_err(|e| FsmError(format!("KV snapshot does not decode: {e}")))?;
        *self.write() = restored;
        Ok(())
    }
}

struct KvSnapshot(State);

impl FsmSnapshot for KvSnapshot {
    fn persist(self: Box<Self>, sink: &mut dyn Write) -> Result<(), FsmError> {
        sink.write_all(&raftkit::wire::encode_value(&self.0))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use raftkit::{LogIndex, Term};

    use super::*;

    fn committed(index: u64, command: &Command) -> Committed {
        Committed {
            index: LogIndex(index),
            term: Term(1),
            data: command.encode(),
        }
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> Command {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        Command::Cas {
            key: b(key),
            expected: expected.map(b),
            new: new.map(b),
        }
    }

    #[test]
    fn put_then_delete_leaves_key_absent() {
        let (mut fsm, reader) = KvFsm::new();
        let del = Command::Delete {
            key: Bytes::from_static(b"a"),
        };
        let out = fsm.apply(&[committed(1, &put("a", "1")), committed(2, &del)]);
        assert_eq!(out, vec![KvResponse::Done, KvResponse::Done]);
        assert_eq!(reader.get(b"a"), (None, 2));
    }

    #[test]
    fn cas_swaps_only_on_expected_value() {
        let (mut fsm, reader) = KvFsm::new();
        let out = fsm.apply(&[
            committed(1, &cas("k", None, Some("v1"))),
            committed(2, &cas("k", None, Some("v2"))),
            committed(3, &cas("k", Some("v1"), Some("v3"))),
            committed(4, &cas("k", Some("v3"), None)),
        ]);
        assert_eq!(out[0], KvResponse::Swapped);
        assert_eq!(
            out[1],
            KvResponse::CasFailed {
                current: Some(Bytes::from_static(b"v1"))
            }
        );
        assert_eq!(out[2], KvResponse::Swapped);
        assert_eq!(out[3], KvResponse::Swapped);
        assert_eq!(reader.get(b"k").0, None);
    }

    #[test]
    fn undecodable_entry_changes_nothing() {
        let (mut fsm, reader) = KvFsm::new();
        let bad = Committed {
            index: LogIndex(1),
            term: Term(1),
            data: Bytes::from_static(&[0xff, 0xff, 0xff]),
        };
        assert_eq!(fsm.apply(&[bad]), vec![KvResponse::Undecodable]);
        assert!(reader.is_empty());
    }

    #[test]
    fn snapshot_restores_keys_addresses_and_applied_index() {
        let (mut fsm, _) = KvFsm::new();
        let reg = Command::SetHttpAddr {
            id: "n1".into(),
            http_addr: "127.0.0.1:8001".into(),
        };
        fsm.apply(&[committed(1, &put("a", "1")), committed(2, &reg)]);
        let mut buf = Vec::new();
        fsm.snapshot().unwrap().persist(&mut buf).unwrap();

        let (mut other, reader) = KvFsm::new();
        other.apply(&[committed(1, &put("stale", "x"))]);
        other.restore(&mut buf.as_slice()).unwrap();
        assert_eq!(reader.get(b"a"), (Some(Bytes::from_static(b"1")), 2));
        assert_eq!(reader.get(b"stale").0, None);
        assert_eq!(reader.http_addr("n1").as_deref(), Some("127.0.0.1:8001"));
    }

    #[test]
    fn corrupt_snapshot_is_an_error() {
        let (mut fsm, _) = KvFsm::new();
        assert!(fsm.restore(&mut &[0xffu8, 0xff][..]).is_err());
    }
}
