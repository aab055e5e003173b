//! A cgroup per service: every process a service starts stays in it, however it forks, double
//! forks or calls `setsid`, so stopping the service can kill all of them at once.
//!
//! Where this process may create cgroups in the cgroup v2 hierarchy (found in
//! `/proc/self/mountinfo`; a hybrid host mounts it at `/sys/fs/cgroup/unified`), or else in the
//! cgroup v1 freezer hierarchy (a host without v2; `/proc/self/cgroup`'s `freezer` line and
//! `freezer.state` take the place of the `0::` line and `cgroup.kill`), it makes one
//! for itself under its current cgroup (`/proc/self/cgroup`, the `0::` line), named
//! `harness-<pid>-<start time>`, and in it one per service instance (`<n>-<service>`). The
//! child joins its cgroup before it execs (it writes `0` to `cgroup.procs`, opened for it
//! beforehand), so nothing it runs starts outside. A stopped service's cgroup is killed
//! (`cgroup.kill`; on kernels before 5.14, frozen and each process killed), waited for until
//! it is empty, and removed; teardown removes this process's own cgroup the same way.
//!
//! A run killed with SIGKILL cannot remove its cgroup: whatever escaped its services' process
//! groups lives on in it. So each new run first removes the `harness-*` cgroups beside its own
//! whose owner is dead, and a detached supervisor records its cgroup so that `harness down` and
//! `harness status` can remove it ([`remove_stale_cgroup`]).
//!
//! When no cgroup v2 hierarchy is mounted, or this process may not write to it (a user whose
//! session is not delegated one), services run without one and their escaped descendants are
//! left to the subreaper (see `reaper.rs`); this is said once, at debug level. `HARNESS_CGROUP`
//! chooses: `none` for that, `v2` or `v1` for one hierarchy only.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a killed cgroup may take to empty.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// Which cgroups services get: `v2`, `v1` (the freezer hierarchy) or `none`; unset, the first
/// of v2 and v1 that works.
pub const CGROUP_ENV: &str = "HARNESS_CGROUP";

/// The prefix of every cgroup a harness process makes for itself.
const PREFIX: &str = "harness-";

/// This process's own cgroup, the parent of its services' cgroups.
struct RunCgroup {
    path: PathBuf,
    next: AtomicU64,
    /// The cgroup's directory, with a shared `flock` held for as long as we live: a harness in
    /// another pid namespace, to whom our pid means nothing, still sees that we are alive.
    _alive: File,
}

/// This process's cgroup, once made; `None` inside where cgroups are not available to us.
static RUN: OnceLock<Option<RunCgroup>> = OnceLock::new();

/// This process's cgroup, made on first use; `None` where cgroups are not available to us.
fn run() -> Option<&'static RunCgroup> {
    RUN.get_or_init(|| match create_run() {
        Ok((path, alive)) => {
            tracing::debug!(cgroup = %path.display(), "services get a cgroup each");
            // A program that never calls `remove_descendants` (one that drives the orchestrator
            // itself) still leaves no empty cgroup when it exits normally.
            // SAFETY: registers a plain function; it runs at `exit`, after `main` returns.
            unsafe { libc::atexit(remove_empty_at_exit) };
            Some(RunCgroup {
                path,
                next: AtomicU64::new(0),
                _alive: alive,
            })
        }
        Err(e) => {
            tracing::debug!(
                "no cgroup for services ({e}); descendants that leave a service's process \
                 group are left to the subreaper"
            );
            None
        }
    })
    .as_ref()
}

fn create_run() -> io::Result<(PathBuf, File)> {
    let choice = std::env::var(CGROUP_ENV).unwrap_or_default();
    let hierarchies: &[Hierarchy] = match choice.as_str() {
        "none" => return Err(io::Error::other(format!("{CGROUP_ENV}=none"))),
        "v1" => &[Hierarchy::V1Freezer],
        "v2" => &[Hierarchy::V2],
        _ => &[Hierarchy::V2, Hierarchy::V1Freezer],
    };
    let mut failures = Vec::new();
    for &hierarchy in hierarchies {
        match create_in(hierarchy) {
            Ok(path) => return Ok(path),
            Err(e) => failures.push(format!("{}: {e}", hierarchy.name())),
        }
    }
    Err(io::Error::other(failures.join("; ")))
}

