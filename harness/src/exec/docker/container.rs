//! `DockerContainer`: a container as a target, and the handle of a running one.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::exec::command::Command;
use crate::exec::docker::DockerExecLauncher;
use crate::exec::docker::cli::{self, Removal, docker, forward_events, unique_name};
use crate::exec::error::LaunchError;
use crate::exec::event::{EventStream, ExitStatus, LogFilter, Output, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::pipe::ChildInput;
use crate::exec::remote::RemoteProcess;
use crate::exec::signal::Signal;
use crate::exec::target::Target;

/// When a missing image is pulled from a registry (`docker create --pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pull {
    /// Pull only if the image is not present (docker's default).
    #[default]
    Missing,
    /// Never pull: a missing image is an error at once. For machines without a registry.
    Never,
    /// Always pull, even if the image is present.
    Always,
}

/// A container to run from an image, configured like `docker run`.
///
/// Launching it creates the container (`docker create`), starts it attached
/// (`docker start -a`, whose output is the container's log, as events), and waits until it
/// runs. The container carries the labels [`MANAGED_LABEL`](crate::exec::MANAGED_LABEL) and
/// [`OWNER_PID_LABEL`](crate::exec::OWNER_PID_LABEL), so what a killed run leaves behind can be
/// found. Dropping its handle removes it.
///
/// Creating and starting are two steps, rather than one `docker run --rm`, so that a container
/// that cannot start (a missing image, a missing program) is reported with docker's own reason,
/// and a container that has exited can still be inspected until its handle goes.
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{DockerContainer, Executor, ProcessHandle};
/// let web = DockerContainer::new("my-web:dev")
///     .with_env("MODE", "test")
///     .with_port(8080)
///     .with_args(["serve", "--port", "8080"]);
/// let mut run = Executor::local("web").execute(web).await?;
/// let port = run.handle.host_port(8080).expect("published");
/// println!("listening on 127.0.0.1:{port}");
/// # Ok::<(), harness::exec::LaunchError>(()) });
/// ```
#[derive(Clone)]
#[must_use = "a DockerContainer does nothing until it is launched"]
pub struct DockerContainer {
    image: String,
    name: Option<String>,
    env: BTreeMap<String, String>,
    /// Container port, host port (0: docker picks one).
    ports: Vec<(u16, u16)>,
    publish_address: String,
    volumes: Vec<String>,
    network: Option<String>,
    aliases: Vec<String>,
    labels: BTreeMap<String, String>,
    workdir: Option<String>,
    user: Option<String>,
    entrypoint: Option<String>,
    args: Vec<String>,
    docker_args: Vec<String>,
    init: bool,
    stop_signal: Option<Signal>,
    interactive: bool,
    pull: Pull,
    filter: Option<Arc<dyn LogFilter>>,
    start_timeout: Duration,
    /// What `Command::bounded_output` is for the attached client and its forwarded events.
    output_batches: Option<usize>,
    /// Files copied in between create and start.
    files: Vec<ContainerFile>,
}

/// A file [`DockerContainer::with_file`] copies in.
#[derive(Clone, Debug)]
struct ContainerFile {
    /// Its absolute path in the container.
    path: String,
    /// Its bytes on this machine.
    local: std::path::PathBuf,
    mode: u32,
}

impl DockerContainer {
    /// A container from `image` (`name:tag`), with a unique name `harness-<random>`.
    pub fn new(image: impl Into<String>) -> Self {
        DockerContainer {
            image: image.into(),
            name: None,
            env: BTreeMap::new(),
            ports: Vec::new(),
            publish_address: "127.0.0.1".into(),
            volumes: Vec::new(),
            network: None,
            aliases: Vec::new(),
            labels: BTreeMap::new(),
            workdir: None,
            user: None,
            entrypoint: None,
            args: Vec::new(),
            docker_args: Vec::new(),
            init: false,
            stop_signal: None,
            interactive: false,
            pull: Pull::default(),
            filter: None,
            start_timeout: Duration::from_secs(30),
            output_batches: None,
            files: Vec::new(),
        }
    }

