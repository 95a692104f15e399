//! The cluster under test: real `raftkit run` processes from generated
//! profiles, on loopback ports or each in its own network namespace.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

use super::net::Net;
use super::{ChaosConfig, Storage, Transport};

/// Finds the `raftkit` binary: `RAFTKIT_BIN`, else next to the test
/// executable (`target/<profile>/raftkit`, built by `cargo nextest run
/// --workspace` or `cargo build -p raftkit-node`), else builds it with cargo.
pub fn raftkit_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RAFTKIT_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("RAFTKIT_BIN={} is not a file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating the test executable: {e}"))?;
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let candidate = dir.join("raftkit");
    if candidate.is_file() {
        return Ok(candidate);
    }
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "-p", "raftkit-node", "--bin", "raftkit"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        build.arg("--release");
    }
    eprintln!("chaos: {} not found; building it", candidate.display());
    let status = build
        .status()
        .map_err(|e| format!("running {cargo} build: {e}"))?;
    if !status.success() || !candidate.is_file() {
        return Err(format!(
            "building raftkit failed ({status}); build it with `cargo build -p raftkit-node --release` or set RAFTKIT_BIN"
        ));
    }
    Ok(candidate)
}

/// One node: its addresses, profile and (maybe) process.
pub struct Node {
    /// `n1`, `n2`, ...
    pub id: String,
    /// `http://addr:port` of its API.
    pub base: String,
    /// Its profile file.
    pub profile: PathBuf,
    /// Its log file (stdout and stderr of every incarnation).
    pub log: PathBuf,
    /// The command prefix (namespace) it runs under.
    prefix: Vec<String>,
    /// The running process, if any.
    pub child: Option<Child>,
    /// SIGSTOPped by the nemesis.
    pub paused: bool,
    /// How many times it was started.
    pub starts: u32,
}

/// The processes of one run. Dropping it kills every process, then removes
/// the network.
pub struct Cluster {
    /// The nodes, index 0 = `n1`.
    pub nodes: Vec<Node>,
    bin: PathBuf,
    /// The namespaces, if partitions are possible.
    pub net: Option<Net>,
}

/// `setpriv --pdeathsig KILL` when available: a node dies with the harness
/// (the thread that started it), even when the harness itself is SIGKILLed
/// by a test runner's timeout, instead of running on as an orphan.
fn death_guard() -> Vec<String> {
    let help = Command::new("setpriv").arg("--help").output();
    match help {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("--pdeathsig") => {
            ["setpriv", "--pdeathsig", "KILL"]
                .map(String::from)
                .to_vec()
        }
        _ => Vec::new(),
    }
}

fn free_port() -> Result<u16, String> {
    raftkit::testing::free_port().map_err(|e| e.to_string())
}

impl Cluster {
    /// Writes the profiles under `root` (does not start anything).
    pub fn create(cfg: &ChaosConfig, root: &Path, net: Option<Net>) -> Result<Cluster, String> {
        let bin = raftkit_binary()?;
        let n = cfg.nodes;
        let mut addrs = Vec::new();
        for i in 0..n {
            addrs.push(match &net {
                Some(net) => (
                    format!("{}:8000", net.addr(i)),
                    format!("{}:7000", net.addr(i)),
                ),
                None => (
                    format!("127.0.0.1:{}", free_port()?),
                    format!("127.0.0.1:{}", free_port()?),
                ),
            });
        }
        let mut servers = String::new();
        for (i, (_, raft)) in addrs.iter().enumerate() {
            let _ = write!(
                servers,
                "[[cluster.servers]]\nid = \"n{}\"\nraft_addr = \"{raft}\"\n\n",
                i + 1
            );
        }
        let death_guard = death_guard();
        let mut nodes = Vec::new();
        for (i, (http, raft)) in addrs.iter().enumerate() {
            let id = format!("n{}", i + 1);
            let dir = root.join(&id);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let profile = dir.join("profile.toml");
            let text = profile_text(cfg, &id, &dir, http, raft, i == 0, &servers);
            std::fs::write(&profile, text)
                .map_err(|e| format!("writing {}: {e}", profile.display()))?;
            nodes.push(Node {
                id,
                base: format!("http://{http}"),
                profile,
                log: dir.join("node.log"),
                prefix: {
                    let mut prefix = net.as_ref().map(|n| n.exec_prefix(i)).unwrap_or_default();
                    prefix.extend(death_guard.iter().cloned());
                    prefix
                },
                child: None,
                paused: false,
                starts: 0,
            });
        }
        Ok(Cluster { nodes, bin, net })
    }

