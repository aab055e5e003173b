//! Where detached runs (`harness up -d`) keep their state, and how other commands find them.
//!
//! Each run has a directory under the state root, named for its topology file and a short hash
//! of the canonical paths of the file and its overlays:
//!
//! - `lock`: held (flock) by the run's supervisor for as long as it lives, through its stdin,
//!   so a run whose lock can be taken has no supervisor any more: it is stale.
//! - `run`: the supervisor's pid and start time (so that a recycled pid is never signalled),
//!   the topology, the stop grace and the API address, as `key=value` lines.
//! - `registry.json`: the registry, saved after every change; `registry.error` while it
//!   cannot be saved ([`crate::save_failure`]).
//! - `supervisor.log`, `supervisor.err`: the supervisor's output.
//! - `services/`: each service's env file and log (`NAME.log`).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::output::{errln, outln};
use harness::registry::{ServiceEntry, Snapshot};
use harness::sys::ProcessIdentity;

pub use harness::orchestrator::state_root;

/// Creates the state root (private to the user) if it does not exist.
pub fn create_state_root(root: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| format!("create the state directory {}: {e}", root.display()))
}

/// The directory of the run of `files` (the topology file, then its overlays, as the topology
/// lists them): `<stem>-<hash of their canonical paths>`.
pub fn run_dir_for(root: &Path, files: &[PathBuf]) -> PathBuf {
    let canonical: Vec<PathBuf> = files.iter().map(|f| canonical(f)).collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &canonical {
        for byte in file.as_os_str().as_encoded_bytes().iter().chain([&0u8]) {
            // FNV-1a: stable across runs and versions, which std's hasher is not.
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let stem = canonical
        .first()
        .and_then(|f| f.file_stem())
        .map_or_else(|| "topology".into(), |s| s.to_string_lossy().into_owned());
    root.join(format!("{stem}-{:012x}", hash & 0xffff_ffff_ffff))
}

/// The absolute, symlink-free form of `path`. A path that no longer exists (a topology file
/// deleted while its run goes on) resolves through its deepest ancestor that still does, so
/// that it still names the run recorded for it.
pub fn canonical(path: &Path) -> PathBuf {
    if let Ok(resolved) = fs::canonicalize(path) {
        return resolved;
    }
    let Ok(absolute) = std::path::absolute(path) else {
        return path.to_path_buf();
    };
    let mut missing = Vec::new();
    let mut ancestor = absolute.as_path();
    while let (Some(parent), Some(name)) = (ancestor.parent(), ancestor.file_name()) {
        missing.push(name);
        ancestor = parent;
        if let Ok(resolved) = fs::canonicalize(ancestor) {
            return missing.iter().rev().fold(resolved, |p, name| p.join(name));
        }
    }
    absolute
}

/// What the supervisor records about its run in `<dir>/run`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// The supervisor's pid.
    pub pid: u32,
    /// The supervisor's start time in clock ticks since boot (`/proc/PID/stat`, field 22).
    pub start_time: u64,
    /// The canonical topology file.
    pub file: PathBuf,
    /// The overlays given on the command line.
    pub overlays: Vec<PathBuf>,
    /// How long each service may take to stop.
    pub stop_grace: Duration,
    /// The WebSocket API's address, if it serves one.
    pub api: Option<SocketAddr>,
    /// When the supervisor started (seconds since the epoch).
    pub started: u64,
    /// The services, in the topology's order.
    pub services: Vec<String>,
}

impl RunInfo {
    /// Writes the record atomically (a temporary file renamed over it).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let mut text = String::new();
        let _ = writeln!(text, "pid={}", self.pid);
        let _ = writeln!(text, "start_time={}", self.start_time);
        let _ = writeln!(text, "file={}", self.file.display());
        for overlay in &self.overlays {
            let _ = writeln!(text, "overlay={}", overlay.display());
        }
        let _ = writeln!(text, "stop_grace_ms={}", self.stop_grace.as_millis());
        if let Some(api) = self.api {
            let _ = writeln!(text, "api={api}");
        }
        let _ = writeln!(text, "started={}", self.started);
        for service in &self.services {
            let _ = writeln!(text, "service={service}");
        }
        let tmp = dir.join(".run.tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, dir.join("run"))
    }

    /// Reads `<dir>/run`; `None` if it is missing or unreadable (a run still starting).
    pub fn read(dir: &Path) -> Option<RunInfo> {
        let text = fs::read_to_string(dir.join("run")).ok()?;
        let mut info = RunInfo {
            pid: 0,
            start_time: 0,
            file: PathBuf::new(),
            overlays: Vec::new(),
            stop_grace: Duration::ZERO,
            api: None,
            started: 0,
            services: Vec::new(),
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "pid" => info.pid = value.parse().ok()?,
                "start_time" => info.start_time = value.parse().ok()?,
                "file" => info.file = PathBuf::from(value),
                "overlay" => info.overlays.push(PathBuf::from(value)),
                "stop_grace_ms" => info.stop_grace = Duration::from_millis(value.parse().ok()?),
                "api" => info.api = value.parse().ok(),
                "started" => info.started = value.parse().ok()?,
                "service" => info.services.push(value.to_string()),
                _ => {}
            }
        }
        (info.pid != 0).then_some(info)
    }

    /// Whether the supervisor still runs: its pid exists, is no zombie, and started when it
    /// recorded (so a recycled pid does not count).
    pub fn supervisor_alive(&self) -> bool {
        ProcessIdentity {
            pid: self.pid,
            start_time: self.start_time,
        }
        .is_alive()
    }

    /// The topology as a user names it: the file, with its overlays if any.
    pub fn describe(&self) -> String {
        let mut out = self.file.display().to_string();
        for overlay in &self.overlays {
            let _ = write!(out, " --overlay {}", overlay.display());
        }
        out
    }

    /// How long the run has been up.
    pub fn uptime(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Duration::from_secs(now.saturating_sub(self.started))
    }
}

