//! Identifiers, log entries and cluster configurations shared by every layer.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A server's identity, unique and stable for the server's whole life.
///
/// HashiCorp Raft calls this `ServerID`. It is a string (the node API and the
/// profiles name servers `"n1"`, `"n2"`, ...), shared behind an `Arc` so that
/// cloning it into messages and maps costs a reference count, not a copy.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Creates an id from any string.
    ///
    /// ```
    /// let id = raftkit::NodeId::new("n1");
    /// assert_eq!(id.as_str(), "n1");
    /// ```
    pub fn new(id: impl AsRef<str>) -> NodeId {
        NodeId(Arc::from(id.as_ref()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> NodeId {
        NodeId::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> NodeId {
        NodeId(Arc::from(s))
    }
}

/// The network address a server's transport listens on, as the transport
/// understands it (`"127.0.0.1:7001"` for TCP and QUIC, any name for inmem).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServerAddress(Arc<str>);

impl ServerAddress {
    /// Creates an address from any string.
    ///
    /// ```
    /// let a = raftkit::ServerAddress::new("127.0.0.1:7001");
    /// assert_eq!(a.to_string(), "127.0.0.1:7001");
    /// ```
    pub fn new(addr: impl AsRef<str>) -> ServerAddress {
        ServerAddress(Arc::from(addr.as_ref()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl From<&str> for ServerAddress {
    fn from(s: &str) -> ServerAddress {
        ServerAddress::new(s)
    }
}

macro_rules! counter_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value: "none yet".
            pub const ZERO: $name = $name(0);

            /// The next value.
            #[must_use]
            pub fn next(self) -> $name {
                $name(self.0 + 1)
            }

            /// The previous value, saturating at zero.
            #[must_use]
            pub fn prev(self) -> $name {
                $name(self.0.saturating_sub(1))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

counter_newtype!(
    /// A Raft term (§5.1): a logical clock that only grows.
    Term
);
counter_newtype!(
    /// A position in the replicated log; the first entry has index 1.
    LogIndex
);

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// The no-op a new leader appends to commit entries of earlier terms (§8).
    Blank,
    /// An application command for the FSM.
    Command(
        #[serde(
            serialize_with = "crate::wire::share_payload",
            deserialize_with = "crate::wire::payload"
        )]
        Bytes,
    ),
    /// A new cluster configuration; it takes effect as soon as it is appended.
    Configuration(Configuration),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's position.
    pub index: LogIndex,
    /// The term of the leader that created it.
    pub term: Term,
    /// What it carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// An entry carrying an application command.
    pub fn command(index: LogIndex, term: Term, data: Bytes) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Command(data),
        }
    }

    /// An approximation of the entry's size in bytes, for batching limits.
    pub fn size_bytes(&self) -> usize {
        const OVERHEAD: usize = 24;
        OVERHEAD
            + match &self.payload {
                EntryPayload::Blank => 0,
                EntryPayload::Command(data) => data.len(),
                EntryPayload::Configuration(c) => c.servers.len() * 48,
            }
    }
}

/// Whether a server's vote counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Suffrage {
    /// Votes in elections and counts toward the commit quorum.
    Voter,
    /// Receives the log but never votes and never counts.
    Nonvoter,
}

impl fmt::Display for Suffrage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Suffrage::Voter => "Voter",
            Suffrage::Nonvoter => "Nonvoter",
        })
    }
}

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// Its identity.
    pub id: NodeId,
    /// Where its transport listens.
    pub address: ServerAddress,
    /// Whether it votes.
    pub suffrage: Suffrage,
}

impl Server {
    /// A voting member.
    pub fn voter(id: impl Into<NodeId>, address: impl Into<ServerAddress>) -> Server {
        Server {
            id: id.into(),
            address: address.into(),
            suffrage: Suffrage::Voter,
        }
    }

    /// A non-voting member.
    pub fn nonvoter(id: impl Into<NodeId>, address: impl Into<ServerAddress>) -> Server {
        Server {
            id: id.into(),
            address: address.into(),
            suffrage: Suffrage::Nonvoter,
        }
    }
}

/// The set of servers in the cluster (HashiCorp's `Configuration`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The members, in the order they were added.
    pub servers: Vec<Server>,
}

impl Configuration {
    /// A configuration of the given servers.
    pub fn new(servers: Vec<Server>) -> Configuration {
        Configuration { servers }
    }

    /// The member with this id, if any.
    pub fn server(&self, id: &NodeId) -> Option<&Server> {
        self.servers.iter().find(|s| &s.id == id)
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: &NodeId) -> bool {
        self.server(id)
            .is_some_and(|s| s.suffrage == Suffrage::Voter)
    }

    /// The voters' ids.
    pub fn voters(&self) -> impl Iterator<Item = &NodeId> {
        self.servers
            .iter()
            .filter(|s| s.suffrage == Suffrage::Voter)
            .map(|s| &s.id)
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters().count() / 2 + 1
    }
}
