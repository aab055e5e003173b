//! systemd units as targets: `SystemdService` (systemctl) and `SystemdPortable` (portablectl).
//!
//! Both run the systemd command lines through a launcher, so a unit on a remote host is the same
//! target under `SshLauncher`. Their command lines are unit-tested here; tests/systemd_executor.rs
//! runs them against a real systemd, PID 1 of a Debian container made with debootstrap, through
//! `DockerExecLauncher`: installed, transient and portable units, their states, signals and
//! journals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::exec::command::Command;
use crate::exec::docker::forward_events;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventStream, ExitStatus, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::signal::Signal;
use crate::exec::target::Target;

/// How often a unit's state is polled while waiting for it to stop.
const POLL: Duration = Duration::from_millis(250);

/// Which systemd instance a unit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SystemdScope {
    /// The system manager (`systemctl`).
    #[default]
    System,
    /// The calling user's manager (`systemctl --user`).
    User,
}

/// A systemd service: an installed unit, or a transient one made from a [`Command`] with
/// `systemd-run`.
///
/// Launching starts the unit and follows its journal as events; the handle signals it with
/// `systemctl kill`, waits until it is inactive, and stops it when dropped.
///
/// ```
/// use harness::exec::{Command, SystemdService};
/// let svc = SystemdService::new("nginx.service");
/// assert_eq!(svc.start_command().display(), "systemctl start nginx.service");
/// let t = SystemdService::transient("echo-1", Command::new("/usr/bin/echo").arg("hi"));
/// assert_eq!(
///     t.start_command().display(),
///     "systemd-run --unit=echo-1.service --quiet --no-block -- /usr/bin/echo hi"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct SystemdService {
    unit: String,
    scope: SystemdScope,
    transient: Option<Command>,
}

impl SystemdService {
    /// An installed unit. A name without a suffix gets `.service`.
    pub fn new(unit: impl Into<String>) -> Self {
        SystemdService {
            unit: unit_name(unit.into()),
            scope: SystemdScope::System,
            transient: None,
        }
    }

    /// A transient unit named `unit` that runs `command` (`systemd-run`), gone once it stops
    /// and its handle has read how it ended.
    pub fn transient(unit: impl Into<String>, command: Command) -> Self {
        SystemdService {
            unit: unit_name(unit.into()),
            scope: SystemdScope::System,
            transient: Some(command),
        }
    }

    /// Talks to the user's manager instead of the system's.
    pub fn user(mut self) -> Self {
        self.scope = SystemdScope::User;
        self
    }