    /// Names the container (`--name`) instead of a generated unique name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets an environment variable in the container (`--env`).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Publishes TCP `container_port` on a host port docker picks; ask
    /// [`ContainerHandle::host_port`] which.
    pub fn with_port(self, container_port: u16) -> Self {
        self.with_port_mapping(container_port, 0)
    }

    /// Publishes TCP `container_port` on `host_port` (0: docker picks one).
    pub fn with_port_mapping(mut self, container_port: u16, host_port: u16) -> Self {
        self.ports.push((container_port, host_port));
        self
    }

    /// The host address published ports listen on; `127.0.0.1` unless set. Use `0.0.0.0` when
    /// the container runs on another host and must be reached from this one.
    pub fn with_publish_address(mut self, address: impl Into<String>) -> Self {
        self.publish_address = address.into();
        self
    }

    /// Mounts a volume, as docker spells it: `host_path:container_path[:ro]` or
    /// `volume_name:container_path`.
    pub fn with_volume(mut self, spec: impl Into<String>) -> Self {
        self.volumes.push(spec.into());
        self
    }

    /// Connects the container to `network` (`--network`) instead of the default bridge.
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// Another name the container answers to on its network (`--network-alias`). Needs a
    /// user-defined network ([`with_network`](Self::with_network)).
    pub fn with_network_alias(mut self, alias: impl Into<String>) -> Self {
        self.aliases.push(alias.into());
        self
    }

    /// Adds a label, beside the ownership labels harness always sets.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The working directory of the container's process (`--workdir`).
    pub fn with_workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// The user the container's process runs as (`--user`, a name or `uid[:gid]`).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Replaces the image's entrypoint (`--entrypoint`).
    pub fn with_entrypoint(mut self, entrypoint: impl Into<String>) -> Self {
        self.entrypoint = Some(entrypoint.into());
        self
    }

    /// Adds one argument after the image (the command, or the entrypoint's arguments).
    pub fn with_arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds several arguments after the image.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Passes an option this builder does not know to `docker create` (`--cap-add=NET_ADMIN`).
    pub fn with_docker_arg(mut self, arg: impl Into<String>) -> Self {
        self.docker_args.push(arg.into());
        self
    }

    /// Runs a tiny init as PID 1 (`--init`), which forwards signals and reaps zombies: the
    /// container's program then gets `SIGTERM` even if it installs no handler.
    pub fn with_init(mut self) -> Self {
        self.init = true;
        self
    }

    /// The signal [`ContainerHandle::stop`] (`docker stop`) sends first (`--stop-signal`);
    /// the image's own `STOPSIGNAL`, else `SIGTERM`, unless set.
    pub fn with_stop_signal(mut self, signal: Signal) -> Self {
        self.stop_signal = Some(signal);
        self
    }

    /// Keeps the container's stdin open (`--interactive`), to be taken with
    /// `ProcessHandle::take_stdin`.
    pub fn with_stdin(mut self) -> Self {
        self.interactive = true;
        self
    }

    /// Copies the file `local` of this machine to `path` in the container before it starts,
    /// with the permission bits `mode`, owned by root, as `docker cp` does; the directories on
    /// its way are made (`0755`). `path` is absolute; a relative one is taken from `/`.
    pub fn with_file(
        mut self,
        path: impl Into<String>,
        local: impl Into<std::path::PathBuf>,
        mode: u32,
    ) -> Self {
        self.files.push(ContainerFile {
            path: path.into(),
            local: local.into(),
            mode,
        });
        self
    }

    /// When to pull the image from a registry.
    pub fn with_pull(mut self, pull: Pull) -> Self {
        self.pull = pull;
        self
    }

