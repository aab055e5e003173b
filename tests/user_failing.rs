//! A suite that fails on purpose, run by `tests/user_runner.rs` to check what a failing run
//! reports and that it leaves no process and no state directory behind: a panic, an `Err`, a
//! timeout, a panic and a timeout in an isolated copy, a tokio client without tokio, and a
//! topology that cannot start.
//!
//! It runs its tests only when `HARNESS_FAILING_SUITE=1`; otherwise it selects none, so the
//! normal test commands (`cargo test`, `cargo nextest run`) pass over it.

#[path = "support/gated.rs"]
mod gated;

use std::process::ExitCode;

use harness::{Service, Topology, harness_test};

/// The variable that turns the suite on.
const ENABLE: &str = "HARNESS_FAILING_SUITE";

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn passes(echo: Service) {
    std::net::TcpStream::connect(echo.addr()).unwrap();
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn panics(echo: Service) {
    panic!("deliberate panic after reaching {}", echo.name());
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn returns_an_error(topo: &Topology) -> Result<(), String> {
    topo.addr("web").map_err(|e| e.to_string())?;
    Err("deliberate error".to_string())
}

#[harness_test(topology = "fixtures/topologies/demo.yaml", timeout = "1s")]
async fn times_out(_topo: &Topology) {
    std::future::pending::<()>().await;
}

#[harness_test(topology = "fixtures/topologies/demo.yaml", isolated)]
async fn panics_in_a_private_copy(topo: &Topology) {
    topo.restart("echo").await.unwrap();
    panic!("deliberate panic in a private copy");
}

#[harness_test(topology = "fixtures/topologies/demo.yaml", isolated, timeout = "1s")]
async fn times_out_in_a_private_copy(_topo: &Topology) {
    std::future::pending::<()>().await;
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn uses_tokio_without_its_runtime(echo: Service) {
    tokio::net::TcpStream::connect(echo.addr()).await.unwrap();
}

mod cannot_start {
    use super::*;

    #[harness_test(topology = "fixtures/topologies/failing.yaml")]
    async fn first(healthy: Service) {
        unreachable!(
            "{} started, but broken never becomes healthy",
            healthy.name()
        );
    }

    #[harness_test(topology = "fixtures/topologies/failing.yaml")]
    async fn second(_topo: &Topology) {
        unreachable!("the topology never starts");
    }
}

fn main() -> ExitCode {
    gated::run_when_enabled(ENABLE)
}
