//! `Topology`: the running topology a test receives as `&Topology`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::exec::{LaunchError, OutputStream};
use crate::orchestrator::{DEFAULT_LOG_TAIL, LogLine, OrchestratorError, ServiceManager};

use super::service::{LogSource, Service, parse_env_file};
use super::supervisor::{Copy, RemoteService};

/// A running topology: every service of the file, started and healthy.
///
/// Tests that name the same file (and overlays) share one running copy, unless they are
/// `isolated`; so a test that stops or restarts services should be `isolated`. Under
/// `cargo nextest run` a shared copy runs in a supervisor process (see `docs/testing.md`):
/// the test reads its addresses, environment and logs, and cannot stop, start or restart its
/// services.
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

struct Inner {
    file: PathBuf,
    backend: Backend,
}

enum Backend {
    /// Started by this process.
    Local {
        manager: ServiceManager,
        /// Each service's address, known once it started; ports are kept across restarts.
        addrs: Mutex<HashMap<String, Option<SocketAddr>>>,
    },
    /// A lease on the copy a supervisor owns: the connection is held until the last clone
    /// drops.
    Leased {
        services: Vec<RemoteService>,
        state_dir: Option<PathBuf>,
        _lease: UnixStream,
    },
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
                backend: Backend::Local {
                    manager,
                    addrs: Mutex::new(HashMap::new()),
                },
            }),
        };
        topology.refresh_addrs().await;
        Ok(topology)
    }

    /// The copy a supervisor described, leased for as long as `lease` stays open.
    pub(crate) fn leased(copy: Copy, lease: UnixStream) -> Self {
        Topology {
            inner: Arc::new(Inner {
                file: copy.file,
                backend: Backend::Leased {
                    services: copy.services,
                    state_dir: copy.state_dir,
                    _lease: lease,
                },
            }),
        }
    }

    /// What a supervisor tells its tests about this copy.
    pub(crate) fn describe(&self) -> Copy {
        let state_dir = self.state_dir();
        let services = self
            .services()
            .into_iter()
            .map(|service| RemoteService {
                log_file: state_dir
                    .as_ref()
                    .map(|dir| dir.join(format!("{}.log", service.name))),
                name: service.name,
                addr: service.addr,
                env: service.env,
            })
            .collect();
        Copy {
            file: self.inner.file.clone(),
            state_dir,
            services,
        }
    }

    /// Stops every service and removes the run's files; a leased copy is only let go.
    pub(crate) async fn shut_down(&self) -> Result<(), OrchestratorError> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.stop_all().await,
            Backend::Leased { .. } => Ok(()),
        }
    }

    async fn refresh_addrs(&self) {
        let Backend::Local { manager, addrs } = &self.inner.backend else {
            return;
        };
        let statuses = manager.status_all().await;
        let mut addrs = addrs.lock().unwrap_or_else(|e| e.into_inner());
        for status in statuses {
            addrs.insert(status.name, status.addr);
        }
    }

    fn known_addr(&self, name: &str) -> Option<SocketAddr> {
        match &self.inner.backend {
            Backend::Local { addrs, .. } => addrs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .copied()
                .flatten(),
            Backend::Leased { services, .. } => services
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.addr),
        }
    }

    fn check(&self, name: &str) -> Result<(), LookupError> {
        if self.names().iter().any(|n| n == name) {
            return Ok(());
        }
        Err(LookupError::UnknownService {
            service: name.to_string(),
            file: self.inner.file.clone(),
            services: self.names(),
        })
    }

    fn names(&self) -> Vec<String> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.topology().services.keys().cloned().collect(),
            Backend::Leased { services, .. } => services.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// The topology file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// The directory of the services' env files and logs, while they run.
    pub fn state_dir(&self) -> Option<PathBuf> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.state_dir(),
            Backend::Leased { state_dir, .. } => state_dir.clone(),
        }
    }

    /// One service, with its address and the environment harness gave it.
    pub fn service(&self, name: &str) -> Result<Service, LookupError> {
        self.check(name)?;
        let addr = self.known_addr(name);
        let (env, logs) = match &self.inner.backend {
            Backend::Local { manager, .. } => {
                let env = manager
                    .state_dir()
                    .and_then(|dir| std::fs::read_to_string(dir.join(format!("{name}.env"))).ok())
                    .map(|text| parse_env_file(&text))
                    .unwrap_or_default();
                (env, LogSource::Manager(manager.clone()))
            }
            Backend::Leased { services, .. } => {
                let remote = services.iter().find(|s| s.name == name);
                (
                    remote.map(|s| s.env.clone()).unwrap_or_default(),
                    LogSource::File(remote.and_then(|s| s.log_file.clone())),
                )
            }
        };
        Ok(Service {
            name: name.to_string(),
            addr,
            env,
            logs,
        })
    }

    /// One service's address.
    pub fn addr(&self, name: &str) -> Result<SocketAddr, LookupError> {
        self.check(name)?;
        self.known_addr(name).ok_or_else(|| LookupError::NoAddress {
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

    /// The manager, for a copy this process started; the error a shared copy gives instead.
    fn local(&self, doing: &str, name: &str) -> Result<&ServiceManager, OrchestratorError> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => Ok(manager),
            Backend::Leased { .. } => Err(OrchestratorError::Stop {
                service: name.to_string(),
                source: LaunchError::Io {
                    doing: format!(
                        "{doing} {name} in the copy of {} that a supervisor shares between                          nextest's test processes",
                        self.inner.file.display()
                    ),
                    source: std::io::Error::new(
                        std::io::ErrorKind::Unsupported,
                        "a test that stops, starts or restarts services must be `isolated`",
                    ),
                },
            }),
        }
    }

    /// Starts a stopped service (its dependencies must run) and waits until it is healthy.
    pub async fn start(&self, name: &str) -> Result<(), OrchestratorError> {
        self.local("start", name)?.start(name).await?;
        self.refresh_addrs().await;
        Ok(())
    }

    /// Stops one service; its dependents keep running.
    pub async fn stop(&self, name: &str) -> Result<(), OrchestratorError> {
        self.local("stop", name)?.stop(name).await
    }

    /// Stops and starts one service, on the same port, and waits until it is healthy.
    pub async fn restart(&self, name: &str) -> Result<(), OrchestratorError> {
        self.local("restart", name)?.restart(name).await?;
        self.refresh_addrs().await;
        Ok(())
    }

    /// One service's last lines of output, oldest first.
    pub fn logs(&self, name: &str) -> Result<Vec<LogLine>, OrchestratorError> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.logs(name),
            Backend::Leased { .. } => match self.service(name) {
                Ok(service) => Ok(service.logs()),
                Err(_) => Err(OrchestratorError::UnknownService(name.to_string())),
            },
        }
    }

    /// The manager that runs the services, for what this type does not offer.
    ///
    /// # Panics
    ///
    /// For a copy shared under nextest, whose manager runs in the supervisor process; an
    /// `isolated` test always has its own manager.
    pub fn manager(&self) -> &ServiceManager {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager,
            Backend::Leased { .. } => panic!(
                "the copy of {} is shared between nextest's test processes and its manager runs                  in the supervisor; make the test `isolated` to get a manager of its own",
                self.inner.file.display()
            ),
        }
    }
}

