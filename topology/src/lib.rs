//! Topology files (services.yaml): the model, its checks, the dependency graph, overlays,
//! placeholders and env files.
//!
//! The format is the ADR's, read exactly as the ADR writes it: `services:`, each with a
//! `target:` naming one of `process`, `docker`, `remote_lan` or `wireguard`, and an optional
//! `network:` section and free-form `config:`. What harness adds is optional: `dependencies`,
//! `health_check`, `port`, and `${...}` placeholders in args and env values.
//!
//! ```yaml
//! services:
//!   postgres:
//!     target:
//!       docker: { image: postgres:14, env: { POSTGRES_PASSWORD: test }, ports: [5432] }
//!     health_check: { tcp: {}, interval: 200ms, start_period: 20s }
//!   api-server:
//!     target:
//!       process:
//!         binary: ./target/debug/api-server
//!         args: ["--port", "${port}", "--db", "${POSTGRES_ADDR}"]
//!     dependencies: [postgres]
//!     port: auto
//!     health_check: { http: { path: /health, status: 200 } }
//! ```
//!
//! ```
//! use std::collections::HashMap;
//! use harness::topology::{ServiceTarget, TopologyConfig, addr_var};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let yaml = r#"
//! services:
//!   db:
//!     target: { process: { binary: ./db, args: ["--port", "${port}"] } }
//!     port: 5432
//!   api-server:
//!     target: { process: { binary: ./api, args: ["--db", "${DB_ADDR}"] } }
//!     dependencies: [db]
//! "#;
//! let topology = TopologyConfig::from_yaml("services.yaml", yaml)?;
//! assert_eq!(topology.graph()?.start_order(), [["db"], ["api-server"]]);
//!
//! let api = &topology.services["api-server"];
//! let values = HashMap::from([(addr_var("db"), "127.0.0.1:5432".to_string())]);
//! let ServiceTarget::Process(process) = api.substituted(&values)?.target else {
//!     unreachable!("api-server is a process");
//! };
//! assert_eq!(process.args, ["--db", "127.0.0.1:5432"]);
//! assert_eq!(api.location().to_string(), "services.yaml:6:3");
//!
//! // A typo is refused with its place and the likely fix.
//! let error = TopologyConfig::from_yaml("bad.yaml", "services:\n  db:\n    targte: {}\n")
//!     .unwrap_err();
//! assert!(error.to_string().contains(
//!     "bad.yaml:3:5: unknown field `targte`, did you mean `target`?"
//! ));
//! # Ok(()) }
//! ```
//!
//! - [`TopologyConfig::load`] reads a file, [`TopologyConfig::load_with_overlays`] merges
//!   overlay files over it (see [Overlays](self#overlays)), and
//!   [`TopologyConfig::load_with_env`] also applies the overlays named by `HARNESS_OVERLAY`.
//! - A loaded [`TopologyConfig`] holds each [`ServiceConfig`] in file order, with the file,
//!   line and column of each of its fields ([`ServiceConfig::location_of`]), so that later
//!   errors can point at the YAML.
//! - [`TopologyConfig::graph`] gives the [`DependencyGraph`]: start order in layers of services
//!   that may start in parallel, stop order, dependents.
//! - [`ServiceConfig::substituted`] fills the placeholders; [`addr_var`] names the variable
//!   that carries a service's address (`api-server` gives `API_SERVER_ADDR`).
//! - [`write_env_file`] writes the env file a service's scripts `source`.
//!
//! # Checks
//!
//! A bad topology is refused before anything starts. Loading reports every mistake it finds,
//! not only the first, each as a [`Diagnostic`] rendered like a compiler's:
//!
//! ```text
//! services.yaml:7:5: unknown field `dependecies`, did you mean `dependencies`?
//!   |
//! 7 |     dependecies: [postgres]
//!   |     ^^^^^^^^^^^
//! ```
//!
//! What is refused: YAML syntax errors and duplicate keys; unknown fields (with the closest
//! valid name); values of the wrong type; a target or health check naming zero or two kinds;
//! invalid service names ([`validate_service_name`]); unknown dependencies; dependency cycles,
//! named in full (`a -> b -> c -> a`); two services with the same fixed port; unknown
//! placeholders (`${prot}`, with "did you mean `${port}`?", or the address of a service that
//! is not a dependency).
//!
//! Fields and defaults, in short (`docs/topology.md` is the full reference, with an example of
//! each):
//!
//! | field | meaning |
//! |---|---|
//! | `network.wireguard_subnet` | default `10.42.0.0/16` |
//! | `network.lan_interface` | default: the default route's interface |
//! | `network.dns_port` | default 53 as root, 5353 otherwise |
//! | `target.process` | `binary`, `args`, `env`, `working_dir` |
//! | `target.docker` | `image`, `build: { binary, base: scratch \| busybox }`, `env`, `ports`, `volumes`, `command`, `entrypoint`, `working_dir` |
//! | `target.remote_lan` | `host`, `user`, `binary`, `args`, `env`, `working_dir`, `port` (SSH), `key` |
//! | `target.wireguard` | `host`, `user`, `package` |
//! | `dependencies` | services that must be healthy first |
//! | `port` | a number, or `auto` for a free port |
//! | `health_check` | one of `tcp: {}`, `http: { path, status }`, `command: [...]`, `log: REGEX`; `interval` (100ms), `timeout` (1s), `retries` (3), `start_period` (30s) |
//! | `config` | free-form; an empty or comment-only value is an empty map |
//!
//! Fields whose names start with `x-` are ignored at any level, as docker compose does, to
//! hold YAML anchors that services merge (`<<: *defaults`). An `env:` or `args:` holding only
//! comments (YAML null) is empty, as in the ADR's
//! "Configuration Management" example. Numbers and booleans in strings' places (`PORT: 8080`)
//! are taken as written. Booleans are YAML 1.2's `true` and `false` only, so `no` stays a
//! string.
//!
//! # Placeholders
//!
//! In args, env values, working directories, Docker commands and a `command` health check:
//! `${port}`, `${host}` and `${addr}` (`host:port`) of the service itself, and
//! `${<NAME>_ADDR}` of each of its dependencies. `$$` is a literal `$`; any other `$` is left
//! alone. Unknown placeholders are refused when the file is loaded.
//!
//! # Overlays
//!
//! An overlay is a topology file merged over the main one, for example to run one service in
//! a container for a CI matrix:
//!
//! ```yaml
//! # ci/docker.yaml
//! services:
//!   api-server:
//!     target:
//!       docker: { image: harness-local/api-server, build: { binary: ./target/debug/api-server } }
//! ```
//!
//! Mappings merge key by key; scalars and lists replace; `key: null` removes a key (and a
//! whole service). A `target` naming a different kind replaces the old target whole; one naming
//! the same kind merges into it. An overlay may add services, but may not leave a service
//! without a target. Checks run on the merged result, and a mistake in an overlay is reported
//! at the overlay's file and line.
//!
//! Relative paths (binaries, packages, volumes) are kept as written, whichever file they come
//! from; [`TopologyConfig::project_dir`] gives the main file's directory for resolving them.
//!
//! `HARNESS_OVERLAY` names overlays too: a `:`-separated list of files, relative to the current
//! directory, applied in order before those given on the command line
//! ([`TopologyConfig::load_with_env`]).

