//! The sans-IO core's hot paths with no I/O at all: three voters (`n1`
//! leading `n2` and `n3`) stepped in memory by a small synchronous driver
//! that acknowledges every write and every apply at once. Commands are a
//! 16-byte key + 256-byte value, as in `cluster.rs`.
//!
//! - `core/propose_ready/{1,64}`: the leader proposes N commands, then the
//!   ready/step loop runs across the three cores (appends out, acks back,
//!   the new commit index out to the followers and acked) until nothing is
//!   left to do; the N must then be committed and applied on the leader.
//!   Throughput in commands.
//! - `core/follower_append/{1,64}`: a follower steps one AppendEntries of N
//!   commands, takes its `Ready`, acknowledges the write (`on_persisted`) and
//!   the apply of what the request's commit index committed (`on_applied`).
//!   Throughput in commands.
//! - `core/heartbeat_round`: the leader's heartbeat tick, its two heartbeats
//!   stepped by the followers and their two answers stepped by the leader.
//!
//! Commands and messages are built, and the logs compacted, outside the
//! timed part; every benchmark checks that the work it timed happened.
//!
//! `cargo bench -p raftkit --bench core` (add `-- --quick` for a short run)

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkit::core::RestoredState;
use raftkit::message::{AppendEntriesRequest, AppendEntriesResponse};
use raftkit::{
    Config, Configuration, Core, Entry, EntryPayload, HardState, LogIndex, Message, MessageBody,
    NodeId, RaftState, Server, ServerAddress, SnapshotId, SnapshotMeta, Term,
};

const IDS: [&str; 3] = ["n1", "n2", "n3"];
const LEADER: usize = 0;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 256;
/// Timed iterations between two (untimed) log compactions; bounds the
/// memory the in-memory logs hold however long criterion runs.
const CHUNK: u64 = 256;

/// A command: an 8-byte client id and an 8-byte sequence number as the key,
/// then the value.
fn command(seq: u64) -> Bytes {
    let mut cmd = Vec::with_capacity(KEY_BYTES + VALUE_BYTES);
    cmd.extend_from_slice(&1u64.to_be_bytes());
    cmd.extend_from_slice(&seq.to_be_bytes());
    cmd.resize(KEY_BYTES + VALUE_BYTES, b'v');
    Bytes::from(cmd)
}

fn configuration() -> Configuration {
    Configuration::new(IDS.iter().map(|id| Server::voter(*id, *id)).collect())
}

/// A server of the three restored from storage at `term`, its log holding
/// the configuration at 1@1.
fn restored_core(id: &str, term: u64, vote: Option<&str>) -> Core {
    let config = Config {
        local_id: NodeId::new(id),
        ..Config::default()
    }
    .validate()
    .expect("default config is valid");
    let restored = RestoredState {
        hard_state: HardState {
            term: Term(term),
            vote: vote.map(NodeId::new),
        },
        snapshot: None,
        entries: vec![Entry {
            index: LogIndex(1),
            term: Term(1),
            payload: EntryPayload::Configuration(configuration()),
        }],
    };
    let seed = id
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Core::new(
        config,
        NodeId::new(id),
        ServerAddress::new(id),
        restored,
        seed,
    )
    .expect("a one-entry log restores")
}

/// A snapshot of everything `core` has applied, as a driver reports it
/// once the FSM is saved.
fn snapshot_of(core: &Core) -> SnapshotMeta {
    let index = core.status().applied_index;
    let term = core
        .log_term(index)
        .expect("the applied entry is in the log");
    let (configuration_index, configuration) = core.configuration_at(index);
    SnapshotMeta {
        id: SnapshotId::for_point(term, index, 0),
        index,
        term,
        configuration,
        configuration_index,
        size: 0,
        checksum: 0,
    }
}

