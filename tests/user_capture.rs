//! A suite whose tests print, run by `tests/user_runner.rs` to check libtest's output contract
//! under `harness::main!()`: what a passing test prints is not shown, a failing test's output is
//! shown with its failure, `--nocapture` and `--show-output` behave as in libtest, and a body
//! that blocks its thread past its timeout, or ends its process, fails alone.
//!
//! It runs its tests only when `HARNESS_CAPTURE_SUITE=1`; otherwise it selects none, so the
//! normal test commands pass over it.

#[path = "support/gated.rs"]
mod gated;

use std::io::Write;
use std::process::ExitCode;

use harness::{Service, Topology, harness_test};

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn prints_and_passes(echo: Service) {
    println!("stdout of a passing test, echo at {}", echo.addr());
    eprintln!("stderr of a passing test");
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn prints_without_a_newline_and_passes(_topo: &Topology) {
    print!("a passing test's last words without a newline");
    std::io::stdout().flush().unwrap();
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn prints_and_fails(echo: Service) {
    println!("stdout of a failing test, echo at {}", echo.addr());
    eprintln!("stderr of a failing test");
    panic!("deliberate failure after printing");
}

#[harness_test(topology = "fixtures/topologies/demo.yaml", timeout = "1s")]
async fn blocks_its_thread_past_its_timeout(_topo: &Topology) {
    println!("about to block the test's thread");
    std::thread::sleep(std::time::Duration::from_secs(300));
}

#[harness_test(topology = "fixtures/topologies/demo.yaml", isolated)]
async fn ends_its_process(topo: &Topology) {
    topo.addr("echo").unwrap();
    println!("about to exit with status 3");
    std::process::exit(3);
}

#[harness_test(topology = "fixtures/topologies/demo.yaml")]
async fn restarts_a_service_of_the_runners_copy(topo: &Topology) {
    topo.restart("echo").await.unwrap();
    std::net::TcpStream::connect(topo.addr("echo").unwrap()).unwrap();
}

fn main() -> ExitCode {
    gated::run_when_enabled("HARNESS_CAPTURE_SUITE")
}
