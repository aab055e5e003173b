//! What the registry knows about a service: its entry, endpoints, location, how it runs and the
//! state machine its lifecycle follows.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A moment, as milliseconds since the Unix epoch (UTC). In JSON it is a plain integer, which a
/// JavaScript client turns into a date with `new Date(ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// The same moment as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        // A clock set before 1970 reads as the epoch rather than failing.
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Where a service's lifecycle stands.
///
/// The allowed moves form an explicit table, [`ServiceState::can_transition_to`]:
///
/// ```text
/// Pending   -> Starting | Stopped  | Failed
/// Starting  -> Running  | Stopping | Failed | Completed
/// Running   -> Stopping | Failed
/// Stopping  -> Stopped  | Failed
/// Stopped   -> Starting
/// Failed    -> Starting | Stopping | Stopped
/// Completed -> Starting | Stopping | Stopped
/// ```
///
/// A restart is `Running -> Stopping -> Stopped -> Starting -> Running`; a crash and restart is
/// `Running -> Failed -> Starting -> Running`. Staying in the same state is not a transition.
///
/// In JSON a state is an object tagged by `status`: `{"status": "running"}`,
/// `{"status": "failed", "reason": "exited with code 1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ServiceState {
    /// Registered, not started yet.
    Pending,
    /// Being started: spawned, not yet healthy.
    Starting,
    /// Started and healthy.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped on purpose.
    Stopped,
    /// Failed to start, crashed or became unhealthy.
    Failed {
        /// Why, as a fragment ("exited with code 1", "no answer on port 5432 within 30s").
        reason: String,
    },
    /// A job (`job: true`) that ran to completion: it exited with status 0.
    Completed,
}

/// A [`ServiceState`] without its data, for tables and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// [`ServiceState::Pending`].
    Pending,
    /// [`ServiceState::Starting`].
    Starting,
    /// [`ServiceState::Running`].
    Running,
    /// [`ServiceState::Stopping`].
    Stopping,
    /// [`ServiceState::Stopped`].
    Stopped,
    /// [`ServiceState::Failed`].
    Failed,
    /// [`ServiceState::Completed`].
    Completed,
}

impl ServiceState {
    /// A failed state with the given reason.
    pub fn failed(reason: impl Into<String>) -> Self {
        ServiceState::Failed {
            reason: reason.into(),
        }
    }

    /// Which state this is, without its data.
    pub fn kind(&self) -> StateKind {
        match self {
            ServiceState::Pending => StateKind::Pending,
            ServiceState::Starting => StateKind::Starting,
            ServiceState::Running => StateKind::Running,
            ServiceState::Stopping => StateKind::Stopping,
            ServiceState::Stopped => StateKind::Stopped,
            ServiceState::Failed { .. } => StateKind::Failed,
            ServiceState::Completed => StateKind::Completed,
        }
    }

    /// Whether a service in this state may move to `next` (the table in the type's docs).
    pub fn can_transition_to(&self, next: &ServiceState) -> bool {
        self.kind().can_transition_to(next.kind())
    }

    /// Whether the service's process is, or may be, alive: starting, running or stopping.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            ServiceState::Starting | ServiceState::Running | ServiceState::Stopping
        )
    }
}

impl StateKind {
    /// The transition table of [`ServiceState`], on kinds.
    pub fn can_transition_to(self, next: StateKind) -> bool {
        use StateKind::*;
        matches!(
            (self, next),
            (Pending, Starting | Stopped | Failed)
                | (Starting, Running | Stopping | Failed | Completed)
                | (Running, Stopping | Failed)
                | (Stopping, Stopped | Failed)
                | (Stopped, Starting)
                | (Failed | Completed, Starting | Stopping | Stopped)
        )
    }

    /// The name used in JSON: `"running"`, `"failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Pending => "pending",
            StateKind::Starting => "starting",
            StateKind::Running => "running",
            StateKind::Stopping => "stopping",
            StateKind::Stopped => "stopped",
            StateKind::Completed => "completed",
            StateKind::Failed => "failed",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Failed { reason } => write!(f, "failed ({reason})"),
            other => f.write_str(other.kind().as_str()),
        }
    }
}

