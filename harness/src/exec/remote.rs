//! Processes that run at the far end of a shell transport (ssh, `docker exec`).
//!
//! The command is wrapped in a small POSIX sh script that (1) checks the working directory and
//! the program, so those errors are reported by name, (2) starts the program in a session of its
//! own and reports its pid on stderr before the program writes anything, and (3) runs a watchdog
//! in a session of its own that reads the transport's stdin: when the connection drops, or the
//! local client is killed, stdin reaches end of file and the watchdog kills the remote process
//! group. The watchdog reports itself once it is in its own session, and a spawn returns only
//! after both reports, so that a handle dropped at once still finds a watchdog to fire. Signals
//! travel as a second `kill` command over the same transport.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventStream, ExitStatus, OutputStream, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::pipe::{ChildInput, ChildOutput};
use crate::exec::quote::quote;
use crate::exec::signal::Signal;

const PID_TAG: &str = "__HARNESS_PID__ ";
const ERR_TAG: &str = "__HARNESS_ERR__ ";
/// The watchdog's report: it runs in a session of its own, out of reach of the client's death.
const WATCHDOG_TAG: &str = "__HARNESS_WATCHDOG__";
/// How long stdout lines wait for the pid report, so that `Started` is always the first event.
const START_ORDER_WAIT: Duration = Duration::from_secs(10);
/// How long a client that has exited may take to have its report read: its reader thread can
/// lag behind the exit.
const REPORT_GRACE: Duration = Duration::from_millis(500);

/// How a command string reaches a POSIX shell somewhere else.
pub trait Transport: Clone + Send + Sync + 'static {
    /// The launcher that runs the local client (`ssh`, `docker`).
    type Inner: Launcher;

    /// The inner launcher.
    fn inner(&self) -> &Self::Inner;

    /// The local command that runs `script` with `sh -c` at the far end, with its stdin, stdout
    /// and stderr connected to the local client's. Build it with `base.rewrap(..)` so the
    /// caller's I/O settings survive.
    fn shell_command(&self, script: &str, base: &Command) -> Command;

    /// Where the far end is, for messages.
    fn location(&self) -> String;

    /// The error to report when the client exited before the remote program started.
    fn classify_failure(&self, status: ExitStatus, stderr: &str) -> LaunchError;
}

/// The wrapper script for `cmd`. With `watchdog`, stdin is reserved for the watchdog and the
/// program reads `/dev/null`; without, the program gets the transport's stdin.
pub(crate) fn wrapper_script(cmd: &Command, watchdog: bool) -> String {
    let mut run = String::from("exec env");
    if cmd.env_clear {
        run.push_str(" -i");
    }
    for (k, v) in &cmd.env {
        run.push(' ');
        run.push_str(&quote(&format!("{k}={v}")));
    }
    run.push(' ');
    run.push_str(&quote(&cmd.program));
    for a in &cmd.args {
        run.push(' ');
        run.push_str(&quote(a));
    }
    // The program's own shell prints its pid, then execs the program: the pid is known before
    // the program writes a byte, and it is the id of the new session and process group.
    let inner = format!("printf '{PID_TAG}%s\\n' \"$$\" >&2; {run}");
    let mut s = String::new();
    if let Some(dir) = &cmd.current_dir {
        s.push_str(&format!(
            "cd {} 2>/dev/null || {{ echo '{ERR_TAG}nodir' >&2; exit 127; }}\n",
            quote(dir)
        ));
    }
    s.push_str(&format!(
        "command -v {} >/dev/null 2>&1 || {{ echo '{ERR_TAG}notfound' >&2; exit 127; }}\n",
        quote(&cmd.program)
    ));
    if !watchdog {
        // A background job rather than `exec setsid`: setsid forks, and its parent exits at
        // once, when the caller leads a process group, as the login shell of an ssh session
        // does; a background job never leads one. Its stdin is passed explicitly, because a
        // background job's stdin is otherwise /dev/null.
        s.push_str(&format!(
            "exec 3<&0\n\
             setsid sh -c {} <&3 3<&- &\n\
             pid=$!\n\
             exec 3<&-\n\
             wait \"$pid\"\n",
            quote(&inner)
        ));
        return s;
    }
    s.push_str(&format!(
        "exec 3<&0 </dev/null\n\
         setsid sh -c {} 3<&- &\n\
         pid=$!\n\
         setsid sh -c 'echo {WATCHDOG_TAG} >&2; exec 2>/dev/null; while read -r _; do :; done; kill -KILL \"-$1\"' watchdog \"$pid\" <&3 >/dev/null &\n\
         wd=$!\n\
         exec 3<&-\n\
         wait \"$pid\"; rc=$?\n\
         kill \"$wd\" 2>/dev/null\n\
         exit \"$rc\"\n",
        quote(&inner)
    ));
    s
}

/// What the wrapper reported before the program ran.
#[derive(Debug, Clone)]
enum Report {
    Pid(u32),
    NoDir,
    NotFound,
    /// No report came before the client ended; nobody waits for one any more.
    Abandoned,
}

