//! The WebSocket API: a JSON protocol over the [`registry`](crate::registry) (and, through
//! [`ServiceController`] and [`Deployer`], over the orchestrator and the package layer), so
//! that tools, dashboards and other processes can watch and drive a running topology.
//!
//! - [`WsServer`] listens (async-net) and hands out a [`ConnectionHandler`] per client, whose
//!   [`handle`](ConnectionHandler::handle) future runs on any executor: the library spawns
//!   nothing on a runtime of its own choosing. [`WsServer::start`] serves on a thread of the
//!   server's own instead.
//! - Messages are JSON objects `{id, type, action, params}` ([`protocol`]); a response carries
//!   its request's `id`. Subscribed clients are pushed `event`s from the registry, each
//!   connection through its own bounded queue, so a slow client never holds up the registry or
//!   other clients.
//! - Loopback by default; any other address needs a token. Browser pages from origins that
//!   are not allowed are refused at the handshake ([`WsServerBuilder::with_allowed_origin`]).
//!
//! `docs/protocol.md` at the repository's root specifies every message.
//!
//! ```no_run
//! use harness::api::WsServer;
//! use harness::registry::Registry;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! let registry = Registry::new();
//! let server = WsServer::bind("127.0.0.1:8080", registry).await?;
//! loop {
//!     let handler = server.accept().await?;
//!     smol::spawn(handler.handle()).detach(); // or tokio::spawn
//! }
//! # }) }
//! ```
//!
//! # Known limits
//!
//! - One event filter per connection: `subscribe` replaces the previous filter.
//! - Events are not replayed: a client that reconnects reads the current state
//!   (`list_services`) and subscribes again; sequence numbers tell it what it missed.
//! - Plain `ws://` only; put a TLS-terminating proxy in front to reach it over untrusted
//!   networks.

mod actions;
mod auth;
mod connection;
pub mod protocol;
mod server;

pub use actions::{
    ActionFailure, BoxFuture, Deployer, Deployment, Progress, ServiceController, ServiceEndpoint,
};
pub use auth::{generate_token, read_token_file, write_token_file};
pub use connection::{ConnectionError, ConnectionHandler};
pub use protocol::{
    ApiError, DeployRequest, ErrorCode, Message, MessageType, PROTOCOL_VERSION, RequestId,
    ServiceCommand,
};
pub use server::{
    BindError, DEFAULT_MAX_MESSAGE_SIZE, ServerHandle, ShutdownHandle, WsServer, WsServerBuilder,
};
