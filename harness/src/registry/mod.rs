//! The service registry: what runs where, in which state, at which addresses, with a live
//! stream of changes and crash-safe persistence.
//!
//! - [`ServiceEntry`] is what the registry knows about one service: its [`ServiceState`],
//!   its [`Location`] (this machine, a LAN host, a WireGuard host), how it runs
//!   ([`ExecutionInfo`]), its [`Endpoint`]s with an address per network, its dependencies, its
//!   last [`HealthResult`], timestamps, restarts and metadata.
//! - [`Registry`] is the store: a cheap, cloneable handle, safe under concurrent use from any
//!   async runtime. It refuses what would make it inconsistent (unknown dependencies, removing a
//!   service others need, a state change outside [`ServiceState::can_transition_to`]), with a
//!   [`RegistryError`] naming the service.
//! - Every change publishes an [`Event`]: a [`RegistryEvent`] with a sequence number and a
//!   timestamp. [`Registry::subscribe`] gives a [`Subscription`] with its own bounded queue, so a
//!   slow subscriber never holds up the registry or other subscribers; one that falls behind is
//!   told how many events it missed ([`RecvError::Lagged`]) and goes on.
//! - The registry persists as a JSON [`Snapshot`]: [`Registry::save`] writes atomically and
//!   keeps the previous file as `<file>.bak`; [`Registry::load_or_new`] recovers from a
//!   corrupted file (kept aside, backup loaded, [`LoadWarning`] returned);
//!   [`Registry::autosave`] saves after changes, debounced, from a thread of its own. A save that
//!   fails is remembered ([`Registry::last_save_failure`]) and, with
//!   [`Registry::autosave_reporting`], reported once per distinct failure ([`SaveReport`]).
//!
//! ```
//! use harness::registry::{Endpoint, Registry, ServiceEntry, ServiceState};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! let registry = Registry::new();
//! let mut events = registry.subscribe();
//! registry.register(ServiceEntry::local_process("db")).await?;
//! registry
//!     .register(ServiceEntry::local_process("api").with_dependency("db"))
//!     .await?;
//! registry.set_state("db", ServiceState::Starting).await?;
//! registry
//!     .set_endpoint("db", Endpoint::new("main", "127.0.0.1:5432".parse()?))
//!     .await?;
//! registry.set_state("db", ServiceState::Running).await?;
//!
//! assert_eq!(registry.resolve("db", "main").await?.port(), 5432);
//! assert_eq!(registry.dependents("db").await?, ["api"]);
//! // `db` cannot go while `api` needs it.
//! assert!(registry.remove("db").await.is_err());
//!
//! let first = events.recv().await?;
//! assert_eq!((first.sequence, first.event.service()), (1, "db"));
//! # Ok(()) }) }
//! ```
//!
//! Keeping the registry on disk across runs:
//!
//! ```
//! use std::time::Duration;
//! use harness::registry::{Registry, ServiceEntry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("registry.json");
//! let (registry, warning) = Registry::load_or_new(&path).await?;
//! if let Some(warning) = warning {
//!     eprintln!("warning: {warning}");
//! }
//! {
//!     let _autosave = registry.autosave(&path, Duration::from_millis(200))?;
//!     registry.register(ServiceEntry::local_process("db")).await?;
//! } // Dropping the guard writes the last change.
//! let (reloaded, _) = Registry::load_or_new(&path).await?;
//! assert!(reloaded.contains("db").await);
//! # Ok(()) }) }
//! ```
//!
//! # Known limits
//!
//! - One registry lives in one process; sharing it with other processes is the WebSocket API's
//!   job.
//! - Each autosave guard owns one thread; a snapshot is the whole registry, which suits
//!   registries of up to some thousands of services.
//! - Address resolution by caller location follows ADR-007's simple rule
//!   ([`Location::network_to`]); it does not probe reachability.

mod error;
mod events;
mod model;
mod persist;
mod store;

pub use error::RegistryError;
pub use events::{
    DEFAULT_CAPACITY, DeploymentProgress, Event, EventFilter, EventKind, RecvError, RegistryEvent,
    Subscription, TryRecvError, UnknownEventKind,
};
pub use model::{
    Endpoint, ExecutionInfo, ExecutionKind, HealthResult, Location, Network, ServiceEntry,
    ServiceState, StateKind, Timestamp, Timestamps,
};
pub use persist::{
    AutosaveGuard, FORMAT_VERSION, LoadWarning, PersistError, Recovery, SaveFailure, SaveReport,
    Snapshot,
};
pub use store::Registry;
