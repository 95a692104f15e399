//! The driver end to end on the in-memory transport and stores: elections,
//! replication, failover, membership, transfer, snapshots to a lagging
//! follower, and a storage failure that stops a node.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use raftkit::{
    Committed, Config, Configuration, Entry, Fsm, FsmError, FsmSnapshot, LogIndex, LogStore,
    NodeId, Raft, RaftError, RaftState, Server, ServerAddress, StorageError, StorageResult,
};
use raftkit_inmem::InmemNetwork;
use raftkit_memory::{MemLogStore, MemSnapshotStore, MemStableStore};

const T: Duration = Duration::from_secs(10);

/// Sums the numbers it is sent; the sum, and how many batches it was
/// handed, are visible to the test.
#[derive(Clone, Default)]
struct Sum(Arc<AtomicI64>, Arc<AtomicU64>);

impl Fsm for Sum {
    type Response = i64;

    fn apply(&mut self, batch: &[Committed]) -> Vec<i64> {
        self.1.fetch_add(1, Ordering::SeqCst);
        batch
            .iter()
            .map(|c| {
                let n: i64 = std::str::from_utf8(&c.data)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                self.0.fetch_add(n, Ordering::SeqCst) + n
            })
            .collect()
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(SumSnapshot(self.0.load(Ordering::SeqCst))))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut s = String::new();
        snapshot.read_to_string(&mut s)?;
        self.0.store(
            s.parse().map_err(|e| FsmError(format!("{e}")))?,
            Ordering::SeqCst,
        );
        Ok(())
    }
}

struct SumSnapshot(i64);

impl FsmSnapshot for SumSnapshot {
    fn persist(self: Box<Self>, sink: &mut dyn Write) -> Result<(), FsmError> {
        Ok(write!(sink, "{}", self.0)?)
    }
}

fn config(id: &str, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config {
        local_id: NodeId::new(id),
        heartbeat_timeout: Duration::from_millis(100),
        election_timeout: Duration::from_millis(100),
        leader_lease_timeout: Duration::from_millis(50),
        ..Config::default()
    };
    tweak(&mut c);
    c
}

struct Node {
    raft: Raft<i64>,
    sum: Sum,
}

async fn node<L: LogStore>(
    net: &InmemNetwork,
    id: &str,
    log: L,
    tweak: impl FnOnce(&mut Config),
) -> Node {
    let sum = Sum::default();
    let transport = net.endpoint(NodeId::new(id), addr(id));
    let raft = Raft::new(
        config(id, tweak),
        sum.clone(),
        log,
        MemStableStore::new(),
        MemSnapshotStore::new(2).unwrap(),
        transport,
    )
    .await
    .unwrap_or_else(|e| panic!("starting {id}: {e}"));
    Node { raft, sum }
}

fn addr(id: &str) -> ServerAddress {
    ServerAddress::new(format!("inmem:{id}"))
}

fn voters(ids: &[&str]) -> Configuration {
    Configuration::new(ids.iter().map(|id| Server::voter(*id, addr(id))).collect())
}

async fn cluster(net: &InmemNetwork, ids: &[&str], tweak: fn(&mut Config)) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(node(net, id, MemLogStore::new(), tweak).await);
    }
    nodes[0]
        .raft
        .bootstrap_cluster(voters(ids))
        .await
        .expect("bootstrap");
    nodes
}

/// Server "a" on `log`, bootstrapped as the only voter, once it leads.
async fn lone_leader<L: LogStore>(net: &InmemNetwork, log: L) -> Node {
    let a = node(net, "a", log, |_| {}).await;
    a.raft
        .bootstrap_cluster(voters(&["a"]))
        .await
        .expect("bootstrap");
    a.raft
        .wait_for_state(RaftState::Leader, T)
        .await
        .expect("a leads alone");
    a
}

/// Polls `check` until it holds or the deadline passes, then fails naming `what`.
async fn wait_until<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + T;
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        poll.tick().await;
    }
}