/// Performs every `Ready` of `core` the way a driver with instant storage
/// and FSM does: messages into `outbox`, writes and applies acknowledged at
/// once, snapshots created at once. Returns how many entries it applied.
fn drive(core: &mut Core, outbox: &mut VecDeque<Message>) -> u64 {
    let mut applied = 0;
    for _ in 0..100 {
        if !core.has_ready() {
            return applied;
        }
        let r = core.ready();
        if r.is_empty() {
            return applied;
        }
        assert!(
            r.install_snapshot.is_none() && r.send_snapshots.is_empty(),
            "{}: no server here falls behind the log, yet a snapshot moves",
            core.id()
        );
        let persisted = r.persisted_upto();
        outbox.extend(r.messages);
        if let Some((index, term)) = persisted {
            core.on_persisted(index, term);
        }
        outbox.extend(r.messages_after_persist);
        if let Some(last) = r.committed.last() {
            core.on_applied(last.index);
        }
        applied += r.committed.len() as u64;
        if r.create_snapshot {
            let meta = snapshot_of(core);
            core.on_snapshot_created(meta);
        }
    }
    panic!("{}: ready() did not quiesce in 100 rounds", core.id());
}

/// Three cores exchanging messages synchronously, in FIFO order.
struct Cluster {
    cores: Vec<Core>,
    queue: VecDeque<Message>,
    /// Entries each core has applied.
    applied: [u64; 3],
    /// Messages delivered.
    delivered: u64,
}

impl Cluster {
    /// `n1` elected leader of the three, its no-op committed everywhere.
    fn elected() -> Cluster {
        let cores = IDS.iter().map(|id| restored_core(id, 1, None)).collect();
        let mut cluster = Cluster {
            cores,
            queue: VecDeque::new(),
            applied: [0; 3],
            delivered: 0,
        };
        // Only n1 ticks, so only n1 campaigns.
        for _ in 0..1000 {
            if cluster.cores[LEADER].state() != RaftState::Follower {
                break;
            }
            cluster.cores[LEADER].tick();
        }
        cluster.settle();
        assert_eq!(cluster.cores[LEADER].state(), RaftState::Leader);
        // A tick on the leader sends the no-op's commit to the followers.
        cluster.cores[LEADER].tick();
        cluster.settle();
        for core in &cluster.cores {
            let s = core.status();
            assert_eq!(
                (s.commit_index, s.applied_index),
                (LogIndex(2), LogIndex(2)),
                "{}: the leader's no-op is not committed and applied",
                s.id
            );
        }
        cluster
    }

    /// Drives every core and delivers every message until no core has
    /// anything left to do.
    fn settle(&mut self) {
        for _ in 0..1000 {
            for (i, core) in self.cores.iter_mut().enumerate() {
                self.applied[i] += drive(core, &mut self.queue);
            }
            if self.queue.is_empty() {
                return;
            }
            while let Some(m) = self.queue.pop_front() {
                let to = IDS
                    .iter()
                    .position(|id| m.to.as_str() == *id)
                    .expect("messages go to one of the three");
                self.cores[to].step(m).expect("addressed to this core");
                self.delivered += 1;
            }
        }
        panic!("the cluster did not settle in 1000 rounds");
    }

    /// Snapshots every core and compacts its log.
    fn compact(&mut self) {
        for core in &mut self.cores {
            core.request_snapshot();
        }
        self.settle();
    }
}

fn propose_ready(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    for n in [1u64, 64] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("propose_ready", n), &n, |b, &n| {
            let mut cluster = Cluster::elected();
            let mut seq = 0;
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let rounds = (iters - done).min(CHUNK);
                    let cmds: Vec<Bytes> = (0..rounds * n)
                        .map(|_| {
                            seq += 1;
                            command(seq)
                        })
                        .collect();
                    let mut cmds = cmds.into_iter();
                    let first = cluster.cores[LEADER].status().last_log_index.0 + 1;
                    let applied = cluster.applied;
                    let started = Instant::now();
                    for round in 1..=rounds {
                        for cmd in cmds.by_ref().take(n as usize) {
                            cluster.cores[LEADER].propose(cmd).expect("n1 leads");
                        }
                        cluster.settle();
                        assert_eq!(
                            cluster.applied[LEADER] - applied[LEADER],
                            round * n,
                            "the leader has not applied the round's {n} commands"
                        );
                    }
                    timed += started.elapsed();
                    // Every follower holds and applied them too.
                    let last = LogIndex(first + rounds * n - 1);
                    for core in &cluster.cores {
                        let s = core.status();
                        assert_eq!((s.commit_index, s.applied_index), (last, last), "{}", s.id);
                    }
                    cluster.compact();
                    done += rounds;
                }
                timed
            });
        });
    }
    group.finish();
}

