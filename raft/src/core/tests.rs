//! The paper's rules, one test each: build a core's state directly (restored
//! log, term and vote), feed it one event, and assert the exact actions it
//! emits. Section numbers cite the Raft paper (Ongaro & Ousterhout 2014);
//! "thesis" cites Ongaro's 2014 dissertation.
//!
//! Default config in ticks: heartbeat every tick, follower election timeout
//! randomized in [10, 20), lease 4 ticks, check-quorum after 5 ticks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::{
    ConfChange, Core, Event, ProposeError, RaftState, ReadId, ReadState, Ready, RestoreError,
    RestoredState, SnapshotSend,
};
use crate::config::{Config, ValidConfig};
use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, Message, MessageBody,
    RequestVoteRequest, RequestVoteResponse,
};
use crate::storage::{HardState, SnapshotId, SnapshotMeta};
use crate::types::{
    Configuration, Entry, EntryPayload, LogIndex, NodeId, Server, ServerAddress, Term,
};

// ---------------------------------------------------------------- harness --

/// The core takes its id from `Core::new`; `local_id` only has to be set.
fn base_config() -> Config {
    Config {
        local_id: NodeId::new("test"),
        ..Config::default()
    }
}

fn cfg() -> ValidConfig {
    base_config().validate().expect("default config is valid")
}

fn cfg_with(f: impl FnOnce(&mut Config)) -> ValidConfig {
    let mut c = base_config();
    f(&mut c);
    c.validate().expect("test config is valid")
}

fn nid(id: &str) -> NodeId {
    NodeId::new(id)
}

/// A fixed seed per server name, so every run draws the same timeouts.
fn seed(id: &str) -> u64 {
    id.bytes()
        .fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

fn conf(voters: &[&str], nonvoters: &[&str]) -> Configuration {
    let mut servers: Vec<Server> = voters.iter().map(|v| Server::voter(*v, *v)).collect();
    servers.extend(nonvoters.iter().map(|n| Server::nonvoter(*n, *n)));
    Configuration::new(servers)
}

/// A command entry whose payload names its position, so logs compare by value.
fn ent(index: u64, term: u64) -> Entry {
    Entry::command(
        LogIndex(index),
        Term(term),
        Bytes::from(format!("{index}@{term}")),
    )
}

/// A core restored from storage: `log_terms[i]` is the term of index `i + 1`;
/// index 1 holds `configuration`, later indexes hold commands.
fn restore_with(
    cfg: ValidConfig,
    id: &str,
    configuration: &Configuration,
    term: u64,
    vote: Option<&str>,
    log_terms: &[u64],
) -> Core {
    let entries = log_terms
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let index = i as u64 + 1;
            if index == 1 {
                Entry {
                    index: LogIndex(1),
                    term: Term(*t),
                    payload: EntryPayload::Configuration(configuration.clone()),
                }
            } else {
                ent(index, *t)
            }
        })
        .collect();
    let restored = RestoredState {
        hard_state: HardState {
            term: Term(term),
            vote: vote.map(nid),
        },
        snapshot: None,
        entries,
    };
    Core::new(cfg, nid(id), ServerAddress::new(id), restored, seed(id)).expect("restorable state")
}

fn restore(
    id: &str,
    configuration: &Configuration,
    term: u64,
    vote: Option<&str>,
    log_terms: &[u64],
) -> Core {
    restore_with(cfg(), id, configuration, term, vote, log_terms)
}

/// A fresh server of a cluster of `voters`: term 1, the configuration at 1@1.
fn node(id: &str, voters: &[&str]) -> Core {
    restore(id, &conf(voters, &[]), 1, None, &[1])
}

fn msg(from: &str, to: &str, term: u64, body: MessageBody) -> Message {
    Message {
        from: nid(from),
        from_addr: ServerAddress::new(from),
        to: nid(to),
        term: Term(term),
        body,
    }
}

/// AppendEntries carrying command entries `(index, term)` (a heartbeat if none), round 0.
fn append(
    from: &str,
    to: &str,
    term: u64,
    prev: (u64, u64),
    entries: &[(u64, u64)],
    commit: u64,
) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendEntriesRequest(AppendEntriesRequest {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries: entries.iter().map(|(i, t)| ent(*i, *t)).collect(),
            leader_commit: LogIndex(commit),
            round: 0,
        }),
    )
}

/// A successful AppendEntries response: `from` holds the leader's log up to `index`.
fn ack(from: &str, to: &str, term: u64, index: u64, round: u64) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendEntriesResponse(AppendEntriesResponse {
            success: true,
            index: LogIndex(index),
            hint: None,
            round,
        }),
    )
}

fn vote(
    from: &str,
    to: &str,
    term: u64,
    last: (u64, u64),
    pre_vote: bool,
    leadership_transfer: bool,
) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::RequestVoteRequest(RequestVoteRequest {
            last_log_index: LogIndex(last.0),
            last_log_term: Term(last.1),
            pre_vote,
            leadership_transfer,
        }),
    )
}

/// The granted answer to a (pre-)vote request, in the request's term.
fn grant(req: &Message) -> Message {
    let MessageBody::RequestVoteRequest(r) = &req.body else {
        panic!("not a vote request: {req:?}")
    };
    Message {
        from: req.to.clone(),
        from_addr: ServerAddress::new(req.to.as_str()),
        to: req.from.clone(),
        term: req.term,
        body: MessageBody::RequestVoteResponse(RequestVoteResponse {
            granted: true,
            pre_vote: r.pre_vote,
        }),
    }
}

fn snapshot_meta(index: u64, term: u64, configuration: Configuration) -> SnapshotMeta {
    SnapshotMeta {
        id: SnapshotId::for_point(Term(term), LogIndex(index), 0),
        index: LogIndex(index),
        term: Term(term),
        configuration,
        configuration_index: LogIndex(1),
        size: 0,
        checksum: 0,
    }
}

fn entries_text(entries: &[Entry]) -> String {
    let parts: Vec<String> = entries
        .iter()
        .map(|e| format!("{}@{}", e.index, e.term))
        .collect();
    format!("[{}]", parts.join(","))
}

/// One line per message, for exact assertions.
fn show(m: &Message) -> String {
    let head = format!("{}->{} t{}", m.from, m.to, m.term);
    match &m.body {
        MessageBody::AppendEntriesRequest(r) => format!(
            "{head} App prev={}@{} ents={} commit={} round={}",
            r.prev_log_index,
            r.prev_log_term,
            entries_text(&r.entries),
            r.leader_commit,
            r.round
        ),
        MessageBody::AppendEntriesResponse(r) if r.success => {
            format!("{head} AppResp ok idx={} round={}", r.index, r.round)
        }
        MessageBody::AppendEntriesResponse(r) => {
            let hint = r
                .hint
                .map_or("none".to_owned(), |(i, t)| format!("{i}@{t}"));
            format!(
                "{head} AppResp reject idx={} hint={hint} round={}",
                r.index, r.round
            )
        }
        MessageBody::RequestVoteRequest(r) => format!(
            "{head} {} last={}@{}{}",
            if r.pre_vote { "PreVote" } else { "Vote" },
            r.last_log_index,
            r.last_log_term,
            if r.leadership_transfer {
                " transfer"
            } else {
                ""
            }
        ),
        MessageBody::RequestVoteResponse(r) => format!(
            "{head} {} {}",
            if r.pre_vote {
                "PreVoteResp"
            } else {
                "VoteResp"
            },
            if r.granted { "granted" } else { "rejected" }
        ),
        MessageBody::InstallSnapshotRequest(r) => {
            format!("{head} Snap {}@{}", r.meta.index, r.meta.term)
        }
        MessageBody::InstallSnapshotResponse(r) => {
            format!(
                "{head} SnapResp {} idx={}",
                if r.success { "ok" } else { "fail" },
                r.index
            )
        }
        MessageBody::TimeoutNow => format!("{head} TimeoutNow"),
    }
}

fn shows(ms: &[Message]) -> Vec<String> {
    ms.iter().map(show).collect()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index.0).collect()
}

fn log_of(core: &Core) -> Vec<(u64, u64)> {
    core.log_entries().map(|e| (e.index.0, e.term.0)).collect()
}

fn round_of(m: &Message) -> u64 {
    match &m.body {
        MessageBody::AppendEntriesRequest(r) => r.round,
        other => panic!("not an AppendEntries request: {other:?}"),
    }
}

/// Everything a core emitted over one or more `Ready`s.
#[derive(Debug, Default)]
struct Out {
    hard_states: Vec<HardState>,
    install_snapshot: Vec<SnapshotMeta>,
    truncate_from: Vec<LogIndex>,
    entries: Vec<Entry>,
    messages: Vec<Message>,
    after_persist: Vec<Message>,
    committed: Vec<Entry>,
    reads: Vec<ReadState>,
    aborted_reads: Vec<ReadId>,
    send_snapshots: Vec<SnapshotSend>,
    purge_upto: Vec<LogIndex>,
    events: Vec<Event>,
}