async fn leader_of(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + T;
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    loop {
        if let Some(i) = nodes
            .iter()
            .position(|n| n.raft.state() == RaftState::Leader)
        {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader elected within {T:?}");
        poll.tick().await;
    }
}

/// Applies the numbers 1..=`count` on `leader`, one at a time; returns
/// their sum.
async fn apply_one_by_one(leader: &Node, count: i64) -> i64 {
    let mut sum = 0;
    for n in 1..=count {
        sum += n;
        leader
            .raft
            .apply(Bytes::from(n.to_string()), T)
            .await
            .expect("apply on the leader");
    }
    sum
}

/// Waits until every server's sum is `sum`: all `count` commands applied.
async fn wait_all_applied(nodes: &[Node], count: i64, sum: i64) {
    for (i, n) in nodes.iter().enumerate() {
        wait_until(&format!("server {i} applies all {count} commands"), || {
            n.sum.0.load(Ordering::SeqCst) == sum
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_elect_replicate_and_apply_everywhere() {
    let net = InmemNetwork::new(1);
    let nodes = cluster(&net, &["a", "b", "c"], |_| {}).await;
    let l = leader_of(&nodes).await;
    let mut expected = 0;
    for n in 1..=100 {
        expected += n;
        let sum = nodes[l]
            .raft
            .apply(Bytes::from(n.to_string()), T)
            .await
            .expect("apply on the leader");
        assert_eq!(sum, expected, "the FSM's response is the running sum");
    }
    wait_all_applied(&nodes, 100, expected).await;
    let follower = (l + 1) % 3;
    match nodes[follower].raft.apply(Bytes::from("1"), T).await {
        Err(RaftError::NotLeader {
            leader: Some((id, _)),
        }) => assert_eq!(Some(id), nodes[l].raft.leader().map(|(i, _)| i)),
        other => panic!("a follower must refuse with the leader's id, got {other:?}"),
    }
    let stats = nodes[l].raft.stats().await.expect("stats");
    assert_eq!(stats.to_map()["state"], "Leader");
    assert!(stats.status.commit_index >= LogIndex(100));
    for n in &nodes {
        n.raft.shutdown().await;
        assert_eq!(n.raft.state(), RaftState::Shutdown);
    }
}

/// Followers hold committed entries back from their FSMs for up to a
/// millisecond and hand them over in batches, instead of waking the FSM for
/// every commit round; they still apply every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_apply_in_batches() {
    let net = InmemNetwork::new(9);
    let nodes = cluster(&net, &["a", "b", "c"], |_| {}).await;
    let l = leader_of(&nodes).await;
    let batches = |n: &Node| n.sum.1.load(Ordering::SeqCst);
    let before: Vec<u64> = nodes.iter().map(batches).collect();
    // One command at a time: the leader applies each in a batch of its own.
    let sum = apply_one_by_one(&nodes[l], 200).await;
    wait_all_applied(&nodes, 200, sum).await;
    let leader = batches(&nodes[l]) - before[l];
    assert!(
        leader >= 200,
        "the leader applied 200 commands in {leader} batches"
    );
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != l) {
        let follower = batches(n) - before[i];
        assert!(
            follower * 2 <= leader,
            "follower {i} applied 200 commands in {follower} batches, the leader in {leader}: \
             it did not hold them back"
        );
    }
    for n in &nodes {
        n.raft.shutdown().await;
    }
}

/// A leader that falls quiet tells its followers of its last commits within
/// `commit_timeout`, without waiting for the next heartbeat (one 200 ms tick
/// here). The clock is paused: time moves only when every task waits.
#[tokio::test(start_paused = true)]
async fn a_quiet_leader_announces_its_commit_index_within_commit_timeout() {
    let net = InmemNetwork::new(5);
    let nodes = cluster(&net, &["a", "b", "c"], |c| {
        c.heartbeat_timeout = Duration::from_secs(2);
        c.election_timeout = Duration::from_secs(1);
        c.leader_lease_timeout = Duration::from_secs(1);
        c.commit_timeout = Duration::from_millis(20);
        c.fsm_on_runtime = true;
    })
    .await;
    let l = leader_of(&nodes).await;
    let mut sum = 0;
    for n in 1..=5 {
        sum += n;
        nodes[l]
            .raft
            .apply(Bytes::from(n.to_string()), T)
            .await
            .expect("apply on the leader");
        let committed = tokio::time::Instant::now();
        wait_all_applied(&nodes, n, sum).await;
        let waited = committed.elapsed();
        // 20 ms, the followers' 1 ms hold, and the 5 ms polling.
        assert!(
            waited <= Duration::from_millis(30),
            "command {n}: the followers applied it {waited:?} after it committed"
        );
    }
    for n in &nodes {
        n.raft.shutdown().await;
    }
}

/// With `fsm_on_runtime` the state machines run in the drivers' tasks:
/// commands apply on every server, a snapshot is taken, and shutdown waits
/// for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machines_on_the_runtime_apply_and_snapshot() {
    let net = InmemNetwork::new(7);
    let nodes = cluster(&net, &["a", "b", "c"], |c| c.fsm_on_runtime = true).await;
    let l = leader_of(&nodes).await;
    let sum = apply_one_by_one(&nodes[l], 50).await;
    wait_all_applied(&nodes, 50, sum).await;
    let meta = nodes[l].raft.snapshot().await.expect("snapshot");
    assert!(meta.index >= LogIndex(50), "{meta:?}");
    for n in &nodes {
        n.raft.shutdown().await;
        assert_eq!(n.raft.state(), RaftState::Shutdown);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_when_the_leader_stops() {
    let net = InmemNetwork::new(2);
    let nodes = cluster(&net, &["a", "b", "c"], |_| {}).await;
    let l = leader_of(&nodes).await;
    nodes[l]
        .raft
        .apply(Bytes::from("5"), T)
        .await
        .expect("first write");
    nodes[l].raft.shutdown().await;
    let rest: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != l)
        .map(|(_, n)| n)
        .collect();
    wait_until("one of the two remaining servers leads", || {
        rest.iter().any(|n| n.raft.state() == RaftState::Leader)
    })
    .await;
    let new = rest
        .iter()
        .find(|n| n.raft.state() == RaftState::Leader)
        .expect("a leader");
    let sum = new
        .raft
        .apply(Bytes::from("7"), T)
        .await
        .expect("write after failover");
    assert_eq!(sum, 12, "the first write survived the failover");
    let read = new
        .raft
        .read_index()
        .await
        .expect("linearizable read on the new leader");
    assert!(read >= LogIndex(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_leadership_transfer() {
    let net = InmemNetwork::new(3);
    let b = node(&net, "b", MemLogStore::new(), |_| {}).await;
    let c = node(&net, "c", MemLogStore::new(), |_| {}).await;
    let a = lone_leader(&net, MemLogStore::new()).await;
    a.raft
        .add_voter(NodeId::new("b"), addr("b"), LogIndex::ZERO, T)
        .await
        .expect("add b");
    a.raft
        .add_nonvoter(NodeId::new("c"), addr("c"), LogIndex::ZERO, T)
        .await
        .expect("add c as non-voter");
    let (index, configuration) = a.raft.get_configuration().await.expect("configuration");
    assert_eq!(configuration.voters().count(), 2);
    assert!(!configuration.is_voter(&NodeId::new("c")));
    match a
        .raft
        .add_voter(NodeId::new("c"), addr("c"), LogIndex(index.0 - 1), T)
        .await
    {
        Err(RaftError::ConfigurationChanged { .. }) => {}
        other => panic!("a stale prev_index must be refused, got {other:?}"),
    }
    a.raft
        .add_voter(NodeId::new("c"), addr("c"), index, T)
        .await
        .expect("promote c");
    a.raft.apply(Bytes::from("3"), T).await.expect("write");
    wait_until("c applies the write", || {
        c.sum.0.load(Ordering::SeqCst) == 3
    })
    .await;
    let new = a
        .raft
        .leadership_transfer_to_server(NodeId::new("b"))
        .await
        .expect("transfer to b");
    assert_eq!(new, NodeId::new("b"));
    b.raft
        .wait_for_state(RaftState::Leader, T)
        .await
        .expect("b leads");
    // Asked at once, before b's first entry commits, the change waits its turn.
    b.raft
        .demote_voter(NodeId::new("c"), LogIndex::ZERO, T)
        .await
        .expect("demote c");
    b.raft
        .remove_server(NodeId::new("a"), LogIndex::ZERO, T)
        .await
        .expect("remove a");
    let (_, configuration) = b.raft.get_configuration().await.expect("configuration");
    assert_eq!(
        configuration
            .servers
            .iter()
            .map(|s| s.id.to_string())
            .collect::<Vec<_>>(),
        ["b", "c"]
    );
    assert_eq!(b.raft.apply(Bytes::from("4"), T).await.expect("write"), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_by_snapshot() {
    lagging_follower_catches_up_by_snapshot(snapshot_often).await;
}

/// The same with the state machines in the drivers' tasks: the follower
/// restores the snapshot in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_by_snapshot_with_state_machines_on_the_runtime() {
    lagging_follower_catches_up_by_snapshot(|c| {
        snapshot_often(c);
        c.fsm_on_runtime = true;
    })
    .await;
}

/// Snapshots every 50 entries, keeping 10, checked every 10 ms.
fn snapshot_often(c: &mut Config) {
    c.snapshot_threshold = 50;
    c.trailing_logs = 10;
    c.snapshot_interval = Duration::from_millis(10);
}

async fn lagging_follower_catches_up_by_snapshot(tweak: fn(&mut Config)) {
    let net = InmemNetwork::new(4);
    let nodes = cluster(&net, &["a", "b", "c"], tweak).await;
    let l = leader_of(&nodes).await;
    let lagging = (l + 1) % 3;
    let lagging_id = NodeId::new(["a", "b", "c"][lagging]);
    net.disconnect(&lagging_id);
    for _ in 0..300 {
        nodes[l]
            .raft
            .apply(Bytes::from("1"), T)
            .await
            .expect("write while one follower is away");
    }
    // Snapshots are taken in the background, on the snapshot timer.
    let deadline = Instant::now() + T;
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    loop {
        let s = nodes[l].raft.stats().await.expect("stats").status;
        if s.last_snapshot_index > LogIndex(200) && s.first_log_index > LogIndex(150) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader did not snapshot and compact past 200: {s:?}"
        );
        poll.tick().await;
    }
    net.reconnect(&lagging_id);
    wait_until("the lagging follower reaches the leader's sum", || {
        nodes[lagging].sum.0.load(Ordering::SeqCst) == 300
    })
    .await;
    let s = nodes[lagging].raft.stats().await.expect("stats");
    assert!(
        s.status.last_snapshot_index > LogIndex::ZERO,
        "it caught up by installing a snapshot: {:?}",
        s.status
    );
}

/// A memory log store that calls `hook` before every append; an error from
/// the hook fails the append.
struct HookedLog<H> {
    inner: MemLogStore,
    hook: H,
}

impl<H: Fn() -> StorageResult<()> + Send + Sync + 'static> LogStore for HookedLog<H> {
    fn first_index(&self) -> StorageResult<LogIndex> {
        self.inner.first_index()
    }
    fn last_index(&self) -> StorageResult<LogIndex> {
        self.inner.last_index()
    }
    fn get(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Entry>> {
        self.inner.get(from, to)
    }
    fn append(&self, entries: &[Entry]) -> StorageResult<()> {
        (self.hook)()?;
        self.inner.append(entries)
    }
    fn truncate_suffix(&self, from: LogIndex) -> StorageResult<()> {
        self.inner.truncate_suffix(from)
    }
    fn purge_prefix(&self, upto: LogIndex) -> StorageResult<()> {
        self.inner.purge_prefix(upto)
    }
}

/// Holds appends back while closed.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.0 .0.lock().unwrap() = closed;
        self.0 .1.notify_all();
    }

    fn wait_open(&self) {
        let (lock, opened) = &*self.0;
        let _open = opened
            .wait_while(lock.lock().unwrap(), |closed| *closed)
            .unwrap();
    }
}

/// Changes asked for while one is uncommitted wait their turn and then all
/// commit, in order; beyond what may wait, a change is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_wait_their_turn() {
    const WAITING: usize = 64;
    let net = InmemNetwork::new(6);
    let gate = Gate::default();
    let log = HookedLog {
        inner: MemLogStore::new(),
        hook: {
            let gate = gate.clone();
            move || {
                gate.wait_open();
                Ok(())
            }
        },
    };
    let a = lone_leader(&net, log).await;
    a.raft.barrier(T).await.expect("a's first entries commit");

    // The first change is proposed and held at the disk; the next WAITING
    // wait for it; one more is refused.
    gate.set_closed(true);
    let mut calls: FuturesUnordered<_> = (0..WAITING + 2)
        .map(|i| {
            let id = format!("x{i}");
            let raft = &a.raft;
            async move {
                let r = raft
                    .add_nonvoter(NodeId::new(&id), addr(&id), LogIndex::ZERO, T)
                    .await;
                (id, r)
            }
        })
        .collect();
    let (refused, first) = calls.next().await.expect("one call answers");
    assert!(
        matches!(first, Err(RaftError::ConfigChangeInProgress)),
        "with one change in flight and {WAITING} waiting, {refused} is refused at once: {first:?}"
    );
    gate.set_closed(false);
    let mut indexes = Vec::new();
    while let Some((id, r)) = calls.next().await {
        indexes.push(r.unwrap_or_else(|e| panic!("adding {id} after waiting its turn: {e}")));
    }
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), WAITING + 1, "each change has its own entry");
    let (_, configuration) = a.raft.get_configuration().await.expect("configuration");
    let nonvoters = configuration
        .servers
        .iter()
        .filter(|s| !configuration.is_voter(&s.id))
        .count();
    assert_eq!(nonvoters, WAITING + 1, "{configuration:?}");
    assert!(configuration.server(&NodeId::new(&refused)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_stops_the_node_without_acknowledging() {
    let net = InmemNetwork::new(5);
    let stored = MemLogStore::new();
    // Every append after the first three fails.
    let ok = AtomicU64::new(3);
    let log = HookedLog {
        inner: stored.clone(),
        hook: move || match ok
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Ok(()),
            Err(_) => Err(StorageError::io(
                "appending",
                "test-disk",
                std::io::Error::other("injected failure"),
            )),
        },
    };
    let a = lone_leader(&net, log).await;
    let mut outcomes = Vec::new();
    for n in 0..5 {
        outcomes.push(a.raft.apply(Bytes::from(n.to_string()), T).await);
    }
    // Every acknowledged command is in the store; the failure is reported.
    let held = stored
        .get(LogIndex(1), LogIndex(100))
        .expect("read the store");
    for (n, outcome) in outcomes.iter().enumerate() {
        if outcome.is_ok() {
            let data = Bytes::from(n.to_string());
            let durable = held
                .iter()
                .any(|e| e.payload == raftkit::EntryPayload::Command(data.clone()));
            assert!(
                durable,
                "write {n} was acknowledged but is not in the log store: {outcomes:?}"
            );
        }
    }
    assert!(
        outcomes
            .iter()
            .any(|r| matches!(r, Err(RaftError::Storage(_)))),
        "the storage failure is reported to a caller: {outcomes:?}"
    );
    assert!(
        outcomes.last().is_some_and(|r| r.is_err()),
        "the node accepts nothing after the failure: {outcomes:?}"
    );
    a.raft
        .wait_for_state(RaftState::Shutdown, T)
        .await
        .expect("the node stops on a storage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_answers_with_the_committed_index() {
    let net = InmemNetwork::new(5);
    let nodes = cluster(&net, &["a", "b", "c"], |_| {}).await;
    let l = leader_of(&nodes).await;
    let leader_id = NodeId::new(["a", "b", "c"][l]);
    nodes[l]
        .raft
        .apply(Bytes::from("1"), T)
        .await
        .expect("write");
    // The leader commits its own removal and steps down in the same step;
    // the caller learns the change committed (HashiCorp answers the same).
    let index = nodes[l]
        .raft
        .remove_server(leader_id.clone(), LogIndex::ZERO, T)
        .await
        .expect("removing the leader answers success once the change commits");
    let rest: Vec<&Node> = (0..3).filter(|i| *i != l).map(|i| &nodes[i]).collect();
    let deadline = Instant::now() + T;
    let mut poll = tokio::time::interval(Duration::from_millis(5));
    loop {
        let (at, configuration) = rest[0].raft.get_configuration().await.expect("config");
        if at >= index {
            assert!(
                configuration.server(&leader_id).is_none(),
                "{configuration:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the remaining servers never saw configuration {index:?}"
        );
        poll.tick().await;
    }
    let next = rest
        .iter()
        .position(|n| n.raft.state() == RaftState::Leader);
    let next = match next {
        Some(i) => i,
        None => {
            wait_until("a remaining server leads", || {
                rest.iter().any(|n| n.raft.state() == RaftState::Leader)
            })
            .await;
            rest.iter()
                .position(|n| n.raft.state() == RaftState::Leader)
                .expect("a leader")
        }
    };
    assert_eq!(
        rest[next]
            .raft
            .apply(Bytes::from("2"), T)
            .await
            .expect("write"),
        3
    );
}
