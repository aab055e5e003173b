//! `Topology`: the running topology a test receives as `&Topology`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::orchestrator::{LogLine, OrchestratorError, ServiceManager};

use super::service::{Service, parse_env_file};

/// A running topology: every service of the file, started and healthy.
///
/// Tests that name the same file (and overlays) share one running copy, unless they are
/// `isolated`; so a test that stops or restarts services should be `isolated`.
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

struct Inner {
    file: PathBuf,
    manager: ServiceManager,
    /// Each service's address, known once it started; ports are kept across restarts.
    addrs: Mutex<HashMap<String, Option<SocketAddr>>>,
}

/// A service of the topology could not be looked up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The topology has no service of that name.
    #[error("find service {service}: {} has no such service; its services are {}", file.display(), services.join(", "))]
    UnknownService {
        /// The name asked for.
        service: String,
        /// The topology file.
        file: PathBuf,
        /// The services it has.
        services: Vec<String>,
    },
    /// The service has no port, so no address.
    #[error(
        "find the address of service {service}: it has no port in {}; give it `port: auto` or a number",
        file.display()
    )]
    NoAddress {
        /// The service.
        service: String,
        /// The topology file.
        file: PathBuf,
    },
}

impl Topology {
    /// Starts every service of `manager`'s topology and returns once all are healthy.
    pub(crate) async fn launch(manager: ServiceManager) -> Result<Self, OrchestratorError> {
        let file = manager
            .topology()
            .files
            .first()
            .cloned()
            .unwrap_or_default();
        manager.start_all().await?;
        let topology = Topology {
            inner: Arc::new(Inner {
                file,
                manager,
                addrs: Mutex::new(HashMap::new()),
            }),
        };
        topology.refresh_addrs().await;
        Ok(topology)
    }

    /// Stops every service and removes the run's files.
    pub(crate) async fn shut_down(&self) -> Result<(), OrchestratorError> {
        self.inner.manager.stop_all().await
    }

    async fn refresh_addrs(&self) {
        let statuses = self.inner.manager.status_all().await;
        let mut addrs = self.lock_addrs();
        for status in statuses {
            addrs.insert(status.name, status.addr);
        }
    }

    fn lock_addrs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<SocketAddr>>> {
        self.inner.addrs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, name: &str) -> Result<(), LookupError> {
        if self.inner.manager.topology().service(name).is_some() {
            return Ok(());
        }
        Err(LookupError::UnknownService {
            service: name.to_string(),
            file: self.inner.file.clone(),
            services: self.names(),
        })
    }

    fn names(&self) -> Vec<String> {
        self.inner
            .manager
            .topology()
            .services
            .keys()
            .cloned()
            .collect()
    }

    /// The topology file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// One service, with its address and the environment harness gave it.
    pub fn service(&self, name: &str) -> Result<Service, LookupError> {
        self.check(name)?;
        let addr = self.lock_addrs().get(name).copied().flatten();
        let env = self
            .inner
            .manager
            .state_dir()
            .and_then(|dir| std::fs::read_to_string(dir.join(format!("{name}.env"))).ok())
            .map(|text| parse_env_file(&text))
            .unwrap_or_default();
        Ok(Service {
            name: name.to_string(),
            addr,
            env,
            manager: self.inner.manager.clone(),
        })
    }

    /// One service's address.
    pub fn addr(&self, name: &str) -> Result<SocketAddr, LookupError> {
        self.check(name)?;
        self.lock_addrs()
            .get(name)
            .copied()
            .flatten()
            .ok_or_else(|| LookupError::NoAddress {
                service: name.to_string(),
                file: self.inner.file.clone(),
            })
    }

    /// Every service, in the file's order.
    pub fn services(&self) -> Vec<Service> {
        self.names()
            .iter()
            .filter_map(|name| self.service(name).ok())
            .collect()
    }

    /// Starts a stopped service (its dependencies must run) and waits until it is healthy.
    pub async fn start(&self, name: &str) -> Result<(), OrchestratorError> {
        self.inner.manager.start(name).await?;
        self.refresh_addrs().await;
        Ok(())
    }

    /// Stops one service; its dependents keep running.
    pub async fn stop(&self, name: &str) -> Result<(), OrchestratorError> {
        self.inner.manager.stop(name).await
    }

    /// Stops and starts one service, on the same port, and waits until it is healthy.
    pub async fn restart(&self, name: &str) -> Result<(), OrchestratorError> {
        self.inner.manager.restart(name).await?;
        self.refresh_addrs().await;
        Ok(())
    }

    /// One service's last lines of output, oldest first.
    pub fn logs(&self, name: &str) -> Result<Vec<LogLine>, OrchestratorError> {
        self.inner.manager.logs(name)
    }

    /// The manager that runs the services, for what this type does not offer.
    pub fn manager(&self) -> &ServiceManager {
        &self.inner.manager
    }
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("file", &self.inner.file)
            .field("services", &self.names())
            .finish_non_exhaustive()
    }
}