impl Out {
    fn absorb(&mut self, r: Ready) {
        self.hard_states.extend(r.hard_state);
        self.install_snapshot.extend(r.install_snapshot);
        self.truncate_from.extend(r.truncate_from);
        self.entries.extend(r.entries);
        self.messages.extend(r.messages);
        self.after_persist.extend(r.messages_after_persist);
        self.committed.extend(r.committed);
        self.reads.extend(r.reads);
        self.aborted_reads.extend(r.aborted_reads);
        self.send_snapshots.extend(r.send_snapshots);
        self.purge_upto.extend(r.purge_upto);
        self.events.extend(r.events);
    }

    /// Every message, those sendable at once first.
    fn all_messages(&self) -> Vec<Message> {
        self.messages
            .iter()
            .chain(&self.after_persist)
            .cloned()
            .collect()
    }
}

/// Performs every `Ready` the core has: persistence is acknowledged with
/// `on_persisted(persisted_upto)` and committed entries with `on_applied`.
///
/// Stops at an empty `Ready` even if `has_ready()` still says true (see
/// `has_ready_is_false_after_ready_with_a_silent_follower`).
fn drain(core: &mut Core) -> Out {
    let mut out = Out::default();
    for _ in 0..100 {
        if !core.has_ready() {
            return out;
        }
        let r = core.ready();
        if r.is_empty() {
            return out;
        }
        if let Some((index, term)) = r.persisted_upto() {
            core.on_persisted(index, term);
        }
        if let Some(last) = r.committed.last() {
            core.on_applied(last.index);
        }
        out.absorb(r);
    }
    panic!("{}: ready() did not quiesce in 100 rounds", core.id());
}

/// Ticks `core` until it leaves the follower state, then grants every vote
/// and pre-vote it asks for until it leads. Returns the leader's first output.
fn elect(core: &mut Core) -> Out {
    for _ in 0..40 {
        if core.state() != RaftState::Follower {
            break;
        }
        core.tick();
    }
    assert_ne!(
        core.state(),
        RaftState::Follower,
        "{} never campaigned",
        core.id()
    );
    for _ in 0..4 {
        let out = drain(core);
        if core.state() == RaftState::Leader {
            return out;
        }
        let requests: Vec<Message> = out
            .after_persist
            .iter()
            .filter(|m| matches!(m.body, MessageBody::RequestVoteRequest(_)))
            .cloned()
            .collect();
        assert!(
            !requests.is_empty(),
            "{} is {} and asks for no votes",
            core.id(),
            core.state()
        );
        for req in &requests {
            core.step(grant(req)).unwrap();
        }
    }
    panic!("{} did not become leader", core.id());
}

/// `a` leading `a, b, c` at term 2, its no-op 2@2 sent but not yet acknowledged.
fn elected_abc() -> (Core, Out) {
    let mut a = node("a", &["a", "b", "c"]);
    let out = elect(&mut a);
    assert_eq!((a.state(), a.term()), (RaftState::Leader, Term(2)));
    (a, out)
}

/// `a` leading `a, b, c` at term 2 with its no-op committed; b and c hold it
/// (they acknowledged round 0) and nothing is left to do.
fn leader_abc() -> Core {
    let (mut a, _) = elected_abc();
    a.step(ack("b", "a", 2, 2, 0)).unwrap();
    a.step(ack("c", "a", 2, 2, 0)).unwrap();
    let out = drain(&mut a);
    assert_eq!(indexes(&out.committed), [1, 2]);
    assert_eq!(a.status().commit_index, LogIndex(2));
    a
}

/// A few cores that deliver messages to each other synchronously, in FIFO
/// order, dropping those to or from an isolated server.
struct Cluster {
    cores: BTreeMap<String, Core>,
    queue: VecDeque<Message>,
    isolated: BTreeSet<String>,
    /// Every message delivered, in order.
    delivered: Vec<Message>,
    /// What each core emitted since the test last took it.
    outs: BTreeMap<String, Out>,
}

impl Cluster {
    fn new(cores: Vec<Core>) -> Cluster {
        let cores: BTreeMap<String, Core> =
            cores.into_iter().map(|c| (c.id().to_string(), c)).collect();
        let outs = cores.keys().map(|k| (k.clone(), Out::default())).collect();
        Cluster {
            cores,
            queue: VecDeque::new(),
            isolated: BTreeSet::new(),
            delivered: Vec::new(),
            outs,
        }
    }

    fn of(voters: &[&str]) -> Cluster {
        Cluster::new(voters.iter().map(|v| node(v, voters)).collect())
    }

    fn core(&self, id: &str) -> &Core {
        &self.cores[id]
    }

    fn core_mut(&mut self, id: &str) -> &mut Core {
        self.cores.get_mut(id).expect("known server")
    }

    fn take_out(&mut self, id: &str) -> Out {
        std::mem::take(self.outs.get_mut(id).expect("known server"))
    }

    /// Drains every core, queueing its messages (and its snapshot sends as
    /// InstallSnapshot requests, as the driver does once the data is streamed).
    fn flush(&mut self) {
        for (id, core) in &mut self.cores {
            let out = drain(core);
            self.queue.extend(out.all_messages());
            for s in &out.send_snapshots {
                self.queue.push_back(Message {
                    from: nid(id),
                    from_addr: ServerAddress::new(id),
                    to: s.to.clone(),
                    term: s.term,
                    body: MessageBody::InstallSnapshotRequest(InstallSnapshotRequest {
                        meta: s.meta.clone(),
                    }),
                });
            }
            let acc = self.outs.get_mut(id).expect("known server");
            acc.hard_states.extend(out.hard_states);
            acc.install_snapshot.extend(out.install_snapshot);
            acc.truncate_from.extend(out.truncate_from);
            acc.entries.extend(out.entries);
            acc.messages.extend(out.messages);
            acc.after_persist.extend(out.after_persist);
            acc.committed.extend(out.committed);
            acc.reads.extend(out.reads);
            acc.aborted_reads.extend(out.aborted_reads);
            acc.send_snapshots.extend(out.send_snapshots);
            acc.purge_upto.extend(out.purge_upto);
            acc.events.extend(out.events);
        }
    }

    /// Delivers messages until none is left and no leader has a commit
    /// index to announce (the driver's `commit_timeout` firing).
    fn stabilize(&mut self) {
        self.deliver(true);
    }

    /// Delivers messages until none is left; with `announce`, also until no
    /// leader has a commit index to announce.
    fn deliver(&mut self, announce: bool) {
        for _ in 0..10_000 {
            self.flush();
            let Some(m) = self.queue.pop_front() else {
                if announce && self.announce_commits() {
                    continue;
                }
                return;
            };
            if self.isolated.contains(m.from.as_str()) || self.isolated.contains(m.to.as_str()) {
                continue;
            }
            self.delivered.push(m.clone());
            let to = m.to.to_string();
            self.core_mut(&to).step(m).unwrap();
        }
        panic!("the cluster did not settle in 10000 messages");
    }

    /// Asks every leader with an unannounced commit index to send it, as
    /// the driver does once `commit_timeout` passes. Whether any had one.
    fn announce_commits(&mut self) -> bool {
        let mut any = false;
        for core in self.cores.values_mut() {
            if core.commit_unannounced() {
                core.announce_commit();
                any = true;
            }
        }
        any
    }

    /// One tick on each of `ids`, then settle.
    fn tick(&mut self, ids: &[&str]) {
        for id in ids {
            self.core_mut(id).tick();
        }
        self.stabilize();
    }

    /// Ticks `id` alone until it campaigns, then settles; it must win.
    fn elect(&mut self, id: &str) {
        for _ in 0..40 {
            if self.core(id).state() != RaftState::Follower {
                break;
            }
            self.core_mut(id).tick();
        }
        self.stabilize();
        assert_eq!(self.core(id).state(), RaftState::Leader, "{id} did not win");
    }

    fn delivered_shows(&self) -> Vec<String> {
        shows(&self.delivered)
    }
}

// ------------------------------------------------------------- elections --

/// §5.4.1 election restriction: a vote goes only to a candidate whose log is
/// at least as up to date (compare last terms, then lengths).
#[test]
fn vote_requires_candidate_log_at_least_as_up_to_date() {
    // The voter's log: 1@1 2@1 3@2, term 2.
    let cases = [
        ("lower last term, longer log", (9, 1), false),
        ("same last term, shorter log", (2, 2), false),
        ("same last term, same length", (3, 2), true),
        ("same last term, longer log", (4, 2), true),
        ("higher last term, shorter log", (1, 3), true),
    ];
    for (name, last, granted) in cases {
        let mut v = restore("v", &conf(&["v", "c", "x"], &[]), 2, None, &[1, 1, 2]);
        v.step(vote("c", "v", 3, last, false, false)).unwrap();
        let out = drain(&mut v);
        let verdict = if granted { "granted" } else { "rejected" };
        assert!(out.messages.is_empty(), "case {name}");
        assert_eq!(
            shows(&out.after_persist),
            [format!("v->c t3 VoteResp {verdict}")],
            "case {name}"
        );
        let want_vote = granted.then(|| nid("c"));
        assert_eq!(
            out.hard_states,
            [HardState {
                term: Term(3),
                vote: want_vote.clone()
            }],
            "case {name}"
        );
        assert_eq!(v.status().vote, want_vote, "case {name}");
    }
}

