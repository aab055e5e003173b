//! The located YAML tree to the model, reporting every mistake with its place.
//!
//! Each function returns `None` after recording a diagnostic, and its caller goes on with the
//! next field, so that one run finds every mistake of a file.

use indexmap::IndexMap;

use super::diagnostic::{Diagnostic, Sources, Span};
use super::model::{
    BuildBase, ComposeTarget, Cpus, DockerBuild, DockerTarget, EnvMap, FieldLocations, FileSource,
    HealthCheck, LabConfig, LabHostConfig, LogLimits, LogPattern, NetworkConfig, NetworkMode,
    PortSpec, Probe, ProcessTarget, PullPolicy, RemoteLanTarget, ServiceConfig, ServiceFile,
    ServiceTarget, StopSignal, Subnet, TopologyConfig, WireguardTarget,
};
use super::parse::{Key, Node, Scalar, ScalarKind, Value};
use super::suggest::{closest, one_of};

/// The target kinds, as the ADR writes them under `target:`.
pub(crate) const TARGET_KINDS: &[&str] =
    &["process", "docker", "remote_lan", "wireguard", "compose"];
const TOP_FIELDS: &[&str] = &["network", "lab", "services"];
const LAB_FIELDS: &[&str] = &["networks", "hosts"];
const LAB_HOST_FIELDS: &[&str] = &["networks"];
/// The longest lab host name (it becomes a namespace name and a hostname).
const MAX_LAB_HOST: usize = 32;
const NETWORK_FIELDS: &[&str] = &["wireguard_subnet", "lan_interface", "dns_port"];
const SERVICE_FIELDS: &[&str] = &[
    "target",
    "dependencies",
    "health_check",
    "port",
    "config",
    "logs",
    "files",
    "stop_signal",
    "stop_grace",
    "job",
    "rerun_on",
];
const FILE_FIELDS: &[&str] = &["source", "content", "target", "mode"];
const LOGS_FIELDS: &[&str] = &["max_size", "max_files"];
const PROCESS_FIELDS: &[&str] = &["binary", "args", "env", "working_dir"];
const DOCKER_FIELDS: &[&str] = &[
    "image",
    "build",
    "env",
    "ports",
    "volumes",
    "command",
    "entrypoint",
    "working_dir",
    "init",
    "pull",
    "tmpfs",
    "network_mode",
    "cpus",
    "memory",
];
const BUILD_FIELDS: &[&str] = &["binary", "base"];
const REMOTE_LAN_FIELDS: &[&str] = &[
    "host",
    "user",
    "binary",
    "args",
    "env",
    "working_dir",
    "port",
    "key",
];
const WIREGUARD_FIELDS: &[&str] = &["host", "user", "package"];
const COMPOSE_FIELDS: &[&str] = &["file", "service"];
const PROBES: &[&str] = &["tcp", "http", "command", "log", "docker"];
const HEALTH_FIELDS: &[&str] = &[
    "tcp",
    "http",
    "command",
    "log",
    "docker",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
const HTTP_FIELDS: &[&str] = &["path", "status"];
/// `tcp: {}` takes no fields.
const TCP_FIELDS: &[&str] = &[];
/// `docker: {}` takes no fields.
const DOCKER_PROBE_FIELDS: &[&str] = &[];

/// Every table of field names above, by the section of docs/topology.md that documents it
/// (named by its heading): the docs test checks that each field there has a row of its own.
#[cfg(test)]
pub(crate) const FIELD_TABLES: &[(&str, &[&str])] = &[
    ("Top level", TOP_FIELDS),
    ("network", NETWORK_FIELDS),
    ("lab", LAB_FIELDS),
    ("lab.hosts.HOST", LAB_HOST_FIELDS),
    ("services.NAME", SERVICE_FIELDS),
    ("logs", LOGS_FIELDS),
    ("files", FILE_FIELDS),
    ("target", TARGET_KINDS),
    ("target.process", PROCESS_FIELDS),
    ("target.docker", DOCKER_FIELDS),
    ("target.docker.build", BUILD_FIELDS),
    ("target.remote_lan", REMOTE_LAN_FIELDS),
    ("target.wireguard", WIREGUARD_FIELDS),
    ("target.compose", COMPOSE_FIELDS),
    ("health_check", HEALTH_FIELDS),
    ("health_check.tcp", TCP_FIELDS),
    ("health_check.docker", DOCKER_PROBE_FIELDS),
    ("health_check.http", HTTP_FIELDS),
];

/// Names people bring from docker compose or habit, and the field they mean here.
const ALIASES: &[(&str, &str)] = &[
    ("depends_on", "dependencies"),
    ("healthcheck", "health_check"),
    ("environment", "env"),
    ("cwd", "working_dir"),
    ("workdir", "working_dir"),
    ("cmd", "command"),
    ("test", "command"),
];

/// What the decoder made of one file (or of a file merged with its overlays).
pub(crate) struct Decoded {
    pub config: TopologyConfig,
    /// Every name under `services:`, also of services that did not decode.
    pub names: Vec<(String, Span)>,
    /// Per service, where each field path was written.
    pub spans: IndexMap<String, IndexMap<String, Span>>,
    /// Services whose target did not decode; only their names and dependencies are checked.
    pub broken: Vec<String>,
}

pub(crate) struct Decoder<'a> {
    sources: &'a Sources,
    pub errors: Vec<Diagnostic>,
    spans: IndexMap<String, Span>,
}

/// The entries of a mapping that was checked for unknown keys.
struct Fields<'n> {
    entries: Vec<(&'n Key, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<(&'n Key, &'n Node)> {
        self.entries.iter().find(|(k, _)| k.name == name).copied()
    }

    /// The entry unless it is missing or null.
    fn present(&self, name: &str) -> Option<(&'n Key, &'n Node)> {
        self.get(name)
            .filter(|(_, n)| !matches!(n.value, Value::Null))
    }
}

impl<'a> Decoder<'a> {
    pub fn new(sources: &'a Sources) -> Self {
        Self {
            sources,
            errors: Vec::new(),
            spans: IndexMap::new(),
        }
    }

    fn error(&mut self, span: Span, message: impl Into<String>) {
        let diagnostic = self.sources.error(span, message);
        self.errors.push(diagnostic);
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.errors.push(diagnostic);
    }

    fn record(&mut self, path: &str, span: Span) {
        self.spans.insert(path.to_string(), span);
    }

