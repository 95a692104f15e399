//! The transport handle and the state its tasks share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raftkit::transport::InboundStream;
use raftkit::{
    BoxFuture, Inbound, Message, NodeId, Peer, ServerAddress, SnapshotOffer, SnapshotReader,
    Transport, TransportError,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use raftkit::transport::errors::{ErrorCounts, ErrorKind};
use raftkit::transport::inbound::MessageSlots;
use raftkit::transport::link::Links;

use crate::outbound::spawn_link;
use crate::{TcpConfig, TcpConfigError};

/// How long `shutdown` waits for the transport's tasks to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A server's TCP transport. Made by [`TcpTransport::bind`]; see the
/// [crate docs](crate) for the protocol.
///
/// Must be used inside a tokio runtime: `send` starts a connection task
/// the first time it sends to a peer.
#[derive(Debug)]
pub struct TcpTransport {
    pub(crate) shared: Arc<Shared>,
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] TcpConfigError),
    /// The TLS files could not be loaded.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
    /// The listener could not bind.
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
    pub(crate) config: TcpConfig,
    pub(crate) errors: ErrorCounts,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::Tls>,
    local_addr: SocketAddr,
    is_shut: AtomicBool,
    inbound_tx: Mutex<Option<mpsc::Sender<Inbound>>>,
    inbound_rx: Mutex<Option<InboundStream>>,
    /// Outbound links by peer id and address: a new server at an old
    /// address gets a link of its own (TLS checks the id).
    links: Links,
    /// Each peer's current inbound message connection.
    pub(crate) message_slots: MessageSlots,
}

impl TcpTransport {
    /// Listens at `addr` (port 0 picks a free port) as server `id`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit::Transport;
    /// use raftkit_tcp::{TcpConfig, TcpTransport};
    /// let t = TcpTransport::bind("n1".into(), "127.0.0.1:0".parse().unwrap(), TcpConfig::default())
    ///     .await
    ///     .unwrap();
    /// assert!(t.local_addr().as_str().starts_with("127.0.0.1:"));
    /// t.shutdown().await;
    /// # });
    /// ```
    pub async fn bind(
        id: NodeId,
        addr: SocketAddr,
        config: TcpConfig,
    ) -> Result<TcpTransport, BindError> {
        let config = config.validate()?;
        #[cfg(feature = "tls")]
        let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BindError::Bind { addr, source })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_capacity);
        let shared = Arc::new(Shared {
            id,
            config,
            errors: ErrorCounts::default(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            #[cfg(feature = "tls")]
            tls,
            local_addr,
            is_shut: AtomicBool::new(false),
            inbound_tx: Mutex::new(Some(inbound_tx)),
            inbound_rx: Mutex::new(Some(inbound_rx)),
            links: Links::default(),
            message_slots: MessageSlots::default(),
        });
        shared
            .tracker
            .spawn(crate::inbound::accept_loop(shared.clone(), listener));
        Ok(TcpTransport { shared })
    }

    /// This server's id.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit_tcp::{TcpConfig, TcpTransport};
    /// let any = "127.0.0.1:0".parse().unwrap();
    /// let t = TcpTransport::bind("n1".into(), any, TcpConfig::default()).await.unwrap();
    /// assert_eq!(t.id().as_str(), "n1");
    /// assert_ne!(t.socket_addr().port(), 0);
    /// # });
    /// ```
    pub fn id(&self) -> &NodeId {
        &self.shared.id
    }

    /// The socket address the listener is bound to.
    pub fn socket_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// How many errors of `kind` this transport has counted (the
    /// `raft_transport_errors_total` metric adds up every transport in the
    /// process).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit_tcp::{ErrorKind, TcpConfig, TcpTransport};
    /// let any = "127.0.0.1:0".parse().unwrap();
    /// let t = TcpTransport::bind("n1".into(), any, TcpConfig::default()).await.unwrap();
    /// assert_eq!(t.error_count(ErrorKind::WrongCluster), 0);
    /// # });
    /// ```
    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.shared.errors.get(kind)
    }

    /// How many outbound links (one per peer sent to) are open. A link
    /// closes after [`TcpConfig::link_idle_timeout`] without messages.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use raftkit_tcp::{TcpConfig, TcpTransport};
    /// let any = "127.0.0.1:0".parse().unwrap();
    /// let t = TcpTransport::bind("n1".into(), any, TcpConfig::default()).await.unwrap();
    /// assert_eq!(t.open_links(), 0);
    /// # });
    /// ```
    pub fn open_links(&self) -> usize {
        self.shared.links.open()
    }
}

