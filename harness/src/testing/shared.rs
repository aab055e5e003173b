//! Sharing a topology between the tests of one process: started by the first test that needs
//! it, stopped after the last selected one. Under nextest (a process per test) the copy is a
//! lease on the one the run's supervisor owns (`supervisor.rs`).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::orchestrator::{Progress, ServiceManager};
use crate::registry::Registry;
use crate::topology::{OVERLAY_ENV, TopologyConfig, overlay_paths, read_topology_file};

use super::case::{TestCase, TopologyKey};
use super::supervisor;
use super::topology::Topology;

/// Says on stderr which service a start waits for, and why, when it takes a while: a test
/// that names a slow topology would otherwise sit silent until the health check gives up.
/// Never on stdout, which carries the runner's result lines (JSON under `--format json`).
/// In a supervisor under nextest, stderr is its log file.
fn report_waiting(progress: &Progress) {
    if let Progress::StillWaiting(waiting) = progress {
        // A closed stderr is no reason to fail the start.
        let _ = writeln!(std::io::stderr().lock(), "harness: {waiting}");
    }
}

/// Where the package's binary `name` is now: nextest tells each test where the binaries it runs
/// with are (`NEXTEST_BIN_EXE_NAME`, `CARGO_BIN_EXE_NAME`), also after
/// `cargo nextest run --archive-file` unpacked them elsewhere; else `compiled`, the path cargo
/// gave when the test was compiled.
fn cargo_bin_path(name: &str, compiled: &str) -> String {
    let underscored = name.replace('-', "_");
    [
        format!("NEXTEST_BIN_EXE_{name}"),
        format!("NEXTEST_BIN_EXE_{underscored}"),
        format!("CARGO_BIN_EXE_{name}"),
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok().filter(|path| !path.is_empty()))
    .unwrap_or_else(|| compiled.to_string())
}

/// One topology file (with its overlays) and the copy of it that its tests share.
pub(crate) struct Shared {
    key: TopologyKey,
    /// The embedded texts: the file, then its overlays.
    sources: Vec<(PathBuf, String)>,
    base_dir: PathBuf,
    /// What `${cargo_bin:NAME}` stands for: the package's binaries, by name.
    cargo_bins: &'static [(&'static str, &'static str)],
    /// The other packages' binaries it names, with their packages, and the package's manifest.
    workspace_bins: &'static [(&'static str, &'static str)],
    manifest: &'static str,
    /// Where the shared copy comes from.
    origin: Origin,
    config: OnceLock<Result<TopologyConfig, String>>,
    /// Selected tests that share the copy and have not finished.
    remaining: Mutex<usize>,
    state: Mutex<State>,
}

/// Who starts the copy that a topology's tests share.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// This process, when its first test needs it.
    Here,
    /// The supervisor of this nextest run (its id), started by the first test that asks.
    Nextest(String),
    /// The runner that started this worker process, which serves it on this socket.
    Runner(PathBuf),
}

enum State {
    Idle,
    Running(Topology),
    /// The start failed: every test of the topology fails with this message, without retrying.
    Failed(String),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The topology `case` names; its binaries are resolved against `base_dir`, and the copy
    /// its tests share comes from `origin`.
    pub(crate) fn new(case: &TestCase, base_dir: PathBuf, origin: Origin) -> Self {
        let sources = std::iter::once(&case.topology)
            .chain(case.overlays)
            .map(|s| (PathBuf::from(s.path), s.text.to_string()))
            .collect();
        Self {
            key: case.topology_key(),
            sources,
            base_dir,
            cargo_bins: case.cargo_bins,
            workspace_bins: case.workspace_bins,
            manifest: case.manifest,
            origin,
            config: OnceLock::new(),
            remaining: Mutex::new(0),
            state: Mutex::new(State::Idle),
        }
    }

    /// The file and overlays.
    pub(crate) fn key(&self) -> &TopologyKey {
        &self.key
    }

    /// Counts one more selected test that will use the shared copy.
    pub(crate) fn expect_test(&self) {
        *lock(&self.remaining) += 1;
    }

    /// The directory relative binaries are resolved against.
    pub(crate) fn base_dir(&self) -> &std::path::Path {
        &self.base_dir
    }

    /// What tells this topology's supervisor apart: the embedded texts, the overlays
    /// `HARNESS_OVERLAY` names and the base directory.
    pub(crate) fn fingerprint(&self) -> String {
        let overlay_env = std::env::var_os(OVERLAY_ENV).unwrap_or_default();
        let base_dir = self.base_dir.as_os_str().as_encoded_bytes();
        let mut parts: Vec<&[u8]> = vec![overlay_env.as_encoded_bytes(), base_dir];
        for (path, text) in &self.sources {
            parts.push(path.as_os_str().as_encoded_bytes());
            parts.push(text.as_bytes());
        }
        for (name, path) in self.cargo_bins.iter().chain(self.workspace_bins) {
            parts.push(name.as_bytes());
            parts.push(path.as_bytes());
        }
        supervisor::fnv(&parts)
    }

