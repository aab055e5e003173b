//! `WsServer`: the listening socket, the settings every connection shares, and shutdown.
//!
//! The server never spawns on a runtime of its own choosing: [`WsServer::accept`] hands out a
//! [`ConnectionHandler`] whose [`handle`](ConnectionHandler::handle) future the caller spawns
//! on whatever executor it uses. [`WsServer::serve_until`] and [`WsServer::start`] are the
//! conveniences that do this on an executor the server brings (async-executor), the latter on
//! a thread of its own.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use async_executor::Executor;
use async_io::Timer;
use async_net::TcpListener;
use event_listener::Event as Notify;
use futures_lite::future;

use crate::api::actions::{Backend, Deployer, ServiceController};
use crate::api::auth::{AccessPolicy, normalize_origin};
use crate::api::connection::ConnectionHandler;
use crate::registry::Registry;

/// The largest message a client may send, by default: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Limits and timeouts every connection of a server follows.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The largest message a client may send, in bytes.
    pub(crate) max_message_size: usize,
    /// How many events wait for a slow client before the oldest are dropped (and reported).
    pub(crate) event_queue: usize,
    /// How many events a client may miss before its queue next runs empty; past that it is
    /// disconnected.
    pub(crate) max_missed_events: u64,
    /// How long one message may take to be written before the client counts as stuck.
    pub(crate) send_timeout: Duration,
    /// How long a closing connection waits for its close frame to go out and be answered.
    pub(crate) close_timeout: Duration,
    /// How long a new connection has to complete its WebSocket handshake.
    pub(crate) handshake_timeout: Duration,
    /// How often the server pings an idle client; a client silent for two intervals is closed.
    pub(crate) ping_interval: Option<Duration>,
    /// How many slow requests (`service_action`, `deploy_package`) one connection may have
    /// under way at once.
    pub(crate) max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            event_queue: crate::registry::DEFAULT_CAPACITY,
            max_missed_events: 16 * crate::registry::DEFAULT_CAPACITY as u64,
            send_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(30)),
            max_in_flight: 16,
        }
    }
}

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    pub(crate) limits: Limits,
    pub(crate) policy: AccessPolicy,
    pub(crate) shutdown: Shutdown,
    /// Connections accepted and not yet finished.
    live: AtomicUsize,
    /// Notified when `live` drops.
    ended: Notify,
}

impl Shared {
    /// Counts a connection as live until the returned guard is dropped.
    pub(crate) fn track(self: &Arc<Self>) -> LiveGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        LiveGuard(Arc::clone(self))
    }
}

/// Keeps a connection counted as live.
pub(crate) struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify(usize::MAX);
    }
}

/// A flag that, once raised, stays raised, and wakes whoever waits for it.
#[derive(Default)]
pub(crate) struct Shutdown {
    raised: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify(usize::MAX);
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Returns once the flag is raised.
    pub(crate) async fn wait(&self) {
        loop {
            if self.is_raised() {
                return;
            }
            let listener = self.notify.listen();
            // Look again after listening, so that a raise in between is not missed.
            if self.is_raised() {
                return;
            }
            listener.await;
        }
    }
}

/// Builds a [`WsServer`]: access rules, the controller and deployer, limits.
#[must_use = "a builder does nothing until `bind` is called"]
pub struct WsServerBuilder {
    registry: Registry,
    controller: Option<Arc<dyn ServiceController>>,
    deployer: Option<Arc<dyn Deployer>>,
    token: Option<String>,
    origins: Vec<String>,
    limits: Limits,
}

impl WsServerBuilder {
    /// Every connection must present this token (`Authorization: Bearer TOKEN` or
    /// `?token=TOKEN`). Required to bind an address other than loopback.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Browser pages from this origin (`https://dash.example.com`) may connect, besides the
    /// defaults (no `Origin` header, and loopback origins on the server's own port). `*`
    /// allows every origin, which lets any web page the user visits drive this server.
    pub fn with_allowed_origin(mut self, origin: impl AsRef<str>) -> Self {
        self.origins.push(normalize_origin(origin.as_ref()));
        self
    }

    /// `service_action` requests go to this controller.
    pub fn with_controller(mut self, controller: Arc<dyn ServiceController>) -> Self {
        self.controller = Some(controller);
        self
    }

