//! The `Target` trait: kinds of things an executor can run.

use std::future::Future;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::launcher::{Launcher, ProcessHandle};

/// Something an [`Executor`](crate::exec::Executor) can run through any launcher: a one-off
/// [`Command`], a [`ManagedProcess`](crate::exec::ManagedProcess), a
/// [`DockerContainer`](crate::exec::DockerContainer), a
/// [`ComposeService`](crate::exec::ComposeService), a
/// [`SystemdService`](crate::exec::SystemdService) or a
/// [`SystemdPortable`](crate::exec::SystemdPortable).
///
/// Each target decides which commands it takes to start, signal and stop it; the launcher
/// decides where those commands run. So a Docker container on a remote host is the same target
/// under `SshLauncher<LocalLauncher>`.
pub trait Target: Send + Sync {
    /// The handle of the running target, for a given launcher.
    type Handle<L: Launcher>: ProcessHandle;

    /// Starts the target through `launcher`.
    fn launch<L: Launcher>(
        &self,
        launcher: &L,
    ) -> impl Future<Output = Result<Self::Handle<L>, LaunchError>> + Send;
}

/// A one-off command: the handle is the launcher's own process handle.
impl Target for Command {
    type Handle<L: Launcher> = L::Process;

    fn launch<L: Launcher>(
        &self,
        launcher: &L,
    ) -> impl Future<Output = Result<L::Process, LaunchError>> + Send {
        launcher.spawn(self)
    }
}
