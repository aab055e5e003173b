//! `ServiceExecutor`: how the manager starts and stops a service of one target kind.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::exec::{ExitStatus, LaunchError, Signal};
use crate::topology::{PullPolicy, ServiceConfig};

use super::error::StartFailure;
use super::files::StagedFile;
use super::logs::LogBuffer;

/// A boxed future that can move between threads, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything a service needs to start, prepared by the manager: its configuration with every
/// placeholder filled, its port, and the variables harness injects.
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// The service, with `${...}` placeholders substituted.
    pub service: ServiceConfig,
    /// Its port, if it has one: where it listens, on this machine for a process, inside the
    /// container for a container.
    pub port: Option<u16>,
    /// The port of this machine's `127.0.0.1` that reaches `port`: the same port for a
    /// process; the port a container publishes `port` on.
    pub host_port: Option<u16>,
    /// What harness adds to its environment: `PORT` and `<DEP>_ADDR` for each dependency.
    /// The topology's own `env` comes from [`StartSpec::service`] and wins over these.
    pub injected_env: Vec<(String, String)>,
    /// The directory relative binaries and working directories are resolved against.
    pub base_dir: PathBuf,
    /// The run's state directory (env files, logs), where an executor may keep files of the
    /// run (the `remote_lan` executor's known-hosts file). Removed by
    /// [`ServiceManager::stop_all`](super::ServiceManager::stop_all).
    pub state_dir: PathBuf,
    /// Its `files:`, staged on this machine. A process's are in place already; an executor
    /// that runs the service elsewhere puts them there before it starts the service.
    pub files: Vec<StagedFile>,
    /// Whether a container of the run depends on another container, so that the run's
    /// containers need a Docker network of their own to find each other by name. The same
    /// for every service of a run.
    pub containers_meet: bool,
    /// When its image is pulled (a container's): its `pull:`, else the run's.
    pub pull: PullPolicy,
    /// Where the lines of a long step of its start go (an image's pull): the manager's
    /// progress ([`Progress::Pulling`](super::Progress::Pulling)).
    pub report: StepReport,
}

/// Receives the lines of a long step of a start, such as `docker pull`'s.
#[derive(Clone, Default)]
pub struct StepReport(Option<LineFn>);

type LineFn = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

impl StepReport {
    /// Lines go to `receive`.
    pub fn new(receive: impl Fn(&str) + Send + Sync + 'static) -> Self {
        StepReport(Some(std::sync::Arc::new(receive)))
    }

    /// Reports one line.
    pub fn line(&self, text: &str) {
        if let Some(receive) = &self.0 {
            receive(text);
        }
    }
}

impl std::fmt::Debug for StepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StepReport(..)"
        } else {
            "StepReport(none)"
        })
    }
}

impl StartSpec {
    /// The service's whole environment on top of the caller's: the injected variables, then
    /// the topology's `env` (which may override them).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.injected_env.clone();
        if let Some(own) = self.service.target.env() {
            for (name, value) in own {
                env.retain(|(n, _)| n != name);
                env.push((name.clone(), value.clone()));
            }
        }
        env
    }
}

/// Starts services of one target kind (processes, containers).
///
/// The manager owns ordering, ports, health checks and the registry; an executor only makes
/// the service run and feeds its output to the log it is given.
pub trait ServiceExecutor: Send + Sync {
    /// Starts the service and returns once it runs (not once it is healthy).
    fn start<'a>(
        &'a self,
        spec: &'a StartSpec,
        log: LogBuffer,
    ) -> BoxFuture<'a, Result<Box<dyn RunningService>, StartFailure>>;

    /// Removes what the executor made for the run besides the services themselves (a Docker
    /// network, images it built), once every service of the run has stopped.
    /// [`ServiceManager::stop_all`](super::ServiceManager::stop_all) calls it; the next start
    /// makes them again. Nothing to do unless the executor made something.
    fn clean_up(&self) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The command `argv` names, with no program when it is empty.
pub(crate) fn exec_command(argv: &[String]) -> Result<crate::exec::Command, LaunchError> {
    match argv.split_first() {
        None => Err(LaunchError::EmptyProgram),
        Some((program, args)) => Ok(crate::exec::Command::new(program.clone()).args(args)),
    }
}

/// A service an executor started.
pub trait RunningService: Send + Sync {
    /// Its process id, if it has one on this machine.
    fn pid(&self) -> Option<u32>;

    /// Its container's id, if it runs in a container.
    fn container_id(&self) -> Option<String> {
        None
    }

    /// The address at which this machine reaches the service itself when its port is
    /// published through a proxy: a container's address on its Docker network.
    fn direct_ip(&self) -> Option<IpAddr> {
        None
    }

    /// Further ports it publishes on this machine, as `(port where it runs, port of
    /// 127.0.0.1)` (a container's `ports:`).
    fn published_ports(&self) -> Vec<(u16, u16)> {
        Vec::new()
    }

    /// How it ended, once it has.
    fn exit_status(&self) -> Option<ExitStatus>;

    /// Runs `argv` where the service runs, to its end: beside a process with its environment
    /// and working directory, inside a container (`docker exec`), on a LAN host over the
    /// service's SSH connection. Returns what it wrote and how it ended. The future borrows
    /// nothing of the service, so no lock on it is held while the command runs.
    fn exec(
        &self,
        argv: &[String],
    ) -> BoxFuture<'static, Result<crate::exec::Output, LaunchError>> {
        let _ = argv;
        Box::pin(async {
            Err(LaunchError::Unsupported(
                "running a command where this kind of service runs".to_string(),
            ))
        })
    }

    /// Calls `notify` once, when the service ends (at once if it already has). The manager uses
    /// it to notice a service that exits on its own after it was started.
    fn on_exit(&self, notify: Box<dyn FnOnce(ExitStatus) + Send>);

    /// Asks it to stop (`how.signal` to its process group, or to a container's main process),
    /// waits up to `how.grace`, then kills it; a container is then removed.
    /// Returns how it ended.
    fn stop(&mut self, how: StopRequest) -> BoxFuture<'_, Result<ExitStatus, LaunchError>>;
}

/// How the manager asks a service to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopRequest {
    /// The signal that asks it to stop: its `stop_signal:`, else `SIGTERM`.
    pub signal: Signal,
    /// How long it may take before it is killed: its `stop_grace:`, else the run's.
    pub grace: Duration,
    /// Set when the whole run is being torn down and the service asked for no graceful stop
    /// of its own (neither `stop_signal:` nor `stop_grace:`): an executor may then skip the
    /// graceful stop where it buys nothing, as for a container whose filesystem goes with
    /// it.
    pub teardown: bool,
}

impl StopRequest {
    /// A graceful stop of `service`: its own signal and grace if it has them, else `SIGTERM`
    /// and `grace`.
    pub fn of(service: &ServiceConfig, grace: Duration) -> Self {
        StopRequest {
            signal: service.stop_signal.map_or(Signal::Terminate, Signal::from),
            grace: service.stop_grace.unwrap_or(grace),
            teardown: false,
        }
    }

    /// The stop of `service` when its run is torn down.
    pub fn teardown_of(service: &ServiceConfig, grace: Duration) -> Self {
        StopRequest {
            teardown: service.stop_signal.is_none() && service.stop_grace.is_none(),
            ..Self::of(service, grace)
        }
    }
}