    /// Decodes a whole topology.
    pub fn topology(&mut self, root: &Node) -> Decoded {
        let mut decoded = Decoded {
            config: TopologyConfig {
                network: NetworkConfig::default(),
                lab: None,
                services: IndexMap::new(),
                files: Vec::new(),
            },
            names: Vec::new(),
            spans: IndexMap::new(),
            broken: Vec::new(),
        };
        let Some(fields) = self.fields(root, None, "topology", TOP_FIELDS) else {
            return decoded;
        };
        if let Some((_, node)) = fields.present("network") {
            decoded.config.network = self.network(node);
        }
        if let Some((key, node)) = fields.present("lab") {
            decoded.config.lab = self.lab(key, node);
        }
        match fields.get("services") {
            None => self.error(
                root.span,
                "missing field `services`: a topology lists its services under `services:`",
            ),
            Some((_, node)) => self.services(node, &mut decoded),
        }
        decoded
    }

    fn network(&mut self, node: &Node) -> NetworkConfig {
        let mut network = NetworkConfig::default();
        let Some(fields) = self.fields(node, None, "network", NETWORK_FIELDS) else {
            return network;
        };
        if let Some((_, n)) = fields.present("wireguard_subnet")
            && let Some(text) = self.text(n, "`wireguard_subnet`")
        {
            match text.parse::<Subnet>() {
                Ok(subnet) => network.wireguard_subnet = subnet,
                Err(message) => self.error(n.span, message),
            }
        }
        if let Some((_, n)) = fields.present("lan_interface") {
            network.lan_interface = self.text(n, "`lan_interface`");
        }
        if let Some((_, n)) = fields.present("dns_port") {
            network.dns_port = self.port_number(n, "for `dns_port`");
        }
        network
    }

