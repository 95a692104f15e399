//! Profile handling of the real binary: every shipped profile validates, bad
//! profiles exit 2 with a message naming file, key and problem and leave the
//! data directory untouched, a second process on a data directory refuses,
//! SIGTERM exits 0.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{client, free_port, run_to_end, wait_until, Proc, BIN};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// The TLS files a profile names (`transport.tls.*`), as written.
fn tls_files(file: &Path) -> Option<[PathBuf; 3]> {
    let text = std::fs::read_to_string(file).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let tls = value.get("transport")?.get("tls")?;
    let path = |k: &str| PathBuf::from(tls[k].as_str().unwrap());
    Some([path("ca"), path("cert"), path("key")])
}

/// `raftkit config check --profile FILE` run from `cwd`: (exit code, stderr).
fn config_check_in(cwd: &Path, file: &Path) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["config", "check", "--profile", &file.display().to_string()])
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every profile in `configs/` loads and validates. Profiles with
/// `[transport.tls]` name certificates that `raftkit certs` makes and git
/// ignores: they are checked by the binary from a scratch directory, first
/// without the files (a profile error, exit 2, naming the key), then after
/// `raftkit certs` made them there as the profile's comments say.
#[test]
fn every_shipped_profile_validates() {
    let mut files = Vec::new();
    toml_files(&configs_dir(), &mut files);
    assert!(files.len() >= 11, "found only {files:?}");
    let mut tls_profiles = 0;
    for file in files {
        let Some([ca, cert, key]) = tls_files(&file) else {
            let loaded = raftkit_node::load(std::slice::from_ref(&file), &Default::default());
            assert!(
                loaded.is_ok(),
                "{}: {}",
                file.display(),
                loaded.unwrap_err()
            );
            continue;
        };
        tls_profiles += 1;
        assert!(
            ca.is_relative(),
            "{}: TLS paths are relative to the repository root",
            file.display()
        );
        let scratch = tempfile::tempdir().unwrap();
        let (code, stderr) = config_check_in(scratch.path(), &file);
        assert_eq!(code, 2, "{} without certificates: {stderr}", file.display());
        assert!(stderr.contains("transport.tls.ca"), "{stderr}");

        let dir = ca.parent().unwrap();
        let id = cert.file_stem().unwrap().to_string_lossy().into_owned();
        assert_eq!(cert.parent(), Some(dir), "{}", file.display());
        assert_eq!(key, dir.join(format!("{id}.key")), "{}", file.display());
        assert_eq!(ca.file_name().unwrap(), "ca.pem", "{}", file.display());
        let out = std::process::Command::new(BIN)
            .args(["certs", &dir.display().to_string(), "--servers", &id])
            .current_dir(scratch.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, stderr) = config_check_in(scratch.path(), &file);
        assert_eq!(code, 0, "{}: {stderr}", file.display());
    }
    assert!(
        tls_profiles >= 3,
        "configs/local-3-quic has three TLS profiles"
    );
}

fn base(data_dir: &Path, http_port: u16) -> String {
    format!(
        "id = \"n1\"\ndata_dir = \"{}\"\nhttp_addr = \"127.0.0.1:{http_port}\"\nraft_addr = \"127.0.0.1:{}\"\n",
        data_dir.display(),
        free_port()
    )
}

/// Runs `raftkit run` on a profile made of `base + extra`; asserts exit 2, a
/// message naming the file and `key` and containing `problem`, and an
/// untouched data directory.
fn assert_refused(extra: &str, key: &str, problem: &str, http_port: u16) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let profile = dir.path().join("bad.toml");
    std::fs::write(&profile, format!("{}{extra}", base(&data, http_port))).unwrap();
    let (code, stderr) = run_to_end(&["run", "--profile", &profile.display().to_string()]);
    assert_eq!(code, 2, "exit code for {key}; stderr: {stderr}");
    assert!(
        stderr.contains(&profile.display().to_string()),
        "file not named: {stderr}"
    );
    assert!(
        stderr.contains(&format!("`{key}`")),
        "key {key} not named: {stderr}"
    );
    assert!(
        stderr.contains(problem),
        "problem {problem:?} not said: {stderr}"
    );
    assert!(
        !data.exists(),
        "data dir written before the profile was valid"
    );
}

#[test]
fn bad_profiles_exit_2_naming_file_key_and_problem() {
    let port = free_port();
    assert_refused(
        "[raft]\nheartbeat = \"1s\"\n",
        "raft.heartbeat",
        "unknown key",
        port,
    );
    assert_refused("bootstrap = \"yes\"\n", "bootstrap", "invalid type", port);
    assert_refused(
        "[raft]\nheartbeat_timeout = \"soon\"\n",
        "raft.heartbeat_timeout",
        "",
        port,
    );
    assert_refused(
        "[[cluster.servers]]\nid = \"a\"\nraft_addr = \"x:1\"\n[[cluster.servers]]\nid = \"a\"\nraft_addr = \"x:2\"\n",
        "cluster.servers",
        "duplicate server id",
        port,
    );
    assert_refused(
        "[transport.tls]\nca = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
        "transport.tls.ca",
        "does not exist",
        port,
    );
    assert_refused(
        "join = [\"http://127.0.0.1:1\"]\n[transport]\nkind = \"inmem\"\n",
        "transport.kind",
        "inmem",
        port,
    );
    assert_refused(
        "[storage]\nkind = \"lmdb\"\nmap_size = \"1000B\"\n",
        "storage.map_size",
        "at least",
        port,
    );
    assert_refused(
        "[transport]\nkind = \"quic\"\n",
        "transport.kind",
        "quic needs",
        port,
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    assert_refused("", "http_addr", "cannot listen", busy_port);
}

#[test]
fn env_and_flags_override_files_in_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, base(&dir.path().join("d"), 8001)).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "config",
            "check",
            "--profile",
            &profile.display().to_string(),
            "--id",
            "n7",
        ])
        .env("RAFTKIT_RAFT__ELECTION_TIMEOUT", "2s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("id = \"n7\""), "{text}");
    assert!(text.contains("election_timeout = \"2s\""), "{text}");
    let (code, stderr) = run_to_end(&["config", "schema"]);
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_on_a_data_dir_refuses_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = free_port();
    let profile = dir.path().join("single.toml");
    std::fs::write(&profile, format!("{}bootstrap = true\n", base(&data, http))).unwrap();
    let p = profile.display().to_string();
    let mut first = Proc::start_args(&["run", "--profile", &p], &dir.path().join("first.log"));
    let c = client();
    wait_until(Duration::from_secs(30), "single node ready", || async {
        let r = c
            .get(format!("http://127.0.0.1:{http}/ready"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let other_http = free_port().to_string();
    let other_raft = free_port().to_string();
    let (code, stderr) = run_to_end(&[
        "run",
        "--profile",
        &p,
        "--http-addr",
        &format!("127.0.0.1:{other_http}"),
        "--raft-addr",
        &format!("127.0.0.1:{other_raft}"),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("in use by another raftkit process"),
        "{stderr}"
    );

    let pid = first.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_until(Duration::from_secs(15), "exit after SIGTERM", || {
        let s = first.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert_eq!(status.code(), Some(0), "log:\n{}", first.log_text());
}
