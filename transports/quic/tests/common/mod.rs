//! What the QUIC tests share: certificates made at test time and binding.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use raftkit::{NodeId, ServerAddress};
use raftkit_quic::{BindError, ClusterCa, QuicConfig, QuicTransport, TlsFiles};

/// A cluster CA with its certificates in a temporary directory.
pub struct Certs {
    pub ca: ClusterCa,
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn new(name: &str) -> Certs {
        Certs {
            ca: ClusterCa::generate(name).expect("generating a CA"),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// A certificate for `id` signed by this CA.
    pub fn issue(&self, id: &str) -> TlsFiles {
        self.issue_in(self.dir.path(), id)
    }

    /// A certificate for `id` written into `dir` (so that two
    /// certificates for one id can coexist).
    pub fn issue_in(&self, dir: &Path, id: &str) -> TlsFiles {
        self.ca
            .issue(dir, id)
            .unwrap_or_else(|e| panic!("issuing a certificate for {id}: {e}"))
    }

    /// The CA certificate alone, as a PEM file (for a client that only
    /// needs to trust this CA).
    pub fn ca_pem(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("trusted-ca.pem");
        std::fs::write(&path, self.ca.cert_pem()).expect("writing the CA certificate");
        path
    }

    /// Settings for `id` with this CA.
    pub fn config(&self, id: &str) -> QuicConfig {
        QuicConfig {
            tls: Some(self.issue(id)),
            ..QuicConfig::default()
        }
    }
}

pub fn any() -> SocketAddr {
    "127.0.0.1:0".parse().expect("socket address")
}

pub async fn bind(id: &str, config: QuicConfig) -> QuicTransport {
    QuicTransport::bind(id.into(), any(), config)
        .await
        .unwrap_or_else(|e| panic!("binding {id}: {e}"))
}

/// Binds again at `address`. The previous transport there was shut down
/// and dropped, but quinn releases its UDP socket from its endpoint task a
/// moment later: retry while the port is still taken, up to a deadline.
pub async fn rebind(id: &NodeId, address: &ServerAddress, config: QuicConfig) -> QuicTransport {
    let addr: SocketAddr = address
        .as_str()
        .parse()
        .unwrap_or_else(|e| panic!("address {address}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match QuicTransport::bind(id.clone(), addr, config.clone()).await {
            Ok(t) => return t,
            Err(BindError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("rebinding {id} to {address}: {e}"),
        }
    }
}

/// A raw quinn client endpoint that trusts the CA in `ca_pem` and presents
/// `client` (a certificate and key), or no certificate at all.
pub fn raw_client(ca_pem: &Path, client: Option<&TlsFiles>) -> quinn::Endpoint {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(ca_pem).expect("CA file") {
        roots
            .add(ca.expect("CA certificate"))
            .expect("adding the CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(files) => {
            let chain = CertificateDer::pem_file_iter(&files.cert_pem)
                .expect("cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("certificates");
            let key = PrivateKeyDer::from_pem_file(&files.key_pem).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"raftkit/1".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).expect("QUIC crypto");
    let mut endpoint = quinn::Endpoint::client(any()).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

/// Polls `done` until it holds, failing with `what` after 5 s.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut poll = tokio::time::interval(Duration::from_millis(2));
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        poll.tick().await;
    }
}
