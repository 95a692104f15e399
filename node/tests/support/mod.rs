//! Helpers for tests that run the real `raftkit` binary.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Raft timing of every test profile: the library's defaults, which keep
/// leaders stable on a loaded 2-core CI machine; failover takes 1-2 s.
pub const RAFT_TIMING: &str =
    "[raft]\nheartbeat_timeout = \"1s\"\nelection_timeout = \"1s\"\nleader_lease_timeout = \"500ms\"\n";

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_raftkit");

/// A free port on 127.0.0.1 (see [`raftkit::testing::free_port`]).
pub fn free_port() -> u16 {
    raftkit::testing::free_port().expect("a free port on 127.0.0.1")
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

/// Which transport the test profiles use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TCP with mutual TLS from certificates made by `raftkit_node::certs`.
    TcpTls,
    /// QUIC (always mutual TLS) from certificates made by `raftkit_node::certs`.
    Quic,
}

/// Which storage backend the test profiles use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    File,
    Lmdb,
    Memory,
}

/// A transport × storage combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flavor {
    pub transport: Transport,
    pub storage: Storage,
}

impl Flavor {
    pub const TCP_FILE: Flavor = Flavor {
        transport: Transport::Tcp,
        storage: Storage::File,
    };
    pub const TCP_LMDB: Flavor = Flavor {
        transport: Transport::Tcp,
        storage: Storage::Lmdb,
    };
    pub const TCP_MEMORY: Flavor = Flavor {
        transport: Transport::Tcp,
        storage: Storage::Memory,
    };
    pub const QUIC_FILE: Flavor = Flavor {
        transport: Transport::Quic,
        storage: Storage::File,
    };

    /// Whether a restarted node finds its log again.
    pub fn durable(self) -> bool {
        self.storage != Storage::Memory
    }

    fn tls(self) -> bool {
        self.transport != Transport::Tcp
    }

    /// `[transport]` and `[storage]` for server `id`, with certificates
    /// under `root/certs`.
    fn sections(self, root: &Path, id: &str) -> String {
        let kind = match self.transport {
            Transport::Tcp | Transport::TcpTls => "tcp",
            Transport::Quic => "quic",
        };
        let mut text = format!("[transport]\nkind = \"{kind}\"\n");
        if self.tls() {
            let certs = root.join("certs");
            text.push_str(&format!(
                "[transport.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                certs.join("ca.pem").display(),
                certs.join(format!("{id}.pem")).display(),
                certs.join(format!("{id}.key")).display()
            ));
        }
        let storage = match self.storage {
            Storage::File => "kind = \"file\"\n",
            // A small map keeps many test clusters cheap; it grows when full.
            Storage::Lmdb => "kind = \"lmdb\"\nmap_size = \"64MiB\"\n",
            Storage::Memory => "kind = \"memory\"\n",
        };
        format!("{text}\n[storage]\n{storage}")
    }
}

/// Server ids the certificates of a TLS test cluster cover.
pub const CERT_IDS: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

fn spec(root: &Path, id: &str) -> NodeSpec {
    NodeSpec {
        id: id.to_string(),
        http_port: free_port(),
        raft_port: free_port(),
        profile: root.join(format!("{id}.toml")),
        data_dir: root.join(format!("data/{id}")),
    }
}

/// Writes profiles for an `n`-node TCP + file cluster under `root`; node 1 bootstraps.
pub fn cluster_profiles(root: &Path, n: usize) -> Vec<NodeSpec> {
    cluster_profiles_with(root, n, Flavor::TCP_FILE, "")
}

/// Writes profiles for an `n`-node cluster of `flavor` under `root`; node 1
/// bootstraps. `raft_extra` is appended to every `[raft]` section. TLS
/// flavors get fresh certificates for [`CERT_IDS`] in `root/certs`.
pub fn cluster_profiles_with(
    root: &Path,
    n: usize,
    flavor: Flavor,
    raft_extra: &str,
) -> Vec<NodeSpec> {
    if flavor.tls() {
        let ids: Vec<String> = CERT_IDS.iter().map(|s| s.to_string()).collect();
        raftkit_node::certs::generate(&root.join("certs"), &ids, false)
            .expect("generate test certificates");
    }
    let specs: Vec<NodeSpec> = (1..=n).map(|i| spec(root, &format!("n{i}"))).collect();
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
             bootstrap = {}\n\n{}\n{RAFT_TIMING}{raft_extra}\n[http]\nrequest_timeout = \"3s\"\n\n{servers}",
            s.id,
            s.data_dir.display(),
            s.http_port,
            s.raft_port,
            i == 0,
            flavor.sections(root, &s.id),
        );
        std::fs::write(&s.profile, text).expect("write profile");
    }
    specs
}

