//! The topology model: what a services.yaml file says, as plain data.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Serialize, Serializer};

/// A whole topology: the network settings and every service, in the order of the file.
///
/// Build one with [`TopologyConfig::load`] (or its overlay variants); a loaded topology has
/// passed every check in the module documentation, so its dependency graph is acyclic and every
/// name it mentions exists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopologyConfig {
    /// The optional `network:` section (ADR section 2).
    pub network: NetworkConfig,
    /// The optional `lab:` section: emulated hosts built for the run (see [`LabConfig`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<LabConfig>,
    /// Every service by name, in the order the file lists them (overlays append new services).
    pub services: IndexMap<String, ServiceConfig>,
    /// The files this topology was read from: the main file first, then each overlay in the
    /// order it was applied. Relative paths inside the topology (binaries, packages, volumes)
    /// are kept as written.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

impl TopologyConfig {
    /// The directory of the main topology file, for resolving relative paths in the topology
    /// against it (as docker compose does, also for paths in its override files); `.` for a
    /// topology read from a bare file name or from memory.
    pub fn project_dir(&self) -> &Path {
        match self.files.first().and_then(|f| f.parent()) {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// One service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.get(name)
    }
}

/// The `network:` section. Every field is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkConfig {
    /// The WireGuard mesh's subnet, used only when a service has a `wireguard` target.
    /// Defaults to the ADR's `10.42.0.0/16`.
    pub wireguard_subnet: Subnet,
    /// The interface through which LAN hosts are reached. `None` (the default) leaves the
    /// choice to the network layer, which takes the interface of the default route: the ADR's
    /// `eth0` is an example, not a name every machine has.
    pub lan_interface: Option<String>,
    /// The DNS server's port when one is set; see [`NetworkConfig::dns_port_or_default`].
    pub dns_port: Option<u16>,
}

impl NetworkConfig {
    /// The ADR's default subnet for the WireGuard mesh, `10.42.0.0/16`.
    pub const DEFAULT_WIREGUARD_SUBNET: Subnet = Subnet {
        addr: Ipv4Addr::new(10, 42, 0, 0),
        prefix: 16,
    };

    /// The DNS port to use: the configured one, else the ADR's defaults, 53 when running as
    /// root and 5353 otherwise (a non-root user cannot bind a port below 1024).
    pub fn dns_port_or_default(&self, root: bool) -> u16 {
        self.dns_port.unwrap_or(if root { 53 } else { 5353 })
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            wireguard_subnet: Self::DEFAULT_WIREGUARD_SUBNET,
            lan_interface: None,
            dns_port: None,
        }
    }
}

/// The `lab:` section: emulated hosts ([`crate::lab`]) that harness builds before the services
/// start and removes after they stop.
///
/// ```yaml
/// lab:
///   networks: { lan: auto, wan: 10.77.2.0/24 }
///   hosts:
///     cache-host: { networks: [lan] }
///     edge: { networks: [lan, wan] }
/// ```
///
/// A `remote_lan` target whose `host` names a lab host runs there: harness logs in as root
/// with the lab's key (the target's `user`, `port` and `key` are for the real host), and the
/// host's address on its first network is the service's address. An overlay that adds this
/// section and renames the targets' hosts turns a topology for real machines into one for
/// emulated ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LabConfig {
    /// Each network and its IPv4 subnet (`10.77.1.0/24`), or `auto` for a free /24.
    pub networks: IndexMap<String, String>,
    /// Each host, with the networks it is attached to (`eth0`, `eth1`, ... in that order).
    pub hosts: IndexMap<String, LabHostConfig>,
}

/// One host of a [`LabConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LabHostConfig {
    /// The networks it is attached to, at least one.
    pub networks: Vec<String>,
}

/// An IPv4 subnet such as `10.42.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    /// The network address; host bits are zero.
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

impl FromStr for Subnet {
    type Err = String;

