//! A suite whose topologies take a while, run by `tests/health_waiting.rs` to check what the
//! runner says while it waits (on stderr) and what a service that never becomes healthy
//! reports: `slow` is healthy after 3 s, `never` never is.
//!
//! It runs its tests only when `HARNESS_WAITING_SUITE=1`; otherwise it selects none, so the
//! normal test commands (`cargo test`, `cargo nextest run`) pass over it.

#[path = "support/gated.rs"]
mod gated;

use std::process::ExitCode;

use harness::{Service, Topology, harness_test};

/// The variable that turns the suite on.
const ENABLE: &str = "HARNESS_WAITING_SUITE";

#[harness_test(topology = "tests/user_waiting/slow.yaml")]
async fn waits_for_a_slow_service(slow: Service) {
    std::net::TcpStream::connect(slow.addr()).unwrap();
}

#[harness_test(topology = "tests/user_waiting/never.yaml")]
async fn never_starts(_topo: &Topology) {
    unreachable!("`never` never becomes healthy");
}

fn main() -> ExitCode {
    gated::run_when_enabled(ENABLE)
}