/// Which network a service sits on, which decides the addresses others reach it at (ADR-007,
/// section 3).
///
/// In JSON: `{"kind": "local"}`, `{"kind": "lan", "host": "192.168.1.100"}`,
/// `{"kind": "wireguard", "host": "aws-load-test-1", "mesh_ip": "10.42.0.10"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// This machine: a local process or a container on the local Docker engine.
    Local,
    /// A machine on the LAN, reached directly.
    Lan {
        /// The machine's address or name.
        host: String,
    },
    /// A remote machine joined to the on-demand WireGuard mesh.
    #[serde(rename = "wireguard")]
    WireGuard {
        /// The machine's public address or name.
        host: String,
        /// Its address inside the mesh.
        mesh_ip: IpAddr,
    },
}

impl Location {
    /// The network on which a service at `self` reaches a service at `target`: WireGuard if
    /// either side is on the mesh, the LAN if either side is on the LAN (a LAN host reaches this
    /// machine by its LAN address, and this machine reaches a LAN host the same way), the host
    /// network when both are local.
    pub fn network_to(&self, target: &Location) -> Network {
        match (self, target) {
            (Location::WireGuard { .. }, _) | (_, Location::WireGuard { .. }) => Network::WireGuard,
            (Location::Lan { .. }, _) | (_, Location::Lan { .. }) => Network::Lan,
            (Location::Local, Location::Local) => Network::Host,
        }
    }

    /// The host this location names, if it is not this machine.
    pub fn host(&self) -> Option<&str> {
        match self {
            Location::Local => None,
            Location::Lan { host } | Location::WireGuard { host, .. } => Some(host),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local => f.write_str("this machine"),
            Location::Lan { host } => write!(f, "LAN host {host}"),
            Location::WireGuard { host, mesh_ip } => write!(f, "WireGuard host {host} ({mesh_ip})"),
        }
    }
}

/// One of the networks an endpoint may have an address on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// This machine's own network: loopback, host addresses, Docker bridges.
    Host,
    /// The local area network.
    Lan,
    /// The WireGuard mesh.
    #[serde(rename = "wireguard")]
    WireGuard,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Host => "host",
            Network::Lan => "LAN",
            Network::WireGuard => "WireGuard",
        })
    }
}

/// A named address a service listens on, with the address it has on each network (the ADR's
/// registry tree: `host-addr`, `lan-addr`, `wireguard-addr`, `public-addr`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The endpoint's name within its service; a service's first endpoint is usually `main`.
    pub name: String,
    /// The address at which this machine (the harness and its tests) reaches the endpoint.
    pub address: SocketAddr,
    /// The address on this machine's own network (loopback, host or Docker bridge address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_addr: Option<SocketAddr>,
    /// The address on the LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_addr: Option<SocketAddr>,
    /// The address inside the WireGuard mesh, when the mesh is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_addr: Option<SocketAddr>,
    /// The public address of a remote machine, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_addr: Option<SocketAddr>,
}

impl Endpoint {
    /// An endpoint reached at `address`, with no per-network addresses yet.
    pub fn new(name: impl Into<String>, address: SocketAddr) -> Self {
        Endpoint {
            name: name.into(),
            address,
            host_addr: None,
            lan_addr: None,
            wireguard_addr: None,
            public_addr: None,
        }
    }

    /// Sets the address on this machine's network.
    pub fn with_host_addr(mut self, addr: SocketAddr) -> Self {
        self.host_addr = Some(addr);
        self
    }

    /// Sets the LAN address.
    pub fn with_lan_addr(mut self, addr: SocketAddr) -> Self {
        self.lan_addr = Some(addr);
        self
    }

    /// Sets the WireGuard address.
    pub fn with_wireguard_addr(mut self, addr: SocketAddr) -> Self {
        self.wireguard_addr = Some(addr);
        self
    }

