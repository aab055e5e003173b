//! One lab host: its files (sshd config, init script, `/root`), its process and its readiness.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::exec::{Command, Launcher, LocalLauncher, LocalProcess, ProcessHandle};
use crate::lab::error::LabError;

/// The port every host's sshd listens on: each host has a network namespace of its own, so they
/// all get the standard one.
pub(crate) const SSH_PORT: u16 = 22;
/// How long a host's sshd may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Writes the host's sshd config, init script and `/root` into `HOSTDIR` and returns the init
/// script's path.
pub(crate) fn write_files(
    lab_dir: &Path,
    host_dir: &Path,
    name: &str,
) -> Result<PathBuf, LabError> {
    let io = |what: &str, e| {
        LabError::io(
            format!("write {what} of host `{name}` in {}", host_dir.display()),
            e,
        )
    };
    std::fs::create_dir_all(host_dir.join("root")).map_err(|e| io("/root", e))?;
    let config = format!(
        "Port {SSH_PORT}\n\
         ListenAddress 0.0.0.0\n\
         HostKey {lab}/host_key\n\
         AuthorizedKeysFile {lab}/authorized_keys\n\
         PidFile none\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         # Many remote processes run over one multiplexed connection.\n\
         MaxSessions 100\n\
         MaxStartups 100:30:200\n",
        lab = lab_dir.display()
    );
    std::fs::write(host_dir.join("sshd_config"), config).map_err(|e| io("sshd_config", e))?;
    // PID 1 of the host's PID namespace until it execs sshd. Its mounts are private (unshare
    // --mount makes propagation private): a tmpfs on /tmp and on /run/wireguard (whose socket
    // paths are fixed, so two hosts running wireguard-go would otherwise meet there), and the
    // host's own directory on /root. State stays in the lab directory, which is outside them.
    let dir = crate::exec::quote(&host_dir.to_string_lossy());
    let script = format!(
        "set -e\n\
         hostname {name}\n\
         mount -t tmpfs -o mode=1777 lab-tmp /tmp\n\
         [ -d /run/wireguard ] || mkdir -p /run/wireguard\n\
         mount -t tmpfs -o mode=0700 lab-wireguard /run/wireguard\n\
         mount --bind {dir}/root /root\n\
         mkdir -p /run/sshd\n\
         exec /usr/sbin/sshd -D -e -f {dir}/sshd_config 2>>{dir}/sshd.log\n"
    );
    let init = host_dir.join("init.sh");
    std::fs::write(&init, script).map_err(|e| io("init.sh", e))?;
    Ok(init)
}

/// Starts the host in namespace `ns`: `unshare` gives it PID, mount and UTS namespaces of its
/// own and runs the init script as PID 1. The returned process is `unshare` itself (`ip netns
/// exec` execs it); it dies with this process (`PR_SET_PDEATHSIG`) and takes the host with it
/// (`--kill-child`).
pub(crate) async fn spawn(name: &str, ns: &str, init: &Path) -> Result<LocalProcess, LabError> {
    let cmd = Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--uts",
        "--mount",
        "sh",
        &init.to_string_lossy(),
    ]);
    LocalLauncher
        .spawn(&cmd)
        .await
        .map_err(|source| LabError::Launch {
            host: name.to_string(),
            source,
        })
}

/// Waits until the host's sshd accepts TCP connections on `addr` from this machine.
pub(crate) async fn wait_ready(
    prefix: &str,
    name: &str,
    host_dir: &Path,
    process: &mut LocalProcess,
    addr: Ipv4Addr,
) -> Result<(), LabError> {
    let target = SocketAddr::from((addr, SSH_PORT));
    let start = Instant::now();
    loop {
        if let Some(status) = process.try_status() {
            let mut log = String::new();
            if let Some(events) = process.take_events() {
                log.push_str(&events.collect().await.stderr_text());
            }
            log.push_str(&std::fs::read_to_string(host_dir.join("sshd.log")).unwrap_or_default());
            return Err(LabError::HostStart {
                prefix: prefix.to_string(),
                host: name.to_string(),
                reason: format!("its init {status} before sshd listened on {target}"),
                log,
            });
        }
        let attempt = futures_lite::future::or(
            async { async_net::TcpStream::connect(target).await.is_ok() },
            async {
                async_io::Timer::after(Duration::from_millis(500)).await;
                false
            },
        );
        if attempt.await {
            return Ok(());
        }
        if start.elapsed() > READY_WITHIN {
            return Err(LabError::HostStart {
                prefix: prefix.to_string(),
                host: name.to_string(),
                reason: format!("sshd did not listen on {target} within {READY_WITHIN:?}"),
                log: std::fs::read_to_string(host_dir.join("sshd.log")).unwrap_or_default(),
            });
        }
        async_io::Timer::after(Duration::from_millis(20)).await;
    }
}
