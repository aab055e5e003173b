//! `DockerExecutor`: a service as a container on this machine's Docker engine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_lock::Mutex as AsyncMutex;

use crate::exec::{
    Command, ContainerHandle, DockerContainer, DockerImage, DockerNetwork, ExitStatus, LaunchError,
    Launcher, LocalLauncher, OWNER_PID_LABEL, OWNER_PIDNS_LABEL, ProcessHandle, Pull, Target,
};
use crate::topology::{
    BuildBase, DockerBuild, DockerTarget, NetworkMode, PullPolicy, ServiceTarget,
};

use super::address::HOST_GATEWAY;
use super::error::StartFailure;
use super::executor::{BoxFuture, RunningService, ServiceExecutor, StartSpec, StopRequest};
use super::logs::LogBuffer;
use super::process::{ExitWatch, pump_events};

/// The label naming the run a container, network or image belongs to.
pub const RUN_LABEL: &str = "harness.run";

/// The label naming the service a container runs.
pub const SERVICE_LABEL: &str = "harness.service";

/// Where a built image keeps its program.
const PROGRAM_DIR: &str = "/usr/local/bin";

/// Name lookup in built images: `/etc/hosts` first (where `host.docker.internal` is), then
/// Docker's DNS (where the other services' aliases are). Without the file, glibc asks DNS
/// first and gives up when DNS does not know the name.
const NSSWITCH: &str = "hosts: files dns\n";

/// Runs `docker:` targets as containers on this machine's Docker engine, one run at a time.
///
/// - At its first start the executor removes what killed runs left: containers, networks and
///   images labelled [`RUN_LABEL`] whose [`OWNER_PID_LABEL`] process is gone (the janitor).
/// - It creates one network per run, `harness-<run id>`, labelled with the run. Each
///   container joins it with the service's name as its alias, so containers reach each other
///   as `NAME:PORT`, and gets `--add-host host.docker.internal:host-gateway`, so it reaches
///   the processes of the run through this machine's gateway address.
/// - A container is called `harness-<run id>-<service>-<n>` and labelled with the run
///   ([`RUN_LABEL`]), the service ([`SERVICE_LABEL`]) and the owning process
///   ([`OWNER_PID_LABEL`]).
/// - A target with `build:` gets its image built here ([`DockerImage`]: busybox or scratch,
///   the binary with its shared libraries as entrypoint), once per run whichever services use
///   it, tagged with the target's `image`. Images without `build:` are pulled as
///   [`StartSpec::pull`] says (`docker pull`, its lines reported as the start's progress),
///   and stay after the run; containers are created with `--pull=never`, so a missing image
///   fails the start saying so.
/// - The service's port (`PORT`) is published on `127.0.0.1:<host port>` (the manager
///   chooses it, [`StartSpec::host_port`]); each of `ports:` on a port docker chooses.
/// - The container's output goes to the service's log; its exit is noticed like a process's.
/// - Stopping is `docker stop --time GRACE` (SIGTERM, then SIGKILL after the grace period,
///   rounded up to whole seconds), then `docker rm`. Dropping a running service removes its
///   container (`docker rm --force`) and waits until it is gone.
/// - [`ServiceExecutor::clean_up`] (called by `stop_all`) and dropping the executor (when the
///   last clone of its manager goes) remove the run's containers, its network and the images it
///   built, except a tag that named an image harness did not build, which keeps the new build.
#[derive(Debug)]
pub struct DockerExecutor {
    pub(super) launcher: LocalLauncher,
    pub(super) run: String,
    /// Set at the first start, so that an executor that never ran anything never calls docker.
    used: AtomicBool,
    /// Numbers containers, so that a restarted service never meets its old container's name
    /// while that one is still being removed.
    pub(super) started: AtomicU64,
    /// Containers of the run that may still exist: started, and not yet seen removed. When
    /// none is, the run's removal asks docker for none.
    pub(super) live: Arc<AtomicU64>,
    pub(super) state: AsyncMutex<RunState>,
}

