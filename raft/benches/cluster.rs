//! Proposal throughput of a 3-server in-memory cluster (inmem transport,
//! memory stores) with 1, 64 and 256 concurrent proposers and 16-byte key +
//! 256-byte value commands: the workload of `../shared/bench` on the
//! in-memory parts.
//!
//! `cargo bench -p raftkit --bench cluster`

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkit::{
    Committed, Config, Configuration, Fsm, FsmError, FsmSnapshot, NodeId, Raft, RaftState, Server,
    ServerAddress,
};
use raftkit_inmem::InmemNetwork;
use raftkit_memory::{DiscardSnapshotStore, MemLogStore, MemStableStore};

/// The harness's state machine: a map from key to value, value copied.
#[derive(Default)]
struct MapFsm(HashMap<Bytes, Bytes>);

impl Fsm for MapFsm {
    type Response = ();

    fn apply(&mut self, batch: &[Committed]) -> Vec<()> {
        for c in batch {
            let (k, v) = c.data.split_at(16.min(c.data.len()));
            self.0
                .insert(Bytes::copy_from_slice(k), Bytes::copy_from_slice(v));
        }
        vec![(); batch.len()]
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(Empty))
    }

    fn restore(&mut self, _: &mut dyn Read) -> Result<(), FsmError> {
        self.0.clear();
        Ok(())
    }
}

struct Empty;

impl FsmSnapshot for Empty {
    fn persist(self: Box<Self>, _: &mut dyn Write) -> Result<(), FsmError> {
        Ok(())
    }
}

async fn start_cluster() -> Vec<Raft<()>> {
    let net = InmemNetwork::new(1);
    let ids = ["n1", "n2", "n3"];
    let mut nodes = Vec::new();
    for id in ids {
        let config = Config {
            local_id: NodeId::new(id),
            // The harness's peers keep HashiCorp's 1 s defaults; so do we.
            snapshot_threshold: u64::MAX / 2,
            ..Config::default()
        };
        let t = net.endpoint(NodeId::new(id), ServerAddress::new(id));
        let raft = Raft::new(
            config,
            MapFsm::default(),
            MemLogStore::new(),
            MemStableStore::new(),
            DiscardSnapshotStore::new(),
            t,
        )
        .await
        .expect("start");
        nodes.push(raft);
    }
    let servers = ids.iter().map(|id| Server::voter(*id, *id)).collect();
    nodes[0]
        .bootstrap_cluster(Configuration::new(servers))
        .await
        .expect("bootstrap");
    nodes[0]
        .wait_for_state(RaftState::Leader, Duration::from_secs(10))
        .await
        .expect("leader");
    nodes
}

/// Runs `total` proposals split over `clients` closed-loop proposers.
async fn run(leader: &Raft<()>, clients: usize, total: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let raft = leader.clone();
        let n = total / clients;
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; 256];
            for i in 0..n {
                let mut cmd = Vec::with_capacity(272);
                cmd.extend_from_slice(&(c as u64).to_be_bytes());
                cmd.extend_from_slice(&(i as u64).to_be_bytes());
                cmd.extend_from_slice(&value);
                raft.apply(Bytes::from(cmd), Duration::from_secs(10))
                    .await
                    .expect("apply");
            }
        }));
    }
    for t in tasks {
        t.await.expect("proposer");
    }
    started.elapsed()
}

fn proposals(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nodes = rt.block_on(start_cluster());
    let mut group = c.benchmark_group("inmem_3_voters_256B");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for clients in [1usize, 64, 256] {
        let per_iter = if clients == 1 { 2_000 } else { 20_000 };
        group.throughput(Throughput::Elements(per_iter as u64));
        group.bench_with_input(
            BenchmarkId::new("proposers", clients),
            &clients,
            |b, &clients| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += run(&nodes[0], clients, per_iter).await;
                        }
                        total
                    })
                });
            },
        );
    }
    group.finish();
    rt.block_on(async {
        for n in &nodes {
            n.shutdown().await;
        }
    });
}

criterion_group!(benches, proposals);
criterion_main!(benches);