#[derive(Default)]
struct Ready {
    report: Mutex<Option<Report>>,
    /// Whether the watchdog has reported (with a watchdog only).
    watchdog: Mutex<bool>,
    cv: Condvar,
    /// Stderr lines seen before the report: the client's own complaints (ssh, docker).
    early_stderr: Mutex<Vec<String>>,
}

impl Ready {
    /// Records that the watchdog runs in its own session.
    fn watchdog_started(&self) {
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits until the watchdog has reported, for at most `timeout`.
    fn wait_watchdog(&self, timeout: Duration) {
        let guard = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.cv.wait_timeout_while(guard, timeout, |seen| !*seen);
    }

    fn set(&self, r: Report) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.cv.notify_all();
    }

    /// Ends every wait for a report that has not come.
    fn abandon(&self) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if report.is_none() {
            *report = Some(Report::Abandoned);
        }
        self.cv.notify_all();
    }

    fn get(&self) -> Option<Report> {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.report.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.cv.wait_timeout_while(guard, timeout, |r| r.is_none());
    }
}

/// Spawns `cmd` at the far end of `transport`.
pub(crate) async fn spawn<T: Transport>(
    transport: &T,
    cmd: &Command,
) -> Result<RemoteProcess<T>, LaunchError> {
    if cmd.program.is_empty() {
        return Err(LaunchError::EmptyProgram);
    }
    let watchdog = !cmd.stdin;
    let script = wrapper_script(cmd, watchdog);

    let ready = Arc::new(Ready::default());
    let (sink, events) = match &cmd.sink {
        Some(sink) => (sink.clone(), None),
        None => {
            let (sink, events) = EventStream::channel_with(cmd.event_capacity);
            (sink, Some(events))
        }
    };
    let tap_ready = ready.clone();
    let tap_sink = sink.clone();
    let user_tap = cmd.tap.clone();
    let tap = move |stream: OutputStream, line: &str| -> bool {
        if watchdog && stream == OutputStream::Stderr && line == WATCHDOG_TAG {
            tap_ready.watchdog_started();
            return false;
        }
        if stream == OutputStream::Stdout {
            if tap_ready.get().is_none() {
                tap_ready.wait(START_ORDER_WAIT);
            }
        } else if tap_ready.get().is_none() {
            if let Some(pid) = line.strip_prefix(PID_TAG) {
                let pid = pid.trim().parse().unwrap_or(0);
                // Sent before `set`, so `Started` precedes every stdout line.
                tap_sink.send_one(ProcessEvent::Started { pid });
                tap_ready.set(Report::Pid(pid));
                return false;
            }
            match line.strip_prefix(ERR_TAG) {
                Some("nodir") => {
                    tap_ready.set(Report::NoDir);
                    return false;
                }
                Some("notfound") => {
                    tap_ready.set(Report::NotFound);
                    return false;
                }
                _ => tap_ready
                    .early_stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.to_string()),
            }
        }
        user_tap.as_ref().is_none_or(|t| t(stream, line))
    };

    let mut local_cmd = transport.shell_command(&script, cmd);
    local_cmd.sink = Some(sink);
    local_cmd.tap = Some(Arc::new(tap));
    local_cmd.announce_start = false;
    if watchdog {
        local_cmd.stdin = true;
    }
    let mut client = transport.inner().spawn(&local_cmd).await?;

    // Wait for the wrapper's report, or for the client to give up first.
    let status = {
        let wait_ready = ready.clone();
        let reported = blocking::unblock(move || {
            wait_ready.wait(Duration::from_secs(24 * 3600));
        });
        futures_lite::future::or(
            async {
                reported.await;
                None
            },
            async { client.wait().await.ok() },
        )
        .await
    };
    if ready.get().is_none() {
        ready.wait(REPORT_GRACE);
    }
    if watchdog && status.is_none() && matches!(ready.get(), Some(Report::Pid(_))) {
        // The handle may be dropped as soon as it is returned: the watchdog must be out of the
        // client's reach by then. A client that ends first needs no watchdog.
        let wait_ready = ready.clone();
        let reported = blocking::unblock(move || wait_ready.wait_watchdog(START_ORDER_WAIT));
        futures_lite::future::or(reported, async {
            let _ = client.wait().await;
        })
        .await;
        // Also releases the blocking thread above when the client won the race.
        ready.watchdog_started();
    }
    // Also releases the blocking thread above when the client won the race.
    ready.abandon();
    let host = transport.location();
    match ready.get() {
        Some(Report::Pid(pid)) => {
            let keepalive = if watchdog { client.take_stdin() } else { None };
            let stdin = if watchdog { None } else { client.take_stdin() };
            let stdout = client.take_stdout();
            Ok(RemoteProcess {
                transport: transport.clone(),
                client,
                pid,
                events,
                stdin,
                stdout,
                _keepalive: keepalive,
            })
        }
        Some(Report::NoDir) => Err(LaunchError::MissingWorkDir {
            program: cmd.program.clone(),
            dir: cmd.current_dir.clone().unwrap_or_default(),
            host: Some(host),
        }),
        Some(Report::NotFound) => Err(LaunchError::NotFound {
            program: cmd.program.clone(),
            host: Some(host),
        }),
        None | Some(Report::Abandoned) => {
            // The client ended without a report: the connection (or container) failed. Its own
            // words are in the stderr lines collected so far.
            let stderr = ready
                .early_stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join("\n");
            let status = status.unwrap_or(ExitStatus::from_code(-1));
            Err(transport.classify_failure(status, &stderr))
        }
    }
}