/// What the executor made for the current run.
#[derive(Debug, Default)]
pub(super) struct RunState {
    /// The janitor's sweep of dead runs, started at the first start on a thread of its own
    /// (off the start's path) and waited for when the run is removed.
    sweep: Option<std::thread::JoinHandle<()>>,
    swept: bool,
    pub(super) network: Option<DockerNetwork<LocalLauncher>>,
    /// Every image built in the run, by tag.
    images: BTreeMap<String, Build>,
    /// The images pulled in the run (`pull: always` pulls each once per run).
    pulled: std::collections::BTreeSet<String>,
}

/// An image a run built.
#[derive(Debug)]
struct Build {
    /// Its id: the run's containers start from it, not from the tag, which another run's
    /// build of the same tag may take over or remove meanwhile.
    id: String,
    /// Whether the run removes it: not if the tag named an image of the user's before the run
    /// (then the build stays under the tag).
    owned: bool,
}

/// Images seen on this machine's engine by this process, so that `pull: missing` asks the
/// engine once per image rather than once per start. An image removed meanwhile fails the
/// start as missing, since containers are created with `--pull=never`.
static PRESENT: Mutex<std::collections::BTreeSet<String>> =
    Mutex::new(std::collections::BTreeSet::new());

impl Default for DockerExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerExecutor {
    /// An executor with a fresh run id; it does nothing until it starts a container.
    pub fn new() -> Self {
        DockerExecutor {
            launcher: LocalLauncher,
            run: run_id(),
            used: AtomicBool::new(false),
            started: AtomicU64::new(0),
            live: Arc::new(AtomicU64::new(0)),
            state: AsyncMutex::new(RunState::default()),
        }
    }

    /// The run id: the value of [`RUN_LABEL`] on everything this executor creates, and the
    /// name of the run's network.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// Creates the network if the run needs one, builds the image if the target says so and
    /// it was not built in this run yet (the sweep of dead runs first). Returns the
    /// network's name, if the run has one, and the image to start: the id of the run's own
    /// build, or the target's image.
    async fn prepare(
        &self,
        spec: &StartSpec,
        target: &DockerTarget,
    ) -> Result<(Option<String>, String), StartFailure> {
        let mut state = self.state.lock().await;
        self.prepare_run(&mut state, spec).await?;
        if let Some(build) = &target.build
            && !state.images.contains_key(&target.image)
        {
            // A dead run's image of the same tag must be gone first, or this run would take
            // it for one that existed before the run and leave its own build behind. A build
            // takes far longer than the sweep, so this costs little.
            Self::start_sweep(&mut state);
            if let Some(sweep) = state.sweep.take() {
                let _ = blocking::unblock(move || sweep.join()).await;
            }
            let built = self.build(&target.image, build, &spec.base_dir).await?;
            state.images.insert(target.image.clone(), built);
        }
        let image = match state.images.get(&target.image) {
            Some(built) if target.build.is_some() => built.id.clone(),
            _ => target.image.clone(),
        };
        if target.build.is_none() {
            let image = &target.image;
            let known = || {
                PRESENT
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(image)
            };
            let pull = match spec.pull {
                PullPolicy::Never => false,
                PullPolicy::Always => !state.pulled.contains(image),
                PullPolicy::Missing => !known() && !image_exists(&self.launcher, image).await,
            };
            if pull {
                pull_image(&self.launcher, spec, image).await?;
                state.pulled.insert(image.clone());
            }
            if spec.pull != PullPolicy::Never {
                PRESENT
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(image.clone());
            }
        }
        Ok((state.network.as_ref().map(|n| n.name().to_string()), image))
    }

    /// Starts the sweep of dead runs, once per run, on a thread of its own.
    pub(super) fn start_sweep(state: &mut RunState) {
        if !state.swept {
            state.swept = true;
            state.sweep = std::thread::Builder::new()
                .name("harness-docker-janitor".into())
                .spawn(|| futures_lite::future::block_on(sweep_dead_runs(&LocalLauncher)))
                .map_err(|e| tracing::warn!("start the docker janitor: {e}"))
                .ok();
        }
    }