/// §5.2 / Figure 2 RequestVote: at most one vote per term, first come first
/// served; the candidate voted for may ask again and is granted again.
#[test]
fn one_vote_per_term() {
    let mut v = restore("v", &conf(&["v", "b", "c"], &[]), 2, None, &[1]);
    v.step(vote("b", "v", 3, (1, 1), false, false)).unwrap();
    let first = drain(&mut v);
    assert_eq!(shows(&first.after_persist), ["v->b t3 VoteResp granted"]);
    assert_eq!(
        first.hard_states,
        [HardState {
            term: Term(3),
            vote: Some(nid("b"))
        }]
    );

    v.step(vote("c", "v", 3, (1, 1), false, false)).unwrap();
    let second = drain(&mut v);
    assert_eq!(shows(&second.after_persist), ["v->c t3 VoteResp rejected"]);
    assert!(
        second.hard_states.is_empty(),
        "a rejection changes no durable state"
    );
    assert_eq!(v.status().vote, Some(nid("b")));

    v.step(vote("b", "v", 3, (1, 1), false, false)).unwrap();
    let third = drain(&mut v);
    assert_eq!(shows(&third.after_persist), ["v->b t3 VoteResp granted"]);
    assert_eq!(
        (v.status().term, v.status().vote),
        (Term(3), Some(nid("b")))
    );
}

/// Figure 2 "Persistent state ... updated on stable storage before responding
/// to RPCs": vote grants, append acknowledgements and a candidate's own vote
/// requests go out only in `messages_after_persist`, in the same `Ready` as
/// the writes they promise.
#[test]
fn votes_and_acks_wait_for_persistence() {
    // A vote grant.
    let mut v = restore("v", &conf(&["v", "c", "x"], &[]), 2, None, &[1]);
    v.step(vote("c", "v", 3, (1, 1), false, false)).unwrap();
    let r = v.ready();
    assert_eq!(
        r.hard_state,
        Some(HardState {
            term: Term(3),
            vote: Some(nid("c"))
        })
    );
    assert!(r.messages.is_empty());
    assert_eq!(
        shows(&r.messages_after_persist),
        ["v->c t3 VoteResp granted"]
    );

    // An append acknowledgement.
    let mut f = restore("f", &conf(&["a", "f", "x"], &[]), 2, None, &[1]);
    f.step(append("a", "f", 2, (1, 1), &[(2, 2)], 0)).unwrap();
    let r = f.ready();
    assert_eq!(entries_text(&r.entries), "[2@2]");
    assert!(r.messages.is_empty());
    assert_eq!(
        shows(&r.messages_after_persist),
        ["f->a t2 AppResp ok idx=2 round=0"]
    );

    // A candidate's own vote (without pre-vote, so that it votes at once).
    let mut c = restore_with(
        cfg_with(|c| c.pre_vote = false),
        "c",
        &conf(&["c", "a", "b"], &[]),
        1,
        None,
        &[1],
    );
    while c.state() == RaftState::Follower {
        c.tick();
    }
    let r = c.ready();
    assert_eq!(
        r.hard_state,
        Some(HardState {
            term: Term(2),
            vote: Some(nid("c"))
        })
    );
    assert!(r.messages.is_empty());
    assert_eq!(
        shows(&r.messages_after_persist),
        ["c->a t2 Vote last=1@1", "c->b t2 Vote last=1@1"]
    );
}

/// Thesis §9.6 pre-vote: a server partitioned away keeps its term (its
/// pre-votes fail), and when it rejoins its pre-votes are ignored by servers
/// that hear from the leader, so the cluster's term does not move. Without
/// pre-vote the same partition raises the isolated server's term.
#[test]
fn prevote_rejoin_does_not_disrupt_leader() {
    let mut cluster = Cluster::of(&["a", "b", "c"]);
    cluster.elect("a");
    assert_eq!(cluster.core("a").term(), Term(2));
    cluster.isolated.insert("c".into());
    for _ in 0..60 {
        cluster.tick(&["a", "b", "c"]);
        assert_eq!(
            cluster.core("c").term(),
            Term(2),
            "a pre-vote must not raise the term"
        );
    }
    assert_ne!(
        cluster.core("c").state(),
        RaftState::Follower,
        "c should be pre-campaigning"
    );
    cluster.isolated.clear();
    cluster.delivered.clear();
    // Only c ticks until its pre-vote reaches a and b, who heard from a leader.
    for _ in 0..40 {
        cluster.tick(&["c"]);
        if !cluster.delivered.is_empty() {
            break;
        }
    }
    assert_eq!(
        cluster.delivered_shows(),
        ["c->a t3 PreVote last=2@2", "c->b t3 PreVote last=2@2"]
    );
    for _ in 0..30 {
        cluster.tick(&["a", "b", "c"]);
    }
    for id in ["a", "b", "c"] {
        assert_eq!(cluster.core(id).term(), Term(2), "term of {id}");
        assert_eq!(
            cluster.core(id).leader(),
            Some(&nid("a")),
            "leader known by {id}"
        );
    }
    assert_eq!(cluster.core("a").state(), RaftState::Leader);

    // Control: without pre-vote the isolated server's term climbs.
    let no_prevote = |id: &str| {
        restore_with(
            cfg_with(|c| c.pre_vote = false),
            id,
            &conf(&["a", "b", "c"], &[]),
            1,
            None,
            &[1],
        )
    };
    let mut cluster = Cluster::new(vec![no_prevote("a"), no_prevote("b"), no_prevote("c")]);
    cluster.elect("a");
    cluster.isolated.insert("c".into());
    for _ in 0..60 {
        cluster.tick(&["a", "b", "c"]);
    }
    assert!(
        cluster.core("c").term() > Term(2),
        "control: without pre-vote the term must climb"
    );
}

/// Thesis §4.2.3 (leader stickiness, as with check-quorum in etcd): a server
/// that heard from a leader within the minimum election timeout ignores
/// votes and pre-votes for a later term, unless the request comes from a
/// leadership transfer.
#[test]
fn follower_with_recent_leader_ignores_vote_requests() {
    struct Case {
        name: &'static str,
        pre_vote: bool,
        transfer: bool,
        ticks: u32,
        want: &'static [&'static str],
        want_term: u64,
    }
    let cases = [
        Case {
            name: "vote, just heard",
            pre_vote: false,
            transfer: false,
            ticks: 0,
            want: &[],
            want_term: 2,
        },
        Case {
            name: "pre-vote, just heard",
            pre_vote: true,
            transfer: false,
            ticks: 0,
            want: &[],
            want_term: 2,
        },
        Case {
            name: "vote, 9 ticks later",
            pre_vote: false,
            transfer: false,
            ticks: 9,
            want: &[],
            want_term: 2,
        },
        Case {
            name: "transfer vote, just heard",
            pre_vote: false,
            transfer: true,
            ticks: 0,
            want: &["b->c t3 VoteResp granted"],
            want_term: 3,
        },
        Case {
            name: "vote, 10 ticks later",
            pre_vote: false,
            transfer: false,
            ticks: 10,
            want: &["b->c t3 VoteResp granted"],
            want_term: 3,
        },
        Case {
            name: "pre-vote, 10 ticks later",
            pre_vote: true,
            transfer: false,
            ticks: 10,
            want: &["b->c t3 PreVoteResp granted"],
            want_term: 2,
        },
    ];
    for case in cases {
        let name = case.name;
        let mut b = node("b", &["a", "b", "c"]);
        b.step(append("a", "b", 2, (1, 1), &[], 0)).unwrap();
        let _ = drain(&mut b);
        for _ in 0..case.ticks {
            b.tick();
        }
        assert_eq!(
            b.state(),
            RaftState::Follower,
            "case {name}: precondition (seeded timeout)"
        );
        assert!(drain(&mut b).all_messages().is_empty(), "case {name}");
        b.step(vote("c", "b", 3, (1, 1), case.pre_vote, case.transfer))
            .unwrap();
        let out = drain(&mut b);
        assert_eq!(shows(&out.all_messages()), case.want, "case {name}");
        assert_eq!(b.term(), Term(case.want_term), "case {name}");
    }
}