    /// Drops log lines the filter rejects before they become events.
    pub fn with_filter(mut self, filter: impl LogFilter + 'static) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Bounds the container's output waiting to be read to `batches` batches of lines, as
    /// [`Command::bounded_output`] does for a process: once that many wait, the attached
    /// `docker` client is not read until the events are, so a container that writes faster
    /// than its events are read blocks on its output instead of filling memory. Without it the
    /// events buffer without bound.
    ///
    /// [`Command::bounded_output`]: crate::exec::Command::bounded_output
    pub fn with_bounded_output(mut self, batches: usize) -> Self {
        self.output_batches = Some(batches.max(1));
        self
    }

    /// How long the container may take to reach the running state; 30 seconds unless set.
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The image.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The `docker create` arguments for a container called `name`.
    fn create_args(&self, name: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["create".into(), "--name".into(), name.into()];
        a.extend(cli::label_args(
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
        for (k, v) in &self.env {
            a.push("--env".into());
            a.push(format!("{k}={v}"));
        }
        for (container, host) in &self.ports {
            let host = if *host == 0 {
                String::new()
            } else {
                host.to_string()
            };
            a.push("--publish".into());
            a.push(format!("{}:{host}:{container}", self.publish_address));
        }
        for v in &self.volumes {
            a.push("--volume".into());
            a.push(v.clone());
        }
        if let Some(n) = &self.network {
            a.push("--network".into());
            a.push(n.clone());
        }
        for alias in &self.aliases {
            a.push("--network-alias".into());
            a.push(alias.clone());
        }
        if let Some(w) = &self.workdir {
            a.push("--workdir".into());
            a.push(w.clone());
        }
        if let Some(u) = &self.user {
            a.push("--user".into());
            a.push(u.clone());
        }
        if let Some(e) = &self.entrypoint {
            a.push("--entrypoint".into());
            a.push(e.clone());
        }
        if self.init {
            a.push("--init".into());
        }
        if let Some(signal) = self.stop_signal {
            a.push(format!("--stop-signal=SIG{}", signal.name()));
        }
        if self.interactive {
            a.push("--interactive".into());
        }
        match self.pull {
            // Left out, so that clients older than `--pull` work.
            Pull::Missing => {}
            Pull::Never => a.push("--pull=never".into()),
            Pull::Always => a.push("--pull=always".into()),
        }
        a.extend(self.docker_args.iter().cloned());
        a.push(self.image.clone());
        a.extend(self.args.iter().cloned());
        a
    }

    /// The program the container runs, for messages.
    fn program(&self) -> String {
        self.entrypoint
            .clone()
            .or_else(|| self.args.first().cloned())
            .unwrap_or_else(|| format!("the entrypoint of image `{}`", self.image))
    }

    /// `docker create`: the new container's id.
    async fn create<L: Launcher>(&self, launcher: &L, name: &str) -> Result<String, LaunchError> {
        let create = docker(self.create_args(name));
        let out = launcher.output(&create).await?;
        if !out.success() {
            let stderr = out.stderr_text();
            if cli::is_missing_image(&stderr) {
                return Err(LaunchError::NoSuchImage {
                    image: self.image.clone(),
                    reason: stderr,
                });
            }
            return Err(cli::failure(
                launcher,
                &create,
                &out,
                &format!("create container `{name}` from image `{}`", self.image),
            ));
        }
        Ok(out
            .stdout
            .last()
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| name.to_string()))
    }

    /// Copies [`with_file`](Self::with_file)'s files into the created container `id`.
    async fn copy_files<L: Launcher>(
        &self,
        launcher: &L,
        name: &str,
        id: &str,
    ) -> Result<(), LaunchError> {
        let doing = format!("copy files into container `{name}`");
        let files = self.files.clone();
        let archive = blocking::unblock(move || files_archive(&files))
            .await
            .map_err(|e| LaunchError::io(doing.clone(), e))?;
        let cp = docker(["cp".to_string(), "-".into(), format!("{id}:/")]);
        let out = launcher.output_with_input(&cp, &archive).await?;
        if out.success() {
            Ok(())
        } else {
            Err(cli::failure(launcher, &cp, &out, &doing))
        }
    }

    /// `cmd` (`docker run` or `docker start --attach`) as the attached client: its output is
    /// the container's.
    fn attached(&self, mut cmd: Command) -> Command {
        if self.interactive {
            cmd = cmd.arg("--interactive").piped_stdin();
        }
        cmd.filter = self.filter.clone();
        if let Some(batches) = self.output_batches {
            cmd = cmd.bounded_output(batches);
        }
        cmd
    }

    /// Why `docker run` ended before its container existed, from what it said.
    fn run_failure(&self, name: &str, run: &Command, said: &Output) -> LaunchError {
        let stderr = said.stderr_text();
        if cli::is_missing_image(&stderr) {
            return LaunchError::NoSuchImage {
                image: self.image.clone(),
                reason: stderr,
            };
        }
        LaunchError::CommandFailed {
            doing: format!("create container `{name}` from image `{}`", self.image),
            command: run.display(),
            status: said.status.unwrap_or(ExitStatus::from_code(-1)),
            stderr,
        }
    }

    fn start_timed_out(&self, name: &str) -> LaunchError {
        LaunchError::io(
            format!("start container `{name}`"),
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("still not running after {:?}", self.start_timeout),
            ),
        )
    }

    async fn start<L: Launcher>(self, launcher: L) -> Result<ContainerHandle<L>, LaunchError> {
        let name = self.name.clone().unwrap_or_else(|| unique_name("harness"));
        // Removes the container whatever fails from here on; one that was never made is
        // fine.
        let mut removal = Removal::new(
            launcher.clone(),
            docker(["rm", "--force", "--volumes", name.as_str()]),
            format!("remove container `{name}`"),
        );
        let (mut client, start) = if self.files.is_empty() {
            // One call, as `docker run` by hand: created, attached and started.
            let mut run = self.create_args(&name);
            run[0] = "run".into();
            let run = self.attached(docker(run));
            (launcher.spawn(&run).await?, run)
        } else {
            // The files go in between create and start.
            let id = self.create(&launcher, &name).await?;
            if let Err(e) = self.copy_files(&launcher, &name, &id).await {
                let _ = removal.run().await;
                return Err(e);
            }
            let start = self.attached(docker(["start", "--attach"]));
            (launcher.spawn(&start.clone().arg(id)).await?, start)
        };
        let client_events = client.take_events().expect("a fresh handle has its events");

        let deadline = Instant::now() + self.start_timeout;
        let mut pause = Duration::from_millis(5);
        let state = loop {
            let Some(state) = inspect(&launcher, &name).await? else {
                // Not made yet, or never: a client that is gone says why.
                if client.try_status().is_some() {
                    let said = client_events.collect().await;
                    return Err(self.run_failure(&name, &start, &said));
                }
                if Instant::now() > deadline {
                    drop(client);
                    let _ = removal.run().await;
                    return Err(self.start_timed_out(&name));
                }
                async_io::Timer::after(pause).await;
                pause = (pause * 2).min(Duration::from_millis(10));
                continue;
            };
            if !state.error.is_empty() {
                drop(client);
                let _ = removal.run().await;
                let error = state.error;
                return Err(
                    if error.contains("executable file not found")
                        || error.contains("no such file or directory")
                    {
                        LaunchError::NotFound {
                            program: self.program(),
                            host: Some(format!("container `{name}` (image `{}`)", self.image)),
                        }
                    } else {
                        LaunchError::CommandFailed {
                            doing: format!("start container `{name}`"),
                            command: start.display(),
                            status: ExitStatus::from_code(state.exit_code),
                            stderr: error,
                        }
                    },
                );
            }
            // Running, or already done: a short-lived container may exit between two looks.
            if state.status != "created" {
                break state;
            }
            if let Some(status) = client.try_status() {
                // The client gave up before the container started; its words say why.
                let said = client_events.collect().await;
                let _ = removal.run().await;
                return Err(LaunchError::CommandFailed {
                    doing: format!("start container `{name}`"),
                    command: start.display(),
                    status,
                    stderr: said.stderr_text(),
                });
            }
            if Instant::now() > deadline {
                drop(client);
                let _ = removal.run().await;
                return Err(self.start_timed_out(&name));
            }
            async_io::Timer::after(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        };
        let id = state.id.clone();
        tracing::debug!(container = %name, status = %state.status, pid = state.pid, "container started");

        let pid = (state.pid > 0).then_some(state.pid);
        let (sink, events) = EventStream::channel_with(self.output_batches);
        let started = ProcessEvent::Started {
            pid: pid.or(client.id()).unwrap_or(0),
        };
        forward_events(
            client_events,
            sink,
            started,
            format!("harness-logs-{name}"),
            |exit| exit,
        )?;
        let stdin = client.take_stdin();
        Ok(ContainerHandle {
            launcher,
            name,
            id,
            network: self.network.clone(),
            pid,
            ports: state.ports,
            networks: state.networks,
            client,
            events: Some(events),
            stdin,
            removal,
        })
    }
}

impl std::fmt::Debug for DockerContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerContainer")
            .field("image", &self.image)
            .field("name", &self.name)
            .field("args", &self.args)
            .field("ports", &self.ports)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl Target for DockerContainer {
    type Handle<L: Launcher> = ContainerHandle<L>;

    fn launch<L: Launcher>(
        &self,
        launcher: &L,
    ) -> impl Future<Output = Result<ContainerHandle<L>, LaunchError>> + Send {
        self.clone().start(launcher.clone())
    }
}

/// What `docker inspect` says about a container.
#[derive(Debug, Default)]
struct State {
    id: String,
    status: String,
    pid: u32,
    exit_code: i32,
    /// `(container port with protocol, host ip, host port)`.
    ports: Vec<(String, String, u16)>,
    /// `(network, ip address)`.
    networks: Vec<(String, String)>,
    error: String,
}

/// One line per fact, the free-form error last.
const INSPECT_FORMAT: &str = "{{.Id}}\n{{.State.Status}}\n{{.State.Pid}}\n{{.State.ExitCode}}\n\
{{range $p, $b := .NetworkSettings.Ports}}{{range $b}}port {{$p}} {{.HostIp}} {{.HostPort}}\n{{end}}{{end}}\
{{range $n, $c := .NetworkSettings.Networks}}net {{$n}} {{$c.IPAddress}}\n{{end}}\
error {{.State.Error}}";

/// A tar archive of `files` at their paths from `/`, owned by root, for `docker cp - ID:/`.
fn files_archive(files: &[ContainerFile]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for file in files {
        let input = std::fs::File::open(&file.local)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(input.metadata()?.len());
        header.set_mode(file.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(now);
        archive.append_data(&mut header, file.path.trim_start_matches('/'), input)?;
    }
    archive.into_inner()
}

/// What docker says of container `name`; `None` if there is no such container.
async fn inspect<L: Launcher>(launcher: &L, name: &str) -> Result<Option<State>, LaunchError> {
    let cmd = docker([
        "inspect",
        "--type",
        "container",
        "--format",
        INSPECT_FORMAT,
        name,
    ]);
    let out = launcher.output(&cmd).await?;
    if out.success() {
        return Ok(Some(parse_state(&out.stdout)));
    }
    if cli::is_no_such_container(&out.stderr_text()) {
        return Ok(None);
    }
    Err(cli::failure(
        launcher,
        &cmd,
        &out,
        &format!("inspect container `{name}`"),
    ))
}

fn parse_state(lines: &[String]) -> State {
    let mut s = State::default();
    let mut it = lines.iter();
    s.id = it.next().map(|l| l.trim().to_string()).unwrap_or_default();
    s.status = it.next().map(|l| l.trim().to_string()).unwrap_or_default();
    s.pid = it.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    s.exit_code = it.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    let mut error = Vec::new();
    for line in it {
        if let Some(rest) = line.strip_prefix("port ") {
            let mut w = rest.split_whitespace();
            if let (Some(p), Some(ip), Some(hp)) = (w.next(), w.next(), w.next())
                && let Ok(hp) = hp.parse()
            {
                s.ports.push((p.to_string(), ip.to_string(), hp));
            }
        } else if let Some(rest) = line.strip_prefix("net ") {
            let mut w = rest.split_whitespace();
            if let Some(n) = w.next() {
                s.networks
                    .push((n.to_string(), w.next().unwrap_or("").to_string()));
            }
        } else if let Some(rest) = line.strip_prefix("error ") {
            error.push(rest.to_string());
        } else if !error.is_empty() {
            error.push(line.clone());
        }
    }
    s.error = error.join("\n").trim().to_string();
    s
}

/// A running (or exited) container started from a [`DockerContainer`].
///
/// Its events are the container's log (stdout and stderr kept apart) after `Started` with the
/// container's main process id, and `Exited` with the container's exit code (128 + the signal
/// number if a signal ended it). Dropping the handle removes the container (`docker rm
/// --force`) on a background thread; [`remove`](Self::remove) does it and waits.
pub struct ContainerHandle<L: Launcher> {
    launcher: L,
    name: String,
    id: String,
    network: Option<String>,
    pid: Option<u32>,
    ports: Vec<(String, String, u16)>,
    networks: Vec<(String, String)>,
    /// `docker start --attach`: its exit is the container's.
    client: L::Process,
    events: Option<EventStream>,
    stdin: Option<ChildInput>,
    removal: Removal<L>,
}

impl<L: Launcher> ContainerHandle<L> {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's full id.
    pub fn container_id(&self) -> &str {
        &self.id
    }

    /// The host port that TCP `container_port` is published on, if it was published.
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        let key = format!("{container_port}/tcp");
        let mut bound = self.ports.iter().filter(|(p, _, _)| *p == key);
        // Docker may list an IPv6 binding beside the IPv4 one; they share the port.
        bound.next().map(|(_, _, port)| *port)
    }

    /// The container's address on its network (the one it was started on, else the first),
    /// if it has one.
    pub fn ip_address(&self) -> Option<IpAddr> {
        let on = |n: &String| self.network.as_ref().is_none_or(|want| want == n);
        self.networks
            .iter()
            .filter(|(n, _)| on(n))
            .chain(self.networks.iter())
            .find_map(|(_, ip)| ip.parse().ok())
    }

    /// A launcher that runs commands inside this container with `docker exec`.
    pub fn exec_launcher(&self) -> DockerExecLauncher<L> {
        DockerExecLauncher::unchecked(self.launcher.clone(), self.name.clone())
    }

    /// Runs `cmd` inside the container.
    pub async fn exec(
        &self,
        cmd: &Command,
    ) -> Result<RemoteProcess<DockerExecLauncher<L>>, LaunchError> {
        self.exec_launcher().spawn(cmd).await
    }

    /// Stops the container: its stop signal (`with_stop_signal`, else the image's, else `SIGTERM`), then `SIGKILL` after
    /// `grace` (rounded up to whole seconds), and waits for it to exit.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitStatus, LaunchError> {
        if let Some(status) = self.client.try_status() {
            return Ok(status);
        }
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        cli::run(
            &self.launcher,
            vec![
                "stop".into(),
                "--time".into(),
                secs.to_string(),
                self.name.clone(),
            ],
            &format!("stop container `{}`", self.name),
        )
        .await?;
        self.client.wait().await
    }

    /// Removes the container, stopping it first if it runs, and waits until it is gone.
    pub async fn remove(mut self) -> Result<(), LaunchError> {
        self.removal.run().await.map(|_| ())
    }
}

impl<L: Launcher> ProcessHandle for ContainerHandle<L> {
    /// The container's main process id on the Docker host, if it was seen running.
    fn id(&self) -> Option<u32> {
        self.pid
    }

    fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    fn take_stdin(&mut self) -> Option<ChildInput> {
        self.stdin.take()
    }

    /// Sends `signal` to the container's main process (`docker kill --signal`).
    async fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        let gone = LaunchError::AlreadyExited {
            pid: self.pid.unwrap_or(0),
        };
        if self.client.try_status().is_some() {
            return Err(gone);
        }
        let cmd = docker([
            "kill".to_string(),
            format!("--signal={}", signal.name()),
            self.name.clone(),
        ]);
        let out = self.launcher.output(&cmd).await?;
        if out.success() {
            return Ok(());
        }
        if out.stderr_text().contains("is not running") {
            return Err(gone);
        }
        Err(cli::failure(
            &self.launcher,
            &cmd,
            &out,
            &format!("send {signal} to container `{}`", self.name),
        ))
    }

    /// Waits for the container to exit; its exit code is the container's.
    async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        self.client.wait().await
    }

    fn try_status(&self) -> Option<ExitStatus> {
        self.client.try_status()
    }
}

impl<L: Launcher> std::fmt::Debug for ContainerHandle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerHandle")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("ports", &self.ports)
            .field("status", &self.try_status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_arguments_follow_the_builder() {
        let c = DockerContainer::new("img:1")
            .with_env("A", "1")
            .with_port(80)
            .with_port_mapping(443, 8443)
            .with_volume("/h:/c:ro")
            .with_network("net")
            .with_network_alias("web")
            .with_label("role", "web")
            .with_workdir("/srv")
            .with_user("1000")
            .with_entrypoint("/bin/sh")
            .with_init()
            .with_stop_signal(Signal::Quit)
            .with_pull(Pull::Never)
            .with_docker_arg("--cap-add=NET_ADMIN")
            .with_args(["-c", "echo hi"]);
        let pid = std::process::id().to_string();
        let ns = crate::exec::pid_namespace().expect("a pid namespace");
        let expected: Vec<String> = [
            "create",
            "--name",
            "n",
            "--label",
            "harness.managed=true",
            "--label",
            &format!("harness.pid={pid}"),
            "--label",
            &format!("harness.pidns={ns}"),
            "--label",
            "role=web",
            "--env",
            "A=1",
            "--publish",
            "127.0.0.1::80",
            "--publish",
            "127.0.0.1:8443:443",
            "--volume",
            "/h:/c:ro",
            "--network",
            "net",
            "--network-alias",
            "web",
            "--workdir",
            "/srv",
            "--user",
            "1000",
            "--entrypoint",
            "/bin/sh",
            "--init",
            "--stop-signal=SIGQUIT",
            "--pull=never",
            "--cap-add=NET_ADMIN",
            "img:1",
            "-c",
            "echo hi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(c.create_args("n"), expected);
    }

    #[test]
    fn inspect_output_is_parsed() {
        let out: Vec<String> = [
            "0123abcd",
            "running",
            "4242",
            "0",
            "port 8080/tcp 127.0.0.1 49153",
            "port 8080/tcp :: 49153",
            "net bridge 172.17.0.2",
            "error ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = parse_state(&out);
        assert_eq!(s.id, "0123abcd");
        assert_eq!(s.status, "running");
        assert_eq!(s.pid, 4242);
        assert_eq!(
            s.ports,
            [
                ("8080/tcp".to_string(), "127.0.0.1".to_string(), 49153),
                ("8080/tcp".into(), "::".into(), 49153)
            ]
        );
        assert_eq!(
            s.networks,
            [("bridge".to_string(), "172.17.0.2".to_string())]
        );
        assert_eq!(s.error, "");
    }
}
