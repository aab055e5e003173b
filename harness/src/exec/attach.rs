//! Attaching to services that are already running: the `Attacher` trait and `ManagedService`.

use std::future::Future;
use std::time::Duration;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventSink, EventStream, ExitStatus, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::local::LocalLauncher;
use crate::exec::signal::Signal;
use crate::exec::systemd::SystemdService;

/// How often liveness is polled for services that cannot be waited on directly.
const POLL: Duration = Duration::from_millis(200);

/// Connects to something that is already running, instead of spawning it: its logs become
/// events, and it can be signalled and waited for. Dropping the handle detaches (the service
/// keeps running: we did not start it).
pub trait Attacher: Clone + Send + Sync + 'static {
    /// The handle of an attached service.
    type Handle: ProcessHandle;

    /// Attaches to `service`.
    fn attach(
        &self,
        service: &ManagedService,
    ) -> impl Future<Output = Result<Self::Handle, LaunchError>> + Send;
}

/// A service that runs already, started by someone else.
///
/// ```
/// use harness::exec::ManagedService;
/// let by_pid = ManagedService::pid(4242).log_file("/var/log/app.log");
/// let by_file = ManagedService::pid_file("/run/app.pid");
/// let container = ManagedService::container("postgres-1");
/// let unit = ManagedService::unit("nginx");
/// # let _ = (by_pid, by_file, container, unit);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedService {
    kind: Kind,
    log_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Pid(u32),
    PidFile(String),
    Container(String),
    Unit(String),
}

impl ManagedService {
    /// A process, by pid.
    pub fn pid(pid: u32) -> Self {
        ManagedService {
            kind: Kind::Pid(pid),
            log_file: None,
        }
    }

    /// A process whose pid is written in `path` (read when attaching).
    pub fn pid_file(path: impl Into<String>) -> Self {
        ManagedService {
            kind: Kind::PidFile(path.into()),
            log_file: None,
        }
    }

    /// A Docker container, by name or id: logs from `docker logs`, signals from `docker kill`.
    pub fn container(name: impl Into<String>) -> Self {
        ManagedService {
            kind: Kind::Container(name.into()),
            log_file: None,
        }
    }

    /// A systemd unit: logs from the journal, signals from `systemctl kill`.
    pub fn unit(name: impl Into<String>) -> Self {
        ManagedService {
            kind: Kind::Unit(name.into()),
            log_file: None,
        }
    }

    /// Follows this file as the service's output, instead of (or, for a process, in the absence
    /// of) its own log source. Lines appended after the attach are delivered, none before.
    pub fn log_file(mut self, path: impl Into<String>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// The command that follows the service's output from now on, if it has one. For a log
    /// file, `offset` is its size at attach time: following from that byte, rather than from
    /// the end whenever `tail` gets to open it, loses nothing written in between.
    pub fn follow_command(&self, offset: u64) -> Option<Command> {
        if let Some(path) = &self.log_file {
            return Some(
                Command::new("tail")
                    .args(["-c", &format!("+{}", offset + 1), "-F"])
                    .arg(path),
            );
        }
        match &self.kind {
            Kind::Pid(_) | Kind::PidFile(_) => None,
            Kind::Container(name) => Some(
                Command::new("docker")
                    .args(["logs", "--follow", "--tail", "0"])
                    .arg(name),
            ),
            Kind::Unit(unit) => Some(SystemdService::new(unit.clone()).journal_command()),
        }
    }
}

/// The size of `path` where the launcher runs; 0 if it does not exist yet.
async fn file_size<L: Launcher>(launcher: &L, path: &str) -> Result<u64, LaunchError> {
    let script = format!("wc -c < {} 2>/dev/null || echo 0", crate::exec::quote(path));
    let out = launcher
        .output(&Command::new("sh").args(["-c", &script]))
        .await?;
    Ok(out.stdout_text().trim().parse().unwrap_or(0))
}

/// Attaches through a launcher: the commands that follow logs, send signals and check liveness
/// run wherever the launcher runs them, so a service on a remote host attaches the same way
/// under an `SshLauncher`.
#[derive(Debug, Clone, Default)]
pub struct ServiceAttacher<L>(pub L);

/// Attaches to services on this machine.
pub type LocalAttacher = ServiceAttacher<LocalLauncher>;

impl<L: Launcher> Attacher for ServiceAttacher<L> {
    type Handle = AttachedService<L>;