/// The last `DEFAULT_LOG_TAIL` lines of a service's log file.
pub(crate) fn log_file_tail(service: &str, file: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(DEFAULT_LOG_TAIL)..]
        .iter()
        .map(|text| LogLine {
            service: service.to_string(),
            stream: OutputStream::Stdout,
            text: text.to_string(),
        })
        .collect()
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("file", &self.inner.file)
            .field("services", &self.names())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(log_file: Option<PathBuf>) -> (Topology, UnixStream) {
        let (lease, supervisor_side) = UnixStream::pair().unwrap();
        let copy = Copy {
            file: PathBuf::from("/virtual/kv.yaml"),
            state_dir: Some(PathBuf::from("/virtual/state")),
            services: vec![RemoteService {
                name: "cache".to_string(),
                addr: Some("127.0.0.1:4000".parse().unwrap()),
                env: vec![("PORT".to_string(), "4000".to_string())],
                log_file,
            }],
        };
        (Topology::leased(copy, lease), supervisor_side)
    }

    #[test]
    fn a_leased_copy_reads_what_the_supervisor_sent_and_its_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cache.log");
        std::fs::write(&log, "first\nsecond\n").unwrap();
        let (topology, _supervisor) = leased(Some(log));
        let cache = topology.service("cache").unwrap();
        assert_eq!(cache.addr(), "127.0.0.1:4000".parse().unwrap());
        assert_eq!(cache.env_var("PORT"), Some("4000"));
        let lines: Vec<String> = cache.logs().into_iter().map(|l| l.text).collect();
        assert_eq!(lines, ["first", "second"]);
        assert!(topology.logs("db").is_err());
        assert!(
            topology
                .addr("db")
                .unwrap_err()
                .to_string()
                .contains("cache")
        );
        assert_eq!(topology.state_dir(), Some(PathBuf::from("/virtual/state")));
    }

    #[test]
    fn a_leased_copy_refuses_to_restart_and_ends_its_lease_when_dropped() {
        let (topology, mut supervisor) = leased(None);
        let error = async_io::block_on(topology.restart("cache"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("restart cache") && error.contains("isolated"),
            "{error}"
        );
        let clone = topology.clone();
        drop(topology);
        drop(clone);
        // The supervisor's side sees the lease end.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut supervisor, &mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