    /// The unit name, with its suffix.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    fn systemctl(&self, verb: &str) -> Command {
        let mut c = Command::new("systemctl");
        if self.scope == SystemdScope::User {
            c = c.arg("--user");
        }
        c.arg(verb)
    }

    /// Starts the unit (`systemctl start`, or `systemd-run` for a transient unit).
    pub fn start_command(&self) -> Command {
        match &self.transient {
            None => self.systemctl("start").arg(&self.unit),
            Some(cmd) => {
                let mut c = Command::new("systemd-run");
                if self.scope == SystemdScope::User {
                    c = c.arg("--user");
                }
                // Not `--collect`: systemd would unload a failed unit at once, and with it its
                // exit status; the handle resets it once it has read that (`wait`).
                c = c
                    .arg(format!("--unit={}", self.unit))
                    .args(["--quiet", "--no-block"]);
                if let Some(dir) = cmd.get_current_dir() {
                    c = c.arg(format!("--working-directory={dir}"));
                }
                for (k, v) in cmd.get_envs() {
                    c = c.arg(format!("--setenv={k}={v}"));
                }
                c.arg("--")
                    .arg(cmd.get_program())
                    .args(cmd.get_args().iter().cloned())
            }
        }
    }

    /// Stops the unit.
    pub fn stop_command(&self) -> Command {
        self.systemctl("stop").arg(&self.unit)
    }

    /// Restarts the unit.
    pub fn restart_command(&self) -> Command {
        self.systemctl("restart").arg(&self.unit)
    }

    /// Enables the unit at boot.
    pub fn enable_command(&self) -> Command {
        self.systemctl("enable").arg(&self.unit)
    }

    /// Disables the unit at boot.
    pub fn disable_command(&self) -> Command {
        self.systemctl("disable").arg(&self.unit)
    }

    /// Forgets that the unit failed, which unloads a failed transient unit.
    pub fn reset_failed_command(&self) -> Command {
        self.systemctl("reset-failed").arg(&self.unit)
    }

    /// Sends `signal` to every process of the unit.
    pub fn kill_command(&self, signal: Signal) -> Command {
        self.systemctl("kill")
            .arg(format!("--signal={}", signal.name()))
            .arg(&self.unit)
    }

    /// Prints the unit's state as `KEY=value` lines: active state, result, main pid, exit status.
    pub fn status_command(&self) -> Command {
        self.systemctl("show")
            .arg("--property=ActiveState,SubState,Result,MainPID,ExecMainStatus")
            .arg(&self.unit)
    }

    /// Follows the unit's journal from now on, message text only.
    pub fn journal_command(&self) -> Command {
        self.journal_follow("--lines=0")
    }

    /// Follows the unit's journal from the entry after `cursor`, or from its start if the
    /// journal was empty (`None`).
    fn journal_after_command(&self, cursor: Option<&str>) -> Command {
        match cursor {
            Some(cursor) => self.journal_follow(&format!("--after-cursor={cursor}")),
            None => self.journal_follow("--lines=all"),
        }
    }

    fn journal_follow(&self, from: &str) -> Command {
        self.journalctl()
            .args(["--follow", from, "--output=cat", "--no-pager"])
            .arg(format!("--unit={}", self.unit))
    }

    /// Prints the cursor of the journal's last entry, as `-- cursor: ...`, and nothing if the
    /// journal is empty.
    fn journal_cursor_command(&self) -> Command {
        self.journalctl()
            .args(["--lines=0", "--show-cursor", "--quiet", "--no-pager"])
    }

    fn journalctl(&self) -> Command {
        let c = Command::new("journalctl");
        if self.scope == SystemdScope::User {
            c.arg("--user")
        } else {
            c
        }
    }

    /// Where the journal ends now: `Some(cursor)` (`None` in it if the journal is empty), or
    /// `None` if it cannot be read.
    async fn journal_end<L: Launcher>(&self, launcher: &L) -> Option<Option<String>> {
        let out = launcher
            .output(&self.journal_cursor_command())
            .await
            .ok()
            .filter(|o| o.success())?;
        Some(
            out.stdout
                .iter()
                .find_map(|l| l.strip_prefix("-- cursor: "))
                .map(str::to_string),
        )
    }

    /// Runs the status command through `launcher` and parses it.
    pub async fn status<L: Launcher>(&self, launcher: &L) -> Result<UnitStatus, LaunchError> {
        let out = launcher
            .run_checked(
                &self.status_command(),
                &format!(
                    "read the state of unit {} on {}",
                    self.unit,
                    launcher.location()
                ),
            )
            .await?;
        Ok(UnitStatus::parse(&out.stdout_text()))
    }
}

fn unit_name(unit: String) -> String {
    const SUFFIXES: [&str; 6] = [
        ".service", ".socket", ".target", ".timer", ".mount", ".scope",
    ];
    if SUFFIXES.iter().any(|s| unit.ends_with(s)) {
        unit
    } else {
        format!("{unit}.service")
    }
}

/// A unit's state, as `systemctl show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStatus {
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, ...
    pub active_state: String,
    /// The finer state (`running`, `exited`, `dead`, ...).
    pub sub_state: String,
    /// `success`, or why it failed (`exit-code`, `signal`, ...).
    pub result: String,
    /// The main process id, if it runs.
    pub main_pid: Option<u32>,
    /// The main process's exit code or signal, once it ended.
    pub exec_main_status: Option<i32>,
}

