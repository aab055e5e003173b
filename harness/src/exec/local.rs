//! `LocalLauncher`: processes on this machine.

use std::io;
use std::sync::{Arc, Mutex};

use rustix::process::Pid;

use crate::exec::cgroup::ServiceCgroup;
use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventStream, ExitStatus, OutputStream, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::pipe::{ChildInput, ChildOutput, LineRoute};
use crate::exec::signal::Signal;
use crate::exec::spawn::{SpawnPlan, Step};
use crate::exec::spawner;
use crate::exec::watch::{self, Watched};

/// Spawns processes on this machine.
///
/// Each child runs in a process group of its own (so a signal reaches its children too), gets
/// `SIGKILL` if the harness process dies (`PR_SET_PDEATHSIG`, set from one long-lived spawner
/// thread), and its group is killed when its handle is dropped: while it runs, and also after it
/// exited, so background children it left in its group go with it. One thread per process reads
/// its output, delivered as line events, and sees it exit.
///
/// Children are started without `fork` (`clone(CLONE_VM | CLONE_VFORK)`), so a spawn costs the
/// same with hundreds of children running as with none.
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
    let missing_dir = || LaunchError::MissingWorkDir {
        program: cmd.program.clone(),
        dir: cmd.current_dir.clone().unwrap_or_default(),
        host: None,
    };
    let mut plan = SpawnPlan::new(
        &cmd.program,
        &cmd.args,
        &cmd.env,
        cmd.env_clear,
        cmd.current_dir.as_deref(),
        cmd.stdin,
    )
    .map_err(|e| LaunchError::io(format!("spawn `{}`", cmd.program), e))?;
    let mut cgroup = cmd.cgroup.as_deref().and_then(ServiceCgroup::create);
    if let Some(group) = &cgroup {
        match group.procs().try_clone() {
            Ok(procs) => plan = plan.with_cgroup(procs),
            Err(e) => {
                tracing::debug!("failed to share a cgroup with the child: {e}");
                cgroup.take().map(ServiceCgroup::remove);
            }
        }
    }
    let spawned = spawner::spawn(plan).await;
    if spawned.is_err() {
        cgroup.take().map(ServiceCgroup::remove);
    }
    let child = spawned.map_err(|e| match (e.step, e.error.kind()) {
        (Step::Exec, io::ErrorKind::NotFound) => LaunchError::NotFound {
            program: cmd.program.clone(),
            host: None,
        },
        (Step::Exec, io::ErrorKind::PermissionDenied) => LaunchError::PermissionDenied {
            program: cmd.program.clone(),
        },
        // The child's chdir tells a missing directory apart from a missing program (std could
        // not: both were ENOENT from its spawn).
        (Step::Chdir, io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => missing_dir(),
        _ => LaunchError::io(format!("spawn `{}`", cmd.program), e.error),
    })?;
    let pid = child.pid.as_raw_nonzero().get() as u32;
    tracing::debug!(pid, command = %cmd.display(), "spawned");
    if let Some(e) = &child.cgroup_error {
        tracing::debug!(
            pid,
            "the child could not join its cgroup, and runs outside it: {e}"
        );
        cgroup.take().map(ServiceCgroup::remove);
    }

    let (sink, events) = match &cmd.sink {
        Some(sink) => (sink.clone(), None),
        None => {
            let (sink, events) = EventStream::channel_with(cmd.event_capacity);
            (sink, Some(events))
        }
    };
    if cmd.announce_start {
        sink.send_one(ProcessEvent::Started { pid });
    }

    let stdin = child
        .stdin
        .map(|s| ChildInput::new(blocking::Unblock::new(std::fs::File::from(s))));
    // Stderr first: a remote wrapper reports its pid there before the program writes to stdout.
    let mut outputs = vec![(child.stderr, OutputStream::Stderr)];
    let stdout = if cmd.raw_stdout {
        Some(ChildOutput::new(blocking::Unblock::new(
            std::fs::File::from(child.stdout),
        )))
    } else {
        outputs.push((child.stdout, OutputStream::Stdout));
        None
    };

    let shared = Arc::new(Shared {
        pid,
        state: Mutex::new(State::default()),
        exited: event_listener::Event::new(),
    });
    let watched = Watched {
        pid: child.pid,
        pidfd: child.pidfd,
        outputs,
        route: LineRoute {
            sink,
            filter: cmd.filter.clone(),
            tap: cmd.tap.clone(),
            max_line: cmd.event_capacity.map(|_| crate::exec::pipe::MAX_LINE),
        },
        announce_exit: cmd.announce_exit,
    };
    let watcher_shared = shared.clone();
    let started = std::thread::Builder::new()
        .name(format!("harness-child-{pid}"))
        .spawn(move || watch::watch(watched, |pid| on_exit(pid, &watcher_shared)));
    if let Err(e) = started {
        // Nobody would ever reap it: take it down now.
        let _ = rustix::process::kill_process_group(child.pid, rustix::process::Signal::KILL);
        watch::wait_exit(child.pid, true);
        cgroup.take().map(ServiceCgroup::remove);
        return Err(LaunchError::io("start a thread to watch the process", e));
    }

    Ok(LocalProcess {
        shared,
        events,
        stdin,
        stdout,
        kill_on_drop: true,
        cgroup,
    })
}

/// Runs on the child's watching thread as soon as the child has exited: records the status, and
/// keeps the child unreaped while its handle lives.
fn on_exit(pid: Pid, shared: &Shared) -> ExitStatus {
    let waited = watch::wait_exit(pid, false);
    let status = {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let status = match waited {
            Some(status) if !state.dropped => {
                state.zombie = true;
                status
            }
            _ => {
                // The handle is gone (or the status could not be read without reaping): take
                // the rest of the group with the leader, then reap.
                if state.kill_group {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                watch::wait_exit(pid, true).unwrap_or(ExitStatus::from_code(-1))
            }
        };
        state.status = Some(status);
        status
    };
    shared.exited.notify(usize::MAX);
    tracing::debug!(pid = shared.pid, %status, "exited");
    status
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
    /// The child has exited and is kept unreaped while its handle lives. As long as the zombie
    /// exists, its pid, which is also its process group id, cannot be reused, so killing the
    /// group on drop (to take the children it left behind) can never hit a stranger.
    zombie: bool,
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
    /// The cgroup the process runs in, if it has one of its own.
    cgroup: Option<ServiceCgroup>,
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

    /// Kills everything left in the process's cgroup (what its process group signals missed:
    /// descendants that called `setsid` or double forked) and removes the cgroup. Done when
    /// the handle is dropped too; nothing without a cgroup of its own.
    pub(crate) fn remove_cgroup(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            let found = cgroup.remove();
            if found > 0 {
                tracing::debug!(
                    pid = self.shared.pid,
                    found,
                    "killed what was left in its cgroup"
                );
            }
        }
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
        if std::mem::take(&mut state.zombie) {
            let pid = Pid::from_raw(self.shared.pid as i32).expect("a child pid is positive");
            watch::wait_exit(pid, true);
        }
        drop(state);
        if self.kill_on_drop {
            self.remove_cgroup();
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
