//! Docker: containers as targets, and `docker exec` into a running container as a launcher.

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::ExitStatus;
use crate::exec::launcher::Launcher;
use crate::exec::remote::{self, RemoteProcess, Transport};

/// Runs commands inside a running container with `docker exec`, through its inner launcher.
#[derive(Debug, Clone)]
pub struct DockerExecLauncher<L> {
    inner: L,
    container: String,
}

impl<L: Launcher> DockerExecLauncher<L> {
    /// A launcher into `container`; fails if it does not exist or is not running.
    pub async fn connect(inner: L, container: impl Into<String>) -> Result<Self, LaunchError> {
        Ok(DockerExecLauncher {
            inner,
            container: container.into(),
        })
    }
}

impl<L: Launcher> Transport for DockerExecLauncher<L> {
    type Inner = L;
    fn inner(&self) -> &L {
        &self.inner
    }
    fn shell_command(&self, script: &str, base: &Command) -> Command {
        base.rewrap(
            "docker",
            vec![
                "exec".into(),
                "-i".into(),
                self.container.clone(),
                "sh".into(),
                "-c".into(),
                script.to_string(),
            ],
        )
    }
    fn location(&self) -> String {
        format!("container {}", self.container)
    }
    fn classify_failure(&self, status: ExitStatus, stderr: &str) -> LaunchError {
        LaunchError::NoSuchContainer {
            container: self.container.clone(),
            reason: format!("{status}: {stderr}"),
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
