//! The registry of running labs, teardown of one lab by its prefix, and the janitor that tears
//! down what labs whose owner died left behind.
//!
//! Every name a lab creates starts with its prefix: the namespaces `PREFIX` (the switch, which
//! holds the bridges) and `PREFIX-HOST`, the links `PREFIX-N` in the root namespace, the
//! directory `/run/harness-lab/PREFIX` (keys, configs, logs, per-host `/root`s). That
//! directory's `owner` file names the process that built the lab (pid and start time, so a
//! reused pid does not count as the owner). So everything of a lab can be found again by its
//! prefix alone, also by another process after the owner was killed.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::lab::error::LabError;
use crate::lab::ip;
use crate::sys::{ProcessIdentity, alive};

/// Where labs register: one directory per lab, named by its prefix. On `/run` (a tmpfs, gone at
/// reboot like the namespaces), and outside `/tmp`, which every lab host mounts privately.
pub const REGISTRY_DIR: &str = "/run/harness-lab";

/// How long processes and links may take to disappear during teardown.
const GONE_WITHIN: Duration = Duration::from_secs(10);
/// A lab directory without an owner file is being created right now, unless it is older than
/// this (its creator died between the two steps).
const UNOWNED_GRACE: Duration = Duration::from_secs(60);

/// The lab directory of `prefix`.
pub(crate) fn lab_dir(prefix: &str) -> PathBuf {
    Path::new(REGISTRY_DIR).join(prefix)
}

/// Reserves a fresh prefix (`hx` and 4 hex digits): creates its directory, which no other lab
/// can then create, and writes this process as its owner.
pub(crate) fn reserve() -> Result<String, LabError> {
    std::fs::create_dir_all(REGISTRY_DIR)
        .map_err(|e| LabError::io(format!("create the lab registry {REGISTRY_DIR}"), e))?;
    let token = owner_token(std::process::id())
        .ok_or_else(|| LabError::Unsupported("read this process's start time from /proc".into()))?;
    // 65536 prefixes: a free one is found in a few tries unless thousands of labs run.
    const ATTEMPTS: u32 = 1000;
    for attempt in 0..ATTEMPTS {
        let prefix = format!("hx{:04x}", random_u16(attempt));
        let taken_by_names = ip::namespaces()
            .iter()
            .chain(ip::root_links().iter())
            .any(|n| belongs_to(n, &prefix));
        if taken_by_names {
            continue;
        }
        let dir = lab_dir(&prefix);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::write(dir.join("owner"), &token)
                    .map_err(|e| LabError::io(format!("write {}/owner", dir.display()), e))?;
                return Ok(prefix);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LabError::io(format!("create {}", dir.display()), e)),
        }
    }
    Err(LabError::io(
        format!("reserve a lab prefix in {REGISTRY_DIR}"),
        io::Error::other(format!("{ATTEMPTS} random prefixes were all taken")),
    ))
}

/// Whether the name `name` (a namespace or a link) belongs to the lab `prefix`.
fn belongs_to(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// Tears down every lab in the registry whose owner is dead, and returns their prefixes.
/// Errors are not fatal here: what cannot be removed now is tried again by the next sweep.
pub fn sweep() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(REGISTRY_DIR) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let Ok(prefix) = entry.file_name().into_string() else {
            continue;
        };
        // Hidden entries are not labs (a lab's prefix never starts with a dot).
        if prefix.starts_with('.') {
            continue;
        }
        let dir = entry.path();
        let dead = match std::fs::read_to_string(dir.join("owner")) {
            Ok(token) => !owner_alive(&token),
            Err(_) => std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > UNOWNED_GRACE),
        };
        if dead {
            match teardown(&prefix) {
                Ok(()) => {}
                Err(e) => tracing::warn!("failed to sweep a dead lab: {e}"),
            }
            swept.push(prefix);
        }
    }
    swept
}

