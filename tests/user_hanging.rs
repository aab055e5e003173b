//! A suite whose tests hang on purpose once their topology runs, killed from outside by
//! `tests/user_teardown.rs` (nextest's timeout, or SIGKILL of the binary) to check that nothing
//! of the run is left: a shared and an isolated copy of fixtures/topologies/teardown.yaml, and a
//! topology with a container (fixtures/topologies/teardown-docker.yaml). The test that passes
//! starts the topology again, as the next run after a killed one.
//!
//! Each test that reaches its body first creates a file named after it in the directory
//! `HARNESS_HANGING_MARKERS` names, so that the killer knows the services are up.
//!
//! It runs its tests only when `HARNESS_HANGING_SUITE=1`; otherwise it selects none, so the
//! normal test commands (`cargo test`, `cargo nextest run`) pass over it.

use std::net::TcpStream;
#[path = "support/gated.rs"]
mod gated;

use std::process::ExitCode;

use harness::{Service, Topology, harness_test};

/// The variable that turns the suite on.
const ENABLE: &str = "HARNESS_HANGING_SUITE";
/// The directory in which each test marks that it reached its body.
const MARKERS: &str = "HARNESS_HANGING_MARKERS";

/// Marks that `test` runs with every service of `topology` up.
fn reached(test: &str, topology: &Topology) {
    for service in topology.services() {
        let addr = service.addr();
        TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("connect to {} at {addr}: {e}", service.name()));
    }
    if let Some(dir) = std::env::var_os(MARKERS) {
        let path = std::path::Path::new(&dir).join(test);
        std::fs::write(&path, "").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

#[harness_test(topology = "fixtures/topologies/teardown.yaml")]
async fn hangs_in_a_shared_copy(topo: &Topology) {
    reached("hangs_in_a_shared_copy", topo);
    std::future::pending::<()>().await;
}

#[harness_test(topology = "fixtures/topologies/teardown.yaml", isolated)]
async fn hangs_in_a_private_copy(topo: &Topology) {
    reached("hangs_in_a_private_copy", topo);
    std::future::pending::<()>().await;
}

#[harness_test(topology = "fixtures/topologies/teardown.yaml")]
async fn passes(web: Service) {
    TcpStream::connect(web.addr()).unwrap();
}

mod docker {
    use super::*;

    #[harness_test(topology = "fixtures/topologies/teardown-docker.yaml")]
    async fn hangs(topo: &Topology) {
        reached("docker::hangs", topo);
        std::future::pending::<()>().await;
    }

    /// A shared copy and an isolated copy of the same topology, each building the image; in
    /// name order (as the runner starts them), the isolated copy starts while the shared one
    /// runs, which its third test keeps alive.
    mod copies {
        use super::*;

        #[harness_test(topology = "fixtures/topologies/teardown-docker.yaml")]
        async fn a_shared(topo: &Topology) {
            reached("docker::copies::a_shared", topo);
        }

        #[harness_test(topology = "fixtures/topologies/teardown-docker.yaml", isolated)]
        async fn b_isolated(topo: &Topology) {
            reached("docker::copies::b_isolated", topo);
        }

        #[harness_test(topology = "fixtures/topologies/teardown-docker.yaml")]
        async fn c_shared(topo: &Topology) {
            reached("docker::copies::c_shared", topo);
        }
    }
}

fn main() -> ExitCode {
    gated::run_when_enabled(ENABLE)
}
