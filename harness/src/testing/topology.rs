//! `Topology`: the running topology a test receives as `&Topology`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::exec::OutputStream;
use crate::orchestrator::{DEFAULT_LOG_TAIL, LogLine, OrchestratorError, ServiceManager};

use super::service::{ExecOutput, LogSource, Service, parse_env_file};
use super::supervisor::{Copy, RemoteService, Request, Welcome};

/// A running topology: every service of the file, started and healthy.
///
/// Tests that name the same file (and overlays) share one running copy, unless they are
/// `isolated`. A test that stops, starts or restarts a service of a shared copy does so for
/// every test sharing it; give such a test a copy of its own with `isolated`, or a topology
/// that no other test names. Under `cargo nextest run` a shared copy runs in a supervisor
/// process (see `docs/testing.md`), which carries out `start`, `stop` and `restart` for the
/// test.
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

struct Inner {
    file: PathBuf,
    backend: Backend,
}

// One per running copy, behind its Arc: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// Started by this process.
    Local {
        manager: ServiceManager,
        /// Each service's address, known once it started; ports are kept across restarts.
        addrs: Mutex<HashMap<String, Option<SocketAddr>>>,
        /// Each service's further published ports: where it runs, where this machine
        /// reaches it.
        ports: Mutex<HashMap<String, Vec<(u16, SocketAddr)>>>,
    },
    /// A lease on the copy a supervisor owns: the connection is held until the last clone
    /// drops.
    Leased {
        /// As the supervisor last described them: a start may change an address.
        services: Mutex<Vec<RemoteService>>,
        state_dir: Option<PathBuf>,
        lease: UnixStream,
        /// One request at a time on the lease.
        asking: async_lock::Mutex<()>,
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
                    ports: Mutex::new(HashMap::new()),
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
                    services: Mutex::new(copy.services),
                    state_dir: copy.state_dir,
                    lease,
                    asking: async_lock::Mutex::new(()),
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
                ports: service.ports,
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
        let Backend::Local {
            manager,
            addrs,
            ports,
        } = &self.inner.backend
        else {
            return;
        };
        let statuses = manager.status_all().await;
        let mut published = HashMap::new();
        for status in &statuses {
            let Ok(entry) = manager.registry().get(&status.name).await else {
                continue;
            };
            let service_ports: Vec<(u16, SocketAddr)> = entry
                .endpoints
                .iter()
                .filter_map(|endpoint| {
                    let port = endpoint.name.strip_prefix("port-")?.parse().ok()?;
                    Some((port, endpoint.address))
                })
                .collect();
            published.insert(status.name.clone(), service_ports);
        }
        *lock(ports) = published;
        let mut addrs = lock(addrs);
        for status in statuses {
            addrs.insert(status.name, status.addr);
        }
    }

    fn known_ports(&self, name: &str) -> Vec<(u16, SocketAddr)> {
        match &self.inner.backend {
            Backend::Local { ports, .. } => lock(ports).get(name).cloned().unwrap_or_default(),
            Backend::Leased { services, .. } => lock(services)
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.ports.clone())
                .unwrap_or_default(),
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
            Backend::Leased { services, .. } => lock(services)
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
            Backend::Leased { services, .. } => {
                lock(services).iter().map(|s| s.name.clone()).collect()
            }
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
                let services = lock(services);
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
            ports: self.known_ports(name),
            topology: self.clone(),
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

    /// Starts a stopped service (its dependencies must run) and waits until it is healthy.
    pub async fn start(&self, name: &str) -> Result<(), OrchestratorError> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.start(name).await?,
            Backend::Leased { .. } => self.ask(Request::Start(name.to_string())).await?,
        }
        self.refresh_addrs().await;
        Ok(())
    }

    /// Stops one service; its dependents keep running.
    pub async fn stop(&self, name: &str) -> Result<(), OrchestratorError> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.stop(name).await,
            Backend::Leased { .. } => self.ask(Request::Stop(name.to_string())).await,
        }
    }

    /// Stops and starts one service, on the same port, and waits until it is healthy.
    pub async fn restart(&self, name: &str) -> Result<(), OrchestratorError> {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.restart(name).await?,
            Backend::Leased { .. } => self.ask(Request::Restart(name.to_string())).await?,
        }
        self.refresh_addrs().await;
        Ok(())
    }

    /// Runs `argv` where the service `name` runs, to its end: beside a process, with its
    /// environment and working directory; inside a container (`docker exec`); on a LAN host,
    /// over the service's SSH connection. A command that runs and fails is no error: see
    /// [`ExecOutput::status`].
    pub async fn exec<S: AsRef<str>>(
        &self,
        name: &str,
        argv: &[S],
    ) -> Result<ExecOutput, OrchestratorError> {
        let argv: Vec<String> = argv.iter().map(|a| a.as_ref().to_string()).collect();
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager.exec(name, &argv).await.map(ExecOutput::from),
            Backend::Leased { .. } => {
                match self.ask_for(Request::Exec(name.to_string(), argv)).await? {
                    Some(output) => Ok(output),
                    None => Err(OrchestratorError::SharedCopy {
                        action: "run a command in",
                        service: name.to_string(),
                        message: "the answer carried no output".to_string(),
                    }),
                }
            }
        }
    }

    /// Has the supervisor of a leased copy carry out `request`, and takes the copy as it
    /// describes it afterwards.
    async fn ask(&self, request: Request) -> Result<(), OrchestratorError> {
        self.ask_for(request).await.map(|_| ())
    }

    /// Like [`Topology::ask`], with the output of a command the request ran.
    async fn ask_for(&self, request: Request) -> Result<Option<ExecOutput>, OrchestratorError> {
        let Backend::Leased {
            services,
            lease,
            asking,
            ..
        } = &self.inner.backend
        else {
            unreachable!("only a leased copy asks its supervisor");
        };
        let (verb, service) = request.parts();
        let service = service.to_string();
        let failed = |message: String| OrchestratorError::SharedCopy {
            action: verb,
            service: service.clone(),
            message,
        };
        self.check(&service)
            .map_err(|_| OrchestratorError::UnknownService(service.clone()))?;
        let _one = asking.lock().await;
        let stream = lease
            .try_clone()
            .map_err(|e| failed(format!("use the lease: {e}")))?;
        let answer = blocking::unblock(move || exchange(stream, &request))
            .await
            .map_err(|e| failed(format!("ask the supervisor: {e}")))?;
        match answer {
            Welcome::Ok(copy) => {
                *lock(services) = copy.services;
                Ok(None)
            }
            Welcome::Output(output) => Ok(Some(output)),
            Welcome::Err(message) => Err(failed(message)),
        }
    }

    /// Takes a leased copy as its supervisor describes it now: a test that keeps the lease of
    /// an earlier test sees what that test, or another process, started, stopped or restarted
    /// since. A copy of this process's own is always current.
    pub(crate) fn refresh_lease(&self) -> Result<(), String> {
        let Backend::Leased {
            services,
            lease,
            asking,
            ..
        } = &self.inner.backend
        else {
            return Ok(());
        };
        let _one = asking.lock_blocking();
        let stream = lease
            .try_clone()
            .map_err(|e| format!("use the lease: {e}"))?;
        match exchange(stream, &Request::Describe) {
            Ok(Welcome::Ok(copy)) => {
                *lock(services) = copy.services;
                Ok(())
            }
            Ok(Welcome::Err(message)) => Err(message),
            Ok(Welcome::Output(_)) => Err("the supervisor answered with a command's output".into()),
            Err(e) => Err(format!("ask the supervisor: {e}")),
        }
    }

    /// Whether `other` is this very copy (a clone of it), not another lease or start.
    #[cfg(test)]
    pub(crate) fn is_same_copy(&self, other: &Topology) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
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
    /// For a shared copy whose manager runs in another process: under nextest the supervisor,
    /// under `cargo test` the runner (the body runs in a worker unless `--nocapture`). An
    /// `isolated` test always has its own manager.
    pub fn manager(&self) -> &ServiceManager {
        match &self.inner.backend {
            Backend::Local { manager, .. } => manager,
            Backend::Leased { .. } => panic!(
                "the copy of {} is shared between test processes and its manager runs in the \
                 process that owns it (nextest's supervisor, or the runner under cargo test); \
                 make the test `isolated` to get a manager of its own",
                self.inner.file.display()
            ),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends one request over a lease and reads the supervisor's one-line answer.
fn exchange(mut stream: UnixStream, request: &Request) -> std::io::Result<Welcome> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    if BufReader::new(&stream).read_line(&mut answer)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the supervisor closed the lease",
        ));
    }
    Ok(serde_json::from_str(&answer)?)
}

