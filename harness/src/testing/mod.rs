//! What `#[harness_test]` and `harness::main!()` expand to: the list of collected tests, the
//! runner, the running topology a test receives ([`Topology`], [`Service`]), and sharing.
//!
//! ```ignore
//! // tests/kv.rs, declared in Cargo.toml as [[test]] name = "kv", harness = false
//! use harness::{harness_test, Service, Topology};
//!
//! #[harness_test(topology = "topologies/kv.yaml")]
//! async fn put_then_get(api_server: Service) {
//!     let stream = std::net::TcpStream::connect(api_server.addr()).unwrap();
//! }
//!
//! #[harness_test(topology = "topologies/kv.yaml", isolated, timeout = "60s")]
//! async fn survives_cache_restart(topo: &Topology) -> Result<(), Box<dyn std::error::Error>> {
//!     topo.restart("cache").await?;
//!     Ok(())
//! }
//!
//! harness::main!();
//! ```
//!
//! `docs/testing.md` walks through it. In short:
//!
//! - Each test is an entry in a [linkme](https://docs.rs/linkme) distributed slice; the runner
//!   ([`run`]) makes a libtest-mimic trial of each, so libtest's arguments work: filters,
//!   `--exact`, `--skip`, `--list` (which starts nothing), `--ignored`, `--include-ignored`,
//!   `--test-threads`, `--format`.
//! - Within one process, the tests that name the same topology file and overlays share one
//!   running copy: the first of them that runs starts it, and it stops when the last selected
//!   one has finished (the runner counts them before running). A copy that fails to start fails
//!   each of its tests with the same message; it is not started again. An `isolated` test gets
//!   a private copy, stopped after it.
//! - A test body runs on the calling test thread under `async_io::block_on`, so it can await
//!   harness's futures and async-io timers without any runtime of the user's. With the `tokio`
//!   feature, `runtime = "tokio"` (on the attribute, or on `harness::main!()` for every test)
//!   runs it inside a tokio runtime instead, so tokio-based clients work ([`Runtime`]).
//! - Under `cargo test`, what a test prints is captured, as libtest does: each body runs in a
//!   worker process whose output the runner keeps, shown with a failure or with
//!   `--show-output`; `--nocapture` (or `RUST_TEST_NOCAPTURE`) runs the bodies in the runner.
//!   The shared copies stay the runner's and are served to the workers (`worker.rs`).
//! - A failing test's message is what it printed, why it failed, then the last lines of each
//!   service's output.
//! - While a copy starts, a service that is not healthy after a second is reported on stderr
//!   (`harness: waiting for NAME: CHECK, try N (S s), last: REASON`), then every five seconds;
//!   stdout carries only the runner's results. Under nextest these lines go to the
//!   supervisor's log.
//! - Relative binaries in topologies are resolved against the current directory (under cargo,
//!   the package's directory), or against `HARNESS_BASE_DIR` ([`BASE_DIR_ENV`]).
//! - `HARNESS_LOG` ([`TRACING_ENV`]), else `RUST_LOG`, shows harness's own tracing on stderr
//!   ([`init_tracing`]); stdout keeps only the runner's lines.
//!
//! # Known limits
//!
//! - Under `cargo nextest run` every test runs in a process of its own. There (when
//!   `NEXTEST_RUN_ID` is set) a test that is not `isolated` takes a lease on the copy that a
//!   supervisor process owns, one per run and topology: the test binary itself, re-run with
//!   `HARNESS_ROLE=supervisor`. Such a test cannot stop, start or restart services (make it
//!   `isolated`), and [`Topology::manager`] panics for it. Only the process nextest started
//!   for one test shares so (its arguments select exactly `NEXTEST_TEST_NAME`): a suite that a
//!   test runs shares within its own process. The details are in `supervisor.rs`.
//! - In a worker, and under nextest, [`Topology::manager`] panics for a test of a shared copy.
//! - With `--nocapture`, a timeout cannot interrupt a body that blocks its thread without
//!   awaiting (a `std::thread::sleep`, a blocking read): the test fails once the body next
//!   yields. In a worker, the runner ends the worker a second after the timeout.
//! - A test that stops or restarts services in a shared copy affects the other tests of that
//!   copy; make it `isolated`.
//! - A process that is killed (SIGKILL) or aborts (`panic = "abort"`) runs no destructors: its
//!   services are stopped only by the death signal the orchestrator gives them. What escaped
//!   their process groups stays in their cgroups until the next run started in the same cgroup
//!   removes them; without cgroups, nothing finds it again.
//! - The runner is a child subreaper and handles `SIGCHLD` (it reaps the orphans services leave
//!   as they exit), so a blocking system call in a test body that `SA_RESTART` does not restart
//!   (`poll`, `nanosleep` called directly) may return `EINTR`; std and the async runtimes retry.

mod cargo;
mod case;
mod log;
mod report;
mod runner;
mod service;
mod shared;
mod supervisor;
mod topology;
mod unique;
mod worker;

#[doc(hidden)]
pub mod __private;

pub use case::Runtime;
pub use libtest_mimic::Arguments;
pub use log::{TRACING_ENV, init_tracing, tracing_directives};
pub use runner::{BASE_DIR_ENV, run, run_with_args, run_with_setup};
pub use service::{ExecOutput, Service};
pub use supervisor::{IDLE_ENV, LOG_ENV, STATE_DIR_ENV};
pub use topology::{LookupError, Topology};
pub use unique::test_prefix;
