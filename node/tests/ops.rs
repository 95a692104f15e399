//! Cluster operations against real processes: growing to five servers
//! (a voter and a non-voter join, the non-voter is promoted), SIGTERM of
//! every node and a restart with the same data and configuration, a node
//! that was down while the log was compacted past it catching up by
//! snapshot install, and removing the current leader.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{
    client, cluster_json, cluster_profiles_with, get, joiner_profile, leader_of, metrics_text,
    put_acked, read_linearizable, sample, servers_of, wait_until, Flavor, NodeSpec, Proc,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Every key of `acked` reads back linearizably from every node in `specs`.
async fn all_readable(c: &reqwest::Client, specs: &[NodeSpec], acked: &BTreeMap<String, String>) {
    for s in specs {
        for (k, v) in acked {
            let got = read_linearizable(c, s, k).await;
            assert_eq!(got, (StatusCode::OK, v.clone()), "{k} read from {}", s.id);
        }
    }
}

/// Waits until every node reports the same configuration, and returns it.
async fn agreed_configuration(
    c: &reqwest::Client,
    specs: &[NodeSpec],
    what: &str,
) -> Vec<(String, String, String)> {
    wait_until(DEADLINE, what, || async {
        let mut seen = Vec::new();
        for s in specs {
            seen.push(servers_of(&cluster_json(c, s).await?));
        }
        seen.iter().all(|x| *x == seen[0]).then(|| seen.remove(0))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_by_join_and_promotion_survive_sigterm_of_every_node_quic_file() {
    grow_to_five_then_restart_all(Flavor::QUIC_FILE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_servers_by_join_and_promotion_survive_sigterm_of_every_node_tcp_lmdb() {
    grow_to_five_then_restart_all(Flavor::TCP_LMDB).await;
}

/// Three nodes bootstrap; n4 joins as a voter and n5 as a non-voter (each
/// through a follower's `join`); n5 is promoted with `POST /cluster/voters`;
/// `GET /cluster` shows five voters everywhere. Then SIGTERM to every node
/// (each exits 0), a restart of all: the same data and configuration.
async fn grow_to_five_then_restart_all(flavor: Flavor) {
    let dir = tempfile::tempdir().unwrap();
    let mut specs = cluster_profiles_with(dir.path(), 3, flavor, "");
    let mut procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let c = client();
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;

    let n4 = joiner_profile(dir.path(), "n4", flavor, &specs[1], false, "");
    let n5 = joiner_profile(dir.path(), "n5", flavor, &specs[2], true, "");
    procs.push(Proc::start(&n4));
    procs.push(Proc::start(&n5));
    specs.push(n4);
    specs.push(n5.clone());
    wait_until(DEADLINE, "n4 a voter and n5 a non-voter", || async {
        let servers = servers_of(&cluster_json(&c, &specs[0]).await?);
        let has = |id: &str, suffrage: &str| servers.iter().any(|s| s.0 == id && s.2 == suffrage);
        (has("n4", "Voter") && has("n5", "Nonvoter")).then_some(())
    })
    .await;

    // Promote n5 through a node that is not the leader (forwarded).
    let leader = wait_until(DEADLINE, "a leader", || leader_of(&c, &specs[0])).await;
    let via = specs.iter().find(|s| s.id != leader).unwrap();
    let body = json!({"id": "n5", "raft_addr": format!("127.0.0.1:{}", n5.raft_port)});
    let r = c
        .post(via.url("/cluster/voters"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let before = agreed_configuration(&c, &specs, "all five agree on five voters").await;
    let ids: Vec<&str> = before.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ids, ["n1", "n2", "n3", "n4", "n5"], "{before:?}");
    assert!(before.iter().all(|s| s.2 == "Voter"), "{before:?}");
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;

    let mut acked = BTreeMap::new();
    for i in 0..25 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        put_acked(&c, &specs[i % 5], &key, &value).await;
        acked.insert(key, value);
    }
    all_readable(&c, &specs, &acked).await;

    // SIGTERM to every node at once; each exits 0.
    for p in &procs {
        p.send_term();
    }
    for (p, s) in procs.iter_mut().zip(&specs) {
        let status = p.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "{} after SIGTERM; log:\n{}",
            s.id,
            p.log_text()
        );
    }

    // All restart from their profiles: same data, same configuration.
    let procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;
    let after = agreed_configuration(&c, &specs, "all five agree after the restart").await;
    assert_eq!(after, before);
    all_readable(&c, &specs, &acked).await;
    put_acked(&c, &specs[4], "after", "restart").await;
}

/// Small snapshot threshold and trailing log: 200 writes compact far past
/// what a stopped follower has.
const COMPACT_OFTEN: &str =
    "snapshot_threshold = 40\ntrailing_logs = 10\nsnapshot_interval = \"200ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_while_the_log_is_compacted_catches_up_by_snapshot_install_tcp_lmdb() {
    snapshot_catch_up(Flavor::TCP_LMDB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_while_the_log_is_compacted_catches_up_by_snapshot_install_quic_file() {
    snapshot_catch_up(Flavor::QUIC_FILE).await;
}

/// A follower is killed; 200 writes make the leader snapshot and compact its
/// log past everything the follower has; the follower restarts and must
/// catch up by InstallSnapshot (its `raft_snapshot_installs_total` counts it),
/// ending with every acknowledged write.
async fn snapshot_catch_up(flavor: Flavor) {
    let dir = tempfile::tempdir().unwrap();
    let specs = cluster_profiles_with(dir.path(), 3, flavor, COMPACT_OFTEN);
    let mut procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let c = client();
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;
    let leader = wait_until(DEADLINE, "a leader", || leader_of(&c, &specs[0])).await;
    let li = specs.iter().position(|s| s.id == leader).unwrap();
    let di = (li + 1) % 3;
    let (down, up) = (&specs[di], &specs[3 - li - di]);

    let mut acked = BTreeMap::new();
    for i in 0..5 {
        put_acked(&c, &specs[li], &format!("k{i}"), &format!("v{i}")).await;
        acked.insert(format!("k{i}"), format!("v{i}"));
    }
    let had = wait_until(DEADLINE, "the follower holds the first writes", || async {
        let v = cluster_json(&c, down).await?;
        let applied = v["applied_index"].as_u64()?;
        (get(&c, down, "k4", "stale").await? == (StatusCode::OK, "v4".into())).then_some(applied)
    })
    .await;
    let last = cluster_json(&c, down).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    procs[di].kill9();

    // Writes through the leader and the other follower while it is down.
    for i in 5..205 {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let via = if i % 2 == 0 { &specs[li] } else { up };
        put_acked(&c, via, &key, &value).await;
        acked.insert(key, value);
    }
    let compacted = wait_until(
        DEADLINE,
        "the leader compacts past the stopped node",
        || async {
            let v = cluster_json(&c, &specs[li]).await?;
            let first = v["first_log_index"].as_u64()?;
            (first > last + 1).then_some(first)
        },
    )
    .await;

    procs[di] = Proc::start(down);
    wait_until(
        DEADLINE,
        "the restarted node serves the last write",
        || async {
            (get(&c, down, "k204", "stale").await? == (StatusCode::OK, "v204".into())).then_some(())
        },
    )
    .await;
    let scrape = metrics_text(&c, down).await;
    let installs = sample(&scrape, "raft_snapshot_installs_total");
    assert!(
        installs.is_some_and(|n| n >= 1.0),
        "node down at index {last} (applied {had}), leader's log starts at {compacted}: \
         raft_snapshot_installs_total = {installs:?}; log:\n{}",
        procs[di].log_text()
    );
    let v = cluster_json(&c, down).await.unwrap();
    assert!(
        v["last_snapshot_index"].as_u64().unwrap() >= compacted - 1,
        "its snapshot must cover what the leader compacted: {v}"
    );
    for (k, want) in &acked {
        let got = get(&c, down, k, "stale").await;
        assert_eq!(
            got,
            Some((StatusCode::OK, want.clone())),
            "{k} on {}",
            down.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_current_leader_answers_200_and_the_change_commits() {
    let dir = tempfile::tempdir().unwrap();
    let specs = cluster_profiles_with(dir.path(), 3, Flavor::TCP_FILE, "");
    let mut procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let c = client();
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;
    let leader = wait_until(DEADLINE, "a leader", || leader_of(&c, &specs[0])).await;
    let li = specs.iter().position(|s| s.id == leader).unwrap();
    put_acked(&c, &specs[li], "before", "removal").await;

    // Sent to the leader itself: it commits its removal and steps down in
    // the same step; the answer is the committed configuration index.
    let r = c
        .delete(specs[li].url(&format!("/cluster/servers/{leader}")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let index = serde_json::from_str::<serde_json::Value>(&body).unwrap()["index"]
        .as_u64()
        .unwrap();
    let rest: Vec<NodeSpec> = specs.iter().filter(|s| s.id != leader).cloned().collect();
    let servers =
        agreed_configuration(&c, &rest, "the others agree on the new configuration").await;
    assert!(servers.iter().all(|s| s.0 != leader), "{servers:?}");
    // The followers learn that the entry committed from the next leader.
    wait_until(
        DEADLINE,
        "a new leader commits past the removal",
        || async {
            let v = cluster_json(&c, &rest[0]).await?;
            (v["state"] == "Leader" || v["leader"]["id"].is_string())
                .then_some(())
                .filter(|_| v["commit_index"].as_u64().unwrap_or(0) >= index)
        },
    )
    .await;
    let status = procs[li].wait_exit(DEADLINE).await;
    assert_eq!(
        status.code(),
        Some(0),
        "removed leader: {}",
        procs[li].log_text()
    );
    put_acked(&c, &rest[0], "after", "removal").await;
    // 503 (the new leader's HTTP address not replicated here yet) means retry.
    wait_until(
        DEADLINE,
        "the write before the removal reads back",
        || async {
            match get(&c, &rest[1], "before", "linearizable").await? {
                (StatusCode::OK, v) => {
                    assert_eq!(v, "removal");
                    Some(())
                }
                (StatusCode::SERVICE_UNAVAILABLE, _) => None,
                other => panic!("read after the removal: {other:?}"),
            }
        },
    )
    .await;
}
