//! The orchestrator: starts a topology's services in dependency order, waits until each is
//! healthy, keeps the [registry](crate::registry) current, and stops everything again.
//!
//! [`ServiceManager`] does the ordering, ports, addresses, health checks, logs and failure
//! handling; a [`ServiceExecutor`] per target kind makes a service run ([`ProcessExecutor`] for
//! `process:` targets, [`DockerExecutor`] for `docker:` targets, [`RemoteLanExecutor`] for
//! `remote_lan:` targets).
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
//! # Ports and addresses
//!
//! A service has one port, the one it listens on where it runs (`PORT`, `${port}`): on this
//! machine for a process, inside its network namespace for a container. Each service is also
//! reached at one address from this machine, `127.0.0.1:HOST_PORT`: the registry's endpoint
//! `main`, [`ServiceStatus::addr`], [`Progress::Healthy`] and the `tcp` and `http` health checks
//! use it. For a process the host port is its port. A container's port is published on
//! `127.0.0.1` only: a fixed `port: N` on a free host port (so that two runs, or this machine's
//! own service on N, never collide), `port: auto` on the same number, which was free here. Its
//! `ports:` are published on ports Docker chooses, registered as endpoints `port-N`. Both
//! ports are kept across restarts, since dependents were told them.
//!
//! `<DEP>_ADDR` and `${<DEP>_ADDR}` hold the address reachable from where the dependent runs:
//!
//! | dependent \ dependency | process | container | `remote_lan` |
//! |---|---|---|---|
//! | process | `127.0.0.1:PORT` | `127.0.0.1:HOST_PORT` (published) | `HOST:PORT` |
//! | container | `host.docker.internal:PORT` | `NAME:PORT` (its alias on the run's network) | `HOST:PORT` |
//! | `remote_lan` | `THIS_MACHINE:PORT` | (not reachable, see the limits) | `HOST:PORT` |
//!
//! `HOST` is the LAN host's address, resolved here if the topology gives a name, so that no
//! service needs a name lookup (ADR section 3); `THIS_MACHINE` is described under
//! [`remote_lan` targets](#remote_lan-targets).
//!
//! A container reaches this machine's processes through the Docker host's gateway
//! (`--add-host host.docker.internal:host-gateway`, the `docker0` bridge address), so a process
//! that a container depends on must listen on an address the bridge reaches: `0.0.0.0` (what
//! the fixture programs bind by default), not `127.0.0.1`. For a container, `${host}` is
//! `0.0.0.0`, what it should bind to so that both its published port and its network address
//! reach it, and `${addr}` is `0.0.0.0:PORT`; for a process they are `127.0.0.1` and
//! `127.0.0.1:PORT`.
//!
//! # Docker targets
//!
//! [`DockerExecutor`] runs each run's containers on a network of their own,
//! `harness-<run id>`, created at the first container's start and removed by
//! [`ServiceManager::stop_all`], after a failed start, and when the manager is dropped (which
//! waits until the containers, the network and the built images are gone). Containers are
//! named `harness-<run id>-<service>-<n>` and labelled `harness.run=<run id>`,
//! `harness.service=<name>` and `harness.pid=<this process>`. At its first start the executor
//! also acts as janitor: it removes the containers, networks and images labelled with a
//! `harness.run` whose `harness.pid` process is gone, what a killed run left behind.
//!
//! A target with `build: { binary, base }` has its image built here (no registry, no
//! Dockerfile: [`DockerImage`](crate::exec::DockerImage), busybox unless `base: scratch`, which
//! needs a static binary), the binary relative to the base directory and made the entrypoint.
//! Each tag is built once per run, whichever services use it, and removed with the run unless
//! the tag existed before. Without `build:`, the image is pulled as the service's `pull:` (or
//! the run's, [`ServiceManager::with_pull`], `HARNESS_PULL`) says, `missing` by default; a
//! failed pull or a missing image fails the start naming the service and the image.
//! A container's output goes to the service's log, and its exit is noticed like a process's;
//! stopping it is `docker stop` (SIGTERM, the grace period rounded up to whole seconds, then
//! SIGKILL) and `docker rm`.
//!
//! # `remote_lan` targets
//!
//! [`RemoteLanExecutor`] runs the program on the LAN host over SSH
//! ([`SshLauncher`](crate::exec::SshLauncher)): one ControlMaster connection per host, user,
//! SSH port and key, shared by the run's services there and closed by
//! [`ServiceManager::stop_all`]. Host keys are accepted on first use into `known_hosts` in the
//! run's state directory ([`KNOWN_HOSTS_FILE`]): a topology has no known-hosts field, the
//! user's own files are left alone, and a key that changes during the run is refused. The
//! program gets its args, the injected variables with the topology's `env` on top, and its
//! `working_dir`; it runs in a process group of its own on the host, its output streams into
//! the service's log, and stopping it sends SIGTERM to that group, then SIGKILL after the
//! grace period. If the manager is dropped, harness dies or the connection drops, the session
//! ends and a watchdog on the host kills the group. A binary or working directory missing on
//! the host fails the start naming them and the host.
//!
//! Addresses: the service listens on its port on its host, and everything reaches it at
//! `HOST:PORT` (the host's address as the topology gives it, or the first address its name
//! resolves to here): this machine
//! (registry endpoint `main`, with the same address as its `lan_addr`;
//! [`ServiceStatus::addr`]; the `tcp` and `http` checks), local processes, containers (which
//! route out through this machine) and the other LAN services. `${host}` is `0.0.0.0`, so that
//! it binds every interface of its host. A `remote_lan` service that depends on a local
//! process gets this machine's address as its host sees it: the source address the kernel
//! picks for packets to the host (found by connecting a UDP socket to it, which sends nothing;
//! `ip route get HOST` shows the same `src`). So the local process must listen on that address
//! or on `0.0.0.0`. The registry records the service at [`Location::Lan`] with its host, and
//! its pid is the pid on the host.
//!
//! [`Location::Lan`]: crate::registry::Location::Lan
//!
//! # Health checks
//!
//! `tcp` connects to `127.0.0.1:HOST_PORT` (a `remote_lan` service's `HOST:PORT`) (for a container, first to its own address on its
//! network: Docker's proxy accepts on a published port even while nothing listens behind it);
//! `http` sends `GET path` over HTTP/1.1 and compares the status; `command` runs a program on
//! this machine (also for a container's check), with the service's environment, and wants
//! exit code 0;
//! `log` waits for a line of the service's output that matches. The first tries come 1 ms
//! apart, doubling up to `interval`, so that a service that is ready at once costs no
//! interval. Failures during
//! `start_period` do not count; after it, `retries` failures in a row fail the start. A service
//! without a health check is checked with `tcp` when it has a port, and otherwise counts as
//! started once it runs.
//!
//! A service that is not healthy after [`WAIT_REPORT_AFTER`] (1 s) is reported as
//! [`Progress::StillWaiting`], with what its check tries, how many tries so far and what the
//! last one said; then again every [`WAIT_REPORT_EVERY`] (5 s) until it is healthy or fails.
//! The test runner and `harness up` print these reports on stderr. A `command` check's output
//! is not part of the service's log: a start that fails on it says the command's exit status
//! and last line, and shows its last [`CHECK_OUTPUT_LINES`] lines after the service's own.
//!
//! # Known limits
//!
//! - Only `process:`, `docker:` and `remote_lan:` targets have an executor; `wireguard:`
//!   targets fail their start with a clear error. Containers run on this machine's Docker
//!   engine only.
//! - A `remote_lan` service cannot reach a container: published ports listen on `127.0.0.1`
//!   only. Its `port: auto` is a port free on this machine, not checked on the host. Programs
//!   are not copied to the host: the binary must be there already. Each running service holds
//!   one session of its host's connection, and sshd allows 10 per connection unless its
//!   `MaxSessions` says otherwise.
//! - The janitor tells a dead run by its `harness.pid` in this machine's process table, so a
//!   run in another PID namespace sharing the engine would look dead to it.
//! - A service that exits after it was started is marked failed in the registry, but is not
//!   restarted; restart it with [`ServiceManager::restart`].
//! - `port: auto` takes a port that was free a moment before the service binds it (see
//!   [`ServiceManager`]); another program could take it in between.

