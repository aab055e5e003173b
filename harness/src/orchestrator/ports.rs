//! Ports: `port: N` as written, `port: auto` a free port chosen here.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::topology::PortSpec;

use super::address::Placement;

/// The address every local service is reached at.
pub(crate) const LOCAL_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The port a service gets: the fixed one, a free one for `auto` (never one of `taken`, the
/// ports already given to this run's services), none when unset.
///
/// A free port is found by binding `127.0.0.1:0`, reading the port the kernel chose and closing
/// the socket again. The kernel may hand the same port out again once it is closed, which is
/// why `taken` is checked. Between that moment and the service binding the port, another
/// program may take it; the kernel picks ephemeral ports at random, so this is rare, and the
/// service then fails its start with its own "address in use" error rather than silently
/// using another port.
pub(crate) fn assign_port(spec: PortSpec, taken: &HashSet<u16>) -> io::Result<Option<u16>> {
    match spec {
        PortSpec::Unset => Ok(None),
        PortSpec::Fixed(port) => Ok(Some(port)),
        PortSpec::Auto => {
            for _ in 0..100 {
                let port = free_port()?;
                if !taken.contains(&port) {
                    return Ok(Some(port));
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "the kernel kept choosing ports already given to other services",
            ))
        }
    }
}

/// The port of 127.0.0.1 that reaches a service listening on `port` where it runs: the port
/// itself for a process (and for a LAN service, reached at its host's address). For a container, the same number when the port was chosen free here
/// (`auto`), else (a fixed port such as 5432, which this machine or another run may use) a free
/// one, never one of `taken`.
pub(crate) fn assign_host_port(
    placement: Placement,
    spec: PortSpec,
    port: Option<u16>,
    taken: &HashSet<u16>,
) -> io::Result<Option<u16>> {
    match (placement, spec, port) {
        (_, _, None) => Ok(None),
        (Placement::Host | Placement::Lan(_) | Placement::Mesh(_), _, port)
        | (Placement::Container, PortSpec::Auto, port) => Ok(port),
        (Placement::Container, _, Some(port)) => {
            let mut taken = taken.clone();
            taken.insert(port);
            assign_port(PortSpec::Auto, &taken)
        }
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((LOCAL_HOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_fixed_auto_and_no_port() {
        let none = HashSet::new();
        assert_eq!(assign_port(PortSpec::Unset, &none).unwrap(), None);
        assert_eq!(
            assign_port(PortSpec::Fixed(5432), &none).unwrap(),
            Some(5432)
        );
        let mut taken = HashSet::new();
        for _ in 0..200 {
            let port = assign_port(PortSpec::Auto, &taken)
                .unwrap()
                .expect("a port");
            assert!(taken.insert(port), "port {port} was given twice");
        }
        let port = assign_port(PortSpec::Auto, &none).unwrap().expect("a port");
        // The port was released, so it can be bound again.
        TcpListener::bind(SocketAddr::from((LOCAL_HOST, port))).expect("the port is free");
    }

    #[test]
    fn containers_publish_on_a_port_of_their_own() {
        let none = HashSet::new();
        let host = |placement, spec, port| assign_host_port(placement, spec, port, &none).unwrap();
        assert_eq!(
            host(Placement::Host, PortSpec::Fixed(5432), Some(5432)),
            Some(5432)
        );
        assert_eq!(
            host(Placement::Container, PortSpec::Auto, Some(40000)),
            Some(40000)
        );
        assert_eq!(host(Placement::Container, PortSpec::Unset, None), None);
        let published = host(Placement::Container, PortSpec::Fixed(5432), Some(5432));
        assert!(published.is_some_and(|p| p != 5432), "{published:?}");
    }
}