impl UnitStatus {
    /// Parses `KEY=value` lines.
    pub fn parse(text: &str) -> Self {
        let mut s = UnitStatus::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "ActiveState" => s.active_state = v.to_string(),
                "SubState" => s.sub_state = v.to_string(),
                "Result" => s.result = v.to_string(),
                "MainPID" => s.main_pid = v.parse().ok().filter(|&p| p != 0),
                "ExecMainStatus" => s.exec_main_status = v.parse().ok(),
                _ => {}
            }
        }
        s
    }

    /// Whether the unit has stopped (or failed).
    pub fn is_stopped(&self) -> bool {
        matches!(self.active_state.as_str(), "inactive" | "failed")
    }

    /// The stop as an exit status: the main process's status, code 0 for a clean stop.
    pub fn exit_status(&self) -> ExitStatus {
        match (self.result.as_str(), self.exec_main_status) {
            ("signal" | "core-dump", Some(sig)) => ExitStatus::from_signal(sig),
            (_, Some(code)) => ExitStatus::from_code(code),
            ("success", None) => ExitStatus::from_code(0),
            _ => ExitStatus::from_code(1),
        }
    }
}

/// A portable service image attached with `portablectl`.
///
/// ```
/// use harness::exec::SystemdPortable;
/// let p = SystemdPortable::new("/var/lib/portables/foo_1.raw").profile("strict").runtime();
/// assert_eq!(
///     p.attach_command().display(),
///     "portablectl attach --now --runtime --profile=strict /var/lib/portables/foo_1.raw"
/// );
/// assert_eq!(p.unit(), "foo.service");
/// ```
#[derive(Debug, Clone)]
pub struct SystemdPortable {
    image: String,
    profile: Option<String>,
    runtime: bool,
    unit: Option<String>,
}

impl SystemdPortable {
    /// A portable image (a directory or a `.raw` file).
    pub fn new(image: impl Into<String>) -> Self {
        SystemdPortable {
            image: image.into(),
            profile: None,
            runtime: false,
            unit: None,
        }
    }

    /// The security profile (`default`, `strict`, `trusted`, `nonetwork`).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Attaches until the next reboot only (`--runtime`).
    pub fn runtime(mut self) -> Self {
        self.runtime = true;
        self
    }

    /// The unit to follow and control; by default the image name (up to the first `_` or `.`)
    /// plus `.service`, as portablectl names it.
    pub fn with_unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit_name(unit.into()));
        self
    }

    /// The main unit.
    pub fn unit(&self) -> String {
        if let Some(u) = &self.unit {
            return u.clone();
        }
        let base = self.image.rsplit('/').next().unwrap_or(&self.image);
        let stem = base.split(['_', '.']).next().unwrap_or(base);
        format!("{stem}.service")
    }

    /// Attaches the image and starts its units.
    pub fn attach_command(&self) -> Command {
        let mut c = Command::new("portablectl").args(["attach", "--now"]);
        if self.runtime {
            c = c.arg("--runtime");
        }
        if let Some(p) = &self.profile {
            c = c.arg(format!("--profile={p}"));
        }
        c.arg(&self.image)
    }

    /// Stops the image's units and detaches it.
    pub fn detach_command(&self) -> Command {
        let mut c = Command::new("portablectl").args(["detach", "--now"]);
        if self.runtime {
            c = c.arg("--runtime");
        }
        c.arg(&self.image)
    }

    /// Lists attached images.
    pub fn list_command() -> Command {
        Command::new("portablectl").args(["list", "--no-legend", "--no-pager"])
    }

    fn service(&self) -> SystemdService {
        SystemdService::new(self.unit())
    }
}

impl Target for SystemdService {
    type Handle<L: Launcher> = UnitHandle<L>;

    async fn launch<L: Launcher>(&self, launcher: &L) -> Result<UnitHandle<L>, LaunchError> {
        UnitHandle::start(
            launcher,
            self.clone(),
            self.start_command(),
            self.stop_command(),
        )
        .await
    }
}

impl Target for SystemdPortable {
    type Handle<L: Launcher> = UnitHandle<L>;

    async fn launch<L: Launcher>(&self, launcher: &L) -> Result<UnitHandle<L>, LaunchError> {
        UnitHandle::start(
            launcher,
            self.service(),
            self.attach_command(),
            self.detach_command(),
        )
        .await
    }
}

