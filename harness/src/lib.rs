//! harness starts a topology of services (local processes, Docker containers, hosts reached over
//! SSH) for integration tests, and tears it down afterwards.
//!
//! The layers, lowest first (a lower layer never uses a higher one):
//!
//! - [`exec`]: the command executor: one API to run and control processes on this machine, on
//!   other hosts over SSH and inside containers.
//! - [`registry`]: the services of a topology, their states, endpoints and dependencies, with
//!   events and crash-safe persistence.
//! - [`orchestrator`]: starts a topology's services in dependency order, checks their health
//!   and stops them again ([`orchestrator::ServiceManager`]).
//! - [`api`]: the WebSocket API over the registry (`harness serve`).
//!
//! The library needs no particular async runtime: it runs its background work on threads of its
//! own, so it works under smol, tokio or a plain `block_on`.
#![warn(missing_docs)]

pub mod api;
pub mod exec;
pub mod orchestrator;
pub mod registry;
pub mod topology;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