    /// Parses `A.B.C.D/N`; the error says what was expected.
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || format!("expected an IPv4 subnet such as `10.42.0.0/16`, found `{s}`");
        let (addr, prefix) = s.split_once('/').ok_or_else(expected)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| expected())?;
        let prefix: u8 = prefix.parse().map_err(|_| expected())?;
        if prefix > 32 {
            return Err(format!("subnet prefix /{prefix} is longer than 32 bits"));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            let network = Ipv4Addr::from(u32::from(addr) & mask);
            return Err(format!(
                "`{s}` has host bits set; the subnet is `{network}/{prefix}`"
            ));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A cap on a service's log file, as a topology's `logs: { max_size: 64M, max_files: 3 }`
/// writes it (docker compose's `max-size` and `max-file`): when the file would grow past
/// `max_size` bytes it is renamed `NAME.log.1` (and `.1` to `.2`, up to `max_files - 1`
/// rotated files, the oldest removed) and a new `NAME.log` begins. `None` leaves the value to
/// the run: `HARNESS_LOG_MAX_SIZE` and `HARNESS_LOG_MAX_FILES`, else 64 MiB and 3 files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogLimits {
    /// The most bytes one log file holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// How many files the log is kept in: the live one and `max_files - 1` rotated ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

impl LogLimits {
    /// The smallest `max_size` accepted: 1 KiB.
    pub const MIN_SIZE: u64 = 1024;
    /// The most files a log may be kept in.
    pub const MAX_FILES: u32 = 100;

    /// Whether neither value is set.
    pub fn is_unset(&self) -> bool {
        self.max_size.is_none() && self.max_files.is_none()
    }
}

/// Environment variables in the order the file gives them.
pub type EnvMap = IndexMap<String, String>;

/// One service: where it runs and what it needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceConfig {
    /// The service's name, the key under `services:`; see [`validate_service_name`] for the
    /// rule.
    ///
    /// [`validate_service_name`]: super::validate_service_name
    pub name: String,
    /// Where and how it runs.
    pub target: ServiceTarget,
    /// Services that must be healthy before this one starts, in the order the file lists them.
    pub dependencies: Vec<String>,
    /// How to tell that the service is ready; `None` leaves it to the orchestrator's default.
    pub health_check: Option<HealthCheck>,
    /// The port the service listens on.
    pub port: PortSpec,
    /// The ADR's free-form `config:` map (section 5), converted to JSON values. An empty or
    /// comment-only `config:` is an empty map.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The `logs:` section: how large the service's log file may grow and how many rotated
    /// files are kept; what it leaves unset comes from the run (see [`LogLimits`]).
    #[serde(skip_serializing_if = "LogLimits::is_unset")]
    pub logs: LogLimits,
    /// The `files:` section: files put where the service runs before it starts, in the order
    /// the file lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ServiceFile>,
    /// `stop_signal:`: the signal that asks the service to stop (`TERM`, `INT`, `QUIT`, `HUP`,
    /// `USR1`, `USR2` or `KILL`, written with or without `SIG`); `None` is `TERM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<StopSignal>,
    /// `stop_grace:`: how long the service may take to stop before it is killed; `None`
    /// leaves it to the run (`harness up --stop-grace`, 5 s by default).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_optional_duration"
    )]
    pub stop_grace: Option<std::time::Duration>,
    /// `job:`: a one-shot step (a migration, seed data, a cluster's bootstrap) that runs to
    /// completion: done when it exits with status 0, which its dependents wait for instead of
    /// a health check; any other exit fails the start.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub job: bool,
    /// `rerun_on:`: for a job, the dependencies whose restart runs it again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rerun_on: Vec<String>,
    /// Where in which file each part of the service was written.
    #[serde(skip)]
    pub locations: FieldLocations,
}