fn create_in(hierarchy: Hierarchy) -> io::Result<(PathBuf, File)> {
    let parent = current_cgroup(hierarchy)?;
    sweep_stale(&parent);
    let pid = std::process::id();
    let start = start_time(pid).ok_or_else(|| io::Error::other("read our own start time"))?;
    let path = parent.join(format!("{PREFIX}{pid}-{start}"));
    fs::create_dir(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))?;
    let alive = File::open(&path).and_then(|dir| {
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockShared)?;
        Ok(dir)
    });
    match alive {
        Ok(alive) => Ok((path, alive)),
        Err(e) => {
            let _ = fs::remove_dir(&path);
            Err(io::Error::new(
                e.kind(),
                format!("lock {}: {e}", path.display()),
            ))
        }
    }
}

/// A cgroup hierarchy we can kill a whole cgroup in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hierarchy {
    /// The unified hierarchy (cgroup v2): `cgroup.kill`.
    V2,
    /// The v1 freezer hierarchy, on hosts without v2: freeze, kill each process, thaw.
    V1Freezer,
}

impl Hierarchy {
    fn name(self) -> &'static str {
        match self {
            Hierarchy::V2 => "cgroup v2",
            Hierarchy::V1Freezer => "cgroup v1 freezer",
        }
    }

    /// The root and mount point of this hierarchy, if `line` of `/proc/self/mountinfo`
    /// mounts it.
    fn mount(self, line: &str) -> Option<(String, PathBuf)> {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fs = fs.split_whitespace();
        let mounted = match (self, fs.next()?) {
            (Hierarchy::V2, "cgroup2") => true,
            // Type, source, then the super block options, which name the controllers.
            (Hierarchy::V1Freezer, "cgroup") => fs.nth(1)?.split(',').any(|o| o == "freezer"),
            _ => false,
        };
        if !mounted {
            return None;
        }
        let mut fields = mount.split_whitespace();
        let root = unescape(fields.nth(3)?);
        let point = unescape(fields.next()?);
        Some((root, PathBuf::from(point)))
    }

    /// This process's cgroup in this hierarchy, if `line` of `/proc/self/cgroup` names it.
    fn own(self, line: &str) -> Option<&str> {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = match self {
            Hierarchy::V2 => id == "0" && controllers.is_empty(),
            Hierarchy::V1Freezer => controllers.split(',').any(|c| c == "freezer"),
        };
        ours.then_some(path)
    }
}

/// The directory of this process's cgroup in `hierarchy`.
fn current_cgroup(hierarchy: Hierarchy) -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let (root, mount) = mountinfo
        .lines()
        .find_map(|l| hierarchy.mount(l))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not mounted"))?;
    let cgroups = fs::read_to_string("/proc/self/cgroup")?;
    let own = cgroups
        .lines()
        .find_map(|l| hierarchy.own(l))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "this process is not in it"))?;
    // The mount shows the hierarchy from `root` down (a container's namespace, a bind mount).
    let relative = Path::new(own)
        .strip_prefix(&root)
        .map_err(|_| io::Error::other(format!("our cgroup {own} is outside the mounted {root}")))?;
    Ok(mount.join(relative))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A live process's start time in clock ticks since boot (`/proc/PID/stat`, field 22); `None`
/// for a process that is gone or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    // Field 3 was the state; field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}

/// The owner (`pid`, start time) a run cgroup's name records.
fn owner(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_prefix(PREFIX)?.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Removes the run cgroups in `parent` whose owner is dead, with everything in them.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_stale_cgroup(&entry.path());
        }
    }
}