    /// Sets the public address.
    pub fn with_public_addr(mut self, addr: SocketAddr) -> Self {
        self.public_addr = Some(addr);
        self
    }

    /// The address on `network`. On the host network an endpoint without a `host_addr` is
    /// reached at its main `address`; the LAN and the mesh need their own address.
    pub fn address_on(&self, network: Network) -> Option<SocketAddr> {
        match network {
            Network::Host => Some(self.host_addr.unwrap_or(self.address)),
            Network::Lan => self.lan_addr,
            Network::WireGuard => self.wireguard_addr,
        }
    }
}

/// How a service is run (the ADR's `target:` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionKind {
    /// A local process.
    Process,
    /// A Docker container.
    Docker,
    /// A process on a LAN host, over SSH.
    RemoteLan,
    /// A process on a remote host joined through the WireGuard mesh.
    Wireguard,
    /// A docker-compose service.
    Compose,
    /// A systemd unit.
    Systemd,
}

impl fmt::Display for ExecutionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutionKind::Process => "process",
            ExecutionKind::Docker => "docker",
            ExecutionKind::RemoteLan => "remote_lan",
            ExecutionKind::Wireguard => "wireguard",
            ExecutionKind::Compose => "compose",
            ExecutionKind::Systemd => "systemd",
        })
    }
}

/// How a service runs and what identifies the running thing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecutionInfo {
    /// The kind of target.
    pub kind: ExecutionKind,
    /// The process id, once known (on the host it runs on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The start time of the process `pid` in clock ticks since boot (field 22 of
    /// `/proc/PID/stat`), read when it was spawned on this machine: it tells the process from a
    /// later one that reuses its pid ([`ProcessIdentity`](crate::sys::ProcessIdentity)).
    /// Absent for processes on other hosts, and in files from older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// The container id, for Docker and compose services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The host it runs on, when not this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The command line: program then arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

impl ExecutionInfo {
    /// Execution info of the given kind, with nothing known yet.
    pub fn new(kind: ExecutionKind) -> Self {
        ExecutionInfo {
            kind,
            pid: None,
            start_time: None,
            container_id: None,
            host: None,
            command: Vec::new(),
        }
    }

    /// Sets the process id.
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Sets the process's start time in clock ticks since boot.
    pub fn with_start_time(mut self, start_time: u64) -> Self {
        self.start_time = Some(start_time);
        self
    }

    /// The identity of the process it runs as, when both its pid and start time are known.
    pub fn process_identity(&self) -> Option<crate::sys::ProcessIdentity> {
        Some(crate::sys::ProcessIdentity {
            pid: self.pid?,
            start_time: self.start_time?,
        })
    }

    /// Sets the container id.
    pub fn with_container_id(mut self, id: impl Into<String>) -> Self {
        self.container_id = Some(id.into());
        self
    }

    /// Sets the host.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Sets the command line.
    pub fn with_command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }
}

/// The outcome of a health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthResult {
    /// Whether the service answered as expected.
    pub healthy: bool,
    /// What the check saw ("connected", "HTTP 503", "exit code 1").
    pub detail: String,
    /// How long the check took, in milliseconds.
    pub latency_ms: u64,
    /// When the check finished.
    pub checked_at: Timestamp,
}

impl HealthResult {
    /// A result checked now.
    pub fn new(healthy: bool, detail: impl Into<String>, latency: Duration) -> Self {
        HealthResult {
            healthy,
            detail: detail.into(),
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            checked_at: Timestamp::now(),
        }
    }
}

/// When things happened to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timestamps {
    /// When it was registered.
    pub created_at: Timestamp,
    /// When its entry last changed.
    pub updated_at: Timestamp,
    /// When it last entered [`ServiceState::Running`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
}

impl Timestamps {
    /// Created and updated now, never started.
    pub fn now() -> Self {
        let now = Timestamp::now();
        Timestamps {
            created_at: now,
            updated_at: now,
            started_at: None,
        }
    }
}