/// Writes the profile of a node `id` of `flavor` that joins through `via`
/// (as a non-voter if `nonvoter`).
pub fn joiner_profile(
    root: &Path,
    id: &str,
    flavor: Flavor,
    via: &NodeSpec,
    nonvoter: bool,
    raft_extra: &str,
) -> NodeSpec {
    let s = spec(root, id);
    let text = format!(
        "id = \"{id}\"\ndata_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\n\
         join = [\"{}\"]\nnonvoter = {nonvoter}\n\n{}\n{RAFT_TIMING}{raft_extra}\n[http]\nrequest_timeout = \"3s\"\n",
        s.data_dir.display(),
        s.http_port,
        s.raft_port,
        via.url(""),
        flavor.sections(root, id),
    );
    std::fs::write(&s.profile, text).expect("write profile");
    s
}

/// A running `raftkit run` process; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(spec: &NodeSpec) -> Proc {
        Proc::start_env(spec, &[])
    }

    /// Starts `spec`'s node with extra environment variables (profile
    /// overrides such as `RAFTKIT_BOOTSTRAP=false`).
    pub fn start_env(spec: &NodeSpec, env: &[(&str, &str)]) -> Proc {
        let log = spec
            .profile
            .with_extension(format!("{}.log", std::process::id()));
        Proc::start_args_env(
            &["run", "--profile", &spec.profile.display().to_string()],
            &log,
            env,
        )
    }

    pub fn start_args(args: &[&str], log: &Path) -> Proc {
        Proc::start_args_env(args, log, &[])
    }

    pub fn start_args_env(args: &[&str], log: &Path, env: &[(&str, &str)]) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
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

    /// Sends SIGTERM.
    pub fn send_term(&self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
            .expect("nonzero pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }

    /// Waits (polling, with a deadline) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {timeout:?}; log:\n{}",
                self.log_text()
            );
            poll.tick().await;
        }
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

/// PUT until acknowledged (within 30 s). 503 (no leader; nothing proposed)
/// and 504 (outcome unknown) are retried: putting the same value again is
/// idempotent, so the key ends with `value` either way. Anything else fails.
pub async fn put_acked(client: &reqwest::Client, spec: &NodeSpec, key: &str, value: &str) {
    wait_until(
        Duration::from_secs(30),
        &format!("PUT {key} via {} acknowledged", spec.id),
        || async {
            let r = client
                .put(spec.url(&format!("/kv/{key}")))
                .body(value.to_string())
                .send()
                .await
                .ok()?;
            match r.status() {
                reqwest::StatusCode::NO_CONTENT => Some(()),
                reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::GATEWAY_TIMEOUT => {
                    None
                }
                other => panic!("PUT {key} via {}: unexpected {other}", spec.id),
            }
        },
    )
    .await
}

/// `GET /kv/{key}?consistency=...`: status and body, or `None` if the
/// request failed.
pub async fn get(
    client: &reqwest::Client,
    spec: &NodeSpec,
    key: &str,
    consistency: &str,
) -> Option<(reqwest::StatusCode, String)> {
    let r = client
        .get(spec.url(&format!("/kv/{key}?consistency={consistency}")))
        .send()
        .await
        .ok()?;
    let status = r.status();
    Some((status, r.text().await.ok()?))
}

/// The node's `/metrics` page.
///
/// # Panics
/// If the node does not answer.
pub async fn metrics_text(client: &reqwest::Client, spec: &NodeSpec) -> String {
    client
        .get(spec.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the /metrics body")
}

/// `GET /cluster` as JSON, or `None` if the request failed.
pub async fn cluster_json(client: &reqwest::Client, spec: &NodeSpec) -> Option<serde_json::Value> {
    client
        .get(spec.url("/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The servers of a `GET /cluster` answer as sorted `(id, raft_addr, suffrage)`.
pub fn servers_of(v: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut servers: Vec<(String, String, String)> = v["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                    (f("id"), f("raft_addr"), f("suffrage"))
                })
                .collect()
        })
        .unwrap_or_default();
    servers.sort();
    servers
}

/// The value of an unlabelled sample `name` in a Prometheus text scrape.
pub fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// A linearizable read of `key` through `spec`: status and body. A 503
/// (no leader known, or the leader's HTTP address not known there yet; the
/// spec's "retry") is retried for up to 30 s; any other answer is returned.
pub async fn read_linearizable(
    client: &reqwest::Client,
    spec: &NodeSpec,
    key: &str,
) -> (reqwest::StatusCode, String) {
    wait_until(
        Duration::from_secs(30),
        &format!("a linearizable read of {key} via {} answered", spec.id),
        || async {
            let (status, body) = get(client, spec, key, "linearizable").await?;
            (status != reqwest::StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
        },
    )
    .await
}
