//! The transport handle, the state its tasks share, and dialling.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftkit::transport::InboundStream;
use raftkit::{
    BoxFuture, Inbound, Message, NodeId, Peer, ServerAddress, SnapshotOffer, SnapshotReader,
    Transport, TransportError,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use raftkit::transport::errors::{ErrorCounts, ErrorKind};
use raftkit::transport::inbound::MessageSlots;
use raftkit::transport::link::Links;

use crate::outbound::spawn_link;
use crate::tls::Crypto;
use crate::{QuicConfig, QuicConfigError, TlsError};

/// How long `shutdown` waits for the transport's tasks and connections.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The application error code a transport closes connections with when it
/// shuts down.
pub(crate) const CLOSE_SHUTDOWN: u32 = 0;
/// The application error code for a connection closed over a protocol
/// violation (bad frame, spoofed id, ...).
pub(crate) const CLOSE_PROTOCOL: u32 = 1;

/// A server's QUIC transport. Made by [`QuicTransport::bind`]; see the
/// [crate docs](crate) for the protocol.
///
/// Must be used inside a tokio runtime.
#[derive(Debug)]
pub struct QuicTransport {
    shared: Arc<Shared>,
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] QuicConfigError),
    /// The TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not bind.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// What the transport's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) config: QuicConfig,
    pub(crate) errors: ErrorCounts,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    is_shut: AtomicBool,
    inbound_tx: Mutex<Option<mpsc::Sender<Inbound>>>,
    inbound_rx: Mutex<Option<InboundStream>>,
    /// Outbound links by peer id and address: a new server at an old
    /// address gets a link of its own (TLS checks the id).
    links: Links,
    /// The connection this server dialled to each peer, shared by the
    /// message link and snapshot streams.
    connections: Mutex<HashMap<Peer, quinn::Connection>>,
    /// Each peer's current inbound message stream.
    pub(crate) message_slots: MessageSlots,
}

impl QuicTransport {
    /// Listens on UDP at `addr` (port 0 picks a free port) as server `id`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit::Transport;
    /// use raftkit_quic::{QuicConfig, QuicTransport};
    /// let config = QuicConfig { insecure_dev: true, ..QuicConfig::default() };
    /// let t = QuicTransport::bind("n1".into(), "127.0.0.1:0".parse().unwrap(), config)
    ///     .await
    ///     .unwrap();
    /// assert!(t.local_addr().as_str().starts_with("127.0.0.1:"));
    /// t.shutdown().await;
    /// # });
    /// ```
    pub async fn bind(
        id: NodeId,
        addr: SocketAddr,
        config: QuicConfig,
    ) -> Result<QuicTransport, BindError> {
        let config = config.validate()?;
        let crypto = match &config.tls {
            Some(files) => Crypto::load(files)?,
            None => {
                tracing::warn!(
                    %id,
                    "INSECURE: raftkit-quic runs with insecure_dev: self-signed certificates, \
                     peers are not authenticated and anyone who reaches {addr} can claim any \
                     server id. Never use this outside a development machine."
                );
                Crypto::insecure_dev(&id)?
            }
        };
        let transport = Arc::new(config.transport_config());
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto.server));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(crypto.client));
        client.transport_config(transport);
        let socket = udp_socket(addr, config.udp_buffer_bytes)
            .map_err(|source| BindError::Bind { addr, source })?;
        let mut endpoint = quinn::Endpoint::new(
            config.endpoint_config(&crypto.reset_secret),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| BindError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| BindError::Bind { addr, source })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity);
        let shared = Arc::new(Shared {
            id,
            config,
            errors: ErrorCounts::default(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            endpoint,
            local_addr,
            is_shut: AtomicBool::new(false),
            inbound_tx: Mutex::new(Some(inbound_tx)),
            inbound_rx: Mutex::new(Some(inbound_rx)),
            links: Links::default(),
            connections: Mutex::new(HashMap::new()),
            message_slots: MessageSlots::default(),
        });
        shared
            .tracker
            .spawn(crate::inbound::accept_loop(shared.clone()));
        Ok(QuicTransport { shared })
    }

    /// This server's id.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit_quic::{QuicConfig, QuicTransport};
    /// let config = QuicConfig { insecure_dev: true, ..QuicConfig::default() };
    /// let t = QuicTransport::bind("n1".into(), "127.0.0.1:0".parse().unwrap(), config)
    ///     .await
    ///     .unwrap();
    /// assert_eq!(t.id().as_str(), "n1");
    /// assert_ne!(t.socket_addr().port(), 0);
    /// # });
    /// ```
    pub fn id(&self) -> &NodeId {
        &self.shared.id
    }

    /// The UDP socket address the endpoint is bound to.
    pub fn socket_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// How many errors of `kind` this transport has counted (the
    /// `raft_transport_errors_total` metric adds up every transport in the
    /// process).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit_quic::{ErrorKind, QuicConfig, QuicTransport};
    /// let config = QuicConfig { insecure_dev: true, ..QuicConfig::default() };
    /// let t = QuicTransport::bind("n1".into(), "127.0.0.1:0".parse().unwrap(), config)
    ///     .await
    ///     .unwrap();
    /// assert_eq!(t.error_count(ErrorKind::WrongCluster), 0);
    /// # });
    /// ```
    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.shared.errors.get(kind)
    }
}

