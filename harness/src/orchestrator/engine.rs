//! Where the Docker engine runs, as far as reaching its containers goes.
//!
//! Usually it runs on this machine, in this network namespace: containers publish their ports
//! on `127.0.0.1`, and reach this machine's processes through the host gateway. A CI job that
//! runs in a container of its own with the host's Docker socket mounted (GitLab's docker
//! executor, a dev container), or against a remote engine (`DOCKER_HOST=tcp://...`), sees
//! neither: the published ports are on the engine's host, not on the job's `127.0.0.1`, and
//! the host gateway is the engine's host, not the job. As testcontainers does, harness then
//! publishes on, and connects to, the address at which it reaches the engine's host (the
//! bridge's gateway, or `DOCKER_HOST`'s host), and tells containers its own address towards
//! it as `host.docker.internal`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::OnceLock;

/// Set to the address at which this process reaches the ports containers publish; they are
/// published on it too. Overrides what harness finds by itself.
pub const DOCKER_HOST_IP_ENV: &str = "HARNESS_DOCKER_HOST_IP";

/// Where containers are reached from this process, and where they reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Engine {
    /// The address at which this process connects to published ports.
    pub(crate) reach: IpAddr,
    /// The host address ports are published on (`docker run -p ADDR::PORT`).
    pub(crate) publish: IpAddr,
    /// What containers resolve `host.docker.internal` to: Docker's `host-gateway`, or this
    /// process's own address towards the engine's host.
    pub(crate) this_machine: String,
    /// Whether the engine shares this network namespace: a container's own address on its
    /// network is then reachable from here too.
    pub(crate) local: bool,
}

impl Engine {
    /// The engine on this machine's own network stack.
    fn local() -> Engine {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Engine {
            reach: loopback,
            publish: loopback,
            this_machine: "host-gateway".to_string(),
            local: true,
        }
    }

    /// An engine whose host this process reaches at `reach`, publishing on `publish`.
    fn elsewhere(reach: IpAddr, publish: IpAddr) -> Engine {
        let this_machine = source_address(reach)
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "host-gateway".to_string());
        Engine {
            reach,
            publish,
            this_machine,
            local: false,
        }
    }
}

/// The engine of this process's runs, found once: from [`DOCKER_HOST_IP_ENV`], else from
/// `DOCKER_HOST`, else, inside a container (`/.dockerenv`, podman's `/run/.containerenv`), by
/// asking the engine for its default bridge's gateway, which is one of this machine's
/// addresses exactly when the engine runs in this network namespace.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let found = find();
        if !found.local {
            tracing::info!(
                "the Docker engine runs elsewhere: its published ports are reached at {}, \
                 and containers reach this machine at {}",
                found.reach,
                found.this_machine
            );
        }
        found
    })
}

fn find() -> Engine {
    if let Some(ip) = std::env::var(DOCKER_HOST_IP_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return if ip.is_loopback() {
            Engine::local()
        } else {
            Engine::elsewhere(ip, ip)
        };
    }
    if let Some(host) = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| remote_host(&h))
    {
        return match resolve(&host) {
            Some(ip) if !is_local(ip) => Engine::elsewhere(ip, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            _ => Engine::local(),
        };
    }
    // Outside a container, a local socket is this machine's engine: nothing to ask.
    if !["/.dockerenv", "/run/.containerenv"]
        .iter()
        .any(|f| std::path::Path::new(f).exists())
    {
        return Engine::local();
    }
    match bridge_gateway() {
        Some(gateway) if !is_local(gateway) => Engine::elsewhere(gateway, gateway),
        _ => Engine::local(),
    }
}

/// The host of a `DOCKER_HOST` that is not a local socket: `tcp://H:P`, `ssh://user@H`.
fn remote_host(docker_host: &str) -> Option<String> {
    let (scheme, rest) = docker_host.split_once("://")?;
    if !matches!(scheme, "tcp" | "ssh" | "http" | "https") {
        return None;
    }
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

fn resolve(host: &str) -> Option<IpAddr> {
    (host, 0).to_socket_addrs().ok()?.next().map(|a| a.ip())
}

/// Whether `ip` is an address of this network namespace (a socket can be bound to it).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// This process's address towards `ip`: the source address the kernel picks (nothing is sent).
fn source_address(ip: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = if ip.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind((any, 0)).ok()?;
    socket.connect((ip, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The gateway of the engine's default bridge network: as the engine reports it, or, where it
/// reports only the subnet (the default bridge does), the subnet's first address, which Docker
/// gives the bridge.
fn bridge_gateway() -> Option<IpAddr> {
    let out = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}}|{{.Subnet}} {{end}}",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(gateway_of)
}

/// The gateway of one `GATEWAY|SUBNET` entry (IPv4): the gateway if given, else the subnet's
/// first address.
fn gateway_of(entry: &str) -> Option<IpAddr> {
    let (gateway, subnet) = entry.split_once('|')?;
    if let Ok(ip) = gateway.parse::<Ipv4Addr>() {
        return Some(ip.into());
    }
    let (network, bits) = subnet.split_once('/')?;
    let network: Ipv4Addr = network.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if bits >= 31 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(network).checked_add(1)?).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_hosts_of_docker_host() {
        assert_eq!(
            remote_host("tcp://10.0.0.5:2375").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(remote_host("ssh://ci@build-7").as_deref(), Some("build-7"));
        assert_eq!(
            remote_host("tcp://[fd00::1]:2376").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(remote_host("unix:///var/run/docker.sock"), None);
        assert_eq!(remote_host("npipe:////./pipe/docker_engine"), None);
        assert_eq!(remote_host("garbage"), None);
    }

    #[test]
    fn a_bridge_without_a_gateway_has_its_subnets_first_address() {
        assert_eq!(
            gateway_of("|172.17.0.0/16"),
            Some("172.17.0.1".parse().unwrap())
        );
        assert_eq!(
            gateway_of("10.9.0.254|10.9.0.0/24"),
            Some("10.9.0.254".parse().unwrap())
        );
        assert_eq!(gateway_of("|fd00::/64"), None);
        assert_eq!(gateway_of("|10.0.0.0/32"), None);
        assert_eq!(gateway_of("nonsense"), None);
    }

    #[test]
    fn loopback_and_this_machine_are_local() {
        assert!(is_local(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // TEST-NET-1 is nobody's address.
        assert!(!is_local("198.51.100.77".parse().unwrap()));
        let elsewhere = Engine::elsewhere(
            "198.51.100.77".parse().unwrap(),
            Ipv4Addr::UNSPECIFIED.into(),
        );
        assert!(!elsewhere.local);
    }
}
