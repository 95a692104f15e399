//! Test certificates made at test time (rcgen): a cluster CA and
//! certificates for server ids, written as PEM files into a directory the
//! caller owns (a temporary one). Nothing is committed to the repository.
//!
//! Each certificate names its server id as a DNS subject alternative name
//! and allows both server and client authentication, as the TLS
//! transports expect.
//!
//! ```
//! use raftkit::testing::transport::certs::TestCa;
//! let dir = tempfile::tempdir().unwrap();
//! let ca = TestCa::new("cluster");
//! let files = ca.issue(dir.path(), "n1");
//! assert!(files.cert_pem.exists() && files.key_pem.exists() && files.ca_pem.exists());
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority made on the spot, its key in memory.
pub struct TestCa {
    name: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where a server's PEM files were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// The CA certificate that signed it.
    pub ca_pem: PathBuf,
    /// The server's certificate.
    pub cert_pem: PathBuf,
    /// The server's private key (PKCS#8).
    pub key_pem: PathBuf,
}

impl TestCa {
    /// A new CA with a fresh ECDSA P-256 key; `name` is its common name and
    /// names its file.
    ///
    /// # Panics
    /// If rcgen fails (it does not for these parameters).
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generating a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signing the CA");
        TestCa {
            name: name.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            cert,
            key,
        }
    }

    /// Writes the CA certificate alone to `dir/<name>-ca.pem` and returns
    /// the path.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}-ca.pem", self.name));
        write(&path, &self.cert.pem());
        path
    }

    /// Issues a certificate for server `id` and writes `dir/<id>.pem`,
    /// `dir/<id>.key` and the CA's certificate into `dir` (created if
    /// missing). Issue twice for one id into different directories to get
    /// two certificates.
    ///
    /// # Panics
    /// If rcgen fails or a file cannot be written.
    pub fn issue(&self, dir: &Path, id: &str) -> CertFiles {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let key = KeyPair::generate().expect("generating a key");
        let mut params = CertificateParams::new(vec![id.to_owned()])
            .unwrap_or_else(|e| panic!("certificate parameters for {id}: {e}"));
        params.distinguished_name.push(DnType::CommonName, id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .unwrap_or_else(|e| panic!("signing a certificate for {id}: {e}"));
        let files = CertFiles {
            ca_pem: self.write_ca(dir),
            cert_pem: dir.join(format!("{id}.pem")),
            key_pem: dir.join(format!("{id}.key")),
        };
        write(&files.cert_pem, &cert.pem());
        write(&files.key_pem, &key.serialize_pem());
        files
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
