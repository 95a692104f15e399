//! Merging profile sources with figment, and checking the result.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Source};

use super::{Overrides, Profile, StorageKind, TransportKind, MAX_ID_LEN};

/// A profile that can be used, with where each of its values came from.
#[derive(Debug)]
pub struct Loaded {
    /// The merged, validated profile.
    pub profile: Profile,
    figment: Figment,
}

/// A profile that cannot be used: where, which key, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.lines.join("\n"))]
pub struct ProfileError {
    lines: Vec<String>,
}

impl ProfileError {
    fn new(source: impl fmt::Display, key: &str, problem: impl fmt::Display) -> ProfileError {
        let line = if key.is_empty() {
            format!("{source}: {problem}")
        } else {
            format!("{source}: key `{key}`: {problem}")
        };
        ProfileError { lines: vec![line] }
    }
}

impl Loaded {
    /// Where the value at `key` (dotted) came from: a file path, the
    /// environment or a flag.
    pub fn source_of(&self, key: &str) -> String {
        source_name(self.figment.find_metadata(key), key)
    }

    /// The error for a bad value at `key`, naming its source.
    pub fn error(&self, key: &str, problem: impl fmt::Display) -> ProfileError {
        ProfileError::new(self.source_of(key), key, problem)
    }
}

/// Merges the profile files in order, then `RAFTKIT_*` variables, then
/// flags, and validates the result. Touches nothing on disk but the files.
///
/// ```
/// use raftkit_node::profile::{load, Overrides};
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("n1.toml");
/// std::fs::write(&file, "id = \"n1\"\ndata_dir = \"d\"\nhttp_addr = \"127.0.0.1:8001\"\n\
///     raft_addr = \"127.0.0.1:7001\"\n[raft]\nheartbeat = \"1s\"\n").unwrap();
/// let err = load(&[file.clone()], &Overrides::default()).unwrap_err().to_string();
/// assert!(err.contains("key `raft.heartbeat`: unknown key"), "{err}");
///
/// let flags = Overrides { id: Some("n2".into()), ..Overrides::default() };
/// std::fs::write(&file, "id = \"n1\"\ndata_dir = \"d\"\nhttp_addr = \"127.0.0.1:8001\"\n\
///     raft_addr = \"127.0.0.1:7001\"\n").unwrap();
/// assert_eq!(load(&[file], &flags).unwrap().profile.id, "n2");
/// ```
pub fn load(files: &[PathBuf], overrides: &Overrides) -> Result<Loaded, ProfileError> {
    let mut figment = Figment::new();
    for file in files {
        check_readable(file)?;
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment
        .merge(Env::prefixed("RAFTKIT_").split("__"))
        .merge(Serialized::defaults(overrides));
    let profile: Profile = figment.extract().map_err(|e| from_figment(e, files))?;
    let loaded = Loaded { profile, figment };
    validate(&loaded)?;
    Ok(loaded)
}

fn check_readable(file: &Path) -> Result<(), ProfileError> {
    match std::fs::metadata(file) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ProfileError::new(file.display(), "", "is not a file")),
        Err(e) => Err(ProfileError::new(
            file.display(),
            "",
            format_args!("cannot read profile: {e}"),
        )),
    }
}

fn source_name(metadata: Option<&Metadata>, key: &str) -> String {
    match metadata {
        Some(Metadata {
            source: Some(Source::File(path)),
            ..
        }) => path.display().to_string(),
        Some(m) if m.name.contains("Overrides") => "command-line flag".into(),
        Some(m) if m.name.contains("environment") => {
            let var: Vec<String> = key.split('.').map(str::to_ascii_uppercase).collect();
            format!("environment variable RAFTKIT_{}", var.join("__"))
        }
        Some(m) => m.name.to_string(),
        None => "built-in default (no profile sets it)".into(),
    }
}

fn from_figment(errors: figment::Error, files: &[PathBuf]) -> ProfileError {
    let all_files = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    use figment::error::Kind;
    let lines = errors
        .into_iter()
        .map(|e| {
            let mut key = e.path.join(".");
            let problem = match &e.kind {
                Kind::UnknownField(field, _) => {
                    if e.path.last() != Some(field) {
                        key = if key.is_empty() {
                            field.clone()
                        } else {
                            format!("{key}.{field}")
                        };
                    }
                    "unknown key".to_string()
                }
                Kind::MissingField(field) => {
                    key = if key.is_empty() {
                        field.to_string()
                    } else {
                        format!("{key}.{field}")
                    };
                    "missing: no profile, RAFTKIT_* variable or flag sets it".to_string()
                }
                other => other.to_string(),
            };
            let source = match &e.kind {
                Kind::MissingField(_) => all_files.clone(),
                _ => source_name(e.metadata.as_ref(), &key),
            };
            ProfileError::new(source, &key, problem).lines.remove(0)
        })
        .collect();
    ProfileError { lines }
}

