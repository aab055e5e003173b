//! A suite whose service leaves descendants outside its process group
//! (fixtures/topologies/escaping.yaml), run by `tests/escaped_descendants.rs`, which checks that
//! however the suite ends (its tests pass, one panics, nextest's supervisor owns the copy) they
//! are gone afterwards.
//!
//! Each test waits until both escaped processes run, then passes, or panics when
//! `HARNESS_ESCAPING_END=panic`, or hangs (for its runner to be killed) when it is `hang`. It runs its tests only when `HARNESS_ESCAPING_SUITE=1`;
//! otherwise it selects none, so the normal test commands pass over it.

#[path = "support/gated.rs"]
mod gated;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use harness::{Topology, harness_test};

/// The variable that turns the suite on.
const ENABLE: &str = "HARNESS_ESCAPING_SUITE";

/// Waits until the processes the service left behind run: one per marker variable.
fn escaped_processes_run(topology: &Topology) {
    assert!(topology.service("escaper").is_ok());
    let markers: Vec<String> = ["HARNESS_ESCAPE_A", "HARNESS_ESCAPE_B"]
        .iter()
        .map(|v| std::env::var(v).unwrap_or_else(|_| panic!("{v} is set")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !markers.iter().all(|m| runs(m)) {
        assert!(Instant::now() < deadline, "{markers:?} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends the test as `HARNESS_ESCAPING_END` says.
async fn end() {
    match std::env::var("HARNESS_ESCAPING_END").as_deref() {
        Ok("panic") => panic!("failing on purpose with the escaped processes running"),
        Ok("hang") => std::future::pending::<()>().await,
        _ => {}
    }
}

/// Whether a process runs whose program path is `program`.
fn runs(program: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).next() == Some(program.as_bytes()))
        })
}

#[harness_test(topology = "fixtures/topologies/escaping.yaml")]
async fn leaves_descendants_behind(topo: &Topology) {
    escaped_processes_run(topo);
    end().await;
}

#[harness_test(topology = "fixtures/topologies/escaping.yaml", isolated)]
async fn leaves_descendants_behind_in_a_private_copy(topo: &Topology) {
    escaped_processes_run(topo);
    end().await;
}

fn main() -> ExitCode {
    gated::run_when_enabled(ENABLE)
}