/// Removes everything of the lab `prefix`: kills every process in its namespaces (SIGKILL:
/// `unshare --fork` ignores SIGTERM, and killing it takes the host's PID namespace down),
/// deletes the namespaces, waits until their links are gone, removes the root namespace's
/// links and the lab directory.
pub(crate) fn teardown(prefix: &str) -> Result<(), LabError> {
    let namespaces: Vec<String> = ip::namespaces()
        .into_iter()
        .filter(|n| belongs_to(n, prefix))
        .collect();
    let mut pids = Vec::new();
    for ns in &namespaces {
        pids.extend(ip::pids_in(ns));
    }
    pids.extend(processes_using(&lab_dir(prefix)));
    for &pid in &pids {
        kill(pid);
    }
    wait_until(|| pids.iter().all(|&p| !alive(p)));
    for ns in &namespaces {
        let _ = ip::ip(prefix, "delete a lab namespace", &["netns", "del", ns]);
    }
    // Deleting a namespace destroys its veths, and with them their peers in the root namespace,
    // but only after `ip netns del` returned. Delete what is still there (a link that is going
    // away already may fail to delete: no matter), then wait until none is left.
    for link in ip::root_links()
        .into_iter()
        .filter(|l| belongs_to(l, prefix))
    {
        let _ = ip::ip(prefix, "delete a lab link", &["link", "del", &link]);
    }
    wait_until(|| !ip::root_links().iter().any(|l| belongs_to(l, prefix)));
    let dir = lab_dir(prefix);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LabError::io(format!("remove {}", dir.display()), e)),
    }
    let left = leftovers(prefix);
    if left.is_empty() {
        Ok(())
    } else {
        Err(LabError::Leftover {
            prefix: prefix.to_string(),
            left: left.join(", "),
        })
    }
}

/// What of the lab `prefix` exists right now: its namespaces, its links in the root namespace,
/// processes whose command line names its directory (the hosts' `unshare`, init and `sshd`),
/// and the directory itself. Empty once the lab is gone.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    for ns in ip::namespaces()
        .into_iter()
        .filter(|n| belongs_to(n, prefix))
    {
        left.push(format!("namespace {ns}"));
    }
    for link in ip::root_links()
        .into_iter()
        .filter(|l| belongs_to(l, prefix))
    {
        left.push(format!("link {link}"));
    }
    let dir = lab_dir(prefix);
    for pid in processes_using(&dir) {
        left.push(format!("process {pid}"));
    }
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    left
}

/// Live processes whose command line names a host file in the lab directory `dir`: the hosts'
/// `unshare` (which runs the init script) and `sshd` (which reads its config). ssh clients,
/// which name the lab's key and known-hosts file, are their owners' to close, not ours.
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/hosts/", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0)
                    .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
            })
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// `PID STARTTIME`: the pid and its start time in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), which tells a process apart from a later one with the same pid.
pub(crate) fn owner_token(pid: u32) -> Option<String> {
    let owner = ProcessIdentity::of(pid)?;
    Some(format!("{} {}", owner.pid, owner.start_time))
}

pub(crate) fn owner_alive(token: &str) -> bool {
    let mut parts = token.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(pid), Some(start_time), None) => {
            ProcessIdentity::parse(pid, start_time).is_some_and(|owner| owner.is_alive())
        }
        _ => false,
    }
}

fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < GONE_WITHIN {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// 16 random bits: std's per-process random hash keys, mixed with the time and `salt`.
pub(crate) fn random_u16(salt: u32) -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(salt);
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_belong_to_their_lab_only() {
        assert!(belongs_to("hx1a2b", "hx1a2b"));
        assert!(belongs_to("hx1a2b-web", "hx1a2b"));
        assert!(belongs_to("hx1a2b-0", "hx1a2b"));
        assert!(!belongs_to("hx1a2bc", "hx1a2b"));
        assert!(!belongs_to("hx1a2", "hx1a2b"));
        assert!(!belongs_to("eth0", "hx1a2b"));
    }

    #[test]
    fn this_process_is_a_live_owner() {
        let token = owner_token(std::process::id()).unwrap();
        assert!(owner_alive(&token));
        // Same pid, another start time: a reused pid is not the owner.
        let pid = std::process::id();
        assert!(!owner_alive(&format!("{pid} 1")));
        assert!(!owner_alive("garbage"));
    }
}
