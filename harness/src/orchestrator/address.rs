//! Addresses: where a service listens, and the address at which another service reaches it
//! from where that one runs.

use std::net::SocketAddr;

use crate::topology::ServiceTarget;

use super::ports::LOCAL_HOST;

/// The name a container uses for this machine: `docker create
/// --add-host host.docker.internal:host-gateway` maps it to the Docker host's gateway address.
pub(crate) const HOST_GATEWAY: &str = "host.docker.internal";

/// What a container binds to for `${host}`: every interface, so that both its published port
/// and its address on the run's network reach it.
pub(crate) const CONTAINER_BIND_HOST: &str = "0.0.0.0";

/// Where a service runs, as far as reaching it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On this machine's own network stack: a local process.
    Host,
    /// In a container on the run's Docker network.
    Container,
}

impl Placement {
    /// Where a service with `target` runs.
    pub(crate) fn of(target: &ServiceTarget) -> Self {
        match target {
            ServiceTarget::Docker(_) => Placement::Container,
            _ => Placement::Host,
        }
    }

    /// The value of `${host}` for a service placed here.
    pub(crate) fn own_host(self) -> String {
        match self {
            Placement::Host => LOCAL_HOST.to_string(),
            Placement::Container => CONTAINER_BIND_HOST.to_string(),
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
    /// its own network namespace for a container.
    pub(crate) port: u16,
    /// The port on `127.0.0.1` of this machine that reaches it: `port` for a process, the
    /// published port for a container.
    pub(crate) host_port: u16,
}

impl ServiceAddr {
    /// The address at which this machine (the caller, health checks, processes) reaches it.
    pub(crate) fn local(&self) -> SocketAddr {
        SocketAddr::from((LOCAL_HOST, self.host_port))
    }

    /// The address a service placed at `from` uses to reach this one:
    ///
    /// | from \ to | process | container |
    /// |---|---|---|
    /// | process | `127.0.0.1:PORT` | `127.0.0.1:PUBLISHED` |
    /// | container | `host.docker.internal:PORT` | `NAME:PORT` (its alias on the run's network) |
    pub(crate) fn seen_from(&self, from: Placement) -> String {
        match (from, self.placement) {
            (Placement::Host, _) => self.local().to_string(),
            (Placement::Container, Placement::Container) => format!("{}:{}", self.name, self.port),
            (Placement::Container, Placement::Host) => {
                format!("{HOST_GATEWAY}:{}", self.host_port)
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
            process.seen_from(Placement::Host),
            process.seen_from(Placement::Container),
            container.seen_from(Placement::Host),
            container.seen_from(Placement::Container),
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
}