    /// Starts the sweep of dead runs once a container of the run has started: beside the
    /// start, its docker commands would compete with it for the machine.
    pub(super) async fn sweep_after_start(&self) {
        Self::start_sweep(&mut *self.state.lock().await);
    }

    /// Creates the network if the run needs one.
    pub(super) async fn prepare_run(
        &self,
        state: &mut RunState,
        spec: &StartSpec,
    ) -> Result<(), StartFailure> {
        if spec.containers_meet && state.network.is_none() {
            let network = DockerNetwork::create_labelled(
                &self.launcher,
                self.run.clone(),
                [(RUN_LABEL, self.run.as_str())],
            )
            .await
            .map_err(StartFailure::Launch)?;
            state.network = Some(network);
        }
        Ok(())
    }

    /// Builds `tag` from `build`; the build stays after the run if the tag named an image
    /// that harness did not build (the user's own).
    async fn build(
        &self,
        tag: &str,
        build: &DockerBuild,
        base_dir: &Path,
    ) -> Result<Build, StartFailure> {
        let binary: PathBuf = base_dir
            .join(&build.binary)
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        super::process::check_binary(&binary)?;
        let program = binary
            .file_name()
            .map(|n| format!("{PROGRAM_DIR}/{}", n.to_string_lossy()))
            .expect("a file has a name");
        let base = match build.base {
            BuildBase::Busybox => DockerImage::busybox(tag),
            BuildBase::Scratch => DockerImage::scratch(tag),
        };
        // Another run's build under the tag (a shared copy beside an isolated one, a parallel
        // test process) is that run's to remove, by id; only a tag of the user's is kept.
        let users = image_run(&self.launcher, tag)
            .await
            .is_some_and(|run| run.is_none());
        let built = base
            .with_binary(&binary, &program)
            .with_bytes(NSSWITCH, "/etc/nsswitch.conf", 0o644)
            .with_entrypoint([program.as_str()])
            .with_cmd(Vec::<String>::new())
            .with_label(RUN_LABEL, &self.run)
            .build(&self.launcher)
            .await
            .map_err(|source| StartFailure::Build {
                image: tag.to_string(),
                source,
            })?;
        // Removed by id, not by tag: if another run builds the same tag meanwhile, the tag
        // moves to its image, and this run must remove its own image, not that one.
        let id = built.id().to_string();
        let _ = built.keep();
        Ok(Build { id, owned: !users })
    }

    /// The container for `spec`, on `network` if the run has one (else Docker's default
    /// bridge).
    fn container(
        &self,
        spec: &StartSpec,
        target: &DockerTarget,
        image: &str,
        network: Option<&str>,
    ) -> DockerContainer {
        let name = &spec.service.name;
        let engine = super::engine::engine();
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let mut c = DockerContainer::new(image).with_name(format!("{}-{name}-{n}", self.run));
        let host_network = target.network_mode == NetworkMode::Host;
        if host_network {
            // This machine's ports: nothing is published, and it is on no network of the run.
            c = c.with_docker_arg("--network=host");
        } else if let Some(network) = network {
            c = c.with_network(network).with_network_alias(name);
        }
        for mount in &target.tmpfs {
            c = c.with_docker_arg(format!("--tmpfs={mount}"));
        }
        if let Some(cpus) = target.cpus {
            c = c.with_docker_arg(format!("--cpus={}", cpus.as_arg()));
        }
        if let Some(bytes) = target.memory {
            c = c.with_docker_arg(format!("--memory={bytes}"));
        }
        if target.uses_init() {
            c = c.with_init();
        }
        if let Some(signal) = spec.service.stop_signal {
            c = c.with_stop_signal(signal.into());
        }
        let mut c = c
            .with_label(RUN_LABEL, &self.run)
            .with_label(SERVICE_LABEL, name)
            .with_pull(Pull::Never)
            .with_bounded_output(super::process::OUTPUT_BATCHES)
            .with_publish_address(engine.publish.to_string())
            .with_docker_arg(format!("--add-host={HOST_GATEWAY}:{}", engine.this_machine));
        for (key, value) in spec.env() {
            c = c.with_env(key, value);
        }
        if let (Some(port), Some(host_port), false) = (spec.port, spec.host_port, host_network) {
            c = c.with_port_mapping(port, host_port);
        }
        for port in &target.ports {
            if Some(*port) != spec.port {
                c = c.with_port(*port);
            }
        }
        for volume in &target.volumes {
            c = c.with_volume(volume_spec(volume, &spec.base_dir));
        }
        if let Some(dir) = &target.working_dir {
            c = c.with_workdir(dir);
        }
        for file in &spec.files {
            c = c.with_file(&file.target, &file.local, file.mode);
        }
        if let Some(entrypoint) = &target.entrypoint {
            let mut words = entrypoint.iter();
            // `--entrypoint ""` clears the image's entrypoint.
            c = c.with_entrypoint(words.next().cloned().unwrap_or_default());
            c = c.with_args(words.cloned());
        }
        if let Some(command) = &target.command {
            c = c.with_args(command.iter().cloned());
        }
        c
    }