/// An AppendEntries from `n1` at term 2 carrying `cmds` after `prev`, with
/// the commit index at `prev`.
fn append_request(prev: LogIndex, prev_term: Term, cmds: Vec<Bytes>, round: u64) -> Message {
    let entries = cmds
        .into_iter()
        .enumerate()
        .map(|(i, cmd)| Entry::command(LogIndex(prev.0 + 1 + i as u64), Term(2), cmd))
        .collect();
    Message {
        from: NodeId::new("n1"),
        from_addr: ServerAddress::new("n1"),
        to: NodeId::new("n2"),
        term: Term(2),
        body: MessageBody::AppendEntriesRequest(AppendEntriesRequest {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: prev,
            round,
        }),
    }
}

fn follower_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    for n in [1u64, 64] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("follower_append", n), &n, |b, &n| {
            // n2 voted for n1 in term 2; n1's appends start after 1@1.
            let mut follower = restored_core("n2", 2, Some("n1"));
            let mut last = (LogIndex(1), Term(1));
            let mut seq = 0;
            let mut discard = VecDeque::new();
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let rounds = (iters - done).min(CHUNK);
                    let mut requests = Vec::with_capacity(rounds as usize);
                    for _ in 0..rounds {
                        let cmds = (0..n)
                            .map(|_| {
                                seq += 1;
                                command(seq)
                            })
                            .collect();
                        requests.push(append_request(last.0, last.1, cmds, seq));
                        last = (LogIndex(last.0 .0 + n), Term(2));
                    }
                    let started = Instant::now();
                    for req in requests {
                        follower.step(req).expect("addressed to n2");
                        let r = follower.ready();
                        let (index, term) = r.persisted_upto().expect("entries to write");
                        follower.on_persisted(index, term);
                        if let Some(applied) = r.committed.last() {
                            follower.on_applied(applied.index);
                        }
                        let ok = matches!(
                            r.messages_after_persist.as_slice(),
                            [Message {
                                body: MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                                    success: true,
                                    index: acked,
                                    ..
                                }),
                                ..
                            }] if *acked == index
                        );
                        assert!(
                            ok && r.entries.len() == n as usize,
                            "the follower did not take {n} entries up to {index}: {r:?}"
                        );
                    }
                    timed += started.elapsed();
                    let s = follower.status();
                    assert_eq!(
                        (s.last_log_index, s.persisted_index),
                        (last.0, last.0),
                        "the follower's log does not end at the last entry sent"
                    );
                    assert_eq!(
                        s.applied_index,
                        LogIndex(last.0 .0 - n),
                        "the follower has not applied up to the last commit index sent"
                    );
                    follower.request_snapshot();
                    drive(&mut follower, &mut discard);
                    discard.clear();
                    done += rounds;
                }
                timed
            });
        });
    }
    group.finish();
}

fn heartbeat_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.bench_function("heartbeat_round", |b| {
        let mut cluster = Cluster::elected();
        b.iter_custom(|iters| {
            let delivered = cluster.delivered;
            let started = Instant::now();
            for round in 1..=iters {
                cluster.cores[LEADER].tick();
                cluster.settle();
                // Two heartbeats out, two answers back.
                assert_eq!(
                    cluster.delivered - delivered,
                    4 * round,
                    "a heartbeat round is not four messages"
                );
            }
            let timed = started.elapsed();
            // Check-quorum would have deposed a leader whose answers did
            // not count (it steps down after a lease of ticks without them).
            assert_eq!(cluster.cores[LEADER].state(), RaftState::Leader);
            timed
        });
    });
    group.finish();
}

criterion_group!(benches, propose_ready, follower_append, heartbeat_round);
criterion_main!(benches);
