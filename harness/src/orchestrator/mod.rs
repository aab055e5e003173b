//! The orchestrator: starts a topology's services in dependency order, waits until each is
//! healthy, keeps the [registry](crate::registry) current, and stops everything again.
//!
//! [`ServiceManager`] does the ordering, ports, addresses, health checks, logs and failure
//! handling; a [`ServiceExecutor`] per target kind makes a service run ([`ProcessExecutor`] for
//! `process:` targets).
//!
//! ```no_run
//! use harness::orchestrator::ServiceManager;
//! use harness::registry::Registry;
//! use harness::topology::TopologyConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! let topology = TopologyConfig::load("fixtures/topologies/demo.yaml")?;
//! let manager = ServiceManager::new(topology, Registry::new());
//! manager.start_all().await?; // every service healthy, or everything stopped again
//! for status in manager.status_all().await {
//!     println!("{} {:?}", status.name, status.addr);
//! }
//! manager.stop_all().await?;
//! # Ok(()) }) }
//! ```
//!
//! # Health checks
//!
//! `tcp` connects to `127.0.0.1:PORT`; `http` sends `GET path` over HTTP/1.1 and compares the
//! status; `command` runs a program (with the service's environment) and wants exit code 0;
//! `log` waits for a line of the service's output that matches. The first tries come 1 ms
//! apart, doubling up to `interval`, so that a service that is ready at once costs no
//! interval. Failures during
//! `start_period` do not count; after it, `retries` failures in a row fail the start. A service
//! without a health check is checked with `tcp` when it has a port, and otherwise counts as
//! started once it runs.
//!
//! # Known limits
//!
//! - Only `process:` targets have an executor; the others fail their start with a clear error.
//! - A service that exits after it was started is marked failed in the registry, but is not
//!   restarted; restart it with [`ServiceManager::restart`].
//! - `port: auto` takes a port that was free a moment before the service binds it (see
//!   [`ServiceManager`]); another program could take it in between.

mod env;
mod error;
mod executor;
mod health;
mod logs;
mod manager;
mod ports;
mod process;

pub use error::{OrchestratorError, StartFailure};
pub use executor::{BoxFuture, RunningService, ServiceExecutor, StartSpec};
pub use logs::{DEFAULT_LOG_TAIL, FAILURE_TAIL, LogBuffer, LogLine};
pub use manager::{DEFAULT_STOP_GRACE, MAIN_ENDPOINT, Progress, ServiceManager, ServiceStatus};
pub use process::ProcessExecutor;