/// A running systemd unit: its journal as events, `systemctl kill` for signals.
pub struct UnitHandle<L: Launcher> {
    launcher: L,
    service: SystemdService,
    stop: Command,
    journal: L::Process,
    events: Option<EventStream>,
    /// How the unit ended, once `wait` saw it; the journal's forwarder sends it as `Exited`
    /// after the journal's last line.
    ended: Arc<Mutex<Option<ExitStatus>>>,
    status: Option<ExitStatus>,
    main_pid: Option<u32>,
}

impl<L: Launcher> UnitHandle<L> {
    async fn start(
        launcher: &L,
        service: SystemdService,
        start: Command,
        stop: Command,
    ) -> Result<Self, LaunchError> {
        // Follow the journal from where it ends before the start, so no early line is missed
        // however long journalctl takes to open it. Its lines wait in its own stream until the
        // unit's `Started` has gone first; a remote launcher reports the journal process's own
        // start, which the forwarder drops.
        let mut journal_cmd = match service.journal_end(launcher).await {
            Some(cursor) => service.journal_after_command(cursor.as_deref()),
            None => service.journal_command(),
        };
        journal_cmd.announce_start = false;
        journal_cmd.announce_exit = false;
        let mut journal = launcher.spawn(&journal_cmd).await?;
        let lines = journal
            .take_events()
            .expect("a fresh handle has its events");
        let doing = format!("start unit {} on {}", service.unit(), launcher.location());
        launcher.run_checked(&start, &doing).await?;
        let main_pid = service.status(launcher).await.ok().and_then(|s| s.main_pid);
        let (sink, events) = EventStream::channel();
        let ended = Arc::new(Mutex::new(None));
        let exit = ended.clone();
        forward_events(
            lines,
            sink,
            ProcessEvent::Started {
                pid: main_pid.unwrap_or(0),
            },
            "harness-unit-journal".into(),
            move |_| *exit.lock().unwrap_or_else(|e| e.into_inner()),
        )?;
        Ok(UnitHandle {
            launcher: launcher.clone(),
            service,
            stop,
            journal,
            events: Some(events),
            ended,
            status: None,
            main_pid,
        })
    }

    /// The unit name.
    pub fn unit(&self) -> &str {
        self.service.unit()
    }

    /// Stops the unit (or detaches the portable image) and waits for it.
    pub async fn stop(&mut self) -> Result<ExitStatus, LaunchError> {
        let doing = format!(
            "stop unit {} on {}",
            self.service.unit(),
            self.launcher.location()
        );
        self.launcher.run_checked(&self.stop, &doing).await?;
        self.wait().await
    }
}

impl<L: Launcher> ProcessHandle for UnitHandle<L> {
    fn id(&self) -> Option<u32> {
        self.main_pid
    }

    fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    async fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        let doing = format!(
            "send {signal} to unit {} on {}",
            self.service.unit(),
            self.launcher.location()
        );
        self.launcher
            .run_checked(&self.service.kill_command(signal), &doing)
            .await
            .map(|_| ())
    }

    async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        loop {
            let st = self.service.status(&self.launcher).await?;
            if st.is_stopped() {
                let status = st.exit_status();
                self.status = Some(status);
                if self.service.transient.is_some() {
                    // A failed transient unit stays loaded until this; a clean one is gone.
                    let _ = self
                        .launcher
                        .output(&self.service.reset_failed_command())
                        .await;
                }
                *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                // Ends the journal's stream, and with it the events, after `Exited`.
                let _ = self.journal.kill().await;
                return Ok(status);
            }
            async_io::Timer::after(POLL).await;
        }
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.status
    }
}

impl<L: Launcher> Drop for UnitHandle<L> {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // We started it, so we stop it; without awaiting, on a thread of its own.
        let launcher = self.launcher.clone();
        let stop = self.stop.clone();
        let reset = self
            .service
            .transient
            .is_some()
            .then(|| self.service.reset_failed_command());
        let _ = std::thread::Builder::new()
            .name("harness-unit-stop".into())
            .spawn(move || {
                futures_lite::future::block_on(async {
                    let _ = launcher.output(&stop).await;
                    if let Some(reset) = reset {
                        let _ = launcher.output(&reset).await;
                    }
                })
            });
    }
}

