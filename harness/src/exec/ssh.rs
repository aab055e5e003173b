//! `SshLauncher`: runs commands on another host through the system `ssh`.

use std::path::PathBuf;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::ExitStatus;
use crate::exec::launcher::Launcher;
use crate::exec::remote::{self, RemoteProcess, Transport};

/// Runs commands on a remote host over SSH, through its inner launcher.
#[derive(Debug, Clone)]
pub struct SshLauncher<L> {
    inner: L,
    host: String,
}

/// Options for an SSH connection; `connect` opens it.
#[derive(Debug, Clone)]
pub struct SshBuilder {
    host: String,
    user: String,
    key: Option<PathBuf>,
}

impl SshLauncher<()> {
    /// Options for a connection to `host` (optionally `host:port`) as `user`.
    pub fn builder(host: impl Into<String>, user: impl Into<String>) -> SshBuilder {
        SshBuilder {
            host: host.into(),
            user: user.into(),
            key: None,
        }
    }
}

impl SshBuilder {
    /// Authenticate with the private key at `path`.
    pub fn key(mut self, path: impl Into<PathBuf>) -> Self {
        self.key = Some(path.into());
        self
    }

    /// Opens the connection through `inner`.
    pub async fn connect<L: Launcher>(self, inner: L) -> Result<SshLauncher<L>, LaunchError> {
        let _ = (&self.user, &self.key, inner);
        Err(LaunchError::Unsupported(format!(
            "connect to {}: not implemented yet",
            self.host
        )))
    }
}

impl<L: Launcher> Transport for SshLauncher<L> {
    type Inner = L;
    fn inner(&self) -> &L {
        &self.inner
    }
    fn shell_command(&self, script: &str, base: &Command) -> Command {
        base.rewrap("ssh", vec![self.host.clone(), script.to_string()])
    }
    fn location(&self) -> String {
        self.host.clone()
    }
    fn classify_failure(&self, status: ExitStatus, stderr: &str) -> LaunchError {
        LaunchError::Unreachable {
            host: self.host.clone(),
            reason: format!("{status}: {stderr}"),
        }
    }
}

impl<L: Launcher> Launcher for SshLauncher<L> {
    type Process = RemoteProcess<SshLauncher<L>>;
    async fn spawn(&self, cmd: &Command) -> Result<Self::Process, LaunchError> {
        remote::spawn(self, cmd).await
    }
    fn location(&self) -> String {
        self.host.clone()
    }
}
