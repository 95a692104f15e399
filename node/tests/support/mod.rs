//! Helpers for tests that run the real `raftkit` binary.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Raft timing of every test profile: the library's defaults, which keep
/// leaders stable on a loaded 2-core CI machine; failover takes 1-2 s.
pub const RAFT_TIMING: &str =
    "[raft]\nheartbeat_timeout = \"1s\"\nelection_timeout = \"1s\"\nleader_lease_timeout = \"500ms\"\n";

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_raftkit");

/// A free port on 127.0.0.1, found by binding :0.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 50 ms until it yields `Some`, failing with `what`
/// once `timeout` has passed.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        poll.tick().await;
    }
}

/// One node's addresses and profile.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: String,
    pub http_port: u16,
    pub raft_port: u16,
    pub profile: PathBuf,
    pub data_dir: PathBuf,
}

impl NodeSpec {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }
}

/// Writes profiles for an `n`-node TCP + file cluster under `root`; node 1 bootstraps.
pub fn cluster_profiles(root: &Path, n: usize) -> Vec<NodeSpec> {
    let specs: Vec<NodeSpec> = (1..=n)
        .map(|i| NodeSpec {
            id: format!("n{i}"),
            http_port: free_port(),
            raft_port: free_port(),
            profile: root.join(format!("n{i}.toml")),
            data_dir: root.join(format!("data/n{i}")),
        })
        .collect();
    let servers: String = specs
        .iter()
        .map(|s| {
            format!(
                "[[cluster.servers]]\nid = \"{}\"\nraft_addr = \"127.0.0.1:{}\"\n",
                s.id, s.raft_port
            )
        })
        .collect();
    for (i, s) in specs.iter().enumerate() {
        let text = format!(
            "id = \"{}\"\ndata_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\n\
             bootstrap = {}\n\n[storage]\nkind = \"file\"\n\n{RAFT_TIMING}\n[http]\nrequest_timeout = \"3s\"\n\n{servers}",
            s.id,
            s.data_dir.display(),
            s.http_port,
            s.raft_port,
            i == 0
        );
        std::fs::write(&s.profile, text).expect("write profile");
    }
    specs
}

/// A running `raftkit run` process; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(spec: &NodeSpec) -> Proc {
        let log = spec
            .profile
            .with_extension(format!("{}.log", std::process::id()));
        Proc::start_args(
            &["run", "--profile", &spec.profile.display().to_string()],
            &log,
        )
    }

    pub fn start_args(args: &[&str], log: &Path) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .expect("spawn raftkit");
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the binary to completion; returns (exit code, stderr).
pub fn run_to_end(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().expect("run raftkit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The leader a node reports in `GET /cluster`, if any.
pub async fn leader_of(client: &reqwest::Client, spec: &NodeSpec) -> Option<String> {
    let v: serde_json::Value = client
        .get(spec.url("/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["leader"]["id"].as_str().map(str::to_string)
}

/// Waits until every node answers `/ready` 200; on timeout, fails with
/// every process's log.
pub async fn wait_ready(
    client: &reqwest::Client,
    specs: &[NodeSpec],
    procs: &[&Proc],
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    for s in specs {
        loop {
            let ok = match client.get(s.url("/ready")).send().await {
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            };
            if ok {
                break;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = procs
                    .iter()
                    .map(|p| format!("== {}\n{}", p.log.display(), p.log_text()))
                    .collect();
                panic!(
                    "{} not ready after {timeout:?}; logs:\n{}",
                    s.id,
                    logs.join("\n")
                );
            }
            poll.tick().await;
        }
    }
}