/// Thesis §6.2 check-quorum: a leader that hears from no quorum for the
/// lease timeout (5 ticks) steps down, keeping its term.
#[test]
fn leader_without_quorum_contact_steps_down() {
    let mut a = leader_abc();
    for tick in 1..=4 {
        a.tick();
        let out = drain(&mut a);
        assert_eq!(a.state(), RaftState::Leader, "tick {tick}");
        assert!(out.events.is_empty(), "tick {tick}");
    }
    a.tick();
    let out = drain(&mut a);
    assert_eq!(a.state(), RaftState::Follower);
    assert_eq!(
        out.events,
        [
            Event::LeaderChanged(None),
            Event::StateChanged(RaftState::Follower)
        ]
    );
    assert_eq!(a.term(), Term(2));
    assert_eq!(
        a.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader: None })
    );
}

/// The converse of check-quorum: one follower answering every heartbeat is
/// a quorum of three, and the leader keeps leading.
#[test]
fn leader_with_quorum_contact_keeps_leading() {
    let mut a = leader_abc();
    for tick in 1..=20 {
        a.tick();
        let out = drain(&mut a);
        let to_b: Vec<&Message> = out.messages.iter().filter(|m| m.to == nid("b")).collect();
        assert_eq!(to_b.len(), 1, "tick {tick}: one heartbeat to b");
        a.step(ack("b", "a", 2, 2, round_of(to_b[0]))).unwrap();
        assert_eq!(a.state(), RaftState::Leader, "tick {tick}");
    }
}

// ----------------------------------------------------------- replication --

/// §5.4.2 / Figure 8: a leader counts replicas only of entries of its own
/// term. Here 2@2 (an earlier term) is on a majority (a and b), yet commits
/// only with the leader's 3@3.
#[test]
fn leader_commits_only_entries_of_its_term_by_counting() {
    let mut a = restore("a", &conf(&["a", "b", "c"], &[]), 2, None, &[1, 2]);
    let first = elect(&mut a);
    assert_eq!(a.term(), Term(3));
    assert_eq!(entries_text(&first.entries), "[3@3]");

    // b answers a heartbeat at prev 2@2: it holds 2@2, not yet 3@3.
    a.step(ack("b", "a", 3, 2, 0)).unwrap();
    let out = drain(&mut a);
    assert_eq!(
        a.status().commit_index,
        LogIndex(0),
        "2@2 is from an earlier term"
    );
    assert!(out.committed.is_empty());

    a.step(ack("b", "a", 3, 3, 0)).unwrap();
    let out = drain(&mut a);
    assert_eq!(a.status().commit_index, LogIndex(3));
    assert_eq!(indexes(&out.committed), [1, 2, 3]);
}

/// §5.3: "If an existing entry conflicts with a new one (same index but
/// different terms), delete the existing entry and all that follow it."
#[test]
fn follower_truncates_conflicting_uncommitted_entries() {
    let mut f = restore("f", &conf(&["a", "f", "x"], &[]), 2, None, &[1, 1, 2, 2]);
    f.step(append("a", "f", 3, (2, 1), &[(3, 3)], 2)).unwrap();
    let r = f.ready();
    assert_eq!(r.truncate_from, Some(LogIndex(3)));
    assert_eq!(entries_text(&r.entries), "[3@3]");
    assert!(r.messages.is_empty());
    assert_eq!(
        shows(&r.messages_after_persist),
        ["f->a t3 AppResp ok idx=3 round=0"]
    );
    assert_eq!(log_of(&f), [(1, 1), (2, 1), (3, 3)]);
    assert_eq!(f.status().commit_index, LogIndex(2));
}

/// §5.3 consistency check: a follower without an entry matching prev
/// index/term rejects, changes nothing, and hints where its log can still
/// match (the last index whose term is at most the prev term).
#[test]
fn follower_rejects_mismatching_prev_with_hint() {
    // The follower's log: 1@1 2@1 3@2 4@2 5@2.
    let cases = [
        (
            "prev beyond its last index",
            (7, 3),
            "f->a t3 AppResp reject idx=7 hint=5@2 round=0",
        ),
        (
            "prev term differs",
            (5, 3),
            "f->a t3 AppResp reject idx=5 hint=5@2 round=0",
        ),
        (
            "prev term lower, hint skips its term",
            (4, 1),
            "f->a t3 AppResp reject idx=4 hint=2@1 round=0",
        ),
    ];
    for (name, prev, want) in cases {
        let mut f = restore("f", &conf(&["a", "f", "x"], &[]), 2, None, &[1, 1, 2, 2, 2]);
        f.step(append("a", "f", 3, prev, &[(prev.0 + 1, 3)], 0))
            .unwrap();
        let out = drain(&mut f);
        assert!(out.messages.is_empty(), "case {name}");
        assert_eq!(shows(&out.after_persist), [want], "case {name}");
        assert!(
            out.entries.is_empty() && out.truncate_from.is_empty(),
            "case {name}"
        );
        assert_eq!(
            log_of(&f),
            [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)],
            "case {name}"
        );
    }
}

/// §5.3 (with the fast backtracking the paper sketches): the leader moves
/// next_index straight past the follower's conflicting term using the hint,
/// needs one retry instead of one per entry, and the logs converge.
#[test]
fn leader_backtracks_with_hint_and_logs_converge() {
    let voters = conf(&["a", "b", "c"], &[]);
    let a = restore("a", &voters, 3, None, &[1, 1, 3, 3, 3]);
    let b = restore("b", &voters, 2, None, &[1, 1, 2, 2, 2, 2, 2]);
    let c = restore("c", &voters, 3, None, &[1, 1, 3, 3, 3]);
    let mut cluster = Cluster::new(vec![a, b, c]);
    cluster.elect("a");
    assert_eq!(cluster.core("a").term(), Term(4));

    let to_b: Vec<String> = cluster
        .delivered
        .iter()
        .filter(|m| m.to == nid("b") && m.from == nid("a"))
        .filter(
            |m| matches!(&m.body, MessageBody::AppendEntriesRequest(r) if !r.entries.is_empty()),
        )
        .map(show)
        .collect();
    assert_eq!(
        to_b,
        [
            "a->b t4 App prev=5@3 ents=[6@4] commit=0 round=0",
            "a->b t4 App prev=2@1 ents=[3@3,4@3,5@3,6@4] commit=0 round=0",
        ]
    );
    let rejects: Vec<String> = cluster
        .delivered_shows()
        .into_iter()
        .filter(|s| s.starts_with("b->a") && s.contains("reject"))
        .collect();
    assert_eq!(rejects, ["b->a t4 AppResp reject idx=5 hint=5@2 round=0"]);
    assert_eq!(cluster.take_out("b").truncate_from, [LogIndex(3)]);
    assert_eq!(log_of(cluster.core("b")), log_of(cluster.core("a")));
    assert_eq!(
        log_of(cluster.core("b")),
        [(1, 1), (2, 1), (3, 3), (4, 3), (5, 3), (6, 4)]
    );
    assert_eq!(cluster.core("b").status().commit_index, LogIndex(6));
}

// ------------------------------------------------------------ membership --

/// Ongaro's 2015 errata to single-server changes: a new leader takes no
/// configuration change before an entry of its term (its no-op) commits.
#[test]
fn conf_change_refused_before_leader_noop_commits() {
    let (mut a, _) = elected_abc();
    let add = ConfChange::AddNonvoter {
        id: nid("d"),
        address: ServerAddress::new("d"),
    };
    assert_eq!(
        a.propose_conf_change(add.clone(), LogIndex::ZERO),
        Err(ProposeError::ConfigChangeInProgress)
    );
    a.step(ack("b", "a", 2, 2, 0)).unwrap();
    let _ = drain(&mut a);
    assert_eq!(a.propose_conf_change(add, LogIndex::ZERO), Ok(LogIndex(3)));
}

/// Thesis §4.1: one membership change at a time; the next waits for the
/// previous one to commit.
#[test]
fn second_conf_change_refused_until_first_commits() {
    let mut a = leader_abc();
    let add_d = ConfChange::AddVoter {
        id: nid("d"),
        address: ServerAddress::new("d"),
    };
    let add_e = ConfChange::AddNonvoter {
        id: nid("e"),
        address: ServerAddress::new("e"),
    };
    assert_eq!(
        a.propose_conf_change(add_d, LogIndex::ZERO),
        Ok(LogIndex(3))
    );
    let out = drain(&mut a);
    assert_eq!(
        out.events,
        [Event::ConfigurationChanged {
            index: LogIndex(3),
            configuration: conf(&["a", "b", "c", "d"], &[])
        }]
    );
    assert_eq!(
        a.propose_conf_change(add_e.clone(), LogIndex::ZERO),
        Err(ProposeError::ConfigChangeInProgress)
    );
    assert_eq!(
        a.propose_conf_change(add_e.clone(), LogIndex(3)),
        Err(ProposeError::ConfigChangeInProgress)
    );

    // Four voters: a quorum is three.
    a.step(ack("b", "a", 2, 3, 0)).unwrap();
    assert_eq!(a.status().commit_index, LogIndex(2));
    assert_eq!(
        a.propose_conf_change(add_e.clone(), LogIndex::ZERO),
        Err(ProposeError::ConfigChangeInProgress)
    );
    a.step(ack("c", "a", 2, 3, 0)).unwrap();
    assert_eq!(a.status().commit_index, LogIndex(3));
    assert_eq!(
        a.propose_conf_change(add_e, LogIndex::ZERO),
        Ok(LogIndex(4))
    );
}

