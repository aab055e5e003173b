//! Docker Compose services as targets.
//!
//! The compose command line (`docker compose`, or the older standalone `docker-compose`) runs
//! through a launcher, like `docker` itself, so a compose project on another host is the same
//! code under `SshLauncher<LocalLauncher>`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::exec::command::Command;

use crate::exec::docker::{
    DockerExecLauncher, Removal, docker, failure, forward_events, owner_labels, unique_name,
};
use crate::exec::error::LaunchError;
use crate::exec::event::{EventStream, ExitStatus, ProcessEvent};
use crate::exec::image::json_string;
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::quote::{quote, quote_words};
use crate::exec::remote::RemoteProcess;
use crate::exec::signal::Signal;
use crate::exec::target::Target;

/// Which compose command line to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeCli {
    /// `docker compose`, the Compose v2 plugin.
    Plugin,
    /// `docker-compose`, the standalone program (v1, or v2 installed standalone).
    Standalone,
}

impl ComposeCli {
    /// Finds the compose command line where `launcher` runs: the `docker compose` plugin if it
    /// answers, else `docker-compose`.
    pub async fn detect<L: Launcher>(launcher: &L) -> Result<Self, LaunchError> {
        for cli in [ComposeCli::Plugin, ComposeCli::Standalone] {
            match launcher.output(&cli.command(["version"])).await {
                Ok(out) if out.success() => return Ok(cli),
                Ok(_) | Err(LaunchError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(LaunchError::NotFound {
            program: "docker compose` or `docker-compose".into(),
            host: Some(launcher.location()),
        })
    }

    fn command<I, S>(self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match self {
            ComposeCli::Plugin => Command::new("docker").arg("compose").args(args),
            ComposeCli::Standalone => Command::new("docker-compose").args(args),
        }
    }
}

/// One service of a compose project, as a target.
///
/// Launching it runs `up --detach` for the project (the named service and what it depends on,
/// or every service with [`with_all_services`](Self::with_all_services)), then follows the
/// service container's log as events. The project gets a unique name `harness-<random>` unless
/// one is given, so that parallel tests never share containers, networks or volumes; compose
/// labels everything it creates with it (`com.docker.compose.project`). Every service's
/// containers also carry the ownership labels ([`MANAGED_LABEL`](crate::exec::MANAGED_LABEL),
/// [`OWNER_PID_LABEL`](crate::exec::OWNER_PID_LABEL) and its pid namespace), added
/// by a second compose file written to `/tmp` (or
/// [`with_scratch_dir`](Self::with_scratch_dir)) where compose runs and removed with the
/// project; the builder's `with_env`, `with_port_mapping` and the like add to the service
/// through it. Dropping the handle takes the whole project down, volumes included.
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{Command, ComposeService, Executor, Launcher};
/// let api = ComposeService::new("tests/compose.yaml", "api").with_all_services();
/// let run = Executor::local("api").execute(api).await?;
/// let out = run.handle.exec_launcher("db").await?
///     .output(&Command::new("pg_isready")).await?;
/// assert!(out.success());
/// run.handle.down().await?;
/// # Ok::<(), harness::exec::LaunchError>(()) });
/// ```
#[derive(Debug, Clone)]
#[must_use = "a ComposeService does nothing until it is launched"]
pub struct ComposeService {
    file: String,
    service: String,
    project: Option<String>,
    all_services: bool,
    cli: Option<ComposeCli>,
    extra: ServiceExtra,
    scratch: Option<String>,
}

/// What harness adds to the launched service's definition, through the same second file as
/// the ownership labels: compose merges it over the user's.
#[derive(Debug, Clone, Default)]
struct ServiceExtra {
    env: Vec<(String, String)>,
    labels: Vec<(String, String)>,
    ports: Vec<String>,
    extra_hosts: Vec<String>,
    stop_signal: Option<Signal>,
    stop_grace: Option<Duration>,
}

impl ComposeService {
    /// The service `service` of the compose file at `file` (a path where the launcher runs).
    pub fn new(file: impl Into<String>, service: impl Into<String>) -> Self {
        ComposeService {
            file: file.into(),
            service: service.into(),
            project: None,
            all_services: false,
            cli: None,
            extra: ServiceExtra::default(),
            scratch: None,
        }
    }

    /// Writes the second compose file into `dir` (where the launcher runs) instead of `/tmp`:
    /// a directory that is removed with its owner's run.
    pub fn with_scratch_dir(mut self, dir: impl Into<String>) -> Self {
        self.scratch = Some(dir.into());
        self
    }

    /// Sets `key=value` in the service's environment, over what the compose file sets.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.env.push((key.into(), value.into()));
        self
    }

    /// Labels the service's containers `key=value`.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.labels.push((key.into(), value.into()));
        self
    }

    /// Publishes the service's `container_port` on `host_ip:host_port` too (`ports:`).
    pub fn with_port_mapping(mut self, host_ip: &str, host_port: u16, container_port: u16) -> Self {
        self.extra
            .ports
            .push(format!("{host_ip}:{host_port}:{container_port}"));
        self
    }

    /// Adds `name:address` to the service's `/etc/hosts` (`extra_hosts:`); `host-gateway` as
    /// the address is the Docker host's gateway.
    pub fn with_extra_host(mut self, name: &str, address: &str) -> Self {
        self.extra.extra_hosts.push(format!("{name}:{address}"));
        self
    }

    /// Stops the service with `signal` instead of its own (`stop_signal:`).
    pub fn with_stop_signal(mut self, signal: Signal) -> Self {
        self.extra.stop_signal = Some(signal);
        self
    }

    /// Gives the service `grace` to stop before it is killed (`stop_grace_period:`), also when
    /// the project is taken down.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.extra.stop_grace = Some(grace);
        self
    }