/// Everything the registry knows about one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// The service's name, unique in its registry (`api-server`).
    pub name: String,
    /// Where its lifecycle stands.
    pub state: ServiceState,
    /// Which network it sits on.
    pub location: Location,
    /// How it runs.
    pub execution: ExecutionInfo,
    /// The addresses it listens on, each with a unique name.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The services it needs, by name; each must be registered before it.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// The last health check's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthResult>,
    /// When it was created, updated and last started.
    pub timestamps: Timestamps,
    /// How many times it was started again after its first start.
    #[serde(default)]
    pub restarts: u32,
    /// Free-form labels (the topology file, the run id, an image digest).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl ServiceEntry {
    /// A pending service with no endpoints, dependencies or metadata.
    pub fn new(name: impl Into<String>, location: Location, execution: ExecutionInfo) -> Self {
        ServiceEntry {
            name: name.into(),
            state: ServiceState::Pending,
            location,
            execution,
            endpoints: Vec::new(),
            dependencies: Vec::new(),
            health: None,
            timestamps: Timestamps::now(),
            restarts: 0,
            metadata: BTreeMap::new(),
        }
    }

    /// A pending local process.
    pub fn local_process(name: impl Into<String>) -> Self {
        ServiceEntry::new(
            name,
            Location::Local,
            ExecutionInfo::new(ExecutionKind::Process),
        )
    }

    /// Adds an endpoint (replacing one of the same name).
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.put_endpoint(endpoint);
        self
    }

    /// Adds a dependency.
    pub fn with_dependency(mut self, service: impl Into<String>) -> Self {
        let service = service.into();
        if !self.dependencies.contains(&service) {
            self.dependencies.push(service);
        }
        self
    }

    /// Adds a metadata label.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The endpoint of that name.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// Inserts `endpoint`, replacing the one of the same name; returns the replaced one.
    pub(crate) fn put_endpoint(&mut self, endpoint: Endpoint) -> Option<Endpoint> {
        match self.endpoints.iter_mut().find(|e| e.name == endpoint.name) {
            Some(slot) => Some(std::mem::replace(slot, endpoint)),
            None => {
                self.endpoints.push(endpoint);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [StateKind; 7] = [
        StateKind::Pending,
        StateKind::Starting,
        StateKind::Running,
        StateKind::Stopping,
        StateKind::Stopped,
        StateKind::Failed,
        StateKind::Completed,
    ];

    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        use StateKind::*;
        let allowed = [
            (Pending, Starting),
            (Pending, Stopped),
            (Pending, Failed),
            (Starting, Running),
            (Starting, Stopping),
            (Starting, Failed),
            (Starting, Completed),
            (Running, Stopping),
            (Running, Failed),
            (Stopping, Stopped),
            (Stopping, Failed),
            (Stopped, Starting),
            (Failed, Starting),
            (Failed, Stopping),
            (Failed, Stopped),
            (Completed, Starting),
            (Completed, Stopping),
            (Completed, Stopped),
        ];
        let mut actual = Vec::new();
        for from in ALL {
            for to in ALL {
                if from.can_transition_to(to) {
                    actual.push((from, to));
                }
            }
        }
        assert_eq!(actual, allowed);
    }

    #[test]
    fn no_state_transitions_to_itself_and_failed_reasons_do_not_matter() {
        for kind in ALL {
            assert!(!kind.can_transition_to(kind), "{kind} -> {kind}");
        }
        let running = ServiceState::Running;
        assert!(running.can_transition_to(&ServiceState::failed("a")));
        assert!(!ServiceState::failed("a").can_transition_to(&ServiceState::failed("b")));
        assert!(ServiceState::failed("crash").can_transition_to(&ServiceState::Starting));
    }

    #[test]
    fn states_serialize_tagged_by_status() {
        let json = serde_json::to_value(ServiceState::failed("exited with code 1")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "failed", "reason": "exited with code 1"})
        );
        let json = serde_json::to_value(ServiceState::Running).unwrap();
        assert_eq!(json, serde_json::json!({"status": "running"}));
        let back: ServiceState = serde_json::from_value(json).unwrap();
        assert_eq!(back, ServiceState::Running);
    }

    #[test]
    fn locations_and_kinds_use_the_adr_names() {
        let loc = Location::WireGuard {
            host: "aws-1".into(),
            mesh_ip: "10.42.0.10".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&loc).unwrap(),
            serde_json::json!({"kind": "wireguard", "host": "aws-1", "mesh_ip": "10.42.0.10"})
        );
        assert_eq!(
            serde_json::to_value(ExecutionKind::RemoteLan).unwrap(),
            serde_json::json!("remote_lan")
        );
        assert_eq!(ExecutionKind::RemoteLan.to_string(), "remote_lan");
    }

    #[test]
    fn network_choice_follows_adr_section_3() {
        let local = Location::Local;
        let lan = Location::Lan {
            host: "192.168.1.50".into(),
        };
        let wg = Location::WireGuard {
            host: "aws-1".into(),
            mesh_ip: "10.42.0.10".parse().unwrap(),
        };
        assert_eq!(local.network_to(&local), Network::Host);
        assert_eq!(lan.network_to(&lan), Network::Lan);
        assert_eq!(local.network_to(&lan), Network::Lan);
        assert_eq!(lan.network_to(&local), Network::Lan);
        assert_eq!(wg.network_to(&lan), Network::WireGuard);
        assert_eq!(local.network_to(&wg), Network::WireGuard);
    }

    #[test]
    fn endpoint_addresses_per_network() {
        let main: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lan: SocketAddr = "192.168.1.51:8080".parse().unwrap();
        let e = Endpoint::new("main", main).with_lan_addr(lan);
        assert_eq!(e.address_on(Network::Host), Some(main));
        assert_eq!(e.address_on(Network::Lan), Some(lan));
        assert_eq!(e.address_on(Network::WireGuard), None);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "main", "address": "127.0.0.1:8080", "lan_addr": "192.168.1.51:8080"})
        );
    }

    #[test]
    fn entry_round_trips_through_json() {
        let entry = ServiceEntry::new(
            "postgres",
            Location::Local,
            ExecutionInfo::new(ExecutionKind::Docker)
                .with_container_id("abc123")
                .with_command(["postgres", "-c", "fsync=off"]),
        )
        .with_endpoint(Endpoint::new("main", "172.17.0.2:5432".parse().unwrap()))
        .with_dependency("disk")
        .with_metadata("image", "postgres:14");
        let text = serde_json::to_string(&entry).unwrap();
        let back: ServiceEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(back, entry);
    }

    #[test]
    fn a_start_time_is_written_when_known_and_optional_when_read() {
        let execution = ExecutionInfo::new(ExecutionKind::Process)
            .with_pid(42)
            .with_start_time(1234);
        let json = serde_json::to_value(&execution).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "process", "pid": 42, "start_time": 1234})
        );
        let identity = execution.process_identity().unwrap();
        assert_eq!((identity.pid, identity.start_time), (42, 1234));
        // As older versions wrote it: no start time, so no identity, only a pid.
        let old: ExecutionInfo =
            serde_json::from_value(serde_json::json!({"kind": "process", "pid": 42})).unwrap();
        assert_eq!(old, ExecutionInfo::new(ExecutionKind::Process).with_pid(42));
        assert_eq!(old.process_identity(), None);
    }

    #[test]
    fn put_endpoint_replaces_by_name() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut entry = ServiceEntry::local_process("s").with_endpoint(Endpoint::new("main", a));
        let old = entry.put_endpoint(Endpoint::new("main", b));
        assert_eq!(old.map(|e| e.address), Some(a));
        assert_eq!(entry.endpoints.len(), 1);
        assert_eq!(entry.endpoint("main").map(|e| e.address), Some(b));
    }
}