/// HashiCorp's `prevIndex` guard: a change computed against an older
/// configuration is refused.
#[test]
fn conf_change_with_stale_prev_index_refused() {
    let mut a = leader_abc();
    let add_d = ConfChange::AddNonvoter {
        id: nid("d"),
        address: ServerAddress::new("d"),
    };
    assert_eq!(a.propose_conf_change(add_d, LogIndex(1)), Ok(LogIndex(3)));
    let _ = drain(&mut a);
    a.step(ack("b", "a", 2, 3, 0)).unwrap();
    assert_eq!(a.status().commit_index, LogIndex(3));
    let add_e = ConfChange::AddNonvoter {
        id: nid("e"),
        address: ServerAddress::new("e"),
    };
    assert_eq!(
        a.propose_conf_change(add_e.clone(), LogIndex(1)),
        Err(ProposeError::ConfigurationChanged {
            expected: LogIndex(1),
            actual: LogIndex(3)
        })
    );
    assert_eq!(a.propose_conf_change(add_e, LogIndex(3)), Ok(LogIndex(4)));
}

/// A new commit index rides on the next AppendEntries; the leader sends it
/// on its own only once the driver announces it (after `commit_timeout`,
/// HashiCorp's `CommitTimeout`), not after every commit.
#[test]
fn commit_index_rides_on_the_next_append_until_announced() {
    let mut cluster = Cluster::of(&["a", "b", "c"]);
    cluster.elect("a");
    assert_eq!(cluster.core("b").status().commit_index, LogIndex(2));
    // Runs `act` on the leader, delivers without announcing, and returns
    // what the leader sent.
    let sent_by_a = |cluster: &mut Cluster, act: &dyn Fn(&mut Core)| -> Vec<String> {
        cluster.delivered.clear();
        act(cluster.core_mut("a"));
        cluster.deliver(false);
        cluster
            .delivered_shows()
            .into_iter()
            .filter(|s| s.starts_with("a->"))
            .collect()
    };
    let propose = |a: &mut Core| {
        a.propose(Bytes::from_static(b"x")).unwrap();
    };

    assert_eq!(
        sent_by_a(&mut cluster, &propose),
        [
            "a->b t2 App prev=2@2 ents=[3@2] commit=2 round=0",
            "a->c t2 App prev=2@2 ents=[3@2] commit=2 round=0",
        ]
    );
    assert_eq!(cluster.core("a").status().commit_index, LogIndex(3));
    assert!(cluster.core("a").commit_unannounced());
    assert_eq!(cluster.core("b").status().commit_index, LogIndex(2));

    assert_eq!(
        sent_by_a(&mut cluster, &propose),
        [
            "a->b t2 App prev=3@2 ents=[4@2] commit=3 round=0",
            "a->c t2 App prev=3@2 ents=[4@2] commit=3 round=0",
        ]
    );
    assert_eq!(cluster.core("b").status().commit_index, LogIndex(3));

    assert_eq!(
        sent_by_a(&mut cluster, &|a| a.announce_commit()),
        [
            "a->b t2 App prev=4@2 ents=[] commit=4 round=0",
            "a->c t2 App prev=4@2 ents=[] commit=4 round=0",
        ]
    );
    assert!(!cluster.core("a").commit_unannounced());
    for id in ["b", "c"] {
        assert_eq!(cluster.core(id).status().commit_index, LogIndex(4), "{id}");
    }
}

/// Non-voters receive the log but never count (thesis §4.2.1): a single
/// voter commits alone beside two non-voters that never answer.
#[test]
fn single_voter_commits_without_nonvoters() {
    let mut a = restore("a", &conf(&["a"], &["n1", "n2"]), 1, None, &[1]);
    let first = elect(&mut a);
    assert_eq!(
        shows(&first.messages),
        [
            "a->n1 t2 App prev=1@1 ents=[2@2] commit=0 round=0",
            "a->n2 t2 App prev=1@1 ents=[2@2] commit=0 round=0",
        ]
    );
    assert_eq!(a.status().commit_index, LogIndex(2));
    assert!(a.commit_unannounced());
    a.announce_commit();
    assert_eq!(
        shows(&drain(&mut a).messages),
        [
            "a->n1 t2 App prev=1@1 ents=[] commit=2 round=0",
            "a->n2 t2 App prev=1@1 ents=[] commit=2 round=0",
        ]
    );
    assert!(!a.commit_unannounced());
    assert_eq!(a.propose(Bytes::from_static(b"x")), Ok(LogIndex(3)));
    let _ = drain(&mut a);
    assert_eq!(a.status().commit_index, LogIndex(3));
}

/// Non-voters never count: with voters a and b, acknowledgements from two
/// non-voters do not commit; b's does.
#[test]
fn nonvoter_acks_do_not_commit() {
    let mut a = restore("a", &conf(&["a", "b"], &["n1", "n2"]), 1, None, &[1]);
    let _ = elect(&mut a);
    a.step(ack("n1", "a", 2, 2, 0)).unwrap();
    a.step(ack("n2", "a", 2, 2, 0)).unwrap();
    assert!(drain(&mut a).committed.is_empty());
    assert_eq!(a.status().commit_index, LogIndex(0));
    a.step(ack("b", "a", 2, 2, 0)).unwrap();
    assert_eq!(indexes(&drain(&mut a).committed), [1, 2]);
}

/// A non-voter never campaigns, on timeout or on TimeoutNow.
#[test]
fn nonvoter_never_campaigns() {
    let mut n = restore("n", &conf(&["a", "b", "c"], &["n"]), 1, None, &[1]);
    for _ in 0..100 {
        n.tick();
    }
    let out = drain(&mut n);
    assert!(out.all_messages().is_empty() && out.events.is_empty() && out.hard_states.is_empty());
    n.step(msg("a", "n", 1, MessageBody::TimeoutNow)).unwrap();
    assert!(drain(&mut n).all_messages().is_empty());
    assert_eq!((n.state(), n.term()), (RaftState::Follower, Term(1)));
}

/// Thesis §4.2.2: a leader removed from the configuration keeps leading
/// (without counting itself) until the change commits, then steps down and
/// reports it was removed (and shuts down with `shutdown_on_remove`).
#[test]
fn removed_leader_steps_down_once_removal_commits() {
    let mut a = leader_abc();
    assert_eq!(
        a.propose_conf_change(ConfChange::RemoveServer { id: nid("a") }, LogIndex::ZERO),
        Ok(LogIndex(3))
    );
    let _ = drain(&mut a);
    // Voters are now b and c; a's own copy does not count.
    a.step(ack("b", "a", 2, 3, 0)).unwrap();
    let out = drain(&mut a);
    assert_eq!(a.state(), RaftState::Leader);
    assert_eq!(a.status().commit_index, LogIndex(2));
    assert!(out.events.is_empty());
    a.step(ack("c", "a", 2, 3, 0)).unwrap();
    let out = drain(&mut a);
    assert_eq!(indexes(&out.committed), [3]);
    assert_eq!(
        out.events,
        [
            Event::LeaderChanged(None),
            Event::StateChanged(RaftState::Follower),
            Event::Removed,
            Event::StateChanged(RaftState::Shutdown),
        ]
    );
    assert_eq!(a.state(), RaftState::Shutdown);
    assert_eq!(
        a.propose(Bytes::from_static(b"x")),
        Err(ProposeError::Shutdown)
    );
}

// ----------------------------------------------------------------- reads --

/// Thesis §6.4.1: a lease read is served at once while a quorum confirmed the
/// leader less than the lease (4 ticks) ago; after that it falls back to
/// ReadIndex and waits for a quorum round.
#[test]
fn lease_read_served_while_lease_holds_then_falls_back_to_read_index() {
    let mut a = leader_abc();
    a.lease_read(1).unwrap();
    let out = drain(&mut a);
    assert_eq!(
        out.reads,
        [ReadState {
            id: 1,
            index: LogIndex(2)
        }]
    );
    assert!(out.all_messages().is_empty(), "a lease read sends nothing");

    for _ in 0..3 {
        a.tick();
        let _ = drain(&mut a);
    }
    a.lease_read(2).unwrap();
    let out = drain(&mut a);
    assert_eq!(
        out.reads,
        [ReadState {
            id: 2,
            index: LogIndex(2)
        }],
        "3 ticks after the last quorum ack"
    );
    assert!(out.all_messages().is_empty());

    a.tick();
    let _ = drain(&mut a);
    a.lease_read(3).unwrap();
    let out = drain(&mut a);
    assert!(
        out.reads.is_empty(),
        "4 ticks after the last quorum ack the lease has expired"
    );
    assert_eq!(
        shows(&out.messages),
        [
            "a->b t2 App prev=2@2 ents=[] commit=2 round=5",
            "a->c t2 App prev=2@2 ents=[] commit=2 round=5",
        ]
    );
    a.step(ack("b", "a", 2, 2, 5)).unwrap();
    assert_eq!(
        drain(&mut a).reads,
        [ReadState {
            id: 3,
            index: LogIndex(2)
        }]
    );
}