/// The last `DEFAULT_LOG_TAIL` lines of a service's log file (and its rotated files).
pub(crate) fn log_file_tail(service: &str, file: &Path) -> Vec<LogLine> {
    let bytes = crate::orchestrator::read_log_tail(file, DEFAULT_LOG_TAIL).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
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
                ports: vec![(9001, "127.0.0.1:4001".parse().unwrap())],
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
        assert_eq!(cache.addr_of(4000), Some("127.0.0.1:4000".parse().unwrap()));
        assert_eq!(cache.addr_of(9001), Some("127.0.0.1:4001".parse().unwrap()));
        assert_eq!(cache.addr_of(9002), None);
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

    /// Plays the supervisor: answers one request with `answer`, returns the request.
    fn supervisor_answers(supervisor: &UnixStream, answer: &Welcome) -> Request {
        let mut line = String::new();
        BufReader::new(supervisor).read_line(&mut line).unwrap();
        let mut reply = serde_json::to_string(answer).unwrap();
        reply.push('\n');
        (&*supervisor).write_all(reply.as_bytes()).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn a_leased_copy_asks_its_supervisor_and_ends_its_lease_when_dropped() {
        let (topology, mut supervisor) = leased(None);
        let moved = Copy {
            file: PathBuf::from("/virtual/kv.yaml"),
            state_dir: None,
            services: vec![RemoteService {
                name: "cache".to_string(),
                addr: Some("127.0.0.1:4001".parse().unwrap()),
                env: Vec::new(),
                log_file: None,
                ports: Vec::new(),
            }],
        };
        let asked = std::thread::scope(|scope| {
            let supervisor = &supervisor;
            let answered = scope.spawn(move || supervisor_answers(supervisor, &Welcome::Ok(moved)));
            async_io::block_on(topology.start("cache")).unwrap();
            answered.join().unwrap()
        });
        assert!(
            matches!(asked, Request::Start(ref name) if name == "cache"),
            "{asked:?}"
        );
        assert_eq!(
            topology.addr("cache").unwrap(),
            "127.0.0.1:4001".parse().unwrap()
        );

        let error = std::thread::scope(|scope| {
            let supervisor = &supervisor;
            scope.spawn(move || {
                supervisor_answers(supervisor, &Welcome::Err("it would not stop".to_string()))
            });
            async_io::block_on(topology.restart("cache"))
                .unwrap_err()
                .to_string()
        });
        assert_eq!(
            error,
            "restart service cache in the shared copy: it would not stop"
        );
        // An unknown service is refused here, without asking.
        assert!(matches!(
            async_io::block_on(topology.stop("db")),
            Err(OrchestratorError::UnknownService(_))
        ));

        let clone = topology.clone();
        drop(topology);
        drop(clone);
        // The supervisor's side sees the lease end, and no request after the two above.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut supervisor, &mut rest).unwrap();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
}
