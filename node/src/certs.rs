//! `raftkit certs`: a CA and per-server certificates for the TLS profiles.
//!
//! ```text
//!  raftkit certs DIR --servers n1,n2,n3 [--force]
//!    check every id (a DNS name: the transports verify the SAN against it)
//!    refuse if any target file exists (unless --force); nothing written then
//!    DIR/ca.pem, DIR/ca.key              the cluster CA (ECDSA P-256)
//!    DIR/<id>.pem, DIR/<id>.key          per server: SAN DNS = id,
//!                                        serverAuth + clientAuth, signed by the CA
//! ```
//!
//! Both transports (TCP with TLS, QUIC) dial a peer with its server id as the
//! TLS server name and check that an accepted client certificate names the id
//! the peer claims, so one certificate per id serves both directions. Keys
//! are PKCS#8 PEM, written with mode 0600 on Unix.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::Failure;

/// How long generated certificates stay valid, in years from January 1st
/// of the current year.
pub const VALID_YEARS: i32 = 10;
/// The CA's file names inside the folder.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca.key";

/// `raftkit certs DIR --servers n1,n2,n3`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Where to write the PEM files (created if missing).
    pub dir: PathBuf,
    /// Server ids, comma separated; each certificate names its id (SAN DNS).
    #[arg(long, value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Why certificates were not written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// `--servers` was empty.
    #[error("--servers names no server")]
    NoServers,
    /// A server id cannot be a certificate's DNS name or a file name.
    #[error("server id {id:?}: {reason}")]
    BadId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same id was given twice.
    #[error("server id {0:?} is given twice")]
    Duplicate(String),
    /// Files exist and `--force` was not given.
    #[error("refusing to overwrite {} (pass --force to replace them)", list(.0))]
    Exists(Vec<PathBuf>),
    /// rcgen failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The folder or a file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The files [`generate`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The CA certificate (the profiles' `transport.tls.ca`).
    pub ca_cert: PathBuf,
    /// The CA key (keep it offline; only needed to issue more certificates).
    pub ca_key: PathBuf,
    /// Per server: (id, certificate, key).
    pub servers: Vec<(String, PathBuf, PathBuf)>,
}

/// Runs `raftkit certs`.
pub fn execute(args: CertsArgs) -> Result<(), Failure> {
    let written = generate(&args.dir, &args.servers, args.force)
        .map_err(|e| Failure::Other(anyhow::anyhow!("certs: {e}")))?;
    println!(
        "CA:     {}  (key {})",
        written.ca_cert.display(),
        written.ca_key.display()
    );
    for (id, cert, key) in &written.servers {
        println!("{id:<7} {}  (key {})", cert.display(), key.display());
    }
    println!(
        "Profiles use them as:\n  [transport.tls]\n  ca = \"{}\"\n  cert = \"{}\"\n  key = \"{}\"",
        written.ca_cert.display(),
        args.dir.join("<id>.pem").display(),
        args.dir.join("<id>.key").display()
    );
    Ok(())
}

/// Checks that `id` can name a server in a certificate: the profile's id
/// rule, a DNS name (not an IP address) as the transports verify it, and not
/// the CA's file name.
pub fn check_id(id: &str) -> Result<(), CertsError> {
    let bad = |reason| {
        Err(CertsError::BadId {
            id: id.to_string(),
            reason,
        })
    };
    if !crate::profile::valid_id(id) {
        return bad("must be 1..=64 characters of A-Z a-z 0-9 - _ . (the profile's id rule)");
    }
    match rustls::pki_types::ServerName::try_from(id) {
        Ok(rustls::pki_types::ServerName::DnsName(_)) => {}
        Ok(_) => return bad("is an IP address; the TLS name of a server must be a DNS name"),
        Err(_) => {
            return bad(
                "is not a valid DNS name (the transports check the certificate's SAN against it)",
            )
        }
    }
    if id == "ca" {
        return bad("is reserved for the CA's own files (ca.pem, ca.key)");
    }
    Ok(())
}