/// Thesis §6.4: reads asked for before one `ready` share one heartbeat round
/// (one message per peer) and are released together once a quorum answers
/// that round; an answer to an older round does not release them.
#[test]
fn read_index_batches_reads_into_one_round() {
    let mut a = leader_abc();
    for id in [10, 11, 12] {
        a.read_index(id).unwrap();
    }
    let r = a.ready();
    assert!(r.reads.is_empty());
    assert_eq!(
        shows(&r.messages),
        [
            "a->b t2 App prev=2@2 ents=[] commit=2 round=1",
            "a->c t2 App prev=2@2 ents=[] commit=2 round=1",
        ]
    );
    assert!(drain(&mut a).all_messages().is_empty());

    a.step(ack("b", "a", 2, 2, 0)).unwrap();
    assert!(
        drain(&mut a).reads.is_empty(),
        "an older round confirms nothing new"
    );
    a.step(ack("b", "a", 2, 2, 1)).unwrap();
    let out = drain(&mut a);
    let index = LogIndex(2);
    assert_eq!(
        out.reads,
        [
            ReadState { id: 10, index },
            ReadState { id: 11, index },
            ReadState { id: 12, index }
        ]
    );
    assert!(out.all_messages().is_empty());
}

// --------------------------------------------------- leadership transfer --

/// Thesis §3.10: the leader stops taking proposals, brings the target up to
/// date, then sends TimeoutNow; the target campaigns at once with the
/// transfer flag (bypassing stickiness), wins, and the old leader follows.
#[test]
fn leadership_transfer_completes() {
    let mut cluster = Cluster::of(&["a", "b", "c"]);
    cluster.elect("a");
    assert_eq!(
        cluster.core_mut("a").propose(Bytes::from_static(b"x")),
        Ok(LogIndex(3))
    );
    assert_eq!(
        cluster.core_mut("a").transfer_leadership(Some(nid("b"))),
        Ok(nid("b"))
    );
    assert_eq!(
        cluster.core_mut("a").propose(Bytes::from_static(b"y")),
        Err(ProposeError::LeadershipTransferInProgress)
    );
    cluster.delivered.clear();
    cluster.stabilize();

    let log = cluster.delivered_shows();
    let pos = |s: &str| {
        log.iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("{s} not in {log:#?}"))
    };
    assert!(
        pos("b->a t2 AppResp ok idx=3 round=0") < pos("a->b t2 TimeoutNow"),
        "TimeoutNow before b caught up"
    );
    assert!(log.contains(&"b->c t3 Vote last=3@2 transfer".to_owned()));
    assert!(log.contains(&"b->a t3 Vote last=3@2 transfer".to_owned()));
    assert!(
        !log.iter().any(|l| l.contains("PreVote")),
        "a transfer skips pre-vote"
    );
    assert_eq!(
        (cluster.core("b").state(), cluster.core("b").term()),
        (RaftState::Leader, Term(3))
    );
    for id in ["a", "c"] {
        assert_eq!(cluster.core(id).state(), RaftState::Follower, "{id}");
        assert_eq!(cluster.core(id).leader(), Some(&nid("b")), "{id}");
    }
    assert!(cluster
        .take_out("a")
        .events
        .contains(&Event::StateChanged(RaftState::Follower)));
}

/// Thesis §3.10: a transfer whose target does not win within an election
/// timeout (10 ticks) is abandoned; the leader keeps leading and takes
/// proposals again.
#[test]
fn leadership_transfer_aborts_after_election_timeout() {
    let mut cluster = Cluster::of(&["a", "b", "c"]);
    cluster.elect("a");
    cluster.isolated.insert("c".into());
    assert_eq!(
        cluster.core_mut("a").propose(Bytes::from_static(b"x")),
        Ok(LogIndex(3))
    );
    cluster.stabilize();
    assert_eq!(
        cluster.core_mut("a").transfer_leadership(Some(nid("c"))),
        Ok(nid("c"))
    );
    let a = cluster.core_mut("a");
    assert_eq!(
        a.propose(Bytes::from_static(b"y")),
        Err(ProposeError::LeadershipTransferInProgress)
    );
    let add = ConfChange::AddNonvoter {
        id: nid("d"),
        address: ServerAddress::new("d"),
    };
    assert_eq!(
        a.propose_conf_change(add, LogIndex::ZERO),
        Err(ProposeError::LeadershipTransferInProgress)
    );
    let _ = cluster.take_out("a");
    for tick in 1..=9 {
        cluster.tick(&["a", "b"]);
        assert_eq!(
            cluster.core("a").transfer_target(),
            Some(&nid("c")),
            "tick {tick}"
        );
    }
    assert!(cluster.take_out("a").events.is_empty());
    cluster.tick(&["a", "b"]);
    assert_eq!(
        cluster.take_out("a").events,
        [Event::LeadershipTransferAborted]
    );
    let a = cluster.core_mut("a");
    assert_eq!(a.transfer_target(), None);
    assert_eq!((a.state(), a.term()), (RaftState::Leader, Term(2)));
    assert_eq!(a.propose(Bytes::from_static(b"z")), Ok(LogIndex(4)));
}

/// Thesis §6.4.1 and §3.10: the lease rests on followers not electing
/// anyone for an election timeout, but a transfer's vote bypasses that
/// promise. Once TimeoutNow is out a new leader may commit at any moment,
/// so a lease read must not be served from the lease any more.
#[test]
fn lease_read_not_served_from_lease_after_timeout_now() {
    let mut cluster = Cluster::of(&["a", "b", "c"]);
    cluster.elect("a");
    assert_eq!(
        cluster.core_mut("a").transfer_leadership(Some(nid("b"))),
        Ok(nid("b"))
    );
    // Everything addressed to a is delayed: b wins with c's vote, then
    // commits a write that a has never heard of.
    let mut held = Vec::new();
    let mut deliver_all_but_a = |cluster: &mut Cluster| {
        for _ in 0..1000 {
            cluster.flush();
            let Some(m) = cluster.queue.pop_front() else {
                return;
            };
            if m.to == nid("a") {
                held.push(m);
            } else {
                let to = m.to.to_string();
                cluster.core_mut(&to).step(m).unwrap();
            }
        }
        panic!("did not settle");
    };
    deliver_all_but_a(&mut cluster);
    assert_eq!(
        (cluster.core("b").state(), cluster.core("b").term()),
        (RaftState::Leader, Term(3))
    );
    assert_eq!(
        cluster.core_mut("b").propose(Bytes::from_static(b"w")),
        Ok(LogIndex(4))
    );
    deliver_all_but_a(&mut cluster);
    assert_eq!(
        cluster.core("b").status().commit_index,
        LogIndex(4),
        "w is committed"
    );

    // a, unaware, still leads term 2 and its lease has not run out.
    assert_eq!(cluster.core("a").state(), RaftState::Leader);
    cluster.core_mut("a").lease_read(7).unwrap();
    cluster.flush();
    let reads = cluster.take_out("a").reads;
    assert!(
        reads.iter().all(|r| r.index >= LogIndex(4)),
        "a served {reads:?} without the committed write at 4: a stale (non-linearizable) read"
    );
}

// ------------------------------------------------------------- snapshots --

/// §7: once the leader compacted the entries a lagging follower needs, it
/// streams its snapshot; the follower installs it, answers after persist,
/// and replication resumes after the snapshot.
#[test]
fn lagging_follower_gets_snapshot_after_compaction() {
    let small = || cfg_with(|c| c.trailing_logs = 2);
    let voters = conf(&["a", "b", "c"], &[]);
    let cores = ["a", "b", "c"].map(|id| restore_with(small(), id, &voters, 1, None, &[1]));
    let mut cluster = Cluster::new(cores.into());
    cluster.isolated.insert("c".into());
    cluster.elect("a");
    for i in 0..10u8 {
        cluster.core_mut("a").propose(Bytes::from(vec![i])).unwrap();
    }
    cluster.stabilize();
    assert_eq!(cluster.core("a").status().commit_index, LogIndex(12));
    let meta = snapshot_meta(12, 2, voters.clone());
    cluster.core_mut("a").on_snapshot_created(meta.clone());
    cluster.stabilize();
    assert_eq!(
        cluster.take_out("a").purge_upto,
        [LogIndex(10)],
        "12 - trailing_logs 2"
    );
    assert_eq!(cluster.core("a").status().first_log_index, LogIndex(11));

    cluster.isolated.clear();
    cluster.delivered.clear();
    cluster.tick(&["a"]);
    let a_out = cluster.take_out("a");
    assert_eq!(
        a_out.send_snapshots,
        [SnapshotSend {
            to: nid("c"),
            term: Term(2),
            meta: meta.clone()
        }]
    );
    let c_out = cluster.take_out("c");
    assert_eq!(c_out.install_snapshot, [meta]);
    assert!(shows(&c_out.after_persist).contains(&"c->a t2 SnapResp ok idx=12".to_owned()));
    assert!(!shows(&c_out.messages)
        .iter()
        .any(|s| s.contains("SnapResp")));
    let c = cluster.core("c").status();
    assert_eq!(
        (
            c.first_log_index,
            c.last_log_index,
            c.commit_index,
            c.last_snapshot_index
        ),
        (LogIndex(13), LogIndex(12), LogIndex(12), LogIndex(12))
    );

    assert_eq!(
        cluster.core_mut("a").propose(Bytes::from_static(b"after")),
        Ok(LogIndex(13))
    );
    cluster.stabilize();
    assert_eq!(log_of(cluster.core("c")), [(13, 2)]);
    assert_eq!(cluster.core("c").status().commit_index, LogIndex(13));
}

