//! Three real `raftkit` processes: kill -9 of the leader for each
//! transport × storage the profiles offer (TCP + LMDB, QUIC + file with
//! mutual TLS, TCP + memory), `raftkit up`, and CAS increments across a kill
//! (TCP + file).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use support::{
    client, cluster_json, cluster_profiles, cluster_profiles_with, get, leader_of, put_acked,
    read_linearizable, wait_until, Flavor, NodeSpec, Proc,
};

const DEADLINE: Duration = Duration::from_secs(30);

async fn ready(client: &reqwest::Client, spec: &NodeSpec) -> Option<()> {
    let r = client.get(spec.url("/ready")).send().await.ok()?;
    (r.status() == StatusCode::OK).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_kill9_and_restart_tcp_lmdb() {
    leader_kill9_and_restart(Flavor::TCP_LMDB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_kill9_and_restart_quic_file() {
    leader_kill9_and_restart(Flavor::QUIC_FILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_kill9_and_restart_tcp_memory() {
    leader_kill9_and_restart(Flavor::TCP_MEMORY).await;
}

/// Three nodes of `flavor`: writes through every node are readable
/// linearizably from every node; kill -9 of the leader; a new leader; more
/// writes; the old leader restarts and ends with every acknowledged write.
/// With memory storage the restarted node comes back empty (and must not
/// bootstrap again) and gets everything from the leader.
async fn leader_kill9_and_restart(flavor: Flavor) {
    let dir = tempfile::tempdir().unwrap();
    let specs = cluster_profiles_with(dir.path(), 3, flavor, "");
    let mut procs: Vec<Option<Proc>> = specs.iter().map(|s| Some(Proc::start(s))).collect();
    let c = client();
    let refs: Vec<&Proc> = procs.iter().flatten().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;

    // Writes through every node; each is readable linearizably from every node.
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        put_acked(&c, &specs[i % 3], &key, &value).await;
        acked.insert(key, value);
    }
    for s in &specs {
        for (k, v) in &acked {
            let got = read_linearizable(&c, s, k).await;
            assert_eq!(got, (StatusCode::OK, v.clone()), "{k} read from {}", s.id);
        }
    }

    // kill -9 the leader; the others elect a new one.
    let old = wait_until(DEADLINE, "a leader", || leader_of(&c, &specs[0])).await;
    let old_i = specs.iter().position(|s| s.id == old).unwrap();
    procs[old_i].as_mut().unwrap().kill9();
    let survivors: Vec<&NodeSpec> = specs.iter().filter(|s| s.id != old).collect();
    let new = wait_until(
        Duration::from_secs(10),
        "a new leader after kill -9",
        || async {
            let l = leader_of(&c, survivors[0]).await?;
            (l != old && leader_of(&c, survivors[1]).await.as_ref() == Some(&l)).then_some(l)
        },
    )
    .await;
    assert_ne!(new, old);

    // Writes continue through both survivors.
    for i in 30..50 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        put_acked(&c, survivors[i % 2], &key, &value).await;
        acked.insert(key, value);
    }

    // The old leader restarts (bootstrap = true is a no-op on a durable
    // store; an empty memory store must not form a cluster of its own) and
    // catches up.
    procs[old_i] = Some(if flavor.durable() {
        Proc::start(&specs[old_i])
    } else {
        Proc::start_env(&specs[old_i], &[("RAFTKIT_BOOTSTRAP", "false")])
    });
    let restarted = &specs[old_i];
    wait_until(
        DEADLINE,
        "restarted node catches up (stale read of k49)",
        || async {
            let got = get(&c, restarted, "k49", "stale").await?;
            (got == (StatusCode::OK, "v49".to_string())).then_some(())
        },
    )
    .await;
    for s in &specs {
        for (k, v) in &acked {
            let got = read_linearizable(&c, s, k).await;
            assert_eq!(
                got,
                (StatusCode::OK, v.clone()),
                "{k} read from {} at the end",
                s.id
            );
        }
    }
    let log = procs[old_i].as_ref().unwrap().log_text();
    if flavor.durable() && old_i == 0 {
        assert!(log.contains("bootstrap skipped"), "restart log:\n{log}");
    }
    let v: serde_json::Value = c
        .get(restarted.url("/cluster"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (transport, storage) = match flavor {
        Flavor::TCP_LMDB => ("tcp", "lmdb"),
        Flavor::QUIC_FILE => ("quic", "file"),
        Flavor::TCP_MEMORY => ("tcp", "memory"),
        other => panic!("no names for {other:?}"),
    };
    assert_eq!(
        (v["transport"].as_str(), v["storage"].as_str()),
        (Some(transport), Some(storage)),
        "{v}"
    );
}

async fn pid_of(client: &reqwest::Client, spec: &NodeSpec) -> Option<u64> {
    cluster_json(client, spec).await?["pid"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarts_a_crashed_node_and_ctrl_c_stops_all() {
    let dir = tempfile::tempdir().unwrap();
    let specs = cluster_profiles(dir.path(), 3);
    let mut up = Proc::start_args(
        &["up", &dir.path().display().to_string()],
        &dir.path().join("up.out"),
    );
    let c = client();
    for s in &specs {
        wait_until(DEADLINE, &format!("{} ready under up", s.id), || {
            ready(&c, s)
        })
        .await;
    }
    put_acked(&c, &specs[1], "a", "1").await;

    // kill -9 one child: `up` starts it again and it catches up.
    let victim = &specs[2];
    let pid = wait_until(DEADLINE, "pid of n3", || pid_of(&c, victim)).await;
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    wait_until(DEADLINE, "n3 restarted by up with a new pid", || async {
        let now = pid_of(&c, victim).await?;
        (now != u64::from(pid.as_raw_nonzero().get().unsigned_abs())).then_some(())
    })
    .await;
    wait_until(DEADLINE, "restarted n3 serves a", || async {
        let got = get(&c, victim, "a", "stale").await?;
        (got == (StatusCode::OK, "1".to_string())).then_some(())
    })
    .await;

    // Ctrl-C to `up` stops every node and exits 0.
    let up_pid = rustix::process::Pid::from_raw(i32::try_from(up.child.id()).unwrap()).unwrap();
    rustix::process::kill_process(up_pid, rustix::process::Signal::INT).unwrap();
    let status = wait_until(DEADLINE, "up exits after SIGINT", || {
        let s = up.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert_eq!(status.code(), Some(0), "up output:\n{}", up.log_text());
    let out = up.log_text();
    for s in &specs {
        assert!(
            out.contains(&format!("{}: exited 0", s.id)),
            "up output:\n{out}"
        );
    }
}

/// What a client learned from its CAS increments.
#[derive(Default)]
struct Tally {
    acked: u64,
    unknown: u64,
}

/// Increments the counter `ctr` by CAS through the nodes in `order` (moving
/// on when one is unreachable) until `want` increments were acknowledged or
/// came back with an unknown outcome.
async fn increment(c: reqwest::Client, specs: Vec<NodeSpec>, first: usize, want: u64) -> Tally {
    let mut tally = Tally::default();
    let mut at = first;
    let deadline = std::time::Instant::now() + DEADLINE;
    while tally.acked + tally.unknown < want {
        assert!(
            std::time::Instant::now() < deadline,
            "increments did not finish in {DEADLINE:?}"
        );
        let node = &specs[at % specs.len()];
        let current = match get(&c, node, "ctr", "linearizable").await {
            Some((StatusCode::OK, v)) => v.parse::<u64>().unwrap(),
            Some((StatusCode::NOT_FOUND, _)) => 0,
            _ => {
                at += 1;
                continue;
            }
        };
        let expected = (current > 0).then(|| current.to_string());
        let body = serde_json::json!({"expected": expected, "new": (current + 1).to_string()});
        match c.post(node.url("/kv/ctr/cas")).json(&body).send().await {
            Ok(r) if r.status() == StatusCode::OK => tally.acked += 1,
            Ok(r) if r.status() == StatusCode::CONFLICT => {}
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => at += 1,
            Ok(r) if r.status() == StatusCode::GATEWAY_TIMEOUT => tally.unknown += 1,
            Ok(r) => panic!("CAS via {}: unexpected {}", node.id, r.status()),
            // The request may or may not have reached the node.
            Err(_) => {
                tally.unknown += 1;
                at += 1;
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_increments_lose_and_invent_nothing_across_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let specs = cluster_profiles(dir.path(), 3);
    let mut procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let c = client();
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;
    let clients: Vec<_> = (0..3)
        .map(|i| tokio::spawn(increment(c.clone(), specs.clone(), i, 20)))
        .collect();

    // Kill the leader once the counter is under way.
    wait_until(DEADLINE, "counter reaches 10", || async {
        let (s, v) = get(&c, &specs[0], "ctr", "stale").await?;
        (s == StatusCode::OK && v.parse::<u64>().ok()? >= 10).then_some(())
    })
    .await;
    let leader = wait_until(DEADLINE, "a leader", || leader_of(&c, &specs[0])).await;
    let li = specs.iter().position(|s| s.id == leader).unwrap();
    procs[li].kill9();

    let mut total = Tally::default();
    for client in clients {
        let t = client.await.unwrap();
        total.acked += t.acked;
        total.unknown += t.unknown;
    }
    procs[li] = Proc::start(&specs[li]);
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;
    let mut finals = Vec::new();
    for s in &specs {
        let (status, v) = get(&c, s, "ctr", "linearizable").await.unwrap();
        assert_eq!(status, StatusCode::OK);
        finals.push(v.parse::<u64>().unwrap());
    }
    assert!(
        finals.iter().all(|v| *v == finals[0]),
        "nodes disagree: {finals:?}"
    );
    let value = finals[0];
    assert!(
        total.acked <= value && value <= total.acked + total.unknown,
        "counter {value}: {} acknowledged, {} unknown",
        total.acked,
        total.unknown
    );
}
