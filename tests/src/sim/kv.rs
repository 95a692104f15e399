//! The simulation's replicated state machine: a byte-keyed map, and the
//! commands clients send it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::history::{Op, Returned};

/// A write command as it travels in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

impl Command {
    /// The command for a write op; `None` for a read.
    pub(crate) fn for_op(op: &Op) -> Option<Command> {
        match op {
            Op::Put { key, value } => Some(Command::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            Op::Delete { key } => Some(Command::Delete { key: key.clone() }),
            Op::Cas { key, expected, new } => Some(Command::Cas {
                key: key.clone(),
                expected: expected.clone(),
                new: new.clone(),
            }),
            Op::Get { .. } => None,
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(raftkit::wire::encode_value(self))
    }

    pub(crate) fn decode(data: &[u8]) -> Option<Command> {
        raftkit::wire::decode_value(data).ok()
    }
}

/// The map, with how far it has applied the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Kv {
    pub(crate) map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Kv {
    pub(crate) fn apply(&mut self, data: &[u8]) -> Returned {
        match Command::decode(data) {
            Some(Command::Put { key, value }) => {
                self.map.insert(key, value);
                Returned::Done
            }
            Some(Command::Delete { key }) => {
                self.map.remove(&key);
                Returned::Done
            }
            Some(Command::Cas { key, expected, new }) => {
                if self.map.get(&key) != expected.as_ref() {
                    return Returned::Swapped(false);
                }
                match new {
                    Some(v) => self.map.insert(key, v),
                    None => self.map.remove(&key),
                };
                Returned::Swapped(true)
            }
            // Commands are produced by the simulation itself; garbage would
            // be a simulation bug, and a no-op keeps every replica equal.
            None => Returned::Done,
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    /// A digest of the whole state, to compare replicas cheaply.
    pub(crate) fn digest(&self) -> u64 {
        let mut h = Fnv::default();
        for (k, v) in &self.map {
            h.write(k);
            h.write(&[0xff]);
            h.write(v);
            h.write(&[0xfe]);
        }
        h.0
    }
}

/// FNV-1a, for deterministic digests (std's hasher is randomly keyed).
#[derive(Clone, Copy)]
pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A digest of an entry's payload.
pub(crate) fn payload_digest(entry: &raftkit::Entry) -> u64 {
    let mut h = Fnv::default();
    h.write(&raftkit::wire::encode_entry(entry));
    h.0
}
