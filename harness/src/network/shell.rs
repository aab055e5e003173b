//! A launcher behind a trait object, so one mesh holds nodes of different launcher types
//! (`LocalLauncher` for the test machine, `SshLauncher<...>` for hosts).

use std::future::Future;
use std::pin::Pin;

use futures_lite::AsyncWriteExt;

use crate::exec::{Command, EventStream, LaunchError, Launcher, Output, ProcessHandle};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the mesh needs of a launcher: run a command (with text on its stdin), and start a
/// long-running one.
pub(crate) trait Shell: Send + Sync {
    /// Where commands run, for messages.
    fn location(&self) -> String;

    /// Runs `cmd` to completion with `input` on its stdin; fails unless it exits with 0.
    fn run<'a>(
        &'a self,
        cmd: Command,
        input: Option<String>,
        doing: &'a str,
    ) -> BoxFuture<'a, Result<Output, LaunchError>>;

    /// Starts `cmd` and keeps it: dropping the handle kills it.
    fn start(&self, cmd: Command) -> BoxFuture<'_, Result<Box<dyn Daemon>, LaunchError>>;
}

/// A process the mesh started and owns (a `wireguard-go`).
pub(crate) trait Daemon: Send + Sync {
    /// Its pid where it runs.
    fn pid(&self) -> Option<u32>;

    /// What it wrote so far (for the message when it failed to start).
    fn drain_output(&mut self) -> String;

    /// Stops it (`SIGTERM`: wireguard-go removes its interface and socket; `SIGKILL` if it is
    /// still there after a few seconds) and waits.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// How long a daemon gets to exit after `SIGTERM`.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// A started process and its output, which nobody reads unless it fails.
struct Started<P> {
    process: P,
    events: Option<EventStream>,
}

impl<L: Launcher> Shell for L {
    fn location(&self) -> String {
        Launcher::location(self)
    }

    fn run<'a>(
        &'a self,
        cmd: Command,
        input: Option<String>,
        doing: &'a str,
    ) -> BoxFuture<'a, Result<Output, LaunchError>> {
        Box::pin(async move {
            let Some(input) = input else {
                return self.run_checked(&cmd, doing).await;
            };
            let cmd = cmd.piped_stdin();
            let mut p = self.spawn(&cmd).await?;
            let events = p.take_events().expect("a fresh handle has its events");
            if let Some(mut stdin) = p.take_stdin() {
                let written = stdin.write_all(input.as_bytes()).await;
                let closed = stdin.close().await;
                if let Err(e) = written.and(closed) {
                    return Err(LaunchError::io(format!("write to `{}`", cmd.display()), e));
                }
            }
            let mut out = events.collect().await;
            if out.status.is_none() {
                out.status = Some(p.wait().await?);
            }
            match out.status {
                Some(s) if s.success() => Ok(out),
                status => Err(LaunchError::CommandFailed {
                    doing: doing.to_string(),
                    command: cmd.display(),
                    status: status.unwrap_or(crate::exec::ExitStatus::from_code(-1)),
                    stderr: out.stderr_text(),
                }),
            }
        })
    }

    fn start(&self, cmd: Command) -> BoxFuture<'_, Result<Box<dyn Daemon>, LaunchError>> {
        Box::pin(async move {
            let mut process = self.spawn(&cmd).await?;
            let events = process.take_events();
            Ok(Box::new(Started { process, events }) as Box<dyn Daemon>)
        })
    }
}

impl<P: ProcessHandle + 'static> Daemon for Started<P> {
    fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    fn drain_output(&mut self) -> String {
        let mut lines = Vec::new();
        if let Some(events) = &mut self.events {
            while let Some(event) = events.try_recv() {
                if let Some(line) = event.line() {
                    lines.push(line.to_string());
                }
            }
        }
        lines.join("\n")
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.process.try_status().is_none() {
                let _ = self.process.terminate().await;
                let exited =
                    futures_lite::future::or(async { self.process.wait().await.is_ok() }, async {
                        async_io::Timer::after(STOP_GRACE).await;
                        false
                    })
                    .await;
                if !exited {
                    let _ = self.process.kill().await;
                }
            }
            let _ = self.process.wait().await;
        })
    }
}