fn validate(loaded: &Loaded) -> Result<(), ProfileError> {
    let p = &loaded.profile;
    if !valid_id(&p.id) {
        return Err(loaded.error(
            "id",
            format_args!(
                "{:?} must be 1..={MAX_ID_LEN} characters of A-Z a-z 0-9 - _ . \
                 (it names the node in URLs and TLS certificates)",
                p.id
            ),
        ));
    }
    validate_membership(loaded)?;
    validate_transport(loaded)?;
    validate_storage(loaded)?;
    if p.http.request_timeout.is_zero() {
        return Err(loaded.error("http.request_timeout", "must be positive"));
    }
    if let Err(e) = p.raft.to_config(&p.id).validate() {
        return Err(loaded.error(&format!("raft.{}", e.field), e.reason));
    }
    Ok(())
}

/// Whether `id` is a usable server id: 1..=[`MAX_ID_LEN`] characters of
/// `A-Z a-z 0-9 - _ .` (it names the node in URLs and TLS certificates).
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `bootstrap`, `join` and `[[cluster.servers]]` agree with each other.
fn validate_membership(loaded: &Loaded) -> Result<(), ProfileError> {
    let p = &loaded.profile;
    if p.bootstrap && !p.join.is_empty() {
        return Err(loaded.error(
            "join",
            "a node either bootstraps a new cluster (bootstrap = true) or joins one, not both",
        ));
    }
    for url in &p.join {
        if !url.starts_with("http://") {
            return Err(loaded.error("join", format_args!("{url:?} is not an http:// URL")));
        }
    }
    let mut seen = HashSet::new();
    for (i, server) in p.cluster.servers.iter().enumerate() {
        if !valid_id(&server.id) {
            return Err(loaded.error(
                "cluster.servers",
                format_args!(
                    "entry {}: id {:?} is not a valid server id",
                    i + 1,
                    server.id
                ),
            ));
        }
        if !seen.insert(server.id.as_str()) {
            return Err(loaded.error(
                "cluster.servers",
                format_args!("duplicate server id {:?} (entry {})", server.id, i + 1),
            ));
        }
    }
    if !p.bootstrap || p.cluster.servers.is_empty() {
        return Ok(());
    }
    match p.cluster.servers.iter().find(|s| s.id == p.id) {
        None => Err(loaded.error(
            "cluster.servers",
            format_args!("bootstrap = true but this node ({:?}) is not listed", p.id),
        )),
        Some(me) if me.raft_addr != p.raft_addr.to_string() => Err(loaded.error(
            "cluster.servers",
            format_args!(
                "entry {:?} has raft_addr {} but raft_addr is {}",
                p.id, me.raft_addr, p.raft_addr
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn validate_storage(loaded: &Loaded) -> Result<(), ProfileError> {
    let s = &loaded.profile.storage;
    if s.snapshot_retain == 0 {
        return Err(loaded.error("storage.snapshot_retain", "must be at least 1"));
    }
    if s.kind == StorageKind::Lmdb {
        let config = raftkit_lmdb::LmdbConfig {
            map_size: s.map_size.as_u64(),
            ..Default::default()
        };
        if let Err(e) = config.validate() {
            return Err(loaded.error("storage.map_size", e));
        }
    }
    if s.kind == StorageKind::File && s.segment_size.as_u64() < raftkit_file::MIN_SEGMENT_SIZE_BYTES
    {
        return Err(loaded.error(
            "storage.segment_size",
            format_args!(
                "{} is below the minimum of {}",
                s.segment_size,
                ByteSize::b(raftkit_file::MIN_SEGMENT_SIZE_BYTES)
            ),
        ));
    }
    Ok(())
}

fn validate_transport(loaded: &Loaded) -> Result<(), ProfileError> {
    let p = &loaded.profile;
    let t = &p.transport;
    if t.kind == TransportKind::Inmem && (p.cluster.servers.len() > 1 || !p.join.is_empty()) {
        return Err(loaded.error(
            "transport.kind",
            "inmem carries messages inside one process only; a profile with other servers \
             (cluster.servers or join) needs tcp or quic",
        ));
    }
    if t.kind == TransportKind::Quic && t.tls.is_none() && !t.insecure_dev {
        return Err(loaded.error(
            "transport.kind",
            "quic needs [transport.tls] (or insecure_dev = true for development)",
        ));
    }
    if t.insecure_dev && t.kind != TransportKind::Quic {
        return Err(loaded.error("transport.insecure_dev", "applies to quic only"));
    }
    if let Some(tls) = &t.tls {
        for (key, path) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
            if !path.is_file() {
                return Err(loaded.error(
                    &format!("transport.tls.{key}"),
                    format_args!("file {} does not exist", path.display()),
                ));
            }
        }
    }
    Ok(())
}
