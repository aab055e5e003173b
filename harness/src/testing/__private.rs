//! What `#[harness_test]` expands to refers to; not a public API.

use std::net::SocketAddr;

pub use linkme;

pub use super::case::{IntoTestResult, Runtime, Source, TestCase, TestFuture, TokioFeature};
use super::service::Service;
use super::topology::Topology;

/// Every `#[harness_test]` of the binary.
#[linkme::distributed_slice]
pub static TESTS: [TestCase];

/// What `harness::main!()` calls: the suite's default runtime for bodies, then `setup` unless
/// the tests are only listed.
pub fn main(runtime: Runtime, setup: impl FnOnce()) -> std::process::ExitCode {
    super::runner::run_suite(runtime, setup)
}

/// Compiles only when `()` is [`TokioFeature`], that is with the `tokio` feature.
pub const fn require_tokio_feature<T: TokioFeature>() {}

/// The service a parameter receives.
pub fn service(topology: &Topology, name: &str) -> Result<Service, String> {
    topology.service(name).map_err(|e| e.to_string())
}

/// The address a parameter receives.
pub fn addr(topology: &Topology, name: &str) -> Result<SocketAddr, String> {
    topology.addr(name).map_err(|e| e.to_string())
}

/// `harness::main!()` brings this in as `test`, over the built-in attribute.
pub use harness_macros::test_in_harness_target as test;