/// §7 InstallSnapshot receiver: with no entry matching the snapshot's last
/// index/term, the follower discards its log and takes the snapshot; the
/// success answer waits for persistence.
#[test]
fn follower_installs_snapshot_and_resets_log() {
    let voters = conf(&["a", "f", "x"], &[]);
    let mut f = restore("f", &voters, 1, None, &[1]);
    let meta = snapshot_meta(12, 2, voters.clone());
    f.step(msg(
        "a",
        "f",
        2,
        MessageBody::InstallSnapshotRequest(InstallSnapshotRequest { meta: meta.clone() }),
    ))
    .unwrap();
    let r = f.ready();
    assert_eq!(r.install_snapshot, Some(meta));
    assert_eq!((r.truncate_from, r.entries.len()), (None, 0));
    assert!(r.messages.is_empty());
    assert_eq!(
        shows(&r.messages_after_persist),
        ["f->a t2 SnapResp ok idx=12"]
    );
    assert_eq!(
        r.events,
        [
            Event::LeaderChanged(Some(nid("a"))),
            Event::ConfigurationChanged {
                index: LogIndex(1),
                configuration: voters
            },
        ]
    );
    let s = f.status();
    assert_eq!(
        (
            s.first_log_index,
            s.last_log_index,
            s.last_log_term,
            s.commit_index,
            s.applied_index
        ),
        (
            LogIndex(13),
            LogIndex(12),
            Term(2),
            LogIndex(12),
            LogIndex(12)
        )
    );
    assert_eq!(log_of(&f), []);
}

/// §7: "If existing log entry has same index and term as snapshot's last
/// included entry, retain log entries following it."
#[test]
fn follower_holding_snapshot_entry_keeps_its_log() {
    let voters = conf(&["a", "f", "x"], &[]);
    let mut f = restore("f", &voters, 2, None, &[1, 2, 2, 2, 2]);
    let meta = snapshot_meta(4, 2, voters);
    f.step(msg(
        "a",
        "f",
        2,
        MessageBody::InstallSnapshotRequest(InstallSnapshotRequest { meta }),
    ))
    .unwrap();
    let out = drain(&mut f);
    assert!(
        out.install_snapshot.is_empty() && out.truncate_from.is_empty() && out.entries.is_empty()
    );
    assert_eq!(shows(&out.after_persist), ["f->a t2 SnapResp ok idx=4"]);
    assert_eq!(log_of(&f), [(1, 1), (2, 2), (3, 2), (4, 2), (5, 2)]);
    assert_eq!(f.status().commit_index, LogIndex(4));
    assert_eq!(indexes(&out.committed), [1, 2, 3, 4]);
}

// --------------------------------------------------------------- restore --

/// A stored log with a hole cannot be trusted: `Core::new` refuses it.
#[test]
fn restore_rejects_log_with_gap() {
    let voters = conf(&["a", "b", "c"], &[]);
    let snap = snapshot_meta(5, 1, voters.clone());
    struct Case {
        name: &'static str,
        snapshot: Option<SnapshotMeta>,
        indexes: Vec<u64>,
        /// First and last log index of the restored core, or the error.
        want: Result<(u64, u64), RestoreError>,
    }
    let gap = |after, found| {
        Err(RestoreError::Gap {
            expected_after: LogIndex(after),
            found: LogIndex(found),
        })
    };
    let cases = [
        Case {
            name: "hole in the middle",
            snapshot: None,
            indexes: vec![1, 2, 4],
            want: gap(2, 4),
        },
        Case {
            name: "no first entry",
            snapshot: None,
            indexes: vec![2, 3],
            want: gap(0, 2),
        },
        Case {
            name: "hole after the snapshot",
            snapshot: Some(snap.clone()),
            indexes: vec![7, 8],
            want: gap(5, 7),
        },
        Case {
            name: "entries under the snapshot are ignored",
            snapshot: Some(snap),
            indexes: vec![3, 4, 5, 6, 7, 8],
            want: Ok((6, 8)),
        },
    ];
    for Case {
        name,
        snapshot,
        indexes: idx,
        want,
    } in cases
    {
        let restored = RestoredState {
            hard_state: HardState {
                term: Term(1),
                vote: None,
            },
            snapshot,
            entries: idx.iter().map(|i| ent(*i, 1)).collect(),
        };
        let got = Core::new(cfg(), nid("a"), ServerAddress::new("a"), restored, 1)
            .map(|c| (c.status().first_log_index.0, c.status().last_log_index.0));
        assert_eq!(got, want, "case {name}");
    }
}

/// Figure 2: currentTerm and votedFor are persistent; a restarted server
/// keeps them, emits nothing to persist, and will not vote twice.
#[test]
fn restore_keeps_term_and_vote() {
    let mut v = restore("v", &conf(&["v", "b", "c"], &[]), 5, Some("b"), &[1]);
    let s = v.status();
    assert_eq!(
        (s.term, s.vote, s.state),
        (Term(5), Some(nid("b")), RaftState::Follower)
    );
    assert!(!v.has_ready());
    v.step(vote("c", "v", 5, (1, 1), false, false)).unwrap();
    assert_eq!(
        shows(&drain(&mut v).after_persist),
        ["v->c t5 VoteResp rejected"]
    );
    v.step(vote("b", "v", 5, (1, 1), false, false)).unwrap();
    assert_eq!(
        shows(&drain(&mut v).after_persist),
        ["v->b t5 VoteResp granted"]
    );
}

// ------------------------------------------------------------ driver API --

/// The module docs' driver loop is `while core.has_ready() { ready() }`: once
/// `ready()` returned everything, `has_ready()` must be false, or the loop
/// spins. Here follower c never answers (its probe is paused) while the
/// commit index moves past what c was told.
#[test]
fn has_ready_is_false_after_ready_with_a_silent_follower() {
    let (mut a, _) = elected_abc();
    a.step(ack("b", "a", 2, 2, 0)).unwrap();
    let r = a.ready();
    assert_eq!(indexes(&r.committed), [1, 2]);
    assert!(
        !a.has_ready(),
        "has_ready() is still true; the next Ready is empty: {:?}",
        a.ready()
    );
}

/// The same driver-loop contract while a read waits for the leader's no-op:
/// the read cannot get a round yet, so `ready()` has nothing to return and
/// `has_ready()` must say so.
#[test]
fn has_ready_is_false_while_a_read_waits_for_the_noop() {
    let (mut a, _) = elected_abc();
    a.read_index(1).unwrap();
    let r = a.ready();
    assert!(
        r.is_empty(),
        "nothing can happen before the no-op commits: {r:?}"
    );
    assert!(!a.has_ready(), "has_ready() is true but ready() is empty");
}

/// A single-voter leader confirms every round by itself; its round
/// bookkeeping must not grow with every heartbeat tick while the driver only
/// calls `ready()` when `has_ready()`.
#[test]
fn single_voter_leader_round_bookkeeping_stays_bounded() {
    let mut a = restore("a", &conf(&["a"], &[]), 1, None, &[1]);
    let _ = elect(&mut a);
    for _ in 0..1000 {
        a.tick();
        let _ = drain(&mut a);
    }
    let rounds = a.leader_state().expect("still leader").round_ticks.len();
    assert!(
        rounds <= 2,
        "{rounds} heartbeat rounds kept after 1000 ticks"
    );
}

/// §5.3: the follower truncates only on a real conflict. A delayed, duplicate
/// AppendEntries whose entries it already holds leaves the entries after them
/// in place (they may be acknowledged, even committed).
#[test]
fn duplicate_append_keeps_matching_suffix() {
    let mut f = restore("f", &conf(&["a", "f", "x"], &[]), 2, None, &[1, 2, 2, 2]);
    f.step(append("a", "f", 2, (1, 1), &[(2, 2)], 0)).unwrap();
    let out = drain(&mut f);
    assert!(out.truncate_from.is_empty() && out.entries.is_empty());
    assert_eq!(
        shows(&out.after_persist),
        ["f->a t2 AppResp ok idx=2 round=0"]
    );
    assert_eq!(log_of(&f), [(1, 1), (2, 2), (3, 2), (4, 2)]);
}