mod decode;
#[doc(hidden)]
pub mod diagnostic;
#[cfg(test)]
mod docs_tests;
mod duration;
mod envfile;
mod error;
mod graph;
mod load;
mod model;
mod overlay;
#[doc(hidden)]
pub mod parse;
mod size;
mod substitute;
#[doc(hidden)]
pub mod suggest;
mod validate;

/// Where `${cargo_bin:NAME}` binaries are, for the harness crates (the test attribute, the
/// runner and `harness up`); not a stable API.
#[doc(hidden)]
pub mod cargo;

pub use diagnostic::{Diagnostic, MAX_QUOTED_CHARS, Note};
pub use duration::{format_duration, parse_duration};
pub use envfile::{is_valid_name, render_env_file, write_env_file};
pub use error::{EnvFileError, GraphError, PlaceholderError, SubstitutionError, TopologyError};
pub use graph::DependencyGraph;
pub use load::{MAX_TOPOLOGY_FILE_SIZE, OVERLAY_ENV, overlay_paths, read_topology_file};
pub use model::{
    BuildBase, ComposeTarget, Cpus, DockerBuild, DockerTarget, EnvMap, FieldLocations, FileSource,
    HealthCheck, LabConfig, LabHostConfig, LogLimits, LogPattern, NetworkConfig, NetworkMode,
    PortSpec, Probe, ProcessTarget, PullPolicy, RemoteLanTarget, ServiceConfig, ServiceFile,
    ServiceTarget, SourceLocation, StopSignal, Subnet, TopologyConfig, WireguardTarget,
};
pub use size::parse_size;
pub use substitute::{
    CARGO_BIN, DIR, OWN_PLACEHOLDERS, addr_var, cargo_bin_name, env_prefix, substitute,
};
pub use validate::{MAX_SERVICE_NAME_LEN, validate_service_name};