    /// Removes the run's containers, network and built images.
    async fn remove_run(
        launcher: &LocalLauncher,
        run: &str,
        live: &AtomicU64,
        state: &mut RunState,
    ) -> Result<(), LaunchError> {
        let mut first_error = None;
        if let Some(sweep) = state.sweep.take() {
            // Done long ago, as a rule; waited for so that no docker command of it outlives
            // the run.
            let _ = blocking::unblock(move || sweep.join()).await;
        }
        // Containers first: a network with containers on it cannot go, nor an image in use.
        // Services stopped on purpose are gone already; one whose removal failed is looked
        // for by its label.
        if live.load(Ordering::SeqCst) > 0 {
            remove_labelled(launcher, "container", &format!("{RUN_LABEL}={run}")).await;
            live.store(0, Ordering::SeqCst);
        }
        if let Some(network) = state.network.take() {
            let name = network.name().to_string();
            if let Err(e) = remove_network(launcher, network).await {
                tracing::warn!("remove network {name}: {e}");
                first_error.get_or_insert(e);
            }
        }
        for (tag, built) in std::mem::take(&mut state.images) {
            if built.owned
                && let Err(e) = remove_image(launcher, &tag, &built.id).await
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl ServiceExecutor for DockerExecutor {
    fn start<'a>(
        &'a self,
        spec: &'a StartSpec,
        log: LogBuffer,
    ) -> BoxFuture<'a, Result<Box<dyn RunningService>, StartFailure>> {
        Box::pin(async move {
            self.used.store(true, Ordering::SeqCst);
            STARTED_ANY.store(true, Ordering::SeqCst);
            let target = match &spec.service.target {
                ServiceTarget::Docker(target) => target,
                ServiceTarget::Compose(target) => {
                    return self.start_compose(spec, target, log).await;
                }
                other => return Err(StartFailure::Unsupported(other.kind())),
            };
            let (network, image) = self.prepare(spec, target).await?;
            let container = self.container(spec, target, &image, network.as_deref());
            let mut handle = container
                .launch(&self.launcher)
                .await
                .map_err(|e| match e {
                    LaunchError::NoSuchImage { image, .. } => {
                        // Gone since it was seen: looked for again at the next start.
                        PRESENT
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&image);
                        StartFailure::MissingImage(image)
                    }
                    other => StartFailure::Launch(other),
                })?;
            self.live.fetch_add(1, Ordering::SeqCst);
            self.sweep_after_start().await;
            let events = handle.take_events().expect("a fresh handle has its events");
            let exit = pump_events(events, log, format!("harness-log-{}", handle.name()))?;
            let published = target
                .ports
                .iter()
                .filter_map(|&p| handle.host_port(p).map(|h| (p, h)))
                .collect();
            Ok(Box::new(ContainerService {
                live: self.live.clone(),
                keeps_data: !target.volumes.is_empty(),
                id: handle.container_id().to_string(),
                pid: handle.id(),
                ip: handle.ip_address(),
                published,
                handle: Some(handle),
                exit,
            }) as Box<dyn RunningService>)
        })
    }

