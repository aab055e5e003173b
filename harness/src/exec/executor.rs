//! `Executor`: a launcher bound to the service it runs things for.

use std::path::PathBuf;

use crate::exec::docker::DockerExecLauncher;
use crate::exec::error::LaunchError;
use crate::exec::event::EventStream;
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::local::LocalLauncher;
use crate::exec::ssh::SshLauncher;
use crate::exec::target::Target;

/// Runs targets through a launcher on behalf of one named service.
///
/// The same API whatever the launcher:
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{Command, Executor};
/// let executor = Executor::local("my-service");
/// let mut result = executor.execute(Command::new("echo").arg("hello")).await?;
/// while let Some(event) = result.events.recv().await {
///     println!("{:?}", event);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// ```
#[derive(Debug, Clone)]
pub struct Executor<L> {
    service: String,
    launcher: L,
}

/// A started target with its events taken out, ready to read.
#[derive(Debug)]
#[must_use = "dropping an Execution kills the process it holds"]
pub struct Execution<H> {
    /// The target's events.
    pub events: EventStream,
    /// The target's handle: signals, wait, restart where the target supports it.
    pub handle: H,
}

impl<L: Launcher> Executor<L> {
    /// An executor that runs things for `service` through `launcher`.
    pub fn new(service: impl Into<String>, launcher: L) -> Self {
        Executor {
            service: service.into(),
            launcher,
        }
    }

    /// The service this executor works for.
    pub fn service_name(&self) -> &str {
        &self.service
    }

    /// The launcher.
    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    /// Starts `target` and returns its handle with the events taken out.
    pub async fn execute<T: Target>(
        &self,
        target: T,
    ) -> Result<Execution<T::Handle<L>>, LaunchError> {
        let mut handle = self.spawn(target).await?;
        let events = handle.take_events().ok_or_else(|| {
            LaunchError::Unsupported(format!(
                "service `{}`: this target's events were already taken",
                self.service
            ))
        })?;
        Ok(Execution { events, handle })
    }

    /// Starts `target` and returns its handle, events still inside.
    pub async fn spawn<T: Target>(&self, target: T) -> Result<T::Handle<L>, LaunchError> {
        let span = tracing::debug_span!("execute", service = %self.service, on = %self.launcher.location());
        let _enter = span.enter();
        target.launch(&self.launcher).await
    }
}

impl Executor<LocalLauncher> {
    /// An executor for processes on this machine.
    pub fn local(service: impl Into<String>) -> Self {
        Executor::new(service, LocalLauncher)
    }
}

impl Executor<DockerExecLauncher<LocalLauncher>> {
    /// An executor that runs commands inside the running container `container` (name or id),
    /// with `docker exec`. Fails if the container does not exist or is not running.
    pub async fn docker(
        service: impl Into<String>,
        container: impl Into<String>,
    ) -> Result<Self, LaunchError> {
        let launcher = DockerExecLauncher::connect(LocalLauncher, container).await?;
        Ok(Executor::new(service, launcher))
    }
}

impl Executor<SshLauncher<LocalLauncher>> {
    /// An executor that runs commands on `host` as `user` over SSH, authenticating with the
    /// private key at `key_path`. `host` may carry a port (`"127.0.0.1:2222"`). Connects (one
    /// multiplexed master connection) before returning, so a bad host or key fails here.
    pub async fn ssh(
        service: impl Into<String>,
        host: impl Into<String>,
        user: impl Into<String>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, LaunchError> {
        let launcher = SshLauncher::builder(host, user)
            .key(key_path)
            .connect(LocalLauncher)
            .await?;
        Ok(Executor::new(service, launcher))
    }
}
