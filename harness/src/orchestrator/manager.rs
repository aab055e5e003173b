//! `ServiceManager`: starts a topology in dependency order, keeps the registry current, and
//! stops what it started.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_lock::OnceCell;
use futures_lite::future;

use crate::api::{ActionFailure, ServiceCommand, ServiceController};
use crate::exec::ExitStatus;
use crate::join::{join_all, try_join_all};
use crate::registry::{
    Endpoint, ExecutionInfo, ExecutionKind, HealthResult, Location, Registry, ServiceEntry,
    ServiceState,
};
use crate::topology::{
    DIR, NetworkMode, Probe, PullPolicy, ServiceConfig, ServiceTarget, TopologyConfig,
};

use super::address::{MeshSite, Placement, ServiceAddr};
use super::docker::DockerExecutor;
use super::env::{Dependency, injected_env, placeholder_values, write_run_env_file};
use super::error::{OrchestratorError, StartFailure};
use super::executor::{RunningService, ServiceExecutor, StartSpec, StepReport, StopRequest};

/// The environment variable that sets the run's pull policy (`missing`, `always`, `never`).
pub const PULL_ENV: &str = "HARNESS_PULL";
use super::engine::engine;
use super::health::{ProbeContext, default_check, wait_healthy};
use super::logs::{
    DEFAULT_LOG_TAIL, FAILURE_TAIL, FOLLOWER_CAPACITY, LogBuffer, LogLine, effective_log_limits,
};
use super::ports::{assign_host_port, assign_port};
use super::process::ProcessExecutor;
use super::remote_lan::RemoteLanExecutor;
use super::temp_dir;
use super::waiting::WaitReport;

/// The environment variable naming the base directory relative paths in a topology are
/// resolved against, for `harness up` and for tests alike; see [`default_base_dir`].
pub const BASE_DIR_ENV: &str = "HARNESS_BASE_DIR";