/// A signal that asks a service to stop (`stop_signal:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StopSignal {
    /// `SIGTERM`, the default.
    Term,
    /// `SIGINT`, what Ctrl-C sends (PostgreSQL's fast shutdown).
    Int,
    /// `SIGQUIT` (nginx's graceful shutdown).
    Quit,
    /// `SIGHUP`.
    Hup,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGKILL`: no graceful stop at all.
    Kill,
}

impl StopSignal {
    /// Every signal `stop_signal:` takes, by its name without `SIG`.
    pub const ALL: [(&'static str, StopSignal); 7] = [
        ("TERM", StopSignal::Term),
        ("INT", StopSignal::Int),
        ("QUIT", StopSignal::Quit),
        ("HUP", StopSignal::Hup),
        ("USR1", StopSignal::Usr1),
        ("USR2", StopSignal::Usr2),
        ("KILL", StopSignal::Kill),
    ];

    /// The signal called `name` (`TERM`, `SIGTERM`, `sigterm`).
    pub fn from_name(name: &str) -> Option<StopSignal> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|(_, signal)| *signal)
    }

    /// Its name without `SIG`, as `docker --stop-signal` and `kill -s` take it.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .expect("every signal is listed")
    }
}

impl ServiceConfig {
    /// Where the service's name was written: the place to point at when the service as a whole
    /// fails ("service api-server failed to start").
    pub fn location(&self) -> &SourceLocation {
        &self.locations.service
    }

    /// Where a field of this service was written, by its path from the service:
    /// `target.process.args[1]`, `target.docker.env.POSTGRES_PASSWORD`, `dependencies[0]`,
    /// `health_check.interval`, `port`. A path that was not written (a default) gives the
    /// nearest written ancestor, and in the end the service's own location.
    pub fn location_of(&self, path: &str) -> &SourceLocation {
        self.locations.find(path)
    }

    /// The env var prefix for this service, such as `API_SERVER`; see [`env_prefix`].
    ///
    /// [`env_prefix`]: super::env_prefix
    pub fn env_prefix(&self) -> String {
        super::env_prefix(&self.name)
    }
}

/// A file put where a service runs before it starts (an entry of `files:`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceFile {
    /// Where its bytes come from.
    #[serde(flatten)]
    pub from: FileSource,
    /// Where it goes, as written: for a process, relative to the service's own directory
    /// (`${dir}`); in a container, an absolute path; on a LAN or mesh host, absolute or
    /// relative to the service's working directory (the login's home without one).
    pub target: String,
    /// Its permission bits; `None` keeps a source file's, and gives text `0644`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// The bytes of a [`ServiceFile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileSource {
    /// A file on this machine, relative to the base directory unless absolute.
    Source(String),
    /// Text given in the topology, with its `${...}` placeholders filled in.
    Content(String),
}

/// Source locations of a service's parts, by path (see [`ServiceConfig::location_of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldLocations {
    /// The service's name under `services:`.
    pub service: SourceLocation,
    /// Every field and element that was written, by path, in file order.
    pub fields: IndexMap<String, SourceLocation>,
}

impl FieldLocations {
    /// The locations of a service written at `service`, with no fields recorded yet.
    pub fn new(service: SourceLocation) -> Self {
        Self {
            service,
            fields: IndexMap::new(),
        }
    }

    /// The exact location of `path` if it was written, else the nearest ancestor's, else the
    /// service's.
    pub fn find(&self, path: &str) -> &SourceLocation {
        let mut path = path;
        loop {
            if let Some(location) = self.fields.get(path) {
                return location;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return &self.service,
            }
        }
    }
}

/// A place in a topology file: file, line and column, both counted from 1, the column in
/// characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceLocation {
    /// The file, as it was given to the loader.
    pub file: Arc<Path>,
    /// The line, from 1.
    pub line: u32,
    /// The column in characters, from 1.
    pub column: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Where a service runs. In the file, exactly one of `process:`, `docker:`, `remote_lan:` or
/// `wireguard:` under `target:`, as the ADR writes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTarget {
    /// A local process (`target: { process: {...} }`).
    Process(ProcessTarget),
    /// A Docker container on this machine (`target: { docker: {...} }`).
    Docker(DockerTarget),
    /// A program on a LAN host reached over SSH (`target: { remote_lan: {...} }`).
    RemoteLan(RemoteLanTarget),
    /// A package deployed to a remote host that joins the WireGuard mesh
    /// (`target: { wireguard: {...} }`).
    Wireguard(WireguardTarget),
    /// A service of a docker compose file, in a compose project of the run's own
    /// (`target: { compose: {...} }`).
    Compose(ComposeTarget),
}

impl ServiceTarget {
    /// The target's kind as the file writes it: `process`, `docker`, `remote_lan`,
    /// `wireguard`, `compose`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Process(_) => "process",
            Self::Docker(_) => "docker",
            Self::RemoteLan(_) => "remote_lan",
            Self::Wireguard(_) => "wireguard",
            Self::Compose(_) => "compose",
        }
    }

    /// The environment the file gives the service (none for `wireguard`, whose package
    /// carries its own, nor for `compose`, whose file does).
    pub fn env(&self) -> Option<&EnvMap> {
        match self {
            Self::Process(t) => Some(&t.env),
            Self::Docker(t) => Some(&t.env),
            Self::RemoteLan(t) => Some(&t.env),
            Self::Wireguard(_) | Self::Compose(_) => None,
        }
    }
}

/// `target: { compose: {...} }`: one service of an existing docker compose file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ComposeTarget {
    /// The compose file, relative to the base directory.
    pub file: String,
    /// The service in that file; the harness service's own name when unset.
    pub service: Option<String>,
}

