//! A node's WireGuard interface: create it (kernel module, or `wireguard-go`), give it its key,
//! address and port, apply its peers, remove it. Every step runs through the node's launcher,
//! so the test machine and remote hosts share this code.

use std::net::Ipv4Addr;

use crate::exec::{Command, LaunchError, quote};
use crate::network::key::PrivateKey;
use crate::network::shell::{Daemon, Shell};
use crate::network::subnet::MeshSubnet;

/// A failed step: what was being done, and the error.
pub(crate) type StepError = (String, LaunchError);

/// A node's interface as it runs.
pub(crate) struct Interface {
    /// `wireguard-go`, when the kernel has no WireGuard; `None` for a kernel interface.
    pub(crate) daemon: Option<Box<dyn Daemon>>,
    /// The UDP port it listens on, chosen by the node's kernel.
    pub(crate) port: u16,
}

/// The script that waits for the interface (and wireguard-go's control socket), sets the
/// private key from stdin, adds the address with the subnet's prefix, brings the link up,
/// optionally enables forwarding in the node's network namespace (for a relay), and prints
/// the listen port the kernel chose.
fn setup_script(iface: &str, cidr: &str, userspace: bool, forward: bool) -> String {
    let i = quote(iface);
    let ready = if userspace {
        format!("[ -S /run/wireguard/{iface}.sock ]")
    } else {
        format!("ip link show dev {i} >/dev/null 2>&1")
    };
    let forward = if forward {
        "echo 1 > /proc/sys/net/ipv4/ip_forward\n"
    } else {
        ""
    };
    format!(
        "n=0\n\
         until {ready}; do\n\
         \x20 n=$((n+1)); [ $n -gt 500 ] && {{ echo 'the interface did not appear within 5 s' >&2; exit 1; }}\n\
         \x20 sleep 0.01\n\
         done\n\
         wg setconf {i} /dev/stdin\n\
         ip address add {cidr} dev {i}\n\
         ip link set {i} up\n\
         {forward}wg show {i} listen-port\n",
        cidr = quote(cidr),
    )
}

/// Creates `iface` on the node with `key` and `addr`/prefix, and returns it once it listens.
pub(crate) async fn create(
    shell: &dyn Shell,
    iface: &str,
    key: &PrivateKey,
    addr: Ipv4Addr,
    subnet: &MeshSubnet,
    forward: bool,
) -> Result<Interface, StepError> {
    let kernel = shell
        .run(
            Command::new("ip").args(["link", "add", iface, "type", "wireguard"]),
            None,
            "create a kernel WireGuard interface",
        )
        .await
        .is_ok();
    let mut daemon = None;
    if !kernel {
        // Foreground: the process is ours to stop, and it dies with its launcher's handle.
        let cmd = Command::new("wireguard-go")
            .arg(iface)
            .env("WG_PROCESS_FOREGROUND", "1")
            .env("LOG_LEVEL", "error");
        let doing = "start wireguard-go";
        daemon = Some(shell.start(cmd).await.map_err(|e| (doing.to_string(), e))?);
    }
    let cidr = format!("{addr}/{}", subnet.prefix_len());
    let script = setup_script(iface, &cidr, !kernel, forward);
    let input = format!("[Interface]\nPrivateKey = {}\n", key.to_base64());
    let doing = "set up the WireGuard interface";
    let out = shell
        .run(Command::new("sh").args(["-c", &script]), Some(input), doing)
        .await;
    let out = match out {
        Ok(out) => out,
        Err(mut e) => {
            if let (Some(d), LaunchError::CommandFailed { stderr, .. }) = (&mut daemon, &mut e) {
                let said = d.drain_output();
                if !said.is_empty() {
                    stderr.push_str(&format!("\nwireguard-go: {said}"));
                }
            }
            if let Some(mut d) = daemon {
                d.stop().await;
            } else {
                remove(shell, iface).await;
            }
            return Err((doing.to_string(), e));
        }
    };
    let port = out
        .stdout
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Ok(Interface { daemon, port })
}

/// Replaces the interface's configuration (key, port, peers) with `config`, through stdin;
/// peers whose entry did not change keep their sessions.
pub(crate) async fn sync(shell: &dyn Shell, iface: &str, config: String) -> Result<(), StepError> {
    let doing = "apply the peers";
    shell
        .run(
            Command::new("wg").args(["syncconf", iface, "/dev/stdin"]),
            Some(config),
            doing,
        )
        .await
        .map(drop)
        .map_err(|e| (doing.to_string(), e))
}

/// Stops the interface: wireguard-go exits on `SIGTERM` and removes its interface and socket;
/// what is left (a kernel interface, a stale socket) is removed after. Errors are ignored: the
/// node may be gone already, and then so is its interface.
pub(crate) async fn stop(shell: &dyn Shell, iface: &str, daemon: Option<Box<dyn Daemon>>) {
    if let Some(mut d) = daemon {
        d.stop().await;
    }
    remove(shell, iface).await;
}

async fn remove(shell: &dyn Shell, iface: &str) {
    let script = format!(
        "ip link del dev {i} 2>/dev/null; rm -f /run/wireguard/{iface}.sock; true",
        i = quote(iface)
    );
    let _ = shell
        .run(
            Command::new("sh").args(["-c", &script]),
            None,
            "remove the interface",
        )
        .await;
}
