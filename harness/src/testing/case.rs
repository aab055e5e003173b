//! One collected test: what `#[harness_test]` records about it, and the list they all go in.

use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use super::topology::Topology;

/// A topology file as the test binary carries it: its absolute path at build time and its text,
/// embedded so that an edit rebuilds the test.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The file's absolute path when the test was compiled.
    pub path: &'static str,
    /// The file's text.
    pub text: &'static str,
}

/// What a test body's future gives: `Err` with the failure's message.
pub type TestFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

/// One `#[harness_test]` function.
#[derive(Debug)]
pub struct TestCase {
    /// `module_path!()` where the function is: the crate's name, then its modules.
    pub module_path: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// The topology file.
    pub topology: Source,
    /// Overlays merged over it, in order.
    pub overlays: &'static [Source],
    /// The test's time limit in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Whether the test is `ignore`d (runs only with `--ignored` or `--include-ignored`).
    pub ignored: bool,
    /// Why it is ignored, from `ignore = "reason"`.
    pub ignore_reason: Option<&'static str>,
    /// Whether the test gets a private copy of its topology.
    pub isolated: bool,
    /// The runtime the body runs on: `None` for the suite's (`harness::main!(runtime = ...)`).
    pub runtime: Option<Runtime>,
    /// The binaries cargo built for the test's package, by name (`CARGO_BIN_EXE_NAME` when
    /// the test was compiled): what `${cargo_bin:NAME}` stands for.
    pub cargo_bins: &'static [(&'static str, &'static str)],
    /// The `${cargo_bin:NAME}`s that are binaries of other packages of the workspace, with
    /// their packages: built by the runner, once per run.
    pub workspace_bins: &'static [(&'static str, &'static str)],
    /// The package's `Cargo.toml`, which selects its workspace.
    pub manifest: &'static str,
    /// Injects the parameters and runs the body.
    pub run: for<'a> fn(&'a Topology) -> TestFuture<'a>,
}

impl TestCase {
    /// The test's name as libtest gives it: the module path without the crate, then the
    /// function (`put_then_get`, `cache::survives_restart`).
    pub(crate) fn test_name(&self) -> String {
        match self.module_path.split_once("::") {
            Some((_crate, modules)) => format!("{modules}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// The test's time limit.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    /// Which running copy of a topology the test shares: the same file with the same overlays.
    pub(crate) fn topology_key(&self) -> TopologyKey {
        TopologyKey {
            file: PathBuf::from(self.topology.path),
            overlays: self
                .overlays
                .iter()
                .map(|o| PathBuf::from(o.path))
                .collect(),
        }
    }
}

/// The runtime a test body runs on, chosen by `runtime = "..."` on the attribute or on
/// `harness::main!()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// `"none"`, the default: the body is polled on the test thread (`async_io::block_on`), so it
    /// can await harness's futures, async-io timers and the smol family's I/O, but not tokio's.
    #[default]
    None,
    /// `"tokio"`: a current-thread tokio runtime with its I/O and time drivers, as
    /// `#[tokio::test]` gives; needs the `tokio` feature of harness.
    Tokio,
    /// `"tokio-multi-thread"`: a multi-thread tokio runtime (`block_in_place` works); needs the
    /// `tokio` feature of harness.
    TokioMultiThread,
}

impl Runtime {
    /// Runs `future` to its end on this runtime, on the calling thread.
    pub(crate) fn block_on<F: Future>(self, future: F) -> Result<F::Output, String> {
        match self {
            Runtime::None => Ok(async_io::block_on(future)),
            #[cfg(feature = "tokio")]
            Runtime::Tokio | Runtime::TokioMultiThread => {
                let mut builder = match self {
                    Runtime::Tokio => tokio::runtime::Builder::new_current_thread(),
                    _ => tokio::runtime::Builder::new_multi_thread(),
                };
                let runtime = builder
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot build the test's tokio runtime: {e}"))?;
                Ok(runtime.block_on(future))
            }
            // The attribute and main!() refuse these at compile time without the feature.
            #[cfg(not(feature = "tokio"))]
            Runtime::Tokio | Runtime::TokioMultiThread => {
                Err("runtime = \"tokio\" needs the `tokio` feature of harness".to_string())
            }
        }
    }
}

/// Implemented only when harness is built with its `tokio` feature: the code the attribute and
/// `main!()` generate for `runtime = "tokio"` requires it, so a missing feature is one clear
/// compile error.
#[diagnostic::on_unimplemented(
    message = "runtime = \"tokio\" needs the `tokio` feature of harness",
    label = "enable it in Cargo.toml",
    note = "[dev-dependencies] harness = {{ ..., features = [\"tokio\"] }}"
)]
pub trait TokioFeature {}

#[cfg(feature = "tokio")]
impl TokioFeature for () {}

/// A topology file and its overlays: tests with equal keys share one running copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopologyKey {
    pub(crate) file: PathBuf,
    pub(crate) overlays: Vec<PathBuf>,
}

/// What a test body may return: `()`, or `Result<(), E>` whose `Err` fails the test (shown with
/// `Debug`, as `fn main` shows an error).
#[diagnostic::on_unimplemented(
    message = "a #[harness_test] function returns `()` or `Result<(), E>` with `E: Debug`, not `{Self}`"
)]
pub trait IntoTestResult {
    /// The body's outcome, with the failure's message.
    fn into_test_result(self) -> Result<(), String>;
}

impl IntoTestResult for () {
    fn into_test_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> IntoTestResult for Result<(), E> {
    fn into_test_result(self) -> Result<(), String> {
        self.map_err(|e| format!("the test returned an error: {e:?}"))
    }
}

/// A test of `name` on `topology` whose body is `run`, with every other field at its default,
/// for the runner's own unit tests.
#[cfg(test)]
pub(crate) fn test_case(
    name: &'static str,
    topology: Source,
    run: for<'a> fn(&'a Topology) -> TestFuture<'a>,
) -> &'static TestCase {
    Box::leak(Box::new(TestCase {
        module_path: "suite",
        name,
        topology,
        overlays: &[],
        timeout_ms: None,
        ignored: false,
        ignore_reason: None,
        isolated: false,
        runtime: None,
        cargo_bins: &[],
        workspace_bins: &[],
        manifest: "Cargo.toml",
        run,
    }))
}
