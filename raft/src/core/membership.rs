//! Configurations in the log: the latest one is in effect as soon as it is
//! appended (§4.1 of Ongaro's thesis), and a truncation reverts to the one
//! before. Changes go one server at a time, so any two successive
//! configurations share a majority.

use std::collections::BTreeMap;

use crate::types::{Configuration, LogIndex, NodeId, Server, ServerAddress, Suffrage};

/// One single-server change (HashiCorp's AddVoter, AddNonvoter, DemoteVoter, RemoveServer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Add a voter, or promote a non-voter (updating its address).
    AddVoter {
        /// The server.
        id: NodeId,
        /// Its transport address.
        address: ServerAddress,
    },
    /// Add a non-voter; a voter stays a voter (HashiCorp's rule).
    AddNonvoter {
        /// The server.
        id: NodeId,
        /// Its transport address.
        address: ServerAddress,
    },
    /// Make a voter a non-voter.
    DemoteVoter {
        /// The server.
        id: NodeId,
    },
    /// Remove a server.
    RemoveServer {
        /// The server.
        id: NodeId,
    },
}

impl ConfChange {
    /// The configuration after applying this change to `from`, or why not.
    pub fn apply(&self, from: &Configuration) -> Result<Configuration, String> {
        let mut servers = from.servers.clone();
        let pos = |id: &NodeId| servers.iter().position(|s| &s.id == id);
        match self {
            ConfChange::AddVoter { id, address } => match pos(id) {
                Some(i) => {
                    servers[i].suffrage = Suffrage::Voter;
                    servers[i].address = address.clone();
                }
                None => servers.push(Server::voter(id.clone(), address.clone())),
            },
            ConfChange::AddNonvoter { id, address } => match pos(id) {
                Some(i) => servers[i].address = address.clone(),
                None => servers.push(Server::nonvoter(id.clone(), address.clone())),
            },
            ConfChange::DemoteVoter { id } => match pos(id) {
                Some(i) => servers[i].suffrage = Suffrage::Nonvoter,
                None => return Err(format!("server {id} is not in the configuration")),
            },
            ConfChange::RemoveServer { id } => match pos(id) {
                Some(i) => {
                    servers.remove(i);
                }
                None => return Err(format!("server {id} is not in the configuration")),
            },
        }
        let next = Configuration { servers };
        if next.voters().next().is_none() {
            return Err("the change would leave no voter".into());
        }
        Ok(next)
    }
}

/// The configurations this node knows: one from the snapshot, plus one per
/// configuration entry still in the log.
#[derive(Clone, Debug, Default)]
pub(crate) struct Membership {
    configs: BTreeMap<LogIndex, Configuration>,
}

impl Membership {
    pub(crate) fn new(base_index: LogIndex, base: Configuration) -> Membership {
        let mut configs = BTreeMap::new();
        configs.insert(base_index, base);
        Membership { configs }
    }

    /// The configuration in effect and its index.
    pub(crate) fn latest(&self) -> (LogIndex, &Configuration) {
        self.configs
            .iter()
            .next_back()
            .map(|(i, c)| (*i, c))
            .expect("membership always holds a base configuration")
    }

    pub(crate) fn config(&self) -> &Configuration {
        self.latest().1
    }

    /// The latest configuration at or before `index`.
    pub(crate) fn at(&self, index: LogIndex) -> (LogIndex, &Configuration) {
        self.configs
            .range(..=index)
            .next_back()
            .map(|(i, c)| (*i, c))
            .unwrap_or_else(|| self.latest())
    }

    pub(crate) fn append(&mut self, index: LogIndex, config: Configuration) {
        self.configs.insert(index, config);
    }

    /// A truncation dropped every entry from `from` on.
    pub(crate) fn truncate(&mut self, from: LogIndex) {
        let base = *self.configs.keys().next().unwrap_or(&LogIndex::ZERO);
        self.configs.retain(|i, _| *i < from || *i == base);
    }

