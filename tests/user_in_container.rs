//! A suite that tests/in_container.rs runs inside a container of its own, with the host's
//! Docker socket mounted, as a CI job in a container runs (GitLab's docker executor, a dev
//! container): its topology (fixtures/topologies/in-container.yaml) has a process and a
//! container that reach each other, and the test reaches the container too.
//!
//! It runs its tests only when `HARNESS_IN_CONTAINER_SUITE=1`; otherwise it selects none, so
//! the normal test commands pass over it.

#[path = "support/gated.rs"]
mod gated;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use harness::{Topology, harness_test};

/// The body of `GET path` from `addr`, by hand: the image has no HTTP client of ours.
fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response)
}

#[harness_test(topology = "fixtures/topologies/in-container.yaml")]
async fn a_process_and_a_container_reach_each_other(topo: &Topology) {
    let web = topo.service("web").unwrap();
    // From this container to the other's published port, on the engine's host.
    assert!(!web.addr().ip().is_loopback(), "{}", web.addr());
    assert_eq!(get(web.addr(), "/origin"), "from-origin\n");
    // The client's health check saw it fetch, through the container, from the origin.
    assert!(topo.service("client").is_ok());
}

fn main() -> ExitCode {
    gated::run_when_enabled("HARNESS_IN_CONTAINER_SUITE")
}