    /// `deploy_package` requests go to this deployer.
    pub fn with_deployer(mut self, deployer: Arc<dyn Deployer>) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// The largest message a client may send, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]). A larger one is answered with a `message_too_large`
    /// error and the connection is closed with code 1009.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes.max(1);
        self
    }

    /// How many events may wait for one client before the oldest are dropped and the client
    /// is told how many it missed (default 1024).
    pub fn with_event_queue(mut self, events: usize) -> Self {
        self.limits.event_queue = events.max(1);
        self
    }

    /// How many events a client may miss before its queue next runs empty before it is
    /// disconnected as too slow (default 16 times the event queue).
    pub fn with_max_missed_events(mut self, events: u64) -> Self {
        self.limits.max_missed_events = events;
        self
    }

    /// How long writing one message to a client may take before the client is disconnected
    /// as stuck (default 10 s).
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.limits.send_timeout = timeout;
        self
    }

    /// How long a closing connection waits for its close frame to be sent and answered
    /// (default 5 s).
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.limits.close_timeout = timeout;
        self
    }

    /// How long a new connection has to finish its WebSocket handshake (default 10 s).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = timeout;
        self
    }

    /// How often an idle client is pinged (default 30 s; `None` never). A client that sends
    /// nothing, not even a pong, for two intervals is disconnected.
    pub fn with_ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.limits.ping_interval = interval;
        self
    }

    /// How many `service_action` and `deploy_package` requests one connection may have under
    /// way at once (default 16); beyond that they are answered with a `busy` error.
    pub fn with_max_in_flight(mut self, requests: usize) -> Self {
        self.limits.max_in_flight = requests.max(1);
        self
    }

    /// Listens on `addr` (the first of its addresses that can be bound). An address that is
    /// not loopback needs a token ([`with_token`](Self::with_token)), and is refused before
    /// anything listens on it.
    ///
    /// A host name in `addr` is resolved with the system resolver, which may block briefly.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<WsServer, BindError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(BindError::Listen)?.collect();
        if self.token.is_none()
            && let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(BindError::TokenRequired { addr: *open });
        }
        let listener = TcpListener::bind(&addrs[..])
            .await
            .map_err(BindError::Listen)?;
        let local_addr = listener.local_addr().map_err(BindError::Listen)?;
        let policy = AccessPolicy {
            token: self.token,
            extra_origins: self.origins,
            port: local_addr.port(),
        };
        let shared = Arc::new(Shared {
            backend: Backend {
                registry: self.registry,
                controller: self.controller,
                deployer: self.deployer,
            },
            limits: self.limits,
            policy,
            shutdown: Shutdown::default(),
            live: AtomicUsize::new(0),
            ended: Notify::new(),
        });
        tracing::info!(%local_addr, "WebSocket API listening");
        Ok(WsServer {
            listener,
            local_addr,
            shared,
        })
    }
}

/// Why a server could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The socket could not be bound.
    #[error("listen for WebSocket connections: {0}")]
    Listen(#[source] io::Error),
    /// The address is reachable from other machines and no token was given.
    #[error(
        "listen on {addr}: an address other than loopback needs a token, so that only clients \
         that know it can start and stop services"
    )]
    TokenRequired {
        /// The address bound.
        addr: SocketAddr,
    },
}