/// Kills what is left in `path`, the cgroup of a harness process that is gone (a detached
/// supervisor or a test runner killed with SIGKILL), and removes it. Does nothing unless `path`
/// is named as harness names its cgroups and its owner is dead; true if it removed it.
pub fn remove_stale_cgroup(path: &Path) -> bool {
    let Some((pid, start)) = path.file_name().and_then(|n| owner(&n.to_string_lossy())) else {
        return false;
    };
    if start_time(pid) == Some(start) || !path.is_dir() {
        return false;
    }
    // The pid may be one of another pid namespace's: the owner's lock tells for sure.
    let Ok(dir) = File::open(path) else {
        return false;
    };
    if rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return false;
    }
    let found = kill_and_remove(path);
    tracing::debug!(cgroup = %path.display(), found, "removed the cgroup of a dead harness");
    true
}

/// Removes this process's cgroups that are empty, at exit. One that still holds a process
/// (a detached service) stays, for the next harness to remove once we are gone.
extern "C" fn remove_empty_at_exit() {
    if let Some(Some(run)) = RUN.get() {
        for dir in tree(&run.path) {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// The path of this process's own cgroup, created if need be; `None` where cgroups are not
/// available. A detached supervisor records it so that the run can be cleaned up after it is
/// killed ([`remove_stale_cgroup`]).
pub fn run_cgroup() -> Option<PathBuf> {
    run().map(|r| r.path.clone())
}

/// Kills everything in this process's cgroup and removes it; how many processes it held.
pub(crate) fn remove_run_cgroup() -> usize {
    // Never made here: a process that started no service has no cgroup to remove.
    match RUN.get().and_then(Option::as_ref) {
        Some(run) if run.path.is_dir() => kill_and_remove(&run.path),
        _ => 0,
    }
}

/// A cgroup of one service instance, which its process joins before it execs.
#[derive(Debug)]
pub(crate) struct ServiceCgroup {
    path: PathBuf,
    procs: OwnedFd,
}

impl ServiceCgroup {
    /// A new cgroup for an instance of `label` (a service name), or `None` where cgroups are
    /// not available.
    pub(crate) fn create(label: &str) -> Option<ServiceCgroup> {
        let run = run()?;
        let n = run.next.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .take(64)
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        // The number first: no name of ours can be taken for a cgroup's own files.
        let path = run.path.join(format!("{n}-{label}"));
        let created = fs::create_dir_all(&path)
            .and_then(|()| File::options().write(true).open(path.join("cgroup.procs")));
        match created {
            Ok(procs) => Some(ServiceCgroup {
                path,
                procs: procs.into(),
            }),
            Err(e) => {
                tracing::debug!(cgroup = %path.display(), "failed to create a service cgroup: {e}");
                let _ = fs::remove_dir(&path);
                None
            }
        }
    }

    /// `cgroup.procs`, open for writing: the child writes `0` to it to join.
    pub(crate) fn procs(&self) -> &OwnedFd {
        &self.procs
    }

    /// Kills everything in the cgroup, waits until it is empty and removes it; how many
    /// processes it held.
    pub(crate) fn remove(self) -> usize {
        kill_and_remove(&self.path)
    }
}

/// Kills every process in the cgroup at `path` and in the cgroups below it, waits until they
/// are gone and removes the cgroups; how many processes there were.
fn kill_and_remove(path: &Path) -> usize {
    let found = count_procs(path);
    if found > 0 {
        kill(path);
    }
    let deadline = Instant::now() + EMPTY_WAIT;
    let mut tries = 0;
    loop {
        // Killed orphans we adopted are zombies of ours until we reap them; looking for them
        // reads all of /proc, so only once the cgroup did not go at the first try.
        if tries > 0 {
            crate::exec::reaper::reap_adopted_zombies();
        }
        tries += 1;
        match remove_tree(path) {
            Ok(()) => return found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return found,
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!("failed to remove the cgroup {}: {e}", path.display());
                return found;
            }
            Err(_) => {
                // Something joined meanwhile, or is still dying.
                if count_procs(path) > 0 {
                    kill(path);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Sends SIGKILL to everything in the cgroup and below.
fn kill(path: &Path) {
    if path.join("freezer.state").exists() {
        return kill_frozen(path, "freezer.state", ("FROZEN", "THAWED"));
    }
    match fs::write(path.join("cgroup.kill"), "1") {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            kill_frozen(path, "cgroup.freeze", ("1", "0"));
        }
        Err(e) => tracing::debug!("failed to write {}/cgroup.kill: {e}", path.display()),
    }
}

/// Without `cgroup.kill` (cgroup v1, or v2 before Linux 5.14): freezes the cgroup with `file`
/// (its values to freeze and to thaw), so that no pid read from it can exit and be reused
/// before it is signalled, kills each one, and thaws it so that they die.
fn kill_frozen(path: &Path, file: &str, (frozen_value, thawed_value): (&str, &str)) {
    let freeze = |value: &str| {
        File::options()
            .write(true)
            .open(path.join(file))
            .and_then(|mut f| f.write_all(value.as_bytes()))
    };
    let frozen = freeze(frozen_value).is_ok();
    if frozen && file == "freezer.state" {
        // v1 reads FREEZING until every task is frozen.
        let deadline = Instant::now() + EMPTY_WAIT;
        while fs::read_to_string(path.join(file)).is_ok_and(|s| s.trim() != "FROZEN")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for dir in tree(path) {
        for pid in pids(&dir) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    if frozen {
        let _ = freeze(thawed_value);
    }
}

/// `path` and every cgroup below it, the deepest first.
fn tree(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(tree(&entry.path()));
            }
        }
    }
    out.push(path.to_path_buf());
    out
}

fn pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn count_procs(path: &Path) -> usize {
    tree(path).iter().map(|d| pids(d).len()).sum()
}

/// Removes the cgroup at `path` and those below it (a cgroup is removed with `rmdir`, and only
/// once it holds no process and no child cgroup).
fn remove_tree(path: &Path) -> io::Result<()> {
    for dir in tree(path) {
        match fs::remove_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hierarchy_is_found_with_its_root_and_our_place_in_it() {
        let hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        let pids = "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids";
        let freezer = "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer";
        let unified = Some(("/".to_string(), PathBuf::from("/sys/fs/cgroup/unified")));
        let frozen = Some(("/".to_string(), PathBuf::from("/sys/fs/cgroup/freezer")));
        let v2 = Hierarchy::V2;
        let v1 = Hierarchy::V1Freezer;
        assert_eq!(
            [hybrid, pids, freezer].map(|l| (v2.mount(l), v1.mount(l))),
            [(unified, None), (None, None), (None, frozen)]
        );
        let nested = r"50 1 0:40 /user.slice /mnt/cg\040x rw - cgroup2 cgroup2 rw";
        assert_eq!(
            v2.mount(nested),
            Some(("/user.slice".to_string(), PathBuf::from("/mnt/cg x")))
        );
        let lines = ["6:freezer:/a", "4:memory:/b", "0::/c", "9:name=systemd:/d"];
        assert_eq!(
            lines.map(|l| (v2.own(l), v1.own(l))),
            [
                (None, Some("/a")),
                (None, None),
                (Some("/c"), None),
                (None, None)
            ]
        );
    }

    #[test]
    fn only_harness_names_have_an_owner() {
        assert_eq!(owner("harness-42-1234"), Some((42, 1234)));
        assert_eq!(owner("harness-42"), None);
        assert_eq!(owner("user.slice"), None);
        // Our own cgroup is never stale.
        let ours = format!(
            "harness-{}-{}",
            std::process::id(),
            start_time(std::process::id()).unwrap()
        );
        assert!(!remove_stale_cgroup(&Path::new("/nonexistent").join(ours)));
    }
}
