//! Mutual TLS with rustls (ring provider), and the identity check that ties
//! a certificate to the id a peer claims in its `Hello`.
//!
//! ```text
//!  connect(peer) ── TLS, server name = peer's id ──▶ peer's cert must name that id (SAN DNS)
//!  accept ── TLS, client cert required, chained to the CA ──▶ Hello { from }:
//!            the client cert must name `from` (SAN DNS), else the connection closes
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftkit::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where the PEM files for TLS live. Every server of a cluster has a
/// certificate whose subject alternative name (DNS) is its server id,
/// signed by the cluster's CA, usable for both server and client auth.
///
/// ```no_run
/// use raftkit_tcp::{TcpConfig, TlsConfig};
/// let config = TcpConfig {
///     tls: Some(TlsConfig {
///         ca_pem: "certs/ca.pem".into(),
///         cert_pem: "certs/n1.pem".into(),
///         key_pem: "certs/n1.key".into(),
///     }),
///     ..TcpConfig::default()
/// };
/// # drop(config);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificate(s) that sign every server's certificate.
    pub ca_pem: PathBuf,
    /// This server's certificate chain, leaf first.
    pub cert_pem: PathBuf,
    /// This server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("reading {path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A PEM file held no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// rustls refused the certificates or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

/// Ready-made TLS endpoints for both directions.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connector: TlsConnector,
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    /// Loads the PEM files and builds the client and server configurations.
    pub(crate) fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in certs(&config.ca_pem)? {
            roots.add(ca)?;
        }
        let roots = Arc::new(roots);
        let chain = certs(&config.cert_pem)?;
        let key = PrivateKeyDer::from_pem_file(&config.key_pem).map_err(|e| TlsError::Pem {
            path: config.key_pem.clone(),
            detail: e.to_string(),
        })?;

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }
}

/// The name a peer's certificate must carry: its server id.
pub(crate) fn server_name(id: &NodeId) -> Option<ServerName<'static>> {
    ServerName::try_from(id.as_str().to_owned()).ok()
}

/// Whether `cert` (already verified against the CA) names server `id`.
pub(crate) fn cert_names(cert: &CertificateDer<'_>, id: &NodeId) -> bool {
    let Some(name) = server_name(id) else {
        return false;
    };
    match webpki::EndEntityCert::try_from(cert) {
        Ok(cert) => cert.verify_is_valid_for_subject_name(&name).is_ok(),
        Err(_) => false,
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}
