//! `LocalLauncher`: processes on this machine.

use std::io;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, WaitIdOptions};

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventStream, ExitStatus, OutputStream, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::pipe::{ChildInput, ChildOutput, LineRoute, spawn_line_reader};
use crate::exec::signal::Signal;
use crate::exec::spawner;

/// How long an exited process's pipes may stay open (held by its own children) before the
/// `Exited` event is sent anyway.
const PIPE_DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Spawns processes on this machine.
///
/// Each child runs in a process group of its own (so a signal reaches its children too), gets
/// `SIGKILL` if the harness process dies (`PR_SET_PDEATHSIG`, set from one long-lived spawner
/// thread), and its group is killed when its handle is dropped: while it runs, and also after it
/// exited, so background children it left in its group go with it. Output is
/// read on two threads per process and delivered as line events.
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{Command, Launcher, LocalLauncher, ProcessHandle};
/// let mut p = LocalLauncher.spawn(&Command::new("echo").arg("hi")).await?;
/// let out = p.take_events().unwrap().collect().await;
/// assert_eq!(out.stdout, ["hi"]);
/// # Ok::<(), harness::exec::LaunchError>(()) });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLauncher;

impl Launcher for LocalLauncher {
    type Process = LocalProcess;

    async fn spawn(&self, cmd: &Command) -> Result<LocalProcess, LaunchError> {
        spawn_local(cmd).await
    }

    fn location(&self) -> String {
        "local".to_string()
    }
}

async fn spawn_local(cmd: &Command) -> Result<LocalProcess, LaunchError> {
    if cmd.program.is_empty() {
        return Err(LaunchError::EmptyProgram);
    }
    if let Some(dir) = &cmd.current_dir {
        // std reports a missing directory as ENOENT, indistinguishable from a missing program.
        if !std::path::Path::new(dir).is_dir() {
            return Err(LaunchError::MissingWorkDir {
                program: cmd.program.clone(),
                dir: dir.clone(),
                host: None,
            });
        }
    }
    let mut std_cmd = std::process::Command::new(&cmd.program);
    std_cmd.args(&cmd.args);
    if cmd.env_clear {
        std_cmd.env_clear();
    }
    std_cmd.envs(&cmd.env);
    if let Some(dir) = &cmd.current_dir {
        std_cmd.current_dir(dir);
    }
    std_cmd
        .stdin(if cmd.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let mut child = spawner::spawn(std_cmd).await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => LaunchError::NotFound {
            program: cmd.program.clone(),
            host: None,
        },
        io::ErrorKind::PermissionDenied => LaunchError::PermissionDenied {
            program: cmd.program.clone(),
        },
        _ => LaunchError::io(format!("spawn `{}`", cmd.program), e),
    })?;
    let pid = child.id();
    tracing::debug!(pid, command = %cmd.display(), "spawned");

    let (sink, events) = match &cmd.sink {
        Some(sink) => (sink.clone(), None),
        None => {
            let (sink, events) = EventStream::channel();
            (sink, Some(events))
        }
    };
    if cmd.announce_start {
        sink.send_one(ProcessEvent::Started { pid });
    }
    let route = LineRoute {
        sink: sink.clone(),
        filter: cmd.filter.clone(),
        tap: cmd.tap.clone(),
    };

    let mut readers = Vec::new();
    let stdin = child
        .stdin
        .take()
        .map(|s| ChildInput::new(blocking::Unblock::new(s)));
    let stdout_pipe = child.stdout.take().expect("stdout is piped");
    let stdout = if cmd.raw_stdout {
        Some(ChildOutput::new(blocking::Unblock::new(stdout_pipe)))
    } else {
        let r = spawn_line_reader(
            stdout_pipe,
            OutputStream::Stdout,
            route.clone(),
            format!("harness-out-{pid}"),
        )
        .map_err(|e| LaunchError::io("start an output reader thread", e))?;
        readers.push(r);
        None
    };
    let stderr_pipe = child.stderr.take().expect("stderr is piped");
    readers.push(
        spawn_line_reader(
            stderr_pipe,
            OutputStream::Stderr,
            route,
            format!("harness-err-{pid}"),
        )
        .map_err(|e| LaunchError::io("start an output reader thread", e))?,
    );

    let shared = Arc::new(Shared {
        pid,
        state: Mutex::new(State::default()),
        exited: event_listener::Event::new(),
    });
    let waiter_shared = shared.clone();
    let announce_exit = cmd.announce_exit;
    std::thread::Builder::new()
        .name(format!("harness-wait-{pid}"))
        .spawn(move || reap(child, waiter_shared, readers, sink, announce_exit))
        .map_err(|e| LaunchError::io("start a process waiter thread", e))?;

    Ok(LocalProcess {
        shared,
        events,
        stdin,
        stdout,
        kill_on_drop: true,
    })
}

