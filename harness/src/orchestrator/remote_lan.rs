//! `RemoteLanExecutor`: a service as a program on a LAN host, started over SSH.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_lock::OnceCell;

use crate::exec::{
    Command, ExitStatus, LaunchError, Launcher, LocalLauncher, ProcessHandle, RemoteProcess,
    SshLauncher,
};
use crate::topology::{RemoteLanTarget, ServiceTarget};

use super::error::StartFailure;
use super::executor::{BoxFuture, RunningService, ServiceExecutor, StartSpec, StopRequest};
use super::logs::LogBuffer;
use super::process::{ExitWatch, pump_events, stop_gracefully};

/// The name of the known-hosts file in the run's state directory.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";

type Ssh = SshLauncher<LocalLauncher>;

/// One SSH destination: host, user, port and key, as a `remote_lan` target gives them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Destination {
    host: String,
    user: String,
    port: Option<u16>,
    key: Option<PathBuf>,
}

/// Runs `remote_lan:` targets on LAN hosts over SSH ([`SshLauncher`]).
///
/// - One connection (an ssh ControlMaster) per host, user, port and key, opened at the first
///   service that needs it and shared by every service of the run on that host. A relative
///   `key` is resolved against the manager's base directory.
/// - Host keys: `StrictHostKeyChecking=accept-new` against a known-hosts file of the run,
///   `known_hosts` in its state directory ([`StartSpec::state_dir`]): a host is trusted on first
///   use, and a host whose key changes during the run is refused. A topology has no
///   known-hosts field, and the user's own files are neither read nor written.
/// - The program runs as the target gives it (`binary` is a path or a name on the host, looked
///   up in the host's `PATH`), with its args, in its `working_dir` (else the login
///   directory), with the injected variables and the topology's `env` on top of the remote
///   login environment. It runs in a session and process group of its own on the host; its
///   output is streamed into the service's log.
/// - Its `files:` are uploaded first (relative targets below `working_dir`, else the login
///   directory) and removed when it stops.
/// - A binary or working directory that does not exist on the host fails the start, naming
///   the program and the host.
/// - Stopping sends SIGTERM to the remote process group, waits the grace period, then sends
///   SIGKILL. Dropping a running service (or the whole manager) closes its session, and the
///   watchdog on the host kills the group; the same happens when the connection drops.
/// - [`ServiceExecutor::clean_up`] (called by `stop_all`) closes the connections.
#[derive(Debug, Default)]
pub struct RemoteLanExecutor {
    /// A cell per destination, so that services on one host wait for its one connection while
    /// connections to other hosts open in parallel.
    connections: Mutex<HashMap<Destination, Arc<OnceCell<Ssh>>>>,
}

impl RemoteLanExecutor {
    /// An executor with no connection yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection to `dest`, opened if there is none yet.
    async fn connection(&self, dest: &Destination, spec: &StartSpec) -> Result<Ssh, LaunchError> {
        let cell = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(dest.clone())
            .or_default()
            .clone();
        // A failed connect leaves the cell empty: the next start tries again.
        cell.get_or_try_init(|| self.connect(dest, spec))
            .await
            .cloned()
    }

    async fn connect(&self, dest: &Destination, spec: &StartSpec) -> Result<Ssh, LaunchError> {
        let mut builder = SshLauncher::builder(dest.host.clone(), dest.user.clone())
            .known_hosts(spec.state_dir.join(KNOWN_HOSTS_FILE));
        if let Some(port) = dest.port {
            builder = builder.port(port);
        }
        if let Some(key) = &dest.key {
            builder = builder.key(key);
        }
        builder.connect(LocalLauncher).await
    }
}

fn destination(target: &RemoteLanTarget, spec: &StartSpec) -> Destination {
    Destination {
        host: target.host.clone(),
        user: target.user.clone(),
        port: target.port,
        key: target.key.as_ref().map(|k| spec.base_dir.join(k)),
    }
}

impl ServiceExecutor for RemoteLanExecutor {
    fn start<'a>(
        &'a self,
        spec: &'a StartSpec,
        log: LogBuffer,
    ) -> BoxFuture<'a, Result<Box<dyn RunningService>, StartFailure>> {
        Box::pin(async move {
            let ServiceTarget::RemoteLan(target) = &spec.service.target else {
                return Err(StartFailure::Unsupported(spec.service.target.kind()));
            };
            let ssh = self
                .connection(&destination(target, spec), spec)
                .await
                .map_err(StartFailure::Launch)?;
            let files =
                super::files::put_over_ssh(&ssh, &spec.files, target.working_dir.as_deref())
                    .await?;
            let env = spec.env();
            let mut command = Command::new(target.binary.clone())
                .args(&target.args)
                .envs(env.clone())
                .bounded_output(super::process::OUTPUT_BATCHES);
            if let Some(dir) = &target.working_dir {
                command = command.current_dir(dir.clone());
            }
            let mut process = match ssh.spawn(&command).await {
                Ok(process) => process,
                Err(e) => {
                    super::files::remove_over_ssh(&ssh, &files).await;
                    return Err(StartFailure::Launch(e));
                }
            };
            let events = process
                .take_events()
                .expect("a fresh handle has its events");
            let thread = format!("harness-log-{}-{}", target.host, process.remote_pid());
            let exit = pump_events(events, log, thread)?;
            Ok(Box::new(RemoteService {
                process,
                exit,
                ssh,
                env,
                dir: target.working_dir.clone(),
                files,
            }) as Box<dyn RunningService>)
        })
    }

    fn clean_up(&self) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            // Dropping the last clone closes a connection (and waits for it).
            let connections =
                std::mem::take(&mut *self.connections.lock().unwrap_or_else(|e| e.into_inner()));
            drop(connections);
            Ok(())
        })
    }
}

/// A program running on a LAN host.
struct RemoteService {
    process: RemoteProcess<Ssh>,
    exit: Arc<Mutex<ExitWatch>>,
    /// Its connection, environment and working directory, which [`RunningService::exec`]
    /// runs with.
    ssh: Ssh,
    env: Vec<(String, String)>,
    dir: Option<String>,
    /// The paths of its `files:` on the host, removed when it stops.
    files: Vec<String>,
}

impl RunningService for RemoteService {
    /// The process id on its host (also its process group there), not on this machine.
    fn pid(&self) -> Option<u32> {
        Some(self.process.remote_pid())
    }

    fn exec(
        &self,
        argv: &[String],
    ) -> BoxFuture<'static, Result<crate::exec::Output, LaunchError>> {
        let command = super::executor::exec_command(argv).map(|command| {
            let command = command.envs(self.env.clone());
            match &self.dir {
                Some(dir) => command.current_dir(dir.clone()),
                None => command,
            }
        });
        let ssh = self.ssh.clone();
        Box::pin(async move { ssh.output(&command?).await })
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.process
            .try_status()
            .or_else(|| ExitWatch::status(&self.exit))
    }

    fn on_exit(&self, notify: Box<dyn FnOnce(ExitStatus) + Send>) {
        ExitWatch::on_exit(&self.exit, notify);
    }

    fn stop(&mut self, how: StopRequest) -> BoxFuture<'_, Result<ExitStatus, LaunchError>> {
        Box::pin(async move {
            let stopped = stop_gracefully(&mut self.process, how).await;
            super::files::remove_over_ssh(&self.ssh, &std::mem::take(&mut self.files)).await;
            stopped
        })
    }
}