/// `target: { process: {...} }`: a program started on this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessTarget {
    /// The program: a path, or a bare name to look up in `PATH`.
    pub binary: String,
    /// Its arguments; `${...}` placeholders are substituted at start.
    pub args: Vec<String>,
    /// Extra environment on top of the caller's; values may hold placeholders.
    pub env: EnvMap,
    /// The working directory, relative to the directory harness runs in (as the binary is);
    /// that directory when unset.
    pub working_dir: Option<String>,
}

/// `target: { docker: {...} }`: a container on this machine's Docker engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DockerTarget {
    /// The image, such as `postgres:14`; the tag given to the image when `build` is set.
    pub image: String,
    /// Build the image locally instead of pulling it (CI has no registry).
    pub build: Option<DockerBuild>,
    /// The container's environment; values may hold placeholders.
    pub env: EnvMap,
    /// Container ports to publish, each on a free host port.
    pub ports: Vec<u16>,
    /// Volumes as `docker run -v` takes them: `SOURCE:TARGET[:OPTIONS]`.
    pub volumes: Vec<String>,
    /// Replaces the image's command (`CMD`); placeholders are substituted.
    pub command: Option<Vec<String>>,
    /// Replaces the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// The working directory inside the container.
    pub working_dir: Option<String>,
    /// `pull:`: when the image is pulled from its registry; `None` leaves it to the run
    /// (`harness up --pull`, `HARNESS_PULL`, else `missing`). Refused with `build:`.
    pub pull: Option<PullPolicy>,
    /// `init:`: a tiny init as PID 1 (`docker run --init`), which forwards signals and reaps
    /// zombies, so that a program with no signal handler still stops on `SIGTERM`. `None`
    /// means on for images harness builds (`build:`) and off for others.
    pub init: Option<bool>,
    /// `tmpfs:`: in-memory mounts as `docker run --tmpfs` takes them, `PATH[:OPTIONS]`
    /// (`/var/lib/postgresql/data:size=256m`); gone with the container.
    pub tmpfs: Vec<String>,
    /// `network_mode:`: the run's network (or Docker's default bridge), or this machine's own
    /// network stack.
    pub network_mode: NetworkMode,
    /// `cpus:`: at most this many CPUs' worth of time (`docker run --cpus`).
    pub cpus: Option<Cpus>,
    /// `memory:`: at most this many bytes of memory (`docker run --memory`).
    pub memory: Option<u64>,
}

/// A container's `network_mode:`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Its own network namespace, on the run's network when containers meet there, else on
    /// Docker's default bridge; its ports are published on this machine.
    #[default]
    Bridge,
    /// This machine's network stack (`--network host`): it listens on this machine's ports
    /// and reaches this machine's services at `127.0.0.1`, like a local process.
    Host,
}

impl NetworkMode {
    /// Every mode, by name.
    pub const ALL: [(&'static str, NetworkMode); 2] =
        [("bridge", NetworkMode::Bridge), ("host", NetworkMode::Host)];

    /// The mode called `name`.
    pub fn from_name(name: &str) -> Option<NetworkMode> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }
}

/// A number of CPUs, kept in thousandths (`cpus: 0.5` is 500), as `docker run --cpus` takes it
/// to three decimals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpus(pub u32);

impl Cpus {
    /// As `docker run --cpus` takes it: `0.5`, `2`, `1.25`.
    pub fn as_arg(self) -> String {
        let (whole, part) = (self.0 / 1000, self.0 % 1000);
        if part == 0 {
            whole.to_string()
        } else {
            format!("{whole}.{part:03}")
                .trim_end_matches('0')
                .to_string()
        }
    }
}

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 1000.0)
    }
}

impl DockerTarget {
    /// Whether the container runs with an init as PID 1: `init:` if written, else whether
    /// harness builds the image.
    pub fn uses_init(&self) -> bool {
        self.init.unwrap_or(self.build.is_some())
    }
}

/// When a container's image is pulled (`pull:`, `--pull`, `HARNESS_PULL`), as compose's
/// `pull_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pulled when it is not on this machine.
    #[default]
    Missing,
    /// Pulled at every run, so that a moving tag (`:latest`) is current.
    Always,
    /// Never pulled: an image that is not here fails the start.
    Never,
}

impl PullPolicy {
    /// Every policy, by name.
    pub const ALL: [(&'static str, PullPolicy); 3] = [
        ("missing", PullPolicy::Missing),
        ("always", PullPolicy::Always),
        ("never", PullPolicy::Never),
    ];

    /// The policy called `name`.
    pub fn from_name(name: &str) -> Option<PullPolicy> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }
}