/// Waits for the child on its own thread, then reports its exit after its output.
fn reap(
    mut child: std::process::Child,
    shared: Arc<Shared>,
    readers: Vec<std::sync::mpsc::Receiver<()>>,
    sink: crate::exec::event::EventSink,
    announce_exit: bool,
) {
    let pid = Pid::from_raw(shared.pid as i32).expect("a child pid is positive");
    // Wait without reaping: see `State::zombie`.
    let waited = loop {
        match rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(Some(st)) => {
                break st
                    .exit_status()
                    .map(ExitStatus::from_code)
                    .or_else(|| st.terminating_signal().map(ExitStatus::from_signal));
            }
            _ => break None,
        }
    };
    let status = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let status = match waited {
            Some(status) if !state.dropped => {
                state.zombie = Some(child);
                status
            }
            _ => {
                // The handle is gone (or the status could not be read without reaping): take
                // the rest of the group with the leader, then reap.
                if state.kill_group {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                child
                    .wait()
                    .map(ExitStatus::from)
                    .unwrap_or(ExitStatus::from_code(-1))
            }
        };
        state.status = Some(status);
        status
    };
    shared.exited.notify(usize::MAX);
    tracing::debug!(pid = shared.pid, %status, "exited");
    for r in readers {
        let _ = r.recv_timeout(PIPE_DRAIN_GRACE);
    }
    if announce_exit {
        sink.send_one(ProcessEvent::Exited(status));
    }
}

struct Shared {
    pid: u32,
    state: Mutex<State>,
    exited: event_listener::Event,
}

#[derive(Default)]
struct State {
    /// Set once the child has exited.
    status: Option<ExitStatus>,
    /// The exited child, kept unreaped while its handle lives. As long as the zombie exists,
    /// its pid, which is also its process group id, cannot be reused, so killing the group on
    /// drop (to take the children it left behind) can never hit a stranger.
    zombie: Option<std::process::Child>,
    /// The handle is gone: reap at once.
    dropped: bool,
    /// The handle was dropped without `detach`: kill the group.
    kill_group: bool,
}

/// A process started by [`LocalLauncher`].
pub struct LocalProcess {
    shared: Arc<Shared>,
    events: Option<EventStream>,
    stdin: Option<ChildInput>,
    stdout: Option<ChildOutput>,
    kill_on_drop: bool,
}

impl LocalProcess {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// Lets the process outlive this handle: dropping the handle no longer kills it (nor what it
    /// left in its process group). It still dies with the harness process (`PR_SET_PDEATHSIG`).
    pub fn detach(mut self) {
        self.kill_on_drop = false;
    }

    fn signal_now(&self, signal: Signal) -> Result<(), LaunchError> {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.status.is_some() {
            return Err(LaunchError::AlreadyExited {
                pid: self.shared.pid,
            });
        }
        let pid = Pid::from_raw(self.shared.pid as i32).expect("a child pid is positive");
        match rustix::process::kill_process_group(pid, signal.to_rustix()) {
            Ok(()) => Ok(()),
            // The group is empty but the leader is not reaped yet: it is exiting.
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(LaunchError::io(
                format!("send {signal} to process group {}", self.shared.pid),
                e.into(),
            )),
        }
    }
}

impl ProcessHandle for LocalProcess {
    fn id(&self) -> Option<u32> {
        Some(self.shared.pid)
    }

    fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    fn take_stdin(&mut self) -> Option<ChildInput> {
        self.stdin.take()
    }

    fn take_stdout(&mut self) -> Option<ChildOutput> {
        self.stdout.take()
    }

    async fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        self.signal_now(signal)
    }

    async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        loop {
            if let Some(s) = self.try_status() {
                return Ok(s);
            }
            let listener = self.shared.exited.listen();
            if let Some(s) = self.try_status() {
                return Ok(s);
            }
            listener.await;
        }
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.dropped = true;
        state.kill_group = self.kill_on_drop;
        if self.kill_on_drop {
            // Running, or exited and held as a zombie: either way the group id is still ours.
            let pid = Pid::from_raw(self.shared.pid as i32).expect("a child pid is positive");
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        if let Some(mut zombie) = state.zombie.take() {
            let _ = zombie.wait();
        }
    }
}

impl std::fmt::Debug for LocalProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProcess")
            .field("pid", &self.shared.pid)
            .field("status", &self.try_status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_events_in_order() {
        smol::block_on(async {
            let mut p = LocalLauncher
                .spawn(&Command::new("sh").args(["-c", "echo a; echo b; printf c"]))
                .await
                .unwrap();
            let mut ev = p.take_events().unwrap();
            assert!(p.take_events().is_none(), "events can be taken only once");
            assert_eq!(
                ev.recv().await,
                Some(ProcessEvent::Started { pid: p.pid() })
            );
            let out = ev.collect().await;
            assert_eq!(out.stdout, ["a", "b", "c"]);
            assert!(out.success());
        });
    }

    #[test]
    fn errors_name_what_was_wrong() {
        smol::block_on(async {
            assert!(matches!(
                LocalLauncher.spawn(&Command::new("")).await,
                Err(LaunchError::EmptyProgram)
            ));
            let e = LocalLauncher
                .spawn(&Command::new("/no/such/bin"))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("/no/such/bin"), "{e}");
            let e = LocalLauncher
                .spawn(&Command::new("true").current_dir("/no/such/dir"))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("/no/such/dir"), "{e}");
        });
    }
}