    fn clean_up(&self) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            if !self.used.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut state = self.state.lock().await;
            Self::remove_run(&self.launcher, &self.run, &self.live, &mut state).await?;
            // Nothing is left for the drop to look for, unless a start comes again.
            self.used.store(false, Ordering::SeqCst);
            Ok(())
        })
    }
}

impl Drop for DockerExecutor {
    /// Removes what the run still has, and waits for it: a manager dropped without `stop_all`
    /// leaves nothing behind either.
    fn drop(&mut self) {
        if !*self.used.get_mut() {
            return;
        }
        let state = self.state.get_mut();
        let removal = Self::remove_run(&self.launcher, &self.run, &self.live, state);
        if let Err(e) = futures_lite::future::block_on(removal) {
            tracing::warn!("remove docker run {}: {e}", self.run);
        }
    }
}

/// A running container.
struct ContainerService {
    handle: Option<ContainerHandle<LocalLauncher>>,
    /// The executor's count of containers that may still exist.
    live: Arc<AtomicU64>,
    /// Whether it has `volumes:`, which outlive it: then it is stopped gracefully even when
    /// the run is torn down.
    keeps_data: bool,
    id: String,
    pid: Option<u32>,
    ip: Option<IpAddr>,
    published: Vec<(u16, u16)>,
    exit: Arc<Mutex<ExitWatch>>,
}

impl RunningService for ContainerService {
    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn container_id(&self) -> Option<String> {
        Some(self.id.clone())
    }

    fn exec(
        &self,
        argv: &[String],
    ) -> BoxFuture<'static, Result<crate::exec::Output, LaunchError>> {
        let command = super::executor::exec_command(argv);
        let launcher = self.handle.as_ref().map(|handle| handle.exec_launcher());
        let pid = self.pid.unwrap_or_default();
        Box::pin(async move {
            match launcher {
                Some(launcher) => launcher.output(&command?).await,
                None => Err(LaunchError::AlreadyExited { pid }),
            }
        })
    }

    fn direct_ip(&self) -> Option<IpAddr> {
        self.ip
    }

    fn published_ports(&self) -> Vec<(u16, u16)> {
        self.published.clone()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.handle
            .as_ref()
            .and_then(|h| h.try_status())
            .or_else(|| ExitWatch::status(&self.exit))
    }

    fn on_exit(&self, notify: Box<dyn FnOnce(ExitStatus) + Send>) {
        ExitWatch::on_exit(&self.exit, notify);
    }

    fn stop(&mut self, how: StopRequest) -> BoxFuture<'_, Result<ExitStatus, LaunchError>> {
        Box::pin(async move {
            let Some(mut handle) = self.handle.take() else {
                return Ok(ExitWatch::status(&self.exit).unwrap_or(ExitStatus::from_code(0)));
            };
            if how.teardown && !self.keeps_data {
                // Its filesystem goes with it: a graceful stop buys nothing. One forced
                // removal, as `docker rm -f` by hand.
                self.remove(handle).await?;
                return Ok(ExitWatch::status(&self.exit).unwrap_or(ExitStatus::from_signal(9)));
            }
            let stopped = handle.stop(how.grace).await;
            let removed = self.remove(handle).await;
            let status = stopped?;
            removed.map(|()| status)
        })
    }
}

impl ContainerService {
    /// Removes the container (`docker rm --force`) and waits until it is gone.
    async fn remove(&self, handle: ContainerHandle<LocalLauncher>) -> Result<(), LaunchError> {
        handle.remove().await?;
        count_gone(&self.live);
        Ok(())
    }
}