    fn lab(&mut self, key: &Key, node: &Node) -> Option<LabConfig> {
        let fields = self.fields(node, Some(key), "lab", LAB_FIELDS)?;
        let mut lab = LabConfig::default();
        if let Some((k, n)) = fields.get("networks") {
            for (name, subnet) in self.entries(k, n, "lab networks to subnets")? {
                self.lab_name(name, "network", 64);
                let Some(text) = self.text(subnet, "a lab network's subnet") else {
                    continue;
                };
                if text != "auto"
                    && let Err(reason) = lab_subnet(&text)
                {
                    self.error(subnet.span, reason);
                }
                lab.networks.insert(name.name.clone(), text);
            }
        }
        let Some((k, n)) = fields.get("hosts") else {
            self.error(
                key.span,
                "missing field `hosts` in `lab`: a lab has at least one host",
            );
            return None;
        };
        for (name, host) in self.entries(k, n, "lab host names to hosts")? {
            self.lab_name(name, "host", MAX_LAB_HOST);
            let context = format!("lab host `{}`", name.name);
            let Some(host_fields) = self.fields(host, Some(name), &context, LAB_HOST_FIELDS) else {
                continue;
            };
            let path = format!("lab.hosts.{}.networks", name.name);
            let networks = match host_fields.present("networks") {
                None => {
                    self.error(
                        name.span,
                        format!("missing field `networks` in {context}: attach it to a network of `lab.networks`"),
                    );
                    continue;
                }
                Some((_, list)) => match self.list(list, &path, "`networks`") {
                    Some(networks) => (networks, list),
                    None => continue,
                },
            };
            let (networks, list) = networks;
            if networks.is_empty() {
                self.error(list.span, format!("{context} is attached to no network"));
            }
            for network in &networks {
                if !lab.networks.contains_key(network) {
                    let known: Vec<&str> = lab.networks.keys().map(String::as_str).collect();
                    self.error(
                        list.span,
                        format!(
                            "{context} is attached to `{network}`, which `lab.networks` does not declare; it declares: {}",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    );
                }
            }
            lab.hosts
                .insert(name.name.clone(), LabHostConfig { networks });
        }
        Some(lab)
    }

    /// The entries of a mapping whose keys are names the user chooses.
    fn entries<'n>(&mut self, key: &Key, node: &'n Node, what: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            other => {
                let found = other.describe();
                self.error(
                    node.span,
                    format!(
                        "expected a mapping of {what} for `{}`, found {found}",
                        key.name
                    ),
                );
                None
            }
        }
    }

    /// Checks a lab network's or host's name: it becomes part of namespace and host names.
    fn lab_name(&mut self, key: &Key, what: &str, max: usize) {
        let name = &key.name;
        let ok = !name.is_empty()
            && name.len() <= max
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            self.error(
                key.span,
                format!("invalid lab {what} name `{name}`: use 1 to {max} lower-case letters, digits and `-`, not starting with `-`"),
            );
        }
    }

    fn services(&mut self, node: &Node, decoded: &mut Decoded) {
        let entries = match &node.value {
            Value::Null => return,
            Value::Map(entries) => entries,
            other => {
                let found = other.describe();
                return self.error(
                    node.span,
                    format!("expected a mapping of service names to services for `services`, found {found}"),
                );
            }
        };
        for (key, service) in entries {
            decoded.names.push((key.name.clone(), key.span));
            self.spans.clear();
            let (config, complete) = self.service(key, service);
            if !complete {
                decoded.broken.push(key.name.clone());
            }
            decoded
                .spans
                .insert(key.name.clone(), std::mem::take(&mut self.spans));
            decoded.config.services.insert(key.name.clone(), config);
        }
    }

    /// Decodes one service; the flag is false when its target did not decode and a stand-in
    /// took its place.
    fn service(&mut self, key: &Key, node: &Node) -> (ServiceConfig, bool) {
        let name = &key.name;
        let mut service = ServiceConfig {
            name: name.clone(),
            // A stand-in until the real target decodes; a service whose target fails is
            // reported and never leaves the loader.
            target: ServiceTarget::Process(ProcessTarget::default()),
            dependencies: Vec::new(),
            health_check: None,
            port: PortSpec::Unset,
            config: serde_json::Map::new(),
            logs: LogLimits::default(),
            files: Vec::new(),
            stop_signal: None,
            stop_grace: None,
            job: false,
            rerun_on: Vec::new(),
            locations: FieldLocations::new(self.sources.location(key.span)),
        };
        let context = format!("service `{name}`");
        let Some(fields) = self.fields(node, Some(key), &context, SERVICE_FIELDS) else {
            return (service, false);
        };
        let mut complete = false;
        match fields.get("target") {
            None => self.error(
                key.span,
                format!(
                    "service `{name}` has no `target`: expected one of {}",
                    one_of(TARGET_KINDS)
                ),
            ),
            Some((target_key, target)) => {
                self.record("target", target_key.span);
                if let Some(target) = self.target(name, target_key, target) {
                    service.target = target;
                    complete = true;
                }
            }
        }
        if let Some((k, n)) = fields.get("dependencies") {
            self.record("dependencies", k.span);
            service.dependencies = self
                .list(n, "dependencies", "`dependencies`")
                .unwrap_or_default();
        }
        if let Some((k, n)) = fields.present("health_check") {
            self.record("health_check", k.span);
            service.health_check = self.health_check(name, k, n);
            if complete
                && service
                    .health_check
                    .as_ref()
                    .is_some_and(|c| c.probe == Probe::Docker)
                && !matches!(
                    service.target,
                    ServiceTarget::Docker(_) | ServiceTarget::Compose(_)
                )
            {
                self.error(
                    k.span,
                    format!(
                        "service `{name}` is checked by its container's HEALTHCHECK (`docker: \
                         {{}}`), but its target is `{}`, which runs no container; use `tcp`, \
                         `http`, `command` or `log`",
                        service.target.kind()
                    ),
                );
            }
        }
        if let Some((_, n)) = fields.present("port") {
            self.record("port", n.span);
            service.port = self.port_spec(n).unwrap_or_default();
        }
        if let Some((k, n)) = fields.get("config") {
            self.record("config", k.span);
            service.config = self.config(n).unwrap_or_default();
        }
        if let Some((k, n)) = fields.present("logs") {
            self.record("logs", k.span);
            service.logs = self.log_limits(name, k, n);
        }
        if let Some((k, n)) = fields.present("files") {
            self.record("files", k.span);
            let kind = complete.then(|| service.target.kind());
            service.files = self.files(name, kind, n);
            if kind == Some("compose") {
                self.error(
                    k.span,
                    format!(
                        "service `{name}` is a service of a compose file, which says what its \
                         container holds: `files` has no effect there; mount them in the \
                         compose file (`volumes:`) or use a `docker` target"
                    ),
                );
            }
        }
        if let Some((k, n)) = fields.present("stop_signal") {
            self.record("stop_signal", n.span);
            service.stop_signal = self.stop_signal(n);
            self.refuse_on_mesh(name, &service.target, complete, k, "stop_signal");
        }
        if let Some((k, n)) = fields.present("stop_grace") {
            self.record("stop_grace", n.span);
            service.stop_grace = self.duration(n, "stop_grace");
            self.refuse_on_mesh(name, &service.target, complete, k, "stop_grace");
        }
        if let Some((k, n)) = fields.present("job") {
            self.record("job", n.span);
            service.job = self.boolean(n, "`job`").unwrap_or_default();
            if service.job {
                if complete && matches!(service.target, ServiceTarget::Wireguard(_)) {
                    self.error(
                        k.span,
                        format!(
                            "service `{name}` runs on the mesh (`wireguard`), where a package \
                             runs until its stop script stops it: it cannot be a job"
                        ),
                    );
                }
                if let Some((check, _)) = fields.present("health_check") {
                    self.error(
                        check.span,
                        format!(
                            "service `{name}` is a job, which is done when it exits with status \
                             0: a `health_check` has no effect there; remove it"
                        ),
                    );
                }
            }
        }
        if let Some((k, n)) = fields.get("rerun_on") {
            self.record("rerun_on", k.span);
            service.rerun_on = self.list(n, "rerun_on", "`rerun_on`").unwrap_or_default();
            if !service.job {
                self.error(
                    k.span,
                    format!(
                        "`rerun_on` of service `{name}` runs a job again, and `{name}` is no \
                         job: add `job: true` or remove `rerun_on`"
                    ),
                );
            } else if let Some(stranger) = service
                .rerun_on
                .iter()
                .find(|r| !service.dependencies.contains(r))
            {
                self.error(
                    n.span,
                    format!(
                        "`rerun_on` of job `{name}` names `{stranger}`, which it does not depend \
                         on: a job runs again when one of its `dependencies` restarts"
                    ),
                );
            }
        }
        for (path, span) in &self.spans {
            service
                .locations
                .fields
                .insert(path.clone(), self.sources.location(*span));
        }
        (service, complete)
    }

    fn target(&mut self, service: &str, key: &Key, node: &Node) -> Option<ServiceTarget> {
        let context = format!("target of service `{service}`");
        let fields = self.fields(node, Some(key), &context, TARGET_KINDS)?;
        let kinds: Vec<(&Key, &Node)> = fields.entries.clone();
        let known: Vec<&(&Key, &Node)> = kinds
            .iter()
            .filter(|(k, _)| TARGET_KINDS.contains(&k.name.as_str()))
            .collect();
        match known.as_slice() {
            [] => {
                if kinds.is_empty() {
                    let what = if matches!(node.value, Value::Null) {
                        "is empty"
                    } else {
                        "names no kind"
                    };
                    self.error(
                        key.span,
                        format!(
                            "target of service `{service}` {what}: expected one of {}",
                            one_of(TARGET_KINDS)
                        ),
                    );
                }
                None
            }
            [(kind_key, kind_node)] => {
                let path = format!("target.{}", kind_key.name);
                self.record(&path, kind_key.span);
                let context = format!("`{}` target of service `{service}`", kind_key.name);
                match kind_key.name.as_str() {
                    "process" => self
                        .process(kind_key, kind_node, &path, &context)
                        .map(ServiceTarget::Process),
                    "docker" => self
                        .docker(kind_key, kind_node, &path, &context)
                        .map(ServiceTarget::Docker),
                    "remote_lan" => self
                        .remote_lan(kind_key, kind_node, &path, &context)
                        .map(ServiceTarget::RemoteLan),
                    "compose" => self
                        .compose(kind_key, kind_node, &context)
                        .map(ServiceTarget::Compose),
                    _ => self
                        .wireguard(kind_key, kind_node, &context)
                        .map(ServiceTarget::Wireguard),
                }
            }
            [(first, _), (second, _), ..] => {
                let diagnostic = self
                    .sources
                    .error(
                        second.span,
                        format!(
                            "target of service `{service}` names two kinds, `{}` and `{}`: a service runs in exactly one place",
                            first.name, second.name
                        ),
                    )
                    .with_note(self.sources.note_at(first.span, format!("`{}` is named here", first.name)));
                self.push(diagnostic);
                None
            }
        }
    }

    fn process(
        &mut self,
        key: &Key,
        node: &Node,
        path: &str,
        context: &str,
    ) -> Option<ProcessTarget> {
        let fields = self.fields(node, Some(key), context, PROCESS_FIELDS)?;
        let binary = self.required_text(&fields, key, "binary", path, context);
        let args = self.list_field(&fields, "args", path);
        let env = self.env_field(&fields, path);
        let working_dir = self.optional_text(&fields, "working_dir", path);
        Some(ProcessTarget {
            binary: binary?,
            args: args?,
            env: env?,
            working_dir: working_dir?,
        })
    }

    fn docker(
        &mut self,
        key: &Key,
        node: &Node,
        path: &str,
        context: &str,
    ) -> Option<DockerTarget> {
        let fields = self.fields(node, Some(key), context, DOCKER_FIELDS)?;
        let image = self.required_text(&fields, key, "image", path, context);
        let build = match fields.present("build") {
            None => Some(None),
            Some((k, n)) => {
                let build_path = format!("{path}.build");
                self.record(&build_path, k.span);
                self.build(k, n, &build_path, context).map(Some)
            }
        };
        let env = self.env_field(&fields, path);
        let ports = match fields.get("ports") {
            None => Some(Vec::new()),
            Some((k, n)) => {
                let ports_path = format!("{path}.ports");
                self.record(&ports_path, k.span);
                self.ports(n, &ports_path)
            }
        };
        let volumes = self.list_field(&fields, "volumes", path);
        let command = self.optional_list_field(&fields, "command", path);
        let entrypoint = self.optional_list_field(&fields, "entrypoint", path);
        let working_dir = self.optional_text(&fields, "working_dir", path);
        let init = match fields.present("init") {
            None => Some(None),
            Some((_, n)) => {
                self.record(&format!("{path}.init"), n.span);
                self.boolean(n, "`init`").map(Some)
            }
        };
        let pull = match fields.present("pull") {
            None => Some(None),
            Some((k, n)) => {
                self.record(&format!("{path}.pull"), n.span);
                let policy = self.pull_policy(n);
                if policy.is_some() && fields.present("build").is_some() {
                    self.error(
                        k.span,
                        format!(
                            "`pull` has no effect in the {context}: harness builds its image \
                             (`build`) and never pulls it; remove one of them"
                        ),
                    );
                }
                policy.map(Some)
            }
        };
        let tmpfs = self.list_field(&fields, "tmpfs", path);
        let network_mode = match fields.present("network_mode") {
            None => Some(NetworkMode::Bridge),
            Some((_, n)) => {
                self.record(&format!("{path}.network_mode"), n.span);
                self.network_mode(n)
            }
        };
        if network_mode == Some(NetworkMode::Host)
            && let Some((k, _)) = fields.present("ports")
        {
            self.error(
                k.span,
                format!(
                    "`ports` has no effect in the {context}: with `network_mode: host` the \
                     container listens on this machine's own ports, which are not published; \
                     remove `ports`"
                ),
            );
        }
        let cpus = match fields.present("cpus") {
            None => Some(None),
            Some((_, n)) => {
                self.record(&format!("{path}.cpus"), n.span);
                self.cpus(n).map(Some)
            }
        };
        let memory = match fields.present("memory") {
            None => Some(None),
            Some((_, n)) => {
                self.record(&format!("{path}.memory"), n.span);
                // Docker's own floor is 6 MiB.
                self.size(n, "`memory`", 6 << 20).map(Some)
            }
        };
        Some(DockerTarget {
            tmpfs: tmpfs?,
            network_mode: network_mode?,
            cpus: cpus?,
            memory: memory?,
            pull: pull?,
            image: image?,
            build: build?,
            env: env?,
            ports: ports?,
            volumes: volumes?,
            command: command?,
            entrypoint: entrypoint?,
            working_dir: working_dir?,
            init: init?,
        })
    }

    fn network_mode(&mut self, node: &Node) -> Option<NetworkMode> {
        let names = NetworkMode::ALL.map(|(n, _)| n);
        let text = self.text(node, "`network_mode`")?;
        let mode = NetworkMode::from_name(&text);
        if mode.is_none() {
            self.error(
                node.span,
                format!(
                    "unknown network mode `{text}`: expected one of {}",
                    one_of(&names)
                ),
            );
        }
        mode
    }

    /// `cpus:`: a positive number of CPUs, to three decimals.
    fn cpus(&mut self, node: &Node) -> Option<Cpus> {
        let value = match &node.value {
            Value::Scalar(s) => match s.kind {
                ScalarKind::Int(i) => Some(i as f64),
                ScalarKind::Float(f) => Some(f),
                _ => None,
            },
            _ => None,
        };
        let millis = value
            .filter(|v| v.is_finite() && *v > 0.0 && *v <= 1024.0)
            .map(|v| (v * 1000.0).round() as u32)
            .filter(|&m| m > 0);
        if millis.is_none() {
            let found = match &node.value {
                Value::Scalar(s) => format!("`{}`", s.text),
                other => other.describe().to_string(),
            };
            self.error(
                node.span,
                format!(
                    "expected a number of CPUs greater than 0 and at most 1024 (such as `0.5` \
                     or `2`) for `cpus`, found {found}"
                ),
            );
        }
        millis.map(Cpus)
    }

    fn pull_policy(&mut self, node: &Node) -> Option<PullPolicy> {
        let names = PullPolicy::ALL.map(|(n, _)| n);
        let text = self.text(node, "`pull`")?;
        let policy = PullPolicy::from_name(&text);
        if policy.is_none() {
            self.error(
                node.span,
                format!(
                    "unknown pull policy `{text}`: expected one of {}",
                    one_of(&names)
                ),
            );
        }
        policy
    }

    fn stop_signal(&mut self, node: &Node) -> Option<StopSignal> {
        let names = StopSignal::ALL.map(|(n, _)| n);
        let text = self.text(node, "`stop_signal`")?;
        let signal = StopSignal::from_name(&text);
        if signal.is_none() {
            self.error(
                node.span,
                format!(
                    "unknown signal `{text}` for `stop_signal`: expected one of {}",
                    one_of(&names)
                ),
            );
        }
        signal
    }

    /// A `wireguard` service is stopped by its package's own stop script: a signal or a
    /// grace period of ours would have no effect, so they are refused.
    fn refuse_on_mesh(
        &mut self,
        service: &str,
        target: &ServiceTarget,
        complete: bool,
        key: &Key,
        field: &str,
    ) {
        if complete && matches!(target, ServiceTarget::Wireguard(_)) {
            self.error(
                key.span,
                format!(
                    "service `{service}` runs on the mesh (`wireguard`), where its package's \
                     stop script stops it: `{field}` has no effect there; remove it"
                ),
            );
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar(Scalar {
                kind: ScalarKind::Bool(b),
                ..
            }) => Some(*b),
            other => {
                let found = other.describe();
                self.error(
                    node.span,
                    format!("expected `true` or `false` for {what}, found {found}"),
                );
                None
            }
        }
    }

    fn build(&mut self, key: &Key, node: &Node, path: &str, context: &str) -> Option<DockerBuild> {
        let context = format!("`build` of the {context}");
        let fields = self.fields(node, Some(key), &context, BUILD_FIELDS)?;
        let binary = self.required_text(&fields, key, "binary", path, &context);
        let base = match fields.present("base") {
            None => Some(BuildBase::default()),
            Some((k, n)) => {
                self.record(&format!("{path}.base"), k.span);
                match self.text(n, "`base`")?.as_str() {
                    "scratch" => Some(BuildBase::Scratch),
                    "busybox" => Some(BuildBase::Busybox),
                    other => {
                        self.error(
                            n.span,
                            format!(
                                "unknown image base `{other}`: expected `scratch` or `busybox`"
                            ),
                        );
                        None
                    }
                }
            }
        };
        Some(DockerBuild {
            binary: binary?,
            base: base?,
        })
    }

    fn remote_lan(
        &mut self,
        key: &Key,
        node: &Node,
        path: &str,
        context: &str,
    ) -> Option<RemoteLanTarget> {
        let fields = self.fields(node, Some(key), context, REMOTE_LAN_FIELDS)?;
        let host = self.required_text(&fields, key, "host", path, context);
        let user = self.required_text(&fields, key, "user", path, context);
        let binary = self.required_text(&fields, key, "binary", path, context);
        let args = self.list_field(&fields, "args", path);
        let env = self.env_field(&fields, path);
        let working_dir = self.optional_text(&fields, "working_dir", path);
        let port = match fields.present("port") {
            None => Some(None),
            Some((k, n)) => {
                self.record(&format!("{path}.port"), k.span);
                self.port_number(n, "for the SSH `port`").map(Some)
            }
        };
        let key_file = self.optional_text(&fields, "key", path);
        Some(RemoteLanTarget {
            host: host?,
            user: user?,
            binary: binary?,
            args: args?,
            env: env?,
            working_dir: working_dir?,
            port: port?,
            key: key_file?,
        })
    }

    fn wireguard(&mut self, key: &Key, node: &Node, context: &str) -> Option<WireguardTarget> {
        let path = "target.wireguard";
        let fields = self.fields(node, Some(key), context, WIREGUARD_FIELDS)?;
        let host = self.required_text(&fields, key, "host", path, context);
        let user = self.required_text(&fields, key, "user", path, context);
        let package = self.required_text(&fields, key, "package", path, context);
        Some(WireguardTarget {
            host: host?,
            user: user?,
            package: package?,
        })
    }

    fn compose(&mut self, key: &Key, node: &Node, context: &str) -> Option<ComposeTarget> {
        let path = "target.compose";
        let fields = self.fields(node, Some(key), context, COMPOSE_FIELDS)?;
        let file = self.required_text(&fields, key, "file", path, context);
        let service = self.optional_text(&fields, "service", path);
        Some(ComposeTarget {
            file: file?,
            service: service?,
        })
    }

    /// The `files:` list; `kind` is the service's target kind when it decoded, which decides
    /// whether a target must be relative (a process) or absolute (a container).
    fn files(&mut self, service: &str, kind: Option<&str>, node: &Node) -> Vec<ServiceFile> {
        let Value::Seq(items) = &node.value else {
            let found = node.value.describe();
            self.push(
                self.sources
                    .error(
                        node.span,
                        format!(
                            "expected a list for `files` of service `{service}`, found {found}"
                        ),
                    )
                    .with_help("write `files: [{ source: ./app.conf, target: app.conf }]`"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen: Vec<(String, Span)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("files[{i}]");
            self.record(&path, item.span);
            let context = format!("`{path}` of service `{service}`");
            let Some(fields) = self.fields(item, None, &context, FILE_FIELDS) else {
                continue;
            };
            let from = match (fields.get("source"), fields.get("content")) {
                (Some(_), Some((k, _))) => {
                    self.error(
                        k.span,
                        format!("{context} has both `source` and `content`: give one"),
                    );
                    None
                }
                (None, None) => {
                    self.push(
                        self.sources
                            .error(item.span, format!("{context} has no `source` or `content`"))
                            .with_help(
                                "`source` names a file here to copy; `content` gives its text",
                            ),
                    );
                    None
                }
                (Some((_, n)), None) => {
                    self.record(&format!("{path}.source"), n.span);
                    match self.text(n, "`source`") {
                        Some(text) if text.is_empty() => {
                            self.error(n.span, format!("`source` of {context} is empty"));
                            None
                        }
                        other => other.map(FileSource::Source),
                    }
                }
                (None, Some((_, n))) => {
                    self.record(&format!("{path}.content"), n.span);
                    self.text(n, "`content`").map(FileSource::Content)
                }
            };
            let target = match fields.get("target") {
                None => {
                    self.error(item.span, format!("missing field `target` in {context}"));
                    None
                }
                Some((_, n)) => {
                    self.record(&format!("{path}.target"), n.span);
                    self.text(n, "`target`")
                        .and_then(|t| self.file_target(n.span, &context, kind, t))
                }
            };
            let mode = match fields.present("mode") {
                None => Some(None),
                Some((_, n)) => {
                    self.record(&format!("{path}.mode"), n.span);
                    self.file_mode(n, &context).map(Some)
                }
            };
            let (Some(from), Some(target), Some(mode)) = (from, target, mode) else {
                // A stand-in keeps the entries' indexes, by which their places are recorded;
                // the error above keeps the file from leaving the loader.
                out.push(ServiceFile {
                    from: FileSource::Content(String::new()),
                    target: String::new(),
                    mode: None,
                });
                continue;
            };
            let at = fields.get("target").map_or(item.span, |(_, n)| n.span);
            let normal = target.trim_end_matches('/').replace("//", "/");
            if let Some((_, first)) = seen.iter().find(|(t, _)| *t == normal) {
                let diagnostic = self
                    .sources
                    .error(at, format!("{context} puts a second file at `{target}`"))
                    .with_note(self.sources.note_at(*first, "the first is here"));
                self.push(diagnostic);
            }
            seen.push((normal, at));
            out.push(ServiceFile { from, target, mode });
        }
        out
    }

    /// A file's `target`, checked: not empty, no `..`, relative for a process and absolute
    /// in a container.
    fn file_target(
        &mut self,
        span: Span,
        context: &str,
        kind: Option<&str>,
        target: String,
    ) -> Option<String> {
        let problem = if target.is_empty() || target == "/" || target.ends_with('/') {
            Some(("names no file".to_string(), None))
        } else if target.contains('\0') {
            Some(("has a NUL byte".to_string(), None))
        } else if target.split('/').any(|part| part == "..") {
            Some((
                "climbs out with `..`".to_string(),
                Some("a target stays below the place files go to, so `..` is refused".to_string()),
            ))
        } else if kind == Some("process") && target.starts_with('/') {
            Some((
                "is absolute, but a process's files go under its own directory".to_string(),
                Some(format!(
                    "write `{}`: the file lands in `${{dir}}`, the service's directory for this run",
                    target.trim_start_matches('/')
                )),
            ))
        } else if kind == Some("docker") && !target.starts_with('/') {
            Some((
                "is relative, but in a container a file needs an absolute path".to_string(),
                Some(format!("write `/{target}` or another absolute path")),
            ))
        } else {
            None
        };
        match problem {
            None => Some(target),
            Some((what, help)) => {
                let diagnostic = self
                    .sources
                    .error(span, format!("`target` `{target}` of {context} {what}"));
                self.push(match help {
                    Some(help) => diagnostic.with_help(help),
                    None => diagnostic,
                });
                None
            }
        }
    }

    /// Permission bits in octal, as `chmod` takes them: `644`, `0600`, `"0755"`.
    fn file_mode(&mut self, node: &Node, context: &str) -> Option<u32> {
        let text = match &node.value {
            Value::Scalar(s) => s.text.trim_start_matches("0o").to_string(),
            _ => String::new(),
        };
        let parsed = (!text.is_empty() && text.len() <= 4)
            .then(|| u32::from_str_radix(&text, 8).ok())
            .flatten();
        if parsed.is_none() {
            self.error(
                node.span,
                format!(
                    "expected permission bits in octal (such as `0644`) for `mode` of {context}"
                ),
            );
        }
        parsed
    }

    fn log_limits(&mut self, service: &str, key: &Key, node: &Node) -> LogLimits {
        let mut limits = LogLimits::default();
        let context = format!("`logs` of service `{service}`");
        let Some(fields) = self.fields(node, Some(key), &context, LOGS_FIELDS) else {
            return limits;
        };
        if let Some((k, n)) = fields.present("max_size") {
            self.record("logs.max_size", k.span);
            let name = format!("`max_size` of service `{service}`");
            limits.max_size = self.size(n, &name, LogLimits::MIN_SIZE);
        }
        if let Some((k, n)) = fields.present("max_files") {
            self.record("logs.max_files", k.span);
            let what = format!(
                "a count of files (1 to {}) for `max_files` of service `{service}`",
                LogLimits::MAX_FILES
            );
            limits.max_files = self
                .integer(n, &what, 1, LogLimits::MAX_FILES.into())
                .map(|n| n as u32);
        }
        limits
    }

    /// A size in bytes of at least `min`: an integer or a string such as `64M`.
    fn size(&mut self, node: &Node, name: &str, min: u64) -> Option<u64> {
        let expected = format!("expected a size such as `64M`, `512K` or bytes for {name}");
        let parsed = match &node.value {
            Value::Scalar(s) => match s.kind {
                ScalarKind::Int(i) => {
                    u64::try_from(i).map_err(|_| format!("{expected}, found `{}`", s.text))
                }
                _ => super::parse_size(&s.text).map_err(|e| format!("{e} for {name}")),
            },
            other => Err(format!("{expected}, found {}", other.describe())),
        };
        match parsed {
            Ok(bytes) if bytes >= min => Some(bytes),
            Ok(bytes) => {
                self.error(
                    node.span,
                    format!(
                        "{name} must be at least {min} bytes (`{}`), found {bytes}",
                        short_size(min)
                    ),
                );
                None
            }
            Err(message) => {
                self.error(node.span, message);
                None
            }
        }
    }

    fn health_check(&mut self, service: &str, key: &Key, node: &Node) -> Option<HealthCheck> {
        let context = format!("health check of service `{service}`");
        let fields = self.fields(node, Some(key), &context, HEALTH_FIELDS)?;
        let probes: Vec<(&Key, &Node)> = fields
            .entries
            .iter()
            .filter(|(k, _)| PROBES.contains(&k.name.as_str()))
            .copied()
            .collect();
        let probe = match probes.as_slice() {
            [] => {
                self.error(
                    key.span,
                    format!(
                        "{context} names no probe: expected one of {}",
                        one_of(PROBES)
                    ),
                );
                None
            }
            [(k, n)] => self.probe(k, n),
            [(first, _), (second, _), ..] => {
                let diagnostic = self
                    .sources
                    .error(
                        second.span,
                        format!(
                            "{context} names two probes, `{}` and `{}`: give one",
                            first.name, second.name
                        ),
                    )
                    .with_note(
                        self.sources
                            .note_at(first.span, format!("`{}` is named here", first.name)),
                    );
                self.push(diagnostic);
                None
            }
        };
        let mut check = HealthCheck::new(Probe::Tcp);
        let mut ok = true;
        for (name, slot) in [
            ("interval", &mut check.interval),
            ("timeout", &mut check.timeout),
            ("start_period", &mut check.start_period),
        ] {
            if let Some((k, n)) = fields.present(name) {
                self.record(&format!("health_check.{name}"), k.span);
                match self.duration(n, name) {
                    Some(d) => *slot = d,
                    None => ok = false,
                }
            }
        }
        if let Some((k, n)) = fields.present("retries") {
            self.record("health_check.retries", k.span);
            match self.integer(n, "a count (0 or more) for `retries`", 0, u32::MAX.into()) {
                Some(r) => check.retries = r as u32,
                None => ok = false,
            }
        }
        check.probe = probe?;
        ok.then_some(check)
    }

    fn probe(&mut self, key: &Key, node: &Node) -> Option<Probe> {
        let path = format!("health_check.{}", key.name);
        self.record(&path, key.span);
        match key.name.as_str() {
            "tcp" => {
                self.fields(node, Some(key), "`tcp` probe", TCP_FIELDS)?;
                Some(Probe::Tcp)
            }
            "http" => {
                let fields = self.fields(node, Some(key), "`http` probe", HTTP_FIELDS)?;
                let path_field = match fields.present("path") {
                    None => Some("/".to_string()),
                    Some((k, n)) => {
                        self.record(&format!("{path}.path"), k.span);
                        let p = self.text(n, "`path`")?;
                        if p.starts_with('/') {
                            Some(p)
                        } else {
                            self.error(
                                n.span,
                                format!("the http probe's path must start with `/`, found `{p}`"),
                            );
                            None
                        }
                    }
                };
                let status = match fields.present("status") {
                    None => Some(200),
                    Some((k, n)) => {
                        self.record(&format!("{path}.status"), k.span);
                        self.integer(n, "an HTTP status (100 to 599) for `status`", 100, 599)
                            .map(|s| s as u16)
                    }
                };
                Some(Probe::Http {
                    path: path_field?,
                    status: status?,
                })
            }
            "docker" => {
                self.fields(node, Some(key), "`docker` probe", DOCKER_PROBE_FIELDS)?;
                Some(Probe::Docker)
            }
            "command" => {
                let command = self.list(node, &path, "`command`")?;
                if command.is_empty() {
                    self.error(
                        node.span,
                        "the `command` probe needs a program: `command: [program, args...]`",
                    );
                    return None;
                }
                Some(Probe::Command(command))
            }
            _ => {
                let pattern = self.text(node, "a regular expression for `log`")?;
                match regex::Regex::new(&pattern) {
                    Ok(regex) => Some(Probe::Log(LogPattern(regex))),
                    Err(e) => {
                        let why = e.to_string();
                        let why = why.lines().last().unwrap_or("invalid").trim();
                        let why = why.strip_prefix("error: ").unwrap_or(why);
                        self.error(
                            node.span,
                            format!("invalid regular expression for `log`: {why}"),
                        );
                        None
                    }
                }
            }
        }
    }

    fn port_spec(&mut self, node: &Node) -> Option<PortSpec> {
        let Value::Scalar(s) = &node.value else {
            let found = node.value.describe();
            self.error(
                node.span,
                format!("expected a port number or `auto` for `port`, found {found}"),
            );
            return None;
        };
        match s.kind {
            ScalarKind::Str if s.text == "auto" => Some(PortSpec::Auto),
            ScalarKind::Int(0) => {
                self.error(
                    node.span,
                    "port 0 is not a port: write `port: auto` for a free one",
                );
                None
            }
            ScalarKind::Int(_) => self.port_number(node, "for `port`").map(PortSpec::Fixed),
            _ => {
                let found = &s.text;
                let help = if s.kind == ScalarKind::Str && found.parse::<u16>().is_ok() {
                    format!(": write it without quotes, `port: {found}`")
                } else {
                    String::new()
                };
                self.error(
                    node.span,
                    format!("expected a port number or `auto` for `port`, found `{found}`{help}"),
                );
                None
            }
        }
    }

    fn ports(&mut self, node: &Node, path: &str) -> Option<Vec<u16>> {
        let items = match &node.value {
            Value::Null => return Some(Vec::new()),
            Value::Seq(items) => items,
            other => {
                let found = other.describe();
                self.error(
                    node.span,
                    format!("expected a list of container ports for `ports`, found {found}"),
                );
                return None;
            }
        };
        let mut ports = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            self.record(&format!("{path}[{i}]"), item.span);
            match self.port_number(item, "in `ports`") {
                Some(p) => ports.push(p),
                None => ok = false,
            }
        }
        ok.then_some(ports)
    }

    fn config(&mut self, node: &Node) -> Option<serde_json::Map<String, serde_json::Value>> {
        match &node.value {
            Value::Null => Some(serde_json::Map::new()),
            Value::Map(_) => match to_json(node) {
                serde_json::Value::Object(map) => Some(map),
                _ => None,
            },
            other => {
                let found = other.describe();
                self.error(
                    node.span,
                    format!("expected a mapping for `config`, found {found}"),
                );
                None
            }
        }
    }

    // Field helpers.

    /// Checks that `node` is a mapping (null counts as empty) whose keys are all in `allowed`,
    /// reporting each unknown key with the closest valid name.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        owner: Option<&Key>,
        context: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Null => {
                return Some(Fields {
                    entries: Vec::new(),
                });
            }
            Value::Map(entries) => entries,
            other => {
                let found = other.describe();
                let what = match owner {
                    Some(key) => format!("`{}`", key.name),
                    None => context.to_string(),
                };
                self.error(
                    node.span,
                    format!("expected a mapping for {what}, found {found}"),
                );
                return None;
            }
        };
        for (key, _) in entries {
            // `x-` fields are extensions, ignored as docker compose ignores them: a place for
            // YAML anchors that are merged elsewhere.
            if !allowed.contains(&key.name.as_str()) && !key.name.starts_with("x-") {
                let diagnostic = self.unknown_field(key, context, allowed);
                self.push(diagnostic);
            }
        }
        Some(Fields {
            entries: entries.iter().map(|(k, v)| (k, v)).collect(),
        })
    }

    fn unknown_field(&self, key: &Key, context: &str, allowed: &[&str]) -> Diagnostic {
        let name = key.name.as_str();
        // Typos of the aliases count too: `enviroment` means `env`.
        let aliases = ALIASES.iter().filter(|(_, meant)| allowed.contains(meant));
        let candidates = allowed
            .iter()
            .copied()
            .chain(aliases.clone().map(|(alias, _)| *alias));
        let near = closest(name, candidates).or_else(|| {
            aliases
                .clone()
                .find(|(alias, _)| *alias == name)
                .map(|(alias, _)| *alias)
        });
        let meant = near.map(|near| {
            aliases
                .clone()
                .find(|(alias, _)| *alias == near)
                .map_or(near, |(_, meant)| *meant)
        });
        if let Some(meant) = meant {
            return self.sources.error(
                key.span,
                format!("unknown field `{name}`, did you mean `{meant}`?"),
            );
        }
        let diagnostic = self
            .sources
            .error(key.span, format!("unknown field `{name}` in {context}"));
        let misplaced = if TARGET_KINDS.contains(&name) && allowed == SERVICE_FIELDS {
            Some(format!(
                "a target kind goes under `target:`, as in `target: {{ {name}: ... }}`"
            ))
        } else if SERVICE_FIELDS.contains(&name) && allowed != SERVICE_FIELDS {
            Some(format!(
                "`{name}` is a field of the service itself: move it out of the target"
            ))
        } else {
            None
        };
        match (misplaced, allowed) {
            (Some(help), _) => diagnostic.with_help(help),
            (None, []) => diagnostic.with_help("this takes no fields: write `{}`"),
            (None, _) => diagnostic.with_help(format!("expected {}", one_of(allowed))),
        }
    }

    /// Any scalar as text: numbers and booleans as written.
    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s) => Some(s.text.clone()),
            other => {
                let found = other.describe();
                self.error(
                    node.span,
                    format!("expected a string for {what}, found {found}"),
                );
                None
            }
        }
    }

    fn required_text(
        &mut self,
        fields: &Fields<'_>,
        owner: &Key,
        name: &str,
        path: &str,
        context: &str,
    ) -> Option<String> {
        match fields.get(name) {
            None => {
                self.error(owner.span, format!("missing field `{name}` in {context}"));
                None
            }
            Some((_, n)) => {
                self.record(&format!("{path}.{name}"), n.span);
                let text = self.text(n, &format!("`{name}`"))?;
                if text.is_empty() {
                    self.error(n.span, format!("`{name}` is empty"));
                    return None;
                }
                Some(text)
            }
        }
    }

    fn optional_text(
        &mut self,
        fields: &Fields<'_>,
        name: &str,
        path: &str,
    ) -> Option<Option<String>> {
        match fields.present(name) {
            None => Some(None),
            Some((_, n)) => {
                self.record(&format!("{path}.{name}"), n.span);
                self.text(n, &format!("`{name}`")).map(Some)
            }
        }
    }

    /// A list of scalars (null is empty); each element's place is recorded as `path[i]`.
    fn list(&mut self, node: &Node, path: &str, what: &str) -> Option<Vec<String>> {
        let items = match &node.value {
            Value::Null => return Some(Vec::new()),
            Value::Seq(items) => items,
            other => {
                let found = other.describe();
                let diagnostic = self.sources.error(
                    node.span,
                    format!("expected a list of strings for {what}, found {found}"),
                );
                let diagnostic = match &node.value {
                    Value::Scalar(s) if s.kind == ScalarKind::Str => diagnostic.with_help(format!(
                        "write a list: `[{}]`",
                        s.text
                            .split_whitespace()
                            .map(|w| format!("\"{w}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    _ => diagnostic,
                };
                self.push(diagnostic);
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            self.record(&format!("{path}[{i}]"), item.span);
            match &item.value {
                Value::Scalar(s) => out.push(s.text.clone()),
                other => {
                    let found = other.describe();
                    self.error(
                        item.span,
                        format!("expected a string in {what}, found {found}"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn list_field(&mut self, fields: &Fields<'_>, name: &str, path: &str) -> Option<Vec<String>> {
        match fields.get(name) {
            None => Some(Vec::new()),
            Some((k, n)) => {
                let path = format!("{path}.{name}");
                self.record(&path, k.span);
                self.list(n, &path, &format!("`{name}`"))
            }
        }
    }

    fn optional_list_field(
        &mut self,
        fields: &Fields<'_>,
        name: &str,
        path: &str,
    ) -> Option<Option<Vec<String>>> {
        match fields.present(name) {
            None => Some(None),
            Some(_) => self.list_field(fields, name, path).map(Some),
        }
    }

    /// `env:`, a mapping of variable names to scalars; null (an `env:` holding only comments,
    /// as in the ADR) is empty.
    fn env_field(&mut self, fields: &Fields<'_>, path: &str) -> Option<EnvMap> {
        let Some((key, node)) = fields.get("env") else {
            return Some(EnvMap::new());
        };
        let path = format!("{path}.env");
        self.record(&path, key.span);
        let entries = match &node.value {
            Value::Null => return Some(EnvMap::new()),
            Value::Map(entries) => entries,
            other => {
                let found = other.describe();
                self.error(
                    node.span,
                    format!(
                        "expected a mapping of variable names to values for `env`, found {found}"
                    ),
                );
                return None;
            }
        };
        let mut env = EnvMap::new();
        let mut ok = true;
        for (k, v) in entries {
            self.record(&format!("{path}.{}", k.name), v.span);
            if !super::envfile::is_valid_name(&k.name) {
                self.error(
                    k.span,
                    format!("`{}` is not a valid environment variable name: use letters, digits and `_`, not starting with a digit", k.name),
                );
                ok = false;
                continue;
            }
            match &v.value {
                Value::Scalar(s) => {
                    env.insert(k.name.clone(), s.text.clone());
                }
                other => {
                    let found = other.describe();
                    let help = if matches!(other, Value::Null) {
                        format!(": write `{}: \"\"` for an empty value", k.name)
                    } else {
                        String::new()
                    };
                    self.error(
                        v.span,
                        format!(
                            "expected a string value for `{}`, found {found}{help}",
                            k.name
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(env)
    }

    /// An integer from `min` to `max`; `what` reads after "expected", as in "a port number
    /// (1 to 65535) for `port`".
    fn integer(&mut self, node: &Node, what: &str, min: i128, max: i128) -> Option<i128> {
        let found = match &node.value {
            Value::Scalar(s) => match s.kind {
                ScalarKind::Int(i) if (min..=max).contains(&i) => return Some(i),
                _ => format!("`{}`", s.text),
            },
            other => other.describe().to_string(),
        };
        self.error(node.span, format!("expected {what}, found {found}"));
        None
    }

    fn port_number(&mut self, node: &Node, what: &str) -> Option<u16> {
        self.integer(
            node,
            &format!("a port number (1 to 65535) {what}"),
            1,
            65535,
        )
        .map(|p| p as u16)
    }

    fn duration(&mut self, node: &Node, name: &str) -> Option<std::time::Duration> {
        let expected = format!("expected a duration such as `500ms` or `2s` for `{name}`");
        let Value::Scalar(s) = &node.value else {
            let found = node.value.describe();
            self.error(node.span, format!("{expected}, found {found}"));
            return None;
        };
        if let Ok(d) = super::parse_duration(&s.text) {
            return Some(d);
        }
        let diagnostic = self
            .sources
            .error(node.span, format!("{expected}, found `{}`", s.text));
        self.push(match s.kind {
            ScalarKind::Int(n) => diagnostic.with_help(format!("add a unit: `{n}s` or `{n}ms`")),
            _ => diagnostic,
        });
        None
    }
}

/// A YAML node as a JSON value, for the free-form `config:`.
/// Checks a lab subnet: an IPv4 network of /8 to /30 (room for hosts and the test machine).
fn lab_subnet(text: &str) -> Result<(), String> {
    let subnet: Subnet = text.parse()?;
    if !(8..=30).contains(&subnet.prefix) {
        return Err(format!(
            "a lab network needs a prefix between /8 and /30, found `{text}`; or write `auto`"
        ));
    }
    Ok(())
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Scalar(s) => match s.kind {
            ScalarKind::Str => J::String(s.text.clone()),
            ScalarKind::Bool(b) => J::Bool(b),
            ScalarKind::Int(i) => i64::try_from(i)
                .map(J::from)
                .or_else(|_| u64::try_from(i).map(J::from))
                .unwrap_or_else(|_| J::String(s.text.clone())),
            ScalarKind::Float(x) => serde_json::Number::from_f64(x)
                .map(J::Number)
                .unwrap_or_else(|| J::String(s.text.clone())),
        },
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.name.clone(), to_json(v)))
                .collect(),
        ),
    }
}

/// `bytes` as the shortest size a file writes for it: `6M`, `1K`, `100`.
fn short_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}