    /// Names the project (`--project-name`) instead of a generated unique name.
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// Starts every service of the file, not only this one and its dependencies.
    pub fn with_all_services(mut self) -> Self {
        self.all_services = true;
        self
    }

    /// Uses this compose command line instead of detecting one.
    pub fn with_cli(mut self, cli: ComposeCli) -> Self {
        self.cli = Some(cli);
        self
    }

    async fn start<L: Launcher>(self, launcher: L) -> Result<ComposeHandle<L>, LaunchError> {
        let cli = match self.cli {
            Some(cli) => cli,
            None => ComposeCli::detect(&launcher).await?,
        };
        let mut project = Project {
            launcher: launcher.clone(),
            cli,
            files: vec![self.file.clone()],
            name: self
                .project
                .clone()
                .unwrap_or_else(|| unique_name("harness")),
        };
        // Compose has no option to label what `up` creates, but it merges files: a second file
        // adds the ownership labels to every service's containers.
        let services = project
            .run(["config", "--services"], "list the services")
            .await?;
        let dir = self.scratch.as_deref().unwrap_or("/tmp");
        let labels = format!("{dir}/{}.harness-labels.yaml", project.name);
        if !services.stdout.iter().any(|s| s.trim() == self.service) {
            return Err(LaunchError::Unsupported(format!(
                "compose file `{}` has no service `{}`; it has {}",
                self.file,
                self.service,
                services
                    .stdout
                    .iter()
                    .map(|s| format!("`{}`", s.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let yaml = label_override(&services.stdout, &self.service, &self.extra);
        write_file(&launcher, &labels, &yaml).await?;
        project.files.push(labels.clone());
        // Armed before `up`, which may fail halfway and leave a network or containers behind.
        let down = project.command(["down", "--volumes", "--remove-orphans"]);
        let mut words = vec![down.get_program()];
        words.extend(down.get_args().iter().map(String::as_str));
        let down_then_forget = format!(
            "{}; rc=$?; rm -f {}; exit $rc",
            quote_words(words),
            quote(&labels)
        );
        let mut removal = Removal::new(
            launcher.clone(),
            Command::new("sh").args(["-c", &down_then_forget]),
            format!("take compose project `{}` down", project.name),
        );
        let mut up = vec!["up", "--detach"];
        if !self.all_services {
            up.push(self.service.as_str());
        }
        let started = async {
            project
                .run(up, &format!("start service `{}`", self.service))
                .await?;
            let container = project.container_id(&self.service).await?;
            let facts = crate::exec::docker::cli_run(
                &launcher,
                vec![
                    "inspect".into(),
                    "--type".into(),
                    "container".into(),
                    "--format".into(),
                    "{{.State.Pid}} {{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}".into(),
                    container.clone(),
                ],
                &format!("inspect the container of service `{}`", self.service),
            )
            .await?
            .stdout_text();
            let mut words = facts.split_whitespace();
            let pid = words.next().and_then(|p| p.parse::<u32>().ok());
            let name = words
                .next()
                .unwrap_or(&container)
                .trim_start_matches('/')
                .to_string();
            let ip = words.find_map(|w| w.parse::<std::net::IpAddr>().ok());
            Ok::<_, LaunchError>((container, name, pid.filter(|p| *p > 0), ip))
        };
        let (container, container_name, pid, ip) = match started.await {
            Ok(found) => found,
            Err(e) => {
                let _ = removal.run().await;
                return Err(e);
            }
        };

        // The log follower ends when the container stops; `docker wait` says how it ended.
        let mut logs = launcher
            .spawn(&docker(["logs", "--follow", container.as_str()]))
            .await?;
        let mut waiter = launcher
            .spawn(&docker(["wait", container.as_str()]))
            .await?;
        let log_events = logs.take_events().expect("a fresh handle has its events");
        let wait_events = waiter.take_events().expect("a fresh handle has its events");
        let exit = Arc::new(ExitState::default());
        let (sink, events) = EventStream::channel();
        let finish_exit = exit.clone();
        forward_events(
            log_events,
            sink,
            ProcessEvent::Started {
                pid: pid.unwrap_or(0),
            },
            format!("harness-logs-{container_name}"),
            move |_| {
                // Holding the clients until here keeps them alive as long as the container.
                let _logs = logs;
                let out = futures_lite::future::block_on(wait_events.collect());
                drop(waiter);
                let status = out
                    .stdout
                    .last()
                    .and_then(|l| l.trim().parse().ok())
                    .map(ExitStatus::from_code)
                    .unwrap_or(ExitStatus::from_code(-1));
                finish_exit.set(status);
                Some(status)
            },
        )?;
        Ok(ComposeHandle {
            project,
            service: self.service,
            container,
            container_name,
            ip,
            pid,
            events: Some(events),
            exit,
            removal,
        })
    }
}

impl Target for ComposeService {
    type Handle<L: Launcher> = ComposeHandle<L>;

    fn launch<L: Launcher>(
        &self,
        launcher: &L,
    ) -> impl Future<Output = Result<ComposeHandle<L>, LaunchError>> + Send {
        self.clone().start(launcher.clone())
    }
}

/// A compose project: where its command line runs, and how to name it.
#[derive(Debug, Clone)]
struct Project<L> {
    launcher: L,
    cli: ComposeCli,
    /// The user's compose file, then our labels.
    files: Vec<String>,
    name: String,
}

impl<L: Launcher> Project<L> {
    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cmd = self.cli.command(["--project-name", self.name.as_str()]);
        for file in &self.files {
            cmd = cmd.arg("--file").arg(file.as_str());
        }
        cmd.args(args)
    }

    async fn run<I, S>(&self, args: I, doing: &str) -> Result<crate::exec::Output, LaunchError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cmd = self.command(args);
        let out = self.launcher.output(&cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(failure(
                &self.launcher,
                &cmd,
                &out,
                &format!("{doing} in compose project `{}`", self.name),
            ))
        }
    }

    /// The id of `service`'s (first) container.
    async fn container_id(&self, service: &str) -> Result<String, LaunchError> {
        let doing = format!("find the container of service `{service}`");
        let out = self.run(["ps", "--quiet", service], &doing).await?;
        out.stdout
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .map(str::to_string)
            .ok_or_else(|| LaunchError::NoSuchContainer {
                container: format!("{}/{service}", self.name),
                reason: "the service has no container".into(),
            })
    }
}

/// A compose file that adds the ownership labels to each of `services`, and `extra` to
/// `launched`.
fn label_override(services: &[String], launched: &str, extra: &ServiceExtra) -> String {
    // Compose interpolates `$` in every file it reads: `$$` is a `$`.
    let value = |v: &str| json_string(&v.replace('$', "$$"));
    let mut yaml = String::from("services:\n");
    for service in services.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        yaml.push_str(&format!("  {}:\n    labels:\n", json_string(service)));
        for (k, v) in owner_labels() {
            yaml.push_str(&format!("      {k}: {}\n", json_string(&v)));
        }
        if service != launched {
            continue;
        }
        for (k, v) in &extra.labels {
            yaml.push_str(&format!("      {}: {}\n", json_string(k), value(v)));
        }
        if !extra.env.is_empty() {
            yaml.push_str("    environment:\n");
            for (k, v) in &extra.env {
                yaml.push_str(&format!("      {}: {}\n", json_string(k), value(v)));
            }
        }
        for (field, items) in [("ports", &extra.ports), ("extra_hosts", &extra.extra_hosts)] {
            if !items.is_empty() {
                yaml.push_str(&format!("    {field}:\n"));
                for item in items {
                    yaml.push_str(&format!("      - {}\n", value(item)));
                }
            }
        }
        if let Some(signal) = extra.stop_signal {
            yaml.push_str(&format!("    stop_signal: SIG{}\n", signal.name()));
        }
        if let Some(grace) = extra.stop_grace {
            yaml.push_str(&format!("    stop_grace_period: {}ms\n", grace.as_millis()));
        }
    }
    yaml
}

/// Writes `contents` to `path` where `launcher` runs.
async fn write_file<L: Launcher>(
    launcher: &L,
    path: &str,
    contents: &str,
) -> Result<(), LaunchError> {
    let cmd = Command::new("sh").args(["-c", "cat > \"$1\"", "sh", path]);
    let out = launcher
        .output_with_input(&cmd, contents.as_bytes())
        .await?;
    if out.success() {
        return Ok(());
    }
    Err(LaunchError::CommandFailed {
        doing: format!("write `{path}`"),
        command: cmd.display(),
        status: out.status.unwrap_or(ExitStatus::from_code(-1)),
        stderr: out.stderr_text(),
    })
}

#[derive(Default)]
struct ExitState {
    status: Mutex<Option<ExitStatus>>,
    changed: event_listener::Event,
}

impl ExitState {
    fn set(&self, status: ExitStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        self.changed.notify(usize::MAX);
    }

    fn get(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running compose service, and the project it belongs to.
///
/// Its events are the service container's log (stdout and stderr kept apart), after `Started`
/// with the container's main process id, and `Exited` with the container's exit code. Signals
/// go to the service (`kill --signal`). Dropping the handle takes the project down on a
/// background thread; [`down`](Self::down) does it and waits.
pub struct ComposeHandle<L: Launcher> {
    project: Project<L>,
    service: String,
    container: String,
    container_name: String,
    ip: Option<std::net::IpAddr>,
    pid: Option<u32>,
    events: Option<EventStream>,
    exit: Arc<ExitState>,
    removal: Removal<L>,
}

impl<L: Launcher> ComposeHandle<L> {
    /// The compose project's name.
    pub fn project_name(&self) -> &str {
        &self.project.name
    }

    /// The service this handle follows.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The name of this service's container.
    pub fn container_name(&self) -> &str {
        &self.container_name
    }

    /// The id of this service's container.
    pub fn container_id(&self) -> &str {
        &self.container
    }

    /// The container's address on the first of its networks, as it was when it started.
    pub fn ip_address(&self) -> Option<std::net::IpAddr> {
        self.ip
    }

    /// The name of the container of `service`, another service of the same project.
    pub async fn container_of(&self, service: &str) -> Result<String, LaunchError> {
        let id = self.project.container_id(service).await?;
        let out = crate::exec::docker::cli_run(
            &self.project.launcher,
            vec![
                "inspect".into(),
                "--type".into(),
                "container".into(),
                "--format".into(),
                "{{.Name}}".into(),
                id,
            ],
            &format!("inspect the container of service `{service}`"),
        )
        .await?;
        Ok(out.stdout_text().trim().trim_start_matches('/').to_string())
    }

    /// A launcher that runs commands in `service`'s container with `docker exec`.
    pub async fn exec_launcher(&self, service: &str) -> Result<DockerExecLauncher<L>, LaunchError> {
        let container = if service == self.service {
            self.container_name.clone()
        } else {
            self.container_of(service).await?
        };
        DockerExecLauncher::connect(self.project.launcher.clone(), container).await
    }

    /// Runs `cmd` in this service's container.
    pub async fn exec(
        &self,
        cmd: &Command,
    ) -> Result<RemoteProcess<DockerExecLauncher<L>>, LaunchError> {
        DockerExecLauncher::unchecked(self.project.launcher.clone(), self.container.clone())
            .spawn(cmd)
            .await
    }

    /// The host port that `service`'s TCP `container_port` is published on.
    pub async fn host_port(&self, service: &str, container_port: u16) -> Result<u16, LaunchError> {
        let doing = format!("find the host port of `{service}:{container_port}`");
        let out = self
            .project
            .run(["port", service, &container_port.to_string()], &doing)
            .await?;
        out.stdout
            .iter()
            .filter_map(|l| l.trim().rsplit_once(':'))
            .find_map(|(_, port)| port.parse().ok())
            .ok_or_else(|| LaunchError::Unsupported(format!("{doing}: it is not published")))
    }

    /// Stops this service: `SIGTERM`, then `SIGKILL` after `grace` (rounded up to whole
    /// seconds); waits for its container to exit.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitStatus, LaunchError> {
        if let Some(status) = self.exit.get() {
            return Ok(status);
        }
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        self.project
            .run(
                [
                    "stop",
                    "--timeout",
                    &secs.to_string(),
                    self.service.as_str(),
                ],
                &format!("stop service `{}`", self.service),
            )
            .await?;
        self.wait().await
    }

    /// Takes the whole project down (`down --volumes --remove-orphans`): its containers,
    /// networks and volumes. Waits until they are gone.
    pub async fn down(mut self) -> Result<(), LaunchError> {
        self.removal.run().await.map(|_| ())
    }
}

impl<L: Launcher> ProcessHandle for ComposeHandle<L> {
    /// The service container's main process id on the Docker host.
    fn id(&self) -> Option<u32> {
        self.pid
    }

    fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    /// Sends `signal` to the service's containers (`kill --signal`).
    async fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        if self.exit.get().is_some() {
            return Err(LaunchError::AlreadyExited {
                pid: self.pid.unwrap_or(0),
            });
        }
        self.project
            .run(
                [
                    "kill".to_string(),
                    "-s".into(),
                    format!("SIG{}", signal.name()),
                    self.service.clone(),
                ],
                &format!("send {signal} to service `{}`", self.service),
            )
            .await
            .map(|_| ())
    }

    /// Waits for the service's container to exit.
    async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        loop {
            if let Some(s) = self.exit.get() {
                return Ok(s);
            }
            let listener = self.exit.changed.listen();
            if let Some(s) = self.exit.get() {
                return Ok(s);
            }
            listener.await;
        }
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.exit.get()
    }
}

impl<L: Launcher> std::fmt::Debug for ComposeHandle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComposeHandle")
            .field("project", &self.project.name)
            .field("service", &self.service)
            .field("container", &self.container_name)
            .field("pid", &self.pid)
            .field("status", &self.try_status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::local::LocalLauncher;

    #[test]
    fn commands_name_the_project_and_file() {
        let p = Project {
            launcher: LocalLauncher,
            cli: ComposeCli::Standalone,
            files: vec!["/x/compose.yaml".into()],
            name: "harness-abc".into(),
        };
        let cmd = p.command(["up", "--detach", "web"]);
        assert_eq!(cmd.get_program(), "docker-compose");
        assert_eq!(
            cmd.get_args(),
            [
                "--project-name",
                "harness-abc",
                "--file",
                "/x/compose.yaml",
                "up",
                "--detach",
                "web"
            ]
        );
        let cmd = ComposeCli::Plugin.command(["version"]);
        assert_eq!(cmd.display(), "docker compose version");
    }

    /// The ownership labels as the label file writes them.
    fn owner_lines() -> String {
        let ns = crate::exec::docker::pid_namespace().expect("a pid namespace");
        format!(
            "      harness.managed: \"true\"\n      harness.pid: \"{}\"\n      \
             harness.pidns: \"{ns}\"\n",
            std::process::id()
        )
    }

    #[test]
    fn the_label_file_covers_every_service() {
        let services = ["web".into(), "odd name".into(), "".into()];
        let yaml = label_override(&services, "web", &ServiceExtra::default());
        let owner = owner_lines();
        assert_eq!(
            yaml,
            format!(
                "services:\n  \"web\":\n    labels:\n{owner}  \"odd name\":\n    labels:\n{owner}"
            )
        );
    }

    #[test]
    fn what_harness_adds_goes_to_the_launched_service_with_dollars_escaped() {
        let service = ComposeService::new("c.yaml", "web")
            .with_env("PRICE", "$5")
            .with_label("harness.run", "r1")
            .with_port_mapping("127.0.0.1", 40000, 8080)
            .with_extra_host("host.docker.internal", "host-gateway")
            .with_stop_signal(Signal::Interrupt)
            .with_stop_grace(Duration::from_millis(1500));
        let yaml = label_override(&["db".into(), "web".into()], "web", &service.extra);
        let owner = owner_lines();
        assert_eq!(
            yaml,
            format!(
                "services:\n  \"db\":\n    labels:\n{owner}  \"web\":\n    labels:\n{owner}      \
                 \"harness.run\": \"r1\"\n    environment:\n      \"PRICE\": \"$$5\"\n    \
                 ports:\n      - \"127.0.0.1:40000:8080\"\n    extra_hosts:\n      - \
                 \"host.docker.internal:host-gateway\"\n    stop_signal: SIGINT\n    \
                 stop_grace_period: 1500ms\n"
            )
        );
    }
}
