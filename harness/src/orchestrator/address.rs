//! Addresses: where a service listens, and the address at which another service reaches it
//! from where that one runs.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

use crate::topology::{NetworkMode, ServiceTarget};

use super::ports::LOCAL_HOST;

/// The name a container uses for this machine: `docker create
/// --add-host host.docker.internal:host-gateway` maps it to the Docker host's gateway address.
pub(crate) const HOST_GATEWAY: &str = "host.docker.internal";

/// What a container binds to for `${host}`: every interface, so that both its published port
/// and its address on the run's network reach it.
pub(crate) const CONTAINER_BIND_HOST: &str = "0.0.0.0";

/// What a `remote_lan` service binds to for `${host}`: every interface of its host, so that
/// this machine and the other LAN hosts reach it at the host's address.
pub(crate) const LAN_BIND_HOST: &str = "0.0.0.0";

/// Where a service runs, as far as reaching it is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On this machine's own network stack: a local process.
    Host,
    /// In a container on the run's Docker network.
    Container,
    /// On a LAN host (a `remote_lan` target).
    Lan(LanSite),
    /// On a host of the run's WireGuard mesh (a `wireguard` target).
    Mesh(MeshSite),
}

/// A mesh host as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MeshSite {
    /// Its address on the mesh: what everyone reaches it at.
    pub(crate) ip: IpAddr,
    /// This machine's address on the mesh: what it reaches this machine's services at.
    pub(crate) this_machine: IpAddr,
}

/// A LAN host as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LanSite {
    /// The host as the topology writes it (a name or an address).
    pub(crate) host: String,
    /// Its address, resolved here: what this machine connects to and what other services are
    /// told, so that they need no name lookup (ADR section 3: direct IP addresses).
    pub(crate) ip: IpAddr,
    /// This machine's address as the host sees it: the source address the kernel picks for
    /// packets to `ip`.
    pub(crate) this_machine: IpAddr,
}

impl LanSite {
    /// Resolves `host` (the first address it resolves to) and finds this machine's address
    /// towards it. The source address comes from connecting a UDP socket to the host, which
    /// sends nothing: the kernel only picks the route, as `ip route get HOST` would show it.
    pub(crate) fn locate(host: &str) -> io::Result<LanSite> {
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => (host, 0)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?
                .ip(),
        };
        let any: IpAddr = if ip.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            [0u16; 8].into()
        };
        let socket = UdpSocket::bind((any, 0))?;
        // Port 9 (discard): any port does, nothing is sent.
        socket.connect((ip, 9))?;
        Ok(LanSite {
            host: host.to_string(),
            ip,
            this_machine: socket.local_addr()?.ip(),
        })
    }
}

impl Placement {
    /// Where a service with `target` runs. A `remote_lan` host is resolved here, and this
    /// machine's address towards it found ([`LanSite::locate`]).
    pub(crate) fn of(target: &ServiceTarget) -> io::Result<Self> {
        Ok(match target {
            // `network_mode: host`: this machine's own network stack, as a process has.
            ServiceTarget::Docker(t) if t.network_mode == NetworkMode::Host => Placement::Host,
            ServiceTarget::Docker(_) | ServiceTarget::Compose(_) => Placement::Container,
            ServiceTarget::RemoteLan(t) => Placement::Lan(LanSite::locate(&t.host)?),
            _ => Placement::Host,
        })
    }

    /// The value of `${host}` for a service placed here.
    pub(crate) fn own_host(&self) -> String {
        match self {
            Placement::Host => LOCAL_HOST.to_string(),
            Placement::Container => CONTAINER_BIND_HOST.to_string(),
            Placement::Lan(_) | Placement::Mesh(_) => LAN_BIND_HOST.to_string(),
        }
    }
}

/// One service's port as seen from each place it can be reached from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAddr {
    /// The service, which is also its alias on the run's Docker network.
    pub(crate) name: String,
    /// Where it runs.
    pub(crate) placement: Placement,
    /// The port it listens on where it runs (its `PORT`): on this machine for a process, inside
    /// its own network namespace for a container, on its host for a LAN service.
    pub(crate) port: u16,
    /// The port of this machine that reaches it: `port` for a process and a LAN service, the
    /// published port (on `127.0.0.1`) for a container.
    pub(crate) host_port: u16,
}

impl ServiceAddr {
    /// The address at which this machine (the caller, health checks, processes) reaches it:
    /// `127.0.0.1:HOST_PORT`, or the LAN host's address and the port.
    pub(crate) fn local(&self) -> SocketAddr {
        match &self.placement {
            Placement::Lan(site) => SocketAddr::from((site.ip, self.port)),
            Placement::Mesh(site) => SocketAddr::from((site.ip, self.port)),
            Placement::Container => {
                SocketAddr::from((super::engine::engine().reach, self.host_port))
            }
            Placement::Host => SocketAddr::from((LOCAL_HOST, self.host_port)),
        }
    }

