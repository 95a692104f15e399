//! Making a cluster's certificates: a CA, and one certificate per server
//! whose DNS subject alternative name is its id. For tests, benchmarks and
//! first steps; a production cluster's CA lives elsewhere.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::TlsFiles;

/// A certificate authority made on the spot, holding its key in memory.
///
/// ```
/// use raftkit_quic::ClusterCa;
/// let dir = std::env::temp_dir().join(format!("raftkit-quic-doc-{}", std::process::id()));
/// let ca = ClusterCa::generate("doc cluster").unwrap();
/// let files = ca.issue(&dir, "n1").unwrap();
/// assert!(files.cert_pem.exists() && files.key_pem.exists() && files.ca_pem.exists());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct ClusterCa {
    name: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA with a fresh ECDSA P-256 key; `name` is its common name
    /// (file names use it too).
    pub fn generate(name: &str) -> Result<ClusterCa, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            name: name.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            cert,
            key,
        })
    }

    /// The CA certificate, PEM-encoded.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate for server `id` (SAN DNS `id`, server and client
    /// auth) and writes `<id>.pem`, `<id>.key` and the CA's `<name>-ca.pem`
    /// into `dir`, creating it.
    pub fn issue(&self, dir: &Path, id: &str) -> Result<TlsFiles, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![id.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, id);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let files = TlsFiles {
            ca_pem: dir.join(format!("{}-ca.pem", self.name)),
            cert_pem: dir.join(format!("{id}.pem")),
            key_pem: dir.join(format!("{id}.key")),
        };
        write(dir, &files.ca_pem, &self.cert.pem())?;
        write(dir, &files.cert_pem, &cert.pem())?;
        write(dir, &files.key_pem, &key.serialize_pem())?;
        Ok(files)
    }
}

fn write(dir: &Path, path: &Path, contents: &str) -> Result<(), CertError> {
    let error = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    std::fs::write(path, contents).map_err(error)
}