/// A process running at the far end of a [`Transport`] (over SSH, inside a container).
///
/// Dropping it kills the local client; the remote watchdog then kills the remote process group.
pub struct RemoteProcess<T: Transport> {
    /// The watchdog's end of the connection, held open while the handle lives. Declared first
    /// so it closes first on drop: the watchdog sees end of file even if the client dies next.
    _keepalive: Option<ChildInput>,
    transport: T,
    client: <T::Inner as Launcher>::Process,
    pid: u32,
    events: Option<EventStream>,
    stdin: Option<ChildInput>,
    stdout: Option<ChildOutput>,
}

impl<T: Transport> RemoteProcess<T> {
    /// The remote process id (also its session and process group id at the far end).
    pub fn remote_pid(&self) -> u32 {
        self.pid
    }

    /// The local client process (`ssh`, `docker exec`).
    pub fn client(&self) -> &<T::Inner as Launcher>::Process {
        &self.client
    }
}

impl<T: Transport> ProcessHandle for RemoteProcess<T> {
    fn id(&self) -> Option<u32> {
        Some(self.pid)
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
        if self.client.try_status().is_some() {
            return Err(LaunchError::AlreadyExited { pid: self.pid });
        }
        // `kill -SIG -PGID`: the one spelling dash, bash and busybox sh all accept (dash needs
        // `--` after `-s SIG`, busybox rejects it).
        let script = format!("kill -{} -{}", signal.name(), self.pid);
        let cmd = self.transport.shell_command(&script, &Command::new("sh"));
        let doing = format!(
            "send {signal} to process group {} on {}",
            self.pid,
            self.transport.location()
        );
        self.transport
            .inner()
            .run_checked(&cmd, &doing)
            .await
            .map(|_| ())
    }

    async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        self.client.wait().await
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.client.try_status()
    }
}

impl<T: Transport> std::fmt::Debug for RemoteProcess<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteProcess")
            .field("location", &self.transport.location())
            .field("pid", &self.pid)
            .field("status", &self.try_status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::local::LocalLauncher;

    /// The far end is a local `sh`: the wrapper logic, without a network.
    #[derive(Clone)]
    struct LocalShell;

    impl Transport for LocalShell {
        type Inner = LocalLauncher;
        fn inner(&self) -> &LocalLauncher {
            &LocalLauncher
        }
        fn shell_command(&self, script: &str, base: &Command) -> Command {
            base.rewrap("sh", vec!["-c".into(), script.into()])
        }
        fn location(&self) -> String {
            "local sh".into()
        }
        fn classify_failure(&self, status: ExitStatus, stderr: &str) -> LaunchError {
            LaunchError::Unreachable {
                host: "local sh".into(),
                reason: format!("{status}: {stderr}"),
            }
        }
    }

    #[test]
    fn started_comes_first_then_output_then_exit() {
        smol::block_on(async {
            let cmd = Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .env("X", "1");
            let mut p = spawn(&LocalShell, &cmd).await.unwrap();
            let mut events = p.take_events().unwrap();
            let first = events.recv().await.unwrap();
            assert_eq!(
                first,
                ProcessEvent::Started {
                    pid: p.remote_pid()
                }
            );
            let out = events.collect().await;
            assert_eq!(out.stdout, ["out"]);
            assert_eq!(out.stderr, ["err"]);
            assert_eq!(out.status, Some(ExitStatus::from_code(3)));
        });
    }

    #[test]
    fn missing_program_and_dir_are_named() {
        smol::block_on(async {
            let err = spawn(&LocalShell, &Command::new("no-such-program-xyz"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, LaunchError::NotFound { ref program, .. } if program == "no-such-program-xyz"),
                "{err}"
            );
            let err = spawn(
                &LocalShell,
                &Command::new("true").current_dir("/no/such/dir"),
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, LaunchError::MissingWorkDir { ref dir, .. } if dir == "/no/such/dir"),
                "{err}"
            );
        });
    }

    #[test]
    fn signal_reaches_the_remote_group_and_drop_fires_the_watchdog() {
        smol::block_on(async {
            let mut p = spawn(&LocalShell, &Command::new("sleep").arg("30"))
                .await
                .unwrap();
            p.terminate().await.unwrap();
            let status = p.wait().await.unwrap();
            assert_eq!(status.code(), Some(128 + 15));

            let p = spawn(&LocalShell, &Command::new("sleep").arg("31"))
                .await
                .unwrap();
            let pid = p.remote_pid() as i32;
            drop(p);
            // Gone, or a zombie: the killed process is not our child, and whoever adopted it
            // (PID 1 of a container, say) may reap it late.
            let gone = (0..250).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Err(_) => true,
                    Ok(stat) => stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z')),
                }
            });
            assert!(gone, "remote process {pid} outlived its handle");
        });
    }
}