/// `docker: { build: {...} }`: an image made here from a local binary, with no registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DockerBuild {
    /// The binary copied into the image and made its entrypoint.
    pub binary: String,
    /// The base: an empty image or one with a busybox shell and tools.
    pub base: BuildBase,
}

/// What a locally built image starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildBase {
    /// An empty image (`FROM scratch`): the binary must be static.
    Scratch,
    /// busybox-static as `/bin/sh` and the usual tools.
    #[default]
    Busybox,
}

/// `target: { remote_lan: {...} }`: a program on a LAN host, started over SSH.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RemoteLanTarget {
    /// The host name or address.
    pub host: String,
    /// The SSH user.
    pub user: String,
    /// The program on that host.
    pub binary: String,
    /// Its arguments; placeholders are substituted.
    pub args: Vec<String>,
    /// Its environment; values may hold placeholders.
    pub env: EnvMap,
    /// The working directory on the host.
    pub working_dir: Option<String>,
    /// The SSH port, 22 when unset.
    pub port: Option<u16>,
    /// The SSH private key file, else the SSH client's defaults.
    pub key: Option<String>,
}

/// `target: { wireguard: {...} }`: a package deployed to a remote host on the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WireguardTarget {
    /// The host name or address.
    pub host: String,
    /// The SSH user.
    pub user: String,
    /// The package tarball to deploy (ADR section 4).
    pub package: String,
}

/// The `port:` of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// No `port:` in the file.
    #[default]
    Unset,
    /// `port: N`: this exact port.
    Fixed(u16),
    /// `port: auto`: a free port chosen at start.
    Auto,
}

impl PortSpec {
    /// The port, when fixed.
    pub fn fixed(self) -> Option<u16> {
        match self {
            Self::Fixed(port) => Some(port),
            _ => None,
        }
    }
}

impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Unset => s.serialize_none(),
            Self::Fixed(port) => s.serialize_u16(*port),
            Self::Auto => s.serialize_str("auto"),
        }
    }
}

/// `health_check:`: one probe plus its timing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthCheck {
    /// What is tried.
    pub probe: Probe,
    /// Time between two tries (`interval: 100ms`). Default 100 ms, for a test harness that
    /// wants services up quickly.
    #[serde(serialize_with = "serialize_duration")]
    pub interval: Duration,
    /// How long one try may take before it counts as failed. Default 1 s.
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// Consecutive failures, after the start period, that make the service unhealthy.
    /// Default 3.
    pub retries: u32,
    /// Time after start during which failures do not count, as in Docker: the first success
    /// still makes the service healthy at once. Default 30 s.
    #[serde(serialize_with = "serialize_duration")]
    pub start_period: Duration,
}

impl HealthCheck {
    /// Default time between tries.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
    /// Default time one try may take.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Default consecutive failures after the start period.
    pub const DEFAULT_RETRIES: u32 = 3;
    /// Default start period.
    pub const DEFAULT_START_PERIOD: Duration = Duration::from_secs(30);

    /// A check with `probe` and the default timing.
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            start_period: Self::DEFAULT_START_PERIOD,
        }
    }
}

/// The kinds of health probe.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// `tcp: {}`: the service's port accepts a connection.
    Tcp,
    /// `http: { path, status }`: a GET on the service's port answers with this status.
    Http {
        /// The request path, `/` by default.
        path: String,
        /// The expected status, 200 by default.
        status: u16,
    },
    /// `command: [program, args...]`: the command exits with status 0. It runs where the
    /// service runs; placeholders are substituted.
    Command(Vec<String>),
    /// `log: REGEX`: a line of the service's output matches.
    Log(LogPattern),
    /// `docker: {}`: the test of the container's own `HEALTHCHECK` (its image's, or a compose
    /// file's `healthcheck:`) exits with status 0 in the container (`docker` and `compose`
    /// targets only).
    Docker,
}

/// A compiled `log:` pattern. Two patterns are equal when their source text is.
#[derive(Clone, Debug)]
pub struct LogPattern(pub regex::Regex);

impl LogPattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether `line` matches.
    pub fn is_match(&self, line: &str) -> bool {
        self.0.is_match(line)
    }
}

impl PartialEq for LogPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for LogPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&super::format_duration(*d))
}

fn serialize_optional_duration<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serialize_duration(d, s),
        None => s.serialize_none(),
    }
}