    /// The same topology, its shared copy from `origin`.
    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// The name of the socket a runner serves the shared copy to its workers on.
    pub(crate) fn socket_name(&self) -> String {
        format!("{}.sock", self.fingerprint())
    }

    /// The file and its overlays, for messages.
    pub(crate) fn label(&self) -> String {
        let mut label = self.key.file.display().to_string();
        for overlay in &self.key.overlays {
            label.push_str(&format!(" + {}", overlay.display()));
        }
        label
    }

    /// The topology, checked once: the embedded files, then the overlays `HARNESS_OVERLAY`
    /// names (read now).
    fn config(&self) -> Result<TopologyConfig, String> {
        self.config
            .get_or_init(|| {
                let mut files = self.sources.clone();
                for path in std::env::var_os(OVERLAY_ENV)
                    .map(|v| overlay_paths(&v))
                    .unwrap_or_default()
                {
                    let text = read_topology_file(&path)
                        .map_err(|e| format!("{e} (an overlay named by {OVERLAY_ENV})"))?;
                    files.push((path, text));
                }
                TopologyConfig::from_yaml_files(&files).map_err(|e| e.to_string())
            })
            .clone()
    }

    /// Starts a fresh copy of the topology.
    fn start_copy(&self) -> Result<Topology, String> {
        self.start_in(None)
    }

    /// Starts the copy a supervisor owns, with its env files and logs in `state_dir`.
    pub(crate) fn start_supervised(&self, state_dir: &std::path::Path) -> Result<Topology, String> {
        self.start_in(Some(state_dir))
    }

    fn start_in(&self, state_dir: Option<&std::path::Path>) -> Result<Topology, String> {
        let mut bins: Vec<(&str, String)> = self
            .cargo_bins
            .iter()
            .map(|&(name, compiled)| (name, cargo_bin_path(name, compiled)))
            .collect();
        for &(name, package) in self.workspace_bins {
            let path = super::cargo::workspace_bin(name, package, self.manifest)
                .map_err(|e| format!("start topology {}: {e}", self.label()))?;
            bins.push((name, path));
        }
        let mut manager = ServiceManager::new(self.config()?, Registry::new())
            .with_base_dir(&self.base_dir)
            .with_cargo_bins(bins)
            .with_progress(report_waiting);
        if let Some(dir) = state_dir {
            manager = manager.with_state_dir(dir);
        }
        async_io::block_on(Topology::launch(manager))
            .map_err(|e| format!("start topology {}: {e}", self.label()))
    }

    /// The shared copy, started by the first caller; a failed start fails every later caller
    /// with the same message.
    pub(crate) fn acquire(&self) -> Result<Topology, String> {
        let mut state = lock(&self.state);
        match &*state {
            State::Running(topology) if matches!(self.origin, Origin::Runner(_)) => {
                // A worker keeps its lease from test to test, and asks how the copy is now.
                topology
                    .refresh_lease()
                    .map(|()| topology.clone())
                    .map_err(|e| format!("share topology {}: {e}", self.label()))
            }
            State::Running(topology) => Ok(topology.clone()),
            State::Failed(message) => Err(message.clone()),
            State::Idle => {
                let started = match &self.origin {
                    Origin::Here => self.start_copy(),
                    Origin::Nextest(run_id) => supervisor::lease(self, run_id),
                    Origin::Runner(socket) => supervisor::lease_at(self, socket),
                };
                *state = match &started {
                    Ok(topology) => State::Running(topology.clone()),
                    Err(message) => State::Failed(message.clone()),
                };
                started
            }
        }
    }

    /// A private copy for an `isolated` test; the caller stops it.
    pub(crate) fn start_private(&self) -> Result<Topology, String> {
        self.start_copy()
    }

    /// One selected test is done with the shared copy; the last one stops it. A worker's
    /// lease on its runner's copy is kept for its next test, and let go when the worker ends.
    pub(crate) fn release(&self) {
        if matches!(self.origin, Origin::Runner(_)) {
            return;
        }
        let last = {
            let mut remaining = lock(&self.remaining);
            *remaining = remaining.saturating_sub(1);
            *remaining == 0
        };
        if last {
            self.shut_down();
        }
    }

    /// Stops the shared copy if it runs.
    pub(crate) fn shut_down(&self) {
        let mut state = lock(&self.state);
        if let State::Running(topology) = &*state {
            if let Err(e) = async_io::block_on(topology.shut_down()) {
                eprintln!("harness: stop topology {}: {e}", self.label());
            }
            *state = State::Idle;
        }
    }
}