    /// The binary the nodes run.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// Starts node `i` (its log is appended to).
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let bin = self.bin.clone();
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("opening {}: {e}", node.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match node.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // The node reads every RAFTKIT_* variable as a profile key (and
        // refuses unknown ones); none from the test's environment may reach
        // it. The harness's own settings are named CHAOS_* for that reason.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RAFTKIT_") {
                cmd.env_remove(name);
            }
        }
        cmd.arg("run")
            .arg("--profile")
            .arg(&node.profile)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", node.id))?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// SIGKILLs node `i` (resuming it first if paused, so it dies at once).
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            if node.paused {
                let _ = kill_process(Pid::from_child(&child), Signal::CONT);
            }
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP (`pause = true`) or SIGCONT node `i`.
    pub fn signal_pause(&mut self, i: usize, pause: bool) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let Some(child) = &node.child else {
            return Err(format!("{} is not running", node.id));
        };
        let signal = if pause { Signal::STOP } else { Signal::CONT };
        kill_process(Pid::from_child(child), signal)
            .map_err(|e| format!("signalling {}: {e}", node.id))?;
        node.paused = pause;
        Ok(())
    }

    /// Whether node `i` has a live process; reaps one that exited and says how.
    pub fn check_alive(&mut self, i: usize) -> Result<bool, String> {
        let node = &mut self.nodes[i];
        let Some(child) = &mut node.child else {
            return Ok(false);
        };
        match child.try_wait() {
            Ok(None) => Ok(true),
            Ok(Some(status)) => {
                node.child = None;
                Err(format!("{} exited by itself: {status}", node.id))
            }
            Err(e) => Err(format!("waiting for {}: {e}", node.id)),
        }
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // `net` drops after this, with no process left inside it.
    }
}

fn profile_text(
    cfg: &ChaosConfig,
    id: &str,
    dir: &Path,
    http: &str,
    raft: &str,
    bootstrap: bool,
    servers: &str,
) -> String {
    let transport = match cfg.transport {
        Transport::Tcp => "kind = \"tcp\"\n",
        Transport::Quic => "kind = \"quic\"\ninsecure_dev = true\n",
    };
    let storage = match cfg.storage {
        Storage::Lmdb => "kind = \"lmdb\"\nmap_size = \"256MiB\"\n",
        Storage::File => "kind = \"file\"\n",
    };
    let mut debug = String::new();
    if cfg.fault_injection() {
        debug.push_str("fault_injection = true\n");
    }
    if cfg.planted.stale_reads {
        debug.push_str("unsafe_stale_linearizable_reads = true\n");
    }
    if let Some(d) = cfg.planted.ack_before_fsync {
        let _ = writeln!(debug, "unsafe_ack_before_fsync = \"{}ms\"", d.as_millis());
    }
    let data = dir.join("data");
    format!(
        "id = \"{id}\"\ndata_dir = \"{}\"\nhttp_addr = \"{http}\"\nraft_addr = \"{raft}\"\nbootstrap = {bootstrap}\n\n\
         [transport]\n{transport}\n[storage]\n{storage}\n\
         [raft]\nheartbeat_timeout = \"{hb}ms\"\nelection_timeout = \"{hb}ms\"\nleader_lease_timeout = \"{lease}ms\"\n\n\
         [http]\nrequest_timeout = \"{rt}ms\"\n\n[debug]\n{debug}\n{servers}",
        data.display(),
        hb = cfg.raft_timeout.as_millis(),
        lease = (cfg.raft_timeout / 2).as_millis(),
        rt = cfg.node_request_timeout().as_millis(),
    )
}

/// How long node start-up may take before the run gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