/// Thesis §10.2.1: the leader writes its log in parallel with replication
/// but counts itself toward a majority only once its own write is durable.
#[test]
fn leader_counts_itself_only_once_durable() {
    let mut a = leader_abc();
    assert_eq!(a.propose(Bytes::from_static(b"x")), Ok(LogIndex(3)));
    let r = a.ready();
    assert_eq!(entries_text(&r.entries), "[3@2]");
    assert_eq!(
        shows(&r.messages),
        [
            "a->b t2 App prev=2@2 ents=[3@2] commit=2 round=0",
            "a->c t2 App prev=2@2 ents=[3@2] commit=2 round=0",
        ],
        "appends go out before the leader's own write is durable"
    );
    a.step(ack("b", "a", 2, 3, 0)).unwrap();
    assert_eq!(
        a.status().commit_index,
        LogIndex(2),
        "only b holds 3 durably"
    );
    a.on_persisted(LogIndex(3), Term(2));
    assert_eq!(a.status().commit_index, LogIndex(3));
}

/// Non-voters never count for elections or for check-quorum either: a grant
/// from a non-voter does not elect, and a leader hearing only from
/// non-voters steps down after the lease timeout.
#[test]
fn nonvoter_votes_and_heartbeat_acks_never_count() {
    let voters_and_learners = conf(&["a", "b", "c"], &["n"]);
    let mut a = restore_with(
        cfg_with(|c| c.pre_vote = false),
        "a",
        &voters_and_learners,
        1,
        None,
        &[1],
    );
    while a.state() == RaftState::Follower {
        a.tick();
    }
    let out = drain(&mut a);
    assert_eq!(
        shows(&out.after_persist),
        ["a->b t2 Vote last=1@1", "a->c t2 Vote last=1@1"]
    );
    a.step(grant(&vote("a", "n", 2, (1, 1), false, false)))
        .unwrap();
    assert_eq!(
        a.state(),
        RaftState::Candidate,
        "a non-voter's grant elected a"
    );
    a.step(grant(&vote("a", "b", 2, (1, 1), false, false)))
        .unwrap();
    assert_eq!(a.state(), RaftState::Leader);
    let _ = drain(&mut a);

    for tick in 1..=5 {
        a.tick();
        let out = drain(&mut a);
        for m in out.messages.iter().filter(|m| m.to == nid("n")) {
            a.step(ack("n", "a", 2, 2, round_of(m))).unwrap();
        }
        let want = if tick < 5 {
            RaftState::Leader
        } else {
            RaftState::Follower
        };
        assert_eq!(a.state(), want, "tick {tick}");
    }
}

/// Restart after a crash between storing a snapshot received from the leader
/// and resetting the log: the stored entries disagree with the snapshot at
/// its index, so they are stale and the first `ready` truncates them.
#[test]
fn restore_drops_stored_suffix_that_disagrees_with_snapshot() {
    let voters = conf(&["a", "b", "c"], &[]);
    let restored = RestoredState {
        hard_state: HardState {
            term: Term(2),
            vote: None,
        },
        snapshot: Some(snapshot_meta(12, 2, voters)),
        entries: (1..=14).map(|i| ent(i, 1)).collect(),
    };
    let mut c = Core::new(cfg(), nid("c"), ServerAddress::new("c"), restored, 1).unwrap();
    let s = c.status();
    assert_eq!(
        (s.first_log_index, s.last_log_index, s.last_log_term),
        (LogIndex(13), LogIndex(12), Term(2))
    );
    let r = c.ready();
    assert_eq!((r.truncate_from, r.entries.len()), (Some(LogIndex(13)), 0));
}

/// A crash after a received snapshot was stored but before the log was
/// reset leaves a stored log that ends before the snapshot: it must be
/// emptied, or the next append would leave a hole in the store.
#[test]
fn restore_empties_a_stored_log_that_ends_before_the_snapshot() {
    let voters = conf(&["a", "b", "c"], &[]);
    let restored = RestoredState {
        hard_state: HardState {
            term: Term(3),
            vote: None,
        },
        snapshot: Some(snapshot_meta(40, 3, voters)),
        entries: (1..=20).map(|i| ent(i, 1)).collect(),
    };
    let mut c = Core::new(cfg(), nid("c"), ServerAddress::new("c"), restored, 1).unwrap();
    let s = c.status();
    assert_eq!(
        (s.first_log_index, s.last_log_index),
        (LogIndex(41), LogIndex(40))
    );
    let r = c.ready();
    assert_eq!(
        r.truncate_from,
        Some(LogIndex(1)),
        "the whole stored log must go"
    );
}

/// §5.1: a server seeing a higher term adopts it and, if it led, steps down;
/// a request from a lower term is refused at once (no durability involved)
/// with the current term, which deposes the stale sender.
#[test]
fn higher_term_deposes_leader_and_stale_term_is_refused() {
    let mut a = leader_abc();
    a.read_index(5).unwrap();
    let _ = drain(&mut a);
    a.step(msg(
        "b",
        "a",
        3,
        MessageBody::AppendEntriesResponse(AppendEntriesResponse {
            success: false,
            index: LogIndex(2),
            hint: None,
            round: 1,
        }),
    ))
    .unwrap();
    let out = drain(&mut a);
    assert_eq!(
        (a.state(), a.term(), a.status().vote),
        (RaftState::Follower, Term(3), None)
    );
    assert_eq!(
        out.hard_states,
        [HardState {
            term: Term(3),
            vote: None
        }]
    );
    assert_eq!(
        out.aborted_reads,
        [5],
        "a deposed leader fails its pending reads"
    );
    assert_eq!(
        out.events,
        [
            Event::LeaderChanged(None),
            Event::StateChanged(RaftState::Follower)
        ]
    );

    let mut f = restore("f", &conf(&["a", "f", "x"], &[]), 3, None, &[1]);
    f.step(append("a", "f", 2, (1, 1), &[(2, 2)], 0)).unwrap();
    let out = drain(&mut f);
    assert_eq!(
        shows(&out.messages),
        ["f->a t3 AppResp reject idx=1 hint=none round=0"]
    );
    assert!(out.after_persist.is_empty() && out.entries.is_empty());
    assert_eq!(f.leader(), None);
}

/// Thesis §4.1: a server uses the latest configuration in its log, committed
/// or not; when a conflicting leader truncates that entry away, the server
/// falls back to the configuration before it.
#[test]
fn truncated_configuration_entry_reverts_to_previous_configuration() {
    let abc = conf(&["a", "f", "x"], &[]);
    let abcd = conf(&["a", "f", "x", "d"], &[]);
    let restored = RestoredState {
        hard_state: HardState {
            term: Term(2),
            vote: None,
        },
        snapshot: None,
        entries: vec![
            Entry {
                index: LogIndex(1),
                term: Term(1),
                payload: EntryPayload::Configuration(abc.clone()),
            },
            Entry {
                index: LogIndex(2),
                term: Term(2),
                payload: EntryPayload::Configuration(abcd.clone()),
            },
        ],
    };
    let mut f = Core::new(
        cfg(),
        nid("f"),
        ServerAddress::new("f"),
        restored,
        seed("f"),
    )
    .unwrap();
    assert_eq!(f.configuration(), &abcd);
    f.step(append("a", "f", 3, (1, 1), &[(2, 3)], 1)).unwrap();
    let out = drain(&mut f);
    assert_eq!(out.truncate_from, [LogIndex(2)]);
    assert_eq!(f.configuration(), &abc);
    assert_eq!(
        (f.status().configuration, f.status().configuration_index),
        (abc, LogIndex(1))
    );
}

/// `Event::ConfigurationChanged` tells observers (transport peers, stats)
/// which configuration is in effect; a truncation that reverts it must say so.
#[test]
fn truncated_configuration_entry_emits_configuration_changed() {
    let abc = conf(&["a", "f", "x"], &[]);
    let abcd = conf(&["a", "f", "x", "d"], &[]);
    let restored = RestoredState {
        hard_state: HardState {
            term: Term(2),
            vote: None,
        },
        snapshot: None,
        entries: vec![
            Entry {
                index: LogIndex(1),
                term: Term(1),
                payload: EntryPayload::Configuration(abc.clone()),
            },
            Entry {
                index: LogIndex(2),
                term: Term(2),
                payload: EntryPayload::Configuration(abcd),
            },
        ],
    };
    let mut f = Core::new(
        cfg(),
        nid("f"),
        ServerAddress::new("f"),
        restored,
        seed("f"),
    )
    .unwrap();
    f.step(append("a", "f", 3, (1, 1), &[(2, 3)], 1)).unwrap();
    let out = drain(&mut f);
    assert!(
        out.events.contains(&Event::ConfigurationChanged {
            index: LogIndex(1),
            configuration: abc
        }),
        "events: {:?}",
        out.events
    );
}
