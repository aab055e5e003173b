//! harness starts a topology of services (local processes, Docker containers, hosts reached over
//! SSH) for integration tests, and tears it down afterwards.
//!
//! This release holds the command executor, [`exec`]: one API to run and control processes on
//! this machine, on other hosts over SSH and inside containers.
#![warn(missing_docs)]

pub mod api;
pub mod exec;
pub mod registry;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