    async fn attach(&self, service: &ManagedService) -> Result<AttachedService<L>, LaunchError> {
        AttachedService::attach(&self.0, service).await
    }
}

/// A service we attached to.
pub struct AttachedService<L: Launcher> {
    launcher: L,
    service: ManagedService,
    pid: Option<u32>,
    follower: Option<L::Process>,
    events: Option<EventStream>,
    /// Dropped after `Exited`, which ends the event stream.
    sink: Option<EventSink>,
    status: Option<ExitStatus>,
}

impl<L: Launcher> AttachedService<L> {
    async fn attach(launcher: &L, service: &ManagedService) -> Result<Self, LaunchError> {
        let at = launcher.location();
        let pid = match &service.kind {
            Kind::Pid(pid) => Some(*pid),
            Kind::PidFile(path) => {
                let out = launcher
                    .run_checked(
                        &Command::new("cat").arg(path),
                        &format!("read pid file {path} on {at}"),
                    )
                    .await?;
                let text = out.stdout_text();
                Some(text.trim().parse::<u32>().map_err(|_| {
                    LaunchError::Unsupported(format!(
                        "read pid file {path} on {at}: `{}` is not a process id",
                        text.trim()
                    ))
                })?)
            }
            Kind::Container(name) => {
                let inspect = Command::new("docker")
                    .args(["inspect", "--format", "{{.State.Running}} {{.State.Pid}}"])
                    .arg(name);
                let out = launcher.output(&inspect).await?;
                let text = out.stdout_text();
                let mut parts = text.split_whitespace();
                if !out.success() || parts.next() != Some("true") {
                    let reason = if out.success() {
                        "it is not running".to_string()
                    } else {
                        out.stderr_text()
                    };
                    return Err(LaunchError::NoSuchContainer {
                        container: name.clone(),
                        reason,
                    });
                }
                parts.next().and_then(|p| p.parse().ok())
            }
            Kind::Unit(unit) => {
                let st = SystemdService::new(unit.clone()).status(launcher).await?;
                if st.is_stopped() {
                    return Err(LaunchError::Unsupported(format!(
                        "attach to unit {unit} on {at}: it is {}",
                        st.active_state
                    )));
                }
                st.main_pid
            }
        };
        if let (Some(pid), Kind::Pid(_) | Kind::PidFile(_)) = (pid, &service.kind)
            && !alive(launcher, pid).await?
        {
            return Err(LaunchError::AlreadyExited { pid });
        }
        let (sink, events) = EventStream::channel();
        sink.send_one(ProcessEvent::Started {
            pid: pid.unwrap_or(0),
        });
        let offset = match &service.log_file {
            Some(path) => file_size(launcher, path).await?,
            None => 0,
        };
        let follower = match service.follow_command(offset) {
            Some(mut cmd) => {
                cmd.sink = Some(sink.clone());
                cmd.announce_start = false;
                cmd.announce_exit = false;
                Some(launcher.spawn(&cmd).await?)
            }
            None => None,
        };
        Ok(AttachedService {
            launcher: launcher.clone(),
            service: service.clone(),
            pid,
            follower,
            events: Some(events),
            sink: Some(sink),
            status: None,
        })
    }

    async fn finish(&mut self, status: ExitStatus) -> ExitStatus {
        self.status = Some(status);
        if let Some(f) = self.follower.take() {
            // Let the follower deliver the service's last lines before it goes.
            async_io::Timer::after(POLL).await;
            drop(f);
        }
        if let Some(sink) = self.sink.take() {
            sink.send_one(ProcessEvent::Exited(status));
        }
        status
    }
}

/// Whether process `pid` exists where the launcher runs.
async fn alive<L: Launcher>(launcher: &L, pid: u32) -> Result<bool, LaunchError> {
    Ok(launcher
        .output(&Command::new("kill").args(["-0", &pid.to_string()]))
        .await?
        .success())
}

impl<L: Launcher> ProcessHandle for AttachedService<L> {
    fn id(&self) -> Option<u32> {
        self.pid
    }

    fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    async fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        let at = self.launcher.location();
        let (cmd, what) = match (&self.service.kind, self.pid) {
            (Kind::Container(name), _) => (
                Command::new("docker")
                    .arg("kill")
                    .arg(format!("--signal={}", signal.name()))
                    .arg(name),
                format!("container {name}"),
            ),
            (Kind::Unit(unit), _) => (
                SystemdService::new(unit.clone()).kill_command(signal),
                format!("unit {unit}"),
            ),
            (_, Some(pid)) => (
                Command::new("kill").args(["-s", signal.name(), &pid.to_string()]),
                format!("process {pid}"),
            ),
            (_, None) => {
                return Err(LaunchError::Unsupported(
                    "signal a service without a process id".into(),
                ));
            }
        };
        self.launcher
            .run_checked(&cmd, &format!("send {signal} to {what} on {at}"))
            .await
            .map(|_| ())
    }

    async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let status = match self.service.kind.clone() {
            Kind::Container(name) => {
                let out = self
                    .launcher
                    .output(&Command::new("docker").arg("wait").arg(&name))
                    .await?;
                out.stdout_text()
                    .trim()
                    .parse()
                    .map(ExitStatus::from_code)
                    .unwrap_or(ExitStatus::unknown())
            }
            Kind::Unit(unit) => {
                let svc = SystemdService::new(unit);
                loop {
                    let st = svc.status(&self.launcher).await?;
                    if st.is_stopped() {
                        break st.exit_status();
                    }
                    async_io::Timer::after(POLL).await;
                }
            }
            Kind::Pid(_) | Kind::PidFile(_) => {
                let pid = self.pid.expect("pid services have a pid");
                while alive(&self.launcher, pid).await? {
                    async_io::Timer::after(POLL).await;
                }
                // Not our child: its exit code went to its own parent.
                ExitStatus::unknown()
            }
        };
        Ok(self.finish(status).await)
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.status
    }
}

impl<L: Launcher> std::fmt::Debug for AttachedService<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedService")
            .field("service", &self.service)
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn attaches_to_a_process_follows_its_log_and_signals_it() {
        smol::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("app.log");
            // Written before the attach: not the attached service's news, so not delivered.
            std::fs::write(&log, "written before the attach\n").unwrap();
            // Started by someone else: a plain std child, not through a launcher.
            let mut other = std::process::Command::new("sh")
                .arg("-c")
                .arg("trap 'echo got-term >> \"$0\"; exit 0' TERM; while :; do sleep 0.05; done")
                .arg(&log)
                .spawn()
                .unwrap();
            let svc = ManagedService::pid(other.id()).log_file(log.to_str().unwrap());
            let mut h = LocalAttacher::default().attach(&svc).await.unwrap();
            let mut events = h.take_events().unwrap();
            assert_eq!(
                events.recv().await,
                Some(ProcessEvent::Started { pid: other.id() })
            );

            // Written before `tail` may have opened the file: still delivered, because it follows
            // from the size the file had when we attached.
            writeln!(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
                "hello from the service"
            )
            .unwrap();
            assert_eq!(
                events.recv().await,
                Some(ProcessEvent::Stdout("hello from the service".into()))
            );

            h.terminate().await.unwrap();
            // Reap it ourselves (we are its parent), so `kill -0` sees it gone.
            other.wait().unwrap();
            assert_eq!(h.wait().await.unwrap(), ExitStatus::unknown());
            let rest = events.collect().await;
            assert_eq!(rest.stdout, ["got-term"]);
            assert_eq!(rest.status, Some(ExitStatus::unknown()));
        });
    }

    #[test]
    fn attaching_to_nothing_fails_clearly() {
        smol::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let pid_file = dir.path().join("app.pid");
            std::fs::write(&pid_file, "not-a-pid\n").unwrap();
            let e = LocalAttacher::default()
                .attach(&ManagedService::pid_file(pid_file.to_str().unwrap()))
                .await
                .unwrap_err();
            assert!(
                e.to_string().contains("app.pid") && e.to_string().contains("not-a-pid"),
                "{e}"
            );
            let e = LocalAttacher::default()
                .attach(&ManagedService::pid_file("/no/such.pid"))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("/no/such.pid"), "{e}");
            // A pid that cannot exist (above pid_max).
            let e = LocalAttacher::default()
                .attach(&ManagedService::pid(4_999_999))
                .await
                .unwrap_err();
            assert!(
                matches!(e, LaunchError::AlreadyExited { pid: 4_999_999 }),
                "{e}"
            );
        });
    }
}