/// The base directory a new [`ServiceManager`] resolves relative paths against:
/// `HARNESS_BASE_DIR` when it is set and not empty, else the current directory (under
/// `cargo test` and `cargo nextest run`, the directory of the package whose test runs).
pub fn default_base_dir() -> PathBuf {
    match std::env::var_os(BASE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

/// How long a service may take to stop after SIGTERM before it is killed.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// The name of every service's endpoint in the registry.
pub const MAIN_ENDPOINT: &str = "main";

/// Something that happened while starting or stopping a topology, for progress displays.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The service runs and its health check is being tried.
    Waiting {
        /// The service.
        service: String,
        /// Its process id, if it has one.
        pid: Option<u32>,
        /// The services it depends on (all healthy by now).
        dependencies: Vec<String>,
    },
    /// The service is still not healthy: its check has failed so far. Reported once the
    /// service has been waited for [`WAIT_REPORT_AFTER`](super::WAIT_REPORT_AFTER), then at
    /// most every [`WAIT_REPORT_EVERY`](super::WAIT_REPORT_EVERY), until it is healthy or
    /// fails; a service that is healthy sooner is never reported so.
    StillWaiting(WaitReport),
    /// The service is healthy.
    Healthy {
        /// The service.
        service: String,
        /// Its address, if it has a port.
        addr: Option<SocketAddr>,
        /// Time from spawning it to its first successful health check.
        after: Duration,
    },
    /// A job (`job: true`) ran to completion: it exited with status 0.
    Completed {
        /// The job.
        service: String,
        /// Time from spawning it to its exit.
        after: Duration,
    },
    /// The service failed to start; the error follows.
    Failed {
        /// The service.
        service: String,
    },
    /// The topology's `lab:` is being built, before any service starts.
    Lab {
        /// How many hosts it has.
        hosts: usize,
    },
    /// The service ended on its own after it was started; it is marked failed.
    Exited {
        /// The service.
        service: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// The service is being stopped.
    Stopping {
        /// The service.
        service: String,
    },
    /// The service has stopped.
    Stopped {
        /// The service.
        service: String,
    },
    /// A container's image is being pulled: one line of `docker pull`'s progress.
    Pulling {
        /// The service.
        service: String,
        /// The image.
        image: String,
        /// What `docker pull` said (`abc123: Downloading`, `Status: Downloaded newer image`).
        status: String,
    },
}

type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Where a service stands, as [`ServiceManager::status`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStatus {
    /// The service.
    pub name: String,
    /// Its state in the registry.
    pub state: ServiceState,
    /// Its process id while it runs: on its host (not this machine) for a `remote_lan`
    /// service.
    pub pid: Option<u32>,
    /// Its address, once its port is known.
    pub addr: Option<SocketAddr>,
    /// Its last health check's outcome.
    pub health: Option<HealthResult>,
    /// How long it has been running.
    pub uptime: Option<Duration>,
}

/// Starts, stops and restarts the services of one topology, with one [`ServiceExecutor`] per
/// target kind.
///
/// - [`ServiceManager::start_all`] starts every service as soon as all of its dependencies are
///   healthy, independent services in parallel (plain futures joined on the caller's task; no
///   runtime is needed). If one fails, the services still starting are abandoned (killed),
///   everything running is stopped again, in reverse dependency order, and the error names the
///   service, says why and shows its last lines of output.
/// - Each service gets its port (`port: N`, or a free one for `auto`), `PORT` in its
///   environment, `${port}`, `${host}`, `${addr}` and `${<DEP>_ADDR}` in its args and env, and
///   `<DEP>_ADDR` for each dependency that has a port, with the address reachable from where
///   it runs (see [Ports and addresses](super#ports-and-addresses)). An env file with the same
///   variables, `<service>.env`, and its output, `<service>.log`, are kept in a state directory
///   for the run (`harness-run-<pid>-<start time>-XXXXXX` in the temporary directory), removed
///   by [`ServiceManager::stop_all`]; the next run removes those whose process was killed.
/// - A service counts as started when its health check passes; one without a health check is
///   checked with a `tcp` connect if it has a port, and is otherwise started once it runs.
/// - The registry is kept current: an entry per service (location local, or the LAN and its
///   host for `remote_lan`; its execution kind, pid and container id), its endpoint `main` at
///   `127.0.0.1:HOST_PORT` (for a container with its network address as `host_addr`; a
///   `remote_lan` service at `HOST:PORT`, also as `lan_addr`), its states and every health
///   result.
/// - Stopping sends SIGTERM to the service's process group (`docker stop` for a container),
///   waits the grace period ([`DEFAULT_STOP_GRACE`]), then sends SIGKILL.
///
/// Relative binary paths and working directories are resolved against the base directory:
/// [`default_base_dir`] when the manager is made (`HARNESS_BASE_DIR`, else the current
/// directory) unless [`ServiceManager::with_base_dir`] sets another. A topology's
/// `./target/debug/api-server` means the cargo project the command runs in.
///
/// The manager is a cheap handle: clones share the running services. When the last clone is
/// dropped without [`ServiceManager::stop_all`], the services are killed (their process groups
/// get SIGKILL), the run's containers, Docker network and built images are removed, and the
/// state directory is removed.
#[derive(Clone)]
pub struct ServiceManager {
    /// First, so that it is dropped first: the services go before what their executors made
    /// for the run (a Docker network cannot be removed while containers are on it).
    run: Arc<Mutex<Run>>,
    topology: Arc<TopologyConfig>,
    registry: Registry,
    base_dir: PathBuf,
    grace: Duration,
    log_lines: usize,
    executors: HashMap<&'static str, Arc<dyn ServiceExecutor>>,
    progress: Option<ProgressFn>,
    /// `${cargo_bin:NAME}` values, by placeholder name (`cargo_bin:NAME`).
    cargo_bins: Arc<HashMap<String, String>>,
    /// Where the run's state directory goes when [`ServiceManager::with_state_dir`] names one;
    /// a fresh temporary directory otherwise.
    fixed_state_dir: Option<PathBuf>,
    /// The topology's `lab:`, while it runs; dropped last, after the services.
    lab: Arc<async_lock::Mutex<Option<RunningLab>>>,
    /// The WireGuard mesh of `wireguard` services, shared with their executor.
    mesh: Arc<super::wireguard::MeshRun>,
    /// One lock per service, held for the whole of a start, stop or restart of it, so that
    /// commands on one service (three restarts sent at once over the API) run one after
    /// another instead of interleaving their state changes. Commands on different services
    /// still run in parallel.
    turns: Arc<HashMap<String, async_lock::Mutex<()>>>,
    /// Whether a container depends on another container ([`StartSpec::containers_meet`]).
    containers_meet: bool,
    /// The run's pull policy for containers whose service names none: [`with_pull`], else
    /// `HARNESS_PULL`, else `missing`; an `HARNESS_PULL` that names no policy fails their
    /// start.
    ///
    /// [`with_pull`]: ServiceManager::with_pull
    pull: Result<PullPolicy, String>,
}

/// A lab built for the run, and how its hosts are reached.
struct RunningLab {
    lab: crate::lab::Lab,
    /// Each host's address on its first network, and the lab's root key.
    hosts: HashMap<String, (std::net::IpAddr, PathBuf)>,
}

/// What the manager knows about the current run.
struct Run {
    state_dir: Option<StateDir>,
    services: HashMap<String, Slot>,
}

struct Slot {
    log: LogBuffer,
    /// The port, assigned at the first start and kept across restarts, since dependents were
    /// told it.
    port: Option<Option<u16>>,
    /// The port of 127.0.0.1 that reaches `port` (a container's published port), assigned and
    /// kept with it.
    host_port: Option<u16>,
    running: Option<Box<dyn RunningService>>,
    /// Where it runs, found at the first start (a LAN host resolved) and kept with its port.
    placement: Option<Placement>,
    healthy_since: Option<Instant>,
    /// Counts starts, so that the exit of an old run is not taken for the current one's.
    generation: u64,
    /// A job that exited with status 0 in this run: done, as a dependency.
    completed: bool,
}

impl ServiceManager {
    /// A manager for `topology` that records its services in `registry`. Nothing starts until
    /// [`ServiceManager::start_all`] or [`ServiceManager::start`].
    pub fn new(topology: TopologyConfig, registry: Registry) -> Self {
        let mut executors: HashMap<&'static str, Arc<dyn ServiceExecutor>> = HashMap::new();
        executors.insert("process", Arc::new(ProcessExecutor));
        // One executor for both: a compose service joins the run's network and its labels.
        let docker = Arc::new(DockerExecutor::new());
        executors.insert("docker", docker.clone());
        executors.insert("compose", docker);
        executors.insert("remote_lan", Arc::new(RemoteLanExecutor::new()));
        let mesh = Arc::new(super::wireguard::MeshRun::new(
            topology.network.wireguard_subnet.to_string(),
        ));
        executors.insert(
            "wireguard",
            Arc::new(super::wireguard::WireguardExecutor::new(
                mesh.clone(),
                registry.clone(),
            )),
        );
        let turns = topology
            .services
            .keys()
            .map(|name| (name.clone(), async_lock::Mutex::new(())))
            .collect();
        let services = topology
            .services
            .keys()
            .map(|name| {
                let slot = Slot {
                    log: LogBuffer::new(name, DEFAULT_LOG_TAIL),
                    port: None,
                    host_port: None,
                    running: None,
                    placement: None,
                    healthy_since: None,
                    generation: 0,
                    completed: false,
                };
                (name.clone(), slot)
            })
            .collect();
        let is_container = |name: &String| {
            topology.service(name).is_some_and(|s| match &s.target {
                ServiceTarget::Docker(t) => t.network_mode != NetworkMode::Host,
                ServiceTarget::Compose(_) => true,
                _ => false,
            })
        };
        let containers_meet = topology
            .services
            .iter()
            .any(|(name, s)| is_container(name) && s.dependencies.iter().any(is_container));
        let pull = match std::env::var(PULL_ENV) {
            Err(_) => Ok(PullPolicy::Missing),
            Ok(name) => PullPolicy::from_name(&name).ok_or_else(|| {
                format!("{PULL_ENV}={name:?} names no pull policy: expected `missing`, `always` or `never`")
            }),
        };
        Self {
            pull,
            containers_meet,
            topology: Arc::new(topology),
            registry,
            // Absolute, so that messages name full paths.
            base_dir: default_base_dir(),
            grace: DEFAULT_STOP_GRACE,
            log_lines: DEFAULT_LOG_TAIL,
            executors,
            progress: None,
            cargo_bins: Arc::default(),
            fixed_state_dir: None,
            lab: Arc::new(async_lock::Mutex::new(None)),
            mesh,
            turns: Arc::new(turns),
            run: Arc::new(Mutex::new(Run {
                state_dir: None,
                services,
            })),
        }
    }

    /// Pulls the images of containers whose service names no `pull:` as `policy` says
    /// (`harness up --pull`); without it, as `HARNESS_PULL` says, else `missing`.
    pub fn with_pull(mut self, policy: PullPolicy) -> Self {
        self.pull = Ok(policy);
        self
    }

    /// Resolves relative binaries and working directories against `dir` instead of the
    /// current directory.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// The paths `${cargo_bin:NAME}` stands for, by binary name (a test passes cargo's
    /// `CARGO_BIN_EXE_NAME` values). A placeholder naming another binary fails that service's
    /// start with an error that says so.
    pub fn with_cargo_bins<N: Into<String>, P: Into<String>>(
        mut self,
        bins: impl IntoIterator<Item = (N, P)>,
    ) -> Self {
        let bins = bins.into_iter().map(|(name, path)| {
            let placeholder = format!("{}{}", crate::topology::CARGO_BIN, name.into());
            (placeholder, path.into())
        });
        self.cargo_bins = Arc::new(bins.collect());
        self
    }

    /// How long a stopping service may take after SIGTERM before it is killed.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Keeps the run's env files and logs in `dir` (created at the first start, removed by
    /// [`ServiceManager::stop_all`]) instead of a fresh `harness-run-...` in the temporary
    /// directory. For a run that other programs look at, such as `harness up -d`.
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.fixed_state_dir = Some(dir.into());
        self
    }

    /// Calls `report` for each step of starting and stopping, as it happens.
    pub fn with_progress(mut self, report: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(report));
        self
    }

    /// Uses `executor` for targets of `kind` (`process`, `docker`, ...); the one for
    /// `docker` also starts `compose` targets, whose containers share the run's network.
    pub fn with_executor(
        mut self,
        kind: &'static str,
        executor: impl ServiceExecutor + 'static,
    ) -> Self {
        let executor: Arc<dyn ServiceExecutor> = Arc::new(executor);
        if kind == "docker" {
            self.executors.insert("compose", executor.clone());
        }
        self.executors.insert(kind, executor);
        self
    }

    /// The topology.
    pub fn topology(&self) -> &TopologyConfig {
        &self.topology
    }

    /// The registry the manager keeps current.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The run's state directory (env files and logs), while services run.
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.lock()
            .state_dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
    }

    fn lock(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, progress: Progress) {
        if let Some(report) = &self.progress {
            report(&progress);
        }
    }

    /// Waits until no other command runs on service `name` (which exists), and keeps others
    /// waiting until the guard is dropped.
    async fn turn(&self, name: &str) -> async_lock::MutexGuard<'_, ()> {
        self.turns[name].lock().await
    }

    fn config(&self, name: &str) -> Result<&ServiceConfig, OrchestratorError> {
        self.topology
            .service(name)
            .ok_or_else(|| OrchestratorError::UnknownService(name.to_string()))
    }

    /// Builds the topology's `lab:` unless there is none or it runs.
    async fn ensure_lab(&self) -> Result<(), OrchestratorError> {
        let Some(config) = &self.topology.lab else {
            return Ok(());
        };
        let mut running = self.lab.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let mut builder = crate::lab::Lab::builder();
        for (name, subnet) in &config.networks {
            builder = builder.network(name, subnet);
        }
        for (name, host) in &config.hosts {
            let networks: Vec<&str> = host.networks.iter().map(String::as_str).collect();
            builder = builder.host(name, &networks);
        }
        self.report(Progress::Lab {
            hosts: config.hosts.len(),
        });
        let lab = builder
            .build()
            .await
            .map_err(|source| OrchestratorError::Lab {
                file: self.topology.files.first().cloned().unwrap_or_default(),
                source: Box::new(source),
            })?;
        let hosts = config
            .hosts
            .iter()
            .map(|(name, host)| {
                let addr = lab.host(name).addr(&host.networks[0]);
                (name.clone(), (addr, lab.key()))
            })
            .collect();
        *running = Some(RunningLab { lab, hosts });
        Ok(())
    }

    /// `config`, with a `remote_lan` host that names a host of the lab replaced by that host's
    /// address, root and the lab's key.
    fn on_lab<'c>(
        &self,
        config: &'c ServiceConfig,
        lab: &HashMap<String, (std::net::IpAddr, PathBuf)>,
    ) -> std::borrow::Cow<'c, ServiceConfig> {
        let ServiceTarget::RemoteLan(target) = &config.target else {
            return std::borrow::Cow::Borrowed(config);
        };
        let Some((addr, key)) = lab.get(&target.host) else {
            return std::borrow::Cow::Borrowed(config);
        };
        let mut resolved = config.clone();
        if let ServiceTarget::RemoteLan(target) = &mut resolved.target {
            target.host = addr.to_string();
            target.user = "root".to_string();
            target.port = None;
            target.key = Some(key.display().to_string());
        }
        std::borrow::Cow::Owned(resolved)
    }

    /// Where a service with `config`'s target runs: for a `wireguard` target, its host joins
    /// the run's mesh (started with the first one) and the service sits at its mesh address.
    async fn place(
        &self,
        config: &ServiceConfig,
        state_dir: &std::path::Path,
    ) -> std::io::Result<Placement> {
        let ServiceTarget::Wireguard(target) = &config.target else {
            return Placement::of(&config.target);
        };
        let lab = self.lab.lock().await;
        let host = self
            .mesh
            .join(
                &target.host,
                &target.user,
                lab.as_ref().map(|running| &running.lab),
                state_dir,
            )
            .await
            .map_err(|e| std::io::Error::other(format!("join the WireGuard mesh: {e}")))?;
        Ok(Placement::Mesh(MeshSite {
            ip: host.addr.into(),
            this_machine: host.this_machine.into(),
        }))
    }

    /// The hosts of the running lab (empty without one).
    async fn lab_hosts(&self) -> HashMap<String, (std::net::IpAddr, PathBuf)> {
        match &*self.lab.lock().await {
            Some(running) => running.hosts.clone(),
            None => HashMap::new(),
        }
    }

    /// Starts every service that is not running, in dependency order, and returns once all are
    /// healthy. On failure everything running is stopped and the state directory removed.
    pub async fn start_all(&self) -> Result<(), OrchestratorError> {
        let graph = self.topology.graph()?;
        // Every service is registered first, so that the registry shows the whole topology
        // (and what never started stays pending) while it comes up.
        for layer in graph.start_order() {
            for name in layer.iter() {
                self.register(self.config(name)?).await?;
            }
        }
        // Each service starts as soon as all of its own dependencies are healthy, so a slow
        // service delays only what needs it. The first failure ends the whole start: services
        // still starting are abandoned (dropping their futures kills their process groups).
        let names: Vec<&str> = graph.start_order().concat();
        let healthy: HashMap<&str, OnceCell<()>> =
            names.iter().map(|&n| (n, OnceCell::new())).collect();
        let (healthy, graph) = (&healthy, &graph);
        let started = try_join_all(names.iter().map(|&name| async move {
            for dependency in graph.dependencies(name) {
                healthy[dependency].wait().await;
            }
            let turn = self.turn(name).await;
            self.start_one(name).await?;
            drop(turn);
            let _ = healthy[name].set(()).await;
            Ok(())
        }))
        .await;
        let Err(error) = started else {
            return Ok(());
        };
        for &name in &names {
            if let Ok(entry) = self.registry.get(name).await
                && entry.state == ServiceState::Starting
            {
                let _ = self.registry.set_state(name, ServiceState::Stopping).await;
                let _ = self.registry.set_state(name, ServiceState::Stopped).await;
            }
        }
        // The start already failed; a failure to stop as well is logged, not returned, so that
        // the caller sees why the start failed.
        if let Err(stop) = self.stop_all().await {
            tracing::warn!("after a failed start: {stop}");
        }
        Err(error)
    }

    /// Stops every running service, dependents before their dependencies (the services of a
    /// layer in parallel), then removes what executors made for the run (the Docker network,
    /// built images) and the state directory.
    pub async fn stop_all(&self) -> Result<(), OrchestratorError> {
        let graph = self.topology.graph()?;
        let mut first_error = None;
        for layer in graph.stop_order() {
            let stops = layer.iter().map(|name| async move {
                let _turn = self.turn(name).await;
                self.stop_one(name, true).await
            });
            for result in join_all(stops).await {
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            }
        }
        // What executors made for the run (a Docker network, images) goes once the services
        // are gone.
        let mut kinds: Vec<_> = self.executors.iter().collect();
        kinds.sort_by_key(|(kind, _)| **kind);
        for (kind, executor) in kinds {
            if let Err(source) = executor.clean_up().await {
                first_error.get_or_insert(OrchestratorError::CleanUp { kind, source });
            }
        }
        let dir = {
            let mut run = self.lock();
            for slot in run.services.values() {
                slot.log.close_file();
            }
            run.state_dir.take()
        };
        if let Some(dir) = dir {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!("remove state directory {}: {e}", path.display());
            }
        }
        let lab = self.lab.lock().await.take();
        if let Some(running) = lab
            && let Err(source) = running.lab.shutdown().await
        {
            first_error.get_or_insert(OrchestratorError::Lab {
                file: self.topology.files.first().cloned().unwrap_or_default(),
                source: Box::new(source),
            });
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts one service, whose dependencies must be running; returns once it is healthy.
    /// Starting a running service does nothing. Waits for a start, stop or restart of the
    /// same service already under way to end first.
    pub async fn start(&self, name: &str) -> Result<(), OrchestratorError> {
        self.config(name)?;
        let _turn = self.turn(name).await;
        self.start_checked(name).await
    }

    /// Stops one service. Its dependents keep running (and may notice). Stopping a service
    /// that does not run does nothing. Waits for a start, stop or restart of the same service
    /// already under way to end first.
    pub async fn stop(&self, name: &str) -> Result<(), OrchestratorError> {
        self.config(name)?;
        let _turn = self.turn(name).await;
        self.stop_one(name, false).await
    }

    /// Stops and starts one service again, on the same port, and returns once it is healthy.
    /// No other command on the service runs between the stop and the start: one already
    /// under way ends first, and those sent meanwhile wait until the restart is done.
    pub async fn restart(&self, name: &str) -> Result<(), OrchestratorError> {
        self.config(name)?;
        let _turn = self.turn(name).await;
        self.stop_one(name, false).await?;
        self.start_checked(name).await?;
        drop(_turn);
        // The jobs that ask to run again when this service restarts (`rerun_on`).
        let jobs: Vec<String> = self
            .topology
            .services
            .values()
            .filter(|s| s.job && s.rerun_on.iter().any(|r| r == name))
            .map(|s| s.name.clone())
            .collect();
        for job in jobs {
            let _turn = self.turn(&job).await;
            self.start_checked(&job).await?;
        }
        Ok(())
    }

    /// Starts one service if its dependencies are running; the caller has its turn.
    async fn start_checked(&self, name: &str) -> Result<(), OrchestratorError> {
        let config = self.config(name)?;
        for dependency in &config.dependencies {
            let running = self
                .lock()
                .services
                .get(dependency)
                .is_some_and(|s| s.running.is_some() || s.completed);
            if !running {
                return Err(OrchestratorError::DependencyNotRunning {
                    service: name.to_string(),
                    dependency: dependency.clone(),
                });
            }
        }
        self.start_one(name).await
    }

    /// Where one service stands.
    pub async fn status(&self, name: &str) -> Result<ServiceStatus, OrchestratorError> {
        self.config(name)?;
        let entry = self.registry.get(name).await.ok();
        let (pid, addr, uptime) = {
            let run = self.lock();
            let slot = &run.services[name];
            (
                slot.running.as_ref().and_then(|r| r.pid()),
                self.service_addr(&run, name).map(|a| a.local()),
                slot.healthy_since.map(|t| t.elapsed()),
            )
        };
        Ok(ServiceStatus {
            name: name.to_string(),
            state: entry
                .as_ref()
                .map_or(ServiceState::Pending, |e| e.state.clone()),
            pid,
            addr,
            health: entry.and_then(|e| e.health),
            uptime,
        })
    }

    /// Runs `argv` where the service `name` runs, to its end, and returns what it wrote and how
    /// it ended (see [`RunningService::exec`](super::RunningService::exec)): for checking a
    /// service from inside, or preparing its data (`psql -c`, `redis-cli`).
    pub async fn exec(
        &self,
        name: &str,
        argv: &[String],
    ) -> Result<crate::exec::Output, OrchestratorError> {
        self.config(name)?;
        let running = {
            let run = self.lock();
            run.services[name].running.as_ref().map(|r| r.exec(argv))
        };
        let Some(running) = running else {
            return Err(OrchestratorError::NotRunning(name.to_string()));
        };
        running.await.map_err(|source| OrchestratorError::Exec {
            service: name.to_string(),
            source,
        })
    }

    /// Where every service stands, in the topology's order.
    pub async fn status_all(&self) -> Vec<ServiceStatus> {
        let mut out = Vec::new();
        for name in self.topology.services.keys() {
            out.extend(self.status(name).await.ok());
        }
        out
    }

    /// The last lines (up to 1000) of a service's output, oldest first.
    pub fn logs(&self, name: &str) -> Result<Vec<LogLine>, OrchestratorError> {
        self.config(name)?;
        Ok(self.lock().services[name].log.tail(self.log_lines))
    }

    /// Every line a service writes from now on, until the receiver is dropped. Up to
    /// [`FOLLOWER_CAPACITY`] lines wait for the receiver; a receiver that falls further behind
    /// misses lines and gets a line saying how many (the service's log file has them all).
    pub fn follow(
        &self,
        name: &str,
    ) -> Result<async_channel::Receiver<LogLine>, OrchestratorError> {
        self.config(name)?;
        let (tx, rx) = async_channel::bounded(FOLLOWER_CAPACITY);
        self.lock().services[name].log.follow(tx);
        Ok(rx)
    }

    /// Every line any service writes from now on, each carrying its service's name; bounded as
    /// [`ServiceManager::follow`] is.
    pub fn follow_all(&self) -> async_channel::Receiver<LogLine> {
        let (tx, rx) = async_channel::bounded(FOLLOWER_CAPACITY);
        for slot in self.lock().services.values() {
            slot.log.follow(tx.clone());
        }
        rx
    }

    /// Creates the state directory if need be and registers the service if it is not yet.
    async fn prepare(&self, config: &ServiceConfig) -> Result<PathBuf, OrchestratorError> {
        let dir = {
            let mut run = self.lock();
            if run.state_dir.is_none() {
                let dir = match &self.fixed_state_dir {
                    Some(path) => std::fs::create_dir_all(path)
                        .map(|()| StateDir::Given(GivenDir(path.clone()))),
                    None => temp_dir::create().map(StateDir::Temp),
                };
                run.state_dir = Some(dir.map_err(OrchestratorError::StateDir)?);
            }
            run.state_dir
                .as_ref()
                .expect("just created")
                .path()
                .to_path_buf()
        };
        self.register(config).await?;
        Ok(dir)
    }

    /// Registers a service unless it already is; its dependencies must be registered.
    async fn register(&self, config: &ServiceConfig) -> Result<(), OrchestratorError> {
        if !self.registry.contains(&config.name).await {
            let kind = match &config.target {
                ServiceTarget::Process(_) => ExecutionKind::Process,
                ServiceTarget::Docker(_) => ExecutionKind::Docker,
                ServiceTarget::RemoteLan(_) => ExecutionKind::RemoteLan,
                ServiceTarget::Wireguard(_) => ExecutionKind::Wireguard,
                ServiceTarget::Compose(_) => ExecutionKind::Compose,
            };
            let (location, host) = match &config.target {
                ServiceTarget::RemoteLan(t) => (
                    Location::Lan {
                        host: t.host.clone(),
                    },
                    Some(t.host.clone()),
                ),
                _ => (Location::Local, None),
            };
            let mut execution = ExecutionInfo::new(kind);
            execution.host = host;
            let mut entry = ServiceEntry::new(&config.name, location, execution);
            for dependency in &config.dependencies {
                entry = entry.with_dependency(dependency);
            }
            if let Some(file) = self.topology.files.first() {
                entry = entry.with_metadata("topology", file.display().to_string());
            }
            self.registry.register(entry).await?;
        }
        Ok(())
    }

    /// Starts one service whose dependencies run, and waits until it is healthy.
    async fn start_one(&self, name: &str) -> Result<(), OrchestratorError> {
        self.ensure_lab().await?;
        let lab = self.lab_hosts().await;
        let config = &*self.on_lab(self.config(name)?, &lab);
        let state_dir = self.prepare(config).await?;
        let known = self.lock().services[name].placement.clone();
        let placement = match known {
            Some(placement) => Ok(placement),
            // Resolving a LAN host's name, or joining a host to the mesh, may take a while: not
            // under the lock.
            None => self.place(config, &state_dir).await,
        };
        let (log, ports, dependencies) = {
            let mut run = self.lock();
            let dependencies: Vec<Dependency> = config
                .dependencies
                .iter()
                .map(|d| (d.clone(), self.service_addr(&run, d)))
                .collect();
            let slot = run
                .services
                .get_mut(name)
                .expect("every service has a slot");
            if slot.running.is_some() {
                return Ok(());
            }
            slot.completed = false;
            if let Ok(placement) = &placement {
                slot.placement = Some(placement.clone());
            }
            let ports = match slot.port {
                Some(port) => Ok((port, slot.host_port)),
                None => {
                    let mut taken: HashSet<u16> = HashSet::new();
                    for s in run.services.values() {
                        taken.extend(s.port.flatten());
                        taken.extend(s.host_port);
                    }
                    let ports = assign_port(config.port, &taken).and_then(|port| {
                        let Ok(placement) = &placement else {
                            return Ok((port, None));
                        };
                        let host_port =
                            assign_host_port(placement.clone(), config.port, port, &taken)?;
                        Ok((port, host_port))
                    });
                    let slot = run
                        .services
                        .get_mut(name)
                        .expect("every service has a slot");
                    if let Ok((port, host_port)) = ports {
                        // Recorded at once, so that a service starting in parallel cannot be
                        // given the same free port.
                        slot.port = Some(port);
                        slot.host_port = host_port;
                    }
                    ports
                }
            };
            let slot = &run.services[name];
            (slot.log.clone(), ports, dependencies)
        };
        let fail = |reason: StartFailure| self.fail(config, &log, reason);
        self.registry
            .set_state(name, ServiceState::Starting)
            .await?;
        let placement = match placement {
            Ok(placement) => placement,
            Err(e) => {
                let host = match &config.target {
                    ServiceTarget::RemoteLan(t) => t.host.clone(),
                    ServiceTarget::Wireguard(t) => t.host.clone(),
                    _ => "this machine".to_string(),
                };
                return Err(fail(StartFailure::Launch(
                    crate::exec::LaunchError::Unreachable {
                        host,
                        reason: format!("find its address and the route to it: {e}"),
                    },
                ))
                .await);
            }
        };
        let (port, host_port) = match ports {
            Ok(ports) => ports,
            Err(source) => {
                return Err(fail(StartFailure::Io {
                    doing: "find a free port",
                    source,
                })
                .await);
            }
        };
        let own_addr = port.map(|port| {
            ServiceAddr {
                name: name.to_string(),
                placement: placement.clone(),
                port,
                host_port: host_port.unwrap_or(port),
            }
            .local()
        });
        if let Some(addr) = own_addr {
            let mut endpoint = Endpoint::new(MAIN_ENDPOINT, addr);
            match placement {
                // This machine reaches a LAN service at its LAN address, as every host does.
                Placement::Lan(_) => endpoint = endpoint.with_lan_addr(addr),
                Placement::Mesh(_) => endpoint = endpoint.with_wireguard_addr(addr),
                _ => {}
            }
            self.registry.set_endpoint(name, endpoint).await?;
        }

        let mut values = placeholder_values(&placement, port, &dependencies);
        values.extend(
            self.cargo_bins
                .iter()
                .map(|(name, path)| (name.clone(), path.clone())),
        );
        let own_dir = super::files::service_dir(&state_dir, name);
        let is_process = matches!(config.target, ServiceTarget::Process(_));
        if is_process {
            values.insert(DIR.to_string(), own_dir.to_string_lossy().into_owned());
            if let Err(source) = std::fs::create_dir_all(&own_dir) {
                return Err(fail(StartFailure::Io {
                    doing: "create the service's directory",
                    source,
                })
                .await);
            }
        }
        let service = match config.substituted(&values) {
            Ok(service) => service,
            Err(e) => return Err(fail(StartFailure::Substitution(e)).await),
        };
        let files = match super::files::stage(&service, &self.base_dir, &own_dir) {
            Ok(files) => files,
            Err(e) => return Err(fail(e).await),
        };
        let pull = match &service.target {
            ServiceTarget::Docker(docker) => match (docker.pull, &self.pull) {
                (Some(own), _) => own,
                (None, Ok(run)) => *run,
                (None, Err(message)) => {
                    return Err(fail(StartFailure::Io {
                        doing: "choose when to pull the service's image",
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            message.clone(),
                        ),
                    })
                    .await);
                }
            },
            _ => PullPolicy::Missing,
        };
        let report = match self.progress.clone() {
            None => StepReport::default(),
            Some(progress) => {
                let service_name = name.to_string();
                let image = match &service.target {
                    ServiceTarget::Docker(docker) => docker.image.clone(),
                    _ => String::new(),
                };
                StepReport::new(move |line| {
                    progress(&Progress::Pulling {
                        service: service_name.clone(),
                        image: image.clone(),
                        status: line.to_string(),
                    })
                })
            }
        };
        let spec = StartSpec {
            pull,
            report,
            service,
            port,
            host_port,
            injected_env: injected_env(&placement, port, &dependencies),
            base_dir: self.base_dir.clone(),
            state_dir: state_dir.clone(),
            files,
            containers_meet: self.containers_meet,
        };
        let env = spec.env();
        if let Err(e) = write_run_env_file(&state_dir.join(format!("{name}.env")), &env) {
            return Err(fail(StartFailure::EnvFile(e)).await);
        }
        let (max_size, max_files) = match effective_log_limits(&config.logs) {
            Ok(limits) => limits,
            Err(message) => {
                return Err(fail(StartFailure::Io {
                    doing: "size the service's log file",
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
                })
                .await);
            }
        };
        let log_path = state_dir.join(format!("{name}.log"));
        if let Err(source) = log.write_to(&log_path, max_size, max_files) {
            return Err(fail(StartFailure::Io {
                doing: "open the service's log file",
                source,
            })
            .await);
        }
        let check = spec
            .service
            .health_check
            .clone()
            .or_else(|| default_check(host_port));
        log.watch(check.as_ref().and_then(|c| match &c.probe {
            Probe::Log(pattern) => Some(pattern.clone()),
            _ => None,
        }));

        let kind = config.target.kind();
        let Some(executor) = self.executors.get(kind).cloned() else {
            return Err(fail(StartFailure::Unsupported(kind)).await);
        };
        let spawned = Instant::now();
        let mut running = match executor.start(&spec, log.clone()).await {
            Ok(running) => running,
            Err(reason) => return Err(fail(reason).await),
        };
        let pid = running.pid();
        // A process of this machine is known by its start time too, so that who reads the
        // registry later can tell it from a process that reuses its pid.
        let start_time = pid
            .filter(|_| placement == Placement::Host)
            .and_then(crate::sys::start_time);
        let container_id = running.container_id();
        if pid.is_some() || container_id.is_some() {
            self.registry
                .update(name, |e| {
                    e.execution.pid = pid;
                    e.execution.start_time = start_time;
                    e.execution.container_id = container_id.clone();
                })
                .await?;
        }
        // A container's own address, reachable from here only where the engine shares this
        // network namespace.
        let direct = running
            .direct_ip()
            .zip(port)
            .map(SocketAddr::from)
            .filter(|_| engine().local);
        if let (Some(direct), Some(host_port)) = (direct, host_port) {
            let endpoint =
                Endpoint::new(MAIN_ENDPOINT, SocketAddr::from((engine().reach, host_port)))
                    .with_host_addr(direct);
            self.registry.set_endpoint(name, endpoint).await?;
        }
        for (port, host_port) in running.published_ports() {
            let endpoint = Endpoint::new(
                format!("port-{port}"),
                SocketAddr::from((engine().reach, host_port)),
            );
            self.registry.set_endpoint(name, endpoint).await?;
        }
        self.report(Progress::Waiting {
            service: name.to_string(),
            pid,
            dependencies: config.dependencies.clone(),
        });

        if config.job {
            return self.finish_job(config, running, spawned, &log).await;
        }
        let healthy = match &check {
            Some(check) => {
                let context = ProbeContext {
                    addr: own_addr,
                    direct,
                    log: &log,
                    env: &env,
                    base_dir: &self.base_dir,
                    container: container_id.as_deref(),
                    proxied: container_id.is_some() && !engine().local,
                    image_test: None,
                };
                let mut report = |waiting| self.report(Progress::StillWaiting(waiting));
                wait_healthy(
                    name,
                    check,
                    running.as_ref(),
                    &context,
                    &self.registry,
                    &mut report,
                )
                .await
                .map(drop)
            }
            None => match running.exit_status() {
                Some(status) => Err(StartFailure::Exited(status)),
                None => Ok(()),
            },
        };
        if let Err(reason) = healthy {
            let how = StopRequest::teardown_of(config, self.grace);
            if let Err(e) = running.stop(how).await {
                tracing::warn!("stop service {name} after its failed start: {e}");
            }
            // Lines written just before the exit may still be on their way to the log.
            async_io::Timer::after(Duration::from_millis(50)).await;
            return Err(fail(reason).await);
        }
        let after = spawned.elapsed();
        // Running before the exit watch is set up, so that an exit right now is seen as one.
        self.registry.set_state(name, ServiceState::Running).await?;
        let generation = {
            let mut run = self.lock();
            let slot = run
                .services
                .get_mut(name)
                .expect("every service has a slot");
            slot.generation += 1;
            slot.healthy_since = Some(Instant::now());
            slot.generation
        };
        running.on_exit(self.exit_watcher(name, generation));
        let exited = {
            let mut run = self.lock();
            let slot = run
                .services
                .get_mut(name)
                .expect("every service has a slot");
            if running.exit_status().is_some() {
                // Already gone: the exit watcher marks it failed (or has).
                Some(running)
            } else {
                slot.running = Some(running);
                None
            }
        };
        drop(exited);
        self.report(Progress::Healthy {
            service: name.to_string(),
            addr: own_addr,
            after,
        });
        Ok(())
    }

    /// Waits for the job `config` names to exit: done with status 0 (its dependents start
    /// then), failed with any other, its log tail in the error. What it left in its process
    /// group goes with its handle.
    async fn finish_job(
        &self,
        config: &ServiceConfig,
        running: Box<dyn RunningService>,
        spawned: Instant,
        log: &LogBuffer,
    ) -> Result<(), OrchestratorError> {
        let name = &config.name;
        let mut schedule = super::waiting::ReportSchedule::new();
        let mut tries = 0;
        let status = loop {
            if let Some(status) = running.exit_status() {
                break status;
            }
            tries += 1;
            let waited = spawned.elapsed();
            if schedule.due(waited) {
                self.report(Progress::StillWaiting(super::waiting::WaitReport {
                    service: name.clone(),
                    check: "the job to exit".to_string(),
                    tries,
                    waited,
                    last_error: "still running".to_string(),
                }));
            }
            async_io::Timer::after(super::health::pause(tries, Duration::from_millis(100))).await;
        };
        // Lines written just before the exit may still be on their way to the log.
        async_io::Timer::after(Duration::from_millis(20)).await;
        drop(running);
        if !status.success() {
            return Err(self
                .fail(config, log, StartFailure::JobFailed(status))
                .await);
        }
        self.registry
            .set_state(name, ServiceState::Completed)
            .await?;
        if let Some(slot) = self.lock().services.get_mut(name.as_str()) {
            slot.completed = true;
        }
        self.report(Progress::Completed {
            service: name.clone(),
            after: spawned.elapsed(),
        });
        Ok(())
    }

    /// Where a service can be reached from each side, once its port is known.
    fn service_addr(&self, run: &Run, name: &str) -> Option<ServiceAddr> {
        let slot = &run.services[name];
        let port = slot.port.flatten()?;
        Some(ServiceAddr {
            name: name.to_string(),
            placement: slot.placement.clone()?,
            port,
            host_port: slot.host_port.unwrap_or(port),
        })
    }

    /// What to do when run `generation` of a service ends: if it is still the current run (a
    /// stop on purpose starts a new generation first), mark the service failed. Holds
    /// the run weakly: the watcher lives inside the run's own slot.
    fn exit_watcher(&self, name: &str, generation: u64) -> Box<dyn FnOnce(ExitStatus) + Send> {
        let run: Weak<Mutex<Run>> = Arc::downgrade(&self.run);
        let registry = self.registry.clone();
        let progress = self.progress.clone();
        let name = name.to_string();
        Box::new(move |status| {
            let Some(run) = run.upgrade() else { return };
            let ended = {
                let mut run = run.lock().unwrap_or_else(|e| e.into_inner());
                let Some(slot) = run.services.get_mut(&name) else {
                    return;
                };
                if slot.generation != generation {
                    return;
                }
                slot.healthy_since = None;
                slot.running.take()
            };
            // Dropped outside the lock: dropping kills what the service left in its group.
            drop(ended);
            // Reported before the state changes, so whoever sees the service failed has been
            // told why.
            if let Some(report) = progress {
                report(&Progress::Exited {
                    service: name.clone(),
                    status,
                });
            }
            let reason = format!("{status} after it was started");
            // This runs on the service's output thread, which has nothing else to do now.
            let _ = future::block_on(registry.set_state(&name, ServiceState::failed(reason)));
        })
    }

    /// Marks a service failed and builds the error that reports it.
    async fn fail(
        &self,
        config: &ServiceConfig,
        log: &LogBuffer,
        reason: StartFailure,
    ) -> OrchestratorError {
        let _ = self
            .registry
            .set_state(&config.name, ServiceState::failed(reason.to_string()))
            .await;
        self.report(Progress::Failed {
            service: config.name.clone(),
        });
        OrchestratorError::StartFailed {
            service: config.name.clone(),
            location: config.location().clone(),
            reason: Box::new(reason),
            log_tail: log.tail(FAILURE_TAIL),
        }
    }

    /// Stops `name`; `teardown` when the whole run goes (see [`StopRequest::teardown`]).
    async fn stop_one(&self, name: &str, teardown: bool) -> Result<(), OrchestratorError> {
        let running = {
            let mut run = self.lock();
            let slot = run
                .services
                .get_mut(name)
                .expect("every service has a slot");
            slot.healthy_since = None;
            // A new generation: the exit that follows is this stop's, not a crash.
            slot.generation += 1;
            slot.running.take()
        };
        let Some(mut running) = running else {
            return Ok(());
        };
        self.report(Progress::Stopping {
            service: name.to_string(),
        });
        let _ = self.registry.set_state(name, ServiceState::Stopping).await;
        let config = self.config(name)?;
        let how = if teardown {
            StopRequest::teardown_of(config, self.grace)
        } else {
            StopRequest::of(config, self.grace)
        };
        let result = running.stop(how).await;
        // Dropping the handle kills what the service left in its process group.
        drop(running);
        let _ = self.registry.set_state(name, ServiceState::Stopped).await;
        self.report(Progress::Stopped {
            service: name.to_string(),
        });
        result.map(drop).map_err(|source| OrchestratorError::Stop {
            service: name.to_string(),
            source,
        })
    }
}