/// Writes a new CA and one certificate per server into `dir` (created if
/// missing). Refuses, writing nothing, if any of the files exists and
/// `force` is false.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let w = raftkit_node::certs::generate(dir.path(), &["n1".into(), "n2".into()], false).unwrap();
/// assert!(w.ca_cert.exists() && w.servers.len() == 2);
/// let again = raftkit_node::certs::generate(dir.path(), &["n1".into()], false);
/// assert!(again.unwrap_err().to_string().contains("--force"));
/// ```
pub fn generate(dir: &Path, servers: &[String], force: bool) -> Result<Written, CertsError> {
    if servers.is_empty() {
        return Err(CertsError::NoServers);
    }
    let mut seen = HashSet::new();
    for id in servers {
        check_id(id)?;
        if !seen.insert(id.as_str()) {
            return Err(CertsError::Duplicate(id.clone()));
        }
    }
    let written = Written {
        ca_cert: dir.join(CA_CERT),
        ca_key: dir.join(CA_KEY),
        servers: servers
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    dir.join(format!("{id}.pem")),
                    dir.join(format!("{id}.key")),
                )
            })
            .collect(),
    };
    let mut targets = vec![written.ca_cert.clone(), written.ca_key.clone()];
    for (_, cert, key) in &written.servers {
        targets.push(cert.clone());
        targets.push(key.clone());
    }
    if !force {
        let existing: Vec<PathBuf> = targets
            .iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect();
        if !existing.is_empty() {
            return Err(CertsError::Exists(existing));
        }
    }

    // Everything is generated in memory first, so a failure writes nothing.
    let year = current_year();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "raftkit cluster CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = rcgen::date_time_ymd(year, 1, 1);
    ca.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut files = vec![
        (written.ca_cert.clone(), ca_cert.pem(), false),
        (written.ca_key.clone(), ca_key.serialize_pem(), true),
    ];
    for (id, cert_path, key_path) in &written.servers {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![id.clone()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = rcgen::date_time_ymd(year, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        files.push((cert_path.clone(), cert.pem(), false));
        files.push((key_path.clone(), key.serialize_pem(), true));
    }

    std::fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for (path, text, secret) in files {
        write_file(&path, &text, secret).map_err(|source| CertsError::Io { path, source })?;
    }
    Ok(written)
}

fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if secret {
        // An existing file (--force) keeps its mode on open; narrow it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The current year (UTC), for the validity period.
fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Mean Gregorian year: off by at most a day around New Year, which a
    // January 1st start absorbs. Clamped to what rcgen's dates accept.
    let year = 1970 + secs / 31_556_952;
    i32::try_from(year.min(9000)).unwrap_or(9000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_dns_names_and_not_the_ca() {
        assert!(check_id("n1").is_ok());
        assert!(check_id("node-2.east").is_ok());
        for bad in ["", "ca", "n 1", "127.0.0.1", "a/b", "-x"] {
            assert!(check_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_to_overwrite_without_force_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("n2.key"), "mine").unwrap();
        let ids = ["n1".to_string(), "n2".to_string()];
        let err = generate(dir.path(), &ids, false).unwrap_err().to_string();
        assert!(err.contains("n2.key") && err.contains("--force"), "{err}");
        assert!(!dir.path().join("ca.pem").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("n2.key")).unwrap(),
            "mine"
        );
        let w = generate(dir.path(), &ids, true).unwrap();
        assert!(std::fs::read_to_string(&w.servers[1].2)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&w.servers[1].2)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn duplicate_and_empty_server_lists_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dup = generate(dir.path(), &["a".into(), "a".into()], false);
        assert!(matches!(dup, Err(CertsError::Duplicate(_))));
        assert!(matches!(
            generate(dir.path(), &[], false),
            Err(CertsError::NoServers)
        ));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
