//! The walk-through every Raft user starts with, on the in-memory parts:
//! three servers, bootstrap, add a voter and a non-voter, promote it, look
//! at leader/state/stats, apply commands, remove a server, transfer
//! leadership.
//!
//! `cargo run -p raftkit --example cluster`

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use raftkit::{
    Committed, Config, Configuration, Fsm, FsmError, FsmSnapshot, LogIndex, NodeId, Raft, Server,
    ServerAddress,
};
use raftkit_inmem::InmemNetwork;
use raftkit_memory::{MemLogStore, MemSnapshotStore, MemStableStore};

/// A state machine that keeps a running sum of the numbers it is sent.
#[derive(Default)]
struct Sum(i64);

impl Fsm for Sum {
    type Response = i64;

    fn apply(&mut self, batch: &[Committed]) -> Vec<i64> {
        batch
            .iter()
            .map(|c| {
                let n = std::str::from_utf8(&c.data)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0);
                self.0 += n;
                self.0
            })
            .collect()
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(SumSnapshot(self.0)))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut s = String::new();
        snapshot.read_to_string(&mut s)?;
        self.0 = s
            .trim()
            .parse()
            .map_err(|e| FsmError(format!("bad snapshot: {e}")))?;
        Ok(())
    }
}

struct SumSnapshot(i64);

impl FsmSnapshot for SumSnapshot {
    fn persist(self: Box<Self>, sink: &mut dyn Write) -> Result<(), FsmError> {
        Ok(write!(sink, "{}", self.0)?)
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

async fn start(net: &InmemNetwork, id: &str) -> Result<Raft<i64>, Box<dyn std::error::Error>> {
    let config = Config {
        local_id: NodeId::new(id),
        heartbeat_timeout: Duration::from_millis(100),
        election_timeout: Duration::from_millis(100),
        leader_lease_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    let transport = net.endpoint(NodeId::new(id), ServerAddress::new(format!("inmem:{id}")));
    let raft = Raft::new(
        config,
        Sum::default(),
        MemLogStore::new(),
        MemStableStore::new(),
        MemSnapshotStore::new(2)?,
        transport,
    )
    .await?;
    Ok(raft)
}

async fn show(nodes: &[(&str, &Raft<i64>)]) -> Result<(), Box<dyn std::error::Error>> {
    for (name, raft) in nodes {
        let stats = raft.stats().await?;
        println!(
            "  {name}: state={:<9} leader={:<4} term={} commit={} applied={} members={}",
            raft.state().to_string(),
            raft.leader()
                .map(|(id, _)| id.to_string())
                .unwrap_or_else(|| "-".into()),
            stats.status.term,
            stats.status.commit_index,
            stats.status.applied_index,
            stats
                .status
                .configuration
                .servers
                .iter()
                .map(|s| format!("{}:{}", s.id, s.suffrage))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = InmemNetwork::new(7);
    let n1 = start(&net, "n1").await?;
    let n2 = start(&net, "n2").await?;
    let n3 = start(&net, "n3").await?;

    println!("1. bootstrap n1 alone");
    n1.bootstrap_cluster(Configuration::new(vec![Server::voter("n1", "inmem:n1")]))
        .await?;
    n1.wait_for_state(raftkit::RaftState::Leader, TIMEOUT)
        .await?;
    show(&[("n1", &n1)]).await?;

    println!("2. add n2 as a voter, n3 as a non-voter");
    n1.add_voter(
        NodeId::new("n2"),
        ServerAddress::new("inmem:n2"),
        LogIndex::ZERO,
        TIMEOUT,
    )
    .await?;
    n1.add_nonvoter(
        NodeId::new("n3"),
        ServerAddress::new("inmem:n3"),
        LogIndex::ZERO,
        TIMEOUT,
    )
    .await?;
    n3.wait_for_leader(TIMEOUT).await?;
    show(&[("n1", &n1), ("n2", &n2), ("n3", &n3)]).await?;

    println!("3. promote n3 to voter");
    n1.add_voter(
        NodeId::new("n3"),
        ServerAddress::new("inmem:n3"),
        LogIndex::ZERO,
        TIMEOUT,
    )
    .await?;
    show(&[("n1", &n1), ("n2", &n2), ("n3", &n3)]).await?;

    println!("4. apply commands on the leader");
    for n in [5, 10, 27] {
        let sum = n1.apply(Bytes::from(n.to_string()), TIMEOUT).await?;
        println!("  apply({n}) -> running sum {sum}");
    }
    let read = n1.read_index().await?;
    println!("  linearizable read point: index {read}");
    println!(
        "  stats of n1 as HashiCorp's map: {:?}",
        n1.stats().await?.to_map()
    );

    println!("5. transfer leadership");
    let new_leader = n1.leadership_transfer().await?;
    println!("  new leader: {new_leader}");
    let leader = if new_leader.as_str() == "n2" {
        &n2
    } else {
        &n3
    };
    show(&[("n1", &n1), ("n2", &n2), ("n3", &n3)]).await?;

    println!("6. remove n1");
    leader
        .remove_server(NodeId::new("n1"), LogIndex::ZERO, TIMEOUT)
        .await?;
    let sum = leader.apply(Bytes::from("100"), TIMEOUT).await?;
    println!("  apply(100) on {new_leader} -> running sum {sum}");
    show(&[("n2", &n2), ("n3", &n3)]).await?;

    for raft in [&n1, &n2, &n3] {
        raft.shutdown().await;
    }
    println!("done");
    Ok(())
}