/// Counts one of the run's containers gone from `live`. Saturating: the run's removal may
/// have counted it gone already.
pub(super) fn count_gone(live: &AtomicU64) {
    let _ = live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
}

impl Drop for ContainerService {
    /// Removes the container and waits until it is gone, so that the run's network can go
    /// right after.
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take()
            && let Err(e) = futures_lite::future::block_on(self.remove(handle))
        {
            tracing::warn!("remove a service's container: {e}");
        }
    }
}

/// Who made something in Docker: the process and its pid namespace, as its labels say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Owner {
    pub(super) pid: Option<u32>,
    /// `None` for what carries no namespace label (made before there was one): taken as ours.
    pub(super) pidns: Option<u64>,
}

impl Owner {
    /// Whether its pid means what it means here: the same pid namespace.
    fn here(&self) -> bool {
        self.pidns.is_none() || self.pidns == crate::exec::pid_namespace()
    }

    /// Whether it is this process.
    fn is_this_process(&self) -> bool {
        self.here() && self.pid == Some(std::process::id())
    }

    /// Whether it is a process of this pid namespace that is gone. What a process in another
    /// namespace made (a test job in a container, with this engine's socket) is never judged.
    fn is_dead(&self) -> bool {
        self.here() && self.pid.is_some_and(|pid| !process_alive(pid))
    }
}

/// Lines of `ID|OWNER_PID|OWNER_PIDNS` (either may be empty) as docker's listings print them.
fn ids_and_owners(lines: &[String]) -> Vec<(String, Owner)> {
    lines
        .iter()
        .filter_map(|line| {
            let mut fields = line.trim().split('|');
            let id = fields.next().filter(|id| !id.is_empty())?.to_string();
            let pid = fields.next().and_then(|p| p.trim().parse().ok());
            let pidns = fields.next().and_then(|n| n.trim().parse().ok());
            Some((id, Owner { pid, pidns }))
        })
        .collect()
}

/// A run id nobody else uses: `harness-` and twelve hex digits.
fn run_id() -> String {
    crate::exec::docker::unique_name("harness")
}

/// A volume with a relative source (`./data:/data`) resolved against `base`; named volumes
/// and absolute paths as written.
fn volume_spec(volume: &str, base: &Path) -> String {
    if volume.starts_with("./") || volume.starts_with("../") {
        format!("{}/{volume}", base.display())
    } else {
        volume.to_string()
    }
}

/// `docker pull image`, each line it writes reported as the start's progress (and logged at
/// info level). A failed pull names the image and the engine's reason.
async fn pull_image(
    launcher: &LocalLauncher,
    spec: &StartSpec,
    image: &str,
) -> Result<(), StartFailure> {
    let cmd = Command::new("docker").args(["pull", image]);
    let failed = |reason: String| StartFailure::Pull {
        image: image.to_string(),
        reason,
    };
    let mut pull = launcher
        .spawn(&cmd)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut events = pull.take_events().expect("a fresh handle has its events");
    let mut said = Vec::new();
    spec.report.line(&format!("pulling {image}"));
    while let Some(event) = events.recv().await {
        match event {
            crate::exec::ProcessEvent::Stdout(line) => {
                tracing::info!(service = %spec.service.name, %image, "{line}");
                spec.report.line(&line);
            }
            crate::exec::ProcessEvent::Stderr(line) => said.push(line),
            _ => {}
        }
    }
    let status = pull.wait().await.map_err(|e| failed(e.to_string()))?;
    if status.success() {
        return Ok(());
    }
    let reason = said.join("\n");
    let reason = reason.trim();
    Err(failed(if reason.is_empty() {
        format!("docker pull {status}")
    } else {
        reason
            .strip_prefix("Error response from daemon: ")
            .unwrap_or(reason)
            .to_string()
    }))
}

