//! The `Launcher` and `ProcessHandle` traits: what spawns, and what it hands back.

use std::future::Future;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventStream, ExitStatus};
use crate::exec::pipe::{ChildInput, ChildOutput};
use crate::exec::signal::Signal;

/// Spawns commands somewhere: on this machine, on a host over SSH, inside a container, as
/// root. Launchers nest, like tracing-subscriber's layers: `SshLauncher<SudoLauncher<...>>`
/// adds one thing to what its inner launcher does.
///
/// Associated types rather than trait objects: the handle type is known statically, so nested
/// launchers cost no dynamic dispatch.
pub trait Launcher: Clone + Send + Sync + 'static {
    /// The handle of a process this launcher started.
    type Process: ProcessHandle + 'static;

    /// Starts `cmd`. The returned handle owns the process: dropping it while the process runs
    /// kills the process (and its process group, where the launcher can reach it).
    fn spawn(
        &self,
        cmd: &Command,
    ) -> impl Future<Output = Result<Self::Process, LaunchError>> + Send;

    /// Where this launcher runs things, for messages ("local", "deploy@10.0.0.2:22").
    fn location(&self) -> String;

    /// Runs `cmd` to completion and collects its output.
    fn output(
        &self,
        cmd: &Command,
    ) -> impl Future<Output = Result<crate::exec::Output, LaunchError>> + Send {
        async move {
            let mut p = self.spawn(cmd).await?;
            let events = p.take_events().expect("a fresh handle has its events");
            let mut out = events.collect().await;
            if out.status.is_none() {
                out.status = Some(p.wait().await?);
            }
            Ok(out)
        }
    }

    /// Runs `cmd` with `input` on its stdin to completion and collects its output. If the
    /// bytes could not all be written (the command exited early), a status of success is
    /// turned into a failure, so that its stderr is read as the reason.
    fn output_with_input(
        &self,
        cmd: &Command,
        input: &[u8],
    ) -> impl Future<Output = Result<crate::exec::Output, LaunchError>> + Send {
        async move {
            use futures_lite::AsyncWriteExt as _;
            let cmd = cmd.clone().piped_stdin();
            let mut p = self.spawn(&cmd).await?;
            let events = p.take_events().expect("a fresh handle has its events");
            let mut stdin = p.take_stdin().expect("stdin was asked for");
            let written = stdin.write_all(input).await;
            let _ = stdin.close().await;
            let mut out = events.collect().await;
            if out.status.is_none() {
                out.status = Some(p.wait().await?);
            }
            if written.is_err() && out.success() {
                out.status = Some(ExitStatus::from_code(-1));
            }
            Ok(out)
        }
    }

    /// Runs `cmd` and fails with [`LaunchError::CommandFailed`] unless it exits with 0.
    fn run_checked(
        &self,
        cmd: &Command,
        doing: &str,
    ) -> impl Future<Output = Result<crate::exec::Output, LaunchError>> + Send {
        async move {
            let out = self.output(cmd).await?;
            match out.status {
                Some(s) if s.success() => Ok(out),
                status => Err(LaunchError::CommandFailed {
                    doing: doing.to_string(),
                    command: cmd.display(),
                    status: status.unwrap_or(ExitStatus::from_code(-1)),
                    stderr: out.stderr_text(),
                }),
            }
        }
    }
}

/// A running (or finished) process: its events, its signals, its exit.
pub trait ProcessHandle: Send + Sync {
    /// The process id, where the launcher knows one (a remote launcher reports the remote pid).
    fn id(&self) -> Option<u32>;

    /// Takes the event stream. It can be taken once; later calls return `None`.
    fn take_events(&mut self) -> Option<EventStream>;

    /// Takes the stdin pipe, if the command asked for one with `Command::piped_stdin`.
    /// Handles of things that have no pipes of ours (containers, units) have none.
    fn take_stdin(&mut self) -> Option<ChildInput> {
        None
    }

    /// Takes raw stdout, if the command asked for it with `Command::raw_stdout`.
    fn take_stdout(&mut self) -> Option<ChildOutput> {
        None
    }

    /// Sends `signal` to the process and its process group.
    fn signal(&self, signal: Signal) -> impl Future<Output = Result<(), LaunchError>> + Send;

    /// Waits for the process to exit. Can be called again after it returned.
    fn wait(&mut self) -> impl Future<Output = Result<ExitStatus, LaunchError>> + Send;

    /// The exit status, if the process has exited.
    fn try_status(&self) -> Option<ExitStatus>;

    /// `SIGTERM`.
    fn terminate(&self) -> impl Future<Output = Result<(), LaunchError>> + Send {
        self.signal(Signal::Terminate)
    }

    /// `SIGKILL`.
    fn kill(&self) -> impl Future<Output = Result<(), LaunchError>> + Send {
        self.signal(Signal::Kill)
    }

    /// `SIGINT`.
    fn interrupt(&self) -> impl Future<Output = Result<(), LaunchError>> + Send {
        self.signal(Signal::Interrupt)
    }

    /// `SIGHUP`.
    fn reload(&self) -> impl Future<Output = Result<(), LaunchError>> + Send {
        self.signal(Signal::Reload)
    }
}
