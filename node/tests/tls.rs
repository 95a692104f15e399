//! Two real processes whose TCP transport uses mutual TLS from the profile's
//! `[transport.tls]`, with certificates made at test time by `raftkit certs`:
//! they elect a leader and replicate writes. And `raftkit certs` itself.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use support::{client, free_port, run_to_end, wait_until, NodeSpec, Proc};

/// `raftkit certs DIR --servers a,b` into `root/certs`.
fn certs(root: &Path) -> PathBuf {
    let dir = root.join("certs");
    let (code, stderr) = run_to_end(&["certs", &dir.display().to_string(), "--servers", "a,b"]);
    assert_eq!(code, 0, "raftkit certs failed: {stderr}");
    dir
}

#[test]
fn certs_command_writes_a_ca_and_one_pair_per_server_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut names: Vec<String> = std::fs::read_dir(&certs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a.key", "a.pem", "b.key", "b.pem", "ca.key", "ca.pem"]
    );
    let before = std::fs::read(certs.join("a.key")).unwrap();

    let d = certs.display().to_string();
    let (code, stderr) = run_to_end(&["certs", &d, "--servers", "a,c"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("a.key"),
        "{stderr}"
    );
    assert!(!certs.join("c.pem").exists(), "wrote files after refusing");
    assert_eq!(std::fs::read(certs.join("a.key")).unwrap(), before);

    let (code, stderr) = run_to_end(&["certs", &d, "--servers", "a,c", "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert_ne!(std::fs::read(certs.join("a.key")).unwrap(), before);
    assert!(certs.join("c.pem").exists());

    let (code, stderr) = run_to_end(&["certs", &d, "--servers", "10.0.0.1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("\"10.0.0.1\"") && stderr.contains("DNS name"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<NodeSpec> = ["a", "b"]
        .iter()
        .map(|id| NodeSpec {
            id: id.to_string(),
            http_port: free_port(),
            raft_port: free_port(),
            profile: dir.path().join(format!("{id}.toml")),
            data_dir: dir.path().join(format!("data/{id}")),
        })
        .collect();
    let certs = certs(dir.path());
    for (i, s) in specs.iter().enumerate() {
        let text = format!(
            "id = \"{id}\"\ndata_dir = \"{data}\"\nhttp_addr = \"127.0.0.1:{http}\"\n\
             raft_addr = \"127.0.0.1:{raft}\"\nbootstrap = {boot}\n\n\
             [transport]\nkind = \"tcp\"\n[transport.tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             {timing}\n\
             [[cluster.servers]]\nid = \"a\"\nraft_addr = \"127.0.0.1:{ra}\"\n\
             [[cluster.servers]]\nid = \"b\"\nraft_addr = \"127.0.0.1:{rb}\"\n",
            id = s.id,
            data = s.data_dir.display(),
            http = s.http_port,
            raft = s.raft_port,
            boot = i == 0,
            ca = certs.join("ca.pem").display(),
            cert = certs.join(format!("{}.pem", s.id)).display(),
            key = certs.join(format!("{}.key", s.id)).display(),
            ra = specs[0].raft_port,
            rb = specs[1].raft_port,
            timing = support::RAFT_TIMING,
        );
        std::fs::write(&s.profile, text).unwrap();
    }
    let _procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let c = client();
    let deadline = Duration::from_secs(30);
    for s in &specs {
        wait_until(deadline, &format!("{} ready over TLS", s.id), || async {
            let r = c.get(s.url("/ready")).send().await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        })
        .await;
    }
    wait_until(deadline, "PUT via b acknowledged", || async {
        let r = c.put(specs[1].url("/kv/x")).body("y").send().await.ok()?;
        (r.status() == StatusCode::NO_CONTENT).then_some(())
    })
    .await;
    let r = c.get(specs[0].url("/kv/x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "y");
}