/// The run whose build the image `tag` names: `None` if there is no such image, `Some(None)`
/// if harness did not build it.
async fn image_run(launcher: &LocalLauncher, tag: &str) -> Option<Option<String>> {
    let format = format!("{{{{index .Config.Labels \"{RUN_LABEL}\"}}}}");
    let cmd = Command::new("docker").args(["image", "inspect", "--format", &format, tag]);
    let out = launcher
        .output(&cmd)
        .await
        .ok()
        .filter(|out| out.success())?;
    let run = out.stdout_text().trim().to_string();
    Some((!run.is_empty() && run != "<no value>").then_some(run))
}

async fn image_exists(launcher: &LocalLauncher, tag: &str) -> bool {
    let cmd = Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]);
    launcher.output(&cmd).await.is_ok_and(|out| out.success())
}

/// Removes image `id` (built as `tag`), retrying while a container that is being removed
/// still holds it. An image that is gone already is fine.
async fn remove_image(launcher: &LocalLauncher, tag: &str, id: &str) -> Result<(), LaunchError> {
    let rm = Command::new("docker").args(["image", "rm", id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = launcher.output(&rm).await?;
        let stderr = out.stderr_text();
        if out.success() || stderr.contains("No such image") {
            return Ok(());
        }
        if !stderr.contains("conflict") || Instant::now() > deadline {
            return Err(LaunchError::CommandFailed {
                doing: format!("remove image `{tag}` ({id})"),
                command: rm.display(),
                status: out.status.unwrap_or(ExitStatus::from_code(-1)),
                stderr,
            });
        }
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Removes a network, retrying while containers are still leaving it.
async fn remove_network(
    launcher: &LocalLauncher,
    network: DockerNetwork<LocalLauncher>,
) -> Result<(), LaunchError> {
    let name = network.name().to_string();
    // The value's own removal is one try; the retries are here.
    drop(network.remove().await.err());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cmd = Command::new("docker").args(["network", "inspect", "--format", "{{.Id}}", &name]);
        let out = launcher.output(&cmd).await?;
        if !out.success() {
            return Ok(()); // gone
        }
        let rm = Command::new("docker").args(["network", "rm", &name]);
        let out = launcher.output(&rm).await?;
        if out.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LaunchError::CommandFailed {
                doing: format!("remove network `{name}`"),
                command: rm.display(),
                status: out.status.unwrap_or(ExitStatus::from_code(-1)),
                stderr: out.stderr_text(),
            });
        }
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Removes every object of `kind` (`container`, `network`, `image`) carrying `label`
/// (`key=value` or `key`). Failures are logged: this is cleanup.
async fn remove_labelled(launcher: &LocalLauncher, kind: &str, label: &str) {
    for (id, _) in list_labelled(launcher, kind, label).await {
        remove_object(launcher, kind, &id).await;
    }
}

/// The ids of the objects of `kind` carrying `label`, each with its [`OWNER_PID_LABEL`].
async fn list_labelled(launcher: &LocalLauncher, kind: &str, label: &str) -> Vec<(String, Owner)> {
    if let Some(kind) = kind.strip_prefix("compose-") {
        return super::compose::list_projects(launcher, kind).await;
    }
    let filter = format!("label={label}");
    let owner = format!(
        "{{{{.ID}}}}|{{{{.Label \"{OWNER_PID_LABEL}\"}}}}|{{{{.Label \"{OWNER_PIDNS_LABEL}\"}}}}"
    );
    let list = match kind {
        "container" => vec![
            "ps",
            "--all",
            "--no-trunc",
            "--filter",
            &filter,
            "--format",
            &owner,
        ],
        "network" => vec![
            "network",
            "ls",
            "--no-trunc",
            "--filter",
            &filter,
            "--format",
            &owner,
        ],
        // `docker image ls` has no per-label template: ids here, owners below.
        _ => vec!["image", "ls", "--quiet", "--no-trunc", "--filter", &filter],
    };
    let out = match launcher.output(&Command::new("docker").args(list)).await {
        Ok(out) if out.success() => out,
        Ok(out) => {
            tracing::debug!("list {kind}s labelled {label}: {}", out.stderr_text());
            return Vec::new();
        }
        Err(e) => {
            tracing::debug!("list {kind}s labelled {label}: {e}");
            return Vec::new();
        }
    };
    let mut found = ids_and_owners(&out.stdout);
    found.dedup_by(|a, b| a.0 == b.0);
    if kind == "image" && !found.is_empty() {
        let mut args = vec![
            "image".to_string(),
            "inspect".into(),
            "--format".into(),
            format!(
                "{{{{.Id}}}}|{{{{index .Config.Labels \"{OWNER_PID_LABEL}\"}}}}|\
                 {{{{index .Config.Labels \"{OWNER_PIDNS_LABEL}\"}}}}"
            ),
        ];
        args.extend(found.iter().map(|(id, _)| id.clone()));
        if let Ok(out) = launcher.output(&Command::new("docker").args(args)).await {
            found = ids_and_owners(&out.stdout);
        }
    }
    found
}

async fn remove_object(launcher: &LocalLauncher, kind: &str, id: &str) {
    let args = match kind {
        "container" => vec!["rm", "--force", "--volumes", id],
        "network" | "compose-network" => vec!["network", "rm", id],
        "compose-volume" => vec!["volume", "rm", "--force", id],
        _ => vec!["image", "rm", "--force", id],
    };
    match launcher.output(&Command::new("docker").args(args)).await {
        Ok(out) if out.success() => tracing::debug!("removed {kind} {id}"),
        Ok(out) => {
            let stderr = out.stderr_text();
            // Gone meanwhile, or being removed by its own handle: either way it goes.
            if !stderr.contains("No such") && !stderr.contains("already in progress") {
                tracing::warn!("remove {kind} {id}: {}", stderr.trim());
            }
        }
        Err(e) => tracing::warn!("remove {kind} {id}: {e}"),
    }
}

/// What a run leaves in Docker, in the order it can be removed: containers first (a network
/// or volume in use cannot go), then the networks and volumes of its compose projects (named
/// for their owner: see [`super::compose`]), its own network and images.
const KINDS: [&str; 5] = [
    "container",
    "compose-network",
    "compose-volume",
    "network",
    "image",
];

/// Set once this process has started a container, so that [`remove_own_runs`] knows whether
/// there is anything to look for.
static STARTED_ANY: AtomicBool = AtomicBool::new(false);

/// Removes the containers, then networks, then images of this process's runs: for a process
/// about to be ended by a signal, whose destructors will not run.
pub(crate) async fn remove_own_runs() {
    if !STARTED_ANY.load(Ordering::SeqCst) {
        return;
    }
    let launcher = LocalLauncher;
    for kind in KINDS {
        for (id, owner) in list_labelled(&launcher, kind, RUN_LABEL).await {
            if owner.is_this_process() {
                remove_object(&launcher, kind, &id).await;
            }
        }
    }
}

/// The janitor: removes the containers, then networks, then images of runs whose owning
/// process is gone (a run killed before it could clean up). Only what carries [`RUN_LABEL`]
/// is looked at, so what other tools (or other harness APIs) made is left alone.
async fn sweep_dead_runs(launcher: &LocalLauncher) {
    for kind in KINDS {
        for (id, owner) in list_labelled(launcher, kind, RUN_LABEL).await {
            if owner.is_dead() {
                tracing::info!("removing {kind} {id} left by dead process {owner:?}");
                remove_object(launcher, kind, &id).await;
            }
        }
    }
}

/// Whether a process with this id exists on this machine.
fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_volumes_are_resolved_against_the_base_directory() {
        let base = Path::new("/project");
        assert_eq!(volume_spec("./data:/data", base), "/project/./data:/data");
        assert_eq!(volume_spec("/srv:/srv:ro", base), "/srv:/srv:ro");
        assert_eq!(volume_spec("cache:/cache", base), "cache:/cache");
    }

    #[test]
    fn run_ids_differ() {
        let (a, b) = (run_id(), run_id());
        assert_ne!(a, b);
        assert!(a.starts_with("harness-") && a.len() == 20, "{a}");
    }
}
