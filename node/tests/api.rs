//! The HTTP contract (shared/spec/node-api.md) against real processes:
//! status codes, headers, forwarding from followers, admin calls, join.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{
    client, cluster_json, cluster_profiles, free_port, leader_of, metrics_text, wait_until,
    NodeSpec, Proc,
};

const DEADLINE: Duration = Duration::from_secs(30);

async fn cluster(c: &reqwest::Client, s: &NodeSpec) -> Value {
    cluster_json(c, s).await.expect("GET /cluster answers JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_forwards_and_admin_calls_follow_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let specs = cluster_profiles(dir.path(), 3);
    let mut procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let c = client();
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, DEADLINE).await;
    let leader = wait_until(DEADLINE, "leader", || leader_of(&c, &specs[0])).await;
    let follower = specs.iter().find(|s| s.id != leader).unwrap();

    // Writes through a follower: 204, X-Raft-Leader names the leader.
    let r = c
        .put(follower.url("/kv/a%2Fb"))
        .body("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["x-raft-leader"], leader.as_str());
    let r = c.get(follower.url("/kv/a%2Fb")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "v1");
    let r = c
        .get(follower.url("/kv/a%2Fb?consistency=lease"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A stale read answers from the follower's own state machine, which
    // applies the write when the next heartbeat brings the commit index.
    wait_until(DEADLINE, "stale read on the follower sees v1", || async {
        let r = c
            .get(follower.url("/kv/a%2Fb?consistency=stale"))
            .send()
            .await
            .ok()?;
        assert!(r.headers().contains_key("x-raft-applied-index"));
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
    let r = c.get(follower.url("/kv/absent")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.delete(follower.url("/kv/absent")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // CAS: create-if-absent, conflict with the current value, delete.
    let cas = |body: Value| c.post(follower.url("/kv/c/cas")).json(&body).send();
    assert_eq!(
        cas(json!({"expected": null, "new": "x"}))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = cas(json!({"expected": null, "new": "y"})).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"current": "x"}));
    assert_eq!(
        cas(json!({"expected": "x", "new": null}))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Limits: 413 over max_value_bytes (1 MiB default), 400 on a bad read mode.
    let big = vec![b'z'; (1 << 20) + 1];
    let r = c
        .put(follower.url("/kv/big"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c
        .get(follower.url("/kv/a?consistency=eventually"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A fourth node joins as a non-voter through a follower, is promoted,
    // demoted, and removed; each answer carries the configuration index.
    let n4 = join_fourth_node(dir.path(), &specs);
    let _n4 = Proc::start(&n4);
    wait_until(
        DEADLINE,
        "n4 in the configuration as a non-voter",
        || async {
            let v = cluster(&c, &specs[0]).await;
            let servers = v["servers"].as_array()?.clone();
            servers
                .iter()
                .any(|s| s["id"] == "n4" && s["suffrage"] == "Nonvoter")
                .then_some(())
        },
    )
    .await;
    let body = json!({"id": "n4", "raft_addr": format!("127.0.0.1:{}", n4.raft_port)});
    let r = c
        .post(follower.url("/cluster/voters"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Value>().await.unwrap()["index"].as_u64().unwrap() > 0);
    let r = c
        .post(follower.url("/cluster/servers/n4/demote"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .delete(follower.url("/cluster/servers/n4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = cluster(&c, follower).await;
    assert!(
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != "n4"),
        "{v}"
    );

    // Snapshot and leadership transfer, both sent to a follower.
    let r = c
        .post(follower.url("/cluster/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let snap: Value = r.json().await.unwrap();
    assert!(snap["index"].as_u64().unwrap() > 0 && snap["term"].as_u64().unwrap() > 0);
    let r = c
        .post(follower.url("/cluster/leadership-transfer"))
        .json(&json!({"id": follower.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["leader"],
        follower.id.as_str()
    );
    let v = cluster(&c, follower).await;
    assert_eq!(v["state"], "Leader", "{v}");
    for key in [
        "id",
        "term",
        "leader",
        "servers",
        "commit_index",
        "applied_index",
        "last_log_index",
        "last_snapshot_index",
        "last_contact_ms",
        "transport",
        "storage",
    ] {
        assert!(!v[key].is_null(), "GET /cluster lacks {key}: {v}");
    }

    // Metrics: raft_* from the library and the HTTP histogram with its buckets.
    let text = metrics_text(&c, follower).await;
    assert!(text.contains("raft_"), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket{route=\"/kv/{key}\",le=\"0.0001\"}"),
        "{text}"
    );
    let r = c.get(follower.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Removing the leader: it steps down once the change commits, its raft
    // stops (shutdown_on_remove), and the process exits 0. The answer is 200
    // with the committed index. A change asked of a new leader before its
    // no-op commits waits for it rather than being refused.
    let url = follower.url(&format!("/cluster/servers/{}", follower.id));
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let i = specs.iter().position(|s| s.id == follower.id).unwrap();
    let removed = &mut procs[i];
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let status = loop {
        if let Some(s) = removed.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed leader did not exit; its log:\n{}",
            removed.log_text()
        );
        poll.tick().await;
    };
    assert_eq!(status.code(), Some(0), "log:\n{}", removed.log_text());
}

fn join_fourth_node(root: &std::path::Path, specs: &[NodeSpec]) -> NodeSpec {
    let n4 = NodeSpec {
        id: "n4".into(),
        http_port: free_port(),
        raft_port: free_port(),
        profile: root.join("n4.toml"),
        data_dir: root.join("data/n4"),
    };
    let text = format!(
        "id = \"n4\"\ndata_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\n\
         join = [\"{}\"]\nnonvoter = true\n\n{}",
        n4.data_dir.display(),
        n4.http_port,
        n4.raft_port,
        specs[1].url(""),
        support::RAFT_TIMING,
    );
    std::fs::write(&n4.profile, text).unwrap();
    n4
}
