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

    /// A certificate for `id` in a sub-directory `sub` (so that two
    /// certificates for one id can coexist).
    pub fn issue_in(&self, dir: &Path, id: &str) -> TlsFiles {
        self.ca
            .issue(dir, id)
            .unwrap_or_else(|e| panic!("issuing a certificate for {id}: {e}"))
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
