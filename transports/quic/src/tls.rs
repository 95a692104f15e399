//! Mutual TLS for QUIC (rustls, ring provider, TLS 1.3 only, no 0-RTT), and
//! the identity check that ties a certificate to the id a peer claims.
//!
//! ```text
//!  connect(peer) ── server name = peer's id ──▶ peer's cert must name that id (SAN DNS)
//!  accept ── client cert required, chained to the CA ──▶ every stream's Hello { from }:
//!            the client cert must name `from` (SAN DNS), else the connection closes
//! ```
//!
//! In `insecure_dev` mode both ends use a self-signed certificate made at
//! start-up: chains are not checked (there is no CA), but handshake
//! signatures and names still are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftkit::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::TlsFiles;

/// The ALPN protocol both ends must speak.
const ALPN: &[u8] = b"raftkit/1";

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
    /// quinn refused the rustls configuration (no TLS 1.3 suite, say).
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
    /// The development certificate could not be made.
    #[error("generating a self-signed certificate for {id}: {source}")]
    Generate {
        /// The server id it was for.
        id: NodeId,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
}

/// The QUIC crypto for both directions.
pub(crate) struct Crypto {
    pub(crate) server: quinn::crypto::rustls::QuicServerConfig,
    pub(crate) client: quinn::crypto::rustls::QuicClientConfig,
    /// The secret behind this endpoint's stateless-reset tokens. It must be
    /// the same after a restart: a peer that still holds a connection to
    /// the crashed process only believes a reset whose token the old
    /// process announced, so a fresh random key would leave that peer
    /// writing into a dead connection until its idle timeout.
    pub(crate) reset_secret: [u8; 32],
}

/// Derives the stateless-reset secret from `material` (the node's private
/// key, or in dev mode its id), domain-separated from any other use of it.
fn reset_secret(material: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"raftkit-quic stateless reset key v1\0");
    ctx.update(material);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Crypto {
    /// Loads the PEM files and builds client and server configurations
    /// that both require a certificate chained to the CA.
    pub(crate) fn load(files: &TlsFiles) -> Result<Crypto, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for ca in certs(&files.ca_pem)? {
            roots.add(ca)?;
        }
        let roots = Arc::new(roots);
        let chain = certs(&files.cert_pem)?;
        let key = PrivateKeyDer::from_pem_file(&files.key_pem).map_err(|e| TlsError::Pem {
            path: files.key_pem.clone(),
            detail: e.to_string(),
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key.clone_key())?;
        Crypto::finish(server, client, reset_secret(key.secret_der()))
    }

    /// A self-signed certificate for `id`, and verifiers that accept any
    /// peer's self-signed certificate that names the expected id.
    pub(crate) fn insecure_dev(id: &NodeId) -> Result<Crypto, TlsError> {
        let generated =
            rcgen::generate_simple_self_signed(vec![id.as_str().to_owned()]).map_err(|source| {
                TlsError::Generate {
                    id: id.clone(),
                    source,
                }
            })?;
        let chain = vec![generated.cert.der().clone()];
        let key = PrivateKeyDer::try_from(generated.key_pair.serialize_der())
            .map_err(|e| TlsError::Verifier(e.to_owned()))?;
        let provider = provider();
        let verifier = Arc::new(AnyNamedCert {
            provider: provider.clone(),
        });
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)?;
        // The generated key changes on every start; the id does not. Anyone
        // who knows the id can forge resets, which dev mode (no peer
        // authentication at all) does not defend against anyway.
        Crypto::finish(server, client, reset_secret(id.as_str().as_bytes()))
    }

    fn finish(
        mut server: rustls::ServerConfig,
        mut client: rustls::ClientConfig,
        reset_secret: [u8; 32],
    ) -> Result<Crypto, TlsError> {
        server.alpn_protocols = vec![ALPN.to_vec()];
        client.alpn_protocols = vec![ALPN.to_vec()];
        // No 0-RTT: early data can be replayed by anyone on the path, and
        // a LAN handshake costs one sub-millisecond round trip anyway.
        server.max_early_data_size = 0;
        client.enable_early_data = false;
        let quic = |e: &dyn std::fmt::Display| TlsError::Quic(e.to_string());
        Ok(Crypto {
            server: quinn::crypto::rustls::QuicServerConfig::try_from(server)
                .map_err(|e| quic(&e))?,
            client: quinn::crypto::rustls::QuicClientConfig::try_from(client)
                .map_err(|e| quic(&e))?,
            reset_secret,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `cert` (already verified, or self-signed in dev mode) names
/// server `id` as a DNS subject alternative name.
pub(crate) fn cert_names(cert: &CertificateDer<'_>, id: &NodeId) -> bool {
    let Ok(name) = ServerName::try_from(id.as_str().to_owned()) else {
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

/// Dev mode's verifier: any certificate, as long as the handshake proves
/// its key and (for servers) it names the server dialled.
#[derive(Debug)]
struct AnyNamedCert {
    provider: Arc<CryptoProvider>,
}

impl AnyNamedCert {
    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for AnyNamedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for AnyNamedCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The name is checked against each stream's Hello.
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_secret_survives_a_restart_and_differs_between_servers() {
        let a = NodeId::new("a");
        let first = Crypto::insecure_dev(&a).expect("dev crypto").reset_secret;
        let again = Crypto::insecure_dev(&a).expect("dev crypto").reset_secret;
        let b = Crypto::insecure_dev(&NodeId::new("b"))
            .expect("dev crypto")
            .reset_secret;
        assert_eq!(
            first, again,
            "a restarted dev endpoint got another reset secret"
        );
        assert_ne!(first, b, "two servers share a reset secret");
        assert_ne!(
            reset_secret(b"key one"),
            reset_secret(b"key two"),
            "different private keys gave the same reset secret"
        );
    }
}
