//! Docker: containers as targets, user-defined networks, and `docker exec` into a running
//! container as a launcher.
//!
//! Everything here runs the `docker` command line through a [`Launcher`], never the engine's
//! socket: the same code drives the engine on this machine under [`LocalLauncher`] and the
//! engine on another host under `SshLauncher<LocalLauncher>`.
//!
//! [`LocalLauncher`]: crate::exec::LocalLauncher

mod cli;
mod container;
mod network;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::ExitStatus;
use crate::exec::launcher::Launcher;
use crate::exec::remote::{self, RemoteProcess, Transport};

pub use cli::{MANAGED_LABEL, OWNER_PID_LABEL, OWNER_PIDNS_LABEL, pid_namespace};
pub(crate) use cli::{
    Removal, docker, failure, forward_events, is_no_such_container, owner_labels, run as cli_run,
    unique_name,
};
pub use container::{ContainerHandle, DockerContainer, Pull};
pub use network::DockerNetwork;

/// Runs commands inside a running container with `docker exec`, through its inner launcher.
///
/// Each command runs under the same wrapper as over SSH: its pid is reported before it writes
/// anything, a missing program or working directory is an error that names it, signals reach
/// its whole process group, and a watchdog kills that group when the `docker exec` client goes
/// away. The container needs a POSIX `sh` with `setsid` and `kill` (busybox has them).
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{Command, DockerExecLauncher, Launcher, LocalLauncher};
/// let launcher = DockerExecLauncher::connect(LocalLauncher, "my-container").await?;
/// let out = launcher.output(&Command::new("cat").arg("/etc/hostname")).await?;
/// println!("{}", out.stdout_text());
/// # Ok::<(), harness::exec::LaunchError>(()) });
/// ```
#[derive(Debug, Clone)]
pub struct DockerExecLauncher<L> {
    inner: L,
    container: String,
    user: Option<String>,
}

impl<L: Launcher> DockerExecLauncher<L> {
    /// A launcher into `container` (a name or an id); fails with
    /// [`LaunchError::NoSuchContainer`] if it does not exist or is not running.
    pub async fn connect(inner: L, container: impl Into<String>) -> Result<Self, LaunchError> {
        let container = container.into();
        let cmd = docker([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.State.Status}}",
            container.as_str(),
        ]);
        let out = inner.output(&cmd).await?;
        if !out.success() {
            let stderr = out.stderr_text();
            if is_no_such_container(&stderr) {
                return Err(LaunchError::NoSuchContainer {
                    container,
                    reason: "no such container".into(),
                });
            }
            return Err(cli::failure(
                &inner,
                &cmd,
                &out,
                &format!("inspect container `{container}`"),
            ));
        }
        let status = out.stdout_text();
        let status = status.trim();
        if status != "running" {
            return Err(LaunchError::NoSuchContainer {
                container,
                reason: format!("the container is {status}, not running"),
            });
        }
        Ok(DockerExecLauncher::unchecked(inner, container))
    }

    /// A launcher into `container` without checking that it runs; for containers we just
    /// started.
    pub(crate) fn unchecked(inner: L, container: String) -> Self {
        DockerExecLauncher {
            inner,
            container,
            user: None,
        }
    }

    /// Runs commands as `user` (a name or `uid[:gid]`), like `docker exec --user`.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The container commands run in.
    pub fn container(&self) -> &str {
        &self.container
    }
}

impl<L: Launcher> Transport for DockerExecLauncher<L> {
    type Inner = L;

    fn inner(&self) -> &L {
        &self.inner
    }

    fn shell_command(&self, script: &str, base: &Command) -> Command {
        let mut args: Vec<String> = vec!["exec".into(), "-i".into()];
        if let Some(user) = &self.user {
            args.push("--user".into());
            args.push(user.clone());
        }
        args.extend([
            self.container.clone(),
            "sh".into(),
            "-c".into(),
            script.to_string(),
        ]);
        base.rewrap("docker", args)
    }

    fn location(&self) -> String {
        format!("container `{}`", self.container)
    }

    fn classify_failure(&self, status: ExitStatus, stderr: &str) -> LaunchError {
        if is_no_such_container(stderr) {
            return LaunchError::NoSuchContainer {
                container: self.container.clone(),
                reason: "no such container".into(),
            };
        }
        if stderr.contains("is not running") {
            return LaunchError::NoSuchContainer {
                container: self.container.clone(),
                reason: "the container is not running".into(),
            };
        }
        if stderr.contains("executable file not found") {
            return LaunchError::NotFound {
                program: "sh".into(),
                host: Some(Transport::location(self)),
            };
        }
        if let Some(reason) = cli::engine_unreachable(stderr) {
            return LaunchError::Unreachable {
                host: format!("the Docker engine ({})", self.inner.location()),
                reason,
            };
        }
        LaunchError::CommandFailed {
            doing: format!("run a command in container `{}`", self.container),
            command: "docker exec".into(),
            status,
            stderr: stderr.to_string(),
        }
    }
}

impl<L: Launcher> Launcher for DockerExecLauncher<L> {
    type Process = RemoteProcess<DockerExecLauncher<L>>;

    async fn spawn(&self, cmd: &Command) -> Result<Self::Process, LaunchError> {
        remote::spawn(self, cmd).await
    }

    fn location(&self) -> String {
        Transport::location(self)
    }
}