/// The WebSocket API server over a [`Registry`].
///
/// ```no_run
/// use harness::api::WsServer;
/// use harness::registry::Registry;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
/// let registry = Registry::new();
/// let server = WsServer::bind("127.0.0.1:8080", registry).await?;
/// // The caller chooses the runtime: smol::spawn here, tokio::spawn works as well.
/// loop {
///     let handler = server.accept().await?;
///     smol::spawn(handler.handle()).detach();
/// }
/// # }) }
/// ```
pub struct WsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsServer")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl WsServer {
    /// A builder for a server over `registry`, for tokens, origins, a controller, a deployer
    /// and limits.
    pub fn builder(registry: Registry) -> WsServerBuilder {
        WsServerBuilder {
            registry,
            controller: None,
            deployer: None,
            token: None,
            origins: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// A server over `registry` with the default settings, listening on `addr`, which must be
    /// a loopback address (others need a token: see [`WsServer::builder`]).
    pub async fn bind(addr: impl ToSocketAddrs, registry: Registry) -> Result<WsServer, BindError> {
        WsServer::builder(registry).bind(addr).await
    }

    /// The same as [`WsServer::bind`], under the name the Phase 2 plan uses.
    pub async fn new(addr: impl ToSocketAddrs, registry: Registry) -> Result<WsServer, BindError> {
        WsServer::bind(addr, registry).await
    }

    /// The address the server listens on (with the port chosen, if port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next incoming connection. Its handshake (token, origin, path) and its messages are
    /// handled by the future [`ConnectionHandler::handle`], which the caller spawns.
    ///
    /// After [`ShutdownHandle::shutdown`], fails with [`io::ErrorKind::ConnectionAborted`].
    pub async fn accept(&self) -> io::Result<ConnectionHandler> {
        let accepted = future::or(async { Some(self.listener.accept().await) }, async {
            self.shared.shutdown.wait().await;
            None
        })
        .await;
        match accepted {
            Some(Ok((stream, peer))) => {
                if self.shared.shutdown.is_raised() {
                    return Err(shutting_down());
                }
                Ok(ConnectionHandler::new(
                    stream,
                    peer,
                    Arc::clone(&self.shared),
                ))
            }
            Some(Err(e)) => Err(e),
            None => Err(shutting_down()),
        }
    }

    /// A handle that shuts this server down from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// How many connections are open (accepted and not yet finished).
    pub fn connections(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    /// The registry the server serves.
    pub fn registry(&self) -> &Registry {
        &self.shared.backend.registry
    }

    /// Serves connections on an executor of the server's own, driven by this future, until
    /// `signal` completes or [`ShutdownHandle::shutdown`] is called; then closes every
    /// connection (with close code 1001, "server shutting down") and returns once they are
    /// gone or the close timeout has passed.
    pub async fn serve_until(self, signal: impl Future<Output = ()>) -> io::Result<()> {
        let ex = Executor::new();
        let shared = Arc::clone(&self.shared);
        ex.run(async {
            let accept_loop = async {
                loop {
                    match self.accept().await {
                        Ok(handler) => {
                            ex.spawn(async move {
                                let peer = handler.peer_addr();
                                if let Err(e) = handler.handle().await {
                                    tracing::debug!(%peer, "connection ended: {e}");
                                }
                            })
                            .detach();
                        }
                        Err(_) if shared.shutdown.is_raised() => break,
                        Err(e) => {
                            // Out of file descriptors, or a connection reset before it was
                            // accepted: wait a little rather than spin.
                            tracing::warn!("accept a WebSocket connection: {e}");
                            Timer::after(Duration::from_millis(100)).await;
                        }
                    }
                }
            };
            future::or(accept_loop, async {
                signal.await;
            })
            .await;
            shared.shutdown.raise();
            let deadline = shared.limits.close_timeout + Duration::from_secs(1);
            let all_closed = future::or(
                async {
                    wait_idle(&shared).await;
                    true
                },
                async {
                    Timer::after(deadline).await;
                    false
                },
            )
            .await;
            if !all_closed {
                tracing::warn!(
                    connections = shared.live.load(Ordering::Acquire),
                    "some connections did not close in time; dropping them"
                );
            }
        })
        .await;
        tracing::info!(addr = %self.local_addr, "WebSocket API stopped");
        Ok(())
    }

    /// Serves on a thread of the server's own (named `harness-ws`) until the returned
    /// handle's [`ServerHandle::shutdown`] (or its drop).
    pub fn start(self) -> io::Result<ServerHandle> {
        let local_addr = self.local_addr;
        let shutdown = self.shutdown_handle();
        let signal = self.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("harness-ws".into())
            .spawn(move || async_io::block_on(self.serve_until(async move { signal.wait().await })))
            .map_err(|e| {
                io::Error::new(e.kind(), format!("start the WebSocket server thread: {e}"))
            })?;
        Ok(ServerHandle {
            local_addr,
            shutdown,
            thread: Some(thread),
        })
    }
}

fn shutting_down() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "accept a WebSocket connection: the server is shutting down",
    )
}

async fn wait_idle(shared: &Shared) {
    loop {
        if shared.live.load(Ordering::Acquire) == 0 {
            return;
        }
        let listener = shared.ended.listen();
        if shared.live.load(Ordering::Acquire) == 0 {
            return;
        }
        listener.await;
    }
}

/// Shuts a server down: it accepts no more connections, and every open one is sent a close
/// frame (code 1001, "server shutting down").
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("raised", &self.shared.shutdown.is_raised())
            .finish()
    }
}

impl ShutdownHandle {
    /// Starts the shutdown; returns at once.
    pub fn shutdown(&self) {
        self.shared.shutdown.raise();
    }

    /// Whether the shutdown has started.
    pub fn is_shut_down(&self) -> bool {
        self.shared.shutdown.is_raised()
    }

    /// Returns once the shutdown has started.
    pub async fn wait(&self) {
        self.shared.shutdown.wait().await;
    }

    /// Returns once no connection is open.
    pub async fn closed(&self) {
        wait_idle(&self.shared).await;
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }
}

/// A server running on its own thread ([`WsServer::start`]). Dropping it shuts the server
/// down and waits for it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.shutdown.connections()
    }

    /// A handle that starts the shutdown from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Closes every connection (code 1001), stops the server and waits for its thread.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        self.shutdown.shutdown();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("stop the WebSocket server: its thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("{e}");
        }
    }
}
