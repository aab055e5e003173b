//! What a run of harness may leave behind, and a check that nothing is: the processes that carry
//! the run's environment marker, the entries of its own state root (`HARNESS_STATE_DIR`: the
//! supervisors' sockets, locks, logs and directories) and of its own temporary directory
//! (`TMPDIR`: the state directories of copies started in-process), and the Docker containers,
//! networks and images that harness labelled as owned (`harness.pid`) by one of the run's
//! processes.
//!
//! Give each run its own marker, state root and temporary directory, so that the check is
//! exact and runs of parallel tests do not see each other. The state root may keep an empty
//! `tests/` directory (the supervisors' parent), nothing else.
//!
//! Needs `#[path = "support/fixtures.rs"] mod fixtures;` beside it.

#![allow(dead_code, reason = "each test uses a part of these helpers")]

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The label harness gives each container, network and image with the pid of its owner.
const OWNER_LABEL: &str = "harness.pid";

/// Where one run's leftovers would be.
#[derive(Debug, Clone)]
pub struct Leftovers {
    marker: (String, String),
    state_root: Option<PathBuf>,
    temp_dir: Option<PathBuf>,
    owners: Vec<u32>,
    log: Option<PathBuf>,
}

/// Everything of a run found at one moment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Live processes with the marker: pid and command line.
    pub processes: Vec<(u32, String)>,
    /// Files and directories under the state root and the temporary directory.
    pub files: Vec<PathBuf>,
    /// `docker ps -a` lines of the owners' containers.
    pub containers: Vec<String>,
    /// `docker network ls` lines of the owners' networks.
    pub networks: Vec<String>,
    /// `docker images` lines of the owners' images.
    pub images: Vec<String>,
}

impl Snapshot {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        *self == Snapshot::default()
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "nothing");
        }
        for (pid, command) in &self.processes {
            writeln!(f, "  process {pid}: {command}")?;
        }
        for file in &self.files {
            writeln!(f, "  file {}", file.display())?;
        }
        for (kind, lines) in [
            ("container", &self.containers),
            ("network", &self.networks),
            ("image", &self.images),
        ] {
            for line in lines {
                writeln!(f, "  {kind} {line}")?;
            }
        }
        Ok(())
    }
}

impl Leftovers {
    /// A run whose processes carry `name=value` in their environment.
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            marker: (name.to_string(), value.to_string()),
            state_root: None,
            temp_dir: None,
            owners: Vec::new(),
            log: None,
        }
    }

    /// The run's `HARNESS_STATE_DIR`: only an empty `tests/` may stay in it.
    pub fn with_state_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_root = Some(dir.into());
        self
    }

    /// The run's `TMPDIR`: nothing may stay in it.
    pub fn with_temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// A process of the run that may own Docker objects (a test binary, a supervisor).
    pub fn with_docker_owner(mut self, pid: u32) -> Self {
        self.owners.push(pid);
        self
    }

    /// A log (a supervisor's, say) to show when something is left.
    pub fn with_log(mut self, file: impl Into<PathBuf>) -> Self {
        self.log = Some(file.into());
        self
    }

    /// The pids of the run's live processes.
    pub fn processes(&self) -> Vec<u32> {
        super::fixtures::processes_with_env(&self.marker.0, &self.marker.1)
    }

    /// Everything of the run found now.
    pub fn snapshot(&self) -> Snapshot {
        let processes = self
            .processes()
            .into_iter()
            .map(|pid| (pid, command_line(pid)))
            .collect();
        let mut files = Vec::new();
        if let Some(root) = &self.state_root {
            walk(root, &mut files);
            files.retain(|f| f != &root.join("tests"));
        }
        if let Some(tmp) = &self.temp_dir {
            walk(tmp, &mut files);
        }
        let mut snapshot = Snapshot {
            processes,
            files,
            ..Snapshot::default()
        };
        for &owner in &self.owners {
            let filter = format!("label={OWNER_LABEL}={owner}");
            snapshot.containers.extend(docker(&[
                "ps",
                "-a",
                "--filter",
                &filter,
                "--format",
                "{{.ID}} {{.Names}} {{.Labels}}",
            ]));
            snapshot.networks.extend(docker(&[
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.ID}} {{.Name}} {{.Labels}}",
            ]));
            snapshot.images.extend(docker(&[
                "images",
                "--filter",
                &filter,
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ]));
        }
        snapshot
    }

    /// Polls until nothing of the run is left, failing with everything found if something
    /// still is after `within`.
    pub fn assert_nothing_left(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let found = self.snapshot();
            if found.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let log = self.log.as_ref().map_or(String::new(), |file| {
                    format!(
                        "{}:\n{}",
                        file.display(),
                        std::fs::read_to_string(file).unwrap_or_default()
                    )
                });
                panic!("left {within:?} after the run ended:\n{found}{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills (SIGKILL) every process of the run still alive: for a test's clean-up after a
    /// failure, so that a failing test leaves nothing either.
    pub fn kill_processes(&self) {
        for pid in self.processes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The lines `docker ARGS` prints; none where no engine answers.
fn docker(args: &[&str]) -> Vec<String> {
    let Ok(out) = Command::new("docker").args(args).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A process's command line, with spaces between the arguments.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Every entry under `dir` (not `dir` itself), parents before their contents.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        found.push(path.clone());
        if path.is_dir() && !path.is_symlink() {
            walk(&path, found);
        }
    }
}