impl Shared {
    /// A sender into the inbound stream, or `None` after shutdown.
    pub(crate) fn inbound_sender(&self) -> Option<mpsc::Sender<Inbound>> {
        lock(&self.inbound_tx).clone()
    }

    fn close(&self) {
        self.is_shut.store(true, Ordering::Release);
        self.cancel.cancel();
        self.links.clear();
        lock(&self.inbound_tx).take();
        lock(&self.inbound_rx).take();
        self.tracker.close();
    }
}

impl Transport for TcpTransport {
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
            if timeout(SHUTDOWN_WAIT, shared.tracker.wait()).await.is_err() {
                tracing::warn!(id = %shared.id, "transport tasks still running {SHUTDOWN_WAIT:?} after shutdown");
            }
        })
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        // Tasks hold the shared state; stop them so the listener closes.
        self.shared.close();
    }
}

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed connection stream.
pub(crate) type Stream = Box<dyn Io>;

/// Opens a connection to `peer` within the connect timeout: TCP with
/// `TCP_NODELAY`, then TLS (checking that the peer's certificate names its
/// id) when configured.
pub(crate) async fn connect(shared: &Shared, peer: &Peer) -> Result<Stream, TransportError> {
    let tcp = connect_tcp(shared, peer).await?;
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        let address = &peer.address;
        let Some(name) = crate::tls::server_name(&peer.id) else {
            return Err(TransportError::Unreachable {
                peer: peer.id.clone(),
                reason: "the server id is not a valid TLS server name".to_owned(),
            });
        };
        return match timeout(
            shared.config.connect_timeout,
            tls.connector.connect(name, tcp),
        )
        .await
        {
            Err(_) => Err(TransportError::Io {
                context: format!("connecting to {} at {address}", peer.id),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            }),
            Ok(Err(source)) => Err(TransportError::Io {
                context: format!("TLS handshake with {} at {address}", peer.id),
                source,
            }),
            Ok(Ok(stream)) => Ok(Box::new(stream)),
        };
    }
    Ok(Box::new(tcp))
}

/// Whether connections are TLS (and so [`connect`] gives no plain socket).
pub(crate) fn uses_tls(shared: &Shared) -> bool {
    #[cfg(feature = "tls")]
    return shared.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = shared;
        false
    }
}

/// Opens a TCP connection to `peer` within the connect timeout, with
/// `TCP_NODELAY`.
pub(crate) async fn connect_tcp(shared: &Shared, peer: &Peer) -> Result<TcpStream, TransportError> {
    let address = &peer.address;
    let io_error = |source| TransportError::Io {
        context: format!("connecting to {} at {address}", peer.id),
        source,
    };
    let tcp = match timeout(
        shared.config.connect_timeout,
        TcpStream::connect(address.as_str()),
    )
    .await
    {
        Err(_) => return Err(io_error(std::io::Error::from(std::io::ErrorKind::TimedOut))),
        Ok(Err(source)) => return Err(io_error(source)),
        Ok(Ok(stream)) => stream,
    };
    tcp.set_nodelay(true).map_err(io_error)?;
    Ok(tcp)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single update (of a map, an option, a
    // link's write state), so a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