impl<L: Launcher> std::fmt::Debug for UnitHandle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitHandle")
            .field("unit", &self.service.unit())
            .field("status", &self.status)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(c: &Command) -> String {
        c.display()
    }

    #[test]
    fn service_command_lines() {
        let s = SystemdService::new("postgresql");
        assert_eq!(s.unit(), "postgresql.service");
        assert_eq!(
            line(&s.start_command()),
            "systemctl start postgresql.service"
        );
        assert_eq!(line(&s.stop_command()), "systemctl stop postgresql.service");
        assert_eq!(
            line(&s.reset_failed_command()),
            "systemctl reset-failed postgresql.service"
        );
        assert_eq!(
            line(&s.restart_command()),
            "systemctl restart postgresql.service"
        );
        assert_eq!(
            line(&s.enable_command()),
            "systemctl enable postgresql.service"
        );
        assert_eq!(
            line(&s.disable_command()),
            "systemctl disable postgresql.service"
        );
        assert_eq!(
            line(&s.kill_command(Signal::Reload)),
            "systemctl kill --signal=HUP postgresql.service"
        );
        assert_eq!(
            line(&s.status_command()),
            "systemctl show --property=ActiveState,SubState,Result,MainPID,ExecMainStatus postgresql.service"
        );
        assert_eq!(
            line(&s.journal_command()),
            "journalctl --follow --lines=0 --output=cat --no-pager --unit=postgresql.service"
        );
        assert_eq!(
            line(&s.journal_after_command(Some("s=1;i=2"))),
            "journalctl --follow '--after-cursor=s=1;i=2' --output=cat --no-pager --unit=postgresql.service"
        );
        assert_eq!(
            line(&s.journal_after_command(None)),
            "journalctl --follow --lines=all --output=cat --no-pager --unit=postgresql.service"
        );
        assert_eq!(
            line(&s.journal_cursor_command()),
            "journalctl --lines=0 --show-cursor --quiet --no-pager"
        );
        let u = SystemdService::new("app.socket").user();
        assert_eq!(
            line(&u.start_command()),
            "systemctl --user start app.socket"
        );
        assert_eq!(
            line(&u.journal_command()),
            "journalctl --user --follow --lines=0 --output=cat --no-pager --unit=app.socket"
        );
    }

    #[test]
    fn transient_unit_carries_env_and_dir() {
        let cmd = Command::new("/srv/app")
            .args(["--port", "8080"])
            .env("A", "x y")
            .current_dir("/srv");
        let t = SystemdService::transient("app", cmd);
        assert_eq!(
            line(&t.start_command()),
            "systemd-run --unit=app.service --quiet --no-block --working-directory=/srv '--setenv=A=x y' -- /srv/app --port 8080"
        );
    }

    #[test]
    fn portable_command_lines() {
        let p = SystemdPortable::new("/var/lib/portables/web_2.1.raw");
        assert_eq!(p.unit(), "web.service");
        assert_eq!(
            line(&p.attach_command()),
            "portablectl attach --now /var/lib/portables/web_2.1.raw"
        );
        assert_eq!(
            line(&p.detach_command()),
            "portablectl detach --now /var/lib/portables/web_2.1.raw"
        );
        assert_eq!(
            line(&SystemdPortable::list_command()),
            "portablectl list --no-legend --no-pager"
        );
        assert_eq!(p.clone().with_unit("web-api").unit(), "web-api.service");
    }

    #[test]
    fn unit_status_parses_show_output() {
        let s = UnitStatus::parse(
            "ActiveState=failed\nSubState=failed\nResult=exit-code\nMainPID=0\nExecMainStatus=3\n",
        );
        assert!(s.is_stopped());
        assert_eq!(s.main_pid, None);
        assert_eq!(s.exit_status(), ExitStatus::from_code(3));
        let s = UnitStatus::parse(
            "ActiveState=active\nSubState=running\nResult=success\nMainPID=412\nExecMainStatus=0",
        );
        assert!(!s.is_stopped());
        assert_eq!(s.main_pid, Some(412));
        let s = UnitStatus::parse("ActiveState=inactive\nResult=signal\nExecMainStatus=15");
        assert_eq!(s.exit_status(), ExitStatus::from_signal(15));
    }
}
