//! Profile loading and validation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::KEY_DOCS;
use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const BASE: &str = r#"
id = "n1"
data_dir = "data/n1"
http_addr = "127.0.0.1:8001"
raft_addr = "127.0.0.1:7001"
"#;

#[test]
fn later_files_and_flags_override_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", BASE);
    let b = write(
        dir.path(),
        "b.toml",
        "[raft]\nheartbeat_timeout = \"150ms\"\nleader_lease_timeout = \"100ms\"\n",
    );
    let flags = Overrides {
        id: Some("n9".into()),
        ..Overrides::default()
    };
    let loaded = load(&[a, b.clone()], &flags).unwrap();
    assert_eq!(loaded.profile.id, "n9");
    assert_eq!(
        loaded.profile.raft.heartbeat_timeout,
        Duration::from_millis(150)
    );
    assert_eq!(
        loaded.source_of("raft.heartbeat_timeout"),
        b.display().to_string()
    );
    assert_eq!(loaded.source_of("id"), "command-line flag");
}

#[test]
fn unknown_key_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.toml",
        &format!("{BASE}[raft]\nheartbeat = 1\n"),
    );
    let err = load(std::slice::from_ref(&a), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&a.display().to_string()), "{err}");
    assert!(err.contains("`raft.heartbeat`"), "{err}");
    assert!(err.contains("unknown key"), "{err}");
}

#[test]
fn bad_duration_names_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.toml",
        &format!("{BASE}[raft]\nheartbeat_timeout = \"fast\"\n"),
    );
    let err = load(std::slice::from_ref(&a), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("raft.heartbeat_timeout"), "{err}");
    assert!(err.contains(&a.display().to_string()), "{err}");
}

#[test]
fn duplicate_server_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{BASE}[[cluster.servers]]\nid = \"n1\"\nraft_addr = \"127.0.0.1:7001\"\n\
         [[cluster.servers]]\nid = \"n1\"\nraft_addr = \"127.0.0.1:7002\"\n"
    );
    let a = write(dir.path(), "a.toml", &text);
    let err = load(std::slice::from_ref(&a), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate server id"), "{err}");
    assert!(err.contains(&a.display().to_string()), "{err}");
}

#[test]
fn inmem_with_peers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{BASE}join = [\"http://127.0.0.1:8002\"]\n[transport]\nkind = \"inmem\"\n");
    let a = write(dir.path(), "a.toml", &text);
    let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("transport.kind"), "{err}");
}

#[test]
fn bootstrap_with_join_and_bad_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{BASE}bootstrap = true\njoin = [\"http://127.0.0.1:8002\"]\n");
    let a = write(dir.path(), "a.toml", &text);
    let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("`join`") && err.contains("not both"), "{err}");

    let a = write(dir.path(), "b.toml", BASE);
    let flags = Overrides {
        id: Some("n 1/x".into()),
        ..Overrides::default()
    };
    let err = load(&[a], &flags).unwrap_err().to_string();
    assert!(err.starts_with("command-line flag: key `id`"), "{err}");
}

#[test]
fn missing_tls_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        format!("{BASE}[transport.tls]\nca = \"/nonexistent/ca.pem\"\ncert = \"c\"\nkey = \"k\"\n");
    let a = write(dir.path(), "a.toml", &text);
    let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("transport.tls.ca"), "{err}");
}

#[test]
fn raft_config_errors_name_the_raft_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{BASE}[raft]\nheartbeat_timeout = \"100ms\"\n");
    let a = write(dir.path(), "a.toml", &text);
    let err = load(&[a], &Overrides::default()).unwrap_err().to_string();
    assert!(err.contains("raft.leader_lease_timeout"), "{err}");
}

#[test]
fn schema_documents_every_key() {
    let text = schema();
    for (key, doc) in KEY_DOCS {
        assert!(text.contains(doc), "{key} undocumented in:\n{text}");
    }
}

#[test]
fn example_round_trips_through_toml() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", &to_toml(&example()));
    let loaded = load(&[a], &Overrides::default()).unwrap();
    assert_eq!(loaded.profile, example());
}