impl Shared {
    /// A sender into the inbound stream, or `None` after shutdown.
    pub(crate) fn inbound_sender(&self) -> Option<mpsc::Sender<Inbound>> {
        lock(&self.inbound_tx).clone()
    }

    /// Forgets `conn` as the connection to `peer` (if it still is), so the
    /// next user dials a new one.
    pub(crate) fn forget_connection(&self, peer: &Peer, conn: &quinn::Connection) {
        let mut connections = lock(&self.connections);
        if connections
            .get(peer)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            connections.remove(peer);
        }
    }

    fn close(&self) {
        self.is_shut.store(true, Ordering::Release);
        self.cancel.cancel();
        self.links.clear();
        lock(&self.connections).clear();
        lock(&self.inbound_tx).take();
        lock(&self.inbound_rx).take();
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"transport shut down");
        self.tracker.close();
    }
}

impl Transport for QuicTransport {
    fn local_addr(&self) -> ServerAddress {
        ServerAddress::new(self.shared.local_addr.to_string())
    }

    fn take_inbound(&self) -> Option<InboundStream> {
        lock(&self.shared.inbound_rx).take()
    }

    fn send(&self, to: &Peer, msgs: Vec<Message>) -> Result<(), TransportError> {
        if self.shared.is_shut.load(Ordering::Acquire) {
            return Err(TransportError::Shutdown);
        }
        let shared = &self.shared;
        let max = shared.config.max_frame_bytes;
        let sent = shared.links.send(to, msgs, max, &shared.errors, |peer| {
            spawn_link(shared, peer.clone())
        });
        if sent.is_err() && shared.is_shut.load(Ordering::Acquire) {
            return Err(TransportError::Shutdown);
        }
        sent
    }

    fn send_snapshot(
        &self,
        to: &Peer,
        offer: SnapshotOffer,
        data: SnapshotReader,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let shared = self.shared.clone();
        let to = to.clone();
        Box::pin(async move {
            if shared.is_shut.load(Ordering::Acquire) {
                return Err(TransportError::Shutdown);
            }
            tokio::select! {
                _ = shared.cancel.cancelled() => Err(TransportError::Shutdown),
                r = crate::snapshot::send(&shared, &to, offer, data) => r,
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.close();
            let done = async {
                shared.tracker.wait().await;
                // CONNECTION_CLOSE frames out, so peers notice at once.
                shared.endpoint.wait_idle().await;
            };
            if timeout(SHUTDOWN_WAIT, done).await.is_err() {
                tracing::warn!(id = %shared.id, "transport tasks still running {SHUTDOWN_WAIT:?} after shutdown");
            }
        })
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        // Tasks hold the shared state; stop them so the socket closes.
        self.shared.close();
    }
}

/// The connection to `peer`: the one already open, or a new one within
/// the connect timeout, whose server certificate names `peer.id`.
pub(crate) async fn connect(
    shared: &Shared,
    peer: &Peer,
) -> Result<quinn::Connection, TransportError> {
    if let Some(conn) = lock(&shared.connections).get(peer) {
        if conn.close_reason().is_none() {
            return Ok(conn.clone());
        }
    }
    let unreachable = |reason: String| TransportError::Unreachable {
        peer: peer.id.clone(),
        reason,
    };
    let dial = async {
        let addr = resolve(&peer.address).await?;
        let connecting = shared
            .endpoint
            .connect(addr, peer.id.as_str())
            .map_err(|e| unreachable(format!("cannot dial {addr}: {e}")))?;
        connecting
            .await
            .map_err(|e| unreachable(format!("QUIC handshake with {addr}: {e}")))
    };
    let conn = match timeout(shared.config.connect_timeout, dial).await {
        Err(_) => {
            return Err(unreachable(format!(
                "no QUIC handshake with {} within {:?}",
                peer.address, shared.config.connect_timeout
            )))
        }
        Ok(result) => result?,
    };
    lock(&shared.connections).insert(peer.clone(), conn.clone());
    Ok(conn)
}

/// A UDP socket bound to `addr`, with kernel buffers of `buffer_bytes`
/// asked for (the kernel may grant less).
fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer only costs throughput.
    let _ = sock.set_recv_buffer_size(buffer_bytes);
    let _ = sock.set_send_buffer_size(buffer_bytes);
    tracing::debug!(
        %addr,
        asked = buffer_bytes,
        recv = ?sock.recv_buffer_size(),
        send = ?sock.send_buffer_size(),
        "UDP socket buffers"
    );
    Ok(socket)
}

async fn resolve(address: &ServerAddress) -> Result<SocketAddr, TransportError> {
    if let Ok(addr) = address.as_str().parse() {
        return Ok(addr);
    }
    let context = || format!("resolving {address}");
    let mut addrs = tokio::net::lookup_host(address.as_str())
        .await
        .map_err(|source| TransportError::Io {
            context: context(),
            source,
        })?;
    addrs.next().ok_or_else(|| TransportError::Io {
        context: context(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map or option update, so a
    // poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
