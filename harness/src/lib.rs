//! harness starts a topology of services (local processes, Docker containers, hosts reached over
//! SSH) for integration tests, and tears it down afterwards.
//!
//! The layers, lowest first (a lower layer never uses a higher one):
//!
//! - [`sys`]: what harness asks of the operating system: process identity (pid and start
//!   time), liveness, disk space set aside for what must be written on a full disk.
//! - [`limits`]: the open-files limit: raised when harness starts, explained when reached.
//! - [`exec`]: the command executor: one API to run and control processes on this machine, on
//!   other hosts over SSH and inside containers.
//! - [`registry`]: the services of a topology, their states, endpoints and dependencies, with
//!   events and crash-safe persistence.
//! - [`orchestrator`]: starts a topology's services in dependency order, checks their health
//!   and stops them again ([`orchestrator::ServiceManager`]).
//! - [`api`]: the WebSocket API over the registry (`harness serve`).
//! - [`testing`]: `#[harness_test]` and `harness::main!()`: tests that receive a running
//!   topology ([`Topology`], [`Service`]), shared between the tests that name the same file.
//!
//! The library needs no particular async runtime: it runs its background work on threads of its
//! own, so it works under smol, tokio or a plain `block_on`.
#![warn(missing_docs)]

pub mod api;
pub mod exec;
mod join;
pub mod lab;
pub mod limits;
pub mod network;
pub mod orchestrator;
pub mod package;
pub mod registry;
pub mod sys;
pub mod testing;
#[doc(inline)]
pub use harness_topology as topology;

pub use harness_macros::harness_test;
pub use testing::{ExecOutput, Service, Topology};

/// The test runner of a `harness = false` test target: put `harness::main!();` at the end of
/// the file. It runs the file's `#[harness_test]`s like libtest would (same arguments, same
/// output), and returns the exit code from `main` so that every topology is torn down first.
///
/// `harness::main!(setup = build_services);` calls `build_services()` once before the tests
/// run (not when they are only listed): the place to build the binaries the topologies start.
///
/// It refuses to compile in a target that libtest runs (one without `harness = false`), where
/// it would otherwise run nothing; and it refuses plain test functions (`#[test]`,
/// `#[tokio::test]`, `#[rstest]`, ...) in any module of the target, which would never run
/// there: each error names the test's file and line. The details and limits of that check are
/// in `docs/testing.md` ("Plain `#[test]`s are refused").
pub use harness_macros::main;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