impl std::fmt::Debug for ServiceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceManager")
            .field(
                "services",
                &self.topology.services.keys().collect::<Vec<_>>(),
            )
            .field("base_dir", &self.base_dir)
            .field("state_dir", &self.state_dir())
            .finish()
    }
}

impl ServiceController for ServiceManager {
    fn control<'a>(
        &'a self,
        service: &'a str,
        command: ServiceCommand,
    ) -> crate::api::BoxFuture<'a, Result<(), ActionFailure>> {
        Box::pin(async move {
            match command {
                ServiceCommand::Start => self.start(service).await?,
                ServiceCommand::Stop => self.stop(service).await?,
                ServiceCommand::Restart => self.restart(service).await?,
            }
            Ok(())
        })
    }
}

/// A run's state directory: a temporary one of its own, or one the caller named.
enum StateDir {
    Temp(temp_dir::RunDir),
    Given(GivenDir),
}

/// A directory the caller named, removed when dropped, so that a manager dropped without
/// stop_all leaves nothing either way.
struct GivenDir(PathBuf);

impl Drop for GivenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl StateDir {
    fn path(&self) -> &std::path::Path {
        match self {
            StateDir::Temp(dir) => dir.path(),
            StateDir::Given(dir) => &dir.0,
        }
    }

    fn close(self) -> std::io::Result<()> {
        match self {
            StateDir::Temp(dir) => dir.close(),
            StateDir::Given(dir) => match std::fs::remove_dir_all(&dir.0) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        }
    }
}