/// The time now, in seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Tries to take a run's lock without waiting: the open lock file if it was free (nobody holds
/// it: the run is being created by us, or its supervisor is gone), `None` if it is held.
pub fn try_lock(dir: &Path, create: bool) -> io::Result<Option<File>> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(dir.join("lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// One run directory found in the state root.
#[derive(Debug)]
pub struct Run {
    /// Its directory.
    pub dir: PathBuf,
    /// Its record, once the supervisor has written it.
    pub info: Option<RunInfo>,
    /// For a stale run, its lock, held until the run is removed, so that no `harness up -d`
    /// starts in the directory meanwhile.
    pub lock: Option<File>,
}

impl Run {
    /// The run's services as its registry file last showed them, in the topology's order.
    pub fn services(&self) -> Vec<ServiceEntry> {
        let mut services = Snapshot::read(&self.dir.join("registry.json"))
            .map(|s| s.services)
            .unwrap_or_default();
        if let Some(info) = &self.info {
            // Those the record does not list (none, unless it is from an older harness) last.
            services.sort_by_key(|s| {
                info.services
                    .iter()
                    .position(|n| *n == s.name)
                    .unwrap_or(usize::MAX)
            });
        }
        services
    }

    /// Why the supervisor cannot save the registry, while it cannot: what
    /// [`Run::services`] shows may then be stale.
    pub fn save_failure(&self) -> Option<crate::save_failure::SaveFailureRecord> {
        crate::save_failure::read(&self.dir)
    }

    /// The topology as a user names it.
    pub fn describe(&self) -> String {
        self.info
            .as_ref()
            .map_or_else(|| self.dir.display().to_string(), RunInfo::describe)
    }

    /// A service's log file.
    pub fn log_file(&self, service: &str) -> PathBuf {
        self.dir.join("services").join(format!("{service}.log"))
    }

    /// Whether the run is still there: its supervisor lives and its directory exists.
    pub fn alive(&self) -> bool {
        self.dir.is_dir() && self.info.as_ref().is_none_or(RunInfo::supervisor_alive)
    }
}

/// The runs in the state root, live ones first, then stale ones (those whose supervisor is
/// gone), each sorted by directory. With `file`, only the runs of that topology file.
pub fn find_runs(file: Option<&Path>) -> Result<(Vec<Run>, Vec<Run>), String> {
    let root = state_root();
    let file = file.map(canonical);
    let entries = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(format!("read the state directory {}: {e}", root.display())),
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let (mut live, mut stale) = (Vec::new(), Vec::new());
    for dir in dirs {
        let info = RunInfo::read(&dir);
        if let (Some(file), Some(info)) = (&file, &info)
            && &info.file != file
        {
            continue;
        }
        if file.is_some() && info.is_none() {
            continue;
        }
        let mut run = Run {
            dir,
            info,
            lock: None,
        };
        match try_lock(&run.dir, false) {
            // Held: the supervisor lives (or a `harness up -d` is creating the run).
            Ok(None) => live.push(run),
            // Free: nobody owns the run any more.
            Ok(Some(lock)) => {
                run.lock = Some(lock);
                stale.push(run);
            }
            // No lock file: the directory is being removed, or was left half removed.
            Err(_) if run.alive() => {}
            Err(_) => stale.push(run),
        }
    }
    Ok((live, stale))
}

/// Removes a stale run's directory and says so: its services died with its supervisor
/// (they get SIGKILL when it dies).
/// The live runs (of `file`, or all) for `harness COMMAND`, after cleaning stale ones. When
/// none runs, says so and returns the exit code for it; a failure to look returns
/// [`EXIT_HARNESS_FAILED`](crate::run::EXIT_HARNESS_FAILED) after saying why.
pub fn live_runs(file: Option<&Path>, command: &str) -> Result<Vec<Run>, std::process::ExitCode> {
    let (live, stale) = find_runs(file).map_err(|e| {
        errln!("harness {command}: failed to {e}");
        std::process::ExitCode::from(crate::run::EXIT_HARNESS_FAILED)
    })?;
    for run in &stale {
        clean_stale(run, command);
    }
    if live.is_empty() {
        match file {
            Some(file) if !file.exists() => outln!(
                "harness {command}: {} is not running (and does not exist; `harness status` \
                 lists what runs, by the path each was started with)",
                file.display()
            ),
            Some(file) => outln!("harness {command}: {} is not running", file.display()),
            None => outln!("harness {command}: nothing is running"),
        }
        return Err(std::process::ExitCode::from(
            crate::status::EXIT_NOT_RUNNING,
        ));
    }
    Ok(live)
}

pub fn clean_stale(run: &Run, command: &str) {
    let pid = run
        .info
        .as_ref()
        .map_or_else(|| "?".to_string(), |i| i.pid.to_string());
    crate::daemon::remove_stale_cgroup(&run.dir);
    match fs::remove_dir_all(&run.dir) {
        Ok(()) => outln!(
            "harness {command}: removed the stale run of {} (its supervisor, pid {pid}, is gone, \
             and its services died with it)",
            run.describe()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => errln!(
            "harness {command}: warning: failed to remove the stale run {}: {e}",
            run.dir.display()
        ),
    }
}

/// Removes everything in `dir` but its lock file, which the caller holds.
pub fn clear_except_lock(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "lock" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// `1h02m`, `3m04s`, `12s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_record_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let info = RunInfo {
            pid: 42,
            start_time: 1234,
            file: PathBuf::from("/p/demo.yaml"),
            overlays: vec![PathBuf::from("a.yaml"), PathBuf::from("b.yaml")],
            stop_grace: Duration::from_millis(1500),
            api: Some("127.0.0.1:9".parse().unwrap()),
            started: 99,
            services: vec!["db".into(), "api".into()],
        };
        info.write(dir).unwrap();
        assert_eq!(RunInfo::read(dir), Some(info));
    }

    #[test]
    fn overlays_make_another_run() {
        let root = Path::new("/nonexistent-root");
        let plain = run_dir_for(root, &[PathBuf::from("/x/demo.yaml")]);
        let overlaid = run_dir_for(
            root,
            &[PathBuf::from("/x/demo.yaml"), PathBuf::from("/x/o.yaml")],
        );
        assert_ne!(plain, overlaid);
        assert!(
            plain
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("demo-")
        );
        assert_eq!(plain, run_dir_for(root, &[PathBuf::from("/x/demo.yaml")]));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_secs(12)), "12s");
        assert_eq!(format_duration(Duration::from_secs(184)), "3m04s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }
}
