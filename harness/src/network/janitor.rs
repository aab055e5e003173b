//! The registry of meshes on this machine and the janitor that removes what a mesh whose
//! owner died left behind.
//!
//! A mesh's interface has the same name on every node: its prefix, `hm` and 4 hex digits. On
//! this machine the mesh registers as `/run/harness-mesh/PREFIX/`, whose `owner` file names the
//! owning process (pid and start time, so a reused pid is not taken for the owner) and whose
//! `daemon` file names the local `wireguard-go`, if one runs.
//!
//! The local `wireguard-go` dies with its owner (`PR_SET_PDEATHSIG`, set by `LocalLauncher`),
//! and its interface with it; a kernel interface, the stale control socket and the directory
//! stay until the next mesh starts on this machine and sweeps them. Remote nodes' `wireguard-go`
//! are killed by their launcher's watchdog when the owner's connection drops, and take their
//! interfaces with them.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lab::{owner_alive, owner_token, random_u16};
use crate::network::error::MeshError;
use crate::sys::alive;

/// Where meshes register, one directory per mesh. On `/run` (gone at reboot like the
/// interfaces) and outside `/tmp`, which lab hosts mount privately.
pub const MESH_REGISTRY_DIR: &str = "/run/harness-mesh";

/// wireguard-go's control sockets: the path is fixed, `/run/wireguard/IFACE.sock`.
pub(crate) const SOCKET_DIR: &str = "/run/wireguard";

/// A directory without an owner file is being created right now, unless it is this old.
const UNOWNED_GRACE: Duration = Duration::from_secs(60);

pub(crate) fn mesh_dir(prefix: &str) -> PathBuf {
    Path::new(MESH_REGISTRY_DIR).join(prefix)
}

fn socket(prefix: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{prefix}.sock"))
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Reserves a fresh prefix: creates its directory, which no other mesh can then create, and
/// writes this process as its owner.
pub(crate) fn reserve() -> Result<String, MeshError> {
    std::fs::create_dir_all(MESH_REGISTRY_DIR)
        .map_err(|e| MeshError::io(format!("create the mesh registry {MESH_REGISTRY_DIR}"), e))?;
    let token = owner_token(std::process::id()).ok_or_else(|| {
        MeshError::Unsupported("read this process's start time from /proc".into())
    })?;
    const ATTEMPTS: u32 = 1000;
    for attempt in 0..ATTEMPTS {
        let prefix = format!("hm{:04x}", random_u16(attempt));
        if link_exists(&prefix) || socket(&prefix).exists() {
            continue;
        }
        let dir = mesh_dir(&prefix);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::write(dir.join("owner"), &token)
                    .map_err(|e| MeshError::io(format!("write {}/owner", dir.display()), e))?;
                return Ok(prefix);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(MeshError::io(format!("create {}", dir.display()), e)),
        }
    }
    Err(MeshError::io(
        format!("reserve a mesh prefix in {MESH_REGISTRY_DIR}"),
        io::Error::other(format!("{ATTEMPTS} random prefixes were all taken")),
    ))
}

/// Records the local `wireguard-go`'s pid, for the sweep.
pub(crate) fn record_daemon(prefix: &str, pid: u32) -> Result<(), MeshError> {
    let path = mesh_dir(prefix).join("daemon");
    std::fs::write(&path, pid.to_string())
        .map_err(|e| MeshError::io(format!("write {}", path.display()), e))
}

/// Removes this machine's part of the mesh `prefix`: kills its recorded `wireguard-go` if it
/// still runs, deletes the interface and the socket, removes the directory. Errors are
/// ignored: the next sweep tries again.
pub(crate) fn remove_local(prefix: &str) {
    let dir = mesh_dir(prefix);
    if let Some(pid) = std::fs::read_to_string(dir.join("daemon"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        && is_wireguard_go(pid, prefix)
        && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    if link_exists(prefix) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "dev", prefix])
            .stderr(std::process::Stdio::null())
            .status();
    }
    // A killed wireguard-go's interface goes when the kernel closes its tun device.
    let start = Instant::now();
    while link_exists(prefix) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(socket(prefix));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes what meshes whose owner died left on this machine, and returns their prefixes.
pub fn sweep_meshes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(MESH_REGISTRY_DIR) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let prefix = entry.file_name().to_string_lossy().into_owned();
        let dead = match std::fs::read_to_string(entry.path().join("owner")) {
            Ok(token) => !owner_alive(&token),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > UNOWNED_GRACE),
        };
        if dead {
            remove_local(&prefix);
            swept.push(prefix);
        }
    }
    swept
}

/// What of the mesh `prefix` still exists on this machine, lab hosts included (their
/// processes are visible here): the interface in this namespace, the control socket, the
/// registry directory, and any `wireguard-go` serving an interface of that name. Empty once
/// the mesh is gone.
pub fn mesh_leftovers(prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    if link_exists(prefix) {
        left.push(format!("interface {prefix}"));
    }
    if socket(prefix).exists() {
        left.push(format!("socket {}", socket(prefix).display()));
    }
    if mesh_dir(prefix).exists() {
        left.push(format!("directory {}", mesh_dir(prefix).display()));
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            if let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && is_wireguard_go(pid, prefix)
            {
                left.push(format!("wireguard-go {prefix} (pid {pid})"));
            }
        }
    }
    left
}

/// Whether `pid` is a live `wireguard-go` for the interface `prefix`.
fn is_wireguard_go(pid: u32, prefix: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let program = args.first().copied().unwrap_or_default();
    let is_wg = program == b"wireguard-go" || program.ends_with(b"/wireguard-go");
    is_wg && args.iter().skip(1).any(|a| *a == prefix.as_bytes()) && alive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_a_live_owner_and_a_reused_pid_is_not() {
        let token = owner_token(std::process::id()).unwrap();
        assert!(owner_alive(&token));
        assert!(!owner_alive(&format!("{} 1", std::process::id())));
        assert!(!owner_alive("garbage"));
    }
}
