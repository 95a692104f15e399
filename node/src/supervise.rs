//! `raftkit up DIR`: every profile in a folder as a supervised child process.
//!
//! ```text
//!  validate every DIR/*.toml (exit 2 on the first bad one, nothing started)
//!    ─▶ spawn `raftkit run --profile F` per file, stderr to <data_dir>.log
//!    ─▶ every second: reap exits (restart a crashed child; a clean exit or a
//!       bad profile stays down), GET /cluster of each, redraw the table
//!    ─▶ Ctrl-C / SIGTERM: SIGTERM to every child, wait, SIGKILL stragglers
//! ```

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::Failure;

/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the table is redrawn and children are checked.
const REFRESH: Duration = Duration::from_secs(1);

struct Member {
    id: String,
    profile: PathBuf,
    http: String,
    log: PathBuf,
    process: Option<Child>,
    restarts: u32,
    last_exit: Option<String>,
}

/// Runs every `*.toml` profile of `dir` until Ctrl-C or SIGTERM.
pub async fn up(dir: &Path) -> Result<(), Failure> {
    let mut members = load_members(dir)?;
    let exe = std::env::current_exe().context("finding the raftkit binary")?;
    for m in &mut members {
        m.process = Some(spawn(&exe, m)?);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .context("building the HTTP client")?;
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    let mut every = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {
                reap_and_restart(&exe, &mut members)?;
                draw(&client, &members).await;
            }
        }
    }
    stop_all(&mut members).await;
    println!("all nodes stopped");
    Ok(())
}

fn load_members(dir: &Path) -> Result<Vec<Member>, Failure> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(anyhow::anyhow!("{} holds no *.toml profiles", dir.display()).into());
    }
    files
        .into_iter()
        .map(|file| {
            let loaded = crate::load(std::slice::from_ref(&file), &Default::default())?;
            let p = loaded.profile;
            Ok(Member {
                id: p.id,
                log: p.data_dir.with_extension("log"),
                http: format!("http://{}", p.http_addr),
                profile: file,
                process: None,
                restarts: 0,
                last_exit: None,
            })
        })
        .collect()
}

fn spawn(exe: &Path, m: &Member) -> Result<Child, Failure> {
    if let Some(parent) = m.log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.log)
        .with_context(|| format!("opening {}", m.log.display()))?;
    let child = Command::new(exe)
        .arg("run")
        .arg("--profile")
        .arg(&m.profile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", m.id))?;
    Ok(child)
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited {code}"),
        None => "killed by a signal".into(),
    }
}

/// A child that crashed (exit 1 or a signal) is started again; exit 0
/// (asked to stop) and exit 2 (bad profile) stay down.
fn reap_and_restart(exe: &Path, members: &mut [Member]) -> Result<(), Failure> {
    for m in members.iter_mut() {
        let Some(child) = m.process.as_mut() else {
            continue;
        };
        let Ok(Some(status)) = child.try_wait() else {
            continue;
        };
        m.last_exit = Some(describe(status));
        m.process = None;
        if !matches!(status.code(), Some(0) | Some(2)) {
            m.process = Some(spawn(exe, m)?);
            m.restarts += 1;
        }
    }
    Ok(())
}

async fn draw(client: &reqwest::Client, members: &[Member]) {
    let mut out = String::new();
    if std::io::stdout().is_terminal() {
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!(
        "{:<24} {:<6} {:<10} {:>6} {:<6} {:>9} {:>9}  PROCESS\n",
        "NODE", "ID", "STATE", "TERM", "LEADER", "COMMIT", "APPLIED"
    ));
    for m in members {
        let process = match (&m.process, &m.last_exit) {
            (Some(c), _) => format!(
                "pid {} restarts {}",
                c.id().map_or("-".into(), |p| p.to_string()),
                m.restarts
            ),
            (None, Some(exit)) => format!("down ({exit})"),
            (None, None) => "down".into(),
        };
        let row = match fetch(client, &m.http).await {
            Some(v) => crate::client::status_line(&m.http, &v),
            None => format!("{:<24} {:<6} {:<10}", m.http, m.id, "unreachable"),
        };
        out.push_str(&format!("{row}  {process}\n"));
    }
    out.push_str("logs: <data_dir>.log   Ctrl-C stops every node\n");
    print!("{out}");
}

async fn fetch(client: &reqwest::Client, http: &str) -> Option<serde_json::Value> {
    client
        .get(format!("{http}/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn stop_all(members: &mut [Member]) {
    for m in members.iter() {
        if let Some(pid) = m.process.as_ref().and_then(Child::id) {
            let pid = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for m in members.iter_mut() {
        let Some(child) = m.process.as_mut() else {
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, child.wait()).await {
            Ok(Ok(status)) => println!("{}: {}", m.id, describe(status)),
            _ => {
                println!("{}: did not stop in {STOP_GRACE:?}; killing", m.id);
                let _ = child.kill().await;
            }
        }
    }
}