    /// The address a service placed at `from` uses to reach this one:
    ///
    /// | from \ to | process | container | LAN service |
    /// |---|---|---|---|
    /// | process | `127.0.0.1:PORT` | `127.0.0.1:PUBLISHED` | `HOST:PORT` |
    /// | container | `host.docker.internal:PORT` | `NAME:PORT` | `HOST:PORT` |
    /// | LAN service | `THIS_MACHINE:PORT` | `THIS_MACHINE:PUBLISHED` | `HOST:PORT` |
    /// | mesh service | `MESH_THIS_MACHINE:PORT` | `MESH_THIS_MACHINE:PUBLISHED` | `HOST:PORT` |
    ///
    /// Everyone reaches a mesh service at `MESH_IP:PORT`, its host's address on the run's
    /// WireGuard mesh; `MESH_THIS_MACHINE` is this machine's address there. A LAN host is not
    /// on the mesh, so a LAN service cannot reach a mesh service.
    ///
    /// `HOST` is the LAN host's address (resolved here if the topology names it);
    /// `THIS_MACHINE` is this machine's
    /// address as the dependent's host sees it ([`LanSite::this_machine`]).
    pub(crate) fn seen_from(&self, from: &Placement) -> String {
        match (from, &self.placement) {
            (_, Placement::Lan(_) | Placement::Mesh(_)) => self.local().to_string(),
            (Placement::Host, _) => self.local().to_string(),
            (Placement::Container, Placement::Container) => format!("{}:{}", self.name, self.port),
            (Placement::Container, Placement::Host) => {
                format!("{HOST_GATEWAY}:{}", self.host_port)
            }
            (Placement::Lan(site), _) => {
                SocketAddr::from((site.this_machine, self.host_port)).to_string()
            }
            (Placement::Mesh(site), _) => {
                SocketAddr::from((site.this_machine, self.host_port)).to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_sees_the_address_it_can_reach() {
        let process = ServiceAddr {
            name: "kv-store".into(),
            placement: Placement::Host,
            port: 4000,
            host_port: 4000,
        };
        let container = ServiceAddr {
            name: "kv-api".into(),
            placement: Placement::Container,
            port: 8080,
            host_port: 49153,
        };
        let seen = [
            process.seen_from(&Placement::Host),
            process.seen_from(&Placement::Container),
            container.seen_from(&Placement::Host),
            container.seen_from(&Placement::Container),
        ];
        assert_eq!(
            seen,
            [
                "127.0.0.1:4000",
                "host.docker.internal:4000",
                "127.0.0.1:49153",
                "kv-api:8080",
            ]
        );
        assert_eq!(container.local(), "127.0.0.1:49153".parse().unwrap());
        assert_eq!(Placement::Container.own_host(), "0.0.0.0");
        assert_eq!(Placement::Host.own_host(), "127.0.0.1");
    }

    #[test]
    fn lan_services_are_reached_at_their_host_and_reach_this_machine_by_its_lan_address() {
        let site = |host: &str, ip: [u8; 4]| LanSite {
            host: host.into(),
            ip: ip.into(),
            this_machine: [10, 1, 0, 254].into(),
        };
        let a = Placement::Lan(site("10.1.0.1", [10, 1, 0, 1]));
        let b = Placement::Lan(site("db.lan", [10, 1, 0, 2]));
        let on_b = ServiceAddr {
            name: "db".into(),
            placement: b.clone(),
            port: 5432,
            host_port: 5432,
        };
        let process = ServiceAddr {
            name: "web".into(),
            placement: Placement::Host,
            port: 8080,
            host_port: 8080,
        };
        assert_eq!(on_b.local(), "10.1.0.2:5432".parse().unwrap());
        assert_eq!(on_b.seen_from(&a), "10.1.0.2:5432");
        assert_eq!(on_b.seen_from(&Placement::Host), "10.1.0.2:5432");
        assert_eq!(on_b.seen_from(&Placement::Container), "10.1.0.2:5432");
        assert_eq!(process.seen_from(&a), "10.1.0.254:8080");
        assert_eq!(a.own_host(), "0.0.0.0");
    }

    #[test]
    fn mesh_services_are_reached_at_their_mesh_address_and_reach_this_machine_on_the_mesh() {
        let mesh = Placement::Mesh(MeshSite {
            ip: [10, 42, 0, 2].into(),
            this_machine: [10, 42, 0, 1].into(),
        });
        let on_mesh = ServiceAddr {
            name: "load-generator".into(),
            placement: mesh.clone(),
            port: 9000,
            host_port: 9000,
        };
        let process = ServiceAddr {
            name: "api-server".into(),
            placement: Placement::Host,
            port: 8080,
            host_port: 8080,
        };
        let container = ServiceAddr {
            name: "postgres".into(),
            placement: Placement::Container,
            port: 5432,
            host_port: 49160,
        };
        assert_eq!(on_mesh.local(), "10.42.0.2:9000".parse().unwrap());
        for from in [&Placement::Host, &Placement::Container, &mesh] {
            assert_eq!(on_mesh.seen_from(from), "10.42.0.2:9000", "from {from:?}");
        }
        assert_eq!(process.seen_from(&mesh), "10.42.0.1:8080");
        assert_eq!(container.seen_from(&mesh), "10.42.0.1:49160");
        assert_eq!(mesh.own_host(), "0.0.0.0");
    }

    #[test]
    fn this_machine_is_found_by_the_route_to_the_host() {
        let site = LanSite::locate("127.0.0.1").unwrap();
        assert_eq!(site.ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(site.this_machine, IpAddr::from([127, 0, 0, 1]));
        let named = LanSite::locate("localhost").unwrap();
        assert!(named.ip.is_loopback(), "{named:?}");
        assert_eq!(named.host, "localhost");
    }
}