    /// Forgets configurations older than the one in effect at `index`.
    pub(crate) fn compact(&mut self, index: LogIndex) {
        let keep = self.at(index).0;
        self.configs.retain(|i, _| *i >= keep);
    }

    /// Starts over from a snapshot's configuration.
    pub(crate) fn reset(&mut self, index: LogIndex, config: Configuration) {
        self.configs.clear();
        self.configs.insert(index, config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Configuration {
        Configuration::new(vec![
            Server::voter("a", "a"),
            Server::voter("b", "b"),
            Server::nonvoter("c", "c"),
        ])
    }

    #[test]
    fn conf_change_cases() {
        type Want = Result<Vec<(&'static str, Suffrage)>, ()>;
        let cases: Vec<(&str, ConfChange, Want)> = vec![
            (
                "add voter",
                ConfChange::AddVoter {
                    id: "d".into(),
                    address: "d".into(),
                },
                Ok(vec![
                    ("a", Suffrage::Voter),
                    ("b", Suffrage::Voter),
                    ("c", Suffrage::Nonvoter),
                    ("d", Suffrage::Voter),
                ]),
            ),
            (
                "promote non-voter",
                ConfChange::AddVoter {
                    id: "c".into(),
                    address: "c".into(),
                },
                Ok(vec![
                    ("a", Suffrage::Voter),
                    ("b", Suffrage::Voter),
                    ("c", Suffrage::Voter),
                ]),
            ),
            (
                "add non-voter keeps a voter a voter",
                ConfChange::AddNonvoter {
                    id: "a".into(),
                    address: "a2".into(),
                },
                Ok(vec![
                    ("a", Suffrage::Voter),
                    ("b", Suffrage::Voter),
                    ("c", Suffrage::Nonvoter),
                ]),
            ),
            (
                "demote",
                ConfChange::DemoteVoter { id: "b".into() },
                Ok(vec![
                    ("a", Suffrage::Voter),
                    ("b", Suffrage::Nonvoter),
                    ("c", Suffrage::Nonvoter),
                ]),
            ),
            (
                "remove",
                ConfChange::RemoveServer { id: "b".into() },
                Ok(vec![("a", Suffrage::Voter), ("c", Suffrage::Nonvoter)]),
            ),
            (
                "remove unknown",
                ConfChange::RemoveServer { id: "z".into() },
                Err(()),
            ),
        ];
        for (name, change, want) in cases {
            let got = change.apply(&three());
            match want {
                Ok(want) => {
                    let got = got.unwrap_or_else(|e| panic!("case {name}: {e}"));
                    let got: Vec<_> = got
                        .servers
                        .iter()
                        .map(|s| (s.id.as_str().to_owned(), s.suffrage))
                        .collect();
                    let want: Vec<_> = want.iter().map(|(i, s)| (i.to_string(), *s)).collect();
                    assert_eq!(got, want, "case {name}");
                }
                Err(()) => assert!(got.is_err(), "case {name}: expected an error"),
            }
        }
    }

    #[test]
    fn removing_the_last_voter_is_refused() {
        let one = Configuration::new(vec![Server::voter("a", "a")]);
        assert!(ConfChange::RemoveServer { id: "a".into() }
            .apply(&one)
            .is_err());
        assert!(ConfChange::DemoteVoter { id: "a".into() }
            .apply(&one)
            .is_err());
    }

    #[test]
    fn truncation_reverts_to_the_previous_configuration() {
        let mut m = Membership::new(LogIndex(0), three());
        let four = ConfChange::AddVoter {
            id: "d".into(),
            address: "d".into(),
        }
        .apply(&three())
        .unwrap();
        m.append(LogIndex(5), four.clone());
        assert_eq!(m.config(), &four);
        m.truncate(LogIndex(5));
        assert_eq!(m.config(), &three());
    }
}