mod address;
mod compose;
mod docker;
mod engine;
mod env;
mod error;
mod executor;
mod files;
mod health;
mod logs;
mod manager;
mod ports;
mod process;
mod remote_lan;
mod state;
mod temp_dir;
mod termination;
mod waiting;
mod wireguard;

pub use docker::{DockerExecutor, RUN_LABEL, SERVICE_LABEL};
pub use engine::DOCKER_HOST_IP_ENV;
pub use error::{OrchestratorError, StartFailure};
pub use executor::{
    BoxFuture, RunningService, ServiceExecutor, StartSpec, StepReport, StopRequest,
};
pub use files::{DEFAULT_FILE_MODE, StagedFile};
pub use health::CHECK_OUTPUT_LINES;
pub use logs::{
    DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_TAIL, FAILURE_TAIL, FOLLOWER_CAPACITY,
    LOG_MAX_FILES_ENV, LOG_MAX_SIZE_ENV, LogBuffer, LogLine, effective_log_limits, log_files,
    read_log_tail,
};
pub use manager::{
    BASE_DIR_ENV, DEFAULT_STOP_GRACE, MAIN_ENDPOINT, Progress, ServiceManager, ServiceStatus,
    default_base_dir,
};
pub use process::ProcessExecutor;
pub use remote_lan::{KNOWN_HOSTS_FILE, RemoteLanExecutor};
pub use state::{STATE_DIR_ENV, state_root};
pub(crate) use temp_dir::{RunDir, create as create_run_dir, sweep as sweep_run_dirs};
pub(crate) use termination::{
    end_helper_first, forget_helper, remove_on_termination, unless_ending,
};
pub use waiting::{WAIT_REPORT_AFTER, WAIT_REPORT_EVERY, WaitReport};
